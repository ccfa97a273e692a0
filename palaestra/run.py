"""The run: options → environment and one trainer per behavior → the step loop → outputs.

Lifecycle rules (ML-Agents 0.16): a reused ``--run-id`` is an error without ``--resume`` or
``--force``; ``--resume`` restores every behavior from its newest checkpoint; ``--force`` starts
over; ``--initialize-from`` copies another run's weights at step 0; ``--inference`` runs the
policy without training or saving. A checkpoint is written every ``--save-freq`` environment
steps and at the end; the first Ctrl+C (or SIGTERM, SIGHUP) stops the loop, saves and exports,
and exits 0 (palaestra/interrupts.py). ``--dry-run`` makes every check the real run makes before
it trains (:func:`_prepare`), and trains nothing.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from threadpoolctl import threadpool_limits

from palaestra import __version__
from palaestra.algorithms import spec_problems
from palaestra.checkpoints import CheckpointError, CheckpointManager, SaveError, atomic_write_text, os_reason
from palaestra.envs.base import EngineConfig, Env, EnvError
from palaestra.envs.sources import describe_specs, make_env
from palaestra.interrupts import STOPPING, Interrupts
from palaestra.networks.constants import WIDE_NETWORK_UNITS
from palaestra.options import (
    INT_OPTIONS,
    RunOptions,
    UsageError,
    run_id_problem,
    text_problem,
    time_scale_problem,
)
from palaestra.settings import (
    ConfigError,
    TrainerConfig,
    TrainerSettings,
    load_trainer_config,
    unsupported_features,
)
from palaestra.stats import (
    ConsoleWriter,
    CSVWriter,
    GaugeWriter,
    MetricsCSV,
    StatsReporter,
    TensorBoardWriter,
)
from palaestra.timers import TIMERS, timed
from palaestra.trainer import BehaviorTrainer
from palaestra.workers.acting import ActingWorkers
from palaestra.workers.pool import RestartLimits
from palaestra.workers.stepping import WorkerPoolEnv

logger = logging.getLogger("palaestra")


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
        return 1
    except OSError as e:  # a folder that cannot be written, a full disk
        logger.error("cannot read or write %s: %s", e.filename or "a file", e.strerror or e)
        return 1
    except (KeyboardInterrupt, Exception) as e:  # during start-up: the loop and the final save never raise it
        return interrupts.stopped_during_start_up(e, logger.info)
    finally:
        if own:
            interrupts.restore()


def check_options(options: RunOptions, models: Path) -> None:
    """Every check of the options alone (no config, no environment): each value in its range (as
    the flags' parsing checks them, again here for RunOptions built in Python) and the flags
    together, against the runs in ``models``. UsageError says what is wrong."""
    for name, allowed in INT_OPTIONS.items():
        value = getattr(options, name)
        problem = "expected an integer" if not isinstance(value, int) or isinstance(value, bool) else \
            allowed.problem(value)
        if problem is not None:
            raise UsageError(f"--{name.replace('_', '-')}: {problem}")
    if not isinstance(options.time_scale, (int, float)) or time_scale_problem(options.time_scale):
        raise UsageError(f"--time-scale: expected a finite number > 0, got {options.time_scale!r}")
    texts = [("trainer_config_path", options.trainer_config_path), ("--env", options.env),
             ("--curriculum", options.curriculum), ("--sampler", options.sampler)]
    texts += [("--env-args", value) for value in options.env_args]
    for flag, value in texts:
        if value is not None and text_problem(value) is not None:
            raise UsageError(f"{flag}: {value!r} {text_problem(value)}")
    for flag, value in (("--run-id", options.run_id), ("--initialize-from", options.initialize_from)):
        if value is not None and run_id_problem(value) is not None:
            raise UsageError(f"{flag}: {run_id_problem(value)}")
    if options.base_port + options.num_envs - 1 > 65535:
        raise UsageError(f"--base-port {options.base_port} with --num-envs {options.num_envs}: the last worker's "
                         f"port would be {options.base_port + options.num_envs - 1}, past 65535; lower --base-port")
    if options.resume and options.force:
        raise UsageError("--resume and --force contradict each other: --resume continues a run, --force starts it over")
    if options.inference and options.force:
        raise UsageError("--inference and --force contradict each other: --force deletes the run whose model "
                         "--inference would run")
    if options.initialize_from == options.run_id and not options.resume:
        raise UsageError(f"--initialize-from names the run itself ({options.run_id!r}); pass --resume to continue "
                         "it, or choose another --run-id")
    for flag, path in (("--curriculum", options.curriculum), ("--sampler", options.sampler)):
        if path is not None:
            if not os.path.exists(path):
                raise UsageError(f"{flag}: file {path!r} does not exist")
            raise UsageError(f"{flag} is not supported yet; run without it")
    run_dir = models / options.run_id
    exists = run_dir.is_dir() and any(run_dir.iterdir())
    if options.resume and not exists:
        raise UsageError(
            f"--resume: there is no previous run {options.run_id!r} (no {run_dir}); "
            "drop --resume to start it"
        )
    if exists and not (options.resume or options.force or options.inference):
        raise UsageError(
            f"run-id {options.run_id!r} was already used ({run_dir} exists); pass --resume to continue "
            "it, --force to overwrite it, or choose another --run-id"
        )
    if options.initialize_from is not None and not (models / options.initialize_from).is_dir():
        raise UsageError(
            f"--initialize-from: there is no run {options.initialize_from!r} (no {models / options.initialize_from})"
        )
    if options.initialize_from is not None and options.resume:
        logger.warning("--initialize-from %s has no effect with --resume: the run continues from its own checkpoints",
                       options.initialize_from)


def _resolve_settings(config: TrainerConfig, env: Env) -> dict[str, TrainerSettings]:
    missing = [b for b in env.behavior_specs if not config.has_settings_for(b)]
    if missing:
        raise ConfigError(
            f"{config.path}: no settings for behavior(s) {missing}: add a section for each, or a "
            f"'default' section. The environment's behaviors: {list(env.behavior_specs)}; the "
            f"file's sections: {config.section_names() or 'none'}"
        )
    resolved = {b: config.for_behavior(b) for b in env.behavior_specs}
    problems = [f"behavior {b!r}: {p}" for b, s in resolved.items()
                for p in unsupported_features(s) + spec_problems(env.behavior_specs[b], s)]
    if problems:
        raise ConfigError(f"{config.path}: " + "; ".join(problems))
    return resolved


def _seed_everything(options: RunOptions) -> int:
    seed = options.seed if options.seed != -1 else int(np.random.randint(0, 10000))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


def _run(options: RunOptions, interrupts: Interrupts) -> int:
    models, summaries = Path("models"), Path("summaries")
    check_options(options, models)
    config = load_trainer_config(options.trainer_config_path)
    seed = _seed_everything(options)
    engine = EngineConfig(options.width, options.height, options.quality_level, options.time_scale,
                          options.target_frame_rate, options.no_graphics)
    if options.lesson and options.curriculum is None:
        logger.warning("--lesson %d has no effect without --curriculum", options.lesson)
    # --num-envs 1 runs in the main process unless --acting=workers asks for one acting worker
    in_process = options.num_envs == 1 and options.acting != "workers"
    restart_flags = ("max_lifetime_restarts", "restarts_rate_limit_n", "restarts_rate_limit_period_s")
    if in_process and any(getattr(options, f) != getattr(RunOptions(), f) for f in restart_flags):
        logger.warning("the --max-lifetime-restarts and --restarts-rate-limit-* flags have no effect with "
                       "--num-envs 1: the environment runs in the main process, where a crash stops the run")
    if in_process and options.acting == "main":
        logger.warning("--acting=main has no effect with --num-envs 1: the environment and the policy both run in "
                       "the main process")
    if not in_process:  # worker processes (workers/stepping.py)
        env = WorkerPoolEnv(options.env, options.num_envs, seed=seed, num_areas=options.num_areas,
                            env_args=options.env_args, engine=engine, base_port=options.base_port,
                            restarts=RestartLimits(options.max_lifetime_restarts, options.restarts_rate_limit_n,
                                                   options.restarts_rate_limit_period_s))
    else:
        env = make_env(options.env, seed=seed, num_areas=options.num_areas, env_args=options.env_args,
                       engine=engine, port=options.base_port)
    try:
        settings = _resolve_settings(config, env)
        trainers, global_step = _prepare(options, env, settings, seed, models, summaries)
        interrupts.check_start_up()  # before --force deletes anything
        if options.dry_run:
            _print_dry_run(options, config, env, settings, seed)
            return 0
        return _train(options, env, settings, seed, trainers, global_step, interrupts, models, summaries)
    finally:
        env.close()


def _print_dry_run(options: RunOptions, config: TrainerConfig, env: Env,
                   settings: dict[str, TrainerSettings], seed: int) -> None:
    specs = describe_specs(env)
    out: dict[str, Any] = {
        "run_id": options.run_id,
        "env": options.env,
        "seed": seed,
        "behaviors": {b: {"spec": specs[b], "settings": s.as_dict()} for b, s in settings.items()},
    }
    print(yaml.safe_dump(out, sort_keys=False), end="")
    print(f"dry run: {config.path} is valid for {options.env}; {len(config.warnings)} warning(s); nothing was trained")


def _device(options: RunOptions) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() and not options.cpu else "cpu")


def _prepare(options: RunOptions, env: Env, settings: dict[str, TrainerSettings], seed: int, models: Path,
             summaries: Path) -> tuple[dict[str, BehaviorTrainer], int]:
    """Every check the run makes before it trains, for the real run and --dry-run alike (the flags,
    the config and the environment were checked before): the output folders can be made; each
    behavior's trainer builds and restores as --resume, --inference, --initialize-from or its
    init_path asks (the checkpoints exist, are intact and fit); the policy can act where --acting
    says. Writes nothing. Returns the trainers (without their writers) and the global step."""
    if not options.inference:
        for folder in (models, summaries):
            _check_folder(folder)
    device = _device(options)
    run_dir = models / options.run_id
    # a dry run leaves the run's folder as it is (a training trainer clears interrupted saves' temp files)
    training = not (options.inference or options.dry_run)
    trainers: dict[str, BehaviorTrainer] = {}
    global_step = 0
    for name, spec in env.behavior_specs.items():
        s = settings[name]
        try:
            trainer = BehaviorTrainer(name, spec, s, device, StatsReporter(f"{options.run_id}_{name}", []),
                                      CheckpointManager(run_dir / name, options.keep_checkpoints), run_dir,
                                      training, seed=seed + len(trainers))
        except (MemoryError, RuntimeError) as e:  # torch's allocator raises RuntimeError when out of memory
            raise ConfigError(f"behavior {name!r}: cannot build its networks ({s.num_layers} x {s.hidden_units} "
                              f"units): {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        global_step = max(global_step, _restore(trainer, options, s, models))
        trainers[name] = trainer
    _acting_obstacles(options, env, trainers)
    return trainers, global_step


def _check_folder(folder: Path) -> None:
    """An output folder, or the folder it will be made in, must be a folder that can be written."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot read or write {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cannot read or write {folder}: {existing} is not writable")


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _train(options: RunOptions, env: Env, settings: dict[str, TrainerSettings], seed: int,
           trainers: dict[str, BehaviorTrainer], global_step: int, interrupts: Interrupts, models: Path,
           summaries: Path) -> int:
    run_dir = models / options.run_id
    if options.force and run_dir.exists():
        shutil.rmtree(run_dir)
    device = _device(options)
    # numpy's BLAS only ever sees small products (acting on one step's agents, the CPU fast paths
    # of narrow networks): one thread, whose workers would otherwise spin on the cores torch needs.
    threadpool_limits(1, user_api="blas")
    if device.type == "cpu":
        # Measured (docs/benchmarks.md): narrow networks train faster on one torch thread; the
        # extra threads cost more in synchronization than they gain at these sizes. From
        # WIDE_NETWORK_UNITS (SAC's usual 256x256, batch 256) torch trains them on every core.
        wide = max(s.hidden_units for s in settings.values()) >= WIDE_NETWORK_UNITS
        torch.set_num_threads(_usable_cores() if wide else 1)  # set either way: a process may train twice
    logger.info("Palaestra %s: run %r on %s, seed %d, device %s", __version__, options.run_id, options.env,
                seed, device)
    writers: list[Any] = []  # closed on every way out, so no writer thread outlives the run
    try:
        _add_writers(trainers, writers, options, env, settings, summaries, time.time())
        return _train_loop(trainers, options, env, settings, seed, run_dir, summaries, global_step, interrupts)
    finally:
        for writer in writers:
            writer.close()


def _add_writers(trainers: dict[str, BehaviorTrainer], writers: list[Any], options: RunOptions, env: Env,
                 settings: dict[str, TrainerSettings], summaries: Path, start_time: float) -> None:
    """Give each trainer its console, gauges and (training) TensorBoard, CSV and --debug metrics."""
    training = not options.inference
    for name, trainer in trainers.items():
        s = settings[name]
        category = f"{options.run_id}_{name}"
        own: list[Any] = [ConsoleWriter(start_time, training), GaugeWriter()]
        if training:
            summaries.mkdir(parents=True, exist_ok=True)
            tb = TensorBoardWriter(summaries, category, clear_old=not options.resume)
            writers.append(tb)
            tb.write_text("Hyperparameters", yaml.safe_dump(s.as_dict(), sort_keys=False))
            own += [tb, CSVWriter(summaries, category, append=options.resume)]
            if options.debug:
                trainer.metrics = MetricsCSV(summaries, category)
        trainer.stats.writers.extend(own)
        logger.info("%s: %s\n%s", name, describe_specs(env)[name],
                    yaml.safe_dump(s.as_dict(), sort_keys=False).rstrip())


def _train_loop(trainers: dict[str, BehaviorTrainer], options: RunOptions, env: Env,
                settings: dict[str, TrainerSettings], seed: int, run_dir: Path, summaries: Path,
                global_step: int, interrupts: Interrupts) -> int:
    """Step until every behavior is done or a signal stops it; then save, export and write the
    timers. Signals during the save are noted and wait for it (palaestra/interrupts.py)."""
    training = not options.inference
    if training:
        run_dir.mkdir(parents=True, exist_ok=True)
        configuration = run_dir / "configuration.yaml"
        try:
            atomic_write_text(configuration, yaml.safe_dump(
                {"run_options": _options_dict(options, seed),
                 "behaviors": {b: s.as_dict() for b, s in settings.items()}}, sort_keys=False))
        except OSError as e:
            raise SaveError(f"could not save the run configuration {configuration}: {os_reason(e)}") from None

    acting = _acting_workers(options, env, trainers, seed)
    error: BaseException | None = None
    with _progress_bar(trainers) as bar:
        counter = _StepCounter(trainers, options, bar, global_step)
        try:
            # a second signal raises KeyboardInterrupt only inside this block; after it, none does
            with interrupts.training(saving=training):
                with timed("env_reset"):
                    if acting is not None:
                        acting.start()
                    else:
                        env.reset()
                if acting is not None:
                    _acting_loop(acting, trainers, interrupts, counter)
                else:
                    _loop(env, trainers, interrupts, counter)
        except KeyboardInterrupt:
            logger.info("Stopped at once%s", ": saving what is there" if training else "")
        except Exception as e:  # the environment or a trainer failed: save first
            if interrupts.raised_in == STOPPING:  # a second signal's KeyboardInterrupt, turned into another error
                logger.info("Stopped at once%s", ": saving what is there" if training else "")
            else:
                error = e
        finally:
            if acting is not None:
                acting.close()
    global_step = counter.global_step
    if training:  # from here on, signals only wait for the save (palaestra/interrupts.py)
        logger.debug("final save at step %d", global_step)
    if isinstance(error, SaveError):  # a --save-freq checkpoint: try once more below
        logger.error("training stopped: %s", error)
    saved = _save_at_end(trainers, options, summaries, global_step) if training else True
    if error is not None and not isinstance(error, SaveError):
        logger.error("training stopped: %s: %s (%s)", type(error).__name__, error,
                     "the model was saved first" if saved else "saving the model failed too")
        if options.debug:
            raise error
    return 0 if error is None and saved else 1


def _save_at_end(trainers: dict[str, BehaviorTrainer], options: RunOptions, summaries: Path,
                 global_step: int) -> bool:
    """Save every behavior and write the timers, each failure logged with the file it concerns
    (and the other files still tried); return whether everything was saved."""
    saved = True
    for trainer in trainers.values():
        try:
            trainer.save(global_step)
        except SaveError as e:
            logger.error("%s", e)
            saved = False
            continue
        logger.info("Exported %s", trainer.onnx_path)
    timers = summaries / f"{options.run_id}_timers.json"
    try:
        TIMERS.write(str(timers))
    except OSError as e:
        logger.error("could not save the timers %s: %s", timers, os_reason(e))
        saved = False
    return saved


def _acting_workers(options: RunOptions, env: Env, trainers: dict[str, BehaviorTrainer],
                    seed: int) -> ActingWorkers | None:
    """Acting in the workers (workers/acting.py) when --acting asks for it or allows it."""
    blocked = _acting_obstacles(options, env, trainers)
    if not isinstance(env, WorkerPoolEnv) or options.acting == "main":
        return None
    if blocked:
        logger.info("the policy acts in the main process for all %d environment workers (%s)", env.n, blocked)
        return None
    threaded = all(t.settings.threaded for t in trainers.values())
    acting = ActingWorkers(env.pool, {name: t.acting_plan(env.n) for name, t in trainers.items()},
                           {name: t.algorithm.policy_arrays for name, t in trainers.items()}, seed, threaded)
    for trainer in trainers.values():
        trainer.algorithm.decoupled = acting.lag > 0
    logger.info("the policy acts in each of the %d environment workers, in rounds; %s", env.n,
                f"they may run {acting.lag} rounds ahead while the trainers update (threaded: true)" if threaded
                else "they wait for each update (threaded: false)")
    return acting


def _acting_obstacles(options: RunOptions, env: Env, trainers: dict[str, BehaviorTrainer]) -> str | None:
    """Why the policy cannot act in the workers (None if it can); a UsageError if --acting=workers
    asks for it all the same."""
    if not isinstance(env, WorkerPoolEnv) or options.acting == "main":
        return None
    obstacles = {name: t.acting_obstacle() for name, t in trainers.items()}
    blocked = "; ".join(f"behavior {b!r}: {why}" for b, why in obstacles.items() if why is not None)
    if blocked and options.acting == "workers":
        raise UsageError(f"--acting=workers: {blocked}; use --acting=main (or auto)")
    return blocked or None


class _StepCounter:
    """Global steps (one per environment instance whose results came back, as in ML-Agents),
    the progress bar and --save-freq checkpoints."""

    def __init__(self, trainers: dict[str, BehaviorTrainer], options: RunOptions, bar: Any,
                 global_step: int) -> None:
        self.trainers, self.options, self.bar, self.global_step = trainers, options, bar, global_step
        self._trainer_steps = self._total()

    def _total(self) -> int:
        return sum(t.step for t in self.trainers.values())

    def add(self, env_steps: int) -> None:
        previous, self.global_step = self.global_step, self.global_step + env_steps
        total = self._total()
        if self.bar is not None:
            self.bar.update(total - self._trainer_steps)
        self._trainer_steps = total
        save_freq = self.options.save_freq
        if not self.options.inference and self.global_step // save_freq > previous // save_freq:
            for trainer in self.trainers.values():
                trainer.save(self.global_step)


def _loop(env: Env, trainers: dict[str, BehaviorTrainer], stop: Interrupts, counter: _StepCounter) -> None:
    """The policy acts in this process on every agent of every step."""
    while not stop.requested and any(t.should_continue() for t in trainers.values()):
        for name, trainer in trainers.items():
            decision, terminal = env.get_steps(name)
            with timed("policy_act"):
                actions = trainer.act(decision, terminal)
            env.set_actions(name, actions)
        with timed("env_step"):
            env.step()
        with timed("trainer_advance"):
            for trainer in trainers.values():
                trainer.advance()
        # pipelined workers return half of the instances per step
        counter.add(getattr(env, "results_returned", 1))


def _acting_loop(acting: ActingWorkers, trainers: dict[str, BehaviorTrainer], stop: Interrupts,
                 counter: _StepCounter) -> None:
    """The workers act; this process takes their rounds of finished segments and learns."""
    while not stop.requested and any(t.should_continue() for t in trainers.values()):
        with timed("env_step"):  # waiting for the workers' next round: their environments and acting
            results, env_steps = acting.take_round()
        with timed("record_segments"):
            for r in results:
                trainers[r.behavior].record_round(r.segments, r.episodes)
        with timed("trainer_advance"):
            for trainer in trainers.values():
                trainer.advance()
        acting.publish()
        counter.add(env_steps)


def _restore(trainer: BehaviorTrainer, options: RunOptions, s: TrainerSettings, models: Path) -> int:
    """Load weights for --resume, --initialize-from, init_path or --inference; return the global step."""
    # each takes the newest intact checkpoint, past damaged ones (BehaviorTrainer.restore_newest)
    own = trainer.checkpoints
    if options.resume:
        if not own.list():
            raise CheckpointError(
                f"--resume: run {options.run_id!r} has no checkpoint for behavior {trainer.name!r} "
                f"in {trainer.checkpoints.folder}"
            )
        path, step = trainer.restore_newest(own, weights_only=False, set_aside=not options.dry_run,
                                            advice="start the run over with --force")
        logger.info("Resumed %s from %s at step %d", trainer.name, path, trainer.step)
        return step
    if options.inference and own.list():  # run the saved policy for max_steps new steps
        path, _ = trainer.restore_newest(own, weights_only=True, set_aside=False,
                                         advice="train the run again with --force")
        logger.info("Loaded %s from %s for inference", trainer.name, path)
        return 0
    source = models / options.initialize_from / trainer.name if options.initialize_from else (
        Path(s.init_path) if s.init_path else None)
    if source is not None:
        source_checkpoints = CheckpointManager(source, 0)
        if not source_checkpoints.list():
            raise CheckpointError(f"no checkpoint for behavior {trainer.name!r} in {source} to initialize from")
        path, _ = trainer.restore_newest(
            source_checkpoints, weights_only=True, set_aside=False,
            advice="initialize from another run" if options.initialize_from else "set init_path to another folder")
        logger.info("Initialized %s from %s", trainer.name, path)
    elif options.inference:
        logger.warning("--inference: no trained model for %s; running an untrained policy", trainer.name)
    return 0


def _options_dict(options: RunOptions, seed: int) -> dict[str, Any]:
    import dataclasses

    out = dataclasses.asdict(options)
    out["seed"] = seed
    return out


class _progress_bar:
    def __init__(self, trainers: dict[str, BehaviorTrainer]) -> None:
        self.total = sum(t.settings.max_steps for t in trainers.values())
        self.initial = sum(t.step for t in trainers.values())
        self.bar: Any = None

    def __enter__(self) -> Any:
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, initial=self.initial, unit="step", disable=None, leave=False,
                        dynamic_ncols=True)
        return self.bar

    def __exit__(self, *exc: Any) -> None:
        self.bar.close()
