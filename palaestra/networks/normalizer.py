"""Running mean / variance of vector observations, kept inside the network so that checkpoints
and the exported ONNX model carry it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from palaestra.networks.constants import CLIP


class Normalizer(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("var", torch.ones(size))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, batch: np.ndarray) -> None:
        """Merge a batch ``[n, size]`` into the running statistics (parallel Welford)."""
        if batch.shape[0] == 0:
            return
        if self.mean.device.type == "cpu":  # numpy on the buffers' memory: a fifth of torch's cost on a few rows
            self._update_numpy(np.asarray(batch, dtype=np.float64))
            return
        x = torch.as_tensor(batch, dtype=torch.float64, device=self.mean.device)  # beside the statistics (GPU)
        n = float(x.shape[0])
        batch_mean = x.mean(0)
        batch_var = x.var(0, unbiased=False)
        total = self.count.item() + n
        delta = batch_mean - self.mean.double()
        mean = self.mean.double() + delta * (n / total)
        m2 = self.var.double() * self.count.item() + batch_var * n + delta.pow(2) * self.count.item() * n / total
        self.mean.copy_(mean.float())
        self.var.copy_((m2 / total).float())
        self.count.fill_(total)

    def _update_numpy(self, x: np.ndarray) -> None:
        """The same merge as :meth:`update`, in float64, written into the buffers in place (the
        numpy accelerator's acting reads them)."""
        mean, var, count = self.mean.numpy(), self.var.numpy(), self.count.numpy()
        n, before = float(x.shape[0]), float(count)
        total = before + n
        batch_mean = x.mean(0)
        delta = batch_mean - mean
        m2 = var.astype(np.float64) * before + x.var(0) * n + delta * delta * (before * n / total)
        mean[...] = mean + delta * (n / total)  # in float64, rounded once into the float32 buffer
        var[...] = m2 / total
        count[...] = total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp((x - self.mean) / torch.sqrt(self.var + 1e-8), -CLIP, CLIP)
