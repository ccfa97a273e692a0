"""The training algorithms, one per ``trainer:`` type, each behind the :class:`Algorithm`
protocol (algorithms/protocol.py): the trainer and the run loop never ask which one they hold;
what a trainer type can do is in palaestra/capabilities.py."""

from __future__ import annotations

import numpy as np
import torch

from palaestra.algorithms.ppo import PPO
from palaestra.algorithms.protocol import Algorithm
from palaestra.algorithms.sac import SAC
from palaestra.envs.base import BehaviorSpec
from palaestra.settings import TrainerSettings

# trainer type → the class that trains it (the types capabilities.py refuses have none)
ALGORITHMS: dict[str, type] = {"ppo": PPO, "sac": SAC}


def make_algorithm(spec: BehaviorSpec, settings: TrainerSettings, device: torch.device,
                   rng: np.random.Generator) -> Algorithm:
    return ALGORITHMS[settings.trainer](spec, settings, device, rng)


__all__ = ["ALGORITHMS", "Algorithm", "make_algorithm"]
