"""GAIL on CartPole-v1 and Pendulum-v1: Palaestra against the `imitation` library's GAIL with
Stable-Baselines3's PPO, from the same demonstrations, side by side in one run. The measure is
wall time to the same return: each side's policy is copied every ``snapshot_every`` environment
steps (the clock stops while it is copied), and after training every copy is evaluated with its
deterministic actions over --episodes episodes of the real environment reward. Reported: the
training time at the first copy that reaches the threshold, and at the first from which every
later copy stays there ("held"). Evaluation is outside both clocks. Both clocks start before the
environments are made and include each side's setup, not imports (torch's compiler, which the
first Adam imports, is imported before either clock).

The demonstrations: a scripted expert (palaestra/demos/experts.py) recorded once with
``palaestra-record --policy=palaestra.demos.experts:cartpole`` (or ``:pendulum``); the same
rows are converted to imitation's ``Trajectory`` type (Pendulum's actions rescaled from
Palaestra's [-1, 1] to the environment's [-2, 2] torque). No reward from the environment
reaches either learner: Palaestra's only reward signal is ``gail``; imitation's
RewardVecEnvWrapper replaces the environment's reward with its discriminator's.

Settings (written out in SETTINGS below and printed by the run):
- the generator: the same PPO hyperparameters on both sides, SB3's names and Palaestra's keys:
  CartPole rl-zoo's (8 environments x 32 steps, batch 256, 20 epochs, gamma 0.98, 64x64 tanh,
  no entropy bonus) with lambda 0.95 (Palaestra's GAIL test sweep: with rl-zoo's 0.8, 2 seeds
  of 4 had not learned CartPole at 60k steps; with 0.95 all had); Pendulum a plain PPO setup
  (4 environments x 1024 steps, batch 64, 10 epochs, lambda 0.95, gamma 0.9, 64x64 tanh); both
  with a constant learning rate 1e-3
  and clip 0.2: imitation calls SB3's ``learn`` once per round, which restarts SB3's schedules'
  progress, so a decaying schedule would not decay over the run there. Palaestra also writes
  out SB3's defaults (no value clip, Adam epsilon 1e-5, gradient norm 0.5); its clip range decays
  to 0.1 over max_steps, as ML-Agents'.
- the discriminator: each library's own way of training it, the same network size and the same
  Adam learning rate, 1e-3 (imitation's default; ML-Agents' is 3e-4, with which Palaestra's
  learner took about half again as long to reach 475 on CartPole, docs/benchmarks.md):
  Palaestra's ``gail`` (two swish layers of 64, its ``hidden_units``; ML-Agents' are 128), one update per
  PPO mini-batch with an expert batch of the same size (on CartPole those of PPO's first 8 epochs,
  ``reward_signal_num_epoch: 8``: 8 steps per 256 environment steps, as imitation's 8 per round;
  until session 41 all 20 epochs', ML-Agents' rule), gradient penalty 10,
  ``use_actions: true``, and ``use_terminal_states: true``: a fallen pole ends the return, as SB3
  ends it under imitation's reward; until session 41 Palaestra's side kept ML-Agents' rule,
  which bootstraps through every end); imitation's ``BasicRewardNet`` (state and action) with two ReLU layers
  of 64 and its ``RunningNorm`` input normalization (its documentation's GAIL example),
  ``demo_batch_size`` 256 on CartPole (one round's experiences) and 1024 on
  Pendulum (the example's), ``gen_replay_buffer_capacity`` 512 on CartPole (the example's) and
  one round (4096) on Pendulum, 8 discriminator updates per round (the example's), ``allow_variable_horizon``
  (CartPole's episodes end when the pole falls).

Usage: python bench/gail_imitation.py [--envs CartPole-v1 Pendulum-v1] [--seed 1] [--seeds 1] [--threads 1]
       [--no-peer]      (Palaestra alone)
With --seeds N each side trains once per seed (alternating) and the summary compares the medians.
Results go to bench/out/gail_imitation.json; --report FILE [--threshold R] prints them again.
The imitation side runs in bench/out/imitation-venv, made on first use (pip: torch==2.13.0 first,
CPU-only, then imitation and what it pins); if it cannot be made the run says why and measures
Palaestra alone.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from common import run_palaestra

OUT = Path(__file__).resolve().parent / "out"
VENV = OUT / "imitation-venv"
THEIRS = Path(__file__).resolve().parent / "gail_imitation_theirs.py"
TORCH = "torch==2.13.0"

# env id -> the settings of both sides. "ppo" is SB3's PPO keywords; "palaestra" the behavior's section.
SETTINGS = {
    "CartPole-v1": {
        "expert": "palaestra.demos.experts:cartpole", "episodes": 20, "threshold": 475.0, "steps": 100_000,
        "snapshot_every": 5_000, "n_envs": 8,
        "ppo": {"n_steps": 32, "batch_size": 256, "n_epochs": 20, "gae_lambda": 0.95, "gamma": 0.98,
                "learning_rate": 1e-3, "clip_range": 0.2, "ent_coef": 0.0},
        "gail": {"demo_batch_size": 256, "gen_replay_buffer_capacity": 512, "n_disc_updates_per_round": 8},
        # reward_signal_num_epoch 8: the discriminator trains on the mini-batches of PPO's first 8
        # epochs, 8 steps of 256 + 256 rows per 256 environment steps, as imitation's 8 per round
        # (ML-Agents' rule, one per mini-batch of all 20 epochs, gives it 2.5 times imitation's)
        "palaestra": {"batch_size": 256, "buffer_size": 256, "time_horizon": 32, "num_epoch": 20, "lambd": 0.95,
                      "gamma": 0.98, "reward_signal_num_epoch": 8},
    },
    "Pendulum-v1": {
        "expert": "palaestra.demos.experts:pendulum", "episodes": 20, "threshold": -200.0, "steps": 150_000,
        "action_scale": 2.0,  # Palaestra's actions in [-1, 1] are the environment's torques in [-2, 2]
        "snapshot_every": 10_000, "n_envs": 4,
        "ppo": {"n_steps": 1024, "batch_size": 64, "n_epochs": 10, "gae_lambda": 0.95, "gamma": 0.9,
                "learning_rate": 1e-3, "clip_range": 0.2, "ent_coef": 0.0},
        "gail": {"demo_batch_size": 1024, "n_disc_updates_per_round": 8},
        "palaestra": {"batch_size": 64, "buffer_size": 4096, "time_horizon": 1024, "num_epoch": 10, "lambd": 0.95,
                      "gamma": 0.9},
    },
}
COMMON_SECTION = {"hidden_units": 64, "num_layers": 2, "activation": "tanh", "learning_rate": 1e-3,
                  "learning_rate_schedule": "constant", "epsilon": 0.2, "beta": 0.0, "normalize": False,
                  "value_clipping": False, "adam_epsilon": 1e-5, "max_grad_norm": 0.5}
# use_terminal_states: returns end where the pole falls, as SB3 ends them under imitation's reward
# (ML-Agents' rule bootstraps through every end); Pendulum never ends before its time limit
GAIL_SIGNAL = {"strength": 1.0, "hidden_units": 64, "learning_rate": 1e-3, "use_actions": True,
               "use_terminal_states": True}
REWARD_NET_HIDDEN = [64, 64]
EVAL_ENVS = 5


# -- the demonstrations --------------------------------------------------------------------------
def record_demonstrations(env_id: str, out: Path, episodes: int, expert: str) -> Path:
    from palaestra.demos.record import record
    from palaestra.envs.sources import make_env

    env = make_env(env_id, seed=1)
    try:
        result = record(env, {env_id: expert}, episodes=episodes, out=out, seed=1, force=True)[0]
    finally:
        env.close()
    print(f"{env_id}: {result.meta.number_episodes} expert episodes, {result.meta.number_steps} steps, "
          f"mean return {result.meta.mean_reward:.1f} ({expert})", flush=True)
    return result.path


def convert_for_imitation(demo_path: Path, out: Path, action_scale: float) -> Path:
    """The recording as imitation's trajectories: per episode its observations (one more than
    actions: the final one), its actions, and whether it ended in a terminal state (not a time
    limit). Saved as arrays; the peer builds its ``Trajectory`` objects from them."""
    from palaestra.demos.reader import read_demonstrations

    demo = read_demonstrations(demo_path)
    arrays: dict[str, np.ndarray] = {}
    terminal = []
    for i, rows in enumerate(demo.episode_slices()):
        acting = demo.has_action[rows]
        arrays[f"obs_{i}"] = demo.observations[0][rows]
        if demo.spec.action_spec.is_discrete:
            arrays[f"acts_{i}"] = demo.discrete_actions[rows][acting, 0].astype(np.int64)
        else:
            arrays[f"acts_{i}"] = demo.continuous_actions[rows][acting] * action_scale
        last = rows.stop - 1
        terminal.append(bool(demo.done[last]) and not bool(demo.max_step_reached[last]))
        assert len(arrays[f"obs_{i}"]) == len(arrays[f"acts_{i}"]) + 1, "an episode ends with one record without action"
    np.savez(out, terminal=np.array(terminal), **arrays)
    return out


# -- Palaestra's side, in this process -----------------------------------------------------------
def bench_palaestra(env_id: str, demo: Path, seed: int, steps: int, episodes: int) -> dict:
    from palaestra.envs.sources import make_env
    from palaestra.evaluation import evaluate_onnx
    from palaestra.export import export_policy
    from palaestra.trainer import BehaviorTrainer

    s = SETTINGS[env_id]
    section = {**COMMON_SECTION, **{k: v for k, v in s["palaestra"].items() if k != "gamma"}, "max_steps": steps,
               "summary_freq": s["snapshot_every"] * 2,
               "reward_signals": {"gail": {**GAIL_SIGNAL, "gamma": s["palaestra"]["gamma"], "demo_path": str(demo)}}}
    snapshots: list[dict] = []
    trainers: list[BehaviorTrainer] = []
    clock = {"start": 0.0, "paused": 0.0}
    original = BehaviorTrainer.advance

    def advance(self: BehaviorTrainer) -> None:
        original(self)
        now = time.perf_counter()
        if not trainers:
            trainers.append(self)
        if self.step >= (len(snapshots) + 1) * s["snapshot_every"]:
            snapshots.append({"seconds": now - clock["start"] - clock["paused"], "steps": self.step,
                              "state": copy.deepcopy(self.algorithm.state_dict()["policy"])})
        clock["paused"] += time.perf_counter() - now

    BehaviorTrainer.advance = advance
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # its first use imports torch's compiler (seconds)
    try:
        clock["start"] = time.perf_counter()
        result = run_palaestra(yaml.safe_dump({env_id: section}), env_id, f"--num-areas={s['n_envs']}", "--cpu",
                               seed=seed)
        seconds = time.perf_counter() - clock["start"] - clock["paused"]
    finally:
        BehaviorTrainer.advance = original
    policy = trainers[0].algorithm.policy
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for snap in snapshots:
            policy.load_state_dict(snap["state"])
            export_policy(policy, Path(d) / "p.onnx")
            returns = evaluate_onnx(make_env(env_id, seed=100, num_areas=EVAL_ENVS), Path(d) / "p.onnx", episodes)
            rows.append({"seconds": snap["seconds"], "steps": snap["steps"], "return": float(np.mean(returns))})
    return {"seconds": seconds, "steps": trainers[0].step, "snapshots": rows, "timers": result["timers"],
            "section": section}


# -- imitation's side, in its own virtual environment --------------------------------------------
def _pip(python: Path, args: list[str], log: Path) -> tuple[int, str]:
    cmd = [str(python), "-m", "pip", "--disable-pip-version-check", *args]
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        fh.write(done.stdout)
    lines = [ln for ln in done.stdout.splitlines() if ln.strip() and "is ignored" not in ln]
    return done.returncode, "\n".join(lines[-6:])


def ensure_imitation(venv: Path, log: Path) -> tuple[Path | None, str | None]:
    """imitation's virtual environment, made on first use; its Python, or None and why not."""
    python = venv / "bin" / "python"
    if (venv / ".ready").exists() and python.exists():
        return python, None
    print(f"Setting up imitation in {venv} (first use; a few minutes; log: {log})", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    made = subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], capture_output=True, text=True)
    if made.returncode != 0:
        return None, f"could not make a virtual environment in {venv}: {made.stderr.strip()[-300:]}"
    plan = log.with_suffix(".plan.json")
    code, tail = _pip(python, ["install", "--dry-run", "--quiet", "--report", str(plan), TORCH, "imitation"], log)
    if code != 0:
        return None, f"pip cannot install {TORCH} with imitation (exit {code}): {tail}"
    names = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(plan.read_text())["install"]}
    cuda = sorted(n for n in names if n.startswith("nvidia") or n == "triton")
    if cuda:  # a CUDA build of torch pulls several GB
        return None, f"pip would install torch {names.get('torch')} with CUDA packages ({', '.join(cuda[:3])}, ...)"
    # torch first, so that imitation's requirement is met by the CPU build
    for what, args in (("torch", ["install", TORCH]), ("imitation", ["install", "imitation"])):
        code, tail = _pip(python, args, log)
        if code != 0:
            return None, f"installing {what} failed (exit {code}): {tail}\n(full log: {log})"
    check = subprocess.run([str(python), "-c", "import imitation.algorithms.adversarial.gail, stable_baselines3"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        return None, f"imitation was installed but does not import: {check.stderr.strip()[-500:]}"
    (venv / ".ready").write_text("ok\n")
    return python, None


def bench_imitation(python: Path, env_id: str, demos: Path, seed: int, steps: int, episodes: int,
                    threads: int, log: Path) -> dict:
    s = SETTINGS[env_id]
    job = {"env": env_id, "demos": str(demos), "seed": seed, "steps": steps, "episodes": episodes, "threads": threads,
           "n_envs": s["n_envs"], "ppo": s["ppo"], "gail": s["gail"], "reward_net_hidden": REWARD_NET_HIDDEN,
           "snapshot_every": s["snapshot_every"]}
    with tempfile.TemporaryDirectory(prefix="palaestra-bench-") as work:
        job_path, result_path = Path(work) / "job.json", Path(work) / "result.json"
        job_path.write_text(json.dumps(job))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        with open(log, "w") as fh:
            code = subprocess.run([str(python), str(THEIRS), str(job_path), str(result_path)], stdout=fh,
                                  stderr=subprocess.STDOUT, env=env, cwd=work).returncode
        if code != 0 or not result_path.exists():
            return {"error": f"exit {code}: {' | '.join(log.read_text().strip().splitlines()[-3:])} (log: {log})"}
        return json.loads(result_path.read_text()) | {"job": job}


# -- the report ----------------------------------------------------------------------------------
def time_to(result: dict, threshold: float, held: bool = False) -> tuple[float | None, int | None]:
    """Training time and steps at the first snapshot whose return reaches ``threshold``; with
    ``held``, the first from which every later snapshot does too."""
    snaps = result["snapshots"]
    for i, snap in enumerate(snaps):
        if snap["return"] >= threshold and (not held or all(s["return"] >= threshold for s in snaps[i:])):
            return snap["seconds"], snap["steps"]
    return None, None


def report(env_id: str, threshold: float, results: dict[str, dict]) -> None:
    print(f"\nGAIL {env_id}: wall time until a snapshot's deterministic return reaches {threshold:g}")
    print(f"{'':10} {'seconds to threshold':>21} {'steps then':>11} {'held from (s)':>14} {'steps then':>11} "
          f"{'best return':>12} {'total s':>8} {'steps/s':>8}")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:10} {r['error']}")
            continue
        seconds, steps = time_to(r, threshold)
        held, held_steps = time_to(r, threshold, held=True)
        best = max((snap["return"] for snap in r["snapshots"]), default=float("nan"))
        print(f"{name:10} {'never' if seconds is None else f'{seconds:.1f}':>21} {steps or '-':>11} "
              f"{'never' if held is None else f'{held:.1f}':>14} {held_steps or '-':>11} {best:12.1f} "
              f"{r['seconds']:8.1f} {r['steps'] / r['seconds']:8.0f}")
    for name, r in results.items():
        if "error" not in r:
            print(f"  {name} snapshots (steps: return @ seconds): " + ", ".join(
                f"{snap['steps']}: {snap['return']:.0f} @ {snap['seconds']:.0f}" for snap in r["snapshots"]))
    times = {n: time_to(r, threshold)[0] for n, r in results.items() if "error" not in r}
    if len(times) == 2 and None not in times.values():
        print(f"  ratio imitation / Palaestra: {times['imitation'] / times['Palaestra']:.2f}x")


def summary(env_id: str, threshold: float, runs: list[dict[str, dict]]) -> None:
    """Over seeds: each side's median time to the threshold (a run that never reaches it counts as
    its total time, and is named), and the ratio of the medians when every run reached it."""
    print(f"\nGAIL {env_id}, {len(runs)} seed(s): median seconds to {threshold:g}")
    for held in (False, True):
        if held:
            print(f"  ... and until every later snapshot stays at {threshold:g} or above:")
        _summary_medians(runs, threshold, held)


def _summary_medians(runs: list[dict[str, dict]], threshold: float, held: bool) -> None:
    medians, missed_any = {}, False
    for name in runs[0]:
        times = [time_to(r[name], threshold, held)[0] for r in runs if "error" not in r[name]]
        totals = [r[name]["seconds"] for r in runs if "error" not in r[name]]
        if not times:
            continue
        missed = sum(t is None for t in times)
        missed_any |= missed > 0
        medians[name] = float(np.median([t if t is not None else total for t, total in zip(times, totals)]))
        print(f"  {name:10} {medians[name]:.1f} s (per seed: "
              + ", ".join("never" if t is None else f"{t:.1f}" for t in times)
              + (f"; {missed} never reached it: counted at their total time)" if missed else ")"))
    if len(medians) == 2 and not missed_any:
        print(f"  ratio imitation / Palaestra: {medians['imitation'] / medians['Palaestra']:.2f}x")
    elif len(medians) == 2:
        print("  no ratio: a run that never reached the threshold has no time to it (see each side's best return)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--envs", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seed", type=int, default=1, help="the first seed")
    parser.add_argument("--seeds", type=int, default=1, help="train each side once per seed, alternating")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on both sides")
    parser.add_argument("--steps", type=int, default=None, help="environment steps per side (default: per env)")
    parser.add_argument("--episodes", type=int, default=10, help="deterministic episodes per snapshot")
    parser.add_argument("--threshold", type=float, default=None, help="the return to reach (default: per env)")
    parser.add_argument("--no-peer", action="store_true", help="measure Palaestra alone")
    parser.add_argument("--report", type=Path, default=None, metavar="JSON",
                        help="print a saved run's tables again (with --threshold: for another return); no training")
    args = parser.parse_args()
    if args.report is not None:
        for env_id, by_seed in json.loads(args.report.read_text()).items():
            threshold = args.threshold if args.threshold is not None else SETTINGS[env_id]["threshold"]
            for seed, results in by_seed.items():
                report(f"{env_id}, seed {seed}", threshold, results)
            summary(env_id, threshold, list(by_seed.values()))
        return
    OUT.mkdir(exist_ok=True)
    python, why = (None, "--no-peer") if args.no_peer else ensure_imitation(VENV, OUT / "imitation-install.log")
    if python is None:
        print(f"imitation is not measured: {why}", flush=True)
    demos = OUT / "gail-demos"
    all_results: dict[str, dict] = {}
    for env_id in args.envs:
        s = SETTINGS[env_id]
        steps = args.steps or s["steps"]
        threshold = args.threshold if args.threshold is not None else s["threshold"]
        demo = record_demonstrations(env_id, demos, s["episodes"], s["expert"])
        runs = []
        for seed in range(args.seed, args.seed + args.seeds):
            results = {}
            if python is not None:  # the peer first: Palaestra's run sets process-wide thread limits
                converted = convert_for_imitation(demo, demos / f"{env_id}.npz", s.get("action_scale", 1.0))
                results["imitation"] = bench_imitation(python, env_id, converted, seed, steps, args.episodes,
                                                       args.threads, OUT / f"gail-imitation-{env_id}-{seed}.log")
            torch.set_num_threads(args.threads)
            results["Palaestra"] = bench_palaestra(env_id, demo, seed, steps, args.episodes)
            results = {"Palaestra": results.pop("Palaestra"), **results}
            report(f"{env_id}, seed {seed}", threshold, results)
            loop = results["Palaestra"]["timers"]["children"]
            update = loop.get("trainer_advance", {}).get("children", {}).get("_update_policy", {}).get("total", 0.0)
            print("  Palaestra's loop: " + ", ".join(f"{k} {loop[k]['total']:.1f} s" for k in
                                                     ("policy_act", "env_step", "trainer_advance") if k in loop)
                  + f" (of which PPO + GAIL updates {update:.1f} s)", flush=True)
            runs.append({n: {k: v for k, v in r.items() if k != "timers"} for n, r in results.items()})
        summary(env_id, threshold, runs)
        all_results[env_id] = {str(seed): r for seed, r in zip(range(args.seed, args.seed + args.seeds), runs)}
    (OUT / "gail_imitation.json").write_text(json.dumps(all_results, indent=1))


if __name__ == "__main__":
    main()
