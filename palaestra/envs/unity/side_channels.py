"""Side channels: messages that travel beside the observations and actions, in the
``side_channel`` bytes of every input and output.

The bytes are a run of records ``[channel UUID, 16 bytes in uuid.bytes_le order][int32 length]
[payload]``; payloads are built from little-endian int32, float32, bool and length-prefixed
strings. Each channel is an object with a ``channel_id`` and an ``on_message(payload)``; it queues
what it sends with ``queue(payload)``, and the environment sends every queued message with its
next input. A user's code registers its own channels by passing them to ``UnityEnv``
(``RawBytesChannel`` for plain bytes, or any class with the same three members).
"""

from __future__ import annotations

import logging
import struct
import uuid
from collections import defaultdict

from palaestra.envs.base import STAT_AVERAGE, STAT_HISTOGRAM, STAT_MOST_RECENT, STAT_SUM, EngineConfig, EnvError

logger = logging.getLogger("palaestra")

ENGINE_CONFIGURATION_ID = uuid.UUID("e951342c-4f7e-11ea-b238-784f4387d1f7")
ENVIRONMENT_PARAMETERS_ID = uuid.UUID("534c891e-810f-11ea-a9d0-822485860400")
FLOAT_PROPERTIES_ID = uuid.UUID("60ccf7d0-4f7e-11ea-b238-784f4387d1f7")
STATS_ID = uuid.UUID("a1d8f7b7-cec8-50f9-b78b-d3e165a78520")
TRAINING_ANALYTICS_ID = uuid.UUID("b664a4a9-d86f-5a5f-95cb-e8353a7e8356")



class Writer:
    """A payload built from little-endian primitives, as Unity's side channels read them."""

    def __init__(self) -> None:
        self.data = bytearray()

    def int32(self, value: int) -> "Writer":
        self.data += struct.pack("<i", value)
        return self

    def float32(self, value: float) -> "Writer":
        self.data += struct.pack("<f", value)
        return self

    def bool(self, value: bool) -> "Writer":
        self.data += struct.pack("<?", value)
        return self

    def string(self, value: str) -> "Writer":
        try:
            encoded = value.encode("ascii")  # Unity's side channels read strings as ASCII
        except UnicodeEncodeError:
            raise EnvError(f"{value!r}: a name sent to Unity must be ASCII (Unity's side channels read no other "
                           "characters); rename it in the curriculum, sampler or code that sets it") from None
        return self.int32(len(encoded)).raw(encoded)

    def float32_list(self, values: list[float]) -> "Writer":
        self.int32(len(values))
        for v in values:
            self.float32(v)
        return self

    def raw(self, value: bytes) -> "Writer":
        self.data += value
        return self


class Reader:
    """Reads a payload written by Unity; running past its end is an EnvError naming the channel."""

    def __init__(self, data: bytes, channel: str) -> None:
        self.data, self.offset, self.channel = bytes(data), 0, channel

    def _take(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.data):
            raise EnvError(f"side channel {self.channel}: a message of {len(self.data)} bytes ends early "
                           f"(reading {fmt!r} at byte {self.offset})")
        values = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += size
        return values

    def int32(self) -> int:
        return self._take("<i")[0]

    def float32(self) -> float:
        return self._take("<f")[0]

    def bool(self) -> bool:
        return self._take("<?")[0]

    def string(self) -> str:
        length = self.int32()
        if length < 0 or self.offset + length > len(self.data):
            raise EnvError(f"side channel {self.channel}: a string of {length} bytes does not fit the message")
        text = self.data[self.offset:self.offset + length].decode("ascii", errors="replace")
        self.offset += length
        return text

    def float32_list(self) -> list[float]:
        return [self.float32() for _ in range(self.int32())]

    def at_end(self) -> bool:
        return self.offset >= len(self.data)


def encode(records: list[tuple[uuid.UUID, bytes]]) -> bytes:
    out = bytearray()
    for channel_id, payload in records:
        out += channel_id.bytes_le + struct.pack("<i", len(payload)) + payload
    return bytes(out)


def decode(data: bytes) -> list[tuple[uuid.UUID, bytes]]:
    records, offset = [], 0
    while offset < len(data):
        if offset + 20 > len(data):
            raise EnvError(f"side-channel data from Unity: {len(data) - offset} bytes left at byte {offset}, "
                           "too few for a record header (16-byte channel id and a length)")
        channel_id = uuid.UUID(bytes_le=bytes(data[offset:offset + 16]))
        (length,) = struct.unpack_from("<i", data, offset + 16)
        offset += 20
        if length < 0 or offset + length > len(data):
            raise EnvError(f"side-channel data from Unity: the message for channel {channel_id} claims {length} "
                           f"bytes, but {len(data) - offset} are left")
        records.append((channel_id, bytes(data[offset:offset + length])))
        offset += length
    return records


class SideChannel:
    """The base of every channel: an id, the messages waiting to go, and what to do with one that
    came (the default: nothing)."""

    def __init__(self, channel_id: uuid.UUID) -> None:
        self.channel_id = channel_id
        self.outgoing: list[bytes] = []

    def queue(self, payload: bytes) -> None:
        self.outgoing.append(bytes(payload))

    def on_message(self, payload: bytes) -> None:
        pass


class RawBytesChannel(SideChannel):
    """Plain bytes both ways: ``send`` queues a message; ``received`` keeps what Unity sent until
    ``take_received`` empties it."""

    def __init__(self, channel_id: uuid.UUID | str) -> None:
        super().__init__(uuid.UUID(str(channel_id)))
        self.received: list[bytes] = []

    def send(self, payload: bytes) -> None:
        self.queue(payload)

    def on_message(self, payload: bytes) -> None:
        self.received.append(payload)

    def take_received(self) -> list[bytes]:
        taken, self.received = self.received, []
        return taken


class EngineConfigurationChannel(SideChannel):
    """Screen size, quality level, time scale, target and capture frame rates: Unity's engine
    settings (the capture frame rate is ML-Agents 0.16's addition; Unity packages from 1.0 read it)."""

    SCREEN_RESOLUTION, QUALITY_LEVEL, TIME_SCALE, TARGET_FRAME_RATE, CAPTURE_FRAME_RATE = range(5)

    def __init__(self) -> None:
        super().__init__(ENGINE_CONFIGURATION_ID)

    def configure(self, engine: EngineConfig) -> None:
        if engine.width is not None or engine.height is not None:  # ML-Agents 0.16: no resolution unless given
            self.queue(Writer().int32(self.SCREEN_RESOLUTION).int32(engine.width or 84).int32(engine.height or 84).data)
        self.queue(Writer().int32(self.QUALITY_LEVEL).int32(engine.quality_level).data)
        self.queue(Writer().int32(self.TIME_SCALE).float32(engine.time_scale).data)
        self.queue(Writer().int32(self.TARGET_FRAME_RATE).int32(engine.target_frame_rate).data)
        self.queue(Writer().int32(self.CAPTURE_FRAME_RATE).int32(engine.capture_frame_rate).data)


class EnvironmentParametersChannel(SideChannel):
    """Environment parameters (curricula, samplers, ``reset(parameters)``): key and float value."""

    FLOAT = 0

    def __init__(self) -> None:
        super().__init__(ENVIRONMENT_PARAMETERS_ID)

    def set_float(self, key: str, value: float) -> None:
        self.queue(Writer().string(key).int32(self.FLOAT).float32(value).data)


class FloatPropertiesChannel(SideChannel):
    """The channel of ML-Agents 0.15 (still in later Unity packages): key/float pairs both ways."""

    def __init__(self, channel_id: uuid.UUID = FLOAT_PROPERTIES_ID) -> None:
        super().__init__(channel_id)
        self.properties: dict[str, float] = {}

    def set_property(self, key: str, value: float) -> None:
        self.properties[key] = value
        self.queue(Writer().string(key).float32(value).data)

    def on_message(self, payload: bytes) -> None:
        reader = Reader(payload, "float properties")
        key = reader.string()
        self.properties[key] = reader.float32()


class StatsChannel(SideChannel):
    """Statistics a scene records (``Academy.Instance.StatsRecorder``): each key's values since the
    last ``take_stats``, with the aggregation Unity asked for (envs/base.py's STAT_*: the most
    recent keeps the last value, the others every value). An aggregation this version does not
    know is averaged, with a warning."""

    def __init__(self) -> None:
        super().__init__(STATS_ID)
        self.values: dict[str, list[float]] = defaultdict(list)
        self.aggregation: dict[str, int] = {}
        self._unknown: set[str] = set()  # keys warned about

    def on_message(self, payload: bytes) -> None:
        reader = Reader(payload, "stats")
        key, value, aggregation = reader.string(), reader.float32(), reader.int32()
        if aggregation not in (STAT_AVERAGE, STAT_MOST_RECENT, STAT_SUM, STAT_HISTOGRAM):
            if key not in self._unknown:
                self._unknown.add(key)
                logger.warning("side channel stats: key %r has aggregation %d, which this version does not know "
                               "(0 average, 1 most recent, 2 sum, 3 histogram); its values are averaged", key,
                               aggregation)
            aggregation = STAT_AVERAGE
        self.aggregation[key] = aggregation
        if aggregation == STAT_MOST_RECENT:
            self.values[key] = [value]
        else:
            self.values[key].append(value)

    def take_stats(self) -> dict[str, tuple[list[float], int]]:
        taken = {k: (v, self.aggregation[k]) for k, v in self.values.items() if v}
        self.values = defaultdict(list)
        return taken


class SideChannels:
    """The channels of one connection, by id: what goes out with the next input, and where each
    record that comes in goes."""

    def __init__(self, channels: list[SideChannel]) -> None:
        self.channels: dict[uuid.UUID, SideChannel] = {}
        for channel in channels:
            if channel.channel_id in self.channels:
                raise EnvError(f"two side channels share the id {channel.channel_id}: "
                               f"{type(self.channels[channel.channel_id]).__name__} and {type(channel).__name__}")
            self.channels[channel.channel_id] = channel
        self._warned: set[uuid.UUID] = set()

    def outgoing(self) -> bytes:
        records = []
        for channel in self.channels.values():
            records += [(channel.channel_id, payload) for payload in channel.outgoing]
            channel.outgoing.clear()
        return encode(records)

    def dispatch(self, data: bytes) -> None:
        for channel_id, payload in decode(data):
            channel = self.channels.get(channel_id)
            if channel is not None:
                channel.on_message(payload)
            elif channel_id not in self._warned:  # as ML-Agents: a scene may talk to channels nobody registered
                self._warned.add(channel_id)
                logger.warning("Unity sent a message on side channel %s, which no channel here is registered "
                               "for; its messages are ignored", channel_id)
