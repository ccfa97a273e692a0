"""Reward signals: each turns a batch of segments (PPO) or of sampled transitions (SAC) into
rewards for one value head (the protocol: rewards/base.py)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from palaestra.envs.base import BehaviorSpec
from palaestra.rewards.base import RewardSignal, SignalContext
from palaestra.rewards.curiosity import CuriositySignal
from palaestra.rewards.episode_sums import SignalEpisodeSums
from palaestra.rewards.extrinsic import ExtrinsicSignal
from palaestra.rewards.gail import GAILSignal
from palaestra.rewards.rnd import RNDSignal
from palaestra.settings import CuriositySettings, ExtrinsicSettings, GAILSettings, RNDSettings

# A signal's settings type (settings.REWARD_SIGNALS) → how to build it. Adding a signal: its
# settings dataclass, its class with a ``build``, one entry here, and its name in
# capabilities.py for the trainers that support it (docs/extending.md).
# A builder takes (settings, spec, device, context): the context (rewards/base.py's SignalContext)
# names the trainer's image encoder, the behavior and whether the trainer normalizes observations.
SIGNAL_BUILDERS: dict[type, Callable[[Any, BehaviorSpec, torch.device, SignalContext], RewardSignal]] = {
    ExtrinsicSettings: ExtrinsicSignal.build,
    CuriositySettings: CuriositySignal.build,
    RNDSettings: RNDSignal.build,
    GAILSettings: GAILSignal.build,
}


def make_signals(spec: BehaviorSpec, settings: Mapping[str, Any], device: torch.device,
                 context: SignalContext = SignalContext()) -> list[RewardSignal]:
    """The behavior's reward signals, in the order of its settings (the value heads' order);
    ``context``: what they are told of the trainer and the behavior (rewards/base.py)."""
    signals: list[RewardSignal] = []
    for name, cfg in settings.items():
        build = SIGNAL_BUILDERS.get(type(cfg))
        if build is None:  # capabilities.settings_problems refuses these before anything is built
            raise ValueError(f"the {name} reward signal is not supported yet")
        signals.append(build(cfg, spec, device, context))
    return signals


def prepare_updates(signals: list[RewardSignal]) -> None:
    """Once experience for a first update starts to arrive: each signal's ``prepare_updates``, where
    it has one (a signal trained elsewhere starts its process then, which takes a second or two,
    while the experience is gathered: rewards/background.py)."""
    for signal in signals:
        prepare = getattr(signal, "prepare_updates", None)
        if prepare is not None:
            prepare()


def _stats_of_each(signals: list[RewardSignal], method: str) -> dict[str, float]:
    """The stats of each signal's optional ``method`` (those without one give none)."""
    stats: dict[str, float] = {}
    for signal in signals:
        call = getattr(signal, method, None)
        if call is not None:
            stats |= call()
    return stats


def finish_updates(signals: list[RewardSignal]) -> dict[str, float]:
    """End a round of ``update`` calls: each signal's ``finish_update``, where it has one (a signal
    trained elsewhere brings its model and its stats back then: rewards/background.py)."""
    return _stats_of_each(signals, "finish_update")


def take_reports(signals: list[RewardSignal]) -> dict[str, float]:
    """The stats each signal still owes (``take_report``, where it has one: a signal reports a
    round's stats at the next round's end, rewards/background.py), for the run's last summary."""
    return _stats_of_each(signals, "take_report")


def drop_open_episodes(signals: list[RewardSignal], every: int = 1, offset: int = 0) -> None:
    """Every environment (or one restarted worker's of ``every``) reset: each signal's optional
    ``drop_open_episodes``, for a signal that follows agents through their episodes (the
    extrinsic signal's running return under ``normalize``)."""
    for signal in signals:
        drop = getattr(signal, "drop_open_episodes", None)
        if drop is not None:
            drop(every, offset)


def signals_state(signals: list[RewardSignal]) -> dict[str, torch.Tensor]:
    """Every signal's model state in one flat mapping (``<signal>.<entry>``), for checkpoints."""
    return {f"{s.name}.{key}": value for s in signals for key, value in s.state_dict().items()}


def load_signals_state(signals: list[RewardSignal], state: Mapping[str, torch.Tensor]) -> None:
    for s in signals:
        prefix = f"{s.name}."
        s.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


__all__ = ["RewardSignal", "ExtrinsicSignal", "SignalEpisodeSums", "SIGNAL_BUILDERS", "make_signals", "prepare_updates",
           "drop_open_episodes", "finish_updates", "take_reports", "signals_state", "load_signals_state"]
