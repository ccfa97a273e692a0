"""The gail reward signal: a discriminator that tells the expert's transitions from the policy's,
VAIL's bottleneck, its stats and checkpoints, the checks of its demonstrations, and ML-Agents'
test matrix rows for GAIL with behavioral cloning on the 1-D environments."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from palaestra.demos.reader import DemoError
from palaestra.demos.record import record
from palaestra.envs.sources import make_env
from palaestra.rewards import make_signals
from palaestra.envs.base import ActionSpec, BehaviorSpec
from palaestra.rewards.base import SignalContext
from palaestra.rewards.gail import (EPSILON, GRADIENT_PENALTY_WEIGHT, INITIAL_BETA, Discriminator, GAILSignal,
                                   discriminator_loss)
from palaestra.rewards.numpy_losses import discriminator_gradients
from palaestra.settings import GAILSettings
from tests.conftest import SHIPPED_CONFIG


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("demos")
    paths = {}
    for name in ("Simple1DDiscrete", "Simple1DContinuous"):
        env = make_env(name, seed=1)
        paths[name] = record(env, {"1D": "heuristic"}, episodes=60, out=out / name, seed=1)[0].path
        env.close()
    return paths


def _spec(env_name: str):
    env = make_env(env_name, seed=0)
    spec = env.behavior_specs["1D"]
    env.close()
    return spec


def _signal(demo: Path, env_name: str, normalize: bool = False, **settings) -> GAILSignal:
    torch.manual_seed(0)
    settings = GAILSettings(**{"demo_path": str(demo), "strength": 1.0, "encoding_size": 16, "learning_rate": 3e-3}
                            | settings)
    return make_signals(_spec(env_name), {"gail": settings}, torch.device("cpu"), SignalContext(normalize=normalize))[0]


def _wrong_way(signal: GAILSignal, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Transitions of a policy that always moves away from the goal: the opposite of the expert's."""
    rows = rng.integers(0, signal.expert_rows, n)
    batch = {k: v[rows].copy() for k, v in signal.expert.items()}
    if batch["discrete"].shape[1]:
        batch["discrete"] = 1 - batch["discrete"]
    batch["continuous"] = -batch["continuous"]
    return batch


@pytest.mark.parametrize("env_name", ["Simple1DDiscrete", "Simple1DContinuous"])
@pytest.mark.parametrize("use_vail", [False, True])
def test_the_discriminator_learns_to_tell_the_expert_from_the_policy(demos, env_name, use_vail):
    signal = _signal(demos[env_name], env_name, use_actions=True, use_vail=use_vail)
    rng = np.random.default_rng(1)
    assert not signal.rewards_for_batch(_wrong_way(signal, 8, rng)).any()  # 0 until the first update
    for _ in range(150):
        stats = signal.update(_wrong_way(signal, 64, rng))
    expected = {"Losses/GAIL Loss", "Policy/GAIL Grad Mag Loss", "Policy/GAIL Expert Estimate",
                "Policy/GAIL Policy Estimate"}
    assert expected | ({"Policy/GAIL Beta", "Losses/GAIL KL Loss"} if use_vail else set()) == set(stats)
    assert stats["Policy/GAIL Expert Estimate"] > 0.55 > 0.45 > stats["Policy/GAIL Policy Estimate"]
    expert_like = {k: v[:64] for k, v in signal.expert.items()}
    assert signal.rewards_for_batch(expert_like).mean() > 1.5 * signal.rewards_for_batch(_wrong_way(signal, 64, rng)).mean()
    if use_vail:
        assert stats["Policy/GAIL Beta"] > INITIAL_BETA == 0.0  # the code's KL started above its target


def test_the_discriminator_is_ml_agents_two_layers_of_128_unless_hidden_units_says(demos):
    # (encoding_size sizes only camera encodings, as in ML-Agents)
    widths = [m.out_features for m in _signal(demos["Simple1DDiscrete"], "Simple1DDiscrete").model.body
              if isinstance(m, torch.nn.Linear)]
    assert widths == [128, 128]
    narrow = _signal(demos["Simple1DDiscrete"], "Simple1DDiscrete", hidden_units=32, use_vail=True).model
    assert [m.out_features for m in narrow.body if isinstance(m, torch.nn.Linear)] == [32, 32]
    assert narrow.z_mean.in_features == 32


def test_without_actions_the_discriminator_reads_observations_only(demos):
    signal = _signal(demos["Simple1DDiscrete"], "Simple1DDiscrete")
    assert signal.model.body[0].in_features == 1  # the goal's side; no action, no done flag
    with_actions = _signal(demos["Simple1DDiscrete"], "Simple1DDiscrete", use_actions=True)
    assert with_actions.model.body[0].in_features == 1 + 2 + 1


def test_state_round_trips_with_vail_s_beta(demos):
    trained = _signal(demos["Simple1DContinuous"], "Simple1DContinuous", use_actions=True, use_vail=True)
    rng = np.random.default_rng(2)
    for _ in range(5):
        trained.update(_wrong_way(trained, 32, rng))
    fresh = _signal(demos["Simple1DContinuous"], "Simple1DContinuous", use_actions=True, use_vail=True)
    assert fresh.state_dict().keys() == trained.state_dict().keys()
    fresh.load_state_dict(trained.state_dict())
    assert float(fresh.beta) == float(trained.beta) != INITIAL_BETA and fresh.optimizer.steps == 5
    batch = _wrong_way(trained, 16, rng)
    np.testing.assert_array_equal(fresh.rewards_for_batch(batch), trained.rewards_for_batch(batch))


@pytest.mark.parametrize("use_actions", [False, True])
def test_the_numpy_step_has_autograd_s_loss_and_gradients(use_actions):
    # rewards/numpy_losses.py writes out the gradient penalty's second-order backward pass:
    # the same numbers as autograd's double backward, for a network with both kinds of action
    torch.manual_seed(3)
    spec = BehaviorSpec(observation_shapes=((4,), (2,)), action_spec=ActionSpec(2, (3, 2)))
    model = Discriminator(spec, GAILSettings(demo_path="unused", use_actions=use_actions, encoding_size=16))
    rng = np.random.default_rng(3)
    width = model.body[0].in_features
    expert, policy = (rng.normal(0.0, scale, (32, width)).astype(np.float32) for scale in (2.0, 1.0))
    alpha = rng.random((32, width), dtype=np.float32)  # one weight per input value, as ML-Agents
    hidden, out = model.layers()
    gradients = [np.full(tuple(p.shape), np.nan, np.float32) for p in model.parameters()]  # every entry written
    stats = discriminator_gradients(hidden, out, expert, policy, alpha, GRADIENT_PENALTY_WEIGHT, gradients)

    # the definition that trains (GAILSignal's torch path): the whole loss, the penalty included
    e, p, a = (torch.as_tensor(v) for v in (expert, policy, alpha))
    loss, reference, _ = discriminator_loss(model, torch.ones(()), (e, {}), (p, {}), (a, {}))
    loss.backward()
    with torch.no_grad():  # the stat is ML-Agents' whole loss, not the cross-entropy alone
        cross_entropy = -(torch.log(model(e)[0] + EPSILON) + torch.log(1.0 - model(p)[0] + EPSILON)).mean()
    assert reference["Losses/GAIL Loss"] > float(cross_entropy) + 0.01
    for key in reference:
        assert stats[key] == pytest.approx(reference[key], rel=1e-5), key
    for (name, parameter), numpy_gradient in zip(model.named_parameters(), gradients, strict=True):
        np.testing.assert_allclose(numpy_gradient.reshape(parameter.shape), parameter.grad.numpy(), rtol=1e-4,
                                   atol=1e-6, err_msg=name)


@pytest.mark.parametrize("use_actions", [False, True])
def test_the_numpy_rewards_are_the_torch_discriminator_s(demos, use_actions):
    signal = _signal(demos["Simple1DContinuous"], "Simple1DContinuous", use_actions=use_actions)
    assert signal.trains_in_numpy
    rng = np.random.default_rng(4)
    for _ in range(3):
        signal.update(_wrong_way(signal, 32, rng))
    batch = _wrong_way(signal, 24, rng)
    ours = signal.rewards_for_batch(batch)
    signal.trains_in_numpy = False  # the torch module's forward pass
    reference = signal.rewards_for_batch(batch)
    assert ours.dtype == np.float32 and ours.shape == (24,) and ours.any()
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-7)


def test_the_numpy_path_s_optimizer_state_round_trips(demos):
    trained = _signal(demos["Simple1DDiscrete"], "Simple1DDiscrete", use_actions=True)
    assert trained.trains_in_numpy
    rng = np.random.default_rng(4)
    for _ in range(5):
        trained.update(_wrong_way(trained, 32, rng))
    fresh = _signal(demos["Simple1DDiscrete"], "Simple1DDiscrete", use_actions=True)
    fresh.load_state_dict(trained.state_dict())
    assert fresh.optimizer.steps == trained.optimizer.steps == 5
    fresh.rng, trained.rng = np.random.default_rng(5), np.random.default_rng(5)
    batch = _wrong_way(trained, 32, rng)
    fresh.update(batch), trained.update(batch)  # the same step from the same moments
    for a, b in zip(fresh.model.parameters(), trained.model.parameters()):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


@pytest.mark.parametrize("use_vail", [False, True])
def test_under_normalize_the_discriminator_reads_normalized_observations(demos, use_vail):
    # ML-Agents' GAIL reads the vectors through the policy's normalizer when the trainer
    # normalizes; here a normalizer of its own learns the policy's rows (and travels in checkpoints)
    signal = _signal(demos["Simple1DContinuous"], "Simple1DContinuous", normalize=True, use_actions=True,
                     use_vail=use_vail)
    plain = _signal(demos["Simple1DContinuous"], "Simple1DContinuous", use_actions=True)
    assert plain.model.normalizer is None and signal.model.normalizer is not None
    rng = np.random.default_rng(6)
    batches = [_wrong_way(signal, 32, rng) for _ in range(4)]
    for batch in batches:
        batch["obs_0"] = batch["obs_0"] * 10.0 + 3.0  # far from N(0, 1): normalizing matters
        signal.update(batch)
    seen = np.concatenate([b["obs_0"] for b in batches])
    np.testing.assert_allclose(signal.model.normalizer.mean.numpy(), seen.mean(0), rtol=1e-5)
    np.testing.assert_allclose(signal.model.normalizer.count.numpy(), len(seen))
    inputs = signal.model.input_array(batches[0])
    expected = np.clip((batches[0]["obs_0"] - seen.mean(0)) / np.sqrt(seen.var(0) + 1e-8), -5.0, 5.0)
    np.testing.assert_allclose(inputs[:, :1], expected, rtol=1e-4, atol=1e-5)
    restored = _signal(demos["Simple1DContinuous"], "Simple1DContinuous", normalize=True, use_actions=True,
                       use_vail=use_vail)
    restored.load_state_dict(signal.state_dict())
    np.testing.assert_array_equal(restored.model.input_array(batches[0]), inputs)


def test_vail_s_bottleneck_is_ml_agents_graph(demos):
    # ML-Agents: sigma is a learned scale that starts at 1; the KL is
    # -sum(1 + log(sigma^2 + 1e-7) - mu_e^2 / 2 - mu_p^2 / 2 - sigma^2), averaged over the rows
    # (the expert's and the policy's codes' divergences added); beta starts at 0 (later releases)
    signal = _signal(demos["Simple1DContinuous"], "Simple1DContinuous", use_actions=True, use_vail=True)
    assert float(signal.beta) == INITIAL_BETA == 0.0
    model = signal.model
    assert torch.equal(model.z_sigma.detach(), torch.ones(128))
    assert float(model.z_mean.weight.detach().std()) < 0.02  # a hundredth of the usual variance: codes start near 0
    with torch.no_grad():
        model.z_sigma.uniform_(0.5, 1.5)
    z_expert, z_policy = torch.randn(16, 128), torch.randn(16, 128)
    var = model.z_sigma.detach() ** 2
    theirs = -(1.0 + torch.log(var + EPSILON) - 0.5 * z_expert**2 - 0.5 * z_policy**2 - var).sum(1).mean()
    ours = model.kl(z_expert) + model.kl(z_policy)
    assert float(ours.detach()) == pytest.approx(float(theirs), rel=1e-5)


def test_demonstrations_of_another_behavior_are_refused_with_the_setting_named(demos):
    with pytest.raises(DemoError, match=r"(?s)reward_signals\.gail\.demo_path .*continuous"):
        _signal(demos["Simple1DContinuous"], "Simple1DDiscrete")
    with pytest.raises(DemoError, match=r"reward_signals\.gail\.demo_path .*missing\.demo"):
        _signal(Path("missing.demo"), "Simple1DDiscrete")
    # built for a behavior, the message names it (not a placeholder)
    from palaestra.algorithms import make_algorithm
    from palaestra.settings import ExtrinsicSettings, TrainerSettings

    settings = TrainerSettings(trainer="ppo", reward_signals={"extrinsic": ExtrinsicSettings(), "gail": GAILSettings(
        demo_path=str(demos["Simple1DContinuous"]))})
    with pytest.raises(DemoError, match=r"behavior 'Mover' .*continuous|continuous.*behavior 'Mover'"):
        make_algorithm(_spec("Simple1DDiscrete"), settings, torch.device("cpu"), np.random.default_rng(0), "Mover")


@pytest.mark.training
@pytest.mark.parametrize("trainer", ["ppo", "sac"])
@pytest.mark.parametrize("env_name", ["Simple1DDiscrete", "Simple1DContinuous"])
def test_gail_with_behavioral_cloning_learns_the_1d_task_without_its_reward(run_cli, workdir, demos, episode_returns,
                                                                           trainer, env_name):
    # ML-Agents' test matrix (test_simple_rl's GAIL rows): its 1-D test configs (the shipped
    # sections) with GAIL and BC only, no extrinsic reward; the environment's own return over
    # the last 5 episodes above 0.9. As there, BC anneals over more steps than the run takes
    # (ML-Agents: 1000 of 500): GAIL's reward, -log(1 - D) > 0 at every step, alone pays for
    # long episodes. SAC clones one mini-batch-sized sample per gradient step (3 passes over
    # every demonstration at each step, the default, cost 20x the time). Seeds 1-4 (PPO 1-3)
    # passed with every return at 1.01-1.02 (docs/benchmarks.md).
    shipped = {"ppo": "trainer_config.yaml", "sac": "sac_trainer_config.yaml"}[trainer]
    section = yaml.safe_load((SHIPPED_CONFIG.parent / shipped).read_text())["1D"] | {"trainer": trainer}
    section["reward_signals"] = {"gail": {"strength": 1.0, "gamma": 0.99, "encoding_size": 32,
                                          "demo_path": str(demos[env_name])}}
    section["behavioral_cloning"] = {"demo_path": str(demos[env_name]), "strength": 1.0,
                                     "steps": 2 * section["max_steps"]}
    if trainer == "sac":
        section["behavioral_cloning"] |= {"samples_per_update": 64, "num_epoch": 1}
    (workdir / "c.yaml").write_text(yaml.safe_dump({"1D": section}))
    result = run_cli("c.yaml", f"--env={env_name}", "--run-id=gail", "--seed=1")
    assert result.code == 0, result.log
    assert np.mean(episode_returns[-5:]) > 0.9, episode_returns[-20:]


# ML-Agents' visual 1-D environment: one 20x20x3 image showing the goal, no vector
VISUAL_1D = ["num_visual=1", "num_vector=0", "step_size=0.2"]


@pytest.fixture(scope="module")
def visual_demos(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("visual-demos")
    paths = {}
    for name in ("Simple1DDiscrete", "Simple1DContinuous"):
        env = make_env(name, seed=1, env_args=VISUAL_1D)
        paths[name] = record(env, {"1D": "heuristic"}, episodes=60, out=out / name, seed=1)[0].path
        env.close()
    return paths


@pytest.mark.training
@pytest.mark.parametrize("trainer", ["ppo", "sac"])
@pytest.mark.parametrize("env_name", ["Simple1DDiscrete", "Simple1DContinuous"])
def test_gail_with_behavioral_cloning_learns_the_visual_1d_task(run_cli, workdir, visual_demos, episode_returns,
                                                                trainer, env_name):
    # ML-Agents' test matrix, GAIL visual rows: the GAIL rows above on the 1-D environment seen
    # through one image (no vector), learning rate 3e-4, PPO max_steps 1000, SAC max_steps 500 and
    # batch 16; the discriminator encodes the images with vis_encode_type simple.
    shipped = {"ppo": "trainer_config.yaml", "sac": "sac_trainer_config.yaml"}[trainer]
    section = yaml.safe_load((SHIPPED_CONFIG.parent / shipped).read_text())["1D"] | {"trainer": trainer}
    section |= {"learning_rate": 3e-4, "max_steps": 1000} if trainer == "ppo" else \
        {"learning_rate": 3e-4, "max_steps": 500, "batch_size": 16}
    section["reward_signals"] = {"gail": {"strength": 1.0, "gamma": 0.99, "encoding_size": 32,
                                          "demo_path": str(visual_demos[env_name])}}
    section["behavioral_cloning"] = {"demo_path": str(visual_demos[env_name]), "strength": 1.0,
                                     "steps": 2 * section["max_steps"]}
    if trainer == "sac":
        section["behavioral_cloning"] |= {"samples_per_update": 64, "num_epoch": 1}
    (workdir / "c.yaml").write_text(yaml.safe_dump({"1D": section}))
    result = run_cli("c.yaml", f"--env={env_name}", "--run-id=gail", "--seed=1", "--env-args", *VISUAL_1D)
    assert result.code == 0, result.log
    assert np.mean(episode_returns[-5:]) > 0.9, episode_returns[-20:]


@pytest.mark.training
def test_gail_alone_learns_cartpole_from_a_scripted_expert(run_cli, workdir):
    # GAIL is the only reward (no extrinsic, no cloning), as in ML-Agents' gail_config.yaml for
    # CrawlerStatic and PushBlock: the policy never sees CartPole's reward. The expert is the
    # scripted controller in palaestra/demos/experts.py (500 in every episode), 20 episodes. PPO
    # is rl-zoo's CartPole section (config/rl_zoo_cartpole.yaml) with lambda 0.95 and a constant
    # learning rate, as bench/gail_imitation.py runs it. Seeds 0-7 swept (docs/benchmarks.md).
    from palaestra.evaluation import evaluate_onnx

    env = make_env("CartPole-v1", seed=1)
    demo = record(env, {"CartPole-v1": "palaestra.demos.experts:cartpole"}, episodes=20, out=workdir / "demos",
                  seed=1)[0]
    env.close()
    assert demo.meta.mean_reward == 500.0
    section = yaml.safe_load((SHIPPED_CONFIG.parent / "rl_zoo_cartpole.yaml").read_text())["CartPole-v1"]
    section |= {"lambd": 0.95, "learning_rate_schedule": "constant",
                "reward_signals": {"gail": {"strength": 1.0, "gamma": 0.98, "use_actions": True,
                                            "demo_path": str(demo.path)}}}
    (workdir / "c.yaml").write_text(yaml.safe_dump({"CartPole-v1": section}))
    result = run_cli("c.yaml", "--env=CartPole-v1", "--num-areas=8", "--run-id=gail", "--seed=1")
    assert result.code == 0, result.log
    returns = evaluate_onnx(make_env("CartPole-v1", seed=3, num_areas=2), workdir / "models/gail/CartPole-v1.onnx",
                            episodes=20)
    assert len(returns) == 20 and np.mean(returns) >= 475.0, returns


@pytest.mark.parametrize("trainer", ["ppo", "offline_bc"])
def test_inference_runs_without_the_demonstrations_it_was_trained_with(run_cli, workdir, demos, trainer):
    # --inference learns nothing, so the demonstrations (GAIL's, behavioral cloning's,
    # offline_bc's) are not read: a trained run folder copied without them still plays, GAIL's
    # discriminator loading from the checkpoint; a run that learns still refuses a missing file
    demo = workdir / "expert.demo"
    demo.write_bytes(demos["Simple1DDiscrete"].read_bytes())
    section = {"trainer": trainer, "max_steps": 300, "summary_freq": 100, "batch_size": 16, "buffer_size": 64,
               "hidden_units": 16, "num_layers": 1}
    if trainer == "ppo":
        section["reward_signals"] = {"gail": {"strength": 1.0, "gamma": 0.99, "encoding_size": 16,
                                              "demo_path": str(demo)}}
        section["behavioral_cloning"] = {"demo_path": str(demo), "strength": 1.0, "steps": 300}
    else:
        section |= {"demo_path": str(demo), "batches_per_epoch": 2}
    (workdir / "c.yaml").write_text(yaml.safe_dump({"1D": section}))
    assert run_cli("c.yaml", "--env=Simple1DDiscrete", "--run-id=r", "--seed=1").code == 0
    demo.unlink()
    result = run_cli("c.yaml", "--env=Simple1DDiscrete", "--run-id=r", "--inference")
    assert result.code == 0, result.log
    assert "Loaded 1D" in result.log and "Not Training." in result.log
    refused = run_cli("c.yaml", "--env=Simple1DDiscrete", "--run-id=r", "--resume")
    assert refused.code != 0 and "expert.demo" in refused.log and "no such demonstration file" in refused.log


def test_a_resume_with_vail_turned_off_names_the_signal_s_models_and_the_setting(run_cli, workdir, demos):
    def config(use_vail: bool) -> str:
        section = {"trainer": "ppo", "max_steps": 200, "summary_freq": 100, "batch_size": 16, "buffer_size": 64,
                   "hidden_units": 16, "num_layers": 1,
                   "reward_signals": {"gail": {"strength": 1.0, "gamma": 0.99, "encoding_size": 16, "use_vail": use_vail,
                                               "demo_path": str(demos["Simple1DDiscrete"])}}}
        (workdir / "c.yaml").write_text(yaml.safe_dump({"1D": section}))
        return "c.yaml"

    assert run_cli(config(True), "--env=Simple1DDiscrete", "--run-id=v", "--seed=1").code == 0
    result = run_cli(config(False), "--env=Simple1DDiscrete", "--run-id=v", "--resume")
    assert result.code == 1 and "Traceback" not in result.log
    assert ("was trained with gail.use_vail: true, but behavior '1D' is set to gail.use_vail: false; a checkpoint "
            "loads only into the network it was trained with") in result.log, result.log
    # a checkpoint written before the signals' settings were recorded: its models tell, and the
    # message names the settings it may be
    from palaestra.checkpoints import CheckpointManager

    (path,) = (workdir / "models/v/1D").glob("checkpoint-*.pt")
    state = CheckpointManager.load(path)
    state["network"] = {k: v for k, v in state["network"].items() if "." not in k}
    CheckpointManager.save_file(path, state)
    result = run_cli(config(False), "--env=Simple1DDiscrete", "--run-id=v", "--resume")
    assert result.code == 1 and "Traceback" not in result.log
    assert "its reward signals' models has 'gail.model." not in result.log
    assert re.search(r"its reward signals' models have 'gail\.model\.\w.*, which this behavior's reward signals' models "
                     r"do not have, although it records the network settings behavior '1D' has: either the signals' "
                     r"own settings changed \(.*GAIL's hidden_units, use_actions, use_vail.*set them back; or another "
                     r"version of Palaestra", result.log), result.log


@pytest.mark.parametrize("use_terminal_states", [False, True])
def test_use_terminal_states_ends_gail_s_return_at_a_true_end(demos, use_terminal_states):
    # ML-Agents' GAIL bootstraps its value through every episode end; with use_terminal_states
    # (Palaestra's key) a true end closes the return, as SB3-based GAIL does, and a max-step
    # interruption still bootstraps
    from palaestra.algorithms import make_algorithm
    from palaestra.envs.base import DecisionSteps, TerminalSteps
    from palaestra.rollout.collector import Collector
    from palaestra.settings import ExtrinsicSettings, TrainerSettings

    spec = _spec("Simple1DDiscrete")
    gail = GAILSettings(demo_path=str(demos["Simple1DDiscrete"]), strength=1.0, gamma=0.5,
                        use_terminal_states=use_terminal_states)
    signals = {"extrinsic": ExtrinsicSettings(gamma=0.5), "gail": gail}
    settings = TrainerSettings(trainer="ppo", hidden_units=8, num_layers=1, lambd=1.0, time_horizon=10,
                               reward_signals=signals)
    ppo = make_algorithm(spec, settings, torch.device("cpu"), np.random.default_rng(0), "1D")
    assert [s.uses_terminal for s in ppo.signals] == [True, use_terminal_states]
    # where the model trains in a process of its own, and under SAC, the same rule
    from palaestra.rewards.background import BackgroundSignal
    assert BackgroundSignal(ppo.signals[1]).uses_terminal == use_terminal_states  # (no process before an update)
    sac = make_algorithm(spec, TrainerSettings(trainer="sac", hidden_units=8, num_layers=1, reward_signals=signals),
                         torch.device("cpu"), np.random.default_rng(0), "1D")
    assert sac._uses_terminal.tolist() == [1.0, float(use_terminal_states)]
    collector = Collector(spec, time_horizon=10)
    values = np.array([[3.0, 7.0]], np.float32)  # every state's value estimate, per signal

    def policy(observations, allowed):
        from palaestra.rollout.segments import ActResult
        n = len(observations[0])
        return ActResult(continuous=np.zeros((n, 0), np.float32), discrete=np.zeros((n, 1), np.int64),
                         log_prob=np.zeros(n, np.float32), entropy=np.ones(n, np.float32))

    obs = [np.zeros((2, *spec.observation_shapes[0]), np.float32)]
    none = TerminalSteps([o[:0] for o in obs], np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros(0, bool))
    collector.step(DecisionSteps(obs, np.zeros(2, np.float32), np.arange(2)), none, policy)
    # agent 0's episode truly ends, agent 1's is interrupted at its step limit
    ended = TerminalSteps(obs, np.zeros(2, np.float32), np.arange(2), np.array([False, True]))
    nobody = DecisionSteps([o[:0] for o in obs], np.zeros(0, np.float32), np.zeros(0, np.int64))
    _, seg = collector.step(nobody, ended, policy)
    # (process values the rows with the critic, as ML-Agents does: the same constants there)
    ppo.policy.value = lambda observations, memory=None: torch.as_tensor(values).repeat(len(observations[0]), 1)
    ppo.process(seg, np.zeros((2, 2), np.float32))  # no reward from either signal on these rows
    returns = ppo.buffer.view()["returns"]  # [rows, signals], the rows in agent order
    # extrinsic: nothing after the true end, the discounted value after the interruption
    assert returns[:, 0].tolist() == [0.0, 0.5 * 3.0]
    assert returns[:, 1].tolist() == ([0.0, 0.5 * 7.0] if use_terminal_states else [0.5 * 7.0, 0.5 * 7.0])
