"""What differs on Windows and macOS, checked here on Linux by taking away what those platforms
lack (``os.fchmod`` before Python 3.13 on Windows, ``os.sched_yield``) or by asking what the code
decides for their paths and names."""

from __future__ import annotations

import importlib
import os
import stat

import pytest

from palaestra.checkpoints import atomic_write_text
from palaestra.envs.sources import _is_factory
from palaestra.envs.unity.launcher import find_executable
from palaestra.options import run_id_problem


def test_files_are_written_where_os_has_no_fchmod(tmp_path, monkeypatch):
    # Windows before Python 3.13: every checkpoint, model and summary save raised AttributeError
    monkeypatch.delattr(os, "fchmod")
    atomic_write_text(tmp_path / "a.txt", "saved")
    assert (tmp_path / "a.txt").read_text() == "saved"


def test_workers_wait_without_sched_yield(monkeypatch):
    # Windows has no os.sched_yield: every worker died on its first wait
    from palaestra.workers import shared_memory

    monkeypatch.delattr(os, "sched_yield")
    try:
        module = importlib.reload(shared_memory)
        module._yield()
    finally:
        monkeypatch.undo()
        importlib.reload(shared_memory)


@pytest.mark.parametrize("name", ["C:\\Users\\me\\Builds\\3DBall\\3DBall", "D:/Builds/3DBall"])
def test_a_windows_build_path_without_its_exe_is_a_path_not_a_python_factory(name):
    assert not _is_factory(name)
    assert _is_factory("my_envs:make") and _is_factory("pettingzoo:mpe2.simple_adversary_v3")


def test_a_macos_app_bundle_named_with_a_trailing_slash_is_found(tmp_path):
    # shells complete a bundle, a folder, with a slash
    executable = tmp_path / "3DBall.app/Contents/MacOS/3DBall"
    executable.parent.mkdir(parents=True)
    executable.write_text("")
    executable.chmod(executable.stat().st_mode | stat.S_IXUSR)
    assert find_executable(f"{tmp_path}/3DBall.app/") == find_executable(f"{tmp_path}/3DBall.app") == str(executable)


@pytest.mark.parametrize("run_id, problem", [
    ("C:foo", "a character Windows does not allow"), ("a?b", "a character Windows does not allow"),
    ("CON", "reserves for a device"), ("nul.run", "reserves for a device"), ("run.", "ends with a dot")])
def test_run_ids_windows_cannot_name_a_folder_are_refused_there_only(monkeypatch, run_id, problem):
    assert run_id_problem(run_id) is None  # (a folder name elsewhere)
    monkeypatch.setattr(os, "name", "nt")
    assert problem in run_id_problem(run_id)
    assert run_id_problem("3DBall_ppo-1") is None


def test_the_run_folder_is_locked_with_msvcrt_where_there_is_no_fcntl(tmp_path, monkeypatch):
    # Windows has no fcntl: two processes with one --run-id mixed both runs' files. A stand-in for
    # msvcrt that refuses a second lock on a byte of the same file while the first handle is open
    import sys
    import types

    from palaestra.run_folders import _LOCKED_BYTE, RunLock, UsageError

    held: dict[tuple[int, int], int] = {}  # (file, byte) -> the fd that holds it

    def locking(fd, mode, n):
        assert mode == msvcrt.LK_NBLCK and n == 1
        key = (os.fstat(fd).st_ino, os.lseek(fd, 0, os.SEEK_CUR))
        holder = held.get(key)
        if holder is not None and holder != fd:  # (the same number again: the holder's was closed)
            try:
                still_open = os.fstat(holder).st_ino == key[0]
            except OSError:
                still_open = False
            if still_open:
                raise PermissionError(13, "Permission denied")
        held[key] = fd

    msvcrt = types.SimpleNamespace(LK_NBLCK=2, locking=locking)
    monkeypatch.setitem(sys.modules, "fcntl", None)  # import fcntl: ImportError
    monkeypatch.setitem(sys.modules, "msvcrt", msvcrt)
    first = RunLock(tmp_path / "run")
    assert [byte for _, byte in held] == [_LOCKED_BYTE]  # past the pid, which stays readable
    with pytest.raises(UsageError, match=rf"run 'run' is in use by another process \(pid {os.getpid()}\)"):
        RunLock(tmp_path / "run")
    first.release()
    RunLock(tmp_path / "run").release()
    assert (tmp_path / "run/.lock").read_text() == f"{os.getpid()}\n"


def _watching_child(folder: str) -> None:
    # as an environment worker would on Windows: its parent's pid stays, so it watches the handle
    import pathlib
    import time

    from palaestra.workers.process import parent_watch

    ppid = os.getppid()
    os.getppid = lambda: ppid  # as Windows reports it after the parent is gone
    os.name = "nt"
    try:
        alive = parent_watch()
    finally:
        os.name = "posix"
    pathlib.Path(folder, "child").write_text(str(os.getpid()))
    deadline = time.monotonic() + 30
    while alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    pathlib.Path(folder, "gone" if not alive() else "timed out").touch()


def _main_process(folder: str) -> None:
    import multiprocessing
    import time

    multiprocessing.get_context("spawn").Process(target=_watching_child, args=(folder,)).start()
    time.sleep(120)  # killed by the test


def test_a_worker_learns_its_main_process_was_killed_where_the_parent_pid_stays(tmp_path):
    # Windows does not re-parent an orphan: a stepping worker that checked its parent's pid waited
    # forever for the next command of a trainer killed outright
    import multiprocessing
    import signal
    import time

    main = multiprocessing.get_context("spawn").Process(target=_main_process, args=(str(tmp_path),))
    main.start()
    child = tmp_path / "child"
    try:
        deadline = time.monotonic() + 60
        while not child.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        assert child.exists() and not (tmp_path / "gone").exists()  # watching, its parent alive
        main.kill()
        main.join()
        deadline = time.monotonic() + 20
        while not (tmp_path / "gone").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "gone").exists()
    finally:
        main.kill()
        if child.exists() and not (tmp_path / "gone").exists():
            os.kill(int(child.read_text()), signal.SIGKILL)
