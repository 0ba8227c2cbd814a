"""The nightly schedule and the landing sensor ask for the right partitions, and only once."""

from __future__ import annotations

import datetime as dt
import os

import dagster as dg
import pytest
import yaml

from cdm_pipeline.config import ConfigError, load_config
from cdm_pipeline.defs.automation.schedules import build_landing_sensor, build_nightly_schedule
from cdm_pipeline.defs.jobs import ALL_ASSETS_JOB
from cdm_pipeline.lib.automation.landing import landed_partitions
from cdm_pipeline.project import daily_partitions

TODAY = dt.date.today()


def _config(tmp_path, start=dt.date(2026, 10, 1), **sections):
    document = {
        "warehouse": "wh/cdm.duckdb", "landing_dir": "landing", "start_date": start.isoformat(),
        "sources": [
            {"name": "crm_contacts", "system": "crm", "kind": "contacts", "format": "csv",
             "path": "crm/{date}/*.csv", "id_column": "contact_id"},
            {"name": "web_events", "system": "web", "kind": "web_events", "format": "parquet",
             "path": "web/{date}/*.parquet", "id_column": "event_id"},
            {"name": "stores", "system": "crm", "kind": "contacts", "format": "csv",
             "path": "stores/all.csv", "id_column": "store_id"},
        ],
        **sections,
    }
    path = tmp_path / "cdm.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return load_config(path)


def _land(config, relative: str, text: str = "contact_id\nC1\n") -> None:
    path = config.landing_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _repository(config, schedule=None, sensor=None):
    """A code location with the config's partitioned job, as the schedule and sensor target it."""

    @dg.asset(partitions_def=daily_partitions(config))
    def stand_in():
        return None

    job = dg.define_asset_job(ALL_ASSETS_JOB, selection=[stand_in])
    return dg.Definitions(
        assets=[stand_in], jobs=[job], schedules=[schedule] if schedule else [], sensors=[sensor] if sensor else []
    ).get_repository_def()


def _tick(config, sensor, cursor=None):
    context = dg.build_sensor_context(cursor=cursor, repository_def=_repository(config, sensor=sensor))
    result = sensor.evaluate_tick(context)
    return [(r.partition_key, r.run_key) for r in result.run_requests], result.cursor


def _fire(config, schedule, when):
    context = dg.build_schedule_context(scheduled_execution_time=when, repository_def=_repository(config, schedule))
    return schedule.evaluate_tick(context)


@pytest.mark.parametrize(
    "fires_at, timezone, partition",
    [
        (dt.datetime(2026, 10, 15, 2, 0, tzinfo=dt.timezone.utc), "UTC", "2026-10-14"),
        # 01:30 UTC is already 02:30 the next day in Berlin: the schedule's "yesterday" is a day of
        # the partitions' time zone (UTC here), not of the schedule's.
        (dt.datetime(2026, 10, 15, 0, 30, tzinfo=dt.timezone.utc), "Europe/Berlin", "2026-10-14"),
    ],
)
def test_nightly_schedule_runs_the_previous_days_partition(tmp_path, fires_at, timezone, partition):
    config = _config(tmp_path, schedule={"time": "02:30", "timezone": timezone})
    schedule = build_nightly_schedule(config)
    assert schedule.cron_schedule == "30 2 * * *" and schedule.execution_timezone == timezone
    result = _fire(config, schedule, fires_at)
    assert [(r.partition_key, r.run_key) for r in result.run_requests] == [(partition, f"nightly-{partition}")]
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_nightly_schedule_skips_days_before_the_first_partition(tmp_path):
    config = _config(tmp_path, schedule={"enabled": True})
    schedule = build_nightly_schedule(config)
    result = _fire(config, schedule, dt.datetime(2026, 10, 1, 2, 0, tzinfo=dt.timezone.utc))
    assert not result.run_requests and "before the first partition" in result.skip_message
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_landing_sensor_requests_each_landed_day_once_and_again_when_its_files_change(tmp_path):
    config = _config(tmp_path, start=TODAY - dt.timedelta(days=10))
    d1, d2 = (TODAY - dt.timedelta(days=n) for n in (3, 2))
    _land(config, f"crm/{d1}/a.csv")
    _land(config, f"web/{d1}/a.parquet", "x")
    _land(config, f"crm/{d2}/a.csv")
    _land(config, f"crm/{TODAY}/a.csv")  # today is not a partition until it is over
    _land(config, f"crm/{TODAY - dt.timedelta(days=30)}/a.csv")  # before start_date
    _land(config, "crm/2026-13-45/a.csv")  # not a date
    _land(config, "stores/all.csv", "store_id\nS1\n")  # a snapshot says nothing about a day
    sensor = build_landing_sensor(config)

    first, cursor = _tick(config, sensor)
    assert [key for key, _ in first] == [d1.isoformat(), d2.isoformat()]
    again, cursor = _tick(config, sensor, cursor)
    assert again == []  # the same files never start a second run

    _land(config, f"web/{d2}/late.parquet", "y")  # a file arriving late for an earlier day
    late, cursor = _tick(config, sensor, cursor)
    assert [key for key, _ in late] == [d2.isoformat()]
    assert late[0][1] != dict(first)[d2.isoformat()]  # a new run key: the files changed
    assert _tick(config, sensor, cursor)[0] == []


def test_fingerprint_changes_with_content_not_with_reading(tmp_path):
    config = _config(tmp_path)
    _land(config, "crm/2026-10-02/a.csv")
    before = landed_partitions(config)
    assert landed_partitions(config) == before
    path = config.landing_dir / "crm/2026-10-02/a.csv"
    path.write_text("contact_id\nC1\nC2\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert landed_partitions(config)[dt.date(2026, 10, 2)] != before[dt.date(2026, 10, 2)]


def test_schedule_time_and_time_zones_are_checked(tmp_path):
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, schedule={"time": "25:00"})
    assert caught.value.key == "schedule.time"
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, schedule={"timezone": "Mars/Olympus"})
    assert caught.value.key == "schedule.timezone" and "unknown time zone" in caught.value.message
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, schedule={"time": "03:00", "marts_due_by": "03:00"})
    assert caught.value.key == "schedule.marts_due_by"


@pytest.mark.parametrize(
    ("schedule", "cron", "window", "zone"),
    [
        ({}, "0 6 * * *", dt.timedelta(hours=4), "UTC"),
        # Across midnight: the run starts at 23:30 and must be done by 01:15 the next day.
        ({"time": "23:30", "marts_due_by": "01:15", "timezone": "Europe/London"}, "15 1 * * *",
         dt.timedelta(hours=1, minutes=45), "Europe/London"),
    ],
)
def test_marts_and_exports_must_be_rebuilt_between_the_schedule_and_its_deadline(
    tmp_path, schedule, cron, window, zone
):
    from cdm_pipeline.defs.exports.assets import build_exports_asset
    from cdm_pipeline.defs.marts.assets import build_marts_asset

    config = _config(tmp_path, schedule=schedule)
    marts = build_marts_asset(config)
    exports = build_exports_asset(config)
    policies = [spec.freshness_policy for spec in [*marts.specs, *exports.specs]]
    assert len(policies) == 7
    for policy in policies:
        assert type(policy).__name__ == "CronFreshnessPolicy"
        assert (policy.deadline_cron, policy.lower_bound_delta, policy.timezone) == (cron, window, zone)


def test_extract_steps_retry_with_the_configured_backoff_and_can_be_told_not_to(tmp_path):
    from cdm_pipeline.defs.raw.assets import build_raw_asset

    config = _config(tmp_path, extract_retries={"max_retries": 2, "delay_seconds": 5, "backoff": "linear"})
    policy = build_raw_asset(config.sources[0], config).op.retry_policy
    assert (policy.max_retries, policy.delay, policy.backoff) == (2, 5, dg.Backoff.LINEAR)
    default = _config(tmp_path)
    policy = build_raw_asset(default.sources[0], default).op.retry_policy
    assert (policy.max_retries, policy.delay, policy.backoff) == (3, 30, dg.Backoff.EXPONENTIAL)
    off = _config(tmp_path, extract_retries={"max_retries": 0})
    assert build_raw_asset(off.sources[0], off).op.retry_policy is None


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"alerts": {"webhook_url": "ftp://hooks.example.com/x"}}, "alerts.webhook_url"),
        ({"alerts": {"timeout_seconds": 0}}, "alerts.timeout_seconds"),
        ({"alerts": {"comand": "true"}}, "alerts.comand"),
        ({"extract_retries": {"backoff": "quadratic"}}, "extract_retries.backoff"),
        ({"extract_retries": {"max_retries": -1}}, "extract_retries.max_retries"),
        ({"schedule": {"marts_due_by": "6am"}}, "schedule.marts_due_by"),
    ],
)
def test_automation_settings_are_checked_naming_the_key(tmp_path, section, key):
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, **section)
    assert caught.value.key == key


def test_alerts_are_off_unless_a_hook_is_named(tmp_path):
    assert not _config(tmp_path).alerts.enabled
    assert _config(tmp_path, alerts={"command": "true"}).alerts.enabled
    assert _config(tmp_path, alerts={"webhook_url": "https://hooks.example.com/T0/B0/x"}).alerts.enabled


def test_duckdb_settings_reach_every_warehouse_connection(tmp_path):
    from cdm_pipeline.lib.warehouse import connect
    from cdm_pipeline.resources import WarehouseResource

    config = _config(tmp_path, duckdb={"memory_limit": "1.5GB", "threads": 1})
    settings = config.duckdb.connection_settings()
    assert settings == {"memory_limit": "1.5GB", "threads": 1}
    resource = WarehouseResource(database=str(config.warehouse), connection_config=settings)
    with resource.get_connection() as conn:  # what every pipeline step gets
        step = conn.execute("SELECT current_setting('memory_limit'), current_setting('threads')").fetchall()[0]
    conn = connect(config.warehouse, settings=settings)  # what the CLI commands get
    try:
        command = conn.execute("SELECT current_setting('memory_limit'), current_setting('threads')").fetchall()[0]
    finally:
        conn.close()
    # DuckDB reports 1.5 GB in its own units (1.5e9 bytes = 1.3 GiB).
    assert step == command and step[1] == 1 and step[0].startswith("1.3")
    assert _config(tmp_path).duckdb.connection_settings() == {}  # DuckDB's own defaults
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, duckdb={"memory_limit": "lots"})
    assert caught.value.key == "duckdb.memory_limit"
