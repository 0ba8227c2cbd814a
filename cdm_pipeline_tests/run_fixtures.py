"""Tiny landed days for five sources, and a content snapshot of the warehouse, shared by the
tests that drive real runs (`cdm run`, UI backfills) in subprocesses."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import textwrap
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from cdm_pipeline_tests.conftest import CDM, HANG_TIMEOUT, cli_env

FIRST = dt.date(2026, 10, 1)
SOURCES = ("crm_contacts", "crm_orders", "email_subscribers", "email_events", "web_events")

CONFIG = textwrap.dedent(
    """
    warehouse: warehouse/cdm.duckdb
    landing_dir: landing
    start_date: 2026-10-01
    sources:
      - {name: crm_contacts, system: crm, kind: contacts, format: csv, path: "crm/contacts/{date}/*.csv",
         id_column: contact_id, columns: {first_name: FirstName, email: Email}}
      - {name: crm_orders, system: crm, kind: orders, format: csv, path: "crm/orders/{date}/*.csv",
         id_column: order_id, columns: {contact_id: contact_id, amount: amount, order_date: order_date}}
      - {name: email_subscribers, system: email, kind: contacts, format: jsonl,
         path: "email/subscribers/{date}/*.jsonl", id_column: subscriber_id, columns: {email: email}}
      - {name: email_events, system: email, kind: email_events, format: jsonl,
         path: "email/events/{date}/*.jsonl", id_column: event_id,
         columns: {event_type: event_type, occurred_at: occurred_at, subscriber_id: subscriber_id}}
      - {name: web_events, system: web, kind: web_events, format: parquet,
         path: "web/events/{date}/*.parquet", id_column: event_id,
         columns: {client_id: client_id, occurred_at: event_timestamp}}
    """
)


def days(count: int) -> list[dt.date]:
    return [FIRST + dt.timedelta(days=i) for i in range(count)]


def land_days(root: Path, count: int) -> dict[str, int]:
    """``count`` days of small files for the five sources of CONFIG, from FIRST.

    Day n holds n contacts (plus one line with too many fields: a reject), 2n orders, n
    subscribers, 3 e-mail events (plus a broken JSON line) and n web events, each dated, so
    staging keeps them (an undated order would be quarantined and stop the run at
    no_silent_loss). Returns the good rows expected per source.
    """
    expected = dict.fromkeys(SOURCES, 0)
    for n, day in enumerate(days(count), start=1):
        d = day.isoformat()
        for sub in ("crm/contacts", "crm/orders", "email/subscribers", "email/events", "web/events"):
            (root / sub / d).mkdir(parents=True, exist_ok=True)
        contacts = "contact_id,FirstName,Email\n" + "".join(f"C{n}_{i},Ann{i},a{i}@x.com\n" for i in range(n))
        (root / "crm/contacts" / d / "part1.csv").write_text(contacts + "bad,line,with,extra\n")
        (root / "crm/orders" / d / "o.csv").write_text(
            "order_id,contact_id,amount,order_date\n"
            + "".join(f"O{n}_{i},C{n}_{i},{i}.50,{d}T12:00:00Z\n" for i in range(2 * n))
        )
        (root / "email/subscribers" / d / "s.jsonl").write_text(
            "".join(json.dumps({"subscriber_id": f"S{n}_{i}", "email": f" A{i}@X.com "}) + "\n" for i in range(n))
        )
        (root / "email/events" / d / "e.jsonl").write_text(
            "".join(json.dumps({"event_id": f"E{n}_{i}", "event_type": "open", "subscriber_id": f"S{n}_0",
                                "occurred_at": f"{d}T08:00:00Z"}) + "\n" for i in range(3))
            + '{"event_id": "broken\n'
        )
        pq.write_table(
            pa.table({"event_id": [f"W{n}_{i}" for i in range(n)], "client_id": [f"{i}.{n}" for i in range(n)],
                      "event_timestamp": [f"{d}T09:00:00Z"] * n}),
            root / "web/events" / d / "w.parquet",
        )
        expected["crm_contacts"] += n
        expected["crm_orders"] += 2 * n
        expected["email_subscribers"] += n
        expected["email_events"] += 3
        expected["web_events"] += n
    return expected


def cdm(*args: str, timeout: int = HANG_TIMEOUT, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([CDM, *args], capture_output=True, text=True, env=cli_env(**env), timeout=timeout)


def run_id_prefix(stdout: str) -> str:
    """The 8 characters `cdm run` prints after "(Dagster run "."""
    return stdout.split("(Dagster run ")[1][:8]


def table_snapshot(warehouse: Path) -> dict[str, list[tuple]]:
    """Every table's rows, sorted, without the columns that say when rather than what."""
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


def step_intervals(home: Path, run_id_prefix: str) -> dict[str, tuple[float, float]]:
    """(start, end) of every step of the run whose id starts with ``run_id_prefix``."""
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
