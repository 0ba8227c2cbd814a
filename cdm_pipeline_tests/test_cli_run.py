"""`cdm run` through the real CLI in a subprocess: a multi-partition backfill with the default
multiprocess executor, the duckdb pool, failures and clean-up after a killed run.

`materialize()` runs everything in one process and could never show a DuckDB lock error; only
separate step processes can, so these tests run the console script.
"""

import datetime as dt
import json
import subprocess
import textwrap
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdm_pipeline_tests.conftest import CDM, cli_env, write_config

pytestmark = pytest.mark.slow

FIRST = dt.date(2026, 10, 1)
DAYS = [FIRST + dt.timedelta(days=i) for i in range(7)]

CONFIG = textwrap.dedent(
    """
    warehouse: warehouse/cdm.duckdb
    landing_dir: landing
    start_date: 2026-10-01
    sources:
      - {name: crm_contacts, system: crm, kind: contacts, format: csv, path: "crm/contacts/{date}/*.csv",
         id_column: contact_id, columns: {first_name: FirstName, email: Email}}
      - {name: crm_orders, system: crm, kind: orders, format: csv, path: "crm/orders/{date}/*.csv",
         id_column: order_id, columns: {contact_id: contact_id, amount: amount}}
      - {name: email_subscribers, system: email, kind: contacts, format: jsonl,
         path: "email/subscribers/{date}/*.jsonl", id_column: subscriber_id, columns: {email: email}}
      - {name: email_events, system: email, kind: email_events, format: jsonl,
         path: "email/events/{date}/*.jsonl", id_column: event_id, columns: {event_type: event_type}}
      - {name: web_events, system: web, kind: web_events, format: parquet,
         path: "web/events/{date}/*.parquet", id_column: event_id, columns: {client_id: client_id}}
    """
)


def _land_week(root: Path) -> dict[str, int]:
    """A week of small files for five sources; returns the good rows expected per source."""
    expected = dict.fromkeys(["crm_contacts", "crm_orders", "email_subscribers", "email_events", "web_events"], 0)
    for n, day in enumerate(DAYS, start=1):
        d = day.isoformat()
        for sub in ("crm/contacts", "crm/orders", "email/subscribers", "email/events", "web/events"):
            (root / sub / d).mkdir(parents=True, exist_ok=True)
        contacts = "contact_id,FirstName,Email\n" + "".join(f"C{n}{i},Ann{i},a{i}@x.com\n" for i in range(n))
        (root / "crm/contacts" / d / "part1.csv").write_text(contacts + "bad,line,with,extra\n")
        (root / "crm/orders" / d / "o.csv").write_text(
            "order_id,contact_id,amount\n" + "".join(f"O{n}{i},C{n}{i},{i}.50\n" for i in range(2 * n))
        )
        (root / "email/subscribers" / d / "s.jsonl").write_text(
            "".join(json.dumps({"subscriber_id": f"S{n}{i}", "email": f" A{i}@X.com "}) + "\n" for i in range(n))
        )
        (root / "email/events" / d / "e.jsonl").write_text(
            "".join(json.dumps({"event_id": f"E{n}{i}", "event_type": "open"}) + "\n" for i in range(3))
            + '{"event_id": "broken\n'
        )
        pq.write_table(
            pa.table({"event_id": [f"W{n}{i}" for i in range(n)], "client_id": [f"{i}.{n}" for i in range(n)]}),
            root / "web/events" / d / "w.parquet",
        )
        expected["crm_contacts"] += n
        expected["crm_orders"] += 2 * n
        expected["email_subscribers"] += n
        expected["email_events"] += 3
        expected["web_events"] += n
    return expected


def _cdm(*args: str, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([CDM, *args], capture_output=True, text=True, env=cli_env(**env), timeout=timeout)


def _table_snapshot(warehouse: Path) -> dict[str, list[tuple]]:
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        # governance.* and the identity run logs are history (append-only by design);
        # identity_work is the identity stage's scratch; _loaded_at, run ids and resolution
        # times say when, not what.
        history = ("identity.resolution_runs", "identity.customer_id_changes",
                   "identity.oversize_clusters", "identity.overrides_applied")
        when = ("_loaded_at", "run_id", "last_run_id", "resolved_at")
        tables = conn.execute(
            "SELECT table_schema || '.' || table_name, list(column_name) FILTER (WHERE column_name IN ?)"
            " FROM information_schema.columns WHERE table_schema NOT IN ('governance', 'identity_work')"
            " GROUP BY 1 ORDER BY 1",
            [list(when)],
        ).fetchall()
        return {
            t: conn.execute(
                f"SELECT * {'EXCLUDE (' + ', '.join(cols) + ')' if cols else ''} FROM {t} ORDER BY ALL"
            ).fetchall()
            for t, cols in tables
            if t not in history
        }
    finally:
        conn.close()


def _step_intervals(home: Path, run_id_prefix: str) -> dict[str, tuple[float, float]]:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = next(r for r in instance.get_runs() if r.run_id.startswith(run_id_prefix))
        records = instance.all_logs(
            run.run_id,
            of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS},
        )
        spans: dict[str, list[float]] = {}
        for record in records:
            spans.setdefault(record.step_key, []).append(record.timestamp)
        assert instance.event_log_storage.get_concurrency_info("duckdb").slot_count == 1
    return {step: (min(ts), max(ts)) for step, ts in spans.items()}


def _run_id(stdout: str) -> str:
    return stdout.split("(Dagster run ")[1][:8]


def test_seven_partition_backfill_runs_every_warehouse_step_alone_and_reruns_identically(tmp_path):
    expected = _land_week(tmp_path / "landing")
    config = write_config(tmp_path, CONFIG)
    done = _cdm("run", "--config", str(config), "--from", "2026-10-01", "--to", "2026-10-07")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Could not set lock" not in done.stdout + done.stderr
    assert "2026-10-01 to 2026-10-07 (7 partitions): succeeded" in done.stdout
    for source, rows in expected.items():
        rejects = 7 if source in ("crm_contacts", "email_events") else 0
        assert f"raw.{source}" in done.stdout
        line = next(l for l in done.stdout.splitlines() if l.strip().startswith(f"raw.{source} "))
        assert line.split()[1:] == [f"{rows:,}", f"{rejects:,}"]

    # The run storage was created beside the config, carrying the project's pool settings.
    home = tmp_path / ".dagster_home"
    assert "default_limit: 1" in (home / "dagster.yaml").read_text()
    spans = sorted(_step_intervals(home, _run_id(done.stdout)).values())
    # One step per source and per staging kind covers all 7 days; identity, the marts, the
    # audience files and the privacy-request queue run once.
    assert len(spans) == 5 + 4 + 1 + 1 + 1 + 1
    for (_, end), (next_start, _) in zip(spans, spans[1:]):
        assert end <= next_start, "two warehouse steps overlapped: the duckdb pool did not hold"

    snapshot = _table_snapshot(tmp_path / "warehouse" / "cdm.duckdb")
    assert len(snapshot["raw.crm_contacts"]) == expected["crm_contacts"]
    assert len(snapshot["staging.contacts"]) == expected["crm_contacts"] + expected["email_subscribers"]
    assert {row[-1] for row in snapshot["raw.web_events"]} == set(DAYS)  # _partition_date

    again = _cdm("run", "--config", str(config), "--from", "2026-10-01", "--to", "2026-10-07")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(0 new, 0 merged, 0 split, 0 retired ids; exact identifiers only, no model yet)" in again.stdout
    assert _table_snapshot(tmp_path / "warehouse" / "cdm.duckdb") == snapshot


def test_failed_step_exits_1_naming_file_and_column_and_keeps_the_old_partition(tmp_path):
    _land_week(tmp_path / "landing")
    config = write_config(tmp_path, CONFIG)
    assert _cdm("run", "--config", str(config), "--date", "2026-10-02").returncode == 0
    before = _table_snapshot(tmp_path / "warehouse" / "cdm.duckdb")
    # The CRM export dropped its Email column.
    broken = tmp_path / "landing/crm/contacts/2026-10-02/part1.csv"
    broken.write_text("contact_id,FirstName\nC21,Zed\n")
    done = _cdm("run", "--config", str(config), "--date", "2026-10-02")
    assert done.returncode == 1
    assert "2026-10-02: FAILED" in done.stdout
    assert (
        "failed: extract_crm_contacts: source 'crm_contacts': crm/contacts/2026-10-02/part1.csv"
        " has no column 'Email'" in done.stderr
    )
    assert "Zed" not in done.stdout + done.stderr
    after = _table_snapshot(tmp_path / "warehouse" / "cdm.duckdb")
    assert after["raw.crm_contacts"] == before["raw.crm_contacts"]


def test_cli_run_frees_the_pool_slot_of_a_run_whose_process_died(tmp_path):
    import dagster as dg
    from dagster._core.storage.dagster_run import DagsterRun

    _land_week(tmp_path / "landing")
    config = write_config(tmp_path, CONFIG)
    home = tmp_path / ".dagster_home"
    assert _cdm("run", "--config", str(config), "--date", "2026-10-01").returncode == 0

    # A cdm run killed with -9 mid-step: its run still says STARTED and it holds the only slot.
    dead = subprocess.Popen(["true"])
    dead.wait()
    run_id = str(uuid.uuid4())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_run(
            DagsterRun(
                job_name="all_assets",
                run_id=run_id,
                status=dg.DagsterRunStatus.STARTED,
                tags={"cdm/launched_by": "cli", "cdm/pid": str(dead.pid), "cdm/host": __import__("socket").gethostname()},
            )
        )
        claim = instance.event_log_storage.claim_concurrency_slot("duckdb", run_id, "extract_crm_contacts")
        assert claim.is_claimed

    done = _cdm("run", "--config", str(config), "--date", "2026-10-01", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "released the pool slots of 1 run(s) whose process had died" in done.stdout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.event_log_storage.get_concurrency_info("duckdb").active_slot_count == 0
