"""Train one environment with several seeds; print each run's summaries (mean reward per
summary period, from summaries/<run>_<Behavior>.csv), its final and best mean reward, and how many
runs reach a threshold at the end.

Usage: python bench/seed_sweep.py CONFIG ENV [--seeds 8] [--first-seed 0] [--threshold 90] [other mlagents-learn flags]
Example: python bench/seed_sweep.py config/trainer_config.yaml GridWorld --threshold 0.8
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from common import run_palaestra

from palaestra.run_folders import output_names


def summary_rewards(run_dir: Path, behavior: str) -> list[float]:
    name = output_names([behavior])[behavior]  # a behavior's files are named file-system-safe
    with open(run_dir / "summaries" / f"bench_{name}.csv", newline="") as fh:
        return [float(r["Environment/Cumulative Reward"]) for r in csv.DictReader(fh)
                if r["Environment/Cumulative Reward"] not in ("", "None")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("env")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--evaluate", type=int, default=0, metavar="EPISODES",
                        help="also run the exported ONNX model deterministically for this many episodes")
    parser.add_argument("extra", nargs="*", help="more mlagents-learn flags, after --")
    args, unknown = parser.parse_known_args()  # other mlagents-learn flags pass through
    args.extra = [*args.extra, *unknown]
    from palaestra.envs.sources import make_env

    behavior = next(iter(make_env(args.env).behavior_specs))
    config = Path(args.config).read_text()
    finals = []
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for seed in seeds:
        result = run_palaestra(config, args.env, f"--seed={seed}", *args.extra, seed=None)
        rewards = summary_rewards(result["dir"], behavior)
        finals.append(rewards[-1])
        exported = ""
        if args.evaluate:
            from palaestra.evaluation import evaluate_onnx

            returns = evaluate_onnx(make_env(args.env, seed=3, num_areas=2),
                                    result["dir"] / f"models/bench/{output_names([behavior])[behavior]}.onnx",
                                    episodes=args.evaluate)
            exported = f", exported model mean {np.mean(returns):.3f} min {np.min(returns):.3f}"
        print(f"seed {seed}: final {rewards[-1]:.3f}, best {max(rewards):.3f}{exported}; summaries "
              + " ".join(f"{r:.3g}" for r in rewards), flush=True)
    print(f"{args.env} {' '.join(args.extra)}, seeds {seeds.start}-{seeds.stop - 1}: "
          + ", ".join(f"{r:.3f}" for r in finals))
    if args.threshold is not None:
        print(f"{sum(r >= args.threshold for r in finals)}/{len(finals)} reach {args.threshold} at the end")


if __name__ == "__main__":
    main()
