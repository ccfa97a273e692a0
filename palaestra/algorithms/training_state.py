"""The part of an algorithm's checkpoint that is not its networks: the optimizer, the step and
update counters, behavioral cloning's optimizer and the reward signals' models. PPO and SAC both
save and restore it through these two functions; each adds its own networks around them."""

from __future__ import annotations

from typing import Any, Mapping

from palaestra.algorithms.auxiliary import load_policy_updates_state, policy_updates_state
from palaestra.networks.optim import load_optimizer_state
from palaestra.rewards import signals_state


def training_state(algorithm: Any) -> dict[str, Any]:
    """The optimizer (synced first from the numpy Adam where that trains), the counters, and the
    policy updates' and signals' state where there are any."""
    if algorithm._numpy_adam is not None:
        algorithm._numpy_adam.sync()
    state: dict[str, Any] = {"optimizer": algorithm.optimizer.state_dict(), "step": algorithm.step,
                             "update_count": algorithm.update_count}
    if algorithm.policy_updates:
        state["policy_updates"] = policy_updates_state(algorithm.policy_updates)
    signals = signals_state(algorithm.signals)
    if signals:
        state["signals"] = signals
    return state


def load_training_state(algorithm: Any, state: Mapping[str, Any]) -> None:
    """Restore what :func:`training_state` saved, except the signals (loaded with the weights, as
    --initialize-from takes them too)."""
    load_optimizer_state(algorithm.optimizer, state["optimizer"])
    if algorithm._numpy_adam is not None:
        algorithm._numpy_adam.after_load()
    algorithm.step = int(state["step"])
    algorithm.update_count = int(state["update_count"])
    load_policy_updates_state(algorithm.policy_updates, state.get("policy_updates"))
