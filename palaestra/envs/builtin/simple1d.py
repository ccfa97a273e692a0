"""The 1-D environments of ML-Agents' own training tests (``Simple1D``).

An agent sits at position 0 on a line from -1 to +1; the goal is one end, -1 or +1, drawn at
random each episode, and the observation is the goal's sign. Each step moves the agent by the
action times ``step_size`` (discrete: 1 = right, 0 = left; continuous: the action, clamped).
The episode ends at either end: reward ``1.11 x position x goal``; each step before that costs
0.01. With step size 0.1 the best return is 1.01 (11 steps). ML-Agents drew the goal once per
environment; drawing it every episode makes the policy actually read its observation.
Episodes are interrupted after 200 steps so a policy that dithers still produces episodes.
"""

from __future__ import annotations

import numpy as np

from palaestra.envs.base import ActionSpec, ActionTuple
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

    def __init__(self, seed: int = 0, num_areas: int = 1, behavior_name: str | None = None) -> None:
        super().__init__(seed, num_areas, behavior_name)
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
        reward = np.where(done, SUCCESS_REWARD * self.position * self.goal, -TIME_PENALTY)
        return reward, done

    def heuristic(self) -> ActionTuple:
        return ActionTuple(
            continuous=np.zeros((self.n, 0), np.float32),
            discrete=(self.goal > 0).astype(np.int32)[:, None],
        )


class Simple1DContinuous(Simple1D):
    action_spec = ActionSpec(continuous_size=1)

    def _delta(self, actions: ActionTuple) -> np.ndarray:
        return np.minimum(np.maximum(actions.continuous[:, 0], -self.step_size), self.step_size)

    def heuristic(self) -> ActionTuple:
        return ActionTuple(
            continuous=self.goal[:, None].astype(np.float32),
            discrete=np.zeros((self.n, 0), np.int32),
        )
