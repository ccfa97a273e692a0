"""Steps → segments of experience, batched over all agents of one behavior.

Each agent id gets a *slot*: a row of preallocated arrays ``[slots, time_horizon, ...]``, one per
per-row field of the segments (rollout/segments.py). Row ``t`` of a slot holds the observations
the agent acted on (each in its own shape and stored dtype: envs/observations.py), the policy's
outputs (the action, its log-probability, and any other per-row field declared ``from_policy``),
the action mask, and (once the next step arrives) the reward that followed. A slot's segment is
finished when it holds ``time_horizon`` rows and the next decision arrives, or when the agent's
episode ends; either way it keeps the observation after its last row. Acting computes no value
estimates: PPO values the rows and that observation (its return's bootstrap) at the update that
learns from them, with that update's critic. Every operation is a numpy operation over the agents
of the step; there is no per-agent Python loop. Agents in lockstep (consecutive slots, all at one
row: one agent, or a built-in environment's agents between episode ends) are written through a
slice and a row, which costs a fraction of fancy indexing at these sizes.

A recurrent policy's memory is part of each agent's state here: every decision hands the
agents' memories to the policy (``memory=``) and keeps the ones it returns, each row records the
memory it was acted on with (training sequences start from it), and an episode's end clears it.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from palaestra.envs.base import ActionTuple, BehaviorSpec, DecisionSteps, TerminalSteps
from palaestra.envs.checker import refuse_empty_branches, refuse_non_finite_decision, refuse_non_finite_segments
from palaestra.envs.observations import stored_observations
from palaestra.rollout.segments import ActResult, EpisodeStats, SegmentSchema, Segments, SegmentSizes, segment_schema

# the observations as a list, one array [n, *shape] per observation, and the allowed-action mask
PolicyFn = Callable[[list[np.ndarray], np.ndarray | None], ActResult]


class Collector:
    def __init__(self, spec: BehaviorSpec, time_horizon: int, initial_slots: int = 16,
                 schema: SegmentSchema | None = None, memory_size: int = 0, behavior: str = "the behavior") -> None:
        self.spec = spec
        self.behavior = behavior  # for messages
        self.memory_size = memory_size  # a recurrent policy's memory per agent (0: none)
        self.schema = schema or segment_schema(spec, recurrent=memory_size > 0)
        self.shapes = spec.observation_shapes
        self.sizes = SegmentSizes.of(spec, memory_size)
        self.H = time_horizon
        self.c = spec.action_spec.continuous_size
        self.mask_width = self.sizes.mask
        self.branch_starts = np.cumsum([0, *spec.action_spec.discrete_branches[:-1]])
        self.capacity = 0
        self.n_slots = 0
        self.buffers: dict[str, np.ndarray] = {}  # every per-row field of the schema: [slots, time_horizon, ...]
        self._known_ids = np.zeros(0, dtype=np.int64)  # sorted
        self._known_slots = np.zeros(0, dtype=np.int64)
        # the last two agent sets seen (the array handed in, a copy of its ids, their slots, those
        # slots as a slice if they are consecutive): environments usually show the same agents
        # every step, and pipelined workers (workers/stepping.py) alternate between two sets
        self._recent: list[tuple[np.ndarray, np.ndarray, np.ndarray, slice | None]] = []
        self._masked = False  # has any decision carried an action mask? (until then, skip writing masks)
        self.stats = EpisodeStats()
        self._grow(initial_slots)

    # -- slot bookkeeping --------------------------------------------------------------------
    def _grow(self, capacity: int) -> None:
        old = self.capacity
        buffers = self.schema.row_buffers(self.sizes, capacity, self.H)
        for name, arr in self.buffers.items():
            buffers[name][:old] = arr
        self.buffers = buffers
        # the fields filled here, and those recorded from the policy's output (skipping empty ones)
        self.obs = [buffers[name] for name in self.schema.observations["obs"]]
        self.allowed, self.reward = buffers["allowed"], buffers["env_reward"]
        self._from_policy = [(f.name, buffers[f.name]) for f in self.schema.per_row
                             if f.from_policy and np.prod(f.shape(self.sizes)) > 0]

        def grown(arr: np.ndarray | None, dtype) -> np.ndarray:
            new = np.zeros(capacity, dtype=dtype)
            if arr is not None and old:
                new[:old] = arr
            return new

        # per slot: its segment's rows so far (the last of them waits for the reward that follows
        # its action), its episode's return and length
        self.length = grown(getattr(self, "length", None), np.int64)
        self.episode_return = grown(getattr(self, "episode_return", None), np.float64)
        self.episode_length = grown(getattr(self, "episode_length", None), np.int64)
        # slots whose agent's episode ended (with no step of a new one: they may go to new ids):
        # a Unity agent takes a new id for each episode, so these are reused rather than growing
        self.ended = grown(getattr(self, "ended", None), bool)
        if self.memory_size:  # each agent's memory now, and the rows' record of it
            memory = np.zeros((capacity, self.memory_size), np.float32)
            memory[:old] = getattr(self, "agent_memory", memory[:0])
            self.agent_memory = memory
            self.memory_rows = buffers["memory"]
        self.capacity = capacity

    @property
    def known_agent_ids(self) -> np.ndarray:
        """Every agent id seen so far, sorted."""
        return self._known_ids.copy()

    def slots_for(self, agent_ids: np.ndarray, remember: bool = True) -> np.ndarray:
        """Slots of these agent ids, allocating slots for ids seen for the first time."""
        return self._slots_and_span(agent_ids, remember)[0]

    def _slots_and_span(self, agent_ids: np.ndarray, remember: bool = True) -> tuple[np.ndarray, slice | None]:
        """(the slots of these agent ids, the same as a slice when they are consecutive, else None)."""
        for source, known, slots, span in self._recent:
            # an identity check first: environments often hand back the same id array while
            # the agents stay the same (arrays are never modified in place)
            if agent_ids is source or (len(agent_ids) == len(known) and (agent_ids == known).all()):
                return slots, span
        ids = np.asarray(agent_ids, dtype=np.int64)
        pos = np.searchsorted(self._known_ids, ids)
        found = np.zeros(len(ids), dtype=bool)
        inside = pos < len(self._known_ids)
        found[inside] = self._known_ids[pos[inside]] == ids[inside]
        if not found.all():
            new_ids = np.unique(ids[~found])
            # first the slots of ended episodes that no decision used since (an agent continuing
            # under its id has steps in its new episode), nor those of agents here
            n = self.n_slots
            unused = self.ended[:n] & (self.episode_length[:n] == 0)
            free = np.setdiff1d(np.flatnonzero(unused), self._known_slots[pos[found]])
            reused = free[: len(new_ids)]
            known_ids, known_slots = self._known_ids, self._known_slots
            if len(reused):
                keep = ~np.isin(known_slots, reused)
                known_ids, known_slots = known_ids[keep], known_slots[keep]
                self.ended[reused] = False
                self._recent = []  # (a cached id array may hold an id whose slot was just given away)
            fresh = np.arange(self.n_slots, self.n_slots + len(new_ids) - len(reused))
            self.n_slots += len(fresh)
            if self.n_slots > self.capacity:
                self._grow(max(self.n_slots, 2 * self.capacity))
            new_slots = np.concatenate([reused, fresh])
            order_ids = np.concatenate([known_ids, new_ids])
            order_slots = np.concatenate([known_slots, new_slots])
            order = np.argsort(order_ids, kind="stable")
            self._known_ids, self._known_slots = order_ids[order], order_slots[order]
            pos = np.searchsorted(self._known_ids, ids)
        slots = self._known_slots[pos]
        if not remember:  # (episode ends: their writes are fancy-indexed anyway)
            return slots, None
        span = _as_slice(slots)
        self._recent = [(agent_ids, ids.copy(), slots, span)] + self._recent[:1]
        return slots, span

    # -- one environment step ----------------------------------------------------------------
    def step(self, decision: DecisionSteps, terminal: TerminalSteps,
             policy: PolicyFn) -> tuple[ActionTuple, Segments | None]:
        """Record the step's terminal and decision agents, act for the decision agents, and
        return the actions for the environment plus any segments finished by this step."""
        finished: list[Segments] = []
        if len(terminal):
            done = self._end_episodes(terminal)
            if done is not None:
                finished.append(done)
        if not len(decision):
            actions = self.spec.action_spec.empty_actions(0)
        else:
            slots, span = self._slots_and_span(decision.agent_id)
            obs = stored_observations(decision.obs, self.shapes)
            allowed = self._allowed(decision)
            rows = self.length[slots]
            # Agents in lockstep (one agent, as a Gymnasium environment has, or all at one row in
            # consecutive slots) are addressed by a slice and a row: basic indexing, several times
            # cheaper than fancy indexing at these sizes. ``row`` is None otherwise.
            lockstep = span is not None and rows[0] == rows[-1] and (len(rows) < 3 or (rows == rows[0]).all())
            row = int(rows[0]) if lockstep else None
            index = span if row is not None else slots
            # The reward that followed each agent's previous action (a slot with rows has its
            # last row waiting for it).
            if row is not None:
                if row:
                    self.reward[span, row - 1] += decision.reward
            else:
                waiting = rows > 0
                self.reward[slots[waiting], rows[waiting] - 1] += decision.reward[waiting]
            self.episode_return[index] += decision.reward
            if self.memory_size:
                memory = self.agent_memory[slots]  # a copy: the rows record the memory acted on
                out = policy(obs, allowed, memory=memory)
                self.agent_memory[index] = out.memory
            else:
                out = policy(obs, allowed)
            # NaN actions, from NaN observations, are not sent: NaN logits give a NaN entropy (the
            # sum taken anyway), a NaN Gaussian mean a NaN action (its entropy does not see it)
            entropy = float(out.entropy.sum())
            if not math.isfinite(entropy + float(out.continuous.sum()) if self.c else entropy):
                refuse_non_finite_decision(self.behavior, decision)
            self.stats.entropy_sum += entropy
            self.stats.entropy_count += len(out.entropy)
            # a slot holding time_horizon rows is cut: this decision's observation follows its last row
            if row is not None:
                if row >= self.H:
                    no = np.zeros(len(slots), bool)
                    finished.append(self._take(slots, no, no, [o.copy() for o in obs],
                                               allowed.copy() if allowed is not None else None))
                    row = 0
                at = (span, row)
            else:
                full = rows >= self.H
                if full.any():
                    fs = slots[full]
                    no = np.zeros(len(fs), bool)
                    finished.append(self._take(fs, no, no, [o[full] for o in obs],
                                               allowed[full] if allowed is not None else None))
                    rows = self.length[slots]
                at = (slots, rows)
            for buffer, o in zip(self.obs, obs):
                buffer[at] = o
            for name, buffer in self._from_policy:
                buffer[at] = getattr(out, name)
            if self.memory_size:
                self.memory_rows[at] = memory
            if allowed is not None:
                self._masked = True
                self.allowed[at] = allowed
            elif self._masked:
                self.allowed[at] = True
            self.length[index] = at[1] + 1
            self.episode_length[index] += 1
            actions = ActionTuple(
                # clipped for the environment, stored unclipped (as ML-Agents); min/max beat np.clip here
                continuous=np.minimum(np.maximum(out.continuous, -1.0), 1.0, dtype=np.float32) if self.c
                else out.continuous,
                discrete=out.discrete.astype(np.int32),
            )
        if not finished:
            return actions, None
        done = finished[0] if len(finished) == 1 else self.schema.concatenate(finished)
        # checked here, once per finished segment rather than per step: before anything learns from it
        refuse_non_finite_segments(self.behavior, done.env_reward, [*done.observations, *done.next_observations])
        return actions, done

    def _allowed(self, decision: DecisionSteps) -> np.ndarray | None:
        """Allowed-action mask ``[n, sum(branches)]``, or None when nothing is masked."""
        if not self.mask_width or decision.action_mask is None:
            return None
        allowed = ~np.concatenate(decision.action_mask, axis=1).astype(bool)
        refuse_empty_branches(self.behavior, decision.agent_id, allowed, self.branch_starts)
        return allowed

    def _end_episodes(self, terminal: TerminalSteps) -> Segments | None:
        slots = self.slots_for(terminal.agent_id, remember=False)
        pend = self.length[slots] > 0  # those with rows: their last row waits for this reward
        ps = slots[pend]
        self.reward[ps, self.length[ps] - 1] += terminal.reward[pend]
        self.episode_return[slots] += terminal.reward
        # an episode with no decision (an agent seen only ending: a Unity agent's new id done before
        # it asked, a disabled agent) is no episode of the policy's, as in ML-Agents' statistics
        played = self.episode_length[slots] > 0
        self.stats.returns.extend(self.episode_return[slots[played]].tolist())
        self.stats.lengths.extend(self.episode_length[slots[played]].tolist())
        self.episode_return[slots] = 0.0
        self.episode_length[slots] = 0
        self.ended[slots] = True
        if not pend.any():
            if self.memory_size:
                self.agent_memory[slots] = 0.0
            return None
        obs = [o[pend] for o in stored_observations(terminal.obs, self.shapes)]
        if self.memory_size:
            self.agent_memory[slots] = 0.0  # the next episode starts from zeros
        return self._take(ps, ~terminal.interrupted[pend], np.ones(len(ps), bool), obs, None)

    def _take(self, slots: np.ndarray, terminal: np.ndarray, episode_end: np.ndarray,
              next_obs: list[np.ndarray], next_allowed: np.ndarray | None) -> Segments:
        length = self.length[slots]
        width = int(length.max())
        # one slot (an episode's end in a one-agent environment) as a slice: basic indexing is cheaper
        index = slots if len(slots) > 1 else slice(int(slots[0]), int(slots[0]) + 1)
        arrays = {}
        for name, buffer in self.buffers.items():  # the per-row fields, copied out of the slots
            arrays[name] = buffer[slots, :width] if len(slots) > 1 else buffer[index, :width].copy()
        arrays["length"] = length
        arrays |= dict(zip(self.schema.observations["next_obs"], next_obs, strict=True))
        arrays["next_allowed"] = np.ones((len(slots), self.mask_width), bool) if next_allowed is None else next_allowed
        arrays["terminal"] = terminal
        arrays["episode_end"] = episode_end
        arrays["slot"] = slots.copy()
        seg = Segments(self.schema, arrays)
        self.reward[index, :width] = 0.0  # rows accumulate rewards with +=; start the next segment clean
        self.length[index] = 0
        return seg

    def end_episodes(self, terminal: TerminalSteps) -> Segments | None:
        """Take the episodes of ``terminal`` alone, ahead of the next ``step`` (which must then be
        given no terminal steps): those that ended on the last environment step before a reset,
        or at the end of a worker's round, so that the reset does not lose them."""
        if not len(terminal):
            return None
        done = self._end_episodes(terminal)
        if done is not None:
            refuse_non_finite_segments(self.behavior, done.env_reward, [*done.observations, *done.next_observations])
        return done

    def drop_open_episodes(self) -> None:
        """Forget every agent's episode under way (its environment resets): unfinished segments
        are dropped and the next decision starts a new episode."""
        self.reward[:] = 0.0
        self.length[:] = 0
        self.episode_return[:] = 0.0
        self.episode_length[:] = 0
        self.ended[:] = True  # (a Unity agent's next episode comes under a new id)
        if self.memory_size:
            self.agent_memory[:] = 0.0

    def take_episode_stats(self) -> EpisodeStats:
        stats, self.stats = self.stats, EpisodeStats()
        return stats


def _as_slice(slots: np.ndarray) -> slice | None:
    """``slots`` as a slice if they are consecutive and ascending, else None."""
    if not len(slots):
        return None
    first, last = int(slots[0]), int(slots[-1])
    if last - first == len(slots) - 1 and (len(slots) < 3 or (np.diff(slots) == 1).all()):
        return slice(first, last + 1)
    return None
