"""``cdm quality report``: the latest quality results per staging table, and where the HTML is."""

from __future__ import annotations

from pathlib import Path

from cdm_pipeline.cli.exit_codes import EXIT_FAILED, EXIT_OK


def quality_report_command(config_path: Path | None) -> int:
    from cdm_pipeline.cli.config_file import resolve_config
    from cdm_pipeline.cli.warehouse_access import command_warehouse
    from cdm_pipeline.lib.catalog import QUALITY_RESULTS
    from cdm_pipeline.lib.governance.quality_results import LATEST_PER_TABLE
    from cdm_pipeline.lib.warehouse import table_exists

    config = resolve_config(config_path)
    docs = config.reports_dir / "data_docs" / "index.html"
    with command_warehouse(config, read_only=True) as conn:
        rows = conn.execute(LATEST_PER_TABLE).fetchall() if table_exists(conn, QUALITY_RESULTS) else []
    if not rows:
        print("no quality results yet: run `cdm run` or `cdm demo` first")
        return EXIT_FAILED
    current = None
    failed_critical = 0
    for table, expectation, severity, success, unexpected, elements, start, end, at, run_id in rows:
        if table != current:
            current = table
            print(f"{table}  (partitions {start}..{end}, evaluated {at:%Y-%m-%d %H:%M} UTC, run {run_id[:8]})")
        status = "ok  " if success else ("FAIL" if severity == "critical" else "warn")
        failed_critical += (not success) and severity == "critical"
        counts = f"{unexpected or 0:,} of {elements or 0:,}" if elements is not None else ""
        print(f"  {status} {severity:<8} {expectation:<32} {counts}")
    print(f"Data Docs: {docs}" + ("" if docs.exists() else " (not written yet)"))
    return EXIT_FAILED if failed_critical else EXIT_OK
