"""The quality gate on freshly staged partitions: conservation, the GX suite, history, Data Docs.

Shared by the Dagster staging assets and the benchmark, so what is measured is what runs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.governance.quality_results import QualityRow, append_results
from cdm_pipeline.lib.quality.expectations import SUITES
from cdm_pipeline.lib.staging.build import STAGING_SCHEMA, count_conservation
from cdm_pipeline.lib.staging.columns import staging_columns
from cdm_pipeline.lib.warehouse import qualified, quote_ident

CONSERVATION_CHECK = "row_conservation"


@dataclass(frozen=True)
class GateResult:
    suite_result: object  # cdm_pipeline.lib.quality.validate.SuiteResult
    conservation: list[tuple[dt.date, int, int, int]]  # (partition, raw, staged, quarantined)

    @property
    def conserved(self) -> bool:
        return all(raw == staged + held for _, raw, staged, held in self.conservation)


def check_staging(
    conn: duckdb.DuckDBPyConnection, config: CdmConfig, kind: str, dates: list[dt.date], run_id: str
) -> GateResult:
    """Validate the staged partitions, append the results to governance, rebuild Data Docs."""
    from cdm_pipeline.lib.quality.data_docs import write_data_docs
    from cdm_pipeline.lib.quality.validate import validate_frame

    conservation = count_conservation(conn, config, kind, dates)
    needed = {c for spec in SUITES[kind] for c in spec.columns}
    select = ", ".join(quote_ident(c) for c in staging_columns(kind) if c in needed)
    # Only the columns the suite reads: loading all of 1,000,000 contacts into pandas costs more
    # than validating them.
    frame = conn.execute(
        f"SELECT {select} FROM {qualified(STAGING_SCHEMA, kind)} WHERE _partition_date BETWEEN ? AND ?",
        [min(dates), max(dates)],
    ).df()
    result = validate_frame(kind, frame, run_name=f"{kind}-{run_id[:8]}")
    rows = [
        QualityRow(
            table_name=f"staging.{kind}", expectation=o.key, expectation_type=o.gx_type,
            column_name=o.column, severity=o.severity, success=o.success,
            unexpected_count=o.unexpected_count, element_count=o.element_count,
            unexpected_percent=o.unexpected_percent, observed_value=o.observed_value,
        )
        for o in result.outcomes
    ]
    raw = sum(c[1] for c in conservation)
    kept = sum(c[2] + c[3] for c in conservation)
    rows.append(
        QualityRow(
            table_name=f"staging.{kind}", expectation=CONSERVATION_CHECK,
            expectation_type="row_conservation", column_name=None, severity="critical",
            success=raw == kept, unexpected_count=abs(raw - kept), element_count=raw,
            unexpected_percent=None, observed_value=f"raw {raw} = staged + quarantined {kept}",
        )
    )
    append_results(conn, run_id, rows, min(dates), max(dates), result.evaluated_at)
    write_data_docs([result], config.reports_dir / "data_docs")
    return GateResult(result, conservation)
