"""Load product contracts from YAML, reporting every problem at its file, line and field path.

A file holds one contract, or several separated by ``---``. The YAML node tree is composed first so
each field path (``columns[2].type``) keeps the line it was written on; pydantic then validates the
data with cross-field references deferred, so reference problems are reported at their own lines
too. All problems of all documents come back in one :class:`~catalog.errors.ContractError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from catalog._contract_hints import line_of, problems_from_validation_error
from catalog.checks import sql_problems
from catalog.contract import ProductContract
from catalog.errors import ContractError, ContractProblem
from catalog.suggest import close_matches

__all__ = [
    "LoadedContract",
    "dump_contract",
    "load_contract",
    "load_contract_file",
    "load_contracts",
    "load_file",
    "parse_contracts",
]

CONTRACT_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class LoadedContract:
    """A validated contract with the lines its fields were written on."""

    contract: ProductContract
    file: str | None = None
    lines: Mapping[str, int] = field(default_factory=dict)

    def line_of(self, path: str) -> int | None:
        """The line of ``path`` (e.g. ``columns[2].type``), or of its closest written ancestor."""
        return line_of(self.lines, path)

    def locate(self, problem: ContractProblem) -> ContractProblem:
        """``problem`` with this contract's file and the line of its field path filled in."""
        return replace(problem, file=problem.file or self.file, line=problem.line or self.line_of(problem.path))


def parse_contracts(text: str, *, file: str | None = None) -> list[LoadedContract]:
    """Parse every YAML document in ``text`` into a contract.

    Raises:
        ContractError: the text is not valid YAML, holds no contract, or any document fails validation;
            ``problems`` lists each problem with file, line, field path and a hint.
    """
    try:
        documents = _compose_all(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(str(p) for p in (exc.context, exc.problem) if p) or "invalid YAML"
        problem = ContractProblem(
            message=f"not valid YAML: {message}",
            file=file,
            line=mark.line + 1 if mark else None,
            hint="check indentation, colons and quoting on this line or the one before",
        )
        raise ContractError(f"{file or 'contract'} is not valid YAML", [problem]) from exc
    if not documents:
        problem = ContractProblem(message="no contract found", file=file, line=1, hint="write a YAML mapping")
        raise ContractError(f"{file or 'contract text'} holds no contract", [problem])

    loaded: list[LoadedContract] = []
    problems: list[ContractProblem] = []
    for node, data in documents:
        lines, duplicates = _index_lines(node)
        doc_problems = [replace(p, file=file) for p in duplicates]
        if not isinstance(data, dict):
            doc_problems.append(
                ContractProblem(
                    message=f"a contract is a YAML mapping, not {type(data).__name__}",
                    file=file,
                    line=node.start_mark.line + 1,
                    hint="start with 'name: <domain>.<product>'",
                )
            )
            problems += doc_problems
            continue
        try:
            contract = ProductContract.model_validate(data, context={"defer_references": True})
        except ValidationError as exc:
            doc_problems += problems_from_validation_error(exc, data, file=file, lines=lines)
            problems += doc_problems
            continue
        doc_problems += [
            ContractProblem(
                message=message,
                path=path,
                file=file,
                line=line_of(lines, path),
                hint=_reference_hint(message, contract.column_names),
            )
            for path, message in [*contract.reference_problems(), *sql_problems(contract)]
        ]
        if doc_problems:
            problems += sorted(doc_problems, key=lambda p: p.line or 0)
        else:
            loaded.append(LoadedContract(contract=contract, file=file, lines=lines))
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        raise ContractError(f"{file or 'contract'}: {count}", problems)
    return loaded


def load_file(path: str | Path) -> list[LoadedContract]:
    """Every contract in one YAML file.

    Raises:
        ContractError: the file cannot be read, is not valid YAML, or a contract in it is invalid.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ContractError(f"cannot read {path}: {exc}", [ContractProblem(message=str(exc), file=str(path))]) from exc
    return parse_contracts(text, file=str(path))


def load_contract_file(path: str | Path) -> list[ProductContract]:
    """The contracts of one YAML file (one or several ``---`` documents).

    Raises:
        ContractError: as :func:`load_file`.
    """
    return [item.contract for item in load_file(path)]


def load_contract(path: str | Path) -> ProductContract:
    """The one contract in a YAML file.

    Raises:
        ContractError: as :func:`load_file`, or the file holds more than one contract.
    """
    loaded = load_file(path)
    if len(loaded) != 1:
        names = ", ".join(item.contract.name for item in loaded)
        problem = ContractProblem(
            message=f"expected one contract, found {len(loaded)} ({names})",
            file=str(path),
            hint="use load_contracts() for multi-document files",
        )
        raise ContractError(f"{path} holds {len(loaded)} contracts", [problem])
    return loaded[0].contract


def load_contracts(paths: str | Path | Iterable[str | Path]) -> list[LoadedContract]:
    """Contracts from files and directories (``*.yaml``/``*.yml``, recursively, in sorted order).

    Raises:
        ContractError: any file is unreadable or invalid; ``problems`` holds the problems of all files.
    """
    roots = [paths] if isinstance(paths, str | Path) else list(paths)
    files: list[Path] = []
    for root in map(Path, roots):
        if root.is_dir():
            files += sorted(p for p in root.rglob("*") if p.suffix in CONTRACT_SUFFIXES and p.is_file())
        else:
            files.append(root)
    loaded: list[LoadedContract] = []
    problems: list[ContractProblem] = []
    for file in files:
        try:
            loaded += load_file(file)
        except ContractError as exc:
            problems += exc.problems
    if problems:
        raise ContractError(f"{len(problems)} problem(s) in {len(files)} file(s)", problems)
    return loaded


def _reference_hint(message: str, columns: list[str]) -> str | None:
    """For "unknown column 'x'" problems: the closest declared column."""
    match = re.search(r"unknown column '([^']*)'", message)
    if not match:
        return None
    close = close_matches(match.group(1), columns)
    return f"did you mean {close[0]!r}?" if close else None


class _ContractDumper(yaml.SafeDumper):
    """Block style, multi-line strings as literal blocks."""


_LINE_BREAKS_YAML_ONLY = ("\x85", "\u2028", "\u2029")  # line breaks to YAML, not to str.splitlines users


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style: str | None = None
    if any(ch in value for ch in _LINE_BREAKS_YAML_ONLY) or value != value.strip():
        style = '"'  # escaped, so these characters survive the round trip
    elif "\n" in value:
        style = "|"
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ContractDumper.add_representer(str, _represent_str)


def dump_contract(contract: ProductContract, *, include_defaults: bool = False) -> str:
    """The contract as stable YAML: keys in model order, defaults left out unless asked for.

    ``parse_contracts(dump_contract(c))`` gives back a contract equal to ``c``.
    """
    data = contract.model_dump(mode="json", exclude_defaults=not include_defaults)
    return yaml.dump(data, Dumper=_ContractDumper, sort_keys=False, allow_unicode=True, width=100)


def _compose_all(text: str) -> list[tuple[yaml.Node, Any]]:
    """Each non-empty document as (node tree, constructed data). Raises yaml.MarkedYAMLError."""
    loader = yaml.SafeLoader(text)
    documents: list[tuple[yaml.Node, Any]] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            data = loader.construct_document(node)
            if data is None:  # an empty document between '---' separators
                continue
            documents.append((node, data))
    finally:
        loader.dispose()
    return documents


def _index_lines(root: yaml.Node) -> tuple[dict[str, int], list[ContractProblem]]:
    """Field path → 1-based line, and a problem for each duplicated mapping key."""
    lines: dict[str, int] = {"": root.start_mark.line + 1}
    duplicates: list[ContractProblem] = []
    stack: list[tuple[str, yaml.Node]] = [("", root)]
    while stack:
        prefix, node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            first_seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                path = f"{prefix}.{key}" if prefix else key
                line = key_node.start_mark.line + 1
                if key in first_seen:
                    duplicates.append(
                        ContractProblem(
                            message=f"duplicate key {key!r} (first on line {first_seen[key]})",
                            path=path,
                            line=line,
                            hint="write each key once; YAML keeps only the last value",
                        )
                    )
                else:
                    first_seen[key] = line
                lines[path] = line
                stack.append((path, value_node))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                path = f"{prefix}[{index}]"
                lines[path] = item.start_mark.line + 1
                stack.append((path, item))
    return lines, sorted(duplicates, key=lambda p: p.line or 0)
