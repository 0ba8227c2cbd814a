"""``cdm export segment NAME``: one segment's customer-match file (hashed email and phone).
``cdm export analyst --out DIR``: the marts as Parquet for analysts, identifiers removed or hashed.

The output names the segment or the tables, the files and the counts; it never shows a customer's
values.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cdm_pipeline.cli.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CommandError
from cdm_pipeline.lib.catalog import MARTS


def export_segment_command(config_path: Path | None, name: str, out: Path | None) -> int:
    """Write the audience file of one segment and print what was written.

    Returns:
        0 when the file was written; 2 for an unknown or ambiguous segment name or when the
        warehouse or the marts do not exist yet; 1 when the export itself failed.
    """

    from cdm_pipeline.cli.config_file import resolve_config
    from cdm_pipeline.cli.warehouse_access import command_warehouse
    from cdm_pipeline.lib.exports.audiences import (
        MartsNotBuilt,
        UnknownSegment,
        resolve_segment,
        write_audience_export,
    )

    config = resolve_config(config_path)
    try:
        segment = resolve_segment(config, name)
    except UnknownSegment as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    with command_warehouse(config) as conn, _refusals(MartsNotBuilt):
        export = write_audience_export(conn, config, segment, out.absolute() if out else None)
    print(
        f"exported {segment.name}: {export.exported:,} customers -> {export.path.absolute()}"
        f" ({export.members:,} in segment; {export.excluded_no_consent:,} excluded for consent,"
        f" {export.excluded_no_identifier:,} without email or phone)"
    )
    return EXIT_OK


def export_analyst_command(config_path: Path | None, out: Path) -> int:
    """Write the marts as Parquet for analysts (identifiers removed or hashed) and print what was written.

    Returns:
        0 when the export was written; 2 when the privacy key is missing, the folder holds
        something other than a previous analyst export, or the warehouse or the marts do not exist
        yet; 1 when the export itself failed (nothing is left half-written).
    """

    from cdm_pipeline.cli.config_file import resolve_config
    from cdm_pipeline.cli.warehouse_access import command_warehouse
    from cdm_pipeline.lib.personal_data.keyed_hash import MissingPrivacyKey, privacy_key
    from cdm_pipeline.lib.privacy.analyst_export import (
        MANIFEST,
        ExportTargetError,
        MartsNotBuilt,
        check_export_target,
        rule_counts,
        write_analyst_export,
    )

    config = resolve_config(config_path)
    try:
        key = privacy_key()
        target = out.absolute()
        check_export_target(target)
    except (MissingPrivacyKey, ExportTargetError) as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    with command_warehouse(config) as conn, _refusals(MartsNotBuilt, ExportTargetError):
        export = write_analyst_export(conn, target, key)
    print(f"analyst export of the marts as of {export.as_of_date} -> {export.path}")
    names = {table: f"{MARTS}.{table}" for table in export.rows}
    width = max(len(name) for name in names.values())
    for table, rows in export.rows.items():
        print(f"  {names[table].ljust(width)} {rows:>12,} rows -> {table}.parquet")
    counts = rule_counts()
    print(
        f"  {counts['drop']} columns dropped, {counts['hash']} hashed with the privacy key,"
        f" {counts['transform']} transformed: see {MANIFEST}"
    )
    return EXIT_OK


@contextmanager
def _refusals(*usage_errors: type[Exception]) -> Iterator[None]:
    """``usage_errors`` become ``EXIT_USAGE`` refusals; any other failure of the export ``EXIT_FAILED``."""
    from cdm_pipeline.lib.warehouse import WarehouseLocked, safe_error_message

    try:
        yield
    except usage_errors as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    except (CommandError, WarehouseLocked):
        raise
    except Exception as exc:
        # A database message can quote the value it failed on: first line, values masked.
        raise CommandError(
            f"{exc.__class__.__name__}: {safe_error_message(exc)}", EXIT_FAILED, prefix="cdm export"
        ) from None
