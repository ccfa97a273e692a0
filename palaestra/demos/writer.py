"""Writing `.demo` files in the layout of Unity's recorder, readable by ML-Agents' loaders.

As Unity does: the 33-byte header is reserved first, the brain parameters follow at byte 33,
then one length-prefixed ``AgentInfoActionPairProto`` per record as the rows come (a recording
is never held in memory whole); closing appends a raw copy of the meta message and writes the
length-prefixed meta into the header.

What is written for each field (docs/imitation.md): the action spec both in ``action_spec``
(ML-Agents 1.x and later) and, for a behavior with one kind of action, in the retired
``vector_action_size`` / ``vector_action_space_type``; actions in ``continuous_actions`` /
``discrete_actions`` and, for one kind of action, in the retired ``vector_actions`` that 0.x
loaders read; images as PNG with shape height x width x channels, vectors as packed floats.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import re
import time
from pathlib import Path
from types import TracebackType

import numpy as np

from palaestra.checkpoints import temp_file_beside
from palaestra.demos import wire
from palaestra.demos.png import encode_png
from palaestra.demos.reader import HEADER_SIZE, DemoError, DemoMeta, Demonstrations
from palaestra.envs.base import BehaviorSpec
from palaestra.envs.observations import as_stored, is_image

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

logger = logging.getLogger("palaestra")

NAME_LIMIT = 16  # Unity's recorder cuts demonstration names to 16 characters
# dimension_properties of an image stored height x width x channels: translational
# equivariance along height and width, none along channels (ML-Agents' DimensionProperty)
IMAGE_DIMENSIONS = (2, 2, 1)
IMAGE_DIMENSIONS_FIRST = (1, 2, 2)


def encode_meta(meta: DemoMeta) -> bytes:
    """``DemonstrationMetaProto``; the name is cut so that the message fits the header."""
    name = meta.name[:NAME_LIMIT]

    def encode(name: str) -> bytes:
        return (wire.varint_field(1, meta.api_version) + wire.string_field(2, name)
                + wire.varint_field(3, meta.number_steps) + wire.varint_field(4, meta.number_episodes)
                + wire.float_field(5, meta.mean_reward))

    while len(wire.delimited(encode(name))) > HEADER_SIZE:
        name = name[:-1]
    return encode(name)


def encode_brain(behavior_name: str, spec: BehaviorSpec) -> bytes:
    actions = spec.action_spec
    out = b""
    if actions.is_continuous != actions.is_discrete:  # one kind: the retired fields too, for 0.x loaders
        sizes = [actions.continuous_size] if actions.is_continuous else list(actions.discrete_branches)
        out += wire.packed_varints(3, sizes) + wire.varint_field(6, 1 if actions.is_continuous else 0)
    out += wire.string_field(7, behavior_name)
    out += wire.bytes_field(9, wire.varint_field(1, actions.continuous_size)
                            + wire.varint_field(2, actions.num_branches)
                            + wire.packed_varints(3, actions.discrete_branches))
    return out


class _Rows:
    """Checks of one :meth:`DemoWriter.write` call's arrays, ``n`` rows each: what the reader
    would refuse (or misread) is refused here, naming the argument and the shape it needs."""

    def __init__(self, path: Path, n: int) -> None:
        self.path, self.n = path, n

    def array(self, name: str, values: object, row_shape: tuple[int, ...], dtype: object) -> np.ndarray:
        array = np.asarray(values) if dtype is None else np.asarray(values, dtype)
        # the row shape, give or take axes of 1 ((n,) for rows of one value): another shape of the
        # same size (a transposed image) would be written scrambled
        wanted = (self.n, *row_shape)
        if array.shape != wanted and [d for d in array.shape if d != 1] != [d for d in wanted if d != 1]:
            raise DemoError(f"{self.path}: {name} must have shape {[self.n, *row_shape]} (one row per reward); "
                            f"got shape {list(array.shape)}")
        return array.reshape(self.n, *row_shape)

    def flags(self, name: str, values: object) -> np.ndarray:
        return self.array(name, values, (), None).astype(bool)

    def finite(self, name: str, values: np.ndarray) -> None:
        bad = ~np.isfinite(values.reshape(self.n, -1)).all(axis=1)
        if bad.any():  # a recording with NaN teaches NaN
            raise DemoError(f"{self.path}: {name} is NaN or infinite in rows {np.flatnonzero(bad)[:10].tolist()}")

    def discrete(self, values: object, branches: tuple[int, ...]) -> np.ndarray:
        actions = self.array("discrete_actions", values, (len(branches),), None)
        if not np.array_equal(actions, np.round(actions)):
            raise DemoError(f"{self.path}: discrete_actions must be whole numbers")
        actions = actions.astype(np.int64)
        for b, size in enumerate(branches):
            bad = (actions[:, b] < 0) | (actions[:, b] >= size)
            if bad.any():
                raise DemoError(f"{self.path}: discrete action {int(actions[bad, b][0])} in branch {b}, which has "
                                f"{size} actions (0 to {size - 1}), in rows {np.flatnonzero(bad)[:10].tolist()}")
        return actions


class DemoWriter:
    """A `.demo` file being written: :meth:`write` rows as they come, then :meth:`close` (or
    use it as a context manager). The meta's steps, episodes and mean reward are counted from
    the rows unless given to :meth:`close`."""

    def __init__(self, path: str | os.PathLike, behavior_name: str, spec: BehaviorSpec,
                 demonstration_name: str | None = None, channels_first: bool = False) -> None:
        self.path = Path(path)
        # images' stated shape: height x width x channels (ML-Agents 0.x, Unity's cameras before
        # 2.x) or channels x height x width (what ML-Agents' Python 1.x and later expect)
        self.channels_first = channels_first
        self.behavior_name = behavior_name
        self.spec = spec
        self.name = demonstration_name if demonstration_name is not None else self.path.stem
        if not isinstance(spec, BehaviorSpec):
            raise DemoError(f"{self.path}: spec must be a BehaviorSpec; got {type(spec).__name__}")
        if self.path.is_dir():
            raise DemoError(f"{self.path}: is a folder; name the .demo file to write")
        brain = wire.delimited(encode_brain(behavior_name, spec))  # (before the temp file: nothing left if it fails)
        self.steps = self.done_records = 0
        self.total_reward = 0.0
        self.ended_with_done = True
        # written under a temporary name and renamed when complete: a failed or interrupted
        # recording never leaves a half file, nor replaces a good one (a name of its own: two
        # recordings of one path do not write into one file)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_partials(self.path)
            self._file, partial = temp_file_beside(self.path, ".partial")
            self._partial = Path(partial)
            _hold(self._file)
        except OSError as e:
            raise self._cannot_write(e) from None
        try:
            self._put(bytes(HEADER_SIZE), brain)  # the header, written last
        except DemoError:
            self._discard()
            raise

    def write(self, observations: list[np.ndarray], rewards: np.ndarray, done: np.ndarray, agent_ids: np.ndarray,
              continuous_actions: np.ndarray | None = None, discrete_actions: np.ndarray | None = None,
              has_action: np.ndarray | None = None, max_step_reached: np.ndarray | None = None,
              action_masks: np.ndarray | None = None, has_mask: np.ndarray | None = None) -> None:
        """Append ``len(rewards)`` records; the arrays are rows as :class:`Demonstrations` holds
        them (observations one array per observation of the spec, images uint8 or floats in
        [0, 1]; masks True = unavailable)."""
        if self._file.closed:
            raise DemoError(f"{self.path}: written to after it was closed")
        rewards = np.asarray(rewards, np.float32)
        if rewards.ndim != 1:
            raise DemoError(f"{self.path}: rewards must be one number per row (shape [rows]); got shape "
                            f"{list(rewards.shape)}")
        n = len(rewards)
        shapes = self.spec.observation_shapes
        if not isinstance(observations, (list, tuple)) or len(observations) != len(shapes):
            given = len(observations) if isinstance(observations, (list, tuple)) else type(observations).__name__
            raise DemoError(f"{self.path}: observations must be a list of one array per observation of the spec "
                            f"({len(shapes)}); got {given}")
        if n == 0:
            return
        actions = self.spec.action_spec
        rows = _Rows(self.path, n)
        observations = [rows.array(f"observation {i}", o, shape, None) for i, (o, shape) in
                        enumerate(zip(observations, shapes))]
        continuous = np.zeros((n, actions.continuous_size), np.float32) if continuous_actions is None \
            else rows.array("continuous_actions", continuous_actions, (actions.continuous_size,), np.float32)
        discrete = np.zeros((n, actions.num_branches), np.int64) if discrete_actions is None \
            else rows.discrete(discrete_actions, actions.discrete_branches)
        has_action = np.ones(n, bool) if has_action is None else rows.flags("has_action", has_action)
        max_step = np.zeros(n, bool) if max_step_reached is None else rows.flags("max_step_reached", max_step_reached)
        has_mask = (np.zeros(n, bool) if action_masks is None else np.ones(n, bool)) if has_mask is None \
            else rows.flags("has_mask", has_mask)
        if has_mask.any():
            if action_masks is None:
                raise DemoError(f"{self.path}: has_mask marks rows with an action mask, but no action_masks were given")
            action_masks = rows.array("action_masks", action_masks, (sum(actions.discrete_branches),), bool)
        done = rows.flags("done", done)
        agent_ids = rows.array("agent_ids", agent_ids, (), None)
        if not np.array_equal(agent_ids, np.round(agent_ids)):
            raise DemoError(f"{self.path}: agent_ids must be whole numbers")
        rows.finite("rewards", rewards)
        rows.finite("continuous_actions", continuous)
        for i, (o, shape) in enumerate(zip(observations, shapes)):
            if o.dtype.kind == "f":  # (images may come as uint8)
                rows.finite(f"observation {i}", o)
        encoded_obs = [self._observations(o, shape, n) for o, shape in zip(observations, shapes)]
        single_kind = actions.is_continuous != actions.is_discrete
        chunks = []
        for i in range(n):
            info = (wire.float_field(7, rewards[i]) + wire.varint_field(8, int(done[i]))
                    + wire.varint_field(9, int(max_step[i])) + wire.varint_field(10, int(agent_ids[i])))
            if has_mask[i]:
                info += wire.packed_varints(11, action_masks[i].astype(np.int64))
            info += b"".join(wire.bytes_field(13, o[i]) for o in encoded_obs)
            action = b""
            if has_action[i]:
                if single_kind:
                    vector = continuous[i] if actions.is_continuous else discrete[i].astype(np.float32)
                    action += wire.packed_floats(1, vector)
                action += wire.packed_floats(6, continuous[i]) + wire.packed_varints(7, discrete[i])
            chunks.append(wire.delimited(wire.bytes_field(1, info) + wire.bytes_field(2, action)))
        self._put(b"".join(chunks))
        self.steps += n
        self.done_records += int(done.sum())
        self.total_reward += float(rewards.sum(dtype=np.float64))
        if n:
            self.ended_with_done = bool(done[-1])

    def _observations(self, values: np.ndarray, shape: tuple[int, ...], n: int) -> list[bytes]:
        """One encoded ``ObservationProto`` per row."""
        values = as_stored(np.asarray(values).reshape(n, *shape), shape)
        first = is_image(shape) and self.channels_first
        head = wire.packed_varints(1, (shape[2], shape[0], shape[1]) if first else shape)
        tail = wire.packed_varints(6, IMAGE_DIMENSIONS_FIRST if first else IMAGE_DIMENSIONS) if is_image(shape) else b""
        if is_image(shape) and shape[2] in (1, 3):  # PNG as Unity's cameras; one channel as grey RGB
            rgb = np.repeat(values, 3, axis=3) if shape[2] == 1 else values
            head += wire.varint_field(2, 1)
            return [head + wire.bytes_field(3, encode_png(image)) + tail for image in rgb]
        if is_image(shape):  # other channel counts: floats in [0, 1], in the stated order
            ordered = values.transpose(0, 3, 1, 2) if first else values
            rows = ordered.astype(np.float32).reshape(n, -1) / np.float32(255.0)
        else:
            rows = values.reshape(n, -1)
        data = rows.astype("<f4", copy=False)
        return [head + wire.bytes_field(4, wire.bytes_field(1, row.tobytes()) if row.size else b"") + tail
                for row in data]

    def close(self, meta: DemoMeta | None = None) -> DemoMeta:
        """Finish the file (:meth:`finish`) and put it in place (:meth:`publish`)."""
        meta = self.finish(meta)
        self.publish()
        return meta

    def finish(self, meta: DemoMeta | None = None) -> DemoMeta:
        """Complete the file under its temporary name: Unity's raw meta copy at the end, the meta
        in the header. Without ``meta``, episodes are the rows' (the ``done`` records, plus one if
        the rows end inside an episode) and the mean reward is the rows' total over them. A given
        ``meta`` keeps its name, episodes and mean reward, but its step count is always the rows
        written: readers stop after that many records (a recording's meta from before it was
        closed says 0 steps, and one from another file another count)."""
        if self._file.closed:
            raise DemoError(f"{self.path}: already closed")
        if meta is None:
            episodes = self.done_records + (0 if self.ended_with_done else 1)
            meta = DemoMeta(1, self.name, self.steps, episodes, self.total_reward / episodes if episodes else 0.0)
        elif meta.number_steps != self.steps:
            logger.debug("%s: the meta's %d steps replaced by the %d written", self.path, meta.number_steps, self.steps)
            meta = dataclasses.replace(meta, number_steps=self.steps)
        encoded = encode_meta(meta)
        self._put(encoded)
        try:
            self._file.seek(0)
            self._file.write(wire.delimited(encoded))
            self._file.close()  # (flushes: a full disk can show here first)
        except OSError as e:
            raise self._cannot_write(e) from None
        return meta

    def _put(self, *data: bytes) -> None:
        try:
            for part in data:
                self._file.write(part)
        except OSError as e:  # a full disk, a file-size limit: the file named, not a bare errno
            raise self._cannot_write(e) from None

    def _cannot_write(self, e: OSError) -> DemoError:
        return DemoError(f"{self.path}: cannot be written: {e.strerror or e}")

    def publish(self) -> None:
        """Rename the finished file to its name (replacing an older file of that name)."""
        try:
            os.replace(self._partial, self.path)
        except OSError as e:  # (a folder made at that name meanwhile, a read-only place)
            self._partial.unlink(missing_ok=True)
            raise self._cannot_write(e) from None

    def __enter__(self) -> "DemoWriter":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if kind is not None:  # a half-written file is not a recording
            self._discard()
        elif not self._file.closed:
            try:
                self.close()
            except BaseException:  # (a full disk at the last flush: no half file left behind either)
                self._discard()
                raise

    def _discard(self) -> None:
        try:
            self._file.close()
        except OSError:  # its buffer's flush fails again (the disk still full): the error under way says why
            pass
        finally:
            self._partial.unlink(missing_ok=True)


# A recording's temp file is locked while it is written (flock: released by the system however the
# process ends), so that a later recording of the same path can tell one a kill left behind from
# one still being written. Without fcntl (Windows) nothing is removed.
STALE_AFTER_S = 60.0  # and never younger than this: a temp file between its creation and its lock


def _hold(file) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a file system without locks: the recording goes on, unprotected
        pass


def remove_stale_partials(path: Path) -> list[Path]:
    """Delete the temp files of recordings of ``path`` that a kill left behind (hidden
    ``.<name>.*.partial`` files beside it that no process holds); return them."""
    removed: list[Path] = []
    if fcntl is None:
        return removed
    try:
        # mkstemp's random part has no dot: a longer name's temp files (".a.demo.b.demo.x.partial") are not ours
        pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]+\.partial")
        candidates = [p for p in path.parent.glob(f".{glob.escape(path.name)}.*.partial") if pattern.fullmatch(p.name)]
    except OSError:
        return removed
    for candidate in candidates:
        try:
            if time.time() - candidate.stat().st_mtime < STALE_AFTER_S:
                continue
            with open(candidate, "rb") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a live recording's
                candidate.unlink()
        except OSError:  # being written, or already gone, or not ours to remove
            continue
        logger.info("Removed %s, left by an interrupted recording", candidate)
        removed.append(candidate)
    return removed


def write_demonstrations(path: str | os.PathLike, demo: Demonstrations, meta: DemoMeta | None = None,
                         channels_first: bool = False) -> DemoMeta:
    """Write ``demo`` as one `.demo` file (a folder's files become one). ``meta``: the meta to
    store (e.g. ``demo.meta`` to keep what a recording said); by default counted from the rows.
    ``channels_first``: state images as channels x height x width, for ML-Agents 1.x and later."""
    if not isinstance(demo, Demonstrations):
        raise TypeError(f"write_demonstrations: demo must be Demonstrations (read_demonstrations(path)); "
                        f"got {type(demo).__name__}")
    writer = DemoWriter(path, demo.behavior_name, demo.spec,
                        meta.name if meta is not None else demo.files[0].meta.name if demo.files else None,
                        channels_first)
    with writer:
        writer.write(demo.observations, demo.rewards, demo.done, demo.agent_ids, demo.continuous_actions,
                     demo.discrete_actions, demo.has_action, demo.max_step_reached, demo.action_masks, demo.has_mask)
        return writer.close(meta)
