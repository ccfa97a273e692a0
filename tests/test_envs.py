"""Built-in environments and the Gymnasium adapter keep the protocol, are deterministic for a
seed, and their scripted heuristics reach the documented rewards."""

from __future__ import annotations

import logging
import re
import sys

import gymnasium as gym
import numpy as np
import pytest

from palaestra.envs.base import ActionSpec, ActionTuple, BehaviorSpec, EnvError
from palaestra.envs.builtin import BUILTIN_ENVS
from palaestra.envs.checker import check_env
from palaestra.envs.gymnasium_env import GymnasiumEnv
from palaestra.envs.sources import make_env


def run_heuristic(env, steps: int) -> list[float]:
    env.reset()
    running = np.zeros(env.n)
    returns: list[float] = []
    for _ in range(steps):
        for name in env.behavior_specs:  # WallJump has two behaviors, each with its own agents
            env.set_actions(name, env.heuristic_for(name) if hasattr(env, "heuristic_for") else env.heuristic())
        env.step()
        for name in env.behavior_specs:
            decision, terminal = env.get_steps(name)
            if len(terminal):
                running[terminal.agent_id] += terminal.reward
                returns += running[terminal.agent_id].tolist()
                running[terminal.agent_id] = 0.0
            running[decision.agent_id] += decision.reward
    return returns


@pytest.mark.parametrize("name", list(BUILTIN_ENVS))
def test_builtin_envs_keep_the_protocol(name):
    check_env(BUILTIN_ENVS[name](seed=3, num_areas=2), steps=300)


# Tennis has no solved reward: both teams play the heuristic, and points won and lost cancel out
# (tests/test_tennis.py checks the heuristic against a random player)
@pytest.mark.parametrize("name", [name for name in BUILTIN_ENVS if name != "Tennis"])
def test_heuristic_reaches_the_documented_reward(name):
    env = BUILTIN_ENVS[name](seed=0)
    returns = run_heuristic(env, 3000)
    assert len(returns) > 0
    assert np.mean(returns) >= 0.95 * env.solved_reward


@pytest.mark.parametrize("name", list(BUILTIN_ENVS))
def test_builtin_envs_are_deterministic_for_a_seed(name):
    def trajectory(seed):
        env = BUILTIN_ENVS[name](seed=seed, num_areas=8)
        env.reset()
        rng = np.random.default_rng(0)
        out = []
        for _ in range(50):
            d, t = env.get_steps(env.behavior_name)
            out.append(d.obs[0].copy())
            env.set_actions(env.behavior_name, env.action_spec.random_actions(len(d), rng))
            env.step()
        return np.concatenate(out)  # (WallJump's agents move between its two behaviors)

    np.testing.assert_array_equal(trajectory(7), trajectory(7))
    if name != "Basic":  # Basic has no randomness at all
        assert not np.array_equal(trajectory(7), trajectory(8))


@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("kwargs", [{}, {"step_size": 0.2, "success_reward": 1.06, "max_episode_steps": 0},
                                    {"step_size": 0.35, "max_episode_steps": 7}])
def test_simple1d_single_agent_step_matches_the_array_step(continuous, kwargs):
    # Simple1D.step takes a float path for one agent; BuiltinVectorEnv.step is the reference
    from palaestra.envs.builtin.simple1d import make
    from palaestra.envs.builtin.vector_env import BuiltinVectorEnv

    fast, slow = make(seed=5, continuous=continuous, **kwargs), make(seed=5, continuous=continuous, **kwargs)
    rng = np.random.default_rng(1)
    fast.reset()
    slow.reset()
    for i in range(3000):
        if continuous:  # wide and near the bound, so that clamping and float32 rounding both matter
            value = rng.normal(0, 0.3) if i % 3 else rng.choice([0.2, -0.2, 0.35, 0.1])
            actions = ActionTuple(continuous=np.array([[value]], np.float32), discrete=np.zeros((1, 0), np.int32))
        else:
            actions = fast.action_spec.random_actions(1, rng)
        fast.set_actions("1D", actions)
        slow.set_actions("1D", actions)
        fast.step()
        BuiltinVectorEnv.step(slow)
        for a, b in zip(fast.get_steps("1D"), slow.get_steps("1D")):
            for field in ("obs", "reward", "agent_id") + (("interrupted",) if hasattr(a, "interrupted") else ()):
                x, y = getattr(a, field), getattr(b, field)
                for u, v in zip(x, y) if field == "obs" else [(x, y)]:
                    assert u.dtype == v.dtype and u.shape == v.shape
                    np.testing.assert_array_equal(u, v)
        np.testing.assert_array_equal(fast.position, slow.position)


def test_simple1d_arguments_set_the_dynamics():
    from palaestra.envs.builtin.simple1d import Simple1D, make

    env = make(step_size=0.2, success_reward=1.06, max_episode_steps=0)
    env.reset()
    right = ActionTuple(continuous=np.zeros((1, 0), np.float32), discrete=np.ones((1, 1), np.int32))
    left = ActionTuple(continuous=np.zeros((1, 0), np.float32), discrete=np.zeros((1, 1), np.int32))
    goal = env.get_steps("1D")[0].obs[0][0, 0]
    rewards = []
    for _ in range(5):  # 0.2 per step: the end after 5 steps
        env.set_actions("1D", right if goal > 0 else left)
        env.step()
        decision, terminal = env.get_steps("1D")
        rewards.append(float(terminal.reward[0]) if len(terminal) else float(decision.reward[0]))
    assert len(terminal) == 1 and not terminal.interrupted[0]
    assert sum(rewards) == pytest.approx(1.02)  # 4 x -0.01 + 1.06
    env = make(max_episode_steps=0)
    env.reset()
    for _ in range(500):  # no step limit: dithering never ends the episode
        env.set_actions("1D", right)
        env.step()
        env.set_actions("1D", left)
        env.step()
        assert len(env.get_steps("1D")[1]) == 0
    assert Simple1D().step_size == 0.1 and Simple1D().max_episode_steps == 200  # defaults unchanged
    with pytest.raises(EnvError, match="step_size"):
        make(step_size=0)


def test_num_areas_multiplies_agents():
    assert BUILTIN_ENVS["3DBall"](num_areas=3).n == 36
    env = make_env("3DBall", num_areas=2)
    env.reset()
    assert len(env.get_steps("3DBall")[0]) == 24


def test_3dball_parameters_change_the_physics(caplog):
    def fall_time(gravity):
        env = BUILTIN_ENVS["3DBall"](seed=1)
        env.reset({"gravity": gravity})
        env.tilt[:] = 0.2
        env.pos[:] = 0.0
        for t in range(200):
            env.set_actions("3DBall", ActionTuple(np.zeros((env.n, 2), np.float32), np.zeros((env.n, 0), np.int32)))
            env.step()
            if len(env.get_steps("3DBall")[1]):
                return t
        return 200

    assert fall_time(20.0) < fall_time(5.0)
    env = BUILTIN_ENVS["3DBall"]()
    env.reset({"wind": 1.0, "mass": 2.0})
    assert "3DBall has no environment parameter(s) wind (ignored); it knows gravity, mass, scale" in caplog.text
    assert env.parameters == {"gravity": 9.81, "mass": 2.0, "scale": 1.0}


def test_basic_moves_as_ml_agents_basic_agent():
    # 0 stays (and still costs 0.01), 1 steps left, 2 steps right; position 20 has no one-hot cell
    env = BUILTIN_ENVS["Basic"](seed=0)
    env.reset()

    def step(action: int) -> tuple[int, float, bool]:
        env.set_actions("Basic", ActionTuple(discrete=np.array([[action]], np.int32)))
        env.step()
        d, t = env.get_steps("Basic")
        if len(t):
            return -1, float(t.reward[0]), True
        return int(np.argmax(d.obs[0][0])) if d.obs[0][0].any() else 20, round(float(d.reward[0]), 6), False

    assert step(0) == (10, -0.01, False)
    assert step(2) == (11, -0.01, False)
    assert step(1) == (10, -0.01, False)
    env.position[:] = 19
    assert step(2) == (20, -0.01, False)  # seen as all zeros
    assert step(2) == (20, -0.01, False)  # clamped at 20
    env.position[:] = 8
    position, reward, done = step(1)
    assert done and reward == pytest.approx(0.09)  # the small goal


def test_gridworld_masks_moves_into_walls():
    env = BUILTIN_ENVS["GridWorld"](seed=0)
    env.reset()
    env.agent[:] = [0, 0]
    (mask,) = env._masks()
    assert mask[0].tolist() == [True, False, True, False]  # up and left are walls


def test_episode_end_appears_in_terminal_and_decision_steps_with_same_id():
    env = BUILTIN_ENVS["Simple1DDiscrete"](seed=0)
    env.reset()
    for _ in range(30):
        env.set_actions("1D", env.heuristic())
        env.step()
        d, t = env.get_steps("1D")
        if len(t):
            assert t.agent_id.tolist() == d.agent_id.tolist() == [0]
            assert t.reward[0] > 1.0 and d.reward[0] == 0.0 and not t.interrupted[0]
            return
    pytest.fail("no episode ended")


def test_unknown_environment_lists_choices():
    with pytest.raises(EnvError) as err:
        make_env("3DBal")
    assert "3DBall" in str(err.value) and "Gymnasium" in str(err.value)


def test_no_env_is_the_unity_editor_and_a_path_is_a_unity_build(tmp_path):
    from palaestra.envs.sources import ENV_SOURCES

    # (the Editor and real builds are driven in tests/test_unity.py)
    assert [s.kind for s in ENV_SOURCES if s.matches(None)] == ["Unity Editor"]
    build = tmp_path / "Game.x86_64"
    build.write_text("")
    assert [s.kind for s in ENV_SOURCES if s.matches(str(tmp_path / "Game"))] == ["Unity build"]
    with pytest.raises(EnvError, match="Game.x86_64 is not executable; make it so with chmod"):
        make_env(str(build))
    with pytest.raises(EnvError, match=f"{build} is not executable; make it so with chmod"):
        make_env(str(tmp_path))  # the same when the build is found inside its folder


def test_gymnasium_cartpole_batches_copies_and_reports_truncation():
    env = GymnasiumEnv("CartPole-v1", seed=0, num_areas=3, env_kwargs={"max_episode_steps": 5})
    check_env(env, steps=40)
    env.reset()
    d, _ = env.get_steps("CartPole-v1")
    assert d.obs[0].shape == (3, 4) and env.behavior_specs["CartPole-v1"].action_spec.discrete_branches == (2,)
    interrupted = []
    for _ in range(6):
        env.set_actions("CartPole-v1", ActionTuple(np.zeros((3, 0), np.float32), np.array([[0], [1], [0]], np.int32)))
        env.step()
        interrupted += env.get_steps("CartPole-v1")[1].interrupted.tolist()
    assert interrupted == [True, True, True]  # every copy truncated at 5 steps, none truly terminal


def test_gymnasium_box_actions_are_rescaled_to_bounds():
    env = GymnasiumEnv("Pendulum-v1", seed=0)
    assert env.behavior_specs["Pendulum-v1"].action_spec.continuous_size == 1
    seen = []
    env.envs[0].step = lambda a: (seen.append(a) or (np.zeros(3), 0.0, False, False, {}))
    env.reset()
    env.set_actions("Pendulum-v1", ActionTuple(np.array([[1.0]], np.float32), np.zeros((1, 0), np.int32)))
    env.step()
    assert seen[0][0] == pytest.approx(2.0)  # Pendulum's torque bound


class _IntegerBoxActionEnv(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(0, 3, (1,), np.int64)

    def reset(self, seed=None, options=None):
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.sent = action
        return np.zeros(1, np.float32), 0.0, False, False, {}


def test_gymnasium_integer_box_actions_take_the_nearest_integer():
    env = GymnasiumEnv("ints", instances=[_IntegerBoxActionEnv()])
    env.reset()
    sent = []
    for x in (-1.0, -0.6, -0.4, 0.0, 0.3, 0.4, 1.0):  # 0 + 1.5 * (x + 1): 0, 0.6, 0.9, 1.5, 1.95, 2.1, 3
        env.set_actions("ints", ActionTuple(np.array([[x]], np.float32), np.zeros((1, 0), np.int32)))
        env.step()
        sent.append(int(env.envs[0].sent[0]))
    assert sent == [0, 1, 1, 2, 2, 2, 3]  # truncation gave 0, 0, 0, 1, 1, 2, 3


class _BadObservationEnv(gym.Env):
    action_space = gym.spaces.Discrete(2)

    def __init__(self, space, good, bad):
        self.observation_space, self.good, self.bad = space, good, bad

    def reset(self, seed=None, options=None):
        return self.good, {}

    def step(self, action):
        return self.bad, 0.0, False, False, {}


@pytest.mark.parametrize("space,good,bad,message", [
    (gym.spaces.Discrete(5), 0, 7, "returned the observation 7, outside its observation space Discrete"),
    (gym.spaces.Discrete(5, start=2), 2, 1, "returned the observation 1, outside its observation space Discrete"),
    (gym.spaces.Box(0, 255, (24, 24, 3), np.uint8), np.zeros((24, 24, 3), np.uint8), np.zeros((24, 24, 1), np.uint8),
     r"returned an image observation of shape \(24, 24, 1\); its observation space is Box"),
    (gym.spaces.Box(0.0, 1.0, (3, 16, 16), np.float32), np.zeros((3, 16, 16), np.float32),
     np.zeros((16, 3, 16), np.float32), r"returned an image observation of shape \(16, 3, 16\)"),
    (gym.spaces.Discrete(5), 0, 1.7, r"returned the observation float 1.7, which is no whole number"),
    (gym.spaces.Discrete(5), 0, float("nan"), r"returned the observation float nan, which is no whole number"),
    (gym.spaces.Box(0, 255, (24, 24, 3), np.uint8), np.zeros((24, 24, 3), np.uint8), None,
     r"returned an image observation that is no array of numbers \(NoneType None\)"),
    (gym.spaces.Box(0, 255, (8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 300).tolist(),
     r"returned an image observation with values from 300 to 300, outside its uint8 pixels' 0-255"),
    (gym.spaces.Box(0, 255, (8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), -1),
     r"returned an image observation with values from -1 to -1, outside"),
    (gym.spaces.Dict({"observation": gym.spaces.Box(-1, 1, (3,)), "action_mask": gym.spaces.MultiBinary(2)}),
     {"observation": np.zeros(3, np.float32), "action_mask": np.ones(2, np.int8)}, {"observation": np.zeros(3)},
     r"returned an observation dict \{'observation': .*; its observation space is a dict of 'observation' and "
     r"'action_mask'"),
    (gym.spaces.Dict({"observation": gym.spaces.Box(-1, 1, (3,)), "action_mask": gym.spaces.MultiBinary(2)}),
     {"observation": np.zeros(3, np.float32), "action_mask": np.ones(2, np.int8)}, np.zeros(3),
     r"returned an observation ndarray array\(\[0., 0., 0.\]\); its observation space is a dict"),
], ids=["discrete-above", "discrete-below-start", "image-channels", "image-chw", "discrete-fraction", "discrete-nan",
        "image-none", "image-overflow", "image-negative", "masked-without-mask", "masked-plain-array"])
def test_gymnasium_observations_outside_their_space_are_a_clear_error(space, good, bad, message):
    env = GymnasiumEnv("bad", instances=[_BadObservationEnv(space, good, bad)])
    env.reset()
    env.set_actions("bad", ActionTuple(np.zeros((1, 0), np.float32), np.zeros((1, 1), np.int32)))
    with pytest.raises(EnvError, match="Gymnasium environment 'bad' " + message):
        env.step()


class _MultiDiscreteEnv(gym.Env):
    observation_space = gym.spaces.Discrete(4)
    action_space = gym.spaces.MultiDiscrete([3, 2])

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return 1, {}

    def step(self, action):
        assert action.shape == (2,)
        return int(action[0]), float(action[1]), False, False, {}


def test_check_env_refuses_what_the_run_refuses_and_checks_at_least_one_step():
    from palaestra.envs.builtin.simple1d import Simple1D

    class NoAction(Simple1D):
        @property
        def behavior_specs(self):
            return {"B": BehaviorSpec(((1,),), ActionSpec(0, ()))}

    with pytest.raises(EnvError, match="the environment gives behavior 'B' no action"):
        check_env(NoAction())
    for steps in (0, -5):
        with pytest.raises(ValueError, match=f"check_env: steps must be a whole number >= 1; got {steps}"):
            check_env(Simple1D(), steps=steps)


def test_check_env_refuses_integer_masks_and_agent_ids_that_are_not_integers():
    import dataclasses

    from palaestra.envs.builtin.gridworld import GridWorld

    class IntMasks(GridWorld):
        def get_steps(self, behavior):
            decision, terminal = super().get_steps(behavior)
            return dataclasses.replace(decision, action_mask=[m.astype(np.int8) for m in decision.action_mask]), terminal

    class FloatIds(GridWorld):
        def get_steps(self, behavior):
            decision, terminal = super().get_steps(behavior)
            return dataclasses.replace(decision, agent_id=decision.agent_id + 0.5), terminal

    with pytest.raises(EnvError, match=re.escape("the mask of branch 0 must be a bool numpy array (True: the action "
                                                 "is unavailable), got an array of shape (9, 4) and dtype int8")):
        check_env(IntMasks(seed=0))
    with pytest.raises(EnvError, match=re.escape("agent_id must be a 1-D numpy array of integers, got an array of "
                                                 "shape (9,) and dtype float64")):
        check_env(FloatIds(seed=0))


def test_check_env_refuses_a_mask_that_is_no_list_even_in_a_step_without_agents():
    # a step of no agents skips the shape checks: an array's truth value was a bare ValueError there
    from palaestra.envs.base import ActionSpec, BehaviorSpec, DecisionSteps, TerminalSteps

    class OneArrayMask:
        behavior_specs = {"B": BehaviorSpec(((4,),), ActionSpec(0, (3,)))}

        def __init__(self, n):
            self.n = n

        def reset(self, parameters=None):
            pass

        step = close = reset

        def set_actions(self, behavior, actions):
            pass

        def get_steps(self, behavior):
            n = self.n
            return (DecisionSteps([np.zeros((n, 4), np.float32)], np.zeros(n, np.float32), np.arange(n),
                                  np.zeros((n, 3), bool)), TerminalSteps.empty(self.behavior_specs["B"]))

    for n in (2, 0):
        with pytest.raises(EnvError, match=re.escape(f"action_mask must be a list of 1 arrays, one per discrete branch "
                                                     f"(or None); got an array of shape ({n}, 3) and dtype bool")):
            check_env(OneArrayMask(n), steps=2)


BAD_STEPS_MODULE = """
import dataclasses

import numpy as np

from palaestra.envs.builtin.simple1d import Simple1D


class Misbehaving(Simple1D):
    kind = ""

    def get_steps(self, behavior):
        decision, terminal = super().get_steps(behavior)
        if self.kind == "wide_obs":
            return dataclasses.replace(decision, obs=[np.zeros((len(decision), 3), np.float32)]), terminal
        if self.kind == "list_obs":
            return dataclasses.replace(decision, obs=[o.tolist() for o in decision.obs]), terminal
        if self.kind == "none":
            return None
        if self.kind == "same_ids":
            return dataclasses.replace(decision, agent_id=np.zeros_like(decision.agent_id)), terminal
        if self.kind == "nan_reward":
            return dataclasses.replace(decision, reward=np.full_like(decision.reward, np.nan)), terminal
        if self.kind == "loose":  # what trained before the checks: lists, integers, empty halves of any shape
            decision = dataclasses.replace(decision, obs=[o.astype(np.int64).tolist() for o in decision.obs],
                                           agent_id=decision.agent_id.astype(np.int32))
            terminal = dataclasses.replace(terminal, obs=[np.array([])] * len(terminal.obs), reward=np.array([]),
                                           agent_id=np.array([]), interrupted=np.array([])) if not len(terminal) \
                else terminal
        if self.kind == "int_flags":  # integer terminal flags, rewards and ids as lists, observations as lists
            terminal = dataclasses.replace(terminal, interrupted=terminal.interrupted.astype(np.int64),
                                           reward=terminal.reward.tolist(), agent_id=terminal.agent_id.tolist(),
                                           obs=[o.tolist() for o in terminal.obs])
            decision = dataclasses.replace(decision, reward=decision.reward.tolist())
        if self.kind == "text_obs":
            decision = dataclasses.replace(decision, obs=[np.full(o.shape, "x") for o in decision.obs])
        if self.kind == "text_flags" and len(terminal):
            terminal = dataclasses.replace(terminal, interrupted=np.array([str(f) for f in terminal.interrupted]))
        if self.kind == "inf_ids":
            decision = dataclasses.replace(decision, agent_id=np.full(len(decision), np.inf))
        return decision, terminal


class SpecsRaise(Simple1D):
    @property
    def behavior_specs(self):
        raise KeyError("the scene's config")


class NoClose:
    def __init__(self):
        self.env = Simple1D()
        self.behavior_specs = self.env.behavior_specs
        self.reset, self.get_steps, self.set_actions, self.step = (self.env.reset, self.env.get_steps,
                                                                   self.env.set_actions, self.env.step)


def make(kind, num_areas=4):
    env = Misbehaving(num_areas=num_areas)
    env.kind = kind
    return env


def specs_raise():
    return SpecsRaise()


def no_close():
    return NoClose()
"""


@pytest.fixture
def bad_steps(tmp_path, monkeypatch):
    import sys

    (tmp_path / "bad_steps.py").write_text(BAD_STEPS_MODULE)
    monkeypatch.chdir(tmp_path)
    yield sys.modules.get
    sys.modules.pop("bad_steps", None)


@pytest.mark.parametrize("kind,message", [
    ("wide_obs", "decision steps: observation 0 has shape (4, 3), expected (4, 1) (4 agents, each the behavior "
                 "spec's (1,))"),
    ("none", "get_steps must return (DecisionSteps, TerminalSteps), got a NoneType"),
    ("same_ids", "decision steps: agent ids repeat within one step: [0, 0, 0, 0]"),
])
def test_a_factory_environment_s_steps_are_checked_as_the_run_takes_them(bad_steps, kind, message):
    # the run's own check (envs/checker.py's CheckedEnv), and check_env's, say the same
    env = make_env("bad_steps:make", num_areas=4, env_args=[f"kind={kind}"])
    env.reset()
    with pytest.raises(EnvError, match=re.escape("--env=bad_steps:make: behavior '1D': get_steps")) as e:
        env.get_steps("1D")
    assert message in str(e.value)
    with pytest.raises(EnvError, match=re.escape(message)):
        check_env(bad_steps("bad_steps").make(kind))


def test_what_the_run_converts_is_taken_and_check_env_asks_for_the_protocol_s_arrays(bad_steps):
    env = make_env("bad_steps:make", num_areas=4, env_args=["kind=loose"])
    env.reset()
    for _ in range(30):  # every step's halves pass the run's check, empty terminal ones included
        decision, _ = env.get_steps("1D")
        env.set_actions("1D", env.behavior_specs["1D"].action_spec.random_actions(len(decision),
                                                                                  np.random.default_rng(0)))
        env.step()
    module = bad_steps("bad_steps")
    with pytest.raises(EnvError, match=re.escape("observation 0 must be a numpy array of shape (4, 1); got a list")):
        check_env(module.make("list_obs"))


def test_the_run_takes_integer_flags_and_lists_as_the_protocol_s_types(bad_steps):
    # an integer flag's ~ is -1 or -2: taken as it came, a true terminal (0) was bootstrapped as if cut short
    env = make_env("bad_steps:make", num_areas=4, env_args=["kind=int_flags"])
    env.reset()
    ended = 0
    for _ in range(60):
        decision, terminal = env.get_steps("1D")
        assert decision.reward.dtype == np.float32
        if len(terminal):
            ended += len(terminal)
            assert terminal.interrupted.dtype == bool and terminal.reward.dtype == np.float32
            assert terminal.agent_id.dtype.kind == "i" and isinstance(terminal.obs[0], np.ndarray)
            assert (~terminal.interrupted).all()  # Simple1D's episodes end at the goal: true terminals
        env.set_actions("1D", env.behavior_specs["1D"].action_spec.random_actions(len(decision),
                                                                                  np.random.default_rng(0)))
        env.step()
    assert ended > 0
    env = make_env("bad_steps:make", num_areas=2, env_args=["kind=text_obs"])
    env.reset()
    with pytest.raises(EnvError, match=re.escape("decision steps: observation 0 must hold numbers, got an array of "
                                                 "shape (2, 1) and dtype <U1")):
        env.get_steps("1D")
    env = make_env("bad_steps:make", num_areas=1, env_args=["kind=inf_ids"])
    env.reset()
    with pytest.raises(EnvError, match=re.escape("decision steps: agent_id must hold integers, got an array of shape "
                                                 "(1,) and dtype float64")):
        env.get_steps("1D")
    env = make_env("bad_steps:make", num_areas=4, env_args=["kind=text_flags"])
    env.reset()
    with pytest.raises(EnvError, match=re.escape("terminal steps: interrupted must hold True or False, got an array")):
        for _ in range(60):
            decision, _ = env.get_steps("1D")
            env.set_actions("1D", env.behavior_specs["1D"].action_spec.random_actions(len(decision),
                                                                                      np.random.default_rng(0)))
            env.step()


def test_the_checked_environment_is_the_user_s_own_for_attributes_copies_and_isinstance(bad_steps):
    import copy
    import pickle

    env = make_env("bad_steps:make", num_areas=2, env_args=["kind=ok"])
    module = bad_steps("bad_steps")
    assert isinstance(env, module.Misbehaving) and env.__class__ is module.Misbehaving
    env.kind = "wide_obs"  # written to the environment itself
    assert object.__getattribute__(env, "_env").kind == "wide_obs"
    for clone in (copy.copy(env), copy.deepcopy(env), pickle.loads(pickle.dumps(env))):
        clone.reset()
        with pytest.raises(EnvError, match="observation 0 has shape"):  # still checked
            clone.get_steps("1D")


def test_check_env_names_a_nan_reward_and_a_missing_close(bad_steps):
    make_env("bad_steps:make", env_args=["kind=nan_reward"])  # (imports the module; values are checked later)
    module = bad_steps("bad_steps")
    with pytest.raises(EnvError, match=re.escape("decision steps: a NaN or infinite reward for agent(s) [0, 1, 2, 3]")):
        check_env(module.make("nan_reward"))
    with pytest.raises(TypeError, match="a NoClose lacks close"):
        check_env(module.no_close())
    with pytest.raises(EnvError, match="lacks close"):
        make_env("bad_steps:no_close")


def test_a_behavior_specs_property_that_raises_is_reported_with_what_it_raised(bad_steps):
    message = "reading the environment's behavior_specs raised KeyError: \"the scene's config\""
    with pytest.raises(EnvError, match=re.escape(f"--env=bad_steps:specs_raise: {message}")):
        make_env("bad_steps:specs_raise")
    with pytest.raises(EnvError, match=re.escape(message)):
        check_env(bad_steps("bad_steps").specs_raise())


@pytest.mark.parametrize("num_envs", ["1", "2"])
def test_a_training_run_stops_with_a_message_on_a_factory_environment_s_wrong_shapes(run_cli, workdir, bad_steps,
                                                                                      num_envs):
    (workdir / "config.yaml").write_text("1D:\n  batch_size: 16\n  buffer_size: 64\n  max_steps: 500\n")
    result = run_cli("config.yaml", "--env=bad_steps:make", "--cpu", f"--num-envs={num_envs}", "--run-id=wide",
                     "--env-args", "kind=wide_obs")
    assert result.code == 1
    assert "observation 0 has shape (1, 3), expected (1, 1) (1 agent, each" in result.log, result.log
    assert "Traceback" not in result.log


@pytest.mark.parametrize("call,kind,message", [
    (lambda: make_env(5), EnvError, "make_env: name must be an environment name or None"),
    (lambda: make_env("3DBall", num_areas=1.5), EnvError, "make_env: num_areas must be a whole number >= 1; got 1.5"),
    (lambda: make_env("3DBall", seed="3"), EnvError, "make_env: seed must be a whole number; got '3'"),
    (lambda: make_env("3DBall", env_args="step_size=0.2"), EnvError,
     "make_env: env_args must be a list of 'key=value' strings, as --env-args takes them (['step_size=0.2']); "
     "got 'step_size=0.2'"),
    (lambda: check_env(object()), TypeError, "check_env: env must be a Palaestra environment"),
])
def test_the_python_api_names_a_wrong_argument(call, kind, message):
    with pytest.raises(kind, match=re.escape(message)):
        call()


def test_gymnasium_multidiscrete_and_discrete_observations():
    gym.register("PalaestraTestMultiDiscrete-v0", entry_point=_MultiDiscreteEnv)
    try:
        env = make_env("PalaestraTestMultiDiscrete-v0", num_areas=2)
        spec = env.behavior_specs["PalaestraTestMultiDiscrete-v0"]
        assert spec.observation_shapes == ((4,),) and spec.action_spec.discrete_branches == (3, 2)
        check_env(env, steps=20)
    finally:
        gym.registry.pop("PalaestraTestMultiDiscrete-v0")


class _MultiBinaryEnv(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,))
    action_space = gym.spaces.MultiBinary((2, 2))

    def __init__(self):
        self.actions = []

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        assert self.action_space.contains(action), action
        self.actions.append(action.copy())
        return np.zeros(2, np.float32), float(action.sum()), False, False, {}


def test_gymnasium_multibinary_actions_are_a_branch_of_two_per_entry():
    env = GymnasiumEnv("binary", seed=0, instances=[_MultiBinaryEnv()])
    assert env.behavior_specs["binary"].action_spec.discrete_branches == (2, 2, 2, 2)
    check_env(env, steps=5)
    env.reset()
    env.set_actions("binary", ActionTuple(discrete=np.array([[1, 0, 0, 1]], np.int32)))
    env.step()
    np.testing.assert_array_equal(env.envs[0].actions[-1], [[1, 0], [0, 1]])


FACTORY_MODULE = """
import gymnasium as gym
from palaestra.envs.builtin.simple1d import Simple1D


def protocol_env(seed, num_areas, step_size=0.1):
    env = Simple1D(seed=seed, num_areas=num_areas, behavior_name="Line")
    env.step_size = step_size
    return env


def gym_env(max_episode_steps=500):
    return gym.make("CartPole-v1", max_episode_steps=max_episode_steps)


def plain_gym(seed):
    from gymnasium.envs.classic_control import CartPoleEnv

    return CartPoleEnv()  # made without gym.make: no registered id


def broken(**kwargs):
    raise RuntimeError("no license for this simulator")


def not_an_env():
    return 42


def fixed():
    return Simple1D()


def with_engine(engine):
    env = Simple1D()
    env.engine = engine
    return env


def with_port(port):
    env = Simple1D()
    env.port = port
    return env

NOT_CALLABLE = 3


def with_seed(seed, offset=0):
    env = Simple1D(seed=seed + offset)
    return env


def tic_tac_toe():
    from pettingzoo.classic import tictactoe_v3

    return tictactoe_v3.env()


if "PalaestraFactoryRegistered-v0" not in gym.registry:
    gym.register("PalaestraFactoryRegistered-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv",
                 max_episode_steps=50)
"""


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "my_factories.py").write_text(FACTORY_MODULE)
    monkeypatch.chdir(tmp_path)  # factories are imported from the working directory
    yield "my_factories"
    import sys

    sys.modules.pop("my_factories", None)


def test_python_factory_returning_a_protocol_environment(factory_module):
    env = make_env(f"{factory_module}:protocol_env", seed=3, num_areas=2, env_args=["step_size=0.5"])
    assert list(env.behavior_specs) == ["Line"] and env.step_size == 0.5
    check_env(env)


def test_python_factory_returning_gymnasium_environments(factory_module):
    env = make_env(f"{factory_module}:gym_env", num_areas=3, env_args=["max_episode_steps=7"])
    assert list(env.behavior_specs) == ["CartPole-v1"]
    env.reset()
    assert len(env.get_steps("CartPole-v1")[0]) == 3  # three instances stepped as one behavior
    assert all(e.spec.max_episode_steps == 7 for e in env.envs)  # --env-args reached the factory
    unnamed = make_env(f"{factory_module}:plain_gym")
    assert list(unnamed.behavior_specs) == ["plain_gym"]  # named after the callable


@pytest.mark.parametrize("target,message", [
    ("no_such_module:make", "cannot import module 'no_such_module'"),
    ("{m}:missing", "has no attribute 'missing'"),
    ("{m}:NOT_CALLABLE", "'NOT_CALLABLE' is a int, not a callable"),
    ("{m}:broken", "the factory raised RuntimeError: no license for this simulator"),
    ("{m}:not_an_env", "returned a int, which is neither a gymnasium.Env, a Gymnasium vector environment, a PettingZoo ParallelEnv nor"),
])
def test_python_factory_errors_are_clear(factory_module, target, message):
    with pytest.raises(EnvError, match=re.escape(message)):
        make_env(target.format(m=factory_module))


BAD_SPECS_MODULE = """
from palaestra.envs.base import ActionSpec, BehaviorSpec
from palaestra.envs.builtin.simple1d import Simple1D

SPECS = {
    "empty": {},
    "string": {"x": "str"},
    "number_name": {3: BehaviorSpec(((1,),), ActionSpec(1))},
    "blank_name": {" ": BehaviorSpec(((1,),), ActionSpec(1))},
    "no_observation": {"B": BehaviorSpec((), ActionSpec(2))},
    "float_size": {"B": BehaviorSpec(((3.5,),), ActionSpec(2))},
    "negative_actions": {"B": BehaviorSpec(((1,),), ActionSpec(-1))},
    "empty_branch": {"B": BehaviorSpec(((1,),), ActionSpec(0, (0,)))},
    "no_action": {"B": BehaviorSpec(((1,),), ActionSpec(0, ()))},
}

CLOSED = []

class Declared(Simple1D):
    declared = {}

    @property
    def behavior_specs(self):
        return self.declared

    def close(self):
        CLOSED.append(self)

def make(kind):
    env = Declared()
    env.declared = SPECS[kind]
    return env
"""


@pytest.mark.parametrize("kind,message", [
    ("empty", "has no behavior when it is made (behavior_specs is empty)"),
    ("string", "gives behavior 'x' a str, not a BehaviorSpec"),
    ("number_name", "has a behavior named 3: behavior names are non-empty strings"),
    ("blank_name", "has a behavior named ' ': behavior names are non-empty strings, not only spaces"),
    ("no_observation", "gives behavior 'B' no observation"),
    ("float_size", "gives behavior 'B' observation 0 the shape (3.5,)"),
    ("negative_actions", "continuous_size is a whole number of at least 0"),
    ("empty_branch", "each discrete branch a whole number of at least 1"),
    ("no_action", "gives behavior 'B' no action"),
])
def test_a_protocol_environment_that_declares_unusable_behaviors_is_refused_by_name(tmp_path, monkeypatch,
                                                                                    kind, message):
    import sys

    (tmp_path / "bad_specs.py").write_text(BAD_SPECS_MODULE)
    monkeypatch.chdir(tmp_path)
    try:
        with pytest.raises(EnvError, match=re.escape(message)) as refused:
            make_env("bad_specs:make", env_args=[f"kind={kind}"])
        assert str(refused.value).startswith("--env=bad_specs:make: the environment ")
        assert len(sys.modules["bad_specs"].CLOSED) == 1  # whatever it started is closed
    finally:
        sys.modules.pop("bad_specs", None)


def test_gymnasium_module_colon_id_imports_the_module_that_registers_the_id(factory_module):
    # Gymnasium's own form, as gymnasium.make reads it: "module:EnvId-v0"
    try:
        env = make_env(f"{factory_module}:PalaestraFactoryRegistered-v0", seed=2, num_areas=2)
        assert list(env.behavior_specs) == ["PalaestraFactoryRegistered-v0"] and len(env.envs) == 2
        check_env(env)
        with pytest.raises(EnvError, match=re.escape("Did you mean PalaestraFactoryRegistered-v0")):  # (first)
            make_env(f"{factory_module}:PalaestraFactoryRegistred-v0")
    finally:
        gym.registry.pop("PalaestraFactoryRegistered-v0", None)
    with pytest.raises(EnvError, match=re.escape(f"no Gymnasium id 'Unregistered-v0' is registered after importing "
                                                 f"'{factory_module}', and the module has no attribute of that name")):
        make_env(f"{factory_module}:Unregistered-v0")


@pytest.mark.parametrize("target,args,message", [
    ("{m}:with_seed", ["seed=3"], r"--env-args seed=\.\.\.: the factory's seed is set by --seed"),
    ("{m}:protocol_env", ["num_areas=2"], r"--env-args num_areas=\.\.\.: the factory's num_areas is set by --num-areas"),
    ("{m}:tic_tac_toe", [], "returned a PettingZoo AEC environment .*aec_to_parallel"),
])
def test_python_factory_arguments_and_environments_it_cannot_take(factory_module, target, args, message):
    if "tic_tac_toe" in target:
        pytest.importorskip("pettingzoo.classic")
    with pytest.raises(EnvError, match=message):
        make_env(target.format(m=factory_module), env_args=args)


def test_python_factory_module_that_fails_to_import(tmp_path, monkeypatch):
    (tmp_path / "bad_module.py").write_text("raise RuntimeError('missing licence file')\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EnvError, match="importing module 'bad_module' failed: RuntimeError: missing licence file"):
        make_env("bad_module:make")


class _NotInstalled:
    """A meta path finder that makes ``package`` missing, as where it is not installed."""

    def __init__(self, package: str) -> None:
        self.package = package

    def find_spec(self, name, path=None, target=None):
        if name == self.package:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


@pytest.mark.parametrize("target, missing", [("pettingzoo:mpe2.simple_spread_v3", "mpe2"),
                                             ("users_pz_env:make", "pettingzoo")])
def test_a_missing_package_of_an_extra_is_named_with_the_install_command(tmp_path, monkeypatch, target, missing):
    for name in [m for m in sys.modules if m == missing or m.startswith(missing + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_NotInstalled(missing), *sys.meta_path])
    (tmp_path / "users_pz_env.py").write_text("import pettingzoo\n")
    monkeypatch.chdir(tmp_path)
    said = f"; {missing} comes with Palaestra's pettingzoo extra: pip install -e \".[pettingzoo]\" in Palaestra's folder"
    with pytest.raises(EnvError, match=re.escape(said)) as error:
        make_env(target)
    if target.startswith("users"):  # the import inside the user's module: its traceback stays for --debug
        assert isinstance(error.value.__cause__, ModuleNotFoundError)


def test_a_missing_module_of_an_installed_extra_gets_no_install_advice():
    pytest.importorskip("mpe2")
    with pytest.raises(EnvError, match="No module named 'mpe2.simple_adversary_v9'") as error:
        make_env("pettingzoo:mpe2.simple_adversary_v9")
    assert "pip install" not in str(error.value)


def test_python_factory_receives_the_engine_settings(factory_module):
    from palaestra.envs.base import EngineConfig

    engine = EngineConfig(width=320, height=240, quality_level=1, time_scale=5.0, target_frame_rate=30,
                          no_graphics=True)
    assert make_env(f"{factory_module}:with_engine", engine=engine).engine == engine


def test_python_factory_receives_its_port(factory_module):
    assert make_env(f"{factory_module}:with_port").port == 5005
    assert make_env(f"{factory_module}:with_port", port=6000).port == 6000


def test_python_factory_without_num_areas_rejects_more_areas(factory_module):
    with pytest.raises(EnvError, match="needs a factory that takes a num_areas argument"):
        make_env(f"{factory_module}:fixed", num_areas=2)


def test_builtin_environments_as_gymnasium_vector_environments():
    envs = gym.make_vec("palaestra.envs.gym_vector:palaestra/3DBall-v0", num_envs=24)
    assert envs.num_envs == 24 and envs.single_action_space.shape == (2,)
    obs, _ = envs.reset(seed=3)
    again, _ = gym.make_vec("palaestra/3DBall-v0", num_envs=24).reset(seed=3)
    np.testing.assert_array_equal(obs, again)  # seeded
    first, second = (gym.make_vec("palaestra/3DBall-v0", num_envs=24).reset()[0] for _ in range(2))
    assert not np.array_equal(first, second)  # unseeded: drawn from the system, as Gymnasium's environments
    assert obs.shape == (24, 8)
    # the heuristic keeps balls up; random actions drop them: episodes end as terminations
    ended = np.zeros(24, bool)
    for _ in range(60):
        obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
        assert obs.shape == (24, 8) and reward.shape == (24,)
        if (terminated | truncated).any():
            done = terminated | truncated
            assert info["_final_obs"].tolist() == done.tolist()
            assert info["_final_info"].tolist() == done.tolist() and info["final_info"] == {}
            assert all(info["final_obs"][i].shape == (8,) for i in np.flatnonzero(done))
            assert (reward[terminated] == -1.0).all()  # 3DBall: -1 when the ball falls
            ended |= done
    assert ended.any()
    grid = gym.make_vec("palaestra/GridWorld-v0", num_envs=9)
    _, info = grid.reset(seed=0)
    assert info["action_mask"].shape == (9, 4) and info["action_mask"].any(axis=1).all()
    with pytest.raises(EnvError, match="multiple of 12"):
        gym.make_vec("palaestra/3DBall-v0", num_envs=5)
    assert list(make_env("palaestra/Basic-v0").behavior_specs) == ["Basic"]  # the CLI maps it to the built-in
    assert list(make_env("palaestra.envs.gym_vector:palaestra/Basic-v0").behavior_specs) == ["Basic"]  # as docs write it


def test_a_registration_for_make_vec_only_says_what_it_lacks():
    gym.register("PalaestraVectorOnly-v0", vector_entry_point="palaestra.envs.gym_vector:BuiltinGymVectorEnv")
    try:
        with pytest.raises(EnvError, match="'PalaestraVectorOnly-v0' is registered only as a vector environment"):
            make_env("PalaestraVectorOnly-v0")
    finally:
        gym.registry.pop("PalaestraVectorOnly-v0")


@pytest.mark.parametrize("name, actions, message", [
    ("3DBall", np.full((12, 2), np.nan, np.float32), "NaN or infinite continuous actions for the agents in rows"),
    ("3DBall", np.zeros(24, np.float32), "step takes actions of shape (12, 2)"),
    ("Basic", np.full(1, 7), "discrete action 7 in branch 0, which has 3 actions"),
    ("Basic", np.full(1, -1), "discrete action -1 in branch 0"),
    ("Basic", np.full(1, 0.5), "discrete actions must be whole numbers"),
])
def test_the_gymnasium_vector_registration_refuses_actions_outside_its_space(name, actions, message):
    # as Gymnasium's own environments do; a NaN would have become the ball's state silently
    envs = gym.make_vec(f"palaestra.envs.gym_vector:palaestra/{name}-v0", num_envs=12 if name == "3DBall" else 1)
    envs.reset(seed=0)
    with pytest.raises(EnvError, match=re.escape(message)):
        envs.step(actions)
    envs.step(envs.action_space.sample())  # (still usable)


PZ_MODULE = """
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class Guess(ParallelEnv):
    '''Two behaviors: each "seer_<i>" sees a sign and is rewarded for naming it (2 actions);
    "late_0" joins from the second step and leaves after the fourth (it finishes early).'''

    metadata = {"name": "guess_v0"}

    def __init__(self, length=8):
        self.possible_agents = ["seer_0", "seer_1", "late_0"]
        self.length = length
        self.rng = np.random.default_rng(0)

    def observation_space(self, agent):
        return spaces.Box(-1.0, 1.0, (1,), np.float32)

    def action_space(self, agent):
        return spaces.Discrete(2)

    def _obs(self, agents):
        self.sign = {a: float(self.rng.choice([-1.0, 1.0])) for a in agents}
        return {a: np.array([self.sign[a]], np.float32) for a in agents}

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.t = 0
        self.agents = ["seer_0", "seer_1"]
        return self._obs(self.agents), {a: {} for a in self.agents}

    def step(self, actions):
        rewards = {a: float((actions[a] == 1) == (self.sign[a] > 0)) for a in self.agents}
        self.t += 1
        terminated = {a: a == "late_0" and self.t == 4 for a in self.agents}
        truncated = {a: self.t >= self.length for a in self.agents}
        acted = list(self.agents)
        self.agents = [a for a in self.agents if not (terminated[a] or truncated[a])]
        if self.t == 1:
            self.agents.append("late_0")
        # observations of everyone who acted (final ones for those who ended) and of joiners
        obs = self._obs(list(dict.fromkeys(acted + self.agents)))
        return obs, rewards, terminated, truncated, {a: {} for a in self.agents}


def make(length=8):
    return Guess(length)
"""


@pytest.fixture
def pz_module(tmp_path, monkeypatch):
    pytest.importorskip("pettingzoo")
    (tmp_path / "guess_env.py").write_text(PZ_MODULE)
    monkeypatch.chdir(tmp_path)
    yield "guess_env"
    import sys

    sys.modules.pop("guess_env", None)


PZ_BROKEN = """

class Broken(Guess):
    def __init__(self, fault):
        super().__init__()
        self.fault = fault

    def reset(self, seed=None, options=None):
        if self.fault == "reset raises":
            raise RuntimeError("reset boom")
        obs, infos = super().reset(seed, options)
        return obs if self.fault == "bare reset" else (obs, infos)

    def step(self, actions):
        if self.fault == "step raises":
            raise RuntimeError("step boom")
        obs, rewards, terminated, truncated, infos = super().step(actions)
        if self.fault == "reward array":
            rewards = {a: np.array([r, r]) for a, r in rewards.items()}
        if self.fault == "reward None":
            rewards = {a: None for a in rewards}
        if self.fault == "flag array":
            terminated = {a: np.array([False, True]) for a in terminated}
        if self.fault == "silent end":  # every agent gone, none of them ended
            self.agents = []
            terminated, truncated = {a: False for a in terminated}, {a: False for a in truncated}
        return obs, rewards, terminated, truncated, infos


def broken(fault):
    return Broken(fault.replace("_", " "))
"""


@pytest.mark.parametrize("fault, message", [
    ("reset_raises", "PettingZoo environment 'guess_env' raised RuntimeError in reset: reset boom"),
    ("bare_reset", "PettingZoo environment 'guess_env': reset returned a dict, not the parallel API's "
                   "(observations, infos), each a dict keyed by agent"),
    ("step_raises", "PettingZoo environment 'guess_env' raised RuntimeError in step: step boom"),
    ("reward_array", "step returned the reward array([0., 0.]) for agent 'seer_0'; expected a number"),
    ("reward_None", "step returned the reward None for agent 'seer_0'; expected a number"),
    ("flag_array", "step returned the termination array([False,  True]) for agent 'seer_0'; expected True or False"),
    ("silent_end", "step() left no live agents, but ['seer_0', 'seer_1'] acted and have neither a termination "
                   "nor a truncation; PettingZoo's parallel API ends every agent's episode with one of them"),
])
def test_a_pettingzoo_environment_that_breaks_its_api_is_named_with_what_it_did(tmp_path, monkeypatch, fault,
                                                                               message):
    pytest.importorskip("pettingzoo")
    (tmp_path / "guess_env.py").write_text(PZ_MODULE + PZ_BROKEN)
    monkeypatch.chdir(tmp_path)
    import sys
    try:
        env = make_env("guess_env:broken", env_args=[f"fault={fault}"])
        with pytest.raises(EnvError) as error:
            env.reset()
            for behavior, spec in env.behavior_specs.items():
                env.set_actions(behavior, spec.action_spec.empty_actions(len(env.get_steps(behavior)[0])))
            env.step()
    finally:
        sys.modules.pop("guess_env", None)
    assert message in str(error.value)


def _two_agents(observation_spaces):
    from pettingzoo import ParallelEnv

    class TwoAgents(ParallelEnv):
        possible_agents = ["a_0", "a_1"]

        def observation_space(self, agent):
            return observation_spaces[int(agent[-1])]

        def action_space(self, agent):
            return gym.spaces.Discrete(2)
    return TwoAgents()


def test_pettingzoo_agents_of_one_behavior_must_share_spaces_compared_as_spaces():
    pytest.importorskip("pettingzoo")
    from palaestra.envs.pettingzoo_env import PettingZooEnv
    high = np.ones(1500, np.float32)
    high[0] = 3.0  # (uniform bounds print as one number)
    other = high.copy()
    other[1000] = 2.0  # deep inside: both Boxes print alike
    spaces = [gym.spaces.Box(-1.0, high), gym.spaces.Box(-1.0, other)]
    assert repr(spaces[0]) == repr(spaces[1])
    with pytest.raises(EnvError, match=re.escape("behavior 'a' (['a_0', 'a_1']) have different observation or action "
                                                 "spaces (a_0 and a_1)")):
        PettingZooEnv(_two_agents(spaces), "pz")
    dicts = [gym.spaces.Dict({"x": gym.spaces.Discrete(2)})] * 2
    with pytest.raises(EnvError, match=re.escape("PettingZoo environment 'pz (a)' has an observation space of type "
                                                 "Dict; supported: Box, Discrete, and a Dict of 'observation' and "
                                                 "'action_mask' (flatten any other with SuperSuit's flatten_v0")):
        PettingZooEnv(_two_agents(dicts), "pz")


def test_pettingzoo_agents_named_by_ints_are_behaviors_named_by_their_str():
    pytest.importorskip("pettingzoo")
    from palaestra.envs.pettingzoo_env import PettingZooEnv

    pz = _two_agents([gym.spaces.Box(-1.0, 1.0, (2,))] * 2)
    pz.possible_agents = [0, 1]  # (PettingZoo's AgentID is any hashable)
    pz.observation_space = lambda agent: gym.spaces.Box(-1.0, 1.0, (2,))
    env = PettingZooEnv(pz, "pz")
    assert sorted(env.behavior_specs) == ["0", "1"]


REFUSED_FACTORY = """
import gymnasium as gym
CLOSED = []

class Refused(gym.Env):
    observation_space = gym.spaces.Box(0, 1, (2,))
    action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3)))  # (no such action here)

    def close(self):
        CLOSED.append(self)

def make(seed=0):
    return Refused()
"""


def test_every_copy_of_a_refused_factory_environment_is_closed(tmp_path, monkeypatch):
    import sys

    (tmp_path / "refused_env.py").write_text(REFUSED_FACTORY)
    monkeypatch.chdir(tmp_path)
    try:
        with pytest.raises(EnvError, match="has an action space of type Tuple"):
            make_env("refused_env:make", num_areas=3)
        assert len(sys.modules["refused_env"].CLOSED) == 3  # (a renderer or a process of each is let go)
        monkeypatch.syspath_prepend(str(tmp_path))
        gym.register("PalaestraRefused-v0", entry_point="refused_env:Refused")
        with pytest.raises(EnvError, match="has an action space of type Tuple"):
            make_env("PalaestraRefused-v0", num_areas=2)  # copies gymnasium.make made
        assert len(sys.modules["refused_env"].CLOSED) == 5
    finally:
        sys.modules.pop("refused_env", None)
        gym.registry.pop("PalaestraRefused-v0", None)


def test_a_pettingzoo_module_with_only_an_aec_env_says_how_to_convert_it(tmp_path, monkeypatch):
    (tmp_path / "turns_v0.py").write_text("def env():\n    raise AssertionError('not called')\n")
    monkeypatch.chdir(tmp_path)
    import sys
    try:
        with pytest.raises(EnvError, match=re.escape("module 'turns_v0' has no parallel_env, only env(): a PettingZoo "
                                                     "AEC (turn-based) environment")):
            make_env("pettingzoo:turns_v0")
    finally:
        sys.modules.pop("turns_v0", None)


def test_pettingzoo_parameters_through_reset_options_are_said_once(pz_module, caplog):
    env = make_env(f"{pz_module}:make", seed=1)
    with caplog.at_level(logging.WARNING, "palaestra"):
        env.reset({"gravity": 9.0})
        env.reset({"gravity": 8.0})
    assert caplog.text.count("PettingZoo environment 'guess_env' has no set_environment_parameters: the environment "
                             "parameters (gravity) are passed to its reset(options=...)") == 1


def test_pettingzoo_agents_group_into_behaviors_and_come_and_go(pz_module):
    env = make_env(f"{pz_module}:make", seed=1, env_args=["length=6"])
    assert set(env.behavior_specs) == {"seer", "late"}
    check_env(env)
    env.reset()
    seen = {"late_decisions": [], "late_terminal": [], "seer_terminal": []}
    for _ in range(12):
        for behavior, spec in env.behavior_specs.items():
            env.set_actions(behavior, spec.action_spec.empty_actions(len(env.get_steps(behavior)[0])))
        env.step()
        seen["late_decisions"].append(len(env.get_steps("late")[0]))
        late_end = env.get_steps("late")[1]
        seen["late_terminal"] += late_end.interrupted.tolist()
        seen["seer_terminal"] += env.get_steps("seer")[1].interrupted.tolist()
    assert seen["late_decisions"][:4] == [1, 1, 1, 0]  # joins after step 1, terminates at step 4
    assert seen["late_terminal"][0] is False  # a true termination
    assert seen["seer_terminal"][:2] == [True, True]  # cut by the episode length: interrupted


@pytest.mark.parametrize("break_step,message", [
    ("drop_live", r"step\(\) returned no observation for \['seer_1'\], which acted this step"),
    ("drop_reward", r"step\(\) returned no reward for \['seer_0'\], which acted this step"),
    ("unknown", r"step\(\) returned an observation for \['ghost_0'\], which are not among its possible_agents"),
])
def test_pettingzoo_agents_left_out_or_unknown_are_a_clear_error(pz_module, break_step, message):
    env = make_env(f"{pz_module}:make", seed=1)
    inner = env.env
    step = inner.step

    def broken(actions):
        obs, rewards, terminated, truncated, infos = step(actions)
        if break_step == "drop_live":
            obs.pop("seer_1")
        elif break_step == "drop_reward":
            rewards.pop("seer_0")
        else:
            obs["ghost_0"] = obs["seer_0"]
        return obs, rewards, terminated, truncated, infos

    inner.step = broken
    env.reset()
    for behavior, spec in env.behavior_specs.items():
        env.set_actions(behavior, spec.action_spec.empty_actions(len(env.get_steps(behavior)[0])))
    with pytest.raises(EnvError, match=message):
        env.step()


@pytest.mark.parametrize("with_observation", [True, False])
def test_pettingzoo_agent_reported_again_after_it_finished_ends_once(pz_module, with_observation):
    # some environments keep returning a finished agent (done, reward 0) until the episode ends;
    # it did not act, so it must not end again (one more episode every step) nor need an observation
    env = make_env(f"{pz_module}:make", seed=1, env_args=["length=8"])
    inner = env.env
    step = inner.step

    def zombie(actions):
        obs, rewards, terminated, truncated, infos = step(actions)
        if 4 < inner.t < 8:  # late_0 finished at step 4
            rewards["late_0"], terminated["late_0"], truncated["late_0"] = 0.0, True, False
            if with_observation:
                obs["late_0"] = np.zeros(1, np.float32)
        return obs, rewards, terminated, truncated, infos

    inner.step = zombie
    env.reset()
    late_ends = []
    for _ in range(7):
        for behavior, spec in env.behavior_specs.items():
            env.set_actions(behavior, spec.action_spec.empty_actions(len(env.get_steps(behavior)[0])))
        env.step()
        late_ends.append(len(env.get_steps("late")[1]))
    assert late_ends == [0, 0, 0, 1, 0, 0, 0]


def test_pettingzoo_reset_without_a_live_agents_observation_is_a_clear_error(pz_module):
    env = make_env(f"{pz_module}:make", seed=1)
    reset = env.env.reset
    env.env.reset = lambda seed=None, options=None: ({"seer_0": reset(seed, options)[0]["seer_0"]}, {})
    with pytest.raises(EnvError, match=r"reset\(\) returned no observation for \['seer_1'\], which are among its live"):
        env.reset()


def test_box_actions_without_finite_bounds_stay_inside_the_space_without_numpy_warnings(caplog):
    import warnings

    from gymnasium import spaces

    from palaestra.envs.gymnasium_env import action_converter

    inf = np.inf
    space = spaces.Box(np.array([-inf, 0, -inf, 0], np.float32), np.array([inf, inf, 5, 10], np.float32), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (inf + -inf) / 2 once warned here
        spec, convert = action_converter(space, "Unbounded-v0")
        rows = ActionTuple(continuous=np.array([[-1.0] * 4, [0.0] * 4, [1.0] * 4], np.float32))
        sent = np.stack([convert(rows, i) for i in range(3)])
    assert spec.continuous_size == 4
    np.testing.assert_allclose(sent[:, 0], [-1, 0, 1])  # no bounds: [-1, 1] itself
    np.testing.assert_allclose(sent[:, 1], [0, 1, 2])  # low only: the 2 units above it
    np.testing.assert_allclose(sent[:, 2], [3, 4, 5])  # high only: the 2 units below it
    np.testing.assert_allclose(sent[:, 3], [0, 5, 10])  # bounded: scaled onto [0, 10]
    assert all(space.contains(row.astype(np.float32)) for row in sent)
    assert "action dimensions [0, 1, 2] of its Box have no finite bounds" in caplog.text
    # float32's largest bounds stand for none, as many environments write "unbounded"
    big = np.finfo(np.float32).max
    spec, convert = action_converter(spaces.Box(-big, big, (1,), np.float32), "Huge-v0")
    assert convert(ActionTuple(continuous=np.array([[0.5]], np.float32)), 0) == pytest.approx([0.5])


def test_pettingzoo_mpe2_environment_from_the_package_registry():
    pytest.importorskip("mpe2")
    env = make_env("pettingzoo:mpe2.simple_adversary_v3", seed=0, env_args=["max_cycles=10"])
    assert set(env.behavior_specs) == {"adversary", "agent"}
    assert env.behavior_specs["agent"].observation_shapes == ((10,),)
    check_env(env)


@pytest.mark.parametrize("name,actions", [
    ("3DBall", ActionTuple(continuous=np.zeros((3, 2), np.float32))),  # 12 agents
    ("Basic", ActionTuple(discrete=np.zeros((1, 2), np.int32))),  # one branch
    ("CartPole-v1", ActionTuple(continuous=np.zeros((1, 1), np.float32))),  # discrete only
])
def test_actions_of_the_wrong_shape_are_a_clear_error(name, actions):
    env = make_env(name, seed=0)
    env.reset()
    behavior = next(iter(env.behavior_specs))
    env.set_actions(behavior, actions)
    with pytest.raises(EnvError, match=rf"set_actions\('{behavior}'\): the \d+ agents of the last decision steps"):
        env.step()
    env.close()


def _pyramids_step(env, move: int):
    env.set_actions("Pyramids", ActionTuple(discrete=np.full((env.n, 1), move, np.int32)))
    env.step()
    return env.get_steps("Pyramids")


def test_pyramids_switch_raises_the_pyramid_which_pays_and_ends_the_episode():
    from palaestra.envs.builtin.pyramids import CELLS, LEFT, MAX_STEPS, RIGHT, SENSE, SIZE

    env = BUILTIN_ENVS["Pyramids"](seed=0)
    env.reset()
    env.agent[:] = [0, 0]
    env.switch[:] = [0, SENSE + 1]  # one cell beyond sensing range
    obs = env._observe()
    assert (obs[:, 0] == 1.0).all() and (obs[:, :CELLS].sum(axis=1) == 1.0).all()  # one-hot cell
    assert not obs[:, CELLS:].any()  # nothing sensed, nothing pressed
    decision, terminal = _pyramids_step(env, RIGHT)
    assert len(terminal) == 0 and decision.reward == pytest.approx(-1.0 / MAX_STEPS)
    obs = decision.obs[0]
    assert (obs[:, CELLS + 1] == 1.0).all()  # now in range: the switch's offset, divided by the range
    np.testing.assert_allclose(obs[:, CELLS + 2:CELLS + 4], [[0.0, 1.0]] * env.n)
    for _ in range(SENSE):
        decision, terminal = _pyramids_step(env, RIGHT)
    assert env.pressed.all() and len(terminal) == 0  # pressing pays nothing
    assert decision.reward == pytest.approx(-1.0 / MAX_STEPS)
    assert not (env.goal == env.agent).all(axis=1).any()
    obs = decision.obs[0]
    assert (obs[:, CELLS] == 1.0).all() and not obs[:, CELLS + 1:CELLS + 4].any()  # the switch is no longer sensed
    np.testing.assert_allclose(obs[:, CELLS + 4:], (env.goal - env.agent) / (SIZE - 1), rtol=1e-6)
    left = env.goal[:, 1] == 0  # beside the pyramid: on its left, or on its right in column 0
    env.agent[:] = env.goal + np.where(left[:, None], [0, 1], [0, -1])
    env.set_actions("Pyramids", ActionTuple(discrete=np.where(left, LEFT, RIGHT).astype(np.int32)[:, None]))
    env.step()
    decision, terminal = env.get_steps("Pyramids")
    assert len(terminal) == env.n and not terminal.interrupted.any()
    np.testing.assert_allclose(terminal.reward, 2.0 - 1.0 / MAX_STEPS, rtol=1e-6)
    assert not env.pressed.any() and (decision.reward == 0.0).all()  # new episodes


def test_pyramids_step_limit_interrupts_at_a_total_of_minus_one():
    from palaestra.envs.builtin.pyramids import MAX_STEPS, UP

    env = BUILTIN_ENVS["Pyramids"](seed=1)
    env.reset()
    total = np.zeros(env.n)
    for _ in range(MAX_STEPS):
        env.agent[:] = [0, 0]
        env.switch[:] = [5, 5]  # never reached: the agent keeps bumping into the top wall
        decision, terminal = _pyramids_step(env, UP)
        total += decision.reward if not len(terminal) else 0.0
    assert len(terminal) == env.n and terminal.interrupted.all()
    assert total + terminal.reward == pytest.approx(np.full(env.n, -1.0))


@pytest.mark.parametrize("size,sense", [(13, 2), (9, 1), (15, 3), (20, 2), (5, 2)])
def test_pyramids_sweep_senses_every_cell_from_every_start(size, sense):
    from palaestra.envs.builtin.pyramids import MOVES, sweep_moves

    moves = sweep_moves(size, sense)
    rows, cols = np.divmod(np.arange(size * size), size)
    agent = np.stack([rows, cols], axis=1)  # one walker per start cell
    seen = np.zeros((len(agent), size, size), bool)
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), axis=-1)
    for _ in range(4 * size * size // (2 * sense + 1) + size):
        near = (np.abs(grid[None] - agent[:, None, None, :]).max(axis=-1) <= sense)
        seen |= near
        agent = np.clip(agent + MOVES[moves[agent[:, 0], agent[:, 1]]], 0, size - 1)
    assert seen.all()


def test_pyramids_heuristic_reaches_every_goal_and_random_moves_rarely_do():
    def success(policy):
        env = BUILTIN_ENVS["Pyramids"](seed=2, num_areas=4)
        env.reset()
        rng = np.random.default_rng(0)
        ended = won = 0
        for _ in range(1000):
            actions = env.heuristic() if policy == "heuristic" else env.action_spec.random_actions(env.n, rng)
            env.set_actions("Pyramids", actions)
            env.step()
            terminal = env.get_steps("Pyramids")[1]
            ended += len(terminal)
            won += int((~terminal.interrupted).sum())
        return won / ended

    assert success("heuristic") == 1.0
    assert success("random") < 0.1


def test_env_args_in_exponent_form_without_a_point_are_numbers():
    # YAML 1.1 reads 5e-1 as text (it wants 5.0e-1); a user writing 5e-1 means a number
    from palaestra.envs.sources import parse_env_args

    assert parse_env_args(["step_size=5e-1", "a=1E3", "b=-2e+2", "name=e5", "c=1.5e-1"]) == {
        "step_size": 0.5, "a": 1000.0, "b": -200.0, "name": "e5", "c": 0.15}


@pytest.mark.parametrize("args, message", [
    (["step_size=abc"], "step_size must be a number in (0, 2], got 'abc'"),
    (["step_size=1e400"], "step_size must be a number in (0, 2], got inf"),
    (["step_size=[1]"], "step_size must be a number in (0, 2], got [1]"),
    (["max_episode_steps=abc"], "max_episode_steps must be an integer >= 0 (0 = no limit), got 'abc'"),
    (["max_episode_steps=2.5"], "max_episode_steps must be an integer >= 0 (0 = no limit), got 2.5"),
    (["success_reward=abc"], "success_reward must be a finite number, got 'abc'"),
    (["success_reward=.nan"], "success_reward must be a finite number, got nan"),
])
def test_the_1d_environments_name_a_wrong_argument_and_what_it_takes(args, message):
    for name in ("Simple1DDiscrete", "Simple1DContinuous", "Memory1DDiscrete"):
        with pytest.raises(EnvError) as error:
            make_env(name, env_args=args)
        assert message in str(error.value), (name, str(error.value))
    assert make_env("Simple1DDiscrete", env_args=["step_size=5e-1"]).step_size == 0.5


@pytest.mark.parametrize("args, message", [
    (["image_size=36", "image_size=40"], "--env-args: 'image_size' is given twice ('image_size=36' and "
                                         "'image_size=40'); give it once"),
    (["=5"], "--env-args: expected key=value, got '=5'"),
    (["size"], "--env-args: expected key=value, got 'size'"),
])
def test_env_args_that_cannot_be_meant_are_refused(args, message):
    from palaestra.envs.sources import parse_env_args

    with pytest.raises(EnvError) as error:
        parse_env_args(args)
    assert str(error.value) == message


def test_environment_parameters_below_their_least_value_are_raised_to_it_with_one_warning(caplog):
    # a sampler can draw a negative mass or scale (a normal distribution, a range written wrong)
    import logging

    env = make_env("3DBall", seed=0)
    with caplog.at_level(logging.WARNING, logger="palaestra"):
        env.reset({"mass": -2.0, "scale": 2.0, "gravity": -1.0})
        env.reset({"mass": -3.0})
    assert env.parameters == {"gravity": 0.0, "mass": 1e-3, "scale": 2.0}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and "mass = -2 is below its least value 0.001" in warnings[0]
    assert "gravity = -1 is below its least value 0" in warnings[1]


class _NaNAfter(gym.Env):
    """Rewards 1 for 20-step episodes, then, from its ``after``-th step on, NaN in the reward or
    in the observation."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, after=150, where="reward", value=float("nan")):
        self.after, self.where, self.value, self.steps, self.t = after, where, value, 0, 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3, np.float32), {}

    def step(self, action):
        self.steps += 1
        self.t += 1
        broken = self.steps >= self.after
        obs = np.full(3, self.value if broken and self.where == "obs" else 0.0, np.float32)
        reward = self.value if broken and self.where == "reward" else 1.0
        return obs, reward, False, self.t >= 20, {}


class _NaNAfterContinuous(_NaNAfter):
    """The same with a continuous action, remembering whether it was ever sent a NaN one."""

    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    got_nan = False

    def step(self, action):
        _NaNAfterContinuous.got_nan |= not np.isfinite(action).all()
        return super().step(action)


@pytest.mark.parametrize("where, message", [
    ("reward", "the environment sent a NaN or infinite reward;"),
    ("obs", "the environment sent NaN or infinite values in observation 0 of agent(s) [0] (decision steps);"),
    ("obs-continuous", "the environment sent NaN or infinite values in observation 0 of agent(s) [0] (decision steps);"),
])
def test_nan_from_an_environment_stops_the_run_before_it_reaches_the_weights(run_cli, workdir, where, message):
    import onnx
    from onnx import numpy_helper

    from tests.conftest import write_yaml

    env_class = _NaNAfterContinuous if where == "obs-continuous" else _NaNAfter
    gym.register("PalaestraTestNaN-v0", entry_point=env_class, kwargs={"where": where.split("-")[0]})
    try:
        config = write_yaml(workdir / "c.yaml", "default:\n  batch_size: 16\n  buffer_size: 32\n  hidden_units: 8\n"
                                                "  num_layers: 1\n  max_steps: 1000\n  time_horizon: 16\n")
        result = run_cli(str(config), "--env=PalaestraTestNaN-v0", "--run-id=r")
    finally:
        gym.registry.pop("PalaestraTestNaN-v0")
    assert result.code == 1 and "Traceback" not in result.log
    assert f"behavior 'PalaestraTestNaN-v0': {message}" in result.log and "the model was saved first" in result.log
    model = onnx.load(str(workdir / "models/r/PalaestraTestNaN-v0.onnx"))
    assert all(np.isfinite(numpy_helper.to_array(t)).all() for t in model.graph.initializer)
    assert not _NaNAfterContinuous.got_nan  # the NaN observations' NaN actions were not sent


@pytest.mark.parametrize("where", ["reward", "obs"])
def test_a_dry_run_finds_nan_in_the_first_step(run_cli, workdir, where):
    # the dry run stepped the environment without the check, said the config was valid, and the
    # real run failed on its first segments after writing its folder
    from tests.conftest import write_yaml

    gym.register("PalaestraTestNaN-v0", entry_point=_NaNAfter, kwargs={"where": where, "after": 1})
    try:
        config = write_yaml(workdir / "c.yaml", "default:\n  max_steps: 1000\n")
        result = run_cli(str(config), "--env=PalaestraTestNaN-v0", "--run-id=r", "--dry-run")
    finally:
        gym.registry.pop("PalaestraTestNaN-v0")
    assert result.code == 1 and "Traceback" not in result.log and "is valid" not in result.log
    assert "behavior 'PalaestraTestNaN-v0': the environment sent" in result.log


class _Misbehaving(_NaNAfter):
    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        if self.where == "raise":
            raise RuntimeError("the simulator crashed")
        if self.where == "shape":
            return np.zeros(5, np.float32), reward, terminated, truncated, info
        if self.where == "old api":
            return obs, reward, terminated, info
        if self.where in ("text", "none", "square"):
            return {"text": "abc", "none": None, "square": np.zeros((3, 3), np.float32)}[self.where], reward, \
                terminated, truncated, info
        if self.where == "flags":
            return obs, reward, np.array([False, True]), truncated, info
        return obs, "lots", terminated, truncated, info


@pytest.mark.parametrize("where, message", [
    ("raise", "Gymnasium environment 'PalaestraTestBad-v0' raised RuntimeError in step: the simulator crashed"),
    ("shape", "Gymnasium environment 'PalaestraTestBad-v0' returned an observation of shape (5,); its observation "
              "space is Box(-1.0, 1.0, (3,), float32)"),
    # newer Gymnasiums' gym.make wrappers unpack the old API's 4 values themselves (the first
    # message); 1.1's hand them on, and Palaestra says what it got (the second: see the test)
    ("old api", ("'PalaestraTestBad-v0' raised ValueError in step: not enough values to unpack (expected 5, got 4)",
                 "'PalaestraTestBad-v0': step returned 4 values; Gymnasium's API returns 5 (observation, reward, "
                 "terminated, truncated, info): an old Gym environment needs Gymnasium's compatibility wrapper")),
    ("reward", "step returned the reward 'lots'; expected a number"),
    ("text", "'PalaestraTestBad-v0' returned an observation str 'abc'; its observation space is Box(-1.0, 1.0, (3,)"),
    ("none", "'PalaestraTestBad-v0' returned an observation NoneType None; its observation space is Box("),
    ("square", "'PalaestraTestBad-v0' returned an observation of shape (3, 3); its observation space is Box("),
    ("flags", "step returned terminated=array([False,  True]); expected True or False"),
])
def test_a_gymnasium_environment_that_breaks_its_api_is_named_with_what_it_did(where, message):
    gym.register("PalaestraTestBad-v0", entry_point=_Misbehaving, kwargs={"where": where})
    try:
        env = make_env("PalaestraTestBad-v0")
        env.reset()
        env.set_actions("PalaestraTestBad-v0", ActionTuple(np.zeros((1, 0), np.float32), np.zeros((1, 1), np.int32)))
        with pytest.raises(EnvError) as error:
            env.step()
        if where == "old api":  # which of the two messages: whether this Gymnasium's wrappers unpack the 4 values
            bare = gym.make("PalaestraTestBad-v0")
            bare.reset()
            try:
                for _ in range(2):  # (the first step goes through the passive checker)
                    bare.step(0)
                message = message[1]
            except ValueError:
                message = message[0]
    finally:
        gym.registry.pop("PalaestraTestBad-v0")
    assert message in str(error.value)


class _FailingReset(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, answer="raise"):
        self.answer = answer

    def reset(self, seed=None, options=None):
        if self.answer == "raise":
            raise RuntimeError("no licence for this simulator")
        return np.zeros(1, np.float32)  # the old Gym API: no info


@pytest.mark.parametrize("answer,message", [
    ("raise", "Gymnasium environment 'resets' raised RuntimeError in reset: no licence for this simulator"),
    ("old api", "Gymnasium environment 'resets': reset returned a ndarray, not Gymnasium's (observation, info)"),
])
def test_a_gymnasium_environment_failing_in_reset_is_named(answer, message):
    env = GymnasiumEnv("resets", instances=[_FailingReset(answer)])
    with pytest.raises(EnvError) as error:
        env.reset()
    assert message in str(error.value)


class _MaskedGuess(gym.Env):
    """The observation is a Dict of an observation and the legal actions (1: legal), as
    PettingZoo's classic games give them; only the action the observation names is legal."""

    observation_space = gym.spaces.Dict({"observation": gym.spaces.Box(0.0, 1.0, (3,), np.float32),
                                         "action_mask": gym.spaces.Box(0, 1, (3,), np.int8)})
    action_space = gym.spaces.Discrete(3)

    def _obs(self):
        self.legal = int(self.np_random.integers(3))
        return {"observation": np.eye(3, dtype=np.float32)[self.legal], "action_mask": np.eye(3, dtype=np.int8)[self.legal]}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        assert action == self.legal, "a masked action was sent"
        return self._obs(), 1.0, False, False, {}


def test_gymnasium_observations_with_an_action_mask_mask_the_discrete_actions():
    env = GymnasiumEnv("masked", instances=[_MaskedGuess(), _MaskedGuess()])
    spec = env.behavior_specs["masked"]
    assert spec.observation_shapes == ((3,),) and spec.action_spec.discrete_branches == (3,)
    env.reset()
    for _ in range(5):
        decisions = env.get_steps("masked")[0]
        legal = decisions.obs[0].argmax(1)
        np.testing.assert_array_equal(decisions.action_mask[0], ~np.eye(3, dtype=bool)[legal])  # True: unavailable
        env.set_actions("masked", ActionTuple(np.zeros((2, 0), np.float32), legal[:, None].astype(np.int32)))
        env.step()
    check_env(env, steps=20)  # random actions inside the mask


def test_an_action_mask_that_does_not_fit_the_actions_or_allows_nothing_is_a_clear_error():
    class WrongSize(_MaskedGuess):
        action_space = gym.spaces.Discrete(4)

    with pytest.raises(EnvError, match="its action_mask has 3 entries, but its actions are .*one entry per action"):
        GymnasiumEnv("wrong", instances=[WrongSize()])

    class Nothing(_MaskedGuess):
        def _obs(self):
            return {"observation": np.zeros(3, np.float32), "action_mask": np.zeros(3, np.int8)}

    env = GymnasiumEnv("nothing", instances=[Nothing()])
    with pytest.raises(EnvError, match="returned an action_mask with no legal action in a branch"):
        env.reset()


def _guess_game(masks_in_infos: bool):
    """A PettingZoo game whose two players must each name the one legal action of three, which
    the observation shows; its mask comes in the observation dict (``masks_in_infos`` False) or in
    ``infos[agent]["action_mask"]`` beside a plain observation, where the game's last step allows
    nothing (no decision reads it: everyone's episode ends there). Four steps a game."""
    from pettingzoo import ParallelEnv

    class Guess(ParallelEnv):
        metadata = {"name": "guess_v0"}
        possible_agents = ["player_0", "player_1"]

        def observation_space(self, agent):
            return gym.spaces.Box(0, 1, (3,), np.float32) if masks_in_infos else _MaskedGuess.observation_space

        def action_space(self, agent):
            return gym.spaces.Discrete(3)

        def _step_data(self, over=False):
            self.legal = {a: int(self.rng.integers(3)) for a in self.agents}
            seen = {a: np.eye(3, dtype=np.float32)[k] for a, k in self.legal.items()}
            masks = {a: np.zeros(3, np.int8) if over and masks_in_infos else np.eye(3, dtype=np.int8)[k]
                     for a, k in self.legal.items()}
            if masks_in_infos:
                return seen, {a: {"action_mask": masks[a]} for a in seen}
            return {a: {"observation": seen[a], "action_mask": masks[a]} for a in seen}, {a: {} for a in seen}

        def reset(self, seed=None, options=None):
            self.rng, self.agents, self.t = np.random.default_rng(seed), list(self.possible_agents), 0
            return self._step_data()

        def step(self, actions):
            assert all(actions[a] == self.legal[a] for a in actions), "a masked action was sent"
            self.t += 1
            done = {a: self.t >= 4 for a in actions}
            obs, infos = self._step_data(over=self.t >= 4)
            if self.t >= 4:
                self.agents = []
            return obs, {a: 1.0 for a in actions}, done, {a: False for a in actions}, infos

    return Guess()


def test_pettingzoo_observations_with_an_action_mask_mask_each_agents_actions():
    pytest.importorskip("pettingzoo")
    from palaestra.envs.pettingzoo_env import PettingZooEnv

    env = PettingZooEnv(_guess_game(masks_in_infos=False), "masked", seed=0)
    env.reset()
    decisions = env.get_steps("player")[0]
    np.testing.assert_array_equal(decisions.action_mask[0], ~np.eye(3, dtype=bool)[decisions.obs[0].argmax(1)])
    check_env(env, steps=20)


def test_pettingzoo_masks_given_in_infos_mask_each_agents_actions():
    # the other convention: infos[agent]["action_mask"] beside a plain observation
    pytest.importorskip("pettingzoo")
    from palaestra.envs.pettingzoo_env import PettingZooEnv

    env = PettingZooEnv(_guess_game(masks_in_infos=True), "info_masked", seed=0)
    env.reset()
    for _ in range(10):  # through two game overs
        decisions = env.get_steps("player")[0]
        legal = decisions.obs[0].argmax(1)
        np.testing.assert_array_equal(decisions.action_mask[0], ~np.eye(3, dtype=bool)[legal])
        actions = env.behavior_specs["player"].action_spec.empty_actions(len(decisions))
        actions.discrete[:, 0] = legal
        env.set_actions("player", actions)
        env.step()
    check_env(env, steps=20)


def test_pettingzoo_masks_and_observations_out_of_form_are_named_not_raised_raw():
    # read in one pass since session 54: a mask of a dtype numpy cannot stack with the others is
    # read agent by agent (said once, then unread), and a masked observation that is no dict of
    # both is named (it raised IndexError or KeyError, its mask read before its check)
    pytest.importorskip("pettingzoo")
    from palaestra.envs.pettingzoo_env import PettingZooEnv

    game = _guess_game(masks_in_infos=True)
    plain = game._step_data

    def odd_mask(over=False):
        obs, infos = plain(over)
        infos["player_1"] = {"action_mask": np.zeros(3, "i4,i4")}
        return obs, infos

    game._step_data = odd_mask
    env = PettingZooEnv(game, "odd", seed=0)
    env.reset()
    decisions = env.get_steps("player")[0]
    assert decisions.action_mask is None or decisions.action_mask[0].shape == (2, 3)
    for odd in (np.zeros(3, "i4,i4"), np.array(["1", "0", "0"]), np.array([0, 0, 1], "datetime64[D]")):
        # a mask in the observation that is no numbers: named (text was read as legal everywhere)
        game = _guess_game(masks_in_infos=False)
        plain_masked = game._step_data
        game._step_data = lambda over=False, plain_masked=plain_masked, odd=odd: (
            {a: {"observation": o["observation"], "action_mask": odd if a == "player_1" else o["action_mask"]}
             for a, o in plain_masked(over)[0].items()}, {})
        with pytest.raises(EnvError, match="returned an action_mask ndarray .*expected numbers, one per action"):
            PettingZooEnv(game, "odd", seed=0).reset()
    for broken in (lambda o: o["observation"], lambda o: {"observation": o["observation"]}):
        game = _guess_game(masks_in_infos=False)
        plain_masked = game._step_data
        game._step_data = lambda over=False, plain_masked=plain_masked, broken=broken: (
            {a: broken(o) for a, o in plain_masked(over)[0].items()}, plain_masked(over)[1])
        with pytest.raises(EnvError, match="returned an observation .*its observation space is a dict of "
                                           "'observation' and 'action_mask'"):
            PettingZooEnv(game, "broken", seed=0).reset()


def test_gymnasium_env_refuses_a_vector_env_instance():
    vec = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2)
    with pytest.raises(EnvError, match="vector environment is no instance"):
        GymnasiumEnv("CartPole-v1", instances=[vec])


@pytest.mark.parametrize("observations,actions,message", [
    (gym.spaces.Box(-1, 1, (0,)), gym.spaces.Discrete(2), "its observation space Box([], [], (0,), float32) holds "
                                                          "no values"),
    (gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-1, 1, (0,)), "its action space Box([], [], (0,), float32) has no "
                                                               "actions to take"),
    (gym.spaces.Box(-1, 1, (3,)), gym.spaces.MultiDiscrete(np.zeros(0, np.int64)), "has no actions to take"),
], ids=["no-observation", "no-continuous-action", "no-branch"])
def test_gymnasium_spaces_without_values_are_refused_as_protocol_specs_are(observations, actions, message):
    # an empty action Box used to fail inside the trainer ('NoneType' object has no attribute 'forward');
    # an empty observation trained a policy that sees nothing
    class Empty(gym.Env):
        observation_space, action_space = observations, actions

        def reset(self, *, seed=None, options=None):
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 0.0, False, False, {}

    with pytest.raises(EnvError, match=re.escape(message)):
        GymnasiumEnv("Empty-v0", instances=[Empty()])


def test_the_builtin_vector_ids_refuse_another_autoreset_mode():
    import importlib

    from gymnasium.vector import AutoresetMode

    importlib.import_module("palaestra.envs.gym_vector")  # registers the ids
    assert gym.make_vec("palaestra/Basic-v0", num_envs=1, autoreset_mode=AutoresetMode.SAME_STEP).num_envs == 1
    for mode in (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED):
        with pytest.raises(EnvError, match=f"autoreset_mode={mode.name} is not supported"):
            gym.make_vec("palaestra/Basic-v0", num_envs=1, autoreset_mode=mode)


def test_pettingzoo_without_a_module_is_named_as_given():
    # it said "--env=:parallel_env: expected package.module:callable", which the user never typed
    from palaestra.envs.sources import make_env

    with pytest.raises(EnvError, match=r"--env=pettingzoo: names no module: give the PettingZoo environment's module"):
        make_env("pettingzoo:")
    pytest.importorskip("pettingzoo")
    with pytest.raises(EnvError, match=r"^--env=pettingzoo:pettingzoo.classic.rps_v2: --num-areas 2 is not supported"):
        make_env("pettingzoo:pettingzoo.classic.rps_v2", num_areas=2)


def test_builtin_environments_drop_the_actions_set_before_a_reset():
    # Unity's reset clears the pending actions: here Basic moved with them, and WallJump (whose
    # behaviors' agents change at a reset) failed with a bare numpy shape error
    def first_step(actions_before_reset: bool) -> np.ndarray:
        env = BUILTIN_ENVS["Basic"](seed=0)
        env.reset()
        if actions_before_reset:
            env.set_actions("Basic", ActionTuple(discrete=np.full((len(env.get_steps("Basic")[0]), 1), 2, np.int32)))
        env.reset()
        env.step()
        return env.get_steps("Basic")[0].obs[0]

    np.testing.assert_array_equal(first_step(True), first_step(False))
    wall = BUILTIN_ENVS["WallJump"](seed=0, num_areas=12)
    wall.reset()
    for behavior, spec in wall.behavior_specs.items():
        wall.set_actions(behavior, spec.action_spec.empty_actions(len(wall.get_steps(behavior)[0])))
    wall.reset()
    wall.step()  # (each behavior's agents are others now)


def test_builtin_parameters_that_are_not_finite_keep_the_value_in_force(caplog):
    env = BUILTIN_ENVS["3DBall"](seed=0)
    env.reset({"gravity": 12.0})
    for bad in (float("inf"), float("nan")):
        env.reset({"gravity": bad})
        assert env.parameters["gravity"] == 12.0
        env.set_actions("3DBall", env.action_spec.empty_actions(len(env.get_steps("3DBall")[0])))
        env.step()
        assert np.isfinite(env.get_steps("3DBall")[0].obs[0]).all()
    assert "gravity = inf is not a finite number (a sampler or curriculum asked it); keeping 12" in caplog.text


def test_a_very_light_ball_slows_down_rather_than_swinging_ever_faster():
    env = BUILTIN_ENVS["3DBall"](seed=0)
    env.reset({"gravity": 0.0, "mass": 0.001})
    env.vel[:] = 0.5
    speeds = []
    for _ in range(4):
        env.set_actions("3DBall", env.action_spec.empty_actions(env.n))
        env.step()
        speeds.append(float(np.abs(env.vel).max()))
    assert speeds[-1] < 1e-6 and all(b <= a for a, b in zip(speeds, speeds[1:]))


def test_a_seeded_gymnasium_reset_keeps_the_parameters_in_force():
    envs = gym.make_vec("palaestra.envs.gym_vector:palaestra/3DBall-v0", num_envs=12)
    first, _ = envs.reset(seed=5, options={"parameters": {"scale": 3.0}})
    again, _ = envs.reset(seed=5)
    np.testing.assert_array_equal(first, again)  # (the ball's height shows the scale)


@pytest.mark.parametrize("space", [
    gym.spaces.Box(-2.0, 3.0, (2, 3), np.float32), gym.spaces.Box(-1.0, 1.0, (), np.float64),
    gym.spaces.Box(-5, 5, (2,), np.int64), gym.spaces.Discrete(4, start=-1), gym.spaces.MultiDiscrete([3, 2]),
    gym.spaces.MultiBinary((2, 2)),
], ids=["box", "box-0d", "box-int", "discrete", "multidiscrete", "multibinary"])
def test_one_conversion_of_the_batch_gives_each_copy_what_its_own_would(space):
    from palaestra.envs.base import ActionTuple
    from palaestra.envs.gymnasium_env import action_converter, actions_per_copy

    spec, convert = action_converter(space, "test")
    n, rng = 5, np.random.default_rng(0)
    branches = spec.discrete_branches
    actions = ActionTuple(continuous=rng.uniform(-1.2, 1.2, (n, spec.continuous_size)).astype(np.float32),
                          discrete=np.stack([rng.integers(0, b, n) for b in branches], 1) if branches
                          else np.zeros((n, 0), np.int64))
    batched = actions_per_copy(convert, actions, n)
    for i in range(n):
        one = convert(actions, i)
        assert type(batched[i]) is type(one)
        if isinstance(one, np.ndarray):
            assert batched[i].dtype == one.dtype and batched[i].shape == one.shape
        np.testing.assert_array_equal(batched[i], one)
        assert space.contains(batched[i])
    assert actions_per_copy(convert, actions, 0) == []


def test_observations_converted_at_once_are_those_converted_one_by_one():
    # convert_each (PettingZoo's many agents) takes a batch in one pass where it can: the same array
    from palaestra.envs.gymnasium_env import convert_each, observation_converter

    rng = np.random.default_rng(0)
    box = gym.spaces.Box(-1, 1, (2, 3), np.float32)
    masked = gym.spaces.Dict({"observation": box, "action_mask": gym.spaces.MultiBinary(4)})
    floats = [rng.normal(size=(2, 3)) for _ in range(5)]  # float64: converted to float32 alike
    cases = [(box, floats), (box, [f.astype(np.float32) for f in floats]),
             (box, [np.round(f * 3).astype(np.int64) for f in floats]),  # (one by one: not floats)
             (box, [f.tolist() for f in floats]),  # (lists)
             (gym.spaces.Box(-1, 1, (3,), np.float32), [f[:1].reshape(1, 3) for f in floats]),  # (axes of 1)
             (masked, [{"observation": f, "action_mask": np.ones(4, np.int8)} for f in floats])]
    for space, values in cases:
        _, _, convert = observation_converter(space, "test")
        together, alone = convert_each(convert, values), np.stack([convert(v) for v in values])
        assert together.dtype == alone.dtype == np.float32 and together.shape == alone.shape
        np.testing.assert_array_equal(together, alone)
    _, _, convert = observation_converter(box, "test")
    with pytest.raises(EnvError, match="returned an observation of shape \\(3, 2\\)"):  # a wrong one still named
        convert_each(convert, [floats[0], floats[1].reshape(3, 2)])
