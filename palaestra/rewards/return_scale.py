"""The extrinsic reward divided by the running standard deviation of its discounted return
(``reward_signals.extrinsic.normalize``), as Stable-Baselines3's ``VecNormalize(norm_reward=True)``
does and so rl-zoo's ``normalize: true``: each agent's return ``R <- gamma * R + r`` is followed
through its segments, zeroed when its episode ends, and every ``R`` updates a running variance;
rewards are divided by its square root (no mean is taken off) and clipped to ``[-clip, clip]``.
ML-Agents has no such setting. It keeps the value targets near unit scale whatever the reward's
size, which some tuned hyperparameters (rl-zoo's) were found with."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from palaestra.rollout.discounting import running_discounted_sum
from palaestra.rollout.segments import slot_waves

CLIP = 10.0  # VecNormalize's clip_reward
EPSILON = 1e-8


class ReturnScale:
    def __init__(self, gamma: float) -> None:
        self.gamma = gamma
        self.returns = np.zeros(0)  # each agent's (collector slot's) discounted return so far
        # running mean and variance of the returns (Chan et al.'s parallel update), from
        # VecNormalize's start: a count of 1e-4 with variance 1
        self.count, self.mean, self.var = 1e-4, 0.0, 1.0

    def observe(self, reward: np.ndarray, length: np.ndarray, slot: np.ndarray, episode_end: np.ndarray) -> None:
        """Follow each agent's return through segments ``reward [F, H]`` (rows past ``length``
        are padding), in the order they happened; an agent's segments may follow each other."""
        if slot.size and slot.max() >= len(self.returns):
            self.returns = np.concatenate([self.returns, np.zeros(int(slot.max()) + 1 - len(self.returns))])
        # an agent's later segments start from its earlier ones' end: take them in waves
        real = np.arange(reward.shape[1])[None, :] < length[:, None]
        seen = []
        for rows in slot_waves(slot):
            returns = running_discounted_sum(np.where(real[rows], reward[rows], 0.0), self.gamma,
                                             self.returns[slot[rows]])
            last = returns[np.arange(len(rows)), np.maximum(length[rows] - 1, 0)]
            self.returns[slot[rows]] = np.where(episode_end[rows], 0.0, last)
            seen.append(returns[real[rows]])
        self._update(np.concatenate(seen) if seen else np.zeros(0))

    def drop_open_episodes(self, every: int = 1, offset: int = 0) -> None:
        """The slots ``offset, offset + every, ...`` start new episodes (their environments reset):
        their returns start again from zero, as at an episode's end."""
        self.returns[offset::every] = 0.0

    def _update(self, x: np.ndarray) -> None:
        if not x.size:
            return
        count, mean, var = float(x.size), float(x.mean()), float(x.var())
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.var = (self.var * self.count + var * count + delta**2 * self.count * count / total) / total
        self.count = total

    def scale(self, reward: np.ndarray) -> np.ndarray:
        return np.clip(reward / np.sqrt(self.var + EPSILON), -CLIP, CLIP).astype(np.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"return_count": torch.tensor(self.count, dtype=torch.float64),
                "return_mean": torch.tensor(self.mean, dtype=torch.float64),
                "return_var": torch.tensor(self.var, dtype=torch.float64)}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        if "return_var" in state:  # a checkpoint from before normalize was set starts afresh
            self.count, self.mean, self.var = (float(state[k]) for k in ("return_count", "return_mean", "return_var"))
