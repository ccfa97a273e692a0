"""Acting without torch's per-operation overhead.

Per environment step the policy runs on a small batch (a handful of agents), where torch spends
more time dispatching operations than computing. On the CPU, this mirror computes the same
forward pass with numpy over arrays that *share memory* with the torch parameters and
normalizer buffers, so it is never stale: optimizer steps, normalizer updates and checkpoint
loads all write in place. Training (backward passes over large mini-batches) stays in torch.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from palaestra.networks.numpy_acting import (
    HALF_LOG_2PI,
    NO_CONTINUOUS,
    NO_DISCRETE,
    NumpyActing,
    NumpyActorCritic,
    sample_branches,
    swish,
)
from palaestra.networks.policy import ActorCritic
from palaestra.networks.sac_networks import LOG_STD_MAX, LOG_STD_MIN, SquashedActor
from palaestra.rollout.segments import ActResult

_LOG_2 = math.log(2.0)


def _shared(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()  # a view of the same memory


def policy_arrays(policy: ActorCritic) -> dict[str, np.ndarray]:
    """The policy's float32 state (parameters, normalizer mean and variance) as named numpy
    arrays: what networks/numpy_acting.py reads and acting workers are sent. On the CPU they are
    views of the policy's own memory; on a GPU, copies."""
    return {name: t.detach().cpu().numpy() for name, t in policy.state_dict().items() if t.dtype == torch.float32}


class NumpyPolicy(NumpyActorCritic):
    """The main process's mirror of an ActorCritic on the CPU: optimizer steps, normalizer
    updates and checkpoint loads all write the memory it reads, so it is never stale."""

    @staticmethod
    def supports(policy: ActorCritic) -> bool:
        return next(policy.parameters()).device.type == "cpu"

    def __init__(self, policy: ActorCritic, rng: np.random.Generator) -> None:
        super().__init__(policy_arrays(policy), policy.branches, rng, policy.towers.activation)


class NumpySquashedActor(NumpyActing):
    """The SAC actor (networks/sac_networks.py: SquashedActor) for acting, in numpy."""

    def __init__(self, actor: SquashedActor, rng: np.random.Generator, signals: int) -> None:
        norm = actor.normalizer
        super().__init__((_shared(norm.mean), _shared(norm.var)) if norm is not None else None, rng)
        self.layers = [(_shared(m.weight).T, _shared(m.bias)) for m in actor.body if isinstance(m, torch.nn.Linear)]
        self.gaussian = (_shared(actor.gaussian.weight).T, _shared(actor.gaussian.bias)) if actor.gaussian else None
        self.logits = (_shared(actor.logits.weight).T, _shared(actor.logits.bias)) if actor.logits else None
        self.branches = list(actor.branches)
        self.c = actor.continuous_size
        self.signals = signals

    def act(self, obs: np.ndarray, allowed: np.ndarray | None, deterministic: bool = False) -> ActResult:
        h = self._encode(obs)
        for w, b in self.layers:
            h = h @ w + b
            h = swish(h)
        n = obs.shape[0]
        values = np.zeros((n, self.signals), np.float32)  # SAC's segments need no value estimates
        if self.gaussian is None:
            disc, log_prob, entropy = sample_branches(h @ self.logits[0] + self.logits[1], allowed, self.branches,
                                                      self.gumbel, deterministic)
            return ActResult(NO_CONTINUOUS[:n], disc, log_prob, entropy, values)
        out = h @ self.gaussian[0] + self.gaussian[1]
        mean = out[:, : self.c]
        log_std = np.minimum(np.maximum(out[:, self.c :], LOG_STD_MIN), LOG_STD_MAX)
        noise = np.zeros_like(mean) if deterministic else self.normal.take(mean.shape)
        u = mean + noise * np.exp(log_std)
        action = np.tanh(u)
        # log pi(a) of the squashed Gaussian (see networks/sac_networks.py: squashed_sample)
        log_det = 2.0 * (_LOG_2 - u - np.logaddexp(0.0, -2.0 * u))
        log_prob = (-0.5 * noise * noise - log_std - log_det).sum(axis=1) - HALF_LOG_2PI * self.c
        entropy = (0.5 + HALF_LOG_2PI + log_std).sum(axis=1)  # of the Gaussian before squashing
        return ActResult(action, NO_DISCRETE[:n], log_prob.astype(np.float32), entropy.astype(np.float32), values)
