"""The seams later features plug into, proved with test-only pieces: a reward signal that owns a
small network trained through the algorithm's update loop, and an auxiliary loss whose gradient
joins the algorithm's own, in PPO and in SAC (and through the accelerated and autograd paths)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from palaestra.algorithms import ALGORITHMS, make_algorithm
from palaestra.capabilities import CAPABILITIES, acting_obstacle, settings_problems
from palaestra.envs.sources import make_env
from palaestra.rewards import SIGNAL_BUILDERS
from palaestra.rollout.collector import Collector
from palaestra.rollout.buffers import observations
from palaestra import settings
from palaestra.settings import ExtrinsicSettings, TrainerSettings


@dataclass(frozen=True)
class ProbeSettings:
    strength: float = 0.1
    gamma: float = 0.9


class ProbeSignal:
    """Learns to predict the environment's reward (+1) from (observation, next observation, action);
    its reward is a constant, so it only exercises the plumbing."""

    name = "probe"
    stat_name = "Probe"
    uses_terminal = False
    learns = True
    trains_in_numpy = False

    def __init__(self, settings: ProbeSettings, spec, device, vis_encode_type: str = "simple",
                 behavior: str = "the behavior") -> None:
        self.gamma, self.strength = settings.gamma, settings.strength
        obs = sum(int(np.prod(s)) for s in spec.observation_shapes)
        self.model = nn.Linear(2 * obs + spec.action_spec.continuous_size + len(spec.action_spec.discrete_branches),
                               1).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.05)
        self.initial = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.device = device
        self.batches: list[dict[str, np.ndarray]] = []
        self.losses: list[float] = []

    @torch.no_grad()
    def mean_loss(self, batches, state) -> float:
        """The model's mean loss over ``batches`` with the weights ``state``."""
        current = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(state)
        loss = float(np.mean([float(self._loss(b)) for b in batches]))
        self.model.load_state_dict(current)
        return loss

    def _loss(self, batch) -> torch.Tensor:
        x = np.concatenate([*observations(batch), *observations(batch, "next_obs"), batch["continuous"],
                            batch["discrete"].astype(np.float32)], axis=1)
        # the reward shifted by 1: far from a fresh model's outputs, so learning shows
        target = torch.as_tensor(batch["env_reward"] + 1.0, device=self.device, dtype=torch.float32)
        return (self.model(torch.as_tensor(x, device=self.device))[:, 0] - target).pow(2).mean()

    def rewards(self, segments):
        return np.full(segments.env_reward.shape, self.strength, np.float32)

    def rewards_for_batch(self, batch):
        return np.full(batch["env_reward"].shape, self.strength, np.float32)

    def update(self, batch):
        self.batches.append(batch)
        loss = self._loss(batch)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.losses.append(float(loss.detach()))
        return {"Losses/Probe Loss": self.losses[-1]}

    def state_dict(self):
        return {f"model.{k}": v for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state):
        self.model.load_state_dict({k[len("model."):]: v for k, v in state.items()})


class PushDown:
    """An auxiliary loss whose gradient on the policy's first parameter dwarfs the algorithm's:
    Adam then moves every entry of it down by about the learning rate per step."""

    name = "push_down"

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def loss(self, policy, batch, step):
        self.batch_sizes.append(len(batch["obs_0"]))
        loss = 1e6 * next(policy.parameters()).sum()
        return loss, {"Losses/Push Down": float(loss.detach())}


SETTINGS = {
    "ppo": dict(trainer="ppo", batch_size=32, buffer_size=128, time_horizon=16, num_epoch=2, hidden_units=16,
                num_layers=1, learning_rate=1e-3, learning_rate_schedule="constant"),
    "sac": dict(trainer="sac", batch_size=32, buffer_size=2000, time_horizon=16, hidden_units=16, num_layers=1,
                learning_rate=1e-3, learning_rate_schedule="constant", steps_per_update=4.0,
                reward_signal_steps_per_update=8.0),
}


def _train(algorithm, env_name: str, steps: int) -> list[dict]:
    """Drive the algorithm as the trainer does; return the stats of every update, each with the
    stats its experience's collection reported before it."""
    env = make_env(env_name, seed=3)
    behavior = next(iter(env.behavior_specs))
    collector = Collector(env.behavior_specs[behavior], algorithm.settings.time_horizon)
    env.reset()
    updates, collected = [], {}
    for _ in range(steps):
        decision, terminal = env.get_steps(behavior)
        actions, segments = collector.step(decision, terminal, algorithm.act)
        if segments is not None:
            collected |= algorithm.collect(segments)
        env.set_actions(behavior, actions)
        env.step()
        if algorithm.ready():
            updates.append(collected | algorithm.update())
            collected = {}
    env.close()
    return updates


def _algorithm(trainer: str, env_name: str, signals: bool, device: str = "cpu"):
    torch.manual_seed(0)
    env = make_env(env_name, seed=3)
    spec = next(iter(env.behavior_specs.values()))
    env.close()
    reward_signals = {"extrinsic": ExtrinsicSettings()} | ({"probe": ProbeSettings()} if signals else {})
    settings = TrainerSettings(**SETTINGS[trainer], reward_signals=reward_signals)
    return make_algorithm(spec, settings, torch.device(device), np.random.default_rng(0))


@pytest.fixture
def probe(monkeypatch):
    monkeypatch.setitem(SIGNAL_BUILDERS, ProbeSettings, ProbeSignal)


CASES = [("ppo", "Simple1DContinuous"), ("ppo", "Simple1DDiscrete"), ("sac", "Simple1DContinuous"),
         ("sac", "Simple1DDiscrete")]


@pytest.mark.parametrize("trainer,env_name", CASES)
def test_a_reward_signal_with_its_own_model_learns_in_the_update_loop(probe, trainer, env_name):
    algorithm = _algorithm(trainer, env_name, signals=True)
    probe_signal = algorithm.signals[1]
    updates = _train(algorithm, env_name, 600)
    assert updates and probe_signal.batches
    batch = probe_signal.batches[0]
    assert {"obs_0", "next_obs_0", "continuous", "discrete", "env_reward"} <= set(batch)
    assert all(isinstance(v, np.ndarray) for v in batch.values())
    assert len(batch["obs_0"]) == algorithm.settings.batch_size
    seen = probe_signal.batches
    trained = probe_signal.model.state_dict()
    assert probe_signal.mean_loss(seen, trained) < 0.5 * probe_signal.mean_loss(seen, probe_signal.initial)
    assert any("Losses/Probe Loss" in u for u in updates)
    assert "Policy/Probe Value Estimate" in updates[-1]  # its value head / Q output
    if trainer == "ppo":  # every mini-batch of every epoch
        rows = algorithm.settings.buffer_size
        assert len(probe_signal.batches) >= len(updates) * algorithm.settings.num_epoch * (rows // 32)
    else:  # its own cadence: one update per reward_signal_steps_per_update steps
        assert algorithm.signal_update_count == int(algorithm.step / 8.0)
        assert len(probe_signal.batches) == algorithm.signal_update_count
        assert algorithm.update_count == int(algorithm.step / 4.0)

    # its model travels in the algorithm's checkpoints
    state = algorithm.state_dict()
    fresh = _algorithm(trainer, env_name, signals=True)
    assert not torch.equal(fresh.signals[1].model.weight, probe_signal.model.weight)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.signals[1].model.weight, probe_signal.model.weight)
    if trainer == "sac":
        assert fresh.signal_update_count == algorithm.signal_update_count


@pytest.mark.parametrize("signal_epochs,expected", [(None, 2), (1, 1)])
def test_ppo_trains_signal_models_on_the_first_reward_signal_num_epoch_passes(probe, signal_epochs, expected):
    torch.manual_seed(0)
    env = make_env("Simple1DDiscrete", seed=3)
    spec = next(iter(env.behavior_specs.values()))
    env.close()
    settings = TrainerSettings(**SETTINGS["ppo"], reward_signal_num_epoch=signal_epochs,
                               reward_signals={"extrinsic": ExtrinsicSettings(), "probe": ProbeSettings()})
    algorithm = make_algorithm(spec, settings, torch.device("cpu"), np.random.default_rng(0))
    updates = _train(algorithm, "Simple1DDiscrete", 300)
    assert settings.num_epoch == 2 and updates
    per_epoch = settings.buffer_size // settings.batch_size
    assert len(algorithm.signals[1].batches) == len(updates) * expected * per_epoch


def test_checkpoints_without_signal_models_keep_their_layout():
    algorithm = _algorithm("ppo", "Simple1DContinuous", signals=False)
    assert set(algorithm.state_dict()) == {"policy", "optimizer", "step", "update_count"}


@pytest.mark.parametrize("trainer,env_name", CASES + [("ppo-autograd", "Simple1DDiscrete")])
def test_an_auxiliary_loss_adds_its_gradient_before_each_step(trainer, env_name, monkeypatch):
    algorithm = _algorithm(trainer.split("-")[0], env_name, signals=False)
    if trainer == "ppo-autograd":  # the torch path, as on a GPU
        monkeypatch.setattr(algorithm, "_accelerated", None)
        monkeypatch.setattr(algorithm, "_numpy_adam", None)
    push = PushDown()
    algorithm.auxiliary_losses.append(push)
    first = next(algorithm.policy.parameters())
    before = first.detach().clone()
    updates = _train(algorithm, env_name, 300)
    steps = len(push.batch_sizes)
    assert updates and steps
    assert set(push.batch_sizes) == {algorithm.settings.batch_size}
    moved = (first.detach() - before).numpy()
    lr = algorithm.settings.learning_rate
    # each Adam step moves each entry by about -lr when one gradient sign dominates
    assert np.all(moved < -0.8 * lr * steps) and np.all(moved > -1.2 * lr * steps), (moved, lr * steps)
    assert "Losses/Push Down" in updates[-1]


def test_the_algorithms_are_chosen_by_trainer_type_and_capabilities_say_what_each_can_do():
    assert set(ALGORITHMS) == set(CAPABILITIES) == set(settings.SETTINGS_BY_TRAINER) == set(settings.TRAINER_TYPES)
    ppo = TrainerSettings(trainer="ppo")
    sac = TrainerSettings(trainer="sac")
    assert acting_obstacle(ppo) is None
    assert acting_obstacle(sac) == "sac learns between environment steps"
    unknown = dataclasses.replace(ppo, reward_signals={"extrinsic": ExtrinsicSettings(), "probe": object()})
    assert settings_problems(unknown) == [
        "the probe reward signal is not supported yet; remove it from reward_signals"]
    assert "needs demo_path" in settings_problems(TrainerSettings(trainer="offline_bc"))[0]


def test_capability_messages_say_which_section_set_the_setting(tmp_path):
    from palaestra.settings import load_trainer_config

    path = tmp_path / "c.yaml"
    path.write_text("default:\n  self_play:\n    window: 5\n  use_recurrent: true\nB:\n  trainer: online_bc\n"
                    "  brain_to_imitate: heuristic\n")
    problems = settings_problems(load_trainer_config(path).for_behavior("B"))
    assert ("self_play (set in section 'default') is read by trainers ppo and sac only; trainer 'online_bc' cannot "
            "use it: remove the section") in problems
    assert any("use_recurrent: true (LSTM policies) is built for trainer" in p and "(set in section 'default')" in p
               for p in problems)
    path.write_text("B:\n  trainer: sac\n  activation: tanh\n")
    assert settings_problems(load_trainer_config(path).for_behavior("B")) == [
        "activation 'tanh' is built for trainer 'ppo' only so far (set in section 'B'); SAC's networks use swish "
        "(remove the key)"]


def test_a_trainer_added_to_the_registry_is_a_choice_and_reads_the_shared_keys(monkeypatch):
    # docs/extending.md, "A trainer": the registry is the one list; nothing else names trainers
    @dataclass(frozen=True)
    class VPGSettings(TrainerSettings):
        trainer: str = settings._override("trainer", "vpg")

    @dataclass(frozen=True)
    class ImitatorSettings(TrainerSettings):
        trainer: str = settings._override("trainer", "imitator")
        learns_from_rewards = False

    monkeypatch.setitem(settings.SETTINGS_BY_TRAINER, "vpg", VPGSettings)
    monkeypatch.setitem(settings.SETTINGS_BY_TRAINER, "imitator", ImitatorSettings)
    assert settings._trainer_type("vpg") == "vpg"
    with pytest.raises(ValueError):
        settings._trainer_type("vgp")
    assert isinstance(TrainerSettings(trainer="vpg"), VPGSettings)
    assert settings._readers(settings.EVERY_RL_TRAINER) == ("ppo", "sac", "vpg")
    assert settings._readers(settings.EVERY_TRAINER) == ("ppo", "sac", "offline_bc", "online_bc", "vpg", "imitator")
    assert settings._readers((*settings.EVERY_RL_TRAINER, "online_bc")) == ("ppo", "sac", "online_bc", "vpg")
