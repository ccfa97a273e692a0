"""SAC's loss gradients by hand: the losses of ``algorithms/sac.py`` and their gradients,
computed with plain tensor operations (no autograd graph) and written into the parameters'
``.grad``.

Autograd records and replays a graph of about two hundred small operations per SAC gradient
step; for the networks SAC trains (a few layers of up to a few hundred units) that bookkeeping
costs as much as the matrix products. Here every product is issued once, into preallocated
gradient views where possible, and nothing is computed that the update does not use (no
weight gradients for the critic pass that only serves the actor's loss). ``tests/test_sac.py``
checks every gradient against autograd on the same batch and noise.

Notation: swish layers z = h W^T + b, h' = z sigmoid(z); the twin critics are stacked
``[2, B, ...]`` (networks/sac_networks.py: TwinQ); B rows, K reward signals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from palaestra.networks.sac_networks import (
    LOG_STD_MAX,
    LOG_STD_MIN,
    SquashedActor,
    TwinQ,
)

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_LOG_2 = math.log(2.0)


@dataclass
class SACBatch:
    """One mini-batch as the gradient functions take it (tensors on the training device)."""

    x: torch.Tensor  # [B, obs] normalized observations
    x_next: torch.Tensor  # [B, obs]
    continuous: torch.Tensor  # [B, c] actions taken (squashed)
    discrete: torch.Tensor  # [B, branches] int64
    allowed: torch.Tensor  # [B, sum(branches)] bool
    next_allowed: torch.Tensor  # [B, sum(branches)] bool
    rewards: torch.Tensor  # [B, K] per-signal scaled rewards
    not_done: torch.Tensor  # [B, K] 0 where the episode truly ended (signals using terminals)
    noise: torch.Tensor  # [2B, c] standard normal noise for the actor at s and at s'


def _swish(z: torch.Tensor) -> torch.Tensor:
    return nn.functional.silu(z)  # z sigmoid(z), one kernel


def _swish_grad(grad_h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    # d/dz [z sigmoid(z)] = s (1 + z (1 - s)); ATen's fused kernel (autograd's own silu backward)
    return torch.ops.aten.silu_backward(grad_h, z)


class _MLP:
    """The actor body (Linear + SiLU pairs of an nn.Sequential) with gradient views."""

    def __init__(self, body: nn.Sequential) -> None:
        self.layers = [(m.weight, m.bias) for m in body if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor, cache: list | None) -> torch.Tensor:
        h = x
        for w, b in self.layers:
            z = torch.addmm(b, h, w.t())
            if cache is not None:
                cache.append((h, z))
            h = _swish(z)
        return h

    def backward(self, grad_h: torch.Tensor, cache: list) -> None:
        for i in reversed(range(len(self.layers))):
            w, b = self.layers[i]
            h_in, z = cache[i]
            grad_z = _swish_grad(grad_h, z)
            torch.mm(grad_z.t(), h_in, out=w.grad)
            torch.sum(grad_z, 0, out=b.grad)
            if i:
                grad_h = grad_z @ w


class _Twin:
    """TwinQ's stacked layers: weights ``[2, out, in]``, biases ``[2, 1, out]``."""

    def __init__(self, twin: TwinQ) -> None:
        self.layers = list(zip(twin.weights, twin.biases))

    def forward(self, u: torch.Tensor, cache: list | None) -> torch.Tensor:
        h = u.unsqueeze(0).expand(2, *u.shape)
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            z = torch.baddbmm(b, h, w.transpose(1, 2))
            if cache is not None:
                cache.append((h, z))
            h = _swish(z) if i < last else z
        return h

    def backward(self, grad_q: torch.Tensor, cache: list, weights: bool) -> torch.Tensor:
        """Backpropagate ``grad_q`` [2, B, out]; write weight gradients if ``weights``; return
        the gradient with respect to the input ``u`` (summed over both towers)."""
        grad_z = grad_q
        for i in reversed(range(len(self.layers))):
            w, b = self.layers[i]
            h_in, _ = cache[i]
            if weights:
                torch.bmm(grad_z.transpose(1, 2), h_in, out=w.grad)
                torch.sum(grad_z, 1, keepdim=True, out=b.grad)
            if i == 0 and weights:
                return grad_z  # the input is data: its gradient is not needed
            # [2, B, 1] x [2, 1, in]: an outer product, cheaper broadcast than as a matmul
            grad_h = grad_z * w if w.shape[1] == 1 else torch.bmm(grad_z, w)
            if i:
                grad_z = _swish_grad(grad_h, cache[i - 1][1])
        return grad_h.sum(0)


class SACGradients:
    def __init__(self, actor: SquashedActor, critic: TwinQ, target: TwinQ, log_alpha: nn.Parameter,
                 target_entropy: torch.Tensor, gammas: torch.Tensor, branches: list[int]) -> None:
        self.actor = actor
        self.body = _MLP(actor.body)
        self.critic = _Twin(critic)
        self.target = _Twin(target)
        self.log_alpha = log_alpha
        self.target_entropy = target_entropy
        self.gammas = gammas
        self.branches = branches
        self.offsets = [sum(branches[:i]) for i in range(len(branches))]

    @torch.no_grad()
    def compute(self, t: SACBatch) -> dict[str, torch.Tensor]:
        """Write d(loss)/d(parameter) into every ``.grad``; return the loss statistics."""
        if self.actor.gaussian is not None:
            return self._continuous(t)
        return self._discrete(t)

    def _alpha_grad(self, entropy_error: torch.Tensor) -> None:
        # alpha loss = -mean(log_alpha * error)
        self.log_alpha.grad.copy_(entropy_error.mean(0) * (-1.0 / entropy_error.shape[1]))

    def _continuous(self, t: SACBatch) -> dict[str, torch.Tensor]:
        B, c = t.x.shape[0], self.actor.continuous_size
        alpha = self.log_alpha.exp()
        head = self.actor.gaussian
        # -- the actor at s (kept for its backward pass) and at s' (for the target only)
        cache: list = []
        h = self.body.forward(t.x, cache)
        out = torch.addmm(head.bias, h, head.weight.t())
        mean, raw_log_std = out[:, :c], out[:, c:]
        log_std = raw_log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        std = log_std.exp()
        eps = t.noise[:B]
        u = mean + std * eps
        a_pi = torch.tanh(u)
        # log pi(a) = sum[-eps^2/2 - log std - log sqrt(2 pi)] - sum log(1 - tanh(u)^2)
        log_det = 2.0 * (_LOG_2 - u - nn.functional.softplus(-2.0 * u))
        logp_pi = (-0.5 * eps * eps - log_std - log_det).sum(1) - c * _HALF_LOG_2PI

        out_next = torch.addmm(head.bias, self.body.forward(t.x_next, None), head.weight.t())
        log_std_next = out_next[:, c:].clamp(LOG_STD_MIN, LOG_STD_MAX)
        eps_next = t.noise[B:]
        u_next = out_next[:, :c] + log_std_next.exp() * eps_next
        log_det_next = 2.0 * (_LOG_2 - u_next - nn.functional.softplus(-2.0 * u_next))
        logp_next = (-0.5 * eps_next * eps_next - log_std_next - log_det_next).sum(1) - c * _HALF_LOG_2PI

        # -- soft target and the critics' loss: 0.5 mean (q_t - y)^2 per tower
        q_next = self.target.forward(torch.cat([t.x_next, torch.tanh(u_next)], 1), None).min(0).values
        y = t.rewards + self.gammas * t.not_done * (q_next - alpha * logp_next[:, None])
        critic_cache: list = []
        q = self.critic.forward(torch.cat([t.x, t.continuous], 1), critic_cache)  # [2, B, K]
        K = q.shape[2]
        error = q - y
        self.critic.backward(error * (1.0 / (B * K)), critic_cache, weights=True)

        # -- the actor's loss: mean(alpha log pi - mean_k min_t Q_t(s, a_pi)), critics constant
        pi_cache: list = []
        q_pi = self.critic.forward(torch.cat([t.x, a_pi], 1), pi_cache)
        lower = (q_pi[1] < q_pi[0]).unsqueeze(0)  # where tower 1 is the min (ties: tower 0, as min())
        picks = torch.cat([~lower, lower]).to(q_pi.dtype)
        grad_u_in = self.critic.backward(picks * (-1.0 / (B * K)), pi_cache, weights=False)
        grad_a = grad_u_in[:, -c:]
        grad_logp = alpha / B  # [1] broadcast
        grad_u = grad_a * (1.0 - a_pi * a_pi) + grad_logp * 2.0 * a_pi  # d log pi / du = 2 tanh(u)
        grad_mean = grad_u
        grad_log_std = (grad_u * std * eps - grad_logp) * ((raw_log_std >= LOG_STD_MIN) & (raw_log_std <= LOG_STD_MAX))
        grad_out = torch.cat([grad_mean, grad_log_std], 1)
        torch.mm(grad_out.t(), h, out=head.weight.grad)
        torch.sum(grad_out, 0, out=head.bias.grad)
        self.body.backward(grad_out @ head.weight, cache)

        self._alpha_grad((logp_pi + self.target_entropy[0])[:, None])
        q_min_pi = q_pi.min(0).values.mean(1)
        return self._stats(error, (alpha[0] * logp_pi - q_min_pi).mean(), q)

    def _discrete(self, t: SACBatch) -> dict[str, torch.Tensor]:
        B, n = t.x.shape[0], len(self.branches)
        alpha = self.log_alpha.exp()
        A = sum(self.branches)
        head = self.actor.logits
        cache: list = []
        h = self.body.forward(t.x, cache)
        logits = torch.addmm(head.bias, h, head.weight.t()).masked_fill_(~t.allowed, -1.0e8)
        logits_next = torch.addmm(head.bias, self.body.forward(t.x_next, None), head.weight.t())
        logits_next.masked_fill_(~t.next_allowed, -1.0e8)
        critic_cache: list = []
        q_all = self.critic.forward(t.x, critic_cache)  # [2, B, K * A]
        K = q_all.shape[2] // A
        q_all4 = q_all.view(2, B, K, A)
        q_next = self.target.forward(t.x_next, None).view(2, B, K, A).min(0).values  # [B, K, A]
        q_min = q_all4.min(0).values.mean(1)  # [B, A]: the actor's (constant) view of the critics
        v_next = torch.zeros_like(t.rewards)
        q_taken = torch.zeros(2, B, K, dtype=q_all.dtype, device=q_all.device)
        grad_logits = torch.empty_like(logits)
        entropy_error = torch.empty(B, n, dtype=logits.dtype, device=logits.device)
        policy_loss = torch.zeros((), dtype=logits.dtype, device=logits.device)
        taken_index = []
        for br, (start, size) in enumerate(zip(self.offsets, self.branches)):
            cols = slice(start, start + size)
            logp = torch.log_softmax(logits[:, cols], 1)
            p = logp.exp()
            logp_next = torch.log_softmax(logits_next[:, cols], 1)
            v_next += (logp_next.exp()[:, None, :] * (q_next[..., cols] - alpha[br] * logp_next[:, None, :])).sum(-1)
            index = (t.discrete[:, br] + start).view(1, B, 1, 1).expand(2, B, K, 1)
            taken_index.append(index)
            q_taken += q_all4.gather(3, index)[..., 0]
            # policy loss of the branch: mean_b sum_a p (alpha log p - Q); d/dlogits = p (g - E_p[g])
            g = alpha[br] * logp - q_min[:, cols]
            expected = (p * g).sum(1, keepdim=True)
            policy_loss += expected.mean()
            grad_logits[:, cols] = p * (g - expected) * (1.0 / (n * B))
            entropy_error[:, br] = (p * logp).sum(1) + self.target_entropy[br]
        y = t.rewards + self.gammas * t.not_done * (v_next / n)
        q = q_taken / n
        error = q - y  # [2, B, K]
        grad_q_all = torch.zeros_like(q_all4)
        for index in taken_index:  # each branch's taken column receives the mean's share
            grad_q_all.scatter_add_(3, index, (error * (1.0 / (n * B * K))).unsqueeze(3))
        self.critic.backward(grad_q_all.view(2, B, K * A), critic_cache, weights=True)
        grad_logits.masked_fill_(~t.allowed, 0.0)
        torch.mm(grad_logits.t(), h, out=head.weight.grad)
        torch.sum(grad_logits, 0, out=head.bias.grad)
        self.body.backward(grad_logits @ head.weight, cache)
        self._alpha_grad(entropy_error)
        return self._stats(error, policy_loss / n, q)

    @staticmethod
    def _stats(error: torch.Tensor, policy_loss: torch.Tensor, q: torch.Tensor) -> dict[str, torch.Tensor]:
        squared = error.pow(2).mean((1, 2)) * 0.5
        return {"Losses/Q1 Loss": squared[0], "Losses/Q2 Loss": squared[1], "Losses/Policy Loss": policy_loss,
                "q_estimate": q.min(0).values.mean(0)}
