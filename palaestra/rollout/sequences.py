"""Rows of experience → training sequences, for recurrent policies (networks/recurrent.py).

Each segment's real rows are cut into sequences of ``sequence_length`` rows, in order; a
segment's last sequence is padded after its real rows up to the full length. The sequences sit
one after the other in the update buffer, so a mini-batch of whole sequences is a set of
``sequence_length``-row blocks, and each block's first row holds the memory its sequence starts
from. A ``valid`` column (1 for real rows, 0 for padding) keeps padding out of every loss."""

from __future__ import annotations

from typing import Mapping

import numpy as np


def sequence_positions(row_mask: np.ndarray, sequence_length: int) -> tuple[np.ndarray, int]:
    """Where each real row of segments ``row_mask`` ``[F, H]`` goes (in the order ``x[row_mask]``
    lists them), and the rows of all sequences, padding included."""
    first, sequences = _sequences_per_segment(row_mask, sequence_length)
    segment, row = np.nonzero(row_mask)
    positions = (first[segment] + row // sequence_length) * sequence_length + row % sequence_length
    return positions, int(sequences.sum()) * sequence_length


def sequence_segments(row_mask: np.ndarray, sequence_length: int) -> tuple[np.ndarray, np.ndarray]:
    """For each sequence of :func:`sequence_positions`: its segment, and which of that
    segment's sequences it is (0 for the first)."""
    first, sequences = _sequences_per_segment(row_mask, sequence_length)
    segment = np.repeat(np.arange(len(sequences)), sequences)
    return segment, np.arange(len(segment)) - first[segment]


def _sequences_per_segment(row_mask: np.ndarray, sequence_length: int) -> tuple[np.ndarray, np.ndarray]:
    sequences = -(-row_mask.sum(1) // sequence_length)  # rounded up
    return np.cumsum(sequences) - sequences, sequences


def into_sequences(columns: Mapping[str, np.ndarray], positions: np.ndarray, rows: int) -> dict[str, np.ndarray]:
    """The columns' real rows placed at ``positions`` among ``rows`` zero rows, and ``valid``."""
    out = {}
    for name, column in columns.items():
        padded = np.zeros((rows, *column.shape[1:]), column.dtype)
        padded[positions] = column
        out[name] = padded
    valid = np.zeros(rows, np.float32)
    valid[positions] = 1.0
    return out | {"valid": valid}


def sequence_order(rows: int, sequence_length: int, rng: np.random.Generator) -> np.ndarray:
    """A shuffled order of ``rows`` rows that keeps each sequence's rows together and in order
    (plain rows are shuffled one by one)."""
    if sequence_length == 1:
        return rng.permutation(rows)
    starts = rng.permutation(rows // sequence_length) * sequence_length
    return (starts[:, None] + np.arange(sequence_length)[None, :]).reshape(-1)


def real_rows(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch without its sequences' padding rows (as it is, without a ``valid`` column)."""
    if "valid" not in batch:
        return dict(batch)
    real = batch["valid"] > 0
    return {k: v[real] for k, v in batch.items()}
