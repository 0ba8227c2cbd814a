"""What the Dagster definitions share: the loaded config, the partitions and the warehouse pool.

The definitions are built from the config file named by ``$CDM_CONFIG`` (the CLI sets it), so the
webserver, the daemon and every step subprocess of a run see the same sources.
"""

from __future__ import annotations

import datetime as dt
import functools
import glob
import os
import re
import zoneinfo
from pathlib import Path

import dagster as dg

from cdm_pipeline.config import DATE_PLACEHOLDER, CdmConfig, config_path, load_config
from cdm_pipeline.config.loading import PROJECT_ROOT

# Every asset or check that opens the warehouse claims a slot in this pool. dagster.yaml sets its
# limit to 1 because DuckDB allows a single writing process.
WAREHOUSE_POOL = "duckdb"
# The metadata key of an asset check's one-line finding (names, counts and shares, never values),
# which `cdm run` prints under a check that failed or warned.
CHECK_DETAIL = "detail"
__all__ = ["PROJECT_ROOT"]  # where the project's own files are (workspace.yaml, the demo's cdm.yaml)


@functools.cache
def _load(path: str) -> CdmConfig:
    return load_config(path)


def project_config() -> CdmConfig:
    """The config for this process, loaded once per path."""
    return _load(str(config_path().resolve()))


def daily_partitions(config: CdmConfig) -> dg.DailyPartitionsDefinition:
    """One partition per landing date, from the first partition up to yesterday in ``timezone``."""
    return dg.DailyPartitionsDefinition(
        start_date=first_partition_date(config).isoformat(), timezone=config.timezone
    )


def first_partition_date(config: CdmConfig) -> dt.date:
    """``start_date``, else the earliest day a dated source has landed files for, else yesterday.

    Without ``start_date`` the partitions begin where the deployment's data begins: any day with
    files runs, and the UI lists no empty years before it (a fixed early start, 2000-01-01, lists
    9,833 partitions). The landing folder is read once per process, so all the assets of one set of
    definitions share one start; files landing for an even earlier day appear in the UI after its
    "Reload definitions", and in the next ``cdm run``.
    """
    if config.start_date is not None:
        return config.start_date
    yesterday = dt.datetime.now(zoneinfo.ZoneInfo(config.timezone)).date() - dt.timedelta(days=1)
    landed = earliest_landed_day(config)
    return min(landed, yesterday) if landed else yesterday


def earliest_landed_day(config: CdmConfig) -> dt.date | None:
    """The earliest ``{date}`` that some dated source has a file (or a day's folder) for."""
    dated = tuple(source.path for source in config.sources if not source.is_snapshot)
    return _earliest_landed_date(config.landing_dir, dated)


_DATE_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@functools.cache
def _earliest_landed_date(landing_dir: Path, dated_paths: tuple[str, ...]) -> dt.date | None:
    """Read once per process (see first_partition_date).

    The globs stop at the path segment holding the date (a day's folder, or a file named after
    it): listing every file of three years of five sources took 89 ms, the day folders 8 ms.
    """
    days: list[dt.date] = []
    for path in dated_paths:
        before, _, after = path.partition(DATE_PLACEHOLDER)
        segment = after.split("/")[0].replace(DATE_PLACEHOLDER, "*")
        for name in glob.glob(str(landing_dir / (before + _DATE_GLOB + segment)), recursive=True):
            match = _DATE.search(os.path.basename(name))
            try:
                days.append(dt.date.fromisoformat(match.group(0)))
            except (AttributeError, ValueError):
                continue  # 2026-13-45 is not a day
    return min(days, default=None)


def nightly_freshness_policy(config: CdmConfig) -> dg.FreshnessPolicy:
    """Rebuilt every day between the nightly schedule's time and ``schedule.marts_due_by``.

    The window is measured from the schedule's time, not 24 hours back: a table refreshed by
    hand yesterday afternoon has not been rebuilt by tonight's run and fails the policy.
    """
    start_hour, start_minute = (int(p) for p in config.schedule.time.split(":"))
    due_hour, due_minute = (int(p) for p in config.schedule.marts_due_by.split(":"))
    window = dt.timedelta(hours=due_hour - start_hour, minutes=due_minute - start_minute)
    window = window % dt.timedelta(days=1) or dt.timedelta(days=1)
    return dg.FreshnessPolicy.cron(
        deadline_cron=f"{due_minute} {due_hour} * * *",
        lower_bound_delta=window,
        timezone=config.schedule.timezone,
    )


def partition_dates(keys: list[str]) -> list[dt.date]:
    return [dt.date.fromisoformat(key) for key in keys]
