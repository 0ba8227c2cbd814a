"""Without ``start_date`` the partitions begin on the earliest landed day, so someone else's exports
run from their first day; a day that cannot run names the key to add and the file to add it to."""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo

import dagster as dg
import pytest
import yaml

from cdm_pipeline.cli import main
from cdm_pipeline.config import ConfigError, load_config
from cdm_pipeline.defs.automation.schedules import build_landing_sensor
from cdm_pipeline.defs.jobs import ALL_ASSETS_JOB
from cdm_pipeline.project import daily_partitions, first_partition_date
from cdm_pipeline.runner import check_run_request
from cdm_pipeline_tests.conftest import REPO_ROOT

FIRST_EXPORT = dt.date(2026, 1, 15)


def _yesterday(timezone: str = "UTC") -> dt.date:
    return dt.datetime.now(zoneinfo.ZoneInfo(timezone)).date() - dt.timedelta(days=1)


def _config(tmp_path, start_date: str | None = None, timezone: str = "UTC"):
    document = {
        "warehouse": "wh/cdm.duckdb", "landing_dir": "landing", "timezone": timezone,
        "sources": [
            {"name": "crm_contacts", "system": "crm", "kind": "contacts", "format": "csv",
             "path": "crm/{date}/*.csv", "id_column": "contact_id"},
            # The day in the file's name, behind a folder that varies.
            {"name": "shop_orders", "system": "shop", "kind": "orders", "format": "csv",
             "path": "shop/*/orders_{date}.csv", "id_column": "order_id"},
            {"name": "stores", "system": "crm", "kind": "contacts", "format": "csv",
             "path": "stores/all.csv", "id_column": "store_id"},
        ],
    }
    if start_date:
        document["start_date"] = start_date
    (tmp_path / "landing").mkdir(exist_ok=True)
    path = tmp_path / "cdm.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return load_config(path)


def _land(tmp_path, relative: str, text: str = "contact_id\nC1\n") -> None:
    path = tmp_path / "landing" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_without_start_date_a_run_of_the_first_exported_day_is_accepted(tmp_path):
    _land(tmp_path, "shop/eu/orders_2026-01-15.csv", "order_id\nO1\n")
    _land(tmp_path, "crm/2026-03-02/contacts.csv")
    _land(tmp_path, "crm/2025-13-40/contacts.csv")  # not a day
    _land(tmp_path, "stores/all.csv", "store_id\nS1\n")  # a snapshot says nothing about a day
    config = _config(tmp_path)

    assert config.start_date is None
    assert first_partition_date(config) == FIRST_EXPORT
    partitions = daily_partitions(config)
    # The UI lists the landed days up to yesterday, and no empty year before them.
    assert partitions.get_first_partition_key() == "2026-01-15"
    assert partitions.get_num_partitions() == (_yesterday() - FIRST_EXPORT).days + 1
    check_run_request(config, FIRST_EXPORT, FIRST_EXPORT + dt.timedelta(days=1))  # raises nothing


def test_a_day_before_the_landed_files_names_the_key_to_add_and_where(tmp_path, capsys):
    _land(tmp_path, "crm/2026-01-15/contacts.csv")
    config = _config(tmp_path)
    path = tmp_path / "cdm.yaml"
    assert main(["run", "--config", str(path), "--date", "2026-01-14"]) == 2
    assert capsys.readouterr().err == (
        f"cdm: error: {path}: start_date: 2026-01-14 is before the first partition 2026-01-15"
        " (the earliest day with landed files); add start_date: 2026-01-14 (or earlier) to cdm.yaml\n"
    )
    assert config.start_date is None


def test_with_nothing_landed_the_partitions_begin_yesterday_in_the_config_time_zone(tmp_path):
    config = _config(tmp_path, timezone="Pacific/Kiritimati")  # UTC+14: often a day ahead of UTC
    yesterday = _yesterday("Pacific/Kiritimati")
    assert first_partition_date(config) == yesterday
    assert daily_partitions(config).get_partition_keys() == [yesterday.isoformat()]
    with pytest.raises(ConfigError) as caught:
        check_run_request(config, FIRST_EXPORT, FIRST_EXPORT)
    assert caught.value.key == "start_date"
    assert caught.value.message == (
        f"2026-01-15 is before the first partition {yesterday} (yesterday: no earlier day has landed"
        " files); add start_date: 2026-01-15 (or earlier) to cdm.yaml"
    )


def test_an_explicit_start_date_wins_over_earlier_files(tmp_path):
    _land(tmp_path, "crm/2026-01-15/contacts.csv")
    config = _config(tmp_path, start_date="2026-02-01")
    assert first_partition_date(config) == dt.date(2026, 2, 1)
    with pytest.raises(ConfigError) as caught:
        check_run_request(config, FIRST_EXPORT, FIRST_EXPORT)
    assert caught.value.message == (
        "2026-01-15 is before the first partition 2026-02-01; set start_date: 2026-01-15 (or earlier) in cdm.yaml"
    )


def test_the_demo_config_keeps_its_explicit_start_date():
    assert load_config(REPO_ROOT / "cdm.yaml").start_date == dt.date(2026, 10, 1)


def test_the_landing_sensor_says_why_it_skips_files_older_than_the_loaded_partitions(tmp_path):
    """The code server read the landing folder when it loaded; older files land afterwards."""
    day = _yesterday() - dt.timedelta(days=3)
    _land(tmp_path, f"crm/{day}/contacts.csv")
    config = _config(tmp_path)
    sensor = build_landing_sensor(config)

    @dg.asset(partitions_def=daily_partitions(config))
    def stand_in():
        return None

    repository = dg.Definitions(
        assets=[stand_in], jobs=[dg.define_asset_job(ALL_ASSETS_JOB, selection=[stand_in])], sensors=[sensor]
    ).get_repository_def()
    result = sensor.evaluate_tick(dg.build_sensor_context(repository_def=repository))
    assert [r.partition_key for r in result.run_requests] == [day.isoformat()]

    older = day - dt.timedelta(days=5)
    _land(tmp_path, f"crm/{older}/contacts.csv")
    result = sensor.evaluate_tick(dg.build_sensor_context(cursor=result.cursor, repository_def=repository))
    assert not result.run_requests
    assert result.skip_message == (
        f"no new or changed files; files for 1 day(s) from {older} are before the first partition {day}:"
        " set start_date, or reload the definitions when start_date is unset"
    )
    assert older.isoformat() not in json.loads(result.cursor)  # they run once the partitions reach them
