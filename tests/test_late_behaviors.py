"""Behaviors that appear after the first reset (envs/base.py): the run makes their trainers when
they appear, as ML-Agents does. Unity scenes that spawn a behavior mid-run are in tests/test_unity.py;
these use a Python factory environment."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from palaestra.run_folders import RUN_LOCK
from palaestra.workers.stepping import WorkerPoolEnv
from tests.conftest import write_yaml

LATE_MODULE = """
import numpy as np
from palaestra.envs.base import ActionSpec, BehaviorSpec, DecisionSteps, TerminalSteps

SPEC = BehaviorSpec(((2,),), ActionSpec(continuous_size=1))


class Late:
    # the behaviors `first` from the start, `later` from step `appear` on (comma-separated names). Two
    # agents each; the reward is the action the agent took last (so a test can see which actions
    # arrived); episodes of 10 steps.

    def __init__(self, appear=5, first="A", later="B"):
        self.appear, self.later = appear, [b for b in later.split(",") if b]
        self.behavior_specs = {b: SPEC for b in first.split(",")}

    def reset(self, parameters=None):
        self.t = 0
        self.last = {}
        self._publish()

    def _publish(self):
        self.steps = {}
        for b in self.behavior_specs:
            ids = np.arange(2) + 100 * (self.t // 10)
            obs = np.stack([ids, np.full(2, self.t % 10)], axis=1).astype(np.float32)
            reward = self.last.get(b, np.zeros(2, np.float32))
            if self.t and self.t % 10 == 0:
                terminal = TerminalSteps([obs - [100, 0]], reward, ids - 100, np.ones(2, bool))
            else:
                terminal = TerminalSteps.empty(SPEC)
            self.steps[b] = (DecisionSteps([obs], reward, ids), terminal)
        self.last = {}

    def get_steps(self, behavior):
        return self.steps[behavior]

    def set_actions(self, behavior, actions):
        self.last[behavior] = actions.continuous[:, 0].copy()

    def step(self):
        self.t += 1
        if self.t == self.appear:
            for b in self.later:
                self.behavior_specs[b] = SPEC
        self._publish()

    def close(self):
        pass


def make(appear=5, first="A", later="B"):
    return Late(appear, first, later)
"""

CONFIG = """
A:
  trainer: ppo
  max_steps: 300
  summary_freq: 100
  time_horizon: 16
  batch_size: 32
  buffer_size: 64
  hidden_units: 16
  num_layers: 1
"""

DEFAULT = CONFIG + CONFIG.replace("A:", "default:").replace("hidden_units: 16", "hidden_units: 8")


@pytest.fixture
def late_env(workdir):
    (workdir / "late_env.py").write_text(LATE_MODULE)
    return "late_env:make"


@pytest.mark.parametrize("flags", [[], ["--num-envs=2", "--acting=main"]], ids=["in-process", "stepping-workers"])
def test_a_behavior_that_appears_later_gets_its_trainer_outputs_and_actions(run_cli, workdir, late_env, flags):
    config = write_yaml(workdir / "c.yaml", DEFAULT)
    result = run_cli(str(config), f"--env={late_env}", "--run-id=l", "--seed=0", *flags)
    assert result.code == 0, result.log
    assert "behavior 'B' appeared at step" in result.log
    run = workdir / "models" / "l"
    for behavior in ("A", "B"):
        assert (run / f"{behavior}.onnx").is_file() and list((run / behavior).glob("checkpoint-*.pt"))
        with open(workdir / "summaries" / f"l_{behavior}.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert rows and float(rows[-1]["Steps"]) >= 100
        # the policy acted: rewards are the actions it sent, which zeros would not give
        assert float(rows[-1]["Environment/Cumulative Reward"]) != 0.0
    configuration = yaml.safe_load((run / "configuration.yaml").read_text())
    assert list(configuration["behaviors"]) == ["A", "B"]
    assert configuration["behaviors"]["B"]["hidden_units"] == 8  # 'default', not A's section
    if not flags:  # --inference plays it, and says so (not "training it")
        result = run_cli(str(config), f"--env={late_env}", "--run-id=l", "--seed=0", "--inference")
        assert result.code == 0 and "Loaded B from" in result.log, result.log
        assert "behavior 'B' appeared at step 5: running its policy (--inference) from now on" in result.log


def test_a_late_behavior_without_a_section_stops_the_run_after_saving(run_cli, workdir, late_env):
    config = write_yaml(workdir / "c.yaml", CONFIG)
    result = run_cli(str(config), f"--env={late_env}", "--run-id=l", "--env-args", "later=B,C")
    assert result.code == 1
    assert "no settings for behavior(s) B, C: add a section for each, or a 'default' section" in result.log
    assert "the model was saved first" in result.log and "Traceback" not in result.log
    assert (workdir / "models" / "l" / "A.onnx").is_file()


def test_a_section_a_late_behavior_would_fail_on_is_said_at_the_start(run_cli, workdir, late_env):
    # its section was checked only when the behavior appeared, possibly hours into the run
    config = write_yaml(workdir / "c.yaml", DEFAULT + "C:\n  trainer: online_bc\n  use_recurrent: true\n"
                                                      "  sequence_length: 8\n  brain_to_imitate: heuristic\n")
    result = run_cli(str(config), f"--env={late_env}", "--run-id=l", "--dry-run")
    assert result.code == 0 and ("c.yaml: section 'C' (no behavior of that name in the environment yet): "
                                 "use_recurrent: true (LSTM policies) is built for trainers ppo and sac only so far "
                                 "(set in section 'C')") in result.log and "a behavior 'C' that appears later would "\
        "stop the run there" in result.log, result.log
    # a section that does not resolve at all is said too, in the same words
    write_yaml(workdir / "c.yaml", DEFAULT + "C:\n  use_recurrent: true\n  sequence_length: 64\n")
    result = run_cli(str(config), f"--env={late_env}", "--run-id=l", "--dry-run")
    assert result.code == 0 and "section 'C' (no behavior of that name in the environment yet): with use_recurrent, " \
        "batch_size (32) must be at least sequence_length (64); a behavior 'C' that appears" in result.log, result.log
    # sections of other scenes, as ML-Agents' shipped files hold, are valid: nothing said
    shipped = run_cli(str(Path(__file__).parent.parent / "config" / "trainer_config.yaml"), "--env=3DBall",
                      "--run-id=s", "--dry-run")
    assert shipped.code == 0 and "no behavior of that name" not in shipped.log, shipped.log


def test_resume_starts_a_behavior_the_previous_run_never_saved_afresh(run_cli, workdir, late_env):
    config = write_yaml(workdir / "c.yaml", DEFAULT)
    # in the first run B has not appeared when A's max_steps end it
    short = write_yaml(workdir / "short.yaml", DEFAULT.replace("max_steps: 300", "max_steps: 3"))
    assert run_cli(str(short), f"--env={late_env}", "--run-id=l", "--env-args", "appear=1000").code == 0
    assert not (workdir / "models" / "l" / "B").exists()
    result = run_cli(str(config), f"--env={late_env}", "--run-id=l", "--resume")
    assert result.code == 0, result.log
    assert "has no checkpoint for behavior 'B' (the previous run had no such behavior, or it appeared after " \
           "that run's last save); it starts afresh" in result.log
    assert (workdir / "models" / "l" / "B.onnx").is_file()


def test_resume_starts_a_behavior_the_environment_gained_afresh_and_resumes_the_others(run_cli, workdir, late_env):
    # the scene gained a behavior between the runs: A resumes, B (from the start) starts afresh; a
    # recorded behavior without a checkpoint is still refused (its run stopped before saving it)
    config = write_yaml(workdir / "c.yaml", DEFAULT)
    assert run_cli(str(config), f"--env={late_env}", "--run-id=g", "--env-args", "later=").code == 0
    result = run_cli(str(config), f"--env={late_env}", "--run-id=g", "--resume",
                     "--env-args", "first=A,B", "later=")
    assert result.code == 0, result.log
    assert "Resumed A from" in result.log and "it starts afresh" in result.log
    assert (workdir / "models" / "g" / "B.onnx").is_file()


def test_acting_workers_say_a_late_behavior_is_not_trained(run_cli, workdir, late_env):
    config = write_yaml(workdir / "c.yaml", DEFAULT)
    result = run_cli(str(config), f"--env={late_env}", "--run-id=l", "--num-envs=2", "--acting=workers")
    assert result.code == 0, result.log
    assert result.log.count("behavior 'B' appeared in environment worker") == 1
    assert "--acting=main trains it" in result.log


def test_stepping_workers_show_a_behavior_from_when_it_appears(workdir, late_env):
    env = WorkerPoolEnv(late_env, 2, seed=0, pipeline=False)
    try:
        env.reset()
        assert list(env.behavior_specs) == ["A"]
        for step in range(1, 8):
            for b in env.behavior_specs:
                decision, _ = env.get_steps(b)
                env.set_actions(b, env.behavior_specs[b].action_spec.empty_actions(len(decision)))
            env.step()
            assert list(env.behavior_specs) == (["A", "B"] if step >= 5 else ["A"])
        decision, _ = env.get_steps("B")
        assert len(decision) == 4 and sorted(decision.agent_id.tolist()) == [0, 1, 2, 3]
        # each behavior's own actions reach its agents (the environment pays the action taken)
        for b, action in (("A", 0.25), ("B", 0.75)):
            actions = env.behavior_specs[b].action_spec.empty_actions(4)
            actions.continuous[:] = action
            env.set_actions(b, actions)
        env.step()
        np.testing.assert_array_equal(env.get_steps("A")[0].reward, np.full(4, 0.25, np.float32))
        np.testing.assert_array_equal(env.get_steps("B")[0].reward, np.full(4, 0.75, np.float32))
    finally:
        env.close()


# --- the names of a behavior's files (Unity teams: 'Striker?team=0')

def outputs(workdir, run_id):
    run = workdir / "models" / run_id
    return sorted(p.name for p in run.iterdir() if p.name not in ("configuration.yaml", "run_logs", RUN_LOCK))


def summaries(workdir):
    return sorted(p.name for p in (workdir / "summaries").iterdir() if not p.name.endswith("_timers.json"))


def test_one_team_of_a_behavior_writes_its_files_under_the_name_before_the_question_mark(run_cli, workdir, late_env):
    config = write_yaml(workdir / "c.yaml", DEFAULT)
    env_args = ("--env-args", "first=Striker?team=0", "later=")  # (--env-args takes the rest of the line)
    assert run_cli(str(config), f"--env={late_env}", "--run-id=t", *env_args).code == 0
    assert outputs(workdir, "t") == ["Striker", "Striker.onnx"]
    assert summaries(workdir) == ["t_Striker", "t_Striker.csv"]
    configuration = yaml.safe_load((workdir / "models" / "t" / "configuration.yaml").read_text())
    assert configuration["output_names"] == {"Striker?team=0": "Striker"}
    resumed = run_cli(str(config), f"--env={late_env}", "--run-id=t", "--resume", *env_args)
    assert resumed.code == 0 and "Resumed Striker?team=0 from models/t/Striker/checkpoint-" in resumed.log
    started = run_cli(str(config), f"--env={late_env}", "--run-id=t2", "--initialize-from=t", *env_args)
    assert started.code == 0 and "Initialized Striker?team=0 from models/t/Striker/checkpoint-" in started.log
    assert outputs(workdir, "t2") == ["Striker", "Striker.onnx"]


def test_several_teams_keep_their_team_in_a_file_system_safe_suffix(run_cli, workdir, late_env):
    config = write_yaml(workdir / "c.yaml", DEFAULT)
    both = run_cli(str(config), f"--env={late_env}", "--run-id=b", "--env-args", "first=Striker?team=0,Striker?team=1",
                   "later=Goalie")
    assert both.code == 0, both.log
    assert outputs(workdir, "b") == ["Goalie", "Goalie.onnx", "Striker_team_0", "Striker_team_0.onnx",
                                     "Striker_team_1", "Striker_team_1.onnx"]
    # a second team that appears later: the first keeps the name it writes under already
    late = run_cli(str(config), f"--env={late_env}", "--run-id=l", "--env-args", "first=Striker?team=0",
                   "later=Striker?team=1")
    assert late.code == 0, late.log
    assert outputs(workdir, "l") == ["Striker", "Striker.onnx", "Striker_team_1", "Striker_team_1.onnx"]
    longer = write_yaml(workdir / "longer.yaml", DEFAULT.replace("max_steps: 300", "max_steps: 600"))
    resumed = run_cli(str(longer), f"--env={late_env}", "--run-id=l", "--resume", "--env-args",
                      "first=Striker?team=0", "later=Striker?team=1")
    assert resumed.code == 0, resumed.log
    assert "Resumed Striker?team=1 from models/l/Striker_team_1/checkpoint-" in resumed.log
    assert outputs(workdir, "l") == ["Striker", "Striker.onnx", "Striker_team_1", "Striker_team_1.onnx"]


def test_output_names():
    from palaestra.run_folders import output_names

    assert output_names(["Striker?team=1"]) == {"Striker?team=1": "Striker"}
    assert output_names(["S?team=0", "S?team=1"]) == {"S?team=0": "S_team_0", "S?team=1": "S_team_1"}
    assert output_names(["S?team=1"], {"S?team=0": "S"}) == {"S?team=0": "S", "S?team=1": "S_team_1"}
    # names a file system cannot hold, and names that would collide (also by case)
    assert output_names(["a/b:c", "S", "S?team=0", "s_team_0"]) == {
        "a/b:c": "a_b_c", "S": "S", "S?team=0": "S_team_0", "s_team_0": "s_team_0_2"}


def test_a_later_behavior_that_auto_would_put_elsewhere_is_told_the_device_was_chosen_at_the_start(
        run_cli, workdir, late_env, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU "there"; A is small: the CPU
    config = write_yaml(workdir / "c.yaml", DEFAULT.replace("hidden_units: 8", "hidden_units: 512"))
    result = run_cli(str(config), f"--env={late_env}", "--run-id=l", "--seed=0")
    assert result.code == 0, result.log
    assert "device cpu (auto: vector observations and networks under 512 hidden units" in result.log
    assert "behavior 'B' would train on cuda (auto: networks of 512 hidden units train faster on the GPU), but the " \
           "run's device, cpu, was chosen from the behaviors present at the start; pass --torch-device cuda" in result.log


def test_a_late_behavior_that_trains_in_torch_takes_the_threads_back_from_numpy(run_cli, workdir, late_env):
    # A trains on the CPU accelerator, so numpy's BLAS gets the training threads at the start; B
    # (an LSTM SAC, trained on autograd) appears later, and torch gets them (palaestra/machine.py)
    import torch

    threads = torch.get_num_threads()
    config = write_yaml(workdir / "c.yaml", CONFIG.replace("hidden_units: 16", "hidden_units: 256") + """
default:
  trainer: sac
  max_steps: 300
  summary_freq: 100
  batch_size: 16
  buffer_init_steps: 0
  hidden_units: 256
  num_layers: 1
  use_recurrent: true
  memory_size: 16
  sequence_length: 8
""")
    result = run_cli(str(config), f"--env={late_env}", "--run-id=l", "--cpu", "--torch-threads=2")
    assert result.code == 0, result.log
    assert ("threads now: torch 2, numpy's BLAS 1 (was: numpy's BLAS 2 (every behavior trains on the CPU "
            "accelerator), torch 1)") in result.log
    assert torch.get_num_threads() == threads  # and after the run, the calling process's own count again


def test_combined_environments_route_a_behavior_that_appears_later():
    from palaestra.envs.base import ActionSpec, BehaviorSpec, DecisionSteps, TerminalSteps
    from palaestra.envs.combined import CombinedEnv

    spec = BehaviorSpec(((1,),), ActionSpec(continuous_size=1))

    class Appearing:
        def __init__(self, first, later):
            self.behavior_specs, self.later, self.got = {first: spec}, later, {}

        def reset(self, parameters=None):
            pass

        def step(self):
            self.behavior_specs[self.later] = spec

        def get_steps(self, behavior):
            return DecisionSteps([np.zeros((1, 1), np.float32)], np.zeros(1, np.float32), np.zeros(1, np.int64)), \
                TerminalSteps.empty(spec)

        def set_actions(self, behavior, actions):
            self.got[behavior] = actions

        def close(self):
            pass

    first, second = Appearing("a", "late-a"), Appearing("b", "late-b")
    env = CombinedEnv([first, second])
    env.reset()
    env.step()
    assert set(env.behavior_specs) == {"a", "late-a", "b", "late-b"}
    assert len(env.get_steps("late-b")[0]) == 1
    env.set_actions("late-b", spec.action_spec.empty_actions(1))
    assert "late-b" in second.got and not first.got
    with pytest.raises(Exception, match="unknown behavior 'c'; this environment has 'a', 'late-a', 'b', 'late-b'"):
        env.get_steps("c")
