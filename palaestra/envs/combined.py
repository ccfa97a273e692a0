"""Several environments stepped as one: each keeps its own behaviors, and the run sees all of
them. This is how ML-Agents' own self-play tests build two teams (``1D?team=0`` and
``1D?team=1``, or ``1D?team=0`` against ``1DOpp?team=1``): one 1-D environment per behavior,
each agent alone in its own world (envs/builtin/simple1d.py's ``make_teams``)."""

from __future__ import annotations

from typing import Mapping

from palaestra.envs.base import ActionTuple, BehaviorSpec, DecisionSteps, Env, EnvError, TerminalSteps


class CombinedEnv:
    def __init__(self, envs: list[Env]) -> None:
        if not envs:
            raise EnvError("CombinedEnv needs at least one environment")
        self.envs = list(envs)
        self._owner: dict[str, Env] = {}
        for env in self.envs:
            for behavior in env.behavior_specs:
                if behavior in self._owner:
                    raise EnvError(f"two of the combined environments have behavior {behavior!r}; give them "
                                   "different behavior names")
                self._owner[behavior] = env

    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        return {b: spec for env in self.envs for b, spec in env.behavior_specs.items()}

    def _env_of(self, behavior: str) -> Env:
        owner = self._owner.get(behavior)
        if owner is None:  # one that appeared after a reset or step (envs/base.py)
            owner = next((env for env in self.envs if behavior in env.behavior_specs), None)
            if owner is None:
                raise EnvError(f"unknown behavior {behavior!r}; this environment has "
                               f"{', '.join(map(repr, self.behavior_specs))}")
            self._owner[behavior] = owner
        return owner

    def reset(self, parameters: Mapping[str, float] | None = None) -> None:
        for env in self.envs:
            env.reset(parameters)

    def get_steps(self, behavior: str) -> tuple[DecisionSteps, TerminalSteps]:
        return self._env_of(behavior).get_steps(behavior)

    def set_actions(self, behavior: str, actions: ActionTuple) -> None:
        self._env_of(behavior).set_actions(behavior, actions)

    def step(self) -> None:
        for env in self.envs:
            env.step()

    def close(self) -> None:
        for env in self.envs:
            env.close()
