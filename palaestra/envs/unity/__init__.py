"""Unity builds and the Unity Editor over ML-Agents' gRPC protocol (docs/unity.md).

``open_build`` and ``open_editor`` are the two environment sources (envs/sources.py); a user's
own Python code may call them too, for instance to register side channels:
``--env=my_scene:make`` with ``def make(port, seed, engine): return open_build("Build/Scene", port,
seed=seed, engine=engine, side_channels=[RawBytesChannel(MY_ID)])`` (``engine`` carries the run's
engine flags, --timeout-wait and where the build's log goes).
"""

from __future__ import annotations

import logging
import os
from typing import Mapping

from palaestra.envs.base import EngineConfig, EnvError
from palaestra.envs.unity.communicator import Communicator, port_problem
from palaestra.envs.unity.env import UnityEnv
from palaestra.envs.unity.launcher import find_executable, launch
from palaestra.envs.unity.side_channels import (
    EngineConfigurationChannel,
    EnvironmentParametersChannel,
    FloatPropertiesChannel,
    RawBytesChannel,
    SideChannel,
    StatsChannel,
)

logger = logging.getLogger("palaestra")

EDITOR_PORT = 5004  # the Editor always connects here
PORTS_TRIED = 100  # a build whose port is taken moves up at most this far

__all__ = ["UnityEnv", "open_build", "open_editor", "SideChannel", "RawBytesChannel", "FloatPropertiesChannel",
           "EngineConfigurationChannel", "EnvironmentParametersChannel", "StatsChannel", "EDITOR_PORT"]


def _listen_from(port: int, label: str) -> Communicator:
    """A server on ``port`` or, when that one is taken, on the next free one (said in the log)."""
    problems: dict[str, int] = {}  # each reason a port was refused, and how many were
    for candidate in range(port, min(port + PORTS_TRIED, 65536)):
        problem = port_problem(candidate)
        if problem is not None:
            problems[problem] = problems.get(problem, 0) + 1
            continue
        try:
            communicator = Communicator(candidate)
        except EnvError:  # taken between the check and the bind (another worker, another run)
            continue
        if candidate != port:
            logger.warning("%s: port %d is in use; the build is told to connect on port %d instead", label, port,
                           candidate)
        return communicator
    reasons = "; ".join(f"{why}: {count}" for why, count in problems.items()) or "taken as they were bound"
    privileged = " (ports below 1024 need the administrator's rights)" if port < 1024 else ""
    raise EnvError(f"{label}: none of ports {port} to {min(port + PORTS_TRIED, 65536) - 1} can be listened on "
                   f"({reasons}){privileged}; choose another --base-port")


def open_build(name: str, port: int, seed: int = 0, num_areas: int = 1, engine: EngineConfig | None = None,
               env_args: list[str] | None = None, side_channels: list[SideChannel] | None = None,
               parameters: Mapping[str, float] | None = None) -> UnityEnv:
    """Start the build ``name`` names, listen for it on ``port`` (or the next free port) and connect;
    its first reset sends ``parameters`` (environment parameters)."""
    engine = engine or EngineConfig()
    executable = os.path.abspath(find_executable(name))
    label = f"--env={name}"
    communicator = _listen_from(port, label)
    try:
        process = launch(executable, communicator.port, engine.no_graphics, engine.log_folder, env_args or [])
    except BaseException:
        communicator.close()
        raise
    communicator.describe_peer = process.exit_description
    try:
        return UnityEnv(communicator, process, seed=seed, num_areas=num_areas, engine=engine,
                        side_channels=side_channels, timeout=engine.timeout_wait, where=label, parameters=parameters)
    except BaseException:  # (UnityEnv closes what it was given once it runs; not before, e.g. bad channels)
        communicator.close()
        process.stop(wait=0.5)
        raise


def open_editor(seed: int = 0, num_areas: int = 1, engine: EngineConfig | None = None,
                side_channels: list[SideChannel] | None = None, port: int | None = None,
                parameters: Mapping[str, float] | None = None) -> UnityEnv:
    """Listen on the Editor's port and wait for Play to be pressed; the first reset sends
    ``parameters`` (environment parameters)."""
    engine = engine or EngineConfig()
    port = EDITOR_PORT if port is None else port
    problem = port_problem(port)
    if problem is not None:
        holder = process_holding(port)
        advice = (f" by {holder}: stop it first" if holder else ": stop whatever listens on it first (another "
                  "training run?); the Editor connects to no other port")
        raise EnvError(f"port {port}, where the Unity Editor connects, is in use ({problem}){advice}")
    communicator = Communicator(port)
    print("Listening on port %d. Start training by pressing the Play button in the Unity Editor." % port, flush=True)
    return UnityEnv(communicator, None, seed=seed, num_areas=num_areas, engine=engine, side_channels=side_channels,
                    timeout=engine.timeout_wait, where="the Unity Editor", parameters=parameters)


def process_holding(port: int) -> str | None:
    """'process <pid> (<command>)' listening on ``port``, where the system lets us see it (Linux)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if int(parts[1].rsplit(":", 1)[1], 16) == port and parts[3] == "0A":  # 0A: LISTEN
                        inodes.add(parts[9])
        except (OSError, StopIteration, ValueError, IndexError):
            continue
    if not inodes:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                    return f"process {pid} ({command[:80]})"
        except OSError:
            continue
    return None
