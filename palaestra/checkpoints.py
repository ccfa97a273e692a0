"""Checkpoints: ``models/<run-id>/<Behavior>/checkpoint-<step>.pt``, written atomically (a temp
file in the same folder, flushed and fsynced, then renamed over), keeping the newest
``--keep-checkpoints``. A kill at any moment leaves every listed checkpoint complete.

File layout (little-endian), so that damage on disk is found before anything is loaded::

    magic    12 bytes  b"\\x89PALCKPT\\r\\n\\x1a\\n"
    version   4 bytes  uint32, FILE_VERSION (1)
    length    8 bytes  uint64, the payload's size in bytes
    sha256   32 bytes  SHA-256 of the payload
    payload            the ``torch.save`` bytes of the state dict

Files written before this layout are a bare ``torch.save`` file (a zip archive); they still
load, without a checksum. Every payload is read with ``torch.load(weights_only=True)``: tensors
and plain data only, never arbitrary Python objects.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import pickle
import re
import struct
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

logger = logging.getLogger("palaestra")

_UMASK = os.umask(0)
os.umask(_UMASK)
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)\.pt$")
# the files of a behavior's folder, whose temp files a new run removes
BEHAVIOR_FILES = r"checkpoint-\d+\.pt|replay_buffer\.pt"

# The magic's \x89 and \r\n\x1a\n catch 7-bit and line-ending conversions, as PNG's does.
MAGIC = b"\x89PALCKPT\r\n\x1a\n"
FILE_VERSION = 1
_HEADER = struct.Struct("<12sIQ32s")
HEADER_SIZE = _HEADER.size  # 56
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's own format: the layout before the header
NETWORK_SETTINGS = "hidden_units, num_layers, normalize, vis_encode_type, use_recurrent, memory_size or reward_signals"


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or does not fit the policy."""


class DamagedCheckpointError(CheckpointError):
    """A file that is not an intact Palaestra checkpoint: truncated, altered, or something else.
    An older checkpoint of the same run can take its place."""


class LayoutMismatch(CheckpointError):
    """A checkpoint whose networks are laid out otherwise than the ones it would load into (an
    entry missing, another shape). ``fact`` says what differs; the message adds the likely cause,
    which the caller may know better (settings it can compare, or another Palaestra version)."""

    def __init__(self, fact: str, guess: str, part: str = "") -> None:
        super().__init__(f"{fact}: {guess}")
        self.fact = fact
        self.part = part  # the entry of the algorithm's state it concerns ("policy", "signals", "optimizer", ...)


class SaveError(Exception):
    """A file of the run could not be written; the message names it and what was being saved."""


def os_reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


# what writing a file can raise besides a bug: the file system's errors, memory running out (a
# large replay buffer), and torch's zip writer failing under either (a RuntimeError)
SAVE_FAILURES = (OSError, MemoryError, RuntimeError)


def save_reason(error: BaseException) -> str:
    """Why a save failed, in a few words (``error``: one of :data:`SAVE_FAILURES`)."""
    if isinstance(error, OSError):
        return os_reason(error)
    if isinstance(error, MemoryError):
        return "out of memory" + (f" ({error})" if str(error) else "")
    return f"{type(error).__name__}: {error}"


def temp_file_beside(path: Path, suffix: str = ".tmp") -> tuple[BinaryIO, str]:
    """A new file of a unique name in ``path``'s folder (two writers of one path never share
    it), with ordinary permissions, open for writing; and its name. Renamed over ``path`` when
    complete, it replaces the file at once."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp creates 0600 (Windows has no such modes, nor fchmod before 3.13)
            os.fchmod(fd, 0o666 & ~_UMASK)
        return os.fdopen(fd, "wb"), tmp
    except BaseException:  # (fchmod refused on some network file systems) nothing left behind
        os.close(fd)
        os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, *chunks: bytes | memoryview) -> None:
    """Write ``chunks`` to ``path`` through a temp file renamed over it. An OSError names
    ``path``, not the temp file."""
    def write(fh: BinaryIO) -> None:
        for chunk in chunks:
            fh.write(chunk)

    atomic_write(path, write)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Have ``write`` fill a temp file (open for writing and seeking) that is then renamed over
    ``path``. An OSError names ``path``, not the temp file."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file, tmp = temp_file_beside(path)
        with file as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(e, OSError):
            raise OSError(e.errno, os_reason(e), str(path)) from e
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# -- the file layout ---------------------------------------------------------------------------
class _Hashing:
    """A file-like writer passing everything on to ``file`` while counting and hashing it."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.sha256, self.length = file, hashlib.sha256(), 0

    def write(self, data: bytes | memoryview) -> int:
        self.sha256.update(data)
        self.length += len(memoryview(data).cast("B"))
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def read_payload(path: Path) -> tuple[bytes, bool]:
    """The torch payload of the file at ``path`` and whether a checksum vouched for it."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEADER_SIZE)
            if not head.startswith(MAGIC[: len(head)]) or not head:
                if head.startswith(_ZIP_MAGIC):  # the layout before the header: no checksum
                    return head + fh.read(), False
                raise DamagedCheckpointError(
                    f"{path} is empty" if not head else
                    f"{path} is not a Palaestra checkpoint (it starts with neither the checkpoint header "
                    "nor a torch file's)")
            if len(head) < HEADER_SIZE:
                raise DamagedCheckpointError(f"{path} is truncated: its {HEADER_SIZE}-byte header is incomplete")
            _, version, length, digest = _HEADER.unpack(head)
            if version != FILE_VERSION:
                raise DamagedCheckpointError(
                    f"{path} has checkpoint file version {version}; this Palaestra reads version {FILE_VERSION} "
                    "(a newer Palaestra wrote it, or the header is damaged)")
            # the size first: a damaged length must not make us read (or allocate) exabytes
            present = os.fstat(fh.fileno()).st_size - HEADER_SIZE
            if present < length:
                raise DamagedCheckpointError(f"{path} is truncated: {present} of its {length} bytes of data are there")
            if present > length:
                raise DamagedCheckpointError(
                    f"{path} is damaged: it holds {present} bytes of data, its header says {length}")
            payload = fh.read(length)
    except OSError as e:
        raise DamagedCheckpointError(f"cannot read {path}: {os_reason(e)}") from None
    if len(payload) != length:  # the file changed while we read it
        raise DamagedCheckpointError(f"{path} is truncated: {len(payload)} of its {length} bytes of data are there")
    if hashlib.sha256(payload).digest() != digest:
        raise DamagedCheckpointError(f"{path} is damaged: its contents do not match their SHA-256 checksum")
    return payload, True


def _torch_reason(error: Exception) -> str:
    """torch's reason for refusing a payload, without its advice to load with weights_only=False
    (which would run whatever code the file holds) or to allow more classes."""
    text = str(error)
    # pickle's GLOBAL, a class or function to import ("Unsupported class" in torch 2.1's words)
    if re.search(r"\bglobal\b|\bUnsupported class\b", text, re.IGNORECASE):
        return "it holds Python objects other than tensors and plain data, which Palaestra never writes"
    if isinstance(error, pickle.UnpicklingError) or "weights" in text.lower() or "safe_globals" in text:
        detail = re.search(r"Unsupported operand \d+", text)
        return f"its data cannot be unpickled ({detail.group(0) if detail else type(error).__name__})"
    first = text.strip().splitlines()[0][:160] if text.strip() else ""
    return f"torch cannot read it ({type(error).__name__}{': ' + first if first else ''})"


def read_file(path: Path) -> Any:
    """The object stored at ``path``: header and checksum checked, then torch.load restricted to
    tensors and plain data. Any damage is a DamagedCheckpointError naming the file."""
    payload, checked = read_payload(path)
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a damaged file
        if checked:
            raise DamagedCheckpointError(
                f"{path} is not a Palaestra checkpoint: its checksum is intact but {_torch_reason(e)}") from None
        raise DamagedCheckpointError(
            f"{path} is damaged or not a Palaestra checkpoint: {_torch_reason(e)}") from None


PARTIAL_FILE = re.compile(r"^\..+\.[a-z0-9_]+\.tmp$")  # any temp file of temp_file_beside's


def remove_partial_files(folder: Path, names: str = BEHAVIOR_FILES) -> list[Path]:
    """Delete the temp files that a kill during atomic_write_bytes left in ``folder`` for files
    whose names match the regular expression ``names``; return them."""
    pattern = re.compile(rf"^\.(?:{names})\.[a-z0-9_]+\.tmp$")
    removed = []
    try:
        entries = list(folder.iterdir()) if folder.is_dir() else []
    except OSError:
        return removed
    for p in entries:
        if pattern.match(p.name) and p.is_file():
            try:
                p.unlink()
            except OSError as e:
                logger.warning("could not remove %s, left by an interrupted save: %s", p, os_reason(e))
                continue
            logger.info("Removed %s, left by an interrupted save", p)
            removed.append(p)
    return removed


# -- the state's structure -----------------------------------------------------------------------
def _kind(value: Any) -> str:
    """What ``value`` is, for a message: short values as they are, others by their type."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    if value is None or isinstance(value, (bool, int, float)) or isinstance(value, (list, tuple)) and len(value) <= 8:
        text = _short(value, limit=40)
        if not text.endswith("..."):
            return text
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _is_count(value: Any) -> bool:
    """A step or update count as Palaestra writes them (int64 range, not negative)."""
    return _is_int(value) and 0 <= value < 2**63


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print
        return "a number too long to print"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _damaged(path: Path, where: str, what: str) -> DamagedCheckpointError:
    return DamagedCheckpointError(f"checkpoint {path} is malformed: {where} is {what}")


def _mapping(path: Path, value: Any, where: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise _damaged(path, where, f"{_kind(value)}, not a dictionary")
    return value


def _tensor(path: Path, value: Any, where: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.layout != torch.strided or value.is_complex():
        raise _damaged(path, where, f"{_kind(value)}, not a dense real tensor")
    return value


def _int_list(path: Path, value: Any, where: str) -> list[int]:
    if not isinstance(value, (list, tuple)) or not all(_is_int(v) for v in value):
        raise _damaged(path, where, f"{_kind(value)}, not a list of integers")
    return list(value)


def check_top_level(path: Path, state: Any) -> dict[str, Any]:
    """The entries every Palaestra checkpoint has, with the types it writes."""
    state = _mapping(path, state, "the checkpoint")
    if "algorithm" not in state:
        raise DamagedCheckpointError(f"checkpoint {path} is not a Palaestra checkpoint (it has no 'algorithm' entry)")
    _mapping(path, state["algorithm"], "'algorithm'")
    for key in ("format", "continuous_size", "global_step", "next_summary"):
        if key in state and not _is_count(state[key]):
            raise _damaged(path, f"{key!r}", f"{_kind(state[key])}, "
                           "not an integer >= 0")
    if "observation_shapes" in state:
        shapes = state["observation_shapes"]
        if not isinstance(shapes, (list, tuple)):
            raise _damaged(path, "'observation_shapes'", f"{_kind(shapes)}, not a list")
        for i, shape in enumerate(shapes):
            _int_list(path, shape, f"'observation_shapes'[{i}]")
    if "discrete_branches" in state:
        _int_list(path, state["discrete_branches"], "'discrete_branches'")
    if "network" in state:
        network = _mapping(path, state["network"], "'network'")
        for key, value in network.items():
            if not isinstance(key, str):
                raise _damaged(path, "'network'", f"a dictionary with the key {_short(key)}, not a setting's name")
            if not (isinstance(value, (str, int, float, bool))
                    or isinstance(value, list) and all(isinstance(v, str) for v in value)):  # reward_signals
                raise _damaged(path, f"'network'[{_short(key)}]", f"{_kind(value)}, not a setting's value")
    if "behavior" in state and not isinstance(state["behavior"], str):
        raise _damaged(path, "'behavior'", f"{_kind(state['behavior'])}, not a string")
    return dict(state)


# entries that checkpoints of earlier versions lack; the algorithms load them when present
# (behavioral cloning's optimizer state, the settings SAC counted its updates by)
LATER_ENTRIES = frozenset({"policy_updates", "update_pace"})
# entries of settings, not of weights: a name to a number (or None, a setting left to its default)
SETTINGS_ENTRIES = frozenset({"update_pace"})


def check_algorithm_state(path: Path, saved: Any, reference: Mapping[str, Any],
                          param_shapes: Sequence[torch.Size], optimizer_loads: bool = True) -> None:
    """Check ``saved`` (a checkpoint's 'algorithm' entry) against ``reference``, the state dict
    of the algorithm it is about to be loaded into, before anything is loaded: every entry
    present with the same kind, every tensor with the shape the networks have.
    ``param_shapes``: the shapes of the optimizer's parameters, in its order. ``optimizer_loads``:
    False where only the weights load (--inference, --initialize-from), so that a diverged
    optimizer state (weights still finite) does not disqualify the weights."""
    saved = _mapping(path, saved, "'algorithm'")
    for key, ref in reference.items():
        where = f"'algorithm.{key}'"
        if key not in saved and key in LATER_ENTRIES:
            continue  # written by an older Palaestra: the algorithm starts that part afresh
        if key not in saved:
            raise LayoutMismatch(f"checkpoint {path} has no {where} entry",
                                 f"was it trained with another trainer or other network settings ({NETWORK_SETTINGS})?",
                                 key)
        value = saved[key]
        if key == "optimizer":
            _check_optimizer(path, value, ref, param_shapes, optimizer_loads)
        elif key in SETTINGS_ENTRIES:
            for name, setting in _mapping(path, value, where).items():
                if not isinstance(name, str) or not (setting is None or _is_number(setting)):
                    raise _damaged(path, where, f"a setting {_short(name)}: {_kind(setting)}, not a number")
        elif isinstance(ref, Mapping):
            _check_module(path, value, ref, key)
        elif isinstance(ref, torch.Tensor):
            _check_shape(path, _tensor(path, value, where), ref, key, "the policy", key)
        elif _is_int(ref):
            if not _is_count(value):
                raise _damaged(path, where, f"{_kind(value)}, "
                               "not an integer >= 0")


def _check_shape(path: Path, value: torch.Tensor, ref: torch.Tensor, name: str, owner: str, part: str) -> None:
    if value.is_floating_point() != ref.is_floating_point():
        raise _damaged(path, f"parameter {name}", f"of type {value.dtype}, {owner}'s is {ref.dtype}")
    if value.shape != ref.shape:
        raise LayoutMismatch(
            f"checkpoint {path}: parameter {name} has shape {list(value.shape)}, {owner} expects {list(ref.shape)}",
            f"was it trained with other network settings ({NETWORK_SETTINGS})?", part)
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        # saved by a run whose training had diverged (Palaestra no longer saves such weights):
        # as unusable as a damaged file, so an older checkpoint is taken instead
        raise DamagedCheckpointError(f"checkpoint {path}: parameter {name} holds NaN or infinite values (its training "
                                     "had diverged)")


# what each part of an algorithm's state is, for messages (other parts: "the <key> network")
_MODULE_NAMES = {"policy": "policy", "signals": "reward signals' models"}


def _check_module(path: Path, saved: Any, reference: Mapping[str, Any], module: str) -> None:
    saved = _mapping(path, saved, f"'algorithm.{module}'")
    missing = [k for k in reference if k not in saved]
    extra = [k for k in saved if k not in reference]
    if missing or extra:
        name = _MODULE_NAMES.get(module, f"{module} network")
        plural = name.endswith("s")
        parts = ([f"{'lack' if plural else 'lacks'} {', '.join(map(str, missing[:4]))}"
                  f"{' ...' if len(missing) > 4 else ''}"] if missing else []) \
            + ([f"{'have' if plural else 'has'} {', '.join(map(_short, extra[:4]))}{' ...' if len(extra) > 4 else ''}, "
                f"which this behavior's {name} {'do' if plural else 'does'} not have"] if extra else [])
        changed = (" or were the signals' own settings changed (GAIL's use_vail or use_actions)"
                   if module == "signals" else "")
        raise LayoutMismatch(
            f"checkpoint {path}: its {name} {' and '.join(parts)}",
            f"was it trained with another trainer or other network settings ({NETWORK_SETTINGS}){changed}?", module)
    for key, ref in reference.items():
        _check_shape(path, _tensor(path, saved[key], f"parameter {module}.{key}"), ref, f"{module}.{key}",
                     f"the {module} network" if module != "policy" else "the policy", module)


_ADAM_TENSORS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


# Adam's settings in a checkpoint: what each must hold for a step to compute (a value outside
# failed later as "math domain error", or trained on nonsense)
ADAM_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "lr": (lambda v: v >= 0, "a learning rate >= 0"),
    "betas": (lambda v: all(0 <= b < 1 for b in v), "two betas from 0 up to (not including) 1"),
    "eps": (lambda v: v > 0, "an epsilon > 0"),
    "weight_decay": (lambda v: v >= 0, "a weight decay >= 0"),
}


def _check_optimizer(path: Path, saved: Any, reference: Mapping[str, Any], param_shapes: Sequence[torch.Size],
                     finite: bool = True) -> None:
    saved = _mapping(path, saved, "'algorithm.optimizer'")
    for key in ("state", "param_groups"):
        if key not in saved:
            raise _damaged(path, "'algorithm.optimizer'", f"without its {key!r} entry")
    groups, ref_groups = saved["param_groups"], reference["param_groups"]
    if not isinstance(groups, (list, tuple)):
        raise _damaged(path, "'algorithm.optimizer.param_groups'", f"{_kind(groups)}, not a list")
    if len(groups) != len(ref_groups):
        raise LayoutMismatch(f"checkpoint {path}: the optimizer has {len(groups)} parameter groups, the policy's "
                             f"{len(ref_groups)}", "was it trained with another trainer?", "optimizer")
    ids: list[int] = []
    for i, (group, ref_group) in enumerate(zip(groups, ref_groups)):
        where = f"'algorithm.optimizer.param_groups'[{i}]"
        group = _mapping(path, group, where)
        params = _int_list(path, group.get("params"), f"{where}['params']")
        if len(params) != len(ref_group["params"]):
            raise LayoutMismatch(
                f"checkpoint {path}: the optimizer holds {len(params)} parameters, the policy's "
                f"{len(ref_group['params'])}", f"was it trained with other network settings ({NETWORK_SETTINGS})?",
                "optimizer")
        ids += params
        for key, ref in ref_group.items():
            if key == "params":
                continue
            if key not in group:
                # flags newer torch versions add have defaults; the numbers have none
                if isinstance(ref, (int, float, tuple, list)) and not isinstance(ref, bool):
                    raise _damaged(path, where, f"without its {key!r} setting")
                continue
            value = group[key]
            if isinstance(ref, bool) or ref is None:
                ok, expected = isinstance(value, bool) or value is None, "True, False or None"
            elif isinstance(ref, (tuple, list)):
                ok = isinstance(value, (tuple, list)) and len(value) == len(ref) and all(map(_is_number, value))
                expected = f"{len(ref)} numbers"
            elif isinstance(ref, (int, float)):
                ok, expected = _is_number(value), "a finite number"
            else:
                ok, expected = isinstance(value, type(ref)), f"a {type(ref).__name__}"
            if ok and key in ADAM_RANGES:  # the right kind, and a value Adam can step with
                fits, expected = ADAM_RANGES[key]
                ok = fits(value)
            if not ok:
                raise _damaged(path, f"{where}[{key!r}]", f"{_kind(value)}, not {expected}")
    if len(set(ids)) != len(ids):
        raise _damaged(path, "'algorithm.optimizer.param_groups'", "a list that names a parameter twice")
    shape_of = dict(zip(ids, param_shapes))
    state = _mapping(path, saved["state"], "'algorithm.optimizer.state'")
    for pid, entry in state.items():
        where = f"'algorithm.optimizer.state'[{_short(pid)}]"
        if pid not in shape_of:
            raise _damaged(path, where, "the state of a parameter the optimizer does not have")
        entry = _mapping(path, entry, where)
        for key in ("step", "exp_avg", "exp_avg_sq"):
            if key not in entry:
                raise _damaged(path, where, f"without its {key!r}")
        step = _tensor(path, entry["step"], f"{where}['step']")
        if step.numel() != 1 or not math.isfinite(float(step)) or float(step) < 0:
            raise _damaged(path, f"{where}['step']", "not a single count >= 0")
        for key, value in entry.items():
            if key == "step":
                continue
            if not isinstance(key, str) or key not in _ADAM_TENSORS:
                raise _damaged(path, where, f"an entry {_short(key)} Adam does not have")
            tensor = _tensor(path, value, f"{where}[{key!r}]")
            if not tensor.is_floating_point() or tensor.shape != shape_of[pid]:
                raise LayoutMismatch(
                    f"checkpoint {path}: the optimizer's {key} of parameter {pid} has shape {list(tensor.shape)} "
                    f"({tensor.dtype}), the optimizer expects {list(shape_of[pid])}",
                    f"was it trained with other network settings ({NETWORK_SETTINGS})?", "optimizer")
            if finite and not bool(torch.isfinite(tensor).all()):
                # an infinite exp_avg_sq holds its weights still for good (an older version saved
                # such a state after a loss overflowed): unusable, so an older checkpoint is taken
                raise DamagedCheckpointError(f"checkpoint {path}: the optimizer's {key} of parameter {pid} holds NaN or "
                                             "infinite values (its training had diverged)")


# -- the checkpoints of one behavior ---------------------------------------------------------------
class CheckpointManager:
    def __init__(self, folder: Path, keep: int) -> None:
        self.folder = folder
        self.keep = keep

    def list(self) -> list[tuple[int, Path]]:
        """(step, path) of the checkpoints on disk, oldest first."""
        if not self.folder.is_dir():
            return []
        found = []
        for p in self.folder.iterdir():
            m = CHECKPOINT_PATTERN.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def remove_partial_files(self) -> list[Path]:
        return remove_partial_files(self.folder)

    @staticmethod
    def save_file(path: Path, state: dict[str, Any]) -> None:
        """``state`` in a checkpoint file at ``path``, written atomically. torch writes straight
        into the file, hashed on the way, and the header follows: no copy of the payload in
        memory (a replay buffer's can be most of the memory there is)."""
        def write(fh: BinaryIO) -> None:
            fh.write(bytes(HEADER_SIZE))
            payload = _Hashing(fh)
            torch.save(state, payload)
            fh.seek(0)
            fh.write(_HEADER.pack(MAGIC, FILE_VERSION, payload.length, payload.sha256.digest()))

        atomic_write(path, write)

    def describe_last_good(self, failed: Path | None = None) -> str:
        # a failed write leaves no file behind, or the complete one it was to replace
        found = self.list()
        if not found:
            return "there is no complete checkpoint yet"
        if found[-1][1] == failed:  # the final save retrying the step a --save-freq save wrote
            return f"the one written earlier at this step, {failed}, is complete"
        return f"the last complete checkpoint is {found[-1][1]}"

    def save(self, state: dict[str, Any], step: int) -> Path:
        path = self.folder / f"checkpoint-{step}.pt"
        try:
            self.save_file(path, state)
        except SAVE_FAILURES as e:
            raise SaveError(f"could not save checkpoint {path}: {save_reason(e)}; "
                            f"{self.describe_last_good(path)}") from None
        if self.keep > 0:
            # never the one just written, even where a damaged one set aside was numbered higher
            others = [p for _, p in self.list() if p != path]
            for old in others[: max(0, len(others) - (self.keep - 1))]:
                try:
                    old.unlink(missing_ok=True)
                except OSError as e:
                    logger.warning("could not delete the old checkpoint %s: %s", old, os_reason(e))
        return path

    def latest(self) -> Path | None:
        found = self.list()
        return found[-1][1] if found else None

    @staticmethod
    def load_file(path: Path, advice: str = "") -> Any:
        """The object stored at ``path`` (see read_file); ``advice`` is added to an error."""
        try:
            return read_file(path)
        except DamagedCheckpointError as e:
            if advice:
                raise DamagedCheckpointError(f"{e}; {advice}") from None
            raise

    @staticmethod
    def load(path: Path) -> dict[str, Any]:
        """A checkpoint's state dict, with the entries every checkpoint has checked."""
        return check_top_level(path, read_file(path))
