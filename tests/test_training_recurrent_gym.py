"""An LSTM policy solves CartPole with its velocities hidden (``palaestra/CartPoleNoVel-v1``),
trained with rl-zoo's RecurrentPPO hyperparameters as shipped in config/rl_zoo_cartpole_novel.yaml,
and the exported model, run as Unity's inference engine runs it (each agent's memory carried from
one decision to the next and zeroed at its episode's end), scores what rl-zoo reports (500; the
environment's reward threshold 475). The seed sweep is in docs/benchmarks.md: the shipped
settings reach it on some seeds only (3 of seeds 1-8; seed 1: 236), so a score below it is an
expected failure (XFAIL) until they do on every seed; training or export failing, or the model
running with fewer episodes, still fails the test."""

from __future__ import annotations

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
    model = workdir / "models/zoo/palaestra_CartPoleNoVel-v1.onnx"
    returns = evaluate_onnx(make_env(ENV_ID, seed=3, num_areas=2), model, episodes=20)
    assert len(returns) == 20
    if np.mean(returns) < 475.0:
        pytest.xfail(f"exported model {np.mean(returns):.1f} < 475: rl-zoo's RecurrentPPO settings solve "
                     "CartPoleNoVel-v1 on 3 of seeds 1-8 here (docs/benchmarks.md)")
