"""PPO on HalfCheetah-v5 with --num-envs 1, 2, 4, 8 against SB3 with DummyVecEnv and
SubprocVecEnv at the same environment counts and hyperparameters, side by side in one run.

Both: n_steps 512 per environment, batch 64, 10 epochs, 64x64 networks, lr 3e-4, gamma 0.99,
GAE lambda 0.95, clip 0.2, no entropy bonus (SB3's PPO defaults with n_steps 512). Palaestra's
section says the same in ML-Agents' terms (buffer_size = 512 x N, time_horizon 512, batch_size
64, num_epoch 10, beta 0). Palaestra's --num-envs 1 runs the environment in its main process,
--num-envs N > 1 in N worker processes (pipelined in two halves, envs/workers.py); SB3's
SubprocVecEnv with one environment per subprocess, DummyVecEnv in its main process. Steps/s are
for the whole run, collection and updates together, so they show what a user waits for. Where
Palaestra's loop time goes: acting (policy forward pass and recording), waiting on / stepping
the environment, and trainer updates.

Usage: python bench/ppo_num_envs.py [--steps 20480] [--counts 1 2 4 8]   (needs gymnasium[mujoco])
"""

from __future__ import annotations

import argparse
import time

import torch
from common import run_palaestra

CONFIG = """
HalfCheetah-v5:
  batch_size: 64
  buffer_size: {buffer}
  num_epoch: 10
  hidden_units: 64
  num_layers: 2
  learning_rate: 3.0e-4
  learning_rate_schedule: constant
  beta: 0.0
  epsilon: 0.2
  lambd: 0.95
  time_horizon: 512
  max_steps: {steps}
  summary_freq: {steps}
  reward_signals:
    extrinsic: {{strength: 1.0, gamma: 0.99}}
"""


def bench_palaestra(n: int, steps: int) -> dict:
    torch.set_num_threads(1)
    r = run_palaestra(CONFIG.format(buffer=512 * n, steps=steps), "HalfCheetah-v5", "--cpu", f"--num-envs={n}")
    loop = r["timers"]["children"]
    return {"steps_per_s": steps / r["loop_s"], "loop": r["loop_s"],
            **{k: loop.get(timer, {}).get("total", 0.0)
               for k, timer in (("act", "policy_act"), ("env", "env_step"), ("update", "trainer_advance"))}}


def bench_sb3(n: int, steps: int, subproc: bool) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    torch.set_num_threads(1)
    env = make_vec_env("HalfCheetah-v5", n_envs=n, seed=0, vec_env_cls=SubprocVecEnv if subproc else DummyVecEnv)
    model = PPO("MlpPolicy", env, n_steps=512, batch_size=64, n_epochs=10, ent_coef=0.0, device="cpu", seed=0,
                verbose=0)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    seconds = time.perf_counter() - start
    env.close()
    return {"steps_per_s": steps / seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20_480)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    rows = []
    for n in args.counts:
        steps = max(args.steps, 512 * n * 2)  # at least two updates
        dummy = bench_sb3(n, steps, subproc=False)
        subproc = bench_sb3(n, steps, subproc=True) if n > 1 else dummy
        ours = bench_palaestra(n, steps)
        rows.append((n, ours, dummy, subproc))
    print(f"PPO HalfCheetah-v5, {args.steps}+ steps per configuration (steps/s, whole training loop)")
    print(f"{'envs':>5} {'Palaestra':>10} {'SB3 Dummy':>10} {'SB3 Subproc':>12} {'vs Subproc':>11} "
          f"{'vs 1 env':>9}   Palaestra's loop (s): acting / environment / updates")
    base = rows[0][1]["steps_per_s"]
    for n, ours, dummy, subproc in rows:
        print(f"{n:5d} {ours['steps_per_s']:10.0f} {dummy['steps_per_s']:10.0f} {subproc['steps_per_s']:12.0f} "
              f"{ours['steps_per_s'] / subproc['steps_per_s']:10.2f}x {ours['steps_per_s'] / base:8.2f}x"
              f"   {ours['act']:.1f} / {ours['env']:.1f} / {ours['update']:.1f} of {ours['loop']:.1f}")


if __name__ == "__main__":
    main()
