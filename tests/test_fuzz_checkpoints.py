"""Property-based fuzzing of checkpoint loading: random bytes, truncations, byte flips and
insertions of a real checkpoint, and valid torch files whose structure is mutated, all fed
through the loading and checks ``--resume`` uses (BehaviorTrainer.restore_newest). The only
exception allowed is a CheckpointError, and a damaged file with a header never loads: its
checksum catches every flipped byte. CI-sized and repeatable (derandomized, no example database)."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palaestra.checkpoints import HEADER_SIZE, MAGIC, CheckpointError, CheckpointManager, DamagedCheckpointError
from tests.test_checkpoints import make_trainer

FUZZ = settings(database=None, derandomize=True, deadline=timedelta(seconds=2), print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Fixture:
    """A tiny policy, one real checkpoint of it (with the header and in the older bare layout)
    and the folder the fuzzed files go to, shared by every example of the module."""

    def __init__(self, folder, trainer: str) -> None:
        self.trainer = make_trainer(folder / "writer", trainer=trainer)
        self.trainer.algorithm.step = 100
        path = self.trainer.checkpoints.save(self.trainer.state(100), 100)
        self.framed = path.read_bytes()
        self.state = CheckpointManager.load(path)
        buffer = io.BytesIO()
        torch.save(self.state, buffer)
        self.legacy = buffer.getvalue()
        self.reader = make_trainer(folder / "reader", trainer=trainer)
        self.checkpoints = CheckpointManager(folder / "fuzzed", 5)
        self.checkpoints.folder.mkdir(parents=True)
        self.path = self.checkpoints.folder / "checkpoint-100.pt"

    def resume(self, data: bytes) -> int:
        """Write ``data`` as the run's only checkpoint and resume from it as --resume does."""
        self.path.write_bytes(data)
        _, step = self.reader.restore_newest(self.checkpoints, weights_only=False, set_aside=False,
                                             advice="start the run over with --force")
        return step

    def refused(self, data: bytes) -> CheckpointError:
        with pytest.raises(CheckpointError) as error:
            self.resume(data)
        assert "no intact checkpoint" in str(error.value) and str(self.path) in str(error.value)
        return error.value


@pytest.fixture(scope="module")
def ppo(tmp_path_factory):
    return Fixture(tmp_path_factory.mktemp("ppo"), "ppo")


@pytest.fixture(scope="module")
def sac(tmp_path_factory):
    return Fixture(tmp_path_factory.mktemp("sac"), "sac")


def _only_checkpoint_errors(fixture: Fixture, data: bytes) -> bool:
    """Resume from ``data``; True if it loaded, False if it was refused with a CheckpointError
    (any other exception fails the test)."""
    try:
        fixture.resume(data)
        return True
    except CheckpointError as e:
        assert "weights_only" not in str(e).lower()
        return False


# -- damaged bytes ------------------------------------------------------------------------------------
def flip_bytes(data, original: bytes, most: int) -> bytes:
    """``original`` with 1 to ``most`` bytes XORed with random non-zero values."""
    damaged = bytearray(original)
    for _ in range(data.draw(st.integers(1, most))):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] ^= data.draw(st.integers(1, 255))
    return bytes(damaged)


@settings(FUZZ, max_examples=150)
@given(data=st.binary(max_size=4096), prefix=st.sampled_from([b"", MAGIC, b"PK\x03\x04", MAGIC + b"\x01\0\0\0"]))
def test_random_bytes_are_refused(ppo, data, prefix):
    ppo.refused(prefix + data)


@settings(FUZZ, max_examples=100)
@given(st.data())
def test_every_truncation_is_refused(ppo, data):
    ppo.refused(ppo.framed[: data.draw(st.integers(0, len(ppo.framed) - 1))])


@settings(FUZZ, max_examples=200)
@given(st.data())
def test_every_flipped_byte_is_caught(ppo, data):
    damaged = flip_bytes(data, ppo.framed, 16)
    if damaged != ppo.framed:  # two flips of the same byte can cancel
        ppo.refused(damaged)


@settings(FUZZ, max_examples=100)
@given(st.data())
def test_inserted_or_removed_bytes_are_caught(ppo, data):
    at = data.draw(st.integers(0, len(ppo.framed)))
    if data.draw(st.booleans()):
        damaged = ppo.framed[:at] + data.draw(st.binary(min_size=1, max_size=64)) + ppo.framed[at:]
    else:
        damaged = ppo.framed[:at] + ppo.framed[at + data.draw(st.integers(1, 64)):]
    if damaged != ppo.framed:
        ppo.refused(damaged)


@settings(FUZZ, max_examples=100)
@given(st.data())
def test_damage_to_a_file_without_header_is_a_checkpoint_error_at_worst(ppo, data):
    # the older bare layout has no checksum: a flip in the weights can load, but nothing else
    # than a CheckpointError may come out of it
    damaged = flip_bytes(data, ppo.legacy, 8)
    cut = data.draw(st.integers(1, len(damaged)))
    _only_checkpoint_errors(ppo, damaged[:cut])


# -- valid torch files with a mutated structure ----------------------------------------------------
_DTYPES = [torch.float32, torch.float64, torch.float16, torch.int64, torch.bool, torch.complex64]
tensors = st.builds(lambda shape, dtype: torch.zeros(shape, dtype=dtype),
                    st.lists(st.integers(0, 4), max_size=3), st.sampled_from(_DTYPES))
leaves = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
          | st.binary(max_size=8) | st.sampled_from([10**1000, -1, 2**63, float("nan")]) | tensors)
garbage = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
                       | st.dictionaries(st.text(max_size=6) | st.integers(-3, 8), inner, max_size=3), max_leaves=8)


def _paths(value, path=()):
    """Every place in a nested state: (path, value)."""
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, path + (k,))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _paths(v, path + (i,))


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value)
    return value


def _set(root, path, make):
    """``root`` with the value at ``path`` replaced by ``make(old)`` (``...`` deletes it)."""
    if not path:
        return make(root)
    parent = root
    for k in path[:-1]:
        parent = parent[k]
    if isinstance(parent, tuple):  # tuples cannot change in place: rebuild the parent
        items = list(parent)
        new = make(items[path[-1]])
        items[path[-1]] = new if new is not ... else None
        return _set(root, path[:-1], lambda _: tuple(items))
    new = make(parent[path[-1]])
    if new is ...:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return root


def _reshape(old):
    if isinstance(old, torch.Tensor):
        return torch.zeros(*old.shape, 2) if old.dim() < 3 else torch.zeros(old.shape[1:])
    return old


MUTATIONS = {
    "delete": lambda old, new: ...,
    "replace": lambda old, new: new,
    "reshape": lambda old, new: _reshape(old),
    "dict to list": lambda old, new: list(old.values()) if isinstance(old, dict) else old,
    "wrap in a list": lambda old, new: [old],
    "retype": lambda old, new: old.to(torch.int64) if isinstance(old, torch.Tensor) else str(old)[:20],
}


def _mutate(fixture: Fixture, data) -> object:
    state = _copy(fixture.state)
    for _ in range(data.draw(st.integers(1, 3))):
        places = list(_paths(state))
        path, _ = places[data.draw(st.integers(0, len(places) - 1))]
        kind = data.draw(st.sampled_from(sorted(MUTATIONS)))
        new = data.draw(garbage) if kind == "replace" else None
        if kind == "delete" and not path:
            continue
        state = _set(state, path, lambda old: MUTATIONS[kind](old, new))
    return state


def _structure_fuzz(fixture: Fixture, data) -> None:
    state = _mutate(fixture, data)
    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
    except Exception:  # something torch cannot write is no test of loading
        return
    CheckpointManager.save_file(fixture.path, state)  # with a valid header: only the checks stand guard
    if _only_checkpoint_errors(fixture, fixture.path.read_bytes()):
        # it loaded: then it fitted, and the policy acts with what the file holds
        loaded = fixture.reader.algorithm.policy.state_dict()
        for key, value in state["algorithm"]["policy"].items():
            assert torch.equal(loaded[key], value.to(loaded[key].dtype)), key
        obs = [torch.zeros((1, *shape)).numpy() for shape in fixture.reader.spec.observation_shapes]
        fixture.reader.algorithm.act(obs, None)


@settings(FUZZ, max_examples=250)
@given(st.data())
def test_mutated_ppo_structures_are_checkpoint_errors_or_fit(ppo, data):
    _structure_fuzz(ppo, data)


@settings(FUZZ, max_examples=100)
@given(st.data())
def test_mutated_sac_structures_are_checkpoint_errors_or_fit(sac, data):
    _structure_fuzz(sac, data)


def test_the_fixture_checkpoint_itself_loads(ppo):
    assert ppo.resume(ppo.framed) == 100 and ppo.resume(ppo.legacy) == 100
    with pytest.raises(DamagedCheckpointError):
        CheckpointManager.load(ppo.path.with_name("missing.pt"))
    assert ppo.framed[HEADER_SIZE:HEADER_SIZE + 4] == ppo.legacy[:4] == b"PK\x03\x04"
