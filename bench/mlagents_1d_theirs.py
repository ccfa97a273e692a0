"""ML-Agents 1.1.0's side of bench/mlagents_1d.py. Runs in ML-Agents' own virtual environment
(bench/out/, made by bench/mlagents_1d.py), never in the project's.

    python bench/mlagents_1d_theirs.py JOB.json RESULT.json

JOB.json: {"settings": <one behavior's trainer settings, ML-Agents 1.x format>, "max_steps",
"warmup_steps", "seed", "continuous", "step_size", "success_reward", "workdir"}. It trains ML-Agents'
own trainer (TrainerController + SimpleEnvManager, in this process, as ML-Agents' training tests
do) on the 1-D test environment below, once briefly untimed (so lazy imports and first calls are
paid outside the clocks), then once timed, and writes the clocks to RESULT.json.

The 1-D environment is written here from the description of ML-Agents 1.1's test environment
(``SimpleEnvironment`` in mlagents/trainers/tests/simple_test_envs.py, which the PyPI wheel and
source archive of 1.1.0 do not ship): one agent on [-1, 1] starting at 0; the observation is the
goal, -1 or +1, drawn again every episode; each step moves the agent by the action clamped to
+-step_size (discrete: 1 = +step_size, 0 = -step_size); the episode ends at either end, paying
success_reward x position x goal, and each step before that pays -0.01; no step limit; a new
agent id every episode; an all-False action mask for discrete actions.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

T_START = time.perf_counter()

import numpy as np  # noqa: E402

from mlagents_envs.base_env import (  # noqa: E402
    ActionSpec,
    BaseEnv,
    BehaviorMapping,
    BehaviorSpec,
    DecisionSteps,
    DimensionProperty,
    ObservationSpec,
    ObservationType,
    TerminalSteps,
)
from mlagents_envs.side_channel.environment_parameters_channel import (  # noqa: E402
    EnvironmentParametersChannel,
)
from mlagents_envs.timers import get_timer_tree, reset_timers  # noqa: E402
from mlagents.plugins.stats_writer import get_default_stats_writers  # noqa: E402
from mlagents.plugins.trainer_type import register_trainer_plugins  # noqa: E402
from mlagents.trainers.environment_parameter_manager import EnvironmentParameterManager  # noqa: E402
from mlagents.trainers.learn import write_run_options, write_timing_tree, write_training_status  # noqa: E402
from mlagents.trainers.settings import RunOptions  # noqa: E402
from mlagents.trainers.simple_env_manager import SimpleEnvManager  # noqa: E402
from mlagents.trainers.stats import StatsReporter, StatsSummary, StatsWriter  # noqa: E402
from mlagents.trainers.trainer import TrainerFactory  # noqa: E402
from mlagents.trainers.trainer_controller import TrainerController  # noqa: E402
import torch  # noqa: E402

IMPORT_S = time.perf_counter() - T_START
BEHAVIOR = "1D"
TIME_PENALTY = 0.01


def onnx_export_compatible() -> str | None:
    """torch >= 2.9 exports ONNX through dynamo by default, which needs onnxscript (not among
    ML-Agents' dependencies: the final save fails with ModuleNotFoundError); the TorchScript
    exporter ML-Agents was written for is still there behind ``dynamo=False``. This shim (in this
    process only, ML-Agents' files untouched) passes that flag. Returns a note of what was
    changed, or None."""
    import inspect

    export = torch.onnx.export
    if "dynamo" not in inspect.signature(export).parameters:
        return None

    def export_without_dynamo(*args, **kwargs):
        kwargs.setdefault("dynamo", False)
        return export(*args, **kwargs)

    torch.onnx.export = export_without_dynamo
    return "torch.onnx.export called with dynamo=False (torch >= 2.9 defaults to the dynamo exporter)"


class OneD(BaseEnv):
    """ML-Agents 1.1's 1-D test environment (see the module docstring), one agent."""

    def __init__(self, continuous: bool, step_size: float, success_reward: float, seed: int) -> None:
        super().__init__()
        self.continuous = continuous
        self.step_size = step_size
        self.success_reward = success_reward
        self.rng = random.Random(seed)
        action_spec = ActionSpec(1, ()) if continuous else ActionSpec(0, (2,))
        obs_spec = ObservationSpec((1,), (DimensionProperty.UNSPECIFIED,), ObservationType.DEFAULT, "obs_0")
        self.spec = BehaviorSpec([obs_spec], action_spec)
        self.mask = None if continuous else [np.zeros((1, 2), dtype=bool)]
        self.agent = 0
        self.position = 0.0
        self.goal = 1
        self.ret = 0.0
        self.returns: list[float] = []
        self.steps = 0
        self.action = None
        self.result = None

    @property
    def behavior_specs(self) -> BehaviorMapping:
        return BehaviorMapping({BEHAVIOR: self.spec})

    def set_actions(self, behavior_name, action) -> None:
        self.action = action

    def set_action_for_agent(self, behavior_name, agent_id, action) -> None:
        raise NotImplementedError  # the trainer sets whole batches

    def get_steps(self, behavior_name):
        return self.result

    def _new_episode(self) -> None:
        self.agent += 1
        self.position = 0.0
        self.goal = self.rng.choice((-1, 1))
        self.ret = 0.0

    def _decision(self, reward: float) -> DecisionSteps:
        return DecisionSteps([np.full((1, 1), self.goal, np.float32)], np.array([reward], np.float32),
                             np.array([self.agent], np.int32), self.mask, np.zeros(1, np.int32),
                             np.zeros(1, np.float32))

    def reset(self) -> None:
        self._new_episode()
        self.result = (self._decision(0.0), TerminalSteps.empty(self.spec))

    def step(self) -> None:
        self.steps += 1
        if self.continuous:
            move = float(self.action.continuous[0, 0])
        else:
            move = 1.0 if self.action.discrete[0, 0] else -1.0
        move = max(-self.step_size, min(self.step_size, move))
        self.position = max(-1.0, min(1.0, self.position + move))
        if self.position > -1.0 and self.position < 1.0:
            self.ret -= TIME_PENALTY
            self.result = (self._decision(-TIME_PENALTY), TerminalSteps.empty(self.spec))
            return
        reward = self.success_reward * self.position * self.goal
        self.returns.append(self.ret + reward)
        terminal = TerminalSteps([np.full((1, 1), self.goal, np.float32)], np.array([reward], np.float32),
                                 np.zeros(1, bool), np.array([self.agent], np.int32), np.zeros(1, np.int32),
                                 np.zeros(1, np.float32))
        self._new_episode()
        self.result = (self._decision(0.0), terminal)

    def close(self) -> None:
        pass


class LastReward(StatsWriter):
    """Keeps the mean episode return of the last summary period."""

    def __init__(self) -> None:
        self.value = None

    def write_stats(self, category: str, values: dict[str, StatsSummary], step: int) -> None:
        if "Environment/Cumulative Reward" in values:
            self.value = float(values["Environment/Cumulative Reward"].mean)


def train(job: dict, run_id: str, max_steps: int) -> dict:
    """One training run as mlagents-learn's run_training does it, with the environment in this
    process (SimpleEnvManager). Returns the clocks (see bench/mlagents_1d.py)."""
    t0 = time.perf_counter()
    reset_timers()
    StatsReporter.writers.clear()
    settings = dict(job["settings"], max_steps=max_steps)
    options = RunOptions.from_dict({
        "behaviors": {BEHAVIOR: settings},
        "checkpoint_settings": {"run_id": run_id, "results_dir": job["workdir"]},
    })
    seed = job["seed"]
    cs = options.checkpoint_settings
    os.makedirs(cs.run_logs_dir, exist_ok=True)
    for writer in get_default_stats_writers(options):
        StatsReporter.add_writer(writer)
    last = LastReward()
    StatsReporter.add_writer(last)
    env = OneD(job["continuous"], job["step_size"], job["success_reward"], seed)
    env_manager = SimpleEnvManager(env, EnvironmentParametersChannel())
    params = EnvironmentParameterManager(options.environment_parameters, seed, restore=False)
    factory = TrainerFactory(trainer_config=options.behaviors, output_path=cs.write_path, train_model=True,
                             load_model=False, seed=seed, param_manager=params, init_path=None, multi_gpu=False)
    tc = TrainerController(factory, cs.write_path, cs.run_id, params, True, seed)

    # The loop clock: from the end of the first environment reset (which also builds the trainer
    # and its networks) to the end of start_learning's while-loop (join_threads follows at once).
    marks: dict[str, float] = {}
    first_reset, join_threads = tc._reset_env, tc.join_threads

    def reset_and_mark(manager):
        first_reset(manager)
        marks.setdefault("loop_start", time.perf_counter())

    def join_and_mark(*args, **kwargs):
        marks.setdefault("loop_end", time.perf_counter())
        return join_threads(*args, **kwargs)

    tc._reset_env, tc.join_threads = reset_and_mark, join_and_mark
    try:
        tc.start_learning(env_manager)
    finally:
        env_manager.close()
        write_run_options(cs.write_path, options)
        write_timing_tree(cs.run_logs_dir)
        write_training_status(cs.run_logs_dir)
    whole = time.perf_counter() - t0
    timers = get_timer_tree()
    return {
        "env_steps": env.steps,
        "loop_s": marks["loop_end"] - marks["loop_start"],
        "whole_s": whole,
        "episodes": len(env.returns),
        "last_summary_reward": last.value,
        "last_20_returns_mean": float(np.mean(env.returns[-20:])) if env.returns else None,
        "timers": timers,
    }


def main() -> None:
    job_path, result_path = sys.argv[1], sys.argv[2]
    with open(job_path) as f:
        job = json.load(f)
    register_trainer_plugins()  # as mlagents-learn's command-line parsing does: "ppo", "sac", ...
    notes = [n for n in [onnx_export_compatible()] if n]
    t = time.perf_counter()
    train(job, "warmup", job["warmup_steps"])
    warmup_s = time.perf_counter() - t
    result = train(job, "timed", job["max_steps"])
    result.update(import_s=IMPORT_S, warmup_s=warmup_s, notes=notes, torch_threads=torch.get_num_threads(),
                  versions={"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__})
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
