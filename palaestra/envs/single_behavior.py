"""What every one-behavior environment shares: its spec, the last decision and terminal steps,
and the pending actions. Subclasses fill ``_decision`` / ``_terminal`` in reset() and step()."""

from __future__ import annotations

from typing import Mapping

from palaestra.envs.base import (
    ActionTuple,
    BehaviorSpec,
    DecisionSteps,
    EnvError,
    TerminalSteps,
)


class SingleBehaviorEnv:
    behavior_name: str = ""
    _spec: BehaviorSpec
    _decision: DecisionSteps | None = None
    _terminal: TerminalSteps
    _actions: ActionTuple | None = None

    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        return {self.behavior_name: self._spec}

    def _check_behavior(self, behavior: str) -> None:
        if behavior != self.behavior_name:
            raise EnvError(f"unknown behavior {behavior!r}; this environment has {self.behavior_name!r}")

    def get_steps(self, behavior: str) -> tuple[DecisionSteps, TerminalSteps]:
        self._check_behavior(behavior)
        if self._decision is None:
            raise EnvError("get_steps() called before reset()")
        return self._decision, self._terminal

    def set_actions(self, behavior: str, actions: ActionTuple) -> None:
        self._check_behavior(behavior)
        self._actions = actions

    def _take_actions(self, n: int) -> ActionTuple:
        """The actions set since the last step (zeros if none were set), consumed."""
        actions, self._actions = self._actions, None
        if actions is None:
            return self._spec.action_spec.empty_actions(n)
        self._spec.action_spec.check(actions, n, self.behavior_name)
        return actions
