"""`cdm demo` end to end through the real CLI: every landed record ends in raw or quarantine."""

import datetime as dt
import re
import subprocess
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

from cdm_pipeline_tests.conftest import CDM, HANG_TIMEOUT, REPO_ROOT, cli_env

pytestmark = pytest.mark.slow


def _records_in_landing(landing: Path, pattern: str, fmt: str) -> int:
    total = 0
    for path in sorted(landing.glob(pattern)):
        if fmt == "parquet":
            total += pq.ParquetFile(path).metadata.num_rows
        else:
            lines = [line for line in path.read_bytes().split(b"\n") if line.strip()]
            total += len(lines) - (1 if fmt == "csv" else 0)
    return total


def test_demo_lands_every_record_in_raw_or_quarantine_and_prints_a_summary(demo_project):
    # The session's `cdm demo` (conftest.DEMO_ARGS), shared with other tests: read only.
    root, out = demo_project.root, demo_project.stdout
    assert "generated demo data for 1,500 people over 3 days from 2026-10-01 (seed 11)" in out
    assert "cdm run 2026-10-01 to 2026-10-03 (3 partitions): succeeded" in out
    assert f"warehouse: {root / 'data' / 'warehouse' / 'cdm.duckdb'}" in out
    assert "cdm ui" in out

    landing = root / "data" / "landing"
    assert (landing / "ground_truth.parquet").exists()
    conn = duckdb.connect(str(root / "data" / "warehouse" / "cdm.duckdb"), read_only=True)
    patterns = {
        "crm_contacts": ("crm/contacts/*/*.csv", "csv"),
        "crm_orders": ("crm/orders/*/*.csv", "csv"),
        "email_subscribers": ("email/subscribers/*/*.jsonl", "jsonl"),
        "email_events": ("email/events/*/*.jsonl", "jsonl"),
        "web_events": ("web/events/*/*.parquet", "parquet"),
    }
    rejected = {}
    for source, (pattern, fmt) in patterns.items():
        rows = conn.execute(f"SELECT count(*) FROM raw.{source}").fetchone()[0]
        rejects = conn.execute(f"SELECT count(*) FROM quarantine.{source}_rejects").fetchone()[0]
        assert rows > 0
        assert rows + rejects == _records_in_landing(landing, pattern, fmt), source
        line = next(text for text in out.splitlines() if text.strip().startswith(f"raw.{source} "))
        assert line.split()[1:] == [f"{rows:,}", f"{rejects:,}"]
        rejected[source] = rejects
    # The demo is messy on purpose: malformed CSV and JSON lines reach quarantine.
    assert rejected["crm_contacts"] >= 3 and rejected["email_events"] >= 1

    # Every loaded CRM record is one the ground truth knows (ids survive as text, exactly).
    truth = pq.read_table(landing / "ground_truth.parquet").to_pandas()
    known = set(truth.loc[truth.source_name == "crm_contacts", "source_record_id"])
    loaded = {row[0] for row in conn.execute("SELECT DISTINCT contact_id FROM raw.crm_contacts").fetchall()}
    assert loaded <= known and len(loaded) > 0.9 * len(known)

    # Staging kept every raw row (staged or quarantined) and flagged the demo's mistyped dates.
    for kind, sources in (("contacts", ["crm_contacts", "email_subscribers"]), ("orders", ["crm_orders"])):
        raw = sum(conn.execute(f"SELECT count(*) FROM raw.{s}").fetchone()[0] for s in sources)
        kept = conn.execute(
            f"SELECT (SELECT count(*) FROM staging.{kind}) + (SELECT count(*) FROM quarantine.{kind})"
        ).fetchone()[0]
        assert kept == raw, kind
    flags = dict(conn.execute(
        "SELECT flag, count(*) FROM (SELECT unnest(quality_flags) AS flag FROM staging.contacts) GROUP BY 1"
    ).fetchall())
    assert flags.get("unparseable_birth_date", 0) > 0 and flags.get("implausible_birth_date", 0) > 0
    reasons = {r[0] for r in conn.execute("SELECT DISTINCT quarantine_reason FROM quarantine.orders").fetchall()}
    assert {"negative_amount", "missing_order_date"} <= reasons
    assert "staging.contacts" in out and "quality checks:" in out
    # The summary names every quarantined count by source and reason, as the warehouse holds it.
    for source, reason, n in conn.execute(
        "SELECT source_name, quarantine_reason, count(*) FROM quarantine.orders GROUP BY ALL"
    ).fetchall():
        assert f"quarantined: {source} {reason} {n:,}" in out

    # The marts describe the last landed day, one row per golden customer.
    golden = conn.execute("SELECT count(*) FROM identity.golden_customers").fetchone()[0]
    for table in ("customer_360", "customer_segments"):
        assert conn.execute(f"SELECT count(*), max(as_of_date) FROM marts.{table}").fetchone() == (
            golden, dt.date(2026, 10, 3))
    assert "marts (as of 2026-10-03):" in out
    # The model's own signals, as resolution_runs holds them.
    precision, recall, alone, untrained = conn.execute(
        "SELECT expected_precision, expected_recall, singleton_share, untrained_levels"
        " FROM identity.resolution_runs ORDER BY resolved_at DESC LIMIT 1"
    ).fetchone()
    assert (f"expected precision {precision:.3f}, expected recall {recall:.3f},"
            f" {alone:.1%} of contact records alone in their cluster") in out
    assert f"untrained levels (weight 0): {len(untrained)}" in out
    # Every nightly audience file exists and holds hashes only, of consenting customers.
    exports = root / "data" / "exports"
    hexes = re.compile(r"^[0-9a-f]{64}$")
    for folder in ("rfm_champions", "high_value_at_risk", "cart_abandoners"):
        lines = (exports / folder / "2026-10-03.csv").read_text().splitlines()
        assert lines[0] == "Email,Phone"
        for line in lines[1:]:
            assert all(hexes.match(cell) for cell in line.split(",") if cell), folder
    champions = len((exports / "rfm_champions" / "2026-10-03.csv").read_text().splitlines()) - 1
    consenting = conn.execute(
        """SELECT count(*) FROM marts.customer_segments s JOIN marts.customer_360 c USING (customer_id)
        WHERE s.rfm_segment = 'Champions' AND c.email_opt_in AND c.do_not_sell IS NOT TRUE
        AND (c.email IS NOT NULL OR c.phone IS NOT NULL)"""
    ).fetchone()[0]
    assert champions == consenting > 0
    conn.close()


def test_a_config_with_a_single_contacts_source_runs_end_to_end(tmp_path):
    landing = tmp_path / "landing"
    generated = subprocess.run(
        [CDM, "generate-demo", "--people", "400", "--days", "2", "--seed", "3", "--out", str(landing)],
        capture_output=True, text=True, env=cli_env(), timeout=HANG_TIMEOUT,
    )
    assert generated.returncode == 0, generated.stderr[-2000:]
    document = yaml.safe_load((REPO_ROOT / "cdm.yaml").read_text())
    document["sources"] = [s for s in document["sources"] if s["name"] == "crm_contacts"]
    document["identity"] = {"model_path": "identity/model.json"}
    document["exports"]["segments"] = ["lifecycle:prospect"]
    document.update(warehouse="wh/cdm.duckdb", landing_dir="landing")
    config = tmp_path / "cdm.yaml"
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    done = subprocess.run(
        [CDM, "run", "--config", str(config), "--from", "2026-10-01", "--to", "2026-10-02"],
        capture_output=True, text=True, env=cli_env(), timeout=HANG_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    conn = duckdb.connect(str(tmp_path / "wh" / "cdm.duckdb"), read_only=True)
    golden = conn.execute("SELECT count(*) FROM identity.golden_customers").fetchone()[0]
    # No orders, e-mail or web sources: empty activity, every customer a prospect.
    assert conn.execute("SELECT count(*) FROM staging.orders").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM marts.customer_journey_events").fetchone() == (0,)
    assert conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE lifecycle_stage = 'prospect') FROM marts.customer_segments"
    ).fetchone() == (golden, golden)
    conn.close()
    assert (tmp_path / "data" / "exports" / "lifecycle_prospect" / "2026-10-02.csv").exists()
