"""The experience buffers: named columns of preallocated numpy arrays, each in its own dtype (an
image observation's column stays uint8). The observations are one column per observation,
``obs_0``, ``obs_1``, ... (:func:`observation_columns`; :func:`observations` reads them back)."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
import torch


def observation_columns(observations: Sequence[np.ndarray], prefix: str = "obs") -> dict[str, np.ndarray]:
    return {f"{prefix}_{i}": o for i, o in enumerate(observations)}


def observations(columns: Mapping, prefix: str = "obs") -> list:
    """The observation columns ``{prefix}_0``, ``{prefix}_1``, ... of a batch, in order."""
    out = []
    while f"{prefix}_{len(out)}" in columns:
        out.append(columns[f"{prefix}_{len(out)}"])
    return out


class RolloutBuffer:
    """Rows of experience as named arrays ``[rows, ...]``; ``add`` appends whole batches."""

    def __init__(self) -> None:
        self.size = 0
        self.data: dict[str, np.ndarray] = {}

    def add(self, **columns: np.ndarray) -> None:
        rows = next(iter(columns.values())).shape[0]
        if not self.data:
            self.data = {k: np.zeros((max(rows, 1024), *v.shape[1:]), v.dtype) for k, v in columns.items()}
        capacity = next(iter(self.data.values())).shape[0]
        if self.size + rows > capacity:
            new_capacity = max(2 * capacity, self.size + rows)
            for k, v in self.data.items():
                grown = np.zeros((new_capacity, *v.shape[1:]), v.dtype)
                grown[: self.size] = v[: self.size]
                self.data[k] = grown
        for k, v in columns.items():
            self.data[k][self.size : self.size + rows] = v
        self.size += rows

    def view(self) -> dict[str, np.ndarray]:
        return {k: v[: self.size] for k, v in self.data.items()}

    def clear(self) -> None:
        self.size = 0


def physical_memory() -> int | None:
    """This machine's memory in bytes, where the system says (None elsewhere)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def observation_bytes(shapes: Sequence[tuple[int, ...]]) -> int:
    """Bytes of one agent's observations as the buffers store them: images as uint8, the rest
    as float32."""
    return sum(int(np.prod(shape)) * (1 if len(shape) == 3 else 4) for shape in shapes)


def replay_buffer_problem(capacity: int, row_bytes: int) -> str | None:
    """Why a replay buffer of ``capacity`` rows of at least ``row_bytes`` cannot fit in this
    machine's memory, or None: said before training, not at the first transition stored."""
    memory = physical_memory()
    if memory is None or capacity * row_bytes <= memory:
        return None
    return (f"{capacity:,} transitions of at least {row_bytes:,} bytes need {capacity * row_bytes / 2**30:,.1f} GiB, "
            f"more than this machine's {memory / 2**30:,.1f} GiB of memory")


class ReplayBuffer:
    """SAC's experience replay: transitions in preallocated arrays used as a ring (the oldest
    transition is overwritten once ``capacity`` is reached), appended and sampled in batches.

    Columns: the observations ``obs_i`` and ``next_obs_i``, ``continuous``, ``discrete``, ``allowed``, ``next_allowed``,
    ``env_reward`` and ``done`` (the episode truly ended after this transition; a step-limit
    interruption is not done, so its value bootstraps)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = 0
        self.next = 0  # where the next transition goes
        self.data: dict[str, np.ndarray] = {}

    def add(self, **columns: np.ndarray) -> None:
        rows = next(iter(columns.values())).shape[0]
        if not self.data:
            try:
                self.data = {k: np.zeros((self.capacity, *v.shape[1:]), v.dtype) for k, v in columns.items()}
            except MemoryError:  # (numpy's own message names a shape, not the setting that made it)
                row = sum(int(np.prod(v.shape[1:])) * v.dtype.itemsize for v in columns.values())
                raise MemoryError(f"the replay buffer does not fit in memory: buffer_size {self.capacity:,} "
                                  f"transitions of {row:,} bytes is {self.capacity * row / 2**30:,.1f} GiB; "
                                  "lower buffer_size") from None
        if rows > self.capacity:  # only the newest capacity rows survive anyway
            columns = {k: v[-self.capacity :] for k, v in columns.items()}
            rows = self.capacity
        first = min(rows, self.capacity - self.next)  # up to the end of the ring, then wrap
        for k, v in columns.items():
            column = self.data[k]
            column[self.next : self.next + first] = v[:first]
            column[: rows - first] = v[first:]
        self.next = (self.next + rows) % self.capacity
        self.size = min(self.size + rows, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``batch_size`` transitions drawn uniformly with replacement."""
        idx = rng.integers(0, self.size, batch_size)
        return {k: v[idx] for k, v in self.data.items()}

    def sample_sequences(self, sequences: int, sequence_length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``sequences`` whole sequences (rollout/sequences.py: blocks of ``sequence_length``
        rows, which a capacity that is a multiple of it keeps in one piece), drawn uniformly with
        replacement, their rows in order."""
        starts = rng.integers(0, self.size // sequence_length, sequences) * sequence_length
        idx = (starts[:, None] + np.arange(sequence_length)[None, :]).reshape(-1)
        return {k: v[idx] for k, v in self.data.items()}

    def state_dict(self) -> dict:
        """The stored transitions, oldest first, as a checkpoint-ready dict."""
        order = np.arange(self.size) if self.size < self.capacity else np.roll(np.arange(self.capacity), -self.next)
        return {"capacity": self.capacity, "columns": {k: v[order] for k, v in self.data.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Load ``state_dict``'s or ``tensor_state``'s form (columns of numpy arrays or tensors,
        whole or in parts)."""
        self.size, self.next, self.data = 0, 0, {}
        for part in column_parts(state["columns"]):
            if next(iter(part.values())).shape[0]:
                self.add(**part)

    def tensor_state(self) -> dict:
        """The stored transitions, oldest first, as checkpoint files hold them: each column a list
        of tensors over the ring's two parts (the oldest rows, then the newest), not a reordered
        copy, which would add the whole buffer's size to the memory a save takes. The tensors are
        views of the buffer itself: save them before it changes."""
        if self.size < self.capacity or self.next == 0:
            parts = [slice(0, self.size)]
        else:
            parts = [slice(self.next, self.capacity), slice(0, self.next)]
        return {"capacity": self.capacity,
                "columns": {k: [torch.from_numpy(v[part]) for part in parts] for k, v in self.data.items()}}


def column_parts(columns: Mapping) -> list[dict[str, np.ndarray]]:
    """A saved buffer's columns as consecutive parts, oldest first, numpy arrays: each column a
    list of parts (``ReplayBuffer.tensor_state``) or one array or tensor (files saved before)."""
    lists = {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in columns.items()}
    counts = {len(v) for v in lists.values()}
    if len(counts) > 1:
        raise ValueError(f"columns saved in different numbers of parts: {sorted(counts)}")
    numpy = {k: [p.numpy() if isinstance(p, torch.Tensor) else np.asarray(p) for p in v] for k, v in lists.items()}
    return [{k: v[i] for k, v in numpy.items()} for i in range(counts.pop() if counts else 0)]
