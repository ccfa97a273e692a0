"""Palaestra against ML-Agents 1.1.0's own trainer on ML-Agents' 1-D test environment, measured
side by side: PPO and SAC, discrete and continuous actions, ML-Agents' own test configs.

    python bench/mlagents_1d.py --repeats 3
    python bench/mlagents_1d.py --variants ppo-discrete --repeats 1 --ppo-steps 3000   # a quick look
    python bench/mlagents_1d.py --variants ppo-discrete ppo-discrete-curiosity --repeats 3   # curiosity's cost

Every run is a fresh process: Palaestra's in this interpreter, ML-Agents' in its own virtual
environment, which this script makes on first use under bench/out/ (numpy 1.23, protobuf 3.20 and
Python <= 3.10 pins cannot live beside this project's stack; see ``ensure_mlagents``). If it
cannot be made or run, the reason is printed and only Palaestra's side is measured. Runs
alternate (ours, theirs, ours, theirs, ...; variants interleaved) so that the machine's drift hits
both; the table gives medians over the repeats, and every run is listed below it.

Both sides, in each process: import everything, train once briefly without a clock (so lazy
imports and first calls are paid outside the clocks), then train the measured run:

- *loop*: the wall time of the training loop alone, from the end of the first environment reset
  (on ML-Agents' side that reset also builds the trainer) to the loop's exit, before the final
  save. It covers acting, environment steps, trajectory processing and the updates.
- *whole run*: everything a training run does after the imports: reading the settings, making
  the environment, the trainer and its networks, the stats writers (TensorBoard, console), the
  loop, and the final checkpoint and ONNX export; Palaestra's is the call of its ``mlagents-learn``
  entry point, ML-Agents' mirrors its ``run_training`` with the environment in-process.

steps/s = environment steps taken / seconds. The environment on both sides moves 0.2 per step,
pays 1.06 x position x goal at either end and -0.01 per step before that, draws a new goal every
episode and has no step limit (ML-Agents 1.1's test environment; on ours,
``palaestra.envs.builtin.simple1d:make`` with those arguments).

Results also go to bench/out/mlagents_1d-<time>.json, with each process's log beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
THEIRS = HERE / "mlagents_1d_theirs.py"
DEFAULT_VENV = OUT / "mlagents-1.1.0-venv"

STEP_SIZE = 0.2
SUCCESS_REWARD = 1.06  # 1 + (int(1 / 0.2) + 1) x 0.01, as ML-Agents 1.1 derives it
VARIANTS = ("ppo-discrete", "ppo-continuous", "sac-discrete", "sac-continuous")
# PPO with the curiosity reward signal beside the extrinsic one: what curiosity costs each side
# over its own plain PPO (issue 13 asks at most 30% extra), and the two sides against each other
SIGNAL_VARIANTS = ("ppo-discrete-curiosity", "ppo-continuous-curiosity")
WARMUP_STEPS = 300  # enough for a few updates of either trainer (PPO: 64-step buffer, SAC: 100 before learning)

# ML-Agents 1.1.0's test configs (mlagents/trainers/tests/dummy_config.py, ppo_dummy_config and
# sac_dummy_config) in its 1.x settings format; everything not named is its default.
THEIR_SETTINGS = {
    "ppo": {
        "trainer_type": "ppo",
        "hyperparameters": {"learning_rate": 5.0e-3, "learning_rate_schedule": "constant",
                            "batch_size": 16, "buffer_size": 64},
        "network_settings": {"num_layers": 1, "hidden_units": 32},
        "summary_freq": 500,
        "threaded": False,
    },
    "sac": {
        "trainer_type": "sac",
        "hyperparameters": {"learning_rate": 5.0e-3, "learning_rate_schedule": "constant",
                            "batch_size": 8, "buffer_init_steps": 100, "buffer_size": 5000,
                            "tau": 0.01, "init_entcoef": 0.01},
        "network_settings": {"num_layers": 1, "hidden_units": 16},
        "summary_freq": 100,
        "threaded": False,
    },
}

# Curiosity with ML-Agents 1.1's defaults (strength and gamma as its example configs): its state
# encoder is a NetworkBody of network_settings (2 layers of 128 by default), the inverse and
# forward models one 256-unit layer each; Palaestra's encoding_size 128 is the same network.
THEIR_SIGNALS = {"curiosity": {"extrinsic": {"strength": 1.0, "gamma": 0.99},
                               "curiosity": {"strength": 0.02, "gamma": 0.99, "learning_rate": 3.0e-4,
                                             "network_settings": {"hidden_units": 128, "num_layers": 2}}}}
OUR_SIGNALS = {"curiosity": {"curiosity": {"strength": 0.02, "gamma": 0.99, "learning_rate": 3.0e-4,
                                           "encoding_size": 128}}}

# The same in Palaestra's 0.16 format, with ML-Agents 1.1's defaults for every key the test
# configs leave out written out (beta, epsilon, lambd, num_epoch, time_horizon, normalize,
# steps_per_update, the extrinsic signal).
OUR_CONFIG = {
    "ppo": """
        1D:
            trainer: ppo
            batch_size: 16
            buffer_size: 64
            learning_rate: 5.0e-3
            learning_rate_schedule: constant
            beta: 5.0e-3
            epsilon: 0.2
            lambd: 0.95
            num_epoch: 3
            hidden_units: 32
            num_layers: 1
            normalize: false
            time_horizon: 64
            max_steps: {steps}
            summary_freq: 500
            threaded: false
            reward_signals:
                extrinsic:
                    strength: 1.0
                    gamma: 0.99
        """,
    "sac": """
        1D:
            trainer: sac
            batch_size: 8
            buffer_size: 5000
            buffer_init_steps: 100
            learning_rate: 5.0e-3
            learning_rate_schedule: constant
            init_entcoef: 0.01
            tau: 0.01
            steps_per_update: 1
            hidden_units: 16
            num_layers: 1
            normalize: false
            time_horizon: 64
            max_steps: {steps}
            summary_freq: 100
            reward_signals:
                extrinsic:
                    strength: 1.0
                    gamma: 0.99
        """,
}

# ML-Agents' own dependencies, installed after it with --no-deps so that pip never resolves
# another torch: its pins where a wheel for this Python exists. grpcio: its pin (<= 1.48.2) has no
# Python 3.11 wheel, 1.49.1 is the closest that has (ML-Agents imports it but never opens a
# channel here). Left out: gym and pettingzoo, needed only by mlagents_envs' Gym/PettingZoo
# wrappers.
MLAGENTS_DEPS = [
    "numpy==1.23.5", "protobuf>=3.6,<3.21", "grpcio==1.49.1", "h5py>=2.9.0", "Pillow>=4.2.1",
    "pyyaml>=3.1.0", "tensorboard>=2.14", "six>=1.16", "attrs>=19.3.0", "huggingface-hub>=0.14",
    "onnx==1.15.0", "cattrs>=1.1.0,<1.7", "cloudpickle", "filelock>=3.4.0",
]
TORCH = "torch==2.13.0"


# -- ML-Agents' virtual environment --------------------------------------------------------------
def _pip(python: Path, args: list[str], log: Path, timeout: float) -> tuple[int, str]:
    cmd = [str(python), "-m", "pip", "--disable-pip-version-check", *args]
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        try:
            done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            fh.write(f"timed out after {timeout:.0f} s\n")
            return 124, f"timed out after {timeout:.0f} s"
        fh.write(done.stdout)
    lines = [ln for ln in done.stdout.splitlines() if ln.strip() and "is ignored" not in ln]
    return done.returncode, "\n".join(lines[-6:])


def _torch_plan_problem(python: Path, log: Path) -> str | None:
    """Ask pip what installing torch would bring; refuse anything but a CPU-only torch 2.13.0 (a
    CUDA build pulls several GB of nvidia-* packages)."""
    code, _ = _pip(python, ["install", "--dry-run", "--quiet", "--report", str(log.with_suffix(".plan.json")),
                            TORCH, "setuptools<81"], log, 600)
    if code != 0:
        return f"pip cannot find {TORCH} (exit {code}); see {log}"
    plan = json.loads(log.with_suffix(".plan.json").read_text())
    names = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in plan["install"]}
    cuda = sorted(n for n in names if n.startswith("nvidia") or n == "triton")
    if cuda:
        return (f"pip would install torch {names.get('torch')} with CUDA packages ({', '.join(cuda[:3])}, ...); "
                f"this benchmark needs the CPU-only wheel of {TORCH} available to pip")
    return None


def ensure_mlagents(venv: Path, log: Path) -> tuple[Path | None, str | None]:
    """ML-Agents 1.1.0 in its own virtual environment; made on first use. Returns its Python, or
    None and the reason it could not be made."""
    python = venv / "bin" / "python"
    ready = venv / ".ready"
    if ready.exists() and python.exists():
        return python, None
    print(f"Setting up ML-Agents 1.1.0 in {venv} (first use; a few minutes; log: {log})", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    made = subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], capture_output=True, text=True)
    if made.returncode != 0:
        return None, f"could not make a virtual environment in {venv}: {made.stderr.strip()[-300:]}"
    problem = _torch_plan_problem(python, log)
    if problem:
        return None, problem
    steps = [
        # torch first, and setuptools < 81 (ML-Agents imports pkg_resources, which 81 removes)
        ("torch", ["install", TORCH, "setuptools<81", "wheel"]),
        # ML-Agents declares Python <= 3.10.12; it runs on 3.11 with the dependencies below
        ("ML-Agents", ["install", "--no-deps", "--ignore-requires-python", "mlagents==1.1.0",
                       "mlagents-envs==1.1.0"]),
        # wheels only, so nothing is compiled; the constraint keeps the torch just installed
        ("ML-Agents' dependencies", ["install", "--only-binary=:all:", "-c", str(venv / "torch-pin.txt"),
                                     *MLAGENTS_DEPS]),
    ]
    for what, args in steps:
        if what == "ML-Agents' dependencies":
            version = subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"],
                                     capture_output=True, text=True).stdout.strip()
            (venv / "torch-pin.txt").write_text(f"torch=={version}\n")
        code, tail = _pip(python, args, log, 1800)
        if code != 0:
            return None, f"installing {what} failed (exit {code}): {tail}\n(full log: {log})"
    check = subprocess.run([str(python), "-W", "ignore", "-c",
                            "import mlagents.trainers.trainer_controller, mlagents.trainers.simple_env_manager"],
                           capture_output=True, text=True, env=_their_env())
    if check.returncode != 0:
        return None, f"ML-Agents was installed but does not import: {check.stderr.strip()[-500:]}"
    ready.write_text("ok\n")
    return python, None


def _their_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONWARNINGS"] = "ignore"  # ML-Agents' deprecation warnings would drown its log
    return env


# -- one measured run, in a child process -------------------------------------------------------
def run_child(side: str, python: Path, job: dict, logs: Path, tag: str) -> dict:
    """Run one side's child process on ``job``; return its result, or {"error": why}."""
    with tempfile.TemporaryDirectory(prefix="palaestra-bench-") as work:
        job = dict(job, workdir=work)
        job_path, result_path = Path(work) / "job.json", Path(work) / "result.json"
        job_path.write_text(json.dumps(job))
        if side == "ours":
            cmd, env = [str(python), str(Path(__file__).resolve()), "--child", str(job_path), str(result_path)], None
        else:
            cmd, env = [str(python), str(THEIRS), str(job_path), str(result_path)], _their_env()
        log = logs / f"{tag}.log"
        with open(log, "w") as fh:
            code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=work).returncode
        if code != 0 or not result_path.exists():
            tail = log.read_text().strip().splitlines()[-3:]
            return {"error": f"exit {code}: {' | '.join(tail)} (log: {log})"}
        result = json.loads(result_path.read_text())
        (logs / f"{tag}.timers.json").write_text(json.dumps(result.pop("timers"), indent=1))
        return result


def child_ours(job_path: str, result_path: str) -> None:
    """Palaestra's side, in this process: imports, an untimed run, the measured run."""
    t0 = time.perf_counter()
    import numpy as np
    import torch
    import yaml

    import palaestra.run as palaestra_run
    from palaestra.cli import main as learn
    from palaestra.timers import TIMERS

    import_s = time.perf_counter() - t0
    job = json.loads(Path(job_path).read_text())
    marks: dict[str, float] = {}
    loop = palaestra_run._loop

    def timed_loop(*args, **kwargs):  # the loop clock: _loop is the training loop, reset and save outside it
        marks["start"] = time.perf_counter()
        try:
            return loop(*args, **kwargs)
        finally:
            marks["end"] = time.perf_counter()

    palaestra_run._loop = timed_loop

    def train(run_id: str, steps: int) -> dict:
        TIMERS.__init__()  # a fresh timer tree per run
        work = Path(job["workdir"]) / run_id
        work.mkdir()
        config = yaml.safe_load(textwrap.dedent(OUR_CONFIG[job["algorithm"]]).format(steps=steps))
        config["1D"]["reward_signals"].update(OUR_SIGNALS.get(job.get("signal"), {}))
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        env_args = [f"continuous={str(job['continuous']).lower()}", f"step_size={job['step_size']}",
                    f"success_reward={job['success_reward']}", "max_episode_steps=0"]
        old = os.getcwd()
        os.chdir(work)
        try:
            start = time.perf_counter()
            code = learn(["config.yaml", "--env=palaestra.envs.builtin.simple1d:make", f"--run-id={run_id}",
                          f"--seed={job['seed']}", "--cpu", "--env-args", *env_args])
            whole = time.perf_counter() - start
        finally:
            os.chdir(old)
        if code != 0:
            raise SystemExit(f"mlagents-learn exited with {code}")
        timers = json.loads((work / "summaries" / f"{run_id}_timers.json").read_text())
        csv = work / "summaries" / f"{run_id}_1D.csv"  # written from the first summary on
        rows = csv.read_text().splitlines() if csv.exists() else []
        reward = None
        if len(rows) > 1:
            reward = float(rows[-1].split(",")[rows[0].split(",").index("Environment/Cumulative Reward")])
        return {"env_steps": timers["children"]["env_step"]["count"], "loop_s": marks["end"] - marks["start"],
                "whole_s": whole, "last_summary_reward": reward, "timers": timers}

    t = time.perf_counter()
    train("warmup", job["warmup_steps"])
    warmup_s = time.perf_counter() - t
    result = train("timed", job["max_steps"])
    result.update(import_s=import_s, warmup_s=warmup_s, notes=[], torch_threads=torch.get_num_threads(),
                  versions={"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__})
    Path(result_path).write_text(json.dumps(result))


# -- the report ----------------------------------------------------------------------------------
def _rate(run: dict, key: str) -> float:
    return run["env_steps"] / run[key]


def _median(runs: list[dict], key: str) -> float | None:
    ok = [_rate(r, key) for r in runs if "error" not in r]
    return statistics.median(ok) if ok else None


def _fmt(x: float | None, width: int) -> str:
    return f"{x:>{width},.0f}" if x is not None else f"{'-':>{width}}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:>6.1f}x" if a is not None and b else f"{'-':>7}"


def report(results: dict[str, dict[str, list[dict]]], steps: dict[str, int], theirs_skipped: str | None) -> None:
    print()
    print("Training loop and whole run, environment steps per second (median over repeats)")
    print(f"{'variant':16} {'steps':>6} | {'Palaestra':>9} {'ML-Agents':>9} {'ratio':>7} | "
          f"{'Palaestra':>9} {'ML-Agents':>9} {'ratio':>7}")
    print(f"{'':16} {'':>6} | {'loop':^27} | {'whole run':^27}")
    for variant, sides in results.items():
        ours, theirs = sides["ours"], sides["theirs"]
        lo, lt = _median(ours, "loop_s"), _median(theirs, "loop_s")
        wo, wt = _median(ours, "whole_s"), _median(theirs, "whole_s")
        print(f"{variant:16} {steps[variant.split('-')[0]]:>6} | {_fmt(lo, 9)} {_fmt(lt, 9)} {_ratio(lo, lt)} | "
              f"{_fmt(wo, 9)} {_fmt(wt, 9)} {_ratio(wo, wt)}")
    if theirs_skipped:
        print(f"\nML-Agents' side was skipped: {theirs_skipped}")
    print("\nEvery run (loop steps/s, whole-run seconds, mean episode return of the last summary):")
    for variant, sides in results.items():
        for side in ("ours", "theirs"):
            if not sides[side]:
                continue
            name = "Palaestra" if side == "ours" else "ML-Agents"
            cells = []
            for r in sides[side]:
                if "error" in r:
                    cells.append(f"failed: {r['error']}")
                else:
                    reward = r.get("last_summary_reward")
                    cells.append(f"{_rate(r, 'loop_s'):,.0f} ({r['whole_s']:.1f} s, "
                                 f"{reward:.2f})" if reward is not None else f"{_rate(r, 'loop_s'):,.0f} "
                                 f"({r['whole_s']:.1f} s)")
            print(f"  {variant:16} {name:9}  " + ";  ".join(cells))
        pairs = [_rate(o, "loop_s") / _rate(t, "loop_s") for o, t in zip(sides["ours"], sides["theirs"])
                 if "error" not in o and "error" not in t]
        if pairs:
            print(f"  {variant:16} {'ratio':9}  loop, run by run: " + ", ".join(f"{x:.1f}x" for x in pairs))
    notes = sorted({n for sides in results.values() for runs in sides.values() for r in runs for n in r.get("notes", [])})
    for note in notes:
        print(f"Note (ML-Agents' side): {note}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS + SIGNAL_VARIANTS, default=list(VARIANTS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ppo-steps", type=int, default=20_000)
    parser.add_argument("--sac-steps", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=1337, help="ML-Agents' test seed; the same on both sides")
    parser.add_argument("--no-mlagents", action="store_true", help="measure Palaestra only")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="ML-Agents' virtual environment")
    parser.add_argument("--report", type=Path, metavar="JSON", help="print the tables of a saved run again")
    parser.add_argument("--child", nargs=2, metavar=("JOB", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_ours(*args.child)
        return
    if args.report:
        saved = json.loads(args.report.read_text())
        report(saved["results"], {"ppo": int(saved["args"]["ppo_steps"]), "sac": int(saved["args"]["sac_steps"])},
               saved["mlagents_skipped"])
        return

    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = OUT / f"mlagents_1d-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    their_python, skipped = (None, "--no-mlagents") if args.no_mlagents else ensure_mlagents(
        args.venv, OUT / "mlagents-install.log")
    if skipped and not args.no_mlagents:
        print(f"ML-Agents' side is skipped: {skipped}", flush=True)
    steps = {"ppo": args.ppo_steps, "sac": args.sac_steps}
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start; "
          f"{args.repeats} repeat(s); logs in {logs}", flush=True)
    results: dict[str, dict[str, list[dict]]] = {v: {"ours": [], "theirs": []} for v in args.variants}
    for repeat in range(args.repeats):
        for variant in args.variants:
            algorithm, actions, *signal = variant.split("-")
            settings = THEIR_SETTINGS[algorithm]
            if signal:
                settings = dict(settings, reward_signals=THEIR_SIGNALS[signal[0]])
            job = {"algorithm": algorithm, "settings": settings, "max_steps": steps[algorithm],
                   "signal": signal[0] if signal else None,
                   "warmup_steps": WARMUP_STEPS, "seed": args.seed + repeat, "continuous": actions == "continuous",
                   "step_size": STEP_SIZE, "success_reward": SUCCESS_REWARD}
            sides = [("ours", Path(sys.executable))] + ([("theirs", their_python)] if their_python else [])
            for side, python in sides:
                r = run_child(side, python, job, logs, f"{variant}-{side}-{repeat + 1}")
                results[variant][side].append(r)
                shown = f"{_rate(r, 'loop_s'):,.0f} steps/s in the loop" if "error" not in r else r["error"]
                print(f"  run {repeat + 1}/{args.repeats} {variant:15} {'Palaestra' if side == 'ours' else 'ML-Agents'}:"
                      f" {shown}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    report(results, steps, skipped)
    saved = OUT / f"mlagents_1d-{stamp}.json"
    saved.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results,
                                 "mlagents_skipped": skipped}, indent=1))
    print(f"Results: {saved}")


if __name__ == "__main__":
    main()
