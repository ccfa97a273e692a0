"""PNG images to and from uint8 arrays (height x width x channels), with zlib and numpy only.

Unity stores camera observations as PNG (8-bit grey, RGB or RGBA, not interlaced, rows filtered
Sub, Up and Paeth); that is what this reads. A recording holds thousands of images of one size,
so the filters are undone for all of them together, row by row (:func:`unfilter`).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> channels (8-bit only)


class PNGError(ValueError):
    pass


def split_pngs(data: bytes | memoryview) -> list[tuple[int, int]]:
    """Spans of the PNG images stored one after another in ``data`` (ML-Agents concatenates
    PNGs when a camera has more than 3 channels). Each image ends after its IEND chunk."""
    spans = []
    pos, end = 0, len(data)
    while pos < end:
        start = pos
        if bytes(data[pos:pos + 8]) != SIGNATURE:
            raise PNGError(f"no PNG signature at byte {pos} of the compressed observation")
        pos += 8
        while True:
            if pos + 8 > end:
                raise PNGError("a PNG image ends before its IEND chunk")
            length, kind = struct.unpack(">I4s", bytes(data[pos:pos + 8]))
            pos += 12 + length
            if kind == b"IEND":
                break
        if pos > end:
            raise PNGError("a PNG chunk runs past the end of the compressed observation")
        spans.append((start, pos))
    return spans


def read_png(data: bytes | memoryview) -> tuple[tuple[int, int, int], np.ndarray]:
    """One PNG image's ``(height, width, channels)`` and its decompressed, still filtered rows
    ``[height, 1 + width * channels]`` (each row's first byte is its filter type)."""
    data = bytes(data)
    if not data.startswith(SIGNATURE):
        raise PNGError("not a PNG image (no PNG signature)")
    pos, header, idat = 8, None, []
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length:
            raise PNGError(f"the {kind.decode('latin-1')} chunk is cut short")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise PNGError("a PNG image without an IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in _CHANNELS or interlace:
        raise PNGError(f"unsupported PNG: bit depth {depth}, colour type {colour}, interlace {interlace} "
                       "(8-bit grey, grey+alpha, RGB or RGBA without interlacing are read)")
    channels = _CHANNELS[colour]
    stride = width * channels
    expected = height * (stride + 1)
    try:  # no more than the image needs, and one byte to tell there was more (a bomb stays compressed)
        inflater = zlib.decompressobj()
        raw = inflater.decompress(b"".join(idat), expected + 1)
    except zlib.error as e:
        raise PNGError(f"the PNG's image data does not decompress: {e}") from None
    if len(raw) != expected:
        raise PNGError(f"the PNG's image data holds {'more than ' if len(raw) > expected else ''}{len(raw)} bytes; "
                       f"{width}x{height}x{channels} needs {expected}")
    return (height, width, channels), np.frombuffer(raw, np.uint8).reshape(height, stride + 1)


def decode_png(data: bytes | memoryview) -> np.ndarray:
    """One PNG image as uint8 ``[height, width, channels]``."""
    shape, rows = read_png(data)
    return unfilter(rows[None], shape[2]).reshape(shape)


def unfilter(rows: np.ndarray, bpp: int) -> np.ndarray:
    """Undo PNG's row filters for a batch of images of one size at once: ``rows`` is
    ``[images, height, 1 + stride]`` as :func:`read_png` returns them; the result is
    ``[images, height, stride]``. Rows go top to bottom over all images together; a row filtered
    Average or Paeth depends on the pixel to its left, so those go pixel by pixel, still over all
    images whose row uses them."""
    n, height, _ = rows.shape
    out = np.empty((n, height, rows.shape[2] - 1), np.uint8)
    previous = np.zeros((n, rows.shape[2] - 1), np.uint8)
    for y in range(height):
        kinds, row = rows[:, y, 0], rows[:, y, 1:]
        if (kinds > 4).any():
            raise PNGError(f"row {y} of a PNG has filter type {int(kinds.max())} (0-4 exist)")
        current = row.copy()
        sub, up, sequential = kinds == 1, kinds == 2, (kinds == 3) | (kinds == 4)
        if sub.any():  # running sum along each channel, modulo 256
            current[sub] = np.cumsum(row[sub].reshape(int(sub.sum()), -1, bpp), axis=1, dtype=np.uint8).reshape(
                int(sub.sum()), -1)
        if up.any():
            current[up] = row[up] + previous[up]
        if sequential.any():
            current[sequential] = _average_or_paeth(kinds[sequential] == 3, row[sequential], previous[sequential], bpp)
        out[:, y] = previous = current
    return out


def _average_or_paeth(average: np.ndarray, row: np.ndarray, above: np.ndarray, bpp: int) -> np.ndarray:
    raw, up = row.astype(np.int16), above.astype(np.int16)
    cur = np.zeros_like(raw)
    zero = np.zeros((len(raw), bpp), np.int16)
    average = average[:, None]
    for x in range(0, raw.shape[1], bpp):
        left = cur[:, x - bpp:x] if x else zero
        corner = up[:, x - bpp:x] if x else zero
        top = up[:, x:x + bpp]
        p = left + top - corner
        pa, pb, pc = np.abs(p - left), np.abs(p - top), np.abs(p - corner)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, top, corner))
        cur[:, x:x + bpp] = (raw[:, x:x + bpp] + np.where(average, (left + top) >> 1, paeth)) & 0xFF
    return cur.astype(np.uint8)


def encode_png(image: np.ndarray, level: int = 6) -> bytes:
    """A uint8 ``[height, width, channels]`` image (1, 2, 3 or 4 channels) as a PNG, each row
    after the first filtered Up (a difference with the row above: vectorized, and small for
    camera images)."""
    height, width, channels = image.shape
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = np.ascontiguousarray(image, np.uint8).reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), np.uint8)
    filtered[:, 0] = 2
    filtered[0, 0] = 0
    filtered[0, 1:] = rows[0]
    filtered[1:, 1:] = rows[1:] - rows[:-1]  # uint8 arithmetic wraps modulo 256, as PNG's does

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(filtered.tobytes(), level)) + chunk(b"IEND", b""))
