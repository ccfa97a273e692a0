"""CartPole with its velocities hidden, a Gymnasium id for memory: ``palaestra/CartPoleNoVel-v1``.

Gymnasium's ``CartPole-v1`` observes the cart's position and velocity and the pole's angle and
angular velocity; here only the position and the angle are observed (as rl-zoo's
``CartPoleNoVel-v1``), so a policy must estimate the velocities from what it remembers of earlier
steps. Dynamics, rewards (+1 per step), the 500-step limit and the reward threshold (475) are
CartPole-v1's.

Importing this module registers the id; Palaestra's ``--env`` does so before it looks an id up
(envs/sources.py), and other libraries name the module in the id, which makes Gymnasium import it:

    env = gymnasium.make("palaestra.envs.cartpole_no_velocity:palaestra/CartPoleNoVel-v1")
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

ENV_ID = "palaestra/CartPoleNoVel-v1"
OBSERVED = [0, 2]  # of CartPole's (x, x_dot, theta, theta_dot): the cart's position, the pole's angle


class CartPoleNoVelEnv(CartPoleEnv):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        full = self.observation_space
        self.observation_space = spaces.Box(full.low[OBSERVED], full.high[OBSERVED], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = super().reset(seed=seed, options=options)
        return obs[OBSERVED], info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs[OBSERVED], reward, terminated, truncated, info


def register() -> None:
    if ENV_ID not in gymnasium.registry:
        full = gymnasium.spec("CartPole-v1")
        gymnasium.register(id=ENV_ID, entry_point=f"{__name__}:CartPoleNoVelEnv",
                           max_episode_steps=full.max_episode_steps, reward_threshold=full.reward_threshold)


register()
