"""Adam over all of a network's parameters at once, in numpy (the CPU fast path).

``torch.optim.Adam.step`` costs about 130 us per call inside PPO's update loop for a small
network, mostly per-tensor bookkeeping. Here every parameter, gradient and moment estimate is a
view into one flat buffer, and a step is eight numpy operations over that buffer (about 20 us).

From ``TORCH_KERNEL_FROM`` parameters the same step runs as torch's fused Adam kernel over the
same flat buffers: one vectorized pass instead of eight, 0.10 against 0.27 ms for SAC's 202k
parameters at 256 units (one thread), where below it torch's call costs more than numpy's eight.

The torch optimizer stays the owner of the state for checkpoints: its ``exp_avg`` and
``exp_avg_sq`` tensors are views of the same flat buffers and ``sync()`` writes the step count,
so ``optimizer.state_dict()`` is exactly torch's format on both paths, and a checkpoint resumes
on either. The arithmetic is torch's Adam (its non-fused form in numpy; its fused kernel from
``TORCH_KERNEL_FROM`` parameters where the owning optimizer is fused), without weight decay or
AMSGrad.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from palaestra.networks.flat_params import FlatParameters
from palaestra.networks.torch_private import functional_adam

# From this many parameters torch's fused kernel beats numpy's eight passes. Inside PPO's update
# loop (after a mini-batch's gradients, one thread): 69 against 59 us at 36k parameters, 125
# against 203 us at 137k; alone the kernel wins from about 20k. An optimizer that is not fused
# (torch builds without a fused CPU Adam: networks/optim.py's make_adam) keeps the numpy step.
TORCH_KERNEL_FROM = 65536


class NumpyAdam:
    def __init__(self, params: list[nn.Parameter], optimizer: torch.optim.Adam,
                 flat: FlatParameters | None = None) -> None:
        """Adam over ``params``, the optimizer's parameters. With ``flat``, they are already one
        flat buffer: ``params`` is then ``[flat.parameter]``, the single parameter over it."""
        self.params = params
        self.optimizer = optimizer
        if flat is not None:
            if len(params) != 1 or params[0] is not flat.parameter:  # identity: == on tensors is elementwise
                raise ValueError("with a flat buffer, the optimizer's parameter is the buffer's")
            self.flat = flat
            self.slices = [slice(0, flat.data.numel())]
        else:
            self.flat = FlatParameters(params)
            self.slices = self.flat.slices
        self.flat_m = torch.zeros_like(self.flat.data)
        self.flat_v = torch.zeros_like(self.flat.data)
        self.p, self.g = self.flat.data.numpy(), self.flat.grad.numpy()
        self.m, self.v = self.flat_m.numpy(), self.flat_v.numpy()
        self._scratch = np.empty_like(self.p)
        self.t = 0
        self._fused = self.p.size >= TORCH_KERNEL_FROM and bool(optimizer.param_groups[0].get("fused"))
        self._steps = torch.zeros(())  # the fused kernel's step counter, set from ``t`` at each step
        self._bind_state()

    def _bind_state(self) -> None:
        for p, sl in zip(self.params, self.slices):
            self.optimizer.state[p] = {
                "step": torch.tensor(float(self.t)),
                "exp_avg": self.flat_m[sl].view_as(p),
                "exp_avg_sq": self.flat_v[sl].view_as(p),
            }

    def step(self) -> None:
        group = self.optimizer.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        self.t += 1
        if self._fused:
            self._steps.fill_(self.t - 1)  # the functional call counts this step
            functional_adam([self.flat.data], [self.flat.grad], [self.flat_m], [self.flat_v], [], [self._steps],
                            fused=True, amsgrad=False, beta1=beta1, beta2=beta2, lr=lr, weight_decay=0.0, eps=eps,
                            maximize=False)
            return
        g, m, v, tmp = self.g, self.m, self.v, self._scratch
        m *= beta1
        m += (1.0 - beta1) * g
        np.multiply(g, g, out=tmp)
        v *= beta2
        tmp *= 1.0 - beta2
        v += tmp
        step_size = lr / (1.0 - beta1**self.t)
        np.sqrt(v, out=tmp)
        tmp /= math.sqrt(1.0 - beta2**self.t)
        tmp += eps
        np.divide(m, tmp, out=tmp)
        tmp *= step_size
        self.p -= tmp

    def clip_grad_norm(self, max_norm: float) -> None:
        """Scale the gradient down to a global norm of at most ``max_norm``, as
        ``torch.nn.utils.clip_grad_norm_`` does (same formula and small constant)."""
        coefficient = max_norm / (math.sqrt(float(np.dot(self.g, self.g))) + 1e-6)
        if coefficient < 1.0:
            self.g *= np.float32(coefficient)

    def sync(self) -> None:
        """Write the step count into the torch optimizer's state (before ``state_dict()``)."""
        for p in self.params:
            self.optimizer.state[p]["step"] = torch.tensor(float(self.t))

    def after_load(self) -> None:
        """Adopt state just loaded into the torch optimizer (``load_state_dict`` replaces its
        tensors with new ones) and bind it to the flat buffers again."""
        steps = []
        for p, sl in zip(self.params, self.slices):
            state = self.optimizer.state.get(p) or {}
            if "exp_avg" in state:
                self.flat_m[sl].copy_(state["exp_avg"].reshape(-1))
                self.flat_v[sl].copy_(state["exp_avg_sq"].reshape(-1))
                steps.append(int(float(state["step"])))
        self.t = max(steps) if steps else 0
        self._bind_state()
