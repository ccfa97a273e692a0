"""Where a 3DBall training run spends its time: environment stepping, network math (acting,
gradients, optimizer), and everything else (the trainer's own overhead: collection, GAE,
buffers, stats, the loop). Target: everything else <= 30% of the run.

Usage: python bench/profile_3dball.py [--steps 120000]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats

from common import run_palaestra

CONFIG = """
3DBall:
  normalize: true
  batch_size: 64
  buffer_size: 12000
  summary_freq: 12000
  time_horizon: 1000
  lambd: 0.99
  beta: 0.001
  max_steps: {steps}
"""

# (group, file suffix, function) — inclusive times of these calls make up each group.
GROUPS = {
    "environment stepping": [("vector_env.py", "step"), ("vector_env.py", "reset")],
    "network math": [
        ("numpy_network.py", "act"), ("numpy_network.py", "value"),
        ("ppo.py", "_accelerated_gradients"), ("optimizer.py", "wrapper"), ("numpy_adam.py", "step"),
        ("normalizer.py", "update"),
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=120_000)
    args = parser.parse_args()
    profiler = cProfile.Profile()
    loop_holder = {}

    profiler.enable()
    result = run_palaestra(CONFIG.format(steps=args.steps), "3DBall", "--cpu")
    profiler.disable()
    loop_holder.update(result)
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    totals = {}
    for group, targets in GROUPS.items():
        totals[group] = sum(
            ct for (file, _, name), (_, _, _, ct, _) in stats.items()
            if any(file.endswith(suffix) and name == fn for suffix, fn in targets)
        )
    loop = result["loop_s"]
    other = loop - sum(totals.values())
    print(f"3DBall PPO, {args.steps} steps, training loop {loop:.1f} s under cProfile "
          f"(whole run {result['wall_s']:.1f} s)")
    for group, seconds in [*totals.items(), ("everything else", other)]:
        print(f"  {group:22} {seconds:7.2f} s  {100 * seconds / loop:5.1f}%")


if __name__ == "__main__":
    main()
