"""The ``rnd`` reward signal: Random Network Distillation (Burda et al. 2018), as later ML-Agents
releases added it.

A fixed, randomly initialized network maps each observation to ``encoding_size`` features; a
second network of the same shape learns to predict them. The reward is the prediction's squared
error summed over features, times ``strength``: large on observations seen rarely, shrinking as
they become familiar. A transition is paid for the observation it reaches (Burda et al.; ML-Agents
read the observation it starts from), so the step into a new state is the one rewarded. Both networks (three swish layers of ``encoding_size``) read the
vector observations through their own running normalizer, updated on the training batches.
Image observations go through image encoders of the trainer's ``vis_encode_type`` with
``encoding_size`` features (networks/visual.py), one set for each network (the target's
random and fixed, the predictor's learned), read after the normalized vectors. Episodes' ends
are not terminal for it.

Over vector observations on the CPU an update is computed in numpy (rewards/numpy_losses.py);
with images or on a GPU, by autograd.
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
from palaestra.networks.visual import image_features
from palaestra.rewards.base import SignalContext
from palaestra.rewards.learned import ModelSignal, image_tensors, vector_array, vector_input
from palaestra.rewards.numpy_losses import rnd_error, rnd_gradients
from palaestra.settings import RNDSettings

LAYERS = 3


class RNDModel(nn.Module):
    def __init__(self, spec: BehaviorSpec, encoding_size: int, vis_encode_type: str = "simple") -> None:
        super().__init__()
        size = VectorEncoder(spec.observation_shapes).size
        self.normalizer = Normalizer(size)
        # each network's own image encoders (None without images: no weights)
        shapes = spec.observation_shapes
        self.target_images = image_features(shapes, vis_encode_type, encoding_size, towers=1)
        self.predictor_images = image_features(shapes, vis_encode_type, encoding_size, towers=1)
        inputs = size + (self.target_images.size if self.target_images is not None else 0)
        self.target = mlp(inputs, encoding_size, LAYERS).requires_grad_(False)
        self.predictor = mlp(inputs, encoding_size, LAYERS)
        if self.target_images is not None:
            self.target_images.requires_grad_(False)

    def error(self, obs: torch.Tensor, images: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """The predictor's squared error per row, summed over features; ``obs``: the vector
        observations, ``images``: the image observations by index (where there are)."""
        x = self.normalizer(obs)
        if self.target_images is None:
            return (self.predictor(x) - self.target(x)).pow(2).sum(1)
        predicted = self.predictor(self.predictor_images(x, images))
        return (predicted - self.target(self.target_images(x, images))).pow(2).sum(1)

    def learned(self) -> nn.Module:
        """What the predictor learns: its layers and, with images, its image encoders."""
        if self.predictor_images is None:
            return self.predictor
        return nn.ModuleList([self.predictor_images, self.predictor])


class RNDSignal(ModelSignal):
    name = "rnd"
    stat_name = "RND"
    # the predictor's error against a random target is novelty from the first step
    pays_before_update = True

    def __init__(self, settings: RNDSettings, spec: BehaviorSpec, device: torch.device,
                 context: SignalContext = SignalContext()) -> None:
        model = RNDModel(spec, settings.encoding_size, context.vis_encode_type)
        super().__init__(settings, device, model, trained=model.learned())
        # over vectors on the CPU the update runs in numpy (rewards/numpy_losses.py, the same loss)
        self.trains_in_numpy = self.model.target_images is None and on_cpu(self.model)
        if self.trains_in_numpy:
            self.bind_numpy()

    NUMPY_VIEWS = ("layers",)

    def bind_numpy(self) -> None:
        self.layers = sequential_layers(self.model.predictor), sequential_layers(self.model.target)

    def _images(self, batch: Mapping[str, np.ndarray], prefix: str) -> dict[int, torch.Tensor] | None:
        images = self.model.target_images
        return None if images is None else image_tensors(batch, prefix, images.image_indices, self.device)

    def batch_rewards(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        # the observation reached: a transition into a novel state pays
        if self.trains_in_numpy:  # the same forward pass in numpy (rewards/numpy_losses.py)
            error = rnd_error(*self.layers, self._normalized(vector_array(batch, "next_obs")))
        else:
            error = self.model.error(vector_input(batch, "next_obs", self.device),
                                     self._images(batch, "next_obs")).cpu().numpy()
        return (error * self.strength).astype(np.float32)

    def _normalized(self, reached: np.ndarray) -> np.ndarray:
        """Observations through the model's normalizer, in numpy (its statistics as they are now)."""
        normalizer = self.model.normalizer
        return normalize(reached, normalizer.mean.numpy(), normalizer.var.numpy())

    def update(self, batch: Mapping[str, np.ndarray]) -> dict[str, float]:
        if self.trains_in_numpy:
            reached = vector_array(batch, "next_obs")
            self.model.normalizer.update(reached)
            loss = rnd_gradients(*self.layers, self._normalized(reached))
            self.optimizer.step_with_gradients()
            return {"Losses/RND Loss": loss}
        reached = vector_input(batch, "next_obs", self.device)  # the observations its reward reads
        if reached.shape[1]:  # (images only: no vectors to normalize)
            self.model.normalizer.update(reached.cpu().numpy())
        loss = self.model.error(reached, self._images(batch, "next_obs")).mean()
        self.optimizer.step(loss)
        return {"Losses/RND Loss": float(loss.detach())}
