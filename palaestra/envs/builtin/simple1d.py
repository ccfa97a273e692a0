"""The 1-D environments of ML-Agents' own training tests (``Simple1D``).

An agent sits at position 0 on a line from -1 to +1; the goal is one end, -1 or +1, drawn at
random each episode, and the observation is the goal's sign. Each step moves the agent by the
action times ``step_size`` (discrete: 1 = right, 0 = left; continuous: the action, clamped).
The episode ends at either end: reward ``1.11 x position x goal``; each step before that costs
0.01. With step size 0.1 the best return is 1.01 (11 steps). ML-Agents drew the goal once per
environment in 0.15; drawing it every episode (as ML-Agents 1.x does) makes the policy actually
read its observation.
Episodes are interrupted after 200 steps so a policy that dithers still produces episodes.

``step_size``, ``success_reward`` and ``max_episode_steps`` can be set per instance (``make``
below is a factory for ``--env=palaestra.envs.builtin.simple1d:make --env-args ...``). ML-Agents
1.x's version of this environment moves 0.2 per step, pays 1.06 x position x goal at the end
(its success reward is derived from 0.2: 1 + 6 x 0.01) and has no step limit:
``make(step_size=0.2, success_reward=1.06, max_episode_steps=0)``; bench/mlagents_1d.py uses it.
"""

from __future__ import annotations

import numpy as np

from palaestra.envs.base import ActionSpec, ActionTuple, DecisionSteps, EnvError, TerminalSteps
from palaestra.envs.builtin.vector_env import BuiltinVectorEnv

TIME_PENALTY = 0.01
MIN_STEPS = 11
SUCCESS_REWARD = 1.0 + MIN_STEPS * TIME_PENALTY


class Simple1D(BuiltinVectorEnv):
    behavior_name = "1D"
    observation_shape = (1,)
    action_spec = ActionSpec(discrete_branches=(2,))
    agents_per_area = 1
    max_episode_steps = 200
    step_size = 0.1
    solved_reward = 1.01
    success_reward = SUCCESS_REWARD

    def __init__(self, seed: int = 0, num_areas: int = 1, behavior_name: str | None = None,
                 step_size: float | None = None, success_reward: float | None = None,
                 max_episode_steps: int | None = None) -> None:
        super().__init__(seed, num_areas, behavior_name)
        # None keeps the class defaults, which the training tests depend on
        if step_size is not None:
            if not 0 < step_size <= 2:
                raise EnvError(f"step_size must be in (0, 2], got {step_size}")
            self.step_size = float(step_size)
        if success_reward is not None:
            self.success_reward = float(success_reward)
        if max_episode_steps is not None:
            if max_episode_steps < 0:
                raise EnvError(f"max_episode_steps must be >= 0 (0 = no limit), got {max_episode_steps}")
            self.max_episode_steps = int(max_episode_steps)
        self.position = np.zeros(self.n)
        self.goal = np.ones(self.n)

    def _reset_agents(self, which: np.ndarray) -> None:
        self.position[which] = 0.0
        self.goal[which] = np.where(self.rng.random(len(which)) < 0.5, -1.0, 1.0)

    def _observe(self) -> np.ndarray:
        return self.goal[:, None].astype(np.float32)

    def _delta(self, actions: ActionTuple) -> np.ndarray:
        return np.where(actions.discrete[:, 0] == 1, 1.0, -1.0) * self.step_size

    def _advance(self, actions: ActionTuple) -> tuple[np.ndarray, np.ndarray]:
        # np.minimum/np.maximum rather than np.clip: a few times cheaper on arrays this small
        self.position = np.minimum(np.maximum(self.position + self._delta(actions), -1.0), 1.0)
        done = np.abs(self.position) >= 1.0
        reward = np.where(done, self.success_reward * self.position * self.goal, -TIME_PENALTY)
        return reward, done

    def _move(self, actions: ActionTuple) -> float:
        """One agent's ``_delta`` as a float."""
        return self.step_size if actions.discrete[0, 0] == 1 else -self.step_size

    def step(self) -> None:
        # One agent, the 1-D tests' case: plain floats instead of ~15 numpy calls on one-element
        # arrays (about 1 us each, most of the step). The same operations in the same order, so
        # the same results as BuiltinVectorEnv.step (tests/test_envs.py compares them).
        if self.n != 1 or self._decision is None or self._masks() is not None:
            return super().step()
        actions = self._take_actions(1)
        position = min(max(float(self.position[0]) + self._move(actions), -1.0), 1.0)
        done = abs(position) >= 1.0
        steps = int(self.episode_steps[0]) + 1
        limit = self.max_episode_steps
        obs = self._decision.obs[0]  # the goal's sign, unchanged within an episode
        self.position[0] = position
        if not done and not (limit and steps >= limit):
            self.episode_steps[0] = steps
            self._terminal = self._no_terminal
            self._decision = DecisionSteps([obs], np.array([-TIME_PENALTY], np.float32), self._ids, None)
            return
        reward = self.success_reward * position * float(self.goal[0]) if done else -TIME_PENALTY
        self._terminal = TerminalSteps([obs.copy()], np.array([reward], np.float32), self._ids.copy(),
                                       np.array([not done]))
        self._reset_agents(self._ids)
        self.episode_steps[0] = 0
        self._decision = DecisionSteps([self._observe()], np.zeros(1, np.float32), self._ids, None)

    def heuristic(self) -> ActionTuple:
        return ActionTuple(
            continuous=np.zeros((self.n, 0), np.float32),
            discrete=(self.goal > 0).astype(np.int32)[:, None],
        )


class Simple1DContinuous(Simple1D):
    action_spec = ActionSpec(continuous_size=1)

    def _delta(self, actions: ActionTuple) -> np.ndarray:
        return np.minimum(np.maximum(actions.continuous[:, 0], -self.step_size), self.step_size)

    def _move(self, actions: ActionTuple) -> float:
        # _delta clamps in float32 (the action's type); rounding the bound to float32 first gives
        # the same value, as rounding is monotonic
        bound = float(np.float32(self.step_size))
        return min(max(float(actions.continuous[0, 0]), -bound), bound)

    def heuristic(self) -> ActionTuple:
        return ActionTuple(
            continuous=self.goal[:, None].astype(np.float32),
            discrete=np.zeros((self.n, 0), np.int32),
        )


def make(seed: int = 0, num_areas: int = 1, continuous: bool = False, step_size: float | None = None,
         success_reward: float | None = None, max_episode_steps: int | None = None,
         behavior_name: str | None = None) -> Simple1D:
    """A Python factory for ``--env``: the discrete or continuous variant with the given dynamics
    (each left out keeps the built-in default)."""
    cls = Simple1DContinuous if continuous else Simple1D
    return cls(seed=seed, num_areas=num_areas, behavior_name=behavior_name, step_size=step_size,
               success_reward=success_reward, max_episode_steps=max_episode_steps)
