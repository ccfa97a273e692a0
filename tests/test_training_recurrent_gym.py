"""An LSTM policy learns CartPole with its velocities hidden (``palaestra/CartPoleNoVel-v1``),
trained with rl-zoo's RecurrentPPO hyperparameters as shipped in config/rl_zoo_cartpole_novel.yaml,
and the exported model, run as Unity's inference engine runs it (each agent's memory carried from
one decision to the next and zeroed at its episode's end), balances the pole.

rl-zoo reports 500 at 100k steps (one run). Over seeds 1-8 the exported model reaches 475 on 5 to
7 of them here, sb3-contrib's RecurrentPPO with the same settings on 5 (docs/benchmarks.md): with
these hyperparameters a run that has balanced the pole for a while can fall back (seed 1 now: a
training mean of 475 at 60k steps, 150-250 after it, 192 from its exported model). So the test
asks, with a margin, what every seed of the recorded sweeps gave: a training summary of at least
250 on the way (the lowest best: 321) and an exported model far above a random policy (about
20; the lowest: 168)."""

from __future__ import annotations

import csv
import numpy as np
import pytest

from palaestra.envs.cartpole_no_velocity import ENV_ID
from palaestra.envs.sources import make_env
from palaestra.evaluation import evaluate_onnx
from tests.conftest import REPO

pytestmark = pytest.mark.training


def test_rl_zoo_recurrent_hyperparameters_solve_cartpole_without_velocities(run_cli, workdir):
    config = REPO / "config" / "rl_zoo_cartpole_novel.yaml"
    result = run_cli(str(config), f"--env={ENV_ID}", "--run-id=zoo", "--seed=1", "--num-areas=8", "--save-freq=999999")
    assert result.code == 0, result.log
    with open(workdir / "summaries" / "zoo_palaestra_CartPoleNoVel-v1.csv", newline="") as fh:
        means = [float(row["Environment/Cumulative Reward"]) for row in csv.DictReader(fh)
                 if row["Environment/Cumulative Reward"] not in ("", "None")]
    assert max(means) >= 250.0, means
    model = workdir / "models/zoo/palaestra_CartPoleNoVel-v1.onnx"
    returns = evaluate_onnx(make_env(ENV_ID, seed=3, num_areas=2), model, episodes=20)
    assert len(returns) == 20
    assert np.mean(returns) >= 120.0
