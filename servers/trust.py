"""What a reader is told about a product's trustworthiness: its freshness and its failing checks.

:class:`TrustKeeper` measures a product's ``as_of`` (see :mod:`catalog.freshness`) at most once per
``freshness.cache_s`` seconds and reads the latest check results from the quality log at the same
pace, so a read never costs a scan of its own. :meth:`TrustKeeper.gate` is what every read use case
calls, inside its audited call, for the products it touches: it returns a :class:`ReadTrust` — one
freshness block per product and the warnings to add (stale with ``on_stale: warn``, a failing
``error``-severity check) — and raises :class:`~catalog.errors.StaleDataError` for a stale product
whose contract says ``on_stale: refuse``. Reads over many products at once (search without a product)
ask it to *withhold* such products instead of refusing the whole call.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.to_thread

from catalog.contract import ProductContract
from catalog.errors import DataProductsError, StaleDataError
from catalog.freshness import Freshness, assess, stale_message
from catalog.quality_log import CheckResult, QualityLog
from servers._call_facts import note_freshness
from servers.results import FreshnessInfo, as_json, freshness_info

__all__ = ["ReadTrust", "TrustKeeper", "utc_now"]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ReadTrust:
    """Freshness blocks and warnings for one read; ``withheld`` maps stale products left out of it to
    the warning that says so."""

    freshness: list[FreshnessInfo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    withheld: dict[str, str] = field(default_factory=dict)

    @property
    def all_warnings(self) -> list[str]:
        """The warnings about products left out, then those about products read."""
        return list(dict.fromkeys([*self.withheld.values(), *self.warnings]))

    def apply(self, result: Any) -> Any:
        """Put the blocks and warnings on a result model with ``freshness`` and ``warnings`` fields."""
        result.freshness = [as_json(f) for f in self.freshness]
        result.warnings.extend(w for w in self.all_warnings if w not in result.warnings)
        return result


class TrustKeeper:
    """Cached freshness and check results per product, and the gate every read passes.

    ``measure(contract)`` runs the product's freshness statement and returns the raw value (it may
    raise :class:`~catalog.errors.DataProductsError`; the state is then ``unknown`` with the reason).
    """

    def __init__(
        self,
        quality: QualityLog,
        measure: Callable[[ProductContract], Awaitable[object]],
        *,
        cache_s: float,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.quality = quality
        self._measure = measure
        self._cache_s = cache_s
        self._clock = clock
        self._measured: dict[tuple[str, str], tuple[float, object, str | None]] = {}
        self._checks: dict[tuple[str, str], tuple[float, list[CheckResult]]] = {}
        self._measuring: dict[tuple[str, str], anyio.Lock] = {}

    def forget(self, product: str) -> None:
        """Drop what is cached about ``product`` (after its checks ran)."""
        for cache in (self._measured, self._checks):
            for key in [k for k in cache if k[0] == product]:
                del cache[key]

    async def freshness(self, contract: ProductContract) -> Freshness:
        """The product's freshness now, from an ``as_of`` measured at most ``cache_s`` seconds ago."""
        key = (contract.name, contract.version)
        cached = self._measured.get(key)
        if cached is not None and time.monotonic() - cached[0] < self._cache_s:  # the common case: no lock, no yield
            return assess(contract, cached[1], now=self._clock(), failure=cached[2])
        async with self._measuring.setdefault(key, anyio.Lock()):  # concurrent reads wait for one measurement
            cached = self._measured.get(key)
            if cached is None or time.monotonic() - cached[0] >= self._cache_s:
                failure: str | None = None
                value: object = None
                try:
                    value = await self._measure(contract)
                except DataProductsError as exc:
                    failure = f"could not measure as_of ({exc.code}): {exc.message}"
                cached = (time.monotonic(), value, failure)
                self._measured[key] = cached
        return assess(contract, cached[1], now=self._clock(), failure=cached[2])

    async def latest_checks(self, contract: ProductContract) -> list[CheckResult]:
        """The latest result of each check of this contract version (read at most once per ``cache_s``)."""
        key = (contract.name, contract.version)
        cached = self._checks.get(key)
        if cached is None or time.monotonic() - cached[0] >= self._cache_s:
            latest = await anyio.to_thread.run_sync(
                lambda: self.quality.latest(contract.name, version=contract.version)
            )
            cached = (time.monotonic(), latest)
            self._checks[key] = cached
        return cached[1]

    async def gate(self, contracts: Iterable[ProductContract], *, withhold: bool = False) -> ReadTrust:
        """The trust of one read touching ``contracts``.

        Raises:
            StaleDataError: a product is stale and its contract says ``on_stale: refuse`` (unless
                ``withhold``: then it is listed in ``withheld`` with a warning, and the caller leaves it out).
        """
        trust = ReadTrust()
        for contract in _unique(contracts):
            freshness = await self.freshness(contract)
            note_freshness(contract.name, freshness.state)
            trust.freshness.append(freshness_info(freshness))
            if freshness.state == "stale":
                message = stale_message(contract, freshness)
                if contract.sla.on_stale == "refuse":
                    if not withhold:
                        raise StaleDataError(
                            message + "; reads are refused until then (sla.on_stale: refuse)", product=contract.name
                        )
                    trust.withheld[contract.name] = message + "; its results were left out (sla.on_stale: refuse)"
                    continue
                trust.warnings.append(message)
            trust.warnings.extend(failing_check_warnings(contract, await self.latest_checks(contract)))
        return trust


def failing_check_warnings(contract: ProductContract, latest: Sequence[CheckResult]) -> list[str]:
    """One warning per failing ``error``-severity check of ``contract``."""
    return [
        f"{contract.name}: quality check {r.check_name} failing since {(r.since or r.checked_at):%Y-%m-%d %H:%M} UTC: "
        f"{r.message}"
        for r in latest
        if r.status == "fail"
    ]


def _unique(contracts: Iterable[ProductContract]) -> list[ProductContract]:
    seen: dict[str, ProductContract] = {}
    for contract in contracts:
        seen.setdefault(contract.name, contract)
    return list(seen.values())
