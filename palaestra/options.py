"""The command line's options: every flag of ML-Agents 0.16's ``mlagents-learn`` with its
default (the defaults live in :class:`RunOptions` and argparse reads them from there), the range
of each value, the parser, and :func:`check_options`, every check of the options alone. The entry
point is palaestra/cli.py; the checks against earlier runs' folders are palaestra/run_folders.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import math
import os
import struct
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn, Sequence

from palaestra import __version__
from palaestra.interrupts import print_unless_closed
from palaestra.networks.constants import WIDE_NETWORK_UNITS
from palaestra.shipped_files import shipped_copy

logger = logging.getLogger("palaestra")

NEWEST_COMMUNICATION_API = "1.5.0"  # the Unity APIs spoken (envs/unity/communicator.py) ...
COMMUNICATION_API_VERSION = f"1.0.0 to {NEWEST_COMMUNICATION_API}"  # ... all of them


@dataclass
class RunOptions:
    trainer_config_path: str = ""
    env: str | None = None
    curriculum: str | None = None
    lesson: int = 0
    sampler: str | None = None
    keep_checkpoints: int = 5
    num_envs: int = 1
    num_areas: int = 1
    acting: str = "auto"
    run_id: str = "ppo"
    save_freq: int = 50000
    seed: int = -1
    env_args: list[str] = field(default_factory=list)
    base_port: int = 5005
    max_lifetime_restarts: int = 10
    restarts_rate_limit_n: int = 1
    restarts_rate_limit_period_s: int = 60
    inference: bool = False
    resume: bool = False
    force: bool = False
    initialize_from: str | None = None
    no_graphics: bool = False
    debug: bool = False
    cpu: bool = False  # ML-Agents 0.16's flag: the same as torch_device "cpu"
    torch_device: str = "auto"  # auto, cpu, cuda or cuda:N (palaestra/machine.py: choose_device)
    torch_threads: int = 0
    width: int | None = None  # ML-Agents 0.16: not sent, the build keeps its own resolution (0.15: 84)
    height: int | None = None
    quality_level: int = 5
    time_scale: float = 20.0
    target_frame_rate: int = -1
    capture_frame_rate: int = 60
    timeout_wait: int = 60
    dry_run: bool = False
    flags_warned: tuple[str, ...] = ()  # what the deprecated flags given mean, said as the flags were read


class UsageError(Exception):
    """A command-line mistake; the message says what to do instead."""


INT32_MAX = 2**31 - 1  # Unity's engine settings are 32-bit integers
TORCH_DEVICES = ("auto", "cpu", "cuda")  # and cuda:N
SEED_MAX = 2**32 - 1  # numpy's legacy seeding takes [0, 2**32 - 1]
MAX_ENVS = 1024  # worker processes; far beyond any machine's cores, and below what exhausts it
ACTING_CHOICES = ("auto", "workers", "main")
MAX_RUN_ID_BYTES = 200  # a folder name, with room for "_<Behavior>_metrics.csv" under 255 bytes


@dataclass(frozen=True)
class IntRange:
    """The values an integer flag accepts: [low, high] (no upper bound if high is None), and -1
    where ``minus_one`` says what it means."""

    low: int
    high: int | None = None
    what: str = "an integer"
    minus_one: str | None = None

    def expected(self) -> str:
        expected = f"{self.what} >= {self.low}" if self.high is None else f"{self.what} in [{self.low}, {self.high}]"
        return expected + (f", or -1 for {self.minus_one}" if self.minus_one else "")

    def problem(self, number: int) -> str | None:
        if (number == -1 and self.minus_one) or (
                self.low <= number and (self.high is None or number <= self.high)):
            return None
        # Python refuses to print integers of more than 4300 digits
        shown = _shown(str(number)) if number.bit_length() < 10_000 else "an integer of thousands of digits"
        return f"expected {self.expected()}, got {shown}"


# every integer option's range: argparse checks the flags with it, and the run checks the
# options again (check_options), for RunOptions built in Python
INT_OPTIONS: dict[str, IntRange] = {
    "lesson": IntRange(0),
    "keep_checkpoints": IntRange(0),  # 0 keeps every one, as ML-Agents' TensorFlow saver did
    "num_envs": IntRange(1, MAX_ENVS),
    "num_areas": IntRange(1, MAX_ENVS),
    "save_freq": IntRange(1),
    "seed": IntRange(0, SEED_MAX, minus_one="a random seed"),
    "base_port": IntRange(1, 65535, what="a port number"),
    "max_lifetime_restarts": IntRange(0, minus_one="no limit"),
    "restarts_rate_limit_n": IntRange(0, minus_one="no limit"),
    "restarts_rate_limit_period_s": IntRange(1, INT32_MAX),
    "width": IntRange(1, INT32_MAX),
    "height": IntRange(1, INT32_MAX),
    "quality_level": IntRange(0, INT32_MAX),
    "target_frame_rate": IntRange(-1, INT32_MAX),
    "capture_frame_rate": IntRange(0, INT32_MAX),
    "timeout_wait": IntRange(1, INT32_MAX),
    "torch_threads": IntRange(0, 4096, what="a thread count (0: chosen by the network's width)"),
}


def _shown(value: str) -> str:
    """A value for a message, cut short if it is long (an integer of thousands of digits)."""
    if len(value) <= 40:
        return value
    quoted = len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""  # a repr: count what is inside
    return f"{value[:20]}...{value[-10:]} ({len(value) - 2 * quoted} characters)"


def text_problem(value: str) -> str | None:
    """Why a text option cannot be used, or None: bytes that were not UTF-8 in the command line
    (Python keeps them as surrogates, which cannot be written to configuration.yaml) or a NUL
    character (no file name can hold one)."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        try:  # valid UTF-8 all the same: this process reads its command line as ASCII
            if sys.getfilesystemencoding().lower().replace("-", "") == "utf8":
                raise UnicodeError
            os.fsencode(value).decode("utf-8")
        except UnicodeError:
            return "contains bytes that are not valid UTF-8"
        return (f"holds characters this process's ASCII locale ({sys.getfilesystemencoding()}) cannot read: run "
                "with a UTF-8 locale (LC_ALL=C.UTF-8) or PYTHONUTF8=1")
    return None


RUN_ID_RULE = (f"a run-id names a folder: printable characters other than '/' and '\\', no space at either "
               f"end, not '.' and not containing '..', at most {MAX_RUN_ID_BYTES} bytes (e.g. 3DBall_ppo-1)")


def run_id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a run-id (``--run-id``, ``--initialize-from``), or None."""
    if not value:
        return f"an empty run-id; {RUN_ID_RULE}"
    bad = text_problem(value)
    if bad is None and not value.isprintable():  # newlines, tabs, control and invisible format characters
        bad = "contains a control or non-printable character"
    if bad is None and ("/" in value or "\\" in value):
        bad = "contains a path separator"
    if bad is None and ".." in value:
        bad = "contains '..'"
    if bad is None and value == ".":  # models/. is models/ itself: --force would empty it of every run
        bad = "is the models folder itself"
    if bad is None and value != value.strip():  # ("x " and "x" would be two runs; " " a folder no one sees)
        bad = "is blank" if not value.strip() else "begins or ends with a space"
    if bad is None and len(value.encode("utf-8")) > MAX_RUN_ID_BYTES:
        bad = f"is {len(value.encode('utf-8'))} bytes long"
    if bad is None and os.name == "nt":
        bad = _windows_name_problem(value)
    return None if bad is None else f"{_shown(repr(value))} {bad}; {RUN_ID_RULE}"


WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def _windows_name_problem(value: str) -> str | None:
    """Why Windows cannot name a folder ``value`` (``C:x`` would even be a folder on drive C,
    outside models/), or None."""
    if any(c in value for c in '<>:"|?*'):
        return "contains a character Windows does not allow in a folder name (<>:\"|?*)"
    if value.endswith("."):
        return "ends with a dot, which Windows drops from a folder name"
    if value.split(".")[0].upper() in WINDOWS_RESERVED:
        return "is a name Windows reserves for a device"
    return None


def _as_float32(value: float) -> float | None:
    """``value`` as Unity's engine-configuration channel sends it, a 32-bit float (None: too large
    for one; numpy prints float32's largest as 3.4028235e38, which rounds to it and is taken)."""
    try:
        return struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        return None


def time_scale_problem(value: float) -> str | None:
    # (a value below float32's smallest, 1.4e-45, would reach Unity as 0: a frozen scene)
    sent = _as_float32(value) if math.isfinite(value) else None
    if sent is None or value <= 0 or sent == 0:
        return f"expected a number > 0 that a 32-bit float holds (about 1.4e-45 to 3.4e38), got {value}"
    return None


def check_options(options: RunOptions) -> None:
    """Every check of the options alone (no config, no environment, no earlier run; only whether
    ``--env`` names a Unity build is looked up on disk): each value in
    its range (as the flags' parsing checks them, again here for RunOptions built in Python) and the
    flags together. UsageError says what is wrong."""
    for name, allowed in INT_OPTIONS.items():
        value = getattr(options, name)
        if value is None and name in ("width", "height"):  # not given: not sent
            continue
        problem = "expected an integer" if not isinstance(value, int) or isinstance(value, bool) else \
            allowed.problem(value)
        if problem is not None:
            raise UsageError(f"--{name.replace('_', '-')}: {problem}")
    if not isinstance(options.time_scale, (int, float)) or isinstance(options.time_scale, bool):
        raise UsageError(f"--time-scale: expected a number, got {options.time_scale!r}")
    problem = time_scale_problem(options.time_scale)
    if problem is not None:
        raise UsageError(f"--time-scale: {problem}")
    # what argparse guarantees for the flags, checked again for RunOptions built in Python
    for name in ("inference", "resume", "force", "no_graphics", "debug", "cpu", "dry_run"):
        if not isinstance(getattr(options, name), bool):
            raise UsageError(f"--{name.replace('_', '-')}: expected True or False, got {getattr(options, name)!r}")
    if options.acting not in ACTING_CHOICES:
        raise UsageError(f"--acting: expected one of {', '.join(ACTING_CHOICES)}, got {options.acting!r}")
    for flag, value in (("trainer_config_path", options.trainer_config_path), ("--run-id", options.run_id)):
        if not isinstance(value, str):
            raise UsageError(f"{flag}: expected text, got {value!r}")
    texts = [("trainer_config_path", options.trainer_config_path), ("--env", options.env),
             ("--curriculum", options.curriculum), ("--sampler", options.sampler),
             ("--initialize-from", options.initialize_from)]
    if not isinstance(options.env_args, (list, tuple)):
        raise UsageError(f"--env-args: expected a list of arguments, got {options.env_args!r}")
    texts += [("--env-args", value) for value in options.env_args]
    for flag, value in texts:
        if value is not None and not isinstance(value, str):  # (a caller from Python)
            raise UsageError(f"{flag}: expected text, got {value!r}")
        if value is not None and text_problem(value) is not None:
            raise UsageError(f"{flag}: {value!r} {text_problem(value)}")
    # --env-args takes the rest of the line (ML-Agents' rule, for a Unity build's own arguments),
    # so a flag of ours after it would reach the environment, and a check before the environment
    # starts (the run folder's, say) would answer as if it had not been given
    ours = {flag for action in build_parser()._actions for flag in action.option_strings
            if flag.startswith("--")} if options.env_args else set()
    swallowed = ", ".join(repr(a) for a in options.env_args if a.split("=", 1)[0] in ours)
    if swallowed:
        from palaestra.envs.sources import source_kind  # (the sources import this module)

        try:
            build = source_kind(options.env) == "Unity build"
        except Exception:  # (an --env that names nothing is said where the environment is made)
            build = False
        if not build:  # key=value pairs, or the Editor, which takes none: a flag of ours there is a mistake
            raise UsageError(f"--env-args takes every argument after it, so {swallowed} would go to the "
                             "environment, not to mlagents-learn: give --env-args last")
        # a build's own command line may take a flag spelt as one of ours: passed on, but said
        logger.warning("%s passed to the Unity build (--env-args takes every argument after it); if meant for "
                       "mlagents-learn, give it before --env-args", swallowed)
    for flag, value in (("--run-id", options.run_id), ("--initialize-from", options.initialize_from)):
        if value is not None and run_id_problem(value) is not None:
            raise UsageError(f"{flag}: {run_id_problem(value)}")
    if options.base_port + options.num_envs - 1 > 65535:
        raise UsageError(f"--base-port {options.base_port} with --num-envs {options.num_envs}: the last worker's "
                         f"port would be {options.base_port + options.num_envs - 1}, past 65535; lower --base-port")
    if options.env is None and options.num_envs > 1:
        raise UsageError(f"--num-envs {options.num_envs} needs a Unity build (--env=<path>): the Unity Editor is one "
                         "instance, on port 5004; build the project to train with several instances")
    if torch_device_problem(options.torch_device) is not None:
        raise UsageError(f"--torch-device: {torch_device_problem(options.torch_device)}")
    if options.cpu and options.torch_device not in ("auto", "cpu"):
        raise UsageError(f"--cpu and --torch-device {options.torch_device} contradict each other: give one of them")
    if options.resume and options.force:
        raise UsageError("--resume and --force contradict each other: --resume continues a run, --force starts it over")
    if options.inference and options.force:
        raise UsageError("--inference and --force contradict each other: --force deletes the run whose model "
                         "--inference would run")
    if options.initialize_from == options.run_id and not (options.resume or options.inference):
        raise UsageError(f"--initialize-from names the run itself ({options.run_id!r}); pass --resume to continue "
                         "it, or choose another --run-id")
    for flag, path in (("--curriculum", options.curriculum), ("--sampler", options.sampler)):
        if path is not None and not os.path.exists(path):
            raise UsageError(f"{flag}: file {path!r} does not exist{shipped_copy(path)}")
    if options.sampler is not None and os.path.isdir(options.sampler):
        raise UsageError(f"--sampler: {options.sampler!r} is a folder; give the path of a sampler YAML file")


def in_main_process(options: RunOptions) -> bool:
    """Whether the environment runs in the main process: --num-envs 1, unless --acting=workers asks
    for one acting worker."""
    return options.num_envs == 1 and options.acting != "workers"


def warn_about_unused_options(options: RunOptions) -> None:
    """Warn about flags that are valid but have no effect together with the others."""
    if options.lesson and options.curriculum is None:
        logger.warning("--lesson %d has no effect without --curriculum", options.lesson)
    restart_flags = ("max_lifetime_restarts", "restarts_rate_limit_n", "restarts_rate_limit_period_s")
    in_process = in_main_process(options)
    if in_process and any(getattr(options, f) != getattr(RunOptions(), f) for f in restart_flags):
        logger.warning("the --max-lifetime-restarts and --restarts-rate-limit-* flags have no effect with "
                       "--num-envs 1: the environment runs in the main process, where a crash stops the run")
    if in_process and options.acting == "main":
        logger.warning("--acting=main has no effect with --num-envs 1: the environment and the policy both run in "
                       "the main process")
    from palaestra.machine import usable_cores  # machine imports this module (and torch): imported here

    cores = usable_cores()
    if options.num_envs > 4 * cores:  # each worker is a process (a Unity build: a whole game) stepping at once
        logger.warning("--num-envs %d on a machine with %d CPU core(s): the workers will share them, starting and "
                       "stepping slowly; one environment per core is usually the fastest (--num-areas adds agents "
                       "inside one built-in environment)", options.num_envs, cores)


def _converted(value: str, convert: Callable[[str], float], kind: str):
    """``convert(value)``, or argparse's error naming the kind of value expected."""
    try:
        return convert(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind}, got {_shown(repr(value))}") from None


def _int(value: str) -> int:
    return _converted(value, int, "an integer")


def positive_int(value: str) -> int:
    """The argparse type of a count of at least 1 (the other commands' flags)."""
    number = _int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {number}")
    return number


def _ranged(option: str) -> Callable[[str], int]:
    """The argparse type of integer option ``option``, checked against INT_OPTIONS."""
    def parse(value: str) -> int:
        if value.strip().lstrip("+-").isdigit() and len(value) > 4000:  # past what int() reads: far out of range
            raise argparse.ArgumentTypeError(f"expected {INT_OPTIONS[option].expected()}, got {_shown(value)}")
        number = _int(value)
        problem = INT_OPTIONS[option].problem(number)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return number
    return parse


def _time_scale(value: str) -> float:
    number = _converted(value, float, "a number")
    problem = time_scale_problem(number)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return number


def _text(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{_shown(repr(value))} {problem}")
    return value


def torch_device_problem(value: object) -> str | None:
    """What is wrong with a --torch-device value, or None (auto, cpu, cuda or cuda:N)."""
    if not isinstance(value, str):
        return f"expected a string (auto, cpu, cuda or cuda:N), got {type(value).__name__} {value!r}"
    index = value[5:] if value.startswith("cuda:") else None
    if value in TORCH_DEVICES or (index is not None and index.isascii() and index.isdigit() and len(index) <= 4
                                  and index == str(int(index))):  # as torch reads it: no sign, no leading zero
        return None
    return f"expected auto, cpu, cuda or cuda:N (N a GPU's index), got {_shown(repr(value))}"


def _checked(problem_of: Callable[[str], str | None]) -> Callable[[str], str]:
    """An argparse type: the value as given, unless ``problem_of`` names what is wrong with it."""
    def parse(value: str) -> str:
        problem = problem_of(value)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value
    return parse


_torch_device = _checked(torch_device_problem)
_run_id = _checked(run_id_problem)


class FlagParser(argparse.ArgumentParser):
    """Flags are taken whole (argparse's default reads any prefix: `--for` was `--force`, which
    empties the run's folder), and an unknown flag is answered with the nearest real one."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_abbrev=False, **kwargs)

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        self._given = list(sys.argv[1:] if args is None else args)  # (for error)
        return super().parse_args(args, namespace)

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        given = getattr(self, "_given", [])
        if "required: trainer_config_path" in message and "--env-args" in given:
            after = given[given.index("--env-args") + 1:]
            configs = [a for a in after if a.lower().endswith((".yaml", ".yml", ".json"))]
            if configs:  # (--env-args took it, as it takes every argument after it)
                message += (f" ({configs[0]} came after --env-args, which takes every argument after it: give the "
                            "trainer config before --env-args)")
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            # (not the hidden ones: --train and --load do nothing now but warn)
            known = [flag for action in self._actions if action.help != argparse.SUPPRESS
                     for flag in action.option_strings if flag.startswith("--")]
            hints = []
            for word in message[len(prefix):].split():
                flag = word.split("=", 1)[0]
                if flag.startswith("--"):
                    spelt = flag.replace("_", "-")
                    close = [k for k in known if k.startswith(spelt)] or \
                        difflib.get_close_matches(spelt, known, n=1, cutoff=0.75)
                    if close:
                        hints.append(f"{flag}: did you mean {' or '.join(close)}?")
            left_over = [w for w in message[len(prefix):].split() if not w.startswith("-")]
            if left_over and any(a.startswith("--env-args=") for a in given):  # it takes only the word after '='
                hints.append("--env-args=... takes one argument; to pass several, write --env-args a=1 b=2 "
                             "(no '=', last on the line)")
            if hints:
                message += " (" + "; ".join(hints) + ")"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    from palaestra.envs.builtin import BUILTIN_ENVS  # numpy only: --help stays quick

    d = RunOptions()
    p = FlagParser(
        prog="mlagents-learn",
        description=(
            "Train the behaviors of an environment with reinforcement learning (Palaestra, a "
            "re-implementation of the ML-Agents 0.16 trainer). Example: mlagents-learn "
            "config/trainer_config.yaml --env=3DBall --run-id=first"
        ),
        epilog=(
            "Outputs: models/<run-id>/ (checkpoints, <Behavior>.onnx, configuration.yaml) and "
            "summaries/<run-id>_<Behavior>/ (TensorBoard: tensorboard --logdir=summaries). "
            "See docs/configuration.md for the trainer config format."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("trainer_config_path", type=_text,
                   help="trainer configuration YAML (ML-Agents 0.15/0.16 format)")
    p.add_argument("--env", type=_text, default=d.env,
                   help=f"built-in environment name ({', '.join(BUILTIN_ENVS)}), a Gymnasium id (CartPole-v1), "
                        "a Unity build's path (none: the Unity Editor), a Python factory module:callable, or "
                        "pettingzoo:module (docs/environments.md)")
    p.add_argument("--curriculum", type=_text, default=d.curriculum,
                   help="curriculum: a YAML (or JSON) file keyed by behavior, or a folder of <Behavior>.json "
                        "files (ML-Agents <= 0.13); each lesson sets environment parameters (docs/curricula.md)")
    p.add_argument("--lesson", type=_ranged("lesson"), default=d.lesson, help="start lesson of every curriculum (clamped to its last lesson); with --resume, a "
                        "lesson above 0 replaces the lesson the checkpoints saved")
    p.add_argument("--sampler", type=_text, default=d.sampler,
                   help="environment-parameter sampler YAML: resampling-interval and a uniform, gaussian or "
                        "multirange_uniform sampler per parameter, drawn per worker from --seed (docs/curricula.md)")
    p.add_argument("--keep-checkpoints", type=_ranged("keep_checkpoints"), default=d.keep_checkpoints,
                   help="checkpoints kept per behavior; older ones are deleted (0 keeps every one)")
    p.add_argument("--num-envs", type=_ranged("num_envs"), default=d.num_envs,
                   help="environment instances: 1 runs in the main process; more run one per worker "
                        "process (see --acting)")
    p.add_argument("--acting", choices=ACTING_CHOICES, default=d.acting,
                   help="where the policy acts with --num-envs > 1: 'workers' runs a copy of it in each "
                        "worker, which sends finished experience in rounds (PPO); 'main' runs it "
                        "in the main process on all workers' agents, in two halves that take turns; 'auto' "
                        "(default) picks 'workers' where it can. With --num-envs 1, 'workers' runs the one "
                        "environment in an acting worker, so that learning overlaps collection")
    p.add_argument("--num-areas", type=_ranged("num_areas"), default=d.num_areas,
                   help="copies of the training area inside one environment (multiplies the agents)")
    p.add_argument("--run-id", type=_run_id, default=d.run_id,
                   help="run name: outputs go to models/<run-id>, summaries/ (printable characters other than "
                        "/ and \\, without '..')")
    p.add_argument("--save-freq", type=_ranged("save_freq"), default=d.save_freq,
                   help="global steps between checkpoints (one per environment instance stepped, as in "
                        "ML-Agents: --num-envs 4 counts 4 per round)")
    p.add_argument("--seed", type=_ranged("seed"), default=d.seed,
                   help=f"random seed in [0, {SEED_MAX}]; -1 picks one at random")
    p.add_argument("--base-port", type=_ranged("base_port"), default=d.base_port,
                   help="first port: environment worker i of --num-envs gets base-port + i (a factory "
                        "that takes a `port` argument receives it)")
    p.add_argument("--max-lifetime-restarts", type=_ranged("max_lifetime_restarts"),
                   default=d.max_lifetime_restarts,
                   help="how often one --num-envs worker that crashes or hangs is restarted over the run "
                        "before the run stops (-1: no limit)")
    p.add_argument("--restarts-rate-limit-n", type=_ranged("restarts_rate_limit_n"),
                   default=d.restarts_rate_limit_n,
                   help="how often one worker may be restarted within --restarts-rate-limit-period-s "
                        "before the run stops (-1: no limit)")
    p.add_argument("--restarts-rate-limit-period-s", type=_ranged("restarts_rate_limit_period_s"),
                   default=d.restarts_rate_limit_period_s,
                   help="the period, in seconds, of --restarts-rate-limit-n")
    p.add_argument("--inference", action="store_true", help="run the policy without training or saving")
    p.add_argument("--resume", action="store_true", help="continue the run --run-id from its last checkpoint")
    p.add_argument("--force", action="store_true", help="start the run --run-id over: its models folder (checkpoints, exported models, configuration) is emptied; the summaries of each behavior it trains start anew")
    p.add_argument("--initialize-from", type=_run_id, default=d.initialize_from, metavar="RUN_ID",
                   help="start from the weights of another run, at step 0")
    p.add_argument("--no-graphics", action="store_true", help="Unity builds: run without rendering")
    p.add_argument("--debug", action="store_true", help="debug logging and per-update metrics CSV")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when CUDA is available "
                   "(the same as --torch-device cpu)")
    p.add_argument("--torch-device", type=_torch_device, default=d.torch_device, metavar="DEVICE",
                   help="where the networks train: cpu, cuda or cuda:N; auto (default) takes a CUDA GPU where "
                        "a behavior sees images or has hidden_units of 512 or more, and the CPU "
                        "otherwise, where such policies train faster (docs/outputs.md)")
    p.add_argument("--torch-threads", type=_ranged("torch_threads"), default=d.torch_threads, metavar="N",
                   help="threads training uses on the CPU (torch's, or numpy's BLAS where every behavior "
                        "trains on the CPU accelerator: plain networks over vector observations); 0 (default) "
                        f"picks one for networks under {WIDE_NETWORK_UNITS} hidden units and every core from "
                        "there or where a network sees images. Set it on a machine shared with other jobs, "
                        "where threads waiting for busy cores slow training down")
    p.add_argument("--width", type=_ranged("width"), default=d.width, help="Unity builds: window width (default: the build's own; "
                   "with only one of --width and --height, the other is 84)")
    p.add_argument("--height", type=_ranged("height"), default=d.height, help="Unity builds: window height (default: the build's own)")
    p.add_argument("--quality-level", type=_ranged("quality_level"), default=d.quality_level,
                   help="Unity quality level")
    p.add_argument("--time-scale", type=_time_scale, default=d.time_scale, help="Unity time scale (> 0)")
    p.add_argument("--target-frame-rate", type=_ranged("target_frame_rate"), default=d.target_frame_rate,
                   help="Unity target frame rate (-1: the platform's default)")
    p.add_argument("--capture-frame-rate", type=_ranged("capture_frame_rate"), default=d.capture_frame_rate,
                   help="Unity capture frame rate: the simulated frames per second of game time, whatever "
                        "the real rate (Time.captureFramerate; 0: off)")
    p.add_argument("--timeout-wait", type=_ranged("timeout_wait"), default=d.timeout_wait,
                   help="Unity: seconds to wait for the build or the Editor to connect, and for each step")
    p.add_argument("--dry-run", action="store_true",
                   help="make every check a real run makes before it trains (config, environment, flags, "
                        "checkpoints to resume or initialize from) and its first environment step (with "
                        "placeholder actions; online_bc's teachers answer it), print each behavior's "
                        "settings, train nothing")
    p.add_argument("--version", action=_PrintVersion, nargs=0, help="print versions and exit")
    p.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--train", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--env-args", nargs=argparse.REMAINDER, default=[],
                   help="everything after this goes to the environment: key=value keyword arguments "
                   "for a Gymnasium id or a Python factory; the command-line arguments of a Unity build")
    return p


class _PrintVersion(argparse.Action):
    """--version: print the versions (computed only when asked: importing torch is slow)."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        print_unless_closed(version_text())
        parser.exit()


def version_text() -> str:
    # the installed distributions' versions, read from their metadata: importing torch to ask it
    # would take a second or two (and could be cut short by a Ctrl+C: palaestra/cli.py)
    return (
        f"palaestra {__version__} (mlagents-learn compatible with ML-Agents 0.16 configs)\n"
        f"  communicator API: {COMMUNICATION_API_VERSION}\n"
        f"  torch: {_installed_version('torch')}\n  numpy: {_installed_version('numpy')}"
    )


def _installed_version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def parse_args(argv: Sequence[str] | None = None) -> RunOptions:
    args = build_parser().parse_args(argv)
    args.resume = args.resume or args.load
    args.flags_warned = tuple(
        (["--load is deprecated; it means --resume"] if args.load else [])
        + (["--train is deprecated and has no effect; training is the default, --inference turns it off"]
           if args.train else []))
    for message in args.flags_warned:
        logger.warning(message)
    return RunOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RunOptions)})


def setup_logging(debug: bool) -> None:
    level = logging.DEBUG if debug else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    handler._palaestra = True  # type: ignore[attr-defined]
    root = logging.getLogger("palaestra")
    root.handlers = [h for h in root.handlers if not getattr(h, "_palaestra", False)] + [handler]
    root.setLevel(level)
    root.propagate = False
    # numpy's overflow and invalid-value warnings from Palaestra's own updates (the numpy
    # accelerator) come with source lines a user cannot act on; a diverging run stops with its
    # own message instead (trainer.DivergedError). --debug shows them. numpy's reductions (sum,
    # mean, std) report from numpy's own modules.
    for module in (r"palaestra\.", r"numpy\.(_core|core)\.(fromnumeric|_methods)"):
        warnings.filterwarnings("default" if debug else "ignore", category=RuntimeWarning, module=module)
