"""Reading a curriculum or sampler file: its text, parsed as YAML (JSON is YAML), with the same
size and encoding limits as the trainer config (palaestra/settings.py), in messages that name
the file's kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from palaestra.settings import ConfigError, _parse_yaml, _read_text, _show, real, refuse_other_kind

FLOAT32_MAX = 3.4028234663852886e38  # environment parameters travel as 32-bit floats (side channel, Unity)
_number = real()


def parameter_value(value: Any) -> float:
    """An environment parameter's value (a curriculum's, a sampler's bound): a finite number that a
    32-bit float holds, refused here rather than when the first reset sends it."""
    number = _number(value)
    if abs(number) > FLOAT32_MAX:
        raise ValueError("a number a 32-bit float holds (at most about 3.4e38 in size): environment parameters "
                         "reach the environment as 32-bit floats")
    return number


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
