"""What encryption at rest costs: the same warehouse work on a plain and on an encrypted file.

A synthetic contacts-shaped table (ROWS rows of ids, names, e-mails, phones, dates and amounts) is
written, read in full (a hash over every row, as `cdm warehouse verify` does), aggregated, and
rewritten (`lib.warehouse.rewrite_warehouse`, as an erasure's compaction does) — once on a plain
file and once encrypted, through the project's own opener. Prints one line per step and the
encrypted/plain ratio; appends to benchmarks/encryption.json.

    .venv/bin/python benchmarks/encryption.py [--rows 5000000] [--crypto builtin|httpfs]

`builtin` is DuckDB's mbedtls mode (what machines without the httpfs extension can use); with
`httpfs` DuckDB uses OpenSSL, normally faster (AES-NI).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

from cdm_pipeline.lib.encryption import Encryption
from cdm_pipeline.lib.warehouse import open_warehouse, rewrite_warehouse

RESULTS = Path(__file__).with_name("encryption.json")
KEY = "benchmark-key-0123456789abcdef0123456789"

CREATE = """
CREATE TABLE contacts AS
SELECT i AS id,
    'first' || (i % 5000) AS first_name, 'last' || (i % 20000) AS last_name,
    'person' || i || '@example.org' AS email, '+4479' || lpad((i * 7919 % 100000000)::VARCHAR, 8, '0') AS phone,
    DATE '1950-01-01' + (i % 20000)::INTEGER AS birth_date, (i % 100000) / 100.0 AS amount,
    TIMESTAMP '2026-01-01' + to_seconds(i % 30000000) AS updated_at
FROM range($rows) t(i)
"""
STEPS = {
    "read every row (verify)": "SELECT sum(hash(c)) FROM contacts c",
    "aggregate": "SELECT last_name, count(*), sum(amount) FROM contacts GROUP BY ALL ORDER BY 2 DESC LIMIT 5",
}


def measure(folder: Path, rows: int, encryption: Encryption | None) -> dict[str, float]:
    path = folder / ("encrypted.duckdb" if encryption else "plain.duckdb")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with open_warehouse(path, settings={}, encryption=encryption) as conn:
        conn.execute(CREATE, {"rows": rows})
        conn.execute("CHECKPOINT")
    timings["write + checkpoint"] = time.perf_counter() - started
    with open_warehouse(path, settings={}, read_only=True, encryption=encryption) as conn:
        for name, sql in STEPS.items():
            started = time.perf_counter()
            conn.execute(sql).fetchall()
            timings[name] = time.perf_counter() - started
    started = time.perf_counter()
    rewrite_warehouse(path, settings={}, encryption=encryption, target_encryption=encryption)
    timings["rewrite (compaction)"] = time.perf_counter() - started
    timings["file MB"] = path.stat().st_size / 1e6
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--crypto", choices=["builtin", "httpfs"], default="builtin")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="cdm_encryption_bench_"))
    try:
        plain = measure(folder, args.rows, None)
        encrypted = measure(folder, args.rows, Encryption(KEY, args.crypto))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{args.rows:,} rows, crypto {args.crypto}")
    print(f"{'step':28} {'plain':>9} {'encrypted':>10} {'ratio':>6}")
    for step in plain:
        unit = "" if step == "file MB" else " s"
        ratio = encrypted[step] / plain[step]
        print(f"{step:28} {plain[step]:>7.2f}{unit:2} {encrypted[step]:>8.2f}{unit:2} {ratio:>6.2f}")
    history = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    history.append({
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": args.rows, "crypto": args.crypto,
        "machine": f"{platform.machine()} {platform.system()}", "plain": plain, "encrypted": encrypted,
    })
    RESULTS.write_text(json.dumps(history, indent=2) + "\n")


if __name__ == "__main__":
    main()
