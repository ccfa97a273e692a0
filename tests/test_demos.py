""".demo files: the real Unity recordings of ../shared/conformance/demos read with what their
SOURCES.md lists, damaged files refused naming the file and the record, the writer's files read
back the same (and real files written again read back the same), the wire format and PNG pieces
alone, and the check of demonstrations against a behavior."""

from __future__ import annotations

import dataclasses

import io
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from palaestra.demos import png, wire
from palaestra.demos.check import check_demonstrations, require_demonstrations_fit
from palaestra.demos.reader import HEADER_SIZE, DemoError, DemoMeta, Demonstrations, read_demonstrations
from palaestra.demos.writer import DemoWriter, encode_meta, write_demonstrations
from palaestra.envs.base import ActionSpec, BehaviorSpec
from tests.conftest import CONFORMANCE

DEMOS = CONFORMANCE / "demos"


@pytest.fixture
def demos() -> Path:
    if not DEMOS.is_dir():
        pytest.skip(f"the real recordings are not beside the checkout ({DEMOS} is absent)")
    return DEMOS


# file: (layout, trailer, behavior, spec, rows, meta steps/episodes/mean reward, done, max_step, rows with an action)
REAL = {
    "pyramids-release7.demo": ("pairs", "meta copy", "Pyramids?team=0",
                               BehaviorSpec(((56,), (56,), (56,), (4,)), ActionSpec(0, (5,))),
                               1751, (1751, 10, 1.62637), 9, 0, 1751),
    "foodcollector-0.13.demo": ("pairs", "meta copy", "FoodCollector",
                                BehaviorSpec(((49,), (4,)), ActionSpec(0, (3, 3, 3, 2))),
                                3733, (3733, 4, 20.75), 3, 3, 3733),
    "reacher-0.13.demo": ("pairs", "none", "ReacherLearning", BehaviorSpec(((33,),), ActionSpec(4)),
                          3501, (3501, 4, 32.7755), 3, 3, 3500),
    "visualfood-png-0.13.demo": ("pairs", "none", "VisualFoodCollectorLearning",
                                 BehaviorSpec(((84, 84, 3), (0,)), ActionSpec(0, (3, 3, 3, 2))),
                                 38, (38, 1, 0.0), 0, 0, 37),
    "gridworld-masks-0.13.demo": ("pairs", "none", "GridWorldLearning", BehaviorSpec(((0,),), ActionSpec(0, (5,))),
                                  326, (326, 97, 0.966083), 96, 0, 325),
    "empty-0steps-2.0.demo": ("pairs", "meta copy", "Level2_test?team=0", BehaviorSpec((), ActionSpec(0, (4,))),
                              0, (0, 1, 0.0), 0, 0, 0),
    "3dball-legacy-0.9.demo": ("legacy", "meta copy", "Ball3DBrain", BehaviorSpec(((8,),), ActionSpec(2)),
                               57, (57, 2, 2.25), 1, 0, 56),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_every_real_recording_reads_with_what_its_sources_list(demos, name):
    layout, trailer, behavior, spec, rows, (steps, episodes, mean), done, max_step, with_action = REAL[name]
    demo = read_demonstrations(demos / name)
    assert demo.files[0].layout == layout and demo.files[0].trailer == trailer
    assert demo.behavior_name == behavior and demo.spec == spec
    assert len(demo) == rows
    meta = demo.meta
    assert (meta.number_steps, meta.number_episodes) == (steps, episodes)
    assert meta.mean_reward == pytest.approx(mean, abs=1e-5)
    assert (int(demo.done.sum()), int(demo.max_step_reached.sum()), int(demo.has_action.sum())) == \
        (done, max_step, with_action)
    # Unity's own count: one episode more than the done records, the mean over that many (Unity sums in float32)
    assert meta.number_episodes == done + 1
    assert demo.rewards.sum(dtype=np.float64) / meta.number_episodes == pytest.approx(meta.mean_reward, rel=1e-4,
                                                                                     abs=1e-6)
    for obs, shape in zip(demo.observations, spec.observation_shapes):
        assert obs.shape == (rows, *shape)
        assert obs.dtype == (np.uint8 if len(shape) == 3 else np.float32)
    assert demo.continuous_actions.shape == (rows, spec.action_spec.continuous_size)
    assert demo.discrete_actions.shape == (rows, spec.action_spec.num_branches)
    assert np.all(demo.discrete_actions < np.array(spec.action_spec.discrete_branches or (1,)))
    assert not np.any(demo.continuous_actions[~demo.has_action]) and not np.any(demo.discrete_actions[~demo.has_action])


def test_the_details_each_real_recording_is_known_for(demos):
    food = read_demonstrations(demos / "foodcollector-0.13.demo")
    assert set(food.agent_ids.tolist()) == {-9654}  # a negative id, a 10-byte varint
    assert food.discrete_actions[0].tolist() == [0, 0, 0, 0]
    assert len(food.episode_starts) == 4 and food.action_masks is None

    reacher = read_demonstrations(demos / "reacher-0.13.demo")
    assert set(reacher.agent_ids.tolist()) == {-620666}
    assert not reacher.has_action[-1] and reacher.has_action[:-1].all()  # the last record's action is empty

    pyramids = read_demonstrations(demos / "pyramids-release7.demo")
    assert pyramids.agent_ids[0] == 0 and len(set(pyramids.agent_ids.tolist())) == 10
    assert pyramids.rewards.sum() == pytest.approx(16.264, abs=1e-3)
    assert len(pyramids.episode_starts) == 10  # 9 done records, and the episode the file ends in

    grid = read_demonstrations(demos / "gridworld-masks-0.13.demo")
    assert grid.observations[0].shape == (326, 0)  # the empty observation left by ML-Agents' upgrade
    assert int(grid.has_mask.sum()) == 243 and int(grid.action_masks.sum()) == 146
    assert int(grid.done[grid.has_mask].sum()) == 59
    assert grid.action_masks[0].tolist() == [False, True, False, True, False]
    assert not grid.action_masks[~grid.has_mask].any()
    assert grid.done[-1] and not grid.has_action[-1]
    # a row's action is the one taken on that row's observation: its own mask never forbids it
    # (against the next row's mask, 9 of 241 would be forbidden)
    acted = np.flatnonzero(grid.has_mask & grid.has_action)
    assert len(acted) == 242 and not grid.action_masks[acted, grid.discrete_actions[acted, 0]].any()
    assert len(grid.episode_starts) == 96  # the file ends with a done record: no 97th episode in the rows

    visual = read_demonstrations(demos / "visualfood-png-0.13.demo")
    images = visual.observations[0]
    assert images.dtype == np.uint8 and images.shape == (38, 84, 84, 3)
    assert int(images[0].sum(dtype=np.int64)) == 2114695 and int(images.sum(dtype=np.int64)) == 80056862
    assert visual.observations[1].shape == (38, 0)

    empty = read_demonstrations(demos / "empty-0steps-2.0.demo")
    assert len(empty) == 0 and empty.meta.number_episodes == 1 and len(empty.episode_starts) == 0
    assert empty.meta.name == "Level2CatMdoel"

    legacy = read_demonstrations(demos / "3dball-legacy-0.9.demo")
    assert set(legacy.agent_ids.tolist()) == {-5488}
    # a pre-0.12 record stores the previous decision's action: it moves one record back
    assert not legacy.has_action[-1] and legacy.has_action[:-1].all()


def test_png_observations_match_an_independent_decoder(demos):
    image_module = pytest.importorskip("PIL.Image", reason="Pillow is not installed: no second PNG decoder")
    demo = read_demonstrations(demos / "visualfood-png-0.13.demo")
    data = (demos / "visualfood-png-0.13.demo").read_bytes()
    starts = [i for i in range(len(data)) if data.startswith(png.SIGNATURE, i)]
    assert len(starts) == 38
    for row, start in enumerate(starts):
        expected = np.array(image_module.open(io.BytesIO(data[start:])))
        np.testing.assert_array_equal(demo.observations[0][row], expected)


# -- files and folders ---------------------------------------------------------------------------

def test_training_s_check_of_its_demonstrations_says_to_give_their_env_args(tmp_path):
    from palaestra.demos.columns import demonstration_columns

    _write(tmp_path / "small.demo", BehaviorSpec(((20, 20, 3),), ActionSpec(0, (4,))), 3)
    with pytest.raises(DemoError, match=r"(?s)^demo_path '.*small.demo': the demonstrations do not fit the behavior:"
                                        r".*give the --env-args they were recorded with"):
        demonstration_columns(str(tmp_path / "small.demo"), BehaviorSpec(((84, 84, 3),), ActionSpec(0, (4,))),
                              "GridWorld", "demo_path")


def test_a_folder_of_two_behaviors_files_that_act_alike_is_read_with_a_warning(tmp_path, caplog):
    import logging

    spec = BehaviorSpec(((3,),), ActionSpec(0, (3,)))
    _write(tmp_path / "SmallWallJump.demo", spec, 4, behavior="SmallWallJump?team=0")
    _write(tmp_path / "also_small.demo", spec, 4, behavior="SmallWallJump")
    with caplog.at_level(logging.WARNING, "palaestra"):
        assert len(read_demonstrations(tmp_path)) == 8
    assert not caplog.text  # (one behavior, with its team or without)
    _write(tmp_path / "BigWallJump.demo", spec, 4, behavior="BigWallJump?team=0")
    with caplog.at_level(logging.WARNING, "palaestra"):
        assert len(read_demonstrations(tmp_path)) == 12
    assert "its files record the behaviors BigWallJump, SmallWallJump, read as one set" in caplog.text


def test_a_demo_folder_that_cannot_be_read_is_a_demo_error(tmp_path, monkeypatch):
    def unreadable(self):
        raise PermissionError(13, "Permission denied", str(self))  # (chmod 000 binds no root: said directly)

    monkeypatch.setattr(Path, "iterdir", unreadable)
    with pytest.raises(DemoError, match=rf"^{re.escape(str(tmp_path))}: the folder cannot be read: Permission denied$"):
        read_demonstrations(tmp_path)
    (tmp_path / "loop.demo").symlink_to(tmp_path / "loop.demo")
    with pytest.raises(DemoError, match="loop.demo: a link that leads to no file"):
        read_demonstrations(tmp_path / "loop.demo")


def test_a_folder_reads_as_one_set_and_its_meta_adds_up(demos, tmp_path):
    shutil.copy(demos / "foodcollector-0.13.demo", tmp_path / "a.demo")
    shutil.copy(demos / "foodcollector-0.13.demo", tmp_path / "b.demo")
    (tmp_path / "notes.txt").write_text("not a demo")
    one = read_demonstrations(demos / "foodcollector-0.13.demo")
    both = read_demonstrations(tmp_path)
    assert len(both) == 2 * len(one) and [f.path.name for f in both.files] == ["a.demo", "b.demo"]
    assert both.files[1].first_row == len(one)
    assert both.meta.number_steps == 2 * 3733 and both.meta.number_episodes == 8
    assert both.meta.mean_reward == pytest.approx(20.75)
    np.testing.assert_array_equal(both.observations[0][len(one):], one.observations[0])
    assert len(both.episode_starts) == 2 * len(one.episode_starts)  # a file's first row starts an episode


def test_a_folder_of_different_behaviors_names_both_files(demos, tmp_path):
    shutil.copy(demos / "foodcollector-0.13.demo", tmp_path / "food.demo")
    shutil.copy(demos / "reacher-0.13.demo", tmp_path / "reacher.demo")
    with pytest.raises(DemoError) as e:
        read_demonstrations(tmp_path)
    message = str(e.value)
    assert "food.demo" in message and "reacher.demo" in message
    assert "continuous(4)" in message and "discrete[3, 3, 3, 2]" in message


def test_a_zero_step_recording_in_a_folder_only_has_to_agree_on_actions(demos, tmp_path):
    shutil.copy(demos / "empty-0steps-2.0.demo", tmp_path / "a.demo")
    spec = BehaviorSpec(((3,),), ActionSpec(0, (4,)))
    rows = _rows(spec, 5)
    with DemoWriter(tmp_path / "b.demo", "Level2_test?team=0", spec) as w:
        w.write(**rows)
    demo = read_demonstrations(tmp_path)
    assert demo.spec == spec and len(demo) == 5


@pytest.mark.parametrize("path, message", [
    ("missing.demo", "no such demonstration file or folder"),
    ("notes.txt", "not a .demo file"),
    ("empty_folder", "holds no .demo files"),
])
def test_bad_paths_are_clear_errors(tmp_path, path, message):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(DemoError, match=message):
        read_demonstrations(tmp_path / path)


# -- damaged files -------------------------------------------------------------------------------

def test_a_truncated_recording_names_the_file_and_the_record(demos, tmp_path):
    data = (demos / "foodcollector-0.13.demo").read_bytes()
    cut = tmp_path / "cut.demo"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(DemoError) as e:
        read_demonstrations(cut)
    assert str(cut) in str(e.value) and "truncated" in str(e.value)
    record = int(str(e.value).split("record ")[1].split()[0])
    assert 1800 < record < 1900


def test_a_zero_filled_tail_names_the_first_bad_record(demos, tmp_path):
    # like the corrupted ExpertHallway.demo SOURCES.md describes: zeros from some byte to the end
    data = bytearray((demos / "pyramids-release7.demo").read_bytes())
    damaged = next(i for i, start in enumerate(_record_offsets(bytes(data))) if start > 700_000) - 1
    data[700_000:] = bytes(len(data) - 700_000)
    bad = tmp_path / "zeros.demo"
    bad.write_bytes(bytes(data))
    with pytest.raises(DemoError, match=rf"zeros\.demo: record {damaged} of 1751: field number 0"):
        read_demonstrations(bad)


def test_garbage_inside_a_record_names_it(demos, tmp_path):
    data = bytearray((demos / "reacher-0.13.demo").read_bytes())
    first = read_demonstrations(demos / "reacher-0.13.demo")
    assert len(first) == 3501
    offsets = _record_offsets(bytes(data))
    assert data[offsets[2]] == 0x0A  # field 1 (the agent info), length-delimited
    data[offsets[2]] = 0x0F  # field 1 with wire type 7, which does not exist
    bad = tmp_path / "bad.demo"
    bad.write_bytes(bytes(data))
    with pytest.raises(DemoError, match=r"bad\.demo: record 2 of 3501: .*wire type 7"):
        read_demonstrations(bad)


def test_not_a_demo_file_at_all(tmp_path):
    bad = tmp_path / "image.demo"
    bad.write_bytes(png.encode_png(np.zeros((40, 40, 3), np.uint8)))
    with pytest.raises(DemoError, match=r"image\.demo: .*is this a \.demo file"):
        read_demonstrations(bad)
    short = tmp_path / "short.demo"
    short.write_bytes(b"\x02\x08\x01")
    with pytest.raises(DemoError, match="3 bytes long"):
        read_demonstrations(short)


def test_an_unsupported_api_version_is_refused(tmp_path):
    path = tmp_path / "v9.demo"
    _write(path, BehaviorSpec(((2,),), ActionSpec(1)), 3)
    data = bytearray(path.read_bytes())
    assert data[1:3] == b"\x08\x01"  # api_version 1, the first field of the meta
    data[2] = 9
    path.write_bytes(bytes(data))
    with pytest.raises(DemoError, match="api_version 9 is not supported"):
        read_demonstrations(path)


def test_a_record_whose_shape_changes_names_it(tmp_path):
    spec = BehaviorSpec(((3,),), ActionSpec(2))
    path = tmp_path / "shapes.demo"
    with DemoWriter(path, "B", spec) as w:
        w.write(**_rows(spec, 4))
        w.spec = BehaviorSpec(((5,),), ActionSpec(2))  # a recorder that changed its mind mid-file
        w.write(**_rows(w.spec, 1))
    with pytest.raises(DemoError, match=r"record 4 of 5: observation 0 has shape \[5\]; record 0's has \[3\]"):
        read_demonstrations(path)


def test_a_writer_whose_last_flush_fails_leaves_no_temp_file(tmp_path, monkeypatch):
    # the with block ended well, and closing failed (a full disk shows at the last flush)
    spec = BehaviorSpec(((3,),), ActionSpec(2))
    real_finish = DemoWriter.finish

    def full(self, meta=None):
        self._file.write(b"x" * 100)
        raise DemoError(f"{self.path}: cannot be written: No space left on device")

    monkeypatch.setattr(DemoWriter, "finish", full)
    with pytest.raises(DemoError, match="No space left"):
        with DemoWriter(tmp_path / "a.demo", "B", spec) as w:
            w.write(**_rows(spec, 4))
    assert list(tmp_path.iterdir()) == [] and w._file.closed
    monkeypatch.setattr(DemoWriter, "finish", real_finish)
    with DemoWriter(tmp_path / "a.demo", "B", spec) as w:
        w.write(**_rows(spec, 4))
    assert [p.name for p in tmp_path.iterdir()] == ["a.demo"]


def _unclosed(path: Path) -> bytes:
    """A written file's bytes as a recording that was never closed leaves them: number_steps 0
    in the header and no meta copy at the end."""
    data, meta = path.read_bytes(), read_demonstrations(path).meta
    zero = wire.delimited(encode_meta(dataclasses.replace(meta, number_steps=0)))
    return zero.ljust(HEADER_SIZE, b"\0") + data[HEADER_SIZE:-len(encode_meta(meta))]


def test_an_unclosed_recording_reads_to_its_end(tmp_path):
    # a recording that was never closed keeps number_steps 0 and has no trailer
    spec = BehaviorSpec(((2,),), ActionSpec(0, (3,)))
    path = tmp_path / "open.demo"
    with DemoWriter(path, "B", spec) as w:
        w.write(**_rows(spec, 6))
    path.write_bytes(_unclosed(path))
    demo = read_demonstrations(path)
    assert len(demo) == 6 and demo.files[0].trailer == "none"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1.5])
def test_a_discrete_action_that_is_not_a_whole_number_names_its_record(tmp_path, value):
    # the retired vector_actions field alone, as 0.x recorders wrote discrete actions: floats
    spec = BehaviorSpec(((2,),), ActionSpec(0, (3,)))
    path = tmp_path / "odd.demo"
    with DemoWriter(path, "B", spec) as w:
        w.write(**_rows(spec, 2))
        obs = w._observations(np.zeros((1, 2), np.float32), (2,), 1)[0]
    info = wire.float_field(7, 0.0) + wire.varint_field(10, 0) + wire.bytes_field(13, obs)
    record = wire.delimited(wire.bytes_field(1, info) + wire.bytes_field(2, wire.packed_floats(1, np.array([value], np.float32))))
    path.write_bytes(_unclosed(path) + record)  # steps 0: read to the end, where the odd record is
    with pytest.raises(DemoError, match=r"record 2 .*not whole numbers"):
        read_demonstrations(path)


# -- writing -------------------------------------------------------------------------------------

def _rows(spec: BehaviorSpec, n: int, seed: int = 0, masks: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    actions = spec.action_spec
    rows = dict(
        observations=[rng.integers(0, 256, (n, *s), dtype=np.uint8) if len(s) == 3
                      else rng.normal(size=(n, *s)).astype(np.float32) for s in spec.observation_shapes],
        rewards=rng.normal(size=n).astype(np.float32),
        done=rng.random(n) < 0.2,
        agent_ids=rng.integers(-2**31, 2**31, n),
        continuous_actions=rng.uniform(-1, 1, (n, actions.continuous_size)).astype(np.float32),
        discrete_actions=np.stack([rng.integers(0, b, n) for b in actions.discrete_branches], 1)
        if actions.is_discrete else np.zeros((n, 0), np.int64),
        has_action=rng.random(n) < 0.9,
        max_step_reached=rng.random(n) < 0.1,
    )
    rows["continuous_actions"][~rows["has_action"]] = 0
    rows["discrete_actions"][~rows["has_action"]] = 0
    if masks:
        rows["action_masks"] = rng.random((n, sum(actions.discrete_branches))) < 0.3
        rows["has_mask"] = rng.random(n) < 0.7
        rows["action_masks"][~rows["has_mask"]] = False
    return rows


def _write(path: Path, spec: BehaviorSpec, n: int, channels_first: bool = False, behavior: str = "Behavior",
           **kwargs) -> dict:
    rows = _rows(spec, n, **kwargs)
    with DemoWriter(path, behavior, spec, channels_first=channels_first) as w:
        w.write(**rows)
    return rows


def _record_offsets(data: bytes) -> list[int]:
    length, pos = wire.read_varint(data, HEADER_SIZE, len(data))
    pos += length
    offsets = []
    steps = read_meta_steps(data)
    for _ in range(steps):
        length, body = wire.read_varint(data, pos, len(data))
        offsets.append(body)
        pos = body + length
    return offsets


def read_meta_steps(data: bytes) -> int:
    length, pos = wire.read_varint(data, 0, len(data))
    return dict((n, a) for n, _, a, _ in wire.fields(data, pos, pos + length)).get(3, 0)


def assert_same_rows(a: Demonstrations, b: Demonstrations) -> None:
    assert a.spec == b.spec and a.behavior_name == b.behavior_name and len(a) == len(b)
    for x, y in zip(a.observations, b.observations, strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    for key in ("continuous_actions", "discrete_actions", "has_action", "rewards", "done", "max_step_reached",
                "agent_ids", "has_mask", "episode_starts"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)
    assert (a.action_masks is None) == (b.action_masks is None)
    if a.action_masks is not None:
        np.testing.assert_array_equal(a.action_masks, b.action_masks)


SPECS = {
    "continuous": BehaviorSpec(((5,),), ActionSpec(3)),
    "discrete with masks": BehaviorSpec(((4,), (2,)), ActionSpec(0, (3, 2))),
    "hybrid": BehaviorSpec(((6,),), ActionSpec(2, (4, 3))),
    "camera RGB": BehaviorSpec(((12, 9, 3), (3,)), ActionSpec(0, (5,))),
    "camera grey": BehaviorSpec(((8, 8, 1),), ActionSpec(2)),
    "camera 4 channels": BehaviorSpec(((6, 7, 4),), ActionSpec(1)),
    "empty observation": BehaviorSpec(((0,), (2,)), ActionSpec(0, (2,))),
}


@pytest.mark.parametrize("channels_first", [False, True], ids=["HWC", "CHW"])
@pytest.mark.parametrize("kind", sorted(SPECS))
def test_written_files_read_back_the_same(tmp_path, kind, channels_first):
    spec = SPECS[kind]
    if channels_first and not any(len(s) == 3 for s in spec.observation_shapes):
        pytest.skip("no image: the layout of images does not apply")
    path = tmp_path / "out.demo"
    rows = _write(path, spec, 40, channels_first=channels_first, masks=spec.action_spec.is_discrete)
    demo = read_demonstrations(path)
    assert demo.spec == spec and demo.behavior_name == "Behavior" and len(demo) == 40
    for got, given in zip(demo.observations, rows["observations"]):
        np.testing.assert_array_equal(got, given)
    np.testing.assert_array_equal(demo.rewards, rows["rewards"])
    np.testing.assert_array_equal(demo.done, rows["done"])
    np.testing.assert_array_equal(demo.agent_ids, rows["agent_ids"])
    np.testing.assert_array_equal(demo.has_action, rows["has_action"])
    np.testing.assert_array_equal(demo.continuous_actions, rows["continuous_actions"])
    np.testing.assert_array_equal(demo.discrete_actions, rows["discrete_actions"])
    np.testing.assert_array_equal(demo.max_step_reached, rows["max_step_reached"])
    if spec.action_spec.is_discrete:
        np.testing.assert_array_equal(demo.action_masks, rows["action_masks"])
        np.testing.assert_array_equal(demo.has_mask, rows["has_mask"])
    # meta counted from the rows: the done records, plus the episode the rows end inside
    done = int(rows["done"].sum())
    episodes = done + (0 if rows["done"][-1] else 1)
    assert demo.meta.number_steps == 40 and demo.meta.number_episodes == episodes
    assert demo.meta.mean_reward == pytest.approx(rows["rewards"].sum() / episodes, rel=1e-5)
    assert demo.episodes == episodes


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_recordings_written_again_read_back_the_same(demos, tmp_path, name):
    demo = read_demonstrations(demos / name)
    write_demonstrations(tmp_path / name, demo, demo.meta)
    again = read_demonstrations(tmp_path / name)
    assert_same_rows(demo, again)
    assert again.meta == demo.meta and again.files[0].trailer == "meta copy"


@pytest.mark.parametrize("steps", [0, 5, 10_000])
def test_a_given_meta_s_step_count_is_the_rows_written(demos, tmp_path, steps):
    # readers stop after number_steps records: a meta from an unclosed recording (0 steps) or
    # another file must neither cut the rows short nor make the meta copy read as a record
    demo = read_demonstrations(demos / "gridworld-masks-0.13.demo")
    meta = dataclasses.replace(demo.meta, number_steps=steps)
    written = write_demonstrations(tmp_path / "copy.demo", demo, meta)
    again = read_demonstrations(tmp_path / "copy.demo")
    assert written.number_steps == again.meta.number_steps == len(demo) > 5
    assert_same_rows(demo, again)
    assert again.meta.number_episodes == demo.meta.number_episodes


def test_the_file_has_unity_s_layout(tmp_path):
    spec = BehaviorSpec(((3,),), ActionSpec(0, (3,)))
    path = tmp_path / "a_rather_long_demonstration_name.demo"
    _write(path, spec, 10)
    data = path.read_bytes()
    length, pos = wire.read_varint(data, 0, len(data))
    meta = data[pos:pos + length]
    assert pos + length <= HEADER_SIZE and not any(data[pos + length:HEADER_SIZE])  # zero padding to byte 33
    assert data.endswith(meta)  # the raw meta copy Unity's recorder appends
    values = {n: (a, b) for n, _, a, b in wire.fields(meta, 0, len(meta))}
    assert wire.text(meta, *values[2]) == "a_rather_long_de"  # cut to 16 characters, as Unity does
    assert values[3][0] == 10
    brain_length, brain_at = wire.read_varint(data, HEADER_SIZE, len(data))
    numbers = [n for n, _, _, _ in wire.fields(data, brain_at, brain_at + brain_length)]
    assert numbers == [3, 7, 9]  # retired action sizes (0.x loaders), name, action_spec


def test_the_header_always_fits_whatever_the_counts():
    huge = DemoMeta(1, "é" * 16, 2**31 - 1, 2**31 - 1, 123.5)
    assert len(wire.delimited(encode_meta(huge))) <= HEADER_SIZE


def test_a_failed_write_leaves_no_file(tmp_path):
    spec = BehaviorSpec(((3,),), ActionSpec(1))
    path = tmp_path / "half.demo"
    with pytest.raises(DemoError, match=r"observations must be a list of one array per observation of the spec "
                                        r"\(1\); got 2"):
        with DemoWriter(path, "B", spec) as w:
            w.write(**_rows(spec, 3))
            w.write(**{**_rows(spec, 3), "observations": [np.zeros((3, 3)), np.zeros((3, 3))]})
    assert not path.exists() and not list(tmp_path.iterdir())


def test_two_recordings_of_one_path_do_not_share_a_temporary_file(tmp_path):
    import stat

    spec = BehaviorSpec(((3,),), ActionSpec(1))
    path = tmp_path / "both.demo"
    (tmp_path / "both.demo.partial").write_bytes(b"left by an older version")
    (tmp_path / "both.demo.partial").chmod(0o400)
    first, second = DemoWriter(path, "B", spec), DemoWriter(path, "B", spec)
    first.write(**_rows(spec, 3))
    second.write(**_rows(spec, 5, seed=1))
    first.close()
    assert len(read_demonstrations(path)) == 3
    second.close()
    assert len(read_demonstrations(path)) == 5
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()  # not a temporary file's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["both.demo", "both.demo.partial"]


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_failed_write_keeps_the_file_it_would_have_replaced(tmp_path):
    spec = BehaviorSpec(((3,),), ActionSpec(1))
    path = tmp_path / "keep.demo"
    _write(path, spec, 4)
    before = path.read_bytes()
    with pytest.raises(ZeroDivisionError):
        with DemoWriter(path, "B", spec) as w:
            w.write(**_rows(spec, 3))
            1 / 0
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["keep.demo"]


# -- the wire format and PNG alone ----------------------------------------------------------------

@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**31 - 1, -1, -9654, -2**31])
def test_varints_round_trip_including_negative_int32(value):
    data = wire.varint(value)
    got, end = wire.read_varint(data, 0, len(data))
    assert end == len(data) and wire.as_int32(got) == value
    assert len(data) == 10 if value < 0 else len(data) <= 5


@pytest.mark.parametrize("data, message", [
    (b"\x01", "field number 0"),
    (b"\x0a\x05ab", "claims 5 bytes"),
    (b"\x0d\x00\x00", "runs past the end"),
    (b"\x0b", "wire type 3"),
    (b"\x08\xff\xff", "runs past the end"),
    (b"\x08" + b"\xff" * 11, "longer than 10 bytes"),
])
def test_invalid_wire_data_is_refused(data, message):
    with pytest.raises(wire.WireError, match=message):
        list(wire.fields(data, 0, len(data)))


def test_unpacked_repeated_fields_are_read_like_packed_ones(tmp_path):
    # protobuf lets a writer repeat a float or int field one value at a time instead of packing it
    float_data = b"".join(wire.tag(1, wire.FIXED32) + struct.pack("<f", v) for v in (1.5, -2.0))
    observation = wire.tag(1, wire.VARINT) + wire.varint(2) + wire.bytes_field(4, float_data)
    info = (wire.float_field(7, 0.5) + wire.tag(11, wire.VARINT) + wire.varint(1) + wire.tag(11, wire.VARINT)
            + wire.varint(0) + wire.bytes_field(13, observation))
    action = wire.tag(7, wire.VARINT) + wire.varint(1)
    brain = wire.tag(3, wire.VARINT) + wire.varint(2) + wire.string_field(7, "Unpacked")
    meta = encode_meta(DemoMeta(1, "u", 1, 1, 0.5))
    record = wire.delimited(wire.bytes_field(1, info) + wire.bytes_field(2, action))
    header = wire.delimited(meta).ljust(HEADER_SIZE, b"\0")
    path = tmp_path / "unpacked.demo"
    path.write_bytes(header + wire.delimited(brain) + record + meta)
    demo = read_demonstrations(path)
    assert demo.spec == BehaviorSpec(((2,),), ActionSpec(0, (2,)))
    assert demo.observations[0].tolist() == [[1.5, -2.0]] and demo.discrete_actions.tolist() == [[1]]
    assert demo.action_masks.tolist() == [[True, False]]


def _png_with_filter(image: np.ndarray, kind: int) -> bytes:
    """A PNG whose every row uses filter ``kind``, encoded the slow, obvious way."""
    height, width, channels = image.shape
    rows = image.reshape(height, width * channels).astype(int)
    out = bytearray()
    for y in range(height):
        out.append(kind)
        for x in range(width * channels):
            left = rows[y, x - channels] if x >= channels else 0
            up = rows[y - 1, x] if y else 0
            corner = rows[y - 1, x - channels] if y and x >= channels else 0
            if kind == 0:
                predicted = 0
            elif kind == 1:
                predicted = left
            elif kind == 2:
                predicted = up
            elif kind == 3:
                predicted = (left + up) // 2
            else:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                predicted = left if pa <= pb and pa <= pc else up if pb <= pc else corner
            out.append((rows[y, x] - predicted) % 256)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    return (png.SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(out))) + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", [0, 1, 2, 3, 4])
def test_png_row_filters_are_undone(kind, channels):
    image = np.random.default_rng(kind * 10 + channels).integers(0, 256, (7, 5, channels), dtype=np.uint8)
    np.testing.assert_array_equal(png.decode_png(_png_with_filter(image, kind)), image)
    np.testing.assert_array_equal(png.decode_png(png.encode_png(image)), image)


def test_a_batch_of_images_with_different_filters_per_row_decodes_together():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (5, 6, 4, 3), dtype=np.uint8)
    # mix: row y of image i takes the filter of image (i + y) % 5
    mixed = [np.stack([png.read_png(_png_with_filter(images[i], (i + y) % 5))[1][y] for y in range(6)])
             for i in range(5)]
    decoded = png.unfilter(np.stack(mixed), 3).reshape(images.shape)
    np.testing.assert_array_equal(decoded, images)


def test_unsupported_or_broken_pngs_say_why():
    image = png.encode_png(np.zeros((4, 4, 3), np.uint8))
    sixteen_bit = image[:24] + struct.pack(">B", 16) + image[25:]
    with pytest.raises(png.PNGError, match="bit depth 16"):
        png.decode_png(sixteen_bit)
    with pytest.raises(png.PNGError, match="no PNG signature"):
        png.decode_png(b"GIF89a")
    with pytest.raises(png.PNGError, match="before its IEND"):
        png.split_pngs(image[:-12])


def test_concatenated_pngs_are_an_observation_s_channels(tmp_path):
    # a 5-channel camera: two PNGs one after the other, the last channel padded (ML-Agents' layout)
    image = np.random.default_rng(0).integers(0, 256, (6, 4, 5), dtype=np.uint8)
    padded = np.concatenate([image, np.zeros((6, 4, 1), np.uint8)], axis=2)
    data = png.encode_png(padded[..., :3]) + png.encode_png(padded[..., 3:])
    observation = (wire.packed_varints(1, (6, 4, 5)) + wire.varint_field(2, 1) + wire.bytes_field(3, data))
    info = wire.bytes_field(13, observation)
    meta = encode_meta(DemoMeta(1, "c", 1, 1, 0.0))
    brain = wire.packed_varints(3, [2]) + wire.varint_field(6, 1)
    path = tmp_path / "five.demo"
    path.write_bytes(wire.delimited(meta).ljust(HEADER_SIZE, b"\0") + wire.delimited(brain)
                     + wire.delimited(wire.bytes_field(1, info)) + meta)
    demo = read_demonstrations(path)
    np.testing.assert_array_equal(demo.observations[0][0], image)
    assert not demo.has_action[0]


# -- checking demonstrations against a behavior ---------------------------------------------------

def test_demonstrations_that_fit_have_no_problems(demos):
    demo = read_demonstrations(demos / "foodcollector-0.13.demo")
    assert check_demonstrations(demo, demo.spec, "FoodCollector") == []
    # the same spec written with a list of branches, as a user's own code may: no mismatch
    listed = BehaviorSpec(demo.spec.observation_shapes, ActionSpec(demo.spec.action_spec.continuous_size,
                                                                   list(demo.spec.action_spec.discrete_branches)))
    assert check_demonstrations(demo, listed, "FoodCollector") == []
    require_demonstrations_fit(demo, demo.spec, "FoodCollector")


@pytest.mark.parametrize("spec, expected", [
    (BehaviorSpec(((49,),), ActionSpec(0, (3, 3, 3, 2))),
     "have 2 observations [[49], [4]]; behavior 'Food' has 1 [[49]]"),
    (BehaviorSpec(((49,), (5,)), ActionSpec(0, (3, 3, 3, 2))), "observation 1: the demonstrations in"),
    (BehaviorSpec(((49,), (4,)), ActionSpec(4)), "action type:"),
    (BehaviorSpec(((49,), (4,)), ActionSpec(0, (3, 3, 3))), "number of discrete branches:"),
    (BehaviorSpec(((49,), (4,)), ActionSpec(0, (3, 3, 3, 3))), "discrete branch sizes:"),
    (BehaviorSpec(((49,), (4,)), ActionSpec(2, (3, 3, 3, 2))), "action type:"),
])
def test_each_mismatch_names_both_sides(demos, spec, expected):
    demo = read_demonstrations(demos / "foodcollector-0.13.demo")
    problems = check_demonstrations(demo, spec, "Food", "demos/ExpertFood.demo")
    assert len(problems) == 1
    problem = problems[0]
    assert expected in problem
    assert "demos/ExpertFood.demo" in problem and "'FoodCollector'" in problem and "behavior 'Food'" in problem
    if "action" in expected:
        assert "discrete[3, 3, 3, 2]" in problem and spec.action_spec.describe() in problem
    with pytest.raises(DemoError, match="do not fit") as error:
        require_demonstrations_fit(demo, spec, "Food")
    # observations of another shape are often another environment argument (an image size)
    assert ("give the --env-args they were recorded with" in str(error.value)) is ("observation" in expected)


def test_continuous_size_and_every_problem_at_once(demos):
    demo = read_demonstrations(demos / "reacher-0.13.demo")
    problems = check_demonstrations(demo, BehaviorSpec(((32,), (1,)), ActionSpec(3)), "Reacher")
    assert len(problems) == 2
    assert "have 1 observations [[33]]; behavior 'Reacher' has 2 [[32], [1]]" in problems[0]
    assert "continuous action size" in problems[1] and "continuous(4)" in problems[1] and "continuous(3)" in problems[1]


def test_a_recording_without_records_cannot_train(demos):
    demo = read_demonstrations(demos / "empty-0steps-2.0.demo")
    problems = check_demonstrations(demo, BehaviorSpec(((3,),), ActionSpec(0, (4,))), "Level2_test")
    assert problems == [f"the demonstrations in {demo.path} (behavior 'Level2_test?team=0') hold no records: "
                        "there is nothing to learn from"]


@pytest.mark.parametrize("change,message", [
    (lambda r: r.update(observations=[np.zeros((4, 4), np.float32)]),
     r"observation 0 must have shape \[4, 3\] \(one row per reward\); got shape \[4, 4\]"),
    (lambda r: r.update(done=np.zeros(2, bool)), r"done must have shape \[4\]"),
    (lambda r: r.update(agent_ids=np.arange(3)), r"agent_ids must have shape \[4\]"),
    (lambda r: r.update(rewards=np.zeros((4, 2), np.float32)), r"rewards must be one number per row"),
    (lambda r: r.update(has_mask=np.ones(4, bool)), r"has_mask marks rows with an action mask, but no action_masks"),
    (lambda r: r.update(action_masks=np.zeros((4, 5), bool)), r"action_masks must have shape \[4, 3\]"),
    (lambda r: r["discrete_actions"].__setitem__(1, 7), r"discrete action 7 in branch 0, which has 3 actions"),
    (lambda r: r.update(discrete_actions=np.full((4, 1), 1.5)), r"discrete_actions must be whole numbers"),
    (lambda r: r["observations"][0].__setitem__((2, 0), np.nan), r"observation 0 is NaN or infinite in rows \[2\]"),
    (lambda r: r["rewards"].__setitem__(3, np.inf), r"rewards is NaN or infinite in rows \[3\]"),
])
def test_the_writer_refuses_rows_the_reader_would_refuse_naming_the_argument(tmp_path, change, message):
    spec = BehaviorSpec(((3,),), ActionSpec(0, (3,)))
    rows = _rows(spec, 4)
    change(rows)
    with DemoWriter(tmp_path / "w.demo", "B", spec) as w:
        with pytest.raises(DemoError, match=message):
            w.write(**rows)


def test_the_writer_refuses_a_folder_or_a_spec_that_is_not_one_and_leaves_nothing(tmp_path):
    (tmp_path / "taken.demo").mkdir()
    with pytest.raises(DemoError, match=r"taken\.demo: is a folder; name the \.demo file to write"):
        DemoWriter(tmp_path / "taken.demo", "B", BehaviorSpec(((3,),), ActionSpec(1)))
    with pytest.raises(DemoError, match="spec must be a BehaviorSpec; got NoneType"):
        DemoWriter(tmp_path / "a.demo", "B", None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.demo"]  # no temp file left


def test_the_demo_functions_name_a_path_given_where_demonstrations_go(demos, tmp_path):
    path = demos / "foodcollector-0.13.demo"
    spec = read_demonstrations(path).spec
    with pytest.raises(TypeError, match=r"check_demonstrations: demo must be Demonstrations \(read_demonstrations"):
        check_demonstrations(str(path), spec, "FoodCollector")
    with pytest.raises(TypeError, match=r"check_demonstrations: spec must be a BehaviorSpec; got NoneType"):
        check_demonstrations(read_demonstrations(path), None, "FoodCollector")
    with pytest.raises(TypeError, match=r"write_demonstrations: demo must be Demonstrations"):
        write_demonstrations(tmp_path / "x.demo", {"rows": []})


def test_the_writer_takes_no_rows_and_refuses_writes_after_closing(tmp_path):
    spec = BehaviorSpec(((3,),), ActionSpec(0, (3,)))
    w = DemoWriter(tmp_path / "w.demo", "B", spec)
    w.write([np.zeros((0, 3), np.float32)], np.zeros(0), np.zeros(0), np.zeros(0))  # nothing to add
    w.write(**_rows(spec, 4))
    w.close()
    assert len(read_demonstrations(tmp_path / "w.demo").rewards) == 4
    with pytest.raises(DemoError, match="written to after it was closed"):
        w.write(**_rows(spec, 4))


def test_a_discrete_action_outside_its_branch_names_the_record(tmp_path, monkeypatch):
    spec = BehaviorSpec(((2,),), ActionSpec(0, (3, 2)))
    rows = _rows(spec, 10)
    rows["has_action"][:] = True
    rows["discrete_actions"][7] = [3, 1]
    path = tmp_path / "range.demo"
    with DemoWriter(path, "B", spec) as w:
        with pytest.raises(DemoError, match=r"discrete action 3 in branch 0, which has 3 actions \(0 to 2\), "
                                            r"in rows \[7\]"):
            w.write(**rows)  # this writer refuses it; a file from elsewhere may hold it:
        without_checks(monkeypatch)
        w.write(**rows)
    with pytest.raises(DemoError, match=r"range\.demo: record 7 of 10: discrete action \[3, 1\] is outside the "
                                        r"branches \[3, 2\]"):
        read_demonstrations(path)


def without_checks(monkeypatch) -> None:
    """DemoWriter as another tool might write: discrete actions and non-finite values unchecked
    (so that the reader's own refusals can be tested)."""
    from palaestra.demos import writer

    monkeypatch.setattr(writer._Rows, "finite", lambda self, name, values: None)
    monkeypatch.setattr(writer._Rows, "discrete", lambda self, values, branches: np.asarray(values).reshape(
        self.n, len(branches)).astype(np.int64))


def _file(path: Path, brain: bytes, records: list[bytes], steps: int | None = None) -> None:
    """A .demo file from raw messages, with Unity's header and trailing meta copy."""
    meta = encode_meta(DemoMeta(1, "raw", len(records) if steps is None else steps, 1, 0.0))
    path.write_bytes(wire.delimited(meta).ljust(HEADER_SIZE, b"\0") + wire.delimited(brain)
                     + b"".join(wire.delimited(r) for r in records) + meta)


def test_a_legacy_recording_with_a_black_and_white_camera(tmp_path):
    # pre-0.12: observations in fields 1 (vector) and 2 (PNG per camera), the previous action in 4
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 256, (3, 6, 5, 1), dtype=np.uint8)
    vectors = rng.normal(size=(3, 2)).astype(np.float32)
    records = []
    for i in range(3):
        records.append(wire.packed_floats(1, vectors[i]) + wire.bytes_field(2, png.encode_png(np.repeat(grey[i], 3, 2)))
                       + wire.packed_floats(4, np.full(1, i, np.float32)) + wire.float_field(7, 0.5)
                       + wire.varint_field(8, int(i == 2)) + wire.varint_field(10, -7))
    camera = wire.varint_field(1, 5) + wire.varint_field(2, 6) + wire.varint_field(3, 1)
    brain = (wire.varint_field(1, 2) + wire.varint_field(2, 1) + wire.packed_varints(3, [1])
             + wire.bytes_field(4, camera) + wire.varint_field(6, 1) + wire.string_field(7, "OldBrain"))
    path = tmp_path / "legacy.demo"
    _file(path, brain, records)
    demo = read_demonstrations(path)
    assert demo.files[0].layout == "legacy" and demo.spec == BehaviorSpec(((2,), (6, 5, 1)), ActionSpec(1))
    np.testing.assert_array_equal(demo.observations[0], vectors)
    np.testing.assert_array_equal(demo.observations[1], grey)
    # record i + 1 stores record i's action
    assert demo.continuous_actions[:, 0].tolist() == [1.0, 2.0, 0.0] and demo.has_action.tolist() == [True, True, False]
    assert demo.done.tolist() == [False, False, True] and set(demo.agent_ids.tolist()) == {-7}


def _one_vector_record(shape, values) -> bytes:
    obs = wire.packed_varints(1, shape) + wire.bytes_field(4, wire.packed_floats(1, np.asarray(values, np.float32)))
    return wire.bytes_field(1, wire.bytes_field(13, obs)) + wire.bytes_field(2, wire.packed_floats(6, np.ones(1)))


@pytest.mark.parametrize("shape, values, brain_sizes, message", [
    ([-5], [], [1], "record 0: an observation of shape [-5], a negative size"),
    ([2**31 - 1, 2**31 - 1], [0.0], [1], "record 0: an observation of shape [2147483647, 2147483647], over "),
    ([3], [1.0], [1], "record 0: an observation of shape [3] holds 1 values"),
    ([1], [1.0], [2**31 - 1], "the brain parameters at byte 33 are not valid: action sizes continuous(2147483647) "
                              "are far beyond any behavior's"),
])
def test_sizes_a_damaged_file_states_are_refused_before_anything_is_allocated(tmp_path, shape, values, brain_sizes,
                                                                             message):
    # (they reached numpy's allocation: a traceback, or hundreds of GiB asked for)
    path = tmp_path / "sizes.demo"
    brain = wire.bytes_field(9, wire.packed_varints(1, brain_sizes))
    _file(path, brain, [_one_vector_record(shape, values)] * 3)
    with pytest.raises(DemoError, match=re.escape(f"{path}: {message}")):
        read_demonstrations(path)


def test_a_discrete_action_too_large_for_any_branch_is_refused_not_wrapped(tmp_path):
    # the retired vector_actions field holds discrete actions as floats: 3.7e19 once read as 0
    obs = wire.packed_varints(1, [1]) + wire.bytes_field(4, wire.packed_floats(1, np.ones(1, np.float32)))
    info = wire.bytes_field(13, obs)
    records = [wire.bytes_field(1, info) + wire.bytes_field(2, wire.packed_floats(1, np.array([v], np.float32)))
               for v in (1.0, 3.689e19, 0.0)]
    path = tmp_path / "big.demo"
    _file(path, wire.packed_varints(3, [3]) + wire.varint_field(6, 0), records)
    with pytest.raises(DemoError, match=r"big\.demo: record 1.*outside any branch"):
        read_demonstrations(path)


def test_a_pipe_named_like_a_demo_is_refused_not_waited_on(tmp_path):
    import os
    os.mkfifo(tmp_path / "pipe.demo")
    with pytest.raises(DemoError, match="pipe.demo: not a regular file"):
        read_demonstrations(tmp_path / "pipe.demo")


def test_the_writer_refuses_rows_of_another_shape_of_the_same_size(tmp_path):
    spec = BehaviorSpec(((6, 5, 3),), ActionSpec(2))
    rows = _rows(spec, 4)
    rows["observations"] = [rows["observations"][0].transpose(0, 2, 1, 3)]  # (4, 5, 6, 3): the same size
    with DemoWriter(tmp_path / "t.demo", "T", spec) as w:
        with pytest.raises(DemoError, match=re.escape("observation 0 must have shape [4, 6, 5, 3] (one row per reward); got shape [4, 5, 6, 3]")):
            w.write(**rows)


def test_an_image_that_decompresses_past_its_size_is_refused_without_inflating_it():
    import tracemalloc
    header = struct.pack(">IIBBBBB", 84, 84, 8, 2, 0, 0, 0)
    bomb = zlib.compress(bytes(400_000_000 // 1000) * 1000, 9)  # 400 MB of zeros, a few hundred kB
    data = png.SIGNATURE + b"".join(struct.pack(">I", len(body)) + kind + body + b"\0\0\0\0"
                                    for kind, body in ((b"IHDR", header), (b"IDAT", bomb), (b"IEND", b"")))
    tracemalloc.start()
    try:
        with pytest.raises(png.PNGError, match="holds more than"):
            png.read_png(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000


def test_channels_first_images_are_stored_height_width_channels(tmp_path):
    # later recorders may give a camera as channels x height x width, told by dimension_properties
    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    floats = rng.random((2, 4, 5)).astype(np.float32)
    dims = wire.packed_varints(6, (1, 2, 2))
    png_obs = (wire.packed_varints(1, (3, 4, 5)) + wire.varint_field(2, 1) + wire.bytes_field(3, png.encode_png(image))
               + dims)
    float_obs = (wire.packed_varints(1, (2, 4, 5)) + wire.bytes_field(4, wire.packed_floats(1, floats.ravel())) + dims)
    info = wire.bytes_field(13, png_obs) + wire.bytes_field(13, float_obs)
    brain = wire.bytes_field(9, wire.varint_field(1, 2))
    path = tmp_path / "chw.demo"
    _file(path, brain, [wire.bytes_field(1, info) + wire.bytes_field(2, wire.packed_floats(6, np.ones(2)))])
    demo = read_demonstrations(path)
    assert demo.spec == BehaviorSpec(((4, 5, 3), (4, 5, 2)), ActionSpec(2))
    np.testing.assert_array_equal(demo.observations[0][0], image)
    np.testing.assert_array_equal(demo.observations[1][0], np.rint(floats.transpose(1, 2, 0) * 255))


def test_reading_holds_the_rows_once(tmp_path):
    # the file is mapped, not copied, and records are decoded straight into their rows: the
    # peak of Python's allocations while reading stays near the size of the arrays returned
    import tracemalloc

    spec = BehaviorSpec(((400,),), ActionSpec(2))
    path = tmp_path / "large.demo"
    rows = _rows(spec, 2500)
    with DemoWriter(path, "Large", spec) as w:
        w.write(**rows)
    assert path.stat().st_size > 4_000_000
    tracemalloc.start()
    try:
        demo = read_demonstrations(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    returned = sum(o.nbytes for o in demo.observations) + demo.continuous_actions.nbytes
    assert returned == 2500 * 402 * 4
    assert peak < 1.3 * returned, (peak, returned)
