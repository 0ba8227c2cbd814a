"""``cdm identity train | relink | evaluate | explain``: the linkage model and the clusters, for people."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from cdm_pipeline.cli.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CommandError
from cdm_pipeline.lib.catalog import XREF

if TYPE_CHECKING:
    import duckdb

    from cdm_pipeline.config import CdmConfig


def train_command(config_path: Path | None) -> int:
    """Train a new model version on the staged records; the next run uses it."""
    from cdm_pipeline.cli.config_file import resolve_config
    from cdm_pipeline.cli.warehouse_access import command_warehouse
    from cdm_pipeline.lib.catalog import staging_table
    from cdm_pipeline.lib.identity.engine import EngineUnavailable
    from cdm_pipeline.lib.identity.model import ModelError
    from cdm_pipeline.lib.identity.resolve import train_identity_model
    from cdm_pipeline.lib.warehouse import safe_error_message, table_exists

    config = resolve_config(config_path)
    with command_warehouse(config) as conn:
        if not table_exists(conn, staging_table("contacts")):
            raise CommandError("no staged contacts yet: run `cdm run` first", EXIT_FAILED, prefix="cdm identity train")
        try:
            model = train_identity_model(conn, config)
        except (ModelError, EngineUnavailable) as exc:
            raise CommandError(str(exc), EXIT_FAILED, prefix="cdm identity train") from None
        except Exception as exc:
            # A database or Splink message can quote the value it failed on: first line, masked.
            raise CommandError(
                f"{exc.__class__.__name__}: {safe_error_message(exc)}", EXIT_FAILED, prefix="cdm identity train"
            ) from None
    print(
        f"trained model version {model.version} on {model.trained_on_records:,} contact records"
        f" ({', '.join(model.columns)})"
    )
    print(f"  saved: {config.identity.model_path} (the previous version is kept beside it)")
    print("  the next `cdm run` resolves identities with it")
    return EXIT_OK


def relink_command(config_path: Path | None) -> int:
    """A full re-link now: every pair scored and every record clustered again, the reference the
    incremental nights are measured against; then the marts, so they match the customers."""
    from cdm_pipeline.cli.config_file import resolve_config
    from cdm_pipeline.cli.run import identity_counts_line, identity_mode_line
    from cdm_pipeline.cli.warehouse_access import command_warehouse
    from cdm_pipeline.lib.catalog import staging_table
    from cdm_pipeline.lib.identity.clusters import OverrideFileError
    from cdm_pipeline.lib.identity.engine import EngineUnavailable
    from cdm_pipeline.lib.identity.matching import TooManyComparisons
    from cdm_pipeline.lib.identity.model import ModelError
    from cdm_pipeline.lib.identity.resolve import resolve_identities
    from cdm_pipeline.lib.identity.run_ids import relink_resolution_id
    from cdm_pipeline.lib.identity.summary import identity_run_figures
    from cdm_pipeline.lib.marts.build import build_marts
    from cdm_pipeline.lib.warehouse import safe_error_message, table_exists

    prefix = "cdm identity relink"
    config = resolve_config(config_path)
    # Its own id, never a Dagster run's: the resolution_runs row says who resolved.
    run_id = relink_resolution_id(f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}", secrets.token_hex(4))
    started = time.monotonic()
    with command_warehouse(config) as conn:
        if not table_exists(conn, staging_table("contacts")):
            raise CommandError("no staged contacts yet: run `cdm run` first", EXIT_USAGE, prefix=prefix)
        if not table_exists(conn, XREF):
            raise CommandError("identity resolution has not run yet: run `cdm run` first", EXIT_USAGE, prefix=prefix)
        try:
            resolve_identities(conn, config, run_id, full=True)
            resolved = time.monotonic()
            # As after an erasure (privacy/erasure.py): marts exist once orders were staged.
            marts = build_marts(conn, config) if table_exists(conn, staging_table("orders")) else None
        except (TooManyComparisons, ModelError, OverrideFileError, EngineUnavailable) as exc:  # written for users
            raise CommandError(str(exc), EXIT_FAILED, prefix=prefix) from None
        except Exception as exc:
            # A database or Splink message can quote the value it failed on: first line, masked.
            raise CommandError(
                f"{exc.__class__.__name__}: {safe_error_message(exc)}", EXIT_FAILED, prefix=prefix
            ) from None
        figures = identity_run_figures(conn, run_id)
    done = time.monotonic()
    print(f"full re-link {run_id}: done in {done - started:.1f} s")
    print(identity_mode_line(figures))
    print(f"{identity_counts_line(figures)} in {resolved - started:.1f} s")
    if marts is not None:
        print(f"  marts rebuilt as of {marts.as_of} in {done - resolved:.1f} s")
    print("  audience exports, the analyst warehouse and the reports refresh on the next `cdm run`")
    return EXIT_OK


def evaluate_command(config_path: Path | None, truth: Path) -> int:
    """Pairwise precision, recall and F1 of the published clusters against labelled records."""
    from cdm_pipeline.cli.config_file import resolve_config
    from cdm_pipeline.lib.identity.evaluation import TruthFileError, evaluate_clusters

    with _resolved_warehouse(resolve_config(config_path)) as conn:
        try:
            scores = evaluate_clusters(conn, truth)
        except TruthFileError as exc:
            raise CommandError(str(exc), EXIT_USAGE, prefix="cdm identity evaluate") from None
    print(f"evaluated {scores.records:,} records found in both the truth file and {XREF.full_name}")
    print(
        f"  true pairs {scores.true_pairs:,}, predicted pairs {scores.predicted_pairs:,},"
        f" correct {scores.correct_pairs:,}"
    )
    print(f"  pairwise precision {scores.precision:.4f}  recall {scores.recall:.4f}  F1 {scores.f1:.4f}")
    return EXIT_OK


def explain_command(config_path: Path | None, customer_id: str) -> int:
    """A customer's member records (masked) and the match weights of the links that joined them."""
    from cdm_pipeline.cli.config_file import resolve_config
    from cdm_pipeline.lib.identity.explain import UnknownCustomer, explain_customer, record_explanation

    # Read-write: showing a customer's records writes a security audit row first.
    with _resolved_warehouse(resolve_config(config_path), read_only=False) as conn:
        try:
            explanation = explain_customer(conn, customer_id)
        except UnknownCustomer as exc:
            raise CommandError(str(exc), EXIT_FAILED, prefix="cdm identity explain") from None
        record_explanation(conn, explanation)
    e = explanation
    if e.asked_for != e.customer_id:
        print(f"{e.asked_for} was merged into {e.customer_id}")
    elif e.status != "active":
        print(f"{e.customer_id} is {e.status}: no records belong to it any more")
        return EXIT_OK
    sources = sorted({m.source_name for m in e.members})
    print(f"customer {e.customer_id}: {len(e.members)} records from {', '.join(sources)}")
    if e.merged_ids:
        print(f"  earlier ids merged into it: {', '.join(e.merged_ids)}")
    print("records (personal values masked):")
    for number, member in enumerate(e.members, start=1):
        values = "  ".join(f"{k} {v}" for k, v in member.masked.items() if v != "-")
        print(f"  [{number}] {member.source_name} {member.source_record_id}  {values}".rstrip())
    print("links that joined them:" if e.links else "no links: a single record")
    for link in e.links:
        pair = f"  [{link.left + 1}]-[{link.right + 1}]"
        if link.rule == "splink":
            weights = ", ".join(f"{k} {v:+.1f}" for k, v in link.weights.items())
            print(f"{pair} probabilistic, match probability {link.match_probability:.4f}"
                  f" (weight {link.match_weight:+.1f}): {weights}")
        else:
            print(f"{pair} deterministic: {link.rule.replace('_', ' ')}")
    return EXIT_OK


@contextmanager
def _resolved_warehouse(config: CdmConfig, *, read_only: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
    """The warehouse (read-only unless asked), once identity resolution has published its customers."""
    from cdm_pipeline.cli.warehouse_access import command_warehouse
    from cdm_pipeline.lib.warehouse import table_exists

    with command_warehouse(config, read_only=read_only) as conn:
        if not table_exists(conn, XREF):
            raise CommandError("identity resolution has not run yet: run `cdm run` first", EXIT_FAILED)
        yield conn
