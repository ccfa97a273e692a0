"""WallJump with and without a curriculum: train each seed both ways with the same budget, then
run BigWallJump's exported model deterministically on the hardest wall (8, the environment's
default) and print the share of episodes that reach the goal and the mean return.

Usage: python bench/curriculum_walljump.py [--seeds 4] [--first-seed 0] [--steps 150000]
       [--curriculum config/curricula/wall_jump.yaml] [--only curriculum|plain]
       [--config config/trainer_config.yaml] [--curiosity]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import yaml
from common import run_palaestra

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=150_000, help="max_steps of each behavior")
    parser.add_argument("--curriculum", default=str(REPO / "config/curricula/wall_jump.yaml"))
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--only", choices=["curriculum", "plain"], help="train one way only")
    parser.add_argument("--config", default=str(REPO / "config/trainer_config.yaml"),
                        help="trainer config with the SmallWallJump and BigWallJump sections")
    parser.add_argument("--curiosity", action="store_true",
                        help="add the curiosity reward signal to both sections (ML-Agents' Pyramids settings: "
                             "strength 0.02, gamma 0.99, encoding 256)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from palaestra.envs.sources import make_env
    from palaestra.evaluation import evaluate_onnx

    config = Path(args.config).read_text()
    config = re.sub(r"(SmallWallJump|BigWallJump):\n    max_steps: [^\n]+", rf"\1:\n    max_steps: {args.steps}", config)
    assert config.count(f"max_steps: {args.steps}") == 2, "the sections' max_steps were not found"
    if args.curiosity:
        sections = yaml.safe_load(config)
        for behavior in ("SmallWallJump", "BigWallJump"):
            signals = sections[behavior].setdefault("reward_signals", {"extrinsic": {"strength": 1.0, "gamma": 0.99}})
            signals["curiosity"] = {"strength": 0.02, "gamma": 0.99, "encoding_size": 256}
        config = yaml.safe_dump(sections, sort_keys=False)
    results: dict[str, list[float]] = {"curriculum": [], "hardest wall from the start": []}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for mode in results:
            if args.only and (mode == "curriculum") != (args.only == "curriculum"):
                continue
            flags = [f"--curriculum={args.curriculum}"] if mode == "curriculum" else []
            run = run_palaestra(config, "WallJump", *flags, seed=seed)
            returns = evaluate_onnx(make_env("WallJump", seed=100 + seed, num_areas=2),
                                    run["dir"] / "models/bench/BigWallJump.onnx", args.episodes,
                                    max_decisions=20_000, behavior="BigWallJump")
            solved = float(np.mean(np.array(returns) > 0)) if returns else 0.0
            results[mode].append(solved)
            print(f"seed {seed}, {mode}: {len(returns)} big-wall episodes (height 8), {solved:.0%} reach the goal, "
                  f"mean return {np.mean(returns) if returns else float('nan'):.3f}; {run['wall_s']:.0f} s", flush=True)
    for mode, solved in results.items():
        print(f"{mode}, {args.steps} steps per behavior: goal reached in " + ", ".join(f"{s:.0%}" for s in solved))


if __name__ == "__main__":
    main()
