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

As in ML-Agents, the observations can be several vectors and images: ``num_vector`` vectors of
one value (default 1) and ``num_visual`` images of ``vis_obs_size`` (height, width, channels;
default 20 x 20 x 3), vectors first; every element shows the goal, an image as uint8 (goal -1 ->
0, +1 -> 255). ML-Agents' visual tests use images only (``num_vector=0``) at step 0.2; its
"visual advanced" ones 36 x 36 x 3 images at step 0.5.

``Memory1D`` is ML-Agents' memory test: the goal shows only in the first ``SHOW_STEPS``
observations of an episode, then every observation is 0 (an image's elements 128, its middle),
and a step moves 0.2, so reaching an end takes at least 5 steps: the last ones must be taken from
memory. Best return 1.07 (5 steps).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from palaestra.envs.base import ActionSpec, ActionTuple, DecisionSteps, EnvError, TerminalSteps
from palaestra.envs.builtin.vector_env import BuiltinVectorEnv

if TYPE_CHECKING:
    from palaestra.envs.combined import CombinedEnv

TIME_PENALTY = 0.01
MIN_STEPS = 11
SUCCESS_REWARD = 1.0 + MIN_STEPS * TIME_PENALTY
VIS_OBS_SIZE = (20, 20, 3)
SHOW_STEPS = 3  # Memory1D: observations of an episode that show the goal


MAX_IMAGE_SIDE, MAX_CHANNELS = 512, 4  # the largest images the test environments render


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def observation_shapes(num_vector: int, num_visual: int, vis_obs_size: object) -> tuple[tuple[int, ...], ...]:
    """The shapes of ``num_vector`` one-value vectors and ``num_visual`` images, checked."""
    for key, value in (("num_vector", num_vector), ("num_visual", num_visual)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise EnvError(f"{key} must be an integer >= 0, got {value!r}")
    if num_vector + num_visual < 1:
        raise EnvError(f"num_vector + num_visual must be at least 1 (an observation), got {num_vector} + {num_visual}")
    size = tuple(vis_obs_size) if isinstance(vis_obs_size, (list, tuple)) else ()
    if len(size) != 3 or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in size):
        raise EnvError(f"vis_obs_size must be [height, width, channels], three positive integers, got {vis_obs_size!r}")
    if max(size[:2]) > MAX_IMAGE_SIDE or size[2] > MAX_CHANNELS:  # as VisualGridWorld's image_size
        raise EnvError(f"vis_obs_size must be at most [{MAX_IMAGE_SIDE}, {MAX_IMAGE_SIDE}, {MAX_CHANNELS}] (a camera's "
                       f"size), got {vis_obs_size!r}")
    return ((1,),) * num_vector + (size,) * num_visual


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
                 max_episode_steps: int | None = None, num_vector: int = 1, num_visual: int = 0,
                 vis_obs_size: tuple[int, int, int] = VIS_OBS_SIZE) -> None:
        shapes = observation_shapes(num_vector, num_visual, vis_obs_size)
        if shapes != (self.observation_shape,):  # the one-vector default keeps the single-observation path
            self.observation_shapes = shapes
        self.num_vector, self.num_visual = num_vector, num_visual
        super().__init__(seed, num_areas, behavior_name)
        # None keeps the class defaults, which the training tests depend on
        if step_size is not None:
            if not _is_number(step_size) or not 0 < step_size <= 2:
                raise EnvError(f"step_size must be a number in (0, 2], got {step_size!r}")
            self.step_size = float(step_size)
        if success_reward is not None:
            if not _is_number(success_reward) or not math.isfinite(success_reward):
                raise EnvError(f"success_reward must be a finite number, got {success_reward!r}")
            self.success_reward = float(success_reward)
        if max_episode_steps is not None:
            if isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, int) or max_episode_steps < 0:
                raise EnvError(f"max_episode_steps must be an integer >= 0 (0 = no limit), got {max_episode_steps!r}")
            self.max_episode_steps = int(max_episode_steps)
        self.position = np.zeros(self.n)
        self.goal = np.ones(self.n)

    def _reset_agents(self, which: np.ndarray) -> None:
        self.position[which] = 0.0
        self.goal[which] = np.where(self.rng.random(len(which)) < 0.5, -1.0, 1.0)

    def _shown_goal(self) -> np.ndarray:
        """What the observations show of each agent's goal."""
        return self.goal

    def _observe(self) -> np.ndarray | list[np.ndarray]:
        goal = self._shown_goal()
        if not self._several:
            return goal[:, None].astype(np.float32)
        vector = goal[:, None].astype(np.float32)
        pixel = np.rint((goal + 1.0) * 127.5).astype(np.uint8)[:, None, None, None]
        shapes = self._spec.observation_shapes
        # one array per observation (no shared buffers): -1 -> 0, 0 -> 128, +1 -> 255
        return [vector.copy() for _ in range(self.num_vector)] + [
            np.broadcast_to(pixel, (self.n, *shape)).copy() for shape in shapes[self.num_vector:]]

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
        self.position[0] = position
        self.episode_steps[0] = steps
        obs = self._stepped_observations(steps)
        if not done and not (limit and steps >= limit):
            self._terminal = self._no_terminal
            self._decision = DecisionSteps(obs, np.array([-TIME_PENALTY], np.float32), self._ids, None)
            return
        reward = self.success_reward * position * float(self.goal[0]) if done else -TIME_PENALTY
        self._terminal = TerminalSteps([o.copy() for o in obs], np.array([reward], np.float32), self._ids.copy(),
                                       np.array([not done]))
        self._reset_agents(self._ids)
        self.episode_steps[0] = 0
        self._decision = DecisionSteps(self._observations(), np.zeros(1, np.float32), self._ids, None)

    def _stepped_observations(self, steps: int) -> list[np.ndarray]:
        """The one-agent shortcut's observations ``steps`` steps into the episode: the goal's sign,
        unchanged within an episode, so the last decision's arrays (never modified by consumers)."""
        return list(self._decision.obs)

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


class Memory1D(Simple1D):
    """Simple1D whose goal shows only in the first ``SHOW_STEPS`` observations of an episode."""

    step_size = 0.2
    solved_reward = SUCCESS_REWARD - 4 * TIME_PENALTY  # 5 steps: 1.07

    def _shown_goal(self) -> np.ndarray:
        return np.where(self.episode_steps < SHOW_STEPS, self.goal, 0.0)

    def _stepped_observations(self, steps: int) -> list[np.ndarray]:
        # they change once in an episode, when the goal stops showing
        return self._observations() if steps == SHOW_STEPS else list(self._decision.obs)


class Memory1DContinuous(Memory1D, Simple1DContinuous):
    """Memory1D with Simple1DContinuous's actions."""


def make(seed: int = 0, num_areas: int = 1, continuous: bool = False, step_size: float | None = None,
         success_reward: float | None = None, max_episode_steps: int | None = None,
         behavior_name: str | None = None, num_vector: int = 1, num_visual: int = 0,
         vis_obs_size: tuple[int, int, int] = VIS_OBS_SIZE, memory: bool = False) -> Simple1D:
    """A Python factory for ``--env``: the discrete or continuous variant (``memory=true``: of
    Memory1D) with the given dynamics and observations (each left out keeps the default)."""
    if memory:
        cls: type[Simple1D] = Memory1DContinuous if continuous else Memory1D
    else:
        cls = Simple1DContinuous if continuous else Simple1D
    return cls(seed=seed, num_areas=num_areas, behavior_name=behavior_name, step_size=step_size,
               success_reward=success_reward, max_episode_steps=max_episode_steps, num_vector=num_vector,
               num_visual=num_visual, vis_obs_size=vis_obs_size)


def make_teams(seed: int = 0, num_areas: int = 1, continuous: bool = False, teams: int = 2,
               names: list[str] | None = None, step_size: float | None = None) -> "CombinedEnv":
    """ML-Agents' self-play test environment, a Python factory for ``--env``: one 1-D environment
    per team, each agent alone in its own world, behaviors ``1D?team=0``, ``1D?team=1``, ...
    (``teams`` of them), or ``names`` given whole (``[1D?team=0, 1DOpp?team=1]``: asymmetric
    self-play, two behaviors of one team each)."""
    from palaestra.envs.combined import CombinedEnv

    if names is None:
        if isinstance(teams, bool) or not isinstance(teams, int) or teams < 1:
            raise EnvError(f"teams must be an integer >= 1, got {teams!r}")
        names = [f"1D?team={t}" for t in range(teams)]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise EnvError(f"names must be a list of behavior names, got {names!r}")
    cls: type[Simple1D] = Simple1DContinuous if continuous else Simple1D
    return CombinedEnv([cls(seed=seed + 1000 * i, num_areas=num_areas, behavior_name=name, step_size=step_size)
                        for i, name in enumerate(names)])
