"""The quality gate on freshly staged partitions: conservation, the GX suite, history, Data Docs.

Shared by the Dagster staging assets and the benchmark, so what is measured is what runs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

import duckdb

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.catalog import staging_table
from cdm_pipeline.lib.governance.quality_results import QualityRow, append_results
from cdm_pipeline.lib.quality.expectations import SUITES
from cdm_pipeline.lib.staging.build import count_conservation
from cdm_pipeline.lib.staging.columns import staging_columns
from cdm_pipeline.lib.staging.loss import CHECK_NAME as LOSS_CHECK_NAME
from cdm_pipeline.lib.staging.loss import loss_problems
from cdm_pipeline.lib.warehouse import quote_ident

CONSERVATION_CHECK = "row_conservation"
LOSS_CHECK = LOSS_CHECK_NAME


@dataclass(frozen=True)
class GateResult:
    outcomes: list  # one ExpectationOutcome per expectation, combined over the partitions
    conservation: list[tuple[dt.date, int, int, int]]  # (partition, raw, staged, quarantined)
    partitions_failed: dict[str, list[dt.date]]  # expectation key -> partitions where it failed
    loss_problems: list[str] = field(default_factory=list)  # no_silent_loss: limits exceeded

    @property
    def conserved(self) -> bool:
        return all(raw == staged + held for _, raw, staged, held in self.conservation)


def check_staging(
    conn: duckdb.DuckDBPyConnection, config: CdmConfig, kind: str, dates: list[dt.date], run_id: str,
    staged: list | None = None,
) -> GateResult:
    """Validate each staged partition, append the results to governance, rebuild Data Docs.

    One validation per partition: a bad night is named as such in the history, and memory is
    bounded by the largest day rather than by the whole backfill (5.3 M web events at once took
    3.9 GB in pandas).
    """
    from cdm_pipeline.lib.quality.data_docs import write_data_docs
    from cdm_pipeline.lib.quality.validate import validate_frame

    conservation = count_conservation(conn, config, kind, dates)
    needed = {c for spec in SUITES[kind] for c in spec.columns}
    select = ", ".join(quote_ident(c) for c in staging_columns(kind) if c in needed)
    results = []
    all_problems: list[str] = []
    for day, (_, raw, in_staging, held) in zip(dates, conservation, strict=True):
        # Only the columns the suite reads: loading whole rows into pandas costs more than
        # validating them.
        frame = conn.execute(
            f"SELECT {select} FROM {staging_table(kind)} WHERE _partition_date = ?", [day]
        ).df()
        result = validate_frame(kind, frame, run_name=f"{kind}-{run_id[:8]}-{day}")
        rows = [
            QualityRow(
                table_name=staging_table(kind).full_name, expectation=o.key, expectation_type=o.gx_type,
                column_name=o.column, severity=o.severity, success=o.success,
                unexpected_count=o.unexpected_count, element_count=o.element_count,
                unexpected_percent=o.unexpected_percent, observed_value=o.observed_value,
            )
            for o in result.outcomes
        ]
        rows.append(
            QualityRow(
                table_name=staging_table(kind).full_name, expectation=CONSERVATION_CHECK,
                expectation_type="row_conservation", column_name=None, severity="critical",
                success=raw == in_staging + held, unexpected_count=abs(raw - in_staging - held),
                element_count=raw, unexpected_percent=None,
                observed_value=f"raw {raw} = staged {in_staging} + quarantined {held}",
            )
        )
        if staged is not None:
            losses = [loss for part in staged if part.partition_date == day for loss in part.losses]
            problems = loss_problems(config, losses)
            all_problems += problems
            rows.append(
                QualityRow(
                    table_name=staging_table(kind).full_name, expectation=LOSS_CHECK,
                    expectation_type="loss_limits", column_name=None, severity="critical",
                    success=not problems, unexpected_count=sum(loss.quarantined for loss in losses),
                    element_count=sum(loss.records for loss in losses), unexpected_percent=None,
                    observed_value="; ".join(problems) or "within loss_limits",
                )
            )
        append_results(conn, run_id, rows, day, day, result.evaluated_at)
        results.append((day, result))
    write_data_docs([result for _, result in results], config.reports_dir / "data_docs")
    return GateResult(
        outcomes=_combine([result for _, result in results]),
        conservation=conservation,
        partitions_failed={
            o.key: [day for day, r in results for x in r.outcomes if x.key == o.key and not x.success]
            for o in results[0][1].outcomes
        },
        loss_problems=all_problems,
    )


def _combine(results: list) -> list:
    """One outcome per expectation over several partitions: fails if any partition failed."""
    combined = []
    for outcomes in zip(*(r.outcomes for r in results), strict=True):
        first = outcomes[0]
        unexpected = sum(o.unexpected_count or 0 for o in outcomes)
        elements = sum(o.element_count or 0 for o in outcomes)
        failed = sum(1 for o in outcomes if not o.success)
        combined.append(
            replace(
                first,
                success=failed == 0,
                unexpected_count=unexpected,
                element_count=elements,
                unexpected_percent=100.0 * unexpected / elements if elements else None,
                observed_value=(
                    f"failed in {failed} of {len(outcomes)} partitions" if failed
                    else (first.observed_value if len(outcomes) == 1 else None)
                ),
            )
        )
    return combined
