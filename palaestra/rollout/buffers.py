"""The experience buffers: named columns of preallocated numpy arrays, each in its own dtype (an
image observation's column stays uint8). The observations are one column per observation,
``obs_0``, ``obs_1``, ... (:func:`observation_columns`; :func:`observations` reads them back)."""

from __future__ import annotations

import collections
import os
from typing import Mapping, Sequence

import numpy as np
import torch

SHARED_FROM_BYTES = 1024  # the replay buffer stores the next observations of rows this large once
TAIL_BLOCK_BYTES = 16 * 2**20  # the tails' storage grows and shrinks by blocks of about this size
LOAD_ROWS = 4096  # a saved replay buffer is added this many rows at a time


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


def replay_row_bytes(shapes: Sequence[tuple[int, ...]], time_horizon: int) -> int:
    """The fewest bytes a replay row's observations and next observations take: one copy and a
    1/``time_horizon`` share where the next ones are stored once (a segment ends, and keeps its
    next observations apart, at least every ``time_horizon`` steps), two copies elsewhere."""
    sizes = [observation_bytes([shape]) for shape in shapes]
    return int(sum(size * (1 + 1 / time_horizon) if size >= SHARED_FROM_BYTES else 2 * size for size in sizes))


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
    interruption is not done, so its value bootstraps).

    Each next observation of ``shared_from_bytes`` or more (an image) is stored once. A
    transition's next observations are, but at the last step of a segment, the observations of
    the row added right after it: those rows say so (``follows``, found by comparing the bytes as
    rows are added) and their next observations are read from the following row. The others' go
    to :class:`_Tails`, a queue in the order of their rows. So images, most of a visual replay
    buffer's memory, take about half of what storing both would (ML-Agents stored both, as
    float32)."""

    def __init__(self, capacity: int, shared_from_bytes: int = SHARED_FROM_BYTES) -> None:
        self.capacity = capacity
        # next observations of smaller rows are stored as columns: sharing them saves little, and
        # reading them back costs each sample about a third more (measured with 8 floats)
        self.shared_from_bytes = shared_from_bytes
        self._empty()

    def _empty(self) -> None:
        self.size = 0
        self.next = 0  # where the next transition goes
        self.data: dict[str, np.ndarray] = {}  # every column but the next observations
        self.pairs: list[tuple[str, str]] = []  # (obs_i, next_obs_i), the next ones stored once
        self.follows = np.zeros(0, bool)  # a row whose next observations are the next row's
        self.tail_at = np.zeros(0, np.int64)  # the others': their next observations' number in the tails
        self.tails = _Tails(self.capacity)

    def add(self, **columns: np.ndarray) -> None:
        rows = next(iter(columns.values())).shape[0]
        if not self.data:
            self.pairs = [(o, k) for k, v in columns.items() if k.startswith("next_obs_")
                          and (o := f"obs_{k[len('next_obs_'):]}") in columns
                          and (columns[o].dtype, columns[o].shape[1:]) == (v.dtype, v.shape[1:])
                          and v.dtype.itemsize * int(np.prod(v.shape[1:])) >= self.shared_from_bytes]
            stored = {k: v for k, v in columns.items() if k not in {n for _, n in self.pairs}}
            try:
                self.data = {k: np.zeros((self.capacity, *v.shape[1:]), v.dtype) for k, v in stored.items()}
                if self.pairs:
                    self.follows, self.tail_at = np.zeros(self.capacity, bool), np.zeros(self.capacity, np.int64)
            except MemoryError:  # (numpy's own message names a shape, not the setting that made it)
                row = sum(int(np.prod(v.shape[1:])) * v.dtype.itemsize for v in stored.values())
                raise MemoryError(f"the replay buffer does not fit in memory: buffer_size {self.capacity:,} "
                                  f"transitions of {row:,} bytes is {self.capacity * row / 2**30:,.1f} GiB; "
                                  "lower buffer_size") from None
        if rows > self.capacity:  # only the newest capacity rows survive anyway
            columns = {k: v[-self.capacity :] for k, v in columns.items()}
            rows = self.capacity
        positions = (self.next + np.arange(rows)) % self.capacity
        if self.pairs and rows:
            follows = self._following(columns, rows) & (positions != self.capacity - 1)  # (never across the ring's end)
            apart = ~follows  # rows whose next observations are kept apart
            # first the one step that can fail (a new block), so that a failure changes nothing
            numbers = self.tails.push({n: columns[n][apart] for _, n in self.pairs})
            # the live rows overwritten now are the oldest, so theirs are the oldest kept apart
            overwritten = positions[max(0, self.capacity - self.size):]
            self.tails.release(int(np.count_nonzero(~self.follows[overwritten])))
            self.follows[positions] = follows
            self.tail_at[positions[apart]] = numbers
        first = min(rows, self.capacity - self.next)  # up to the end of the ring, then wrap
        for k, column in self.data.items():
            v = columns[k]
            column[self.next : self.next + first] = v[:first]
            column[: rows - first] = v[first:]
        self.next = (self.next + rows) % self.capacity
        self.size = min(self.size + rows, self.capacity)

    def _following(self, columns: Mapping[str, np.ndarray], rows: int) -> np.ndarray:
        """``[rows]`` bool: the row's next observations are, byte for byte, the next row's."""
        same = np.zeros(rows, bool)
        same[:-1] = True
        for o, n in self.pairs:
            after, following = _bytes(columns[n][:-1]), _bytes(columns[o][1:])
            same[:-1] &= (after == following).all(1)
        return same

    def rows(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """The transitions at ring positions ``index``, every column, the next observations included."""
        out = {k: v[index] for k, v in self.data.items()}
        if self.pairs:
            follows = self.follows[index]
            following = np.where(follows, index + 1, index)
            apart = np.nonzero(~follows)[0]
            numbers = self.tail_at[index[apart]]
            for o, n in self.pairs:
                out[n] = self.data[o][following]
                if len(apart):
                    out[n][apart] = self.tails.gather(n, numbers)
        return out

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``batch_size`` transitions drawn uniformly with replacement."""
        return self.rows(rng.integers(0, self.size, batch_size))

    def sample_sequences(self, sequences: int, sequence_length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``sequences`` whole sequences (rollout/sequences.py: blocks of ``sequence_length``
        rows, which a capacity that is a multiple of it keeps in one piece), drawn uniformly with
        replacement, their rows in order."""
        starts = rng.integers(0, self.size // sequence_length, sequences) * sequence_length
        return self.rows((starts[:, None] + np.arange(sequence_length)[None, :]).reshape(-1))

    def _order(self) -> list[slice]:
        """The ring's parts, oldest rows first."""
        if self.size < self.capacity or self.next == 0:
            return [slice(0, self.size)]
        return [slice(self.next, self.capacity), slice(0, self.next)]

    def state_dict(self) -> dict:
        """The stored transitions, oldest first, as a checkpoint-ready dict (each next
        observation written out)."""
        order = np.concatenate([np.arange(part.start, part.stop) for part in self._order()]).astype(np.int64)
        return {"capacity": self.capacity, "columns": self.rows(order)}

    def load_state_dict(self, state: dict) -> None:
        """Load ``state_dict``'s or ``tensor_state``'s form (columns of numpy arrays or tensors,
        whole or in parts; next observations written out, or stored once as ``tensor_state``
        keeps them)."""
        self._empty()
        tails = {n: np.concatenate([p.numpy() if isinstance(p, torch.Tensor) else np.asarray(p) for p in parts])
                 for n, parts in state.get("tails", {}).items()}
        parts = column_parts(state["columns"])
        if any("follows" in part for part in parts):
            _check_kept_apart([part["follows"].astype(bool) for part in parts], tails)
        used = 0
        for part in parts:
            rows = next(iter(part.values())).shape[0]
            follows = part.pop("follows", None)
            # added LOAD_ROWS at a time: the next observations written out for a whole part would
            # take as much memory again as the buffer saves (a row that follows another never
            # ends its part, whose next observations are the part's next row)
            for start in range(0, rows, LOAD_ROWS):
                piece = {k: v[start : start + LOAD_ROWS] for k, v in part.items()}
                if follows is not None:
                    stop = start + len(piece[next(iter(piece))])
                    apart = np.nonzero(~follows[start:stop].astype(bool))[0]
                    for n, tail in tails.items():
                        o = "obs_" + n[len("next_obs_"):]
                        following = part[o][start + 1 : stop + 1].copy()
                        if len(following) < stop - start:  # the part's last row: kept apart
                            following = np.concatenate([following, part[o][:1]])
                        following[apart] = tail[used : used + len(apart)]
                        piece[n] = following
                    used += len(apart)
                self.add(**piece)

    def tensor_state(self) -> dict:
        """The stored transitions, oldest first, as checkpoint files hold them: each column a list
        of tensors over the ring's two parts (the oldest rows, then the newest), not a reordered
        copy, which would add the whole buffer's size to the memory a save takes; the next
        observations as stored, once (``follows``, and the tails in their order). The tensors are
        views of the buffer itself: save them before it changes."""
        parts = self._order()
        columns = {k: [torch.from_numpy(v[part]) for part in parts] for k, v in self.data.items()}
        if not self.pairs:
            return {"capacity": self.capacity, "columns": columns}
        columns["follows"] = [torch.from_numpy(self.follows[part]) for part in parts]
        return {"capacity": self.capacity, "columns": columns, "tails": self.tails.tensor_parts()}


def _check_kept_apart(follows: list[np.ndarray], tails: Mapping[str, np.ndarray]) -> None:
    """A saved buffer's next observations kept apart are one for each row that follows none, and
    a part never ends on a row that follows the next (numpy would broadcast a lone one silently)."""
    apart = sum(int(np.count_nonzero(~f)) for f in follows)
    if not tails:
        raise ValueError("its rows say which next observations are kept apart, and none are saved")
    for name, tail in tails.items():
        if len(tail) != apart:
            raise ValueError(f"{apart:,} rows keep their next observations apart, and {name} holds {len(tail):,}")
    if any(len(f) and f[-1] for f in follows):
        raise ValueError("a part ends on a row whose next observations are said to be the next row's")


def _bytes(rows: np.ndarray) -> np.ndarray:
    """``[rows, bytes]``: each row's bytes, for an exact comparison (-0.0 is not 0.0, NaN is NaN)."""
    return np.ascontiguousarray(rows).reshape(len(rows), int(np.prod(rows.shape[1:]))).view(np.uint8)


class _Tails:
    """The next observations of the replay buffer's rows that no row follows, a queue in the order
    of those rows: the buffer overwrites its oldest rows, so their tails leave from the front.
    Each entry has a sequence number; the entries live in blocks of equal rows, a new block added
    when the last is full and the first dropped when all its entries have left, so the memory is
    the live entries' and at most two part-filled blocks', and nothing is ever copied to grow."""

    def __init__(self, buffer_rows: int) -> None:
        self.buffer_rows = buffer_rows  # a block holds at most an eighth of them
        self.blocks: collections.deque[dict[str, np.ndarray]] = collections.deque()
        self.shapes: dict[str, tuple[tuple[int, ...], np.dtype]] = {}  # each column's row, set by the first push
        self.first_block = 0  # the number of blocks[0]: its entries are block_rows * first_block on
        self.block_rows = 0  # set by the first push, from the size of a row
        self.head = 0  # the sequence number of the oldest live entry
        self.end = 0  # the sequence number of the next entry pushed

    @property
    def count(self) -> int:
        return self.end - self.head

    def release(self, n: int) -> None:
        self.head += n
        while self.blocks and (self.first_block + 1) * self.block_rows <= self.head:
            self.blocks.popleft()
            self.first_block += 1

    def push(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Append ``columns``' rows; return their sequence numbers."""
        if not self.block_rows:
            row = sum(v.dtype.itemsize * int(np.prod(v.shape[1:])) for v in columns.values())
            self.block_rows = max(1, min(TAIL_BLOCK_BYTES // max(row, 1), -(-self.buffer_rows // 8)))
            self.shapes = {k: (v.shape[1:], v.dtype) for k, v in columns.items()}
        rows = next(iter(columns.values())).shape[0]
        blocks = (self.end + rows - 1) // self.block_rows - self.first_block + 1 if rows else 0
        try:  # every block these rows need, before anything changes
            added = [{k: np.zeros((self.block_rows, *shape), dtype) for k, (shape, dtype) in self.shapes.items()}
                     for _ in range(blocks - len(self.blocks))]
        except MemoryError:
            raise MemoryError(f"the replay buffer's next observations do not fit in memory ({self.count + rows:,} "
                              "kept apart from the following rows); lower buffer_size") from None
        self.blocks.extend(added)
        done = 0
        while done < rows:
            block, offset = divmod(self.end, self.block_rows)
            take = min(rows - done, self.block_rows - offset)
            for k, v in columns.items():
                self.blocks[block - self.first_block][k][offset : offset + take] = v[done : done + take]
            done += take
            self.end += take
        return np.arange(self.end - rows, self.end)

    def gather(self, name: str, numbers: np.ndarray) -> np.ndarray:
        """The entries of ``name`` with sequence numbers ``numbers``."""
        shape, dtype = self.shapes[name]
        out = np.empty((len(numbers), *shape), dtype)
        block, offset = np.divmod(numbers, self.block_rows)
        for b in np.unique(block):
            at = block == b
            out[at] = self.blocks[b - self.first_block][name][offset[at]]
        return out

    def tensor_parts(self) -> dict[str, list[torch.Tensor]]:
        """The live entries, oldest first, as views of their blocks."""
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in self.shapes}
        for i, block in enumerate(self.blocks):
            start = (self.first_block + i) * self.block_rows
            live = slice(max(self.head - start, 0), min(self.end - start, self.block_rows))
            for k, v in block.items():
                parts[k].append(torch.from_numpy(v[live]))
        return parts


def column_parts(columns: Mapping) -> list[dict[str, np.ndarray]]:
    """A saved buffer's columns as consecutive parts, oldest first, numpy arrays: each column a
    list of parts (``ReplayBuffer.tensor_state``) or one array or tensor (files saved before)."""
    lists = {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in columns.items()}
    counts = {len(v) for v in lists.values()}
    if len(counts) > 1:
        raise ValueError(f"columns saved in different numbers of parts: {sorted(counts)}")
    numpy = {k: [p.numpy() if isinstance(p, torch.Tensor) else np.asarray(p) for p in v] for k, v in lists.items()}
    return [{k: v[i] for k, v in numpy.items()} for i in range(counts.pop() if counts else 0)]
