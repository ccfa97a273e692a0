"""``palaestra-record`` (or ``python -m palaestra.demos.record``): run a policy in any environment
``--env`` names and write what it did as a `.demo` file per behavior, as Unity's recorder would.

    palaestra-record --env=3DBall --policy=heuristic --episodes=20
    palaestra-record --env=CartPole-v1 --policy=results/run/CartPole.onnx --episodes=50 --out=demos
    palaestra-record --env=pettingzoo:mpe2.simple_adversary_v3 --policy=adversary=my_policies:chase \\
        --policy=agent=random --episodes=10

A policy is ``heuristic`` (the built-in environment's scripted policy), ``random`` (uniform,
respecting action masks), an exported ``.onnx`` model, or ``package.module:function``, called
with a behavior's :class:`DecisionSteps` and :class:`BehaviorSpec` and returning an
:class:`ActionTuple` (or one array, for a behavior with one kind of action). ``NAME=POLICY`` gives
behavior NAME its own policy. Each agent's episode is written whole when it ends, so a file
holds complete episodes one after another; with several agents, the first ``--episodes`` to
end are kept and the rest dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from palaestra.demos.reader import DemoError, DemoMeta
from palaestra.demos.writer import DemoWriter
from palaestra.envs.base import (ActionSpec, ActionTuple, BehaviorSpec, DecisionSteps, EngineConfig, Env, EnvError,
                                 TerminalSteps, behaviors_named)
from palaestra.envs.checker import refuse_non_finite
from palaestra.envs.observations import channels_first, is_image
from palaestra.evaluation import AgentMemories, model_input, takes_channels_first
from palaestra.imports import ImportTargetError, load_callable
from palaestra.interrupts import print_unless_closed
from palaestra.options import FlagParser, RunOptions, _ranged, positive_int



def _nothing_to_forget(agent_ids: np.ndarray) -> None:
    pass


@dataclass(frozen=True)
class Policy:
    """What records demonstrations or teaches online_bc: ``act`` gives the actions for a
    behavior's decision steps; ``episodes_ended`` is told the agents whose episodes just ended,
    before their next episode's first decision (a recurrent model zeroes their memory)."""

    act: Callable[[DecisionSteps], ActionTuple]
    episodes_ended: Callable[[np.ndarray], None] = _nothing_to_forget


class RecordError(Exception):
    """Bad input to the record command; the message says what to do instead."""


# -- policies ----------------------------------------------------------------------------------

def _heuristic(env: Env, behavior: str) -> Policy:
    # an environment of several behaviors (WallJump) has a heuristic per behavior
    per_behavior = getattr(env, "heuristic_for", None)
    scripted = (lambda: per_behavior(behavior)) if callable(per_behavior) else getattr(env, "heuristic", None)
    missing = (f"--policy=heuristic: the environment ({env.__class__.__name__}) has no scripted heuristic; the "
               "built-in environments have one. Give an .onnx model or a package.module:function instead")
    if not callable(scripted):
        raise RecordError(missing)

    def act(steps: DecisionSteps) -> ActionTuple:
        try:
            actions = scripted()
        except NotImplementedError:  # the built-in base class declares it for every subclass
            raise RecordError(missing) from None
        if len(actions.continuous) != len(steps) and len(actions.discrete) != len(steps):
            raise RecordError(f"--policy=heuristic: the heuristic acted for {len(actions.continuous)} agents; "
                              f"{len(steps)} of behavior {behavior!r} are deciding")
        return actions

    return Policy(act)


def _random(spec: BehaviorSpec, seed: int) -> Policy:
    rng = np.random.default_rng(seed)
    branches = spec.action_spec.discrete_branches

    def act(steps: DecisionSteps) -> ActionTuple:
        n = len(steps)
        actions = spec.action_spec.random_actions(n, rng)
        if steps.action_mask:  # uniform among the allowed actions: the largest random key wins
            for b, (mask, size) in enumerate(zip(steps.action_mask, branches)):
                keys = rng.random((n, size))
                keys[np.asarray(mask, bool)] = -1.0  # (a 0/1 int mask indexes as a mask too)
                actions.discrete[:, b] = keys.argmax(axis=1)
        return actions

    return Policy(act)


def _onnx(path: Path, spec: BehaviorSpec, behavior: str) -> Policy:
    if not path.is_file():
        raise RecordError(f"--policy={path}: no such model file")
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path))
    except Exception as e:  # onnxruntime raises its own exception types for unreadable models
        raise RecordError(f"--policy={path}: not a model onnxruntime can load: {e}") from None
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    obs_names = [f"obs_{i}" for i in range(len(spec.observation_shapes))]
    if "memories" in inputs:
        raise RecordError(f"--policy={path}: a recurrent model of ML-Agents before 1.0 (input 'memories'); export "
                          "it again with a later ML-Agents or Palaestra, whose models take recurrent_in")
    # a recurrent model: each agent's memory carried between its decisions, zeroed when its episode ends
    memory_input = next((i for i in session.get_inputs() if i.name == "recurrent_in"), None)
    if memory_input is not None and not isinstance(memory_input.shape[-1], int):
        raise RecordError(f"--policy={path}: the model's recurrent_in has no fixed memory size "
                          f"(shape {memory_input.shape}); export it with its memory_size")
    memories = AgentMemories(memory_input.shape[-1]) if memory_input is not None else None
    if memories is not None and "recurrent_out" not in outputs:
        raise RecordError(f"--policy={path}: the model takes recurrent_in but gives no recurrent_out (outputs {outputs})")
    missing = [n for n in obs_names if n not in inputs]
    extra = [n for n in inputs if n.startswith("obs_") and n not in obs_names]
    if missing or extra:
        raise RecordError(f"--policy={path}: the model takes inputs {inputs}; behavior {behavior!r} has "
                          f"{len(obs_names)} observations {[list(s) for s in spec.observation_shapes]}")
    layouts = {}  # each observation input: channels first (images, as exported) or as the environment gives it
    for declared in session.get_inputs():
        if declared.name not in obs_names:
            continue
        index = obs_names.index(declared.name)
        shape = tuple(spec.observation_shapes[index])
        layouts[declared.name] = takes_channels_first(declared.shape[1:], shape)
        if layouts[declared.name] is None:
            taken = f", which a model takes as {list(channels_first(shape))} (channels first)" if is_image(shape) else ""
            raise RecordError(f"--policy={path}: the model's input {declared.name} has shape {declared.shape[1:]}; "
                              f"observation {index} of behavior {behavior!r} has {list(shape)}{taken}")
    actions = spec.action_spec

    def pick(kind: str) -> str | None:
        for name in (f"deterministic_{kind}_actions", f"{kind}_actions"):
            if name in outputs:
                return name
        return None

    continuous, discrete = pick("continuous"), pick("discrete")
    if (actions.is_continuous and continuous is None) or (actions.is_discrete and discrete is None):
        raise RecordError(f"--policy={path}: the model's outputs {outputs} do not give behavior {behavior!r}'s "
                          f"actions ({actions.describe()})")
    # the action sizes the model declares (where fixed), against the behavior's: a model of another
    # behavior with the same observations fails here, not at its first decision
    declared = {o.name: o.shape for o in session.get_outputs()} | {i.name: i.shape for i in session.get_inputs()}
    for name, what, wanted in ((continuous, "continuous actions", actions.continuous_size),
                               (discrete, "discrete branches", actions.num_branches),
                               ("action_masks", "actions in all discrete branches (action_masks)",
                                sum(actions.discrete_branches))):
        shape = declared.get(name) if name else None
        if shape is not None and len(shape) == 2 and isinstance(shape[1], int) and shape[1] != wanted:
            raise RecordError(f"--policy={path}: the model gives {shape[1]} {what}; behavior {behavior!r} acts "
                              f"with {actions.describe()}")

    def act(steps: DecisionSteps) -> ActionTuple:
        n = len(steps)
        if not n:
            return actions.empty_actions(0)
        feeds = {}
        for name, obs in zip(obs_names, steps.obs):
            feeds[name] = model_input(obs, layouts[name])
        if "action_masks" in inputs:
            masks = steps.action_mask
            allowed = (~np.concatenate(masks, axis=1).astype(bool) if masks
                       else np.ones((n, sum(actions.discrete_branches)), bool))
            feeds["action_masks"] = allowed.astype(np.float32)
        if memories is not None:
            feeds["recurrent_in"] = memories.get(steps.agent_id)[:, None]
        try:
            out = dict(zip(outputs, session.run(None, feeds)))
        except Exception as e:  # a shape the model does not take
            raise RecordError(f"--policy={path}: running the model failed: {e}") from None
        if memories is not None:
            memories.set(steps.agent_id, np.asarray(out["recurrent_out"], np.float32)[:, 0])
        chosen_continuous = (_rows(path, continuous, np.asarray(out[continuous], np.float32), n)
                             if actions.is_continuous else np.zeros((n, 0), np.float32))
        chosen_discrete = np.zeros((n, 0), np.int64)
        if actions.is_discrete:
            raw = _rows(path, discrete, np.asarray(out[discrete], np.float64), n)
            # (a value beyond int32 must not wrap into a branch: it is refused as out of range)
            chosen_discrete = np.where(np.isfinite(raw), np.clip(np.rint(raw), -1, 2**31 - 1), -1).astype(np.int64)
        return _checked_actions(path, chosen_continuous, chosen_discrete, n, actions, behavior)

    return Policy(act, memories.forget) if memories is not None else Policy(act)


def _rows(path: object, output: str, values: np.ndarray, n: int) -> np.ndarray:
    """A model output as one row per agent, or the policy's fault said (a model that answers a
    batch with one row, say)."""
    if values.ndim == 0 or values.shape[0] != n:
        raise RecordError(f"--policy={path}: the model's output {output} has shape {values.shape} for {n} agents; "
                          f"its first axis must be the batch (one row per agent)")
    return values.reshape(n, -1)


def _checked_actions(target: object, continuous: np.ndarray, discrete: np.ndarray, n: int, actions: ActionSpec,
                     behavior: str) -> ActionTuple:
    """A policy's actions for ``n`` agents as an ActionTuple, refused here (where it is the
    policy's fault, not later inside the environment or the recording) if their shape does not
    fit the behavior or a value cannot be taken: a NaN, a discrete action outside its branch."""
    wanted = (n, actions.continuous_size), (n, actions.num_branches)
    if n and (continuous.shape, discrete.shape) != wanted:
        raise RecordError(f"--policy={target} returned continuous actions of shape {continuous.shape} and discrete "
                          f"of shape {discrete.shape} for the {n} agents of behavior {behavior!r}; they need "
                          f"{wanted[0]} and {wanted[1]}")
    result = ActionTuple(continuous=continuous.astype(np.float32, copy=False),
                         discrete=discrete.astype(np.int32, copy=False))
    problem = actions.value_problem(result)
    if problem:
        raise RecordError(f"--policy={target} returned {problem}")
    # continuous actions as the environment takes them (in training too): a recording holds the
    # actions that happened, not values beyond [-1, 1] that cloning would learn
    result.continuous = np.clip(result.continuous, -1.0, 1.0)
    return result


def _as_rows(values: object, n: int, width: int, dtype: type | None) -> np.ndarray:
    """``values`` as a new array (the recording keeps its rows, and a policy may refill the array
    it returned); for one action per agent, ``n`` values stand for ``n`` rows of one."""
    array = np.array(values, dtype)
    return array.reshape(n, 1) if array.shape == (n,) and width == 1 else array


def _callable(target: str, spec: BehaviorSpec, behavior: str) -> Policy:
    try:
        function = load_callable(target, "--policy")
    except ImportTargetError as e:
        raise RecordError(str(e)) from None
    actions = spec.action_spec

    def act(steps: DecisionSteps) -> ActionTuple:
        try:
            result = function(steps, spec)
        except Exception as e:  # the user's code: say so, without a traceback through ours
            raise RecordError(f"--policy={target} raised {type(e).__name__}: {e}") from None
        if isinstance(result, np.ndarray) and actions.is_continuous != actions.is_discrete:
            result = ActionTuple(continuous=result) if actions.is_continuous else ActionTuple(discrete=result)
        if not isinstance(result, ActionTuple):
            raise RecordError(f"--policy={target} returned a {type(result).__name__}; it must return an "
                              f"ActionTuple (or one array for a behavior with one kind of action)")
        n = len(steps)
        try:
            continuous = _as_rows(result.continuous, n, actions.continuous_size, np.float32)
            discrete = _as_rows(result.discrete, n, actions.num_branches, None)
        except (ValueError, TypeError) as e:  # ragged lists, text
            raise RecordError(f"--policy={target} returned actions that are not arrays of numbers: {e}") from None
        if discrete.size and discrete.dtype.kind not in "iub":
            whole = discrete.dtype.kind == "f" and np.isfinite(discrete).all() and (discrete == np.round(discrete)).all()
            if not whole:
                raise RecordError(f"--policy={target} returned discrete actions that are not whole numbers")
        return _checked_actions(target, continuous, discrete, n, actions, behavior)

    return Policy(act)


def make_policy(text: str, env: Env, behavior: str, seed: int) -> Policy:
    spec = env.behavior_specs[behavior]
    if text == "heuristic":
        return _heuristic(env, behavior)
    if text == "random":
        return _random(spec, seed)
    if text.endswith(".onnx"):
        return _onnx(Path(text), spec, behavior)
    if ":" in text:
        return _callable(text, spec, behavior)
    raise RecordError(f"--policy={text}: expected heuristic, random, a model file ending in .onnx, or "
                      "package.module:function (optionally as BEHAVIOR=POLICY)")


def _named_policy(text: str, behaviors: list[str]) -> tuple[list[str], str] | None:
    """``BEHAVIOR=POLICY``: (the behaviors it names, the policy), or None. A Unity behavior's name
    holds a ``=`` itself (``Pyramids?team=0``), so the longest name the text starts with wins; the
    name before the team names every team of it (behaviors_named)."""
    bases = {b.partition("?")[0] for b in behaviors}
    for name in sorted(set(behaviors) | bases, key=len, reverse=True):
        if text.startswith(name + "="):
            return behaviors_named(name, behaviors), text[len(name) + 1:]
    return None


def policies_by_behavior(texts: list[str], behaviors: list[str]) -> dict[str, str]:
    """``--policy`` values → one policy per behavior: ``NAME=POLICY`` for behavior NAME, a plain
    value for every behavior without its own."""
    named: dict[str, str] = {}
    given_by: dict[str, str] = {}  # behavior → the --policy value that named it
    default: str | None = None
    for text in texts:
        found = _named_policy(text, behaviors)
        if found is not None:
            for behavior in found[0]:
                if behavior in named:
                    raise RecordError(f"--policy: behavior {behavior!r} is given two policies (--policy="
                                      f"{given_by[behavior]} and --policy={text}); give each behavior one")
                named[behavior], given_by[behavior] = found[1], text
        elif "=" in text and not os.path.exists(text):  # a model path may hold "=", a behavior name does not exist
            raise RecordError(f"--policy={text}: the environment has no behavior {text.partition('=')[0]!r}; it has "
                              f"{', '.join(behaviors)}")
        elif default is not None:
            raise RecordError(f"--policy given twice for every behavior ({default!r} and {text!r}); "
                              "use BEHAVIOR=POLICY to give behaviors different policies")
        else:
            default = text
    missing = [b for b in behaviors if b not in named and default is None]
    if missing:
        raise RecordError(f"no --policy for behavior(s) {', '.join(missing)}")
    if default is not None and all(b in named for b in behaviors):
        raise RecordError(f"--policy={default} applies to no behavior: each of {', '.join(behaviors)} is given its "
                          "own")
    return {b: named.get(b, default) for b in behaviors}


# -- recording ---------------------------------------------------------------------------------

@dataclass
class _Episode:
    """One agent's rows so far, one list entry per record."""

    observations: list[list[np.ndarray]] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    continuous: list[np.ndarray] = field(default_factory=list)
    discrete: list[np.ndarray] = field(default_factory=list)
    has_action: list[bool] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    has_mask: list[bool] = field(default_factory=list)


@dataclass
class _Recording:
    behavior: str
    spec: BehaviorSpec
    policy: Policy
    writer: DemoWriter
    wanted: int
    episodes: int = 0
    steps: int = 0
    returns: list[float] = field(default_factory=list)
    running: dict[int, _Episode] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.episodes >= self.wanted

    def add_terminal(self, terminal: TerminalSteps) -> None:
        for i, agent in enumerate(terminal.agent_id.tolist()):
            episode = self.running.pop(agent, None)
            if episode is None or self.finished:
                continue  # no decision of this episode was recorded, or enough episodes are
            self._row(episode, [o[i] for o in terminal.obs], float(terminal.reward[i]), None, None, None)
            self._flush(agent, episode, bool(terminal.interrupted[i]))

    def add_decision(self, decision: DecisionSteps, actions: ActionTuple) -> None:
        sizes = self.spec.action_spec.discrete_branches
        masks = np.concatenate(decision.action_mask, axis=1) if decision.action_mask else None
        for i, agent in enumerate(decision.agent_id.tolist()):
            episode = self.running.setdefault(agent, _Episode())
            self._row(episode, [o[i] for o in decision.obs], float(decision.reward[i]), actions.continuous[i],
                      actions.discrete[i], masks[i] if masks is not None and sizes else None)

    @staticmethod
    def _row(episode: _Episode, obs: list[np.ndarray], reward: float, continuous, discrete, mask) -> None:
        episode.observations.append([np.array(o) for o in obs])
        episode.rewards.append(reward)
        episode.has_action.append(continuous is not None)
        episode.continuous.append(continuous)
        episode.discrete.append(discrete)
        episode.has_mask.append(mask is not None)
        episode.masks.append(mask)

    def _flush(self, agent: int, episode: _Episode, interrupted: bool) -> None:
        """Write an ended episode: its rows in order, the last one ``done``."""
        n = len(episode.rewards)
        actions = self.spec.action_spec
        done = np.zeros(n, bool)
        done[-1] = True
        max_step = np.zeros(n, bool)
        max_step[-1] = interrupted
        has_mask = np.array(episode.has_mask)

        def stack(rows: list, width: int, dtype: type) -> np.ndarray:
            return np.stack([np.zeros(width, dtype) if r is None else np.asarray(r, dtype) for r in rows]) \
                if n else np.zeros((0, width), dtype)

        self.writer.write(
            [np.stack([row[k] for row in episode.observations]) for k in range(len(self.spec.observation_shapes))],
            np.array(episode.rewards, np.float32), done, np.full(n, agent, np.int64),
            stack(episode.continuous, actions.continuous_size, np.float32),
            stack(episode.discrete, actions.num_branches, np.int64), np.array(episode.has_action), max_step,
            stack(episode.masks, sum(actions.discrete_branches), bool) if has_mask.any() else None,
            has_mask if has_mask.any() else None)
        self.episodes += 1
        self.steps += n
        self.returns.append(float(np.sum(episode.rewards, dtype=np.float64)))


def demo_file_name(behavior: str) -> str:
    """A behavior's file name: characters a file name cannot safely hold become ``_``
    (``Pyramids?team=0`` → ``Pyramids_team_0.demo``); letters of any script stay (``ボール.demo``).
    A name left with nothing to show, or starting with a dot (a hidden file the readers skip),
    becomes ``behavior.demo`` / ``behavior_<name>.demo``."""
    stem = re.sub(r"[^\w.-]+", "_", behavior).strip("_")
    if not stem.strip("._"):
        return "behavior.demo"
    return ("behavior_" + stem if stem.startswith(".") else stem) + ".demo"


@dataclass(frozen=True)
class RecordResult:
    behavior: str
    path: Path
    meta: DemoMeta
    returns: tuple[float, ...]


def record(env: Env, policies: dict[str, str], episodes: int, out: Path | str, seed: int = 0, force: bool = False,
           max_steps: int = 1_000_000) -> list[RecordResult]:
    """Run each behavior's policy until it has ``episodes`` complete episodes and write one
    `.demo` per behavior into folder ``out``. Raises :class:`RecordError` for bad input and when
    ``max_steps`` environment steps pass first (nothing is written then)."""
    for name, value in (("episodes", episodes), ("max_steps", max_steps)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise RecordError(f"{name} must be a whole number >= 1; got {value!r}")
    out = Path(out)
    behaviors = list(env.behavior_specs)
    missing = [b for b in behaviors if b not in policies]
    if missing:
        raise RecordError(f"no policy for behavior(s) {', '.join(missing)}: give one for each of "
                          f"{', '.join(behaviors)}")
    if out.exists() and not out.is_dir():
        raise RecordError(f"--out={out}: that is a file, not a folder; name a folder for the .demo files")
    paths = {b: out / demo_file_name(b) for b in behaviors}
    if len(set(paths.values())) != len(paths):
        raise RecordError(f"behaviors {behaviors} would share file names; record them separately")
    # the policies first: a policy that cannot run is the problem to tell, not files in the way
    made_policies = {b: make_policy(policies[b], env, b, seed + i) for i, b in enumerate(behaviors)}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not force:
        raise RecordError(f"{', '.join(existing)} {'already exists' if len(existing) == 1 else 'already exist'}; "
                          "pass --force to replace")
    made = [folder for folder in (out, *out.parents) if not folder.exists()]  # innermost first
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _record_into(env, made_policies, behaviors, paths, episodes, max_steps)
    except BaseException:
        for folder in made:  # a recording that fails leaves no empty folder behind
            if any(folder.iterdir()):
                break
            folder.rmdir()
        raise


def _record_into(env: Env, made: dict[str, Policy], behaviors: list[str], paths: dict[str, Path], episodes: int,
                 max_steps: int) -> list[RecordResult]:
    with contextlib.ExitStack() as stack:
        recordings = []
        for b in behaviors:
            writer = stack.enter_context(DemoWriter(paths[b], b, env.behavior_specs[b], b))
            recordings.append(_Recording(b, env.behavior_specs[b], made[b], writer, episodes))
        env.reset()
        for step in range(max_steps + 1):  # max_steps environment steps: max_steps + 1 observations
            for r in recordings:
                decision, terminal = env.get_steps(r.behavior)
                refuse_non_finite(r.behavior, decision, terminal)  # a recording with NaN teaches NaN
                if len(terminal):
                    r.add_terminal(terminal)
                    r.policy.episodes_ended(terminal.agent_id)
                if len(decision):
                    actions = r.policy.act(decision)
                    if not r.finished:
                        r.add_decision(decision, actions)
                    env.set_actions(r.behavior, actions)
            if all(r.finished for r in recordings) or step == max_steps:
                break
            env.step()
        if not all(r.finished for r in recordings):
            short = "; ".join(f"{r.behavior}: {r.episodes}" for r in recordings if not r.finished)
            raise RecordError(f"within --max-steps {max_steps} fewer than the {episodes} episodes asked for ended "
                              f"({short}); raise --max-steps or ask for fewer --episodes")
        # every file finished before any is renamed: a failure in between leaves none in place
        metas = [r.writer.finish() for r in recordings]
        for r in recordings:
            r.writer.publish()
        return [RecordResult(r.behavior, paths[r.behavior], meta, tuple(r.returns[:episodes]))
                for r, meta in zip(recordings, metas)]


# -- the command -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = FlagParser(
        prog="palaestra-record",
        description="Run a policy in an environment and write a .demo file per behavior (docs/imitation.md).")
    parser.add_argument("--env", required=True, help="the environment, as for mlagents-learn --env (built-in name, "
                        "Gymnasium id, package.module:callable, pettingzoo:package.module)")
    parser.add_argument("--env-args", nargs="*", default=None, metavar="KEY=VALUE",
                        help="keyword arguments for the environment: a built-in one (VisualGridWorld's "
                        "image_size=36, ...), a Gymnasium id or a Python factory")
    parser.add_argument("--policy", action="append", required=True, metavar="[BEHAVIOR=]POLICY",
                        help="heuristic, random, MODEL.onnx or package.module:function; repeat as BEHAVIOR=POLICY "
                        "to give behaviors different policies")
    parser.add_argument("--episodes", type=positive_int, default=10, help="episodes to record per behavior (default 10)")
    parser.add_argument("--out", default="demos", help="the folder the .demo files go to (default demos)")
    parser.add_argument("--seed", type=_ranged("seed"), default=0,
                        help="the environment's and the random policy's seed (default 0); -1 picks one at random")
    parser.add_argument("--num-areas", type=positive_int, default=1, help="copies of the environment run side by side")
    parser.add_argument("--max-steps", type=positive_int, default=1_000_000,
                        help="give up after this many environment steps (default 1000000)")
    parser.add_argument("--force", action="store_true", help="replace .demo files that already exist")
    # a Unity build or the Editor, as mlagents-learn starts and waits for them (its messages name these)
    defaults = RunOptions()
    parser.add_argument("--base-port", type=_ranged("base_port"), default=defaults.base_port,
                        help="the port a Unity build or the Editor connects on (a factory that takes a `port` "
                        "argument receives it)")
    parser.add_argument("--timeout-wait", type=_ranged("timeout_wait"), default=defaults.timeout_wait,
                        help="Unity: seconds to wait for the build or the Editor to connect, and for each step")
    parser.add_argument("--no-graphics", action="store_true", help="Unity builds: run without rendering")
    return parser


class _Stopped(KeyboardInterrupt):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _StopSignals:
    """SIGTERM and SIGHUP stop a recording as Ctrl+C does: the files being written are removed
    (the writer's exit), not left half-written. SIGINT too where it was ignored (a background
    job of a script inherits that), as mlagents-learn does."""

    def __init__(self) -> None:
        import signal
        import threading

        self._old = {}
        if threading.current_thread() is not threading.main_thread():
            return  # (only the main thread may set handlers; record() called from elsewhere)
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            signum = getattr(signal, name, None)
            if signum is not None:
                self._old[signum] = signal.signal(signum, self._raise)

    @staticmethod
    def _raise(signum: int, frame: object) -> None:
        raise _Stopped(signum)

    def restore(self) -> None:
        import signal

        for signum, handler in self._old.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    from palaestra.envs.sources import make_env
    from palaestra.options import logger, setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(False)
    if args.seed == -1:  # as mlagents-learn: a random seed, said so that the recording can be repeated
        args.seed = int(np.random.default_rng().integers(0, 10_000))
        logger.info("--seed -1: recording with seed %d", args.seed)
    env = None
    stop = _StopSignals()
    try:
        engine = EngineConfig(no_graphics=args.no_graphics, timeout_wait=args.timeout_wait)
        env = make_env(args.env, seed=args.seed, num_areas=args.num_areas, env_args=args.env_args, engine=engine,
                       port=args.base_port)
        policies = policies_by_behavior(args.policy, list(env.behavior_specs))
        results = record(env, policies, args.episodes, Path(args.out).expanduser(), args.seed, args.force,
                         args.max_steps)
    except (RecordError, EnvError, DemoError) as e:
        logger.error("%s", e)
        return 1
    except OSError as e:
        logger.error("cannot write %s: %s", e.filename or args.out, e.strerror or e)
        return 1
    except KeyboardInterrupt as e:  # Ctrl+C, or SIGTERM/SIGHUP (a scheduler, a closed terminal)
        logger.error("interrupted; no .demo file was written")
        return 128 + getattr(e, "signum", 2)
    except Exception as e:  # the environment's or the policy's own code failed: say so, without a traceback
        logger.error("recording stopped: %s raised %s: %s; no .demo file was written", args.env, type(e).__name__,
                     str(e).strip().splitlines()[0] if str(e).strip() else "(no message)")
        return 1
    finally:
        stop.restore()
        if env is not None:
            with contextlib.suppress(Exception):  # closing must not hide the error that stopped us
                env.close()
    for r in results:
        returns = np.array(r.returns)
        print_unless_closed(f"{r.behavior}: {r.meta.number_episodes} episodes, {r.meta.number_steps} steps, mean "
                            f"reward {r.meta.mean_reward:.4g} (min {returns.min():.4g}, max {returns.max():.4g}), "
                            f"policy {policies[r.behavior]} -> {r.path}")
    return 0


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
