"""Demonstrations as training columns, for behavioral cloning and GAIL."""

from __future__ import annotations

import numpy as np

from palaestra.demos.check import check_demonstrations
from palaestra.demos.reader import DemoError, read_demonstrations
from palaestra.envs.base import BehaviorSpec
from palaestra.rollout.buffers import observation_columns


def demonstration_columns(path: str, spec: BehaviorSpec, behavior: str, key: str) -> dict[str, np.ndarray]:
    """The rows of the demonstrations at ``path`` that carry an action, as columns (``obs_i``,
    ``continuous``, ``discrete``, ``allowed``, ``done``: the episode truly ended there), after
    checking that they fit the behavior; ``episode_start`` marks each episode's first of them, for
    recurrent policies' sequences. DemoError naming the setting ``key`` and the path otherwise."""
    try:
        demo = read_demonstrations(path)
        problems = check_demonstrations(demo, spec, behavior, path)
    except DemoError as e:
        raise DemoError(f"{key} {path!r}: {e}") from None
    if problems:
        raise DemoError(f"{key} {path!r}: the demonstrations do not fit the behavior: " + "; ".join(problems))
    rows = demo.has_action
    allowed = (~demo.action_masks[rows] if demo.action_masks is not None
               else np.ones((int(rows.sum()), sum(spec.action_spec.discrete_branches)), bool))
    episode = np.searchsorted(demo.episode_starts, np.arange(len(demo)), side="right") - 1
    episode = episode[rows]
    return {**observation_columns([o[rows] for o in demo.observations]),
            "continuous": demo.continuous_actions[rows].astype(np.float32),
            "discrete": demo.discrete_actions[rows].astype(np.int64), "allowed": allowed,
            "done": (demo.done & ~demo.max_step_reached)[rows],
            "episode_start": np.diff(episode, prepend=-1) != 0}
