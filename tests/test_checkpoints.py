"""Checkpoint files: the header and its checksum, the older bare torch layout, the checks of a
checkpoint's structure against the policy, the fallback past damaged checkpoints, the removal of
temp files left by interrupted saves, and save failures (a full disk) that name the file."""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import re
import struct
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from palaestra import checkpoints
from palaestra.checkpoints import (
    HEADER_SIZE,
    MAGIC,
    CheckpointError,
    CheckpointManager,
    DamagedCheckpointError,
    SaveError,
    atomic_write_bytes,
)
from palaestra.envs.builtin import BUILTIN_ENVS
from palaestra.settings import ExtrinsicSettings, RNDSettings, TrainerSettings
from palaestra.stats import StatsReporter
from palaestra.trainer import BehaviorTrainer
from tests.conftest import write_yaml

SMALL = """
1D:
  trainer: {trainer}
  batch_size: 16
  buffer_size: {buffer_size}
  hidden_units: 8
  num_layers: 1
  max_steps: {max_steps}
  summary_freq: 100
  time_horizon: 16
"""


def make_trainer(run_dir, trainer="ppo", hidden_units=8, training=True, name="1D", reward_signals=None, **network):
    env = BUILTIN_ENVS["Simple1DDiscrete"](seed=0)
    settings = TrainerSettings(trainer=trainer, batch_size=16, buffer_size=32, hidden_units=hidden_units,
                               num_layers=1, max_steps=100, time_horizon=8, summary_freq=10_000,
                               reward_signals=reward_signals or {"extrinsic": ExtrinsicSettings()}, **network)
    return BehaviorTrainer(name, env.behavior_specs["1D"], settings, torch.device("cpu"), StatsReporter("t", []),
                           CheckpointManager(run_dir / name, 5), run_dir, training=training)


def policy_weights(trainer):
    return {k: v.clone() for k, v in trainer.algorithm.policy.state_dict().items()}


def mark(trainer, value):
    """Give the policy recognisable weights, to tell checkpoints apart once loaded."""
    with torch.no_grad():
        trainer.algorithm.policy.state_dict()["logits.bias"].fill_(value)


def save_state(path, state):
    CheckpointManager.save_file(path, state)
    return path


@pytest.fixture
def trainer(tmp_path):
    return make_trainer(tmp_path / "models")


@pytest.fixture
def saved(trainer):
    """A checkpoint of the tiny policy, and the trainer that wrote it."""
    trainer.algorithm.step = 100
    return trainer.checkpoints.save(trainer.state(global_step=100), 100)


# -- the file layout ---------------------------------------------------------------------------------
def test_a_checkpoint_is_a_header_with_a_checksum_then_a_torch_file(saved):
    data = saved.read_bytes()
    magic, version, length, digest = struct.unpack("<12sIQ32s", data[:HEADER_SIZE])
    payload = data[HEADER_SIZE:]
    assert magic == MAGIC and version == 1 and length == len(payload) and HEADER_SIZE == 56
    assert digest == hashlib.sha256(payload).digest()
    state = torch.load(io.BytesIO(payload), weights_only=True)  # the payload is an ordinary torch file
    assert state["algorithm"]["step"] == 100 and CheckpointManager.load(saved)["global_step"] == 100


def test_files_of_the_layout_before_the_header_still_resume(trainer, saved):
    state = CheckpointManager.load(saved)
    legacy = saved.with_name("checkpoint-200.pt")
    torch.save({**state, "global_step": 200}, legacy)  # a bare torch file, as Palaestra wrote them before
    assert legacy.read_bytes()[:4] == b"PK\x03\x04"
    path, step = trainer.restore_newest(trainer.checkpoints, weights_only=False, set_aside=True, advice="")
    assert (path, step) == (legacy, 200)


@pytest.mark.parametrize("damage,message", [
    (lambda d: d[: len(d) // 2], "is truncated: "),
    (lambda d: d[:30], "is truncated: its 56-byte header is incomplete"),
    (lambda d: b"", "is empty"),
    (lambda d: d + b"\0", "its header says"),
    (lambda d: d[:12] + struct.pack("<I", 7) + d[16:], "has checkpoint file version 7; this Palaestra reads version 1"),
    (lambda d: b"GARBAGE!" + d[8:], "is not a Palaestra checkpoint (it starts with neither"),
    (lambda d: d[:-100] + bytes(b ^ 0xFF for b in d[-100:-99]) + d[-99:], "do not match their SHA-256 checksum"),
    (lambda d: d[:20] + b"\xff" * 8 + d[28:], "is truncated"),  # a damaged length is not read as such
])
def test_a_damaged_file_is_refused_with_its_name_and_what_is_wrong(saved, damage, message):
    saved.write_bytes(damage(saved.read_bytes()))
    with pytest.raises(DamagedCheckpointError) as error:
        CheckpointManager.load(saved)
    assert str(saved) in str(error.value) and message in str(error.value)


def test_flipped_bytes_no_longer_resume_silently(trainer, saved):
    # 16 flipped bytes in the weights used to load and change them by up to hundreds
    data = bytearray(saved.read_bytes())
    rng = np.random.default_rng(0)
    for i in rng.choice(np.arange(HEADER_SIZE, len(data)), 16, replace=False):
        data[i] ^= 0x40
    saved.write_bytes(bytes(data))
    before = policy_weights(trainer)
    with pytest.raises(DamagedCheckpointError, match="SHA-256 checksum"):
        trainer.restore(saved, weights_only=False)
    after = policy_weights(trainer)
    assert all(torch.equal(before[k], after[k]) for k in before)


class _Payload:
    """Runs code when unpickled: what weights_only=True must keep refusing."""

    def __reduce__(self):
        return (os.mkdir, ("pwned",))


@pytest.mark.parametrize("framed", [True, False])
def test_pickled_code_stays_refused_without_torch_advice_to_run_it(workdir, framed):
    path = workdir / "checkpoint-1.pt"
    buffer = io.BytesIO()
    torch.save({"algorithm": {}, "x": _Payload()}, buffer)
    if framed:  # even with a valid checksum
        save_state(path, {"algorithm": {}, "x": _Payload()})
    else:
        path.write_bytes(buffer.getvalue())
    with pytest.raises(DamagedCheckpointError) as error:
        CheckpointManager.load(path)
    text = str(error.value)
    assert str(path) in text and "Python objects other than tensors" in text
    assert "weights_only" not in text.lower() and "weights only" not in text.lower() and "trust" not in text
    assert not (workdir / "pwned").exists()


# -- the structure against the policy -------------------------------------------------------------
def _mutated(state, edit):
    state = {**state, "algorithm": dict(state["algorithm"])}
    edit(state)
    return state


STRUCTURES = [
    ("missing key", lambda s: s["algorithm"].pop("policy"), "has no 'algorithm.policy' entry", CheckpointError),
    ("wrong type", lambda s: s["algorithm"].update(step="100"), "'algorithm.step' is a str, not an integer",
     DamagedCheckpointError),
    ("wrong shape", lambda s: s["algorithm"].update(policy={**s["algorithm"]["policy"],
                                                            "logits.weight": torch.zeros(2, 16)}),
     "parameter policy.logits.weight has shape [2, 16], the policy expects [2, 8], although it records the network "
     "settings", CheckpointError),
    ("list", lambda s: s.update(algorithm=[1, 2, 3]), "'algorithm' is [1, 2, 3], not a dictionary",
     DamagedCheckpointError),
    ("nested garbage", lambda s: s["algorithm"].update(optimizer={"state": {0: {"step": [None, {"a": "x"}]}},
                                                                  "param_groups": [{"params": [0, 1, 2, 3, 4, 5],
                                                                                    "lr": 3e-4, "betas": (0.9, 0.99),
                                                                                    "eps": 1e-8, "weight_decay": 0}]}),
     "'algorithm.optimizer.state'[0]", DamagedCheckpointError),
    ("top level list", lambda s: None, "the checkpoint is a list, not a dictionary", DamagedCheckpointError),
    ("string parameter", lambda s: s["algorithm"].update(policy={**s["algorithm"]["policy"], "logits.bias": "x"}),
     "parameter policy.logits.bias is a str, not a dense real tensor", DamagedCheckpointError),
    ("extra parameter", lambda s: s["algorithm"].update(policy={**s["algorithm"]["policy"], "extra.w": torch.ones(1)}),
     "its policy has 'extra.w', which this behavior's policy does not have", CheckpointError),
    ("optimizer moment", lambda s: s["algorithm"].update(optimizer={
        **s["algorithm"]["optimizer"], "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(3),
                                                     "exp_avg_sq": torch.zeros(3)}}}),
     "the optimizer's exp_avg of parameter 0 has shape [3]", CheckpointError),
    ("adam betas", lambda s: s["algorithm"].update(optimizer={
        **s["algorithm"]["optimizer"], "param_groups": [{**s["algorithm"]["optimizer"]["param_groups"][0],
                                                         "betas": (2.0, 5.0)}]}),
     "['betas'] is (2.0, 5.0), not two betas from 0 up to (not including) 1", DamagedCheckpointError),
    ("adam epsilon", lambda s: s["algorithm"].update(optimizer={
        **s["algorithm"]["optimizer"], "param_groups": [{**s["algorithm"]["optimizer"]["param_groups"][0],
                                                         "eps": 0.0}]}),
     "['eps'] is 0.0, not an epsilon > 0", DamagedCheckpointError),
    ("huge integer", lambda s: s["algorithm"].update(step=2**64),
     "'algorithm.step' is 18446744073709551616, not an integer >= 0", DamagedCheckpointError),
    ("spec", lambda s: s.update(observation_shapes=[[5]]), "was trained for observations [[5]]", CheckpointError),
    ("action spec", lambda s: s.update(continuous_size=0, discrete_branches=[3, 2]),
     "and actions discrete[3, 2], but behavior", CheckpointError),
    ("action spec missing", lambda s: s.pop("continuous_size"), "and actions continuous=None discrete=", CheckpointError),
    ("newer format", lambda s: s.update(format=9), "has format 9", CheckpointError),
    ("network key", lambda s: s.update(network={1: "swish"}), "'network' is a dictionary with the key 1, not a setting's name",
     DamagedCheckpointError),
    ("network record", lambda s: s.update(network={"activation": [1]}),
     "'network'['activation'] is [1], not a setting's value", DamagedCheckpointError),
]


@pytest.mark.parametrize("name,edit,message,kind", STRUCTURES, ids=[s[0] for s in STRUCTURES])
def test_a_state_that_does_not_fit_is_a_checkpoint_error_and_changes_nothing(trainer, saved, name, edit, message,
                                                                           kind):
    state = CheckpointManager.load(saved)
    save_state(saved, [state] if name == "top level list" else _mutated(state, edit))
    before = policy_weights(trainer)
    with pytest.raises(CheckpointError) as error:
        trainer.restore(saved, weights_only=False)
    assert type(error.value) is kind
    assert str(saved) in str(error.value) and message in str(error.value)
    after = policy_weights(trainer)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_sac_state_is_checked_too(tmp_path):
    trainer = make_trainer(tmp_path, trainer="sac")
    path = trainer.checkpoints.save(trainer.state(0), 0)
    state = CheckpointManager.load(path)
    state["algorithm"]["log_alpha"] = torch.zeros(3)
    save_state(path, state)
    with pytest.raises(CheckpointError, match=r"parameter log_alpha has shape \[3\], the policy expects \[1\]"):
        trainer.restore(path, weights_only=True)
    state["algorithm"]["log_alpha"] = torch.zeros(1)
    state["algorithm"]["target"] = dict(state["algorithm"]["target"])
    state["algorithm"]["target"].pop("weights.0")
    save_state(path, state)
    with pytest.raises(CheckpointError, match="its target network lacks weights.0"):
        trainer.restore(path, weights_only=True)


def test_a_checkpoint_of_a_wider_network_says_which_setting(tmp_path, saved):
    wide = make_trainer(tmp_path / "other", hidden_units=16)
    with pytest.raises(CheckpointError) as error:
        wide.restore(saved, weights_only=True)
    assert f"checkpoint {saved} was trained with hidden_units: 8, but behavior '1D' is set to hidden_units: 16" in \
        str(error.value) and not isinstance(error.value, DamagedCheckpointError)
    # a checkpoint written before checkpoints recorded their network: the shapes still tell
    state = CheckpointManager.load(saved)
    del state["network"]
    save_state(saved, state)
    with pytest.raises(CheckpointError) as error:
        wide.restore(saved, weights_only=True)
    assert "has shape [2, 8, 1], the policy expects [2, 16, 1]" in str(error.value)
    assert "hidden_units, num_layers" in str(error.value)


@pytest.mark.parametrize("trained, now", [
    (dict(activation="swish"), dict(activation="tanh")),
    # one observation, one unit, memory 2 (one unit of h and c): the LSTM's weights have the same
    # shapes before and after the layers (so do images: each encoder gives hidden_units features)
    (dict(hidden_units=1, use_recurrent=True, memory_size=2, sequence_length=4),
     dict(hidden_units=1, use_recurrent=True, memory_size=2, sequence_length=4, lstm_placement="before_layers")),
])
def test_network_settings_that_keep_every_shape_are_checked_before_weights_load(tmp_path, trained, now):
    # these load "successfully" into the wrong network unless the checkpoint says what it was
    source = make_trainer(tmp_path / "a", **trained)
    path = source.checkpoints.save(source.state(0), 0)
    other = make_trainer(tmp_path / "b", **now)
    assert [v.shape for v in policy_weights(source).values()] == [v.shape for v in policy_weights(other).values()]
    before = policy_weights(other)
    key = next(k for k in now if trained.get(k, "after_layers") != now[k])
    with pytest.raises(CheckpointError, match=f"was trained with {key}: .*, but behavior '1D' is set to {key}: "
                                              f"{now[key]}; a checkpoint loads only into the network"):
        other.restore(path, weights_only=True)
    assert all(torch.equal(before[k], v) for k, v in policy_weights(other).items())
    make_trainer(tmp_path / "c", **trained).restore(path, weights_only=False)  # the same settings load


def test_reward_signals_in_another_order_are_refused_as_they_would_swap_the_value_heads(tmp_path):
    signals = {"extrinsic": ExtrinsicSettings(), "rnd": RNDSettings()}
    path = (source := make_trainer(tmp_path / "a", reward_signals=signals)).checkpoints.save(source.state(0), 0)
    swapped = make_trainer(tmp_path / "b", reward_signals=dict(reversed(signals.items())))
    with pytest.raises(CheckpointError, match=r"trained with reward_signals: \[extrinsic, rnd\], but behavior '1D' "
                                              r"is set to reward_signals: \[rnd, extrinsic\]"):
        swapped.restore(path, weights_only=False)
    make_trainer(tmp_path / "c", reward_signals=signals).restore(path, weights_only=False)


def test_another_trainers_checkpoint_is_refused_naming_both_trainers(tmp_path):
    path = (source := make_trainer(tmp_path / "a")).checkpoints.save(source.state(0), 0)
    with pytest.raises(CheckpointError, match=r"trained with trainer: ppo, but behavior '1D' is set to trainer: sac, "
                                              r"whose networks it does not fit"):
        make_trainer(tmp_path / "b", trainer="sac").restore(path, weights_only=True)
    # SAC's networks never fit PPO's: the trainer is the cause named, whatever else differs (a
    # reward signal added said "set them back", which could not help)
    with pytest.raises(CheckpointError, match=r"trained with trainer: ppo, but behavior '1D' is set to trainer: sac"):
        make_trainer(tmp_path / "c", trainer="sac", hidden_units=7).restore(path, weights_only=True)
    # between trainers that share PPO's network, settings that differ are named with both trainers
    with pytest.raises(CheckpointError, match=r"trained with hidden_units: \d+ \(trainer: ppo\), but behavior '1D' "
                                              r"is set to hidden_units: 7 \(trainer: offline_bc\)"):
        make_trainer(tmp_path / "d", trainer="offline_bc", hidden_units=7).restore(path, weights_only=True)


@pytest.mark.parametrize("trained, key, value", [
    (dict(normalize=True), "normalize", "false"),
    (dict(reward_signals={"extrinsic": ExtrinsicSettings(), "rnd": RNDSettings()}), "reward_signals", "[extrinsic]"),
])
def test_a_checkpoint_shaped_by_a_setting_the_trainer_does_not_read_names_that_setting(tmp_path, trained, key, value):
    # online_bc (PPO's network) from a PPO run: its config cannot "set back" a key it does not read
    path = (source := make_trainer(tmp_path / "a", **trained)).checkpoints.save(source.state(0), 0)
    with pytest.raises(CheckpointError, match=re.escape(
            f"(trainer: ppo), which shape its network; trainer online_bc does not read {key} (its network is built "
            f"with {key}: {value}), so behavior '1D' cannot start from that checkpoint: start it from a run trained "
            f"with {key}: {value}, or train anew")):
        make_trainer(tmp_path / "b", trainer="online_bc").restore(path, weights_only=True)
    plain = (source := make_trainer(tmp_path / "c")).checkpoints.save(source.state(0), 0)
    make_trainer(tmp_path / "d", trainer="online_bc").restore(plain, weights_only=True)  # PPO's network loads


# -- the newest intact checkpoint -----------------------------------------------------------------------
def _three_checkpoints(trainer):
    paths = []
    for step in (100, 200, 300):
        mark(trainer, step)
        trainer.algorithm.step = step
        paths.append(trainer.checkpoints.save(trainer.state(step), step))
    return paths


def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(trainer, caplog):
    first, second, third = _three_checkpoints(trainer)
    third.write_bytes(third.read_bytes()[:-10])
    second.write_bytes(b"\0" * 100)
    with caplog.at_level(logging.WARNING, logger="palaestra"):
        path, step = trainer.restore_newest(trainer.checkpoints, weights_only=False, set_aside=True, advice="")
    assert (path, step, trainer.step) == (first, 100, 100)
    assert float(trainer.algorithm.policy.state_dict()["logits.bias"][0]) == 100
    for bad in (third, second):
        assert re.search(rf"{re.escape(str(bad))} is .*\(renamed to {bad.name}\.damaged\); using {re.escape(str(first))}",
                         caplog.text)
        assert not bad.exists() and bad.with_name(bad.name + ".damaged").exists()
    # the run's next checkpoints rank above what is left, and --keep-checkpoints keeps the new one
    assert trainer.checkpoints.list() == [(100, first)]


def test_without_an_intact_checkpoint_the_error_says_so_and_names_each(trainer):
    paths = _three_checkpoints(trainer)
    for p in paths:
        p.write_bytes(p.read_bytes()[:50])
    with pytest.raises(CheckpointError) as error:
        trainer.restore_newest(trainer.checkpoints, weights_only=False, set_aside=True,
                               advice="start the run over with --force")
    text = str(error.value)
    assert text.startswith(f"no intact checkpoint of behavior '1D' remains in {trainer.checkpoints.folder}: ")
    assert all(str(p) in text for p in paths) and text.endswith("start the run over with --force")
    assert all(p.exists() for p in paths)  # nothing renamed when nothing could be used


def test_a_checkpoint_that_does_not_fit_stops_at_once(tmp_path, trainer):
    _three_checkpoints(trainer)
    wide = make_trainer(tmp_path / "wide", hidden_units=16)
    with pytest.raises(CheckpointError, match="checkpoint-300.pt was trained with hidden_units: 8"):
        wide.restore_newest(trainer.checkpoints, weights_only=True, set_aside=False, advice="")


def test_resume_and_initialize_from_skip_a_damaged_checkpoint(run_cli, workdir):
    config = write_yaml(workdir / "c.yaml", SMALL.format(trainer="ppo", buffer_size=64, max_steps=300))
    assert run_cli(str(config), "--env=Simple1DDiscrete", "--run-id=r", "--save-freq=100").code == 0
    found = CheckpointManager(Path("models/r/1D"), 5).list()  # relative, as the log names them
    newest, older = found[-1][1], found[-2][1]
    newest.write_bytes(newest.read_bytes()[:-1])
    child = run_cli(str(config), "--env=Simple1DDiscrete", "--run-id=child", "--initialize-from=r")
    assert child.code == 0 and f"Initialized 1D from {older}" in child.log
    assert f"{newest} is truncated" in child.log and newest.exists()  # another run's folder: left alone
    write_yaml(workdir / "c.yaml", SMALL.format(trainer="ppo", buffer_size=64, max_steps=500))
    resumed = run_cli(str(config), "--env=Simple1DDiscrete", "--run-id=r", "--resume")
    assert resumed.code == 0, resumed.log
    assert f"{newest} is truncated" in resumed.log and f"using {older}, the newest intact checkpoint" in resumed.log
    assert f"Resumed 1D from {older} at step {found[-2][0]}" in resumed.log
    assert newest.with_name(newest.name + ".damaged").exists()


def test_a_checkpoint_holding_nan_weights_is_passed_over_like_a_damaged_one(trainer, caplog):
    first, second, third = _three_checkpoints(trainer)
    state = CheckpointManager.load(third)
    state["algorithm"]["policy"]["logits.bias"][0] = float("nan")
    CheckpointManager.save_file(third, state)  # intact file, diverged weights
    with caplog.at_level(logging.WARNING, logger="palaestra"):
        path, step = trainer.restore_newest(trainer.checkpoints, weights_only=False, set_aside=True, advice="")
    assert (path, step) == (second, 200)
    assert f"{third}: parameter policy.logits.bias holds NaN or infinite values" in caplog.text


def test_a_checkpoint_holding_an_infinite_optimizer_state_is_passed_over_like_a_damaged_one(trainer, caplog):
    # an overflowing loss leaves Adam's exp_avg_sq infinite and the weights finite but frozen
    first, second, third = _three_checkpoints(trainer)
    state = CheckpointManager.load(third)
    optimizer_state = state["algorithm"]["optimizer"]["state"]
    pid = next(iter(optimizer_state))
    optimizer_state[pid]["exp_avg_sq"].view(-1)[0] = float("inf")
    CheckpointManager.save_file(third, state)
    with caplog.at_level(logging.WARNING, logger="palaestra"):
        path, step = trainer.restore_newest(trainer.checkpoints, weights_only=False, set_aside=True, advice="")
    assert (path, step) == (second, 200)
    assert f"{third}: the optimizer's exp_avg_sq of parameter {pid} holds NaN or infinite values" in caplog.text


def test_a_loss_that_overflows_stops_the_run_and_saves_nothing_of_it(run_cli, workdir):
    # a reward of 1e30 makes the value loss infinite: Adam's state with it, and the weights, still
    # finite, never move again; the run stopped with exit 0 and saved that state, and --resume took it
    import gymnasium as gym

    from tests.test_envs import _NaNAfter

    config = write_yaml(workdir / "c.yaml", "default:\n  batch_size: 16\n  buffer_size: 32\n  hidden_units: 8\n"
                                            "  num_layers: 1\n  max_steps: 1000\n  time_horizon: 16\n")
    gym.register("PalaestraTestHuge-v0", entry_point=_NaNAfter, kwargs={"where": "reward", "value": 1e30})
    try:
        result = run_cli(str(config), "--env=PalaestraTestHuge-v0", "--run-id=r")
    finally:
        gym.registry.pop("PalaestraTestHuge-v0")
    assert result.code == 1 and "Traceback" not in result.log and "RuntimeWarning" not in result.log
    assert re.search(r"training stopped: DivergedError: behavior 'PalaestraTestHuge-v0': training diverged by step "
                     r"\d+: its losses became NaN or infinite \(Losses/Value Loss.*\)\. Try a lower learning_rate",
                     result.log), result.log
    assert "nothing was saved" in result.log
    # a loss finite as a Python float but not in float32 (SAC with init_entcoef 1e30: about 1e60)
    from palaestra.trainer import _finite
    assert not _finite(1e60) and not _finite(float("nan")) and _finite(3e38) and not _finite(np.array([1.0, 1e39]))
    assert not Path("models/r/PalaestraTestHuge-v0").exists() or not CheckpointManager(
        Path("models/r/PalaestraTestHuge-v0"), 5).list()


def test_observations_too_large_for_a_reward_signal_s_normalizer_stop_the_run_naming_the_behavior(run_cli, workdir):
    # RND normalizes what it reads even where the policy does not
    import gymnasium as gym

    from tests.test_envs import _NaNAfter

    class Alternating(_NaNAfter):  # observations 0 and 1e20 by turns: a variance near 2.5e39
        def step(self, action):
            obs, reward, terminated, truncated, info = super().step(action)
            return obs + np.float32(1e20 * (self.t % 2)), reward, terminated, truncated, info

    config = write_yaml(workdir / "c.yaml", "default:\n  batch_size: 16\n  buffer_size: 32\n  hidden_units: 8\n"
                                            "  num_layers: 1\n  max_steps: 300\n  time_horizon: 16\n  reward_signals:\n"
                                            "    extrinsic: {strength: 1.0, gamma: 0.99}\n"
                                            "    rnd: {strength: 0.01, gamma: 0.99, encoding_size: 8}\n")
    gym.register("PalaestraTestLarge-v0", entry_point=Alternating)
    try:
        result = run_cli(str(config), "--env=PalaestraTestLarge-v0", "--run-id=r")
    finally:
        gym.registry.pop("PalaestraTestLarge-v0")
    assert result.code == 1 and "Traceback" not in result.log
    assert ("training stopped: EnvDataError: behavior 'PalaestraTestLarge-v0': observation values up to 1e+20"
            in result.log), result.log


def test_a_diverging_run_stops_naming_its_weights_and_keeps_the_last_good_files(run_cli, workdir):
    # a learning rate of 1e6 makes the weights overflow within a few updates; the NaN actions
    # they produce make the environment's observations NaN, which must not be blamed on it
    config = write_yaml(workdir / "c.yaml", SMALL.format(trainer="ppo", buffer_size=64, max_steps=200)
                        .replace("1D:", "3DBall:").replace("time_horizon: 16", "time_horizon: 16\n  normalize: true"))
    assert run_cli(str(config), "--env=3DBall", "--run-id=r").code == 0
    good = CheckpointManager(Path("models/r/3DBall"), 5).list()
    model = (workdir / "models/r/3DBall.onnx").read_bytes()
    write_yaml(workdir / "c.yaml", config.read_text().replace("max_steps: 200", "max_steps: 3000")
               + "  learning_rate: 1.0e+6\n  learning_rate_schedule: constant\n")
    result = run_cli(str(config), "--env=3DBall", "--run-id=r", "--resume")
    assert result.code == 1 and "Traceback" not in result.log and "RuntimeWarning" not in result.log
    assert re.search(r"training stopped: DivergedError: behavior '3DBall': training diverged by step \d+: the "
                     r"policy's weights became NaN or infinite \(.+\)\. Try a lower learning_rate", result.log)
    assert f"the last checkpoint saved, {good[-1][1]}, and models/r/3DBall.onnx are kept" in result.log
    assert "environment sent" not in result.log and "saved first" not in result.log
    assert CheckpointManager(Path("models/r/3DBall"), 5).list() == good  # nothing NaN written
    assert (workdir / "models/r/3DBall.onnx").read_bytes() == model


# -- temp files of interrupted saves ---------------------------------------------------------------
def test_temp_files_of_an_interrupted_save_are_removed_when_a_run_starts(tmp_path, caplog):
    folder = tmp_path / "1D"
    folder.mkdir(parents=True)
    partial = [folder / ".checkpoint-500.pt.k2j4_x9a.tmp", folder / ".replay_buffer.pt.abc12345.tmp",
               tmp_path / ".1D.onnx.qq0w8e1r.tmp"]
    kept = [folder / "notes.tmp", folder / ".checkpoint-500.pt", tmp_path / ".Other.onnx.abc12345.tmp",
            folder / "checkpoint-400.pt"]
    for p in partial + kept:
        p.write_bytes(b"partial")
    make_trainer(tmp_path, training=False)  # --inference writes nothing, and removes nothing
    assert all(p.exists() for p in partial)
    with caplog.at_level(logging.INFO, logger="palaestra"):
        make_trainer(tmp_path)
    assert not any(p.exists() for p in partial) and all(p.exists() for p in kept)
    assert all(f"Removed {p}, left by an interrupted save" in caplog.text for p in partial)


def test_resume_removes_temp_files_of_an_interrupted_save(run_cli, workdir):
    config = write_yaml(workdir / "c.yaml", SMALL.format(trainer="ppo", buffer_size=64, max_steps=200))
    assert run_cli(str(config), "--env=Simple1DDiscrete", "--run-id=r").code == 0
    partial = workdir / "models/r/1D/.checkpoint-250.pt.a1b2c3d4.tmp"
    partial.write_bytes(b"\x89PALCKPT")  # a kill during atomic_write_bytes leaves such a file
    write_yaml(workdir / "c.yaml", SMALL.format(trainer="ppo", buffer_size=64, max_steps=300))
    result = run_cli(str(config), "--env=Simple1DDiscrete", "--run-id=r", "--resume")
    assert result.code == 0 and f"Removed {partial.relative_to(workdir)}, left by an interrupted save" in result.log
    assert not partial.exists()


# -- save failures -----------------------------------------------------------------------------------
class FullDisk:
    """Saving a file whose name matches ``pattern`` fails with ENOSPC after ``after`` successful
    saves of such files, at its fsync, where a full disk can report it."""

    def __init__(self, monkeypatch, pattern: str, after: int = 0) -> None:
        self.pattern, self.after, self.seen, self.failed = re.compile(pattern), after, 0, []
        self._fd: int | None = None
        real_mkstemp, real_fsync = checkpoints.tempfile.mkstemp, os.fsync

        def mkstemp(prefix, suffix, dir):
            fd, name = real_mkstemp(prefix=prefix, suffix=suffix, dir=dir)
            self._fd = None
            if self.pattern.search(prefix):
                self.seen += 1
                if self.seen > self.after:
                    self._fd = fd
                    self.failed.append(name)
            return fd, name

        def fsync(fd):
            if fd == self._fd:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_fsync(fd)

        monkeypatch.setattr(checkpoints, "tempfile", types.SimpleNamespace(mkstemp=mkstemp))
        monkeypatch.setattr(os, "fsync", fsync)


def test_a_failed_write_names_the_file_and_leaves_the_old_one(monkeypatch, tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    disk = FullDisk(monkeypatch, r"a\.bin")
    with pytest.raises(OSError) as error:
        atomic_write_bytes(target, b"new")
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(target)
    assert ".tmp" not in str(error.value) and str(target) in str(error.value)
    assert target.read_bytes() == b"old" and disk.failed and not any(os.path.exists(f) for f in disk.failed)


def test_a_failed_checkpoint_names_it_and_the_last_complete_one(monkeypatch, trainer):
    first = trainer.checkpoints.save(trainer.state(100), 100)
    FullDisk(monkeypatch, r"checkpoint-")
    trainer.algorithm.step = 200
    with pytest.raises(SaveError) as error:
        trainer.save(200)
    assert str(error.value) == (f"could not save checkpoint {trainer.checkpoints.folder}/checkpoint-200.pt: "
                                f"{os.strerror(errno.ENOSPC)}; the last complete checkpoint is {first}")
    assert trainer.checkpoints.list() == [(100, first)]


def test_a_failed_export_names_the_onnx_file(monkeypatch, trainer):
    FullDisk(monkeypatch, r"\.onnx")
    with pytest.raises(SaveError) as error:
        trainer.save(0)
    assert str(error.value) == (f"could not export the ONNX model {trainer.onnx_path}: {os.strerror(errno.ENOSPC)}; "
                                f"the last complete checkpoint is {trainer.checkpoints.folder}/checkpoint-0.pt")


def test_memory_running_out_while_saving_the_replay_buffer_still_exports_the_model(monkeypatch, tmp_path):
    # a large replay buffer may not fit in memory a second time at the save: a SaveError naming
    # it (not a traceback), with the checkpoint and the ONNX model (saved first) on disk
    trainer = make_trainer(tmp_path / "models", trainer="sac", save_replay_buffer=True)
    save_file = CheckpointManager.save_file

    def short_of_memory(path, state):
        if path.name == "replay_buffer.pt":
            raise MemoryError("Unable to allocate 191. MiB for an array with shape (2504, 20000)")
        return save_file(path, state)

    monkeypatch.setattr(CheckpointManager, "save_file", staticmethod(short_of_memory))
    with pytest.raises(SaveError) as error:
        trainer.save(0)
    checkpoint = trainer.checkpoints.folder / "checkpoint-0.pt"
    assert str(error.value) == (
        f"could not save the replay buffer {trainer.replay_path}: out of memory (Unable to allocate 191. MiB for an "
        f"array with shape (2504, 20000)) (the replay buffer on disk is older); the last complete checkpoint is "
        f"{checkpoint}")
    assert checkpoint.exists() and trainer.onnx_path.exists()


def test_a_final_save_failing_at_the_step_of_a_complete_checkpoint_says_that_one_is_complete(monkeypatch, trainer):
    first = trainer.checkpoints.save(trainer.state(0), trainer.step)
    FullDisk(monkeypatch, r"checkpoint-")
    with pytest.raises(SaveError) as error:
        trainer.save(0)
    assert str(error.value).endswith(f"; the one written earlier at this step, {first}, is complete")


@pytest.mark.parametrize("pattern,after,messages", [
    # the disk fills up after two --save-freq checkpoints: the run stops, saying so
    (r"checkpoint-", 2, ["training stopped: could not save checkpoint models/f/1D/checkpoint-{a}.pt: {enospc}; "
                         "the last complete checkpoint is models/f/1D/checkpoint-{b}.pt"]),
    (r"\.onnx", 0, ["could not export the ONNX model models/f/1D.onnx: {enospc}; the last complete checkpoint is "
                    "models/f/1D/checkpoint-{b}.pt"]),
    (r"configuration\.yaml", 0, ["could not save the run configuration models/f/configuration.yaml: {enospc}"]),
    (r"_timers\.json", 0, ["could not save the timers summaries/f_timers.json: {enospc}"]),
])
def test_a_full_disk_stops_the_run_with_the_file_and_the_last_checkpoint(run_cli, workdir, monkeypatch, pattern,
                                                                         after, messages):
    config = write_yaml(workdir / "c.yaml", SMALL.format(trainer="ppo", buffer_size=64, max_steps=400))
    disk = FullDisk(monkeypatch, pattern, after)
    result = run_cli(str(config), "--env=Simple1DDiscrete", "--run-id=f", "--save-freq=100")
    assert result.code == 1 and "Traceback" not in result.log and disk.failed
    found = CheckpointManager(workdir / "models/f/1D", 5).list()
    failed = re.search(r"checkpoint-(\d+)\.pt", os.path.basename(disk.failed[0]))
    for message in messages:
        expected = message.format(a=failed.group(1) if failed else "", b=found[-1][0] if found else "",
                                  enospc=os.strerror(errno.ENOSPC))
        assert expected in result.log, result.log
    assert not list((workdir / "models/f").rglob("*.tmp"))


def test_a_cloning_trainers_checkpoint_records_that_its_network_has_no_normalizer(tmp_path):
    # online_bc and offline_bc build no normalizer, whatever normalize says: PPO with normalize
    # initialized from one is told so, not shown the parameters it lacks
    source = make_trainer(tmp_path / "a", trainer="online_bc", normalize=True)
    path = source.checkpoints.save(source.state(0), 0)
    with pytest.raises(CheckpointError, match=r"was trained with normalize: false \(trainer: online_bc\), but behavior "
                                              r"'1D' is set to normalize: true \(trainer: ppo\)"):
        make_trainer(tmp_path / "b", normalize=True).restore(path, weights_only=True)
    make_trainer(tmp_path / "c", trainer="online_bc", normalize=True).restore(path, weights_only=False)


# -- replay buffers ------------------------------------------------------------------------------

def test_a_wrapped_replay_buffer_saves_oldest_first_and_older_files_still_load(tmp_path):
    from palaestra.rollout.buffers import ReplayBuffer

    ring = ReplayBuffer(10)
    ring.add(x=np.arange(7, dtype=np.float32))
    ring.add(x=np.arange(7, 13, dtype=np.float32))  # 13 rows into 10: 3..12 kept, the ring wrapped
    CheckpointManager.save_file(tmp_path / "r.pt", ring.tensor_state())
    loaded = ReplayBuffer(10)
    loaded.load_state_dict(CheckpointManager.load_file(tmp_path / "r.pt", ""))
    np.testing.assert_array_equal(loaded.state_dict()["columns"]["x"], np.arange(3, 13))
    loaded.add(x=np.array([13.0], np.float32))  # the oldest row is the one overwritten next
    np.testing.assert_array_equal(loaded.state_dict()["columns"]["x"], np.arange(4, 14))
    # a file of the layout before parts: each column one tensor
    CheckpointManager.save_file(tmp_path / "old.pt", {"capacity": 10, "columns": {"x": torch.arange(3.0, 13.0)}})
    old = ReplayBuffer(10)
    old.load_state_dict(CheckpointManager.load_file(tmp_path / "old.pt", ""))
    np.testing.assert_array_equal(old.state_dict()["columns"]["x"], np.arange(3, 13))


SAVE_MEMORY = """
import gc, resource, sys
import numpy as np
from palaestra.checkpoints import CheckpointManager
from palaestra.rollout.buffers import ReplayBuffer

ring = ReplayBuffer(50_000)
for _ in range(60):  # wrapped
    ring.add(obs_0=np.ones((1000, 500), np.float32), reward=np.zeros(1000, np.float32))
gc.collect()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
CheckpointManager.save_file(sys.argv[1], {"step": 1, **ring.tensor_state()})
added = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(added / (sum(v.nbytes for v in ring.data.values()) / 1024))
"""


def test_saving_a_replay_buffer_takes_no_copy_of_it(tmp_path):
    # the peak memory of the save: no reordered copy of the ring, no copy of the file's bytes
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", SAVE_MEMORY, str(tmp_path / "r.pt")], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 0.25, out.stdout  # measured: 0.00 (2.0 before: the reordered copy and the bytes)


def test_a_temporary_file_that_cannot_be_set_up_is_removed(tmp_path, monkeypatch):
    def refuse(fd, mode):
        raise PermissionError(errno.EPERM, "operation not permitted")

    monkeypatch.setattr(os, "fchmod", refuse)
    with pytest.raises(OSError, match="x.pt"):
        checkpoints.atomic_write_bytes(tmp_path / "x.pt", b"abc")
    assert list(tmp_path.iterdir()) == []


def test_a_resumed_optimizer_keeps_its_own_settings_not_the_checkpoint_s():
    # a run trained on a GPU saves fused=True; resumed on a CPU whose torch has no fused CPU Adam
    # (before 2.4), torch's load would restore the flag and the first step would fail there; and a
    # resumed config's adam_epsilon or learning rate was replaced by the checkpoint's without a word
    from palaestra.networks.optim import load_optimizer_state

    weights = torch.nn.Parameter(torch.ones(3))
    trained = torch.optim.Adam([weights], lr=0.1, eps=1e-8, foreach=False)
    weights.grad = torch.ones(3)
    trained.step()
    saved = trained.state_dict()
    saved["param_groups"][0].update(fused=True, foreach=None)  # as the GPU machine wrote it
    resumed = torch.optim.Adam([weights], lr=0.5, eps=0.25, foreach=False)
    load_optimizer_state(resumed, saved)
    group = resumed.param_groups[0]
    assert not group["fused"] and group["foreach"] is False
    assert group["lr"] == 0.5 and group["eps"] == 0.25 and group["params"] == [weights]  # the new run's settings
    torch.testing.assert_close(resumed.state[weights]["exp_avg"], trained.state[weights]["exp_avg"])
    assert resumed.state[weights]["step"].device.type == "cpu" and float(resumed.state[weights]["step"]) == 1
    resumed.step()
    assert float(resumed.state[weights]["step"]) == 2


def test_a_layout_another_palaestra_wrote_is_named_so_not_blamed_on_the_settings(trainer, saved):
    # networks changed shape during development without a new checkpoint format: a checkpoint
    # recording this behavior's very settings was told to check them, which changed nothing
    state = CheckpointManager.load(saved)
    policy = dict(state["algorithm"]["policy"])
    policy["logits.weight"] = torch.zeros(*policy["logits.weight"].shape[:-1], 99)
    state["algorithm"]["policy"] = policy
    save_state(saved, state)
    with pytest.raises(CheckpointError) as error:
        trainer.restore(saved, weights_only=False)
    message = str(error.value)
    assert "parameter policy.logits.weight has shape" in message
    assert ("although it records the network settings behavior '1D' has: another version of Palaestra, whose "
            "networks are laid out otherwise, wrote it, and this one cannot load it: train anew (--force, or "
            "another --run-id)") in message
    assert "was it trained with" not in message


def test_reward_signals_models_that_no_longer_fit_start_afresh_under_inference_and_initialize_from(tmp_path, caplog):
    # they do not act, so a trained policy stays usable; --resume needs them and says what to do
    signals = {"extrinsic": ExtrinsicSettings(), "rnd": RNDSettings()}
    source = make_trainer(tmp_path / "a", reward_signals=signals)
    mark(source, 0.25)
    path = source.checkpoints.save(source.state(0), 0)
    state = CheckpointManager.load(path)
    state["algorithm"]["signals"] = {k: v for k, v in state["algorithm"]["signals"].items()
                                     if not k.endswith(".weight")}
    save_state(path, state)
    other = make_trainer(tmp_path / "b", reward_signals=signals)
    with caplog.at_level(logging.WARNING, logger="palaestra"):
        other.restore(path, weights_only=True)
    assert torch.equal(policy_weights(other)["logits.bias"], policy_weights(source)["logits.bias"])
    assert "its reward signals' models lack" in caplog.text
    assert "its policy is loaded, and the reward signals' models start afresh" in caplog.text
    with pytest.raises(CheckpointError) as error:
        make_trainer(tmp_path / "c", reward_signals=signals).restore(path, weights_only=False)
    assert "another version of Palaestra" in str(error.value)
    assert "--inference and --initialize-from still take its policy" in str(error.value)
    # a checkpoint without a network record (the earliest versions wrote none) says so
    del state["network"]
    save_state(path, state)
    with pytest.raises(CheckpointError, match=r"lack .*: it records no network settings, so an early version of "
                                              r"Palaestra wrote it; either it was trained with other settings"):
        make_trainer(tmp_path / "d", reward_signals=signals).restore(path, weights_only=False)


def test_a_checkpoint_records_its_signals_own_settings_and_a_change_is_named(tmp_path, caplog):
    from palaestra.settings import CuriositySettings

    def signals(size):
        return {"extrinsic": ExtrinsicSettings(), "curiosity": CuriositySettings(encoding_size=size)}

    source = make_trainer(tmp_path / "a", reward_signals=signals(16))
    mark(source, 0.5)
    path = source.checkpoints.save(source.state(0), 0)
    assert CheckpointManager.load(path)["network"]["curiosity.encoding_size"] == 16
    with pytest.raises(CheckpointError, match=r"trained with curiosity.encoding_size: 16, but behavior '1D' is set to "
                                              r"curiosity.encoding_size: 8"):
        make_trainer(tmp_path / "b", reward_signals=signals(8)).restore(path, weights_only=False)
    other = make_trainer(tmp_path / "c", reward_signals=signals(8))
    with caplog.at_level(logging.WARNING, logger="palaestra"):
        other.restore(path, weights_only=True)  # --inference, --initialize-from: the policy loads
    assert torch.equal(policy_weights(other)["logits.bias"], policy_weights(source)["logits.bias"])
    assert "the reward signals' models start afresh" in caplog.text


def test_weights_of_a_checkpoint_whose_optimizer_diverged_still_serve_inference_and_initialize_from(trainer):
    # those modes load no optimizer state; the weights of such a checkpoint are finite
    first, second, third = _three_checkpoints(trainer)
    state = CheckpointManager.load(third)
    next(iter(state["algorithm"]["optimizer"]["state"].values()))["exp_avg_sq"].view(-1)[0] = float("inf")
    CheckpointManager.save_file(third, state)
    path, _ = trainer.restore_newest(trainer.checkpoints, weights_only=True, set_aside=False, advice="")
    assert path == third and float(policy_weights(trainer)["logits.bias"][0]) == 300
