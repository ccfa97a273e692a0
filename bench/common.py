"""Helpers shared by the benchmarks: run Palaestra in a scratch folder and read its timers,
and evaluate exported ONNX policies deterministically."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    old = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="palaestra-bench-") as d:
        os.chdir(d)
        try:
            yield Path(d)
        finally:
            os.chdir(old)


def run_palaestra(config: str, env: str, *args: str) -> dict[str, Any]:
    """Train with mlagents-learn in-process; return wall time, loop time and the run folder."""
    from palaestra.cli import main
    from palaestra.timers import TIMERS

    TIMERS.__init__()  # a fresh timer tree per benchmark run
    work = Path(tempfile.mkdtemp(prefix="palaestra-bench-"))
    (work / "config.yaml").write_text(textwrap.dedent(config))
    old = os.getcwd()
    os.chdir(work)
    try:
        start = time.perf_counter()
        code = main(["config.yaml", f"--env={env}", "--run-id=bench", "--seed=1", *args])
        wall = time.perf_counter() - start
    finally:
        os.chdir(old)
    if code != 0:
        raise RuntimeError(f"palaestra exited with {code}")
    timers = json.loads((work / "summaries" / "bench_timers.json").read_text())
    loop = sum(timers["children"][k]["total"] for k in ("env_reset", "policy_act", "env_step", "trainer_advance")
               if k in timers["children"])
    return {"wall_s": wall, "loop_s": loop, "timers": timers, "dir": work}


def onnx_returns(env, onnx_path: Path, episodes: int) -> float:
    """Mean return of an exported model's deterministic actions over ``episodes`` episodes."""
    import onnxruntime as ort

    from palaestra.envs.base import ActionTuple

    session = ort.InferenceSession(str(onnx_path))
    names = [o.name for o in session.get_outputs()]
    name = next(iter(env.behavior_specs))
    spec = env.behavior_specs[name]
    env.reset()
    running = np.zeros(1 << 12)
    returns: list[float] = []
    while len(returns) < episodes:
        decision, _ = env.get_steps(name)
        feeds = {f"obs_{i}": o for i, o in enumerate(decision.obs)}
        if spec.action_spec.is_discrete:
            feeds["action_masks"] = np.ones((len(decision), sum(spec.action_spec.discrete_branches)), np.float32)
        out = dict(zip(names, session.run(None, feeds)))
        n = len(decision)
        env.set_actions(name, ActionTuple(
            out.get("deterministic_continuous_actions", np.zeros((n, 0), np.float32)),
            out.get("deterministic_discrete_actions", np.zeros((n, 0))).astype(np.int32)))
        env.step()
        decision, terminal = env.get_steps(name)
        running[terminal.agent_id] += terminal.reward
        returns += running[terminal.agent_id].tolist()
        running[terminal.agent_id] = 0.0
        running[decision.agent_id] += decision.reward
    return float(np.mean(returns[:episodes]))
