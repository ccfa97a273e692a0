"""Work split between two threads that each keep their own data.

On two cores, numpy's BLAS splits every matrix product between its threads, and the next
operation reads the whole result on the first core: each product's output crosses between the
cores' caches. Where the two cores share a cache that is cheap; where they do not (a virtual
machine's two cores placed on different chiplets, which this project's machines were measured to
switch between from minute to minute: a cache line's round trip between the cores 55-80 ns in one
placement, 330-400 ns in the other) the second thread gains nothing (docs/benchmarks.md). Work
split by what it owns, SAC's two critics each on its own thread with one BLAS thread each, keeps
each critic's weights, gradients and activations in one core's cache in either placement.

numpy's products and large element-wise operations, and torch's kernels, release the GIL, so the
two threads run at once; their Python in between takes turns.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any, Callable


class SecondThread:
    """A thread that runs one function at a time for the thread that hands it over: ``start(fn)``,
    do the other half, then ``result()`` (re-raises what ``fn`` raised). A bare lock per direction
    is the cheapest hand-off (envs/unity/servers.py measured it against a queue). The thread ends
    when this object is collected."""

    def __init__(self) -> None:
        self._go = threading.Lock()
        self._go.acquire()
        self._done = threading.Lock()  # held while no result waits; released by the thread with one
        self._done.acquire()
        # the work, its result, its exception, how many works the thread has finished
        self._box: list[Any] = [None, None, None, 0]
        self._started = 0  # works handed over
        self._pending = False  # work handed over whose result was not taken yet
        # the thread holds the locks and the box, not this object, so that dropping it ends the thread
        threading.Thread(target=_serve, args=(self._go, self._done, self._box), name="palaestra-second-thread",
                         daemon=True).start()
        weakref.finalize(self, _stop, self._go, self._box)

    def _wait_out(self) -> None:
        """Wait, whatever signals come meanwhile, until the work handed over has finished (one
        half of a training step: milliseconds), and drop its result: the caller's next step (e.g.
        clearing gradients) must not race it. A signal may have ended the caller's wait just
        before or just after it took the result's lock; the finished count tells when the work is
        done, and taking the lock without blocking leaves it held either way."""
        while True:
            try:
                while self._box[3] < self._started:
                    time.sleep(0.0002)
                self._done.acquire(blocking=False)
                break
            except BaseException:
                continue
        self._pending = False
        self._box[1] = self._box[2] = None

    def start(self, work: Callable[[], Any]) -> None:
        if self._pending:  # a result nobody took: wait it out
            self._wait_out()
        self._box[0] = work
        self._pending = True
        self._started += 1
        self._go.release()

    def result(self) -> Any:
        try:
            self._done.acquire()
        except BaseException:  # a signal's exception during the wait: the work may still run
            self._wait_out()
            raise
        self._pending = False
        out, error = self._box[1], self._box[2]
        self._box[1] = self._box[2] = None
        if error is not None:
            raise error
        return out


def _serve(go: threading.Lock, done: threading.Lock, box: list[Any]) -> None:
    while True:
        go.acquire()
        work = box[0]
        if work is None:  # _stop: the owner was collected
            return
        try:
            box[1], box[2] = work(), None
        except BaseException as e:  # handed back to the caller
            box[1], box[2] = None, e
        box[0] = work = None  # (the work's closure holds a step's arrays)
        done.release()
        box[3] += 1  # after the release: whoever sees the count finds the lock released


def _stop(go: threading.Lock, box: list[Any]) -> None:
    box[0] = None
    try:
        go.release()
    except RuntimeError:  # already released for work not yet begun: the thread finds None instead
        pass


def in_pairs(second: SecondThread | None, work: Callable[[int], Any]) -> tuple[Any, Any]:
    """(work(0), work(1)): on two threads where ``second`` is given, one after the other where not."""
    if second is None:
        return work(0), work(1)
    second.start(lambda: work(1))
    try:
        first = work(0)
    except BaseException:
        try:
            second.result()  # always collected, so that the next hand-off starts in step
        except BaseException:
            pass  # the first thread's error is the one raised (the two usually share a cause)
        raise
    return first, second.result()
