"""``mlagents-learn`` / ``palaestra``: the command line's entry point (flags: palaestra/options.py).

This module imports next to nothing before :func:`main` installs the signal handlers: until then
a Ctrl+C gets Python's default handling, a traceback. Everything else (argparse, torch, the run)
is imported inside main, where a Ctrl+C ends start-up with one line (palaestra/interrupts.py).
The option names (RunOptions, UsageError, build_parser, parse_args, ...) are still reachable
from here, for code that imported them from this module.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
import warnings

from palaestra.interrupts import Interrupts, forget_handled_interrupts, say


def main(argv: list[str] | None = None) -> int:
    """Parse the flags and run; return the exit code. SIGINT, SIGTERM and SIGHUP are handled from
    the first line: one during start-up ends the run with one line and no traceback (one during
    torch's import, once the import is done).

    With ``argv`` None (the command line of this process: the console script, ``python -m``) the
    process exits next, and the signals are ignored from the end of the run on, so that a late one
    cannot turn a clean exit into a kill; otherwise (called in-process, as the tests do) the
    previous handlers come back, and so does what the run set for the whole process
    (:class:`_ProcessSettings`)."""
    interrupts = Interrupts()
    kept = _ProcessSettings() if argv is not None else None
    try:
        interrupts.install()
        from palaestra.options import logger, parse_args, setup_logging

        setup_logging(False)  # the flags' own warnings (--load, --train) come in the run's format
        options = parse_args(argv)
        setup_logging(options.debug)
        logger.debug("start-up: importing torch and the trainer")
        with interrupts.deferred():  # slow (torch), and not to be cut short
            from palaestra.run import run

        interrupts.check_start_up()
        return run(options, interrupts)
    except (KeyboardInterrupt, Exception) as e:  # before run() could catch it: the imports, parsing the flags
        return interrupts.stopped_during_start_up(e, say)
    finally:
        if argv is None:
            interrupts.ignore()
            forget_handled_interrupts()
        else:
            interrupts.restore()
        if kept is not None:
            kept.restore()


class _ProcessSettings:
    """What a run sets for its whole process, noted by an in-process call (a script's or a test's
    ``palaestra.cli.main([...])``) and put back when it returns: the warning filters, the
    'palaestra' logger's handlers, the global random generators (Python's, numpy's, torch's, its
    GPUs' included), torch's and the BLAS libraries' thread counts, the import path (the config's
    folder, the working directory), the open-file limit and threading's exception hook. (The
    console script's process ends instead.) Modules the run imported stay imported, except the
    user's modules it imported from the config's folder, the working directory or a folder it
    added to the import path: the next call reads them afresh (an edited ``my_env.py`` beside the
    config), as a new process would. Packages imported before the call keep every submodule."""

    def __init__(self) -> None:
        self.filters = warnings.catch_warnings()
        self.filters.__enter__()
        self.path = list(sys.path)
        self.modules = set(sys.modules)
        self.open_files = _open_files_limit()
        self.thread_hook = threading.excepthook
        logger = logging.getLogger("palaestra")
        self.logger = (list(logger.handlers), logger.level, logger.propagate)
        self.random = random.getstate()
        numpy, torch = sys.modules.get("numpy"), sys.modules.get("torch")  # (not imported here: start-up stays fast)
        self.numpy = numpy.random.get_state() if numpy is not None else None
        self.torch = torch.get_rng_state() if torch is not None else None
        self.cuda = (torch.cuda.get_rng_state_all() if torch is not None and torch.cuda.is_initialized() else None)

    def restore(self) -> None:
        self.filters.__exit__(None, None, None)
        if self.open_files is not None and _open_files_limit() != self.open_files:  # (raised for --num-envs)
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, self.open_files)
        machine = sys.modules.get("palaestra.machine")
        if machine is not None:
            machine.restore_threads()
        imports = sys.modules.get("palaestra.imports")  # the folders the run imported the user's modules from
        try:
            here = {os.getcwd()}
        except OSError:  # (a working directory deleted meanwhile)
            here = set()
        self._forget_modules_of(set(sys.path) - set(self.path) | here | set(getattr(imports, "_FOLDERS_BESIDE", ())))
        sys.path[:] = self.path
        threading.excepthook = self.thread_hook
        logger = logging.getLogger("palaestra")
        logger.handlers, level, logger.propagate = self.logger
        logger.setLevel(level)
        random.setstate(self.random)
        numpy, torch = sys.modules.get("numpy"), sys.modules.get("torch")
        # a library the run imported first: its generator seeded afresh, as an import leaves it
        if self.numpy is not None:
            numpy.random.set_state(self.numpy)
        elif numpy is not None:
            numpy.random.seed()
        if self.torch is not None:
            torch.set_rng_state(self.torch)
            if self.cuda is not None:
                torch.cuda.set_rng_state_all(self.cuda)
            elif torch.cuda.is_initialized():  # (first used by the run: seeded afresh, as torch.seed does)
                torch.cuda.seed_all()
        elif torch is not None:
            torch.seed()  # (every device's generator)

    def _forget_modules_of(self, folders: set[str]) -> None:
        """Drop the modules the run imported whose top-level package or module it imported too and
        found directly in one of ``folders`` (the user's; a folder above site-packages must not
        take torch with it, nor a checkout Palaestra's own modules, whose package was imported first)."""
        folders = {os.path.abspath(f or os.curdir) for f in folders}
        found_there = [name for name in set(sys.modules) - self.modules if name.partition(".")[0] not in self.modules
                       and _folder_of(sys.modules.get(name.partition(".")[0])) in folders]
        for name in found_there:
            del sys.modules[name]


def _open_files_limit() -> tuple[int, int] | None:
    try:
        import resource
    except ImportError:
        return None
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _folder_of(module: object) -> str | None:
    """The import-path folder a top-level module was found in, or None."""
    paths = getattr(module, "__path__", None)  # a package: its folder's parent
    if paths is not None:
        first = next(iter(paths), None)
        return os.path.dirname(os.path.abspath(first)) if isinstance(first, str) else None
    file = getattr(module, "__file__", None)
    return os.path.dirname(os.path.abspath(file)) if isinstance(file, str) else None


def entry_point() -> None:
    sys.exit(main())


def __getattr__(name: str) -> object:
    # the options' names, imported on first use (importing them here would slow down start-up)
    import palaestra.options

    try:
        return getattr(palaestra.options, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


if __name__ == "__main__":
    entry_point()
