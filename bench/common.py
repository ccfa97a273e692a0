"""Helpers shared by the benchmarks: run Palaestra in a scratch folder and read its timers,
and evaluate exported ONNX policies deterministically."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
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


def run_palaestra(config: str, env: str, *args: str, seed: int | None = 1) -> dict[str, Any]:
    """Train with mlagents-learn in-process; return wall time, loop time, this process's CPU time
    (all its threads; worker processes are not in it) and the run folder
    (a scratch folder, removed when this process exits)."""
    from palaestra.cli import main
    from palaestra.timers import TIMERS

    TIMERS.__init__()  # a fresh timer tree per benchmark run
    work = Path(tempfile.mkdtemp(prefix="palaestra-bench-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # the caller may read it until then
    (work / "config.yaml").write_text(textwrap.dedent(config))
    old = os.getcwd()
    os.chdir(work)
    try:
        start, start_cpu = time.perf_counter(), time.process_time()
        seed_flag = [f"--seed={seed}"] if seed is not None else []
        code = main(["config.yaml", f"--env={env}", "--run-id=bench", *seed_flag, *args])
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    finally:
        os.chdir(old)
    if code != 0:
        raise RuntimeError(f"palaestra exited with {code}")
    timers = json.loads((work / "summaries" / "bench_timers.json").read_text())
    loop_timers = ("env_reset", "policy_act", "record_segments", "env_step", "trainer_advance")
    loop = sum(timers["children"][k]["total"] for k in loop_timers if k in timers["children"])
    return {"wall_s": wall, "loop_s": loop, "cpu_s": cpu, "timers": timers, "dir": work}


def add_device_argument(parser) -> None:
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where both libraries train (cuda: a GPU must be there)")


def device_flags(device: str) -> tuple[str, ...]:
    """Palaestra's flags for ``device`` (given explicitly: its automatic choice depends on the
    observations)."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no GPU here")
    return (f"--torch-device={device}",)


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device == "cuda" else "the CPU"


def print_side_by_side(title: str, runs: dict[str, list[dict]], episodes: int, return_format: str = ".1f") -> None:
    """The runs of two libraries (``runs``: name -> one result per seed, each with steps_per_s,
    seconds and return): median speed and time, each seed's return, and the speed ratio."""
    print(title)
    print(f"{'':12} {'steps/s (median)':>17} {'seconds':>9}  final return per seed ({episodes} episodes, deterministic)")
    for name, rs in runs.items():
        speed = float(np.median([r["steps_per_s"] for r in rs]))
        seconds = float(np.median([r["seconds"] for r in rs]))
        print(f"{name:12} {speed:17.0f} {seconds:9.1f}  " + " ".join(f"{r['return']:{return_format}}" for r in rs))
    (ours, ours_runs), (peer, peer_runs) = runs.items()
    ratio = np.median([r["steps_per_s"] for r in ours_runs]) / np.median([r["steps_per_s"] for r in peer_runs])
    print(f"ratio {ours} / {peer}: {ratio:.2f}x")
