"""Property-based fuzzing of trainer configs: real configs (the conformance files and the
shipped ones) with keys dropped, duplicated, retyped and renamed to near misses, sections
replaced, hostile YAML values (inf, nan, huge integers, aliases, alias bombs, self-containing
lists, deep nesting, bad tags), YAML-looking token soup and plain random bytes, each fed through
load_trainer_config and the settings resolution a run does (palaestra.run._resolve_settings, then
the resolved settings as --dry-run prints them). The only exception allowed is ConfigError, with
a one-line message that names the file; each example must finish well inside the deadline.
CI-sized and repeatable (derandomized, no example database)."""

from __future__ import annotations

import json
import string
from datetime import timedelta
from types import SimpleNamespace

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palaestra.envs.base import ActionSpec, BehaviorSpec
from palaestra.run import _resolve_settings
from palaestra.settings import (
    LEGACY_KEYS,
    REWARD_SIGNALS,
    TRAINER_KEYS,
    ConfigError,
    load_trainer_config,
)
from tests.conftest import CONFORMANCE, REPO
from tests.test_conformance import TRAINER_FILES

FUZZ = settings(database=None, derandomize=True, deadline=timedelta(seconds=2), print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Real files, parsed once. Without the conformance folder the shipped configs still give seeds.
SEED_FILES = sorted(REPO.glob("config/*.yaml")) + [
    CONFORMANCE / name for name in TRAINER_FILES if (CONFORMANCE / name).is_file()
]
SEEDS = [yaml.safe_load(path.read_text()) for path in SEED_FILES]

SUBKEYS = sorted({f for cls in REWARD_SIGNALS.values() for f in cls.__dataclass_fields__}
                 | {"demo_path", "steps", "window", "play_against_latest_model_ratio", "team_change"})
KNOWN_KEYS = sorted(TRAINER_KEYS) + sorted(LEGACY_KEYS) + sorted(REWARD_SIGNALS) + SUBKEYS

# Anchors the mutated files may define up front (as a section of their own) and then alias.
PRELUDE = "\n".join([
    "anchors:",
    "  name: &name 3DBall",
    "  number: &number 32",
    "  settings: &settings {batch_size: 32, buffer_size: 64}",
    "  self: &self [1, *self]",
    "  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]",
    *[f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)],  # 9**10 leaves
]) + "\n"
ALIASES = ["*name", "*number", "*settings", "*self", "*l9", "*l3"]

HOSTILE_VALUES = [
    ".inf", "-.inf", ".nan", ".NaN", "inf", "nan", "-nan", "1e400", "-1e400", "5e6", "5e-324", "1e308",
    "9" * 400, "-" + "9" * 400, "1" * 5000, "0x" + "f" * 300, "1" + ":00" * 300, "0b101", "0o17", "017",
    "1_000", "0", "-1", "-0.0", "1.5", "2.0", "true", "false", "yes", "no", "on", "null", "~", "''", '""',
    "[]", "{}", "[1, [2, [3, [4]]]]", "{a: {b: {c: {}}}}", "[" * 40 + "]" * 40, "{a: " * 40 + "1" + "}" * 40,
    "!!int abc", "!!int ''", "!!float x", "!!bool maybe", "!!timestamp nope", "!!binary '*'", "!!set {a: 1}",
    "!!omap [a]", "!!python/object:os.system x", "!custom tag", "2001-13-45", "2001-12-14", "2001-12-14t21:59:43.10-05:00",
    "ppo", "sac", "linear", "constant", "simple", "'3DBall'", "|\n    a block\n    scalar", '"\\x00"',
    "&anchor 3", "*undefined", *ALIASES, *ALIASES,
]


def _scalar(value) -> str:
    """A YAML rendering of a parsed scalar (JSON's scalars are YAML's, except that YAML 1.1 reads
    an exponent without a point, 1e-05, as text: written 1.0e-05)."""
    text = json.dumps(value)
    if isinstance(value, float) and "e" in text and "." not in text:
        text = text.replace("e", ".0e", 1)
    return text


def _key_text(key) -> str:
    key = str(key)
    plain = key and key[0] in string.ascii_letters + "_" and set(key) <= set(string.ascii_letters + string.digits + "_")
    return key if plain else json.dumps(key)


def _pairs(mapping) -> list:
    """A mapping as a list of [key text, value] pairs, so that a key can be written twice."""
    return [[_key_text(k), _pairs(v) if isinstance(v, dict) else _scalar(v)] for k, v in mapping.items()]


def _render(pairs: list, indent: int = 0) -> str:
    lines = []
    for key, value in pairs:
        if isinstance(value, list) and value:
            lines.append(" " * indent + f"{key}:\n" + _render(value, indent + 2))
        else:
            text = "{}" if isinstance(value, list) else value
            if "\n" in text:  # a block scalar's lines are indented below the key
                text = text.replace("\n", "\n" + " " * indent)
            lines.append(" " * indent + f"{key}: {text}\n")
    return "".join(lines)


def _near(name: str, draw) -> str:
    """A near miss of a real key: a character dropped, doubled, swapped or changed, or the case."""
    i = draw(st.integers(0, max(len(name) - 1, 0)))
    how = draw(st.sampled_from(["drop", "double", "swap", "change", "upper", "space"]))
    if how == "drop":
        return name[:i] + name[i + 1:]
    if how == "double":
        return name[:i] + name[i:i + 1] * 2 + name[i + 1:]
    if how == "swap" and i + 1 < len(name):
        return name[:i] + name[i + 1] + name[i] + name[i + 2:]
    if how == "upper":
        return name.upper()
    if how == "space":
        return name.replace("_", " ")
    return name[:i] + draw(st.sampled_from(string.ascii_lowercase + "_-.")) + name[i + 1:]


@st.composite
def values(draw) -> str:
    """A YAML value: a hostile one, a random number or text, or a flow collection of them."""
    return draw(st.one_of(
        st.sampled_from(HOSTILE_VALUES),
        st.integers(-(10**30), 10**30).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.text(max_size=40).map(json.dumps),
        st.lists(st.sampled_from(HOSTILE_VALUES[:40]), max_size=4).map(lambda items: "[" + ", ".join(items) + "]"),
    ))


@st.composite
def keys(draw) -> str:
    """A key: a real one, a near miss of one, one YAML reads as no name, or random text."""
    kind = draw(st.sampled_from(["known", "near", "odd", "text"]))
    if kind == "known":
        return draw(st.sampled_from(KNOWN_KEYS))
    if kind == "near":
        return _key_text(_near(draw(st.sampled_from(KNOWN_KEYS)), draw))
    if kind == "odd":
        return draw(st.sampled_from(["1", "2.5", "yes", "null", "~", "<<", "''", "[a, b]", "{a: 1}", "*name",
                                     "*settings", "default", "? x"]))
    return json.dumps(draw(st.text(max_size=20)))


def _mappings(pairs: list) -> list:
    """Every mapping (list of pairs) in the tree, the top one first."""
    found = [pairs]
    for _, value in pairs:
        if isinstance(value, list):
            found += _mappings(value)
    return found


# How often each mutation is drawn: mostly values, so that the key checks see hostile ones;
# a duplicate or a replaced section stops the file at once, so they are rarer.
MUTATIONS = ["retype"] * 6 + ["add"] * 3 + ["rename"] * 2 + ["drop"] * 2 + ["duplicate", "replace section"]


@st.composite
def mutated_configs(draw) -> str:
    seed = draw(st.sampled_from(SEEDS))
    names = list(seed)
    kept = draw(st.lists(st.sampled_from(names), min_size=1, max_size=4, unique=True))
    if "default" in seed and draw(st.booleans()):
        kept = ["default"] + [n for n in kept if n != "default"]
    pairs = _pairs({name: seed[name] for name in kept})
    for _ in range(draw(st.integers(1, 5))):
        how = draw(st.sampled_from(MUTATIONS))
        sections = _mappings(pairs)[1:]  # inside sections; the top level only for "replace section"
        mapping = pairs if how == "replace section" or not sections else draw(st.sampled_from(sections))
        if not mapping and how != "add":
            continue
        i = draw(st.integers(0, max(len(mapping) - 1, 0)))
        if how == "drop":
            del mapping[i]
        elif how == "duplicate":
            mapping.insert(draw(st.integers(0, len(mapping))), list(mapping[i]))
        elif how in ("retype", "replace section"):
            mapping[i][1] = draw(values())
        elif how == "rename":
            mapping[i][0] = draw(keys())
        else:
            mapping.append([draw(keys()), draw(values())])
    return PRELUDE + _render(pairs)  # the prelude defines the anchors values may alias


# YAML's punctuation and some of a config's words, shuffled into text that is nearly YAML.
TOKENS = [
    "\n", "\n  ", "\n    ", ": ", ":", "- ", "-", "[", "]", "{", "}", ",", "&a ", "*a", "&b ", "*b", "!!int ",
    "!!str ", "!!map ", "? ", "|", ">", "'", '"', "#", "---", "...", "<<: ", "%YAML 1.1\n", "\t", "\\", "@", "`",
    "default", "3DBall", "trainer", "ppo", "sac", "batch_size", "reward_signals", "extrinsic", "gamma", ".inf",
    ".nan", "1e400", "9" * 50, "0", "-1", "true", "null", "~", " ", "é", "\ufeff", "\x85",
]


def _dry_run_behaviors(config) -> list[str]:
    return config.section_names()[:3] + ["3DBall", "NoSuchBehavior"]


def _run_settings_resolution(config) -> None:
    """What a run does with the file: resolve each behavior of an environment (here one with a
    vector observation and continuous+discrete actions, so spec_problems has work), then dump
    the resolved settings as --dry-run and configuration.yaml do."""
    spec = BehaviorSpec(((8,),), ActionSpec(2, (3,)))
    for behavior in _dry_run_behaviors(config):
        env = SimpleNamespace(behavior_specs={behavior: spec})
        try:
            resolved = _resolve_settings(config, env)
        except ConfigError as error:
            _check_message(error, config.path)
            continue
        yaml.safe_dump({b: s.as_dict() for b, s in resolved.items()})


def _check_message(error: ConfigError, path) -> None:
    message = str(error)
    assert str(path) in message, message
    assert "\n" not in message and len(message) < 1500, message


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "trainer_config.yaml"


def _feed(path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        config = load_trainer_config(path)
    except ConfigError as error:
        _check_message(error, path)
        return
    _run_settings_resolution(config)


def test_the_seeds_load_and_render_back_to_themselves():
    assert len(SEEDS) >= 2
    for seed in SEEDS:
        assert yaml.safe_load(_render(_pairs(seed))) == seed


@settings(FUZZ, max_examples=300)
@given(text=mutated_configs())
def test_mutated_real_configs_end_in_settings_or_a_config_error(config_path, text):
    _feed(config_path, text.encode())


@settings(FUZZ, max_examples=200)
@given(tokens=st.lists(st.sampled_from(TOKENS), max_size=60))
def test_yaml_token_soup_ends_in_settings_or_a_config_error(config_path, tokens):
    _feed(config_path, "".join(tokens).encode())


@settings(FUZZ, max_examples=150)
@given(data=st.one_of(st.binary(max_size=600), st.text(max_size=300).map(str.encode)))
def test_random_bytes_and_text_end_in_a_config_error_or_settings(config_path, data):
    _feed(config_path, data)


@settings(FUZZ, max_examples=100)
@given(text=mutated_configs(), cut=st.integers(0, 10_000), junk=st.binary(max_size=8))
def test_truncated_and_spliced_configs_end_in_settings_or_a_config_error(config_path, text, cut, junk):
    data = text.encode()
    cut %= len(data) + 1
    _feed(config_path, data[:cut] + junk + data[cut:][len(junk):])
