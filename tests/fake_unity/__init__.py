"""A stand-in for a Unity build, written from ML-Agents' protocol: a gRPC client that plays
Unity's side of the communicator (scene.py, player.py), and ``make_build`` to put an executable
in a folder that is started the way a Unity build is (``--mlagents-port``, ``-batchmode
-nographics``, ``-logFile``, extra arguments)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]


def make_build(folder: Path, name: str = "FakeBall", *args: str, suffix: str = ".x86_64",
               python: str | None = None) -> Path:
    """An executable ``folder/name+suffix`` that runs the fake player with ``args`` before the
    arguments it is started with (so a build's fixed scene and faults come first, as they would be
    baked into a real build)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{suffix}"
    quoted = " ".join(f"'{a}'" for a in args)
    path.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH='{REPOSITORY}'${{PYTHONPATH:+:$PYTHONPATH}} exec '{python or sys.executable}' "
        f"-m tests.fake_unity.player {quoted} \"$@\"\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def running_players(marker: str) -> list[int]:
    """Fake players still running whose command line contains ``marker`` (a test's folder, which
    is in their -logFile argument): builds left behind (Linux)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read().decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if "tests.fake_unity.player" in command and marker in command and state != "Z":
            found.append(int(entry))
    return found
