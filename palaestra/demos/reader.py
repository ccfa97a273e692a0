"""Reading Unity ML-Agents `.demo` recordings (a file, or a folder of them) into arrays.

The layout (docs/imitation.md has the whole story): at byte 0 a length-prefixed
``DemonstrationMetaProto`` in a 33-byte reserved block; at byte 33 a length-prefixed
``BrainParametersProto``; then ``number_steps`` length-prefixed records, one per decision of
one agent. Unity's recorder then appends a raw copy of the meta message, which is not a
record: reading stops after ``number_steps`` records. Records are ``AgentInfoActionPairProto``
(0.12 and later, and older files ML-Agents converted) or, before 0.12, bare ``AgentInfoProto``
messages whose action is the one taken at the *previous* decision ("legacy"); the header does
not say which, the first record does.

Each record becomes one row: what the agent saw, the reward since its previous decision, whether
the episode ended there, and the action it took (absent on some records: see ``has_action``).
"""

from __future__ import annotations

import logging
import math
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from palaestra.demos import png
from palaestra.demos.png import PNGError
from palaestra.demos.wire import FIXED32, LENGTH, VARINT, WireError, as_int32, expect, fields, float_at, floats, \
    read_varint, text, varints
from palaestra.envs.base import ActionSpec, BehaviorSpec
from palaestra.envs.observations import is_image

logger = logging.getLogger("palaestra")

HEADER_SIZE = 33  # the meta message's reserved block; brain parameters start here
SUPPORTED_API_VERSIONS = (0, 1)
PNG_BATCH = 2048  # images decoded together (see png.unfilter); bounds the memory of a batch
MAX_ROW_VALUES = 2**24  # values of one observation, or of an action, beyond any real behavior's (a damaged file)


class DemoError(Exception):
    """A `.demo` file or folder that cannot be read; the message names the file and the record."""


@dataclass(frozen=True)
class DemoMeta:
    """``DemonstrationMetaProto``: what the recorder wrote about the recording."""

    api_version: int = 1
    name: str = ""
    number_steps: int = 0
    number_episodes: int = 0
    mean_reward: float = 0.0


@dataclass(frozen=True)
class DemoFile:
    """One file of a demonstration set: its meta, how it is laid out and which rows are its."""

    path: Path
    meta: DemoMeta
    behavior_name: str
    layout: str  # "pairs" (AgentInfoActionPairProto records) or "legacy" (pre-0.12 AgentInfoProto records)
    trailer: str  # after the last record: "meta copy" (Unity's recorder), "none" (converted files), or "N bytes"
    first_row: int
    rows: int


@dataclass
class Demonstrations:
    """A demonstration set: one row per record, in file order (a folder's files sorted by name).

    ``observations``: one array ``[rows, *shape]`` per observation of ``spec``, vectors float32
    and images uint8 ``[height, width, channels]`` (palaestra/envs/observations.py).
    ``continuous_actions`` ``[rows, continuous_size]`` float32 and ``discrete_actions``
    ``[rows, branches]`` int32: the action taken at that record; zeros where ``has_action`` is
    False (Unity leaves the action out on a file's last record and, in later versions, on the
    record that ends an episode). ``rewards``: the reward received since the agent's previous
    decision. ``done``: the episode ended at this record; ``max_step_reached``: it ended by the
    step limit. ``action_masks`` ``[rows, sum of branch sizes]`` bool, True = unavailable,
    where ``has_mask``; None when no record carries a mask. ``episode_starts``: the first row
    of each episode (a new episode starts after each ``done`` row and at each file's start).
    """

    path: Path
    behavior_name: str
    spec: BehaviorSpec
    files: list[DemoFile]
    observations: list[np.ndarray]
    continuous_actions: np.ndarray
    discrete_actions: np.ndarray
    has_action: np.ndarray
    rewards: np.ndarray
    done: np.ndarray
    max_step_reached: np.ndarray
    agent_ids: np.ndarray
    action_masks: np.ndarray | None
    has_mask: np.ndarray
    episode_starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    def record_name(self, row: int) -> str:
        """Where row ``row`` was read: "record R", and in a folder "record R of FILE" (R counted in
        its own file, as a message about it must say)."""
        if len(self.files) > 1:
            for f in self.files:
                if f.first_row <= row < f.first_row + f.rows:
                    return f"record {row - f.first_row} of {f.path.name}"
        return f"record {row}"

    @property
    def meta(self) -> DemoMeta:
        """The files' meta messages together: steps and episodes summed, mean reward weighted by
        episodes (for one file, its meta as recorded)."""
        metas = [f.meta for f in self.files]
        episodes = sum(m.number_episodes for m in metas)
        total = sum(m.mean_reward * m.number_episodes for m in metas)
        return DemoMeta(max((m.api_version for m in metas), default=1), metas[0].name if len(metas) == 1 else "",
                        sum(m.number_steps for m in metas), episodes, total / episodes if episodes else 0.0)

    @property
    def episodes(self) -> int:
        """Episodes in the rows (Unity's meta counts one more when a recording ends after a done)."""
        return len(self.episode_starts)

    @property
    def mean_episode_reward(self) -> float:
        """The rows' total reward over their episodes, computed from the rows."""
        return float(self.rewards.sum(dtype=np.float64) / self.episodes) if self.episodes else 0.0

    def episode_slices(self) -> list[slice]:
        ends = list(self.episode_starts[1:]) + [len(self)]
        return [slice(int(s), int(e)) for s, e in zip(self.episode_starts, ends)]


# -- one observation's layout, learnt from the first record ------------------------------------

@dataclass(frozen=True)
class _Observation:
    proto_shape: tuple[int, ...]  # as the records state it
    shape: tuple[int, ...]  # as stored here: images height x width x channels
    compressed: bool
    channels_first: bool  # a rank-3 shape given as channels x height x width
    mapping: tuple[int, ...] = ()  # compressed_channel_mapping of concatenated PNGs


@dataclass
class _ObservationProto:
    shape: tuple[int, ...] = ()
    compression: int = 0
    data: tuple[int, int] | None = None
    float_span: tuple[int, int] | None = None
    unpacked_floats: list[float] | None = None
    mapping: tuple[int, ...] = ()
    dims: tuple[int, ...] = ()


def _repeated_ints(buf, wire: int, a: int, b: int) -> list[int]:
    return varints(buf, a, b) if wire == LENGTH else [as_int32(a)]


def _observation_proto(buf, start: int, end: int) -> _ObservationProto:
    o = _ObservationProto()
    shape: list[int] = []
    for number, wire, a, b in fields(buf, start, end):
        if number == 1:
            shape += _repeated_ints(buf, wire, a, b)
        elif number == 2:
            expect(number, wire, VARINT, "ObservationProto")
            o.compression = a
        elif number == 3:
            expect(number, wire, LENGTH, "ObservationProto")
            o.data = (a, b)
        elif number == 4:
            expect(number, wire, LENGTH, "ObservationProto")
            for n2, w2, a2, b2 in fields(buf, a, b):
                if n2 != 1:
                    continue
                if w2 == LENGTH:
                    if o.float_span is None:
                        o.float_span = (a2, b2)
                    else:  # a packed field split in two is legal protobuf: keep every value
                        o.unpacked_floats = list(floats(buf, *o.float_span)) + list(floats(buf, a2, b2))
                elif w2 == FIXED32:  # an unpacked repeated float, also legal
                    o.unpacked_floats = (o.unpacked_floats or []) + [float_at(buf, a2)]
                else:
                    expect(n2, w2, LENGTH, "ObservationProto.FloatData")
        elif number == 5:
            o.mapping += tuple(_repeated_ints(buf, wire, a, b))
        elif number == 6:
            o.dims += tuple(_repeated_ints(buf, wire, a, b))
    o.shape = tuple(shape)
    return o


def _observation_layout(o: _ObservationProto) -> _Observation:
    shape = o.shape
    if any(d < 0 for d in shape) or math.prod(shape) > MAX_ROW_VALUES:
        raise ValueError(f"an observation of shape {list(shape)}" + (", a negative size" if any(d < 0 for d in shape)
                         else f", over {MAX_ROW_VALUES:,} values a row"))
    if not o.compression and o.unpacked_floats is None:  # its floats must fill the shape it states
        count = (o.float_span[1] - o.float_span[0]) // 4 if o.float_span is not None else 0
        if count != math.prod(shape):
            raise ValueError(f"an observation of shape {list(shape)} holds {count} values")
    # dimension_properties (later recorders): 1 ("none") marks the channel axis of an image
    channels_first = len(shape) == 3 and len(o.dims) == 3 and o.dims[0] == 1 and o.dims[2] != 1
    stored = (shape[1], shape[2], shape[0]) if channels_first else shape
    if o.compression not in (0, 1):
        raise ValueError(f"compression type {o.compression} (0 none and 1 PNG exist)")
    if o.compression == 1 and len(shape) != 3:
        raise ValueError(f"a PNG observation with shape {list(shape)}; images have 3 dimensions")
    return _Observation(shape, stored, o.compression == 1, channels_first, o.mapping)


# -- agent infos and actions -------------------------------------------------------------------

@dataclass
class _Info:
    reward: float = 0.0
    done: bool = False
    max_step: bool = False
    agent_id: int = 0
    mask: list[int] | None = None
    observations: list[tuple[int, int]] = field(default_factory=list)
    # legacy (pre-0.12) records only
    legacy_vector: tuple[int, int] | None = None
    legacy_visual: list[tuple[int, int]] = field(default_factory=list)
    legacy_action: tuple[int, int] | None = None


def _agent_info(buf, start: int, end: int, legacy: bool) -> _Info:
    info = _Info()
    for number, wire, a, b in fields(buf, start, end):
        if number == 7:
            expect(number, wire, FIXED32, "AgentInfoProto")
            info.reward = float_at(buf, a)
        elif number == 8:
            expect(number, wire, VARINT, "AgentInfoProto")
            info.done = bool(a)
        elif number == 9:
            expect(number, wire, VARINT, "AgentInfoProto")
            info.max_step = bool(a)
        elif number == 10:
            expect(number, wire, VARINT, "AgentInfoProto")
            info.agent_id = as_int32(a)
        elif number == 11:
            info.mask = (info.mask or []) + _repeated_ints(buf, wire, a, b)
        elif number == 13 and not legacy:
            expect(number, wire, LENGTH, "AgentInfoProto")
            info.observations.append((a, b))
        elif legacy and number == 1:
            expect(number, wire, LENGTH, "AgentInfoProto (pre-0.12)")
            info.legacy_vector = (a, b)
        elif legacy and number == 2:
            expect(number, wire, LENGTH, "AgentInfoProto (pre-0.12)")
            info.legacy_visual.append((a, b))
        elif legacy and number == 4:
            expect(number, wire, LENGTH, "AgentInfoProto (pre-0.12)")
            info.legacy_action = (a, b)
        elif not legacy and number <= 6:
            # retired in 0.12 and never reused: a record holding them is a pre-0.12 one
            raise WireError(f"AgentInfoProto field {number} was retired in ML-Agents 0.12", a)
    return info


def _action(buf, start: int, end: int) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """``AgentActionProto``: (vector_actions, continuous_actions, discrete_actions), None where absent."""
    vector = continuous = None
    discrete: list[int] | None = None
    for number, wire, a, b in fields(buf, start, end):
        if number in (1, 6):
            values = floats(buf, a, b) if wire == LENGTH else np.array([float_at(buf, a)], np.float32)
            if wire not in (LENGTH, FIXED32):
                expect(number, wire, LENGTH, "AgentActionProto")
            if number == 1:
                vector = values if vector is None else np.concatenate([vector, values])
            else:
                continuous = values if continuous is None else np.concatenate([continuous, values])
        elif number == 7:
            discrete = (discrete or []) + _repeated_ints(buf, wire, a, b)
    return vector, continuous, None if discrete is None else np.array(discrete, np.int64)


def _pair(buf, start: int, end: int) -> tuple[_Info, tuple[int, int] | None]:
    info_span = action_span = None
    for number, wire, a, b in fields(buf, start, end):
        if number == 1:
            expect(number, wire, LENGTH, "AgentInfoActionPairProto")
            info_span = (a, b)
        elif number == 2:
            expect(number, wire, LENGTH, "AgentInfoActionPairProto")
            action_span = (a, b)
        else:
            raise WireError(f"AgentInfoActionPairProto has fields 1 and 2, not {number}", a)
    if info_span is None:
        raise WireError("the record has no agent info", start)
    return _agent_info(buf, *info_span, legacy=False), action_span


# -- brain parameters --------------------------------------------------------------------------

@dataclass
class _Brain:
    name: str = ""
    action_spec: ActionSpec = ActionSpec()
    vector_observation_size: int = 0  # retired fields of pre-0.12 brains
    stacked: int = 1
    grey_cameras: tuple[bool, ...] = ()


def _brain(buf, start: int, end: int) -> _Brain:
    brain = _Brain()
    sizes: list[int] = []
    space_type = 0
    spec_fields: dict[int, list[int]] = {}
    greys: list[bool] = []
    for number, wire, a, b in fields(buf, start, end):
        if number == 1 and wire == VARINT:
            brain.vector_observation_size = a
        elif number == 2 and wire == VARINT:
            brain.stacked = max(a, 1)
        elif number == 3:
            sizes += _repeated_ints(buf, wire, a, b)
        elif number == 4 and wire == LENGTH:  # camera resolution {width 1, height 2, black_and_white 3}
            greys.append(any(n == 3 and v for n, _, v, _ in fields(buf, a, b)))
        elif number == 6:
            expect(number, wire, VARINT, "BrainParametersProto")
            space_type = a
        elif number == 7:
            expect(number, wire, LENGTH, "BrainParametersProto")
            brain.name = text(buf, a, b)
        elif number == 9:
            expect(number, wire, LENGTH, "BrainParametersProto")
            for n2, w2, a2, b2 in fields(buf, a, b):
                if n2 in (1, 2, 3):
                    spec_fields.setdefault(n2, []).extend(_repeated_ints(buf, w2, a2, b2))
    brain.grey_cameras = tuple(greys)
    continuous, discrete = sum(spec_fields.get(1, [])), sum(spec_fields.get(2, []))
    if continuous or discrete:  # action_spec (API 1.3 and later) wins over the retired fields
        branches = tuple(spec_fields.get(3, []))
        if len(branches) != discrete:
            raise WireError(f"action_spec has {discrete} discrete actions but {len(branches)} branch sizes", start)
        brain.action_spec = ActionSpec(continuous, branches)
    elif space_type == 1:
        if not sizes:
            raise WireError("continuous actions without vector_action_size", start)
        brain.action_spec = ActionSpec(sizes[0])
    else:
        brain.action_spec = ActionSpec(0, tuple(sizes))
    if any(s <= 0 for s in brain.action_spec.discrete_branches) or brain.action_spec.continuous_size < 0:
        raise WireError(f"action sizes {brain.action_spec.describe()} are not positive", start)
    actions = brain.action_spec
    if actions.continuous_size + actions.num_branches + sum(actions.discrete_branches) > MAX_ROW_VALUES:
        raise WireError(f"action sizes {actions.describe()} are far beyond any behavior's", start)
    return brain


# -- one file ----------------------------------------------------------------------------------

@dataclass
class _Scan:
    path: Path
    buf: mmap.mmap | bytes
    meta: DemoMeta
    brain: _Brain
    spans: list[tuple[int, int]]
    layout: str
    trailer: str
    observations: list[_Observation]


def _fail(path: Path, what: str) -> DemoError:
    return DemoError(f"{path}: {what}")


def _open(path: Path) -> mmap.mmap | bytes:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return b""
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise _fail(path, f"cannot be read: {e.strerror or e}") from None


def _meta(buf, path: Path) -> tuple[DemoMeta, bytes]:
    if len(buf) < HEADER_SIZE:
        raise _fail(path, f"is {len(buf)} bytes long; a .demo file starts with a {HEADER_SIZE}-byte header")
    try:
        length, pos = read_varint(buf, 0, HEADER_SIZE)
        if pos + length > HEADER_SIZE:
            raise WireError(f"the meta message claims {length} bytes; the header holds {HEADER_SIZE - pos}", 0)
        values: dict[int, object] = {}
        for number, wire, a, b in fields(buf, pos, pos + length):
            if number in (1, 3, 4):
                expect(number, wire, VARINT, "DemonstrationMetaProto")
                values[number] = as_int32(a)
            elif number == 2:
                expect(number, wire, LENGTH, "DemonstrationMetaProto")
                values[2] = text(buf, a, b)
            elif number == 5:
                expect(number, wire, FIXED32, "DemonstrationMetaProto")
                values[5] = float_at(buf, a)
    except WireError as e:
        raise _fail(path, f"the header (DemonstrationMetaProto) is not valid: {e}; is this a .demo file?") from None
    meta = DemoMeta(int(values.get(1, 0)), str(values.get(2, "")), int(values.get(3, 0)),
                    int(values.get(4, 0)), float(values.get(5, 0.0)))
    if meta.api_version not in SUPPORTED_API_VERSIONS:
        raise _fail(path, f"api_version {meta.api_version} is not supported (supported: "
                          f"{', '.join(map(str, SUPPORTED_API_VERSIONS))})")
    if meta.number_steps < 0:
        raise _fail(path, f"the header claims {meta.number_steps} steps")
    return meta, bytes(buf[pos:pos + length])


def _record_spans(buf, path: Path, meta: DemoMeta, meta_bytes: bytes, start: int) -> tuple[list[tuple[int, int]], str]:
    """Where each record is; reading stops after ``number_steps`` records (the bytes after them
    are Unity's raw meta copy). A file that claims no steps holds none when the rest is that
    copy, and otherwise records up to its end (a recording that was never closed)."""
    end = len(buf)
    spans: list[tuple[int, int]] = []
    pos = start
    to_end = meta.number_steps == 0 and not _is_meta_copy(buf, start, meta_bytes)
    wanted = meta.number_steps
    while (len(spans) < wanted or to_end) and pos < end:
        try:
            length, body = read_varint(buf, pos, end)
        except WireError:
            raise _fail(path, f"record {len(spans)}: the file ends inside the record's length "
                              f"(byte {pos} of {end})") from None
        if body + length > end:
            claimed = f" of {wanted}" if wanted else ""
            raise _fail(path, f"record {len(spans)}{claimed} at byte {pos} claims {length} bytes but the file ends "
                              f"{end - body} bytes later: the file is truncated")
        spans.append((body, body + length))
        pos = body + length
    if len(spans) < wanted:
        raise _fail(path, f"the header claims {wanted} records but the file ends after {len(spans)}: "
                          "the file is truncated")
    trailer = "none" if pos >= end else "meta copy" if _is_meta_copy(buf, pos, meta_bytes) else f"{end - pos} bytes"
    return spans, trailer


def _is_meta_copy(buf, pos: int, meta_bytes: bytes) -> bool:
    """Whether the bytes from ``pos`` to the end are Unity's raw meta copy (compared only when the
    sizes agree: the rest of a large file is not copied to find it is not)."""
    return len(buf) - pos == len(meta_bytes) and bytes(buf[pos:]) == meta_bytes


def _layout(buf, first: tuple[int, int], path: Path) -> str:
    """"pairs" or "legacy", from the first record: a pair has fields 1 and 2 only, and its agent
    info no field below 7; a pre-0.12 record has its observation in field 1 and other fields
    beside it."""
    try:
        _pair(buf, *first)
        return "pairs"
    except WireError as pair_error:
        try:
            info = _agent_info(buf, *first, legacy=True)
        except WireError:
            raise _fail(path, f"record 0 is not a valid record: {pair_error}") from None
        if info.legacy_vector is None and not info.legacy_visual:
            raise _fail(path, f"record 0 is not a valid record: {pair_error}") from None
        return "legacy"


def _scan(path: Path) -> _Scan:
    buf = _open(path)
    meta, meta_bytes = _meta(buf, path)
    try:
        length, pos = read_varint(buf, HEADER_SIZE, len(buf))
        if pos + length > len(buf):
            raise WireError(f"it claims {length} bytes and the file has {len(buf) - pos} left", HEADER_SIZE)
        brain = _brain(buf, pos, pos + length)
    except WireError as e:
        raise _fail(path, f"the brain parameters at byte {HEADER_SIZE} are not valid: {e}") from None
    spans, trailer = _record_spans(buf, path, meta, meta_bytes, pos + length)
    layout = _layout(buf, spans[0], path) if spans else "pairs"
    observations: list[_Observation] = []
    if spans:
        try:
            observations = _first_observations(buf, spans[0], layout, brain)
        except (WireError, ValueError, PNGError) as e:
            raise _fail(path, f"record 0: {e}") from None
    return _Scan(path, buf, meta, brain, spans, layout, trailer, observations)


def _first_observations(buf, span: tuple[int, int], layout: str, brain: _Brain) -> list[_Observation]:
    if layout == "pairs":
        info, _ = _pair(buf, *span)
        return [_observation_layout(_observation_proto(buf, a, b)) for a, b in info.observations]
    info = _agent_info(buf, *span, legacy=True)
    out = []
    if info.legacy_vector is not None:
        size = (info.legacy_vector[1] - info.legacy_vector[0]) // 4
        out.append(_Observation((size,), (size,), False, False))
    for i, (a, b) in enumerate(info.legacy_visual):
        height, width, channels = png.read_png(buf[a:b])[0]
        grey = i < len(brain.grey_cameras) and brain.grey_cameras[i]
        shape = (height, width, 1 if grey else min(channels, 3))
        out.append(_Observation(shape, shape, True, False))
    return out


# -- decoding rows -----------------------------------------------------------------------------

@dataclass
class _Rows:
    observations: list[np.ndarray]
    continuous: np.ndarray
    discrete: np.ndarray
    has_action: np.ndarray
    rewards: np.ndarray
    done: np.ndarray
    max_step: np.ndarray
    agent_ids: np.ndarray
    masks: np.ndarray
    has_mask: np.ndarray

    @staticmethod
    def allocate(n: int, spec: BehaviorSpec) -> "_Rows":
        return _Rows(
            [np.zeros((n, *s), np.uint8 if is_image(s) else np.float32) for s in spec.observation_shapes],
            np.zeros((n, spec.action_spec.continuous_size), np.float32),
            np.zeros((n, spec.action_spec.num_branches), np.int32), np.zeros(n, bool), np.zeros(n, np.float32),
            np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, np.int64),
            np.zeros((n, sum(spec.action_spec.discrete_branches)), bool), np.zeros(n, bool))


def _decode_file(scan: _Scan, spec: BehaviorSpec, rows: _Rows, first: int) -> None:
    """Decode every record of ``scan`` into rows ``first ...`` of ``rows``."""
    buf, layouts, action_spec = scan.buf, scan.observations, spec.action_spec
    images: list[list[tuple[int, int, list[tuple[int, int]]]]] = [[] for _ in layouts]  # (row, record, PNG spans)
    legacy_actions: list[np.ndarray | None] = []
    mask_size = rows.masks.shape[1]
    record = 0
    try:
        for record, (start, end) in enumerate(scan.spans):
            row = first + record
            if scan.layout == "pairs":
                info, action_span = _pair(buf, start, end)
                protos = [_observation_proto(buf, a, b) for a, b in info.observations]
                if len(protos) != len(layouts):
                    raise ValueError(f"{len(protos)} observations; record 0 has {len(layouts)}")
                for i, (o, layout) in enumerate(zip(protos, layouts)):
                    _store_observation(buf, o, layout, i, rows.observations[i], row, images[i], record)
                if action_span is not None:
                    _store_action(*_action(buf, *action_span), action_spec, rows, row)
            else:
                info = _agent_info(buf, start, end, legacy=True)
                _store_legacy_observations(buf, info, layouts, rows, row, images, record)
                legacy_actions.append(None if info.legacy_action is None else floats(buf, *info.legacy_action))
            rows.rewards[row] = info.reward
            rows.done[row] = info.done
            rows.max_step[row] = info.max_step
            rows.agent_ids[row] = info.agent_id
            if info.mask is not None and len(info.mask):
                if len(info.mask) != mask_size:
                    raise ValueError(f"an action mask of {len(info.mask)} entries; the branches "
                                     f"{list(action_spec.discrete_branches)} need {mask_size}")
                rows.masks[row] = info.mask
                rows.has_mask[row] = True
        record = -1
        if scan.layout == "legacy":
            # a pre-0.12 record stores the action taken at the previous decision: record i's
            # action is record i+1's, and the last record has none (as ML-Agents' 0.13 upgrade did)
            for i, values in enumerate(legacy_actions[1:]):
                record = i
                if values is not None and len(values):
                    _store_action(values, None, None, action_spec, rows, first + i)
        for i, layout in enumerate(layouts):
            if images[i]:
                _decode_images(buf, images[i], layout, rows.observations[i])
        _check_discrete(rows.discrete[first:first + len(scan.spans)], action_spec)
    except (WireError, ValueError, PNGError) as e:
        where = f"record {record} of {len(scan.spans)}" if record >= 0 else "a record"
        if isinstance(e, _LateError):
            where = f"record {e.record} of {len(scan.spans)}"
        raise _fail(scan.path, f"{where}: {e}") from None


def _check_discrete(discrete: np.ndarray, spec: ActionSpec) -> None:
    outside = (discrete < 0) | (discrete >= np.array(spec.discrete_branches, np.int64))
    if outside.any():
        record = int(np.flatnonzero(outside.any(axis=1))[0])
        raise _LateError(f"discrete action {discrete[record].tolist()} is outside the branches "
                          f"{list(spec.discrete_branches)}", record)


def _store_observation(buf, o: _ObservationProto, layout: _Observation, index: int, out: np.ndarray, row: int,
                       images: list, record: int) -> None:
    if o.shape != layout.proto_shape:
        raise ValueError(f"observation {index} has shape {list(o.shape)}; record 0's has {list(layout.proto_shape)}")
    if o.compression == 1:
        if o.data is None:
            raise ValueError(f"observation {index} is PNG-compressed but holds no data")
        start, end = o.data
        images.append((row, record, [(start + a, start + b) for a, b in png.split_pngs(buf[start:end])]))
        return
    values = floats(buf, *o.float_span) if o.unpacked_floats is None and o.float_span else \
        np.array(o.unpacked_floats or [], np.float32)
    if values.size != out[row].size:
        raise ValueError(f"observation {index} of shape {list(o.shape)} holds {values.size} floats")
    if layout.channels_first:
        values = values.reshape(layout.proto_shape).transpose(1, 2, 0)
    if out.dtype == np.uint8:  # an uncompressed image: floats in [0, 1], stored as uint8
        out[row] = np.rint(np.clip(values.reshape(out.shape[1:]), 0.0, 1.0) * 255.0)
    else:
        out[row] = values.reshape(out.shape[1:])


def _store_legacy_observations(buf, info: _Info, layouts: list[_Observation], rows: _Rows, row: int,
                               images: list, record: int) -> None:
    vector = 1 if layouts and not layouts[0].compressed else 0
    if vector:
        values = floats(buf, *info.legacy_vector) if info.legacy_vector else np.zeros(0, np.float32)
        if values.size != layouts[0].shape[0]:
            raise ValueError(f"a vector observation of {values.size} floats; record 0's has {layouts[0].shape[0]}")
        rows.observations[0][row] = values
    if len(info.legacy_visual) != len(layouts) - vector:
        raise ValueError(f"{len(info.legacy_visual)} camera images; record 0 has {len(layouts) - vector}")
    for i, span in enumerate(info.legacy_visual):
        images[vector + i].append((row, record, [span]))


def _store_action(vector, continuous, discrete, spec: ActionSpec, rows: _Rows, row: int) -> None:
    if continuous is None and discrete is None and vector is not None and len(vector):
        if spec.is_continuous and spec.is_discrete:
            raise ValueError("only vector_actions are given, but the behavior has continuous and discrete actions")
        if spec.is_continuous:
            continuous = vector
        else:
            if not np.isfinite(vector).all() or (vector != np.round(vector)).any():  # NaN, inf, 1.5
                raise ValueError(f"discrete actions {vector.tolist()} are not whole numbers")
            if (np.abs(vector) >= 2**31).any():  # (it would wrap into some branch's range when cast)
                raise ValueError(f"discrete actions {vector.tolist()} are outside any branch")
            discrete = vector.astype(np.int64)
    n_cont = 0 if continuous is None else len(continuous)
    n_disc = 0 if discrete is None else len(discrete)
    if n_cont == 0 and n_disc == 0:
        return  # an empty action: has_action stays False
    if n_cont != spec.continuous_size or n_disc != spec.num_branches:
        raise ValueError(f"an action of {n_cont} continuous and {n_disc} discrete values; the behavior's actions are "
                         f"{spec.describe()}")
    if n_cont:
        rows.continuous[row] = continuous
    if n_disc:  # the branch ranges are checked for all rows at once (_check_discrete)
        rows.discrete[row] = discrete
    rows.has_action[row] = True


class _LateError(ValueError):
    """A problem found after the record loop (images, action ranges), with its record."""

    def __init__(self, message: str, record: int) -> None:
        super().__init__(message)
        self.record = record


def _decode_images(buf, items: list, layout: _Observation, out: np.ndarray) -> None:
    """The PNG observations of one observation index, decoded in batches of one image size.
    Several PNGs in one observation are its channels, three at a time."""
    height, width, channels = layout.shape
    for first in range(0, len(items), PNG_BATCH):
        batch = items[first:first + PNG_BATCH]
        parts = max(len(spans) for _, _, spans in batch)
        decoded = []
        for part in range(parts):
            raws, shape = [], None
            for row, record, spans in batch:
                if len(spans) != parts:
                    raise _LateError(f"an observation of {len(spans)} PNG images; others have {parts}", record)
                try:
                    this, raw = png.read_png(buf[spans[part][0]:spans[part][1]])
                except PNGError as e:
                    raise _LateError(str(e), record) from None
                if shape is None:
                    shape = this
                if this != shape or this[:2] != (height, width):
                    raise _LateError(f"a {this[0]}x{this[1]}x{this[2]} PNG image; the observation's shape is "
                                      f"{list(layout.proto_shape)}", record)
                raws.append(raw)
            decoded.append(png.unfilter(np.stack(raws), shape[2]).reshape(len(batch), height, width, shape[2]))
        rows = np.array([row for row, _, _ in batch])
        out[rows] = _channels(decoded, layout, channels, batch[0][1])


def _channels(decoded: list[np.ndarray], layout: _Observation, channels: int, record: int) -> np.ndarray:
    """PNG channels → the observation's channels, as ML-Agents does: with a channel mapping,
    the mean of the channels mapped to each; one channel: the mean of the first image's
    channels (a grey camera is stored as RGB); otherwise the first ``channels`` channels."""
    if layout.mapping:
        stacked = np.concatenate(decoded, axis=3)
        mapping = np.array(layout.mapping)
        if len(mapping) != stacked.shape[3] or mapping.max() + 1 != channels:
            raise _LateError(f"a channel mapping {mapping.tolist()} for {stacked.shape[3]} PNG channels and "
                              f"{channels} observation channels", record)
        return np.stack([np.rint(stacked[..., mapping == c].mean(axis=3)) for c in range(channels)], axis=3)
    if channels == 1:
        return np.rint(decoded[0].mean(axis=3, keepdims=True))
    stacked = np.concatenate(decoded, axis=3)
    if stacked.shape[3] < channels:
        raise _LateError(f"PNG images with {stacked.shape[3]} channels; the observation has {channels}", record)
    return stacked[..., :channels]


# -- files and folders -------------------------------------------------------------------------

def demo_files(path: str | os.PathLike) -> list[Path]:
    """The `.demo` files a path names: the file itself, or every `.demo` file in a folder,
    sorted by name; ``~`` is the home folder."""
    p = Path(path).expanduser()
    if p.is_dir():
        try:
            files = sorted(f for f in p.iterdir() if f.suffix == ".demo" and f.is_file())
        except OSError as e:  # (not readable by this user)
            raise DemoError(f"{p}: the folder cannot be read: {e.strerror or e}") from None
        if not files:
            raise DemoError(f"{p}: the folder holds no .demo files")
        return files
    if not p.exists() and p.is_symlink():
        raise DemoError(f"{p}: a link that leads to no file (its target is missing, or links loop back)")
    if not p.exists():
        relative = "" if p.is_absolute() else f" (a relative path is read from the working directory, {Path.cwd()})"
        raise DemoError(f"{p}: no such demonstration file or folder{relative}")
    if p.suffix != ".demo":
        raise DemoError(f"{p}: not a .demo file (a demonstration path is a .demo file or a folder of them)")
    if not p.is_file():  # (reading a pipe would wait for a writer forever)
        raise DemoError(f"{p}: not a regular file (a pipe, socket or device); a demonstration path is a .demo file "
                        "or a folder of them")
    return [p]


def _spec(scan: _Scan) -> BehaviorSpec:
    return BehaviorSpec(tuple(o.shape for o in scan.observations), scan.brain.action_spec)


def _describe(spec: BehaviorSpec, known_observations: bool = True) -> str:
    obs = [list(s) for s in spec.observation_shapes] if known_observations else "unknown (no records)"
    return f"observations {obs}, actions {spec.action_spec.describe()}"


def read_demonstrations(path: str | os.PathLike) -> Demonstrations:
    """Read a `.demo` file or a folder of them into one :class:`Demonstrations`. The files of a
    folder must describe the same behavior (observation shapes and actions); a file without
    records only has to agree on the actions. Raises :class:`DemoError` with the file and the
    record for anything that cannot be read."""
    scans: list[_Scan] = []
    try:
        for f in demo_files(path):
            scans.append(_scan(f))
        with_records = [s for s in scans if s.spans]
        reference = with_records[0] if with_records else scans[0]
        spec = _spec(reference)
        for s in scans:
            other = _spec(s)
            if other.action_spec != spec.action_spec or (s.spans and other != spec):
                raise DemoError(f"{s.path} ({_describe(other, bool(s.spans))}) and {reference.path} "
                                f"({_describe(spec, bool(reference.spans))}) record different behaviors; "
                                "a folder's files must share observation shapes and actions")
        behaviors = sorted({s.brain.name.partition("?")[0] for s in scans if s.brain.name})
        if len(behaviors) > 1:  # (palaestra-record writes each behavior of an environment into one folder)
            logger.warning("%s: its files record the behaviors %s, read as one set of demonstrations since they "
                           "observe and act alike; give one file's path for a behavior to learn from its own",
                           Path(path), ", ".join(behaviors))
        n = sum(len(s.spans) for s in scans)
        try:
            rows = _Rows.allocate(n, spec)
        except MemoryError:
            raise DemoError(f"{Path(path)}: {n:,} records of {_describe(spec)} do not fit in memory") from None
        files, first = [], 0
        for s in scans:
            _decode_file(s, spec, rows, first)
            files.append(DemoFile(s.path, s.meta, s.brain.name, s.layout, s.trailer, first, len(s.spans)))
            first += len(s.spans)
    finally:
        for s in scans:
            if isinstance(s.buf, mmap.mmap):
                try:
                    s.buf.close()
                except BufferError:  # a view still refers to it; it closes when that goes
                    pass
    starts = np.zeros(len(rows.rewards), bool)
    for f in files:
        if f.rows:
            starts[f.first_row] = True
    starts[1:] |= rows.done[:-1]
    return Demonstrations(
        path=Path(path), behavior_name=reference.brain.name, spec=spec, files=files,
        observations=rows.observations, continuous_actions=rows.continuous, discrete_actions=rows.discrete,
        has_action=rows.has_action, rewards=rows.rewards, done=rows.done, max_step_reached=rows.max_step,
        agent_ids=rows.agent_ids, action_masks=rows.masks if rows.has_mask.any() else None,
        has_mask=rows.has_mask, episode_starts=np.flatnonzero(starts))
