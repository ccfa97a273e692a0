"""Segments → transitions: what follows each row (SAC's replay transitions; reward signals whose
model learns from (observation, action, next observation), like curiosity)."""

from __future__ import annotations

import numpy as np


def following_rows(rows: np.ndarray, after_last: np.ndarray, length: np.ndarray,
                   fill: bool | float = 0) -> np.ndarray:
    """``[F, H, ...]``: row ``t + 1`` of each segment at row ``t``, and ``after_last`` ``[F, ...]``
    (what followed the segment: the next observation, its action mask) at the last row.
    Rows past ``length`` hold ``fill`` or leftovers; they are padding either way."""
    out = np.full_like(rows, fill) if fill else np.empty_like(rows)
    out[:, :-1] = rows[:, 1:]
    out[np.arange(len(length)), length - 1] = after_last
    return out


def terminal_rows(length: np.ndarray, terminal: np.ndarray, width: int) -> np.ndarray:
    """``[F, H]`` bool: True at the last row of each segment whose episode truly ended there (a
    step-limit interruption is not: targets bootstrap through it)."""
    done = np.zeros((len(length), width), bool)
    done[np.arange(len(length)), length - 1] = terminal
    return done
