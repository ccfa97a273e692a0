"""PPO's actor and critic towers one per thread on the CPU accelerator (networks/numpy_network.py,
``towers_on_two_threads``), where the run gave numpy's BLAS two threads: the same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from palaestra.algorithms.ppo import PPO
from palaestra.envs.base import ActionSpec, BehaviorSpec
from palaestra.settings import ExtrinsicSettings, TrainerSettings


def _ppo(spec: BehaviorSpec, layers: int = 2) -> PPO:
    torch.manual_seed(0)
    settings = TrainerSettings(hidden_units=64, num_layers=layers, normalize=True,
                               reward_signals={"extrinsic": ExtrinsicSettings()})
    return PPO(spec, settings, torch.device("cpu"), np.random.default_rng(0))


def _batch(ppo: PPO, spec: BehaviorSpec, rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    obs = rng.normal(size=(rows, spec.observation_shapes[0][0])).astype(np.float32)
    out = ppo.act([obs], None)
    with torch.no_grad():
        values = ppo.policy.value([torch.as_tensor(obs)]).numpy()
    return {"obs_0": obs, "continuous": out.continuous, "discrete": out.discrete, "log_prob": out.log_prob - 0.05,
            "old_values": values, "returns": values + 0.1,
            "advantages": rng.normal(size=rows).astype(np.float32)}


@pytest.mark.parametrize("action", [ActionSpec(continuous_size=3), ActionSpec(discrete_branches=(3, 2))],
                         ids=["continuous", "discrete"])
@pytest.mark.parametrize("rows", [64, 600])  # twin layers stack both towers' products below 32,768 rows x units
def test_towers_on_two_threads_give_the_same_gradients(action, rows):
    spec = BehaviorSpec(((9,),), action)
    grads = []
    with threadpool_limits(1, user_api="blas"):
        for split in (False, True):
            ppo = _ppo(spec)
            if split:
                ppo._accelerated.towers_on_two_threads()
            ppo._accelerated_gradients(_batch(ppo, spec, rows), 0.2, 0.01, 0.2)
            grads.append([p.grad.clone() for p in ppo.policy.parameters() if p.grad is not None])
    assert ppo._accelerated.second is not None
    one, two = grads
    tolerance = 0.0 if rows * 64 >= 32768 else 1e-6  # (below it the twin products are stacked: other rounding)
    assert len(one) == len(two) and all(torch.allclose(a, b, rtol=0, atol=tolerance) for a, b in zip(one, two))


@pytest.mark.parametrize("threads,split", [(1, False), (2, True)])
def test_the_first_update_splits_the_towers_where_blas_has_two_threads(threads, split):
    spec = BehaviorSpec(((9,),), ActionSpec(continuous_size=2))
    ppo = _ppo(spec)
    with threadpool_limits(threads, user_api="blas"):
        ppo._mlp_towers_as_chosen()
    assert (ppo._accelerated.second is not None) is split


@pytest.mark.parametrize("hidden,layers,batch,split", [(256, 1, 32, False), (256, 2, 32, False), (256, 2, 128, True),
                                                       (256, 1, 512, True)])
def test_mini_batches_too_small_for_the_hand_over_train_on_one_blas_thread(monkeypatch, hidden, layers, batch,
                                                                            split):
    # the split pays from about 4M multiply-adds per tower and mini-batch (ppo.TOWERS_SPLIT_FROM);
    # below it one BLAS thread, no split (GridWorld's 256 x 1 at 32 rows: split 2x slower per step)
    from palaestra.machine import blas_threads
    from palaestra.settings import PPOSettings

    spec = BehaviorSpec(((36,),), ActionSpec(discrete_branches=(5,)))
    settings = PPOSettings(hidden_units=hidden, num_layers=layers, batch_size=batch, buffer_size=batch, num_epoch=1,
                           reward_signals={"extrinsic": ExtrinsicSettings()})
    ppo = PPO(spec, settings, torch.device("cpu"), np.random.default_rng(0))
    rng = np.random.default_rng(1)
    ppo.buffer.add(obs_0=rng.normal(size=(batch, 36)).astype(np.float32),
                   continuous=np.zeros((batch, 0), np.float32), discrete=rng.integers(0, 5, (batch, 1)),
                   allowed=np.ones((batch, 5), bool), log_prob=np.full(batch, -1.6, np.float32),
                   old_values=np.zeros((batch, 1), np.float32), returns=np.zeros((batch, 1), np.float32),
                   advantages=rng.normal(size=batch).astype(np.float32))
    seen = []
    gradients = ppo._accelerated_gradients

    def spy(*args):
        seen.append(blas_threads())
        return gradients(*args)

    monkeypatch.setattr(ppo, "_accelerated_gradients", spy)
    with threadpool_limits(2, user_api="blas"):
        ppo.update()
    assert (ppo._accelerated.second is not None) is split
    assert seen == [1]  # split: one BLAS thread per tower; not split: one thread for the whole step
