"""``mlagents-learn`` / ``palaestra``: flags → :class:`RunOptions` → the run.

Every flag of ML-Agents 0.16's ``mlagents-learn`` is here with its default; the defaults live
in :class:`RunOptions` and argparse reads them from there.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from typing import Sequence

from palaestra import __version__

logger = logging.getLogger("palaestra")

COMMUNICATION_API_VERSION = "1.0.0"


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
    cpu: bool = False
    width: int = 84
    height: int = 84
    quality_level: int = 5
    time_scale: float = 20.0
    target_frame_rate: int = -1
    dry_run: bool = False


class UsageError(Exception):
    """A command-line mistake; the message says what to do instead."""


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None


def _non_negative(value: str) -> int:
    number = _int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return number


def _positive(value: str) -> int:
    number = _int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return number


def _limit(value: str) -> int:
    number = _int(value)
    if number < -1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, or -1 for no limit, got {value}")
    return number


def _port(value: str) -> int:
    number = _int(value)
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in [1, 65535], got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    d = RunOptions()
    p = argparse.ArgumentParser(
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
    p.add_argument("trainer_config_path", help="trainer configuration YAML (ML-Agents 0.15/0.16 format)")
    p.add_argument("--env", default=d.env, help="built-in environment name (3DBall, 3DBallHard, Basic, "
                   "GridWorld, Simple1DDiscrete, Simple1DContinuous), a Gymnasium id (CartPole-v1), a "
                   "Python factory module:callable, or pettingzoo:module (docs/environments.md)")
    p.add_argument("--curriculum", default=d.curriculum, help="curriculum YAML file (not supported yet)")
    p.add_argument("--lesson", type=_non_negative, default=d.lesson, help="start lesson of every curriculum")
    p.add_argument("--sampler", default=d.sampler, help="environment-parameter sampler YAML (not supported yet)")
    p.add_argument("--keep-checkpoints", type=_positive, default=d.keep_checkpoints,
                   help="checkpoints kept per behavior; older ones are deleted")
    p.add_argument("--num-envs", type=_positive, default=d.num_envs,
                   help="environment instances: 1 runs in the main process; more run one per worker "
                        "process (see --acting)")
    p.add_argument("--acting", choices=("auto", "workers", "main"), default=d.acting,
                   help="where the policy acts with --num-envs > 1: 'workers' runs a copy of it in each "
                        "worker, which sends finished experience in rounds (PPO); 'main' runs it "
                        "in the main process on all workers' agents, in two halves that take turns; 'auto' "
                        "(default) picks 'workers' where it can. With --num-envs 1, 'workers' runs the one "
                        "environment in an acting worker, so that learning overlaps collection")
    p.add_argument("--num-areas", type=_positive, default=d.num_areas,
                   help="copies of the training area inside one environment (multiplies the agents)")
    p.add_argument("--run-id", default=d.run_id, help="run name: outputs go to models/<run-id>, summaries/")
    p.add_argument("--save-freq", type=_positive, default=d.save_freq,
                   help="global steps between checkpoints (one per environment instance stepped, as in "
                        "ML-Agents: --num-envs 4 counts 4 per round)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed; -1 picks one at random")
    p.add_argument("--base-port", type=_port, default=d.base_port,
                   help="first port: environment worker i of --num-envs gets base-port + i (a factory "
                        "that takes a `port` argument receives it)")
    p.add_argument("--max-lifetime-restarts", type=_limit, default=d.max_lifetime_restarts,
                   help="how often one --num-envs worker that crashes or hangs is restarted over the run "
                        "before the run stops (-1: no limit)")
    p.add_argument("--restarts-rate-limit-n", type=_limit, default=d.restarts_rate_limit_n,
                   help="how often one worker may be restarted within --restarts-rate-limit-period-s "
                        "before the run stops (-1: no limit)")
    p.add_argument("--restarts-rate-limit-period-s", type=_positive, default=d.restarts_rate_limit_period_s,
                   help="the period, in seconds, of --restarts-rate-limit-n")
    p.add_argument("--inference", action="store_true", help="run the policy without training or saving")
    p.add_argument("--resume", action="store_true", help="continue the run --run-id from its last checkpoint")
    p.add_argument("--force", action="store_true", help="start the run --run-id over, deleting its old outputs")
    p.add_argument("--initialize-from", default=d.initialize_from, metavar="RUN_ID",
                   help="start from the weights of another run, at step 0")
    p.add_argument("--no-graphics", action="store_true", help="Unity builds: run without rendering")
    p.add_argument("--debug", action="store_true", help="debug logging and per-update metrics CSV")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when CUDA is available")
    p.add_argument("--width", type=_positive, default=d.width, help="Unity builds: window width")
    p.add_argument("--height", type=_positive, default=d.height, help="Unity builds: window height")
    p.add_argument("--quality-level", type=_non_negative, default=d.quality_level, help="Unity quality level")
    p.add_argument("--time-scale", type=float, default=d.time_scale, help="Unity time scale")
    p.add_argument("--target-frame-rate", type=int, default=d.target_frame_rate, help="Unity target frame rate")
    p.add_argument("--dry-run", action="store_true",
                   help="load and validate everything, print each behavior's settings, train nothing")
    p.add_argument("--version", action=_PrintVersion, nargs=0, help="print versions and exit")
    p.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--train", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--env-args", nargs=argparse.REMAINDER, default=[],
                   help="everything after this goes to the environment: key=value keyword arguments "
                   "for a Gymnasium id or a Python factory")
    return p


class _PrintVersion(argparse.Action):
    """--version: print the versions (computed only when asked: importing torch is slow)."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        print(version_text())
        parser.exit()


def version_text() -> str:
    import numpy
    import torch

    return (
        f"palaestra {__version__} (mlagents-learn compatible with ML-Agents 0.16 configs)\n"
        f"  communicator API: {COMMUNICATION_API_VERSION}\n"
        f"  torch: {torch.__version__}\n  numpy: {numpy.__version__}"
    )


def parse_args(argv: Sequence[str] | None = None) -> RunOptions:
    args = build_parser().parse_args(argv)
    if args.load:
        logger.warning("--load is deprecated; it means --resume")
        args.resume = True
    if args.train:
        logger.warning("--train is deprecated and has no effect; training is the default, --inference turns it off")
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunOptions)}
    return RunOptions(**values)


def setup_logging(debug: bool) -> None:
    level = logging.DEBUG if debug else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    handler._palaestra = True  # type: ignore[attr-defined]
    root = logging.getLogger("palaestra")
    root.handlers = [h for h in root.handlers if not getattr(h, "_palaestra", False)] + [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    setup_logging(options.debug)
    from palaestra.run import run

    return run(options)


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
