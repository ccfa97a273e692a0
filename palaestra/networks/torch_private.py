"""The parts of torch outside its public API that the fast paths use, in one place.

- ``functional_adam``: torch's own Adam arithmetic as a function (``torch.optim.adam.adam``), so
  that a step skips ``Optimizer.step``'s per-call bookkeeping (networks/optim.py:
  ``lean_adam_step``).
- ``silu_backward``: ATen's fused SiLU gradient kernel, the one autograd itself runs
  (networks/accelerator.py).
- ``lstm_step``: one step of an ``nn.LSTM`` through the kernel ``nn.LSTMCell`` runs
  (``torch.lstm_cell``, undocumented), about three times faster than the LSTM's own call for a
  sequence of one row: recurrent policies act one step at a time (networks/recurrent.py).

A torch upgrade may move or change any of them; ``tests/test_torch_private.py`` checks each against
the public API, so that such an upgrade fails there, loudly, rather than somewhere in training.
"""

from __future__ import annotations

import torch
from torch.optim.adam import adam as functional_adam


def silu_backward(grad_h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """d/dz [z sigmoid(z)] times ``grad_h``."""
    return torch.ops.aten.silu_backward(grad_h, z)


def lstm_step(lstm: torch.nn.LSTM, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of a one-layer, batch-first ``lstm`` with biases: ``x`` ``[B, inputs]``, ``h``
    and ``c`` ``[B, units]`` → the next ``(h, c)``."""
    return torch.lstm_cell(x, (h, c), lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)


__all__ = ["functional_adam", "lstm_step", "silu_backward"]
