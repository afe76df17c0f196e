"""PostgreSQL stopped (immediate mode) under concurrent calls, then started again: what callers see.

A throwaway cluster (``tests/pgcluster.py``) holds the registry (with its audit log) and the product's
source. ``--callers`` concurrent callers loop ``query_product`` through one service for ``--phase``
seconds before the outage, while the cluster is down, and for ``--phase`` seconds after it is back.
Printed: calls/s before and after recovery side by side (the ratio shows the server came back at full
speed without a restart), the failures by code while down (all ``unavailable``: the audit is
fail-closed, so nothing is served), failed calls after the restart, the time from "cluster accepts
connections" to the first served call, and audit rows of served calls against served calls.

    python bench/fault_recovery.py                 # 8 callers, 5 s phases
    python bench/fault_recovery.py --smoke         # 2 callers, 1 s phases: it runs, figures mean little
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

import anyio  # noqa: E402

from catalog.errors import DataProductsError  # noqa: E402
from catalog.query import Query  # noqa: E402
from tests.pgcluster import PostgresCluster  # noqa: E402
from tests.servers.fault_workspace import READER, open_service, postgresql_source  # noqa: E402


async def outage(cluster: PostgresCluster, workspace: Path, *, callers: int, phase_s: float) -> None:
    service = open_service(
        workspace,
        postgresql_source(cluster.create_database("shop")),
        registry_url=cluster.create_database("registry"),
    )
    calls: list[tuple[float, str, str]] = []  # (time, phase, outcome)
    state = {"phase": "before", "resumed_at": 0.0}
    query = Query(columns=["id", "amount"])

    async def caller() -> None:
        while state["phase"] != "stop":
            phase = str(state["phase"])
            try:
                await service.query_product(READER, "shop.orders", query)
                outcome = "ok"
            except DataProductsError as exc:
                outcome = exc.code
            calls.append((time.monotonic(), phase, outcome))
            if outcome != "ok":
                await anyio.sleep(0.01)

    async with service:
        async with anyio.create_task_group() as group:
            for _ in range(callers):
                group.start_soon(caller)
            await anyio.sleep(phase_s)
            state["phase"] = "stopping"  # calls may still be served until the server is gone
            await anyio.to_thread.run_sync(cluster.halt)
            state["phase"] = "down"
            await anyio.sleep(phase_s)
            state["phase"] = "restarting"
            await anyio.to_thread.run_sync(cluster.resume)
            state["phase"], state["resumed_at"] = "after", time.monotonic()
            await anyio.sleep(phase_s)
            state["phase"] = "stop"
        audited = [r for r in service.audit.query(tool="query_product", limit=1_000_000) if r.outcome == "ok"]

    def rate(phase: str) -> float:
        return sum(1 for _, p, o in calls if p == phase and o == "ok") / phase_s

    down = Counter(o for _, p, o in calls if p == "down")  # after pg_ctl stop returned, before start
    after_failed = Counter(o for _, p, o in calls if p == "after" and o != "ok")
    first_ok = min((t for t, p, o in calls if p == "after" and o == "ok"), default=float("nan"))
    served = sum(1 for _, _, o in calls if o == "ok")
    before, after = rate("before"), rate("after")
    print(f"callers {callers}, phases of {phase_s:g} s, PostgreSQL registry + source, stop -m immediate")
    print(f"  served calls/s   before {before:8.1f}   after {after:8.1f}   after/before {after / before:5.2f}x")
    print(f"  while down       {dict(down) or 'no calls'}")
    recovery_ms = 1000 * (first_ok - state["resumed_at"])
    print(f"  after restart    failed {dict(after_failed) or 0}; first served call {recovery_ms:.0f} ms after the")
    print("                   cluster accepted connections again (no server restart)")
    verdict = "all present" if len(audited) >= served else "MISSING ROWS"
    print(f"  audit            {len(audited)} ok rows for {served} served calls ({verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--phase", type=float, default=5.0, help="seconds before, during and after the outage")
    parser.add_argument("--smoke", action="store_true", help="2 callers, 1 s phases")
    args = parser.parse_args()
    if args.smoke:
        args.callers, args.phase = 2, 1.0
    with PostgresCluster.start() as cluster, tempfile.TemporaryDirectory() as workspace:
        anyio.run(lambda: outage(cluster, Path(workspace), callers=args.callers, phase_s=args.phase))


if __name__ == "__main__":
    main()
