"""PPO trains each small environment to its reward threshold (seeded; CI-sized).

The thresholds are the issue's: the 1-D test environments pass ML-Agents' criterion (mean of
the last 5 episodes > 0.9) with ML-Agents' own test config; Basic's policy is solved (0.93,
checked on the exported ONNX model's deterministic actions); GridWorld >= 0.8; 3DBall >= 90;
CartPole-v1 reaches 500 within 100k steps."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from palaestra.envs.builtin import BUILTIN_ENVS
from palaestra.envs.sources import make_env
from palaestra.evaluation import evaluate_onnx
from tests.conftest import REPO, SHIPPED_CONFIG, write_yaml

pytestmark = pytest.mark.training


def last_summary(workdir: Path, category: str) -> dict[str, float]:
    with open(workdir / "summaries" / f"{category}.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["Environment/Cumulative Reward"] not in ("", "None")]
    return {k: float(v) for k, v in rows[-1].items() if v not in ("", "None")}




@pytest.mark.parametrize("env_name", ["Simple1DDiscrete", "Simple1DContinuous"])
@pytest.mark.parametrize("seed", [1, 2])
def test_ppo_solves_the_1d_test_environments(run_cli, workdir, env_name, seed, episode_returns):
    # ML-Agents' criterion: the mean of the last 5 finished episodes is above the threshold.
    # A sweep of seeds 0-11 passed 24/24 (docs/benchmarks.md); seed 1337 scores 0.74 on the
    # continuous variant, so this is a pass rate near 95%, and the test pins passing seeds.
    # The shipped config's 1D section is ML-Agents' PPO test config, unchanged.
    result = run_cli(str(SHIPPED_CONFIG), f"--env={env_name}", "--run-id=id", f"--seed={seed}", "--save-freq=99999",
                     "--keep-checkpoints=1")
    assert result.code == 0, result.log
    assert len(episode_returns) >= 5 and np.mean(episode_returns[-5:]) > 0.9


def test_ppo_solves_basic(run_cli, workdir):
    # The shipped section, shortened: over 30k instead of 500k steps a linear learning-rate decay
    # would end almost at once, so the rate is constant. Seeds 0-15: 16 of 16 reach 0.93
    # (docs/benchmarks.md; before the value head started small, 4 of them settled on the small
    # goal, Basic's local optimum).
    config = write_yaml(workdir / "c.yaml", """
        Basic:
          batch_size: 32
          num_layers: 1
          hidden_units: 20
          beta: 5.0e-3
          buffer_size: 256
          max_steps: 30000
          learning_rate_schedule: constant
          summary_freq: 5000
          time_horizon: 3
          reward_signals:
            extrinsic: {strength: 1.0, gamma: 0.9}
    """)
    assert run_cli(str(config), "--env=Basic", "--run-id=basic", "--seed=0").code == 0
    assert last_summary(workdir, "basic_Basic")["Environment/Cumulative Reward"] >= 0.92
    returns = evaluate_onnx(BUILTIN_ENVS["Basic"](seed=3), workdir / "models/basic/Basic.onnx", episodes=20)
    assert len(returns) == 20 and np.mean(returns) >= 0.93 - 1e-6


@pytest.mark.parametrize("env_name,shorten,flags,trained", [
    # (environment, shortening of the shipped section, extra flags, minimum mean reward of the
    # last training summary and of the exported model's deterministic episodes). Seed sweeps of
    # each case (seeds 0-7) are in docs/benchmarks.md.
    ("GridWorld", ("max_steps: 500000", "max_steps: 80000"), [], 0.8),
    # 300k rather than 220k steps: at 220k the last summary of seeds 0-7 was 90.5-100, a thin
    # margin; at 300k it is 100 on all eight
    ("3DBall", ("max_steps: 5.0e5", "max_steps: 3.0e5"), [], 90.0),
    ("CartPole-v1", None, ["--num-areas=8"], 475.0),  # Gymnasium's threshold for CartPole-v1
    # The same with two environment worker processes acting themselves (issue 4).
    ("3DBall", ("max_steps: 5.0e5", "max_steps: 3.0e5"), ["--num-envs=2"], 90.0),
    # The shipped section's threaded: false: the workers wait for each update (seeds 0-7: 500)
    ("CartPole-v1", None, ["--num-envs=2", "--num-areas=4"], 475.0),
])
def test_ppo_solves_with_the_shipped_config(run_cli, workdir, env_name, shorten, flags, trained):
    text = SHIPPED_CONFIG.read_text()
    config = write_yaml(workdir / "c.yaml", text.replace(*shorten) if shorten else text)
    assert run_cli(str(config), f"--env={env_name}", "--run-id=r", "--seed=1", *flags).code == 0
    env = make_env(env_name)
    behavior = next(iter(env.behavior_specs))
    assert last_summary(workdir, f"r_{behavior}")["Environment/Cumulative Reward"] >= trained
    returns = evaluate_onnx(make_env(env_name, seed=3, num_areas=2), workdir / f"models/r/{behavior}.onnx", episodes=20)
    assert len(returns) == 20 and np.mean(returns) >= trained


def test_rl_zoo_cartpole_hyperparameters_give_rl_zoo_s_result(run_cli, workdir):
    # rl-zoo's PPO settings for CartPole-v1, copied as they are (reward strength 1), with the
    # defaults of Stable-Baselines3 that they were tuned with written out (the shipped example
    # config/rl_zoo_cartpole.yaml). Seeds 0-16: 500 on all (docs/benchmarks.md).
    config = REPO / "config" / "rl_zoo_cartpole.yaml"
    assert run_cli(str(config), "--env=CartPole-v1", "--run-id=zoo", "--seed=1", "--num-areas=8").code == 0
    assert last_summary(workdir, "zoo_CartPole-v1")["Environment/Cumulative Reward"] >= 475.0
    returns = evaluate_onnx(make_env("CartPole-v1", seed=3, num_areas=2), workdir / "models/zoo/CartPole-v1.onnx",
                            episodes=20)
    assert np.mean(returns) >= 475.0


def test_ppo_trains_on_a_python_factory_environment(run_cli, workdir, episode_returns):
    # --env=module:callable, with --env-args reaching the factory (the working directory is importable).
    (workdir / "line_world.py").write_text(
        "from palaestra.envs.builtin.simple1d import Simple1D\n\n\n"
        "def make(seed, num_areas, step_size):\n"
        "    env = Simple1D(seed=seed, num_areas=num_areas, behavior_name='Line')\n"
        "    env.step_size = step_size\n"
        "    return env\n")
    section = SHIPPED_CONFIG.read_text().split("\n1D:\n", 1)[1].split("\n\n", 1)[0]
    config = write_yaml(workdir / "c.yaml", "Line:\n" + section + "\n")
    try:
        result = run_cli(str(config), "--env=line_world:make", "--run-id=f", "--seed=1", "--env-args", "step_size=0.2")
    finally:
        import sys

        sys.modules.pop("line_world", None)
    assert result.code == 0, result.log
    assert len(episode_returns) >= 5 and np.mean(episode_returns[-5:]) > 0.9


def test_ppo_trains_two_behaviors_of_a_pettingzoo_environment(run_cli, workdir):
    # A PettingZoo parallel environment from a factory: "seer_0"/"seer_1" are behavior "seer",
    # "late_0" (joins late, leaves early) is behavior "late"; each is rewarded for naming its sign.
    pytest.importorskip("pettingzoo")
    from tests.test_envs import PZ_MODULE

    (workdir / "guess_env.py").write_text(PZ_MODULE)
    config = write_yaml(workdir / "c.yaml", """
        default:
          batch_size: 32
          buffer_size: 128
          hidden_units: 16
          num_layers: 1
          learning_rate: 3.0e-3
          learning_rate_schedule: constant
          beta: 1.0e-2
          max_steps: 4000
          time_horizon: 16
          summary_freq: 1000
    """)
    try:
        result = run_cli(str(config), "--env=guess_env:make", "--run-id=pz", "--seed=0")
    finally:
        import sys

        sys.modules.pop("guess_env", None)
    assert result.code == 0, result.log
    assert last_summary(workdir, "pz_seer")["Environment/Cumulative Reward"] >= 7.5  # of 8
    assert last_summary(workdir, "pz_late")["Environment/Cumulative Reward"] >= 2.7  # of 3
    assert (workdir / "models/pz/seer.onnx").is_file() and (workdir / "models/pz/late.onnx").is_file()
