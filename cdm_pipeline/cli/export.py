"""``cdm export segment NAME``: one segment's customer-match file (hashed email and phone).

The output names the segment, the file and the counts; it never shows a customer's values.
"""

from __future__ import annotations

import sys
from pathlib import Path


def export_segment_command(config_path: Path | None, name: str, out: Path | None) -> int:
    """Write the audience file of one segment and print what was written.

    Returns:
        0 when the file was written; 2 for an unknown or ambiguous segment name or when the
        warehouse or the marts do not exist yet; 1 when the export itself failed.
    """
    import duckdb

    from cdm_pipeline.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
    from cdm_pipeline.cli.run import resolve_config
    from cdm_pipeline.lib.exports.audiences import (
        MartsNotBuilt,
        UnknownSegment,
        resolve_segment,
        write_audience_export,
    )
    from cdm_pipeline.lib.warehouse import connect, safe_error_message

    config = resolve_config(config_path)
    try:
        segment = resolve_segment(config, name)
    except UnknownSegment as exc:
        return _usage_error(str(exc), EXIT_USAGE)
    if not config.warehouse.exists():
        return _usage_error(f"no warehouse at {config.warehouse}: run the pipeline first", EXIT_USAGE)
    try:
        conn = connect(config.warehouse)
    except duckdb.IOException:
        print(f"cdm export: the warehouse {config.warehouse} is in use by another process"
              " (a run in progress?); try again when it has finished", file=sys.stderr)
        return EXIT_FAILED
    try:
        export = write_audience_export(conn, config, segment, out.absolute() if out else None)
    except MartsNotBuilt as exc:
        return _usage_error(str(exc), EXIT_USAGE)
    except Exception as exc:
        # A database message can quote the value it failed on: first line, values masked.
        print(f"cdm export: {exc.__class__.__name__}: {safe_error_message(exc)}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        conn.close()
    print(
        f"exported {segment.name}: {export.exported:,} customers -> {export.path.absolute()}"
        f" ({export.members:,} in segment; {export.excluded_no_consent:,} excluded for consent,"
        f" {export.excluded_no_identifier:,} without email or phone)"
    )
    return EXIT_OK


def _usage_error(message: str, status: int) -> int:
    print(f"cdm: error: {message}", file=sys.stderr)
    return status
