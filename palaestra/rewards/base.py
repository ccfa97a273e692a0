"""The reward-signal seam: PPO keeps one value head per signal, SAC one Q output per signal."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from palaestra.rollout.segments import Segments


class RewardSignal(Protocol):
    name: str  # config name, e.g. "extrinsic"
    stat_name: str  # as in TensorBoard stats, e.g. "Extrinsic"
    gamma: float
    uses_terminal: bool  # bootstrap 0 at a true terminal state

    def rewards(self, segments: Segments) -> np.ndarray:
        """Scaled rewards ``[F, H]`` for the rows of the segments."""
        ...

    def rewards_for_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Scaled rewards ``[B]`` for a batch of transitions (SAC's replay samples)."""
        ...

    def update(self, batch: dict[str, np.ndarray]) -> dict[str, float]:
        """Train the signal's own model (if any) on a mini-batch; return loss stats."""
        ...
