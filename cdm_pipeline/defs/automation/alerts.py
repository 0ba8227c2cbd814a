"""Who hears about a failed run: a run-failure sensor sending the alert configured in ``alerts``.

The sensor runs in the Dagster daemon (``cdm ui`` starts one) and covers runs launched from the
UI, the nightly schedule, the landing sensor and backfills. ``cdm run`` sends its own alert,
because the daemon may not be running when cron starts the CLI; the sensor skips those runs so
one failure gives one alert. The sensor is on when the config names a hook (``alerts.webhook_url``
or ``alerts.command``); it can also be started in the UI (Automation), where it skips every run
until a hook is configured.
"""

from __future__ import annotations

import dagster as dg

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.automation.alerts import LAUNCHED_BY_TAG, alert_for_run, send_alert
from cdm_pipeline.project import project_config

ALERT_SENSOR = "alert_on_run_failure"


def build_alert_sensor(config: CdmConfig) -> dg.SensorDefinition:
    alerts = config.alerts

    @dg.run_failure_sensor(
        name=ALERT_SENSOR,
        default_status=dg.DefaultSensorStatus.RUNNING if alerts.enabled else dg.DefaultSensorStatus.STOPPED,
        description="When a run fails: an alert to the webhook and/or command set in the config's"
        " `alerts` (runs of `cdm run` send their own).",
    )
    def alert_on_run_failure(context: dg.RunFailureSensorContext):
        run = context.dagster_run
        if not alerts.enabled:
            return dg.SkipReason("no alert hook configured (alerts.webhook_url or alerts.command)")
        if run.tags.get(LAUNCHED_BY_TAG) == "cli":
            return dg.SkipReason(f"run {run.run_id[:8]} was started by `cdm run`, which sent its own alert")
        for line in send_alert(alerts, alert_for_run(context.instance, run)):
            context.log.info(f"alert for run {run.run_id[:8]}: {line}")
        return None

    return alert_on_run_failure


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(sensors=[build_alert_sensor(project_config())])
