"""Schedules over training steps, as ML-Agents 0.16 decays its hyperparameters."""

from __future__ import annotations

from palaestra.settings import TrainerSettings


def linear_decay(initial: float, final: float, step: int, max_steps: int) -> float:
    """ML-Agents' polynomial decay with power 1: ``initial`` at step 0, ``final`` at max_steps."""
    if max_steps <= 0:
        return final
    fraction = min(step, max_steps) / max_steps
    return initial + (final - initial) * fraction


def scheduled_learning_rate(settings: TrainerSettings, step: int) -> float:
    """``learning_rate``, decayed linearly to 1e-10 at ``max_steps`` with the linear schedule."""
    if settings.learning_rate_schedule == "linear":
        return linear_decay(settings.learning_rate, 1e-10, step, settings.max_steps)
    return settings.learning_rate
