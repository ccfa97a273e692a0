"""The trainer-config model: defaults, merging, aliases, warnings and errors."""

from __future__ import annotations

import re

import pytest

from palaestra.capabilities import settings_problems
from palaestra.settings import (
    ConfigError,
    ExtrinsicSettings,
    TrainerSettings,
    load_trainer_config,
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


def test_a_misspelt_key_is_refused_naming_file_section_key_and_the_key_meant(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_trainer_config(write_yaml(tmp_path / "c.yaml", "B:\n  bacth_size: 32\n"))
    message = str(error.value)
    assert "c.yaml" in message and "'B'" in message and "bacth_size" in message and "'batch_size'" in message


@pytest.mark.parametrize("key,replacement", [
    ("use_curiosity: true", "reward_signals: curiosity"),
    ("curiosity_strength: 0.1", "curiosity: strength"),
    ("curiosity_enc_size: 64", "curiosity: encoding_size"),
    ("gamma: 0.9", "extrinsic: gamma"),
])
def test_legacy_keys_warn_with_replacement(tmp_path, key, replacement):
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", f"default:\n  {key}\nUnused:\n  {key}\n"))
    assert cfg.warnings == []  # said when a behavior reads the section: a section no behavior reads is ignored
    cfg.for_behavior("B")
    cfg.for_behavior("C")
    assert len(cfg.warnings) == 1 and "legacy" in cfg.warnings[0] and replacement in cfg.warnings[0]
    assert "section 'default'" in cfg.warnings[0]
    cfg.for_behavior("Unused")
    assert len(cfg.warnings) == 2 and "section 'Unused'" in cfg.warnings[1]


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


def test_a_unity_behavior_with_a_team_takes_the_section_of_its_name(tmp_path):
    # as ML-Agents: 'Striker?team=0' is trained with the section 'Striker'; its own name wins
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", "Striker:\n  batch_size: 32\n  buffer_size: 64\n"
                                                          "Goalie?team=1:\n  batch_size: 16\n  buffer_size: 64\n"))
    assert cfg.for_behavior("Striker?team=0").batch_size == 32
    assert cfg.for_behavior("Goalie?team=1").batch_size == 16
    assert not cfg.has_settings_for("Goalie?team=0") and not cfg.has_settings_for("Other?team=0")


def test_both_sac_cadence_spellings_read_steps_per_update_as_ml_agents_0_16_did(tmp_path):
    # real users' files set both; ML-Agents 0.16 read steps_per_update and ignored the 0.15 keys
    path = write_yaml(tmp_path / "c.yaml", "B:\n  trainer: sac\n  steps_per_update: 10\n  num_update: 3\n"
                                           "  train_interval: 2\n")
    config = load_trainer_config(path)
    assert config.for_behavior("B").steps_per_update == 10
    assert any("steps_per_update is read and train_interval and num_update ignored" in w for w in config.warnings)


def test_both_cadence_spellings_in_a_section_without_a_trainer_follow_the_behavior_s_trainer(tmp_path):
    # the section names no trainer: under PPO (the default) each key is one PPO does not read, and
    # under a SAC behavior reading it, steps_per_update is read and the 0.15 keys are not
    cadence = "default:\n  train_interval: 4\n  num_update: 2\n  steps_per_update: 3\n"
    ppo = load_trainer_config(write_yaml(tmp_path / "p.yaml", cadence))
    ppo.for_behavior("B")
    assert not any("sets both" in w or "both set" in w for w in ppo.warnings)
    assert [key for key in ("train_interval", "num_update", "steps_per_update")
            if any(f"key '{key}': only read by sac" in w for w in ppo.warnings)] == \
        ["train_interval", "num_update", "steps_per_update"]
    sac = load_trainer_config(write_yaml(tmp_path / "s.yaml", cadence + "B:\n  trainer: sac\n"))
    assert sac.for_behavior("B").steps_per_update == 3
    assert any("steps_per_update (section 'default', 0.16) and train_interval/num_update (section 'default', 0.15) "
               "both set" in w for w in sac.warnings)
    # an ignored 0.15 key is not checked, whichever section names the trainer (as with trainer: sac beside it)
    inherited = load_trainer_config(write_yaml(tmp_path / "i.yaml", "default:\n  trainer: sac\n"
                                               "B:\n  steps_per_update: 10\n  train_interval: 0\n"))
    assert inherited.for_behavior("B").steps_per_update == 10


def test_keys_of_the_behavioral_cloning_trainers_are_not_reported_as_ignored(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", "B:\n  trainer: offline_bc\n  batch_size: 64\n  max_steps: 100\n"
                                           "  hidden_units: 64\n  num_layers: 2\n  learning_rate: 3.0e-4\n"
                                           "  summary_freq: 1000\n  demo_path: x.demo\n  batches_per_epoch: 10\n")
    assert load_trainer_config(path).warnings == []
    path = write_yaml(tmp_path / "d.yaml", "B:\n  trainer: offline_bc\n  lambd: 0.9\n")
    assert any("only read by ppo" in w for w in load_trainer_config(path).warnings)  # a PPO key still is


@pytest.mark.parametrize("text,message", [
    ("B:\n  pretraining:\n    demo_path: x.demo\n", "key 'pretraining': the old name of behavioral_cloning"),
    ("B:\n  trainer: imitation\n", "trainer 'imitation' is the old name of online_bc"),
])
def test_old_names_of_current_features_get_a_rename_hint(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_trainer_config(write_yaml(tmp_path / "c.yaml", text))


def test_an_unknown_key_like_no_known_one_is_a_warning(tmp_path):
    warnings = load_trainer_config(write_yaml(tmp_path / "c.yaml", "B:\n  mass: 3\n")).warnings
    assert len(warnings) == 1 and "'mass': unknown key, ignored" in warnings[0] and "did you mean" not in warnings[0]


@pytest.mark.parametrize("text,key,meant", [
    ("B:\n  lamda: 0.9\n", "lamda", "lambd"),
    ("default:\n  hiden_units: 8\n", "hiden_units", "hidden_units"),
    ("B:\n  BATCH_SIZE: 3\n", "BATCH_SIZE", "batch_size"),  # case aside, the same key
    ("B:\n  reward_signals:\n    curiosity:\n      strenght: 0.1\n", "reward_signals.curiosity.strenght",
     "strength"),
    ("B:\n  behavioral_cloning:\n    demo_path: x.demo\n    stenght: 0.5\n", "behavioral_cloning.stenght",
     "strength"),
])
def test_a_typo_of_a_key_is_an_error_naming_the_key_it_looks_like(tmp_path, text, key, meant):
    with pytest.raises(ConfigError, match=rf"key '{re.escape(key)}': unknown key; did you mean '{meant}'\? "
                                          rf"\(as written, {meant} would stay at its default"):
        load_trainer_config(write_yaml(tmp_path / "c.yaml", text))


def test_a_users_settings_class_without_key_declarations_is_named(tmp_path, monkeypatch):
    import dataclasses

    from palaestra import settings

    @dataclasses.dataclass(frozen=True)
    class NoveltySettings:  # fields declared plainly, not with _key(default, check, doc)
        strength: float = 0.01

    monkeypatch.setitem(settings.REWARD_SIGNALS, "novelty", NoveltySettings)
    text = "B:\n  reward_signals:\n    novelty:\n      strength: 0.1\n"
    with pytest.raises(ConfigError, match=r"the settings class NoveltySettings declares 'strength' without _key"):
        load_trainer_config(write_yaml(tmp_path / "c.yaml", text))


@pytest.mark.parametrize("signal", ["curiosity", "gail", "extrinsic", "rnd"])
def test_a_reward_signal_written_in_the_section_itself_is_an_error_that_says_where_it_goes(tmp_path, signal):
    text = f"B:\n  batch_size: 64\n  {signal}:\n    strength: 0.02\n    gamma: 0.99\n"
    with pytest.raises(ConfigError, match=rf"key '{signal}': a reward signal belongs under reward_signals"):
        load_trainer_config(write_yaml(tmp_path / "c.yaml", text))


@pytest.mark.parametrize("key,hint", [
    ("strength", "it belongs under reward_signals: extrinsic: or reward_signals: curiosity: or reward_signals: gail: "
                 "or reward_signals: rnd: or behavioral_cloning:"),
    ("encoding_size", "it belongs under reward_signals: curiosity: or reward_signals: gail: or reward_signals: rnd:"),
    ("use_vail", "it belongs under reward_signals: gail:)"),
    ("keep_checkpoints", "this format sets it for the run with --keep-checkpoints"),
    ("checkpoint_interval", "this format sets it for the run with --save-freq"),
])
def test_misplaced_keys_are_warned_about_with_where_they_go(tmp_path, key, hint):
    warnings = load_trainer_config(write_yaml(tmp_path / "c.yaml", f"B:\n  {key}: 5\n")).warnings
    assert len(warnings) == 1 and f"'{key}': unknown key, ignored" in warnings[0] and hint in warnings[0], warnings


@pytest.mark.parametrize("name,text,message", [
    ("later.yaml", "behaviors:\n  3DBall:\n    trainer_type: ppo\n", "ML-Agents' later format (top-level behaviors)"),
    ("sampler.yaml", "resampling-interval: 5000\nmass:\n  sampler-type: uniform\n  min_value: 1\n  max_value: 2\n",
     "a parameter-sampler file"),
    ("curriculum.yaml", "BigWallJump:\n  measure: progress\n  thresholds: [0.1]\n  min_lesson_length: 100\n"
                        "  parameters:\n    height: [1.0, 2.0]\n", "a curriculum file"),
])
def test_a_file_of_another_kind_is_named_for_what_it_is(tmp_path, name, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_trainer_config(write_yaml(tmp_path / name, text))


@pytest.mark.parametrize("text,message", [
    ("B:\n  use_recurrent: true\n  network_settings: {vis_encode_type: nature_cnn, memory: {memory_size: 64}}\n",
     "key 'network_settings': a group of ML-Agents' later config layout (release 1 on). This format (0.15/0.16) "
     "writes those settings flat in the behavior's section (here: vis_encode_type: nature_cnn, use_recurrent: true, "
     "memory_size: 64)"),
    ("B:\n  hyperparameters:\n    batch_size: 32\n", "key 'hyperparameters': a group of ML-Agents' later config "
     "layout (release 1 on). This format (0.15/0.16) writes those settings flat in the behavior's section (here: "
     "batch_size: 32)"),
    ("default:\n  memory: {sequence_length: 16}\nB: {}\n", "section 'default', key 'memory': a group of ML-Agents' "
     "later config layout"),
    ("B:\n  trainer_type: sac\n", "key 'trainer_type': ML-Agents' later name of 'trainer'; this format reads "
     "`trainer: sac`"),
    # a later release's own setting is not offered as a flat key, which would only be warned unknown
    ("B:\n  hyperparameters: {learning_rate: 0.001, beta_schedule: linear}\n", "(here: learning_rate: 0.001); "
     "beta_schedule has no 0.15/0.16 setting and cannot be given; see docs/configuration.md"),
])
def test_a_section_in_ml_agents_later_layout_is_refused_with_its_settings_written_flat(tmp_path, text, message):
    # ignored with a warning, a later-layout group would train another network than asked for
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_trainer_config(write_yaml(tmp_path / "c.yaml", text)).for_behavior("B")


def test_recurrent_settings_that_cannot_do_what_they_say_are_warned_about(tmp_path):
    config = load_trainer_config(write_yaml(tmp_path / "c.yaml", (
        "B:\n  use_recurrent: true\n  sequence_length: 32\n  time_horizon: 4\n  batch_size: 64\n"
        "C:\n  lstm_placement: before_layers\n"
        "D:\n  use_recurrent: true\n  sequence_length: 16\n  time_horizon: 16\n  lstm_placement: before_layers\n")))
    for behavior in "BCD":
        config.for_behavior(behavior)
    assert len(config.warnings) == 2
    assert ("behavior 'B': sequence_length 32 (set in section 'B') is longer than time_horizon 4 (set in section 'B')"
            in config.warnings[0] and "set sequence_length to at most time_horizon" in config.warnings[0])
    assert ("behavior 'C': lstm_placement (set in section 'C') is read only with use_recurrent: true, which is not "
            "set" in config.warnings[1])


def test_a_run_that_would_end_before_its_first_update_or_summary_is_warned_about(tmp_path):
    # it would train nothing and export the untrained policy, exit 0, and show no reward
    config = load_trainer_config(write_yaml(tmp_path / "c.yaml", (
        "default:\n  max_steps: 300\n"
        "P:\n  trainer: ppo\n  buffer_size: 300\n  batch_size: 100\n  summary_freq: 100\n"
        "S:\n  trainer: sac\n  buffer_init_steps: 1000\n  summary_freq: 100\n"
        "Fine:\n  buffer_size: 256\n  batch_size: 64\n  summary_freq: 300\n")))
    for behavior in ("P", "S", "Fine"):
        config.for_behavior(behavior)
    assert len(config.warnings) == 2, config.warnings
    assert ("behavior 'P': max_steps 300 (set in section 'default') is not above buffer_size 300 (set in section "
            "'P'): PPO updates once it holds more than buffer_size experiences" in config.warnings[0])
    assert "behavior 'S': max_steps 300 (set in section 'default') is below buffer_init_steps 1000" in config.warnings[1]
    config = load_trainer_config(write_yaml(tmp_path / "d.yaml", "B:\n  max_steps: 20000\n  buffer_size: 1024\n"))
    config.for_behavior("B")
    assert config.warnings == []
    # SAC's first update also waits for steps_per_update steps past buffer_init_steps
    config = load_trainer_config(write_yaml(tmp_path / "e.yaml", (
        "default:\n  trainer: sac\n  batch_size: 64\n  buffer_init_steps: 1000\n  summary_freq: 500\n"
        "Late:\n  steps_per_update: 2000\n  max_steps: 2500\n"
        "Soon:\n  steps_per_update: 1000\n  max_steps: 2500\n")))
    config.for_behavior("Late")
    config.for_behavior("Soon")
    assert [w.split(": ", 1)[1] for w in config.warnings] == [
        "behavior 'Late': max_steps 2500 (set in section 'Late') is below buffer_init_steps 1000 (set in section "
        "'default') + steps_per_update 2000 (set in section 'Late'): SAC's updates start there, so the run ends "
        "before its first update and exports the untrained policy"]
    config = load_trainer_config(write_yaml(tmp_path / "e.yaml", "B:\n  max_steps: 5000\n  buffer_size: 1024\n"))
    config.for_behavior("B")
    assert len(config.warnings) == 1 and "is below summary_freq 10000: the run ends before its first summary" in \
        config.warnings[0]
    # --inference trains nothing: no update is missed (its summaries are still said to be missing)
    config = load_trainer_config(tmp_path / "c.yaml")
    config.training = False
    for behavior in ("P", "S", "Fine"):
        config.for_behavior(behavior)
    assert config.warnings == []
    config = load_trainer_config(tmp_path / "e.yaml")
    config.training = False
    config.for_behavior("B")
    assert len(config.warnings) == 1 and "the run ends before its first summary" in config.warnings[0]


def test_an_odd_memory_size_names_where_it_was_set_and_what_to_use(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", "default:\n  memory_size: 15\nB:\n  use_recurrent: true\n  batch_size: 128\n")
    with pytest.raises(ConfigError, match=re.escape("memory_size (set in section 'default') must be even with "
                                                    "use_recurrent") + ".*got 15; use 14 or 16"):
        load_trainer_config(path).for_behavior("B")


@pytest.mark.parametrize("text,steps,signal_steps", [
    # 0.16 read the signals' cadence under reward_signals (its SAC docs); later releases beside the other keys
    ("  steps_per_update: 10\n  reward_signals:\n    reward_signal_steps_per_update: 2\n"
     "    extrinsic: {strength: 1.0, gamma: 0.99}\n", 10.0, 2.0),
    ("  steps_per_update: 10\n  reward_signal_steps_per_update: 3\n", 10.0, 3.0),
    # 0.15: reward_signal_num_update signal updates per round of train_interval steps
    ("  train_interval: 4\n  num_update: 2\n  reward_signals:\n    reward_signal_num_update: 4\n"
     "    extrinsic: {strength: 1.0, gamma: 0.99}\n", 2.0, 1.0),
    ("  train_interval: 4\n  num_update: 2\n", 2.0, None),  # unset: steps_per_update's cadence
])
def test_the_signals_cadence_is_read_where_each_release_wrote_it(tmp_path, text, steps, signal_steps):
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", "B:\n  trainer: sac\n" + text))
    settings = cfg.for_behavior("B")
    assert (settings.steps_per_update, settings.reward_signal_steps_per_update) == (steps, signal_steps)
    assert cfg.warnings == [] and list(settings.reward_signals) == ["extrinsic"]


def test_a_behavior_s_reward_signals_replace_the_cadence_written_under_the_default_s(tmp_path):
    # 0.16 reads the cadence from under reward_signals and merges sections shallowly: a behavior
    # with reward_signals of its own loses the default's cadence with the default's mapping
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", (
        "default:\n  trainer: sac\n  steps_per_update: 10\n  reward_signals:\n"
        "    extrinsic: {strength: 1.0, gamma: 0.99}\n    reward_signal_steps_per_update: 40\n"
        "A:\n  reward_signals:\n    extrinsic: {strength: 2.0, gamma: 0.9}\n"
        "B:\n  max_steps: 100\n"
        "C:\n  reward_signals:\n    extrinsic: {strength: 2.0, gamma: 0.9}\n  reward_signal_steps_per_update: 5\n")))
    assert cfg.for_behavior("A").reward_signal_steps_per_update is None  # steps_per_update's cadence, as 0.16
    assert cfg.for_behavior("B").reward_signal_steps_per_update == 40.0  # the default's mapping, cadence and all
    assert cfg.for_behavior("C").reward_signal_steps_per_update == 5.0


def test_the_signals_cadence_in_two_places_or_two_releases_spellings(tmp_path):
    both = write_yaml(tmp_path / "c.yaml", "B:\n  trainer: sac\n  reward_signal_steps_per_update: 3\n"
                                           "  reward_signals:\n    reward_signal_steps_per_update: 2\n")
    with pytest.raises(ConfigError, match=r"reward_signal_steps_per_update'.*set to 3 and, under reward_signals, to 2"):
        load_trainer_config(both).for_behavior("B")
    # a 0.16 file (steps_per_update) with the signals' 0.15 key: 0.16 did not read it
    mixed = load_trainer_config(write_yaml(tmp_path / "m.yaml", "B:\n  trainer: sac\n  steps_per_update: 10\n"
                                                                "  reward_signals:\n    reward_signal_num_update: 4\n"))
    assert mixed.for_behavior("B").reward_signal_steps_per_update is None
    assert any("reward_signal_num_update (0.15) is not read beside steps_per_update" in w for w in mixed.warnings)


def test_a_016_cadence_in_the_default_section_beats_a_015_one_in_the_behaviors_and_says_so(tmp_path):
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", "default:\n  trainer: sac\n  steps_per_update: 10\n"
                                                              "B:\n  train_interval: 2\n"))
    assert cfg.for_behavior("B").steps_per_update == 10  # as ML-Agents 0.16, which never read train_interval
    assert any("steps_per_update (section 'default', 0.16) and train_interval (section 'B', 0.15)" in w
               for w in cfg.warnings)


def test_sac_015_cadence_converts_to_steps_per_update(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", "B:\n  trainer: sac\n  num_update: 2\n  train_interval: 4\n")
    assert load_trainer_config(path).for_behavior("B").steps_per_update == 2.0


def test_batch_larger_than_buffer_is_an_error(tmp_path):
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", "B:\n  batch_size: 512\n  buffer_size: 256\n"))
    with pytest.raises(ConfigError, match=r"batch_size \(512\) is larger than buffer_size \(256\)"):
        cfg.for_behavior("B")


def test_reward_signal_num_epoch_is_at_most_num_epoch_and_ppo_only(tmp_path):
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", "B:\n  num_epoch: 3\n  reward_signal_num_epoch: 4\n"))
    with pytest.raises(ConfigError, match=r"reward_signal_num_epoch \(4\) is more than num_epoch \(3\)"):
        cfg.for_behavior("B")
    cfg = load_trainer_config(write_yaml(tmp_path / "d.yaml", "B:\n  num_epoch: 20\n  reward_signal_num_epoch: 4\n"))
    assert cfg.for_behavior("B").reward_signal_num_epoch == 4
    cfg = load_trainer_config(write_yaml(tmp_path / "e.yaml", "B:\n  trainer: sac\n  reward_signal_num_epoch: 2\n"))
    assert any("'reward_signal_num_epoch': only read by ppo; trainer sac ignores it" in w for w in cfg.warnings)


def test_reward_signal_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown reward signal.*'curiosity'"):
        load_trainer_config(write_yaml(tmp_path / "a.yaml", "B:\n  reward_signals:\n    curiousity: {strength: 1}\n"))
    with pytest.raises(ConfigError, match="missing required setting.*demo_path"):
        load_trainer_config(write_yaml(tmp_path / "b.yaml", "B:\n  reward_signals:\n    gail: {strength: 1}\n"))
    with pytest.raises(ConfigError, match="reward_signals.extrinsic.gamma.*a number in \\[0, 1\\]"):
        load_trainer_config(write_yaml(tmp_path / "c.yaml", "B:\n  reward_signals:\n    extrinsic: {gamma: 2}\n"))
    with pytest.raises(ConfigError, match="'reward_signals': expected at least one signal .*got \\{\\}"):
        load_trainer_config(write_yaml(tmp_path / "d.yaml", "B:\n  reward_signals: {}\n"))


def test_the_behavioral_cloning_trainers_need_their_demonstrations_or_teacher(tmp_path):
    for trainer, key in (("offline_bc", "demo_path"), ("online_bc", "brain_to_imitate")):
        cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", f"B:\n  trainer: {trainer}\n"))
        assert settings_problems(cfg.for_behavior("B")) == [
            f"trainer {trainer!r} needs {key}: " + ("a .demo file or a folder of them" if key == "demo_path"
                                                    else "heuristic, a model .onnx, package.module:function or another "
                                                         "behavior's name")]
        cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", f"B:\n  trainer: {trainer}\n  {key}: x\n"))
        assert settings_problems(cfg.for_behavior("B")) == []
    sac = load_trainer_config(write_yaml(tmp_path / "s.yaml", "B:\n  trainer: sac\n")).for_behavior("B")
    assert not settings_problems(sac)
    assert (sac.batch_size, sac.buffer_size, sac.learning_rate_schedule, sac.steps_per_update) == (
        128, 50000, "constant", 10.0)  # the SAC defaults of ML-Agents' sac_trainer_config.yaml


def test_keys_of_another_trainer_warn(tmp_path):
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", "B:\n  trainer: ppo\n  tau: 0.01\n"))
    assert any("tau" in w and "sac" in w for w in cfg.warnings)


def test_keys_of_another_trainer_warn_where_no_section_names_the_trainer(tmp_path):
    # SAC's keys with no trainer: anywhere train PPO (the default): said when the behavior resolves
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", "Basic:\n  batch_size: 64\n  tau: 0.01\n"
                                                              "  buffer_init_steps: 1000\n"))
    assert cfg.warnings == [] and cfg.for_behavior("Basic").trainer == "ppo"
    assert [w.split(": only")[0].rsplit(" ", 1)[-1] for w in cfg.warnings] == ["'tau'", "'buffer_init_steps'"]
    assert all("behavior 'Basic' trains with ppo (the default: no section names a trainer; add trainer: to the "
               "section to choose another)" in w for w in cfg.warnings)
    cfg.for_behavior("Basic")
    assert len(cfg.warnings) == 2  # once per file, not per resolution
    # a default written for PPO under a behavior that switches to SAC is normal: not warned
    cfg = load_trainer_config(write_yaml(tmp_path / "d.yaml", "default:\n  lambd: 0.95\n  beta: 0.01\n"
                                                              "B:\n  trainer: sac\n"))
    cfg.for_behavior("B")
    assert cfg.warnings == []
    # a trainer named by the default section, a key of another in the behavior's: said where it came from
    cfg = load_trainer_config(write_yaml(tmp_path / "f.yaml", "default:\n  trainer: sac\nB:\n  num_epoch: 3\n"))
    cfg.for_behavior("B")
    assert len(cfg.warnings) == 1 and "behavior 'B' trains with sac (named by section 'default';" in cfg.warnings[0]
    # a default without a trainer, read by a behavior without one: its keys are
    cfg = load_trainer_config(write_yaml(tmp_path / "e.yaml", "default:\n  tau: 0.01\nB:\n  hidden_units: 8\n"))
    cfg.for_behavior("B")
    assert len(cfg.warnings) == 1 and "section 'default', key 'tau'" in cfg.warnings[0]


def test_a_section_named_nearly_as_a_behavior_without_its_own_is_warned_about(tmp_path):
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", "default:\n  hidden_units: 32\n3dball:\n"
                                                              "  hidden_units: 64\nWalker:\n  hidden_units: 8\n"))
    cfg.warn_misspelt_sections(["3DBall"])
    assert cfg.warnings == [f"{tmp_path / 'c.yaml'}: section '3dball' is not a behavior of this environment (did "
                            "you mean '3DBall'?); '3DBall' trains with section 'default'"]  # Walker: another env's
    cfg = load_trainer_config(write_yaml(tmp_path / "d.yaml", "Default:\n  hidden_units: 32\n"))
    cfg.warn_misspelt_sections(["3DBall"])
    assert "section 'Default' is not a behavior of this environment (did you mean 'default'?)" in cfg.warnings[0]
    cfg = load_trainer_config(write_yaml(tmp_path / "t.yaml", "Goali:\n  hidden_units: 8\n"))
    cfg.warn_misspelt_sections(["Goalie?team=0", "Goalie?team=1"])  # compared without the team
    assert len(cfg.warnings) == 1 and "(did you mean 'Goalie'?); 'Goalie' has no settings" in cfg.warnings[0]
    cfg = load_trainer_config(write_yaml(tmp_path / "e.yaml", "default: {}\n3DBall: {}\n3DBallHard: {}\n"))
    cfg.warn_misspelt_sections(["3DBall"])  # the behavior has its own section: the others are other envs'
    assert cfg.warnings == []


def test_sac_with_a_replay_buffer_smaller_than_a_batch_is_refused(tmp_path):
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", "B:\n  trainer: sac\n  buffer_size: 10\n"
                                                              "  batch_size: 64\n"))
    with pytest.raises(ConfigError, match=r"batch_size \(64\) is larger than buffer_size \(10\); SAC's replay "
                                          "buffer would never hold a mini-batch"):
        cfg.for_behavior("B")


def test_ppo_given_both_sac_cadence_spellings_warns_about_each_not_about_which_wins(tmp_path):
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", "B:\n  trainer: ppo\n  steps_per_update: 5\n"
                                                              "  train_interval: 2\n"))
    assert len(cfg.warnings) == 2 and all("only read by sac" in w for w in cfg.warnings)
    assert not any("is read and" in w for w in cfg.warnings)


def test_warnings_found_before_an_error_are_still_reported(tmp_path, caplog):
    import logging

    path = write_yaml(tmp_path / "c.yaml", "default:\n  mass: 32\n3DBall:\n  lambd: 7\n")
    logger = logging.getLogger("palaestra")  # the CLI may have stopped it propagating to the root
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level("WARNING", logger="palaestra"), pytest.raises(ConfigError, match="lambd"):
            load_trainer_config(path)
    finally:
        logger.removeHandler(caplog.handler)
    assert "key 'mass': unknown key, ignored" in caplog.text


# ----------------------------------------------------------------------------------------
# Broken files: every one ends in a ConfigError that says where and what was expected
# ----------------------------------------------------------------------------------------
def _error(path) -> str:
    with pytest.raises(ConfigError) as err:
        load_trainer_config(path).for_behavior("B")
    return str(err.value)


def _fields_checked_by(kind: str):
    """(section text, key label) for every key whose check expects ``kind`` ('an integer' or 'a number')."""
    import dataclasses

    from palaestra.settings import (
        REQUIRED_SUBKEYS,
        REWARD_SIGNALS,
        TRAINER_KEYS,
        BehavioralCloningSettings,
        SelfPlaySettings,
    )

    def expects(f):
        return getattr(f.metadata["check"], "expected", "").startswith(kind)

    def body(cls, name, indent):  # the subsection's required keys (so that they are not the error), then name
        required = {"demo_path": "d.demo", "strength": 0.5, "steps": 0}
        lines = [f"{k}: {v}" for k, v in required.items() if k in REQUIRED_SUBKEYS.get(cls, ()) and k != name]
        return "".join(f"{indent}{line}\n" for line in lines + [f"{name}: VALUE"])

    found = [(f"B:\n  {name}: VALUE\n", name) for name, f in TRAINER_KEYS.items() if expects(f)]
    for key, cls in (("behavioral_cloning", BehavioralCloningSettings), ("self_play", SelfPlaySettings)):
        found += [(f"B:\n  {key}:\n" + body(cls, f.name, "    "), f"{key}.{f.name}")
                  for f in dataclasses.fields(cls) if expects(f)]
    for signal, cls in REWARD_SIGNALS.items():
        found += [(f"B:\n  reward_signals:\n    {signal}:\n" + body(cls, f.name, "      "),
                   f"reward_signals.{signal}.{f.name}") for f in dataclasses.fields(cls) if expects(f)]
    return found


INTEGER_KEYS = _fields_checked_by("an integer")
REAL_KEYS = _fields_checked_by("a number")


def test_the_key_lists_cover_every_trainer_level_number():
    assert {"batch_size", "max_steps", "self_play.window", "reward_signals.curiosity.encoding_size"} <= {
        k for _, k in INTEGER_KEYS}
    assert {"learning_rate", "beta", "steps_per_update", "reward_signals.extrinsic.strength",
            "self_play.initial_elo"} <= {k for _, k in REAL_KEYS}


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e400", "1" * 400, "1" * 5000, "5e400", "1e20"])
@pytest.mark.parametrize("section,key", INTEGER_KEYS, ids=[k for _, k in INTEGER_KEYS])
def test_integer_keys_reject_non_finite_and_huge_numbers(tmp_path, section, key, value):
    message = _error(write_yaml(tmp_path / "c.yaml", section.replace("VALUE", value)))
    assert f"c.yaml: section 'B', key '{key}': expected an integer" in message
    assert "cannot convert" not in message and "float" not in message
    assert len(message) < 300


@pytest.mark.parametrize("value,shown", [(".inf", "inf"), ("-.inf", "-inf"), (".nan", "nan"), ("-inf", "-inf"),
                                         ("NaN", "NaN"),  # the last two are strings to YAML, numbers to float()
                                         ("1e400", "1e400"), ("1" * 400, "400 digits")])
@pytest.mark.parametrize("section,key", REAL_KEYS, ids=[k for _, k in REAL_KEYS])
def test_real_keys_reject_non_finite_numbers(tmp_path, section, key, value, shown):
    message = _error(write_yaml(tmp_path / "c.yaml", section.replace("VALUE", value)))
    assert f"c.yaml: section 'B', key '{key}': expected a finite number" in message
    assert shown in message and len(message) < 300


def test_nan_in_an_integer_key_reads_cleanly(tmp_path):
    message = _error(write_yaml(tmp_path / "c.yaml", "B:\n  batch_size: .nan\n"))
    assert message == f"{tmp_path / 'c.yaml'}: section 'B', key 'batch_size': expected an integer >= 1, got nan"


def test_integers_past_two_to_the_53_are_refused_with_the_limit(tmp_path):
    message = _error(write_yaml(tmp_path / "c.yaml", f"B:\n  max_steps: {2**53 + 1}\n"))
    assert "at most 2**53" in message
    assert load_trainer_config(write_yaml(tmp_path / "ok.yaml", f"B:\n  max_steps: {2**53}\n")).for_behavior(
        "B").max_steps == 2**53


@pytest.mark.parametrize("text,expected", [
    ("x: &x foo\ndefault: *x\nB: {}\n", "section 'default' names section 'foo', which does not exist"),
    ("default: 3\nB: {}\n", "section 'default' should be a mapping of settings (or the name of another section), "
                            "got int 3"),
    ("default: [1, 2]\n", "section 'default' should be a mapping"),
    ("default: default\n", "section 'default' names section 'default', which is part of a loop"),
    ("B: true\n", "section 'B' should be a mapping of settings"),
    ("B: 2.5\n", "got float 2.5"),
])
def test_default_and_behavior_sections_that_are_not_mappings(tmp_path, text, expected):
    assert expected in _error(write_yaml(tmp_path / "c.yaml", text))


def test_default_may_name_another_section(tmp_path):
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", "base:\n  batch_size: 32\ndefault: base\nB: {}\n"))
    assert cfg.for_behavior("B").batch_size == 32


def test_a_hand_built_config_with_a_non_mapping_section_is_a_config_error(tmp_path):
    from palaestra.settings import TrainerConfig

    for sections in ({"default": [1]}, {"B": 3}, {"default": "x", "x": 4.5}):
        with pytest.raises(ConfigError, match="should be a mapping"):
            TrainerConfig(tmp_path / "c.yaml", sections).for_behavior("B")


def _alias_bomb(levels: int = 9) -> str:
    """The 'billion laughs': each list holds nine aliases of the one before, 9**levels leaves."""
    lines = ["  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("key", ["max_steps", "learning_rate", "normalize", "trainer", "reward_signals",
                                 "self_play", "init_path"])
def test_an_alias_bomb_is_quoted_briefly_not_walked(tmp_path, key):
    import time

    path = write_yaml(tmp_path / "c.yaml", "B:\n" + _alias_bomb() + f"  {key}: *l9\n")
    start = time.monotonic()
    message = _error(path)
    assert time.monotonic() - start < 2
    assert f"key '{key}'" in message and "[[[" in message and message.endswith("…") and len(message) < 300


def test_an_alias_bomb_as_a_section_or_a_key_is_refused_quickly(tmp_path):
    bomb = "default:\n" + _alias_bomb()
    assert "section 'l0' should be a mapping" in _error(write_yaml(tmp_path / "a.yaml", bomb.replace("default:\n  ", "").replace("\n  ", "\n")))
    message = _error(write_yaml(tmp_path / "b.yaml", bomb + "  ? *l9\n  : 1\n"))
    assert "a list used as a key" in message and "line 11" in message  # where the anchored list is


def test_a_list_that_contains_itself_is_quoted(tmp_path):
    message = _error(write_yaml(tmp_path / "c.yaml", "B:\n  max_steps: &a [1, *a]\n"))
    assert "key 'max_steps'" in message and "[1, [1, " in message and len(message) < 300


def test_groups_and_values_that_hold_themselves_are_refused_without_a_recursion_error(tmp_path):
    # both went down the alias loop until Python's recursion limit, with a traceback
    message = _error(write_yaml(tmp_path / "a.yaml", "default:\n  network_settings: &a\n    hidden_units: 64\n"
                                                      "    memory: *a\n"))
    assert "key 'network_settings': a group of ML-Agents' later config layout" in message
    assert "(here: hidden_units: 64, use_recurrent: true)" in message
    message = _error(write_yaml(tmp_path / "b.yaml", "default:\n  trainer: sac\n  reward_signals:\n"
                                                      "    reward_signal_steps_per_update: &x [*x]\n"
                                                      "  reward_signal_steps_per_update: &y [*y]\n"))
    assert "key 'reward_signal_steps_per_update': set to [[" in message and "keep one" in message


def test_long_keys_and_values_are_cut_in_messages_and_warnings(tmp_path):
    long_key = "k" * 1000  # YAML allows at most 1024 characters in a plain key
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", f"B:\n  {long_key}: 1\n"))
    assert len(cfg.warnings) == 1 and len(cfg.warnings[0]) < 300
    message = _error(write_yaml(tmp_path / "t.yaml", f"B:\n  {long_key}: 1\n  bacth_size: 32\n"))
    assert "did you mean 'batch_size'" in message  # ordinary typos are still recognized beside it
    message = _error(write_yaml(tmp_path / "d.yaml", f"B:\n  trainer: {'x' * 10_000}\n"))
    assert "key 'trainer'" in message and "one of ppo" in message and len(message) < 300
    message = _error(write_yaml(tmp_path / "e.yaml", f"{long_key}: 3\n"))
    assert "should be a mapping" in message and len(message) < 300


def test_thousands_of_unknown_keys_give_a_bounded_list_of_warnings(tmp_path):
    from palaestra.settings import MAX_WARNINGS

    body = "".join(f"  key{i}: {i}\n" for i in range(3 * MAX_WARNINGS))
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", "B:\n" + body))
    assert len(cfg.warnings) == MAX_WARNINGS + 1 and "left out" in cfg.warnings[-1]


# ---- the file itself -------------------------------------------------------------------
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    import os

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ConfigError, match="not a regular file"):
        load_trainer_config(tmp_path / "pipe")


def test_a_device_is_refused(tmp_path):
    from pathlib import Path

    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero on this platform")
    with pytest.raises(ConfigError, match="not a regular file"):
        load_trainer_config("/dev/zero")


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path):
    from palaestra.settings import MAX_CONFIG_BYTES

    path = tmp_path / "big.yaml"
    with open(path, "wb") as fh:  # sparse: 50 MB on paper
        fh.truncate(50_000_000)
    with pytest.raises(ConfigError, match=r"larger than 1 MiB, the most a trainer config may be"):
        load_trainer_config(path)
    path.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 - 1) + "B: {}\n")  # just under the limit loads
    assert load_trainer_config(path).for_behavior("B").batch_size == 1024


def test_a_folder_a_missing_file_and_a_path_that_cannot_be_opened(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_trainer_config(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_trainer_config(tmp_path / "missing" / "c.yaml")
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_trainer_config(str(tmp_path / "c\0.yaml"))
    path = write_yaml(tmp_path / "c.yaml", "B: {}\n")
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_trainer_config(path / "below")  # a file used as a folder


def test_an_unreadable_file(tmp_path):
    import os

    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root reads files whatever their permissions (the next test covers it)")
    path = write_yaml(tmp_path / "c.yaml", "B: {}\n")
    path.chmod(0)
    try:
        with pytest.raises(ConfigError, match="cannot read the file: Permission denied"):
            load_trainer_config(path)
    finally:
        path.chmod(0o644)


def test_permission_denied_is_a_config_error_even_where_tests_run_as_root(tmp_path, monkeypatch):
    import errno
    import os

    import palaestra.settings

    path = write_yaml(tmp_path / "c.yaml", "B: {}\n")

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(palaestra.settings.os, "open", refuse)
    with pytest.raises(ConfigError, match="c.yaml: cannot read the file: Permission denied$"):
        load_trainer_config(path)


@pytest.mark.parametrize("data,expected", [
    (b"", "the file is empty"),
    (b"# only a comment\n", "the file is empty"),
    (b"B:\n  x: caf\xe9\n", r"not a text file in UTF-8: byte 0xe9 at line 2"),
    (b"\x7fELF\x02\x01\x01\x00\x00\x00", r"not a YAML text file: character U\+007F at line 1, column 1"),
    (b"B:\n  batch_size: 3\x002\n", r"not a YAML text file: character U\+0000 at line 2, column 16"),
    (bytes(range(256)) * 4, "not a text file in UTF-8"),
    (b"\xff\xfe" + "B: [".encode("utf-16-le"), "YAML syntax error"),
    (b"42\n", "expected a mapping of section names .* got int 42"),
    (b"just some words\n", "got str 'just some words'"),
    (b"- a\n- b\n", "got list \\['a', 'b'\\]"),
    (b"B: {}\n---\nC: {}\n", "expected a single document"),
    (b"B: " + b"[" * 10_000 + b"]" * 10_000 + b"\n", "nested more than 64 levels deep"),
    (b"B: " + b"{a: " * 10_000 + b"1" + b"}" * 10_000 + b"\n", "nested more than 64 levels deep"),
    (b"B:\n  max_steps: *nowhere\n", "found undefined alias 'nowhere'"),
    (b"B:\n  max_steps: !!int abc\n", r"YAML error at line 2, column 14: cannot read 'abc' as !!int"),
    (b"B:\n  normalize: !!bool maybe\n", "cannot read 'maybe' as !!bool"),
    (b"B:\n  max_steps: 2001-13-45\n", "cannot read '2001-13-45' as !!timestamp"),
    (b"B:\n  max_steps: !!python/object:os.system x\n", "could not determine a constructor"),
    (b"? [a, b]\n: 1\n", "a list used as a key"),
    (b"B:\n  ? {a: 1}\n  : 1\n", "a mapping used as a key"),
])
def test_files_that_are_not_trainer_configs(tmp_path, data, expected):
    path = tmp_path / "c.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=expected) as err:
        load_trainer_config(path).for_behavior("B")
    assert str(err.value).startswith(str(path)) and len(str(err.value)) < 400


def test_utf8_bom_and_utf16_files_load(tmp_path):
    text = "B:\n  batch_size: 32\n  buffer_size: 64\n"
    for name, data in (("bom.yaml", b"\xef\xbb\xbf" + text.encode()), ("u16.yaml", text.encode("utf-16"))):
        (tmp_path / name).write_bytes(data)
        assert load_trainer_config(tmp_path / name).for_behavior("B").batch_size == 32


# ---- keys ------------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("B:\n  batch_size: 32\nB:\n  batch_size: 64\n", r"section 'B' is written twice \(lines 1 and 3\)"),
    ("B:\n  batch_size: 32\n  buffer_size: 64\n  batch_size: 16\n",
     r"section 'B', key 'batch_size': written twice \(lines 2 and 4\)"),
    ("B:\n  reward_signals:\n    extrinsic: {gamma: 0.9, gamma: 0.8}\n",
     r"section 'B', key 'reward_signals.extrinsic.gamma': written twice \(lines 3 and 3\)"),
    ("B:\n  self_play:\n    window: 1\n    window: 2\n", r"key 'self_play.window': written twice \(lines 3 and 4\)"),
    ("B:\n  '1': 2\n  1: 3\n", r"key '1': written twice"),
])
def test_duplicate_keys_are_errors_naming_section_key_and_lines(tmp_path, text, expected):
    message = _error(write_yaml(tmp_path / "c.yaml", text))
    assert "c.yaml" in message
    assert __import__("re").search(expected, message), message


def test_merge_keys_may_be_overridden_and_keys_are_read_as_written(tmp_path):
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", """
        base: &base {batch_size: 32, buffer_size: 64}
        B:
          <<: *base
          batch_size: 16
        1: {batch_size: 8, buffer_size: 8}
        yes: base
    """))
    assert (cfg.for_behavior("B").batch_size, cfg.for_behavior("B").buffer_size) == (16, 64)
    assert cfg.for_behavior("1").batch_size == 8  # the section names as written, not 1 and True
    assert cfg.for_behavior("yes").batch_size == 32


def test_the_conformance_files_have_no_duplicate_keys(conformance):
    for path in sorted(conformance.rglob("*.yaml")):
        if "curricula" not in path.parts and "randomize" not in path.name:
            load_trainer_config(path)


# ---- through the command line ------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("B:\n  batch_size: .inf\n", "key 'batch_size': expected an integer >= 1, got inf"),
    ("B:\n  max_steps: 1e400\n", "key 'max_steps': expected an integer >= 0, got '1e400'"),
    ("B:\n  max_steps: " + "9" * 400 + "\n", "key 'max_steps': expected an integer >= 0, at most 2**53"),
    ("B:\n  learning_rate: .inf\n", "key 'learning_rate': expected a finite number > 0, got inf"),
    ("B:\n  adam_epsilon: 1e-46\n", "key 'adam_epsilon': expected a number >= 1e-45, got '1e-46'"),  # 0 in float32
    ("B:\n  beta: .nan\n", "key 'beta': expected a finite number >= 0, got nan"),
    ("x: &x Nowhere\ndefault: *x\n", "section 'default' names section 'Nowhere', which does not exist"),
    ("default:\n" + _alias_bomb() + "  max_steps: *l9\n", "key 'max_steps': expected an integer >= 0, got [[["),
    ("default:\n  batch_size: 32\n  batch_size: 64\n", "key 'batch_size': written twice (lines 2 and 3)"),
])
def test_the_cli_reports_broken_configs_in_one_line_and_exits_1(run_cli, workdir, text, expected):
    (workdir / "c.yaml").write_text(text)
    result = run_cli("c.yaml", "--env=3DBall", "--dry-run")
    assert result.code == 1
    assert expected in result.log and "Traceback" not in result.log


@pytest.mark.parametrize("kind", ["fifo", "alias bomb", "binary"])
def test_the_cli_process_ends_with_a_message_and_no_traceback(tmp_path, kind):
    import os
    import subprocess
    import sys

    path = tmp_path / "c.yaml"
    if kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs on this platform")
        os.mkfifo(path)
        expected = "not a regular file"
    elif kind == "alias bomb":
        path.write_text("default:\n" + _alias_bomb() + "  max_steps: *l9\n")
        expected = "expected an integer >= 0"
    else:
        path.write_bytes(bytes(range(256)) * 64)
        expected = "not a text file in UTF-8"
    proc = subprocess.run([sys.executable, "-m", "palaestra.cli", str(path), "--env=3DBall", "--dry-run"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr


def test_each_trainer_type_has_its_own_settings(tmp_path):
    from palaestra.settings import PPOSettings, SACSettings

    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", "default:\n  tau: 0.01\n  lambd: 0.9\nP: {}\n"
                                                             "S:\n  trainer: sac\n"))
    ppo, sac = cfg.for_behavior("P"), cfg.for_behavior("S")
    assert isinstance(ppo, PPOSettings) and isinstance(sac, SACSettings)
    assert ppo.lambd == 0.9 and sac.tau == 0.01
    assert not hasattr(ppo, "tau") and not hasattr(sac, "lambd")  # the other trainer's keys are left out
    assert "tau" not in ppo.as_dict() and "lambd" not in sac.as_dict()
    # built in Python, TrainerSettings(trainer=...) is that trainer's settings, with its defaults
    assert TrainerSettings(trainer="sac") == SACSettings() and SACSettings().batch_size == 128
    assert TrainerSettings() == PPOSettings()
    with pytest.raises(TypeError):
        TrainerSettings(trainer="ppo", tau=0.1)


def test_the_resolved_settings_resolve_behavioral_clonings_defaults(tmp_path):
    # configuration.yaml and the Hyperparameters summary show what cloning uses, not null
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", "B:\n  batch_size: 256\n  buffer_size: 2048\n"
                                         "  behavioral_cloning:\n    demo_path: x.demo\n    strength: 0.5\n"
                                         "    steps: 0\n"))
    bc = cfg.for_behavior("B").as_dict()["behavioral_cloning"]
    assert bc["batch_size"] == 256 and bc["num_epoch"] == 3


def test_each_value_knows_the_section_it_came_from(tmp_path):
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", """
        default:
          batch_size: 64
          self_play: {window: 5}
        Ball3D:
          batch_size: 32
        Alias: Ball3D
        Sac:
          trainer: sac
          train_interval: 2
    """))
    ball = cfg.for_behavior("Ball3D")
    assert ball.origin("self_play") == "section 'default'"  # inherited
    assert ball.origin("self_play.window") == "section 'default'"  # subsections are merged whole
    assert ball.origin("batch_size") == "section 'Ball3D'"
    assert ball.origin("lambd") == "the default" and ball.origin("trainer") == "the default"
    assert cfg.for_behavior("Alias").origin("batch_size") == "section 'Ball3D'"  # where it is written
    sac = cfg.for_behavior("Sac")
    assert sac.origin("steps_per_update") == "section 'Sac'"  # converted from the 0.15 cadence written there
    assert sac.origin("trainer") == "section 'Sac'" and sac.origin("tau") == "the default"
    with pytest.raises(KeyError, match="trainer ppo has no setting 'tau'"):
        ball.origin("tau")
    assert ball == cfg.for_behavior("Alias")  # where values came from is not part of the settings' value


def test_the_settings_tables_in_the_doc_are_generated_from_the_settings():
    from palaestra.settings_table import COMMAND, DOC, with_current_tables

    doc = DOC.read_text(encoding="utf-8")
    assert with_current_tables(doc) == doc, (
        f"the settings tables in docs/configuration.md differ from palaestra/settings.py; regenerate them "
        f"with `{COMMAND}`")


def test_memory_size_has_an_upper_bound_named_in_the_message(tmp_path):
    # a huge memory used to fail inside torch's allocator, naming the network's units instead
    with pytest.raises(ConfigError, match=r"key 'memory_size': expected an integer .*8192.*got 100000000"):
        load_trainer_config(write_yaml(tmp_path / "c.yaml", "B:\n  use_recurrent: true\n  memory_size: 100000000\n"))


def test_a_demonstration_recording_given_as_the_trainer_config_is_named_so(tmp_path, conformance):
    demo = sorted((conformance / "demos").glob("*.demo"))[0]
    with pytest.raises(ConfigError, match=re.escape(f"{demo}: this is a demonstration recording (.demo), not a "
                                                    "trainer config: name it in a config's demo_path")):
        load_trainer_config(demo)
    text = tmp_path / "notes.demo"  # a .demo that is text is read as YAML (and fails as a config would)
    text.write_text("42\n")
    with pytest.raises(ConfigError, match="expected a mapping of section names"):
        load_trainer_config(text)


def test_the_cloning_trainers_read_the_image_encoder_and_init_path_without_an_ignored_warning(tmp_path):
    # their policy is built with vis_encode_type and starts from init_path (algorithms/cloning.py,
    # run_folders.py), so neither may be called ignored
    for trainer in ("online_bc", "offline_bc"):
        cfg = load_trainer_config(write_yaml(tmp_path / f"{trainer}.yaml", (
            f"B:\n  trainer: {trainer}\n  vis_encode_type: nature_cnn\n  init_path: models/a/B\n")))
        settings = cfg.for_behavior("B")
        assert (settings.vis_encode_type, settings.init_path) == ("nature_cnn", "models/a/B")
        assert not any("vis_encode_type" in w or "init_path" in w for w in cfg.warnings), cfg.warnings


def test_an_ml_agents_online_bc_section_s_time_horizon_is_taken_without_a_warning(tmp_path):
    # ML-Agents' online trainer read time_horizon and its default section holds it (64): every
    # section written its way was warned about; under offline_bc it is still reported
    cfg = load_trainer_config(write_yaml(tmp_path / "on.yaml", (
        "B:\n  trainer: online_bc\n  brain_to_imitate: heuristic\n  batch_size: 64\n  time_horizon: 64\n"
        "  batches_per_epoch: 10\n")))
    cfg.for_behavior("B")
    assert cfg.warnings == []
    cfg = load_trainer_config(write_yaml(tmp_path / "off.yaml", "B:\n  trainer: offline_bc\n  demo_path: x.demo\n"
                                                                 "  time_horizon: 64\n"))
    cfg.for_behavior("B")
    assert any("key 'time_horizon': only read by ppo/sac; trainer offline_bc ignores it" in w for w in cfg.warnings)
