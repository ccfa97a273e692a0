"""LSTM policies (networks/recurrent.py, rollout/sequences.py): memories carried per agent and
cleared at episode ends, training sequences that start from the stored memory (they reproduce
what the policy computed while acting), padding that counts for nothing, checkpoints, and the
exported model run step by step in onnxruntime with its memory carried."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from palaestra.algorithms.ppo import PPO, ppo_loss, ppo_loss_gradients
from palaestra.algorithms.sac import SAC
from palaestra.capabilities import settings_problems
from palaestra.envs.base import ActionSpec, BehaviorSpec, DecisionSteps, TerminalSteps
from palaestra.networks.accelerator import weight_layout
from palaestra.networks.numpy_network import MLPNetwork
from palaestra.networks.torch_acting import TorchActor
from palaestra.rollout.buffers import observations
from palaestra.rollout.collector import Collector
from palaestra.rollout.segments import Segments
from palaestra.rollout.sequences import into_sequences, sequence_order, sequence_positions
from palaestra.settings import load_trainer_config
from tests.conftest import write_yaml

MEMORY = 8


def _spec(continuous: bool, shapes=((3,),)) -> BehaviorSpec:
    return BehaviorSpec(tuple(shapes), ActionSpec(continuous_size=2) if continuous else ActionSpec(discrete_branches=(3, 2)))


def _settings(tmp_path, trainer: str = "ppo", sequence_length: int = 4, extra: str = ""):
    per_trainer = {"ppo": "  buffer_size: 64\n  num_epoch: 2\n",
                   "sac": "  buffer_size: 400\n  buffer_init_steps: 0\n  steps_per_update: 2\n"}.get(trainer, "")
    text = (f"B:\n  trainer: {trainer}\n  hidden_units: 16\n  num_layers: 1\n  normalize: false\n  time_horizon: 10\n"
            f"  batch_size: 16\n  use_recurrent: true\n  memory_size: {MEMORY}\n"
            f"  sequence_length: {sequence_length}\n{per_trainer}{extra}")
    return load_trainer_config(write_yaml(tmp_path / f"{trainer}.yaml", text)).for_behavior("B")


def _observations(spec, rng, n):
    return [rng.integers(0, 256, size=(n, *s), dtype=np.uint8) if len(s) == 3 else
            rng.normal(size=(n, *s)).astype(np.float32) for s in spec.observation_shapes]


def _run(ppo: PPO, spec: BehaviorSpec, steps: int, update: bool = True):
    """Act on random observations with 4 agents whose episodes end at different times; returns
    the segments collected."""
    collector = Collector(spec, ppo.settings.time_horizon, memory_size=ppo.memory_size)
    rng = np.random.default_rng(1)
    ids = np.arange(4)
    finished = []
    for t in range(steps):
        obs = _observations(spec, rng, 4)
        ended = ids[[t % 7 == 6, t % 5 == 4, False, t % 9 == 8]]
        terminal = TerminalSteps([o[ended] for o in obs], np.ones(len(ended), np.float32), ended,
                                 np.zeros(len(ended), bool)) if len(ended) else TerminalSteps.empty(spec)
        _, seg = collector.step(DecisionSteps(obs, rng.normal(size=4).astype(np.float32), ids), terminal, ppo.act)
        if seg is not None:
            finished.append(seg)
            ppo.collect(seg)
        while update and ppo.ready():
            ppo.update()
    return collector, finished


def test_sequences_keep_each_segments_rows_in_order_and_pad_after_them():
    mask = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    positions, rows = sequence_positions(mask, 4)
    # segment 0: 5 rows -> sequences 0 and 1 (rows 0-3, 4); segment 1: sequence 2; segment 2: 3 and 4
    assert rows == 20
    assert positions.tolist() == [0, 1, 2, 3, 4, 8, 9, 12, 13, 14, 15, 16, 17]
    columns = into_sequences({"x": np.arange(1, 14, dtype=np.float32)}, positions, rows)
    assert columns["valid"].sum() == 13 and columns["x"][5:8].tolist() == [0, 0, 0]
    order = sequence_order(rows, 4, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(20))
    assert all(order[i + 1] == order[i] + 1 for i in range(0, 20, 4) for i in range(i, i + 3))


@pytest.mark.parametrize("placement", ["after_layers", "before_layers"])
@pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "discrete"])
def test_training_sequences_reproduce_what_the_policy_computed_while_acting(tmp_path, continuous, placement):
    # the stored memory at each sequence's start, run through the sequence, gives exactly the
    # log-probabilities and values the policy acted with (ML-Agents' old bug: sequences from zeros)
    spec = _spec(continuous)
    torch.manual_seed(0)
    ppo = PPO(spec, _settings(tmp_path, extra=f"  lstm_placement: {placement}\n"), torch.device("cpu"),
              np.random.default_rng(0))
    assert ppo.policy.lstm_first == (placement == "before_layers")
    _, segments = _run(ppo, spec, 30, update=False)
    ppo.process_queued()
    data = {k: torch.as_tensor(v) for k, v in ppo.buffer.view().items()}
    real = data["valid"] > 0
    assert real.sum() == sum(int(s.length.sum()) for s in segments) and (~real).any()  # there is padding
    with torch.no_grad():
        out = ppo.policy.evaluate(observations(data), data["allowed"] if not continuous else None,
                                  data["continuous"] if continuous else None,
                                  data["discrete"] if not continuous else None,
                                  memory=data["memory"][::4], sequence_length=4)
        zeros = ppo.policy.evaluate(observations(data), data["allowed"] if not continuous else None,
                                    data["continuous"] if continuous else None,
                                    data["discrete"] if not continuous else None,
                                    memory=torch.zeros_like(data["memory"][::4]), sequence_length=4)
    torch.testing.assert_close(out.log_prob[real], data["log_prob"][real], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.values[real], data["old_values"][real], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(zeros.log_prob[real], data["log_prob"][real], atol=1e-4)


def test_memories_clear_when_an_episode_ends(tmp_path):
    spec = _spec(False)
    ppo = PPO(spec, _settings(tmp_path), torch.device("cpu"), np.random.default_rng(0))
    collector, segments = _run(ppo, spec, 7, update=False)  # agent 0's episode ended at step 6
    slot, other = collector.slots_for(np.array([0]))[0], collector.slots_for(np.array([2]))[0]
    assert collector.length[slot] == 1  # its new episode's first row: acted on with zeros
    assert not collector.memory_rows[slot, 0].any() and collector.agent_memory[slot].any()
    assert collector.memory_rows[other, 1:7].any()  # an episode under way carries its memory
    assert segments and all(not s.memory[:, 0].any() for s in segments)  # episodes start from zeros


def test_padding_rows_count_for_nothing_in_the_loss():
    rng = np.random.default_rng(0)
    n = 12
    batch = {k: torch.as_tensor(rng.normal(size=shape).astype(np.float32)) for k, shape in
             {"log_prob": (n,), "advantages": (n,), "old_values": (n, 2), "returns": (n, 2)}.items()}
    log_prob, entropy, values = (torch.as_tensor(rng.normal(size=s).astype(np.float32)) for s in ((n,), (n,), (n, 2)))
    valid = torch.ones(n)
    valid[[3, 7, 11]] = 0.0
    masked = ppo_loss(log_prob, entropy, values, batch | {"valid": valid}, 0.2, 0.01, 0.2)
    real = valid > 0
    dropped = ppo_loss(log_prob[real], entropy[real], values[real], {k: v[real] for k, v in batch.items()}, 0.2, 0.01, 0.2)
    for a, b in zip(masked, dropped):
        torch.testing.assert_close(a, b)
    # a padding row's log-probability (of a row of zeros under a converged many-dimension policy)
    # can overflow its ratio: it still weighs nothing, in the loss, its gradient and numpy's
    huge = log_prob.clone().requires_grad_(True)
    with torch.no_grad():
        huge[~real] = 95.0  # exp(95) is inf in float32
    loss, _, _ = ppo_loss(huge, entropy, values, batch | {"valid": valid}, 0.2, 0.01, 0.2)
    loss.backward()
    torch.testing.assert_close(loss, dropped[0])
    assert torch.isfinite(huge.grad).all() and (huge.grad[~real] == 0).all()
    grads = ppo_loss_gradients(huge.detach().numpy(), entropy.numpy(), values.numpy(),
                               {k: v.numpy() for k, v in batch.items()} | {"valid": valid.numpy()}, 0.2, 0.01, 0.2)
    assert np.isfinite(grads[0]).all() and (grads[0][~real.numpy()] == 0).all() and np.isfinite(grads[3])


# PPO with its LSTM after the layers (ML-Agents) and before them (lstm_placement: before_layers), SAC
ALGORITHMS = pytest.mark.parametrize("variant", ["ppo", "ppo-lstm-first", "sac"])


def _algorithm(variant, spec, tmp_path):
    torch.manual_seed(0)
    trainer, algorithm_class = ("sac", SAC) if variant == "sac" else ("ppo", PPO)
    extra = "  lstm_placement: before_layers\n" if variant == "ppo-lstm-first" else ""
    return algorithm_class(spec, _settings(tmp_path, trainer, extra=extra), torch.device("cpu"), np.random.default_rng(0))


ACTIONS = {"continuous": ActionSpec(continuous_size=2), "discrete": ActionSpec(discrete_branches=(3, 2)),
           "hybrid": ActionSpec(continuous_size=2, discrete_branches=(3,))}


# SAC takes continuous or discrete actions, not both
@pytest.mark.parametrize("variant,kind", [(v, k) for v in ("ppo", "ppo-lstm-first", "sac") for k in ACTIONS
                                          if (v, k) != ("sac", "hybrid")])
def test_recurrent_policies_act_in_numpy_as_their_torch_module_does(tmp_path, kind, variant):
    """On the CPU a recurrent MLP acts through the accelerator's numpy network (one LSTM step per
    tower: networks/numpy_layers.py's LSTMStep); step after step it computes what the torch
    module computes. Acting workers act with the module itself (accelerator.weight_layout)."""
    spec = BehaviorSpec(((3,), (2,)), ACTIONS[kind])
    algorithm = _algorithm(variant, spec, tmp_path)
    _run(algorithm, spec, 40)  # trained weights
    assert algorithm.update_count >= 1
    assert isinstance(algorithm._actor, MLPNetwork)
    assert weight_layout(algorithm.policy).network is None
    reference = TorchActor(algorithm.policy)
    rng = np.random.default_rng(4)
    memory = rng.normal(size=(5, algorithm.memory_size)).astype(np.float32)
    for _ in range(4):
        obs = _observations(spec, rng, 5)
        allowed = None if kind == "continuous" else rng.random((5, sum(spec.action_spec.discrete_branches))) > 0.3
        if allowed is not None:
            allowed[:, 0] = True  # an action left in every branch
            allowed[:, 3 if kind == "discrete" else 0] = True
        expected = reference.act(obs, allowed, True, memory)
        got = algorithm.act(obs, allowed, True, memory)
        np.testing.assert_allclose(got.continuous, expected.continuous, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(got.discrete, expected.discrete)
        for field in ("log_prob", "entropy", "memory"):
            np.testing.assert_allclose(getattr(got, field), getattr(expected, field), rtol=1e-4, atol=1e-5,
                                       err_msg=field)
        memory = expected.memory



@pytest.mark.parametrize("kind", list(ACTIONS))
@pytest.mark.parametrize("variant", ["ppo", "ppo-lstm-first"])
@pytest.mark.parametrize("beta,padded,normalize,signals", [(0.01, True, True, 2), (0.0, False, False, 1)])
def test_recurrent_ppo_gradients_in_numpy_match_torch_autograd(kind, variant, beta, padded, normalize, signals):
    """On the CPU recurrent PPO trains through the accelerator (networks/numpy_layers.py's
    LSTMSequences: both towers' LSTMs over the sequences, backpropagated through time): its loss
    and every parameter's gradient are those of the torch loss and autograd, from stored starting
    memories, with padding rows after each sequence's real ones."""
    from palaestra.settings import ExtrinsicSettings, TrainerSettings

    spec = BehaviorSpec(((3,), (2,)), ACTIONS[kind])
    settings = TrainerSettings(
        hidden_units=16, num_layers=1, normalize=normalize, batch_size=16, buffer_size=64, use_recurrent=True,
        memory_size=MEMORY, sequence_length=4, lstm_placement="before_layers" if variant == "ppo-lstm-first" else
        "after_layers", reward_signals={"extrinsic": ExtrinsicSettings(), "other": ExtrinsicSettings()} if signals == 2
        else {"extrinsic": ExtrinsicSettings()})
    torch.manual_seed(0)
    ppo = PPO(spec, settings, torch.device("cpu"), np.random.default_rng(0))
    assert ppo._accelerated is not None and ppo._numpy_adam is not None
    with torch.no_grad():
        for p in ppo.policy.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    if normalize:
        ppo.policy.normalizer.update(np.random.default_rng(1).normal(1.0, 2.0, size=(40, 5)).astype(np.float32))
    rng = np.random.default_rng(3)
    L, N = ppo.sequence_length, 5
    B = N * L
    obs = _observations(spec, rng, B)
    width = sum(spec.action_spec.discrete_branches)
    allowed = rng.random((B, width)) > 0.3
    allowed[:, np.cumsum([0, *spec.action_spec.discrete_branches])[:-1]] = True  # an action left in every branch
    memory = rng.normal(size=(B, ppo.memory_size)).astype(np.float32)
    # actions the policy allows, each row acting from a memory of its own
    acted = TorchActor(ppo.policy).act(obs, allowed if spec.action_spec.is_discrete else None, False, memory)
    valid = np.ones(B, np.float32)
    if padded:
        valid[[L - 1, 2 * L - 2, 2 * L - 1, B - 1]] = 0.0  # padding comes after a sequence's real rows
    batch = {
        **{f"obs_{i}": o for i, o in enumerate(obs)}, "allowed": allowed, "memory": memory, "valid": valid,
        "continuous": acted.continuous, "discrete": acted.discrete,
        "log_prob": rng.normal(-2.0, 0.5, B).astype(np.float32),
        "advantages": rng.normal(size=B).astype(np.float32),
        "old_values": rng.normal(size=(B, len(ppo.signals))).astype(np.float32),
        "returns": rng.normal(size=(B, len(ppo.signals))).astype(np.float32),
    }
    if not padded:
        del batch["valid"]
    losses_torch = ppo._torch_gradients({k: torch.as_tensor(v) for k, v in batch.items()}, 0.2, beta, 0.2)
    expected = {n: p.grad.clone() for n, p in ppo.policy.named_parameters()}
    for p in ppo.policy.parameters():
        p.grad.fill_(np.nan)  # every gradient must be written
    losses_numpy = ppo._accelerated_gradients(batch, 0.2, beta, 0.2)
    np.testing.assert_allclose(losses_numpy, losses_torch, rtol=1e-4, atol=1e-6)
    for name, param in ppo.policy.named_parameters():
        np.testing.assert_allclose(param.grad.numpy(), expected[name].numpy(), rtol=2e-3, atol=2e-6, err_msg=name)



def test_a_recurrent_ppo_update_in_numpy_gives_the_weights_torch_gives(tmp_path, monkeypatch):
    """A whole update (every epoch's mini-batches of sequences, gradient clipping, Adam) through
    the accelerator ends at the weights the torch loss, autograd and torch's Adam reach."""
    from palaestra.algorithms import ppo as ppo_module

    spec = BehaviorSpec(((3,), (2,)), ACTIONS["hybrid"])
    settings = _settings(tmp_path, extra="  max_grad_norm: 0.5\n")
    torch.manual_seed(0)
    numpy_ppo = PPO(spec, settings, torch.device("cpu"), np.random.default_rng(0))
    monkeypatch.setattr(ppo_module, "NumpyAdam", lambda params, optimizer: None)  # torch's own Adam
    monkeypatch.setattr(ppo_module, "accelerate", lambda module, rng=None: None)
    torch_ppo = PPO(spec, settings, torch.device("cpu"), np.random.default_rng(0))
    assert numpy_ppo._accelerated is not None and torch_ppo._accelerated is None
    torch_ppo.policy.load_state_dict(numpy_ppo.policy.state_dict())
    before = {name: p.detach().clone() for name, p in numpy_ppo.policy.named_parameters()}
    _, segments = _run(numpy_ppo, spec, 40, update=False)
    for seg in segments:
        torch_ppo.collect(seg)
    numpy_ppo.rng, torch_ppo.rng = np.random.default_rng(5), np.random.default_rng(5)  # the same mini-batches
    numpy_stats, torch_stats = numpy_ppo.update(), torch_ppo.update()
    for key in ("Losses/Policy Loss", "Losses/Value Loss"):
        assert numpy_stats[key] == pytest.approx(torch_stats[key], rel=1e-4)
    moved = 0.0
    for (name, a), b in zip(numpy_ppo.policy.named_parameters(), torch_ppo.policy.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
        moved = max(moved, float((a.detach() - before[name]).abs().max()))
    assert moved > 1e-3  # the update did change the weights



@pytest.mark.parametrize("variant", ["ppo", "ppo-lstm-first", "feed-forward"])
def test_ppo_values_each_row_from_the_memory_it_was_acted_on_with(tmp_path, variant):
    """PPO takes each row's value and each segment's bootstrap from the current critic at the
    update (acting computes none): a recurrent critic reads each row with the memory stored with
    it, and the observation after the segment's last row with the memory that row's step left."""
    spec = BehaviorSpec(((3,), (2,)), ACTIONS["hybrid"])
    if variant == "feed-forward":
        from palaestra.settings import ExtrinsicSettings, TrainerSettings

        torch.manual_seed(0)
        ppo = PPO(spec, TrainerSettings(hidden_units=16, num_layers=1, normalize=False, batch_size=16, buffer_size=64,
                                        time_horizon=10, reward_signals={"extrinsic": ExtrinsicSettings()}),
                  torch.device("cpu"), np.random.default_rng(0))
    else:
        ppo = _algorithm(variant, spec, tmp_path)
    _run(ppo, spec, 40)  # trained weights
    _, segments = _run(ppo, spec, 30, update=False)  # acted on with the weights of now
    seg = Segments.concatenate(segments)
    values, bootstrap = ppo._current_values(seg)
    mask = seg.row_mask
    with torch.no_grad():  # each real row alone, from its stored memory; the next observation after the last row's step
        rows = [torch.as_tensor(o[mask]) for o in seg.observations]
        memory = torch.as_tensor(seg.memory[mask]) if ppo.memory_size else None
        expected = ppo.policy.value(rows, memory).numpy()
        after = None
        if ppo.memory_size:
            last = (np.arange(len(seg.length)), seg.length - 1)
            _, after = ppo.policy.hidden([torch.as_tensor(o[last]) for o in seg.observations],
                                         torch.as_tensor(seg.memory[last]))
        expected_bootstrap = ppo.policy.value([torch.as_tensor(o) for o in seg.next_observations], after).numpy()
    np.testing.assert_allclose(values[mask], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bootstrap, expected_bootstrap, rtol=1e-4, atol=1e-5)
    # a few segments at a time (a buffer of images at once took gigabytes): the same estimates
    import palaestra.algorithms.ppo as ppo_module

    original = ppo_module.NO_GRAD_ROWS
    try:
        ppo_module.NO_GRAD_ROWS = 2 * seg.width
        chunked, chunked_bootstrap = ppo._current_values(seg)
    finally:
        ppo_module.NO_GRAD_ROWS = original
    assert seg.length.shape[0] > 2
    np.testing.assert_allclose(chunked, values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(chunked_bootstrap, bootstrap, rtol=1e-5, atol=1e-6)


@ALGORITHMS
@pytest.mark.parametrize("shapes", [((3,),), ((2,), (20, 20, 3))], ids=["vector", "vector+image"])
def test_updates_learn_and_checkpoints_restore_the_memory_networks(tmp_path, shapes, variant):
    spec = _spec(True, shapes)
    algorithm = _algorithm(variant, spec, tmp_path)
    before = {part: {k: v.clone() for k, v in weights.items() if isinstance(v, torch.Tensor)}
              for part, weights in algorithm.state_dict().items() if isinstance(weights, dict) and part != "optimizer"}
    _run(algorithm, spec, 60)
    assert algorithm.update_count >= 2
    state = algorithm.state_dict()
    lstm_weights = [(part, k) for part, weights in before.items() for k in weights if "lstm" in f"{part}.{k}"]
    assert len(lstm_weights) >= (8 if variant == "sac" else 4)  # SAC: the actor's, the critics' and targets'
    for part, name in lstm_weights:
        assert not torch.equal(before[part][name], state[part][name]), (part, name)
    fresh = _algorithm(variant, spec, tmp_path)
    fresh.load_state_dict(state)
    obs = _observations(spec, np.random.default_rng(2), 3)
    memory = np.random.default_rng(3).normal(size=(3, algorithm.memory_size))
    a = algorithm.act(obs, None, deterministic=True, memory=memory.astype(np.float32))
    b = fresh.act(obs, None, deterministic=True, memory=memory.astype(np.float32))
    np.testing.assert_allclose(a.continuous, b.continuous, rtol=1e-5)
    np.testing.assert_allclose(a.memory, b.memory, rtol=1e-5)


@ALGORITHMS
@pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "discrete"])
def test_the_exported_model_carries_its_memory_step_by_step_like_the_policy(tmp_path, continuous, variant):
    import onnxruntime as ort

    from palaestra.evaluation import model_input
    from palaestra.export import export_policy

    spec = _spec(continuous, ((3,), (20, 20, 3)))
    ppo = _algorithm(variant, spec, tmp_path)
    _run(ppo, spec, 30)
    export_policy(ppo.policy, tmp_path / "p.onnx")
    import onnx

    ops = {node.op_type for node in onnx.load(str(tmp_path / "p.onnx")).graph.node}
    assert not ops & {"Shape", "ConstantOfShape", "Expand", "Where"}, ops  # no shape read at run time
    session = ort.InferenceSession(str(tmp_path / "p.onnx"))
    names = [o.name for o in session.get_outputs()]
    assert {i.name: i.shape[1:] for i in session.get_inputs()}["recurrent_in"] == [1, MEMORY]
    rng = np.random.default_rng(4)
    memory = np.zeros((5, ppo.memory_size), np.float32)  # the policy's: PPO's actor and critic, SAC's actor
    exported_memory = np.zeros((5, 1, MEMORY), np.float32)  # the model's: the actor's
    for _ in range(6):
        obs = _observations(spec, rng, 5)
        expected = ppo.act(obs, None if continuous else np.ones((5, 5), bool), deterministic=True, memory=memory)
        feeds = {f"obs_{i}": model_input(o, to_channels_first=o.ndim == 4) for i, o in enumerate(obs)}  # as Unity feeds
        feeds["recurrent_in"] = exported_memory
        if not continuous:
            feeds["action_masks"] = np.ones((5, 5), np.float32)
        out = dict(zip(names, session.run(None, feeds)))
        assert out["memory_size"].tolist() == [float(MEMORY)]
        if continuous:
            np.testing.assert_allclose(out["deterministic_continuous_actions"], np.clip(expected.continuous, -1, 1),
                                       atol=1e-4)
        else:
            np.testing.assert_array_equal(out["deterministic_discrete_actions"], expected.discrete)
        np.testing.assert_allclose(out["recurrent_out"][:, 0], expected.memory[:, :MEMORY], atol=1e-4)
        memory, exported_memory = expected.memory, out["recurrent_out"]


def test_recurrent_settings_are_refused_where_not_built(tmp_path):
    cloning = _settings(tmp_path, "online_bc", extra="  brain_to_imitate: heuristic\n")
    assert any("use_recurrent: true (LSTM policies) is built for trainer" in p for p in settings_problems(cloning))
    assert settings_problems(_settings(tmp_path)) == []


def test_sac_sequences_reproduce_the_actor_while_acting_and_the_critics_memories(tmp_path):
    # one agent's long episode over several segments (time_horizon 10) and sequences (4 rows):
    # each sequence's stored memories continue exactly where the previous rows left them
    spec = _spec(True)
    sac = _algorithm("sac", spec, tmp_path)
    collector = Collector(spec, sac.settings.time_horizon, memory_size=sac.memory_size)
    rng = np.random.default_rng(1)
    rows = [_observations(spec, rng, 1) for _ in range(27)]
    for obs in rows:
        _, seg = collector.step(DecisionSteps(obs, np.zeros(1, np.float32), np.arange(1)),
                                TerminalSteps.empty(spec), sac.act)
        if seg is not None:
            sac.collect(seg)
    data = sac.buffer.state_dict()["columns"]
    real = data["valid"] > 0
    assert real.sum() == 20 and len(real) == 24  # two segments of 10 rows: 3 sequences each, 2 padded
    obs = torch.as_tensor(np.concatenate([r[0] for r in rows[:20]]))
    with torch.no_grad():  # the actor, step by step from zeros, against the stored memories
        memory, actor_memories = torch.zeros(1, MEMORY), []
        for o in obs:
            actor_memories.append(memory[0])
            memory = sac.policy.hidden([o[None]], memory)[1]
        np.testing.assert_allclose(data["memory"][real], torch.stack(actor_memories).numpy(), atol=1e-5)
        # the critics' LSTMs over the same rows, from zeros: their memory at each sequence's start
        features = sac._critic_features(obs, [obs], None)
        expected, state = [], torch.zeros(1, 2 * MEMORY)
        for row in range(20):
            if row % 10 % 4 == 0:
                expected.append(state[0].clone())
            state = sac.critic_lstm.final_memory(features[:, row][:, None, None], state, torch.tensor([1]))
    starts = np.nonzero(real & (np.arange(24) % 4 == 0))[0]
    np.testing.assert_allclose(data["critic_memory"][starts], torch.stack(expected).numpy(), atol=1e-5)


def test_sac_critics_start_from_zeros_after_the_environments_reset(tmp_path):
    # a new lesson or resampling resets every environment: as at an episode's end, the critics'
    # memories start again from zeros (the actor's are the collector's, zeroed there)
    spec = _spec(True)
    sac = _algorithm("sac", spec, tmp_path)
    collector = Collector(spec, sac.settings.time_horizon, memory_size=sac.memory_size)
    rng = np.random.default_rng(1)

    def steps(n):
        for _ in range(n):
            _, seg = collector.step(DecisionSteps(_observations(spec, rng, 1), np.zeros(1, np.float32), np.arange(1)),
                                    TerminalSteps.empty(spec), sac.act)
            if seg is not None:
                sac.collect(seg)

    steps(11)  # one segment of 10 rows, cut: the critics' memory carries on mid-episode
    assert np.abs(sac._critic_memory[0]).sum() > 0
    collector.drop_open_episodes()
    sac.drop_open_episodes()
    steps(11)
    data = sac.buffer.state_dict()["columns"]
    assert np.abs(data["critic_memory"][12]).sum() == 0 and np.abs(data["memory"][12]).sum() == 0  # the new episode's first row


SMALL_RECURRENT = """
1D:
  trainer: {trainer}
  batch_size: 16
  buffer_size: {buffer}
  hidden_units: 16
  num_layers: 1
  max_steps: {max_steps}
  summary_freq: 100
  time_horizon: 16
  use_recurrent: true
  memory_size: 8
  sequence_length: 4
"""


@pytest.mark.parametrize("trainer,buffer", [("ppo", 64), ("sac", 200)])
def test_a_recurrent_visual_run_resumes_and_its_model_runs_in_inference(run_cli, workdir, trainer, buffer):
    from palaestra.checkpoints import CheckpointManager

    env = ["--env=Simple1DDiscrete", "--run-id=r", "--seed=2"]
    images = ["--env-args", "num_visual=1", "step_size=0.2"]
    config = str(write_yaml(workdir / "c.yaml", SMALL_RECURRENT.format(trainer=trainer, buffer=buffer, max_steps=200)))
    assert run_cli(config, *env, *images).code == 0
    first = CheckpointManager.load(CheckpointManager(workdir / "models/r/1D", 5).latest())
    write_yaml(workdir / "c.yaml", SMALL_RECURRENT.format(trainer=trainer, buffer=buffer, max_steps=400))
    result = run_cli(config, *env, "--resume", *images)
    assert result.code == 0, result.log
    last = CheckpointManager.load(CheckpointManager(workdir / "models/r/1D", 5).latest())
    assert last["algorithm"]["step"] > 400 >= first["algorithm"]["step"]
    assert run_cli(config, *env, "--resume", "--inference", *images).code == 0
    # a feed-forward config cannot take this run's recurrent networks: the message says which settings
    write_yaml(workdir / "c.yaml", SMALL_RECURRENT.format(trainer=trainer, buffer=buffer, max_steps=600)
               .replace("use_recurrent: true", "use_recurrent: false"))
    result = run_cli(config, "--env=Simple1DDiscrete", "--run-id=other", "--initialize-from=r", *images)
    assert result.code == 1 and "use_recurrent" in result.log and "Traceback" not in result.log, result.log


def _changed_memories(memory: np.ndarray, L: int, starts: bool) -> np.ndarray:
    """``memory`` with other values at each sequence's first row (``starts``) or at every other row."""
    changed = memory.copy()
    rows = np.arange(len(memory)) % L == 0
    changed[rows if starts else ~rows] += 0.5
    return changed


@pytest.mark.parametrize("path", ["torch", "numpy"])
def test_a_recurrent_ppo_loss_reads_each_sequence_s_stored_starting_memory_and_no_other(tmp_path, path):
    # an update that ran its sequences from zeros instead still matched numpy against torch, and
    # passed the recurrent training tests (whose sequences mostly start episodes, from zeros)
    spec = _spec(True)
    ppo = _algorithm("ppo", spec, tmp_path)
    _run(ppo, spec, 40, update=False)
    ppo.process_queued()
    L = ppo.sequence_length
    data = {k: np.array(v) for k, v in ppo.buffer.view().items()}
    assert np.abs(data["memory"][::L]).max() > 0.01  # sequences that start within episodes

    def loss(memory):
        batch = dict(data, memory=memory)
        if path == "numpy":
            return ppo._accelerated_gradients(batch, 0.2, 0.01, 0.2)
        return ppo._torch_gradients({k: torch.as_tensor(v) for k, v in batch.items()}, 0.2, 0.01, 0.2)

    stored = loss(data["memory"])
    np.testing.assert_allclose(loss(_changed_memories(data["memory"], L, starts=False)), stored, rtol=1e-6)
    assert not np.allclose(loss(_changed_memories(data["memory"], L, starts=True)), stored, rtol=1e-4)


@pytest.mark.parametrize("memory", ["memory", "critic_memory"])
def test_a_recurrent_sac_loss_reads_each_sequence_s_stored_starting_memories(tmp_path, memory):
    # (recurrent SAC trains through autograd only)
    import dataclasses

    spec = _spec(True)
    sac = _algorithm("sac", spec, tmp_path)
    collector = Collector(spec, sac.settings.time_horizon, memory_size=sac.memory_size)
    rng = np.random.default_rng(1)
    for _ in range(27):  # one long episode: most sequences start within it
        _, seg = collector.step(DecisionSteps(_observations(spec, rng, 1), np.zeros(1, np.float32), np.arange(1)),
                                TerminalSteps.empty(spec), sac.act)
        if seg is not None:
            sac.collect(seg)
    prepared = sac._prepare(sac._sample())
    L = sac.sequence_length

    def losses(t):
        t = dataclasses.replace(t)
        stats = sac._autograd_gradients(t)
        # the critics' estimates (of their own memory only; the losses also read the targets')
        # and the actor's loss
        return np.array([float(stats["q_estimate"].sum()), float(stats["Losses/Policy Loss"])])

    stored = losses(prepared)
    others = dataclasses.replace(prepared, **{memory: _changed_memories(getattr(prepared, memory), L, starts=False)})
    starts = dataclasses.replace(prepared, **{memory: _changed_memories(getattr(prepared, memory), L, starts=True)})
    np.testing.assert_allclose(losses(others), stored, rtol=1e-6)
    changed = ~np.isclose(losses(starts), stored, rtol=1e-5)
    # the actor's memory moves its loss; the critics' memory moves their estimates (and, through
    # the critics, the actor's loss)
    assert changed[1] if memory == "memory" else changed[0], (losses(starts), stored)
