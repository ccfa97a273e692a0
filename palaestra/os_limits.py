"""The operating system's limits a run can reach, said as what to do: open files (``ulimit -n``)
and the shared memory behind ``--num-envs`` (``/dev/shm``). Light to import: worker processes
use it too."""

from __future__ import annotations

import errno
import os

from palaestra.envs.base import EnvError

SHM_FOLDER = "/dev/shm"  # where Linux keeps POSIX shared memory (a tmpfs; Docker's is 64 MB unless --shm-size)


class MachineLimitReached(EnvError):
    """A limit of the machine reached (open files, shared memory): a new worker would reach it
    again, so none is started."""


class OutOfSharedMemory(MachineLimitReached):
    """A shared block that SHM_FOLDER has no room for: writing it would have killed the process
    (SIGBUS), so it is refused when it is made."""


# file descriptors one environment worker holds in the main process: its pipe, its acting
# result blocks (each mapped and open) and its semaphores (measured: about 17)
FILES_PER_WORKER = 17


def make_room_for_workers(workers: int, behaviors: int = 1) -> None:
    """Raise this process's open-file limit (its soft limit, up to the hard one the system allows)
    where ``workers`` environment workers of ``behaviors`` behaviors would need more than it has
    (macOS's 256 holds about a dozen workers; at least 4096, for the workers' own files): what
    ``ulimit -n`` would do, without asking the user. Where it cannot, the run goes on and says
    what to do if it reaches the limit (:func:`too_many_open_files`)."""
    try:
        import resource
    except ImportError:  # (Windows: no such limit)
        return
    # the run's own files; per worker its own and two blocks per behavior (stepping's), with some to spare
    needed = 64 + workers * (FILES_PER_WORKER + 3 + 2 * behaviors)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # at least 4096 (the workers, started with this limit, open their own blocks: one per behavior)
    new = max(needed, 4096) if hard == resource.RLIM_INFINITY else min(max(needed, 4096), hard)
    if soft == resource.RLIM_INFINITY or new <= soft:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (OSError, ValueError):
        return


def too_many_open_files(error: BaseException) -> str | None:
    """What to say of an OSError for too many open files (EMFILE, the process's limit; ENFILE,
    the system's), with the limit and what uses it; None for any other error."""
    if not isinstance(error, OSError) or error.errno not in (errno.EMFILE, errno.ENFILE):
        return None
    if error.errno == errno.ENFILE:
        return ("too many open files on this machine (the system's table is full: ENFILE); end other programs or "
                "raise the system's limit (fs.file-max), or use fewer --num-envs")
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        limit = f"its limit of {soft} (ulimit -n)" if soft != resource.RLIM_INFINITY else "its limit"
    except (ImportError, OSError, ValueError):  # (Windows has no such limit to name)
        limit = "its limit"
    return (f"too many open files: this process reached {limit}{f' at {error.filename}' if error.filename else ''}; "
            f"each --num-envs worker holds about {FILES_PER_WORKER} (its pipe and shared-memory blocks) and each "
            "behavior a few for its summaries: raise the limit before the run (ulimit -n 4096) or use fewer "
            "--num-envs")


def reserve_shared_memory(name: str, size: int) -> None:
    """Back the first ``size`` bytes of the new shared block ``name`` with memory now, where the
    system says where it lives (Linux), so that a full SHM_FOLDER is an OutOfSharedMemory here
    instead of a SIGBUS at the first write past what it holds. Elsewhere, or where the file system
    cannot reserve, nothing is checked."""
    if size <= 0 or not hasattr(os, "posix_fallocate"):
        return
    try:
        fd = os.open(os.path.join(SHM_FOLDER, name.lstrip("/")), os.O_RDWR)
    except OSError:  # not where this system keeps its shared memory
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno != errno.ENOSPC:  # (EOPNOTSUPP, EINVAL: a file system that cannot say)
            return
        raise OutOfSharedMemory(_shm_too_small(size)) from None
    finally:
        os.close(fd)


def _shm_too_small(size: int) -> str:
    try:
        stats = os.statvfs(SHM_FOLDER)
        free, total = stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize
        # (in kB where MB would round the block and the free room to the same figure)
        unit, scale = ("MB", 2**20) if round(size / 2**20, 1) != round(free / 2**20, 1) else ("kB", 2**10)
        needs = f"{size / scale:,.1f} {unit}"
        room = f"{free / scale:,.1f} {unit} free of {total / 2**20:,.0f} MB"
    except OSError:
        needs, room = f"{size / 2**20:,.1f} MB", "too little room"
    return (f"the --num-envs workers need a shared-memory block of {needs} and {SHM_FOLDER} has {room}: give it "
            "more (docker run --shm-size=2g; on Kubernetes an emptyDir volume of medium Memory mounted on "
            f"{SHM_FOLDER}), or share less: act in the main process (--acting=main: the workers then share only "
            "observations and actions), set threaded: false (fewer copies of the weights), or a smaller "
            "buffer_size (smaller rounds)")
