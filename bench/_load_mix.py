"""The mixed load on the demo workspace: lookups, aggregates, run_sql, catalog search and refusals.

Three load principals are added to the demo's settings with fresh tokens, so that their audit rows
can be told apart from anyone else's: an EU analyst (masked PII, EU rows only), a PII reader, and a
principal with no role, every one of whose reads is refused (``access_denied``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from bench._http_load import Call
from servers.settings import PrincipalConfig, Settings, hash_token

__all__ = ["LOAD_PRINCIPALS", "LoadPrincipals", "mixed_call", "with_load_principals"]

#: name -> roles; the order is the order of the tokens the clients take in turn.
LOAD_PRINCIPALS: dict[str, list[str]] = {
    "load-analyst": ["analyst", "sales-eu"],
    "load-reader": ["analyst", "pii-reader", "sales"],
    "load-nobody": [],
}
_NOBODY = list(LOAD_PRINCIPALS).index("load-nobody")
_KINDS = ("lookup", "aggregate", "run_sql", "search", "lookup", "refusal")


@dataclass(frozen=True)
class LoadPrincipals:
    settings: Settings
    tokens: list[str]  # in LOAD_PRINCIPALS order: client c uses tokens[c % 3]
    names: list[str]


def with_load_principals(settings: Settings, suffix: str = "") -> LoadPrincipals:
    """``settings`` plus the load principals (names get ``suffix``), and their new bearer tokens."""
    tokens = [f"dp_load_{secrets.token_urlsafe(24)}" for _ in LOAD_PRINCIPALS]
    added = [
        PrincipalConfig(name=f"{name}{suffix}", roles=roles, token_sha256=hash_token(token))
        for (name, roles), token in zip(LOAD_PRINCIPALS.items(), tokens, strict=True)
    ]
    updated = settings.model_copy(update={"principals": [*settings.principals, *added]})
    return LoadPrincipals(updated, tokens, [p.name for p in added])


def mixed_call(c: int, i: int) -> Call:
    """Call ``i`` of client ``c`` (which acts as load principal ``c % 3``)."""
    kind = _KINDS[(c + i) % len(_KINDS)]
    denied = c % len(LOAD_PRINCIPALS) == _NOBODY
    if kind == "lookup":
        order_id = 1 + (c * 131 + i * 17) % 400
        args: dict[str, Any] = {"product": "shop.orders", "columns": ["order_id", "status", "region"]}
        args["where"] = [{"column": "order_id", "op": "=", "value": order_id}]
        return Call("query_product", args, kind, expect_error=denied)
    if kind == "aggregate":
        args = {"product": "shop.orders", "group_by": ["region"], "aggregates": [{"fn": "count", "as": "n"}]}
        return Call("query_product", args, kind, expect_error=denied)
    if kind == "run_sql":
        sql = "SELECT channel, count(*) AS n FROM shop.orders GROUP BY channel ORDER BY channel"
        return Call("run_sql", {"sql": sql}, kind, expect_error=denied)
    if kind == "search":
        return Call("search_products", {"query": "orders revenue"}, kind)  # no role: an empty list, not an error
    if i % 2:
        return Call("run_sql", {"sql": "DELETE FROM shop.orders"}, kind, expect_error=True)
    args = {"product": "shop.orders", "columns": ["revnue"]}
    return Call("query_product", args, kind, expect_error=True)
