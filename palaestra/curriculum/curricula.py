"""Curriculum files and the lesson state machine (ML-Agents 0.16's ``--curriculum``).

Two formats load (docs/curricula.md):

- 0.14-0.16: one YAML file (or a JSON object) keyed by behavior name, each entry holding
  ``measure``, ``thresholds``, ``min_lesson_length``, ``signal_smoothing`` and ``parameters``;
- up to 0.13: a folder of JSON files, one per behavior, named after it (``BigWallJump.json``),
  each holding those keys directly. A single such file given alone loads too, named after its
  file (ML-Agents rejected it).

A lesson is checked whenever an episode of its behavior ended since the last check, and only once
``min_lesson_length`` episodes completed in the current lesson. The measure is the behavior's
training progress (step / max_steps) or the mean return of its last ``min_lesson_length``
episodes; with ``signal_smoothing`` it is blended as ``0.25 x previous + 0.75 x new``. The lesson
advances by one when the measure is strictly greater than the lesson's threshold.
"""

from __future__ import annotations

import difflib

import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from palaestra.curriculum.files import parameter_value, read_yaml, show
from palaestra.settings import ConfigError, boolean, integer, real

logger = logging.getLogger("palaestra")

MEASURES = ("progress", "reward")
KEYS = ("measure", "thresholds", "min_lesson_length", "signal_smoothing", "parameters")
SMOOTHING = 0.25  # the weight of the previous smoothed measure (ML-Agents')


@dataclass(frozen=True)
class Curriculum:
    """One behavior's curriculum; lesson ``k`` sets each parameter to ``parameters[name][k]``."""

    behavior: str
    measure: str
    thresholds: tuple[float, ...]
    min_lesson_length: int
    signal_smoothing: bool
    parameters: dict[str, tuple[float, ...]]
    source: str  # the file it came from, for messages

    @property
    def max_lesson(self) -> int:
        return len(self.thresholds)

    def values(self, lesson: int) -> dict[str, float]:
        return {name: values[lesson] for name, values in self.parameters.items()}


@dataclass
class LessonState:
    """Where one curriculum stands: saved in its behavior's checkpoints, restored by --resume."""

    lesson: int = 0
    smoothed: float = 0.0  # the smoothed measure so far (ML-Agents starts it at 0)
    returns: deque = field(default_factory=deque)  # returns of episodes completed in this lesson
    measure: float | None = None  # the last check's measure, for the summaries

    def add_returns(self, curriculum: Curriculum, returns: list[float]) -> None:
        if self.returns.maxlen != curriculum.min_lesson_length:
            self.returns = deque(self.returns, maxlen=curriculum.min_lesson_length)
        self.returns.extend(returns)

    def check(self, curriculum: Curriculum, progress: float, report: bool = True) -> bool:
        """One check (after every environment step): whether the lesson advanced. With smoothing,
        each check blends the measure in, so over steps without new episodes the smoothed reward
        measure settles on the mean return within a few steps, as ML-Agents' does."""
        if self.lesson >= curriculum.max_lesson or len(self.returns) < curriculum.min_lesson_length:
            return False
        measure = progress if curriculum.measure == "progress" else sum(self.returns) / len(self.returns)
        if curriculum.signal_smoothing:
            measure = SMOOTHING * self.smoothed + (1.0 - SMOOTHING) * measure
            self.smoothed = measure
        self.measure = measure
        threshold = curriculum.thresholds[self.lesson]
        advanced = measure > threshold
        if report or advanced:  # (--debug: the checks after steps where episodes ended, not every step's)
            logger.debug("curriculum %s: lesson %d, %s %.4g %s threshold %.4g over the last %d episodes",
                         curriculum.behavior, self.lesson, curriculum.measure, measure,
                         ">" if advanced else "<=", threshold, len(self.returns))
        if advanced:
            self.lesson += 1
            self.returns.clear()
        return advanced

    def state_dict(self, curriculum: Curriculum | None = None) -> dict[str, Any]:
        state = {"lesson": self.lesson, "smoothed": self.smoothed, "returns": list(self.returns),
                 "measure": self.measure}
        return state | ({"measured": curriculum.measure} if curriculum is not None else {})

    def load_state_dict(self, state: dict[str, Any], curriculum: Curriculum) -> None:
        saved = max(int(state.get("lesson", 0)), 0)
        self.lesson = min(saved, curriculum.max_lesson)
        if saved > self.lesson:  # (a curriculum file edited between the runs)
            logger.warning("curriculum %s: the checkpoint is at lesson %d, and the curriculum now has lessons 0 to "
                           "%d; it goes on at its last, %d", curriculum.behavior, saved, curriculum.max_lesson,
                           self.lesson)
        self.returns = deque((float(r) for r in state.get("returns", [])), maxlen=curriculum.min_lesson_length)
        measured = state.get("measured", curriculum.measure)  # (checkpoints from before it was saved: the same)
        if measured != curriculum.measure:  # a reward smoothed into a progress (or back) would decide the lesson
            logger.info("curriculum %s: its measure is now %s (the checkpoint's was %s): the smoothed measure starts "
                        "again from 0", curriculum.behavior, curriculum.measure, measured)
            self.smoothed, self.measure = 0.0, None
            return
        self.smoothed = float(state.get("smoothed", 0.0))
        self.measure = state.get("measure")


# -- loading -----------------------------------------------------------------------------------
def load_curricula(path: str | Path) -> dict[str, Curriculum]:
    """Every behavior's curriculum in ``path`` (a file or a folder); a ConfigError naming the
    file, the behavior and the key if one is wrong."""
    path = Path(path)
    if path.is_dir():
        return _load_folder(path)
    data = read_yaml(path, "curriculum")
    if data is None:
        raise ConfigError(f"{path}: the curriculum file is empty; it needs a section per behavior holding "
                          f"{', '.join(KEYS)}")
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: expected a mapping of behavior names to curricula, got {show(data)}")
    sections = [str(k) for k, v in data.items() if isinstance(v, dict) and any(str(key) in KEYS for key in v)]
    loose = [str(k) for k in data if str(k) in KEYS]
    if loose and sections:  # (an indentation slip: a section's key at the top level)
        raise ConfigError(f"{path}: {', '.join(repr(k) for k in loose)} stand{'s' if len(loose) == 1 else ''} at "
                          f"the top level beside the behavior section(s) {', '.join(sections)}: indent "
                          f"{'it' if len(loose) == 1 else 'them'} under the section {'it belongs' if len(loose) == 1 else 'they belong'} to")
    if loose:  # an unwrapped per-behavior file of ML-Agents <= 0.13
        logger.info("%s: a curriculum of one behavior (ML-Agents <= 0.13 format), named after its file: %r",
                    path, path.stem)
        return {path.stem: _curriculum(path, path.stem, data)}
    return {str(name): _curriculum(path, str(name), entry) for name, entry in data.items()}


def _load_folder(folder: Path) -> dict[str, Curriculum]:
    try:
        names = sorted(folder.iterdir())
    except OSError as e:  # (not readable by this user)
        raise ConfigError(f"{folder}: the curriculum folder cannot be read: {e.strerror or e}") from None
    files = [p for p in names if p.suffix.lower() == ".json" and p.is_file()]
    if not files:
        yaml_files = [p.name for p in names if p.suffix.lower() in (".yaml", ".yml") and p.is_file()]
        hint = (f"; it holds {', '.join(yaml_files[:5])}{' ...' if len(yaml_files) > 5 else ''}: give one of those "
                "(a YAML curriculum keyed by behavior, ML-Agents 0.14-0.16) to --curriculum") if yaml_files else ""
        raise ConfigError(f"{folder}: a curriculum folder (ML-Agents <= 0.13 format) needs one <Behavior>.json "
                          f"file per behavior; it has none{hint}")
    out = {}
    for file in files:
        data = read_yaml(file, "curriculum")
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: expected a JSON object holding {', '.join(KEYS)}, got {show(data)}")
        if data and not any(str(k) in KEYS for k in data) and all(isinstance(v, dict) for v in data.values()):
            # keyed by behavior, as ML-Agents 0.14-0.16 files are: read as such
            logger.info("%s: curricula keyed by behavior (ML-Agents 0.14 format) in a folder of 0.13 files", file)
            out |= {str(name): _curriculum(file, str(name), entry) for name, entry in data.items()}
            continue
        out[file.stem] = _curriculum(file, file.stem, data)
    return out


def _curriculum(path: Path, behavior: str, entry: Any) -> Curriculum:
    where = f"{path}: behavior {behavior!r}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping with {', '.join(KEYS)}, got {show(entry)}")
    missing = [k for k in KEYS if k not in entry]
    if missing:
        unknown = [k for k in entry if k not in KEYS]
        typos = [f"{k!r} (did you mean {close[0]!r}?)" for k in unknown
                 if (close := difflib.get_close_matches(str(k), missing, n=1, cutoff=0.6))]
        hint = f"; unknown key(s) {', '.join(typos)}" if typos else ""
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)} (a curriculum needs "
                          f"{', '.join(KEYS)}){hint}")
    for key in entry:
        if key not in KEYS:
            logger.warning("%s: unknown key %r is ignored (a curriculum has %s)", where, key, ", ".join(KEYS))

    def checked(key: str, check: Any, value: Any) -> Any:
        try:
            return check(value)
        except ValueError as e:
            raise ConfigError(f"{where}: {key}: expected {e}, got {show(value)}") from None

    measure = entry["measure"]
    if measure not in MEASURES:
        raise ConfigError(f"{where}: measure: expected 'progress' or 'reward', got {show(measure)}")
    thresholds = entry["thresholds"]
    if not isinstance(thresholds, list):
        raise ConfigError(f"{where}: thresholds: expected a list of numbers, one per lesson change, got "
                          f"{show(thresholds)}")
    thresholds = tuple(checked(f"thresholds[{i}]", real(), t) for i, t in enumerate(thresholds))
    for i, t in enumerate(thresholds):
        if measure == "progress" and t >= 1.0:  # the lesson advances when the measure exceeds it
            raise ConfigError(f"{where}: thresholds[{i}]: with measure: progress a threshold is a fraction of "
                              "max_steps, below 1 (past 1 training has ended: the lesson would never be trained "
                              f"in), got {show(t)}")
        if measure == "progress" and i and t <= thresholds[i - 1]:  # (rewards may fall as lessons get harder)
            logger.warning("%s: thresholds[%d] is %s, not above thresholds[%d] (%s): with measure: progress lesson "
                           "%d lasts only min_lesson_length episodes, whatever the progress", where, i, show(t), i - 1,
                           show(thresholds[i - 1]), i)
    parameters = entry["parameters"]
    if not isinstance(parameters, dict) or not parameters:
        raise ConfigError(f"{where}: parameters: expected a mapping of parameter names to lists of "
                          f"{len(thresholds) + 1} values (one per lesson), got {show(parameters)}")
    values: dict[str, tuple[float, ...]] = {}
    for name, lessons in parameters.items():
        if not isinstance(lessons, list) or len(lessons) != len(thresholds) + 1:
            raise ConfigError(
                f"{where}: parameters: {name}: expected a list of {len(thresholds) + 1} values (len(thresholds) + 1, "
                f"one per lesson), got {show(lessons)}")
        values[str(name)] = tuple(checked(f"parameters: {name}[{i}]", parameter_value, v) for i, v in enumerate(lessons))
    return Curriculum(behavior, measure, thresholds,
                      checked("min_lesson_length", integer(1), entry["min_lesson_length"]),
                      checked("signal_smoothing", boolean, entry["signal_smoothing"]),
                      values, str(path))


def shared_parameters(curricula: dict[str, Curriculum]) -> dict[str, list[str]]:
    """Parameters that more than one curriculum sets: name → behaviors (a warning: the value sent
    is the last curriculum's, in file order)."""
    setters: dict[str, list[str]] = {}
    for c in curricula.values():
        for name in c.parameters:
            setters.setdefault(name, []).append(c.behavior)
    return {name: behaviors for name, behaviors in setters.items() if len(behaviors) > 1}
