"""LSTM memory for PPO's actor and critic (``use_recurrent``, ``memory_size``, ``sequence_length``).

As in ML-Agents, the LSTM sits after the MLP body and before the heads, and the critic has a
memory of its own. ``memory_size`` is the actor's memory, the hidden and the cell state side by
side (``memory_size / 2`` units each): what the exported model carries in ``recurrent_in`` and
``recurrent_out``. The critic's memory has the same size, so an agent's stored memory is
``[actor h, actor c, critic h, critic c]``, ``2 × memory_size`` floats (:func:`stored_memory_size`).

Training runs on sequences of ``sequence_length`` rows, each starting from the memory stored
when its first row was acted on (ML-Agents long started every training sequence from zeros);
padding rows come after a sequence's last real row, so they never change its real outputs."""

from __future__ import annotations

import torch
from torch import nn


def stored_memory_size(memory_size: int) -> int:
    """An agent's stored memory: the actor's and the critic's."""
    return 2 * memory_size


class TwinLSTM(nn.Module):
    """The actor's and the critic's LSTMs over their towers' features."""

    def __init__(self, inputs: int, memory_size: int) -> None:
        super().__init__()
        if memory_size % 2:
            raise ValueError(f"memory_size must be even (hidden and cell state of equal size), got {memory_size}")
        self.memory_size = memory_size
        self.units = memory_size // 2
        self.cells = nn.ModuleList(nn.LSTM(inputs, self.units, batch_first=True) for _ in range(2))

    def forward(self, features: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``features`` ``[2, N, L, inputs]`` (actor, critic) over N sequences of L rows;
        ``memory`` ``[N, 2 × memory_size]`` at each sequence's start → outputs
        ``[2, N, L, memory_size / 2]`` and the memory after each sequence's last row."""
        outputs, memories = [], []
        u = self.units
        for tower, cell in enumerate(self.cells):
            start = memory[:, tower * self.memory_size:(tower + 1) * self.memory_size]
            state = (start[:, :u].unsqueeze(0).contiguous(), start[:, u:].unsqueeze(0).contiguous())
            out, (h, c) = cell(features[tower], state)
            outputs.append(out)
            memories += [h[0], c[0]]
        return torch.stack(outputs), torch.cat(memories, 1)

    def actor(self, features: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The actor's LSTM alone (the exported model): ``features`` ``[N, L, inputs]``,
        ``memory`` ``[N, memory_size]``."""
        u = self.units
        out, (h, c) = self.cells[0](features, (memory[:, :u].unsqueeze(0).contiguous(),
                                               memory[:, u:].unsqueeze(0).contiguous()))
        return out, torch.cat([h[0], c[0]], 1)
