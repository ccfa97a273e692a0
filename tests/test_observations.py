"""Observations keep their shapes up to the encoder (networks/encoders.py): a behavior with two
vector observations trains exactly as the same behavior with them side by side in one; the
buffers keep image columns as uint8; the vector encoder leaves images to the image encoders
(tests/test_visual.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from palaestra.algorithms.ppo import PPO
from palaestra.algorithms.sac import SAC
from palaestra.envs.base import ActionSpec, BehaviorSpec, DecisionSteps, TerminalSteps
from palaestra.networks.encoders import VectorEncoder, concatenate_vectors
from palaestra.rollout.buffers import ReplayBuffer, RolloutBuffer, observation_columns, observations
from palaestra.rollout.collector import Collector
from palaestra.settings import load_trainer_config
from tests.conftest import write_yaml

TWO = BehaviorSpec(((3,), (2,)), ActionSpec(continuous_size=2))
FLAT = BehaviorSpec(((5,),), ActionSpec(continuous_size=2))  # the same observations side by side


def _settings(tmp_path, trainer: str):
    extra = ("  batch_size: 16\n  buffer_size: 64\n  num_epoch: 2\n" if trainer == "ppo" else
             "  batch_size: 16\n  buffer_size: 1000\n  buffer_init_steps: 0\n  steps_per_update: 8\n")
    text = f"B:\n  trainer: {trainer}\n  hidden_units: 8\n  num_layers: 2\n  normalize: true\n  time_horizon: 8\n{extra}"
    return load_trainer_config(write_yaml(tmp_path / f"{trainer}.yaml", text)).for_behavior("B")


def _trained(algorithm_class, spec, settings, steps: int = 80):
    """The algorithm after acting, collecting and updating on fixed observations."""
    torch.manual_seed(0)
    algorithm = algorithm_class(spec, settings, torch.device("cpu"), np.random.default_rng(0))
    collector = Collector(spec, settings.time_horizon)
    rng = np.random.default_rng(1)
    ids = np.arange(4)
    for t in range(steps):
        flat = rng.normal(size=(4, 5)).astype(np.float32)
        obs = [flat] if spec is FLAT else [flat[:, :3], flat[:, 3:]]
        ended = ids[: (t % 7 == 6) * 2]
        terminal = TerminalSteps([o[ended] for o in obs], np.ones(len(ended), np.float32), ended,
                                 np.zeros(len(ended), bool)) if len(ended) else TerminalSteps.empty(spec)
        _, seg = collector.step(DecisionSteps(obs, flat[:, 0].copy(), ids), terminal, algorithm.act)
        if seg is not None:
            algorithm.collect(seg)
        while algorithm.ready():
            algorithm.update()
    assert algorithm.update_count > 0
    return algorithm


def _train(algorithm_class, spec, settings):
    """The weights of the trained algorithm."""
    return {k: v.clone() for k, v in _trained(algorithm_class, spec, settings).state_dict()["policy"].items()}


@pytest.mark.parametrize("algorithm_class", [PPO, SAC], ids=["ppo", "sac"])
def test_two_vector_observations_train_as_their_concatenation(tmp_path, algorithm_class):
    settings = _settings(tmp_path, "ppo" if algorithm_class is PPO else "sac")
    two, flat = _train(algorithm_class, TWO, settings), _train(algorithm_class, FLAT, settings)
    assert two.keys() == flat.keys()  # the stored weights do not depend on how observations travel
    for name in two:
        torch.testing.assert_close(two[name], flat[name], rtol=1e-5, atol=1e-6, msg=name)


def test_the_encoder_concatenates_vector_observations_and_leaves_images_to_the_image_encoders():
    a, b = np.ones((2, 3), np.float32), np.arange(4, dtype=np.float32).reshape(2, 2)
    np.testing.assert_array_equal(concatenate_vectors([a, b]), np.concatenate([a, b], 1))
    assert concatenate_vectors([a]) is a  # one vector observation: nothing to copy
    torch.testing.assert_close(concatenate_vectors([torch.as_tensor(a), torch.as_tensor(b)]),
                               torch.as_tensor(np.concatenate([a, b], 1)))
    assert concatenate_vectors([np.zeros((0, 3)), np.zeros((0, 2))]).shape == (0, 5)
    image = np.zeros((2, 8, 8, 3), np.uint8)
    encoder = VectorEncoder([(3,), (8, 8, 3), (2,)])
    assert encoder.size == 5
    np.testing.assert_array_equal(encoder([a, image, b]), np.concatenate([a, b], 1))
    assert VectorEncoder([(8, 8, 3)])([image]).shape == (2, 0)  # images only: no vector features


@pytest.mark.parametrize("buffer", [RolloutBuffer(), ReplayBuffer(100)], ids=["rollout", "replay"])
def test_buffers_keep_each_observation_column_in_its_own_dtype(buffer):
    image = np.random.default_rng(0).integers(0, 256, size=(10, 4, 4, 3), dtype=np.uint8)
    vector = np.ones((10, 3), np.float32)
    for _ in range(3):
        buffer.add(**observation_columns([vector, image]), env_reward=np.zeros(10, np.float32))
    columns = buffer.view() if isinstance(buffer, RolloutBuffer) else buffer.sample(7, np.random.default_rng(1))
    stored_vector, stored_image = observations(columns)
    assert stored_image.dtype == np.uint8 and stored_image.shape[1:] == (4, 4, 3)
    assert stored_vector.dtype == np.float32 and stored_vector.shape[1:] == (3,)
    assert buffer.data["obs_1"].itemsize == 1  # a quarter of float32


def test_a_replay_buffer_saved_with_flat_observation_columns_still_loads(tmp_path):
    # replay_buffer.pt files written before observations kept their shapes hold one flat obs and
    # next_obs column; --resume splits them into the per-observation columns
    sac = _trained(SAC, TWO, _settings(tmp_path, "sac"))
    saved = sac.buffer.state_dict()  # each column one array, the next observations written out, as then
    whole = {k: torch.from_numpy(v) for k, v in saved["columns"].items()}
    columns = dict(whole)
    for prefix in ("obs", "next_obs"):
        columns[prefix] = torch.cat([columns.pop(f"{prefix}_0"), columns.pop(f"{prefix}_1")], 1)
    fresh = SAC(TWO, _settings(tmp_path, "sac"), torch.device("cpu"), np.random.default_rng(0))
    assert fresh.load_replay_state({"capacity": saved["capacity"], "columns": columns}) == sac.buffer.size
    for name, column in whole.items():
        np.testing.assert_array_equal(fresh.buffer.state_dict()["columns"][name], column.numpy(), err_msg=name)
