"""Image observations through the CNN encoders (networks/visual.py): each encoder's shapes, the
uint8 storage read as floats in [0, 1], PPO and SAC updates that train the encoders, their
checkpoints, the ONNX export with image inputs, and the settings checks that name what to do."""

from __future__ import annotations

import copy
import dataclasses
import threading

import numpy as np
import pytest
import torch

from palaestra.algorithms.ppo import PPO
from palaestra.algorithms.sac import SAC
from palaestra.capabilities import spec_problems
from palaestra.envs.base import ActionSpec, BehaviorSpec
from palaestra.networks.encoders import MIN_IMAGE_SIZE
from palaestra.networks.visual import image_encoder
from palaestra.settings import load_trainer_config
from tests.conftest import write_yaml
from tests.test_recurrent import _observations, _run

IMAGE = (20, 20, 3)


def _spec(continuous: bool, shapes=((2,), IMAGE)) -> BehaviorSpec:
    return BehaviorSpec(tuple(shapes), ActionSpec(continuous_size=2) if continuous else ActionSpec(discrete_branches=(3, 2)))


def _settings(tmp_path, trainer: str, encoder: str = "simple", extra_lines: str = ""):
    extra = ("  batch_size: 16\n  buffer_size: 64\n  num_epoch: 2\n" if trainer == "ppo" else
             "  batch_size: 16\n  buffer_size: 1000\n  buffer_init_steps: 0\n  steps_per_update: 8\n")
    text = (f"B:\n  trainer: {trainer}\n  hidden_units: 16\n  num_layers: 1\n  normalize: true\n  time_horizon: 8\n"
            f"  vis_encode_type: {encoder}\n{extra}{extra_lines}")
    return load_trainer_config(write_yaml(tmp_path / f"{trainer}.yaml", text)).for_behavior("B")


def _trained(algorithm_class, spec, settings, steps: int = 40):
    """The algorithm after acting on random observations for ``steps`` steps and learning."""
    torch.manual_seed(0)
    algorithm = algorithm_class(spec, settings, torch.device("cpu"), np.random.default_rng(0))
    _run(algorithm, spec, steps)
    assert algorithm.update_count > 0
    return algorithm


@pytest.mark.parametrize("kind", sorted(MIN_IMAGE_SIZE))
def test_each_encoder_takes_its_smallest_image_and_larger_ones(kind):
    for side in (MIN_IMAGE_SIZE[kind], 40, 84):
        encoder = image_encoder(kind, (side, side + 3, 3), 24)
        assert encoder(torch.zeros(2, side, side + 3, 3, dtype=torch.uint8)).shape == (2, 24)
    with pytest.raises(ValueError, match=f"smaller than the {MIN_IMAGE_SIZE[kind]}x"):
        image_encoder(kind, (MIN_IMAGE_SIZE[kind] - 1, 40, 3), 24)


@pytest.mark.parametrize("kind", sorted(MIN_IMAGE_SIZE))
def test_the_settings_checks_know_each_encoder_s_dense_layer_size_and_refuse_absurd_images(kind):
    # encoders.conv_features (torch-free, for the checks before anything is built) against the
    # encoders themselves; an image that would need gigabytes of weights is refused, not allocated
    from palaestra.networks.encoders import MAX_CONV_FEATURES, conv_features, image_problem

    for shape in [(MIN_IMAGE_SIZE[kind],) * 2 + (3,), (84, 84, 3), (37, 91, 1), (120, 64, 4)]:
        dense = next(m for m in image_encoder(kind, shape, 8) if isinstance(m, torch.nn.Linear))
        assert dense.in_features == conv_features(shape, kind), shape
        assert image_problem(shape, kind) is None
    problem = image_problem((5000, 5000, 3), kind, " (set in section 'B')")
    assert conv_features((5000, 5000, 3), kind) > MAX_CONV_FEATURES
    assert f"vis_encode_type {kind!r} (set in section 'B') would hand its dense layer" in problem
    assert "render smaller images" in problem


@pytest.mark.parametrize("kind, side, features", [
    ("simple", 36, 288), ("simple", 84, 2592), ("nature_cnn", 36, 64), ("nature_cnn", 84, 3136),
    ("resnet", 36, 288), ("resnet", 84, 2592), ("resnet", 15, 32)])
def test_each_encoder_hands_its_dense_layer_ml_agents_sizes(kind, side, features):
    # ML-Agents' encoders' flattened sizes (its resnet pools unpadded: a padded pool gave 800 at 36)
    from palaestra.networks.encoders import conv_features

    dense = next(m for m in image_encoder(kind, (side, side, 3), 8) if isinstance(m, torch.nn.Linear))
    assert dense.in_features == conv_features((side, side, 3), kind) == features


def test_uint8_images_read_as_floats_in_0_1():
    encoder = image_encoder("simple", (20, 20, 1), 8)
    stored = torch.randint(0, 256, (3, 20, 20, 1), dtype=torch.uint8)
    torch.testing.assert_close(encoder(stored), encoder(stored.float() / 255.0))


@pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "discrete"])
@pytest.mark.parametrize("algorithm_class", [PPO, SAC], ids=["ppo", "sac"])
def test_updates_train_the_image_encoders(tmp_path, algorithm_class, continuous):
    trainer = "ppo" if algorithm_class is PPO else "sac"
    spec = _spec(continuous)
    torch.manual_seed(0)
    before = algorithm_class(spec, _settings(tmp_path, trainer), torch.device("cpu"), np.random.default_rng(0))
    initial = {k: v.clone() for k, v in before.state_dict()["policy"].items()}
    trained = _trained(algorithm_class, spec, _settings(tmp_path, trainer))
    after = trained.state_dict()
    convolutions = [k for k in initial if k.startswith("images.") and k.endswith("weight")]
    assert convolutions
    for name in convolutions:  # every encoder of every tower learned
        assert not torch.equal(initial[name], after["policy"][name]), name
    if trainer == "sac":  # the critics' own encoders learn, and their targets follow
        assert "critic_images" in after and "target_images" in after
        assert not torch.equal(after["critic_images"]["towers.0.0.1.weight"],
                               after["target_images"]["towers.0.0.1.weight"])
    # the checkpoint restores the same networks
    fresh = algorithm_class(spec, _settings(tmp_path, trainer), torch.device("cpu"), np.random.default_rng(0))
    fresh.load_state_dict(after)
    obs = _observations(spec, np.random.default_rng(5), 3)
    mask = None if continuous else np.ones((3, 5), bool)
    np.testing.assert_allclose(fresh.act(obs, mask, deterministic=True).log_prob,
                               trained.act(obs, mask, deterministic=True).log_prob, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("recurrent", [False, True], ids=["feed-forward", "recurrent"])
@pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "discrete"])
def test_sac_s_actor_reads_the_first_critic_s_encoder_without_its_own_gradient(tmp_path, continuous, recurrent):
    # SAC-AE's rule (algorithms/sac.py): the encoders learn from the critics' loss only; the
    # actor's copy is the first critic's after every gradient step. Its own gradient stays zero.
    extra = "  use_recurrent: true\n  memory_size: 16\n  sequence_length: 4\n" if recurrent else ""
    spec = _spec(continuous)
    torch.manual_seed(0)
    sac = SAC(spec, _settings(tmp_path, "sac", extra_lines=extra), torch.device("cpu"), np.random.default_rng(0))
    initial = {k: v.clone() for k, v in sac.policy.images.state_dict().items()}
    assert all(torch.equal(v, sac.critic_images.towers[0].state_dict()[k.removeprefix("towers.0.")])
               for k, v in initial.items())
    _run(sac, spec, 40)
    assert sac.update_count > 0
    actor = sac.policy.images.state_dict()
    for name, value in sac.critic_images.towers[0].state_dict().items():
        assert torch.equal(actor[f"towers.0.{name}"], value), name
    assert not torch.equal(actor["towers.0.0.1.weight"], initial["towers.0.0.1.weight"])  # trained, by the critics
    # the second critic keeps an encoder of its own
    assert not torch.equal(sac.critic_images.towers[1][0][1].weight, sac.critic_images.towers[0][0][1].weight)
    sac.flat.zero_grad()
    sac._autograd_gradients(sac._prepare(sac._sample()))
    assert all(float(p.grad.abs().max()) == 0.0 for p in sac.policy.images.parameters())
    assert any(float(p.grad.abs().max()) > 0.0 for p in sac.critic_images.towers[0].parameters())


def test_images_only_behaviors_have_no_normalizer_and_train(tmp_path):
    algorithm = _trained(PPO, _spec(False, shapes=(IMAGE, IMAGE)), _settings(tmp_path, "ppo"))
    assert algorithm.policy.normalizer is None and algorithm.policy.images.size == 2 * 16


def test_settings_checks_name_the_encoder_and_the_image(tmp_path):
    small = _spec(False, shapes=((24, 24, 3),))
    problems = spec_problems(small, _settings(tmp_path, "ppo", "nature_cnn"))
    assert problems == ["image observation of shape (24, 24, 3) is smaller than the 36x36 that vis_encode_type "
                        "'nature_cnn' (set in section 'B') needs; use vis_encode_type 'simple' or 'resnet'"]
    assert spec_problems(small, _settings(tmp_path, "ppo", "simple")) == []
    # the reward signals with networks of their own encode images too (tests/test_visual_signals.py)
    signals = ("  reward_signals:\n    extrinsic: {strength: 1.0, gamma: 0.99}\n    curiosity: {strength: 0.01, gamma: 0.99}\n"
               "    rnd: {strength: 0.01, gamma: 0.99}\n    gail: {strength: 0.01, gamma: 0.99, demo_path: expert.demo}\n")
    for trainer in ("ppo", "sac"):
        assert spec_problems(small, _settings(tmp_path, trainer, "simple", signals)) == []


@pytest.mark.parametrize("kind", sorted(MIN_IMAGE_SIZE))
@pytest.mark.parametrize("algorithm_class", [PPO, SAC], ids=["ppo", "sac"])
def test_the_exported_model_takes_images_as_floats_and_matches_the_policy(tmp_path, algorithm_class, kind):
    import onnxruntime as ort

    from palaestra.evaluation import model_input
    from palaestra.export import export_policy

    trainer = "ppo" if algorithm_class is PPO else "sac"
    for continuous in (True, False):
        spec = _spec(continuous, shapes=((2,), (36, 40, 3), (36, 36, 1)))
        algorithm = algorithm_class(spec, _settings(tmp_path, trainer, kind), torch.device("cpu"),
                                    np.random.default_rng(0))
        obs = _observations(spec, np.random.default_rng(3), 5)
        mask = None if continuous else np.ones((5, 5), bool)
        expected = algorithm.act(obs, mask, deterministic=True)
        export_policy(algorithm.policy, tmp_path / "p.onnx")
        # the actor's encoders alone (PPO's critic has its own, which a model in Unity never needs)
        import onnx

        from palaestra.networks.encoders import CONVOLUTIONS, RESNET_CHANNELS
        from palaestra.networks.visual import RESNET_BLOCKS

        per_image = len(CONVOLUTIONS[kind]) if kind in CONVOLUTIONS else len(RESNET_CHANNELS) * (1 + 2 * RESNET_BLOCKS)
        graph = onnx.load(str(tmp_path / "p.onnx")).graph
        assert sum(node.op_type == "Conv" for node in graph.node) == 2 * per_image  # two images
        session = ort.InferenceSession(str(tmp_path / "p.onnx"))
        inputs = {i.name: i.shape for i in session.get_inputs()}
        # channels first, as ML-Agents' exporter writes image inputs and Unity's inference engine checks them
        assert inputs["obs_1"][1:] == [3, 36, 40] and inputs["obs_2"][1:] == [1, 36, 36]
        # Unity's inference engine feeds images as floats in [0, 1], channels first
        feeds = {f"obs_{i}": model_input(o, to_channels_first=o.ndim == 4) for i, o in enumerate(obs)}
        if not continuous:
            feeds["action_masks"] = np.ones((5, 5), np.float32)
        out = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        if continuous:
            np.testing.assert_allclose(out["deterministic_continuous_actions"], np.clip(expected.continuous, -1, 1),
                                       atol=1e-4)
        else:
            np.testing.assert_array_equal(out["deterministic_discrete_actions"], expected.discrete)


@pytest.mark.parametrize("algorithm_class", [PPO, SAC], ids=["ppo", "sac"])
def test_an_exported_images_only_model_reads_no_shape_at_run_time(tmp_path, algorithm_class):
    # no vector observation: no empty vector features whose shape the graph would compute
    import onnx

    from palaestra.export import export_policy

    spec = _spec(False, shapes=(IMAGE,))
    trainer = "ppo" if algorithm_class is PPO else "sac"
    algorithm = algorithm_class(spec, _settings(tmp_path, trainer), torch.device("cpu"), np.random.default_rng(0))
    export_policy(algorithm.policy, tmp_path / "p.onnx")
    ops = {node.op_type for node in onnx.load(str(tmp_path / "p.onnx")).graph.node}
    assert not ops & {"Shape", "ConstantOfShape", "Expand", "Where"}, ops


@pytest.fixture
def one_torch_thread():
    """torch on one thread, as limit_threads gives each image tower's thread on two cores (the
    same result on both threads needs the same intra-op split)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("algorithm_class", [PPO, SAC], ids=["ppo", "sac"])
def test_image_towers_on_two_threads_train_exactly_as_on_one(tmp_path, monkeypatch, one_torch_thread, algorithm_class):
    # machine.limit_threads chooses it where torch trains images on two or more threads: each
    # tower's encoders forward and backward on its own thread, the same arithmetic
    import palaestra.machine

    trainer = "ppo" if algorithm_class is PPO else "sac"
    spec = _spec(False, shapes=((2,), IMAGE, IMAGE))
    one = _trained(algorithm_class, spec, _settings(tmp_path, trainer))
    monkeypatch.setattr(palaestra.machine, "_second_tower_threads", 1)
    two = _trained(algorithm_class, spec, _settings(tmp_path, trainer))
    towers = [two.policy.images] if trainer == "ppo" else [two.critic_images, two.target_images]
    assert all(t.second is not None for t in towers)
    first, second = one.state_dict(), two.state_dict()
    for part in ("policy", "critic_images", "target_images") if trainer == "sac" else ("policy",):
        for name, value in first[part].items():
            assert torch.equal(value, second[part][name]), (part, name)
    assert not any(isinstance(v, threading.Thread) for v in vars(copy.deepcopy(towers[0])).values())


@pytest.mark.parametrize("hidden", [16, 256], ids=["numpy-step", "fused-kernel"])
def test_ppo_with_images_steps_adam_over_one_flat_buffer_as_torch_s_adam_does(tmp_path, monkeypatch, hidden):
    # on the CPU every PPO policy's Adam steps over one flat buffer (networks/numpy_adam.py), a
    # CNN's too: the weights torch's own per-tensor Adam reaches, to rounding (the fused kernel's
    # vector lanes fall differently over one buffer than over each tensor; numpy's step below
    # TORCH_KERNEL_FROM parameters is Adam's unfused form)
    from palaestra.algorithms import ppo as ppo_module
    from palaestra.networks.numpy_adam import TORCH_KERNEL_FROM

    spec = _spec(True)
    settings = dataclasses.replace(_settings(tmp_path, "ppo"), hidden_units=hidden)
    flat = _trained(PPO, spec, settings)
    assert flat._numpy_adam is not None and flat._accelerated is None
    assert (sum(p.numel() for p in flat.policy.parameters()) >= TORCH_KERNEL_FROM) is (hidden == 256)
    monkeypatch.setattr(ppo_module, "NumpyAdam", lambda params, optimizer: None)
    own = _trained(PPO, spec, settings)
    assert own._numpy_adam is None
    for name, value in flat.state_dict()["policy"].items():
        torch.testing.assert_close(value, own.state_dict()["policy"][name], rtol=1e-5, atol=1e-6, msg=name)
    # the optimizer's state checkpoints in torch's own format either way
    assert flat.state_dict()["optimizer"]["state"].keys() == own.state_dict()["optimizer"]["state"].keys()


def test_a_tower_the_loss_does_not_read_is_left_alone_on_two_threads():
    from palaestra.networks.visual import ImageFeatures

    features = ImageFeatures([(2,), IMAGE], "simple", 8, towers=2)
    features.on_two_threads()
    out = features(torch.zeros(4, 2), [torch.zeros(4, 2), torch.randint(0, 256, (4, *IMAGE), dtype=torch.uint8)])
    out[0].sum().backward()  # PPO's behavioral cloning reads the actor's tower only
    assert all(p.grad is not None for p in features.towers[0].parameters())
    assert all(p.grad is None or not p.grad.any() for p in features.towers[1].parameters())


def _two_ways(shapes=((2,), IMAGE, IMAGE)):
    from palaestra.networks.visual import ImageFeatures

    torch.manual_seed(0)
    one = ImageFeatures(list(shapes), "simple", 8, towers=2)
    two = copy.deepcopy(one)
    two.on_two_threads()
    rng = torch.Generator().manual_seed(1)
    obs = [torch.randn(6, 2, generator=rng)] + [torch.randint(0, 256, (6, *IMAGE), dtype=torch.uint8, generator=rng)
                                                for _ in shapes[1:]]
    return one, two, obs


def test_autograd_grad_sees_the_encoders_of_both_towers_on_two_threads(one_torch_thread):
    # algorithms/auxiliary.py takes auxiliary losses' gradients with torch.autograd.grad
    one, two, obs = _two_ways()
    found = [torch.autograd.grad(f(obs[0], obs).square().sum(), list(f.parameters())) for f in (one, two)]
    assert all(torch.equal(a, b) for a, b in zip(*found))
    assert all(p.grad is None for p in two.parameters())  # autograd.grad fills no .grad
    out = two(obs[0], obs)
    with pytest.raises(RuntimeError, match="already used by a backward pass"):
        out.sum().backward(retain_graph=True)
        out.sum().backward()


def test_without_gradients_the_second_thread_builds_no_graph_either(monkeypatch):
    # grad mode is per thread: acting (inference_mode) and value passes (no_grad) must not
    # record tower 1's history on the second thread
    from palaestra.networks.visual import ImageFeatures

    _, two, obs = _two_ways()
    modes = []
    original = ImageFeatures.encode_tower

    def recording(self, tower, images):
        out = original(self, tower, images)
        modes.append((tower, torch.is_grad_enabled(), torch.is_inference_mode_enabled(), out.requires_grad))
        return out

    monkeypatch.setattr(ImageFeatures, "encode_tower", recording)
    with torch.no_grad():
        two(obs[0], obs)
    with torch.inference_mode():
        two(obs[0], obs)
    assert sorted(modes) == [(0, False, False, False), (0, False, True, False),
                             (1, False, False, False), (1, False, True, False)]
