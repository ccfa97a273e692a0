"""Proximal Policy Optimization as ML-Agents 0.16 trains it (Schulman et al. 2017).

Reading order: ``act`` (one batched forward pass per environment step), ``collect`` (finished
segments wait in a queue), ``ready``, ``process`` (all queued segments at once → per-signal
rewards → GAE advantages and returns → the update buffer) and ``update`` (``num_epoch`` passes
of shuffled ``batch_size`` mini-batches over the buffer).
ML-Agents' details, named where they happen:
- one value head per reward signal, each with its own gamma; the policy's advantage is the
  mean of the signals' advantages;
- the return bootstraps from V(next observation) at a time-horizon cut and at an interrupted
  episode, and from 0 at a true terminal (for signals that use terminal states);
- advantages are standardized over the whole buffer before the epochs;
- epsilon decays linearly to 0.1 and beta to 1e-5 over ``max_steps``; the learning rate decays
  linearly to 1e-10 when ``learning_rate_schedule`` is linear;
- the value loss is clipped around the old value estimate with the same epsilon
  (``value_clipping: false`` turns that off for returns far from unit scale; see ``update``);
- total loss = policy loss + 0.5 x value loss - beta x entropy.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from typing import Any, Callable

import numpy as np
import torch
from threadpoolctl import ThreadpoolController
from torch import nn

from palaestra.algorithms.auxiliary import (AuxiliaryLoss, PolicyUpdate, StatsMean, add_auxiliary_gradients,
                                            update_in_numpy)
from palaestra.algorithms.padding import valid_mean
from palaestra.algorithms.training_state import load_training_state, training_state
from palaestra.algorithms.schedules import linear_decay, scheduled_learning_rate
from palaestra.rollout.transitions import following_rows, terminal_rows
from palaestra.envs.base import BehaviorSpec
from palaestra.machine import blas_threads, image_towers_on_two_threads, second_tower_threads
from palaestra.networks.accelerator import accelerate, acting_network, on_cpu, policy_arrays
from palaestra.networks.numpy_adam import NumpyAdam
from palaestra.networks.optim import make_adam
from palaestra.networks.policy import ActorCritic
from palaestra.networks.torch_acting import TorchActor
from palaestra.rewards import (SignalEpisodeSums, drop_open_episodes, finish_updates, load_signals_state, make_signals,
                                prepare_updates, take_reports)
from palaestra.rewards.background import in_background_where_it_pays
from palaestra.rewards.base import SignalContext
from palaestra.rewards.episode_sums import SplitEpisodeSums, joined_stats
from palaestra.rollout.discounting import discounted_cumsum
from palaestra.rollout.sequences import into_sequences, real_rows, sequence_order, sequence_positions
from palaestra.rollout.buffers import RolloutBuffer, observation_columns, observations
from palaestra.rollout.segments import ActResult, Segments
from palaestra.settings import PPOSettings
from palaestra.timers import timed

# Rows per forward pass of the no-grad evaluations over a whole buffer (_current_values, _decouple)
NO_GRAD_ROWS = 1024
# Multiply-adds of one tower's trunk over a mini-batch from which its two towers train one per
# thread (_mlp_towers_as_chosen). Measured (docs/benchmarks.md, session 53): 256 x 2 units at 64
# rows (4.7M) split 1.1 ms against 1.3 on one thread; at 32 rows (2.4M) 1.1 against 0.84; 256 x 1
# at 256 rows (2.4M) equal, below it one thread ahead by up to 2x.
TOWERS_SPLIT_FROM = 4_000_000
# The largest importance weight pi_prox / pi_behavior of the decoupled objective (_decouple).
WEIGHT_CAP = 2.0


def gae(rewards: np.ndarray, values: np.ndarray, bootstrap: np.ndarray, length: np.ndarray,
        gamma: float, lambd: float) -> np.ndarray:
    """Generalized Advantage Estimation (Schulman et al. 2016) for a batch of segments.

    rewards, values: ``[F, H]``; bootstrap: ``[F]`` value after each segment's last row.
    Rows past ``length`` are padding; their deltas are zeroed, which keeps them out of the sum.
    """
    F, H = rewards.shape
    rows = np.arange(H)[None, :]
    next_values = np.zeros_like(values)
    next_values[:, :-1] = values[:, 1:]
    last = length - 1
    next_values[np.arange(F), last] = bootstrap
    deltas = rewards + gamma * next_values - values
    deltas[rows >= length[:, None]] = 0.0
    return discounted_cumsum(deltas, gamma * lambd)


def _as_numpy(batch: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: v.cpu().numpy() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def ppo_loss(log_prob: torch.Tensor, entropy: torch.Tensor, values: torch.Tensor, batch: dict[str, torch.Tensor],
             epsilon: float, beta: float, value_clip: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's loss of a mini-batch from the policy's outputs: (total, policy loss, value loss)."""
    # Clipped surrogate objective.
    valid = batch.get("valid")  # recurrent: the sequences' padding rows count for nothing
    log_ratio = log_prob - batch["log_prob"]
    if valid is not None:  # (a padding row's ratio, exp of a log-probability of zeros, can be inf: inf x 0 is NaN)
        log_ratio = torch.where(valid > 0, log_ratio, torch.zeros_like(log_ratio))
    ratio = torch.exp(log_ratio)
    a = batch["advantages"]
    policy_loss = -valid_mean(torch.min(ratio * a, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * a), valid)
    # Clipped value loss (value_clip: epsilon, or inf without value clipping), one head per
    # reward signal, averaged over heads.
    old_v, ret = batch["old_values"], batch["returns"]
    clipped_v = old_v + torch.clamp(values - old_v, -value_clip, value_clip)
    value_loss = valid_mean(torch.max((ret - values) ** 2, (ret - clipped_v) ** 2), valid)
    return policy_loss + 0.5 * value_loss - beta * valid_mean(entropy, valid), policy_loss, value_loss


def ppo_loss_gradients(log_prob: np.ndarray, entropy: np.ndarray | float, values: np.ndarray,
                       batch: dict[str, np.ndarray], epsilon: float, beta: float, value_clip: float
                       ) -> tuple[np.ndarray, float, np.ndarray, float, float]:
    """``ppo_loss``'s gradient with respect to its inputs, in numpy (the CPU accelerator's):
    (d/d(log_prob) [B], d/d(entropy) (every row's, or per row with padding), d/d(values) [B, K],
    policy loss, value loss). A recurrent batch's padding rows (``valid`` 0) weigh nothing, as
    ``valid_mean`` does."""
    valid = batch.get("valid")
    # each row's weight in a mean over rows: 1 / B, or 1 / (real rows) on real rows only
    weight = np.float32(1.0 / log_prob.shape[0]) if valid is None else (valid / valid.sum()).astype(np.float32)
    # clipped surrogate: the unclipped term carries the gradient where min() picks it
    adv = batch["advantages"]
    log_ratio = log_prob - batch["log_prob"]
    ratio = np.exp(log_ratio if valid is None else np.where(valid > 0, log_ratio, np.float32(0.0)))  # (as ppo_loss)
    surrogate = np.minimum(ratio * adv, np.clip(ratio, 1 - epsilon, 1 + epsilon) * adv)
    active = np.where(adv >= 0, ratio <= 1 + epsilon, ratio >= 1 - epsilon)
    grad_log_prob = np.where(active, -adv * ratio * weight, np.float32(0.0)).astype(np.float32)
    # clipped value loss: the larger of the two terms carries the gradient (the clipped one none)
    old_v, returns = batch["old_values"], batch["returns"]
    delta = values - old_v
    loss_unclipped = (returns - values) ** 2
    loss_clipped = (returns - (old_v + np.clip(delta, -value_clip, value_clip))) ** 2
    use_unclipped = (loss_unclipped >= loss_clipped) | (np.abs(delta) < value_clip)
    # d/dv of 0.5 x mean over rows and heads of (returns - v)^2
    row_weight = weight if valid is None else weight[:, None]
    grad_values = np.where(use_unclipped, (returns - values) * (-row_weight / values.shape[1]), np.float32(0.0))
    value_loss = np.maximum(loss_unclipped, loss_clipped).mean(1)
    return (grad_log_prob, -beta * weight, grad_values.astype(np.float32, copy=False),
            -float((surrogate * weight).sum() if valid is not None else surrogate.mean()),
            float((value_loss * weight).sum() if valid is not None else value_loss.mean()))


def _weakly(method: Callable[[], Any], otherwise: Callable[[], Any]) -> Callable[[], Any]:
    """``method`` called through a weak reference to its object (``otherwise()`` once it is gone)."""
    ref = weakref.WeakMethod(method)

    def call() -> Any:
        bound = ref()
        return bound() if bound is not None else otherwise()

    return call


class PPO:
    def __init__(self, spec: BehaviorSpec, settings: PPOSettings, device: torch.device,
                 rng: np.random.Generator | None = None, behavior: str = "the behavior") -> None:
        self.spec = spec
        self.settings = settings
        self.device = device
        signals = make_signals(spec, settings.reward_signals, device,
                               SignalContext(settings.vis_encode_type, behavior, settings.normalize))
        # each signal model's steps of an update in a process of its own where a core is spare
        # (rewards/background.py: the same result, about the time of PPO's own steps alone)
        signal_steps = settings.buffer_size // settings.batch_size * (settings.reward_signal_num_epoch or settings.num_epoch)
        self.signals = (in_background_where_it_pays(signals, signal_steps, settings.batch_size) if device.type == "cpu"
                        else signals)
        self._learning_signals = [signal for signal in self.signals if signal.learns]
        self._signals_prepared = False  # see collect
        self.auxiliary_losses: list[AuxiliaryLoss] = []  # extra loss terms of each mini-batch step
        self.policy_updates: list[PolicyUpdate] = []  # run after each update (behavioral cloning)
        self.policy = ActorCritic(
            spec, settings.hidden_units, settings.num_layers, settings.normalize, len(self.signals),
            settings.activation, settings.vis_encode_type, settings.memory_size if settings.use_recurrent else None,
            lstm_first=settings.lstm_placement == "before_layers",
        ).to(device)
        self.memory_size = self.policy.memory_size  # per agent, kept by the collector (0: no memory)
        # recurrent: the update learns on sequences of this many rows (rollout/sequences.py)
        self.sequence_length = settings.sequence_length if self.memory_size else 1
        self.optimizer = make_adam(self.policy.parameters(), settings.learning_rate, settings.adam_epsilon)
        self.rng = rng or np.random.default_rng()
        # On the CPU Adam steps over one flat buffer of every parameter (networks/numpy_adam.py:
        # one pass instead of torch's per-tensor bookkeeping, 10-15% of a CNN policy's update).
        # A plain MLP (with or without LSTMs) also acts and computes gradients in numpy, over the
        # same memory (networks/accelerator.py; tests check each against torch and autograd); the
        # parameters are flattened first, so that the accelerator views the flat buffers.
        self._numpy_adam = NumpyAdam(list(self.policy.parameters()), self.optimizer) if on_cpu(self.policy) else None
        self._accelerated = accelerate(self.policy, self.rng)
        # acting: the accelerator's numpy network (a recurrent one acts in numpy too), or the module
        # itself (networks/torch_acting.py)
        self._actor = self._accelerated or acting_network(self.policy, self.rng) or TorchActor(self.policy)
        self._blas: Any = None  # numpy's BLAS threads, held at the first update (_mlp_towers_as_chosen)
        self._one_blas_thread = False  # updates on one BLAS thread (_mlp_towers_as_chosen)
        self.buffer = RolloutBuffer()
        # Finished segments wait here until the buffer is due for an update, then go through
        # process() together: one GAE pass per update rather than one per finished episode.
        # with each signal's rewards of its real rows (or, waiting for the late signals', None and
        # the rewards the others gave as the segments came)
        self._queued: list[tuple[Segments, np.ndarray | None, list[np.ndarray] | None]] = []
        self._queued_rows = 0
        # experience may come from weights older than the last update (acting workers with a
        # lag, workers/acting.py): then the update uses the decoupled objective (_decouple)
        self.decoupled = False
        self.step = 0  # agent steps processed, ML-Agents' trainer step
        self.update_count = 0
        # a signal whose model goes on training after an update (rewards/background.py: in a
        # process of its own, while this one gathers the next experience) rewards the experience
        # when the next update processes it: the model is the same then, and its round is back;
        # the others (the extrinsic reward) reward it as it comes, their episodes reported then
        self._late = [k for k, signal in enumerate(self.signals) if getattr(signal, "rewards_at_update", False)]
        self._rewards_at_update = bool(self._late)
        self.episode_sums: SignalEpisodeSums | SplitEpisodeSums = SignalEpisodeSums(self.signals)  # "Policy/<Signal> Reward"
        if self._rewards_at_update:
            split = SplitEpisodeSums(self.signals, self._late)
            split.late.waiting = _weakly(self._reward_waiting, dict)  # (weakly: no cycle keeps a finished run's PPO alive)
            self.episode_sums = split

    @property
    def trains_in_numpy(self) -> bool:
        return update_in_numpy(self._accelerated is not None, self.signals, self.auxiliary_losses, self.policy_updates)

    # -- acting ------------------------------------------------------------------------------
    def act(self, observations: list[np.ndarray], allowed: np.ndarray | None, deterministic: bool = False,
            memory: np.ndarray | None = None) -> ActResult:
        self._image_towers_as_chosen()
        return self._actor.act(observations, allowed, deterministic, memory=memory)

    def _mlp_towers_as_chosen(self) -> None:
        """Where the run gave numpy's BLAS two threads (a wide network, machine.limit_threads),
        the accelerator trains the actor's and the critic's towers one per thread instead, one
        BLAS thread each (networks/two_threads.py: SAC's critics do the same): the same products,
        each tower's data kept in one core's cache however the machine placed the two cores.
        Mini-batches too small to pay for the hand-over train on one BLAS thread."""
        self._blas = ThreadpoolController().select(user_api="blas")
        if blas_threads() == 2:
            net = self._accelerated
            small = net.tower_multiply_adds() * self.settings.batch_size < TOWERS_SPLIT_FROM
            if net.twin and net.sequences is None and small:
                self._one_blas_thread = True
            else:
                net.towers_on_two_threads()

    def _image_towers_as_chosen(self) -> None:
        """The actor's and the critic's image encoders at once where the run chose it
        (machine.limit_threads, after every behavior's algorithm was built), from the first
        act or update on."""
        if self.policy.images is not None and self.policy.images.second is None and image_towers_on_two_threads():
            self.policy.images.on_two_threads(second_tower_threads())

    def policy_arrays(self) -> dict[str, np.ndarray]:
        """The policy's weights as named numpy arrays, for acting in environment workers (views
        on the CPU; copies of a policy on a GPU, taken at each call)."""
        return policy_arrays(self.policy)

    # -- experience --------------------------------------------------------------------------
    def drop_open_episodes(self, every: int = 1, offset: int = 0) -> None:
        self.episode_sums.clear(every, offset)
        drop_open_episodes(self.signals, every, offset)  # (the agents' memories are the collector's)

    def collect(self, seg: Segments) -> dict[str, list[float]]:
        """Queue one step's finished segments for the next update (they count as trainer steps
        now); return the per-signal rewards of the episodes that ended."""
        if not self._signals_prepared:  # experience for a first update: a signal trained elsewhere starts now
            prepare_updates(self._learning_signals)
            self._signals_prepared = True
        rows = int(seg.length.sum())
        self._queued_rows += rows
        self.step += rows
        if self.policy.normalizer is not None:  # as ML-Agents, with each trajectory: acting sees it from now on
            vectors = self.policy.encoder.indices  # (images are not normalized: not copied for it either)
            self.policy.normalizer.update(self.policy.encoder(
                [o[seg.row_mask] if i in vectors else o for i, o in enumerate(seg.observations)]))
        if self._rewards_at_update:
            split = self.episode_sums
            now = [self.signals[k].rewards(seg) for k in split.now_indices]
            self._queued.append((seg, None, now))  # the late signals' by _reward_waiting
            return joined_stats(split.late.take_unreported(), split.now.add(seg, now))
        signal_rewards, ended = self._reward(seg)
        self._queued.append((seg, signal_rewards, None))
        return ended

    def _reward(self, seg: Segments, now: list[np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, list[float]]]:
        """Each signal's rewards for the real rows of ``seg`` ``[rows, signals]``, for process();
        the sums of the episodes it ended. Each signal rewards each segment once, in the order
        they arrived (a model's rewards cost a forward pass; the extrinsic signal's return scale
        follows the rows in order): ``now``, the rewards of the signals that gave them as the
        segment came (their episodes counted then), only the late signals' are computed here."""
        if now is None:
            rewards = [signal.rewards(seg) for signal in self.signals]
            ended = self.episode_sums.add(seg, rewards)
        else:
            split = self.episode_sums
            late = [self.signals[k].rewards(seg) for k in split.late_indices]
            ended = split.late.add(seg, late)
            rewards = [None] * len(self.signals)
            for k, r in zip(split.now_indices + split.late_indices, now + late):
                rewards[k] = r
        return np.array([r[seg.row_mask] for r in rewards]).T, ended  # [rows, signals]

    def _reward_waiting(self) -> dict[str, list[float]]:
        """Reward the queued segments still waiting for it, in order (episode_sums calls this first
        whenever the sums change; so does process_queued)."""
        stats: dict[str, list[float]] = {}
        for i, (seg, rewards, now) in enumerate(self._queued):
            if rewards is None:  # (each in place: one cut short by a second Ctrl+C leaves the rest waiting)
                signal_rewards, ended = self._reward(seg, now)
                self._queued[i] = (seg, signal_rewards, None)
                stats = joined_stats(stats, ended)
        return stats

    def process_queued(self) -> dict[str, list[float]]:
        episodes = self.episode_sums.settle()  # (rewards the segments waiting for it)
        if not self._queued:
            return episodes
        parts, rewards, _ = zip(*self._queued)
        self._queued, self._queued_rows = [], 0
        # concatenating keeps each part's real rows, in order, as the rewards' rows are
        return episodes | self.process(Segments.concatenate(parts), np.concatenate(rewards))

    def process(self, seg: Segments, row_rewards: np.ndarray) -> dict[str, list[float]]:
        """Turn finished segments, and each signal's rewards of their real rows ``[rows, signals]``,
        into advantages and returns in the update buffer (the normalizer took their observations
        when they arrived: :meth:`collect`)."""
        mask = seg.row_mask
        # valued by the current critic, as ML-Agents values each trajectory it processes (acting
        # computes no values: a segment under way at the last update would have its first rows'
        # from the critic before it, and acting workers run ahead of the updates)
        seg_values, seg_bootstrap = self._current_values(seg)
        # their mean per segment, as ML-Agents reports one per trajectory (which it processes as
        # it arrives: here at the update, so the stat is in the summaries with an update only)
        means = np.where(mask[..., None], seg_values, 0.0).sum(1) / np.maximum(seg.length, 1)[:, None]
        stats = {f"Policy/{signal.stat_name} Value Estimate": means[:, k].tolist()
                 for k, signal in enumerate(self.signals)}
        advantages = np.zeros(mask.shape, dtype=np.float64)
        returns = np.zeros((*mask.shape, len(self.signals)), dtype=np.float32)
        for k, signal in enumerate(self.signals):
            rewards = np.zeros(mask.shape, np.float32)
            rewards[mask] = row_rewards[:, k]
            values = seg_values[:, :, k]
            bootstrap = seg_bootstrap[:, k].copy()
            if signal.uses_terminal:
                bootstrap[seg.terminal] = 0.0
            adv = gae(rewards, values, bootstrap, seg.length, signal.gamma, self.settings.lambd)
            advantages += adv / len(self.signals)
            returns[:, :, k] = adv + values
        columns = dict(
            **observation_columns([o[mask] for o in seg.observations]),
            continuous=seg.continuous[mask],
            discrete=seg.discrete[mask],
            allowed=seg.allowed[mask],
            log_prob=seg.log_prob[mask],
            old_values=seg_values[mask],
            returns=returns[mask],
            advantages=advantages[mask].astype(np.float32),
            **self._signal_columns(seg, mask),
        )
        if self.memory_size:  # a recurrent policy learns on sequences, each from its stored memory
            positions, rows = sequence_positions(mask, self.sequence_length)
            columns = into_sequences(columns | {"memory": seg.memory[mask]}, positions, rows)
        self.buffer.add(**columns)
        return stats

    @torch.no_grad()
    def _current_values(self, seg: Segments) -> tuple[np.ndarray, np.ndarray]:
        """Each row's value estimates ``[F, H, signals]`` and each segment's bootstrap, the value
        of the observation after its last row ``[F, signals]``, from the current critic and
        normalizer, as ML-Agents computes them for each trajectory it processes.
        Estimates made while acting (which no longer computes them) were stale for rows acted on
        before the last update: the first rows of a segment under way then (about half of
        3DBall's buffer once its episodes are long), and all the experience of acting workers
        running ahead of the updates (docs/benchmarks.md, the session 18 rows of ML-Agents' test
        matrix)."""
        if not self.memory_size:  # the real rows and each segment's next observation, nothing padded
            mask = seg.row_mask
            rows = [np.concatenate([o[mask], following]) for o, following in zip(seg.observations, seg.next_observations)]
            n = len(rows[0])
            estimates = np.concatenate([
                self.policy.value([torch.as_tensor(o[start:start + NO_GRAD_ROWS], device=self.device)
                                   for o in rows]).cpu().numpy() for start in range(0, n, NO_GRAD_ROWS)])
            values = np.zeros((*mask.shape, estimates.shape[1]), np.float32)
            real = int(mask.sum())
            values[mask] = estimates[:real]
            return values, estimates[real:]
        # a recurrent critic runs over each segment from its stored memory; the observation after
        # the last row is read as one more row, so it reaches that with the memory of the rows before
        F, H = seg.length.shape[0], seg.width
        extended = []
        for obs, following in zip(seg.observations, seg.next_observations):
            rows = np.concatenate([obs, obs[:, :1]], axis=1)  # [F, H + 1, ...]
            rows[np.arange(F), seg.length] = following
            extended.append(rows)
        chunks = []
        # segments a chunk at a time: a whole buffer of images at once through the CNNs took
        # gigabytes (about 0.9 MB per 84 x 84 image for resnet)
        per_chunk = max(1, NO_GRAD_ROWS // (H + 1))
        for start in range(0, F, per_chunk):
            part = slice(start, min(start + per_chunk, F))
            n = part.stop - part.start
            rows = [torch.as_tensor(o[part].reshape(n * (H + 1), *o.shape[2:]), device=self.device) for o in extended]
            memory = torch.as_tensor(seg.memory[part, 0], device=self.device) if self.memory_size else None
            features, _ = self.policy.hidden(rows, memory, H + 1 if self.memory_size else 1)
            chunks.append(self.policy.values(features[1]).cpu().numpy().reshape(n, H + 1, -1))
        values = np.concatenate(chunks)
        return values[:, :H], values[np.arange(F), seg.length]

    def _signal_columns(self, seg: Segments, mask: np.ndarray) -> dict[str, np.ndarray]:
        """The buffer columns only reward signals with a model read (none without them): their
        models learn from transitions (observation, action, next observation, whether it ended
        the episode)."""
        if not self._learning_signals:
            return {}
        following = [following_rows(o, after, seg.length)[mask] for o, after in zip(seg.observations, seg.next_observations)]
        return observation_columns(following, "next_obs") | {
            "env_reward": seg.env_reward[mask], "done": terminal_rows(seg.length, seg.terminal, seg.width)[mask]}

    def ready(self) -> bool:
        return self.experiences > self.settings.buffer_size

    @property
    def experiences(self) -> int:
        """Rows the next update learns from: those in the buffer and those still queued."""
        return self.buffer.size + self._queued_rows

    # -- learning ----------------------------------------------------------------------------
    def current_learning_rate(self) -> float:
        return scheduled_learning_rate(self.settings, self.step)

    def stats_still_due(self) -> dict[str, Any]:
        # (the episodes of segments still waiting for a late signal's rewards, rewarded now)
        return take_reports(self._learning_signals) | (self.episode_sums.settle() if self._rewards_at_update else {})

    def update(self) -> dict[str, Any]:
        """Process the queued segments, then run the epochs; return the stats of both."""
        self._image_towers_as_chosen()
        if self._blas is None and self._accelerated is not None:
            self._mlp_towers_as_chosen()
        with timed("process_trajectory"):
            stats: dict[str, Any] = dict(self.process_queued())
        s = self.settings
        lr = self.current_learning_rate()
        epsilon = linear_decay(s.epsilon, 0.1, self.step, s.max_steps)
        beta = linear_decay(s.beta, 1e-5, self.step, s.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

        # ML-Agents (like OpenAI Baselines, where value clipping comes from) lets a value estimate
        # move at most epsilon per update from the one it started from. That assumes returns of about
        # unit scale: with returns in the tens the critic lags for hundreds of updates (CartPole with
        # rl-zoo's settings peaked near 260 instead of 500; docs/algorithms.md). SB3 does not clip.
        value_clip = epsilon if s.value_clipping else math.inf
        data = dict(self.buffer.view())
        adv = data["advantages"]
        real = adv if "valid" not in data else adv[data["valid"] > 0]  # not the sequences' padding
        with np.errstate(over="ignore", invalid="ignore"):  # (returns past float32's range: the losses say so)
            data["advantages"] = (adv - real.mean()) / (real.std() + 1e-10)  # standardized over the buffer
        if self.decoupled:
            self._decouple(data)
        n = self.buffer.size
        L = self.sequence_length  # recurrent: mini-batches of whole sequences (rollout/sequences.py)
        batch_rows = max(s.batch_size // L, 1) * L
        gradients = self._accelerated_gradients if self._accelerated is not None else self._torch_gradients
        if self._accelerated is not None and data["allowed"].all():
            del data["allowed"]  # nothing masked in this update: the numpy path skips masking
        if self._accelerated is None:
            data = {k: torch.as_tensor(v, device=self.device) for k, v in data.items()}
        policy_losses, value_losses = [], []
        extra = StatsMean()  # auxiliary losses' and reward-signal models' stats
        # the signals' models train on the first epochs' mini-batches (all of them: ML-Agents)
        signal_epochs = s.reward_signal_num_epoch or s.num_epoch
        # with the towers on two threads, one BLAS thread each: BLAS's own second thread, which spins
        # a while after every product, would take the second tower's core
        one_thread = self._one_blas_thread or self._accelerated is not None and self._accelerated.second is not None
        with self._blas.limit(limits=1) if one_thread else contextlib.nullcontext():
            for epoch in range(s.num_epoch):
                order = sequence_order(n, L, self.rng)
                if self._accelerated is None:  # one index tensor, not one conversion per column
                    order = torch.as_tensor(order, device=self.device)
                shuffled = {k: v[order] for k, v in data.items()}  # one gather per epoch; mini-batches are slices
                for i in range(n // batch_rows):
                    rows = slice(i * batch_rows, (i + 1) * batch_rows)
                    batch = {k: v[rows] for k, v in shuffled.items()}
                    policy_loss, value_loss = gradients(batch, epsilon, beta, value_clip)
                    # auxiliary losses (behavioral cloning) add their gradients to PPO's before the step
                    extra.add(add_auxiliary_gradients(self.auxiliary_losses, self.policy, batch, self.step, self.device))
                    if self._numpy_adam is not None:
                        if s.max_grad_norm is not None:  # Stable-Baselines3's gradient clipping, when asked for
                            self._numpy_adam.clip_grad_norm(s.max_grad_norm)
                        self._numpy_adam.step()
                    else:
                        if s.max_grad_norm is not None:
                            nn.utils.clip_grad_norm_(self.policy.parameters(), s.max_grad_norm)
                        self.optimizer.step()
                    policy_losses.append(policy_loss)
                    value_losses.append(value_loss)
                    # reward signals with a model (curiosity, GAIL) learn on the same mini-batches
                    for signal in self._learning_signals if epoch < signal_epochs else ():
                        extra.add(signal.update(real_rows(_as_numpy(batch))))
        extra.add(finish_updates(self._learning_signals))  # (signals trained elsewhere come back here)
        self.buffer.clear()
        self.update_count += 1
        for policy_update in self.policy_updates:
            extra.add(policy_update.update(self.step))
        return stats | extra.means() | {
            "Losses/Policy Loss": float(np.mean(policy_losses)) if policy_losses else 0.0,
            "Losses/Value Loss": float(np.mean(value_losses)) if value_losses else 0.0,
            "Policy/Learning Rate": lr,
            "Policy/Epsilon": epsilon,
            "Policy/Beta": beta,
        }

    @torch.no_grad()
    def _decouple(self, data: dict[str, np.ndarray]) -> None:
        """Decoupled PPO (Hilton et al. 2021, "Batch size-invariance for policy optimization"), for
        experience partly collected with older weights (acting workers running ahead of the
        updates): the clip is centred on the *proximal* policy, the one this update starts from,
        rather than on the policy that acted, and each row is importance-weighted by
        pi_prox / pi_behavior (capped at WEIGHT_CAP). Since the weight is positive it folds into
        the advantage, so the loss code is unchanged. For rows collected by the very policy the update
        starts from, both changes vanish (the weight is 1 and the proximal log-probability is the
        stored one); normalizer updates since it acted make that policy a little different."""
        action = self.spec.action_spec
        total = len(data["log_prob"])
        step = max(self.sequence_length, NO_GRAD_ROWS // self.sequence_length * self.sequence_length)
        prox = np.empty(total, np.float32)
        for start in range(0, total, step):  # (a chunk at a time, whole sequences: see _current_values)
            t = {k: torch.as_tensor(v[start : start + step], device=self.device) for k, v in data.items()}
            prox[start : start + step] = self.policy.evaluate(
                observations(t),
                t["allowed"] if action.is_discrete else None,
                t["continuous"] if action.is_continuous else None,
                t["discrete"] if action.is_discrete else None,
                **self._sequences(t),
            ).log_prob.cpu().numpy()
        weight = np.minimum(np.exp(prox - data["log_prob"]), WEIGHT_CAP).astype(np.float32)
        data["log_prob"] = prox
        data["advantages"] = data["advantages"] * weight

    def _sequences(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """A recurrent policy's inputs besides the rows: each sequence's starting memory."""
        if not self.memory_size:
            return {}
        L = self.sequence_length
        return {"memory": batch["memory"][::L], "sequence_length": L}

    def _torch_gradients(self, batch: dict[str, torch.Tensor], epsilon: float, beta: float,
                         value_clip: float) -> tuple[float, float]:
        """The PPO loss of one mini-batch and its gradient (``.grad`` of every parameter)."""
        action = self.spec.action_spec
        out = self.policy.evaluate(
            observations(batch),
            batch["allowed"] if action.is_discrete else None,
            batch["continuous"] if action.is_continuous else None,
            batch["discrete"] if action.is_discrete else None,
            **self._sequences(batch),
        )
        loss, policy_loss, value_loss = ppo_loss(out.log_prob, out.entropy, out.values, batch, epsilon, beta,
                                                 value_clip)
        if self._numpy_adam is not None:
            self._numpy_adam.flat.zero_grad()  # one fill over the flat gradient buffer
        else:
            self.optimizer.zero_grad(set_to_none=False)  # in place: gradient buffers may be shared views
        loss.backward()
        return abs(float(policy_loss.detach())), float(value_loss.detach())

    def _accelerated_gradients(self, batch: dict[str, np.ndarray], epsilon: float, beta: float,
                               value_clip: float) -> tuple[float, float]:
        """The same on the CPU accelerator: its forward pass to the loss inputs, their gradient
        (``ppo_loss_gradients``), its backward pass into the parameters' ``.grad``."""
        net = self._accelerated
        log_prob, entropy, values, kept = net.evaluate(observations(batch), batch.get("allowed"),
                                                       batch["continuous"], batch["discrete"], **self._sequences(batch))
        grad_log_prob, grad_entropy, grad_values, policy_loss, value_loss = ppo_loss_gradients(
            log_prob, entropy, values, batch, epsilon, beta, value_clip)
        net.backward(grad_log_prob, grad_entropy, grad_values, kept)
        return abs(policy_loss), value_loss

    # -- checkpoints -------------------------------------------------------------------------
    def replay_state(self) -> None:
        return None  # on-policy: nothing outlives an update

    def load_replay_state(self, state: dict[str, Any]) -> int:
        raise NotImplementedError("PPO keeps no replay buffer (palaestra/capabilities.py)")

    def state_dict(self) -> dict[str, Any]:
        # segments waiting for their rewards get them first: the signals' state (the extrinsic
        # return scale's) then holds them, as it would had they been rewarded as they came
        self.episode_sums.settle(report_later=True)
        return {"policy": self.policy.state_dict(), **training_state(self)}

    def load_state_dict(self, state: dict[str, Any], weights_only: bool = False) -> None:
        self.policy.load_state_dict(state["policy"])
        if "signals" in state:  # (left out where the signals' models start afresh: trainer.py's restore)
            load_signals_state(self.signals, state["signals"])
        if not weights_only:
            load_training_state(self, state)
