"""The built-in Tennis (envs/builtin/tennis.py): two teams, one policy by self-play."""

from __future__ import annotations

import numpy as np
import pytest

from palaestra.envs.base import ActionTuple
from palaestra.envs.builtin.tennis import TEAMS, Tennis
from palaestra.envs.checker import check_env
from palaestra.evaluation import evaluate_onnx
from tests.conftest import SHIPPED_CONFIG


def random_player(rng: np.random.Generator):
    return lambda decision: ActionTuple(discrete=rng.integers(0, 3, (len(decision), 1)).astype(np.int32))


def play(env: Tennis, players: dict[str, object], points: int) -> dict[str, list[float]]:
    """Each team's point rewards (the last reward of each of its episodes) over ``points`` points."""
    ended: dict[str, list[float]] = {team: [] for team in TEAMS}
    env.reset()
    while len(ended[TEAMS[0]]) < points:
        for team in TEAMS:
            decision, _ = env.get_steps(team)
            player = players[team]
            env.set_actions(team, env.heuristic_for(team) if player == "heuristic" else player(decision))
        env.step()
        for team in TEAMS:
            ended[team].extend(env.get_steps(team)[1].reward.tolist())
    return ended


def test_the_protocol_holds_for_both_teams():
    env = Tennis(seed=0, num_areas=2)
    check_env(env)
    assert list(env.behavior_specs) == ["Tennis?team=0", "Tennis?team=1"]
    env.reset()
    assert [len(env.get_steps(team)[0]) for team in TEAMS] == [16, 16]


def test_a_point_ends_both_players_episodes_with_opposite_rewards():
    ended = play(Tennis(seed=1), {TEAMS[0]: "heuristic", TEAMS[1]: random_player(np.random.default_rng(1))}, 200)
    ours, theirs = np.array(ended[TEAMS[0]][:200]), np.array(ended[TEAMS[1]][:200])
    assert len(ended[TEAMS[1]]) == len(ended[TEAMS[0]])
    assert np.all(np.sign(ours) == -np.sign(theirs))
    assert np.all(ours > 0)  # the scripted player never loses a point to a random one


def test_each_player_sees_the_court_from_its_own_baseline():
    env = Tennis(seed=2)
    env.reset()
    env.ball[:] = [0.3, 0.2]  # near team 0's baseline, coming toward it
    env.velocity[:] = [0.01, -0.03]
    env.racket[:] = [0.4, 0.7]
    obs = env._observe()
    np.testing.assert_allclose(obs[0], [0.4, 0.7, 0.3, 0.2, 0.2, 0.6], rtol=1e-6)  # team 0: close, coming
    np.testing.assert_allclose(obs[1], [0.7, 0.4, 0.3, 0.8, 0.2, -0.6], rtol=1e-6)  # team 1: far, going away


def test_an_edge_hit_angles_the_return_and_a_miss_loses_the_point():
    env = Tennis(seed=3)
    env.reset()
    env.ball[:] = [0.55, 0.01]
    env.velocity[:] = [0.0, -0.03]
    env.racket[:] = [0.5, 0.5]
    reward, done = env._advance(ActionTuple(discrete=np.zeros((16, 1), np.int32)))
    assert not done.any() and reward[0] == pytest.approx(0.1) and reward[1] == 0.0
    assert env.velocity[0, 1] > 0.03 and env.velocity[0, 0] > 0  # faster, and away from the racket's centre
    env.ball[:] = [0.9, 0.01]
    env.velocity[:] = [0.0, -0.03]
    reward, done = env._advance(ActionTuple(discrete=np.zeros((16, 1), np.int32)))
    assert done.all() and reward[0] == -1.0 and reward[1] == 1.0


@pytest.mark.training
def test_self_play_learns_tennis_without_a_scripted_opponent(run_cli, workdir):
    # The shipped section: both teams one policy, against its own past versions only. Seeds 0-7
    # (docs/benchmarks.md, bench/tennis_self_play.py): against a random player it wins 0.855-0.965
    # of its points (median 0.944), against the scripted player, which it never met, 0.30-0.78
    # (median 0.48); an untrained policy wins about half against a random player and none
    # against the scripted one.
    result = run_cli(str(SHIPPED_CONFIG), "--env=Tennis", "--run-id=t", "--seed=1")
    assert result.code == 0, result.log
    model = workdir / "models/t/Tennis.onnx"
    for opponent, least in (("random", 0.8), ("heuristic", 0.2)):
        env = Tennis(seed=7, num_areas=2)
        rng = np.random.default_rng(7)
        act = random_player(rng) if opponent == "random" else (lambda d: env.heuristic_for(TEAMS[1]))
        returns = np.array(evaluate_onnx(env, model, episodes=400, behavior=TEAMS[0], opponents={TEAMS[1]: act}))
        assert np.mean(returns > 0) >= least, (opponent, np.mean(returns > 0))


def test_a_rally_cut_by_the_step_limit_ends_as_a_draw():
    # a return on the very step the rally is cut pays nothing: the last reward, which the ELO reads
    # as the result, is 0 for both players
    env = Tennis(seed=4)
    env.reset()
    env.episode_steps[:] = env.max_episode_steps - 1
    env.ball[:] = [0.5, 0.01]
    env.velocity[:] = [0.0, -0.03]
    env.racket[:] = [0.5, 0.5]
    env.step()
    _, ended = env.get_steps(TEAMS[0])
    assert len(ended) == 8 and ended.interrupted.all() and (ended.reward == 0.0).all()
