"""Run the pipeline for a date range from the command line, as a real Dagster run.

``cdm run`` executes the ``all_assets`` job in-process with Dagster's default (multiprocess)
executor against a persistent instance, so runs show up in the UI with their logs and the
``duckdb`` pool keeps steps that write the warehouse one at a time. A single run covers the whole
range (every asset has a single-run backfill policy), which is much faster than one run per day.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from cdm_pipeline.cli.progress import FAILED, OK, RETRY, SKIPPED, RunProgress
from cdm_pipeline.config import CONFIG_ENV_VAR, CdmConfig, ConfigError
from cdm_pipeline.lib.automation.alerts import failure_message
from cdm_pipeline.lib.file_modes import private_dir
from cdm_pipeline.project import (
    CHECK_DETAIL,
    PROJECT_ROOT,
    WAREHOUSE_POOL,
    daily_partitions,
    earliest_landed_day,
    first_partition_date,
)

DAGSTER_HOME_ENV = "DAGSTER_HOME"
LOCAL_DAGSTER_HOME = ".dagster_home"
STORAGE_READY_MARKER = ".cdm_storage_ready"
RUN_TAG_LAUNCHER = "cdm/launched_by"
RUN_TAG_PID = "cdm/pid"
RUN_TAG_HOST = "cdm/host"
KEEP_RUN_LOGS = 30
_ACTIVE_STATUSES = (
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)
# A step starts when its process starts (forking one takes seconds of the step's wall time); its
# attempt ends with one of the others.
_STEP_STARTS = {
    dg.DagsterEventType.STEP_WORKER_STARTING, dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_RESTARTED,
}
_STEP_ENDS = {
    dg.DagsterEventType.STEP_SUCCESS: OK,
    dg.DagsterEventType.STEP_FAILURE: FAILED,
    dg.DagsterEventType.STEP_SKIPPED: SKIPPED,
    dg.DagsterEventType.STEP_UP_FOR_RETRY: RETRY,
}
POLL_SECONDS = 1.0  # how often the event log is read
REDRAW_SECONDS = 0.2  # how often a terminal's status line is redrawn

logger = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    """How a ``cdm run`` ended: success, timing and any step failures (messages carry no values)."""

    run_id: str
    success: bool
    seconds: float
    failures: list[tuple[str, str]] = field(default_factory=list)
    stale_runs_cleaned: int = 0
    log_path: Path | None = None
    # (asset, check, passed, severity "ERROR"/"WARN") for every check evaluated in the run
    checks: list[tuple[str, str, bool, str]] = field(default_factory=list)
    # (asset, check) -> what a failed check found, from its CHECK_DETAIL metadata (no values)
    check_details: dict[tuple[str, str], str] = field(default_factory=dict)


def use_dagster_home(config: CdmConfig) -> Path:
    """Point ``DAGSTER_HOME`` at the run storage, creating it beside the config when unset.

    The folder carries a copy of the project's dagster.yaml (pool limits, run monitoring), so a
    run started from the CLI obeys the same rules as one started from the UI.
    """
    if os.environ.get(DAGSTER_HOME_ENV):
        home = Path(os.environ[DAGSTER_HOME_ENV]).resolve()
        private_dir(home)  # run storage: run logs and step output, owner-only
        _create_run_storage_once(home)
        return home
    config_dir = config.config_path.parent
    home = config_dir / LOCAL_DAGSTER_HOME
    private_dir(home)
    settings = next(
        (p for p in (config_dir / "dagster.yaml", PROJECT_ROOT / "dagster.yaml") if p.exists()), None
    )
    target = home / "dagster.yaml"
    if settings is not None and (not target.exists() or target.read_bytes() != settings.read_bytes()):
        shutil.copyfile(settings, target)
    os.environ[DAGSTER_HOME_ENV] = str(home)
    _create_run_storage_once(home)
    return home


def _create_run_storage_once(home: Path) -> None:
    """Create the run storage's databases before any Dagster process opens them.

    `cdm ui` (webserver and daemon) and a `cdm run` started at the same moment on a new folder
    would each create the SQLite files and their alembic version table, and the loser fails
    with "table alembic_version already exists". One process creates them, under a file lock.
    """
    ready = home / STORAGE_READY_MARKER
    if ready.exists():
        return
    with (home / ".cdm_storage.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists():
            dg.DagsterInstance.from_config(str(home)).dispose()
            ready.touch()


def check_run_request(config: CdmConfig, first: dt.date, last: dt.date) -> None:
    """Reject, before anything runs, what would fail later: bad dates, missing snapshot files.

    Raises:
        ConfigError: naming the option or config key at fault.
    """
    check_partition_range(config, first, last)
    if not config.landing_dir.is_dir():
        raise ConfigError(
            str(config.config_path), "landing_dir",
            f"folder {config.landing_dir} does not exist (run `cdm generate-demo` or land files first)",
        )
    from cdm_pipeline.lib.extract import partition_files

    for index, source in enumerate(config.sources):
        if source.is_snapshot and not partition_files(source, config.landing_dir, first):
            raise ConfigError(
                str(config.config_path), f"sources[{index}].path",
                f"{source.path!r} matches no file under {config.landing_dir}",
            )


def check_partition_range(config: CdmConfig, first: dt.date, last: dt.date) -> None:
    """The dates must be daily partitions that exist: from the first partition to yesterday."""
    if last < first:
        raise ConfigError("command line", "--to", f"{last} is before --from {first}")
    start = first_partition_date(config)
    if first < start:
        name = config.config_path.name
        if config.start_date is not None:
            why, fix = "", f"set start_date: {first} (or earlier) in {name}"
        else:
            landed = earliest_landed_day(config) == start
            why = " (the earliest day with landed files)" if landed else " (yesterday: no earlier day has landed files)"
            fix = f"add start_date: {first} (or earlier) to {name}"
        raise ConfigError(
            str(config.config_path), "start_date", f"{first} is before the first partition {start}{why}; {fix}"
        )
    newest = daily_partitions(config).get_last_partition_key()
    if newest is None or last > dt.date.fromisoformat(newest):
        raise ConfigError(
            "command line", "--date/--to",
            f"{last} has no partition yet: the newest is {newest} (a day's partition exists once"
            f" the day has ended in {config.timezone})",
        )


def run_partitions(
    config: CdmConfig, first: dt.date, last: dt.date, verbose: bool = False, progress: RunProgress | None = None
) -> RunOutcome:
    """Materialise every asset for the partitions ``first``..``last`` in one Dagster run.

    With ``progress``, the run's step events are shown on it as the run goes.
    """
    os.environ[CONFIG_ENV_VAR] = str(config.config_path)
    home = use_dagster_home(config)
    started = time.monotonic()
    log_path = home / "logs" / f"cdm-run-{dt.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
    with (
        _stderr_to(None if verbose else log_path),
        dg.DagsterInstance.get() as instance,
        _following_the_run(progress),
    ):
        cleaned = release_slots_of_dead_runs(instance)
        result = dg.execute_job(
            dg.reconstructable(all_assets_job),
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": first.isoformat(),
                "dagster/asset_partition_range_end": last.isoformat(),
                RUN_TAG_LAUNCHER: "cli",
                RUN_TAG_PID: str(os.getpid()),
                RUN_TAG_HOST: socket.gethostname(),
            },
            # Without --verbose the summary below is the output; the full log is in the UI.
            run_config={"loggers": {"console": {"config": {"log_level": "DEBUG" if verbose else "CRITICAL"}}}},
        )
        failures = [
            (event.step_key or "run", failure_message(event))
            for event in result.get_step_failure_events()
        ]
        if not result.success and not failures:
            failures = [("run", "the run failed before its steps finished; see `cdm ui` for its log")]
        evaluations = result.get_asset_check_evaluations()
        checks = [(e.asset_key.to_user_string(), e.check_name, e.passed, e.severity.value) for e in evaluations]
        details = {
            (e.asset_key.to_user_string(), e.check_name): e.metadata[CHECK_DETAIL].value
            for e in evaluations if not e.passed and CHECK_DETAIL in e.metadata
        }
        return RunOutcome(
            checks=checks,
            check_details=details,
            run_id=result.run_id,
            success=result.success,
            seconds=time.monotonic() - started,
            failures=failures,
            stale_runs_cleaned=cleaned,
            log_path=None if verbose else log_path,
        )


@contextlib.contextmanager
def _following_the_run(progress: RunProgress | None):
    """Show the step events of the run this process starts on ``progress`` while it runs."""
    if progress is None:
        yield
        return
    follower = _RunFollower(progress)
    follower.start()
    try:
        yield
    finally:
        follower.stop()
        progress.close()


class _RunFollower(threading.Thread):
    """Reads the step events of this process's run from the instance's event log.

    ``execute_job`` blocks this process's main thread until the run ends and creates the run
    itself, so the follower finds it by the tags ``run_partitions`` gives it (this host, this
    process, created from now on), takes the step count from its execution plan, then reads
    only the events after its cursor. The run's SQLite files are being written by the step
    processes: a read that fails is tried again at the next poll, and progress never fails a run.
    """

    def __init__(self, progress: RunProgress):
        super().__init__(name="cdm-run-progress", daemon=True)
        self.progress = progress
        self.created_after = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        self.run_id: str | None = None
        self.cursor: str | None = None
        self.ended = threading.Event()

    def stop(self) -> None:
        self.ended.set()
        self.join()

    def run(self) -> None:
        try:
            instance = dg.DagsterInstance.get()
        except Exception:
            logger.debug("cdm run: progress could not open the run storage", exc_info=True)
            return
        with instance:
            last_poll = 0.0
            while not self.ended.wait(REDRAW_SECONDS if self.progress.terminal else POLL_SECONDS):
                if time.monotonic() - last_poll >= POLL_SECONDS:
                    self._poll(instance)
                    last_poll = time.monotonic()
                self.progress.refresh()
            self._poll(instance)  # the run has ended: every event is in the log

    def _poll(self, instance: dg.DagsterInstance) -> None:
        try:
            if self.run_id is None and not self._find_run(instance):
                return
            while True:
                page = instance.get_records_for_run(
                    self.run_id, cursor=self.cursor, of_type=_STEP_STARTS | set(_STEP_ENDS), limit=1000
                )
                for record in page.records:
                    entry = record.event_log_entry
                    kind = entry.dagster_event.event_type
                    if kind in _STEP_STARTS:
                        self.progress.started(entry.step_key, entry.timestamp)
                    else:
                        self.progress.finished(entry.step_key, _STEP_ENDS[kind], entry.timestamp)
                self.cursor = page.cursor
                if not page.has_more:
                    return
        except Exception:  # SQLite "database is locked", a run database not created yet
            logger.debug("cdm run: progress could not read the event log this time", exc_info=True)

    def _find_run(self, instance: dg.DagsterInstance) -> bool:
        tags = {RUN_TAG_LAUNCHER: "cli", RUN_TAG_PID: str(os.getpid()), RUN_TAG_HOST: socket.gethostname()}
        runs = instance.get_runs(filters=dg.RunsFilter(tags=tags, created_after=self.created_after), limit=1)
        if not runs:
            return False
        run = runs[0]
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        self.progress.planned(len(plan.step_keys_to_execute or plan.steps))
        self.run_id = run.run_id
        return True


@contextlib.contextmanager
def _stderr_to(path: Path | None):
    """Send this process's stderr, and so its step subprocesses', to ``path`` for the run.

    Dagster's console logger prints every event, from every step process, at debug level; for
    a nightly job the summary is what a person reads, and the full log stays in this file and in
    the UI.
    """
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in sorted(path.parent.glob("cdm-run-*.log"))[:-KEEP_RUN_LOGS]:
        old.unlink(missing_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def all_assets_job() -> dg.JobDefinition:
    """The ``all_assets`` job with resources bound; step subprocesses rebuild it from here."""
    from cdm_pipeline.definitions import defs
    from cdm_pipeline.defs.jobs import ALL_ASSETS_JOB

    return defs().resolve_job_def(ALL_ASSETS_JOB)


def release_slots_of_dead_runs(instance: dg.DagsterInstance) -> int:
    """Fail CLI runs whose process died and free the pool slots they held.

    Without the daemon (which ``cdm ui`` runs) nothing else would free them, and every later run
    would wait forever for the ``duckdb`` slot after a ``kill -9`` or a power cut.
    """
    host = socket.gethostname()
    cleaned = 0
    runs = instance.get_runs(
        filters=dg.RunsFilter(statuses=list(_ACTIVE_STATUSES), tags={RUN_TAG_LAUNCHER: "cli"})
    )
    for run in runs:
        pid = run.tags.get(RUN_TAG_PID)
        if run.tags.get(RUN_TAG_HOST) != host or not pid or _process_alive(int(pid)):
            continue
        instance.report_run_failed(run, message="The cdm process running this run has died.")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        cleaned += 1
    # Slots can also outlive a run that did finish (a step process killed mid-claim).
    if WAREHOUSE_POOL in instance.event_log_storage.get_concurrency_keys():
        info = instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL)
        for run_id in info.active_run_ids | {step.run_id for step in info.pending_steps}:
            run = instance.get_run_by_id(run_id)
            if run is None or run.is_finished:
                instance.event_log_storage.free_concurrency_slots_for_run(run_id)
                cleaned += 1
    return cleaned


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
