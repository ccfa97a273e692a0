"""A reward signal's model trained in a process of its own, on a spare core, while PPO's update
runs: PPO's mini-batch steps and the signal's steps on the same mini-batches are independent
(each writes only its own weights), so the update takes about as long as the longer of the two
instead of their sum. On 3DBall GAIL's discriminator step (with its gradient penalty) costs
about as much as PPO's own mini-batch step, and ML-Agents' rule is one of each per mini-batch.

The result is the same as training in this process, to the bit: the process runs the signal's
own ``update`` (the numpy path, ``trains_in_numpy``, whose only randomness is the signal's numpy
generator) on the same batches in the same order, and hands back the model, the optimizer state
and the generator's state when something here reads them. ``finish_update`` does not wait: the
process finishes the round while PPO gathers the next experience, and PPO rewards that
experience at its next update (``rewards_at_update``), when the model is back and still the one
it would have used as the experience came. A round's stats are therefore reported one update
late. Nothing is lost if the process fails: the batches of a round are kept until it is back,
and a process that died or raised is replaced by training them here, from the state of the
round's start.

- Where: PPO on the CPU, a signal whose update runs in numpy, at least two cores this process
  may use, a POSIX system (the pipe is a socket pair handed to the child), and a round of at
  least ``MIN_WORK_PER_UPDATE``: the rows the model trains on in one PPO update (its steps x
  the batch size) times the model's trained parameters, about its multiply-adds (below that the
  round's hand-over costs more than it saves). ``PALAESTRA_SIGNALS_IN_PROCESS=1`` turns it off.
- Start: when the algorithm gathers experience for its first update (``prepare_updates``; a
  run that never trains starts none), or else at the first update. The process, a fresh
  interpreter (safe beside torch's threads), takes a second or two to import torch, mostly
  while that experience is gathered; until it reports ready the signal trains here, and its
  state goes across at the hand-over.
- Stop signals: the process ignores Ctrl+C, SIGTERM and SIGHUP (the main process saves the model
  and ends it); it exits when its pipe closes, so it never outlives the run. Once one of them has
  come, rounds are waited for until ``STOP_WAIT_S`` after it (each for one ``POLL_S`` at least):
  processes that hang must not keep the run from saving within ``docker stop``'s 10 s, so their
  rounds are dropped (the model is saved as the round started) rather than trained here again.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import queue
import signal as os_signals
import socket
import subprocess
import sys
import threading
import time
import traceback
import weakref
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from palaestra.interrupts import STOP_SIGNALS, ignore_stop_signals, stop_signals_held, stopped_at
from palaestra.machine import usable_cores
from palaestra.rewards.learned import transition_columns
from palaestra.rollout.segments import Segments
from palaestra.timers import timed

logger = logging.getLogger(__name__)

# measured (docs/benchmarks.md): GAIL on CartPole, 20 steps of 256 rows with a 4.7k-parameter
# discriminator (24M), ran slower in a process; curiosity on Pyramids with one epoch (870M) and
# GAIL on Pendulum (190M) ran faster
MIN_WORK_PER_UPDATE = 1e8
SWITCH_OFF = "PALAESTRA_SIGNALS_IN_PROCESS"
BATCHES_PER_MESSAGE = 8  # a message's cost (pickling, two system calls) shared by several
REPLY_TIMEOUT_S = 600.0  # a round's reply; a process silent this long is taken for hung
SLOW_REPLY_S = 60.0  # a round not back after this long is said (a hung process is otherwise silent)
STOP_WAIT_S = 2.0  # how long after a stop signal rounds are still waited for (the run is about to save)
POLL_S = 0.5  # how often a wait for a round looks at the clock and for a stop signal


def in_background_where_it_pays(signals: list, steps_per_update: int, batch_size: int) -> list:
    """``signals`` with each one that qualifies (the module docstring) wrapped in a
    :class:`BackgroundSignal`; the others as they are. ``steps_per_update``: the signal steps of
    one PPO update, of ``batch_size`` rows each."""
    if os.environ.get(SWITCH_OFF, "") not in ("", "0") or usable_cores() < 2 or os.name != "posix":
        return signals
    return [BackgroundSignal(s) if s.learns and s.trains_in_numpy
            and round_work(s, steps_per_update, batch_size) >= MIN_WORK_PER_UPDATE else s for s in signals]


def round_work(signal, steps_per_update: int, batch_size: int) -> int:
    """Rows one update trains the signal's model on, times its trained parameters (0 for a
    signal without a torch ``model``)."""
    model = getattr(signal, "model", None)
    if not isinstance(model, torch.nn.Module):
        return 0
    return steps_per_update * batch_size * sum(p.numel() for p in model.parameters() if p.requires_grad)


def _numpy_state(signal) -> dict[str, Any]:
    """What a round changes: the model's and optimizer's entries (as numpy arrays, which cross a
    pipe as plain bytes) and the signal's random generator."""
    state = {k: v.detach().cpu().numpy().copy() for k, v in signal.state_dict().items()}
    rng = getattr(signal, "rng", None)
    return {"entries": state, "rng": rng.bit_generator.state if rng is not None else None}


def _add_stats(sums: dict[str, list[float]], stats: Mapping[str, float]) -> None:
    """Add one update's stats to running [sum, count] pairs."""
    _add_sums(sums, {key: (float(value), 1) for key, value in stats.items()})


def _add_sums(sums: dict[str, list[float]], more: Mapping[str, tuple[float, int]]) -> None:
    """Add [sum, count] pairs (a round's, from the child) to running ones."""
    for key, (total, count) in more.items():
        mine = sums.setdefault(key, [0.0, 0])
        mine[0] += total
        mine[1] += count


def _load_numpy_state(signal, state: Mapping[str, Any]) -> None:
    signal.load_state_dict({k: torch.as_tensor(v) for k, v in state["entries"].items()})
    if state["rng"] is not None:
        signal.rng.bit_generator.state = state["rng"]


class BackgroundSignal:
    """A learning reward signal (the protocol of rewards/base.py) whose ``update`` runs in a
    child process; everything that reads the model waits for the round to come back first."""

    def __init__(self, signal) -> None:
        self.inner = signal
        # the protocol's constants, read without waiting for a round
        self.name, self.stat_name, self.gamma = signal.name, signal.stat_name, signal.gamma
        self.uses_terminal, self.learns, self.trains_in_numpy = signal.uses_terminal, True, True
        self.rewards_at_update = True  # (the algorithm asks for rewards when its next update needs them)
        self._child: _Child | None = None  # started by the first update (a run that never trains starts none)
        self._gone = False  # the child stopped or failed: every update here from then on
        self._changed_here = False  # the state changed here before the child was ready (sent then)
        self._round: list[Mapping[str, np.ndarray]] = []  # this round's batches, for the child
        self._sent = 0  # how many of them went across (BATCHES_PER_MESSAGE at a time)
        self._round_start: dict[str, Any] | None = None  # the state they start from
        self._stats: dict[str, list[float]] = {}  # this round's stats: sums and counts per key
        self._finishing = False  # the round's end was asked for; the process may still train it
        self._report: dict[str, list[float]] = {}  # the last round's stats, for the next finish_update

    @property
    def _ready(self) -> bool:
        """The child has reported ready and holds this process's state."""
        return self._child is not None and self._child.ready and not self._gone

    @property
    def _conn(self) -> Connection:
        return self._child.conn

    @property
    def _process(self) -> subprocess.Popen:
        return self._child.process

    # -- training ----------------------------------------------------------------------------
    def update(self, batch: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Send ``batch`` to the child (or train here while it starts); the stats come with
        :meth:`finish_update`."""
        if self._finishing:  # the last round's model first: this one starts from it
            self._sync()
        if self._child is None:
            self.start()
        elif not self._ready and not self._gone and self._conn.poll():
            self._take_ready()
        if self._ready:
            if not self._round:
                self._round_start = _numpy_state(self.inner)
            self._round.append(transition_columns(batch))  # what crosses the pipe
            if len(self._round) - self._sent >= BATCHES_PER_MESSAGE:
                self._send_pending()
            return {}
        _add_stats(self._stats, self.inner.update(batch))
        self._changed_here = True
        return {}

    def prepare_updates(self) -> None:
        self.start()

    def start(self) -> None:
        """Start the child with the signal as it is now (the first ``update`` does, if nothing did).
        A signal that cannot be pickled, or a process that cannot be started, trains here."""
        if self._child is not None or self._gone:
            return
        try:
            payload = pickle.dumps(self.inner)
            self._child = _Child(payload)
        except Exception as error:  # (pickling raises several kinds; starting, OSError)
            logger.warning("the %s reward signal's model cannot train in a process of its own (%s: %s); it "
                           "trains in the main process", self.name, type(error).__name__, error)
            self._gone = True
            return
        weakref.finalize(self, self._child.close)

    def finish_update(self) -> dict[str, float]:
        """End the round without waiting for it: the child goes on training while the algorithm
        gathers the next experience, and its model, optimizer and generator come back when
        something reads them (the next update's rewards, a checkpoint). Return the means of the
        stats of the round before: a round's stats are reported one update late, wherever it
        trained."""
        report, self._report = self._report, {}
        if self._ready and self._round:
            if self._sent < len(self._round):
                self._send_pending()
            self._child.send(("finish", None))
            self._finishing = True
        if not self._finishing:  # (trained here, or nothing to train)
            self._report, self._stats = self._stats, {}
        return {k: total / count for k, (total, count) in report.items()}

    def take_report(self) -> dict[str, float]:
        """The last round's stats now, waiting for the round if it is still training (for the
        run's last summary: no later finish_update would report them)."""
        self._sync()
        report, self._report = self._report, {}
        return {k: total / count for k, (total, count) in report.items()}

    def _take_ready(self) -> None:
        try:
            message = self._conn.recv()
        except (OSError, EOFError):
            self._lost("stopped while starting")
            return
        if message[0] != "ready":
            self._lost(f"failed while starting ({_last_line(message[1])})", message[1])
            return
        if self._changed_here:  # rounds trained here while it started
            self._child.send(("load", _numpy_state(self.inner)))
        self._child.ready = True
        logger.debug("the %s reward signal's model trains in process %d from now on", self.name, self._process.pid)

    def _send_pending(self) -> None:
        """Send the round's batches not yet sent, in one message."""
        self._child.send(("update", self._round[self._sent:]))
        self._sent = len(self._round)

    def _sync(self) -> None:
        """The round's model back here (its stats into this round's, or into the report once the
        round's end was asked for)."""
        if self._round:
            self._bring_back()
        if self._finishing:
            self._finishing = False
            self._report, self._stats = self._stats, {}

    def _bring_back(self) -> None:
        if not self._finishing:
            if self._sent < len(self._round):
                self._send_pending()
            self._child.send(("finish", None))
        try:
            with timed("reward_signal_process_wait"):  # in the run's timers: what the process costs here
                wait = self._await_reply()
            if wait == "stopping":
                self._lost(f"did not send its round back within {STOP_WAIT_S:g} s of the stop signal", replay=False)
                return
            if wait == "silent":
                raise TimeoutError
            with stop_signals_held():  # a reply read half, or read and not applied, would be lost
                kind, payload = self._conn.recv()
                if kind == "state":
                    _load_numpy_state(self.inner, payload["state"])
                    _add_sums(self._stats, payload["stats"])
                    self._round, self._sent = [], 0
        except (OSError, EOFError, TimeoutError):
            self._lost("stopped")
            return
        if kind != "state":
            self._lost(f"failed ({_last_line(payload)})", payload)

    def _await_reply(self) -> str:
        """Wait for the child's reply: "answered"; "silent" after REPLY_TIMEOUT_S; "stopping" from
        STOP_WAIT_S after a stop signal on (after one POLL_S at least: several signals' waits
        together stay within it). A long wait is said once."""
        start = time.monotonic()
        said = False
        while not self._conn.poll(POLL_S):  # (a second stop signal's KeyboardInterrupt ends it too)
            now = time.monotonic()
            stopped = stopped_at()
            if stopped is not None and now >= stopped + STOP_WAIT_S:
                return "stopping"
            if now - start >= REPLY_TIMEOUT_S:
                return "silent"
            if not said and now - start >= SLOW_REPLY_S:
                logger.warning("the process training the %s reward signal's model (pid %d) has not sent its "
                               "round back for %g s; training waits for it up to %g s, then trains the round "
                               "in the main process", self.name, self._process.pid, SLOW_REPLY_S, REPLY_TIMEOUT_S)
                said = True
        return "answered"

    def _lost(self, what: str, details: str = "", replay: bool = True) -> None:
        """The child is gone or failed: train the round's batches here, from the state the round
        started from (the same result; an error the child met then happens here, with the run's
        own handling), and from now on every update here. Without ``replay`` (the run is
        stopping) the round's batches are dropped: the state here is still the round's start."""
        logger.warning("the process training the %s reward signal's model %s; %s", self.name, what,
                       "it trains in the main process from now on" if replay else
                       "the model is saved as that round started, without the round's training")
        if details:
            logger.debug("%s", details)
        self._gone = True
        self._child.close()
        replay, self._round, self._sent = self._round if replay else [], [], 0
        if self._round_start is not None and replay:
            _load_numpy_state(self.inner, self._round_start)
            for batch in replay:
                _add_stats(self._stats, self.inner.update(batch))

    # -- what reads the model: after the round ------------------------------------------------
    def rewards(self, segments: Segments) -> np.ndarray:
        self._sync()
        return self.inner.rewards(segments)

    def rewards_for_batch(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        self._sync()
        return self.inner.rewards_for_batch(batch)

    def state_dict(self) -> dict[str, torch.Tensor]:
        self._sync()
        return self.inner.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self._sync()
        self.inner.load_state_dict(state)
        self._changed_here = True
        if self._ready:
            self._child.send(("load", _numpy_state(self.inner)))

    def __getattr__(self, name: str) -> Any:
        # anything else (the model, the optimizer, strength, ...) from the signal, as of the round's end
        if name.startswith("_") or name == "inner":
            raise AttributeError(name)
        self._sync()
        return getattr(self.inner, name)

    def close(self) -> None:
        self._sync()
        self._gone = True
        if self._child is not None:
            self._child.close()


def _last_line(text: str) -> str:
    """A traceback's last line: the error and its message."""
    return text.strip().splitlines()[-1] if text.strip() else "no message"


class _Child:
    """The child process, its end of the pipe here, and the thread that writes to it."""

    def __init__(self, payload: bytes) -> None:
        """Start a fresh interpreter that runs :func:`serve` (not multiprocessing's spawn, which
        would run the user's main script again in it); the pickled signal goes first, and the
        child reads it once its imports are done, a second or two."""
        ours, theirs = socket.socketpair()
        # where this palaestra is imported from, last on the path (first, a site-packages folder
        # would shadow the standard library's modules with any of the same name)
        root = str(Path(__file__).resolve().parent.parent.parent)
        code = (f"import sys; {root!r} in sys.path or sys.path.append({root!r}); "
                f"from palaestra.rewards.background import serve; serve({theirs.fileno()})")
        with stop_signals_held():  # the child inherits the mask until it ignores the signals itself
            self.process = subprocess.Popen([sys.executable, "-c", code], pass_fds=[theirs.fileno()],
                                            stdin=subprocess.DEVNULL)
        theirs.close()
        self.conn = Connection(ours.detach())
        self.ready = False
        self.closed = False
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.outbox.put(payload)
        self.sender = threading.Thread(target=self._send_all, daemon=True, name="palaestra-signal-sender")
        self.sender.start()
        _LIVE.add(self)

    def send(self, message: Any) -> None:
        """Pickled here, written by the sender thread: when the child is behind and the pipe is
        full, the thread waits for it, not the update. Nothing once closed."""
        if not self.closed:
            self.outbox.put(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def _send_all(self) -> None:
        while (data := self.outbox.get()) is not None:
            try:
                self.conn.send_bytes(data)
            except OSError:  # the child died, or closed: the next read of its pipe says so
                return

    def close(self) -> None:
        """End the child at once: whoever closes it has what it needs of its work (the signal
        brought its last round back first) or has given it up (a lost process, a signal no longer
        used, the end of the run), and a child left to exit by itself would take its interpreter's
        teardown, a few tenths of a second, of this process's time. The kill also ends a write
        to it."""
        _LIVE.discard(self)
        self.closed = True
        self.outbox.put(None)
        if self.process.poll() is None:
            self.process.kill()
        self.sender.join(timeout=5.0)
        self.conn.close()  # the pipe is ours alone now
        self.process.wait(timeout=5.0)


# every live child, closed at exit; a child whose parent died without closing it reads the end of
# its pipe and exits by itself
_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for child in list(_LIVE):
        child.close()


def serve(fd: int) -> None:
    """The child, on its end of the pipe: read and unpickle the signal, report ready, then run its
    updates as they come; at ``finish`` send back its state and the round's stats. Exits when the
    pipe closes."""
    ignore_stop_signals()
    if hasattr(os_signals, "pthread_sigmask"):  # (held back while it started: stop_signals_held)
        os_signals.pthread_sigmask(os_signals.SIG_UNBLOCK, STOP_SIGNALS)
    torch.set_num_threads(1)  # one core: the main process has the other
    threadpool_limits(1, user_api="blas")
    conn = Connection(fd)
    try:
        signal = pickle.loads(conn.recv_bytes())
        conn.send(("ready", None))
    except BaseException:
        with contextlib.suppress(EOFError, OSError):
            conn.send(("error", traceback.format_exc()))
        return
    sums: dict[str, list[float]] = {}
    while True:
        try:
            kind, body = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if kind == "update":
                for batch in body:
                    _add_stats(sums, signal.update(batch))
            elif kind == "load":
                _load_numpy_state(signal, body)
            elif kind == "finish":
                conn.send(("state", {"state": _numpy_state(signal), "stats": sums}))
                sums = {}
        except (EOFError, OSError):
            return
        except BaseException:
            with contextlib.suppress(EOFError, OSError):
                conn.send(("error", traceback.format_exc()))
            return
