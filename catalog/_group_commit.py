"""Group commit: rows submitted by concurrent callers are written together, one transaction per batch.

A caller :meth:`GroupCommitter.submit`\\ s an item and gets a :class:`~concurrent.futures.Future`; one
writer thread takes every item waiting at that moment (up to ``max_batch``), writes them in a single
transaction and then resolves each future: with ``None`` once the transaction has committed, or with
the error the writer maps the failure to. A caller that waits on its future therefore never goes on
before its item is durable, and under load the cost of one commit is shared by the whole batch.

When a batch fails it is written again item by item, so an item the database refuses (a value it
will not store) fails only its own caller; when the database itself is failing, every item fails.

The writer thread starts with the first item and ends after ``idle_s`` without work (the next item
starts a new one), so an idle or forgotten committer holds no thread. :meth:`close` drains what is
pending; items submitted after it are written at once in the caller's thread.

A caller already on a worker thread can :meth:`~GroupCommitter.lead` instead (leader/follower group
commit): when no batch is being written it writes its own item at once, in its own thread, together
with every item waiting at that moment, and returns a resolved future, saving the hand-over to the
writer thread and back. When a batch is being written it queues its item for the writer thread like
:meth:`~GroupCommitter.submit`, so under load the items still commit together.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

__all__ = ["GroupCommitter"]

T = TypeVar("T")

_STOP = object()


class GroupCommitter(Generic[T]):
    """Writes submitted items in batches on one thread; each item's future resolves once it is committed.

    ``write`` stores a batch in one transaction (raising when it did not commit); ``fail`` turns its
    exception into the exception a given item's caller receives; ``retry_alone`` says whether a failed
    batch is written again item by item (not when the database itself is down or locked: each retry
    would wait for it again).
    """

    def __init__(
        self,
        write: Callable[[Sequence[T]], None],
        fail: Callable[[T, Exception], Exception],
        *,
        retry_alone: Callable[[Exception], bool] = lambda exc: True,
        max_batch: int = 500,
        idle_s: float = 2.0,
        name: str = "group-commit",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._write = write
        self._fail = fail
        self._retry_alone = retry_alone
        self._max_batch = max_batch
        self._idle_s = idle_s
        self._name = name
        self._queue: queue.SimpleQueue[tuple[T, Future[None]] | object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._writing = 0  # batches being written now, by the writer thread or by leaders
        self.batches = 0  # transactions committed or attempted: what a test or a benchmark can read

    def submit(self, item: T) -> Future[None]:
        """Queue ``item``; its future resolves when the item has committed (or fails with ``fail``'s error)."""
        done: Future[None] = Future()
        with self._lock:
            if not self._closed:
                self._queue.put((item, done))
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
                return done
        self._commit([(item, done)])  # closed: no writer thread any more, write in the caller's thread
        return done

    def lead(self, item: T) -> Future[None]:
        """Write ``item`` in this thread when no batch is being written, else queue it as :meth:`submit` does.

        The leader's batch is its item first, then the items waiting at that moment (up to
        ``max_batch``), in the order they came; their futures resolve as the batch ends, whoever wrote
        it. Call it from a thread that may block on the database, never from an event loop.
        """
        done: Future[None] = Future()
        with self._lock:
            leading = not self._closed and self._writing == 0
            if leading:
                self._writing += 1
        if not leading:
            return self.submit(item)
        batch = [(item, done)]
        try:
            while len(batch) < self._max_batch:
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is _STOP:  # close() is waiting for the writer thread: give the marker back
                    self._queue.put(entry)
                    break
                batch.append(entry)  # type: ignore[arg-type]
            self._commit(batch)
        finally:
            with self._lock:
                self._writing -= 1
        return done

    def close(self) -> None:
        """Write what is pending, stop the writer thread and write later items in their caller's thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(_STOP)
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self._idle_s)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():  # submit() holds the lock while it queues: nothing is missed
                        self._thread = None
                        return
                continue
            stop = first is _STOP
            batch = [] if stop else [first]
            while len(batch) < self._max_batch:
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is _STOP:
                    stop = True
                else:
                    batch.append(entry)
            if batch:
                with self._lock:
                    self._writing += 1
                try:
                    self._commit(batch)  # type: ignore[arg-type]
                finally:
                    with self._lock:
                        self._writing -= 1
            if stop:
                while not self._queue.empty():  # drain the rest before leaving
                    entry = self._queue.get_nowait()
                    if entry is not _STOP:
                        self._commit([entry])  # type: ignore[list-item]
                with self._lock:
                    self._thread = None
                return

    def _commit(self, batch: list[tuple[T, Future[None]]]) -> None:
        with self._lock:
            self.batches += 1
        try:
            self._write([item for item, _ in batch])
        except Exception as exc:
            if len(batch) > 1 and self._retry_alone(exc):
                for entry in batch:  # one refused item must not fail the others
                    self._commit([entry])
                return
            for item, done in batch:
                error = self._fail(item, exc)
                error.__cause__ = exc
                done.set_exception(error)
            return
        for _, done in batch:
            done.set_result(None)
