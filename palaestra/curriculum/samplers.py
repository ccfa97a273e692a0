"""Environment-parameter sampler files (ML-Agents 0.16's ``--sampler``).

```yaml
resampling-interval: 5000
mass: {sampler-type: uniform, min_value: 0.5, max_value: 10}
```

``resampling-interval`` (global steps) is required; every other key is a parameter with its
``sampler-type`` and that type's keys (:data:`SAMPLER_TYPES`; :func:`register_sampler` adds one).
Each environment worker draws from its own generator, seeded from ``--seed`` and its index, so
the draws are reproducible and differ between workers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from palaestra.curriculum.files import parameter_value, read_yaml, show
from palaestra.settings import ConfigError, closest_name, integer, real

INTERVAL = "resampling-interval"
TYPE = "sampler-type"


class Sampler(Protocol):
    def sample(self, rng: np.random.Generator) -> float: ...


# (a range of -1e308 to 1e308 has no float width: numpy cannot draw from it)
WIDER_THAN_A_FLOAT = "the range is wider than a float can hold (at most about 1.8e308 from end to end)"


@dataclass(frozen=True)
class UniformSampler:
    """Uniform on [min_value, max_value)."""

    min_value: float
    max_value: float

    def check(self) -> str | None:
        if self.min_value > self.max_value:
            return "min_value must not be larger than max_value"
        return None if np.isfinite(self.max_value - self.min_value) else WIDER_THAN_A_FLOAT

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.min_value, self.max_value))


@dataclass(frozen=True)
class GaussianSampler:
    """Normal with mean ``mean`` and standard deviation ``st_dev``."""

    mean: float
    st_dev: float

    def check(self) -> str | None:
        return None if self.st_dev >= 0 else "st_dev must not be negative"

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.normal(self.mean, self.st_dev))


@dataclass(frozen=True)
class MultiRangeUniformSampler:
    """An interval chosen with probability proportional to its length, then uniform in it."""

    intervals: tuple[tuple[float, float], ...]

    def check(self) -> str | None:
        if not self.intervals:
            return "intervals must hold at least one [min, max] pair"
        if any(a > b for a, b in self.intervals):
            return "each interval is [min, max] with min not larger than max"
        if not np.isfinite(sum(b - a for a, b in self.intervals)):
            return WIDER_THAN_A_FLOAT
        return None

    def sample(self, rng: np.random.Generator) -> float:
        lengths = np.array([b - a for a, b in self.intervals], dtype=np.float64)
        weights = lengths / lengths.sum() if lengths.sum() > 0 else np.full(len(lengths), 1.0 / len(lengths))
        a, b = self.intervals[int(rng.choice(len(self.intervals), p=weights))]
        return float(rng.uniform(a, b))


def _intervals(value: Any) -> tuple[tuple[float, float], ...]:
    expected = "a list of [min, max] pairs of numbers"
    if not isinstance(value, list):
        raise ValueError(expected)
    pairs = []
    for pair in value:
        if not isinstance(pair, list) or len(pair) != 2:
            raise ValueError(expected)
        pairs.append((parameter_value(pair[0]), parameter_value(pair[1])))
    return tuple(pairs)


# sampler-type → (class, {key: check}); the keys are the class's fields
SAMPLER_TYPES: dict[str, tuple[type, dict[str, Any]]] = {
    "uniform": (UniformSampler, {"min_value": parameter_value, "max_value": parameter_value}),
    "gaussian": (GaussianSampler, {"mean": parameter_value, "st_dev": parameter_value}),
    "multirange_uniform": (MultiRangeUniformSampler, {"intervals": _intervals}),
}


def register_sampler(name: str, cls: type, keys: dict[str, Any] | None = None) -> None:
    """Add a sampler type: ``cls(**keys)`` with a ``sample(rng) -> float`` method (and optionally
    ``check() -> str | None``); ``keys`` maps each key to a check (default: every dataclass field
    of ``cls``, a number). Each key is read back from the sampler as its attribute (the dry run
    prints them). A class that cannot work is refused here, not at the first reset."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_sampler: the type's name must be a non-empty string, got {name!r}")
    if not isinstance(cls, type) or not callable(getattr(cls, "sample", None)):
        what = getattr(cls, "__name__", repr(cls))
        hint = (" (ML-Agents' samplers define sample_parameter(); here the run's generator is passed in, so "
                "draws follow --seed and differ per worker)" if callable(getattr(cls, "sample_parameter", None)) else "")
        raise TypeError(f"register_sampler({name!r}): {what} needs a method sample(self, rng) returning a float, rng a "
                        f"numpy.random.Generator{hint}")
    if keys is None:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"register_sampler({name!r}): {cls.__name__} is not a dataclass, so its keys cannot be "
                            "read from its fields: pass keys={'key': palaestra.settings.real(), ...}")
        keys = {f.name: real() for f in dataclasses.fields(cls)}
    SAMPLER_TYPES[name] = (cls, keys)


@dataclass(frozen=True)
class SamplerConfig:
    resampling_interval: int
    samplers: dict[str, Sampler]
    source: str

    def sample(self, rng: np.random.Generator) -> dict[str, float]:
        return {name: sampler.sample(rng) for name, sampler in self.samplers.items()}


def load_sampler(path: str | Path) -> SamplerConfig:
    path = Path(path)
    data = read_yaml(path, "sampler")
    if data is None:
        raise ConfigError(f"{path}: the sampler file is empty; it needs '{INTERVAL}' and one entry per parameter "
                          f"({{{TYPE}: uniform, min_value: ..., max_value: ...}})")
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: expected a mapping with '{INTERVAL}' and one entry per parameter "
                          f"({{{TYPE}: uniform, min_value: ..., max_value: ...}}), got {show(data)}")
    if INTERVAL not in data:
        raise ConfigError(f"{path}: '{INTERVAL}' is required: the global steps between two draws "
                          f"(every environment resets with fresh values then){_typo_of(INTERVAL, data)}")
    try:
        interval = integer(1)(data[INTERVAL])
    except ValueError as e:
        raise ConfigError(f"{path}: {INTERVAL}: expected {e}, got {show(data[INTERVAL])}") from None
    samplers = {str(name): _sampler(path, str(name), entry) for name, entry in data.items() if name != INTERVAL}
    if not samplers:
        raise ConfigError(f"{path}: no parameter to sample: add entries such as 'mass: {{{TYPE}: uniform, "
                          "min_value: 0.5, max_value: 10}'")
    return SamplerConfig(interval, samplers, str(path))


def _sampler(path: Path, name: str, entry: Any) -> Sampler:
    where = f"{path}: parameter {name!r}"
    types = ", ".join(SAMPLER_TYPES)
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping with '{TYPE}' ({types}) and its keys, got {show(entry)}")
    if TYPE not in entry:
        raise ConfigError(f"{where}: '{TYPE}' is missing; one of {types}{_typo_of(TYPE, entry)}")
    kind = entry[TYPE]
    if not isinstance(kind, str) or kind not in SAMPLER_TYPES:
        raise ConfigError(f"{where}: {TYPE}: unknown type {show(kind)}; one of {types}")
    cls, keys = SAMPLER_TYPES[kind]
    given = {k: v for k, v in entry.items() if k != TYPE}
    missing = [k for k in keys if k not in given]
    unknown = [f"{k}" + (f" (did you mean {close!r}?)" if (close := closest_name(str(k).replace("-", "_"), missing))
                         else "") for k in given if k not in keys]
    if unknown or missing:
        problems = ([f"unknown key(s) {', '.join(unknown)}"] if unknown else []) + \
                   ([f"missing key(s) {', '.join(missing)}"] if missing else [])
        raise ConfigError(f"{where}: {'; '.join(problems)}; a {kind} sampler takes exactly {', '.join(keys)}")
    values = {}
    for key, check in keys.items():
        try:
            values[key] = check(given[key])
        except ValueError as e:
            raise ConfigError(f"{where}: {key}: expected {e}, got {show(given[key])}") from None
    sampler = cls(**values)
    problem = sampler.check() if hasattr(sampler, "check") else None
    if problem:
        raise ConfigError(f"{where}: {problem} (got {show(given)})")
    return sampler


def _typo_of(key: str, entries: dict) -> str:
    """' (found ...: a typo?)' when ``entries`` holds a near spelling of the missing ``key``
    (ML-Agents' hyphenated keys are often written with underscores), else ''."""
    close = closest_name(key, [str(k).replace("_", "-") for k in entries])
    if close is None:
        return ""
    written = next(str(k) for k in entries if str(k).replace("_", "-") == close)
    return f" (found {written!r}: write it {key!r})"
