"""Adapter: a user's Gymnasium vector environment (``SyncVectorEnv``, ``AsyncVectorEnv``, a natively
vectorized one from ``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")``) stepped as
one behavior whose agents are its sub-environments.

Spaces map as for single Gymnasium environments (envs/gymnasium_env.py: the converters are the
same, applied to each sub-environment's part of the batch). What differs is who resets an
ended episode: the vector environment itself, in the mode its ``metadata["autoreset_mode"]``
names (Gymnasium's default, ``NEXT_STEP``, where it says none):

- ``NEXT_STEP``: the step that ends an episode returns its last observation; the next step
  resets that sub-environment and ignores its action. Its agent ends its episode in the first
  step and asks for its next decision after the second, as a Unity agent between decisions.
- ``SAME_STEP``: the step returns the new episode's first observation, and the last one in
  ``info["final_obs"]``.
- ``DISABLED``: Palaestra resets the ended sub-environments itself, through
  ``reset(options={"reset_mask": ...})``.

A truncation is an interrupted episode (the value is bootstrapped), a termination a true end.
Environment parameters reach the sub-environments through a ``set_environment_parameters``
method of the vector environment, or of each sub-environment (``call``), and otherwise as the
``options`` of the resets Palaestra asks for (automatic resets do not carry options).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import iterate

from palaestra.envs.base import ONCE_PER_RUN, BehaviorSpec, DecisionSteps, EnvError, TerminalSteps
from palaestra.envs.gymnasium_env import (
    shown_value,
    action_converter,
    info_mask_reader,
    mask_reader,
    observation_converter,
    read_masks,
)
from palaestra.envs.single_behavior import SingleBehaviorEnv

logger = logging.getLogger("palaestra")


class GymnasiumVectorEnv(SingleBehaviorEnv):
    def __init__(self, name: str, env: gym.vector.VectorEnv, seed: int = 0, areas: int | None = None) -> None:
        """``areas``: how far apart the seeds of this source's copies are (--num-areas: a worker's
        seed is ``areas`` from the next one's); None: as many as the sub-environments."""
        self.behavior_name = self.env_id = name
        self.env = env
        self.seed = seed
        self.areas = areas
        self.who = who = f"Gymnasium vector environment {name!r}"
        try:
            self.mode = AutoresetMode(env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP))
        except ValueError:
            raise EnvError(f"{who}: its metadata names the autoreset mode {env.metadata['autoreset_mode']!r}; "
                           f"Gymnasium's are {', '.join(repr(m.value) for m in AutoresetMode)}") from None
        self.n = int(env.num_envs)
        self._observation_space = env.single_observation_space
        obs_shape, self._obs_dtype, self._obs = observation_converter(self._observation_space, who)
        action_spec, self._act = action_converter(env.single_action_space, who)
        self._masks = mask_reader(self._observation_space, action_spec, who)
        self._info_masks = info_mask_reader(self._observation_space, action_spec, who)
        self._spec = BehaviorSpec((obs_shape,), action_spec)
        # a vector Box, the converter's reshape: the whole batch at once (others row by row)
        space = self._observation_space
        self._flat = isinstance(space, spaces.Box) and len(obs_shape) == 1 and self._masks is None and \
            obs_shape[0] == int(np.prod(space.shape)) and self._obs_dtype == np.float32
        self._ids = np.arange(self.n, dtype=np.int64)
        self._no_terminal = self._terminal = TerminalSteps.empty(self._spec)  # shared: never modified
        # NEXT_STEP: the sub-environments whose episode ended in the last step; the next step resets
        # them (their actions are not read), so their agents ask for no decision until then
        self._resetting = np.zeros(self.n, bool)
        self._seeded = False
        self._options: dict[str, float] | None = None
        self._said_options = False

    # -- the batch, one sub-environment at a time through the shared converters
    def _rows(self, batch: Any) -> Any:
        """The sub-environments' observations out of a batched one (a Dict of arrays included):
        for a vector Box, the batch itself as ``[n, size]`` float32 rows."""
        if self._flat:
            try:
                rows = np.asarray(batch, dtype=np.float32)
            except (TypeError, ValueError):
                rows = None
            if rows is not None and rows.shape == (self.n, *self._observation_space.shape):
                return rows.reshape(self.n, -1)
        # (row by row: the converter names what is wrong with a row)
        try:
            rows = list(iterate(self.env.observation_space, batch))
        except Exception:  # (iterate's own error names no environment)
            rows = []
        if len(rows) != self.n:
            raise EnvError(f"{self.who} returned observations {type(batch).__name__} {getattr(batch, 'shape', '')} "
                           f"for {self.n} sub-environments; its observation space is {self.env.observation_space}")
        return rows

    def _converted(self, rows: Any, which: np.ndarray) -> np.ndarray:
        if isinstance(rows, np.ndarray):  # (converted already)
            return rows[which]
        obs = np.zeros((len(which), *self._spec.observation_shapes[0]), dtype=self._obs_dtype)
        for k, i in enumerate(which):
            obs[k] = self._obs(rows[i])
        return obs

    def _decisions(self, rows: Any, which: np.ndarray, reward: np.ndarray, info_masks: list | None) -> DecisionSteps:
        """``info_masks``: each sub-environment's ``info["action_mask"]`` (:meth:`_info_mask_rows`),
        read for the deciding ones only (a finished game's allows no action)."""
        obs = self._converted(rows, which)
        masks = None
        if self._masks is not None:
            masks = read_masks(self._masks, [rows[i]["action_mask"] for i in which], self._spec.action_spec) \
                if len(which) \
                else [np.zeros((0, b), bool) for b in self._spec.action_spec.discrete_branches]
        elif info_masks is not None:
            masks = read_masks(self._info_masks, [info_masks[i] for i in which], self._spec.action_spec)
        return DecisionSteps([obs], reward[which].astype(np.float32), self._ids[which], masks)

    def _info_mask_rows(self, info: Any) -> list | None:
        """Each sub-environment's row of the batched ``info["action_mask"]`` (rows flagged by
        ``info["_action_mask"]``, Gymnasium's layout; every row where there is no flag), None for
        a row without one; None where the infos carry no masks, or none with a row per
        sub-environment (said once: it is no mask of this environment's actions)."""
        if self._info_masks is None or not isinstance(info, dict) or info.get("action_mask") is None:
            return None
        masks, present = info["action_mask"], info.get("_action_mask")
        try:
            if len(masks) != self.n:
                raise TypeError
            return [masks[i] if present is None or present[i] else None for i in range(self.n)]
        except (IndexError, TypeError, KeyError, ValueError):
            logger.warning("%s gives an info['action_mask'] (%s) without a row per sub-environment: not read as the "
                           "legal actions", self.who, shown_value(masks), extra={ONCE_PER_RUN: True})
            return None

    # -- the Env protocol
    def reset(self, parameters: Mapping[str, float] | None = None) -> None:
        if parameters:
            self._set_parameters({str(k): float(v) for k, v in parameters.items()})
        obs, info = self._reset(seed=None if self._seeded else self._first_seeds(), options=self._reset_options())
        self._seeded = True
        self._resetting[:] = False
        self._terminal = self._no_terminal
        self._decision = self._decisions(self._rows(obs), self._ids, np.zeros(self.n), self._info_mask_rows(info))

    def _first_seeds(self) -> int | list[int]:
        """The sub-environments' seeds: ``seed + j``, Gymnasium's own rule, where they fit within
        the ``areas`` between this worker's seed and the next one's; else ``seed × n + j`` (a factory
        whose sub-environments outnumber --num-areas: ranges of n seeds that no two workers share).
        Only Sync and AsyncVectorEnv take a list; a natively vectorized one (``vector_entry_point``)
        takes the range's first seed, and numbers its sub-environments' from there as they do."""
        if self.areas is None or self.n <= self.areas:
            return self.seed
        if not isinstance(self.env.unwrapped, (gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv)):
            return self.seed * self.n
        return [self.seed * self.n + j for j in range(self.n)]

    def step(self) -> None:
        if self._decision is None:
            self.reset()
        deciding = self._decision.agent_id
        chosen = self._take_actions(len(deciding))
        everyone = self._spec.action_spec.empty_actions(self.n)  # (a resetting one's action is not read)
        everyone.continuous[deciding] = chosen.continuous
        everyone.discrete[deciding] = chosen.discrete
        obs, reward, terminated, truncated, info = self._step(self._act(everyone, slice(None)))
        rows = self._rows(obs)
        info_masks = self._info_mask_rows(info)  # (a sub-environment reset in this step: its new episode's)
        ended = (terminated | truncated) & ~self._resetting  # (a NEXT_STEP reset step ends nothing)
        which = np.flatnonzero(ended)
        if self.mode is AutoresetMode.SAME_STEP:
            final = info.get("final_obs") if isinstance(info, dict) else None
            if which.size and final is None:
                raise EnvError(f"{self.who}: its autoreset mode is same_step, but a step that ended episodes "
                               "gave no info['final_obs']")
            last = [self._obs(final[i]) for i in which]
        else:
            last = self._converted(rows, which)
        if which.size:
            term_obs = np.stack(last).astype(self._obs_dtype, copy=False)
            self._terminal = TerminalSteps([term_obs], reward[which].astype(np.float32), self._ids[which],
                                           (truncated & ~terminated)[which])
        else:
            self._terminal = self._no_terminal
        if self.mode is AutoresetMode.NEXT_STEP:
            just_reset, self._resetting = self._resetting, ended
            # those just reset begin their episodes (reward 0); those ended wait for their reset
            self._decision = self._decisions(rows, np.flatnonzero(~ended), np.where(just_reset, 0.0, reward),
                                             info_masks)
            return
        if self.mode is AutoresetMode.DISABLED and which.size:
            options = self._reset_options() or {}
            reset_obs, reset_info = self._reset(seed=None, options={**options, "reset_mask": ended})
            reset_rows = self._rows(reset_obs)
            if isinstance(rows, np.ndarray) and isinstance(reset_rows, np.ndarray):
                rows = np.where(ended[:, None], reset_rows, rows)
            else:
                rows = [reset_rows[i] if ended[i] else row for i, row in enumerate(rows)]
            reset_masks = self._info_mask_rows(reset_info)
            if info_masks is not None or reset_masks is not None:  # the reset ones' from the reset
                stepped, started = info_masks or [None] * self.n, reset_masks or [None] * self.n
                info_masks = [started[i] if ended[i] else stepped[i] for i in range(self.n)]
        self._decision = self._decisions(rows, self._ids, np.where(ended, 0.0, reward), info_masks)

    def close(self) -> None:
        self._decision = None
        self.env.close()

    # -- the vector environment's own calls, their failures named
    def _reset(self, seed: int | None, options: dict[str, Any] | None) -> Any:
        try:
            result = self.env.reset(seed=seed, options=options)
        except Exception as e:  # the environment's code: say which environment, without our frames
            raise EnvError(f"{self.who} raised {type(e).__name__} in reset: {str(e).strip() or '(no message)'}") from e
        if not isinstance(result, tuple) or len(result) != 2:
            raise EnvError(f"{self.who}: reset returned {type(result).__name__}, not Gymnasium's (observations, infos)")
        return result[0], result[1]

    def _step(self, batch: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, Any]:
        try:
            result = self.env.step(batch)
        except Exception as e:
            raise EnvError(f"{self.who} raised {type(e).__name__} in step: {str(e).strip() or '(no message)'}") from e
        if not isinstance(result, tuple) or len(result) != 5:
            raise EnvError(f"{self.who}: step returned {type(result).__name__}, not Gymnasium's five values "
                           "(observations, rewards, terminations, truncations, infos)")
        obs, reward, terminated, truncated, info = result
        arrays = []
        for what, value, dtype in (("rewards", reward, np.float64), ("terminations", terminated, bool),
                                   ("truncations", truncated, bool)):
            try:
                array = np.asarray(value, dtype=dtype)
            except (TypeError, ValueError):
                array = None
            if array is None or array.shape != (self.n,):
                raise EnvError(f"{self.who}: step returned {what} {value!r}; expected {self.n} of them, one per "
                               "sub-environment")
            arrays.append(array)
        return obs, arrays[0], arrays[1], arrays[2], info

    # -- environment parameters
    def _set_parameters(self, values: dict[str, float]) -> None:
        own = getattr(self.env, "set_environment_parameters", None)
        if callable(own):
            own(dict(values))
            self._options = None
            return
        try:
            # asked first: a call that fails in an AsyncVectorEnv's worker shuts every worker down
            if all(self.env.call("has_wrapper_attr", "set_environment_parameters")):
                self.env.call("set_environment_parameters", dict(values))
                self._options = None
                return
        except (AttributeError, NotImplementedError):
            pass  # (no sub-environment has it)
        except Exception as e:
            raise EnvError(f"{self.who} raised {type(e).__name__} in set_environment_parameters: {e}") from e
        self._options = values
        if not self._said_options:
            self._said_options = True
            logger.warning("%s has no set_environment_parameters: the environment parameters (%s) are passed to "
                           "the resets Palaestra asks for (reset(options=...)), not to its automatic resets "
                           "(docs/curricula.md)", self.who, ", ".join(values), extra={ONCE_PER_RUN: True})

    def _reset_options(self) -> dict[str, float] | None:
        return dict(self._options) if self._options is not None else None

