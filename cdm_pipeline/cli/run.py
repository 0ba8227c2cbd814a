"""``cdm run``: materialise every asset for a date range and print a short summary."""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

from cdm_pipeline.cli.exit_codes import EXIT_FAILED, EXIT_OK
from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.disk_space import why_warehouse_failed
from cdm_pipeline.lib.identity.summary import identity_run_figures
from cdm_pipeline.lib.marts.summary import marts_figures

logger = logging.getLogger(__name__)


def run_command(
    config_path: Path | None, first: dt.date, last: dt.date, verbose: bool, allow_shrink: bool = False
) -> int:
    from cdm_pipeline.cli.config_file import resolve_config
    from cdm_pipeline.runner import check_run_request, run_partitions

    config = resolve_config(config_path)
    check_run_request(config, first, last)
    from cdm_pipeline.defs.raw.assets import ALLOW_SHRINK_ENV

    # The run's steps are child processes: they inherit it, for this run only.
    shrink_was_set = ALLOW_SHRINK_ENV in os.environ
    if allow_shrink:
        os.environ[ALLOW_SHRINK_ENV] = "1"
    # A reader that goes away mid-run (`cdm run ... | head -3`) must not kill the run half-way:
    # progress stops writing instead. The summary then ends quietly, as it always has.
    sigpipe = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        outcome = run_partitions(config, first, last, verbose=verbose, progress=run_progress(verbose))
    finally:
        signal.signal(signal.SIGPIPE, sigpipe)
        if allow_shrink and not shrink_was_set:
            os.environ.pop(ALLOW_SHRINK_ENV, None)
    # The alert goes first: nothing the summary meets (a warehouse locked or broken since) may stop
    # it. What each hook did is still said after the summary, where people look for it.
    alerted = send_failure_alert(config, first, last, outcome) if not outcome.success and config.alerts.enabled else []
    try:
        print_run_summary(config, first, last, outcome)
    finally:
        for line in alerted:
            print(f"  alert: {line}", file=sys.stderr)
    return EXIT_OK if outcome.success else EXIT_FAILED


def run_progress(verbose: bool):
    """Progress on stdout: a status line on a terminal, plain lines elsewhere.

    With ``--verbose`` Dagster's log scrolls on stderr, which a status line rewritten in place
    would garble, so the lines are plain there too; so are they on a terminal that cannot move
    the cursor (``TERM=dumb``).
    """
    from cdm_pipeline.cli.progress import RunProgress

    terminal = sys.stdout.isatty() and not verbose and os.environ.get("TERM", "") != "dumb"
    return RunProgress(sys.stdout, terminal=terminal, width=shutil.get_terminal_size().columns)


def send_failure_alert(config: CdmConfig, first: dt.date, last: dt.date, outcome) -> list[str]:
    """Alert the configured hooks about a failed ``cdm run``; one line per hook saying what it did.

    The CLI sends its own alert (the run-failure sensor skips CLI runs): cron may start
    ``cdm run`` while no Dagster daemon is running. It is built from the run's outcome, which
    holds the failed steps already, so it needs neither the run storage nor the warehouse.
    """
    from cdm_pipeline.defs.jobs import ALL_ASSETS_JOB
    from cdm_pipeline.lib.automation.alerts import NO_STEP_FAILED, RunFailureAlert, partition_span, send_alert

    alert = RunFailureAlert(
        run_id=outcome.run_id,
        job_name=ALL_ASSETS_JOB,
        partitions=partition_span(first.isoformat(), last.isoformat()),
        launched_by="cli",
        failed_steps=tuple(outcome.failures) or (NO_STEP_FAILED,),
    )
    return send_alert(config.alerts, alert)


def print_run_summary(config: CdmConfig, first: dt.date, last: dt.date, outcome) -> None:
    from cdm_pipeline.lib.catalog import raw_table, staging_table
    from cdm_pipeline.lib.extract.summary import count_raw_rows, count_suppressed_rows
    from cdm_pipeline.lib.staging.summary import count_quarantined_by_reason, count_staged_rows
    from cdm_pipeline.lib.warehouse import open_config_warehouse

    days = (last - first).days + 1
    span = f"{first}" if days == 1 else f"{first} to {last} ({days} partitions)"
    status = "succeeded" if outcome.success else "FAILED"
    print(f"cdm run {span}: {status} in {outcome.seconds:.1f} s (Dagster run {outcome.run_id[:8]})")
    if outcome.stale_runs_cleaned:
        print(f"  released the pool slots of {outcome.stale_runs_cleaned} run(s) whose process had died")
    sys.stdout.flush()
    for step, message in outcome.failures:
        print(f"  failed: {step}: {message}", file=sys.stderr)
    if outcome.failures and outcome.log_path is not None:
        print(f"  full log: {outcome.log_path} (or `cdm ui`, Runs)", file=sys.stderr)
    counts = None
    staged = []
    identity = None
    marts = None
    readable = True
    if config.warehouse.exists():
        try:
            with open_config_warehouse(config, read_only=True) as conn:
                counts = count_raw_rows(conn, config, first, last)
                suppressed = count_suppressed_rows(conn, first, last)
                staged = count_staged_rows(conn, first, last)
                held_by_reason = count_quarantined_by_reason(conn, first, last)
                identity = identity_run_figures(conn, outcome.run_id)
                marts = marts_figures(conn)
        except Exception as exc:  # locked, corrupt, no key: the run's outcome stands, and says so
            readable = False
            logger.info("cdm run: the summary could not read the warehouse", exc_info=True)
            print(
                f"  warehouse figures not shown: {why_warehouse_failed(exc, config.warehouse)}; `cdm report --run-id"
                f" {outcome.run_id}` writes the run's governance report once the warehouse opens"
            )
    if counts is not None:
        width = max(len(c.source) for c in counts)
        print(f"  {'raw table'.ljust(width + 4)} {'rows':>12} {'rejects':>9}")
        for c in counts:
            print(f"  {raw_table(c.source).full_name.ljust(width + 4)} {c.rows:>12,} {c.rejects:>9,}")
        if suppressed:
            print(f"  suppressed: {suppressed:,} rows of erased people dropped before landing")
        if staged:
            print(f"  {'staging table'.ljust(width + 4)} {'rows':>12} {'quarantined':>11}")
            for kind, rows, held in staged:
                print(f"  {staging_table(kind).full_name.ljust(width + 4)} {rows:>12,} {held:>11,}")
            for source, reason, rows in held_by_reason:
                print(f"  quarantined: {source} {reason} {rows:,}")
    if identity:
        print(_identity_line(identity))
    if marts:
        print(_marts_lines(config, marts))
    if outcome.checks:
        passed = sum(1 for c in outcome.checks if c[2])
        warned = [c for c in outcome.checks if not c[2] and c[3] == "WARN"]
        failed = [c for c in outcome.checks if not c[2] and c[3] == "ERROR"]
        print(
            f"  quality checks: {passed} passed, {len(warned)} warnings, {len(failed)} critical failures"
            " (`cdm quality report` for details)"
        )
        for label, listed in (("critical failed", failed), ("warning", warned)):
            for asset, check, _, _ in listed:
                print(f"    {label}: {asset} {check}")
                if (asset, check) in outcome.check_details:
                    print(f"      {outcome.check_details[(asset, check)]}")
    print(f"  warehouse: {config.warehouse}")
    if not readable:
        return
    from cdm_pipeline.cli.report import report_lines_after_run

    try:
        lines = report_lines_after_run(config, outcome.run_id, outcome.success, [s for s, _ in outcome.failures])
    except Exception as exc:  # a disk full by now, a lock taken since: the summary still ends cleanly
        logger.info("cdm run: the governance report could not be written", exc_info=True)
        lines = [
            f"  governance report: not written: {why_warehouse_failed(exc, config.warehouse)}; `cdm report --run-id"
            f" {outcome.run_id}` writes it later"
        ]
    for line in lines:
        print(line)


def _marts_lines(config: CdmConfig, f: dict) -> str:
    stages = ", ".join(f"{n:,} {stage}" for stage, n in f["lifecycle"])
    lines = [
        f"  marts (as of {f['as_of']}): {f['customers']:,} customers ({f['contactable']:,} e-mail"
        f" contactable), {f['events']:,} journey events in {f['sessions']:,} web sessions,"
        f" {f['orders']:,} orders attributed",
        f"  lifecycle: {stages}",
    ]
    folder = config.exports.dir
    names = sorted(p.name for p in folder.glob("*") if p.is_dir()) if folder.exists() else []
    files = [folder / name / f"{f['as_of']}.csv" for name in names]
    files = [p for p in files if p.exists()]
    if files:
        lines.append(f"  audience files ({len(files)}) for {f['as_of']} in {folder}")
    return "\n".join(lines)


def identity_counts_line(f: dict) -> str:
    """Records, customers and id changes of a ``resolution_runs`` row (also ``cdm identity relink``'s)."""
    return (
        f"  identity: {f['records']:,} records -> {f['customers']:,} customers"
        f" ({f['new_ids']:,} new, {f['merged_ids']:,} merged, {f['split_ids']:,} split,"
        f" {f['retired_ids']:,} retired ids; "
        + (f"model v{f['model_version']}" if f["model_version"] else "exact identifiers only, no model yet")
        + (", trained this run" if f["model_trained"] else "") + ")"
    )


def identity_mode_line(f: dict) -> str | None:
    """Which resolution ran and why; an incremental night's counts. None for rows from before modes."""
    if not f.get("mode"):
        return None
    # The engine only when it is not the default (README, "Engines: DuckDB or Spark").
    engine = f" on {f['engine']}" if f.get("engine") not in (None, "duckdb") else ""
    line = f"  identity mode: {f['mode']}{engine} ({f['mode_reason']})"
    if f["mode"] == "incremental":
        line += (
            f": {f['changed_records']:,} records changed, {f['removed_records']:,} removed,"
            f" {f['reclustered_records']:,} re-clustered"
        )
    return line


def _identity_line(f: dict) -> str:
    line = identity_counts_line(f)
    mode = identity_mode_line(f)
    if mode:
        line += "\n" + mode
    if f.get("expected_precision") is not None:
        line += (
            f"\n  identity signals (the model's own, no labels): expected precision"
            f" {f['expected_precision']:.3f}, expected recall {f['expected_recall']:.3f},"
            f" {f['singleton_share']:.1%} of contact records alone in their cluster"
        )
    untrained = f.get("untrained_levels") or []
    if f["model_version"]:  # without a model there are no levels to speak of
        listed = f" ({'; '.join(untrained)})" if untrained else ""
        line += f"\n  untrained levels (weight 0): {len(untrained)}{listed}"
    for warning in f.get("signal_warnings") or []:
        line += f"\n  identity warning: {warning}"
    if f["pairwise_f1"] is not None:
        line += (
            f"\n  identity vs ground truth: pairwise precision {f['pairwise_precision']:.4f},"
            f" recall {f['pairwise_recall']:.4f}, F1 {f['pairwise_f1']:.4f}"
        )
    return line
