"""Segment fields are declared once (rollout/segments.py): the collector's segments match the
declaration, and a field added to it goes through the collector, concatenation and the packing
into shared memory without any other change."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from palaestra.envs.base import ActionSpec, BehaviorSpec, DecisionSteps, TerminalSteps
from palaestra.rollout.collector import Collector
from palaestra.rollout.segments import (
    FIELDS,
    ROW,
    SEGMENTS,
    ActResult,
    Field,
    SegmentSchema,
    Segments,
    SegmentSizes,
)
from palaestra.workers.shared_memory import SharedArrays, pack_arrays, unpack_arrays

CONTINUOUS = BehaviorSpec(((3,), (2, 2)), ActionSpec(continuous_size=2))
MASKED = BehaviorSpec(((4,),), ActionSpec(discrete_branches=(3, 2)))


@dataclass
class WithMemory(ActResult):
    """A policy output with one more per-row value, as a recurrent policy's memory would be."""

    memory: np.ndarray  # [n, 3]


def _policy(spec: BehaviorSpec, signals: int):
    branches = spec.action_spec.discrete_branches

    def act(obs, allowed):
        n = len(obs)
        return WithMemory(
            continuous=obs[:, :1].repeat(spec.action_spec.continuous_size, axis=1),
            discrete=np.zeros((n, len(branches)), np.int64), log_prob=obs[:, 0] - 1.0,
            entropy=np.ones(n, np.float32), values=np.repeat(obs[:, :1], signals, axis=1) * 10.0,
            memory=obs[:, :1] + np.arange(3, dtype=np.float32))  # memory[k] = first observation + k

    def value(obs):
        return np.repeat(obs[:, :1], signals, axis=1) * 10.0

    return act, value


def _run(spec: BehaviorSpec, schema: SegmentSchema, signals: int = 2, steps: int = 30) -> list[Segments]:
    """Six agents, time horizon 4; agent a's episode ends every 3 + a steps, so segments finish
    with different lengths, some at the horizon and some at an episode end."""
    collector = Collector(spec, time_horizon=4, num_signals=signals, initial_slots=2, schema=schema)
    act, value = _policy(spec, signals)
    ids = np.arange(6)
    parts = []
    for t in range(steps):
        ended = ids[(t + 1) % (3 + ids) == 0]
        obs = [np.full((6, *shape), float(t), np.float32) + ids.reshape(-1, *[1] * len(shape))
               for shape in spec.observation_shapes]
        masks = ([np.arange(b)[None, :].repeat(6, axis=0) == (t % b) for b in spec.action_spec.discrete_branches]
                 if spec.action_spec.discrete_branches else None)
        terminal = TerminalSteps([o[ended] for o in obs], np.ones(len(ended), np.float32), ended,
                                 ended % 2 == 1) if len(ended) else TerminalSteps.empty(spec)
        _, finished = collector.step(DecisionSteps(obs, np.full(6, 0.5, np.float32), ids, masks), terminal,
                                     act, value)
        if finished is not None:
            parts.append(finished)
    assert len(parts) > 5 and len({p.width for p in parts}) > 1
    return parts


def _assert_same(a: Segments, b: Segments) -> None:
    """The same segments, real rows and per-segment fields, dtypes included."""
    assert a.schema is b.schema and len(a.length) == len(b.length)
    np.testing.assert_array_equal(a.row_mask, b.row_mask[:, : a.width])
    mask = a.row_mask
    for f in a.schema.fields:
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert x.dtype == y.dtype, f.name
        if f.per_row:
            np.testing.assert_array_equal(x[mask], y[:, : a.width][mask], err_msg=f.name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=f.name)


@pytest.mark.parametrize("spec", [CONTINUOUS, MASKED], ids=["continuous", "masked-discrete"])
def test_the_collector_s_segments_have_the_declared_shapes_and_dtypes(spec):
    sizes = SegmentSizes.of(spec, 2)
    parts = _run(spec, SEGMENTS)
    for part in parts:
        SEGMENTS.check(part, sizes)
    SEGMENTS.check(SEGMENTS.concatenate(parts), sizes)
    SEGMENTS.check(SEGMENTS.unpack(SEGMENTS.pack(parts)), sizes)


def test_a_new_per_row_field_is_one_declaration():
    # an LSTM-like memory the policy returns: declared once, it is recorded by the collector, cut
    # into segments, concatenated, packed into shared memory and unpacked
    schema = SegmentSchema((*FIELDS, Field("memory", ROW, lambda s: (3,), np.float32, from_policy=True)))
    sizes = SegmentSizes.of(CONTINUOUS, 2)
    parts = _run(CONTINUOUS, schema)
    for part in parts:
        schema.check(part, sizes)
        mask = part.row_mask
        np.testing.assert_array_equal(part.memory[mask], part.obs[mask][:, :1] + np.arange(3))

    whole = schema.concatenate(parts)
    assert whole.width == max(p.width for p in parts)
    start = 0
    for part in parts:
        _assert_same(part, Segments(schema, {f.name: getattr(whole, f.name)[start : start + len(part.length)]
                                             for f in schema.fields}))
        start += len(part.length)

    packed = schema.pack(parts)
    assert packed["memory"].shape == (int(whole.length.sum()), 3)  # real rows only
    block = SharedArrays({"bytes": ((1 << 16,), np.uint8)})
    try:
        header = pack_arrays(block, packed)
        assert header is not None
        back = schema.unpack(unpack_arrays(block, header))
    finally:
        block.close(unlink=True)
    _assert_same(whole, back)
    assert not back.memory[~back.row_mask].any()  # padded with zeros


def test_segments_need_exactly_the_declared_fields():
    arrays = {f.name: np.zeros((1, 1) if f.per_row else (1,)) for f in FIELDS}
    Segments(SEGMENTS, arrays)
    with pytest.raises(ValueError, match=r"missing \['slot'\], unknown \['slots'\]"):
        Segments(SEGMENTS, {**{k: v for k, v in arrays.items() if k != "slot"}, "slots": arrays["slot"]})
    with pytest.raises(ValueError, match="unique"):
        SegmentSchema((*FIELDS, FIELDS[0]))
    with pytest.raises(ValueError, match="not among"):
        SegmentSchema((*FIELDS, Field("row_mask", ROW, lambda s: (), np.bool_)))
    with pytest.raises(ValueError, match="declared float32"):
        SEGMENTS.check(Segments(SEGMENTS, arrays), SegmentSizes.of(CONTINUOUS, 1))
