"""The batched collector cuts segments correctly, and GAE matches a plain per-step loop."""

from __future__ import annotations

import numpy as np
import pytest

from palaestra.algorithms.ppo import gae
from palaestra.envs.base import ActionSpec, BehaviorSpec, DecisionSteps, TerminalSteps
from palaestra.rollout.collector import Collector
from palaestra.rollout.segments import ActResult

SPEC = BehaviorSpec(((2,),), ActionSpec(continuous_size=1))


def fake_policy(observations, allowed):
    obs = observations[0]
    n = obs.shape[0]
    return ActResult(
        continuous=obs[:, :1].copy(), discrete=np.zeros((n, 0), np.int64),
        log_prob=np.zeros(n, np.float32), entropy=np.ones(n, np.float32),
    )


def decision(ids, t, reward=0.0):
    ids = np.asarray(ids)
    obs = np.stack([np.full(len(ids), float(t)), ids.astype(float)], axis=1).astype(np.float32)
    return DecisionSteps([obs], np.full(len(ids), reward, np.float32), ids)


def terminal(ids, reward, interrupted):
    ids = np.asarray(ids)
    obs = np.stack([np.full(len(ids), -1.0), ids.astype(float) + 0.5], axis=1).astype(np.float32)
    return TerminalSteps([obs], np.full(len(ids), reward, np.float32), ids, np.asarray(interrupted))


def test_time_horizon_cut_keeps_the_next_decision_s_observation():
    c = Collector(SPEC, time_horizon=3)
    finished = []
    for t in range(4):
        _, seg = c.step(decision([5, 9], t, reward=1.0 if t else 0.0), TerminalSteps.empty(SPEC), fake_policy)
        if seg is not None:
            finished.append(seg)
    assert len(finished) == 1
    seg = finished[0]
    assert seg.length.tolist() == [3, 3]
    assert seg.env_reward.tolist() == [[1.0, 1.0, 1.0]] * 2
    assert seg.obs_0[:, :, 0].tolist() == [[0, 1, 2]] * 2
    assert seg.next_obs_0.tolist() == [[3.0, 5.0], [3.0, 9.0]]  # each agent's 4th observation: the bootstrap's
    assert not seg.terminal.any() and not seg.episode_end.any()


@pytest.mark.parametrize("horizon", [1, 2, 3])
def test_consecutive_cuts_keep_every_reward_and_next_observation(horizon):
    c = Collector(SPEC, time_horizon=horizon)
    rows = []  # (observation time, reward that followed, next observation time) per finished row
    for t in range(10):
        _, seg = c.step(decision([4], t, reward=float(t)), TerminalSteps.empty(SPEC), fake_policy)
        if seg is not None:
            n = int(seg.length[0])
            assert n == horizon
            times = seg.obs_0[0, :n, 0].tolist()
            rows += zip(times, seg.env_reward[0, :n].tolist(), times[1:] + [float(seg.next_obs_0[0, 0])])
    # the action at time k is followed by reward k + 1 and observation k + 1
    assert rows == [(float(k), float(k + 1), float(k + 1)) for k in range(len(rows))]
    assert len(rows) == 9 // horizon * horizon


def test_terminal_and_interrupted_episodes():
    c = Collector(SPEC, time_horizon=10)
    c.step(decision([1, 2], 0), TerminalSteps.empty(SPEC), fake_policy)
    c.step(decision([1, 2], 1, reward=0.5), TerminalSteps.empty(SPEC), fake_policy)
    _, seg = c.step(decision([1, 2], 0), terminal([1, 2], 2.0, [False, True]), fake_policy)
    assert seg.length.tolist() == [2, 2]
    assert seg.env_reward.tolist() == [[0.5, 2.0]] * 2
    assert seg.terminal.tolist() == [True, False] and seg.episode_end.tolist() == [True, True]
    assert seg.next_obs_0.tolist() == [[-1.0, 1.5], [-1.0, 2.5]]  # the final observations
    stats = c.take_episode_stats()
    assert stats.returns == [2.5, 2.5] and stats.lengths == [2, 2]


def test_agents_deciding_at_different_times_and_joining_late():
    c = Collector(SPEC, time_horizon=2, initial_slots=1)
    c.step(decision([3], 0), TerminalSteps.empty(SPEC), fake_policy)
    c.step(decision([7, 3], 1, reward=1.0), TerminalSteps.empty(SPEC), fake_policy)  # 7 joins
    _, seg = c.step(decision([3], 2, reward=2.0), TerminalSteps.empty(SPEC), fake_policy)
    assert seg.length.tolist() == [2] and seg.env_reward[0].tolist() == [1.0, 2.0]
    _, seg = c.step(decision([7], 3, reward=4.0), TerminalSteps.empty(SPEC), fake_policy)
    assert seg is None  # agent 7 has one pending row with reward 4 so far
    _, seg = c.step(decision([7], 4, reward=8.0), TerminalSteps.empty(SPEC), fake_policy)
    assert seg.obs_0[0, :, 1].tolist() == [7.0, 7.0] and seg.env_reward[0].tolist() == [4.0, 8.0]


def test_slots_stay_put_when_agent_sets_alternate():
    # pipelined workers show two agent sets in turn; each id keeps its slot, new ids get new ones
    c = Collector(SPEC, time_horizon=8)
    first = {tuple(ids): c.slots_for(np.array(ids)).tolist() for ids in ([4, 6], [5, 7])}
    for _ in range(3):
        for ids in ([4, 6], [5, 7]):
            assert c.slots_for(np.array(ids)).tolist() == first[tuple(ids)]
    assert c.slots_for(np.array([6, 9])).tolist() == [first[(4, 6)][1], 4]
    assert c.slots_for(np.array([5, 7])).tolist() == first[(5, 7)]
    assert sorted(first[(4, 6)] + first[(5, 7)]) == [0, 1, 2, 3]


def test_agents_with_a_new_id_every_episode_reuse_the_ended_episodes_slots():
    # a Unity agent takes a new id for each episode: the slots must follow the live agents, not
    # the episodes (each slot holds time_horizon rows of every observation: an 84 x 84 camera's
    # are about 1.4 MB at 64 rows)
    c = Collector(SPEC, time_horizon=4, initial_slots=2)
    rng = np.random.default_rng(0)
    ids, next_id, age, ends = [0, 1, 2], 3, {0: 0, 1: 0, 2: 0}, []
    returns, lengths, rewards_of = [], [], {}
    for t in range(600):
        ending = [i for i in ids if age[i] >= 2 and rng.random() < 0.3]  # episodes of 2 to about 10 steps
        alive = [i for i in ids if i not in ending]
        born = list(range(next_id, next_id + len(ending)))
        next_id += len(ending)
        for i in ending:
            returns.append(rewards_of.pop(i, 0.0) + 2.0)
            lengths.append(age.pop(i))
        ids = alive + born
        age |= {i: 0 for i in born}
        step_ids = np.array(ids)
        decisions = decision(step_ids, t, reward=1.0)
        decisions.reward[len(alive):] = 0.0  # (a newborn's first decision follows no action)
        for i in alive:
            rewards_of[i] = rewards_of.get(i, 0.0) + 1.0
        done = terminal(ending, 2.0, [False] * len(ending)) if ending else TerminalSteps.empty(SPEC)
        _, seg = c.step(decisions, done, fake_policy)
        for i in ids:
            age[i] += 1
        if seg is not None:
            ends.append(int(seg.episode_end.sum()))
    assert next_id > 200  # episodes
    assert c.n_slots <= 6 and c.capacity <= 8  # (2 x the 3 live agents at most: not one per episode)
    stats = c.take_episode_stats()
    assert stats.lengths == lengths and stats.returns == pytest.approx(returns)
    assert sum(ends) == len(lengths)  # every episode's last segment says so, once


def test_an_agent_seen_only_ending_is_no_episode():
    # (a Unity agent's new id done before it asked for a decision, or a disabled agent)
    c = Collector(SPEC, time_horizon=4)
    c.step(decision([1], 0), TerminalSteps.empty(SPEC), fake_policy)
    _, seg = c.step(decision([1], 1), terminal([8], -1.0, [False]), fake_policy)
    assert seg is None and c.take_episode_stats().returns == []


def test_actions_are_clipped_for_the_environment_but_stored_raw():
    c = Collector(SPEC, time_horizon=1)
    d = decision([0], 5)
    actions, _ = c.step(d, TerminalSteps.empty(SPEC), fake_policy)
    assert actions.continuous[0, 0] == 1.0 and c.buffers["continuous"][0, 0, 0] == 5.0


def naive_gae(rewards, values, bootstrap, gamma, lambd):
    adv = np.zeros(len(rewards))
    last = 0.0
    for t in reversed(range(len(rewards))):
        next_v = bootstrap if t == len(rewards) - 1 else values[t + 1]
        delta = rewards[t] + gamma * next_v - values[t]
        last = delta + gamma * lambd * last
        adv[t] = last
    return adv


@pytest.mark.parametrize("width", [5, 300])  # the matrix path and the loop path
@pytest.mark.parametrize("gamma,lambd", [(0.99, 0.95), (0.9, 1.0), (0.5, 0.0)])
def test_gae_matches_a_plain_loop_with_padding(gamma, lambd, width):
    rng = np.random.default_rng(0)
    lengths = np.array([width, 2, 1])
    rewards = rng.normal(size=(3, width))
    values = rng.normal(size=(3, width))
    bootstrap = rng.normal(size=3)
    out = gae(rewards, values, bootstrap, lengths, gamma, lambd)
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(out[i, :n], naive_gae(rewards[i, :n], values[i, :n], bootstrap[i], gamma, lambd),
                                   rtol=1e-10, atol=1e-12)


def _recording_run(order, memory_size: int) -> list[dict]:
    """Every segment of a scripted run of 4 agents (horizon 3; agents 1 and 2 end episodes at
    different times, all four together at step 9), the agents listed in ``order`` at each step;
    a recurrent policy's memory counts the decisions of each agent's episode."""
    c = Collector(SPEC, time_horizon=3, memory_size=memory_size)
    ends = {4: [1], 6: [2], 7: [1, 2], 9: [0, 1, 2, 3]}

    def policy(observations, allowed, memory=None):
        out = fake_policy(observations, allowed)
        if memory is not None:
            out.memory = memory + 1.0
        return out

    segments = []
    for t in range(14):
        ended = np.asarray([i for i in order if i in ends.get(t, [])], np.int64)
        steps = terminal(ended, 3.0, [t == 9] * len(ended)) if len(ended) else TerminalSteps.empty(SPEC)
        ids = np.asarray(order)
        d = DecisionSteps([decision(ids, t).obs[0]], (ids + t).astype(np.float32), ids)
        _, seg = c.step(d, steps, policy)
        if seg is not None:
            for f in range(len(seg.length)):  # one record per segment, real rows only
                n = seg.length[f]
                segments.append({name: getattr(seg, name)[f, :n].tolist() if getattr(seg, name).ndim > 1 and
                                 name in {x.name for x in seg.schema.per_row} else getattr(seg, name)[f].tolist()
                                 for name in seg.schema.names if name != "slot"})
    return sorted(segments, key=lambda s: (s["obs_0"][0][1], s["obs_0"][0][0]))


@pytest.mark.parametrize("memory_size", [0, 4])
def test_agents_in_lockstep_record_what_agents_in_any_order_do(memory_size):
    # listed in ascending order the agents sit in consecutive slots, and while they are at one row
    # the collector writes them through a slice; listed in descending order it never can
    lockstep = _recording_run([0, 1, 2, 3], memory_size)
    general = _recording_run([3, 2, 1, 0], memory_size)
    assert len(lockstep) == len(general) > 8
    assert lockstep == general
    if memory_size:  # each row keeps the memory it was acted on with: 0, 1, 2, ... since its episode began
        first = next(s for s in lockstep if s["obs_0"][0][1] == 0.0)
        assert [m[0] for m in first["memory"]] == [0.0, 1.0, 2.0]


def test_ppo_values_a_segment_under_way_at_an_update_with_the_critic_after_it():
    # ML-Agents values each trajectory as it processes it; a segment whose first rows were acted on
    # before an update kept those rows' estimates from the critic before it (GAE's values and the
    # value clip's centre), about half of 3DBall's buffer once its episodes were long
    import torch

    from palaestra.algorithms.ppo import PPO
    from palaestra.settings import PPOSettings

    spec = BehaviorSpec(((2,),), ActionSpec(0, (2,)))
    settings = PPOSettings(batch_size=4, buffer_size=4, time_horizon=5, num_epoch=3, learning_rate=0.05,
                           learning_rate_schedule="constant", hidden_units=8, num_layers=1)
    torch.manual_seed(0)
    ppo = PPO(spec, settings, torch.device("cpu"), np.random.default_rng(0))
    collector = Collector(spec, settings.time_horizon)
    rng = np.random.default_rng(1)
    seen = []

    def step(t):
        obs = [rng.normal(size=(1, 2)).astype(np.float32)]
        seen.append(obs[0][0])
        _, seg = collector.step(DecisionSteps(obs, np.array([0.0 if t == 0 else 1.0], np.float32), np.array([0])),
                                TerminalSteps.empty(spec), ppo.act)
        if seg is not None:
            ppo.collect(seg)

    for t in range(6):  # d0..d4 cut at d5, which is acted on before the update
        step(t)
    assert ppo.ready()
    ppo.update()
    for t in range(6, 11):  # d5..d9, cut at d10
        step(t)
    stats = ppo.process_queued()

    def critic(rows):
        with torch.no_grad():
            return ppo.policy.value([torch.as_tensor(np.stack(rows))]).numpy()[:, 0]

    stored = ppo.buffer.view()["old_values"][:, 0]
    current = critic(seen[5:10])
    np.testing.assert_allclose(stored, current, rtol=1e-5, atol=1e-6)
    # the stat is the segment's mean estimate by that critic, as ML-Agents reports one per trajectory
    np.testing.assert_allclose(stats["Policy/Extrinsic Value Estimate"], [current.mean()], rtol=1e-5, atol=1e-6)
    bootstrap = critic(seen[10:11])[0]  # d10, after the segment's last row
    gamma, lambd = settings.reward_signals["extrinsic"].gamma, settings.lambd
    expected = gae(np.ones((1, 5), np.float32), current[None, :, None][..., 0], np.array([bootstrap]),
                   np.array([5]), gamma, lambd)[0] + current
    np.testing.assert_allclose(ppo.buffer.view()["returns"][:, 0], expected, rtol=1e-5, atol=1e-5)


def test_nan_observations_are_refused_before_their_nan_actions_reach_the_environment():
    # a Gaussian policy's log-probability comes from its noise, finite whatever the mean: the
    # actions themselves are looked at, and the observations blamed
    from palaestra.envs.base import EnvDataError

    col = Collector(SPEC, time_horizon=4, behavior="B")
    col.step(decision([0, 1], 0), TerminalSteps.empty(SPEC), fake_policy)
    bad = decision([0, 1], 1)
    bad.obs[0][1, 0] = np.nan
    with pytest.raises(EnvDataError, match=r"behavior 'B': the environment sent NaN or infinite values in "
                                           r"observation 0 of agent\(s\) \[1\] \(decision steps\)"):
        col.step(bad, TerminalSteps.empty(SPEC), fake_policy)


def test_an_action_mask_that_allows_nothing_in_a_branch_is_refused_naming_branch_and_agents():
    from palaestra.envs.base import EnvDataError

    spec = BehaviorSpec(((2,),), ActionSpec(discrete_branches=(3, 2)))

    def policy(observations, allowed):
        n = len(observations[0])
        return ActResult(np.zeros((n, 0), np.float32), np.zeros((n, 2), np.int64), np.zeros(n, np.float32),
                         np.zeros(n, np.float32))

    col = Collector(spec, time_horizon=4, behavior="B")
    masks = [np.zeros((3, 3), bool), np.zeros((3, 2), bool)]
    steps = DecisionSteps([np.zeros((3, 2), np.float32)], np.zeros(3, np.float32), np.array([5, 6, 7]), masks)
    col.step(steps, TerminalSteps.empty(spec), policy)  # masking some actions is fine
    masks[0][0, :2] = True
    col.step(steps, TerminalSteps.empty(spec), policy)
    masks[1][[1, 2], :] = True  # the second branch of agents 6 and 7: nothing left
    with pytest.raises(EnvDataError, match=r"behavior 'B': the environment's action mask allows no action of "
                                           r"branch 1 for agent\(s\) \[6, 7\]"):
        col.step(steps, TerminalSteps.empty(spec), policy)


def _two_signal_settings(trainer_settings, **extra):
    from palaestra.settings import ExtrinsicSettings, RNDSettings

    return trainer_settings(hidden_units=8, num_layers=1, **extra, reward_signals={
        "extrinsic": ExtrinsicSettings(gamma=0.9), "rnd": RNDSettings(gamma=0.5, strength=0.01, encoding_size=4)})


def test_each_signal_s_advantages_take_its_own_gamma_and_its_own_rule_at_a_true_end(monkeypatch):
    # every test signal had the same gamma, so one signal's gamma used for all went unseen; the
    # extrinsic reward stops at a true episode end, an intrinsic one bootstraps through it
    import torch

    from palaestra.algorithms import ppo as ppo_module
    from palaestra.algorithms.ppo import PPO
    from palaestra.settings import PPOSettings

    monkeypatch.setenv("PALAESTRA_SIGNALS_IN_PROCESS", "1")
    calls = []
    real_gae = ppo_module.gae

    def spy(rewards, values, bootstrap, length, gamma, lambd):
        calls.append((gamma, bootstrap.copy()))
        return real_gae(rewards, values, bootstrap, length, gamma, lambd)

    monkeypatch.setattr(ppo_module, "gae", spy)
    spec = BehaviorSpec(((2,),), ActionSpec(0, (2,)))
    torch.manual_seed(0)
    ppo = PPO(spec, _two_signal_settings(PPOSettings, batch_size=4, buffer_size=4, time_horizon=8),
              torch.device("cpu"), np.random.default_rng(0))
    collector = Collector(spec, 8)
    rng = np.random.default_rng(1)
    for t in range(3):
        collector.step(DecisionSteps([rng.normal(size=(1, 2)).astype(np.float32)], np.zeros(1, np.float32),
                                     np.array([0])), TerminalSteps.empty(spec), ppo.act)
    end = TerminalSteps([rng.normal(size=(1, 2)).astype(np.float32)], np.ones(1, np.float32), np.array([0]),
                        np.array([False]))
    _, seg = collector.step(DecisionSteps.empty(spec), end, ppo.act)
    ppo.collect(seg)
    ppo.process_queued()
    assert [gamma for gamma, _ in calls] == [0.9, 0.5]
    assert calls[0][1][0] == 0.0 and calls[1][1][0] != 0.0


def test_sac_targets_take_each_signal_s_gamma_and_its_own_rule_at_a_true_end(monkeypatch):
    import torch

    from palaestra.algorithms.sac import SAC
    from palaestra.settings import SACSettings

    monkeypatch.setenv("PALAESTRA_SIGNALS_IN_PROCESS", "1")
    spec = BehaviorSpec(((2,),), ActionSpec(continuous_size=1))
    sac = SAC(spec, _two_signal_settings(SACSettings, batch_size=4, buffer_size=64, buffer_init_steps=0),
              torch.device("cpu"), np.random.default_rng(0))
    assert sac.gammas.tolist() == pytest.approx([0.9, 0.5])
    batch = {"obs_0": np.zeros((2, 2), np.float32), "next_obs_0": np.ones((2, 2), np.float32),
             "continuous": np.zeros((2, 1), np.float32), "discrete": np.zeros((2, 0), np.int64),
             "allowed": np.ones((2, 0), bool), "next_allowed": np.ones((2, 0), bool),
             "done": np.array([True, False]), "env_reward": np.ones(2, np.float32)}
    prepared = sac._prepare(batch)
    # row 0 ended its episode: the extrinsic target stops there, the intrinsic one goes on
    np.testing.assert_array_equal(prepared.not_done, [[0.0, 1.0], [1.0, 1.0]])


def test_ppo_s_normalizer_learns_from_real_rows_only_when_segments_of_different_lengths_end_together():
    # one agent's segments never pad: with two, the padding's zeros pulled the mean toward 0
    import torch

    from palaestra.algorithms.ppo import PPO
    from palaestra.settings import PPOSettings

    spec = BehaviorSpec(((2,),), ActionSpec(0, (2,)))
    ppo = PPO(spec, PPOSettings(hidden_units=8, num_layers=1, normalize=True, batch_size=4, buffer_size=64,
                                time_horizon=16), torch.device("cpu"), np.random.default_rng(0))
    collector = Collector(spec, 16)
    rng = np.random.default_rng(1)
    rows = []
    for t in range(5):
        ids = np.array([0, 1]) if t >= 3 else np.array([0])  # agent 1 joins late: 2 rows to agent 0's 5
        obs = rng.normal(10.0, 1.0, size=(len(ids), 2)).astype(np.float32)
        rows.append(obs)
        _, seg = collector.step(DecisionSteps([obs], np.zeros(len(ids), np.float32), ids),
                                TerminalSteps.empty(spec), ppo.act)
        assert seg is None
    end = TerminalSteps([np.zeros((2, 2), np.float32)], np.zeros(2, np.float32), np.array([0, 1]),
                        np.array([False, False]))
    _, seg = collector.step(DecisionSteps.empty(spec), end, ppo.act)
    assert seg.length.tolist() == [5, 2]
    ppo.collect(seg)
    real = np.concatenate(rows)
    assert float(ppo.policy.normalizer.count) == 7
    np.testing.assert_allclose(ppo.policy.normalizer.mean.numpy(), real.mean(0), rtol=1e-5)
    np.testing.assert_allclose(ppo.policy.normalizer.var.numpy(), real.var(0), rtol=1e-4)
