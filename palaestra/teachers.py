"""The teacher of ``trainer: online_bc``, named by ``brain_to_imitate``: a function from a
behavior's decision steps to the actions the teacher would take for them, called before the
policy acts on the same steps (so a scripted heuristic, which reads the environment's current
state, labels exactly the observations the policy sees).

``brain_to_imitate`` takes what ``palaestra-record --policy`` takes (palaestra/demos/record.py
builds them): ``heuristic`` (the built-in environment's scripted policy), a model ``.onnx``, or
``package.module:function``; or the name of another behavior of the environment, whose policy
(as its own trainer trains it) acts deterministically on this behavior's observations. In
ML-Agents 0.9 the teacher was such another behavior: a player brain, acted for by a script or a
person; the behavior's own name here means its heuristic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from palaestra.algorithms.protocol import Algorithm
from palaestra.demos.record import Policy, RecordError, make_policy
from palaestra.envs.base import ActionTuple, BehaviorSpec, DecisionSteps, Env, behaviors_named
from palaestra.envs.observations import stored_observations
from palaestra.evaluation import AgentMemories
from palaestra.settings import ConfigError


def _teacher_behavior(brain_to_imitate: str, behavior: str, specs: Mapping[str, BehaviorSpec]) -> str | None:
    """The other behavior ``brain_to_imitate`` names as ``behavior``'s teacher, or None (the
    heuristic, a model, a function: its own name, or the name before its team, which may name the
    other teams too, means the heuristic)."""
    if behavior in behaviors_named(brain_to_imitate, specs):
        return None
    other = behaviors_named(brain_to_imitate, specs)  # by its name or (a Unity behavior with a team) the name before it
    return other[0] if len(other) == 1 else None


def teacher_loop(behavior: str, brain_to_imitate: Mapping[str, str], specs: Mapping[str, BehaviorSpec]) -> list[str]:
    """The behaviors from ``behavior`` round a loop of teachers back to it (``brain_to_imitate``: of
    the behaviors that learn from a teacher), or [] where following the teachers ends at one that
    knows the task (a heuristic, a model, a function, or a behavior that learns otherwise)."""
    path = [behavior]
    while (teacher := _teacher_behavior(brain_to_imitate[path[-1]], path[-1], specs)) in brain_to_imitate:
        if teacher == behavior:
            return path
        if teacher in path:  # a loop further on, which that behavior's own check names
            return []
        path.append(teacher)
    return []


def make_teacher(brain_to_imitate: str, env: Env, behavior: str, seed: int,
                 policies: Mapping[str, Algorithm] | None = None) -> Policy:
    """The teacher for ``behavior`` of ``env`` (``policies``: the other behaviors' algorithms, by
    name); ConfigError saying what to give instead when it cannot be built."""
    where = f"behavior {behavior!r}: brain_to_imitate {brain_to_imitate!r}"
    teacher = _teacher_behavior(brain_to_imitate, behavior, env.behavior_specs)
    if teacher is not None:
        return _behavior_teacher(env.behavior_specs[teacher], env.behavior_specs[behavior], (policies or {})[teacher],
                                 where)
    own = behavior in behaviors_named(brain_to_imitate, env.behavior_specs)
    text = "heuristic" if own else brain_to_imitate
    if not (text == "heuristic" or text.endswith(".onnx") or ":" in text):
        raise ConfigError(f"{where}: expected heuristic (the built-in environment's scripted policy), a model "
                          f".onnx, package.module:function or another behavior of the environment "
                          f"({', '.join(b for b in env.behavior_specs if b != behavior) or 'it has none'})")
    if text == "heuristic" and not callable(getattr(env, "heuristic", None)):
        if hasattr(env, "pool"):  # workers/stepping.py's WorkerPoolEnv: the environment in worker processes
            raise ConfigError(f"{where}: the environment runs in worker processes (--num-envs above 1, or "
                              "--acting=workers), where its scripted heuristic cannot label this process's decisions: "
                              "run it in this process (--num-envs=1, without --acting=workers), or give a model .onnx "
                              "or package.module:function as the teacher")
        raise ConfigError(f"{where}: this environment has no scripted heuristic (the built-in environments have "
                          "one): give a model .onnx or package.module:function")
    try:
        policy = make_policy(text, env, behavior, seed)
    except RecordError as e:
        raise ConfigError(f"{where}: {_reason(e, text)}") from None

    def act(decision: DecisionSteps) -> ActionTuple:
        try:
            return policy.act(decision)
        except RecordError as e:  # the teacher failed mid-run: name the setting, not palaestra-record's flag
            raise RecordError(f"{where}: {_reason(e, text)}") from None

    return Policy(act, policy.episodes_ended)


def _reason(error: RecordError, text: str) -> str:
    """palaestra-record's message without its ``--policy=...`` (the path as given, or as the
    model loader wrote it: ``./expert.onnx`` becomes ``expert.onnx``)."""
    message = str(error)
    for shown in dict.fromkeys((text, str(Path(text)), "heuristic")):
        for separator in (": ", " "):
            if message.startswith(f"--policy={shown}{separator}"):
                return message[len(f"--policy={shown}{separator}"):]
    return message


def _behavior_teacher(theirs: BehaviorSpec, ours: BehaviorSpec, algorithm: Algorithm, where: str) -> Policy:
    """Another behavior's policy, acting deterministically on this behavior's decision steps."""
    if theirs.observation_shapes != ours.observation_shapes or theirs.action_spec != ours.action_spec:
        raise ConfigError(f"{where}: that behavior has observations {[list(s) for s in theirs.observation_shapes]} "
                          f"and actions {theirs.action_spec.describe()}, this one "
                          f"{[list(s) for s in ours.observation_shapes]} and {ours.action_spec.describe()}; the "
                          "teacher must take this behavior's observations and give its actions")
    discrete = ours.action_spec.is_discrete
    # a recurrent teacher keeps its own memory of each of this behavior's agents
    memories = AgentMemories(algorithm.memory_size) if algorithm.memory_size else None

    def act(decision: DecisionSteps) -> ActionTuple:
        allowed = ~np.concatenate(decision.action_mask, axis=1) if discrete and decision.action_mask else None
        memory = memories.get(decision.agent_id) if memories is not None else None
        out = algorithm.act(stored_observations(decision.obs, ours.observation_shapes), allowed, deterministic=True,
                            memory=memory)
        if memories is not None:
            memories.set(decision.agent_id, out.memory)
        # the environment's range, as the collector clips the actions it sends
        return ActionTuple(continuous=np.clip(out.continuous, -1.0, 1.0).astype(np.float32),
                           discrete=out.discrete.astype(np.int32))

    return Policy(act, memories.forget) if memories is not None else Policy(act)
