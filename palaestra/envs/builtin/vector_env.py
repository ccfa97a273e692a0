"""Shared machinery for the built-in environments: one behavior, a fixed set of agents that all
decide every step, numpy arrays throughout, automatic reset of finished agents.

A subclass describes the world with array functions over all agents at once
(``_allocate``, ``_reset_agents``, ``_observe``, ``_masks``, ``_advance``); this class turns them into the
DecisionSteps / TerminalSteps of the Env protocol. An environment with one observation per agent
sets ``observation_shape`` and ``_observe`` returns its array; one with several sets
``observation_shapes`` (before ``__init__`` here runs, when they depend on arguments) and
``_observe`` returns one array per shape, in that order. Images (rank 3, height x width x
channels) may be uint8 (envs/observations.py).
"""

from __future__ import annotations

import logging
from typing import Mapping

import numpy as np

from palaestra.envs.base import ActionSpec, ActionTuple, BehaviorSpec, DecisionSteps, EnvError, TerminalSteps
from palaestra.envs.single_behavior import SingleBehaviorEnv

logger = logging.getLogger("palaestra")


class BuiltinVectorEnv(SingleBehaviorEnv):
    behavior_name: str = ""
    observation_shape: tuple[int, ...] = ()
    # several observations per agent: their shapes (then ``_observe`` returns a list); empty: one
    observation_shapes: tuple[tuple[int, ...], ...] = ()
    action_spec: ActionSpec = ActionSpec()
    agents_per_area: int = 1
    max_episode_steps: int = 0  # 0 = no step limit
    # environment parameters (curricula, samplers, reset(parameters)) and their defaults, and the
    # least value each takes (a sampler or curriculum asking less gets that, with a warning)
    default_parameters: Mapping[str, float] = {}
    parameter_minimums: Mapping[str, float] = {}
    # behavior names of ML-Agents <= 0.13 (brains) → this environment's, for old curriculum folders
    legacy_behavior_names: Mapping[str, str] = {}
    # False for an environment of several behaviors (WallJump): no Gymnasium vector id for it
    one_behavior: bool = True
    # The shortest episode a perfect agent can finish, for documentation only.
    solved_reward: float = 0.0

    def __init__(self, seed: int = 0, num_areas: int = 1, behavior_name: str | None = None) -> None:
        if num_areas < 1:
            raise EnvError(f"num_areas must be at least 1, got {num_areas}")
        if behavior_name:
            self.behavior_name = behavior_name
        self.n = self.agents_per_area * num_areas
        self.rng = np.random.default_rng(seed)
        self.parameters: dict[str, float] = dict(self.default_parameters)
        self._warned: set[str] = set()  # unknown parameter names already warned about
        self._several = bool(self.observation_shapes)
        self._spec = BehaviorSpec(self.observation_shapes or (self.observation_shape,), self.action_spec)
        self.episode_steps = np.zeros(self.n, dtype=np.int64)
        self._actions: ActionTuple | None = None
        self._decision: DecisionSteps | None = None
        self._no_terminal = TerminalSteps.empty(self._spec)  # shared: consumers never modify steps
        self._terminal: TerminalSteps = self._no_terminal
        self._ids = np.arange(self.n, dtype=np.int64)
        self._allocate()

    # -- to implement ------------------------------------------------------------------------
    def _allocate(self) -> None:
        """Create the world's per-agent state arrays (``self.n`` agents), before any reset."""

    def _reset_agents(self, which: np.ndarray) -> None:
        """Start a new episode for the agents whose indices are in ``which``."""
        raise NotImplementedError

    def _observe(self) -> np.ndarray | list[np.ndarray]:
        """Observations of all agents, ``[n, *observation_shape]`` float32 (an image: or uint8), or,
        with ``observation_shapes``, a list of one such array per shape."""
        raise NotImplementedError

    def _masks(self) -> list[np.ndarray] | None:
        """Per-branch masks (True = unavailable) for all agents, or None."""
        return None

    def _advance(self, actions: ActionTuple) -> tuple[np.ndarray, np.ndarray]:
        """Apply the actions of all agents; return (reward [n], done [n])."""
        raise NotImplementedError

    # -- the Env protocol --------------------------------------------------------------------
    def reset(self, parameters: Mapping[str, float] | None = None) -> None:
        if parameters:
            unknown = sorted(set(parameters) - set(self.default_parameters) - self._warned)
            if unknown:  # a curriculum written for another scene: say so once, use the rest
                self._warned.update(unknown)
                logger.warning("%s has no environment parameter(s) %s (ignored); it knows %s", self._env_name(),
                               ", ".join(unknown), ", ".join(sorted(self.default_parameters)) or "none")
            self.parameters.update({k: self._within_limits(k, float(v)) for k, v in parameters.items()
                                    if k in self.default_parameters})
        self._actions = None  # (actions set for the episodes a reset ends are not the new ones', as Unity's)
        self._reset_agents(self._ids)
        self.episode_steps[:] = 0
        self._terminal = self._no_terminal
        self._decision = DecisionSteps(
            self._observations(), np.zeros(self.n, np.float32), self._ids, self._masks()
        )

    def _env_name(self) -> str:
        """The name --env gives this environment (3DBall, not the class Ball3D), for messages."""
        from palaestra.envs.builtin import BUILTIN_ENVS  # (that module imports this one)

        return next((name for name, cls in BUILTIN_ENVS.items() if cls is type(self)), type(self).__name__)

    def _within_limits(self, name: str, value: float) -> float:
        if not np.isfinite(value):  # (NaN passed the least-value check as "below", inf made NaN physics)
            if f"!{name}" not in self._warned:
                self._warned.add(f"!{name}")
                logger.warning("%s: environment parameter %s = %g is not a finite number (a sampler or curriculum "
                               "asked it); keeping %g", self._env_name(), name, value, self.parameters[name])
            return self.parameters[name]
        least = self.parameter_minimums.get(name, -np.inf)
        if value >= least:
            return value
        if f"<{name}" not in self._warned:  # once per parameter: a sampler may draw such values often
            self._warned.add(f"<{name}")
            logger.warning("%s: environment parameter %s = %g is below its least value %g (a sampler or curriculum "
                           "asked it); using %g", self._env_name(), name, value, least, least)
        return least

    def step(self) -> None:
        if self._decision is None:
            self.reset()
        actions = self._take_actions(self.n)
        reward, done = self._advance(actions)
        self.episode_steps += 1
        ended = done | (self.episode_steps >= self.max_episode_steps) if self.max_episode_steps else done
        obs = self._observations()
        if ended.any():
            idx = np.flatnonzero(ended)
            self._terminal = TerminalSteps(
                [o[idx] for o in obs], reward[idx].astype(np.float32), self._ids[idx], ~done[idx]
            )
            self._reset_agents(idx)
            self.episode_steps[idx] = 0
            obs = self._observations()
            reward = np.where(ended, 0.0, reward)
        else:
            self._terminal = self._no_terminal
        self._decision = DecisionSteps(obs, reward.astype(np.float32), self._ids, self._masks())

    def _observations(self) -> list[np.ndarray]:
        """``_observe`` as the list of arrays DecisionSteps holds."""
        obs = self._observe()
        return obs if self._several else [obs]

    def close(self) -> None:
        self._decision = None

    # -- helpers for tests and demonstrations -----------------------------------------------
    def heuristic(self) -> ActionTuple:
        """A scripted policy for all agents (good, not necessarily optimal)."""
        raise NotImplementedError
