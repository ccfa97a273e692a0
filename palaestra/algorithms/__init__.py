"""The training algorithms, one per ``trainer:`` type, each behind the :class:`Algorithm`
protocol (algorithms/protocol.py): the trainer and the run loop never ask which one they hold;
what a trainer type can do is in palaestra/capabilities.py."""

from __future__ import annotations

import numpy as np
import torch

from palaestra.algorithms.behavioral_cloning import BehavioralCloning
from palaestra.algorithms.offline_bc import OfflineBC
from palaestra.algorithms.online_bc import OnlineBC
from palaestra.algorithms.ppo import PPO
from palaestra.algorithms.protocol import Algorithm
from palaestra.algorithms.sac import SAC
from palaestra.capabilities import capabilities
from palaestra.envs.base import BehaviorSpec
from palaestra.settings import TrainerSettings

# trainer type → the class that trains it
ALGORITHMS: dict[str, type] = {"ppo": PPO, "sac": SAC, "offline_bc": OfflineBC, "online_bc": OnlineBC}


def make_algorithm(spec: BehaviorSpec, settings: TrainerSettings, device: torch.device,
                   rng: np.random.Generator, behavior: str = "the behavior") -> Algorithm:
    """The trainer type's algorithm with what the settings add to it (behavioral cloning: its
    demonstrations are read and checked against ``spec`` here, DemoError if they do not fit; so
    are offline_bc's)."""
    cls = ALGORITHMS[settings.trainer]
    algorithm = cls(spec, settings, device, rng, behavior)  # checks of demonstrations name the behavior
    if capabilities(settings).imitation_only:
        return algorithm
    if settings.behavioral_cloning is not None:
        algorithm.policy_updates.append(BehavioralCloning(settings, spec, algorithm.policy, device, rng, behavior))
    return algorithm


__all__ = ["ALGORITHMS", "Algorithm", "make_algorithm"]
