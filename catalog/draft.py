"""Draft a contract from a live table schema, for its owner to complete (``dataproducts init``).

The draft is valid YAML and a valid contract, but every description is a ``TODO`` and the access
list is empty: the owner must fill them in. Columns whose names suggest personal data are flagged
as PII *candidates* in comments; ``pii:`` is never set automatically.
"""

from __future__ import annotations

import json
import re

import yaml

from catalog.contract import IDENTIFIER, PRODUCT_NAME, SEMVER
from catalog.errors import ContractError, ContractProblem
from catalog.validate import SourceColumn, SourceSchema

__all__ = ["draft_contract", "pii_candidate"]

# (PII kind, name tokens that suggest it, substrings that suggest it even inside a longer token)
_PII_RULES: tuple[tuple[str, frozenset[str], tuple[str, ...]], ...] = (
    ("ip_address", frozenset({"ip", "ipv4", "ipv6", "ipaddr", "ipaddress"}), ()),
    ("email", frozenset({"email", "mail", "e_mail"}), ("email",)),
    ("phone", frozenset({"phone", "mobile", "tel", "telephone", "fax", "msisdn"}), ("phone",)),
    ("birth_date", frozenset({"dob", "birth", "birthday", "birthdate"}), ("birth",)),
    ("national_id", frozenset({"ssn", "passport", "nin", "nino", "national", "taxid", "tin", "ahv", "bsn"}), ()),
    ("financial", frozenset({"iban", "bic", "card", "creditcard", "cvv"}), ("iban", "creditcard", "accountnumber")),
    ("postal_code", frozenset({"zip", "zipcode", "postcode", "postal", "plz"}), ("postcode", "zipcode")),
    ("address", frozenset({"address", "street", "addr", "addr1", "addr2"}), ("address",)),
    ("health", frozenset({"diagnosis", "health", "medical", "icd", "allergy"}), ()),
    ("name", frozenset({"firstname", "lastname", "fullname", "surname", "forename"}), ()),
)
_PERSON_WORDS = frozenset({"first", "last", "full", "given", "family", "middle", "maiden", "sur", "fore"})
_PERSON_OWNERS = frozenset({"customer", "user", "person", "contact", "client", "employee", "patient", "buyer"})


def pii_candidate(column: str) -> str | None:
    """The PII kind a column *name* suggests (``customer_email`` → ``email``), or None."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", column)
    tokens = [t for t in re.split(r"[^a-z0-9]+", spaced.lower()) if t]
    joined = "".join(tokens)
    for kind, words, substrings in _PII_RULES:
        if any(t in words for t in tokens) or any(s in joined for s in substrings):
            return kind
    if "name" in tokens and (tokens == ["name"] or _PERSON_WORDS & set(tokens) or _PERSON_OWNERS & set(tokens)):
        return "name"
    return None


def draft_contract(
    schema: SourceSchema,
    *,
    name: str,
    connection: str,
    owner_team: str,
    owner_email: str | None = None,
    version: str = "0.1.0",
    title: str | None = None,
) -> str:
    """YAML text of a draft contract for ``schema``: TODO descriptions, PII candidates as comments.

    Columns whose names are not identifiers are left out with a comment saying why.

    Raises:
        ContractError: ``name``, ``version`` or ``connection`` is malformed, or no column of the
            table has a usable name.
    """
    problems = [
        ContractProblem(message=f"{value!r} is not in the expected form", path=path, hint=hint)
        for path, value, pattern, hint in (
            ("name", name, PRODUCT_NAME, "write <domain>.<product> in lower case, e.g. sales.orders"),
            ("version", version, SEMVER, "write MAJOR.MINOR.PATCH, e.g. 0.1.0"),
            ("source.connection", connection, IDENTIFIER, "a connection name of dataproducts.yaml"),
        )
        if not re.match(pattern, value)
    ]
    usable = [c for c in schema.columns if re.match(IDENTIFIER, c.name)]
    if not usable:
        problems.append(ContractProblem(message=f"no column of {schema.table!r} has a usable name", path="columns"))
    if problems:
        raise ContractError(f"cannot draft a contract for {schema.table!r}", problems)

    count = schema.row_count
    rows = "row count unknown" if count is None else f"{count:,} row{'' if count == 1 else 's'}"
    owner = {"team": owner_team, **({"email": owner_email} if owner_email else {})}
    lines = [
        f"# Draft contract generated from {connection}:{schema.table} ({rows}).",
        "# Fill in every TODO, confirm the PII candidates, then run `dataproducts validate`.",
        f"name: {_scalar(name)}",
        f"version: {_scalar(version)}",
        f"title: {_scalar(title or 'TODO: title of ' + name)}",
        f"description: {_scalar('TODO: what one row is, where the data comes from, how fresh it is')}",
        f"owner: {_flow(owner)}",
        "tags: []  # TODO: e.g. [sales, revenue]",
        f"source: {_flow({'connection': connection, 'table': schema.table})}",
    ]
    key = [k for k in schema.primary_key if any(c.name == k for c in usable)]
    if key:
        lines.append(f"primary_key: {_flow(key)}")
    else:
        lines.append("primary_key: []  # TODO: no primary key found; name the columns that identify a row")
    lines.append("columns:")
    for column in schema.columns:
        lines += _column_lines(column)
    if key:
        lines += ["quality:", f"  - {_flow({'check': 'unique', 'columns': key})}"]
    lines += [
        "policy:",
        "  access: []  # TODO: who may read, e.g. [role:analyst]; empty means nobody",
        "",
    ]
    return "\n".join(lines)


def _column_lines(column: SourceColumn) -> list[str]:
    if not re.match(IDENTIFIER, column.name):
        return [f"  # column {column.name!r} ({column.native_type}) left out: not an identifier; rename it in a view"]
    lines: list[str] = []
    kind = pii_candidate(column.name)
    if kind:
        lines.append(f"  # PII candidate: {kind} — confirm and set pii: {kind} (consider a masking rule)")
    lines += [
        f"  - name: {column.name}",
        f"    type: {column.type}  # {_type_origin(column)}",
        f"    description: {_scalar('TODO: describe ' + column.name)}",
    ]
    if not column.nullable:
        lines.append("    nullable: false")
    return lines


def _type_origin(column: SourceColumn) -> str:
    """Where the drafted type comes from: the declared native type, or what the stored values showed."""
    if column.inferred:
        return f"no declared type; {column.inferred}"
    return f"native: {column.native_type}"


def _scalar(value: str) -> str:
    """``value`` as a YAML scalar: plain when YAML reads it back unchanged, else double-quoted."""
    try:
        plain_ok = "\n" not in value and " #" not in value and yaml.safe_load(value) == value
    except yaml.YAMLError:
        plain_ok = False
    return value if plain_ok else json.dumps(value, ensure_ascii=False)


def _flow(value: object) -> str:
    """A short mapping or list in YAML flow style."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    text = str(value)
    return text if re.match(r"^[A-Za-z0-9_.@\-]+$", text) and yaml.safe_load(text) == text else json.dumps(text)
