"""The loop a worker process runs (``--num-envs``; the pool that starts it is workers/pool.py).

The worker builds its environment and sends its behavior specs through the pipe (the
handshake). Then it waits for commands on its ``command`` signal (workers/shared_memory.py) and
dispatches them to a protocol:

- stepping (workers/stepping.py), from the start: a step command finds the actions in the
  worker's shared blocks; a reset waits in the pipe. After each command the worker writes its
  rows into its blocks and raises its ``reply`` signal; the reply code says whether the pipe has
  messages to read first (a new block, an error);
- acting (workers/acting.py), once the pipe brings an ``("act", plan)`` message: from then on the
  worker runs the policy itself, in rounds, until it is closed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import traceback
import warnings
from typing import Any, Callable

import numpy as np

from palaestra.envs.base import ONCE_PER_RUN, EngineConfig, EnvClosed, EnvDataError, EnvError
from palaestra.interrupts import STOP_SIGNALS, ignore_stop_signals
from palaestra.os_limits import MachineLimitReached, too_many_open_files
from palaestra.workers.shared_memory import Layout, SharedArrays, Signal, blocks_belong_to

STEP, MESSAGE = 0, 1  # command codes: step with the actions in the blocks / read the pipe
COUNTS, READ_PIPE = 0, 1  # reply codes: the rows are in the blocks / the pipe has messages first


def control_layout(n_workers: int) -> Layout:
    """The pool's flags, one entry per worker: the two signals, their sleep flags and codes."""
    fields = ("command", "command_asleep", "command_code", "reply", "reply_asleep", "reply_code", "progress")
    return {k: ((n_workers,), np.int64) for k in fields}


def _log_like_the_main_process(index: int) -> None:
    """Warnings and errors logged through Palaestra's logger in this process (the built-in
    environments', the adapters', the acting loop's) in the main process's format, naming the
    worker; a spawned process starts with no handler, and Python's fallback would print the bare
    message. Python ``warnings`` (an environment library's, e.g. Gymnasium's checker) come the same
    way, one line each, naming the worker. (Other libraries' loggers print as they do anywhere.)"""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"[%(levelname)s] environment worker {index}: %(message)s"))
    if index > 0:  # what every worker's environment would say alike is said by the first alone
        handler.addFilter(lambda record: not getattr(record, ONCE_PER_RUN, False))
    palaestra_logger = logging.getLogger("palaestra")
    palaestra_logger.handlers = [handler]
    palaestra_logger.setLevel(logging.WARNING)
    palaestra_logger.propagate = False

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        palaestra_logger.warning("%s: %s (%s:%d)", category.__name__, message, filename, lineno)

    warnings.showwarning = show_warning


def parent_watch() -> Callable[[], bool]:
    """A check of whether the main process is still running. On POSIX a process whose parent died
    is adopted, so its parent's pid changes; Windows keeps the dead parent's pid, so there the
    check is multiprocessing's handle on the parent, which is signalled when the parent exits."""
    if os.name == "nt":
        parent = multiprocessing.parent_process()
        if parent is not None:
            return parent.is_alive
    ppid = os.getppid()
    return lambda: os.getppid() == ppid


def run_worker(conn: Any, control_name: str, n_workers: int, index: int, bells: tuple[Any, Any], name: str,
               seed: int, num_areas: int, env_args: list[str], engine: EngineConfig, port: int,
               parameters: dict[str, float] | None = None) -> None:
    from palaestra.envs.sources import make_env
    from palaestra.workers.stepping import SteppingWorker  # (stepping.py imports the pool, which imports this)

    # Ctrl+C, a closed terminal (SIGHUP) or `docker stop` (SIGTERM) may reach the whole process
    # group; the main process saves the model and then stops the workers itself. The pool starts
    # this process with the signals blocked (workers/pool.py), so none can end it before this line.
    ignore_stop_signals()
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    _log_like_the_main_process(index)
    blocks_belong_to(os.getppid())  # (the run's: see shared_memory._OURS)
    control = SharedArrays(control_layout(n_workers), name=control_name)
    command = Signal(control["command"], control["command_asleep"], index, bells[0])
    reply = Signal(control["reply"], control["reply_asleep"], index, bells[1])
    parent_alive = parent_watch()
    stepping: SteppingWorker | None = None
    seq = 0
    stage = "run"  # then "close": where a failure happened, for the main process's message
    try:
        env = make_env(name, seed=seed, num_areas=num_areas, env_args=env_args, engine=engine, port=port,
                       parameters=parameters)
        specs = dict(env.behavior_specs)
        conn.send(("specs", specs))
        stepping = SteppingWorker(env, conn, n_workers, index)
        while True:
            seq += 1
            if not command.wait_for(seq, float("inf"), parent_alive):
                break  # the main process is gone
            if control["command_code"][index] == STEP:
                stepping.step()
            else:
                kind, payload = conn.recv()
                if kind == "close":
                    break
                if kind == "act":  # from now on the worker acts itself, in rounds, until closed
                    from palaestra.workers.acting import run_acting

                    run_acting(env, conn, payload, n_workers, index, control["progress"])
                    break
                env.reset(payload)
            announced = stepping.publish()
            control["reply_code"][index] = READ_PIPE if announced else COUNTS
            reply.raise_to(seq)
        stage = "close"
        env.close()
    except (EOFError, BrokenPipeError) as e:
        if parent_alive():  # the environment's own (a simulator's socket closed): reported as any error
            _report(e, stage, conn, control, index, reply, seq)
        # else the main process went away: nothing to report to
    except BaseException as e:  # report it; the main process decides what to do
        _report(e, stage, conn, control, index, reply, seq)
    finally:
        if stepping is not None:
            stepping.close()
        control.close(unlink=False)


def _report(e: BaseException, stage: str, conn: Any, control: SharedArrays, index: int, reply: Signal,
            seq: int) -> None:
    """Send the main process the error that ended this worker, whether it was closing, whether
    the environment ended the session itself (EnvClosed: the run ends without an error) and
    whether it sent what breaks a rule of every step (EnvDataError), or met a limit of the machine
    (too many open files, a full /dev/shm): the run stops then, with no restart."""
    limit = too_many_open_files(e)
    detail = limit or (str(e) if isinstance(e, EnvError) else f"{type(e).__name__}: {e}")
    where = "".join(traceback.format_exception(e.__cause__ or e))  # for the main process's --debug log
    # what a new process would meet again: bad data ("data"), and the machine's limits ("limit")
    again = "data" if isinstance(e, EnvDataError) else "limit" if isinstance(e, MachineLimitReached) or limit else ""
    try:
        conn.send(("error", detail, where, stage, isinstance(e, EnvClosed), again))
        control["reply_code"][index] = READ_PIPE
        reply.raise_to(seq)
    except (BrokenPipeError, OSError):
        pass
