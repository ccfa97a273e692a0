"""The operating system's limits a run can reach, said as what to do: open files (``ulimit -n``)
and the shared memory behind ``--num-envs`` (``/dev/shm``). Light to import: worker processes
use it too."""

from __future__ import annotations

import errno
import os

# file descriptors one environment worker holds in the main process: its pipe, its acting
# result blocks (each mapped and open) and its semaphores (measured: about 17)
FILES_PER_WORKER = 17


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
