"""The ``curiosity`` reward signal: the Intrinsic Curiosity Module (Pathak et al. 2017) as
ML-Agents 0.16 builds it.

- an encoder (two swish layers of ``encoding_size``) maps the observation and the next
  observation to features, the same weights for both; image observations first go each
  through an image encoder of the trainer's ``vis_encode_type`` with ``encoding_size``
  features (networks/visual.py), read after the vector observations (ML-Agents takes its
  ``simple`` encoder whatever the type: docs/imitation.md);
- the inverse model predicts the action taken from both encodings (one swish layer of 256 units):
  squared error summed over continuous actions, cross-entropy summed over discrete branches;
- the forward model predicts the next encoding from the encoding and the action (one-hot per
  branch); the intrinsic reward is its error, 0.5 x the squared distance, so transitions the
  model cannot predict yet pay more;
- loss 10 x (0.2 x forward + 0.8 x inverse), its own Adam at ``learning_rate``;
- reward ``min(strength x error, 1)``, and 0 until the model's first update (ML-Agents: an
  untrained model's errors are noise); episodes' ends are not terminal for it.

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
from palaestra.networks.policy import mlp
from palaestra.networks.visual import image_features
from palaestra.rewards.numpy_losses import curiosity_error, curiosity_gradients
from palaestra.rewards.base import SignalContext
from palaestra.rewards.learned import (ModelSignal, action_array, action_input, image_tensors, vector_array,
                                       vector_input)
from palaestra.settings import CuriositySettings

HIDDEN = 256  # the inverse and forward models' hidden layer (ML-Agents)
FORWARD_WEIGHT, INVERSE_WEIGHT, LOSS_SCALE = 0.2, 0.8, 10.0


class CuriosityModel(nn.Module):
    def __init__(self, spec: BehaviorSpec, encoding_size: int, vis_encode_type: str = "simple") -> None:
        super().__init__()
        action = spec.action_spec
        self.action = action
        # None without images (no weights: a vector behavior's model is a plain MLP)
        self.images = image_features(spec.observation_shapes, vis_encode_type, encoding_size, towers=1)
        images = self.images.size if self.images is not None else 0
        self.encoder = mlp(VectorEncoder(spec.observation_shapes).size + images, encoding_size, 2)
        action_width = action.continuous_size + sum(action.discrete_branches)
        self.inverse = nn.Sequential(nn.Linear(2 * encoding_size, HIDDEN), nn.SiLU(), nn.Linear(HIDDEN, action_width))
        self.forward_model = nn.Sequential(nn.Linear(encoding_size + action_width, HIDDEN), nn.SiLU(),
                                           nn.Linear(HIDDEN, encoding_size))

    def forward_error(self, encoded: torch.Tensor, encoded_next: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """0.5 x the squared distance between the predicted and the actual next encoding, per row."""
        return 0.5 * (self.forward_model(torch.cat([encoded, actions], 1)) - encoded_next).pow(2).sum(1)

    def inverse_loss(self, encoded: torch.Tensor, encoded_next: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Per row: the squared error of the predicted continuous actions plus the cross-entropy of
        each discrete branch's predicted action."""
        predicted = self.inverse(torch.cat([encoded, encoded_next], 1))
        c = self.action.continuous_size
        loss = (predicted[:, :c] - actions[:, :c]).pow(2).sum(1)
        start = c
        for size in self.action.discrete_branches:
            branch = slice(start, start + size)
            loss = loss - (torch.log_softmax(predicted[:, branch], 1) * actions[:, branch]).sum(1)
            start += size
        return loss


class CuriositySignal(ModelSignal):
    name = "curiosity"
    stat_name = "Curiosity"

    def __init__(self, settings: CuriositySettings, spec: BehaviorSpec, device: torch.device,
                 context: SignalContext = SignalContext()) -> None:
        # raw vectors whatever the trainer's normalize (ML-Agents' curiosity reads vector_in)
        super().__init__(settings, device, CuriosityModel(spec, settings.encoding_size, context.vis_encode_type))
        self.spec = spec
        # over vectors on the CPU the update runs in numpy (rewards/numpy_losses.py, the same loss)
        self.trains_in_numpy = self.model.images is None and on_cpu(self.model)
        if self.trains_in_numpy:
            self.bind_numpy()

    NUMPY_VIEWS = ("layers",)

    def bind_numpy(self) -> None:
        # over views of the parameters and their gradients
        self.layers = [sequential_layers(m) for m in (self.model.encoder, self.model.inverse, self.model.forward_model)]

    def _inputs(self, batch: Mapping[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(encoding, next encoding, actions); both observations go through the shared encoder in
        one pass (one matrix product per layer instead of two)."""
        both = torch.cat([vector_input(batch, "obs", self.device), vector_input(batch, "next_obs", self.device)])
        images = self.model.images
        if images is not None:  # each image's encoding after the vectors, both observations in one pass
            now, after = (image_tensors(batch, prefix, images.image_indices, self.device)
                          for prefix in ("obs", "next_obs"))
            both = images(both, {i: torch.cat([now[i], after[i]]) for i in images.image_indices})
        encoded, encoded_next = self.model.encoder(both).chunk(2)
        return encoded, encoded_next, action_input(self.spec.action_spec, batch, self.device)

    def batch_rewards(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        if self.trains_in_numpy:  # the same forward pass in numpy (rewards/numpy_losses.py)
            encoder, _, forward = self.layers
            error = curiosity_error(encoder, forward, vector_array(batch, "obs"), vector_array(batch, "next_obs"),
                                    action_array(self.spec.action_spec, batch))
        else:
            error = self.model.forward_error(*self._inputs(batch)).cpu().numpy()
        return np.minimum(error * self.strength, 1.0).astype(np.float32)

    def update(self, batch: Mapping[str, np.ndarray]) -> dict[str, float]:
        if self.trains_in_numpy:
            action = self.spec.action_spec
            forward_loss, inverse_loss = curiosity_gradients(
                *self.layers, vector_array(batch, "obs"), vector_array(batch, "next_obs"), action_array(action, batch),
                action.continuous_size, action.discrete_branches, LOSS_SCALE * FORWARD_WEIGHT,
                LOSS_SCALE * INVERSE_WEIGHT)
            self.optimizer.step_with_gradients()
            return {"Losses/Curiosity Forward Loss": forward_loss, "Losses/Curiosity Inverse Loss": inverse_loss}
        inputs = self._inputs(batch)
        forward_loss, inverse_loss = self.model.forward_error(*inputs).mean(), self.model.inverse_loss(*inputs).mean()
        self.optimizer.step(LOSS_SCALE * (FORWARD_WEIGHT * forward_loss + INVERSE_WEIGHT * inverse_loss))
        return {"Losses/Curiosity Forward Loss": float(forward_loss.detach()),
                "Losses/Curiosity Inverse Loss": float(inverse_loss.detach())}
