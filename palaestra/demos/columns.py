"""Demonstrations as training columns, for behavioral cloning and GAIL."""

from __future__ import annotations

import logging

import numpy as np

from palaestra.demos.check import require_demonstrations_fit
from palaestra.demos.reader import DemoError, read_demonstrations
from palaestra.envs.base import BehaviorSpec
from palaestra.rollout.buffers import observation_columns

logger = logging.getLogger("palaestra")


def demonstration_columns(path: str, spec: BehaviorSpec, behavior: str, key: str) -> dict[str, np.ndarray]:
    """The rows of the demonstrations at ``path`` that carry an action, as columns (``obs_i``,
    ``continuous``, ``discrete``, ``allowed``, ``done``: the episode truly ended with the next
    record), after checking that they fit the behavior and hold only finite numbers; ``episode_start`` marks each episode's first of them, for
    recurrent policies' sequences. DemoError naming the setting ``key`` and the path otherwise."""
    try:
        demo = read_demonstrations(path)
        require_demonstrations_fit(demo, spec, behavior, path)
    except DemoError as e:
        raise DemoError(f"{key} {path!r}: {e}") from None
    rows = demo.has_action
    problem = _non_finite(demo, rows)
    if problem:
        raise DemoError(f"{key} {path!r}: {problem}; a NaN or infinity would make the policy's weights NaN")
    allowed = (~demo.action_masks[rows] if demo.action_masks is not None
               else np.ones((int(rows.sum()), sum(spec.action_spec.discrete_branches)), bool))
    allowed, forbidden = learnable_masks(allowed, demo.discrete_actions[rows], spec.action_spec.discrete_branches)
    if forbidden:
        logger.warning("%s %r: %d of %d demonstrated actions are ones their own record's action mask forbids "
                       "(was the recording's policy given the masks?); those rows are learned without their "
                       "masks", key, path, forbidden, int(rows.sum()))
    episode = np.searchsorted(demo.episode_starts, np.arange(len(demo)), side="right") - 1
    episode = episode[rows]
    # ML-Agents' pairing (demo_to_buffer): a record's action is followed by the next record's
    # reward and done. Unity's later recorders and palaestra-record put no action on the record
    # that ends an episode, so the last action's own record is never done: its successor is.
    starts = np.zeros(len(demo), bool)
    starts[demo.episode_starts] = True
    ended = demo.done & ~demo.max_step_reached & ~starts  # an episode's first record ends no earlier one
    next_done = np.append(ended[1:], False)
    return {**observation_columns([o[rows] for o in demo.observations]),
            "continuous": demo.continuous_actions[rows].astype(np.float32),
            "discrete": demo.discrete_actions[rows].astype(np.int64), "allowed": allowed,
            "done": next_done[rows],
            "episode_start": np.diff(episode, prepend=-1) != 0}


def _non_finite(demo, rows: np.ndarray) -> str | None:
    """Where the rows that will be learned from hold a NaN or an infinity (float observations and
    continuous actions), naming the record; None when everything is finite."""
    record = np.flatnonzero(rows)
    for i, o in enumerate(demo.observations):
        if o.dtype.kind == "f":
            bad = ~np.isfinite(o[rows].reshape(len(record), -1)).all(axis=1)
            if bad.any():
                return (f"{demo.record_name(int(record[bad][0]))}: observation {i} holds NaN or infinite values "
                        f"({int(bad.sum())} records)")
    actions = demo.continuous_actions[rows]
    if actions.size and not np.isfinite(actions).all():
        where = np.argwhere(~np.isfinite(actions))[0]
        return (f"{demo.record_name(int(record[where[0]]))}: continuous action {int(where[1])} is "
                f"{actions[where[0], where[1]]}")
    return None


def learnable_masks(allowed: np.ndarray, discrete: np.ndarray, branches: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """The masks to clone expert actions under, and how many rows take (in some branch) an action
    their own mask forbids: those rows go unmasked. Under its mask such an action has probability
    0, and its cross-entropy (about 1e8) would swamp every other row's; ML-Agents' behavioral
    cloning applies no masks at all."""
    if not branches or allowed.size == 0:
        return allowed, 0
    offsets = np.cumsum((0, *branches[:-1]))
    taken = allowed[np.arange(len(allowed))[:, None], offsets[None, :] + discrete]  # [rows, branches]
    forbidden = (~taken).any(axis=1)
    if forbidden.any():
        allowed = allowed.copy()
        allowed[forbidden] = True
    return allowed, int(forbidden.sum())
