"""The environment's own reward, scaled by ``strength``."""

from __future__ import annotations

import numpy as np

from palaestra.rollout.segments import Segments


class ExtrinsicSignal:
    name = "extrinsic"
    stat_name = "Extrinsic"
    uses_terminal = True

    def __init__(self, strength: float, gamma: float) -> None:
        self.strength = strength
        self.gamma = gamma

    def rewards(self, segments: Segments) -> np.ndarray:
        return self.strength * segments.env_reward

    def rewards_for_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.strength * batch["env_reward"]

    def update(self, batch: dict[str, np.ndarray]) -> dict[str, float]:
        return {}
