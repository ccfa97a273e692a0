"""The ``gail`` reward signal: Generative Adversarial Imitation Learning (Ho & Ermon 2016) as
ML-Agents builds it, with VAIL (Peng et al. 2018) under ``use_vail``.

- A discriminator (two swish layers of ``hidden_units``, 128 as ML-Agents' ``h_size``) scores an
  observation, with the action and whether the episode ended there under ``use_actions``: D → 1
  for the expert's, D → 0 for the policy's. Its loss is the binary cross-entropy of both,
  ``-mean(log D(expert) + log(1 - D(policy)))``, plus a gradient penalty (weight 10) on
  points between the two batches, which keeps D smooth.
- The expert batch is drawn with replacement from the demonstrations, as large as the policy's.
- The reward is ``-log(1 - D + 1e-7) x strength`` for the policy's transitions: high where they
  look like the expert's; 0 until the discriminator's first update.
- VAIL: the last layer reads a sample ``z`` of a Gaussian code (``z_size`` 128) instead of the
  hidden layer; its KL divergence to N(0, 1) is held near the target mutual information 0.5 by
  a Lagrange weight ``beta`` (starting at 0, stepped by 5e-4 x (KL - 0.5), never below 0).
  Rewards read the code's mean.

Image observations (the behavior's and the demonstrations', uint8 in both) go each through an
image encoder of the trainer's ``vis_encode_type`` with ``encoding_size`` features
(networks/visual.py), read after the other inputs (vectors, actions, done). The gradient penalty
then takes its points between the encoders' inputs, the images as floats
(:meth:`GAILSignal._gradient_penalty` says why).

Over vector observations without VAIL, on the CPU, a discriminator step is computed in numpy
(rewards/numpy_losses.py: the same loss and gradients in about a third of autograd's time); with
images, VAIL or on a GPU, by autograd.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from palaestra.demos.columns import demonstration_columns
from palaestra.envs.base import BehaviorSpec
from palaestra.networks.encoders import VectorEncoder
from palaestra.networks.policy import mlp
from palaestra.networks.visual import image_features
from palaestra.rewards.numpy_losses import discriminator_estimate, discriminator_gradients
from palaestra.rewards.learned import ModelSignal, action_array, as_floats, image_tensors, vector_array
from palaestra.settings import GAILSettings

EPSILON = 1e-7
GRADIENT_PENALTY_WEIGHT = 10.0
Z_SIZE = 128
MUTUAL_INFORMATION = 0.5  # VAIL's target KL divergence
BETA_STEP = 5e-4

# The discriminator's input: the rows of vectors (with the actions and done flag under
# use_actions) and the image observations by index (empty without images)
DiscriminatorInput = tuple[torch.Tensor, dict[int, torch.Tensor]]


class Discriminator(nn.Module):
    def __init__(self, spec: BehaviorSpec, settings: GAILSettings, vis_encode_type: str = "simple") -> None:
        super().__init__()
        self.spec, self.use_actions, self.use_vail = spec, settings.use_actions, settings.use_vail
        action = spec.action_spec
        inputs = VectorEncoder(spec.observation_shapes).size
        if settings.use_actions:  # the actions (one-hot branches) and the done flag
            inputs += action.continuous_size + sum(action.discrete_branches) + 1
        # None without images (no weights: a vector behavior's discriminator is a plain MLP)
        self.images = image_features(spec.observation_shapes, vis_encode_type, settings.encoding_size, towers=1)
        # two layers of hidden_units (128, ML-Agents' fixed h_size) whatever encoding_size, which is
        # each camera image's encoding
        units = settings.hidden_units
        self.body = mlp(inputs + (self.images.size if self.images is not None else 0), units, 2)
        last = units
        if settings.use_vail:
            self.z_mean = nn.Linear(units, Z_SIZE)
            self.z_log_sigma_sq = nn.Parameter(torch.zeros(Z_SIZE))
            last = Z_SIZE
        self.estimate = nn.Linear(last, 1)

    def input_array(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """The discriminator's input rows, float32 ``[B, inputs]``."""
        x = vector_array(batch, "obs")
        if not self.use_actions:
            return x
        done = np.asarray(batch["done"], np.float32)[:, None]
        return np.concatenate([x, action_array(self.spec.action_spec, batch), done], 1)

    def inputs(self, batch: Mapping[str, np.ndarray], device: torch.device) -> DiscriminatorInput:
        images = {} if self.images is None else image_tensors(batch, "obs", self.images.image_indices, device)
        return torch.as_tensor(self.input_array(batch), device=device), images

    def layers(self) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray]]:
        """Views of the weights as numpy arrays: the hidden layers' and the output's (no VAIL, CPU)."""
        linear = [m for m in self.body if isinstance(m, nn.Linear)]
        view = lambda m: (m.weight.detach().numpy(), m.bias.detach().numpy())  # noqa: E731
        return [view(m) for m in linear], view(self.estimate)

    def forward(self, x: torch.Tensor, images: dict[int, torch.Tensor] | None = None, sample: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(D in (0, 1) per row, the code's mean under VAIL); ``x`` and ``images``: as
        :meth:`inputs` gives them."""
        h = self.body(x if self.images is None else self.images(x, images))
        z_mean = None
        if self.use_vail:
            z_mean = self.z_mean(h)
            h = z_mean + torch.randn_like(z_mean) * torch.exp(0.5 * self.z_log_sigma_sq) if sample else z_mean
        return torch.sigmoid(self.estimate(h))[:, 0], z_mean


class GAILSignal(ModelSignal):
    name = "gail"
    stat_name = "GAIL"

    def __init__(self, settings: GAILSettings, spec: BehaviorSpec, device: torch.device,
                 vis_encode_type: str = "simple", behavior: str = "the behavior") -> None:
        # no demo_path: a policy that only acts (algorithms.without_demonstrations); never updated
        self.expert = (demonstration_columns(settings.demo_path, spec, behavior, "reward_signals.gail.demo_path")
                       if settings.demo_path else None)
        self.expert_rows = len(self.expert["continuous"]) if self.expert is not None else 0
        # what the discriminator reads of them: the observations, and the actions and done flag with use_actions
        self.expert_columns = [k for k in self.expert or () if k.startswith("obs_")] + (
            ["continuous", "discrete", "done"] if settings.use_actions else [])
        super().__init__(settings, device, Discriminator(spec, settings, vis_encode_type))
        # rewards/numpy_losses.py: a plain MLP over vectors, on the CPU
        self.trains_in_numpy = self.model.images is None and not settings.use_vail and device.type == "cpu"
        if self.trains_in_numpy:
            self.bind_numpy()
        self.beta = torch.zeros((), device=device)  # VAIL's Lagrange weight (a checkpointed tensor)
        self.rng = np.random.default_rng(int(torch.randint(2**31, ())))

    NUMPY_VIEWS = ("layers", "gradients")

    def bind_numpy(self) -> None:
        # the weights' and their gradients' numpy views, in the optimizer's (and the loss's) order
        self.layers = self.model.layers()
        self.gradients = [p.grad.numpy() for p in self.optimizer.params]

    def batch_rewards(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        if self.trains_in_numpy:  # the same forward pass in numpy (rewards/numpy_losses.py)
            d = discriminator_estimate(*self.layers, self.model.input_array(batch))
            return (-np.log(1.0 - d + EPSILON) * self.strength).astype(np.float32)
        d, _ = self.model(*self.model.inputs(batch, self.device))
        return (-torch.log(1.0 - d + EPSILON) * self.strength).cpu().numpy().astype(np.float32)

    def update(self, batch: Mapping[str, np.ndarray]) -> dict[str, float]:
        if self.expert is None:
            raise RuntimeError("GAIL was built without demonstrations (a policy that only acts): it cannot learn")
        rows = self.rng.integers(0, self.expert_rows, len(batch["continuous"]))  # with replacement
        expert_batch = {k: self.expert[k][rows] for k in self.expert_columns}
        if self.trains_in_numpy:
            return self._numpy_update(expert_batch, batch)
        expert = self.model.inputs(expert_batch, self.device)
        policy = self.model.inputs(batch, self.device)
        d_expert, z_expert = self.model(*expert, sample=True)
        d_policy, z_policy = self.model(*policy, sample=True)
        loss = -(torch.log(d_expert + EPSILON) + torch.log(1.0 - d_policy + EPSILON)).mean()
        stats = {"Losses/GAIL Loss": float(loss.detach()), "Policy/GAIL Expert Estimate": float(d_expert.detach().mean()),
                 "Policy/GAIL Policy Estimate": float(d_policy.detach().mean())}
        kl = self._kl(torch.cat([z_expert, z_policy])) if self.model.use_vail else None
        if kl is not None:
            loss = loss + self.beta * (kl - MUTUAL_INFORMATION)
        loss = loss + GRADIENT_PENALTY_WEIGHT * self._gradient_penalty(expert, policy)
        self.optimizer.step(loss)
        if kl is not None:  # dual ascent on beta, after the step that used it
            self.beta.add_(BETA_STEP * (float(kl.detach()) - MUTUAL_INFORMATION)).clamp_(min=0.0)
            stats |= {"Policy/GAIL Beta": float(self.beta), "Losses/GAIL KL": float(kl.detach())}
        return stats

    def _numpy_update(self, expert_batch: Mapping[str, np.ndarray],
                      batch: Mapping[str, np.ndarray]) -> dict[str, float]:
        expert, policy = self.model.input_array(expert_batch), self.model.input_array(batch)
        alpha = self.rng.random((len(expert), 1), dtype=np.float32)  # the penalty's points between the two
        stats = discriminator_gradients(*self.layers, expert, policy, alpha, GRADIENT_PENALTY_WEIGHT, self.gradients)
        self.optimizer.step_with_gradients()
        return stats

    def _kl(self, z_mean: torch.Tensor) -> torch.Tensor:
        """Mean KL divergence of N(z_mean, sigma^2) to N(0, 1), summed over the code."""
        log_var = self.model.z_log_sigma_sq
        return (0.5 * (z_mean.pow(2) + log_var.exp() - 1.0 - log_var).sum(1)).mean()

    def _gradient_penalty(self, expert: DiscriminatorInput, policy: DiscriminatorInput) -> torch.Tensor:
        """(|grad D| - 1)^2 at random points between expert and policy inputs.

        With images the points lie between the encoders' inputs, the images as floats in [0, 1]
        (uint8 cannot hold the points between two images), not between their encodings: the
        penalty is to keep D smooth as a function of what it observes, and at encoded points it
        would bind only the layers after the encoders, which the encoders could steepen at will
        (the encodings also move as the encoders learn). ML-Agents' later torch GAIL also
        interpolates the encoder inputs. One alpha per row, for all of its inputs: each point
        lies on the line between an expert row and a policy row. The gradient's norm is taken
        over all of them together."""
        (expert_x, expert_images), (policy_x, policy_images) = expert, policy
        alpha = torch.rand(len(expert_x), 1, device=self.device)
        between = (alpha * expert_x + (1.0 - alpha) * policy_x).requires_grad_(True)
        images = {i: torch.lerp(as_floats(policy_images[i]), as_floats(expert_images[i]), alpha[:, :, None, None])
                  .requires_grad_(True) for i in expert_images}
        d, _ = self.model(between, images, sample=True)
        gradients = torch.autograd.grad(d.sum(), [between, *images.values()], create_graph=True)
        gradient = gradients[0] if not images else torch.cat([g.flatten(1) for g in gradients], 1)
        return (gradient.norm(dim=1) - 1.0).pow(2).mean()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return super().state_dict() | {"beta": self.beta}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        self.beta.copy_(state["beta"])
