"""The reward signals with a model of their own: curiosity (ICM) and RND. Their models learn what
they are meant to, their rewards follow ML-Agents' rules (zero before curiosity's first update,
capped at 1), they plug into PPO and SAC through the reward-signal seam, and their state travels
in checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from palaestra.algorithms import make_algorithm
from palaestra.checkpoints import check_algorithm_state
from palaestra.envs.base import ActionSpec, BehaviorSpec
from palaestra.rewards import make_signals
from palaestra.rewards.learned import action_input
from palaestra.rollout.segments import SegmentSizes, Segments, segment_schema
from palaestra.settings import CuriositySettings, ExtrinsicSettings, RNDSettings, TrainerSettings
from tests.test_seams import SETTINGS, _train

CONTINUOUS = BehaviorSpec(((3,), (2,)), ActionSpec(continuous_size=2))
DISCRETE = BehaviorSpec(((5,),), ActionSpec(discrete_branches=(3, 2)))
MIXED = BehaviorSpec(((4,),), ActionSpec(continuous_size=1, discrete_branches=(2,)))
SPECS = {"continuous": CONTINUOUS, "discrete": DISCRETE, "mixed": MIXED}


def _signal(kind: str, spec: BehaviorSpec, **settings):
    torch.manual_seed(0)
    cls = {"curiosity": CuriositySettings, "rnd": RNDSettings}[kind]
    return make_signals(spec, {kind: cls(**settings)}, torch.device("cpu"))[0]


def _dynamics(spec: BehaviorSpec, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Transitions of a deterministic world: the next observation is the observation halved plus a
    fixed linear image of the action (continuous values and one-hot branches), each action input
    moving the observation its own way, so that a forward model can learn the world and an
    inverse model can read the action off the pair."""
    action = spec.action_spec
    obs = [rng.normal(size=(n, *shape)).astype(np.float32) for shape in spec.observation_shapes]
    continuous = rng.uniform(-1, 1, (n, action.continuous_size)).astype(np.float32)
    discrete = np.stack([rng.integers(0, b, n) for b in action.discrete_branches], 1) if action.is_discrete \
        else np.zeros((n, 0), np.int64)
    actions = action_input(action, {"continuous": continuous, "discrete": discrete}, torch.device("cpu")).numpy()
    sizes = [int(np.prod(shape)) for shape in spec.observation_shapes]
    world = np.random.default_rng(0).normal(size=(actions.shape[1], sum(sizes))).astype(np.float32)
    moved = np.split(actions @ world, np.cumsum(sizes)[:-1], axis=1)
    batch = {f"obs_{i}": o for i, o in enumerate(obs)}
    batch |= {f"next_obs_{i}": 0.5 * o + m.reshape(o.shape) for i, (o, m) in enumerate(zip(obs, moved))}
    return batch | {"continuous": continuous, "discrete": discrete, "env_reward": np.zeros(n, np.float32)}


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_curiosity_learns_the_forward_and_inverse_models(spec):
    signal = _signal("curiosity", spec, strength=0.5, encoding_size=16, learning_rate=3e-3)
    rng = np.random.default_rng(1)
    held_out = _dynamics(spec, 256, rng)

    @torch.no_grad()
    def losses():  # (forward, inverse) on transitions it never trains on
        inputs = signal._inputs(held_out)
        return float(signal.model.forward_error(*inputs).mean()), float(signal.model.inverse_loss(*inputs).mean())

    first = losses()
    for _ in range(150):
        stats = signal.update(_dynamics(spec, 64, rng))
    last = losses()
    assert set(stats) == {"Losses/Curiosity Forward Loss", "Losses/Curiosity Inverse Loss"}
    assert last[1] < 0.5 * first[1]
    assert last[0] < first[0]


@pytest.mark.parametrize("kind", ["curiosity", "rnd"])
@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_the_numpy_update_is_autograd_s(spec, kind):
    """On the CPU the signals' updates and rewards run in numpy (rewards/numpy_losses.py): the same
    losses, gradients, parameters after Adam and rewards as the torch code in their signal files."""
    numpy_signal = _signal(kind, spec, encoding_size=16, learning_rate=1e-2)
    torch_signal = _signal(kind, spec, encoding_size=16, learning_rate=1e-2)
    torch_signal.trains_in_numpy = False  # the torch loss and autograd
    assert numpy_signal.trains_in_numpy
    rng = np.random.default_rng(2)
    for _ in range(3):
        batch = _dynamics(spec, 48, rng)
        torch_signal.load_state_dict(numpy_signal.state_dict())  # each step compared from the same point
        ours, reference = numpy_signal.update(batch), torch_signal.update(batch)
        for key, value in reference.items():
            assert ours[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
        for (name, a), b in zip(numpy_signal.model.named_parameters(), torch_signal.model.parameters()):
            if not a.requires_grad:  # RND's fixed target
                continue
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-3, atol=1e-5, err_msg=name)
            # the same Adam on both, from the same state (a hundredth of the learning rate: where a
            # gradient is rounding noise, Adam's normalized step can magnify the difference)
            np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), atol=1e-4, err_msg=name)
    assert numpy_signal.optimizer.steps == torch_signal.optimizer.steps == 3
    # the rewards too: numpy's forward pass against the model's own, from the same weights
    torch_signal.load_state_dict(numpy_signal.state_dict())
    batch = _dynamics(spec, 40, rng)
    ours, reference = numpy_signal.rewards_for_batch(batch), torch_signal.rewards_for_batch(batch)
    assert ours.dtype == np.float32 and ours.shape == (40,) and ours.any()
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-7)


def test_curiosity_pays_nothing_before_its_first_update_then_at_most_one():
    signal = _signal("curiosity", DISCRETE, strength=1000.0, encoding_size=8)
    batch = _dynamics(DISCRETE, 32, np.random.default_rng(2))
    assert not signal.rewards_for_batch(batch).any()
    signal.update(batch)
    rewards = signal.rewards_for_batch(batch)
    assert rewards.dtype == np.float32 and rewards.shape == (32,)
    assert (rewards > 0).all() and rewards.max() == 1.0  # strength 1000: every error is capped


def test_curiosity_rewards_familiar_transitions_less_than_novel_ones():
    signal = _signal("curiosity", CONTINUOUS, strength=0.01, encoding_size=16, learning_rate=3e-3)
    rng = np.random.default_rng(3)
    familiar = _dynamics(CONTINUOUS, 128, rng)
    for _ in range(100):
        signal.update(familiar)
    novel = _dynamics(CONTINUOUS, 128, rng)
    novel = novel | {k: v * 3.0 for k, v in novel.items() if k.startswith("obs")}  # states never seen
    assert signal.rewards_for_batch(familiar).mean() < 0.5 * signal.rewards_for_batch(novel).mean()


def test_rnd_pays_more_for_observations_it_has_not_seen():
    signal = _signal("rnd", CONTINUOUS, strength=1.0, encoding_size=16, learning_rate=1e-3)
    rng = np.random.default_rng(4)
    seen = _dynamics(CONTINUOUS, 128, rng)
    first = signal.rewards_for_batch(seen).mean()
    assert first > 0  # RND pays from the start: its target is fixed
    for _ in range(300):
        stats = signal.update(seen)
    assert set(stats) == {"Losses/RND Loss"}
    unseen = seen | {k: v + 4.0 for k, v in seen.items() if k.startswith("next_obs")}
    assert signal.rewards_for_batch(seen).mean() < 0.2 * first
    assert signal.rewards_for_batch(seen).mean() < 0.2 * signal.rewards_for_batch(unseen).mean()
    # the random target network never moves
    target = {k: v.clone() for k, v in signal.model.target.state_dict().items()}
    signal.update(seen)
    for key, value in signal.model.target.state_dict().items():
        torch.testing.assert_close(value, target[key])


def test_action_input_is_continuous_then_one_hot_branches():
    batch = {"continuous": np.array([[0.5], [-0.25]], np.float32), "discrete": np.array([[1], [0]])}
    x = action_input(MIXED.action_spec, batch, torch.device("cpu"))
    torch.testing.assert_close(x, torch.tensor([[0.5, 0.0, 1.0], [-0.25, 1.0, 0.0]]))


@pytest.mark.parametrize("kind", ["curiosity", "rnd"])
def test_segment_rewards_are_the_transitions_rewards_on_real_rows(kind):
    spec = CONTINUOUS
    signal = _signal(kind, spec, encoding_size=8)
    signal.update(_dynamics(spec, 16, np.random.default_rng(5)))
    schema, sizes = segment_schema(spec), SegmentSizes.of(spec)
    rng = np.random.default_rng(6)
    F, H = 3, 4
    arrays = {f.name: rng.normal(size=((F, H) if f.per_row else (F,)) + f.shape(sizes)).astype(f.dtype)
              for f in schema.fields}
    arrays["length"] = np.array([4, 2, 1])
    seg = Segments(schema, arrays)
    rewards = signal.rewards(seg)
    assert rewards.shape == (F, H) and not rewards[~seg.row_mask].any()
    # row t of segment f: the transition (obs[f, t], action[f, t], obs[f, t + 1] or what followed)
    f, t = 0, 1
    one = {f"obs_{i}": o[f, t][None] for i, o in enumerate(seg.observations)}
    one |= {f"next_obs_{i}": o[f, t + 1][None] for i, o in enumerate(seg.observations)}
    one |= {"continuous": seg.continuous[f, t][None], "discrete": seg.discrete[f, t][None]}
    assert rewards[f, t] == pytest.approx(float(signal.rewards_for_batch(one)[0]), rel=1e-5)
    last = {f"obs_{i}": o[1, 1][None] for i, o in enumerate(seg.observations)}
    last |= {f"next_obs_{i}": o[1][None] for i, o in enumerate(seg.next_observations)}
    last |= {"continuous": seg.continuous[1, 1][None], "discrete": seg.discrete[1, 1][None]}
    assert rewards[1, 1] == pytest.approx(float(signal.rewards_for_batch(last)[0]), rel=1e-5)


@pytest.mark.parametrize("kind", ["curiosity", "rnd"])
def test_signal_state_round_trips_and_keeps_its_entries_from_the_start(kind):
    fresh = _signal(kind, DISCRETE, encoding_size=8)
    trained = _signal(kind, DISCRETE, encoding_size=8)
    batch = _dynamics(DISCRETE, 32, np.random.default_rng(7))
    for _ in range(3):
        trained.update(batch)
    state = trained.state_dict()
    assert state.keys() == fresh.state_dict().keys()  # a checkpoint taken before any update loads too
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh.rewards_for_batch(batch), trained.rewards_for_batch(batch))
    assert fresh.optimizer.steps == 3
    fresh.update(batch)  # and it trains on from there as the original does
    trained.update(batch)
    np.testing.assert_allclose(fresh.rewards_for_batch(batch), trained.rewards_for_batch(batch), rtol=1e-5)


CASES = [("ppo", "Simple1DContinuous"), ("ppo", "Simple1DDiscrete"), ("sac", "Simple1DContinuous"),
         ("sac", "Simple1DDiscrete")]


@pytest.mark.parametrize("kind", ["curiosity", "rnd"])
@pytest.mark.parametrize("trainer,env_name", CASES)
def test_ppo_and_sac_train_with_the_signal_and_report_its_stats(kind, trainer, env_name):
    from palaestra.envs.sources import make_env

    env = make_env(env_name, seed=3)
    spec = next(iter(env.behavior_specs.values()))
    env.close()
    signal_settings = {"curiosity": CuriositySettings(strength=0.1, encoding_size=16),
                       "rnd": RNDSettings(strength=0.1, encoding_size=16)}[kind]
    settings = TrainerSettings(**SETTINGS[trainer], reward_signals={"extrinsic": ExtrinsicSettings(),
                                                                    kind: signal_settings})
    torch.manual_seed(0)
    algorithm = make_algorithm(spec, settings, torch.device("cpu"), np.random.default_rng(0))
    fresh_state = algorithm.state_dict()
    updates = _train(algorithm, env_name, 600)
    assert updates
    stats = {key for update in updates for key in update}
    name = algorithm.signals[1].stat_name
    assert f"Policy/{name} Value Estimate" in stats
    assert ({"Losses/Curiosity Forward Loss", "Losses/Curiosity Inverse Loss"} if kind == "curiosity"
            else {"Losses/RND Loss"}) <= stats
    assert algorithm.signals[1].optimizer.steps > 0
    # its state is in the algorithm's checkpoint, which the checkpoint checks accept
    state = algorithm.state_dict()
    assert any(key.startswith(f"{kind}.model.") for key in state["signals"])
    optimizer_shapes = [p.shape for group in algorithm.optimizer.param_groups for p in group["params"]]
    check_algorithm_state(Path("c.pt"), state, fresh_state, optimizer_shapes)


# -- the extrinsic reward's return scale (reward_signals.extrinsic.normalize) ---------------------

def test_the_return_scale_follows_each_agent_s_discounted_return_across_its_segments():
    from palaestra.rewards.return_scale import ReturnScale

    rng = np.random.default_rng(0)
    gamma = 0.9
    # two batches; agent (slot) 3 has two segments one after the other in the first batch, slot 1
    # ends its episode in the first batch, slot 5 carries its return into the second
    batches = [
        dict(slot=np.array([3, 1, 3, 5]), length=np.array([4, 2, 3, 4]), episode_end=np.array([0, 1, 0, 0], bool)),
        dict(slot=np.array([1, 5, 3]), length=np.array([3, 1, 4]), episode_end=np.array([0, 1, 1], bool)),
    ]
    scale, carry, seen = ReturnScale(gamma), {}, []
    for batch in batches:
        reward = rng.normal(size=(len(batch["slot"]), 4))
        reward[np.arange(4)[None, :] >= batch["length"][:, None]] = 123.0  # padding: never read
        scale.observe(reward, batch["length"], batch["slot"], batch["episode_end"])
        for f, slot in enumerate(batch["slot"].tolist()):  # the reference: one agent step at a time
            ret = carry.get(slot, 0.0)
            for t in range(batch["length"][f]):
                ret = gamma * ret + reward[f, t]
                seen.append(ret)
            carry[slot] = 0.0 if batch["episode_end"][f] else ret
    seen = np.array(seen)
    count = 1e-4 + len(seen)  # VecNormalize's start: a count of 1e-4 with mean 0 and variance 1
    mean = seen.sum() / count
    var = (1e-4 * (1.0 + mean**2) + ((seen - mean) ** 2).sum()) / count
    assert scale.count == pytest.approx(count) and scale.mean == pytest.approx(mean)
    assert scale.var == pytest.approx(var, rel=1e-6)
    np.testing.assert_allclose(scale.returns[[1, 3, 5]], [carry[1], carry[3], carry[5]])
    np.testing.assert_allclose(scale.scale(np.array([1.0, 1e9])), [1 / np.sqrt(var + 1e-8), 10.0], rtol=1e-6)


def _five_step_segments(spec: BehaviorSpec, agents: int, reward: float) -> Segments:
    """One open segment of 5 rows of ``reward`` for each of ``agents`` agents (slots 0, 1, ...)."""
    sizes = SegmentSizes.of(spec)
    schema = segment_schema(spec)
    arrays = {f.name: np.zeros((agents, 5, *f.shape(sizes)) if f.per_row else (agents, *f.shape(sizes)),
                               f.dtype or np.float32) for f in schema.fields}
    arrays["env_reward"][:] = reward
    arrays["length"][:] = 5
    arrays["slot"][:] = np.arange(agents)
    return Segments(schema, arrays)


@pytest.mark.parametrize("trainer", ["ppo", "sac"])
def test_an_environment_reset_starts_each_dropped_agent_s_return_from_zero(trainer):
    # a lesson change or resampling resets the environments with episodes under way: those
    # episodes end unreported, and the return scale's running return of their agents must not
    # carry into the next episodes (only the restarted worker's slots where one of two restarts)
    spec = BehaviorSpec(((3,),), ActionSpec(continuous_size=1))
    settings = TrainerSettings(**SETTINGS[trainer], reward_signals={"extrinsic": ExtrinsicSettings(normalize=True)})
    algorithm = make_algorithm(spec, settings, torch.device("cpu"), np.random.default_rng(0))
    algorithm.collect(_five_step_segments(spec, agents=4, reward=1.0))
    scale = algorithm.signals[0].return_scale
    assert (scale.returns[:4] > 4.0).all()  # 1 + 0.99 + ...: every agent's episode is under way
    algorithm.drop_open_episodes(every=2, offset=1)
    assert scale.returns[1] == scale.returns[3] == 0.0 and scale.returns[0] > 4.0
    algorithm.drop_open_episodes()
    assert not scale.returns.any()


def test_episode_sums_take_an_agents_segments_in_order_within_one_batch():
    # a worker's round holds several segments of one agent: slot 3 ends an episode and starts the
    # next in one batch, slot 1 carries its sum into the second batch; clear() ends every episode
    from types import SimpleNamespace

    from palaestra.rewards.episode_sums import SignalEpisodeSums

    sums = SignalEpisodeSums([SimpleNamespace(stat_name="Extrinsic")])

    def batch(slot, length, episode_end, reward):
        mask = np.arange(3)[None, :] < np.array(length)[:, None]
        return (SimpleNamespace(slot=np.array(slot), row_mask=mask, episode_end=np.array(episode_end, bool)),
                [np.array(reward, float)])

    first = sums.add(*batch([3, 1, 3, 3], [3, 2, 1, 2], [0, 0, 1, 0],
                            [[1, 1, 1], [2, 2, 9], [4, 9, 9], [8, 8, 9]]))
    assert first == {"Policy/Extrinsic Reward": [7.0]}  # slot 3's first episode: 3 + 4
    second = sums.add(*batch([1, 3], [1, 1], [1, 1], [[5, 9, 9], [1, 9, 9]]))
    assert sorted(second["Policy/Extrinsic Reward"]) == [9.0, 17.0]  # slot 1: 4 + 5; slot 3: 16 + 1
    sums.add(*batch([2], [2], [0], [[1, 1, 9]]))
    sums.clear()
    assert sums.add(*batch([2], [1], [1], [[3, 9, 9]])) == {"Policy/Extrinsic Reward": [3.0]}
    # one restarted worker of two (its agents' slots are odd): only its sums start anew
    sums.add(*batch([2, 3], [1, 1], [0, 0], [[1, 9, 9], [1, 9, 9]]))
    sums.clear(every=2, offset=1)
    assert sums.add(*batch([2, 3], [1, 1], [1, 1], [[1, 9, 9], [1, 9, 9]])) == {"Policy/Extrinsic Reward": [2.0, 1.0]}


def test_waiting_segments_are_added_before_anything_else_changes_the_sums():
    # PPO rewards its experience at the update while a signal's model trains elsewhere
    # (rewards/background.py): its queued segments are added through ``waiting`` before a clear
    # or another add, so each episode's sum is what it would have been, reported later
    from types import SimpleNamespace

    from palaestra.rewards.episode_sums import SignalEpisodeSums

    sums = SignalEpisodeSums([SimpleNamespace(stat_name="GAIL")])

    def batch(slot, episode_end, reward):
        return (SimpleNamespace(slot=np.array([slot]), row_mask=np.ones((1, 1), bool),
                                episode_end=np.array([episode_end], bool)), [np.array([[reward]], float)])

    queue = []

    def add_waiting():
        ended: dict = {}
        while queue:
            for key, values in sums.add(*queue.pop(0)).items():
                ended.setdefault(key, []).extend(values)
        return ended

    sums.waiting = add_waiting
    assert sums.add(*batch(0, False, 1.0)) == {}  # slot 0's episode starts
    queue.append(batch(0, True, 2.0))  # and ends in a segment not rewarded yet
    sums.clear()  # an environment reset
    assert queue == [] and sums.take_unreported() == {"Policy/GAIL Reward": [3.0]}
    queue.append(batch(1, True, 4.0))
    assert sums.add(*batch(0, True, 8.0)) == {"Policy/GAIL Reward": [4.0, 8.0]}  # the waiting one first
    queue.append(batch(1, True, 16.0))
    assert sums.settle(report_later=True) == {} and sums.settle() == {"Policy/GAIL Reward": [16.0]}


def test_normalize_scales_the_extrinsic_reward_and_its_statistics_travel_in_checkpoints():
    spec = BehaviorSpec(((3,),), ActionSpec(continuous_size=1))
    segments = _five_step_segments(spec, agents=2, reward=10.0)
    plain, = make_signals(spec, {"extrinsic": ExtrinsicSettings(strength=0.5)}, torch.device("cpu"))
    scaled, = make_signals(spec, {"extrinsic": ExtrinsicSettings(strength=0.5, normalize=True)}, torch.device("cpu"))
    np.testing.assert_allclose(plain.rewards(segments), 5.0)
    rewards = scaled.rewards(segments)
    assert 0.0 < rewards.max() < 1.0  # returns of 10, 19, 27.1, ...: rewards of 10 are well under one std
    np.testing.assert_allclose(scaled.rewards_for_batch({"env_reward": np.array([10.0])}),
                               0.5 * scaled.return_scale.scale(np.array([10.0])))
    restored, = make_signals(spec, {"extrinsic": ExtrinsicSettings(normalize=True)}, torch.device("cpu"))
    restored.load_state_dict(scaled.state_dict())
    assert restored.return_scale.var == scaled.return_scale.var and restored.return_scale.count == scaled.return_scale.count
