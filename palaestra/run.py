"""The run: build (options → environment → one trainer per behavior), loop, finish (save, export).

Every check a run makes before it trains happens in :func:`_build`, for the real run and
``--dry-run`` alike; ``--dry-run`` then prints what it built and trains nothing. The rules of the
run's folders (``--resume``, ``--force``, ``--initialize-from``, ``--inference``) are in
palaestra/run_folders.py; seeding, the device and threads in palaestra/machine.py. A checkpoint is
written every ``--save-freq`` environment steps and at the end; the first Ctrl+C (or SIGTERM,
SIGHUP) stops the loop, saves and exports, and exits 128 + the signal (palaestra/interrupts.py). With
``--curriculum`` or ``--sampler`` the environments reset with new parameter values before the first
episode, when a lesson advances and every resampling interval (palaestra/curriculum/). A behavior
that appears after the first reset (envs/base.py) gets its trainer when it appears, with the same
checks (:func:`_adopt_new_behaviors`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import yaml

from palaestra import __version__
from palaestra.capabilities import capabilities, settings_problems, spec_notes, spec_problems
from palaestra.checkpoints import (CheckpointError, CheckpointManager, SaveError, atomic_write_text, os_reason,
                                  remove_partial_files)
from palaestra.curriculum import EnvironmentParameters, load_curricula, load_sampler
from palaestra.demos.reader import DemoError
from palaestra.demos.record import RecordError
from palaestra.envs.base import STAT_MOST_RECENT, STAT_SUM, BehaviorSpec, EngineConfig, Env, EnvClosed, EnvError
from palaestra.envs.checker import refuse_non_finite
from palaestra.envs.sources import builtin_class, describe_specs, factory_takes, make_env, parse_env_args, source_kind
from palaestra.imports import import_beside
from palaestra.interrupts import STOPPING, Interrupts, signal_name
from palaestra.machine import (
    check_device,
    choose_device,
    has_images,
    limit_threads,
    resumed_streams_seed,
    seed_everything,
    seed_streams,
)
from palaestra.os_limits import too_many_open_files
from palaestra.options import RunOptions, UsageError, check_options, in_main_process, warn_about_unused_options
from palaestra.run_folders import (
    CONFIGURATION,
    RUN_LOGS,
    RunLock,
    check_name_lengths,
    check_output_folder,
    check_run_folders,
    check_summaries_owner,
    claim_summaries,
    newest_checkpoint_step,
    output_names,
    recorded_behaviors,
    recorded_output_names,
    recorded_seed,
    restore,
    start_over_if_forced,
    summaries_category,
)
from palaestra.self_play import (
    SelfPlayController,
    join_self_play,
    joins_a_group,
    learners,
    mixed_teams,
    self_play_names,
    shared_files,
    team_of,
)
from palaestra.settings import (
    ConfigError,
    TrainerConfig,
    TrainerSettings,
    load_trainer_config,
)
from palaestra.stats import (
    ConsoleWriter,
    CSVWriter,
    GaugeWriter,
    MetricsCSV,
    StatsReporter,
    TensorBoardWriter,
)
from palaestra.teachers import make_teacher, teacher_loop
from palaestra.timers import TIMERS, timed
from palaestra.trainer import BehaviorTrainer, DivergedError
from palaestra.workers.acting import ActingWorkers
from palaestra.workers.pool import RestartLimits, worker_timeout
from palaestra.workers.stepping import WorkerPoolEnv

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("palaestra")


@dataclass
class RunParts:
    """What the loop and the end of a run need, built once by :func:`_build`."""

    options: RunOptions
    env: Env
    config: TrainerConfig
    settings: dict[str, TrainerSettings]  # per behavior
    trainers: dict[str, BehaviorTrainer]  # per behavior
    output_names: dict[str, str]  # per behavior, also of a resumed run's behaviors not seen yet (run_folders.py)
    seed: int  # what the environment and the trainers draw from: the run's seed, or after --resume its continuation
    global_step: int  # where the run starts: 0, or the step --resume restored
    interrupts: Interrupts
    models: Path
    summaries: Path
    device: torch.device  # every behavior's, chosen at the start (machine.choose_device)
    device_reason: str
    parameters: EnvironmentParameters | None = None  # --curriculum, --sampler
    threads: str = ""  # the CPU threads of torch and numpy's BLAS (machine.limit_threads)
    self_play: SelfPlayController = dataclasses.field(default_factory=SelfPlayController)  # the learning team
    run_seed: int = -1  # the run's seed (--seed, or the one it recorded), recorded and logged

    @property
    def run_dir(self) -> Path:
        return self.models / self.options.run_id

    @property
    def training(self) -> bool:
        return not self.options.inference


def run(options: RunOptions, interrupts: Interrupts | None = None) -> int:
    """Run mlagents-learn with these options; return the process exit code. ``interrupts``: the
    signal handlers the command line installed (cli.main); without it, run installs its own."""
    own = interrupts is None
    if interrupts is None:
        interrupts = Interrupts()
        interrupts.install()
    try:
        return _run(options, interrupts)
    except (ConfigError, EnvError, CheckpointError, UsageError, SaveError) as e:
        logger.error("%s", e)
        if e.__cause__ is not None:  # e.g. the user's own factory, environment or module: where it failed
            logger.debug("the error above came from:", exc_info=e.__cause__)
        return 1
    except OSError as e:  # a folder that cannot be written, a full disk, a file where a folder goes
        if too_many_open_files(e) is not None:  # (workers' pipes, a many-behavior run's files)
            logger.error("%s", too_many_open_files(e))
        elif isinstance(e, FileExistsError) and e.filename:
            logger.error("cannot make the folder %s: a file of that name is there; move or delete it", e.filename)
        else:
            logger.error("cannot read or write %s: %s", e.filename or "a file", e.strerror or e)
        logger.debug("the error above came from:", exc_info=e)
        return 1
    except SystemExit as e:  # an environment's (or a factory's) own code, during start-up
        logger.error("the environment's code called sys.exit(%r) while the run started; nothing was trained", e.code)
        return 1
    except (KeyboardInterrupt, Exception) as e:  # during start-up: the loop and the final save never raise it
        return interrupts.stopped_during_start_up(e, logger.info)
    finally:
        if own:
            interrupts.restore()


class _WarningCount(logging.Handler):
    """Counts the run's warnings, for the dry run's last line."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def _run(options: RunOptions, interrupts: Interrupts) -> int:
    warnings = _WarningCount()
    warnings.count = len(options.flags_warned)  # said while the flags were read
    logger.addHandler(warnings)
    try:
        return _checked_run(options, interrupts, warnings)
    finally:
        logger.removeHandler(warnings)


def _checked_run(options: RunOptions, interrupts: Interrupts, warnings: _WarningCount) -> int:
    models, summaries = Path("models"), Path("summaries")
    check_options(options)
    if options.inference and options.resume:  # ML-Agents 0.16's way to run a trained model: --inference alone
        options = dataclasses.replace(options, resume=False)
    check_device(options)
    check_run_folders(options, models)
    config = load_trainer_config(options.trainer_config_path)
    config.training = not options.inference
    import_beside(options.trainer_config_path)  # --env=my_env:make finds my_env.py next to the config
    if options.resume and options.seed == -1:  # the run's own seed, not a new random one
        recorded = recorded_seed(models / options.run_id)
        if recorded is not None:
            options = dataclasses.replace(options, seed=recorded)
            logger.info("--resume: seed %d, the one the run recorded (give --seed to choose another)", recorded)
    elif options.resume:  # configuration.yaml will record the new one: say which the run had
        recorded = recorded_seed(models / options.run_id, seed_given=True)
        if recorded is not None and recorded != options.seed:
            logger.info("--resume: --seed %d replaces the seed %d the run recorded%s", options.seed, recorded,
                        "" if options.dry_run else f" (configuration.yaml will say {options.seed})")
    seed = seed_everything(options)
    streams = seed  # what the environment, the trainers and the libraries draw from
    resumed_at = newest_checkpoint_step(models / options.run_id) if options.resume and not options.inference else 0
    if resumed_at:  # (the sampler's draws go on from the step by their own rule: curriculum/parameters.py)
        streams = resumed_streams_seed(seed, resumed_at)
        seed_streams(streams)
        logger.info("--resume: the random streams go on from step %d (seeded from the run's seed %d and the step)",
                    resumed_at, seed)
    warn_about_unused_options(options)
    _warn_about_engine_flags(options)
    parameters = _load_environment_parameters(options, seed)
    # a Unity scene resets as it connects: its first reset brings the first values (the other
    # sources take them with the run's first reset)
    unity = parameters is not None and source_kind(options.env) in ("Unity build", "Unity Editor")
    env = _make_env(options, streams, parameters.draw_ahead() if unity else None)
    # building the trainers of an existing run removes its interrupted saves' temp files and sets
    # damaged checkpoints aside: not while another process trains it (a new run's lock is taken
    # in _train, so that a run stopped by a check leaves no folder behind)
    run_dir, lock = models / options.run_id, None
    dry_run_passed = False
    try:
        if not options.inference and run_dir.is_dir():  # (--dry-run too: it reports a run in use)
            lock = RunLock(run_dir)
        settings = _resolve_settings(config, env)
        # before any network is built: initialization on other threads would make a run differ
        # from the same run made after another in the same process (_build sets them again, for
        # training, once it knows which library trains)
        widest = max(s.hidden_units for s in settings.values())
        device = choose_device(options, env.behavior_specs, widest)
        limit_threads(device[0], widest, options.torch_threads, images=has_images(env.behavior_specs))
        parts = _build(options, env, config, settings, streams, interrupts, models, summaries, device, parameters)
        parts.run_seed = seed
        interrupts.check_start_up()  # before --force deletes anything
        if options.dry_run:
            _first_step(parts)
            _print_dry_run(parts, warnings.count)
            dry_run_passed = True
            return 0
        return _train(parts, lock)
    finally:
        if lock is not None:
            lock.release()
        _close_env(env)
        if options.dry_run and dry_run_passed:  # a Unity build's log, kept where a failure's message names it
            shutil.rmtree(dry_run_logs(), ignore_errors=True)


def _close_env(env: Env) -> None:
    """Close the environment; its own code failing there, or calling sys.exit(), after the run is a
    warning, not the run's outcome (which stands, and which a traceback here would hide)."""
    try:
        env.close()
    except SystemExit as e:
        logger.warning("the environment's code called sys.exit(%r) while it was closed", e.code)
    except Exception as e:  # (KeyboardInterrupt still stops the process)
        logger.warning("the environment failed while it was closed (%s: %s); the run's results stand",
                       type(e).__name__, e)
        logger.debug("the failure above came from:", exc_info=True)


# the flags that reach environments as EngineConfig: Unity builds and the Editor read them, and
# Python factories that take ``engine``; built-in and Gymnasium environments have no engine
ENGINE_FLAGS = ("width", "height", "quality_level", "time_scale", "target_frame_rate", "capture_frame_rate",
                "no_graphics", "timeout_wait")


def _warn_about_engine_flags(options: RunOptions) -> None:
    kind = source_kind(options.env)
    if kind == "Unity Editor":  # these go on a build's command line; the Editor has none
        given = (["--no-graphics"] if options.no_graphics else []) + (["--env-args"] if options.env_args else [])
        if given:
            logger.warning("%s ha%s no effect on the Unity Editor (no --env): %s a build's command line",
                           " and ".join(given), "s" if len(given) == 1 else "ve",
                           "it is passed on" if len(given) == 1 else "they are passed on")
        return
    if kind not in ("built-in", "Gymnasium", "Python factory") or \
            kind == "Python factory" and factory_takes(options.env, "engine"):
        return
    given = [f"--{flag.replace('_', '-')}" for flag in ENGINE_FLAGS
             if getattr(options, flag) != getattr(RunOptions(), flag)
             and not (flag == "timeout_wait" and not in_main_process(options))]  # the worker pool waits past it
    if given:
        logger.warning("%s ha%s no effect on the %s environment %s: the engine flags are read by Unity builds, the "
                       "Unity Editor and Python factories that take an engine argument", ", ".join(given),
                       "s" if len(given) == 1 else "ve", kind, options.env)


def dry_run_logs() -> Path:
    """Where a dry run's Unity builds write their logs (nothing goes in the run's folder)."""
    return Path(tempfile.gettempdir()) / f"palaestra-dry-run-{os.getpid()}"


def _make_env(options: RunOptions, seed: int, parameters: list[dict[str, float]] | None = None) -> Env:
    """``parameters``: each worker's environment parameters for its first reset (a Unity scene's
    comes with the handshake)."""
    # a Unity build writes its log beside the run's outputs (a dry run writes nothing there)
    logs = dry_run_logs() if options.dry_run else \
        Path("models") / options.run_id / RUN_LOGS
    engine = EngineConfig(width=options.width, height=options.height, quality_level=options.quality_level,
                          time_scale=options.time_scale, target_frame_rate=options.target_frame_rate,
                          capture_frame_rate=options.capture_frame_rate, no_graphics=options.no_graphics,
                          timeout_wait=options.timeout_wait, log_folder=str(logs))
    if source_kind(options.env) in ("built-in", "Gymnasium", "Python factory"):
        parse_env_args(options.env_args)  # key=value pairs (a Unity build's are its command line): before workers start
    if in_main_process(options):
        return make_env(options.env, seed=seed, num_areas=options.num_areas, env_args=options.env_args,
                        engine=engine, port=options.base_port, parameters=parameters[0] if parameters else None)
    # worker processes (workers/stepping.py)
    return WorkerPoolEnv(options.env, options.num_envs, seed=seed, num_areas=options.num_areas,
                         env_args=options.env_args, engine=engine, base_port=options.base_port,
                         timeout=worker_timeout(options.timeout_wait), parameters=parameters,
                         restarts=RestartLimits(options.max_lifetime_restarts, options.restarts_rate_limit_n,
                                                options.restarts_rate_limit_period_s))


def _resolve_settings(config: TrainerConfig, env: Env, behaviors: list[str] | None = None
                      ) -> dict[str, TrainerSettings]:
    """Each behavior's settings (``behaviors``: those to resolve, by default all), checked against its spec."""
    at_start = behaviors is None
    behaviors = list(env.behavior_specs) if behaviors is None else behaviors
    config.warn_misspelt_sections(behaviors)
    missing = [b for b in behaviors if not config.has_settings_for(b)]
    if missing:
        raise ConfigError(
            f"{config.path}: no settings for behavior(s) {', '.join(missing)}: add a section for each, or a "
            f"'default' section. The environment's behaviors: {', '.join(env.behavior_specs)}; the "
            f"file's sections: {', '.join(config.section_names()) or 'none'}"
        )
    resolved = {b: config.for_behavior(b) for b in behaviors}
    problems = [f"behavior {b!r}: {p}" for b, s in resolved.items()
                for p in settings_problems(s) + spec_problems(env.behavior_specs[b], s)]
    if problems:
        raise ConfigError(f"{config.path}: " + "; ".join(problems))
    if at_start:  # (not a behavior that appeared mid-run)
        _warn_of_sections_for_later(config, behaviors)
    for behavior, settings in resolved.items():
        for note in spec_notes(env.behavior_specs[behavior], settings):
            message = f"{config.path}: behavior {behavior!r}: {note}"
            if message not in config.warnings:
                config.warnings.append(message)
                logger.warning(message)
    return resolved


def _warn_of_sections_for_later(config: TrainerConfig, behaviors: list[str]) -> None:
    """A section no behavior of the environment reads yet is checked as if one did, and what
    would stop the run when such a behavior appears mid-run is said now, by --dry-run too. A
    warning, not an error: the file may hold sections for other scenes, as ML-Agents' do (none of
    theirs has such a problem)."""
    read = {config.own_section(b) for b in behaviors}
    for name in config.section_names():
        if name in read:
            continue
        try:
            problems = settings_problems(config.resolved_quietly(name))
        except ConfigError as e:
            problems = [str(e).removeprefix(f"{config.path}: ").removeprefix(f"behavior {name!r}: ")]
        for problem in problems:
            message = (f"{config.path}: section {name!r} (no behavior of that name in the environment yet): "
                       f"{problem}; a behavior {name!r} that appears later would stop the run there")
            if message not in config.warnings:
                config.warnings.append(message)
                logger.warning(message)


def _first_step(parts: RunParts) -> None:
    """--dry-run: the first reset and step a run makes, and each teacher's first answer, so that
    what fails only there (an --env-args value the environment takes but cannot step with, a
    teacher function that takes other arguments) fails here, not after the run wrote its folder.
    The step's actions are each branch's first allowed action and zeros."""
    try:
        _step_once(parts)
    except (ConfigError, EnvError):
        raise
    except Exception as e:  # the environment's own code: one line, as a run's "training stopped" says it
        if parts.interrupts.raised_in is not None:  # a signal's KeyboardInterrupt the environment turned into this
            raise
        raise EnvError(f"--dry-run: the environment raised {type(e).__name__} in its first reset or step: {e}") from e


def _step_once(parts: RunParts) -> None:
    env = parts.env
    reset_env(env, parts.parameters)
    for name, trainer in parts.trainers.items():
        decision, terminal = env.get_steps(name)
        refuse_non_finite(name, decision, terminal)  # (training refuses them with the first segments)
        if trainer.teacher is not None and len(decision):
            try:
                trainer.teacher.act(decision)
            except RecordError as e:  # (in a run: "training stopped", after its folder was written)
                raise ConfigError(str(e)) from None
        actions = env.behavior_specs[name].action_spec.empty_actions(len(decision))
        for branch, mask in enumerate(decision.action_mask or []):
            actions.discrete[:, branch] = np.argmax(~mask, axis=1)
        env.set_actions(name, actions)
    env.step()
    for name in parts.trainers:
        refuse_non_finite(name, *env.get_steps(name))


def _print_dry_run(parts: RunParts, warnings: int) -> None:
    options, settings, parameters = parts.options, parts.settings, parts.parameters
    specs = describe_specs(parts.env)
    out: dict[str, Any] = {
        "run_id": options.run_id,
        "env": options.env,
        "seed": parts.run_seed,
        "device": f"{parts.device} ({parts.device_reason})",
        "threads": parts.threads,
        "behaviors": {b: {"spec": specs[b], "settings": s.as_dict()} for b, s in settings.items()},
    }
    if parameters is not None:
        out["environment_parameters"] = parameters.describe()
    print(yaml.safe_dump(out, sort_keys=False), end="")
    print(f"dry run: {parts.config.path} is valid for {options.env}; {warnings} warning(s) above; nothing was "
          "trained")


def _build(options: RunOptions, env: Env, config: TrainerConfig, settings: dict[str, TrainerSettings], seed: int,
           interrupts: Interrupts, models: Path, summaries: Path, chosen: tuple[torch.device, str],
           parameters: EnvironmentParameters | None) -> RunParts:
    """Every check the run makes before it trains, for the real run and --dry-run alike (the flags,
    the config and the environment were checked before): the output folders can be made; each
    behavior's trainer builds and restores as --resume, --inference, --initialize-from or its
    init_path asks (the checkpoints exist, are intact and fit); the policy can act where --acting
    says. Writes nothing. The trainers have no writers yet."""
    mixed = mixed_teams(settings)
    if mixed:
        raise ConfigError(f"{config.path}: " + "; ".join(mixed))
    if not options.inference:
        for folder in (models, summaries):
            check_output_folder(folder)
    device = chosen[0]
    trainers: dict[str, BehaviorTrainer] = {}
    global_step = 0
    if parameters is not None:
        _check_curricula(env, parameters)
    # a run that continues finds its behaviors' files under the names it gave them
    continues = options.resume or options.inference
    behaviors = list(env.behavior_specs)
    names = output_names(behaviors, recorded_output_names(models / options.run_id, behaviors) if continues else {},
                         together=self_play_names(settings))
    check_name_lengths(options.run_id, names)
    if options.resume and (shared := shared_files(names, settings)) is not None:
        raise CheckpointError(
            f"--resume: run {options.run_id!r} trained {' and '.join(map(repr, shared))} as one self-play policy "
            f"({models / options.run_id / names[shared[0]]}), but {config.path} has no self_play for "
            f"{'them' if all(settings[b].self_play is None for b in shared) else 'all of them'}: they would save "
            "over each other. Put the self_play section back, or train them apart in a new run "
            f"(--initialize-from={options.run_id})")
    # --resume with a behavior the previous run did not have (the environment gained one): it starts
    # afresh, as one that appears during a run does, and the others resume
    known = recorded_behaviors(models / options.run_id) if options.resume else None
    for name, spec in env.behavior_specs.items():
        trainer, step = _make_trainer(options, name, names[name], spec, settings[name], device, seed + len(trainers),
                                      models, parameters, late=known is not None and name not in known,
                                      restores=not joins_a_group(name, behaviors, settings))
        global_step = max(global_step, step)
        trainers[name] = trainer
    self_play = SelfPlayController()
    join_self_play(trainers, self_play, seed)
    _refuse_curricula_of_teams_that_do_not_learn(trainers, parameters)
    settings.update({name: t.settings for name, t in trainers.items()})  # (a self-play team plays with its owner's)
    if options.inference and trainers and not any(t.loaded_from for t in trainers.values()):
        # (a mistyped run-id, a run killed before its first checkpoint: as ML-Agents, refused; it
        # played an untrained policy and exited 0)
        run_dir = models / options.run_id
        raise CheckpointError(
            f"--inference: run {options.run_id!r} has no trained model for any behavior ("
            f"{'no ' + str(run_dir) if not run_dir.is_dir() else 'no checkpoint in ' + str(run_dir)}); give the "
            "run-id of a trained run, or --initialize-from=RUN (or init_path) to run another run's model")
    for name, trainer in trainers.items():
        if not joins_a_group(name, behaviors, settings):
            _warn_if_untrained(options, trainer)
    if not options.inference:  # found now, not at the first save, with the training before it lost
        for trainer in trainers.values():
            for folder in (trainer.checkpoints.folder, trainer.onnx_path.parent):
                check_output_folder(folder)
            if trainer.owns_learning:
                check_summaries_owner(summaries, options.run_id, trainer.output_name)
    if parameters is not None:
        _start_lessons(parameters, trainers, options, global_step)
    # online_bc's teachers, once every behavior's policy exists (another behavior may be the teacher);
    # before training and for --dry-run, so that a bad one stops the run here
    for i, name in enumerate(trainers):
        _add_teacher(options, env, trainers, name, seed + i)
    _acting_obstacles(options, env, trainers)
    threads = _training_threads(options, settings, trainers, device)
    return RunParts(options, env, config, settings, trainers, names, seed, global_step, interrupts, models, summaries,
                    *chosen, parameters, threads, self_play)


def _training_threads(options: RunOptions, settings: dict[str, TrainerSettings], trainers: dict[str, BehaviorTrainer],
                      device: torch.device) -> str:
    """Give the training threads to the library that trains (machine.limit_threads): numpy's BLAS
    where every behavior's updates run on the CPU accelerator, which the built algorithms know."""
    threads = limit_threads(device, max(s.hidden_units for s in settings.values()), options.torch_threads,
                            numpy_trains=bool(trainers) and all(t.algorithm.trains_in_numpy for t in trainers.values()),
                            images=has_images({name: t.spec for name, t in trainers.items()}))
    logger.debug("threads: %s", threads)
    return threads


def _load_environment_parameters(options: RunOptions, seed: int) -> EnvironmentParameters | None:
    """The curricula and the sampler, before the environment is made: their first values go to a
    Unity scene with its first reset (envs/unity/env.py), so that it starts once, with them, as
    with ML-Agents. ML-Agents <= 0.13 brain names are mapped to a built-in's behaviors, and a
    parameter the built-in does not know is a warning (then drawn, never sent)."""
    curricula = load_curricula(options.curriculum) if options.curriculum else {}
    sampler = load_sampler(options.sampler) if options.sampler else None
    if not curricula and sampler is None:
        return None
    builtin = builtin_class(options.env)
    legacy = builtin.legacy_behavior_names if builtin is not None else {}
    for old in [b for b in curricula if b in legacy]:
        if legacy[old] in curricula:  # the behavior's own name wins over its old one
            logger.warning("curriculum %s (ML-Agents <= 0.13 name of %s) is ignored: %s has a curriculum of its own "
                           "name in %s", old, legacy[old], legacy[old], curricula[legacy[old]].source)
            curricula.pop(old)
            continue
        curricula[legacy[old]] = dataclasses.replace(curricula.pop(old), behavior=legacy[old])
        logger.info("curriculum %s (ML-Agents <= 0.13 name) drives behavior %s", old, legacy[old])
    workers = 1 if in_main_process(options) else options.num_envs  # (as _make_env: one generator per worker)
    parameters = EnvironmentParameters(curricula, sampler, seed, workers, options.lesson)
    if builtin is not None:
        unknown = [n for n in parameters.names() if n not in builtin.default_parameters]
        if unknown:
            logger.warning("--env=%s has no environment parameter(s) %s; they are ignored. It knows: %s", options.env,
                           ", ".join(unknown), ", ".join(sorted(builtin.default_parameters)) or "none")
            parameters.ignored.update(unknown)  # (not sent: the environment, each worker's, would say it again)
    return parameters


def _check_curricula(env: Env, parameters: EnvironmentParameters) -> None:
    """Once the environment says its behaviors: a curriculum keyed by a Unity behavior's name
    before its team drives that team's behavior; one for a behavior the environment lacks is a
    warning."""
    for behavior in env.behavior_specs:
        parameters.claim(behavior)
    for behavior, c in parameters.curricula.items():
        if behavior not in env.behavior_specs:
            close = difflib.get_close_matches(behavior, list(env.behavior_specs), n=1, cutoff=0.5)
            logger.warning("%s: a curriculum for behavior %r, which the environment does not have (its behaviors: "
                           "%s)%s; its lesson stays %d and its parameters keep that lesson's values", c.source,
                           behavior, ", ".join(env.behavior_specs), f" (did you mean {close[0]!r}?)" if close else "",
                           parameters.lessons[behavior].lesson)


def _start_lessons(parameters: EnvironmentParameters, trainers: dict[str, BehaviorTrainer], options: RunOptions,
                   global_step: int) -> None:
    """After the checkpoints are restored: --lesson over a resumed lesson, the draws of a resumed
    run, each behavior's summaries."""
    parameters.resume_at(global_step)
    for behavior, state in parameters.lessons.items():
        c = parameters.curricula[behavior]
        if options.resume and options.lesson and state.lesson != min(options.lesson, c.max_lesson):
            logger.info("%s: --lesson %d replaces lesson %d of the checkpoint", behavior, options.lesson,
                        state.lesson)
            state.lesson, state.smoothed = min(options.lesson, c.max_lesson), 0.0
            state.returns.clear()
            if behavior in trainers:  # the returns it had not read at the save: the checkpoint's lesson's
                trainers[behavior].take_finished_returns()
        logger.info("%s: curriculum %s, lesson %d of %d (measure %s, thresholds %s)", behavior, c.source,
                    state.lesson, c.max_lesson, c.measure, list(c.thresholds))
    for name, trainer in trainers.items():
        trainer.summary_extra = (lambda b=name: parameters.summary(b))


def _refuse_curricula_of_teams_that_do_not_learn(trainers: dict[str, BehaviorTrainer],
                                                 parameters: EnvironmentParameters | None) -> None:
    """A curriculum keyed by a self-play team other than its policy's owner would never be saved
    nor summarized (the owner saves and summarizes the shared policy): a ConfigError saying which
    key drives the group."""
    for name, trainer in trainers.items():
        if parameters is not None and name in parameters.curricula and not trainer.owns_learning:
            owner = trainer.self_play.owner.name
            raise ConfigError(f"{parameters.curricula[name].source}: the curriculum of {name!r}: its self-play teams "
                              f"share one policy, which {owner!r} trains, saves and summarizes; key the curriculum "
                              f"{name.partition('?')[0]!r} (or {owner!r}) instead")


def _make_trainer(options: RunOptions, name: str, output_name: str, spec: BehaviorSpec, s: TrainerSettings,
                  device: Any, seed: int, models: Path, parameters: EnvironmentParameters | None,
                  late: bool = False, restores: bool = True) -> tuple[BehaviorTrainer, int]:
    """One behavior's trainer, its files named ``output_name``, restored as the options ask; and the
    global step restored. ``late``: the behavior appeared after the first reset, so --resume may find
    no checkpoint of it (the previous run ended before it appeared): it then starts afresh.
    ``restores``: False for a self-play team that will share another team's policy."""
    run_dir = models / options.run_id
    # a dry run leaves the run's folder as it is (a training trainer clears interrupted saves' temp files)
    training = not (options.inference or options.dry_run)
    try:
        trainer = BehaviorTrainer(name, spec, s, device, StatsReporter(summaries_category(options.run_id, output_name), []),
                                  CheckpointManager(run_dir / output_name, options.keep_checkpoints), run_dir,
                                  training, seed=seed, output_name=output_name, demonstrations=not options.inference)
    except DemoError as e:  # behavioral cloning's, GAIL's or offline_bc's demonstrations
        raise ConfigError(f"{options.trainer_config_path}: behavior {name!r}: {e}") from None
    except ConfigError as e:  # a setting the algorithm cannot use (SAC's replay buffer past the memory)
        raise ConfigError(f"{options.trainer_config_path}: {e}") from None
    except (MemoryError, RuntimeError, ValueError) as e:
        # out of memory: torch's allocator raises RuntimeError, and numpy ValueError for a size past
        # what it can address at all ("array is too big")
        if isinstance(e, ValueError) and not _too_big(e):
            raise
        models = "".join(f", the {signal} model's (encoding_size {settings.encoding_size:,})"
                         for signal, settings in s.reward_signals.items() if hasattr(settings, "encoding_size"))
        raise ConfigError(f"{options.trainer_config_path}: behavior {name!r}: cannot build its networks "
                          f"({s.num_layers} x {s.hidden_units} units{models}) "
                          f"or its experience buffers (time_horizon {s.time_horizon:,}, buffer_size "
                          f"{s.buffer_size:,}): {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if parameters is not None and parameters.claim(name):  # before restore: a checkpoint holds its lesson
        trainer.curriculum, trainer.lesson = parameters.curricula[name], parameters.lessons[name]
    if not restores:
        return trainer, 0
    if late and options.resume and not trainer.checkpoints.list():
        logger.warning("--resume: run %r has no checkpoint for behavior %r (the previous run had no such behavior, "
                       "or it appeared after that run's last save); it starts afresh", options.run_id, name)
        return trainer, 0
    return trainer, restore(trainer, options, s, models)


def _too_big(error: ValueError) -> bool:
    """numpy's refusal of an array larger than it can address (its words differ between versions)."""
    text = str(error).lower()
    return "too big" in text or "maximum allowed dimension" in text


def _warn_if_untrained(options: RunOptions, trainer: BehaviorTrainer) -> None:
    if options.inference and trainer.loaded_from is None:
        logger.warning("--inference: no trained model for %s; running an untrained policy", trainer.name)


def _add_teacher(options: RunOptions, env: Env, trainers: dict[str, BehaviorTrainer], name: str, seed: int) -> None:
    trainer = trainers[name]
    if capabilities(trainer.settings).teacher and not options.inference:
        policies = {b: t.algorithm for b, t in trainers.items()}
        taught = {b: t.settings.brain_to_imitate for b, t in trainers.items() if capabilities(t.settings).teacher}
        loop = teacher_loop(name, taught, env.behavior_specs)
        if loop:
            raise ConfigError(
                f"{options.trainer_config_path}: behavior {name!r}: brain_to_imitate {taught[name]!r} starts a loop of "
                f"teachers ({' -> '.join(loop + [name])}), each learning from another learner: none of them has a "
                "teacher that knows the task. Give one of them heuristic, a model .onnx, package.module:function or "
                "a behavior trained otherwise")
        try:
            trainer.teacher = make_teacher(trainer.settings.brain_to_imitate, env, name, seed, policies)
        except ConfigError as e:  # a setting of the trainer config: named with its file, as every other
            raise ConfigError(f"{options.trainer_config_path}: {e}") from None


def _adopt_new_behaviors(parts: RunParts, writers: list[Any], start_time: float, counter: _StepCounter) -> None:
    """A trainer for each behavior that appeared since the last look (envs/base.py), as ML-Agents makes
    one when a behavior first appears: its section or ``default`` (a behavior with neither is the
    same ConfigError as at the start, which stops the run after saving), its restore, teacher,
    summaries and configuration entry; it acts from the current step on."""
    new = [b for b in parts.env.behavior_specs if b not in parts.trainers]
    settings = _resolve_settings(parts.config, parts.env, new)
    device = parts.device  # the run's, whatever the new behavior sees
    mixed = mixed_teams({**parts.settings, **settings})
    if mixed:
        raise ConfigError(f"{parts.config.path}: " + "; ".join(mixed))
    together = self_play_names({**parts.settings, **settings})
    parts.output_names = output_names(new, parts.output_names, together)  # (the earlier behaviors keep theirs)
    check_name_lengths(parts.options.run_id, {b: parts.output_names[b] for b in new})
    for name in new:
        seed = parts.seed + len(parts.trainers)
        joins = settings[name].self_play is not None and team_of(name)[0] in {
            team_of(b)[0] for b, t in parts.trainers.items() if t.self_play is not None}
        trainer, _ = _make_trainer(parts.options, name, parts.output_names[name], parts.env.behavior_specs[name],
                                   settings[name], device, seed, parts.models, parts.parameters, late=True,
                                   restores=not joins)
        if not joins:
            _warn_if_untrained(parts.options, trainer)
        parts.settings[name], parts.trainers[name] = settings[name], trainer
        try:
            join_self_play(parts.trainers, parts.self_play, parts.seed, running=True)
            _refuse_curricula_of_teams_that_do_not_learn(parts.trainers, parts.parameters)
        except BaseException:  # refused (a team that does not fit its group): out before the run's last save,
            del parts.trainers[name], parts.settings[name]  # which would write its policy over the group's
            raise
        parts.settings[name] = trainer.settings  # (a self-play team plays with its owner's)
        if parts.parameters is not None:  # the environment parameters in its summaries too
            trainer.summary_extra = (lambda b=name: parts.parameters.summary(b))
        _add_teacher(parts.options, parts.env, parts.trainers, name, seed)
        _add_writers(parts, writers, start_time, [name])
        counter.include(trainer)
        logger.info("behavior %r appeared at step %d: %s from now on", name, counter.global_step,
                    "training it" if parts.training else "running its policy (--inference)")
        later, why = choose_device(parts.options, {name: parts.env.behavior_specs[name]}, settings[name].hidden_units)
        if later.type != device.type:  # auto chose from the behaviors of the start
            logger.warning("behavior %r would train on %s (%s), but the run's device, %s, was chosen from the "
                           "behaviors present at the start; pass --torch-device %s to train every behavior there",
                           name, later.type, why, device, later.type)
    threads = _training_threads(parts.options, parts.settings, parts.trainers, device)  # the new may train in torch
    if threads != parts.threads:
        logger.info("threads now: %s (was: %s)", threads, parts.threads)
        parts.threads = threads
    if parts.training:
        _write_configuration(parts)


def _train(parts: RunParts, lock: RunLock | None) -> int:
    """Train, holding the run's lock (``lock``: taken already) from before --force deletes anything."""
    options = parts.options
    own_lock = RunLock(parts.run_dir) if parts.training and lock is None else None
    try:
        if own_lock is not None:  # a run of the same id that ended (or died) since the start's check
            check_run_folders(options, parts.run_dir.parent)
        start_over_if_forced(options, parts.run_dir)
        return _train_with_writers(parts)
    finally:
        if own_lock is not None:
            own_lock.release()


def _train_with_writers(parts: RunParts) -> int:
    options = parts.options
    logger.info("Palaestra %s: run %r on %s, seed %d, device %s (%s)", __version__, options.run_id,
                options.env if options.env is not None else "the Unity Editor", parts.run_seed, parts.device,
                parts.device_reason)
    finished = {name: t for name, t in parts.trainers.items()  # (a self-play policy once, by its first team)
                if parts.training and options.resume and not t.should_continue() and t.owns_learning}
    if finished and len(finished) == len(learners(parts.trainers)):  # a --resume of a run that ended
        logger.info("every behavior has already trained past its max_steps (%s): nothing is left to train; raise "
                    "max_steps in the trainer config to train further", ", ".join(
                        f"{name} {t.step} of {t.settings.max_steps}" for name, t in finished.items()))
    writers: list[Any] = []  # closed on every way out, so no writer thread outlives the run
    code = None
    try:
        start_time = time.time()
        _add_writers(parts, writers, start_time)
        code = _train_loop(parts, lambda counter: _adopt_new_behaviors(parts, writers, start_time, counter))
    finally:
        problem = None
        for writer in writers:
            try:
                writer.close()
            except SaveError as e:  # reported below unless the run already failed (its error said it)
                problem = problem or e
    if problem is not None and code != 1:  # (a run that failed already said why; one a signal stopped did not)
        logger.error("%s", problem)
        return 1
    return code


def _add_writers(parts: RunParts, writers: list[Any], start_time: float, names: list[str] | None = None) -> None:
    """Give each trainer (of ``names``, by default all) its console, gauges and (training)
    TensorBoard, CSV and --debug metrics."""
    options, summaries = parts.options, parts.summaries
    for name in list(parts.trainers) if names is None else names:
        trainer, s = parts.trainers[name], parts.settings[name]
        if not trainer.owns_learning:  # a self-play team: its owner's summaries are the policy's
            logger.info("%s: %s; a self-play team of %s, whose policy it shares", name,
                        describe_specs(parts.env)[name], trainer.self_play.owner.name)
            continue
        category = summaries_category(options.run_id, trainer.output_name)
        own: list[Any] = [ConsoleWriter(start_time, parts.training), GaugeWriter()]
        if parts.training:
            summaries.mkdir(parents=True, exist_ok=True)
            check_summaries_owner(summaries, options.run_id, trainer.output_name)  # (a behavior that appeared)
            resumed_at = trainer.summaries_kept_through if options.resume else None
            tb = TensorBoardWriter(summaries, category, clear_old=not options.resume, resume_step=resumed_at)
            claim_summaries(summaries, options.run_id, trainer.output_name)
            writers.append(tb)
            tb.write_settings(s.as_dict())
            table = CSVWriter(summaries, category, append=options.resume, resume_step=resumed_at)
            writers.append(table)  # (closing writes the rows a locked file kept waiting)
            own += [tb, table]
            if options.debug:
                trainer.metrics = MetricsCSV(summaries, category, append=options.resume)
            elif not options.resume:  # (--force: the old run's rows are not this run's)
                MetricsCSV.discard(summaries, category)
        trainer.stats.writers.extend(own)
        logger.info("%s: %s\n%s", name, describe_specs(parts.env)[name],
                    yaml.safe_dump(s.as_dict(), sort_keys=False).rstrip())


def _write_configuration(parts: RunParts) -> None:
    """models/<run-id>/configuration.yaml: the options (the seed and the device as resolved), every
    behavior's resolved settings and the names of their files."""
    parts.run_dir.mkdir(parents=True, exist_ok=True)
    configuration = parts.run_dir / CONFIGURATION
    remove_partial_files(parts.run_dir, re.escape(CONFIGURATION))  # a kill's during an earlier write
    run_options = dataclasses.asdict(parts.options)
    del run_options["flags_warned"]  # log messages, not an option
    run_options["seed"] = parts.run_seed
    run_options["torch_device"] = str(parts.device)  # what auto chose
    try:
        atomic_write_text(configuration, yaml.safe_dump(
            {"run_options": run_options,
             "behaviors": {b: s.as_dict() for b, s in parts.settings.items()},
             "output_names": parts.output_names}, sort_keys=False))
    except OSError as e:
        raise SaveError(f"could not save the run configuration {configuration}: {os_reason(e)}") from None


def _train_loop(parts: RunParts, adopt: Callable[[_StepCounter], None]) -> int:
    """Step until every behavior is done or a signal stops it; then save, export and write the
    timers. Signals during the save are noted and wait for it (palaestra/interrupts.py). ``adopt``
    makes the trainers of behaviors that appeared (_adopt_new_behaviors)."""
    training, trainers, interrupts = parts.training, parts.trainers, parts.interrupts
    acting = _acting_workers(parts.options, parts.env, trainers, parts.seed, parts.parameters)
    error: BaseException | None = None
    with _progress_bar(trainers) as bar:
        counter = _StepCounter(trainers, parts.options, bar, parts.global_step)
        try:
            # a second signal raises KeyboardInterrupt only inside this block; after it, none does
            with interrupts.training(saving=training):
                if training:  # here, where a signal saves a run: one stopped before leaves no run-id taken
                    _write_configuration(parts)
                with timed("env_reset"):
                    if acting is not None:
                        acting.start()
                    else:
                        reset_env(parts.env, parts.parameters)
                if acting is not None:
                    _acting_loop(acting, trainers, interrupts, counter, parts.parameters, parts.self_play)
                else:
                    _loop(parts.env, trainers, interrupts, counter, adopt, parts.parameters, parts.self_play)
        except KeyboardInterrupt:
            logger.info("Stopped at once%s", ": saving what is there" if training else "")
        except EnvClosed as e:  # Play stopped in the Unity Editor, a build quit: an ordinary end
            logger.info("%s: the run ends%s", e, ", saving the model" if training else "")
        except SystemExit as e:  # an environment's own code called sys.exit(): a failure, saved first
            error = EnvError(f"the environment's code called sys.exit({e.code!r}) during training")
        except Exception as e:  # the environment or a trainer failed: save first
            if interrupts.raised_in == STOPPING:  # a second signal's KeyboardInterrupt, turned into another error
                logger.info("Stopped at once%s", ": saving what is there" if training else "")
            else:
                error = _diverged_instead(trainers, e)
        finally:
            if acting is not None:
                acting.close()
    # a signal that stopped the training before every behavior reached max_steps (not one that
    # came during the last step, or afterwards while closing)
    stopped_by = interrupts.stopped_training if any(t.should_continue() for t in trainers.values()) else None
    return _finish(parts, counter.global_step, error, stopped_by)


def _diverged_instead(trainers: dict[str, BehaviorTrainer], error: Exception) -> Exception:
    """The error that stopped the run or, when a policy's weights are no longer finite, that
    divergence: the NaN actions such weights produce make an environment fail or send NaN back,
    and the environment is not to blame."""
    if isinstance(error, DivergedError):
        return error
    for trainer in trainers.values():
        try:
            trainer.refuse_diverged()
        except DivergedError as diverged:
            return diverged
    return error


def reset_env(env: Env, parameters: EnvironmentParameters | None) -> None:
    """Reset every environment (each worker's with its own draws) with fresh parameter values."""
    if parameters is None:
        env.reset()
    elif isinstance(env, WorkerPoolEnv):
        env.reset_each(parameters.draw())
    else:
        env.reset(parameters.draw()[0])


def parameters_changed(parameters: EnvironmentParameters | None, trainers: dict[str, BehaviorTrainer],
                       previous_step: int, global_step: int) -> list[str] | None:
    """After a step: None if the environment parameters stay; else (a lesson advanced or a
    resampling interval was crossed, and every environment resets next) the behaviors whose lesson
    advanced, possibly none."""
    if parameters is None:
        return None
    lessons = parameters.check_lessons(trainers)
    return lessons if lessons or parameters.resample_due(previous_step, global_step) else None


def _loop(env: Env, trainers: dict[str, BehaviorTrainer], stop: Interrupts, counter: _StepCounter,
          adopt: Callable[[_StepCounter], None], parameters: EnvironmentParameters | None = None,
          self_play: SelfPlayController | None = None) -> None:
    """The policy acts in this process on every agent of every step. Every environment resets
    when a lesson advances, a sampler's interval is crossed or self-play's learning team changes."""
    while not stop.requested and any(t.should_continue() for t in trainers.values()):
        if len(env.behavior_specs) > len(trainers):  # a behavior appeared in the last reset or step
            adopt(counter)
        for name, trainer in trainers.items():
            decision, terminal = env.get_steps(name)
            with timed("policy_act"):
                actions = trainer.act(decision, terminal)
            env.set_actions(name, actions)
        with timed("env_step"):
            env.step()
        if hasattr(env, "take_stats"):
            record_environment_stats(env.take_stats(), 0, trainers)
        with timed("trainer_advance"):
            for trainer in trainers.values():
                trainer.advance()
        # pipelined workers return half of the instances per step
        previous = counter.global_step
        counter.add(getattr(env, "results_returned", 1))
        new_lessons = parameters_changed(parameters, trainers, previous, counter.global_step)
        if self_play is not None and self_play.reset_due() and new_lessons is None:
            new_lessons = []
        if new_lessons is not None:
            if isinstance(env, WorkerPoolEnv):
                env.settle()
            for name, trainer in trainers.items():
                # the episodes that ended on this last step are not lost to the reset ...
                trainer.end_episodes(env.get_steps(name)[1])
                if name in new_lessons:  # ... but, played in the lesson before, do not count toward the next
                    trainer.take_finished_returns()
            if self_play is not None:  # the next team's turn, now that the last one's episodes ended in it
                self_play.apply_change()
            with timed("env_reset"):
                reset_env(env, parameters)


def record_environment_stats(env_stats: dict[str, tuple[list[float], int]], worker: int,
                             trainers: dict[str, BehaviorTrainer]) -> None:
    """Statistics an environment recorded (a Unity scene's StatsRecorder) go to every behavior's
    summaries under their own keys, as in ML-Agents: averaged (and histogram) values are all kept,
    summed ones are added up over the summary period and every worker; a most-recent value
    overwrites, and is taken from the first environment worker only."""
    for key, (values, aggregation) in env_stats.items():
        for trainer in trainers.values():
            if aggregation == STAT_MOST_RECENT:
                if worker == 0:
                    trainer.stats.set(key, values[-1])
            elif aggregation == STAT_SUM:
                trainer.stats.add_to_sum(key, values)
            else:
                trainer.stats.add(key, values)


def _acting_loop(acting: ActingWorkers, trainers: dict[str, BehaviorTrainer], stop: Interrupts,
                 counter: _StepCounter, parameters: EnvironmentParameters | None = None,
                 self_play: SelfPlayController | None = None) -> None:
    """The workers act; this process takes their rounds of finished segments and learns. Their
    environments reset when a lesson advances, a sampler's interval is crossed or self-play's
    learning team changes (from the first round not yet permitted: the rounds under way finish as
    they are)."""
    lesson_rounds: dict[str, int] = {}  # behavior → the first round acted in its current lesson
    turn_round: int | None = None  # self-play: the first round acted in the turn requested, until taken
    while not stop.requested and any(t.should_continue() for t in trainers.values()):
        with timed("env_step"):  # waiting for the workers' next round: their environments and acting
            results, env_steps = acting.take_round()
        if self_play is not None and turn_round is not None and acting.taken >= turn_round:
            # the new turn's first round (the rounds before, played in the turn before, were its)
            self_play.apply_change()
            turn_round = None
        for r in acting.salvaged:  # failed workers' episodes, ended where their environment failed
            trainers[r.behavior].record_round(r.segments, r.episodes)
        if acting.reset_before_round:  # the workers' episodes ended at their reset: none continues
            for trainer in trainers.values():
                trainer.end_episodes()
        for worker in acting.restarted:  # a restarted worker's episodes started anew
            for trainer in trainers.values():
                trainer.algorithm.drop_open_episodes(every=acting.pool.n, offset=worker)
        with timed("record_segments"):
            for r in results:
                trainers[r.behavior].record_round(r.segments, r.episodes)
            for worker, env_stats in acting.take_env_stats():
                record_environment_stats(env_stats, worker, trainers)
        for behavior, first in lesson_rounds.items():
            if acting.taken < first:  # the workers ran ahead in the lesson before: its episodes do not count
                trainers[behavior].take_finished_returns()
        with timed("trainer_advance"):
            for trainer in trainers.values():
                trainer.advance()
        acting.publish()
        previous = counter.global_step
        counter.add(env_steps)
        new_lessons = parameters_changed(parameters, trainers, previous, counter.global_step)
        turn = self_play is not None and self_play.reset_due()
        if turn and new_lessons is None:
            new_lessons = []
        if new_lessons is not None:
            draws = parameters.draw() if parameters is not None else [None] * acting.pool.n
            first = acting.change_parameters(draws)
            lesson_rounds |= dict.fromkeys(new_lessons, first)
            if turn:  # the rounds from `first` act in the next turn; those under way finish in this one
                self_play.play_ahead()
                turn_round = first


def _finish(parts: RunParts, global_step: int, error: BaseException | None, stopped_by: int | None = None) -> int:
    """After the loop: save and export (training), report the error that stopped it; the exit code.
    A run stopped by a signal exits as a shell reports one (128 + its number) once everything is
    saved: a scheduler that preempted it sees that it did not finish, and ``--resume`` continues."""
    if parts.training:  # from here on, signals only wait for the save (palaestra/interrupts.py)
        logger.debug("final save at step %d", global_step)
    if isinstance(error, SaveError):  # a --save-freq checkpoint: try once more below
        logger.error("training stopped: %s", error)
    diverged = isinstance(error, DivergedError)  # its message says which files are kept
    # an environment that failed before its first step (a reset that raises): an untrained model
    # would pass for a result, so none is written
    untrained = (error is not None and not diverged and not isinstance(error, SaveError) and not parts.options.resume
                 and global_step == parts.global_step)
    saved = _save_at_end(parts, global_step, skip_diverged=diverged) if parts.training and not untrained else True
    if error is None and saved and parts.training and stopped_by is None:
        _warn_of_untrained_exports(parts)
    if error is not None and not isinstance(error, SaveError):
        saving = "" if diverged or not parts.training else \
            " (nothing was trained, so no model was saved; --force starts the run again)" if untrained else \
            " (the model was saved first)" if saved else " (saving the model failed too)"
        said = too_many_open_files(error) or f"{type(error).__name__}: {error}"
        logger.error("training stopped: %s%s", said, saving)
        if parts.options.debug:
            raise error
    if error is None and saved and stopped_by is not None:
        logger.info("Stopped by %s%s", signal_name(stopped_by),
                    ": --resume continues from the checkpoint just saved" if parts.training else "")
        return 128 + stopped_by
    return 0 if error is None and saved else 1


def _warn_of_untrained_exports(parts: RunParts) -> None:
    """A behavior that trained from scratch to its max_steps without one update exported the
    untrained policy. The settings' notes foresee the plain cases; experience that arrives in
    bursts (a worker's acting rounds, a time_horizon's segments) can pass max_steps first too."""
    for trainer in learners(parts.trainers):
        if trainer.training and trainer.updates_this_run == 0 and trainer.loaded_from is None \
                and trainer.step >= trainer.settings.max_steps:
            horizon = getattr(trainer.settings, "time_horizon", 0)
            # episodes that never end reach the trainer only as time_horizon's pieces: a horizon past
            # max_steps holds every step back until each agent has taken that many
            fix = (f"lower time_horizon ({horizon}) below max_steps: experience reaches the trainer when an episode "
                   "ends or an agent has taken time_horizon steps" if horizon >= trainer.settings.max_steps else
                   "raise max_steps (to a few times buffer_size for PPO, past buffer_init_steps and batch_size for SAC)")
            logger.warning("behavior %r reached step %d (max_steps %d) without a single update, so %s is the "
                           "untrained policy: %s", trainer.name, trainer.step, trainer.settings.max_steps,
                           trainer.onnx_path, fix)


def _save_at_end(parts: RunParts, global_step: int, skip_diverged: bool = False) -> bool:
    """Save every behavior and write the timers, each failure logged with the file it concerns
    (and the other files still tried); return whether everything was saved. ``skip_diverged``:
    leave out without a word the behaviors whose weights are no longer finite (the run's
    DivergedError names them)."""
    saved = True
    for trainer in learners(parts.trainers):
        if skip_diverged and trainer.diverged():
            saved = False
            continue
        try:
            trainer.save(global_step)
        except SaveError as e:
            logger.error("%s", e)
            saved = False
            continue
        logger.info("Exported %s", trainer.onnx_path)
    timers = parts.summaries / f"{parts.options.run_id}_timers.json"
    remove_partial_files(parts.summaries, re.escape(timers.name))  # a kill's during an earlier write
    try:
        TIMERS.write(str(timers))
    except OSError as e:
        logger.error("could not save the timers %s: %s", timers, os_reason(e))
        saved = False
    return saved


class _StepCounter:
    """Global steps (one per environment instance whose results came back, as in ML-Agents),
    the progress bar and --save-freq checkpoints."""

    def __init__(self, trainers: dict[str, BehaviorTrainer], options: RunOptions, bar: Any,
                 global_step: int) -> None:
        self.trainers, self.options, self.bar, self.global_step = trainers, options, bar, global_step
        self._trainer_steps = self._total()

    def _total(self) -> int:
        return sum(t.step for t in learners(self.trainers))

    def include(self, trainer: BehaviorTrainer) -> None:
        """A trainer added to ``trainers`` (a behavior that appeared): its steps count from here."""
        if not trainer.owns_learning:  # a self-play team that joined a policy whose steps count already
            return
        self._trainer_steps += trainer.step
        if self.bar is not None:
            self.bar.total += trainer.settings.max_steps
            self.bar.update(trainer.step)

    def add(self, env_steps: int) -> None:
        previous, self.global_step = self.global_step, self.global_step + env_steps
        total = self._total()
        if self.bar is not None:
            self.bar.update(total - self._trainer_steps)
        self._trainer_steps = total
        save_freq = self.options.save_freq
        if not self.options.inference and self.global_step // save_freq > previous // save_freq:
            for trainer in learners(self.trainers):
                trainer.save(self.global_step)


def _acting_workers(options: RunOptions, env: Env, trainers: dict[str, BehaviorTrainer],
                    seed: int, parameters: EnvironmentParameters | None = None) -> ActingWorkers | None:
    """Acting in the workers (workers/acting.py) when --acting asks for it or allows it."""
    blocked = _acting_obstacles(options, env, trainers)
    if not isinstance(env, WorkerPoolEnv) or options.acting == "main":
        return None
    if blocked:
        logger.info("the policy acts in the main process for all %d environment workers (%s)", env.n, blocked)
        return None
    threaded = all(t.settings.threaded for t in trainers.values())
    acting = ActingWorkers(env.pool, {name: t.acting_plan(env.n) for name, t in trainers.items()},
                           {name: t.acting_weights for name, t in trainers.items()}, seed, threaded,
                           parameters.draw() if parameters is not None else None)
    for trainer in trainers.values():
        trainer.algorithm.decoupled = acting.lag > 0
    logger.info("the policy acts in each of the %d environment workers, in rounds; %s", env.n,
                "nothing trains (--inference)" if options.inference else
                f"they may run {acting.lag} rounds ahead while the trainers update (threaded: true)" if threaded
                else "they wait for each update (threaded: false)")
    return acting


def _acting_obstacles(options: RunOptions, env: Env, trainers: dict[str, BehaviorTrainer]) -> str | None:
    """Why the policy cannot act in the workers (None if it can); a UsageError if --acting=workers
    asks for it all the same."""
    if not isinstance(env, WorkerPoolEnv) or options.acting == "main":
        return None
    obstacles = {name: t.acting_obstacle() for name, t in trainers.items()}
    if options.inference:  # nothing learns, but the workers' rounds are sized by PPO's buffer_size
        obstacles = {name: None if why is None else
                     f"{trainers[name].settings.trainer}'s policy acts in the main process under --inference too "
                     "(the workers' acting rounds are sized by buffer_size, the size of a rollout in PPO "
                     "only)" for name, why in obstacles.items()}
    blocked = "; ".join(f"behavior {b!r}: {why}" for b, why in obstacles.items() if why is not None)
    if blocked and options.acting == "workers":
        raise UsageError(f"--acting=workers: {blocked}; use --acting=main (or auto)")
    return blocked or None


class _progress_bar:
    def __init__(self, trainers: dict[str, BehaviorTrainer]) -> None:
        self.total = sum(t.settings.max_steps for t in learners(trainers))
        self.initial = sum(t.step for t in learners(trainers))
        self.bar: Any = None

    def __enter__(self) -> Any:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        # (disable=None: no bar where stderr is not a terminal; none either where there is no
        # stderr at all, fd 2 closed or pythonw, which tqdm would write to all the same)
        self.bar = tqdm(total=self.total, initial=self.initial, unit="step", leave=False, dynamic_ncols=True,
                        disable=None if sys.stderr is not None else True)
        # log lines (the summaries) go through tqdm while the bar is drawn: written straight to the
        # terminal they land on the bar's line and leave a stale bar above each
        self.redirect = (contextlib.nullcontext() if sys.stderr is None else
                         logging_redirect_tqdm([logging.getLogger("palaestra")]))
        self.redirect.__enter__()
        return self.bar

    def __exit__(self, *exc: Any) -> None:
        self.redirect.__exit__(*exc)
        self.bar.close()
