"""The connection to Unity: Palaestra is the gRPC server, Unity the client.

Unity calls ``Exchange`` with its output (observations, side-channel data) and waits for the
answer, which carries the next input (a command, actions, side-channel data). So there is always
at most one call waiting: :meth:`Communicator.exchange` answers it and then waits for Unity's next
call. The handshake is two calls: the first carries Unity's initialization output (its name, API
version, behaviors), which is answered with Palaestra's initialization input; the second carries
nothing, and its answer is the first real input. Closing answers the waiting call with status 400,
as ML-Agents' trainer does; Unity then quits (a build) or stops playing (the Editor).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Callable

from palaestra.envs.base import EnvClosed, EnvError
from palaestra.envs.unity import messages as pb
from palaestra.envs.unity.servers import OK, Server, closing_message, make_server

# what binding the IPv6 loopback raises where a machine has no IPv6 (each platform's numbers;
# Windows' socket errors are WSA codes)
_NO_IPV6 = {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, 10047, 10049}

logger = logging.getLogger("palaestra")

OLDEST_API, NEWEST_API = (1, 0), (1, 5)  # communicator APIs spoken here: 1.0.0 ... 1.5.0
# The trainer package version announced to Unity, which checks it against a range: Unity's 1.0.x
# packages (API 1.0) refuse a trainer above 0.25.999 and then stop talking, so API 1.0 hears the
# release of its era; later packages only warn outside their range, and hear the mlagents-envs
# release that speaks the newest API here.
PACKAGE_VERSION_FOR_API_1_0, PACKAGE_VERSION = "0.16.1", "1.1.0"


class UnityStopped(EnvClosed):
    """Unity ended the connection itself (it quit, or Play was stopped in the Editor)."""


@dataclass(frozen=True)
class Negotiated:
    """What Unity announced and what both sides speak from then on."""

    unity_name: str
    unity_api: str
    unity_package: str
    api: tuple[int, int]  # the (major, minor) spoken
    capabilities: object  # UnityRLCapabilitiesProto as Unity announced it

    @property
    def hybrid_actions(self) -> bool:  # API 1.3+: actions go in continuous_actions/discrete_actions
        return self.api >= (1, 3) or bool(getattr(self.capabilities, "hybridActions", False))


def parse_version(text: str) -> tuple[int, int, int] | None:
    parts = text.strip().split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])


def version_problem(unity_api: str, unity_package: str) -> str | None:
    """Why Palaestra cannot speak the API Unity announced, and what to install on which side; None
    when it can."""
    spoken = f"{OLDEST_API[0]}.{OLDEST_API[1]}.0 to {NEWEST_API[0]}.{NEWEST_API[1]}.0"
    package = f" (Unity package com.unity.ml-agents {unity_package})" if unity_package else ""
    version = parse_version(unity_api)
    if version is None or version[0] < OLDEST_API[0]:
        return (f"the Unity project speaks ML-Agents communicator API {unity_api!r}{package}; Palaestra speaks "
                f"{spoken}. Upgrade the ML-Agents package in the Unity project (Window > Package Manager: "
                "com.unity.ml-agents 1.0.0 or later, ML-Agents release 1 / 0.16 or later) and rebuild")
    if version[0] > NEWEST_API[0]:
        return (f"the Unity project speaks ML-Agents communicator API {unity_api}{package}; Palaestra speaks "
                f"{spoken}. Upgrade Palaestra (a newer checkout, installed again), or use a com.unity.ml-agents "
                "package of major version 1, 2 or 3 in the Unity project")
    return None


def negotiate(init_output: object) -> Negotiated:
    unity_api = init_output.communication_version
    problem = version_problem(unity_api, init_output.package_version)
    if problem is not None:
        raise EnvError(problem)
    major, minor, _ = parse_version(unity_api)
    if (major, minor) > NEWEST_API:
        logger.warning("the Unity project speaks ML-Agents communicator API %s, newer than the %d.%d.0 Palaestra "
                       "knows; training goes on with %d.%d.0 (minor versions are compatible), but features of the "
                       "newer API are not used", unity_api, *NEWEST_API, *NEWEST_API)
    if not init_output.capabilities.baseRLCapabilities:  # every package from 1.0 on announces it
        logger.warning("the Unity project did not announce ML-Agents' base RL capabilities; its package "
                       "(com.unity.ml-agents %s) may be a pre-release: training goes on, but upgrade it if "
                       "observations or actions look wrong", init_output.package_version or "of unknown version")
    api = min((major, minor), NEWEST_API)
    return Negotiated(init_output.name, unity_api, init_output.package_version, api,
                      init_output.capabilities)


def initialization_input(negotiated: Negotiated, seed: int, num_areas: int) -> object:
    """Palaestra's half of the handshake: the API version Unity announced (when spoken here), and
    the capabilities used here."""
    message = pb.UnityInputProto()
    init = message.rl_initialization_input
    init.seed = seed % 2**31  # an int32 on the wire; the run's seed may be up to 2**32 - 1
    # Unity's own version when spoken here, so that Unity sees no mismatch to warn about
    announced = parse_version(negotiated.unity_api)
    init.communication_version = negotiated.unity_api if announced[:2] <= NEWEST_API else \
        f"{NEWEST_API[0]}.{NEWEST_API[1]}.0"
    init.package_version = PACKAGE_VERSION_FOR_API_1_0 if negotiated.api == (1, 0) else PACKAGE_VERSION
    init.num_areas = num_areas
    caps = init.capabilities
    caps.baseRLCapabilities = True
    caps.concatenatedPngObservations = True
    caps.compressedChannelMapping = True
    caps.hybridActions = True
    # not announced: trainingAnalytics (nothing is sent to Unity's analytics), variable-length
    # observations and multi-agent groups (no trainer here uses them; Unity then says so itself)
    return message


def port_problem(port: int) -> str | None:
    """Why ``port`` cannot be listened on (something holds it), or None."""
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                if os.name != "nt":
                    # The last run's connections linger in TIME_WAIT for a minute after it ends; the
                    # server binds through them, and so does this probe (a listener still refuses
                    # it). On Windows the option would let it bind over a listener, so not there.
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, port))
        except OSError as e:
            if family == socket.AF_INET6 and e.errno in _NO_IPV6:  # no IPv6 on this machine
                continue
            return str(e.strerror or e)
    return None


def free_port(start: int) -> int:
    """The first port from ``start`` that nothing holds."""
    for port in range(start, 65536):
        if port_problem(port) is None:
            return port
    raise EnvError(f"no free port from {start} to 65535")


class Communicator:
    """The exchange with the one Unity instance that connects to the server on ``port``
    (envs/unity/servers.py): what a message's status means, time-outs with what to check, and the
    goodbye."""

    def __init__(self, port: int, server: Server | None = None) -> None:
        self.port = port
        # says why Unity can no longer answer (its process exited), or None; set by the launcher
        self.describe_peer: Callable[[], str | None] = lambda: None
        self._server = server if server is not None else make_server(port)
        self._waiting = False  # Unity is inside a call, waiting for the answer
        self._unity_closed = False  # Unity said goodbye itself (and is quitting)
        self._closed = False

    def receive(self, timeout: float, waiting_for: str, hint: str) -> object:
        """Unity's next message; EnvError when it does not come within ``timeout`` seconds or Unity
        is gone. ``hint`` says what to check."""
        deadline = time.monotonic() + timeout
        while True:
            message = self._server.next_message(min(0.25, max(0.0, deadline - time.monotonic())))
            if message is not None:
                break
            gone = self.describe_peer()
            if gone is not None:
                raise EnvError(f"Unity stopped while Palaestra waited for {waiting_for}: {gone}") from None
            if time.monotonic() >= deadline:
                raise EnvError(f"Unity did not send {waiting_for} within {timeout:g} s (port {self.port}). "
                               f"{hint}") from None
        self._waiting = True
        if message.header.status not in (0, OK):
            self._waiting = False  # Unity does not wait for an answer to its goodbye
            self._unity_closed = True
            note = f": {message.header.message}" if message.header.message else ""
            raise UnityStopped(f"Unity closed the connection (status {message.header.status}{note})")
        return message

    def answer(self, unity_input: object) -> None:
        message = pb.UnityMessageProto()
        message.header.status = OK
        message.unity_input.CopyFrom(unity_input)
        self._waiting = False
        self._server.reply(message)

    def exchange(self, unity_input: object, timeout: float, waiting_for: str, hint: str) -> object:
        self.answer(unity_input)
        return self.receive(timeout, waiting_for, hint)

    def close(self, grace: float = 1.0) -> bool:
        """Answer Unity's waiting call with status 400 (Unity then quits) and stop the server; True
        if Unity is quitting (it took the answer, or had said goodbye itself); False when no call
        was waiting, as when Unity stopped answering."""
        if self._closed:
            return False
        self._closed = True
        delivered = self._unity_closed
        if self._waiting:
            self._waiting = False
            self._server.reply(closing_message("training is over"))
            delivered = self._server.delivered(grace)  # let the answer reach Unity before the server stops
        self._server.stop(grace)
        return delivered
