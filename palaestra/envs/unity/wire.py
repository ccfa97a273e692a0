"""Repeated numbers of many agents read and written in bulk, in protobuf's wire format.

Unity sends one ``ObservationProto`` per agent and observation, and takes one ``AgentActionProto``
per agent: going through the message classes costs a Python call or more per agent. Their packed
repeated fields are plain little-endian arrays on the wire, so a behavior's observations are read
with one join of the agents' serialized float data, and its actions written as one block of
bytes that protobuf parses into the message. The bridge benchmark (docs/benchmarks.md) measures
what this saves; every case these do not cover goes the per-agent way.
"""

from __future__ import annotations

import functools

import numpy as np

FLOAT = np.dtype("<f4")
# wire tags: (field number << 3) | 2 (length-delimited)
FLOAT_DATA = 0x0A  # ObservationProto.FloatData.data = 1
VECTOR_ACTIONS = 0x0A  # AgentActionProto.vector_actions = 1 (before API 1.3)
CONTINUOUS_ACTIONS = 0x32  # AgentActionProto.continuous_actions = 6
DISCRETE_ACTIONS = 0x3A  # AgentActionProto.discrete_actions = 7
VALUE = 0x0A  # ListAgentActionProto.value = 1


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def float_rows(observations: list[object], size: int) -> np.ndarray | None:
    """The float data of every observation as one float32 array ``[n, size]``; None unless every
    one holds exactly ``size`` floats (the caller then says which does not)."""
    n = len(observations)
    if size == 0 or n == 0:
        return None
    # each FloatData serializes as its one packed field: tag, byte length, the floats (nothing when
    # empty). All rows of the expected length with the expected header means every agent sent
    # ``size`` floats: the first agent of another size would start at a row with its own header.
    header = _float_header(size)
    raw = b"".join([o.float_data.SerializeToString() for o in observations])
    row = len(header) + 4 * size
    if len(raw) != n * row or any(raw[i::row] != header[i : i + 1] * n for i in range(len(header))):
        return None
    return np.frombuffer(raw, np.uint8).reshape(n, row)[:, len(header):].copy().view(FLOAT)


@functools.lru_cache(maxsize=64)
def _float_header(size: int) -> bytes:
    return bytes([FLOAT_DATA]) + varint(4 * size)


@functools.lru_cache(maxsize=64)
def _action_row(continuous: int, discrete: int, hybrid: bool) -> tuple[np.ndarray, slice, slice]:
    """One agent's serialized ``value`` entry with zeros for the actions, and where the continuous
    bytes and the discrete bytes go in it (before API 1.3 both go, as floats, where the first does)."""
    fields = [(CONTINUOUS_ACTIONS, 4 * continuous), (DISCRETE_ACTIONS, discrete)] if hybrid else \
        [(VECTOR_ACTIONS, 4 * (continuous + discrete)), (DISCRETE_ACTIONS, 0)]
    inner, spans = b"", []
    for tag, size in fields:
        if size:  # (protobuf leaves an empty packed field out)
            inner += bytes([tag]) + varint(size)
        spans.append((len(inner), len(inner) + size))
        inner += bytes(size)
    head = len(varint(len(inner))) + 1
    template = np.frombuffer(bytes([VALUE]) + varint(len(inner)) + inner, np.uint8)
    (c0, c1), (d0, d1) = spans
    return template, slice(head + c0, head + c1), slice(head + d0, head + d1)


def agent_actions(continuous: np.ndarray, discrete: np.ndarray, hybrid: bool) -> bytes | None:
    """A ``ListAgentActionProto`` holding one ``AgentActionProto`` per row, serialized: continuous
    and discrete actions in their own fields (API 1.3 on, ``hybrid``) or together as floats in
    ``vector_actions``. None where a discrete action does not fit one varint byte (0-127), which
    the caller writes the per-agent way."""
    n, n_continuous = continuous.shape
    n_discrete = discrete.shape[1]
    if hybrid and n_discrete and (discrete.min() < 0 or discrete.max() > 127):
        return None
    template, c, d = _action_row(n_continuous, n_discrete, hybrid)
    out = np.empty((n, len(template)), np.uint8)
    out[:] = template
    if hybrid:
        out[:, c] = np.ascontiguousarray(continuous, FLOAT).view(np.uint8).reshape(n, -1)
        out[:, d] = discrete
    else:
        values = np.concatenate([continuous, discrete], axis=1).astype(FLOAT)
        out[:, c] = values.view(np.uint8).reshape(n, -1)
    return out.tobytes()
