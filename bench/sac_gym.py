"""SAC on a Gymnasium environment, Palaestra against Stable-Baselines3, side by side in one run.

Both use SB3's SAC defaults: 256x256 networks, batch 256, one gradient step per environment
step, 100 steps before learning starts, a replay of 1e6, tau 0.005, gamma 0.99, a learned
entropy coefficient starting at 1 with target -(action size); learning rate 1e-3 on Pendulum
(rl-zoo) and 3e-4 otherwise. Palaestra's sections in config/sac_trainer_config.yaml say the
same. Differences that remain are ML-Agents': swish instead of ReLU activations, and
transitions reaching the replay buffer a trajectory (64 steps) at a time, with the gradient
steps they make due run then (the same number per environment step).
Both run on the CPU with the same number of torch threads (all cores unless --threads).

Usage: python bench/sac_gym.py [--env Pendulum-v1] [--steps 20000] [--threads N]
       python bench/sac_gym.py --env HalfCheetah-v5 --steps 20000   (needs gymnasium[mujoco])
"""

from __future__ import annotations

import argparse
import os
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
    result = run_palaestra(yaml.safe_dump({env_id: section}), env_id, "--cpu", seed=0)
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    lr = yaml.safe_load(SAC_CONFIG.read_text())[args.env]["learning_rate"]
    # SB3 first: Palaestra's run sets process-wide thread limits that must not reach SB3's run.
    sb3 = bench_sb3(args.env, args.steps, args.threads, lr)
    ours = bench_palaestra(args.env, args.steps, args.threads)
    print(f"SAC {args.env}, {args.steps} steps, {args.threads} torch thread(s)")
    print(f"{'':12} {'steps/s':>10} {'seconds':>9} {'return (10 deterministic episodes)':>36}")
    for name, r in (("Palaestra", ours), ("SB3", sb3)):
        print(f"{name:12} {r['steps_per_s']:10.1f} {r['seconds']:9.1f} {r['return']:36.1f}")
    print(f"ratio Palaestra / SB3: {ours['steps_per_s'] / sb3['steps_per_s']:.2f}x")
    loop = ours["timers"]["children"]
    parts = {k: loop[k]["total"] for k in ("policy_act", "env_step", "trainer_advance") if k in loop}
    update = loop.get("trainer_advance", {}).get("children", {}).get("_update_policy", {}).get("total", 0.0)
    print("Palaestra's loop: " + ", ".join(f"{k} {v:.1f} s" for k, v in parts.items())
          + f" (of which SAC updates {update:.1f} s)")


if __name__ == "__main__":
    main()
