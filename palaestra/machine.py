"""What a run sets up on the machine before it trains: the random seeds, the torch device and
the threads numpy's BLAS and torch may use."""

from __future__ import annotations

import os
import random
from typing import Mapping

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from palaestra.envs.base import BehaviorSpec
from palaestra.networks.constants import WIDE_NETWORK_UNITS
from palaestra.options import RunOptions


def seed_everything(options: RunOptions) -> int:
    """Seed Python, numpy and torch with --seed (-1: a random one); return the seed used."""
    seed = options.seed if options.seed != -1 else int(np.random.randint(0, 10000))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


def choose_device(options: RunOptions) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() and not options.cpu else "cpu")


def device_advice(device: torch.device, behavior_specs: Mapping[str, BehaviorSpec]) -> str | None:
    """What to tell a user who trains only vector observations on a GPU: that the CPU is usually
    faster for them (measured in docs/benchmarks.md: an LSTM policy at 1,330 steps/s on an H200
    against about 2,400 on two CPU cores). None otherwise."""
    images = any(len(shape) == 3 for spec in behavior_specs.values() for shape in spec.observation_shapes)
    if device.type == "cpu" or images:
        return None
    return ("every observation is a vector: such policies usually train faster on the CPU (--cpu) than on "
            "a GPU, which spends their small steps launching kernels (docs/outputs.md)")


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def limit_threads(device: torch.device, widest_hidden_units: int, torch_threads: int = 0) -> None:
    """Give numpy's BLAS one thread, and torch ``torch_threads`` (--torch-threads), or where that is
    0 one thread or every core by the widest network."""
    # numpy's BLAS only ever sees small products (acting on one step's agents, the CPU fast paths
    # of narrow networks): one thread, whose workers would otherwise spin on the cores torch needs.
    threadpool_limits(1, user_api="blas")
    if device.type == "cpu":
        # Measured (docs/benchmarks.md): narrow networks train faster on one torch thread; the
        # extra threads cost more in synchronization than they gain at these sizes. From
        # WIDE_NETWORK_UNITS (SAC's usual 256x256, batch 256) torch trains them on every core.
        wide = widest_hidden_units >= WIDE_NETWORK_UNITS
        automatic = usable_cores() if wide else 1
        torch.set_num_threads(torch_threads or automatic)  # set either way: a process may train twice
