"""What a demanding operator's landing folder does to the extract (issue 20's reliability probe).

A partition never shrinks silently; a file that changes while it is read is not loaded half-way;
an unbalanced quote rejects its own line, not the rest of the file, and every bad file's rejects
are recorded; a link out of the landing folder is refused; a file name with glob characters
loads once.
"""

import datetime as dt
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdm_pipeline.config import SourceConfig
from cdm_pipeline.defs.raw.assets import ALLOW_SHRINK_ENV, ALLOW_SHRINK_TAG, shrink_allowed
from cdm_pipeline.lib.extract import ExtractError, load_partition, partition_files
from cdm_pipeline.lib.extract import load as load_module
from cdm_pipeline.lib.warehouse import connect
from cdm_pipeline_tests.conftest import land_file

DAY = dt.date(2026, 10, 1)
LOADED_AT = dt.datetime(2026, 10, 2, 2, 0, tzinfo=dt.timezone.utc)
LATER = LOADED_AT + dt.timedelta(days=1)
HEADER = b"id,name,phone\n"


def _source(fmt: str = "csv", **overrides) -> SourceConfig:
    fields = {
        "name": f"src_{fmt}", "system": "crm", "kind": "contacts", "format": fmt,
        "path": f"{fmt}/{{date}}/*.{fmt}", "id_column": "id",
        "columns": {"first_name": "name", "phone": "phone"},
    }
    fields.update(overrides)
    return SourceConfig(**fields)


def _csv(*rows: str) -> bytes:
    return HEADER + "".join(f"{row}\n" for row in rows).encode()


@pytest.fixture
def landing(tmp_path):
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


@pytest.fixture
def warehouse(tmp_path):
    conn = connect(tmp_path / "wh" / "cdm.duckdb")
    yield conn
    conn.close()


def _raw(conn, table="raw.src_csv"):
    return conn.execute(
        f"SELECT id, _source_file, _source_row, _loaded_at FROM {table} ORDER BY _source_file, _source_row"
    ).fetchall()


def _rejects(conn, table="quarantine.src_csv_rejects"):
    return conn.execute(
        f"SELECT _source_file, _source_row, error_type FROM {table} ORDER BY _source_file, _source_row"
    ).fetchall()


# --- 1. A partition never shrinks silently ------------------------------------------------------


def test_a_reload_with_fewer_rows_fails_in_one_line_and_keeps_the_loaded_rows(landing, warehouse):
    source = _source()
    land_file(landing, source, DAY, "a.csv", _csv("1,Ann,5", "2,Bo,6", "3,Cy,7", "4,Di,8"))
    land_file(landing, source, DAY, "b.csv", _csv("5,Ed,9", "6,Flo,1,extra"))
    load_partition(warehouse, source, landing, DAY, LOADED_AT)
    before = (_raw(warehouse), _rejects(warehouse))
    log_rows = warehouse.execute("SELECT count(*) FROM governance.extract_log").fetchone()

    # Truncated mid-copy: the first two records only.
    land_file(landing, source, DAY, "a.csv", _csv("1,Ann,5", "2,Bo,6"))
    with pytest.raises(ExtractError) as caught:
        load_partition(warehouse, source, landing, DAY, LATER)
    assert str(caught.value) == (
        "source 'src_csv': partition 2026-10-01 would shrink from 5 rows in 2 files to 3 rows in 2 files;"
        " the loaded rows are kept (if the smaller files are right, re-run with --allow-shrink)"
    )
    assert caught.value.transient  # a file still being copied: a retry may find it whole
    assert (_raw(warehouse), _rejects(warehouse)) == before
    assert warehouse.execute("SELECT count(*) FROM governance.extract_log").fetchone() == log_rows

    # The operator says the smaller file is right.
    result = load_partition(warehouse, source, landing, DAY, LATER, allow_shrink=True)
    assert (result.rows, result.shrank_from) == (3, (5, 2))
    assert [row[0] for row in _raw(warehouse)] == ["1", "2", "5"]


def test_a_file_absent_on_reload_fails_and_so_does_an_empty_folder(landing, warehouse):
    source = _source()
    land_file(landing, source, DAY, "a.csv", _csv("1,Ann,5"))
    b = land_file(landing, source, DAY, "b.csv", _csv("2,Bo,6"))
    load_partition(warehouse, source, landing, DAY, LOADED_AT)
    b.unlink()
    with pytest.raises(ExtractError, match=r"would shrink from 2 rows in 2 files to 1 row in 1 file;"):
        load_partition(warehouse, source, landing, DAY, LATER)
    # A file rewritten with the same rows in one file is fewer files: refused as well.
    land_file(landing, source, DAY, "a.csv", _csv("1,Ann,5", "2,Bo,6"))
    with pytest.raises(ExtractError, match=r"from 2 rows in 2 files to 2 rows in 1 file;"):
        load_partition(warehouse, source, landing, DAY, LATER)
    (landing / "csv" / DAY.isoformat() / "a.csv").unlink()
    with pytest.raises(ExtractError, match=r"from 2 rows in 2 files to 0 rows in 0 files;"):
        load_partition(warehouse, source, landing, DAY, LATER)
    assert [row[0] for row in _raw(warehouse)] == ["1", "2"]
    # Growing is never refused, nor is a same-size re-run.
    land_file(landing, source, DAY, "a.csv", _csv("1,Ann,5", "2,Bo,6"))
    land_file(landing, source, DAY, "b.csv", _csv("3,Cy,7"))
    assert load_partition(warehouse, source, landing, DAY, LATER).rows == 3
    assert load_partition(warehouse, source, landing, DAY, LATER).shrank_from is None


def test_the_shrink_switch_is_the_cli_flag_env_var_or_run_tag():
    assert not shrink_allowed({}, {})
    assert shrink_allowed({}, {ALLOW_SHRINK_ENV: "1"})
    assert shrink_allowed({ALLOW_SHRINK_TAG: "true"}, {})
    assert not shrink_allowed({ALLOW_SHRINK_TAG: "false"}, {ALLOW_SHRINK_ENV: "0"})


def test_cdm_run_allow_shrink_sets_the_switch_for_the_run_steps(monkeypatch):
    from cdm_pipeline.cli import build_parser

    args = build_parser().parse_args(["run", "--date", "2026-10-01", "--allow-shrink"])
    assert args.allow_shrink
    assert not build_parser().parse_args(["run", "--date", "2026-10-01"]).allow_shrink


def test_a_file_that_changes_while_it_is_read_is_not_loaded(landing, warehouse, monkeypatch):
    source = _source()
    path = land_file(landing, source, DAY, "a.csv", _csv("1,Ann,5", "2,Bo,6"))
    load_partition(warehouse, source, landing, DAY, LOADED_AT)
    before = _raw(warehouse)
    real_read = load_module.read_files

    def read_while_a_writer_appends(*args, **kwargs):
        scans = real_read(*args, **kwargs)
        with path.open("ab") as handle:  # the exporter is still writing
            handle.write(b"3,Cy,7\n")
        return scans

    monkeypatch.setattr(load_module, "read_files", read_while_a_writer_appends)
    with pytest.raises(ExtractError) as caught:
        load_partition(warehouse, source, landing, DAY, LATER)
    assert str(caught.value) == (
        "source 'src_csv': csv/2026-10-01/a.csv changed while it was read (size or modification time);"
        " nothing was loaded, try again once the file is complete"
    )
    assert caught.value.transient
    assert _raw(warehouse) == before
    monkeypatch.setattr(load_module, "read_files", real_read)
    assert load_partition(warehouse, source, landing, DAY, LATER).rows == 3


# --- 2. An unbalanced quote rejects its own line -------------------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_an_unbalanced_quote_rejects_its_line_and_the_lines_after_it_load(landing, warehouse, newline):
    source = _source()
    lines = ["id,name,phone", "1,Ann,5", '2,"Bo,6', "3,Cy,7", '4,"Di",8', "5,Ed,9", "6,Flo,1,x", "7,Gus,2"]
    land_file(landing, source, DAY, "a.csv", newline.join(lines).encode() + newline.encode())
    result = load_partition(warehouse, source, landing, DAY, LOADED_AT)
    assert (result.rows, result.rejects) == (5, 2)
    rows = warehouse.execute("SELECT id, name, _source_row FROM raw.src_csv ORDER BY _source_row").fetchall()
    assert rows == [("1", "Ann", 1), ("3", "Cy", 3), ("4", "Di", 4), ("5", "Ed", 5), ("7", "Gus", 7)]
    rejects = warehouse.execute(
        "SELECT _source_row, _source_line, error_type, raw_line FROM quarantine.src_csv_rejects ORDER BY 1"
    ).fetchall()
    assert rejects == [(2, 3, "UNQUOTED VALUE", '2,"Bo,6'), (6, 7, "TOO MANY COLUMNS", "6,Flo,1,x")]


def test_a_quote_left_open_in_a_big_file_costs_one_line(landing, warehouse):
    source = _source()
    rows = [f"{i},N{i},{i}" for i in range(1, 30001)]
    rows[9] = '10,"N10,10'
    rows[29999] = '30000,"N30000,30000'  # and one on the last line
    land_file(landing, source, DAY, "a.csv", _csv(*rows))
    result = load_partition(warehouse, source, landing, DAY, LOADED_AT)
    assert (result.rows, result.rejects) == (29998, 2)
    assert _rejects(warehouse) == [("csv/2026-10-01/a.csv", 10, "UNQUOTED VALUE"),
                                   ("csv/2026-10-01/a.csv", 30000, "UNQUOTED VALUE")]
    # Every loaded row sits at its own record number.
    assert warehouse.execute("SELECT count(*) FROM raw.src_csv WHERE id::INT <> _source_row").fetchone() == (0,)


# Bad lines of five files of one partition (line number -> kind), as the probe's fuzzing found
# them: DuckDB's multi-file scan dropped f3's reject entirely and swallowed the lines after each
# open quote.
_BAD_LINES = {
    "f0.csv": (3, {}),
    "f1.csv": (3, {3: "short"}),
    "f2.csv": (2000, {9: "cols", 105: "enc", 199: "enc", 236: "quote", 386: "short", 439: "enc", 612: "quote",
                      998: "enc", 1029: "cols", 1077: "short", 1274: "short", 1285: "enc", 1290: "quote",
                      1359: "enc", 1371: "short", 1560: "quote", 1579: "cols", 1615: "short", 1661: "short",
                      1685: "enc", 1792: "cols", 1802: "enc", 1864: "enc", 1880: "quote", 1987: "cols",
                      1996: "quote"}),
    "f3.csv": (3, {3: "quote"}),
    "f4.csv": (2000, {54: "cols", 75: "short", 159: "cols", 172: "enc", 223: "enc", 363: "enc", 368: "quote",
                      597: "cols", 603: "quote", 649: "short", 953: "short", 1148: "enc", 1415: "quote",
                      1508: "cols", 1596: "cols", 1635: "cols", 1664: "enc", 1711: "short", 1823: "short",
                      1830: "cols", 1835: "cols", 1860: "short", 1954: "quote", 1993: "short"}),
}
_KIND_ERROR = {"cols": "TOO MANY COLUMNS", "short": "MISSING COLUMNS", "enc": "INVALID ENCODING",
               "quote": "UNQUOTED VALUE"}


def _bad_line(i: int, kind: str) -> bytes:
    return {"cols": f"{i},a,b,c".encode(), "short": f"{i},a".encode(), "enc": f"{i},R".encode() + b"\xe9,1",
            "quote": f'{i},"B,{i}'.encode()}[kind]


def test_every_bad_file_of_a_partition_has_each_bad_line_rejected_on_its_own(landing, warehouse):
    source = _source()
    expected_rejects = []
    for name, (lines, bad) in _BAD_LINES.items():
        body = b"".join(
            (_bad_line(i, bad[i]) if i in bad else f"{i},N{i},{i}".encode()) + b"\n" for i in range(1, lines + 1)
        )
        land_file(landing, source, DAY, name, HEADER + body)
        expected_rejects += [(f"csv/2026-10-01/{name}", i, _KIND_ERROR[kind]) for i, kind in sorted(bad.items())]
    result = load_partition(warehouse, source, landing, DAY, LOADED_AT)
    assert _rejects(warehouse) == expected_rejects
    total = sum(lines for lines, _ in _BAD_LINES.values())
    assert (result.rows, result.rejects) == (total - len(expected_rejects), len(expected_rejects))
    assert warehouse.execute("SELECT count(*) FROM raw.src_csv WHERE id::INT <> _source_row").fetchone() == (0,)


def test_a_multi_line_value_still_loads_whole(landing, warehouse):
    source = _source()
    land_file(landing, source, DAY, "a.csv", _csv('1,"Ann\nMarie",5', '2,"Bo ""B""",6', "3,Cy,7"))
    result = load_partition(warehouse, source, landing, DAY, LOADED_AT)
    assert (result.rows, result.rejects) == (3, 0)
    names = warehouse.execute("SELECT name, _source_row FROM raw.src_csv ORDER BY _source_row").fetchall()
    assert names == [("Ann\nMarie", 1), ('Bo "B"', 2), ("Cy", 3)]


# --- 3. Nothing from outside the landing folder -------------------------------------------------


def test_links_out_of_the_landing_folder_are_refused_and_counted(tmp_path, landing, warehouse):
    source = _source()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd.csv").write_bytes(_csv("99,root,0"))
    (outside / "folder").mkdir()
    (outside / "folder" / "x.csv").write_bytes(_csv("98,daemon,0"))
    land_file(landing, source, DAY, "a.csv", _csv("1,Ann,5"))
    day_folder = landing / "csv" / DAY.isoformat()
    (day_folder / "passwd.csv").symlink_to(outside / "passwd.csv")
    (day_folder / "inside.csv").symlink_to(day_folder / "a.csv")  # a link within the folder is fine
    source_deep = _source(path="csv/{date}/**/*.csv")
    (day_folder / "linked").symlink_to(outside / "folder", target_is_directory=True)

    assert partition_files(source_deep, landing, DAY) == [day_folder / "a.csv", day_folder / "inside.csv"]
    result = load_partition(warehouse, source_deep, landing, DAY, LOADED_AT)
    assert (result.files, result.rows, result.rejects) == (2, 2, 2)
    assert result.refused_files == ["csv/2026-10-01/linked/x.csv", "csv/2026-10-01/passwd.csv"]
    assert result.rejects_by_error == {"OUTSIDE LANDING FOLDER": 2}
    assert [row[0] for row in _raw(warehouse)] == ["1", "1"]
    refused = warehouse.execute(
        "SELECT _source_file, _source_row, error_type, error_message, raw_line FROM quarantine.src_csv_rejects"
        " ORDER BY 1"
    ).fetchall()
    reason = "the file resolves to a path outside the landing folder: not read"
    assert refused == [
        ("csv/2026-10-01/linked/x.csv", 0, "OUTSIDE LANDING FOLDER", reason, None),
        ("csv/2026-10-01/passwd.csv", 0, "OUTSIDE LANDING FOLDER", reason, None),
    ]


def test_a_snapshot_that_links_out_of_the_landing_folder_fails(tmp_path, landing, warehouse):
    source = _source(path="crm/contacts.csv")
    (tmp_path / "secret.csv").write_bytes(_csv("99,root,0"))
    (landing / "crm").mkdir()
    (landing / "crm" / "contacts.csv").symlink_to(tmp_path / "secret.csv")
    with pytest.raises(ExtractError, match="resolves to a path outside the landing folder"):
        load_partition(warehouse, source, landing, DAY, LOADED_AT)


# --- 4. Glob characters in names ----------------------------------------------------------------

_GLOB_NAMES = ["a[1].{ext}", "a1.{ext}", "b*.{ext}", "bx.{ext}", "q?.{ext}", "qx.{ext}", "c]d.{ext}"]


def _write(path, fmt: str, ident: str) -> None:
    if fmt == "csv":
        path.write_bytes(_csv(f"{ident},N,1"))
    elif fmt == "jsonl":
        path.write_text(json.dumps({"id": ident, "name": "N", "phone": "1"}) + "\n")
    else:
        pq.write_table(pa.table({"id": [ident], "name": ["N"], "phone": ["1"]}), path)


@pytest.mark.parametrize("folder_name", ["landing", "land[ing]*"])  # the landing folder's own name too
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_each_file_loads_once_whatever_glob_characters_its_name_holds(tmp_path, warehouse, fmt, folder_name):
    landing = tmp_path / folder_name
    source = _source(fmt, encoding="utf-8")
    folder = landing / fmt / DAY.isoformat()
    folder.mkdir(parents=True)
    names = [name.format(ext=fmt) for name in _GLOB_NAMES]
    for i, name in enumerate(names):
        _write(folder / name, fmt, str(i))
    result = load_partition(warehouse, source, landing, DAY, LOADED_AT)
    assert (result.files, result.rows) == (len(names), len(names))
    loaded = warehouse.execute(f"SELECT _source_file, id FROM raw.src_{fmt} ORDER BY id").fetchall()
    assert loaded == [(f"{fmt}/2026-10-01/{name}", str(i)) for i, name in enumerate(names)]


def test_a_transcoded_file_with_glob_characters_loads_once(landing, warehouse):
    source = _source(encoding="cp1252")
    assert source.encoding == "cp1252"
    land_file(landing, source, DAY, "a[1].csv", "id,name,phone\n1,Renée,5\n".encode("cp1252"))
    land_file(landing, source, DAY, "a1.csv", "id,name,phone\n2,Zoë,6\n".encode("cp1252"))
    result = load_partition(warehouse, source, landing, DAY, LOADED_AT)
    assert result.rows == 2
    assert warehouse.execute("SELECT id, name FROM raw.src_csv ORDER BY id").fetchall() == [
        ("1", "Renée"), ("2", "Zoë")
    ]


def test_the_landing_folder_may_hold_glob_characters_in_its_own_path(tmp_path, warehouse):
    landing = tmp_path / "exports[2026]"
    source = _source()
    land_file(landing, source, DAY, "a.csv", _csv("1,Ann,5"))
    (tmp_path / "exports2").mkdir()  # what the unescaped pattern would match instead
    assert os.path.isdir(landing)
    assert load_partition(warehouse, source, landing, DAY, LOADED_AT).rows == 1
