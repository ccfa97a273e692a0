"""The files a Palaestra checkout ships beside the package (``config/``: ML-Agents' trainer
configs, curricula and samplers), for messages about a path that is not found."""

from __future__ import annotations

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent  # (an installed wheel has no config/ beside it)


def shipped_copy(path: str | Path) -> str:
    """Where a relative path not found in the working folder names a file the checkout ships
    (``config/trainer_config.yaml`` typed outside the checkout): the words that say so, to end a
    "does not exist" message; "" otherwise."""
    path = Path(path)
    if path.is_absolute():
        return ""
    try:
        shipped, here = (CHECKOUT / path).resolve(), Path.cwd()
        found = shipped.is_file() and shipped.is_relative_to(CHECKOUT / "config") and CHECKOUT != here.resolve()
    except (OSError, ValueError, RuntimeError):  # (a working folder deleted, a NUL in the path, a symlink loop)
        return ""
    return f" in {here}; Palaestra's checkout ships {shipped}: give that path, or run from {CHECKOUT}" if found else ""
