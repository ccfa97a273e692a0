"""Curricula and samplers in a run: the values reach the environment before the first episode and
at each lesson change or resampling, in the main process and in worker processes (stepping and
acting); the lesson is saved and restored by --resume; the stats reach the summaries. Also the
environment sources' side: Gymnasium (set_environment_parameters or reset options)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from palaestra.checkpoints import CheckpointManager
from palaestra.envs.gymnasium_env import GymnasiumEnv
from tests.conftest import interrupt_training, write_yaml

# a 1-D environment (tests' Simple1D) that writes each reset's parameters to resets.jsonl
RECORDING = '''
import json
from palaestra.envs.builtin.simple1d import Simple1D

class Recording(Simple1D):
    default_parameters = {"height": 0.0, "mass": 1.0}

    def reset(self, parameters=None):
        with open("resets.jsonl", "a") as f:
            f.write(json.dumps({"seed": self.seed, "parameters": dict(parameters or {})}) + "\\n")
        super().reset(parameters)

def make(seed=0, num_areas=1, behavior_name=None):
    env = Recording(seed=seed, num_areas=num_areas, max_episode_steps=10, behavior_name=behavior_name)
    env.seed = seed
    return env

def make_team(seed=0, num_areas=1):  # a Unity scene names a behavior with its team
    return make(seed, num_areas, "1D?team=0")
'''

CONFIG = """
1D:
  batch_size: 16
  buffer_size: 128
  hidden_units: 16
  num_layers: 1
  max_steps: {max_steps}
  summary_freq: 100
  time_horizon: 16
"""

# every check passes: a new lesson after every 5 episodes of the lesson
CURRICULUM = """
1D:
  measure: reward
  thresholds: [-100, -100]
  min_lesson_length: 5
  signal_smoothing: false
  parameters:
    height: [1.0, 2.0, 3.0]
"""

SAMPLER = """
resampling-interval: 150
mass: {sampler-type: uniform, min_value: 1, max_value: 100}
"""


@pytest.fixture
def recording(workdir):
    import sys

    (workdir / "recording_env.py").write_text(RECORDING)
    write_yaml(workdir / "c.yaml", CONFIG.format(max_steps=600))
    write_yaml(workdir / "curriculum.yaml", CURRICULUM)
    write_yaml(workdir / "sampler.yaml", SAMPLER)
    yield workdir
    sys.modules.pop("recording_env", None)


def resets(workdir) -> list[dict]:
    return [json.loads(line) for line in (workdir / "resets.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("workers", [[], ["--num-envs=2", "--acting=main"], ["--num-envs=2", "--acting=workers"]])
def test_lessons_and_samples_reach_the_environment(run_cli, recording, workers):
    result = run_cli("c.yaml", "--env=recording_env:make", "--curriculum=curriculum.yaml", "--sampler=sampler.yaml",
                     "--run-id=r", "--seed=3", *workers)
    assert result.code == 0, result.log
    seen = resets(recording)
    seeds = sorted({r["seed"] for r in seen})
    assert len(seeds) == (2 if workers else 1)
    # lesson 0's values come with the first reset, before any episode; then each lesson in order
    heights = [r["parameters"]["height"] for r in seen]
    assert heights[: len(seeds)] == [1.0] * len(seeds)
    assert sorted(set(heights)) == [1.0, 2.0, 3.0] and heights == sorted(heights)
    assert "1D: lesson 1 of 2 (reward" in result.log and "1D: lesson 2 of 2" in result.log
    # a fresh draw at every reset; the resampling interval (150 global steps) resets the environments too
    masses = [r["parameters"]["mass"] for r in seen]
    assert len(set(masses)) == len(masses) and all(1 <= m < 100 for m in masses)
    assert len(seen) >= len(seeds) * (1 + 2 + 600 // 150 // 2)
    if workers:  # each worker draws its own values
        first = {r["seed"]: r["parameters"]["mass"] for r in seen[:2]}
        assert len(set(first.values())) == 2
    csv = (recording / "summaries" / "r_1D.csv").read_text().splitlines()
    header = csv[0].split(",")
    # (no Curriculum/Measure: the lessons pass by 50 steps, and the last one is never checked)
    for key in ("Environment/Lesson", "Environment Parameters/height", "Environment Parameters/mass"):
        assert key in header, header
    lessons = [float(row.split(",")[header.index("Environment/Lesson")]) for row in csv[1:]]
    assert lessons[-1] == 2.0


def test_a_curriculum_drives_a_behavior_with_a_team(run_cli, recording):
    # Unity names behaviors with their team (1D?team=0); ML-Agents keys curricula, as trainer
    # configs, by the name before '?'
    result = run_cli("c.yaml", "--env=recording_env:make_team", "--curriculum=curriculum.yaml", "--run-id=r")
    assert result.code == 0, result.log
    assert "which the environment does not have" not in result.log
    assert "1D?team=0: lesson 1 of 2 (reward" in result.log and "1D?team=0: lesson 2 of 2" in result.log
    heights = [r["parameters"]["height"] for r in resets(recording)]
    assert heights[0] == 1.0 and heights[-1] == 3.0
    csv = (recording / "summaries" / "r_1D.csv").read_text().splitlines()  # (ML-Agents' category: no team)
    assert float(csv[-1].split(",")[csv[0].split(",").index("Environment/Lesson")]) == 2.0


@pytest.mark.parametrize("workers", [[], ["--num-envs=2", "--acting=workers"]])
def test_summaries_stay_whole_across_resamplings(run_cli, workdir, workers):
    # a resampling ends every episode under way: the parts already collected must not be added
    # to the agents' next episodes (Policy/Extrinsic Reward, strength 1, equals the episodes'
    # return), nor may a worker's round holding several segments of one agent lose any; rows are
    # labelled with the multiples of summary_freq, as ML-Agents writes them, and every row with an
    # update's losses has its value estimates (PPO values the segments an update learns from)
    import csv

    write_yaml(workdir / "c.yaml", "3DBall:\n  batch_size: 64\n  buffer_size: 640\n  hidden_units: 16\n"
                                    "  num_layers: 1\n  max_steps: 2000\n  summary_freq: 250\n  time_horizon: 5\n")
    write_yaml(workdir / "s.yaml", "resampling-interval: 30\nmass: {sampler-type: uniform, min_value: 0.5, "
                                    "max_value: 10}\n")
    result = run_cli("c.yaml", "--env=3DBall", "--run-id=r", "--sampler=s.yaml", *workers)
    assert result.code == 0, result.log
    with open(workdir / "summaries/r_3DBall.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= 6 and all(int(r["Steps"]) % 250 == 0 for r in rows)
    ended = [r for r in rows if r["Environment/Cumulative Reward"] not in ("", "None")]
    assert len(ended) >= 4
    for r in ended:
        assert float(r["Policy/Extrinsic Reward"]) == pytest.approx(float(r["Environment/Cumulative Reward"]),
                                                                      abs=1e-4), r
    updated = [r for r in rows if r["Losses/Value Loss"] not in ("", "None")]
    assert len(updated) >= 2
    assert all(r["Policy/Extrinsic Value Estimate"] not in ("", "None") for r in updated)


# every episode lasts exactly 10 steps (a step of 0.001 never reaches an end) and returns -height
FIXED = '''
import numpy as np
from palaestra.envs.builtin.simple1d import Simple1D
from palaestra.envs.builtin.vector_env import BuiltinVectorEnv

class Fixed(Simple1D):
    default_parameters = {"height": 1.0, "mass": 1.0}
    step = BuiltinVectorEnv.step  # not Simple1D's one-agent shortcut, which has its own rewards

    def _advance(self, actions):
        return np.full(self.n, -self.parameters["height"] / 10), np.zeros(self.n, bool)

def make(seed=0, num_areas=1):
    return Fixed(seed=seed, num_areas=num_areas, step_size=0.001, max_episode_steps=10)

class Staggered(Fixed):
    # two agents whose episodes last 10 and 11 steps (returns -height and -1.1 x height)
    def _advance(self, actions):
        reward, _ = super()._advance(actions)
        return reward, self.episode_steps + 1 >= 10 + np.arange(self.n) % 2

def make_staggered(seed=0, num_areas=1):
    return Staggered(seed=seed, num_areas=2, step_size=0.001, max_episode_steps=0)
'''


@pytest.fixture
def fixed_episodes(workdir):
    (workdir / "fixed_env.py").write_text(FIXED)
    yield workdir
    sys.modules.pop("fixed_env", None)


# the main process acting: a reset every episode; workers: one episode per round (buffer 160 over two
# workers, eight rounds a buffer: 10 steps), 20 global steps a round, a reset before every round.
# (A time horizon below the episodes' length lets the steps count even where episodes are lost.)
@pytest.mark.parametrize("workers", [(10, []), (20, ["--num-envs=2", "--acting=workers"])],
                         ids=["main", "workers"])
def test_episodes_ending_on_the_step_before_a_reset_are_kept(run_cli, fixed_episodes, workers):
    import csv

    interval, flags = workers
    write_yaml(fixed_episodes / "c.yaml", "1D:\n  batch_size: 16\n  buffer_size: 160\n  hidden_units: 8\n"
                                          "  num_layers: 1\n  max_steps: 800\n  summary_freq: 100\n  time_horizon: 4\n")
    write_yaml(fixed_episodes / "s.yaml", f"resampling-interval: {interval}\n"
                                          "mass: {sampler-type: uniform, min_value: 1, max_value: 2}\n")
    result = run_cli("c.yaml", "--env=fixed_env:make", "--sampler=s.yaml", "--run-id=r", *flags)
    assert result.code == 0, result.log
    with open(fixed_episodes / "summaries/r_1D.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8
    for row in rows:  # every row's episodes, none lost to the resets
        assert float(row["Environment/Episode Length"]) == 10.0, row
        assert float(row["Environment/Cumulative Reward"]) == pytest.approx(-1.0), row


@pytest.mark.parametrize("workers", [[], ["--num-envs=2", "--acting=workers"]], ids=["main", "workers"])
def test_only_episodes_played_in_a_lesson_count_toward_it(run_cli, fixed_episodes, workers):
    # lesson 0 (height 1, returns -1 and -1.1) passes; lesson 1 (height 2, returns -2 and -2.2) never
    # can: the episodes of lesson 0 that end after the change (the second agent's, on the step the
    # lesson advances, one step after the first's; or in the rounds the workers ran ahead) must not
    # carry it on to lesson 2
    write_yaml(fixed_episodes / "c.yaml", "1D:\n  batch_size: 16\n  buffer_size: 160\n  hidden_units: 8\n"
                                          "  num_layers: 1\n  max_steps: 800\n  summary_freq: 100\n  time_horizon: 4\n")
    write_yaml(fixed_episodes / "curriculum.yaml", "1D:\n  measure: reward\n  thresholds: [-1.5, -1.5]\n"
                                                   "  min_lesson_length: 1\n  signal_smoothing: false\n"
                                                   "  parameters:\n    height: [1.0, 2.0, 3.0]\n")
    result = run_cli("c.yaml", "--env=fixed_env:make_staggered", "--curriculum=curriculum.yaml", "--run-id=r",
                     *workers)
    assert result.code == 0, result.log
    assert "1D: lesson 1 of 2" in result.log
    assert "1D: lesson 2 of 2" not in result.log


def test_same_seed_same_draws(run_cli, recording):
    draws = []
    for run in ("a", "b"):
        (recording / "resets.jsonl").unlink(missing_ok=True)
        assert run_cli("c.yaml", "--env=recording_env:make", "--sampler=sampler.yaml", f"--run-id={run}",
                       "--seed=5").code == 0
        draws.append([r["parameters"]["mass"] for r in resets(recording)])
    assert draws[0] == draws[1]


def test_lesson_flag_and_resume_keep_the_lesson(run_cli, recording):
    curriculum = CURRICULUM.replace("[-100, -100]", "[-100, 1000]")  # lesson 1 is as far as it gets
    write_yaml(recording / "curriculum.yaml", curriculum)
    first = run_cli("c.yaml", "--env=recording_env:make", "--curriculum=curriculum.yaml", "--run-id=r", "--seed=1")
    assert first.code == 0 and "1D: lesson 1 of 2" in first.log
    checkpoint = CheckpointManager(recording / "models/r/1D", 5).latest()
    assert CheckpointManager.load(checkpoint)["curriculum"]["lesson"] == 1
    (recording / "resets.jsonl").unlink()
    write_yaml(recording / "c.yaml", CONFIG.format(max_steps=900))
    resumed = run_cli("c.yaml", "--env=recording_env:make", "--curriculum=curriculum.yaml", "--run-id=r", "--resume")
    assert resumed.code == 0 and "1D: resumed at lesson 1 of its curriculum" in resumed.log
    assert resets(recording)[0]["parameters"] == {"height": 2.0}
    # --lesson starts there (clamped to the last lesson)
    (recording / "resets.jsonl").unlink()
    started = run_cli("c.yaml", "--env=recording_env:make", "--curriculum=curriculum.yaml", "--run-id=s",
                      "--lesson=7")
    assert started.code == 0 and resets(recording)[0]["parameters"] == {"height": 3.0}


def test_resuming_without_the_curriculum_warns_and_keeps_the_lesson_for_later(run_cli, recording):
    curriculum = CURRICULUM.replace("[-100, -100]", "[-100, 1000]")  # lesson 1 is as far as it gets
    write_yaml(recording / "curriculum.yaml", curriculum)
    assert run_cli("c.yaml", "--env=recording_env:make", "--curriculum=curriculum.yaml", "--run-id=r",
                   "--seed=1").code == 0
    write_yaml(recording / "c.yaml", CONFIG.format(max_steps=900))
    without = run_cli("c.yaml", "--env=recording_env:make", "--run-id=r", "--resume")
    assert without.code == 0 and "the checkpoint is at lesson 1 of a curriculum, but this run has no curriculum" \
        in without.log
    checkpoint = CheckpointManager(recording / "models/r/1D", 5).latest()
    assert CheckpointManager.load(checkpoint)["curriculum"]["lesson"] == 1  # kept, not dropped
    write_yaml(recording / "c.yaml", CONFIG.format(max_steps=1200))
    again = run_cli("c.yaml", "--env=recording_env:make", "--curriculum=curriculum.yaml", "--run-id=r", "--resume")
    assert again.code == 0 and "1D: resumed at lesson 1 of its curriculum" in again.log


def test_the_lesson_survives_ctrl_c_and_resume(recording):
    curriculum = CURRICULUM.replace("[-100, -100]", "[-100, 1000]")
    write_yaml(recording / "curriculum.yaml", curriculum)
    write_yaml(recording / "c.yaml", CONFIG.format(max_steps=10_000_000))
    code, err, _ = interrupt_training(recording, "c.yaml", "--env=recording_env:make", "--curriculum=curriculum.yaml",
                                      "--run-id=int", after_step=r"1D: lesson 1 of 2")
    assert code == 130 and "Traceback" not in err, err
    step = CheckpointManager.load(CheckpointManager(recording / "models/int/1D", 5).latest())["algorithm"]["step"]
    (recording / "resets.jsonl").unlink()
    write_yaml(recording / "c.yaml", CONFIG.format(max_steps=step + 100))
    resumed = subprocess.run([sys.executable, "-m", "palaestra.cli", "c.yaml", "--env=recording_env:make",
                              "--curriculum=curriculum.yaml", "--run-id=int", "--resume"], cwd=recording,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and "resumed at lesson 1" in resumed.stderr, resumed.stderr
    assert resets(recording)[0]["parameters"] == {"height": 2.0}


def test_curriculum_problems_stop_the_run_or_warn(run_cli, recording):
    write_yaml(recording / "bad.yaml", "1D:\n  measure: progress\n")
    result = run_cli("c.yaml", "--env=recording_env:make", "--curriculum=bad.yaml")
    assert result.code == 1 and "bad.yaml: behavior '1D': missing required key(s) thresholds" in result.log
    write_yaml(recording / "other.yaml", CURRICULUM.replace("1D:", "Elsewhere:"))
    result = run_cli("c.yaml", "--env=Simple1DDiscrete", "--curriculum=other.yaml", "--dry-run")
    assert result.code == 0
    assert "a curriculum for behavior 'Elsewhere', which the environment does not have (its behaviors: 1D)" in result.log
    assert "--env=Simple1DDiscrete has no environment parameter(s) height; they are ignored" in result.log
    assert "; 2 warning(s) above;" in result.out  # the curriculum's and the parameter's
    assert "did you mean" not in result.log
    write_yaml(recording / "typo.yaml", CURRICULUM.replace("1D:", "ID:"))  # a misspelled behavior
    result = run_cli("c.yaml", "--env=Simple1DDiscrete", "--curriculum=typo.yaml", "--dry-run")
    assert "a curriculum for behavior 'ID', which the environment does not have (its behaviors: 1D) (did you mean " \
           "'1D'?); its lesson stays 0" in result.log, result.log


def test_a_dry_run_prints_what_the_curricula_and_the_sampler_will_send(run_cli, recording):
    import yaml

    write_yaml(recording / "s.yaml", "resampling-interval: 50\nheight: {sampler-type: gaussian, mean: 1, st_dev: 0.5}\n")
    result = run_cli("c.yaml", "--env=recording_env:make", "--curriculum=curriculum.yaml", "--sampler=s.yaml",
                     "--lesson=1", "--dry-run")
    assert result.code == 0, result.log
    printed = yaml.safe_load(result.out[: result.out.rindex("dry run:")])["environment_parameters"]
    lesson = printed["curricula"]["1D"]
    assert lesson["lesson"] == 1 and lesson["file"] == "curriculum.yaml" and lesson["values"] == {"height": 2.0}
    assert printed["sampler"] == {"file": "s.yaml", "resampling-interval": 50, "parameters": {
        "height": {"sampler-type": "gaussian", "mean": 1.0, "st_dev": 0.5}}}


# -- Gymnasium ---------------------------------------------------------------------------------
class _Options(gym.Env):
    """Records the options of each reset; ends every episode after 3 steps."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (1,))
        self.action_space = gym.spaces.Discrete(2)
        self.options, self.t = [], 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.options.append(options)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(1, np.float32), 0.0, self.t >= 3, False, {}


class _Setter(_Options):
    def set_environment_parameters(self, parameters):
        self.parameters = parameters


def test_gymnasium_gets_parameters_as_reset_options_or_through_its_setter(caplog):
    plain = [_Options(), _Options()]
    env = GymnasiumEnv("opts", instances=plain)
    with caplog.at_level(logging.WARNING, logger="palaestra"):
        env.reset({"gravity": 5})
        env.reset({"gravity": 6})
    assert caplog.text.count("opts has no set_environment_parameters: the environment parameters (gravity) are "
                             "passed to its reset(options=...)") == 1
    env.reset({"gravity": 5})
    for _ in range(3):  # the automatic reset after 3 steps gets them again
        env.set_actions("opts", env.behavior_specs["opts"].action_spec.empty_actions(2))
        env.step()
    assert plain[0].options[2:] == [{"gravity": 5.0}, {"gravity": 5.0}] and plain[1].options == plain[0].options
    setter = _Setter()
    env = GymnasiumEnv("set", instances=[gym.wrappers.TimeLimit(setter, 50)])
    caplog.clear()
    env.reset({"gravity": 5})
    assert setter.parameters == {"gravity": 5.0} and setter.options == [None] and not caplog.text


class _Parallel:
    """A two-agent PettingZoo-style parallel environment that records its resets' options;
    every episode lasts 2 steps."""

    possible_agents = ["runner_0", "runner_1"]

    def __init__(self, setter: bool = False):
        self.options, self.agents, self.t = [], [], 0
        if setter:
            self.set_environment_parameters = lambda p: setattr(self, "parameters", p)

    def observation_space(self, agent):
        return gym.spaces.Box(-1.0, 1.0, (1,))

    def action_space(self, agent):
        return gym.spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        self.options.append(options)
        self.agents, self.t = list(self.possible_agents), 0
        return {a: np.zeros(1, np.float32) for a in self.agents}, {}

    def step(self, actions):
        self.t += 1
        done = self.t >= 2
        obs = {a: np.zeros(1, np.float32) for a in self.agents}
        flags = {a: done for a in self.agents}
        if done:
            self.agents = []
        return obs, {a: 0.0 for a in obs}, flags, {a: False for a in obs}, {}

    def close(self):
        pass


def test_pettingzoo_gets_parameters_as_reset_options_or_through_its_setter():
    from palaestra.envs.pettingzoo_env import PettingZooEnv

    plain = _Parallel()
    env = PettingZooEnv(plain, "runners")
    env.reset({"speed": 2})
    for _ in range(2):
        env.step()
    assert plain.options == [{"speed": 2.0}, {"speed": 2.0}]
    with_setter = _Parallel(setter=True)
    PettingZooEnv(with_setter, "runners").reset({"speed": 2})
    assert with_setter.parameters == {"speed": 2.0} and with_setter.options == [None]


def test_what_every_worker_would_say_alike_is_said_once(workdir):
    # each worker's CartPole warned that its reset options carry the parameters: as many times as
    # --num-envs, where the docs promise once
    import subprocess
    import sys

    config = write_yaml(workdir / "c.yaml", "default:\n  batch_size: 32\n  buffer_size: 64\n  max_steps: 200\n")
    sampler = write_yaml(workdir / "s.yaml", "resampling-interval: 100000\nmass:\n  sampler-type: uniform\n"
                                             "  min_value: 1\n  max_value: 2\n")
    result = subprocess.run([sys.executable, "-m", "palaestra.cli", str(config), "--env=CartPole-v1", "--num-envs=2",
                             f"--sampler={sampler}", "--run-id=o"], cwd=workdir, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("CartPole-v1 has no set_environment_parameters") == 1, result.stderr[-3000:]
