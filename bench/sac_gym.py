"""SAC on a Gymnasium environment, Palaestra against Stable-Baselines3, side by side in one run.

Both use SB3's SAC defaults: 256x256 networks, batch 256, one gradient step per environment
step, 100 steps before learning starts, a replay of 1e6, tau 0.005, gamma 0.99, a learned
entropy coefficient starting at 1 with target -(action size); learning rate 1e-3 on Pendulum
(rl-zoo) and 3e-4 otherwise. Palaestra's sections in config/sac_trainer_config.yaml say the
same. Differences that remain are ML-Agents': swish instead of ReLU activations, and
transitions reaching the replay buffer a trajectory (64 steps) at a time, with the gradient
steps they make due run then (the same number per environment step).
Both run on the CPU with the same number of torch threads (all cores unless --threads).

Each run is a fresh process (no thread setting of one reaches the other). With --repeats N the
pairs alternate which library goes first (SB3, Palaestra, Palaestra, SB3, ...), so that a slow
spell of this shared machine, whose speed moves by tens of percent from minute to minute, falls
on both; each pair's ratio is listed and the median of the ratios taken.

Usage: python bench/sac_gym.py [--env Pendulum-v1] [--steps 20000] [--threads N] [--repeats 1]
       python bench/sac_gym.py --env HalfCheetah-v5 --steps 20000   (needs gymnasium[mujoco])
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from common import run_palaestra

from palaestra.evaluation import evaluate_onnx

SAC_CONFIG = Path(__file__).resolve().parent.parent / "config" / "sac_trainer_config.yaml"


def bench_palaestra(env_id: str, steps: int, threads: int) -> dict:
    from palaestra.envs.sources import make_env

    config = yaml.safe_load(SAC_CONFIG.read_text())
    section = {**config["default"], **config[env_id], "max_steps": steps, "summary_freq": max(steps // 10, 1)}
    torch.set_num_threads(threads)
    result = run_palaestra(yaml.safe_dump({env_id: section}), env_id, "--cpu", f"--torch-threads={threads}", seed=0)
    onnx = result["dir"] / f"models/bench/{env_id}.onnx"
    returns = evaluate_onnx(make_env(env_id, seed=100, num_areas=5), onnx, episodes=10)
    return {"steps_per_s": steps / result["loop_s"], "seconds": result["loop_s"], "return": float(np.mean(returns)),
            "timers": result["timers"]}


def bench_sb3(env_id: str, steps: int, threads: int, learning_rate: float) -> dict:
    import gymnasium as gym
    from stable_baselines3 import SAC
    from stable_baselines3.common.evaluation import evaluate_policy

    torch.set_num_threads(threads)
    model = SAC("MlpPolicy", gym.make(env_id), learning_rate=learning_rate, device="cpu", seed=0, verbose=0)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    seconds = time.perf_counter() - start
    ret, _ = evaluate_policy(model, gym.make(env_id), n_eval_episodes=10, deterministic=True)
    return {"steps_per_s": steps / seconds, "seconds": seconds, "return": float(ret)}


def run_one(library: str, env_id: str, steps: int, threads: int) -> dict:
    """One library's run in a fresh process (this script with --one), its result as a dict."""
    cmd = [sys.executable, __file__, "--one", library, "--env", env_id, "--steps", str(steps),
           "--threads", str(threads)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=7200)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{library}'s run failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=1, choices=range(1, 101), metavar="N")
    parser.add_argument("--one", choices=("palaestra", "sb3"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one == "sb3":
        lr = yaml.safe_load(SAC_CONFIG.read_text())[args.env]["learning_rate"]
        print(json.dumps(bench_sb3(args.env, args.steps, args.threads, lr)))
        return
    if args.one == "palaestra":
        ours = bench_palaestra(args.env, args.steps, args.threads)
        loop = ours.pop("timers")["children"]
        ours["parts"] = {k: loop[k]["total"] for k in ("policy_act", "env_step", "trainer_advance") if k in loop}
        ours["updates"] = loop.get("trainer_advance", {}).get("children", {}).get("_update_policy", {}).get("total", 0.0)
        print(json.dumps(ours))
        return
    pairs = []
    for repeat in range(args.repeats):
        order = ("sb3", "palaestra") if repeat % 2 == 0 else ("palaestra", "sb3")
        pair = {library: run_one(library, args.env, args.steps, args.threads) for library in order}
        pairs.append(pair)
        print(f"repeat {repeat + 1} ({order[0]} first): Palaestra {pair['palaestra']['steps_per_s']:.1f} steps/s, "
              f"SB3 {pair['sb3']['steps_per_s']:.1f}: {pair['palaestra']['steps_per_s'] / pair['sb3']['steps_per_s']:.2f}x",
              flush=True)
    print(f"\nSAC {args.env}, {args.steps} steps, {args.threads} torch thread(s), {args.repeats} pair(s)")
    print(f"{'':12} {'steps/s':>10} {'seconds':>9} {'return (10 deterministic episodes)':>36}")
    for name, key in (("Palaestra", "palaestra"), ("SB3", "sb3")):
        for number, pair in enumerate(pairs, 1):
            r = pair[key]
            print(f"{name + f' ({number})':12} {r['steps_per_s']:10.1f} {r['seconds']:9.1f} {r['return']:36.1f}")
    ratios = [pair["palaestra"]["steps_per_s"] / pair["sb3"]["steps_per_s"] for pair in pairs]
    print(f"ratio Palaestra / SB3: {statistics.median(ratios):.2f}x (median of {', '.join(f'{r:.2f}' for r in ratios)})")
    last = pairs[-1]["palaestra"]
    print("Palaestra's loop (last run): " + ", ".join(f"{k} {v:.1f} s" for k, v in last["parts"].items())
          + f" (of which SAC updates {last['updates']:.1f} s)")


if __name__ == "__main__":
    main()
