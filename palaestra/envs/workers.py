"""``--num-envs N``: N environment instances in worker processes, presented as one environment.

Worker ``i`` (envs/worker_process.py) builds its environment with seed ``seed + i`` and port
``base_port + i``. Observations, rewards, agent ids, masks and actions travel through shared
memory, one block per worker and behavior; a step command and its reply are counters in shared
memory (envs/shm.py), so the pipes carry only resets, new blocks and errors. An agent's id is
``id x N + i``, unique across workers.

Pipelining: with two or more workers, the workers form two halves that take turns. ``step()``
hands the shown half its actions and, while that half steps, shows the other half's results;
so the policy acts on one half while the other half's environments run. Every agent still
acts on its own latest observation, so learning is unchanged; only the order in which the
workers' agents reach the policy differs, and a step shows about half of the agents.

A worker that raises, dies or does not answer within ``timeout`` seconds is restarted, within
``RestartLimits``: its agents' episodes end as interrupted at their last observation, and the
new process (seed ``seed + i + N x restarts``) is reset with the last reset parameters. Past the
limits the step raises an EnvError naming the worker and what happened; the run loop saves the
model and stops with that message.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing as mp
import signal
import time
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import resource_tracker
from typing import Any, Mapping

import numpy as np

from palaestra.envs.base import (
    ActionTuple,
    BehaviorSpec,
    DecisionSteps,
    EngineConfig,
    EnvError,
    TerminalSteps,
)
from palaestra.envs.shm import SharedArrays, Signal
from palaestra.envs.worker_process import (
    MESSAGE,
    READ_PIPE,
    STEP,
    block_layout,
    control_layout,
    run_worker,
)
from palaestra.interrupts import STOP_SIGNALS

logger = logging.getLogger("palaestra")

DEFAULT_TIMEOUT = 300.0
# Building an environment may take longer than any step (a Unity build loads its scene; a fresh
# interpreter imports its libraries): the handshake waits at least this long.
STARTUP_TIMEOUT = 60.0


@dataclass(frozen=True)
class RestartLimits:
    """How often a failed worker is restarted (ML-Agents' names and defaults; -1: no limit)."""

    max_lifetime: int = 10  # restarts of one worker over the whole run
    rate_n: int = 1  # restarts of one worker within rate_period_s
    rate_period_s: float = 60.0

    def refusal(self, earlier: list[float], now: float) -> str | None:
        """Why one more restart is refused, given the times of this worker's earlier restarts."""
        if self.max_lifetime >= 0 and len(earlier) >= self.max_lifetime:
            return (f"it was restarted {len(earlier)} time(s) already, the limit set by "
                    f"--max-lifetime-restarts={self.max_lifetime}")
        recent = sum(1 for t in earlier if now - t < self.rate_period_s)
        if self.rate_n >= 0 and recent >= self.rate_n:
            return (f"it was restarted {recent} time(s) in the last {self.rate_period_s:g} s, the limit set by "
                    f"--restarts-rate-limit-n={self.rate_n} and --restarts-rate-limit-period-s="
                    f"{self.rate_period_s:g}")
        return None


class WorkerFailed(Exception):
    """A worker failed; ``what`` says how."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass
class _Worker:
    """The main process's view of one worker."""

    proc: Any
    conn: Any
    command: Signal
    reply: Signal
    blocks: dict[str, SharedArrays] = field(default_factory=dict)
    seq: int = 0  # commands sent
    in_flight: bool = False  # stepping: its blocks are not to be read until it replies
    restarts: list[float] = field(default_factory=list)  # monotonic times of its restarts
    # the decision rows it last showed (merged flat observations and ids, its first row and row
    # count there), and those to report as interrupted at its next showing because its process
    # was replaced (flat observations, ids)
    last: dict[str, tuple[np.ndarray, np.ndarray, int, int]] = field(default_factory=dict)
    interrupted: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    results: dict[int, SharedArrays] = field(default_factory=dict)  # acting in workers: result block per slot


class WorkerPoolEnv:
    def __init__(self, name: str, num_envs: int, seed: int = 0, num_areas: int = 1,
                 env_args: list[str] | None = None, engine: EngineConfig | None = None,
                 timeout: float = DEFAULT_TIMEOUT, base_port: int = 5005, pipeline: bool = True,
                 restarts: RestartLimits | None = None) -> None:
        self.n = num_envs
        self.timeout = timeout
        self.restart_limits = restarts or RestartLimits()
        self._args = (name, seed, num_areas, list(env_args or []), engine or EngineConfig(), base_port)
        self._ctx = mp.get_context("spawn")  # a fresh interpreter: safe beside torch's threads
        logger.debug("starting %d environment worker process(es) for %s", num_envs, name)
        with _stop_signals_blocked():  # starts the resource tracker first, if need be
            self._control = SharedArrays(control_layout(num_envs))
        self.workers: list[_Worker] = []
        try:
            for i in range(num_envs):
                self.workers.append(self._spawn(i))
            specs = [self._handshake(i) for i in range(num_envs)]
        except BaseException:
            self.close()
            raise
        if any(s != specs[0] for s in specs[1:]):
            self.close()
            raise EnvError(f"--num-envs: the {num_envs} instances of {name!r} report different behaviors or specs")
        self._specs: dict[str, BehaviorSpec] = specs[0]
        half = (num_envs + 1) // 2
        self.groups = [list(range(half)), list(range(half, num_envs))] if pipeline and num_envs > 1 \
            else [list(range(num_envs))]
        self._shown = 0  # the group whose agents get_steps shows
        self._parameters: dict[str, float] | None = None
        self._steps: dict[str, tuple[DecisionSteps, TerminalSteps]] = {}
        self._rows: dict[str, dict[int, tuple[int, int]]] = {}  # behavior → worker → (first row, rows) shown
        self._actions: dict[str, ActionTuple] = {}
        self.results_returned = 0  # instances whose results get_steps shows (the run loop counts them)

    @property
    def procs(self) -> list[Any]:
        return [w.proc for w in self.workers]

    # -- the Env protocol --------------------------------------------------------------------
    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        return self._specs

    def reset(self, parameters: Mapping[str, float] | None = None) -> None:
        self._parameters = dict(parameters) if parameters else None
        for i, w in enumerate(self.workers):  # a step under way finishes; the reset replaces its result
            if w.in_flight:
                self._finish(i)
        for i in range(self.n):
            self._reset_worker(i)
        self._shown = 0
        self._show(self.groups[0])

    def step(self) -> None:
        if not self._steps:
            self.reset()
        self._send_actions(self._shown)
        self._actions = {}
        self._shown = (self._shown + 1) % len(self.groups)
        for i in self.groups[self._shown]:
            if self.workers[i].in_flight:
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
        for i in range(len(self.workers)):
            with contextlib.suppress(WorkerFailed):  # a dead worker needs no message
                self._command(i, MESSAGE, ("close", None))
        for w in self.workers:
            self._stop(w)
        self.workers = []
        if self._control is not None:
            self._control.close(unlink=True)
            self._control = None

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
            w = self.workers[i]
            for behavior, actions in chosen.items():
                start, n = self._rows[behavior][i]
                block = w.blocks[behavior]
                block["a_cont"][:n] = actions.continuous[start : start + n]
                block["a_disc"][:n] = actions.discrete[start : start + n]
                block["counts"][3] = n
            self._command(i, STEP)  # a dead worker is found when its reply is awaited
            w.in_flight = True

    def _finish(self, i: int) -> None:
        """Wait for worker i's reply; restart it (or raise) if it failed."""
        try:
            self._await(i)
        except WorkerFailed as f:
            self._restart(i, f.what)
        self.workers[i].in_flight = False

    def _reset_worker(self, i: int) -> None:
        try:
            self._command(i, MESSAGE, ("reset", self._parameters))
            self._await(i)
        except WorkerFailed as f:
            self._restart(i, f.what)

    def _show(self, group: list[int]) -> None:
        """Merge the group's rows into the steps get_steps returns (copies out of shared memory)."""
        for behavior, spec in self._specs.items():
            blocks = [self.workers[i].blocks[behavior] for i in group]
            counts = [block["counts"][:3].tolist() for block in blocks]
            merge = partial(_merge, blocks, counts)

            d_obs, d_id = merge("d_obs", 0), merge("d_id", 0)
            mask = None
            if any(c[2] for c in counts):  # unmasked workers' rows allow everything
                allowed = np.concatenate([block["d_mask"][: c[0]] if c[2] else
                                          np.ones((c[0], block["d_mask"].shape[1]), bool)
                                          for block, c in zip(blocks, counts)])
                mask = _masks(~allowed, spec)
            decision = DecisionSteps(self._split(d_obs, spec), merge("d_reward", 0), d_id, mask)
            cut = [self.workers[i].interrupted.pop(behavior) for i in group if behavior in self.workers[i].interrupted]
            if cut:  # the agents of replaced processes, reported as interrupted at their last observation
                t_obs = np.concatenate([merge("t_obs", 1)] + [obs for obs, _ in cut])
                t_id = np.concatenate([merge("t_id", 1)] + [ids for _, ids in cut])
                n_cut = sum(len(ids) for _, ids in cut)
                t_reward = np.concatenate([merge("t_reward", 1), np.zeros(n_cut, np.float32)])
                t_int = np.concatenate([merge("t_interrupted", 1), np.ones(n_cut, bool)])
                terminal = TerminalSteps(self._split(t_obs, spec), t_reward, t_id, t_int)
            elif any(c[1] for c in counts):
                terminal = TerminalSteps(self._split(merge("t_obs", 1), spec), merge("t_reward", 1),
                                         merge("t_id", 1), merge("t_interrupted", 1))
            else:
                terminal = TerminalSteps.empty(spec)
            self._steps[behavior] = (decision, terminal)
            rows, start = {}, 0
            for i, c in zip(group, counts):
                rows[i] = (start, c[0])
                self.workers[i].last[behavior] = (d_obs, d_id, start, c[0])
                start += c[0]
            self._rows[behavior] = rows
        self.results_returned = len(group)

    @staticmethod
    def _split(flat: np.ndarray, spec: BehaviorSpec) -> list[np.ndarray]:
        """Flat observation rows → one array per observation of the spec."""
        shapes = spec.observation_shapes
        if len(shapes) == 1 and len(shapes[0]) == 1:
            return [flat]
        out, start = [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            out.append(flat[:, start : start + size].reshape(len(flat), *shape))
            start += size
        return out

    # -- one worker --------------------------------------------------------------------------
    def _spawn(self, i: int, restarts: list[float] | None = None) -> _Worker:
        name, seed, num_areas, env_args, engine, base_port = self._args
        restarts = restarts or []
        control = self._control
        for key in control.arrays:
            control[key][i] = 0
        bells = (self._ctx.Semaphore(0), self._ctx.Semaphore(0))
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=run_worker, daemon=True, name=f"palaestra-env-{i}",
            args=(child, control.name, self.n, i, bells, name, seed + i + self.n * len(restarts), num_areas,
                  env_args, engine, base_port + i))
        with _stop_signals_blocked():  # the new process inherits the mask: see run_worker
            proc.start()
        child.close()
        return _Worker(proc, parent, Signal(control["command"], control["command_asleep"], i, bells[0]),
                       Signal(control["reply"], control["reply_asleep"], i, bells[1]), restarts=restarts)

    def _handshake(self, i: int) -> dict[str, BehaviorSpec]:
        try:
            return self.read_pipe(i, "specs", max(self.timeout, STARTUP_TIMEOUT))[1]
        except WorkerFailed as f:
            raise self._error(i, f.what) from None

    def _command(self, i: int, code: int, message: Any = None) -> None:
        w = self.workers[i]
        if message is not None:
            try:
                w.conn.send(message)
            except (BrokenPipeError, OSError):
                w.proc.join(timeout=1)
                raise WorkerFailed(f"the process died (exit code {w.proc.exitcode})") from None
        self._control["command_code"][i] = code
        w.seq += 1
        w.command.raise_to(w.seq)

    def send_message(self, i: int, message: Any) -> None:
        """Send worker i a pipe message (WorkerFailed if its process is gone)."""
        self._command(i, MESSAGE, message)

    @property
    def reset_parameters(self) -> dict[str, float] | None:
        return self._parameters

    def _await(self, i: int) -> None:
        w = self.workers[i]
        if not w.reply.wait_for(w.seq, time.monotonic() + self.timeout, w.proc.is_alive):
            if not w.proc.is_alive():
                w.proc.join(timeout=1)
                raise WorkerFailed(f"the process died (exit code {w.proc.exitcode})")
            raise WorkerFailed(f"it did not answer within {self.timeout:.0f} s")
        if self._control["reply_code"][i] == READ_PIPE:
            self.read_pipe(i, "steps")

    def read_pipe(self, i: int, expected: str, timeout: float | None = None) -> tuple:
        w = self.workers[i]
        timeout = self.timeout if timeout is None else timeout
        while True:
            if not w.conn.poll(timeout):
                raise WorkerFailed(f"it did not answer within {timeout:.0f} s")
            try:
                reply = w.conn.recv()
            except (EOFError, OSError):
                w.proc.join(timeout=1)
                raise WorkerFailed(f"the process died (exit code {w.proc.exitcode})") from None
            if reply[0] == "error":
                raise WorkerFailed(reply[1])
            if reply[0] == "block":  # a behavior's new block, created at the first reset or to grow
                _, behavior, shm_name, rows = reply
                if behavior in w.blocks:
                    w.blocks.pop(behavior).close(unlink=False)  # the worker unlinked it
                try:
                    w.blocks[behavior] = SharedArrays(block_layout(self._specs[behavior], rows), name=shm_name)
                except FileNotFoundError:  # the worker failed and released it: its error comes next
                    pass
                continue
            if reply[0] != expected:
                raise WorkerFailed(f"it sent {reply[0]!r} where {expected!r} was expected")
            return reply

    def _restart(self, i: int, what: str) -> None:
        last = self.workers[i].last
        new = self.replace_worker(i, what)
        new.interrupted = {b: (obs[start : start + n], ids[start : start + n])  # waiting for their next step
                           for b, (obs, ids, start, n) in last.items() if n}
        self._reset_worker(i)

    def replace_worker(self, i: int, what: str) -> _Worker:
        """Kill worker i, which failed as ``what`` says, and start a new process in its place
        (through the handshake); EnvError if the restart limits refuse."""
        old = self.workers[i]
        now = time.monotonic()
        refusal = self.restart_limits.refusal(old.restarts, now)
        if refusal is not None:
            raise self._error(i, f"{what}; not restarted: {refusal}")
        logger.warning("environment worker %d (pid %s) failed: %s; restarting it (restart %d)", i, old.proc.pid,
                       what, len(old.restarts) + 1)
        self._stop(old, kill=True)
        self.workers[i] = new = self._spawn(i, old.restarts + [now])
        specs = self._handshake(i)
        if specs != self._specs:
            raise self._error(i, "the restarted process reports different behaviors or specs")
        return new

    def _stop(self, w: _Worker, kill: bool = False) -> None:
        if kill and w.proc.is_alive():
            w.proc.kill()
        w.proc.join(timeout=5)
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join(timeout=5)
        for block in [*w.blocks.values(), *w.results.values()]:
            # a worker that ended cleanly unlinked its blocks; one that was killed could not
            block.close(unlink=False)
            if w.proc.exitcode != 0:
                _unlink_quietly(block.name)
        w.blocks, w.results = {}, {}
        w.conn.close()

    def _error(self, i: int, what: str) -> EnvError:
        return EnvError(f"environment worker {i} (pid {self.workers[i].proc.pid}) failed: {what}")


@contextlib.contextmanager
def _stop_signals_blocked() -> Any:
    """Hold SIGINT, SIGTERM and SIGHUP back while a process starts, in two ways:

    - blocked in this thread: a process inherits the mask, so the signals stay pending there until
      it has chosen to ignore them, however long its interpreter takes to start;
    - deferred in Python: another thread of this process (torch's) may take a signal meanwhile,
      and Python would then run the handler in the main thread in the middle of ``start()``, while
      it writes the new process's start-up data; the KeyboardInterrupt would cut that write short
      and the half-started process would die with a traceback. The handler runs once the process
      has started instead.
    """
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no process groups to share signals
        yield
        return
    held: list[int] = []
    handlers: dict[int, Any] = {}
    try:
        for signum in STOP_SIGNALS:
            if callable(signal.getsignal(signum)):
                handlers[signum] = signal.signal(signum, lambda signum, frame: held.append(signum))
    except ValueError:  # not the main thread: Python runs no handler here anyway
        pass
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        # multiprocessing's resource tracker (it unlinks the shared memory of processes that die)
        # ignores SIGINT and SIGTERM but not SIGHUP: started here, a closed terminal cannot end
        # it either. Starting it unblocks SIGINT and SIGTERM on its way out: block them again.
        resource_tracker.ensure_running()
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(held):  # pending in this blocked thread until the mask is restored
            signal.raise_signal(signum)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _kill_leftover_workers() -> None:
    """At exit, kill any worker still running. The pool closes its workers on every way out, but a
    signal between starting a process and recording it can leave one unrecorded; workers ignore
    SIGTERM, so multiprocessing's own exit handler (SIGTERM, then wait without a timeout) would
    wait for it forever. Registered after multiprocessing's handler (multiprocessing.util, which
    the resource_tracker import above loaded), this one runs first."""
    for proc in mp.active_children():
        if proc.name.startswith("palaestra-env-"):
            proc.kill()
            proc.join(timeout=5)


atexit.register(_kill_leftover_workers)


def _merge(blocks: list[SharedArrays], counts: list[list[int]], key: str, column: int) -> np.ndarray:
    """Field ``key`` of the workers' blocks, each cut to its row count ``counts[w][column]``, in one
    new array (a copy out of shared memory)."""
    if len(blocks) == 1:
        return blocks[0][key][: counts[0][column]].copy()
    return np.concatenate([block[key][: c[column]] for block, c in zip(blocks, counts, strict=True)])


def _unlink_quietly(name: str) -> None:
    from multiprocessing import shared_memory

    try:
        shm = shared_memory.SharedMemory(name=name)
    except FileNotFoundError:
        return
    shm.close()
    shm.unlink()


def _masks(unavailable: np.ndarray, spec: BehaviorSpec) -> list[np.ndarray]:
    out, start = [], 0
    for size in spec.action_spec.discrete_branches:
        out.append(unavailable[:, start : start + size])
        start += size
    return out
