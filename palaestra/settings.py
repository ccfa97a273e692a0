"""Trainer configuration: loading, merging, validation and defaults (the one source of truth).

The file format is ML-Agents 0.15/0.16's: a ``default:`` section plus one section per behavior
name, merged shallowly (a behavior's ``reward_signals`` replaces the default's whole mapping);
a string in place of a section names another section to use. Every key is checked where it is
written: an unknown key spelt nearly as a known one is an error naming the key it looks like
(a typo), one like no known key a warning, a legacy key a warning
naming what replaced it, and a wrong type or out-of-range value an error naming the file, the
section, the key, the value and what was expected.

Each trainer type has its own settings class, as ML-Agents' trainers do: TrainerSettings holds
the keys every trainer reads, PPOSettings and SACSettings add their own (the BC classes those of
ML-Agents' old behavioral-cloning trainers). Each key is declared once, with its check, its
default, what it means and which trainers read it; the defaults are those of ML-Agents' shipped
``default:`` sections (PPO: trainer_config.yaml, SAC: sac_trainer_config.yaml), so a section may
leave out any key, and docs/configuration.md's tables are generated from the declarations
(palaestra/settings_table.py).
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import logging
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from palaestra.networks.constants import ACTIVATIONS, DEFAULT_ACTIVATION, MIN_IMAGE_SIZE
from palaestra.shipped_files import shipped_copy

logger = logging.getLogger("palaestra")

# ``used_by`` of a key read by every trainer in SETTINGS_BY_TRAINER, or by every trainer that learns
# from rewards (its settings class's ``learns_from_rewards``; not the behavioral-cloning trainers):
# resolved against the registry in READ_BY, so a trainer added there is counted in
EVERY_TRAINER = ("<every trainer>",)
EVERY_RL_TRAINER = ("<every trainer that learns from rewards>",)
# Old names of current features: a rename hint rather than "unknown"
RENAMED_KEYS = {"pretraining": "behavioral_cloning"}
RENAMED_TRAINERS = {"imitation": "online_bc (or, for imitation alongside rewards, behavioral_cloning under "
                                 "trainer: ppo or sac)"}
# Top-level keys of ML-Agents' later config format (release 1 on)
LATER_FORMAT_KEYS = ("behaviors", "default_settings", "environment_parameters", "env_settings", "engine_settings",
                     "checkpoint_settings", "torch_settings")
# A behavior's keys in that format which group settings this format writes flat in the section
# (``memory`` is network_settings' group for use_recurrent's keys); with their settings ignored a
# run would train another network than the one asked for, so they are refused
LATER_FORMAT_GROUPS = ("hyperparameters", "network_settings", "memory")
LR_SCHEDULES = ("linear", "constant")
VISUAL_ENCODERS = tuple(MIN_IMAGE_SIZE)
# A trainer config is a few KB; the pure-Python YAML reader takes seconds per MiB, so a bigger
# file is a wrong path (a log, a model), not a config.
MAX_CONFIG_BYTES = 1 << 20
# Sections hold settings, reward signals, their settings: 4 levels. The YAML composer recurses
# per level, so unbounded nesting would end in a RecursionError.
MAX_NESTING = 64
# Integers are counts of steps, units or samples; above 2**53 a float (5e6 is read as one) is no
# longer exact, and numpy/torch would overflow further on.
INT_CEILING = 2**53
# A number written with more characters than this stays text (and fails its check): converting
# YAML's base-60 integers (1:30:00) costs time quadratic in their length.
_LONG_NUMBER = 1000
MAX_WARNINGS = 100  # a file of thousands of unknown keys needs no more to be understood


class ConfigError(Exception):
    """A configuration file that cannot be used; the message says where and why."""


# ----------------------------------------------------------------------------------------
# Value checks: each returns the converted value or raises ValueError(expected description)
# ----------------------------------------------------------------------------------------
def _number(value: Any) -> int | float:
    """The number a YAML value stands for, an int kept exact; ValueError if it is none."""
    # PyYAML reads "5e6" (no dot) as a string; ML-Agents' users write it, so accept it.
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        written = value.strip()
        try:
            return int(written)
        except ValueError:
            return float(written)
    raise ValueError


def integer(low: int | None = None, high: int | None = None) -> Callable[[Any], int]:
    bounds = _bounds_text(low, high)
    expected = f"an integer{bounds}"

    def check(value: Any) -> int:
        try:
            number = _number(value)
        except ValueError:
            raise ValueError(expected) from None
        if isinstance(number, float):  # inf and nan are not integers; int() would raise on them
            if not math.isfinite(number) or number != int(number):
                raise ValueError(expected)
            number = int(number)
        if (low is not None and number < low) or (high is not None and number > high):
            raise ValueError(expected)
        if abs(number) > INT_CEILING:
            raise ValueError(f"{expected}, at most 2**53 = {INT_CEILING} in size")
        return number

    check.expected = expected  # type: ignore[attr-defined]
    return check


def real(low: float | None = None, high: float | None = None, low_open: bool = False) -> Callable[[Any], float]:
    bounds = _bounds_text(low, high, low_open)

    def check(value: Any) -> float:
        try:
            number = float(_number(value))
        except ValueError:
            raise ValueError(f"a number{bounds}") from None
        except OverflowError:  # an integer beyond the float range (10**400)
            raise ValueError(f"a finite number{bounds}") from None
        if not math.isfinite(number):  # inf would train nothing useful, nan poisons every update
            raise ValueError(f"a finite number{bounds}")
        if (low is not None and (number <= low if low_open else number < low)) or (high is not None and number > high):
            raise ValueError(f"a number{bounds}")
        return number

    check.expected = f"a number{bounds}"  # type: ignore[attr-defined]
    return check


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(boolean.expected)  # type: ignore[attr-defined]


boolean.expected = "true or false"  # type: ignore[attr-defined]


def choice(*options: str) -> Callable[[Any], str]:
    expected = f"one of {', '.join(options)}"

    def check(value: Any) -> str:
        if isinstance(value, str) and value in options:
            return value
        raise ValueError(expected)

    check.expected = expected  # type: ignore[attr-defined]
    return check


def text(value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    raise ValueError(text.expected)  # type: ignore[attr-defined]


def optional_text(value: Any) -> str | None:
    if value is None:
        return None
    return text(value)


# what each check expects, for messages and the settings table (integer and real set their own)
text.expected = optional_text.expected = "a non-empty string"  # type: ignore[attr-defined]


def _bounds_text(low: float | None, high: float | None, low_open: bool = False) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}]"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" <= {high:g}"
    return ""


def _key(default: Any, check: Callable[[Any], Any], doc: str, *, used_by: tuple[str, ...] | None = None) -> Any:
    """A settings field: its default (a function makes a fresh one each time), its check, what it
    means and which trainers read it (None: the trainers whose settings class declares it)."""
    metadata = {"check": check, "doc": doc, "used_by": used_by}
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


# ----------------------------------------------------------------------------------------
# Reward signals, behavioral cloning, self-play
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExtrinsicSettings:
    strength: float = _key(1.0, real(0.0), "scale of the environment reward")
    gamma: float = _key(0.99, real(0.0, 1.0), "discount factor")
    normalize: bool = _key(False, boolean, "divide the reward by the running standard deviation of its discounted "
                           "return, clipped to ±10, as Stable-Baselines3's VecNormalize (rl-zoo's `normalize: true`); "
                           "unset: the raw reward (ML-Agents)")


def _override(name: str, default: Any, base: type | None = None) -> Any:
    """A key of ``base`` (TrainerSettings unless given) with another default in a subclass."""
    declared = next(f for f in dataclasses.fields(base or TrainerSettings) if f.name == name)
    return field(default=default, metadata=declared.metadata)


@dataclass(frozen=True)
class ModelSignalSettings:
    """The keys of every reward signal with a network of its own; each signal's class below sets
    its own defaults (ML-Agents')."""

    strength: float = _key(1.0, real(0.0), "scale of the signal's reward")
    gamma: float = _key(0.99, real(0.0, 1.0), "discount factor")
    encoding_size: int = _key(64, integer(1), "width of the signal's encoding (curiosity: its observation encoding; "
                              "RND: the random and the predictor network; GAIL: each camera image's encoding)")
    learning_rate: float = _key(3.0e-4, real(0.0, low_open=True), "learning rate of the signal's network")


@dataclass(frozen=True)
class CuriositySettings(ModelSignalSettings):
    strength: float = _override("strength", 0.02, ModelSignalSettings)
    encoding_size: int = _override("encoding_size", 128, ModelSignalSettings)


@dataclass(frozen=True)
class RNDSettings(ModelSignalSettings):
    learning_rate: float = _override("learning_rate", 1.0e-4, ModelSignalSettings)


@dataclass(frozen=True)
class GAILSettings(ModelSignalSettings):
    strength: float = _override("strength", 0.01, ModelSignalSettings)
    demo_path: str = _key("", text, "a .demo file or a folder of them")
    use_actions: bool = _key(False, boolean, "whether the discriminator sees actions")
    use_vail: bool = _key(False, boolean, "variational information bottleneck")
    hidden_units: int = _key(128, integer(1), "width of the discriminator's two layers (Palaestra's key: "
                             "ML-Agents' are always 128)")
    use_terminal_states: bool = _key(False, boolean, "end the return of this reward at the environment's true "
                                     "episode ends (not at max_step ends), so that on a task whose episodes end in "
                                     "failure it also pays for staying alive, as SB3-based GAIL does (Palaestra's "
                                     "key: ML-Agents bootstraps the value through every end)")


REWARD_SIGNALS: dict[str, type] = {
    "extrinsic": ExtrinsicSettings,
    "curiosity": CuriositySettings,
    "gail": GAILSettings,
    "rnd": RNDSettings,
}
REQUIRED_SUBKEYS: dict[type, tuple[str, ...]] = {GAILSettings: ("demo_path",)}


@dataclass(frozen=True)
class BehavioralCloningSettings:
    demo_path: str = _key("", text, "a .demo file or a folder of them")
    strength: float = _key(0.5, real(0.0), "BC learning rate relative to learning_rate")
    steps: int = _key(0, integer(0), "steps over which strength anneals to 0; 0 = constant")
    batch_size: int | None = _key(None, integer(1), "BC mini-batch size; defaults to the trainer's")
    # 3: ML-Agents' (1.x code) for PPO and SAC alike; its 0.16 docs said PPO's num_epoch
    num_epoch: int = _key(3, integer(1), "passes over the demonstrations per update")
    samples_per_update: int = _key(0, integer(0), "demonstration samples per update; 0 = all")


REQUIRED_SUBKEYS[BehavioralCloningSettings] = ("demo_path", "strength", "steps")


@dataclass(frozen=True)
class SelfPlaySettings:
    window: int = _key(10, integer(1), "past snapshots kept as opponents")
    play_against_latest_model_ratio: float = _key(0.5, real(0.0, 1.0), "chance of facing the latest model")
    save_steps: int = _key(20000, integer(1), "learning-team steps between snapshots of the policy")
    swap_steps: int = _key(20000, integer(1), "opponent (ghost) team steps between opponent swaps")
    team_change: int = _key(100000, integer(1), "learning-team steps before the next team learns")
    initial_elo: float = _key(1200.0, real(), "starting ELO")


SUBSECTION_LEGACY = {
    "play_against_current_self_ratio": "play_against_latest_model_ratio (renamed in 0.16)",
}


# ----------------------------------------------------------------------------------------
# The trainer settings of one behavior: the keys every trainer reads, then each trainer's own
# ----------------------------------------------------------------------------------------
def _checked_separately(value: Any) -> Any:  # subsections: checked by _check_subsection
    return value


_checked_separately.expected = "a mapping (below)"  # type: ignore[attr-defined]


def _default_reward_signals() -> dict[str, Any]:
    return {"extrinsic": ExtrinsicSettings()}


def _trainer_type(value: Any) -> str:
    """A trainer registered in SETTINGS_BY_TRAINER (read when a config is checked, so the registry
    below is the one list of trainers)."""
    if isinstance(value, str) and value in SETTINGS_BY_TRAINER:
        return value
    raise ValueError(_trainer_type.expected)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class TrainerSettings:
    """One behavior's resolved settings. The keys here are read by every trainer (``used_by``
    says when only by PPO and SAC); each trainer's own keys are in its subclass (PPOSettings,
    SACSettings, ...). ``TrainerSettings(trainer=..., ...)`` builds the subclass of that trainer
    (PPO's when ``trainer`` is left out), so a key of another trainer is a TypeError.

    ``origins``: where each value written in the config came from, for :meth:`origin`."""

    trainer: str = _key("ppo", _trainer_type, "trainer type: `ppo`, `sac`, `offline_bc` "
                        "(imitation of demonstrations), `online_bc` (imitation of a teacher, DAgger)",
                        used_by=EVERY_TRAINER)
    batch_size: int = _key(1024, integer(1), "experiences per gradient step", used_by=EVERY_TRAINER)
    buffer_size: int = _key(10240, integer(1), "PPO: experiences collected before an update (an update runs once "
                            "the buffer holds *more* than this); SAC: replay capacity; online_bc: the teacher's "
                            "labels kept (the newest)", used_by=(*EVERY_RL_TRAINER, "online_bc"))
    # Upper bounds far above any real network (ML-Agents' examples use up to 512 x 3): the largest
    # allowed PPO network (16 x 4096, 2 GB) builds in about 90 s on 2 cores; far larger ones
    # exhausted memory or seemed to hang
    hidden_units: int = _key(128, integer(1, 4096), "units per hidden layer", used_by=EVERY_TRAINER)
    num_layers: int = _key(2, integer(1, 16), "hidden layers", used_by=EVERY_TRAINER)
    activation: str = _key(DEFAULT_ACTIVATION, choice(*ACTIVATIONS), "hidden-layer activation: `swish` (z·sigmoid(z), "
                           "ML-Agents), `tanh` (Stable-Baselines3's default) or `relu` (max(z, 0), some of "
                           "rl-zoo's settings); SAC takes `swish` only so far",
                           used_by=EVERY_RL_TRAINER)
    learning_rate: float = _key(3.0e-4, real(0.0, low_open=True), "Adam learning rate", used_by=EVERY_TRAINER)
    # (from 1e-45: smaller is 0 in float32, and Adam's 0 / 0 for a weight no gradient reaches is NaN)
    adam_epsilon: float = _key(1.0e-8, real(1e-45), "Adam's ε (torch's default; Stable-Baselines3's PPO uses 1e-5)",
                               used_by=EVERY_RL_TRAINER)
    learning_rate_schedule: str = _key("linear", choice(*LR_SCHEDULES), "`linear` decays to 1e-10 at `max_steps`",
                                       used_by=EVERY_RL_TRAINER)
    max_steps: int = _key(500000, integer(0), "agent steps (summed over agents) to train for", used_by=EVERY_TRAINER)
    normalize: bool = _key(False, boolean, "running mean/variance normalization of vector observations",
                           used_by=EVERY_RL_TRAINER)
    time_horizon: int = _key(64, integer(1), "steps per agent before a trajectory is cut (and bootstrapped)",
                             used_by=EVERY_RL_TRAINER)
    summary_freq: int = _key(10000, integer(1), "steps between summaries", used_by=EVERY_TRAINER)
    use_recurrent: bool = _key(False, boolean, "LSTM policy (PPO and SAC)", used_by=EVERY_TRAINER)
    # at most 2 x 4096, as hidden_units: the LSTM keeps h and c of memory_size / 2 units each
    memory_size: int = _key(128, integer(1, 8192), "LSTM memory size", used_by=EVERY_TRAINER)
    sequence_length: int = _key(64, integer(1), "LSTM training sequence length", used_by=EVERY_TRAINER)
    vis_encode_type: str = _key("simple", choice(*VISUAL_ENCODERS), "image encoder for camera observations "
                                "(networks/visual.py: " + ", ".join(f"{kind} {side}x{side}" for kind, side
                                                                    in MIN_IMAGE_SIZE.items()) + " at least)",
                                used_by=EVERY_TRAINER)
    threaded: bool = _key(True, boolean, "with the policy acting in `--num-envs` workers (PPO): they keep stepping "
                          "while the trainer updates (`false`: they wait; one behavior's `false` applies to all)",
                          used_by=EVERY_RL_TRAINER)
    init_path: str | None = _key(None, optional_text, "a model folder (`models/<run>/<Behavior>`) whose newest "
                                 "checkpoint's weights start training, or one checkpoint file (`.pt`)", used_by=EVERY_TRAINER)
    reward_signals: Mapping[str, Any] = _key(_default_reward_signals, _checked_separately,
                                             "the reward signals and their settings (below)",
                                             used_by=EVERY_RL_TRAINER)
    behavioral_cloning: BehavioralCloningSettings | None = _key(None, _checked_separately, "behavioral cloning "
                                                                "from demonstrations (below; docs/imitation.md)",
                                                                used_by=EVERY_RL_TRAINER)
    self_play: SelfPlaySettings | None = _key(None, _checked_separately, "self-play (below; docs/self-play.md)",
                                              used_by=EVERY_RL_TRAINER)
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    # whether the keys declared ``used_by=EVERY_RL_TRAINER`` (reward signals, time_horizon, ...) are
    # this trainer's: False for trainers that learn by imitation alone
    learns_from_rewards: ClassVar[bool] = True

    def __new__(cls, *args: Any, **kwargs: Any) -> TrainerSettings:
        if cls is TrainerSettings:  # the settings class of the trainer asked for
            trainer = args[0] if args else kwargs.get("trainer", TRAINER_KEYS["trainer"].default)
            if trainer not in SETTINGS_BY_TRAINER:
                raise TypeError(f"trainer {trainer!r}: expected one of {', '.join(SETTINGS_BY_TRAINER)}")
            cls = SETTINGS_BY_TRAINER[trainer]
        return super().__new__(cls)

    def __post_init__(self) -> None:
        if SETTINGS_BY_TRAINER.get(self.trainer) is not type(self):
            raise TypeError(f"{type(self).__name__} holds the settings of another trainer than {self.trainer!r}")

    def origin(self, key: str) -> str:
        """Where this value came from: "section '<name>'", the section of the file it is written in
        (aliases followed; "section 'default'" when the behavior inherited it), or "the default".
        ``key`` may name a subsection's key (``self_play.window``): subsections are merged whole.
        KeyError if this trainer has no such setting."""
        top = key.split(".", 1)[0]
        if top not in {f.name for f in _keys_of(type(self))}:
            raise KeyError(f"trainer {self.trainer} has no setting {key!r}")
        return self.origins.get(top, "the default")

    def as_dict(self) -> dict[str, Any]:
        """The resolved settings as plain YAML-ready data: the keys this trainer reads, and those
        of its settings only some trainers read where they differ from their default."""
        out: dict[str, Any] = {}
        for f in _keys_of(type(self)):
            value = getattr(self, f.name)
            if self.trainer not in READ_BY[f.name] and value in (None, _default(f)):
                continue
            if f.name == "reward_signals":
                value = {k: dataclasses.asdict(v) for k, v in value.items()}
            elif dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
                if f.name == "behavioral_cloning" and value["batch_size"] is None:  # unset: the trainer's
                    value["batch_size"] = self.batch_size
            if value is None:
                continue
            out[f.name] = value
        return out


@dataclass(frozen=True)
class PPOSettings(TrainerSettings):
    trainer: str = _override("trainer", "ppo")
    beta: float = _key(5.0e-3, real(0.0), "entropy bonus, decays linearly to 1e-5")
    epsilon: float = _key(0.2, real(0.0, 1.0, low_open=True), "clip range, decays linearly to 0.1")
    lambd: float = _key(0.95, real(0.0, 1.0), "GAE λ")
    num_epoch: int = _key(3, integer(1), "passes of PPO's update over its buffer; BC trainers: repeats of each "
                          "update's `batches_per_epoch` mini-batches, reshuffled")
    max_grad_norm: float | None = _key(None, real(0.0, low_open=True), "clip the gradient's global norm to this "
                                       "before each step (Stable-Baselines3's PPO: 0.5); unset: no clipping "
                                       "(ML-Agents)")
    value_clipping: bool = _key(True, boolean, "clip each value update to ±ε around the estimate the update "
                                "started from (ML-Agents); `false` for returns far from unit scale, as Stable-Baselines3 "
                                "(docs/algorithms.md)")
    lstm_placement: str = _key("after_layers", choice("after_layers", "before_layers"), "with `use_recurrent`: "
                               "the LSTM reads the hidden layers' output (`after_layers`, ML-Agents) or the "
                               "observations, the layers then reading its output (`before_layers`, "
                               "sb3-contrib's RecurrentPPO)")
    reward_signal_num_epoch: int | None = _key(None, integer(1), "passes the reward signals' own models "
                                               "(curiosity, RND, GAIL) make over each buffer, on the mini-batches "
                                               "of PPO's first epochs; unset: `num_epoch` (ML-Agents). Fewer "
                                               "cost less when PPO's `num_epoch` is high (docs/imitation.md)")


@dataclass(frozen=True)
class SACSettings(TrainerSettings):
    # ML-Agents' sac_trainer_config.yaml differs from the PPO defaults in these three
    trainer: str = _override("trainer", "sac")
    batch_size: int = _override("batch_size", 128)
    buffer_size: int = _override("buffer_size", 50000)
    learning_rate_schedule: str = _override("learning_rate_schedule", "constant")
    buffer_init_steps: int = _key(0, integer(0), "steps collected (by the untrained policy) before updates begin")
    init_entcoef: float = _key(1.0, real(0.0, low_open=True), "initial entropy coefficient")
    tau: float = _key(0.005, real(0.0, 1.0, low_open=True), "target-network update rate")
    steps_per_update: float = _key(10.0, real(0.0, low_open=True), "agent steps per update (0.16)")
    train_interval: int | None = _key(None, integer(1), "steps between update rounds (the 0.15 cadence: "
                                      "`steps_per_update` = `train_interval` / `num_update`)")
    num_update: int | None = _key(None, integer(1), "updates per round (the 0.15 cadence)")
    save_replay_buffer: bool = _key(False, boolean, "save the replay buffer (online_bc: the teacher's labels) "
                                    "beside the checkpoints (`replay_buffer.pt`) and restore it on `--resume`")
    reward_signal_steps_per_update: float | None = _key(None, real(0.0, low_open=True), "agent steps per update "
                                                        "of the reward signals' own models (curiosity, GAIL); "
                                                        "unset: `steps_per_update`. 0.16 wrote it under "
                                                        "`reward_signals`, later releases beside the other keys: "
                                                        "both are read")
    reward_signal_num_update: int | None = _key(None, integer(1), "the signals' updates per round of "
                                                "`train_interval` steps (the 0.15 cadence, written under "
                                                "`reward_signals`; unset: `num_update`)")


@dataclass(frozen=True)
class _LegacyBCSettings(TrainerSettings):
    """ML-Agents' old behavioral-cloning trainers (algorithms/offline_bc.py, online_bc.py), with the
    defaults of their last shipped configs."""

    learns_from_rewards: ClassVar[bool] = False

    batch_size: int = _override("batch_size", 64)
    max_steps: int = _override("max_steps", 50000)
    summary_freq: int = _override("summary_freq", 1000)
    batches_per_epoch: int = _key(10, integer(1), "mini-batches of `batch_size` per update (one update per "
                                  "environment step)")
    num_epoch: int = _key(1, integer(1), "passes of PPO's update over its buffer; BC trainers: repeats of each "
                          "update's `batches_per_epoch` mini-batches, reshuffled")


@dataclass(frozen=True)
class OfflineBCSettings(_LegacyBCSettings):
    trainer: str = _override("trainer", "offline_bc")
    demo_path: str | None = _key(None, optional_text, "the demonstrations: a `.demo` file or a folder of them "
                                 "(required)")


@dataclass(frozen=True)
class OnlineBCSettings(_LegacyBCSettings):
    trainer: str = _override("trainer", "online_bc")
    buffer_size: int = _override("buffer_size", 200_000)  # 3DBall's 12 agents fill it in about 17,000 steps
    save_replay_buffer: bool = field(default=False, metadata=SACSettings.__dataclass_fields__["save_replay_buffer"]
                                     .metadata)
    brain_to_imitate: str | None = _key(None, optional_text, "the teacher (required): `heuristic` (the built-in "
                                        "environment's scripted policy; the behavior's own name means it too), a "
                                        "model `.onnx`, `package.module:function` or another behavior's name (its "
                                        "policy)")


# The trainers: `trainer:` takes these names (docs/extending.md, "A trainer")
SETTINGS_BY_TRAINER: dict[str, type[TrainerSettings]] = {
    "ppo": PPOSettings, "sac": SACSettings, "offline_bc": OfflineBCSettings, "online_bc": OnlineBCSettings,
}
TRAINER_TYPES = tuple(SETTINGS_BY_TRAINER)
_trainer_type.expected = f"one of {', '.join(TRAINER_TYPES)}"  # type: ignore[attr-defined]


def _keys_of(cls: type) -> list[dataclasses.Field]:
    """The config keys of a settings class (its fields but ``origins``)."""
    return [f for f in dataclasses.fields(cls) if "check" in f.metadata]


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


# every trainer-level key once, in the order of the settings classes (TrainerSettings' own
# declaration where a trainer's settings give it another default)
TRAINER_KEYS: dict[str, dataclasses.Field] = {}
for _cls in (TrainerSettings, *SETTINGS_BY_TRAINER.values()):
    for _f in _keys_of(_cls):
        TRAINER_KEYS.setdefault(_f.name, _f)


def _readers(used_by: tuple[str, ...]) -> tuple[str, ...]:
    """``used_by`` with EVERY_TRAINER and EVERY_RL_TRAINER replaced by the registered trainers they
    stand for, in the registry's order."""
    names = set(used_by) - {*EVERY_TRAINER, *EVERY_RL_TRAINER}
    return tuple(t for t, cls in SETTINGS_BY_TRAINER.items()
                 if t in names or EVERY_TRAINER[0] in used_by
                 or (EVERY_RL_TRAINER[0] in used_by and cls.learns_from_rewards))


# which trainers read each key: as declared for TrainerSettings' keys, else the trainers that have it
READ_BY: dict[str, tuple[str, ...]] = {
    name: _readers(f.metadata["used_by"]) if f.metadata["used_by"]
    else tuple(t for t, cls in SETTINGS_BY_TRAINER.items() if name in cls.__dataclass_fields__)
    for name, f in TRAINER_KEYS.items()
}

# keys a trainer that does not read them refuses (capabilities.settings_problems, with what to do)
# rather than ignores: no "ignores it" warning before that error
REFUSED_WHEN_UNREAD = {"behavioral_cloning", "self_play"}  # (capabilities.py: an error, not a warning)
# keys ML-Agents' trainer of that name read (its sections always hold them) and ours has no use for:
# taken without a warning (online_bc learns from labelled single steps; nothing is cut into trajectories)
READ_BY_MLAGENTS_ONLY = {("online_bc", "time_horizon")}


def warned_when_unread(trainer: str, key: str) -> bool:
    """Whether ``key`` in a section training with ``trainer``, which does not read it, is warned about."""
    return trainer not in READ_BY[key] and key not in REFUSED_WHEN_UNREAD and (trainer, key) not in READ_BY_MLAGENTS_ONLY


def defaults_by_trainer(key: str) -> dict[str, Any]:
    """The default of a trainer-level key for each trainer that reads it."""
    if key == "trainer":  # each settings class names its own; left out of a section, it is PPO
        return {t: TRAINER_KEYS[key].default for t in READ_BY[key]}
    return {t: _default(SETTINGS_BY_TRAINER[t].__dataclass_fields__[key]) for t in READ_BY[key]}


SUBSECTIONS = {"reward_signals", "behavioral_cloning", "self_play"}
LEGACY_KEYS = {
    "use_curiosity": "reward_signals: curiosity",
    "curiosity_strength": "reward_signals: curiosity: strength",
    "curiosity_enc_size": "reward_signals: curiosity: encoding_size",
    "gamma": "reward_signals: extrinsic: gamma",
    "burn_in_ratio": "nothing (it had no effect in 0.16)",
    "reward_signal_train_interval": "reward_signal_steps_per_update (no ML-Agents release read it)",
}


# ----------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------
@dataclass
class TrainerConfig:
    """A loaded trainer-config file: its raw, checked sections."""

    path: Path
    sections: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    # per section, the signals' cadence keys it wrote under reward_signals (where 0.15 and 0.16
    # read them): a behavior's own reward_signals replaces them with the default's mapping
    cadence_under_signals: dict[str, set[str]] = field(default_factory=dict)
    # per section, its warnings about legacy keys: said when a behavior reads the section (a file's
    # sections for behaviors the environment does not have are ignored, their old keys too)
    legacy_warnings: dict[str, list[str]] = field(default_factory=dict)
    # whether the run trains (--inference: no update is owed, so none is said to be missing)
    training: bool = True
    quiet: bool = False  # resolving a section only to check it: its warnings unsaid (resolved_quietly)

    def section_names(self) -> list[str]:
        return [k for k in self.sections if k != "default"]

    def own_section(self, behavior: str) -> str | None:
        """The section written for ``behavior``: its name, or, for a Unity behavior with a team
        (``Striker?team=0``), the name before ``?`` as in ML-Agents; None if neither."""
        if behavior in self.sections:
            return behavior
        base = behavior.partition("?")[0]
        return base if base != behavior and base in self.sections else None

    def has_settings_for(self, behavior: str) -> bool:
        return self.own_section(behavior) is not None or "default" in self.sections

    def for_behavior(self, behavior: str) -> TrainerSettings:
        """Resolve one behavior's settings: default section, then its own (shallow). Each value
        written in the file remembers its section (TrainerSettings.origin)."""
        if not self.has_settings_for(behavior):
            raise ConfigError(
                f"{self.path}: no section for behavior {_show(behavior)} and no 'default' section; "
                f"the file has sections {_show_names(self.section_names())}"
            )
        # 'default' may name another section too; following it also checks that it is a mapping.
        default_name, merged = self._section("default") if "default" in self.sections else ("", {})
        section = self.own_section(behavior)
        own_name, own = self._section(section) if section is not None else ("", {})
        origins = {key: f"section {_show(default_name)}" for key in merged}
        origins.update({key: f"section {_show(own_name)}" for key in own})
        self._warn_unread(behavior, own_name, own, default_name, merged)
        for name in dict.fromkeys((default_name, own_name)):
            for message in self.legacy_warnings.get(name, ()):
                self._warn_once(message)
        if "reward_signals" in own:  # the merge is shallow: the default's cadence went with its mapping
            for key in self.cadence_under_signals.get(default_name, set()) - own.keys():
                merged.pop(key, None)
        merged.update(own)
        # the cadences' two spellings, one from each section (each section's own were settled when
        # it was checked): 0.16's is read, as in ML-Agents 0.16, which never read the 0.15 keys
        sac = merged.get("trainer", TRAINER_KEYS["trainer"].default) == "sac"
        for new, old_keys in CADENCE_SPELLINGS.items():
            old = [k for k in old_keys if k in merged]
            if new in merged and old and sac:
                self._warn_once(f"{self.path}: behavior {_show(behavior)}: {new} ({origins[new]}, 0.16) and "
                                f"{'/'.join(old)} ({origins[old[0]]}, 0.15) both set; as in ML-Agents 0.16, "
                                f"{new} is read")
            if new in merged:
                for key in old:
                    merged.pop(key)
        signal_old = [k for k in CADENCE_SPELLINGS["reward_signal_steps_per_update"] if k in merged]
        if signal_old and "steps_per_update" in merged:  # a 0.16 cadence beside the signals' 0.15 one
            if sac:
                self._warn_once(f"{self.path}: behavior {_show(behavior)}: {'/'.join(signal_old)} (0.15) is not "
                                "read beside steps_per_update (0.16), as in ML-Agents 0.16; the signals' cadence "
                                "is reward_signal_steps_per_update (under reward_signals)")
            for key in signal_old:
                merged.pop(key)
        settings = _build_settings(self.path, behavior, merged, origins)
        for message in settings_notes(self.path, behavior, settings, self.training):
            self._warn_once(message)
        return settings

    def warn_misspelt_sections(self, behaviors: list[str]) -> None:
        """Warn about a section whose name nearly matches a behavior of the environment (or
        'default') that has no section of its own: that behavior silently trains with the
        default settings otherwise. Sections for behaviors of other environments (the shipped
        files have one per example) are normal and left alone."""
        unsettled = list(dict.fromkeys(b.partition("?")[0] for b in behaviors if self.own_section(b) is None))
        if "default" not in self.sections:
            unsettled.append("default")
        for name in self.section_names():
            if name in behaviors or not unsettled:
                continue
            target = closest_name(name, unsettled)
            if target is not None:
                fallback = ("has no settings" if "default" not in self.sections else "trains with section 'default'")
                message = (f"{self.path}: section {_show(name)} is not a behavior of this environment (did you mean "
                           f"{target!r}?); " + ("a 'default' section is what behaviors without their own section "
                                                "read" if target == "default" else f"{target!r} {fallback}"))
                self._warn_once(message)

    def _warn_unread(self, behavior: str, own_name: str, own: dict[str, Any], default_name: str,
                     default: dict[str, Any]) -> None:
        """Warn about keys of another trainer that ``behavior`` will not read because no section
        names its trainer (a section that names it was warned about when the file was read):
        SAC's keys in a section without ``trainer: sac`` train PPO. Keys of the default section
        are warned about only when neither section names a trainer, since a behavior may switch
        trainers over a default written for another."""
        trainer = own.get("trainer", default.get("trainer", TRAINER_KEYS["trainer"].default))
        source = (f"named by section {_show(default_name)}" if "trainer" in default else
                  "the default: no section names a trainer")
        where = [(own_name, own)] if "trainer" not in own else []
        if "trainer" not in own and "trainer" not in default:
            where.append((default_name, default))
        for name, section in where:
            for key in section:
                if key in READ_BY and warned_when_unread(trainer, key):
                    message = (f"{_where(self.path, name, key)}: only read by {'/'.join(READ_BY[key])}; behavior "
                               f"{behavior!r} trains with {trainer} ({source}; add trainer: to the section to "
                               "choose another)")
                    self._warn_once(message)

    def resolved_quietly(self, section: str) -> TrainerSettings:
        """The settings a behavior named ``section`` would have, without the warnings resolving
        them says (for a section no behavior of the environment reads yet)."""
        self.quiet = True
        try:
            return self.for_behavior(section)
        finally:
            self.quiet = False

    def _warn_once(self, message: str) -> None:
        """Log a warning and keep it, once however many behaviors read the same settings."""
        if self.quiet:
            return
        if message not in self.warnings:
            self.warnings.append(message)
            logger.warning(message)

    def _section(self, name: str) -> tuple[str, dict[str, Any]]:
        """The section ``name`` as a mapping, with the name of the section that holds it (aliases
        followed)."""
        seen = [name]
        section = self.sections[name]
        while isinstance(section, str):  # an alias: follow it to a mapping
            if section not in self.sections or section in seen:
                raise ConfigError(
                    f"{self.path}: section {_show(seen[-1])} names section {_show(section)}, which "
                    f"{'is part of a loop' if section in seen else 'does not exist'}"
                )
            seen.append(section)
            section = self.sections[section]
        if section is None:
            return seen[-1], {}
        if not isinstance(section, dict):  # load_trainer_config never stores one; a hand-built config may
            raise ConfigError(
                f"{self.path}: section {_show(seen[-1])} should be a mapping of settings (or the name of "
                f"another section), got {type(section).__name__} {_show(section)}"
            )
        return seen[-1], dict(section)


def load_trainer_config(path: str | Path) -> TrainerConfig:
    """Read and check a trainer-config file; raise ConfigError with a clear message."""
    if not str(path).strip():  # (Path("") is the working folder: "'.' is a folder" named no mistake)
        raise ConfigError("no trainer config path given (an empty argument); give the path of a YAML file, "
                          "e.g. config/trainer_config.yaml")
    path = Path(path)
    data = _parse_yaml(path, _read_text(path))
    if data is None:
        raise ConfigError(f"{path}: the file is empty; it needs a 'default:' section or behavior sections")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of section names (default, behavior names) to settings, "
            f"got {type(data).__name__} {_show(data)}"
        )
    config = TrainerConfig(path, {})
    try:
        _check_sections(path, data, config)
    finally:  # warnings found before an error are still worth seeing
        for message in config.warnings:
            logger.warning(message)
    return config


def _read_text(path: Path, kind: str = "trainer config") -> str:
    """The file's text, read only if it is a regular file of at most MAX_CONFIG_BYTES; ``kind``
    names the file in the messages ("curriculum file", ...)."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ConfigError(f"{kind}{'' if kind.endswith(' file') else ' file'} {str(path)!r} does not exist"
                          f"{shipped_copy(path)}") from None
    except IsADirectoryError:
        raise ConfigError(f"{kind} {str(path)!r} is a folder; give the path of a YAML file") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL character in the path
        raise ConfigError(f"{path}: cannot read the file: {getattr(e, 'strerror', None) or e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ConfigError(f"{kind} {str(path)!r} is a folder; give the path of a YAML file")
        if not stat.S_ISREG(mode):
            raise ConfigError(
                f"{path}: not a regular file (a pipe, socket or device); give the path of a YAML file"
            )
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)  # bounded: the file may have grown since fstat
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the file: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: the file is larger than {MAX_CONFIG_BYTES / 2**20:g} MiB, the most a {kind} may "
            "be (they are a few KB); is this the right file?"
        )
    # UTF-8 (with or without a BOM), or UTF-16 with a BOM as some Windows editors save it.
    encoding = "utf-16" if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8-sig"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        if path.suffix.lower() == ".demo":
            raise ConfigError(f"{path}: this is a demonstration recording (.demo), not a {kind}: name it "
                              "in a config's demo_path (behavioral_cloning, gail, offline_bc); the first argument "
                              "takes a YAML trainer config") from None
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            f"{path}: not a text file in {'UTF-16' if encoding == 'utf-16' else 'UTF-8'}: byte "
            f"0x{raw[e.start]:02x} at line {line} cannot be decoded"
        ) from None


def _parse_yaml(path: Path, text: str) -> Any:
    loader = None
    try:
        loader = _ConfigLoader(text, path)  # its reader rejects control characters here already
        return loader.get_single_data()
    except yaml.reader.ReaderError as e:  # a control character: binary data, not YAML
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        code = e.character if isinstance(e.character, int) else ord(e.character)
        raise ConfigError(
            f"{path}: not a YAML text file: character U+{code:04X} at line {line}, column {column} "
            "is not allowed in YAML"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        context = getattr(e, "context", None)  # e.g. "while parsing a block mapping"
        if context:
            context_mark = getattr(e, "context_mark", None)
            problem = f"{problem} ({context}{f' at line {context_mark.line + 1}' if context_mark else ''})"
        problem = _cut(problem, 200)
        kind = "YAML error" if isinstance(e, (ComposerError, ConstructorError)) else "YAML syntax error"
        raise ConfigError(f"{path}: {kind}{where}: {problem}") from None
    except RecursionError:  # not expected past MAX_NESTING; a message still beats a traceback
        raise ConfigError(f"{path}: the YAML is nested too deeply to read") from None
    finally:
        if loader is not None:
            loader.dispose()


def _cut(message: str, limit: int) -> str:
    return message if len(message) <= limit else message[:limit] + "…"


def _tag_name(tag: str) -> str:
    return "!!" + tag.rsplit(":", 1)[-1] if tag.startswith("tag:yaml.org,2002:") else tag


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, stricter where a trainer config needs it to be:

    - a key written twice in one mapping is an error naming the section, the key and both lines
      (YAML itself keeps the last one silently; ``<<: *anchor`` merges may still be overridden);
    - every key is read as the text written (``1:``, ``yes:`` are names here, not 1 and True),
      and a list or mapping used as a key is an error;
    - nesting deeper than MAX_NESTING is an error instead of a RecursionError;
    - a value its tag cannot convert (``!!int abc``, the date 2001-13-45) is an error with a
      line instead of a ValueError.
    """

    def __init__(self, text: str, path: Path) -> None:
        super().__init__(text)
        self.path = path
        self.depth = 0
        self.where: dict[Node, tuple[str, ...]] = {}  # a node's section and keys, for messages

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                raise ComposerError(
                    None, None, f"nested more than {MAX_NESTING} levels deep; a trainer config needs 4",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError):
            # The safe constructors assume well-formed text for an explicit tag.
            written = _show(node.value) if isinstance(node, ScalarNode) else f"a {node.id}"
            raise ConstructorError(
                None, None, f"cannot read {written} as {_tag_name(node.tag)}", node.start_mark
            ) from None

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[str, Any]:
        if not isinstance(node, MappingNode):
            raise ConstructorError(None, None, f"expected a mapping, found a {node.id}", node.start_mark)
        where = self.where.get(node, ())
        first_line: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self._key(key_node)
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise self._duplicate(where, key, first_line[key], line)
            first_line[key] = line
        self.flatten_mapping(node)  # merged keys come first, so the mapping's own keys win
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node)
            self.where.setdefault(value_node, where + (key,))
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping

    def construct_sequence(self, node: Node, deep: bool = False) -> list[Any]:
        if isinstance(node, SequenceNode):
            where = self.where.get(node, ())
            for i, child in enumerate(node.value):
                self.where.setdefault(child, where[:-1] + (f"{where[-1]}[{i}]",) if where else (f"[{i}]",))
        return super().construct_sequence(node, deep)

    def construct_yaml_int(self, node: ScalarNode) -> Any:
        if len(node.value) > _LONG_NUMBER:
            return node.value
        return super().construct_yaml_int(node)

    def _key(self, key_node: Node) -> str:
        if isinstance(key_node, ScalarNode):
            return key_node.value
        kind = "list" if isinstance(key_node, SequenceNode) else "mapping"
        raise ConstructorError(None, None, f"a {kind} used as a key; keys are names", key_node.start_mark)

    def _duplicate(self, where: tuple[str, ...], key: str, first: int, again: int) -> ConfigError:
        lines = f"written twice (lines {first} and {again}); YAML would keep only the last, remove one"
        if not where:
            return ConfigError(f"{self.path}: section {_show(key)} is {lines}")
        return ConfigError(f"{_where(self.path, where[0], '.'.join(where[1:] + (key,)))}: {lines}")


_ConfigLoader.add_constructor("tag:yaml.org,2002:int", _ConfigLoader.construct_yaml_int)


def _other_file_kind(data: dict[str, Any]) -> str | None:
    """What the file is, if it is a config of another kind than a 0.15/0.16 trainer config."""
    later = [str(k) for k in data if str(k) in LATER_FORMAT_KEYS]
    if later:
        return (f"a trainer config in ML-Agents' later format (top-level {', '.join(later)}). This reads "
                "the 0.15/0.16 format: a 'default:' section and a section per behavior, with the settings "
                "written flat in it (docs/configuration.md)")
    return None


# each kind of config file: what it holds, and the argument or flag that takes it
FILE_KINDS = {
    "trainer config": ("a trainer config ('default:' and behavior sections of trainer settings)",
                       "the first argument"),
    "curriculum": ("a curriculum file (a section per behavior with measure, thresholds, parameters)",
                   "--curriculum"),
    "sampler": ("a parameter-sampler file (resampling-interval, sampler-type)", "--sampler"),
}


def config_file_kind(data: Any) -> str | None:
    """Which kind of FILE_KINDS parsed YAML ``data`` looks like, or None if none is clear."""
    if not isinstance(data, dict):
        return None
    sections = [v for v in data.values() if isinstance(v, dict)]
    if "resampling-interval" in data or any("sampler-type" in v for v in sections):
        return "sampler"
    if ("thresholds" in data and "measure" in data) or any(
            "thresholds" in v and ("measure" in v or "parameters" in v) for v in sections):
        return "curriculum"
    if "default" in data or any(any(str(k) in TRAINER_KEYS for k in v) for v in sections):
        return "trainer config"
    return None


def refuse_other_kind(path: Path, data: Any, expected: str) -> None:
    """A ConfigError if ``data``, read as ``expected`` (a FILE_KINDS key), is clearly another kind."""
    kind = config_file_kind(data)
    if kind is not None and kind != expected:
        what, where = FILE_KINDS[kind]
        wanted, flag = FILE_KINDS[expected]
        raise ConfigError(f"{path}: this is {what}: give it {'as' if kind == 'trainer config' else 'with'} "
                          f"{where}; {flag} takes {wanted}")


def _check_sections(path: Path, data: dict[str, Any], config: TrainerConfig) -> None:
    kind = _other_file_kind(data)
    if kind is not None:
        raise ConfigError(f"{path}: this is {kind}")
    refuse_other_kind(path, data, "trainer config")
    for name, section in data.items():
        name = str(name)
        if isinstance(section, str):  # alias
            config.sections[name] = section
        elif section is None or isinstance(section, dict):
            legacy: list[str] = []
            config.sections[name] = _check_section(path, name, section or {}, config.warnings, legacy)
            if legacy:
                config.legacy_warnings[name] = legacy
            signals = (section or {}).get("reward_signals")
            under_signals = {k for k in SIGNAL_CADENCE_KEYS if k in signals} if isinstance(signals, dict) else set()
            if under_signals:
                config.cadence_under_signals[name] = under_signals
        else:
            raise ConfigError(
                f"{path}: section {_show(name)} should be a mapping of settings (or the name of another "
                f"section), got {type(section).__name__} {_show(section)}"
            )


def _where(path: Path, section: str, key: str | None = None) -> str:
    return f"{path}: section {_show(section)}" + (f", key {_show(key)}" if key else "")


def _show(value: Any, limit: int = 80) -> str:
    """repr(value) cut to about ``limit`` characters, looking at no more of the value than it
    shows: a YAML alias bomb is a list of a billion elements built from a few shared lists, and
    an alias can make a list that contains itself."""
    out: list[str] = []
    room = limit
    cut = False

    def put(part: str) -> bool:  # False once the room is spent
        nonlocal room, cut
        cut = cut or len(part) > room
        out.append(part[:max(room, 0)])
        room -= len(part)
        return room > 0

    def walk(item: Any, depth: int) -> bool:
        if not isinstance(item, (list, tuple, set, frozenset, dict)):
            return put(_scalar_repr(item, room))
        if depth >= 6:
            return put("...")
        brackets = "[]" if isinstance(item, list) else "()" if isinstance(item, tuple) else "{}"
        if not put(brackets[0]):
            return False
        for i, element in enumerate(item.items() if isinstance(item, dict) else item):
            if i and not put(", "):
                return False
            if isinstance(item, dict):
                if not (walk(element[0], depth + 1) and put(": ")):
                    return False
                element = element[1]
            if not walk(element, depth + 1):
                return False
        return put(brackets[1])

    walk(value, 0)
    return "".join(out) + ("…" if cut else "")


def _scalar_repr(value: Any, room: int) -> str:
    if isinstance(value, (str, bytes)):
        return repr(value[:room + 1])  # one more than fits, so that the cut shows
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4 * room:
        digits = int(value.bit_length() * math.log10(2)) + 1  # str() would refuse past 4300 digits
        return f"<an integer of about {digits} digits>"
    return repr(value)


def _show_names(names: list[str]) -> str:
    return _show(names, 300) if names else "none"


def _warn(warnings: list[str], message: Callable[[], str]) -> None:
    """Collect a warning; past MAX_WARNINGS only say that more were left out (a message may
    cost a difflib search, and a file can hold thousands of unknown keys)."""
    if len(warnings) < MAX_WARNINGS:
        warnings.append(message())
    elif len(warnings) == MAX_WARNINGS:
        warnings.append(f"more than {MAX_WARNINGS} warnings; the rest are left out")


def _differ(first: Any, second: Any) -> bool:
    """Whether two spellings of one key differ; values that cannot be compared (an alias made
    them hold themselves) count as differing, so the message names both."""
    try:
        return first != second
    except RecursionError:
        return True


def _later_format_hint(key: str, value: Any) -> str:
    """What to write instead of a group of ML-Agents' later layout: its settings flat."""
    def written(v: Any) -> str:  # as YAML would take it back: a short plain word unquoted
        return v if isinstance(v, str) and v.isidentifier() and len(v) <= 30 else _show(v, 30)

    if key == "trainer_type":
        return f"ML-Agents' later name of 'trainer'; this format reads `trainer: {written(value)}`"
    flat: list[str] = []

    def flatten(group: Any, seen: frozenset[int] = frozenset()) -> None:
        if id(group) in seen:  # (an alias can make a group that holds itself)
            return
        for sub, inner in (group.items() if isinstance(group, dict) else ()):
            if str(sub) == "memory":
                flat.append("use_recurrent: true")
                flatten(inner, seen | {id(group)})
            elif str(sub) in TRAINER_KEYS:
                flat.append(f"{sub}: {written(inner)}")
            else:  # (a later release's own setting, beta_schedule say: writing it flat would not help)
                unknown.append(str(sub))

    unknown: list[str] = []
    flatten({key: value} if key == "memory" else value)
    listed = f" (here: {', '.join(dict.fromkeys(flat))})" if flat else ""
    missing = (f"; {', '.join(dict.fromkeys(unknown))} {'has' if len(set(unknown)) == 1 else 'have'} no 0.15/0.16 "
               "setting and cannot be given") if unknown else ""
    return (f"a group of ML-Agents' later config layout (release 1 on). This format (0.15/0.16) writes "
            f"those settings flat in the behavior's section{listed}{missing}; see docs/configuration.md")


# ML-Agents' later per-behavior keys whose setting this format takes from the command line
LATER_FORMAT_FLAGS = {"keep_checkpoints": "--keep-checkpoints", "checkpoint_interval": "--save-freq"}


def _placed_elsewhere(key: str) -> bool:
    """Whether a key unknown to a behavior section is a known key of another place (a reward
    signal's, behavioral cloning's, or a later ML-Agents key this format takes as a flag)."""
    return key in LATER_FORMAT_FLAGS or bool(_owners(key))


def _owners(key: str) -> list[str]:
    owners = [f"reward_signals: {name}:" for name, cls in REWARD_SIGNALS.items()
              if key in {f.name for f in dataclasses.fields(cls)}]
    if key in {f.name for f in dataclasses.fields(BehavioralCloningSettings)}:
        owners.append("behavioral_cloning:")
    return owners


def _misplaced_hint(key: str) -> str:
    """Why a key unknown to a behavior section may be there: a reward signal's setting or a later
    ML-Agents key this format takes as a flag (a typo of a trainer key was refused before)."""
    if key in LATER_FORMAT_FLAGS:
        return (f" (ML-Agents' later per-behavior setting; this format sets it for the run with "
                f"{LATER_FORMAT_FLAGS[key]})")
    owners = _owners(key)
    return f" (it belongs under {' or '.join(owners)})" if owners else ""


def _refuse_a_typo(path: Path, section: str, label: str, known: list[str], typed: str | None = None,
                   placed: bool = False) -> None:
    """An unknown key spelt nearly as a known one is a typo: an error, since the run would
    otherwise train with that setting at its default (ML-Agents ignored it silently). Unknown keys
    like no known one (another release's) stay warnings; real files of 0.13-0.16 hold none."""
    typed = label if typed is None else typed
    match = None if placed else closest_name(typed, known)
    if match:
        raise ConfigError(f"{_where(path, section, label)}: unknown key; did you mean {match!r}? (as written, "
                          f"{match} would stay at its default; fix the spelling or remove the key)")


def _closest(name: str, known: list[str]) -> str:
    match = closest_name(name, known)
    return f" (did you mean {match!r}?)" if match else ""


def closest_name(name: str, known: list[str]) -> str | None:
    if len(name) > 64:  # no key is that long; difflib's cost grows with the square of the length
        return None
    # 0.75: every one-or-two-letter typo of a key scores above 0.8; unrelated names below
    # (a sampler file's 'mass' scored 0.62 against max_steps)
    lowered = {k.lower(): k for k in known}  # BATCH_SIZE is batch_size too
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.75)
    return lowered[match[0]] if match else None


def _check_value(path: Path, section: str, key: str, check: Callable[[Any], Any], value: Any) -> Any:
    try:
        return check(value)
    except ValueError as e:
        expected = str(e) or getattr(check, "expected", "a valid value")
        raise ConfigError(f"{_where(path, section, key)}: expected {expected}, got {_show(value)}") from None


# SAC's update cadences: the 0.16 key and the 0.15 keys it replaced (the 0.15 ones are converted,
# steps_per_update = train_interval / num_update); where both are set, 0.16's is read, as in 0.16
CADENCE_SPELLINGS = {"steps_per_update": ("train_interval", "num_update"),
                     "reward_signal_steps_per_update": ("reward_signal_num_update",)}
# the signals' cadence keys, which 0.15 and 0.16 read from under reward_signals (and a legacy one,
# warned about where it is moved to)
SIGNAL_CADENCE_KEYS = ("reward_signal_steps_per_update", "reward_signal_num_update", "reward_signal_train_interval")


def _hoist_signal_cadence(path: Path, name: str, section: dict[str, Any]) -> dict[str, Any]:
    """The section with the signals' cadence keys written under ``reward_signals`` (where
    ML-Agents 0.15 and 0.16 read them) moved beside the other keys (where later releases, and
    the settings, keep them)."""
    signals = section.get("reward_signals")
    if not isinstance(signals, dict) or not any(k in signals for k in SIGNAL_CADENCE_KEYS):
        return section
    section, signals = dict(section), dict(signals)
    for key in SIGNAL_CADENCE_KEYS:
        if key in signals:
            value = signals.pop(key)
            # (compared by identity first: a value an alias made hold itself cannot be compared)
            if key in section and section[key] is not value and _differ(section[key], value):
                raise ConfigError(f"{_where(path, name, key)}: set to {_show(section[key])} and, under "
                                  f"reward_signals, to {_show(value)}; keep one")
            section[key] = value
    if signals:
        section["reward_signals"] = signals
    else:  # nothing but the cadence: the default signals, as a section without reward_signals
        del section["reward_signals"]
    return section


def _check_section(path: Path, name: str, section: dict[str, Any], warnings: list[str],
                   legacy: list[str]) -> dict[str, Any]:
    """Check the keys written in one section; return them converted (defaults not filled).
    ``legacy``: where the warnings about legacy keys go (said when a behavior reads the section)."""
    out: dict[str, Any] = {}
    section = _hoist_signal_cadence(path, name, section)
    trainer = section.get("trainer")
    # a section naming a trainer that reads the cadences settles its own two spellings here; under
    # another trainer each key is warned about below, and a section naming none leaves both to the
    # behavior that reads it (TrainerConfig.for_behavior), whose trainer is known there
    reads_cadence = isinstance(trainer, str) and trainer in READ_BY["steps_per_update"]
    unread: set[str] = set()  # 0.15 keys beside their 0.16 spelling, which no trainer reads: not checked
    for new, old_keys in CADENCE_SPELLINGS.items():
        old = [k for k in old_keys if k in section]
        if reads_cadence and new in section and old:
            _warn(warnings, lambda: (
                f"{_where(path, name)}: sets both {new} (0.16) and {'/'.join(old)} (0.15); as in "
                f"ML-Agents 0.16, {new} is read and {' and '.join(old)} ignored"
            ))
            section = {k: v for k, v in section.items() if k not in old}
        elif trainer is None and new in section:
            unread.update(old)
    for key, value in section.items():
        key = str(key)
        if key in unread:  # (kept for the behavior's own warning; for_behavior drops them)
            out[key] = value
            continue
        if key in LEGACY_KEYS:
            _warn(legacy, lambda: (
                f"{_where(path, name, key)}: a legacy key, ignored; it was replaced by {LEGACY_KEYS[key]}"
            ))
            continue
        if key in RENAMED_KEYS:
            raise ConfigError(f"{_where(path, name, key)}: the old name of {RENAMED_KEYS[key]}; rename the key")
        if key in LATER_FORMAT_GROUPS or key == "trainer_type":
            raise ConfigError(f"{_where(path, name, key)}: {_later_format_hint(key, value)}")
        if key in REWARD_SIGNALS:  # its settings would be ignored: a run without the signal it asks for
            raise ConfigError(f"{_where(path, name, key)}: a reward signal belongs under reward_signals "
                              f"(`reward_signals: {{{key}: {{strength: ..., gamma: ...}}}}`), not in the section "
                              "itself")
        if key not in TRAINER_KEYS:
            _refuse_a_typo(path, name, key, list(TRAINER_KEYS), placed=_placed_elsewhere(key))
            _warn(warnings, lambda: (
                f"{_where(path, name, key)}: unknown key, ignored{_misplaced_hint(key)}"
            ))
            continue
        if key == "reward_signals":
            out[key] = _check_reward_signals(path, name, value, warnings, legacy)
        elif key == "behavioral_cloning":
            out[key] = _check_subsection(path, name, key, value, BehavioralCloningSettings, warnings, legacy=legacy)
        elif key == "self_play":
            out[key] = _check_subsection(path, name, key, value, SelfPlaySettings, warnings, legacy=legacy)
        elif key == "trainer" and isinstance(value, str) and value in RENAMED_TRAINERS:
            raise ConfigError(f"{_where(path, name, key)}: trainer {value!r} is the old name of "
                              f"{RENAMED_TRAINERS[value]}")
        else:
            out[key] = _check_value(path, name, key, TRAINER_KEYS[key].metadata["check"], value)
    if isinstance(trainer, str) and trainer in SETTINGS_BY_TRAINER:
        for key in out:
            used_by = READ_BY[key]
            if warned_when_unread(trainer, key):
                _warn(warnings, lambda: (
                    f"{_where(path, name, key)}: only read by {'/'.join(used_by)}; trainer {trainer} ignores it"
                ))
    return out


def _check_subsection(path: Path, section: str, key: str, value: Any, cls: type, warnings: list[str],
                      legacy: list[str], label: str | None = None) -> Any:
    label = label or key
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"{_where(path, section, label)}: expected a mapping of settings, got {_show(value)}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for sub, subvalue in value.items():
        sub = str(sub)
        if sub in SUBSECTION_LEGACY:
            _warn(legacy, lambda: (
                f"{_where(path, section, f'{label}.{sub}')}: a legacy key, ignored; "
                f"it was replaced by {SUBSECTION_LEGACY[sub]}"
            ))
            continue
        if sub not in known:
            _refuse_a_typo(path, section, f"{label}.{sub}", list(known), typed=sub)
            _warn(warnings, lambda: (
                f"{_where(path, section, f'{label}.{sub}')}: unknown key, ignored"
            ))
            continue
        if sub == "demo_path" and subvalue is None:
            continue
        if "check" not in known[sub].metadata:  # a settings class added by the user's own code
            raise ConfigError(f"{_where(path, section, f'{label}.{sub}')}: the settings class {cls.__name__} declares "
                              f"{sub!r} without _key(default, check, doc), which says how to read it "
                              "(docs/extending.md)")
        kwargs[sub] = _check_value(path, section, f"{label}.{sub}", known[sub].metadata["check"], subvalue)
    missing = [k for k in REQUIRED_SUBKEYS.get(cls, ()) if k not in kwargs]
    if missing:
        raise ConfigError(f"{_where(path, section, label)}: missing required setting(s) {', '.join(missing)}")
    return cls(**kwargs)


def _check_reward_signals(path: Path, section: str, value: Any, warnings: list[str],
                          legacy: list[str]) -> dict[str, Any]:
    if not isinstance(value, dict) or not value:
        what = "at least one signal" if isinstance(value, dict) else "a mapping of signal names"
        raise ConfigError(
            f"{_where(path, section, 'reward_signals')}: expected {what} "
            f"({', '.join(REWARD_SIGNALS)}) with its settings, got {_show(value)}"
        )
    signals: dict[str, Any] = {}
    for name, sub in value.items():
        name = str(name)
        if name not in REWARD_SIGNALS:
            raise ConfigError(
                f"{_where(path, section, f'reward_signals.{name}')}: unknown reward signal"
                f"{_closest(name, list(REWARD_SIGNALS))}; known: {', '.join(REWARD_SIGNALS)}"
            )
        signals[name] = _check_subsection(
            path, section, "reward_signals", sub, REWARD_SIGNALS[name], warnings, label=f"reward_signals.{name}",
            legacy=legacy)
    return signals


def _build_settings(path: Path, behavior: str, merged: dict[str, Any], origins: dict[str, str]) -> TrainerSettings:
    """The settings of ``behavior``'s trainer from its merged section; the keys of other trainers
    (warned about where the section names its trainer) are left out."""
    trainer = merged.get("trainer", TRAINER_KEYS["trainer"].default)
    cls = SETTINGS_BY_TRAINER[trainer]
    kwargs = {k: v for k, v in merged.items() if k in TRAINER_KEYS and k in cls.__dataclass_fields__}
    if trainer == "sac" and ("num_update" in kwargs or "train_interval" in kwargs):
        # 0.15 cadence: num_update updates every train_interval steps (each 1 when left out).
        kwargs["steps_per_update"] = kwargs.get("train_interval", 1) / kwargs.get("num_update", 1)
        origins["steps_per_update"] = origins.get("train_interval") or origins["num_update"]
    if trainer == "sac" and "reward_signal_num_update" in kwargs:
        # 0.15: the signals' reward_signal_num_update updates per round, every train_interval steps
        kwargs["reward_signal_steps_per_update"] = kwargs.get("train_interval", 1) / kwargs["reward_signal_num_update"]
        origins["reward_signal_steps_per_update"] = origins["reward_signal_num_update"]
    settings = cls(**kwargs, origins={k: v for k, v in origins.items() if k in kwargs})
    if trainer in ("ppo", "sac") and settings.batch_size > settings.buffer_size:
        raise ConfigError(
            f"{path}: behavior {behavior!r}: batch_size ({settings.batch_size}) is larger than "
            f"buffer_size ({settings.buffer_size}); " + ("PPO would never complete a mini-batch" if trainer == "ppo"
                                                         else "SAC's replay buffer would never hold a mini-batch")
        )
    signal_epochs = getattr(settings, "reward_signal_num_epoch", None)
    if signal_epochs is not None and signal_epochs > settings.num_epoch:
        raise ConfigError(
            f"{path}: behavior {behavior!r}: reward_signal_num_epoch ({signal_epochs}) is more than "
            f"num_epoch ({settings.num_epoch}); the signals' models train on PPO's mini-batches, so "
            "at most num_epoch passes (leave it unset for as many)"
        )
    if settings.use_recurrent and settings.batch_size < settings.sequence_length:
        raise ConfigError(
            f"{path}: behavior {behavior!r}: with use_recurrent, batch_size ({settings.batch_size}) "
            f"must be at least sequence_length ({settings.sequence_length})"
        )
    if settings.use_recurrent and settings.memory_size % 2:
        size = settings.memory_size
        even = f"{size - 1} or {size + 1}" if size > 1 else "2"
        raise ConfigError(
            f"{path}: behavior {behavior!r}: memory_size{set_in(settings, 'memory_size')} must be even with "
            f"use_recurrent (half of it is the LSTM's state, half its cell), got {size}; use {even}"
        )
    return settings


def set_in(settings: TrainerSettings, key: str) -> str:
    """Where ``key`` was written, for messages: " (set in section 'default')", or "" where not."""
    origin = settings.origin(key)
    return "" if origin == "the default" else f" (set in {origin})"


def settings_notes(path: Path, behavior: str, settings: TrainerSettings, training: bool = True) -> list[str]:
    """Settings of ``behavior`` that are valid but will not do what they were likely written for
    (``training``: False for a run that only plays the policy, where no update is missed)."""
    notes = []
    where = f"{path}: behavior {behavior!r}"
    horizon = getattr(settings, "time_horizon", None)
    if settings.use_recurrent and horizon is not None and settings.sequence_length > horizon:
        notes.append(
            f"{where}: sequence_length {settings.sequence_length}{set_in(settings, 'sequence_length')} is longer "
            f"than time_horizon {horizon}{set_in(settings, 'time_horizon')}: experience is cut into pieces of at "
            f"most time_horizon steps and a sequence never spans two, so every sequence holds at most {horizon} "
            "steps and the rest is padding; set sequence_length to at most time_horizon"
        )
    if hasattr(settings, "lstm_placement") and not settings.use_recurrent \
            and settings.origin("lstm_placement") != "the default":
        notes.append(f"{where}: lstm_placement{set_in(settings, 'lstm_placement')} is read only with "
                     "use_recurrent: true, which is not set; it has no effect")
    if settings.self_play is not None and settings.trainer in READ_BY["self_play"] \
            and settings.self_play.team_change >= settings.max_steps:
        # (once for the teams of a name, which play one policy)
        notes.append(f"{path}: behavior {behavior.partition('?')[0]!r}: self_play.team_change {settings.self_play.team_change}{set_in(settings, 'self_play')} "
                     f"is not below max_steps {settings.max_steps}{set_in(settings, 'max_steps')}: the first team "
                     "learns to the end in one turn. Where the teams share this policy that is harmless; against "
                     "another behavior's policy (an asymmetric game) that side's turn starts only when this one is "
                     "done, so this side never plays a trained opponent (as ML-Agents warned): lower team_change")
    notes += _too_short_notes(where, settings, training)
    return notes


def _too_short_notes(where: str, settings: TrainerSettings, training: bool = True) -> list[str]:
    """A run whose max_steps ends it before its first update (a training run: its exported model
    is the untrained policy) or before its first summary (TensorBoard shows nothing)."""
    notes = []
    steps = f"max_steps {settings.max_steps}{set_in(settings, 'max_steps')}"
    if training and settings.trainer == "ppo" and settings.max_steps <= settings.buffer_size:
        notes.append(f"{where}: {steps} is not above buffer_size {settings.buffer_size}"
                     f"{set_in(settings, 'buffer_size')}: PPO updates once it holds more than buffer_size "
                     "experiences, so the run ends before its first update and exports the untrained policy")
    if training and settings.trainer == "sac":
        # the first update: the replay buffer holds a batch, and steps_per_update steps have
        # passed since buffer_init_steps (algorithms/sac.py's ready)
        init, per_update = settings.buffer_init_steps, settings.steps_per_update
        if settings.batch_size >= init + per_update:
            needed, what = settings.batch_size, f"batch_size {settings.batch_size}{set_in(settings, 'batch_size')}"
        else:
            needed = init + per_update
            what = f"buffer_init_steps {init}{set_in(settings, 'buffer_init_steps')}" + (
                f" + steps_per_update {per_update:g}{set_in(settings, 'steps_per_update')}" if per_update >= 1 else "")
        if settings.max_steps < needed:
            notes.append(f"{where}: {steps} is below {what}: SAC's updates start there, so the run ends before its "
                         "first update and exports the untrained policy")
    if settings.max_steps < settings.summary_freq:
        notes.append(f"{where}: {steps} is below summary_freq {settings.summary_freq}"
                     f"{set_in(settings, 'summary_freq')}: the run ends before its first summary, so neither "
                     "TensorBoard nor the console shows its rewards")
    return notes
