"""The training algorithms, one per ``trainer:`` type, each behind the :class:`Algorithm`
protocol (algorithms/protocol.py): the trainer and the run loop never ask which one they hold;
what a trainer type can do is in palaestra/capabilities.py."""

from __future__ import annotations

from dataclasses import fields, is_dataclass, replace

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
                   rng: np.random.Generator, behavior: str = "the behavior",
                   demonstrations: bool = True) -> Algorithm:
    """The trainer type's algorithm with what the settings add to it (behavioral cloning: its
    demonstrations are read and checked against ``spec`` here, DemoError if they do not fit; so
    are GAIL's and offline_bc's). ``demonstrations`` False: a run that does not learn
    (``--inference``) reads none, so the files need not be there."""
    if not demonstrations:
        settings = without_demonstrations(settings)
    cls = ALGORITHMS[settings.trainer]
    algorithm = cls(spec, settings, device, rng, behavior)  # checks of demonstrations name the behavior
    if capabilities(settings).imitation_only:
        return algorithm
    if settings.behavioral_cloning is not None:
        algorithm.policy_updates.append(BehavioralCloning(settings, spec, algorithm.policy, device, rng, behavior))
    return algorithm


def without_demonstrations(settings: TrainerSettings) -> TrainerSettings:
    """``settings`` for a policy that acts and never learns: no behavioral cloning, and GAIL's and
    offline_bc's ``demo_path`` empty (nothing read). Every network is still built as for training,
    GAIL's discriminator included, so that a checkpoint loads into it."""
    signals = {name: replace(cfg, demo_path="") if _reads_demonstrations(cfg) else cfg
               for name, cfg in settings.reward_signals.items()}
    changes: dict = {"reward_signals": signals, "behavioral_cloning": None}
    if _reads_demonstrations(settings):
        changes["demo_path"] = ""
    return replace(settings, **changes)


def _reads_demonstrations(settings: object) -> bool:
    """Settings with a ``demo_path`` (GAIL's, offline_bc's, a new signal's or trainer's)."""
    return is_dataclass(settings) and any(f.name == "demo_path" for f in fields(settings))


__all__ = ["ALGORITHMS", "Algorithm", "make_algorithm", "without_demonstrations"]
