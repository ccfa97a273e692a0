"""The protobuf wire format, as much of it as `.demo` files need: varints, length-delimited
fields, fixed32 floats and packed repeated fields, read from and written to bytes.

Written here rather than generated from `.proto` files so that reading a demonstration depends
on no protobuf package or version, and so that packed float arrays (most of a recording) go
straight into numpy without a Python object per value.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
_WIRE_TYPES = {VARINT: "varint", FIXED64: "fixed64", LENGTH: "length-delimited", FIXED32: "fixed32"}


class WireError(ValueError):
    """Bytes that are not a valid protobuf message; ``offset`` is where the problem is."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message if offset is None else f"{message} (at byte {offset})")
        self.offset = offset


def read_varint(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    """The unsigned varint at ``pos`` and the position after it; at most 10 bytes, within ``end``."""
    result = shift = 0
    start = pos
    while True:
        if pos >= end:
            raise WireError("a varint runs past the end of its message", start)
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("a varint is longer than 10 bytes", start)


def as_int32(value: int) -> int:
    """A varint read as protobuf's int32: negative numbers arrive as 64-bit two's complement."""
    value &= 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >= 1 << 63 else value


def fields(buf: bytes | memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """The fields of the message in ``buf[start:end]``, in file order, as
    ``(field number, wire type, a, b)``: a varint's value in ``a``; a length-delimited field's
    span in ``a:b``; a fixed32 or fixed64 field's offset in ``a``. Field number 0, groups and
    unknown wire types are errors, as is anything running past ``end``."""
    pos = start
    while pos < end:
        tag_at = pos
        tag = buf[pos]
        if tag < 0x80:  # one-byte varints (every tag here, most lengths) skip the general loop
            pos += 1
        else:
            tag, pos = read_varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise WireError(f"field number 0 (tag byte 0x{tag:02x})", tag_at)
        if wire == VARINT:
            value, pos = read_varint(buf, pos, end)
            yield number, wire, value, 0
        elif wire == LENGTH:
            if pos < end and buf[pos] < 0x80:
                length = buf[pos]
                pos += 1
            else:
                length, pos = read_varint(buf, pos, end)
            if pos + length > end:
                raise WireError(f"field {number} claims {length} bytes; its message has {end - pos} left", tag_at)
            yield number, wire, pos, pos + length
            pos += length
        elif wire == FIXED32 or wire == FIXED64:
            size = 4 if wire == FIXED32 else 8
            if pos + size > end:
                raise WireError(f"field {number} ({_WIRE_TYPES[wire]}) runs past the end of its message", tag_at)
            yield number, wire, pos, 0
            pos += size
        else:
            raise WireError(f"field {number} has wire type {wire}, which no message here uses", tag_at)


def expect(number: int, wire: int, expected: int, where: str) -> None:
    """Raise unless field ``number`` came with the wire type its declaration gives it."""
    if wire != expected:
        raise WireError(f"{where} field {number} is {_WIRE_TYPES.get(wire, wire)}, expected {_WIRE_TYPES[expected]}")


def floats(buf: bytes | memoryview, start: int, end: int) -> np.ndarray:
    """A packed repeated float field's values (little-endian float32), without copying."""
    if (end - start) % 4:
        raise WireError(f"packed floats of {end - start} bytes, not a multiple of 4", start)
    return np.frombuffer(buf, dtype="<f4", count=(end - start) // 4, offset=start)


def float_at(buf: bytes | memoryview, offset: int) -> float:
    return float(np.frombuffer(buf, dtype="<f4", count=1, offset=offset)[0])


def varints(buf: bytes | memoryview, start: int, end: int, signed: bool = True) -> list[int]:
    """A packed repeated integer (or bool, or enum) field's values."""
    out = []
    pos = start
    while pos < end:
        value, pos = read_varint(buf, pos, end)
        out.append(as_int32(value) if signed else value)
    return out


def text(buf: bytes | memoryview, start: int, end: int) -> str:
    return bytes(buf[start:end]).decode("utf-8", errors="replace")


# -- writing -----------------------------------------------------------------------------------

def varint(value: int) -> bytes:
    """A varint; negative numbers as 64-bit two's complement (10 bytes), as protobuf writes int32."""
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def varint_field(number: int, value: int) -> bytes:
    """A scalar varint field; proto3 leaves zero values out."""
    return tag(number, VARINT) + varint(value) if value else b""


def bytes_field(number: int, payload: bytes) -> bytes:
    return tag(number, LENGTH) + varint(len(payload)) + payload


def string_field(number: int, value: str) -> bytes:
    return bytes_field(number, value.encode("utf-8")) if value else b""


def float_field(number: int, value: float) -> bytes:
    return tag(number, FIXED32) + np.float32(value).astype("<f4").tobytes() if value else b""


def packed_floats(number: int, values: np.ndarray) -> bytes:
    return bytes_field(number, np.ascontiguousarray(values, dtype="<f4").tobytes()) if values.size else b""


def packed_varints(number: int, values) -> bytes:
    return bytes_field(number, b"".join(varint(int(v)) for v in values)) if len(values) else b""


def delimited(message: bytes) -> bytes:
    """A message with its length in front, as records in a `.demo` file are stored."""
    return varint(len(message)) + message
