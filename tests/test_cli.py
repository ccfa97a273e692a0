"""The command line and the run lifecycle: outputs, resume, force, initialize-from, inference,
checkpoints, Ctrl+C, and a clear message with a non-zero exit for every kind of bad input."""

from __future__ import annotations

import csv
import logging
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml

from palaestra.checkpoints import CheckpointManager
from palaestra.envs.base import ActionSpec, BehaviorSpec
from tests.conftest import REPO, SHIPPED_CONFIG, interrupt_training, write_yaml

SMALL = """
1D:
  batch_size: 16
  buffer_size: 64
  hidden_units: 16
  num_layers: 1
  learning_rate: 5.0e-3
  max_steps: {max_steps}
  summary_freq: 100
  time_horizon: 16
"""


@pytest.fixture
def small_config(workdir):
    return str(write_yaml(workdir / "small.yaml", SMALL.format(max_steps=400)))


def test_help_and_version(capsys):
    from palaestra.cli import main

    for flag in ("--help", "--version"):
        with pytest.raises(SystemExit) as exit_:
            main([flag])
        assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--run-id" in out and "--num-areas" in out and "--dry-run" in out and "palaestra" in out


@pytest.mark.parametrize("flag,said", [
    ("--for", "--for: did you mean --force?"),  # a prefix is no flag: this one would empty the run's folder
    ("--init=b1", "--init: did you mean --initialize-from?"),
    ("--run_id=x", "--run_id: did you mean --run-id?"),
    ("--nu=2", "--nu: did you mean --num-envs or --num-areas?"),
])
def test_a_flag_is_taken_whole_and_a_wrong_one_gets_the_nearest(capsys, flag, said):
    from palaestra.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["c.yaml", "--env=3DBall", "--run-id=r", flag, "--dry-run"])
    assert exit_.value.code == 2 and f"unrecognized arguments: {flag} ({said})" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--trainer=sac", "--training", "--loading"])
def test_no_far_fetched_or_hidden_flag_is_offered(capsys, flag):
    # --trainer is a config key, not --inference; --train and --load only warn that they do nothing now
    from palaestra.cli import main

    with pytest.raises(SystemExit):
        main(["c.yaml", "--env=3DBall", "--run-id=r", flag, "--dry-run"])
    err = capsys.readouterr().err
    assert f"unrecognized arguments: {flag}" in err and "did you mean" not in err


def test_env_args_with_an_equals_sign_and_several_values_says_how_to_give_them(capsys):
    from palaestra.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["c.yaml", "--env=3DBall", "--env-args=a=1", "b=2"])
    assert exit_.value.code == 2 and "unrecognized arguments: b=2 (--env-args=... takes one argument; to pass " \
                                     "several, write --env-args a=1 b=2" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a mistyped flag beside it is only that
        main(["c.yaml", "--env=3DBall", "--env-args=a=1", "--seeed=3"])
    said = capsys.readouterr().err
    assert "--seeed: did you mean --seed?" in said and "--env-args=..." not in said


def test_an_empty_config_path_and_a_blank_run_id_are_named(run_cli, small_config, capsys):
    from palaestra.cli import main

    result = run_cli("", "--env=3DBall", "--dry-run")
    assert result.code == 1 and "no trainer config path given (an empty argument)" in result.log
    for run_id, said in ((" ", "' ' is blank"), ("x ", "'x ' begins or ends with a space")):
        with pytest.raises(SystemExit) as exit_:
            main([small_config, "--env=3DBall", f"--run-id={run_id}", "--dry-run"])
        assert exit_.value.code == 2 and said in capsys.readouterr().err


def test_version_is_quick_and_matches_the_installed_libraries():
    """--version reads the versions from the installed distributions, not by importing torch
    (a second or two), and they are the versions the run uses."""
    script = ("import sys\nfrom palaestra.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n"
              "    pass\nprint('torch imported' if 'torch' in sys.modules else 'torch not imported')")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60).stdout
    assert "torch not imported" in out, out
    # (a wheel's metadata may leave out the local part of torch.__version__: 2.1.2 for 2.1.2+cu121)
    assert f"torch: {torch.__version__.split('+')[0]}" in out and f"numpy: {np.__version__}" in out, out
    # the communicator APIs the Unity bridge speaks, not only its oldest
    from palaestra.envs.unity.communicator import NEWEST_API, OLDEST_API

    assert f"communicator API: {OLDEST_API[0]}.{OLDEST_API[1]}.0 to {NEWEST_API[0]}.{NEWEST_API[1]}.0" in out, out


def test_a_misspelt_key_stops_the_run_before_anything_is_written(run_cli, workdir):
    (workdir / "typo.yaml").write_text("default:\n  trainer: ppo\n  batch_sise: 64\n")
    result = run_cli("typo.yaml", "--env=3DBall", "--run-id=typo")
    assert result.code == 1 and "Traceback" not in result.log
    assert "typo.yaml: section 'default', key 'batch_sise': unknown key; did you mean 'batch_size'?" in result.log
    assert not any((workdir / folder).exists() for folder in ("models", "summaries", "results"))


def test_training_writes_every_output(run_cli, small_config, workdir):
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=r1", "--seed=1", "--debug")
    assert result.code == 0, result.log
    run_dir = workdir / "models" / "r1"
    assert (run_dir / "1D.onnx").is_file() and (run_dir / "configuration.yaml").is_file()
    assert CheckpointManager(run_dir / "1D", 5).latest() is not None
    assert list((workdir / "summaries" / "r1_1D").glob("events.out.tfevents*"))
    header = (workdir / "summaries" / "r1_1D.csv").read_text().splitlines()[0]
    assert "Environment/Cumulative Reward" in header and "Policy/Extrinsic Value Estimate" in header
    metrics = (workdir / "summaries" / "r1_1D_metrics.csv").read_text().splitlines()
    assert metrics[0].startswith("Brain name,Time to update policy")
    assert metrics[0].split(",")[4] == "Number of experiences used for training"
    assert all(int(row.split(",")[4]) > 0 for row in metrics[1:]) and len(metrics) > 1
    timers = json.loads((workdir / "summaries" / "r1_timers.json").read_text())
    assert timers["name"] == "root" and "env_step" in timers["children"]
    assert any(k.startswith("r1_1D.Environment.CumulativeReward") for k in timers["gauges"])
    assert {"timer_format_version", "palaestra_version", "torch_version", "communication_protocol_version"} <= \
        set(timers["metadata"])
    from palaestra.envs.unity.communicator import NEWEST_API

    # one version, as tools that read ML-Agents' timers parse it (a range "1.0.0 to 1.5.0" was written)
    assert timers["metadata"]["communication_protocol_version"] == f"{NEWEST_API[0]}.{NEWEST_API[1]}.0"
    # ML-Agents 0.16's line, character for character (scripts parse it): no full stop after "s"
    assert re.search(r"r1_1D: Step: \d+\. Time Elapsed: [\d.]+ s Mean Reward: -?[\d.]+\. Std of Reward: [\d.]+\. "
                     r"(Not )?Training\.", result.log)
    ort.InferenceSession(str(run_dir / "1D.onnx"))


def test_tensorboard_events_carry_mlagents_stat_names(run_cli, small_config, workdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=tb", "--seed=1").code == 0
    acc = EventAccumulator(str(workdir / "summaries" / "tb_1D"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for name in ("Environment/Cumulative Reward", "Environment/Episode Length", "Policy/Entropy",
                 "Policy/Learning Rate", "Policy/Extrinsic Reward", "Policy/Extrinsic Value Estimate",
                 "Losses/Policy Loss", "Losses/Value Loss", "Is Training"):
        assert name in tags, name


def test_a_summary_without_finished_episodes_says_so_in_ml_agents_words(caplog):
    from palaestra.stats import ConsoleWriter, StatSummary

    with caplog.at_level(logging.INFO, logger="palaestra"):
        ConsoleWriter(0.0, True).write("r_B", 500, {"Is Training": StatSummary(1.0, 0.0, 1)})
    assert caplog.messages == ["r_B: Step: 500. No episode was completed since last summary. Training."]


def test_the_hyperparameters_text_is_a_table_tensorboard_shows_row_by_row(run_cli, small_config, workdir):
    # TensorBoard renders text as Markdown: a YAML dump would run together into one line
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=tb").code == 0
    acc = EventAccumulator(str(workdir / "summaries" / "tb_1D"), size_guidance={"tensors": 0})
    acc.Reload()
    (tag,) = [t for t in acc.Tags()["tensors"] if t.startswith("Hyperparameters")]
    text = acc.Tensors(tag)[0].tensor_proto.string_val[0].decode()
    lines = text.splitlines()
    assert lines[:2] == ["| setting | value |", "|---|---|"]
    assert "| batch_size | 16 |" in lines and "| trainer | ppo |" in lines
    assert "| reward_signals | {extrinsic: {strength: 1.0, gamma: 0.99" in text


def test_a_run_without_a_stderr_trains(run_cli, small_config, workdir, monkeypatch):
    # fd 2 closed, pythonw, some service launchers: sys.stderr is None, and the progress bar must not write to it
    monkeypatch.setattr(sys, "stderr", None)
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=quiet")
    assert result.code == 0, result.log
    assert (workdir / "models/quiet/1D.onnx").is_file()


def test_an_in_process_run_puts_back_what_it_set_for_the_process(run_cli, small_config, workdir):
    # palaestra.cli.main([...]) from a user's script (docs/environments.md): the script's torch keeps its
    # threads, its warnings and logging stay its own, and its random generators go on where they were
    import random
    import threading
    import warnings

    from threadpoolctl import threadpool_info

    def process() -> dict:
        logger = logging.getLogger("palaestra")
        return {"torch threads": torch.get_num_threads(), "filters": list(warnings.filters),
                "blas": sorted((i["prefix"], i["num_threads"]) for i in threadpool_info()),
                "logger": (list(logger.handlers), logger.level, logger.propagate), "path": list(sys.path),
                "thread hook": threading.excepthook}

    def draws() -> tuple:
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # what no run here picks
    try:
        before = process()
        states = random.getstate(), np.random.get_state(), torch.get_rng_state()
        expected = draws()
        random.setstate(states[0]), np.random.set_state(states[1]), torch.set_rng_state(states[2])
        assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=r", "--seed=7").code == 0
        assert process() == before
        assert draws() == expected
    finally:
        torch.set_num_threads(threads)
    # and runs without --seed still draw their own (not from numpy's generator, which each puts back)
    seeds = set()
    for i in range(3):
        result = run_cli(small_config, "--env=Simple1DDiscrete", f"--run-id=s{i}")
        seeds |= set(re.findall(r"run 's\d' on Simple1DDiscrete, seed (\d+)", result.log))
    assert len(seeds) > 1


def test_reused_run_id_needs_resume_or_force(run_cli, small_config, workdir):
    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=r").code == 0
    again = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=r")
    assert again.code == 1 and "already used" in again.log and "--resume" in again.log and "--force" in again.log
    forced = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=r", "--force")
    assert forced.code == 0


def test_force_deletes_nothing_when_part_of_the_old_run_is_read_only(run_cli, small_config, workdir, monkeypatch):
    import palaestra.run_folders

    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=r").code == 0
    kept = sorted(p.relative_to(workdir) for p in (workdir / "models/r").rglob("*"))
    locked = workdir / "models/r/extra"
    (locked / "sub").mkdir(parents=True)
    (locked / "sub/keep").write_text("x")
    locked.chmod(0o555)  # (root may delete from it all the same: os.access is asked, so deny it there too)
    real_access = os.access
    monkeypatch.setattr(palaestra.run_folders.os, "access",
                        lambda path, mode: real_access(path, mode) and Path(path).absolute() != locked)
    try:
        forced = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=r", "--force")
    finally:
        locked.chmod(0o755)
    assert forced.code == 1
    assert f"--force cannot delete the old run in {Path('models/r')}: {Path('models/r/extra')} is read-only" in forced.log
    assert "nothing was deleted; let this user read and change it (chmod -R u+rwX" in forced.log
    locked = workdir / "models/r/extra/sub"  # a folder inside one
    forced = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=r", "--force")
    assert forced.code == 1 and f": {Path('models/r/extra/sub')} is read-only" in forced.log
    assert set(kept) <= {p.relative_to(workdir) for p in (workdir / "models/r").rglob("*")}
    # a deletion that fails all the same names the whole path and says what is left
    monkeypatch.setattr(palaestra.run_folders.os, "access", real_access)
    real_unlink = Path.unlink

    def unlink(path, missing_ok=False):
        if path.name == "1D.onnx":
            raise PermissionError(13, "Permission denied")
        real_unlink(path, missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    again = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=r", "--force")
    assert again.code == 1
    assert f"--force could not delete {Path('models/r/1D.onnx')} (Permission denied); the old run in " in again.log


def test_resume_continues_from_the_checkpoint(run_cli, workdir):
    config = str(write_yaml(workdir / "c.yaml", SMALL.format(max_steps=300)))
    assert run_cli(config, "--env=Simple1DDiscrete", "--run-id=r", "--seed=2").code == 0
    first = CheckpointManager.load(CheckpointManager(workdir / "models/r/1D", 5).latest())
    write_yaml(workdir / "c.yaml", SMALL.format(max_steps=600))
    result = run_cli(config, "--env=Simple1DDiscrete", "--run-id=r", "--resume")
    assert result.code == 0, result.log
    assert f"at step {first['algorithm']['step']}" in result.log
    last = CheckpointManager.load(CheckpointManager(workdir / "models/r/1D", 5).latest())
    assert last["algorithm"]["step"] > 600 >= first["algorithm"]["step"]
    assert last["algorithm"]["update_count"] > first["algorithm"]["update_count"]
    # the run's global step too (the samplers' and the random streams' restart point)
    assert last["global_step"] >= 600 > first["global_step"] >= 300
    # The optimizer state came back too: Adam's step counter kept counting.
    adam_steps = lambda s: max(int(v["step"]) for v in s["algorithm"]["optimizer"]["state"].values())  # noqa: E731
    assert adam_steps(last) > adam_steps(first)


def test_resume_goes_on_with_other_random_streams_than_the_first_run_s(run_cli, workdir, monkeypatch):
    # seeded as at step 0, a resumed run started its environment from the first run's start states
    # and drew the first run's action noise and mini-batches again, on every resume
    import palaestra.run

    made = []
    real = palaestra.run._make_env
    monkeypatch.setattr(palaestra.run, "_make_env", lambda options, seed, *rest: made.append(seed) or
                        real(options, seed, *rest))
    config = str(write_yaml(workdir / "c.yaml", SMALL.format(max_steps=300)))
    assert run_cli(config, "--env=Simple1DDiscrete", "--run-id=r", "--seed=2").code == 0
    step = CheckpointManager(workdir / "models/r/1D", 5).list()[-1][0]
    shutil.copytree(workdir / "models/r", workdir / "first")
    write_yaml(workdir / "c.yaml", SMALL.format(max_steps=600))
    for _ in range(2):  # the same continuation each time
        shutil.rmtree(workdir / "models/r")
        shutil.copytree(workdir / "first", workdir / "models/r")
        result = run_cli(config, "--env=Simple1DDiscrete", "--run-id=r", "--resume")
        assert result.code == 0 and f"--resume: the random streams go on from step {step}" in result.log
    assert made[0] == 2 and made[1] != 2 and made[1] == made[2]
    assert yaml.safe_load((workdir / "models/r/configuration.yaml").read_text())["run_options"]["seed"] == 2


def test_resume_with_another_summary_freq_writes_at_its_multiples(run_cli, workdir):
    config = str(write_yaml(workdir / "c.yaml", SMALL.format(max_steps=400)))
    assert run_cli(config, "--env=Simple1DDiscrete", "--run-id=r", "--seed=2").code == 0
    write_yaml(workdir / "c.yaml", SMALL.format(max_steps=1200).replace("summary_freq: 100", "summary_freq: 300"))
    assert run_cli(config, "--env=Simple1DDiscrete", "--run-id=r", "--resume").code == 0
    with open(workdir / "summaries" / "r_1D.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # the next multiple of the new summary_freq past the step resumed from, as ML-Agents derives
    # it, up to and including max_steps (whose summary still says the behavior trained)
    assert [int(r["Steps"]) for r in rows] == [100, 200, 300, 400, 600, 900, 1200]
    assert [float(r["Is Training"]) for r in rows] == [1.0] * 7


def test_a_summary_owed_when_the_run_stopped_is_written_after_resume(run_cli, workdir):
    import time

    # a run that stopped after crossing a multiple of summary_freq and before writing it (an
    # environment error, a signal): its checkpoint's next summary is behind its step
    config = str(write_yaml(workdir / "c.yaml", SMALL.format(max_steps=300)))
    assert run_cli(config, "--env=Simple1DDiscrete", "--run-id=r", "--seed=2").code == 0
    path = CheckpointManager(workdir / "models/r/1D", 5).latest()
    state = CheckpointManager.load(path)
    step = state["algorithm"]["step"]
    state["next_summary"] = 300  # crossed, and not saved as written
    CheckpointManager.save_file(path, state)
    # ... though its row was written (a second signal landed while it was): it goes, and comes again
    (workdir / "summaries" / "r_1D.csv").write_text("Steps,Is Training\n100,1.0\n200,1.0\n300,1.0\n")
    write_yaml(workdir / "c.yaml", SMALL.format(max_steps=500))
    time.sleep(1.05)  # event files are named by the second they start in: the resumed run's sorts after
    assert run_cli(config, "--env=Simple1DDiscrete", "--run-id=r", "--resume").code == 0, step
    with open(workdir / "summaries" / "r_1D.csv", newline="") as fh:
        assert [int(r["Steps"]) for r in csv.DictReader(fh)] == [100, 200, 300, 400, 500]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(workdir / "summaries" / "r_1D")).Reload().Scalars("Is Training")
    assert [e.step for e in events] == [100, 200, 300, 400, 500]  # the first run's 300 purged


def test_a_resumed_run_s_first_summary_holds_the_period_before_the_stop_too(run_cli, workdir, monkeypatch):
    # the stats and episodes since the last summary travel in the checkpoint: a run stopped at
    # 300 steps of a 1,000-step period, resumed, summarizes the episodes of both parts
    from palaestra.stats import StatsReporter
    from palaestra.trainer import BehaviorTrainer

    summaries, saved = [], []  # each summary's episode lengths; those pending at each save
    write, save = StatsReporter.write, BehaviorTrainer.save

    def writing(self, step):
        summaries.append((step, list(self.values.get("Environment/Episode Length", []))))
        return write(self, step)

    def saving(self, global_step):
        saved.append((list(self.collector.stats.lengths), sorted(self.stats.values)))
        return save(self, global_step)

    monkeypatch.setattr(StatsReporter, "write", writing)
    monkeypatch.setattr(BehaviorTrainer, "save", saving)
    config = str(write_yaml(workdir / "c.yaml", SMALL.format(max_steps=300).replace("summary_freq: 100",
                                                                                   "summary_freq: 1000")))
    assert run_cli(config, "--env=Simple1DDiscrete", "--run-id=r", "--seed=2").code == 0
    assert summaries == []  # no summary within the first run
    (first_lengths, first_keys), = saved
    assert first_lengths and "Losses/Policy Loss" in first_keys  # episodes ended, an update reported
    write_yaml(workdir / "c.yaml", SMALL.format(max_steps=1000).replace("summary_freq: 100", "summary_freq: 1000"))
    assert run_cli(config, "--env=Simple1DDiscrete", "--run-id=r", "--resume").code == 0
    (step, summarized), = summaries
    assert step == 1000 and summarized[:len(first_lengths)] == first_lengths and len(summarized) > len(first_lengths)


def test_a_summary_of_values_too_large_to_square_does_not_stop_the_run():
    # (values a checkpoint's summary so far may hold: the spread overflows to inf, not an exception)
    from palaestra.stats import StatsReporter

    reporter = StatsReporter("r_B", [])
    reporter.add("Losses/Policy Loss", [1e200, -1e200])
    reporter.add_to_sum("Environment/Summed", [1e308, 1e308])
    summary = reporter.write(100)
    assert summary["Losses/Policy Loss"].mean == 0.0 and summary["Losses/Policy Loss"].std == float("inf")
    assert summary["Environment/Summed"].mean == float("inf")


def test_a_resumed_self_play_summary_keeps_every_team_s_returns_whichever_team_learns(run_cli, workdir, monkeypatch):
    # saved while team 1 learns: the owner (team 0) resumes as the ghost's player, whose own
    # episodes count in the lengths only; the carried ones keep their returns all the same
    from palaestra.stats import StatsReporter

    counts = []  # (returns, ratings) of each summary
    write = StatsReporter.write

    def writing(self, step):
        counts.append((len(self.values.get("Environment/Cumulative Reward", [])),
                       len(self.values.get("Self-play/ELO", []))))
        return write(self, step)

    monkeypatch.setattr(StatsReporter, "write", writing)
    play = ("default:\n  batch_size: 16\n  buffer_size: 64\n  hidden_units: 16\n  num_layers: 1\n"
            "  max_steps: {steps}\n  summary_freq: 5000\n  time_horizon: 16\n"
            "  self_play:\n    save_steps: 100\n    swap_steps: 50\n    team_change: 200\n")
    config = str(write_yaml(workdir / "c.yaml", play.format(steps=300)))
    teams = "--env=palaestra.envs.builtin.simple1d:make_teams"
    assert run_cli(config, teams, "--run-id=sp", "--seed=1").code == 0
    state = CheckpointManager.load(CheckpointManager(workdir / "models/sp/1D", 5).latest())
    assert state["self_play"]["controller"]["learning_team"] == 1 and state["summary_so_far"]["episodes"]["returns"]
    write_yaml(workdir / "c.yaml", play.format(steps=1000).replace("summary_freq: 5000", "summary_freq: 1000"))
    assert run_cli(config, teams, "--run-id=sp", "--resume").code == 0
    (returns, ratings), = counts
    assert returns == ratings > len(state["summary_so_far"]["episodes"]["returns"])  # one rating per learner episode


def test_returns_a_curriculum_had_not_read_at_a_save_reach_it_after_resume(run_cli, workdir, monkeypatch):
    from palaestra.curriculum.curricula import LessonState

    write_yaml(workdir / "cur.yaml", "1D:\n  measure: reward\n  thresholds: [100.0, 100.0]\n  min_lesson_length: 100000\n"
                                     "  signal_smoothing: false\n  parameters:\n    foo: [1.0, 2.0, 3.0]\n")
    config = str(write_yaml(workdir / "c.yaml", SMALL.format(max_steps=300)))
    args = ("--env=palaestra.envs.builtin.simple1d:make", "--run-id=c", "--curriculum=cur.yaml")
    assert run_cli(config, *args, "--seed=1").code == 0
    path = CheckpointManager(workdir / "models/c/1D", 5).latest()
    state = CheckpointManager.load(path)
    state["summary_so_far"]["unread_returns"] = [123.0, 456.0]  # (as a --save-freq save before a lesson check)
    CheckpointManager.save_file(path, state)
    fed = []
    add = LessonState.add_returns
    monkeypatch.setattr(LessonState, "add_returns", lambda self, c, returns: (fed.extend(returns), add(self, c, returns))[1])
    write_yaml(workdir / "c.yaml", SMALL.format(max_steps=400))
    assert run_cli(config, *args, "--resume").code == 0
    assert fed[:2] == [123.0, 456.0]
    # a lesson --lesson forces starts with no returns: those of the checkpoint's lesson are dropped
    path = CheckpointManager(workdir / "models/c/1D", 5).latest()
    state = CheckpointManager.load(path)
    state["summary_so_far"]["unread_returns"] = [777.0]
    CheckpointManager.save_file(path, state)
    fed.clear()
    write_yaml(workdir / "c.yaml", SMALL.format(max_steps=500))
    result = run_cli(config, *args, "--resume", "--lesson=1")
    assert result.code == 0 and "--lesson 1 replaces lesson 0 of the checkpoint" in result.log
    assert 777.0 not in fed


def test_stats_since_the_last_summary_that_do_not_read_are_passed_over_on_resume(run_cli, workdir):
    config = str(write_yaml(workdir / "c.yaml", SMALL.format(max_steps=300)))
    assert run_cli(config, "--env=Simple1DDiscrete", "--run-id=r", "--seed=2").code == 0
    path = CheckpointManager(workdir / "models/r/1D", 5).latest()
    state = CheckpointManager.load(path)
    state["summary_so_far"] = {"values": {"Losses/Policy Loss": ["much"]}, "summed": [], "episodes": {}}
    CheckpointManager.save_file(path, state)
    write_yaml(workdir / "c.yaml", SMALL.format(max_steps=500))
    result = run_cli(config, "--env=Simple1DDiscrete", "--run-id=r", "--resume")
    assert result.code == 0, result.log
    assert "holds stats since its last summary that do not read; the next summary starts from the resume" in result.log


def test_resume_without_a_previous_run(run_cli, small_config):
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=none", "--resume")
    assert result.code == 1 and "no previous run 'none'" in result.log


def test_initialize_from_copies_weights_at_step_zero(run_cli, small_config, workdir):
    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=base", "--seed=1").code == 0
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=child", "--initialize-from=base")
    assert result.code == 0 and "Initialized 1D from" in result.log
    assert re.search(r"child_1D: Step: 1\d\d\. ", result.log)  # counting restarted at 0
    missing = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=c2", "--initialize-from=nothing")
    assert missing.code == 1 and "no run 'nothing'" in missing.log


def test_initialize_from_with_resume_is_not_read_so_it_need_not_exist(run_cli, small_config):
    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=r", "--seed=1").code == 0
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=r", "--resume", "--initialize-from=nothing",
                     "--dry-run")
    assert result.code == 0, result.log
    assert "--initialize-from nothing has no effect with --resume" in result.log


def test_inference_runs_the_saved_policy_without_writing(run_cli, small_config, workdir):
    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=inf", "--seed=1").code == 0
    before = sorted(p.name for p in (workdir / "models/inf/1D").iterdir())
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=inf", "--inference")
    assert result.code == 0 and "Loaded 1D" in result.log and "Not Training." in result.log
    assert sorted(p.name for p in (workdir / "models/inf/1D").iterdir()) == before
    # a run with no model at all (a mistyped run-id) is refused: it played an untrained policy, exit 0
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=inff", "--inference")
    assert result.code == 1 and "--inference: run 'inff' has no trained model for any behavior (no " in result.log
    assert "running an untrained policy" not in result.log  # (it said so, then refused)
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=inff", "--inference", "--initialize-from=inf")
    assert result.code == 0 and "Initialized 1D from" in result.log


def test_inference_names_the_behavior_without_a_model_when_another_has_one(run_cli, workdir):
    config = write_yaml(workdir / "walls.yaml", """
        default:
          trainer: ppo
          batch_size: 16
          buffer_size: 64
          max_steps: 100
          summary_freq: 100
    """)
    assert run_cli(str(config), "--env=WallJump", "--run-id=w", "--seed=1").code == 0
    for path in (workdir / "models/w/BigWallJump").glob("checkpoint-*.pt"):
        path.unlink()
    for resume in ([], ["--resume"]):  # with --resume too, as alone (docs/outputs.md)
        result = run_cli(str(config), "--env=WallJump", "--run-id=w", "--inference", *resume)
        assert result.code == 0 and "Loaded SmallWallJump" in result.log, result.log
        assert "--inference: no trained model for BigWallJump; running an untrained policy" in result.log
        assert "no trained model for SmallWallJump" not in result.log
    # --initialize-from supplies the behavior the run has no model of, with --resume too
    assert run_cli(str(config), "--env=WallJump", "--run-id=other", "--seed=2").code == 0
    result = run_cli(str(config), "--env=WallJump", "--run-id=w", "--inference", "--resume", "--initialize-from=other")
    assert result.code == 0 and "Loaded SmallWallJump" in result.log and "Initialized BigWallJump from" in result.log
    assert "has no effect with --resume" not in result.log


def test_resume_with_inference_runs_the_saved_policy_from_step_zero_and_changes_nothing(run_cli, small_config,
                                                                                          workdir):
    # ML-Agents 0.16's way to run a trained model; it once resumed the step count (running no step
    # after a finished run) and set a damaged newest checkpoint aside
    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=ri", "--seed=1", "--save-freq=200").code == 0
    folder = workdir / "models/ri/1D"
    newest = max(folder.glob("checkpoint-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    newest.write_bytes(newest.read_bytes()[:100])  # damaged
    before = sorted(p.name for p in folder.iterdir())
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=ri", "--resume", "--inference")
    assert result.code == 0 and "Loaded 1D" in result.log and "Resumed" not in result.log
    assert re.search(r"ri_1D: Step: 1\d\d\. .*Not Training\.", result.log)  # counted from 0
    assert sorted(p.name for p in folder.iterdir()) == before


def test_a_second_process_on_a_run_in_use_is_refused(run_cli, small_config, workdir):
    from palaestra.run_folders import RunLock

    holder = RunLock(workdir / "models" / "busy")  # as the first process would hold it
    try:
        result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=busy", "--force")
    finally:
        holder.release()
    assert result.code == 1 and "Traceback" not in result.log
    assert f"run 'busy' is in use by another process (pid {os.getpid()})" in result.log
    assert not (workdir / "models/busy/1D").exists()  # nothing of the first run was deleted or mixed in
    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=busy").code == 0  # free again


def test_a_file_system_that_cannot_lock_trains_unlocked_with_a_warning(run_cli, small_config, workdir, monkeypatch):
    # NFS without its lock daemon answers flock with ENOLCK: that is no other process holding the run
    import errno

    from palaestra import run_folders

    def cannot_lock(handle):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_folders, "_exclusive_lock", lambda: cannot_lock)
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=nfs")
    assert result.code == 0 and "is in use by another process" not in result.log, result.log
    assert "Could not lock" in result.log and "(No locks available)" in result.log and "--run-id nfs" in result.log
    assert (workdir / "models/nfs/1D.onnx").exists()


def test_resume_of_a_run_in_use_leaves_its_saves_in_progress_alone(run_cli, small_config, workdir):
    # the temp file of a save under way in the process that trains the run: a second process
    # refused by the lock must not have removed it first (nor set damaged checkpoints aside)
    from palaestra.run_folders import RunLock

    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=busy").code == 0
    saving = workdir / "models/busy/.1D.onnx.abcd1234.tmp"
    saving.write_bytes(b"half a model")
    holder = RunLock(workdir / "models" / "busy")
    try:
        for flags in (["--resume"], ["--force"], ["--resume", "--dry-run"]):  # a dry run makes the same check
            result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=busy", *flags)
            assert result.code == 1 and "is in use by another process" in result.log
            assert "Removed" not in result.log and saving.exists()
    finally:
        holder.release()


@pytest.mark.parametrize("written", ["4294967296", "-7", "1.5", "true", "'five'"])
def test_resume_with_a_recorded_seed_that_is_not_one_warns_and_draws_a_new_one(run_cli, workdir, written):
    config = str(write_yaml(workdir / "c.yaml", SMALL.format(max_steps=200)))
    assert run_cli(config, "--env=Simple1DDiscrete", "--run-id=bad", "--seed=5").code == 0
    path = workdir / "models/bad/configuration.yaml"
    path.write_text(re.sub(r"(?m)^(\s+seed:) 5$", rf"\1 {written}", path.read_text(), count=1))
    write_yaml(workdir / "c.yaml", SMALL.format(max_steps=400))
    result = run_cli(config, "--env=Simple1DDiscrete", "--run-id=bad", "--resume")
    assert result.code == 0 and "Traceback" not in result.log, result.log
    assert "models/bad/configuration.yaml: run_options.seed is" in result.log, result.log
    assert "not a seed (an integer from 0 to 4294967295); --resume uses a new random seed (give --seed" in result.log
    # with --seed given, the advice to give one is not
    path.write_text(re.sub(r"(?m)^(\s+seed:) \d+$", rf"\1 {written}", path.read_text(), count=1))
    result = run_cli(config, "--env=Simple1DDiscrete", "--run-id=bad", "--resume", "--seed=6")
    assert "not a seed (an integer from 0 to 4294967295)" in result.log and "give --seed" not in result.log


def test_resume_keeps_the_runs_seed_and_force_starts_the_debug_metrics_anew(run_cli, small_config, workdir):
    import yaml

    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=sd", "--seed=5", "--debug").code == 0
    metrics = workdir / "summaries/sd_1D_metrics.csv"
    rows = len(metrics.read_text().splitlines())
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=sd", "--resume",
                     "--debug")
    assert result.code == 0 and "--resume: seed 5, the one the run recorded" in result.log
    assert re.search(r"every behavior has already trained past its max_steps \(1D \d+ of 400\): nothing is left to "
                     r"train; raise max_steps", result.log), result.log
    recorded = yaml.safe_load((workdir / "models/sd/configuration.yaml").read_text())["run_options"]["seed"]
    device = yaml.safe_load((workdir / "models/sd/configuration.yaml").read_text())["run_options"]["torch_device"]
    assert device in ("cpu", "cuda")  # the device auto chose, not "auto"
    assert recorded == 5
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=sd", "--resume", "--seed=7")
    assert "--resume: --seed 7 replaces the seed 5 the run recorded" in result.log, result.log
    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=sd", "--force", "--debug").code == 0
    assert len(metrics.read_text().splitlines()) == rows  # the old run's rows are gone
    # started over without --debug: no file of the discarded run is left for a later --resume --debug
    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=sd", "--force").code == 0
    assert not metrics.exists()


@pytest.mark.parametrize("where", ["reset", "step"])
def test_a_dry_run_names_what_the_environment_raised_in_one_line(run_cli, workdir, small_config, where):
    (workdir / "raising.py").write_text(
        "from palaestra.envs.builtin import BUILTIN_ENVS\n\n\n"
        "class Raising(BUILTIN_ENVS['Simple1DDiscrete']):\n"
        f"    def {where}(self, *args):\n"
        "        raise ValueError('boom')\n\n\n"
        "def make():\n"
        "    return Raising()\n")
    result = run_cli(small_config, "--env=raising:make", "--run-id=d", "--dry-run")
    assert result.code == 1 and "Traceback" not in result.log, result.log
    assert "--dry-run: the environment raised ValueError in its first reset or step: boom" in result.log


@pytest.mark.parametrize("name", ["../other/1D", "/tmp/1D", "..", "a:b", ["1D"], 5])
def test_a_recorded_output_name_that_leaves_the_runs_folder_is_refused(run_cli, small_config, workdir, name):
    import yaml

    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=o").code == 0
    path = workdir / "models/o/configuration.yaml"
    configuration = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(configuration | {"output_names": {"1D": name}}))
    def files():
        return sorted((p, p.stat().st_mtime_ns) for p in workdir.rglob("*") if p.is_file() and p.name != ".lock")

    before = files()
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=o", "--resume")
    assert result.code == 1 and "Traceback" not in result.log
    assert f"models/o/configuration.yaml: output_names['1D'] is {name!r}, which is not a file name" in result.log
    assert files() == before  # nothing written, inside the run's folder or outside
    # (a hand edit that is no mapping at all is named too, not read as a run without names)
    path.write_text(yaml.safe_dump(configuration | {"output_names": 5}))
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=o", "--resume")
    assert result.code == 1 and "configuration.yaml: output_names is 5; expected a mapping" in result.log


def test_an_unreadable_run_configuration_is_said_and_resume_goes_on(run_cli, small_config, workdir):
    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=u", "--seed=5").code == 0
    (workdir / "models/u/configuration.yaml").write_text("run_options: [\n")
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=u", "--resume")
    assert result.code == 0, result.log
    assert result.log.count("models/u/configuration.yaml cannot be read (") == 1
    assert "the seed and output names it recorded are not used" in result.log


def test_a_start_up_interrupted_before_training_leaves_the_run_id_free(run_cli, small_config, workdir, monkeypatch):
    import palaestra.run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    acting_workers = palaestra.run._acting_workers
    monkeypatch.setattr(palaestra.run, "_acting_workers", interrupted)
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=early")
    assert result.code == 130 and "nothing was trained" in result.log
    monkeypatch.setattr(palaestra.run, "_acting_workers", acting_workers)  # (undo() would leave the workdir too)
    again = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=early")
    assert again.code == 0, again.log  # no --force needed


def test_each_summary_holds_only_its_own_period_s_values():
    # not a running mean since the start (a missed reset passed every test that read one summary)
    from types import SimpleNamespace

    from palaestra.stats import StatsReporter

    written = []
    reporter = StatsReporter("c", [SimpleNamespace(write=lambda category, step, summary: written.append(summary))])
    reporter.add("Environment/Cumulative Reward", [1.0, 3.0])
    reporter.write(100)
    reporter.add("Environment/Cumulative Reward", 10.0)
    reporter.write(200)
    reporter.write(300)
    first, second, third = (s.get("Environment/Cumulative Reward") for s in written)
    assert (first.mean, first.std, first.count) == (2.0, 1.0, 2)
    assert (second.mean, second.count) == (10.0, 1) and third is None


def test_keep_checkpoints_keeps_the_newest_ones(tmp_path):
    # a pruning that kept the oldest and the newest passed the count check below
    manager = CheckpointManager(tmp_path, 2)
    for step in (100, 200, 300, 400, 500):
        manager.save({"step": step}, step)
    assert [step for step, _ in manager.list()] == [400, 500]


def test_keep_checkpoints_deletes_the_oldest(run_cli, workdir):
    config = str(write_yaml(workdir / "c.yaml", SMALL.format(max_steps=1000)))
    assert run_cli(config, "--env=Simple1DDiscrete", "--run-id=k", "--save-freq=100", "--keep-checkpoints=2").code == 0
    found = CheckpointManager(workdir / "models/k/1D", 2).list()
    assert len(found) == 2 and found[-1][0] > 1000
    # 0 keeps every one (ML-Agents passed it to TensorFlow's saver, where 0 deletes none)
    assert run_cli(config, "--env=Simple1DDiscrete", "--run-id=all", "--save-freq=100", "--keep-checkpoints=0").code == 0
    assert len(CheckpointManager(workdir / "models/all/1D", 0).list()) >= 10


def test_seed_makes_runs_repeatable(run_cli, small_config, workdir):
    def final_weights(run_id):
        assert run_cli(small_config, "--env=Simple1DContinuous", f"--run-id={run_id}", "--seed=5").code == 0
        return CheckpointManager.load(CheckpointManager(workdir / f"models/{run_id}/1D", 5).latest())["algorithm"]["policy"]

    a, b = final_weights("s1"), final_weights("s2")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_corrupt_checkpoint_is_a_clear_error(run_cli, small_config, workdir):
    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=c").code == 0
    latest = CheckpointManager(workdir / "models/c/1D", 5).latest()
    latest.write_bytes(latest.read_bytes()[:100])
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=c", "--resume")
    assert result.code == 1 and f"models/c/1D/{latest.name} is truncated" in result.log
    assert "no intact checkpoint of behavior '1D' remains" in result.log and "--force" in result.log
    assert "or train under another --run-id" in result.log  # (--force empties the folder: not the only way)
    # The failed run closed its TensorBoard writer: no writer thread is left behind.
    import threading

    assert not [t for t in threading.enumerate() if "Writer" in type(t).__name__]
    # --inference: the exported model still plays, and the command that plays it runs as given
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=c", "--inference", "--env-args",
                     "max_episode_steps=50")
    command = "palaestra-record --env=Simple1DDiscrete --policy=models/c/1D.onnx --env-args max_episode_steps=50"
    assert result.code == 1 and (f"its exported model models/c/1D.onnx still plays in Unity and with {command}; or "
                                 "train the run again under another --run-id") in result.log, result.log
    from palaestra.demos.record import main as record_main

    assert record_main(command.split()[1:] + ["--episodes=1", f"--out={workdir / 'played'}"]) == 0


def test_the_record_command_is_offered_only_where_it_runs_as_given():
    from types import SimpleNamespace

    from palaestra.run_folders import _record_command

    trainer = SimpleNamespace(onnx_path="models/r/B.onnx")
    assert _record_command(SimpleNamespace(env="my env", env_args=["a=1"]), trainer) == \
        " and with palaestra-record '--env=my env' --policy=models/r/B.onnx --env-args a=1"
    # the Editor has no --env; a build's own flags ('-logFile -') are no KEY=VALUE palaestra-record takes
    assert _record_command(SimpleNamespace(env=None, env_args=[]), trainer) == ""
    assert _record_command(SimpleNamespace(env="Builds/B.x86_64", env_args=["-logFile", "-"]), trainer) == ""


def test_checkpoint_of_another_network_is_a_clear_error(run_cli, small_config, workdir):
    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=c").code == 0
    result = run_cli(small_config, "--env=Simple1DContinuous", "--run-id=c", "--resume")
    assert result.code == 1 and "was trained for" in result.log


def test_dry_run_prints_settings_and_trains_nothing(run_cli, workdir):
    result = run_cli(str(SHIPPED_CONFIG), "--env=3DBall", "--dry-run")
    assert result.code == 0 and "batch_size: 64" in result.out and "nothing was trained" in result.out
    assert not (workdir / "models").exists() and not (workdir / "summaries").exists()
    # a deprecated flag's warning, said while the flags are read, is counted too
    result = run_cli(str(SHIPPED_CONFIG), "--env=3DBall", "--dry-run", "--train")
    assert "--train is deprecated" in result.log and "1 warning(s) above" in result.out


def test_an_image_encoder_for_a_behavior_without_images_is_a_warning(run_cli, workdir):
    # in the behavior's own section only: a default section's settings apply to many behaviors
    write_yaml(workdir / "own.yaml", "3DBall:\n  vis_encode_type: nature_cnn\n")
    write_yaml(workdir / "default.yaml", "default:\n  vis_encode_type: nature_cnn\n")
    own, default = run_cli("own.yaml", "--env=3DBall", "--dry-run"), run_cli("default.yaml", "--env=3DBall", "--dry-run")
    assert own.code == default.code == 0
    assert ("behavior '3DBall': vis_encode_type (set in section '3DBall') has no effect: the behavior has no image "
            "observations" in own.log and "1 warning(s) above" in own.out)
    assert "has no effect" not in default.log and "0 warning(s) above" in default.out


@pytest.mark.parametrize("args,message", [
    (["missing.yaml", "--env=3DBall"], "does not exist"),
    (["{cfg}", "--env=NoSuchEnv"], "unknown environment 'NoSuchEnv'"),
    (["{cfg}", "--env=NoSuchEnv", "--num-envs=2"], "environment worker 0 (pid"),
    (["{cfg}", "--env=3DBall", "--sampler={cfg}"], "this is a trainer config ('default:' and behavior sections of trainer settings): give it as the first argument; --sampler takes"),
    (["{cfg}", "--env=3DBall", "--curriculum=nope.yaml"], "does not exist"),
    (["{cfg}", "--num-envs=2"], "--num-envs 2 needs a Unity build (--env=<path>)"),
    (["{cfg}", "--env=Builds/Gone.x86_64"], "--env=Builds/Gone.x86_64: no Unity build found"),
    (["{cfg}", "--env=3DBall", "--resume", "--force"], "contradict"),
    (["{other}", "--env=3DBall"], "no settings for behavior(s) 3DBall: add a section"),
])
def test_bad_command_lines(run_cli, workdir, args, message):
    cfg = write_yaml(workdir / "c.yaml", "3DBall:\n  batch_size: 64\n  buffer_size: 640\n")
    other = write_yaml(workdir / "o.yaml", "Basic:\n  batch_size: 32\n  buffer_size: 256\n")
    result = run_cli(*[a.format(cfg=cfg, other=other) for a in args])
    assert result.code == 1 and message in result.log, result.log


def test_a_shipped_config_named_outside_the_checkout_is_pointed_at(run_cli, workdir):
    # the README's command (config/trainer_config.yaml) typed in another folder: where the file is
    from palaestra.shipped_files import CHECKOUT

    result = run_cli("config/trainer_config.yaml", "--env=3DBall", "--run-id=r")
    assert result.code == 1 and (f"trainer config file 'config/trainer_config.yaml' does not exist in {workdir}; "
                                 f"Palaestra's checkout ships {CHECKOUT / 'config/trainer_config.yaml'}: give that "
                                 f"path, or run from {CHECKOUT}") in result.log, result.log
    result = run_cli(str(CHECKOUT / "config/trainer_config.yaml"), "--env=3DBall", "--run-id=r",
                     "--sampler=config/samplers/3dball_randomize.yaml")
    assert result.code == 1 and f"ships {CHECKOUT / 'config/samplers/3dball_randomize.yaml'}" in result.log
    for other in ("config/no_such.yaml", "pyproject.toml"):  # not one it ships: nothing more
        result = run_cli(other, "--env=3DBall", "--run-id=r")
        assert result.code == 1 and f"'{other}' does not exist\n" in result.log + "\n", result.log


@pytest.mark.parametrize("case,entry_point,message", [
    ("missing", "palaestra_no_such_module:Maze", "ModuleNotFoundError: No module named 'palaestra_no_such_module'"),
    ("display", "failing_envs_display:needs_a_display", "RuntimeError: no display"),
])
def test_a_gymnasium_environment_that_fails_to_start_is_one_line(run_cli, workdir, case, entry_point, message):
    # whatever the environment's own code raises while Gymnasium makes it (a module per case:
    # an imported module stays imported, with the registrations it made)
    module, name = f"failing_envs_{case}", f"PalaestraFailing-{case}-v0"
    (workdir / f"{module}.py").write_text(
        "import gymnasium as gym\n"
        "def needs_a_display(**kwargs):\n    raise RuntimeError('no display')\n"
        f"gym.register({name!r}, entry_point={entry_point!r})\n")
    cfg = write_yaml(workdir / "c.yaml", "default:\n  max_steps: 100\n")
    result = run_cli(str(cfg), f"--env={module}:{name}")
    assert result.code == 1, result.log
    assert f"could not create Gymnasium environment '{name}': {message}" in result.log, result.log
    assert "Traceback" not in result.log


@pytest.mark.parametrize("env,flags", [
    ("failing_envs_deep:PalaestraFailing-deep-v0", ()),
    ("failing_envs_deep:PalaestraFailing-deep-v0", ("--num-envs=2",)),
    ("failing_envs_import:make", ()),  # the module fails while it is imported
    ("failing_envs_typeerror:PalaestraFailing-typeerror-v0", ()),  # a TypeError in the constructor
], ids=["here", "in-a-worker", "importing", "typeerror"])
def test_debug_shows_where_the_environments_own_code_failed(run_cli, workdir, env, flags):
    # the one-line error names the failure; --debug adds the traceback of the user's code, also
    # from a worker process
    (workdir / "failing_envs_deep.py").write_text(
        "import gymnasium as gym\n"
        "def open_window():\n    raise RuntimeError('no display')\n"
        "def needs_a_display(**kwargs):\n    open_window()\n"
        "gym.register('PalaestraFailing-deep-v0', entry_point='failing_envs_deep:needs_a_display')\n")
    (workdir / "failing_envs_import.py").write_text(
        "def open_window():\n    raise RuntimeError('no display')\nopen_window()\ndef make():\n    pass\n")
    (workdir / "failing_envs_typeerror.py").write_text(
        "import gymnasium as gym\n"
        "def open_window():\n    raise TypeError('no display')\n"
        "def needs_a_display(**kwargs):\n    open_window()\n"
        "gym.register('PalaestraFailing-typeerror-v0', entry_point='failing_envs_typeerror:needs_a_display')\n")
    cfg = write_yaml(workdir / "c.yaml", "default:\n  max_steps: 100\n")
    args = [str(cfg), f"--env={env}", *flags]
    plain = run_cli(*args)
    assert plain.code == 1 and "no display" in plain.log and "Traceback" not in plain.log, plain.log
    debug = subprocess.run([sys.executable, "-m", "palaestra.cli", *args, "--debug"], cwd=workdir,
                           capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr, debug.stderr
    assert "in open_window" in debug.stderr and f"{env.partition(':')[0]}.py" in debug.stderr, debug.stderr


EXITING_ENV = """
import sys
import gymnasium as gym
import numpy as np

class Exiting(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)
    steps = 0

    def reset(self, seed=None, options=None):
        return np.zeros(2, np.float32), {}

    def step(self, action):
        Exiting.steps += 1
        if Exiting.steps == 300:
            sys.exit()
        return np.zeros(2, np.float32), 0.0, False, Exiting.steps % 20 == 0, {}

def make():
    return Exiting()

def make_and_quit():
    raise SystemExit(2)

class ExitingOnClose(Exiting):
    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, True, {}

    def close(self):
        sys.exit(0)

def make_quitting_on_close():
    return ExitingOnClose()

class FailingOnClose(ExitingOnClose):
    def close(self):
        raise RuntimeError("boom in close")

def make_failing_on_close():
    return FailingOnClose()
"""


def test_an_environment_calling_sys_exit_when_closed_after_the_run_is_a_warning(run_cli, workdir):
    (workdir / "exiting_env_close.py").write_text(EXITING_ENV)
    cfg = write_yaml(workdir / "c.yaml", "default:\n  max_steps: 200\n  batch_size: 16\n  buffer_size: 64\n")
    result = run_cli(str(cfg), "--env=exiting_env_close:make_quitting_on_close", "--run-id=x")
    assert result.code == 0 and "called sys.exit(0) while it was closed" in result.log, result.log
    assert "nothing was trained" not in result.log and list((workdir / "models/x").glob("*.onnx"))


def test_an_environment_failing_when_closed_is_a_warning_that_hides_nothing(run_cli, workdir):
    (workdir / "exiting_env_close.py").write_text(EXITING_ENV)
    cfg = write_yaml(workdir / "c.yaml", "default:\n  max_steps: 200\n  batch_size: 16\n  buffer_size: 64\n")
    result = run_cli(str(cfg), "--env=exiting_env_close:make_failing_on_close", "--run-id=x", "--num-areas=2")
    assert result.code == 0, result.log
    assert "the environment failed while it was closed (RuntimeError: boom in close); the run's results stand" \
        in result.log and "Traceback" not in result.log
    # the same in environment workers
    result = run_cli(str(cfg), "--env=exiting_env_close:make_failing_on_close", "--run-id=z", "--num-envs=2")
    assert result.code == 0, result.log
    assert "environment worker 1 failed while its environment was closed (RuntimeError: boom in close)" in result.log
    # a config error stays the error the run reports
    wrong = write_yaml(workdir / "w.yaml", "Nobody:\n  max_steps: 200\n")
    result = run_cli(str(wrong), "--env=exiting_env_close:make_failing_on_close", "--run-id=y")
    assert result.code != 0 and "no settings for behavior(s)" in result.log and "Traceback" not in result.log, result.log


@pytest.mark.parametrize("factory,message,saved", [
    ("make", "training stopped: EnvError: the environment's code called sys.exit(None) during training", True),
    ("make_and_quit", "the environment's code called sys.exit(2) while the run started; nothing was trained", False),
])
def test_an_environment_calling_sys_exit_is_a_failure_with_a_message(run_cli, workdir, factory, message, saved):
    (workdir / f"exiting_env_{factory}.py").write_text(EXITING_ENV)
    cfg = write_yaml(workdir / "c.yaml", "default:\n  max_steps: 100000\n  batch_size: 16\n  buffer_size: 64\n"
                                         "  summary_freq: 100\n")
    result = run_cli(str(cfg), f"--env=exiting_env_{factory}:{factory}", "--run-id=x")
    assert result.code == 1 and message in result.log, result.log
    assert "Traceback" not in result.log
    assert (workdir / "models/x").is_dir() == saved
    if saved:  # what was trained is kept
        assert list((workdir / "models/x").glob("*.onnx")), list((workdir / "models/x").iterdir())


@pytest.mark.parametrize("content,message", [
    ("3DBall:\n  trainer: offline_bc\n  demo_path: d.demo\n  use_recurrent: true\n",
     "use_recurrent: true (LSTM policies) is built for trainer"),
    ("3DBall:\n  trainer: offline_bc\n", "trainer 'offline_bc' needs demo_path"),
])
def test_unsupported_config_features_are_rejected_before_training(run_cli, workdir, content, message):
    cfg = write_yaml(workdir / "c.yaml", content)
    result = run_cli(str(cfg), "--env=3DBall")
    assert result.code == 1 and message in result.log, result.log
    assert not (workdir / "models").exists()


def _cli(*args, cwd, **kwargs):
    return subprocess.run([sys.executable, "-m", "palaestra.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, **kwargs)


@pytest.mark.parametrize("content,message", [
    ("default:\n  batch_size: [1, 2\n", "YAML syntax error at line"),
    ("3DBall:\n  batch_size: many\n", "key 'batch_size': expected an integer >= 1, got 'many'"),
    ("3DBall:\n  lambd: 7\n", "key 'lambd': expected a number in [0, 1], got 7"),
    ("3DBall:\n  trainer: a2c\n", "key 'trainer': expected one of ppo, sac"),
])
def test_bad_config_files_exit_nonzero_without_traceback(tmp_path, content, message):
    (tmp_path / "c.yaml").write_text(content)
    proc = _cli("c.yaml", "--env=3DBall", cwd=tmp_path)
    assert proc.returncode == 1
    assert message in proc.stderr and "c.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ctrl_c_saves_and_exports_then_resume_continues(tmp_path):
    (tmp_path / "c.yaml").write_text(SMALL.format(max_steps=10_000_000))
    code, err, seconds = interrupt_training(tmp_path, "c.yaml", "--env=Simple1DDiscrete", "--run-id=int")
    assert code == 130, err  # stopped by a signal, as a shell reports one; everything saved
    assert "Stopped by SIGINT: --resume continues from the checkpoint just saved" in err
    assert seconds < 30
    assert "Traceback" not in err
    assert (tmp_path / "models/int/1D.onnx").is_file()
    saved = CheckpointManager(tmp_path / "models/int/1D", 5).latest()
    assert saved is not None
    step = CheckpointManager.load(saved)["algorithm"]["step"]
    (tmp_path / "c.yaml").write_text(SMALL.format(max_steps=step + 200))
    resumed = _cli("c.yaml", "--env=Simple1DDiscrete", "--run-id=int", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0 and f"at step {step}" in resumed.stderr


class _CrashingEnv(gym.Env):
    """A Gymnasium environment that fails after a number of steps, as a broken build would."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,))
        self.action_space = gym.spaces.Discrete(2)
        self.steps = 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.steps += 1
        if self.steps > 300:
            raise RuntimeError("simulated crash in the environment")
        return np.zeros(2, np.float32), 1.0, self.steps % 20 == 0, False, {}

    def close(self):
        pass


def test_environment_crash_saves_the_model_and_exits_with_a_message(run_cli, workdir):
    gym.register("PalaestraCrash-v0", entry_point=_CrashingEnv)
    try:
        config = write_yaml(workdir / "c.yaml", SMALL.replace("1D:", "PalaestraCrash-v0:").format(max_steps=5000))
        result = run_cli(str(config), "--env=PalaestraCrash-v0", "--run-id=crash")
    finally:
        gym.registry.pop("PalaestraCrash-v0")
    assert result.code == 1
    assert "simulated crash in the environment" in result.log and "the model was saved first" in result.log
    assert (workdir / "models/crash/PalaestraCrash-v0.onnx").is_file()
    assert CheckpointManager(workdir / "models/crash/PalaestraCrash-v0", 5).latest() is not None


def test_unwritable_output_folder_is_a_clear_error(run_cli, small_config, workdir):
    (workdir / "models").write_text("a file where the models folder should be")
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=x")
    assert result.code == 1 and "cannot read or write" in result.log


def test_a_behavior_past_max_steps_stops_learning_while_others_go_on(tmp_path):
    from palaestra.envs.builtin import BUILTIN_ENVS
    from palaestra.settings import ExtrinsicSettings, TrainerSettings
    from palaestra.stats import StatsReporter
    from palaestra.trainer import BehaviorTrainer

    env = BUILTIN_ENVS["Simple1DDiscrete"](seed=0)
    settings = TrainerSettings(batch_size=16, buffer_size=32, hidden_units=8, num_layers=1, max_steps=100,
                               time_horizon=8, summary_freq=10_000, reward_signals={"extrinsic": ExtrinsicSettings()})
    trainer = BehaviorTrainer("1D", env.behavior_specs["1D"], settings, torch.device("cpu"), StatsReporter("t", []),
                              CheckpointManager(tmp_path, 1), tmp_path, training=True)
    env.reset()
    updates_at_max_steps = None
    for _ in range(400):  # far past max_steps, as when another behavior is still training
        decision, terminal = env.get_steps("1D")
        env.set_actions("1D", trainer.act(decision, terminal))
        env.step()
        trainer.advance()
        if not trainer.learning and updates_at_max_steps is None:
            updates_at_max_steps = trainer.algorithm.update_count
    assert trainer.step > 300 and updates_at_max_steps and updates_at_max_steps >= 2
    assert trainer.algorithm.update_count == updates_at_max_steps
    written = []
    trainer.stats.writers.append(type("Capture", (), {"write": lambda self, c, s, v: written.append(v)})())
    trainer.write_summary(trainer.step)  # the summary says it no longer learns (ML-Agents' "Is Training")
    assert written[0]["Is Training"].mean == 0.0
    trainer.write_summary(100)  # the one labelled max_steps covers steps it trained in
    assert written[1]["Is Training"].mean == 1.0


@pytest.mark.parametrize("flag,message", [
    ("--max-lifetime-restarts=-2", "expected an integer >= 0, or -1 for no limit, got -2"),
    ("--restarts-rate-limit-n=x", "expected an integer, got 'x'"),
    ("--restarts-rate-limit-period-s=0", "expected an integer in [1, 2147483647], got 0"),
    ("--base-port=70000", "expected a port number in [1, 65535], got 70000"),
    ("--acting=gpu", "argument --acting: invalid choice: 'gpu' (choose from"),
    ("--seed=4294967296", "argument --seed: expected an integer in [0, 4294967295], or -1 for a random seed, got "
                          "4294967296"),
    ("--seed=-2", "or -1 for a random seed, got -2"),
    ("--seed=" + "9" * 5000, "got 99999999999999999999...9999999999 (5000 characters)"),
    ("--num-envs=0", "argument --num-envs: expected an integer in [1, 1024], got 0"),
    ("--num-envs=100000", "argument --num-envs: expected an integer in [1, 1024], got 100000"),
    ("--num-areas=1" + "0" * 30, "argument --num-areas: expected an integer in [1, 1024]"),
    ("--width=0", "argument --width: expected an integer in [1, 2147483647], got 0"),
    ("--height=2147483648", "argument --height: expected an integer in [1, 2147483647]"),
    ("--target-frame-rate=-2", "argument --target-frame-rate: expected an integer in [-1, 2147483647], got -2"),
    ("--capture-frame-rate=-1", "argument --capture-frame-rate: expected an integer in [0, 2147483647], got -1"),
    ("--time-scale=nan", "argument --time-scale: expected a number > 0 that a 32-bit float holds (about 1.4e-45 to 3.4e38), got nan"),
    ("--time-scale=1e400", "argument --time-scale: expected a number > 0 that a 32-bit float holds (about 1.4e-45 to 3.4e38), got inf"),
    ("--time-scale=1e40", "argument --time-scale: expected a number > 0 that a 32-bit float holds (about 1.4e-45 to 3.4e38), got 1e+40"),
    ("--time-scale=0", "argument --time-scale: expected a number > 0 that a 32-bit float holds (about 1.4e-45 to 3.4e38), got 0.0"),
    ("--time-scale=1e-50", "argument --time-scale: expected a number > 0 that a 32-bit float holds (about 1.4e-45 to 3.4e38), got 1e-50"),
    ("--time-scale=fast", "argument --time-scale: expected a number, got 'fast'"),
    ("--initialize-from=", "argument --initialize-from: an empty run-id; a run-id names a folder"),
    ("--run-id=", "argument --run-id: an empty run-id"),
    ("--run-id=a\nb", "argument --run-id: 'a\\nb' contains a control or non-printable character"),
    ("--run-id=a\x1bb", "contains a control or non-printable character"),
    ("--run-id=a/b", "argument --run-id: 'a/b' contains a path separator; a run-id names a folder: printable "
                     "characters other than '/' and '\\', no space at either end, not '.' and not containing '..'"),
    ("--run-id=.", "argument --run-id: '.' is the models folder itself"),  # --force would delete every run
    ("--initialize-from=.", "argument --initialize-from: '.' is the models folder itself"),
    ("--run-id=a\\b", "contains a path separator"),
    ("--run-id=..", "argument --run-id: '..' contains '..'"),
    ("--initialize-from=../other", "argument --initialize-from: '../other' contains a path separator"),
    ("--run-id=" + "x" * 201, "'xxxxxxxxxxxxxxxxxxx...xxxxxxxxx' (201 characters) is 201 bytes long"),
    ("--run-id=\udcff", "contains bytes that are not valid UTF-8"),  # a byte that was not UTF-8 in argv
    ("--env=3D\udcffBall", "argument --env: '3D\\udcffBall' contains bytes that are not valid UTF-8"),
    ("--torch-device=gpu", "argument --torch-device: expected auto, cpu, cuda or cuda:N (N a GPU's index), got 'gpu'"),
    ("--torch-device=cuda:x", "got 'cuda:x'"),
    ("--torch-device=cuda:01", "got 'cuda:01'"),  # torch refuses a leading zero
    ("--torch-device=cuda:-1", "got 'cuda:-1'"),
    ("--torch-device=cuda:" + "9" * 5000, "argument --torch-device: expected auto, cpu, cuda or cuda:N"),
    ("--torch-device=CPU", "got 'CPU'"),
])
def test_bad_flag_values_are_usage_errors(capsys, flag, message):
    from palaestra.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["c.yaml", "--env=3DBall", flag])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_utf8_names_under_an_ascii_locale_are_told_to_change_the_locale(tmp_path):
    # LC_ALL=C with PYTHONUTF8=0: Python reads the command line as ASCII, and 'é' arrives as two escaped bytes
    code = "import sys; from palaestra.options import text_problem; print(text_problem(sys.argv[1]))"
    told = subprocess.run([sys.executable, "-c", code, "dé.yaml", "x"], capture_output=True, text=True,
                          encoding="utf-8", env={"PYTHONPATH": str(REPO), "LC_ALL": "C", "PYTHONUTF8": "0"})
    assert "ASCII locale" in told.stdout and "LC_ALL=C.UTF-8" in told.stdout, told.stdout + told.stderr


def test_unusual_but_valid_run_ids_are_accepted():
    from palaestra.options import parse_args

    for run_id in ("3DBall_ppo-1", "run.v2", "ppo lr=3e-4", "名前", ".hidden", "a.b.c"):
        assert parse_args(["c.yaml", f"--run-id={run_id}"]).run_id == run_id


@pytest.mark.parametrize("args,message", [
    (["--base-port=65535", "--num-envs=2"], "the last worker's port would be 65536, past 65535"),
    (["--inference", "--force"], "--inference and --force contradict each other"),
    (["--run-id=same", "--initialize-from=same", "--force"], "--initialize-from names the run itself ('same')"),
    (["--cpu", "--torch-device=cuda:0"], "--cpu and --torch-device cuda:0 contradict each other"),
])
def test_flags_that_contradict_each_other(run_cli, small_config, workdir, args, message):
    for dry_run in ([], ["--dry-run"]):
        result = run_cli(small_config, "--env=Simple1DDiscrete", *args, *dry_run)
        assert result.code == 1 and message in result.log, result.log
    assert not (workdir / "models").exists()


def test_run_options_built_in_python_are_checked_like_flags(workdir):
    from palaestra.options import RunOptions, UsageError, check_options

    for bad, message in [({"seed": 2**40}, "--seed: expected an integer in [0, 4294967295]"),
                         ({"num_envs": True}, "--num-envs: expected an integer"),
                         ({"time_scale": float("inf")}, "--time-scale: expected a number > 0 that a 32-bit float holds"),
                         ({"run_id": "a/b"}, "--run-id: 'a/b' contains a path separator"),
                         ({"initialize_from": ""}, "--initialize-from: an empty run-id"),
                         ({"env_args": ["k=\udcff"]}, "--env-args: 'k=\\udcff' contains bytes that are not valid"),
                         ({"env_args": [3]}, "--env-args: expected text, got 3"),
                         ({"env_args": "a=1"}, "--env-args: expected a list of arguments, got 'a=1'"),
                         ({"env": 5}, "--env: expected text, got 5"),
                         # each of these was a traceback, a wrong message or silently taken
                         ({"run_id": 5}, "--run-id: expected text, got 5"),
                         ({"run_id": None}, "--run-id: expected text, got None"),
                         ({"initialize_from": 5}, "--initialize-from: expected text, got 5"),
                         ({"trainer_config_path": None}, "trainer_config_path: expected text, got None"),
                         ({"acting": "x"}, "--acting: expected one of auto, workers, main, got 'x'"),
                         ({"resume": "no"}, "--resume: expected True or False, got 'no'")]:
        with pytest.raises(UsageError, match=re.escape(message)):
            check_options(RunOptions(**{"trainer_config_path": "c.yaml", **bad}))


def test_dry_run_makes_the_checks_of_a_real_run(run_cli, small_config, workdir):
    # each of these passed a dry run once, and failed the real run after it started
    missing_init = write_yaml(workdir / "init.yaml", SMALL.format(max_steps=400) + "  init_path: nowhere/1D\n")
    for config, args, message in [
        (str(missing_init), [], "no checkpoint for behavior '1D' in nowhere/1D to initialize from"),
        (small_config, ["--initialize-from=nothing"], "--initialize-from: there is no run 'nothing'"),
    ]:
        for dry_run in (["--dry-run"], []):
            result = run_cli(config, "--env=Simple1DDiscrete", "--run-id=r", *args, *dry_run)
            assert result.code == 1 and message in result.log, (dry_run, result.log)
            assert not (workdir / "models").exists() and not (workdir / "summaries").exists()
    huge = write_yaml(workdir / "huge.yaml", SMALL.format(max_steps=400).replace("buffer_size: 64", "buffer_size: 1.0e15")
                      + "  trainer: sac\n")
    for dry_run in (["--dry-run"], []):  # the replay buffer was only allocated at the first transition stored
        result = run_cli(str(huge), "--env=Simple1DContinuous", "--run-id=r", *dry_run)
        assert result.code == 1 and "Traceback" not in result.log
        assert (f"{huge}: behavior '1D': buffer_size 1,000,000,000,000,000 (section '1D'): SAC's replay buffer of "
                "1,000,000,000,000,000 transitions of at least 8 bytes need") in result.log, result.log
        assert "GiB of memory; lower buffer_size" in result.log and not (workdir / "models").exists()
    sac = write_yaml(workdir / "sac.yaml", SMALL.format(max_steps=400) + "  trainer: sac\n")
    result = run_cli(str(sac), "--env=Simple1DContinuous", "--num-envs=2", "--acting=workers", "--dry-run")
    assert result.code == 1 and "--acting=workers: behavior '1D': sac learns between environment steps" in result.log
    (workdir / "models").write_text("a file where the models folder should be")
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--dry-run")
    assert result.code == 1 and "cannot read or write models" in result.log


def test_initialize_from_with_inference_on_a_run_with_checkpoints_says_it_is_not_used(run_cli, small_config,
                                                                                       workdir):
    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=a").code == 0
    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=b").code == 0
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=a", "--initialize-from=b", "--inference")
    assert result.code == 0 and "--initialize-from b has no effect with --inference on run 'a'" in result.log
    assert "Loaded 1D from models/a/1D/" in result.log
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=a", "--initialize-from=a", "--inference")
    assert result.code == 0 and "Loaded 1D from models/a/1D/" in result.log
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=new", "--initialize-from=b", "--inference")
    assert result.code == 0 and "has no effect" not in result.log and "Initialized 1D from models/b/1D/" in result.log


def test_init_path_takes_one_checkpoint_file_and_points_from_a_run_folder_to_its_behavior(run_cli, small_config,
                                                                                          workdir):
    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=a", "--save-freq=100").code == 0
    older = CheckpointManager(workdir / "models/a/1D", 5).list()[0][1].relative_to(workdir)
    from_file = write_yaml(workdir / "f.yaml", SMALL.format(max_steps=400) + f"  init_path: {older}\n")
    result = run_cli(str(from_file), "--env=Simple1DDiscrete", "--run-id=b")
    assert result.code == 0 and f"Initialized 1D from {older}" in result.log
    from_run = write_yaml(workdir / "r.yaml", SMALL.format(max_steps=400) + "  init_path: models/a\n")
    result = run_cli(str(from_run), "--env=Simple1DDiscrete", "--run-id=c")
    assert result.code == 1 and ("no checkpoint for behavior '1D' in models/a to initialize from (init_path, set in "
                                 f"section '1D' of {from_run}); its folder models/a/1D holds them") in result.log
    # a flag that chooses other weights comes first (as in ML-Agents), and says so
    from_a = write_yaml(workdir / "i.yaml", SMALL.format(max_steps=400) + "  init_path: models/a/1D\n")
    for flags, why in [(["--run-id=d", "--initialize-from=b"], "is not used: --initialize-from=b comes first"),
                       (["--run-id=b", "--resume"], "is not used with --resume: it continues from the run's own"),
                       (["--run-id=b", "--inference"], "is not used with --inference: it runs the run's own model")]:
        result = run_cli(str(from_a), "--env=Simple1DDiscrete", *flags)
        assert result.code == 0, result.log
        assert f"behavior '1D': init_path models/a/1D (section '1D' of {from_a}) {why}" in result.log
    result = run_cli(str(from_a), "--env=Simple1DDiscrete", "--run-id=e")
    assert result.code == 0 and "is not used" not in result.log and "Initialized 1D from models/a/1D/" in result.log


def test_a_temp_file_a_kill_left_is_no_earlier_run_and_goes_with_the_next_one(run_cli, small_config, workdir):
    run = workdir / "models" / "t"
    run.mkdir(parents=True)
    (run / ".configuration.yaml.ab12_x.tmp").write_text("half")  # a kill during configuration.yaml's write
    (workdir / "summaries").mkdir()
    (workdir / "summaries" / ".t_1D.csv.cd34.tmp").write_text("half")  # ... during a summary CSV's rewrite
    (workdir / "summaries" / ".t_timers.json.ef56.tmp").write_text("half")  # ... the timers'
    (workdir / "summaries" / "t_1D").mkdir()
    (workdir / "summaries" / "t_1D" / "..owner.json.gh78.tmp").write_text("half")  # ... the folder's owner's
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=t")
    assert result.code == 0, result.log
    assert not list(run.glob(".*.tmp")) and not list((workdir / "summaries").rglob(".*.tmp"))


def test_dry_run_checks_the_run_to_resume_and_changes_nothing(run_cli, small_config, workdir):
    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=r", "--save-freq=100").code == 0
    used = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=r", "--dry-run")
    assert used.code == 1 and "was already used" in used.log  # as the real run says
    folder = workdir / "models/r/1D"
    newest = CheckpointManager(folder, 5).latest()
    newest.write_bytes(newest.read_bytes()[:100])
    before = sorted(p.name for p in folder.iterdir())
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=r", "--resume", "--dry-run")
    assert result.code == 0 and "nothing was trained" in result.out, result.log
    assert "Would resume 1D from" in result.log and "Resumed" not in result.log  # nothing was resumed
    assert sorted(p.name for p in folder.iterdir()) == before  # the damaged one is not set aside by a dry run
    wrong = run_cli(small_config, "--env=Simple1DContinuous", "--run-id=r", "--resume", "--dry-run")
    assert wrong.code == 1 and "was trained for" in wrong.log, wrong.log


def test_restart_flags_without_workers_warn(run_cli, small_config):
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--max-lifetime-restarts=3", "--dry-run")
    assert result.code == 0 and "have no effect with --num-envs 1" in result.log


def test_acting_in_the_main_process_with_one_environment_warns(run_cli, small_config):
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--acting=main", "--dry-run")
    assert result.code == 0 and "--acting=main has no effect with --num-envs 1" in result.log


def test_engine_flags_on_an_environment_without_an_engine_warn(run_cli, small_config):
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--time-scale=5", "--width=64", "--dry-run")
    assert result.code == 0 and ("--width, --time-scale have no effect on the built-in environment Simple1DDiscrete"
                                 in result.log)
    assert "no effect" not in run_cli(small_config, "--env=Simple1DDiscrete", "--dry-run").log
    # the worker pool waits 30 s past --timeout-wait, so under workers it has its effect
    assert "--timeout-wait has no effect" in run_cli(small_config, "--env=Simple1DDiscrete", "--timeout-wait=600",
                                                     "--dry-run").log
    assert "no effect" not in run_cli(small_config, "--env=Simple1DDiscrete", "--timeout-wait=600", "--num-envs=2",
                                      "--dry-run").log


def test_engine_flags_on_a_factory_without_an_engine_argument_warn(run_cli, small_config, workdir):
    import sys

    (workdir / "engine_factories.py").write_text(
        "from palaestra.envs.builtin.simple1d import Simple1D\n\n"
        "def plain(seed):\n    return Simple1D(seed=seed)\n\n"
        "def with_engine(seed, engine):\n    return Simple1D(seed=seed)\n")
    try:
        result = run_cli(small_config, "--env=engine_factories:plain", "--time-scale=5", "--dry-run")
        assert result.code == 0 and ("--time-scale has no effect on the Python factory environment "
                                     "engine_factories:plain") in result.log
        result = run_cli(small_config, "--env=engine_factories:with_engine", "--time-scale=5", "--dry-run")
        assert result.code == 0 and "no effect" not in result.log
    finally:
        sys.modules.pop("engine_factories", None)


def test_far_more_environments_than_cores_warns(monkeypatch):
    import logging

    from palaestra import machine
    from palaestra import options as options_module

    monkeypatch.setattr(machine, "usable_cores", lambda: 2)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("palaestra").addHandler(handler)
    try:
        options_module.warn_about_unused_options(options_module.RunOptions(num_envs=8))
        assert records == []
        options_module.warn_about_unused_options(options_module.RunOptions(num_envs=9))
    finally:
        logging.getLogger("palaestra").removeHandler(handler)
    assert len(records) == 1 and "--num-envs 9 on a machine with 2 CPU core(s)" in records[0].getMessage()


def test_network_sizes_are_bounded_and_a_network_that_cannot_be_built_is_a_clear_error(
        run_cli, workdir, monkeypatch):
    config = write_yaml(workdir / "big.yaml", "default:\n  hidden_units: 10000000000\n")
    result = run_cli(str(config), "--env=3DBall", "--run-id=big", "--dry-run")
    assert result.code == 1 and "key 'hidden_units': expected an integer in [1, 4096]" in result.log

    # within the bounds, an allocation can still fail (a small machine): one line naming the behavior
    import palaestra.run

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes\nmore")

    monkeypatch.setattr(palaestra.run, "BehaviorTrainer", out_of_memory)
    result = run_cli(str(SHIPPED_CONFIG), "--env=3DBall", "--run-id=oom", "--dry-run")
    assert result.code == 1
    assert (f"{SHIPPED_CONFIG}: behavior '3DBall': cannot build its networks (2 x 128 units) or its experience buffers "
            "(time_horizon 1,000, buffer_size 12,000): DefaultCPUAllocator") in result.log, result.log
    assert "Traceback" not in result.log
    monkeypatch.undo()

    # beyond what numpy can address at all (ValueError), and a signal's model named where there is one
    config = write_yaml(workdir / "huge.yaml", "default:\n  time_horizon: 9007199254740992\n  reward_signals:\n"
                                               "    extrinsic: {strength: 1.0, gamma: 0.99}\n"
                                               "    curiosity: {strength: 0.01, gamma: 0.9, encoding_size: 64}\n")
    result = run_cli(str(config), "--env=VisualGridWorld", "--run-id=huge", "--dry-run")
    assert result.code == 1 and "Traceback" not in result.log
    assert re.search(r"behavior 'GridWorld': cannot build its networks \(\d x \d+ units, the curiosity model's "
                     r"\(encoding_size 64\)\) or its experience buffers \(time_horizon 9,007,199,254,740,992, "
                     r"buffer_size [\d,]+\): array is too big", result.log), result.log


def test_a_replay_buffer_too_large_for_memory_names_buffer_size():
    from palaestra.rollout.buffers import ReplayBuffer

    replay = ReplayBuffer(10**15)
    with pytest.raises(MemoryError, match=r"the replay buffer does not fit in memory: buffer_size 1,000,000,000,"
                                          r"000,000 transitions of 40 bytes is [\d,.]+ GiB; lower buffer_size"):
        replay.add(obs_0=np.zeros((2, 8), np.float32), done=np.zeros((2, 2), np.float32))


@pytest.mark.parametrize("numpy_trains", [False, True])
@pytest.mark.parametrize("flag,units,expected", [(0, 64, 1), (0, 256, "all"), (3, 64, 3), (1, 512, 1)])
def test_training_threads_follow_the_flag_or_else_the_network_width(flag, units, expected, numpy_trains):
    # they go to the library that trains (numpy's BLAS where the CPU accelerator trains every
    # behavior), and the other gets one: two pools of threads spin on each other's cores
    from threadpoolctl import threadpool_info, threadpool_limits

    from palaestra.machine import limit_threads, usable_cores
    from palaestra.options import parse_args

    assert parse_args(["c.yaml", f"--torch-threads={flag}"]).torch_threads == flag
    threads = usable_cores() if expected == "all" else expected
    before = torch.get_num_threads()
    with threadpool_limits(limits=None):  # restores numpy's BLAS threads on the way out
        try:
            said = limit_threads(torch.device("cpu"), units, flag, numpy_trains=numpy_trains)
            blas = {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}
            assert (torch.get_num_threads(), blas) == ((1, {threads}) if numpy_trains else (threads, {1}))
            assert said.startswith(f"numpy's BLAS {threads}" if numpy_trains else f"torch {threads}")
        finally:
            torch.set_num_threads(before)


@pytest.mark.parametrize("section,library", [
    ("trainer: sac\n  hidden_units: 256", "numpy's BLAS"),  # the CPU accelerator trains it
    ("trainer: sac\n  hidden_units: 256\n  use_recurrent: true\n  sequence_length: 8", "torch"),  # autograd
    ("trainer: ppo\n  hidden_units: 256", "numpy's BLAS"),
])
def test_the_library_that_trains_gets_the_threads(run_cli, workdir, section, library):
    from threadpoolctl import threadpool_limits

    config = write_yaml(workdir / "c.yaml", f"1D:\n  {section}\n  batch_size: 64\n  buffer_size: 640\n")
    before = torch.get_num_threads()
    with threadpool_limits(limits=None):
        try:
            result = run_cli(str(config), "--env=Simple1DContinuous", "--cpu", "--torch-threads=2", "--dry-run")
        finally:
            torch.set_num_threads(before)
    assert result.code == 0, result.log
    assert yaml.safe_load(result.out.split("dry run:")[0])["threads"].startswith(f"{library} 2")


VECTORS = {"A": BehaviorSpec(((8,),), ActionSpec(continuous_size=2))}
WITH_IMAGE = {**VECTORS, "B": BehaviorSpec(((8,), (36, 36, 3)), ActionSpec(discrete_branches=(3,)))}


@pytest.mark.parametrize("flags,specs,units,expected", [
    ([], VECTORS, 256, "cpu"),  # vector policies under 512 units train faster on the CPU (docs/benchmarks.md)
    ([], VECTORS, 512, "cuda"),  # wide ones on the GPU
    ([], WITH_IMAGE, 128, "cuda"),  # and CNNs
    (["--torch-device=cuda"], VECTORS, 128, "cuda"),
    (["--torch-device=cuda:1"], VECTORS, 128, "cuda:1"),
    (["--torch-device=cpu"], WITH_IMAGE, 512, "cpu"),
    (["--cpu"], WITH_IMAGE, 512, "cpu"),
    (["--cpu", "--torch-device=cpu"], WITH_IMAGE, 128, "cpu"),
])
def test_the_device_is_the_one_asked_for_or_by_default_the_faster_one_for_the_policy(monkeypatch, flags, specs, units,
                                                                                     expected):
    from palaestra.machine import check_device, choose_device
    from palaestra.options import parse_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    options = parse_args(["c.yaml", *flags])
    check_device(options)
    device, reason = choose_device(options, specs, units)
    assert device == torch.device(expected)
    if flags[:1] == ["--cpu"]:
        assert reason == "--cpu"
    if not flags and expected == "cpu":  # the run's first lines say why, and how to take the GPU
        assert reason == ("auto: vector observations and networks under 512 hidden units train faster on the CPU; "
                          "--torch-device cuda trains on the GPU")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if expected == "cuda" and not flags:  # auto without a GPU
        assert choose_device(options, specs, units) == (torch.device("cpu"), "no CUDA GPU")


@pytest.mark.parametrize("available,built_with,count,device,message", [
    (False, None, 0, "cuda", "--torch-device cuda: this torch was built without CUDA (a CPU-only build); use "
                             "--torch-device cpu, or auto"),
    (False, "12.8", 0, "cuda:0", "--torch-device cuda:0: torch finds no CUDA GPU (no NVIDIA driver, or "
                                 "CUDA_VISIBLE_DEVICES hides them)"),
    (True, "12.8", 2, "cuda:2", "--torch-device cuda:2: this machine has 2 CUDA GPU(s), cuda:0 to cuda:1"),
])
def test_a_gpu_the_machine_does_not_offer_is_a_usage_error(monkeypatch, available, built_with, count, device,
                                                           message):
    from palaestra.machine import check_device
    from palaestra.options import UsageError, parse_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.version, "cuda", built_with)
    with pytest.raises(UsageError, match=re.escape(message)):
        check_device(parse_args(["c.yaml", f"--torch-device={device}"]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_asking_for_a_gpu_on_a_machine_without_one_stops_before_the_environment_starts(run_cli, small_config,
                                                                                      workdir):
    (workdir / "made_env.py").write_text(
        "from pathlib import Path\n"
        "from palaestra.envs.builtin import make_builtin\n\n"
        "def make(seed=0):\n"
        "    Path('environment-started').touch()\n"
        "    return make_builtin('Simple1DDiscrete', seed=seed)\n")
    result = run_cli(small_config, "--env=made_env:make", "--torch-device=cuda")
    assert result.code == 1 and "--torch-device cuda: " in result.log and "Traceback" not in result.log
    assert not (workdir / "environment-started").exists()
    assert not (workdir / "models").exists() and not (workdir / "summaries").exists()
    # the same factory does start an environment
    assert run_cli(small_config, "--env=made_env:make", "--dry-run").code == 0
    assert (workdir / "environment-started").exists()


@pytest.mark.parametrize("flags,device", [(["--torch-device=cpu"], "cpu (--torch-device cpu)"),
                                          ([], "cpu (no CUDA GPU)" if not torch.cuda.is_available() else
                                           "cpu (auto: vector observations and networks under 512")])
def test_a_dry_run_says_which_device_would_train_and_why(run_cli, small_config, flags, device):
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--dry-run", *flags)
    assert result.code == 0 and f"device: {device}" in result.out


def test_a_torch_device_given_in_python_must_be_a_string():
    from palaestra.options import RunOptions, UsageError, check_options

    with pytest.raises(UsageError, match=r"--torch-device: expected a string \(auto, cpu, cuda or cuda:N\), got "
                                         r"device device\(type='cuda'\)"):
        check_options(RunOptions(trainer_config_path="c.yaml", torch_device=torch.device("cuda")))


def test_a_negative_torch_thread_count_is_a_usage_error(capsys):
    from palaestra.options import parse_args

    with pytest.raises(SystemExit) as stop:
        parse_args(["c.yaml", "--torch-threads=-2"])
    assert stop.value.code == 2 and "--torch-threads: expected a thread count" in capsys.readouterr().err


def test_the_summary_csv_has_a_row_per_summary_and_widens_for_stats_that_come_later(tmp_path):
    # ML-Agents 0.16 fixed the header at the first summary with an episode: the losses, which
    # come after the first update, never reached the file
    from palaestra.stats import CSVWriter, StatSummary

    def summary(**values):
        return {k.replace("_", "/"): StatSummary(v, 0.0, 1) for k, v in values.items()}

    writer = CSVWriter(tmp_path, "r_B", append=False)
    writer.write("r_B", 100, summary(Is_Training=1.0))  # no episode ended yet
    writer.write("r_B", 200, summary(Is_Training=1.0, Environment_Reward=0.5))
    writer.write("r_B", 300, summary(Is_Training=1.0, Environment_Reward=0.7, Losses_Value=0.25))
    resumed = CSVWriter(tmp_path, "r_B", append=True)  # --resume appends, and may widen again
    resumed.write("r_B", 400, summary(Losses_Value=0.2, Policy_Entropy=1.5))
    with open(tmp_path / "r_B.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["Steps", "Environment/Reward", "Is/Training", "Losses/Value", "Policy/Entropy"]
    assert [[r[k] for k in rows[0]] for r in rows] == [
        ["100", "", "1.0", "", ""], ["200", "0.5", "1.0", "", ""], ["300", "0.7", "1.0", "0.25", ""],
        ["400", "", "", "0.2", "1.5"]]
    assert not list(tmp_path.glob(".*tmp"))  # rewritten through a temp file, renamed over


def test_a_summary_csv_locked_by_another_program_keeps_its_rows_and_writes_them_later(tmp_path, monkeypatch,
                                                                                      caplog):
    # on Windows a spreadsheet that has the file open locks it: the run stopped on the next row
    import builtins

    from palaestra.stats import CSVWriter, StatSummary

    writer = CSVWriter(tmp_path, "r_B", append=False)
    writer.write("r_B", 100, {"X": StatSummary(1.0, 0.0, 1)})
    real_open, locked = builtins.open, [True]

    def open_unless_locked(path, mode="r", *args, **kwargs):
        if locked[0] and str(path).endswith("r_B.csv") and "a" in mode:
            raise PermissionError(13, "Permission denied")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_unless_locked)
    with caplog.at_level(logging.INFO, logger="palaestra"):
        writer.write("r_B", 200, {"X": StatSummary(2.0, 0.0, 1)})
        writer.write("r_B", 300, {"X": StatSummary(3.0, 0.0, 1), "Y": StatSummary(5.0, 0.0, 1)})
        assert caplog.text.count("is it open in another program?") == 1
        locked[0] = False
        writer.write("r_B", 400, {"X": StatSummary(4.0, 0.0, 1)})
    assert "wrote the summary" in caplog.text and "(2 rows that had waited)" in caplog.text
    locked[0] = True  # the last row waits, and the run's end writes it once the file is free
    writer.write("r_B", 500, {"X": StatSummary(5.0, 0.0, 1)})
    locked[0] = False
    writer.close()
    with real_open(tmp_path / "r_B.csv", newline="") as fh:
        assert list(csv.reader(fh)) == [["Steps", "X", "Y"], ["100", "1.0", ""], ["200", "2.0", ""],
                                        ["300", "3.0", "5.0"], ["400", "4.0", ""], ["500", "5.0", ""]]


def test_a_run_closes_its_summary_tables(run_cli, small_config, monkeypatch):
    # closing writes the rows a locked table kept waiting: the run never closed them
    from palaestra.stats import CSVWriter

    closed = []
    monkeypatch.setattr(CSVWriter, "close", lambda self: closed.append(self.path.name))
    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=c").code == 0
    assert closed == ["c_1D.csv"]


def test_the_summary_csv_has_its_header_even_when_the_first_summary_is_empty(tmp_path):
    from palaestra.stats import CSVWriter, StatSummary

    writer = CSVWriter(tmp_path, "r_B", append=False)
    writer.write("r_B", 100, {})
    writer.write("r_B", 200, {"Is Training": StatSummary(1.0, 0.0, 1)})
    with open(tmp_path / "r_B.csv", newline="") as fh:
        assert list(csv.reader(fh)) == [["Steps", "Is Training"], ["100", ""], ["200", "1.0"]]


@pytest.mark.parametrize("content", [
    b"Steps,X\n250,1\n\xe9t\xe9,2\n",  # Latin-1 text, not UTF-8
    "Steps,X\n250,1\n".encode("utf-16"),  # a spreadsheet's "Unicode text"
    b"Steps;X\n250;1\n",  # other separators
    b"Steps,X\n250,1\n\"" + b"x" * 200_000 + b"\n",  # a field beyond the csv module's limit
    b"\nSteps,X\n250,1\n",  # a blank first line
])
def test_a_summary_table_that_cannot_be_continued_is_moved_aside(tmp_path, caplog, content):
    from palaestra.stats import CSVWriter, StatSummary

    (tmp_path / "r_B.csv").write_bytes(content)
    writer = CSVWriter(tmp_path, "r_B", append=True, resume_step=300)
    writer.write("r_B", 400, {"X": StatSummary(2.0, 0.0, 1)})
    with open(tmp_path / "r_B.csv", newline="") as fh:
        assert list(csv.reader(fh)) == [["Steps", "X"], ["400", "2.0"]]
    assert (tmp_path / "r_B.unreadable.csv").read_bytes() == content  # nothing lost
    assert "cannot be continued" in caplog.text and "r_B.unreadable.csv" in caplog.text
    (tmp_path / "r_B.csv").write_bytes(content)  # again: a second name, the first kept
    CSVWriter(tmp_path, "r_B", append=True)
    assert (tmp_path / "r_B.unreadable-1.csv").read_bytes() == content


def test_a_summary_table_saved_with_a_byte_order_mark_is_continued(tmp_path):
    from palaestra.stats import CSVWriter, StatSummary

    (tmp_path / "r_B.csv").write_bytes("Steps,X\n250,1\n".encode("utf-8-sig"))  # a spreadsheet's "CSV UTF-8"
    CSVWriter(tmp_path, "r_B", append=True, resume_step=300).write("r_B", 400, {"X": StatSummary(2.0, 0.0, 1)})
    with open(tmp_path / "r_B.csv", newline="", encoding="utf-8-sig") as fh:
        assert list(csv.reader(fh)) == [["Steps", "X"], ["250", "1"], ["400", "2.0"]]
    assert not list(tmp_path.glob("*.unreadable*"))
    # and widened by a new column, every earlier row keeps its step
    CSVWriter(tmp_path, "r_B", append=True, resume_step=400).write("r_B", 500, {"Y": StatSummary(3.0, 0.0, 1)})
    with open(tmp_path / "r_B.csv", newline="", encoding="utf-8-sig") as fh:
        assert list(csv.reader(fh)) == [["Steps", "X", "Y"], ["250", "1", ""], ["400", "2.0", ""], ["500", "", "3.0"]]


def test_a_resumed_summary_drops_what_was_written_after_the_checkpoint_it_resumes_from(tmp_path):
    # a run killed after its last checkpoint had written summaries past it (and maybe half a row):
    # the resumed run writes those steps again, so the CSV's steps went back and forth
    import time

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from palaestra.stats import CSVWriter, StatSummary, TensorBoardWriter

    (tmp_path / "r_B.csv").write_text("Steps,Is Training\n100,1.0\n200,1.0\n300,1.0\n40")
    writer = CSVWriter(tmp_path, "r_B", append=True, resume_step=200)
    writer.write("r_B", 300, {"Is Training": StatSummary(0.5, 0.0, 1)})
    with open(tmp_path / "r_B.csv", newline="") as fh:
        assert list(csv.reader(fh)) == [["Steps", "Is Training"], ["100", "1.0"], ["200", "1.0"], ["300", "0.5"]]
    first = TensorBoardWriter(tmp_path, "r_B", clear_old=True)
    for step in (100, 200, 300):
        first.write("r_B", step, {"Is Training": StatSummary(1.0, 0.0, 1)})
    first.close()
    time.sleep(1.05)  # event files are named by the second they start in: a resumed run's sorts after
    second = TensorBoardWriter(tmp_path, "r_B", clear_old=False, resume_step=200)
    second.write("r_B", 300, {"Is Training": StatSummary(0.5, 0.0, 1)})
    second.close()
    events = EventAccumulator(str(tmp_path / "r_B")).Reload().Scalars("Is Training")
    assert [(e.step, e.value) for e in events] == [(100, 1.0), (200, 1.0), (300, 0.5)]


def test_a_full_disk_under_the_summaries_is_named_without_a_traceback(tmp_path, monkeypatch):
    import errno
    import threading

    from palaestra.checkpoints import SaveError
    from palaestra.stats import CSVWriter, MetricsCSV, StatSummary, TensorBoardWriter

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    tb = TensorBoardWriter(tmp_path, "r_B", clear_old=True)
    tb.writer.add_scalar = full
    with pytest.raises(SaveError, match=rf"could not write the TensorBoard summaries in {re.escape(str(tmp_path))}"
                                        rf"/r_B: {os.strerror(errno.ENOSPC)}"):
        tb.write("r_B", 100, {"Is Training": StatSummary(1.0, 0.0, 1)})
    tb.close()
    csv_writer = CSVWriter(tmp_path, "r_B", append=False)
    csv_writer.write("r_B", 100, {"Is Training": StatSummary(1.0, 0.0, 1)})
    (tmp_path / "r_B.csv").unlink()
    (tmp_path / "r_B.csv").mkdir()  # a file that cannot be opened for writing, whoever runs the test
    with pytest.raises(SaveError, match=r"could not write the summary .*r_B\.csv"):
        csv_writer.write("r_B", 200, {"Is Training": StatSummary(1.0, 0.0, 1)})
    metrics = MetricsCSV(tmp_path, "r_B")  # --debug's
    (tmp_path / "r_B_metrics.csv").unlink()
    (tmp_path / "r_B_metrics.csv").mkdir()
    with pytest.raises(SaveError, match=r"could not write the metrics .*r_B_metrics\.csv"):
        metrics.add_row("B", 0.1, 1.0, 0.5, 64, 1.0)

    # TensorBoard's own writer thread failing on a full disk: its OSError is not printed (the
    # next write here names it, above); any other thread's error goes to the hook before
    from palaestra.stats import _quiet_writer_thread_errors

    reported = []
    monkeypatch.setattr(threading, "excepthook", lambda args: reported.append(args.exc_type))
    _quiet_writer_thread_errors()

    class Writer(threading.Thread):
        pass

    Writer.__module__ = "tensorboard.summary.writer.event_file_writer"
    error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    threading.excepthook(threading.ExceptHookArgs([OSError, error, None, Writer()]))
    assert reported == []
    threading.excepthook(threading.ExceptHookArgs([OSError, error, None, threading.Thread()]))
    threading.excepthook(threading.ExceptHookArgs([ValueError, ValueError("x"), None, Writer()]))
    assert reported == [OSError, ValueError]


def test_a_factory_module_beside_the_config_is_found_from_another_working_directory(run_cli, workdir, monkeypatch):
    # docs/environments.md: --env=my_env:make finds my_env.py next to the config, also when the
    # run starts elsewhere, and the worker processes find it too
    import palaestra.imports

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(palaestra.imports, "_FOLDERS_BESIDE", [])
    project = workdir / "project"
    project.mkdir()
    (project / "beside_env.py").write_text(
        "from palaestra.envs.builtin.simple1d import Simple1D\n\n\n"
        "def make(seed, num_areas):\n"
        "    return Simple1D(seed=seed, num_areas=num_areas, behavior_name='Line')\n")
    config = write_yaml(project / "config.yaml", """
        Line:
          trainer: ppo
          batch_size: 16
          buffer_size: 64
          max_steps: 200
          summary_freq: 100
    """)
    (workdir / "elsewhere").mkdir()
    monkeypatch.chdir(workdir / "elsewhere")
    try:
        result = run_cli(str(config), "--env=beside_env:make", "--run-id=b", "--num-envs=2")
        assert result.code == 0, result.log
        missing = run_cli(str(config), "--env=not_beside:make", "--run-id=m", "--dry-run")
    finally:
        sys.modules.pop("beside_env", None)
    assert missing.code != 0
    assert f"cannot import module 'not_beside': No module named 'not_beside' (looked in the working directory " \
           f"{workdir / 'elsewhere'}, beside the trainer config in {project} and the installed packages)" in missing.log


def test_an_in_process_run_forgets_the_modules_it_found_beside_the_config(run_cli, workdir, monkeypatch):
    # a script (or a notebook) that edits my_env.py beside the config and calls main again gets the
    # edited module, as a new process would; the import path the run added is gone after it anyway
    import palaestra.imports

    monkeypatch.setattr(palaestra.imports, "_FOLDERS_BESIDE", [])
    project = workdir / "project"
    (project / "edited_pkg").mkdir(parents=True)
    (project / "edited_pkg" / "__init__.py").write_text("NAME = 'Line'\n")
    (project / "edited_env.py").write_text(
        "from palaestra.envs.builtin.simple1d import Simple1D\n"
        "from edited_pkg import NAME\n\n\n"
        "def make(seed, num_areas):\n"
        "    return Simple1D(seed=seed, num_areas=num_areas, behavior_name=NAME)\n")
    section = "trainer: ppo\n  batch_size: 16\n  buffer_size: 64\n  max_steps: 100\n  summary_freq: 100\n"
    config = project / "config.yaml"
    config.write_text(f"Line:\n  {section}Lane:\n  {section}")
    path = list(sys.path)
    first = run_cli(str(config), "--env=edited_env:make", "--run-id=e1")
    assert first.code == 0 and "e1_Line: Step: 100." in first.log, first.log
    assert "edited_env" not in sys.modules and "edited_pkg" not in sys.modules and sys.path == path
    (project / "edited_pkg" / "__init__.py").write_text("NAME = 'Lane'\n")
    second = run_cli(str(config), "--env=edited_env:make", "--run-id=e2")
    assert second.code == 0 and "e2_Lane: Step: 100." in second.log, second.log
    assert "edited_env" not in sys.modules and "torch" in sys.modules
    # the usual layout: the script, the config and my_env.py in one folder, already on the import path
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "path", [str(project), *sys.path])
    (project / "edited_pkg" / "__init__.py").write_text("NAME = 'Line'\n")
    third = run_cli("config.yaml", "--env=edited_env:make", "--run-id=e3")
    assert third.code == 0 and "e3_Line: Step: 100." in third.log and "edited_env" not in sys.modules, third.log


def test_an_in_process_run_from_palaestra_s_checkout_keeps_its_modules_and_puts_the_threads_back(tmp_path):
    # with an editable install, a script run from the checkout finds palaestra through the working
    # directory, which the run's --env import adds to the path: its modules are not the user's to forget
    import subprocess

    import palaestra

    checkout = tmp_path  # (a checkout of its own: the run writes models/ and summaries/ in it)
    (checkout / "palaestra").symlink_to(Path(palaestra.__file__).resolve().parent)
    (tmp_path / "env_here.py").write_text("from palaestra.envs.builtin.simple1d import Simple1D\n\n\n"
                                          "def make(seed, num_areas):\n"
                                          "    return Simple1D(seed=seed, num_areas=num_areas)\n")
    config = write_yaml(tmp_path / "c.yaml", SMALL.format(max_steps=100))
    script = ("import sys, torch\n"
              "from palaestra.cli import main\n"
              "torch.set_num_threads(2)\n"
              f"code = main([{str(config)!r}, '--env=env_here:make', '--run-id=k', '--cpu', '--torch-threads=1'])\n"
              "print(code, torch.get_num_threads(), 'palaestra.machine' in sys.modules, 'env_here' in sys.modules)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=checkout, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.stdout.split()[-4:] == ["0", "2", "True", "False"], result.stdout + result.stderr


def test_only_modules_found_directly_in_an_added_folder_are_forgotten():
    # a config in a folder above the virtual environment adds that folder: torch, imported through
    # site-packages below it, must stay (a second import of torch fails)
    from palaestra.cli import _ProcessSettings

    kept = _ProcessSettings()
    try:
        kept.modules -= {"torch", "numpy"}  # as if the run had imported them
        site_packages = os.path.dirname(os.path.dirname(torch.__file__))
        kept._forget_modules_of({os.path.dirname(site_packages), os.path.dirname(os.path.dirname(site_packages))})
    finally:
        kept.restore()
    assert "torch" in sys.modules and "numpy" in sys.modules


def test_a_script_beside_the_config_does_not_stand_in_for_a_library_module(tmp_path, monkeypatch):
    # the config's folder went first on the import path, so a user's statistics.py or profile.py
    # there was imported (and run) by the trainer in place of the standard library's
    import importlib.machinery

    import palaestra.imports

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(palaestra.imports, "_FOLDERS_BESIDE", [])
    (tmp_path / "statistics.py").write_text("raise RuntimeError('the user script ran')\n")
    (tmp_path / "beside_only.py").write_text("")
    palaestra.imports.import_beside(str(tmp_path / "config.yaml"))
    found = importlib.machinery.PathFinder.find_spec("statistics", sys.path)
    assert found is not None and not found.origin.startswith(str(tmp_path))
    assert importlib.machinery.PathFinder.find_spec("beside_only", sys.path).origin == str(tmp_path / "beside_only.py")


def test_a_behaviors_checkpoint_folder_that_cannot_be_written_stops_resume_before_training(run_cli, small_config,
                                                                                           workdir, monkeypatch):
    # found at start-up, not at the first save with the training before it lost (a read-only
    # mount; os.access stands in for one, since root may write anywhere)
    assert run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=ro").code == 0
    real_access = os.access
    folder = str(workdir / "models" / "ro" / "1D")
    monkeypatch.setattr(os, "access", lambda path, mode: os.path.abspath(path) != folder and real_access(path, mode))
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=ro", "--resume")
    assert result.code == 1 and "cannot read or write models/ro/1D: models/ro/1D is not writable" in result.log
    assert "Step:" not in result.log  # no training


def test_env_args_that_are_not_key_value_stop_the_run_before_workers_start(run_cli, small_config):
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--num-envs=2", "--env-args", "step_size=0.2", "--force")
    assert result.code == 1 and "--env-args takes every argument after it, so '--force' would go to the " \
                                "environment, not to mlagents-learn: give --env-args last" in result.log
    assert "environment worker" not in result.log


def test_a_flag_of_ours_after_env_args_is_named_before_any_other_check(run_cli, small_config, workdir):
    # --resume after --env-args went to the environment, and the run folder's check then asked for --resume
    (workdir / "models" / "r" / "1D").mkdir(parents=True)
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=r", "--env-args", "step_size=0.2", "--resume")
    assert result.code == 1 and "Traceback" not in result.log
    assert "--env-args takes every argument after it, so '--resume' would go to the environment, not to " \
           "mlagents-learn: give --env-args last" in result.log
    assert "already used" not in result.log


def test_a_flag_of_ours_after_env_args_of_a_unity_build_is_passed_on_and_said(caplog):
    # a build's own command line may take --seed: passed on, with a warning; key=value pairs may not
    from palaestra.options import RunOptions, UsageError, check_options

    with caplog.at_level(logging.WARNING, logger="palaestra"):
        check_options(RunOptions(trainer_config_path="c.yaml", env="./Builds/Game.x86_64", env_args=["--seed=3"]))
    assert "'--seed=3' passed to the Unity build (--env-args takes every argument after it); if meant for " \
           "mlagents-learn, give it before --env-args" in caplog.text
    for env in ("CartPole-v1", None):  # (None: the Editor, which takes no command line)
        with pytest.raises(UsageError, match="so '--seed=3' would go to the environment"):
            check_options(RunOptions(trainer_config_path="c.yaml", env=env, env_args=["--seed=3"]))


def test_a_trainer_config_after_env_args_is_named(capsys):
    from palaestra.options import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--env=CartPole-v1", "--env-args", "max_episode_steps=100", "c.yaml"])
    assert ("required: trainer_config_path (c.yaml came after --env-args, which takes every argument after it: give "
            "the trainer config before --env-args)") in capsys.readouterr().err


def test_a_file_where_a_summary_folder_goes_is_named_with_what_to_do(run_cli, small_config, workdir):
    (workdir / "summaries").mkdir()
    (workdir / "summaries" / "s_1D").write_text("not a folder")
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=s")
    assert result.code == 1 and "Traceback" not in result.log
    assert f"cannot make the folder {workdir / 'summaries' / 's_1D'}: a file of that name is there; move or delete " \
           "it" in result.log, result.log


@pytest.mark.parametrize("flag,split", [(0, "cores"), (2, True), (3, True), (4, True), (1, False)])
def test_image_behaviors_train_their_two_towers_at_once_on_two_or_more_threads(flag, split):
    # networks/visual.py: the actor's and critic's (SAC: the two critics') encoders on a thread
    # each, torch's threads halved between them; one thread: one after the other
    import palaestra.machine as machine

    threads = flag or machine.usable_cores()
    split = threads >= 2 if split == "cores" else split
    before = torch.get_num_threads()
    try:
        said = machine.limit_threads(torch.device("cpu"), 16, flag, images=True)
        assert machine.image_towers_on_two_threads() is split
        assert torch.get_num_threads() == (threads - threads // 2 if split else threads)
        assert machine.second_tower_threads() == (threads // 2 if split else 0)  # 3: 2 and 1
        assert ("two at once" in said) is split
        machine.limit_threads(torch.device("cpu"), 16, flag, images=False)  # a later choice replaces it
        assert not machine.image_towers_on_two_threads()
    finally:
        torch.set_num_threads(before)
        machine._second_tower_threads = 0


@pytest.mark.parametrize("args,message", [
    (["--env=Builds/Nothing"], "no Unity build at 'Builds/Nothing': the path does not exist"),
    (["--env=CartPole-v1", "--env-args", "--run-id=x2"], "so '--run-id=x2' would go to the environment"),
    (["--env=CartPole-v1", "--env-args", "--not-ours=1"],
     "'--not-ours=1' looks like a flag; mlagents-learn's --env-args takes every"),
    (["--env=Simple1DDiscrete", "--run-id=none", "--resume"], "no previous run 'none' (no models"),
])
def test_mistakes_with_the_environment_and_the_run_are_named(run_cli, small_config, args, message):
    result = run_cli(small_config, "--dry-run", *args)
    assert result.code in (1, 2) and message in result.log and "Traceback" not in result.log


def test_resume_of_an_empty_run_folder_says_it_holds_no_saved_run(run_cli, small_config, workdir):
    (workdir / "models" / "c").mkdir(parents=True)
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=c", "--resume")
    assert result.code != 0 and "no previous run 'c' (models/c holds no saved run)" in result.log


def test_dry_run_takes_the_first_step_and_asks_the_teachers(run_cli, workdir):
    # what fails only at the first step fails the dry run, before a real run writes its folder
    config = write_yaml(workdir / "o.yaml", "default:\n  trainer: online_bc\n  brain_to_imitate: builtins:len\n")
    result = run_cli(str(config), "--env=3DBall", "--run-id=o", "--dry-run")
    assert result.code == 1 and "Traceback" not in result.log
    assert "behavior '3DBall': brain_to_imitate 'builtins:len': raised TypeError: len() takes" in result.log
    config = write_yaml(workdir / "p.yaml", "default:\n  max_steps: 20000\n")
    result = run_cli(str(config), "--env=Pendulum-v1", "--run-id=p", "--dry-run", "--env-args", "g=abc")
    assert result.code == 1 and "Gymnasium environment 'Pendulum-v1' raised TypeError in step" in result.log
    assert not (workdir / "models").exists()


def test_a_run_does_not_clear_another_runs_summaries_of_the_same_name(run_cli, workdir):
    # summaries/<run-id>_<behavior>: run "x_y" with behavior "z" and run "x" with behavior "y_z"
    # share "x_y_z"; the second cleared the first's events and replaced its CSV
    config = str(write_yaml(workdir / "c.yaml", "default:\n" + SMALL.format(max_steps=200).split("\n", 2)[2]))
    first = run_cli(config, "--env=Simple1DDiscrete", "--run-id=x_y", "--env-args", "behavior_name=z")
    assert first.code == 0, first.log
    events = sorted((workdir / "summaries" / "x_y_z").glob("events.out*"))
    table = (workdir / "summaries" / "x_y_z.csv").read_text()
    for dry_run in ([], ["--dry-run"]):
        second = run_cli(config, "--env=Simple1DDiscrete", "--run-id=x", *dry_run, "--env-args", "behavior_name=y_z")
        assert second.code == 1 and "Traceback" not in second.log
        assert ("summaries/x_y_z holds the summaries of run 'x_y' (behavior 'z'), which run 'x''s "
                "behavior 'y_z' would write under the same name") in second.log, second.log
    assert sorted((workdir / "summaries" / "x_y_z").glob("events.out*")) == events
    assert (workdir / "summaries" / "x_y_z.csv").read_text() == table
    assert not (workdir / "models" / "x").exists()
    longer = str(write_yaml(workdir / "l.yaml", "default:\n" + SMALL.format(max_steps=300).split("\n", 2)[2]))
    resumed = run_cli(longer, "--env=Simple1DDiscrete", "--run-id=x_y", "--resume", "--env-args",
                      "behavior_name=z")  # its own: taken
    assert resumed.code == 0, resumed.log


def test_an_update_at_a_summary_step_reports_its_losses_in_the_next_summary(run_cli, workdir):
    # ML-Agents writes the summary due before the update at that step: with buffer_size equal to
    # summary_freq (3DBall's 12,000 and 12,000) the first summary has no losses, and each later
    # one the losses of the update at the step before; learning rates are the updates' own
    config = write_yaml(workdir / "c.yaml", SMALL.format(max_steps=192).replace("summary_freq: 100", "summary_freq: 64")
                        + "  learning_rate_schedule: linear\n")
    result = run_cli(str(config), "--env=Simple1DDiscrete", "--run-id=r")
    assert result.code == 0, result.log
    with open(workdir / "summaries" / "r_1D.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["Steps"]) for r in rows] == [64, 128, 192]
    assert [r["Losses/Policy Loss"] != "" for r in rows] == [False, True, True]
    # the learning rate of the update at 64 (decayed over 192 steps), not the rate reached at 128
    assert float(rows[1]["Policy/Learning Rate"]) > float(rows[2]["Policy/Learning Rate"]) > 1e-4


def test_gauge_names_leave_out_every_space_as_ml_agents_does():
    from palaestra.stats import GaugeWriter, StatSummary
    from palaestra.timers import TIMERS

    GaugeWriter().write("my run_Ball Keeper", 10, {"Environment/Cumulative Reward": StatSummary(1.5, 0.0, 1)})
    assert "myrun_BallKeeper.Environment.CumulativeReward.mean" in TIMERS.gauges


def test_a_run_of_the_same_id_that_ended_during_the_start_is_not_trained_over(run_cli, small_config, workdir,
                                                                              monkeypatch):
    # the run-id is checked at the start and the new run's lock taken only before training: a run of
    # the same id that finished (or died) in between was trained over, both ending with code 0
    import palaestra.run

    original = palaestra.run._build

    def build_while_another_run_finishes(*args, **kwargs):
        parts = original(*args, **kwargs)
        (workdir / "models" / "r").mkdir(parents=True, exist_ok=True)
        (workdir / "models" / "r" / "configuration.yaml").write_text("the other run's\n")
        return parts

    monkeypatch.setattr(palaestra.run, "_build", build_while_another_run_finishes)
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=r")
    assert result.code == 1 and "run-id 'r' was already used" in result.log and "Traceback" not in result.log
    assert sorted(p.name for p in (workdir / "models" / "r").iterdir()) == [".lock", "configuration.yaml"]
    assert (workdir / "models" / "r" / "configuration.yaml").read_text() == "the other run's\n"


def test_a_full_disk_at_the_start_names_the_file_it_could_not_write(tmp_path, monkeypatch):
    # the run's lock (its pid) and TensorBoard's first event: "cannot read or write a file", an
    # empty lock left behind, and the writer thread's traceback
    import torch.utils.tensorboard

    from palaestra.checkpoints import SaveError
    from palaestra.run_folders import RunLock
    from palaestra.stats import TensorBoardWriter

    run_dir = tmp_path / "models" / "r"
    run_dir.mkdir(parents=True)
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full to stand in for a full disk")
    (run_dir / ".lock").symlink_to("/dev/full")  # every write fails (its truncate too)
    with pytest.raises(SaveError, match=re.escape(f"could not write {run_dir / '.lock'}: ")):
        RunLock(run_dir)
    assert not os.path.lexists(run_dir / ".lock")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch.utils.tensorboard, "SummaryWriter", full)
    with pytest.raises(SaveError, match=re.escape(f"could not write the TensorBoard summaries in "
                                                  f"{(tmp_path / 'r_1D').resolve()}: No space left on device")):
        TensorBoardWriter(tmp_path, "r_1D", clear_old=True)


def test_a_run_id_and_behavior_too_long_for_a_file_name_are_refused_before_training(run_cli, workdir, monkeypatch):
    # a 200-byte run-id passed every check, then the first summary failed: "File name too long"
    (workdir / "long_behavior.py").write_text(
        "from palaestra.envs.builtin.simple1d import Simple1D\n\n"
        "def make(seed, num_areas):\n    return Simple1D(seed=seed, num_areas=num_areas, behavior_name='B' * 60)\n")
    monkeypatch.syspath_prepend(str(workdir))
    config = write_yaml(workdir / "c.yaml", SMALL.format(max_steps=400).replace("1D:", "default:"))
    run_id = "r" * 200
    for dry_run in (["--dry-run"], []):
        result = run_cli(str(config), "--env=long_behavior:make", f"--run-id={run_id}", *dry_run)
        assert result.code == 1 and "Traceback" not in result.log, result.log
        assert (f"with behavior '{'B' * 60}' names files of 287 bytes (summaries/.{run_id}_{'B' * 60}_metrics.csv... "
                "while it is written), above the 255 a file name may have; choose a run-id of at most 168 bytes"
                ) in result.log
        assert not (workdir / "summaries").exists() and not list((workdir / "models").glob("r*/*.pt"))
    assert run_cli(str(config), "--env=long_behavior:make", f"--run-id={'r' * 168}").code == 0
    # a behavior's name too long for any run-id: the name is what to change (it advised a negative length)
    (workdir / "longer_behavior.py").write_text(
        "from palaestra.envs.builtin.simple1d import Simple1D\n\n"
        "def make(seed, num_areas):\n    return Simple1D(seed=seed, num_areas=num_areas, behavior_name='B' * 240)\n")
    result = run_cli(str(config), "--env=longer_behavior:make", "--run-id=r", "--dry-run")
    assert result.code == 1 and "the behavior's name alone is too long (240 bytes): give it a shorter name" in \
        result.log and "at most -" not in result.log


def test_a_used_run_id_without_a_checkpoint_is_not_offered_resume(run_cli, small_config, workdir):
    # a run that stopped before its first save left its folder: --resume would only fail
    (workdir / "models/early").mkdir(parents=True)
    (workdir / "models/early/configuration.yaml").write_text("run_options: {seed: 1}\n")
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=early")
    assert result.code == 1 and "it saved no checkpoint to continue from: pass --force to start it over" in result.log
    assert "--resume" not in result.log


def test_log_lines_go_through_the_progress_bar_while_it_is_drawn():
    # written straight to a terminal, each summary line landed on the bar's line and left a stale
    # bar above it; tqdm clears the bar, writes the line and draws the bar again
    import logging

    from tqdm.contrib.logging import _TqdmLoggingHandler

    from palaestra.options import setup_logging
    from palaestra.run import _progress_bar

    setup_logging(debug=False)
    logger = logging.getLogger("palaestra")
    before = list(logger.handlers)
    with _progress_bar({}):
        assert any(isinstance(h, _TqdmLoggingHandler) for h in logger.handlers)
        assert not any(type(h) is logging.StreamHandler for h in logger.handlers)
    assert logger.handlers == before


def test_an_environment_failing_before_its_first_step_leaves_no_untrained_model(run_cli, workdir):
    # a model saved at step 0 passed for a result, and the fixed environment's rerun was refused
    import sys

    (workdir / "fails_at_reset.py").write_text(
        "from palaestra.envs.builtin.simple1d import Simple1D\n\n\n"
        "class Fails(Simple1D):\n    def reset(self, *args, **kwargs):\n        raise RuntimeError('boom in reset')\n\n\n"
        "def make(seed=0):\n    return Fails(seed=seed)\n")
    config = str(write_yaml(workdir / "c.yaml", SMALL.format(max_steps=300)))
    try:
        result = run_cli(config, "--env=fails_at_reset:make", "--run-id=r")
    finally:
        sys.modules.pop("fails_at_reset", None)
    assert result.code == 1 and "Traceback" not in result.log
    assert ("training stopped: RuntimeError: boom in reset (nothing was trained, so no model was saved; --force "
            "starts the run again)") in result.log
    assert not (workdir / "models/r/1D").exists() and not (workdir / "models/r/1D.onnx").exists()


def test_a_run_that_ends_without_an_update_says_its_model_is_untrained(run_cli, workdir):
    # max_steps just above buffer_size passes the settings' note, yet experience arrives in
    # time_horizon pieces and the run ends first; a run that updates says nothing, and neither
    # does a resumed one (its model was trained before). Seed 1: its rows arrive so that the run
    # ends before a buffer is full (with some seeds, seeds 2 and 10 of 0-11, a full 64-row segment
    # arrives first and the run updates, as it should)
    seed = 1
    config = write_yaml(workdir / "c.yaml", "1D:\n  batch_size: 16\n  buffer_size: 64\n  time_horizon: 64\n"
                                            "  max_steps: 70\n  summary_freq: 10\n")
    result = run_cli(str(config), "--env=Simple1DDiscrete", "--run-id=r", f"--seed={seed}")
    assert result.code == 0
    assert re.search(r"behavior '1D' reached step \d+ \(max_steps 70\) without a single update, so "
                     r"models/r/1D.onnx is the untrained policy", result.log), result.log
    config.write_text(config.read_text().replace("max_steps: 70", "max_steps: 300"))
    result = run_cli(str(config), "--env=Simple1DDiscrete", "--run-id=r2", f"--seed={seed}")
    assert result.code == 0 and "without a single update" not in result.log, result.log
    result = run_cli(str(config), "--env=Simple1DDiscrete", "--run-id=r", "--resume")
    assert result.code == 0 and "without a single update" not in result.log


def test_experience_crossing_several_summary_steps_at_once_is_said_and_summarized_once(run_cli, workdir):
    # 16 Pyramids agents x 64-step pieces arrive 1,024 steps at a time: rows come every other 500
    config = write_yaml(workdir / "c.yaml", "Pyramids:\n  buffer_size: 4096\n  batch_size: 256\n  hidden_units: 16\n"
                                            "  summary_freq: 500\n  max_steps: 3000\n  time_horizon: 64\n")
    result = run_cli(str(config), "--env=Pyramids", "--run-id=p", "--seed=0")
    assert result.code == 0
    assert result.log.count("that cross several multiples of summary_freq 500 at once: a batch gets one summary, "
                            "labelled with the first multiple it crossed") == 1
    steps = [int(row.split(",")[0]) for row in (workdir / "summaries/p_Pyramids.csv").read_text().splitlines()[1:]]
    assert steps == [500, 1500, 2500]


def test_a_run_stopped_before_max_steps_is_not_told_to_raise_max_steps(caplog):
    # a Ctrl+C before the first update is not a max_steps too small: the end warning needs the
    # behavior to have reached max_steps (and _finish gives it none when a signal stopped the run)
    import logging
    from types import SimpleNamespace

    from palaestra.run import _warn_of_untrained_exports

    def trainer(step):
        return SimpleNamespace(name="1D", owns_learning=True, training=True, updates_this_run=0, loaded_from=None,
                               step=step, settings=SimpleNamespace(max_steps=1000), onnx_path="models/r/1D.onnx")

    with caplog.at_level(logging.WARNING, logger="palaestra"):
        _warn_of_untrained_exports(SimpleNamespace(trainers={"1D": trainer(400)}))
        assert "without a single update" not in caplog.text
        _warn_of_untrained_exports(SimpleNamespace(trainers={"1D": trainer(1024)}))
        assert "reached step 1024 (max_steps 1000) without a single update" in caplog.text
        assert "raise max_steps" in caplog.text


def test_a_run_whose_time_horizon_outlasts_max_steps_is_told_to_lower_it(caplog):
    # endless episodes reach the trainer only as time_horizon's pieces: raising max_steps would not help
    import logging
    from types import SimpleNamespace

    from palaestra.run import _warn_of_untrained_exports

    untrained = SimpleNamespace(name="1D", owns_learning=True, training=True, updates_this_run=0, loaded_from=None,
                                step=400_000, settings=SimpleNamespace(max_steps=2000, time_horizon=100_000),
                                onnx_path="models/r/1D.onnx")
    with caplog.at_level(logging.WARNING, logger="palaestra"):
        _warn_of_untrained_exports(SimpleNamespace(trainers={"1D": untrained}))
    assert "reached step 400000 (max_steps 2000) without a single update" in caplog.text
    assert "lower time_horizon (100000) below max_steps" in caplog.text and "raise max_steps" not in caplog.text


def test_a_full_dev_shm_stops_the_run_with_what_to_do(run_cli, small_config, monkeypatch):
    import errno

    if not hasattr(os, "posix_fallocate") or not os.path.isdir("/dev/shm"):
        pytest.skip("no POSIX shared memory in /dev/shm here")

    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)  # (the main process's blocks: the workers' control block first)
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=shm", "--num-envs=2")
    assert result.code == 1 and "Traceback" not in result.log
    assert "/dev/shm has" in result.log and "or share less: act in the main process (--acting=main" in result.log
    assert "set threaded: false (fewer copies of the weights), or a smaller buffer_size" in result.log


def test_too_many_open_files_at_start_up_says_the_limit_and_what_uses_it(run_cli, small_config, monkeypatch):
    import errno

    from palaestra import run_folders

    def no_more_files(run_dir):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(run_folders.RunLock, "__init__", lambda self, run_dir: no_more_files(run_dir))
    result = run_cli(small_config, "--env=Simple1DDiscrete", "--run-id=files")
    assert result.code == 1 and "Traceback" not in result.log
    assert "too many open files: this process reached its limit" in result.log
    assert "raise the limit before the run (ulimit -n 4096) or use fewer --num-envs" in result.log
