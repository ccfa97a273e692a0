"""One behavior's training: its collector, its algorithm, its stats and its checkpoints.

The run loop hands each behavior's decision and terminal steps to :meth:`BehaviorTrainer.act`
and asks :meth:`BehaviorTrainer.advance` to update the policy when enough experience is in.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from palaestra.algorithms import make_algorithm
from palaestra.capabilities import acting_obstacle, capabilities
from palaestra.checkpoints import (
    NETWORK_SETTINGS,
    SAVE_FAILURES,
    CheckpointError,
    CheckpointManager,
    DamagedCheckpointError,
    LayoutMismatch,
    SaveError,
    check_algorithm_state,
    os_reason,
    remove_partial_files,
    save_reason,
)
from palaestra.curriculum.curricula import Curriculum, LessonState
from palaestra.demos.record import Policy
from palaestra.envs.base import ActionSpec, ActionTuple, BehaviorSpec, DecisionSteps, EnvDataError, TerminalSteps
from palaestra.envs.observations import is_image
from palaestra.export import export_policy
from palaestra.networks.accelerator import weight_layout
from palaestra.networks.normalizer import FLOAT32_MAX, NormalizerOverflow
from palaestra.rollout.collector import Collector
from palaestra.rollout.segments import EpisodeStats, Segments
from palaestra.self_play import SelfPlayGroup
from palaestra.settings import READ_BY, TrainerSettings
from palaestra.stats import MetricsCSV, StatsReporter
from palaestra.timers import timed
from palaestra.workers.acting import ActingWorkers, BehaviorPlan

logger = logging.getLogger("palaestra")

CHECKPOINT_FORMAT = 1
# replay_buffer.pt: 2 since the ring is saved in parts (files without the key are read as before);
# 3 since image next observations are stored once (``follows`` and ``tails``: 2 and before are read
# as before); a newer one is refused by name rather than misread
REPLAY_FORMAT = 3


def network_record(settings: TrainerSettings, spec: BehaviorSpec, signals: list[str]) -> dict[str, Any]:
    """The settings that shape a behavior's networks, as its checkpoints record them; keys that
    do not apply (the memory without an LSTM, the image encoder without images) are left out.
    ``signals``: the reward signals the algorithm built, in the order of its value heads (and
    Q outputs), which another order would swap without changing a shape. ``trainer`` is
    recorded to explain a mismatch, not compared: offline_bc's network is PPO's."""
    record: dict[str, Any] = {key: getattr(settings, key) for key in
                              ("trainer", "hidden_units", "num_layers", "activation", "normalize", "use_recurrent")}
    record["reward_signals"] = signals
    if settings.trainer not in READ_BY["normalize"]:  # what the network has: no normalizer (offline_bc, online_bc)
        record["normalize"] = False
    if settings.use_recurrent:
        record["memory_size"] = settings.memory_size
        if hasattr(settings, "lstm_placement"):
            record["lstm_placement"] = settings.lstm_placement
    images = any(is_image(shape) for shape in spec.observation_shapes)
    if images:
        record["vis_encode_type"] = settings.vis_encode_type
    for name in signals:  # the reward signals' own settings that shape their models, as <signal>.<key>
        signal = settings.reward_signals.get(name)
        for key in SIGNAL_SHAPE_KEYS.get(name, ()) + (("encoding_size",) if images and name == "gail" else ()):
            record[f"{name}.{key}"] = getattr(signal, key)
    return record


# the settings of each reward signal that shape its model (GAIL's encoding_size: its image encoders')
SIGNAL_SHAPE_KEYS: dict[str, tuple[str, ...]] = {
    "curiosity": ("encoding_size",), "rnd": ("encoding_size",), "gail": ("hidden_units", "use_actions", "use_vail")}


def _network_family(trainer: str) -> str:
    """Trainers whose checkpoints can fit each other's networks: PPO's network is offline_bc's and
    online_bc's too; SAC's is its own."""
    return "sac" if trainer == "sac" else "ppo"


def _as_written(value: Any) -> str:
    """A setting as a config spells it: true, not True; [extrinsic, gail], not ['extrinsic', 'gail']."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(map(_as_written, value)) + "]"
    return str(value)


class DivergedError(Exception):
    """A behavior's policy weights became NaN or infinite: training diverged."""


def _finite(value: Any) -> bool:
    """Whether a stat is finite in float32, the precision the networks and Adam's state are in (a
    loss of 1e60, finite as a Python float, gives infinite gradients all the same); NaN is not."""
    if isinstance(value, float):  # what updates mostly return
        return abs(value) <= FLOAT32_MAX
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return bool((np.abs(np.asarray(value, dtype=np.float64)) <= FLOAT32_MAX).all())


class BehaviorTrainer:
    def __init__(self, name: str, spec: BehaviorSpec, settings: TrainerSettings, device: torch.device,
                 stats: StatsReporter, checkpoints: CheckpointManager, model_dir: Path, training: bool,
                 metrics: MetricsCSV | None = None, seed: int = 0,
                 teacher: Policy | None = None, output_name: str | None = None,
                 demonstrations: bool = True) -> None:
        self.name = name
        # the name of its files: <output_name>.onnx (run_folders.output_names; the run gives the
        # checkpoint folder and summaries the same)
        self.output_name = output_name or name
        self.spec = spec
        self.settings = settings
        self.training = training
        # (demonstrations False: --inference reads none; a dry run still checks them)
        self.algorithm = make_algorithm(spec, settings, device, np.random.default_rng(seed), name, demonstrations)
        # online_bc's teacher (palaestra/teachers.py; capabilities' ``teacher``): the algorithm's ``teach``
        self.teacher = teacher
        self.collector = self.new_collector()
        self.stats = stats
        self.checkpoints = checkpoints
        self.loaded_from: Path | None = None  # the checkpoint restore() last loaded
        self.model_dir = model_dir
        self.metrics = metrics
        self._next_summary = settings.summary_freq
        # the curriculum of this behavior and where it stands (saved in the checkpoints), if any
        self.curriculum: Curriculum | None = None
        self.lesson: LessonState | None = None
        self._kept_lesson: dict | None = None  # a checkpoint's lesson state, resumed without its curriculum
        # more stats for each summary (the environment parameters: palaestra/curriculum/parameters.py)
        self.summary_extra: Callable[[], dict[str, float]] | None = None
        self._returns_seen = 0  # episode returns of the collector's stats already taken by take_finished_returns
        self._returns_carried: list[float] = []  # ... and those a summary took first
        # the episodes a checkpoint's summary so far held (--resume): the next summary's, whichever team plays
        self._resumed_episodes = EpisodeStats()
        self._start = time.time()
        self._last_update_end = time.time()
        # the update stats that came out NaN or infinite: such a loss's gradients leave Adam's
        # state infinite (the weights finite, but never moving again), so the behavior is done
        self.non_finite_losses: list[str] = []
        self.updates_this_run = 0  # a run that trained from step 0 without one exports the untrained policy
        self._said_sparse_summaries = False  # (advance: experience that crosses several summary steps at once)
        # self-play (palaestra/self_play.py): the group of teams this behavior plays in, its team,
        # and a checkpoint's self-play state kept for the group until it forms
        self.self_play: SelfPlayGroup | None = None
        self.team = 0
        self.saved_self_play: dict | None = None
        if training:  # temp files of saves a kill interrupted; this run is the folder's only writer now
            checkpoints.remove_partial_files()
            remove_partial_files(model_dir, rf"{re.escape(self.output_name)}\.onnx")

    def new_collector(self) -> Collector:
        """A collector for this behavior's agents, shaped by its settings and its algorithm's memory."""
        return Collector(self.spec, self.settings.time_horizon, memory_size=self.algorithm.memory_size,
                         behavior=self.name)

    @property
    def step(self) -> int:
        return self.algorithm.step

    @property
    def progress(self) -> float:
        """Training progress, step / max_steps: a curriculum's ``progress`` measure."""
        return self.step / max(self.settings.max_steps, 1)

    def take_finished_returns(self) -> list[float]:
        """Returns of the episodes finished since the last call (a curriculum's episodes); for the
        owner of a self-play group, those every team finished as the learner (as ML-Agents counts
        the learning team's)."""
        taken = self._take_own_returns()
        if self.self_play is not None and self.self_play.owner is self:
            for team in self.self_play.teams.values():
                if team is not self:
                    taken += team._take_own_returns()
        return taken

    def _take_own_returns(self) -> list[float]:
        returns = self.collector.stats.returns
        taken = self._returns_carried + returns[self._returns_seen:]
        self._returns_carried, self._returns_seen = [], len(returns)
        return taken

    def take_episodes(self, learner: bool = True) -> EpisodeStats:
        """The collector's finished episodes since the last call. Those a curriculum has not read
        yet are kept for it (``learner``: they count toward its lesson; a self-play ghost's do not)."""
        reads = self.lesson is not None or (self.self_play is not None and self.self_play.owner.lesson is not None)
        if learner and reads:
            self._returns_carried += self.collector.stats.returns[self._returns_seen:]
        self._returns_seen = 0
        return self.collector.take_episode_stats()

    def end_episodes(self, terminal: TerminalSteps | None = None) -> None:
        """Every environment is about to reset (new environment parameters). The episodes that
        ended on the last step (``terminal``, not yet given to ``act``) are kept as any others; the
        episodes under way end without a final step and their unfinished segments are dropped, as
        in ML-Agents."""
        if terminal is not None and len(terminal):
            segments = self.collector.end_episodes(terminal)
            if segments is not None:
                self.record(segments)
        if self.teacher is not None:  # every agent's episode ends: a recurrent teacher forgets them all
            self.teacher.episodes_ended(self.collector.known_agent_ids)
        self.collector.drop_open_episodes()
        self.algorithm.drop_open_episodes()

    def should_continue(self) -> bool:
        return self.step <= self.settings.max_steps

    @property
    def learning(self) -> bool:
        """Training and not yet past max_steps (afterwards the policy only acts, as in ML-Agents,
        while other behaviors finish)."""
        return self.training and self.should_continue()

    # -- one environment step ----------------------------------------------------------------
    def act(self, decision: DecisionSteps, terminal: TerminalSteps) -> ActionTuple:
        if self.teacher is not None and len(terminal):
            self.teacher.episodes_ended(terminal.agent_id)
        if self.teacher is not None and self.learning and len(decision):
            # the teacher's actions for the very decision steps the policy acts on next
            with timed("teacher_act"):
                self.algorithm.teach(decision, self.teacher.act(decision))
        actor = self.algorithm if self.self_play is None else self.self_play.actor(self.team)
        actions, segments = self.collector.step(decision, terminal, actor.act)
        if segments is not None:
            self.record(segments)
        if self._plays_ghost:
            self.self_play.ghost_episodes(self.take_episodes(learner=False))
        return actions

    @property
    def owns_learning(self) -> bool:
        """Whether this trainer updates, summarizes and saves its policy: always, but for the teams
        of a self-play group that are not its owner (they share the owner's)."""
        return self.self_play is None or self.self_play.owner is self

    def record(self, segments: Segments) -> None:
        """Take finished segments: queued for learning, or only counted past max_steps (or, a
        self-play team playing against its ghost, only counted as the ghost's)."""
        if self._plays_ghost:
            self.self_play.ghost_played(segments)
            return
        if self.self_play is not None and not self.training and not self.owns_learning:
            return  # --inference: the teams of a group play one policy, whose steps are its owner team's
        if self.learning:
            with self._overflow_stops_the_run():  # the environment's values: stopped (saved first), as NaN values are
                collected = self.algorithm.collect(segments)
            for key, values in collected.items():
                self.stats.add(key, values)
            if self.self_play is not None:
                self.self_play.learner_played(segments)
        else:  # past max_steps the policy only acts; its episodes' signal rewards are still reported
            self.algorithm.step += int(segments.length.sum())
            for key, values in self.algorithm.episode_sums.settle().items():  # (segments still unrewarded first)
                self.stats.add(key, values)
            rewards = [signal.rewards(segments) for signal in self.algorithm.signals]
            for key, values in self.algorithm.episode_sums.add(segments, rewards).items():
                self.stats.add(key, values)

    @contextlib.contextmanager
    def _overflow_stops_the_run(self) -> Iterator[None]:
        """A normalizer that would overflow float32 stops the run as bad environment data, naming
        this behavior."""
        try:
            yield
        except NormalizerOverflow as e:
            raise EnvDataError(f"behavior {self.name!r}: {e}") from None

    # -- acting in the environment workers (workers/acting.py) --------------------------------
    def acting_obstacle(self) -> str | None:
        """Why this behavior's policy cannot act in the environment workers, or None if it can
        (run.py's _acting_obstacles words it for --inference)."""
        return acting_obstacle(self.settings)

    def acting_plan(self, workers: int) -> BehaviorPlan:
        share = ActingWorkers.round_agent_steps(self.settings.buffer_size, workers)
        return BehaviorPlan(weight_layout(self.algorithm.policy), self.settings.time_horizon, share,
                            self.algorithm.memory_size)

    def record_round(self, segments: Segments | None, episodes: EpisodeStats) -> None:
        """Take one worker's round: its finished segments and the episodes that ended in it."""
        if segments is not None:
            self.record(segments)
        if self._plays_ghost:  # a self-play team's ghost: its episodes count in the lengths only
            self.self_play.ghost_episodes(episodes)
        else:
            self.collector.stats.merge(episodes)

    @property
    def _plays_ghost(self) -> bool:
        """Whether this self-play team plays its ghost now (its experience does not train)."""
        return self.self_play is not None and self.training and not self.self_play.learns(self.team)

    def acting_weights(self) -> dict[str, np.ndarray]:
        """The weights this behavior acts with, named as the policy's (for the acting workers):
        the policy's, or a self-play team's ghost's."""
        if self.self_play is not None and self.training and not self.self_play.acts_as_learner(self.team):
            return self.self_play.ghost_arrays(self.team)
        return self.algorithm.policy_arrays()

    @property
    def summaries_kept_through(self) -> int:
        """The last step whose summaries an earlier process wrote that a resumed run keeps: the
        step resumed from, or just before a summary the checkpoint still owes (a stop that landed
        while it was written: it is written again, and its first copy must go)."""
        return min(self.step, self._next_summary - 1)

    def advance(self) -> None:
        """Write the summary when due, then update the policy if the buffer is full: as in
        ML-Agents, an update at a summary's step reports its losses in the next summary."""
        if not self.owns_learning:
            return
        if self.self_play is not None and self.training:
            self.self_play.advance()
        if self.step >= self._next_summary:
            # labelled with the multiple of summary_freq crossed, as ML-Agents writes them (the
            # step reached may be past it), so that runs line up step for step
            self.write_summary(self._next_summary)
            crossed = 0
            while self._next_summary <= self.step:
                self._next_summary += self.settings.summary_freq
                crossed += 1
            if crossed > 1 and not self._said_sparse_summaries:
                # ML-Agents takes each agent's time_horizon piece on its own; here a step's pieces come
                # together, and one summary holds what came (said once: the rows are further apart)
                self._said_sparse_summaries = True
                logger.info("%s: its experience arrives in batches (the agents' pieces of time_horizon steps "
                            "together) that cross several multiples of summary_freq %d at once: a batch gets one "
                            "summary, labelled with the first multiple it crossed, so summaries come further apart "
                            "(raise summary_freq to space them evenly)", self.name, self.settings.summary_freq)
        if self.learning and self.algorithm.ready():
            collection_time = time.time() - self._last_update_end
            experiences = self.algorithm.experiences
            start = time.time()
            with timed("_update_policy"):
                with self._overflow_stops_the_run():  # a reward signal's own normalizer (GAIL's, RND's)
                    stats = self.algorithm.update()
                for key, value in stats.items():
                    self.stats.add(key, value)
            self.updates_this_run += 1
            broken = [key for key, value in stats.items() if not _finite(value)]
            if broken:
                self.non_finite_losses = broken
                self.refuse_diverged()
            self._last_update_end = time.time()
            if self.metrics is not None:
                returns = self.collector.stats.returns
                self.metrics.add_row(self.name, self._last_update_end - start, self._last_update_end - self._start,
                                     collection_time, experiences, float(np.mean(returns)) if returns else None)

    def write_summary(self, step: int) -> None:
        episodes, self._resumed_episodes = self._resumed_episodes, EpisodeStats()
        episodes.merge(self.take_episodes())
        lengths = []  # self-play: the ghosts' episodes count in the lengths only, as in ML-Agents
        if self.self_play is not None:
            for team in self.self_play.teams.values():
                if team is not self:
                    episodes.merge(team.take_episodes())
            episodes.merge(self.self_play.take_learner_episodes())  # (of turns that ended since the last summary)
            lengths = self.self_play.take_ghost_lengths()
        if episodes.returns:
            self.stats.add("Environment/Cumulative Reward", episodes.returns)
        if episodes.lengths or lengths:
            self.stats.add("Environment/Episode Length", episodes.lengths + lengths)
        if episodes.entropy_count:
            self.stats.add("Policy/Entropy", episodes.entropy_sum / episodes.entropy_count)
        # the rates the period's updates used (their mean, as ML-Agents'); without one, the rate now
        self.stats.set_if_missing("Policy/Learning Rate", self.algorithm.current_learning_rate())
        if self.step >= self.settings.max_steps:  # the last summary: the stats no later update would bring
            for key, value in self.algorithm.stats_still_due().items():
                self.stats.add(key, value)
        # the summary's period, not the step reached: the one labelled max_steps was trained for
        # (ML-Agents wrote it before its last steps were counted), whatever the update overshot
        self.stats.set("Is Training", 1.0 if self.training and step <= self.settings.max_steps else 0.0)
        for key, value in (self.summary_extra() if self.summary_extra is not None else {}).items():
            self.stats.set(key, value)
        self.stats.write(step)

    # -- divergence --------------------------------------------------------------------------
    def non_finite_weights(self) -> list[str]:
        """The policy's parameters and statistics (the normalizer's) that hold NaN or infinity."""
        policy = self.algorithm.policy
        return [name for name, tensor in (*policy.named_parameters(), *policy.named_buffers())
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]

    def diverged(self) -> bool:
        """Whether training went beyond repair: weights or a loss that are no longer finite (then
        nothing more of it is saved)."""
        return bool(self.non_finite_losses or self.non_finite_weights())

    def refuse_diverged(self) -> None:
        """A DivergedError if the policy's weights, or the losses of its last update, are no
        longer finite."""
        broken = self.non_finite_weights()
        if broken:
            what = "the policy's weights became NaN or infinite"
        elif self.non_finite_losses:
            broken, what = self.non_finite_losses, "its losses became NaN or infinite"
        else:
            return
        names = ", ".join(broken[:4]) + (" ..." if len(broken) > 4 else "")
        # (the cloning trainers read neither normalize nor rewards: a lower learning rate is what is left)
        rewards = self.settings.trainer in READ_BY["reward_signals"]
        advice = ", normalize: true" if rewards and not self.settings.normalize else ""
        raise DivergedError(
            f"behavior {self.name!r}: training diverged by step {self.step}: {what} ({names}). Try a lower "
            f"learning_rate{advice}{', or smaller rewards' if rewards else ''}; {self._kept_files()}")

    def _kept_files(self) -> str:
        found = self.checkpoints.list()
        if not found:
            return "nothing was saved"
        return f"the last checkpoint saved, {found[-1][1]}, and {self.onnx_path} are kept (--resume goes on from it)"

    # -- persistence -------------------------------------------------------------------------
    def state(self, global_step: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "behavior": self.name,
            "observation_shapes": [list(s) for s in self.spec.observation_shapes],
            "continuous_size": self.spec.action_spec.continuous_size,
            "discrete_branches": list(self.spec.action_spec.discrete_branches),
            "network": network_record(self.settings, self.spec, [signal.name for signal in self.algorithm.signals]),
            "global_step": global_step,
            "next_summary": self._next_summary,
            "summary_so_far": self._summary_so_far(),
            "algorithm": self.algorithm.state_dict(),
        } | ({"self_play": self.self_play.state_dict()} if self.self_play is not None else {}) | (
            {"curriculum": self.lesson.state_dict(self.curriculum)} if self.lesson is not None else
            {"curriculum": self._kept_lesson} if self._kept_lesson is not None else {})

    def _summary_so_far(self) -> dict[str, Any]:
        """What the next summary holds so far: the stats reported since the last one, and the
        episodes that ended since (a self-play group's: every team's, and the ghosts' lengths). A
        resumed run starts from them, so its first summary covers its whole period."""
        episodes = EpisodeStats()
        episodes.merge(self._resumed_episodes)
        episodes.merge(self.collector.stats)
        unread = self._returns_carried + self.collector.stats.returns[self._returns_seen:]  # (by a curriculum)
        if self.self_play is not None:
            for team in self.self_play.teams.values():
                if team is not self:
                    episodes.merge(team.collector.stats)
                    unread += team._returns_carried + team.collector.stats.returns[team._returns_seen:]
            episodes.merge(self.self_play.unsummarized())
        return {"values": {key: list(values) for key, values in self.stats.values.items()},
                "summed": sorted(self.stats.summed),
                "episodes": {"returns": list(episodes.returns), "lengths": list(episodes.lengths),
                             "entropy_sum": episodes.entropy_sum, "entropy_count": episodes.entropy_count},
                "unread_returns": list(unread)}

    def _resume_summary(self, saved: Any, path: Path) -> None:
        """Start the next summary from a checkpoint's :meth:`_summary_so_far` (none in checkpoints
        before it was saved; one that does not read is passed over with a warning: it is no reason
        to stop a run)."""
        if saved is None:
            return
        def count(n: Any) -> int:
            if not 0 <= int(n) < 2 ** 53:  # (an episode's length, a number of decisions: a float holds it)
                raise ValueError(n)
            return int(n)

        try:
            values = {str(key): [float(v) for v in vals] for key, vals in saved["values"].items()}
            summed = {str(key) for key in saved["summed"]}
            kept = saved["episodes"]
            episodes = EpisodeStats([float(r) for r in kept["returns"]], [count(n) for n in kept["lengths"]],
                                    float(kept["entropy_sum"]), count(kept["entropy_count"]))
            unread = [float(r) for r in saved.get("unread_returns", [])]
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            logger.warning("%s: checkpoint %s holds stats since its last summary that do not read; the next summary "
                           "starts from the resume", self.name, path)
            return
        for key, vals in values.items():
            self.stats.add(key, vals)
        self.stats.summed |= summed
        # kept apart from the collector's: a self-play team playing the ghost hands those on as lengths only
        self._resumed_episodes = episodes
        if self.lesson is not None:  # the returns its curriculum had not read yet at the save
            self._returns_carried = unread

    @property
    def keeps_replay_buffer(self) -> bool:
        return capabilities(self.settings).replay_buffer and self.settings.save_replay_buffer

    @property
    def replay_path(self) -> Path:
        return self.checkpoints.folder / "replay_buffer.pt"

    def save(self, global_step: int) -> None:
        """Save a checkpoint, the replay buffer (if asked) and the ONNX model; a file that cannot
        be written is a SaveError naming it and the last complete checkpoint. Weights that are no
        longer finite are not saved: the checkpoint and model on disk stay the last good ones."""
        if self.diverged():
            raise SaveError(f"behavior {self.name!r} was not saved: its policy's weights or losses are NaN or "
                            f"infinite (training diverged); {self._kept_files()}")
        with timed("save_model"):
            path = self.checkpoints.save(self.state(global_step), self.step)
            # the model to ship before the replay buffer, the largest file and the one most
            # likely to fail (memory); each failure is told, and the other file still tried
            problems = []
            try:
                self.export()
            except SAVE_FAILURES as e:
                problems.append(f"could not export the ONNX model {self.onnx_path}: {save_reason(e)}")
            if self.keeps_replay_buffer:
                # one file, replaced at each checkpoint (a copy per checkpoint would multiply
                # the largest file of the run by --keep-checkpoints)
                try:
                    CheckpointManager.save_file(self.replay_path, {"format": REPLAY_FORMAT, "step": self.step,
                                                                   **self.algorithm.replay_state()})
                except SAVE_FAILURES as e:
                    problems.append(f"could not save the replay buffer {self.replay_path}: {save_reason(e)} (the "
                                    "replay buffer on disk is older)")
            if problems:
                raise SaveError(f"{'; '.join(problems)}; the last complete checkpoint is {path}")
        logger.info("Saved checkpoint %s", path)

    @property
    def onnx_path(self) -> Path:
        return self.model_dir / f"{self.output_name}.onnx"

    def export(self) -> Path:
        export_policy(self.algorithm.policy, self.onnx_path)
        return self.onnx_path

    def restore_newest(self, checkpoints: CheckpointManager, weights_only: bool, set_aside: bool,
                       advice: str) -> tuple[Path, int]:
        """Restore from the newest intact checkpoint in ``checkpoints.folder``, skipping damaged
        ones with a warning; return the checkpoint used and its global step (see restore).
        ``set_aside``: rename the damaged ones to ``<name>.damaged``, so that they are not tried
        again and the run's next checkpoints do not rank below them. ``advice`` ends the error
        raised when no intact checkpoint remains. A checkpoint that is intact but does not fit
        this behavior is an error at once: the older ones come from the same settings."""
        found = checkpoints.list()
        if not found:
            raise CheckpointError(f"no checkpoint for behavior {self.name!r} in {checkpoints.folder}; {advice}")
        damaged: list[tuple[Path, CheckpointError]] = []
        for _, path in reversed(found):
            try:
                step = self.restore(path, weights_only, advice)
            except DamagedCheckpointError as e:
                damaged.append((path, e))
                continue
            for bad, error in damaged:
                aside = ""
                if set_aside:
                    try:
                        bad.rename(bad.with_name(bad.name + ".damaged"))
                        aside = f" (renamed to {bad.name}.damaged)"
                    except OSError as rename_error:
                        aside = f" (could not rename it: {os_reason(rename_error)})"
                logger.warning("%s: %s%s; using %s, the newest intact checkpoint", self.name, error, aside, path)
            return path, step
        reasons = "; ".join(str(e) for _, e in damaged)
        raise CheckpointError(f"no intact checkpoint of behavior {self.name!r} remains in {checkpoints.folder}: "
                              f"{reasons}; {advice}")

    def restore(self, path: Path, weights_only: bool, advice: str = "train anew (--force, or another --run-id)") -> int:
        """Load a checkpoint; return its global step (0 with weights_only). Everything in it is
        checked before anything is loaded, so a checkpoint that does not fit (a CheckpointError;
        a DamagedCheckpointError if the file is not an intact checkpoint) changes nothing. A saved
        replay buffer is read after, and one that does not fit stops the run as well. ``advice``
        ends the message where this Palaestra cannot load it at all (another version wrote it)."""
        state = CheckpointManager.load(path)
        if state.get("format", CHECKPOINT_FORMAT) > CHECKPOINT_FORMAT:
            raise CheckpointError(f"checkpoint {path} has format {state['format']}, this Palaestra reads format "
                                  f"{CHECKPOINT_FORMAT}: a newer Palaestra wrote it")
        shapes = [list(s) for s in self.spec.observation_shapes]
        if (state.get("observation_shapes") != shapes
                or state.get("continuous_size") != self.spec.action_spec.continuous_size
                or state.get("discrete_branches") != list(self.spec.action_spec.discrete_branches)):
            # in the same words as the environment's (types were checked with the file's structure)
            size, branches = state.get("continuous_size"), state.get("discrete_branches")
            saved = (ActionSpec(size, tuple(branches)).describe() if size is not None and branches is not None
                     else f"continuous={size} discrete={branches}")
            raise CheckpointError(
                f"checkpoint {path} was trained for observations {state.get('observation_shapes')} and "
                f"actions {saved}, but behavior {self.name!r} has observations {shapes} and actions "
                f"{self.spec.action_spec.describe()} (where an environment argument such as an image size "
                "changed, give the --env-args the run was trained with)"
            )
        # settings that change what the weights compute without changing their shapes
        # (activation, where the LSTM sits) would load silently: checkpoints record them
        saved_network = state.get("network", {})
        network = network_record(self.settings, self.spec, [signal.name for signal in self.algorithm.signals])
        # (trainer only explains a mismatch below; normalize is moot between networks without a
        # normalizer: checkpoints of offline_bc and online_bc before it was recorded as False said the config's)
        trained_by = saved_network.get("trainer")
        moot = {"trainer"} | ({"normalize"} if self.settings.trainer not in READ_BY["normalize"]
                              and (trained_by is None or trained_by not in READ_BY["normalize"]) else set())
        # (--inference and --initialize-from leave out signals' models that do not fit: below)
        differ = [key for key in network if key not in moot and key in saved_network
                  and saved_network[key] != network[key] and not (weights_only and "." in key)]
        # where another trainer made it, both are named too: often the cause, not always (a
        # behavioral-cloning run's weights may start a PPO run)
        other_trainer = trained_by not in (None, network.get("trainer"))
        if other_trainer and _network_family(trained_by) != _network_family(self.settings.trainer):
            # SAC's networks and PPO's (which the cloning trainers share) never fit each other: that
            # is the cause, whatever other setting differs
            raise CheckpointError(
                f"checkpoint {path} was trained with trainer: {trained_by}, but behavior {self.name!r} is set to "
                f"trainer: {self.settings.trainer}, whose networks it does not fit (set trainer back, or train "
                "anew)")

        def written(values: dict[str, Any], keys: list[str] = differ, trainer: bool = other_trainer) -> str:
            return ", ".join(f"{k}: {_as_written(values[k])}" for k in keys) + (  # as a config spells them (true)
                f" (trainer: {values['trainer']})" if trainer else "")

        unread = [key for key in differ if key in READ_BY and self.settings.trainer not in READ_BY[key]]
        if unread:  # "set them back" cannot be done: this trainer does not read them
            raise CheckpointError(
                f"checkpoint {path} was trained with {written(saved_network, unread)}, which shape its network; "
                f"trainer {self.settings.trainer} does not read {' or '.join(unread)} (its network is built with "
                f"{written(network, unread, False)}), so behavior {self.name!r} cannot start from that checkpoint: "
                f"start it from a run trained with {written(network, unread, False)}, or train anew")
        if differ:

            raise CheckpointError(
                f"checkpoint {path} was trained with {written(saved_network)}, but behavior {self.name!r} is set to "
                f"{written(network)}" +
                "; a checkpoint loads only into the network it was trained with (set them back, or train anew)")
        optimizer_shapes = [p.shape for group in self.algorithm.optimizer.param_groups for p in group["params"]]
        saved, reference = state["algorithm"], self.algorithm.state_dict()
        # the whole network record as this behavior's: a layout that differs all the same is another
        # Palaestra version's (networks changed during development without a new checkpoint format)
        same_record = bool(saved_network) and all(saved_network.get(k) == v for k, v in network.items()
                                                  if k not in moot and "." not in k)
        signals_recorded = same_record and all(saved_network.get(k) == v for k, v in network.items() if "." in k)
        signals_left = None
        if weights_only and "signals" in reference:
            # the reward signals' models do not act: --inference and --initialize-from take the
            # policy from a checkpoint whose signals' models no longer fit, and they start afresh
            try:
                check_algorithm_state(path, {k: v for k, v in saved.items() if k == "signals"},
                                      {"signals": reference["signals"]}, [])
            except LayoutMismatch as e:
                signals_left = e.fact
                saved = {k: v for k, v in saved.items() if k != "signals"}
                reference = {k: v for k, v in reference.items() if k != "signals"}
        try:
            check_algorithm_state(path, saved, reference, optimizer_shapes, optimizer_loads=not weights_only)
        except DamagedCheckpointError:
            raise
        except CheckpointError as e:
            trained = saved_network.get("trainer")
            if trained is not None and trained != self.settings.trainer:
                raise CheckpointError(
                    f"checkpoint {path} was trained with trainer: {trained}, but behavior {self.name!r} is set to "
                    f"trainer: {self.settings.trainer}, whose networks it does not fit (set trainer back, or train "
                    "anew)") from None
            if not isinstance(e, LayoutMismatch):
                raise
            if not saved_network:  # written before checkpoints recorded their settings
                raise CheckpointError(
                    f"{e.fact}: it records no network settings, so an early version of Palaestra wrote it; either it "
                    f"was trained with other settings ({NETWORK_SETTINGS}), or that version's networks were laid out "
                    f"otherwise and this one cannot load it: {advice}") from None
            signals = e.part == "signals"
            if same_record and (signals_recorded or not signals):
                raise CheckpointError(
                    f"{e.fact}, although it records the network settings behavior {self.name!r} has: another version "
                    f"of Palaestra, whose networks are laid out otherwise, wrote it, and this one cannot load it: "
                    f"{advice}" + ("; --inference and --initialize-from still take its policy" if signals else "")
                ) from None
            if same_record:  # (a checkpoint that did not record the signals' own settings yet)
                raise CheckpointError(
                    f"{e.fact}, although it records the network settings behavior {self.name!r} has: either the "
                    "signals' own settings changed (curiosity's or RND's encoding_size; GAIL's hidden_units, "
                    "use_actions, use_vail or, with images, encoding_size): set them back; or another version of "
                    f"Palaestra, whose networks are laid out otherwise, wrote it: {advice}; --inference and "
                    "--initialize-from still take its policy") from None
            raise
        try:
            self.algorithm.load_state_dict(saved, weights_only=weights_only)
        except Exception as e:  # the checks above should have caught it: say what torch said
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"checkpoint {path} does not fit behavior {self.name!r}'s network "
                f"({NETWORK_SETTINGS} differ?): {text}"
            ) from None
        self.loaded_from = path
        if signals_left is not None:
            logger.warning("%s: %s; its policy is loaded, and the reward signals' models start afresh", self.name,
                           signals_left)
        if weights_only:
            return 0
        # the next multiple of this run's summary_freq past the step reached, as ML-Agents derives
        # it (the saved one counts in the summary_freq the checkpoint ran with, which may differ),
        # unless the saved one is still owed (the run stopped after crossing it, before writing it)
        owed = int(state.get("next_summary", self.step + 1))
        freq = self.settings.summary_freq
        self._next_summary = owed if owed <= self.step else (self.step // freq + 1) * freq
        self._resume_summary(state.get("summary_so_far"), path)
        self.saved_self_play = state.get("self_play") if isinstance(state.get("self_play"), dict) else None
        saved_lesson = state.get("curriculum")
        if self.lesson is not None and self.curriculum is not None and isinstance(saved_lesson, dict):
            self.lesson.load_state_dict(saved_lesson, self.curriculum)
            logger.info("%s: resumed at lesson %d of its curriculum", self.name, self.lesson.lesson)
        elif self.lesson is None and isinstance(saved_lesson, dict):
            # resumed without --curriculum: the environment runs with its own defaults, and the
            # lesson reached is kept in the next checkpoints for a later --resume --curriculum
            self._kept_lesson = saved_lesson
            logger.warning("%s: the checkpoint is at lesson %s of a curriculum, but this run has no curriculum for "
                           "the behavior: the environment runs with its default parameters. Give --curriculum "
                           "again to go on from that lesson (it is kept in the next checkpoints)", self.name,
                           saved_lesson.get("lesson", "?"))
        if self.keeps_replay_buffer:
            self._restore_replay()
        return int(state.get("global_step", 0))

    def _restore_replay(self) -> None:
        if not self.replay_path.exists():
            logger.warning("%s: save_replay_buffer is on but %s does not exist; the replay buffer starts empty",
                           self.name, self.replay_path)
            return
        try:
            replay = CheckpointManager.load_file(
                self.replay_path, "delete it to resume with an empty replay buffer, or start over with --force")
        except DamagedCheckpointError as e:  # not the checkpoint's fault: no older checkpoint helps
            raise CheckpointError(str(e)) from None
        if not isinstance(replay, dict):
            raise CheckpointError(f"{self.replay_path} is not a replay buffer")
        found = replay.get("format", REPLAY_FORMAT)
        if not isinstance(found, int) or isinstance(found, bool) or found < 1:
            raise CheckpointError(f"{self.replay_path} is not a replay buffer (its format is {found!r}); delete it "
                                  "to resume with an empty replay buffer")
        if found > REPLAY_FORMAT:
            raise CheckpointError(f"{self.replay_path} has replay format {found!r}, this Palaestra reads up to "
                                  f"{REPLAY_FORMAT}: a newer Palaestra wrote it; upgrade Palaestra, or delete the "
                                  "file to resume with an empty replay buffer")
        if int(replay.get("step", -1)) != self.step:
            logger.warning("%s: %s was saved at step %s, the checkpoint at step %d; using it anyway",
                           self.name, self.replay_path, replay.get("step"), self.step)
        try:
            restored = self.algorithm.load_replay_state(replay)
        except CheckpointError as e:  # it fits the behavior, not these settings
            raise CheckpointError(f"{self.replay_path} does not fit behavior {self.name!r}'s settings: {e}; set them "
                                  "back, or delete the file to resume with an empty replay buffer") from None
        except MemoryError as e:  # the file may be sound: the memory is what ran out
            raise CheckpointError(f"{self.replay_path} does not fit in memory ({str(e)[:200]}); lower buffer_size, or "
                                  "delete the file to resume with an empty replay buffer") from None
        except Exception as e:  # its columns come from the file: any kind of mismatch
            raise CheckpointError(f"{self.replay_path} is not a replay buffer of behavior {self.name!r}: "
                                  f"{type(e).__name__}: {str(e)[:200]}") from None
        logger.info("%s: restored %d transitions from %s", self.name, restored, self.replay_path)
