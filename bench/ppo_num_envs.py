"""PPO on HalfCheetah-v5 with --num-envs 1, 2, 4, 8 against SB3 with DummyVecEnv and
SubprocVecEnv at the same environment counts and hyperparameters, side by side in one run.

Both: n_steps 512 per environment, batch 64, 10 epochs, 64x64 networks, lr 3e-4, gamma 0.99,
GAE lambda 0.95, clip 0.2, no entropy bonus (SB3's PPO defaults with n_steps 512). Palaestra's
section says the same in ML-Agents' terms (buffer_size = 512 x N, time_horizon 512, batch_size
64, num_epoch 10, beta 0). Palaestra's --num-envs 1 runs the environment in its main process
(and, as "workers", in one acting worker with --acting=workers); --num-envs N > 1 runs N worker
processes, measured both ways --acting allows: the policy acting in the workers (the default for
PPO on the CPU) and in the main process (two pipelined halves).
SB3's SubprocVecEnv runs one environment per subprocess, DummyVecEnv all in its main process.

Steps/s are for the whole training loop, collection and updates together, so they show what a
user waits for. Every configuration runs --repeats times, the repeats interleaved so that a slow
spell of the machine touches all of them alike; the tables show medians. Where Palaestra's loop
time goes: acting (the main process's policy and recording; with acting in the workers, taking
their segments), the environment (stepping, or waiting for the workers' rounds) and updates.

Usage: python bench/ppo_num_envs.py [--steps 20480] [--counts 1 2 4 8] [--repeats 3] [--steady]
(needs gymnasium[mujoco])
"""

from __future__ import annotations

import argparse
import time

import numpy as np
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


def bench_palaestra(n: int, steps: int, acting: str) -> dict:
    torch.set_num_threads(1)
    r = run_palaestra(CONFIG.format(buffer=512 * n, steps=steps), "HalfCheetah-v5", "--cpu", f"--num-envs={n}",
                      f"--acting={acting}")
    loop = r["timers"]["children"]
    parts = {k: sum(loop.get(t, {}).get("total", 0.0) for t in timers)
             for k, timers in (("act", ("policy_act", "record_segments")), ("env", ("env_step",)),
                               ("update", ("trainer_advance",)))}
    return {"steps_per_s": steps / r["loop_s"], "loop": r["loop_s"], **parts}


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


def steady_state(steps: int, counts: list[int], repeats: int) -> None:
    """Steps/s past the first ``steps`` (runs of ``steps`` and of 3 x ``steps``; their loops'
    difference) for one environment in-process and ``counts`` acting workers, each repeat's
    configurations run one after the other, so that each ratio compares runs close in time."""
    def speed(n: int, acting: str) -> float:
        short, long = (bench_palaestra(n, k * steps, acting)["loop"] for k in (1, 3))
        return 2 * steps / (long - short)

    print(f"PPO HalfCheetah-v5, steps/s from step {steps} to {3 * steps} (loop of a {3 * steps}-step run minus a "
          f"{steps}-step run's)")
    ratios: dict[int, list[float]] = {n: [] for n in counts}
    for r in range(repeats):
        base = speed(1, "auto")
        line = [f"repeat {r + 1}: 1 env in-process {base:,.0f}"]
        for n in counts:
            ours = speed(n, "workers")
            ratios[n].append(ours / base)
            line.append(f"{n} workers {ours:,.0f} ({ours / base:.2f}x)")
        print(", ".join(line), flush=True)
    for n in counts:
        print(f"{n} workers against 1 env in-process: median {float(np.median(ratios[n])):.2f}x "
              f"(repeats: {', '.join(f'{x:.2f}' for x in ratios[n])})")


def median_run(runs: list[dict]) -> dict:
    """The run with the median steps/s (its own time split, not a mix of runs)."""
    return sorted(runs, key=lambda r: r["steps_per_s"])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20_480)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steady", action="store_true",
                        help="Palaestra alone, from the first --steps on: each configuration also trains 3x --steps, "
                             "and the difference of the two loops' times gives its speed past the start and first "
                             "updates; ratios to one environment in-process are taken within each repeat")
    args = parser.parse_args()
    if args.steady:
        steady_state(args.steps, [n for n in args.counts if n > 1], args.repeats)
        return
    runs: dict[tuple[int, str], list[dict]] = {}
    for _ in range(args.repeats):
        for n in args.counts:
            steps = max(args.steps, 512 * n * 2)  # at least two updates
            kinds = {"sb3 dummy": lambda: bench_sb3(n, steps, subproc=False)}
            if n > 1:
                kinds["sb3 subproc"] = lambda: bench_sb3(n, steps, subproc=True)
                kinds["workers"] = lambda: bench_palaestra(n, steps, "workers")
                kinds["main"] = lambda: bench_palaestra(n, steps, "main")
            else:
                kinds["in-process"] = lambda: bench_palaestra(1, steps, "auto")
                kinds["workers"] = lambda: bench_palaestra(1, steps, "workers")  # one acting worker
            for kind, run in kinds.items():
                runs.setdefault((n, kind), []).append(run())
    med = {key: median_run(r) for key, r in runs.items()}
    base = med[(1, "in-process")]["steps_per_s"] if (1, "in-process") in med else None
    print(f"PPO HalfCheetah-v5, {args.steps}+ steps per configuration, median of {args.repeats} "
          "(steps/s, whole training loop)")
    print(f"{'envs':>5} {'acting':>10} {'Palaestra':>10} {'SB3 Dummy':>10} {'SB3 Subproc':>12} {'vs Subproc':>11} "
          f"{'vs 1 env':>9}   loop (s): acting / environment / updates   [all runs, steps/s]")
    for n in args.counts:
        dummy = med[(n, "sb3 dummy")]["steps_per_s"]
        subproc = med[(n, "sb3 subproc")]["steps_per_s"] if n > 1 else dummy
        for kind in (("in-process", "workers") if n == 1 else ("workers", "main")):
            ours = med[(n, kind)]
            versus = f"{ours['steps_per_s'] / base:8.2f}x" if base else f"{'-':>9}"
            every = ", ".join(f"{r['steps_per_s']:.0f}" for r in runs[(n, kind)])
            print(f"{n:5d} {kind:>10} {ours['steps_per_s']:10.0f} {dummy:10.0f} {subproc:12.0f} "
                  f"{ours['steps_per_s'] / subproc:10.2f}x {versus}"
                  f"   {ours['act']:.1f} / {ours['env']:.1f} / {ours['update']:.1f} of {ours['loop']:.1f}   [{every}]")
    print("SB3 runs (steps/s): " + "; ".join(
        f"{n} {kind}: " + ", ".join(f"{r['steps_per_s']:.0f}" for r in runs[(n, kind)])
        for n in args.counts for kind in ("sb3 dummy", "sb3 subproc") if (n, kind) in runs))


if __name__ == "__main__":
    main()
