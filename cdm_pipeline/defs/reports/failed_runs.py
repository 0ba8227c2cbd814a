"""A governance report for a run that failed before its reports step, as it fails.

The reports asset never runs in a failed run, yet a failed night is the one governance staff
most need to read about. ``cdm run`` writes that report itself; this sensor (in the daemon that
``cdm ui`` starts) does it for runs from the UI, the nightly schedule, the landing sensor and
backfills.
"""

from __future__ import annotations

import dagster as dg
import duckdb

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.automation.alerts import LAUNCHED_BY_TAG, alert_for_run
from cdm_pipeline.lib.disk_space import why_warehouse_failed
from cdm_pipeline.lib.reports.governance_report import write_governance_report
from cdm_pipeline.lib.reports.runs import failed_outcome, started_at_of
from cdm_pipeline.lib.warehouse import NO_LOCK_WAIT, WarehouseLocked, open_config_warehouse
from cdm_pipeline.project import project_config

REPORT_SENSOR = "report_failed_run"


def build_failed_run_report_sensor(config: CdmConfig) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name=REPORT_SENSOR,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="When a run fails: its governance report (reports/runs/<date>/), which the"
        " run's own reports step never wrote (runs of `cdm run` write theirs).",
    )
    def report_failed_run(context: dg.RunFailureSensorContext):
        run = context.dagster_run
        if run.tags.get(LAUNCHED_BY_TAG) == "cli":
            return dg.SkipReason(f"run {run.run_id[:8]} was started by `cdm run`, which wrote its report")
        if not config.warehouse.exists():
            return dg.SkipReason("no warehouse yet: nothing to report")
        steps = [step for step, _ in alert_for_run(context.instance, run).failed_steps]
        record = context.instance.get_run_record_by_id(run.run_id)
        started_at = started_at_of(record.start_time) if record is not None else None
        try:
            with open_config_warehouse(config, lock_wait=NO_LOCK_WAIT) as conn:
                report = write_governance_report(
                    conn, config, run.run_id, outcome=failed_outcome(steps), started_at=started_at
                )
        except WarehouseLocked:
            # Another run holds the warehouse already; the page can be written once it is done.
            return dg.SkipReason(
                f"the warehouse is in use: write the report with `cdm report --run-id {run.run_id}`"
            )
        except (duckdb.Error, OSError) as exc:
            # A full disk or a broken file (often why the run failed): say so, and keep the sensor alive.
            return dg.SkipReason(
                f"the report could not be written ({why_warehouse_failed(exc, config.warehouse)}): write it"
                f" later with `cdm report --run-id {run.run_id}`"
            )
        context.log.info(f"governance report of failed run {run.run_id[:8]}: {report.page}")
        return None

    return report_failed_run


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(sensors=[build_failed_run_report_sensor(project_config())])
