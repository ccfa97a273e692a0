"""Running mean / variance of vector observations, kept inside the network so that checkpoints
and the exported ONNX model carry it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from palaestra.networks.constants import CLIP

FLOAT32_MAX = float(np.finfo(np.float32).max)


class NormalizerOverflow(ArithmeticError):
    """Observations too large for float32 statistics (their variance would be infinite, and every
    normalized value 0 from then on)."""


class Normalizer(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("var", torch.ones(size))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, batch: np.ndarray) -> None:
        """Merge a batch ``[n, size]`` into the running statistics (parallel Welford, in float64
        with numpy: a few rows at a time, it costs a fifth of torch's operations). On the CPU it
        writes into the buffers' own memory, which the numpy accelerator's acting reads."""
        if batch.shape[0] == 0:
            return
        on_cpu = self.mean.device.type == "cpu"
        mean, var, count = (t.numpy() if on_cpu else t.cpu().numpy() for t in (self.mean, self.var, self.count))
        x = np.asarray(batch, dtype=np.float64)
        n, before = float(x.shape[0]), float(count)
        total = before + n
        delta = x.mean(0) - mean
        m2 = var.astype(np.float64) * before + x.var(0) * n + delta * delta * (before * n / total)
        new_var = m2 / total
        if not (new_var <= FLOAT32_MAX).all():  # (NaN too) refused before anything changes
            element = int(np.argmax(~(new_var <= FLOAT32_MAX)))
            raise NormalizerOverflow(
                f"observation values up to {np.abs(x[:, element]).max():.3g} (element {element} of the vector "
                "observations) are too large to normalize: their variance overflows float32; scale them down in the "
                "environment")
        mean[...] = mean + delta * (n / total)  # in float64, rounded once into the float32 buffer
        var[...] = new_var
        count[...] = total
        if not on_cpu:  # (a GPU's buffers: copied back)
            for tensor, array in zip((self.mean, self.var, self.count), (mean, var, count)):
                tensor.copy_(torch.from_numpy(array))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp((x - self.mean) / torch.sqrt(self.var + 1e-8), -CLIP, CLIP)
