"""The on-policy experience buffer: flat, preallocated numpy arrays that grow by doubling."""

from __future__ import annotations

import numpy as np


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
