"""The run's environment parameters: the curricula's current lessons and the sampler's draws,
combined into the values each environment worker resets with, and the decisions of when every
environment resets (a lesson change, a resampling interval crossed).

Values per worker: a fresh draw of every sampled parameter from that worker's generator, then
every curriculum's values for its current lesson on top (a curriculum value overrides a sampled
one; two curricula setting one parameter: the later one in the file wins, with a warning).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Protocol

import numpy as np

from palaestra.curriculum.curricula import Curriculum, LessonState, shared_parameters
from palaestra.curriculum.samplers import SAMPLER_TYPES, SamplerConfig
from palaestra.settings import ConfigError

logger = logging.getLogger("palaestra")


def rekey_for_team(curricula: dict[str, Curriculum], behavior: str) -> bool:
    """Key the curriculum of a Unity behavior with a team (``BigWallJump?team=0``) by the
    behavior's full name, as the environment and the trainers name it, where the file keys it by
    the name before ``?`` (as ML-Agents, whose trainers and curricula drop the team). The first
    team to appear takes it. Whether it was re-keyed."""
    base = behavior.partition("?")[0]
    if base == behavior or base not in curricula or behavior in curricula:
        return False
    # in the file's place: of two curricula setting one parameter, the later one in the file wins
    entries = list(curricula.items())
    curricula.clear()
    curricula.update((behavior, dataclasses.replace(c, behavior=behavior)) if name == base else (name, c)
                     for name, c in entries)
    logger.info("curriculum %s drives behavior %s", base, behavior)
    return True


class Learner(Protocol):
    """What the parameters need of a behavior's trainer (palaestra/trainer.py)."""

    step: int

    @property
    def progress(self) -> float: ...

    def take_finished_returns(self) -> list[float]: ...


class EnvironmentParameters:
    def __init__(self, curricula: dict[str, Curriculum], sampler: SamplerConfig | None, seed: int,
                 workers: int, lesson: int = 0) -> None:
        self.curricula = curricula
        self.sampler = sampler
        self.seed = seed
        self.workers = workers
        self.lessons = {b: LessonState(lesson=min(lesson, c.max_lesson)) for b, c in curricula.items()}
        for behavior, c in curricula.items():
            if lesson > c.max_lesson:  # (as ML-Agents, the last lesson; said, since a typo is likelier)
                logger.warning("--lesson %d: the curriculum of %s has lessons 0 to %d; it starts at its last, %d",
                               lesson, behavior, c.max_lesson, c.max_lesson)
        for name, behaviors in shared_parameters(curricula).items():
            logger.warning("curriculum: parameter %r is set by the curricula of %s; the value sent is %s's",
                           name, ", ".join(behaviors), behaviors[-1])
        for name in sampler.samplers if sampler else ():
            owners = [b for b, c in curricula.items() if name in c.parameters]
            if owners:  # (resampling still resets every environment at each interval)
                logger.warning("parameter %r is sampled (%s) and set by the curriculum of %s: the curriculum's value "
                               "is sent, never a sampled one", name, sampler.source, ", ".join(owners))
        self.rngs = self._generators(0)
        self._drawn_ahead: list[dict[str, float]] | None = None  # the next draw's samples (draw_ahead)
        self.current: list[dict[str, float]] = []
        # names a built-in environment does not have (the run says so once): drawn, not sent
        self.ignored: set[str] = set()

    def _generators(self, start_step: int) -> list[np.random.Generator]:
        # one per worker: reproducible from --seed, different per worker (and after a --resume)
        return [np.random.default_rng([self.seed, i, start_step]) for i in range(self.workers)]

    def resume_at(self, global_step: int) -> None:
        """Draws after a --resume at ``global_step`` (not those of the first run again)."""
        if global_step:
            self.rngs = self._generators(global_step)
            self._drawn_ahead = None  # (the first run's start: a resumed scene resets with the resumed draw)

    def claim(self, behavior: str) -> bool:
        """Whether a curriculum drives ``behavior`` (one keyed by the name before a Unity team's
        ``?``, unclaimed yet, is re-keyed to it: a behavior appearing after the start)."""
        if rekey_for_team(self.curricula, behavior):
            self.lessons[behavior] = self.lessons.pop(behavior.partition("?")[0])
        return behavior in self.curricula

    @property
    def active(self) -> bool:
        return bool(self.curricula or self.sampler)

    def names(self) -> list[str]:
        names = list(self.sampler.samplers) if self.sampler else []
        for c in self.curricula.values():
            names += [n for n in c.parameters if n not in names]
        return names

    def draw(self) -> list[dict[str, float]]:
        """Each worker's values for the next reset (fresh samples, the lessons' values)."""
        samples = self._drawn_ahead if self._drawn_ahead is not None else self._samples()
        self._drawn_ahead = None
        self.current = self._with_lessons(samples)
        logger.debug("environment parameters: %s", self.current[0] if self.workers == 1 else self.current)
        return self.current

    def draw_ahead(self) -> list[dict[str, float]]:
        """The values the next ``draw`` will return (its samples drawn now and kept for it, the
        lessons' values as they are now): those a Unity scene is given as it starts, so that the
        run's first reset, sending the same, is its first. A sampler that fails is a ConfigError."""
        try:
            self._drawn_ahead = self._samples()
        except Exception as e:  # (a registered sampler's own code)
            source = self.sampler.source if self.sampler is not None else "--sampler"
            raise ConfigError(f"{source}: drawing the environment parameters failed: {type(e).__name__}: {e}") from e
        return self._with_lessons(self._drawn_ahead)

    def _samples(self) -> list[dict[str, float]]:
        return [self.sampler.sample(rng) if self.sampler else {} for rng in self.rngs]

    def _with_lessons(self, samples: list[dict[str, float]]) -> list[dict[str, float]]:
        lesson_values: dict[str, float] = {}
        for behavior, c in self.curricula.items():
            lesson_values |= c.values(self.lessons[behavior].lesson)
        return [{k: v for k, v in (drawn | lesson_values).items() if k not in self.ignored} for drawn in samples]

    def resample_due(self, previous_step: int, global_step: int) -> bool:
        """Whether a resampling interval was crossed between the two global steps."""
        if self.sampler is None:
            return False
        interval = self.sampler.resampling_interval
        return global_step // interval > previous_step // interval

    def check_lessons(self, trainers: dict[str, Any]) -> list[str]:
        """After every environment step, as ML-Agents: feed each curriculum the episodes its
        behavior finished and check it (once enough episodes completed in the lesson); return
        the behaviors whose lesson advanced."""
        changed = []
        for behavior, c in self.curricula.items():
            trainer = trainers.get(behavior)
            if trainer is None:
                continue
            returns = trainer.take_finished_returns()
            state = self.lessons[behavior]
            if returns:
                state.add_returns(c, returns)
            if state.check(c, trainer.progress, report=bool(returns)):
                changed.append(behavior)
                # enough digits that the measure shows above its threshold (0.30002 > 0.3, not 0.3 > 0.3)
                logger.info("%s: lesson %d of %d (%s%s %.6g > %.6g): %s", behavior, state.lesson, c.max_lesson,
                            "smoothed " if c.signal_smoothing else "", c.measure, state.measure,
                            c.thresholds[state.lesson - 1], c.values(state.lesson))
        return changed

    def describe(self) -> dict[str, Any]:
        """What the run will send, for the dry run's printout: each curriculum's file, measure,
        thresholds, start lesson and its values; the sampler's file, interval and samplers."""
        out: dict[str, Any] = {}
        if self.curricula:
            out["curricula"] = {
                behavior: {"file": str(c.source), "measure": c.measure, "thresholds": [float(t) for t in c.thresholds],
                           "lesson": self.lessons[behavior].lesson, "values": c.values(self.lessons[behavior].lesson)}
                for behavior, c in self.curricula.items()}
        if self.sampler is not None:
            types = {cls: (kind, keys) for kind, (cls, keys) in SAMPLER_TYPES.items()}

            def described(sampler: Any) -> dict[str, Any]:  # its type and keys, as the file gives them
                kind, keys = types.get(type(sampler), (type(sampler).__name__, {}))
                return {"sampler-type": kind, **{key: getattr(sampler, key, None) for key in keys}}

            out["sampler"] = {
                "file": str(self.sampler.source), "resampling-interval": self.sampler.resampling_interval,
                "parameters": {name: described(sampler) for name, sampler in self.sampler.samplers.items()}}
        return out

    def summary(self, behavior: str) -> dict[str, float]:
        """The stats a behavior's summaries show: its lesson and measure, and the values sent
        (averaged over workers)."""
        out: dict[str, float] = {}
        if behavior in self.curricula:
            state, c = self.lessons[behavior], self.curricula[behavior]
            out["Environment/Lesson"] = float(state.lesson)
            if state.lesson < c.max_lesson:  # (the last lesson is never checked: no measure, no threshold)
                # the measure checked in this lesson (none yet after a change: not the last lesson's)
                if state.measure is not None and len(state.returns) >= c.min_lesson_length:
                    out[f"Curriculum/Measure ({c.measure})"] = float(state.measure)
                out["Curriculum/Threshold"] = float(c.thresholds[state.lesson])
        for name in self.names():
            values = [v[name] for v in self.current if name in v]
            if values:
                out[f"Environment Parameters/{name}"] = float(np.mean(values))
        return out
