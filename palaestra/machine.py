"""What a run sets up on the machine before it trains: the random seeds, the torch device and
the threads numpy's BLAS and torch may use."""

from __future__ import annotations

import os
import random
from typing import Mapping

import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from palaestra.envs.base import BehaviorSpec
from palaestra.envs.observations import is_image
from palaestra.networks.constants import GPU_NETWORK_UNITS, WIDE_NETWORK_UNITS
from palaestra.options import RunOptions, UsageError


def seed_everything(options: RunOptions) -> int:
    """Seed Python, numpy and torch with --seed (-1: a random one); return the seed used."""
    # (-1: drawn from the system's entropy, not numpy's global generator, which an in-process
    # caller's runs leave as they found it: each would draw the same)
    seed = options.seed if options.seed != -1 else int(np.random.default_rng().integers(0, 10000))
    seed_streams(seed)
    return seed


def seed_streams(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resumed_streams_seed(seed: int, step: int) -> int:
    """The seed of a run's random streams from ``step`` on: a resumed run seeded as at step 0
    started its environment from the first run's start states and drew its first run's action
    noise and mini-batches again, on every resume of a job preempted again and again."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def has_images(behavior_specs: Mapping[str, BehaviorSpec]) -> bool:
    return any(is_image(shape) for spec in behavior_specs.values() for shape in spec.observation_shapes)


def check_device(options: RunOptions) -> None:
    """A --torch-device that names a GPU this machine does not offer is a UsageError, found before
    an environment starts."""
    requested = "cpu" if options.cpu else options.torch_device
    if not requested.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        why = ("this torch was built without CUDA (a CPU-only build)" if torch.version.cuda is None else
               "torch finds no CUDA GPU (no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides them)")
        raise UsageError(f"--torch-device {requested}: {why}; use --torch-device cpu, or auto to take a GPU "
                         "only where there is one")
    count = torch.cuda.device_count()
    index = int(requested[5:]) if ":" in requested else 0
    if index >= count:
        raise UsageError(f"--torch-device {requested}: this machine has {count} CUDA GPU(s), "
                         f"cuda:0 to cuda:{count - 1}")


def choose_device(options: RunOptions, behavior_specs: Mapping[str, BehaviorSpec],
                  widest_hidden_units: int) -> tuple[torch.device, str]:
    """Where the run's networks train, and why (for the run's first lines). --torch-device auto
    takes a CUDA GPU only where it trains faster: for behaviors that see images, or networks of
    GPU_NETWORK_UNITS hidden units or more; policies over vectors with narrower networks (MLPs,
    LSTMs) train faster on the CPU, whose small steps a GPU spends launching kernels (measured
    on an H200 in docs/benchmarks.md, "Which device trains faster"). ML-Agents takes the GPU
    whenever there is one."""
    if options.cpu:
        return torch.device("cpu"), "--cpu"
    requested = options.torch_device
    if requested != "auto":
        return torch.device(requested), f"--torch-device {requested}"
    if not torch.cuda.is_available():
        return torch.device("cpu"), "no CUDA GPU"
    if has_images(behavior_specs):
        return torch.device("cuda"), "auto: image observations train faster on the GPU"
    if widest_hidden_units >= GPU_NETWORK_UNITS:
        return torch.device("cuda"), f"auto: networks of {widest_hidden_units} hidden units train faster on the GPU"
    return torch.device("cpu"), (f"auto: vector observations and networks under {GPU_NETWORK_UNITS} hidden units "
                                 "train faster on the CPU; --torch-device cuda trains on the GPU")


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# limit_threads' choice, which image_towers_on_two_threads reads: the second tower's torch threads
# (0: the towers one after the other)
_second_tower_threads = 0
# torch's thread count and the BLAS libraries' limits before limit_threads first changed them
# (restore_threads puts them back, for a run called in-process from a script of the user's)
_before_first_run: tuple[int, threadpool_limits] | None = None


def limit_threads(device: torch.device, widest_hidden_units: int, torch_threads: int = 0,
                  numpy_trains: bool = False, images: bool = False) -> str:
    """Give the library that does the training arithmetic on the CPU the training threads
    (``torch_threads``, --torch-threads, or where that is 0 one thread or every core by the widest
    network and whether a behavior sees ``images``) and the other library one; return what was
    set, for the log. numpy's BLAS trains where ``numpy_trains`` (every behavior's updates run on
    the CPU accelerator), torch otherwise. Where torch trains image behaviors on two or more
    threads, each network's two image towers (PPO's actor and critic, SAC's two critics) encode at
    once, on half the threads each (an odd count's extra one to the first tower, whose thread also
    runs the rest of the update; networks/visual.py; :func:`image_towers_on_two_threads`)."""
    global _second_tower_threads, _before_first_run
    if _before_first_run is None:
        _before_first_run = (torch.get_num_threads(), threadpool_limits(limits=None))  # (None: notes them, sets none)
    # Only one of the two libraries ever gets more than one thread: their idle workers spin on
    # each other's cores (numpy's BLAS on two threads beside torch's two made a SAC step 10x slower)
    # Measured (docs/benchmarks.md): narrow networks train faster on one thread; the extra threads
    # cost more in synchronization than they gain at these sizes. From WIDE_NETWORK_UNITS (SAC's
    # usual 256x256, batch 256) they train on every core, and so do image encoders, whose
    # convolutions are most of their update.
    wide = widest_hidden_units >= WIDE_NETWORK_UNITS or images
    threads = torch_threads or (usable_cores() if wide else 1)
    _second_tower_threads = 0
    if device.type != "cpu":  # torch's CPU threads only feed the GPU: its own default
        threadpool_limits(1, user_api="blas")
        return "numpy's BLAS 1, torch its default (training on the GPU)"
    if numpy_trains:
        torch.set_num_threads(1)
        threadpool_limits(threads, user_api="blas")
        return f"numpy's BLAS {threads} (every behavior trains on the CPU accelerator), torch 1"
    threadpool_limits(1, user_api="blas")
    if images and threads >= 2:
        # torch's threads split each small convolution no faster than one thread runs it (SB3's
        # CNN PPO: as fast on two as on one); two towers at once, each on its own core, are
        _second_tower_threads = threads // 2
        torch.set_num_threads(threads - threads // 2)
        split = (f"{threads // 2} on each of two threads" if threads % 2 == 0 else
                 f"{threads - threads // 2} and {threads // 2} on two threads")
        return f"torch {split} (image encoders two at once), numpy's BLAS 1"
    torch.set_num_threads(threads)  # set either way: a process may train twice
    return f"torch {threads}, numpy's BLAS 1"


def restore_threads() -> None:
    """Torch's thread count and the BLAS libraries' limits as they were before this process's
    first run (palaestra.cli.main called from a script: the script's own torch keeps its threads)."""
    global _before_first_run
    if _before_first_run is not None:
        torch_threads, blas = _before_first_run
        torch.set_num_threads(torch_threads)
        blas.restore_original_limits()
        _before_first_run = None


def image_towers_on_two_threads() -> bool:
    """Whether the networks' image towers should encode two at once (limit_threads' last choice)."""
    return _second_tower_threads > 0


def second_tower_threads() -> int:
    """torch's threads for the second image tower's thread (limit_threads' last choice; 0: none)."""
    return _second_tower_threads


def blas_threads() -> int:
    """The threads numpy's BLAS may use now."""
    return max((pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"), default=1)


def blas_has_the_threads() -> bool:
    """Whether numpy's BLAS may use at least as many threads as torch (limit_threads gave it the
    training threads, or both have one)."""
    return blas_threads() >= torch.get_num_threads()

