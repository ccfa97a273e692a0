"""The environment's own reward, scaled by ``strength``."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from palaestra.envs.base import BehaviorSpec
from palaestra.rollout.segments import Segments
from palaestra.settings import ExtrinsicSettings


class ExtrinsicSignal:
    name = "extrinsic"
    stat_name = "Extrinsic"
    uses_terminal = True
    learns = False

    def __init__(self, strength: float, gamma: float) -> None:
        self.strength = strength
        self.gamma = gamma

    @classmethod
    def build(cls, settings: ExtrinsicSettings, spec: BehaviorSpec, device: torch.device,
              vis_encode_type: str = "simple") -> "ExtrinsicSignal":
        return cls(settings.strength, settings.gamma)

    def rewards(self, segments: Segments) -> np.ndarray:
        return self.strength * segments.env_reward

    def rewards_for_batch(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.strength * batch["env_reward"]

    def update(self, batch: Mapping[str, np.ndarray]) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        pass
