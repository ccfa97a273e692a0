"""An LSTM policy learns CartPole with its velocities hidden (``palaestra/CartPoleNoVel-v1``),
trained with rl-zoo's RecurrentPPO hyperparameters as shipped in config/rl_zoo_cartpole_novel.yaml,
and the exported model, run as Unity's inference engine runs it (each agent's memory carried from
one decision to the next and zeroed at its episode's end), balances the pole.

Not yet what rl-zoo reports (500): the shipped settings (with the reward normalization rl-zoo's
`normalize: true` implies, and its ReLU) reach 475 on 7 of seeds 1-8 here and 348-500 on all
(docs/benchmarks.md), so this test asks what every seed gives with a margin, 250 (a random
policy: about 20),
and the gap to sb3-contrib stays open in the issue."""

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
    assert np.mean(returns) >= 250.0
