"""What the Dagster definitions share: the loaded config, the partitions and the warehouse pool.

The definitions are built from the config file named by ``$CDM_CONFIG`` (the CLI sets it), so the
webserver, the daemon and every step subprocess of a run see the same sources.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from pathlib import Path

import dagster as dg

from cdm_pipeline.config import CONFIG_ENV_VAR, DEFAULT_CONFIG_NAME, CdmConfig, load_config

# Every asset or check that opens the warehouse claims a slot in this pool. dagster.yaml sets its
# limit to 1 because DuckDB allows a single writing process.
WAREHOUSE_POOL = "duckdb"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def project_config_path() -> Path:
    """``$CDM_CONFIG``, else ``cdm.yaml`` in the current folder, else the one at the project root."""
    if os.environ.get(CONFIG_ENV_VAR):
        return Path(os.environ[CONFIG_ENV_VAR])
    here = Path(DEFAULT_CONFIG_NAME)
    return here if here.exists() else PROJECT_ROOT / DEFAULT_CONFIG_NAME


@functools.cache
def _load(path: str) -> CdmConfig:
    return load_config(path)


def project_config() -> CdmConfig:
    """The config for this process, loaded once per path."""
    return _load(str(project_config_path().resolve()))


def daily_partitions(config: CdmConfig) -> dg.DailyPartitionsDefinition:
    """One partition per landing date, from ``start_date`` up to yesterday in ``timezone``."""
    return dg.DailyPartitionsDefinition(
        start_date=config.start_date.isoformat(), timezone=config.timezone
    )


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
