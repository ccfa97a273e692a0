"""SAC's networks: a squashed-Gaussian / categorical actor and twin Q critics.

- ``SquashedActor``: an MLP (swish) over the concatenated (networks/encoders.py), normalized
  vector observations and its encoding of image observations (networks/visual.py; in training
  a copy of the first critic's encoder, algorithms/sac.py). Continuous actions
  are ``tanh(u)``, ``u ~ N(mean(s), std(s))`` with a state-dependent log-std clamped to
  [-20, 2] (Haarnoja et al. 2018, appendix C); discrete actions are one masked categorical per
  branch. The observation normalizer lives here, so checkpoints and the ONNX model carry it.
- the twin Q networks: networks/policy.py's ``TwinMLP`` with a linear output layer (stored
  stacked, one batched product per layer). Continuous: Q(s, a) from observation and action, one
  output per reward signal. Discrete: Q(s, .) for every action of every branch, per reward signal.
  They read the actor's normalized vector features; image observations they encode with their
  own encoders (one per critic, ``critic_images`` in algorithms/sac.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from palaestra.envs.base import BehaviorSpec
from palaestra.networks.constants import LOG_STD_MAX, LOG_STD_MIN
from palaestra.networks.distributions import MASKED_LOGIT, ActionDistribution
from palaestra.networks.encoders import VectorEncoder
from palaestra.networks.normalizer import Normalizer
from palaestra.networks.policy import PolicyOutput, head, mlp
from palaestra.networks.recurrent import TwinLSTM
from palaestra.networks.visual import image_features

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class SquashedActor(nn.Module):
    def __init__(self, spec: BehaviorSpec, hidden_units: int, num_layers: int, normalize: bool,
                 vis_encode_type: str = "simple", memory_size: int | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = VectorEncoder(spec.observation_shapes)  # no parameters: not a submodule
        self.obs_size = self.encoder.size  # the critics take these vector features too (algorithms/sac.py)
        self.normalizer = Normalizer(self.obs_size) if normalize and self.obs_size else None
        self.images = image_features(spec.observation_shapes, vis_encode_type, hidden_units, towers=1)
        self.body = mlp(self.obs_size + (self.images.size if self.images is not None else 0), hidden_units, num_layers)
        # use_recurrent: the actor's LSTM after the body (networks/recurrent.py; None without memory)
        self.lstm = TwinLSTM(hidden_units, memory_size, towers=1) if memory_size else None
        self.memory_size = memory_size or 0  # per agent, kept by the collector
        heads_in = self.lstm.units if self.lstm is not None else hidden_units
        action = spec.action_spec
        self.branches = tuple(action.discrete_branches)
        self.continuous_size = action.continuous_size
        # mean and log-std of the continuous part in one head: [B, 2c]
        self.gaussian = head(heads_in, 2 * action.continuous_size, 0.01) if action.is_continuous else None
        self.logits = head(heads_in, sum(self.branches), 0.01) if action.is_discrete else None

    def vectors(self, observations: list[torch.Tensor]) -> torch.Tensor:
        """The normalized vector features, which the critics read too."""
        x = self.encoder(observations)
        return self.normalizer(x) if self.normalizer is not None else x

    def features(self, vectors: torch.Tensor, observations: list[torch.Tensor]) -> torch.Tensor:
        """The body's input: the vector features and, where there are images, their encoding."""
        return vectors if self.images is None else self.images(vectors, observations)

    def encode(self, observations: list[torch.Tensor]) -> torch.Tensor:
        return self.features(self.vectors(observations), observations)

    def hidden(self, observations: list[torch.Tensor], memory: torch.Tensor | None = None,
               sequence_length: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The heads' input for each row, and (recurrent) the memory after each sequence: a
        recurrent actor reads the B rows as B / sequence_length sequences, each from its row of
        ``memory`` (zeros when None: new episodes)."""
        h = self.body(self.encode(observations))
        if self.lstm is None:
            return h, None
        sequences = h.shape[0] // sequence_length
        if memory is None:
            memory = h.new_zeros(sequences, self.memory_size)
        out, memory = self.lstm.actor(h.reshape(sequences, sequence_length, h.shape[-1]), memory)
        return out.reshape(h.shape[0], out.shape[-1]), memory

    def gaussian_params(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.gaussian(h).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def masked_logits(self, h: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        logits = self.logits(h)
        if allowed is not None:
            logits = torch.where(allowed, logits, torch.full_like(logits, MASKED_LOGIT))
        return logits

    def act(self, observations: list[torch.Tensor], allowed: torch.Tensor | None,
            deterministic: bool = False, memory: torch.Tensor | None = None) -> PolicyOutput:
        h, memory = self.hidden(observations, memory)
        cont = disc = None
        log_prob = entropy = torch.zeros(h.shape[0], device=h.device)
        if self.gaussian is not None:
            mean, log_std = self.gaussian_params(h)
            cont, log_prob = squashed_sample(mean, log_std, torch.zeros_like(mean) if deterministic
                                             else torch.randn_like(mean))
            entropy = (0.5 + _HALF_LOG_2PI + log_std).mean(-1)  # of the Gaussian before squashing, per dimension
        if self.logits is not None:
            dist = ActionDistribution.build(None, None, self.logits(h), self.branches, allowed)
            disc = (dist.deterministic() if deterministic else dist.sample())[1]
            log_prob, entropy = log_prob + dist.log_prob(None, disc), entropy + dist.entropy()
        return PolicyOutput(cont, disc, log_prob, entropy, None, memory)

    def imitation_outputs(self, observations: list[torch.Tensor], allowed: torch.Tensor | None,
                          sequence_length: int = 1) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """For behavioral cloning: a sampled, squashed continuous action (reparameterized) and
        each discrete branch's log-probabilities. A recurrent actor reads the rows as sequences of
        ``sequence_length`` from the start of an episode (zero memory)."""
        h = self.hidden(observations, None, sequence_length)[0]
        continuous = None
        if self.gaussian is not None:
            mean, log_std = self.gaussian_params(h)
            continuous = squashed_sample(mean, log_std, torch.randn_like(mean))[0]
        branches = [] if self.logits is None else torch.split(self.masked_logits(h, allowed), self.branches, -1)
        return continuous, [torch.log_softmax(logits, -1) for logits in branches]

    def export_heads(self, observations: list[torch.Tensor], memory: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """For ONNX export: (sampled continuous, deterministic continuous, unmasked logits, the
        memory after this step: recurrent only). One row per agent: a sequence of one step, with
        no reshape by the batch's size (the model reads no shape at run time)."""
        h = self.body(self.encode(observations))
        if self.lstm is not None:
            out, memory = self.lstm.actor(h.unsqueeze(1), memory)
            h = out[:, 0]
        sample = best = logits = None
        if self.gaussian is not None:
            mean, log_std = self.gaussian_params(h)
            sample = torch.tanh(mean + torch.randn_like(mean) * torch.exp(log_std))
            best = torch.tanh(mean)
        if self.logits is not None:
            logits = self.logits(h)
        return sample, best, logits, memory


def squashed_sample(mean: torch.Tensor, log_std: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """a = tanh(mean + std * noise) and log pi(a) with the change-of-variables correction
    log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) (numerically stable form)."""
    u = mean + noise * torch.exp(log_std)
    log_prob = (-0.5 * noise.pow(2) - log_std - _HALF_LOG_2PI).sum(-1)
    log_prob = log_prob - (2.0 * (math.log(2.0) - u - nn.functional.softplus(-2.0 * u))).sum(-1)
    return torch.tanh(u), log_prob
