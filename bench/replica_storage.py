"""How to store an analytical replica: a table in a DuckDB file, or a Parquet file — measured side by side.

Both layouts hold TPC-H ``lineitem`` (scale factor ``--sf``) and are refreshed the way the refresher
must (atomically: the next generation is written beside the current one, then swapped in):

* **aggregate**: TPC-H Q1's shape on each layout through one read-only DuckDB connection (median of
  ``--repeat`` interleaved runs);
* **1% upsert**: the next generation with 1% of the rows changed — for the DuckDB file a byte copy of
  the current file, ``DELETE ... USING`` + ``INSERT`` of the changed rows and a checkpoint; for Parquet
  a new file written from the old one anti-joined with the changes, plus the changes;
* **size** on disk.

With the ``duckdb-extension-ducklake`` package (``dataproducts[bench]``) a third layout is measured: a
DuckLake table (catalog in a DuckDB file, data in Parquet files), upserted in place — each change is a
new snapshot, so readers see the old or the new state without a copy.

    python bench/replica_storage.py --sf 1
    python bench/replica_storage.py --smoke
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout: bench/, tests/

import duckdb  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench._tpch import generate_lineitem  # noqa: E402

Q1 = """SELECT l_returnflag, l_linestatus, sum(l_quantity), sum(l_extendedprice), avg(l_quantity),
  avg(l_extendedprice), avg(l_discount), count(*)
FROM {source} WHERE l_shipdate <= DATE '1998-09-02' GROUP BY 1, 2 ORDER BY 1, 2"""
KEY = "l_orderkey, l_linenumber"
CHANGES = "SELECT * REPLACE (l_quantity + 1 AS l_quantity) FROM {source} WHERE l_orderkey % 100 = 0"


def _ducklake(folder: Path, parquet: Path, repeat: int) -> tuple[float, float, int] | None:
    """Q1 median (ms), 1% upsert (s) and size (bytes) of a DuckLake table; None without the extension package."""
    spec = importlib.util.find_spec("duckdb_extension_ducklake")
    if spec is None or spec.origin is None:
        return None
    extension = Path(spec.origin).parent / "extensions" / f"v{duckdb.__version__}" / "ducklake.duckdb_extension"
    lake_dir = folder / "lake"
    lake_dir.mkdir()
    with duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}) as conn:
        conn.execute(f"LOAD '{extension}'")
        conn.execute(f"ATTACH 'ducklake:{lake_dir}/meta.ducklake' AS lake (DATA_PATH '{lake_dir}/data/')")
        conn.execute(f"CREATE TABLE lake.replica AS SELECT * FROM read_parquet('{parquet}')")
        runs = []
        for _ in range(repeat + 1):
            started = time.perf_counter()
            conn.execute(Q1.format(source="lake.replica")).fetchall()
            runs.append(time.perf_counter() - started)
        started = time.perf_counter()
        conn.execute("BEGIN")
        conn.execute(f"CREATE TEMP TABLE changed AS {CHANGES.format(source='lake.replica')}")
        conn.execute(
            "DELETE FROM lake.replica WHERE EXISTS (SELECT 1 FROM changed c WHERE c.l_orderkey = "
            "lake.replica.l_orderkey AND c.l_linenumber = lake.replica.l_linenumber)"
        )
        conn.execute("INSERT INTO lake.replica SELECT * FROM changed")
        conn.execute("COMMIT")
        upsert = time.perf_counter() - started
    size = sum(p.stat().st_size for p in lake_dir.rglob("*") if p.is_file())
    return statistics.median(runs[1:]) * 1000, upsert, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sf", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="sf 0.01, 3 runs")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "dataproducts-bench")
    args = parser.parse_args()
    sf, repeat = (0.01, 3) if args.smoke else (args.sf, args.repeat)
    parquet = generate_lineitem(args.data, sf)
    folder = Path(tempfile.mkdtemp(prefix="dataproducts-replica-storage-"))
    try:
        table_file, parquet_file = folder / "gen1.duckdb", folder / "gen1.parquet"
        with duckdb.connect(str(table_file)) as conn:
            conn.execute(f"CREATE TABLE replica AS SELECT * FROM read_parquet('{parquet}')")
        with duckdb.connect() as conn:
            conn.execute(f"COPY (SELECT * FROM read_parquet('{parquet}')) TO '{parquet_file}' (FORMAT parquet)")
        reader = duckdb.connect()
        reader.execute(f"ATTACH '{table_file}' AS t (READ_ONLY)")
        sources = {"duckdb table": "t.replica", "parquet": f"read_parquet('{parquet_file}')"}
        timings: dict[str, list[float]] = {name: [] for name in sources}
        for _ in range(repeat + 1):  # the first round warms up
            for name, source in sources.items():
                started = time.perf_counter()
                reader.execute(Q1.format(source=source)).fetchall()
                timings[name].append(time.perf_counter() - started)
        reader.close()

        started = time.perf_counter()
        table_next = folder / "gen2.duckdb"
        shutil.copyfile(table_file, table_next)
        with duckdb.connect(str(table_next)) as conn:
            conn.execute(f"CREATE TEMP TABLE changed AS {CHANGES.format(source='replica')}")
            conn.execute(
                "DELETE FROM replica USING changed WHERE replica.l_orderkey = changed.l_orderkey "
                "AND replica.l_linenumber = changed.l_linenumber"
            )
            conn.execute("INSERT INTO replica SELECT * FROM changed")
            conn.execute("CHECKPOINT")
        table_upsert = time.perf_counter() - started

        started = time.perf_counter()
        parquet_next = folder / "gen2.parquet"
        with duckdb.connect() as conn:
            old = f"read_parquet('{parquet_file}')"
            conn.execute(f"CREATE TEMP TABLE changed AS {CHANGES.format(source=old)}")
            conn.execute(
                f"COPY (SELECT * FROM {old} AS o ANTI JOIN changed USING ({KEY}) UNION ALL SELECT * FROM changed) "
                f"TO '{parquet_next}' (FORMAT parquet)"
            )
        parquet_upsert = time.perf_counter() - started

        lake = _ducklake(folder, parquet, repeat)

        table = Table(title=f"replica storage, TPC-H lineitem sf {sf:g}")
        for column in ("layout", f"Q1 median of {repeat} (ms)", "1% upsert, next generation (s)", "size (MB)"):
            table.add_column(column)
        for name, upsert, path in (
            ("duckdb table", table_upsert, table_file),
            ("parquet", parquet_upsert, parquet_file),
        ):
            q1_ms = statistics.median(timings[name][1:]) * 1000
            table.add_row(name, f"{q1_ms:.1f}", f"{upsert:.2f}", f"{path.stat().st_size / 1e6:.0f}")
        if lake is not None:
            q1_ms, upsert, size = lake
            table.add_row("ducklake", f"{q1_ms:.1f}", f"{upsert:.2f}", f"{size / 1e6:.0f}")
        Console().print(table)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
