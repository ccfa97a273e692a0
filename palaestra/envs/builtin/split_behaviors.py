"""Built-in environments whose agents act as several behaviors: WallJump (by the wall of each
episode) and Tennis (by team). The world is one vectorized environment over every agent, as
BuiltinVectorEnv steps it; this class shows each behavior its agents' decision and terminal steps
and joins the behaviors' actions before each step. A subclass names its ``behaviors`` and says
which one each agent acts as now (``_behavior_index``); an episode that ends counts for the
behavior its agent acted as before the step that ended it."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from palaestra.envs.base import ActionTuple, BehaviorSpec, DecisionSteps, EnvError, TerminalSteps
from palaestra.envs.builtin.vector_env import BuiltinVectorEnv


class SplitBehaviorsEnv(BuiltinVectorEnv):
    behaviors: tuple[str, ...] = ()
    one_behavior = False  # no Gymnasium vector id (envs/gym_vector.py)

    def __init__(self, seed: int = 0, num_areas: int = 1, behavior_name: str | None = None) -> None:
        if behavior_name:
            raise EnvError(f"{type(self).__name__} has {len(self.behaviors)} behaviors ({', '.join(self.behaviors)}); "
                           "they cannot be renamed")
        self._steps: dict[str, tuple[DecisionSteps, TerminalSteps]] = {}
        self._chosen: dict[str, ActionTuple] = {}
        super().__init__(seed, num_areas)
        self._empty = TerminalSteps.empty(self._spec)

    def _behavior_index(self) -> np.ndarray:
        """Per agent, the index in ``behaviors`` of the behavior it acts as now (a new array: the
        step keeps the one from before it)."""
        raise NotImplementedError

    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        return {behavior: self._spec for behavior in self.behaviors}

    def get_steps(self, behavior: str) -> tuple[DecisionSteps, TerminalSteps]:
        if behavior not in self.behaviors:
            raise EnvError(f"unknown behavior {behavior!r}; this environment has "
                           f"{' and '.join(map(repr, self.behaviors))}")
        if not self._steps:
            raise EnvError("get_steps() called before reset()")
        return self._steps[behavior]

    def set_actions(self, behavior: str, actions: ActionTuple) -> None:
        decision, _ = self.get_steps(behavior)
        self.action_spec.check(actions, len(decision), behavior)
        self._chosen[behavior] = actions

    def reset(self, parameters: Mapping[str, float] | None = None) -> None:
        self._chosen = {}  # (each behavior's agents may be others after the reset)
        super().reset(parameters)
        self._split(self._behavior_index())

    def step(self) -> None:
        if not self._steps:
            self.reset()
        actions = self.action_spec.empty_actions(self.n)
        continuous, discrete = self.action_spec.continuous_size, self.action_spec.discrete_branches
        for behavior, chosen in self._chosen.items():
            ids = self._steps[behavior][0].agent_id
            if continuous:
                actions.continuous[ids] = chosen.continuous
            if discrete:
                actions.discrete[ids] = chosen.discrete
        self._chosen = {}
        self._actions = actions
        before = self._behavior_index()  # the behavior of the episodes that end in this step
        super().step()
        self._split(before)

    def _split(self, ended_as: np.ndarray) -> None:
        assert self._decision is not None
        decision, terminal = self._decision, self._terminal
        now = self._behavior_index()
        for k, behavior in enumerate(self.behaviors):
            shown = np.flatnonzero(now == k)
            masks = decision.action_mask
            steps = DecisionSteps([o[shown] for o in decision.obs], decision.reward[shown], decision.agent_id[shown],
                                  [m[shown] for m in masks] if masks else None)
            ended = self._empty
            if len(terminal):
                mine = ended_as[terminal.agent_id] == k
                ended = TerminalSteps([o[mine] for o in terminal.obs], terminal.reward[mine], terminal.agent_id[mine],
                                      terminal.interrupted[mine])
            self._steps[behavior] = (steps, ended)

    def close(self) -> None:
        super().close()
        self._steps = {}

    def heuristic_for(self, behavior: str) -> ActionTuple:
        """The heuristic's actions for the agents of one behavior's decision steps."""
        ids = self.get_steps(behavior)[0].agent_id
        actions = self.heuristic()
        return ActionTuple(continuous=actions.continuous[ids], discrete=actions.discrete[ids])
