"""PPO on ML-Agents' 1-D test environment with ML-Agents' own PPO test config: steps/s.

ML-Agents cannot be installed beside a modern stack (it pins Python <3.9-era numpy, protobuf
and TensorFlow/torch), so its figure is quoted, not re-measured: ML-Agents 1.1.0 trains this
setup at about 1,100 steps/s on a 2-core machine like this one.

Usage: python bench/ppo_1d.py [--steps 20000]
"""

from __future__ import annotations

import argparse

from common import run_palaestra

MLAGENTS_STEPS_PER_S = 1100

CONFIG = """
1D:
  trainer: ppo
  batch_size: 16
  beta: 5.0e-3
  buffer_size: 64
  epsilon: 0.2
  hidden_units: 32
  lambd: 0.95
  learning_rate: 5.0e-3
  learning_rate_schedule: constant
  max_steps: {steps}
  memory_size: 16
  normalize: false
  num_epoch: 3
  num_layers: 1
  time_horizon: 64
  sequence_length: 64
  summary_freq: 500
  use_recurrent: false
  reward_signals:
    extrinsic: {{strength: 1.0, gamma: 0.99}}
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20_000)
    args = parser.parse_args()
    rows = []
    for env in ("Simple1DDiscrete", "Simple1DContinuous"):
        r = run_palaestra(CONFIG.format(steps=args.steps), env, "--cpu")
        rows.append((env, args.steps / r["loop_s"], args.steps / r["wall_s"]))
    print(f"PPO on the 1-D test environment, ML-Agents' test config, {args.steps} steps")
    print(f"{'env':22} {'steps/s (loop)':>15} {'steps/s (whole run)':>20} {'vs ML-Agents 1.1.0':>19}")
    for env, loop, wall in rows:
        print(f"{env:22} {loop:15.0f} {wall:20.0f} {loop / MLAGENTS_STEPS_PER_S:18.1f}x")


if __name__ == "__main__":
    main()
