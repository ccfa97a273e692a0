"""PPO on ML-Agents' 1-D test environment with ML-Agents' own PPO test config: steps/s.

ML-Agents cannot be installed beside a modern stack (it pins Python <3.9-era numpy, protobuf
and TensorFlow/torch), so its figure is quoted, not re-measured: ML-Agents 1.1.0 trains this
setup at about 1,100 steps/s on a 2-core machine like this one.

Usage: python bench/ppo_1d.py [--steps 20000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import run_palaestra

MLAGENTS_STEPS_PER_S = 1100

# The shipped config's 1D section is ML-Agents' PPO test config; only max_steps is raised.
CONFIG = (Path(__file__).resolve().parent.parent / "config" / "trainer_config.yaml").read_text()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20_000)
    args = parser.parse_args()
    rows = []
    for env in ("Simple1DDiscrete", "Simple1DContinuous"):
        r = run_palaestra(CONFIG.replace("max_steps: 2000\n", f"max_steps: {args.steps}\n"), env, "--cpu")
        rows.append((env, args.steps / r["loop_s"], args.steps / r["wall_s"]))
    print(f"PPO on the 1-D test environment, ML-Agents' test config, {args.steps} steps")
    print(f"{'env':22} {'steps/s (loop)':>15} {'steps/s (whole run)':>20} {'vs ML-Agents 1.1.0':>19}")
    for env, loop, wall in rows:
        print(f"{env:22} {loop:15.0f} {wall:20.0f} {loop / MLAGENTS_STEPS_PER_S:18.1f}x")


if __name__ == "__main__":
    main()
