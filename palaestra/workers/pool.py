"""The worker processes behind ``--num-envs``: starting them, talking to them, restarting them.

A :class:`WorkerPool` starts N processes (workers/process.py: worker ``i`` builds its environment
with seed ``seed + (i + N x restarts) x num_areas`` and port ``base_port + i``), takes each one's behavior
specs (the handshake) and then carries commands and messages to them. Two channels lead to each
worker: a command counter and a reply counter in shared memory (workers/shared_memory.py:
``Signal``), with a code beside each, for what must be fast; and a pipe for everything else.
What travels on them is the business of the protocols built on the pool: stepping
(workers/stepping.py) and acting (workers/acting.py).

A worker that fails (raises, dies, or does not answer within ``timeout`` seconds: the protocols
find out and raise :class:`WorkerFailed`) is replaced by :meth:`WorkerPool.replace_worker` within
``RestartLimits``; past them it raises an EnvError naming the worker and what happened.

Stop signals (SIGINT, SIGTERM, SIGHUP) are held back while a process starts, and workers ignore
them: the main process saves the model and then stops them itself.
"""

from __future__ import annotations

import ast
import atexit
import contextlib
import logging
import multiprocessing as mp
import re
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, Mapping

from palaestra.envs.base import BehaviorSpec, EngineConfig, EnvClosed, EnvDataError, EnvError
from palaestra.interrupts import stop_signals_held
from palaestra.options import RunOptions
from palaestra.os_limits import SHM_FOLDER, MachineLimitReached, make_room_for_workers
from palaestra.workers.process import MESSAGE, control_layout, run_worker
from palaestra.workers.shared_memory import (Layout, SharedArrays, Signal, remove_orphaned_blocks,
                                             semaphores_named_for_the_run)

logger = logging.getLogger("palaestra")

DEFAULT_TIMEOUT = 300.0
# Building an environment may take longer than any step (a Unity build loads its scene; a fresh
# interpreter imports its libraries): the handshake waits at least this long.
STARTUP_TIMEOUT = 60.0
TIMEOUT_MARGIN_S = 30.0  # how much longer than --timeout-wait the pool waits for a worker's answer
# a worker's round that found a shared block gone: the main process closed it (the run ended,
# a signal's stop too) while the worker ran ahead (ours on Linux: shared_memory._OURS; CPython's
# elsewhere: POSIX psm_..., Windows wnsm_...)
_SHARED_BLOCK_GONE = re.compile(r"FileNotFoundError.*'/?(psm_|wnsm_|palaestra-[0-9a-f]+-)")
_RAISE_IT = (f" (a hang; if the environment's steps or start can take longer, wait longer with --timeout-wait: "
             f"the workers wait {TIMEOUT_MARGIN_S:.0f} s more than it, and at least {DEFAULT_TIMEOUT:.0f} s)")
CLOSE_GRACE_S = 5.0  # how long closing waits for all the workers to end before killing them
STUCK_CLOSE_GRACE_S = 0.5  # the same after a stop at once left them mid-step


def describe_spec(spec: BehaviorSpec) -> str:
    return f"observations {[list(s) for s in spec.observation_shapes]} and actions {spec.action_spec.describe()}"


def worker_timeout(timeout_wait: float) -> float:
    """How long the pool waits for a worker's answer under ``--timeout-wait``: a worker's
    environment waits that long itself (a Unity build's step or handshake) and says so, so the
    pool waits longer, and at least :data:`DEFAULT_TIMEOUT`."""
    return max(DEFAULT_TIMEOUT, timeout_wait + TIMEOUT_MARGIN_S)


POLL_MAX_S = (2**31 - 1) / 1000  # a pipe's poll takes at most this (its milliseconds are a C int)


def _poll(conn, timeout: float) -> bool:
    """``conn.poll(timeout)`` for any timeout: a ``--timeout-wait`` past 24.8 days (a user's
    "never time out") overflowed the pipe's poll with a traceback."""
    while timeout > POLL_MAX_S:
        if conn.poll(POLL_MAX_S):
            return True
        timeout -= POLL_MAX_S
    return conn.poll(timeout)


@dataclass(frozen=True)
class RestartLimits:
    """How often a failed worker is restarted (ML-Agents' names and defaults; -1: no limit)."""

    max_lifetime: int = RunOptions.max_lifetime_restarts  # restarts of one worker over the whole run
    rate_n: int = RunOptions.restarts_rate_limit_n  # restarts of one worker within rate_period_s
    rate_period_s: float = RunOptions.restarts_rate_limit_period_s

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


REPORTED_EXIT_GRACE_S = 1.0  # a failed worker's time to finish exiting before it is killed for its restart


class WorkerFailed(Exception):
    """A worker failed; ``what`` says how."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass
class Worker:
    """The main process's view of one worker process."""

    proc: Any
    conn: Any
    command: Signal
    reply: Signal
    seq: int = 0  # commands sent
    restarts: list[float] = field(default_factory=list)  # monotonic times of its restarts
    # the shared blocks the worker created and this process maps, under keys its protocol chooses
    # (stepping: a behavior's name; acting: ("round", slot)); closed when the worker stops
    blocks: dict[Hashable, SharedArrays] = field(default_factory=dict)


class WorkerPool:
    """``num_envs`` worker processes, each with environment ``name``, started and through the
    handshake; ``specs`` are the behavior specs they all report."""

    def __init__(self, name: str, num_envs: int, seed: int = 0, num_areas: int = 1,
                 env_args: list[str] | None = None, engine: EngineConfig | None = None,
                 timeout: float = DEFAULT_TIMEOUT, base_port: int = RunOptions.base_port,
                 restarts: RestartLimits | None = None, parameters: list[dict[str, float]] | None = None) -> None:
        """``parameters``: worker i's environment parameters for its first reset (a Unity scene
        resets as it connects: envs/unity/env.py), or None."""
        self.n = num_envs
        engine = engine or EngineConfig()
        self.timeout = timeout
        self.restart_limits = restarts or RestartLimits()
        self._args = (name, seed, num_areas, list(env_args or []), engine, base_port)
        self._ctx = mp.get_context("spawn")  # a fresh interpreter: safe beside torch's threads
        logger.debug("starting %d environment worker process(es) for %s", num_envs, name)
        make_room_for_workers(num_envs)
        removed, freed = remove_orphaned_blocks()
        if removed:
            logger.info("removed %d shared-memory file(s) (%.1f MB) that a killed run left in %s",
                        removed, freed / 1e6, SHM_FOLDER)
        with stop_signals_held():  # starts the resource tracker first, if need be
            self._control = SharedArrays(control_layout(num_envs))
        self.workers: list[Worker] = []
        self._wait_cut_short = False  # see close
        self._failure_said: set[int] = set()  # workers whose failure stopped the run (error): not said again at close
        self._started = False  # every worker through its handshake (before, a failure is the start's)
        try:
            for i in range(num_envs):
                self.workers.append(self._spawn(i, parameters=parameters[i] if parameters else None))
            specs = [self._handshake(i) for i in range(num_envs)]
        except BaseException:
            self.close()
            raise
        self._started = True
        self.specs: dict[str, BehaviorSpec] = self._merge_specs(name, specs)
        make_room_for_workers(num_envs, len(self.specs))  # (each behavior's blocks hold files too)

    def _merge_specs(self, name: str, specs: list[dict[str, BehaviorSpec]]) -> dict[str, BehaviorSpec]:
        """Every instance's behaviors (ML-Agents' union): one whose agents have not asked for a
        decision yet in some instances (spawned later there) is known from the others, and acts
        wherever it is. A behavior with other observations or actions in another instance stops
        the pool."""
        merged: dict[str, BehaviorSpec] = {}
        for i, found in enumerate(specs):
            for behavior, spec in found.items():
                known = merged.setdefault(behavior, spec)
                if spec != known:
                    first = next(k for k, other in enumerate(specs) if behavior in other)
                    self.close()
                    raise EnvError(f"--num-envs: behavior {behavior!r} of {name!r} has {describe_spec(known)} in "
                                   f"environment worker {first} but {describe_spec(spec)} in worker {i}; every "
                                   "instance must give a behavior the same observations and actions")
        return merged

    @property
    def procs(self) -> list[Any]:
        return [w.proc for w in self.workers]

    @contextlib.contextmanager
    def _waiting(self) -> Any:
        try:
            yield
        except KeyboardInterrupt:  # a second signal, or a step that outlasted the first one's grace
            self._wait_cut_short = True
            raise

    def close(self) -> None:
        for i in range(len(self.workers)):
            with contextlib.suppress(WorkerFailed):  # a dead worker needs no message
                self.command(i, MESSAGE, ("close", None))
        # one grace period for all: a scheduler's SIGTERM is followed by SIGKILL after about 10 s,
        # and workers stuck in a hung environment would otherwise take 5 s each; none when a
        # stop at once cut a wait for them short (the run already waited for their step)
        deadline = time.monotonic() + (STUCK_CLOSE_GRACE_S if self._wait_cut_short else CLOSE_GRACE_S)
        for w in self.workers:
            w.proc.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._started:  # (the others' start failed as the one reported did: no second message)
            for i, w in enumerate(self.workers):
                self._report_close_failure(i, w)
                if w.proc.is_alive() and not self._wait_cut_short:
                    logger.warning("environment worker %d (pid %s) did not end within %g s of being closed: killed "
                                   "(its environment may not have been closed)", i, w.proc.pid, CLOSE_GRACE_S)
        for w in self.workers:
            self._stop(w, kill=True)  # those still running after the grace period
        self.workers = []
        if self._control is not None:
            self._control.close(unlink=True)
            self._control = None

    def _report_close_failure(self, i: int, w: Any) -> None:
        """A worker whose environment failed while it was closed said so last in its pipe: a
        warning, as in the main process (run.py's _close_env); the run's results stand. Not for a
        worker whose failure stopped the run (``error``): its report may still be in the pipe."""
        if i in self._failure_said:
            return
        last = None
        with contextlib.suppress(EOFError, OSError):
            for _ in range(64):  # (what is left in the pipe at the end: a few messages at most)
                if not w.conn.poll():
                    break
                last = w.conn.recv()
        if isinstance(last, tuple) and len(last) >= 5 and last[0] == "error" and not last[4]:  # (not a goodbye)
            # (an acting worker runs ahead of the run: a failure in a round past its end is not a closing one)
            when = "while its environment was closed" if last[3] == "close" else "in a round past the run's end"
            # a stop at once (a second Ctrl+C) tears the shared blocks down under rounds still under
            # way: their failing then is the stop's doing, not news; so is a round that found its shared
            # block gone (the run ended, by a signal too, and closed them while the worker ran ahead)
            torn_down = self._wait_cut_short or _SHARED_BLOCK_GONE.search(str(last[1])) is not None
            # a limit of the machine that another worker's failure already stopped the run with
            said_already = len(last) >= 6 and last[5] == "limit" and bool(self._failure_said)
            said = logger.debug if said_already or torn_down and last[3] != "close" else logger.warning
            said("environment worker %d failed %s (%s); the run's results stand", i, when, last[1])

    # -- commands, replies and messages --------------------------------------------------------
    def command(self, i: int, code: int, message: Any = None) -> None:
        """Raise worker i's command counter with ``code`` (workers/process.py), after putting
        ``message`` in its pipe if there is one; WorkerFailed if its process is gone."""
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
        """Send worker i a pipe message it waits for as a command (WorkerFailed if its process is gone)."""
        self.command(i, MESSAGE, message)

    def send(self, i: int, message: Any) -> None:
        """Put a message in worker i's pipe, for a worker that reads its pipe itself (acting)."""
        try:
            self.workers[i].conn.send(message)
        except (BrokenPipeError, OSError):
            raise WorkerFailed("the process died") from None

    def await_reply(self, i: int) -> int:
        """Wait until worker i has answered its last command; its reply code. WorkerFailed if it died
        or did not answer within the timeout."""
        w = self.workers[i]
        with self._waiting():
            answered = w.reply.wait_for(w.seq, time.monotonic() + self.timeout, w.proc.is_alive)
        if not answered:
            if not w.proc.is_alive():
                w.proc.join(timeout=1)
                raise WorkerFailed(f"the process died (exit code {w.proc.exitcode})")
            raise WorkerFailed(f"it did not answer within {self.timeout:.0f} s{_RAISE_IT}")
        return int(self._control["reply_code"][i])

    def read_pipe(self, i: int, expected: str, timeout: float | None = None,
                  handle: Callable[[tuple], bool] | None = None, progress: bool = False) -> tuple:
        """The next message of kind ``expected`` from worker i. Messages before it go to ``handle``,
        which returns whether it took them; an ``("error", what)`` message, any other one, a dead
        process or no message within the timeout raise WorkerFailed. With ``progress`` the
        timeout counts from the worker's last environment step (its control block's progress
        counter), so that a slow but stepping worker (an acting round of many slow steps) is not
        taken for a hung one."""
        w = self.workers[i]
        timeout = self.timeout if timeout is None else timeout
        while True:
            seen = int(self._control["progress"][i])
            with self._waiting():
                ready = _poll(w.conn, timeout)
            if not ready and progress and int(self._control["progress"][i]) != seen:
                continue
            if not ready:
                raise WorkerFailed(f"it did not answer within {timeout:.0f} s" +
                                   (" (nor took an environment step)" if progress else "") + _RAISE_IT)
            try:
                reply = w.conn.recv()
            except (EOFError, OSError):
                w.proc.join(timeout=1)
                raise WorkerFailed(f"the process died (exit code {w.proc.exitcode})") from None
            if reply[0] == "error":
                logger.debug("worker %d failed here:\n%s", i, reply[2].rstrip())
                if reply[4]:  # Play stopped in the Editor, a build quit: the run ends, as in the main process
                    self._failure_said.add(i)
                    raise EnvClosed(f"environment worker {i}: {reply[1]}")
                if reply[5]:  # NaN values, a mask that allows nothing, a limit of the machine: a new process
                    raise self.error(i, reply[1], EnvDataError if reply[5] == "data" else MachineLimitReached)
                raise WorkerFailed(reply[1])
            if handle is not None and handle(reply):
                continue
            if reply[0] != expected:
                raise WorkerFailed(f"it sent {reply[0]!r} where {expected!r} was expected")
            return reply

    def map_block(self, i: int, key: Hashable, layout: Layout, name: str) -> None:
        """Map the shared block worker i created under ``name`` as its block ``key``, in place of
        the one it replaces (which the worker has unlinked). FileNotFoundError if it is gone."""
        w = self.workers[i]
        if key in w.blocks:
            w.blocks.pop(key).close(unlink=False)
        w.blocks[key] = SharedArrays(layout, name=name)

    # -- starting, replacing and stopping a worker ---------------------------------------------
    def replace_worker(self, i: int, what: str, parameters: Mapping[str, float] | None = None) -> Worker:
        """Kill worker i, which failed as ``what`` says, and start a new process in its place
        (through the handshake; its environment's first reset with ``parameters``, those the
        caller resets it with next); EnvError if the restart limits refuse."""
        old = self.workers[i]
        now = time.monotonic()
        refusal = self.restart_limits.refusal(old.restarts, now)
        if refusal is not None:
            raise self.error(i, f"{what}; not restarted: {refusal}")
        logger.warning("environment worker %d (pid %s) failed: %s; restarting it (restart %d)", i, old.proc.pid,
                       what, len(old.restarts) + 1)
        # one that reported its error frees its shared blocks as it exits: a kill in the middle of
        # that left the resource tracker warning about blocks already gone (a hung one waits 1 s more)
        old.proc.join(timeout=REPORTED_EXIT_GRACE_S)
        self._stop(old, kill=True)
        self.workers[i] = new = self._spawn(i, old.restarts + [now], parameters)
        specs = self._handshake(i)
        # behaviors that appeared later (envs/base.py) may be missing until they appear again
        if any(self.specs.get(b, spec) != spec for b, spec in specs.items()):
            raise self.error(i, "the restarted process reports different behaviors or specs")
        for b, spec in specs.items():
            self.specs.setdefault(b, spec)
        return new

    def error(self, i: int, what: str, kind: type[EnvError] = EnvError) -> EnvError:
        self._failure_said.add(i)
        return kind(f"environment worker {i} (pid {self.workers[i].proc.pid}) failed: {what}")

    def _spawn(self, i: int, restarts: list[float] | None = None,
               parameters: Mapping[str, float] | None = None) -> Worker:
        name, seed, num_areas, env_args, engine, base_port = self._args
        restarts = restarts or []
        control = self._control
        for key in control.arrays:
            control[key][i] = 0
        with semaphores_named_for_the_run():
            bells = (self._ctx.Semaphore(0), self._ctx.Semaphore(0))
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            # not a daemon: a daemon process may start none of its own, and an environment may
            # (a factory's AsyncVectorEnv); the pool closes its workers on every way out, and
            # _kill_leftover_workers runs before multiprocessing's exit handler would join them
            target=run_worker, daemon=False, name=f"palaestra-env-{i}",
            # the areas of a worker are seeded one apart (seed, seed + 1, ...): a worker's seed is
            # num_areas apart from the next one's, so that no two copies share a seed
            args=(child, control.name, self.n, i, bells, name, seed + (i + self.n * len(restarts)) * num_areas, num_areas,
                  env_args, engine, base_port + i, dict(parameters) if parameters else None))
        with stop_signals_held(), _main_script_not_rerun():  # (the mask: see run_worker)
            proc.start()
        child.close()
        return Worker(proc, parent, Signal(control["command"], control["command_asleep"], i, bells[0]),
                      Signal(control["reply"], control["reply_asleep"], i, bells[1]), restarts=restarts)

    def _handshake(self, i: int) -> dict[str, BehaviorSpec]:
        try:
            return self.read_pipe(i, "specs", max(self.timeout, STARTUP_TIMEOUT))[1]
        except WorkerFailed as f:
            raise self.error(i, f.what) from None

    def _stop(self, w: Worker, kill: bool = False) -> None:
        """End worker ``w``'s process (at once with ``kill``, else after 5 s) and free its blocks."""
        if kill and w.proc.is_alive():
            w.proc.kill()
        w.proc.join(timeout=5)
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join(timeout=5)
        for block in w.blocks.values():
            # a worker that ended cleanly unlinked its blocks; one that was killed could not
            block.close(unlink=False)
            if w.proc.exitcode != 0:
                _unlink_quietly(block.name)
        w.blocks = {}
        w.conn.close()


@contextlib.contextmanager
def _main_script_not_rerun() -> Iterator[None]:
    """Start a spawned process without running an unguarded main script again in it.

    multiprocessing's spawn imports the parent's ``__main__`` (its file, or its module under
    ``-m``) in the child, under another name, so that what the script defines or registers at its
    top level (a Gymnasium id, say) exists there too. A script that calls Palaestra at its top
    level without an ``if __name__ == "__main__":`` guard would then start a whole run again in
    every worker, which multiprocessing stops with an error. For such a script, ``__main__`` is a
    bare module while the process starts, which spawn passes over (as it does for an interactive
    session): a worker needs nothing from it, its environment comes by name (envs/sources.py).
    Only the main thread starts workers, and no other thread pickles anything from ``__main__``
    meanwhile. The guard is the usual one: a script whose guard is written otherwise
    (``if __name__ == "__main__" and ...``) is taken for unguarded, and its top level does not
    reach the workers."""
    main = sys.modules.get("__main__")
    if main is None or _has_main_guard(getattr(main, "__file__", None)):
        yield
        return
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _has_main_guard(path: str | None) -> bool:
    """Whether the script at ``path`` keeps code under ``if __name__ == "__main__":`` at its top
    level (True for no script: nothing would be run again)."""
    if path is None:
        return True
    try:
        tree = ast.parse(Path(path).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return False
    for node in tree.body:
        test = node.test if isinstance(node, ast.If) else None
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
            sides = {ast.dump(test.left), ast.dump(test.comparators[0])}
            if sides == {ast.dump(ast.Name("__name__", ast.Load())), ast.dump(ast.Constant("__main__"))}:
                return True
    return False


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


def _unlink_quietly(name: str) -> None:
    from multiprocessing import shared_memory

    try:
        shm = shared_memory.SharedMemory(name=name)
    except FileNotFoundError:
        return
    shm.close()
    shm.unlink()
