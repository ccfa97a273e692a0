"""Basic: a 1-D corridor, as ML-Agents' BasicAgent (0.16) defines it. Positions 0-20; the
observation is a one-hot of the position over 20 cells (position 20 has no cell, so it is seen
as all zeros, as Unity's one-hot observation of an out-of-range value). Actions: one discrete
branch of three, 0 = stay, 1 = step left, 2 = step right. Reward: -0.01 every step (staying
too), +0.1 and episode end at the small goal (7), +1.0 and episode end at the large goal (17).
The agent starts at 10, so the best return is 1.0 - 7 x 0.01 = 0.93 (ML-Agents' benchmark).
Episodes are interrupted after 100 steps.
"""

from __future__ import annotations

import numpy as np

from palaestra.envs.base import ActionSpec, ActionTuple
from palaestra.envs.builtin.vector_env import BuiltinVectorEnv

N_CELLS = 20
MIN_POSITION, MAX_POSITION = 0, 20
START, SMALL_GOAL, LARGE_GOAL = 10, 7, 17
STAY, LEFT, RIGHT = 0, 1, 2


class Basic(BuiltinVectorEnv):
    behavior_name = "Basic"
    observation_shape = (N_CELLS,)
    action_spec = ActionSpec(discrete_branches=(3,))
    agents_per_area = 1
    max_episode_steps = 100
    solved_reward = 0.93

    def _allocate(self) -> None:
        self.position = np.full(self.n, START, dtype=np.int64)

    def _reset_agents(self, which: np.ndarray) -> None:
        self.position[which] = START

    def _observe(self) -> np.ndarray:
        obs = np.zeros((self.n, N_CELLS + 1), dtype=np.float32)
        obs[np.arange(self.n), self.position] = 1.0
        return obs[:, :N_CELLS]  # position 20 falls off the one-hot: all zeros

    def _advance(self, actions: ActionTuple) -> tuple[np.ndarray, np.ndarray]:
        choice = actions.discrete[:, 0]
        move = (choice == RIGHT).astype(np.int64) - (choice == LEFT)
        self.position = np.clip(self.position + move, MIN_POSITION, MAX_POSITION)
        reward = np.full(self.n, -0.01, dtype=np.float32)
        small = self.position == SMALL_GOAL
        large = self.position == LARGE_GOAL
        reward += 0.1 * small + 1.0 * large
        return reward, small | large

    def heuristic(self) -> ActionTuple:
        return ActionTuple(
            continuous=np.zeros((self.n, 0), np.float32),
            discrete=np.full((self.n, 1), RIGHT, dtype=np.int32),
        )
