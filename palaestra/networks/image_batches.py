"""Image encoders run on a bounded set of batch sizes.

oneDNN, which runs torch's convolutions on the CPU, builds and caches a kernel (a "primitive",
up to 1,024 of them) for every input shape it meets, and each holds several megabytes: 6 MB for
the simple encoder on 64 images of 84 x 84, 17 MB for resnet, about 30 MB near 330 images
(docs/benchmarks.md). A PPO update values a buffer whose length changes from update to update,
so a visual run met a new batch size every few updates and grew by gigabytes: VisualGridWorld
from 0.9 GB at 10k steps to 2.2 GB at 300k, still rising.

So an encoder sees a batch size from a short list: up to :data:`EXACT` images as they are (acting:
one row per agent deciding), more rounded up to one of four sizes per doubling (20, 24, 28, 32,
40, ...; at most a quarter more rows of zeros, whose outputs are dropped); and without a gradient
(value estimates, reward-signal estimates), batches over :data:`CHUNK` go through in chunks of
:data:`CHUNK`, which also bounds the memory of one convolution's activations over a large
buffer, the last chunk padded to at least :data:`EXACT` rows (left as they were, the few rows
left over met every size up to it: 14 more kernels in a 30k-step VisualGridWorld run). With a
gradient, the first :data:`KEPT_WITH_GRADIENT` sizes met go through as they are: a run's
mini-batches have one size (``batch_size``), which padding would only make dearer; a stream of
new sizes (a recurrent update's rows without their padding) is rounded up after those. Rows do
not interact in an encoder (no batch norm), so each row's features are what the whole batch
would give, up to the last bits of a differently blocked sum."""

from __future__ import annotations

from typing import Callable

import torch

EXACT = 16  # batch sizes up to this go through as they are (but a chunked batch's last chunk)
CHUNK = 64  # without a gradient, larger batches go through in chunks of this many rows
KEPT_WITH_GRADIENT = 8  # with a gradient, the first batch sizes met go through as they are

_sizes_with_gradient: set[int] = set()  # (this process's; a second thread may add the same one)


def bounded_size(n: int) -> int:
    """The batch size ``n`` rows are run at: ``n`` up to :data:`EXACT`, else the next size of the
    form m x 2^k with m in 4..7 (powers of two stay as they are)."""
    if n <= EXACT:
        return n
    step = 1 << (n.bit_length() - 3)  # a quarter of the power of two at or below n
    return -(-n // step) * step


def encode_in_bounded_batches(encode: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """``encode(images)``, with ``encode`` only ever seeing the batch sizes above. An export's
    trace calls ``encode`` on the batch as it is (the model's batch dimension stays free), and so
    does a GPU (whose convolutions keep nothing per shape here; chunks would only add launches)."""
    if torch.jit.is_tracing() or images.device.type != "cpu":
        return encode(images)
    n = images.shape[0]
    if n <= EXACT:
        return encode(images)
    if not torch.is_grad_enabled():
        if n <= CHUNK:
            return _padded(encode, images)
        return torch.cat([_padded(encode, images[start:start + CHUNK], at_least=EXACT) for start in range(0, n, CHUNK)])
    if n in _sizes_with_gradient or len(_sizes_with_gradient) < KEPT_WITH_GRADIENT:
        _sizes_with_gradient.add(n)
        return encode(images)
    return _padded(encode, images)


def _padded(encode: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, at_least: int = 0) -> torch.Tensor:
    n = images.shape[0]
    size = bounded_size(max(n, at_least))
    if size == n:
        return encode(images)
    padding = images.new_zeros((size - n, *images.shape[1:]))
    return encode(torch.cat([images, padding]))[:n]
