"""Real config files of the ML-Agents 0.15/0.16 era load unchanged: through --dry-run where a
built-in environment has the behaviors they name, and through the config API otherwise."""

from __future__ import annotations

import pytest

from palaestra.settings import TRAINER_KEYS, load_trainer_config
from tests.conftest import REPO, SHIPPED_CONFIG

TRAINER_FILES = [
    "mlagents-release2/config/trainer_config.yaml",
    "mlagents-release2/config/sac_trainer_config.yaml",
    "mlagents-release2/config/gail_config.yaml",
    "mlagents-0.15/config/sac_trainer_config.yaml",
    "user-configs/maze_trainer_config.yaml",
    "user-configs/sac_rollerball_config_multi.yaml",
]


@pytest.mark.parametrize("name", TRAINER_FILES)
def test_every_section_of_every_trainer_file_resolves(conformance, name):
    config = load_trainer_config(conformance / name)
    behaviors = config.section_names() or ["AnyBehavior"]
    for behavior in behaviors:
        settings = config.for_behavior(behavior)
        assert settings.trainer in ("ppo", "sac")
        assert settings.reward_signals


def test_release2_values_are_read_as_written(conformance):
    config = load_trainer_config(conformance / "mlagents-release2/config/trainer_config.yaml")
    ball = config.for_behavior("3DBall")
    assert (ball.batch_size, ball.buffer_size, ball.time_horizon, ball.lambd, ball.beta, ball.normalize) == (
        64, 12000, 1000, 0.99, 0.001, True)
    assert config.for_behavior("3DBallHard").reward_signals["extrinsic"].gamma == 0.995
    assert config.for_behavior("BigWallJump").max_steps == 20_000_000  # written 2e7
    pyramids = load_trainer_config(conformance / "mlagents-release2/config/gail_config.yaml").for_behavior("Pyramids")
    assert set(pyramids.reward_signals) == {"extrinsic", "curiosity", "gail"}
    assert pyramids.behavioral_cloning.steps == 150000


def test_015_sac_cadence_is_understood(conformance):
    config = load_trainer_config(conformance / "mlagents-0.15/config/sac_trainer_config.yaml")
    assert config.for_behavior("3DBall").steps_per_update == 1.0
    walker = config.for_behavior("Walker")
    assert walker.train_interval == 2 and walker.steps_per_update == 2.0


def test_legacy_keys_in_user_configs_warn(conformance):
    config = load_trainer_config(conformance / "user-configs/maze_trainer_config.yaml")
    config.for_behavior("Maze")  # (a behavior that reads the default section)
    warned = " ".join(config.warnings)
    for key in ("use_curiosity", "curiosity_strength", "curiosity_enc_size", "'gamma'"):
        assert key in warned


@pytest.mark.parametrize("env", ["3DBall", "3DBallHard", "Basic", "GridWorld", "Pyramids"])
def test_release2_ppo_file_dry_runs_on_builtin_envs(conformance, run_cli, env):
    result = run_cli(str(conformance / "mlagents-release2/config/trainer_config.yaml"), f"--env={env}", "--dry-run")
    assert result.code == 0, result.log
    assert f"{env}:" in result.out and "nothing was trained" in result.out


@pytest.mark.parametrize("name", ["mlagents-release2/config/sac_trainer_config.yaml",
                                  "mlagents-0.15/config/sac_trainer_config.yaml"])
@pytest.mark.parametrize("env", ["3DBall", "Basic"])
def test_sac_files_dry_run_on_builtin_envs(conformance, run_cli, name, env):
    result = run_cli(str(conformance / name), f"--env={env}", "--dry-run")
    assert result.code == 0, result.log
    assert "trainer: sac" in result.out and "steps_per_update" in result.out
    # the legacy keys of sections this environment does not have (Tennis, VisualHallway) are not warned about
    assert "legacy key" not in result.log, result.log


def test_shipped_config_has_a_section_for_every_builtin_env():
    from palaestra.envs.builtin import BUILTIN_ENVS

    config = load_trainer_config(SHIPPED_CONFIG)
    assert not config.warnings
    for cls in BUILTIN_ENVS.values():
        assert config.own_section(cls.behavior_name) is not None, cls.behavior_name  # (Tennis?team=0: Tennis)
    for gym_id in ("CartPole-v1", "Pendulum-v1"):
        assert gym_id in config.sections


def test_configuration_doc_lists_every_key():
    doc = (REPO / "docs" / "configuration.md").read_text()
    missing = [k for k in TRAINER_KEYS if f"`{k}`" not in doc]
    assert not missing
