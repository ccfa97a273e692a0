"""Stepping many copies of a Gymnasium environment whose infos carry action masks (Taxi-v4), with
random legal actions and no learning: Palaestra's in-process adapter (``--num-areas`` copies, the
masks read from ``info["action_mask"]``) against sb3-contrib's way for MaskablePPO (an
``ActionMasker`` per copy in a ``DummyVecEnv``, the masks gathered with ``get_action_masks``).
Agent-steps/s; both take the same number of agent-steps, and both draw the actions the same way.

Usage: python bench/masked_step.py [--env Taxi-v4] [--steps 200000] [--copies 16 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def legal_choice(rng: np.random.Generator, allowed: np.ndarray) -> np.ndarray:
    """A uniformly drawn legal action per row of ``allowed`` ([rows, actions], True where legal)."""
    return np.argmax(rng.random(allowed.shape) * allowed, axis=1)


def palaestra_rate(env_id: str, copies: int, steps: int) -> float:
    from palaestra.envs.base import ActionTuple
    from palaestra.envs.sources import make_env

    env = make_env(env_id, seed=0, num_areas=copies)
    (behavior,) = env.behavior_specs
    rng = np.random.default_rng(0)
    env.reset()
    start = time.perf_counter()
    for _ in range(steps // copies):
        decision, _ = env.get_steps(behavior)
        allowed = ~decision.action_mask[0]  # (Palaestra's masks are True where an action is unavailable)
        env.set_actions(behavior, ActionTuple(discrete=legal_choice(rng, allowed)[:, None]))
        env.step()
    rate = (steps // copies) * copies / (time.perf_counter() - start)
    env.close()
    return rate


def sb3_contrib_rate(env_id: str, copies: int, steps: int) -> float:
    import gymnasium as gym
    from sb3_contrib.common.maskable.utils import get_action_masks
    from sb3_contrib.common.wrappers import ActionMasker
    from stable_baselines3.common.vec_env import DummyVecEnv

    def make() -> gym.Env:
        # the mask the environment gives in its info, read as MaskablePPO's wrapper asks for it
        def mask(env: gym.Env) -> np.ndarray:
            return env.unwrapped.action_mask(env.unwrapped.s).astype(bool)
        return ActionMasker(gym.make(env_id), mask)

    vec = DummyVecEnv([make for _ in range(copies)])
    vec.seed(0)
    vec.reset()
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(steps // copies):
        vec.step(legal_choice(rng, get_action_masks(vec)))
    rate = (steps // copies) * copies / (time.perf_counter() - start)
    vec.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Taxi-v4", help="a Gymnasium id whose unwrapped env has action_mask(s)")
    parser.add_argument("--steps", type=int, default=200_000, help="agent-steps per measurement")
    parser.add_argument("--copies", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--repeats", type=int, default=3, help="measurements per side; the median is reported")
    args = parser.parse_args()
    print(f"{args.env}, random legal actions, {args.steps} agent-steps, median of {args.repeats}")
    print("| copies | Palaestra (agent-steps/s) | sb3-contrib ActionMasker + DummyVecEnv | ratio |")
    print("|---|---|---|---|")
    for copies in args.copies:
        ours, theirs = [], []
        for _ in range(args.repeats):  # alternated, so that a slow spell hits both
            ours.append(palaestra_rate(args.env, copies, args.steps))
            theirs.append(sb3_contrib_rate(args.env, copies, args.steps))
        a, b = float(np.median(ours)), float(np.median(theirs))
        print(f"| {copies} | {a:,.0f} | {b:,.0f} | {a / b:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
