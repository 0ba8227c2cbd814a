"""The baseline for extract: a plain DuckDB load of the same landing files, nothing else.

Each source's files for the date range are read with DuckDB's own reader (every column as text,
malformed lines skipped) into a table of a fresh warehouse file: what loading them "by hand"
costs. The pipeline's extract does more per file — a transaction per partition, load metadata,
rejected lines kept with their reason, the suppression list — and the ratio says what that costs.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.extract import partition_files


def plain_scan(config: CdmConfig, first: dt.date, last: dt.date, database: Path) -> dict:
    """Seconds and rows of loading every source's files from ``first`` to ``last``."""
    import duckdb

    database.unlink(missing_ok=True)
    conn = duckdb.connect(str(database))
    rows = 0
    started = time.monotonic()
    for source in config.sources:
        days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
        files = sorted({str(f) for day in days for f in partition_files(source, config.landing_dir, day)})
        if not files:
            continue
        if source.format == "csv":
            reader = (
                "read_csv($files, all_varchar = true, header = true, delim = $delim,"
                " union_by_name = true, ignore_errors = true)"
            )
            params = {"files": files, "delim": source.delimiter}
        elif source.format == "jsonl":
            reader = "read_json($files, format = 'newline_delimited', union_by_name = true, ignore_errors = true)"
            params = {"files": files}
        else:
            reader = "read_parquet($files, union_by_name = true)"
            params = {"files": files}
        conn.execute(f'CREATE TABLE "{source.name}" AS SELECT * FROM {reader}', params)
        rows += conn.execute(f'SELECT count(*) FROM "{source.name}"').fetchall()[0][0]
    seconds = time.monotonic() - started
    conn.close()
    database.unlink(missing_ok=True)
    return {"seconds": round(seconds, 2), "rows": int(rows)}
