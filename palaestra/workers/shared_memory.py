"""Shared memory between the main process and the worker processes (workers/pool.py).

``SharedArrays``: named numpy views over one shared-memory block.

``Signal``: a counter one process raises and another waits for. Waking a sleeping process
costs tens of microseconds on a virtual machine, more than a cheap environment step, so the
waiter first spins, giving its core away on every turn (``sched_yield``): with more busy
processes than cores, a worker that is ready to run gets the core at once. After ``spin``
seconds it sleeps on a semaphore, which the raiser releases only while the waiter says it is
asleep. Both sides write a flag and then read the other's, and nothing orders those two
accesses across cores, so a release can be missed; the sleeper therefore wakes every
``NAP`` seconds to look again, which bounds the cost of that rare race.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import secrets
import time
from multiprocessing import shared_memory
from typing import Any, Callable, Iterator

import numpy as np

from palaestra.os_limits import SHM_FOLDER, OutOfSharedMemory, reserve_shared_memory

# the spin-wait's pause: the CPU to another thread for a moment (Windows has no sched_yield)
_yield = getattr(os, "sched_yield", lambda: time.sleep(0))

Layout = dict[str, tuple[tuple[int, ...], Any]]  # field → (shape, dtype)

NAP = 0.02  # seconds a sleeping waiter sleeps before it looks at the counter again
SPIN = 0.002  # seconds a waiter spins before it sleeps: longer than a typical step


# Our blocks' names, where the system keeps them in SHM_FOLDER (Linux): the id of the run's main
# process and its PID namespace, so that a later run can tell the blocks of a run killed with
# SIGKILL (nothing of it left to unlink them: the resource tracker dies with the process group)
# from those of a run still going, here or in another container sharing the folder. A worker's
# blocks carry its main process's id (blocks_belong_to): the main process may still open one by
# name after the worker that made it has died.
# multiprocessing's semaphores are named alike (semaphores_named_for_the_run), sem.palaestra-...
# in the folder, with its own random part.
_OURS = re.compile(r"(?:sem\.)?palaestra-([0-9a-f]+)-([0-9]+)-[0-9a-z_]{8}")
_owner: list[int] = []  # in a worker process: the run's main process (blocks_belong_to)


def blocks_belong_to(pid: int) -> None:
    """Name the blocks this process makes after process ``pid`` (a worker's: its main process)."""
    _owner[:] = [pid]


def _pid_namespace() -> int | None:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def _run_prefix() -> str | None:
    """The start of the names :func:`remove_orphaned_blocks` recognizes, or None where shared
    memory lives elsewhere (macOS: names of at most 31 characters; Windows): CPython's names then."""
    namespace = _pid_namespace()
    if namespace is None or not os.path.isdir(SHM_FOLDER):
        return None
    return f"palaestra-{namespace:x}-{_owner[0] if _owner else os.getpid()}"


def _new_block_name() -> str | None:
    prefix = _run_prefix()
    return None if prefix is None else f"{prefix}-{secrets.token_hex(4)}"


@contextlib.contextmanager
def semaphores_named_for_the_run() -> Iterator[None]:
    """multiprocessing's semaphores made inside are named as the blocks are, so that the next run
    removes those of a run killed with its process group too (a page of memory each). Their names'
    start is a per-process setting of multiprocessing's ("semprefix", "/mp"): where it has none,
    or shared memory lives elsewhere, the names stay its own."""
    config = getattr(multiprocessing.current_process(), "_config", None)
    prefix = _run_prefix()
    if not isinstance(config, dict) or "semprefix" not in config or prefix is None:
        yield
        return
    previous = config["semprefix"]
    config["semprefix"] = f"/{prefix}"
    try:
        yield
    finally:
        config["semprefix"] = previous


def remove_orphaned_blocks() -> tuple[int, int]:
    """Unlink the blocks and semaphores in SHM_FOLDER of runs of this PID namespace whose main
    process is gone (a run killed with SIGKILL: their memory would stay taken until the machine
    restarts); how many, and the bytes of memory that frees. Those of living runs, of other
    namespaces, and other programs' stay."""
    namespace = _pid_namespace()
    try:
        names = os.listdir(SHM_FOLDER) if namespace is not None else []
    except OSError:
        return 0, 0
    removed = freed = 0
    for name in names:
        match = _OURS.fullmatch(name)
        if match is None or int(match.group(1), 16) != namespace or _alive(int(match.group(2))):
            continue
        path = os.path.join(SHM_FOLDER, name)
        try:
            size = os.stat(path).st_blocks * 512
            os.unlink(path)
        except OSError:  # (another user's, or removed meanwhile)
            continue
        removed, freed = removed + 1, freed + size
    return removed, freed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, OSError):  # (PermissionError: another user's process)
        return True
    return True


class SharedArrays:
    """Named numpy views over one shared-memory block; ``name=None`` creates the block, backed
    with memory at once, all of it (os_limits: a full /dev/shm is an OutOfSharedMemory here, not
    a SIGBUS at a later write)."""

    def __init__(self, layout: Layout, name: str | None = None) -> None:
        sizes = {k: int(np.prod(shape)) * np.dtype(dtype).itemsize for k, (shape, dtype) in layout.items()}
        size = max(sum(sizes.values()), 1)
        created = name is None
        self.shm = _make_block(size) if created else shared_memory.SharedMemory(name=name, size=size)
        if created:
            try:
                reserve_shared_memory(self.shm.name, size)
            except OutOfSharedMemory:
                self.shm.close()
                self.shm.unlink()
                raise
        self.name = self.shm.name
        self.arrays: dict[str, np.ndarray] = {}
        offset = 0
        for key, (shape, dtype) in layout.items():
            self.arrays[key] = np.ndarray(shape, dtype=dtype, buffer=self.shm.buf, offset=offset)
            offset += sizes[key]

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def close(self, unlink: bool) -> None:
        self.arrays.clear()  # the views must go before the mapping can close
        self.shm.close()
        if unlink:
            try:
                self.shm.unlink()
            except FileNotFoundError:  # unlinked already: CPython unlinks (and untracks) a block it failed to
                pass                   # map, e.g. the main process out of open files


def _make_block(size: int) -> shared_memory.SharedMemory:
    while True:
        try:
            return shared_memory.SharedMemory(name=_new_block_name(), create=True, size=size)
        except FileExistsError:  # (one chance in 2**32 for a name of ours: another draw)
            continue


class Signal:
    """``value[index]`` is raised by one process and awaited by another (see the module docstring).

    ``value`` and ``asleep`` are shared int64 arrays; ``bell`` is a multiprocessing semaphore.
    """

    def __init__(self, value: np.ndarray, asleep: np.ndarray, index: int, bell: Any) -> None:
        self.value, self.asleep, self.i, self.bell = value, asleep, index, bell

    def raise_to(self, n: int) -> None:
        self.value[self.i] = n
        if self.asleep[self.i]:
            self.bell.release()

    def wait_for(self, n: int, deadline: float, alive: Callable[[], bool], spin: float = SPIN) -> bool:
        """Wait until the value reaches ``n``; False if ``alive()`` turns false or the deadline passes."""
        value, i = self.value, self.i
        if value[i] >= n:
            return True
        end = time.perf_counter() + spin
        while time.perf_counter() < end:
            _yield()
            if value[i] >= n:
                return True
        while True:
            self.asleep[i] = 1
            if value[i] >= n:
                self.asleep[i] = 0
                return True
            self.bell.acquire(timeout=NAP)
            self.asleep[i] = 0
            if value[i] >= n:
                return True
            if not alive() or time.monotonic() > deadline:
                return False


# A variable set of arrays in one byte block (a round's segments, workers/acting.py).
Header = list[tuple[str, str, tuple[int, ...], int]]  # (key, dtype, shape, byte offset) per array


def pack_arrays(block: SharedArrays, arrays: dict[str, np.ndarray]) -> Header | None:
    """Copy ``arrays`` one after the other into ``block["bytes"]``; the header to read them back
    with :func:`unpack_arrays`, or None (and nothing written) if they do not fit."""
    buf = block["bytes"]
    header: Header = []
    offset = 0
    for key, a in arrays.items():
        offset = -(-offset // 8) * 8  # 8-byte aligned
        header.append((key, a.dtype.str, tuple(a.shape), offset))
        offset += a.nbytes
    if offset > buf.nbytes:
        return None
    for (_, _, _, start), a in zip(header, arrays.values()):
        buf[start : start + a.nbytes] = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    return header


def unpack_arrays(block: SharedArrays, header: Header) -> dict[str, np.ndarray]:
    """Copies of the arrays :func:`pack_arrays` wrote."""
    buf = block["bytes"]
    out = {}
    for key, dtype, shape, start in header:
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        out[key] = buf[start : start + size].view(dtype).reshape(shape).copy()
    return out
