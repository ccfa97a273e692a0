"""``check_env``: drive an environment with random actions and verify it keeps the protocol
(shapes, dtypes, ids, masks, finite values). Use it on a new environment before training.

:class:`CheckedEnv` is the run's own check of an environment written by a user (a Python
factory's): each ``get_steps`` is checked against the behavior's spec as it happens, so that a
wrong shape or a repeated agent id stops the run naming the behavior and what is wrong, not
deep inside a network."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Mapping

import numpy as np

from palaestra.envs.base import (
    BehaviorSpec,
    DecisionSteps,
    Env,
    EnvDataError,
    EnvError,
    TerminalSteps,
    spec_problem,
)

# the members of the Env protocol (envs/base.py)
PROTOCOL = ("behavior_specs", "get_steps", "set_actions", "step", "reset", "close")


def non_finite_problem(steps: DecisionSteps | TerminalSteps) -> str | None:
    """What is NaN or infinite in a step's rewards or (non-image) observations, or None
    (palaestra-record checks every step; training checks finished segments, below)."""
    if len(steps) == 0:
        return None
    finite = np.isfinite(steps.reward)
    if not finite.all():
        return f"a NaN or infinite reward for agent(s) {steps.agent_id[~finite][:10].tolist()}"
    for i, o in enumerate(steps.obs):
        if o.dtype.kind == "f" and not np.isfinite(o).all():
            bad = ~np.isfinite(o.reshape(len(o), -1)).all(axis=1)
            return f"NaN or infinite values in observation {i} of agent(s) {steps.agent_id[bad][:10].tolist()}"
    return None


NON_FINITE_HARM = ("a NaN or infinity would make the policy's weights NaN, so it was not used (check the "
                   "environment's reward and observations)")


def refuse_non_finite_segments(behavior: str, rewards: np.ndarray, observations: list[np.ndarray]) -> None:
    """An EnvError if finished segments' rewards or (non-image) observations hold a NaN or an
    infinity (their padding is zeros)."""
    if not np.isfinite(rewards).all():
        raise EnvDataError(f"behavior {behavior!r}: the environment sent a NaN or infinite reward; {NON_FINITE_HARM}")
    for i, o in enumerate(observations):
        if o.dtype.kind == "f" and not np.isfinite(o).all():
            raise EnvDataError(f"behavior {behavior!r}: the environment sent NaN or infinite values in an observation; "
                           f"{NON_FINITE_HARM}")


def refuse_non_finite(behavior: str, decision: DecisionSteps, terminal: TerminalSteps) -> None:
    """An EnvError naming the behavior and what was not finite, if anything was."""
    for kind, steps in (("terminal", terminal), ("decision", decision)):
        problem = non_finite_problem(steps)
        if problem is not None:
            raise EnvDataError(f"behavior {behavior!r}: the environment sent {problem} ({kind} steps); {NON_FINITE_HARM}")


def refuse_non_finite_decision(behavior: str, decision: DecisionSteps) -> None:
    """The policy's output for ``decision`` is not finite: an EnvDataError if the environment's
    values are why (the NaN actions they give are not sent); weights that are no longer finite
    are the trainer's to report."""
    problem = non_finite_problem(decision)
    if problem is not None:
        raise EnvDataError(f"behavior {behavior!r}: the environment sent {problem} (decision steps); "
                           f"{NON_FINITE_HARM}")


def refuse_empty_branches(behavior: str, agent_id: np.ndarray, allowed: np.ndarray, branch_starts: np.ndarray) -> None:
    """An EnvDataError if an action mask allows no action of a branch (``allowed``: ``[n,
    sum(branches)]``; ``branch_starts``: each branch's first column): a masked action is never
    chosen, so there would be nothing to choose."""
    some = np.logical_or.reduceat(allowed, branch_starts, axis=1)
    if not some.all():
        agents, branches = np.nonzero(~some)
        raise EnvDataError(
            f"behavior {behavior!r}: the environment's action mask allows no action of branch {int(branches[0])} "
            f"for agent(s) {agent_id[np.unique(agents)][:10].tolist()}; masked actions are never chosen, so each "
            "branch needs at least one allowed action")


def _described(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return f"a {type(value).__name__}"


def _repeated(ids: np.ndarray) -> bool:
    if len(ids) < 2 or (ids[1:] > ids[:-1]).all():  # increasing, the usual order: no sort needed
        return False
    return len(np.unique(ids)) != len(ids)


def _observation_list(where: str, obs: Any, spec: BehaviorSpec) -> list | tuple:
    if not isinstance(obs, (list, tuple)):
        raise EnvError(f"{where}: obs must be a list of numpy arrays, one per observation; got {_described(obs)}")
    if len(obs) != len(spec.observation_shapes):
        raise EnvError(f"{where}: {len(obs)} observation arrays, the spec has {len(spec.observation_shapes)}")
    return obs


def _check_shapes(where: str, steps: Any, spec: BehaviorSpec, decision: bool) -> None:
    """What the run checks of one ``get_steps`` half (:class:`CheckedEnv`): what would fail inside
    a network or mix agents' experience. Its type; with agents in it, one reward per agent, ids
    none of which repeats, each observation in the spec's shape, the terminal flags and the action
    masks. No value and no dtype is looked at here (:func:`_converted` converts them), and a half
    without agents is taken as it comes."""
    expected = DecisionSteps if decision else TerminalSteps
    if not isinstance(steps, expected):
        raise EnvError(f"{where}: expected a {expected.__name__}, got {_described(steps)}")
    ids = np.asarray(steps.agent_id)
    if ids.ndim != 1:
        raise EnvError(f"{where}: agent_id must be a 1-D numpy array of integers, got {_described(steps.agent_id)}")
    n = len(ids)
    if n == 0:
        return
    if np.shape(steps.reward) != (n,):
        raise EnvError(f"{where}: reward must be a numpy array of shape ({n},), one per agent; got "
                       f"{_described(steps.reward)}")
    if _repeated(ids):
        raise EnvError(f"{where}: agent ids repeat within one step: {ids[:20].tolist()}")
    obs = _observation_list(where, steps.obs, spec)
    for i, (o, shape) in enumerate(zip(obs, spec.observation_shapes)):
        if np.shape(o) != (n, *shape):
            raise EnvError(f"{where}: observation {i} has shape {np.shape(o)}, expected {(n, *shape)} ({n} "
                           f"agent{'' if n == 1 else 's'}, each the behavior spec's {tuple(shape)})")
    if not decision:
        if np.shape(steps.interrupted) != (n,):
            raise EnvError(f"{where}: interrupted must be a bool numpy array of shape ({n},), got "
                           f"{_described(steps.interrupted)}")
        return
    if steps.action_mask is None:
        return
    branches = spec.action_spec.discrete_branches
    _check_mask_list(where, steps.action_mask, branches)
    for b, (mask, size) in enumerate(zip(steps.action_mask, branches)):
        if np.shape(mask) != (n, size):
            raise EnvError(f"{where}: the mask of branch {b} has shape {np.shape(mask)}, expected {(n, size)}")


def _check_mask_list(where: str, masks: Any, branches: tuple[int, ...]) -> None:
    if not isinstance(masks, (list, tuple)) or len(masks) != len(branches):
        raise EnvError(f"{where}: action_mask must be a list of {len(branches)} arrays, one per discrete branch "
                       f"(or None); got {_described(masks)}")


NUMBERS = "buif"  # numpy dtype kinds of numbers: observations (converted later), flags and masks


def _converted(where: str, steps: Any, spec: BehaviorSpec) -> Any:
    """``steps`` (shapes checked) with the protocol's types where it has others: lists as arrays,
    integer ids, float32 rewards and bool flags and masks (an integer flag's ``~`` is -1 or -2, so
    a true terminal would be bootstrapped as if cut short). The same object where nothing needs it."""
    arrays = [steps.agent_id, steps.reward, *steps.obs]
    if np.shape(steps.agent_id) == (0,):  # an empty half: taken as it comes where it holds arrays
        return steps if all(isinstance(a, np.ndarray) for a in arrays) else type(steps).empty(spec)
    changes: dict[str, Any] = {}
    ids = steps.agent_id
    if not (isinstance(ids, np.ndarray) and ids.dtype.kind in "iu"):
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            if ids.dtype.kind not in "fb" or not (np.isfinite(ids).all() and np.array_equal(ids, np.round(ids))):
                raise EnvError(f"{where}: agent_id must hold integers, got {_described(steps.agent_id)}")
        changes["agent_id"] = ids.astype(np.int64, copy=False)
    if not (isinstance(steps.reward, np.ndarray) and steps.reward.dtype.kind == "f"):
        try:
            changes["reward"] = np.asarray(steps.reward, dtype=np.float32)
        except (TypeError, ValueError):
            raise EnvError(f"{where}: reward must hold numbers, got {_described(steps.reward)}") from None
    if not all(isinstance(o, np.ndarray) and o.dtype.kind in NUMBERS for o in steps.obs):
        obs = [np.asarray(o) for o in steps.obs]  # (numbers in any dtype: converted later, as arrays are)
        for i, (o, given) in enumerate(zip(obs, steps.obs)):
            if o.dtype.kind not in NUMBERS:
                raise EnvError(f"{where}: observation {i} must hold numbers, got {_described(given)}")
        changes["obs"] = obs
    if isinstance(steps, TerminalSteps):
        if not (isinstance(steps.interrupted, np.ndarray) and steps.interrupted.dtype == bool):
            flags = np.asarray(steps.interrupted)
            if flags.dtype.kind not in NUMBERS:  # ("False" as text would be true)
                raise EnvError(f"{where}: interrupted must hold True or False, got {_described(steps.interrupted)}")
            changes["interrupted"] = flags.astype(bool)
    elif steps.action_mask is not None and not all(isinstance(m, np.ndarray) and m.dtype == bool
                                                   for m in steps.action_mask):
        masks = [np.asarray(m) for m in steps.action_mask]
        if any(m.dtype.kind not in NUMBERS for m in masks):
            raise EnvError(f"{where}: each action mask must hold True or False (True: the action is unavailable)")
        changes["action_mask"] = [m.astype(bool) for m in masks]
    return dataclasses.replace(steps, **changes) if changes else steps


def _check_types(where: str, steps: DecisionSteps | TerminalSteps, spec: BehaviorSpec, decision: bool) -> None:
    """check_env's stricter rule, beyond :func:`_check_shapes`: numpy arrays of the protocol's
    dtypes, empty ones in their shapes too."""
    ids, n = steps.agent_id, len(steps.agent_id)
    if not isinstance(ids, np.ndarray) or n and not np.issubdtype(ids.dtype, np.integer):
        raise EnvError(f"{where}: agent_id must be a 1-D numpy array of integers, got {_described(ids)}")
    if not isinstance(steps.reward, np.ndarray) or steps.reward.shape != (n,):
        raise EnvError(f"{where}: reward must be a numpy array of shape ({n},), one per agent; got "
                       f"{_described(steps.reward)}")
    for i, (o, shape) in enumerate(zip(steps.obs, spec.observation_shapes)):
        if not isinstance(o, np.ndarray) or o.shape != (n, *shape):
            raise EnvError(f"{where}: observation {i} must be a numpy array of shape {(n, *shape)}; got "
                           f"{_described(o)}")
        image = len(shape) == 3  # images may come as uint8 (envs/observations.py)
        if not (np.issubdtype(o.dtype, np.floating) or image and o.dtype == np.uint8):
            raise EnvError(f"{where}: observation {i} has dtype {o.dtype}, expected float32"
                           f"{' or uint8 (an image)' if image else ''}")
    if not decision:
        flags = steps.interrupted
        if not isinstance(flags, np.ndarray) or flags.shape != (n,) or flags.dtype != bool:
            raise EnvError(f"{where}: interrupted must be a bool numpy array of shape ({n},), got {_described(flags)}")
        return
    if steps.action_mask is not None:  # (a list, even without agents: _check_shapes looks only where there are some)
        _check_mask_list(where, steps.action_mask, spec.action_spec.discrete_branches)
    for b, (mask, size) in enumerate(zip(steps.action_mask or (), spec.action_spec.discrete_branches)):
        if not isinstance(mask, np.ndarray) or mask.dtype != bool:  # (an int mask's ~ reads -1 and -2 as allowed)
            raise EnvError(f"{where}: the mask of branch {b} must be a bool numpy array (True: the action is "
                           f"unavailable), got {_described(mask)}")
        if mask.shape != (n, size):
            raise EnvError(f"{where}: the mask of branch {b} has shape {mask.shape}, expected {(n, size)}")


def _steps_pair(where: str, result: Any) -> tuple[DecisionSteps, TerminalSteps]:
    if not isinstance(result, tuple) or len(result) != 2:
        raise EnvError(f"{where}: get_steps must return (DecisionSteps, TerminalSteps), got {_described(result)}")
    return result


def _check_common(where: str, steps: DecisionSteps | TerminalSteps, spec: BehaviorSpec, decision: bool) -> None:
    _check_shapes(where, steps, spec, decision)
    _observation_list(where, steps.obs, spec)  # (also of a half without agents)
    _check_types(where, steps, spec, decision)
    finite = np.isfinite(steps.reward)
    if not finite.all():
        raise EnvError(f"{where}: a NaN or infinite reward for agent(s) {steps.agent_id[~finite][:10].tolist()}")
    for i, o in enumerate(steps.obs):
        if o.dtype != np.uint8 and not np.isfinite(o).all():
            raise EnvError(f"{where}: observation {i} contains NaN or infinity")


class CheckedEnv:
    """A user's environment whose ``get_steps`` results are checked against its behaviors' specs
    (:func:`_check_shapes`: types, shapes, ids; the values' finiteness is checked on finished
    segments by the trainer). Everything else is the environment's own: attributes are read from
    and written to it, and ``isinstance`` and ``__class__`` answer for its class (as
    ``unittest.mock`` does), so that code given the environment by ``make_env`` sees the object
    it wrote."""

    _OWN = ("_env", "_label", "_specs")

    def __init__(self, env: Any, label: str) -> None:
        object.__setattr__(self, "_env", env)
        object.__setattr__(self, "_label", label)
        object.__setattr__(self, "_specs", {})

    def __getattr__(self, name: str) -> Any:  # (only what this class does not have)
        env = self.__dict__.get("_env")  # (absent while copy or pickle rebuilds the object)
        if env is None:
            raise AttributeError(name)
        return getattr(env, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self._env, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._env, name)

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._env)

    def __reduce_ex__(self, protocol: Any) -> tuple:  # copy and pickle: the environment, wrapped again
        return CheckedEnv, (self._env, self._label)

    def get_steps(self, behavior: str) -> tuple[DecisionSteps, TerminalSteps]:
        where = f"--env={self._label}: behavior {behavior!r}: get_steps"
        spec = self._specs.get(behavior)
        if spec is None:
            specs: Mapping[str, BehaviorSpec] = self._env.behavior_specs
            spec = self._specs[behavior] = specs[behavior]
        decision, terminal = _steps_pair(where, self._env.get_steps(behavior))
        _check_shapes(f"{where}, decision steps", decision, spec, decision=True)
        _check_shapes(f"{where}, terminal steps", terminal, spec, decision=False)
        return _converted(f"{where}, decision steps", decision, spec), _converted(f"{where}, terminal steps", terminal,
                                                                                  spec)


def check_env(env: Env, steps: int = 200, seed: int = 0) -> None:
    """Raise EnvError describing the first protocol violation found in ``steps`` random steps."""
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"check_env: steps must be a whole number >= 1; got {steps!r}")
    missing = [m for m in PROTOCOL if not has_member(env, m)]
    if missing:
        raise TypeError(f"check_env: env must be a Palaestra environment (envs/base.py's Env; make_env makes one "
                        f"from a name); a {env.__class__.__name__} lacks {', '.join(missing)}")
    rng = np.random.default_rng(seed)
    try:
        specs = dict(env.behavior_specs)
    except Exception as e:  # the environment's own property
        raise EnvError(f"reading the environment's behavior_specs raised {type(e).__name__}: {e}") from e
    if not specs:
        raise EnvError("the environment has no behaviors")
    for name, spec in specs.items():  # what the run itself would refuse (envs/sources.py)
        problem = spec_problem(name, spec)
        if problem is not None:
            raise EnvError(f"the environment {problem}")
    env.reset()
    for t in range(steps):
        for name, spec in specs.items():
            decision, terminal = _steps_pair(f"step {t}, behavior {name!r}", env.get_steps(name))
            _check_common(f"step {t}, behavior {name!r}, decision steps", decision, spec, decision=True)
            _check_common(f"step {t}, behavior {name!r}, terminal steps", terminal, spec, decision=False)
            for b, mask in enumerate(decision.action_mask or ()):
                if len(decision) and mask.all(axis=1).any():
                    raise EnvError(f"step {t}, behavior {name!r}: an agent has every action of branch {b} masked")
            actions = spec.action_spec.random_actions(len(decision), rng)
            if decision.action_mask is not None:
                for b, mask in enumerate(decision.action_mask):  # pick an allowed action
                    scores = rng.random(mask.shape) - mask * 2.0
                    actions.discrete[:, b] = scores.argmax(axis=1)
            env.set_actions(name, actions)
        env.step()


def has_member(env: Any, name: str) -> bool:
    """Whether ``env`` has ``name``, without running it: a property of the user's that raises is
    then reported where it is read (with what it raised), not as a member it lacks."""
    try:
        inspect.getattr_static(env, name)
        return True
    except AttributeError:
        return hasattr(env, name)  # (made by a __getattr__)
