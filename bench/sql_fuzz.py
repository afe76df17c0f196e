"""Soak ``run_sql`` with generated statements, each checked against an oracle: statements/s and findings.

The same differential as ``tests/fuzz`` (the demo workspace, its shop on SQLite, DuckDB or a throwaway
PostgreSQL cluster on loopback; every statement through the real product path and through a scratch
database holding the principal's governed view), but randomized by ``--seed`` and bounded by
``--seconds`` per store instead of a statement count. Prints progress to stderr, then per store the
statements/s, how statements ended (compared, refused by code, failed on both sides) and each class of
finding with its shortest reproductions. Exits 1 when there is a finding.

    python bench/sql_fuzz.py --store all --seconds 600 --seed 1
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout: tests/

from servers.demo import build_demo_workspace  # noqa: E402
from tests.fuzz.runner import FuzzRun, fuzz, open_differential  # noqa: E402
from tests.fuzz.stores import STORES  # noqa: E402
from tests.pgcluster import PostgresCluster  # noqa: E402


def _progress(run: FuzzRun) -> None:
    stats = run.differential.stats
    print(
        f"  {run.differential.store.kind}: {run.statements} statements, {run.statements / run.seconds:.1f}/s, "
        f"{stats['compared']} compared, {stats['product:refused']} refused, {len(run.tally)} findings",
        file=sys.stderr,
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=[*STORES, "all"], default="all")
    parser.add_argument("--seconds", type=float, default=300.0, help="time per store (default 300)")
    parser.add_argument("--seed", type=int, default=None, help="generator seed (default: a random one, printed)")
    args = parser.parse_args(argv)
    logging.getLogger("sqlglot").setLevel(logging.ERROR)  # transpile warnings of statements that are refused anyway
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    stores = STORES if args.store == "all" else (args.store,)
    print(f"seed {seed}; {args.seconds:g}s per store: {', '.join(stores)}", file=sys.stderr, flush=True)
    runs: list[FuzzRun] = []
    with tempfile.TemporaryDirectory(prefix="dp-sql-fuzz-") as tmp, ExitStack() as stack:
        workspace = build_demo_workspace(Path(tmp) / "ws")
        for kind in stores:
            create_database = None
            if kind == "postgresql":
                cluster = stack.enter_context(PostgresCluster.start())
                create_database = cluster.create_database
            with open_differential(kind, workspace, create_database=create_database) as differential:
                runs.append(fuzz(differential, seconds=args.seconds, random_seed=seed, progress=_progress))
    for run in runs:
        print(run.report(), end="\n\n")
    found = sum(len(run.tally) for run in runs)
    print(f"seed {seed}: {sum(r.statements for r in runs)} statements, {found} findings")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
