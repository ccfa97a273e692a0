"""A user's Gymnasium vector environment as an environment source (envs/gymnasium_vector_env.py):
every autoreset mode ends each episode where the sub-environment ended it, with its last
observation, its reward and termination or truncation, and starts the next one with a reward of
zero; factories returning one train end to end."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from palaestra.envs.base import EnvError
from palaestra.envs.checker import check_env
from palaestra.envs.gymnasium_env import GymnasiumEnv
from palaestra.envs.gymnasium_vector_env import GymnasiumVectorEnv
from palaestra.envs.sources import make_env


class Counter(gym.Env):
    """Observation [t, episode]; reward t at step t; terminates at step ``end`` (after a time
    limit of ``limit`` steps the episode is truncated instead); action 1 adds 10 to the reward."""

    observation_space = spaces.Box(-1e6, 1e6, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, end: int, limit: int = 1000):
        self.end, self.limit, self.t, self.episode = end, limit, 0, -1
        self.parameters: dict = {}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.episode = 0, self.episode + 1
        return np.array([self.t, self.episode], np.float32), {}

    def step(self, action):
        self.t += 1
        reward = float(self.t + 10 * int(action))
        obs = np.array([self.t, self.episode], np.float32)
        return obs, reward, self.t == self.end, self.t == self.limit and self.t != self.end, {}

    def set_environment_parameters(self, values):
        self.parameters = dict(values)


def _vector(mode: AutoresetMode, kind=SyncVectorEnv):
    # sub-environment 0 terminates at step 3, 1 is truncated at 4, 2 terminates at 5
    makers = [lambda: Counter(3), lambda: Counter(99, limit=4), lambda: Counter(5)]
    return kind(makers, autoreset_mode=mode)


def _episodes(env: GymnasiumVectorEnv, steps: int):
    """Drive with action 0 (agent 2 always 1); (agent, terminal t, reward, interrupted, return,
    decisions) per ended episode, the first decisions' rewards, and the steps each agent skipped."""
    env.reset()
    returns, decisions, ended, first_rewards, skipped = {}, {}, [], [], {}
    for _ in range(steps):
        decision, terminal = env.get_steps(env.behavior_name)
        for agent, t, reward, interrupted in zip(terminal.agent_id, terminal.obs[0][:, 0], terminal.reward,
                                                 terminal.interrupted):
            ended.append((int(agent), int(t), float(reward), bool(interrupted),
                          returns.pop(int(agent)) + float(reward), decisions.pop(int(agent))))
        for agent, reward in zip(decision.agent_id.tolist(), decision.reward.tolist()):
            if agent not in returns:
                first_rewards.append(reward)
                returns[agent], decisions[agent] = 0.0, 0
            returns[agent] += reward
            decisions[agent] += 1
        for agent in set(range(3)) - set(decision.agent_id.tolist()):
            skipped[agent] = skipped.get(agent, 0) + 1
        actions = env._spec.action_spec.empty_actions(len(decision))
        actions.discrete[:, 0] = (decision.agent_id == 2).astype(np.int32)
        env.set_actions(env.behavior_name, actions)
        env.step()
    return ended, first_rewards, skipped


@pytest.mark.parametrize("mode", list(AutoresetMode), ids=lambda m: m.name)
def test_every_autoreset_mode_ends_each_episode_with_its_last_observation(mode):
    env = GymnasiumVectorEnv("Counter", _vector(mode))
    try:
        ended, first_rewards, skipped = _episodes(env, 12)
    finally:
        env.close()
    # (agent, last t, last reward, interrupted, return, decisions): agent 2's action 1 adds 10 a step
    assert sorted(set(ended))[:3] == [(0, 3, 3.0, False, 6.0, 3), (1, 4, 4.0, True, 10.0, 4),
                                      (2, 5, 15.0, False, 65.0, 5)]
    assert set(first_rewards) == {0.0}  # a new episode's first decision carries no reward
    # NEXT_STEP: an agent asks for no decision in the step that resets its sub-environment
    assert bool(skipped) == (mode is AutoresetMode.NEXT_STEP)
    # agent 0's episodes read within the 12 steps: ended at steps 3, 6, 9 (NEXT_STEP: 3, 7, 11, a
    # reset step between them); none lost, none counted twice
    assert sorted(d for a, *_, d in ended if a == 0) == [3, 3, 3]


def test_async_vector_environments_and_the_checker():
    env = GymnasiumVectorEnv("Counter", _vector(AutoresetMode.NEXT_STEP, AsyncVectorEnv))
    try:
        ended, _, _ = _episodes(env, 8)
        assert (1, 4, 4.0, True, 10.0, 4) in ended
        check_env(env, steps=30)
    finally:
        env.close()


def test_parameters_reach_the_sub_environments():
    vector = _vector(AutoresetMode.SAME_STEP)
    env = GymnasiumVectorEnv("Counter", vector)
    env.reset({"gravity": 3.0})
    assert [e.parameters for e in vector.envs] == [{"gravity": 3.0}] * 3
    env.close()


class Gravity(gym.Env):
    """Observes the "gravity" its last reset's options gave (-1 without); no set_environment_parameters."""

    observation_space = spaces.Box(-1e6, 1e6, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.gravity = float((options or {}).get("gravity", -1.0))
        return np.array([self.gravity], np.float32), {}

    def step(self, action):
        return np.array([self.gravity], np.float32), 0.0, False, False, {}


def test_parameters_of_an_async_environment_without_the_setter_go_with_reset_options():
    # asking the workers for a method they lack made AsyncVectorEnv shut them all down
    vector = AsyncVectorEnv([Gravity] * 2)
    env = GymnasiumVectorEnv("Gravity", vector)
    try:
        env.reset({"gravity": 3.0})
        actions = env._spec.action_spec.empty_actions(2)
        env.set_actions(env.behavior_name, actions)
        env.step()
        decision, _ = env.get_steps(env.behavior_name)
        np.testing.assert_array_equal(decision.obs[0][:, 0], [3.0, 3.0])
    finally:
        env.close()


FACTORY = """
import gymnasium as gym

def native(num_areas, seed):
    return gym.make_vec("CartPole-v1", num_envs=num_areas, vectorization_mode="vector_entry_point")

def sync():
    return gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2)

def in_processes():
    return gym.vector.AsyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2)

def odd():
    env = sync()
    env.metadata = dict(env.metadata, autoreset_mode="sometimes")
    return env
"""


@pytest.fixture
def vector_factories(tmp_path, monkeypatch):
    (tmp_path / "vector_factories.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "vector_factories", raising=False)


def test_a_factory_may_return_a_vector_environment(vector_factories):
    env = make_env("vector_factories:native", seed=3, num_areas=4)
    try:
        assert isinstance(env, GymnasiumVectorEnv) and env.behavior_name == "CartPole-v1" and env.n == 4
        check_env(env, steps=100)
    finally:
        env.close()
    with pytest.raises(EnvError, match="--num-areas 3 needs a factory that takes a num_areas"):
        make_env("vector_factories:sync", num_areas=3)
    with pytest.raises(EnvError, match="autoreset mode 'sometimes'"):
        make_env("vector_factories:odd")


def _trains(run_cli, workdir, factory: str, behavior: str, *flags: str) -> None:
    """A short PPO run on the factory's environment ends well and exports the behavior's model."""
    from tests.conftest import write_yaml

    config = write_yaml(workdir / "c.yaml", """
default:
  batch_size: 32
  buffer_size: 128
  hidden_units: 16
  num_layers: 1
  max_steps: 300
  summary_freq: 300
""")
    result = run_cli(str(config), f"--env=vector_factories:{factory}", "--run-id=v", "--seed=1", *flags)
    assert result.code == 0, result.log
    assert (workdir / "models" / "v" / f"{behavior}.onnx").is_file()


def test_training_on_a_natively_vectorized_environment(run_cli, workdir, vector_factories):
    _trains(run_cli, workdir, "native", "CartPole-v1", "--num-areas=8")


def test_a_factory_s_vector_environment_in_processes_trains_in_environment_workers(run_cli, workdir,
                                                                                     vector_factories):
    # the workers were daemon processes, which may start none: every AsyncVectorEnv failed there
    _trains(run_cli, workdir, "in_processes", "in_processes", "--num-envs=2")


def test_masked_observations_mask_each_sub_environment_s_actions():
    from tests.test_envs import _MaskedGuess  # only the action its observation names is legal

    env = GymnasiumVectorEnv("masked", SyncVectorEnv([_MaskedGuess] * 3, autoreset_mode=AutoresetMode.SAME_STEP))
    try:
        assert env.behavior_specs["masked"].action_spec.discrete_branches == (3,)
        env.reset()
        for _ in range(4):
            decision = env.get_steps("masked")[0]
            legal = decision.obs[0].argmax(1)
            np.testing.assert_array_equal(decision.action_mask[0], ~np.eye(3, dtype=bool)[legal])
            actions = env._spec.action_spec.empty_actions(3)
            actions.discrete[:, 0] = legal
            env.set_actions("masked", actions)
            env.step()  # (a masked action would fail the sub-environment's assertion)
        check_env(env, steps=20)
    finally:
        env.close()


def test_a_vector_environment_that_breaks_the_api_is_named():
    class Scalar(SyncVectorEnv):
        def step(self, actions):
            obs, reward, terminated, truncated, info = super().step(actions)
            return obs, float(reward[0]), terminated, truncated, info

    env = GymnasiumVectorEnv("Counter", Scalar([lambda: Counter(3)] * 2))
    env.reset()
    with pytest.raises(EnvError, match="Gymnasium vector environment 'Counter': step returned rewards .*expected 2"):
        env.step()
    env.close()


class SeedRecorder(Gravity):
    def reset(self, *, seed=None, options=None):
        self.seeds = getattr(self, "seeds", []) + [seed]
        return super().reset(seed=seed, options=options)


@pytest.mark.parametrize("areas, expected", [(1, [[21, 22, 23], [24, 25, 26]]), (3, [[7, 8, 9], [10, 11, 12]])])
def test_workers_vector_environments_never_share_a_seed(areas, expected):
    # worker i's seed is seed + i x areas: a factory that always made 3 sub-environments, seeded
    # seed + j, gave workers 7 and 8 (--num-areas 1) the seeds 7, 8, 9 and 8, 9, 10
    got = []
    for worker in range(2):
        vector = SyncVectorEnv([SeedRecorder] * 3)
        env = GymnasiumVectorEnv("SeedRecorder", vector, seed=7 + worker * areas, areas=areas)
        env.reset()
        got.append([e.seeds[0] for e in vector.envs])
        env.close()
    assert got == expected


def test_a_natively_vectorized_environment_with_more_copies_than_areas_gets_its_range_s_first_seed():
    # make_vec's vector_entry_point environments take an int seed only: the list failed at the first reset
    seeds = []
    vector = gym.make_vec("CartPole-v1", num_envs=4, vectorization_mode="vector_entry_point")
    real_reset = vector.reset

    def reset(*, seed=None, options=None):
        seeds.append(seed)
        return real_reset(seed=seed, options=options)

    vector.reset = reset
    env = GymnasiumVectorEnv("CartPole-v1", vector, seed=8, areas=1)
    env.reset()
    check_env(env, steps=20)
    env.close()
    assert seeds[0] == 32  # the first of the range 32-35, as the list of a Sync/AsyncVectorEnv would be


class InfoMasked(gym.Env):
    """Gymnasium's other mask convention (Taxi's): ``info["action_mask"]`` (1: legal) gives the
    next decision's legal actions: all but action ``t % 3`` at step t. Episodes of 4 or 5 steps
    (``end``); an illegal action fails its assertion."""

    observation_space = spaces.Box(0, 100, (1,), np.float32)
    action_space = spaces.Discrete(3)

    def __init__(self, end: int = 4):
        self.end, self.t = end, 0

    def _info(self):
        return {"action_mask": (np.arange(3) != self.t % 3).astype(np.int8)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([self.t], np.float32), self._info()

    def step(self, action):
        assert action != self.t % 3, f"illegal action {action} at step {self.t}"
        self.t += 1
        return np.array([self.t], np.float32), 0.0, self.t == self.end, False, self._info()


def _play_masked(env, behavior: str, steps: int) -> int:
    """Step with the first legal action of each decision's mask; return the decisions checked."""
    env.reset()
    checked = 0
    for _ in range(steps):
        decision = env.get_steps(behavior)[0]
        if len(decision):
            t = decision.obs[0][:, 0].astype(int)
            np.testing.assert_array_equal(decision.action_mask[0], np.eye(3, dtype=bool)[t % 3])  # True: unavailable
            checked += len(decision)
        actions = env.behavior_specs[behavior].action_spec.empty_actions(len(decision))
        actions.discrete[:, 0] = (decision.obs[0][:, 0].astype(int) + 1) % 3 if len(decision) else 0
        env.set_actions(behavior, actions)
        env.step()
    return checked


@pytest.mark.parametrize("mode", list(AutoresetMode), ids=lambda m: m.value)
def test_masks_given_in_info_mask_each_sub_environment_s_actions(mode):
    env = GymnasiumVectorEnv("info", SyncVectorEnv([InfoMasked, lambda: InfoMasked(5)], autoreset_mode=mode))
    try:
        assert _play_masked(env, "info", 23) >= 36  # through several episode ends of both
    finally:
        env.close()


def test_masks_given_in_info_mask_each_copy_s_actions():
    env = GymnasiumEnv("info", instances=[InfoMasked(), InfoMasked(5)])
    try:
        assert _play_masked(env, "info", 23) == 46
    finally:
        env.close()


def test_an_info_mask_of_another_size_is_said_and_not_read(caplog):
    class Wider(InfoMasked):
        def _info(self):
            return {"action_mask": np.ones(5, np.int8)}

    env = GymnasiumEnv("wider", instances=[Wider()])
    try:
        env.reset()
        assert env.get_steps("wider")[0].action_mask is None
        assert "gives an info['action_mask'] (ndarray array([1, 1, 1, 1, 1], dtype=int8)) that is no mask of its actions" in caplog.text
    finally:
        env.close()


class GameOver(InfoMasked):
    """A game whose final state allows no action (PettingZoo's classic games' way): its last info's
    mask is all zeros, which no decision reads."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated, truncated, {"action_mask": np.zeros(3, np.int8)} if terminated else info


@pytest.mark.parametrize("mode", list(AutoresetMode), ids=lambda m: m.value)
def test_a_finished_game_s_empty_mask_is_not_read(mode):
    env = GymnasiumVectorEnv("over", SyncVectorEnv([GameOver, lambda: GameOver(5)], autoreset_mode=mode))
    try:
        assert _play_masked(env, "over", 23) >= 36
    finally:
        env.close()


class TwoBranches(gym.Env):
    """MultiDiscrete([3, 2]) with its mask in the form ``MultiDiscrete.sample(mask=...)`` takes:
    one array per branch (here a torch tensor and a list)."""

    observation_space = spaces.Box(-1, 1, (1,), np.float32)
    action_space = spaces.MultiDiscrete([3, 2])

    def _info(self):
        import torch
        return {"action_mask": (torch.tensor([1, 0, 1]), [0, 1])}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), self._info()

    def step(self, action):
        return np.zeros(1, np.float32), 0.0, False, False, self._info()


def test_per_branch_masks_and_tensors_in_info_are_read():
    import torch

    class Tensor(InfoMasked):
        def _info(self):
            return {"action_mask": torch.as_tensor(super()._info()["action_mask"])}

    unavailable = [[False, True, False], [True, False]]
    for env in (GymnasiumEnv("two", instances=[TwoBranches()]), GymnasiumVectorEnv("two", SyncVectorEnv([TwoBranches] * 2))):
        env.reset()
        masks = env.get_steps("two")[0].action_mask
        assert [m.tolist() for m in masks] == [[row] * len(masks[0]) for row in unavailable]
        env.close()
    env = GymnasiumEnv("tensor", instances=[Tensor()])
    try:
        assert _play_masked(env, "tensor", 10) == 10
    finally:
        env.close()


def test_a_vector_info_mask_without_a_row_per_sub_environment_is_said_and_not_read(caplog):
    class Named(InfoMasked):
        def _info(self):
            return {"action_mask": {"used": 1}}  # (another meaning: Gymnasium batches it as a dict)

    env = GymnasiumVectorEnv("named", SyncVectorEnv([Named, Named]))
    try:
        env.reset()
        assert env.get_steps("named")[0].action_mask is None
        assert "without a row per sub-environment: not read as the legal actions" in caplog.text
    finally:
        env.close()


def test_a_batch_of_masks_read_in_one_pass_equals_reading_each_copy():
    # the adapters read many copies' masks at once (one copy at a time cost ~8 µs each); every
    # batch it cannot take whole, or that a copy's reader would refuse, is read copy by copy
    from palaestra.envs.base import ActionSpec
    from palaestra.envs.gymnasium_env import info_mask_reader, read_masks, stacked_masks

    actions = ActionSpec(0, (3, 2, 4))
    read = info_mask_reader(spaces.Box(-1, 1, (2,)), actions, "env 'x'")
    rng = np.random.default_rng(0)
    for dtype in (bool, np.int8, np.float32, np.int64):
        values = [(rng.random(9) < 0.6).astype(dtype) for _ in range(40)]
        for v in values:  # a legal action in every branch, as the environment must give
            v[[0, 3, 5]] = 1
        batched = read_masks(read, values, actions)
        one_by_one = stacked_masks([read(v) for v in values], actions)
        assert [m.shape for m in batched] == [(40, 3), (40, 2), (40, 4)]
        for a, b in zip(batched, one_by_one):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype == bool
    # mixed with a copy without a mask, or one per branch as a tuple: read copy by copy
    mixed = [np.ones(9, np.int8), None, (np.ones(3), np.ones(2), np.ones(4))]
    assert [m.shape for m in read_masks(read, mixed, actions)] == [(3, 3), (3, 2), (3, 4)]
    # a branch with no legal action is refused naming the mask, as one copy's reading does
    bad = [np.ones(9, np.int8), np.array([1, 1, 1, 0, 0, 1, 1, 1, 1], np.int8)]
    with pytest.raises(EnvError, match=r"no legal action in a branch: \[1, 1, 1, 0, 0, 1, 1, 1, 1\]"):
        read_masks(read, bad, actions)
    assert read_masks(read, [None, None], actions) is None


def test_masks_of_one_size_in_other_shapes_or_after_a_bad_value_are_read_as_each_copy_would_be():
    # (3,) beside (1, 3): the one-pass read stacked them and failed; after a value that is no mask
    # (said once, then left unread) no mask is read at all, as before the one-pass read
    from palaestra.envs.base import ActionSpec
    from palaestra.envs.gymnasium_env import info_mask_reader, read_masks

    actions = ActionSpec(0, (3,))
    read = info_mask_reader(spaces.Box(-1, 1, (2,)), actions, "env 'x'")
    (mask,) = read_masks(read, [np.array([1, 0, 1]), np.array([[0, 1, 1]])], actions)
    np.testing.assert_array_equal(mask, [[False, True, False], [True, False, False]])
    read_masks(read, [np.ones(3), np.ones(5)], actions)  # the second is no mask of these actions: said
    assert read_masks(read, [np.ones(3), np.ones(3)], actions) is None  # and from then on none is read
