"""Audience exports on a hand-made warehouse: who is exported, the hashes, consent, names, audit.

The two marts tables are created here with a handful of customers whose right answers are known,
so every assertion compares exact values: the set of hashes in the file, the counts, the audit
row's text and the CLI's line.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
from pathlib import Path

import duckdb
import pytest
import yaml

from cdm_pipeline.cli import EXIT_OK, EXIT_USAGE, main
from cdm_pipeline.config import CdmConfig, ConfigError, SegmentDefinition, load_config
from cdm_pipeline.lib.exports import audiences
from cdm_pipeline.lib.exports.audiences import (
    MartsNotBuilt,
    SegmentRef,
    UnknownSegment,
    exports_dir,
    resolve_segment,
    write_audience_export,
    write_nightly_exports,
)
from cdm_pipeline.lib.warehouse import connect

AS_OF = dt.date(2026, 10, 14)

# customer_id, email, phone, email_opt_in, do_not_sell, rfm_segment, lifecycle_stage,
# engagement_tier, custom_segments
CUSTOMERS = [
    ("c01", "jane@example.org", "+447700900123", True, False, "Champions", "active", "engaged", ["vip"]),
    ("c02", "bob@example.com", None, True, None, "Champions", "active", "engaged", ["vip"]),
    ("c03", None, "+447700900456", True, False, "Champions", "active", "highly_engaged", []),
    ("c04", "optout@example.net", "+447700900789", False, False, "Champions", "active", "engaged", []),
    ("c05", "unknown@example.net", None, None, False, "Champions", "new", "engaged", ["vip"]),
    ("c06", "dns@example.net", "+447700900321", True, True, "Champions", "active", "engaged", ["vip"]),
    ("c07", None, None, True, False, "Champions", "active", "inactive", []),
    ("c08", "loyal@example.com", "+447700900999", True, False, "Loyal", "new", "engaged", []),
    ("c09", "newbie@example.com", None, True, False, "New", "new", "disengaged", []),
]
RAW_VALUES = [value for row in CUSTOMERS for value in row[1:3] if value]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- fixtures -----------------------------------------------------------------------------------


def create_marts(path: Path, customers=CUSTOMERS) -> None:
    conn = connect(path)
    try:
        conn.execute("CREATE SCHEMA IF NOT EXISTS marts")
        conn.execute(
            """CREATE TABLE marts.customer_360 (customer_id VARCHAR, first_name VARCHAR,
                email VARCHAR, phone VARCHAR, email_opt_in BOOLEAN, do_not_sell BOOLEAN,
                order_count BIGINT, as_of_date DATE)"""
        )
        conn.execute(
            """CREATE TABLE marts.customer_segments (customer_id VARCHAR, as_of_date DATE,
                recency_days INTEGER, rfm_segment VARCHAR, lifecycle_stage VARCHAR,
                engagement_tier VARCHAR, custom_segments VARCHAR[])"""
        )
        for cid, email, phone, opt_in, dns, rfm, stage, tier, custom in customers:
            conn.execute(
                "INSERT INTO marts.customer_360 VALUES (?, 'Name', ?, ?, ?, ?, 1, ?)",
                [cid, email, phone, opt_in, dns, AS_OF],
            )
            conn.execute(
                "INSERT INTO marts.customer_segments VALUES (?, ?, 10, ?, ?, ?, ?)",
                [cid, AS_OF, rfm, stage, tier, custom],
            )
    finally:
        conn.close()


def write_config(folder: Path, **exports: object) -> CdmConfig:
    """``cdm.yaml`` beside the warehouse: one source, two custom segments, an exports section."""
    document = {
        "warehouse": "warehouse.duckdb",
        "landing_dir": "landing",
        "sources": [{
            "name": "crm_contacts", "system": "crm", "kind": "contacts", "format": "csv",
            "path": "crm/{date}/*.csv", "id_column": "contact_id",
            "columns": {"email": "email", "phone": "phone"},
        }],
        "segments": [
            {"name": "vip", "description": "big spenders", "where": "revenue > 1000"},
            {"name": "regulars", "where": "order_count > 10"},
        ],
        "exports": {"dir": "exports", **exports},
    }
    path = folder / "cdm.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return load_config(path)


@pytest.fixture
def project(tmp_path) -> CdmConfig:
    config = write_config(tmp_path)
    create_marts(config.warehouse)
    return config


@pytest.fixture
def conn(project):
    conn = connect(project.warehouse)
    yield conn
    conn.close()


def read_rows(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        assert next(reader) == ["Email", "Phone"]
        return [tuple(row) for row in reader]


def audit_rows(conn) -> list[tuple]:
    return conn.execute(
        "SELECT action, request_id, rows_affected, detail FROM governance.audit_log ORDER BY occurred_at"
    ).fetchall()


CHAMPIONS = SegmentRef("rfm", "Champions", "rfm_champions")
# Consenting Champions: c01 (both), c02 (email only), c03 (phone only).
CONSENTING_CHAMPIONS = {
    (sha("jane@example.org"), sha("+447700900123")),
    (sha("bob@example.com"), ""),
    ("", sha("+447700900456")),
}


# --- the file -----------------------------------------------------------------------------------


def test_exports_exactly_the_consenting_members_hashed(project, conn):
    export = write_audience_export(conn, project, CHAMPIONS)

    assert export.path == project.config_path.parent / "exports" / "rfm_champions" / "2026-10-14.csv"
    assert export.as_of_date == AS_OF
    rows = read_rows(export.path)
    assert set(rows) == CONSENTING_CHAMPIONS
    assert len(rows) == 3
    # c04 opted out, c05 unknown consent, c06 do-not-sell, c07 no identifier, c08 not a member.
    assert (export.members, export.exported, export.excluded_no_consent, export.excluded_no_identifier) == (7, 3, 3, 1)


def test_hashes_are_lower_case_hex_of_normalised_values(project, conn):
    rows = read_rows(write_audience_export(conn, project, CHAMPIONS).path)
    for email, phone in rows:
        for value in (email, phone):
            assert value == "" or (len(value) == 64 and value == value.lower() and int(value, 16) >= 0)
    # The phone is hashed with its leading '+', as E.164.
    assert sha("447700900123") not in {phone for _, phone in rows}


def test_without_email_opt_in_requirement_only_do_not_sell_is_excluded(tmp_path):
    config = write_config(tmp_path, require_email_opt_in=False)
    create_marts(config.warehouse)
    conn = connect(config.warehouse)
    try:
        export = write_audience_export(conn, config, CHAMPIONS)
    finally:
        conn.close()
    assert set(read_rows(export.path)) == CONSENTING_CHAMPIONS | {
        (sha("optout@example.net"), sha("+447700900789")),
        (sha("unknown@example.net"), ""),
    }
    assert sha("dns@example.net") not in export.path.read_text()
    assert (export.members, export.exported, export.excluded_no_consent, export.excluded_no_identifier) == (7, 5, 1, 1)


def test_custom_and_other_built_in_segments(project, conn):
    vip = write_audience_export(conn, project, resolve_segment(project, "vip"))
    assert vip.path.parent.name == "vip"
    assert set(read_rows(vip.path)) == {(sha("jane@example.org"), sha("+447700900123")), (sha("bob@example.com"), "")}
    assert (vip.members, vip.exported, vip.excluded_no_consent) == (4, 2, 2)

    new = write_audience_export(conn, project, resolve_segment(project, "lifecycle:new"))
    assert new.path.parent.name == "lifecycle_new"
    assert set(read_rows(new.path)) == {
        (sha("loyal@example.com"), sha("+447700900999")),
        (sha("newbie@example.com"), ""),
    }
    assert (new.members, new.excluded_no_consent) == (3, 1)


def test_rerun_gives_byte_identical_file_whatever_the_row_order(project, conn, tmp_path):
    first = write_audience_export(conn, project, CHAMPIONS).path.read_bytes()
    second = write_audience_export(conn, project, CHAMPIONS).path.read_bytes()
    assert first == second

    other = tmp_path / "reversed"
    other.mkdir()
    config = write_config(other)
    create_marts(config.warehouse, customers=list(reversed(CUSTOMERS)))
    conn2 = connect(config.warehouse)
    try:
        assert write_audience_export(conn2, config, CHAMPIONS).path.read_bytes() == first
    finally:
        conn2.close()
    assert first.startswith(b"Email,Phone\n")


def test_file_holds_no_raw_values(project, conn):
    text = write_audience_export(conn, project, CHAMPIONS).path.read_text()
    for value in RAW_VALUES:
        assert value not in text


def test_out_overrides_the_exports_folder(project, conn, tmp_path):
    out = tmp_path / "elsewhere" / "champions.csv"
    export = write_audience_export(conn, project, CHAMPIONS, out=out)
    assert export.path == out
    assert set(read_rows(out)) == CONSENTING_CHAMPIONS
    assert not (exports_dir(project) / "rfm_champions").exists()
    assert audit_rows(conn)[-1][3].startswith("segment rfm:Champions -> champions.csv;")


# --- audit --------------------------------------------------------------------------------------


def test_each_export_appends_one_audit_row_without_values(project, conn):
    write_audience_export(conn, project, CHAMPIONS)
    assert audit_rows(conn) == [(
        "audience_export", None, 3,
        "segment rfm:Champions -> rfm_champions/2026-10-14.csv; 7 members, 3 exported,"
        " 3 without consent, 1 without email or phone",
    )]
    write_audience_export(conn, project, CHAMPIONS)
    assert len(audit_rows(conn)) == 2
    occurred = conn.execute("SELECT occurred_at FROM governance.audit_log").fetchall()
    assert all(row[0] is not None for row in occurred)


def test_nightly_exports_write_every_listed_segment(tmp_path):
    config = write_config(tmp_path, segments=["Champions", "vip", "lifecycle:new", "engaged"])
    create_marts(config.warehouse)
    conn = connect(config.warehouse)
    try:
        exports = write_nightly_exports(conn, config)
        details = [row[3] for row in audit_rows(conn)]
    finally:
        conn.close()
    assert [e.segment.folder for e in exports] == ["rfm_champions", "vip", "lifecycle_new", "engagement_engaged"]
    assert all(e.path == tmp_path / "exports" / e.segment.folder / "2026-10-14.csv" for e in exports)
    assert all(e.path.exists() for e in exports)
    assert [d.split(" ->")[0] for d in details] == [
        "segment rfm:Champions", "segment custom:vip", "segment lifecycle:new", "segment engagement:engaged",
    ]


def test_config_rejects_unknown_export_segments_with_the_resolver_message(tmp_path):
    with pytest.raises(ConfigError) as raised:
        write_config(tmp_path, segments=["Champions", "new"])
    assert raised.value.key == "exports.segments[1]"
    assert raised.value.message == "segment 'new' is ambiguous: say rfm:new or lifecycle:new"


def test_nightly_exports_check_every_name_before_writing(tmp_path):
    config = write_config(tmp_path)
    # The loader rejects unknown names; a config built in code is checked before any file changes.
    exports = config.exports.model_copy(update={"segments": ["Champions", "no_such_segment"]})
    config = config.model_copy(update={"exports": exports})
    create_marts(config.warehouse)
    conn = connect(config.warehouse)
    try:
        with pytest.raises(UnknownSegment):
            write_nightly_exports(conn, config)
    finally:
        conn.close()
    assert not (tmp_path / "exports").exists()


# --- missing marts ------------------------------------------------------------------------------


def test_missing_marts_is_an_error(tmp_path):
    config = write_config(tmp_path)
    conn = connect(config.warehouse)
    try:
        with pytest.raises(MartsNotBuilt, match=r"^marts.customer_segments does not exist: run the pipeline first$"):
            write_audience_export(conn, config, CHAMPIONS)
    finally:
        conn.close()


def test_empty_marts_is_an_error(tmp_path):
    config = write_config(tmp_path)
    create_marts(config.warehouse, customers=[])
    conn = connect(config.warehouse)
    try:
        with pytest.raises(MartsNotBuilt, match="marts.customer_segments is empty"):
            write_audience_export(conn, config, CHAMPIONS)
        # The failed export left the connection usable and no transaction open.
        conn.execute("BEGIN")
        conn.execute("COMMIT")
    finally:
        conn.close()
    assert not (tmp_path / "exports").exists()


# --- atomic writes ------------------------------------------------------------------------------


def test_export_folder_keeps_no_temporary_file(project, conn):
    export = write_audience_export(conn, project, CHAMPIONS)
    assert sorted(p.name for p in export.path.parent.iterdir()) == ["2026-10-14.csv"]


def test_failed_export_leaves_the_existing_file_and_audit_unchanged(project, conn, monkeypatch):
    export = write_audience_export(conn, project, CHAMPIONS)
    before = export.path.read_bytes()
    # Tomorrow's marts would change the file; the rename fails after the temporary file is written.
    conn.execute("UPDATE marts.customer_360 SET email_opt_in = TRUE")

    def failing_replace(src, dst):
        assert Path(src).exists() and Path(src).parent == Path(dst).parent
        raise OSError("disk full")

    monkeypatch.setattr(audiences.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_audience_export(conn, project, CHAMPIONS)
    monkeypatch.undo()

    assert export.path.read_bytes() == before
    assert sorted(p.name for p in export.path.parent.iterdir()) == ["2026-10-14.csv"]
    assert len(audit_rows(conn)) == 1  # the failed export's audit row was rolled back


def test_failed_copy_leaves_no_file_and_no_audit(project, conn, monkeypatch):
    def failing_copy(*args, **kwargs):
        raise duckdb.IOException("cannot write")

    monkeypatch.setattr(audiences, "_copy_hashed", failing_copy)
    with pytest.raises(duckdb.IOException):
        write_audience_export(conn, project, CHAMPIONS)
    assert list((exports_dir(project) / "rfm_champions").iterdir()) == []
    assert conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'audit_log'"
    ).fetchone()[0] == 0


# --- segment names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Champions", ("rfm", "Champions", "rfm_champions")),
        ("cant_lose_them", ("rfm", "Can't Lose Them", "rfm_cant_lose_them")),
        ("Can't Lose Them", ("rfm", "Can't Lose Them", "rfm_cant_lose_them")),
        ("CAN'T LOSE THEM", ("rfm", "Can't Lose Them", "rfm_cant_lose_them")),
        ("rfm:at_risk", ("rfm", "At Risk", "rfm_at_risk")),
        ("rfm:At Risk", ("rfm", "At Risk", "rfm_at_risk")),
        ("lifecycle:at_risk", ("lifecycle", "at_risk", "lifecycle_at_risk")),
        ("Lifecycle:New", ("lifecycle", "new", "lifecycle_new")),
        ("rfm:new", ("rfm", "New", "rfm_new")),
        ("engagement:engaged", ("engagement", "engaged", "engagement_engaged")),
        ("engaged", ("engagement", "engaged", "engagement_engaged")),
        ("highly engaged", ("engagement", "highly_engaged", "engagement_highly_engaged")),
        ("rfm_champions", ("rfm", "Champions", "rfm_champions")),
        ("lifecycle_new", ("lifecycle", "new", "lifecycle_new")),
        ("rfm_cant_lose_them", ("rfm", "Can't Lose Them", "rfm_cant_lose_them")),
        ("vip", ("custom", "vip", "vip")),
        ("custom:vip", ("custom", "vip", "vip")),
        ("regulars", ("custom", "regulars", "regulars")),
        ("  churned  ", ("lifecycle", "churned", "lifecycle_churned")),
    ],
)
def test_resolve_segment(project, name, expected):
    assert resolve_segment(project, name) == SegmentRef(*expected)


def test_built_in_names_resolve_without_custom_segments(tmp_path):
    document = yaml.safe_load((write_config(tmp_path).config_path).read_text())
    document.pop("segments")
    (tmp_path / "cdm.yaml").write_text(yaml.safe_dump(document))
    config = load_config(tmp_path / "cdm.yaml")
    assert resolve_segment(config, "champions") == CHAMPIONS


@pytest.mark.parametrize(
    ("name", "choices"),
    [
        ("new", "rfm:new or lifecycle:new"),
        ("New", "rfm:new or lifecycle:new"),
        ("at_risk", "rfm:at_risk or lifecycle:at_risk"),
        ("At Risk", "rfm:at_risk or lifecycle:at_risk"),
    ],
)
def test_ambiguous_names_list_the_qualified_choices(project, name, choices):
    with pytest.raises(UnknownSegment) as raised:
        resolve_segment(project, name)
    assert str(raised.value) == f"segment {name!r} is ambiguous: say {choices}"
    assert isinstance(raised.value, ValueError)


def test_custom_segment_named_like_a_built_in_one_is_ambiguous(project):
    # The loader refuses such a name; a config built in code still gets a clear answer.
    config = project.model_copy(
        update={"segments": [*project.segments, SegmentDefinition(name="champions", where="revenue > 1")]}
    )
    with pytest.raises(
        UnknownSegment, match=r"^segment 'Champions' is ambiguous: say custom:champions or rfm:champions$"
    ):
        resolve_segment(config, "Champions")
    assert resolve_segment(config, "custom:champions") == SegmentRef("custom", "champions", "champions")
    assert resolve_segment(config, "rfm:champions") == CHAMPIONS


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("champion", "rfm:champions"),
        ("hibernate", "rfm:hibernating"),
        ("lifecycle:churn", "lifecycle:churned"),
        ("vipp", "custom:vip"),
        ("rfm:loyl", "rfm:loyal"),
    ],
)
def test_unknown_names_suggest_close_matches(project, name, suggestion):
    with pytest.raises(UnknownSegment) as raised:
        resolve_segment(project, name)
    message = str(raised.value)
    assert message.startswith(f"unknown segment {name!r}; did you mean ")
    assert suggestion in message
    assert "\n" not in message


def test_unknown_names_without_close_matches(project):
    with pytest.raises(UnknownSegment, match=r"^unknown segment 'zzzz'; expected a custom segment \(vip, regulars\)"):
        resolve_segment(project, "zzzz")
    with pytest.raises(UnknownSegment, match=r"^unknown segment type 'crm' in 'crm:vip'; expected one of custom, rfm"):
        resolve_segment(project, "crm:vip")
    with pytest.raises(UnknownSegment, match="unknown segment ''"):
        resolve_segment(project, "")
    # A qualified name only looks inside its own type.
    with pytest.raises(UnknownSegment, match="unknown segment 'engagement:champions'"):
        resolve_segment(project, "engagement:champions")


# --- the command line ---------------------------------------------------------------------------


def test_cli_exports_a_segment(project, capsys):
    status = main(["export", "segment", "Champions", "--config", str(project.config_path)])
    out, err = capsys.readouterr()
    assert status == EXIT_OK, err
    path = project.config_path.parent / "exports" / "rfm_champions" / "2026-10-14.csv"
    assert out == (
        f"exported rfm:Champions: 3 customers -> {path}"
        " (7 in segment; 3 excluded for consent, 1 without email or phone)\n"
    )
    assert err == ""
    assert set(read_rows(path)) == CONSENTING_CHAMPIONS
    for value in RAW_VALUES:
        assert value not in out
        assert value not in path.read_text()


def test_cli_out_option(project, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status = main(["export", "segment", "lifecycle_new", "--config", str(project.config_path), "--out", "new.csv"])
    out, _ = capsys.readouterr()
    assert status == EXIT_OK
    assert out.startswith(f"exported lifecycle:new: 2 customers -> {tmp_path / 'new.csv'} (3 in segment;")
    assert set(read_rows(tmp_path / "new.csv")) == {
        (sha("loyal@example.com"), sha("+447700900999")), (sha("newbie@example.com"), ""),
    }


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("new", "cdm: error: segment 'new' is ambiguous: say rfm:new or lifecycle:new\n"),
        ("champion", "cdm: error: unknown segment 'champion'; did you mean rfm:champions?\n"),
    ],
)
def test_cli_bad_segment_name_is_a_usage_error(project, capsys, name, message):
    status = main(["export", "segment", name, "--config", str(project.config_path)])
    out, err = capsys.readouterr()
    assert status == EXIT_USAGE
    assert out == ""
    assert err == message


def test_cli_missing_marts_is_a_usage_error(tmp_path, capsys):
    config = write_config(tmp_path)
    status = main(["export", "segment", "Champions", "--config", str(config.config_path)])
    _, err = capsys.readouterr()
    assert status == EXIT_USAGE
    assert err.startswith("cdm: error: no warehouse at ")
    assert not config.warehouse.exists()  # the command did not create an empty warehouse

    connect(config.warehouse).close()
    status = main(["export", "segment", "Champions", "--config", str(config.config_path)])
    _, err = capsys.readouterr()
    assert status == EXIT_USAGE
    assert err == "cdm: error: marts.customer_segments does not exist: run the pipeline first\n"
