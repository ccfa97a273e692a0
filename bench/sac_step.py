"""Time one SAC gradient step (``SAC._gradient_step``: sampling, gradients, Adam, Polyak) for a
given network width and batch size, on the accelerator's numpy layers (networks/accelerator.py)
or on autograd, with the threads a run would give them (palaestra/machine.py: the training
threads to numpy's BLAS on the accelerator, to torch on autograd; the other library one).

Usage: python bench/sac_step.py [--hidden 16] [--layers 2] [--batch 8] [--ops auto|numpy|autograd]
                                [--torch-threads 1] [--steps 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from palaestra.algorithms.auxiliary import StatsMean
from palaestra.algorithms.sac import SAC
from palaestra.envs.base import ActionSpec, BehaviorSpec
from palaestra.machine import limit_threads
from palaestra.networks.numpy_adam import NumpyAdam
from palaestra.settings import load_trainer_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--ops", choices=("auto", "numpy", "autograd"), default="auto")
    parser.add_argument("--torch-threads", type=int, default=1, help="the training threads, as mlagents-learn's flag")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.yaml"
        path.write_text(f"B:\n  trainer: sac\n  hidden_units: {args.hidden}\n  num_layers: {args.layers}\n"
                        f"  batch_size: {args.batch}\n")
        settings = load_trainer_config(path).for_behavior("B")
    spec = BehaviorSpec(((3,),), ActionSpec(continuous_size=1))  # Pendulum's shapes
    sac = SAC(spec, settings, torch.device("cpu"), np.random.default_rng(0))
    if args.ops == "numpy" and not sac._accelerated:
        sac._accelerated = True
        sac._accelerate()
        sac._numpy_adam = NumpyAdam([sac.flat.parameter], sac.optimizer, flat=sac.flat)
    elif args.ops == "autograd":
        sac._accelerated, sac._numpy_adam = False, None
    threads = limit_threads(torch.device("cpu"), args.hidden, args.torch_threads, numpy_trains=sac.trains_in_numpy)
    sac._path_chosen = True  # as chosen here
    rng = np.random.default_rng(1)
    n = 5000
    sac.buffer.add(obs_0=rng.normal(size=(n, 3)).astype(np.float32), next_obs_0=rng.normal(size=(n, 3)).astype(np.float32),
                   continuous=rng.uniform(-0.9, 0.9, (n, 1)).astype(np.float32), discrete=np.zeros((n, 0), np.int64),
                   allowed=np.ones((n, 0), bool), next_allowed=np.ones((n, 0), bool),
                   env_reward=rng.normal(size=n).astype(np.float32), done=rng.random(n) < 0.05)
    for _ in range(30):  # warm-up: first calls, allocations
        sac._gradient_step(sac.buffer.sample(args.batch, sac.rng), StatsMean())
    start = time.perf_counter()
    for _ in range(args.steps):
        sac._gradient_step(sac.buffer.sample(args.batch, sac.rng), StatsMean())
    ms = (time.perf_counter() - start) / args.steps * 1e3
    ops = "numpy" if sac._accelerated else "autograd"
    print(f"hidden {args.hidden} x {args.layers}, batch {args.batch}, {ops} operations, threads: {threads}: "
          f"{ms:.2f} ms per gradient step")


if __name__ == "__main__":
    main()
