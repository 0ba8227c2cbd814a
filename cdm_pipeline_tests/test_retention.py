"""Retention (issue 20): old raw copies, old web events and inactive customers without consent leave
the warehouse, counted; the erased stay erased; nothing happens while ``retention:`` is unset.

Works on copies of the session's demo warehouse (1,500 people, partitions 2026-10-01..03, contact
records back to 2021). The purge runs once per module with an as-of date of 2026-11-03, so every
kind has something to remove: partition 2026-10-01 is past ``raw_days: 32``, the web events of
2026-10-01 and -02 are past ``web_events_months: 1`` (those of -02 with their raw copies, which
the raw purge keeps), and customers silent since before 2023-11-03 are past
``inactive_customer_years: 3``. Expected counts come from SQL written here, on the copy
before the purge.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import duckdb
import pytest

from cdm_pipeline.config import load_config
from cdm_pipeline.defs.governance.assets import build_retention_asset
from cdm_pipeline.lib.catalog import raw_table
from cdm_pipeline.lib.extract.load import load_partition
from cdm_pipeline.lib.personal_data.keyed_hash import keyed_hash
from cdm_pipeline.lib.privacy.retention import RetentionError, months_before, purge_expired_data
from cdm_pipeline.lib.reports.governance_report import write_governance_report
from cdm_pipeline.lib.warehouse import open_config_warehouse
from cdm_pipeline.resources import WarehouseResource

KEY = "retention-test-key-0123456789"
AS_OF = dt.date(2026, 11, 3)
RAW_CUTOFF = dt.date(2026, 10, 2)  # 32 days before AS_OF
WEB_CUTOFF = dt.date(2026, 10, 3)  # 1 month before AS_OF
CUSTOMER_CUTOFF = dt.date(2023, 11, 3)  # 3 years before AS_OF
RETENTION = "\nretention:\n  raw_days: 32\n  web_events_months: 1\n  inactive_customer_years: 3\n"

# Each customer's latest sign of life, from the tables directly: the latest change of any of their
# records, and the latest order, e-mail or web event the journey gives them.
LAST_ACTIVITY = """
SELECT m.customer_id, coalesce(m.email_opt_in, false) AS consent, greatest(
    (SELECT max(coalesce(greatest(c.created_at, c.updated_at)::DATE, c._partition_date))
     FROM identity.customer_xref x JOIN staging.contacts c
     ON c.source_name = x.source_name AND c.source_record_id = x.source_record_id
     WHERE x.customer_id = m.customer_id),
    (SELECT max(e.event_date) FROM marts.customer_journey_events e WHERE e.customer_id = m.customer_id)
) AS last_active
FROM marts.customer_360 m
"""


def _tables(conn) -> list[str]:
    return [
        f"{s}.{t}" for s, t in conn.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE NOT temporary ORDER BY 1, 2"
        ).fetchall()
    ]


def _one(conn, sql: str, *params):
    return conn.execute(sql, list(params)).fetchone()[0]


def _counts(conn) -> dict[str, int]:
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in _tables(conn)}


def _copy(demo_project, folder, retention: str = ""):
    root = demo_project.copy_to(folder)
    (root / "cdm.yaml").write_text((root / "cdm.yaml").read_text() + retention)
    return load_config(root / "cdm.yaml")


def _expected(conn) -> dict:
    """What the purge must remove, counted on the warehouse before it (in the purge's order)."""
    raw = {
        t: n for t in _tables(conn) if t.startswith("raw.") or t.endswith("_rejects")
        if (n := conn.execute(f"SELECT count(*) FROM {t} WHERE _partition_date < ?", [RAW_CUTOFF]).fetchone()[0])
    }
    web = {
        "staging.web_events": _one(
            conn, "SELECT count(*) FROM staging.web_events WHERE coalesce(occurred_at::DATE, _partition_date) < ?",
            WEB_CUTOFF),
        # The raw copies the raw purge left (newer partitions) behind events older than the cutoff.
        "raw.web_events": _one(
            conn, """SELECT count(*) FROM raw.web_events r JOIN staging.web_events s USING (_source_file, _source_row,
            _partition_date) WHERE r._partition_date >= ? AND coalesce(s.occurred_at::DATE, s._partition_date) < ?""",
            RAW_CUTOFF, WEB_CUTOFF),
    }
    activity = conn.execute(LAST_ACTIVITY).fetchall()
    return {
        "raw": raw, "web": {t: n for t, n in web.items() if n},
        "erased": sorted(c for c, consent, last in activity if last < CUSTOMER_CUTOFF and not consent),
        "kept_with_consent": sorted(c for c, consent, last in activity if last < CUSTOMER_CUTOFF and consent),
        # Known only from web events that all expire: re-resolution has no record of them left.
        "web_only_expired": sorted(r[0] for r in conn.execute(
            """SELECT customer_id FROM identity.customer_xref x GROUP BY customer_id
            HAVING bool_and(source_name = 'web_events') AND (SELECT max(event_date)
            FROM marts.customer_journey_events e WHERE e.customer_id = x.customer_id) < ?""", [WEB_CUTOFF],
        ).fetchall()),
        "records": conn.execute(
            "SELECT customer_id, source_name, source_record_id FROM identity.customer_xref").fetchall(),
        "counts": _counts(conn),
    }


@pytest.fixture(scope="module")
def purged(demo_project, tmp_path_factory):
    """A demo copy before (``expected``) and after one purge as of 2026-11-03."""
    config = _copy(demo_project, tmp_path_factory.mktemp("retention") / "demo", RETENTION)
    with duckdb.connect(str(config.warehouse), read_only=True) as conn:
        expected = _expected(conn)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CDM_PRIVACY_KEY", KEY)
        with open_config_warehouse(config) as conn:
            purge = purge_expired_data(conn, config, "run-1", as_of=AS_OF)
    return config, expected, purge


def test_cutoffs_count_whole_months_and_years_back_from_the_as_of_date():
    assert months_before(dt.date(2026, 11, 2), 1) == dt.date(2026, 10, 2)
    assert months_before(dt.date(2026, 3, 31), 1) == dt.date(2026, 2, 28)
    assert months_before(dt.date(2028, 2, 29), 12) == dt.date(2027, 2, 28)
    assert months_before(dt.date(2026, 1, 15), 13) == dt.date(2024, 12, 15)


def test_raw_copies_and_rejects_of_partitions_past_raw_days_are_deleted_and_no_others(purged):
    config, expected, purge = purged
    raw = purge.kind("raw")
    assert raw.cutoff == RAW_CUTOFF
    assert {t: n for t, n in raw.rows_deleted.items() if n} == expected["raw"]
    assert sum(expected["raw"].values()) > 1000  # the demo's first day: every source landed rows
    with duckdb.connect(str(config.warehouse), read_only=True) as conn:
        for table in expected["raw"]:
            assert _one(conn, f"SELECT count(*) FROM {table} WHERE _partition_date < ?", RAW_CUTOFF) == 0
        # Newer partitions keep every row but the web events past their own limit.
        kept = conn.execute("SELECT count(*) FROM raw.crm_contacts").fetchone()[0]
        assert kept == expected["counts"]["raw.crm_contacts"] - expected["raw"]["raw.crm_contacts"] - (
            purge.kind("inactive_customers").rows_deleted.get("raw.crm_contacts", 0))
        assert kept > 0
        # Staging keeps the standardised rows of the purged partitions.
        assert _one(conn, "SELECT count(*) FROM staging.orders WHERE _partition_date < ?", RAW_CUTOFF) > 0


def test_web_events_past_web_events_months_leave_staging_and_raw(purged):
    config, expected, purge = purged
    web = purge.kind("web_events")
    assert web.cutoff == WEB_CUTOFF
    assert {t: n for t, n in web.rows_deleted.items() if n} == expected["web"]
    assert expected["web"]["staging.web_events"] > 2000 and expected["web"]["raw.web_events"] > 1000
    with duckdb.connect(str(config.warehouse), read_only=True) as conn:
        assert conn.execute(
            "SELECT count(*) FROM staging.web_events WHERE coalesce(occurred_at::DATE, _partition_date) < ?",
            [WEB_CUTOFF]).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM staging.web_events").fetchone()[0] == (
            expected["counts"]["staging.web_events"] - expected["web"]["staging.web_events"]
            - purge.kind("inactive_customers").rows_deleted.get("staging.web_events", 0))
        # The marts were rebuilt: no journey carries an expired web event.
        assert conn.execute(
            "SELECT count(*) FROM marts.customer_journey_events WHERE event_kind = 'web' AND event_date < ?",
            [WEB_CUTOFF]).fetchone() == (0,)


def test_inactive_customers_without_consent_are_erased_and_suppressed_those_with_consent_stay(purged):
    config, expected, purge = purged
    customers = purge.kind("inactive_customers")
    assert customers.cutoff == CUSTOMER_CUTOFF
    assert expected["erased"] and expected["kept_with_consent"]
    assert customers.customers_erased == len(expected["erased"])
    erased_records = [(s, r) for c, s, r in expected["records"] if c in expected["erased"]]
    with duckdb.connect(str(config.warehouse), read_only=True) as conn:
        published = {r[0] for r in conn.execute("SELECT customer_id FROM marts.customer_360").fetchall()}
        assert not published & set(expected["erased"])
        assert set(expected["kept_with_consent"]) <= published
        remaining = set(conn.execute("SELECT source_name, source_record_id FROM identity.customer_xref").fetchall())
        assert not remaining & set(erased_records)
        suppressed = {r[0] for r in conn.execute(
            "SELECT value_hash FROM governance.suppression_list WHERE kind = 'record' AND request_id LIKE ?",
            [purge.purge_id + "-%"]).fetchall()}
        assert {keyed_hash(f"{s}:{r}", KEY.encode()) for s, r in erased_records} <= suppressed
        # Everyone else is still there (a customer id survives a re-resolution), but for the
        # customers known only from expired web events.
        everyone = {c for c, _, _ in expected["records"]}
        assert expected["web_only_expired"]
        assert published == everyone - set(expected["erased"]) - set(expected["web_only_expired"])


def test_each_purge_is_counted_per_kind_audited_once_and_owes_a_rewrite(purged):
    config, expected, purge = purged
    with duckdb.connect(str(config.warehouse), read_only=True) as conn:
        rows = conn.execute(
            "SELECT kind, cutoff_date, rows_deleted, customers_erased, rows_by_table FROM governance.retention_purges"
            " WHERE purge_id = ? ORDER BY kind", [purge.purge_id]).fetchall()
        audit = conn.execute(
            "SELECT rows_affected, detail FROM governance.audit_log WHERE action = 'retention_purge'").fetchall()
        pending = {r[0] for r in conn.execute("SELECT request_id FROM governance.compaction_pending").fetchall()}
    assert [(k, c, n, e) for k, c, n, e, _ in rows] == [
        ("inactive_customers", CUSTOMER_CUTOFF, purge.kind("inactive_customers").total_rows, len(expected["erased"])),
        ("raw", RAW_CUTOFF, sum(expected["raw"].values()), 0),
        ("web_events", WEB_CUTOFF, sum(expected["web"].values()), 0),
    ]
    assert dict(rows[1][4]) == expected["raw"]
    assert audit == [(purge.total_rows, audit[0][1])]
    assert str(len(expected["erased"])) + " customers erased" in audit[0][1]
    assert "@" not in audit[0][1]
    assert purge.purge_id in pending


def test_the_governance_report_lists_the_purge(purged):
    config, _, purge = purged
    with open_config_warehouse(config) as conn:
        report = write_governance_report(conn, config, "retention-report", outcome="succeeded")
    html = report.run_page.read_text()
    assert 'id="retention-table"' in html
    assert html.count('<tr data-kind="') == 3
    assert f"{purge.kind('raw').total_rows:,}" in html


# Last of the module's purge: it loads partition 2026-10-01 again.
def test_a_re_extract_of_an_old_partition_does_not_bring_an_erased_customer_back(purged):
    config, expected, _ = purged
    source = config.source("crm_contacts")
    erased = {r for c, s, r in expected["records"] if c in expected["erased"] and s == source.name}
    assert erased
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CDM_PRIVACY_KEY", KEY)
        with open_config_warehouse(config) as conn:
            day = dt.date(2026, 10, 1)
            loaded = load_partition(conn, source, config.landing_dir, day, dt.datetime.now(dt.timezone.utc),
                                    config=config)
            ids = {r[0] for r in conn.execute(
                f"SELECT trim({source.id_column}) FROM raw.{source.name} WHERE _partition_date = ?", [day]).fetchall()}
    assert loaded.rows > 0 and ids  # the old files are still there and load again
    assert loaded.suppressed > 0
    assert not ids & erased


def test_without_retention_nothing_is_purged_and_the_asset_does_nothing(demo_project, tmp_path):
    config = _copy(demo_project, tmp_path / "demo")
    with duckdb.connect(str(config.warehouse), read_only=True) as conn:
        before = _counts(conn)
    with open_config_warehouse(config) as conn:
        assert purge_expired_data(conn, config, "run-1", as_of=AS_OF) is None
    result = dg.materialize(
        [build_retention_asset(config)], resources={"warehouse": WarehouseResource(database=str(config.warehouse))}
    )
    assert result.success
    (materialization,) = result.asset_materializations_for_node("governance__retention_purges")
    assert materialization.metadata["retention_configured"].value is False
    with duckdb.connect(str(config.warehouse), read_only=True) as conn:
        assert _counts(conn) == before


def test_the_nightly_asset_purges_audits_and_rewrites_the_file(demo_project, tmp_path):
    # The asset's as-of date is the marts' (2026-10-03): raw_days 1 removes partition 2026-10-01.
    config = _copy(demo_project, tmp_path / "demo", "\nretention:\n  raw_days: 1\n")
    with duckdb.connect(str(config.warehouse), read_only=True) as conn:
        old = conn.execute("SELECT count(*) FROM raw.crm_orders WHERE _partition_date < '2026-10-02'").fetchone()[0]
    result = dg.materialize(
        [build_retention_asset(config)], resources={"warehouse": WarehouseResource(database=str(config.warehouse))}
    )
    assert result.success
    (m,) = result.asset_materializations_for_node("governance__retention_purges")
    assert m.metadata["raw_cutoff"].value == "2026-10-02"
    assert m.metadata["warehouse_rewritten"].value is True
    with duckdb.connect(str(config.warehouse), read_only=True) as conn:
        assert old > 0
        assert _one(conn, "SELECT count(*) FROM raw.crm_orders WHERE _partition_date < '2026-10-02'") == 0
        assert _one(conn, "SELECT count(*) FROM governance.compaction_pending") == 0
        assert _one(conn, "SELECT count(*) FROM governance.audit_log WHERE action = 'retention_purge'") == 1


def test_erasing_inactive_customers_without_the_privacy_key_fails_before_deleting_anything(demo_project, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.delenv("CDM_PRIVACY_KEY", raising=False)
    config = _copy(demo_project, tmp_path / "demo", RETENTION)
    with duckdb.connect(str(config.warehouse), read_only=True) as conn:
        before = _counts(conn)
    with open_config_warehouse(config) as conn, pytest.raises(RetentionError, match="CDM_PRIVACY_KEY"):
        purge_expired_data(conn, config, "run-1", as_of=AS_OF)
    result = dg.materialize(
        [build_retention_asset(config)], resources={"warehouse": WarehouseResource(database=str(config.warehouse))},
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "inactive_customer_years" in failure.step_failure_data.error.message
    with duckdb.connect(str(config.warehouse), read_only=True) as conn:
        assert _counts(conn) == before


def test_a_purged_partition_is_not_restaged_into_nothing(purged):
    """Staging a partition alone after its raw copy was purged would empty it and retire its
    customers' ids: it is refused, the staged rows stay (the refusal rolls back)."""
    from cdm_pipeline.lib.staging.build import StagingError, stage_partition

    config, _, _ = purged
    with open_config_warehouse(config) as conn:
        (day,) = conn.execute("SELECT min(_partition_date) FROM staging.contacts").fetchone()
        assert day < RAW_CUTOFF
        # As the purge left it (another test of this module extracted the day again).
        for source in config.sources_staged_as("contacts"):
            conn.execute(f"DELETE FROM {raw_table(source.name)} WHERE _partition_date = ?", [day])
        before = _one(conn, "SELECT count(*) FROM staging.contacts WHERE _partition_date = ?", day)
        with pytest.raises(StagingError, match="purged by retention.raw_days"):
            stage_partition(conn, config, "contacts", day)
        assert _one(conn, "SELECT count(*) FROM staging.contacts WHERE _partition_date = ?", day) == before > 0
