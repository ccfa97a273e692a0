"""ML-Agents' test matrix for visual and recurrent policies (reference §13.3), seeded: the 1-D
environments with image observations instead of the vector (PPO and SAC, one or two images,
each image encoder) and Memory1D, whose goal is seen only in an episode's first three
observations (PPO and SAC with an LSTM). ML-Agents' criterion: the mean of the last 5 finished
episodes above the threshold. Seed sweeps of each row (seeds 1-8) are in docs/benchmarks.md,
with why a row's settings differ from ML-Agents' where they do."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from tests.conftest import write_yaml

pytestmark = pytest.mark.training

# ML-Agents' own base configs of its 1-D training tests (reference §13.2)
PPO_BASE = dict(trainer="ppo", batch_size=16, beta=5.0e-3, buffer_size=64, epsilon=0.2, hidden_units=32, lambd=0.95,
                learning_rate=5.0e-3, learning_rate_schedule="constant", max_steps=2000, memory_size=16,
                normalize=False, num_epoch=3, num_layers=1, time_horizon=64, sequence_length=64, summary_freq=500,
                use_recurrent=False, reward_signals={"extrinsic": {"strength": 1.0, "gamma": 0.99}})
SAC_BASE = dict(trainer="sac", batch_size=8, buffer_size=500, buffer_init_steps=100, hidden_units=16, init_entcoef=0.01,
                learning_rate=5.0e-3, max_steps=1000, memory_size=16, normalize=False, steps_per_update=1,
                num_layers=1, time_horizon=64, sequence_length=32, summary_freq=100, tau=0.01, use_recurrent=False,
                reward_signals={"extrinsic": {"strength": 1.0, "gamma": 0.99}})


def _last_five(run_cli, workdir, episode_returns, base: dict, env: str, env_args: list[str], seed: int = 1,
               flags: tuple[str, ...] = (), **overrides) -> float:
    config = write_yaml(workdir / "c.yaml", yaml.safe_dump({"1D": base | overrides}))
    args = [str(config), f"--env={env}", "--run-id=id", f"--seed={seed}", "--save-freq=99999", *flags]
    result = run_cli(*args, *(["--env-args", *env_args] if env_args else []))
    assert result.code == 0, result.log
    assert len(episode_returns) >= 5
    return float(np.mean(episode_returns[-5:]))


def _images(count: int, step: float, size: int = 20) -> list[str]:
    return [f"num_visual={count}", "num_vector=0", f"step_size={step}", f"vis_obs_size=[{size},{size},3]"]


@pytest.mark.parametrize("env,images", [("Simple1DDiscrete", 1), ("Simple1DContinuous", 2)])
def test_visual_ppo(run_cli, workdir, episode_returns, env, images):
    score = _last_five(run_cli, workdir, episode_returns, PPO_BASE, env, _images(images, 0.2), learning_rate=3.0e-4)
    assert score > 0.9


@pytest.mark.parametrize("encoder,images", [("nature_cnn", 2), ("resnet", 2), ("nature_cnn", 1)])
def test_visual_advanced_ppo(run_cli, workdir, episode_returns, encoder, images):
    # ML-Agents: learning rate 3e-4 for 500 steps, threshold 0.5. With the goal drawn every
    # episode (so the policy must read the image) that is a coin flip; 1e-3 for 1000 steps with
    # gradient clipping passes every seed (docs/benchmarks.md). The threshold is 0.9, as the other
    # rows': at step 0.5 a missed goal costs about -1.12, so 0.5 took 4 episodes of 5, which a
    # policy blind to the images reaches in 6 runs of 32 (0.9: all 5, 1 of 32)
    score = _last_five(run_cli, workdir, episode_returns, PPO_BASE, "Simple1DDiscrete", _images(images, 0.5, 36),
                       learning_rate=1.0e-3, max_steps=1000, summary_freq=100, vis_encode_type=encoder,
                       max_grad_norm=0.5)
    assert score > 0.9


@pytest.mark.parametrize("env", ["Memory1DDiscrete", "Memory1DContinuous"])
def test_recurrent_ppo(run_cli, workdir, episode_returns, env):
    score = _last_five(run_cli, workdir, episode_returns, PPO_BASE, env, [], max_steps=3000, batch_size=64,
                       buffer_size=128, use_recurrent=True)
    assert score > 0.9


@pytest.mark.parametrize("env,env_args,overrides", [
    ("Memory1DDiscrete", [], dict(max_steps=3000, batch_size=64, buffer_size=128, use_recurrent=True)),
    ("Simple1DContinuous", _images(1, 0.2), dict(learning_rate=3.0e-4)),
], ids=["recurrent", "visual"])
def test_recurrent_and_visual_ppo_acting_in_two_worker_processes(run_cli, workdir, episode_returns, env, env_args,
                                                                 overrides):
    # the workers act with a one-thread torch copy of the policy, keep their agents' memories and
    # send images as uint8 through shared memory
    score = _last_five(run_cli, workdir, episode_returns, PPO_BASE, env, env_args, flags=("--num-envs=2",),
                       **overrides)
    assert score > 0.9


@pytest.mark.parametrize("env,images", [("Simple1DDiscrete", 1), ("Simple1DContinuous", 2)])
def test_visual_sac(run_cli, workdir, episode_returns, env, images):
    score = _last_five(run_cli, workdir, episode_returns, SAC_BASE, env, _images(images, 0.2), batch_size=16,
                       learning_rate=3.0e-4)
    assert score > 0.9


@pytest.mark.parametrize("encoder,images", [("nature_cnn", 2), ("resnet", 1)])
def test_visual_advanced_sac(run_cli, workdir, episode_returns, encoder, images):
    # ML-Agents' row trains 100 steps, enough when the goal never changes (its 0.15 environment);
    # with a goal drawn every episode the same row with a vector observation passes 0/8 seeds at
    # 100 steps, 5/8 at 300 and 8/8 at 1,000 (the base config's length), which the row uses here.
    # resnet's row failed 2 seeds of 8 while the actor's loss trained its own encoder (its features
    # blew up and the policy saturated); with the first critic's encoder, 8/8 (docs/benchmarks.md)
    # (the threshold 0.9, not ML-Agents' 0.5, as the PPO row's)
    score = _last_five(run_cli, workdir, episode_returns, SAC_BASE, "Simple1DDiscrete", _images(images, 0.5, 36),
                       batch_size=16, learning_rate=3.0e-4, vis_encode_type=encoder, buffer_init_steps=0)
    assert score > 0.9


@pytest.mark.parametrize("env,schedule", [("Memory1DDiscrete", "constant"), ("Memory1DContinuous", "linear")])
def test_recurrent_sac(run_cli, workdir, episode_returns, env, schedule):
    # ML-Agents' row with sequences of 8 rows instead of 32: a Memory1D episode is 5-7 steps and
    # sequences never span two episodes, so a 32-row mini-batch held one sequence of ~6 real rows;
    # continuous actions then failed on seed 3 of 8. Continuous actions also decay the learning
    # rate: Memory1D's best action is saturated, whose squashed entropy lies far below ML-Agents'
    # target of -1, so at a constant rate the entropy coefficient keeps growing and pulled 2 runs
    # of 32 off the solved policy near the end; decaying it (and with it the coefficient's own
    # steps) passed 32/32 (docs/benchmarks.md)
    score = _last_five(run_cli, workdir, episode_returns, SAC_BASE, env, [], batch_size=32, use_recurrent=True,
                       max_steps=2000, sequence_length=8, learning_rate_schedule=schedule)
    assert score > 0.9


def _last_summary(workdir, run: str) -> float:
    import csv

    with open(workdir / "summaries" / f"{run}.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["Environment/Cumulative Reward"] not in ("", "None")]
    return float(rows[-1]["Environment/Cumulative Reward"])


def test_an_lstm_solves_hallway_where_a_feed_forward_policy_stays_at_chance(run_cli, workdir):
    # Hallway shows the goal's colour in an episode's first observation only: the shipped section
    # (an LSTM) against the same without memory. Solved (the heuristic, which reads the hidden
    # colour): 0.93; chance, always one room: 0.38 (docs/environments.md). Sweep: docs/benchmarks.md
    from palaestra.envs.sources import make_env
    from palaestra.evaluation import evaluate_onnx
    from tests.conftest import SHIPPED_CONFIG

    text = SHIPPED_CONFIG.read_text()
    section = text[text.index("\nHallway:\n") + 1:]
    section = section[: section.index("\n\n")].replace("max_steps: 1.0e5", "max_steps: 3.0e4")
    assert "use_recurrent: true" in section and "max_steps: 3.0e4" in section
    write_yaml(workdir / "lstm.yaml", section)
    write_yaml(workdir / "ff.yaml", section.replace("use_recurrent: true", "use_recurrent: false"))
    assert run_cli(str(workdir / "lstm.yaml"), "--env=Hallway", "--run-id=lstm", "--seed=1").code == 0
    assert run_cli(str(workdir / "ff.yaml"), "--env=Hallway", "--run-id=ff", "--seed=1").code == 0
    assert _last_summary(workdir, "lstm_Hallway") >= 0.9
    assert _last_summary(workdir, "ff_Hallway") <= 0.5
    returns = evaluate_onnx(make_env("Hallway", seed=3), workdir / "models/lstm/Hallway.onnx", episodes=40)
    assert np.mean(returns) >= 0.9  # the exported model, its memory carried step to step
