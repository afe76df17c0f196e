"""Quality checks and freshness on real stores: SQLite, PostgreSQL and DuckDB, over crafted rows."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from catalog.errors import StaleDataError
from catalog.quality_log import QualityLog
from catalog.query import Query
from catalog.registry import Registry
from servers.service import DataProductsService
from tests.servers.quality_stores import READER, STORES, contract_yaml, workspace

pytestmark = pytest.mark.anyio

KINDS = ["not_null", "unique", "accepted_values", "range", "row_count", "freshness", "sql", "range"]
FAILING_OBSERVED = {"not_null": "1", "unique": "2", "accepted_values": "1", "range": "1", "row_count": "5", "sql": "1"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_each_check_kind_passes_on_good_rows_and_fails_on_bad_rows(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = workspace(
        store,
        tmp_path,
        request,
        [contract_yaml("qa.good", "good_events"), contract_yaml("qa.bad", "bad_events")],
    )
    async with DataProductsService.open(settings) as service:
        results = await service.run_checks()
    by_product = {p: [r for r in results if r.product == p] for p in ("qa.good", "qa.bad")}
    assert [r.kind for r in by_product["qa.good"]] == KINDS
    assert [r.status for r in by_product["qa.good"]] == ["pass"] * 7 + ["warn"]  # small_amounts is warn-severity
    assert [r.status for r in by_product["qa.bad"]] == ["fail"] * 7 + ["warn"]
    for result in by_product["qa.bad"][:7]:
        if result.kind in FAILING_OBSERVED:
            assert result.observed == FAILING_OBSERVED[result.kind], result
    good = {r.check_name: r for r in by_product["qa.good"]}
    assert good["row_count"].observed == "3" and good["row_count"].rows_scanned == 3
    assert good["no_big_ids"].observed == "0"
    freshness = good["freshness_created_at"]
    assert freshness.observed is not None and freshness.observed.endswith("+00:00")
    assert "1h" in freshness.message or "59m" in freshness.message
    bad_freshness = {r.check_name: r for r in by_product["qa.bad"]}["freshness_created_at"]
    assert "older than max_age 1d" in bad_freshness.message and "30d" in bad_freshness.message


async def test_check_results_survive_reopening_the_registry_with_the_time_their_status_began(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = workspace("sqlite", tmp_path, request, [contract_yaml("qa.bad", "bad_events")])
    async with DataProductsService.open(settings) as service:
        first = await service.run_checks(["qa.bad"])
        await service.run_checks(["qa.bad"])
    with Registry.from_url(settings.resolved_registry_url()) as registry:
        log = QualityLog(registry)
        latest = log.latest("qa.bad", version="1.0.0")
        history = log.history("qa.bad", limit=100)
    assert len(latest) == 8 and len(history) == 16
    assert latest[0].check_name == "not_null_kind" and latest[0].status == "fail"
    assert latest[0].since == first[0].checked_at  # failing since the first run
    assert latest[0].checked_at > first[0].checked_at


async def test_a_sql_check_that_the_guard_refuses_is_recorded_as_an_error_and_the_others_still_run(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    text = contract_yaml("qa.good", "good_events").replace(
        "SELECT * FROM qa.good WHERE id > 1000", "SELECT * FROM qa.good WHERE id > 1000 AND random() > 0"
    )
    settings = workspace("sqlite", tmp_path, request, [text])
    async with DataProductsService.open(settings) as service:
        results = await service.run_checks()
    statuses = {r.check_name: r.status for r in results}
    assert statuses["no_big_ids"] == "error"
    assert statuses["not_null_kind"] == "pass"
    error = next(r for r in results if r.check_name == "no_big_ids")
    assert error.message.startswith("sql_refused:")


async def test_a_sql_check_reading_an_unregistered_product_errors_without_suggesting_other_products(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    text = contract_yaml("qa.good", "good_events").replace(
        "SELECT * FROM qa.good WHERE", "SELECT * FROM qa.goods WHERE"
    )
    settings = workspace("sqlite", tmp_path, request, [text, contract_yaml("qa.goodies", "good_events")])
    async with DataProductsService.open(settings) as service:
        results = await service.run_checks(["qa.good"])
    error = next(r for r in results if r.check_name == "no_big_ids")
    assert error.status == "error"
    assert error.message == "invalid_request: the statement reads 'qa.goods', which is not a registered product"


async def test_freshness_is_fresh_stale_or_unknown_and_says_why(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    contracts = [
        contract_yaml("qa.good", "good_events"),
        contract_yaml("qa.old", "bad_events"),
        contract_yaml("qa.unmeasured", "good_events", quality=False),
        contract_yaml(
            "qa.loaded", "bad_events", sla='{freshness: 1d, loaded_at: "SELECT max(created_at) FROM qa.good"}'
        ),
        contract_yaml("qa.nosla", "good_events", sla="{freshness_column: created_at}", quality=False),
        contract_yaml("qa.nowhere", "good_events").replace("connection: store", "connection: nowhere"),
    ]
    settings = workspace(store, tmp_path, request, contracts)
    async with DataProductsService.open(settings) as service:
        states = {
            c: await service.trust.freshness(await service.contract(c))
            for c in ("qa.good", "qa.old", "qa.unmeasured", "qa.loaded", "qa.nosla", "qa.nowhere")
        }
    assert states["qa.good"].state == "fresh" and states["qa.good"].sla == "1d"
    assert states["qa.good"].age_s is not None and 3000 < states["qa.good"].age_s < 7200
    assert states["qa.old"].state == "stale" and states["qa.old"].age == "30d"
    assert states["qa.unmeasured"].state == "unknown" and "nothing to measure" in (states["qa.unmeasured"].reason or "")
    assert states["qa.loaded"].state == "fresh"  # loaded_at reads qa.good's newest row
    assert states["qa.nosla"].state == "unknown" and states["qa.nosla"].as_of is not None
    assert "no freshness SLA" in (states["qa.nosla"].reason or "")
    assert states["qa.nowhere"].state == "unknown"
    assert (states["qa.nowhere"].reason or "").startswith("could not measure as_of (config_error): unknown connection")


async def test_a_stale_product_that_refuses_is_refused_on_query_and_sql_and_one_that_warns_is_served(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    contracts = [
        contract_yaml("qa.refusing", "bad_events", sla="{freshness: 1d, on_stale: refuse}"),
        contract_yaml("qa.warning", "bad_events", sla="{freshness: 1d, on_stale: warn}"),
        contract_yaml("qa.good", "good_events"),
    ]
    settings = workspace(store, tmp_path, request, contracts)
    async with DataProductsService.open(settings) as service:
        with pytest.raises(StaleDataError) as refused:
            await service.query_product(READER, "qa.refusing", Query())
        assert "last updated" in refused.value.message and "its SLA is 1d" in refused.value.message
        assert "quality-team <quality@example.org>" in refused.value.message
        with pytest.raises(StaleDataError):
            await service.run_sql(READER, "SELECT count(*) AS n FROM qa.refusing")
        with pytest.raises(StaleDataError):
            await service.describe_product(READER, "qa.refusing")
        warned = await service.query_product(READER, "qa.warning", Query())
        assert warned.row_count == 5
        assert any("qa.warning is stale" in w for w in warned.warnings)
        assert warned.freshness[0]["state"] == "stale" and warned.freshness[0]["sla"] == "1d"
        joined = await service.run_sql(READER, "SELECT count(*) AS n FROM qa.good g JOIN qa.warning w ON g.id = w.id")
        assert sorted(f["product"] for f in joined.freshness) == ["qa.good", "qa.warning"]
        assert {f["product"]: f["state"] for f in joined.freshness} == {"qa.good": "fresh", "qa.warning": "stale"}
    records = service.audit.query(product="qa.refusing", limit=10)
    assert {r.error_code for r in records} == {"stale_data"} and {r.outcome for r in records} == {"error"}


async def test_freshness_is_measured_once_per_interval_not_once_per_read(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = workspace("sqlite", tmp_path, request, [contract_yaml("qa.good", "good_events")])
    for cache_s, expected in ((3600.0, 1), (0.0, 3)):
        calls: list[str] = []
        tuned = settings.model_copy(update={"freshness": settings.freshness.model_copy(update={"cache_s": cache_s})})
        async with DataProductsService.open(tuned) as service:
            measure = service.measure_as_of

            async def counting(contract, measure=measure, calls=calls):  # type: ignore[no-untyped-def]
                calls.append(contract.name)
                return await measure(contract)

            service.measure_as_of = counting  # type: ignore[method-assign]
            await service.query_product(READER, "qa.good", Query())
            await service.run_sql(READER, "SELECT count(*) AS n FROM qa.good")
            await service.describe_product(READER, "qa.good")
        assert calls == ["qa.good"] * expected


async def test_a_failing_error_check_becomes_a_warning_on_every_read_until_it_passes(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = workspace("duckdb", tmp_path, request, [contract_yaml("qa.bad", "bad_events", sla="{on_stale: warn}")])
    async with DataProductsService.open(settings) as service:
        before = await service.query_product(READER, "qa.bad", Query())
        assert not [w for w in before.warnings if "quality check" in w]
        await service.run_checks()
        after = await service.query_product(READER, "qa.bad", Query())
        described = await service.describe_product(READER, "qa.bad")
    failing = [w for w in after.warnings if "quality check" in w]
    assert len(failing) == 7  # the warn-severity check is recorded, not warned about
    assert any(w.startswith("qa.bad: quality check not_null_kind failing since ") for w in failing)
    assert described.warnings == after.warnings
    assert [c["status"] for c in described.quality] == ["fail"] * 7 + ["warn"]


async def test_search_leaves_out_stale_products_that_refuse_and_refuses_when_one_is_named(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    retrieval = "\nretrieval: {text_fields: [kind]}\n"
    stale_sla = '{freshness: 1d, on_stale: refuse, loaded_at: "SELECT max(created_at) FROM qa.old"}'
    contracts = [
        contract_yaml("qa.old", "bad_events", quality=False),
        contract_yaml("qa.fresh_docs", "good_events", quality=False) + retrieval,
        contract_yaml("qa.stale_docs", "good_events", quality=False, sla=stale_sla) + retrieval,
    ]
    settings = workspace("sqlite", tmp_path, request, contracts)
    async with DataProductsService.open(settings) as service:
        await service.index_products(product="qa.fresh_docs")
        await service.index_products(product="qa.stale_docs")
        found = await service.search_documents(READER, "a", k=10)
        with pytest.raises(StaleDataError):
            await service.search_documents(READER, "a", product="qa.stale_docs")
        with pytest.raises(StaleDataError):
            await service.ask_context(READER, "a", product="qa.stale_docs")
        passages = await service.ask_context(READER, "a")
    assert found.hits and {h.product for h in found.hits} == {"qa.fresh_docs"}
    assert [f["product"] for f in found.freshness] == ["qa.fresh_docs"]
    assert any(w.startswith("qa.stale_docs is stale") and "left out" in w for w in found.warnings)
    assert passages and {p.product for p in passages} == {"qa.fresh_docs"}


async def test_concurrent_first_reads_share_one_freshness_measurement(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = workspace("sqlite", tmp_path, request, [contract_yaml("qa.good", "good_events")])
    calls: list[str] = []
    async with DataProductsService.open(settings) as service:
        measure = service.measure_as_of

        async def counting(contract):  # type: ignore[no-untyped-def]
            calls.append(contract.name)
            return await measure(contract)

        service.measure_as_of = counting  # type: ignore[method-assign]
        async with anyio.create_task_group() as tasks:
            for _ in range(4):
                tasks.start_soon(service.query_product, READER, "qa.good", Query())
    assert calls == ["qa.good"]
