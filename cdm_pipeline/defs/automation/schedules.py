"""When the pipeline runs by itself: a nightly schedule and a sensor on the landing folder.

Both request runs of the ``all_assets`` job for one daily partition: extract and staging for that
day, then identity, the marts and the audience files, which the blocking quality checks gate
exactly as in ``cdm run``. Both are off unless the config turns them on (``schedule.enabled``,
``landing_sensor.enabled``); they can also be started in the UI (Automation).
"""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo

import dagster as dg

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.defs.jobs import ALL_ASSETS_JOB
from cdm_pipeline.lib.automation.landing import landed_partitions
from cdm_pipeline.project import first_partition_date, project_config

NIGHTLY_SCHEDULE = "nightly"
LANDING_SENSOR = "landing_files"


def build_nightly_schedule(config: CdmConfig) -> dg.ScheduleDefinition:
    hour, minute = (int(part) for part in config.schedule.time.split(":"))

    @dg.schedule(
        name=NIGHTLY_SCHEDULE,
        job_name=ALL_ASSETS_JOB,
        cron_schedule=f"{minute} {hour} * * *",
        execution_timezone=config.schedule.timezone,
        default_status=(
            dg.DefaultScheduleStatus.RUNNING if config.schedule.enabled else dg.DefaultScheduleStatus.STOPPED
        ),
        description=f"Every day at {config.schedule.time} ({config.schedule.timezone}): the previous day's"
        " partition and everything downstream.",
    )
    def nightly(context: dg.ScheduleEvaluationContext):
        # "Yesterday" is a day of the partitions' time zone, whatever zone the schedule fires in.
        local = context.scheduled_execution_time.astimezone(zoneinfo.ZoneInfo(config.timezone))
        day = local.date() - dt.timedelta(days=1)
        first = first_partition_date(config)
        if day < first:
            return dg.SkipReason(f"{day} is before the first partition ({first})")
        return dg.RunRequest(
            run_key=f"nightly-{day}", partition_key=day.isoformat(), tags={"cdm/launched_by": "schedule"}
        )

    return nightly


def build_landing_sensor(config: CdmConfig) -> dg.SensorDefinition:
    @dg.sensor(
        name=LANDING_SENSOR,
        job_name=ALL_ASSETS_JOB,
        minimum_interval_seconds=config.landing_sensor.minimum_interval_seconds,
        default_status=(
            dg.DefaultSensorStatus.RUNNING if config.landing_sensor.enabled else dg.DefaultSensorStatus.STOPPED
        ),
        description="A run for a partition when its files land in the landing folder, and again only"
        " when they change.",
    )
    def landing_files(context: dg.SensorEvaluationContext):
        seen = json.loads(context.cursor) if context.cursor else {}
        # A partition exists once its day is over (in the partitions' time zone).
        today = dt.datetime.now(zoneinfo.ZoneInfo(config.timezone)).date()
        first = first_partition_date(config)
        requests, too_early = [], []
        for day, fingerprint in landed_partitions(config).items():
            key = day.isoformat()
            if day < first:
                too_early.append(key)
                continue
            if day >= today or seen.get(key) == fingerprint:
                continue
            seen[key] = fingerprint
            requests.append(dg.RunRequest(
                # The run key is the files' fingerprint: the same files never start a second run.
                run_key=f"landing-{key}-{fingerprint[:16]}", partition_key=key,
                tags={"cdm/launched_by": "landing_sensor"},
            ))
        if not requests:
            reason = "no new or changed files"
            if too_early:
                # Not in the cursor: they run once the partitions reach back to them.
                reason += (
                    f"; files for {len(too_early)} day(s) from {too_early[0]} are before the first partition"
                    f" {first}: set start_date, or reload the definitions when start_date is unset"
                )
            return dg.SensorResult(skip_reason=reason, cursor=json.dumps(seen, sort_keys=True))
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))

    return landing_files


@dg.definitions
def defs() -> dg.Definitions:
    config = project_config()
    return dg.Definitions(schedules=[build_nightly_schedule(config)], sensors=[build_landing_sensor(config)])
