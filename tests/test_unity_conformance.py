"""The fake Unity checked against ML-Agents' own Python side, and Palaestra against both.

ML-Agents' ``UnityEnvironment`` (mlagents-envs, in its own virtual environment, since it pins an
old numpy and protobuf) drives the fake build; Palaestra drives the same build; both must see the
same specs, the same steps and cause the same side-channel effects. That proves the fake speaks
the protocol as Unity does (ML-Agents' side accepts it) and that Palaestra reads it as ML-Agents
does.

Where ML-Agents' Python comes from, per version (1.1.0: API 1.5.0; 0.16.1: API 1.0.0):
- ``PALAESTRA_MLAGENTS_ENVS_1_1_0`` / ``PALAESTRA_MLAGENTS_ENVS_0_16_1``: a Python that imports it;
- else a virtual environment made under ``~/.cache/palaestra`` on first use, only where
  ``PALAESTRA_INSTALL_MLAGENTS_ENVS=1`` allows installing (CI); otherwise the test is skipped,
  saying so. Nothing is downloaded unless asked.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from palaestra.envs.base import ActionTuple, EngineConfig
from palaestra.envs.unity import open_build
from palaestra.envs.unity import messages as pb
from palaestra.envs.unity.communicator import free_port
from tests.fake_unity import make_build
from tests.fake_unity.mlagents_driver import policy, record

DRIVER = Path(__file__).parent / "fake_unity" / "mlagents_driver.py"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "palaestra"
# installed with --no-deps beside these (ML-Agents declares Python <= 3.10 but runs on 3.11)
DEPENDENCIES = ["numpy==1.23.5", "protobuf==3.20.3", "grpcio>=1.49", "cloudpickle", "Pillow", "PyYAML", "filelock"]
API = {"1.1.0": "1.5.0", "0.16.1": "1.0.0"}


def mlagents_python(version: str) -> str:
    given = os.environ.get(f"PALAESTRA_MLAGENTS_ENVS_{version.replace('.', '_')}")
    if given:
        return given
    venv = CACHE / f"mlagents-envs-{version}"
    python = venv / "bin" / "python"
    if (venv / ".ready").exists():
        return str(python)
    if os.environ.get("PALAESTRA_INSTALL_MLAGENTS_ENVS") != "1":
        pytest.skip(f"mlagents-envs {version} is not installed: set PALAESTRA_MLAGENTS_ENVS_"
                    f"{version.replace('.', '_')} to a Python that has it, or PALAESTRA_INSTALL_MLAGENTS_ENVS=1 "
                    f"to install it into {venv}")
    steps = [[sys.executable, "-m", "venv", "--clear", str(venv)],
             [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--ignore-requires-python",
              f"mlagents-envs=={version}"],
             [str(python), "-m", "pip", "install", "--quiet", "--only-binary=:all:", *DEPENDENCIES]]
    for cmd in steps:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            pytest.skip(f"cannot install mlagents-envs {version}: {' '.join(cmd[2:5])} took over 15 minutes")
        if done.returncode != 0:
            pytest.skip(f"cannot install mlagents-envs {version} ({' '.join(cmd[2:5])}): "
                        f"{done.stderr.strip()[-300:]}")
    (venv / ".ready").write_text("ok\n")
    return str(python)


def their_view(python: str, build: Path, port: int, logs: Path, steps: int, args: list[str]) -> dict:
    out = logs / "theirs.json"
    done = subprocess.run([python, str(DRIVER), str(build), str(port), str(logs), str(steps), str(out), *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def our_view(build: Path, port: int, logs: Path, steps: int, args: list[str]) -> dict:
    env = open_build(str(build), port, engine=EngineConfig(time_scale=7.5, no_graphics=True, log_folder=str(logs)),
                     env_args=args)
    trace: list = []
    try:
        env.reset({"gravity": 3.5})
        names = sorted(env.behavior_specs)
        specs = {n: {"shapes": [list(s) for s in env.behavior_specs[n].observation_shapes],
                     "continuous": env.behavior_specs[n].action_spec.continuous_size,
                     "branches": list(env.behavior_specs[n].action_spec.discrete_branches)} for n in names}
        for _ in range(steps):
            for name in names:
                d, t = env.get_steps(name)
                record(trace, name, d.obs, d.reward, d.agent_id, t.obs, t.reward, t.agent_id, t.interrupted)
                s = specs[name]
                cont, disc = policy(d.obs[-1], s["continuous"], s["branches"], d.action_mask)
                env.set_actions(name, ActionTuple(cont, disc))
            env.step()
        stats = {k: (v, a) for k, (v, a) in env.take_stats().items()}
    finally:
        env.close()
    return {"specs": specs, "trace": trace, "stats": stats}


def side_channel_effects(logs: Path) -> list:
    effects = []
    for log in logs.glob("Player-*.log"):
        for line in log.read_text().splitlines():
            if line.startswith("{"):
                e = json.loads(line)
                if e["event"] in ("engine", "parameter", "float_property"):
                    effects.append(json.dumps(e, sort_keys=True))
    return sorted(effects)


def their_free_port() -> int:
    """A port ML-Agents' UnityEnvironment takes: it binds "localhost" without SO_REUSEADDR to check
    it, so a port that an earlier test's connection holds in TIME_WAIT (free to Palaestra's server)
    is refused. Drawn from the system's randomness: a test before may have seeded ``random``."""
    draw = random.SystemRandom()
    for _ in range(100):
        port = free_port(draw.randrange(20000, 40000, 10))
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind(("localhost", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port ML-Agents would take in 100 draws")


@pytest.mark.parametrize("version", ["1.1.0", "0.16.1"])
@pytest.mark.parametrize("scene", [
    ["--scene", "3DBall", "--stats"],
    ["--scene", "GridWorld", "--camera", "20", "--channels-first"],
    ["--scene", "GridWorld", "--camera", "12", "--gray", "--channels-first"],
    ["--scene", "Staggered"],
])
def test_ml_agents_and_palaestra_see_the_same_fake_unity(tmp_path, version, scene):
    python = mlagents_python(version)
    args = scene + ["--api", API[version]]
    build = make_build(tmp_path / "build", "Fake")
    port = their_free_port()
    theirs = their_view(python, build, port, tmp_path / "theirs", 25, args)
    ours = our_view(build, free_port(port + 1), tmp_path / "ours", 25, args)
    channels_first = "--channels-first" in scene and API[version] >= "1.5.0"
    for spec in theirs["specs"].values():  # Palaestra delivers images as [H, W, C]
        spec["shapes"] = [[s[1], s[2], s[0]] if len(s) == 3 and channels_first else s for s in spec["shapes"]]
    assert ours["specs"] == theirs["specs"]
    assert ours["trace"] == theirs["trace"]
    assert side_channel_effects(tmp_path / "ours") == side_channel_effects(tmp_path / "theirs") != []
    if "--stats" in scene:
        assert sorted(ours["stats"]) == sorted(theirs["stats"]) == ["Fake/Latest", "Fake/Step"]
        for key, (values, aggregation) in theirs["stats"].items():
            # 0.16.1 keeps only the last value of a key, 1.x every value; most-recent keys keep
            # only their last value here
            mine, my_aggregation = ours["stats"][key]
            assert my_aggregation == aggregation and mine[-1] == pytest.approx(values[-1])
            if version != "0.16.1" and key == "Fake/Step":
                assert mine == pytest.approx(values)


DUMP_DESCRIPTORS = """
import importlib, json, pkgutil
import mlagents_envs.communicator_objects as co
out = {}
def walk(d):
    out[d.full_name] = sorted((f.number, f.type, f.label == 3, (f.message_type or f.enum_type).full_name
                               if (f.message_type or f.enum_type) else None) for f in d.fields)
    for n in d.nested_types:
        walk(n)
for m in pkgutil.iter_modules(co.__path__):
    if m.name.endswith("_pb2"):
        module = importlib.import_module("mlagents_envs.communicator_objects." + m.name)
        for d in module.DESCRIPTOR.message_types_by_name.values():
            walk(d)
print(json.dumps(out))
"""


@pytest.mark.parametrize("version", ["1.1.0", "0.16.1"])
def test_every_ml_agents_message_field_has_the_same_number_type_and_label_here(version):
    python = mlagents_python(version)
    done = subprocess.run([python, "-c", DUMP_DESCRIPTORS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = json.loads(done.stdout)
    ours: dict = {}

    def repeated(f) -> bool:  # protobuf 7 dropped FieldDescriptor.label
        return f.is_repeated if hasattr(f, "is_repeated") else f.label == 3

    def walk(d):
        ours[d.full_name] = sorted((f.number, f.type, repeated(f), (f.message_type or f.enum_type).full_name
                                    if (f.message_type or f.enum_type) else None) for f in d.fields)
        for n in d.nested_types:
            walk(n)

    for cls in pb._CLASSES.values():
        walk(cls.DESCRIPTOR)
    for name, fields in theirs.items():
        assert name in ours, f"message {name} of mlagents-envs {version} is not defined here"
        mine = {f[0]: f for f in ours[name]}
        for field in fields:
            ours_field = mine.get(field[0])
            assert tuple(field) == ours_field, f"{name} field {field[0]}: theirs {field}, ours {ours_field}"
