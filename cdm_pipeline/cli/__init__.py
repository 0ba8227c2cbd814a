"""The ``cdm`` command line.

Exit status (``cli/exit_codes.py``): 0 success; 1 a run, a step or the command failed, or the
warehouse is in use by another process; 2 a usage or configuration mistake, or no warehouse yet.
A refusal is one line on stderr (naming the file and key for config mistakes); no traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import sys
import warnings
from pathlib import Path

from cdm_pipeline.cli.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CommandError
from cdm_pipeline.config import ConfigError
from cdm_pipeline.lib.file_modes import private_umask

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _whole_number(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
        return value

    return parse


_positive = _whole_number(1)
_seed = _whole_number(0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdm",
        description="Customer data management pipeline: raw exports in, golden customers out.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = "config file (default: $CDM_CONFIG, else ./cdm.yaml, else the project's cdm.yaml)"

    demo = commands.add_parser("demo", help="generate the demo landing data and run the pipeline on it")
    demo.add_argument("--config", type=Path, help=config_help)
    demo.add_argument("--people", type=_positive, default=5000, help="underlying people (default 5000)")
    demo.add_argument("--days", type=_positive, default=14, help="daily partitions (default 14)")
    demo.add_argument("--seed", type=_seed, default=42, help="random seed (default 42)")
    demo.add_argument("--verbose", action="store_true", help="show Dagster's event log")

    generate = commands.add_parser("generate-demo", help="write realistic demo landing files")
    generate.add_argument("--people", type=_positive, default=5000)
    generate.add_argument("--days", type=_positive, default=14)
    generate.add_argument("--seed", type=_seed, default=42)
    generate.add_argument("--out", type=Path, required=True, help="landing folder to write")
    generate.add_argument("--start", type=_date, default=None, help="first day (default 2026-10-01)")

    run = commands.add_parser("run", help="materialise every asset for a date or a range of dates")
    run.add_argument("--config", type=Path, help=config_help)
    when = run.add_mutually_exclusive_group(required=True)
    when.add_argument("--date", type=_date, help="one partition, YYYY-MM-DD")
    when.add_argument("--from", dest="first", type=_date, help="first partition of a range")
    run.add_argument("--to", dest="last", type=_date, help="last partition of a range (with --from)")
    run.add_argument("--verbose", action="store_true", help="show Dagster's event log")
    run.add_argument(
        "--allow-shrink", action="store_true",
        help="let a re-loaded partition hold fewer rows or files than before (the smaller files are right)",
    )

    quality = commands.add_parser("quality", help="data-quality results")
    quality_commands = quality.add_subparsers(dest="quality_command", required=True, metavar="COMMAND")
    report = quality_commands.add_parser("report", help="latest results per staging table and the Data Docs path")
    report.add_argument("--config", type=Path, help=config_help)

    pages = commands.add_parser(
        "report", help="rebuild the run's governance report and the insights dashboard; print their paths"
    )
    pages.add_argument("--config", type=Path, help=config_help)
    pages.add_argument("--run-id", dest="run_id", help="the Dagster run to report on (default: the latest)")
    pages.add_argument("--open", dest="open_pages", action="store_true", help="open both pages in a web browser")

    identity = commands.add_parser("identity", help="the linkage model and the customers it resolves")
    identity_commands = identity.add_subparsers(dest="identity_command", required=True, metavar="COMMAND")
    train = identity_commands.add_parser("train", help="train a new model version on the staged records")
    train.add_argument("--config", type=Path, help=config_help)
    relink = identity_commands.add_parser(
        "relink", help="re-link every record now (a full resolution, the incremental nights' reference)"
    )
    relink.add_argument("--config", type=Path, help=config_help)
    evaluate = identity_commands.add_parser(
        "evaluate", help="pairwise precision, recall and F1 against labelled records"
    )
    evaluate.add_argument("--config", type=Path, help=config_help)
    evaluate.add_argument(
        "--truth", type=Path, required=True,
        help="CSV or Parquet with source_name, source_record_id, entity (or the demo's ground_truth.parquet)",
    )
    explain = identity_commands.add_parser("explain", help="why records are one customer (values masked)")
    explain.add_argument("customer_id")
    explain.add_argument("--config", type=Path, help=config_help)

    export = commands.add_parser(
        "export", help="hashed audience files for ad platforms; de-identified marts for analysts"
    )
    export_commands = export.add_subparsers(dest="export_command", required=True, metavar="COMMAND")
    export_segment = export_commands.add_parser(
        "segment", help="write a segment's consenting members (SHA-256 of email and phone) as a customer-match CSV"
    )
    export_segment.add_argument(
        "name", help="segment: a custom name, Champions, cant_lose_them, rfm:at_risk, lifecycle_new, ..."
    )
    export_segment.add_argument("--config", type=Path, help=config_help)
    export_segment.add_argument(
        "--out", type=Path, help="file to write (default: <exports dir>/<segment folder>/<as-of date>.csv)"
    )
    export_analyst = export_commands.add_parser(
        "analyst",
        help="write the six marts as Parquet for analysts: names, contact details and addresses removed,"
        " ids hashed with $CDM_PRIVACY_KEY",
    )
    export_analyst.add_argument("--config", type=Path, help=config_help)
    export_analyst.add_argument(
        "--out", type=Path, required=True,
        help="folder to write (new, empty, or a previous analyst export, which is replaced)",
    )

    privacy = commands.add_parser(
        "privacy", help="erasure, access requests and the request queue (needs $CDM_PRIVACY_KEY)"
    )
    privacy_commands = privacy.add_subparsers(dest="privacy_command", required=True, metavar="COMMAND")
    erase = privacy_commands.add_parser(
        "erase", help="remove a person from every layer, suppress them for future loads, rewrite the warehouse"
    )
    export_person = privacy_commands.add_parser("export", help="write everything held on a person as JSON")
    for sub in (erase, export_person):
        who = sub.add_mutually_exclusive_group(required=True)
        who.add_argument("--email", help="the person's e-mail address")
        who.add_argument("--phone", help="the person's phone number (national numbers read in default_region)")
        who.add_argument("--customer-id", dest="customer_id", help="the person's customer id")
        sub.add_argument("--request-id", dest="request_id", help="the request's id for the audit log")
        sub.add_argument("--config", type=Path, help=config_help)
    erase.add_argument("--dry-run", action="store_true", help="count what would be erased; change nothing")
    export_person.add_argument("--out", type=Path, required=True, help="JSON file to write")
    queue = privacy_commands.add_parser("requests", help="carry out the requests queued in privacy.requests_path")
    queue.add_argument("--config", type=Path, help=config_help)
    unseal = privacy_commands.add_parser(
        "decrypt", help="write the plain JSON of an encrypted access document (<id>.json.enc), for the person"
    )
    unseal.add_argument("file", type=Path, help="the .enc document")
    unseal.add_argument("--out", type=Path, required=True, help="JSON file to write (created owner-only)")
    unseal.add_argument("--config", type=Path, help=config_help)

    warehouse = commands.add_parser("warehouse", help="encrypt, decrypt, re-key or verify the warehouse file")
    warehouse_commands = warehouse.add_subparsers(dest="warehouse_command", required=True, metavar="COMMAND")
    for name, text in (
        ("encrypt", "encrypt a plain warehouse under $CDM_WAREHOUSE_KEY (or $CDM_WAREHOUSE_NEW_KEY)"),
        ("decrypt", "turn the encrypted warehouse back into a plain DuckDB file"),
        ("rotate-key", "re-encrypt the warehouse from $CDM_WAREHOUSE_KEY to $CDM_WAREHOUSE_NEW_KEY"),
        ("verify", "read every table in full so a corrupt block is found; exit 1 naming the table"),
    ):
        warehouse_commands.add_parser(name, help=text).add_argument("--config", type=Path, help=config_help)

    backup = commands.add_parser(
        "backup", help="write a checksummed snapshot of the warehouse, model, ledger and run state to backups.dir"
    )
    backup.add_argument("--config", type=Path, help=config_help)
    backup.add_argument("--list", dest="list_only", action="store_true", help="list the snapshots; write none")
    restore = commands.add_parser(
        "restore", help="restore a snapshot: checksums verified, every erasure since re-applied, swapped in"
    )
    restore.add_argument("snapshot", help="the snapshot's folder name under backups.dir (see `cdm backup --list`)")
    restore.add_argument("--config", type=Path, help=config_help)

    sources = commands.add_parser("sources", help="the export presets, and a dry read of one source's files")
    sources_commands = sources.add_subparsers(dest="sources_command", required=True)
    sources_commands.add_parser("presets", help="list the presets a source can start from")
    preview = sources_commands.add_parser(
        "preview",
        help="read and stage one partition of one source in memory (values masked; the warehouse is not touched)",
    )
    preview.add_argument("name", help="the source's name in the config")
    preview.add_argument("--date", type=_date, required=True, help="the partition, YYYY-MM-DD")
    preview.add_argument("--config", type=Path, help=config_help)

    ui = commands.add_parser("ui", help="start the Dagster UI on 127.0.0.1")
    ui.add_argument("--config", type=Path, help=config_help)
    ui.add_argument("--port", type=int, default=3000, help="port (default 3000)")
    return parser


def main(argv: list[str] | None = None) -> int:
    # `cdm quality report | head` should end quietly, as other command-line tools do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    # Everything this command and its Dagster processes create holds personal data or run state:
    # owner-only whatever the shell's umask.
    private_umask()
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries(getattr(args, "verbose", False))
    try:
        if args.command == "run":
            if args.first and not args.last:
                parser.error("--from needs --to")
            if args.last and not args.first:
                parser.error("--to needs --from")
            from cdm_pipeline.cli.run import run_command

            return run_command(
                args.config, args.date or args.first, args.date or args.last, args.verbose,
                allow_shrink=args.allow_shrink,
            )
        if args.command == "demo":
            from cdm_pipeline.cli.demo import demo_command

            return demo_command(args.config, args.people, args.days, args.seed, args.verbose)
        if args.command == "generate-demo":
            from cdm_pipeline.cli.demo import generate_demo_command

            return generate_demo_command(args.out, args.people, args.days, args.seed, args.start)
        if args.command == "quality":
            from cdm_pipeline.cli.quality import quality_report_command

            return quality_report_command(args.config)
        if args.command == "report":
            from cdm_pipeline.cli.report import report_command

            return report_command(args.config, args.run_id, args.open_pages)
        if args.command == "identity":
            from cdm_pipeline.cli import identity as identity_cli

            if args.identity_command == "train":
                return identity_cli.train_command(args.config)
            if args.identity_command == "relink":
                return identity_cli.relink_command(args.config)
            if args.identity_command == "evaluate":
                return identity_cli.evaluate_command(args.config, args.truth)
            return identity_cli.explain_command(args.config, args.customer_id)
        if args.command == "export":
            from cdm_pipeline.cli.export import export_analyst_command, export_segment_command

            if args.export_command == "analyst":
                return export_analyst_command(args.config, args.out)
            return export_segment_command(args.config, args.name, args.out)
        if args.command == "privacy":
            from cdm_pipeline.cli import privacy as privacy_cli

            if args.privacy_command == "erase":
                return privacy_cli.erase_command(
                    args.config, args.email, args.phone, args.customer_id, args.request_id, args.dry_run
                )
            if args.privacy_command == "export":
                return privacy_cli.export_command(
                    args.config, args.email, args.phone, args.customer_id, args.out, args.request_id
                )
            if args.privacy_command == "decrypt":
                return privacy_cli.decrypt_command(args.config, args.file, args.out)
            return privacy_cli.requests_command(args.config)
        if args.command == "warehouse":
            from cdm_pipeline.cli import warehouse as warehouse_cli

            return {
                "encrypt": warehouse_cli.encrypt_command, "decrypt": warehouse_cli.decrypt_command,
                "rotate-key": warehouse_cli.rotate_key_command, "verify": warehouse_cli.verify_command,
            }[args.warehouse_command](args.config)
        if args.command == "backup":
            from cdm_pipeline.cli.backup import backup_command

            return backup_command(args.config, args.list_only)
        if args.command == "restore":
            from cdm_pipeline.cli.backup import restore_command

            return restore_command(args.config, args.snapshot)
        if args.command == "sources":
            from cdm_pipeline.cli import sources as sources_cli

            if args.sources_command == "presets":
                return sources_cli.presets_command()
            return sources_cli.preview_command(args.config, args.name, args.date)
        if args.command == "ui":
            from cdm_pipeline.cli.ui import ui_command

            return ui_command(args.config, args.port)
    except ConfigError as exc:
        print(f"cdm: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as exc:
        print(f"{exc.prefix}: {exc}", file=sys.stderr)
        return exc.status
    except _warehouse_locked() as exc:
        print(f"cdm: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except _privacy_key_refused() as exc:
        # No key, another key than the warehouse's, or an unreadable suppression ledger: a
        # setting for the person to fix, before anything was changed.
        print(f"cdm: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except _encryption_error() as exc:
        # A missing, wrong or unusable warehouse key: the operator's setting to fix, like a config key.
        print(f"cdm: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


def _warehouse_locked() -> type[Exception]:
    # Evaluated only when an exception is being matched: `cdm --help` does not import DuckDB.
    from cdm_pipeline.lib.warehouse import WarehouseLocked

    return WarehouseLocked


def _encryption_error() -> type[Exception]:
    from cdm_pipeline.lib.encryption import EncryptionError

    return EncryptionError


def _privacy_key_refused() -> tuple[type[Exception], ...]:
    from cdm_pipeline.lib.personal_data.keyed_hash import MissingPrivacyKey
    from cdm_pipeline.lib.personal_data.suppression_ledger import LedgerError

    return MissingPrivacyKey, LedgerError


def _quiet_libraries(verbose: bool) -> None:
    # Library warnings (deprecations inside dependencies) are noise for someone running a night's
    # load; --verbose brings them back.
    if not verbose:
        warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


if __name__ == "__main__":
    sys.exit(main())
