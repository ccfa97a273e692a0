"""PPO trains each small environment to its reward threshold (seeded; CI-sized).

The thresholds are the issue's: the 1-D test environments pass ML-Agents' criterion (mean of
the last 5 episodes > 0.9) with ML-Agents' own test config; Basic's policy is solved (0.93,
checked on the exported ONNX model's deterministic actions); GridWorld >= 0.8; 3DBall >= 90;
CartPole-v1 reaches 500 within 100k steps."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from palaestra.envs.base import ActionTuple
from palaestra.envs.builtin import BUILTIN_ENVS
from palaestra.envs.sources import make_env
from tests.conftest import SHIPPED_CONFIG, write_yaml

pytestmark = pytest.mark.training


def last_summary(workdir: Path, category: str) -> dict[str, float]:
    with open(workdir / "summaries" / f"{category}.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["Environment/Cumulative Reward"] not in ("", "None")]
    return {k: float(v) for k, v in rows[-1].items() if v not in ("", "None")}


def evaluate_onnx(env, onnx_path: Path, decisions: int) -> list[float]:
    """Episode returns of the exported model's deterministic actions."""
    session = ort.InferenceSession(str(onnx_path))
    name = env.behavior_name
    spec = env.behavior_specs[name]
    env.reset()
    running = np.zeros(env.n)
    returns: list[float] = []
    for _ in range(decisions):
        decision, _ = env.get_steps(name)
        feeds = {"obs_0": decision.obs[0]}
        if spec.action_spec.is_discrete:
            masks = decision.action_mask
            allowed = ~np.concatenate(masks, 1) if masks else np.ones((len(decision), sum(spec.action_spec.discrete_branches)), bool)
            feeds["action_masks"] = allowed.astype(np.float32)
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        n = len(decision)
        env.set_actions(name, ActionTuple(
            continuous=outputs.get("deterministic_continuous_actions", np.zeros((n, 0), np.float32)),
            discrete=outputs.get("deterministic_discrete_actions", np.zeros((n, 0))).astype(np.int32),
        ))
        env.step()
        decision, terminal = env.get_steps(name)
        running[terminal.agent_id] += terminal.reward
        returns += running[terminal.agent_id].tolist()
        running[terminal.agent_id] = 0.0
        running[decision.agent_id] += decision.reward
    return returns


MLAGENTS_1D_TEST_CONFIG = """
1D:
  trainer: ppo
  batch_size: 16
  beta: 5.0e-3
  buffer_size: 64
  epsilon: 0.2
  hidden_units: 32
  lambd: 0.95
  learning_rate: 5.0e-3
  learning_rate_schedule: constant
  max_steps: 2000
  memory_size: 16
  normalize: false
  num_epoch: 3
  num_layers: 1
  time_horizon: 64
  sequence_length: 64
  summary_freq: 500
  use_recurrent: false
  reward_signals:
    extrinsic:
      strength: 1.0
      gamma: 0.99
"""


@pytest.mark.parametrize("env_name", ["Simple1DDiscrete", "Simple1DContinuous"])
@pytest.mark.parametrize("seed", [1, 2])
def test_ppo_solves_the_1d_test_environments(run_cli, workdir, env_name, seed, monkeypatch):
    # ML-Agents' criterion: the mean of the last 5 finished episodes is above the threshold.
    # A sweep of seeds 0-11 passed 24/24 (docs/benchmarks.md); seed 1337 scores 0.74 on the
    # continuous variant, so this is a pass rate near 95%, and the test pins passing seeds.
    from palaestra.rollout.collector import Collector

    finished: list[float] = []
    original = Collector.take_episode_stats

    def record(self):
        stats = original(self)
        finished.extend(stats.returns)
        return stats

    monkeypatch.setattr(Collector, "take_episode_stats", record)
    config = write_yaml(workdir / "c.yaml", MLAGENTS_1D_TEST_CONFIG)
    result = run_cli(str(config), f"--env={env_name}", "--run-id=id", f"--seed={seed}", "--save-freq=99999",
                     "--keep-checkpoints=1")
    assert result.code == 0, result.log
    assert len(finished) >= 5 and np.mean(finished[-5:]) > 0.9


def test_ppo_solves_basic(run_cli, workdir):
    # The shipped section, shortened: over 30k instead of 500k steps a linear learning-rate decay
    # would end almost at once, so the rate is constant. Seeds 0-7: 7 of 8 reach 0.93; seed 1
    # settles on the small goal (0.07), Basic's known local optimum (docs/benchmarks.md).
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
    returns = evaluate_onnx(BUILTIN_ENVS["Basic"](seed=3), workdir / "models/basic/Basic.onnx", 200)
    assert len(returns) >= 20 and np.mean(returns) >= 0.93 - 1e-6


def test_ppo_solves_gridworld(run_cli, workdir):
    config = write_yaml(workdir / "c.yaml", SHIPPED_CONFIG.read_text().replace("max_steps: 500000", "max_steps: 80000"))
    assert run_cli(str(config), "--env=GridWorld", "--run-id=grid", "--seed=1").code == 0
    assert last_summary(workdir, "grid_GridWorld")["Environment/Cumulative Reward"] >= 0.8
    returns = evaluate_onnx(BUILTIN_ENVS["GridWorld"](seed=3), workdir / "models/grid/GridWorld.onnx", 300)
    assert np.mean(returns) >= 0.8


def test_ppo_solves_3dball_with_the_shipped_config(run_cli, workdir):
    config = write_yaml(workdir / "c.yaml", SHIPPED_CONFIG.read_text().replace("max_steps: 5.0e5", "max_steps: 2.2e5"))
    assert run_cli(str(config), "--env=3DBall", "--run-id=ball", "--seed=1").code == 0
    assert last_summary(workdir, "ball_3DBall")["Environment/Cumulative Reward"] >= 90
    returns = evaluate_onnx(BUILTIN_ENVS["3DBall"](seed=3), workdir / "models/ball/3DBall.onnx", 1100)
    assert np.mean(returns) >= 90


def test_ppo_solves_cartpole_within_100k_steps(run_cli, workdir):
    assert run_cli(str(SHIPPED_CONFIG), "--env=CartPole-v1", "--run-id=cp", "--seed=1", "--num-areas=8").code == 0
    assert last_summary(workdir, "cp_CartPole-v1")["Environment/Cumulative Reward"] >= 475
    returns = evaluate_onnx(make_env("CartPole-v1", seed=3, num_areas=4), workdir / "models/cp/CartPole-v1.onnx", 1100)
    assert np.mean(returns) >= 475
