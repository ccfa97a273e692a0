"""What Ctrl+C (SIGINT), SIGTERM (``docker stop``, Kubernetes, SLURM) and SIGHUP (a closed
terminal) do, in each phase of a run. The three signals are handled alike:

- start-up (imports, the environment, building and restoring the trainers): the first signal
  stops at once (KeyboardInterrupt; exit 128 + the signal's number, 130 for Ctrl+C). Nothing was
  trained, so nothing is lost. Only torch's import is waited for (``Interrupts.deferred``): it
  runs Python from C++, and a KeyboardInterrupt raised there aborts the process
  ("terminate called after throwing an instance of 'pybind11::error_already_set'").
- training: the first signal asks the loop to stop after the step it is in; the run then saves a
  checkpoint, exports the ONNX model and exits 128 + the signal. A second signal while the loop is
  still running (a long update, a slow environment) stops the loop at once; the run saves all the
  same. After SIGTERM or SIGHUP (nobody at a keyboard to send the second) the loop gets
  ESCALATE_AFTER_S to reach the save by itself, and is then stopped as by a second signal:
  ``docker stop`` kills 10 s after its SIGTERM, and a hung environment worker would otherwise be
  waited for (300 s).
- closing (the final save and export, stopping the environment workers): further signals are
  noted ("already saving, please wait") and otherwise ignored, so the save always completes and
  the model on disk is whole. To stop a stuck save, send SIGKILL (``kill -9``); every file is
  written atomically, so the files on disk stay complete (docs/outputs.md).

The environment workers ignore the three signals from the moment they start (workers/pool.py):
a terminal or ``docker stop`` may signal the whole process group, and the main process stops the
workers itself once the model is saved.

The state is one attribute, changed in single assignments, so a signal that arrives between two
statements always finds a consistent phase.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing import resource_tracker

# SIGHUP does not exist on Windows
STOP_SIGNALS: tuple[int, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

START_UP, TRAINING, STOPPING, CLOSING = "start-up", "training", "stopping", "closing"
ESCALATE_AFTER_S = 5.0  # after SIGTERM/SIGHUP: how long the loop may take to stop by itself


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def say(message: str) -> None:
    """Write one log line from a signal handler: straight to the file descriptor, because the
    handler may run while the logging stream is in the middle of a write (a re-entrant write to a
    buffered stream raises). A closed terminal (SIGHUP) makes the write fail: nothing to do then."""
    try:
        os.write(2, f"[INFO] {message}\n".encode("utf-8", "replace"))
    except OSError:
        pass


def print_unless_closed(text: str) -> None:
    """print() for a command's results: a reader that closed the pipe (``| head``) has read what it
    wanted, so the rest is dropped without a traceback (stdout then points at the null device, so
    that the interpreter's own flush at exit does not fail again)."""
    try:
        print(text, flush=True)
    except OSError as e:  # (Windows: EINVAL for a pipe whose reader has gone)
        if not (isinstance(e, BrokenPipeError) or sys.platform == "win32" and e.errno == errno.EINVAL):
            raise
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def forget_handled_interrupts() -> None:
    """Let the exit code stand after a KeyboardInterrupt that was caught. When one passes through
    code that ``exec`` runs from a string (dataclasses and namedtuple build their methods so, and
    torch's import is full of them), CPython marks it as unhandled even if it is caught later,
    and at exit kills the process with SIGINT (exit -2, after a clean save). The mark is reset by
    the next ``exec`` of a string: this one. A KeyboardInterrupt that really goes unhandled marks
    it again afterwards."""
    exec("pass")


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back while a child process starts (the environment workers,
    a reward signal's trainer: workers/pool.py, rewards/background.py) or a short step must not be
    cut in two (reading and applying a child's reply), in two ways:

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
    handlers: dict[int, object] = {}
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


def _ignore_stop_signal(signum: int, frame: object) -> None:
    """A child process's stop signals: the main process decides (see ignore_stop_signals)."""


def ignore_stop_signals() -> None:
    """What a child process (an environment worker, a reward signal's trainer) does first: a
    terminal or ``docker stop`` may signal the whole process group, and the main process stops
    its children itself once the model is saved. A handler that does nothing rather than SIG_IGN:
    an ignored signal stays ignored across exec, so a Unity build a worker starts could not be
    stopped with SIGTERM."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _ignore_stop_signal)


_ACTIVE: list["Interrupts"] = []  # the run whose handlers are installed (see stopped_at)


def stopped_at() -> float | None:
    """When (``time.monotonic()``) the first stop signal came to the run in this process, or None:
    for a wait deep in the run (a reward signal's process: rewards/background.py) that must then
    end soon, because the run is about to save and ``docker stop`` kills 10 s after its SIGTERM."""
    return _ACTIVE[-1].stop_time if _ACTIVE else None


class Interrupts:
    """The run's signal handlers and phase (see the module docstring)."""

    def __init__(self) -> None:
        self.state = START_UP
        self.signum: int | None = None  # the first signal received
        self.stop_time: float | None = None  # when (time.monotonic()) it came
        self.stopped_training: int | None = None  # the signal that asked the training loop to stop
        self.saving = False  # the closing phase saves the model (training, not --inference)
        # the phase in which a signal raised KeyboardInterrupt (START_UP or STOPPING), if one did:
        # C extensions may turn it into another error on its way (numpy's import makes it an
        # ImportError), and that error then means the same
        self.raised_in: str | None = None
        self._deferring = False  # see deferred
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """The training loop is asked to stop."""
        return self.state != TRAINING

    def exit_code(self) -> int:
        """The exit code of a run a signal stopped: 128 + the signal's number, as a shell reports it."""
        return 128 + (self.signum if self.signum is not None else signal.SIGINT)

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not in the main thread: the caller keeps its own handling
                return
        _ACTIVE.append(self)

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}
        self._leave()

    def _leave(self) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)

    def ignore(self) -> None:
        """For a process about to exit: the interpreter's shutdown puts back the default actions of
        handled signals (a late Ctrl+C would then kill it with -2 after a clean save), not of ignored ones."""
        self._leave()
        for signum in STOP_SIGNALS:
            try:
                signal.signal(signum, signal.SIG_IGN)
            except ValueError:  # not in the main thread
                return
        self._previous = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum, self.stop_time = signum, time.monotonic()
        name = signal_name(signum)
        state = self.state
        if state == START_UP:
            self.state = CLOSING
            if self._deferring:  # raised at the end of the import (deferred)
                return
            self.raised_in = START_UP
            raise KeyboardInterrupt
        if state == TRAINING:
            self.state = STOPPING
            self.stopped_training = signum
            then = "saving the model" if self.saving else "closing"
            if signum == signal.SIGINT:
                say(f"Interrupted ({name}): stopping after this step, then {then} (Ctrl+C again to stop at once)")
                return
            say(f"Interrupted ({name}): stopping after this step (at most {ESCALATE_AFTER_S:g} s), then {then}")
            timer = threading.Timer(ESCALATE_AFTER_S, self._escalate, args=(signum,))
            timer.daemon = True
            timer.start()
            return
        if state == STOPPING:  # the loop is still in a step: leave it now, then save
            self.state = CLOSING
            self.raised_in = STOPPING
            raise KeyboardInterrupt
        say(f"Interrupted again ({name}): already {'saving the model' if self.saving else 'stopping'}, "
            "please wait")

    def _escalate(self, signum: int) -> None:
        """From a timer thread: the loop has not stopped by itself; signal again, as a second
        signal would (the handler runs in the main thread and leaves the loop at once)."""
        if self.state == STOPPING:
            say(f"The step did not end within {ESCALATE_AFTER_S:g} s of {signal_name(signum)}: stopping at once")
            os.kill(os.getpid(), signum)

    def stopped_during_start_up(self, error: BaseException, report: Callable[[str], None]) -> int:
        """The exit code for ``error`` raised during start-up, after reporting it in one line with
        ``report``: a KeyboardInterrupt, or another error that a signal's KeyboardInterrupt was
        turned into on its way (a C extension's import). Any other error is raised again."""
        if not isinstance(error, KeyboardInterrupt) and self.raised_in != START_UP:
            raise error
        name = signal_name(self.signum) if self.signum is not None else "SIGINT"
        report(f"Interrupted during start-up ({name}); nothing was trained")
        return self.exit_code()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A start-up step that a KeyboardInterrupt must not cut short (torch's import: see the
        module docstring): a signal during it stops start-up when it ends."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        self.check_start_up()

    def check_start_up(self) -> None:
        """Raise KeyboardInterrupt if a signal came during start-up and its KeyboardInterrupt was
        swallowed on the way (some libraries catch it while they import): start-up stops here,
        before anything is deleted or written, rather than going on to train."""
        if self.state == CLOSING and self.signum is not None:
            raise KeyboardInterrupt

    def training(self, saving: bool) -> _TrainingPhase:
        """The training loop's phase, as a ``with`` block. A KeyboardInterrupt raised by a second
        signal comes out of the block (callers catch it); after it the run is closing, whatever
        happened."""
        self.saving = saving
        return _TrainingPhase(self)


class _TrainingPhase:
    def __init__(self, interrupts: Interrupts) -> None:
        self.interrupts = interrupts

    def __enter__(self) -> None:
        if self.interrupts.state == START_UP:  # otherwise a signal came during start-up: stop straight away
            self.interrupts.state = TRAINING

    def __exit__(self, *exc: object) -> None:
        self.interrupts.state = CLOSING
