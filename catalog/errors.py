"""The one error hierarchy of dataproducts.

Every error carries a stable ``code`` (used in audit rows, HTTP/MCP error payloads and tests) and a
message that says what was wrong and what would be valid::

    DataProductsError                 code
    ├── NotFoundError                 not_found          unknown product, version, column, connection
    ├── InvalidRequestError           invalid_request    a query, filter, cursor or SQL text that cannot run
    │   └── SQLRefusedError           sql_refused        run_sql text refused by the SQL guard
    ├── AccessDeniedError             access_denied      policy says no (carries ``product`` and ``reason``)
    │   └── InsufficientScopeError    insufficient_scope the caller's access token lacks a scope the product needs
    ├── StaleDataError                stale_data         the product is older than its SLA and says on_stale: refuse
    ├── ContractError                 invalid_contract   a product contract fails validation (carries ``problems``)
    ├── RegistrationError             registration_refused   register refused (e.g. breaking change, same version)
    ├── ConfigError                   config_error       dataproducts.yaml / environment is wrong
    ├── AuditError                    audit_failed       the audit row could not be written (fail closed)
    │   └── AuditUnavailableError     unavailable        ... because its database is down, locked or full
    ├── UnavailableError              unavailable        the registry database is down, locked or full; retry
    ├── EmbeddingError                embedding_failed   a local model is missing, cannot load or fails
    └── ConnectorError                connector_error    a store failed; the driver exception is kept as ``.orig``
        ├── ConnectorUnavailableError store_unavailable  cannot connect / open the store
        ├── QueryTimeoutError         timeout            the statement exceeded its time budget
        └── QueryExecutionError       execution_failed   the store rejected or failed the statement

Raise these, never bare ``Exception``; map driver exceptions in one place per connector with
``raise QueryExecutionError(...) from exc``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AccessDeniedError",
    "AuditError",
    "AuditUnavailableError",
    "ConfigError",
    "ConnectorError",
    "ConnectorUnavailableError",
    "ContractError",
    "ContractProblem",
    "DataProductsError",
    "EmbeddingError",
    "InsufficientScopeError",
    "InvalidRequestError",
    "NotFoundError",
    "QueryExecutionError",
    "QueryTimeoutError",
    "RegistrationError",
    "SQLRefusedError",
    "StaleDataError",
    "UnavailableError",
]


class DataProductsError(Exception):
    """Base of every error raised by dataproducts."""

    code: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, object]:
        """The shared JSON error shape: ``{"error": {"code": ..., "message": ...}}``."""
        return {"error": {"code": self.code, "message": self.message}}


class NotFoundError(DataProductsError):
    code = "not_found"


class InvalidRequestError(DataProductsError):
    code = "invalid_request"


class SQLRefusedError(InvalidRequestError):
    code = "sql_refused"


class AccessDeniedError(DataProductsError):
    code = "access_denied"

    def __init__(self, message: str, *, product: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.product = product
        self.reason = reason


class InsufficientScopeError(AccessDeniedError):
    """The policy grants access but the caller's OAuth access token lacks a scope the product needs."""

    code = "insufficient_scope"


@dataclass(frozen=True)
class ContractProblem:
    """One validation problem: where (file, line, field path) and what would be valid."""

    message: str
    path: str = ""  # field path, e.g. "columns[2].type"
    file: str | None = None
    line: int | None = None
    hint: str | None = None  # what would be valid

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line) if p is not None)
        parts = [f"{where}: " if where else "", f"{self.path}: " if self.path else "", self.message]
        if self.hint:
            parts.append(f" ({self.hint})")
        return "".join(parts)


class ContractError(DataProductsError):
    code = "invalid_contract"

    def __init__(self, message: str, problems: list[ContractProblem] | None = None) -> None:
        self.problems: list[ContractProblem] = list(problems or [])
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class RegistrationError(DataProductsError):
    code = "registration_refused"


class ConfigError(DataProductsError):
    code = "config_error"


class AuditError(DataProductsError):
    code = "audit_failed"


class UnavailableError(DataProductsError):
    """A database the server itself depends on (the registry and its audit log) cannot be used now:
    unreachable, locked by another writer, or out of space. Nothing was served or changed; the call
    can be retried once the database is back."""

    code = "unavailable"


class AuditUnavailableError(AuditError, UnavailableError):
    """The audit row could not be written because the audit database is unavailable (fail closed)."""

    code = "unavailable"


class EmbeddingError(DataProductsError):
    code = "embedding_failed"


class ConnectorError(DataProductsError):
    code = "connector_error"

    def __init__(self, message: str, *, orig: BaseException | None = None) -> None:
        super().__init__(message)
        self.orig = orig


class ConnectorUnavailableError(ConnectorError):
    code = "store_unavailable"


class QueryTimeoutError(ConnectorError):
    code = "timeout"


class QueryExecutionError(ConnectorError):
    code = "execution_failed"


class StaleDataError(DataProductsError):
    """A read refused because the product is older than its freshness SLA and its contract says
    ``sla.on_stale: refuse``; the message says when it was last updated, the SLA and whom to ask."""

    code = "stale_data"

    def __init__(self, message: str, *, product: str) -> None:
        super().__init__(message)
        self.product = product
