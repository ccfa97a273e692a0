"""Self-play on the built-in Tennis: the shipped section (config/trainer_config.yaml) trained from
scratch per seed, both teams sharing one policy, no scripted opponent at any time; then the
exported model (deterministic actions, as team 0) plays points against a random player and
against the built-in scripted player (envs/builtin/tennis.py's heuristic, which it never met).

Usage: python bench/tennis_self_play.py [--seeds 8] [--first-seed 0] [--points 400] [--steps N]
Prints per seed: the last ELO, and the share of points won and lost against each opponent.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

import numpy as np
from common import run_palaestra

from palaestra.envs.base import ActionTuple
from palaestra.envs.builtin.tennis import TEAMS, Tennis
from palaestra.evaluation import evaluate_onnx

REPOSITORY = Path(__file__).resolve().parent.parent


def points_against(model: Path, opponent: str, points: int, seed: int = 7) -> tuple[float, float]:
    """(won, lost) shares of ``points`` points played by ``model`` as team 0 against ``opponent``."""
    env = Tennis(seed=seed, num_areas=2)
    rng = np.random.default_rng(seed)

    def act(decision):
        if opponent == "random":
            return ActionTuple(discrete=rng.integers(0, 3, (len(decision), 1)).astype(np.int32))
        return env.heuristic_for(TEAMS[1])

    returns = np.array(evaluate_onnx(env, model, episodes=points, behavior=TEAMS[0], opponents={TEAMS[1]: act}))
    # a point's return is +-1 plus 0.1 per return made: won points are the positive ones (a lost
    # point after ten returns of one's own would count as 0, a draw, and never happens here)
    return float(np.mean(returns > 0)), float(np.mean(returns < 0))


def last_elo(run_dir: Path) -> float:
    with open(run_dir / "summaries" / "bench_Tennis.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("Self-play/ELO")]
    return float(rows[-1]["Self-play/ELO"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--points", type=int, default=400)
    parser.add_argument("--steps", type=int, default=None, help="max_steps instead of the section's")
    args = parser.parse_args()
    config = (REPOSITORY / "config" / "trainer_config.yaml").read_text()
    if args.steps is not None:
        config = config.replace("Tennis:\n    max_steps: 4.0e5", f"Tennis:\n    max_steps: {args.steps}")
    table = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        result = run_palaestra(config, "Tennis", "--cpu", seed=seed)
        model = result["dir"] / "models" / "bench" / "Tennis.onnx"
        random_won, random_lost = points_against(model, "random", args.points)
        scripted_won, scripted_lost = points_against(model, "heuristic", args.points)
        row = (seed, result["loop_s"], last_elo(result["dir"]), random_won, random_lost, scripted_won, scripted_lost)
        table.append(row)
        print("seed %d: %.1f s, ELO %.0f; against random: won %.3f lost %.3f; against the scripted player: won %.3f "
              "lost %.3f" % row, flush=True)
    for name, column in (("won against random", 3), ("won against the scripted player", 5)):
        values = [r[column] for r in table]
        print(f"{name}: median {statistics.median(values):.3f}, lowest {min(values):.3f}")


if __name__ == "__main__":
    main()
