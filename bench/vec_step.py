"""The environment plumbing alone: HalfCheetah-v5 stepped with random actions and no learning,
through Palaestra's in-process environment, its worker pool (pipelined, as --num-envs runs it,
and in lockstep) and SB3's DummyVecEnv and SubprocVecEnv, at equal environment counts.
Agent-steps/s; each configuration runs for the same number of agent-steps.

Usage: python bench/vec_step.py [--steps 6000] [--counts 1 2 4 8]   (needs gymnasium[mujoco])
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def palaestra_rate(n: int, steps: int, pipeline: bool) -> float:
    from palaestra.envs.base import ActionTuple
    from palaestra.envs.sources import make_env
    from palaestra.workers.stepping import WorkerPoolEnv

    env = WorkerPoolEnv("HalfCheetah-v5", n, pipeline=pipeline) if n > 1 else make_env("HalfCheetah-v5")
    rng = np.random.default_rng(0)

    def drive(agent_steps: int) -> int:
        done = 0
        while done < agent_steps:
            decision, _ = env.get_steps("HalfCheetah-v5")
            actions = rng.uniform(-1, 1, (len(decision), 6)).astype(np.float32)
            env.set_actions("HalfCheetah-v5", ActionTuple(continuous=actions))
            env.step()
            done += len(decision)
        return done

    try:
        env.reset()
        drive(200)  # warm-up
        start = time.perf_counter()
        done = drive(steps)
        return done / (time.perf_counter() - start)
    finally:
        env.close()


def sb3_rate(n: int, steps: int, subproc: bool) -> float:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    env = make_vec_env("HalfCheetah-v5", n_envs=n, seed=0, vec_env_cls=SubprocVecEnv if subproc else DummyVecEnv)
    rng = np.random.default_rng(0)
    try:
        env.reset()
        for _ in range(200 // n + 1):
            env.step(rng.uniform(-1, 1, (n, 6)).astype(np.float32))
        start = time.perf_counter()
        for _ in range(steps // n):
            env.step(rng.uniform(-1, 1, (n, 6)).astype(np.float32))
        return (steps // n) * n / (time.perf_counter() - start)
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    print(f"HalfCheetah-v5, random actions, no learning: agent-steps/s over {args.steps} agent-steps")
    print(f"{'envs':>5} {'Palaestra':>10} {'lockstep':>9} {'SB3 Dummy':>10} {'SB3 Subproc':>12} {'vs Subproc':>11}")
    for n in args.counts:
        ours = palaestra_rate(n, args.steps, pipeline=True)
        lockstep = palaestra_rate(n, args.steps, pipeline=False) if n > 1 else ours
        dummy = sb3_rate(n, args.steps, subproc=False)
        subproc = sb3_rate(n, args.steps, subproc=True) if n > 1 else dummy
        print(f"{n:5d} {ours:10.0f} {lockstep:9.0f} {dummy:10.0f} {subproc:12.0f} {ours / subproc:10.2f}x", flush=True)


if __name__ == "__main__":
    main()
