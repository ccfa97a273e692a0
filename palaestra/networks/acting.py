"""The policy an environment worker acts with, built from what the trainer published
(``WeightLayout``): the accelerator's numpy network for plain MLPs (torch is then never imported
in the worker), otherwise a copy of the torch module on one thread, its weights bound to the
worker's copy of the published ones."""

from __future__ import annotations

import numpy as np

from palaestra.networks.numpy_network import MLPNetwork, WeightLayout, weight_views


def make_actor(layout: WeightLayout, weights: np.ndarray, rng: np.random.Generator, in_worker: bool = True):
    """An object with ``act(observations, allowed, deterministic)`` over ``weights``, a flat float32
    buffer laid out as ``layout`` that the worker refreshes in place. ``in_worker=False``: one of
    several actors of a layout in the trainer's process (self-play's ghosts), which get a module
    each and leave the process's torch threads and seed as they are."""
    views = weight_views(weights, layout)
    if layout.network is not None:
        return MLPNetwork(layout.network, list(views.values()), rng)
    import copy

    import torch

    from palaestra.networks.torch_acting import TorchActor, bind_weights

    module = layout.module
    if in_worker:
        torch.set_num_threads(1)  # one worker per core: the workers together use the machine
        torch.manual_seed(int(rng.integers(2**62)))
    else:
        module = copy.deepcopy(module)  # (bound to this actor's weights alone)
    bind_weights(module, views)
    return TorchActor(module)
