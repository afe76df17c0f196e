"""Open a store's differential and fuzz it for a number of statements or seconds (the test and the soak)."""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisWarning
from hypothesis.internal.conjecture.providers import AVAILABLE_PROVIDERS, HypothesisProvider

from servers.demo import DemoWorkspace
from servers.service import DataProductsService
from tests.fuzz.grammar import statements
from tests.fuzz.harness import Case, Differential, Tally, summary
from tests.fuzz.oracle import open_oracle
from tests.fuzz.schema import profile_for
from tests.fuzz.stores import open_store

__all__ = ["FuzzRun", "fuzz", "open_differential"]

BATCH = 10  # statements per hypothesis example


@contextmanager
def open_differential(
    kind: str, workspace: DemoWorkspace, *, create_database: Callable[[str], str] | None = None
) -> Iterator[Differential]:
    """Store ``kind`` over ``workspace``, its service behind a portal, an oracle per principal.

    ``create_database(name)`` makes an empty PostgreSQL database and returns its URL (postgresql only).
    """
    store = open_store(kind, workspace, pg_url=create_database)
    oracles = {}
    try:
        for name in store.principals:
            oracles[name] = open_oracle(
                store, name, pg_url=create_database(f"oracle_{name}") if create_database else None
            )
        with start_blocking_portal() as portal:
            service = DataProductsService.open(store.settings)
            try:
                yield Differential(store, service, portal, oracles)
            finally:
                portal.call(service.aclose)
    finally:
        for oracle in oracles.values():
            oracle.close()


class _SeededProvider(HypothesisProvider):
    """Hypothesis's own distributions, every choice drawn from one seeded stream for the whole run.

    The default backend spends most examples on the smallest statements and on mutants that copy parts
    of the previous example: four statements in five were repeats. A fuzzer wants a fresh statement
    every draw, repeatable from a seed; this backend (``settings.backend``) gives exactly that.
    """

    stream = random.Random(0)

    def __init__(self, conjecturedata: Any, /) -> None:
        super().__init__(conjecturedata)
        self._random = type(self).stream


@contextmanager
def _seeded_backend(random_seed: int) -> Iterator[str]:
    name = f"dataproducts-fuzz-{random_seed}"
    AVAILABLE_PROVIDERS[name] = type("SeededProvider", (_SeededProvider,), {"stream": random.Random(random_seed)})
    try:
        yield name
    finally:
        del AVAILABLE_PROVIDERS[name]


class _Enough(Exception):
    """Raised once the run has its statements or its time: hypothesis stops there (nothing is shrunk)."""


@dataclass
class FuzzRun:
    differential: Differential
    seconds: float = 0.0
    tally: Tally = field(default_factory=Tally)

    @property
    def statements(self) -> int:
        return self.differential.stats["statements"]

    def report(self) -> str:
        text = summary(self.differential.stats, self.seconds, self.differential.store.kind)
        text += "\n  slowest: " + "; ".join(f"{t:.2f}s {sql[:160]!r}" for t, sql in self.differential.slowest)
        if len(self.tally):
            text += f"\n{len(self.tally)} findings in {len(self.tally.counts)} classes:\n{self.tally.report()}"
        return text


def fuzz(
    differential: Differential,
    *,
    statements_wanted: int | None = None,
    seconds: float,
    random_seed: int = 0,
    progress: Callable[[FuzzRun], None] | None = None,
    progress_every: float = 30.0,
) -> FuzzRun:
    """Check generated statements until ``statements_wanted`` distinct ones ran or ``seconds`` passed.

    The same ``random_seed`` generates the same statements. A statement generated again is skipped.
    """
    run = FuzzRun(differential)
    profile = profile_for(differential.store)
    seen: set[tuple[str, str]] = set()
    started = last = time.perf_counter()

    def enough() -> bool:
        run.seconds = time.perf_counter() - started
        wanted = statements_wanted is not None and run.statements >= statements_wanted
        return wanted or run.seconds >= seconds

    with _seeded_backend(random_seed) as backend:

        @settings(
            max_examples=10**9,  # the run stops on _Enough: each example draws its whole batch first
            deadline=None,
            database=None,
            backend=backend,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
            report_multiple_bugs=False,
        )
        @given(st.lists(statements(profile), min_size=BATCH, max_size=BATCH))
        def check(batch: list[Case]) -> None:
            nonlocal last
            for case in batch:
                if enough():
                    raise _Enough
                if (case.principal, case.sql) in seen:
                    differential.stats["repeats"] += 1
                    continue
                seen.add((case.principal, case.sql))
                run.tally.add(differential.check(case))
            if progress is not None and time.perf_counter() - last >= progress_every:
                last = time.perf_counter()
                progress(run)

        with warnings.catch_warnings():
            # stopping raises _Enough inside an example, and hypothesis then prints the batch it drew:
            # a statement may be hundreds of kilobytes, and its "overly large repr" warning is no finding
            warnings.filterwarnings("ignore", message="Generating overly large repr", category=HypothesisWarning)
            try:
                check()
            except _Enough:
                pass
    run.seconds = time.perf_counter() - started
    return run
