"""Per-agent running sums of each reward signal's (scaled) rewards, reported as
``Policy/<Signal> Reward`` when an agent's episode ends."""

from __future__ import annotations

import numpy as np

from palaestra.rewards.base import RewardSignal
from palaestra.rollout.segments import Segments


class SignalEpisodeSums:
    def __init__(self, signals: list[RewardSignal]) -> None:
        self.names = [f"Policy/{s.stat_name} Reward" for s in signals]
        self.sums = np.zeros((0, len(signals)))  # [slots, signals]

    def add(self, seg: Segments, rewards: list[np.ndarray]) -> dict[str, list[float]]:
        """Add one step's finished segments (each slot at most once) with each signal's rewards
        ``[F, H]``; return the sums of the episodes that ended, per signal."""
        slots = int(seg.slot.max()) + 1
        if slots > self.sums.shape[0]:
            grown = np.zeros((max(slots, 2 * self.sums.shape[0]), self.sums.shape[1]))
            grown[: self.sums.shape[0]] = self.sums
            self.sums = grown
        mask = seg.row_mask
        self.sums[seg.slot] += np.stack([np.where(mask, r, 0.0).sum(axis=1) for r in rewards], axis=1)
        ended = seg.slot[seg.episode_end]
        if not len(ended):
            return {}
        finished = self.sums[ended]
        self.sums[ended] = 0.0
        return {name: finished[:, k].tolist() for k, name in enumerate(self.names)}
