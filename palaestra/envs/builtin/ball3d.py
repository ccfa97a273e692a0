"""3DBall: each agent tilts a platform (two continuous actions: rate of tilt about the z and x
axes) to keep a ball on it. Twelve platforms per area, as in ML-Agents' scene.

Observations (8): the platform's rotation as quaternion z and x components, the ball's position
relative to the platform (x, y, z) and the ball's velocity (x, y, z). 3DBallHard drops the
velocity and, as ML-Agents' scene does, stacks the last 3 observations (5 x 3 = 15 values).

Reward: +0.1 per decision while the ball stays on, -1.0 and episode end when it falls.
Episodes are interrupted after 1000 decisions, so a perfect agent scores 100.

Physics: a ball rolling without slipping on a tilted plane accelerates at 5/7 g sin(angle);
each decision covers 5 physics steps of 0.02 s and the platform turns at most 2 degrees per
physics step, within +-25 degrees. Environment parameters: ``gravity`` (9.81), ``mass`` (1.0;
a heavier ball is slowed less by rolling friction) and ``scale`` (1.0; the ball's size, a larger
ball stays on longer past the rim).
"""

from __future__ import annotations

import numpy as np

from palaestra.envs.base import ActionSpec, ActionTuple
from palaestra.envs.builtin.vector_env import BuiltinVectorEnv

PHYSICS_STEPS = 5
DT = 0.02
TURN_PER_STEP = np.deg2rad(2.0)
MAX_TILT = np.deg2rad(25.0)
PLATFORM_HALF = 2.5
ROLLING = 5.0 / 7.0
FRICTION = 0.1  # deceleration per unit of velocity for a ball of mass 1


class Ball3D(BuiltinVectorEnv):
    behavior_name = "3DBall"
    observation_shape = (8,)
    action_spec = ActionSpec(continuous_size=2)
    agents_per_area = 12
    max_episode_steps = 1000
    default_parameters = {"gravity": 9.81, "mass": 1.0, "scale": 1.0}
    parameter_minimums = {"gravity": 0.0, "mass": 1e-3, "scale": 1e-3}  # no ball rolls on a negative one
    solved_reward = 100.0

    def _allocate(self) -> None:
        self.tilt = np.zeros((self.n, 2))  # angle about z (moves the ball along x), about x (along z)
        self.pos = np.zeros((self.n, 2))  # ball x, z relative to the platform centre
        self.vel = np.zeros((self.n, 2))

    def _reset_agents(self, which: np.ndarray) -> None:
        k = len(which)
        self.tilt[which] = self.rng.uniform(-np.deg2rad(10), np.deg2rad(10), size=(k, 2))
        self.pos[which] = self.rng.uniform(-1.5, 1.5, size=(k, 2))
        self.vel[which] = 0.0

    def _full_observation(self) -> np.ndarray:
        half = self.tilt / 2.0
        height = self.pos[:, 0] * np.sin(self.tilt[:, 0]) + self.pos[:, 1] * np.sin(self.tilt[:, 1])
        vheight = self.vel[:, 0] * np.sin(self.tilt[:, 0]) + self.vel[:, 1] * np.sin(self.tilt[:, 1])
        radius = 0.5 * self.parameters["scale"]
        return np.stack(
            [
                np.sin(half[:, 0]),
                np.sin(half[:, 1]),
                self.pos[:, 0],
                height + radius,
                self.pos[:, 1],
                self.vel[:, 0],
                vheight,
                self.vel[:, 1],
            ],
            axis=1,
        ).astype(np.float32)

    def _observe(self) -> np.ndarray:
        return self._full_observation()

    def _advance(self, actions: ActionTuple) -> tuple[np.ndarray, np.ndarray]:
        turn = np.clip(actions.continuous[:, :2], -1.0, 1.0) * TURN_PER_STEP
        gravity = self.parameters["gravity"]
        # a step's friction at most stops the ball (a ball lighter than 0.002 overshot, swinging
        # back and forth ever faster)
        friction = min(FRICTION / max(self.parameters["mass"], 1e-3), 1.0 / DT)
        for _ in range(PHYSICS_STEPS):
            self.tilt = np.clip(self.tilt + turn, -MAX_TILT, MAX_TILT)
            accel = -ROLLING * gravity * np.sin(self.tilt) - friction * self.vel
            self.vel += accel * DT
            self.pos += self.vel * DT
        rim = PLATFORM_HALF + 0.5 * self.parameters["scale"]
        fell = (np.abs(self.pos) > rim).any(axis=1)
        reward = np.where(fell, -1.0, 0.1).astype(np.float32)
        return reward, fell

    def heuristic(self) -> ActionTuple:
        # A PD controller: aim the tilt so that the ball accelerates back towards the centre.
        target = np.clip(0.08 * self.pos + 0.12 * self.vel, -MAX_TILT, MAX_TILT)
        cont = np.clip((target - self.tilt) / TURN_PER_STEP, -1.0, 1.0).astype(np.float32)
        return ActionTuple(continuous=cont, discrete=np.zeros((self.n, 0), np.int32))


class Ball3DHard(Ball3D):
    behavior_name = "3DBallHard"
    observation_shape = (15,)
    STACK = 3

    def _allocate(self) -> None:
        super()._allocate()
        self.stack = np.zeros((self.n, self.STACK, 5), dtype=np.float32)

    def _reset_agents(self, which: np.ndarray) -> None:
        super()._reset_agents(which)
        self.stack[which] = self._full_observation()[which, None, :5]

    def _advance(self, actions: ActionTuple) -> tuple[np.ndarray, np.ndarray]:
        result = super()._advance(actions)
        self.stack = np.roll(self.stack, -1, axis=1)
        self.stack[:, -1] = self._full_observation()[:, :5]
        return result

    def _observe(self) -> np.ndarray:
        return self.stack.reshape(self.n, -1).copy()
