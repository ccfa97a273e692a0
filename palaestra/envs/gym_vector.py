"""The built-in environments as Gymnasium vector environments, for other libraries.

Importing this module registers ``palaestra/<Name>-v0`` for every built-in environment (for
example ``palaestra/3DBall-v0``) with a vector entry point: each agent of the built-in
environment is one sub-environment, so ``num_envs`` must be a multiple of the environment's
agents per area (3DBall: 12). Gymnasium imports the module itself when the id carries it:

    envs = gymnasium.make_vec("palaestra.envs.gym_vector:palaestra/3DBall-v0", num_envs=24)

Finished episodes reset in the same step (Gymnasium's ``SAME_STEP`` autoreset mode): the step
returns the new episode's first observation, and ``info["final_obs"]`` (with the mask
``info["_final_obs"]``) holds the observation the episode ended on. A step limit is a
truncation, reaching the goal or failing a termination. For environments with action masks
(GridWorld), ``info["action_mask"]`` gives the allowed actions of the next step.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from palaestra.envs.base import ActionTuple, EnvError
from palaestra.envs.builtin import BUILTIN_ENVS
from palaestra.envs.builtin.vector_env import BuiltinVectorEnv


def gym_id(name: str) -> str:
    return f"palaestra/{name}-v0"


class BuiltinGymVectorEnv(VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, name: str, num_envs: int | None = None, seed: int = 0, **kwargs: Any) -> None:
        if name not in BUILTIN_ENVS:
            raise EnvError(f"unknown built-in environment {name!r}; choose from {', '.join(BUILTIN_ENVS)}")
        cls = BUILTIN_ENVS[name]
        per_area = cls.agents_per_area
        num_envs = per_area if num_envs is None else num_envs
        if num_envs < 1 or num_envs % per_area:
            raise EnvError(f"{gym_id(name)}: num_envs must be a positive multiple of {per_area} "
                           f"({name} has {per_area} agent(s) per area), got {num_envs}")
        self.name, self._cls, self._areas = name, cls, num_envs // per_area
        self._env: BuiltinVectorEnv = cls(seed=seed, num_areas=self._areas)
        self.num_envs = num_envs
        spec = self._env.behavior_specs[self._env.behavior_name]
        shape = spec.observation_shapes[0]
        self.single_observation_space = spaces.Box(-np.inf, np.inf, shape, np.float32)
        action = spec.action_spec
        if action.is_continuous and action.is_discrete:
            raise EnvError(f"{gym_id(name)}: hybrid actions have no Gymnasium space")
        if action.is_continuous:
            self.single_action_space = spaces.Box(-1.0, 1.0, (action.continuous_size,), np.float32)
        elif len(action.discrete_branches) == 1:
            self.single_action_space = spaces.Discrete(action.discrete_branches[0])
        else:
            self.single_action_space = spaces.MultiDiscrete(list(action.discrete_branches))
        self.observation_space = gymnasium.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gymnasium.vector.utils.batch_space(self.single_action_space, num_envs)
        self._action_spec = action
        self._behavior = self._env.behavior_name

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """``options={"parameters": {...}}`` sets environment parameters (3DBall: mass, gravity, scale)."""
        if seed is not None:
            self._env = self._cls(seed=seed, num_areas=self._areas)
        self._env.reset((options or {}).get("parameters"))
        decision, _ = self._env.get_steps(self._behavior)
        return decision.obs[0].copy(), self._info(decision)

    def step(self, actions: Any):
        actions = np.asarray(actions)
        if self._action_spec.is_continuous:
            tuple_ = ActionTuple(continuous=actions.reshape(self.num_envs, -1).astype(np.float32))
        else:
            tuple_ = ActionTuple(discrete=actions.reshape(self.num_envs, -1).astype(np.int32))
        self._env.set_actions(self._behavior, tuple_)
        self._env.step()
        decision, terminal = self._env.get_steps(self._behavior)
        reward = decision.reward.astype(np.float64)
        terminated = np.zeros(self.num_envs, bool)
        truncated = np.zeros(self.num_envs, bool)
        info = self._info(decision)
        if len(terminal):
            ids = terminal.agent_id
            reward[ids] += terminal.reward
            terminated[ids] = ~terminal.interrupted
            truncated[ids] = terminal.interrupted
            final = np.empty(self.num_envs, dtype=object)
            final[ids] = list(terminal.obs[0])
            info["final_obs"] = final
            info["_final_obs"] = terminated | truncated
        return decision.obs[0].copy(), reward, terminated, truncated, info

    @staticmethod
    def _info(decision: Any) -> dict[str, Any]:
        if decision.action_mask is None:
            return {}
        return {"action_mask": ~np.concatenate(decision.action_mask, axis=1)}

    def close_extras(self, **kwargs: Any) -> None:
        self._env.close()


def register_builtin_envs() -> None:
    for name, cls in BUILTIN_ENVS.items():
        if cls.one_behavior and gym_id(name) not in gymnasium.registry:
            gymnasium.register(id=gym_id(name), vector_entry_point=BuiltinGymVectorEnv, kwargs={"name": name})


register_builtin_envs()
