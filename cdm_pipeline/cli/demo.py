"""``cdm demo`` and ``cdm generate-demo``: synthetic landing data, and the pipeline run on it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cdm_pipeline.cli.exit_codes import EXIT_FAILED, EXIT_OK
from cdm_pipeline.config import ConfigError


def generate_demo_command(out: Path, people: int, days: int, seed: int, start: dt.date | None) -> int:
    from cdm_pipeline.lib.demo import DEMO_START_DATE

    summary = _generate(out, people, days, seed, start or DEMO_START_DATE)
    _print_generated(summary)
    return EXIT_OK


def demo_command(config_path: Path | None, people: int, days: int, seed: int, verbose: bool) -> int:
    from cdm_pipeline.cli.config_file import resolve_config
    from cdm_pipeline.cli.run import print_run_summary, run_progress
    from cdm_pipeline.lib.demo import DEMO_START_DATE
    from cdm_pipeline.runner import check_partition_range, check_run_request, run_partitions

    config = resolve_config(config_path)
    first = config.start_date or DEMO_START_DATE
    if config.start_date is None:
        # The demo's files do not exist yet, so the partitions cannot begin at them.
        config = config.model_copy(update={"start_date": first})
    last = first + dt.timedelta(days=days - 1)
    check_partition_range(config, first, last)
    summary = _generate(config.landing_dir, people, days, seed, first)
    _print_generated(summary)
    check_run_request(config, first, last)
    outcome = run_partitions(config, first, last, verbose=verbose, progress=run_progress(verbose))
    print_run_summary(config, first, last, outcome)
    print(f"  ground truth (never loaded): {summary.ground_truth_path}")
    print("  open the UI: `make ui` (or `.venv/bin/cdm ui`), then http://127.0.0.1:3000")
    return EXIT_OK if outcome.success else EXIT_FAILED


def _generate(out: Path, people: int, days: int, seed: int, start: dt.date):
    from cdm_pipeline.lib.demo import generate_demo

    try:
        return generate_demo(out, people=people, days=days, seed=seed, start_date=start)
    except ValueError as exc:
        raise ConfigError("command line", "--out/landing_dir", str(exc)) from None


def _print_generated(summary) -> None:
    print(
        f"generated demo data for {summary.people:,} people over {summary.days} days"
        f" from {summary.start_date} (seed {summary.seed}) in {summary.seconds:.1f} s:"
        f" {summary.files_written} files in {summary.out_dir}"
    )
    for name, rows in summary.rows.items():
        print(f"  {name.ljust(20)} {rows:>12,} rows")
