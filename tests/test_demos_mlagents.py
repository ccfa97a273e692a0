"""The reader against ML-Agents' own loader (mlagents 1.1.0, generated protobuf classes): the same
numbers on the real recordings, and ML-Agents reads the files Palaestra writes.

ML-Agents runs in its own interpreter (tests/mlagents_demo_dump.py): PALAESTRA_MLAGENTS_PYTHON,
or bench/out/mlagents-1.1.0-venv as bench/mlagents_1d.py makes it. Skipped where neither exists."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from palaestra.demos.reader import read_demonstrations
from palaestra.demos.writer import DemoWriter
from palaestra.envs.base import ActionSpec, BehaviorSpec
from tests.conftest import REPO
from tests.test_demos import DEMOS, _rows


def _mlagents_python() -> Path:
    configured = os.environ.get("PALAESTRA_MLAGENTS_PYTHON")
    python = Path(configured) if configured else REPO / "bench" / "out" / "mlagents-1.1.0-venv" / "bin" / "python"
    if not python.exists():
        pytest.skip(f"no ML-Agents interpreter ({python} is absent; set PALAESTRA_MLAGENTS_PYTHON or run "
                    "bench/mlagents_1d.py once)")
    return python


def _load_with_mlagents(paths: list[Path], out: Path) -> dict[str, dict[str, np.ndarray] | str]:
    """Each file as ML-Agents' loader read it, or the error it raised."""
    args = []
    for p in paths:
        args += [str(p), str(out / f"{p.name}.npz")]
    result = subprocess.run([str(_mlagents_python()), str(REPO / "tests" / "mlagents_demo_dump.py"), *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded: dict[str, dict[str, np.ndarray] | str] = {}
    for line in result.stdout.splitlines():
        status, path, *error = line.split(" ", 2)
        name = Path(path).name
        loaded[name] = dict(np.load(out / f"{name}.npz")) if status == "ok" else " ".join(error)
    return loaded


def _compare(theirs: dict[str, np.ndarray], path: Path, channels_first: bool = False) -> None:
    """``channels_first``: the file states its images channels x height x width (ours are
    height x width x channels either way)."""
    ours = read_demonstrations(path)
    assert int(theirs["expected"]) == ours.meta.number_steps
    assert int(theirs["continuous_size"]) == ours.spec.action_spec.continuous_size
    assert tuple(theirs["branches"].tolist()) == ours.spec.action_spec.discrete_branches
    shapes = [tuple(s[:r]) for s, r in zip(theirs["shapes"].tolist(), theirs["ranks"].tolist())]
    stated = [(s[2], s[0], s[1]) if len(s) == 3 and channels_first else tuple(s) for s in ours.spec.observation_shapes]
    assert shapes == stated
    np.testing.assert_array_equal(theirs["reward"], ours.rewards)
    np.testing.assert_array_equal(theirs["done"], ours.done)
    np.testing.assert_array_equal(theirs["max_step"], ours.max_step_reached)
    np.testing.assert_array_equal(theirs["id"], ours.agent_ids)
    np.testing.assert_array_equal(theirs["mask_len"] > 0, ours.has_mask)
    if ours.action_masks is not None:
        np.testing.assert_array_equal(theirs["masks"], ours.action_masks[ours.has_mask].ravel())
    for i, obs in enumerate(ours.observations):
        if obs.dtype == np.float32:
            np.testing.assert_array_equal(theirs[f"floats_{i}"], obs.ravel())
    # actions: continuous_actions / discrete_actions where the file has them, else vector_actions
    if theirs["continuous"].size or theirs["discrete"].size:
        np.testing.assert_array_equal(theirs["continuous"], ours.continuous_actions[ours.has_action].ravel())
        np.testing.assert_array_equal(theirs["discrete"], ours.discrete_actions[ours.has_action].ravel())
    else:
        np.testing.assert_array_equal(theirs["vector_len"] > 0, ours.has_action)
        actions = ours.continuous_actions if ours.spec.action_spec.is_continuous else ours.discrete_actions
        np.testing.assert_array_equal(theirs["vector"], actions[ours.has_action].ravel().astype(np.float32))
    if "buffer_done" in theirs:  # their training buffer pairs record i with record i + 1's reward and done
        np.testing.assert_array_equal(theirs["buffer_done"], ours.done[1:])
        np.testing.assert_array_equal(theirs["buffer_reward"], ours.rewards[1:])
        for i, obs in enumerate(ours.observations):
            if obs.dtype == np.uint8:  # theirs: floats in [0, 1], in the stated order
                assert channels_first, "ML-Agents 1.x reads images only channels first"
                np.testing.assert_allclose(theirs[f"buffer_obs_{i}"], obs[:-1].transpose(0, 3, 1, 2) / 255.0,
                                           atol=1e-6)
            else:
                np.testing.assert_array_equal(theirs[f"buffer_obs_{i}"], obs[:-1])


def test_the_real_recordings_read_as_mlagents_reads_them(tmp_path):
    if not DEMOS.is_dir():
        pytest.skip(f"the real recordings are not beside the checkout ({DEMOS} is absent)")
    paths = sorted(DEMOS.glob("*.demo"))
    loaded = _load_with_mlagents(paths, tmp_path)
    for path in paths:
        theirs = loaded[path.name]
        if path.name in ("3dball-legacy-0.9.demo", "empty-0steps-2.0.demo"):
            # ML-Agents fails on these two (DecodeError); Palaestra reads them (tests/test_demos.py)
            assert isinstance(theirs, str) and "DecodeError" in theirs
            continue
        assert isinstance(theirs, dict), f"{path.name}: {theirs}"
        _compare(theirs, path)


@pytest.mark.parametrize("spec", [
    BehaviorSpec(((5,),), ActionSpec(3)),
    BehaviorSpec(((4,), (2,)), ActionSpec(0, (3, 2))),
    BehaviorSpec(((6,), (0,)), ActionSpec(2, (4, 3))),
    BehaviorSpec(((10, 12, 3), (3,), (8, 6, 1)), ActionSpec(0, (4,))),
], ids=["continuous", "discrete with masks", "hybrid", "cameras channels first"])
def test_mlagents_reads_the_files_palaestra_writes(tmp_path, spec):
    path = tmp_path / "written.demo"
    rows = _rows(spec, 50, masks=spec.action_spec.is_discrete)
    if spec.action_spec.is_continuous and spec.action_spec.is_discrete:
        # ML-Agents' buffer cannot take a record without an action when both kinds exist (its
        # columns end up of different lengths); Palaestra's reader can (tests/test_demos.py)
        rows["has_action"][:] = True
    images = any(len(shape) == 3 for shape in spec.observation_shapes)
    with DemoWriter(path, "Behavior", spec, channels_first=images) as writer:  # as ML-Agents 1.x expects
        writer.write(**rows)
    theirs = _load_with_mlagents([path], tmp_path)[path.name]
    assert isinstance(theirs, dict), theirs
    assert "buffer_done" in theirs, str(theirs.get("buffer_error"))
    _compare(theirs, path, channels_first=images)
