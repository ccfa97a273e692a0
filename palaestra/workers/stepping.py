"""Stepping: N environment instances in worker processes presented as one environment
(``--num-envs N`` with the policy in the main process, and every pool until it acts).

Main side, :class:`WorkerPoolEnv`: the ``Env`` protocol over a :class:`~palaestra.workers.pool.WorkerPool`.
Worker side, :class:`SteppingWorker`: runs in each worker process (workers/process.py).

Worker ``i`` builds its environment with seed ``seed + i x num_areas`` and port ``base_port + i``.
Observations (each in its own shape and stored dtype: uint8 images travel as uint8,
envs/observations.py), rewards, agent ids, masks and actions travel through shared memory, one block per
worker and behavior, which the worker creates (and replaces by a larger one when more agents
arrive than it holds, announced through the pipe); a step command and its reply are counters in
shared memory (workers/shared_memory.py), so the pipes carry only resets, new blocks and errors.
An agent's id is ``id x N + i``, unique across workers. A behavior that appears in a worker's
environment after the first reset (envs/base.py) comes with its first block, which carries its
spec; until a worker has a block for a behavior, that worker has no agents of it.

Pipelining: with two or more workers, the workers form two halves that take turns. ``step()``
hands the shown half its actions and, while that half steps, shows the other half's results;
so the policy acts on one half while the other half's environments run. Every agent still
acts on its own latest observation, so learning is unchanged; only the order in which the
workers' agents reach the policy differs, and a step shows about half of the agents.

A worker that raises, dies or does not answer within ``timeout`` seconds is restarted, within
``RestartLimits`` (workers/pool.py): its agents' episodes end as interrupted at their last
observation, and the new process (seed ``seed + (i + N x restarts) x num_areas``) is reset with the last reset
parameters. Past the limits the step raises an EnvError naming the worker and what happened;
the run loop saves the model and stops with that message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Mapping

import numpy as np

from palaestra.envs.base import (STAT_MOST_RECENT, ActionTuple, BehaviorSpec, DecisionSteps, EngineConfig, EnvError,
                                  TerminalSteps)
from palaestra.envs.observations import as_stored, stored_dtype
from palaestra.options import RunOptions
from palaestra.workers.pool import DEFAULT_TIMEOUT, RestartLimits, WorkerFailed, WorkerPool, describe_spec
from palaestra.workers.process import MESSAGE, READ_PIPE, STEP
from palaestra.workers.shared_memory import Layout, SharedArrays


def block_layout(spec: BehaviorSpec, rows: int) -> Layout:
    """One behavior's block: up to ``rows`` decision and terminal rows (one array per observation,
    ``d_obs_i`` and ``t_obs_i``), the actions, the counts."""
    mask = int(sum(spec.action_spec.discrete_branches))
    observations = {f"{kind}_{i}": ((rows, *shape), stored_dtype(shape))
                    for kind in ("d_obs", "t_obs") for i, shape in enumerate(spec.observation_shapes)}
    return observations | {
        "d_reward": ((rows,), np.float32), "d_id": ((rows,), np.int64), "d_mask": ((rows, mask), np.bool_),
        "t_reward": ((rows,), np.float32), "t_id": ((rows,), np.int64), "t_interrupted": ((rows,), np.bool_),
        "a_cont": ((rows, spec.action_spec.continuous_size), np.float32),
        "a_disc": ((rows, len(spec.action_spec.discrete_branches)), np.int32),
        "counts": ((4,), np.int64),  # decision rows, terminal rows, masked (0/1), action rows
    }


# -- the worker's side ---------------------------------------------------------------------------
class SteppingWorker:
    """Steps the worker's environment with the actions in its blocks, and writes every behavior's
    decision and terminal rows into them."""

    def __init__(self, env: Any, conn: Any, n_workers: int, index: int) -> None:
        self.env, self.conn = env, conn
        self.n_workers, self.index = n_workers, index
        self.blocks: dict[str, SharedArrays] = {}  # created here; the main process maps them

    def step(self) -> None:
        for behavior, block in self.blocks.items():
            n = int(block["counts"][3])
            self.env.set_actions(behavior, ActionTuple(continuous=block["a_cont"][:n].copy(),
                                                       discrete=block["a_disc"][:n].copy()))
        self.env.step()

    def publish(self) -> bool:
        """Write every behavior's rows into its block, agent ids made unique across workers
        (id x N + i); True if the pipe has messages first (a new block, statistics)."""
        env, blocks, conn = self.env, self.blocks, self.conn
        n_workers, index = self.n_workers, self.index
        announced = False
        for behavior, spec in env.behavior_specs.items():  # (behaviors may appear: envs/base.py)
            decision, terminal = env.get_steps(behavior)
            nd, nt = len(decision), len(terminal)
            if behavior not in blocks or max(nd, nt) > blocks[behavior]["d_id"].shape[0]:
                # the first reset, or more agents than the block holds: a new block with room to spare
                rows = max(2 * max(nd, nt), 16)
                if behavior in blocks:
                    blocks.pop(behavior).close(unlink=True)  # the main process keeps its mapping until it swaps
                blocks[behavior] = SharedArrays(block_layout(spec, rows))
                conn.send(("block", behavior, blocks[behavior].name, rows, spec))
                announced = True
            block = blocks[behavior]
            _write_obs(block, "d_obs", decision.obs, spec)
            block["d_reward"][:nd] = decision.reward
            np.add(np.multiply(decision.agent_id, n_workers, out=block["d_id"][:nd]), index, out=block["d_id"][:nd])
            masked = decision.action_mask is not None
            if masked:
                block["d_mask"][:nd] = ~np.concatenate(decision.action_mask, axis=1)
            _write_obs(block, "t_obs", terminal.obs, spec)
            block["t_reward"][:nt] = terminal.reward
            np.add(np.multiply(terminal.agent_id, n_workers, out=block["t_id"][:nt]), index, out=block["t_id"][:nt])
            block["t_interrupted"][:nt] = terminal.interrupted
            block["counts"][:3] = (nd, nt, masked)
        # statistics the environment recorded itself (a Unity scene's stats channel) follow the rows
        env_stats = env.take_stats() if hasattr(env, "take_stats") else {}
        if env_stats:
            conn.send(("env_stats", env_stats))
            announced = True
        if announced:
            conn.send(("steps", None))
        return announced

    def close(self) -> None:
        for block in self.blocks.values():
            block.close(unlink=True)
        self.blocks = {}


def _write_obs(block: SharedArrays, kind: str, obs: list[np.ndarray], spec: BehaviorSpec) -> None:
    for i, (o, shape) in enumerate(zip(obs, spec.observation_shapes, strict=True)):
        block[f"{kind}_{i}"][: len(o)] = as_stored(o, shape)


# -- the main process's side ---------------------------------------------------------------------
@dataclass
class _WorkerState:
    """What the main side remembers of one worker's process between steps."""

    in_flight: bool = False  # stepping: its blocks are not to be read until it replies
    # the decision rows it last showed (merged observations and ids, its first row and row
    # count there), and those to report as interrupted at its next showing because its process
    # was replaced (observations, ids)
    last: dict[str, tuple[list[np.ndarray], np.ndarray, int, int]] = field(default_factory=dict)
    interrupted: dict[str, tuple[list[np.ndarray], np.ndarray]] = field(default_factory=dict)


class WorkerPoolEnv:
    def __init__(self, name: str, num_envs: int, seed: int = 0, num_areas: int = 1,
                 env_args: list[str] | None = None, engine: EngineConfig | None = None,
                 timeout: float = DEFAULT_TIMEOUT, base_port: int = RunOptions.base_port, pipeline: bool = True,
                 restarts: RestartLimits | None = None, parameters: list[dict[str, float]] | None = None) -> None:
        """``parameters``: each worker's environment parameters for its first reset (workers/pool.py)."""
        self.pool = WorkerPool(name, num_envs, seed=seed, num_areas=num_areas, env_args=env_args, engine=engine,
                               timeout=timeout, base_port=base_port, restarts=restarts, parameters=parameters)
        self.n = num_envs
        self._specs: dict[str, BehaviorSpec] = self.pool.specs
        self._state = [_WorkerState() for _ in range(num_envs)]
        half = (num_envs + 1) // 2
        self.groups = [list(range(half)), list(range(half, num_envs))] if pipeline and num_envs > 1 \
            else [list(range(num_envs))]
        self._shown = 0  # the group whose agents get_steps shows
        self._parameters: list[dict[str, float] | None] = [None] * num_envs  # each worker's last reset's
        self._steps: dict[str, tuple[DecisionSteps, TerminalSteps]] = {}
        self._rows: dict[str, dict[int, tuple[int, int]]] = {}  # behavior → worker → (first row, rows) shown
        self._actions: dict[str, ActionTuple] = {}
        self.results_returned = 0  # instances whose results get_steps shows (the run loop counts them)
        self._env_stats: list[tuple[int, dict]] = []  # (worker, statistics its environment recorded)

    # -- the Env protocol --------------------------------------------------------------------
    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        return self._specs

    def reset(self, parameters: Mapping[str, float] | None = None) -> None:
        self.reset_each([parameters] * self.n)

    def reset_each(self, parameters: list[Mapping[str, float] | None]) -> None:
        """Reset every worker, worker ``i`` with ``parameters[i]`` (samplers draw per worker)."""
        self._parameters = [dict(p) if p else None for p in parameters]
        for i, s in enumerate(self._state):  # a step under way finishes; the reset replaces its result
            if s.in_flight:
                self._finish(i)
        for i in range(self.n):
            self._reset_worker(i)
        for s in self._state:  # the trainers ended every episode before the reset, these too
            s.interrupted.clear()
        self._shown = 0
        self._show(self.groups[0])

    def settle(self) -> None:
        """Before a reset: let the steps under way finish and show every worker's last results,
        so that get_steps holds every episode that ended (pipelining shows one half at a time,
        and a reset would replace the other half's results unseen)."""
        for i, s in enumerate(self._state):
            if s.in_flight:
                self._finish(i)
        self._show(list(range(self.n)))

    def step(self) -> None:
        if not self._steps:
            self.reset()
        self._send_actions(self._shown)
        self._actions = {}
        self._shown = (self._shown + 1) % len(self.groups)
        for i in self.groups[self._shown]:
            if self._state[i].in_flight:
                self._finish(i)
        self._show(self.groups[self._shown])

    def get_steps(self, behavior: str) -> tuple[DecisionSteps, TerminalSteps]:
        if behavior not in self._specs:
            raise EnvError(f"unknown behavior {behavior!r}; this environment has {list(self._specs)}")
        if behavior not in self._steps:
            raise EnvError("get_steps() called before reset()")
        return self._steps[behavior]

    def set_actions(self, behavior: str, actions: ActionTuple) -> None:
        self._actions[behavior] = actions

    def close(self) -> None:
        self.pool.close()

    def take_stats(self) -> dict[str, tuple[list[float], int]]:
        """The statistics the workers' environments recorded since the last call, as one
        environment's: averaged values from all workers, most-recent values from worker 0 (as
        ML-Agents takes them)."""
        merged: dict[str, tuple[list[float], int]] = {}
        for worker, env_stats in self._env_stats:
            for key, (values, aggregation) in env_stats.items():
                if aggregation == STAT_MOST_RECENT and worker != 0:
                    continue
                kept = merged.setdefault(key, ([], aggregation))[0]
                kept[:] = list(values) if aggregation == STAT_MOST_RECENT else kept + list(values)
        self._env_stats = []
        return merged

    # -- stepping ----------------------------------------------------------------------------
    def _send_actions(self, group: int) -> None:
        """Write the chosen actions of the shown group into its workers' blocks and start them."""
        chosen = {}
        for behavior, spec in self._specs.items():
            shown = len(self._steps[behavior][0])
            actions = self._actions.get(behavior)
            if actions is None:  # the caller set none: the spec's empty actions
                actions = spec.action_spec.empty_actions(shown)
            spec.action_spec.check(actions, shown, behavior)
            chosen[behavior] = actions
        for i in self.groups[group]:
            blocks = self.pool.workers[i].blocks
            for behavior, actions in chosen.items():
                start, n = self._rows[behavior].get(i, (0, 0))
                if behavior not in blocks:
                    continue
                block = blocks[behavior]
                block["a_cont"][:n] = actions.continuous[start : start + n]
                block["a_disc"][:n] = actions.discrete[start : start + n]
                block["counts"][3] = n
            self.pool.command(i, STEP)  # a dead worker is found when its reply is awaited
            self._state[i].in_flight = True
            self._state[i].interrupted.clear()  # shown with the steps these actions answer

    def _finish(self, i: int) -> None:
        """Wait for worker i's reply; restart it (or raise) if it failed."""
        try:
            self._await(i)
        except WorkerFailed as f:
            self._restart(i, f.what)
        self._state[i].in_flight = False

    def _reset_worker(self, i: int) -> None:
        try:
            self.pool.command(i, MESSAGE, ("reset", self._parameters[i]))
            self._await(i)
        except WorkerFailed as f:
            self._restart(i, f.what)

    def _await(self, i: int) -> None:
        """Wait for worker i's reply, taking the new blocks it announced first."""
        if self.pool.await_reply(i) == READ_PIPE:
            self.pool.read_pipe(i, "steps", handle=partial(self._new_block, i))

    def _new_block(self, i: int, message: tuple) -> bool:
        """Map a behavior's new block, created at the first reset or to grow, or keep the
        statistics the worker's environment recorded; False for any other message."""
        if message[0] == "env_stats":
            self._env_stats.append((i, message[1]))
            return True
        if message[0] != "block":
            return False
        _, behavior, shm_name, rows, spec = message
        known = self._specs.setdefault(behavior, spec)  # (the pool's specs: a restarted worker checks them)
        if known != spec:
            raise self.pool.error(i, f"behavior {behavior!r} has {describe_spec(spec)} there but "
                                     f"{describe_spec(known)} in "
                                     "the other environment workers")
        try:
            self.pool.map_block(i, behavior, block_layout(self._specs[behavior], rows), shm_name)
        except FileNotFoundError:  # the worker failed and released it: its error comes next
            pass
        return True

    def _show(self, group: list[int]) -> None:
        """Merge the group's rows into the steps get_steps returns (copies out of shared memory)."""
        workers = self.pool.workers
        for behavior, spec in self._specs.items():
            group_of = [i for i in group if behavior in workers[i].blocks]
            if not group_of:  # a behavior that so far appeared only in the other half's workers
                self._steps[behavior] = (DecisionSteps.empty(spec), TerminalSteps.empty(spec))
                self._rows[behavior] = {}
                continue
            blocks = [workers[i].blocks[behavior] for i in group_of]
            counts = [block["counts"][:3].tolist() for block in blocks]
            merge = partial(_merge, blocks, counts)
            n_obs = len(spec.observation_shapes)

            def merge_obs(kind: str, column: int) -> list[np.ndarray]:
                return [merge(f"{kind}_{i}", column) for i in range(n_obs)]

            d_obs, d_id = merge_obs("d_obs", 0), merge("d_id", 0)
            mask = None
            if any(c[2] for c in counts):  # unmasked workers' rows allow everything
                allowed = np.concatenate([block["d_mask"][: c[0]] if c[2] else
                                          np.ones((c[0], block["d_mask"].shape[1]), bool)
                                          for block, c in zip(blocks, counts)])
                mask = _masks(~allowed, spec)
            decision = DecisionSteps(d_obs, merge("d_reward", 0), d_id, mask)
            # (kept until the worker's next actions are sent: settle may show the group again)
            cut = [self._state[i].interrupted[behavior] for i in group if behavior in self._state[i].interrupted]
            if cut:  # the agents of replaced processes, reported as interrupted at their last observation
                t_obs = [np.concatenate([shown, *(obs[i] for obs, _ in cut)])
                         for i, shown in enumerate(merge_obs("t_obs", 1))]
                t_id = np.concatenate([merge("t_id", 1)] + [ids for _, ids in cut])
                n_cut = sum(len(ids) for _, ids in cut)
                t_reward = np.concatenate([merge("t_reward", 1), np.zeros(n_cut, np.float32)])
                t_int = np.concatenate([merge("t_interrupted", 1), np.ones(n_cut, bool)])
                terminal = TerminalSteps(t_obs, t_reward, t_id, t_int)
            elif any(c[1] for c in counts):
                terminal = TerminalSteps(merge_obs("t_obs", 1), merge("t_reward", 1),
                                         merge("t_id", 1), merge("t_interrupted", 1))
            else:
                terminal = TerminalSteps.empty(spec)
            self._steps[behavior] = (decision, terminal)
            rows, start = {}, 0
            for i, c in zip(group_of, counts):
                rows[i] = (start, c[0])
                self._state[i].last[behavior] = (d_obs, d_id, start, c[0])
                start += c[0]
            self._rows[behavior] = rows
        self.results_returned = len(group)

    def _restart(self, i: int, what: str) -> None:
        old = self._state[i]
        self.pool.replace_worker(i, what, self._parameters[i])
        # its agents wait for their next step: they are shown as interrupted then (with those of
        # an earlier restart not shown yet, when this one replaces a process whose reset failed)
        interrupted = dict(old.interrupted)
        interrupted |= {b: ([o[start : start + n] for o in obs], ids[start : start + n])
                        for b, (obs, ids, start, n) in old.last.items() if n}
        self._state[i] = _WorkerState(interrupted=interrupted)
        self._reset_worker(i)


def _merge(blocks: list[SharedArrays], counts: list[list[int]], key: str, column: int) -> np.ndarray:
    """Field ``key`` of the workers' blocks, each cut to its row count ``counts[w][column]``, in one
    new array (a copy out of shared memory)."""
    if len(blocks) == 1:
        return blocks[0][key][: counts[0][column]].copy()
    return np.concatenate([block[key][: c[column]] for block, c in zip(blocks, counts, strict=True)])


def _masks(unavailable: np.ndarray, spec: BehaviorSpec) -> list[np.ndarray]:
    out, start = [], 0
    for size in spec.action_spec.discrete_branches:
        out.append(unavailable[:, start : start + size])
        start += size
    return out


