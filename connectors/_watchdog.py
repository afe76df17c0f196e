"""One watchdog thread per process that calls a cancel function once a deadline passes.

Starting a ``threading.Timer`` per statement costs a thread start (milliseconds on small VMs); the
watchdog keeps one daemon thread and a heap of deadlines instead. ``arm`` returns a handle whose
``disarm`` guarantees the cancel function is not called afterwards.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

__all__ = ["Alarm", "arm"]


class Alarm:
    """A pending cancellation; ``fired`` tells whether it ran."""

    __slots__ = ("_cancel", "_done", "at", "fired")

    def __init__(self, at: float, cancel: Callable[[], None]) -> None:
        self.at = at
        self.fired = False
        self._cancel = cancel
        self._done = False

    def disarm(self) -> None:
        """Make sure the cancel function does not run from now on (waits if it is running)."""
        with _lock:
            self._done = True


_lock = threading.Lock()
_wakeup = threading.Condition(_lock)
_heap: list[tuple[float, int, Alarm]] = []
_counter = itertools.count()
_thread: threading.Thread | None = None


def arm(timeout_s: float, cancel: Callable[[], None]) -> Alarm:
    """Call ``cancel`` once, from the watchdog thread, ``timeout_s`` from now unless disarmed first."""
    global _thread
    alarm = Alarm(time.monotonic() + timeout_s, cancel)
    with _lock:
        while _heap and _heap[0][2]._done:  # statements that ended: the heap stays as long as those running
            heapq.heappop(_heap)
        heapq.heappush(_heap, (alarm.at, next(_counter), alarm))
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="dataproducts-watchdog", daemon=True)
            _thread.start()
        if _heap[0][2] is alarm:  # a later deadline than the one the watchdog waits for needs no wake-up
            _wakeup.notify()
    return alarm


def _run() -> None:
    with _lock:
        while True:
            while _heap and _heap[0][2]._done:
                heapq.heappop(_heap)
            if not _heap:
                _wakeup.wait()
                continue
            wait = _heap[0][0] - time.monotonic()
            if wait > 0:
                _wakeup.wait(wait)
                continue
            _, _, alarm = heapq.heappop(_heap)
            alarm._done = True
            alarm.fired = True
            try:
                alarm._cancel()  # under the lock: disarm() cannot return while a cancel is running
            except Exception:  # noqa: BLE001 - a statement that ended meanwhile may refuse the interrupt
                pass
