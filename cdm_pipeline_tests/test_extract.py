"""The raw layer, without Dagster: formats, rejects, idempotent partition replacement."""

import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdm_pipeline.config import SourceConfig
from cdm_pipeline.lib.extract import ExtractError, load_partition
from cdm_pipeline.lib.warehouse import connect
from cdm_pipeline_tests.conftest import land_file

DAY1, DAY2 = dt.date(2026, 10, 1), dt.date(2026, 10, 2)
LOADED_AT = dt.datetime(2026, 10, 2, 2, 0, tzinfo=dt.timezone.utc)


def _source(fmt: str, **overrides) -> SourceConfig:
    fields = {
        "name": f"src_{fmt}",
        "system": "crm",
        "kind": "contacts",
        "format": fmt,
        "path": f"{fmt}/{{date}}/*.{fmt}",
        "id_column": "id",
        "columns": {"first_name": "name", "phone": "phone"},
    }
    fields.update(overrides)
    return SourceConfig(**fields)


def _rows(conn, table: str, order: str = "_partition_date, _source_file, _source_row"):
    return conn.execute(f"SELECT * EXCLUDE (_loaded_at) FROM {table} ORDER BY {order}").fetchall()


@pytest.fixture
def warehouse(tmp_path):
    conn = connect(tmp_path / "wh" / "cdm.duckdb")
    yield conn
    conn.close()


CSV_TRICKY = (
    "id,name,phone,notes\n"
    "001,José Müller,+44 (0)20 7946 0018,\"quoted, comma\"\n"
    "002,Zoë O'Brien,00447700900123,\"multi\nline\"\n"
    "003,Bad,row,with,too,many\n"
    "004,\"Broken\"quote,123,\n"
    "005,Nguyễn,0,\n"
).encode("utf-8") + b"006,Ren\xe9e,1,latin-1 byte\n" + "007,  spaced  ,,\n".encode()


def test_csv_loads_every_value_as_text_and_quarantines_malformed_lines(tmp_path, warehouse):
    source = _source("csv")
    land_file(tmp_path, source, DAY1, "a.csv", CSV_TRICKY)
    result = load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    assert (result.files, result.rows, result.rejects) == (1, 4, 3)
    assert result.rejects_by_error == {"INVALID ENCODING": 1, "TOO MANY COLUMNS": 1, "UNQUOTED VALUE": 1}
    rows = warehouse.execute(
        "SELECT id, name, phone, notes, _source_file, _source_row FROM raw.src_csv ORDER BY _source_row"
    ).fetchall()
    assert rows == [
        # Leading zeros survive: nothing is typed yet.
        ("001", "José Müller", "+44 (0)20 7946 0018", "quoted, comma", "csv/2026-10-01/a.csv", 1),
        ("002", "Zoë O'Brien", "00447700900123", "multi\nline", "csv/2026-10-01/a.csv", 2),
        # Records 3, 4 and 6 were rejected; the rows after them keep their place in the file.
        ("005", "Nguyễn", "0", None, "csv/2026-10-01/a.csv", 5),
        ("007", "  spaced  ", None, None, "csv/2026-10-01/a.csv", 7),
    ]
    rejects = warehouse.execute(
        "SELECT _source_file, _source_row, _source_line, error_type, raw_line, _partition_date"
        " FROM quarantine.src_csv_rejects ORDER BY _source_row"
    ).fetchall()
    # One row per bad record (the extra columns of record 3 are one problem, not three); lines
    # count records after the header, as DuckDB reports them.
    assert rejects == [
        ("csv/2026-10-01/a.csv", 3, 4, "TOO MANY COLUMNS", "003,Bad,row,with,too,many", DAY1),
        ("csv/2026-10-01/a.csv", 4, 5, "UNQUOTED VALUE", '004,"Broken"quote,123,', DAY1),
        ("csv/2026-10-01/a.csv", 6, 7, "INVALID ENCODING", "006,Ren??,1,latin-1 byte", DAY1),
    ]


def test_csv_with_semicolons_and_latin1_reads_with_the_configured_dialect(tmp_path, warehouse):
    source = _source("csv", delimiter=";", encoding="latin-1")
    land_file(tmp_path, source, DAY1, "a.csv", "id;name;phone\n1;Renée;0207\n".encode("latin-1"))
    load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    assert warehouse.execute("SELECT id, name, phone FROM raw.src_csv").fetchall() == [("1", "Renée", "0207")]


def test_jsonl_keeps_nested_values_as_json_text_and_rejects_bad_lines(tmp_path, warehouse):
    source = _source("jsonl")
    lines = [
        json.dumps({"id": "a1", "name": "Siobhán", "phone": 447700900123, "tags": ["vip"], "opt": True}),
        "",
        json.dumps({"id": "a2", "name": None, "extra/key~x": {"k": 1}}),
        '{"id": "a3", "name": "trunc',
        "[1, 2]",
        json.dumps({"id": "a4", "name": "  Upper@Example.COM "}),
    ]
    data = "\n".join(lines).encode() + b"\n" + b'{"id": "a5", "name": "\xff"}\n'
    land_file(tmp_path, source, DAY1, "a.jsonl", data)
    result = load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    assert (result.rows, result.rejects) == (3, 3)
    assert result.rejects_by_error == {"INVALID ENCODING": 1, "INVALID JSON": 1, "NOT A JSON OBJECT": 1}
    rows = warehouse.execute(
        'SELECT id, name, phone, tags, opt, "extra/key~x", _source_row FROM raw.src_jsonl ORDER BY _source_row'
    ).fetchall()
    assert rows == [
        ("a1", "Siobhán", "447700900123", '["vip"]', "true", None, 1),
        ("a2", None, None, None, None, '{"k":1}', 3),
        ("a4", "  Upper@Example.COM ", None, None, None, None, 6),
    ]
    rejects = warehouse.execute(
        "SELECT _source_line, error_type FROM quarantine.src_jsonl_rejects ORDER BY _source_line"
    ).fetchall()
    assert rejects == [(4, "INVALID JSON"), (5, "NOT A JSON OBJECT"), (7, "INVALID ENCODING")]


def test_parquet_columns_become_text_including_timestamps_and_nested(tmp_path, warehouse):
    source = _source("parquet", kind="web_events", columns={"client_id": "client", "occurred_at": "ts"})
    table = pa.table(
        {
            "id": ["e1", "e2"],
            "client": ["123.456", None],
            "ts": pa.array(
                [dt.datetime(2026, 10, 1, 23, 59, 59, 123456, tzinfo=dt.timezone.utc), None],
                type=pa.timestamp("us", tz="UTC"),
            ),
            "value": [12.5, None],
            "params": [[{"key": "k", "value": "v"}], []],
        }
    )
    path = land_file(tmp_path, source, DAY1, "e.parquet", b"")
    pq.write_table(table, path)
    result = load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    assert (result.rows, result.rejects) == (2, 0)
    rows = warehouse.execute(
        "SELECT id, client, ts, value, params, _source_row FROM raw.src_parquet ORDER BY _source_row"
    ).fetchall()
    assert rows == [
        ("e1", "123.456", "2026-10-01 23:59:59.123456+00", "12.5", '[{"key":"k","value":"v"}]', 1),
        ("e2", None, None, None, "[]", 2),
    ]


def test_rerunning_a_partition_gives_an_identical_table_and_touches_no_other_partition(tmp_path, warehouse):
    source = _source("csv")
    land_file(tmp_path, source, DAY1, "a.csv", CSV_TRICKY)
    land_file(tmp_path, source, DAY2, "b.csv", b"id,name,phone\n9,Ann,1\n")
    load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    load_partition(warehouse, source, tmp_path, DAY2, LOADED_AT)
    before = (_rows(warehouse, "raw.src_csv"), _rows(warehouse, "quarantine.src_csv_rejects", "_source_line"))
    load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT + dt.timedelta(days=1))
    after = (_rows(warehouse, "raw.src_csv"), _rows(warehouse, "quarantine.src_csv_rejects", "_source_line"))
    assert after == before
    assert len(before[0]) == 5

    # A corrected file replaces exactly its partition.
    land_file(tmp_path, source, DAY2, "b.csv", b"id,name,phone\n9,Anne,1\n10,Bo,2\n")
    load_partition(warehouse, source, tmp_path, DAY2, LOADED_AT)
    by_day = warehouse.execute(
        "SELECT _partition_date, list(name ORDER BY _source_row) FROM raw.src_csv GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert by_day == [(DAY1, ["José Müller", "Zoë O'Brien", "Nguyễn", "  spaced  "]), (DAY2, ["Anne", "Bo"])]


def test_missing_mapped_column_fails_and_keeps_the_previous_partition(tmp_path, warehouse):
    source = _source("csv")
    land_file(tmp_path, source, DAY1, "a.csv", b"id,name,phone\n1,Ann,5\n")
    load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    # Second file of the same partition lost its phone column: the whole partition must not change.
    land_file(tmp_path, source, DAY1, "b.csv", b"id,name\n2,Bob\n")
    with pytest.raises(ExtractError) as caught:
        load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    assert str(caught.value) == (
        "source 'src_csv': csv/2026-10-01/b.csv has no column 'phone'"
        " (mapped in the config; the file has 2 columns)"
    )
    assert warehouse.execute("SELECT id, name FROM raw.src_csv").fetchall() == [("1", "Ann")]


def test_unreadable_file_fails_with_a_message_naming_it_and_no_values(tmp_path, warehouse):
    source = _source("parquet", kind="web_events", columns={})
    land_file(tmp_path, source, DAY1, "broken.parquet", b"PAR1 this is not parquet at all alice@example.com")
    with pytest.raises(ExtractError) as caught:
        load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    message = str(caught.value)
    assert message.startswith("source 'src_parquet': cannot read parquet/2026-10-01/broken.parquet: ")
    assert "alice" not in message and "\n" not in message


def test_empty_partition_succeeds_with_zero_rows_and_an_empty_table(tmp_path, warehouse):
    source = _source("csv")
    result = load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    assert (result.files, result.rows, result.rejects) == (0, 0, 0)
    columns = [row[0] for row in warehouse.execute("DESCRIBE raw.src_csv").fetchall()]
    assert columns == ["id", "name", "phone", "_source_file", "_source_row", "_partition_date", "_loaded_at"]
    # A header-only file and a zero-byte file are empty too.
    land_file(tmp_path, source, DAY1, "a.csv", b"id,name,phone\n")
    land_file(tmp_path, source, DAY1, "b.csv", b"")
    assert load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT).rows == 0


def test_snapshot_source_is_read_into_every_partition_and_required(tmp_path, warehouse):
    source = _source("csv", path="crm/contacts.csv")
    with pytest.raises(ExtractError, match="matches no file"):
        load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    (tmp_path / "crm").mkdir()
    (tmp_path / "crm" / "contacts.csv").write_bytes(b"id,name,phone\n1,Ann,5\n2,Bob,6\n")
    load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    load_partition(warehouse, source, tmp_path, DAY2, LOADED_AT)
    counts = warehouse.execute(
        "SELECT _partition_date, count(*) FROM raw.src_csv GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert counts == [(DAY1, 2), (DAY2, 2)]


def test_a_new_column_in_a_later_file_is_added_not_lost(tmp_path, warehouse):
    source = _source("csv")
    land_file(tmp_path, source, DAY1, "a.csv", b"id,name,phone\n1,Ann,5\n")
    land_file(tmp_path, source, DAY2, "a.csv", b"id,phone,name,Loyalty Tier\n2,6,Bob,gold\n")
    load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    load_partition(warehouse, source, tmp_path, DAY2, LOADED_AT)
    rows = warehouse.execute('SELECT id, name, phone, "Loyalty Tier" FROM raw.src_csv ORDER BY id').fetchall()
    assert rows == [("1", "Ann", "5", None), ("2", "Bob", "6", "gold")]


def test_a_file_cannot_smuggle_sql_through_its_column_names(tmp_path, warehouse):
    source = _source("csv")
    evil = 'x"; DROP TABLE raw.src_csv; --'
    land_file(
        tmp_path, source, DAY1, "a.csv", f'id,name,phone,"{evil.replace(chr(34), chr(34) * 2)}"\n1,Ann,5,v\n'.encode()
    )
    load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    columns = [row[0] for row in warehouse.execute("DESCRIBE raw.src_csv").fetchall()]
    assert evil in columns
    assert warehouse.execute("SELECT count(*) FROM raw.src_csv").fetchone() == (1,)


def test_a_failure_half_way_leaves_no_partial_partition(tmp_path, warehouse):
    source = _source("csv")
    land_file(tmp_path, source, DAY1, "a.csv", b"id,name,phone\n1,Ann,5\n")
    load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    # First file fine and new, second file broken: neither lands.
    land_file(tmp_path, source, DAY1, "a.csv", b"id,name,phone\n1,Ann,5\n3,Cy,7\n")
    land_file(tmp_path, source, DAY1, "b.csv", b"id,name,name\n")
    with pytest.raises(ExtractError, match="duplicate column 'name'"):
        load_partition(warehouse, source, tmp_path, DAY1, LOADED_AT)
    assert warehouse.execute("SELECT id FROM raw.src_csv").fetchall() == [("1",)]
    # The connection is still usable and holds no leftover temp tables.
    temp = warehouse.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchone()[0]
    assert temp == 0
