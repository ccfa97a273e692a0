"""The actor-critic network used by PPO: separate actor and critic MLPs (swish activations) over
the concatenated, optionally normalized vector observations; a Gaussian head with a learned,
state-independent log standard deviation for continuous actions, a masked categorical head per
discrete branch, and one value head per reward signal."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from palaestra.envs.base import BehaviorSpec
from palaestra.networks.distributions import ActionDistribution
from palaestra.networks.normalizer import Normalizer


def mlp(inputs: int, hidden: int, layers: int) -> nn.Sequential:
    modules: list[nn.Module] = []
    size = inputs
    for _ in range(layers):
        linear = nn.Linear(size, hidden)
        nn.init.orthogonal_(linear.weight, gain=math.sqrt(2))
        nn.init.zeros_(linear.bias)
        modules += [linear, nn.SiLU()]
        size = hidden
    return nn.Sequential(*modules)


def head(inputs: int, outputs: int, gain: float) -> nn.Linear:
    linear = nn.Linear(inputs, outputs)
    nn.init.orthogonal_(linear.weight, gain=gain)
    nn.init.zeros_(linear.bias)
    return linear


def vector_size(spec: BehaviorSpec) -> int:
    return int(sum(int(np.prod(shape)) for shape in spec.observation_shapes))


@dataclass
class PolicyOutput:
    continuous: torch.Tensor | None  # raw (unclipped) continuous actions
    discrete: torch.Tensor | None
    log_prob: torch.Tensor
    entropy: torch.Tensor
    values: torch.Tensor  # [n, signals]


class ActorCritic(nn.Module):
    def __init__(self, spec: BehaviorSpec, hidden_units: int, num_layers: int, normalize: bool,
                 num_value_heads: int) -> None:
        super().__init__()
        for shape in spec.observation_shapes:
            if len(shape) != 1:
                raise ValueError(
                    f"observation of shape {shape}: only vector observations are supported so far"
                )
        self.spec = spec
        self.obs_size = vector_size(spec)
        self.normalizer = Normalizer(self.obs_size) if normalize else None
        self.actor = mlp(self.obs_size, hidden_units, num_layers)
        self.critic = mlp(self.obs_size, hidden_units, num_layers)
        action = spec.action_spec
        self.branches = action.discrete_branches
        self.mu = head(hidden_units, action.continuous_size, 0.01) if action.is_continuous else None
        self.log_std = nn.Parameter(torch.zeros(action.continuous_size)) if action.is_continuous else None
        self.logits = head(hidden_units, sum(self.branches), 0.01) if action.is_discrete else None
        self.values = head(hidden_units, num_value_heads, 1.0)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.normalizer(obs) if self.normalizer is not None else obs

    def distribution(self, x: torch.Tensor, allowed: torch.Tensor | None) -> ActionDistribution:
        h = self.actor(x)
        mean = self.mu(h) if self.mu is not None else None
        log_std = self.log_std.expand_as(mean) if self.log_std is not None else None
        logits = self.logits(h) if self.logits is not None else None
        return ActionDistribution.build(mean, log_std, logits, self.branches, allowed)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.values(self.critic(self.encode(obs)))

    def act(self, obs: torch.Tensor, allowed: torch.Tensor | None, deterministic: bool = False) -> PolicyOutput:
        x = self.encode(obs)
        dist = self.distribution(x, allowed)
        cont, disc = dist.deterministic() if deterministic else dist.sample()
        return PolicyOutput(cont, disc, dist.log_prob(cont, disc), dist.entropy(), self.values(self.critic(x)))

    def evaluate(self, obs: torch.Tensor, allowed: torch.Tensor | None, cont: torch.Tensor | None,
                 disc: torch.Tensor | None) -> PolicyOutput:
        x = self.encode(obs)
        dist = self.distribution(x, allowed)
        return PolicyOutput(cont, disc, dist.log_prob(cont, disc), dist.entropy(), self.values(self.critic(x)))
