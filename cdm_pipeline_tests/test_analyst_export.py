"""`cdm export analyst`: the six marts as Parquet with direct identifiers removed or keyed-hashed.

The warehouse is built once with `marts_fixtures` (real identity resolution, real marts) from three
people whose personal values are distinctive, so a leak of any of them into the export is found
both among the decoded column values and in the files' raw bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import duckdb
import pytest

from cdm_pipeline.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from cdm_pipeline.config import load_config
from cdm_pipeline.lib import catalog
from cdm_pipeline.lib.marts.vocabulary import CUSTOMER_360_COLUMNS
from cdm_pipeline.lib.personal_data.keyed_hash import KEY_ENV_VAR, keyed_hash
from cdm_pipeline.lib.privacy import analyst_export
from cdm_pipeline.lib.privacy.analyst_export import (
    COLUMN_RULES,
    MANIFEST,
    ORDER_BY,
    output_columns,
)
from cdm_pipeline.lib.warehouse import connect, table_columns
from cdm_pipeline_tests.marts_fixtures import at, days_before, marts_warehouse

KEY = "analyst-export-test-key-7f3a9c"
HEX64 = re.compile(r"^[0-9a-f]{64}$")

# Three people; every value here is personal and must not reach the export.
AUGUSTA = {
    "first_name": "Augustina", "last_name": "Quillfeather",
    "email": "augustina.quillfeather@fixturemail.co.uk", "phone": "+447700900123",
    "birth_date": dt.date(1987, 3, 14), "address_line1": "14 Wexcombe Crescent",
    "address_line2": "Flat 7b Rosewater House", "city": "Little Snoring", "postcode": "NR21 0AB",
    "region": "Norfolk", "country": "GB", "company": "Quillfeather Analytics Ltd",
}
BARTHOLOMEW = {
    "first_name": "Bartholomew", "last_name": "Xenakis-Oduya", "email": "bart.xenakis@fixturemail.de",
    "phone": "+4915123456789", "birth_date": dt.date(1962, 11, 30), "address_line1": "Kastanienallee 88",
    "address_line2": "Hinterhaus links", "city": "Wolfsburg", "postcode": "38440", "region": "Niedersachsen",
    "country": "DE", "company": "Xenakis Holzbau GmbH",
}
CORDELIA_EMAIL = "cordelia.penhaligon@fixturemail.fr"
CLIENT_A = "GA1.1.918273645.1790000001"
CLIENT_B = "GA1.1.564738291.1790000002"
ORDER_IDS = ("ORD-550101", "ORD-550102", "ORD-550201")
PERSONAL_VALUES = [
    *(str(v) for p in (AUGUSTA, BARTHOLOMEW) for k, v in p.items() if k not in ("region", "country")),
    "1987-03-14", "1962-11-30", "447700900123", "07700900123", "4915123456789", "015123456789",
    CORDELIA_EMAIL, "Cordelia", "Penhaligon", CLIENT_A, CLIENT_B, *ORDER_IDS,
    "https://shop.example.com/",
]

MART_TABLES = tuple(table.name for table in catalog.MART_TABLES)


def _build(folder: Path) -> None:
    w = marts_warehouse(folder)
    created = at(days_before(400))
    w.contact("c101", email_opt_in=True, created_at=created, updated_at=created, day=days_before(60), **AUGUSTA)
    w.contact("s101", source="email_subscribers", email=AUGUSTA["email"], linked_id="c101", day=days_before(60))
    w.contact("c202", email_opt_in=False, created_at=created, updated_at=created, day=days_before(300), **BARTHOLOMEW)
    w.contact("s303", source="email_subscribers", email=CORDELIA_EMAIL, first_name="Cordelia",
              last_name="Penhaligon", email_opt_in=True, day=days_before(20))
    w.order(ORDER_IDS[0], "c101", at(days_before(60)), 120.0)
    w.order(ORDER_IDS[1], "c101", at(days_before(5), 10, 20), 80.5)
    w.order(ORDER_IDS[2], "c202", at(days_before(200)), 640.0, currency="EUR")
    w.web_event(CLIENT_A, at(days_before(5), 10), user_id="c101", utm=("google", "cpc", "brand"))
    w.web_event(CLIENT_A, at(days_before(5), 10, 10), "add_to_cart", user_id="c101")
    w.web_event(CLIENT_A, at(days_before(5), 10, 20), "purchase", user_id="c101", transaction_id=ORDER_IDS[1])
    w.web_event(CLIENT_B, at(days_before(40), 9))  # anonymous, stitched by the login below
    w.web_event(CLIENT_B, at(days_before(3), 9), "login", user_id="c202")
    w.web_event(CLIENT_A, at(days_before(0), 9), user_id="c101")  # lands on the as-of day, 2026-10-31
    for event, day in (("sent", 12), ("open", 11), ("click", 11)):
        w.email_event("s101", event, at(days_before(day), 8))
        w.email_event("s303", event, at(days_before(day), 8))
    w.build()
    w.conn.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("analyst_marts")
    _build(folder)
    return folder


@pytest.fixture
def project(built, tmp_path, monkeypatch):
    """A private copy of the built warehouse and its config; the privacy key set."""
    folder = tmp_path / "project"
    shutil.copytree(built, folder)
    monkeypatch.setenv(KEY_ENV_VAR, KEY)
    return load_config(folder / "cdm.yaml")


def _export(project, out: Path, capsys) -> tuple[int, str, str]:
    status = main(["export", "analyst", "--config", str(project.config_path), "--out", str(out)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _mart_counts(project) -> dict[str, int]:
    conn = connect(project.warehouse, read_only=True)
    try:
        return {t: conn.execute(f"SELECT count(*) FROM marts.{t}").fetchone()[0] for t in MART_TABLES}
    finally:
        conn.close()


def _customer_ids(project) -> dict[str, str]:
    """Original customer id by the fixture's CRM / ESP record id."""
    conn = connect(project.warehouse, read_only=True)
    try:
        return dict(conn.execute("SELECT source_record_id, customer_id FROM identity.customer_xref").fetchall())
    finally:
        conn.close()


def _read(out: Path, table: str, sql: str = "SELECT * FROM t") -> list[tuple]:
    conn = duckdb.connect()
    conn.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{out / (table + '.parquet')}')")
    return conn.execute(sql).fetchall()


def _hidden_leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


# --- What is written ------------------------------------------------------------------------


def test_writes_every_mart_with_its_row_count_and_prints_one_line_per_table(project, tmp_path, capsys):
    out = tmp_path / "analyst"
    status, stdout, stderr = _export(project, out, capsys)
    assert status == EXIT_OK, stderr
    counts = _mart_counts(project)
    assert all(counts[t] > 0 for t in MART_TABLES)
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST] + [f"{t}.parquet" for t in MART_TABLES])
    for table in MART_TABLES:
        assert _read(out, table, "SELECT count(*) FROM t") == [(counts[table],)], table

    lines = stdout.splitlines()
    assert lines[0] == f"analyst export of the marts as of 2026-10-31 -> {out}"
    for table, line in zip(MART_TABLES, lines[1:7], strict=True):
        assert line.split() == [f"marts.{table}", f"{counts[table]:,}", "rows", "->", f"{table}.parquet"]
    assert lines[7] == "  11 columns dropped, 12 hashed with the privacy key, 2 transformed: see manifest.json"
    assert len(lines) == 8 and stderr == ""
    assert not any(value.lower() in stdout.lower() for value in PERSONAL_VALUES)
    assert _hidden_leftovers(out) == []


def test_manifest_lists_tables_counts_as_of_date_and_what_was_removed_or_hashed(project, tmp_path, capsys):
    out = tmp_path / "analyst"
    assert _export(project, out, capsys)[0] == EXIT_OK
    manifest = json.loads((out / MANIFEST).read_text())
    counts = _mart_counts(project)
    assert manifest["kind"] == "cdm_analyst_export" and manifest["as_of_date"] == "2026-10-31"
    assert [(t["table"], t["file"], t["rows"]) for t in manifest["tables"]] == [
        (f"marts.{t}", f"{t}.parquet", counts[t]) for t in MART_TABLES
    ]
    c360 = next(t for t in manifest["tables"] if t["table"] == "marts.customer_360")
    assert set(c360["dropped"]) == {
        "first_name", "last_name", "email", "phone", "address_line1", "address_line2", "city", "postcode", "company",
    }
    assert set(c360["hashed"]) == {"customer_id"} and set(c360["transformed"]) == {"birth_date"}
    events = next(t for t in manifest["tables"] if t["table"] == "marts.customer_journey_events")
    assert set(events["dropped"]) == {"page_url", "source_record_id"}
    assert set(events["hashed"]) == {"customer_id", "event_id", "session_id", "order_id", "browser_key"}
    for table in manifest["tables"]:
        name = table["table"].removeprefix("marts.")
        assert table["columns"] == output_columns(name)
        assert _read(out, name, "SELECT column_name FROM (DESCRIBE t)") == [(c,) for c in table["columns"]]
    assert KEY not in (out / MANIFEST).read_text()


def test_no_personal_value_appears_in_any_column_or_in_the_files_bytes(project, tmp_path, capsys):
    out = tmp_path / "analyst"
    assert _export(project, out, capsys)[0] == EXIT_OK
    originals = set(_customer_ids(project).values())
    assert originals  # CUST-... ids: sequential, so they must not survive either
    wanted = [v.lower() for v in PERSONAL_VALUES + sorted(originals)]

    conn = duckdb.connect()
    for table in MART_TABLES:
        path = out / f"{table}.parquet"
        columns = [r[0] for r in conn.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()]
        casts = ", ".join(f'lower(CAST("{c}" AS VARCHAR))' for c in columns)
        text = "\n".join(
            "\t".join(value or "" for value in row)
            for row in conn.execute(f"SELECT {casts} FROM read_parquet('{path}')").fetchall()
        )
        found = [value for value in wanted if value in text]
        assert found == [], (table, found)
    def in_bytes(path: Path) -> list[str]:
        raw = path.read_bytes().lower()
        return [value for value in wanted if value.encode() in raw]

    # Pages are compressed, but footers (min / max statistics, schema) are not: a column kept by
    # mistake shows there, as this control file written the same way proves.
    control = tmp_path / "control.parquet"
    conn.execute(
        "COPY (SELECT unnest($emails) AS email) TO $path (FORMAT parquet, COMPRESSION zstd)",
        {"emails": [AUGUSTA["email"], BARTHOLOMEW["email"], CORDELIA_EMAIL], "path": str(control)},
    )
    assert in_bytes(control)
    for path in out.iterdir():
        assert in_bytes(path) == [], path.name


def test_customer_ids_are_keyed_hashes_that_join_across_every_table(project, tmp_path, capsys):
    out = tmp_path / "analyst"
    assert _export(project, out, capsys)[0] == EXIT_OK
    ids = _customer_ids(project)
    augusta, bart = ids["c101"], ids["c202"]
    key = KEY.encode()
    exported = {r[0] for r in _read(out, "customer_360", "SELECT customer_id FROM t")}
    assert exported == {keyed_hash(c, key) for c in set(ids.values())}
    assert all(HEX64.match(h) for h in exported)

    conn = connect(project.warehouse, read_only=True)
    mart_events = dict(conn.execute(
        "SELECT customer_id, count(*) FROM marts.customer_journey_events GROUP BY 1").fetchall())
    conn.close()
    assert set(mart_events) >= {augusta, bart}
    # The same customer joins customer_360 and the journey events in the export, one-to-one.
    db = duckdb.connect()
    for table in MART_TABLES:
        db.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{out / (table + '.parquet')}')")
    joined = dict(db.execute(
        "SELECT c.customer_id, count(*) FROM customer_journey_events e"
        " JOIN customer_360 c USING (customer_id) GROUP BY 1").fetchall())
    assert joined == {keyed_hash(c, key): n for c, n in mart_events.items()}
    for table in ("customer_journeys", "order_attribution", "customer_segments", "segment_membership_history"):
        orphans = db.execute(
            f"SELECT count(*) FROM {table} WHERE customer_id NOT IN (SELECT customer_id FROM customer_360)"
        ).fetchone()
        assert orphans == (0,), table
    # Order and event ids are hashed alike too: attribution joins its orders and touches.
    assert db.execute(
        """SELECT count(*) FROM order_attribution a WHERE a.order_id NOT IN
        (SELECT order_id FROM customer_journey_events WHERE event_kind = 'order')"""
    ).fetchone() == (0,)
    assert db.execute(
        """SELECT count(*), count(e.event_id) FROM order_attribution a
        LEFT JOIN customer_journey_events e ON e.event_id = a.touch_event_id
        WHERE a.touch_event_id IS NOT NULL"""
    ).fetchone()[0] > 0
    assert db.execute(
        """SELECT count(*) FROM order_attribution a WHERE a.touch_event_id IS NOT NULL
        AND a.touch_event_id NOT IN (SELECT event_id FROM customer_journey_events)"""
    ).fetchone() == (0,)
    assert db.execute(
        "SELECT DISTINCT order_id FROM customer_journey_events WHERE event_kind = 'order' ORDER BY 1"
    ).fetchall() == sorted((keyed_hash(o, key),) for o in ORDER_IDS)
    hashed = db.execute(
        """SELECT DISTINCT browser_key, split_part(session_id, '#', 1) FROM customer_journey_events
        WHERE event_kind = 'web'"""
    ).fetchall()
    assert {b for b, _ in hashed} == {keyed_hash(f"client:{c}", key) for c in (CLIENT_A, CLIENT_B)}
    assert all(HEX64.match(s) for _, s in hashed)  # the session id is hashed whole, browser and all


def test_birth_date_becomes_birth_year(project, tmp_path, capsys):
    out = tmp_path / "analyst"
    assert _export(project, out, capsys)[0] == EXIT_OK
    ids, key = _customer_ids(project), KEY.encode()
    years = dict(_read(out, "customer_360", "SELECT customer_id, birth_year FROM t"))
    assert years[keyed_hash(ids["c101"], key)] == 1987
    assert years[keyed_hash(ids["c202"], key)] == 1962
    assert years[keyed_hash(ids["s303"], key)] is None
    types = dict(_read(out, "customer_360", "SELECT column_name, column_type FROM (DESCRIBE t)"))
    assert types["birth_year"] == "INTEGER" and "birth_date" not in types
    assert {"region", "country"} <= set(types)
    assert dict(_read(out, "customer_360", "SELECT customer_id, country FROM t"))[
        keyed_hash(ids["c202"], key)] == "DE"


def test_adds_one_audit_row_with_the_total_and_the_table_counts(project, tmp_path, capsys):
    out = tmp_path / "analyst"
    assert _export(project, out, capsys)[0] == EXIT_OK
    counts = _mart_counts(project)
    conn = connect(project.warehouse, read_only=True)
    rows = conn.execute(
        "SELECT action, request_id, rows_affected, detail FROM governance.audit_log WHERE action = 'analyst_export'"
    ).fetchall()
    conn.close()
    assert len(rows) == 1
    action, request_id, affected, detail = rows[0]
    assert request_id is None and affected == sum(counts.values())
    assert str(out) in detail and "as of 2026-10-31" in detail
    for table in MART_TABLES:
        assert f"{table} {counts[table]}" in detail
    assert not any(value.lower() in detail.lower() for value in PERSONAL_VALUES)


# --- Refusals and failures ----------------------------------------------------------------------


def test_a_missing_or_short_key_is_a_usage_error_and_writes_nothing(project, tmp_path, capsys, monkeypatch):
    out = tmp_path / "analyst"
    monkeypatch.delenv(KEY_ENV_VAR)
    status, stdout, stderr = _export(project, out, capsys)
    assert status == EXIT_USAGE and stdout == ""
    assert stderr.startswith(f"cdm: error: {KEY_ENV_VAR} is not set") and len(stderr.splitlines()) == 1
    monkeypatch.setenv(KEY_ENV_VAR, "short")
    status, _, stderr = _export(project, out, capsys)
    assert status == EXIT_USAGE and stderr.startswith(f"cdm: error: {KEY_ENV_VAR} is too short")
    assert not out.exists() and _hidden_leftovers(out) == []


def test_refuses_a_folder_that_is_not_empty_and_not_a_previous_export(project, tmp_path, capsys):
    out = tmp_path / "analyst"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    status, stdout, stderr = _export(project, out, capsys)
    assert status == EXIT_USAGE and stdout == ""
    assert stderr == (
        f"cdm: error: {out} is not empty and is not a previous analyst export (no manifest.json written"
        " by `cdm export analyst`): choose a new or empty folder\n"
    )
    assert [p.name for p in out.iterdir()] == ["notes.txt"]

    # A previous export with someone's file added to it is refused too: replacing would delete it.
    second = tmp_path / "second"
    assert _export(project, second, capsys)[0] == EXIT_OK
    (second / "analysis.ipynb").write_text("{}")
    status, _, stderr = _export(project, second, capsys)
    assert status == EXIT_USAGE and "also holds other files (analysis.ipynb)" in stderr
    assert (second / "analysis.ipynb").exists()

    a_file = tmp_path / "file.parquet"
    a_file.write_text("x")
    status, _, stderr = _export(project, a_file, capsys)
    assert status == EXIT_USAGE and stderr == f"cdm: error: {a_file} is a file, not a folder\n"


def test_an_empty_folder_is_accepted_and_a_previous_export_is_replaced(project, tmp_path, capsys):
    out = tmp_path / "analyst"
    out.mkdir()
    assert _export(project, out, capsys)[0] == EXIT_OK
    first = json.loads((out / MANIFEST).read_text())
    status, _, stderr = _export(project, out, capsys)
    assert status == EXIT_OK, stderr
    again = json.loads((out / MANIFEST).read_text())
    assert again["tables"] == first["tables"] and again["key_fingerprint"] == first["key_fingerprint"]
    assert _hidden_leftovers(out) == []


def test_a_failed_export_leaves_the_previous_one_whole_and_no_audit_row(project, tmp_path, capsys, monkeypatch):
    out = tmp_path / "analyst"
    assert _export(project, out, capsys)[0] == EXIT_OK
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_copy = analyst_export._copy_table

    def failing_copy(conn, table, path, key):
        if table == "customer_360":  # the fourth of six: three files already written
            raise duckdb.IOException("disk full writing 'augustina.quillfeather@fixturemail.co.uk'")
        return real_copy(conn, table, path, key)

    monkeypatch.setattr(analyst_export, "_copy_table", failing_copy)
    status, stdout, stderr = _export(project, out, capsys)
    assert status == EXIT_FAILED and stdout == ""
    assert stderr == "cdm export: IOException: disk full writing '…'\n"  # the quoted value masked
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _hidden_leftovers(out) == []
    conn = connect(project.warehouse, read_only=True)
    assert conn.execute("SELECT count(*) FROM governance.audit_log WHERE action = 'analyst_export'").fetchone() == (1,)
    conn.close()

    fresh = tmp_path / "fresh"
    assert _export(project, fresh, capsys)[0] == EXIT_FAILED
    assert not fresh.exists() and _hidden_leftovers(fresh) == []


def test_a_mart_column_without_a_rule_stops_the_export_before_anything_is_written(project, tmp_path, capsys):
    conn = connect(project.warehouse)
    conn.execute("ALTER TABLE marts.customer_360 ADD COLUMN nickname VARCHAR DEFAULT 'Gussie'")
    conn.close()
    out = tmp_path / "analyst"
    status, stdout, stderr = _export(project, out, capsys)
    assert status == EXIT_FAILED and stdout == ""
    assert "customer_360.nickname has no rule" in stderr and len(stderr.splitlines()) == 1
    assert not out.exists() and _hidden_leftovers(out) == []


def test_missing_marts_or_warehouse_are_usage_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(KEY_ENV_VAR, KEY)
    (tmp_path / "unbuilt").mkdir()
    w = marts_warehouse(tmp_path / "unbuilt")  # staging only: the pipeline has not built the marts
    w.conn.close()
    status, _, stderr = _export(w.config, tmp_path / "out", capsys)
    assert status == EXIT_USAGE
    assert stderr == "cdm: error: marts.customer_journey_events does not exist: run the pipeline first\n"
    w.config.warehouse.unlink()
    status, _, stderr = _export(w.config, tmp_path / "out", capsys)
    assert status == EXIT_USAGE and stderr.startswith("cdm: error: no warehouse at ")
    assert not (tmp_path / "out").exists()


# --- The rules ----------------------------------------------------------------------------------

# Column names that are personal or identifying whatever table they turn up in.
NEVER_KEPT = {
    "first_name", "last_name", "email", "phone", "birth_date", "address_line1", "address_line2",
    "city", "postcode", "company", "page_url", "page_referrer", "url", "client_id", "user_id",
}


def test_every_column_of_every_mart_has_an_explicit_decision(project):
    """A column added to a mart (or removed from one) fails here until someone decides on it."""
    conn = connect(project.warehouse, read_only=True)
    try:
        published = {
            r[0] for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'marts'").fetchall()
        }
        assert set(COLUMN_RULES) == set(MART_TABLES) == published
        for table in MART_TABLES:
            assert list(COLUMN_RULES[table]) == table_columns(conn, "marts", table), table
    finally:
        conn.close()
    assert list(COLUMN_RULES["customer_360"]) == list(CUSTOMER_360_COLUMNS)

    for table, rules in COLUMN_RULES.items():
        for column, rule in rules.items():
            where = f"{table}.{column}"
            assert rule.action in ("keep", "drop", "hash", "transform"), where
            if rule.action != "keep":
                assert rule.reason, where
            if rule.action == "transform":
                assert rule.sql and '"probe"' in rule.sql('"probe"') and rule.output, where
            if column in NEVER_KEPT:
                assert rule.action in ("drop", "transform"), where
            if column.endswith(("_id", "_key")):  # ids of people, browsers, events and orders
                assert rule.action in ("hash", "drop"), where
        outputs = output_columns(table)
        assert len(outputs) == len(set(outputs)), table
        assert set(ORDER_BY[table]) <= set(outputs), table
    assert COLUMN_RULES["customer_360"]["birth_date"].output == "birth_year"
    assert {c for c, r in COLUMN_RULES["customer_360"].items() if r.action == "keep"} >= {"region", "country"}
