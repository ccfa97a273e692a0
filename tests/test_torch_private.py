"""The private torch APIs behind palaestra/networks/torch_private.py, checked against torch's public
API: a torch upgrade that moves or changes them fails here, by name, not somewhere in training."""

from __future__ import annotations

import torch

from palaestra.networks.torch_private import functional_adam, lstm_step, silu_backward


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


def test_lstm_step_is_one_step_of_the_lstm_with_its_gradients():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(5, 3, batch_first=True)
    x, h, c = torch.randn(4, 5, requires_grad=True), torch.randn(4, 3), torch.randn(4, 3)
    out, (h_full, c_full) = lstm(x.unsqueeze(1), (h.unsqueeze(0), c.unsqueeze(0)))
    (out.sum() + c_full.pow(2).sum()).backward()
    full = [x.grad.clone()] + [p.grad.clone() for p in lstm.parameters()]
    x.grad = None
    lstm.zero_grad()
    h_step, c_step = lstm_step(lstm, x, h, c)
    torch.testing.assert_close(h_step, out[:, 0])
    torch.testing.assert_close(h_step, h_full[0])
    torch.testing.assert_close(c_step, c_full[0])
    (h_step.sum() + c_step.pow(2).sum()).backward()
    for by_step, by_lstm in zip([x.grad] + [p.grad for p in lstm.parameters()], full):
        torch.testing.assert_close(by_step, by_lstm)
