"""Train one environment with several seeds; print each run's final mean reward (the last
summary row of summaries/<run>_<Behavior>.csv) and how many reach a threshold.

Usage: python bench/seed_sweep.py CONFIG ENV [--seeds 8] [--threshold 90] [other mlagents-learn flags]
Example: python bench/seed_sweep.py config/trainer_config.yaml GridWorld --threshold 0.8
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from common import run_palaestra


def final_reward(run_dir: Path, behavior: str) -> float:
    with open(run_dir / "summaries" / f"bench_{behavior}.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["Environment/Cumulative Reward"] not in ("", "None")]
    return float(rows[-1]["Environment/Cumulative Reward"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("env")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("extra", nargs="*", help="more mlagents-learn flags, after --")
    args, unknown = parser.parse_known_args()  # other mlagents-learn flags pass through
    args.extra = [*args.extra, *unknown]
    from palaestra.envs.sources import make_env

    behavior = next(iter(make_env(args.env).behavior_specs))
    config = Path(args.config).read_text()
    rewards = []
    for seed in range(args.seeds):
        result = run_palaestra(config, args.env, f"--seed={seed}", *args.extra, seed=None)
        rewards.append(final_reward(result["dir"], behavior))
    print(f"{args.env}, seeds 0-{args.seeds - 1}: " + ", ".join(f"{r:.3f}" for r in rewards))
    if args.threshold is not None:
        print(f"{sum(r >= args.threshold for r in rewards)}/{len(rewards)} reach {args.threshold}")


if __name__ == "__main__":
    main()
