"""``package.module:attribute`` on the command line (--env factories, palaestra-record's
--policy): found as ``python -m`` would, with one clear message for each way it can fail."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Callable


class ImportTargetError(ValueError):
    """The target cannot be imported; the message names the flag, the target and the reason."""


_FOLDERS_BESIDE: list[str] = []  # folders made importable by import_beside, for the messages
# packages that come with one of Palaestra's extras: a message that they are missing says which
EXTRAS = {"pettingzoo": "pettingzoo", "mpe2": "pettingzoo"}


def import_beside(path: str) -> None:
    """Make the modules beside the file ``path`` (the trainer config) importable too, after
    everything else: ``--env=my_env:make`` then finds ``my_env.py`` next to the config from
    wherever the run starts, while a user's ``profile.py`` or ``statistics.py`` there cannot stand
    in for the library's module of that name (the run imports many after this). Worker processes
    inherit the import path."""
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.append(folder)
        if folder not in _FOLDERS_BESIDE:  # (an in-process caller's runs take sys.path back after each)
            _FOLDERS_BESIDE.append(folder)


def import_target_module(target: str, flag: str) -> Any:
    """The module of ``target`` (``module:attribute``), imported as ``python -m`` would."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ImportTargetError(f"{flag}={target}: expected package.module:callable")
    if os.getcwd() not in sys.path:  # as `python -m` does: a module beside the working directory is found
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        searched = ""
        if isinstance(e, ModuleNotFoundError) and e.name == module_name.split(".")[0]:
            searched = " (looked in the working directory {}{} and the installed packages)".format(
                os.getcwd(), "".join(f", beside the trainer config in {f}" for f in _FOLDERS_BESIDE
                                  if f != os.getcwd() and f in sys.path))
        # the package itself missing (not a module inside an installed one): say what installs it
        extra = EXTRAS.get(e.name or "") if isinstance(e, ModuleNotFoundError) else None
        install = (f"; {e.name} comes with Palaestra's {extra} extra: pip install -e \".[{extra}]\" in Palaestra's "
                   "folder") if extra else ""
        # the module itself not found: nothing of the user's to show; else (an import inside it) its traceback
        raise ImportTargetError(f"{flag}={target}: cannot import module {module_name!r}: {e}{searched}{install}") \
            from (None if searched else e)
    except Exception as e:  # the module's own code failed while importing (a syntax error, a raise)
        raise ImportTargetError(f"{flag}={target}: importing module {module_name!r} failed: "
                                f"{type(e).__name__}: {e}") from e


def load_callable(target: str, flag: str) -> Callable[..., Any]:
    """The callable ``target`` names (``module:attribute``, the attribute maybe dotted)."""
    obj = import_target_module(target, flag)
    module_name, _, attribute = target.partition(":")
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ImportTargetError(f"{flag}={target}: module {module_name!r} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ImportTargetError(f"{flag}={target}: {attribute!r} is a {type(obj).__name__}, not a callable")
    return obj
