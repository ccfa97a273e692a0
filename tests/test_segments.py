"""Segment fields are declared once (rollout/segments.py): the collector's segments match the
declaration, and a field added to it goes through the collector, concatenation and the packing
into shared memory without any other change."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from palaestra.envs.base import ActionSpec, BehaviorSpec, DecisionSteps, TerminalSteps
from palaestra.envs.observations import as_stored
from palaestra.rollout.collector import Collector
from palaestra.rollout.segments import (
    FIELDS,
    ROW,
    ActResult,
    Field,
    SegmentSchema,
    Segments,
    SegmentSizes,
    segment_schema,
)
from palaestra.workers.shared_memory import SharedArrays, pack_arrays, unpack_arrays

CONTINUOUS = BehaviorSpec(((3,), (2, 2)), ActionSpec(continuous_size=2))
MASKED = BehaviorSpec(((4,),), ActionSpec(discrete_branches=(3, 2)))
# two vector observations of different sizes and an image (height x width x channels)
WITH_IMAGE = BehaviorSpec(((3,), (5,), (4, 4, 3)), ActionSpec(continuous_size=1))
IMAGE_SCALE = 100.0  # the test's images are (t + agent) / 100: floats in [0, 1]


@dataclass
class WithMemory(ActResult):
    """A policy output with one more per-row value, as a recurrent policy's memory would be."""

    memory: np.ndarray  # [n, 3]


def _policy(spec: BehaviorSpec):
    branches = spec.action_spec.discrete_branches

    def act(observations, allowed):
        obs = observations[0]
        n = len(obs)
        return WithMemory(
            continuous=obs[:, :1].repeat(spec.action_spec.continuous_size, axis=1),
            discrete=np.zeros((n, len(branches)), np.int64), log_prob=obs[:, 0] - 1.0,
            entropy=np.ones(n, np.float32),
            memory=obs[:, :1] + np.arange(3, dtype=np.float32))  # memory[k] = first observation + k

    return act


def _run(spec: BehaviorSpec, schema: SegmentSchema, steps: int = 30) -> list[Segments]:
    """Six agents, time horizon 4; agent a's episode ends every 3 + a steps, so segments finish
    with different lengths, some at the horizon and some at an episode end."""
    collector = Collector(spec, time_horizon=4, initial_slots=2, schema=schema)
    act = _policy(spec)
    ids = np.arange(6)
    parts = []
    for t in range(steps):
        ended = ids[(t + 1) % (3 + ids) == 0]
        obs = [(np.full((6, *shape), float(t), np.float32) + ids.reshape(-1, *[1] * len(shape)))
               / (IMAGE_SCALE if len(shape) == 3 else 1.0) for shape in spec.observation_shapes]
        masks = ([np.arange(b)[None, :].repeat(6, axis=0) == (t % b) for b in spec.action_spec.discrete_branches]
                 if spec.action_spec.discrete_branches else None)
        terminal = TerminalSteps([o[ended] for o in obs], np.ones(len(ended), np.float32), ended,
                                 ended % 2 == 1) if len(ended) else TerminalSteps.empty(spec)
        _, finished = collector.step(DecisionSteps(obs, np.full(6, 0.5, np.float32), ids, masks), terminal, act)
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


@pytest.mark.parametrize("spec", [CONTINUOUS, MASKED, WITH_IMAGE], ids=["continuous", "masked-discrete", "image"])
def test_the_collector_s_segments_have_the_declared_shapes_and_dtypes(spec):
    sizes = SegmentSizes.of(spec)
    schema = segment_schema(spec)
    parts = _run(spec, schema)
    for part in parts:
        schema.check(part, sizes)
    schema.check(schema.concatenate(parts), sizes)
    schema.check(schema.unpack(schema.pack(parts)), sizes)


def test_a_new_per_row_field_is_one_declaration():
    # an LSTM-like memory the policy returns: declared once, it is recorded by the collector, cut
    # into segments, concatenated, packed into shared memory and unpacked
    schema = SegmentSchema((*FIELDS, Field("memory", ROW, lambda s: (3,), np.float32, from_policy=True)),
                           CONTINUOUS.observation_shapes)
    sizes = SegmentSizes.of(CONTINUOUS)
    parts = _run(CONTINUOUS, schema)
    for part in parts:
        schema.check(part, sizes)
        mask = part.row_mask
        np.testing.assert_array_equal(part.memory[mask], part.obs_0[mask][:, :1] + np.arange(3))

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
    schema, shapes = segment_schema(CONTINUOUS), CONTINUOUS.observation_shapes
    arrays = {f.name: np.zeros((1, 1) if f.per_row else (1,)) for f in schema.fields}
    Segments(schema, arrays)
    with pytest.raises(ValueError, match=r"missing \['slot'\], unknown \['slots'\]"):
        Segments(schema, {**{k: v for k, v in arrays.items() if k != "slot"}, "slots": arrays["slot"]})
    with pytest.raises(ValueError, match="unique"):
        SegmentSchema((*FIELDS, FIELDS[0]), shapes)
    with pytest.raises(ValueError, match="not among"):
        SegmentSchema((*FIELDS, Field("row_mask", ROW, lambda s: (), np.bool_)), shapes)
    with pytest.raises(ValueError, match="declared float32"):
        schema.check(Segments(schema, arrays), SegmentSizes.of(CONTINUOUS))


def test_images_are_stored_as_uint8_and_vectors_as_float32():
    image = np.array([[[[0.0, 0.5, 1.0]]], [[[0.2, 0.999, 1e-3]]]], np.float32)  # [2, 1, 1, 3] in [0, 1]
    stored = as_stored(image, (1, 1, 3))
    assert stored.dtype == np.uint8
    np.testing.assert_array_equal(stored[:, 0, 0], [[0, 128, 255], [51, 255, 0]])  # round(x * 255)
    given = np.arange(6, dtype=np.uint8).reshape(2, 1, 1, 3)
    assert as_stored(given, (1, 1, 3)) is given  # already uint8: kept as given
    vector = np.arange(4, dtype=np.float64).reshape(2, 2)
    assert as_stored(vector, (2,)).dtype == np.float32


def test_each_observation_keeps_its_shape_and_dtype_through_collector_concatenate_and_shared_memory():
    schema = segment_schema(WITH_IMAGE)
    assert [f.name for f in schema.fields if f.per_row][:3] == ["obs_0", "obs_1", "obs_2"]
    parts = _run(WITH_IMAGE, schema)
    for part in parts:
        first, second, image = part.observations
        assert (first.dtype, second.dtype, image.dtype) == (np.float32, np.float32, np.uint8)
        assert first.shape[2:] == (3,) and second.shape[2:] == (5,) and image.shape[2:] == (4, 4, 3)
        mask = part.row_mask
        # every observation holds the same number t + agent: the image as uint8 round(x * 255)
        np.testing.assert_array_equal(second[mask], first[mask][:, :1].repeat(5, axis=1))
        expected = np.rint(first[mask][:, 0] / IMAGE_SCALE * 255).astype(np.uint8)
        np.testing.assert_array_equal(image[mask], np.broadcast_to(expected[:, None, None, None], image[mask].shape))
        next_first, _, next_image = part.next_observations
        assert next_image.dtype == np.uint8 and next_image.shape == (len(part.length), 4, 4, 3)
        np.testing.assert_array_equal(next_image[:, 0, 0, 0],
                                      np.rint(next_first[:, 0] / IMAGE_SCALE * 255).astype(np.uint8))
    whole = schema.concatenate(parts)
    block = SharedArrays({"bytes": ((1 << 16,), np.uint8)})
    try:
        header = pack_arrays(block, schema.pack(parts))
        assert header is not None
        back = schema.unpack(unpack_arrays(block, header))
    finally:
        block.close(unlink=True)
    _assert_same(whole, back)
    assert back.obs_2.dtype == np.uint8 and back.next_obs_2.dtype == np.uint8
