"""The product contract: one YAML document per data product, validated by these pydantic models.

The models check everything that can be checked without a store (names, types, references between
fields, SQL syntax of row filters). Checks against the live source (do the declared columns exist?)
live in :mod:`catalog.validate`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

import sqlglot
from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator
from sqlglot import exp
from sqlglot.errors import ParseError

from catalog._metric_rules import metric_problems, relationship_problems
from catalog._model import StrictModel
from catalog.replica import Replicas, replica_problems

__all__ = [
    "CHECK_KINDS",
    "COLUMN_TYPES",
    "CheckKind",
    "Column",
    "ColumnType",
    "Dimension",
    "Lineage",
    "MaskMethod",
    "AggregateOnlyRule",
    "MaskingRule",
    "Metric",
    "Owner",
    "PIIKind",
    "Policy",
    "ProductContract",
    "QualityCheck",
    "Relationship",
    "Retrieval",
    "RowFilter",
    "SLA",
    "Source",
    "TimeGrain",
    "parse_duration",
]

ColumnType = Literal["string", "integer", "float", "decimal", "boolean", "date", "timestamp", "time", "json", "bytes"]
COLUMN_TYPES: tuple[str, ...] = ColumnType.__args__  # type: ignore[attr-defined]

PIIKind = Literal[
    "email",
    "name",
    "phone",
    "address",
    "postal_code",
    "national_id",
    "birth_date",
    "ip_address",
    "financial",
    "health",
    "free_text",
    "other",
]
MaskMethod = Literal["hash", "redact", "partial", "null"]

PRODUCT_NAME = r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$"
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
SEMVER = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$"
SUBJECT = r"^(\*|role:[A-Za-z0-9_.\-]+|principal:[A-Za-z0-9_.@\-]+)$"
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

Identifier = Annotated[str, Field(pattern=IDENTIFIER, max_length=128)]
Subject = Annotated[str, Field(pattern=SUBJECT, description="'*', 'role:<name>' or 'principal:<name>'")]


def parse_duration(text: str) -> timedelta:
    """Parse ``30s``, ``15m``, ``24h``, ``1d``, ``2w``.

    Raises:
        ValueError: the text is not a number followed by one of s, m, h, d, w.
    """
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"invalid duration {text!r}; use a number and a unit: 30s, 15m, 24h, 1d, 2w")
    return timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})


def _checked_duration(text: str) -> str:
    parse_duration(text)
    return text


#: A duration as a contract writes it (``24h``), kept as written once :func:`parse_duration` accepts it.
Duration = Annotated[str, AfterValidator(_checked_duration)]


class Owner(StrictModel):
    team: str = Field(min_length=1)
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$")


class Source(StrictModel):
    """Where the product's rows live: a table (optionally in a schema) or a query, on a named connection."""

    connection: Identifier
    table: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
    query: str | None = None

    @model_validator(mode="after")
    def _table_or_query(self) -> Source:
        if (self.table is None) == (self.query is None):
            raise ValueError("set exactly one of 'table' or 'query'")
        if self.query is not None:
            try:
                parsed = sqlglot.parse(self.query)
            except ParseError as exc:
                raise ValueError(f"source.query is not valid SQL: {exc}") from exc
            if len(parsed) != 1 or not isinstance(parsed[0], exp.Query):
                raise ValueError("source.query must be exactly one SELECT statement")
        return self


class Column(StrictModel):
    name: Identifier
    type: ColumnType
    description: str = Field(min_length=1)
    unit: str | None = None
    pii: PIIKind | None = None
    nullable: bool = True


TimeGrain = Literal["hour", "day", "week", "month", "quarter", "year"]


class Metric(StrictModel):
    """An aggregate over the product's columns (``sum(amount)``), or a derived metric over its other metrics
    by name (``revenue / order_count``); ``filter`` narrows an aggregate to the rows it holds for."""

    name: Identifier
    expr: str = Field(min_length=1, description="aggregate SQL expression over the product's columns")
    description: str = Field(min_length=1)
    unit: str | None = None
    filter: str | None = Field(
        default=None, min_length=1, description="SQL condition over the product's columns, e.g. status = 'delivered'"
    )


class Dimension(StrictModel):
    """A column metrics can be grouped by: ``categorical``, or ``time`` with the grains it may be bucketed to.

    ``type`` may be left out: a dimension with ``time_grains`` is a time dimension.
    """

    name: Identifier
    column: Identifier
    type: Literal["categorical", "time"] | None = None
    time_grains: list[TimeGrain] = Field(default_factory=list)
    description: str | None = None

    @property
    def kind(self) -> Literal["categorical", "time"]:
        """The dimension's type as declared, else as its ``time_grains`` imply."""
        return self.type or ("time" if self.time_grains else "categorical")

    @model_validator(mode="after")
    def _grains_fit_type(self) -> Dimension:
        if self.type == "time" and not self.time_grains:
            raise ValueError("a time dimension needs time_grains, e.g. [day, week, month]")
        if self.type == "categorical" and self.time_grains:
            raise ValueError("a categorical dimension has no time_grains; declare type: time")
        return self


class Relationship(StrictModel):
    """Rows of this product point at one row of ``product`` (on the same connection) through ``on``:
    this product's column -> the related product's column. Metrics of this product can then be grouped
    by the related product's dimensions."""

    product: str = Field(pattern=PRODUCT_NAME, description="the related product, e.g. shop.customers")
    on: dict[Identifier, Identifier] = Field(min_length=1, description="own column -> related product's column")
    kind: Literal["many_to_one", "one_to_one"] = "many_to_one"

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        """YAML 1.1 reads an unquoted ``on:`` key as the boolean true: take it as ``on``."""
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if key is True else key): value for key, value in data.items()}
        return data


CheckKind = Literal["not_null", "unique", "accepted_values", "range", "freshness", "row_count", "sql"]
CHECK_KINDS: tuple[str, ...] = CheckKind.__args__  # type: ignore[attr-defined]


def _one_select(text: str, what: str) -> str:
    """``text`` when it parses as exactly one SELECT (generic SQL); the guard checks the rest when it runs."""
    try:
        parsed = sqlglot.parse(text)
    except ParseError as exc:
        detail = exc.errors[0]["description"] if exc.errors else str(exc)
        raise ValueError(f"{what} is not valid SQL: {detail}") from exc
    if len(parsed) != 1 or not isinstance(parsed[0], exp.Query):
        raise ValueError(f"{what} must be exactly one SELECT over product names, e.g. SELECT * FROM shop.orders")
    return text


class QualityCheck(StrictModel):
    """One quality check; :mod:`catalog.checks` turns it into a read-only statement over the product.

    ``sql`` checks hold a SELECT over product names returning the *failing* rows. ``severity: error``
    (the default) makes a failing check a warning on every read of the product; ``warn`` only records it.
    """

    check: CheckKind
    name: Identifier | None = Field(default=None, description="a name for results; default <check>_<column>")
    column: Identifier | None = None
    columns: list[Identifier] | None = None
    values: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    max_age: Duration | None = None
    sql: str | None = Field(default=None, description="sql checks: a SELECT over product names returning failing rows")
    severity: Literal["warn", "error"] = "error"

    @property
    def targets(self) -> list[str]:
        """The columns the check reads (``column`` then ``columns``)."""
        return [c for c in [self.column, *(self.columns or [])] if c]

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> QualityCheck:
        kind, targets = self.check, self.targets
        if kind in ("not_null", "unique", "accepted_values", "range", "freshness") and not targets:
            raise ValueError(f"a {kind} check needs 'column' (or 'columns'), e.g. {{check: {kind}, column: order_id}}")
        if kind in ("accepted_values", "range", "freshness") and len(targets) != 1:
            raise ValueError(f"a {kind} check reads one column: set 'column', not several")
        if kind == "accepted_values" and not self.values:
            raise ValueError("an accepted_values check needs a non-empty 'values' list, e.g. values: [EU, US]")
        if kind in ("range", "row_count") and self.min is None and self.max is None:
            raise ValueError(f"a {kind} check needs 'min' or 'max' (or both), e.g. {{check: {kind}, min: 0}}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if kind == "freshness" and self.max_age is None:
            raise ValueError("a freshness check needs 'max_age', e.g. max_age: 24h")
        if kind == "sql":
            if not self.sql:
                raise ValueError(
                    "a sql check needs 'sql': a SELECT over product names returning the failing rows, "
                    "e.g. SELECT * FROM shop.orders WHERE amount < 0"
                )
            _one_select(self.sql, "the sql check's 'sql'")
        elif self.sql is not None:
            raise ValueError(f"'sql' belongs to sql checks only; this is a {kind} check")
        return self


class RowFilter(StrictModel):
    """Rows matching ``where`` are the only rows visible to subjects matching ``when`` (ANDed together)."""

    when: Subject
    where: str = Field(min_length=1, description="SQL boolean expression over the product's columns")

    @field_validator("where")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            parsed = sqlglot.parse_one(value, into=exp.Condition)
        except ParseError as exc:
            detail = exc.errors[0]["description"] if exc.errors else str(exc)
            raise ValueError(f"row filter is not a valid SQL condition: {detail}") from exc
        if parsed.find(exp.Query, exp.Subquery):
            raise ValueError("row filters may not contain subqueries")
        return value


class _Exempting:
    """The ``exempt`` subjects of a policy rule with an ``unless`` field (one subject or a list)."""

    @property
    def exempt(self) -> list[str]:
        unless: str | list[str] | None = getattr(self, "unless", None)
        if unless is None:
            return []
        return [unless] if isinstance(unless, str) else list(unless)


class MaskingRule(_Exempting, StrictModel):
    columns: list[Identifier] = Field(min_length=1)
    method: MaskMethod = "hash"
    unless: Subject | list[Subject] | None = Field(default=None, description="subjects who see the raw value")


class AggregateOnlyRule(_Exempting, StrictModel):
    """Columns whose raw values never leave the store: only aggregates over groups of at least
    ``min_group_size`` rows do (smaller groups are suppressed)."""

    columns: list[Identifier] = Field(min_length=1)
    min_group_size: int = Field(default=5, ge=2, description="smallest group whose aggregates are returned")
    unless: Subject | list[Subject] | None = Field(default=None, description="subjects who see the raw value")


class Policy(StrictModel):
    access: list[Subject] = Field(default_factory=list, description="who may read the product at all")
    row_filters: list[RowFilter] = Field(default_factory=list)
    masking: list[MaskingRule] = Field(default_factory=list)
    aggregate_only: list[AggregateOnlyRule] = Field(default_factory=list)

    @field_validator("aggregate_only", mode="before")
    @classmethod
    def _one_rule(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value


class Chunking(StrictModel):
    size: int = Field(default=512, ge=32, le=8192, description="characters per chunk")
    overlap: int = Field(default=64, ge=0, description="characters shared by neighbouring chunks")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Chunking:
        if self.overlap >= self.size:
            raise ValueError(f"chunk overlap ({self.overlap}) must be smaller than the chunk size ({self.size})")
        return self


class Retrieval(StrictModel):
    text_fields: list[Identifier] = Field(min_length=1)
    chunk: Chunking = Field(default_factory=Chunking)
    context_fields: list[Identifier] | None = Field(
        default=None,
        description="fields whose text heads every chunk of the other text fields, never a chunk of its own "
        "(default: a text field named title; [] for none)",
    )
    max_lag: Duration | None = Field(
        default=None,
        description="the oldest search index results come from without a warning, e.g. 1h "
        "(default: the analytical replica's max_lag, if any)",
    )

    def context(self) -> list[str]:
        """The context fields: as named, else a text field named ``title`` when other text fields exist."""
        if self.context_fields is not None:
            return list(dict.fromkeys(self.context_fields))
        return ["title"] if "title" in self.text_fields and len(set(self.text_fields)) > 1 else []


class Lineage(StrictModel):
    upstream: list[str] = Field(default_factory=list)
    downstream: list[str] = Field(default_factory=list)


class SLA(StrictModel):
    """How fresh the product promises to be, and what a read does when it is not.

    The product's ``as_of`` is ``max(freshness_column)`` (default: the column of its ``freshness``
    check) or the one timestamp the ``loaded_at`` SELECT returns.
    """

    freshness: Duration | None = None
    on_stale: Literal["warn", "refuse"] = "warn"
    freshness_column: Identifier | None = Field(default=None, description="as_of = max(this column)")
    loaded_at: str | None = Field(default=None, description="a SELECT over product names returning one timestamp")

    @model_validator(mode="after")
    def _one_measure(self) -> SLA:
        if self.freshness_column is not None and self.loaded_at is not None:
            raise ValueError("set one of 'freshness_column' or 'loaded_at', not both")
        if self.loaded_at is not None:
            _one_select(self.loaded_at, "sla.loaded_at")
        return self


class ProductContract(StrictModel):
    """One governed data product."""

    name: str = Field(pattern=PRODUCT_NAME, description="<domain>.<product>, lower case")
    version: str = Field(pattern=SEMVER, description="semantic version MAJOR.MINOR.PATCH")
    title: str = Field(min_length=1)
    description: str = Field(min_length=1)
    owner: Owner
    tags: list[str] = Field(default_factory=list)
    source: Source
    primary_key: list[Identifier] = Field(default_factory=list)
    columns: list[Column] = Field(min_length=1)
    metrics: list[Metric] = Field(default_factory=list)
    dimensions: list[Dimension] = Field(default_factory=list)
    relationships: list[Relationship] = Field(default_factory=list)
    quality: list[QualityCheck] = Field(default_factory=list)
    policy: Policy = Field(default_factory=Policy)
    retrieval: Retrieval | None = None
    lineage: Lineage = Field(default_factory=Lineage)
    sla: SLA = Field(default_factory=SLA)
    replicas: Replicas | None = None
    deprecated: bool = False
    deprecation_note: str | None = None

    @property
    def domain(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    def metric(self, name: str) -> Metric | None:
        return next((m for m in self.metrics if m.name == name), None)

    def dimension(self, name: str) -> Dimension | None:
        return next((d for d in self.dimensions if d.name == name), None)

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> ProductContract:
        if info.context and info.context.get("defer_references"):
            return self
        problems = self.reference_problems()
        if problems:
            raise ValueError("; ".join(f"{path}: {message}" for path, message in problems))
        return self

    def reference_problems(self) -> list[tuple[str, str]]:
        """Cross-field problems as ``(field path, message)``: references to undeclared columns and the like.

        Validation runs these unless the context says ``defer_references`` (the loader does, to report
        each problem at its own path and line).
        """
        names = self.column_names
        known = set(names)
        problems: list[tuple[str, str]] = []
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(("columns", f"duplicate column names {dupes}"))

        def check(path: str, refs: list[str]) -> None:
            problems.extend(
                (path, f"unknown column {ref!r}; declared columns are {names}") for ref in refs if ref not in known
            )

        check("primary_key", self.primary_key)
        for i, rule in enumerate(self.policy.masking):
            check(f"policy.masking[{i}].columns", rule.columns)
        for i, agg in enumerate(self.policy.aggregate_only):
            check(f"policy.aggregate_only[{i}].columns", agg.columns)
            problems += _masked_and_aggregate_only(self, i, agg)
        for i, dim in enumerate(self.dimensions):
            check(f"dimensions[{i}].column", [dim.column])
        for i, qc in enumerate(self.quality):
            check(f"quality[{i}]", qc.targets)
        if self.sla.freshness_column:
            check("sla.freshness_column", [self.sla.freshness_column])
        masked = {c for rule in self.policy.masking for c in rule.columns}
        masked |= {c for rule in self.policy.aggregate_only for c in rule.columns}
        timed = [(f"quality[{i}].column", qc.column) for i, qc in enumerate(self.quality) if qc.check == "freshness"]
        for path, column in [*timed, ("sla.freshness_column", self.sla.freshness_column)]:
            if column in masked:
                problems.append(
                    (
                        path,
                        f"{column!r} is masked by policy.masking, and every reader sees the product's as_of; "
                        "use an unmasked time column",
                    )
                )
        check_names = [qc.name for qc in self.quality if qc.name]
        if len(set(check_names)) != len(check_names):
            problems.append(("quality", "duplicate check names"))
        if self.retrieval:
            check("retrieval.text_fields", self.retrieval.text_fields)
            check("retrieval.context_fields", self.retrieval.context_fields or [])
        for i, rf in enumerate(self.policy.row_filters):
            refs = [c.name for c in sqlglot.parse_one(rf.where).find_all(exp.Column)]
            check(f"policy.row_filters[{i}].where", refs)
        problems += metric_problems(self)
        problems += relationship_problems(self)
        problems += replica_problems(self)
        return problems


def _masked_and_aggregate_only(contract: ProductContract, index: int, rule: AggregateOnlyRule) -> list[tuple[str, str]]:
    """A column may not be masked and aggregate-only for the same subjects: an aggregate of masked values
    means nothing. It may be both when every subject one rule applies to is exempt from the other."""
    problems: list[tuple[str, str]] = []
    agg_exempt = set(rule.exempt)
    for j, mask in enumerate(contract.policy.masking):
        shared = sorted(set(rule.columns) & set(mask.columns))
        if not shared:
            continue
        mask_exempt = set(mask.exempt)
        # subjects neither rule exempts get both: any rule without exemptions covers everybody
        if "*" in agg_exempt or "*" in mask_exempt:
            continue
        problems.append(
            (
                f"policy.aggregate_only[{index}].columns",
                f"{shared} also masked by policy.masking[{j}] for the subjects neither rule exempts "
                f"(masking unless {sorted(mask_exempt) or 'nobody'}, aggregate_only unless "
                f"{sorted(agg_exempt) or 'nobody'}); a column is either masked or aggregate-only for a reader — "
                "drop it from one rule or exempt the other rule's readers",
            )
        )
    return problems
