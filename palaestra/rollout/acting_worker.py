"""Acting in the environment workers: each worker runs the policy on its own agents and sends
finished segments, instead of sending every step's observations to the main process.

The main side is rollout/acting_pool.py; docs/environments.md says when this mode is used. The
worker (envs/worker_process.py) switches to :func:`run_acting` when it receives an
:class:`ActingPlan`. From then on it works in *rounds* of ``R`` environment steps. Round ``q``
may start once the main process has sent ``("round", q)``; the worker then copies the weights
published for round ``q`` (slot ``q % slots`` of the weights block) into its own numpy policies,
steps ``R`` times (acting, stepping, recording segments exactly as the main process's collector
would), writes the round's finished segments into its result block for slot ``q % slots`` and
sends ``("round", q, R, header, episode stats, new block name)``.

Everything a round produces depends only on the worker's seed and the weights of that round, so
a run with the same ``--seed`` is reproducible whatever the timing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from palaestra.envs.base import BehaviorSpec
from palaestra.envs.shm import Header, SharedArrays, pack_arrays
from palaestra.networks.numpy_network import (
    MLPNetwork,
    WeightLayout,
    weight_size,
    weight_views,
)
from palaestra.rollout.collector import Collector, EpisodeStats, Segments

# Segment fields with one entry per row ([F, H, ...]) and with one entry per segment ([F, ...]).
ROW_FIELDS = ("obs", "continuous", "discrete", "allowed", "log_prob", "values", "env_reward")
SEGMENT_FIELDS = ("length", "bootstrap", "next_obs", "next_allowed", "terminal", "episode_end", "slot")


@dataclass(frozen=True)
class BehaviorPlan:
    """What a worker needs to act for one behavior."""

    layout: WeightLayout  # the network and its published weights (names and shapes)
    time_horizon: int
    signals: int  # value heads
    round_agent_steps: int  # this behavior's agent steps a round should hold, per worker
    activation: str = "swish"  # the policy's hidden layers (networks/constants.py: ACTIVATIONS)


@dataclass(frozen=True)
class ActingPlan:
    behaviors: dict[str, BehaviorPlan]
    weights_name: str  # the main process's weights block: one [slots, size] array per behavior
    slots: int  # weight slots and result blocks, used round-robin
    first_round: int
    seed: int
    reset_parameters: dict[str, float] | None


def weights_layout(plans: dict[str, BehaviorPlan], slots: int) -> dict[str, tuple[tuple[int, ...], Any]]:
    return {f"w{k}": ((slots, weight_size(p.layout)), np.float32) for k, p in enumerate(plans.values())}


def round_steps(plans: dict[str, BehaviorPlan], agents: dict[str, int]) -> int:
    """Environment steps per round: enough for each behavior's share, counted with its agents at
    reset (a behavior without agents yet does not count); at least 1."""
    steps = [math.ceil(p.round_agent_steps / agents[b]) for b, p in plans.items() if agents.get(b)]
    return max(1, min(steps)) if steps else 1


def pack_segments(parts: list[Segments], n_workers: int, index: int) -> dict[str, np.ndarray]:
    """A round's finished segments as flat arrays: real rows only (no padding), one segment after
    the other; slots made unique across workers (slot x N + i), as agent ids are."""
    masks = [part.row_mask for part in parts]
    out = {f: np.concatenate([getattr(part, f)[mask] for part, mask in zip(parts, masks)]) for f in ROW_FIELDS}
    out |= {f: np.concatenate([getattr(part, f) for part in parts]) for f in SEGMENT_FIELDS}
    out["slot"] = out["slot"] * n_workers + index
    return out


def unpack_segments(arrays: dict[str, np.ndarray]) -> Segments:
    """The inverse of :func:`pack_segments`: segments padded to their longest."""
    length = arrays["length"]
    mask = np.arange(int(length.max()))[None, :] < length[:, None]
    fields: dict[str, np.ndarray] = {}
    for f in ROW_FIELDS:
        rows = arrays[f]
        padded = np.zeros((*mask.shape, *rows.shape[1:]), dtype=rows.dtype)
        padded[mask] = rows
        fields[f] = padded
    return Segments(**fields, **{f: arrays[f] for f in SEGMENT_FIELDS})


class _Actor:
    """One behavior's numpy policy (over a local copy of the published weights) and collector."""

    def __init__(self, spec: BehaviorSpec, plan: BehaviorPlan, rng: np.random.Generator) -> None:
        self.weights = np.zeros(weight_size(plan.layout), np.float32)
        self.policy = MLPNetwork(plan.layout.network, list(weight_views(self.weights, plan.layout).values()), rng)
        self.collector = Collector(spec, plan.time_horizon, plan.signals)
        self.finished: list[Segments] = []


def _write_results(results: list[SharedArrays | None], slot: int,
                   arrays: dict[str, np.ndarray]) -> tuple[Header, tuple[str, int] | None]:
    """Pack a round's arrays into the result block of ``slot``, replacing it by a larger one if
    it is missing or too small; return the header and the new block's (name, size), if any."""
    block = results[slot]
    header = pack_arrays(block, arrays) if block is not None else None
    if header is not None:
        return header, None
    if block is not None:
        block.close(unlink=True)  # the main process keeps its mapping until it swaps
    need = sum(a.nbytes for a in arrays.values())
    results[slot] = block = SharedArrays({"bytes": ((max(2 * need, 1 << 16),), np.uint8)})
    header = pack_arrays(block, arrays)
    assert header is not None
    return header, (block.name, block["bytes"].nbytes)


def run_acting(env: Any, conn: Any, plan: ActingPlan, n_workers: int, index: int) -> None:
    """Act in rounds until the main process sends ``("close", ...)``."""
    from threadpoolctl import threadpool_limits

    # acting multiplies small matrices: BLAS threads would only spin on the cores other workers need
    threadpool_limits(1)
    specs = env.behavior_specs
    weights = SharedArrays(weights_layout(plan.behaviors, plan.slots), name=plan.weights_name)
    seeds = np.random.SeedSequence([plan.seed, index]).spawn(len(plan.behaviors))
    actors = {b: _Actor(specs[b], p, np.random.default_rng(s))
              for (b, p), s in zip(plan.behaviors.items(), seeds)}
    results: list[SharedArrays | None] = [None] * plan.slots
    try:
        env.reset(plan.reset_parameters)
        steps = round_steps(plan.behaviors, {b: len(env.get_steps(b)[0]) for b in actors})
        q, permitted = plan.first_round, plan.first_round - 1
        while True:
            # read every message already sent, so that a close waiting behind permissions for
            # further rounds is seen now; block only when the next round is not permitted yet
            while permitted < q or conn.poll():
                message = conn.recv()
                if message[0] == "close":
                    return
                permitted = max(permitted, message[1])
            for k, actor in enumerate(actors.values()):
                actor.weights[:] = weights[f"w{k}"][q % plan.slots]
            for _ in range(steps):
                for behavior, actor in actors.items():
                    decision, terminal = env.get_steps(behavior)
                    actions, finished = actor.collector.step(decision, terminal, actor.policy.act,
                                                             actor.policy.value)
                    if finished is not None:
                        actor.finished.append(finished)
                    env.set_actions(behavior, actions)
                env.step()
            arrays: dict[str, np.ndarray] = {}
            stats: dict[str, EpisodeStats] = {}
            for k, (behavior, actor) in enumerate(actors.items()):
                if actor.finished:
                    arrays |= {f"{k}/{f}": a for f, a in pack_segments(actor.finished, n_workers, index).items()}
                    actor.finished = []
                stats[behavior] = actor.collector.take_episode_stats()
            header, announced = _write_results(results, q % plan.slots, arrays)
            conn.send(("round", q, steps, header, stats, announced))
            q += 1
    finally:
        for block in results:
            if block is not None:
                block.close(unlink=True)
        weights.close(unlink=False)
