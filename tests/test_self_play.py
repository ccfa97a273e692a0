"""Self-play (palaestra/self_play.py): ML-Agents' ghost trainer.

ML-Agents' own self-play rows of its test matrix (reference §13.3, §13.4) on its two-team 1-D
environment (one 1-D world per team, envs/builtin/simple1d.py's ``make_teams``): with opponents
swapped in, the team that never learns still plays the learned policy and passes; without a swap
it keeps the first weights and does not. Then what a run writes, resumes and refuses."""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import pytest
import yaml

from palaestra.checkpoints import CheckpointManager
from palaestra.envs.builtin.simple1d import Simple1D, Simple1DContinuous
from palaestra.envs.combined import CombinedEnv
from palaestra.evaluation import evaluate_onnx
from palaestra.rollout.collector import Collector
from palaestra.self_play import SelfPlayController, elo_expected, team_of
from palaestra.networks.numpy_network import weight_size
from palaestra.stats import StatsReporter
from palaestra.trainer import BehaviorTrainer


from tests.conftest import write_yaml

TEAMS = "--env=palaestra.envs.builtin.simple1d:make_teams"

# ML-Agents' PPO test config (reference §13.2)
PPO_1D = """
  trainer: ppo
  batch_size: 16
  beta: 5.0e-3
  buffer_size: 64
  epsilon: 0.2
  hidden_units: 32
  lambd: 0.95
  learning_rate: 5.0e-3
  learning_rate_schedule: constant
  max_steps: {max_steps}
  memory_size: 16
  normalize: false
  num_epoch: 3
  num_layers: 1
  time_horizon: 64
  sequence_length: 64
  summary_freq: 500
  use_recurrent: false
  reward_signals:
    extrinsic: {{strength: 1.0, gamma: 0.99}}
  self_play:
{self_play}
"""


def config(workdir, names: tuple[str, ...], max_steps: int, **self_play) -> str:
    body = "\n".join(f"    {k}: {v}" for k, v in self_play.items())
    text = "".join(f"{name}:" + PPO_1D.format(max_steps=max_steps, self_play=body) for name in names)
    return str(write_yaml(workdir / "c.yaml", text))


@pytest.fixture
def returns_by_behavior(monkeypatch) -> dict[str, list[float]]:
    """Every finished episode's return per behavior, in order (ML-Agents' criterion per behavior:
    the mean of its last 5 episodes), whichever team's policy played it."""
    found: dict[str, list[float]] = collections.defaultdict(list)
    original = Collector._end_episodes

    def recording(self, terminal):
        before = len(self.stats.returns)
        out = original(self, terminal)
        found[self.behavior].extend(self.stats.returns[before:])
        return out

    monkeypatch.setattr(Collector, "_end_episodes", recording)
    return found


def score(returns: list[float]) -> float:
    return float(np.mean(returns[-5:])) if len(returns) >= 5 else float("nan")


# -- ML-Agents' test matrix ------------------------------------------------------------------------
@pytest.mark.training
@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("swap_steps,both_pass", [(2000, True), (4000, False)])
def test_symmetric_self_play_rows(run_cli, workdir, returns_by_behavior, continuous, swap_steps, both_pass):
    # team 0 learns for the whole run (team_change 100000); team 1 plays ghosts, the latest
    # weights at every swap (ratio 1.0). Without a swap within 2500 steps it keeps the first weights.
    path = config(workdir, ("1D",), 2500, play_against_latest_model_ratio=1.0, save_steps=2000,
                  swap_steps=swap_steps)
    result = run_cli(path, TEAMS, "--run-id=sp", "--seed=1", "--save-freq=99999",
                     *(["--env-args", "continuous=true"] if continuous else []))
    assert result.code == 0, result.log
    learner, ghost = score(returns_by_behavior["1D?team=0"]), score(returns_by_behavior["1D?team=1"])
    assert learner > 0.99
    assert (ghost > 0.99) == both_pass, (learner, ghost)


@pytest.mark.training
@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("variant,both_pass", [
    # reference §13.4: each side learns 400 steps in turn, against the other's latest weights
    (dict(play_against_latest_model_ratio=1.0, save_steps=10000, swap_steps=10000, team_change=400), True),
    # against the other's first snapshot only (ratio 0, no later one saved): when 1D's 2000 steps
    # are done 1DOpp learns its 2000, while 1D plays its first, untrained weights to the end
    (dict(play_against_latest_model_ratio=0.0, save_steps=5000, swap_steps=5000, team_change=2000), False),
])
def test_asymmetric_self_play_rows(run_cli, workdir, returns_by_behavior, continuous, variant, both_pass):
    max_steps = 4000 if both_pass else 2000
    path = config(workdir, ("1D", "1DOpp"), max_steps, **variant)
    result = run_cli(path, TEAMS, "--run-id=asym", "--seed=1", "--save-freq=99999", "--env-args",
                     "names=['1D?team=0', '1DOpp?team=1']", *(["continuous=true"] if continuous else []))
    assert result.code == 0, result.log
    # ML-Agents' later tests, where this row comes from, pass above 0.9
    scores = [score(returns_by_behavior[b]) for b in ("1D?team=0", "1DOpp?team=1")]
    if both_pass:
        assert min(scores) > 0.9, scores
        return
    # ML-Agents' check is one side above and one below. Below: 1D, whose team played its first
    # weights after its turn. Above: 1DOpp learned, judged by its exported model's deterministic
    # actions, since 2000 steps of ML-Agents' continuous config leave the sampled actions of about
    # one seed in twenty under 0.9 (docs/benchmarks.md; seed 6 here: 0.83)
    assert scores[0] < 0.9, scores
    env = (Simple1DContinuous if continuous else Simple1D)(seed=3, behavior_name="1DOpp?team=1")
    assert np.mean(evaluate_onnx(env, workdir / "models/asym/1DOpp.onnx", episodes=10)) > 0.9


# -- the pieces --------------------------------------------------------------------------------
def test_team_names():
    assert team_of("Striker?team=1") == ("Striker", 1)
    assert team_of("Striker") == ("Striker", 0)
    assert team_of("1D?team=0") == ("1D", 0)
    assert team_of("Odd?x=3") == ("Odd", 0)
    assert team_of("Odd?team=\u00b2") == ("Odd", 0)  # a digit to isdigit, not to int
    assert team_of("Neg?team=-1") == ("Neg", -1)


def test_a_won_episode_raises_the_learner_s_elo_and_lowers_its_opponent_s():
    # the result's sign: a flipped one went unseen (the ELO is only reported)
    from types import SimpleNamespace

    from palaestra.self_play import SelfPlayGroup

    opponent_changes = []
    opponent = SimpleNamespace(opponent_elo=lambda: 1200.0, change_opponent_elo=opponent_changes.append)
    stats = StatsReporter("t", [])
    group = SimpleNamespace(controller=SimpleNamespace(opponent=lambda: opponent), elo=1200.0,
                            owner=SimpleNamespace(stats=stats))
    won_then_lost = SimpleNamespace(episode_end=np.array([True]), length=np.array([3]),
                                    env_reward=np.array([[0.0, 0.0, 1.0]], np.float32))
    SelfPlayGroup.learner_played(group, won_then_lost)
    assert group.elo == pytest.approx(1200.5) and opponent_changes == [pytest.approx(-0.5)]  # 1 - 0.5 expected
    won_then_lost.env_reward[0, 2] = -1.0
    SelfPlayGroup.learner_played(group, won_then_lost)
    assert group.elo < 1200.5 and opponent_changes[1] > 0


def test_elo_expectation():
    assert elo_expected(1200, 1200) == pytest.approx(0.5)
    assert elo_expected(1600, 1200) == pytest.approx(1 / (1 + 10 ** -1))
    assert elo_expected(1200, 1600) + elo_expected(1600, 1200) == pytest.approx(1.0)


def test_learning_team_takes_turns_in_the_order_seen():
    controller = SelfPlayController()
    for team in (3, 1, 3, 7):
        controller.subscribe(team)
    turns = []
    for _ in range(4):
        turns.append(controller.learning_team)
        controller.request_change()
        controller.apply_change()
    assert turns == [3, 1, 7, 3]
    assert controller.reset_due() and not controller.reset_due()


# -- what a run writes -------------------------------------------------------------------------
def test_a_group_trains_one_policy_under_the_name_before_the_team(run_cli, workdir):
    path = config(workdir, ("1D",), 1000, save_steps=300, swap_steps=300)
    result = run_cli(path, TEAMS, "--run-id=sp", "--seed=1")
    assert result.code == 0, result.log
    assert sorted(p.name for p in (workdir / "models/sp").iterdir() if p.name != ".lock") == [
        "1D", "1D.onnx", "configuration.yaml"]
    assert sorted(p.name for p in (workdir / "summaries").glob("sp_*.csv")) == ["sp_1D.csv"]
    assert "sp_1D ELO: " in result.log
    assert "1D?team=1: observations [(1,)], actions discrete[2]; a self-play team of 1D?team=0" in result.log
    header = (workdir / "summaries/sp_1D.csv").read_text().splitlines()[0]
    assert "Self-play/ELO" in header
    state = CheckpointManager.load(next((workdir / "models/sp/1D").glob("checkpoint-*.pt")))
    play = state["self_play"]
    assert play["controller"]["learning_team"] == 0
    assert len(play["snapshots"]) == 4  # the first weights, then after 300, 600 and 900 steps
    assert play["elo"] != 1200.0


def newest_self_play(folder) -> dict:
    return CheckpointManager.load(CheckpointManager(folder, 0).list()[-1][1])["self_play"]


def test_resume_goes_on_at_the_saved_ratings_and_turn(run_cli, workdir, monkeypatch):
    from palaestra.self_play import SelfPlayGroup

    path = config(workdir, ("1D", "1DOpp"), 1000, team_change=300, save_steps=200, swap_steps=200)
    args = (TEAMS, "--run-id=r", "--seed=1", "--env-args", "names=['1D?team=0', '1DOpp?team=1']")
    assert run_cli(path, *args).code == 0
    saved = {b: newest_self_play(workdir / f"models/r/{b}") for b in ("1D", "1DOpp")}
    restored = {}  # each group's rating and the learning team once its checkpoint is loaded
    load = SelfPlayGroup.load_state_dict

    def loading(self, state, turn=True):
        load(self, state, turn)
        restored[self.base] = (self.elo, self.controller.learning_team)

    monkeypatch.setattr(SelfPlayGroup, "load_state_dict", loading)
    path = config(workdir, ("1D", "1DOpp"), 2000, team_change=300, save_steps=200, swap_steps=200)
    result = run_cli(path, "--resume", *args)
    assert result.code == 0, result.log
    assert {b: elo for b, (elo, _) in restored.items()} == {b: saved[b]["elo"] for b in ("1D", "1DOpp")}
    assert {turn for _, turn in restored.values()} == {saved["1D"]["controller"]["learning_team"]}
    resumed = {b: newest_self_play(workdir / f"models/r/{b}") for b in ("1D", "1DOpp")}
    for b in ("1D", "1DOpp"):
        # the window grew from the saved one (not restarted from one snapshot) and the ghost steps counted on
        assert len(resumed[b]["snapshots"]) > len(saved[b]["snapshots"]) or len(saved[b]["snapshots"]) == 10
        assert resumed[b]["ghost_steps"] > saved[b]["ghost_steps"]


def test_inference_plays_the_trained_policy_on_every_team(run_cli, workdir, returns_by_behavior):
    path = config(workdir, ("1D",), 2500, play_against_latest_model_ratio=1.0, save_steps=2000, swap_steps=4000)
    assert run_cli(path, TEAMS, "--run-id=i", "--seed=1").code == 0
    returns_by_behavior.clear()
    path = config(workdir, ("1D",), 300, swap_steps=4000)
    result = run_cli(path, TEAMS, "--run-id=i", "--seed=2", "--inference")
    assert result.code == 0, result.log
    for behavior in ("1D?team=0", "1D?team=1"):
        assert score(returns_by_behavior[behavior]) > 0.99, behavior


def test_teams_take_turns_where_the_workers_act(run_cli, workdir):
    # --num-envs: the acting workers play each team with the weights it acts with now (the
    # policy's, or its ghost's), and every worker's environments reset at each change of turn
    path = config(workdir, ("1D", "1DOpp"), 3000, play_against_latest_model_ratio=1.0, save_steps=10000,
                  swap_steps=10000, team_change=400)
    result = run_cli(path, TEAMS, "--run-id=w", "--seed=1", "--num-envs=2", "--acting=workers", "--env-args",
                     "names=['1D?team=0', '1DOpp?team=1']")
    assert result.code == 0, result.log
    assert "the policy acts in each of the 2 environment workers" in result.log
    assert result.log.count("self-play: team 1 learns now") >= 3
    for behavior, name in (("1D", "1D?team=0"), ("1DOpp", "1DOpp?team=1")):
        play = newest_self_play(workdir / f"models/w/{behavior}")
        assert play["ghost_steps"] > 1000  # its team played the other's turns as a ghost
        env = Simple1D(seed=3, behavior_name=name)
        assert np.mean(evaluate_onnx(env, workdir / f"models/w/{behavior}.onnx", episodes=10)) > 0.9


@pytest.mark.parametrize("threaded", [True, False])
def test_the_workers_rounds_count_for_the_turn_they_were_played_in(run_cli, workdir, monkeypatch, threaded):
    # the rounds under way at a change of turn (up to LAG + 1 of them) were acted with the roles
    # before it: the team that played its ghost in them is not trained on them, and the one that
    # learned keeps them (they were recorded with the new roles: ghost play trained, the learner's dropped)
    from palaestra.workers.acting import ActingWorkers
    published: dict[int, dict[str, bool]] = {}  # round → behavior → acted with its ghost's weights
    recorded: list[tuple[int, str, bool]] = []  # (round, behavior, recorded as the ghost's)
    taken = {"round": -1}
    write, take, record = ActingWorkers._write_weights, ActingWorkers.take_round, BehaviorTrainer.record_round

    def writing(self, q):
        write(self, q)
        published[q] = {}
        for behavior, source in self.sources.items():
            t = source.__self__
            ghost = t.self_play.ghosts[t.team].weights
            published[q][behavior] = any(np.shares_memory(a, ghost) for a in source().values())

    def taking(self):
        out = take(self)
        taken["round"] = self.taken
        return out

    def recording(self, segments, episodes):
        if segments is not None:
            recorded.append((taken["round"], self.name, self._plays_ghost))
        return record(self, segments, episodes)

    monkeypatch.setattr(ActingWorkers, "_write_weights", writing)
    monkeypatch.setattr(ActingWorkers, "take_round", taking)
    monkeypatch.setattr(BehaviorTrainer, "record_round", recording)
    path = config(workdir, ("1D", "1DOpp"), 1500, save_steps=100, swap_steps=100, team_change=200)
    if not threaded:
        text = (workdir / "c.yaml").read_text().replace("  trainer: ppo\n", "  trainer: ppo\n  threaded: false\n")
        (workdir / "c.yaml").write_text(text)
    result = run_cli(path, TEAMS, "--run-id=t", "--seed=1", "--num-envs=2", "--acting=workers", "--env-args",
                     "names=['1D?team=0', '1DOpp?team=1']")
    assert result.code == 0, result.log
    assert result.log.count("learns now") >= 4
    wrong = [(q, b) for q, b, ghost in recorded if published[q][b] != ghost]
    assert not wrong, f"{len(wrong)} of {len(recorded)} rounds recorded in the wrong role: {wrong[:10]}"


def test_self_play_under_an_imitation_trainer_is_refused(run_cli, workdir):
    path = write_yaml(workdir / "c.yaml", """
        1D:
          trainer: offline_bc
          demo_path: nowhere.demo
          self_play: {window: 3}
    """)
    result = run_cli(str(path), TEAMS, "--run-id=x")
    assert result.code != 0
    assert "self_play" in result.log and "ppo and sac" in result.log and "Traceback" not in result.log
    assert "ignores it" not in result.log and "WARNING" not in result.log  # (the error alone: no warning saying otherwise)


SAC_1D = """
  trainer: sac
  batch_size: 8
  buffer_size: 500
  buffer_init_steps: 100
  hidden_units: 16
  num_layers: 1
  max_steps: 600
  summary_freq: 300
  steps_per_update: 1
  self_play: {save_steps: 100, swap_steps: 100, team_change: 200}
"""


# ML-Agents' SAC test config (reference §13.2) with symmetric self-play: team 0 learns the whole run
SAC_SYMMETRIC = """
  trainer: sac
  batch_size: 8
  buffer_size: 500
  buffer_init_steps: 100
  hidden_units: 16
  init_entcoef: 0.01
  learning_rate: 5.0e-3
  max_steps: 1000
  normalize: false
  num_layers: 1
  time_horizon: 64
  summary_freq: 100
  tau: 0.01
  steps_per_update: 1
  reward_signals:
    extrinsic: {strength: 1.0, gamma: 0.99}
  self_play: {play_against_latest_model_ratio: 1.0, save_steps: 500, swap_steps: 500}
"""


@pytest.mark.training
@pytest.mark.parametrize("continuous", [False, True])
def test_sac_learns_under_self_play(run_cli, workdir, continuous):
    # the learning team trains SAC on its own steps only (team 1's, played by ghosts, are counted
    # apart), judged by the exported policy's deterministic actions (SAC's sampled episodes at
    # this budget miss now and then). Seeds 0-7: 1.01 (discrete) and 1.02 (continuous) every seed;
    # at 600 steps 3 continuous seeds of 8 fail (docs/benchmarks.md)
    path = write_yaml(workdir / "c.yaml", "1D:" + SAC_SYMMETRIC)
    result = run_cli(str(path), TEAMS, "--run-id=sac", "--seed=1", "--save-freq=99999",
                     *(["--env-args", "continuous=true"] if continuous else []))
    assert result.code == 0, result.log
    saved = CheckpointManager.load(CheckpointManager(workdir / "models/sac/1D", 0).list()[-1][1])
    learner_steps, play = saved["algorithm"]["step"], saved["self_play"]
    # ghosts played as many steps as the learner (were their steps trained on, the run would have
    # ended at half as many) and the window holds the snapshot the swap at 500 steps took
    assert 1000 <= learner_steps < 1100 and play["ghost_steps"] >= 0.9 * learner_steps
    assert len(play["snapshots"]) >= 2
    env = (Simple1DContinuous if continuous else Simple1D)(seed=3, behavior_name="1D?team=0")
    assert np.mean(evaluate_onnx(env, workdir / "models/sac/1D.onnx", episodes=10)) > 0.9


def test_sac_plays_itself_too(run_cli, workdir):
    path = write_yaml(workdir / "c.yaml", "1D:" + SAC_1D + "1DOpp:" + SAC_1D)
    result = run_cli(str(path), TEAMS, "--run-id=sac", "--seed=1", "--env-args",
                     "names=['1D?team=0', '1DOpp?team=1']", "continuous=true")
    assert result.code == 0, result.log
    assert "self-play: team 1 learns now" in result.log
    assert (workdir / "models/sac/1D.onnx").is_file() and (workdir / "models/sac/1DOpp.onnx").is_file()


def test_teams_of_a_name_with_and_without_self_play_are_refused(run_cli, workdir):
    # the team without self_play would train a policy of its own into the group's files (models/x/1D)
    body = PPO_1D.format(max_steps=300, self_play="    window: 3")
    write_yaml(workdir / "c.yaml", "1D?team=0:" + body + "1D?team=1:" + body.split("  self_play:")[0])
    result = run_cli("c.yaml", TEAMS, "--run-id=x")
    assert result.code != 0 and "Traceback" not in result.log
    assert "'1D?team=0' (self_play set in section '1D?team=0') and '1D?team=1' (no self_play)" in result.log
    assert not (workdir / "models/x").exists()


def test_resuming_a_self_play_run_without_self_play_is_refused(run_cli, workdir):
    path = config(workdir, ("1D",), 300)
    assert run_cli(path, TEAMS, "--run-id=r", "--seed=1").code == 0
    saved = sorted((workdir / "models/r/1D").iterdir())
    write_yaml(workdir / "c.yaml", "1D:" + PPO_1D.format(max_steps=600, self_play="").split("  self_play:")[0])
    result = run_cli("c.yaml", TEAMS, "--run-id=r", "--resume")
    assert result.code != 0 and "Traceback" not in result.log
    assert "trained '1D?team=0' and '1D?team=1' as one self-play policy" in result.log
    assert sorted((workdir / "models/r/1D").iterdir()) == saved  # (two policies saved over each other there)


def test_each_episode_counts_for_the_turn_it_was_played_in(run_cli, workdir, monkeypatch):
    # turns (100 steps) shorter than the summary period (500): an episode a team finished as the
    # learner is the learner's (Cumulative Reward) whatever the team plays at the summary, one it
    # finished as a ghost counts in the lengths only; also those ending on the step the turn ends
    controllers: list[SelfPlayController] = []
    init = SelfPlayController.__init__
    monkeypatch.setattr(SelfPlayController, "__init__", lambda self: (init(self), controllers.append(self))[0])
    ended: collections.Counter = collections.Counter()
    end = Collector._end_episodes

    def ending(self, terminal):
        before = len(self.stats.returns)
        out = end(self, terminal)
        role = "learner" if controllers[-1].learning_team == team_of(self.behavior)[1] else "ghost"
        ended[role] += len(self.stats.returns) - before
        return out

    reported: collections.Counter = collections.Counter()
    add = StatsReporter.add

    def adding(self, key, values):
        if key in ("Environment/Cumulative Reward", "Environment/Episode Length"):
            reported[key] += len(values)
        return add(self, key, values)

    at_summaries = []
    summary = BehaviorTrainer.write_summary

    def summarizing(self, step):
        summary(self, step)
        at_summaries.append((ended["learner"], ended["ghost"], reported["Environment/Cumulative Reward"],
                             reported["Environment/Episode Length"]))

    monkeypatch.setattr(Collector, "_end_episodes", ending)
    monkeypatch.setattr(StatsReporter, "add", adding)
    monkeypatch.setattr(BehaviorTrainer, "write_summary", summarizing)
    path = config(workdir, ("1D",), 1500, team_change=100, save_steps=200, swap_steps=200)
    result = run_cli(path, TEAMS, "--run-id=t", "--seed=1")
    assert result.code == 0, result.log
    assert result.log.count("self-play: team 1 learns now") >= 3
    assert len(at_summaries) == 3
    for learner, ghost, rewards, lengths in at_summaries:
        assert (rewards, lengths) == (learner, learner + ghost)


def test_a_team_whose_section_differs_plays_with_the_first_teams(run_cli, workdir):
    # team 1's section adds a reward signal and an LSTM: its agents are collected for the policy
    # they play, the first team's (its own collector failed on the first segment: no memory column)
    body = PPO_1D.format(max_steps=300, self_play="    team_change: 100")
    other = body.replace("use_recurrent: false", "use_recurrent: true").replace("sequence_length: 64",
                                                                                "sequence_length: 16")
    other = other.replace(
        "    extrinsic: {strength: 1.0, gamma: 0.99}",
        "    extrinsic: {strength: 1.0, gamma: 0.99}\n    curiosity: {strength: 0.02, gamma: 0.99, encoding_size: 8}")
    write_yaml(workdir / "c.yaml", "1D?team=0:" + body + "1D?team=1:" + other)
    result = run_cli("c.yaml", TEAMS, "--run-id=d", "--seed=1")
    assert result.code == 0, result.log
    assert "behavior '1D?team=1''s settings differ from '1D?team=0''s" in result.log
    assert "self-play: team 1 learns now" in result.log
    recorded = yaml.safe_load((workdir / "models/d/configuration.yaml").read_text())["behaviors"]
    assert recorded["1D?team=1"] == recorded["1D?team=0"]  # what it played and trained with


def discrete_and_continuous(seed: int = 0, num_areas: int = 1) -> CombinedEnv:
    """Two teams of one name that act differently (a test factory for --env)."""
    return CombinedEnv([Simple1D(seed=seed, behavior_name="1D?team=0"),
                        Simple1DContinuous(seed=seed + 1, behavior_name="1D?team=1")])


def test_teams_of_one_name_that_act_differently_are_refused(run_cli, workdir):
    path = config(workdir, ("1D",), 300)
    result = run_cli(path, "--env=tests.test_self_play:discrete_and_continuous", "--run-id=m")
    assert result.code != 0 and "Traceback" not in result.log
    assert ("'1D?team=0' (observations [(1,)], actions discrete[2]) and '1D?team=1' (observations [(1,)], actions "
            "continuous(1)) are teams of '1D'") in result.log
    assert not list((workdir / "models").glob("m/*.onnx"))


def test_the_ghosts_snapshot_keeps_its_rating_when_the_window_moves(workdir):
    from types import SimpleNamespace

    import torch

    from palaestra.algorithms import make_algorithm
    from palaestra.envs.base import ActionSpec, BehaviorSpec
    from palaestra.self_play import SelfPlayGroup
    from palaestra.settings import load_trainer_config

    settings = load_trainer_config(config(workdir, ("1D",), 1000, window=3, save_steps=10)).for_behavior("1D")
    spec = BehaviorSpec(((1,),), ActionSpec(0, (2,)))

    def group(window_settings):
        algorithm = make_algorithm(spec, settings, torch.device("cpu"), np.random.default_rng(0), "1D", True)
        owner = SimpleNamespace(algorithm=algorithm, stats=StatsReporter("x", []), should_continue=lambda: True,
                                training=True, name="1D")
        return SelfPlayGroup("1D", window_settings, SelfPlayController(), owner, np.random.default_rng(0))

    g = group(settings.self_play)
    for step in (11, 22):  # a full window of 3
        g.owner.algorithm.step = step
        g.advance()
    for i, (weights, _) in enumerate(list(g.snapshots)):
        g.snapshots[i] = (weights, 1000.0 + i)
    g.opponent = 1  # the ghosts play the second snapshot, rated 1001
    played = g.snapshots[1][0]
    g.owner.algorithm.step = 33
    g.advance()  # the oldest drops out of the window
    assert g.snapshots[g.opponent][0] is played and g.opponent_elo() == 1001.0
    g.change_opponent_elo(5.0)
    assert [e for _, e in g.snapshots][:2] == [1006.0, 1002.0]
    # a smaller window on --resume keeps the newest snapshots, the ghosts' (rated 1002) among them
    g.opponent = 1
    saved = g.state_dict()
    smaller = group(dataclasses.replace(settings.self_play, window=2))
    smaller.load_state_dict(saved)
    assert smaller.opponent_elo() == 1002.0
    # the opponents' draws go on where the saved run's were, not from the run's start again
    g.rng.random(5)
    resumed = group(settings.self_play)
    resumed.load_state_dict(torch_round_trip(g.state_dict()))
    assert resumed.rng.random(3).tolist() == g.rng.random(3).tolist()

    # under acting workers the next turn's opponent is drawn when the workers start its rounds
    # (play_ahead), and rated only from the change (apply_change): the rounds still recorded
    # before it were played against the one before; a swap in between draws the next turn's anew
    g = group(dataclasses.replace(settings.self_play, window=3, play_against_latest_model_ratio=0.0, swap_steps=5))
    for step in (11, 22):
        g.owner.algorithm.step = step
        g.advance()
    g.snapshots = collections.deque([(w, 1000.0 + i) for i, (w, _) in enumerate(g.snapshots)], maxlen=3)
    g.opponent = 0
    draws = iter([1, 2])  # the opponents drawn, in order
    g._draw_opponent = lambda: (i := next(draws), g.snapshots[i][0])
    g.teams, g._load = {0: None, 1: None}, lambda team, weights: None  # two teams: one ghost draws
    controller = g.controller
    controller.learning_team, controller._next = 0, 1  # (a change of turn requested)
    controller.play_ahead()
    assert g.opponent == 0 and g._next_opponent == 1
    g.change_opponent_elo(5.0)  # a round of the turn before
    assert [e for _, e in g.snapshots] == [1005.0, 1001.0, 1002.0]
    g.ghost_steps = 6
    g.advance()  # a swap while the turn waits to apply: the next turn's opponent, not the current
    assert g.opponent == 0 and g._next_opponent == 2 and g.last_swap == 6
    g.owner.algorithm.step = 33
    g.advance()  # a snapshot in between: the coming opponent keeps its snapshot, now the second
    assert g.opponent == 2 and g._next_opponent == 1 and g.snapshots[1][1] == 1002.0  # (the dropped: the newest)
    assert g.state_dict()["opponent"] == 1  # saved as the turn the workers play
    controller.apply_change()
    assert controller.learning_team == 1 and g.opponent == 1 and g.opponent_elo() == 1002.0
    # a checkpoint between a change's request and its reset (the main process acting) saves it as
    # applied, and the resumed run makes the swap it brings
    controller._next = 0
    assert g.state_dict()["swap_owed"]
    resumed = group(g.settings)
    resumed._draw_opponent = lambda: (2, resumed.snapshots[-1][0])
    resumed.teams, resumed._load = {0: None, 1: None}, lambda team, weights: None
    resumed.load_state_dict(g.state_dict())
    assert resumed.opponent == 2 and resumed.last_swap == resumed.ghost_steps == 6


def torch_round_trip(state: dict) -> dict:
    """``state`` through a checkpoint file and torch's weights-only loader."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


class _Late(CombinedEnv):
    """Two teams, the second appearing after ``late_from`` steps (as a Unity scene's agents may)."""

    def __init__(self, names: tuple[str, str], late_from: int) -> None:
        super().__init__([Simple1D(seed=0, behavior_name=names[0]), Simple1D(seed=1, behavior_name=names[1])])
        self.late, self.t, self.late_from = names[1], 0, late_from

    @property
    def behavior_specs(self):
        specs = dict(super().behavior_specs)
        if self.t < self.late_from:
            del specs[self.late]
        return specs

    def step(self) -> None:
        self.t += 1
        super().step()


def late_team(seed: int = 0, num_areas: int = 1, late_from: int = 200) -> CombinedEnv:
    return _Late(("1D?team=0", "1D?team=1"), late_from)


def test_a_team_that_appears_late_adds_nothing_to_the_progress_bar(run_cli, workdir, monkeypatch):
    import palaestra.run as run

    counted = []
    include = run._StepCounter.include

    def including(self, trainer):
        include(self, trainer)
        counted.append((self.bar.total, self._trainer_steps, sum(t.step for t in run.learners(self.trainers))))

    monkeypatch.setattr(run._StepCounter, "include", including)
    path = config(workdir, ("1D",), 600, team_change=150)
    result = run_cli(path, "--env=tests.test_self_play:late_team", "--run-id=l", "--seed=1")
    assert result.code == 0, result.log
    assert "behavior '1D?team=1' appeared at step 200" in result.log
    (total, counted_steps, steps), = counted
    assert total == 600 and counted_steps == steps > 0  # one policy: its max_steps, its steps once


class _LateDifferent(_Late):
    """As _Late, but the late team acts differently from the first (continuous, not discrete)."""

    def __init__(self, late_from: int) -> None:
        CombinedEnv.__init__(self, [Simple1D(seed=0, behavior_name="1D?team=0"),
                                    Simple1DContinuous(seed=1, behavior_name="1D?team=1")])
        self.late, self.t, self.late_from = "1D?team=1", 0, late_from


def late_misfit(seed: int = 0, num_areas: int = 1) -> CombinedEnv:
    return _LateDifferent(late_from=300)


def test_a_late_team_that_acts_differently_is_refused_without_touching_the_groups_files(run_cli, workdir):
    # it had been a trainer of the run when refused, and the run's last save wrote its untrained
    # policy (another action spec) over the group's exported model
    path = config(workdir, ("1D",), 2000)
    result = run_cli(path, "--env=tests.test_self_play:late_misfit", "--run-id=lm", "--save-freq=100")
    assert result.code != 0 and "Traceback" not in result.log
    assert "are teams of '1D', which play one policy, but they observe or act differently" in result.log
    run = workdir / "models" / "lm"
    assert not list((run / "1D").glob("checkpoint-0.pt"))
    import onnx

    outputs = [o.name for o in onnx.load(str(run / "1D.onnx")).graph.output]
    assert not any("continuous" in name for name in outputs), outputs  # still the discrete team's policy


def test_inference_plays_max_steps_of_the_policy(run_cli, workdir, monkeypatch):
    # the policy's steps are its first team's, as while training: the other teams' do not count
    # twice toward max_steps (which ended --inference halfway)
    path = config(workdir, ("1D",), 300)
    assert run_cli(path, TEAMS, "--run-id=i", "--seed=1").code == 0
    steps = []
    step = CombinedEnv.step

    def stepping(self):
        steps.append(1)
        if len(steps) > 2000:
            raise RuntimeError("--inference did not end")
        step(self)

    monkeypatch.setattr(CombinedEnv, "step", stepping)
    path = config(workdir, ("1D",), 400)
    result = run_cli(path, TEAMS, "--run-id=i", "--inference")
    assert result.code == 0, result.log
    assert 400 <= len(steps) < 400 + 64 + 11  # (steps count when a segment is taken: time_horizon 64)
    # two policies (asymmetric), each its own team's steps
    names = ("--env-args", "names=['1D?team=0', '1DOpp?team=1']")
    path = config(workdir, ("1D", "1DOpp"), 300)
    assert run_cli(path, TEAMS, "--run-id=a", "--seed=1", *names).code == 0
    steps.clear()
    result = run_cli(path, TEAMS, "--run-id=a", "--inference", *names)
    assert result.code == 0, result.log
    assert 300 <= len(steps) < 300 + 64 + 11


def late_opponent(seed: int = 0, num_areas: int = 1, late_from: int = 0) -> CombinedEnv:
    return _Late(("1D?team=0", "1DOpp?team=1"), late_from)


def test_a_group_that_appears_on_resume_keeps_the_runs_turn(run_cli, workdir, monkeypatch):
    # the run saved with team 1 learning; resumed, team 1 appears late: team 0's turn under way
    # goes on (the saved turn switched it at once, without the reset a change of turn brings)
    import palaestra.run as run

    path = config(workdir, ("1D", "1DOpp"), 300, team_change=200)
    assert run_cli(path, "--env=tests.test_self_play:late_opponent", "--run-id=r", "--seed=1").code == 0
    assert newest_self_play(workdir / "models/r/1DOpp")["controller"]["learning_team"] == 1
    turns = []
    adopt = run._adopt_new_behaviors

    def adopting(parts, *args):
        before = parts.self_play.learning_team
        adopt(parts, *args)
        turns.append((before, parts.self_play.learning_team))

    monkeypatch.setattr(run, "_adopt_new_behaviors", adopting)
    path = config(workdir, ("1D", "1DOpp"), 400, team_change=200)
    result = run_cli(path, "--env=tests.test_self_play:late_opponent", "--run-id=r", "--resume", "--env-args",
                     "late_from=20")
    assert result.code == 0, result.log
    assert turns == [(0, 0)]


def test_a_curriculum_counts_every_teams_learner_episodes(run_cli, workdir, monkeypatch):
    # ML-Agents feeds a curriculum the learning team's episodes, whichever team learns: here the
    # turn changes every 100 steps, and every episode either team finished as the learner counts
    from palaestra.curriculum.curricula import LessonState

    controllers: list[SelfPlayController] = []
    init = SelfPlayController.__init__
    monkeypatch.setattr(SelfPlayController, "__init__", lambda self: (init(self), controllers.append(self))[0])
    learner_episodes = collections.Counter()
    end = Collector._end_episodes

    def ending(self, terminal):
        before = len(self.stats.returns)
        out = end(self, terminal)
        if controllers[-1].learning_team == team_of(self.behavior)[1]:
            learner_episodes[team_of(self.behavior)[1]] += len(self.stats.returns) - before
        return out

    fed = []
    add = LessonState.add_returns
    monkeypatch.setattr(LessonState, "add_returns", lambda self, c, returns: (fed.extend(returns), add(self, c, returns))[1])
    monkeypatch.setattr(Collector, "_end_episodes", ending)
    write_yaml(workdir / "curriculum.yaml", """
        1D:
          measure: reward
          thresholds: [100.0]
          min_lesson_length: 1
          signal_smoothing: false
          parameters:
            unused: [1.0, 2.0]
    """)
    path = config(workdir, ("1D",), 1000, team_change=100, save_steps=200, swap_steps=200)
    result = run_cli(path, TEAMS, "--run-id=c", "--seed=1", "--curriculum=curriculum.yaml")
    assert result.code == 0, result.log
    assert result.log.count("self-play: team 1 learns now") >= 3
    assert learner_episodes[0] > 0 and learner_episodes[1] > 0
    assert len(fed) == learner_episodes[0] + learner_episodes[1]


# -- faults under acting workers -------------------------------------------------------------------
CRASHING_TEAMS = """
from pathlib import Path

from palaestra.envs.builtin.simple1d import make_teams


def make(seed, port):
    # worker 1 (port 5006) raises once, after 300 steps: a build that crashed mid-match
    env = make_teams(seed=seed, names=["1D?team=0", "1DOpp?team=1"])
    step, steps = env.step, [0]

    def failing():
        steps[0] += 1
        if port == 5006 and steps[0] > 300 and not Path("failed").exists():
            Path("failed").touch()
            raise RuntimeError("simulated crash in the simulator")
        step()

    env.step = failing
    return env
"""


def test_a_crashing_worker_is_restarted_and_the_teams_go_on_taking_turns(run_cli, workdir):
    import sys

    (workdir / "crashing_teams.py").write_text(CRASHING_TEAMS)
    path = config(workdir, ("1D", "1DOpp"), 3000, save_steps=200, swap_steps=200, team_change=400)
    try:
        result = run_cli(path, "--env=crashing_teams:make", "--run-id=c", "--seed=1", "--num-envs=2",
                         "--acting=workers")
    finally:
        sys.modules.pop("crashing_teams", None)
    assert result.code == 0, result.log
    assert (workdir / "failed").exists() and "restarting it (restart 1)" in result.log
    assert result.log.split("restarting it (restart 1)", 1)[1].count("learns now") >= 2  # turns after the restart
    for behavior in ("1D", "1DOpp"):  # each team played the other's turns as a ghost, before and after it
        assert newest_self_play(workdir / f"models/c/{behavior}")["ghost_steps"] > 1000


@pytest.mark.training
def test_ctrl_c_under_acting_workers_saves_the_self_play_state_and_resume_goes_on(workdir):
    from tests.conftest import interrupt_training

    path = config(workdir, ("1D", "1DOpp"), 20000, save_steps=200, swap_steps=200, team_change=400)
    args = (path, TEAMS, "--run-id=s", "--seed=1", "--num-envs=2", "--acting=workers")
    names = ("--env-args", "names=['1D?team=0', '1DOpp?team=1']")  # (last: --env-args takes the rest)
    code, err, seconds = interrupt_training(workdir, *args, *names, after_step=r"Step: [2-9]\d\d\d\.")
    assert code == 130, err
    assert "Stopped by SIGINT" in err and "Traceback" not in err and seconds < 30
    saved = {b: newest_self_play(workdir / f"models/s/{b}") for b in ("1D", "1DOpp")}
    assert all(s["ghost_steps"] > 0 for s in saved.values())
    step = CheckpointManager.load(CheckpointManager(workdir / "models/s/1D", 0).list()[-1][1])["algorithm"]["step"]
    path = config(workdir, ("1D", "1DOpp"), step + 1500, save_steps=200, swap_steps=200, team_change=400)
    import subprocess
    import sys
    resumed = subprocess.run([sys.executable, "-m", "palaestra.cli", *args, "--resume", *names], cwd=workdir,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {step}" in resumed.stderr and "Traceback" not in resumed.stderr
    for b in ("1D", "1DOpp"):
        now = newest_self_play(workdir / f"models/s/{b}")
        assert now["ghost_steps"] >= saved[b]["ghost_steps"]  # counted on, not restarted
    assert any(newest_self_play(workdir / f"models/s/{b}")["ghost_steps"] > saved[b]["ghost_steps"]
               for b in ("1D", "1DOpp"))


# -- PettingZoo players as teams -------------------------------------------------------------------
DUEL_MODULE = """
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from palaestra.envs.pettingzoo_env import PettingZooEnv, teams_by_index


class Duel(ParallelEnv):
    '''player_0 and player_1 each see a sign and score by naming it first-hand; 8 steps an episode.'''

    metadata = {"name": "duel_v0"}
    possible_agents = ["player_0", "player_1"]

    def __init__(self):
        self.rng = np.random.default_rng(0)

    def observation_space(self, agent):
        return spaces.Box(-1.0, 1.0, (1,), np.float32)

    def action_space(self, agent):
        return spaces.Discrete(2)

    def _obs(self):
        self.sign = {a: float(self.rng.choice([-1.0, 1.0])) for a in self.possible_agents}
        return {a: np.array([self.sign[a]], np.float32) for a in self.possible_agents}

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.t, self.agents = 0, list(self.possible_agents)
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions):
        right = {a: (actions[a] == 1) == (self.sign[a] > 0) for a in self.agents}
        rewards = {a: float(right[a]) - float(right[b]) for a, b in (self.agents, self.agents[::-1])}
        self.t += 1
        done = {a: False for a in self.agents}
        truncated = {a: self.t >= 8 for a in self.agents}
        obs = self._obs()
        if self.t >= 8:
            self.agents = []
        return obs, rewards, done, truncated, {a: {} for a in obs}


def make(seed):
    return PettingZooEnv(Duel(), "duel", seed=seed, behaviors=teams_by_index)


def unnamed(seed):
    return PettingZooEnv(Duel(), "duel", seed=seed, behaviors={"player_0": "player?team=0"})


def stranger(seed):
    return PettingZooEnv(Duel(), "duel", seed=seed, behaviors={"player_0": "a", "player_1": "b", "player_9": "c"})


def same_team(seed):
    return PettingZooEnv(Duel(), "duel", seed=seed, behaviors={"player_0": "player", "player_1": "player?team=0"})


def listed(seed):
    return PettingZooEnv(Duel(), "duel", seed=seed, behaviors=["player?team=0", "player?team=1"])
"""


@pytest.fixture
def duel_module(workdir):
    import sys

    pytest.importorskip("pettingzoo")
    (workdir / "duel_env.py").write_text(DUEL_MODULE)
    yield "duel_env"
    sys.modules.pop("duel_env", None)


def test_pettingzoo_players_play_as_self_play_teams(run_cli, workdir, duel_module):
    path = config(workdir, ("player",), 1600, save_steps=200, swap_steps=200, team_change=400)
    result = run_cli(path, f"--env={duel_module}:make", "--run-id=pz", "--seed=1")
    assert result.code == 0, result.log
    assert "self-play: team 1 learns now" in result.log
    play = newest_self_play(workdir / "models/pz/player")  # one policy for both players
    assert play["ghost_steps"] > 400 and len(play["snapshots"]) > 1
    assert not (workdir / "models/pz/player?team=0").exists()


@pytest.mark.parametrize("factory,message", [
    ("unnamed", "behaviors names no behavior for agent 'player_1' (it names ['player_0'])"),
    ("stranger", "behaviors names ['player_9'], which are not among its possible_agents ['player_0', 'player_1']"),
    ("listed", "behaviors must be a dict from agent to behavior name or a function of the agent, got list"),
    ("same_team", "behaviors 'player' and 'player?team=0' are both team 0 of 'player'; give each team of 'player' a "
                  "number of its own"),
])
def test_behaviors_that_miss_an_agent_or_name_a_stranger_are_refused(run_cli, workdir, duel_module, factory, message):
    path = config(workdir, ("player",), 300)
    result = run_cli(path, f"--env={duel_module}:{factory}", "--run-id=pz")
    assert result.code != 0 and "Traceback" not in result.log
    assert message in result.log


def _lone_group(workdir, recurrent: bool = False, **self_play):
    """A self-play group of behavior 1D over a real algorithm, without a run."""
    from types import SimpleNamespace

    import torch

    from palaestra.algorithms import make_algorithm
    from palaestra.envs.base import ActionSpec, BehaviorSpec
    from palaestra.self_play import SelfPlayGroup
    from palaestra.settings import load_trainer_config

    settings = load_trainer_config(config(workdir, ("1D",), 1000, **self_play)).for_behavior("1D")
    if recurrent:
        settings = dataclasses.replace(settings, use_recurrent=True, memory_size=8, sequence_length=4)
    spec = BehaviorSpec(((1,),), ActionSpec(0, (2,)))
    algorithm = make_algorithm(spec, settings, torch.device("cpu"), np.random.default_rng(0), "1D", True)
    owner = SimpleNamespace(algorithm=algorithm, stats=StatsReporter("x", []), should_continue=lambda: True,
                            training=True, name="1D")
    return SelfPlayGroup("1D", settings.self_play, SelfPlayController(), owner, np.random.default_rng(0))


def test_each_ghost_team_draws_its_own_opponent_and_the_last_drawn_is_rated(workdir):
    # with three teams every ghost team took the same opponent: ML-Agents draws one per team
    g = _lone_group(workdir, window=3)
    loaded = {}
    g.teams, g._load = {0: None, 1: None, 2: None}, lambda team, weights: loaded.__setitem__(team, weights)
    g.controller.learning_team = 0
    draws = iter([(1, "snapshot 1"), (2, "snapshot 2")])
    g._draw_opponent = lambda: next(draws)
    g._swap()
    assert loaded == {1: "snapshot 1", 2: "snapshot 2"} and g.opponent == 2  # (the learner's team draws none)


def test_a_turn_that_stays_keeps_the_time_it_started(workdir):
    # at max_steps (or with a change pending) no change happens, yet the turn's start moved to the
    # step reached: a resumed run kept the turn that much longer
    g = _lone_group(workdir, team_change=100)
    g.teams = {0: None}
    g.controller.learning_team = 0
    g.controller.request_change = lambda: False  # no other team may take the turn
    g.owner.algorithm.step = 150
    g.advance()
    assert g.last_team_change == 0
    g.controller.request_change = lambda: True
    g.advance()
    assert g.last_team_change == 150


def test_recurrent_ghosts_act_with_modules_of_their_own_and_leave_the_process_settings(workdir):
    # every team's ghost wrapped one torch module, bound to the last team's weights; and building
    # them set the trainer's process to one torch thread and reseeded torch
    import torch

    from palaestra.networks.acting import make_actor

    g = _lone_group(workdir, recurrent=True)
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = make_actor(g._layout, np.zeros(weight_size(g._layout), np.float32), g.rng, in_worker=False)
    second = make_actor(g._layout, np.ones(weight_size(g._layout), np.float32), g.rng, in_worker=False)
    assert torch.get_num_threads() == threads and torch.equal(torch.rand(3), expected)
    assert first.module is not second.module
    assert all(float(p.abs().sum()) == 0 for p in first.module.parameters())
