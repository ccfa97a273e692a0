"""Many parameters as views into one flat buffer, and their gradients into another.

An optimizer step, a gradient reset or a Polyak average then costs one operation over the whole
buffer instead of one per tensor; for the small networks of RL that per-tensor bookkeeping (in
``torch.optim`` mostly Python) costs more than the arithmetic. The module keeps its ``Parameter``
objects, so ``state_dict`` / ``load_state_dict`` (which copies in place) work unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class FlatParameters:
    def __init__(self, params: list[nn.Parameter], with_grad: bool = True) -> None:
        if not params:
            raise ValueError("no parameters to flatten")
        device, dtype = params[0].device, params[0].dtype
        total = sum(p.numel() for p in params)
        self.data = torch.zeros(total, device=device, dtype=dtype)
        self.grad = torch.zeros(total, device=device, dtype=dtype)
        self.slices: list[slice] = []
        offset = 0
        for p in params:
            sl = slice(offset, offset + p.numel())
            self.data[sl].copy_(p.data.reshape(-1))
            p.data = self.data[sl].view_as(p)  # the same Parameter object, now a view
            if with_grad:
                p.grad = self.grad[sl].view_as(p)  # autograd accumulates into it in place
            self.slices.append(sl)
            offset += p.numel()
        self.params = params
        # One Parameter over the whole buffer, for a torch optimizer; its gradient is the flat one.
        self.parameter = nn.Parameter(self.data)
        self.parameter.grad = self.grad

    def span(self, first: int, count: int) -> slice:
        """The buffer range of parameters ``first`` .. ``first + count - 1`` (consecutive)."""
        return slice(self.slices[first].start, self.slices[first + count - 1].stop)

    def zero_grad(self) -> None:
        self.grad.zero_()  # in place: the parameters' .grad are views of it
