"""SAC: the replay buffer, transitions built from segments, the update cadence, the squashed
Gaussian, masks, export, Ctrl+C and --resume with the replay buffer, and (marked ``training``)
the issue's learning thresholds."""

from __future__ import annotations

import io
import math
import os

import numpy as np
import pytest
import torch

from palaestra.capabilities import spec_problems
from palaestra.algorithms.sac import SAC
from palaestra.checkpoints import CheckpointManager
from palaestra.envs.base import ActionSpec, BehaviorSpec, DecisionSteps, TerminalSteps
from palaestra.envs.sources import make_env
from palaestra.evaluation import evaluate_onnx
from palaestra.networks.accelerator import accelerate
from palaestra.networks.torch_acting import TorchActor
from palaestra.networks.sac_networks import squashed_sample
from palaestra.rollout.buffers import ReplayBuffer
from palaestra.rollout.collector import Collector
from palaestra.settings import load_trainer_config
from tests.conftest import REPO, interrupt_training, write_yaml

SAC_CONFIG = REPO / "config" / "sac_trainer_config.yaml"
CONTINUOUS = BehaviorSpec(((3,),), ActionSpec(continuous_size=2))
DISCRETE = BehaviorSpec(((3,),), ActionSpec(discrete_branches=(3, 2)))


def sac_settings(tmp_path, **overrides):
    lines = "".join(f"  {k}: {v}\n" for k, v in overrides.items())
    return load_trainer_config(write_yaml(tmp_path / "s.yaml", f"B:\n  trainer: sac\n{lines}")).for_behavior("B")


def test_replay_buffer_is_a_ring_that_keeps_the_newest_and_round_trips(tmp_path):
    buf = ReplayBuffer(5)
    buf.add(x=np.arange(3.0), y=np.arange(3)[:, None])
    buf.add(x=np.arange(3.0, 7.0), y=np.arange(3, 7)[:, None])  # wraps: 0 and 1 are overwritten
    assert buf.size == 5
    state = buf.state_dict()
    assert state["columns"]["x"].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]  # oldest first
    copy = ReplayBuffer(5)
    copy.load_state_dict(state)
    assert copy.state_dict()["columns"]["x"].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]
    batch = buf.sample(64, np.random.default_rng(0))
    assert batch["x"].shape == (64,) and batch["y"].shape == (64, 1)
    assert set(batch["x"].tolist()) <= {2.0, 3.0, 4.0, 5.0, 6.0}
    buf.add(x=np.arange(10.0, 22.0), y=np.zeros((12, 1), int))  # more than the capacity at once
    assert buf.state_dict()["columns"]["x"].tolist() == [17.0, 18.0, 19.0, 20.0, 21.0]


def test_segments_become_transitions_with_next_observations_and_done_flags(tmp_path):
    sac = SAC(CONTINUOUS, sac_settings(tmp_path, time_horizon=2), torch.device("cpu"), np.random.default_rng(0))
    collector = Collector(CONTINUOUS, time_horizon=2)

    def obs(t, ids):
        return [np.full((len(ids), 3), float(t), np.float32)]

    def decide(t, ids, reward=1.0):
        return DecisionSteps(obs(t, ids), np.full(len(ids), reward, np.float32), np.asarray(ids))

    none = TerminalSteps.empty(CONTINUOUS)
    for t in range(3):  # agent 0 acts at t = 0, 1, 2: a time-horizon cut at t = 2
        _, seg = collector.step(decide(t, [0, 1]), none, sac.act)
        if seg is not None:
            sac.collect(seg)
    # agent 0 ends truly, agent 1 by a step limit: both final observations are 9
    ended = TerminalSteps(obs(9, [0, 1]), np.array([5.0, 6.0], np.float32), np.array([0, 1]), np.array([False, True]))
    _, seg = collector.step(DecisionSteps.empty(CONTINUOUS), ended, sac.act)
    sac.collect(seg)
    columns = sac.buffer.state_dict()["columns"]
    rows = sorted(zip(columns["obs_0"][:, 0].tolist(), columns["next_obs_0"][:, 0].tolist(),
                      columns["env_reward"].tolist(), columns["done"].tolist()))
    assert rows == sorted([
        (0.0, 1.0, 1.0, False), (1.0, 2.0, 1.0, False),  # the cut at t = 2, both agents
        (0.0, 1.0, 1.0, False), (1.0, 2.0, 1.0, False),
        (2.0, 9.0, 5.0, True),  # a true terminal: no bootstrap
        (2.0, 9.0, 6.0, False),  # interrupted: bootstraps from its final observation
    ])
    assert sac.step == 6


@pytest.mark.parametrize("spelling,expected", [
    ({"steps_per_update": 4}, 4.0),
    ({"train_interval": 3, "num_update": 2}, 1.5),  # 0.15: 2 updates every 3 steps
])
def test_update_cadence_counts_from_buffer_init_steps(tmp_path, spelling, expected):
    s = sac_settings(tmp_path, batch_size=4, buffer_init_steps=10, hidden_units=8, **spelling)
    assert s.steps_per_update == expected
    sac = SAC(CONTINUOUS, s, torch.device("cpu"), np.random.default_rng(0))
    n = 40
    sac.buffer.add(obs_0=np.zeros((n, 3), np.float32), next_obs_0=np.zeros((n, 3), np.float32),
                   continuous=np.zeros((n, 2), np.float32), discrete=np.zeros((n, 0), np.int64),
                   allowed=np.ones((n, 0), bool), next_allowed=np.ones((n, 0), bool),
                   env_reward=np.ones(n, np.float32), done=np.zeros(n, bool))
    sac.step = 9
    assert not sac.ready()  # before buffer_init_steps
    sac.step = 34
    assert sac.ready()
    stats = sac.update()
    assert sac.update_count == int((34 - 10) / expected) and not sac.ready()
    assert {"Losses/Q1 Loss", "Losses/Q2 Loss", "Losses/Policy Loss", "Policy/Entropy Coeff",
            "Policy/Learning Rate", "Policy/Extrinsic Value Estimate", "Losses/Value Loss"} <= set(stats)
    assert stats["Losses/Value Loss"] == pytest.approx(stats["Losses/Q1 Loss"] + stats["Losses/Q2 Loss"])


@pytest.mark.parametrize("signals", [1, 2])
@pytest.mark.parametrize("spec", [CONTINUOUS, DISCRETE, BehaviorSpec(((3,),), ActionSpec(discrete_branches=(4,)))],
                         ids=["continuous", "two-branches-masked", "one-branch"])
@pytest.mark.parametrize("normalize", [True, False])
# small arrays take numpy's kernels; (16, 200): torch's for 2B rows, numpy's for the first B the
# backward pass keeps of the actor's pass; (64, 300): a product per critic tower (numpy_layers.Twin)
@pytest.mark.parametrize("hidden,batch", [(8, 16), (16, 200), (64, 300)])
# the critics also each on a thread of its own (networks/two_threads.py)
@pytest.mark.parametrize("two_threads", [False, True], ids=["one-thread", "two-threads"])
def test_hand_written_gradients_match_autograd(tmp_path, monkeypatch, spec, signals, normalize, hidden, batch,
                                               two_threads):
    from palaestra.algorithms import sac as sac_module
    from palaestra.rewards import ExtrinsicSignal

    monkeypatch.setattr(sac_module, "make_signals",
                        lambda *_: [ExtrinsicSignal(1.0, 0.99), ExtrinsicSignal(0.5, 0.9)][:signals])
    torch.manual_seed(0)
    sac = SAC(spec, sac_settings(tmp_path, normalize=str(normalize).lower(), hidden_units=hidden, num_layers=2,
                                 init_entcoef=0.3), torch.device("cpu"), np.random.default_rng(0))
    with torch.no_grad():  # a non-trivial point: random weights everywhere
        sac.flat.data.add_(torch.randn_like(sac.flat.data) * 0.3)
    rng = np.random.default_rng(1)
    if normalize:
        sac.policy.normalizer.update(rng.normal(1.0, 2.0, size=(50, 3)))
    n, width = 32, sum(spec.action_spec.discrete_branches)
    allowed = rng.random((2, n, width)) > 0.3
    for start, size in zip([0, 3], spec.action_spec.discrete_branches):  # keep one action per branch
        allowed[:, np.arange(n), start + rng.integers(0, size, n)] = True
    discrete = np.stack([rng.choice(np.flatnonzero(row[s:s + k])) for row in allowed[0]
                         for s, k in zip([0, 3], spec.action_spec.discrete_branches)]).reshape(n, -1) \
        if width else np.zeros((n, 0), np.int64)
    sac.buffer.add(obs_0=rng.normal(size=(n, 3)).astype(np.float32), next_obs_0=rng.normal(size=(n, 3)).astype(np.float32),
                   continuous=rng.uniform(-0.99, 0.99, (n, spec.action_spec.continuous_size)).astype(np.float32),
                   discrete=discrete, allowed=allowed[0], next_allowed=allowed[1],
                   env_reward=rng.normal(size=n).astype(np.float32), done=rng.random(n) < 0.3)
    t = sac._prepare(sac.buffer.sample(batch, sac.rng))
    assert sac._accelerated
    if two_threads:
        sac._critics_on_two_threads()
    manual = sac._accelerated_gradients(t)
    manual_grads = [p.grad.clone() for p in sac.flat.params]
    reference = sac._autograd_gradients(t)
    names = [f"actor.{k}" for k, _ in sac.policy.named_parameters()] + \
        [f"critic.{k}" for k, _ in sac.critic.named_parameters()] + ["log_alpha"]
    for name, param, grad in zip(names, sac.flat.params, manual_grads):
        torch.testing.assert_close(grad, param.grad, rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
    for key, value in reference.items():
        # (the stats' dtype is numpy's: float64 from a float32 scalar times a float under numpy 1)
        torch.testing.assert_close(torch.as_tensor(manual[key]), value, rtol=1e-4, atol=1e-6, check_dtype=False)


@pytest.mark.parametrize("spec", [CONTINUOUS, DISCRETE], ids=["continuous", "discrete"])
def test_critics_on_two_threads_train_exactly_as_on_one(tmp_path, spec):
    # the same products, element-wise passes and sums, split by critic: the same numbers
    runs = []
    for two_threads in (False, True):
        torch.manual_seed(0)
        sac = SAC(spec, sac_settings(tmp_path, hidden_units=64, batch_size=300, buffer_init_steps=0),
                  torch.device("cpu"), np.random.default_rng(0))
        _fill(sac, 400, spec)
        if two_threads:
            sac._critics_on_two_threads()
        sac.step = 200  # 20 gradient steps
        stats = sac.update()
        runs.append((sac.flat.data.clone(), sac.target_flat.data.clone(), {k: float(v) for k, v in stats.items()},
                     sac.update_count))
    assert sac._towers is not None
    (flat, target, stats, steps), (flat2, target2, stats2, steps2) = runs
    assert steps == steps2 > 1
    assert torch.equal(flat, flat2) and torch.equal(target, target2)
    assert stats == stats2


def test_wide_critics_take_two_threads_where_blas_was_given_two(tmp_path):
    from threadpoolctl import threadpool_limits

    for threads, expected in ((1, False), (2, True)):
        sac = SAC(CONTINUOUS, sac_settings(tmp_path, hidden_units=256), torch.device("cpu"), np.random.default_rng(0))
        with threadpool_limits(threads, user_api="blas"):
            torch.set_num_threads(1)
            sac._choose_path()
        assert sac._accelerated and (sac._towers is not None) == expected


def test_wide_plain_networks_train_on_the_accelerator_too(tmp_path):
    # 256 units (SAC's usual size): numpy's BLAS on every core beats autograd on torch's
    # (palaestra/machine.py, docs/benchmarks.md)
    sac = SAC(CONTINUOUS, sac_settings(tmp_path, hidden_units=256), torch.device("cpu"), np.random.default_rng(0))
    assert sac._accelerated and sac.trains_in_numpy


def _fill(sac: SAC, n: int = 64, spec: BehaviorSpec = CONTINUOUS) -> None:
    rng = np.random.default_rng(5)  # the same transitions every time
    a = spec.action_spec
    width = sum(a.discrete_branches)
    discrete = np.stack([rng.integers(0, k, n) for k in a.discrete_branches], 1) if width else np.zeros((n, 0), np.int64)
    sac.buffer.add(obs_0=rng.normal(size=(n, 3)).astype(np.float32), next_obs_0=rng.normal(size=(n, 3)).astype(np.float32),
                   continuous=rng.uniform(-0.9, 0.9, (n, a.continuous_size)).astype(np.float32), discrete=discrete,
                   allowed=np.ones((n, width), bool), next_allowed=np.ones((n, width), bool),
                   env_reward=rng.normal(size=n).astype(np.float32), done=rng.random(n) < 0.2)


def test_a_wide_network_takes_autograd_where_torch_holds_the_training_threads(tmp_path, monkeypatch):
    # where a behavior of the run trains in torch, torch gets the threads (palaestra/machine.py)
    # and a wide network's numpy step on one BLAS thread would be slower than autograd: the first
    # update gives the accelerator up, also in a resumed run, whose Adam moments and step count
    # the torch optimizer then carries on
    from palaestra.algorithms import sac as sac_module

    settings = sac_settings(tmp_path, hidden_units=256, num_layers=1, batch_size=16, buffer_init_steps=0,
                            steps_per_update=1)

    def built() -> SAC:
        torch.manual_seed(3)
        return SAC(CONTINUOUS, settings, torch.device("cpu"), np.random.default_rng(4))

    monkeypatch.setattr(sac_module, "blas_has_the_threads", lambda: True)
    first = built()
    _fill(first)
    first.step = 3
    first.update()
    assert first._accelerated and first.trains_in_numpy  # numpy's BLAS has the threads
    state = first.state_dict()
    monkeypatch.setattr(sac_module, "blas_has_the_threads", lambda: False)
    resumed, reference = built(), built()
    reference._accelerated, reference._numpy_adam = False, None  # autograd and torch's Adam throughout
    for sac in (resumed, reference):
        sac.load_state_dict(state)
        _fill(sac)
        sac.step = 6
        sac.update()
    assert not resumed._accelerated and not resumed.trains_in_numpy and resumed.update_count == 6
    torch.testing.assert_close(resumed.flat.data, reference.flat.data, rtol=1e-5, atol=1e-6)
    assert int(resumed.optimizer.state_dict()["state"][0]["step"]) == 6


def test_an_actor_the_accelerator_does_not_know_trains_on_autograd(tmp_path, monkeypatch):
    from palaestra.algorithms import sac as sac_module
    from palaestra.networks.sac_networks import SquashedActor

    class WithMemory(SquashedActor):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.memory = torch.nn.LSTM(4, 4)

    monkeypatch.setattr(sac_module, "SquashedActor", WithMemory)
    sac = SAC(CONTINUOUS, sac_settings(tmp_path, hidden_units=8, batch_size=8, buffer_init_steps=0, steps_per_update=1),
              torch.device("cpu"), np.random.default_rng(0))
    assert not sac._accelerated and sac._network is None and sac._numpy_adam is None
    rng = np.random.default_rng(1)
    n = 16
    sac.buffer.add(obs_0=rng.normal(size=(n, 3)).astype(np.float32), next_obs_0=rng.normal(size=(n, 3)).astype(np.float32),
                   continuous=rng.uniform(-0.9, 0.9, (n, 2)).astype(np.float32), discrete=np.zeros((n, 0), np.int64),
                   allowed=np.ones((n, 0), bool), next_allowed=np.ones((n, 0), bool),
                   env_reward=rng.normal(size=n).astype(np.float32), done=rng.random(n) < 0.2)
    before = sac.flat.data.clone()
    sac.step = 2
    stats = sac.update()
    assert sac.update_count == 2 and np.isfinite(stats["Losses/Q1 Loss"]) and not torch.equal(before, sac.flat.data)
    assert sac.act([np.zeros((2, 3), np.float32)], None).continuous.shape == (2, 2)


@pytest.mark.parametrize("spec", [CONTINUOUS, DISCRETE], ids=["continuous", "discrete"])
def test_the_numpy_and_torch_paths_take_the_same_steps(tmp_path, spec):
    # What trains wide networks and on GPUs (autograd, torch's Adam) and narrow networks on the
    # CPU (the accelerator's numpy layers, numpy's Adam over the flat buffer) must be the same algorithm:
    # after several whole gradient steps (Adam's moments, the entropy coefficient and the
    # Polyak-averaged targets included) the weights agree.
    settings = sac_settings(tmp_path, hidden_units=8, num_layers=2, batch_size=16, buffer_init_steps=0,
                            steps_per_update=1, init_entcoef=0.5)
    sacs = []
    for _ in range(2):
        torch.manual_seed(3)
        sacs.append(SAC(spec, settings, torch.device("cpu"), np.random.default_rng(4)))
    fast, reference = sacs
    # the path of wide networks and other devices: autograd and torch's Adam
    reference._accelerated, reference._numpy_adam = False, None
    assert fast._accelerated
    rng = np.random.default_rng(5)
    n = 64
    for sac in sacs:
        sac.buffer.add(obs_0=rng.normal(size=(n, 3)).astype(np.float32), next_obs_0=rng.normal(size=(n, 3)).astype(np.float32),
                       continuous=rng.uniform(-0.9, 0.9, (n, spec.action_spec.continuous_size)).astype(np.float32),
                       discrete=np.stack([rng.integers(0, b, n) for b in spec.action_spec.discrete_branches], 1)
                       if spec.action_spec.is_discrete else np.zeros((n, 0), np.int64),
                       allowed=np.ones((n, sum(spec.action_spec.discrete_branches)), bool),
                       next_allowed=np.ones((n, sum(spec.action_spec.discrete_branches)), bool),
                       env_reward=rng.normal(size=n).astype(np.float32), done=rng.random(n) < 0.2)
        rng = np.random.default_rng(5)  # the same data for both
        sac.step = 5
    stats = [sac.update() for sac in sacs]
    assert fast.update_count == reference.update_count == 5
    torch.testing.assert_close(fast.flat.data, reference.flat.data, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast.target_flat.data, reference.target_flat.data, rtol=1e-4, atol=1e-5)
    for key in stats[1]:
        assert stats[0][key] == pytest.approx(stats[1][key], rel=1e-3, abs=1e-5), key
    # and a checkpoint of either resumes on the other: through bytes, as a file would carry it (an
    # in-memory load shares the tensors, so comparing the moments there compared them with themselves)
    file = io.BytesIO()
    torch.save(fast.state_dict(), file)
    state = torch.load(io.BytesIO(file.getvalue()), weights_only=False)
    assert int(state["optimizer"]["state"][0]["step"]) == 5
    for moments in reference.optimizer.state.values():  # only a real load can bring these back
        moments["exp_avg"].zero_(), moments["exp_avg_sq"].fill_(1.0)
    reference.load_state_dict(state)
    for sac in sacs:
        sac.step = 8
        sac.update()
    assert fast.update_count == reference.update_count == 8
    torch.testing.assert_close(fast.flat.data, reference.flat.data, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spec", [CONTINUOUS, DISCRETE], ids=["continuous", "discrete"])
def test_numpy_acting_mirror_matches_the_torch_actor(tmp_path, spec):
    sac = SAC(spec, sac_settings(tmp_path, normalize="true", hidden_units=8, num_layers=2), torch.device("cpu"),
              np.random.default_rng(5))
    with torch.no_grad():
        sac.flat.data.add_(torch.randn_like(sac.flat.data) * 0.5)  # in place: the mirror must see it
    sac.policy.normalizer.update(np.random.default_rng(1).normal(1.0, 2.0, size=(50, 3)))
    obs = [np.random.default_rng(2).normal(size=(6, 3)).astype(np.float32)]
    for deterministic in (True, False):
        mirror = sac._network.act(obs, None, deterministic)
        reference = TorchActor(sac.policy).act(obs, None, deterministic=True)
        if deterministic:
            np.testing.assert_allclose(mirror.continuous, reference.continuous, atol=1e-5)
            np.testing.assert_array_equal(mirror.discrete, reference.discrete)
        np.testing.assert_allclose(mirror.entropy, reference.entropy, rtol=1e-4, atol=1e-5)
    if spec.action_spec.is_continuous:  # the log-probability of a sampled action, with the same noise
        sampled = accelerate(sac.policy, np.random.default_rng(9)).act(obs, None)
        noise = torch.as_tensor(np.random.default_rng(9).standard_normal(1 << 16, dtype=np.float32)[:12].reshape(6, 2))
        with torch.no_grad():
            mean, log_std = sac.policy.gaussian_params(sac.policy.body(sac.policy.encode([torch.as_tensor(obs[0])])))
            action, log_prob = squashed_sample(mean, log_std, noise)
        np.testing.assert_allclose(sampled.continuous, action.numpy(), atol=1e-5)
        np.testing.assert_allclose(sampled.log_prob, log_prob.numpy(), rtol=1e-4, atol=1e-4)


def test_squashed_gaussian_log_prob_matches_torch_distributions():
    mean, log_std = torch.randn(6, 3), torch.randn(6, 3).clamp(-2, 1)
    noise = torch.randn(6, 3)
    action, log_prob = squashed_sample(mean, log_std, noise)
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform()])
    u = mean + noise * log_std.exp()
    torch.testing.assert_close(action, torch.tanh(u))
    torch.testing.assert_close(log_prob, dist.log_prob(torch.tanh(u)).sum(-1), rtol=1e-4, atol=1e-3)


def test_discrete_sac_respects_masks_and_targets_ml_agents_entropy(tmp_path):
    sac = SAC(DISCRETE, sac_settings(tmp_path, init_entcoef=0.5, hidden_units=8), torch.device("cpu"),
              np.random.default_rng(0))
    assert sac.target_entropy.tolist() == pytest.approx([0.2 * math.log(3), 0.2 * math.log(2)])
    assert sac.log_alpha.exp().tolist() == pytest.approx([0.5, 0.5])
    allowed = np.ones((200, 5), bool)
    allowed[:, 0] = allowed[:, 1] = False  # branch 0: only action 2
    allowed[:, 4] = False  # branch 1: only action 0
    out = sac.act([np.random.default_rng(1).normal(size=(200, 3)).astype(np.float32)], allowed)
    assert (out.discrete[:, 0] == 2).all() and (out.discrete[:, 1] == 0).all()
    n = 64
    rng = np.random.default_rng(2)
    sac.buffer.add(obs_0=rng.normal(size=(n, 3)).astype(np.float32), next_obs_0=rng.normal(size=(n, 3)).astype(np.float32),
                   continuous=np.zeros((n, 0), np.float32), discrete=np.tile([2, 0], (n, 1)),
                   allowed=allowed[:n], next_allowed=allowed[:n], env_reward=np.ones(n, np.float32),
                   done=rng.random(n) < 0.2)
    sac.step = 20
    stats = sac.update()
    assert sac.update_count == 2 and all(np.isfinite(v) for v in stats.values())


def test_hybrid_actions_are_rejected_for_sac(tmp_path):
    hybrid = BehaviorSpec(((3,),), ActionSpec(continuous_size=1, discrete_branches=(2,)))
    problems = spec_problems(hybrid, sac_settings(tmp_path))
    assert problems and "not both" in problems[0]


def test_activations_other_than_swish_are_refused_for_sac(run_cli, workdir):
    config = write_yaml(workdir / "c.yaml", "1D:\n  trainer: sac\n  activation: tanh\n  max_steps: 100\n")
    for dry_run in (["--dry-run"], []):
        result = run_cli(str(config), "--env=Simple1DContinuous", "--run-id=t", *dry_run)
        assert result.code == 1 and "activation 'tanh' is built for trainer 'ppo' only so far" in result.log
        assert "Traceback" not in result.log


def test_exported_sac_policy_matches_its_deterministic_actions(tmp_path):
    import onnxruntime as ort

    from palaestra.export import export_policy

    for spec in (CONTINUOUS, DISCRETE):
        sac = SAC(spec, sac_settings(tmp_path, normalize="true", hidden_units=8), torch.device("cpu"),
                  np.random.default_rng(0))
        sac.policy.normalizer.update(np.random.default_rng(1).normal(1.0, 2.0, size=(50, 3)))
        obs = np.random.default_rng(3).normal(size=(7, 3)).astype(np.float32)
        expected = sac.act([obs], None, deterministic=True)
        export_policy(sac.policy, tmp_path / "p.onnx")
        session = ort.InferenceSession(str(tmp_path / "p.onnx"))
        feeds = {"obs_0": obs}
        if spec.action_spec.is_discrete:
            feeds["action_masks"] = np.ones((7, 5), np.float32)
        out = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        if spec.action_spec.is_continuous:
            np.testing.assert_allclose(out["deterministic_continuous_actions"], expected.continuous, atol=1e-5)
            assert np.abs(out["continuous_actions"]).max() <= 1.0  # squashed samples
        else:
            np.testing.assert_array_equal(out["deterministic_discrete_actions"], expected.discrete)


SMALL_SAC = """
1D:
  trainer: sac
  batch_size: 8
  buffer_size: 500
  hidden_units: 16
  num_layers: 1
  steps_per_update: 1
  save_replay_buffer: true
  max_steps: {max_steps}
  summary_freq: 100
"""


def test_ctrl_c_then_resume_restores_the_replay_buffer_and_counters(tmp_path):
    (tmp_path / "c.yaml").write_text(SMALL_SAC.format(max_steps=10_000_000))
    code, err, _ = interrupt_training(tmp_path, "c.yaml", "--env=Simple1DContinuous", "--run-id=r")
    assert code == 130 and "Traceback" not in err, err
    folder = tmp_path / "models/r/1D"
    saved = CheckpointManager.load(CheckpointManager(folder, 5).latest())["algorithm"]
    replay = CheckpointManager.load_file(folder / "replay_buffer.pt", "")
    assert replay["step"] == saved["step"] and saved["update_count"] == saved["step"]  # one update per step
    assert sum(len(part) for part in replay["columns"]["obs_0"]) == min(saved["step"], 500)  # the ring's parts

    # Resume in-process for one more step and inspect the restored trainer.
    from palaestra import run as run_module

    restored = {}
    original = run_module._train_loop

    def capture(parts, *args):  # the trainer as --resume rebuilt it, before it trains on
        sac = parts.trainers["1D"].algorithm
        restored.update(step=sac.step, update_count=sac.update_count, obs=sac.buffer.state_dict()["columns"]["obs_0"])
        return original(parts, *args)

    (tmp_path / "c.yaml").write_text(SMALL_SAC.format(max_steps=saved["step"] + 200))
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        run_module._train_loop = capture
        from palaestra.cli import main
        assert main(["c.yaml", "--env=Simple1DContinuous", "--run-id=r", "--resume"]) == 0
    finally:
        run_module._train_loop = original
        os.chdir(old)
    assert (restored["step"], restored["update_count"]) == (saved["step"], saved["update_count"])
    np.testing.assert_array_equal(restored["obs"], torch.cat(replay["columns"]["obs_0"]).numpy())
    resumed = CheckpointManager.load(CheckpointManager(folder, 5).latest())["algorithm"]
    assert resumed["step"] > saved["step"] and resumed["update_count"] > saved["update_count"]


@pytest.mark.parametrize("before,after", [(1, 20), (20, 1)])
def test_a_resume_at_another_steps_per_update_neither_stalls_nor_bursts(run_cli, workdir, monkeypatch, before, after):
    # counted over the whole run at the new pace, the saved counter was 20 times ahead (no update for
    # the next 20x steps) or behind (a burst of thousands at once); ML-Agents takes the new pace as kept
    from palaestra import run as run_module

    pace = lambda n: SMALL_SAC.replace("steps_per_update: 1", f"steps_per_update: {n}")  # noqa: E731
    config = write_yaml(workdir / "c.yaml", pace(before).format(max_steps=400))
    assert run_cli(str(config), "--env=Simple1DContinuous", "--run-id=r").code == 0
    first = CheckpointManager.load(CheckpointManager(workdir / "models/r/1D", 5).latest())["algorithm"]
    restored = {}
    original = run_module._train_loop

    def capture(parts, *args):  # the trainer as --resume rebuilt it, before it trains on
        restored["update_count"] = parts.trainers["1D"].algorithm.update_count
        return original(parts, *args)

    monkeypatch.setattr(run_module, "_train_loop", capture)
    write_yaml(workdir / "c.yaml", pace(after).format(max_steps=800))
    result = run_cli(str(config), "--env=Simple1DContinuous", "--run-id=r", "--resume")
    assert result.code == 0 and f"steps_per_update {before} -> {after}" in result.log, result.log
    assert restored["update_count"] == first["step"] // after != first["update_count"]
    # unchanged, the counter goes on exactly where it was
    write_yaml(workdir / "c.yaml", pace(after).format(max_steps=1000))
    second = CheckpointManager.load(CheckpointManager(workdir / "models/r/1D", 5).latest())["algorithm"]
    result = run_cli(str(config), "--env=Simple1DContinuous", "--run-id=r", "--resume")
    assert result.code == 0 and "pace of updates changed" not in result.log
    assert restored["update_count"] == second["update_count"]


def test_an_earlier_checkpoint_without_its_pace_is_recounted_when_its_count_does_not_fit(run_cli, workdir,
                                                                                        monkeypatch):
    # checkpoints written before update_pace was saved kept their count: a resume at steps_per_update
    # 20 after 1 took no update for the whole rest of the run (a count behind those due stays: it may be
    # a slower pace or the experience not yet handed over)
    from palaestra import run as run_module

    pace = lambda n: SMALL_SAC.replace("steps_per_update: 1", f"steps_per_update: {n}")  # noqa: E731
    config = write_yaml(workdir / "c.yaml", pace(1).format(max_steps=400))
    assert run_cli(str(config), "--env=Simple1DContinuous", "--run-id=r").code == 0
    path = CheckpointManager(workdir / "models/r/1D", 5).latest()
    state = CheckpointManager.load(path)
    del state["algorithm"]["update_pace"]  # as an earlier Palaestra wrote it
    CheckpointManager.save_file(path, state)
    restored = []
    original = run_module._train_loop

    def capture(parts, *args):
        restored.append(parts.trainers["1D"].algorithm.update_count)
        return original(parts, *args)

    monkeypatch.setattr(run_module, "_train_loop", capture)
    write_yaml(workdir / "c.yaml", pace(1).format(max_steps=500))  # the same pace: the count goes on
    result = run_cli(str(config), "--env=Simple1DContinuous", "--run-id=r", "--resume")
    assert result.code == 0 and "records no pace" not in result.log and restored == [state["algorithm"]["update_count"]]
    path = CheckpointManager(workdir / "models/r/1D", 5).latest()
    state = CheckpointManager.load(path)
    del state["algorithm"]["update_pace"]
    CheckpointManager.save_file(path, state)
    write_yaml(workdir / "c.yaml", pace(20).format(max_steps=800))
    result = run_cli(str(config), "--env=Simple1DContinuous", "--run-id=r", "--resume")
    assert result.code == 0 and "updates at a faster one than steps_per_update 20: from step 5" in result.log, \
        result.log
    assert restored[-1] == state["algorithm"]["step"] // 20
    # the signals' own count likewise (raised reward_signal_steps_per_update: their model never trained again)
    signals = pace(1) + "  reward_signals:\n    extrinsic: {{strength: 1.0, gamma: 0.99}}\n" \
                        "    curiosity: {{strength: 0.1, gamma: 0.99, encoding_size: 8}}\n"
    write_yaml(workdir / "c.yaml", signals.format(max_steps=400))
    assert run_cli(str(config), "--env=Simple1DContinuous", "--run-id=s").code == 0
    path = CheckpointManager(workdir / "models/s/1D", 5).latest()
    state = CheckpointManager.load(path)
    del state["algorithm"]["update_pace"]
    CheckpointManager.save_file(path, state)
    write_yaml(workdir / "c.yaml", signals.replace("encoding_size: 8}}", "encoding_size: 8}}\n"
                                                   "    reward_signal_steps_per_update: 20").format(max_steps=800))
    result = run_cli(str(config), "--env=Simple1DContinuous", "--run-id=s", "--resume")
    assert result.code == 0 and "reward-signal updates at a faster one than reward_signal_steps_per_update 20" \
        in result.log and "updates at a faster one than steps_per_update" not in result.log, result.log
    resumed = CheckpointManager.load(CheckpointManager(workdir / "models/s/1D", 5).latest())["algorithm"]
    # it trained again, at the new pace (the counts lag the updates due by the experience not yet handed over)
    assert state["algorithm"]["step"] // 20 < resumed["signal_update_count"] <= resumed["step"] // 20


def test_a_replay_buffer_too_large_for_memory_at_resume_says_so(run_cli, workdir, monkeypatch):
    # not "is not a replay buffer": the file is sound, the memory ran out
    config = write_yaml(workdir / "c.yaml", SMALL_SAC.format(max_steps=200))
    assert run_cli(str(config), "--env=Simple1DContinuous", "--run-id=r").code == 0

    def short_of_memory(self, state):
        raise MemoryError("Unable to allocate 3.1 GiB for an array with shape (50000, 84, 84, 3)")

    monkeypatch.setattr(SAC, "load_replay_state", short_of_memory)
    write_yaml(workdir / "c.yaml", SMALL_SAC.format(max_steps=300))
    result = run_cli(str(config), "--env=Simple1DContinuous", "--run-id=r", "--resume")
    assert result.code != 0 and "Traceback" not in result.log
    assert ("replay_buffer.pt does not fit in memory (Unable to allocate 3.1 GiB for an array with shape (50000, 84, 84, "
            "3)); lower buffer_size, or delete the file to resume with an empty replay buffer") in result.log, result.log


def test_a_recurrent_replay_buffer_resumes_only_with_the_sequence_length_it_was_cut_with(run_cli, workdir):
    # its rows sit in blocks of sequence_length (padding and stored memories included): read
    # with another length, blocks would start mid-episode with zero memory
    text = SMALL_SAC.format(max_steps=300) + "  use_recurrent: true\n  memory_size: 8\n  sequence_length: {L}\n"
    config = write_yaml(workdir / "c.yaml", text.format(L=8))
    assert run_cli(str(config), "--env=Memory1DContinuous", "--run-id=r").code == 0
    replay = CheckpointManager.load_file(workdir / "models/r/1D/replay_buffer.pt", "")
    valid = torch.cat(replay["columns"]["valid"])  # the ring's parts, oldest first
    real = int(valid.sum())
    assert replay["sequence_length"] == 8 and 0 < real < valid.shape[0]

    write_yaml(workdir / "c.yaml", text.format(L=4).replace("max_steps: 300", "max_steps: 400"))
    result = run_cli(str(config), "--env=Memory1DContinuous", "--run-id=r", "--resume")
    assert result.code != 0 and "Traceback" not in result.log
    assert ("replay_buffer.pt does not fit behavior '1D''s settings: it holds sequences of 8 rows, and "
            "sequence_length is now 4; set them back, or delete the file") in result.log

    write_yaml(workdir / "c.yaml", text.format(L=8).replace("max_steps: 300", "max_steps: 400"))
    result = run_cli(str(config), "--env=Memory1DContinuous", "--run-id=r", "--resume")
    assert result.code == 0 and f"restored {real} transitions" in result.log  # padding rows are not counted

    # a smaller buffer keeps the newest blocks only, and says how many real rows it kept
    replay = CheckpointManager.load_file(workdir / "models/r/1D/replay_buffer.pt", "")
    kept = int(torch.cat(replay["columns"]["valid"])[-40:].sum())
    assert kept < int(torch.cat(replay["columns"]["valid"]).sum())
    write_yaml(workdir / "c.yaml", text.format(L=8).replace("max_steps: 300", "max_steps: 500")
               .replace("buffer_size: 500", "buffer_size: 40"))
    result = run_cli(str(config), "--env=Memory1DContinuous", "--run-id=r", "--resume")
    assert result.code == 0 and f"restored {kept} transitions" in result.log, result.log


# -- learning (CI-sized, seeded) ---------------------------------------------------------------
@pytest.mark.training
@pytest.mark.parametrize("env_name,seeds", [
    # Discrete: seeds 0-15 all end at 1.010 (docs/benchmarks.md), so one seed, ML-Agents' own.
    ("Simple1DDiscrete", [1337]),
    # Continuous: 11 of seeds 0-11 end at 1.016-1.020; seed 5 solves the task by step 350, then
    # its policy's entropy climbs from 0.05 to 1.0 and it loses the task near step 950 (the
    # cause is not pinned down; docs/benchmarks.md). A single seed would fail on about one
    # machine in twelve, so ML-Agents' criterion is checked on the median of three seeds.
    ("Simple1DContinuous", [1337, 1, 2]),
])
def test_sac_solves_the_1d_test_environments(run_cli, workdir, env_name, seeds, episode_returns):
    # The shipped SAC config's 1D section is ML-Agents' SAC test config (one update per step).
    scores = []
    for seed in seeds:
        episode_returns.clear()
        result = run_cli(str(SAC_CONFIG), f"--env={env_name}", f"--run-id=id{seed}", f"--seed={seed}",
                         "--save-freq=99999", "--keep-checkpoints=1")
        assert result.code == 0, result.log
        assert len(episode_returns) >= 5
        scores.append(float(np.mean(episode_returns[-5:])))
    assert np.median(scores) > 0.9, scores


@pytest.mark.training
def test_sac_solves_3dball_with_ml_agents_sac_config(run_cli, workdir, conformance):
    # The real release-2 sac_trainer_config.yaml, 3DBall section, shortened from 500k steps.
    text = (conformance / "mlagents-release2/config/sac_trainer_config.yaml").read_text()
    config = write_yaml(workdir / "c.yaml", text.replace("max_steps: 5.0e5", "max_steps: 6.0e4", 1))
    assert run_cli(str(config), "--env=3DBall", "--run-id=s", "--seed=0").code == 0
    returns = evaluate_onnx(make_env("3DBall", seed=3), workdir / "models/s/3DBall.onnx", episodes=24)
    assert np.mean(returns) >= 90.0


@pytest.mark.training
def test_sac_solves_pendulum_within_20k_steps(run_cli, workdir):
    config = write_yaml(workdir / "c.yaml", SAC_CONFIG.read_text().replace("max_steps: 20000", "max_steps: 10000"))
    assert run_cli(str(config), "--env=Pendulum-v1", "--run-id=p", "--seed=0").code == 0
    returns = evaluate_onnx(make_env("Pendulum-v1", seed=5, num_areas=2), workdir / "models/p/Pendulum-v1.onnx",
                            episodes=10)
    assert np.mean(returns) >= -200.0


def test_a_replay_buffer_of_a_newer_format_is_refused_by_name_and_one_without_a_format_still_reads(run_cli, workdir):
    config = write_yaml(workdir / "c.yaml", SMALL_SAC.format(max_steps=200))
    assert run_cli(str(config), "--env=Simple1DContinuous", "--run-id=r").code == 0
    path = workdir / "models/r/1D/replay_buffer.pt"
    replay = CheckpointManager.load_file(path, "")
    assert replay["format"] == 3

    write_yaml(workdir / "c.yaml", SMALL_SAC.format(max_steps=300))
    CheckpointManager.save_file(path, replay | {"format": 4})
    result = run_cli(str(config), "--env=Simple1DContinuous", "--run-id=r", "--resume")
    assert result.code != 0 and "Traceback" not in result.log
    assert "replay_buffer.pt has replay format 4, this Palaestra reads up to 3: a newer Palaestra wrote it" in result.log

    CheckpointManager.save_file(path, {k: v for k, v in replay.items() if k != "format"})  # as saved before the key
    result = run_cli(str(config), "--env=Simple1DContinuous", "--run-id=r", "--resume")
    assert result.code == 0 and "restored" in result.log, result.log
