"""One GAIL discriminator step (loss, gradient penalty, Adam), numpy path against autograd's,
alternating, minimum of the repeats. One thread for torch and numpy's BLAS.

Usage: python bench/gail_step.py [--hidden 64] [--batch 256] [--repeats 5]
CartPole-v1's discriminator (4 observations, one branch of 2 actions, use_actions) on 4 episodes of
the scripted expert; the defaults are bench/gail_imitation.py's sizes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from palaestra.demos.record import record
from palaestra.envs.sources import make_env
from palaestra.rewards.gail import GAILSignal
from palaestra.networks.optim import FlatStateAdam
from palaestra.settings import GAILSettings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200, help="discriminator steps per timing")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    threadpool_limits(1, user_api="blas")
    rng = np.random.default_rng(0)
    env = make_env("CartPole-v1", seed=1)
    spec = env.behavior_specs["CartPole-v1"]
    batch = {"obs_0": rng.normal(0.0, 0.5, (args.batch, 4)).astype(np.float32),  # the policy's rows
             "continuous": np.zeros((args.batch, 0), np.float32),
             "discrete": rng.integers(0, 2, (args.batch, 1)).astype(np.int32), "done": np.zeros(args.batch, np.float32)}
    with tempfile.TemporaryDirectory() as d:
        demo = record(env, {"CartPole-v1": "palaestra.demos.experts:cartpole"}, episodes=4, out=Path(d), seed=1)[0].path
        settings = GAILSettings(demo_path=str(demo), hidden_units=args.hidden, use_actions=True)
        numpy_signal = GAILSignal(settings, spec, torch.device("cpu"))
        autograd_signal = GAILSignal(settings, spec, torch.device("cpu"))
        autograd_signal.trains_in_numpy = False
        autograd_signal.optimizer = FlatStateAdam(autograd_signal.model, settings.learning_rate)
    times: dict[str, list[float]] = {"numpy": [], "autograd": []}
    for _ in range(args.repeats):
        for name, signal in (("numpy", numpy_signal), ("autograd", autograd_signal)):
            signal.update(batch)  # first calls off the clock
            start = time.perf_counter()
            for _ in range(args.steps):
                signal.update(batch)
            times[name].append((time.perf_counter() - start) / args.steps * 1e3)
    best = {name: min(t) for name, t in times.items()}
    print(f"GAIL discriminator step, CartPole-v1 (4 observations + 2 actions + done), {args.hidden}x2 swish, "
          f"batch {args.batch} + {args.batch} expert: numpy {best['numpy']:.3f} ms, autograd {best['autograd']:.3f} ms "
          f"({best['autograd'] / best['numpy']:.1f}x)")


if __name__ == "__main__":
    main()
