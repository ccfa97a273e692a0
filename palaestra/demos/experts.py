"""Scripted experts for Gymnasium's classic-control tasks, to record demonstrations from
(``palaestra-record --policy=palaestra.demos.experts:cartpole``). Each is a function of a
behavior's :class:`DecisionSteps` and :class:`BehaviorSpec`, acting for all deciding agents at
once, as ``palaestra-record`` and ``brain_to_imitate`` call Python policies.

- ``cartpole`` (CartPole-v1): push the cart towards the side the pole is falling to, judged by a
  linear mix of the pole's angle and angular velocity with small terms for the cart's position
  and velocity, so that the cart does not drift off the track. It holds the pole for all 500
  steps from every start state tried.
- ``pendulum`` (Pendulum-v1): swing up by pumping energy (full torque in the direction of
  motion while the pendulum's energy is below the upright's), and balance with a saturated
  PD controller once it is near the top. About -150 per episode, depending on the start.
"""

from __future__ import annotations

import numpy as np

from palaestra.envs.base import ActionTuple, BehaviorSpec, DecisionSteps

# CartPole: observation [x, x', theta, theta'], theta > 0 leaning right; action 1 pushes right
CARTPOLE_GAINS = np.array([0.05, 0.3, 1.0, 0.5], np.float32)

# Pendulum-v1's dynamics: theta'' = 3g / (2l) sin(theta) + 3 u / (m l^2), g = 10, m = l = 1;
# E = theta'^2 / 2 + 15 (cos(theta) - 1) is 0 upright at rest, and dE/dt = 3 u theta'
PENDULUM_GRAVITY = 15.0
PENDULUM_BALANCE_COS = 0.85  # within about 32 degrees of upright: balance
PENDULUM_KP, PENDULUM_KD = 10.0, 2.0


def cartpole(steps: DecisionSteps, spec: BehaviorSpec) -> ActionTuple:
    push_right = steps.obs[0] @ CARTPOLE_GAINS > 0.0
    return ActionTuple(discrete=push_right.astype(np.int32)[:, None])


def pendulum(steps: DecisionSteps, spec: BehaviorSpec) -> ActionTuple:
    cos, sin, speed = steps.obs[0].T
    angle = np.arctan2(sin, cos)  # 0 upright
    energy = 0.5 * speed**2 + PENDULUM_GRAVITY * (cos - 1.0)
    pump = np.where(energy < 0.0, np.sign(speed + 1e-3), 0.0) * 2.0  # the first push breaks the rest
    balance = -(PENDULUM_KP * angle + PENDULUM_KD * speed)
    torque = np.where(cos > PENDULUM_BALANCE_COS, balance, pump)
    return ActionTuple(continuous=(np.clip(torque, -2.0, 2.0) / 2.0).astype(np.float32)[:, None])  # [-1, 1] is ±2
