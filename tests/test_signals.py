"""Signals stop a run cleanly in every phase (palaestra/interrupts.py): SIGINT (Ctrl+C), SIGTERM
(docker stop, Kubernetes, SLURM) and SIGHUP (a closed terminal), sent to the whole process group
as a terminal does or to the main process alone as Kubernetes does, through the real command
line in a subprocess. Each run is short: it is signalled as soon as training is under way, on a
log line rather than after a fixed time, so that a loaded machine only makes it slower."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import onnxruntime as ort
import pytest

from palaestra.checkpoints import CheckpointManager
from palaestra.interrupts import CLOSING, Interrupts, stopped_at

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP") or not hasattr(os, "killpg"),
                                reason="POSIX signals and process groups")

CONFIG = """
3DBall:
  batch_size: 64
  buffer_size: 640
  hidden_units: 16
  num_layers: 1
  max_steps: 10000000
  summary_freq: 200
"""
TRAINING = r"Step: \d+\."  # a summary line: training is under way


class Cli:
    """``python -m palaestra.cli ARGS`` in its own process group, its stderr read line by line."""

    def __init__(self, cwd: Path, *args: str, command: tuple[str, ...] = (sys.executable, "-m", "palaestra.cli")
                 ) -> None:
        (cwd / "c.yaml").write_text(CONFIG)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([*command, "c.yaml", "--env=3DBall", *args],
                                     cwd=cwd, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            self._new.put(line)
        self._new.put(None)

    @property
    def err(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._new.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n{self.err}") from None
            if line is None:
                raise AssertionError(f"the run ended before a line matching {pattern!r}:\n{self.err}")
            if re.search(pattern, line):
                return

    def signal(self, signum: int, group: bool = True) -> None:
        if group:
            os.killpg(self.proc.pid, signum)  # the session leader's pid is its process group's id
        else:
            os.kill(self.proc.pid, signum)

    def finish(self, timeout: float = 120) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def group_gone(self, timeout: float = 30) -> bool:
        return group_gone(self.proc.pid, timeout)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


def group_gone(group: int, timeout: float = 30) -> bool:
    """Whether every process of a run's process group (its workers, multiprocessing's resource
    tracker) has exited within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def cli(tmp_path):
    started: list[Cli] = []

    def start(*args: str, **kwargs: tuple[str, ...]) -> Cli:
        started.append(Cli(tmp_path, *args, **kwargs))
        return started[-1]

    yield start
    for c in started:
        c.kill()


def assert_saved(run_dir: Path, behavior: str = "3DBall") -> None:
    """A checkpoint that loads and an ONNX model that onnxruntime opens."""
    latest = CheckpointManager(run_dir / behavior, 5).latest()
    assert latest is not None, f"no checkpoint in {run_dir / behavior}"
    assert CheckpointManager.load(latest)["algorithm"]["step"] > 0
    ort.InferenceSession(str(run_dir / f"{behavior}.onnx"))


def test_phases_of_the_handlers_in_process():
    interrupts = Interrupts()
    interrupts.install()
    try:
        with pytest.raises(KeyboardInterrupt):  # start-up: at once
            signal.raise_signal(signal.SIGTERM)
        assert interrupts.exit_code() == 128 + signal.SIGTERM and interrupts.state == CLOSING
        signal.raise_signal(signal.SIGINT)  # then only noted
        with pytest.raises(KeyboardInterrupt):  # a library swallowed it: start-up stops all the same
            interrupts.check_start_up()
        interrupts.restore()

        assert stopped_at() is None  # the run's handlers are gone
        interrupts = Interrupts()
        interrupts.install()
        interrupts.check_start_up()  # nothing came during start-up
        with interrupts.training(saving=True):
            assert not interrupts.requested and stopped_at() is None
            before = time.monotonic()
            signal.raise_signal(signal.SIGHUP)  # the first asks the loop to stop
            # (waits deep in the run end soon after it: background.py)
            assert interrupts.requested and before <= stopped_at() <= time.monotonic()
            first = stopped_at()
            with pytest.raises(KeyboardInterrupt):  # the second leaves the loop at once
                signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) * 3:  # the final save: never raised
            signal.raise_signal(signum)
        assert interrupts.state == CLOSING and interrupts.signum == signal.SIGHUP and stopped_at() == first
    finally:
        interrupts.restore()
    assert stopped_at() is None  # the run's handlers are gone


def test_a_signal_during_torch_s_import_stops_start_up_when_the_import_ends():
    # a KeyboardInterrupt raised while torch's C++ runs Python aborts the process (pybind11's
    # error_already_set reaches std::terminate): the one during the import is kept for its end
    interrupts = Interrupts()
    interrupts.install()
    finished = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupts.deferred():
                signal.raise_signal(signal.SIGINT)  # nothing raised here
                signal.raise_signal(signal.SIGINT)  # a second: only noted
                finished.append(True)
        assert finished == [True] and interrupts.state == CLOSING and interrupts.exit_code() == 130
        other = Interrupts()
        with other.deferred():  # nothing came: nothing raised
            pass
    finally:
        interrupts.restore()


def test_an_interrupt_turned_into_another_error_still_stops_cleanly(run_cli, workdir, monkeypatch):
    # C extensions may turn the KeyboardInterrupt into another error on its way: numpy's import
    # makes it an ImportError. That error then means the same.
    import palaestra.run

    def converted(*args):
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            raise ImportError("PyCapsule_Import could not import module") from None

    config = workdir / "c.yaml"
    config.write_text("1D:\n  batch_size: 16\n  buffer_size: 64\n  hidden_units: 8\n  num_layers: 1\n"
                      "  time_horizon: 8\n  max_steps: 100000\n")
    with monkeypatch.context() as patch:  # during start-up
        patch.setattr(palaestra.run, "load_trainer_config", converted)
        result = run_cli(str(config), "--env=Simple1DDiscrete", "--run-id=a")
    assert result.code == 130 and "Interrupted during start-up (SIGINT)" in result.log
    with monkeypatch.context() as patch:  # in a dry run's first step, where the environment's own errors are named
        patch.setattr(palaestra.run, "reset_env", converted)
        result = run_cli(str(config), "--env=Simple1DDiscrete", "--run-id=a", "--dry-run")
    assert result.code == 130 and "Interrupted during start-up (SIGINT)" in result.log, result.log

    original = palaestra.run._StepCounter.add
    calls = []

    def add(self, env_steps):  # in the loop: a first signal, then a second one turned into an error
        original(self, env_steps)
        calls.append(env_steps)
        if len(calls) == 100:
            signal.raise_signal(signal.SIGTERM)
            try:
                signal.raise_signal(signal.SIGTERM)
            except KeyboardInterrupt:
                raise RuntimeError("an error a C extension made of it") from None

    monkeypatch.setattr(palaestra.run._StepCounter, "add", add)
    result = run_cli(str(config), "--env=Simple1DDiscrete", "--run-id=b", "--seed=1")
    assert result.code == 128 + signal.SIGTERM and "Stopped at once: saving what is there" in result.log, result.log
    assert "training stopped" not in result.log and len(calls) == 100
    assert_saved(workdir / "models/b", "1D")


@pytest.mark.parametrize("when", ["last step", "closing", "final save"])
def test_a_run_that_reached_max_steps_exits_0_whatever_signal_comes_after(run_cli, workdir, monkeypatch, when):
    # the exit code says whether a signal stopped the training before max_steps: not one that
    # came as the last step ended, while the progress bar and workers closed, or during the save
    import palaestra.run

    target = {"last step": "_loop", "closing": "_progress_bar", "final save": "_save_at_end"}[when]
    original = getattr(palaestra.run, target)

    def signalled(*args, **kwargs):
        if when == "closing":  # as the block around the loop ends
            import contextlib

            @contextlib.contextmanager
            def bar():
                with original(*args, **kwargs) as inner:
                    yield inner
                signal.raise_signal(signal.SIGTERM)
            return bar()
        if when == "final save":
            signal.raise_signal(signal.SIGTERM)  # noted and ignored: the save completes
        result = original(*args, **kwargs)
        if when == "last step":
            signal.raise_signal(signal.SIGTERM)
        return result

    monkeypatch.setattr(palaestra.run, target, signalled)
    config = workdir / "c.yaml"
    config.write_text("1D:\n  batch_size: 16\n  buffer_size: 64\n  hidden_units: 8\n  num_layers: 1\n"
                      "  time_horizon: 8\n  max_steps: 300\n")
    result = run_cli(str(config), "--env=Simple1DDiscrete", "--run-id=f")
    assert result.code == 0 and "Stopped by" not in result.log, result.log
    assert_saved(workdir / "models/f", "1D")


def test_a_caught_interrupt_keeps_the_exit_code(tmp_path):
    # CPython (3.11 at least) marks a KeyboardInterrupt that passed through exec'd code as
    # unhandled even once caught, and `python -m` then ends by killing itself with SIGINT (exit
    # -2) instead of exiting 3; the CLI resets the mark
    (tmp_path / "caught.py").write_text(
        "import sys\n"
        "from palaestra.interrupts import forget_handled_interrupts\n"
        "try:\n"
        "    exec('raise KeyboardInterrupt')  # as when a Ctrl+C lands while a dataclass is built\n"
        "except KeyboardInterrupt:\n"
        "    pass\n"
        "forget_handled_interrupts()\n"
        "sys.exit(3)\n")
    assert subprocess.run([sys.executable, "-m", "caught"], cwd=tmp_path, timeout=60).returncode == 3


@pytest.mark.parametrize("signum,num_envs,group", [
    (signal.SIGTERM, 1, True),
    (signal.SIGHUP, 1, True),
    (signal.SIGHUP, 2, True),  # a closed terminal, or docker stop where it reaches the group: the workers too
    (signal.SIGTERM, 2, False),  # Kubernetes: the main process (PID 1) alone
])
def test_sigterm_and_sighup_save_export_and_exit_as_signalled(cli, tmp_path, signum, num_envs, group):
    run = cli(f"--num-envs={num_envs}", "--run-id=s")
    run.wait_for(TRAINING)
    run.signal(signum, group)
    code = run.finish()
    # non-zero, as a shell reports a signal: a scheduler sees the run did not finish
    assert code == 128 + signum, run.err
    assert f"Interrupted ({signal.Signals(signum).name})" in run.err
    assert "Traceback" not in run.err and "failed" not in run.err and "leaked" not in run.err, run.err
    assert_saved(tmp_path / "models/s")
    assert run.group_gone(), "a worker or the resource tracker outlived the run"


def test_closing_the_terminal_saves_and_exits_as_hung_up(tmp_path):
    # a real hangup: the run's session has a pseudo-terminal as its controlling terminal, which is
    # then closed; the kernel sends SIGHUP, and writing to the terminal fails from then on
    termios = pytest.importorskip("termios")
    import fcntl
    import pty
    import select

    (tmp_path / "c.yaml").write_text(CONFIG)
    master, slave = pty.openpty()

    def own_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen([sys.executable, "-m", "palaestra.cli", "c.yaml", "--env=3DBall", "--num-envs=2",
                             "--run-id=t"], cwd=tmp_path, stdin=slave, stdout=slave, stderr=slave,
                            preexec_fn=own_terminal, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    os.close(slave)
    try:
        seen, deadline = b"", time.monotonic() + 180
        while b"Step:" not in seen:
            assert time.monotonic() < deadline and proc.poll() is None, seen.decode(errors="replace")
            if select.select([master], [], [], 1)[0]:
                seen += os.read(master, 65536)
        os.close(master)
        assert proc.wait(timeout=120) == 128 + signal.SIGHUP
        assert_saved(tmp_path / "models/t")
        assert group_gone(proc.pid), "a worker or the resource tracker outlived the run"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.mark.parametrize("signum,second_after", [
    (signal.SIGINT, 0.05),
    (signal.SIGINT, 0.1),
    (signal.SIGTERM, 0.07),
    (signal.SIGINT, "save"),  # both taps while the final save runs
])
def test_repeated_signals_never_lose_the_model(cli, tmp_path, signum, second_after):
    run = cli("--run-id=d", "--debug")
    run.wait_for(TRAINING)
    if second_after == "save":
        run.signal(signum)
        run.wait_for(r"\[DEBUG\] final save")
        run.signal(signum)
        time.sleep(0.05)
        run.signal(signum)
    else:
        run.signal(signum)
        time.sleep(second_after)
        run.signal(signum)
        time.sleep(0.05)
        run.signal(signum)  # and a third, for good measure
    code = run.finish()
    assert code == 128 + signum, run.err
    assert "Traceback" not in run.err, run.err
    assert_saved(tmp_path / "models/d")


def _handlers_installed(pid: int) -> bool:
    """Whether the process catches SIGTERM, which only palaestra's handlers do (Python itself
    catches SIGINT alone): from then on, a signal cannot produce a traceback."""
    with open(f"/proc/{pid}/status") as fh:
        caught = next(int(line.split()[1], 16) for line in fh if line.startswith("SigCgt:"))
    return bool(caught & (1 << (signal.SIGTERM - 1)))


CONSOLE_SCRIPT = Path(sys.executable).parent / "mlagents-learn"


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/status"), reason="reads /proc/<pid>/status")
@pytest.mark.parametrize("delay,script", [(0.0, False), (0.05, False), (0.3, False), (0.7, False), (1.0, False),
                                          (1.5, False), (0.3, True)])
def test_ctrl_c_during_start_up_is_one_line(cli, tmp_path, delay, script):
    # Before palaestra's first line runs (the interpreter starting, its site imports) Python's own
    # handling applies, as for any program; the moments count from when palaestra's handlers
    # are in place: the first milliseconds of main, then the torch import, then building the run.
    if script and not CONSOLE_SCRIPT.exists():
        pytest.skip("the mlagents-learn console script is not installed beside this Python")
    run = cli("--run-id=u", **({"command": (str(CONSOLE_SCRIPT),)} if script else {}))
    deadline = time.monotonic() + 60
    while not _handlers_installed(run.proc.pid):
        assert time.monotonic() < deadline and run.proc.poll() is None, run.err
        time.sleep(0.001)
    time.sleep(delay)
    run.signal(signal.SIGINT)
    code = run.finish()
    assert "Traceback" not in run.err, run.err
    if "Interrupted during start-up (SIGINT); nothing was trained" in run.err:
        assert code == 130  # not -2: see interrupts.forget_handled_interrupts
        assert run.err.count("Interrupted") == 1
    else:  # a fast machine was training already: then it is an ordinary stop, saved
        assert code == 130 and "Interrupted (SIGINT)" in run.err, run.err


@pytest.mark.parametrize("delay", [0.0, 0.5])
def test_ctrl_c_while_workers_start_leaves_no_process(cli, delay):
    run = cli("--num-envs=2", "--run-id=w", "--debug")
    run.wait_for(r"starting 2 environment worker")
    time.sleep(delay)
    run.signal(signal.SIGINT)
    code = run.finish()
    assert "Traceback" not in run.err, run.err
    assert code == 130, run.err
    assert run.group_gone(), "a worker or the resource tracker outlived the run"


@pytest.mark.parametrize("acting", ["workers", "main"])
def test_workers_exit_when_the_main_process_is_killed(cli, acting):
    run = cli("--num-envs=2", f"--acting={acting}", "--run-id=k")
    run.wait_for(TRAINING)
    run.signal(signal.SIGKILL, group=False)  # the main process alone: its workers are orphaned
    run.finish()
    assert run.group_gone(timeout=30), "orphaned workers kept running"


def test_workers_ignore_the_stop_signals():
    from palaestra.workers.stepping import WorkerPoolEnv

    env = WorkerPoolEnv("Simple1DDiscrete", 2, seed=0)
    try:
        env.reset()
        pids = [p.pid for p in env.pool.procs]
        for pid in pids:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                os.kill(pid, signum)
        for _ in range(20):
            env.step()
        assert [p.pid for p in env.pool.procs] == pids and all(p.is_alive() for p in env.pool.procs)
        assert all(not w.restarts for w in env.pool.workers)
    finally:
        env.close()


def test_workers_left_running_are_killed_at_exit():
    from palaestra.workers import pool
    from palaestra.workers.stepping import WorkerPoolEnv

    env = WorkerPoolEnv("Simple1DDiscrete", 2, seed=0)
    procs = list(env.pool.procs)
    try:
        pool._kill_leftover_workers()  # what the exit handler does for workers never closed
        assert not any(p.is_alive() for p in procs)
    finally:
        env.close()


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no signal masks on this platform")
def test_a_signal_taken_by_another_thread_waits_until_the_worker_has_started():
    # CI once saw a worker die with "EOFError: Ran out of input": Ctrl+C reached the process
    # through one of torch's threads, whose mask does not block it, and Python ran the handler in
    # the main thread in the middle of Process.start(). The handler now runs after start().
    from palaestra.interrupts import stop_signals_held

    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        with stop_signals_held():
            def take_the_signal() -> None:  # a new thread starts with this thread's mask
                signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)

            other = threading.Thread(target=take_the_signal)
            other.start()
            other.join()
            for _ in range(1000):  # bytecode boundaries where a Python handler would run
                time.sleep(0)
            inside = list(received)
        time.sleep(0.01)
        assert inside == [] and received == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_after_sigterm_a_step_that_does_not_end_is_left_within_the_grace_period(monkeypatch):
    # docker stop kills 10 s after its SIGTERM: a hung environment worker (waited for up to 300 s)
    # must not keep the run from saving
    import time

    from palaestra import interrupts as interrupts_module

    monkeypatch.setattr(interrupts_module, "ESCALATE_AFTER_S", 0.3)
    interrupts = Interrupts()
    interrupts.install()
    try:
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            with interrupts.training(saving=True):
                signal.raise_signal(signal.SIGTERM)
                assert interrupts.requested
                time.sleep(20)  # a step that does not end
        assert time.monotonic() - started < 10 and interrupts.state == CLOSING
    finally:
        interrupts.restore()
