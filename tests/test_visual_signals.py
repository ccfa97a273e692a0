"""The reward signals with networks of their own (curiosity, RND, GAIL) on behaviors with image
observations: each encodes the images with the trainer's vis_encode_type, trains its image
encoders with the rest of its model on autograd, learns on a fixed batch, round-trips through
checkpoints, reads images from demonstrations (GAIL), and trains inside PPO and SAC; behaviors
with vector observations only keep the numpy CPU path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from palaestra.algorithms.ppo import PPO
from palaestra.algorithms.sac import SAC
from palaestra.demos.writer import DemoWriter
from palaestra.envs.base import BehaviorSpec
from palaestra.rewards import curiosity, gail, load_signals_state, make_signals, rnd, signals_state
from palaestra.rewards.base import SignalContext
from palaestra.rewards.learned import vector_input
from palaestra.settings import CuriositySettings, GAILSettings, RNDSettings
from tests.test_visual import IMAGE, _observations, _settings, _spec, _trained

KINDS = ["curiosity", "rnd", "gail"]


def _fixed_batch_loss(signal, batch: dict[str, np.ndarray]) -> float:
    """The signal's loss on ``batch`` with its current weights (GAIL: the cross-entropy against
    the first 32 demonstration rows, without the penalty)."""
    with torch.no_grad():
        if signal.name == "curiosity":
            inputs = signal._inputs(batch)
            return float(curiosity.FORWARD_WEIGHT * signal.model.forward_error(*inputs).mean()
                         + curiosity.INVERSE_WEIGHT * signal.model.inverse_loss(*inputs).mean())
        if signal.name == "rnd":
            reached = vector_input(batch, "next_obs", signal.device)
            return float(signal.model.error(reached, signal._images(batch, "next_obs")).mean())
        expert = {k: v[:32] for k, v in signal.expert.items()}
        d_expert, _ = signal.model(*signal.model.inputs(expert, signal.device))
        d_policy, _ = signal.model(*signal.model.inputs(batch, signal.device))
        return float(-(torch.log(d_expert + gail.EPSILON) + torch.log(1.0 - d_policy + gail.EPSILON)).mean())


# each signal's numpy CPU step (rewards/numpy_losses.py), as its module imports it
NUMPY_STEPS = {"curiosity": (curiosity, "curiosity_gradients"), "rnd": (rnd, "rnd_gradients"),
               "gail": (gail, "discriminator_gradients")}


def _expert_observations(spec: BehaviorSpec, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Bright images (the expert's camera sees something the policy's random ones do not)."""
    return [rng.integers(180, 256, size=(n, *s), dtype=np.uint8) if len(s) == 3 else
            rng.normal(size=(n, *s)).astype(np.float32) for s in spec.observation_shapes]


def _write_demo(path: Path, spec: BehaviorSpec, n: int = 64) -> Path:
    rng = np.random.default_rng(7)
    action = spec.action_spec
    done = np.zeros(n, bool)
    done[15::16] = True
    with DemoWriter(path, "B", spec) as writer:
        writer.write(_expert_observations(spec, rng, n), np.zeros(n, np.float32), done, np.zeros(n, np.int64),
                     continuous_actions=np.clip(rng.normal(size=(n, action.continuous_size)), -1, 1),
                     discrete_actions=np.stack([rng.integers(0, b, n) for b in action.discrete_branches], 1)
                     if action.is_discrete else None)
    return path


def _signal_settings(kind: str, demo: Path | None, **extra):
    if kind == "curiosity":
        return CuriositySettings(strength=0.1, encoding_size=16, learning_rate=1e-3, **extra)
    if kind == "rnd":
        return RNDSettings(strength=1.0, encoding_size=16, learning_rate=1e-3, **extra)
    return GAILSettings(demo_path=str(demo), strength=1.0, encoding_size=16, learning_rate=3e-3, **extra)


def _signal(kind: str, spec: BehaviorSpec, demo: Path | None, **extra):
    torch.manual_seed(0)
    return make_signals(spec, {kind: _signal_settings(kind, demo, **extra)}, torch.device("cpu"), SignalContext("simple"))[0]


def _batch(spec: BehaviorSpec, n: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    action = spec.action_spec
    batch = {f"obs_{i}": o for i, o in enumerate(_observations(spec, rng, n))}
    batch |= {f"next_obs_{i}": o for i, o in enumerate(_observations(spec, rng, n))}
    return batch | {"continuous": rng.normal(size=(n, action.continuous_size)).astype(np.float32),
                    "discrete": np.stack([rng.integers(0, b, n) for b in action.discrete_branches], 1)
                    if action.is_discrete else np.zeros((n, 0), np.int64),
                    "done": rng.random(n) < 0.1, "env_reward": np.zeros(n, np.float32)}


def _image_encoders(signal) -> dict[str, torch.Tensor]:
    """The signal's learned image encoders' weights (RND: the predictor's)."""
    return {k: v.clone() for k, v in signal.model.state_dict().items()
            if k.startswith(("images.", "predictor_images."))}


def _refuse_numpy(monkeypatch, kind: str) -> None:
    module, name = NUMPY_STEPS[kind]

    def refuse(*args, **kwargs):
        raise AssertionError(f"{name} (the numpy path) was taken with image observations")

    monkeypatch.setattr(module, name, refuse)


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> dict[bool, Path]:
    """Demonstrations with an image and a vector observation, continuous and discrete."""
    out = tmp_path_factory.mktemp("visual-demos")
    return {continuous: _write_demo(out / f"{'continuous' if continuous else 'discrete'}.demo", _spec(continuous))
            for continuous in (True, False)}


@pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "discrete"])
@pytest.mark.parametrize("kind", KINDS)
def test_signals_encode_images_learn_on_a_fixed_batch_and_round_trip(monkeypatch, demos, kind, continuous):
    _refuse_numpy(monkeypatch, kind)
    spec = _spec(continuous)
    signal = _signal(kind, spec, demos[continuous], **({"use_actions": True} if kind == "gail" else {}))
    initial = _image_encoders(signal)
    assert initial
    batch = _batch(spec, 32)
    batch["obs_1"] //= 3  # the policy's camera sees darker images than the expert's
    assert batch["obs_1"].dtype == np.uint8  # images reach the signal as stored
    rewards = signal.rewards_for_batch(batch)
    assert rewards.shape == (32,) and rewards.dtype == np.float32
    before = _fixed_batch_loss(signal, batch)
    # GAIL's gradient penalty (weight 10) holds the discriminator back for its first ~50 steps
    updates = 200 if kind == "gail" else 60
    for _ in range(updates):
        signal.update(batch)
    assert _fixed_batch_loss(signal, batch) < 0.8 * before
    for name, before in initial.items():  # every image encoder layer learned
        assert not torch.equal(before, signal.model.state_dict()[name]), name
    if kind == "rnd":  # the target's encoders stay as drawn
        target = {k: v for k, v in signal.model.state_dict().items() if k.startswith("target_images.")}
        assert target and all(not v.requires_grad for v in signal.model.target_images.parameters())
    rewards = signal.rewards_for_batch(batch)
    assert rewards.shape == (32,) and np.isfinite(rewards).all() and rewards.any()
    # a checkpoint restores the model, its image encoders and the optimizer
    state = signals_state([signal])
    assert any(".images." in k or "_images." in k for k in state)
    fresh = _signal(kind, spec, demos[continuous], **({"use_actions": True} if kind == "gail" else {}))
    torch.manual_seed(3)
    fresh.model.apply(lambda m: [p.data.normal_() for p in m.parameters(recurse=False)])
    load_signals_state([fresh], state)
    np.testing.assert_allclose(fresh.rewards_for_batch(batch), rewards, rtol=1e-5, atol=1e-6)
    assert fresh.optimizer.steps == signal.optimizer.steps == updates


def test_images_only_behaviors_and_vail(monkeypatch, tmp_path):
    spec = _spec(False, shapes=(IMAGE, IMAGE))
    demo = _write_demo(tmp_path / "images.demo", spec)
    batch = _batch(spec, 16)
    for kind, extra in [("curiosity", {}), ("rnd", {}), ("gail", {}), ("gail", {"use_vail": True})]:
        _refuse_numpy(monkeypatch, kind)
        signal = _signal(kind, spec, demo, **extra)
        images = signal.model.target_images if kind == "rnd" else signal.model.images
        assert images.image_indices == [0, 1]
        stats = signal.update(batch)
        assert np.isfinite(list(stats.values())).all()
        assert signal.rewards_for_batch(batch).shape == (16,)


def test_gail_reads_the_demonstrations_images_and_tells_them_apart(demos):
    spec = _spec(False)
    signal = _signal("gail", spec, demos[False])
    assert signal.expert["obs_1"].dtype == np.uint8 and signal.expert["obs_1"].shape[1:] == IMAGE
    assert signal.expert["obs_1"].min() >= 180  # the bright images written, back from their PNGs
    expert = {k: v[:32] for k, v in signal.expert.items()} | {"next_obs_0": signal.expert["obs_0"][:32]}
    policy = _batch(spec, 32)
    policy["obs_1"] //= 3  # darker than the expert's
    for _ in range(150):
        stats = signal.update(policy)
    assert stats["Policy/GAIL Expert Estimate"] > stats["Policy/GAIL Policy Estimate"]
    assert signal.rewards_for_batch(expert).mean() > signal.rewards_for_batch(policy).mean()


def test_the_gradient_penalty_reaches_the_image_encoders(demos):
    # the penalty's points lie between the images (as floats), so its gradient trains the encoders
    spec = _spec(True)
    signal = _signal("gail", spec, demos[True])
    expert = signal.model.inputs({k: v[:8] for k, v in signal.expert.items()}, signal.device)
    policy = signal.model.inputs(_batch(spec, 8), signal.device)
    penalty = gail.gradient_penalty(signal.model, expert, policy, signal._penalty_weights(expert))
    (gradient,) = torch.autograd.grad(penalty, signal.model.images.towers[0][0][1].weight)
    assert float(gradient.abs().sum()) > 0


@pytest.mark.parametrize("kind", KINDS)
def test_vector_behaviors_keep_the_numpy_path_and_their_weights(monkeypatch, tmp_path, kind):
    spec = _spec(True, shapes=((3,), (2,)))
    demo = _write_demo(tmp_path / "vectors.demo", spec) if kind == "gail" else None
    signal = _signal(kind, spec, demo)
    assert signal.trains_in_numpy
    assert signal.model.images is None if kind != "rnd" else signal.model.target_images is None
    keys = list(signal.model.state_dict())
    assert not any("images" in k for k in keys)
    first_layer = {"curiosity": "encoder.0.weight", "rnd": "predictor.0.weight", "gail": "body.0.weight"}[kind]
    assert signal.model.state_dict()[first_layer].shape[1] == 5  # the two vectors, nothing more
    module, name = NUMPY_STEPS[kind]
    calls = []
    numpy_step = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or numpy_step(*a, **k))
    signal.update(_batch(spec, 16))
    assert calls == [1]


def _signals_yaml(kind: str, demo: Path) -> str:
    line = {"curiosity": "curiosity: {strength: 0.1, gamma: 0.99, encoding_size: 16}",
            "rnd": "rnd: {strength: 0.1, gamma: 0.99, encoding_size: 16}",
            "gail": f"gail: {{strength: 0.1, gamma: 0.99, encoding_size: 16, demo_path: '{demo}'}}"}[kind]
    return f"  reward_signals:\n    extrinsic: {{strength: 1.0, gamma: 0.99}}\n    {line}\n"


@pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "discrete"])
@pytest.mark.parametrize("algorithm_class", [PPO, SAC], ids=["ppo", "sac"])
@pytest.mark.parametrize("kind", KINDS)
def test_signals_with_images_train_inside_ppo_and_sac(tmp_path, demos, kind, algorithm_class, continuous):
    trainer = "ppo" if algorithm_class is PPO else "sac"
    spec = _spec(continuous)
    settings = _settings(tmp_path, trainer, extra_lines=_signals_yaml(kind, demos[continuous]))
    torch.manual_seed(0)
    initial = algorithm_class(spec, settings, torch.device("cpu"), np.random.default_rng(0)).state_dict()["signals"]
    trained = _trained(algorithm_class, spec, settings)
    signal = trained.signals[1]
    assert signal.name == kind and signal.optimizer.steps > 0
    after = trained.state_dict()
    encoders = [k for k in initial if k.endswith("weight") and (".images." in k or ".predictor_images." in k)]
    assert encoders
    for name in encoders:
        assert not torch.equal(initial[name], after["signals"][name]), name
    # rewards of the right shape over PPO's segments and SAC's samples, and the checkpoint
    # restores them
    batch = _batch(spec, 12)
    fresh = algorithm_class(spec, settings, torch.device("cpu"), np.random.default_rng(1))
    fresh.load_state_dict(after)
    rewards = signal.rewards_for_batch(batch)
    assert rewards.shape == (12,)
    np.testing.assert_allclose(fresh.signals[1].rewards_for_batch(batch), rewards, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("algorithm_class", [PPO, SAC], ids=["ppo", "sac"])
@pytest.mark.parametrize("kind", KINDS)
def test_signals_with_images_train_beside_an_lstm_policy(tmp_path, demos, kind, algorithm_class):
    # the buffers then hold sequences with padding; the signals learn from the real rows
    trainer = "ppo" if algorithm_class is PPO else "sac"
    extra = _signals_yaml(kind, demos[False]) + "  use_recurrent: true\n  memory_size: 16\n  sequence_length: 4\n"
    trained = _trained(algorithm_class, _spec(False), _settings(tmp_path, trainer, extra_lines=extra))
    assert trained.memory_size and trained.signals[1].optimizer.steps > 0
    assert trained.signals[1].rewards_for_batch(_batch(_spec(False), 5)).shape == (5,)


def test_ppo_with_curiosity_pays_segments_with_images(tmp_path):
    # end to end through the Collector: the rewards over PPO's segments, row for row
    spec = _spec(False, shapes=(IMAGE,))
    settings = _settings(tmp_path, "ppo", extra_lines=_signals_yaml("curiosity", Path("unused")))
    algorithm = _trained(PPO, spec, settings, steps=60)
    signal = algorithm.signals[1]
    assert signal.optimizer.steps > 0 and not signal.trains_in_numpy
    segments = _segments(algorithm, spec)
    paid = signal.rewards(segments)
    assert paid.shape == segments.row_mask.shape
    assert (paid[segments.row_mask] > 0).all() and (paid[~segments.row_mask] == 0).all()
    # each real row's transition built by hand: its observation, its action, the next row's
    # observation, or after a segment's last row the observation that followed it
    F, H = segments.row_mask.shape
    rows = [(f, t) for f in range(F) for t in range(H) if segments.row_mask[f, t]]
    obs, following = segments.observations[0], segments.next_observations[0]
    by_hand = {"obs_0": np.stack([obs[f, t] for f, t in rows]),
               "next_obs_0": np.stack([obs[f, t + 1] if t + 1 < segments.length[f] else following[f] for f, t in rows]),
               "continuous": np.stack([segments.continuous[f, t] for f, t in rows]),
               "discrete": np.stack([segments.discrete[f, t] for f, t in rows])}
    assert any(t + 1 == segments.length[f] for f, t in rows) and any(t + 1 < segments.length[f] for f, t in rows)
    np.testing.assert_allclose(paid[segments.row_mask], signal.rewards_for_batch(by_hand), rtol=1e-5)


def _segments(algorithm, spec):
    """A fresh batch of finished segments from the Collector, with the trained algorithm acting."""
    from palaestra.envs.base import DecisionSteps, TerminalSteps
    from palaestra.rollout.collector import Collector

    collector = Collector(spec, 8)
    rng = np.random.default_rng(9)
    ids = np.arange(3)
    for _ in range(9):
        obs = _observations(spec, rng, 3)
        _, seg = collector.step(DecisionSteps(obs, np.zeros(3, np.float32), ids), TerminalSteps.empty(spec), algorithm.act)
        if seg is not None:
            return seg
    raise AssertionError("no segments")


def test_behavioral_cloning_under_sac_trains_the_actor_s_layers_and_leaves_its_encoder_the_critic_s(tmp_path,
                                                                                                     demos):
    # the actor reads the first critic's image encoding (docs/algorithms.md); cloning's optimizer
    # steps every policy parameter, so the actor's copy of the encoder must be made the critic's
    # again after it, or acting and the exported model read an encoder no critic has
    from palaestra.algorithms import make_algorithm
    from tests.test_visual import _run

    spec = _spec(True)
    bc = f"  behavioral_cloning:\n    demo_path: {demos[True]}\n    strength: 1.0\n    steps: 0\n"
    torch.manual_seed(0)
    sac = make_algorithm(spec, _settings(tmp_path, "sac", extra_lines=bc), torch.device("cpu"),
                         np.random.default_rng(0))
    before = {k: v.clone() for k, v in sac.policy.state_dict().items()}
    _run(sac, spec, 40)
    assert sac.update_count > 0 and sac.policy_updates[0].optimizer.steps > 0
    actor, critic = sac.policy.images.towers[0].state_dict(), sac.critic_images.towers[0].state_dict()
    assert actor.keys() == critic.keys() and all(torch.equal(actor[k], critic[k]) for k in actor)
    layers = [k for k in before if k.endswith("weight") and not k.startswith(("images.", "normalizer."))]
    assert layers and all(not torch.equal(before[k], sac.policy.state_dict()[k]) for k in layers), layers
