"""3DBall under randomization: train with the sampler file and without, then run both exported
models deterministically for the same parameter draws from the sampler's ranges, and print each
model's mean return per draw and overall.

Usage: python bench/randomize_3dball.py [--seeds 1] [--first-seed 0] [--draws 20]
       [--sampler config/samplers/3dball_randomize.yaml] [--corners]

--corners runs the models at every corner of the sampled box (each parameter at its uniform
sampler's min_value or max_value) instead of random draws: the extremes of the range.

Besides the returns, each model's margin is printed: how far the ball strays from the platform's
centre, as a share of the distance at which it falls (0: centred, 1: off), its mean over every
decision of the evaluation episodes and its largest. Two models that both keep the ball up can
still differ there.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from common import run_palaestra

from palaestra.envs.builtin.ball3d import PLATFORM_HALF, Ball3D

REPO = Path(__file__).resolve().parent.parent


class StrayRecording(Ball3D):
    """3DBall that records, after every decision, how far each ball is from its platform's centre
    as a share of the distance at which it falls."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.strays: list[np.ndarray] = []

    def _advance(self, actions):
        result = super()._advance(actions)
        rim = PLATFORM_HALF + 0.5 * self.parameters["scale"]
        self.strays.append(np.abs(self.pos).max(axis=1) / rim)
        return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=24)
    parser.add_argument("--sampler", default=str(REPO / "config/samplers/3dball_randomize.yaml"))
    parser.add_argument("--corners", action="store_true", help="evaluate at the corners of the sampled box")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from palaestra.curriculum import load_sampler
    from palaestra.evaluation import evaluate_onnx

    sampler = load_sampler(args.sampler)
    rng = np.random.default_rng(12345)
    draws = [sampler.sample(rng) for _ in range(args.draws)]
    if args.corners:  # every parameter at one end of its uniform range
        if not all(hasattr(s, "min_value") for s in sampler.samplers.values()):
            parser.error(f"--corners needs uniform samplers only; {args.sampler} has others")
        ends = {name: (s.min_value, s.max_value) for name, s in sampler.samplers.items()}
        draws = [dict(zip(ends, corner)) for corner in itertools.product(*ends.values())]
    config = (REPO / "config/trainer_config.yaml").read_text()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for mode, flags in (("randomized", [f"--sampler={args.sampler}"]), ("plain", [])):
            run = run_palaestra(config, "3DBall", *flags, seed=seed)
            csv = (run["dir"] / "summaries/bench_3DBall.csv").read_text().splitlines()
            column = csv[0].split(",").index("Environment/Cumulative Reward")
            last = [row.split(",")[column] for row in csv[1:] if row.split(",")[column]][-1]
            means, strays = [], []
            for draw in draws:
                env = StrayRecording(seed=7)
                returns = evaluate_onnx(env, run["dir"] / "models/bench/3DBall.onnx", args.episodes, parameters=draw)
                means.append(float(np.mean(returns)))
                strays.append(np.concatenate(env.strays))
            worst = int(np.argmin(means))
            everything = np.concatenate(strays)
            print(f"seed {seed}, {mode}: margin: the ball at {everything.mean():.3f} of the way to falling on average, "
                  f"{everything.max():.3f} at most; per draw (mean/max): "
                  + " ".join(f"{d.mean():.2f}/{d.max():.2f}" for d in strays), flush=True)
            print(f"seed {seed}, {mode}: last training summary {float(last):.1f}; on {len(draws)} draws mean "
                  f"{np.mean(means):.1f}, {sum(m >= 90 for m in means)}/{len(draws)} draws >= 90, worst {means[worst]:.1f} "
                  f"at {({k: round(v, 2) for k, v in draws[worst].items()})}; {run['wall_s']:.0f} s", flush=True)
            print("   per draw: " + " ".join(f"{m:.0f}" for m in means), flush=True)


if __name__ == "__main__":
    main()
