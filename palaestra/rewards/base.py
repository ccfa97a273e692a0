"""The reward-signal seam: PPO keeps one value head per signal, SAC one Q output per signal.

A signal is built from the behavior's spec, its own settings and the device
(``rewards/__init__.py``: :data:`SIGNAL_BUILDERS`), so a signal with its own network (curiosity,
GAIL) knows the observation and action sizes and where to put its weights. Signals whose model
learns (``learns``) are trained through ``update`` from the algorithm's update loop: PPO on each
of its mini-batches, SAC on its own cadence (``reward_signal_steps_per_update``), each round
ended by ``finish_update`` where a signal has one (optional: rewards/__init__.py's
``finish_updates``); their weights travel in the algorithm's checkpoints (``state_dict``).
Under PPO a signal whose update runs in numpy may train in a process of its own
(rewards/background.py), which goes on with a round after ``finish_update`` while the next
experience is gathered; such a signal says ``rewards_at_update`` (optional), and PPO then asks
for the rewards of its experience when its next update processes it, not as it comes.
Optional too: ``prepare_updates``, called once experience for a first update arrives, and
``drop_open_episodes(every, offset)``, called when environments reset with episodes under way
(a signal that follows each agent's episode starts it anew).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol

import numpy as np
import torch

from palaestra.rollout.segments import Segments


@dataclass(frozen=True)
class SignalContext:
    """What a signal's builder is told of its trainer and behavior beyond the signal's own settings."""

    vis_encode_type: str = "simple"  # the trainer's image encoder, for a signal's network over images
    behavior: str = "the behavior"  # the behavior's name, for messages about its demonstrations
    normalize: bool = False  # the trainer's `normalize`: GAIL then reads normalized vectors, as ML-Agents


class RewardSignal(Protocol):
    name: str  # config name, e.g. "extrinsic"
    stat_name: str  # as in TensorBoard stats, e.g. "Extrinsic"
    gamma: float
    uses_terminal: bool  # bootstrap 0 at a true terminal state
    learns: bool  # has a model that ``update`` trains
    # its model's updates run in numpy (rewards/numpy_losses.py), not torch: machine.py gives the
    # training threads to the library that does a run's arithmetic
    trains_in_numpy: bool

    def rewards(self, segments: Segments) -> np.ndarray:
        """Scaled rewards ``[F, H]`` for the rows of the segments."""
        ...

    def rewards_for_batch(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Scaled rewards ``[B]`` for a batch of transitions (SAC's replay samples)."""
        ...

    def update(self, batch: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Train the signal's own model on a batch of transitions (numpy arrays: the observations
        ``obs_i`` and ``next_obs_i``, read with rollout.buffers.observations; ``continuous``,
        ``discrete``, ``env_reward``, ...); return loss stats."""
        ...

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The model's weights and optimizer state for checkpoints (empty without a model)."""
        ...

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None: ...
