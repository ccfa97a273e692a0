"""Self-play: ML-Agents' ghost trainer, for behaviors whose section has ``self_play``.

Teams come from behavior names, ``Name?team=T`` (a name without ``?team=`` is team 0). The teams
of one name share one policy (:class:`SelfPlayGroup`): one team at a time learns with it, and
the others play against a *ghost*, a frozen copy of that policy's weights from some time ago, so
that the learner faces opponents of its own strength and a moving target stays still long
enough to be beaten. Which team learns is the run's (:class:`SelfPlayController`, ML-Agents'
GhostController): every ``team_change`` steps the next team takes its turn, so that in an
asymmetric game (``Striker?team=0`` against ``Goalie?team=1``) each side learns against the
other's recent ghosts in turn.

A group, following ML-Agents 0.16 (reference §2.6; each "after" is strictly after, as there):

- the learner's experience trains the policy as without self-play; the ghosts' experience is
  thrown away and only counted (*ghost steps*); ``Environment/Cumulative Reward`` and the
  policy's entropy are the learner's episodes', ``Environment/Episode Length`` every team's;
- after ``save_steps`` learner steps the policy's weights join the window of past snapshots (the
  last ``window`` of them, each with the ELO the learner had then; the first at the start);
- after ``swap_steps`` ghost steps, and whenever the learning team changes, each ghost team takes
  a new opponent: the latest weights with probability ``play_against_latest_model_ratio``, else a
  snapshot drawn uniformly from the window;
- after ``team_change`` learner steps the next team learns; every environment then resets and
  the episodes under way end (none mixes the two teams' turns);
- the learner's ELO (``Self-play/ELO``) moves after each of its episodes: a win when the
  episode's last reward is positive, a loss when negative, a draw when zero (an episode cut by a
  step limit too), by ``result - expected`` (no K factor, as ML-Agents), and the opponent's by as
  much the other way. Against the latest weights of its own group the two are one player, and
  the ELO stays where it is (as in ML-Agents).

Better than ML-Agents: the window, the ELOs, the learning team and the counters are saved in the
checkpoints, so ``--resume`` goes on against the same opponents at the same ratings (ML-Agents
restarted the ELO at ``initial_elo`` and the window empty).
"""

from __future__ import annotations

import json
import logging
import re
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch

from palaestra.networks.acting import make_actor
from palaestra.networks.accelerator import policy_arrays, weight_layout
from palaestra.networks.numpy_network import weight_size, weight_views
from palaestra.rollout.segments import EpisodeStats, Segments
from palaestra.settings import ConfigError, SelfPlaySettings, TrainerSettings

if TYPE_CHECKING:
    from palaestra.trainer import BehaviorTrainer

logger = logging.getLogger("palaestra")

LATEST = -1  # the ghost plays the latest weights, not a snapshot of the window


def team_of(behavior: str) -> tuple[str, int]:
    """``Striker?team=1`` → (``Striker``, 1); a name without a team is team 0 (ML-Agents)."""
    base, _, query = behavior.partition("?")
    key, _, value = query.partition("=")
    if key == "team" and re.fullmatch(r"-?[0-9]+", value):  # (not isdigit: it takes "²", which int refuses)
        return base, int(value)
    return base, 0


def elo_expected(rating: float, opponent: float) -> float:
    """The chance of winning that the ratings predict."""
    return 1.0 / (1.0 + 10.0 ** ((opponent - rating) / 400.0))


def episode_results(segments: Segments) -> np.ndarray:
    """Each finished episode's result for the ELO, from its last reward (an episode cut by a step
    limit too, as in ML-Agents 0.16): 1 (won, > 0), 0 (lost, < 0) or 0.5 (a draw, 0)."""
    ended = np.flatnonzero(segments.episode_end)
    last = segments.env_reward[ended, segments.length[ended] - 1]
    return np.where(last > 0, 1.0, np.where(last < 0, 0.0, 0.5))


class SelfPlayController:
    """The run's learning team: the first team seen learns first; ``request_change`` and ``apply_change`` hand
    the turn to the next, in the order the teams were seen (ML-Agents' GhostController)."""

    def __init__(self) -> None:
        self.learning_team: int | None = None
        self._waiting: deque[int] = deque()
        self.groups: list[SelfPlayGroup] = []
        self._reset_due = False
        self._next: int | None = None  # the team whose turn comes once the episodes under way end
        # the acting workers already act the next turn's rounds (played_ahead) before it applies
        self._scheduled = False

    def subscribe(self, team: int) -> None:
        if team == self.learning_team or team in self._waiting:
            return
        if self.learning_team is None:
            self.learning_team = team
        else:
            self._waiting.append(team)

    def request_change(self) -> bool:
        """The next team's turn comes (apply_change, once the run has ended the episodes under way
        as the current turn's); one whose policy has reached max_steps waits (its turn would teach
        nothing), and with no other team left the turn stays. Whether a change was requested now."""
        if not self._waiting or self.learning_team is None or self._next is not None:
            return False
        for _ in range(len(self._waiting)):
            team = self._waiting.popleft()
            if not self._finished(team):
                self._waiting.append(self.learning_team)
                self._next = team
                self._reset_due = True
                return True
            self._waiting.append(team)
        return False

    def apply_change(self) -> None:
        """The requested team learns from now on: every environment has just ended its episodes
        (their last steps counted for the turn they were played in) and resets next; every group's
        ghosts take new opponents."""
        if self._next is None:
            return
        previous, self.learning_team, self._next = self.learning_team, self._next, None
        self._scheduled = False
        logger.info("self-play: team %d learns now", self.learning_team)
        for group in self.groups:
            group.turn_changed(previous)

    def play_ahead(self) -> None:
        """The acting workers play the requested turn from the rounds published from now on, while
        the rounds under way, played in the turn before, are still to be recorded (apply_change
        then, when the first of the new turn's rounds is taken). The new turn's opponents are drawn
        now, for the rounds published, and rated from apply_change on."""
        self._scheduled = self._next is not None
        if self._scheduled:
            for group in self.groups:
                group.draw_next_opponent()

    @property
    def turn_requested(self) -> bool:
        """Whether a change of turn waits to apply (request_change)."""
        return self._next is not None

    @property
    def turn_played_ahead(self) -> bool:
        """Whether the acting workers play the next turn's rounds already (play_ahead) while it
        waits to apply."""
        return self._scheduled

    @property
    def acting_team(self) -> int | None:
        """The learning team of the rounds the acting workers are given weights for now."""
        return self._next if self._scheduled else self.learning_team

    def _finished(self, team: int) -> bool:
        groups = [g for g in self.groups if team in g.teams]
        return bool(groups) and all(not g.owner.should_continue() for g in groups)

    def reset_due(self) -> bool:
        """Whether the learning team changed since the last call: every environment resets."""
        due, self._reset_due = self._reset_due, False
        return due

    def opponent(self) -> "SelfPlayGroup | None":
        """The group whose ghost the learner plays: one of a team that does not learn (the last,
        as in ML-Agents)."""
        found = None
        for group in self.groups:
            if any(team != self.learning_team for team in group.teams):
                found = group
        return found

    def state_dict(self) -> dict[str, Any]:
        # (a change requested and not yet applied is saved as applied: the resumed run starts with a reset)
        return {"learning_team": self.learning_team if self._next is None else self._next,
                "waiting": list(self._waiting)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        teams = {self.learning_team, *self._waiting}
        saved = [state.get("learning_team"), *state.get("waiting", [])]
        if set(saved) == teams:  # the same teams as the checkpoint's run: its turn goes on
            self.learning_team, self._waiting = saved[0], deque(saved[1:])


@dataclass
class _Ghost:
    """A team's opponent: the policy's network over a buffer of weights of its own."""

    weights: np.ndarray
    actor: Any


@dataclass
class SelfPlayGroup:
    """The teams of one behavior name, one policy: the owner's trainer learns and saves it; every
    team's trainer acts with it while its team learns, and with its ghost otherwise."""

    base: str
    settings: SelfPlaySettings
    controller: SelfPlayController
    owner: "BehaviorTrainer"
    rng: np.random.Generator
    teams: dict[int, "BehaviorTrainer"] = field(default_factory=dict)
    ghosts: dict[int, _Ghost] = field(default_factory=dict)
    snapshots: deque = field(default_factory=deque)  # (weights, elo), the window
    elo: float = 0.0
    opponent: int = LATEST  # the window's index the ghosts play, or LATEST
    ghost_steps: int = 0
    last_save: int = 0  # learner steps at the last snapshot
    last_swap: int = 0  # ghost steps at the last swap
    last_team_change: int = 0  # learner steps at the last change of learning team

    def __post_init__(self) -> None:
        self.elo = float(self.settings.initial_elo)
        self._ghost_lengths: list[int] = []
        self._next_opponent: int | None = None  # the next turn's, drawn ahead for the acting workers
        self._learner_episodes = EpisodeStats()  # the episodes teams played as the learner before their turn ended
        self.snapshots = deque(maxlen=self.settings.window)
        self._layout = weight_layout(self.owner.algorithm.policy)
        self.snapshots.append((self._latest(), self.elo))  # the first opponent: the starting weights
        self.opponent = 0
        self.controller.groups.append(self)

    # -- membership --------------------------------------------------------------------------
    def join(self, trainer: "BehaviorTrainer", team: int) -> None:
        """A team's trainer: it learns into the owner's algorithm and acts against a ghost."""
        if team in self.teams:  # (a name without ?team= is team 0; team=01 is team 1)
            raise ConfigError(f"self-play: behaviors {self.teams[team].name!r} and {trainer.name!r} are both team "
                              f"{team} of {self.base!r}; give each team of {self.base!r} a number of its own "
                              f"({self.base}?team=0, {self.base}?team=1, ...)")
        if trainer is not self.owner and trainer.spec != self.owner.spec:
            def spec(t: "BehaviorTrainer") -> str:
                return (f"observations {[tuple(s) for s in t.spec.observation_shapes]}, actions "
                        f"{t.spec.action_spec.describe()}")
            raise ConfigError(f"self-play: behaviors {self.owner.name!r} ({spec(self.owner)}) and {trainer.name!r} "
                              f"({spec(trainer)}) are teams of {self.base!r}, which play one policy, but they observe "
                              "or act differently; give the teams the same observations and actions, or different "
                              "behavior names")
        self.teams[team] = trainer
        if trainer is not self.owner:
            trainer.algorithm = self.owner.algorithm
            trainer.stats = self.owner.stats
            if trainer.settings != self.owner.settings:  # played and trained with the owner's (warned about)
                trainer.settings = self.owner.settings
                trainer.collector = trainer.new_collector()  # its horizon, the policy's signals and memory
        weights = np.empty(weight_size(self._layout), np.float32)
        # (in the trainer's process: a module of its own per team, the process's torch settings kept)
        self.ghosts[team] = _Ghost(weights, make_actor(self._layout, weights, self.rng, in_worker=False))
        self._load(team, self._latest())
        self.controller.subscribe(team)

    def learns(self, team: int) -> bool:
        return self.controller.learning_team == team

    def acts_as_learner(self, team: int) -> bool:
        """Whether ``team`` learns in the rounds published to the acting workers now."""
        return self.controller.acting_team == team

    def actor(self, team: int) -> Any:
        """What acts for ``team`` now: the policy itself while the team learns (or nothing trains:
        --inference plays the trained policy on every side), its ghost otherwise."""
        if self.learns(team) or not self.owner.training:
            return self.owner.algorithm
        return self.ghosts[team].actor

    # -- experience --------------------------------------------------------------------------
    def ghost_played(self, segments: Segments) -> None:
        self.ghost_steps += int(segments.length.sum())

    def ghost_episodes(self, episodes: EpisodeStats) -> None:
        self._ghost_lengths.extend(episodes.lengths)

    def take_ghost_lengths(self) -> list[int]:
        lengths, self._ghost_lengths = self._ghost_lengths, []
        return lengths

    def unsummarized(self) -> EpisodeStats:
        """A copy of what the next summary takes from the group besides the teams' collectors:
        the learners' episodes of turns that ended, and the ghosts' episode lengths."""
        episodes = EpisodeStats()
        episodes.merge(self._learner_episodes)
        episodes.lengths.extend(self._ghost_lengths)
        return episodes

    def take_learner_episodes(self) -> EpisodeStats:
        episodes, self._learner_episodes = self._learner_episodes, EpisodeStats()
        return episodes

    def learner_played(self, segments: Segments) -> None:
        """The learner's episodes that ended: its ELO and the opponent's move."""
        for result in episode_results(segments):
            opponent = self.controller.opponent()
            if opponent is None:  # no other team: no one to be rated against
                return
            change = float(result) - elo_expected(self.elo, opponent.opponent_elo())
            opponent.change_opponent_elo(-change)
            self.elo += change
            self.owner.stats.add("Self-play/ELO", self.elo)

    def opponent_elo(self) -> float:
        return self.elo if self.opponent == LATEST else self.snapshots[self.opponent][1]

    def change_opponent_elo(self, change: float) -> None:
        if self.opponent == LATEST:
            self.elo += change
        else:
            weights, elo = self.snapshots[self.opponent]
            self.snapshots[self.opponent] = (weights, elo + change)

    # -- after each step ---------------------------------------------------------------------
    def advance(self) -> None:
        """After the owner's update: learning-team changes, snapshots and opponent swaps when due,
        in ML-Agents' order."""
        s = self.settings
        step = self.owner.algorithm.step
        learns = self.controller.learning_team in self.teams
        # (a policy that reached max_steps hands the turn on at once: the other teams still learn)
        if learns and (step - self.last_team_change > s.team_change or not self.owner.should_continue()):
            # the run applies it at the reset it brings (turn_changed); a turn that stays (no other
            # team left to learn) is no change, and its start stays where it was
            if self.controller.request_change():
                self.last_team_change = step
        if step - self.last_save > s.save_steps:
            self._save_snapshot()
            self.last_save = step
        if self.ghost_steps - self.last_swap > s.swap_steps:
            self._swap()
            self.last_swap = self.ghost_steps

    def turn_changed(self, previous: int | None) -> None:
        """The learning team changed from ``previous``: the episodes a team finished in its turn as the
        learner stay the learner's (Cumulative Reward, entropy) and those it finished as a ghost the
        ghost's (lengths only), whichever role it has now; the ghosts take new opponents."""
        before = self.teams.get(previous) if previous is not None else None
        if before is not None:
            self._learner_episodes.merge(before.take_episodes())
        now = self.teams.get(self.controller.learning_team)
        if now is not None and now is not before:
            self._ghost_lengths.extend(now.take_episodes(learner=False).lengths)
        if self._next_opponent is not None:  # drawn when the workers began the new turn's rounds
            self.opponent, self._next_opponent = self._next_opponent, None
        else:
            self._swap()
        self.last_swap = self.ghost_steps

    def draw_next_opponent(self) -> None:
        """The acting workers' rounds from now on play the next turn: the ghosts take its opponent
        now, and the ratings charge it from the turn's change (turn_changed), when the rounds
        played against the one before are all recorded."""
        self._next_opponent = self._draw_for_ghosts(self.controller.acting_team)

    def _save_snapshot(self) -> None:
        """The latest weights join the window. A full window drops its oldest, and the snapshot the
        ghosts play keeps its rating by its new index; where it is the one dropped, its rating
        follows the new snapshot, which takes its place (ML-Agents' ring of snapshots overwrites
        the oldest slot, current_opponent pointing at it)."""
        if len(self.snapshots) == self.snapshots.maxlen:
            def moved(index: int) -> int:
                return index - 1 if index > 0 else len(self.snapshots) - 1

            if self.opponent != LATEST:
                self.opponent = moved(self.opponent)
            if self._next_opponent not in (None, LATEST):
                self._next_opponent = moved(self._next_opponent)
        self.snapshots.append((self._latest(), self.elo))

    def _latest(self) -> np.ndarray:
        arrays = policy_arrays(self.owner.algorithm.policy)
        return np.concatenate([arrays[name].ravel() for name, _ in self._layout.arrays]).astype(np.float32)

    def _swap(self) -> None:
        if self.controller.turn_played_ahead:  # the rounds published from now on are the next turn's
            self.draw_next_opponent()  # (those under way stay rated against the current opponent)
            return
        self.opponent = self._draw_for_ghosts(self.controller.learning_team)

    def _draw_for_ghosts(self, learner: int | None) -> int:
        """Each ghost team's own opponent, as ML-Agents' _swap_snapshots draws one per team (the
        team that learns, ``learner``, none); the one the ratings charge: the last drawn, as
        ML-Agents' current_opponent."""
        rated = self.opponent
        for team in self.teams:
            if team != learner:
                rated, weights = self._draw_opponent()
                self._load(team, weights)
        return rated

    def _draw_opponent(self) -> tuple[int, np.ndarray]:
        """A snapshot of the window (its index), or the latest weights (LATEST) with probability
        ``play_against_latest_model_ratio``."""
        if self.snapshots and self.rng.random() >= self.settings.play_against_latest_model_ratio:
            index = int(self.rng.integers(len(self.snapshots)))
            return index, self.snapshots[index][0]
        return LATEST, self._latest()

    def ghost_arrays(self, team: int) -> dict[str, np.ndarray]:
        """The team's ghost's weights, named as the policy's arrays (for the acting workers)."""
        return weight_views(self.ghosts[team].weights, self._layout)

    def _load(self, team: int, weights: np.ndarray) -> None:
        self.ghosts[team].weights[:] = weights  # in place: the actor's arrays are views of it

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Weights as tensors (checkpoints are read with torch's weights-only loader)."""
        # (a change of turn the workers play already is saved as applied, as the controller saves it)
        opponent = self.opponent if self._next_opponent is None else self._next_opponent
        return {"elo": float(self.elo), "opponent": int(opponent), "ghost_steps": int(self.ghost_steps),
                "last_save": int(self.last_save), "last_swap": int(self.last_swap),
                "last_team_change": int(self.last_team_change),
                "snapshots": [[torch.from_numpy(w.copy()), float(e)] for w, e in self.snapshots],
                "ghosts": {team: torch.from_numpy(g.weights.copy()) for team, g in self.ghosts.items()},
                "controller": self.controller.state_dict(),
                # a change of turn saved as applied owes the swap it brings (a checkpoint between the
                # request and the reset; under acting workers the next opponent was drawn already)
                "swap_owed": self.controller.turn_requested and self._next_opponent is None,
                # the opponents' draws go on where they were (as text: the loader takes no 128-bit ints)
                "rng": json.dumps(self.rng.bit_generator.state)}

    def load_state_dict(self, state: dict[str, Any], turn: bool = True) -> None:
        """``turn``: the learning team saved goes on too (not for a group formed during the run:
        another team's turn is under way, and changes only with a reset)."""
        size = weight_size(self._layout)
        snapshots = [(flat, float(e)) for flat, e in ((_flat(w), e) for w, e in state.get("snapshots", []))
                     if flat.size == size]  # (weights of another network are left out)
        dropped = max(len(snapshots) - self.settings.window, 0)  # (a smaller window keeps the newest)
        self.snapshots = deque(snapshots[dropped:], maxlen=self.settings.window)
        self.elo = float(state.get("elo", self.elo))
        opponent = int(state.get("opponent", LATEST))
        # the saved index in the snapshots kept (the oldest kept where the ghosts' own was dropped)
        self.opponent = max(opponent - dropped, 0) if 0 <= opponent < len(snapshots) else LATEST
        for key in ("ghost_steps", "last_save", "last_swap", "last_team_change"):
            setattr(self, key, int(state.get(key, 0)))
        if "rng" in state:  # (in place: the ghosts' actors draw from this generator too)
            try:
                self.rng.bit_generator.state = json.loads(state["rng"])
            except (TypeError, ValueError, KeyError):
                logger.warning("self-play: the checkpoint's random state of %s does not fit; its draws start afresh",
                               self.base)
        for team, weights in state.get("ghosts", {}).items():
            if team in self.ghosts and _flat(weights).size == size:
                self._load(team, _flat(weights))
        if turn:  # (before the swap owed: its ghosts are the resumed turn's)
            self.controller.load_state_dict(state.get("controller", {}))
        if state.get("swap_owed"):
            self._swap()
            self.last_swap = self.ghost_steps


def _flat(weights: Any) -> np.ndarray:
    """Saved weights (a tensor) as one float32 array."""
    return np.asarray(weights, np.float32).ravel()


# -- the run's groups ----------------------------------------------------------------------------
def self_play_names(settings: Mapping[str, TrainerSettings]) -> set[str]:
    """The behavior names (before ``?team=``) whose teams play as self-play groups."""
    return {team_of(b)[0] for b, s in settings.items() if s.self_play is not None}


def joins_a_group(behavior: str, behaviors: list[str], settings: Mapping[str, TrainerSettings]) -> bool:
    """Whether ``behavior`` is a self-play team that will share another team's policy (an earlier
    team of its name owns it): such a trainer restores nothing of its own."""
    if settings[behavior].self_play is None:
        return False
    base = team_of(behavior)[0]
    first = next(b for b in behaviors if settings[b].self_play is not None and team_of(b)[0] == base)
    return first != behavior


def mixed_teams(settings: Mapping[str, TrainerSettings]) -> list[str]:
    """The problems of teams of one name (``Name?team=T``) of which some have ``self_play`` and
    others not: the former share one policy under the name before ``?``, the latter would train
    policies of their own into the same files."""
    problems = []
    by_base: dict[str, list[str]] = {}
    for behavior in settings:
        by_base.setdefault(team_of(behavior)[0], []).append(behavior)
    for base, behaviors in by_base.items():
        playing = [b for b in behaviors if settings[b].self_play is not None]
        apart = [b for b in behaviors if settings[b].self_play is None]
        if playing and apart:
            problems.append(
                f"{' and '.join(map(repr, playing))} (self_play set in {settings[playing[0]].origin('self_play')}) and "
                f"{' and '.join(map(repr, apart))} (no self_play) are teams of {base!r}: with self_play the teams of "
                f"a name play one policy, saved as {base!r}, and a team without it would train its own into the same "
                f"files; give every team self_play (one section {base!r} for all does), or none")
    return problems


def shared_files(names: Mapping[str, str], settings: Mapping[str, TrainerSettings]) -> list[str] | None:
    """Behaviors that a run's recorded output names give one folder although they are not the
    teams of one self-play policy (a self-play run resumed without self_play): they would write
    their checkpoints, model and summaries over each other's."""
    by_name: dict[str, list[str]] = {}
    for behavior, name in names.items():
        if behavior in settings:
            by_name.setdefault(name.casefold(), []).append(behavior)
    for behaviors in by_name.values():
        if len(behaviors) > 1 and not (all(settings[b].self_play is not None for b in behaviors)
                                       and len({team_of(b)[0] for b in behaviors}) == 1):
            return behaviors
    return None


def learners(trainers: Mapping[str, "BehaviorTrainer"]) -> list["BehaviorTrainer"]:
    """The trainers that update, summarize and save a policy: every one but the self-play teams
    that share their owner's."""
    return [t for t in trainers.values() if t.owns_learning]


def join_self_play(trainers: Mapping[str, "BehaviorTrainer"], controller: SelfPlayController, seed: int,
                   running: bool = False) -> None:
    """Every behavior with a ``self_play`` section joins the group of its name (the first team of
    the name makes it and owns its policy); a new group takes the state its owner's checkpoint
    saved. Also for behaviors that appear later (``running``: their group keeps the run's turn)."""
    groups = {t.self_play.base: t.self_play for t in trainers.values() if t.self_play is not None}
    fresh: list[SelfPlayGroup] = []
    for name, trainer in trainers.items():
        if trainer.settings.self_play is None or trainer.self_play is not None:
            continue
        base, team = team_of(name)
        group = groups.get(base)
        if group is None:
            group = groups[base] = SelfPlayGroup(base, trainer.settings.self_play, controller, trainer,
                                                 np.random.default_rng([seed, len(groups)]))
            fresh.append(group)
        elif trainer.settings != group.owner.settings:
            logger.warning("self-play: behavior %r's settings differ from %r's; the teams of %r share one policy, "
                           "trained with %r's", name, group.owner.name, base, group.owner.name)
        group.join(trainer, team)
        trainer.self_play, trainer.team = group, team
    for group in fresh:
        if group.owner.saved_self_play is not None:
            group.load_state_dict(group.owner.saved_self_play, turn=not running)
        logger.info("self-play: %s, teams %s; team %s learns first", group.base, sorted(group.teams),
                    controller.learning_team)
    if fresh and not running and len({team for g in controller.groups for team in g.teams}) == 1:
        logger.warning("self-play: the environment has one team only (%s), so far: nothing plays against it, and "
                       "it trains as without self_play (teams are behaviors named Name?team=T)",
                       ", ".join(t.name for g in controller.groups for t in g.teams.values()))
