"""Run one statement through the product path and through the oracle; report every difference and leak.

For each :class:`Case` (principal + SQL text):

1. ``DataProductsService.run_sql`` runs it as the principal (the real path: guard, rewrite, connector,
   audit), under CPython's default recursion limit (hypothesis raises the limit while a test runs,
   which would hide a stack overflow that a server hits).
2. Every answer is checked for leaks, refusals included: a raw value the principal must not see
   (masked columns), a value only hidden rows hold (a *canary*, e.g. ``APAC`` for an EU-only
   principal), the hash salt or a 12-character piece of it, or a name only the rewritten SQL holds
   (``_source``, ``md5(``). Text the statement itself contains is not a leak.
3. Refusals (``sql_refused``, ``invalid_request``, ``access_denied``, ``not_found``) are counted, not
   compared. Statements tagged ``beyond-cap`` must be refused, quickly.
4. Anything else runs on the oracle as well. Rows are compared as multisets after normalising values
   (decimals, floats to 10 significant digits, times as ISO text); when the statement has an outer
   LIMIT/OFFSET or the product path truncated its answer, the oracle runs without LIMIT/OFFSET and
   the answer must be a sub-multiset of its rows of the expected size. Column counts must agree, and
   names where the statement names every output (aliases, columns, stars; case-insensitively).
   A statement that fails on one side only is a finding; failing on both sides is counted.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from anyio.from_thread import BlockingPortal

from catalog.errors import DataProductsError
from catalog.values import json_value
from servers.service import DataProductsService
from tests.fuzz.oracle import (
    GovernedTable,
    Oracle,
    OracleError,
    OracleResult,
    OracleTooLarge,
    Prepared,
    governed_tables,
)
from tests.fuzz.stores import FuzzStore

__all__ = ["Case", "Differential", "Finding", "Leaks"]

REFUSED = frozenset({"sql_refused", "invalid_request", "access_denied", "not_found"})
_FAILED = {"execution_failed": "failed", "timeout": "timeout"}
REFUSAL_SECONDS = 2.0
PRODUCTION_RECURSION_LIMIT = 1000  # CPython's default: what a server process runs with
MARKERS = ("_source", "md5(")
#: Generator tags, most telling first: a row difference is grouped under the first its statement has.
FEATURES = (
    *("hostile", "failing", "collision", "poison", "recursive", "deep", "setop", "window", "derived", "correlated"),
    *("subquery", "join", "aggregate", "star", "quoted-case", "unicode", "comment"),
)
SALT_PIECE = 12


@dataclass(frozen=True)
class Case:
    """One generated statement and who runs it; ``tags`` say what the generator put in it."""

    principal: str
    sql: str
    tags: frozenset[str] = frozenset()

    def __repr__(self) -> str:  # hypothesis prints examples; statements can be hundreds of kilobytes
        text = self.sql if len(self.sql) <= 200 else f"{self.sql[:200]}... ({len(self.sql)} characters)"
        return f"Case({self.principal!r}, {text!r})"


@dataclass(frozen=True)
class Finding:
    kind: str
    case: Case
    detail: str

    @property
    def signature(self) -> tuple[str, str]:
        """What groups findings of one cause: the kind, and the detail without values or (for row
        and column differences, whose details are values) what the statement does."""
        if self.kind in ("rows-differ", "columns-differ"):
            return self.kind, next((f"in a {t} statement" for t in FEATURES if t in self.case.tags), "")
        return self.kind, re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "…", self.detail)[:120]


@contextmanager
def production_recursion_limit() -> Iterator[None]:
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(PRODUCTION_RECURSION_LIMIT)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


class Leaks:
    """What one principal must never see: raw masked values, hidden-row canaries, the salt, markers."""

    def __init__(self, store: FuzzStore, principal: str, visible: dict[str, GovernedTable]) -> None:
        raw_seen = {
            (name, column) for name, table in visible.items() for column in table.columns if column not in table.masked
        }
        secrets: set[str] = set()
        for name, contract in store.contracts.items():
            raw = store.raw[name]
            for rule in (contract.get("policy") or {}).get("masking") or []:
                for column in rule["columns"]:
                    if (name, column) in raw_seen:
                        continue
                    index = raw.columns.index(column)
                    secrets |= {str(r[index]).lower() for r in raw.rows if r[index] is not None}
        self.secrets = frozenset(secrets)
        self.shapes = _shapes(self.secrets)
        self.salt = store.salt.lower()
        self.salt_pieces = {self.salt[i : i + SALT_PIECE] for i in range(len(self.salt) - SALT_PIECE + 1)}
        self.canaries = _canaries(store, visible)
        self.canary_pattern = (
            re.compile(r"\b(" + "|".join(re.escape(c) for c in sorted(self.canaries)) + r")\b")
            if self.canaries
            else None
        )

    def find(self, text: str, statement: str, cells: Iterable[Any] = ()) -> list[str]:
        """Leaks in ``text`` (and exact values in ``cells``) that ``statement`` does not itself hold."""
        lowered, said = text.lower(), statement.lower()
        found: list[str] = []
        if any(piece in lowered for piece in self.salt_pieces):
            found.append("salt -")
        found += [f"marker {m!r}" for m in MARKERS if m in lowered and m not in said]
        candidates = {str(c).lower() for c in cells if isinstance(c, str)}
        for shape in self.shapes:
            candidates |= {m.group(0).lower() for m in shape.finditer(text)}
        found += [f"raw-value {v!r}" for v in sorted(candidates & self.secrets) if v not in said]
        if self.canary_pattern is not None:
            hits = {m.group(1) for m in self.canary_pattern.finditer(text)}
            found += [f"hidden-row-value {v!r}" for v in sorted(hits) if v.lower() not in said]
        return found


def _shapes(secrets: frozenset[str]) -> list[re.Pattern[str]]:
    """Regular expressions that find secret-looking substrings (e-mail addresses, phones, names)."""
    shapes = []
    if any("@" in s for s in secrets):
        shapes.append(re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+"))  # anchored: linear on long text
    if any(re.fullmatch(r"\+[\d ]+", s) for s in secrets):
        shapes.append(re.compile(r"\+\d[\d ]*\d"))
    firsts = sorted({s.split()[0] for s in secrets if re.fullmatch(r"[^\W\d_]+ [^\W\d_]+", s)})
    if firsts:
        shapes.append(re.compile(r"\b(?:" + "|".join(map(re.escape, firsts)) + r") [^\W\d_]+", re.IGNORECASE))
    return shapes


def _canaries(store: FuzzStore, visible: dict[str, GovernedTable]) -> frozenset[str]:
    """Values of few-valued text columns that only rows hidden from the principal hold (``APAC`` for EU-only)."""
    seen = " ".join(str(v).lower() for t in visible.values() for row in t.rows for v in row if isinstance(v, str))
    hidden: set[str] = set()
    for name, raw in store.raw.items():
        table = visible.get(name)
        for index, column in enumerate(raw.columns):
            values = {r[index] for r in raw.rows if isinstance(r[index], str)}
            if not 1 < len(values) <= 20 or (table is not None and column in table.masked):
                continue
            hidden |= values - (set() if table is None else {row[index] for row in table.rows})
    return frozenset(v for v in hidden if len(v) >= 4 and v.lower() not in seen)


@dataclass
class Outcome:
    kind: str  # ok, refused, failed, timeout, error
    code: str = ""
    message: str = ""
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    truncated: bool = False
    seconds: float = 0.0


class Differential:
    """Runs cases against one store: the service through ``portal``, the oracles in this thread."""

    def __init__(
        self, store: FuzzStore, service: DataProductsService, portal: BlockingPortal, oracles: dict[str, Oracle]
    ) -> None:
        self.store = store
        self.service = service
        self.portal = portal
        self.oracles = oracles
        self.principals = {name: store.settings.principal(name) for name in oracles}
        self.leaks = {name: Leaks(store, name, governed_tables(store, name)) for name in oracles}
        self.max_rows = store.settings.limits.max_rows
        self.stats: Counter[str] = Counter()
        self.slowest: list[tuple[float, str]] = []  # (seconds, statement), the few slowest checks

    def run_product(self, case: Case) -> Outcome:
        with production_recursion_limit():
            return self._outcome(self.start_product(case))

    def start_product(self, case: Case) -> tuple[Future[Any], float]:
        return self.portal.start_task_soon(self.service.run_sql, self.principals[case.principal], case.sql), (
            time.perf_counter()
        )

    def _outcome(self, started: tuple[Future[Any], float]) -> Outcome:
        future, at = started
        try:
            result = future.result()
        except DataProductsError as exc:
            kind = "refused" if exc.code in REFUSED else _FAILED.get(exc.code, "error")
            outcome = Outcome(kind, exc.code, exc.message)
        except Exception as exc:  # the finding this fuzzer exists for: a crash instead of an answer
            outcome = Outcome("error", type(exc).__name__, f"{type(exc).__name__}: {exc}"[:500])
        else:
            outcome = Outcome("ok", columns=result.columns, rows=result.rows, truncated=result.truncated)
        outcome.seconds = time.perf_counter() - at
        return outcome

    def check(self, case: Case) -> list[Finding]:
        """Every finding of ``case``; counts what happened in :attr:`stats`.

        The oracle runs while the product path does (different databases; both release the GIL).
        """
        began = time.perf_counter()
        findings = self._check(case)
        self.slowest.append((time.perf_counter() - began, case.sql))
        self.slowest.sort(reverse=True)
        del self.slowest[5:]
        return findings

    def _check(self, case: Case) -> list[Finding]:
        self.stats["statements"] += 1
        for tag in case.tags:
            self.stats[f"tag:{tag}"] += 1
        oracle = self.oracles[case.principal]
        first: OracleResult | OracleError | None = None
        prepared = None
        if "beyond-cap" not in case.tags:
            try:
                prepared = oracle.prepare(case.sql)
            except OracleError as exc:
                first = exc
        # Hostile text reaches the oracle only once the product path accepted it (pg_sleep, read_csv ...).
        meanwhile = prepared is not None and "hostile" not in case.tags
        with production_recursion_limit():  # from the start of the product call to its answer
            started = self.start_product(case)
            if meanwhile:  # the oracle runs meanwhile, with the LIMIT the product path applies
                first = self._first(oracle, prepared)
            outcome = self._outcome(started)
        if prepared is not None and not meanwhile and outcome.kind in ("ok", "failed"):
            first = self._first(oracle, prepared)
        findings = self._leaks(case, outcome)
        self.stats[f"product:{outcome.kind}"] += 1
        if outcome.kind == "refused":
            self.stats[f"refused:{outcome.code}"] += 1
            for tag in case.tags:
                self.stats[f"tag:{tag}:refused"] += 1
        if "beyond-cap" in case.tags:
            if outcome.code != "sql_refused":
                findings.append(Finding("beyond-cap-not-refused", case, f"{outcome.kind}: {outcome.message[:200]}"))
            elif outcome.seconds > REFUSAL_SECONDS:
                findings.append(Finding("slow-refusal", case, f"refused after {outcome.seconds:.1f}s"))
            return findings
        if outcome.kind == "error":  # a crash, or an error that misnames what went wrong (store_unavailable)
            kind = "unexpected-error" if outcome.code.islower() else "product-crash"
            findings.append(Finding(kind, case, f"{outcome.code}: {outcome.message}"))
        elif outcome.kind == "timeout":
            self.stats["inconclusive:timeout"] += 1
        elif outcome.kind in ("ok", "failed") and first is not None:
            findings += self._compare(case, outcome, prepared, first)
        return findings

    def _first(self, oracle: Oracle, prepared: Prepared | None) -> OracleResult | OracleError:
        assert prepared is not None
        try:
            return oracle.execute(prepared.capped(self.max_rows + 1))
        except OracleError as exc:
            return exc

    def _leaks(self, case: Case, outcome: Outcome) -> list[Finding]:
        leaks = self.leaks[case.principal]
        cells = {v if isinstance(v, str) else repr(v) for row in outcome.rows for v in row if type(v) not in _NUMBERS}
        where = {
            "column names": leaks.find(" ".join(outcome.columns), case.sql, outcome.columns),
            "rows": leaks.find("\n".join(cells), case.sql, cells),
            "error": leaks.find(outcome.message, case.sql),
        }
        findings = []
        for place, found in where.items():
            by_what: dict[str, list[str]] = {}
            for item in found:
                what, _, value = item.partition(" ")
                by_what.setdefault(what, []).append(value)
            for what, values in by_what.items():
                more = f" (+{len(values) - 1} more)" if len(values) > 1 else ""
                findings.append(Finding(f"leak:{what}", case, f"{values[0]}{more} in {place}"))
        return findings

    def _compare(
        self, case: Case, outcome: Outcome, prepared: Prepared | None, first: OracleResult | OracleError
    ) -> list[Finding]:
        if isinstance(first, OracleError):
            if outcome.kind == "failed":
                self.stats["both-failed"] += 1
                return []
            return [Finding("oracle-only-failed", case, str(first)[:300])]
        assert prepared is not None
        if outcome.kind == "failed":
            return [Finding("product-only-failed", case, outcome.message[:300])]
        self.stats["compared"] += 1
        return [Finding(kind, case, detail) for kind, detail in self._differences(case, outcome, prepared, first)]

    def _differences(
        self, case: Case, outcome: Outcome, prepared: Prepared, first: OracleResult
    ) -> Iterator[tuple[str, str]]:
        if len(outcome.columns) != len(first.columns):
            yield "columns-differ", f"product {outcome.columns} vs oracle {first.columns}"
            return
        if prepared.named and [c.lower() for c in outcome.columns] != [c.lower() for c in first.columns]:
            yield "columns-differ", f"product {outcome.columns} vs oracle {first.columns}"
        product = [normal_row(row) for row in outcome.rows]
        answer = [normal_row(row, driver=True) for row in first.rows]
        if not prepared.unlimited and len(answer) <= self.max_rows and not outcome.truncated:
            if not same_rows(product, answer):  # the whole answer: the same rows
                yield "rows-differ", _row_diff(product, answer)
            return
        # A LIMIT's worth of rows (the statement's or the row cap): which rows it keeps depends on the plan.
        if len(product) == min(len(answer), self.max_rows) and sub_rows(product, answer):
            return
        self.stats["compared:subset"] += 1
        try:
            every = [normal_row(row, driver=True) for row in self.oracles[case.principal].execute(prepared).rows]
        except OracleTooLarge:
            self.stats["inconclusive:large"] += 1
            return
        except OracleError:  # rows past the LIMIT fail (LIMIT 0 over a failing expression)
            self.stats["inconclusive:past-limit"] += 1
            return
        wanted = max(0, len(every) - prepared.offset)
        wanted = min(wanted, prepared.limit if prepared.limit is not None else wanted, self.max_rows)
        if len(product) != wanted and not (outcome.truncated and len(product) < wanted):
            yield "rows-differ", f"{len(product)} rows, expected {wanted} of the oracle's {len(every)}"
        if not sub_rows(product, every):
            yield "rows-differ", "rows not in the oracle's answer: " + _row_diff(product, every, extra_only=True)


_PLAIN = (int, str, bool, type(None))
_PLAIN_TYPES = frozenset(_PLAIN)
_NUMBERS = (int, float, bool, type(None))


def normal_row(row: Sequence[Any], *, driver: bool = False) -> tuple[Any, ...]:
    """A row made comparable; ``driver`` values are converted to JSON first, as the service does."""
    if _PLAIN_TYPES.issuperset(map(type, row)):
        return tuple(row)
    return tuple(v if type(v) in _PLAIN else normal(json_value(v) if driver else v) for v in row)


def normal(value: Any) -> Any:
    """A JSON value made comparable: floats to 10 significant digits, lists as tuples."""
    if isinstance(value, float):
        return float(f"{value:.10g}") if math.isfinite(value) else repr(value)
    if isinstance(value, list):
        return tuple(normal(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, normal(v)) for k, v in value.items()))
    return value


def _key(row: tuple[Any, ...]) -> tuple[tuple[int, Any], ...]:
    return tuple((0, "") if v is None else (1, v) if isinstance(v, int | float) else (2, str(v)) for v in row)


def _close(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return len(a) == len(b) and all(
        x == y
        or (
            isinstance(x, int | float) and isinstance(y, int | float) and math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)
        )
        for x, y in zip(a, b, strict=True)
    )


def same_rows(product: list[tuple[Any, ...]], oracle: list[tuple[Any, ...]]) -> bool:
    if Counter(product) == Counter(oracle):
        return True
    if len(product) != len(oracle):
        return False
    return all(_close(a, b) for a, b in zip(sorted(product, key=_key), sorted(oracle, key=_key), strict=True))


def sub_rows(product: list[tuple[Any, ...]], oracle: list[tuple[Any, ...]]) -> bool:
    missing = Counter(product) - Counter(oracle)
    if not missing:
        return True
    spare = list((Counter(oracle) - Counter(product)).elements())
    for row in missing.elements():  # float noise: match each leftover row to a close spare one
        match = next((i for i, other in enumerate(spare) if _close(row, other)), None)
        if match is None:
            return False
        spare.pop(match)
    return True


def _row_diff(product: list[tuple[Any, ...]], oracle: list[tuple[Any, ...]], *, extra_only: bool = False) -> str:
    extra = list((Counter(product) - Counter(oracle)).elements())[:3]
    text = f"{len(product)} rows vs {len(oracle)}; product only: {extra}"
    if not extra_only:
        text += f"; oracle only: {list((Counter(oracle) - Counter(product)).elements())[:3]}"
    return text[:600]


class Tally:
    """Findings grouped by cause (:attr:`Finding.signature`), with the shortest reproductions kept."""

    def __init__(self, keep: int = 3) -> None:
        self.keep = keep
        self.groups: dict[tuple[str, str], list[Finding]] = {}
        self.counts: Counter[tuple[str, str]] = Counter()

    def add(self, findings: list[Finding]) -> None:
        for finding in findings:
            key = finding.signature
            self.counts[key] += 1
            kept = self.groups.setdefault(key, [])
            if all(f.case.sql != finding.case.sql for f in kept):
                kept.append(finding)
                kept.sort(key=lambda f: len(f.case.sql))
                del kept[self.keep :]

    def __len__(self) -> int:
        return sum(self.counts.values())

    def report(self, width: int = 600) -> str:
        lines = []
        for key, count in self.counts.most_common():
            lines.append(f"{count} x {key[0]}: {key[1]}")
            for finding in self.groups[key]:
                lines.append(f"    [{finding.case.principal}] {finding.case.sql[:width]!r}")
                lines.append(f"      -> {finding.detail[:width]}")
        return "\n".join(lines)


def summary(stats: Counter[str], seconds: float, store: str) -> str:
    """Counts of one run: statements, how they ended, and the tags of what was generated."""
    total = stats["statements"]
    rate = total / seconds if seconds else 0.0
    head = (
        f"{store}: {total} distinct statements in {seconds:.1f}s ({rate:.1f}/s; {stats['repeats']} repeats "
        f"skipped); compared {stats['compared']} ({stats['compared:subset']} against every row of the oracle), "
        f"refused {stats['product:refused']}, failed on both sides {stats['both-failed']}, inconclusive "
        f"{sum(v for k, v in stats.items() if k.startswith('inconclusive:'))}"
    )
    refusals = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in sorted(stats.items()) if k.startswith("refused:"))
    tags = ", ".join(
        f"{k[4:]} {v} ({stats.get(k + ':refused', 0)} refused)"
        for k, v in sorted(stats.items())
        if k.startswith("tag:") and not k.endswith(":refused")
    )
    return f"{head}\n  refusals: {refusals}\n  generated: {tags}"
