"""What the reward signals with a model of their own share (curiosity, RND, GAIL): the
transitions they read, their optimizer, their rewards over segments and their checkpoints.

A signal's reward is computed from transitions (observation, action, next observation) in one
batched pass: over the real rows of finished segments for PPO, over sampled transitions for SAC.
Its model trains on the algorithm's batches through ``update`` (rewards/base.py)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from palaestra.envs.base import ActionSpec
from palaestra.envs.observations import is_image
from palaestra.networks.optim import FlatStateAdam
from palaestra.rewards.base import SignalContext
from palaestra.rollout.buffers import observation_columns, observations
from palaestra.rollout.segments import Segments
from palaestra.rollout.transitions import following_rows, terminal_rows


def transitions(seg: Segments) -> dict[str, np.ndarray]:
    """The real rows of finished segments as a batch of transitions (the columns ``update`` gets)."""
    mask = seg.row_mask
    following = [following_rows(o, after, seg.length)[mask] for o, after in zip(seg.observations, seg.next_observations)]
    return {**observation_columns([o[mask] for o in seg.observations]), **observation_columns(following, "next_obs"),
            "continuous": seg.continuous[mask], "discrete": seg.discrete[mask],
            "done": terminal_rows(seg.length, seg.terminal, seg.width)[mask]}


def transition_columns(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The columns of an algorithm's batch that a signal's model reads: those :func:`transitions`
    builds (the observations before and after, the actions, whether the step ended the episode)."""
    return {k: v for k, v in batch.items()
            if k in ("continuous", "discrete", "done") or k.startswith(("obs_", "next_obs_"))}


def vector_array(batch: Mapping[str, np.ndarray], prefix: str) -> np.ndarray:
    """A batch's vector observations side by side, float32 ``[B, total]`` (images left out: the
    signals' image encoders read them, :func:`image_tensors`)."""
    obs = observations(batch, prefix)
    if any(is_image(o.shape[1:]) for o in obs):
        obs = [o for o in obs if not is_image(o.shape[1:])]
        if not obs:  # images only
            return np.zeros((len(batch[f"{prefix}_0"]), 0), np.float32)
    flat = np.concatenate([o.reshape(len(o), -1) for o in obs], 1) if len(obs) > 1 else obs[0].reshape(len(obs[0]), -1)
    return flat.astype(np.float32, copy=False)


def vector_input(batch: Mapping[str, np.ndarray], prefix: str, device: torch.device) -> torch.Tensor:
    """A batch's vector observations side by side, ``[B, total]``, as float32 on ``device``."""
    return torch.as_tensor(vector_array(batch, prefix), device=device)


def image_tensors(batch: Mapping[str, np.ndarray], prefix: str, indices: list[int],
                  device: torch.device) -> dict[int, torch.Tensor]:
    """A batch's image observations ``indices`` (as stored: uint8, which the encoders scale) on
    ``device``, by observation index: what networks/visual.py's ``ImageFeatures`` reads."""
    return {i: torch.as_tensor(batch[f"{prefix}_{i}"], device=device) for i in indices}


def as_floats(images: torch.Tensor) -> torch.Tensor:
    """Images as floats in [0, 1], the scale the encoders read uint8 images at."""
    return images.float() * (1.0 / 255.0) if images.dtype == torch.uint8 else images


def action_array(spec: ActionSpec, batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """The actions taken as float32 ``[B, inputs]``: continuous values as the environment received
    them (clipped to [-1, 1]: PPO stores the sampled ones, which demonstrations never hold), then
    one one-hot per branch."""
    parts = [np.clip(np.asarray(batch["continuous"], np.float32), -1.0, 1.0)] if spec.is_continuous else []
    if spec.is_discrete:
        discrete = np.asarray(batch["discrete"])
        parts += [np.eye(size, dtype=np.float32)[discrete[:, b]] for b, size in enumerate(spec.discrete_branches)]
    return np.concatenate(parts, 1)


def action_input(spec: ActionSpec, batch: Mapping[str, np.ndarray], device: torch.device) -> torch.Tensor:
    """The actions taken as a model's input: continuous values as the environment received them
    (:func:`action_array`), then one one-hot per discrete branch."""
    parts = ([torch.as_tensor(batch["continuous"], dtype=torch.float32, device=device).clamp(-1.0, 1.0)]
             if spec.is_continuous else [])
    if spec.is_discrete:
        discrete = torch.as_tensor(batch["discrete"], dtype=torch.int64, device=device)
        parts += [nn.functional.one_hot(discrete[:, b], size).float() for b, size in enumerate(spec.discrete_branches)]
    return torch.cat(parts, 1)


class ModelSignal:
    """What a reward signal with a model shares (curiosity, RND, GAIL): its rewards over the real
    rows of segments, none before the model's first update unless ``pays_before_update``, and
    its model's and optimizer's state for checkpoints. A signal hands its model to ``__init__``
    and writes ``batch_rewards`` and ``update``."""

    uses_terminal = False  # an episode's end is not terminal for an intrinsic reward
    learns = True
    trains_in_numpy = False  # set by a signal whose update can run in numpy
    # an untrained model's rewards are noise (ML-Agents pays curiosity and GAIL from the first update)
    pays_before_update = False
    NUMPY_VIEWS: tuple[str, ...] = ()  # attributes ``bind_numpy`` builds (not pickled)

    def __init__(self, settings, device: torch.device, model: nn.Module, trained: nn.Module | None = None) -> None:
        """The scale and discount every signal's settings hold; ``model`` moved to ``device``, and
        an Adam at the settings' learning rate over ``trained`` (by default, the whole model)."""
        self.strength, self.gamma = settings.strength, settings.gamma
        self.device = device
        self.model = model.to(device)
        self.optimizer = FlatStateAdam(self.model if trained is None else trained, settings.learning_rate)

    @classmethod
    def build(cls, settings, spec, device: torch.device, context: SignalContext = SignalContext()):
        return cls(settings, spec, device, context)

    def batch_rewards(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """The scaled rewards of a batch of transitions, ``[B]`` float32 (under no_grad)."""
        raise NotImplementedError

    def _paying(self) -> bool:
        return self.pays_before_update or self.optimizer.steps > 0

    def rewards(self, segments: Segments) -> np.ndarray:
        out = np.zeros(segments.row_mask.shape, np.float32)
        if self._paying():
            out[segments.row_mask] = self.rewards_for_batch(transitions(segments))
        return out

    @torch.no_grad()
    def rewards_for_batch(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        if not self._paying():
            return np.zeros(len(batch["continuous"]), np.float32)
        return self.batch_rewards(batch)

    def finish_update(self) -> dict[str, float]:
        """After an algorithm's round of ``update`` calls: the stats of updates that ran elsewhere
        (rewards/background.py); here each ``update`` returned its own."""
        return {}

    def bind_numpy(self) -> None:
        """Build the numpy views of the model's arrays that the numpy path reads (curiosity's and
        RND's layers), at construction and again after unpickling (a copy of a view is no view)."""

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self.NUMPY_VIEWS}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.trains_in_numpy:
            self.bind_numpy()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"model.{k}": v for k, v in self.model.state_dict().items()} | self.optimizer.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
        self.optimizer.load_state_dict(state)

