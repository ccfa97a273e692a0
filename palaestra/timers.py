"""Hierarchical profiling timers and gauges, written to ``summaries/<run-id>_timers.json`` in
ML-Agents' format (version 0.1.0): nested nodes with total, count, self and children."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

TIMER_FORMAT_VERSION = "0.1.0"


@dataclass
class TimerNode:
    total: float = 0.0
    count: int = 0
    children: dict[str, "TimerNode"] = field(default_factory=dict)

    def child(self, name: str) -> "TimerNode":
        node = self.children.get(name)
        if node is None:
            node = self.children[name] = TimerNode()
        return node

    def to_dict(self, name: str) -> dict[str, Any]:
        child_total = sum(c.total for c in self.children.values())
        out: dict[str, Any] = {"name": name, "total": self.total, "count": self.count,
                               "self": max(self.total - child_total, 0.0)}
        if self.children:
            out["children"] = {k: v.to_dict(k) for k, v in self.children.items()}
        return out


def _versions() -> dict[str, str]:
    """What ML-Agents' metadata names its own and its libraries' versions by: Palaestra's, the
    communicator API it speaks, and the libraries that train (torch where the run imported it)."""
    import numpy

    from palaestra import __version__
    from palaestra.options import NEWEST_COMMUNICATION_API

    # one version, as ML-Agents writes it (tools read it as one): the newest this trainer speaks
    versions = {"palaestra_version": __version__, "communication_protocol_version": NEWEST_COMMUNICATION_API,
                "numpy_version": numpy.__version__}
    torch = sys.modules.get("torch")
    if torch is not None:
        versions["torch_version"] = torch.__version__
    return versions


class TimerStack:
    def __init__(self) -> None:
        self.root = TimerNode()
        self.stack = [self.root]
        self.start = time.perf_counter()
        self.gauges: dict[str, dict[str, float]] = {}
        self.metadata: dict[str, str] = {"timer_format_version": TIMER_FORMAT_VERSION,
                                         "start_time_seconds": str(int(time.time())),
                                         "python_version": sys.version.split()[0],
                                         "command_line_arguments": " ".join(sys.argv)}

    def timed(self, name: str) -> "_Timed":
        """``with timed("name"):`` adds the block's time to a child of the current node."""
        return _Timed(self, name)

    def set_gauge(self, name: str, value: float) -> None:
        g = self.gauges.get(name)
        if g is None:
            self.gauges[name] = {"value": value, "min": value, "max": value, "count": 1}
        else:
            g.update(value=value, min=min(g["min"], value), max=max(g["max"], value), count=g["count"] + 1)

    def to_dict(self) -> dict[str, Any]:
        self.root.total = time.perf_counter() - self.start
        self.root.count = 1
        out = self.root.to_dict("root")
        self.metadata["end_time_seconds"] = str(int(time.time()))
        self.metadata |= _versions()
        out["gauges"] = self.gauges
        out["metadata"] = self.metadata
        return out

    def write(self, path: str) -> None:
        from palaestra.checkpoints import atomic_write_bytes

        atomic_write_bytes(path, json.dumps(self.to_dict(), indent=2).encode())


class _Timed:
    # A plain class rather than @contextmanager: entered a few times per environment step, and
    # a generator-based context manager costs several times more.
    __slots__ = ("timers", "name", "node", "start")

    def __init__(self, timers: TimerStack, name: str) -> None:
        self.timers = timers
        self.name = name

    def __enter__(self) -> None:
        self.node = self.timers.stack[-1].child(self.name)
        self.timers.stack.append(self.node)
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.node.total += time.perf_counter() - self.start
        self.node.count += 1
        self.timers.stack.pop()


TIMERS = TimerStack()
timed = TIMERS.timed
