"""Property-based fuzzing of the command line: random combinations of the real flags (read from
build_parser) with hostile values (huge and negative integers, inf, nan, empty strings, unicode,
newlines, path separators, undecodable bytes) are parsed and checked in-process, as the run does
before anything else (options.parse_args, then options.check_options and
run_folders.check_run_folders). The only ways out allowed are options that pass, argparse's
usage error (SystemExit 2) and UsageError; never another exception. Nothing is trained: the run's later steps (config, environment) have their own tests."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import math
from datetime import timedelta

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palaestra.options import INT_OPTIONS, RunOptions, UsageError, build_parser, check_options, parse_args
from palaestra.run_folders import check_run_folders

FUZZ = settings(database=None, derandomize=True, deadline=timedelta(seconds=2),
                suppress_health_check=[HealthCheck.too_slow])

SPECIAL = ["", " ", "-1", "0", "1", "-2", "65535", "65536", "1024", "1025", "4294967295", "4294967296",
           "2147483648", "1e400", "-1e400", "inf", "-inf", "nan", "NaN", "1.5", "1_000", "0x10", "１２", "٣",
           ".", "..", "a..b", "/", "a/b", "a\\b", "../x", "a\nb", "\t", "\r", "\x1b[31m", "\x00", "\udcff", "\u200b",
           "\u2028", "ü", "名前", "-", "--", "=", "a=b", "existing", "ppo", "x" * 300, "9" * 5000]
VALUES = st.one_of(
    st.sampled_from(SPECIAL),
    st.integers(-(2**80), 2**80).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
    st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zl", "Zp", "Zs", "Po"]), max_size=6),
)

# values a flag would take: most drawn values are these, so that most command lines get past
# argparse into the run's checks, with a hostile value now and then among them
PLAUSIBLE = {
    "int": st.sampled_from(["1", "2", "3", "-1", "0", "5005", "65000", "1024", "100"]),
    "float": st.sampled_from(["1", "0.5", "20", "1e300"]),
    "text": st.sampled_from(["run1", "existing", "ppo", "3DBall", "c.yaml", "x=1", "a.b", "é"]),
    "choice": st.sampled_from(["auto", "workers", "main"]),
}


def _value(kind: str) -> st.SearchStrategy[str]:
    plausible = PLAUSIBLE[kind]
    return st.one_of(plausible, plausible, plausible, plausible, plausible, VALUES)


def _options() -> list[tuple[str, str]]:
    """Every option string of the parser with its kind: 'switch' (no value), 'int', 'float',
    'text', 'choice' or 'rest' (--env-args). --help and --version print and exit 0: left out."""
    found = []
    for action in build_parser()._actions:
        for option in action.option_strings:
            if option in ("-h", "--help", "--version"):
                continue
            if action.nargs == 0:
                kind = "switch"
            elif action.nargs == argparse.REMAINDER:
                kind = "rest"
            elif action.choices:
                kind = "choice"
            elif action.dest in INT_OPTIONS:
                kind = "int"
            elif action.dest == "time_scale":
                kind = "float"
            else:
                kind = "text"
            found.append((option, kind))
    return found


OPTIONS = _options()


@st.composite
def argvs(draw: st.DrawFn) -> list[str]:
    # the config path (or none, or one too many)
    argv = draw(st.one_of(st.just(["c.yaml"]), st.just(["c.yaml"]), st.lists(VALUES, max_size=2)))
    rest: list[str] = []
    for option, kind in draw(st.lists(st.sampled_from(OPTIONS), max_size=8)):
        if kind == "switch":
            argv.append(option)
            continue
        if kind == "rest":
            rest = [option, *draw(st.lists(_value("text"), max_size=3))]
            continue
        value = draw(_value(kind))
        if draw(st.booleans()):
            argv.append(f"{option}={value}")
        else:
            argv += [option, value]
    return argv + rest


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    models = tmp_path_factory.mktemp("fuzz") / "models"
    (models / "existing" / "3DBall").mkdir(parents=True)  # a run-id already used
    (models / "existing" / "3DBall" / "checkpoint-10.pt").write_bytes(b"")
    return models


def _check(options: RunOptions, models) -> None:
    """The run's checks of the options, and for options they accept, the configuration.yaml the run
    writes from them."""
    try:
        check_options(options)
        check_run_folders(options, models)
    except UsageError as e:
        assert str(e)
        return
    text = yaml.safe_dump(dataclasses.asdict(options), sort_keys=False)
    text.encode("utf-8")
    assert options.seed == -1 or 0 <= options.seed < 2**32
    assert math.isfinite(options.time_scale) and options.time_scale > 0


@settings(FUZZ, max_examples=500)
@given(argv=argvs())
def test_random_command_lines_are_options_or_usage_errors(models, argv):
    with contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            options = parse_args(argv)
        except SystemExit as e:
            assert e.code == 2 and "error:" in err.getvalue()
            return
    _check(options, models)


def _field_values(field: dataclasses.Field) -> st.SearchStrategy:
    default = field.default if field.default is not dataclasses.MISSING else []  # env_args, the one list
    wrong = st.one_of(st.none(), st.booleans(), VALUES, st.floats())
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.one_of(st.integers(-(2**70), 2**70), st.integers(-3, 70000), st.sampled_from([10**5000, -(10**5000)]),
                         wrong)
    if isinstance(default, float):
        return st.one_of(st.floats(allow_nan=True, allow_infinity=True), wrong)
    if isinstance(default, list):
        return st.lists(VALUES, max_size=3)
    return st.one_of(VALUES, st.none())


@settings(FUZZ, max_examples=300)
@given(options=st.builds(RunOptions, **{f.name: _field_values(f) for f in dataclasses.fields(RunOptions)}))
def test_run_options_built_in_python_are_checked_too(models, options):
    _check(options, models)
