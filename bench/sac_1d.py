"""SAC on ML-Agents' 1-D test environment with ML-Agents' own SAC test config: steps/s.

ML-Agents cannot be installed beside a modern stack, so its figure is quoted, not re-measured:
ML-Agents 1.1.0 trains this setup at about 300 steps/s on a 2-core machine like this one. The
config is the shipped SAC config's 1D section (ML-Agents' test config: batch 8, 16 hidden units,
one update per step), with max_steps raised.

Usage: python bench/sac_1d.py [--steps 5000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import bench_1d

MLAGENTS_STEPS_PER_S = 300

CONFIG = (Path(__file__).resolve().parent.parent / "config" / "sac_trainer_config.yaml").read_text()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5_000)
    args = parser.parse_args()
    bench_1d("SAC", CONFIG, "max_steps: 1000\n", args.steps, MLAGENTS_STEPS_PER_S)


if __name__ == "__main__":
    main()
