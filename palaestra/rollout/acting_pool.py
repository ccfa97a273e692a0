"""The main process's side of acting in the environment workers (rollout/acting_worker.py).

The workers of a :class:`~palaestra.envs.workers.WorkerPoolEnv` act in rounds; the main process
takes round ``r`` from every worker (in worker order, so runs are reproducible), hands the
segments to the trainers, lets them update, and then publishes the weights for round
``r + 1 + LAG``. Workers therefore run up to ``LAG`` rounds ahead of the main process: while it
learns from one round they collect the next with the weights they have, as ML-Agents' threaded
trainers do (``threaded: true``, the default; with ``threaded: false`` in any behavior's section
the lag is 0 and the workers wait for each round's update). Each round's share of a behavior's
experience is ``buffer_size / (ROUNDS_PER_BUFFER x workers)`` agent steps per worker, so up to
``LAG / ROUNDS_PER_BUFFER`` of a buffer is collected with the weights from before an update.

A worker that fails is restarted (within the pool's limits) from the round it owes; the
unfinished segments of its agents are lost with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from palaestra.envs.shm import SharedArrays, unpack_arrays
from palaestra.envs.workers import WorkerFailed, WorkerPoolEnv
from palaestra.networks.numpy_network import weight_views
from palaestra.rollout.acting_worker import (
    ActingPlan,
    BehaviorPlan,
    unpack_segments,
    weights_layout,
)
from palaestra.rollout.collector import EpisodeStats, Segments

# Measured with PPO on HalfCheetah-v5 (docs/benchmarks.md): an update costs the main process
# about as much time as the workers take to collect half a buffer or more, so they need about six
# rounds of an eighth of a buffer in hand to keep stepping through it. Fewer rounds in hand left
# them waiting (6,700-7,000 steps/s with 2 workers instead of 7,500-8,800). The rows collected
# with older weights are corrected for by PPO's decoupled objective (algorithms/ppo.py:
# _decouple); without it 3DBall learned about half as fast per step.
ROUNDS_PER_BUFFER = 8
LAG = 6


@dataclass
class RoundResult:
    """One behavior's part of one worker's round."""

    behavior: str
    segments: Segments | None  # finished segments, or None if none finished
    episodes: EpisodeStats


class ActingWorkers:
    """Drives ``pool``'s processes in acting mode. ``weights[b]()`` returns behavior ``b``'s current
    weights as named float32 arrays, laid out as ``plans[b].layout``."""

    def __init__(self, pool: WorkerPoolEnv, plans: dict[str, BehaviorPlan],
                 weights: dict[str, Callable[[], dict[str, np.ndarray]]], seed: int, threaded: bool = True) -> None:
        self.pool = pool
        self.plans = plans
        self.sources = weights
        self.seed = seed
        # ML-Agents' `threaded: false`: the environments wait while the trainers update, so every
        # round acts with the newest weights
        self.lag = LAG if threaded else 0
        self.slots = self.lag + 1
        self.weights: SharedArrays | None = None
        self.next = 0  # the round to take next
        self.permitted = -1  # the last round the workers may start

    @staticmethod
    def round_agent_steps(buffer_size: int, workers: int) -> int:
        return max(1, buffer_size // (ROUNDS_PER_BUFFER * workers))

    def start(self) -> None:
        self.weights = SharedArrays(weights_layout(self.plans, self.slots))
        for q in range(self.slots):  # the first rounds all act with the initial weights
            self._write_weights(q)
        self.permitted = self.slots - 1
        for i in range(self.pool.n):
            try:
                self._start_worker(i, 0)
            except WorkerFailed as f:
                self._restart(i, f.what, 0)

    def take_round(self) -> tuple[list[RoundResult], int]:
        """Every worker's next round, in worker order; and the environment steps it covered
        (one per instance and step, as the run loop counts global steps)."""
        q = self.next
        results: list[RoundResult] = []
        env_steps = 0
        for i in range(self.pool.n):
            while True:
                try:
                    steps, arrays, stats = self._receive(i, q)
                    break
                except WorkerFailed as f:
                    self._restart(i, f.what, q)
            env_steps += steps
            for k, behavior in enumerate(self.plans):
                prefix = f"{k}/"
                part = {key[len(prefix):]: a for key, a in arrays.items() if key.startswith(prefix)}
                results.append(RoundResult(behavior, unpack_segments(part) if part else None, stats[behavior]))
        self.next = q + 1
        return results, env_steps

    def publish(self) -> None:
        """Call after the trainers have learned from the round just taken: its weights become
        those of round ``taken + 1 + lag``, which the workers may now start."""
        q = self.next - 1 + self.slots
        self._write_weights(q)
        self.permitted = q
        for i in range(self.pool.n):
            try:
                self._send(i, ("round", q))
            except WorkerFailed:
                pass  # found dead when its round is awaited, and restarted then

    def close(self) -> None:
        if self.weights is not None:
            self.weights.close(unlink=True)
            self.weights = None

    # -- one worker --------------------------------------------------------------------------
    def _write_weights(self, q: int) -> None:
        assert self.weights is not None
        for k, (behavior, source) in enumerate(self.sources.items()):
            arrays = source()
            for name, view in weight_views(self.weights[f"w{k}"][q % self.slots], self.plans[behavior].layout).items():
                view[...] = arrays[name]

    def _start_worker(self, i: int, first_round: int) -> None:
        assert self.weights is not None
        restarts = len(self.pool.workers[i].restarts)
        plan = ActingPlan(self.plans, self.weights.name, self.slots, first_round,
                          self.seed + self.pool.n * restarts, self.pool.reset_parameters)
        self.pool.send_message(i, ("act", plan))
        for q in range(first_round, self.permitted + 1):
            self._send(i, ("round", q))

    def _send(self, i: int, message: tuple) -> None:
        w = self.pool.workers[i]
        try:
            w.conn.send(message)
        except (BrokenPipeError, OSError):
            raise WorkerFailed("the process died") from None

    def _receive(self, i: int, q: int) -> tuple[int, dict[str, np.ndarray], dict[str, EpisodeStats]]:
        w = self.pool.workers[i]
        _, got, steps, header, stats, announced = self.pool.read_pipe(i, "round")
        if got != q:
            raise WorkerFailed(f"it sent round {got} where round {q} was expected")
        slot = q % self.slots
        if announced is not None:  # a new (larger) result block for this slot
            if slot in w.results:
                w.results.pop(slot).close(unlink=False)  # the worker unlinked it
            name, size = announced
            w.results[slot] = SharedArrays({"bytes": ((size,), np.uint8)}, name=name)
        return steps, unpack_arrays(w.results[slot], header), stats

    def _restart(self, i: int, what: str, q: int) -> None:
        self.pool.replace_worker(i, what)
        try:
            self._start_worker(i, q)
        except WorkerFailed as f:
            self._restart(i, f.what, q)
