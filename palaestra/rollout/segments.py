"""Segments of experience, and the step data around them (what the policy returns for a batch of
agents, the statistics of the episodes that ended).

Every field of a segment is declared once, in :data:`FIELDS`: its name, whether it holds one
entry per row (``[F, H, ...]``: per agent step) or one per segment (``[F, ...]``), its trailing
shape as a function of the behavior's sizes (:class:`SegmentSizes`: its spec and a recurrent
policy's memory) and its dtype. Everything that handles segments as a whole follows from that
declaration (:class:`SegmentSchema`): the :class:`Segments` container and its attributes
(``seg.length``, ``seg.observations``), :meth:`~SegmentSchema.concatenate`, the collector's slot buffers and
the cutting of finished segments out of them (rollout/collector.py), and the packing of a round's
segments into shared memory and back (:meth:`~SegmentSchema.pack`, :meth:`~SegmentSchema.unpack`,
used by workers/acting.py). A new per-row field that the policy produces (an LSTM memory) is one
more line in :data:`FIELDS` (and the policy's output of that name in :class:`ActResult`).

Observations keep their own shapes and dtypes: a field declared ``observations`` is one field per
observation of the behavior (``obs_0``, ``obs_1``, ...; float32 vectors, uint8 images), so a
behavior's schema follows from its observation shapes (:func:`segment_schema`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from palaestra.envs.base import BehaviorSpec
from palaestra.envs.observations import stored_dtype


@dataclass
class ActResult:
    """What the policy returns for one decision batch (numpy arrays over agents)."""

    continuous: np.ndarray  # [n, c] raw (unclipped) actions, as sampled
    discrete: np.ndarray  # [n, b]
    log_prob: np.ndarray  # [n]
    entropy: np.ndarray  # [n]
    memory: np.ndarray | None = None  # [n, memory] recurrent policies: each agent's memory after acting


@dataclass
class EpisodeStats:
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    entropy_sum: float = 0.0
    entropy_count: int = 0

    def merge(self, other: "EpisodeStats") -> None:
        self.returns.extend(other.returns)
        self.lengths.extend(other.lengths)
        self.entropy_sum += other.entropy_sum
        self.entropy_count += other.entropy_count


@dataclass(frozen=True)
class SegmentSizes:
    """The sizes a behavior's segment fields are shaped by."""

    observations: tuple[tuple[int, ...], ...]  # each observation's shape
    continuous: int  # continuous actions
    discrete: int  # discrete branches
    mask: int  # one allowed flag per discrete action: the sum of the branch sizes
    memory: int = 0  # a recurrent policy's stored memory per agent (0: none)

    @staticmethod
    def of(spec: BehaviorSpec, memory: int = 0) -> "SegmentSizes":
        return SegmentSizes(observations=tuple(tuple(s) for s in spec.observation_shapes),
                            continuous=spec.action_spec.continuous_size,
                            discrete=len(spec.action_spec.discrete_branches),
                            mask=int(sum(spec.action_spec.discrete_branches)), memory=memory)


@dataclass(frozen=True)
class Field:
    """One field of a segment."""

    name: str
    per_row: bool  # [F, H, *shape]: an entry per row (agent step); else [F, *shape]: one per segment
    shape: Callable[[SegmentSizes], tuple[int, ...]]  # the trailing shape
    dtype: Any
    blank: Any = 0  # per-row: what a row holds in the collector's buffers before it is written
    # per-row: the collector records the policy's output of the same name (ActResult) into it at
    # each decision. The collector fills the others itself: obs (the observations acted on),
    # allowed (the action mask), env_reward (the rewards until the next decision), and every
    # per-segment field when it cuts the segment.
    from_policy: bool = False
    # one field per observation of the behavior, ``{name}_{i}``, each with that observation's
    # shape and stored dtype (envs/observations.py); ``shape`` and ``dtype`` are unused
    observations: bool = False


ROW, SEGMENT = True, False

FIELDS: tuple[Field, ...] = (
    Field("obs", ROW, lambda s: (), None, observations=True),
    Field("continuous", ROW, lambda s: (s.continuous,), np.float32, from_policy=True),  # raw, unclipped
    Field("discrete", ROW, lambda s: (s.discrete,), np.int64, from_policy=True),
    # rows stay all-allowed until an environment sends a mask
    Field("allowed", ROW, lambda s: (s.mask,), np.bool_, blank=True),
    Field("log_prob", ROW, lambda s: (), np.float32, from_policy=True),
    Field("env_reward", ROW, lambda s: (), np.float32),  # the reward that followed the row's action
    Field("length", SEGMENT, lambda s: (), np.int64),  # rows; those past it are padding
    # the observation after the last row (PPO bootstraps the return from its value; off-policy targets)
    Field("next_obs", SEGMENT, lambda s: (), None, observations=True),
    # its action mask (all True after an episode end)
    Field("next_allowed", SEGMENT, lambda s: (s.mask,), np.bool_),
    Field("terminal", SEGMENT, lambda s: (), np.bool_),  # the episode truly ended (not interrupted)
    Field("episode_end", SEGMENT, lambda s: (), np.bool_),  # the episode ended, terminal or interrupted
    Field("slot", SEGMENT, lambda s: (), np.int64),  # the collector's slot: the agent, while it lives
)
# Recurrent policies' segments also keep, per row, the agent's memory the row was acted on with
# (training sequences start from it: networks/recurrent.py). The collector fills it.
MEMORY_FIELD = Field("memory", ROW, lambda s: (s.memory,), np.float32)


class Segments:
    """Finished segments: one array per field of ``schema`` as an attribute (``seg.obs_0``,
    ``seg.length``, ...), over ``F`` segments and, for per-row fields, ``H`` rows; rows past a
    segment's ``length`` are padding."""

    def __init__(self, schema: "SegmentSchema", arrays: Mapping[str, np.ndarray]) -> None:
        if arrays.keys() != schema.names:
            missing, extra = schema.names - arrays.keys(), arrays.keys() - schema.names
            raise ValueError(f"segments need exactly the schema's fields: missing {sorted(missing)}, "
                             f"unknown {sorted(extra)}")
        self.__dict__.update(arrays)
        self.schema = schema

    if TYPE_CHECKING:  # the fields' arrays
        def __getattr__(self, name: str) -> np.ndarray: ...

    @property
    def observations(self) -> list[np.ndarray]:
        """The observations acted on, one array ``[F, H, *shape]`` per observation."""
        return [getattr(self, name) for name in self.schema.observations["obs"]]

    @property
    def next_observations(self) -> list[np.ndarray]:
        """The observations after each segment's last row, one array ``[F, *shape]`` per observation."""
        return [getattr(self, name) for name in self.schema.observations["next_obs"]]

    @property
    def width(self) -> int:
        """``H``: the rows of the per-row arrays."""
        return getattr(self, self.schema.per_row[0].name).shape[1]

    @functools.cached_property
    def row_mask(self) -> np.ndarray:
        """``[F, H]``: True on the real rows. Computed once (segments are never modified: every
        consumer of a finished segment asks for it, several per finished episode)."""
        return np.arange(self.width)[None, :] < self.length[:, None]

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in self.schema.fields}

    @staticmethod
    def concatenate(parts: Sequence["Segments"]) -> "Segments":
        return parts[0].schema.concatenate(parts)


class SegmentSchema:
    """What follows from a declaration of fields (:data:`FIELDS` for every behavior; a test may
    declare more) for a behavior's observations."""

    RESERVED = frozenset(dir(Segments)) | {"schema"}

    def __init__(self, fields: Iterable[Field], observation_shapes: Iterable[tuple[int, ...]]) -> None:
        shapes = tuple(tuple(s) for s in observation_shapes)
        self.fields = tuple(f for declared in fields for f in _expand(declared, shapes))
        # the names of each per-observation field's fields, in observation order
        self.observations = {declared.name: tuple(f"{declared.name}_{i}" for i in range(len(shapes)))
                             for declared in fields if declared.observations}
        self.per_row = tuple(f for f in self.fields if f.per_row)
        self.per_segment = tuple(f for f in self.fields if not f.per_row)
        self.names = frozenset(f.name for f in self.fields)
        if len(self.names) != len(self.fields) or self.names & self.RESERVED:
            raise ValueError(f"field names must be unique and not among {sorted(self.RESERVED)}")
        if not self.per_row or "length" not in {f.name for f in self.per_segment}:
            raise ValueError("segments need a per-row field and the per-segment field 'length'")

    def row_buffers(self, sizes: SegmentSizes, slots: int, horizon: int) -> dict[str, np.ndarray]:
        """Every per-row field as a blank array ``[slots, horizon, ...]`` (the collector's slots)."""
        out = {}
        for f in self.per_row:
            out[f.name] = np.zeros((slots, horizon, *f.shape(sizes)), dtype=f.dtype)
            if f.blank:
                out[f.name][...] = f.blank
        return out

    def check(self, seg: Segments, sizes: SegmentSizes) -> None:
        """Raise ValueError unless every array of ``seg`` has its field's dtype and shape."""
        F, H = len(seg.length), seg.width
        for f in self.fields:
            a = getattr(seg, f.name)
            shape = (F, H, *f.shape(sizes)) if f.per_row else (F, *f.shape(sizes))
            if a.shape != shape or a.dtype != np.dtype(f.dtype):
                raise ValueError(f"segment field {f.name}: {a.dtype}{list(a.shape)}, declared "
                                 f"{np.dtype(f.dtype)}{list(shape)}")

    def concatenate(self, parts: Sequence[Segments]) -> Segments:
        """One batch of the segments of all ``parts``, per-row fields padded with zeros to the
        longest part's rows."""
        if len(parts) == 1:
            return parts[0]
        width = max(p.width for p in parts)
        out = {}
        for f in self.fields:
            arrays = [getattr(p, f.name) for p in parts]
            if not f.per_row or all(a.shape[1] == width for a in arrays):
                out[f.name] = np.concatenate(arrays)
                continue
            joined = np.zeros((sum(len(a) for a in arrays), width, *arrays[0].shape[2:]), np.result_type(*arrays))
            start = 0
            for a in arrays:
                joined[start : start + len(a), : a.shape[1]] = a
                start += len(a)
            out[f.name] = joined
        return Segments(self, out)

    def pack(self, parts: Sequence[Segments]) -> dict[str, np.ndarray]:
        """The segments of ``parts`` as flat arrays: per-row fields hold real rows only (no
        padding), one segment after the other; :meth:`unpack` restores them."""
        masks = [part.row_mask for part in parts]
        out = {f.name: np.concatenate([getattr(p, f.name)[m] for p, m in zip(parts, masks)]) for f in self.per_row}
        out |= {f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in self.per_segment}
        return out

    def unpack(self, arrays: Mapping[str, np.ndarray]) -> Segments:
        """The segments :meth:`pack` flattened, per-row fields padded with zeros to the longest."""
        length = arrays["length"]
        mask = np.arange(int(length.max()))[None, :] < length[:, None]
        out: dict[str, np.ndarray] = {}
        for f in self.per_row:
            rows = arrays[f.name]
            padded = np.zeros((*mask.shape, *rows.shape[1:]), dtype=rows.dtype)
            padded[mask] = rows
            out[f.name] = padded
        out |= {f.name: arrays[f.name] for f in self.per_segment}
        return Segments(self, out)


def slot_waves(slot: np.ndarray) -> list[np.ndarray]:
    """The segments ``slot`` lists, as index arrays in which each agent (slot) appears at most
    once: an agent's k-th segment is in wave k. Segments gathered over several steps (a worker's
    round) may hold several of one agent, in the order they happened; what runs through an
    agent's segments (a return, an episode's sums) takes the waves in order."""
    if len(slot) <= 1:
        return [np.arange(len(slot))]
    order = np.argsort(slot, kind="stable")
    ordered = slot[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    if first.all():  # each agent once (one step's segments): one wave
        return [np.arange(len(slot))]
    occurrence = np.empty(len(slot), np.int64)
    occurrence[order] = np.arange(len(slot)) - np.maximum.accumulate(np.where(first, np.arange(len(slot)), 0))
    return [np.flatnonzero(occurrence == wave) for wave in range(int(occurrence.max(initial=-1)) + 1)]


def _expand(declared: Field, shapes: tuple[tuple[int, ...], ...]) -> list[Field]:
    if not declared.observations:
        return [declared]
    return [Field(f"{declared.name}_{i}", declared.per_row, lambda s, i=i: s.observations[i], stored_dtype(shape))
            for i, shape in enumerate(shapes)]


@functools.lru_cache(maxsize=None)
def _schema(shapes: tuple[tuple[int, ...], ...], recurrent: bool) -> SegmentSchema:
    return SegmentSchema(FIELDS + ((MEMORY_FIELD,) if recurrent else ()), shapes)


def segment_schema(spec: BehaviorSpec, recurrent: bool = False) -> SegmentSchema:
    """The schema of :data:`FIELDS` (and, for a recurrent policy, the memory) for a behavior's
    observations (one object per set of shapes)."""
    return _schema(tuple(tuple(s) for s in spec.observation_shapes), recurrent)
