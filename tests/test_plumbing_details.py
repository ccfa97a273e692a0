"""Plumbing details the training tests pass over: which rows of the actions reach which worker's
agents, which observations end an episode, and which episodes a round or an environment keeps."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from palaestra.envs.base import ActionTuple
from palaestra.envs.gymnasium_env import GymnasiumEnv
from palaestra.workers.stepping import WorkerPoolEnv

# Three agents per instance whose next observation shows the actions they received; their
# episodes all end after EPISODE steps.
ECHO_MODULE = """
import numpy as np
from palaestra.envs.base import ActionSpec, BehaviorSpec, DecisionSteps, TerminalSteps

AGENTS, EPISODE = 3, 3


class Echo:
    # observation: [seed, agent, step in its episode, last continuous action, last discrete action]
    # (-1 for both before an episode's first action)

    def __init__(self, seed):
        self.seed = seed
        self.spec = BehaviorSpec(((5,),), ActionSpec(continuous_size=1, discrete_branches=(1000,)))
        self.behavior_specs = {"E": self.spec}

    def reset(self, parameters=None):
        self._new_episodes()
        self.terminal = TerminalSteps.empty(self.spec)

    def _new_episodes(self):
        self.t = 0
        self.last = np.full((AGENTS, 2), -1.0)

    def _obs(self):
        ids = np.arange(AGENTS)
        return np.column_stack([np.full(AGENTS, self.seed), ids, np.full(AGENTS, self.t), self.last]).astype(np.float32)

    def get_steps(self, behavior):
        decision = DecisionSteps([self._obs()], np.zeros(AGENTS, np.float32), np.arange(AGENTS), None)
        return decision, self.terminal

    def set_actions(self, behavior, actions):
        assert actions.continuous.shape == (AGENTS, 1) and actions.discrete.shape == (AGENTS, 1)
        self.actions = actions

    def step(self):
        self.last = np.column_stack([self.actions.continuous[:, 0], self.actions.discrete[:, 0]]).astype(np.float64)
        self.t += 1
        if self.t < EPISODE:
            self.terminal = TerminalSteps.empty(self.spec)
            return
        self.terminal = TerminalSteps([self._obs()], np.ones(AGENTS, np.float32), np.arange(AGENTS),
                                      np.zeros(AGENTS, bool))
        self._new_episodes()

    def close(self):
        pass


def make(seed):
    return Echo(seed)
"""


@pytest.fixture
def echo_env(tmp_path, monkeypatch):
    """ECHO_MODULE as ``echo_env:make``, importable by the worker processes (they start in tmp_path)."""
    import sys

    (tmp_path / "echo_env.py").write_text(ECHO_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "echo_env", raising=False)
    yield "echo_env:make"
    sys.modules.pop("echo_env", None)


def _echo_steps(name: str, workers: int, steps: int) -> list[tuple[dict, object, object]]:
    """Step ``workers`` pipelined workers of ``name``, giving every agent actions unique to it and
    the step; each step's (actions sent by agent id, decision, terminal), the steps seen before sending."""
    env = WorkerPoolEnv(name, workers, seed=0)
    seen = []
    try:
        env.reset()
        for step in range(steps):
            decision, terminal = env.get_steps("E")
            ids = decision.agent_id
            continuous = (ids * 100 + step).astype(np.float32)[:, None]
            discrete = ((ids * 37 + step) % 1000).astype(np.int32)[:, None]
            env.set_actions("E", ActionTuple(continuous, discrete))
            seen.append(({int(a): (float(c), int(d)) for a, c, d in zip(ids, continuous[:, 0], discrete[:, 0])},
                         decision, terminal))
            env.step()
    finally:
        env.close()
    return seen


def test_each_pipelined_worker_s_agents_receive_the_actions_of_their_own_rows(echo_env):
    # a worker's actions start at its first row among the shown half's (with two workers, one per
    # half, every worker's rows started at 0 and taking the half's first rows passed unnoticed)
    seen = _echo_steps(echo_env, 4, 12)
    sent: dict[int, tuple[float, int]] = {}
    checked = set()
    for actions, decision, terminal in seen:
        rows = [(int(a), row) for a, row in zip(decision.agent_id, decision.obs[0]) if row[2] > 0]
        rows += [(int(a), row) for a, row in zip(terminal.agent_id, terminal.obs[0])]
        for agent_id, row in rows:  # the actions it acted on last, shown after its next step
            assert (row[3], int(row[4])) == sent[agent_id], f"agent {agent_id} (worker {agent_id % 4})"
            checked.add(agent_id)
        sent |= actions
    assert checked == set(range(12))  # three agents in each of the four workers


def test_pipelined_workers_report_the_final_observation_of_each_ended_episode(echo_env):
    # an ended episode's observation is its last (step 3 and the actions taken), not the first
    # one of the agent's next episode, which the decision steps show
    seen = _echo_steps(echo_env, 4, 14)
    ended = 0
    for _, decision, terminal in seen:
        obs = terminal.obs[0]
        if len(terminal):
            assert (obs[:, 2] == 3).all() and (obs[:, 3:] >= 0).all()
            # the agents' next episodes start in the decision steps, with nothing acted on yet
            start = np.isin(decision.agent_id, terminal.agent_id)
            assert (decision.obs[0][start, 2] == 0).all() and (decision.obs[0][start, 3:] == -1).all()
            np.testing.assert_array_equal(obs[:, 0], terminal.agent_id % 4)  # each from its own worker (seed i)
            np.testing.assert_array_equal(obs[:, 1], terminal.agent_id // 4)
        ended += len(terminal)
    assert ended == 12 * 2  # each half's agents show their second end in the last two steps


def test_episodes_that_end_on_an_acting_round_s_last_step_are_kept():
    # rounds of 4 steps (buffer 64, 2 workers, one agent each) and episodes of exactly 4: every
    # episode ends on a round's last step, where the workers take them before the next round
    from palaestra.networks.accelerator import weight_layout
    from palaestra.workers.acting import ActingWorkers, BehaviorPlan
    from palaestra.workers.pool import WorkerPool
    from tests.test_acting import SETTINGS, _ppo, take_rounds

    ppo, behavior = _ppo("Simple1DDiscrete")
    pool = WorkerPool("palaestra.envs.builtin.simple1d:make", 2, seed=0, timeout=300.0,
                      env_args=["max_episode_steps=4"])
    plan = BehaviorPlan(weight_layout(ppo.policy), SETTINGS.time_horizon, ActingWorkers.round_agent_steps(64, 2))
    acting = ActingWorkers(pool, {behavior: plan}, {behavior: ppo.policy_arrays}, 0)
    for results, env_steps in take_rounds(acting, pool, 5):
        assert env_steps == 2 * 4
        for result in results:  # each worker's round: its one episode of 4 steps, interrupted at the limit
            assert result.segments is not None
            np.testing.assert_array_equal(result.segments.length, [4])
            assert result.segments.episode_end.all() and not result.segments.terminal.any()
            assert result.episodes.lengths == [4]


class _Counting(gym.Env):
    """Observes its steps in the episode; the third step ends it with the given flags."""

    observation_space = gym.spaces.Box(0.0, 10.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, terminated: bool, truncated: bool) -> None:
        self.ending = terminated, truncated

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        ends = self.t == 3
        return np.array([self.t], np.float32), 1.0, ends and self.ending[0], ends and self.ending[1], {}


def _counting_ends(terminated: bool, truncated: bool) -> list:
    """Seven steps of one _Counting environment: the terminal steps of each."""
    env = GymnasiumEnv("counting", instances=[_Counting(terminated, truncated)])
    env.reset()
    ends = []
    for _ in range(7):
        env.set_actions("counting", ActionTuple(np.zeros((1, 0), np.float32), np.zeros((1, 1), np.int32)))
        env.step()
        decision, terminal = env.get_steps("counting")
        if len(terminal):
            assert decision.obs[0][0, 0] == 0  # the next episode's first observation
            ends.append(terminal)
    return ends


def test_a_gymnasium_episode_s_terminal_step_shows_its_final_observation_not_the_reset_s():
    # the observation that ended the episode is the bootstrap target; the copy then resets
    ends = _counting_ends(True, False)
    assert len(ends) == 2 and all(t.obs[0].tolist() == [[3.0]] for t in ends)


@pytest.mark.parametrize("terminated, truncated, interrupted", [
    (True, True, False), (False, True, True), (True, False, False)])
def test_a_gymnasium_episode_terminated_and_truncated_at_once_is_terminal(terminated, truncated, interrupted):
    # a true end is not bootstrapped, even on the step the time limit would have cut it too
    ends = _counting_ends(terminated, truncated)
    assert len(ends) == 2 and all(t.interrupted.tolist() == [interrupted] for t in ends)


def test_pettingzoo_actions_reach_their_agents_when_agent_names_do_not_sort_in_their_order():
    # p_10 comes after p_2 in the environment's order but before it in sorted order
    pytest.importorskip("pettingzoo")
    from pettingzoo import ParallelEnv

    from palaestra.envs.pettingzoo_env import PettingZooEnv

    class Echoing(ParallelEnv):
        possible_agents = ["p_0", "p_1", "p_2", "p_10"]

        def observation_space(self, agent):
            return gym.spaces.Box(-1.0, 20.0, (1,), np.float32)

        def action_space(self, agent):
            return gym.spaces.Discrete(20)

        def reset(self, seed=None, options=None):
            self.agents = list(self.possible_agents)
            return {a: np.array([-1.0], np.float32) for a in self.agents}, {a: {} for a in self.agents}

        def step(self, actions):
            self.received = dict(actions)
            obs = {a: np.array([float(actions[a])], np.float32) for a in self.agents}
            nothing = {a: False for a in self.agents}
            return obs, {a: 0.0 for a in self.agents}, nothing, dict(nothing), {a: {} for a in self.agents}

    env = PettingZooEnv(Echoing(), "echoing")
    env.reset()
    decision, _ = env.get_steps("p")
    np.testing.assert_array_equal(decision.agent_id, [0, 1, 2, 3])  # p_10 is the fourth agent, id 3
    env.set_actions("p", ActionTuple(np.zeros((4, 0), np.float32), np.array([[5], [6], [7], [8]], np.int32)))
    env.step()
    assert {a: int(x) for a, x in env.env.received.items()} == {"p_0": 5, "p_1": 6, "p_2": 7, "p_10": 8}
    decision, _ = env.get_steps("p")
    np.testing.assert_array_equal(decision.obs[0][:, 0], [5, 6, 7, 8])  # what each agent of those rows received
