"""Group commit: batched writes, each caller released only once its own item has committed."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait

import pytest

from catalog._group_commit import GroupCommitter


class Store:
    """A transactional store in memory: a batch commits whole, or not at all, once the gate opens."""

    def __init__(self, *, refuse: set[str] | None = None, down: bool = False) -> None:
        self.committed: list[str] = []
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.writing = threading.Event()
        self.refuse = refuse or set()
        self.down = down

    def write(self, items: Sequence[str]) -> None:
        self.writing.set()
        self.gate.wait()
        self.batches.append(list(items))
        if self.down:
            raise ConnectionError("server closed the connection")
        if bad := self.refuse.intersection(items):
            raise ValueError(f"refused {sorted(bad)}")
        self.committed.extend(items)


def refused(item: str, exc: Exception) -> Exception:
    return RuntimeError(f"{item} not written: {exc}")


def test_items_that_wait_while_a_batch_commits_are_written_together_in_the_next_one() -> None:
    store = Store()
    store.gate.clear()
    committer = GroupCommitter(store.write, refused)
    first = committer.submit("a")
    assert store.writing.wait(10)
    waiting = [committer.submit(f"b{i}") for i in range(10)]
    assert not first.done() and not any(f.done() for f in waiting)  # nobody returns before its commit
    store.gate.set()
    for future in [first, *waiting]:
        assert future.result(10) is None
    assert store.batches == [["a"], [f"b{i}" for i in range(10)]]
    committer.close()


def test_concurrent_callers_each_return_after_their_own_item_committed() -> None:
    store = Store()
    committer = GroupCommitter(store.write, refused)

    def call(i: int) -> bool:
        committer.submit(f"item{i}").result(30)
        return f"item{i}" in store.committed

    with ThreadPoolExecutor(max_workers=32) as pool:
        assert all(pool.map(call, range(200)))
    assert sorted(store.committed) == sorted(f"item{i}" for i in range(200))
    committer.close()


def test_a_failed_commit_fails_every_caller_of_its_batch_and_writes_nothing() -> None:
    store = Store(down=True)
    store.gate.clear()
    committer = GroupCommitter(store.write, refused)
    futures = [committer.submit(f"r{i}") for i in range(5)]
    store.gate.set()
    wait(futures, timeout=30)
    for i, future in enumerate(futures):
        with pytest.raises(RuntimeError, match=f"^r{i} not written: server closed the connection") as info:
            future.result()
        assert isinstance(info.value.__cause__, ConnectionError)
    assert store.committed == []
    committer.close()


def test_an_item_the_store_refuses_fails_only_its_own_caller() -> None:
    store = Store(refuse={"poison"})
    store.gate.clear()
    committer = GroupCommitter(store.write, refused)
    blocker = committer.submit("first")
    assert store.writing.wait(10)
    futures = {item: committer.submit(item) for item in ("x", "poison", "y")}
    store.gate.set()
    blocker.result(10)
    futures["x"].result(10)
    futures["y"].result(10)
    with pytest.raises(RuntimeError, match="poison not written"):
        futures["poison"].result(10)
    assert store.committed == ["first", "x", "y"]
    committer.close()


def test_closing_drains_what_is_pending_and_later_items_are_written_in_the_caller() -> None:
    store = Store()
    store.gate.clear()
    committer = GroupCommitter(store.write, refused, max_batch=3)
    futures = [committer.submit(f"p{i}") for i in range(10)]
    closer = threading.Thread(target=committer.close)
    closer.start()
    store.gate.set()
    closer.join(30)
    assert not closer.is_alive()
    assert all(f.done() and f.exception() is None for f in futures)
    assert sorted(store.committed) == sorted(f"p{i}" for i in range(10))
    assert all(len(batch) <= 3 for batch in store.batches)
    late = committer.submit("late")
    assert late.done() and late.result() is None and store.committed[-1] == "late"


def test_an_idle_writer_thread_ends_and_the_next_item_starts_another() -> None:
    store = Store()
    committer = GroupCommitter(store.write, refused, idle_s=0.01, name="idle-writer")
    committer.submit("one").result(10)
    for thread in [t for t in threading.enumerate() if t.name == "idle-writer"]:
        thread.join(30)
    assert not any(t.name == "idle-writer" for t in threading.enumerate())
    committer.submit("two").result(10)
    assert store.committed == ["one", "two"]
    committer.close()


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommitter(Store().write, refused, max_batch=0)


def test_a_leader_with_no_batch_in_flight_commits_its_item_in_its_own_thread() -> None:
    store = Store()
    writers: list[str] = []
    original = store.write

    def write(items: Sequence[str]) -> None:
        writers.append(threading.current_thread().name)
        original(items)

    committer = GroupCommitter(write, refused, name="writer-thread")
    done = committer.lead("solo")
    assert done.done() and done.result() is None  # resolved before lead() returned
    assert store.committed == ["solo"] and writers == [threading.current_thread().name]
    assert not any(t.name == "writer-thread" for t in threading.enumerate())  # no hand-over
    committer.close()


def test_a_leader_takes_the_items_waiting_and_commits_them_after_its_own() -> None:
    store = Store()
    store.gate.clear()
    committer = GroupCommitter(store.write, refused)
    first = committer.submit("a")  # the writer thread holds this batch open
    assert store.writing.wait(10)
    queued = committer.lead("b")  # a batch is in flight: it queues like submit()
    assert not queued.done()
    store.gate.set()
    first.result(10)
    queued.result(10)
    store.gate.clear()
    store.writing.clear()
    leader = threading.Thread(target=lambda: committer.lead("leader").result(10))
    leader.start()
    assert store.writing.wait(10)
    followers = [committer.submit(f"f{i}") for i in range(3)]  # arrive while the leader writes
    assert not any(f.done() for f in followers)  # nobody returns before its commit
    store.gate.set()
    leader.join(10)
    for future in followers:
        future.result(10)
    assert store.batches[:2] == [["a"], ["b"]]
    # the followers went to the writer thread, not into the leader's batch already being written
    assert ["leader"] in store.batches[2:]
    assert sorted(sum(store.batches[2:], [])) == ["f0", "f1", "f2", "leader"]
    committer.close()


def test_a_leader_commits_the_followers_queued_before_it_in_its_batch() -> None:
    store = Store()
    committer = GroupCommitter(store.write, refused)
    committer._queue.put(("w1", w1 := Future()))  # waiting when the leader comes (the writer not yet awake)
    committer._queue.put(("w2", w2 := Future()))
    done = committer.lead("leader")
    assert done.result(0) is None and w1.result(0) is None and w2.result(0) is None
    assert store.batches == [["leader", "w1", "w2"]]
    committer.close()


def test_a_failed_leader_batch_fails_exactly_its_own_rows() -> None:
    store = Store(refuse={"poison"})
    committer = GroupCommitter(store.write, refused)
    committer._queue.put(("ok", ok := Future()))
    committer._queue.put(("poison", poison := Future()))
    done = committer.lead("leader")
    assert done.result(0) is None and ok.result(0) is None  # the batch retried item by item
    with pytest.raises(RuntimeError, match="poison not written"):
        poison.result(0)
    assert store.committed == ["leader", "ok"]
    down = Store(down=True)
    failing = GroupCommitter(down.write, refused)
    failing._queue.put(("queued", queued := Future()))
    lead = failing.lead("mine")
    for item, future in (("mine", lead), ("queued", queued)):
        with pytest.raises(RuntimeError, match=f"^{item} not written: server closed"):
            future.result(0)
    assert down.committed == []
    later = Store()
    failing._write = later.write  # the database is back: the next leader commits
    assert failing.lead("next").result(0) is None and later.committed == ["next"]
    committer.close()
    failing.close()


def test_concurrent_leaders_and_submitters_all_return_after_their_own_commit() -> None:
    store = Store()
    committer = GroupCommitter(store.write, refused)

    def call(i: int) -> bool:
        (committer.lead if i % 2 else committer.submit)(f"item{i}").result(30)
        return f"item{i}" in store.committed

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert all(pool.map(call, range(300)))
    assert sorted(store.committed) == sorted(f"item{i}" for i in range(300))
    assert len(store.batches) < 300  # some were grouped
    committer.close()
