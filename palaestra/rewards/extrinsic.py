"""The environment's own reward, scaled by ``strength``; with ``normalize``, divided first by the
running standard deviation of its discounted return (rewards/return_scale.py)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from palaestra.envs.base import BehaviorSpec
from palaestra.rewards.base import SignalContext
from palaestra.rewards.return_scale import ReturnScale
from palaestra.rollout.segments import Segments
from palaestra.settings import ExtrinsicSettings


class ExtrinsicSignal:
    name = "extrinsic"
    stat_name = "Extrinsic"
    uses_terminal = True
    learns = False
    trains_in_numpy = False  # nothing to train

    def __init__(self, strength: float, gamma: float, normalize: bool = False) -> None:
        self.strength = strength
        self.gamma = gamma
        self.return_scale = ReturnScale(gamma) if normalize else None

    @classmethod
    def build(cls, settings: ExtrinsicSettings, spec: BehaviorSpec, device: torch.device,
              context: SignalContext = SignalContext()) -> "ExtrinsicSignal":
        return cls(settings.strength, settings.gamma, settings.normalize)

    def rewards(self, segments: Segments) -> np.ndarray:
        """The segments' rewards; the algorithms call it once per batch of segments, as they
        arrive, which is when the return scale follows each agent's return."""
        if self.return_scale is None:
            return self.strength * segments.env_reward
        self.return_scale.observe(segments.env_reward, segments.length, segments.slot, segments.episode_end)
        return self.strength * self.return_scale.scale(segments.env_reward)

    def rewards_for_batch(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        if self.return_scale is None:
            return self.strength * batch["env_reward"]
        return self.strength * self.return_scale.scale(batch["env_reward"])

    def drop_open_episodes(self, every: int = 1, offset: int = 0) -> None:
        if self.return_scale is not None:
            self.return_scale.drop_open_episodes(every, offset)

    def update(self, batch: Mapping[str, np.ndarray]) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self.return_scale is None else self.return_scale.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        if self.return_scale is not None:
            self.return_scale.load_state_dict(state)
