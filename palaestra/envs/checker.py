"""``check_env``: drive an environment with random actions and verify it keeps the protocol
(shapes, dtypes, ids, masks, finite values). Use it on a new environment before training."""

from __future__ import annotations

import numpy as np

from palaestra.envs.base import (
    BehaviorSpec,
    DecisionSteps,
    Env,
    EnvError,
    TerminalSteps,
    spec_problem,
)


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
        raise EnvError(f"behavior {behavior!r}: the environment sent a NaN or infinite reward; {NON_FINITE_HARM}")
    for i, o in enumerate(observations):
        if o.dtype.kind == "f" and not np.isfinite(o).all():
            raise EnvError(f"behavior {behavior!r}: the environment sent NaN or infinite values in an observation; "
                           f"{NON_FINITE_HARM}")


def refuse_non_finite(behavior: str, decision: DecisionSteps, terminal: TerminalSteps) -> None:
    """An EnvError naming the behavior and what was not finite, if anything was."""
    for kind, steps in (("terminal", terminal), ("decision", decision)):
        problem = non_finite_problem(steps)
        if problem is not None:
            raise EnvError(f"behavior {behavior!r}: the environment sent {problem} ({kind} steps); {NON_FINITE_HARM}")


def _check_obs(where: str, obs: list[np.ndarray], n: int, spec: BehaviorSpec) -> None:
    if len(obs) != len(spec.observation_shapes):
        raise EnvError(f"{where}: {len(obs)} observation arrays, the spec has {len(spec.observation_shapes)}")
    for i, (o, shape) in enumerate(zip(obs, spec.observation_shapes)):
        if o.shape != (n, *shape):
            raise EnvError(f"{where}: observation {i} has shape {o.shape}, expected {(n, *shape)}")
        image = len(shape) == 3  # images may come as uint8 (envs/observations.py)
        if not (np.issubdtype(o.dtype, np.floating) or image and o.dtype == np.uint8):
            raise EnvError(f"{where}: observation {i} has dtype {o.dtype}, expected float32"
                           f"{' or uint8 (an image)' if image else ''}")
        if o.dtype != np.uint8 and not np.isfinite(o).all():
            raise EnvError(f"{where}: observation {i} contains NaN or infinity")


def _check_common(where: str, steps: DecisionSteps | TerminalSteps, spec: BehaviorSpec) -> None:
    n = len(steps)
    if steps.reward.shape != (n,) or not np.isfinite(steps.reward).all():
        raise EnvError(f"{where}: reward must be a finite array of shape ({n},), got {steps.reward.shape}")
    ids = np.asarray(steps.agent_id)
    if ids.shape != (n,) or n and not np.issubdtype(ids.dtype, np.integer):
        raise EnvError(f"{where}: agent ids must be integers of shape ({n},), got {ids.dtype} {ids.shape}")
    if len(np.unique(ids)) != n:
        raise EnvError(f"{where}: agent ids repeat within one step: {steps.agent_id}")
    _check_obs(where, steps.obs, n, spec)


def check_env(env: Env, steps: int = 200, seed: int = 0) -> None:
    """Raise EnvError describing the first protocol violation found in ``steps`` random steps."""
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"check_env: steps must be a whole number >= 1; got {steps!r}")
    missing = [m for m in ("behavior_specs", "reset", "get_steps", "set_actions", "step") if not hasattr(env, m)]
    if missing:
        raise TypeError(f"check_env: env must be a Palaestra environment (envs/base.py's Env; make_env makes one "
                        f"from a name); a {type(env).__name__} lacks {', '.join(missing)}")
    rng = np.random.default_rng(seed)
    specs = dict(env.behavior_specs)
    if not specs:
        raise EnvError("the environment has no behaviors")
    for name, spec in specs.items():  # what the run itself would refuse (envs/sources.py)
        problem = spec_problem(name, spec)
        if problem is not None:
            raise EnvError(f"the environment {problem}")
    env.reset()
    for t in range(steps):
        for name, spec in specs.items():
            decision, terminal = env.get_steps(name)
            _check_common(f"step {t}, behavior {name!r}, decision steps", decision, spec)
            _check_common(f"step {t}, behavior {name!r}, terminal steps", terminal, spec)
            if terminal.interrupted.shape != (len(terminal),) or terminal.interrupted.dtype != bool:
                raise EnvError(f"step {t}, behavior {name!r}: terminal 'interrupted' must be bool ({len(terminal)},)")
            branches = spec.action_spec.discrete_branches
            if decision.action_mask is not None:
                if len(decision.action_mask) != len(branches):
                    raise EnvError(f"step {t}, behavior {name!r}: {len(decision.action_mask)} mask arrays "
                                   f"for {len(branches)} branches")
                for b, (mask, size) in enumerate(zip(decision.action_mask, branches)):
                    if np.asarray(mask).dtype != bool:  # (an int mask's ~ would read -1 and -2 as allowed)
                        raise EnvError(f"step {t}, behavior {name!r}: mask of branch {b} must be bool (True: the "
                                       f"action is unavailable), got {np.asarray(mask).dtype}")
                    if mask.shape != (len(decision), size):
                        raise EnvError(f"step {t}, behavior {name!r}: mask of branch {b} has shape {mask.shape}, "
                                       f"expected {(len(decision), size)}")
                    if len(decision) and mask.all(axis=1).any():
                        raise EnvError(f"step {t}, behavior {name!r}: an agent has every action of branch {b} masked")
            actions = spec.action_spec.random_actions(len(decision), rng)
            if decision.action_mask is not None:
                for b, mask in enumerate(decision.action_mask):  # pick an allowed action
                    scores = rng.random(mask.shape) - mask * 2.0
                    actions.discrete[:, b] = scores.argmax(axis=1)
            env.set_actions(name, actions)
        env.step()
