"""Unity's observations → arrays over agents: float data reshaped, PNG images decoded in batch.

Images are delivered as Palaestra keeps them (palaestra/envs/observations.py): height x width x
channels, uint8 for PNG images (no round trip through floats), float32 in [0, 1] for images sent
as floats. Unity sends cameras either as [H, W, C] or, with API 1.5's dimension properties, as
[C, H, W]; both come out as [H, W, C].
"""

from __future__ import annotations

import io
import struct

import numpy as np

from palaestra.envs.base import EnvError
from palaestra.envs.unity import messages as pb
from palaestra.envs.unity.wire import float_rows

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNEL_AXIS = 1  # DimensionProperty NONE: in an image, the axis that holds the channels


def channels_first(observation: object) -> bool:
    properties = list(observation.dimension_properties)
    return len(observation.shape) == 3 and len(properties) == 3 and properties[0] == CHANNEL_AXIS \
        and CHANNEL_AXIS not in properties[1:]


def delivered_shape(observation: object) -> tuple[int, ...]:
    """The shape this observation has in DecisionSteps (images as [H, W, C])."""
    shape = tuple(int(s) for s in observation.shape)
    return (shape[1], shape[2], shape[0]) if channels_first(observation) else shape


def _split_pngs(data: bytes) -> list[bytes]:
    # API 1.1 concatenates one PNG per three channels into one compressed_data
    starts, at = [], data.find(PNG_SIGNATURE)
    while at != -1:
        starts.append(at)
        at = data.find(PNG_SIGNATURE, at + len(PNG_SIGNATURE))
    return [data[a:b] for a, b in zip(starts, starts[1:] + [len(data)])]


PLAIN_MODES = {(8, 0): "L", (8, 2): "RGB", (8, 6): "RGBA"}  # (bit depth, color type) → Pillow mode


def _decode_plain(png: bytes) -> np.ndarray | None:
    """An 8-bit grayscale, RGB or RGBA PNG without interlacing (what Unity's cameras send) decoded
    by Pillow's zlib decoder straight from its image data: Image.open's reading of the chunks in
    Python cost as much as the decoding (74 against 44 us for an 84 x 84 camera). None for any
    other PNG, or one that does not decode, which Image.open then reads (and reports)."""
    from PIL import Image

    try:
        at, header, data = 8, None, []
        while at + 8 <= len(png):
            length, kind = struct.unpack_from(">I4s", png, at)
            if kind == b"IHDR":
                header = struct.unpack_from(">IIBBBBB", png, at + 8)
            elif kind == b"IDAT":
                data.append(png[at + 8 : at + 8 + length])
            elif kind == b"IEND":
                break
            at += 12 + length
        if header is None or not data:
            return None
        width, height, depth, color, _, _, interlace = header
        mode = PLAIN_MODES.get((depth, color))
        if mode is None or interlace:
            return None
        image = Image.frombytes(mode, (width, height), b"".join(data), "zip", mode)
        return np.frombuffer(image.tobytes(), np.uint8).reshape(height, width, -1)
    except Exception:  # (struct.error, zlib's and Pillow's errors): Image.open says what is wrong
        return None


def decode_png(observation: object, shape: tuple[int, int, int], where: str) -> np.ndarray:
    """One compressed observation → uint8 [H, W, C] of the delivered ``shape``."""
    from PIL import Image

    height, width, channels = shape
    parts = []
    for png in _split_pngs(observation.compressed_data):
        plain = _decode_plain(png)
        if plain is not None:
            parts.append(plain[:, :, :3])
            continue
        try:
            with Image.open(io.BytesIO(png)) as image:
                array = np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB", "RGBA") else image)
        except Exception as e:  # Pillow raises several kinds for damaged data
            raise EnvError(f"{where}: a PNG image cannot be decoded ({type(e).__name__}: {e})") from None
        parts.append(array[:, :, None] if array.ndim == 2 else array[:, :, :3])
    if not parts:
        raise EnvError(f"{where}: compressed observation holds no PNG image ({len(observation.compressed_data)} bytes)")
    stacked = np.concatenate(parts, axis=2)
    mapping = list(observation.compressed_channel_mapping)
    if mapping:  # decoded channel i belongs to observation channel mapping[i] (-1: padding); a channel's
        # several decoded copies are averaged (a grayscale stacked into RGB)
        out = np.zeros((stacked.shape[0], stacked.shape[1], channels), np.float32)
        counts = np.zeros(channels, np.float32)
        for i, target in enumerate(mapping[:stacked.shape[2]]):
            if 0 <= target < channels:
                out[:, :, target] += stacked[:, :, i]
                counts[target] += 1
        image = np.rint(out / np.maximum(counts, 1)).astype(np.uint8)
    elif channels == 1 and stacked.shape[2] > 1:  # grayscale: the mean of the colors
        image = np.rint(stacked[:, :, :3].mean(axis=2, keepdims=True)).astype(np.uint8)
    else:
        image = stacked[:, :, :channels]
    if image.shape != shape:
        raise EnvError(f"{where}: the PNG image decodes to {list(image.shape)} ([height, width, channels]), "
                       f"but the observation's shape says {list(shape)}")
    return image


def batch(observations: list[object], shape: tuple[int, ...], where: str) -> np.ndarray:
    """The same observation of ``n`` agents → one array ``[n, *shape]``."""
    n = len(observations)
    if n and observations[0].compression_type == pb.PNG:
        out = np.empty((n, *shape), np.uint8)
        for i, o in enumerate(observations):
            out[i] = decode_png(o, shape, where)
        return out
    size = int(np.prod(shape))
    flat = float_rows(observations, size)
    if flat is None:  # an agent sent another number of floats: which, and why
        for o in observations:
            data = o.float_data.data
            if len(data) != size:
                if o.compression_type == pb.PNG:
                    raise EnvError(f"{where}: agents send the same observation both as PNG and as floats")
                raise EnvError(f"{where}: an agent sent {len(data)} floats (shape {list(o.shape)}) where the "
                               f"behavior's observation has shape {list(shape)} ({size} floats)")
    if not np.isfinite(flat).all():
        bad = np.flatnonzero(~np.isfinite(flat).all(axis=1))
        raise EnvError(f"{where}: NaN or infinite values for {len(bad)} agent(s); check the scene's "
                       "CollectObservations (a division by zero, an uninitialized value)")
    if n and channels_first(observations[0]):
        c, h, w = (int(s) for s in observations[0].shape)
        return flat.reshape(n, c, h, w).transpose(0, 2, 3, 1).copy()
    return flat.reshape(n, *shape)
