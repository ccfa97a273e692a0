"""The hand-off thread SAC's critics train on (networks/two_threads.py)."""

from __future__ import annotations

import gc
import threading
import time

import pytest

from palaestra.networks.two_threads import SecondThread, in_pairs


def _second_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "palaestra-second-thread" and t.is_alive()]


def test_work_runs_in_pairs_on_two_threads_and_in_order_on_one():
    second = SecondThread()
    seen: list[str] = []
    assert in_pairs(second, lambda i: (i, threading.current_thread().name)) == (
        (0, threading.current_thread().name), (1, "palaestra-second-thread"))
    assert in_pairs(None, lambda i: seen.append(str(i)) or i * 10) == (0, 10) and seen == ["0", "1"]


def test_an_exception_on_either_side_reaches_the_caller_and_the_next_pair_runs():
    second = SecondThread()

    def fail_on(side):
        def work(i):
            if i == side:
                raise ValueError(f"side {i}")
            return i
        return work

    for side in (0, 1):
        with pytest.raises(ValueError, match=f"side {side}"):
            in_pairs(second, fail_on(side))
        assert in_pairs(second, lambda i: i + 1) == (1, 2)  # the hand-off is still in step


def test_the_thread_ends_when_its_owner_is_dropped():
    before = set(_second_threads())  # (other tests' owners may be collected meanwhile)
    second = SecondThread()
    (mine,) = set(_second_threads()) - before
    del second
    gc.collect()
    mine.join(timeout=5)
    assert not mine.is_alive()


def test_a_result_nobody_took_is_waited_out_before_the_next_work():
    # as when a signal interrupts the wait for the second half: the next pair must not get it
    second = SecondThread()
    second.start(lambda: time.sleep(0.2) or "old")
    assert in_pairs(second, lambda i: ("new", i)) == (("new", 0), ("new", 1))


def test_when_both_sides_fail_the_first_thread_s_error_is_raised():
    second = SecondThread()

    def work(i):
        raise (KeyError if i == 0 else ValueError)(f"side {i}")

    with pytest.raises(KeyError, match="side 0"):
        in_pairs(second, work)
    assert in_pairs(second, lambda i: i) == (0, 1)  # the second thread's result was collected


@pytest.mark.parametrize("how", ["signal", "interrupt_main"])
def test_an_interrupted_wait_lets_the_second_thread_s_work_finish_before_raising(how):
    # Ctrl+C while the first thread waits: the caller's next step (clearing gradients) must not
    # race the second thread's half, still running. A real SIGINT ends the wait for the lock at
    # once; interrupt_main's exception comes only once the lock is taken, just after it.
    import _thread
    import signal

    fired = threading.Event()

    def interrupt():
        if how == "signal":
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        else:
            _thread.interrupt_main()
        fired.set()

    second = SecondThread()
    finished = threading.Event()

    def work(i):
        if i == 1:  # still working when the interrupt comes, however late a loaded machine fires it
            fired.wait(timeout=30)
            time.sleep(0.2)
            finished.set()
        return i

    # Python's own SIGINT handler, whatever an earlier test in this process left (a stop-signal
    # test that ignores SIGINT, or pytest-xdist's worker): else the interrupt is dropped
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.1, interrupt).start()
        with pytest.raises(KeyboardInterrupt):
            in_pairs(second, work)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert finished.is_set()
    assert in_pairs(second, lambda i: i) == (0, 1)
