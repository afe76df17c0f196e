"""Quality checks as statements: each ``quality:`` entry of a contract becomes one read-only SELECT.

:func:`plan_checks` turns every check into generic SQL over the *product name* (``FROM shop.orders``),
built with sqlglot's AST builders — column names are quoted identifiers and accepted values, minimums
and maximums are literals, never concatenated text — so that the runner guards and rewrites it exactly
like ``run_sql`` (:func:`catalog.sqlguard.parse_product_sql`, then the connection's compiler over the
product's source). Each statement returns one row: ``rows_scanned`` (how many rows the check read,
when it can say) and ``observed``:

================  ==============================================================  ============
check             observed                                                         fails when
================  ==============================================================  ============
not_null          rows where a listed column is NULL                               observed > 0
unique            rows sharing their (column, …) value with another row            observed > 0
accepted_values   non-NULL rows whose value is not in ``values``                   observed > 0
range             non-NULL rows below ``min`` or above ``max``                     observed > 0
row_count         rows                                                             outside min/max
freshness         ``max(column)``                                                  older than max_age
sql               rows the check's own SELECT returns (its failing rows)           observed > 0
================  ==============================================================  ============

:func:`judge` reads that row into a :class:`Verdict`: ``pass``, or ``fail`` / ``warn`` by the check's
``severity``. A check that could not run is ``error`` (the runner says why). Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlglot
from sqlglot import exp

from catalog.contract import ProductContract, QualityCheck, parse_duration
from catalog.errors import InvalidRequestError, SQLRefusedError
from catalog.sqlguard import parse_product_sql
from catalog.timestamps import format_age, to_utc

__all__ = ["CheckPlan", "CheckStatus", "Verdict", "check_name", "judge", "plan_check", "plan_checks", "sql_problems"]

CheckStatus = Literal["pass", "warn", "fail", "error"]


@dataclass(frozen=True)
class CheckPlan:
    """One check of one product, ready to run: ``sql`` is generic SQL over product names."""

    product: str
    index: int
    name: str
    check: QualityCheck
    sql: str

    @property
    def threshold(self) -> str:
        return threshold_text(self.check)


@dataclass(frozen=True)
class Verdict:
    """What one run of a check found: its status, the value it observed (as text) and why."""

    status: CheckStatus
    observed: str | None
    message: str


def check_name(check: QualityCheck, index: int) -> str:
    """The check's ``name``, else ``<check>_<columns>`` (``unique_order_id_line_no``), ``row_count``, or
    ``sql_<index>``."""
    if check.name:
        return check.name
    if check.targets:
        return "_".join([check.check, *check.targets])
    return "row_count" if check.check == "row_count" else f"{check.check}_{index}"


def plan_checks(contract: ProductContract) -> list[CheckPlan]:
    """Every check of ``contract``, in contract order.

    Raises:
        InvalidRequestError: an accepted value is not a string, number or boolean.
    """
    return [plan_check(contract, i) for i in range(len(contract.quality))]


def plan_check(contract: ProductContract, index: int) -> CheckPlan:
    """Check number ``index`` of ``contract`` as a statement (see the module docstring for its shape).

    Raises:
        InvalidRequestError: as :func:`plan_checks`.
    """
    check = contract.quality[index]
    table = exp.to_table(contract.name)
    statement: exp.Select
    if check.check == "sql":
        assert check.sql is not None  # the contract validates it
        failing = sqlglot.parse_one(check.sql)
        if not isinstance(failing, exp.Query):  # pragma: no cover - the contract validates it
            raise InvalidRequestError(f"{contract.name}: quality[{index}].sql must be one SELECT")
        statement = exp.select(_count().as_("observed")).from_(failing.subquery("failing_rows"))
    elif check.check == "unique":
        keys = exp.select(_count().as_("n")).from_(table).group_by(*[_column(c) for c in check.targets])
        n = exp.column("n")
        duplicated = exp.Case().when(exp.GT(this=n, expression=exp.Literal.number(1)), n).else_(exp.Literal.number(0))
        statement = exp.select(exp.Sum(this=n).as_("rows_scanned"), exp.Sum(this=duplicated).as_("observed")).from_(
            keys.subquery("keys")
        )
    elif check.check == "row_count":
        statement = exp.select(_count().as_("rows_scanned"), _count().as_("observed")).from_(table)
    elif check.check == "freshness":
        (column,) = check.targets
        statement = exp.select(_count().as_("rows_scanned"), exp.Max(this=_column(column)).as_("observed")).from_(table)
    else:
        statement = exp.select(_count().as_("rows_scanned"), _count_when(_failing(contract, index)).as_("observed"))
        statement = statement.from_(table)
    return CheckPlan(contract.name, index, check_name(check, index), check, statement.sql())


def sql_problems(contract: ProductContract) -> list[tuple[str, str]]:
    """The contract's own SQL (``sql`` checks, ``sla.loaded_at``) that the SQL guard would refuse, as
    ``(field path, message)``: caught when the contract is loaded instead of when the check first runs."""
    texts = [(f"quality[{i}].sql", q.sql) for i, q in enumerate(contract.quality) if q.sql]
    if contract.sla.loaded_at:
        texts.append(("sla.loaded_at", contract.sla.loaded_at))
    problems = []
    for path, text in texts:
        try:
            parse_product_sql(text)
        except SQLRefusedError as exc:
            problems.append((path, exc.message))
    return problems


def judge(plan: CheckPlan, observed: Any, *, now: datetime) -> Verdict:
    """The verdict on what ``plan``'s statement returned as ``observed``; ``now`` is an aware UTC time."""
    check = plan.check
    failed_status: CheckStatus = "fail" if check.severity == "error" else "warn"
    if check.check == "freshness":
        assert check.max_age is not None
        try:
            as_of = to_utc(observed)
        except ValueError as exc:
            return Verdict(failed_status, None, f"cannot tell the age of {check.column}: {exc}")
        age = (now - as_of).total_seconds()
        text = f"latest {check.column} is {as_of:%Y-%m-%d %H:%M:%S} UTC, {format_age(age)} old"
        if age > parse_duration(check.max_age).total_seconds():
            return Verdict(failed_status, as_of.isoformat(), f"{text}; older than max_age {check.max_age}")
        return Verdict("pass", as_of.isoformat(), text)
    count = int(observed or 0)  # sum() over no rows is NULL
    if check.check == "row_count":
        low = check.min is not None and count < check.min
        high = check.max is not None and count > check.max
        if low or high:
            return Verdict(failed_status, str(count), f"{count} rows; expected {plan.threshold}")
        return Verdict("pass", str(count), f"{count} rows")
    if count:
        return Verdict(failed_status, str(count), f"{count} failing rows ({_what_fails(check)})")
    return Verdict("pass", "0", "no failing rows")


def threshold_text(check: QualityCheck) -> str:
    """The check's threshold as the results table shows it."""
    bounds = [
        f">= {_number(check.min)}" if check.min is not None else "",
        f"<= {_number(check.max)}" if check.max is not None else "",
    ]
    if check.check == "row_count":
        return "rows " + " and ".join(b for b in bounds if b)
    if check.check == "freshness":
        return f"age <= {check.max_age}"
    if check.check == "range":
        return f"{check.column} " + " and ".join(b for b in bounds if b)
    if check.check == "accepted_values":
        return f"{check.column} in {check.values}"
    return "0 failing rows"


def _what_fails(check: QualityCheck) -> str:
    columns = ", ".join(check.targets)
    return {
        "not_null": f"NULL in {columns}",
        "unique": f"duplicate values of ({columns})",
        "accepted_values": f"{columns} not in {check.values}",
        "range": f"{columns} outside {threshold_text(check)}",
        "sql": "rows returned by the check's SELECT",
    }.get(check.check, check.check)


def _failing(contract: ProductContract, index: int) -> exp.Expr:
    """The condition a failing row meets, for the checks that test row by row."""
    check = contract.quality[index]
    if check.check == "not_null":
        return exp.or_(*[exp.Is(this=_column(c), expression=exp.Null()) for c in check.targets])
    (name,) = check.targets
    column = _column(name)
    present = exp.Not(this=exp.Is(this=column, expression=exp.Null()))
    if check.check == "accepted_values":
        values = [_literal(v, f"{contract.name}: quality[{index}].values") for v in check.values or []]
        return exp.and_(present, exp.Not(this=exp.In(this=column.copy(), expressions=values)))
    outside: list[exp.Expr] = []
    if check.min is not None:
        outside.append(exp.LT(this=column.copy(), expression=_literal(_number(check.min), "min")))
    if check.max is not None:
        outside.append(exp.GT(this=column.copy(), expression=_literal(_number(check.max), "max")))
    return exp.and_(present, exp.or_(*outside))


def _count() -> exp.Expr:
    return exp.Count(this=exp.Star())


def _count_when(condition: exp.Expr) -> exp.Expr:
    case = exp.Case().when(condition, exp.Literal.number(1)).else_(exp.Literal.number(0))
    return exp.Sum(this=case)


def _column(name: str) -> exp.Column:
    return exp.column(exp.to_identifier(name, quoted=True))


def _number(value: float | None) -> float | int | None:
    return int(value) if value is not None and float(value).is_integer() else value


def _literal(value: object, where: str) -> exp.Expr:
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int | float | str):
        return exp.convert(value)
    raise InvalidRequestError(f"{where}: {value!r} is not a string, number or boolean; list plain values")
