"""The environments for visual and recurrent policies: several observations per agent, images,
Simple1D's images and Memory1D, VisualGridWorld, Hallway, CartPole without velocities, and
Gymnasium image observations."""

from __future__ import annotations

import logging
import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from palaestra.envs.base import ActionTuple, EnvError
from palaestra.envs.builtin import BUILTIN_ENVS, make_builtin
from palaestra.envs.builtin.gridworld import SIZE, GridWorld, VisualGridWorld
from palaestra.envs.builtin.hallway import FORWARD, LEFT, RIGHT, Hallway, chance_return, solved_return
from palaestra.envs.builtin.simple1d import SHOW_STEPS, Memory1D, make
from palaestra.envs.builtin.vector_env import BuiltinVectorEnv
from palaestra.envs.checker import check_env
from palaestra.envs.gymnasium_env import GymnasiumEnv
from palaestra.envs.sources import make_env
from tests.conftest import SHIPPED_CONFIG
from tests.test_envs import run_heuristic


def discrete(values) -> ActionTuple:
    return ActionTuple(discrete=np.asarray(values, np.int32).reshape(-1, 1))


# -- Simple1D's observations and Memory1D ------------------------------------------------------

def test_simple1d_gives_vectors_then_images_that_show_the_goal():
    env = make(seed=2, num_areas=3, num_vector=2, num_visual=1, vis_obs_size=[36, 36, 3])
    assert env.behavior_specs["1D"].observation_shapes == ((1,), (1,), (36, 36, 3))
    check_env(env, steps=100)
    env.reset()
    for _ in range(30):
        decision, _ = env.get_steps("1D")
        vec, vec2, image = decision.obs
        assert vec.dtype == np.float32 and image.dtype == np.uint8 and image.shape == (3, 36, 36, 3)
        np.testing.assert_array_equal(vec[:, 0], env.goal)
        np.testing.assert_array_equal(vec2, vec)
        assert vec is not vec2  # no buffer shared between observations
        expected = np.where(env.goal > 0, 255, 0)[:, None, None, None]
        assert (image == expected).all()  # every element: goal +1 -> 255, -1 -> 0
        env.set_actions("1D", env.action_spec.random_actions(3, np.random.default_rng(0)))
        env.step()


def test_simple1d_images_only_and_the_default_stays_one_vector():
    assert make().behavior_specs["1D"].observation_shapes == ((1,),)
    assert make(num_visual=2, num_vector=0).behavior_specs["1D"].observation_shapes == ((20, 20, 3),) * 2
    env = make_env("palaestra.envs.builtin.simple1d:make",
                   env_args=["num_visual=1", "num_vector=0", "vis_obs_size=[36, 36, 3]", "step_size=0.5"])
    assert env.behavior_specs["1D"].observation_shapes == ((36, 36, 3),)
    assert np.mean(run_heuristic(env, 200)) == pytest.approx(1.11 - 0.01)  # two steps of 0.5


@pytest.mark.parametrize("kwargs, message", [
    ({"num_vector": 0, "num_visual": 0}, "num_vector \\+ num_visual must be at least 1"),
    ({"num_visual": -1}, "num_visual must be an integer >= 0, got -1"),
    ({"num_visual": 1, "vis_obs_size": [20, 20]}, "vis_obs_size must be \\[height, width, channels\\]"),
    ({"num_visual": 1, "vis_obs_size": "20x20x3"}, "vis_obs_size must be"),
    ({"num_visual": 1, "vis_obs_size": [5000, 5000, 3]}, "vis_obs_size must be at most \\[512, 512, 4\\]"),
    ({"num_visual": 1, "vis_obs_size": [20, 20, 3000]}, "vis_obs_size must be at most"),
])
def test_simple1d_observation_arguments_are_checked(kwargs, message):
    with pytest.raises(EnvError, match=message):
        make(**kwargs)


@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("kwargs", [{}, {"memory": True}, {"memory": True, "step_size": 0.5, "max_episode_steps": 3},
                                    {"memory": True, "step_size": 1.0}])
def test_simple1d_one_agent_shortcut_matches_the_array_step_with_images(continuous, kwargs):
    fast = make(seed=4, continuous=continuous, num_visual=2, vis_obs_size=[8, 8, 1], **kwargs)
    slow = make(seed=4, continuous=continuous, num_visual=2, vis_obs_size=[8, 8, 1], **kwargs)
    fast.reset(), slow.reset()
    rng = np.random.default_rng(1)
    for _ in range(300):
        actions = fast.action_spec.random_actions(1, rng)
        fast.set_actions("1D", actions), slow.set_actions("1D", actions)
        fast.step()
        BuiltinVectorEnv.step(slow)
        for a, b in zip(fast.get_steps("1D"), slow.get_steps("1D")):
            assert len(a.obs) == len(b.obs) == 3
            for x, y in zip(a.obs, b.obs):
                assert x.dtype == y.dtype
                np.testing.assert_array_equal(x, y)
            np.testing.assert_array_equal(a.reward, b.reward)


@pytest.mark.parametrize("name", ["Memory1DDiscrete", "Memory1DContinuous"])
def test_memory1d_shows_the_goal_only_in_the_first_observations(name):
    env = BUILTIN_ENVS[name](seed=1, num_areas=4)
    assert env.behavior_name == "1D" and env.step_size == 0.2
    env.reset()
    step_in_episode = np.zeros(4, int)
    for _ in range(60):
        decision, terminal = env.get_steps("1D")
        shown = step_in_episode < SHOW_STEPS
        np.testing.assert_array_equal(decision.obs[0][:, 0], np.where(shown, env.goal, 0.0))
        env.set_actions(name and "1D", env.heuristic())
        env.step()
        step_in_episode += 1
        step_in_episode[env.get_steps("1D")[1].agent_id] = 0


def test_memory1d_images_hide_the_goal_too_and_later_observations_carry_no_goal():
    def observations(goal: float) -> list[np.ndarray]:
        env = make(memory=True, num_visual=1, vis_obs_size=[4, 4, 3])
        env.reset()
        env.goal[:] = goal  # the same episode for either goal, taking the same (rightward) actions
        env._decision = None
        env._decision = type(env.get_steps)  # placeholder, replaced by reset below
        env.episode_steps[:] = 0
        from palaestra.envs.base import DecisionSteps
        env._decision = DecisionSteps(env._observations(), np.zeros(1, np.float32), env._ids)
        seen = []
        for _ in range(4):
            seen.append([o.copy() for o in env.get_steps("1D")[0].obs])
            env.set_actions("1D", discrete([1]))
            env.step()
        return seen

    plus, minus = observations(1.0), observations(-1.0)
    for t in range(SHOW_STEPS):  # shown: +1 -> 255, -1 -> 0
        assert plus[t][0][0, 0] == 1.0 and minus[t][0][0, 0] == -1.0
        assert (plus[t][1] == 255).all() and (minus[t][1] == 0).all()
    for t in range(SHOW_STEPS, 4):  # then nothing about the goal: 0, and 128 in an image
        for a, b in zip(plus[t], minus[t]):
            np.testing.assert_array_equal(a, b)
        assert plus[t][0][0, 0] == 0.0 and (plus[t][1] == 128).all()


def test_memory1d_heuristic_is_solved_and_a_policy_without_memory_is_not():
    env = Memory1D(seed=0, num_areas=16)
    assert env.solved_reward == pytest.approx(1.07)
    assert np.mean(run_heuristic(env, 600)) == pytest.approx(1.07)
    # the best a policy of the current observation can do: follow the goal while shown, then guess
    env.reset()
    returns, running = [], np.zeros(env.n)
    for _ in range(2000):
        obs = env.get_steps("1D")[0].obs[0][:, 0]
        env.set_actions("1D", discrete(obs >= 0))  # goal shown: towards it; hidden (0): right
        env.step()
        decision, terminal = env.get_steps("1D")
        running[terminal.agent_id] += terminal.reward
        returns += running[terminal.agent_id].tolist()
        running[terminal.agent_id] = 0.0
        running[decision.agent_id] += decision.reward
    assert np.mean(returns) < 0.6  # half the episodes end at the wrong side


# -- VisualGridWorld ---------------------------------------------------------------------------

def decode(image: np.ndarray) -> dict[str, tuple[int, int]]:
    """The cells of the agent, goal and pit in one rendered image: blue, green and red blocks."""
    size = image.shape[0]
    first = (np.arange(SIZE) * size + SIZE - 1) // SIZE  # each cell's block's first pixel
    cells = image[first][:, first]  # [SIZE, SIZE, 3]
    assert np.isin(image, (0, 255)).all()
    np.testing.assert_array_equal(image, cells[np.arange(size) * SIZE // size][:, np.arange(size) * SIZE // size])
    found = {}
    for name, channel in (("agent", 2), ("goal", 1), ("pit", 0)):
        where = np.argwhere(cells[:, :, channel] == 255)
        assert len(where) == 1
        found[name] = tuple(where[0])
    return found


@pytest.mark.parametrize("size", [84, 36, 20, 7])
def test_visual_gridworld_renders_gridworld_and_keeps_its_dynamics(size):
    kwargs = {} if size == 84 else {"image_size": size}
    visual, grid = VisualGridWorld(seed=5, num_areas=2, **kwargs), GridWorld(seed=5, num_areas=2)
    assert visual.behavior_specs["GridWorld"].observation_shapes == ((size, size, 3),)
    assert visual.behavior_specs["GridWorld"].action_spec == grid.behavior_specs["GridWorld"].action_spec
    visual.reset(), grid.reset()
    rng = np.random.default_rng(0)
    for _ in range(120):
        v, g = visual.get_steps("GridWorld"), grid.get_steps("GridWorld")
        for vs, gs in zip(v, g):  # the same rewards, ids, masks; images of the same cells
            np.testing.assert_array_equal(vs.reward, gs.reward)
            np.testing.assert_array_equal(vs.agent_id, gs.agent_id)
            assert vs.obs[0].dtype == np.uint8 and vs.obs[0].shape == (len(gs), size, size, 3)
            for image, vector in zip(vs.obs[0], gs.obs[0]):
                planes = vector[:75].reshape(3, SIZE, SIZE)
                cells = decode(image)
                for plane, name in enumerate(("agent", "goal", "pit")):
                    assert planes[plane][cells[name]] == 1.0
        for a, b in zip(v[0].action_mask, g[0].action_mask):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(visual.heuristic().discrete, grid.heuristic().discrete)
        actions = grid.action_spec.random_actions(len(g[0]), rng)
        visual.set_actions("GridWorld", actions), grid.set_actions("GridWorld", actions)
        visual.step(), grid.step()


def test_visual_gridworld_image_size_through_env_args_and_checked():
    env = make_env("VisualGridWorld", seed=1, num_areas=2, env_args=["image_size=20"])
    assert env.behavior_specs["GridWorld"].observation_shapes == ((20, 20, 3),) and env.n == 18
    check_env(env, steps=100)
    for bad in ("image_size=4", "image_size=84.5", "image_size=big"):
        with pytest.raises(EnvError, match="image_size must be an integer from 5"):
            make_env("VisualGridWorld", env_args=[bad])
    with pytest.raises(EnvError, match="has no argument image_sise; it takes behavior_name, image_size"):
        make_env("VisualGridWorld", env_args=["image_sise=20"])
    with pytest.raises(EnvError, match="'GridWorld' has no argument image_size; it takes behavior_name$"):
        make_env("GridWorld", env_args=["image_size=20"])


def test_builtin_env_args_reach_the_constructor():
    env = make_env("Simple1DDiscrete", env_args=["step_size=0.5"])
    assert env.step_size == 0.5
    with pytest.raises(EnvError, match="'Basic' has no argument size; it takes behavior_name"):
        make_env("Basic", env_args=["size=3"])
    with pytest.raises(EnvError, match=re.escape("step_size must be a number in (0, 2], got 'fast'")):
        make_builtin("Simple1DDiscrete", step_size="fast")


def test_visual_gridworld_as_a_gymnasium_vector_environment():
    envs = gym.make_vec("palaestra.envs.gym_vector:palaestra/VisualGridWorld-v0", num_envs=18, image_size=36)
    assert envs.single_observation_space == spaces.Box(0, 255, (36, 36, 3), np.uint8)
    obs, info = envs.reset(seed=2)
    again, _ = gym.make_vec("palaestra/VisualGridWorld-v0", num_envs=18, image_size=36).reset(seed=2)
    np.testing.assert_array_equal(obs, again)
    assert obs.dtype == np.uint8 and obs.shape == (18, 36, 36, 3) and info["action_mask"].shape == (18, 4)
    assert envs.observation_space.contains(obs)
    done = np.zeros(18, bool)
    for _ in range(40):
        obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
        assert obs.dtype == np.uint8
        if "final_obs" in info:
            for i in np.flatnonzero(info["_final_obs"]):
                assert info["final_obs"][i].dtype == np.uint8 and info["final_obs"][i].shape == (36, 36, 3)
            done |= terminated | truncated
    assert done.any()
    assert gym.make_vec("palaestra/VisualGridWorld-v0", num_envs=9).single_observation_space.shape == (84, 84, 3)
    with pytest.raises(EnvError, match="has no argument colour"):
        gym.make_vec("palaestra/VisualGridWorld-v0", num_envs=9, colour=1)


def test_new_builtins_through_the_cli(run_cli):
    result = run_cli(str(SHIPPED_CONFIG), "--env=VisualGridWorld", "--dry-run", "--env-args", "image_size=20")
    # the run gets past making the environment: a dry run prints its spec or, until image encoders
    # exist, the run stops at the check of its observations, naming their shape
    assert "(20, 20, 3)" in result.out + result.log
    result = run_cli(str(SHIPPED_CONFIG), "--env=Memory1DContinuous", "--dry-run")
    assert result.code == 0 and "continuous(1)" in result.out
    result = run_cli(str(SHIPPED_CONFIG), "--env=Hallway", "--dry-run", "--env-args", "length=4", "lenght=4")
    assert result.code == 1 and "built-in environment 'Hallway' has no argument lenght" in result.log


@pytest.mark.parametrize("argument, message", [
    ("behavior_name=5", "behavior_name must be a non-empty name, got 5 (read as int; for a name that looks like one, "
                        "quote it for YAML: --env-args \"behavior_name='NAME'\")"),
    ("behavior_name=yes", "behavior_name must be a non-empty name, got True (read as bool;"),
    ("behavior_name=[1]", "behavior_name must be a non-empty name, got [1]"),
    ("behavior_name=", "behavior_name must be a non-empty name, got ''"),
    ("seed=3", "--env-args seed=...: the built-in environments' seed is set by --seed"),
    ("num_areas=3", "--env-args num_areas=...: the built-in environments' num_areas is set by --num-areas"),
])
def test_env_args_the_run_sets_or_of_the_wrong_kind_are_refused(run_cli, argument, message):
    for flags in ([], ["--num-envs=2"]):
        result = run_cli(str(SHIPPED_CONFIG), "--env=3DBall", "--dry-run", *flags, "--env-args", argument)
        assert result.code == 1 and message in result.log and "Traceback" not in result.log, result.log


# -- Hallway -----------------------------------------------------------------------------------

def test_hallway_walks_the_corridor_and_pays_the_matching_room():
    env = Hallway(seed=3)
    assert env.behavior_name == "Hallway" and env.n == 8
    env.reset()
    colour = env.colour.copy()
    for step in range(6):  # forward to the end: only forward is available, any action moves
        decision, _ = env.get_steps("Hallway")
        np.testing.assert_array_equal(decision.action_mask[0], np.tile([False, True, True], (8, 1)))
        assert np.allclose(decision.obs[0][:, 0], step / 6) and (decision.obs[0][:, 1] == 0).all()
        env.set_actions("Hallway", discrete(np.arange(8) % 3))
        env.step()
        assert (env.get_steps("Hallway")[0].reward == np.float32(-0.01)).all()
    decision, terminal = env.get_steps("Hallway")
    assert len(terminal) == 0 and (decision.obs[0][:, :2] == 1).all()
    np.testing.assert_array_equal(decision.action_mask[0], np.tile([True, False, False], (8, 1)))
    env.set_actions("Hallway", discrete(np.r_[[FORWARD], np.full(7, RIGHT)]))  # agent 0 waits at the end
    env.step()
    decision, terminal = env.get_steps("Hallway")
    np.testing.assert_array_equal(terminal.agent_id, np.arange(1, 8))
    expected = np.where(colour[1:] == 1, 1.0, -0.1) - 0.01
    np.testing.assert_allclose(terminal.reward, expected, rtol=1e-6)
    assert not terminal.interrupted.any()
    assert decision.reward[0] == np.float32(-0.01) and decision.obs[0][0, 1] == 1  # agent 0 still there
    np.testing.assert_array_equal(decision.obs[0][1:, :2], 0)  # the others start again


def test_hallway_shows_the_colour_only_at_the_start():
    env = Hallway(seed=0, num_areas=4, show_steps=2)
    env.reset()
    step_in_episode = np.zeros(env.n, int)
    for _ in range(100):
        obs = env.get_steps("Hallway")[0].obs[0]
        shown = step_in_episode < 2
        np.testing.assert_array_equal(obs[shown, 2 + env.colour[shown]], 1.0)
        np.testing.assert_array_equal(obs[shown, 3 - env.colour[shown]], 0.0)
        np.testing.assert_array_equal(obs[~shown, 2:], 0.0)  # afterwards nothing about the colour
        env.set_actions("Hallway", env.heuristic())
        env.step()
        step_in_episode += 1
        step_in_episode[env.get_steps("Hallway")[1].agent_id] = 0


def test_hallway_heuristic_solves_it_and_a_policy_without_memory_is_at_chance():
    env = Hallway(seed=0, num_areas=8)
    returns = run_heuristic(env, 700)
    assert len(returns) >= 700 and np.mean(returns) == pytest.approx(solved_return(6)) == pytest.approx(0.93)
    # without memory: act on the current observation (at the end it no longer shows the colour)
    env.reset()
    right, episodes, total = 0, 0, 0.0
    for _ in range(1400):
        obs = env.get_steps("Hallway")[0].obs[0]
        guess = np.where(obs[:, 3] == 1, RIGHT, LEFT)  # the colour if seen now, else a fixed room
        env.set_actions("Hallway", discrete(np.where(obs[:, 1] == 1, guess, FORWARD)))
        env.step()
        terminal = env.get_steps("Hallway")[1]
        episodes += len(terminal)
        right += int((terminal.reward > 0).sum())
        total += float(terminal.reward.sum())
    assert episodes >= 1400
    assert 0.4 < right / episodes < 0.6
    assert chance_return(6) == pytest.approx(0.38)


def test_hallway_arguments():
    env = make_env("Hallway", env_args=["length=3", "show_steps=1"])
    assert env.max_episode_steps == 12 and env.solved_reward == pytest.approx(0.96)
    check_env(env, steps=100)
    with pytest.raises(EnvError, match="show_steps \\(4\\) must not exceed length \\(3\\)"):
        Hallway(length=3, show_steps=4)
    with pytest.raises(EnvError, match="length must be an integer >= 1, got 0"):
        Hallway(length=0)


def test_hallway_step_limit_interrupts_an_agent_that_waits():
    env = Hallway(seed=0, length=2)
    env.reset()
    for _ in range(env.max_episode_steps):
        env.set_actions("Hallway", discrete(np.zeros(8)))  # forward, then wait at the end
        env.step()
    terminal = env.get_steps("Hallway")[1]
    assert len(terminal) == 8 and terminal.interrupted.all()


# -- CartPole without velocities ---------------------------------------------------------------

def test_cartpole_without_velocities_observes_position_and_angle():
    env = make_env("palaestra/CartPoleNoVel-v1", seed=3, num_areas=2)
    assert env.behavior_specs["palaestra/CartPoleNoVel-v1"].observation_shapes == ((2,),)
    full = GymnasiumEnv("CartPole-v1", seed=3, num_areas=2)
    env.reset(), full.reset()
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(200):
        for a, b in zip(env.get_steps(env.behavior_name), full.get_steps("CartPole-v1")):
            np.testing.assert_array_equal(a.obs[0], b.obs[0][:, [0, 2]])
            np.testing.assert_array_equal(a.reward, b.reward)
        ended += len(env.get_steps(env.behavior_name)[1])
        actions = discrete(rng.integers(0, 2, 2))
        env.set_actions(env.behavior_name, actions), full.set_actions("CartPole-v1", actions)
        env.step(), full.step()
    assert ended > 0
    single = gym.make("palaestra.envs.cartpole_no_velocity:palaestra/CartPoleNoVel-v1")
    assert single.spec.max_episode_steps == 500 and single.observation_space.shape == (2,)
    obs, _ = single.reset(seed=0)
    assert single.observation_space.contains(obs)


def test_cartpole_without_velocities_passes_stable_baselines3_checks():
    env_checker = pytest.importorskip("stable_baselines3.common.env_checker")
    env_checker.check_env(gym.make("palaestra.envs.cartpole_no_velocity:palaestra/CartPoleNoVel-v1"), warn=False)


# -- Gymnasium image observations --------------------------------------------------------------

class Picture(gym.Env):
    """One image observation of the given space; each step's image numbers its pixels."""

    def __init__(self, space: spaces.Box) -> None:
        self.observation_space = space
        self.action_space = spaces.Discrete(2)
        self.t = 0

    def _obs(self) -> np.ndarray:
        values = (np.arange(np.prod(self.observation_space.shape)) + self.t) % 200
        if np.issubdtype(self.observation_space.dtype, np.floating):
            values = values / 200.0
        return values.reshape(self.observation_space.shape).astype(self.observation_space.dtype)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 1.0, self.t >= 3, False, {}


@pytest.mark.parametrize("space, shape, dtype, transposed", [
    (spaces.Box(0, 255, (12, 10, 3), np.uint8), (12, 10, 3), np.uint8, False),
    (spaces.Box(0, 255, (9, 7, 1), np.uint8), (9, 7, 1), np.uint8, False),
    (spaces.Box(0, 255, (3, 12, 10), np.uint8), (12, 10, 3), np.uint8, True),
    (spaces.Box(0, 255, (4, 6, 8), np.uint8), (6, 8, 4), np.uint8, True),
    (spaces.Box(0.0, 1.0, (12, 10, 3), np.float32), (12, 10, 3), np.float32, False),
    (spaces.Box(0.0, 1.0, (1, 12, 10), np.float32), (12, 10, 1), np.float32, True),
])
def test_gymnasium_images_stay_images_channel_last(space, shape, dtype, transposed):
    env = GymnasiumEnv("picture", seed=0, instances=[Picture(space), Picture(space)])
    assert env.behavior_specs["picture"].observation_shapes == (shape,)
    check_env(env, steps=20)
    env.reset()
    for t in range(5):
        decision, terminal = env.get_steps("picture")
        raw = Picture(space)
        raw.t = t % 3
        expected = raw._obs().transpose(1, 2, 0) if transposed else raw._obs()
        assert decision.obs[0].dtype == dtype
        np.testing.assert_array_equal(decision.obs[0], np.stack([expected, expected]))
        if len(terminal):
            assert terminal.obs[0].dtype == dtype and terminal.obs[0].shape == (2, *shape)
        env.set_actions("picture", discrete([0, 1]))
        env.step()


def test_uint8_planes_with_other_bounds_are_rescaled_from_their_bounds():
    # a board of 0/1 planes went to the encoders as uint8, which read it over 0-255: -1 and -0.992
    from palaestra.envs.gymnasium_env import observation_converter

    planes = np.random.default_rng(0).integers(0, 2, (8, 8, 3)).astype(np.uint8)
    shape, dtype, convert = observation_converter(spaces.Box(0, 1, (8, 8, 3), np.uint8), "board")
    assert shape == (8, 8, 3) and dtype == np.float32
    np.testing.assert_array_equal(convert(planes), planes.astype(np.float32))
    shape, dtype, convert = observation_converter(spaces.Box(10, 20, (1, 8, 8), np.uint8), "ranged")
    assert shape == (8, 8, 1) and dtype == np.float32  # (channel-first, turned around as before)
    np.testing.assert_allclose(convert(np.full((1, 8, 8), 15, np.uint8)), np.full((8, 8, 1), 0.5))
    assert observation_converter(spaces.Box(0, 255, (8, 8, 3), np.uint8), "pixels")[1] == np.uint8


def test_a_rank2_box_of_pixels_is_a_one_channel_image_and_a_board_stays_a_vector(caplog):
    gray = spaces.Box(0, 255, (12, 10), np.uint8)  # as Gymnasium's AtariPreprocessing gives (84, 84)
    env = GymnasiumEnv("gray", seed=0, instances=[Picture(gray)])
    assert env.behavior_specs["gray"].observation_shapes == ((12, 10, 1),)
    check_env(env, steps=10)
    env.reset()
    obs = env.get_steps("gray")[0].obs[0]
    assert obs.dtype == np.uint8
    np.testing.assert_array_equal(obs, Picture(gray)._obs()[None, ..., None])
    board = spaces.Box(0, 2, (8, 8), np.uint8)  # small integers, not pixels
    with caplog.at_level(logging.WARNING, logger="palaestra"):
        env = GymnasiumEnv("board", seed=0, instances=[Picture(board)])
    assert env.behavior_specs["board"].observation_shapes == ((64,),) and not caplog.text


@pytest.mark.parametrize("space, why", [
    (spaces.Box(-1.0, 1.0, (12, 10, 3), np.float32), "not uint8 nor floats in \\[0, 1\\]"),
    (spaces.Box(0, 255, (12, 10, 3), np.int64), "not uint8"),
    (spaces.Box(0, 255, (6, 6, 6), np.uint8), "neither its first nor its last size is a channel count"),
    (spaces.Box(0, 255, (3, 4, 10), np.uint8), "neither its first nor its last size"),  # too small for channel-first
])
def test_other_rank3_boxes_are_flattened_with_a_warning(space, why, caplog):
    with caplog.at_level(logging.WARNING, logger="palaestra"):
        env = GymnasiumEnv("cube", seed=0, instances=[Picture(space)])
    size = int(np.prod(space.shape))
    assert env.behavior_specs["cube"].observation_shapes == ((size,),)
    assert "is flattened to a vector, not kept as an image" in caplog.text
    assert len(__import__("re").findall(why, caplog.text)) == 1
    env.reset()
    assert env.get_steps("cube")[0].obs[0].dtype == np.float32


def test_pettingzoo_images_share_the_gymnasium_conversion():
    pytest.importorskip("pettingzoo")
    from pettingzoo import ParallelEnv

    from palaestra.envs.pettingzoo_env import PettingZooEnv

    space = spaces.Box(0, 255, (3, 8, 6), np.uint8)

    class Painters(ParallelEnv):
        metadata = {"name": "painters_v0"}
        possible_agents = ["painter_0", "painter_1"]

        def observation_space(self, agent):
            return space

        def action_space(self, agent):
            return spaces.Discrete(2)

        def reset(self, seed=None, options=None):
            self.agents, self.t = list(self.possible_agents), 0
            return {a: np.full(space.shape, i, np.uint8) for i, a in enumerate(self.agents)}, {}

        def step(self, actions):
            self.t += 1
            obs = {a: np.full(space.shape, i + 10 * self.t, np.uint8) for i, a in enumerate(self.agents)}
            done = {a: self.t >= 2 for a in self.agents}
            if self.t >= 2:
                self.agents = []
            return obs, {a: 1.0 for a in obs}, done, {a: False for a in obs}, {}

    env = PettingZooEnv(Painters(), "painters")
    assert env.behavior_specs["painter"].observation_shapes == ((8, 6, 3),)
    env.reset()
    decision, _ = env.get_steps("painter")
    assert decision.obs[0].dtype == np.uint8 and decision.obs[0].shape == (2, 8, 6, 3)
    assert (decision.obs[0][1] == 1).all()
    for _ in range(2):
        env.set_actions("painter", discrete([0, 0]))
        env.step()
    terminal = env.get_steps("painter")[1]
    assert terminal.obs[0].dtype == np.uint8 and (terminal.obs[0][1] == 21).all()
    check_env(env, steps=10)
