"""A run's folders: models/<run-id> and summaries/, and the weights a run starts from.

The rules of ML-Agents 0.16: a reused ``--run-id`` is an error without ``--resume`` or
``--force``; ``--resume`` restores every behavior from its newest checkpoint; ``--force`` starts
over (its old folder is deleted only once every check has passed); ``--initialize-from`` (or a
behavior's ``init_path``) copies another run's weights at step 0; ``--inference`` runs the saved
policy without training or saving.

A behavior's outputs (its checkpoint folder, ``<name>.onnx``, its summaries) carry its *output
name* (:func:`output_names`): the behavior's name, with a Unity team (``Striker?team=0``) reduced to
the name before ``?`` as ML-Agents does; with several teams of one name, each keeps its team as a
file-system-safe suffix (``Striker_team_0``). ``configuration.yaml`` records them, so that
``--resume``, ``--inference`` and ``--initialize-from`` find what a run wrote.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import IO, Callable

from palaestra.checkpoints import (PARTIAL_FILE, CheckpointError, CheckpointManager, SaveError, atomic_write_text,
                                  os_reason, remove_partial_files)
from palaestra.options import SEED_MAX, RunOptions, UsageError
from palaestra.settings import TrainerSettings
from palaestra.trainer import BehaviorTrainer

logger = logging.getLogger("palaestra")


RUN_LOGS = "run_logs"  # models/<run-id>/run_logs: the logs of Unity builds
RUN_LOCK = ".lock"  # models/<run-id>/.lock: held by the process training the run (RunLock)
CONFIGURATION = "configuration.yaml"  # models/<run-id>/configuration.yaml, with the output names
# characters Windows (or another file system) cannot hold in a file name
UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f]+')


def output_names(behaviors: list[str], known: dict[str, str] | None = None,
                 together: set[str] | None = None) -> dict[str, str]:
    """The output name of every behavior of ``behaviors`` and ``known`` (behavior → output name
    given before: by this run to behaviors that appeared earlier, or by the run it resumes; kept).
    A behavior with a team is named by the name before ``?`` when no other team of that name is
    known, and by its whole name made file-system-safe otherwise; names are never shared, but by
    the teams of a name in ``together`` (self-play: one policy, saved under the name before ``?``)."""
    names = dict(known or {})
    every = [*names, *(b for b in behaviors if b not in names)]
    for behavior in every:
        if behavior in names:
            continue
        base = behavior.partition("?")[0]
        if together and base in together:
            shared = next((names[b] for b in names if b.partition("?")[0] == base), None)
            if shared is not None:
                names[behavior] = shared
                continue
        alone = (together is not None and base in together) or sum(b.partition("?")[0] == base for b in every) == 1
        name = UNSAFE.sub("_", base if alone else behavior.replace("?team=", "_team_")).rstrip(" .") or "behavior"
        taken = {n.casefold() for n in names.values()}  # (Windows and macOS ignore case)
        candidate, n = name, 1
        while candidate.casefold() in taken:  # e.g. a behavior that is itself named 'Striker_team_0'
            n += 1
            candidate = f"{name}_{n}"
        names[behavior] = candidate
    return names


NAME_MAX = 255  # bytes in a file name on Linux, macOS and Windows file systems alike


def check_name_lengths(run_id: str, names: dict[str, str]) -> None:
    """Every file of the run a file system can name: the longest is the temp file of a behavior's
    ``summaries/<run-id>_<name>_metrics.csv`` (checkpoints.temp_file_beside). UsageError naming the
    run-id and the behavior otherwise (found before training, not at the first summary)."""
    for behavior, name in names.items():
        longest = f".{run_id}_{name}_metrics.csv.12345678.tmp"
        size = len(longest.encode("utf-8"))
        if size > NAME_MAX:
            room = len(run_id.encode("utf-8")) - (size - NAME_MAX)
            fix = f"choose a run-id of at most {room} bytes" if room >= 1 else \
                f"the behavior's name alone is too long ({len(name.encode('utf-8'))} bytes): give it a shorter name"
            raise UsageError(f"--run-id {run_id!r} with behavior {behavior!r} names files of {size} bytes "
                             f"(summaries/.{run_id}_{name}_metrics.csv... while it is written), above the "
                             f"{NAME_MAX} a file name may have; {fix}")


_warned_configurations: set[Path] = set()


def _configuration(run_dir: Path) -> dict:
    """The run's configuration.yaml as a mapping: empty if there is none; a file that is not a
    YAML mapping is said once (the seed and output names it held are not used)."""
    import yaml

    path = run_dir / CONFIGURATION
    try:
        loaded = yaml.safe_load(path.read_text())
        if isinstance(loaded, dict):
            return loaded
        problem = f"it holds {type(loaded).__name__}, not a mapping of settings"
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        problem = " ".join(str(e).split()) or type(e).__name__
    if path not in _warned_configurations:
        _warned_configurations.add(path)
        logger.warning("%s cannot be read (%s): the seed and output names it recorded are not used", path, problem)
    return {}


def newest_checkpoint_step(run_dir: Path) -> int:
    """The step of the newest checkpoint of any behavior of the run (0 without one), by file name:
    where a resumed run goes on from (a damaged newest one is found and set aside later)."""
    if not run_dir.is_dir():
        return 0
    return max((step for folder in run_dir.iterdir() if folder.is_dir()
                for step, _ in CheckpointManager(folder, 0).list()), default=0)


def recorded_seed(run_dir: Path, seed_given: bool = False) -> int | None:
    """The seed the run in ``run_dir`` recorded in its configuration.yaml (None if it cannot be
    read; a value that is not a seed is a warning, and unless ``seed_given`` a new random seed is
    used)."""
    options = _configuration(run_dir).get("run_options")
    if not isinstance(options, dict) or "seed" not in options:
        return None
    seed = options["seed"]
    if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= SEED_MAX:
        return seed
    logger.warning("%s: run_options.seed is %r, not a seed (an integer from 0 to %d)%s", run_dir / CONFIGURATION,
                   seed, SEED_MAX,
                   "" if seed_given else "; --resume uses a new random seed (give --seed to choose one)")
    return None


def recorded_output_names(run_dir: Path, behaviors: list[str]) -> dict[str, str]:
    """The output names the run in ``run_dir`` recorded in its configuration.yaml. A run written
    before they were recorded named its files by the whole behavior name: of ``behaviors``, those
    whose folder has that name keep it. A recorded name that is not one file name (a path, ``..``)
    is a CheckpointError: the run's files would be written outside its folder."""
    recorded = _configuration(run_dir).get("output_names")
    if recorded is None:
        return {b: b for b in behaviors if UNSAFE.search(b) and (run_dir / b).is_dir()}
    if not isinstance(recorded, dict):  # (a hand edit: its folders cannot be told)
        raise CheckpointError(f"{run_dir / CONFIGURATION}: output_names is {recorded!r}; expected a mapping of "
                              "each behavior to its folder's name in the run's folder (as the run wrote it)")
    names = {str(b): n for b, n in recorded.items()}
    for behavior, name in names.items():
        if not isinstance(name, str) or not name.strip(" .") or UNSAFE.search(name) or name != name.rstrip(" ."):
            raise CheckpointError(
                f"{run_dir / CONFIGURATION}: output_names[{behavior!r}] is {name!r}, which is not a file name in the "
                "run's folder (no folders, '..', or characters a file name cannot hold); set it back to the name "
                f"of the behavior's folder in {run_dir}")
    return names


def recorded_behaviors(run_dir: Path) -> set[str] | None:
    """The behaviors the run in ``run_dir`` recorded (its output names), or None where it recorded
    none (a run from before they were recorded, or without configuration.yaml)."""
    recorded = _configuration(run_dir).get("output_names")
    return {str(b) for b in recorded} if isinstance(recorded, dict) else None


def check_run_folders(options: RunOptions, models: Path) -> None:
    """The options against the runs in ``models``: the run-id is new unless --resume, --force or
    --inference says what to do with the old run; the runs to resume or initialize from exist."""
    run_dir = models / options.run_id
    # a folder holding only the logs of Unity builds (run_logs), or the temp file of a write a kill
    # interrupted, is from a run that never trained
    exists = run_dir.is_dir() and any(p.name not in (RUN_LOGS, RUN_LOCK) and not PARTIAL_FILE.match(p.name)
                                      for p in run_dir.iterdir())
    if options.resume and not exists:
        raise UsageError(
            f"--resume: there is no previous run {options.run_id!r} "
            f"({'no ' + str(run_dir) if not run_dir.is_dir() else str(run_dir) + ' holds no saved run'}); "
            "drop --resume to start it"
        )
    if exists and not (options.resume or options.force or options.inference):
        # (a run that stopped before its first checkpoint has nothing --resume could continue)
        resumable = any(run_dir.glob("*/checkpoint-*.pt"))
        raise UsageError(
            f"run-id {options.run_id!r} was already used ({run_dir} exists); " +
            ("pass --resume to continue it, --force to overwrite it" if resumable else
             "it saved no checkpoint to continue from: pass --force to start it over") +
            ", or choose another --run-id"
        )
    if options.initialize_from is not None and options.resume:  # (not read, so not looked for either)
        logger.warning("--initialize-from %s has no effect with --resume: the run continues from its own checkpoints",
                       options.initialize_from)
        return
    if options.initialize_from is not None and not (models / options.initialize_from).is_dir():
        raise UsageError(
            f"--initialize-from: there is no run {options.initialize_from!r} (no {models / options.initialize_from})"
        )
    if options.initialize_from is not None and options.inference and exists:
        logger.warning("--initialize-from %s has no effect with --inference on run %r, which has its own "
                       "checkpoints: they are run (the other run's are used only for behaviors it has none of)",
                       options.initialize_from, options.run_id)


def check_output_folder(folder: Path) -> None:
    """An output folder, or the folder it will be made in, must be a folder that can be written."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot read or write {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cannot read or write {folder}: {existing} is not writable")


class RunLock:
    """An exclusive lock on a run's folder for the process that trains it: a second process with
    the same ``--run-id`` (``--force`` or ``--resume`` while the first runs) would mix both runs'
    checkpoints, summaries and models. Released when the process ends, however it ends: ``flock``
    where there is ``fcntl``; on Windows a byte-range lock (``msvcrt``) on a byte past the pid the
    file holds (Windows' locks are mandatory: a locked byte could not be read by the next process)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / RUN_LOCK
        self._file = None
        lock = _exclusive_lock()
        if lock is None:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            lock(handle)
        except OSError as e:
            if e.errno not in _HELD_ELSEWHERE:  # a file system without locks (NFS without its lock
                handle.close()                  # daemon, some network and FUSE mounts): train unlocked
                logger.warning("Could not lock %s (%s): a second process given --run-id %s while this one runs "
                               "would not be stopped", self.path, os_reason(e), run_dir.name)
                return
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise UsageError(f"run {run_dir.name!r} is in use by another process{f' (pid {holder})' if holder else ''} "
                             f"that holds {self.path}; wait for it to end, stop it, or choose another --run-id") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
        except OSError as e:  # a full disk: said with the file, and no empty lock left behind
            with contextlib.suppress(OSError):  # (closing flushes the same bytes again)
                handle.close()
            self.path.unlink(missing_ok=True)
            raise SaveError(f"could not write {self.path}: {os_reason(e)}") from None
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the lock; the file stays for the next run
            self._file = None


_LOCKED_BYTE = 1 << 20  # Windows: the byte locked, far past the pid written at the start
# the errors of a lock another process holds: flock's EWOULDBLOCK (EAGAIN), and EACCES or Windows'
# EDEADLOCK from msvcrt; any other (ENOLCK, EOPNOTSUPP, ...) is a file system that cannot lock
_HELD_ELSEWHERE = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, getattr(errno, "EDEADLOCK", errno.EDEADLK)})


def _exclusive_lock() -> Callable[[IO[str]], None] | None:
    """A function that takes an exclusive lock on an open file without waiting (OSError if another
    process holds it), or None where the system offers neither lock."""
    try:
        import fcntl
    except ImportError:
        pass
    else:
        return lambda handle: fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        import msvcrt
    except ImportError:
        return None

    def lock(handle: IO[str]) -> None:
        fd = handle.fileno()
        os.lseek(fd, _LOCKED_BYTE, os.SEEK_SET)  # msvcrt locks from the file's position on
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    return lock


def start_over_if_forced(options: RunOptions, run_dir: Path) -> None:
    """--force: delete the old run's folder (called after every check, just before training), but
    not the logs the Unity builds of this run are writing already. A folder this user may not
    delete from stops the run before anything is deleted."""
    if not (options.force and run_dir.exists()):
        return
    old = [path for path in run_dir.iterdir() if path.name not in (RUN_LOGS, RUN_LOCK)]  # (the lock held stays)
    stuck = _undeletable(run_dir, old)
    if stuck is not None:
        raise UsageError(f"--force cannot delete the old run in {run_dir}: {stuck} is read-only to this user, so "
                         f"nothing was deleted; let this user read and change it (chmod -R u+rwX {run_dir}), or "
                         "choose another --run-id")

    def failed(function: object, name: str, error: BaseException) -> None:  # (rmtree's own names the file alone)
        reason = os_reason(error) if isinstance(error, OSError) else str(error)
        raise SaveError(f"--force could not delete {name} ({reason}); the old run in {run_dir} is partly deleted: "
                        "delete the rest yourself, or choose another --run-id") from None

    # (onexc from Python 3.12, where onerror is deprecated; onerror's error comes as exc_info)
    on_error = {"onexc": failed} if sys.version_info >= (3, 12) else {"onerror": lambda f, n, info: failed(f, n, info[1])}
    for path in old:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, **on_error)
        else:
            try:
                path.unlink()
            except OSError as e:
                failed(path.unlink, str(path), e)


def _undeletable(run_dir: Path, old: list[Path]) -> Path | None:
    """The first folder among these paths (the run folder included) that this user may not list or
    delete entries from (os.access: its permissions, a read-only file system), or None."""
    if old and not os.access(run_dir, os.W_OK | os.X_OK):
        return run_dir
    for top in old:
        if not top.is_dir() or top.is_symlink():
            continue
        if not os.access(top, os.R_OK | os.W_OK | os.X_OK):  # (os.walk passes over a folder it cannot list)
            return top
        for folder, subfolders, _ in os.walk(top):  # (links to folders are entries, not followed)
            for each in (os.path.join(folder, name) for name in subfolders):
                if not os.path.islink(each) and not os.access(each, os.R_OK | os.W_OK | os.X_OK):
                    return Path(each)
    return None


def _record_command(options: RunOptions, trainer: BehaviorTrainer) -> str:
    """How palaestra-record plays ``trainer``'s exported model in this run's environment (a Unity
    Editor, which has no --env, and a build's own command line, which its --env-args cannot take
    where an argument starts with '-', only in Unity)."""
    if options.env is None or any(str(a).startswith("-") for a in options.env_args):
        return ""
    command = ["palaestra-record", f"--env={options.env}", f"--policy={trainer.onnx_path}"]
    if options.env_args:
        command += ["--env-args", *options.env_args]
    return f" and with {shlex.join(command)}"


def restore(trainer: BehaviorTrainer, options: RunOptions, settings: TrainerSettings, models: Path) -> int:
    """Load weights for --resume, --initialize-from, init_path or --inference; return the global step."""
    # each takes the newest intact checkpoint, past damaged ones (BehaviorTrainer.restore_newest)
    own = trainer.checkpoints
    # --inference first: with --resume too (ML-Agents 0.16's way to run a trained model) it loads
    # the weights, counts from 0 and changes nothing in the run's folder
    passed_over = (" it runs the run's own model" if options.inference and own.list() else
                   " it continues from the run's own checkpoints" if options.resume else
                   f" --initialize-from={options.initialize_from} comes first" if options.initialize_from else None)
    if settings.init_path and passed_over is not None:  # (as ML-Agents; said, since the config asks for it)
        flag = "" if passed_over.startswith(" --") else " with --inference" if options.inference else " with --resume"
        logger.warning("behavior %r: init_path %s (%s of %s) is not used%s:%s", trainer.name, settings.init_path,
                       settings.origin("init_path"), options.trainer_config_path, flag, passed_over)
    if options.inference and own.list():  # run the saved policy for max_steps new steps
        again = "or train the run again under another --run-id, or with --force (which empties its models folder)"
        played = f"its exported model {trainer.onnx_path} still plays in Unity{_record_command(options, trainer)}; " \
                 f"{again}" if trainer.onnx_path.is_file() else again[3:]
        path, _ = trainer.restore_newest(own, weights_only=True, set_aside=False, advice=played)
        logger.info("Loaded %s from %s for inference", trainer.name, path)
        return 0
    if options.resume:
        if not own.list():
            raise CheckpointError(
                f"--resume: run {options.run_id!r} has no checkpoint for behavior {trainer.name!r} "
                f"in {trainer.checkpoints.folder} (it stopped before its first one, or never trained that "
                "behavior): start it over with --force, or use another --run-id"
            )
        path, step = trainer.restore_newest(own, weights_only=False, set_aside=not options.dry_run,
                                            advice="start the run over with --force (which empties its models "
                                                   "folder), or train under another --run-id")
        logger.info("%s %s from %s at step %d", "Would resume" if options.dry_run else "Resumed", trainer.name, path,
                    trainer.step)
        return step
    if options.initialize_from:
        other = models / options.initialize_from
        source: Path | None = other / recorded_output_names(other, [trainer.name]).get(trainer.name,
                                                                                         trainer.output_name)
    else:
        source = Path(settings.init_path) if settings.init_path else None
    if source is not None and source.is_file():  # init_path naming one checkpoint file
        trainer.restore(source, weights_only=True, advice="set init_path to another checkpoint")
        logger.info("Initialized %s from %s", trainer.name, source)
    elif source is not None:
        source_checkpoints = CheckpointManager(source, 0)
        if not source_checkpoints.list():
            inside = source / trainer.output_name
            hint = (f"; its folder {inside} holds them" if CheckpointManager(inside, 0).list() else
                    "; it does not exist" if not source.exists() else "")
            given = "" if options.initialize_from else \
                f" (init_path, set in {settings.origin('init_path')} of {options.trainer_config_path})"
            raise CheckpointError(f"no checkpoint for behavior {trainer.name!r} in {source} to initialize "
                                  f"from{given}{hint}")
        path, _ = trainer.restore_newest(
            source_checkpoints, weights_only=True, set_aside=False,
            advice="initialize from another run" if options.initialize_from else "set init_path to another folder")
        logger.info("Initialized %s from %s", trainer.name, path)
    return 0  # (--inference without a model: said by the run, once it knows whether any behavior has one)


# summaries/<run-id>_<behavior> holds which run and behavior write there: run "x_y" with behavior
# "z" and run "x" with behavior "y_z" share the name, and the second must not clear the first's
SUMMARIES_OWNER = ".owner.json"


def summaries_category(run_id: str, output_name: str) -> str:
    """The summaries' name of a run's behavior (ML-Agents': ``<run-id>_<behavior>``)."""
    return f"{run_id}_{output_name}"


def check_summaries_owner(summaries: Path, run_id: str, output_name: str) -> None:
    """CheckpointError when the behavior's summaries folder belongs to another run and behavior
    (recorded by :func:`claim_summaries`; a folder without the record, from an older version or
    ML-Agents, is taken as before)."""
    category = summaries_category(run_id, output_name)
    try:
        owner = json.loads((summaries / category / SUMMARIES_OWNER).read_text())
        other = (str(owner["run_id"]), str(owner["behavior"]))
    except (OSError, ValueError, KeyError, TypeError):
        return
    if other != (run_id, output_name):
        raise CheckpointError(
            f"{summaries / category} holds the summaries of run {other[0]!r} (behavior {other[1]!r}), which run "
            f"{run_id!r}'s behavior {output_name!r} would write under the same name (<run-id>_<behavior>) and clear; "
            f"choose another --run-id, or move that folder")


def claim_summaries(summaries: Path, run_id: str, output_name: str) -> None:
    """Record in the behavior's summaries folder that this run and behavior write there."""
    folder = summaries / summaries_category(run_id, output_name)
    folder.mkdir(parents=True, exist_ok=True)
    remove_partial_files(folder, re.escape(SUMMARIES_OWNER))  # a kill's during an earlier write
    atomic_write_text(folder / SUMMARIES_OWNER, json.dumps({"run_id": run_id, "behavior": output_name}) + "\n")
