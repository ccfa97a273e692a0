"""The numpy acting mirror equals the torch policy, masks are respected, the normalizer is
right, and the exported ONNX model reproduces the policy's deterministic actions."""

from __future__ import annotations

import functools

import numpy as np
import onnxruntime as ort
import pytest
import torch

from palaestra.networks.constants import ACTIVATIONS
from palaestra.envs.base import ActionSpec, BehaviorSpec
from palaestra.export import export_policy
from palaestra.networks.normalizer import Normalizer
from palaestra.networks.optim import make_adam
from palaestra.networks.accelerator import accelerate
from palaestra.networks.policy import ActorCritic
from palaestra.rollout.buffers import observation_columns

# torch has a fused Adam kernel on the CPU from 2.4 on; the algorithms fall back on the plain one
FUSED_CPU_ADAM = bool(make_adam([torch.nn.Parameter(torch.zeros(1))], 1e-3).param_groups[0].get("fused"))
WITHOUT_FUSED_CPU_ADAM = "this torch has no fused Adam kernel on the CPU (torch 2.4 on)"
TORCH_2_4 = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 4)

SPECS = {
    "continuous": BehaviorSpec(((5,),), ActionSpec(continuous_size=3)),
    "discrete": BehaviorSpec(((4,), (2,)), ActionSpec(discrete_branches=(3, 2, 4))),
    "hybrid": BehaviorSpec(((6,),), ActionSpec(continuous_size=2, discrete_branches=(3,))),
    "one-branch": BehaviorSpec(((4,),), ActionSpec(discrete_branches=(5,))),  # the acting fast path
}


def make_policy(spec, normalize=True, activation="swish"):
    torch.manual_seed(0)
    policy = ActorCritic(spec, hidden_units=16, num_layers=2, normalize=normalize, num_value_heads=2,
                         activation=activation)
    with torch.no_grad():  # a non-trivial policy: random weights and normalizer statistics
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    if normalize:
        policy.normalizer.update(np.random.default_rng(1).normal(2.0, 3.0, size=(50, policy.obs_size)))
    return policy


def split(spec, flat):
    """Flat rows ``[n, total]`` → one array per observation of ``spec``, as environments give them."""
    out, start = [], 0
    for shape in spec.observation_shapes:
        size = int(np.prod(shape))
        out.append(flat[:, start : start + size].reshape(len(flat), *shape))
        start += size
    return out


def torch_list(observations):
    return [torch.as_tensor(o) for o in observations]


def random_allowed(spec, n, rng):
    allowed = rng.random((n, sum(spec.action_spec.discrete_branches))) > 0.3
    start = 0
    for size in spec.action_spec.discrete_branches:  # keep one action allowed per branch
        allowed[np.arange(n), start + rng.integers(0, size, n)] = True
        start += size
    return allowed


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("kind", list(SPECS))
def test_numpy_mirror_matches_torch(kind, masked, activation):
    spec = SPECS[kind]
    policy = make_policy(spec, activation=activation)
    mirror = accelerate(policy, np.random.default_rng(0))
    rng = np.random.default_rng(2)
    obs = split(spec, rng.normal(size=(7, policy.obs_size)).astype(np.float32))
    allowed = random_allowed(spec, 7, rng) if spec.action_spec.is_discrete and masked else None
    out = mirror.act(obs, allowed)
    assert out.continuous.shape == (7, spec.action_spec.continuous_size)
    assert out.discrete.shape == (7, len(spec.action_spec.discrete_branches))
    with torch.no_grad():
        ref = policy.evaluate(
            torch_list(obs), None if allowed is None else torch.as_tensor(allowed),
            torch.as_tensor(out.continuous) if spec.action_spec.is_continuous else None,
            torch.as_tensor(out.discrete) if spec.action_spec.is_discrete else None,
        )
    np.testing.assert_allclose(out.log_prob, ref.log_prob.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.entropy, ref.entropy.numpy(), rtol=1e-4, atol=1e-4)
    det = mirror.act(obs, allowed, deterministic=True)
    with torch.no_grad():
        ref_det = policy.act(torch_list(obs), None if allowed is None else torch.as_tensor(allowed),
                             deterministic=True)
    if spec.action_spec.is_continuous:
        np.testing.assert_allclose(det.continuous, ref_det.continuous.numpy(), rtol=1e-4, atol=1e-5)
    if spec.action_spec.is_discrete:
        np.testing.assert_array_equal(det.discrete, ref_det.discrete.numpy())
    if allowed is not None:
        one_hot = np.zeros_like(allowed)
        start = 0
        for b, size in enumerate(spec.action_spec.discrete_branches):
            one_hot[np.arange(7), start + out.discrete[:, b]] = True
            start += size
        assert not (one_hot & ~allowed).any(), "a masked action was chosen"


def test_normalized_observations_are_clipped_at_five_standard_deviations_in_torch_and_in_numpy():
    # ML-Agents clips normalized observations to [-5, 5]; acting and training in numpy must too,
    # or the CPU's policy and the exported model part ways on outliers
    spec = SPECS["continuous"]
    policy = make_policy(spec)
    mirror = accelerate(policy, np.random.default_rng(0))
    mean, std = policy.normalizer.mean.numpy(), policy.normalizer.var.numpy() ** 0.5
    far = np.stack([mean + 50 * std, mean - 80 * std]).astype(np.float32)
    at_clip = np.stack([mean + 5 * std, mean - 5 * std]).astype(np.float32)
    inside = np.stack([mean + 4 * std, mean - 4 * std]).astype(np.float32)
    with torch.no_grad():
        torch_far, torch_clip, torch_inside = (
            policy.act([torch.as_tensor(o)], None, deterministic=True).continuous.numpy() for o in (far, at_clip, inside))
    numpy_far = mirror.act([far], None, deterministic=True).continuous
    numpy_clip = mirror.act([at_clip], None, deterministic=True).continuous
    np.testing.assert_allclose(torch_far, torch_clip, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(numpy_far, numpy_clip, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(numpy_far, torch_far, rtol=1e-4, atol=1e-5)
    assert not np.allclose(torch_inside, torch_clip, atol=1e-3)  # (the clip is what made them equal)


def test_numpy_mirror_follows_weight_updates_in_place():
    spec = SPECS["continuous"]
    policy = make_policy(spec)
    mirror = accelerate(policy, np.random.default_rng(0))
    obs = [np.ones((2, 5), np.float32)]
    before = mirror.act(obs, None, deterministic=True).continuous
    with torch.no_grad():
        policy.mu.bias.add_(1.0)
    np.testing.assert_allclose(mirror.act(obs, None, deterministic=True).continuous, before + 1.0, rtol=1e-5)


def test_normalizer_matches_numpy_statistics():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 4))
    norm = Normalizer(4)
    for chunk in np.array_split(data, 7):
        norm.update(chunk)
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(norm.var.numpy(), data.var(0), rtol=1e-4)


def test_observations_whose_variance_overflows_float32_are_refused_and_leave_the_statistics_alone():
    from palaestra.networks.normalizer import NormalizerOverflow

    norm = Normalizer(3)
    norm.update(np.ones((4, 3)))
    before = [t.clone() for t in (norm.mean, norm.var, norm.count)]
    huge = np.ones((4, 3))
    huge[2, 1] = 1e30  # a variance of about 1e59: infinite in float32, and every normalized value 0
    with pytest.raises(NormalizerOverflow, match=r"values up to 1e\+30 \(element 1 of the vector observations\)"):
        norm.update(huge)
    assert all(torch.equal(a, b) for a, b in zip(before, (norm.mean, norm.var, norm.count)))
    norm.update(np.full((4, 3), 1e15))  # large, but within float32's range
    assert torch.isfinite(norm.var).all()


def test_ppo_normalizes_with_each_finished_segment_as_ml_agents_does(tmp_path):
    # ML-Agents updates the normalizer with each trajectory, not once per update: acting uses the
    # new statistics from the next step on, also before the first update
    from palaestra.checkpoints import CheckpointManager
    from palaestra.envs.builtin import BUILTIN_ENVS
    from palaestra.settings import ExtrinsicSettings, TrainerSettings
    from palaestra.stats import StatsReporter
    from palaestra.trainer import BehaviorTrainer

    env = BUILTIN_ENVS["Simple1DContinuous"](seed=0)
    settings = TrainerSettings(batch_size=16, buffer_size=512, hidden_units=8, num_layers=1, normalize=True,
                               time_horizon=4, reward_signals={"extrinsic": ExtrinsicSettings()})
    trainer = BehaviorTrainer("1D", env.behavior_specs["1D"], settings, torch.device("cpu"), StatsReporter("t", []),
                              CheckpointManager(tmp_path, 1), tmp_path, training=True)
    normalizer = trainer.algorithm.policy.normalizer
    env.reset()
    seen = []
    for _ in range(40):
        decision, terminal = env.get_steps("1D")
        seen.append(decision.obs[0].copy())
        env.set_actions("1D", trainer.act(decision, terminal))
        env.step()
        trainer.advance()
    assert trainer.algorithm.update_count == 0
    assert 30 <= normalizer.count.item() == trainer.step  # every recorded row, before any update
    recorded = np.concatenate(seen)[: int(normalizer.count.item())]
    np.testing.assert_allclose(normalizer.mean.numpy(), recorded.mean(0), atol=0.2)


def test_exporting_draws_nothing_from_torch_s_random_streams(tmp_path):
    # the trace samples actions: every save moved the streams GAIL's noise draws from, so --save-freq
    # changed what a run learned
    for spec in SPECS.values():
        policy = make_policy(spec)
        torch.manual_seed(5)
        expected = torch.rand(3)
        torch.manual_seed(5)
        export_policy(policy, tmp_path / "policy.onnx")
        torch.testing.assert_close(torch.rand(3), expected)


def test_export_works_with_a_torch_whose_exporter_takes_no_dynamo_argument(tmp_path, monkeypatch):
    # torch 2.3 (which the project accepts) has no `dynamo` parameter: passing it failed every save
    import palaestra.export

    real = torch.onnx.export

    def export_of_torch_2_3(model, args, f, export_params=True, verbose=False, training=None, input_names=None,
                            output_names=None, operator_export_type=None, opset_version=None,
                            do_constant_folding=True, dynamic_axes=None, keep_initializers_as_inputs=None,
                            custom_opsets=None, export_modules_as_functions=False, autograd_inlining=True):
        return real(model, args, f, **({"dynamo": False} if TORCH_2_4 else {}), input_names=input_names,
                    output_names=output_names, opset_version=opset_version, dynamic_axes=dynamic_axes)

    # this torch: from 2.4 the choice made explicit
    assert palaestra.export.torchscript_exporter() == ({"dynamo": False} if TORCH_2_4 else {})
    assert palaestra.export.torchscript_exporter(export_of_torch_2_3) == {}
    monkeypatch.setattr(torch.onnx, "export", export_of_torch_2_3)
    monkeypatch.setattr(palaestra.export, "_TORCHSCRIPT_EXPORTER", palaestra.export.torchscript_exporter())
    spec = next(s for s in SPECS.values() if s.action_spec.is_discrete)
    export_policy(make_policy(spec), tmp_path / "policy.onnx")
    assert (tmp_path / "policy.onnx").stat().st_size > 0


def test_an_exported_model_never_samples_a_masked_action_even_at_a_uniform_draw_of_one(tmp_path):
    # Barracuda's CPU backend draws uniforms in [0, 1]; at 1 the Gumbel term was infinite and
    # outweighed the mask: the model's noise is replaced here by that draw, everywhere
    import onnx
    from onnx import helper, numpy_helper

    spec = next(s for s in SPECS.values() if s.action_spec.is_discrete)
    path = tmp_path / "policy.onnx"
    export_policy(make_policy(spec), path)
    model = onnx.load(str(path))
    graph = model.graph
    randoms = [node for node in graph.node if node.op_type == "RandomUniformLike"]
    assert randoms
    for k, node in enumerate(randoms):
        like, out = node.input[0], node.output[0]
        position = list(graph.node).index(node)
        graph.node.remove(node)
        graph.initializer.extend([numpy_helper.from_array(np.zeros((), np.float32), f"zero_{k}"),
                                  numpy_helper.from_array(np.ones((), np.float32), f"one_{k}")])
        graph.node.insert(position, helper.make_node("Mul", [like, f"zero_{k}"], [f"zeroed_{k}"]))
        graph.node.insert(position + 1, helper.make_node("Add", [f"zeroed_{k}", f"one_{k}"], [out]))
    onnx.save(model, str(path))
    session = ort.InferenceSession(str(path))
    rng = np.random.default_rng(5)
    n = 64
    feeds = {f"obs_{i}": rng.normal(size=(n, *s)).astype(np.float32) for i, s in enumerate(spec.observation_shapes)}
    allowed = random_allowed(spec, n, rng)
    feeds["action_masks"] = allowed.astype(np.float32)
    sampled = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))["discrete_actions"]
    start = 0
    for b, size in enumerate(spec.action_spec.discrete_branches):
        assert allowed[np.arange(n), start + sampled[:, b].astype(int)].all(), "a masked action was sampled"
        start += size


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("kind", list(SPECS))
def test_onnx_export_matches_deterministic_actions(tmp_path, kind, activation):
    spec = SPECS[kind]
    policy = make_policy(spec, activation=activation)
    path = tmp_path / "policy.onnx"
    export_policy(policy, path)
    # no operation whose result depends on a tensor's shape at run time (older Barracuda takes
    # only constant shapes); the action masks apply by arithmetic
    import onnx

    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert not ops & {"Shape", "ConstantOfShape", "Expand", "Where"}, ops
    session = ort.InferenceSession(str(path))
    rng = np.random.default_rng(3)
    n = 9
    feeds = {f"obs_{i}": rng.normal(size=(n, *s)).astype(np.float32) for i, s in enumerate(spec.observation_shapes)}
    allowed = None
    if spec.action_spec.is_discrete:
        allowed = random_allowed(spec, n, rng)
        feeds["action_masks"] = allowed.astype(np.float32)
    names = [o.name for o in session.get_outputs()]
    results = dict(zip(names, session.run(None, feeds)))
    assert results["version_number"].tolist() == [3.0] and results["memory_size"].tolist() == [0.0]
    # ML-Agents' types: constants and continuous actions float32, branch indices int64 (Sentis
    # reads discrete actions as an int tensor: float ones fail there on the first decision)
    types = {o.name: o.type for o in session.get_outputs()}
    assert {t for n, t in types.items() if "discrete_actions" not in n} == {"tensor(float)"}, types
    assert {t for n, t in types.items() if "discrete_actions" in n} <= {"tensor(int64)"}, types
    obs = [torch.as_tensor(feeds[f"obs_{i}"]) for i in range(len(spec.observation_shapes))]
    with torch.no_grad():
        out = policy.act(obs, None if allowed is None else torch.as_tensor(allowed), deterministic=True)
    if spec.action_spec.is_continuous:
        np.testing.assert_allclose(results["deterministic_continuous_actions"],  # as the environment gets them
                                   np.clip(out.continuous.numpy(), -1.0, 1.0), rtol=1e-4, atol=1e-5)
        assert results["continuous_actions"].shape == (n, spec.action_spec.continuous_size)
        assert results["continuous_action_output_shape"].tolist() == [spec.action_spec.continuous_size]
    if spec.action_spec.is_discrete:
        np.testing.assert_array_equal(results["deterministic_discrete_actions"], out.discrete.numpy())
        sampled = results["discrete_actions"].astype(int)
        assert sampled.shape == (n, spec.action_spec.num_branches)
        start = 0
        for b, size in enumerate(spec.action_spec.discrete_branches):
            assert allowed[np.arange(n), start + sampled[:, b]].all(), "ONNX sampled a masked action"
            start += size
        assert results["discrete_action_output_shape"].tolist() == list(spec.action_spec.discrete_branches)


@pytest.mark.parametrize("kind", list(SPECS))
@pytest.mark.parametrize("epsilon,beta,masked,value_scale,activation", [
    (0.2, 0.01, True, 1.0, "swish"), (0.05, 0.0, True, 1.0, "swish"), (0.2, 0.01, False, 1.0, "swish"),
    (0.2, 0.01, True, 4.0, "swish"), (0.2, 0.01, True, 1.0, "tanh"), (0.2, 0.01, True, 1.0, "relu")])
@pytest.mark.parametrize("normalize,signals", [(True, 2), (False, 1)])
def test_numpy_gradients_match_torch_autograd(kind, epsilon, beta, masked, value_scale, activation, normalize,
                                              signals):
    from palaestra.algorithms.ppo import PPO
    from palaestra.settings import ExtrinsicSettings, TrainerSettings

    spec = SPECS[kind]
    signal_settings = {"extrinsic": ExtrinsicSettings(), "other": ExtrinsicSettings()}
    settings = TrainerSettings(hidden_units=16, num_layers=2, normalize=normalize, batch_size=8, buffer_size=64,
                               activation=activation, reward_signals=dict(list(signal_settings.items())[:signals]))
    ppo = PPO(spec, settings, torch.device("cpu"), np.random.default_rng(0))
    policy = ppo.policy
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    if normalize:
        policy.normalizer.update(np.random.default_rng(1).normal(1.0, 2.0, size=(40, policy.obs_size)))
    rng = np.random.default_rng(4)
    B = 32
    obs = split(spec, rng.normal(size=(B, policy.obs_size)).astype(np.float32))
    width = sum(spec.action_spec.discrete_branches)
    allowed = random_allowed(spec, B, rng) if masked and spec.action_spec.is_discrete else np.ones((B, width), bool)
    acted = accelerate(policy, rng).act(obs, allowed if spec.action_spec.is_discrete else None)
    with torch.no_grad():
        values = policy.value(torch_list(obs)).numpy()
    batch = {
        **observation_columns(obs), "allowed": allowed, "continuous": acted.continuous, "discrete": acted.discrete,
        # old log-probabilities around the current ones, so ratios fall inside and outside the clip range
        "log_prob": (acted.log_prob + rng.normal(0, 0.3, B)).astype(np.float32),
        "advantages": rng.normal(size=B).astype(np.float32),
        "old_values": (values + rng.normal(0, 0.3, values.shape)).astype(np.float32),
        "returns": rng.normal(size=values.shape).astype(np.float32),
    }
    # value_scale 4: returns far from unit scale, learned without value clipping
    batch["old_values"] *= value_scale
    batch["returns"] *= value_scale
    value_clip = epsilon if value_scale == 1.0 else np.inf
    losses_torch = ppo._torch_gradients({k: torch.as_tensor(v) for k, v in batch.items()}, epsilon, beta, value_clip)
    expected = {n: p.grad.clone() for n, p in policy.named_parameters()}
    if not masked:
        del batch["allowed"]  # as PPO.update passes a batch with nothing masked
    losses_numpy = ppo._accelerated_gradients(batch, epsilon, beta, value_clip)
    np.testing.assert_allclose(losses_numpy, losses_torch, rtol=1e-4, atol=1e-6)
    for name, param in policy.named_parameters():
        np.testing.assert_allclose(param.grad.numpy(), expected[name].numpy(), rtol=2e-3, atol=2e-6, err_msg=name)


class _WithMemory(ActorCritic):
    """A policy-like module with a layer the accelerator does not implement."""

    def __init__(self, *args, layer: str = "lstm", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.memory = torch.nn.LSTM(4, 4) if layer == "lstm" else torch.nn.Conv2d(3, 4, 3)


@pytest.mark.parametrize("layer", ["lstm", "conv"])
def test_the_accelerator_applies_to_plain_mlps_only(monkeypatch, layer):
    from palaestra.algorithms import ppo as ppo_module
    from palaestra.networks.accelerator import describe
    from palaestra.settings import ExtrinsicSettings, TrainerSettings

    spec = SPECS["hybrid"]
    assert accelerate(make_policy(spec)) is not None and describe(make_policy(spec)) is not None
    odd = _WithMemory(spec, 16, 2, True, 1, layer=layer)
    assert accelerate(odd) is None and describe(odd) is None  # decided from the layers, not the device
    # PPO with such a policy acts and trains on torch and autograd (its Adam still steps over one
    # flat buffer on the CPU: that needs no accelerator)
    monkeypatch.setattr(ppo_module, "ActorCritic", functools.partial(_WithMemory, layer=layer))
    settings = TrainerSettings(hidden_units=16, num_layers=1, batch_size=8, buffer_size=16,
                               reward_signals={"extrinsic": ExtrinsicSettings()})
    ppo = ppo_module.PPO(spec, settings, torch.device("cpu"), np.random.default_rng(0))
    assert ppo._accelerated is None and ppo._numpy_adam is not None
    out = ppo.act([np.zeros((3, 6), np.float32)], np.ones((3, 3), bool))
    assert out.continuous.shape == (3, 2) and out.log_prob.shape == (3,)


def test_value_heads_start_near_zero():
    # random first value estimates as large as a sparse task's rewards bias the first updates
    # (docs/algorithms.md); the heads start small instead
    from palaestra.algorithms.ppo import PPO
    from palaestra.envs.builtin import BUILTIN_ENVS
    from palaestra.settings import ExtrinsicSettings, TrainerSettings

    spec = BUILTIN_ENVS["Basic"]().behavior_specs["Basic"]
    settings = TrainerSettings(hidden_units=20, num_layers=1, reward_signals={"extrinsic": ExtrinsicSettings()})
    for seed in range(4):
        torch.manual_seed(seed)
        ppo = PPO(spec, settings, torch.device("cpu"))
        with torch.no_grad():
            values = ppo.policy.value([torch.eye(20)])
        assert values.abs().max() < 0.05


def test_numpy_adam_matches_torch_adam_and_round_trips_its_state():
    from palaestra.networks.numpy_adam import NumpyAdam

    spec = SPECS["hybrid"]
    reference = make_policy(spec)
    fast = make_policy(spec)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=3e-3)
    fast_opt = torch.optim.Adam(fast.parameters(), lr=3e-3)
    adam = NumpyAdam(list(fast.parameters()), fast_opt)
    rng = np.random.default_rng(0)
    for _ in range(25):
        for p_ref, p_fast in zip(reference.parameters(), fast.parameters()):
            g = torch.as_tensor(rng.normal(size=p_ref.shape).astype(np.float32))
            p_ref.grad = g.clone()
            p_fast.grad.copy_(g)  # the flat gradient buffer, in place
        ref_opt.step()
        adam.step()
    for p_ref, p_fast in zip(reference.parameters(), fast.parameters()):
        np.testing.assert_allclose(p_fast.detach().numpy(), p_ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    # The torch optimizer's state_dict carries the numpy Adam's state in torch's own format ...
    adam.sync()
    saved = fast_opt.state_dict()
    ref_saved = ref_opt.state_dict()
    for k in ref_saved["state"]:
        np.testing.assert_allclose(saved["state"][k]["exp_avg"].numpy(), ref_saved["state"][k]["exp_avg"].numpy(),
                                   rtol=1e-5, atol=1e-7)
        assert float(saved["state"][k]["step"]) == float(ref_saved["state"][k]["step"]) == 25
    # ... and a fresh numpy Adam resumes from torch Adam's state.
    resumed = make_policy(spec)
    resumed.load_state_dict(reference.state_dict())
    resumed_opt = torch.optim.Adam(resumed.parameters(), lr=3e-3)
    resumed_adam = NumpyAdam(list(resumed.parameters()), resumed_opt)
    resumed_opt.load_state_dict(ref_saved)
    resumed_adam.after_load()
    assert resumed_adam.t == 25
    for p_ref, p_res in zip(reference.parameters(), resumed.parameters()):
        g = torch.ones_like(p_ref)
        p_ref.grad = g.clone()
        p_res.grad.copy_(g)
    ref_opt.step()
    resumed_adam.step()
    for p_ref, p_res in zip(reference.parameters(), resumed.parameters()):
        np.testing.assert_allclose(p_res.detach().numpy(), p_ref.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shapes", [[(50,)], [(4, 3), (3,), (7,)]], ids=["one flat parameter", "several"])
@pytest.mark.parametrize("fused", [pytest.param(True, marks=pytest.mark.skipif(not FUSED_CPU_ADAM,
                                                                                reason=WITHOUT_FUSED_CPU_ADAM)), False])
def test_the_lean_adam_step_matches_optimizer_step(fused, shapes):
    from palaestra.networks.optim import lean_adam_step

    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(shape)) for shape in shapes]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    opt_a = torch.optim.Adam(a, lr=0.01, fused=fused)
    opt_b = torch.optim.Adam(b, lr=0.01, fused=fused)
    for step in range(5):
        for pa, pb in zip(a, b):
            g = torch.randn(pa.shape)
            pa.grad, pb.grad = g.clone(), g.clone()
        opt_a.param_groups[0]["lr"] = opt_b.param_groups[0]["lr"] = 0.01 / (step + 1)
        opt_a.step()
        lean_adam_step(opt_b)
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa.data, pb.data)
        torch.testing.assert_close(opt_a.state[pa]["exp_avg_sq"], opt_b.state[pb]["exp_avg_sq"])
        assert float(opt_a.state[pa]["step"]) == float(opt_b.state[pb]["step"]) == 5


def test_numpy_mirror_is_quiet_and_finite_for_extreme_inputs():
    import warnings

    spec = SPECS["discrete"]
    mirror = accelerate(make_policy(spec, normalize=False), np.random.default_rng(0))
    obs = split(spec, np.array([[1e6] * 6, [-1e6] * 6], np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning would be raised here
        out = mirror.act(obs, None)
    assert np.isfinite(out.log_prob).all() and np.isfinite(out.entropy).all()


def test_gradient_norm_clipping_matches_torch():
    from palaestra.networks.numpy_adam import NumpyAdam
    from palaestra.networks.optim import make_adam

    policy = make_policy(SPECS["continuous"])
    optimizer = make_adam(policy.parameters(), 1e-3, eps=1e-5)
    assert optimizer.param_groups[0]["eps"] == 1e-5  # adam_epsilon reaches the optimizer
    numpy_adam = NumpyAdam(list(policy.parameters()), optimizer)
    rng = np.random.default_rng(0)
    for scale, max_norm in [(3.0, 0.5), (1e-3, 0.5)]:  # clipped, and left alone below the bound
        grads = [torch.as_tensor(rng.normal(size=p.shape) * scale, dtype=torch.float32) for p in policy.parameters()]
        reference = [g.clone().requires_grad_(False) for g in grads]
        holders = [torch.nn.Parameter(torch.zeros_like(g)) for g in reference]
        for holder, g in zip(holders, reference):
            holder.grad = g
        torch.nn.utils.clip_grad_norm_(holders, max_norm)
        for p, g in zip(policy.parameters(), grads):
            p.grad.copy_(g)
        numpy_adam.clip_grad_norm(max_norm)
        for p, holder in zip(policy.parameters(), holders):
            torch.testing.assert_close(p.grad, holder.grad)


def test_numpy_adam_over_a_flat_buffer_takes_only_the_buffer_s_parameter():
    from palaestra.networks.flat_params import FlatParameters
    from palaestra.networks.numpy_adam import NumpyAdam
    from palaestra.networks.optim import make_adam

    policy = make_policy(SPECS["continuous"])
    flat = FlatParameters(list(policy.parameters()))
    optimizer = make_adam([flat.parameter], 1e-3)
    NumpyAdam([flat.parameter], optimizer, flat=flat)  # accepted
    other = torch.nn.Parameter(torch.zeros_like(flat.data))
    with pytest.raises(ValueError, match="the optimizer's parameter is the buffer's"):
        NumpyAdam([other], make_adam([other], 1e-3), flat=flat)


@pytest.mark.parametrize("rows,units", [(8, 16), (256, 128)])  # one stacked product / one per tower
@pytest.mark.parametrize("shared_input", [True, False])
def test_twin_layers_match_autograd_on_both_product_paths(rows, units, shared_input):
    """SAC's critics and PPO's towers: the numpy twin layers' outputs, weight gradients and input
    gradient equal autograd's, whether both towers read one input (one stacked product for small
    ones, a product per tower for large ones: numpy_layers.Twin) or each its own."""
    from palaestra.networks.accelerator import twin_layers
    from palaestra.networks.numpy_layers import Twin
    from palaestra.networks.policy import TwinMLP

    assert (rows * units < Twin.STACKED_BELOW) == (units == 16)  # the two paths, as the sizes intend
    torch.manual_seed(0)
    twin = TwinMLP(4, units, 2, "swish", outputs=1)
    for p in twin.parameters():
        p.grad = torch.zeros_like(p)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4) if shared_input else (2, rows, 4)).astype(np.float32)
    upstream = rng.normal(size=(2, rows, 1)).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    out = twin(tx)
    (out * torch.as_tensor(upstream)).sum().backward()
    expected = [p.grad.clone() for p in twin.parameters()]
    for p in twin.parameters():
        p.grad.zero_()
    layers = twin_layers(twin)
    cache: list = []
    np.testing.assert_allclose(layers.forward(x, cache), out.detach().numpy(), rtol=1e-4, atol=1e-5)
    grad_x = layers.backward(upstream, cache, input_grad=True)
    np.testing.assert_allclose(grad_x, tx.grad.numpy(), rtol=1e-3, atol=1e-5)
    for got, want in zip(twin.parameters(), expected):
        np.testing.assert_allclose(got.grad.numpy(), want.numpy(), rtol=1e-3, atol=1e-4)


def test_numpy_adam_over_a_large_buffer_takes_torch_s_kernel_with_the_same_arithmetic():
    """From TORCH_KERNEL_FROM parameters NumpyAdam steps with torch's fused kernel (where torch
    has one on the CPU: 2.4 on): the same trajectory as torch's Adam and as its own numpy passes,
    and the step count checkpoints."""
    from palaestra.networks import numpy_adam
    from palaestra.networks.flat_params import FlatParameters
    from palaestra.networks.optim import make_adam

    n = numpy_adam.TORCH_KERNEL_FROM + 1000
    rng = np.random.default_rng(0)
    start = rng.normal(size=n).astype(np.float32)
    grads = [rng.normal(size=n).astype(np.float32) for _ in range(20)]
    results = {}
    for path in ("fused", "numpy", "torch") if FUSED_CPU_ADAM else ("numpy", "torch"):
        param = torch.nn.Parameter(torch.tensor(start))
        flat = FlatParameters([param])
        # as the algorithms make it (fused where torch has the kernel); the reference is not fused
        optimizer = make_adam([flat.parameter], 3e-3) if path != "torch" else torch.optim.Adam([flat.parameter], lr=3e-3)
        adam = numpy_adam.NumpyAdam([flat.parameter], optimizer, flat=flat) if path != "torch" else None
        if adam is not None:
            assert adam._fused == FUSED_CPU_ADAM  # (without the kernel, numpy's step at any size)
            adam._fused = path == "fused"
        for g in grads:
            flat.grad.copy_(torch.as_tensor(g))
            adam.step() if adam is not None else optimizer.step()
        if adam is not None:
            adam.sync()
            assert float(optimizer.state_dict()["state"][0]["step"]) == len(grads)
        results[path] = flat.data.numpy().copy()
    if FUSED_CPU_ADAM:
        np.testing.assert_allclose(results["fused"], results["torch"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results["numpy"], results["torch"], rtol=1e-5, atol=1e-6)
    assert not np.array_equal(results["numpy"], start)
    # an optimizer that is not fused keeps the numpy step at any size
    assert not numpy_adam.NumpyAdam([flat.parameter], torch.optim.Adam([flat.parameter]), flat=flat)._fused


@pytest.mark.parametrize("size", [1, 2, 6])
def test_the_continuous_entropy_is_ml_agents_mean_over_dimensions(size):
    # ML-Agents' Policy/Entropy and PPO's bonus read a Gaussian's entropy per dimension, averaged
    # over the dimensions: at log-std 0 it is 0.5 log(2 pi e) whatever the action's size, on the
    # torch policy and the numpy accelerator alike
    spec = BehaviorSpec(observation_shapes=((3,),), action_spec=ActionSpec(continuous_size=size))
    torch.manual_seed(0)
    policy = ActorCritic(spec, hidden_units=8, num_layers=1, normalize=False, num_value_heads=1)
    obs = [np.zeros((4, 3), np.float32)]
    expected = 0.5 * np.log(2 * np.pi * np.e)
    with torch.no_grad():
        out = policy.act([torch.as_tensor(obs[0])], None)
    np.testing.assert_allclose(out.entropy.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(accelerate(policy, np.random.default_rng(0)).act(obs, None).entropy, expected, rtol=1e-6)


@pytest.mark.parametrize("function", ["activate", "activate_in_place", "activation_grad"])
def test_an_activation_without_numpy_arithmetic_is_an_error_not_the_identity(function):
    from palaestra.networks import numpy_layers

    z = np.ones((2, 3), np.float32)
    call = {"activate": lambda kind: numpy_layers.activate(numpy_layers.NUMPY_KERNELS, kind, z),
            "activate_in_place": lambda kind: numpy_layers.activate_in_place(numpy_layers.NUMPY_KERNELS, kind, z),
            "activation_grad": lambda kind: numpy_layers.activation_grad(numpy_layers.NUMPY_KERNELS, kind, z, z, z,
                                                                         None)}[function]
    result = call("")  # no activation: the values pass through
    assert np.array_equal(result[0] if isinstance(result, tuple) else result, z)
    with pytest.raises(ValueError, match="activation 'elu' has no numpy implementation"):
        call("elu")
