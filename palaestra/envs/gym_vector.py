"""The built-in environments as Gymnasium vector environments, for other libraries.

Importing this module registers ``palaestra/<Name>-v0`` for every built-in environment (for
example ``palaestra/3DBall-v0``) with a vector entry point: each agent of the built-in
environment is one sub-environment, so ``num_envs`` must be a multiple of the environment's
agents per area (3DBall: 12). Gymnasium imports the module itself when the id carries it:

    envs = gymnasium.make_vec("palaestra.envs.gym_vector:palaestra/3DBall-v0", num_envs=24)

Finished episodes reset in the same step (Gymnasium's ``SAME_STEP`` autoreset mode): the step
returns the new episode's first observation, and ``info["final_obs"]`` (with the mask
``info["_final_obs"]``) holds the observation the episode ended on (``final_info``, as Gymnasium
lays it out, is empty); another ``autoreset_mode`` is refused. A step limit is a
truncation, reaching the goal or failing a termination. For environments with action masks
(GridWorld), ``info["action_mask"]`` gives the allowed actions of the next step. An image
observation (VisualGridWorld) is a uint8 Box (height, width, channels), channel-last as SB3's
``CnnPolicy`` takes it. Keyword arguments of ``make_vec`` beyond ``num_envs`` and ``seed`` go to
the environment's constructor (``image_size=36``), as ``--env-args`` do on the command line.
Without a seed (neither here nor at the first ``reset``) the environment draws one from the
system's entropy, as Gymnasium's own do.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from palaestra.envs.base import ActionTuple, EnvError
from palaestra.envs.builtin import BUILTIN_ENVS, make_builtin
from palaestra.envs.builtin.vector_env import BuiltinVectorEnv
from palaestra.envs.observations import as_stored, is_image


def gym_id(name: str) -> str:
    return f"palaestra/{name}-v0"


class BuiltinGymVectorEnv(VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, name: str, num_envs: int | None = None, seed: int | None = None, **kwargs: Any) -> None:
        if name not in BUILTIN_ENVS:
            raise EnvError(f"unknown built-in environment {name!r}; choose from {', '.join(BUILTIN_ENVS)}")
        mode = kwargs.pop("autoreset_mode", AutoresetMode.SAME_STEP)
        if AutoresetMode(mode) is not AutoresetMode.SAME_STEP:
            raise EnvError(f"{gym_id(name)}: autoreset_mode={AutoresetMode(mode).name} is not supported; its "
                           "episodes reset in the step that ends them (AutoresetMode.SAME_STEP, info['final_obs'])")
        cls = BUILTIN_ENVS[name]
        per_area = cls.agents_per_area
        num_envs = per_area if num_envs is None else num_envs
        if num_envs < 1 or num_envs % per_area:
            raise EnvError(f"{gym_id(name)}: num_envs must be a positive multiple of {per_area} "
                           f"({name} has {per_area} agent(s) per area), got {num_envs}")
        self.name, self._areas, self._kwargs = name, num_envs // per_area, kwargs
        if seed is None:  # as Gymnasium's environments: a first reset without a seed draws one from the system
            seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
        self._env: BuiltinVectorEnv = make_builtin(name, seed=seed, num_areas=self._areas, **kwargs)
        self.num_envs = num_envs
        spec = self._env.behavior_specs[self._env.behavior_name]
        if len(spec.observation_shapes) != 1:
            raise EnvError(f"{gym_id(name)}: {len(spec.observation_shapes)} observations per agent "
                           f"{list(spec.observation_shapes)} have no single Gymnasium Box")
        shape = self._shape = spec.observation_shapes[0]
        if is_image(shape):  # uint8 pixels, channel-last: what SB3's CnnPolicy expects of an image
            self.single_observation_space = spaces.Box(0, 255, shape, np.uint8)
        else:
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
        if seed is not None:  # (a new environment, with the parameters in force: they hold until new ones come)
            in_force = dict(getattr(self._env, "parameters", {}))
            self._env = make_builtin(self.name, seed=seed, num_areas=self._areas, **self._kwargs)
            getattr(self._env, "parameters", {}).update(in_force)
        self._env.reset((options or {}).get("parameters"))
        decision, _ = self._env.get_steps(self._behavior)
        return self._obs(decision.obs[0]), self._info(decision)

    def step(self, actions: Any):
        actions = np.asarray(actions)
        shape = self.action_space.shape
        # the batched action space's shape ((num_envs, 1) too for one discrete branch): another
        # shape of the same size would reach the wrong sub-environments
        if actions.shape != shape and not (len(shape) == 1 and actions.shape == (*shape, 1)):
            raise EnvError(f"{gym_id(self.name)}: step takes actions of shape {shape} ({self.action_space}), got "
                           f"{actions.shape}")
        if self._action_spec.is_continuous:
            tuple_ = ActionTuple(continuous=actions.reshape(self.num_envs, -1).astype(np.float32))
        else:
            if not np.issubdtype(actions.dtype, np.integer) and not np.array_equal(actions, np.rint(actions)):
                raise EnvError(f"{gym_id(self.name)}: discrete actions must be whole numbers, got {actions.dtype} "
                               "values with fractions")
            tuple_ = ActionTuple(discrete=actions.reshape(self.num_envs, -1).astype(np.int32))
        problem = self._action_spec.value_problem(tuple_)  # (a NaN, or a discrete action outside its branch)
        if problem is not None:
            raise EnvError(f"{gym_id(self.name)}: {problem}")
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
            final[ids] = list(self._obs(terminal.obs[0]))
            info["final_obs"] = final
            info["_final_obs"] = terminated | truncated
            # as Gymnasium's own vector environments lay out the ended episodes' (here empty) infos
            info["final_info"] = {}
            info["_final_info"] = terminated | truncated
        return self._obs(decision.obs[0]), reward, terminated, truncated, info

    def _obs(self, obs: np.ndarray) -> np.ndarray:
        """A copy in the observation space's dtype (images: uint8)."""
        return np.array(as_stored(obs, self._shape), copy=True)

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
