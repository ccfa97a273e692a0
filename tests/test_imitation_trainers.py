"""The imitation-only trainers: ``offline_bc`` (demonstrations alone) and ``online_bc`` (DAgger with
a teacher named by ``brain_to_imitate``): their updates, the teacher's labels, checkpoints, the
run's errors, and (marked ``training``) 3DBall and GridWorld solved by imitation alone."""

from __future__ import annotations

import copy
import csv
import dataclasses
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from palaestra.algorithms import make_algorithm
from palaestra.algorithms.cloning import minibatch_rows
from palaestra.capabilities import acting_obstacle, settings_problems
from palaestra.checkpoints import CheckpointManager
from palaestra.demos.reader import DemoError
from palaestra.demos.record import Policy, record
from palaestra.envs.base import ActionTuple, EnvError
from palaestra.envs.builtin import BUILTIN_ENVS
from palaestra.envs.sources import make_env
from palaestra.evaluation import evaluate_onnx
from palaestra.rollout.collector import Collector
from palaestra.settings import ConfigError, TrainerSettings
from palaestra.stats import StatsReporter
from palaestra.teachers import make_teacher
from palaestra.trainer import BehaviorTrainer


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> dict[str, Path]:
    """Heuristic demonstrations of 3DBall (48 whole episodes: the heuristic keeps every ball up; 12
    were too few start states for the cloned policy to hold every ball from others) and
    GridWorld, recorded as a user would."""
    out = tmp_path_factory.mktemp("demos")
    paths = {}
    for name, episodes in (("3DBall", 48), ("GridWorld", 200)):
        env = make_env(name, seed=1)
        paths[name] = record(env, {name: "heuristic"}, episodes=episodes, out=out / name, seed=1)[0].path
        env.close()
    return paths


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Small networks on a shared machine: one thread is many times faster than several that wait
    for each other (the run itself limits them the same way, palaestra/machine.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _spec(env_name: str):
    env = BUILTIN_ENVS[env_name](seed=0)
    return env.behavior_specs[env_name]


def _offline(env_name: str, demo: Path, **settings):
    torch.manual_seed(0)
    s = TrainerSettings(trainer="offline_bc", demo_path=str(demo), hidden_units=64, learning_rate=1e-3,
                        **settings)
    return make_algorithm(_spec(env_name), s, torch.device("cpu"), np.random.default_rng(0), env_name)


def _demo_rows(algorithm) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in algorithm.examples.columns.items()}


# -- updates -----------------------------------------------------------------------------------

def test_an_epoch_takes_up_to_batches_per_epoch_distinct_minibatches():
    rng = np.random.default_rng(0)
    batches = minibatch_rows(1000, 64, 10, rng)
    assert [len(b) for b in batches] == [64] * 10 and len(np.unique(np.concatenate(batches))) == 640
    assert [len(b) for b in minibatch_rows(150, 64, 10, rng)] == [64, 64]  # the rows run out first
    assert [sorted(b) for b in minibatch_rows(30, 64, 10, rng)] == [list(range(30))]  # fewer rows than a batch


def test_an_update_takes_num_epoch_times_batches_per_epoch_gradient_steps(demos):
    algorithm = _offline("GridWorld", demos["GridWorld"], batches_per_epoch=3, num_epoch=2)
    stats = algorithm.update()
    assert set(stats) == {"Losses/Cloning Loss", "Policy/Learning Rate"} and stats["Losses/Cloning Loss"] > 0
    steps = {int(state["step"]) for state in algorithm.optimizer.state.values()}
    assert steps == {6} and algorithm.update_count == 1


@pytest.mark.parametrize("env_name", ["3DBall", "GridWorld"])
def test_offline_bc_learns_the_demonstrated_actions(demos, env_name):
    algorithm = _offline(env_name, demos[env_name])
    losses = [algorithm.update()["Losses/Cloning Loss"] for _ in range(150)]
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:3])
    rows = _demo_rows(algorithm)
    acted = algorithm.act([rows["obs_0"]], rows["allowed"] if env_name == "GridWorld" else None,
                          deterministic=True)
    if env_name == "3DBall":  # far closer than the best constant action
        error = np.mean((np.clip(acted.continuous, -1, 1) - rows["continuous"]) ** 2)
        assert error < 0.25 * rows["continuous"].var(axis=0).mean()
    else:  # agrees with the heuristic far more often than its most frequent move
        agreement = np.mean(acted.discrete[:, 0] == rows["discrete"][:, 0])
        majority = np.bincount(rows["discrete"][:, 0]).max() / len(rows["discrete"])
        assert agreement > max(0.8, majority + 0.3)


def test_steps_are_counted_and_episode_rewards_reported_but_not_learned_from(demos):
    algorithm = _offline("GridWorld", demos["GridWorld"])
    before = {k: v.clone() for k, v in algorithm.policy.state_dict().items()}
    env = BUILTIN_ENVS["GridWorld"](seed=0)
    trainer_steps = 0
    collector = Collector(algorithm.spec, 64)
    env.reset()
    rewards: list[float] = []
    for _ in range(200):
        decision, terminal = env.get_steps("GridWorld")
        actions, segments = collector.step(decision, terminal, algorithm.act)
        if segments is not None:
            trainer_steps += int(segments.length.sum())
            rewards += algorithm.collect(segments).get("Policy/Extrinsic Reward", [])
        env.set_actions("GridWorld", actions)
        env.step()
    assert algorithm.step == trainer_steps > 0 and rewards
    after = algorithm.policy.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # collecting never trains: only update does


# -- online_bc's teacher -------------------------------------------------------------------------

def _online_trainer(env, tmp_path: Path, teacher: str = "heuristic") -> BehaviorTrainer:
    settings = TrainerSettings(trainer="online_bc", brain_to_imitate=teacher, hidden_units=32, batch_size=32)
    return BehaviorTrainer("GridWorld", env.behavior_specs["GridWorld"], settings, torch.device("cpu"),
                           StatsReporter("t", []), CheckpointManager(tmp_path / "GridWorld", 5), tmp_path,
                           training=True, teacher=make_teacher(teacher, env, "GridWorld", 0))


def test_the_teacher_labels_exactly_the_observations_the_policy_acts_on(tmp_path):
    env = BUILTIN_ENVS["GridWorld"](seed=2)
    trainer = _online_trainer(env, tmp_path)
    acted_on, expected, allowed = [], [], []
    original_act = trainer.algorithm.act

    def spy(observations, mask, deterministic=False):
        acted_on.append(observations[0].copy())
        allowed.append(mask.copy())
        return original_act(observations, mask, deterministic)

    trainer.algorithm.act = spy
    env.reset()
    for _ in range(30):
        decision, terminal = env.get_steps("GridWorld")
        expected.append(env.heuristic().discrete.copy())  # what the scripted policy does in this state
        env.set_actions("GridWorld", trainer.act(decision, terminal))
        env.step()
    data = trainer.algorithm.examples.buffer.data
    assert trainer.algorithm.examples.size == 30 * env.n
    np.testing.assert_array_equal(data["obs_0"][: 30 * env.n], np.concatenate(acted_on))
    np.testing.assert_array_equal(data["discrete"][: 30 * env.n], np.concatenate(expected))
    np.testing.assert_array_equal(data["allowed"][: 30 * env.n], np.concatenate(allowed))


def test_a_reset_for_new_parameters_ends_every_agent_s_episode_for_the_teacher_too(tmp_path):
    env = BUILTIN_ENVS["GridWorld"](seed=2)
    trainer = _online_trainer(env, tmp_path)
    told = []
    trainer.teacher = dataclasses.replace(trainer.teacher, episodes_ended=told.append)
    env.reset()
    for _ in range(3):
        decision, terminal = env.get_steps("GridWorld")
        env.set_actions("GridWorld", trainer.act(decision, terminal))
        env.step()
    told.clear()  # (act told it of the episodes that ended on the way)
    trainer.end_episodes(env.get_steps("GridWorld")[1])
    assert sorted(np.concatenate(told).tolist()) == sorted(env.get_steps("GridWorld")[0].agent_id.tolist())


def test_a_teacher_of_another_action_shape_is_a_clear_error(tmp_path):
    env = BUILTIN_ENVS["GridWorld"](seed=2)
    trainer = _online_trainer(env, tmp_path)
    trainer.teacher = Policy(lambda decision: BUILTIN_ENVS["3DBall"](seed=0).heuristic())
    env.reset()
    decision, terminal = env.get_steps("GridWorld")
    with pytest.raises(Exception, match=r"brain_to_imitate: the teacher of behavior 'GridWorld' gave continuous "
                                        r"actions of shape \(12, 2\)"):
        trainer.act(decision, terminal)
    n = len(decision)
    trainer.teacher = Policy(lambda decision: ActionTuple(discrete=np.full((n, 1), 7, np.int32)))
    with pytest.raises(EnvError, match=r"the teacher of behavior 'GridWorld' gave discrete action 7 in branch 0, "
                                       r"which has 4 actions \(0 to 3\)"):
        trainer.act(decision, terminal)


def test_a_teacher_label_its_agent_s_mask_forbids_is_learned_without_the_mask(tmp_path, caplog):
    env = BUILTIN_ENVS["GridWorld"](seed=2)
    trainer = _online_trainer(env, tmp_path)
    env.reset()
    decision, _ = env.get_steps("GridWorld")
    masks = np.concatenate(decision.action_mask, axis=1)
    assert masks.any(axis=1).any()  # some agent stands by a wall
    forbidden = np.argmax(masks, axis=1)[:, None]  # a masked move where there is one, else move 0
    trainer.algorithm.teach(decision, ActionTuple(discrete=forbidden.astype(np.int32)))
    allowed = np.asarray(trainer.algorithm.examples.buffer.data["allowed"][: len(decision)])
    walled = masks.any(axis=1)
    assert allowed[walled].all()  # (under its mask the label's cross-entropy would be about 1e8)
    np.testing.assert_array_equal(allowed[~walled], ~masks[~walled])
    assert "chose actions the agents' action masks forbid" in caplog.text


@pytest.mark.parametrize("text,message", [
    ("GridWorld", None),  # the behavior's own name: its heuristic
    ("heuristic", None),
    ("nonsense", "expected heuristic (the built-in environment's scripted policy), a model .onnx, "
                 "package.module:function or another behavior of the environment (it has none)"),
    ("missing.onnx", "brain_to_imitate 'missing.onnx': no such model file"),
    ("./missing.onnx", "brain_to_imitate './missing.onnx': no such model file"),  # the path as the user wrote it
    ("no_such_module_xyz:act", "no_such_module_xyz"),
])
def test_brain_to_imitate_names_the_teacher(text, message):
    env = BUILTIN_ENVS["GridWorld"](seed=0)
    if message is None:
        env.reset()
        decision, _ = env.get_steps("GridWorld")
        np.testing.assert_array_equal(make_teacher(text, env, "GridWorld", 0).act(decision).discrete,
                                      env.heuristic().discrete)
    else:
        with pytest.raises(ConfigError, match=re.escape(message)) as error:
            make_teacher(text, env, "GridWorld", 0)
        assert "behavior 'GridWorld'" in str(error.value) and "--policy" not in str(error.value)


def test_a_teacher_that_fails_mid_run_is_named_by_brain_to_imitate(workdir, monkeypatch):
    from palaestra.demos.record import RecordError

    monkeypatch.syspath_prepend(str(workdir))
    monkeypatch.delitem(__import__("sys").modules, "exploding_teacher", raising=False)
    (workdir / "exploding_teacher.py").write_text("def act(steps, spec):\n    raise RuntimeError('teacher exploded')\n")
    env = BUILTIN_ENVS["GridWorld"](seed=0)
    teacher = make_teacher("exploding_teacher:act", env, "GridWorld", 0)
    env.reset()
    with pytest.raises(RecordError, match=r"^behavior 'GridWorld': brain_to_imitate 'exploding_teacher:act': raised "
                                          r"RuntimeError: teacher exploded$"):
        teacher.act(env.get_steps("GridWorld")[0])


@pytest.mark.parametrize("trainer", ["ppo", "online_bc"])  # a cloned policy teaches too (it once could not act)
def test_another_behavior_s_policy_can_be_the_teacher(trainer):
    grid = BUILTIN_ENVS["GridWorld"](seed=0)
    spec = grid.behavior_specs["GridWorld"]
    env = SimpleNamespace(behavior_specs={"Student": spec, "Expert": spec, "Ball": _spec("3DBall")})
    torch.manual_seed(0)
    extra = {"brain_to_imitate": "heuristic"} if trainer == "online_bc" else {}
    expert = make_algorithm(spec, TrainerSettings(trainer=trainer, hidden_units=16, **extra), torch.device("cpu"),
                            np.random.default_rng(0), "Expert")
    teacher = make_teacher("Expert", env, "Student", 0, {"Expert": expert})
    grid.reset()
    decision, _ = grid.get_steps("GridWorld")
    allowed = ~np.concatenate(decision.action_mask, axis=1)
    np.testing.assert_array_equal(teacher.act(decision).discrete,
                                  expert.act([decision.obs[0]], allowed, deterministic=True).discrete)
    with pytest.raises(ConfigError, match=r"brain_to_imitate 'Ball': that behavior has observations \[\[8\]\]"):
        make_teacher("Ball", env, "Student", 0, {"Ball": expert})
    # Unity behaviors carry their team: the name before it names the teacher, as config sections do
    teams = SimpleNamespace(behavior_specs={"Student?team=0": spec, "Expert?team=0": spec})
    teacher = make_teacher("Expert", teams, "Student?team=0", 0, {"Expert?team=0": expert})
    np.testing.assert_array_equal(teacher.act(decision).discrete,
                                  expert.act([decision.obs[0]], allowed, deterministic=True).discrete)


def test_a_recurrent_behavior_teaches_with_each_agent_s_memory_carried_and_zeroed_at_episode_ends():
    ball = BUILTIN_ENVS["3DBall"](seed=0)
    spec = ball.behavior_specs["3DBall"]
    env = SimpleNamespace(behavior_specs={"Student": spec, "Expert": spec})
    torch.manual_seed(0)
    expert = make_algorithm(spec, TrainerSettings(trainer="ppo", hidden_units=16, use_recurrent=True, memory_size=8,
                                                  sequence_length=4), torch.device("cpu"), np.random.default_rng(0),
                            "Expert")
    teacher = make_teacher("Expert", env, "Student", 0, {"Expert": expert})
    ball.reset()
    decision, _ = ball.get_steps("3DBall")
    first = expert.act(decision.obs, None, deterministic=True)  # every agent from zero memory
    np.testing.assert_allclose(teacher.act(decision).continuous, np.clip(first.continuous, -1, 1), atol=1e-6)
    carried = expert.act(decision.obs, None, deterministic=True, memory=first.memory)
    ended = decision.agent_id[:5]  # five agents' episodes end: they start again from zero memory
    teacher.episodes_ended(ended)
    expected = np.where(np.isin(decision.agent_id, ended)[:, None], first.continuous, carried.continuous)
    assert not np.allclose(first.continuous, carried.continuous)
    np.testing.assert_allclose(teacher.act(decision).continuous, np.clip(expected, -1, 1), atol=1e-6)


# -- checkpoints -----------------------------------------------------------------------------------

def test_a_checkpoint_restores_the_policy_optimizer_and_step(demos):
    first = _offline("3DBall", demos["3DBall"])
    for _ in range(5):
        first.update()
    first.step = 1234
    state = copy.deepcopy(first.state_dict())  # as a saved checkpoint: no tensor shared with the first
    second = _offline("3DBall", demos["3DBall"])
    second.load_state_dict(state)
    obs = [_demo_rows(first)["obs_0"][:50]]
    np.testing.assert_array_equal(first.act(obs, None, True).continuous, second.act(obs, None, True).continuous)
    assert (second.step, second.update_count) == (1234, 5)
    # both continue identically: same weights and Adam moments
    first.rng, second.rng = np.random.default_rng(7), np.random.default_rng(7)
    torch.manual_seed(1)
    first.update()
    torch.manual_seed(1)
    second.update()
    np.testing.assert_array_equal(first.act(obs, None, True).continuous, second.act(obs, None, True).continuous)
    weights_only = _offline("3DBall", demos["3DBall"])
    weights_only.load_state_dict(state, weights_only=True)
    assert weights_only.step == 0


def test_save_replay_buffer_keeps_online_bc_s_teacher_labels_across_resume(tmp_path):
    env = BUILTIN_ENVS["GridWorld"](seed=2)
    settings = TrainerSettings(trainer="online_bc", brain_to_imitate="heuristic", hidden_units=32,
                               save_replay_buffer=True)

    def trainer() -> BehaviorTrainer:
        return BehaviorTrainer("GridWorld", env.behavior_specs["GridWorld"], settings, torch.device("cpu"),
                               StatsReporter("t", []), CheckpointManager(tmp_path / "GridWorld", 5), tmp_path,
                               training=True, teacher=make_teacher("heuristic", env, "GridWorld", 0))

    first = trainer()
    env.reset()
    for _ in range(20):
        decision, terminal = env.get_steps("GridWorld")
        env.set_actions("GridWorld", first.act(decision, terminal))
        env.step()
    first.save(global_step=20)
    assert first.replay_path.is_file()
    second = trainer()
    second.restore_newest(second.checkpoints, weights_only=False, set_aside=False, advice="")
    labels, restored = first.algorithm.examples, second.algorithm.examples
    assert restored.size == labels.size == 20 * env.n
    for key, column in labels.buffer.data.items():
        np.testing.assert_array_equal(restored.buffer.data[key][: restored.size], column[: labels.size])


def test_demonstrations_that_do_not_fit_are_refused_naming_demo_path(demos, tmp_path):
    with pytest.raises(DemoError, match="demo_path .*do not fit the behavior"):
        _offline("GridWorld", demos["3DBall"])
    with pytest.raises(DemoError, match="demo_path .*nowhere.demo"):
        _offline("GridWorld", tmp_path / "nowhere.demo")


# -- settings and capabilities ---------------------------------------------------------------------

def test_the_bc_trainers_have_the_defaults_of_ml_agents_last_configs_and_need_their_source():
    offline = TrainerSettings(trainer="offline_bc")
    online = TrainerSettings(trainer="online_bc")
    for s in (offline, online):
        assert (s.batch_size, s.max_steps, s.summary_freq, s.batches_per_epoch, s.num_epoch) == (64, 50000, 1000, 10, 1)
    assert settings_problems(offline) == ["trainer 'offline_bc' needs demo_path: a .demo file or a folder of them"]
    assert settings_problems(online) == ["trainer 'online_bc' needs brain_to_imitate: heuristic, a model .onnx, "
                                         "package.module:function or another behavior's name"]
    assert settings_problems(TrainerSettings(trainer="online_bc", brain_to_imitate="heuristic")) == []
    # activation is not read by them (warned about, or taken from a default: written for the PPO
    # behaviors): it was refused, telling the user to remove a key the PPO behaviors need
    assert settings_problems(TrainerSettings(trainer="online_bc", brain_to_imitate="heuristic", activation="tanh")) == []
    assert "learns between environment steps" in acting_obstacle(offline)
    assert "learns between environment steps" in acting_obstacle(online)


# -- runs ------------------------------------------------------------------------------------------

RUN = """
GridWorld:
  trainer: {trainer}
  {source}
  hidden_units: 64
  max_steps: {max_steps}
  summary_freq: 900
"""


def _config(workdir: Path, trainer: str, source: str, max_steps: int = 1800) -> str:
    (workdir / "c.yaml").write_text(RUN.format(trainer=trainer, source=source, max_steps=max_steps))
    return "c.yaml"


def _checkpoint_step(workdir: Path, run: str) -> int:
    found = CheckpointManager(workdir / "models" / run / "GridWorld", 5).list()
    return found[-1][0]


@pytest.mark.parametrize("trainer,source", [("offline_bc", "demo_path: {demo}"),
                                            ("online_bc", "brain_to_imitate: heuristic")])
def test_a_run_reports_the_cloning_loss_and_returns_resumes_and_runs_inference(run_cli, workdir, demos, trainer,
                                                                               source):
    source = source.format(demo=demos["GridWorld"])
    result = run_cli(_config(workdir, trainer, source), "--env=GridWorld", "--run-id=bc")
    assert result.code == 0, result.log
    scalars = EventAccumulator(str(workdir / "summaries" / "bc_GridWorld")).Reload().Tags()["scalars"]
    assert {"Losses/Cloning Loss", "Environment/Cumulative Reward", "Policy/Extrinsic Reward"} <= set(scalars)
    first = _checkpoint_step(workdir, "bc")
    assert first >= 1800 and (workdir / "models/bc/GridWorld.onnx").is_file()
    returns = evaluate_onnx(make_env("GridWorld", seed=3), workdir / "models/bc/GridWorld.onnx", episodes=5)
    assert len(returns) == 5
    resumed = run_cli(_config(workdir, trainer, source, max_steps=3600), "--env=GridWorld", "--run-id=bc", "--resume")
    assert resumed.code == 0, resumed.log
    assert _checkpoint_step(workdir, "bc") >= 3600
    inference = run_cli(_config(workdir, trainer, source, max_steps=3600), "--env=GridWorld", "--run-id=bc",
                        "--inference")
    assert inference.code == 0, inference.log


@pytest.mark.parametrize("trainer,source,flags,message", [
    ("offline_bc", "", [], "behavior 'GridWorld': trainer 'offline_bc' needs demo_path"),
    ("online_bc", "", [], "behavior 'GridWorld': trainer 'online_bc' needs brain_to_imitate"),
    ("offline_bc", "demo_path: nowhere.demo", [], "c.yaml: behavior 'GridWorld': demo_path 'nowhere.demo': nowhere.demo: "
     "no such demonstration file or folder (a relative path is read from the working directory, "),
    ("offline_bc", "demo_path: {ball}", [], "do not fit the behavior"),
    ("online_bc", "brain_to_imitate: keyboard", [], "brain_to_imitate 'keyboard': expected heuristic"),
    ("online_bc", "brain_to_imitate: heuristic", ["--num-envs=2"],
     "where its scripted heuristic cannot label this process's decisions: run it in this process (--num-envs=1, "
     "without --acting=workers)"),
    ("online_bc", "brain_to_imitate: heuristic", ["--acting=workers"],
     "the environment runs in worker processes (--num-envs above 1, or --acting=workers)"),
    ("offline_bc", "demo_path: {grid}", ["--num-envs=2", "--acting=workers"],
     "offline_bc learns between environment steps"),
    ("offline_bc", "demo_path: {grid}\n  behavioral_cloning: {{demo_path: {grid}, strength: 0.5, steps: 0}}", [],
     "behavioral_cloning (set in section 'GridWorld') is read by trainers ppo and sac only; trainer 'offline_bc' "
     "cannot use it: remove the section"),
])
def test_what_the_bc_trainers_cannot_use_is_one_clear_error_before_training(run_cli, workdir, demos, trainer, source,
                                                                            flags, message):
    source = source.format(ball=demos["3DBall"], grid=demos["GridWorld"])
    result = run_cli(_config(workdir, trainer, source), "--env=GridWorld", "--run-id=bad", *flags)
    assert result.code == 1 and message in result.log and "Traceback" not in result.log, result.log
    assert "ignores it" not in result.log  # no warning that the error contradicts
    assert not (workdir / "summaries").exists()


# -- solving by imitation alone ----------------------------------------------------------------------

def last_summary_reward(workdir: Path, category: str) -> float:
    with open(workdir / "summaries" / f"{category}.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["Environment/Cumulative Reward"] not in ("", "None")]
    return float(rows[-1]["Environment/Cumulative Reward"])


SOLVE = """
{env}:
  trainer: {trainer}
  {source}
  max_steps: {max_steps}
  summary_freq: {summary_freq}
"""


@pytest.mark.training
@pytest.mark.parametrize("trainer,env_name,max_steps,summary_freq,threshold,exported", [
    ("offline_bc", "3DBall", 36000, 12000, 90.0, 90.0),
    ("online_bc", "3DBall", 36000, 12000, 90.0, 90.0),
    ("online_bc", "GridWorld", 18000, 9000, 0.8, 0.8),  # 0.964-0.965 at 18k on seeds 2-4
])
def test_imitation_alone_solves_the_environment(run_cli, workdir, demos, trainer, env_name, max_steps, summary_freq,
                                                threshold, exported):
    # No reward is learned from: offline_bc clones the heuristic's demonstrations, online_bc asks
    # the heuristic for its action at every state the policy visits. The thresholds (3DBall
    # >= 90, GridWorld >= 0.8, as PPO's tests) hold for the last summary's episodes on seeds 1-4
    # (docs/imitation.md), and the exported model's deterministic episodes in other start states
    # reach them too (offline_bc from 48 recorded episodes, seeds 1-6: 98.9 to 100; from 12, one
    # seed of three let balls fall, 69.8: too few start states recorded).
    source = f"demo_path: {demos[env_name]}" if trainer == "offline_bc" else "brain_to_imitate: heuristic"
    (workdir / "c.yaml").write_text(SOLVE.format(env=env_name, trainer=trainer, source=source, max_steps=max_steps,
                                                 summary_freq=summary_freq))
    result = run_cli("c.yaml", f"--env={env_name}", "--run-id=r", "--seed=1")
    assert result.code == 0, result.log
    assert last_summary_reward(workdir, f"r_{env_name}") >= threshold
    returns = evaluate_onnx(make_env(env_name, seed=3, num_areas=2), workdir / f"models/r/{env_name}.onnx",
                            episodes=20)
    assert len(returns) == 20 and np.mean(returns) >= exported


def test_a_heuristic_teacher_an_environment_lacks_is_not_blamed_on_num_envs(run_cli, workdir):
    config = workdir / "c.yaml"
    config.write_text("Pendulum-v1:\n  trainer: online_bc\n  brain_to_imitate: heuristic\n  max_steps: 100\n")
    result = run_cli(str(config), "--env=Pendulum-v1", "--dry-run")
    assert result.code == 1 and "this environment has no scripted heuristic (the built-in environments have " \
        "one): give a model .onnx or package.module:function" in result.log
    assert "--num-envs=1" not in result.log  # it runs in this process already


def test_a_heuristic_teacher_in_worker_processes_says_to_train_in_one(run_cli, workdir):
    # it used to name an internal class
    config = workdir / "c.yaml"
    config.write_text("Basic:\n  trainer: online_bc\n  brain_to_imitate: heuristic\n  max_steps: 100\n")
    result = run_cli(str(config), "--env=Basic", "--num-envs=2", "--dry-run")
    assert result.code == 1 and "WorkerPoolEnv" not in result.log
    assert "the environment runs in worker processes (--num-envs above 1, or --acting=workers), where its scripted " \
        "heuristic cannot label this process's decisions: run it in this process (--num-envs=1" in result.log


@pytest.mark.parametrize("small,big,loop", [
    ("BigWallJump", "SmallWallJump", "SmallWallJump -> BigWallJump -> SmallWallJump"),
    ("BigWallJump", "BigWallJump", None),  # Big's own name: its heuristic, which Small then learns from
])
def test_behaviors_that_teach_each_other_in_a_loop_are_refused(run_cli, workdir, small, big, loop):
    config = workdir / "c.yaml"
    config.write_text(f"default:\n  trainer: online_bc\n  max_steps: 100\nSmallWallJump:\n  brain_to_imitate: {small}\n"
                      f"BigWallJump:\n  brain_to_imitate: {big}\n")
    result = run_cli(str(config), "--env=WallJump", "--dry-run")
    if loop is None:
        assert result.code == 0, result.log
        return
    assert result.code == 1, result.log
    assert (f"behavior 'SmallWallJump': brain_to_imitate 'BigWallJump' starts a loop of teachers ({loop}), each "
            "learning from another learner: none of them has a teacher that knows the task") in result.log


@pytest.mark.parametrize("text", ["Tennis", "Tennis?team=0"])
def test_a_team_behavior_s_own_name_means_the_heuristic_too(text):
    # "Tennis" names both teams: it was refused as no other behavior, although it is the behavior's own
    env = BUILTIN_ENVS["Tennis"](seed=0)
    env.reset()
    behavior = "Tennis?team=0"
    decision, _ = env.get_steps(behavior)
    taught = make_teacher(text, env, behavior, 0).act(decision)
    np.testing.assert_array_equal(taught.discrete, make_teacher("heuristic", env, behavior, 0).act(decision).discrete)
    assert len(taught.discrete) == len(decision) > 0


def test_online_bc_keeps_buffer_size_labels_and_refuses_more_than_memory_holds(run_cli, workdir):
    # its labels were always 200,000 rows, whatever their size: large images ran out of memory at
    # the first label, and the message named buffer_size, which online_bc ignored
    from palaestra.algorithms.online_bc import OnlineBC
    from palaestra.settings import OnlineBCSettings

    spec = BUILTIN_ENVS["GridWorld"](seed=0).behavior_specs["GridWorld"]
    algorithm = OnlineBC(spec, OnlineBCSettings(buffer_size=100), torch.device("cpu"), behavior="GridWorld")
    assert algorithm.examples.buffer.capacity == 100
    config = workdir / "c.yaml"
    config.write_text("GridWorld:\n  trainer: online_bc\n  brain_to_imitate: heuristic\n  buffer_size: 1.0e15\n")
    for dry_run in (["--dry-run"], []):
        result = run_cli(str(config), "--env=GridWorld", "--run-id=big", *dry_run)
        assert result.code == 1 and "Traceback" not in result.log and "ignores it" not in result.log
        assert (f"{config}: behavior 'GridWorld': buffer_size 1,000,000,000,000,000 (section 'GridWorld'): the "
                "teacher's labels, 1,000,000,000,000,000 transitions of at least") in result.log, result.log
