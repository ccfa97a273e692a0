"""The trainer-config model: defaults, merging, aliases, warnings and errors."""

from __future__ import annotations

import pytest

from palaestra.settings import (
    ConfigError,
    ExtrinsicSettings,
    TrainerSettings,
    load_trainer_config,
    unsupported_features,
)
from tests.conftest import write_yaml


def test_defaults_come_from_the_settings_model(tmp_path):
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", "default:\n  trainer: ppo\n"))
    s = cfg.for_behavior("Anything")
    assert s == TrainerSettings(reward_signals={"extrinsic": ExtrinsicSettings()})
    assert (s.batch_size, s.buffer_size, s.learning_rate_schedule) == (1024, 10240, "linear")


def test_sac_defaults_differ_where_mlagents_differs(tmp_path):
    s = load_trainer_config(write_yaml(tmp_path / "c.yaml", "B:\n  trainer: sac\n")).for_behavior("B")
    assert (s.batch_size, s.buffer_size, s.learning_rate_schedule) == (128, 50000, "constant")


def test_merge_is_shallow_and_aliases_are_followed(tmp_path):
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", """
        default:
          batch_size: 64
          buffer_size: 640
          reward_signals:
            extrinsic: {strength: 1.0, gamma: 0.99}
        A:
          batch_size: 32
          reward_signals:
            extrinsic: {gamma: 0.5}
        B: A
    """))
    a = cfg.for_behavior("A")
    assert (a.batch_size, a.buffer_size) == (32, 640)
    assert a.reward_signals["extrinsic"] == ExtrinsicSettings(strength=1.0, gamma=0.5)
    assert cfg.for_behavior("B") == a


def test_numbers_written_without_a_dot_are_read(tmp_path):
    # PyYAML reads 5e6 as a string; ML-Agents' own files write it that way.
    s = load_trainer_config(write_yaml(tmp_path / "c.yaml", "B:\n  max_steps: 5e6\n")).for_behavior("B")
    assert s.max_steps == 5_000_000


def test_unknown_key_warns_with_closest_match(tmp_path):
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", "B:\n  bacth_size: 32\n"))
    assert len(cfg.warnings) == 1
    message = cfg.warnings[0]
    assert "c.yaml" in message and "'B'" in message and "bacth_size" in message and "'batch_size'" in message


@pytest.mark.parametrize("key,replacement", [
    ("use_curiosity: true", "reward_signals: curiosity"),
    ("curiosity_strength: 0.1", "curiosity: strength"),
    ("curiosity_enc_size: 64", "curiosity: encoding_size"),
    ("gamma: 0.9", "extrinsic: gamma"),
])
def test_legacy_keys_warn_with_replacement(tmp_path, key, replacement):
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", f"default:\n  {key}\n"))
    assert len(cfg.warnings) == 1 and "legacy" in cfg.warnings[0] and replacement in cfg.warnings[0]


@pytest.mark.parametrize("line,expected", [
    ("batch_size: abc", "an integer >= 1"),
    ("batch_size: 0", "an integer >= 1"),
    ("batch_size: 2.5", "an integer >= 1"),
    ("lambd: 1.5", "a number in [0, 1]"),
    ("learning_rate: -1", "a number > 0"),
    ("normalize: maybe", "true or false"),
    ("learning_rate_schedule: cosine", "one of linear, constant"),
    ("trainer: dqn", "one of ppo, sac, offline_bc, online_bc"),
])
def test_bad_values_name_file_section_key_value_and_expectation(tmp_path, line, expected):
    path = write_yaml(tmp_path / "c.yaml", f"3DBall:\n  {line}\n")
    with pytest.raises(ConfigError) as err:
        load_trainer_config(path)
    message = str(err.value)
    key, value = line.split(": ")
    assert "c.yaml" in message and "'3DBall'" in message and repr(key) in message
    assert value in message and expected in message


def test_yaml_syntax_error_reports_the_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("default:\n  batch_size: 32\n  buffer_size: [1, 2\n")
    with pytest.raises(ConfigError, match=r"c.yaml: YAML syntax error at line \d+"):
        load_trainer_config(path)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_trainer_config(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_trainer_config(tmp_path / "empty.yaml")


def test_behavior_without_section_or_default_lists_sections(tmp_path):
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", "A:\n  batch_size: 32\n  buffer_size: 64\n"))
    with pytest.raises(ConfigError, match=r"no section for behavior 'B'.*\['A'\]"):
        cfg.for_behavior("B")


def test_both_sac_cadence_spellings_in_one_section_is_an_error(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", "B:\n  trainer: sac\n  steps_per_update: 10\n  num_update: 1\n")
    with pytest.raises(ConfigError, match="steps_per_update.*num_update"):
        load_trainer_config(path)


def test_sac_015_cadence_converts_to_steps_per_update(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", "B:\n  trainer: sac\n  num_update: 2\n  train_interval: 4\n")
    assert load_trainer_config(path).for_behavior("B").steps_per_update == 2.0


def test_batch_larger_than_buffer_is_an_error(tmp_path):
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", "B:\n  batch_size: 512\n  buffer_size: 256\n"))
    with pytest.raises(ConfigError, match=r"batch_size \(512\) is larger than buffer_size \(256\)"):
        cfg.for_behavior("B")


def test_reward_signal_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown reward signal.*'curiosity'"):
        load_trainer_config(write_yaml(tmp_path / "a.yaml", "B:\n  reward_signals:\n    curiousity: {strength: 1}\n"))
    with pytest.raises(ConfigError, match="missing required setting.*demo_path"):
        load_trainer_config(write_yaml(tmp_path / "b.yaml", "B:\n  reward_signals:\n    gail: {strength: 1}\n"))
    with pytest.raises(ConfigError, match="reward_signals.extrinsic.gamma.*a number in \\[0, 1\\]"):
        load_trainer_config(write_yaml(tmp_path / "c.yaml", "B:\n  reward_signals:\n    extrinsic: {gamma: 2}\n"))


def test_legacy_trainers_are_recognized_and_rejected_with_advice(tmp_path):
    for trainer, advice in (("offline_bc", "removed"), ("online_bc", "behavioral_cloning")):
        cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", f"B:\n  trainer: {trainer}\n"))
        problems = unsupported_features(cfg.for_behavior("B"))
        assert problems and advice in problems[0]
    sac = load_trainer_config(write_yaml(tmp_path / "s.yaml", "B:\n  trainer: sac\n")).for_behavior("B")
    assert not unsupported_features(sac)
    assert (sac.batch_size, sac.buffer_size, sac.learning_rate_schedule, sac.steps_per_update) == (
        128, 50000, "constant", 10.0)  # the SAC defaults of ML-Agents' sac_trainer_config.yaml


def test_keys_of_another_trainer_warn(tmp_path):
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", "B:\n  trainer: ppo\n  tau: 0.01\n"))
    assert any("tau" in w and "sac" in w for w in cfg.warnings)


def test_warnings_found_before_an_error_are_still_reported(tmp_path, caplog):
    import logging

    path = write_yaml(tmp_path / "c.yaml", "default:\n  bacth_size: 32\n3DBall:\n  lambd: 7\n")
    logger = logging.getLogger("palaestra")  # the CLI may have stopped it propagating to the root
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level("WARNING", logger="palaestra"), pytest.raises(ConfigError, match="lambd"):
            load_trainer_config(path)
    finally:
        logger.removeHandler(caplog.handler)
    assert "bacth_size" in caplog.text and "'batch_size'" in caplog.text
