"""The raw layer on files as real systems export them: byte-order marks, Windows encodings,
optional columns, generated ids, and the checks that say what a night's extract lost."""

import datetime as dt
import json
import logging
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdm_pipeline.config import CdmConfig, SourceConfig, load_config
from cdm_pipeline.defs.raw.assets import (
    FILES_LANDED_CHECK,
    REJECTED_SHARE_CHECK,
    build_raw_asset,
)
from cdm_pipeline.lib.catalog import raw_table
from cdm_pipeline.lib.extract import ExtractError, load_partition
from cdm_pipeline.lib.extract.encodings import (
    duckdb_encoding,
    guess_encoding,
    transcode_to_utf8,
)
from cdm_pipeline.lib.extract.load import PartitionLoad
from cdm_pipeline.lib.extract.loss import (
    judge_rejected_shares,
    partitions_without_files,
)
from cdm_pipeline.lib.personal_data.suppression import suppress
from cdm_pipeline.lib.warehouse import connect
from cdm_pipeline.resources import WarehouseResource
from cdm_pipeline_tests.conftest import land_file

DAY1, DAY2, DAY3 = dt.date(2026, 10, 1), dt.date(2026, 10, 2), dt.date(2026, 10, 3)
LOADED_AT = dt.datetime(2026, 10, 2, 2, 0, tzinfo=dt.timezone.utc)
BOM = b"\xef\xbb\xbf"


def _source(fmt: str = "csv", **overrides) -> SourceConfig:
    fields = {
        "name": "crm",
        "system": "crm",
        "kind": "contacts",
        "format": fmt,
        "path": f"crm/{{date}}/*.{fmt}",
        "id_column": "id",
        "columns": {"first_name": "name", "city": "city"},
    }
    fields.update(overrides)
    return SourceConfig(**fields)


def _columns(conn, table: str) -> list[str]:
    return [row[0] for row in conn.execute(f"DESCRIBE {table}").fetchall()]


@pytest.fixture
def warehouse(tmp_path):
    conn = connect(tmp_path / "wh" / "cdm.duckdb")
    yield conn
    conn.close()


# --- byte-order marks ------------------------------------------------------------------------

HUBSPOT = BOM + (
    '"Record ID","First Name","City","Email"\r\n'
    '"101","José","Zürich","jose@example.org"\r\n'
    '"102","Ann, Jr","London",""\r\n'
).encode("utf-8")


def test_hubspot_csv_with_bom_and_quoted_header_reads_record_id_without_quotes(tmp_path, warehouse):
    source = _source(id_column="Record ID", columns={"first_name": "First Name", "city": "City"})
    land_file(tmp_path, source, DAY1, "hubspot.csv", HUBSPOT)
    result = load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    assert (result.rows, result.rejects) == (2, 0)
    assert _columns(warehouse, "raw.crm")[:3] == ["Record ID", "First Name", "City"]
    rows = warehouse.execute(
        'SELECT "Record ID", "First Name", City, Email, _source_row FROM raw.crm ORDER BY _source_row'
    ).fetchall()
    # DuckDB skips the mark on the data path too: the first value is not '\ufeff101'.
    assert rows == [("101", "José", "Zürich", "jose@example.org", 1), ("102", "Ann, Jr", "London", None, 2)]


def test_excel_unicode_text_utf16_with_bom_and_tabs_loads(tmp_path, warehouse):
    source = _source(encoding="utf-16", delimiter="\t")
    text = '"id"\t"name"\t"city"\r\n1\tRenée\tKraków\r\n2\tŁukasz\t"Gdańsk"\r\n'
    land_file(tmp_path, source, DAY1, "le.csv", text.encode("utf-16"))  # little-endian, with BOM
    land_file(tmp_path, source, DAY1, "be.csv", b"\xfe\xff" + text.encode("utf-16-be"))
    result = load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    assert (result.rows, result.rejects) == (4, 0)
    rows = warehouse.execute("SELECT _source_file, id, name, city FROM raw.crm ORDER BY ALL").fetchall()
    # Big-endian UTF-16 is where DuckDB's own reader returns no rows and no error.
    assert rows == [
        ("crm/2026-10-01/be.csv", "1", "Renée", "Kraków"),
        ("crm/2026-10-01/be.csv", "2", "Łukasz", "Gdańsk"),
        ("crm/2026-10-01/le.csv", "1", "Renée", "Kraków"),
        ("crm/2026-10-01/le.csv", "2", "Łukasz", "Gdańsk"),
    ]


def test_a_utf8_bom_under_another_encoding_fails_naming_the_file_and_the_fix(tmp_path, warehouse):
    source = _source(encoding="windows-1252")
    land_file(tmp_path, source, DAY1, "a.csv", BOM + "id,name,city\n1,Zoë,Paris\n".encode())
    with pytest.raises(ExtractError) as caught:
        load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    assert str(caught.value) == (
        "source 'crm': cannot read crm/2026-10-01/a.csv: the file starts with a UTF-8 byte-order"
        " mark but the source's encoding is windows-1252: set encoding: utf-8 in cdm.yaml"
    )


# --- encodings DuckDB cannot read ------------------------------------------------------------


@pytest.mark.parametrize(
    "encoding, rows",
    [
        # € is 0x80 in Windows-1252 and 0xA4 in ISO-8859-15: Latin-1 would read other characters.
        ("windows-1252", [("1", "Renée €", "Lodz"), ("2", "Œuvre\nsur deux lignes", "Ærø")]),
        ("iso-8859-15", [("1", "Renée €", "Brno"), ("2", "Œuvre\nsur deux lignes", "Ærø")]),
        ("cp850", [("1", "Renée ñ", "Århus"), ("2", "Müller\nzwei Zeilen", "Ærø")]),
    ],
)
def test_files_in_encodings_duckdb_lacks_load_exactly(tmp_path, warehouse, encoding, rows):
    assert duckdb_encoding(encoding) is None  # the transcoding path, not DuckDB's own
    source = _source(encoding=encoding, delimiter=";")
    text = "id;name;city\n" + "".join(f'{i};"{name}";{city}\n' for i, name, city in rows)
    land_file(tmp_path, source, DAY1, "export.csv", text.encode(encoding))
    result = load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    assert (result.rows, result.rejects, result.encoding_warnings) == (2, 0, [])
    loaded = warehouse.execute("SELECT id, name, city, _source_file, _source_row FROM raw.crm ORDER BY id").fetchall()
    assert loaded == [(*row, "crm/2026-10-01/export.csv", n) for n, row in enumerate(rows, start=1)]


def test_an_undecodable_byte_rejects_its_line_with_the_original_file_and_line(tmp_path, warehouse):
    source = _source(encoding="windows-1252")
    # 0x81 means nothing in Windows-1252. Line 3 holds it; a quoted line break before it must not
    # shift the numbers.
    data = b'id,name,city\n1,"Ren\xe9e\nSmith",Paris\n2,Bad\x81,Lyon\n3,Zo\xeb,Nice\n'
    land_file(tmp_path, source, DAY1, "a.csv", data)
    result = load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    assert (result.rows, result.rejects, result.rejects_by_error) == (2, 1, {"INVALID ENCODING": 1})
    assert warehouse.execute("SELECT id, name, _source_row FROM raw.crm ORDER BY id").fetchall() == [
        ("1", "Renée\nSmith", 1), ("3", "Zoë", 3),
    ]
    reject = warehouse.execute(
        "SELECT _source_file, _source_row, _source_line, error_type FROM quarantine.crm_rejects"
    ).fetchall()
    assert reject == [("crm/2026-10-01/a.csv", 2, 3, "INVALID ENCODING")]
    assert result.encoding_warnings == [
        "crm: 1 line of crm/2026-10-01/a.csv is not valid windows-1252 (corrupt lines; if the file"
        " is in another encoding, set encoding: in cdm.yaml)"
    ]


def test_transcoded_copies_are_removed_after_success_and_failure(tmp_path, warehouse):
    source = _source(encoding="cp1252")
    land_file(tmp_path, source, DAY1, "a.csv", "id,name,city\n1,Renée,Paris\n".encode("cp1252"))
    load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    # The second file lacks a mapped column: the load fails after both files were copied.
    land_file(tmp_path, source, DAY1, "b.csv", "id,name\n2,Zoë\n".encode("cp1252"))
    with pytest.raises(ExtractError, match="b.csv has no column 'city'"):
        load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    leftovers = [p.name for p in (tmp_path / "wh").iterdir() if p.name.startswith(".cdm_transcode_")]
    assert leftovers == []
    assert warehouse.execute("SELECT name FROM raw.crm").fetchall() == [("Renée",)]


def test_transcoding_streams_in_chunks_without_splitting_characters(tmp_path):
    text = "id,name\n" + "".join(f"{i},Ærø Œuvre €{i}\n" for i in range(500))
    source, target = tmp_path / "in.csv", tmp_path / "out" / "in.csv"
    source.write_bytes(text.encode("utf-16"))
    # 7-byte chunks cut UTF-16 code units and the BOM in half.
    transcode_to_utf8(source, target, "utf-16", chunk_bytes=7)
    assert target.read_bytes() == text.encode("utf-8")


# --- a file read in the wrong encoding ---------------------------------------------------------


def test_a_windows_1252_file_read_as_utf8_names_the_file_and_the_likely_encoding(tmp_path, warehouse):
    source = _source()  # encoding: utf-8 (the default)
    lines = ["id,name,city", "1,Renée,Paris", "2,Ann,Leeds", "3,Zoë,Orléans", "4,Bob,York"]
    land_file(tmp_path, source, DAY1, "contacts.csv", ("\n".join(lines) + "\n").encode("windows-1252"))
    result = load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    assert (result.rows, result.rejects_by_error) == (2, {"INVALID ENCODING": 2})
    assert result.encoding_warnings == [
        "crm: 2 lines of crm/2026-10-01/contacts.csv are not valid utf-8 — is the file"
        " windows-1252? set encoding: in cdm.yaml"
    ]


def test_a_utf8_file_with_one_corrupt_line_gets_no_wrong_guess(tmp_path, warehouse):
    source = _source()
    data = "id,name,city\n1,Renée,Paris\n".encode() + b"2,Zo\xeb,Nice\n"
    land_file(tmp_path, source, DAY1, "a.csv", data)
    result = load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    assert result.encoding_warnings == [
        "crm: 1 line of crm/2026-10-01/a.csv is not valid utf-8 (corrupt lines; if the file is in"
        " another encoding, set encoding: in cdm.yaml)"
    ]


def test_a_windows_1252_header_read_as_utf8_fails_with_the_hint(tmp_path, warehouse):
    source = _source(columns={"first_name": "Prénom"})
    land_file(tmp_path, source, DAY1, "a.csv", "id,Prénom\n1,Zoë\n".encode("windows-1252"))
    with pytest.raises(ExtractError) as caught:
        load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    assert str(caught.value) == (
        "source 'crm': cannot read crm/2026-10-01/a.csv: header is not valid utf-8 — is the file"
        " windows-1252? set encoding: in cdm.yaml"
    )


@pytest.mark.parametrize(
    "data, configured, guess",
    [
        ("a,b\nRenée,1\n".encode("utf-16-le"), "utf-8", "utf-16-le"),
        ("a,b\nRenée,1\n".encode("utf-16"), "utf-8", "utf-16"),
        ("a,b\nRenée,1\n".encode("utf-8"), "windows-1252", "utf-8"),
        (BOM + "a,b\nRenée,1\n".encode("utf-8"), "latin-1", "utf-8"),
        ("a,b\nRenée,1\n".encode("cp1252"), "utf-8", "windows-1252"),
        ("a,b\nRenée,1\n".encode("cp1252") + b"x\x81\n", "cp1252", None),
    ],
)
def test_guess_encoding(tmp_path, data, configured, guess):
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    assert guess_encoding(path, configured) == guess


# --- config shapes: optional columns, generated ids, explode ----------------------------------


def test_a_csv_without_an_optional_column_loads_it_as_null(tmp_path, warehouse):
    source = _source(columns={"first_name": "name", "city": {"column": "city", "required": False}})
    # An empty partition already has the optional column, so staging can read it.
    load_partition(warehouse, source, tmp_path, DAY3, LOADED_AT)
    assert _columns(warehouse, "raw.crm")[:3] == ["id", "name", "city"]
    land_file(tmp_path, source, DAY1, "unsubscribed.csv", b"id,name\n1,Ann\n")
    land_file(tmp_path, source, DAY1, "subscribed.csv", b"id,city,name\n2,Leeds,Bob\n")
    result = load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    assert (result.rows, result.missing_optional_columns) == (2, ["city"])
    assert warehouse.execute("SELECT id, name, city FROM raw.crm ORDER BY id").fetchall() == [
        ("1", "Ann", None), ("2", "Bob", "Leeds"),
    ]
    # A required column is still demanded.
    land_file(tmp_path, source, DAY2, "a.csv", b"id,city\n3,York\n")
    with pytest.raises(ExtractError, match="a.csv has no column 'name'"):
        load_partition(warehouse, source, tmp_path, DAY2, LOADED_AT)


def test_an_optional_column_added_to_the_config_later_joins_the_existing_raw_table(tmp_path, warehouse):
    load_partition(warehouse, _source(columns={"first_name": "name"}), tmp_path, DAY1, LOADED_AT)
    assert "city" not in _columns(warehouse, "raw.crm")
    later = _source(columns={"first_name": "name", "city": {"column": "city", "required": False}})
    load_partition(warehouse, later, tmp_path, DAY1, LOADED_AT)
    assert "city" in _columns(warehouse, "raw.crm")


def test_a_parquet_file_without_an_optional_column_loads_it_as_null(tmp_path, warehouse):
    source = _source(
        "parquet", kind="web_events",
        columns={"client_id": "client", "page_url": {"column": "page", "required": False}},
    )
    only_client = land_file(tmp_path, source, DAY1, "a.parquet", b"")
    pq.write_table(pa.table({"id": ["e1"], "client": ["c1"]}), only_client)
    result = load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    assert (result.rows, result.missing_optional_columns) == (1, ["page"])
    assert warehouse.execute("SELECT id, client, page FROM raw.crm").fetchall() == [("e1", "c1", None)]
    missing_client = land_file(tmp_path, source, DAY2, "b.parquet", b"")
    pq.write_table(pa.table({"id": ["e2"], "page": ["/"]}), missing_client)
    with pytest.raises(ExtractError, match="b.parquet has no column 'client'"):
        load_partition(warehouse, source, tmp_path, DAY2, LOADED_AT)


def test_a_jsonl_source_with_generated_ids_loads_without_an_id_column(tmp_path, warehouse):
    source = _source(
        "jsonl", kind="web_events", id_column=None, id_from=["client_id", "occurred_at"],
        columns={"client_id": "cid", "occurred_at": "ts"},
    )
    records = [{"cid": "c1", "ts": "2026-10-01T10:00:00Z"}, {"cid": "c2", "ts": "2026-10-01T11:00:00Z"}]
    land_file(tmp_path, source, DAY1, "a.jsonl", "".join(json.dumps(r) + "\n" for r in records).encode())
    result = load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    assert result.rows == 2
    assert warehouse.execute("SELECT cid FROM raw.crm ORDER BY cid").fetchall() == [("c1",), ("c2",)]


def test_a_jsonl_file_whose_records_never_carry_the_explode_key_fails(tmp_path, warehouse):
    source = _source(
        "jsonl", kind="email_events", columns={"event_type": {"column": "activity", "path": "action"}},
        explode="activity",
    )
    land_file(tmp_path, source, DAY1, "a.jsonl", b'{"id": "m1", "activity": [{"action": "open"}]}\n')
    assert load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT).rows == 1
    land_file(tmp_path, source, DAY1, "b.jsonl", b'{"id": "m2", "activities": []}\n')
    with pytest.raises(ExtractError) as caught:
        load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    assert str(caught.value) == (
        "source 'crm': crm/2026-10-01/b.jsonl has no 'activity' in any record (the column to explode in the config)"
    )


def test_the_suppression_list_applies_to_a_source_without_an_id_column(tmp_path, monkeypatch):
    monkeypatch.setenv("CDM_PRIVACY_KEY", "test-privacy-key-0123456789abcdef")
    (tmp_path / "cdm.yaml").write_text(textwrap.dedent(
        """
        warehouse: wh/cdm.duckdb
        landing_dir: landing
        sources:
          - {name: signups, system: web, kind: contacts, format: csv, path: "signups/{date}/*.csv",
             id_from: [email], columns: {email: Email, first_name: Name}}
        """
    ))
    config = load_config(tmp_path / "cdm.yaml")
    conn = connect(config.warehouse)
    try:
        suppress(conn, b"test-privacy-key-0123456789abcdef", [("email", "erased@example.org")], "REQ-1")
        source = config.source("signups")
        land_file(config.landing_dir, source, DAY1, "a.csv", b"Email,Name\nerased@example.org,X\nkept@example.org,Y\n")
        result = load_partition(conn, source, config.landing_dir, DAY1, LOADED_AT, config=config)
        assert (result.rows, result.suppressed) == (1, 1)
        assert conn.execute("SELECT Email FROM raw.signups").fetchall() == [("kept@example.org",)]
    finally:
        conn.close()


# --- what the extract lost: the verdicts ---------------------------------------------------------


def _load_result(day: dt.date, rows: int, rejects: dict[str, int], files: int = 1) -> PartitionLoad:
    return PartitionLoad(
        "crm", day, files=files, rows=rows, rejects=sum(rejects.values()), rejects_by_error=rejects
    )


def test_rejected_share_is_judged_per_partition_strictly_above_the_limit():
    loads = [
        _load_result(DAY1, 190, {"TOO MANY COLUMNS": 10}),  # exactly 5%: passes
        _load_result(DAY2, 60, {"INVALID ENCODING": 37, "UNQUOTED VALUE": 3}),  # 40%
        _load_result(DAY3, 0, {}, files=0),
    ]
    verdict = judge_rejected_shares(loads, 0.05)
    assert not verdict.passed
    assert [p.describe() for p in verdict.over_limit] == ["2026-10-02: 40% (40 of 100 records)"]
    assert verdict.top_error_types == [("INVALID ENCODING", 37), ("UNQUOTED VALUE", 3)]
    assert verdict.worst.partition_date == DAY2
    assert judge_rejected_shares(loads, 0.4).passed
    assert partitions_without_files(loads) == [DAY3]


def test_a_few_rejected_lines_in_a_small_night_pass_unless_every_record_is_lost():
    few = [_load_result(DAY1, 11, {"TOO MANY COLUMNS": 9})]  # 45%, but 9 lines
    assert judge_rejected_shares(few, 0.05).passed
    every = [_load_result(DAY1, 0, {"INVALID ENCODING": 3})]
    assert [p.describe() for p in judge_rejected_shares(every, 0.05).over_limit] == [
        "2026-10-01: 100% (3 of 3 records)"
    ]


# --- the checks, in a real Dagster run --------------------------------------------------------

# One retry without delay: a failed check must not be retried (it is not the step's error).
CONFIG = textwrap.dedent(
    """
    warehouse: wh/cdm.duckdb
    landing_dir: landing
    start_date: 2026-10-01
    extract_retries: {max_retries: 1, delay_seconds: 0}
    sources:
      - {name: crm_contacts, system: crm, kind: contacts, format: csv, path: "crm/{date}/*.csv",
         id_column: id, columns: {first_name: name, email: email}}
    """
)


def _project(tmp_path: Path, extra: str = "") -> CdmConfig:
    (tmp_path / "cdm.yaml").write_text(CONFIG + extra)
    return load_config(tmp_path / "cdm.yaml")


def _contacts(config: CdmConfig, day: dt.date, good: int, bad: int, encoding: str = "utf-8") -> None:
    folder = config.landing_dir / "crm" / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["id,name,email"] + [f"{i},Ann{i},a{i}@example.org" for i in range(good)]
    lines += [f"x{i},too,many,columns" for i in range(bad)]
    (folder / "contacts.csv").write_bytes(("\n".join(lines) + "\n").encode(encoding))


def _run(config: CdmConfig, partitions: list[dt.date]):
    ran = []

    @dg.asset(
        deps=[raw_table("crm_contacts").asset_key],
        partitions_def=build_raw_asset(config.sources[0], config).partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def downstream_of_raw() -> None:
        ran.append(True)

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [build_raw_asset(config.sources[0], config), downstream_of_raw],
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": min(partitions).isoformat(),
            "dagster/asset_partition_range_end": max(partitions).isoformat(),
        },
        resources={"warehouse": WarehouseResource(database=str(config.warehouse))},
        raise_on_error=False,
    )
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    return result, ran, checks, warnings


def test_too_many_rejected_lines_fail_the_blocking_check_and_a_fixed_file_passes(tmp_path):
    config = _project(tmp_path)
    _contacts(config, DAY1, good=40, bad=1)  # 2.4%
    _contacts(config, DAY2, good=30, bad=10)  # 25%
    result, ran, checks, _ = _run(config, [DAY1, DAY2])
    assert not result.success and ran == []
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    failed = checks[REJECTED_SHARE_CHECK]
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    metadata = {k: v.value for k, v in failed.metadata.items()}
    assert metadata["partitions_over_limit"] == "2026-10-02: 25% (10 of 40 records)"
    assert metadata["top_error_types"] == "TOO MANY COLUMNS: 10"
    assert (metadata["limit"], metadata["worst_share"], metadata["worst_partition"]) == (0.05, 0.25, "2026-10-02")
    # The rows were loaded (and the rejects kept for inspection): the check stops what follows.
    with duckdb.connect(str(config.warehouse), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM quarantine.crm_contacts_rejects").fetchone() == (11,)

    _contacts(config, DAY2, good=30, bad=0)
    result, ran, checks, _ = _run(config, [DAY2])
    assert result.success and ran == [True]
    assert checks[REJECTED_SHARE_CHECK].passed
    assert checks[REJECTED_SHARE_CHECK].metadata["partitions_over_limit"].value == "none"


def test_a_source_limit_overrides_the_project_limit(tmp_path):
    config = _project(tmp_path, "loss_limits: {rejected_share: 0.01}\n")
    _contacts(config, DAY1, good=400, bad=10)  # 2.4%: over the project's 1%
    assert not _run(config, [DAY1])[2][REJECTED_SHARE_CHECK].passed
    own = CONFIG.replace("email: email}}", "email: email}, loss_limits: {rejected_share: 0.03}}")
    (tmp_path / "cdm.yaml").write_text(own + "loss_limits: {rejected_share: 0.01}\n")
    result, _, checks, _ = _run(load_config(tmp_path / "cdm.yaml"), [DAY1])
    assert result.success and checks[REJECTED_SHARE_CHECK].passed


def test_a_night_without_its_file_warns_and_the_run_goes_on(tmp_path):
    config = _project(tmp_path)
    _contacts(config, DAY1, good=3, bad=0)
    result, ran, checks, warnings = _run(config, [DAY1, DAY2, DAY3])
    assert result.success and ran == [True]
    warned = checks[FILES_LANDED_CHECK]
    assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN
    assert warned.metadata["partitions_without_files"].value == "2026-10-02, 2026-10-03"
    assert checks[REJECTED_SHARE_CHECK].passed
    assert warnings == [
        "crm_contacts: no file matches crm/{date}/*.csv for 2 partition(s) (2026-10-02, 2026-10-03):"
        " 0 rows loaded there"
    ]


def test_a_snapshot_source_has_no_files_check_and_still_fails_without_its_file(tmp_path):
    config = _project(tmp_path)
    snapshot = config.sources[0].model_copy(update={"path": "crm/contacts.csv"})
    config = config.model_copy(update={"sources": [snapshot]})
    assert [k.name for k in build_raw_asset(snapshot, config).check_keys] == [REJECTED_SHARE_CHECK]
    result, ran, checks, _ = _run(config, [DAY1])
    assert not result.success and ran == [] and checks == {}
    (failure,) = result.get_step_failure_events()
    assert "matches no file" in failure.step_failure_data.error.message


def test_the_encoding_warning_reaches_the_step_log_and_the_metadata(tmp_path):
    config = _project(tmp_path)
    folder = config.landing_dir / "crm" / DAY1.isoformat()
    folder.mkdir(parents=True)
    rows = ["id,name,email"] + [f"{i},Ren{'é' if i % 2 else 'e'}e,r{i}@example.org" for i in range(20)]
    (folder / "contacts.csv").write_bytes(("\n".join(rows) + "\n").encode("windows-1252"))
    result, _, checks, warnings = _run(config, [DAY1])
    assert not result.success  # half the lines rejected: far above 5%
    assert checks[REJECTED_SHARE_CHECK].metadata["top_error_types"].value == "INVALID ENCODING: 10"
    warning = (
        "crm_contacts: 10 lines of crm/2026-10-01/contacts.csv are not valid utf-8 — is the file"
        " windows-1252? set encoding: in cdm.yaml"
    )
    (materialization,) = [
        m for m in result.asset_materializations_for_node("extract_crm_contacts")
        if m.asset_key == raw_table("crm_contacts").asset_key
    ]
    assert materialization.metadata["encoding_problems"].value == warning
    assert warning in warnings
    assert not any("Ren" in message for message in warnings)  # counts and names, never values


def test_a_killed_loads_transcoding_copies_are_removed_by_the_next(tmp_path):
    import os
    import time

    from cdm_pipeline.lib.extract.encodings import (
        SCRATCH_PREFIX,
        STALE_SECONDS,
        ScratchFolder,
    )
    from cdm_pipeline.lib.warehouse import connect

    conn = connect(tmp_path / "wh.duckdb")
    stale, fresh = tmp_path / (SCRATCH_PREFIX + "old"), tmp_path / (SCRATCH_PREFIX + "running")
    for folder in (stale, fresh):
        folder.mkdir()
        (folder / "copy.csv").write_text("x")
    then = time.time() - STALE_SECONDS - 60
    os.utime(stale, (then, then))
    scratch = ScratchFolder(conn)
    assert scratch.path.parent == tmp_path
    assert not stale.exists() and fresh.exists()  # another load may still be using a fresh one
    scratch.close()
    conn.close()
