"""Unity builds and the Editor over ML-Agents' protocol, against the fake Unity of
tests/fake_unity (a gRPC client playing Unity's side, started the way a build is)."""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from palaestra.envs.base import ActionTuple, EngineConfig, EnvError
from palaestra.envs.checker import check_env
from palaestra.envs.unity import RawBytesChannel, open_build, open_editor
from palaestra.envs.unity import messages as pb
from palaestra.envs.unity import side_channels as sc
from palaestra.envs.unity.communicator import free_port, port_problem, version_problem
from palaestra.envs.unity.launcher import UnityProcess, command_line, find_executable, launch
from palaestra.envs.sources import make_env
from tests.conftest import write_yaml
from tests.fake_unity import REPOSITORY, make_build, running_players
from tests.fake_unity.scene import camera_image


@pytest.fixture
def port() -> int:
    # a free port away from the usual 5004/5005, so that runs of other people are not disturbed
    return free_port(random.randrange(20000, 40000, 10))


@pytest.fixture(autouse=True)
def no_build_left_behind(tmp_path):
    yield
    deadline = time.time() + 5
    while running_players(str(tmp_path)) and time.time() < deadline:
        time.sleep(0.05)
    assert running_players(str(tmp_path)) == [], "a Unity build outlived its environment"


def engine(tmp_path: Path, **kw) -> EngineConfig:
    return EngineConfig(log_folder=str(tmp_path / "logs"), **kw)


def events(log_file: Path) -> list[dict]:
    out = []
    for line in log_file.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def log_of(env) -> Path:
    return Path(env.process.log_file)


# --- messages and side channels

def test_the_printed_proto_file_declares_what_the_built_classes_hold():
    # Read the printed .proto back (messages nest by braces; oneof blocks are not messages) and
    # compare every message's fields with the descriptors protobuf built from the same table.
    printed = subprocess.run([sys.executable, "-m", "palaestra.envs.unity.proto"], check=True,
                             capture_output=True, text=True)
    text = printed.stdout
    assert text == pb.proto_text() and 'syntax = "proto3";' in text
    assert printed.stderr == ""  # (no runpy warning about a module imported twice)
    declared: dict[str, dict[str, int]] = {}
    stack: list[tuple[str, str]] = []  # (block kind, the message whose fields it holds)
    for line in text.splitlines():
        line = line.strip()
        owner = stack[-1][1] if stack else ""
        if line.startswith("message "):
            stack.append(("message", f"{owner}.{line.split()[1]}".lstrip(".")))
            declared[stack[-1][1]] = {}
        elif line.startswith(("oneof ", "enum ", "service ")):
            stack.append((line.split()[0], owner))
        elif line == "}":
            stack.pop()
        elif line.endswith(";") and "=" in line and stack and stack[-1][0] in ("message", "oneof"):
            name, number = line.rstrip(";").split("=")
            declared[owner][name.split()[-1]] = int(number)
    assert not stack and set(declared) == set(pb.MESSAGES)
    for name, fields in declared.items():
        descriptor = pb._CLASSES[name].DESCRIPTOR if name in pb._CLASSES else None
        if descriptor is None:  # a nested message: reach it through its parent
            parent, _, leaf = name.rpartition(".")
            descriptor = pb._CLASSES[parent].DESCRIPTOR.nested_types_by_name[leaf]
        assert fields == {f.name: f.number for f in descriptor.fields}, name


def _float_observations(sizes: list[int]) -> list:
    rng = np.random.default_rng(0)
    out = []
    for size in sizes:
        o = pb.ObservationProto(shape=[size])
        o.float_data.data.extend(rng.normal(size=size).astype(np.float32).tolist())
        out.append(o)
    return out


def test_float_observations_are_read_in_bulk_and_other_sizes_are_found():
    from palaestra.envs.unity.wire import float_rows

    for size in (1, 8, 40, 300):  # one- and two-byte lengths on the wire
        observations = _float_observations([size] * 5)
        expected = np.array([list(o.float_data.data) for o in observations], np.float32)
        got = float_rows(observations, size)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, expected)
    # an agent of another size, also one whose bytes the others' make up for (an empty one and a double one)
    for sizes in ([8, 8, 9], [8, 7, 9], [8, 0, 16], [0, 16, 8], [8, 8, 0]):
        assert float_rows(_float_observations(sizes), 8) is None, sizes
    with pytest.raises(EnvError, match=re.escape("an agent sent 9 floats (shape [9]) where the behavior's "
                                                 "observation has shape [8] (8 floats)")):
        from palaestra.envs.unity.observations import batch
        batch(_float_observations([8, 9]), (8,), "here")


@pytest.mark.parametrize("hybrid", [True, False])
@pytest.mark.parametrize("continuous, branches", [(2, 0), (0, 2), (1, 3), (0, 0), (40, 1)])
def test_actions_written_in_bulk_are_the_bytes_of_one_message_per_agent(hybrid, continuous, branches):
    from palaestra.envs.unity.wire import agent_actions

    rng = np.random.default_rng(1)
    c = rng.uniform(-1, 1, (7, continuous)).astype(np.float32)
    d = rng.integers(0, 100, (7, branches)).astype(np.int32)
    expected = pb.UnityRLInputProto.ListAgentActionProto()
    for cc, dd in zip(c.tolist(), d.tolist()):
        if hybrid:
            expected.value.add(continuous_actions=cc, discrete_actions=dd)
        else:
            expected.value.add(vector_actions=cc + [float(x) for x in dd])
    assert agent_actions(c, d, hybrid) == expected.SerializeToString()
    if hybrid and branches:  # a branch index past one varint byte: the per-agent way
        assert agent_actions(c, d + 128, hybrid) is None


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "I;16", "damaged"])
def test_png_images_decode_the_fast_way_or_through_pillow_alike(mode):
    import io as _io

    from PIL import Image

    from palaestra.envs.unity.observations import _decode_plain, decode_png

    rgb = camera_image(np.arange(12, dtype=np.float32) - 6, 20, 3)
    image = Image.fromarray(rgb)
    image = image.convert("RGBA" if mode == "damaged" else mode) if mode not in ("I;16",) else \
        Image.fromarray((rgb[:, :, 0].astype(np.uint16) * 257))
    buffer = _io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    if mode == "damaged":
        data = data[:60] + bytes(40) + data[100:]
    o = pb.ObservationProto(shape=[20, 20, 1 if mode in ("L", "I;16") else 3], compression_type=pb.PNG,
                            compressed_data=data)
    if mode == "damaged":
        with pytest.raises(EnvError, match="here: a PNG image cannot be decoded"):
            decode_png(o, (20, 20, 3), "here")
        return
    got = decode_png(o, tuple(o.shape), "here")
    with Image.open(_io.BytesIO(data)) as reference:  # what Pillow reads, the old way
        expected = np.asarray(reference.convert("RGB") if reference.mode not in ("L", "RGB", "RGBA") else reference)
    expected = expected[:, :, None] if expected.ndim == 2 else expected[:, :, :3]
    if mode == "I;16":  # a 16-bit grayscale becomes RGB then one channel: the mean of the colors
        expected = np.rint(expected.mean(axis=2, keepdims=True)).astype(np.uint8)
    np.testing.assert_array_equal(got, expected)
    assert (_decode_plain(data) is not None) == (mode in ("RGB", "RGBA", "L"))


def test_messages_keep_ml_agents_field_numbers_on_the_wire():
    m = pb.UnityMessageProto()
    m.unity_input.rl_input.agent_actions["Walker?team=0"].value.add(continuous_actions=[0.5], discrete_actions=[2])
    m.unity_input.rl_input.command = pb.RESET
    back = pb.UnityMessageProto.FromString(m.SerializeToString())
    assert back == m
    # field 3 of UnityMessageProto, field 1 of UnityInputProto, field 4 (command) of UnityRLInputProto
    assert bytes([0x1A]) == m.SerializeToString()[:1]
    assert pb.AgentActionProto.DESCRIPTOR.fields_by_name["continuous_actions"].number == 6
    assert pb.BrainParametersProto.DESCRIPTOR.fields_by_name["action_spec"].number == 9


def test_side_channel_records_round_trip_and_damaged_ones_are_named():
    a, b = uuid.uuid4(), uuid.uuid4()
    data = sc.encode([(a, b"xyz"), (b, b"")])
    assert sc.decode(data) == [(a, b"xyz"), (b, b"")]
    assert data[:16] == a.bytes_le
    with pytest.raises(EnvError, match="claims 99 bytes"):
        sc.decode(a.bytes_le + (99).to_bytes(4, "little") + b"ab")
    with pytest.raises(EnvError, match="side channel stats: a message of 3 bytes ends early"):
        sc.StatsChannel().on_message(b"\x01\x00\x00")


def test_stats_keep_every_average_and_the_last_most_recent():
    channel = sc.StatsChannel()
    for v in (1.0, 2.0):
        channel.on_message(bytes(sc.Writer().string("A").float32(v).int32(sc.STAT_AVERAGE).data))
        channel.on_message(bytes(sc.Writer().string("R").float32(v).int32(sc.STAT_MOST_RECENT).data))
    assert channel.take_stats() == {"A": ([1.0, 2.0], sc.STAT_AVERAGE), "R": ([2.0], sc.STAT_MOST_RECENT)}
    assert channel.take_stats() == {}


def test_an_agent_with_another_count_of_observations_is_named_wherever_it_stands():
    from types import SimpleNamespace

    from palaestra.envs.base import ActionSpec, BehaviorSpec
    from palaestra.envs.unity.env import UnityEnv
    env = UnityEnv.__new__(UnityEnv)  # (only what reading one behavior's agents needs)
    env._specs, env.where = {"B": BehaviorSpec(((1,),), ActionSpec(continuous_size=1))}, "the scene"
    agents = [SimpleNamespace(done=False, reward=0.0, id=i, observations=[None] * k) for i, k in enumerate((1, 0, 1))]
    with pytest.raises(EnvError, match="the scene: behavior 'B': agent 1 sent 0 observations, the behavior has 1"):
        env._steps_of("B", agents)


def test_a_parameter_name_unity_cannot_read_is_named():
    with pytest.raises(EnvError, match="'masse_é': a name sent to Unity must be ASCII"):
        sc.EnvironmentParametersChannel().set_float("masse_é", 1.0)


def test_summed_histogram_and_unknown_stats_reach_the_summaries(caplog):
    # Unity's StatAggregationMethod also has Sum (2) and Histogram (3); a later one is averaged
    from palaestra.run import record_environment_stats
    from palaestra.stats import StatsReporter
    channel = sc.StatsChannel()
    with caplog.at_level(logging.WARNING, logger="palaestra"):
        for v in (1.0, 2.0):
            for key, aggregation in (("S", sc.STAT_SUM), ("H", sc.STAT_HISTOGRAM), ("U", 7)):
                channel.on_message(bytes(sc.Writer().string(key).float32(v).int32(aggregation).data))
    assert caplog.text.count("key 'U' has aggregation 7, which this version does not know") == 1
    taken = channel.take_stats()
    assert taken == {"S": ([1.0, 2.0], sc.STAT_SUM), "H": ([1.0, 2.0], sc.STAT_HISTOGRAM),
                     "U": ([1.0, 2.0], sc.STAT_AVERAGE)}

    class _Trainer:
        stats = StatsReporter("B", [])
    trainer = _Trainer()
    record_environment_stats(taken, 0, {"B": trainer})
    record_environment_stats({"S": ([4.0], sc.STAT_SUM)}, 1, {"B": trainer})  # another worker's: added too
    summary = trainer.stats.write(100)
    assert (summary["S"].mean, summary["H"].mean, summary["U"].mean) == (7.0, 1.5, 1.5)


@pytest.mark.parametrize("unity, expected", [
    ("0.15.0", "Upgrade the ML-Agents package in the Unity project"),
    ("API-14", "Upgrade the ML-Agents package in the Unity project"),
    ("2.0.0", "Upgrade Palaestra"),
])
def test_a_version_palaestra_cannot_speak_names_both_and_what_to_upgrade(unity, expected):
    problem = version_problem(unity, "0.15.1")
    assert expected in problem and unity in problem and "1.0.0 to 1.5.0" in problem and "0.15.1" in problem


@pytest.mark.parametrize("unity", ["1.0.0", "1.2.0", "1.5.0", "1.9.2"])
def test_every_1x_api_is_spoken(unity):
    assert version_problem(unity, "") is None


# --- finding builds

def test_builds_are_found_as_ml_agents_finds_them(tmp_path):
    build = make_build(tmp_path / "Linux", "Ball")
    assert find_executable(str(build)) == str(build)
    assert find_executable(str(tmp_path / "Linux" / "Ball")) == str(build)  # without the suffix
    assert find_executable(str(tmp_path / "Linux")) == str(build)  # the folder holding it
    app = tmp_path / "Mac" / "Ball.app" / "Contents" / "MacOS"
    inner = make_build(app, "Ball", suffix="")
    assert find_executable(str(tmp_path / "Mac" / "Ball.app")) == str(inner)
    assert find_executable(str(tmp_path / "Mac" / "Ball")) == str(inner)
    assert find_executable(str(tmp_path / "Mac")) == str(inner)


def test_a_missing_unexecutable_or_ambiguous_build_is_named(tmp_path):
    with pytest.raises(EnvError, match=r"no Unity build found \(looked for .*Nope, .*Nope.x86_64"):
        find_executable(str(tmp_path / "Nope"))
    plain = tmp_path / "Plain.x86_64"
    plain.write_text("")
    with pytest.raises(EnvError, match="is not executable; make it so with chmod"):
        find_executable(str(plain))
    make_build(tmp_path / "two", "A")
    make_build(tmp_path / "two", "B")
    with pytest.raises(EnvError, match="several builds"):
        find_executable(str(tmp_path / "two"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EnvError, match="holds no Unity build"):
        find_executable(str(tmp_path / "empty"))


def test_files_that_are_not_builds_and_builds_for_another_platform_say_so(tmp_path):
    script = tmp_path / "my_env.py"
    script.write_text("def make(): ...\n")
    with pytest.raises(EnvError, match=r"my_env.py is not a Unity build .* --env=module:callable"):
        find_executable(str(script))
    windows = tmp_path / "Win" / "Game.exe"
    windows.parent.mkdir()
    windows.write_bytes(b"MZ\x90\x00" + bytes(60))
    mac = tmp_path / "Mac" / "Game.app" / "Contents" / "MacOS" / "Game"
    mac.parent.mkdir(parents=True)
    mac.write_bytes(b"\xcf\xfa\xed\xfe" + bytes(60))
    mac.chmod(0o755)
    for folder, platform in ((windows.parent, "Windows"), (tmp_path / "Mac", "macOS")):
        if sys.platform != "linux":
            continue
        with pytest.raises(EnvError, match=rf"it is a {platform} build and this machine runs Linux; build the Unity "
                                           r"project for Linux \(File > Build Settings, Target Platform Linux, x86_64\)"):
            launch(find_executable(str(folder)), 5004, True, None, [])


def test_env_values_that_look_like_paths_are_builds_and_built_in_names_that_are_also_builds_are_refused(
        workdir, monkeypatch):
    (workdir / "Builds").mkdir()
    for missing in ("Builds/Missing/Game", "Builds/Missing", "./Game", "~/NoSuchBuild"):
        with pytest.raises(EnvError, match=rf"--env={re.escape(missing)}: no Unity build found"):
            make_env(missing)
    monkeypatch.setenv("HOME", str(workdir / "home"))
    build = make_build(workdir / "home" / "Ball", "FakeBall")
    assert find_executable("~/Ball/FakeBall") == str(build)  # ~ expanded before anything is checked
    make_build(workdir, "3DBall")
    with pytest.raises(EnvError, match=r"--env=3DBall names both Palaestra's built-in 3DBall and the Unity build "
                                       r"3DBall.x86_64; give --env=./3DBall for the build, or "
                                       r"--env=palaestra/3DBall-v0 for the built-in"):
        make_env("3DBall")
    assert list(make_env("palaestra/3DBall-v0").behavior_specs) == ["3DBall"]
    (workdir / "Basic").mkdir()  # a folder without a build named like a built-in is no build
    assert list(make_env("Basic").behavior_specs) == ["Basic"]
    (workdir / "GridWorld.x86_64").write_bytes(b"\x7fELF")  # a build unzipped without its executable bit
    with pytest.raises(EnvError, match=r"--env=GridWorld names both Palaestra's built-in GridWorld and a Unity build "
                                       r"here, which cannot run as it is \(.*chmod \+x"):
        make_env("GridWorld")
    (workdir / "palaestra").mkdir()  # a Gymnasium namespace's folder: its ids stay ids
    with pytest.raises(EnvError, match=r"unknown environment 'palaestra/3DBal-v0'"):
        make_env("palaestra/3DBal-v0")


def test_a_build_killed_by_a_signal_is_named_a_crash():
    crashed = subprocess.Popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"])
    crashed.wait()
    assert UnityProcess(crashed, [], "/l/P.log").exit_description() == (
        "the build was killed by SIGSEGV (it crashed); its log is /l/P.log")


def test_the_command_line_is_unitys():
    assert command_line("/b/x", 5006, True, "/l/P.log", ["--x", "1"]) == [
        "/b/x", "-nographics", "-batchmode", "--mlagents-port", "5006", "-logFile", "/l/P.log", "--x", "1"]


# --- a build: connection, observations, actions, side channels

def test_a_build_trains_the_protocol_and_quits_when_closed(tmp_path, port):
    build = make_build(tmp_path, "FakeBall")
    env = open_build(str(build), port, engine=engine(tmp_path, no_graphics=True, time_scale=7.5, width=64),
                     env_args=["--hello", "world"])
    try:
        assert dict(env.behavior_specs) == {"3DBall": env.behavior_specs["3DBall"]}
        spec = env.behavior_specs["3DBall"]
        assert spec.observation_shapes == ((8,),) and spec.action_spec.continuous_size == 2
        decision, terminal = env.get_steps("3DBall")
        assert len(decision) == 12 and len(terminal) == 0 and decision.obs[0].dtype == np.float32
        check_env(env, steps=60)
        env.reset({"gravity": 3.5})
    finally:
        env.close()
    assert env.process.popen.returncode == 0  # it quit by itself on the status-400 goodbye
    log = events(log_of(env))
    start = log[0]
    assert start["batchmode"] and start["nographics"] and start["port"] == port
    assert start["extra"] == ["--hello", "world"]
    assert {"event": "engine", "kind": 2, "values": [7.5]} in log
    assert {"event": "engine", "kind": 0, "values": [64, 84]} in log
    assert {"event": "engine", "kind": 4, "values": [60]} in log  # --capture-frame-rate's default
    assert {"event": "parameter", "key": "gravity", "kind": 0, "value": 3.5} in log
    assert log[-1]["event"] == "exit" and log[-1]["reason"] == "status 400"
    assert log_of(env).name == f"Player-{port}.log"


def test_the_scene_is_reset_once_at_the_start_unless_there_is_something_to_send(tmp_path, port):
    # ML-Agents' first input after the handshake is the one RESET, with the run's environment
    # parameters; the constructor's reset (which learns the behaviors) is that one when the run's
    # first reset brings nothing new
    cases = [(None, None, 1), (None, {"gravity": 3.5}, 2), ({"gravity": 3.5}, {"gravity": 3.5}, 1),
             ({"gravity": 3.5}, None, 1), ({"gravity": 3.5}, {"gravity": 4.0}, 2)]
    for k, (first, parameters, resets) in enumerate(cases):
        env = open_build(str(make_build(tmp_path, "FakeBall")), port, engine=engine(tmp_path / str(k)),
                         parameters=first)
        try:
            env.reset(parameters)
            env.step()
            env.reset()  # a later reset is always sent
        finally:
            env.close()
        log = [e for e in events(log_of(env)) if e["event"] in ("reset", "parameter")]
        assert [e["event"] for e in log].count("reset") == resets + 1, (first, parameters)
        if first is not None:  # the values came with the scene's first reset
            assert log[:2] == [{"event": "parameter", "key": "gravity", "kind": 0, "value": 3.5},
                               {"event": "reset", "steps": log[1]["steps"]}]


@pytest.mark.parametrize("builds", [1, 2])
def test_a_run_with_a_sampler_and_a_curriculum_starts_each_scene_once_with_their_values(run_cli, workdir, port,
                                                                                         builds):
    build = make_build(workdir / "Builds", "FakeBall")
    config = write_yaml(workdir / "c.yaml", CONFIG.replace("max_steps: 600", "max_steps: 100"))
    sampler = write_yaml(workdir / "s.yaml", "resampling-interval: 100000\nmass:\n  sampler-type: uniform\n"
                                             "  min_value: 1\n  max_value: 2\n")
    curriculum = write_yaml(workdir / "k.yaml", "3DBall:\n  measure: progress\n  thresholds: [0.9]\n"
                                                "  min_lesson_length: 1\n  signal_smoothing: false\n"
                                                "  parameters:\n    scale: [0.5, 1.5]\n")
    result = run_cli(str(config), f"--env={build}", "--run-id=p", f"--base-port={port}", f"--num-envs={builds}",
                     f"--sampler={sampler}", f"--curriculum={curriculum}", "--seed=3")
    assert result.code == 0, result.log
    masses = []
    for player in range(builds):
        log = events(workdir / "models" / "p" / "run_logs" / f"Player-{port + player}.log")
        first_reset = next(i for i, e in enumerate(log) if e["event"] == "reset")
        sent = {e["key"]: e["value"] for e in log[:first_reset] if e["event"] == "parameter"}
        assert sent.keys() == {"mass", "scale"} and sent["scale"] == 0.5 and 1 <= sent["mass"] <= 2, sent
        masses.append(sent["mass"])
        # no second reset before the first step: the run's first reset was the scene's own
        assert [e["steps"] for e in log if e["event"] == "reset"].count(0) == 1, log
    assert len(set(masses)) == builds  # each worker its own draw


def test_agents_get_new_ids_after_their_episode_and_interruptions_are_kept(tmp_path, port):
    build = make_build(tmp_path, "Stagger", "--scene", "Staggered")
    env = open_build(str(build), port, engine=engine(tmp_path))
    try:
        assert list(env.behavior_specs) == ["Striker?team=1", "Walker?team=0"]  # team names intact, sorted
        striker = env.behavior_specs["Striker?team=1"].action_spec
        assert striker.continuous_size == 1 and striker.discrete_branches == (3, 2)
        seen_terminal = []
        for t in range(14):
            walker, ended = env.get_steps("Walker?team=0")
            # agent i asks every i + 1 steps: only those asking are in the decision steps
            assert sorted(walker.obs[0][:, 0].astype(int).tolist()) == [i for i in range(4) if t % (i + 1) == 0]
            if t > 0:  # the reward is the first action each agent received
                np.testing.assert_allclose(walker.reward, (walker.obs[0][:, 0] + 1) / 10)
            for i in range(len(ended)):
                slot = int(ended.obs[0][i, 0])
                seen_terminal.append((slot, bool(ended.interrupted[i]), int(ended.agent_id[i])))
                assert ended.agent_id[i] not in walker.agent_id  # the next episode has a new id
            env.set_actions("Walker?team=0", ActionTuple(((walker.obs[0][:, :1] + 1) / 10 *
                                                           np.ones((1, 2))).astype(np.float32)))
            striker_steps, _ = env.get_steps("Striker?team=1")
            masks = striker_steps.action_mask
            assert [m.shape for m in masks] == [(2, 3), (2, 2)] and masks[0][:, 0].all() and not masks[1].any()
            env.set_actions("Striker?team=1", ActionTuple(np.zeros((2, 1), np.float32), np.ones((2, 2), np.int32)))
            env.step()
        assert (0, False, 0) in seen_terminal  # agent 0 decides every step: 6 decisions, then done
        assert any(slot == 1 and interrupted for slot, interrupted, _ in seen_terminal)
    finally:
        env.close()
    assert not [e for e in events(log_of(env)) if e["event"] == "masked_action"]
    # no --width/--height: no resolution is sent, the build keeps its own (ML-Agents 0.16)
    assert not [e for e in events(log_of(env)) if e["event"] == "engine" and e["kind"] == 0]


def test_a_behavior_that_appears_after_the_first_reset_joins_the_specs(tmp_path, port):
    build = make_build(tmp_path, "Late", "--scene", "Staggered", "--striker-from", "3")
    env = open_build(str(build), port, engine=engine(tmp_path))
    try:
        assert list(env.behavior_specs) == ["Walker?team=0"]
        for step in range(1, 7):
            for behavior in list(env.behavior_specs):
                decision, _ = env.get_steps(behavior)
                spec = env.behavior_specs[behavior].action_spec
                env.set_actions(behavior, ActionTuple(np.full((len(decision), spec.continuous_size), 0.5, np.float32),
                                                      np.ones((len(decision), spec.num_branches), np.int32)))
            env.step()
            assert list(env.behavior_specs) == ["Walker?team=0"] + (["Striker?team=1"] if step >= 3 else [])
        striker, _ = env.get_steps("Striker?team=1")
        assert len(striker) == 2 and env.behavior_specs["Striker?team=1"].action_spec.discrete_branches == (3, 2)
        np.testing.assert_allclose(striker.reward, 0.5)  # its agents got the actions set for them
    finally:
        env.close()
    assert not [e for e in events(log_of(env)) if e["event"] == "masked_action"]


def test_mlagents_learn_trains_a_behavior_that_appears_mid_run(run_cli, workdir, port):
    build = make_build(workdir / "Builds", "Late", "--scene", "Staggered", "--striker-from", "40")
    config = write_yaml(workdir / "c.yaml", CONFIG.replace("max_steps: 600", "max_steps: 300"))
    result = run_cli(str(config), f"--env={build}", "--run-id=late", f"--base-port={port}")
    assert result.code == 0, result.log
    assert "behavior 'Striker?team=1' appeared at step 40: training it from now on" in result.log
    run = workdir / "models" / "late"
    # files under the name before '?team=' (one team of each behavior), as in ML-Agents
    assert list((run / "Striker").glob("checkpoint-*.pt")) and (run / "Striker.onnx").is_file()
    assert (run / "Walker.onnx").is_file() and not list(run.glob("*team*"))
    assert list((workdir / "summaries" / "late_Striker").glob("events.out*"))  # its TensorBoard folder
    log = events(workdir / "models" / "late" / "run_logs" / f"Player-{port}.log")
    assert not [e for e in log if e["event"] == "masked_action"]  # the trained policy respects the mask


def test_api_1_2_gets_its_actions_in_the_old_field(tmp_path, port):
    build = make_build(tmp_path, "Old", "--scene", "Staggered", "--api", "1.2.0")
    env = open_build(str(build), port, engine=engine(tmp_path))
    try:
        assert not env.negotiated.hybrid_actions
        assert env.behavior_specs["Striker?team=1"].action_spec.describe() == "discrete[3, 2]"
        for _ in range(2):
            walker, _ = env.get_steps("Walker?team=0")
            env.set_actions("Walker?team=0", ActionTuple(np.full((len(walker), 2), 0.25, np.float32)))
            env.set_actions("Striker?team=1", ActionTuple(discrete=np.ones((2, 2), np.int32)))
            env.step()
        walker, _ = env.get_steps("Walker?team=0")
        np.testing.assert_allclose(walker.reward, 0.25)
    finally:
        env.close()
    assert events(log_of(env))[1]["version"] == "1.2.0"  # Unity's own version is answered


@pytest.mark.parametrize("flags, shape", [
    ((), (20, 20, 3)),
    (("--gray",), (20, 20, 1)),
    (("--channels-first",), (20, 20, 3)),
    (("--float-camera", "--channels-first"), (20, 20, 3)),
    (("--api", "1.0.0"), (20, 20, 3)),
])
def test_cameras_arrive_as_height_width_channels_images(tmp_path, port, flags, shape):
    build = make_build(tmp_path, "Grid", "--scene", "GridWorld", "--camera", "20", *flags)
    env = open_build(str(build), port, engine=engine(tmp_path))
    try:
        spec = env.behavior_specs["GridWorld"]
        assert spec.observation_shapes == (shape, (83,)) and spec.action_spec.discrete_branches == (4,)
        for _ in range(3):
            decision, _ = env.get_steps("GridWorld")
            image, vector = decision.obs
            # (a gray camera travels as an RGB PNG of three equal channels, decoded to one)
            expected = np.stack([camera_image(v, 20, shape[2]) for v in vector])
            if "--float-camera" in flags:
                assert image.dtype == np.float32
                np.testing.assert_allclose(image, expected / 255.0, atol=1e-6)
            else:
                assert image.dtype == np.uint8
                np.testing.assert_array_equal(image, expected)
            blocked = decision.action_mask[0]
            assert blocked.shape == (9, 4) and blocked.any()  # moves into the wall
            choice = np.argmin(blocked, axis=1).astype(np.int32)[:, None]
            env.set_actions("GridWorld", ActionTuple(discrete=choice))
            env.step()
    finally:
        env.close()


def test_statistics_and_a_users_raw_bytes_channel(tmp_path, port):
    channel_id = uuid.uuid4()
    mine = RawBytesChannel(channel_id)
    build = make_build(tmp_path, "Stats", "--stats", "--echo", str(channel_id))
    env = open_build(str(build), port, engine=engine(tmp_path), side_channels=[mine])
    try:
        env.take_stats()
        mine.send(b"\x01\x02\x03")
        for _ in range(3):
            env.step()
        stats = env.take_stats()
        assert stats["Fake/Step"] == ([1.0, 2.0, 3.0], sc.STAT_AVERAGE)
        assert stats["Fake/Latest"] == ([3.0], sc.STAT_MOST_RECENT)
        assert mine.take_received() == [b"\x03\x02\x01"]
    finally:
        env.close()


# --- faults: a clear message each, and no build left running (no_build_left_behind)

def fails(tmp_path, port, *flags, timeout=60.0, env_args=()):
    build = make_build(tmp_path, "Faulty", *flags)
    start = time.time()
    with pytest.raises(EnvError) as caught:
        env = open_build(str(build), port, engine=engine(tmp_path, timeout_wait=timeout), env_args=list(env_args))
        try:
            for _ in range(50):
                env.step()
        finally:
            env.close()
    return str(caught.value), time.time() - start


def test_float_properties_go_both_ways(tmp_path, port):
    # ML-Agents 0.15's channel: Python sets a property, the scene's C# code may set its own
    properties = sc.FloatPropertiesChannel()
    env = open_build(str(make_build(tmp_path, "Ball")), port, engine=engine(tmp_path), side_channels=[properties])
    try:
        properties.set_property("gravity", 12.5)
        env.reset()
        env.step()
        assert {"event": "float_property", "key": "gravity", "value": 12.5} in events(log_of(env))
        assert properties.properties == {"gravity": 12.5, "gravity/seen": 25.0}
    finally:
        env.close()


def test_a_build_that_exits_at_once_names_its_log(tmp_path, port):
    message, seconds = fails(tmp_path, port, "--exit-at-once")
    assert message.startswith(f"--env={tmp_path / 'Faulty.x86_64'}: Unity stopped while Palaestra waited for its "
                              "first message (the handshake): the build exited with code 1")
    assert f"its log is {tmp_path / 'logs' / f'Player-{port}.log'}" in message and seconds < 10


def test_a_build_that_crashes_mid_run(tmp_path, port):
    message, _ = fails(tmp_path, port, "--crash-after", "5")
    assert "Unity stopped while Palaestra waited for the observations after a step" in message
    assert "exited with code 3" in message


def test_a_build_that_never_connects_times_out_saying_what_to_check(tmp_path, port):
    message, seconds = fails(tmp_path, port, env_args=["--slow-start", "30"], timeout=1.5)
    assert "did not send its first message (the handshake) within 1.5 s" in message
    assert "Check the build's log" in message and "--timeout-wait" in message and seconds < 10


def test_a_build_that_hangs_mid_run_times_out(tmp_path, port):
    # the time-out covers the handshake too: long enough for the fake build (a Python program) to
    # start on a loaded machine, where 1.5 s was not
    message, _ = fails(tmp_path, port, "--hang-after", "3", timeout=8.0)
    assert "did not send the observations after a step within 8 s" in message


def test_nan_from_unity_names_the_behavior(tmp_path, port):
    message, _ = fails(tmp_path, port, "--nan-after", "2")
    assert "behavior '3DBall', observation 0: NaN or infinite values" in message


@pytest.mark.parametrize("api, expected", [("0.15.0", "Upgrade the ML-Agents package in the Unity project"),
                                           ("2.1.0", "Upgrade Palaestra")])
def test_an_api_palaestra_cannot_speak_is_refused(tmp_path, port, api, expected):
    message, seconds = fails(tmp_path, port, "--api", api)
    assert expected in message and api in message and seconds < 10


def test_a_taken_port_moves_a_build_to_the_next_free_one(tmp_path, port, caplog):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        with caplog.at_level(logging.WARNING, logger="palaestra"):
            env = open_build(str(make_build(tmp_path, "Ball")), port, engine=engine(tmp_path))
        env.close()
    assert env.communicator.port > port and events(log_of(env))[0]["port"] == env.communicator.port
    assert f"port {port} is in use; the build is told to connect on port {env.communicator.port}" in caplog.text


def test_the_editors_port_in_use_is_an_error_naming_it(port):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        with pytest.raises(EnvError, match=f"port {port}, where the Unity Editor connects, is in use .* by process "
                                           f"{os.getpid()}"):
            open_editor(port=port)


def test_a_port_whose_last_connection_lingers_in_time_wait_is_free(port):
    # the end of a run leaves its connection's server side in TIME_WAIT for a minute: the next run
    # (an Editor session started again at once) must be able to listen there
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC's server sets it
        listener.bind(("127.0.0.1", port))
        listener.listen()
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server's side closes first: it is the one left in TIME_WAIT
        client.recv(1)
        client.close()
    assert port_problem(port) is None
    with socket.socket() as holder:  # a listener is still found
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        assert port_problem(port) is not None


def test_the_editor_listens_and_says_to_press_play(tmp_path, port, capsys):
    player = subprocess.Popen([sys.executable, "-m", "tests.fake_unity.player", "--mlagents-port", str(port),
                               "-logFile", str(tmp_path / "editor.log")], cwd=REPOSITORY,
                              env=dict(os.environ, PYTHONPATH=str(REPOSITORY)))
    try:
        env = open_editor(port=port, engine=EngineConfig(timeout_wait=30))
        assert "Start training by pressing the Play button in the Unity Editor" in capsys.readouterr().out
        env.step()
        env.close()
        assert player.wait(10) == 0
        assert env.process is None
    finally:
        player.kill()
        player.wait()


# --- the command line

def test_training_in_the_editor_ends_when_play_is_stopped(run_cli, workdir, port, monkeypatch):
    import palaestra.envs.unity

    monkeypatch.setattr(palaestra.envs.unity, "EDITOR_PORT", port)
    editor = subprocess.Popen([sys.executable, "-m", "tests.fake_unity.player", "--mlagents-port", str(port),
                               "--slow-start", "1", "--quit-after", "100", "-logFile", str(workdir / "editor.log")],
                              cwd=REPOSITORY, env=dict(os.environ, PYTHONPATH=str(REPOSITORY)))
    try:
        config = write_yaml(workdir / "c.yaml", CONFIG.replace("max_steps: 600", "max_steps: 100000"))
        result = run_cli(str(config), "--run-id=ed")
        assert editor.wait(10) == 0
    finally:
        editor.kill()
        editor.wait()
    assert result.code == 0, result.log
    assert "Start training by pressing the Play button in the Unity Editor" in result.out
    assert "Unity closed the connection (status 400: Play was stopped): the run ends, saving the model" in result.log
    assert (workdir / "models" / "ed" / "3DBall.onnx").exists()


CONFIG = """
default:
  trainer: ppo
  max_steps: 600
  summary_freq: 300
  time_horizon: 32
  batch_size: 64
  buffer_size: 256
"""


def test_mlagents_learn_trains_a_build_and_keeps_its_log(run_cli, workdir, port):
    build = make_build(workdir / "Builds", "FakeBall")
    config = write_yaml(workdir / "c.yaml", CONFIG)
    result = run_cli(str(config), f"--env={build}", "--run-id=u", f"--base-port={port}", "--no-graphics",
                     "--width=96", "--height=72", "--quality-level=3", "--time-scale=4", "--target-frame-rate=30",
                     "--capture-frame-rate=50", "--env-args", "--stats")
    assert result.code == 0, result.log
    log = workdir / "models" / "u" / "run_logs" / f"Player-{port}.log"
    assert events(log)[0]["nographics"] and events(log)[-1]["reason"] == "status 400"
    # every engine flag reaches the scene, each as its kind on the engine-configuration channel
    engine_events = {e["kind"]: e["values"] for e in events(log) if e["event"] == "engine"}
    assert engine_events == {0: [96, 72], 1: [3], 2: [4.0], 3: [30], 4: [50]}
    assert (workdir / "models" / "u" / "3DBall.onnx").exists()
    # the scene's statistics reach the summaries under their own keys: the fake sends its step
    # count as an average and as a most-recent value, so the latter is ahead of the former
    with open(workdir / "summaries" / "u_3DBall.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert float(rows[-1]["Fake/Latest"]) > float(rows[-1]["Fake/Step"]) > 0


def test_num_envs_2_launches_two_builds_on_consecutive_ports(run_cli, workdir, port):
    build = make_build(workdir / "Builds", "FakeBall")
    config = write_yaml(workdir / "c.yaml", CONFIG)
    result = run_cli(str(config), f"--env={build}", "--run-id=u2", f"--base-port={port}", "--num-envs=2",
                     "--env-args", "--stats")
    assert result.code == 0, result.log
    logs = workdir / "models" / "u2" / "run_logs"
    assert sorted(p.name for p in logs.iterdir()) == [f"Player-{port}.log", f"Player-{port + 1}.log"]
    for p in logs.iterdir():
        assert events(p)[-1]["event"] == "exit"
    with open(workdir / "summaries" / "u2_3DBall.csv", newline="") as fh:  # statistics from the workers
        rows = list(csv.DictReader(fh))
    assert float(rows[-1]["Fake/Latest"]) > 0 and float(rows[-1]["Fake/Step"]) > 0


def test_cli_faults_end_in_one_line_without_a_traceback(run_cli, workdir, port):
    config = write_yaml(workdir / "c.yaml", CONFIG)
    missing = run_cli(str(config), f"--env={workdir / 'Builds' / 'Gone.x86_64'}", "--run-id=m")
    assert missing.code == 1 and "no Unity build found" in missing.log and "Traceback" not in missing.log
    crash = make_build(workdir / "Crash", "FakeBall", "--crash-after", "40")
    crashed = run_cli(str(config), f"--env={crash}", "--run-id=c", f"--base-port={port}")
    assert crashed.code == 1 and "exited with code 3" in crashed.log and "the model was saved first" in crashed.log
    assert "Traceback" not in crashed.log
    editor = run_cli(str(config), "--num-envs=2", "--run-id=e")
    assert editor.code == 1 and "needs a Unity build" in editor.log
    nan = make_build(workdir / "NaN", "FakeBall", "--nan-after", "30")
    poisoned = run_cli(str(config), f"--env={nan}", "--run-id=n", f"--base-port={port}")
    assert poisoned.code == 1 and "behavior '3DBall', observation 0: NaN or infinite values" in poisoned.log
    assert "Traceback" not in poisoned.log
    old_api = make_build(workdir / "Old", "FakeBall", "--api", "0.15.0")
    refused = run_cli(str(config), f"--env={old_api}", "--run-id=v", f"--base-port={port}")
    assert refused.code == 1 and "Upgrade the ML-Agents package in the Unity project" in refused.log
    assert "Traceback" not in refused.log
    silent = make_build(workdir / "Silent", "FakeBall", "--slow-start", "30")
    waited = run_cli(str(config), f"--env={silent}", "--run-id=t", f"--base-port={port}", "--timeout-wait=2")
    assert waited.code == 1 and "within 2 s" in waited.log and "Traceback" not in waited.log


def test_dry_run_reads_the_builds_specs_and_writes_no_run_folder(run_cli, workdir, port):
    build = make_build(workdir / "Builds", "Grid", "--scene", "GridWorld")
    config = write_yaml(workdir / "c.yaml", CONFIG)
    result = run_cli(str(config), f"--env={build}", "--run-id=d", f"--base-port={port}", "--dry-run")
    assert result.code == 0 and "discrete[4]" in result.out
    assert not (workdir / "models").exists()
    from palaestra.run import dry_run_logs

    assert not dry_run_logs().exists()  # the build's log of a dry run that passed (one that fails names it)


@pytest.mark.parametrize("limit, code", [("--restarts-rate-limit-n=-1", 0), ("--max-lifetime-restarts=1", 1)],
                         ids=["restarted", "past-the-limit"])
def test_a_build_that_crashes_under_num_envs_is_restarted_within_the_limits(run_cli, workdir, port, limit, code):
    # past --max-lifetime-restarts the run stops, after saving (10 steps of 12 agents in each of 2
    # builds: 240 of the run's 600 steps per life, the agents' episodes ended where the build crashed)
    build = make_build(workdir / "Builds", "FakeBall", "--crash-after", "10")
    config = write_yaml(workdir / "c.yaml", CONFIG)
    result = run_cli(str(config), f"--env={build}", "--run-id=r", f"--base-port={port}", "--num-envs=2", limit)
    assert result.code == code, result.log
    assert "exited with code 3" in result.log and "restart" in result.log.lower()
    assert "Traceback" not in result.log
    assert (workdir / "models" / "r" / "3DBall.onnx").exists()


def test_builds_that_hang_under_num_envs_are_stopped_with_their_workers(run_cli, workdir, port):
    # each hang costs the worker its life (the pool replaces it at once): its build, in a session of
    # its own and started by a process that ignores SIGTERM, once ran on (no_build_left_behind)
    # (25 steps of 12 agents in each of 2 builds: at most 600 steps before the hangs, so a run of 800
    # always needs a hung round; one of 400 fast enough to read its rounds within the 4 s ended without one)
    build = make_build(workdir / "Builds", "FakeBall", "--hang-after", "25")
    config = write_yaml(workdir / "c.yaml", CONFIG.replace("max_steps: 600", "max_steps: 800"))
    start = time.time()
    result = run_cli(str(config), f"--env={build}", "--run-id=h", f"--base-port={port}", "--num-envs=2",
                     "--timeout-wait=4", "--restarts-rate-limit-n=-1")
    assert result.code == 0, result.log
    assert "The scene stopped answering" in result.log and "restart" in result.log.lower()
    assert time.time() - start < 120


def test_a_build_started_by_a_worker_takes_sigterm(tmp_path):
    # a worker ignores the stop signals with a handler, not SIG_IGN, which a build would inherit
    import signal as signals

    from palaestra.interrupts import STOP_SIGNALS
    from palaestra.interrupts import ignore_stop_signals

    old = {s: signals.getsignal(s) for s in STOP_SIGNALS}
    try:
        ignore_stop_signals()  # as a worker process does first
        player = launch(str(make_build(tmp_path, "Idle", "--slow-start", "60")), free_port(30000), True,
                        str(tmp_path / "logs"), [])
    finally:
        for s, handler in old.items():
            signals.signal(s, handler)
    with open(f"/proc/{player.popen.pid}/status") as fh:
        ignored = int(next(line for line in fh if line.startswith("SigIgn:")).split()[1], 16)
    assert not ignored & (1 << (signals.SIGTERM - 1))
    start = time.time()
    player.stop(wait=0.0)  # no goodbye was said: SIGTERM at once
    assert player.popen.poll() is not None and time.time() - start < 3


def test_a_build_started_again_on_its_port_keeps_the_log_of_the_one_before(tmp_path):
    # a worker's build restarted after a crash truncates its -logFile: the crash's reason is kept
    logs, port = tmp_path / "logs", free_port(30000)
    logs.mkdir()
    (logs / f"Player-{port}.log").write_text("the first build's last words\n")
    player = launch(str(make_build(tmp_path, "Idle", "--slow-start", "60")), port, True, str(logs), [])
    player.stop(wait=0.0)
    assert (logs / f"Player-{port}.previous.log").read_text() == "the first build's last words\n"
    assert not (logs / f"Player-{port}.out").exists()  # it printed nothing: no empty file is left


def test_what_a_build_prints_is_kept_apart_from_the_log_unity_writes_over(tmp_path):
    # Unity truncates its -logFile and writes at its own offset: a native crash's report printed
    # to stderr, appended to the same file, was written over
    logs, port = tmp_path / "logs", free_port(30000)
    build = tmp_path / "Printer.x86_64"
    build.write_text("#!/bin/sh\nwhile [ \"$1\" != -logFile ]; do shift; done\n"
                     "echo 'first line' > \"$2\"\necho 'native crash report' >&2\n"
                     "echo 'second line' >> \"$2\"\nexit 3\n")
    build.chmod(0o755)
    logs.mkdir()
    (logs / f"Player-{port}.out").write_text("the build before printed this\n")
    player = launch(str(build), port, True, str(logs), [])
    player.popen.wait(10)
    assert (logs / f"Player-{port}.log").read_text() == "first line\nsecond line\n"
    assert (logs / f"Player-{port}.out").read_text() == "native crash report\n"
    assert (logs / f"Player-{port}.previous.out").read_text() == "the build before printed this\n"
    assert player.exit_description() == (f"the build exited with code 3; its log is {logs / f'Player-{port}.log'} "
                                          f"(what it printed: {logs / f'Player-{port}.out'})")
    player.stop()
    assert (logs / f"Player-{port}.out").exists()


# launches a build (its log under the folder given), then dies at once as a killed worker does
_LAUNCH_THEN_DIE = """
import os, signal, sys
from palaestra.envs.unity.launcher import launch
os.register_at_fork(after_in_child=lambda: open(sys.argv[3], "w").close())
player = launch(sys.argv[1], int(sys.argv[2]), True, sys.argv[4], [])
print(player.popen.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_a_build_starts_with_no_python_run_in_a_fork_and_dies_with_the_process_that_started_it(tmp_path):
    # Python code in a child forked while gRPC's threads run (a worker serving its build) aborts
    # now and then: the launch must run none (the fork hook would), yet the kernel must still
    # kill the build when its starter dies
    marker = tmp_path / "python-ran-in-a-fork"
    build = make_build(tmp_path, "Idle", "--slow-start", "60")
    out = subprocess.run([sys.executable, "-c", _LAUNCH_THEN_DIE, str(build), str(free_port(30000)), str(marker),
                          str(tmp_path / "logs")],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPOSITORY)})
    assert out.returncode == -9, out.stderr
    deadline = time.time() + 5
    while running_players(str(tmp_path)) and time.time() < deadline:
        time.sleep(0.05)
    assert running_players(str(tmp_path)) == [], "the build outlived the process that started it"
    assert not marker.exists(), "Python code ran in a forked copy of the process that started the build"


@pytest.mark.training
@pytest.mark.parametrize("flags", [[], ["--num-envs=2"]])
def test_ppo_solves_3dball_through_the_fake_build(run_cli, workdir, port, flags):
    """The same threshold and budget as the in-process 3DBall in tests/test_training.py, with
    the physics on the far side of the gRPC bridge."""
    from palaestra.envs.builtin import BUILTIN_ENVS
    from palaestra.evaluation import evaluate_onnx
    from tests.conftest import SHIPPED_CONFIG
    from tests.test_training import last_summary

    build = make_build(workdir / "Builds", "FakeBall")
    config = write_yaml(workdir / "c.yaml", SHIPPED_CONFIG.read_text().replace("max_steps: 5.0e5", "max_steps: 3.0e5"))
    result = run_cli(str(config), f"--env={build}", "--run-id=r", "--seed=1", f"--base-port={port}", "--no-graphics",
                     *flags)
    assert result.code == 0, result.log[-3000:]
    assert last_summary(workdir, "r_3DBall")["Environment/Cumulative Reward"] >= 90.0
    returns = evaluate_onnx(BUILTIN_ENVS["3DBall"](seed=3, num_areas=2), workdir / "models/r/3DBall.onnx", episodes=20)
    assert len(returns) == 20 and np.mean(returns) >= 90.0


@pytest.mark.parametrize("builds", [1, 2])
def test_ctrl_c_saves_and_quits_the_builds(workdir, port, builds):
    from tests.conftest import interrupt_training

    build = make_build(workdir / "Builds", "FakeBall", "--step-delay", "0.002")
    config = write_yaml(workdir / "c.yaml", CONFIG.replace("max_steps: 600", "max_steps: 1000000"))
    code, err, seconds = interrupt_training(workdir, str(config), f"--env={build}", "--run-id=i",
                                            f"--base-port={port}", f"--num-envs={builds}")
    assert code == 130 and "Traceback" not in err and seconds < 30, err[-2000:]
    assert (workdir / "models" / "i" / "3DBall.onnx").exists()
    for player in range(builds):  # each told goodbye (by its worker), each quit by itself
        log = events(workdir / "models" / "i" / "run_logs" / f"Player-{port + player}.log")
        assert log[-1]["reason"] == "status 400"


def test_a_seed_past_int32_reaches_unity_wrapped(tmp_path, port):
    env = open_build(str(make_build(tmp_path, "Ball")), port, seed=2**32 - 1, engine=engine(tmp_path))
    env.close()
    assert events(log_of(env))[1]["seed"] == (2**32 - 1) % 2**31


@pytest.mark.parametrize("api, package", [("1.0.0", "0.16.1"), ("1.3.0", "1.1.0"), ("1.5.0", "1.1.0")])
def test_unity_hears_a_trainer_version_its_package_accepts(tmp_path, port, api, package):
    # Unity's 1.0.x packages stop talking to a trainer above 0.25.999
    env = open_build(str(make_build(tmp_path, "Ball", "--api", api)), port, engine=engine(tmp_path))
    env.close()
    initialized = events(log_of(env))[1]
    assert (initialized["version"], initialized["package"]) == (api, package)


def test_statistics_also_come_from_stepping_workers(run_cli, workdir, port):
    build = make_build(workdir / "Builds", "FakeBall", "--stats")
    config = write_yaml(workdir / "c.yaml", CONFIG)
    result = run_cli(str(config), f"--env={build}", "--run-id=s", f"--base-port={port}", "--num-envs=2",
                     "--acting=main")
    assert result.code == 0, result.log
    with open(workdir / "summaries" / "s_3DBall.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert float(rows[-1]["Fake/Latest"]) > float(rows[-1]["Fake/Step"]) > 0


def test_a_newer_minor_api_or_missing_capabilities_are_warnings(caplog):
    from palaestra.envs.unity.communicator import negotiate

    init = pb.UnityRLInitializationOutputProto(name="A", communication_version="1.7.0", package_version="9.9.9")
    with caplog.at_level(logging.WARNING, logger="palaestra"):
        negotiated = negotiate(init)
    assert negotiated.api == (1, 5) and negotiated.hybrid_actions
    assert "newer than the 1.5.0 Palaestra knows" in caplog.text and "base RL capabilities" in caplog.text


def test_force_keeps_the_logs_of_the_builds_it_started_and_logs_alone_are_no_earlier_run(tmp_path):
    from palaestra.options import RunOptions
    from palaestra.run_folders import check_run_folders, start_over_if_forced

    run = tmp_path / "r"
    (run / "run_logs").mkdir(parents=True)
    (run / "run_logs" / "Player-5005.log").write_text("open")
    check_run_folders(RunOptions(run_id="r"), tmp_path)  # only logs: a run that never trained
    (run / "3DBall").mkdir()
    (run / "3DBall.onnx").write_text("")
    start_over_if_forced(RunOptions(run_id="r", force=True), run)
    assert sorted(p.name for p in run.iterdir()) == ["run_logs"]
    assert (run / "run_logs" / "Player-5005.log").read_text() == "open"


def test_two_side_channels_with_one_id_are_refused_and_the_build_is_stopped(tmp_path, port):
    channel_id = uuid.uuid4()
    with pytest.raises(EnvError, match=f"two side channels share the id {channel_id}"):
        open_build(str(make_build(tmp_path, "Ball")), port, engine=engine(tmp_path),
                   side_channels=[RawBytesChannel(channel_id), RawBytesChannel(channel_id)])


def test_self_play_over_a_build_takes_turns_between_its_teams(run_cli, workdir, port):
    # asymmetric self-play on the fake scene's 'Walker?team=0' and 'Striker?team=1': each learns in
    # turn while the other plays its ghost; every environment resets at each change of turn
    build = make_build(workdir / "Builds", "Teams", "--scene", "Staggered")
    config = write_yaml(workdir / "c.yaml", CONFIG + "  self_play: {team_change: 150, save_steps: 50, swap_steps: 50}\n")
    result = run_cli(str(config), f"--env={build}", "--run-id=sp", f"--base-port={port}", "--seed=1")
    assert result.code == 0, result.log
    assert "self-play: team 1 learns now" in result.log and "self-play: team 0 learns now" in result.log
    run = workdir / "models" / "sp"
    assert (run / "Walker.onnx").is_file() and (run / "Striker.onnx").is_file()
    # the ratings move with the Walker's episodes (the fake scene's Strikers never finish one)
    assert "Self-play/ELO" in (workdir / "summaries" / "sp_Walker.csv").read_text().splitlines()[0]
    resets = [e for e in events(run / "run_logs" / f"Player-{port}.log") if e["event"] == "reset"]
    assert len(resets) >= 3  # the first, then one per change of turn


@pytest.mark.parametrize("acting", ["main", "workers"])
def test_a_build_that_quits_under_num_envs_ends_the_run_as_in_one_process(run_cli, workdir, port, acting):
    # the scene's goodbye (status 400) reached the main process as a crash: the worker was restarted,
    # then the run stopped with an error; with --num-envs 1 it is an ordinary end, saved
    build = make_build(workdir / "Builds", "FakeBall", "--quit-after", "30")
    config = write_yaml(workdir / "c.yaml", CONFIG.replace("max_steps: 600", "max_steps: 100000"))
    result = run_cli(str(config), f"--env={build}", "--run-id=q", f"--base-port={port}", "--num-envs=2",
                     f"--acting={acting}")
    assert result.code == 0, result.log
    assert "environment worker" in result.log and "Unity closed the connection (status 400" in result.log
    assert "the run ends, saving the model" in result.log
    assert "restart" not in result.log.lower() and "failed" not in result.log
    assert (workdir / "models" / "q" / "3DBall.onnx").exists()


@pytest.mark.parametrize("acting", ["main", "workers"])
def test_num_envs_takes_every_instances_behaviors(run_cli, workdir, port, acting):
    # a behavior whose agents asked for their first decision in one instance and not yet in the other
    # (spawned later there) was refused: "the instances report different behaviors"
    build = workdir / "Builds" / "Uneven.x86_64"
    build.parent.mkdir(parents=True)
    build.write_text(
        "#!/bin/sh\nport=0; previous=\nfor a in \"$@\"; do [ \"$previous\" = --mlagents-port ] && port=$a; previous=$a; done\n"
        "from=0; [ $((port % 2)) -eq 1 ] && from=6\n"
        f"PYTHONPATH='{REPOSITORY}' exec '{sys.executable}' -m tests.fake_unity.player --scene Staggered "
        "--striker-from $from \"$@\"\n")
    build.chmod(0o755)
    config = write_yaml(workdir / "c.yaml", CONFIG.replace("max_steps: 600", "max_steps: 300"))
    result = run_cli(str(config), f"--env={build}", "--run-id=un", f"--base-port={port}", "--num-envs=2",
                     f"--acting={acting}")
    assert result.code == 0, result.log
    assert "appeared" not in result.log  # known from the first instance, from the start
    run = workdir / "models" / "un"
    assert (run / "Striker.onnx").is_file() and (run / "Walker.onnx").is_file()
    for player, striker_from in ((0, "0"), (1, "6")):  # (the two instances differed as meant)
        log = events(run / "run_logs" / f"Player-{port + player}.log")
        assert log[0]["argv"][:4] == ["--scene", "Staggered", "--striker-from", striker_from]
        assert not [e for e in log if e["event"] in ("masked_action", "unanswered")]  # every decision answered


def test_num_envs_refuses_instances_that_give_a_behavior_different_specs():
    from palaestra.envs.base import ActionSpec, BehaviorSpec
    from palaestra.workers.pool import WorkerPool

    specs = [{"A": BehaviorSpec([(3,)], ActionSpec(continuous_size=2))},
             {"A": BehaviorSpec([(4,)], ActionSpec(continuous_size=2)), "B": BehaviorSpec([(1,)], ActionSpec(1))}]
    pool = WorkerPool.__new__(WorkerPool)
    closed = []
    pool.close = lambda: closed.append(True)
    with pytest.raises(EnvError, match=re.escape(
            "--num-envs: behavior 'A' of 'scene' has observations [[3]] and actions continuous(2) in environment "
            "worker 0 but observations [[4]] and actions continuous(2) in worker 1")):
        pool._merge_specs("scene", specs)
    assert closed
    assert pool._merge_specs("scene", [specs[1], {"A": specs[1]["A"]}, {}]) == specs[1]


def test_ports_that_cannot_be_listened_on_say_why(monkeypatch):
    # a --base-port below 1024 without the rights to it was reported as "all in use"
    import palaestra.envs.unity as unity

    monkeypatch.setattr(unity, "port_problem", lambda port: "Permission denied")
    with pytest.raises(EnvError) as refused:
        unity._listen_from(80, "--env=Game")
    assert str(refused.value) == ("--env=Game: none of ports 80 to 179 can be listened on (Permission denied: 100) "
                                  "(ports below 1024 need the administrator's rights); choose another --base-port")


def test_action_masks_are_read_alike_whether_every_agent_sends_one_or_some():
    # every agent's mask in one pass where all send one; one by one where some send none
    from types import SimpleNamespace

    from palaestra.envs.base import ActionSpec, BehaviorSpec
    from palaestra.envs.unity.env import UnityEnv

    unity = SimpleNamespace(_specs={"B": BehaviorSpec(((3,),), ActionSpec(0, (2, 3)))}, where="Unity")
    rng = np.random.default_rng(0)
    full = [SimpleNamespace(id=i, action_mask=rng.random(5) < 0.4) for i in range(6)]
    masks = UnityEnv._masks(unity, "B", full)
    expected = np.stack([a.action_mask for a in full])
    np.testing.assert_array_equal(np.concatenate(masks, axis=1), expected)
    assert [m.shape for m in masks] == [(6, 2), (6, 3)] and all(m.dtype == bool for m in masks)
    some = [*full[:3], SimpleNamespace(id=9, action_mask=[])]
    np.testing.assert_array_equal(np.concatenate(UnityEnv._masks(unity, "B", some), axis=1),
                                  np.concatenate([expected[:3], np.zeros((1, 5), bool)]))
    assert UnityEnv._masks(unity, "B", [SimpleNamespace(id=1, action_mask=[])]) is None
    with pytest.raises(EnvError, match=r"agent 7 sent an action mask of 4 entries for branches \[2, 3\] \(5\)"):
        UnityEnv._masks(unity, "B", [*full[:2], SimpleNamespace(id=7, action_mask=[True] * 4)])
