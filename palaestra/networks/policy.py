"""The actor-critic network used by PPO: separate actor and critic MLPs (swish activations) over
the concatenated (networks/encoders.py), optionally normalized vector observations, followed by
the actor's and the critic's own encodings of image observations where there are any
(networks/visual.py); with ``use_recurrent``, an LSTM per network after its layers or before
them (networks/recurrent.py); a Gaussian head with a learned,
state-independent log standard deviation for continuous actions, a masked categorical head per
discrete branch, and one value head per reward signal.

The actor and critic MLPs have the same shape, so they are stored stacked (``TwinMLP``: one
``[2, out, in]`` weight per layer) and evaluated with one batched matrix product per layer."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from palaestra.envs.base import BehaviorSpec
from palaestra.networks.constants import ACTIVATIONS, DEFAULT_ACTIVATION
from palaestra.networks.distributions import ActionDistribution
from palaestra.networks.encoders import VectorEncoder
from palaestra.networks.normalizer import Normalizer
from palaestra.networks.recurrent import TwinLSTM, stored_memory_size
from palaestra.networks.visual import image_features

# the hidden layers' activations by their settings name (networks/constants.py's ACTIVATIONS)
HIDDEN_ACTIVATIONS = {"swish": nn.functional.silu, "tanh": torch.tanh, "relu": torch.relu}


class TwinMLP(nn.Module):
    """Two MLPs of one shape, stored stacked: ``forward(x)`` → ``[2, B, out]``. PPO's actor and
    critic towers (index 0: actor features, 1: critic features); SAC's twin Q networks, which
    end in a linear layer of ``outputs``. With ``detached`` the weights act as constants (SAC's
    actor loss must not train the critics)."""

    def __init__(self, inputs: int, hidden: int, layers: int, activation: str = DEFAULT_ACTIVATION,
                 outputs: int | None = None) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r}: one of {', '.join(ACTIVATIONS)}")
        self.activations = [activation] * layers + ([""] if outputs is not None else [])
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        size = inputs
        for kind in self.activations:
            out = hidden if kind else outputs
            w = torch.empty(2, out, size)
            for tower in range(2):
                nn.init.orthogonal_(w[tower], gain=math.sqrt(2) if kind else 1.0)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(2, 1, out)))
            size = out
        self.hidden = hidden

    def one(self, tower: int, x: torch.Tensor) -> torch.Tensor:
        """One tower alone on ``[B, inputs]`` → ``[B, out]`` (PPO's actor for acting and an
        exported model, its critic for the value estimates)."""
        h = x
        for w, b, kind in zip(self.weights, self.biases, self.activations):
            h = torch.addmm(b[tower], h, w[tower].t())
            if kind:
                h = HIDDEN_ACTIVATIONS[kind](h)
        return h

    def forward(self, x: torch.Tensor, detached: bool = False) -> torch.Tensor:
        h = x.unsqueeze(0).expand(2, *x.shape) if x.dim() == 2 else x
        for w, b, kind in zip(self.weights, self.biases, self.activations):
            if detached:
                w, b = w.detach(), b.detach()
            h = torch.baddbmm(b, h, w.transpose(1, 2))
            if kind:
                h = HIDDEN_ACTIVATIONS[kind](h)
        return h


VALUE_HEAD_GAIN = 0.01


def mlp(inputs: int, hidden: int, layers: int) -> nn.Sequential:
    """``layers`` linear layers of ``hidden`` units, each followed by swish."""
    parts: list[nn.Module] = []
    for i in range(layers):
        linear = nn.Linear(inputs if i == 0 else hidden, hidden)
        nn.init.orthogonal_(linear.weight, gain=math.sqrt(2))
        nn.init.zeros_(linear.bias)
        parts += [linear, nn.SiLU()]
    return nn.Sequential(*parts)


def head(inputs: int, outputs: int, gain: float) -> nn.Linear:
    linear = nn.Linear(inputs, outputs)
    nn.init.orthogonal_(linear.weight, gain=gain)
    nn.init.zeros_(linear.bias)
    return linear


@dataclass
class PolicyOutput:
    continuous: torch.Tensor | None  # raw (unclipped) continuous actions
    discrete: torch.Tensor | None
    log_prob: torch.Tensor
    entropy: torch.Tensor
    values: torch.Tensor | None  # [n, signals]; None from acting, which needs none
    memory: torch.Tensor | None = None  # recurrent policies: the agents' memory after acting


class ActorCritic(nn.Module):
    def __init__(self, spec: BehaviorSpec, hidden_units: int, num_layers: int, normalize: bool,
                 num_value_heads: int, activation: str = DEFAULT_ACTIVATION, vis_encode_type: str = "simple",
                 memory_size: int | None = None, lstm_first: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = VectorEncoder(spec.observation_shapes)  # no parameters: not a submodule
        self.obs_size = self.encoder.size
        self.normalizer = Normalizer(self.obs_size) if normalize and self.obs_size else None
        # image observations: the actor's and the critic's own encoders (None without images)
        self.images = image_features(spec.observation_shapes, vis_encode_type, hidden_units, towers=2)
        features = self.obs_size + (self.images.size if self.images is not None else 0)
        # use_recurrent: an LSTM per tower (networks/recurrent.py; None without memory), after the
        # tower's layers (ML-Agents) or, with ``lstm_first``, before them (sb3-contrib's RecurrentPPO)
        self.lstm_first = bool(memory_size) and lstm_first
        self.towers = TwinMLP(memory_size // 2 if self.lstm_first else features, hidden_units, num_layers, activation)
        self.lstm = TwinLSTM(features if self.lstm_first else hidden_units, memory_size) if memory_size else None
        self.memory_size = stored_memory_size(memory_size) if memory_size else 0  # per agent, stored
        heads_in = self.lstm.units if self.lstm is not None and not self.lstm_first else hidden_units
        action = spec.action_spec
        self.branches = action.discrete_branches
        self.mu = head(heads_in, action.continuous_size, 0.01) if action.is_continuous else None
        self.log_std = nn.Parameter(torch.zeros(action.continuous_size)) if action.is_continuous else None
        self.logits = head(heads_in, sum(self.branches), 0.01) if action.is_discrete else None
        # Small initial value weights: the first estimates are ~0 instead of random values as large
        # as a sparse task's rewards (±0.2 with gain 1), which standardized advantages turn into a
        # strong early preference. Basic at 30k steps, seeds 0-15: 12/16 solved with gain 1, 16/16
        # with 0.01 (docs/benchmarks.md).
        self.values = head(heads_in, num_value_heads, VALUE_HEAD_GAIN)

    def vector_features(self, observations: list[torch.Tensor]) -> torch.Tensor:
        """The vector observations side by side, normalized where the settings ask, ``[B, size]``."""
        x = self.encoder(observations)
        return self.normalizer(x) if self.normalizer is not None else x

    def encode(self, observations: list[torch.Tensor]) -> torch.Tensor:
        """The towers' input: ``[B, features]`` shared by actor and critic, or with images
        ``[2, B, features]``, each tower's own encoding."""
        x = self.vector_features(observations)
        return x if self.images is None else self.images(x, observations)

    def hidden(self, observations: list[torch.Tensor], memory: torch.Tensor | None = None,
               sequence_length: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The actor's and the critic's features for the heads, ``[2, B, units]``, and (recurrent)
        the memory after each sequence; the LSTM after the towers' layers, or before them with
        ``lstm_first``. A recurrent policy reads the B rows as B / sequence_length
        sequences, each from its row of ``memory`` (zeros when None: new episodes)."""
        x = self.encode(observations)
        if self.lstm is None:
            return self.towers(x), None
        if self.lstm_first:
            h = x if x.dim() == 3 else x.unsqueeze(0).expand(2, *x.shape)  # each tower's LSTM reads x
        else:
            h = self.towers(x)
        rows = h.shape[1]
        sequences = rows // sequence_length
        if memory is None:
            memory = h.new_zeros(sequences, self.memory_size)
        out, memory = self.lstm(h.reshape(2, sequences, sequence_length, h.shape[-1]), memory)
        out = out.reshape(2, rows, out.shape[-1])
        return (self.towers(out) if self.lstm_first else out), memory

    def distribution(self, h: torch.Tensor, allowed: torch.Tensor | None) -> ActionDistribution:
        """The action distribution given actor features ``h``."""
        mean = self.mu(h) if self.mu is not None else None
        log_std = self.log_std.expand_as(mean) if self.log_std is not None else None
        logits = self.logits(h) if self.logits is not None else None
        return ActionDistribution.build(mean, log_std, logits, self.branches, allowed)

    def value(self, observations: list[torch.Tensor], memory: torch.Tensor | None = None) -> torch.Tensor:
        if self.lstm is None:  # the critic's layers alone
            return self.values(self.one_tower(1, observations))
        return self.values(self.hidden(observations, memory)[0][1])

    def one_tower(self, tower: int, observations: list[torch.Tensor]) -> torch.Tensor:
        """A feed-forward network's features for one tower's heads alone, ``[B, units]`` (0: the
        actor's, 1: the critic's): half the arithmetic of :meth:`hidden`."""
        x = self.vector_features(observations)
        if self.images is not None:
            x = self.images.one_tower(tower, x, observations)
        return self.towers.one(tower, x)

    def export_heads(self, observations: list[torch.Tensor], memory: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """For ONNX export: (sampled continuous, deterministic continuous, both clipped to [-1, 1] as
        the environment got them in training, unmasked logits, the actor's memory after this
        step). ``memory``: the actor's memory (recurrent only). Only the actor's layers run: the
        critic's would double an exported model's work in Unity."""
        new_memory = None
        if self.lstm is None:
            h = self.one_tower(0, observations)
        else:
            x = self.vector_features(observations)
            if self.images is not None:
                x = self.images.one_tower(0, x, observations)  # the actor's image encoders alone
            if self.lstm_first:
                out, new_memory = self.lstm.actor(x.unsqueeze(1), memory)
                h = self.towers.one(0, out[:, 0])
            else:
                out, new_memory = self.lstm.actor(self.towers.one(0, x).unsqueeze(1), memory)
                h = out[:, 0]
        sample = mean = logits = None
        if self.mu is not None:  # clipped to [-1, 1], as the collector sends them in training
            raw = self.mu(h)
            mean = raw.clamp(-1.0, 1.0)
            sample = (raw + torch.randn_like(raw) * torch.exp(self.log_std)).clamp(-1.0, 1.0)
        if self.logits is not None:
            logits = self.logits(h)
        return sample, mean, logits, new_memory

    def imitation_outputs(self, observations: list[torch.Tensor], allowed: torch.Tensor | None,
                          sequence_length: int = 1) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """For behavioral cloning: a sampled continuous action (reparameterized, so its error
        trains the mean and the log-std) and each discrete branch's log-probabilities. A recurrent
        policy reads the rows as sequences of ``sequence_length`` from the start of an episode
        (zero memory)."""
        dist = self.distribution(self.hidden(observations, None, sequence_length)[0][0], allowed)
        continuous = None if dist.mean is None else dist.mean + torch.randn_like(dist.mean) * dist.log_std.exp()
        return continuous, [torch.log_softmax(logits, -1) for logits in dist.branch_logits]

    def act(self, observations: list[torch.Tensor], allowed: torch.Tensor | None,
            deterministic: bool = False, memory: torch.Tensor | None = None) -> PolicyOutput:
        if self.lstm is None:  # the actor's layers alone: acting needs no value estimates
            h = self.one_tower(0, observations)
        else:  # both towers' LSTMs: the critic's memory is kept with the rows too (its training sequences start from it)
            both, memory = self.hidden(observations, memory)
            h = both[0]
        dist = self.distribution(h, allowed)
        cont, disc = dist.deterministic() if deterministic else dist.sample()
        return PolicyOutput(cont, disc, dist.log_prob(cont, disc), dist.entropy(), None, memory)

    def evaluate(self, observations: list[torch.Tensor], allowed: torch.Tensor | None, cont: torch.Tensor | None,
                 disc: torch.Tensor | None, memory: torch.Tensor | None = None, sequence_length: int = 1) -> PolicyOutput:
        h, _ = self.hidden(observations, memory, sequence_length)
        dist = self.distribution(h[0], allowed)
        return PolicyOutput(cont, disc, dist.log_prob(cont, disc), dist.entropy(), self.values(h[1]))
