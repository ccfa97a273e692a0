"""Acting in the worker processes: each worker runs the policy on its own agents and sends
finished segments, instead of sending every step's observations to the main process.
docs/environments.md says when this mode is used.

Worker side, :func:`run_acting`: the worker (workers/process.py) switches to it when it receives
an :class:`ActingPlan`. From then on it works in *rounds* of ``R`` environment steps. Round ``q``
may start once the main process has sent ``("round", q)``; the worker then copies the weights
published for round ``q`` (slot ``q % slots`` of the weights block) into its own numpy policies,
steps ``R`` times (acting, stepping, recording segments exactly as the main process's collector
would), writes the round's finished segments into its result block for slot ``q % slots`` and
sends ``("round", q, R, header, episode stats, new block name)``. A ``("reset", q, parameters)``
message (new environment parameters: a lesson change, a resampling) resets the worker's
environment with them before round ``q``; the episodes under way then are dropped.

Main side, :class:`ActingWorkers`: the main process takes round ``r`` from every worker (in
worker order, so runs are reproducible), hands the segments to the trainers, lets them update,
and then publishes the weights for round ``r + 1 + LAG``. Workers therefore run up to ``LAG``
rounds ahead of the main process: while it learns from one round they collect the next with the
weights they have, as ML-Agents' threaded trainers do (``threaded: true``, the default; with
``threaded: false`` in any behavior's section the lag is 0 and the workers wait for each round's
update). Each round's share of a behavior's experience is ``buffer_size / (ROUNDS_PER_BUFFER x
workers)`` agent steps per worker, so up to ``LAG / ROUNDS_PER_BUFFER`` of a buffer is collected
with the weights from before an update.

Everything a round produces depends only on the worker's seed and the weights of that round, so
a run with the same ``--seed`` is reproducible whatever the timing. A worker that fails is
restarted (within the pool's limits) from the round it owes. When its environment fails in a
step (raises: a Unity build that crashed or stopped answering), the worker first ends its agents'
episodes as interrupted at the observation they last acted on, as the main process does with
``--acting=main`` (workers/stepping.py), and sends their segments (``("salvage", arrays,
stats)``, before its error); only a process that dies or hangs itself loses them.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from palaestra.envs.base import BehaviorSpec, DecisionSteps, TerminalSteps
from palaestra.networks.acting import make_actor
from palaestra.networks.numpy_network import WeightLayout, weight_size, weight_views
from palaestra.rollout.collector import Collector
from palaestra.rollout.segments import EpisodeStats, Segments, segment_schema
from palaestra.workers.pool import WorkerFailed, WorkerPool
from palaestra.workers.shared_memory import Header, Layout, SharedArrays, pack_arrays, unpack_arrays

logger = logging.getLogger("palaestra")

# Measured with PPO on HalfCheetah-v5 (docs/benchmarks.md): an update costs the main process
# about as much time as the workers take to collect half a buffer or more, so they need about six
# rounds of an eighth of a buffer in hand to keep stepping through it. Fewer rounds in hand left
# them waiting (6,700-7,000 steps/s with 2 workers instead of 7,500-8,800). The rows collected
# with older weights are corrected for by PPO's decoupled objective (algorithms/ppo.py:
# _decouple); without it 3DBall learned about half as fast per step.
ROUNDS_PER_BUFFER = 8
LAG = 6
# how long a worker known to have failed gets to say why (it sends its error, then exits)
FAILURE_REPORT_TIMEOUT_S = 5.0
# how often a worker in the middle of a round looks for a close (the run's end: it leaves the
# round and closes its environment within the pool's grace period)
CLOSE_LOOK_S = 0.05


@dataclass(frozen=True)
class BehaviorPlan:
    """What a worker needs to act for one behavior."""

    layout: WeightLayout  # the network and its published weights: state_dict names and shapes
    time_horizon: int
    round_agent_steps: int  # this behavior's agent steps a round should hold, per worker
    memory_size: int = 0  # a recurrent policy's memory per agent, kept by the worker's collector


@dataclass(frozen=True)
class ActingPlan:
    behaviors: dict[str, BehaviorPlan]
    weights_name: str  # the main process's weights block: one [slots, size] array per behavior
    slots: int  # weight slots and result blocks, used round-robin
    first_round: int
    seed: int
    reset_parameters: dict[str, float] | None
    # every behavior's spec, as the pool knows it from all the workers: one whose agents have not
    # appeared in this worker's environment yet acts once they do
    specs: dict[str, BehaviorSpec]


def weights_layout(plans: dict[str, BehaviorPlan], slots: int) -> Layout:
    return {f"w{k}": ((slots, weight_size(p.layout)), np.float32) for k, p in enumerate(plans.values())}


def round_steps(plans: dict[str, BehaviorPlan], agents: dict[str, int]) -> int:
    """Environment steps per round: enough for each behavior's share, counted with its agents at
    reset (a behavior without agents yet does not count); at least 1."""
    steps = [math.ceil(p.round_agent_steps / agents[b]) for b, p in plans.items() if agents.get(b)]
    return max(1, min(steps)) if steps else 1


def pack_segments(parts: list[Segments], n_workers: int, index: int) -> dict[str, np.ndarray]:
    """A round's finished segments as flat arrays (rollout/segments.py: SegmentSchema.pack), slots
    made unique across workers (slot x N + i), as agent ids are."""
    out = parts[0].schema.pack(parts)
    out["slot"] = out["slot"] * n_workers + index
    return out


def _result_layout(size: int) -> Layout:
    """A result block: the bytes a round's arrays are packed into (workers/shared_memory.py)."""
    return {"bytes": ((size,), np.uint8)}


# -- the worker's side ---------------------------------------------------------------------------
class _Actor:
    """One behavior's policy (over a local copy of the published weights) and collector."""

    def __init__(self, behavior: str, spec: BehaviorSpec, plan: BehaviorPlan, rng: np.random.Generator) -> None:
        self.weights = np.zeros(weight_size(plan.layout), np.float32)
        self.policy = make_actor(plan.layout, self.weights, rng)  # numpy for plain MLPs, else torch
        self.collector = Collector(spec, plan.time_horizon, memory_size=plan.memory_size, behavior=behavior)
        self.finished: list[Segments] = []
        # the terminal steps env.get_steps still returns were taken at the end of the round before
        self.terminal_taken = False
        self.no_terminal = TerminalSteps.empty(spec)
        self.no_decision = DecisionSteps.empty(spec)  # before its agents appear in this worker


def _write_results(results: list[SharedArrays | None], slot: int,
                   arrays: dict[str, np.ndarray]) -> tuple[Header, tuple[str, int] | None]:
    """Pack a round's arrays into the result block of ``slot``, replacing it by a larger one if
    it is missing or too small; return the header and the new block's (name, size), if any."""
    block = results[slot]
    header = pack_arrays(block, arrays) if block is not None else None
    if header is not None:
        return header, None
    if block is not None:
        block.close(unlink=True)  # the main process keeps its mapping until it swaps
        results[slot] = None  # (gone: if the new one cannot be made, the worker's last close must not unlink it again)
    need = sum(a.nbytes for a in arrays.values())
    results[slot] = block = SharedArrays(_result_layout(max(2 * need, 1 << 16)))  # (room for rounds that grow)
    header = pack_arrays(block, arrays)
    assert header is not None
    return header, (block.name, block["bytes"].nbytes)


def _salvage(conn: Any, actors: dict[str, _Actor], acted: dict[str, DecisionSteps], n_workers: int,
             index: int) -> None:
    """The environment failed in a step: end the episodes under way of the agents that acted in
    it as interrupted at the observation they acted on (reward 0, the value bootstrapped), as
    ``--acting=main`` ends a replaced worker's episodes, and send them with the segments finished
    earlier in the unfinished round. Without this a restart dropped them: a build that failed
    more often than segments finish (``time_horizon``, episode ends) taught the trainer nothing."""
    arrays: dict[str, np.ndarray] = {}
    stats: dict[str, EpisodeStats] = {}
    try:
        for k, (behavior, actor) in enumerate(actors.items()):
            decision = acted.get(behavior)
            if decision is not None and len(decision):
                n = len(decision)
                cut = TerminalSteps(list(decision.obs), np.zeros(n, np.float32), decision.agent_id,
                                    np.ones(n, np.bool_))
                finished = actor.collector.end_episodes(cut)
                if finished is not None:
                    actor.finished.append(finished)
            if actor.finished:
                arrays |= {f"{k}/{f}": a for f, a in pack_segments(actor.finished, n_workers, index).items()}
                actor.finished = []
            stats[behavior] = actor.collector.take_episode_stats()
        conn.send(("salvage", arrays, stats))
    except Exception:  # the failure to report is the environment's
        logger.debug("worker %d could not send its agents' unfinished segments", index, exc_info=True)


def run_acting(env: Any, conn: Any, plan: ActingPlan, n_workers: int, index: int,
               progress: np.ndarray | None = None) -> None:
    """Act in rounds until the main process sends ``("close", ...)``; ``progress[index]`` counts
    the environment steps taken (the pool's control block)."""
    if progress is None:
        progress = np.zeros(index + 1, np.int64)
    from threadpoolctl import threadpool_limits

    # acting multiplies small matrices: BLAS threads would only spin on the cores other workers need
    threadpool_limits(1)
    weights = SharedArrays(weights_layout(plan.behaviors, plan.slots), name=plan.weights_name)
    seeds = np.random.SeedSequence([plan.seed, index]).spawn(len(plan.behaviors))
    actors = {b: _Actor(b, plan.specs[b], p, np.random.default_rng(s))
              for (b, p), s in zip(plan.behaviors.items(), seeds)}
    results: list[SharedArrays | None] = [None] * plan.slots

    def steps_of(behavior: str) -> tuple[DecisionSteps, TerminalSteps]:
        if behavior in env.behavior_specs:
            return env.get_steps(behavior)
        return actors[behavior].no_decision, actors[behavior].no_terminal  # not here yet

    try:
        env.reset(plan.reset_parameters)
        steps = round_steps(plan.behaviors, {b: len(steps_of(b)[0]) for b in actors})
        q, permitted = plan.first_round, plan.first_round - 1
        resets: dict[int, dict[str, float] | None] = {}  # round → the parameters to reset with before it

        def closing(wait_for: int | None) -> bool:
            """Read every message already sent, so that a close waiting behind permissions for
            further rounds is seen now; block only while round ``wait_for`` is not permitted yet.
            True once a close came: the round under way is abandoned (the main process reads no
            more rounds), so that the environment's close() runs within the pool's grace period."""
            nonlocal permitted
            while (wait_for is not None and permitted < wait_for) or conn.poll():
                message = conn.recv()
                if message[0] == "close":
                    return True
                if message[0] == "reset":
                    resets[message[1]] = message[2]
                    continue
                permitted = max(permitted, message[1])
            return False

        next_look = time.monotonic() + CLOSE_LOOK_S
        while True:
            if closing(q):
                return
            if q in resets:
                env.reset(resets.pop(q))
                for actor in actors.values():
                    actor.collector.drop_open_episodes()
                    actor.terminal_taken = False
            for k, actor in enumerate(actors.values()):
                actor.weights[:] = weights[f"w{k}"][q % plan.slots]
            for _ in range(steps):
                acted: dict[str, DecisionSteps] = {}
                for behavior, actor in actors.items():
                    if behavior not in env.behavior_specs:
                        continue  # its agents have not appeared in this worker yet
                    decision, terminal = env.get_steps(behavior)
                    acted[behavior] = decision
                    if actor.terminal_taken:
                        terminal, actor.terminal_taken = actor.no_terminal, False
                    actions, finished = actor.collector.step(decision, terminal, actor.policy.act)
                    if finished is not None:
                        actor.finished.append(finished)
                    env.set_actions(behavior, actions)
                try:
                    env.step()
                except Exception:
                    _salvage(conn, actors, acted, n_workers, index)
                    raise
                progress[index] += 1  # the main process's round timeout counts from the last step
                now = time.monotonic()
                if now >= next_look:  # (a look at the pipe costs a system call: not every fast step)
                    next_look = now + CLOSE_LOOK_S
                    if closing(None):
                        return
            # the episodes that ended on the round's last step are this round's: the environments
            # may reset before the next one (new parameters), and they would be lost
            for behavior, actor in actors.items():
                finished = actor.collector.end_episodes(steps_of(behavior)[1])
                if finished is not None:
                    actor.finished.append(finished)
                actor.terminal_taken = True
            arrays: dict[str, np.ndarray] = {}
            stats: dict[str, EpisodeStats] = {}
            for k, (behavior, actor) in enumerate(actors.items()):
                if actor.finished:
                    arrays |= {f"{k}/{f}": a for f, a in pack_segments(actor.finished, n_workers, index).items()}
                    actor.finished = []
                stats[behavior] = actor.collector.take_episode_stats()
            header, announced = _write_results(results, q % plan.slots, arrays)
            # statistics the environment recorded itself (a Unity scene's stats channel)
            env_stats = env.take_stats() if hasattr(env, "take_stats") else {}
            # behaviors that appeared after the plan was made (envs/base.py): not trained here
            unplanned = [b for b in env.behavior_specs if b not in actors]
            conn.send(("round", q, steps, header, stats, announced, env_stats, unplanned))
            q += 1
    finally:
        for block in results:
            if block is not None:
                block.close(unlink=True)
        weights.close(unlink=False)


# -- the main process's side ---------------------------------------------------------------------
@dataclass
class RoundResult:
    """One behavior's part of one worker's round."""

    behavior: str
    segments: Segments | None  # finished segments, or None if none finished
    episodes: EpisodeStats


class ActingWorkers:
    """Drives ``pool``'s processes in acting mode. ``weights[b]()`` returns behavior ``b``'s current
    weights as named float32 arrays, laid out as ``plans[b].layout``; the workers' environments
    are reset with ``reset_parameters[i]`` (worker ``i``) when they start acting."""

    def __init__(self, pool: WorkerPool, plans: dict[str, BehaviorPlan],
                 weights: dict[str, Callable[[], dict[str, np.ndarray]]], seed: int, threaded: bool = True,
                 reset_parameters: list[dict[str, float]] | None = None) -> None:
        self.pool = pool
        # (the first round they hold for, each worker's parameters), oldest first: a worker
        # restarted at a round starts with the parameters of that round and is told of later ones
        self._parameters: list[tuple[int, list[dict[str, float]] | None]] = [(0, reset_parameters)]
        self.env_stats: list[tuple[int, dict]] = []  # (worker, statistics its environment recorded)
        self.unplanned: set[str] = set()  # behaviors the workers reported that have no plan (warned once)
        self.plans = plans
        self.sources = weights
        self.seed = seed
        # ML-Agents' `threaded: false`: the environments wait while the trainers update, so every
        # round acts with the newest weights
        self.lag = LAG if threaded else 0
        self.slots = self.lag + 1
        self.weights: SharedArrays | None = None
        self.next = 0  # the round to take next
        self.permitted = -1  # the last round the workers may start
        self._reset_rounds: list[int] = []  # the rounds the workers reset their environments before
        # whether the round take_round returned last began with new environments (change_parameters)
        self.reset_before_round = False
        self.restarted: list[int] = []  # the workers restarted while that round was awaited
        # the segments of the episodes those workers had under way, ended where their environment
        # failed (run_acting: _salvage); to record before the restarted workers' episodes are dropped
        self.salvaged: list[RoundResult] = []

    @staticmethod
    def round_agent_steps(buffer_size: int, workers: int) -> int:
        return max(1, buffer_size // (ROUNDS_PER_BUFFER * workers))

    def start(self) -> None:
        self.weights = SharedArrays(weights_layout(self.plans, self.slots))
        for q in range(self.slots):  # the first rounds all act with the initial weights
            self._write_weights(q)
        self.permitted = self.slots - 1
        for i in range(self.pool.n):
            try:
                self._start_worker(i, 0)
            except WorkerFailed as f:
                self._restart(i, f.what, 0)

    def take_env_stats(self) -> list[tuple[int, dict[str, tuple[list[float], int]]]]:
        """(worker index, statistics) the workers' environments recorded since the last call."""
        taken, self.env_stats = self.env_stats, []
        return taken

    def take_round(self) -> tuple[list[RoundResult], int]:
        """Every worker's next round, in worker order; and the environment steps it covered
        (one per instance and step, as the run loop counts global steps)."""
        q = self.next
        results: list[RoundResult] = []
        env_steps = 0
        self.restarted = []
        self.salvaged = []
        for i in range(self.pool.n):
            while True:
                try:
                    steps, arrays, stats = self._receive(i, q)
                    break
                except WorkerFailed as f:
                    self._restart(i, f.what, q)
                    self.restarted.append(i)  # its environments and episodes start anew
            env_steps += steps
            for k, behavior in enumerate(self.plans):
                prefix = f"{k}/"
                part = {key[len(prefix):]: a for key, a in arrays.items() if key.startswith(prefix)}
                schema = segment_schema(self.pool.specs[behavior], recurrent=self.plans[behavior].memory_size > 0)
                results.append(RoundResult(behavior, schema.unpack(part) if part else None, stats[behavior]))
        self.next = q + 1
        self.reset_before_round = any(r <= q for r in self._reset_rounds)
        self._reset_rounds = [r for r in self._reset_rounds if r > q]
        return results, env_steps

    def publish(self) -> None:
        """Call after the trainers have learned from the round just taken: its weights become
        those of round ``taken + 1 + lag``, which the workers may now start."""
        q = self.next - 1 + self.slots
        self._write_weights(q)
        self.permitted = q
        for i in range(self.pool.n):
            try:
                self.pool.send(i, ("round", q))
            except WorkerFailed:
                pass  # found dead when its round is awaited, and restarted then

    @property
    def taken(self) -> int:
        """The round take_round returned last (-1 before the first)."""
        return self.next - 1

    def change_parameters(self, parameters: list[dict[str, float] | None]) -> int:
        """Reset every worker's environment with new parameters (worker ``i``: ``parameters[i]``)
        before the first round not yet permitted, and return that round; the rounds already under
        way finish as they are, with the parameters before."""
        first = self.permitted + 1
        self._parameters.append((first, parameters))
        # a restart starts at a round not taken yet: the parameters before the last change at or
        # before it are no longer needed
        while len(self._parameters) > 1 and self._parameters[1][0] <= self.next:
            self._parameters.pop(0)
        self._reset_rounds.append(first)
        for i in range(self.pool.n):
            try:
                self.pool.send(i, ("reset", first, parameters[i]))
            except WorkerFailed:
                pass  # restarted when its round is awaited, with these parameters
        return first

    def close(self) -> None:
        """Tell the workers to stop now (they abandon the round under way and close their
        environments while the main process saves), and free the weights block."""
        for i in range(self.pool.n):
            try:
                self.pool.send(i, ("close", None))
            except WorkerFailed:
                pass
        if self.weights is not None:
            self.weights.close(unlink=True)
            self.weights = None

    # -- one worker --------------------------------------------------------------------------
    def _write_weights(self, q: int) -> None:
        assert self.weights is not None
        for k, (behavior, source) in enumerate(self.sources.items()):
            arrays = source()
            for name, view in weight_views(self.weights[f"w{k}"][q % self.slots], self.plans[behavior].layout).items():
                view[...] = arrays[name]

    def _start_worker(self, i: int, first_round: int) -> None:
        assert self.weights is not None
        restarts = len(self.pool.workers[i].restarts)
        plan = ActingPlan(self.plans, self.weights.name, self.slots, first_round,
                          self.seed + self.pool.n * restarts, self._parameters_at(first_round, i),
                          {b: self.pool.specs[b] for b in self.plans})
        self.pool.send_message(i, ("act", plan))
        # the changes of parameters not yet reached (a lesson starting a few rounds on), as the
        # other workers were told of them: its environments reset at the same round as theirs
        for r, later in self._parameters:
            if r > first_round:
                self.pool.send(i, ("reset", r, later[i]))
        for q in range(first_round, self.permitted + 1):
            self.pool.send(i, ("round", q))

    def _receive(self, i: int, q: int) -> tuple[int, dict[str, np.ndarray], dict[str, EpisodeStats]]:
        _, got, steps, header, stats, announced, env_stats, unplanned = self.pool.read_pipe(
            i, "round", progress=True, handle=self._take_salvage)
        for behavior in unplanned:
            if behavior not in self.unplanned:
                self.unplanned.add(behavior)
                logger.warning("behavior %r appeared in environment worker %d after training started; with the "
                               "policy acting in the workers it is not trained and its agents get zero actions "
                               "(--acting=main trains it)", behavior, i)
        if got != q:
            raise WorkerFailed(f"it sent round {got} where round {q} was expected")
        key = ("round", q % self.slots)
        if announced is not None:  # a new (larger) result block for this slot
            name, size = announced
            try:
                self.pool.map_block(i, key, _result_layout(size), name)
            except FileNotFoundError:
                # the worker ran ahead, failed and unlinked its blocks before this round was read:
                # the round is lost with it, so it is restarted from this round; its own error,
                # which followed the rounds it sent, says why
                raise WorkerFailed(f"{self._failure_of(i)} (after sending round {q}, whose result block is "
                                   "gone with it)") from None
        # (only now: a round lost with its worker is acted again by the new process, whose
        # statistics for it come then)
        if env_stats:
            self.env_stats.append((i, env_stats))
        return steps, unpack_arrays(self.pool.workers[i].blocks[key], header), stats

    def _take_salvage(self, reply: tuple) -> bool:
        """Keep a failing worker's ``("salvage", arrays, stats)`` (sent just before its error) in
        ``salvaged``; whether ``reply`` was one."""
        if reply[0] != "salvage":
            return False
        _, arrays, stats = reply
        for k, behavior in enumerate(self.plans):
            prefix = f"{k}/"
            part = {key[len(prefix):]: a for key, a in arrays.items() if key.startswith(prefix)}
            schema = segment_schema(self.pool.specs[behavior], recurrent=self.plans[behavior].memory_size > 0)
            if part or behavior in stats:
                self.salvaged.append(RoundResult(behavior, schema.unpack(part) if part else None,
                                                 stats.get(behavior, EpisodeStats())))
        return True

    def _failure_of(self, i: int) -> str:
        """What worker i, known to have failed, said of its failure (the rounds it sent before
        are passed over), or how it ended."""
        try:
            self.pool.read_pipe(i, "error", timeout=FAILURE_REPORT_TIMEOUT_S,
                                handle=lambda reply: self._take_salvage(reply) or True)
        except WorkerFailed as failure:
            return failure.what
        return "it failed"  # (read_pipe only returns an "error" message by raising it)

    def _parameters_at(self, q: int, i: int) -> dict[str, float] | None:
        """Worker i's environment parameters for round q."""
        parameters = next(p for r, p in reversed(self._parameters) if r <= q)
        return parameters[i] if parameters else None

    def _restart(self, i: int, what: str, q: int) -> None:
        # (its new environment's first reset with them: a Unity scene then starts once)
        self.pool.replace_worker(i, what, self._parameters_at(q, i))
        try:
            self._start_worker(i, q)
        except WorkerFailed as f:
            self._restart(i, f.what, q)
