"""Details of settings and file formats ML-Agents users rely on: the flags' defaults and their
deprecated spellings, the legacy demo action field, VAIL's beta, the samplers' spread and what they
accept, a teacher behavior's action range, GAIL's done column, the exported model's batch axes, and
the legacy-key messages of trainer configs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from palaestra.curriculum import load_sampler
from palaestra.curriculum.samplers import GaussianSampler
from palaestra.demos import wire
from palaestra.demos.reader import HEADER_SIZE
from palaestra.demos.record import record
from palaestra.demos.writer import DemoWriter
from palaestra.envs.base import ActionSpec, BehaviorSpec, DecisionSteps
from palaestra.envs.sources import make_env
from palaestra.export import export_policy
from palaestra.options import RunOptions, UsageError, check_options, parse_args
from palaestra.rewards import make_signals
from palaestra.rewards.base import SignalContext
from palaestra.rewards.gail import INITIAL_BETA, Discriminator
from palaestra.settings import GAILSettings, load_trainer_config
from palaestra.teachers import make_teacher
from tests.conftest import write_yaml
from tests.test_networks import SPECS, make_policy


# -- the demo writer's legacy action field -------------------------------------------------------
def _record_bodies(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each AgentInfoActionPair record after the header and the brain parameters."""
    length, pos = wire.read_varint(data, HEADER_SIZE, len(data))
    pos += length
    length, meta_at = wire.read_varint(data, 0, len(data))
    steps = dict((n, a) for n, _, a, _ in wire.fields(data, meta_at, meta_at + length)).get(3, 0)
    spans = []
    for _ in range(steps):
        length, body = wire.read_varint(data, pos, len(data))
        spans.append((body, body + length))
        pos = body + length
    return spans


def test_a_discrete_only_demo_keeps_its_actions_as_floats_in_the_legacy_vector_actions_field(tmp_path):
    # ML-Agents 0.x loaders read AgentActionProto.vector_actions (field 1), not the discrete field
    spec = BehaviorSpec(((3,),), ActionSpec(0, (3, 4)))
    n = 6
    rng = np.random.default_rng(0)
    discrete = np.stack([rng.integers(0, 3, n), rng.integers(0, 4, n)], 1)
    discrete[0] = (2, 3)  # no row of zeros only: an empty field would read back as nothing
    path = tmp_path / "discrete.demo"
    with DemoWriter(path, "Behavior", spec) as writer:
        writer.write(observations=[rng.normal(size=(n, 3)).astype(np.float32)], rewards=np.zeros(n, np.float32),
                     done=np.zeros(n, bool), agent_ids=np.zeros(n, np.int64),
                     continuous_actions=np.zeros((n, 0), np.float32), discrete_actions=discrete,
                     has_action=np.ones(n, bool))
    data = path.read_bytes()
    spans = _record_bodies(data)
    assert len(spans) == n
    for row, (start, end) in enumerate(spans):
        action = [(a, b) for number, _, a, b in wire.fields(data, start, end) if number == 2]
        assert len(action) == 1
        fields = {number: (a, b) for number, _, a, b in wire.fields(data, *action[0])}
        legacy = wire.floats(data, *fields[1]) if 1 in fields else np.zeros(0, np.float32)
        np.testing.assert_array_equal(legacy, discrete[row].astype(np.float32))
        assert wire.varints(data, *fields[7]) == discrete[row].tolist()


# -- the command-line flags ----------------------------------------------------------------------
@pytest.mark.parametrize("name,expected", [
    ("time_scale", 20.0), ("save_freq", 50000), ("base_port", 5005), ("num_envs", 1), ("width", None),
    ("height", None), ("quality_level", 5), ("target_frame_rate", -1), ("capture_frame_rate", 60),
    ("keep_checkpoints", 5), ("seed", -1), ("run_id", "ppo"), ("lesson", 0), ("env", None), ("curriculum", None),
    ("sampler", None), ("initialize_from", None), ("resume", False), ("force", False), ("inference", False),
    ("no_graphics", False), ("debug", False), ("cpu", False),
])
def test_a_flag_left_out_takes_ml_agents_0_16_default(name, expected):
    # users' scripts and docs rely on mlagents-learn 0.16's defaults (reference section 1.1)
    options = parse_args(["c.yaml"])
    assert getattr(options, name) == expected
    assert getattr(RunOptions(trainer_config_path="c.yaml"), name) == expected


def test_the_deprecated_load_flag_still_resumes():
    # ML-Agents 0.16 kept --load as a hidden alias of --resume
    assert parse_args(["c.yaml", "--load"]).resume
    assert not parse_args(["c.yaml"]).resume


def test_the_highest_port_is_accepted_for_a_single_worker():
    # worker i listens on base_port + i: one worker at 65535 is still a valid port
    check_options(parse_args(["c.yaml", "--base-port=65535", "--num-envs=1"]))
    with pytest.raises(UsageError, match="past 65535"):
        check_options(RunOptions(trainer_config_path="c.yaml", env="Game.x86_64", base_port=65535, num_envs=2))


# -- VAIL's beta and GAIL's done column -----------------------------------------------------------
@pytest.fixture(scope="module")
def discrete_demo(tmp_path_factory):
    env = make_env("Simple1DDiscrete", seed=1)
    path = record(env, {"1D": "heuristic"}, episodes=5, out=tmp_path_factory.mktemp("demo"), seed=1)[0].path
    spec = env.behavior_specs["1D"]
    env.close()
    return path, spec


def test_vail_beta_stays_at_zero_when_the_kl_is_below_its_target(discrete_demo):
    # dual ascent on a Lagrange multiplier: it must stay >= 0 (a fresh bottleneck's KL is ~0 < target)
    path, spec = discrete_demo
    torch.manual_seed(0)
    settings = GAILSettings(demo_path=str(path), strength=1.0, encoding_size=16, use_vail=True, use_actions=True)
    signal = make_signals(spec, {"gail": settings}, torch.device("cpu"), SignalContext())[0]
    assert float(signal.beta) == INITIAL_BETA == 0.0
    batch = {k: v[:32].copy() for k, v in signal.expert.items()}
    for _ in range(3):
        stats = signal.update(batch)
        assert stats["Losses/GAIL KL Loss"] < 0.5  # below VAIL's target: the step pushes beta down
        assert float(signal.beta) == 0.0 and stats["Policy/GAIL Beta"] == 0.0


def test_the_discriminator_with_actions_reads_the_done_flag_as_its_last_column():
    # ML-Agents' GAIL feeds the done flag beside the actions: terminal transitions look different
    spec = BehaviorSpec(((3,),), ActionSpec(2, (3,)))
    model = Discriminator(spec, GAILSettings(demo_path="x.demo", use_actions=True, encoding_size=16))
    n = 4
    batch = {"obs_0": np.arange(n * 3, dtype=np.float32).reshape(n, 3),
             "continuous": np.full((n, 2), 0.5, np.float32), "discrete": np.array([[0], [1], [2], [1]]),
             "done": np.array([1.0, 0.0, 1.0, 0.0], np.float32)}
    x = model.input_array(batch)
    assert x.shape == (n, 3 + 2 + 3 + 1)
    np.testing.assert_array_equal(x[:, -1], batch["done"])


# -- the curriculum samplers ----------------------------------------------------------------------
def test_the_gaussian_sampler_s_spread_is_st_dev_not_its_square():
    # ML-Agents' gaussian sampler draws numpy normal(mean, st_dev)
    rng = np.random.default_rng(0)
    sampler = GaussianSampler(mean=1.0, st_dev=3.0)
    draws = np.array([sampler.sample(rng) for _ in range(20000)])
    assert abs(draws.std() - 3.0) < 0.15 and abs(draws.mean() - 1.0) < 0.15


def test_a_sampler_with_no_spread_is_accepted(tmp_path):
    # a fixed value written as a sampler (st_dev 0, or min_value == max_value) is valid in ML-Agents
    sampler = load_sampler(write_yaml(tmp_path / "s.yaml", """
        resampling-interval: 10
        mass: {sampler-type: gaussian, mean: 2.5, st_dev: 0}
        length: {sampler-type: uniform, min_value: 4, max_value: 4}
        """))
    assert sampler is not None


# -- a teacher behavior's actions -----------------------------------------------------------------
def test_a_teacher_behavior_s_continuous_actions_are_clipped_to_the_environment_s_range():
    # the collector clips the actions it sends to [-1, 1]: the labels must be what the env receives
    spec = BehaviorSpec(((2,),), ActionSpec(3))

    def act(obs, allowed, deterministic, memory=None):
        n = len(obs[0])
        return SimpleNamespace(continuous=np.tile(np.array([[3.0, -5.0, 0.25]], np.float32), (n, 1)),
                               discrete=np.zeros((n, 0), np.int64), memory=None)

    expert = SimpleNamespace(memory_size=0, act=act)
    env = SimpleNamespace(behavior_specs={"Student": spec, "Expert": spec})
    teacher = make_teacher("Expert", env, "Student", 0, {"Expert": expert})
    decision = DecisionSteps(obs=[np.zeros((2, 2), np.float32)], reward=np.zeros(2, np.float32),
                             agent_id=np.arange(2))
    np.testing.assert_array_equal(teacher.act(decision).continuous, [[1.0, -1.0, 0.25]] * 2)


# -- the exported model ---------------------------------------------------------------------------
def test_the_exported_model_s_action_outputs_have_a_dynamic_batch_axis(tmp_path):
    # Barracuda and onnxruntime run the model on every agent at once: outputs follow the input's batch
    import onnx

    path = tmp_path / "policy.onnx"
    export_policy(make_policy(SPECS["hybrid"]), path)
    graph = onnx.load(str(path)).graph
    actions = {"continuous_actions", "deterministic_continuous_actions", "discrete_actions",
               "deterministic_discrete_actions"}
    outputs = {o.name: o.type.tensor_type.shape.dim for o in graph.output if o.name in actions}
    assert set(outputs) == actions
    for name, dims in outputs.items():
        assert dims[0].dim_param == "batch" and not dims[0].HasField("dim_value"), name
    for i in graph.input:
        assert i.type.tensor_type.shape.dim[0].dim_param == "batch", i.name
    # and run: every batched output has the feed's rows, and a row's deterministic action does not
    # depend on the rows beside it
    import onnxruntime as ort

    session = ort.InferenceSession(str(path))
    batched = [o.name for o in graph.output if o.type.tensor_type.shape.dim
               and o.type.tensor_type.shape.dim[0].dim_param == "batch"]
    assert set(batched) >= actions
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.normal(size=[5] + [d.dim_value for d in i.type.tensor_type.shape.dim[1:]])
             .astype(np.float32) for i in graph.input}
    if "action_masks" in feeds:
        feeds["action_masks"] = np.ones_like(feeds["action_masks"])
    together = dict(zip(batched, session.run(batched, feeds)))
    for name in batched:
        assert together[name].shape[0] == 5, name
    for row in (0, 3):
        alone = dict(zip(batched, session.run(batched, {k: v[row:row + 1] for k, v in feeds.items()})))
        for name in ("deterministic_continuous_actions", "deterministic_discrete_actions"):
            assert alone[name].shape[0] == 1
            np.testing.assert_allclose(alone[name][0], together[name][row], rtol=1e-5, atol=1e-6, err_msg=name)


# -- the trainer config's legacy keys -------------------------------------------------------------
def test_the_old_self_play_ratio_key_points_to_its_0_16_name(tmp_path):
    # 0.15 configs say play_against_current_self_ratio; 0.16 renamed it
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", """
        B:
          self_play: {play_against_current_self_ratio: 0.3}
        """))
    cfg.for_behavior("B")
    assert len(cfg.warnings) == 1
    assert "legacy key" in cfg.warnings[0] and "play_against_latest_model_ratio" in cfg.warnings[0]
    assert "unknown key" not in cfg.warnings[0]


def test_burn_in_ratio_is_reported_as_a_legacy_key_not_an_unknown_one(tmp_path):
    # ML-Agents' own sample configs carried burn_in_ratio: a user should hear it had no effect
    cfg = load_trainer_config(write_yaml(tmp_path / "c.yaml", "B:\n  burn_in_ratio: 0.5\n"))
    cfg.for_behavior("B")
    assert len(cfg.warnings) == 1
    assert "legacy key" in cfg.warnings[0] and "burn_in_ratio" in cfg.warnings[0]
    assert "unknown key" not in cfg.warnings[0]
