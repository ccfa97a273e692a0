"""SAC's loss gradients by hand: the losses of ``algorithms/sac.py`` and their gradients,
written into the parameters' ``.grad`` (views of the same memory), without autograd.

Autograd records and replays a graph of about two hundred small operations per SAC gradient step
and computes what the update does not use; here every product is issued once, into the gradient
views where possible, with no weight gradients for the critic pass that only serves the actor's
loss. The code is written once over a small set of array operations with two implementations:
``NumpyOps`` for narrow networks on the CPU (numpy dispatches an operation in about a microsecond,
torch in several; SAC's steps there are a hundred or so operations on a few hundred numbers) and
``TorchOps`` for wide networks and other devices. ``tests/test_sac.py`` checks every gradient,
with both, against autograd (``SAC._autograd_gradients``) on the same batch and noise.

Notation: swish layers z = h W^T + b, h' = z sigmoid(z); the twin critics are stacked
``[2, B, ...]`` (networks/sac_networks.py: TwinQ); B rows, K reward signals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from palaestra.networks.constants import CLIP, WIDE_NETWORK_UNITS
from palaestra.networks.distributions import MASKED_LOGIT
from palaestra.networks.sac_networks import LOG_STD_MAX, LOG_STD_MIN, SquashedActor, TwinQ
from palaestra.networks.torch_private import silu_backward

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_LOG_2 = math.log(2.0)
# NumpyOps: from this many elements, torch's vectorized kernels beat numpy's own operations
# (numpy's transcendental functions are not vectorized)
_TORCH_KERNELS_FROM = 4096


@dataclass
class SACBatch:
    """One mini-batch, as numpy arrays (``to_torch`` for the autograd path)."""

    obs: np.ndarray  # [B, obs] raw observations (each path normalizes them)
    next_obs: np.ndarray  # [B, obs]
    continuous: np.ndarray  # [B, c] actions taken (squashed)
    discrete: np.ndarray  # [B, branches] int64
    allowed: np.ndarray  # [B, sum(branches)] bool
    next_allowed: np.ndarray  # [B, sum(branches)] bool
    rewards: np.ndarray  # [B, K] per-signal scaled rewards
    not_done: np.ndarray  # [B, K] 0 where the episode truly ended (signals using terminals)
    noise: np.ndarray  # [2B, c] standard normal noise for the actor at s and at s'

    def to_torch(self, device: torch.device) -> SimpleNamespace:
        return SimpleNamespace(**{k: torch.as_tensor(v, device=device) for k, v in vars(self).items()})


class NumpyOps:
    """Array operations for narrow networks on the CPU: numpy over views of the tensors' memory.
    A step of such networks is a hundred or so operations on arrays of a few hundred numbers;
    torch costs several microseconds to dispatch each, numpy about one. Large operands still go
    to torch's vectorized kernels (numpy's transcendental functions are not vectorized)."""

    @staticmethod
    def view(t: torch.Tensor) -> np.ndarray:
        return t.detach().numpy()

    @staticmethod
    def mm(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return np.matmul(a, b, out=out)

    @staticmethod
    def swish(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(z sigmoid(z), sigmoid(z)): the sigmoid is kept for the backward pass."""
        if z.size < _TORCH_KERNELS_FROM:
            s = np.tanh(0.5 * z)  # sigmoid(z) = (1 + tanh(z / 2)) / 2, which cannot overflow
            s *= 0.5
            s += 0.5
        else:
            s = np.empty_like(z)
            torch.sigmoid(torch.from_numpy(z), out=torch.from_numpy(s))
        return z * s, s

    @staticmethod
    def swish_grad(grad_h: np.ndarray, z: np.ndarray, s: np.ndarray) -> np.ndarray:
        """d/dz [z sigmoid(z)] = s (1 + z (1 - s)), times ``grad_h``."""
        if z.size < _TORCH_KERNELS_FROM:
            return grad_h * (s * (1.0 + z * (1.0 - s)))
        return silu_backward(torch.from_numpy(grad_h), torch.from_numpy(z)).numpy()

    # the twin critics' stacked layers: per-tower 2-D products (numpy's stacked matmul misses
    # BLAS's fast path for transposed operands), except where both towers read the same input
    @staticmethod
    def twin_first(u: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = w.shape[1]
        return (u @ w.reshape(2 * out, -1).T).reshape(u.shape[0], 2, out).transpose(1, 0, 2) + b

    @staticmethod
    def twin_linear(h: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        z = np.empty((2, h.shape[1], w.shape[1]), np.float32)
        for t in (0, 1):
            np.matmul(h[t], w[t].T, out=z[t])
        z += b
        return z

    @staticmethod
    def twin_weight_grad(grad_z: np.ndarray, h_in: np.ndarray, gw: np.ndarray) -> None:
        for t in (0, 1):
            np.matmul(grad_z[t].T, h_in if h_in.ndim == 2 else h_in[t], out=gw[t])

    @staticmethod
    def twin_input_grad(grad_z: np.ndarray, w: np.ndarray) -> np.ndarray:
        grad_h = np.empty((2, grad_z.shape[1], w.shape[2]), np.float32)
        for t in (0, 1):
            np.matmul(grad_z[t], w[t], out=grad_h[t])
        return grad_h

    @staticmethod
    def sum_into(x: np.ndarray, axis: int, out: np.ndarray, keepdims: bool = False) -> None:
        np.sum(x, axis, keepdims=keepdims, out=out)

    @staticmethod
    def sum(x: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
        return x.sum(axis, keepdims=keepdims)

    exp, tanh, log, clip, where = np.exp, np.tanh, np.log, np.clip, np.where

    @staticmethod
    def softplus(x: np.ndarray) -> np.ndarray:
        return np.logaddexp(0.0, x)

    @staticmethod
    def cat(xs: list[np.ndarray], axis: int) -> np.ndarray:
        return np.concatenate(xs, axis)

    @staticmethod
    def min0(x: np.ndarray) -> np.ndarray:
        return x.min(0)

    @staticmethod
    def max1(x: np.ndarray) -> np.ndarray:
        return x.max(1, keepdims=True)

    @staticmethod
    def swap01(x: np.ndarray) -> np.ndarray:
        return x.swapaxes(0, 1)

    @staticmethod
    def as_float(mask: np.ndarray) -> np.ndarray:
        return mask.astype(np.float32)

    @staticmethod
    def zeros(shape: tuple[int, ...], like: np.ndarray) -> np.ndarray:
        return np.zeros(shape, np.float32)

    @staticmethod
    def empty(shape: tuple[int, ...], like: np.ndarray) -> np.ndarray:
        return np.empty(shape, np.float32)

    @staticmethod
    def arange(n: int, like: np.ndarray) -> np.ndarray:
        return np.arange(n)


class TorchOps:
    """The same operations in torch, on the tensors themselves: wide networks (their products
    outweigh any dispatch cost, and torch runs them on every core) and other devices."""

    @staticmethod
    def view(t: torch.Tensor) -> torch.Tensor:
        return t.detach()

    @staticmethod
    def mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        return torch.mm(a, b, out=out) if out is not None else torch.mm(a, b)

    @staticmethod
    def swish(z: torch.Tensor) -> tuple[torch.Tensor, None]:
        return nn.functional.silu(z), None  # one fused kernel; its backward needs only z

    @staticmethod
    def swish_grad(grad_h: torch.Tensor, z: torch.Tensor, s: None) -> torch.Tensor:
        return silu_backward(grad_h, z)  # autograd's own fused kernel

    @staticmethod
    def twin_first(u: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(b, u.unsqueeze(0).expand(2, *u.shape), w.transpose(1, 2))

    @staticmethod
    def twin_linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(b, h, w.transpose(1, 2))

    @staticmethod
    def twin_weight_grad(grad_z: torch.Tensor, h_in: torch.Tensor, gw: torch.Tensor) -> None:
        if h_in.dim() == 2:
            h_in = h_in.unsqueeze(0).expand(2, *h_in.shape)
        torch.bmm(grad_z.transpose(1, 2), h_in, out=gw)

    @staticmethod
    def twin_input_grad(grad_z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # [2, B, 1] x [2, 1, in]: an outer product, cheaper broadcast than as a matmul
        return grad_z * w if w.shape[1] == 1 else torch.bmm(grad_z, w)

    @staticmethod
    def sum_into(x: torch.Tensor, axis: int, out: torch.Tensor, keepdims: bool = False) -> None:
        torch.sum(x, axis, keepdim=keepdims, out=out)

    @staticmethod
    def sum(x: torch.Tensor, axis: int, keepdims: bool = False) -> torch.Tensor:
        return x.sum(axis, keepdim=keepdims)

    exp, tanh, log, clip, where = torch.exp, torch.tanh, torch.log, torch.clamp, torch.where
    softplus = staticmethod(nn.functional.softplus)

    @staticmethod
    def cat(xs: list[torch.Tensor], axis: int) -> torch.Tensor:
        return torch.cat(xs, axis)

    @staticmethod
    def min0(x: torch.Tensor) -> torch.Tensor:
        return x.min(0).values

    @staticmethod
    def max1(x: torch.Tensor) -> torch.Tensor:
        return x.max(1, keepdim=True).values

    @staticmethod
    def swap01(x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1)

    @staticmethod
    def as_float(mask: torch.Tensor) -> torch.Tensor:
        return mask.float()

    @staticmethod
    def zeros(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        return torch.zeros(shape, dtype=like.dtype, device=like.device)

    @staticmethod
    def empty(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        return torch.empty(shape, dtype=like.dtype, device=like.device)

    @staticmethod
    def arange(n: int, like: torch.Tensor) -> torch.Tensor:
        return torch.arange(n, device=like.device)


Ops = type[NumpyOps] | type[TorchOps]


class _Linear:
    """An nn.Linear's weight, bias and gradients (views of the same memory)."""

    def __init__(self, m: nn.Linear, xp: Ops) -> None:
        self.xp = xp
        self.w, self.b = xp.view(m.weight), xp.view(m.bias)
        self.gw, self.gb = xp.view(m.weight.grad), xp.view(m.bias.grad)

    def __call__(self, x):
        z = self.xp.mm(x, self.w.T)
        z += self.b
        return z

    def backward(self, grad_out, x, input_grad: bool = True):
        """Write the weight and bias gradients; return the gradient with respect to ``x`` (None
        without ``input_grad``: where ``x`` is data)."""
        self.xp.mm(grad_out.T, x, out=self.gw)
        self.xp.sum_into(grad_out, 0, out=self.gb)
        return self.xp.mm(grad_out, self.w) if input_grad else None


class _MLP:
    """The actor body (Linear + SiLU pairs of an nn.Sequential)."""

    def __init__(self, body: nn.Sequential, xp: Ops) -> None:
        self.xp = xp
        self.layers = [_Linear(m, xp) for m in body if isinstance(m, nn.Linear)]

    def forward(self, x, cache: list | None):
        h = x
        for layer in self.layers:
            z = layer(h)
            h_out, s = self.xp.swish(z)
            if cache is not None:
                cache.append((h, z, s))
            h = h_out
        return h

    def backward(self, grad_h, cache: list) -> None:
        for i in reversed(range(len(self.layers))):
            h_in, z, s = cache[i]
            grad_h = self.layers[i].backward(self.xp.swish_grad(grad_h, z, s), h_in, input_grad=i > 0)


class _Twin:
    """TwinQ's stacked layers: weights ``[2, out, in]``, biases ``[2, 1, out]``."""

    def __init__(self, twin: TwinQ, xp: Ops) -> None:
        self.xp = xp
        self.layers = [(xp.view(w), xp.view(b), xp.view(w.grad) if w.grad is not None else None,
                        xp.view(b.grad) if b.grad is not None else None) for w, b in zip(twin.weights, twin.biases)]

    def forward(self, u, cache: list | None):
        """``u`` [B, in] → [2, B, out]."""
        xp = self.xp
        h = u  # [B, in] for the first layer, then [2, B, hidden]
        last = len(self.layers) - 1
        for i, (w, b, _, _) in enumerate(self.layers):
            z = xp.twin_first(u, w, b) if i == 0 else xp.twin_linear(h, w, b)
            h_out, s = xp.swish(z) if i < last else (z, None)
            if cache is not None:
                cache.append((h, z, s))
            h = h_out
        return h

    def backward(self, grad_q, cache: list, weights: bool):
        """Backpropagate ``grad_q`` [2, B, out]; write the weight gradients if ``weights`` (and
        return None: the input is data), else return the gradient with respect to the input
        (summed over both towers)."""
        xp = self.xp
        grad_z = grad_q
        for i in reversed(range(len(self.layers))):
            w, _, gw, gb = self.layers[i]
            h_in = cache[i][0]
            if weights:
                xp.twin_weight_grad(grad_z, h_in, gw)
                xp.sum_into(grad_z, 1, out=gb, keepdims=True)
                if i == 0:
                    return None
            grad_h = xp.twin_input_grad(grad_z, w)
            if i:
                _, z, s = cache[i - 1]
                grad_z = xp.swish_grad(grad_h, z, s)
        return grad_h.sum(0)


def _log_softmax(xp: Ops, x):
    shifted = x - xp.max1(x)
    return shifted - xp.log(xp.sum(xp.exp(shifted), 1, keepdims=True))


def _log_squash(xp: Ops, u):
    # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|
    return 2.0 * (_LOG_2 - u - xp.softplus(-2.0 * u))


class SACGradients:
    """``SAC._autograd_gradients`` by hand, for its MLP actor and twin critics."""

    def __init__(self, actor: SquashedActor, critic: TwinQ, target: TwinQ, log_alpha: nn.Parameter,
                 target_entropy: torch.Tensor, gammas: torch.Tensor, branches: list[int],
                 xp: Ops | None = None) -> None:
        self.device = log_alpha.device
        if xp is None:
            # numpy where torch's dispatch costs more than the arithmetic; wider networks train
            # faster in torch on every core (palaestra/run.py gives it the threads)
            widths = [m.out_features for m in actor.body if isinstance(m, nn.Linear)]
            narrow = max(widths, default=0) < WIDE_NETWORK_UNITS
            xp = NumpyOps if self.device.type == "cpu" and narrow else TorchOps
        self.xp = xp
        norm = actor.normalizer
        self.norm = (xp.view(norm.mean), xp.view(norm.var)) if norm is not None else None
        self.body = _MLP(actor.body, xp)
        self.gaussian = _Linear(actor.gaussian, xp) if actor.gaussian is not None else None
        self.logits = _Linear(actor.logits, xp) if actor.logits is not None else None
        self.c = actor.continuous_size
        self.critic = _Twin(critic, xp)
        self.target = _Twin(target, xp)
        self.log_alpha, self.grad_log_alpha = xp.view(log_alpha), xp.view(log_alpha.grad)
        self.target_entropy = xp.view(target_entropy)
        self.gammas = xp.view(gammas)
        self.branches = branches
        self.offsets = [sum(branches[:i]) for i in range(len(branches))]

    def _encode(self, obs):
        if self.norm is None:
            return obs
        mean, var = self.norm
        return self.xp.clip((obs - mean) / (var + 1e-8) ** 0.5, -CLIP, CLIP)

    def compute(self, batch: SACBatch) -> dict[str, Any]:
        """Write d(loss)/d(parameter) into every ``.grad``; return the loss statistics."""
        with torch.no_grad():
            t = batch if self.xp is NumpyOps else batch.to_torch(self.device)
            x, x_next = self._encode(t.obs), self._encode(t.next_obs)
            if self.gaussian is not None:
                return self._continuous(t, x, x_next)
            return self._discrete(t, x, x_next)

    def _alpha_grad(self, entropy_error) -> None:
        # alpha loss = -mean(log_alpha * error); sums times 1/n throughout (ndarray.mean costs
        # several microseconds of Python per call)
        self.grad_log_alpha[:] = self.xp.sum(entropy_error, 0) * (-1.0 / (entropy_error.shape[0] * entropy_error.shape[1]))

    def _continuous(self, t: Any, x: Any, x_next: Any) -> dict[str, Any]:
        xp = self.xp
        B, c = x.shape[0], self.c
        alpha = xp.exp(self.log_alpha)
        head = self.gaussian
        # -- the actor at s (kept for its backward pass) and at s' (for the target only)
        cache: list = []
        h = self.body.forward(x, cache)
        out = head(h)
        mean, raw_log_std = out[:, :c], out[:, c:]
        log_std = xp.clip(raw_log_std, LOG_STD_MIN, LOG_STD_MAX)
        std = xp.exp(log_std)
        eps = t.noise[:B]
        u = mean + std * eps
        a_pi = xp.tanh(u)
        # log pi(a) = sum[-eps^2/2 - log std - log sqrt(2 pi)] - sum log(1 - tanh(u)^2)
        logp_pi = xp.sum(-0.5 * eps * eps - log_std - _log_squash(xp, u), 1) - c * _HALF_LOG_2PI

        out_next = head(self.body.forward(x_next, None))
        log_std_next = xp.clip(out_next[:, c:], LOG_STD_MIN, LOG_STD_MAX)
        eps_next = t.noise[B:]
        u_next = out_next[:, :c] + xp.exp(log_std_next) * eps_next
        logp_next = xp.sum(-0.5 * eps_next * eps_next - log_std_next - _log_squash(xp, u_next), 1) - c * _HALF_LOG_2PI

        # -- soft target and the critics' loss: 0.5 mean (q_t - y)^2 per tower
        q_next = xp.min0(self.target.forward(xp.cat([x_next, xp.tanh(u_next)], 1), None))
        y = t.rewards + self.gammas * t.not_done * (q_next - alpha * logp_next[:, None])
        critic_cache: list = []
        q = self.critic.forward(xp.cat([x, t.continuous], 1), critic_cache)  # [2, B, K]
        K = q.shape[2]
        error = q - y
        self.critic.backward(error * (1.0 / (B * K)), critic_cache, weights=True)

        # -- the actor's loss: mean(alpha log pi - mean_k min_t Q_t(s, a_pi)), critics constant
        pi_cache: list = []
        q_pi = self.critic.forward(xp.cat([x, a_pi], 1), pi_cache)
        lower = (q_pi[1] < q_pi[0])[None]  # where tower 1 is the min (ties: tower 0, as min())
        picks = xp.as_float(xp.cat([~lower, lower], 0))
        grad_a = self.critic.backward(picks * (-1.0 / (B * K)), pi_cache, weights=False)[:, -c:]
        grad_logp = alpha / B  # [1] broadcast
        grad_u = grad_a * (1.0 - a_pi * a_pi) + grad_logp * 2.0 * a_pi  # d log pi / du = 2 tanh(u)
        in_range = (raw_log_std >= LOG_STD_MIN) & (raw_log_std <= LOG_STD_MAX)
        grad_log_std = (grad_u * std * eps - grad_logp) * in_range
        self.body.backward(head.backward(xp.cat([grad_u, grad_log_std], 1), h), cache)

        self._alpha_grad((logp_pi + self.target_entropy[0])[:, None])
        q_min_pi = xp.sum(xp.min0(q_pi), 1) * (1.0 / K)
        return self._stats(error, xp.sum(alpha[0] * logp_pi - q_min_pi, 0) * (1.0 / B), q)

    def _discrete(self, t: Any, x: Any, x_next: Any) -> dict[str, Any]:
        xp = self.xp
        B, n = x.shape[0], len(self.branches)
        alpha = xp.exp(self.log_alpha)
        A = sum(self.branches)
        head = self.logits
        cache: list = []
        h = self.body.forward(x, cache)
        logits = xp.where(t.allowed, head(h), MASKED_LOGIT)
        logits_next = xp.where(t.next_allowed, head(self.body.forward(x_next, None)), MASKED_LOGIT)
        critic_cache: list = []
        q_all = self.critic.forward(x, critic_cache)  # [2, B, K * A]
        K = q_all.shape[2] // A
        q_all4 = q_all.reshape(2, B, K, A)
        q_next = xp.min0(self.target.forward(x_next, None).reshape(2, B, K, A))  # [B, K, A]
        q_min = xp.sum(xp.min0(q_all4), 1) * (1.0 / K)  # [B, A]: the actor's (constant) view of the critics
        v_next = xp.zeros(t.rewards.shape, x)
        q_taken = xp.zeros((2, B, K), x)
        grad_logits = xp.empty(logits.shape, x)
        entropy_error = xp.empty((B, n), x)
        policy_loss = 0.0
        rows = xp.arange(B, x)
        taken_index = []
        for br, (start, size) in enumerate(zip(self.offsets, self.branches)):
            cols = slice(start, start + size)
            logp = _log_softmax(xp, logits[:, cols])
            p = xp.exp(logp)
            logp_next = _log_softmax(xp, logits_next[:, cols])
            v_next += xp.sum(xp.exp(logp_next)[:, None, :] * (q_next[..., cols] - alpha[br] * logp_next[:, None, :]), -1)
            index = t.discrete[:, br] + start
            taken_index.append(index)
            q_taken += xp.swap01(q_all4[:, rows, :, index])  # the indexing puts B first
            # policy loss of the branch: mean_b sum_a p (alpha log p - Q); d/dlogits = p (g - E_p[g])
            g = alpha[br] * logp - q_min[:, cols]
            expected = xp.sum(p * g, 1, keepdims=True)
            policy_loss = policy_loss + xp.sum(expected, 0)[0] * (1.0 / B)
            grad_logits[:, cols] = p * (g - expected) * (1.0 / (n * B))
            entropy_error[:, br] = xp.sum(p * logp, 1) + self.target_entropy[br]
        y = t.rewards + self.gammas * t.not_done * (v_next / n)
        q = q_taken / n
        error = q - y  # [2, B, K]
        # each branch's taken column receives the mean's share (branches' columns are disjoint)
        grad_q_all = xp.zeros(q_all4.shape, x)
        share = xp.swap01(error * (1.0 / (n * B * K)))  # [B, 2, K], as the indexing
        for index in taken_index:
            grad_q_all[:, rows, :, index] = share
        self.critic.backward(grad_q_all.reshape(2, B, K * A), critic_cache, weights=True)
        grad_logits[~t.allowed] = 0.0
        self.body.backward(head.backward(grad_logits, h), cache)
        self._alpha_grad(entropy_error)
        return self._stats(error, policy_loss / n, q)

    def _stats(self, error, policy_loss, q) -> dict[str, Any]:
        xp = self.xp
        squared = xp.sum(xp.sum(error * error, 2), 1) * (0.5 / (error.shape[1] * error.shape[2]))
        return {"Losses/Q1 Loss": squared[0], "Losses/Q2 Loss": squared[1], "Losses/Policy Loss": policy_loss,
                "q_estimate": xp.sum(xp.min0(q), 0) * (1.0 / q.shape[1])}
