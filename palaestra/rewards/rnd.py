"""The ``rnd`` reward signal: Random Network Distillation (Burda et al. 2018), as later ML-Agents
releases added it.

A fixed, randomly initialized network maps each observation to ``encoding_size`` features; a
second network of the same shape learns to predict them. The reward is the prediction's squared
error summed over features, times ``strength``: large on observations seen rarely, shrinking as
they become familiar. A transition is paid for the observation it reaches (Burda et al.; ML-Agents
read the observation it starts from), so the step into a new state is the one rewarded. Both networks (three swish layers of ``encoding_size``) read the
observations through their own running normalizer, updated on the training batches. Episodes'
ends are not terminal for it.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from palaestra.envs.base import BehaviorSpec
from palaestra.networks.accelerator import on_cpu, sequential_layers
from palaestra.networks.encoders import VectorEncoder
from palaestra.networks.normalizer import Normalizer
from palaestra.networks.numpy_layers import normalize
from palaestra.networks.policy import mlp
from palaestra.networks.optim import FlatStateAdam
from palaestra.rewards.learned import ModelSignal, vector_array, vector_input
from palaestra.rewards.numpy_losses import rnd_gradients
from palaestra.settings import RNDSettings

LAYERS = 3


class RNDModel(nn.Module):
    def __init__(self, spec: BehaviorSpec, encoding_size: int) -> None:
        super().__init__()
        size = VectorEncoder(spec.observation_shapes).size
        self.normalizer = Normalizer(size)
        self.target = mlp(size, encoding_size, LAYERS).requires_grad_(False)
        self.predictor = mlp(size, encoding_size, LAYERS)

    def error(self, obs: torch.Tensor) -> torch.Tensor:
        """The predictor's squared error per row, summed over features."""
        x = self.normalizer(obs)
        return (self.predictor(x) - self.target(x)).pow(2).sum(1)


class RNDSignal(ModelSignal):
    name = "rnd"
    stat_name = "RND"

    def __init__(self, settings: RNDSettings, spec: BehaviorSpec, device: torch.device) -> None:
        self.strength, self.gamma = settings.strength, settings.gamma
        self.device = device
        self.model = RNDModel(spec, settings.encoding_size).to(device)
        self.optimizer = FlatStateAdam(self.model.predictor, settings.learning_rate)
        # on the CPU the update runs in numpy (rewards/numpy_losses.py, the same loss)
        self.accelerated = on_cpu(self.model)
        if self.accelerated:
            self.layers = sequential_layers(self.model.predictor), sequential_layers(self.model.target)

    def batch_rewards(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        # the observation reached: a transition into a novel state pays
        error = self.model.error(vector_input(batch, "next_obs", self.device))
        return (error.cpu().numpy() * self.strength).astype(np.float32)

    def update(self, batch: Mapping[str, np.ndarray]) -> dict[str, float]:
        if self.accelerated:
            reached = vector_array(batch, "next_obs")
            normalizer = self.model.normalizer
            normalizer.update(reached)
            loss = rnd_gradients(*self.layers, normalize(reached, normalizer.mean.numpy(), normalizer.var.numpy()))
            self.optimizer.step_with_gradients()
            return {"Losses/RND Loss": loss}
        reached = vector_input(batch, "next_obs", self.device)  # the observations its reward reads
        self.model.normalizer.update(reached.cpu().numpy())
        loss = self.model.error(reached).mean()
        self.optimizer.step(loss)
        return {"Losses/RND Loss": float(loss.detach())}
