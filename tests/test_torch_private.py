"""The private torch APIs behind palaestra/networks/torch_private.py, checked against torch's public
API: a torch upgrade that moves or changes them fails here, by name, not somewhere in training."""

from __future__ import annotations

import torch

from palaestra.networks.torch_private import functional_adam, silu_backward


def test_silu_backward_is_autograd_s_gradient_of_silu():
    z = torch.linspace(-30.0, 30.0, 101, requires_grad=True)
    grad_h = torch.randn(101, generator=torch.Generator().manual_seed(0))
    torch.nn.functional.silu(z).backward(grad_h)
    torch.testing.assert_close(silu_backward(grad_h, z.detach()), z.grad)


def test_functional_adam_takes_the_optimizer_s_step():
    torch.manual_seed(0)
    start = torch.randn(7)
    stepped = torch.nn.Parameter(start.clone())
    optimizer = torch.optim.Adam([stepped], lr=1e-2, eps=1e-5)
    by_hand = start.clone()
    exp_avg, exp_avg_sq, step = torch.zeros(7), torch.zeros(7), torch.tensor(0.0)
    for _ in range(3):
        grad = torch.randn(7)
        stepped.grad = grad.clone()
        optimizer.step()
        functional_adam([by_hand], [grad], [exp_avg], [exp_avg_sq], [], [step], foreach=False, amsgrad=False,
                        beta1=0.9, beta2=0.999, lr=1e-2, weight_decay=0.0, eps=1e-5, maximize=False)
    torch.testing.assert_close(by_hand, stepped.detach())
    state = optimizer.state[stepped]
    torch.testing.assert_close(exp_avg, state["exp_avg"])
    torch.testing.assert_close(exp_avg_sq, state["exp_avg_sq"])
