"""Means over a mini-batch of recurrent sequences, whose padding rows (``valid`` 0, after each
sequence's real rows: rollout/sequences.py) count in no loss."""

from __future__ import annotations

import torch


def valid_mean(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """The mean over rows (and any further axes), over real rows only where ``valid`` marks them."""
    if valid is None:
        return x.mean()
    weights = valid.reshape(-1, *([1] * (x.dim() - 1)))
    return (x * weights).sum() / (valid.sum() * (x.numel() // max(x.shape[0], 1)))
