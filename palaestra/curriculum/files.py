"""Reading a curriculum or sampler file: its text, parsed as YAML (JSON is YAML), with the same
size and encoding limits and the same messages as the trainer config (palaestra/settings.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from palaestra.settings import ConfigError, _parse_yaml, _read_text, _show


def read_yaml(path: Path, what: str) -> Any:
    """The parsed file; a ConfigError naming it if it is missing, unreadable or not YAML."""
    if not path.exists():
        raise ConfigError(f"{what} file {str(path)!r} does not exist")
    return _parse_yaml(path, _read_text(path))


def show(value: Any) -> str:
    """A value as a message shows it: its repr, cut short."""
    return _show(value)
