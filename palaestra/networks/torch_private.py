"""The parts of torch outside its public API that the fast paths use, in one place.

- ``functional_adam``: torch's own Adam arithmetic as a function (``torch.optim.adam.adam``), so
  that a step skips ``Optimizer.step``'s per-call bookkeeping (networks/optim.py:
  ``lean_adam_step``).
- ``silu_backward``: ATen's fused SiLU gradient kernel, the one autograd itself runs
  (networks/accelerator.py).

A torch upgrade may move or change either; ``tests/test_torch_private.py`` checks both against
the public API, so that such an upgrade fails there, loudly, rather than somewhere in training.
"""

from __future__ import annotations

import torch
from torch.optim.adam import adam as functional_adam


def silu_backward(grad_h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """d/dz [z sigmoid(z)] times ``grad_h``."""
    return torch.ops.aten.silu_backward(grad_h, z)


__all__ = ["functional_adam", "silu_backward"]
