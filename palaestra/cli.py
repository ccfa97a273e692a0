"""``mlagents-learn`` / ``palaestra``: the command line's entry point (flags: palaestra/options.py).

This module imports next to nothing before :func:`main` installs the signal handlers: until then
a Ctrl+C gets Python's default handling, a traceback. Everything else (argparse, torch, the run)
is imported inside main, where a Ctrl+C ends start-up with one line (palaestra/interrupts.py).
The option names (RunOptions, UsageError, build_parser, parse_args, ...) are still reachable
from here, for code that imported them from this module.
"""

from __future__ import annotations

import sys

from palaestra.interrupts import Interrupts, forget_handled_interrupts, say


def main(argv: list[str] | None = None) -> int:
    """Parse the flags and run; return the exit code. SIGINT, SIGTERM and SIGHUP are handled from
    the first line: one during start-up ends the run with one line and no traceback (one during
    torch's import, once the import is done).

    With ``argv`` None (the command line of this process: the console script, ``python -m``) the
    process exits next, and the signals are ignored from the end of the run on, so that a late one
    cannot turn a clean exit into a kill; otherwise (called in-process, as the tests do) the
    previous handlers come back."""
    interrupts = Interrupts()
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
