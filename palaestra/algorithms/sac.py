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

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from palaestra.algorithms.schedules import scheduled_learning_rate
from palaestra.envs.base import BehaviorSpec
from palaestra.networks.flat_params import FlatParameters
from palaestra.networks.numpy_adam import NumpyAdam
from palaestra.networks.numpy_policy import NumpySquashedActor
from palaestra.networks.optim import make_adam, step_single_adam
from palaestra.networks.sac_gradients import NumpyOps, SACBatch, SACGradients
from palaestra.networks.sac_networks import SquashedActor, TwinQ, squashed_sample
from palaestra.rewards import SignalEpisodeSums, make_signals
from palaestra.rollout.buffers import ReplayBuffer
from palaestra.rollout.segments import ActResult, Segments
from palaestra.settings import TrainerSettings

DISCRETE_TARGET_ENTROPY_SCALE = 0.2  # ML-Agents: target entropy 0.2 x log(branch size)
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class SAC:
    def __init__(self, spec: BehaviorSpec, settings: TrainerSettings, device: torch.device,
                 rng: np.random.Generator | None = None) -> None:
        action = spec.action_spec
        if action.is_continuous and action.is_discrete:
            raise ValueError("SAC takes continuous or discrete actions, not both")
        self.spec = spec
        self.settings = settings
        self.device = device
        self.rng = rng or np.random.default_rng()
        self.signals = make_signals(settings.reward_signals)
        K = len(self.signals)
        self.policy = SquashedActor(spec, settings.hidden_units, settings.num_layers, settings.normalize).to(device)
        self.continuous = action.is_continuous
        self.branches = list(action.discrete_branches)
        self.offsets = np.cumsum([0] + self.branches[:-1]).tolist()
        critic_inputs = self.policy.obs_size + action.continuous_size
        critic_outputs = K if self.continuous else K * sum(self.branches)
        self.critic = TwinQ(critic_inputs, critic_outputs, settings.hidden_units, settings.num_layers).to(device)
        self.target = copy.deepcopy(self.critic).requires_grad_(False)
        entropy_terms = 1 if self.continuous else len(self.branches)
        self.log_alpha = nn.Parameter(torch.full((entropy_terms,), math.log(settings.init_entcoef), device=device))
        # Actor, critics and entropy coefficients in one flat buffer (networks/flat_params.py):
        # one Adam over it is ML-Agents' three optimizers (all at learning_rate; Adam is
        # per-parameter) stepped at once, and the critics are one slice for the Polyak average.
        actor_params, critic_params = list(self.policy.parameters()), list(self.critic.parameters())
        self.flat = FlatParameters([*actor_params, *critic_params, self.log_alpha])
        self.critic_span = self.flat.span(len(actor_params), len(critic_params))
        self.target_flat = FlatParameters(list(self.target.parameters()), with_grad=False)
        # On the CPU, act with a numpy mirror of the actor over the same (flattened) memory.
        self._numpy_actor = (NumpySquashedActor(self.policy, self.rng, K) if device.type == "cpu" else None)
        target_entropy = ([-float(action.continuous_size)] if self.continuous else
                          [DISCRETE_TARGET_ENTROPY_SCALE * math.log(b) for b in self.branches])
        self.target_entropy = torch.tensor(target_entropy, device=device)
        self.gammas = torch.tensor([s.gamma for s in self.signals], device=device)
        self._uses_terminal = np.array([float(s.uses_terminal) for s in self.signals], np.float32)
        self.optimizer = make_adam([self.flat.parameter], settings.learning_rate, settings.adam_epsilon)
        # Gradients by hand (networks/sac_gradients.py; _autograd_gradients is their reference),
        # in numpy for narrow networks on the CPU, with a numpy Adam over the same flat buffer.
        self._gradients = SACGradients(self.policy, self.critic, self.target, self.log_alpha,
                                       self.target_entropy, self.gammas, self.branches)
        self._numpy_adam = (NumpyAdam([self.flat.parameter], self.optimizer, flat=self.flat)
                            if self._gradients.xp is NumpyOps else None)
        self.buffer = ReplayBuffer(settings.buffer_size)
        self.episode_sums = SignalEpisodeSums(self.signals)
        self.step = 0  # agent steps collected, ML-Agents' trainer step
        self.update_count = 0  # gradient steps taken
        self._torch_rng = torch.Generator(device=device)
        self._torch_rng.manual_seed(int(self.rng.integers(2**62)))

    # -- acting ------------------------------------------------------------------------------
    def act(self, obs: np.ndarray, allowed: np.ndarray | None, deterministic: bool = False) -> ActResult:
        if self._numpy_actor is not None:
            return self._numpy_actor.act(obs, allowed, deterministic)
        return self._torch_act(obs, allowed, deterministic)

    @torch.inference_mode()
    def _torch_act(self, obs: np.ndarray, allowed: np.ndarray | None, deterministic: bool = False) -> ActResult:
        n = obs.shape[0]
        h = self.policy.body(self.policy.encode(torch.as_tensor(obs, device=self.device)))
        cont = np.zeros((n, 0), np.float32)
        disc = np.zeros((n, 0), np.int64)
        if self.continuous:
            mean, log_std = self.policy.gaussian_params(h)
            noise = torch.zeros_like(mean) if deterministic else torch.randn(
                mean.shape, generator=self._torch_rng, device=self.device)
            action, log_prob = squashed_sample(mean, log_std, noise)
            # the entropy of the Gaussian before squashing (the squashed one has no closed form)
            entropy = (0.5 + _HALF_LOG_2PI + log_std).sum(-1)
            cont = action.cpu().numpy()
        else:
            logits = self.policy.masked_logits(h, None if allowed is None else torch.as_tensor(allowed, device=self.device))
            log_prob = torch.zeros(n, device=self.device)
            entropy = torch.zeros(n, device=self.device)
            choices = []
            for start, size in zip(self.offsets, self.branches):
                logp = torch.log_softmax(logits[:, start : start + size], -1)
                if deterministic:
                    choice = logp.argmax(-1)
                else:
                    u = torch.rand(logp.shape, generator=self._torch_rng, device=self.device).clamp_(1e-20, 1.0)
                    choice = (logp - torch.log(-torch.log(u))).argmax(-1)  # Gumbel-max
                choices.append(choice)
                log_prob += logp.gather(1, choice[:, None])[:, 0]
                entropy -= (logp.exp() * logp).sum(-1)
            disc = torch.stack(choices, 1).cpu().numpy()
        return ActResult(cont, disc, log_prob.cpu().numpy(), entropy.cpu().numpy(),
                         np.zeros((n, len(self.signals)), np.float32))

    def value(self, obs: np.ndarray) -> np.ndarray:
        """SAC keeps no state-value estimate for segments; its critics learn from transitions."""
        return np.zeros((obs.shape[0], len(self.signals)), np.float32)

    # -- experience --------------------------------------------------------------------------
    def collect(self, seg: Segments) -> dict[str, list[float]]:
        """Turn finished segments into transitions in the replay buffer."""
        mask = seg.row_mask
        F, H = mask.shape
        if self.policy.normalizer is not None:
            self.policy.normalizer.update(seg.obs[mask])
        last = (np.arange(F), seg.length - 1)
        next_obs = np.empty_like(seg.obs)
        next_obs[:, :-1] = seg.obs[:, 1:]
        next_obs[last] = seg.next_obs
        next_allowed = np.ones_like(seg.allowed)
        next_allowed[:, :-1] = seg.allowed[:, 1:]
        next_allowed[last] = seg.next_allowed
        done = np.zeros((F, H), bool)
        done[last] = seg.terminal  # a step-limit interruption is not done: its target bootstraps
        self.buffer.add(
            obs=seg.obs[mask], next_obs=next_obs[mask], continuous=seg.continuous[mask],
            discrete=seg.discrete[mask], allowed=seg.allowed[mask], next_allowed=next_allowed[mask],
            env_reward=seg.env_reward[mask], done=done[mask],
        )
        self.step += int(seg.length.sum())
        return self.episode_sums.add(seg, [signal.rewards(seg) for signal in self.signals])

    # -- learning ----------------------------------------------------------------------------
    def _updates_due(self) -> int:
        s = self.settings
        return int((self.step - s.buffer_init_steps) / s.steps_per_update)

    @property
    def experiences(self) -> int:
        """Transitions the next update samples from (the replay buffer's)."""
        return self.buffer.size

    def ready(self) -> bool:
        return (self.buffer.size >= self.settings.batch_size and self.step >= self.settings.buffer_init_steps
                and self.update_count < self._updates_due())

    def current_learning_rate(self) -> float:
        return scheduled_learning_rate(self.settings, self.step)

    def update(self) -> dict[str, Any]:
        """The gradient steps the cadence asks for since the last call; their mean losses."""
        lr = self.current_learning_rate()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        totals: dict[str, torch.Tensor] = {}
        steps = 0
        while self.update_count < self._updates_due():
            for key, value in self._gradient_step(self.buffer.sample(self.settings.batch_size, self.rng)).items():
                totals[key] = totals[key] + value if key in totals else value
            self.update_count += 1
            steps += 1
        stats: dict[str, Any] = {}
        if steps:  # one conversion per update call, not per gradient step (a device sync on GPUs)
            q_estimate = (totals.pop("q_estimate") / steps).tolist()
            stats = {k: float(v) / steps for k, v in totals.items()}
            for signal, value in zip(self.signals, q_estimate):
                stats[f"Policy/{signal.stat_name} Value Estimate"] = value
        stats["Policy/Learning Rate"] = lr
        stats["Policy/Entropy Coeff"] = float(self.log_alpha.detach().exp().mean())
        return stats

    def _gradient_step(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        t = self._prepare(batch)
        stats = self._gradients.compute(t)
        if self._numpy_adam is not None:
            self._numpy_adam.step()
        else:
            step_single_adam(self.optimizer)
        # Polyak averaging of the target critics: target <- (1 - tau) target + tau critic
        self.target_flat.data.lerp_(self.flat.data[self.critic_span], self.settings.tau)
        return stats

    def _prepare(self, batch: dict[str, np.ndarray]) -> SACBatch:
        rewards = np.stack([signal.rewards_for_batch(batch) for signal in self.signals], 1).astype(np.float32)
        return SACBatch(
            obs=batch["obs"],
            next_obs=batch["next_obs"],
            continuous=batch["continuous"],
            discrete=batch["discrete"].astype(np.int64, copy=False),
            allowed=batch["allowed"],
            next_allowed=batch["next_allowed"],
            rewards=rewards,  # [B, K]
            # Bootstrap unless the episode truly ended (for signals that use terminal states).
            not_done=1.0 - batch["done"].astype(np.float32)[:, None] * self._uses_terminal,
            noise=self.rng.standard_normal((2 * len(rewards), self.spec.action_spec.continuous_size),
                                           dtype=np.float32),
        )

    def _autograd_gradients(self, batch: SACBatch) -> dict[str, torch.Tensor]:
        """The SAC losses, written for autograd: the reference that networks/sac_gradients.py
        computes by hand (the tests compare the two); sets ``.grad``, returns the loss stats."""
        t = batch.to_torch(self.device)
        with torch.no_grad():
            x, x_next = self.policy.encode(t.obs), self.policy.encode(t.next_obs)
        B = x.shape[0]
        h = self.policy.body(x)
        with torch.no_grad():
            h_next = self.policy.body(x_next)  # the actor at s' only feeds the (constant) target
        alpha = self.log_alpha.detach().exp()
        if self.continuous:
            mean, log_std = self.policy.gaussian_params(h)
            a_pi, logp_pi = squashed_sample(mean, log_std, t.noise[:B])
            with torch.no_grad():  # the soft target: min of the target critics minus alpha log pi
                a_next, logp_next = squashed_sample(*self.policy.gaussian_params(h_next), t.noise[B:])
                q_next = self.target(torch.cat([x_next, a_next], 1)).min(0).values  # [B, K]
                y = t.rewards + self.gammas * t.not_done * (q_next - alpha * logp_next[:, None])
            q = self.critic(torch.cat([x, t.continuous], 1))  # [2, B, K]
            # the actor maximizes min-Q of its own (reparameterized) action minus alpha log pi
            q_pi = self.critic(torch.cat([x, a_pi], 1), detached=True).min(0).values.mean(-1)
            policy_loss = (alpha[0] * logp_pi - q_pi).mean()
            entropy_error = (logp_pi.detach() + self.target_entropy[0])[:, None]  # [B, 1]
        else:
            K, A = len(self.signals), sum(self.branches)
            logits = self.policy.masked_logits(h, t.allowed)
            q_all = self.critic(x).view(2, B, K, A)
            with torch.no_grad():
                logits_next = self.policy.masked_logits(h_next, t.next_allowed)
                q_next = self.target(x_next).view(2, B, K, A).min(0).values  # [B, K, A]
            q_min = q_all.detach().min(0).values.mean(1)  # [B, A], the actor's view of the critics
            v_next = 0.0
            q_taken = 0.0
            policy_loss = 0.0
            entropy_error = []
            for b, (start, size) in enumerate(zip(self.offsets, self.branches)):
                cols = slice(start, start + size)
                logp = torch.log_softmax(logits[:, cols], -1)
                p = logp.exp()
                with torch.no_grad():
                    logp_next = torch.log_softmax(logits_next[:, cols], -1)
                    p_next = logp_next.exp()
                # soft value of s' per signal: E_a~pi [min Q_target(s', a) - alpha log pi(a|s')]
                v_next = v_next + (p_next[:, None, :] * (q_next[..., cols] - alpha[b] * logp_next[:, None, :])).sum(-1)
                action = t.discrete[:, b]
                q_taken = q_taken + q_all[..., cols].gather(-1, action.view(1, B, 1, 1).expand(2, B, K, 1))[..., 0]
                policy_loss = policy_loss + (p * (alpha[b] * logp - q_min[:, cols])).sum(-1).mean()
                entropy_error.append((p * logp).sum(-1).detach() + self.target_entropy[b])
            n = len(self.branches)
            with torch.no_grad():
                y = t.rewards + self.gammas * t.not_done * (v_next / n)
            q = q_taken / n  # [2, B, K]
            policy_loss = policy_loss / n
            entropy_error = torch.stack(entropy_error, 1)  # [B, branches]

        q1_loss = 0.5 * (q[0] - y).pow(2).mean()
        q2_loss = 0.5 * (q[1] - y).pow(2).mean()
        # Entropy coefficient: raise alpha while the policy's entropy is below its target.
        alpha_loss = -(self.log_alpha * entropy_error).mean()
        self.flat.zero_grad()
        (q1_loss + q2_loss + policy_loss + alpha_loss).backward()
        return {"Losses/Q1 Loss": q1_loss.detach(), "Losses/Q2 Loss": q2_loss.detach(),
                "Losses/Policy Loss": policy_loss.detach(), "q_estimate": q.detach().min(0).values.mean(0)}

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self._numpy_adam is not None:
            self._numpy_adam.sync()
        return {
            "policy": self.policy.state_dict(),
            "critic": self.critic.state_dict(),
            "target": self.target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "update_count": self.update_count,
        }

    def load_state_dict(self, state: dict[str, Any], weights_only: bool = False) -> None:
        self.policy.load_state_dict(state["policy"])
        if weights_only:  # --initialize-from and --inference: the policy alone (ML-Agents: all weights)
            if "critic" in state:
                self.critic.load_state_dict(state["critic"])
                self.target.load_state_dict(state["target"])
            return
        self.critic.load_state_dict(state["critic"])
        self.target.load_state_dict(state["target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self._numpy_adam is not None:
            self._numpy_adam.after_load()
        self.step = int(state["step"])
        self.update_count = int(state["update_count"])

    def replay_state(self) -> dict[str, Any]:
        """The replay buffer as tensors (for ``save_replay_buffer``)."""
        state = self.buffer.state_dict()
        return {"capacity": state["capacity"],
                "columns": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state["columns"].items()}}

    def load_replay_state(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict({"capacity": state["capacity"],
                                     "columns": {k: v.numpy() for k, v in state["columns"].items()}})

