"""Per-agent running sums of each reward signal's (scaled) rewards, reported as
``Policy/<Signal> Reward`` when an agent's episode ends."""

from __future__ import annotations

from typing import Callable

import numpy as np

from palaestra.rewards.base import RewardSignal
from palaestra.rollout.segments import Segments, slot_waves


class SignalEpisodeSums:
    """``waiting``, where the algorithm sets it: adds the segments whose rewards it has not
    computed yet (algorithms/ppo.py, while a signal's model trains elsewhere) through ``add``, and
    returns those stats; called before anything else changes the sums, so that every segment
    counts in the order it happened."""

    def __init__(self, signals: list[RewardSignal]) -> None:
        self.names = [f"Policy/{s.stat_name} Reward" for s in signals]
        self.sums = np.zeros((0, len(signals)))  # [slots, signals]
        self.waiting: Callable[[], dict[str, list[float]]] | None = None
        self._unreported: dict[str, list[float]] = {}  # what ``waiting`` ended before a clear

    def add(self, seg: Segments, rewards: list[np.ndarray]) -> dict[str, list[float]]:
        """Add finished segments, in the order they happened (an agent's may follow each other:
        a worker's round), with each signal's rewards ``[F, H]``; return the sums of the
        episodes that ended, per signal (and of those that ended in the waiting segments)."""
        return joined_stats(self.settle(), self._add(seg, rewards))

    def settle(self, report_later: bool = False) -> dict[str, list[float]]:
        """Add the waiting segments now; the sums of the episodes they ended (and of those not
        reported yet), or with ``report_later`` none, keeping them for the next report."""
        waiting, self.waiting = self.waiting, None  # (its adds come back here: not again)
        try:
            done = waiting() if waiting is not None else {}
        finally:
            self.waiting = waiting
        done = joined_stats(self.take_unreported(), done)
        if report_later:
            self._unreported, done = done, {}
        return done

    def take_unreported(self) -> dict[str, list[float]]:
        """The sums of the episodes that waiting segments ended, added before a clear."""
        unreported, self._unreported = self._unreported, {}
        return unreported

    def _add(self, seg: Segments, rewards: list[np.ndarray]) -> dict[str, list[float]]:
        if not self.names:  # (a group of no signals: SplitEpisodeSums)
            return {}
        slots = int(seg.slot.max()) + 1
        if slots > self.sums.shape[0]:
            grown = np.zeros((max(slots, 2 * self.sums.shape[0]), self.sums.shape[1]))
            grown[: self.sums.shape[0]] = self.sums
            self.sums = grown
        segment_sums = np.where(seg.row_mask, np.array(rewards), 0.0).sum(axis=2).T  # [F, signals]
        finished = []
        for rows in slot_waves(seg.slot):  # each agent once per wave: its episode ends before the next starts
            slot = seg.slot[rows]
            self.sums[slot] += segment_sums[rows]
            ended = slot[seg.episode_end[rows]]
            finished.append(self.sums[ended])
            self.sums[ended] = 0.0
        done = finished[0] if len(finished) == 1 else np.concatenate(finished)
        if not len(done):
            return {}
        return {name: done[:, k].tolist() for k, name in enumerate(self.names)}

    def clear(self, every: int = 1, offset: int = 0) -> None:
        """Every environment resets (new environment parameters): the episodes under way end
        unreported, and their agents' next episodes start from zero, as ML-Agents' end_episode.
        ``every``, ``offset``: only the slots ``offset, offset + every, ...`` (one restarted worker
        of ``every``, whose agents' slots are ``slot x every + offset``)."""
        self.settle(report_later=True)
        self.sums[offset::every] = 0.0


class SplitEpisodeSums:
    """The episode sums of signals rewarded as experience comes (``now``) kept apart from those of
    signals rewarded only at the next update (``late``: a model that trains elsewhere meanwhile,
    algorithms/ppo.py), so that the first are reported when their episodes end, as ML-Agents
    reports them, not an update later. The same interface as :class:`SignalEpisodeSums`, for
    every signal's rewards in the signals' order; ``late`` has the ``waiting`` hook."""

    def __init__(self, signals: list[RewardSignal], late: list[int]) -> None:
        self.late_indices = list(late)
        self.now_indices = [k for k in range(len(signals)) if k not in late]
        self.now = SignalEpisodeSums([signals[k] for k in self.now_indices])
        self.late = SignalEpisodeSums([signals[k] for k in self.late_indices])

    def add(self, seg: Segments, rewards: list[np.ndarray]) -> dict[str, list[float]]:
        return joined_stats(self.now.add(seg, [rewards[k] for k in self.now_indices]),
                            self.late.add(seg, [rewards[k] for k in self.late_indices]))

    def settle(self, report_later: bool = False) -> dict[str, list[float]]:
        return joined_stats(self.now.settle(report_later), self.late.settle(report_later))

    def take_unreported(self) -> dict[str, list[float]]:
        return joined_stats(self.now.take_unreported(), self.late.take_unreported())

    def clear(self, every: int = 1, offset: int = 0) -> None:
        self.now.clear(every, offset)
        self.late.clear(every, offset)


def joined_stats(a: dict[str, list[float]], b: dict[str, list[float]]) -> dict[str, list[float]]:
    """Two sets of per-episode stats as one (the lists of a key joined, ``a``'s first)."""
    return {k: a.get(k, []) + b.get(k, []) for k in a.keys() | b.keys()} if a else b
