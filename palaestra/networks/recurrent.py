"""LSTM memory for recurrent policies (``use_recurrent``, ``memory_size``, ``sequence_length``).

As in ML-Agents, the LSTM sits after the MLP body and before the heads, and the critics have
memories of their own; PPO's ``lstm_placement: before_layers`` puts it before the body instead
(sb3-contrib's RecurrentPPO: the LSTM reads the observations, the layers read its output).
``memory_size`` is one network's memory, its hidden and cell states side by side
(``memory_size / 2`` units each); the actor's is what the exported model carries in
``recurrent_in`` and ``recurrent_out``.

- PPO: the actor's and the critic's LSTMs (two towers); both run while acting, so an agent's
  stored memory is ``[actor h, actor c, critic h, critic c]`` (:func:`stored_memory_size`).
- SAC: the actor's LSTM runs while acting (one tower); the two Q networks' LSTMs run over the
  experience when it arrives (algorithms/sac.py), which records their memories too.

Training runs on sequences of ``sequence_length`` rows, each starting from the memory stored
when its first row was acted on (ML-Agents long started every training sequence from zeros);
padding rows come after a sequence's last real row, so they never change its real outputs."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from palaestra.networks.torch_private import lstm_step


def stored_memory_size(memory_size: int, towers: int = 2) -> int:
    """An agent's stored memory: each tower's."""
    return towers * memory_size


class TwinLSTM(nn.Module):
    """One LSTM per tower (PPO's actor and critic; SAC's two critics; SAC's actor alone) over the
    towers' features. A memory row holds each tower's ``memory_size`` floats in tower order."""

    def __init__(self, inputs: int, memory_size: int, towers: int = 2) -> None:
        super().__init__()
        if memory_size % 2:
            raise ValueError(f"memory_size must be even (hidden and cell state of equal size), got {memory_size}")
        self.memory_size = memory_size
        self.units = memory_size // 2
        self.cells = nn.ModuleList(nn.LSTM(inputs, self.units, batch_first=True) for _ in range(towers))

    def _hidden_and_cell(self, memory: torch.Tensor, tower: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A tower's hidden and cell states ``[N, units]`` from memory rows."""
        start = memory[:, tower * self.memory_size:(tower + 1) * self.memory_size]
        return start[:, :self.units], start[:, self.units:]

    def _state(self, memory: torch.Tensor, tower: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The same as ``nn.LSTM`` takes them: ``[1, N, units]`` each."""
        h, c = self._hidden_and_cell(memory, tower)
        return h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()

    def forward(self, features: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``features`` ``[towers, N, L, inputs]`` over N sequences of L rows; ``memory``
        ``[N, towers × memory_size]`` at each sequence's start → outputs
        ``[towers, N, L, memory_size / 2]`` and the memory after each sequence's last row."""
        outputs, memories = [], []
        for tower, cell in enumerate(self.cells):
            if features.shape[2] == 1:  # acting: one step, through the cell's kernel (3x faster)
                h, c = lstm_step(cell, features[tower, :, 0], *self._hidden_and_cell(memory, tower))
                outputs.append(h.unsqueeze(1))
                memories += [h, c]
                continue
            out, (h, c) = cell(features[tower], self._state(memory, tower))
            outputs.append(out)
            memories += [h[0], c[0]]
        return torch.stack(outputs), torch.cat(memories, 1)

    def final_memory(self, features: torch.Tensor, memory: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The memory after each sequence's first ``lengths`` rows (the rest is padding)."""
        memories = []
        for tower, cell in enumerate(self.cells):
            packed = pack_padded_sequence(features[tower], lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, (h, c) = cell(packed, self._state(memory, tower))
            memories += [h[0], c[0]]
        return torch.cat(memories, 1)

    def actor(self, features: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first tower's LSTM alone (the actor's, in the exported model): ``features``
        ``[N, L, inputs]``, ``memory`` ``[N, memory_size]``."""
        out, (h, c) = self.cells[0](features, self._state(memory, 0))
        return out, torch.cat([h[0], c[0]], 1)
