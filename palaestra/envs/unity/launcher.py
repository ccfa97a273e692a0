"""Finding a Unity build, starting it on its port, and stopping it.

A build is started as ``<executable> [-nographics -batchmode] --mlagents-port <port>
[-logFile <log>] <--env-args...>``, in a session of its own so that Ctrl+C in the terminal reaches
only the trainer, which then quits Unity itself.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from palaestra.envs.base import EnvError

BUILD_SUFFIXES = (".x86_64", ".x86", ".exe", ".app")


def _is_executable_file(path: str) -> bool:
    return os.path.isfile(path) and (os.access(path, os.X_OK) or path.endswith(".exe"))


def _inside_app(bundle: str) -> str | None:
    # macOS: Name.app/Contents/MacOS/<executable>
    found = sorted(p for p in glob.glob(os.path.join(bundle, "Contents", "MacOS", "*")) if os.path.isfile(p))
    return found[0] if found else None


def _in_folder(folder: str) -> list[str]:
    found = []
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if entry.endswith(".app") and os.path.isdir(path):
            inner = _inside_app(path)
            if inner:
                found.append(inner)
        elif entry.endswith(BUILD_SUFFIXES) and os.path.isfile(path) and not entry.startswith("UnityCrashHandler"):
            found.append(path)
    return found


def _runnable(name: str, executable: str) -> str:
    """``executable`` (found inside a folder or bundle) if it may be run; EnvError with the fix if
    it lost its executable bit (a build of another system is named by launch instead)."""
    if not _is_executable_file(executable) and _foreign_build(executable) is None:
        raise EnvError(f"--env={name}: {executable} is not executable; make it so with chmod +x {executable}")
    return executable


def find_executable(name: str) -> str:
    """The executable ``--env`` names: the file itself, the name with a build suffix added, the
    executable inside a macOS ``.app`` bundle, or the one build inside a folder. EnvError says what
    was looked for."""
    path = os.path.expanduser(name)
    if len(path) > 1:  # a shell's completion ends a folder, a macOS .app bundle too, with a slash
        path = path.rstrip("/\\") or path
    if path.endswith(".app") and os.path.isdir(path):
        inner = _inside_app(path)
        if inner is None:
            raise EnvError(f"--env={name}: the app bundle has no executable in Contents/MacOS")
        return _runnable(name, inner)
    if os.path.isdir(path):
        found = _in_folder(path)
        if len(found) == 1:
            return _runnable(name, found[0])
        if not found:
            raise EnvError(f"--env={name}: the folder holds no Unity build (a file ending in "
                           f"{', '.join(BUILD_SUFFIXES)})")
        names = ", ".join(os.path.basename(f) for f in found)
        raise EnvError(f"--env={name}: the folder holds several builds ({names}); name one of them")
    candidates = [path] + [path + suffix for suffix in BUILD_SUFFIXES]
    for candidate in candidates:
        if candidate.endswith(".app") and os.path.isdir(candidate):
            inner = _inside_app(candidate)
            if inner:
                return _runnable(name, inner)
        if os.path.isfile(candidate):
            if not _is_executable_file(candidate):
                suffix = os.path.splitext(candidate)[1]
                if suffix and suffix not in BUILD_SUFFIXES:  # my_env.py, config.yaml: not a build at all
                    raise EnvError(f"--env={name}: {candidate} is not a Unity build (an executable, or a file "
                                   f"ending in {', '.join(BUILD_SUFFIXES)}); a Python factory is given as "
                                   "--env=module:callable (docs/environments.md)")
                raise EnvError(f"--env={name}: {candidate} is not executable; make it so with chmod +x {candidate}")
            return candidate
    raise EnvError(f"--env={name}: no Unity build found (looked for {', '.join(candidates)}); give the path to "
                   "the build's executable, relative to the folder you run from")


def command_line(executable: str, port: int, no_graphics: bool, log_file: str | None, env_args: list[str]) -> list[str]:
    cmd = [executable]
    if no_graphics:
        cmd += ["-nographics", "-batchmode"]
    cmd += ["--mlagents-port", str(port)]
    if log_file is not None:
        cmd += ["-logFile", log_file]
    return cmd + list(env_args)


@dataclass
class UnityProcess:
    """A running build: its process, command line and log."""

    popen: subprocess.Popen
    command: list[str]
    log_file: str | None
    # what the build prints (a native crash's report, gRPC's own messages): a file of its own, since
    # Unity writes -logFile at its own offset and would write over anything appended to it
    output_file: str | None = None
    stopped: bool = field(default=False)

    def exit_description(self) -> str | None:
        """How the build ended (None while it runs)."""
        code = self.popen.poll()
        if code is None:
            return None
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            how = f"was killed by {name}" + (" (it crashed)" if name in ("SIGSEGV", "SIGBUS", "SIGABRT", "SIGILL", "SIGFPE")
                                             else "")
        else:
            how = f"exited with code {code}"
        return f"the build {how}; {self.log_hint()}"

    def log_hint(self) -> str:
        return f"its log is {self.logs()}" if self.log_file else "see the Unity Player log"

    def logs(self) -> str:
        """The log, and the printed output where the build printed anything."""
        with contextlib.suppress(OSError):
            if self.output_file and os.path.getsize(self.output_file):
                return f"{self.log_file} (what it printed: {self.output_file})"
        return str(self.log_file)

    def hint(self) -> str:
        log = self.logs() if self.log_file else "the Unity Player log"
        return (f"Check the build's log ({log}): the scene must have agents "
                "with Behavior Parameters and an Academy that connects to the trainer (com.unity.ml-agents); "
                "a build made with an old ML-Agents package, or a slow machine (raise --timeout-wait), are "
                "the usual causes")

    def stop(self, wait: float = 5.0) -> None:
        """Wait ``wait`` seconds for the build to quit after the trainer said goodbye (0: none was
        said, as to a build that stopped answering); then end it, and the processes it started."""
        if self.stopped:
            return
        self.stopped = True
        try:
            self._end(wait)
        finally:
            with contextlib.suppress(OSError):  # a build that printed nothing leaves no empty file
                if self.output_file and not os.path.getsize(self.output_file):
                    os.remove(self.output_file)

    def _end(self, wait: float) -> None:
        try:
            self.popen.wait(wait)
            return
        except subprocess.TimeoutExpired:
            pass
        for sig, grace in ((signal.SIGTERM, 3.0), (getattr(signal, "SIGKILL", signal.SIGTERM), 3.0)):
            try:
                if hasattr(os, "killpg"):
                    os.killpg(self.popen.pid, sig)
                else:
                    self.popen.send_signal(sig)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.popen.wait(grace)
                return
            except subprocess.TimeoutExpired:
                continue


_RUNNING: list[UnityProcess] = []


def _stop_all_at_exit() -> None:  # a run that fails before closing its environment leaves no build behind
    for process in _RUNNING:
        process.stop(wait=0.5)


PLATFORM_NAMES = {"linux": "Linux", "darwin": "macOS", "win32": "Windows"}
# the first bytes of each platform's executables: ELF, Mach-O (32/64-bit, either byte order, fat), PE
_MAGIC = ((b"\x7fELF", "Linux"), (b"\xfe\xed\xfa\xce", "macOS"), (b"\xfe\xed\xfa\xcf", "macOS"),
          (b"\xce\xfa\xed\xfe", "macOS"), (b"\xcf\xfa\xed\xfe", "macOS"), (b"\xca\xfe\xba\xbe", "macOS"),
          (b"MZ", "Windows"))


def _foreign_build(executable: str) -> str | None:
    """Why a build that would not start is for another platform (from its name or its first
    bytes), with what to do; None when it does not look like one."""
    here = PLATFORM_NAMES.get(sys.platform, sys.platform)
    made_for = None
    try:
        with open(executable, "rb") as fh:
            head = fh.read(4)
        made_for = next((platform for magic, platform in _MAGIC if head.startswith(magic)), None)
    except OSError:
        pass
    if made_for is None:
        made_for = ("Windows" if executable.lower().endswith(".exe") else
                    "macOS" if ".app/Contents/MacOS/" in executable.replace(os.sep, "/") else None)
    if made_for is None or made_for == here:
        return None
    target = "Linux, x86_64" if here == "Linux" else here
    return (f"it is a {made_for} build and this machine runs {here}; build the Unity project for {here} "
            f"(File > Build Settings, Target Platform {target}) and give that build's path")


# What a build's process runs first on Linux, in a fresh interpreter, before it becomes the build:
# it has the kernel kill it when its parent dies (a worker process the pool had to kill cannot
# stop its build itself, and the build, in a session of its own, would otherwise run on, holding
# its port), then executes the build; a failed exec reports its errno through the pipe. Not a
# preexec_fn: Python code in a child forked while gRPC's threads run aborts now and then (6 in
# 1,500 launches measured), where a fork without it (vfork) runs no code before the exec.
_EXEC_TIED_TO_PARENT = """
import ctypes, os, signal, sys
parent, report = int(sys.argv[1]), int(sys.argv[2])
os.set_inheritable(report, False)
ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
if os.getppid() != parent:
    os._exit(1)
try:
    os.execvp(sys.argv[3], sys.argv[3:])
except OSError as e:
    os.write(report, str(e.errno).encode())
os._exit(127)
"""


def _can_tie_to_parent() -> bool:
    """Whether a build can be tied to this process: on Linux, started from the main thread (the
    kernel's parent-death signal follows the thread that started the child, and the main thread
    lives as long as the process), with an interpreter to run the tie."""
    import threading

    return (sys.platform == "linux" and threading.current_thread() is threading.main_thread()
            and bool(sys.executable))


def _popen_tied_to_parent(cmd: list[str], **kwargs) -> subprocess.Popen:
    """``subprocess.Popen(cmd, **kwargs)`` for a child the kernel kills when this process dies; an
    exec that fails raises OSError here, as Popen's own does."""
    read_end, write_end = os.pipe()
    try:
        popen = subprocess.Popen([sys.executable, "-I", "-S", "-c", _EXEC_TIED_TO_PARENT, str(os.getpid()),
                                  str(write_end), *cmd], pass_fds=(write_end,), **kwargs)
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        failure = pipe.read()  # nothing, once the exec closed the pipe
    if failure:
        popen.wait()
        code = int(failure)
        raise OSError(code, os.strerror(code), cmd[0])
    return popen


def launch(executable: str, port: int, no_graphics: bool, log_folder: str | None, env_args: list[str]) -> UnityProcess:
    log_file = output_file = None
    if log_folder is not None:
        folder = Path(log_folder).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        log_file, output_file = str(folder / f"Player-{port}.log"), str(folder / f"Player-{port}.out")
        # the files of a build this one replaces (a worker's restart after a crash, an earlier run)
        # are kept once: the build truncates its -logFile, and the crash's reason is in them
        for current, suffix in ((log_file, "log"), (output_file, "out")):
            with contextlib.suppress(OSError):
                if os.path.getsize(current):
                    os.replace(current, str(folder / f"Player-{port}.previous.{suffix}"))
    cmd = command_line(executable, port, no_graphics, log_file, env_args)
    out = open(output_file, "wb") if output_file else subprocess.DEVNULL
    try:
        popen = (_popen_tied_to_parent if _can_tie_to_parent() else subprocess.Popen)(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=sys.platform != "win32")
    except OSError as e:
        foreign = _foreign_build(executable) if e.errno in (errno.ENOEXEC, errno.EACCES) else None
        raise EnvError(f"cannot start the Unity build {executable}: {foreign or e.strerror or e}") from None
    finally:
        if output_file:
            out.close()
    process = UnityProcess(popen, cmd, log_file, output_file)
    if not _RUNNING:
        import atexit

        atexit.register(_stop_all_at_exit)
    _RUNNING.append(process)
    return process
