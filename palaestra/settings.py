"""Trainer configuration: loading, merging, validation and defaults (the one source of truth).

The file format is ML-Agents 0.15/0.16's: a ``default:`` section plus one section per behavior
name, merged shallowly (a behavior's ``reward_signals`` replaces the default's whole mapping);
a string in place of a section names another section to use. Every key is checked where it is
written: an unknown key is a warning naming the closest known key, a legacy key a warning
naming what replaced it, and a wrong type or out-of-range value an error naming the file, the
section, the key, the value and what was expected.

Defaults are those of ML-Agents' shipped ``default:`` sections (PPO: trainer_config.yaml, SAC:
sac_trainer_config.yaml), so a section may leave out any key.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

logger = logging.getLogger("palaestra")

TRAINER_TYPES = ("ppo", "sac", "offline_bc", "online_bc")
SUPPORTED_TRAINERS = ("ppo",)
LR_SCHEDULES = ("linear", "constant")
VISUAL_ENCODERS = ("simple", "nature_cnn", "resnet")
_TRAINER_DEFAULT = object()  # "use the trainer type's default" marker for per-trainer defaults


class ConfigError(Exception):
    """A configuration file that cannot be used; the message says where and why."""


# ----------------------------------------------------------------------------------------
# Value checks: each returns the converted value or raises ValueError(expected description)
# ----------------------------------------------------------------------------------------
def _number(value: Any) -> float:
    # PyYAML reads "5e6" (no dot) as a string; ML-Agents' users write it, so accept it.
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise ValueError


def integer(low: int | None = None, high: int | None = None) -> Callable[[Any], int]:
    bounds = _bounds_text(low, high)

    def check(value: Any) -> int:
        try:
            number = _number(value)
        except ValueError:
            raise ValueError(f"an integer{bounds}") from None
        if number != int(number) or (low is not None and number < low) or (high is not None and number > high):
            raise ValueError(f"an integer{bounds}")
        return int(number)

    check.expected = f"an integer{bounds}"  # type: ignore[attr-defined]
    return check


def real(low: float | None = None, high: float | None = None, low_open: bool = False) -> Callable[[Any], float]:
    bounds = _bounds_text(low, high, low_open)

    def check(value: Any) -> float:
        try:
            number = _number(value)
        except ValueError:
            raise ValueError(f"a number{bounds}") from None
        if number != number or (low is not None and (number <= low if low_open else number < low)):
            raise ValueError(f"a number{bounds}")
        if high is not None and number > high:
            raise ValueError(f"a number{bounds}")
        return number

    check.expected = f"a number{bounds}"  # type: ignore[attr-defined]
    return check


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError("true or false")


def choice(*options: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if isinstance(value, str) and value in options:
            return value
        raise ValueError(f"one of {', '.join(options)}")

    return check


def text(value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    raise ValueError("a non-empty string")


def optional_text(value: Any) -> str | None:
    if value is None:
        return None
    return text(value)


def _bounds_text(low: float | None, high: float | None, low_open: bool = False) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}]"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" <= {high:g}"
    return ""


def _key(default: Any, check: Callable[[Any], Any], doc: str, *, sac: Any = _TRAINER_DEFAULT,
         used_by: tuple[str, ...] = ("ppo", "sac")) -> Any:
    """A settings field: its default, its check, what it means and which trainers read it."""
    return field(default=default, metadata={"check": check, "doc": doc, "sac": sac, "used_by": used_by})


# ----------------------------------------------------------------------------------------
# Reward signals, behavioral cloning, self-play
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExtrinsicSettings:
    strength: float = _key(1.0, real(0.0), "scale of the environment reward")
    gamma: float = _key(0.99, real(0.0, 1.0), "discount factor")


@dataclass(frozen=True)
class CuriositySettings:
    strength: float = _key(0.02, real(0.0), "scale of the intrinsic reward")
    gamma: float = _key(0.99, real(0.0, 1.0), "discount factor")
    encoding_size: int = _key(128, integer(1), "size of the observation encoding")
    learning_rate: float = _key(3.0e-4, real(0.0, low_open=True), "learning rate of the curiosity model")


@dataclass(frozen=True)
class GAILSettings:
    strength: float = _key(0.01, real(0.0), "scale of the discriminator reward")
    gamma: float = _key(0.99, real(0.0, 1.0), "discount factor")
    demo_path: str = _key("", text, "a .demo file or a folder of them (required)")
    encoding_size: int = _key(64, integer(1), "discriminator encoding size")
    learning_rate: float = _key(3.0e-4, real(0.0, low_open=True), "discriminator learning rate")
    use_actions: bool = _key(False, boolean, "whether the discriminator sees actions")
    use_vail: bool = _key(False, boolean, "variational information bottleneck")


REWARD_SIGNALS: dict[str, type] = {
    "extrinsic": ExtrinsicSettings,
    "curiosity": CuriositySettings,
    "gail": GAILSettings,
}
REQUIRED_SUBKEYS: dict[type, tuple[str, ...]] = {GAILSettings: ("demo_path",)}


@dataclass(frozen=True)
class BehavioralCloningSettings:
    demo_path: str = _key("", text, "a .demo file or a folder of them (required)")
    strength: float = _key(0.5, real(0.0), "BC learning rate relative to learning_rate (required)")
    steps: int = _key(0, integer(0), "steps over which strength anneals to 0; 0 = constant (required)")
    batch_size: int | None = _key(None, integer(1), "BC mini-batch size; defaults to the trainer's")
    num_epoch: int | None = _key(None, integer(1), "passes over the demonstrations per update (3)")
    samples_per_update: int = _key(0, integer(0), "demonstration samples per update; 0 = all")


REQUIRED_SUBKEYS[BehavioralCloningSettings] = ("demo_path", "strength", "steps")


@dataclass(frozen=True)
class SelfPlaySettings:
    window: int = _key(10, integer(1), "past snapshots kept as opponents")
    play_against_latest_model_ratio: float = _key(0.5, real(0.0, 1.0), "chance of facing the latest model")
    save_steps: int = _key(20000, integer(1), "trainer steps between snapshots")
    swap_steps: int = _key(20000, integer(1), "steps between opponent swaps")
    team_change: int = _key(100000, integer(1), "steps between learning-team changes")
    initial_elo: float = _key(1200.0, real(), "starting ELO")


SUBSECTION_LEGACY = {
    "play_against_current_self_ratio": "play_against_latest_model_ratio (renamed in 0.16)",
}


# ----------------------------------------------------------------------------------------
# The trainer settings of one behavior
# ----------------------------------------------------------------------------------------
def _checked_separately(value: Any) -> Any:  # subsections: checked by _check_subsection
    return value


@dataclass(frozen=True)
class TrainerSettings:
    trainer: str = _key("ppo", choice(*TRAINER_TYPES), "trainer type")
    batch_size: int = _key(1024, integer(1), "experiences per gradient step", sac=128)
    buffer_size: int = _key(10240, integer(1), "PPO: experiences per update; SAC: replay capacity", sac=50000)
    hidden_units: int = _key(128, integer(1), "units per hidden layer")
    num_layers: int = _key(2, integer(1), "hidden layers")
    learning_rate: float = _key(3.0e-4, real(0.0, low_open=True), "Adam learning rate")
    learning_rate_schedule: str = _key("linear", choice(*LR_SCHEDULES), "learning-rate decay", sac="constant")
    max_steps: int = _key(500000, integer(0), "agent steps to train for")
    normalize: bool = _key(False, boolean, "running normalization of vector observations")
    time_horizon: int = _key(64, integer(1), "steps per agent before a trajectory is cut")
    summary_freq: int = _key(10000, integer(1), "steps between summaries")
    use_recurrent: bool = _key(False, boolean, "LSTM policy")
    memory_size: int = _key(128, integer(1), "LSTM memory size")
    sequence_length: int = _key(64, integer(1), "LSTM training sequence length")
    vis_encode_type: str = _key("simple", choice(*VISUAL_ENCODERS), "visual encoder")
    threaded: bool = _key(True, boolean, "with the policy acting in --num-envs workers: they go on stepping while "
                          "the trainer updates")
    init_path: str | None = _key(None, optional_text, "a model folder whose weights start training")
    reward_signals: Mapping[str, Any] = _key(None, _checked_separately, "reward signals")
    behavioral_cloning: BehavioralCloningSettings | None = _key(None, _checked_separately, "BC")
    self_play: SelfPlaySettings | None = _key(None, _checked_separately, "self-play")
    # PPO
    beta: float = _key(5.0e-3, real(0.0), "entropy bonus", used_by=("ppo",))
    epsilon: float = _key(0.2, real(0.0, 1.0, low_open=True), "PPO clip range", used_by=("ppo",))
    lambd: float = _key(0.95, real(0.0, 1.0), "GAE lambda", used_by=("ppo",))
    num_epoch: int = _key(3, integer(1), "passes over the buffer per update", used_by=("ppo",))
    # SAC
    buffer_init_steps: int = _key(0, integer(0), "steps collected before SAC updates begin", used_by=("sac",))
    init_entcoef: float = _key(1.0, real(0.0, low_open=True), "initial entropy coefficient", used_by=("sac",))
    tau: float = _key(0.005, real(0.0, 1.0, low_open=True), "target network update rate", used_by=("sac",))
    steps_per_update: float = _key(10.0, real(0.0, low_open=True), "agent steps per SAC update (0.16)",
                                   used_by=("sac",))
    train_interval: int | None = _key(None, integer(1), "steps between SAC update rounds (0.15)", used_by=("sac",))
    num_update: int | None = _key(None, integer(1), "SAC updates per round (0.15)", used_by=("sac",))
    save_replay_buffer: bool = _key(False, boolean, "save the SAC replay buffer with checkpoints",
                                    used_by=("sac",))
    reward_signal_steps_per_update: float | None = _key(None, real(0.0, low_open=True),
                                                        "steps per reward-signal update (SAC)", used_by=("sac",))
    # Legacy behavioral-cloning trainers (recognized, rejected when training)
    batches_per_epoch: int | None = _key(None, integer(1), "offline/online BC batches per epoch",
                                         used_by=("offline_bc", "online_bc"))
    demo_path: str | None = _key(None, optional_text, "offline BC demonstrations", used_by=("offline_bc",))
    brain_to_imitate: str | None = _key(None, optional_text, "online BC teacher", used_by=("online_bc",))

    def as_dict(self) -> dict[str, Any]:
        """The resolved settings as plain YAML-ready data."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name not in ("trainer",) and self.trainer not in f.metadata["used_by"] and value in (None, f.default):
                continue
            if f.name == "reward_signals":
                value = {k: dataclasses.asdict(v) for k, v in value.items()}
            elif dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
            if value is None:
                continue
            out[f.name] = value
        return out


TRAINER_KEYS = {f.name: f for f in dataclasses.fields(TrainerSettings)}
SUBSECTIONS = {"reward_signals", "behavioral_cloning", "self_play"}
LEGACY_KEYS = {
    "use_curiosity": "reward_signals: curiosity",
    "curiosity_strength": "reward_signals: curiosity: strength",
    "curiosity_enc_size": "reward_signals: curiosity: encoding_size",
    "gamma": "reward_signals: extrinsic: gamma",
    "reward_signal_num_update": "reward_signal_steps_per_update",
    "reward_signal_train_interval": "reward_signal_steps_per_update",
    "burn_in_ratio": "nothing (it had no effect in 0.16)",
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

    def section_names(self) -> list[str]:
        return [k for k in self.sections if k != "default"]

    def has_settings_for(self, behavior: str) -> bool:
        return behavior in self.sections or "default" in self.sections

    def for_behavior(self, behavior: str) -> TrainerSettings:
        """Resolve one behavior's settings: default section, then its own (shallow)."""
        if not self.has_settings_for(behavior):
            raise ConfigError(
                f"{self.path}: no section for behavior {behavior!r} and no 'default' section; "
                f"the file has sections {self.section_names() or 'none'}"
            )
        merged: dict[str, Any] = dict(self.sections.get("default") or {})
        own = self._section(behavior) if behavior in self.sections else {}
        if "steps_per_update" in own:  # the behavior's own cadence spelling wins over the default's
            merged.pop("num_update", None)
            merged.pop("train_interval", None)
        elif "num_update" in own or "train_interval" in own:
            merged.pop("steps_per_update", None)
        merged.update(own)
        return _build_settings(self.path, behavior, merged)

    def _section(self, name: str) -> dict[str, Any]:
        seen = [name]
        section = self.sections[name]
        while isinstance(section, str):  # an alias: follow it to a mapping
            if section not in self.sections or section in seen:
                raise ConfigError(
                    f"{self.path}: section {seen[-1]!r} names section {section!r}, which "
                    f"{'is part of a loop' if section in seen else 'does not exist'}"
                )
            seen.append(section)
            section = self.sections[section]
        return dict(section or {})


def load_trainer_config(path: str | Path) -> TrainerConfig:
    """Read and check a trainer-config file; raise ConfigError with a clear message."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"trainer config file {str(path)!r} does not exist")
    if path.is_dir():
        raise ConfigError(f"trainer config {str(path)!r} is a folder; give the path of a YAML file")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the file: {e}") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty; it needs a 'default:' section or behavior sections")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of section names (default, behavior names) to settings, "
            f"got {type(data).__name__}"
        )
    config = TrainerConfig(path, {})
    try:
        _check_sections(path, data, config)
    finally:  # warnings found before an error are still worth seeing
        for message in config.warnings:
            logger.warning(message)
    return config


def _check_sections(path: Path, data: dict[str, Any], config: TrainerConfig) -> None:
    for name, section in data.items():
        name = str(name)
        if isinstance(section, str):  # alias
            config.sections[name] = section
        elif section is None or isinstance(section, dict):
            config.sections[name] = _check_section(path, name, section or {}, config.warnings)
        else:
            raise ConfigError(
                f"{path}: section {name!r} should be a mapping of settings (or the name of another "
                f"section), got {type(section).__name__} {section!r}"
            )


def _where(path: Path, section: str, key: str | None = None) -> str:
    return f"{path}: section {section!r}" + (f", key {key!r}" if key else "")


def _closest(name: str, known: list[str]) -> str:
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _check_value(path: Path, section: str, key: str, check: Callable[[Any], Any], value: Any) -> Any:
    try:
        return check(value)
    except ValueError as e:
        expected = str(e) or getattr(check, "expected", "a valid value")
        raise ConfigError(f"{_where(path, section, key)}: expected {expected}, got {value!r}") from None


def _check_section(path: Path, name: str, section: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """Check the keys written in one section; return them converted (defaults not filled)."""
    out: dict[str, Any] = {}
    trainer = section.get("trainer")
    if "steps_per_update" in section and ("num_update" in section or "train_interval" in section):
        raise ConfigError(
            f"{_where(path, name)}: sets both steps_per_update (0.16) and num_update/train_interval "
            "(0.15); use one spelling of the SAC update cadence"
        )
    for key, value in section.items():
        key = str(key)
        if key in LEGACY_KEYS:
            warnings.append(
                f"{_where(path, name, key)}: a legacy key, ignored; it was replaced by {LEGACY_KEYS[key]}"
            )
            continue
        if key not in TRAINER_KEYS:
            warnings.append(
                f"{_where(path, name, key)}: unknown key, ignored{_closest(key, list(TRAINER_KEYS))}"
            )
            continue
        if key == "reward_signals":
            out[key] = _check_reward_signals(path, name, value, warnings)
        elif key == "behavioral_cloning":
            out[key] = _check_subsection(path, name, key, value, BehavioralCloningSettings, warnings)
        elif key == "self_play":
            out[key] = _check_subsection(path, name, key, value, SelfPlaySettings, warnings)
        else:
            out[key] = _check_value(path, name, key, TRAINER_KEYS[key].metadata["check"], value)
    if isinstance(trainer, str) and trainer in TRAINER_TYPES:
        for key in out:
            used_by = TRAINER_KEYS[key].metadata["used_by"]
            if trainer not in used_by:
                warnings.append(
                    f"{_where(path, name, key)}: only read by {'/'.join(used_by)}; trainer {trainer} ignores it"
                )
    return out


def _check_subsection(path: Path, section: str, key: str, value: Any, cls: type, warnings: list[str],
                      label: str | None = None) -> Any:
    label = label or key
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"{_where(path, section, label)}: expected a mapping of settings, got {value!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for sub, subvalue in value.items():
        sub = str(sub)
        if sub in SUBSECTION_LEGACY:
            warnings.append(
                f"{_where(path, section, f'{label}.{sub}')}: a legacy key, ignored; "
                f"it was replaced by {SUBSECTION_LEGACY[sub]}"
            )
            continue
        if sub not in known:
            warnings.append(
                f"{_where(path, section, f'{label}.{sub}')}: unknown key, ignored{_closest(sub, list(known))}"
            )
            continue
        if sub == "demo_path" and subvalue is None:
            continue
        kwargs[sub] = _check_value(path, section, f"{label}.{sub}", known[sub].metadata["check"], subvalue)
    missing = [k for k in REQUIRED_SUBKEYS.get(cls, ()) if k not in kwargs]
    if missing:
        raise ConfigError(f"{_where(path, section, label)}: missing required setting(s) {', '.join(missing)}")
    return cls(**kwargs)


def _check_reward_signals(path: Path, section: str, value: Any, warnings: list[str]) -> dict[str, Any]:
    if not isinstance(value, dict) or not value:
        raise ConfigError(
            f"{_where(path, section, 'reward_signals')}: expected a mapping of signal names "
            f"({', '.join(REWARD_SIGNALS)}) to their settings, got {value!r}"
        )
    signals: dict[str, Any] = {}
    for name, sub in value.items():
        name = str(name)
        if name in ("reward_signal_steps_per_update", "reward_signal_num_update", "reward_signal_train_interval"):
            warnings.append(
                f"{_where(path, section, f'reward_signals.{name}')}: belongs at the trainer level, "
                "not inside reward_signals; ignored here"
            )
            continue
        if name not in REWARD_SIGNALS:
            raise ConfigError(
                f"{_where(path, section, f'reward_signals.{name}')}: unknown reward signal"
                f"{_closest(name, list(REWARD_SIGNALS))}; known: {', '.join(REWARD_SIGNALS)}"
            )
        signals[name] = _check_subsection(
            path, section, "reward_signals", sub, REWARD_SIGNALS[name], warnings, label=f"reward_signals.{name}"
        )
    return signals


def _build_settings(path: Path, behavior: str, merged: dict[str, Any]) -> TrainerSettings:
    trainer = merged.get("trainer", "ppo")
    kwargs = dict(merged)
    kwargs["trainer"] = trainer
    for name, f in TRAINER_KEYS.items():
        if name not in kwargs and trainer == "sac" and f.metadata["sac"] is not _TRAINER_DEFAULT:
            kwargs[name] = f.metadata["sac"]
    if "reward_signals" not in kwargs:
        kwargs["reward_signals"] = {"extrinsic": ExtrinsicSettings()}
    if trainer == "sac" and ("num_update" in kwargs or "train_interval" in kwargs):
        # 0.15 cadence: num_update updates every train_interval steps.
        kwargs["steps_per_update"] = kwargs.get("train_interval", 1) / kwargs.get("num_update", 1)
    settings = TrainerSettings(**kwargs)
    if trainer == "ppo" and settings.batch_size > settings.buffer_size:
        raise ConfigError(
            f"{path}: behavior {behavior!r}: batch_size ({settings.batch_size}) is larger than "
            f"buffer_size ({settings.buffer_size}); PPO would never complete a mini-batch"
        )
    if settings.use_recurrent and settings.batch_size < settings.sequence_length:
        raise ConfigError(
            f"{path}: behavior {behavior!r}: with use_recurrent, batch_size ({settings.batch_size}) "
            f"must be at least sequence_length ({settings.sequence_length})"
        )
    if settings.use_recurrent and settings.memory_size % 2:
        raise ConfigError(
            f"{path}: behavior {behavior!r}: memory_size must be even with use_recurrent, "
            f"got {settings.memory_size}"
        )
    return settings


def unsupported_features(settings: TrainerSettings) -> list[str]:
    """What this build cannot train yet, each with what to do instead."""
    problems = []
    if settings.trainer == "offline_bc":
        problems.append(
            "trainer 'offline_bc' was removed in ML-Agents 0.13; use trainer: ppo with a "
            "behavioral_cloning section and/or a gail reward signal"
        )
    elif settings.trainer == "online_bc":
        problems.append(
            "trainer 'online_bc' is an ML-Agents 0.9-era trainer Palaestra does not provide; "
            "use trainer: ppo with a behavioral_cloning section"
        )
    if settings.use_recurrent:
        problems.append("use_recurrent: true (LSTM policies) is not supported yet; set use_recurrent: false")
    if settings.behavioral_cloning is not None:
        problems.append("behavioral_cloning is not supported yet; remove the section")
    if settings.self_play is not None:
        problems.append("self_play is not supported yet; remove the section")
    for name in settings.reward_signals:
        if name != "extrinsic":
            problems.append(f"the {name} reward signal is not supported yet; remove it from reward_signals")
    return problems


def describe_keys() -> str:
    """A table of every trainer key with its default and meaning (for docs and --help)."""
    lines = []
    for name, f in TRAINER_KEYS.items():
        default = f.default
        sac = f.metadata["sac"]
        shown = f"{default!r}" + ("" if sac is _TRAINER_DEFAULT else f" (sac: {sac!r})")
        lines.append(f"{name:32} {shown:28} {f.metadata['doc']}")
    return "\n".join(lines)
