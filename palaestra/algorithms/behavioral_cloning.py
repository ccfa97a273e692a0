"""Behavioral cloning from demonstrations inside PPO and SAC (the ``behavioral_cloning`` section,
ML-Agents 0.16's BC module; ``pretraining``, its old name, is refused asking to rename it).

After each of the algorithm's updates the policy takes ``num_epoch`` passes of supervised
learning over the demonstrations, with its own Adam at ``learning_rate x strength``, decayed
linearly to 0 over ``steps`` trainer steps (constant if 0); once the rate reaches 0 the update is
skipped. Each pass reshuffles the demonstrations and takes mini-batches of ``batch_size`` (the
trainer's unless set), all of them or ``samples_per_update`` samples' worth. Unset, ``num_epoch``
is 3 and every demonstration is used, for PPO after each update and for SAC after each gradient
step (costly there: set ``samples_per_update`` and ``num_epoch: 1``, docs/imitation.md). The loss
(``bc_loss``): the squared error of the policy's (reparameterized, sampled) continuous actions
against the expert's, plus the cross-entropy of the expert's choice in each discrete branch
(summed over branches, divided by their total number of actions), under the action masks the
demonstrations recorded (a row whose action its own mask forbids is learned without it). A recurrent policy
(``use_recurrent``) learns on sequences of ``sequence_length`` cut from each demonstrated
episode's start, each from zero memory, padding left out of the loss, and mini-batches of whole
sequences; ML-Agents cut the sequences across episodes' ends.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch
from torch import nn

from palaestra.algorithms.padding import valid_mean
from palaestra.demos.columns import demonstration_columns
from palaestra.envs.base import BehaviorSpec
from palaestra.networks.optim import FlatStateAdam, make_adam
from palaestra.rollout.buffers import observations
from palaestra.rollout.sequences import into_sequences, sequence_order, sequence_positions
from palaestra.settings import TrainerSettings




def bc_loss(continuous: torch.Tensor | None, branch_log_probs: list[torch.Tensor],
            expert_continuous: torch.Tensor, expert_discrete: torch.Tensor,
            valid: torch.Tensor | None = None) -> torch.Tensor:
    """The policy's continuous actions against the expert's (mean squared error), plus the expert
    choice's cross-entropy summed over branches and divided by their total size (ML-Agents' mean
    of -log p x one-hot over every action of every branch); over the rows ``valid`` marks, where
    recurrent sequences are padded."""
    loss = torch.zeros((), device=expert_continuous.device)
    if continuous is not None:
        loss = loss + valid_mean((continuous - expert_continuous).pow(2), valid)
    if branch_log_probs:
        chosen = [-valid_mean(logp.gather(1, expert_discrete[:, b : b + 1]), valid)
                  for b, logp in enumerate(branch_log_probs)]
        loss = loss + torch.stack(chosen).sum() / sum(logp.shape[1] for logp in branch_log_probs)
    return loss


def episode_sequences(columns: dict[str, np.ndarray], sequence_length: int) -> dict[str, np.ndarray]:
    """Demonstration columns (``episode_start`` marking each episode's first row) cut into
    sequences of ``sequence_length`` rows from each episode's start, the last of each episode
    padded, with ``valid`` (as the update buffer of a recurrent policy: rollout/sequences.py)."""
    starts = np.flatnonzero(columns["episode_start"])
    lengths = np.diff(np.append(starts, len(columns["episode_start"])))
    row_mask = np.arange(int(lengths.max(initial=0)))[None, :] < lengths[:, None]
    positions, rows = sequence_positions(row_mask, sequence_length)
    return into_sequences(columns, positions, rows)


class BehavioralCloning:
    def __init__(self, settings: TrainerSettings, spec: BehaviorSpec, policy: nn.Module, device: torch.device,
                 rng: np.random.Generator, behavior: str) -> None:
        bc = settings.behavioral_cloning
        self.steps = bc.steps
        self.batch_size = bc.batch_size or settings.batch_size
        self.num_epoch = bc.num_epoch
        self.samples_per_update = bc.samples_per_update
        self.learning_rate = settings.learning_rate * bc.strength
        self.policy, self.device, self.rng = policy, device, rng
        columns = demonstration_columns(bc.demo_path, spec, behavior, "behavioral_cloning.demo_path")
        # a recurrent policy learns on sequences from each demonstrated episode's start, as it acts
        self.sequence_length = settings.sequence_length if settings.use_recurrent else 1
        if self.sequence_length > 1:
            columns = episode_sequences(columns, self.sequence_length)
            self.batch_size = max(self.batch_size // self.sequence_length, 1) * self.sequence_length
        self.demonstrations = {k: torch.as_tensor(v, device=device) for k, v in columns.items()
                               if k not in ("done", "episode_start")}
        self.rows = len(self.demonstrations["continuous"])
        self.optimizer = FlatStateAdam(policy, self.learning_rate)  # checkpointed with the algorithm

    def current_learning_rate(self, step: int) -> float:
        if not self.steps:
            return self.learning_rate
        return self.learning_rate * max(0.0, 1.0 - step / self.steps)

    def update(self, step: int) -> dict[str, float]:
        lr = self.current_learning_rate(step)
        if lr <= 0.0:
            return {"Losses/Pretraining Loss": 0.0}
        self.optimizer.set_learning_rate(lr)
        batch = max(min(self.batch_size, self.rows), 1)  # whole sequences: both are multiples of their length
        batches = self.rows // batch
        if self.samples_per_update >= batch:  # (fewer than a batch's worth: all of them, as ML-Agents)
            batches = min(batches, self.samples_per_update // batch)
        losses = []
        for _ in range(self.num_epoch):
            order = torch.as_tensor(sequence_order(self.rows, self.sequence_length, self.rng), device=self.device)
            for i in range(batches):
                rows = order[i * batch : (i + 1) * batch]
                data = {k: v[rows] for k, v in self.demonstrations.items()}
                continuous, branch_log_probs = self.policy.imitation_outputs(observations(data), data["allowed"],
                                                                             self.sequence_length)
                loss = bc_loss(continuous, branch_log_probs, data["continuous"], data["discrete"], data.get("valid"))
                self.optimizer.step(loss)
                losses.append(float(loss.detach()))
        return {"Losses/Pretraining Loss": float(np.mean(losses))}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.optimizer.load_state_dict(state)


def fit_policy(path: str, epochs: int = 30, batch_size: int = 256, hidden_units: int = 128, num_layers: int = 2,
               learning_rate: float = 1e-3, rows: slice = slice(None), seed: int = 0) -> nn.Module:
    """A policy fitted to the demonstrations at ``path`` alone (their own behavior's spec; rows
    ``rows`` of those that carry an action), with ``bc_loss``: the Python API for cloning a
    recording without an environment. The result acts like PPO's (``act``, deterministic or not)
    and exports to ONNX like it."""
    from palaestra.demos.reader import read_demonstrations
    from palaestra.networks.policy import ActorCritic

    for name, value, least in (("epochs", epochs, 0), ("batch_size", batch_size, 1), ("hidden_units", hidden_units, 1),
                               ("num_layers", num_layers, 1), ("seed", seed, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
            raise ValueError(f"fit_policy: {name} must be a whole number >= {least}; got {value!r}")
    if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"fit_policy: learning_rate must be a finite number > 0; got {learning_rate!r}")
    if not isinstance(rows, slice):
        raise ValueError(f"fit_policy: rows must be a slice of the demonstrated steps (slice(0, 800)); got {rows!r}")
    spec = read_demonstrations(path).spec
    with torch.random.fork_rng(devices=[]):  # seeded here, and the caller's own generator left as it was
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        data = {k: torch.as_tensor(v[rows]) for k, v in demonstration_columns(path, spec, "", "demo_path").items()}
        policy = ActorCritic(spec, hidden_units, num_layers, normalize=True, num_value_heads=1)
        if policy.normalizer is not None:  # none where every observation is an image
            policy.normalizer.update(policy.encoder([o.numpy() for o in observations(data)]))
        optimizer = make_adam(policy.parameters(), learning_rate)
        n = len(data["continuous"])
        if n == 0:
            raise ValueError(f"{path}: no demonstrated step with an action in rows {rows} to fit a policy to")
        size = min(batch_size, n)  # fewer rows than a batch: one batch of them all, as the trainers' BC does
        for _ in range(epochs):
            order = torch.as_tensor(rng.permutation(n))
            for start in range(0, n - size + 1, size):
                batch = {k: v[order[start : start + size]] for k, v in data.items()}
                continuous, branch_log_probs = policy.imitation_outputs(observations(batch), batch["allowed"])
                loss = bc_loss(continuous, branch_log_probs, batch["continuous"], batch["discrete"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return policy
