"""Details of PPO's, SAC's and curiosity's losses, each against ML-Agents 0.16's formula computed
by hand here, on the numpy (accelerator) path and on the torch (autograd) path: the other tests
compare the two paths with each other, which a slip written the same way in both would pass."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from palaestra.algorithms import ppo as ppo_module
from palaestra.algorithms.ppo import PPO, ppo_loss, ppo_loss_gradients
from palaestra.algorithms.sac import SAC
from palaestra.envs.base import ActionSpec, BehaviorSpec
from palaestra.rewards import make_signals
from palaestra.settings import CuriositySettings, PPOSettings, SACSettings

SPEC = BehaviorSpec(((3,),), ActionSpec(continuous_size=2, discrete_branches=(3,)))
PATHS = ["numpy", "torch"]
RECURRENT = dict(use_recurrent=True, memory_size=8, sequence_length=4)


def _ppo(monkeypatch, path: str, **settings) -> PPO:
    """A small PPO that trains on the accelerator (numpy) or on autograd (torch)."""
    if path == "torch":
        monkeypatch.setattr(ppo_module, "accelerate", lambda module, rng=None: None)
    defaults = dict(hidden_units=8, num_layers=1, batch_size=16, buffer_size=32, num_epoch=1)
    torch.manual_seed(0)
    ppo = PPO(SPEC, PPOSettings(**(defaults | settings)), torch.device("cpu"), np.random.default_rng(0))
    assert (ppo._accelerated is None) == (path == "torch")
    return ppo


def _columns(ppo: PPO, n: int, rng: np.random.Generator, **columns) -> dict[str, np.ndarray]:
    """A buffer's worth of rows (random observations and actions; zero advantages and values
    unless given)."""
    out = dict(obs_0=rng.normal(size=(n, 3)).astype(np.float32),
               continuous=rng.uniform(-1, 1, (n, 2)).astype(np.float32), discrete=rng.integers(0, 3, (n, 1)),
               allowed=np.ones((n, 3), bool), log_prob=rng.normal(-2.0, 0.5, n).astype(np.float32),
               old_values=np.zeros((n, 1), np.float32), returns=np.zeros((n, 1), np.float32),
               advantages=np.zeros(n, np.float32))
    if ppo.memory_size:
        out |= dict(memory=np.zeros((n, ppo.memory_size), np.float32), valid=np.ones(n, np.float32))
    return out | columns


def _spy_on_gradients(monkeypatch, ppo: PPO, path: str) -> list[dict]:
    """Record what each mini-batch's gradient call receives (and compute nothing)."""
    calls: list[dict] = []

    def spy(batch, epsilon, beta, value_clip):
        calls.append(dict(batch={k: np.asarray(v) for k, v in batch.items()}, epsilon=epsilon, beta=beta,
                          value_clip=value_clip))
        return 0.0, 0.0

    monkeypatch.setattr(ppo, "_accelerated_gradients" if path == "numpy" else "_torch_gradients", spy)
    return calls


def _entropy(ppo: PPO, batch: dict[str, np.ndarray]) -> float:
    with torch.no_grad():
        return float(ppo.policy.evaluate([torch.as_tensor(batch["obs_0"])], None, torch.as_tensor(batch["continuous"]),
                                         torch.as_tensor(batch["discrete"])).entropy.mean())


# -- 1. the entropy bonus -------------------------------------------------------------------
def test_ppo_loss_subtracts_beta_times_the_mean_entropy_in_torch_and_numpy():
    # ML-Agents: total = policy + 0.5 value - beta mean(entropy): d total / d entropy = -beta / B
    B, beta = 6, 0.05
    rng = np.random.default_rng(0)
    values = rng.normal(size=(B, 1)).astype(np.float32)
    batch = {"log_prob": np.zeros(B, np.float32), "advantages": np.zeros(B, np.float32), "old_values": values,
             "returns": values}
    entropy = torch.tensor(rng.uniform(0.5, 2.0, B).astype(np.float32), requires_grad=True)
    total, _, _ = ppo_loss(torch.zeros(B), entropy, torch.as_tensor(values),
                           {k: torch.as_tensor(v) for k, v in batch.items()}, 0.2, beta, 0.2)
    total.backward()
    assert float(total.detach()) == pytest.approx(-beta * float(entropy.detach().mean()), rel=1e-6)
    np.testing.assert_allclose(entropy.grad.numpy(), np.full(B, -beta / B), rtol=1e-6)
    grad_entropy = ppo_loss_gradients(np.zeros(B, np.float32), entropy.detach().numpy(), values, batch, 0.2, beta,
                                      0.2)[1]
    np.testing.assert_allclose(np.broadcast_to(grad_entropy, (B,)), np.full(B, -beta / B), rtol=1e-6)


@pytest.mark.parametrize("path", PATHS)
def test_a_ppo_gradient_step_with_zero_advantages_raises_the_policy_s_entropy(monkeypatch, path):
    # the entropy bonus is a bonus: with nothing to gain from the advantages, descending the loss
    # makes the policy more random (both gradient functions run on the accelerated PPO)
    ppo = _ppo(monkeypatch, "numpy")
    batch = _columns(ppo, 32, np.random.default_rng(1))
    with torch.no_grad():  # returns = old values = the critic's: no value gradient either
        batch["old_values"] = batch["returns"] = ppo.policy.value([torch.as_tensor(batch["obs_0"])]).numpy()
    before = _entropy(ppo, batch)
    if path == "numpy":
        ppo._accelerated_gradients(batch, 0.2, 1.0, 0.2)
    else:
        ppo._torch_gradients({k: torch.as_tensor(v) for k, v in batch.items()}, 0.2, 1.0, 0.2)
    with torch.no_grad():  # one plain gradient-descent step
        for p in ppo.policy.parameters():
            p.sub_(0.05 * p.grad)
    assert _entropy(ppo, batch) > before + 1e-4


# -- 2. advantages standardized over the buffer ---------------------------------------------
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("recurrent", [False, True], ids=["feed-forward", "recurrent"])
def test_ppo_standardizes_advantages_over_the_buffer_s_real_rows_before_the_mini_batches(monkeypatch, path,
                                                                                         recurrent):
    # ML-Agents: (A - mean) / (std + 1e-10) over the whole buffer; a recurrent buffer's padding
    # rows are no experience and must not move the mean or the std
    ppo = _ppo(monkeypatch, path, **(RECURRENT if recurrent else {}))
    rng = np.random.default_rng(2)
    n = 32
    advantages = rng.normal(3.0, 5.0, n).astype(np.float32)
    valid = np.ones(n, np.float32)
    if recurrent:
        valid[[3, 6, 7, 15, 30, 31]] = 0.0  # padding after some sequences' real rows
        advantages[valid == 0] = 0.0
    ppo.buffer.add(**_columns(ppo, n, rng, advantages=advantages, **({"valid": valid} if recurrent else {})))
    calls = _spy_on_gradients(monkeypatch, ppo, path)
    ppo.update()
    assert len(calls) == 2  # two mini-batches of 16 rows: the whole buffer
    seen = np.concatenate([c["batch"]["advantages"] for c in calls])
    real = np.concatenate([c["batch"]["valid"] for c in calls]) > 0 if recurrent else np.ones(n, bool)
    kept = advantages[valid > 0].astype(np.float64)
    expected = (kept - kept.mean()) / (kept.std() + 1e-10)
    np.testing.assert_allclose(np.sort(seen[real]), np.sort(expected), rtol=1e-5, atol=1e-5)
    assert seen[real].mean() == pytest.approx(0.0, abs=1e-5) and seen[real].std() == pytest.approx(1.0, rel=1e-5)


# -- 3. value clipping ----------------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("clipping", [True, False], ids=["value_clipping", "no-value-clipping"])
def test_ppo_value_loss_is_ml_agents_clipped_max_only_with_value_clipping(monkeypatch, path, clipping):
    # ML-Agents: max((R - V)^2, (R - (V_old + clip(V - V_old, -eps_t, eps_t)))^2); without
    # value_clipping plain (R - V)^2 (one mini-batch of the whole buffer, one epoch: the weights it
    # starts from)
    ppo = _ppo(monkeypatch, path, value_clipping=clipping, batch_size=32, epsilon=0.3, max_steps=1000)
    ppo.step = 500  # eps_t = 0.3 + (0.1 - 0.3) x 0.5 = 0.2
    rng = np.random.default_rng(3)
    columns = _columns(ppo, 32, rng)
    with torch.no_grad():
        v = ppo.policy.value([torch.as_tensor(columns["obs_0"])]).numpy().astype(np.float64)
    old, ret = v + rng.normal(0, 1, v.shape), v + rng.normal(0, 1, v.shape)
    ppo.buffer.add(**columns | dict(old_values=old.astype(np.float32), returns=ret.astype(np.float32)))
    stats = ppo.update()
    unclipped = (ret - v) ** 2
    clipped = (ret - (old + np.clip(v - old, -0.2, 0.2))) ** 2
    with_clip, without = np.maximum(unclipped, clipped).mean(), unclipped.mean()
    assert abs(with_clip - without) > 0.1  # (the two differ here)
    assert stats["Losses/Value Loss"] == pytest.approx(with_clip if clipping else without, rel=1e-4)


@pytest.mark.parametrize("value_clip", [0.2, math.inf])
def test_ppo_value_loss_and_its_gradient_by_hand_in_torch_and_numpy(value_clip):
    # the clipped term carries no gradient where it is the larger and the clip is active
    rng = np.random.default_rng(4)
    B, K = 40, 2
    v = rng.normal(size=(B, K))
    old, ret = v + rng.normal(0, 0.5, (B, K)), v + rng.normal(0, 1, (B, K))
    unclipped = (ret - v) ** 2
    clipped = (ret - (old + np.clip(v - old, -value_clip, value_clip))) ** 2
    expected_loss = np.maximum(unclipped, clipped).mean()
    # d(0.5 mean(max))/dv: (v - R) / (B K) through the unclipped term or an inactive clip
    through = (unclipped >= clipped) | (np.abs(v - old) < value_clip)
    expected_grad = np.where(through, (v - ret) / (B * K), 0.0)
    assert through.all() == (value_clip == math.inf)
    batch = {"log_prob": np.zeros(B, np.float32), "advantages": np.zeros(B, np.float32),
             "old_values": old.astype(np.float32), "returns": ret.astype(np.float32)}
    values = torch.tensor(v.astype(np.float32), requires_grad=True)
    total, _, value_loss = ppo_loss(torch.zeros(B), torch.zeros(B), values,
                                    {k: torch.as_tensor(x) for k, x in batch.items()}, 0.2, 0.0, value_clip)
    total.backward()
    assert float(value_loss.detach()) == pytest.approx(expected_loss, rel=1e-5)
    np.testing.assert_allclose(values.grad.numpy(), expected_grad, rtol=1e-4, atol=1e-7)
    _, _, grad_values, _, numpy_value_loss = ppo_loss_gradients(np.zeros(B, np.float32), 0.0, v.astype(np.float32),
                                                                batch, 0.2, 0.0, value_clip)
    assert numpy_value_loss == pytest.approx(expected_loss, rel=1e-5)
    np.testing.assert_allclose(grad_values, expected_grad, rtol=1e-4, atol=1e-7)


# -- 4. curiosity's loss weights ------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
def test_curiosity_trains_on_ten_times_a_fifth_of_forward_plus_four_fifths_of_inverse(path):
    # ML-Agents: loss = 10 (0.2 forward + 0.8 inverse); the update's gradients are those of that sum
    spec = BehaviorSpec(((4,),), ActionSpec(continuous_size=1, discrete_branches=(3,)))
    torch.manual_seed(0)
    signal = make_signals(spec, {"curiosity": CuriositySettings(encoding_size=8)}, torch.device("cpu"))[0]
    signal.trains_in_numpy = path == "numpy"
    reference = copy.deepcopy(signal.model)
    rng = np.random.default_rng(5)
    n = 24
    batch = dict(obs_0=rng.normal(size=(n, 4)).astype(np.float32),
                 next_obs_0=rng.normal(size=(n, 4)).astype(np.float32),
                 continuous=rng.uniform(-1, 1, (n, 1)).astype(np.float32), discrete=rng.integers(0, 3, (n, 1)),
                 env_reward=np.zeros(n, np.float32))
    stats = signal.update(batch)
    m = reference
    encoded, encoded_next = m.encoder(torch.as_tensor(batch["obs_0"])), m.encoder(torch.as_tensor(batch["next_obs_0"]))
    onehot = torch.eye(3)[torch.as_tensor(batch["discrete"][:, 0])]
    continuous = torch.as_tensor(batch["continuous"])
    predicted_next = m.forward_model(torch.cat([encoded, continuous, onehot], 1))
    forward = (0.5 * (predicted_next - encoded_next).pow(2).sum(1)).mean()
    predicted = m.inverse(torch.cat([encoded, encoded_next], 1))
    inverse = ((predicted[:, :1] - continuous).pow(2).sum(1)
               - (torch.log_softmax(predicted[:, 1:], 1) * onehot).sum(1)).mean()
    m.zero_grad(set_to_none=True)
    (10.0 * (0.2 * forward + 0.8 * inverse)).backward()
    assert stats["Losses/Curiosity Forward Loss"] == pytest.approx(float(forward.detach()), rel=1e-5)
    assert stats["Losses/Curiosity Inverse Loss"] == pytest.approx(float(inverse.detach()), rel=1e-5)
    for (name, p), q in zip(signal.model.named_parameters(), m.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-3, atol=1e-6, err_msg=name)


# -- 5. SAC's continuous target entropy -----------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
def test_sac_entropy_coefficient_aims_at_minus_the_continuous_action_size(path):
    # ML-Agents: target entropy -(action size) = -3 here; the log-alpha gradient is
    # -mean(log pi + target)
    spec = BehaviorSpec(((3,),), ActionSpec(continuous_size=3))
    torch.manual_seed(0)
    sac = SAC(spec, SACSettings(hidden_units=8, num_layers=1, batch_size=16, buffer_size=64, init_entcoef=0.5),
              torch.device("cpu"), np.random.default_rng(0))
    assert sac.target_entropy.tolist() == [-3.0]
    assert sac._accelerated
    with torch.no_grad():  # mean 0 and log-std 0 everywhere: log pi by hand from the noise alone
        sac.policy.gaussian.weight.zero_()
        sac.policy.gaussian.bias.zero_()
    rng = np.random.default_rng(6)
    n = 16
    sac.buffer.add(obs_0=rng.normal(size=(n, 3)).astype(np.float32),
                   next_obs_0=rng.normal(size=(n, 3)).astype(np.float32),
                   continuous=rng.uniform(-0.9, 0.9, (n, 3)).astype(np.float32), discrete=np.zeros((n, 0), np.int64),
                   allowed=np.ones((n, 0), bool), next_allowed=np.ones((n, 0), bool),
                   env_reward=rng.normal(size=n).astype(np.float32), done=np.zeros(n, bool))
    t = sac._prepare(sac.buffer.sample(n, sac.rng))
    (sac._accelerated_gradients if path == "numpy" else sac._autograd_gradients)(t)
    u = t.noise[:n].astype(np.float64)  # a = tanh(u), u ~ N(0, 1)
    log_pi = (-0.5 * u ** 2 - 0.5 * math.log(2 * math.pi)).sum(1) - np.log(1 - np.tanh(u) ** 2).sum(1)
    assert float(sac.log_alpha.grad[0]) == pytest.approx(-(log_pi - 3.0).mean(), rel=1e-4)


# -- 6. epsilon and beta decay --------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("schedule", ["linear", "constant"])
def test_ppo_epsilon_and_beta_decay_linearly_to_their_floors_over_max_steps(monkeypatch, path, schedule):
    # ML-Agents 0.16: epsilon to 0.1 and beta to 1e-5 by polynomial decay of power 1 over max_steps,
    # whatever learning_rate_schedule (which only the learning rate follows); held at the floor after
    ppo = _ppo(monkeypatch, path, epsilon=0.3, beta=0.01, max_steps=1000, learning_rate_schedule=schedule)
    calls = _spy_on_gradients(monkeypatch, ppo, path)
    rng = np.random.default_rng(7)
    for step, fraction in [(0, 0.0), (250, 0.25), (4000, 1.0)]:
        ppo.step = step
        ppo.buffer.add(**_columns(ppo, 32, rng))
        stats = ppo.update()
        epsilon, beta = 0.3 + (0.1 - 0.3) * fraction, 0.01 + (1e-5 - 0.01) * fraction
        assert stats["Policy/Epsilon"] == pytest.approx(epsilon) and stats["Policy/Beta"] == pytest.approx(beta)
        assert len(calls) == 2
        for c in calls:  # what each mini-batch's loss uses (value_clipping's default: the value clip is eps_t)
            assert (c["epsilon"], c["beta"], c["value_clip"]) == pytest.approx((epsilon, beta, epsilon))
        calls.clear()
