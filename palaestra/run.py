"""The run: options → environment and one trainer per behavior → the step loop → outputs.

Lifecycle rules (ML-Agents 0.16): a reused ``--run-id`` is an error without ``--resume`` or
``--force``; ``--resume`` restores every behavior from its newest checkpoint; ``--force`` starts
over; ``--initialize-from`` copies another run's weights at step 0; ``--inference`` runs the
policy without training or saving. A checkpoint is written every ``--save-freq`` environment
steps and at the end; the first Ctrl+C stops the loop, saves and exports, and exits 0.
"""

from __future__ import annotations

import logging
import random
import shutil
import signal
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
from palaestra.cli import RunOptions, UsageError
from palaestra.envs.base import EngineConfig, Env, EnvError
from palaestra.envs.sources import describe_specs, make_env
from palaestra.envs.workers import RestartLimits, WorkerPoolEnv
from palaestra.rollout.acting_pool import ActingWorkers
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

logger = logging.getLogger("palaestra")


def run(options: RunOptions) -> int:
    """Run mlagents-learn with these options; return the process exit code."""
    try:
        return _run(options)
    except (ConfigError, EnvError, CheckpointError, UsageError, SaveError) as e:
        logger.error("%s", e)
        return 1
    except OSError as e:  # a folder that cannot be written, a full disk
        logger.error("cannot read or write %s: %s", e.filename or "a file", e.strerror or e)
        return 1
    except KeyboardInterrupt:  # outside the training loop (start-up, or a third Ctrl+C while saving)
        logger.info("Interrupted; checkpoints on disk are complete (each is written atomically)")
        return 130


def _check_options(options: RunOptions, models: Path) -> None:
    if options.resume and options.force:
        raise UsageError("--resume and --force contradict each other: --resume continues a run, --force starts it over")
    for flag, path in (("--curriculum", options.curriculum), ("--sampler", options.sampler)):
        if path is not None:
            if not Path(path).exists():
                raise UsageError(f"{flag}: file {path!r} does not exist")
            raise UsageError(f"{flag} is not supported yet; run without it")
    if not options.run_id or "/" in options.run_id or options.run_id in (".", ".."):
        raise UsageError(f"--run-id {options.run_id!r}: expected a plain name without '/'")
    run_dir = models / options.run_id
    exists = run_dir.is_dir() and any(run_dir.iterdir())
    if options.resume and not exists:
        raise UsageError(
            f"--resume: there is no previous run {options.run_id!r} (no {run_dir}); "
            "drop --resume to start it"
        )
    if exists and not (options.resume or options.force or options.inference or options.dry_run):
        raise UsageError(
            f"run-id {options.run_id!r} was already used ({run_dir} exists); pass --resume to continue "
            "it, --force to overwrite it, or choose another --run-id"
        )
    if options.initialize_from is not None and not (models / options.initialize_from).is_dir():
        raise UsageError(
            f"--initialize-from: there is no run {options.initialize_from!r} (no {models / options.initialize_from})"
        )


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


class _StopFlag:
    """The first Ctrl+C asks the loop to stop and save; a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> "_StopFlag":
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not in the main thread: leave Ctrl+C alone
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.info("Interrupted: saving the model and stopping (Ctrl+C again to stop at once)")

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _run(options: RunOptions) -> int:
    models, summaries = Path("models"), Path("summaries")
    config = load_trainer_config(options.trainer_config_path)
    _check_options(options, models)
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
    if not in_process:  # worker processes (envs/workers.py)
        env = WorkerPoolEnv(options.env, options.num_envs, seed=seed, num_areas=options.num_areas,
                            env_args=options.env_args, engine=engine, base_port=options.base_port,
                            restarts=RestartLimits(options.max_lifetime_restarts, options.restarts_rate_limit_n,
                                                   options.restarts_rate_limit_period_s))
    else:
        env = make_env(options.env, seed=seed, num_areas=options.num_areas, env_args=options.env_args,
                       engine=engine, port=options.base_port)
    try:
        settings = _resolve_settings(config, env)
        if options.dry_run:
            _print_dry_run(options, config, env, settings, seed)
            return 0
        return _train(options, env, settings, seed, models, summaries)
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


def _train(options: RunOptions, env: Env, settings: dict[str, TrainerSettings], seed: int,
           models: Path, summaries: Path) -> int:
    run_dir = models / options.run_id
    if options.force and run_dir.exists():
        shutil.rmtree(run_dir)
    device = torch.device("cuda" if torch.cuda.is_available() and not options.cpu else "cpu")
    # numpy's BLAS only ever sees small products here (acting on one step's agents, PPO's small
    # mini-batches): one thread, whose workers would otherwise spin on the cores torch needs.
    threadpool_limits(1, user_api="blas")
    if device.type == "cpu" and max(s.hidden_units for s in settings.values()) < 256:
        # Measured (docs/benchmarks.md): small networks train faster on one torch thread; the
        # extra threads cost more in synchronization than they gain at these sizes. From 256
        # units (SAC's usual 256x256, batch 256) a second thread pays off.
        torch.set_num_threads(1)
        threadpool_limits(1)
    logger.info("Palaestra %s: run %r on %s, seed %d, device %s", __version__, options.run_id, options.env,
                seed, device)
    start_time = time.time()
    trainers: dict[str, BehaviorTrainer] = {}
    writers: list[Any] = []  # closed on every way out, so no writer thread outlives the run
    try:
        global_step = _build_trainers(trainers, writers, options, env, settings, seed, device, models,
                                      summaries, run_dir, start_time)
        return _train_loop(trainers, options, env, settings, seed, run_dir, summaries, global_step)
    finally:
        for writer in writers:
            writer.close()


def _build_trainers(trainers: dict[str, BehaviorTrainer], writers: list[Any], options: RunOptions, env: Env,
                    settings: dict[str, TrainerSettings], seed: int, device: torch.device, models: Path,
                    summaries: Path, run_dir: Path, start_time: float) -> int:
    """One trainer per behavior, restored as the options ask; return the global step."""
    training = not options.inference
    global_step = 0
    for name, spec in env.behavior_specs.items():
        s = settings[name]
        category = f"{options.run_id}_{name}"
        own: list[Any] = [ConsoleWriter(start_time, training), GaugeWriter()]
        if training:
            summaries.mkdir(parents=True, exist_ok=True)
            tb = TensorBoardWriter(summaries, category, clear_old=not options.resume)
            writers.append(tb)
            tb.write_text("Hyperparameters", yaml.safe_dump(s.as_dict(), sort_keys=False))
            own += [tb, CSVWriter(summaries, category, append=options.resume)]
        trainer = BehaviorTrainer(
            name, spec, s, device, StatsReporter(category, own),
            CheckpointManager(run_dir / name, options.keep_checkpoints), run_dir, training,
            MetricsCSV(summaries, category) if options.debug and training else None,
            seed=seed + len(trainers),
        )
        global_step = max(global_step, _restore(trainer, options, s, models))
        trainers[name] = trainer
        logger.info("%s: %s\n%s", name, describe_specs(env)[name],
                    yaml.safe_dump(s.as_dict(), sort_keys=False).rstrip())
    return global_step


def _train_loop(trainers: dict[str, BehaviorTrainer], options: RunOptions, env: Env,
                settings: dict[str, TrainerSettings], seed: int, run_dir: Path, summaries: Path,
                global_step: int) -> int:
    """Step until every behavior is done or Ctrl+C; then save, export and write the timers."""
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
    with _StopFlag() as stop, _progress_bar(trainers) as bar:
        counter = _StepCounter(trainers, options, bar, global_step)
        try:
            with timed("env_reset"):
                if acting is not None:
                    acting.start()
                else:
                    env.reset()
            if acting is not None:
                _acting_loop(acting, trainers, stop, counter)
            else:
                _loop(env, trainers, stop, counter)
        except KeyboardInterrupt:
            logger.info("Interrupted again: saving what is there")
        except Exception as e:  # the environment or a trainer failed: save first
            error = e
        finally:
            if acting is not None:
                acting.close()
    global_step = counter.global_step
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
    """Acting in the workers (rollout/acting_pool.py) when --acting asks for it or allows it."""
    if not isinstance(env, WorkerPoolEnv) or options.acting == "main":
        return None
    obstacles = {name: t.acting_obstacle() for name, t in trainers.items()}
    blocked = "; ".join(f"behavior {b!r}: {why}" for b, why in obstacles.items() if why is not None)
    if blocked:
        if options.acting == "workers":
            raise UsageError(f"--acting=workers: {blocked}; use --acting=main (or auto)")
        logger.info("the policy acts in the main process for all %d environment workers (%s)", env.n, blocked)
        return None
    threaded = all(t.settings.threaded for t in trainers.values())
    acting = ActingWorkers(env, {name: t.acting_plan(env.n) for name, t in trainers.items()},
                           {name: t.algorithm.policy_arrays for name, t in trainers.items()}, seed, threaded)
    for trainer in trainers.values():
        trainer.algorithm.decoupled = acting.lag > 0
    logger.info("the policy acts in each of the %d environment workers, in rounds; %s", env.n,
                f"they may run {acting.lag} rounds ahead while the trainers update (threaded: true)" if threaded
                else "they wait for each update (threaded: false)")
    return acting


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


def _loop(env: Env, trainers: dict[str, BehaviorTrainer], stop: "_StopFlag", counter: _StepCounter) -> None:
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


def _acting_loop(acting: ActingWorkers, trainers: dict[str, BehaviorTrainer], stop: "_StopFlag",
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
        path, step = trainer.restore_newest(own, weights_only=False, set_aside=True,
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
