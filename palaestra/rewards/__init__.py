"""Reward signals: each turns a batch of segments (PPO) or of sampled transitions (SAC) into
rewards for one value head."""

from __future__ import annotations

from typing import Any, Mapping

from palaestra.rewards.base import RewardSignal
from palaestra.rewards.episode_sums import SignalEpisodeSums
from palaestra.rewards.extrinsic import ExtrinsicSignal
from palaestra.settings import ExtrinsicSettings


def make_signals(settings: Mapping[str, Any]) -> list[RewardSignal]:
    signals: list[RewardSignal] = []
    for name, cfg in settings.items():
        if isinstance(cfg, ExtrinsicSettings):
            signals.append(ExtrinsicSignal(cfg.strength, cfg.gamma))
        else:
            raise ValueError(f"the {name} reward signal is not supported yet")
    return signals


__all__ = ["RewardSignal", "ExtrinsicSignal", "SignalEpisodeSums", "make_signals"]
