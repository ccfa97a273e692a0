"""Soft Actor-Critic as ML-Agents' ``sac`` trainer trains it (Haarnoja et al. 2018).

Reading order: ``act`` (one batched forward pass per environment step), ``collect`` (finished
segments → transitions in the replay buffer), ``ready`` (the update cadence) and ``update``
(gradient steps on sampled mini-batches, ``_gradient_step`` top to bottom).
The details, named where they happen:
- twin Q networks, each with one output per reward signal, and their Polyak-averaged targets
  (``tau``), the twin-Q form of "Soft Actor-Critic Algorithms and Applications" (Haarnoja et
  al. 2018b), without ML-Agents 0.16's separate V network;
- continuous actions: a tanh-squashed Gaussian with a state-dependent log-std in [-20, 2];
  discrete actions: a masked categorical per branch, with Q(s, .) for every action and the
  soft value as an exact expectation over each branch (Christodoulou 2019); with several
  branches, Q(s, a) is the mean over branches of Q_b(s, a_b), as in ML-Agents;
- a learned entropy coefficient per branch (one for continuous actions), starting at
  ``init_entcoef``, with ML-Agents' target entropies: -(action size) for continuous actions and
  0.2 x log(branch size) per discrete branch;
- targets bootstrap through step-limit interruptions and not through true terminals;
- every loss is computed from the same parameters and stepped together, as ML-Agents' one
  TensorFlow update does; the actor's loss reads the critics with their weights detached;
- cadence: ``(step - buffer_init_steps) / steps_per_update`` updates in total, so ``--resume``
  continues the count exactly (ML-Agents 0.16's counter drifted after a resume, its issue 4062).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch
from threadpoolctl import ThreadpoolController
from torch import nn

from palaestra.algorithms.auxiliary import (AuxiliaryLoss, PolicyUpdate, StatsMean, add_auxiliary_gradients,
                                            update_in_numpy)
from palaestra.algorithms.training_state import load_training_state, training_state
from palaestra.algorithms.schedules import scheduled_learning_rate
from palaestra.rollout.sequences import into_sequences, real_rows, sequence_positions, sequence_segments
from palaestra.rollout.transitions import following_rows, terminal_rows
from palaestra.checkpoints import CheckpointError
from palaestra.envs.base import BehaviorSpec
from palaestra.networks.accelerator import accelerate, acting_network, plain_mlp, twin_layers
from palaestra.machine import blas_has_the_threads, blas_threads, image_towers_on_two_threads, second_tower_threads
from palaestra.networks.constants import LOG_STD_MAX, LOG_STD_MIN, MASKED_LOGIT, WIDE_NETWORK_UNITS
from palaestra.networks.flat_params import FlatParameters
from palaestra.networks.numpy_adam import NumpyAdam
from palaestra.networks.numpy_layers import (Stack, first_rows, log_softmax, squashed_gaussian, squashed_gaussian_grad,
                                             tower)
from palaestra.networks.optim import lean_adam_step, make_adam
from palaestra.networks.policy import TwinMLP
from palaestra.networks.sac_networks import SquashedActor, squashed_sample
from palaestra.networks.torch_acting import TorchActor
from palaestra.networks.two_threads import SecondThread, in_pairs
from palaestra.networks.recurrent import TwinLSTM, stored_memory_size
from palaestra.networks.visual import image_features, with_actions
from palaestra.rewards import (SignalEpisodeSums, drop_open_episodes, finish_updates, load_signals_state, make_signals,
                               take_reports)
from palaestra.rewards.base import SignalContext
from palaestra.rollout.buffers import (ReplayBuffer, column_parts, observation_columns, observations, replay_buffer_problem,
                                       replay_row_bytes)
from palaestra.rollout.segments import ActResult, Segments
from palaestra.settings import ConfigError, SACSettings

def _split_flat(flat: np.ndarray, shapes: tuple[tuple[int, ...], ...]) -> list[np.ndarray]:
    """Observations stored side by side ``[n, total]`` → one array per observation."""
    if sum(math.prod(shape) for shape in shapes) != flat.shape[1]:
        raise ValueError(f"observations of width {flat.shape[1]}, expected shapes {list(shapes)}")
    bounds = np.cumsum([0] + [math.prod(shape) for shape in shapes])
    return [flat[:, a:b].reshape(len(flat), *shape) for a, b, shape in zip(bounds[:-1], bounds[1:], shapes)]


DISCRETE_TARGET_ENTROPY_SCALE = 0.2  # ML-Agents: target entropy 0.2 x log(branch size)

logger = logging.getLogger("palaestra")


@dataclass
class SACBatch:
    """One mini-batch, as numpy arrays (``to_torch`` for torch)."""

    obs: list[np.ndarray]  # [B, *shape] per observation, raw (each path encodes and normalizes them)
    next_obs: list[np.ndarray]  # the same at s'
    continuous: np.ndarray  # [B, c] actions taken (squashed)
    discrete: np.ndarray  # [B, branches] int64
    allowed: np.ndarray  # [B, sum(branches)] bool
    next_allowed: np.ndarray  # [B, sum(branches)] bool
    rewards: np.ndarray  # [B, K] per-signal scaled rewards
    not_done: np.ndarray  # [B, K] 0 where the episode truly ended (signals using terminals)
    noise: np.ndarray  # [2B, c] standard normal noise for the actor at s and at s'
    # recurrent only (rollout/sequences.py): the actor's and the critics' memories at each
    # sequence's first row, and 1 for real rows, 0 for padding
    memory: np.ndarray | None = None
    critic_memory: np.ndarray | None = None
    valid: np.ndarray | None = None

    def to_torch(self, device: torch.device) -> SimpleNamespace:
        def tensors(v):
            if v is None:
                return None
            return [torch.as_tensor(o, device=device) for o in v] if isinstance(v, list) else torch.as_tensor(v, device=device)

        return SimpleNamespace(**{k: tensors(v) for k, v in vars(self).items()})


# -- SAC's losses, and beside each its gradient with respect to its inputs (numpy) for the
# accelerator (networks/accelerator.py) ---------------------------------------------------------
def q_losses(q: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each critic's 0.5 mean (Q - y)^2 over rows and signals; ``q`` [2, B, K]."""
    return 0.5 * (q[0] - y).pow(2).mean(), 0.5 * (q[1] - y).pow(2).mean()


def q_losses_grad(q, y):
    """d(q1_loss + q2_loss)/dq."""
    return (q - y) * (1.0 / (q.shape[1] * q.shape[2]))


def continuous_policy_loss(alpha: torch.Tensor, log_prob: torch.Tensor, q_pi: torch.Tensor) -> torch.Tensor:
    """The actor maximizes min-Q of its own (reparameterized) action minus alpha log pi;
    ``q_pi`` [2, B, K] the critics' values of that action."""
    return (alpha * log_prob - q_pi.min(0).values.mean(-1)).mean()


def continuous_policy_loss_grad(alpha, q_pi):
    """(d/d(q_pi), d/d(log_prob)): min() passes the gradient to the lower critic (tower 0 on ties)."""
    B, K = q_pi.shape[1], q_pi.shape[2]
    lower = q_pi[1] < q_pi[0]
    return np.stack([~lower, lower]).astype(np.float32) * (-1.0 / (B * K)), alpha / B


def discrete_policy_loss(alpha: torch.Tensor, log_p: torch.Tensor, q_min: torch.Tensor) -> torch.Tensor:
    """One branch's loss: mean over rows of sum_a p (alpha log p - Q) (``log_p`` its log-softmax,
    ``q_min`` [B, branch] the critics' constant view)."""
    return (log_p.exp() * (alpha * log_p - q_min)).sum(-1).mean()


def discrete_policy_loss_grad(alpha, log_p, q_min):
    """(the loss, d/d(logits)) of one branch: through the softmax, d/dz = p (g - E_p[g]) with
    g = alpha log p - Q."""
    p = np.exp(log_p)
    g = alpha * log_p - q_min
    expected = (p * g).sum(1, keepdims=True)
    B = log_p.shape[0]
    return expected.sum() * (1.0 / B), p * (g - expected) * (1.0 / B)


def alpha_loss(log_alpha: torch.Tensor, entropy_error: torch.Tensor) -> torch.Tensor:
    """Raise alpha while the policy's entropy is below its target (``entropy_error`` [B, terms],
    log pi + target entropy, constant)."""
    return -(log_alpha * entropy_error).mean()


def alpha_loss_grad(entropy_error):
    """d/d(log_alpha); sums times 1/n (ndarray.mean costs several microseconds of Python)."""
    return entropy_error.sum(0) * (-1.0 / (entropy_error.shape[0] * entropy_error.shape[1]))


class SAC:
    memory_size = 0  # no recurrent policies (capabilities.py)

    def __init__(self, spec: BehaviorSpec, settings: SACSettings, device: torch.device,
                 rng: np.random.Generator | None = None, behavior: str = "the behavior") -> None:
        action = spec.action_spec
        if action.is_continuous and action.is_discrete:
            raise ValueError("SAC takes continuous or discrete actions, not both")
        self.spec = spec
        self.settings = settings
        self.device = device
        self.rng = rng or np.random.default_rng()
        self.signals = make_signals(spec, settings.reward_signals, device,
                                    SignalContext(settings.vis_encode_type, behavior, settings.normalize))
        self._learning_signals = [signal for signal in self.signals if signal.learns]
        self.auxiliary_losses: list[AuxiliaryLoss] = []  # extra loss terms of each gradient step
        self.policy_updates: list[PolicyUpdate] = []  # run after each update (behavioral cloning)
        K = len(self.signals)
        memory = settings.memory_size if settings.use_recurrent else None
        self.policy = SquashedActor(spec, settings.hidden_units, settings.num_layers, settings.normalize,
                                    settings.vis_encode_type, memory).to(device)
        self.memory_size = self.policy.memory_size  # the actor's, per agent, kept by the collector
        # recurrent: gradient steps on sequences of this many rows (rollout/sequences.py)
        self.sequence_length = settings.sequence_length if memory else 1
        self.continuous = action.is_continuous
        self.branches = list(action.discrete_branches)
        self.offsets = np.cumsum([0] + self.branches[:-1]).tolist()
        # The critics read the actor's normalized vector features and, where there are images,
        # their own encodings of them (one encoder per critic; None without images). The actor
        # reads the first critic's encoding with its gradient stopped (Yarats et al. 2019, SAC-AE:
        # the actor's loss, free to scale its logits through the encoder, blew a resnet encoder's
        # features up to thousands within 100 gradient steps and left the policy saturated on the
        # wrong action; docs/algorithms.md). Its own encoder is a copy, refreshed after each step,
        # which acting and the exported model use.
        self.critic_images = image_features(spec.observation_shapes, settings.vis_encode_type,
                                            settings.hidden_units, towers=2)
        if self.critic_images is not None:
            self.critic_images.towers[0].load_state_dict(self.policy.images.towers[0].state_dict())
        observation_features = self.policy.obs_size + (self.critic_images.size if self.critic_images is not None else 0)
        # recurrent: each critic's own LSTM over those features, its memory recorded as experience
        # arrives (collect); the Q layers read its output and the action
        self.critic_lstm = TwinLSTM(observation_features, memory).to(device) if memory else None
        critic_inputs = (self.critic_lstm.units if memory else observation_features) + action.continuous_size
        critic_outputs = K if self.continuous else K * sum(self.branches)
        self.critic = TwinMLP(critic_inputs, settings.hidden_units, settings.num_layers, "swish", critic_outputs).to(device)
        self.target = copy.deepcopy(self.critic).requires_grad_(False)
        critic_modules: list[nn.Module] = [self.critic]
        target_modules: list[nn.Module] = [self.target]
        self.target_images = self.target_lstm = None
        if self.critic_images is not None:
            self.critic_images.to(device)
            self.target_images = copy.deepcopy(self.critic_images).requires_grad_(False)
            critic_modules.insert(0, self.critic_images)
            target_modules.insert(0, self.target_images)
        if self.critic_lstm is not None:
            self.target_lstm = copy.deepcopy(self.critic_lstm).requires_grad_(False)
            critic_modules.insert(0, self.critic_lstm)
            target_modules.insert(0, self.target_lstm)
        # each agent's (collector slot's) critic memory after the experience collected so far
        self._critic_memory = np.zeros((0, stored_memory_size(memory) if memory else 0), np.float32)
        entropy_terms = 1 if self.continuous else len(self.branches)
        self.log_alpha = nn.Parameter(torch.full((entropy_terms,), math.log(settings.init_entcoef), device=device))
        # Actor, critics and entropy coefficients in one flat buffer (networks/flat_params.py):
        # one Adam over it is ML-Agents' three optimizers (all at learning_rate; Adam is
        # per-parameter) stepped at once, and the critics are one slice for the Polyak average.
        actor_params = list(self.policy.parameters())
        critic_params = [p for module in critic_modules for p in module.parameters()]
        self.flat = FlatParameters([*actor_params, *critic_params, self.log_alpha])
        self.critic_span = self.flat.span(len(actor_params), len(critic_params))
        self._shared_images = self._encoder_spans(actor_params, critic_params)
        self.target_flat = FlatParameters([p for module in target_modules for p in module.parameters()],
                                          with_grad=False)
        # acting: a plain MLP on the CPU in numpy over the same (flattened) memory
        # (networks/accelerator.py), a recurrent one in numpy too (acting_network), any other
        # network with the module itself (networks/torch_acting.py)
        self._network = accelerate(self.policy, self.rng)
        self._actor = self._network or acting_network(self.policy, self.rng) or TorchActor(self.policy)
        target_entropy = ([-float(action.continuous_size)] if self.continuous else
                          [DISCRETE_TARGET_ENTROPY_SCALE * math.log(b) for b in self.branches])
        self.target_entropy = torch.tensor(target_entropy, device=device)
        self.gammas = torch.tensor([s.gamma for s in self.signals], device=device)
        self._uses_terminal = np.array([float(s.uses_terminal) for s in self.signals], np.float32)
        self.optimizer = make_adam([self.flat.parameter], settings.learning_rate, settings.adam_epsilon)
        # Plain MLPs on the CPU train without autograd, on the accelerator's numpy layers with a
        # numpy Adam over the same flat buffer (networks/accelerator.py; _autograd_gradients is
        # their reference). Wide ones need numpy's BLAS on every core for that (1.14x faster than
        # autograd on torch's; docs/benchmarks.md): the run gives it those unless a behavior
        # trains in torch (palaestra/machine.py), which the first update checks (_choose_path), as
        # it checks whether image encoders train two at once. Other networks and devices train on
        # autograd.
        self._accelerated = self._network is not None and plain_mlp(self.critic)
        widths = [m.out_features for m in self.policy.body if isinstance(m, nn.Linear)]
        self._path_chosen = max(widths, default=0) < WIDE_NETWORK_UNITS and self.critic_images is None
        self._numpy_adam = None
        self._towers: tuple[list[Stack], list[Stack]] | None = None  # _choose_path: the critics, one per thread
        self._second: SecondThread | None = None
        if self._accelerated:
            self._accelerate()
            self._numpy_adam = NumpyAdam([self.flat.parameter], self.optimizer, flat=self.flat)
        L = self.sequence_length  # recurrent: whole sequences in the ring, never split at its end
        capacity = -(-settings.buffer_size // L) * L
        # (its observations alone: the rest of a row is small beside them)
        problem = replay_buffer_problem(capacity, replay_row_bytes(spec.observation_shapes, settings.time_horizon))
        if problem is not None:
            raise ConfigError(f"behavior {behavior!r}: buffer_size {settings.buffer_size:,} "
                              f"({settings.origin('buffer_size')}): SAC's replay buffer of {problem}; lower buffer_size")
        self.buffer = ReplayBuffer(capacity)
        self.episode_sums = SignalEpisodeSums(self.signals)
        self.step = 0  # agent steps collected, ML-Agents' trainer step
        self.update_count = 0  # gradient steps taken
        self.signal_update_count = 0  # reward-signal model updates taken (their own cadence)

    @property
    def trains_in_numpy(self) -> bool:
        return update_in_numpy(self._accelerated, self.signals, self.auxiliary_losses, self.policy_updates)

    # -- acting ------------------------------------------------------------------------------
    def act(self, observations: list[np.ndarray], allowed: np.ndarray | None, deterministic: bool = False,
            memory: np.ndarray | None = None) -> ActResult:
        return self._actor.act(observations, allowed, deterministic, memory=memory)

    # -- experience --------------------------------------------------------------------------
    def drop_open_episodes(self, every: int = 1, offset: int = 0) -> None:
        self.episode_sums.clear(every, offset)
        drop_open_episodes(self.signals, every, offset)
        self._critic_memory[offset::every] = 0.0  # the critics' LSTMs start the next episodes from zeros too

    def collect(self, seg: Segments) -> dict[str, list[float]]:
        """Turn finished segments into transitions in the replay buffer."""
        mask = seg.row_mask
        obs = [o[mask] for o in seg.observations]
        if self.policy.normalizer is not None:  # over the vector observations side by side
            self.policy.normalizer.update(self.policy.encoder(obs))
        next_obs = [following_rows(o, after, seg.length)[mask] for o, after in zip(seg.observations, seg.next_observations)]
        next_allowed = following_rows(seg.allowed, seg.next_allowed, seg.length, fill=True)
        done = terminal_rows(seg.length, seg.terminal, seg.width)
        columns = dict(
            **observation_columns(obs), **observation_columns(next_obs, "next_obs"), continuous=seg.continuous[mask],
            discrete=seg.discrete[mask], allowed=seg.allowed[mask], next_allowed=next_allowed[mask],
            env_reward=seg.env_reward[mask], done=done[mask],
        )
        if self.memory_size:  # recurrent: sequences, each with its actor's and critics' starting memories
            positions, rows = sequence_positions(mask, self.sequence_length)
            columns = into_sequences(columns | {"memory": seg.memory[mask]}, positions, rows)
            columns["critic_memory"] = self._critic_memories(seg, mask, columns)
        self.buffer.add(**columns)
        self.step += int(seg.length.sum())
        return self.episode_sums.add(seg, [signal.rewards(seg) for signal in self.signals])

    @torch.no_grad()
    def _critic_memories(self, seg: Segments, mask: np.ndarray, columns: dict[str, np.ndarray]) -> np.ndarray:
        """The critics' memory at the start of each new sequence (zeros on the other rows): their
        LSTMs run over each segment, from where the agent's previous segment left them (zeros
        at an episode's start), as ML-Agents records its critics' memories."""
        L = self.sequence_length
        segment, chunk = sequence_segments(mask, L)
        n = len(segment)
        obs = [torch.as_tensor(o, device=self.device) for o in observations(columns)]
        features = self._critic_features(self.policy.vectors(obs), obs, self.critic_images)
        features = features.reshape(2, n, L, features.shape[-1])
        lengths = torch.as_tensor(columns["valid"].reshape(n, L).sum(1), dtype=torch.int64)
        slots = seg.slot
        if len(self._critic_memory) <= slots.max():
            grown = np.zeros((max(2 * len(self._critic_memory), slots.max() + 1), self._critic_memory.shape[1]), np.float32)
            grown[: len(self._critic_memory)] = self._critic_memory
            self._critic_memory = grown
        state = torch.as_tensor(self._critic_memory[slots], device=self.device)
        start = torch.zeros(n, state.shape[1], device=self.device)
        for k in range(int(chunk.max()) + 1):  # each segment's k-th sequence continues its (k-1)-th
            which = np.nonzero(chunk == k)[0]
            start[which] = state[segment[which]]
            state[segment[which]] = self.critic_lstm.final_memory(features[:, which], start[which], lengths[which])
        ends = state.cpu().numpy()
        ends[seg.episode_end] = 0.0  # the agent's next episode starts from zeros
        self._critic_memory[slots] = ends
        memory = np.zeros((n * L, state.shape[1]), np.float32)
        memory[::L] = start.cpu().numpy()
        return memory

    @staticmethod
    def _critic_features(vectors: torch.Tensor, obs: list[torch.Tensor], images: nn.Module | None) -> torch.Tensor:
        """What the critics read of the observations: ``[2, B, F]``, one view per critic."""
        if images is None:
            return vectors.unsqueeze(0).expand(2, *vectors.shape)
        return images(vectors, obs)

    # -- learning ----------------------------------------------------------------------------
    def _updates_due(self, steps_per_update: float | None = None) -> int:
        s = self.settings
        return int((self.step - s.buffer_init_steps) / (steps_per_update or s.steps_per_update))

    @property
    def experiences(self) -> int:
        """Transitions the next update samples from (the replay buffer's)."""
        return self.buffer.size

    def ready(self) -> bool:
        return (self.buffer.size >= self.settings.batch_size and self.step >= self.settings.buffer_init_steps
                and self.update_count < self._updates_due())

    def current_learning_rate(self) -> float:
        return scheduled_learning_rate(self.settings, self.step)

    def stats_still_due(self) -> dict[str, float]:
        return take_reports(self._learning_signals)

    def _choose_path(self) -> None:
        """A wide network keeps the accelerator only where numpy's BLAS got the training threads;
        on one BLAS thread beside torch's several, autograd is faster (docs/benchmarks.md). With
        two BLAS threads, the twin critics train one per thread instead
        (networks/two_threads.py: steady whichever way the cores share their caches)."""
        if self._accelerated and not blas_has_the_threads():
            self._numpy_adam.sync()  # the torch optimizer takes over the moments and the step count
            self._accelerated, self._numpy_adam = False, None
        if self._accelerated and blas_threads() == 2:
            self._critics_on_two_threads()
        if self.critic_images is not None and image_towers_on_two_threads():
            self.critic_images.on_two_threads(second_tower_threads())  # the two critics' images at once
            self.target_images.on_two_threads(second_tower_threads())  # (networks/visual.py)
        self._path_chosen = True

    def _critics_on_two_threads(self) -> None:
        self._towers = ([tower(self._critic_layers, i) for i in (0, 1)],
                        [tower(self._target_layers, i) for i in (0, 1)])
        self._second = SecondThread()
        self._blas = ThreadpoolController().select(user_api="blas")

    def update(self) -> dict[str, Any]:
        """The gradient steps the cadence asks for since the last call; their mean losses."""
        if not self._path_chosen:
            self._choose_path()
        lr = self.current_learning_rate()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        totals: dict[str, torch.Tensor] = {}
        extra = StatsMean()  # auxiliary losses' and reward-signal models' stats
        steps = 0
        # with the critics on two threads, one BLAS thread each: BLAS's own second thread, which
        # spins a while after every product, would take the second critic's core
        with self._blas.limit(limits=1) if self._towers is not None else contextlib.nullcontext():
            while self.update_count < self._updates_due():
                batch = self._sample()
                for key, value in self._gradient_step(batch, extra).items():
                    totals[key] = totals[key] + value if key in totals else value
                self.update_count += 1
                steps += 1
                for policy_update in self.policy_updates:  # after each gradient step, as ML-Agents' BC
                    extra.add(policy_update.update(self.step))
                if self.policy_updates:  # their optimizers step every policy parameter, the encoder copy too
                    self._share_encoder()
        # reward signals with a model (curiosity, GAIL) learn on their own cadence
        # (reward_signal_steps_per_update, by default steps_per_update), on their own samples
        signal_updates_due = self._updates_due(self.settings.reward_signal_steps_per_update)
        while self._learning_signals and self.signal_update_count < signal_updates_due:
            batch = real_rows(self._sample())
            for signal in self._learning_signals:
                extra.add(signal.update(batch))
            self.signal_update_count += 1
        extra.add(finish_updates(self._learning_signals))
        stats: dict[str, Any] = {}
        if steps:  # one conversion per update call, not per gradient step (a device sync on GPUs)
            q_estimate = (totals.pop("q_estimate") / steps).tolist()
            stats = {k: float(v) / steps for k, v in totals.items()}
            for signal, value in zip(self.signals, q_estimate):
                stats[f"Policy/{signal.stat_name} Value Estimate"] = value
            # ML-Agents' SAC reports its critics' total as the value loss (Q1 + Q2 + its V network's,
            # which this SAC has not): the curve its users look for, from the losses there are
            stats["Losses/Value Loss"] = stats["Losses/Q1 Loss"] + stats["Losses/Q2 Loss"]
        stats |= extra.means()
        stats["Policy/Learning Rate"] = lr
        stats["Policy/Entropy Coeff"] = float(self.log_alpha.detach().exp().mean())
        return stats

    def _sample(self) -> dict[str, np.ndarray]:
        """A mini-batch of ``batch_size`` rows: transitions, or (recurrent) whole sequences."""
        L = self.sequence_length
        if L == 1:
            return self.buffer.sample(self.settings.batch_size, self.rng)
        return self.buffer.sample_sequences(max(self.settings.batch_size // L, 1), L, self.rng)

    def _gradient_step(self, batch: dict[str, np.ndarray], extra: StatsMean) -> dict[str, Any]:
        t = self._prepare(batch)
        stats = self._accelerated_gradients(t) if self._accelerated else self._autograd_gradients(t)
        # auxiliary losses (behavioral cloning) add their gradients to SAC's before the step
        extra.add(add_auxiliary_gradients(self.auxiliary_losses, self.policy, batch, self.step, self.device))
        if self._numpy_adam is not None:
            self._numpy_adam.step()
        else:
            lean_adam_step(self.optimizer)
        # Polyak averaging of the target critics: target <- (1 - tau) target + tau critic
        self.target_flat.data.lerp_(self.flat.data[self.critic_span], self.settings.tau)
        self._share_encoder()
        return stats

    def _share_encoder(self) -> None:
        """Make the actor's image encoders the first critic's again, as trained (acting and the
        exported model read the actor's copy)."""
        if self._shared_images is not None:
            actor_span, critic_span = self._shared_images
            self.flat.data[actor_span] = self.flat.data[critic_span]

    def _encoder_spans(self, actor_params: list[nn.Parameter], critic_params: list[nn.Parameter]
                       ) -> tuple[slice, slice] | None:
        """The flat buffer's ranges of the actor's image encoders and of the first critic's
        (the same layers in the same order), or None without images."""
        if self.critic_images is None:
            return None
        own = list(self.policy.images.parameters())
        first = list(self.critic_images.towers[0].parameters())
        actor_at = next(i for i, p in enumerate(actor_params) if p is own[0])
        critic_at = len(actor_params) + next(i for i, p in enumerate(critic_params) if p is first[0])
        return self.flat.span(actor_at, len(own)), self.flat.span(critic_at, len(first))

    def _prepare(self, batch: dict[str, np.ndarray]) -> SACBatch:
        rewards = np.stack([signal.rewards_for_batch(batch) for signal in self.signals], 1).astype(np.float32)
        return SACBatch(
            obs=observations(batch),
            next_obs=observations(batch, "next_obs"),
            continuous=batch["continuous"],
            discrete=batch["discrete"].astype(np.int64, copy=False),
            allowed=batch["allowed"],
            next_allowed=batch["next_allowed"],
            rewards=rewards,  # [B, K]
            # Bootstrap unless the episode truly ended (for signals that use terminal states).
            not_done=1.0 - batch["done"].astype(np.float32)[:, None] * self._uses_terminal,
            noise=self.rng.standard_normal((2 * len(rewards), self.spec.action_spec.continuous_size),
                                           dtype=np.float32),
            memory=batch.get("memory"),
            critic_memory=batch.get("critic_memory"),
            valid=batch.get("valid"),
        )

    def _autograd_gradients(self, batch: SACBatch) -> dict[str, torch.Tensor]:
        """The SAC losses through autograd: what trains networks the accelerator does not run, and
        the reference of ``_accelerated_gradients`` (the tests compare the two); sets ``.grad``,
        returns the loss stats."""
        t = batch.to_torch(self.device)
        h, h_next, critic_in, target_next, t = (self._sequence_features if self.memory_size else self._row_features)(t)
        B = h.shape[0]
        alpha = self.log_alpha.detach().exp()
        if self.continuous:
            mean, log_std = self.policy.gaussian_params(h)
            a_pi, logp_pi = squashed_sample(mean, log_std, t.noise[:B])
            with torch.no_grad():  # the soft target: min of the target critics minus alpha log pi
                a_next, logp_next = squashed_sample(*self.policy.gaussian_params(h_next), t.noise[B:])
                q_next = self.target(with_actions(target_next, a_next)).min(0).values  # [B, K]
                y = t.rewards + self.gammas * t.not_done * (q_next - alpha * logp_next[:, None])
            q = self.critic(with_actions(critic_in, t.continuous))  # [2, B, K]
            q_pi = self.critic(with_actions(critic_in.detach(), a_pi), detached=True)
            policy_loss = continuous_policy_loss(alpha[0], logp_pi, q_pi)
            entropy_error = (logp_pi.detach() + self.target_entropy[0])[:, None]  # [B, 1]
        else:
            K, A = len(self.signals), sum(self.branches)
            logits = self.policy.masked_logits(h, t.allowed)
            q_all = self.critic(critic_in).view(2, B, K, A)
            with torch.no_grad():
                logits_next = self.policy.masked_logits(h_next, t.next_allowed)
                q_next = self.target(target_next).view(2, B, K, A).min(0).values  # [B, K, A]
            q_min = q_all.detach().min(0).values.mean(1)  # [B, A], the actor's view of the critics
            v_next = 0.0
            q_taken = 0.0
            policy_loss = 0.0
            entropy_error = []
            for b, (start, size) in enumerate(zip(self.offsets, self.branches)):
                cols = slice(start, start + size)
                logp = torch.log_softmax(logits[:, cols], -1)
                with torch.no_grad():
                    logp_next = torch.log_softmax(logits_next[:, cols], -1)
                    p_next = logp_next.exp()
                # soft value of s' per signal: E_a~pi [min Q_target(s', a) - alpha log pi(a|s')]
                v_next = v_next + (p_next[:, None, :] * (q_next[..., cols] - alpha[b] * logp_next[:, None, :])).sum(-1)
                action = t.discrete[:, b]
                q_taken = q_taken + q_all[..., cols].gather(-1, action.view(1, B, 1, 1).expand(2, B, K, 1))[..., 0]
                policy_loss = policy_loss + discrete_policy_loss(alpha[b], logp, q_min[:, cols])
                entropy_error.append((logp.exp() * logp).sum(-1).detach() + self.target_entropy[b])
            n = len(self.branches)
            with torch.no_grad():
                y = t.rewards + self.gammas * t.not_done * (v_next / n)
            q = q_taken / n  # [2, B, K]
            policy_loss = policy_loss / n
            entropy_error = torch.stack(entropy_error, 1)  # [B, branches]

        q1_loss, q2_loss = q_losses(q, y)
        self.flat.zero_grad()
        (q1_loss + q2_loss + policy_loss + alpha_loss(self.log_alpha, entropy_error)).backward()
        return {"Losses/Q1 Loss": q1_loss.detach(), "Losses/Q2 Loss": q2_loss.detach(),
                "Losses/Policy Loss": policy_loss.detach(), "q_estimate": q.detach().min(0).values.mean(0)}

    def _row_features(self, t: SimpleNamespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                          SimpleNamespace]:
        """Per row: the actor's features at s (trained) and at s' (constant), the critics' input
        at s ([B, F], or with images [2, B, F]: each critic's own) and the target critics' at s'."""
        with torch.no_grad():
            x, x_next = self.policy.vectors(t.obs), self.policy.vectors(t.next_obs)
            # the actor at s' and the target critics only feed the (constant) target
            h_next = self.policy.body(self.policy.features(x_next, t.next_obs))
            target_next = x_next if self.target_images is None else self.target_images(x_next, t.next_obs)
        if self.critic_images is None:
            critic_in = x
            h = self.policy.body(x)
        else:
            critic_in = self.critic_images(x, t.obs)
            h = self.policy.body(critic_in[0].detach())  # the first critic's view, no actor gradient
        return h, h_next, critic_in, target_next, t

    def _sequence_features(self, t: SimpleNamespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                               SimpleNamespace]:
        """The same for a recurrent SAC, over N sequences of L rows, each LSTM from the memory
        stored at its sequence's start; only real rows are returned (with the batch's columns cut
        to them). The features at s' come from the same pass: the LSTM runs over the sequence's
        rows followed by the next observation of its last real row, so row t's s' is position t + 1."""
        L = self.sequence_length
        B = t.valid.shape[0]
        N = B // L
        length = t.valid.view(N, L).sum(1).long()
        last = torch.arange(N, device=self.device) * L + length - 1  # each sequence's last real row

        def extended(now: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
            """[T, B, F] at s and at s' → [T, N, L + 1, F]: the rows, then s' of the last real one."""
            T, F = now.shape[0], now.shape[-1]
            out = torch.cat([now.reshape(T, N, L, F), now.new_zeros(T, N, 1, F)], 2)
            out[:, torch.arange(N, device=self.device), length] = after[:, last]
            return out

        with torch.no_grad():
            x, x_next = self.policy.vectors(t.obs), self.policy.vectors(t.next_obs)
            body_next = self.policy.body(self.policy.features(x_next, t.next_obs))
            target_in = extended(self._critic_features(x, t.obs, self.target_images),
                                 self._critic_features(x_next, t.next_obs, self.target_images))
            target_next = self.target_lstm(target_in, t.critic_memory[::L])[0][:, :, 1:]  # [2, N, L, u]
        critic_in = self._critic_features(x, t.obs, self.critic_images)
        # with images, the first critic's view without the actor's gradient (as _row_features)
        body = self.policy.body(x if self.critic_images is None else critic_in[0].detach())
        actor, _ = self.policy.lstm(extended(body[None], body_next[None]), t.memory[::L])  # [1, N, L + 1, u]
        critic, _ = self.critic_lstm(critic_in.reshape(2, N, L, -1), t.critic_memory[::L])
        real = t.valid > 0
        rows = SimpleNamespace(**vars(t))
        for name in ("rewards", "not_done", "continuous", "discrete", "allowed", "next_allowed"):
            setattr(rows, name, getattr(t, name)[real])
        rows.noise = torch.cat([t.noise[:B][real], t.noise[B:][real]])
        u = actor.shape[-1]
        return (actor[0, :, :L].reshape(B, u)[real], actor[0, :, 1:].reshape(B, u)[real].detach(),
                critic.reshape(2, B, u)[:, real], target_next.reshape(2, B, u)[:, real], rows)

    # -- the same on the accelerator ---------------------------------------------------------
    def _accelerate(self) -> None:
        """Train on the accelerator's numpy layers, over views of the (flat) parameters and gradients."""
        self._critic_layers, self._target_layers = twin_layers(self.critic), twin_layers(self.target)
        self._views = SimpleNamespace(log_alpha=self.log_alpha.detach().numpy(),
                                      grad_log_alpha=self.log_alpha.grad.numpy(),
                                      target_entropy=self.target_entropy.numpy(), gammas=self.gammas.numpy())

    def _accelerated_gradients(self, t: SACBatch) -> dict[str, Any]:
        """``_autograd_gradients`` without autograd: the forward passes, each loss's input gradient
        (the ``*_grad`` functions above) and the layers' backward passes; every product is issued
        once, and the critic pass that only serves the actor's loss computes no weight gradients."""
        with torch.no_grad():
            return (self._accelerated_continuous if self.continuous else self._accelerated_discrete)(t)

    def _accelerated_continuous(self, t: SACBatch) -> dict[str, Any]:
        actor, v = self._network, self._views
        x, x_next = actor.encode(t.obs), actor.encode(t.next_obs)
        B, c = x.shape[0], self.spec.action_spec.continuous_size
        alpha = np.exp(v.log_alpha)
        # the actor at s (rows :B, kept for its backward pass) and at s' (rows B:, for the target
        # only), in one pass
        trunk_cache: list = []
        head_cache: list = []
        out_both = actor.squashed.forward(actor.trunk.forward(np.concatenate([x, x_next]), trunk_cache), head_cache)
        trunk_cache, head_cache = first_rows(trunk_cache, B), first_rows(head_cache, B)
        out, out_next = out_both[:B], out_both[B:]
        raw_log_std = out[:, c:]
        eps = t.noise[:B]
        a_pi, logp_pi, std = squashed_gaussian(out[:, :c], np.clip(raw_log_std, LOG_STD_MIN, LOG_STD_MAX), eps)
        a_next, logp_next, _ = squashed_gaussian(out_next[:, :c], np.clip(out_next[:, c:], LOG_STD_MIN, LOG_STD_MAX),
                                                 t.noise[B:])
        # One pass of the critics over 2B rows serves both losses: at (s, a) for the critics' own
        # loss (rows :B, the only rows that train them) and at (s, pi(s)) for the actor's, through
        # the critics as constants to the action (rows B:). Larger products, half the calls.
        critic_in = np.concatenate([np.concatenate([x, t.continuous], 1), np.concatenate([x, a_pi], 1)])

        def losses(q_next, q_both):  # [2, B, K] and [2, 2B, K] -> d/d(q_both), and what the actor needs
            y = t.rewards + v.gammas * t.not_done * (q_next.min(0) - alpha * logp_next[:, None])
            q, q_pi = q_both[:, :B], q_both[:, B:]
            grad_q_pi, grad_logp = continuous_policy_loss_grad(alpha, q_pi)
            return np.concatenate([q_losses_grad(q, y), grad_q_pi], 1), (q, q_pi, y, grad_logp)

        grad_in, (q, q_pi, y, grad_logp) = self._critic_passes(np.concatenate([x_next, a_next], 1), critic_in, losses,
                                                               weight_rows=B, input_grad=True)
        grad_a = grad_in[B:, -c:]
        # the actor's loss on to the squash and the actor
        grad_mean, grad_log_std = squashed_gaussian_grad(grad_a, grad_logp, a_pi, std, eps)
        grad_log_std = grad_log_std * ((raw_log_std >= LOG_STD_MIN) & (raw_log_std <= LOG_STD_MAX))  # the clamp
        grad_h = actor.squashed.backward(np.concatenate([grad_mean, grad_log_std], 1), head_cache[0])
        actor.trunk.backward(grad_h, trunk_cache)
        v.grad_log_alpha[:] = alpha_loss_grad((logp_pi + v.target_entropy[0])[:, None])
        K = q.shape[2]
        policy_loss = (alpha[0] * logp_pi - q_pi.min(0).sum(1) * (1.0 / K)).sum() * (1.0 / B)
        return self._accelerated_stats(q, y, policy_loss)

    def _critic_passes(self, target_in: np.ndarray, critic_in: np.ndarray, losses: Callable,
                       weight_rows: int | None = None, input_grad: bool = False) -> tuple[np.ndarray | None, Any]:
        """The target critics forward at ``target_in``, the critics forward and back over
        ``critic_in``, with ``losses(q_next, q)`` -> (the gradient of ``q``, what it keeps) in
        between; returns (d/d(critic_in) summed over both critics where ``input_grad``, and what
        ``losses`` kept); ``weight_rows`` as ``Dense.backward``. Each critic on its own thread where
        two BLAS threads were given (``_choose_path``, networks/two_threads.py); the same
        arithmetic either way."""
        if self._towers is None:
            cache: list = []
            q_next = self._target_layers.forward(target_in)
            q = self._critic_layers.forward(critic_in, cache)
            grad, kept = losses(q_next, q)
            return self._critic_layers.backward(grad, cache, weight_rows, input_grad), kept
        critics, targets = self._towers
        caches: tuple[list, list] = ([], [])
        ahead = in_pairs(self._second, lambda i: (targets[i].forward(target_in),
                                                  critics[i].forward(critic_in, caches[i])))
        grad, kept = losses(np.stack([ahead[0][0], ahead[1][0]]), np.stack([ahead[0][1], ahead[1][1]]))
        back = in_pairs(self._second, lambda i: critics[i].backward(grad[i], caches[i], weight_rows, input_grad))
        return (back[0] + back[1] if input_grad else None), kept

    def _accelerated_discrete(self, t: SACBatch) -> dict[str, Any]:
        actor, v = self._network, self._views
        x, x_next = actor.encode(t.obs), actor.encode(t.next_obs)
        B, n, A = x.shape[0], len(self.branches), sum(self.branches)
        alpha = np.exp(v.log_alpha)
        trunk_cache: list = []
        head_cache: list = []
        logits = np.where(t.allowed, actor.logits.forward(actor.trunk.forward(x, trunk_cache), head_cache),
                          MASKED_LOGIT)
        logits_next = np.where(t.next_allowed, actor.logits.forward(actor.trunk.forward(x_next)), MASKED_LOGIT)
        grad_logits = np.empty(logits.shape, np.float32)
        entropy_error = np.empty((B, n), np.float32)

        def losses(q_next_all, q_all):  # [2, B, K * A] each -> d/d(q_all), and what the rest needs
            K = q_all.shape[2] // A
            q_all4 = q_all.reshape(2, B, K, A)
            q_next = q_next_all.reshape(2, B, K, A).min(0)  # [B, K, A]
            q_min = q_all4.min(0).sum(1) * (1.0 / K)  # [B, A]: the actor's (constant) view of the critics
            v_next = np.zeros(t.rewards.shape, np.float32)
            q_taken = np.zeros((2, B, K), np.float32)
            policy_loss = 0.0
            rows = np.arange(B)
            taken = []
            for br, (start, size) in enumerate(zip(self.offsets, self.branches)):
                cols = slice(start, start + size)
                logp = log_softmax(logits[:, cols])
                logp_next = log_softmax(logits_next[:, cols])
                v_next += (np.exp(logp_next)[:, None, :] * (q_next[..., cols] - alpha[br] * logp_next[:, None, :])
                           ).sum(-1)
                index = t.discrete[:, br] + start
                taken.append(index)
                q_taken += q_all4[:, rows, :, index].swapaxes(0, 1)  # the indexing puts B first
                loss, grad = discrete_policy_loss_grad(alpha[br], logp, q_min[:, cols])
                policy_loss = policy_loss + loss
                grad_logits[:, cols] = grad * (1.0 / n)
                entropy_error[:, br] = (np.exp(logp) * logp).sum(1) + v.target_entropy[br]
            y = t.rewards + v.gammas * t.not_done * (v_next / n)
            q = q_taken / n  # [2, B, K]
            # q is the mean over branches of each taken column: each receives 1/n of q's gradient
            grad_q_all = np.zeros(q_all4.shape, np.float32)
            share = (q_losses_grad(q, y) * (1.0 / n)).swapaxes(0, 1)  # [B, 2, K], as the indexing
            for index in taken:  # branches' columns are disjoint
                grad_q_all[:, rows, :, index] = share
            return grad_q_all.reshape(2, B, K * A), (q, y, policy_loss)

        _, (q, y, policy_loss) = self._critic_passes(x_next, x, losses)
        grad_logits[~t.allowed] = 0.0
        actor.trunk.backward(actor.logits.backward(grad_logits, head_cache[0]), trunk_cache)
        v.grad_log_alpha[:] = alpha_loss_grad(entropy_error)
        return self._accelerated_stats(q, y, policy_loss / n)

    @staticmethod
    def _accelerated_stats(q, y, policy_loss) -> dict[str, Any]:
        error = q - y
        squared = (error * error).sum((1, 2)) * (0.5 / (error.shape[1] * error.shape[2]))
        return {"Losses/Q1 Loss": squared[0], "Losses/Q2 Loss": squared[1], "Losses/Policy Loss": policy_loss,
                "q_estimate": q.min(0).sum(0) * (1.0 / q.shape[1])}

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "policy": self.policy.state_dict(),
            "critic": self.critic.state_dict(),
            "target": self.target.state_dict(),
            **self._extra_critics_state(),
            "log_alpha": self.log_alpha.detach().clone(),
            **training_state(self),
        }
        if self._learning_signals:
            state["signal_update_count"] = self.signal_update_count
        state["update_pace"] = self._update_pace()
        return state

    def _update_pace(self) -> dict[str, float | None]:
        """The settings the update counters are counted by (:meth:`_updates_due`)."""
        s = self.settings
        return {"buffer_init_steps": s.buffer_init_steps, "steps_per_update": s.steps_per_update,
                "reward_signal_steps_per_update": s.reward_signal_steps_per_update}

    def load_state_dict(self, state: dict[str, Any], weights_only: bool = False) -> None:
        self.policy.load_state_dict(state["policy"])
        load_signals_state(self.signals, state.get("signals", {}))
        if weights_only:  # --initialize-from and --inference: the policy alone (ML-Agents: all weights)
            if "critic" in state:
                self._load_critics(state)
            return
        self._load_critics(state)
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        load_training_state(self, state)
        self.signal_update_count = int(state.get("signal_update_count", self._updates_due(
            self.settings.reward_signal_steps_per_update)))
        paced = state.get("update_pace")  # (None: a checkpoint from before it was saved)
        if paced is None:
            # an earlier Palaestra's checkpoint: its pace is known only by its count, never ahead of
            # the updates due (it lags them by the experience not yet handed over), so a count ahead of
            # those due at this pace was made at a faster one, and would stall the updates. (A count
            # behind may be either a slower pace or that lag: it stays.)
            signal_pace = self.settings.reward_signal_steps_per_update
            ahead = [f"{count} {what} at a faster one than {key} {pace:g}" for count, due, what, key, pace in (
                (self.update_count, self._updates_due(), "updates", "steps_per_update", self.settings.steps_per_update),
                (self.signal_update_count, self._updates_due(signal_pace), "reward-signal updates",
                 "reward_signal_steps_per_update", signal_pace or self.settings.steps_per_update))
                if count > max(0, due) + 1]
            if ahead:
                logger.info("SAC's checkpoint records no pace of updates (an earlier Palaestra wrote it), and it counted "
                            "%s: from step %d on they are counted as if it had always been this one",
                            " and ".join(ahead), self.step)
                self.update_count = min(self.update_count, max(0, self._updates_due()))
                self.signal_update_count = min(self.signal_update_count, max(0, self._updates_due(signal_pace)))
        elif paced != self._update_pace():
            # counted at another pace, the counters would stall the updates (steps_per_update 1 -> 100:
            # 2000 updates taken, 20 due) or burst them (100 -> 1); as ML-Agents, taken to have kept this pace
            show = lambda value: "its default" if value is None else f"{value:g}"  # noqa: E731
            changed = ", ".join(f"{key} {show(paced.get(key))} -> {show(value)}"
                                for key, value in self._update_pace().items() if paced.get(key) != value)
            self.update_count = max(0, self._updates_due())
            self.signal_update_count = max(0, self._updates_due(self.settings.reward_signal_steps_per_update))
            logger.info("SAC's pace of updates changed since the checkpoint (%s): from step %d on they are counted "
                        "as if it had always been this one", changed, self.step)

    def _extra_critic_modules(self) -> dict[str, nn.Module]:
        """The critics' image encoders and LSTMs and their targets, where there are any."""
        named = {"critic_images": self.critic_images, "target_images": self.target_images,
                 "critic_lstm": self.critic_lstm, "target_lstm": self.target_lstm}
        return {name: module for name, module in named.items() if module is not None}

    def _extra_critics_state(self) -> dict[str, Any]:
        return {name: module.state_dict() for name, module in self._extra_critic_modules().items()}

    def _load_critics(self, state: dict[str, Any]) -> None:
        self.critic.load_state_dict(state["critic"])
        self.target.load_state_dict(state["target"])
        for name, module in self._extra_critic_modules().items():
            module.load_state_dict(state[name])

    def replay_state(self) -> dict[str, Any]:
        """The replay buffer as tensors (for ``save_replay_buffer``), with the length of the
        sequences a recurrent policy's rows are cut into."""
        return self.buffer.tensor_state() | {"sequence_length": self.sequence_length}

    def load_replay_state(self, state: dict[str, Any]) -> int:
        """Load a saved replay buffer; return how many transitions it holds (padding excluded)."""
        saved_length = int(state.get("sequence_length", self.sequence_length))  # absent: saved before it was kept
        if saved_length != self.sequence_length:
            # the rows sit in blocks of the saved length, padding and stored memories included;
            # read with another length, blocks would start mid-episode with zero memory
            raise CheckpointError(f"it holds sequences of {saved_length} rows, and sequence_length is now "
                                  f"{self.sequence_length}")
        parts = column_parts(state["columns"])
        for columns in parts:
            for prefix in ("obs", "next_obs"):  # files saved before observations kept their shapes
                if prefix in columns:
                    shapes = self.spec.observation_shapes
                    columns |= observation_columns(_split_flat(columns.pop(prefix), shapes), prefix)
        self.buffer.load_state_dict({"capacity": state["capacity"], "tails": state.get("tails", {}),
                                     "columns": {k: [p[k] for p in parts] for k in (parts[0] if parts else {})}})
        # the real rows kept: a smaller buffer_size than the saved run's keeps only the newest
        valid = self.buffer.data.get("valid")
        return int(valid[:self.buffer.size].sum()) if valid is not None else self.buffer.size

    def policy_arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError("SAC's policy does not act in environment workers (palaestra/capabilities.py)")

