"""The ``gail`` reward signal: Generative Adversarial Imitation Learning (Ho & Ermon 2016) as
ML-Agents builds it, with VAIL (Peng et al. 2018) under ``use_vail``.

- A discriminator (two swish layers of ``hidden_units``, 128 as ML-Agents' ``h_size``) scores an
  observation, with the action and whether the episode ended there under ``use_actions``: D → 1
  for the expert's, D → 0 for the policy's. Its loss is the binary cross-entropy of both,
  ``-mean(log D(expert) + log(1 - D(policy)))``, plus a gradient penalty (weight 10) on
  points between the two batches, which keeps D smooth: ``(|grad D| - 1)^2`` with ML-Agents'
  safe norm ``sqrt(sum grad^2 + 1e-7)``, each input value of a point drawn between the expert's
  and the policy's with a weight of its own. ``Losses/GAIL Loss`` is the whole loss (penalty and
  VAIL's term included), as ML-Agents 0.16 reports it; ``Policy/GAIL Grad Mag Loss`` the
  penalty's term alone (ML-Agents' later name).
- Under the trainer's ``normalize`` the vector observations are normalized first, as ML-Agents
  reads them through the policy's normalizer; here by a running normalizer of the
  discriminator's own, updated on the policy's rows it trains on (the model may train in a
  process of its own, where the policy's is not), carried in its checkpoints.
- The expert batch is drawn with replacement from the demonstrations, as large as the policy's.
- The reward is ``-log(1 - D + 1e-7) x strength`` for the policy's transitions: high where they
  look like the expert's; 0 until the discriminator's first update.
- VAIL: the last layer reads a sample ``z = mean + sigma x noise`` of a Gaussian code (``z_size``
  128; the mean's layer initialized at a hundredth of the usual variance, ``sigma`` one learned
  scale per code entry, starting at 1) instead of the hidden layer; the KL divergence of the
  expert's codes and of the policy's to N(0, 1), added, is held near the target mutual
  information 0.5 by a Lagrange weight ``beta`` (stepped by 5e-4 x (KL - 0.5), never below 0;
  starting at 0 as in ML-Agents' later releases, where 0.16 started at 1). Rewards read the
  code's mean.

Image observations (the behavior's and the demonstrations', uint8 in both) go each through an
image encoder of the trainer's ``vis_encode_type`` with ``encoding_size`` features
(networks/visual.py), read after the other inputs (vectors, actions, done). The gradient penalty
then takes its points between the encoders' inputs, the images as floats
(:func:`gradient_penalty` says why).

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
from palaestra.networks.normalizer import Normalizer
from palaestra.networks.numpy_layers import normalize
from palaestra.networks.policy import mlp
from palaestra.networks.visual import image_features
from palaestra.rewards.numpy_losses import discriminator_estimate, discriminator_gradients
from palaestra.rewards.base import SignalContext
from palaestra.rewards.learned import ModelSignal, action_array, as_floats, image_tensors, vector_array
from palaestra.settings import GAILSettings

EPSILON = 1e-7
GRADIENT_PENALTY_WEIGHT = 10.0
Z_SIZE = 128
MUTUAL_INFORMATION = 0.5  # VAIL's target KL divergence
BETA_STEP = 5e-4
# VAIL's weight starts at 0, as in ML-Agents' later releases: 0.16's started at 1, which held the
# code's KL near 0 and D near 0.5 for hundreds of steps (the discriminator test's setup in
# tests/test_gail.py, 1-D with actions: D 0.51 on the expert's rows after 150 steps, 0.53 after 600)
INITIAL_BETA = 0.0
Z_MEAN_INIT_SCALE = 0.01  # the code mean's initial weights: variance scaled by this

# The discriminator's input: the rows of vectors (with the actions and done flag under
# use_actions) and the image observations by index (empty without images)
DiscriminatorInput = tuple[torch.Tensor, dict[int, torch.Tensor]]


class Discriminator(nn.Module):
    def __init__(self, spec: BehaviorSpec, settings: GAILSettings, vis_encode_type: str = "simple",
                 normalize_vectors: bool = False) -> None:
        super().__init__()
        self.spec, self.use_actions, self.use_vail = spec, settings.use_actions, settings.use_vail
        action = spec.action_spec
        inputs = VectorEncoder(spec.observation_shapes).size
        # the trainer's normalize: vectors normalized before they are read (None: read as observed)
        self.normalizer = Normalizer(inputs) if normalize_vectors and inputs else None
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
            # TF's variance scaling (truncated normal, fan in) at scale 0.01: codes start near 0
            std = (Z_MEAN_INIT_SCALE / units) ** 0.5 / 0.87962566103423978
            nn.init.trunc_normal_(self.z_mean.weight, std=std, a=-2.0 * std, b=2.0 * std)
            nn.init.zeros_(self.z_mean.bias)
            self.z_sigma = nn.Parameter(torch.ones(Z_SIZE))
            last = Z_SIZE
        self.estimate = nn.Linear(last, 1)

    def input_array(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """The discriminator's input rows, float32 ``[B, inputs]``."""
        x = vector_array(batch, "obs")
        if self.normalizer is not None:
            x = normalize(x, self.normalizer.mean.cpu().numpy(), self.normalizer.var.cpu().numpy())
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
            h = z_mean + self.z_sigma * torch.randn_like(z_mean) if sample else z_mean
        return torch.sigmoid(self.estimate(h))[:, 0], z_mean

    def kl(self, z_mean: torch.Tensor) -> torch.Tensor:
        """The mean over rows of the KL divergence of N(z_mean, sigma^2) to N(0, 1), summed over
        the code (ML-Agents' form: log sigma^2 as log(sigma^2 + 1e-7))."""
        var = self.z_sigma.pow(2)
        return 0.5 * (z_mean.pow(2).sum(1).mean() + (var - 1.0 - torch.log(var + EPSILON)).sum())


class GAILSignal(ModelSignal):
    name = "gail"
    stat_name = "GAIL"

    def __init__(self, settings: GAILSettings, spec: BehaviorSpec, device: torch.device,
                 context: SignalContext = SignalContext()) -> None:
        # no demo_path: a policy that only acts (algorithms.without_demonstrations); never updated
        self.expert = (demonstration_columns(settings.demo_path, spec, context.behavior,
                                             "reward_signals.gail.demo_path")
                       if settings.demo_path else None)
        self.expert_rows = len(self.expert["continuous"]) if self.expert is not None else 0
        # what the discriminator reads of them: the observations, and the actions and done flag with use_actions
        self.expert_columns = [k for k in self.expert or () if k.startswith("obs_")] + (
            ["continuous", "discrete", "done"] if settings.use_actions else [])
        super().__init__(settings, device, Discriminator(spec, settings, context.vis_encode_type, context.normalize))
        self.uses_terminal = settings.use_terminal_states  # (ML-Agents' GAIL: never)
        # rewards/numpy_losses.py: a plain MLP over vectors, on the CPU
        self.trains_in_numpy = self.model.images is None and not settings.use_vail and device.type == "cpu"
        if self.trains_in_numpy:
            self.bind_numpy()
        self.beta = torch.full((), INITIAL_BETA, device=device)  # VAIL's Lagrange weight (checkpointed)
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
        if self.model.normalizer is not None:  # the policy's observations, as the policy's normalizer
            self.model.normalizer.update(vector_array(batch, "obs"))
        if self.trains_in_numpy:
            return self._numpy_update(expert_batch, batch)
        expert = self.model.inputs(expert_batch, self.device)
        policy = self.model.inputs(batch, self.device)
        loss, stats, kl = discriminator_loss(self.model, self.beta, expert, policy, self._penalty_weights(expert))
        self.optimizer.step(loss)
        if kl is not None:  # dual ascent on beta, after the step that used it
            self.beta.add_(BETA_STEP * (kl - MUTUAL_INFORMATION)).clamp_(min=0.0)
            stats |= {"Policy/GAIL Beta": float(self.beta), "Losses/GAIL KL Loss": kl}
        return stats

    def _penalty_weights(self, expert: DiscriminatorInput) -> DiscriminatorInput:
        """Uniform weights in [0, 1), one per input value (ML-Agents draws each value's own)."""
        x, images = expert
        return (torch.rand(x.shape, device=self.device),
                {i: torch.rand(image.shape, device=self.device) for i, image in images.items()})

    def _numpy_update(self, expert_batch: Mapping[str, np.ndarray],
                      batch: Mapping[str, np.ndarray]) -> dict[str, float]:
        expert, policy = self.model.input_array(expert_batch), self.model.input_array(batch)
        alpha = self.rng.random(expert.shape, dtype=np.float32)  # the penalty's points between the two
        stats = discriminator_gradients(*self.layers, expert, policy, alpha, GRADIENT_PENALTY_WEIGHT, self.gradients)
        self.optimizer.step_with_gradients()
        return stats

    def state_dict(self) -> dict[str, torch.Tensor]:
        return super().state_dict() | {"beta": self.beta}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        self.beta.copy_(state["beta"])


def discriminator_loss(model: Discriminator, beta: torch.Tensor, expert: DiscriminatorInput, policy: DiscriminatorInput,
                       weights: DiscriminatorInput) -> tuple[torch.Tensor, dict[str, float], float | None]:
    """The discriminator's loss (what trains, and what rewards/numpy_losses.py computes by hand), its
    stats, and VAIL's KL (None without VAIL); ``beta``: VAIL's weight; ``weights``: the gradient
    penalty's interpolation weights, shaped as the inputs."""
    d_expert, z_expert = model(*expert, sample=True)
    d_policy, z_policy = model(*policy, sample=True)
    loss = -(torch.log(d_expert + EPSILON) + torch.log(1.0 - d_policy + EPSILON)).mean()
    kl = None
    if model.use_vail:  # ML-Agents' KL: the expert's codes' and the policy's, added
        kl = model.kl(z_expert) + model.kl(z_policy)
        loss = loss + beta * (kl - MUTUAL_INFORMATION)
    penalty = GRADIENT_PENALTY_WEIGHT * gradient_penalty(model, expert, policy, weights)
    loss = loss + penalty
    stats = {"Losses/GAIL Loss": float(loss.detach()), "Policy/GAIL Grad Mag Loss": float(penalty.detach()),
             "Policy/GAIL Expert Estimate": float(d_expert.detach().mean()),
             "Policy/GAIL Policy Estimate": float(d_policy.detach().mean())}
    return loss, stats, None if kl is None else float(kl.detach())


def gradient_penalty(model: Discriminator, expert: DiscriminatorInput, policy: DiscriminatorInput,
                     weights: DiscriminatorInput) -> torch.Tensor:
    """(|grad D| - 1)^2 at random points between expert and policy inputs, each value of a point
    ``w x expert + (1 - w) x policy`` with its own weight ``w`` (``weights``), as ML-Agents.

    With images the points lie between the encoders' inputs, the images as floats in [0, 1]
    (uint8 cannot hold the points between two images), not between their encodings: the
    penalty is to keep D smooth as a function of what it observes, and at encoded points it
    would bind only the layers after the encoders, which the encoders could steepen at will
    (the encodings also move as the encoders learn). ML-Agents' later torch GAIL also
    interpolates the encoder inputs. The gradient's norm is taken over all of a row's inputs
    together, as ML-Agents' safe norm ``sqrt(sum g^2 + 1e-7)``."""
    (expert_x, expert_images), (policy_x, policy_images), (alpha, image_alphas) = expert, policy, weights
    between = (alpha * expert_x + (1.0 - alpha) * policy_x).requires_grad_(True)
    images = {i: torch.lerp(as_floats(policy_images[i]), as_floats(expert_images[i]), image_alphas[i])
              .requires_grad_(True) for i in expert_images}
    d, _ = model(between, images, sample=True)
    gradients = torch.autograd.grad(d.sum(), [between, *images.values()], create_graph=True)
    gradient = gradients[0] if not images else torch.cat([g.flatten(1) for g in gradients], 1)
    return (torch.sqrt(gradient.pow(2).sum(1) + EPSILON) - 1.0).pow(2).mean()
