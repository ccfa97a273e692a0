"""Checkpoints: ``models/<run-id>/<Behavior>/checkpoint-<step>.pt``, written atomically (a temp
file in the same folder, flushed and fsynced, then renamed over), keeping the newest
``--keep-checkpoints``. A kill at any moment leaves every listed checkpoint complete."""

from __future__ import annotations

import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

_UMASK = os.umask(0)
os.umask(_UMASK)
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)\.pt$")


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or does not fit the policy."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file ordinary permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


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

    @staticmethod
    def save_file(path: Path, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    def save(self, state: dict[str, Any], step: int) -> Path:
        path = self.folder / f"checkpoint-{step}.pt"
        self.save_file(path, state)
        if self.keep > 0:
            for _, old in self.list()[: -self.keep]:
                old.unlink(missing_ok=True)
        return path

    def latest(self) -> Path | None:
        found = self.list()
        return found[-1][1] if found else None

    @staticmethod
    def load_file(path: Path, advice: str) -> Any:
        """torch.load restricted to tensors and plain data; a damaged file is a CheckpointError."""
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many kinds for a damaged file
            raise CheckpointError(
                f"{path} is damaged or not a Palaestra file ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else 'unreadable'}); {advice}"
            ) from None

    @staticmethod
    def load(path: Path) -> dict[str, Any]:
        state = CheckpointManager.load_file(
            path, "delete it to resume from an older checkpoint, or start over with --force")
        if not isinstance(state, dict) or "algorithm" not in state:
            raise CheckpointError(f"checkpoint {path} is not a Palaestra checkpoint")
        return state
