"""The training algorithms. Each takes one behavior's batches and holds its networks:

- ``act(obs, allowed)`` → ``ActResult`` for a decision batch, ``value(obs)`` for bootstraps;
- ``collect(segments)`` takes one step's finished segments (returns episode stats);
- ``ready()`` / ``update()`` learn when the algorithm's cadence says so (returns stats);
  ``experiences``, the rows the next update learns from;
- ``step`` and ``update_count`` counters, ``policy`` (the module exported to ONNX),
  ``state_dict()`` / ``load_state_dict()`` for checkpoints.
"""

from __future__ import annotations

import numpy as np
import torch

from palaestra.algorithms.ppo import PPO
from palaestra.algorithms.sac import SAC
from palaestra.envs.base import BehaviorSpec
from palaestra.settings import TrainerSettings

Algorithm = PPO | SAC


def make_algorithm(spec: BehaviorSpec, settings: TrainerSettings, device: torch.device,
                   rng: np.random.Generator) -> Algorithm:
    if settings.trainer == "sac":
        return SAC(spec, settings, device, rng)
    return PPO(spec, settings, device, rng)


def spec_problems(spec: BehaviorSpec, settings: TrainerSettings) -> list[str]:
    """What this behavior's observations and actions ask of the trainer that it cannot do yet."""
    problems = []
    visual = [s for s in spec.observation_shapes if len(s) != 1]
    if visual:
        problems.append(f"observations of shape {visual}: only vector observations are supported so far")
    action = spec.action_spec
    if settings.trainer == "sac" and settings.activation != "swish":
        problems.append(f"activation {settings.activation!r} is built for trainer 'ppo' only so far; "
                        "SAC's networks use swish (remove the key)")
    if settings.trainer == "sac" and action.is_continuous and action.is_discrete:
        problems.append("trainer 'sac' takes continuous or discrete actions, not both at once; use trainer: ppo")
    return problems
