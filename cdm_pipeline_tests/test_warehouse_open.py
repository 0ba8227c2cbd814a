"""The one way into the warehouse (lib/warehouse.open_warehouse) and the CLI's one answer when it
cannot be had: the configured DuckDB settings reach every connection, the erasure's rewrite of the
file included; a missing warehouse is the same usage error in every command, a locked one the same
failure, within a bounded wait."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import yaml

from cdm_pipeline.cli import EXIT_FAILED, EXIT_USAGE, main
from cdm_pipeline.config import load_config
from cdm_pipeline.lib.personal_data.keyed_hash import KEY_ENV_VAR
from cdm_pipeline.lib.privacy.erasure import compact_warehouse
from cdm_pipeline.lib.warehouse import COMMAND_LOCK_WAIT, WarehouseLocked, open_config_warehouse, open_warehouse

# Values DuckDB's own defaults never take (80% of RAM; every core), in the spelling DuckDB reports.
MEMORY_LIMIT, MEMORY_REPORTED, THREADS = "300MiB", "300.0 MiB", 3


def _settings(conn: duckdb.DuckDBPyConnection) -> tuple[str, int, str]:
    return conn.execute(
        "SELECT current_setting('memory_limit'), current_setting('threads'), current_setting('TimeZone')"
    ).fetchone()


def _write_config(folder: Path, **duckdb_settings: object) -> Path:
    document = {
        "warehouse": "warehouse/cdm.duckdb",
        "landing_dir": "landing",
        "sources": [{
            "name": "crm_contacts", "system": "crm", "kind": "contacts", "format": "csv",
            "path": "crm/{date}/*.csv", "id_column": "contact_id", "columns": {"email": "email"},
        }],
    }
    if duckdb_settings:
        document["duckdb"] = duckdb_settings
    path = folder / "cdm.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def test_open_warehouse_applies_the_configured_memory_limit_threads_and_time_zone(tmp_path):
    path = tmp_path / "new" / "folder" / "cdm.duckdb"
    with open_warehouse(path, settings={"memory_limit": MEMORY_LIMIT, "threads": THREADS}) as conn:
        assert _settings(conn) == (MEMORY_REPORTED, THREADS, "UTC")
        conn.execute("CREATE TABLE t AS SELECT 1 AS x")
    assert path.exists()  # the folder was created for writing
    with pytest.raises(duckdb.ConnectionException):
        conn.execute("SELECT 1")  # closed on leaving the block
    with open_warehouse(path, settings={"threads": 1}, read_only=True) as conn:
        assert _settings(conn)[1:] == (1, "UTC")
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_open_config_warehouse_takes_the_settings_from_the_config_file(tmp_path):
    config = load_config(_write_config(tmp_path, memory_limit=MEMORY_LIMIT, threads=THREADS))
    with open_config_warehouse(config) as conn:
        assert _settings(conn) == (MEMORY_REPORTED, THREADS, "UTC")
    with open_config_warehouse(config, read_only=True) as conn:
        assert _settings(conn) == (MEMORY_REPORTED, THREADS, "UTC")
    # Without a duckdb section DuckDB's defaults stand (the configured values above are not them).
    default = load_config(_write_config(tmp_path))
    with open_config_warehouse(default, read_only=True) as conn:
        assert _settings(conn)[:2] != (MEMORY_REPORTED, THREADS)


def _warehouse_with_rows(path: Path, rows: int = 300_000) -> None:
    with open_warehouse(path, settings={}) as conn:
        conn.execute("CREATE SCHEMA governance")
        conn.execute(f"CREATE TABLE governance.t AS SELECT range AS a, md5(range::VARCHAR) AS b FROM range({rows})")


def test_the_erasure_rewrite_runs_under_the_configured_settings(tmp_path, caplog):
    path = tmp_path / "cdm.duckdb"
    _warehouse_with_rows(path)
    # What the rewrite's own connection reports, read from inside it while it copies.
    with caplog.at_level(logging.INFO, logger="cdm_pipeline.lib.privacy.erasure"):
        compact_warehouse(path, {"memory_limit": MEMORY_LIMIT, "threads": THREADS})
    assert f"memory_limit {MEMORY_REPORTED}, threads {THREADS}" in caplog.text
    with open_warehouse(path, settings={}, read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM governance.t").fetchone() == (300_000,)


def test_a_memory_limit_too_small_for_the_rewrite_stops_it_and_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "cdm.duckdb"
    _warehouse_with_rows(path)
    before = path.read_bytes()
    # 1 MB cannot hold the copy: the limit is in force inside the rewrite (DuckDB's default would
    # copy these few MB without complaint, as the last step shows).
    with pytest.raises(duckdb.OutOfMemoryException):
        compact_warehouse(path, {"memory_limit": "1MB", "threads": 1})
    assert path.read_bytes() == before
    with open_warehouse(path, settings={}, read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM governance.t").fetchone() == (300_000,)
    compact_warehouse(path, {})
    with open_warehouse(path, settings={}, read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM governance.t").fetchone() == (300_000,)


# Every command that needs the warehouse; {out} is a path under the test's folder.
COMMANDS = {
    "quality report": ["quality", "report"],
    "report": ["report"],
    "identity train": ["identity", "train"],
    "identity evaluate": ["identity", "evaluate", "--truth", "{out}/truth.csv"],
    "identity explain": ["identity", "explain", "C000001"],
    "export segment": ["export", "segment", "Champions"],
    "export analyst": ["export", "analyst", "--out", "{out}/analyst"],
    "privacy erase": ["privacy", "erase", "--email", "someone@example.org"],
    "privacy export": ["privacy", "export", "--customer-id", "C000001", "--out", "{out}/person.json"],
    "privacy requests": ["privacy", "requests"],
}


def _argv(command: str, config: Path, out: Path) -> list[str]:
    return [arg.format(out=out) for arg in COMMANDS[command]] + ["--config", str(config)]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_warehouse_is_the_same_usage_error_in_every_command(command, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(KEY_ENV_VAR, "test-privacy-key-0123456789")
    config = _write_config(tmp_path)
    warehouse = tmp_path / "warehouse" / "cdm.duckdb"
    status = main(_argv(command, config, tmp_path))
    out, err = capsys.readouterr()
    assert (status, out) == (EXIT_USAGE, "")
    assert err == f"cdm: error: no warehouse at {warehouse}: run the pipeline first (`cdm run` or `cdm demo`)\n"
    assert not warehouse.exists()  # no command creates an empty one


def _hold_lock(path: Path) -> subprocess.Popen:
    """Another process holding ``path`` open for writing (a run in progress) until a line arrives
    on its stdin; it then keeps the lock one more second and exits."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]);"
         " print('locked', flush=True); sys.stdin.readline(); time.sleep(1)", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


@pytest.fixture(scope="module")
def locked_warehouse(tmp_path_factory):
    """A warehouse that another process holds open for writing (a run in progress)."""
    folder = tmp_path_factory.mktemp("locked")
    config = _write_config(folder)
    warehouse = folder / "warehouse" / "cdm.duckdb"
    with open_warehouse(warehouse, settings={}) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    holder = _hold_lock(warehouse)
    try:
        yield folder, config, warehouse
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_warehouse_held_by_another_process_is_the_same_failure_in_every_command(
    command, locked_warehouse, capsys, monkeypatch
):
    monkeypatch.setenv(KEY_ENV_VAR, "test-privacy-key-0123456789")
    folder, config, warehouse = locked_warehouse
    started = time.monotonic()
    status = main(_argv(command, config, folder))
    waited = time.monotonic() - started
    out, err = capsys.readouterr()
    assert (status, out) == (EXIT_FAILED, "")
    assert err == (
        f"cdm: error: the warehouse {warehouse} is in use by another process (a run in progress, the UI or a"
        " DuckDB session?); try again when it has finished\n"
    )
    # It waited for a lock that a process about to exit would release, and gave up: the bound
    # guards against waiting for the run to end (minutes), not a busy machine's slowness.
    assert COMMAND_LOCK_WAIT <= waited < 60


def test_a_lock_released_while_waiting_is_taken(tmp_path):
    path = tmp_path / "cdm.duckdb"
    with open_warehouse(path, settings={}):
        pass
    holder = _hold_lock(path)
    try:
        with pytest.raises(WarehouseLocked):
            with open_warehouse(path, settings={}, lock_wait=0):
                pass
        holder.stdin.write("release\n")
        holder.stdin.flush()  # the holder lets go one second from now, while the opener waits
        started = time.monotonic()
        with open_warehouse(path, settings={}, lock_wait=60) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert time.monotonic() - started >= 0.5  # it did wait for the lock
    finally:
        holder.kill()
        holder.wait()
