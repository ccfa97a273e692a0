"""The built-in WallJump: its two behaviors, its wall heights as environment parameters, and the
shipped wall_jump curricula (both formats) driving it through every lesson."""

from __future__ import annotations

import json

import numpy as np
import pytest

from palaestra.curriculum import EnvironmentParameters, load_curricula
from palaestra.envs.base import ActionTuple
from palaestra.envs.builtin.walljump import BACK, BIG, FORWARD, GOAL, SMALL, STAY, WALL, WallJump
from tests.conftest import REPO, SHIPPED_CONFIG


def play(env: WallJump, steps: int, policy) -> dict[str, list[float]]:
    """Run ``policy(behavior) -> ActionTuple``; each behavior's finished episode returns."""
    running = np.zeros(env.n)
    returns: dict[str, list[float]] = {SMALL: [], BIG: []}
    for _ in range(steps):
        for b in (SMALL, BIG):
            env.set_actions(b, policy(b))
        env.step()
        for b in (SMALL, BIG):
            decision, terminal = env.get_steps(b)
            running[terminal.agent_id] += terminal.reward
            returns[b] += running[terminal.agent_id].tolist()
            running[terminal.agent_id] = 0.0
            running[decision.agent_id] += decision.reward
    return returns


def random_policy(env: WallJump, rng: np.random.Generator):
    return lambda b: env.action_spec.random_actions(len(env.get_steps(b)[0]), rng)


def test_behaviors_follow_the_wall_and_parameters_set_the_heights():
    env = WallJump(seed=0, num_areas=8)
    env.reset({"small_wall_height": 1.5, "big_wall_min_height": 0.0, "big_wall_max_height": 4.0})
    small, big = env.get_steps(SMALL)[0].agent_id, env.get_steps(BIG)[0].agent_id
    assert len(small) + len(big) == env.n and not set(small) & set(big)
    assert set(np.round(env.height[small], 3)) <= {0.0, 1.5}
    assert ((env.height[big] >= 0) & (env.height[big] <= 4)).all()
    assert 0.45 < len(big) / env.n < 0.75  # 3 in 5 episodes meet the big wall
    env.reset()  # no parameters: the last values stay
    assert ((env.height[env.get_steps(BIG)[0].agent_id] <= 4)).all()
    # an episode that ends shows in the terminal steps of the behavior it was played in
    seen = play(env, 300, env.heuristic_for)
    assert min(len(seen[SMALL]), len(seen[BIG])) > 50


def test_a_big_wall_range_written_backwards_is_a_warning_and_drawn_between_its_ends(caplog):
    # a curriculum lesson or a sampler may set the minimum above the maximum: Unity's
    # Random.Range swaps the ends, and so does this; said once, not at every reset
    env = WallJump(seed=0, num_areas=8)
    for _ in range(3):
        env.reset({"big_wall_min_height": 6.0, "big_wall_max_height": 4.0})
    big = env.height[env.get_steps(BIG)[0].agent_id]
    assert len(big) and ((big >= 4.0) & (big <= 6.0)).all()
    assert caplog.text.count("big_wall_min_height 6 is above big_wall_max_height 4") == 1


@pytest.mark.parametrize("height, jumps", [(0.5, 1), (0.7, 2), (1.0, 2), (1.5, 3), (4.0, 8), (7.3, 15), (8.0, 16)])
def test_a_wall_takes_a_forward_jump_per_half_unit_of_height_in_a_row(height, jumps):
    env = WallJump(seed=0)
    env.reset()
    env.agent[:], env.height[:], env.climbed[:] = WALL - 1, height, 0.0
    leap = ActionTuple(discrete=np.tile([FORWARD, 1], (env.n, 1)))
    for climbed in range(1, jumps):
        env._advance(leap)
        assert (env.agent == WALL - 1).all() and np.allclose(env.climbed, climbed * 0.5)
    env._advance(leap)
    assert (env.agent == WALL + 1).all() and (env.climbed == 0).all()


def test_anything_but_a_forward_jump_drops_the_climber_and_the_wall_stops_walking_both_ways():
    env = WallJump(seed=0)
    env.reset()
    env.agent[:], env.height[:], env.climbed[:] = WALL - 1, 8.0, 5.0
    env._advance(ActionTuple(discrete=np.tile([STAY, 1], (env.n, 1))))
    assert (env.climbed == 0).all() and (env.agent == WALL - 1).all()
    env.climbed[:] = 5.0
    env._advance(ActionTuple(discrete=np.tile([FORWARD, 0], (env.n, 1))))  # walks into the wall
    assert (env.climbed == 0).all() and (env.agent == WALL - 1).all()
    env.agent[:] = WALL + 1  # over the wall: back does not lead into it
    env._advance(ActionTuple(discrete=np.tile([BACK, 0], (env.n, 1))))
    assert (env.agent == WALL + 1).all()
    env.agent[:] = WALL - 1
    env.height[:] = 0.0  # no wall: forward walks through its cell, to the goal
    for _ in range(GOAL - WALL + 1):
        reward, done = env._advance(ActionTuple(discrete=np.tile([FORWARD, 0], (env.n, 1))))
    assert done.all() and (reward == 1.0).all()


def test_the_heuristic_gets_over_every_wall():
    env = WallJump(seed=3, num_areas=4)
    env.reset({"small_wall_height": 4.0, "big_wall_min_height": 0.0, "big_wall_max_height": 8.0})
    returns = play(env, 400, env.heuristic_for)
    assert min(len(returns[SMALL]), len(returns[BIG])) > 50
    assert min(min(returns[SMALL]), min(returns[BIG])) > 0.95


def test_low_walls_are_within_reach_of_random_moves_high_walls_are_not():
    rng = np.random.default_rng(0)
    solved = {}
    for lesson, (low, high) in enumerate([(0.0, 4.0), (8.0, 8.0)]):
        env = WallJump(seed=1, num_areas=8)
        env.reset({"big_wall_min_height": low, "big_wall_max_height": high})
        returns = play(env, 600, random_policy(env, rng))[BIG]
        solved[lesson] = np.mean(np.array(returns) > 0)
    assert solved[0] > 5 * solved[1]  # what makes the curriculum worth it


@pytest.mark.parametrize("form", ["yaml", "json folder"])
def test_wall_jump_curricula_drive_the_environment_through_every_lesson(conformance, form):
    path = conformance / ("mlagents-release2/config/curricula/wall_jump.yaml" if form == "yaml" else
                          "mlagents-0.13/config/curricula/wall-jump")
    curricula = load_curricula(path)
    legacy = WallJump.legacy_behavior_names
    curricula = {legacy.get(b, b): c for b, c in curricula.items()}
    params = EnvironmentParameters(curricula, None, seed=0, workers=1)
    env = WallJump(seed=0, num_areas=8)
    env.reset(params.draw()[0])

    class Behavior:  # a trainer's part: progress and the episodes it finished
        def __init__(self):
            self.returns, self.step = [], 0

        @property
        def progress(self):
            return self.step / 20000

        def take_finished_returns(self):
            taken, self.returns = self.returns, []
            return taken

    behaviors = {SMALL: Behavior(), BIG: Behavior()}
    heights_seen = {lesson: set() for lesson in range(4)}
    for _ in range(4000):
        for b in (SMALL, BIG):
            env.set_actions(b, env.heuristic_for(b))
        env.step()
        for b, behavior in behaviors.items():
            decision, terminal = env.get_steps(b)
            behavior.step += len(decision)
            behavior.returns += terminal.reward.tolist()
        big_agents = env.get_steps(BIG)[0].agent_id
        heights_seen[params.lessons[BIG].lesson].update(np.round(env.height[big_agents], 1).tolist())
        if params.check_lessons(behaviors):
            env.reset(params.draw()[0])
    assert params.lessons[BIG].lesson == 3 and params.lessons[SMALL].lesson == 3
    assert max(heights_seen[0]) <= 4.0 and min(heights_seen[1]) >= 4.0 and heights_seen[3] == {8.0}
    assert env.parameters == {"small_wall_height": 4.0, "big_wall_min_height": 8.0, "big_wall_max_height": 8.0}


def test_shipped_sections_and_the_old_brain_names(run_cli, workdir, conformance):
    old = conformance / "mlagents-0.13/config/curricula/wall-jump"
    result = run_cli(str(SHIPPED_CONFIG), "--env=WallJump", f"--curriculum={old}", "--dry-run")
    assert result.code == 0, result.log
    assert "curriculum BigWallBrain (ML-Agents <= 0.13 name) drives behavior BigWallJump" in result.log
    assert "SmallWallJump" in result.out and "BigWallJump" in result.out
    assert "does not have" not in result.log and "no environment parameter" not in result.log


def test_a_curriculum_under_the_behavior_s_own_name_wins_over_its_old_name(run_cli, workdir, conformance):
    import shutil
    folder = workdir / "mixed"
    shutil.copytree(conformance / "mlagents-0.13/config/curricula/wall-jump", folder)
    (folder / "BigWallJump.json").write_text(json.dumps({
        "measure": "reward", "thresholds": [0.9], "min_lesson_length": 10, "signal_smoothing": False,
        "parameters": {"big_wall_min_height": [0.0, 8.0], "big_wall_max_height": [4.0, 8.0]}}))
    result = run_cli(str(SHIPPED_CONFIG), "--env=WallJump", f"--curriculum={folder}", "--dry-run")
    assert result.code == 0, result.log
    assert (f"curriculum BigWallBrain (ML-Agents <= 0.13 name of BigWallJump) is ignored: BigWallJump has a "
            f"curriculum of its own name in {folder / 'BigWallJump.json'}") in result.log
    assert "curriculum SmallWallBrain (ML-Agents <= 0.13 name) drives behavior SmallWallJump" in result.log
    assert "measure: reward" in result.out


def test_heuristic_actions_fit_each_behavior():
    env = WallJump(seed=2)
    env.reset()
    for b in (SMALL, BIG):
        actions = env.heuristic_for(b)
        assert isinstance(actions, ActionTuple) and actions.discrete.shape == (len(env.get_steps(b)[0]), 2)


def test_shipped_curriculum_and_sampler_files_load():
    from palaestra.curriculum import load_sampler

    assert sorted(load_curricula(REPO / "config/curricula/wall_jump.yaml")) == [BIG, SMALL]
    assert sorted(load_sampler(REPO / "config/samplers/3dball_randomize.yaml").samplers) == ["gravity", "mass", "scale"]


def shipped_sections(budget: int, curiosity: bool = False) -> str:
    """The shipped SmallWallJump and BigWallJump sections at ``budget`` steps each, with ML-Agents'
    curiosity settings of Pyramids added to both if asked (as bench/curriculum_walljump.py does)."""
    import re

    import yaml

    config = re.sub(r"((?:Small|Big)WallJump:\n    max_steps: )[^\n]+", rf"\g<1>{budget}", SHIPPED_CONFIG.read_text())
    assert config.count(f"max_steps: {budget}") == 2
    sections = {b: section for b, section in yaml.safe_load(config).items() if b in (SMALL, BIG)}
    if curiosity:
        for section in sections.values():
            signals = section.setdefault("reward_signals", {"extrinsic": {"strength": 1.0, "gamma": 0.99}})
            signals["curiosity"] = {"strength": 0.02, "gamma": 0.99, "encoding_size": 256}
    return yaml.safe_dump(sections)


def big_walls_crossed(workdir, run: str) -> float:
    """The share of 32 deterministic episodes of BigWallJump's exported model that cross an
    8-high wall (16 jumps in a row, which random moves never make)."""
    from palaestra.envs.sources import make_env
    from palaestra.evaluation import evaluate_onnx

    returns = evaluate_onnx(make_env("WallJump", seed=100, num_areas=2), workdir / f"models/{run}/BigWallJump.onnx",
                            32, max_decisions=20_000, behavior=BIG)
    assert len(returns) >= 32
    return float(np.mean(np.array(returns) > 0))


@pytest.mark.training
def test_the_curriculum_gets_the_big_wall_crossed(run_cli, workdir):
    # ML-Agents' curriculum at 200k steps per behavior. Seeds 1-8 at this budget: 8/8 with the
    # curriculum; trained on that wall from the start, 1/8 (a policy that drifted to jumping
    # forward everywhere), and 0/8 at the shipped 300k steps (docs/benchmarks.md). That contrast
    # is a sweep's, so only the curriculum's side is tested.
    (workdir / "c.yaml").write_text(shipped_sections(200_000))
    curriculum = REPO / "config/curricula/wall_jump.yaml"
    result = run_cli("c.yaml", "--env=WallJump", "--run-id=cur", "--seed=2", f"--curriculum={curriculum}")
    assert result.code == 0, result.log
    assert big_walls_crossed(workdir, "cur") > 0.9


@pytest.mark.training
def test_curiosity_gets_the_big_wall_crossed_without_a_curriculum(run_cli, workdir):
    # The sparse task where curiosity wins (issue 13): the 8-high wall from the start, nothing
    # rewarded before the goal. Since PPO values every segment with the critic of its update, as
    # ML-Agents: at 150k steps 12/16 seeds crossed every time (before: 14/16); at 250k seeds 1-8,
    # 12 and 15 all did and plain PPO on none of seeds 1-4 (at 100k and 300k 0/8, at 200k 1/8;
    # docs/benchmarks.md).
    (workdir / "c.yaml").write_text(shipped_sections(250_000, curiosity=True))
    result = run_cli("c.yaml", "--env=WallJump", "--run-id=icm", "--seed=3")
    assert result.code == 0, result.log
    assert big_walls_crossed(workdir, "icm") > 0.9
