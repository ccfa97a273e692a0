"""Recording demonstrations (palaestra/demos/record.py): every kind of policy on every kind of
environment source, what the files hold (rows aligned: each observation with the action taken on
it), and a clear one-line error with no file left behind for every kind of bad input."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from onnx import TensorProto, helper

from palaestra.demos.check import check_demonstrations
from palaestra.demos.reader import read_demonstrations
from palaestra.demos.record import RecordError, demo_file_name, main, policies_by_behavior, record
from palaestra.envs.sources import make_env
from tests.conftest import REPO, save_onnx


def _record(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_heuristic_of_a_built_in_environment(workdir, capsys):
    code, out, err = _record(["--env=3DBall", "--policy=heuristic", "--episodes=2", "--max-steps=5000"], capsys)
    assert code == 0, err
    assert out.startswith("3DBall: 2 episodes, ") and "mean reward 100 " in out and "demos/3DBall.demo" in out
    demo = read_demonstrations(workdir / "demos" / "3DBall.demo")
    env = make_env("3DBall")
    assert check_demonstrations(demo, env.behavior_specs["3DBall"], "3DBall") == []
    assert demo.behavior_name == "3DBall" and demo.episodes == 2 and demo.meta.number_episodes == 2
    assert demo.meta.number_steps == len(demo) and demo.meta.mean_reward == pytest.approx(100.0, abs=1e-3)
    # each episode: decisions with actions, then the record that ends it (no action, as Unity writes it)
    assert demo.done.sum() == 2 and not demo.has_action[demo.done].any() and demo.has_action[~demo.done].all()
    assert demo.max_step_reached[demo.done].all()  # the heuristic keeps the ball up until the step limit
    for episode in demo.episode_slices():
        assert len(set(demo.agent_ids[episode].tolist())) == 1 and demo.done[episode][-1]


def test_each_recorded_action_belongs_to_the_observation_beside_it(workdir, capsys):
    # Simple1D: the observation is the goal's sign, the heuristic moves towards it
    code, _, err = _record(["--env=Simple1DDiscrete", "--policy=heuristic", "--episodes=12"], capsys)
    assert code == 0, err
    demo = read_demonstrations(workdir / "demos" / "1D.demo")
    acted = demo.has_action
    np.testing.assert_array_equal(demo.discrete_actions[acted, 0], (demo.observations[0][acted, 0] > 0).astype(int))
    assert demo.episodes == 12 and demo.mean_episode_reward == pytest.approx(1.01, abs=1e-4)
    assert demo.meta.mean_reward == pytest.approx(1.01, abs=1e-4)


def test_action_masks_are_recorded_and_respected_by_random(workdir, capsys):
    code, _, err = _record(["--env=GridWorld", "--policy=random", "--episodes=5", "--seed=3"], capsys)
    assert code == 0, err
    demo = read_demonstrations(workdir / "demos" / "GridWorld.demo")
    assert demo.action_masks is not None and demo.has_mask[demo.has_action].all()
    chosen = demo.action_masks[np.flatnonzero(demo.has_action), demo.discrete_actions[demo.has_action, 0]]
    assert not chosen.any()  # no masked action was taken


def test_a_gymnasium_environment_with_a_python_function(workdir, capsys, monkeypatch):
    monkeypatch.delitem(sys.modules, "my_policy", raising=False)
    (workdir / "my_policy.py").write_text(textwrap.dedent("""
        import numpy as np

        def push(steps, spec):
            # CartPole: push the way the pole leans (one value per agent: a vector does)
            return (steps.obs[0][:, 2] > 0).astype(np.int64)
    """))
    code, out, err = _record(["--env=CartPole-v1", "--policy=my_policy:push", "--episodes=3", "--num-areas=2"],
                             capsys)
    assert code == 0, err
    demo = read_demonstrations(workdir / "demos" / "CartPole-v1.demo")
    acted = demo.has_action
    np.testing.assert_array_equal(demo.discrete_actions[acted, 0], (demo.observations[0][acted, 2] > 0).astype(int))
    assert demo.episodes == 3 and demo.spec.action_spec.discrete_branches == (2,)
    assert demo.meta.mean_reward == pytest.approx(demo.rewards.sum() / 3)


def _linear_onnx(path, obs_size: int, weights: np.ndarray, discrete: bool) -> None:
    """A model with Palaestra's (and ML-Agents 2.x's) tensor names: actions = obs @ weights, or
    for discrete actions the index of the largest."""
    w = helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.ravel().tolist())
    nodes = [helper.make_node("MatMul", ["obs_0", "w"], ["scores"])]
    if discrete:
        nodes += [helper.make_node("ArgMax", ["scores"], ["index"], axis=1, keepdims=1),
                  helper.make_node("Cast", ["index"], ["deterministic_discrete_actions"], to=TensorProto.FLOAT)]
        output = helper.make_tensor_value_info("deterministic_discrete_actions", TensorProto.FLOAT, ["batch", 1])
    else:
        nodes[0] = helper.make_node("MatMul", ["obs_0", "w"], ["deterministic_continuous_actions"])
        output = helper.make_tensor_value_info("deterministic_continuous_actions", TensorProto.FLOAT,
                                               ["batch", weights.shape[1]])
    graph = helper.make_graph(nodes, "linear", [helper.make_tensor_value_info("obs_0", TensorProto.FLOAT,
                                                                              ["batch", obs_size])],
                              [output], initializer=[w])
    save_onnx(graph, path, opset=13)


def test_an_onnx_model(workdir, capsys):
    weights = np.array([[0.1, -0.2]] * 8, np.float32)
    _linear_onnx(workdir / "ball.onnx", 8, weights, discrete=False)
    code, _, err = _record(["--env=3DBall", "--policy=ball.onnx", "--episodes=3", "--out=out"], capsys)
    assert code == 0, err
    demo = read_demonstrations(workdir / "out" / "3DBall.demo")
    acted = demo.has_action
    np.testing.assert_allclose(demo.continuous_actions[acted], demo.observations[0][acted] @ weights, rtol=1e-5,
                               atol=1e-6)
    assert demo.episodes == 3


def _image_onnx(path, channels_first: bool) -> None:
    """A linear model of a 84 x 84 x 3 image: move = argmax(pixels @ w), with the same weight per
    pixel whether it takes the image channels first (ML-Agents' exports and Palaestra's) or last
    (Palaestra's before)."""
    weights = np.random.default_rng(0).normal(size=(84, 84, 3, 4)).astype(np.float32)
    if channels_first:
        weights = weights.transpose(2, 0, 1, 3)
    w = helper.make_tensor("w", TensorProto.FLOAT, (84 * 84 * 3, 4), weights.ravel().tolist())
    nodes = [helper.make_node("Flatten", ["obs_0"], ["pixels"], axis=1),
             helper.make_node("MatMul", ["pixels", "w"], ["scores"]),
             helper.make_node("ArgMax", ["scores"], ["index"], axis=1, keepdims=1),
             helper.make_node("Cast", ["index"], ["deterministic_discrete_actions"], to=TensorProto.FLOAT)]
    shape = ["batch", 3, 84, 84] if channels_first else ["batch", 84, 84, 3]
    graph = helper.make_graph(nodes, "image", [helper.make_tensor_value_info("obs_0", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("deterministic_discrete_actions", TensorProto.FLOAT,
                                                             ["batch", 1])], initializer=[w])
    save_onnx(graph, path, opset=13)


def test_an_image_model_is_fed_in_the_layout_it_declares(workdir, capsys):
    # exported models take images channels first; models exported before that take them as the
    # environment gives them: both are fed what they declare, and act alike
    actions = {}
    for first in (True, False):
        _image_onnx(workdir / f"m{first}.onnx", channels_first=first)
        code, _, err = _record(["--env=VisualGridWorld", f"--policy=m{first}.onnx", "--episodes=3", f"--out=o{first}",
                                "--seed=2"], capsys)
        assert code == 0, err
        demo = read_demonstrations(workdir / f"o{first}" / "GridWorld.demo")
        actions[first] = demo.discrete_actions[demo.has_action]
    np.testing.assert_array_equal(actions[True], actions[False])
    assert len(np.unique(actions[True])) > 1  # the image decides the move


def test_pettingzoo_behaviors_each_get_a_file_and_their_own_policy(workdir, capsys):
    pytest.importorskip("mpe2", reason="mpe2 is not installed")
    code, out, err = _record(["--env=pettingzoo:mpe2.simple_adversary_v3", "--env-args", "max_cycles=15",
                              "--policy=random", "--policy=adversary=random", "--episodes=2"], capsys)
    assert code == 0, err
    for behavior in ("adversary", "agent"):
        demo = read_demonstrations(workdir / "demos" / f"{behavior}.demo")
        assert demo.behavior_name == behavior and demo.episodes == 2 and f"{behavior}: 2 episodes" in out
        assert demo.max_step_reached[demo.done].all()  # max_cycles ends the episodes


def test_a_policy_that_refills_the_array_it_returned_is_recorded_step_by_step(workdir, capsys, monkeypatch):
    monkeypatch.delitem(sys.modules, "refilling", raising=False)
    (workdir / "refilling.py").write_text(textwrap.dedent("""
        import numpy as np
        out, calls = np.zeros((1, 1), np.int32), [0]

        def alternate(steps, spec):
            calls[0] += 1
            out[:] = calls[0] % 2  # the same array every time, as a preallocating policy returns it
            return out[: len(steps)]
    """))
    code, _, err = _record(["--env=CartPole-v1", "--policy=refilling:alternate", "--episodes=2"], capsys)
    assert code == 0, err
    demo = read_demonstrations(workdir / "demos" / "CartPole-v1.demo")
    acted = demo.discrete_actions[demo.has_action, 0]
    assert (acted[1:] != acted[:-1]).all(), acted  # each step's own action, not the array's last value


def test_policies_are_assigned_per_behavior():
    assert policies_by_behavior(["random", "b=heuristic"], ["a", "b"]) == {"a": "random", "b": "heuristic"}
    with pytest.raises(RecordError, match=r"no behavior 'c'; it has a, b$"):
        policies_by_behavior(["c=random"], ["a", "b"])
    with pytest.raises(RecordError, match=r"no --policy for behavior\(s\) b$"):
        policies_by_behavior(["a=random"], ["a", "b"])
    with pytest.raises(RecordError, match="given twice"):
        policies_by_behavior(["random", "heuristic"], ["a"])
    # Unity behaviors carry their team, whose name holds a '=': the full name, or the name before
    # the team (every team of it)
    unity = ["Pyramids?team=0", "Walker?team=0", "Walker?team=1"]
    assert policies_by_behavior(["Pyramids?team=0=random", "heuristic"], unity) == {
        "Pyramids?team=0": "random", "Walker?team=0": "heuristic", "Walker?team=1": "heuristic"}
    assert policies_by_behavior(["Walker=random", "Pyramids=m.onnx"], unity) == {
        "Pyramids?team=0": "m.onnx", "Walker?team=0": "random", "Walker?team=1": "random"}
    # one behavior given two policies, whatever the order, and a plain policy left for none: refused
    for texts in (["Walker?team=0=random", "Walker=heuristic"], ["Walker=heuristic", "Walker?team=0=random"]):
        with pytest.raises(RecordError, match=re.escape("behavior 'Walker?team=0' is given two policies")):
            policies_by_behavior(texts, unity)
    with pytest.raises(RecordError, match=re.escape("--policy=random applies to no behavior: each of a is given "
                                                    "its own")):
        policies_by_behavior(["a=heuristic", "random"], ["a"])


def test_file_names_of_behaviors():
    assert demo_file_name("Pyramids?team=0") == "Pyramids_team_0.demo"
    assert demo_file_name("CartPole-v1") == "CartPole-v1.demo"
    # letters of any script stay; nothing left, or a leading dot (a hidden file, skipped by the
    # readers), is not a name to write
    assert demo_file_name("ボール") == "ボール.demo"
    assert demo_file_name("?!") == "behavior.demo"
    assert demo_file_name(".hidden") == "behavior_.hidden.demo"


def test_max_steps_counts_environment_steps_the_last_one_included(tmp_path):
    # 3DBall's heuristic keeps the ball up for the whole 1,000-step episode
    env = make_env("3DBall", seed=0)
    result = record(env, {"3DBall": "heuristic"}, 1, tmp_path, max_steps=1000)
    assert result[0].meta.number_steps == 1001 and result[0].meta.number_episodes == 1  # the first episode to end
    with pytest.raises(RecordError, match="within --max-steps 999 fewer than the 1 episodes"):
        record(make_env("3DBall", seed=0), {"3DBall": "heuristic"}, 1, tmp_path / "b", max_steps=999)


@pytest.mark.parametrize("argv, message", [
    (["--env=CartPole-v1", "--policy=heuristic"], "has no scripted heuristic"),
    (["--env=3DBall", "--policy=missing.onnx"], "missing.onnx: no such model file"),
    (["--env=3DBall", "--policy=no_such_module_xyz:act"], "cannot import module 'no_such_module_xyz'"),
    (["--env=3DBall", "--policy=my_policy:absent"], "module 'my_policy' has no attribute 'absent'"),
    (["--env=3DBall", "--policy=my_policy:NUMBER"], "'NUMBER' is a int, not a callable"),
    (["--env=3DBall", "--policy=my_policy:broken"], "raised ZeroDivisionError: division by zero"),
    (["--env=3DBall", "--policy=my_policy:wrong_shape"], "--policy=my_policy:wrong_shape returned continuous actions "
     "of shape (12, 5) and discrete of shape (12, 0) for the 12 agents of behavior '3DBall'; they need (12, 2)"),
    (["--env=3DBall", "--policy=my_policy:ragged"], "--policy=my_policy:ragged returned actions that are not arrays"),
    (["--env=GridWorld", "--policy=my_policy:halves"], "--policy=my_policy:halves returned discrete actions that are "
     "not whole numbers"),
    (["--env=3DBall", "--policy=my_policy:wrong_type"], "returned a str; it must return an ActionTuple"),
    (["--env=3DBall", "--policy=sometimes"], "expected heuristic, random, a model file ending in .onnx"),
    (["--env=NoSuchEnv", "--policy=random"], "unknown environment 'NoSuchEnv'"),
    (["--env=Simple1DDiscrete", "--policy=not_a_model.onnx"], "not a model onnxruntime can load"),
    (["--env=Simple1DDiscrete", "--policy=ball.onnx"], "the model's input obs_0 has shape [8]; observation 0 "
                                                       "of behavior '1D' has [1]"),
    (["--env=Basic", "--policy=random", "--episodes=5", "--max-steps=3"], "within --max-steps 3 fewer than the 5 episodes asked for ended (Basic: 0); raise --max-steps"),
    (["--env=Basic", "--policy=random", "--out=my_policy.py"], "--out=my_policy.py: that is a file, not a folder"),
    (["--env=Basic", "--policy=random", "--episodes=5", "--max-steps=3", "--out=a/b/demos"], "within --max-steps 3"),
    (["--env=GridWorld", "--policy=my_policy:out_of_range"],
     "--policy=my_policy:out_of_range returned discrete action 7 in branch 0, which has 4 actions (0 to 3)"),
    (["--env=3DBall", "--policy=my_policy:not_a_number"],
     "--policy=my_policy:not_a_number returned NaN or infinite continuous actions for the agents in rows [0, 1"),
])
def test_bad_input_is_one_clear_line_and_writes_nothing(workdir, capsys, monkeypatch, argv, message):
    monkeypatch.delitem(sys.modules, "my_policy", raising=False)  # another test's module of that name
    (workdir / "my_policy.py").write_text(textwrap.dedent("""
        import numpy as np
        from palaestra.envs.base import ActionTuple
        NUMBER = 3
        def broken(steps, spec):
            return 1 / 0
        def wrong_shape(steps, spec):
            return np.zeros((len(steps), 5), np.float32)
        def ragged(steps, spec):
            return ActionTuple(continuous=[[0.0], [0.0, 1.0]])
        def halves(steps, spec):
            return np.full(len(steps), 0.5)
        def wrong_type(steps, spec):
            return "left"
        def out_of_range(steps, spec):
            return np.full((len(steps), 1), 7, np.int32)
        def not_a_number(steps, spec):
            return np.full((len(steps), 2), np.nan, np.float32)
    """))
    (workdir / "not_a_model.onnx").write_text("not a model")
    _linear_onnx(workdir / "ball.onnx", 8, np.zeros((8, 2), np.float32), discrete=False)
    code, out, err = _record(argv, capsys)
    assert code == 1 and out == ""
    assert message in err and "Traceback" not in err and err.count("\n") == 1, err
    assert not (workdir / "demos").exists() and not (workdir / "a").exists()  # not even an empty folder


def test_an_existing_file_needs_force(workdir, capsys):
    args = ["--env=Basic", "--policy=heuristic", "--episodes=1"]
    assert _record(args, capsys)[0] == 0
    code, _, err = _record(args, capsys)
    assert code == 1 and "demos/Basic.demo already exists; pass --force to replace" in err
    assert _record(args + ["--force", "--episodes=2"], capsys)[0] == 0
    assert read_demonstrations(workdir / "demos" / "Basic.demo").episodes == 2
    # a policy that cannot run is said first, not the file in the way
    code, _, err = _record(["--env=Basic", "--policy=missing.onnx", "--episodes=1"], capsys)
    assert code == 1 and "missing.onnx: no such model file" in err and "already exists" not in err


def test_record_in_python(tmp_path):
    env = make_env("Basic", seed=1)
    results = record(env, {"Basic": "heuristic"}, 4, tmp_path)
    assert len(results) == 1 and results[0].meta.number_episodes == 4 and len(results[0].returns) == 4
    demo = read_demonstrations(results[0].path)
    assert demo.mean_episode_reward == pytest.approx(np.mean(results[0].returns), rel=1e-5)


def test_the_command_runs_as_a_module_without_traceback(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "palaestra.demos.record", "--env=Basic", "--policy=heuristic",
                         "--episodes=1", f"--out={tmp_path}"], capture_output=True, text=True, timeout=300,
                        env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert ok.returncode == 0 and "Basic: 1 episodes" in ok.stdout, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "palaestra.demos.record", "--env=Basic", "--policy=nope.onnx",
                          f"--out={tmp_path / 'other'}"], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert bad.returncode == 1 and bad.stderr.startswith("[ERROR] --policy=nope.onnx: no such model file")
    assert "Traceback" not in bad.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="file-size limits are POSIX's")
@pytest.mark.parametrize("limit", [0, 3000, 20000])  # at the header, amid the rows, at the meta's flush
def test_a_full_disk_names_the_file_and_leaves_no_temp_file_nor_folder(tmp_path, limit):
    # a file-size limit fails writes as a full disk does (EFBIG; Python ignores SIGXFSZ), mid-buffer included
    import resource

    out = tmp_path / "made" / "here"
    failed = subprocess.run([sys.executable, "-m", "palaestra.demos.record", "--env=Basic", "--policy=heuristic",
                             "--episodes=60", f"--out={out}"], capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(REPO), "PATH": "", "PYTHONDONTWRITEBYTECODE": "1"},
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert failed.returncode == 1, failed.stderr
    assert failed.stderr.startswith(f"[ERROR] {out / 'Basic.demo'}: cannot be written: File too large")
    assert "Traceback" not in failed.stderr
    assert list(tmp_path.iterdir()) == []  # neither the temp file nor the folders made for it


@pytest.mark.parametrize("argv", [["palaestra.demos.record", "--env=Basic", "--policy=heuristic", "--episodes=1",
                                   "--out=."], ["palaestra.cli", "--version"]])
def test_a_reader_that_closed_the_pipe_is_no_failure(tmp_path, argv):
    # `... | head -n 0`: the reader has gone before the results are printed; the file is written all the same
    import os

    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", *argv], stdout=write, stderr=subprocess.PIPE, text=True,
                              timeout=300, cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": ""})
    finally:
        os.close(write)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert (tmp_path / "Basic.demo").is_file() == ("--out=." in argv)


def test_a_recurrent_model_records_with_each_agent_s_memory_carried_and_zeroed_at_episode_ends(tmp_path):
    # The counting model acts 1 from an episode's 4th decision: only if its memory of the steps
    # taken is carried per agent and zeroed when the agent's episode ends (tests/test_evaluation.py)
    from tests.test_evaluation import LENGTHS, CountingEnv, _counting_model

    _counting_model(tmp_path / "m.onnx")
    results = record(CountingEnv(), {"B": str(tmp_path / "m.onnx")}, 6, tmp_path / "demos")
    demo = read_demonstrations(results[0].path)
    assert demo.episodes == 6
    for episode in demo.episode_slices():
        acted = demo.has_action[episode]
        actions = demo.discrete_actions[episode][acted, 0]
        assert len(actions) == LENGTHS[int(demo.agent_ids[episode][0])]
        np.testing.assert_array_equal(actions, (np.arange(len(actions)) >= 3).astype(int))
    assert results[0].returns == tuple(float(n - 3) for n in [6, 7, 8, 6, 7, 8])


def test_a_recurrent_model_without_a_fixed_memory_size_is_a_clear_error(tmp_path):
    from onnx import TensorProto, helper

    from tests.test_evaluation import CountingEnv

    graph = helper.make_graph(
        [helper.make_node("Identity", ["recurrent_in"], ["recurrent_out"]),
         helper.make_node("ReduceMean", ["obs_0"], ["deterministic_discrete_actions"], axes=[1, 2], keepdims=0)],
        "m", [helper.make_tensor_value_info("obs_0", TensorProto.FLOAT, ["batch", 2, 2, 1]),
              helper.make_tensor_value_info("recurrent_in", TensorProto.FLOAT, ["batch", 1, "memory"])],
        [helper.make_tensor_value_info("deterministic_discrete_actions", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info("recurrent_out", TensorProto.FLOAT, ["batch", 1, "memory"])])
    save_onnx(graph, tmp_path / "m.onnx", opset=11)
    with pytest.raises(RecordError, match="recurrent_in has no fixed memory size"):
        record(CountingEnv(), {"B": str(tmp_path / "m.onnx")}, 1, tmp_path / "demos")
    assert not (tmp_path / "demos" / "B.demo").exists()


def _constant_model(path, output: str, value: float, width: int) -> None:
    """A model of Simple1D's input (obs_0 [batch, 1]) that answers ``value`` in ``width`` columns."""
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.FLOAT, [1, width],
                                                                            [value] * width)),
         helper.make_node("Mul", ["obs_0", "zero"], ["z"]),
         helper.make_node("Add", ["z", "c"], [output])],
        "m", [helper.make_tensor_value_info("obs_0", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", width])],
        initializer=[helper.make_tensor("zero", TensorProto.FLOAT, [1, 1], [0.0])])
    save_onnx(graph, path, opset=11)


@pytest.mark.parametrize("env_name, output, value, width, message", [
    ("Simple1DDiscrete", "discrete_actions", 5.0, 1, " returned discrete action 5 in branch 0, which has 2 actions"),
    ("Simple1DDiscrete", "discrete_actions", 1e12, 1, " returned discrete action 2147483647 in branch 0"),
    ("Simple1DDiscrete", "discrete_actions", 1.0, 2, ": the model gives 2 discrete branches; behavior '1D' acts with "
                                                     "discrete[2]"),  # (its declared width: before it acts)
    ("Simple1DContinuous", "continuous_actions", float("nan"), 1, " returned NaN or infinite continuous actions"),
])
def test_an_onnx_model_s_actions_that_do_not_fit_are_the_model_s_fault(tmp_path, env_name, output, value, width,
                                                                      message):
    # (before, the environment, or the .demo file written, took the blame, or a branch index wrapped)
    _constant_model(tmp_path / "m.onnx", output, value, width)
    env = make_env(env_name, seed=0)
    with pytest.raises(RecordError, match=re.escape(f"--policy={tmp_path / 'm.onnx'}{message}")):
        record(env, {"1D": str(tmp_path / "m.onnx")}, 1, tmp_path / "demos")
    assert not (tmp_path / "demos" / "1D.demo").exists()


def test_an_onnx_model_that_answers_a_batch_with_one_row_is_the_model_s_fault(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["obs_0"], ["continuous_actions"], axes=[0], keepdims=1)],
        "m", [helper.make_tensor_value_info("obs_0", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("continuous_actions", TensorProto.FLOAT, [1, 1])])
    save_onnx(graph, tmp_path / "m.onnx", opset=11)
    env = make_env("Simple1DContinuous", seed=0, num_areas=3)
    with pytest.raises(RecordError, match=re.escape(f"--policy={tmp_path / 'm.onnx'}: the model's output "
                                                    "continuous_actions has shape (1, 1) for 3 agents; its first axis "
                                                    "must be the batch")):
        record(env, {"1D": str(tmp_path / "m.onnx")}, 1, tmp_path / "demos")


def test_a_policy_s_continuous_actions_are_recorded_as_the_environment_takes_them(tmp_path, monkeypatch):
    # beyond [-1, 1] they are clipped for the environment: the recording holds what happened
    (tmp_path / "pushy.py").write_text("import numpy as np\n\ndef act(steps, spec):\n"
                                       "    return np.full((len(steps), 1), 2.5, np.float32)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    env = make_env("Simple1DContinuous", seed=0)
    demo = read_demonstrations(record(env, {"1D": "pushy:act"}, 2, tmp_path / "demos")[0].path)
    assert (demo.continuous_actions[demo.has_action] == 1.0).all()


def test_an_onnx_model_of_other_actions_is_refused_before_it_acts(tmp_path):
    # a model of another behavior that observes alike: the action sizes it declares tell it apart
    _linear_onnx(tmp_path / "wide.onnx", 8, np.zeros((8, 3), np.float32), discrete=False)
    env = make_env("3DBall", seed=0)
    with pytest.raises(RecordError, match=re.escape("the model gives 3 continuous actions; behavior '3DBall' acts "
                                                    "with continuous(2)")):
        record(env, {"3DBall": str(tmp_path / "wide.onnx")}, 1, tmp_path / "demos")
    from palaestra.envs.builtin.gridworld import GridWorld
    from palaestra.export import export_policy
    from palaestra.networks.policy import ActorCritic

    hallway, grid = make_env("Hallway", seed=0), GridWorld(seed=0)
    other = dataclasses.replace(hallway.behavior_specs["Hallway"],
                                action_spec=grid.behavior_specs["GridWorld"].action_spec)  # Hallway's eyes, 4 moves
    export_policy(ActorCritic(other, 8, 1, normalize=False, num_value_heads=1), tmp_path / "moves.onnx")
    with pytest.raises(RecordError, match=re.escape("the model gives 4 actions in all discrete branches "
                                                    "(action_masks); behavior 'Hallway' acts with discrete[3]")):
        record(hallway, {"Hallway": str(tmp_path / "moves.onnx")}, 1, tmp_path / "demos")


@pytest.mark.parametrize("where, message", [
    ("reward", "the environment sent a NaN or infinite reward"),
    ("raise", "Gymnasium environment 'PalaestraTestFaulty-v0' raised RuntimeError in step: the simulator crashed"),
])
def test_an_environment_that_fails_while_recording_is_one_clear_error_and_no_file(workdir, capsys, monkeypatch,
                                                                                   where, message):
    import gymnasium as gym

    from tests.test_envs import _NaNAfter

    class Faulty(_NaNAfter):
        def step(self, action):
            if self.where == "raise" and self.steps >= 30:
                raise RuntimeError("the simulator crashed")
            return super().step(action)

    gym.register("PalaestraTestFaulty-v0", entry_point=Faulty, kwargs={"after": 30, "where": where})
    try:
        code, out, err = _record(["--env=PalaestraTestFaulty-v0", "--policy=random", "--episodes=5"], capsys)
    finally:
        gym.registry.pop("PalaestraTestFaulty-v0")
    assert code == 1 and message in err and "Traceback" not in err
    assert not list(workdir.glob("demos/*.demo"))


@pytest.mark.parametrize("arguments,message", [
    (dict(episodes=0), "episodes must be a whole number >= 1; got 0"),
    (dict(episodes=-1), "episodes must be a whole number >= 1; got -1"),
    (dict(episodes=1, max_steps=-1), "max_steps must be a whole number >= 1; got -1"),
    (dict(episodes=1, policies={"Other": "heuristic"}), "no policy for behavior(s) Basic: give one for each of Basic"),
])
def test_the_record_api_refuses_what_the_command_line_refuses(tmp_path, arguments, message):
    arguments = {"policies": {"Basic": "heuristic"}, **arguments}
    with pytest.raises(RecordError, match=re.escape(message)):
        record(make_env("Basic", seed=1), out=tmp_path / "demos", **arguments)
    assert not (tmp_path / "demos").exists()


def test_the_record_api_takes_a_folder_as_a_string(tmp_path):
    result = record(make_env("Basic", seed=1), {"Basic": "heuristic"}, 1, str(tmp_path / "demos"))
    assert result[0].path == tmp_path / "demos" / "Basic.demo" and result[0].path.is_file()


def test_demonstration_columns_pair_each_action_with_the_next_records_done_as_ml_agents(tmp_path):
    # Basic ends an episode by reaching a goal: the record that ends it carries no action, so the
    # done flag belongs to the action before it (the policy's rows mark that action too); GAIL's
    # discriminator once saw done only on the policy's side
    from palaestra.demos.columns import demonstration_columns

    env = make_env("Basic", seed=1)
    path = record(env, {"Basic": "heuristic"}, 3, tmp_path)[0].path
    demo = read_demonstrations(path)
    columns = demonstration_columns(str(path), env.behavior_specs["Basic"], "Basic", "demo_path")
    assert int(demo.done.sum()) == 3 and not demo.has_action[demo.done].any()
    assert int(columns["done"].sum()) == 3
    last_actions = np.flatnonzero(demo.has_action & np.append(demo.done[1:], False))
    assert columns["done"][np.searchsorted(np.flatnonzero(demo.has_action), last_actions)].all()


@pytest.mark.parametrize("where,message", [
    ("action", r"demo_path '.*': record 5: continuous action 0 is inf"),
    ("observation", r"demo_path '.*': record 5: observation 0 holds NaN or infinite values \(1 records\)"),
])
def test_demonstrations_with_nan_or_infinity_are_refused_naming_the_record(tmp_path, monkeypatch, where, message):
    import dataclasses

    from tests.test_demos import without_checks

    from palaestra.demos.columns import demonstration_columns
    from palaestra.demos.reader import DemoError
    from palaestra.demos.writer import write_demonstrations

    env = make_env("3DBall", seed=1)
    demo = read_demonstrations(record(env, {"3DBall": "heuristic"}, 1, tmp_path, max_steps=2000)[0].path)
    if where == "action":
        actions = demo.continuous_actions.copy()
        actions[5, 0] = np.inf
        demo = dataclasses.replace(demo, continuous_actions=actions)
    else:
        obs = demo.observations[0].copy()
        obs[5, 2] = np.nan
        demo = dataclasses.replace(demo, observations=[obs])
    with pytest.raises(DemoError, match="is NaN or infinite in rows \\[5\\]"):
        write_demonstrations(tmp_path / "refused.demo", demo)  # this writer refuses it
    assert not (tmp_path / "refused.demo").exists()
    without_checks(monkeypatch)  # a file from elsewhere may hold it: the reader names the record
    write_demonstrations(tmp_path / "bad.demo", demo)
    with pytest.raises(DemoError, match=message):
        demonstration_columns(str(tmp_path / "bad.demo"), env.behavior_specs["3DBall"], "3DBall", "demo_path")
    # in a folder the record is counted in its own file, which is named
    folder = tmp_path / "folder"
    folder.mkdir()
    (tmp_path / "bad.demo").rename(folder / "b.demo")
    write_demonstrations(folder / "a.demo", read_demonstrations(record(env, {"3DBall": "heuristic"}, 1, tmp_path / "ok",
                                                                         max_steps=2000)[0].path))
    with pytest.raises(DemoError, match=message.replace("record 5", "record 5 of b.demo")):
        demonstration_columns(str(folder), env.behavior_specs["3DBall"], "3DBall", "demo_path")


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT"])
def test_a_signal_mid_recording_leaves_no_file_and_seed_minus_one_is_random(tmp_path, stop):
    import signal
    import time

    out = tmp_path / "demos"
    # started with SIGINT ignored, as a script's background job is: it stops on SIGINT all the same
    proc = subprocess.Popen([sys.executable, "-m", "palaestra.demos.record", "--env=3DBall", "--policy=heuristic",
                             "--episodes=300", f"--out={out}", "--seed=-1"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.time() + 60
    while not any(out.glob("*.partial")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert any(out.glob("*.partial")), proc.communicate()[1]
    proc.send_signal(getattr(signal, stop))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + getattr(signal, stop), err
    assert "--seed -1: recording with seed" in err and "interrupted; no .demo file was written" in err
    assert "Traceback" not in err and not out.exists()  # no file, and not the folder made for them


def test_demonstrated_actions_their_own_mask_forbids_are_counted_in_a_warning(tmp_path, caplog):
    import dataclasses

    from palaestra.demos.columns import demonstration_columns
    from palaestra.demos.writer import write_demonstrations

    env = make_env("GridWorld", seed=1)
    demo = read_demonstrations(record(env, {"GridWorld": "heuristic"}, 30, tmp_path)[0].path)
    spec = env.behavior_specs["GridWorld"]
    demonstration_columns(str(demo.path), spec, "GridWorld", "demo_path")
    assert "forbids" not in caplog.text  # the heuristic never moves into a wall
    masked = demo.has_action & demo.action_masks.any(axis=1)
    assert masked.sum() > 5
    actions = demo.discrete_actions.copy()
    actions[masked, 0] = np.argmax(demo.action_masks[masked], axis=1)  # a forbidden move on each such row
    write_demonstrations(tmp_path / "walls.demo", dataclasses.replace(demo, discrete_actions=actions))
    columns = demonstration_columns(str(tmp_path / "walls.demo"), spec, "GridWorld", "demo_path")
    assert f"{int(masked.sum())} of {int(demo.has_action.sum())} demonstrated actions are ones their own " \
           "record's action mask forbids" in caplog.text
    # those rows are learned without their masks (under them the cross-entropy is about 1e8)
    forbidden = masked[demo.has_action]
    assert columns["allowed"][forbidden].all()
    np.testing.assert_array_equal(columns["allowed"][~forbidden], ~demo.action_masks[demo.has_action][~forbidden])
    import torch

    from palaestra.algorithms.behavioral_cloning import bc_loss
    from palaestra.networks.policy import ActorCritic
    from palaestra.rollout.buffers import observations

    rows = {k: torch.as_tensor(v) for k, v in columns.items()}
    policy = ActorCritic(spec, hidden_units=16, num_layers=1, normalize=False, num_value_heads=1)
    _, log_probs = policy.imitation_outputs(observations(rows), rows["allowed"], 1)
    loss = bc_loss(None, log_probs, rows["continuous"], rows["discrete"])
    assert 0.0 < float(loss) < 5.0


@pytest.mark.skipif(sys.platform == "win32", reason="recordings lock their temp files with fcntl")
def test_a_killed_recording_s_temp_file_is_removed_by_the_next_recording_of_that_path(tmp_path):
    import os
    import signal
    import time

    from palaestra.demos.writer import STALE_AFTER_S, DemoWriter

    out = tmp_path / "demos"
    proc = subprocess.Popen([sys.executable, "-m", "palaestra.demos.record", "--env=3DBall", "--policy=heuristic",
                             "--episodes=300", f"--out={out}"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not any(out.glob(".*.partial")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # no handler runs: the temp file stays
    proc.communicate(timeout=30)
    [killed] = out.glob(".*.partial")
    spec = make_env("3DBall", seed=1).behavior_specs["3DBall"]
    path = out / "3DBall.demo"
    assert killed.name.startswith(".3DBall.demo.")  # the recording's temp file
    old = time.time() - 2 * STALE_AFTER_S
    with DemoWriter(path, "3DBall", spec) as live:  # a recording under way, as old as the killed one
        os.utime(live._partial, (old, old))
        os.utime(killed, (old, old))
        with DemoWriter(path, "3DBall", spec):  # the next recording of that path
            assert not killed.exists()  # left by the kill: removed
            assert live._partial.exists()  # held by a live writer: kept
        assert path.exists()  # the second recording, published as it closed
    assert not any(out.glob(".*.partial"))


def test_the_unity_flags_its_messages_name_reach_the_environment(workdir, capsys):
    # the shared messages say "set by --base-port" and "raise --timeout-wait": the recorder has both
    import sys as _sys

    (workdir / "port_factory.py").write_text(
        "from palaestra.envs.builtin.simple1d import Simple1D\n\nSEEN = {}\n\n\n"
        "def make(seed, port, engine):\n    SEEN.update(port=port, wait=engine.timeout_wait, "
        "no_graphics=engine.no_graphics)\n    return Simple1D(seed=seed)\n")
    _sys.path.insert(0, str(workdir))
    try:
        code, _, err = _record(["--env=port_factory:make", "--policy=random", "--episodes=1", "--base-port=6100",
                                "--timeout-wait=7", "--no-graphics"], capsys)
        import port_factory

        assert code == 0, err
        assert port_factory.SEEN == {"port": 6100, "wait": 7, "no_graphics": True}
    finally:
        _sys.path.remove(str(workdir))
        _sys.modules.pop("port_factory", None)
