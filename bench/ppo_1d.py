"""PPO on ML-Agents' 1-D test environment with ML-Agents' own PPO test config: steps/s.

ML-Agents cannot be installed beside a modern stack (it pins Python <3.9-era numpy, protobuf
and TensorFlow/torch), so its figure is quoted, not re-measured: ML-Agents 1.1.0 trains this
setup at about 1,100 steps/s on a 2-core machine like this one.

Usage: python bench/ppo_1d.py [--steps 20000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import bench_1d

MLAGENTS_STEPS_PER_S = 1100

# The shipped config's 1D section is ML-Agents' PPO test config; only max_steps is raised.
CONFIG = (Path(__file__).resolve().parent.parent / "config" / "trainer_config.yaml").read_text()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20_000)
    args = parser.parse_args()
    bench_1d("PPO", CONFIG, "max_steps: 2000\n", args.steps, MLAGENTS_STEPS_PER_S)


if __name__ == "__main__":
    main()
