"""SAC's replay buffer stores each next observation once (rollout/buffers.py): what it gives back
must be, byte for byte, what a ring storing every column as added would give."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from palaestra.checkpoints import CheckpointManager
from palaestra.rollout import buffers
from palaestra.rollout.buffers import ReplayBuffer


class PlainRing:
    """Every column stored as added: the layout before next observations were shared."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.size, self.next, self.data = capacity, 0, 0, {}

    def add(self, **columns: np.ndarray) -> None:
        rows = len(next(iter(columns.values())))
        if not self.data:
            self.data = {k: np.zeros((self.capacity, *v.shape[1:]), v.dtype) for k, v in columns.items()}
        columns = {k: v[-self.capacity:] for k, v in columns.items()}
        rows = min(rows, self.capacity)
        for k, v in columns.items():
            for j in range(rows):
                self.data[k][(self.next + j) % self.capacity] = v[j]
        self.next = (self.next + rows) % self.capacity
        self.size = min(self.size + rows, self.capacity)

    def rows(self, index: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[index] for k, v in self.data.items()}


def segments(rng: np.random.Generator, rows: int, image: bool = True) -> dict[str, np.ndarray]:
    """Transitions as SAC adds them: runs of rows whose next observations are the next row's, each
    run ending at a next observation of its own (a segment's last step)."""
    obs = rng.integers(0, 4, (rows + 1, 3, 3, 2), dtype=np.uint8) if image else rng.normal(size=(rows + 1, 4))
    vector = rng.normal(size=(rows + 1, 2)).astype(np.float32)
    next_obs, next_vector = obs[1:].copy(), vector[1:].copy()
    ends = rng.random(rows) < 0.3
    next_obs[ends] = obs[:rows][ends] if image else rng.normal(size=(int(ends.sum()), 4))  # some equal by chance
    next_vector[ends] = rng.normal(size=(int(ends.sum()), 2))
    return {"obs_0": obs[:rows], "obs_1": vector[:rows], "next_obs_0": next_obs, "next_obs_1": next_vector,
            "reward": rng.normal(size=rows).astype(np.float32), "step": np.arange(rows)}


def filled(capacity: int, adds: int, rows: int, seed: int) -> tuple[ReplayBuffer, PlainRing]:
    """A sharing buffer and a plain ring given the same ``adds`` batches of segments."""
    rng = np.random.default_rng(seed)
    ring, plain = ReplayBuffer(capacity, shared_from_bytes=0), PlainRing(capacity)
    for _ in range(adds):
        columns = segments(rng, rows)
        ring.add(**columns)
        plain.add(**columns)
    return ring, plain


def assert_same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(expected)
    for k in expected:
        assert got[k].dtype == expected[k].dtype, k
        np.testing.assert_array_equal(got[k].view(np.uint8), expected[k].view(np.uint8), err_msg=k)


@pytest.fixture(params=[16 * 2**20, 40], ids=["blocks", "small-blocks"])
def block_bytes(request, monkeypatch):
    # small blocks: the tails span many, added and dropped as the ring turns
    monkeypatch.setattr(buffers, "TAIL_BLOCK_BYTES", request.param)
    return request.param


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("capacity", [1, 7, 64, 300])
def test_the_buffer_gives_back_every_column_as_added(seed, capacity, block_bytes):
    rng = np.random.default_rng(seed)
    ring, plain = ReplayBuffer(capacity, shared_from_bytes=0), PlainRing(capacity)
    for _ in range(40):  # many times round the ring, batches of every size (over the capacity too)
        columns = segments(rng, int(rng.choice([0, 1, 2, 5, capacity, capacity + 3, 20])))
        ring.add(**columns)
        plain.add(**columns)
        assert ring.size == plain.size
        index = np.arange(ring.size)
        assert_same(ring.rows(index), plain.rows(index))
        assert ring.tails.count == int(np.count_nonzero(~ring.follows[:ring.size]))  # no tail outlives its row
        assert len(ring.tails.blocks) <= ring.tails.count // ring.tails.block_rows + 2  # nor its block
    drawn = np.random.default_rng(1).integers(0, plain.size, 50)
    assert_same(ring.sample(50, np.random.default_rng(1)), plain.rows(drawn))
    if capacity >= 4:  # (recurrent SAC: blocks of rows, the capacity a multiple of their length)
        length = capacity // 4 if capacity % 4 == 0 else 1
        starts = np.random.default_rng(2).integers(0, plain.size // length, 5) * length
        assert_same(ring.sample_sequences(5, length, np.random.default_rng(2)),
                    plain.rows((starts[:, None] + np.arange(length)).reshape(-1)))


def test_a_next_observation_is_shared_only_where_its_bytes_are_the_same():
    # -0.0 == 0.0 and NaN != NaN as numbers; a shared row gives back the bytes it was given
    obs = np.array([[1.0], [0.0], [np.nan], [2.0]], np.float32)
    next_obs = np.array([[-0.0], [np.nan], [2.0], [3.0]], np.float32)
    ring = ReplayBuffer(8, shared_from_bytes=0)
    ring.add(obs_0=obs, next_obs_0=next_obs)
    assert ring.follows[:4].tolist() == [False, True, True, False]
    np.testing.assert_array_equal(ring.rows(np.arange(4))["next_obs_0"].view(np.uint32), next_obs.view(np.uint32))


def test_images_take_about_half_the_memory_of_storing_both():
    rng = np.random.default_rng(0)
    ring = ReplayBuffer(4_000, shared_from_bytes=0)
    for _ in range(20):  # segments of 64 steps (a time horizon), wrapped several times
        obs = rng.integers(0, 256, (65 * 8, 8, 8, 3), dtype=np.uint8).reshape(8, 65, 8, 8, 3)
        ring.add(obs_0=obs[:, :-1].reshape(-1, 8, 8, 3), next_obs_0=obs[:, 1:].reshape(-1, 8, 8, 3))
    stored = ring.data["obs_0"].nbytes + sum(v.nbytes for block in ring.tails.blocks for v in block.values())
    assert stored < 0.6 * 2 * ring.data["obs_0"].nbytes, stored  # one in 64 rows keeps a next image (and a block)
    assert ring.tails.count == int(np.count_nonzero(~ring.follows))


def test_segments_of_one_step_take_no_more_memory_than_storing_both(monkeypatch):
    # every next image of its own (time_horizon 1): the tails hold the ring's rows again, no more,
    # and none is copied to make room
    monkeypatch.setattr(buffers, "TAIL_BLOCK_BYTES", 192 * 100)
    rng = np.random.default_rng(0)
    ring = ReplayBuffer(4_000, shared_from_bytes=0)
    for _ in range(30):
        images = rng.integers(0, 256, (2, 700, 8, 8, 3), dtype=np.uint8)
        ring.add(obs_0=images[0], next_obs_0=images[1])
    tails = sum(v.nbytes for block in ring.tails.blocks for v in block.values())
    assert ring.tails.count == 4_000 and tails <= ring.data["obs_0"].nbytes + 2 * 192 * 100


def test_a_first_batch_without_rows_still_shares_and_unlike_columns_are_not_paired():
    ring = ReplayBuffer(10)
    empty = np.zeros((0, 32, 32, 3), np.uint8)
    ring.add(obs_0=empty, next_obs_0=empty, obs_1=np.zeros((0, 300), np.float32),
             next_obs_1=np.zeros((0, 300), np.float64))  # (another dtype: not read from obs_1's column)
    assert ring.pairs == [("obs_0", "next_obs_0")] and ring.size == 0
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    ring.add(obs_0=images[:3], next_obs_0=images[1:], obs_1=np.ones((3, 300), np.float32),
             next_obs_1=np.ones((3, 300)))
    back = ring.rows(np.arange(3))
    np.testing.assert_array_equal(back["next_obs_0"], images[1:])
    assert back["next_obs_1"].dtype == np.float64


@pytest.mark.parametrize("load_rows", [4096, 3])
def test_a_saved_buffer_loads_as_it_was(tmp_path, block_bytes, load_rows, monkeypatch):
    monkeypatch.setattr(buffers, "LOAD_ROWS", load_rows)  # (3: added a few rows at a time)
    ring, plain = filled(30, adds=9, rows=7, seed=3)
    CheckpointManager.save_file(tmp_path / "r.pt", ring.tensor_state())
    saved = CheckpointManager.load_file(tmp_path / "r.pt", "")
    assert "next_obs_0" not in saved["columns"]  # stored once in the file too
    for capacity in (30, 12, 50):  # a resumed run with another buffer_size keeps the newest rows
        loaded = ReplayBuffer(capacity, shared_from_bytes=0)
        loaded.load_state_dict(saved)
        order = (plain.next + np.arange(plain.size)) % plain.capacity
        newest = order[-min(capacity, plain.size):]
        assert_same(loaded.state_dict()["columns"], plain.rows(newest))
    # the form with every next observation written out (state_dict, and files saved before) loads too
    written = ReplayBuffer(30, shared_from_bytes=0)
    written.load_state_dict({"capacity": 30, "columns": {k: torch.from_numpy(v)
                                                        for k, v in ring.state_dict()["columns"].items()}})
    assert_same(written.state_dict()["columns"], plain.rows((plain.next + np.arange(30)) % 30))


def test_only_large_observations_are_shared():
    # a vector's next observations stay a column (sharing saves little and slows each sample)
    rng = np.random.default_rng(0)
    ring = ReplayBuffer(100)
    image = rng.integers(0, 256, (11, 32, 32, 3), dtype=np.uint8)
    vector = rng.normal(size=(11, 8)).astype(np.float32)
    ring.add(obs_0=image[:-1], next_obs_0=image[1:], obs_1=vector[:-1], next_obs_1=vector[1:])
    assert ring.pairs == [("obs_0", "next_obs_0")] and "next_obs_1" in ring.data and "next_obs_0" not in ring.data
    np.testing.assert_array_equal(ring.rows(np.arange(10))["next_obs_0"], image[1:])


def test_sac_stores_what_its_segments_hold_and_resumes_it(tmp_path):
    # SAC's own transitions (rollout/collector.py's segments: time-horizon cuts, episodes ending)
    from palaestra.algorithms.sac import SAC
    from palaestra.envs.base import ActionSpec, BehaviorSpec, DecisionSteps, TerminalSteps
    from palaestra.rollout.collector import Collector
    from palaestra.settings import load_trainer_config
    from tests.conftest import write_yaml

    spec = BehaviorSpec(((20, 20, 3), (2,)), ActionSpec(continuous_size=1))  # a 1,200-byte image row
    text = ("B:\n  trainer: sac\n  hidden_units: 8\n  time_horizon: 6\n  buffer_size: 100\n  batch_size: 16\n"
            "  vis_encode_type: simple\n")
    settings = load_trainer_config(write_yaml(tmp_path / "s.yaml", text)).for_behavior("B")
    sac = SAC(spec, settings, torch.device("cpu"), np.random.default_rng(0))
    plain = PlainRing(sac.buffer.capacity)
    add = sac.buffer.add

    def both(**columns):
        add(**columns)
        plain.add(**columns)

    sac.buffer.add = both
    collector = Collector(spec, settings.time_horizon)
    rng = np.random.default_rng(1)
    ids = np.arange(3)
    for t in range(90):  # the ring of 100 wraps twice
        obs = [rng.integers(0, 256, (3, 20, 20, 3), dtype=np.uint8), rng.normal(size=(3, 2)).astype(np.float32)]
        ended = ids[: (t % 5 == 4)]
        terminal = (TerminalSteps([o[ended] for o in obs], np.ones(len(ended), np.float32), ended,
                                  np.zeros(len(ended), bool)) if len(ended) else TerminalSteps.empty(spec))
        _, seg = collector.step(DecisionSteps(obs, np.zeros(3, np.float32), ids), terminal, sac.act)
        if seg is not None:
            sac.collect(seg)
    assert sac.buffer.pairs == [("obs_0", "next_obs_0")] and sac.buffer.size == 100
    assert_same(sac.buffer.rows(np.arange(100)), plain.rows(np.arange(100)))
    assert sac.buffer.tails.count < 40  # segments of up to 6 steps: most next images are the following row's
    CheckpointManager.save_file(tmp_path / "r.pt", sac.replay_state())
    resumed = SAC(spec, settings, torch.device("cpu"), np.random.default_rng(0))
    assert resumed.load_replay_state(CheckpointManager.load_file(tmp_path / "r.pt", "")) == 100
    assert_same(resumed.buffer.state_dict()["columns"], sac.buffer.state_dict()["columns"])


def test_an_add_that_runs_out_of_memory_changes_nothing(monkeypatch):
    # the run saves the buffer after the error: it must still be the one before the failed add
    monkeypatch.setattr(buffers, "TAIL_BLOCK_BYTES", 18 * 4)  # blocks of 4 rows
    ring, plain = filled(20, adds=3, rows=6, seed=0)
    rng = np.random.default_rng(1)
    zeros = np.zeros

    def refuse(shape, *args, **kwargs):
        if isinstance(shape, tuple) and len(shape) > 1:  # a block of images
            raise MemoryError("Unable to allocate")
        return zeros(shape, *args, **kwargs)

    monkeypatch.setattr(buffers.np, "zeros", refuse)
    with pytest.raises(MemoryError, match="next observations do not fit in memory.*lower buffer_size"):
        ring.add(**segments(rng, 12))
    monkeypatch.setattr(buffers.np, "zeros", zeros)
    assert_same(ring.rows(np.arange(ring.size)), plain.rows(np.arange(plain.size)))
    assert ring.tails.count == int(np.count_nonzero(~ring.follows[:ring.size]))


def test_an_empty_buffer_that_shares_gives_back_nothing():
    ring = ReplayBuffer(10)
    empty = np.zeros((0, 32, 32, 3), np.uint8)
    ring.add(obs_0=empty, next_obs_0=empty)
    assert ring.state_dict()["columns"]["next_obs_0"].shape == (0, 32, 32, 3)


def test_the_pre_run_estimate_counts_an_image_once_and_a_vector_twice():
    # 84 x 84 x 3 uint8 with segments of at most 5 steps, and 8 floats stored in both columns
    assert buffers.replay_row_bytes([(84, 84, 3), (8,)], time_horizon=5) == int(21_168 * 1.2) + 2 * 32


@pytest.mark.parametrize("damage", ["one short", "one over", "no tails", "last row follows"])
def test_a_saved_buffer_whose_kept_apart_rows_do_not_add_up_is_refused(damage):
    ring, _ = filled(30, adds=5, rows=7, seed=0)
    state = ring.tensor_state()
    tail = torch.cat(state["tails"]["next_obs_0"])
    if damage == "one short":
        state["tails"]["next_obs_0"] = [tail[:-1]]
    elif damage == "one over":
        state["tails"]["next_obs_0"] = [torch.cat([tail, tail[:1]])]
    elif damage == "no tails":
        del state["tails"]
    else:
        state["columns"]["follows"][-1][-1] = True
    with pytest.raises(ValueError, match="next observations"):
        ReplayBuffer(30, shared_from_bytes=0).load_state_dict(state)
