"""Adapter: a PettingZoo parallel environment as Palaestra behaviors.

Agents are grouped into behaviors by their name without its trailing ``_<index>``:
``adversary_0`` is behavior ``adversary``; ``agent_0`` and ``agent_1`` are behavior ``agent``
(a config needs a section per behavior, or ``default``). A Python factory that builds the
adapter itself may name the behaviors (``behaviors``: a dict from agent to behavior name, or a
function of the agent), e.g. as self-play teams: ``behaviors=teams_by_index`` makes
``player_0`` and ``player_1`` the teams ``player?team=0`` and ``player?team=1`` of one policy
(docs/self-play.md). An agent's id within its behavior is
its position among the environment's ``possible_agents`` of that behavior. Agents of one behavior
must share their observation and action spaces, which map as for Gymnasium
(envs/gymnasium_env.py). An agent that finishes early leaves the decision steps through the
terminal steps (truncation reported as an interruption); agents may join late; when no agent is
left, the environment resets and every agent starts a new episode. Environment parameters reach
it as for Gymnasium: its ``set_environment_parameters`` if it has one, else the ``options`` of
every reset.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Mapping

import numpy as np

from palaestra.envs.base import (
    ONCE_PER_RUN,
    ActionTuple,
    BehaviorSpec,
    DecisionSteps,
    EnvError,
    TerminalSteps,
)
from palaestra.envs.gymnasium_env import (
    action_converter,
    actions_per_copy,
    convert_each,
    info_mask_reader,
    mask_reader,
    observation_converter,
    parameter_setter,
    read_masks,
)

logger = logging.getLogger("palaestra")


def behavior_of(agent: Any) -> str:
    """The behavior of a PettingZoo agent: its name without a trailing ``_<number>`` (``player_0``
    and ``player_1`` are one behavior, ``player``); an agent named by another type (an int) by its
    ``str``."""
    return re.sub(r"_\d+$", "", str(agent))


def teams_by_index(agent: Any) -> str:
    """``player_0`` → ``player?team=0``: each numbered agent a self-play team of its name's policy."""
    match = re.fullmatch(r"(.*)_(\d+)", str(agent))
    return f"{match[1]}?team={int(match[2])}" if match else str(agent)


def _behaviors_of_agents(agents: list[Any], behaviors: Mapping[Any, str] | Callable[[Any], str] | None,
                         name: str) -> dict[Any, str]:
    """Each agent's behavior under ``behaviors`` (None: :func:`behavior_of`), checked."""
    if behaviors is None:
        return {agent: behavior_of(agent) for agent in agents}
    if isinstance(behaviors, Mapping):
        strangers = [a for a in behaviors if a not in agents]
        missing = [a for a in agents if a not in behaviors]
        if strangers or missing:
            raise EnvError(f"PettingZoo environment {name!r}: " + (
                f"behaviors names {strangers}, which are not among its possible_agents {agents}" if strangers else
                f"behaviors names no behavior for agent {missing[0]!r} (it names {list(behaviors)}); give every "
                "agent of possible_agents one"))
        named = {agent: behaviors[agent] for agent in agents}
    elif callable(behaviors):
        named = {agent: behaviors(agent) for agent in agents}
    else:
        raise EnvError(f"PettingZoo environment {name!r}: behaviors must be a dict from agent to behavior name or a "
                       f"function of the agent, got {type(behaviors).__name__}")
    for agent, behavior in named.items():
        if not isinstance(behavior, str) or not behavior.strip():
            raise EnvError(f"PettingZoo environment {name!r}: the behavior of agent {agent!r} must be a non-empty "
                           f"string, got {behavior!r}")
    return named


class PettingZooEnv:
    def __init__(self, env: Any, name: str, seed: int = 0,
                 behaviors: Mapping[Any, str] | Callable[[Any], str] | None = None) -> None:
        self.env = env
        self.name = name
        self.seed = seed
        self._agent: dict[str, tuple[str, int]] = {}  # agent name -> (behavior, id)
        groups: dict[str, list[str]] = {}
        for agent, behavior in _behaviors_of_agents(list(env.possible_agents), behaviors, name).items():
            group = groups.setdefault(behavior, [])
            self._agent[agent] = (behavior, len(group))
            group.append(agent)
        self._specs: dict[str, BehaviorSpec] = {}
        self._convert_obs: dict[str, Any] = {}
        self._obs_dtype: dict[str, type] = {}  # float32, or uint8 for an image of uint8 pixels
        self._convert_act: dict[str, Any] = {}
        self._masks: dict[str, Any] = {}  # behavior -> mask_reader, where its observations carry a mask
        self._info_masks: dict[str, Any] = {}  # behavior -> info_mask_reader: masks in infos[agent]["action_mask"]
        for behavior, agents in groups.items():
            observation_space, action_space = env.observation_space(agents[0]), env.action_space(agents[0])
            # (compared as spaces: two large Boxes' reprs can match where their bounds differ)
            other = [a for a in agents[1:] if env.observation_space(a) != observation_space
                     or env.action_space(a) != action_space]
            if other:
                raise EnvError(f"PettingZoo environment {name!r}: the agents of behavior {behavior!r} ({agents}) "
                               f"have different observation or action spaces ({agents[0]} and {other[0]}); "
                               + ("map them to different behaviors" if behaviors is not None else
                                  "give them different names"))
            label = f"PettingZoo environment {f'{name} ({behavior})'!r}"
            shape, self._obs_dtype[behavior], self._convert_obs[behavior] = observation_converter(
                env.observation_space(agents[0]), label)
            action_spec, self._convert_act[behavior] = action_converter(env.action_space(agents[0]), label)
            self._masks[behavior] = mask_reader(env.observation_space(agents[0]), action_spec, label)
            self._info_masks[behavior] = info_mask_reader(env.observation_space(agents[0]), action_spec, label)
            self._specs[behavior] = BehaviorSpec((shape,), action_spec)
        self._decision: dict[str, DecisionSteps] = {}
        self._terminal: dict[str, TerminalSteps] = {}
        self._deciding: dict[str, list[str]] = {}  # agent names in decision-step order
        self._actions: dict[str, ActionTuple] = {}
        self._seeded = False
        self._options: dict[str, float] | None = None  # environment parameters, passed at each reset
        self._said_options = False

    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        return self._specs

    def _check(self, behavior: str) -> None:
        if behavior not in self._specs:
            raise EnvError(f"unknown behavior {behavior!r}; this environment has {list(self._specs)}")

    def get_steps(self, behavior: str) -> tuple[DecisionSteps, TerminalSteps]:
        self._check(behavior)
        if not self._decision:
            raise EnvError("get_steps() called before reset()")
        return self._decision[behavior], self._terminal[behavior]

    def set_actions(self, behavior: str, actions: ActionTuple) -> None:
        self._check(behavior)
        self._actions[behavior] = actions

    def reset(self, parameters: Mapping[str, float] | None = None) -> None:
        if parameters:
            values = {str(k): float(v) for k, v in parameters.items()}
            setter = parameter_setter(self.env)
            if setter is not None:
                setter(dict(values))
            self._options = None if setter is not None else values
            if self._options is not None and not self._said_options:
                self._said_options = True  # once: every resampling comes this way
                logger.warning("PettingZoo environment %r has no set_environment_parameters: the environment "
                               "parameters (%s) are passed to its reset(options=...), which many environments "
                               "ignore (docs/curricula.md)", self.name, ", ".join(values), extra={ONCE_PER_RUN: True})
        obs, infos = self._reset_env(seed=None if self._seeded else self.seed)
        self._seeded = True
        self._publish(obs, infos, {}, {}, {}, {})

    def _call(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        """The environment's own method, its exception named with the environment and the call."""
        try:
            return method(*args, **kwargs)
        except Exception as e:  # the environment's code: say which environment, without our frames
            raise EnvError(f"PettingZoo environment {self.name!r} raised {type(e).__name__} in {what}: "
                           f"{str(e).strip() or '(no message)'}") from e

    def _reset_env(self, seed: int | None = None) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        """The environment's reset, checked: its (observations, infos)."""
        result = self._call("reset", self.env.reset, seed=seed, options=self._reset_options())
        if not (isinstance(result, tuple) and len(result) == 2 and all(isinstance(r, Mapping) for r in result)):
            raise EnvError(f"PettingZoo environment {self.name!r}: reset returned {_described(result)}, not the "
                           "parallel API's (observations, infos), each a dict keyed by agent")
        self._refuse_missing_agents("reset()", [], result[0], {}, {}, {})
        return result[0], result[1]

    def _reset_options(self) -> dict[str, float] | None:
        return dict(self._options) if self._options is not None else None

    def step(self) -> None:
        if not self._decision:
            self.reset()
        actions = {}
        for behavior, agents in self._deciding.items():
            chosen = self._actions.pop(behavior, None)
            if chosen is None:
                chosen = self._specs[behavior].action_spec.empty_actions(len(agents))
            self._specs[behavior].action_spec.check(chosen, len(agents), behavior)
            actions.update(zip(agents, actions_per_copy(self._convert_act[behavior], chosen, len(agents))))
        result = self._call("step", self.env.step, actions)
        if not (isinstance(result, tuple) and len(result) == 5 and all(isinstance(r, Mapping) for r in result)):
            raise EnvError(f"PettingZoo environment {self.name!r}: step returned {_described(result)}, not the "
                           "parallel API's (observations, rewards, terminations, truncations, infos), each a dict "
                           "keyed by agent")
        obs, rewards, terminated, truncated, infos = result
        self._refuse_missing_agents("step()", list(actions), obs, rewards, terminated, truncated)
        self._refuse_malformed(rewards, terminated, truncated)
        # only agents that acted can finish: some environments keep reporting an agent that
        # finished earlier (done, reward 0) until the episode ends, which PettingZoo's own API
        # test only warns about; ending it again would count one more episode every step
        acted = {a: rewards[a] for a in actions}
        if not self.env.agents:  # everyone is done: a new episode for all
            unended = [a for a in actions if not (terminated.get(a) or truncated.get(a))]
            if unended:  # (their episodes would run on into the next one, with no end)
                raise EnvError(f"PettingZoo environment {self.name!r}: step() left no live agents, but {unended} "
                               "acted and have neither a termination nor a truncation; PettingZoo's parallel API "
                               "ends every agent's episode with one of them")
            self._publish(*self._reset_env(), acted, terminated, truncated, obs)
        else:
            self._publish(obs, infos, acted, terminated, truncated, {})

    def _refuse_missing_agents(self, call: str, acted: list[str], obs: Mapping[str, Any], rewards: Mapping[str, float],
                               terminated: Mapping[str, bool], truncated: Mapping[str, bool]) -> None:
        """PettingZoo's parallel API: ``call`` returns an observation for every agent that is live
        after it and for every agent that acted (the final one of those that finished), a reward
        for every agent that acted, and names only ``possible_agents``. Without this check an
        agent left out would vanish mid-episode, its experience never finished."""
        where = f"PettingZoo environment {self.name!r}: {call}"
        for label, names in (("an observation", obs), ("a reward", rewards), ("a termination", terminated),
                             ("a truncation", truncated)):
            unknown = [a for a in names if a not in self._agent]
            if unknown:
                raise EnvError(f"{where} returned {label} for {unknown}, which are not among its "
                               f"possible_agents {list(self._agent)}")
        acting = set(acted)  # (a list's membership test made this quadratic in the agents)
        live = [a for a in getattr(self.env, "agents", []) if a not in acting]
        for label, names, needed in (("an observation", obs, [*acted, *live]), ("a reward", rewards, acted)):
            missing = [a for a in dict.fromkeys(needed) if a not in names]
            if missing:
                raise EnvError(f"{where} returned no {label.split(' ', 1)[1]} for {missing}, which "
                               f"{'acted this step' if set(missing) <= set(acted) else 'are among its live agents'}; "
                               "PettingZoo's parallel API returns one for every agent that acted (the final one "
                               "for those that finished) and for every live agent")

    def _refuse_malformed(self, rewards: Mapping[str, Any], terminated: Mapping[str, Any],
                          truncated: Mapping[str, Any]) -> None:
        """Each reward a number and each termination or truncation a flag, or the agent named."""
        if _all_numbers(rewards.values()) and _all_scalars(terminated.values()) and _all_scalars(truncated.values()):
            return  # (one conversion each: the per-agent checks below took about 2 µs an agent)
        for agent, reward in rewards.items():
            try:
                float(reward)
            except (TypeError, ValueError):
                raise EnvError(f"PettingZoo environment {self.name!r}: step returned the reward {reward!r} for agent "
                               f"{agent!r}; expected a number") from None
        for label, flags in (("termination", terminated), ("truncation", truncated)):
            for agent, flag in flags.items():
                if np.ndim(flag) != 0:
                    raise EnvError(f"PettingZoo environment {self.name!r}: step returned the {label} {flag!r} for "
                                   f"agent {agent!r}; expected True or False")

    def _publish(self, obs: Mapping[str, Any], infos: Mapping[str, Any], rewards: Mapping[str, float],
                 terminated: Mapping[str, bool], truncated: Mapping[str, bool], final_obs: Mapping[str, Any]) -> None:
        """Decision steps for the agents in ``obs`` that go on (their masks from the observations,
        or from ``infos``: those of the same call), terminal steps for those that ended (of the
        agents that acted, the keys of ``rewards``)."""
        deciding: dict[str, list[str]] = {b: [] for b in self._specs}
        ended: dict[str, list[str]] = {b: [] for b in self._specs}
        for agent in rewards:
            if terminated.get(agent) or truncated.get(agent):
                ended[self._agent[agent][0]].append(agent)
        for agent in obs:
            if agent in self._agent and not (terminated.get(agent) or truncated.get(agent)) or final_obs:
                deciding[self._agent[agent][0]].append(agent)
        for behavior in self._specs:
            spec, convert = self._specs[behavior], self._convert_obs[behavior]
            agents = deciding[behavior]
            shape, dtype = spec.observation_shapes[0], self._obs_dtype[behavior]
            # (the observations first: a masked observation that is no dict of both is named there)
            seen = convert_each(convert, [obs[a] for a in agents]) if agents else np.zeros((0, *shape), dtype)
            masks, reader = None, self._masks[behavior]
            if reader is not None:  # each branch's [agents, size], True where unavailable (all agents at once)
                masks = read_masks(reader, [obs[a]["action_mask"] for a in agents], spec.action_spec) if agents \
                    else [np.zeros((0, size), bool) for size in spec.action_spec.discrete_branches]
            elif self._info_masks[behavior] is not None:
                values = [info.get("action_mask") if type(info) is dict or isinstance(info, Mapping) else None
                          for info in (infos.get(a) for a in agents)]
                masks = None if all(v is None for v in values) else \
                    read_masks(self._info_masks[behavior], values, spec.action_spec)
            self._decision[behavior] = DecisionSteps(
                [seen],
                np.asarray([0.0 if final_obs else rewards.get(a, 0.0) for a in agents], np.float32),
                np.asarray([self._agent[a][1] for a in agents], np.int64),
                masks,
            )
            done = ended[behavior]
            last = final_obs or obs
            self._terminal[behavior] = TerminalSteps(
                [convert_each(convert, [last[a] for a in done]) if done else np.zeros((0, *shape), dtype)],
                np.asarray([rewards[a] for a in done], np.float32),
                np.asarray([self._agent[a][1] for a in done], np.int64),
                np.asarray([bool(truncated.get(a)) and not terminated.get(a) for a in done], bool),
            )
        self._deciding = deciding

    def close(self) -> None:
        self._decision = {}
        self.env.close()


def _described(result: Any) -> str:
    """What a call returned, for a message: its count of values and their types."""
    if isinstance(result, tuple):
        return f"{len(result)} values ({', '.join(type(r).__name__ for r in result)})"
    return f"a {type(result).__name__}"


def is_parallel_env(obj: Any) -> bool:
    try:
        from pettingzoo.utils.env import ParallelEnv
    except ImportError:
        return False
    return isinstance(obj, ParallelEnv)


def _all_numbers(values) -> bool:
    """Whether every value is a scalar number (or bool): the common case, checked at once.
    False sends the values to the checks one by one, which also take what ``float()`` takes."""
    return _scalars(values, "biuf")


def _all_scalars(values) -> bool:
    """Whether every value is a scalar of a plain dtype (``np.ndim`` 0), checked at once."""
    return _scalars(values, "biufcSUmM")


def _scalars(values, kinds: str) -> bool:
    try:
        flat = np.asarray(list(values))
    except ValueError:  # arrays of several shapes among them
        return False
    return flat.ndim == 1 and flat.dtype.kind in kinds
