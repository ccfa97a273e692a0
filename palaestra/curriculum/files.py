"""Reading a curriculum or sampler file: its text, parsed as YAML (JSON is YAML), with the same
size and encoding limits as the trainer config (palaestra/settings.py), in messages that name
the file's kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from palaestra.settings import ConfigError, _parse_yaml, _read_text, _show, refuse_other_kind


def read_yaml(path: Path, what: str) -> Any:
    """The parsed file (``what``: "curriculum" or "sampler"); a ConfigError naming it if it is
    missing, unreadable, not YAML, or clearly a file of another kind (a trainer config given
    as the curriculum, ...)."""
    if not path.exists():
        raise ConfigError(f"{what} file {str(path)!r} does not exist")
    data = _parse_yaml(path, _read_text(path, f"{what} file"))
    refuse_other_kind(path, data, what)
    return data


def show(value: Any) -> str:
    """A value as a message shows it: its repr, cut short."""
    return _show(value)
