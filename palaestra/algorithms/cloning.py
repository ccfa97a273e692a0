"""A policy that learns only by imitation: the part ``offline_bc`` and ``online_bc`` share
(algorithms/offline_bc.py, algorithms/online_bc.py). Each differs only in where its
(observation, expert action) rows come from.

The policy is PPO's actor-critic (networks/policy.py) with one value head for the extrinsic
reward, so it acts, reports ``Environment/Cumulative Reward`` and exports to ONNX exactly as a
PPO policy does; the value head is never trained: the environment's reward is only reported.

An update is what ML-Agents' behavioral-cloning trainers did at each environment step: up to
``batches_per_epoch`` mini-batches of ``batch_size`` rows, drawn at random without replacement
(fewer when the rows run out; one batch of all rows when they are fewer than ``batch_size``),
each a gradient step of ``bc_loss`` at a constant ``learning_rate`` (their ``Losses/Cloning
Loss``). ``num_epoch`` repeats that, reshuffled (ML-Agents' trainers had no such key: 1).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from palaestra.algorithms.behavioral_cloning import bc_loss
from palaestra.envs.base import BehaviorSpec
from palaestra.networks.accelerator import accelerate, policy_arrays
from palaestra.networks.optim import load_optimizer_state, make_adam
from palaestra.networks.policy import ActorCritic
from palaestra.networks.torch_acting import TorchActor
from palaestra.rewards import SignalEpisodeSums, drop_open_episodes, make_signals
from palaestra.rollout.buffers import observations
from palaestra.rollout.segments import ActResult, Segments
from palaestra.settings import ExtrinsicSettings, TrainerSettings


def cloning_loss(policy: ActorCritic, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``bc_loss`` of the policy's outputs against the expert actions of a mini-batch."""
    continuous, branch_log_probs = policy.imitation_outputs(observations(batch), batch["allowed"])
    return bc_loss(continuous, branch_log_probs, batch["continuous"], batch["discrete"])


def minibatch_rows(rows: int, batch_size: int, batches: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices of one epoch's mini-batches: up to ``batches`` of ``batch_size`` distinct rows
    (one batch of every row when there are fewer than ``batch_size``)."""
    batch = min(batch_size, rows)
    count = max(min(batches, rows // batch), 1)
    drawn = rng.choice(rows, size=count * batch, replace=False)
    return [drawn[i * batch:(i + 1) * batch] for i in range(count)]


class Examples(Protocol):
    """Where the (observation, expert action) rows come from: demonstrations, a teacher's labels."""

    @property
    def size(self) -> int: ...

    def rows(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        """The columns ``obs_i``, ``continuous``, ``discrete``, ``allowed`` of these rows."""
        ...


class ClonedPolicy:
    """The Algorithm protocol (algorithms/protocol.py) for a policy trained by ``bc_loss`` on
    ``examples``."""

    memory_size = 0  # no recurrent policies (capabilities.py)
    trains_in_numpy = False  # bc_loss steps in torch

    def __init__(self, spec: BehaviorSpec, settings: TrainerSettings, device: torch.device,
                 rng: np.random.Generator | None, examples: Examples) -> None:
        self.spec, self.settings, self.device, self.examples = spec, settings, device, examples
        self.rng = rng or np.random.default_rng()
        # the environment's reward, reported per episode and never learned from
        self.signals = make_signals(spec, {"extrinsic": ExtrinsicSettings()}, device)
        self.policy = ActorCritic(spec, settings.hidden_units, settings.num_layers, False, len(self.signals),
                                  vis_encode_type=settings.vis_encode_type).to(device)
        self.optimizer = make_adam(self.policy.parameters(), settings.learning_rate)
        # acting in numpy over the parameters' memory where the accelerator takes the network;
        # the optimizer steps in place, so it always acts with the newest weights
        accelerated = accelerate(self.policy, self.rng)
        self._actor = accelerated if accelerated is not None else TorchActor(self.policy)
        self.policy_updates: list = []
        self.decoupled = False
        self.step = 0
        self.update_count = 0
        self.episode_sums = SignalEpisodeSums(self.signals)

    # -- acting ------------------------------------------------------------------------------
    def act(self, observations: list[np.ndarray], allowed: np.ndarray | None, deterministic: bool = False,
            memory: np.ndarray | None = None) -> ActResult:
        # (the Algorithm protocol's signature: a cloned policy has no memory, so ``memory`` is None)
        return self._actor.act(observations, allowed, deterministic)

    def policy_arrays(self) -> dict[str, np.ndarray]:
        return policy_arrays(self.policy)

    # -- experience: counted and reported, not learned from -----------------------------------
    def drop_open_episodes(self, every: int = 1, offset: int = 0) -> None:
        self.episode_sums.clear(every, offset)
        drop_open_episodes(self.signals, every, offset)

    def collect(self, seg: Segments) -> dict[str, list[float]]:
        self.step += int(seg.length.sum())
        return self.episode_sums.add(seg, [signal.rewards(seg) for signal in self.signals])

    # -- learning ----------------------------------------------------------------------------
    @property
    def experiences(self) -> int:
        """Rows the next update draws its mini-batches from."""
        return self.examples.size

    def ready(self) -> bool:
        return self.experiences > 0

    def current_learning_rate(self) -> float:
        return self.settings.learning_rate

    def stats_still_due(self) -> dict[str, float]:
        return {}  # (every update reports its own)

    def update(self) -> dict[str, Any]:
        s = self.settings
        losses = []
        for _ in range(s.num_epoch):
            for rows in minibatch_rows(self.experiences, s.batch_size, s.batches_per_epoch, self.rng):
                loss = cloning_loss(self.policy, self.examples.rows(rows))
                self.optimizer.zero_grad(set_to_none=False)  # in place: the accelerator views the gradients
                loss.backward()
                self.optimizer.step()
                losses.append(float(loss.detach()))
        self.update_count += 1
        return {"Losses/Cloning Loss": float(np.mean(losses)), "Policy/Learning Rate": self.current_learning_rate()}

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                "update_count": self.update_count}

    def load_state_dict(self, state: dict[str, Any], weights_only: bool = False) -> None:
        self.policy.load_state_dict(state["policy"])
        if not weights_only:
            load_optimizer_state(self.optimizer, state["optimizer"])
            self.step = int(state["step"])
            self.update_count = int(state["update_count"])

    def replay_state(self) -> None:
        return None

    def load_replay_state(self, state: dict[str, Any]) -> int:
        raise NotImplementedError(f"{self.settings.trainer} keeps no replay buffer (palaestra/capabilities.py)")
