"""SAC's loss gradients by hand, in numpy on the CPU: the losses of ``algorithms/sac.py`` and
their gradients, written into the parameters' ``.grad`` through numpy views of the same memory.

SAC takes one gradient step per few environment steps on a small mini-batch, so a step is a
hundred or so operations on arrays of a few hundred numbers. Autograd records and replays a
graph of them, and even plain torch operations cost several microseconds each to dispatch; numpy
costs about one. Here every product is issued once, into the gradient views where possible, and
nothing is computed that the update does not use (no weight gradients for the critic pass that
only serves the actor's loss). ``tests/test_sac.py`` checks every gradient against autograd
(``SAC._autograd_gradients``, which is also what trains on other devices) on the same batch
and noise.

Notation: swish layers z = h W^T + b, h' = z sigmoid(z); the twin critics are stacked
``[2, B, ...]`` (networks/sac_networks.py: TwinQ); B rows, K reward signals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from palaestra.networks.constants import CLIP
from palaestra.networks.distributions import MASKED_LOGIT
from palaestra.networks.sac_networks import LOG_STD_MAX, LOG_STD_MIN, SquashedActor, TwinQ

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_LOG_2 = math.log(2.0)


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

    def to_torch(self, device: torch.device) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(v, device=device) for k, v in vars(self).items()}


def _view(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()  # the same memory


def _sigmoid(z: np.ndarray) -> np.ndarray:
    s = np.tanh(0.5 * z)  # sigmoid(z) = (1 + tanh(z / 2)) / 2, which cannot overflow
    s *= 0.5
    s += 0.5
    return s


def _swish_grad(grad_h: np.ndarray, z: np.ndarray, s: np.ndarray) -> np.ndarray:
    return grad_h * (s * (1.0 + z * (1.0 - s)))  # d/dz [z sigmoid(z)] = s (1 + z (1 - s))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def _log_squash(u: np.ndarray) -> np.ndarray:
    # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|
    return 2.0 * (_LOG_2 - u - np.logaddexp(0.0, -2.0 * u))


class _Linear:
    """An nn.Linear's weight, bias and gradients as numpy views."""

    def __init__(self, m: nn.Linear) -> None:
        self.w, self.b = _view(m.weight), _view(m.bias)
        self.gw, self.gb = _view(m.weight.grad), _view(m.bias.grad)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = x @ self.w.T
        z += self.b
        return z

    def backward(self, grad_out: np.ndarray, x: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Write the weight and bias gradients; return the gradient with respect to ``x`` (None
        without ``input_grad``: where ``x`` is data)."""
        np.matmul(grad_out.T, x, out=self.gw)
        np.sum(grad_out, 0, out=self.gb)
        return grad_out @ self.w if input_grad else None


class _MLP:
    """The actor body (Linear + SiLU pairs of an nn.Sequential)."""

    def __init__(self, body: nn.Sequential) -> None:
        self.layers = [_Linear(m) for m in body if isinstance(m, nn.Linear)]

    def forward(self, x: np.ndarray, cache: list | None) -> np.ndarray:
        h = x
        for layer in self.layers:
            z = layer(h)
            s = _sigmoid(z)
            if cache is not None:
                cache.append((h, z, s))
            h = z * s
        return h

    def backward(self, grad_h: np.ndarray, cache: list) -> None:
        for i in reversed(range(len(self.layers))):
            h_in, z, s = cache[i]
            grad_h = self.layers[i].backward(_swish_grad(grad_h, z, s), h_in, input_grad=i > 0)


class _Twin:
    """TwinQ's stacked layers: weights ``[2, out, in]``, biases ``[2, 1, out]``. numpy's stacked
    matmul misses BLAS's fast path for transposed operands, so each tower gets its own 2-D
    product, except in the first layer, where both read the same input: one product there."""

    def __init__(self, twin: TwinQ) -> None:
        self.layers = [(_view(w), _view(b), _view(w.grad) if w.grad is not None else None,
                        _view(b.grad) if b.grad is not None else None) for w, b in zip(twin.weights, twin.biases)]

    def forward(self, u: np.ndarray, cache: list | None) -> np.ndarray:
        B = u.shape[0]
        h: np.ndarray = u  # [B, in] for the first layer, then [2, B, hidden]
        last = len(self.layers) - 1
        for i, (w, b, _, _) in enumerate(self.layers):
            out = w.shape[1]
            if i == 0:
                z = (u @ w.reshape(2 * out, -1).T).reshape(B, 2, out).transpose(1, 0, 2) + b
            else:
                z = np.empty((2, B, out), np.float32)
                for t in (0, 1):
                    np.matmul(h[t], w[t].T, out=z[t])
                z += b
            if i < last:
                s = _sigmoid(z)
                if cache is not None:
                    cache.append((h, z, s))
                h = z * s
            else:
                if cache is not None:
                    cache.append((h, z, None))
                h = z
        return h

    def backward(self, grad_q: np.ndarray, cache: list, weights: bool) -> np.ndarray | None:
        """Backpropagate ``grad_q`` [2, B, out]; write the weight gradients if ``weights`` (and
        return None: the input is data), else return the gradient with respect to the input
        (summed over both towers)."""
        grad_z = grad_q
        for i in reversed(range(len(self.layers))):
            w, _, gw, gb = self.layers[i]
            h_in = cache[i][0]
            if weights:
                for t in (0, 1):
                    np.matmul(grad_z[t].T, h_in if i == 0 else h_in[t], out=gw[t])
                np.sum(grad_z, 1, keepdims=True, out=gb)
                if i == 0:
                    return None
            grad_h = np.empty((2, grad_z.shape[1], w.shape[2]), np.float32)
            for t in (0, 1):
                np.matmul(grad_z[t], w[t], out=grad_h[t])
            if i:
                _, z, s = cache[i - 1]
                grad_z = _swish_grad(grad_h, z, s)
        return grad_h.sum(0)


class SACGradients:
    """The CPU fast path of ``SAC._autograd_gradients``, for its MLP actor and twin critics."""

    @staticmethod
    def supports(actor: SquashedActor) -> bool:
        return next(actor.parameters()).device.type == "cpu"

    def __init__(self, actor: SquashedActor, critic: TwinQ, target: TwinQ, log_alpha: nn.Parameter,
                 target_entropy: torch.Tensor, gammas: torch.Tensor, branches: list[int]) -> None:
        self.actor = actor
        norm = actor.normalizer
        self.norm = (_view(norm.mean), _view(norm.var)) if norm is not None else None
        self.body = _MLP(actor.body)
        self.gaussian = _Linear(actor.gaussian) if actor.gaussian is not None else None
        self.logits = _Linear(actor.logits) if actor.logits is not None else None
        self.c = actor.continuous_size
        self.critic = _Twin(critic)
        self.target = _Twin(target)
        self.log_alpha, self.grad_log_alpha = _view(log_alpha), _view(log_alpha.grad)
        self.target_entropy = target_entropy.numpy()
        self.gammas = gammas.numpy()
        self.branches = branches
        self.offsets = [sum(branches[:i]) for i in range(len(branches))]

    def _encode(self, obs: np.ndarray) -> np.ndarray:
        if self.norm is None:
            return obs
        mean, var = self.norm
        return np.clip((obs - mean) / np.sqrt(var + 1e-8), -CLIP, CLIP)

    def compute(self, t: SACBatch) -> dict[str, np.ndarray]:
        """Write d(loss)/d(parameter) into every ``.grad``; return the loss statistics."""
        x, x_next = self._encode(t.obs), self._encode(t.next_obs)
        if self.gaussian is not None:
            return self._continuous(t, x, x_next)
        return self._discrete(t, x, x_next)

    def _alpha_grad(self, entropy_error: np.ndarray) -> None:
        # alpha loss = -mean(log_alpha * error); sums times 1/n throughout: ndarray.mean costs
        # several microseconds of Python per call
        self.grad_log_alpha[:] = entropy_error.sum(0) * (-1.0 / entropy_error.size)

    def _continuous(self, t: SACBatch, x: np.ndarray, x_next: np.ndarray) -> dict[str, np.ndarray]:
        B, c = x.shape[0], self.c
        alpha = np.exp(self.log_alpha)
        head = self.gaussian
        # -- the actor at s (kept for its backward pass) and at s' (for the target only)
        cache: list = []
        h = self.body.forward(x, cache)
        out = head(h)
        mean, raw_log_std = out[:, :c], out[:, c:]
        log_std = np.clip(raw_log_std, LOG_STD_MIN, LOG_STD_MAX)
        std = np.exp(log_std)
        eps = t.noise[:B]
        u = mean + std * eps
        a_pi = np.tanh(u)
        # log pi(a) = sum[-eps^2/2 - log std - log sqrt(2 pi)] - sum log(1 - tanh(u)^2)
        logp_pi = (-0.5 * eps * eps - log_std - _log_squash(u)).sum(1) - c * _HALF_LOG_2PI

        out_next = head(self.body.forward(x_next, None))
        log_std_next = np.clip(out_next[:, c:], LOG_STD_MIN, LOG_STD_MAX)
        eps_next = t.noise[B:]
        u_next = out_next[:, :c] + np.exp(log_std_next) * eps_next
        logp_next = (-0.5 * eps_next * eps_next - log_std_next - _log_squash(u_next)).sum(1) - c * _HALF_LOG_2PI

        # -- soft target and the critics' loss: 0.5 mean (q_t - y)^2 per tower
        q_next = self.target.forward(np.concatenate([x_next, np.tanh(u_next)], 1), None).min(0)
        y = t.rewards + self.gammas * t.not_done * (q_next - alpha * logp_next[:, None])
        critic_cache: list = []
        q = self.critic.forward(np.concatenate([x, t.continuous], 1), critic_cache)  # [2, B, K]
        K = q.shape[2]
        error = q - y
        self.critic.backward(error * (1.0 / (B * K)), critic_cache, weights=True)

        # -- the actor's loss: mean(alpha log pi - mean_k min_t Q_t(s, a_pi)), critics constant
        pi_cache: list = []
        q_pi = self.critic.forward(np.concatenate([x, a_pi], 1), pi_cache)
        lower = (q_pi[1] < q_pi[0])[None]  # where tower 1 is the min (ties: tower 0, as min())
        picks = np.concatenate([~lower, lower]).astype(np.float32)
        grad_a = self.critic.backward(picks * (-1.0 / (B * K)), pi_cache, weights=False)[:, -c:]
        grad_logp = alpha / B  # [1] broadcast
        grad_u = grad_a * (1.0 - a_pi * a_pi) + grad_logp * 2.0 * a_pi  # d log pi / du = 2 tanh(u)
        in_range = (raw_log_std >= LOG_STD_MIN) & (raw_log_std <= LOG_STD_MAX)
        grad_log_std = (grad_u * std * eps - grad_logp) * in_range
        self.body.backward(head.backward(np.concatenate([grad_u, grad_log_std], 1), h), cache)

        self._alpha_grad((logp_pi + self.target_entropy[0])[:, None])
        q_min_pi = q_pi.min(0).sum(1) * (1.0 / K)
        return self._stats(error, (alpha[0] * logp_pi - q_min_pi).sum() * (1.0 / B), q)

    def _discrete(self, t: SACBatch, x: np.ndarray, x_next: np.ndarray) -> dict[str, np.ndarray]:
        B, n = x.shape[0], len(self.branches)
        alpha = np.exp(self.log_alpha)
        A = sum(self.branches)
        head = self.logits
        cache: list = []
        h = self.body.forward(x, cache)
        logits = np.where(t.allowed, head(h), np.float32(MASKED_LOGIT))
        logits_next = np.where(t.next_allowed, head(self.body.forward(x_next, None)), np.float32(MASKED_LOGIT))
        critic_cache: list = []
        q_all = self.critic.forward(x, critic_cache)  # [2, B, K * A]
        K = q_all.shape[2] // A
        q_all4 = q_all.reshape(2, B, K, A)
        q_next = self.target.forward(x_next, None).reshape(2, B, K, A).min(0)  # [B, K, A]
        q_min = q_all4.min(0).sum(1) * (1.0 / K)  # [B, A]: the actor's (constant) view of the critics
        v_next = np.zeros_like(t.rewards)
        q_taken = np.zeros((2, B, K), np.float32)
        grad_logits = np.empty_like(logits)
        entropy_error = np.empty((B, n), np.float32)
        policy_loss = np.float32(0.0)
        rows = np.arange(B)
        taken_index = []
        for br, (start, size) in enumerate(zip(self.offsets, self.branches)):
            cols = slice(start, start + size)
            logp = _log_softmax(logits[:, cols])
            p = np.exp(logp)
            logp_next = _log_softmax(logits_next[:, cols])
            v_next += (np.exp(logp_next)[:, None, :] * (q_next[..., cols] - alpha[br] * logp_next[:, None, :])).sum(-1)
            index = t.discrete[:, br] + start
            taken_index.append(index)
            q_taken += q_all4[:, rows, :, index].transpose(1, 0, 2)  # indexing puts B first
            # policy loss of the branch: mean_b sum_a p (alpha log p - Q); d/dlogits = p (g - E_p[g])
            g = alpha[br] * logp - q_min[:, cols]
            expected = (p * g).sum(1, keepdims=True)
            policy_loss += expected.sum() * (1.0 / B)
            grad_logits[:, cols] = p * (g - expected) * (1.0 / (n * B))
            entropy_error[:, br] = (p * logp).sum(1) + self.target_entropy[br]
        y = t.rewards + self.gammas * t.not_done * (v_next / n)
        q = q_taken / n
        error = q - y  # [2, B, K]
        # each branch's taken column receives the mean's share (branches' columns are disjoint)
        grad_q_all = np.zeros_like(q_all4)
        share = (error * (1.0 / (n * B * K))).transpose(1, 0, 2)  # [B, 2, K], as the indexing
        for index in taken_index:
            grad_q_all[:, rows, :, index] = share
        self.critic.backward(grad_q_all.reshape(2, B, K * A), critic_cache, weights=True)
        grad_logits[~t.allowed] = 0.0
        self.body.backward(head.backward(grad_logits, h), cache)
        self._alpha_grad(entropy_error)
        return self._stats(error, policy_loss / n, q)

    @staticmethod
    def _stats(error: np.ndarray, policy_loss: np.ndarray, q: np.ndarray) -> dict[str, np.ndarray]:
        squared = (error * error).sum((1, 2)) * (0.5 / (error.shape[1] * error.shape[2]))
        return {"Losses/Q1 Loss": squared[0], "Losses/Q2 Loss": squared[1], "Losses/Policy Loss": policy_loss,
                "q_estimate": q.min(0).sum(0) * (1.0 / q.shape[1])}
