"""The gRPC bridge to Unity, Palaestra's side against ML-Agents' ``UnityEnvironment``, both
serving the same fake Unity build (tests/fake_unity), side by side in one run.

    python bench/unity_bridge.py --steps 2000 --repeats 3
    python bench/unity_bridge.py --their-python /path/to/py310-venv/bin/python   # ML-Agents at its best

Scenes: ``ball``, a 3DBall-like scene (12 agents x 8 floats, 2 continuous actions), and
``camera``, 9 GridWorld agents with an 84 x 84 x 3 PNG camera (sent as [C, H, W], the layout
mlagents-envs 1.x reads) and 83 floats. Each measurement is a fresh process: connect, reset,
50 warm-up steps, then ``--steps`` timed steps, every agent acting with zeros (the policy is not
what is measured). steps/s = environment steps / seconds, including the fake build's own work,
which is the same program for both sides. A second table gives each side's own cost: the CPU
time of the process that serves Unity (all its threads) per step, which leaves out the fake
build's work and the time both processes wait for each other.

ML-Agents' side runs in its own Python: ``--their-python``, else ``PALAESTRA_MLAGENTS_ENVS_1_1_0``,
else bench/out/mlagents-1.1.0-venv (made by bench/mlagents_1d.py). Its speed depends on its
protobuf: the report prints its Python version and protobuf implementation; ML-Agents is at its
best on its supported Python (3.10) with the native (cpp or upb) protobuf. If it cannot run, the
reason is printed and only Palaestra's side is measured. Runs alternate ours/theirs so that the
machine's drift hits both; the table gives medians. Results also go to
bench/out/unity_bridge-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent
OUT = HERE / "out"
sys.path.insert(0, str(REPOSITORY))

SCENES = {
    "ball": ["--scene", "3DBall"],
    "camera": ["--scene", "GridWorld", "--camera", "84", "--channels-first"],
}
WARMUP = 50

# ML-Agents' side: the same loop as ``ours`` below, with mlagents-envs' API
THEIRS = r"""
import json, sys, time
import numpy as np
from google.protobuf.internal import api_implementation
from mlagents_envs.base_env import ActionTuple
from mlagents_envs.environment import UnityEnvironment

build, port, steps, warmup, logs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
env = UnityEnvironment(file_name=build, base_port=port, no_graphics=True, additional_args=sys.argv[6:],
                       log_folder=logs, timeout_wait=60)
env.reset()
names = list(env.behavior_specs)
def step():
    for name in names:
        decision, _ = env.get_steps(name)
        spec = env.behavior_specs[name].action_spec
        env.set_actions(name, ActionTuple(np.zeros((len(decision), spec.continuous_size), np.float32),
                                          np.zeros((len(decision), spec.discrete_size), np.int32)))
    env.step()
for _ in range(warmup):
    step()
start, cpu = time.perf_counter(), time.process_time()
for _ in range(steps):
    step()
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
env.close()
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "python": sys.version.split()[0],
                  "protobuf": api_implementation.Type()}))
"""


def ours(build: Path, port: int, steps: int, logs: str, args: list[str]) -> dict:
    from google.protobuf.internal import api_implementation

    from palaestra.envs.base import EngineConfig
    from palaestra.envs.unity import open_build

    env = open_build(str(build), port, engine=EngineConfig(no_graphics=True, log_folder=logs), env_args=args)
    env.reset()

    def step() -> None:
        for name, spec in env.behavior_specs.items():
            decision, _ = env.get_steps(name)
            env.set_actions(name, spec.action_spec.empty_actions(len(decision)))
        env.step()

    try:
        for _ in range(WARMUP):
            step()
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        env.close()
    return {"seconds": seconds, "cpu_seconds": cpu, "python": sys.version.split()[0],
            "protobuf": api_implementation.Type()}


def their_python(given: str | None) -> str | None:
    for candidate in (given, os.environ.get("PALAESTRA_MLAGENTS_ENVS_1_1_0"),
                      str(OUT / "mlagents-1.1.0-venv" / "bin" / "python")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def theirs(python: str, build: Path, port: int, steps: int, logs: str, args: list[str]) -> dict:
    done = subprocess.run([python, "-c", THEIRS, str(build), str(port), str(steps), str(WARMUP), logs, *args],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip()[-800:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    from palaestra.envs.unity.communicator import free_port
    from tests.fake_unity import make_build

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scenes", nargs="+", default=list(SCENES), choices=list(SCENES))
    parser.add_argument("--their-python", default=None, help="a Python with mlagents-envs 1.x")
    args = parser.parse_args(argv)
    python = their_python(args.their_python)
    skipped = None if python else "no Python with mlagents-envs found (--their-python)"
    work = Path(tempfile.mkdtemp(prefix="palaestra-bridge-"))
    build = make_build(work, "FakeUnity")
    runs: dict[str, dict[str, list[dict]]] = {s: {"ours": [], "theirs": []} for s in args.scenes}
    for repeat in range(args.repeats):
        for scene in args.scenes:
            for side in ("ours", "theirs"):
                if side == "theirs" and skipped:
                    continue
                port = free_port(random.randrange(20000, 40000, 10))
                logs = str(work / f"{scene}-{side}-{repeat}")
                try:
                    result = ours(build, port, args.steps, logs, SCENES[scene]) if side == "ours" else \
                        theirs(python, build, port, args.steps, logs, SCENES[scene])
                except RuntimeError as e:
                    skipped = f"ML-Agents' side failed: {e}"
                    print(skipped, file=sys.stderr)
                    continue
                result["steps_per_s"] = args.steps / result["seconds"]
                result["cpu_ms_per_step"] = 1000.0 * result["cpu_seconds"] / args.steps
                runs[scene][side].append(result)
                print(f"{scene:7s} {side:6s} repeat {repeat}: {result['steps_per_s']:8.1f} steps/s, "
                      f"{result['cpu_ms_per_step']:.3f} ms of the trainer process's CPU per step "
                      f"(Python {result['python']}, protobuf {result['protobuf']})", flush=True)
    print(f"\n{'scene':8s} {'Palaestra':>12s} {'ML-Agents':>12s} {'ratio':>7s}   (median steps/s over {args.repeats})")
    for scene, sides in runs.items():
        medians = {side: statistics.median(r["steps_per_s"] for r in rs) if rs else None for side, rs in sides.items()}
        ratio = f"{medians['ours'] / medians['theirs']:.2f}x" if medians["ours"] and medians["theirs"] else "-"
        theirs_text = f"{medians['theirs']:12.1f}" if medians["theirs"] else f"{'-':>12s}"
        print(f"{scene:8s} {medians['ours']:12.1f} {theirs_text} {ratio:>7s}")
    # the trainer side alone: CPU time of the process that serves Unity (all its threads), which
    # leaves out the fake build's own work and the time both wait for each other
    print(f"\n{'scene':8s} {'Palaestra':>12s} {'ML-Agents':>12s} {'ratio':>7s}   (median trainer-process CPU ms per step)")
    for scene, sides in runs.items():
        cpu = {side: statistics.median(r["cpu_ms_per_step"] for r in rs) if rs else None for side, rs in sides.items()}
        ratio = f"{cpu['theirs'] / cpu['ours']:.2f}x" if cpu["ours"] and cpu["theirs"] else "-"
        theirs_text = f"{cpu['theirs']:12.3f}" if cpu["theirs"] else f"{'-':>12s}"
        print(f"{scene:8s} {cpu['ours']:12.3f} {theirs_text} {ratio:>7s}")
    if skipped:
        print(f"\nML-Agents' side not measured: {skipped}")
    OUT.mkdir(exist_ok=True)
    path = OUT / f"unity_bridge-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"steps": args.steps, "runs": runs, "skipped": skipped}, indent=1))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
