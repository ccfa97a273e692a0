"""The one environment protocol every environment source implements.

It follows ML-Agents' low-level API (``mlagents_envs.base_env``): an environment holds one or
more *behaviors*; for each behavior, :meth:`Env.get_steps` returns the agents that need a
decision (:class:`DecisionSteps`) and the agents whose episode ended since the last call
(:class:`TerminalSteps`), each as arrays over agents. Actions go back per behavior as one
:class:`ActionTuple` whose rows follow the order of the decision steps' ``agent_id``.

An agent whose episode ends and restarts in the same step appears in both the terminal steps
(its final observation) and the decision steps (the first observation of the next episode),
with the same id, exactly as in ML-Agents. Consumers handle terminal steps first.

``behavior_specs`` holds the behaviors seen so far. It may gain a behavior after a reset or a
step (a Unity scene that spawns agents of a new behavior mid-run), never loses one, and a
behavior's spec never changes. The run loop looks for new behaviors after every reset and step
and makes a trainer for each (palaestra/run.py), as ML-Agents does; a behavior nobody set
actions for gets the spec's empty actions (zeros).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Protocol, runtime_checkable

import numpy as np

from palaestra.envs.observations import stored_dtype
from palaestra.options import RunOptions


@dataclass(frozen=True)
class ActionSpec:
    """Continuous action size and discrete branch sizes (either may be empty)."""

    continuous_size: int = 0
    discrete_branches: tuple[int, ...] = ()

    @property
    def is_continuous(self) -> bool:
        return self.continuous_size > 0

    @property
    def is_discrete(self) -> bool:
        return len(self.discrete_branches) > 0

    @property
    def num_branches(self) -> int:
        return len(self.discrete_branches)

    def empty_actions(self, n_agents: int) -> "ActionTuple":
        return ActionTuple(
            continuous=np.zeros((n_agents, self.continuous_size), dtype=np.float32),
            discrete=np.zeros((n_agents, self.num_branches), dtype=np.int32),
        )

    def check(self, actions: "ActionTuple", n_agents: int, behavior: str) -> None:
        """Raise EnvError unless ``actions`` fit ``n_agents`` agents of this spec."""
        continuous, discrete = (n_agents, self.continuous_size), (n_agents, self.num_branches)
        if n_agents and (actions.continuous.shape != continuous or actions.discrete.shape != discrete):
            raise EnvError(
                f"set_actions({behavior!r}): the {n_agents} agents of the last decision steps need continuous "
                f"actions of shape {continuous} and discrete actions of shape {discrete}; got "
                f"{actions.continuous.shape} and {actions.discrete.shape}")

    def value_problem(self, actions: "ActionTuple") -> str | None:
        """What in ``actions`` (already of the right shape) no environment could take: a discrete
        action outside its branch, a continuous one NaN or infinite; None when all fit."""
        if self.is_continuous and not np.isfinite(actions.continuous).all():
            rows = np.flatnonzero(~np.isfinite(actions.continuous).all(axis=1))
            return f"NaN or infinite continuous actions for the agents in rows {rows[:10].tolist()}"
        for b, size in enumerate(self.discrete_branches):
            column = actions.discrete[:, b]
            bad = (column < 0) | (column >= size)
            if bad.any():
                return (f"discrete action {int(column[bad][0])} in branch {b}, which has {size} actions "
                        f"(0 to {size - 1}), for the agents in rows {np.flatnonzero(bad)[:10].tolist()}")
        return None

    def random_actions(self, n_agents: int, rng: np.random.Generator) -> "ActionTuple":
        cont = rng.uniform(-1.0, 1.0, size=(n_agents, self.continuous_size)).astype(np.float32)
        disc = np.zeros((n_agents, self.num_branches), dtype=np.int32)
        for b, size in enumerate(self.discrete_branches):
            disc[:, b] = rng.integers(0, size, size=n_agents)
        return ActionTuple(continuous=cont, discrete=disc)

    def describe(self) -> str:
        parts = []
        if self.is_continuous:
            parts.append(f"continuous({self.continuous_size})")
        if self.is_discrete:
            parts.append(f"discrete{list(self.discrete_branches)}")
        return " + ".join(parts) or "none"


@dataclass(frozen=True)
class BehaviorSpec:
    """What a behavior observes (one shape per observation) and how it acts."""

    observation_shapes: tuple[tuple[int, ...], ...]
    action_spec: ActionSpec


def behaviors_named(name: str, behaviors: Iterable[str]) -> list[str]:
    """The behaviors ``name`` names: the one of that name, else every Unity behavior whose name
    before its team (``Striker`` of ``Striker?team=0``) it is, as ML-Agents names them in configs."""
    behaviors = list(behaviors)
    if name in behaviors:
        return [name]
    return [b for b in behaviors if "?" in b and b.partition("?")[0] == name]


def _is_count(value: Any, least: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= least


def spec_problem(behavior: Any, spec: Any) -> str | None:
    """What makes ``behavior_specs[behavior] = spec`` unusable (a user's own environment class
    may declare anything), or None: a non-empty string name; one shape of positive whole sizes
    per observation (at least one); an action spec of whole sizes with at least one action."""
    if not isinstance(behavior, str) or not behavior.strip():  # (a blank one names no file, no summary)
        return f"has a behavior named {behavior!r}: behavior names are non-empty strings, not only spaces"
    if not isinstance(spec, BehaviorSpec):
        return f"gives behavior {behavior!r} a {type(spec).__name__}, not a BehaviorSpec"
    shapes = spec.observation_shapes
    if not isinstance(shapes, (tuple, list)) or not shapes:
        return f"gives behavior {behavior!r} no observation: observation_shapes needs at least one shape"
    for i, shape in enumerate(shapes):
        if not isinstance(shape, (tuple, list)) or not shape or not all(_is_count(d, 1) for d in shape):
            return (f"gives behavior {behavior!r} observation {i} the shape {shape!r}: a shape is a tuple of "
                    "whole sizes of at least 1, such as (8,) or (84, 84, 3)")
    action = spec.action_spec
    if not isinstance(action, ActionSpec):
        return f"gives behavior {behavior!r} an action_spec of type {type(action).__name__}, not an ActionSpec"
    branches = action.discrete_branches
    if not _is_count(action.continuous_size, 0) or not isinstance(branches, (tuple, list)) or \
            not all(_is_count(b, 1) for b in branches):
        return (f"gives behavior {behavior!r} the actions {action!r}: continuous_size is a whole number of at "
                "least 0 and each discrete branch a whole number of at least 1")
    if not action.continuous_size and not branches:
        return f"gives behavior {behavior!r} no action: it needs continuous actions, discrete branches or both"
    return None


@dataclass
class DecisionSteps:
    """Agents of one behavior that need an action now.

    ``obs``: one float32 array ``[n_agents, *shape]`` per observation of the behavior spec (an
    image, rank 3: float32 in [0, 1] or uint8, envs/observations.py).
    ``reward``: reward received since the agent's previous decision.
    ``action_mask``: one bool array ``[n_agents, branch_size]`` per discrete branch, ``True``
    meaning the action is *unavailable* (ML-Agents' convention), or ``None`` when nothing is masked.
    """

    obs: list[np.ndarray]
    reward: np.ndarray
    agent_id: np.ndarray
    action_mask: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.agent_id.shape[0])

    @staticmethod
    def empty(spec: BehaviorSpec) -> "DecisionSteps":
        return DecisionSteps(**_no_agents(spec))


@dataclass
class TerminalSteps:
    """Agents of one behavior whose episode ended since the last step.

    ``interrupted`` is True where the episode was cut by a step limit rather than reaching a
    true terminal state; learners bootstrap the value there.
    """

    obs: list[np.ndarray]
    reward: np.ndarray
    agent_id: np.ndarray
    interrupted: np.ndarray

    def __len__(self) -> int:
        return int(self.agent_id.shape[0])

    @staticmethod
    def empty(spec: BehaviorSpec) -> "TerminalSteps":
        return TerminalSteps(**_no_agents(spec), interrupted=np.zeros(0, dtype=bool))


def _no_agents(spec: BehaviorSpec) -> dict[str, Any]:
    """The fields both kinds of steps share, for no agents."""
    return {"obs": [np.zeros((0, *s), dtype=stored_dtype(s)) for s in spec.observation_shapes],
            "reward": np.zeros(0, dtype=np.float32), "agent_id": np.zeros(0, dtype=np.int64)}


@dataclass
class ActionTuple:
    """Actions for the agents of one decision step: ``continuous`` ``[n, size]`` float32 in
    [-1, 1] and ``discrete`` ``[n, branches]`` int32 branch indices."""

    continuous: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    discrete: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32))

    def __post_init__(self) -> None:
        # a part left out has no columns, but as many rows as the part given
        if self.discrete.shape == (0, 0) and len(self.continuous):
            self.discrete = np.zeros((len(self.continuous), 0), np.int32)
        elif self.continuous.shape == (0, 0) and len(self.discrete):
            self.continuous = np.zeros((len(self.discrete), 0), np.float32)


@dataclass(frozen=True)
class EngineConfig:
    """Engine settings from the command line. Unity builds use all of them; built-in and Python
    environments use what applies to them (see docs/environments.md). The defaults are the
    flags' (palaestra/options.py). ``no_graphics``, ``timeout_wait`` and ``log_folder`` say how a
    Unity build is started and waited for (``log_folder``: where its log goes, the run's
    ``run_logs``; None for the Unity default)."""

    width: int | None = RunOptions.width  # None: not sent
    height: int | None = RunOptions.height
    quality_level: int = RunOptions.quality_level
    time_scale: float = RunOptions.time_scale
    target_frame_rate: int = RunOptions.target_frame_rate
    capture_frame_rate: int = RunOptions.capture_frame_rate
    no_graphics: bool = RunOptions.no_graphics
    timeout_wait: float = RunOptions.timeout_wait
    log_folder: str | None = None


# A log record's extra key: a message every copy of an environment would log alike (one per
# --num-envs worker); the workers past the first leave it out (workers/process.py)
ONCE_PER_RUN = "once_per_run"


class EnvError(Exception):
    """An environment failed or answered with something the protocol does not allow."""


class EnvDataError(EnvError):
    """What an environment sent breaks a rule every step keeps (NaN or infinite values, an action
    mask that allows nothing): a worker restarted on it would only send it again, so the run stops
    (saved first) instead of restarting the worker."""


class EnvClosed(EnvError):
    """The environment ended the session itself, as it may (Play stopped in the Unity Editor, a
    Unity build quit): the run saves and ends without an error."""


# How an environment's own statistics are summarized over a summary period (the numbers of
# Unity's StatAggregationMethod): the mean of every value, the last value, the sum of every value,
# or a distribution (summarized here by its mean, as TensorBoard's scalars show it).
STAT_AVERAGE, STAT_MOST_RECENT, STAT_SUM, STAT_HISTOGRAM = 0, 1, 2, 3


@runtime_checkable
class Env(Protocol):
    """The protocol the run loop drives; see the module docstring and docs/environments.md.

    An environment that records statistics of its own (a Unity scene's stats channel) may also
    have ``take_stats() -> {key: (values, aggregation)}`` (one of the ``STAT_*`` aggregations
    below): the run loop writes them to every behavior's summaries."""

    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]: ...

    def reset(self, parameters: Mapping[str, float] | None = None) -> None: ...

    def get_steps(self, behavior: str) -> tuple[DecisionSteps, TerminalSteps]: ...

    def set_actions(self, behavior: str, actions: ActionTuple) -> None: ...

    def step(self) -> None: ...

    def close(self) -> None: ...
