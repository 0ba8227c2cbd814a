"""``cdm identity train | evaluate | explain``: the linkage model and the clusters, for people."""

from __future__ import annotations

import sys
from pathlib import Path


def train_command(config_path: Path | None) -> int:
    """Train a new model version on the staged records; the next run uses it."""
    import duckdb

    from cdm_pipeline.cli.run import resolve_config
    from cdm_pipeline.lib.identity.model import ModelError
    from cdm_pipeline.lib.identity.resolve import train_identity_model
    from cdm_pipeline.lib.warehouse import connect, safe_error_message, table_exists

    config = resolve_config(config_path)
    if not config.warehouse.exists():
        print(f"no warehouse yet at {config.warehouse}: run `cdm run` or `cdm demo` first", file=sys.stderr)
        return 1
    try:
        conn = connect(config.warehouse, settings=config.duckdb.connection_settings())
    except duckdb.IOException:
        print(f"cdm identity train: the warehouse {config.warehouse} is in use by another process"
              " (a run in progress?); try again when it has finished", file=sys.stderr)
        return 1
    try:
        if not table_exists(conn, "staging", "contacts"):
            print("no staged contacts yet: run `cdm run` first", file=sys.stderr)
            return 1
        model = train_identity_model(conn, config)
    except ModelError as exc:
        print(f"cdm identity train: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        # A database or Splink message can quote the value it failed on: first line, masked.
        print(f"cdm identity train: {exc.__class__.__name__}: {safe_error_message(exc)}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    print(
        f"trained model version {model.version} on {model.trained_on_records:,} contact records"
        f" ({', '.join(model.columns)})"
    )
    print(f"  saved: {config.identity.model_path} (the previous version is kept beside it)")
    print("  the next `cdm run` resolves identities with it")
    return 0


def evaluate_command(config_path: Path | None, truth: Path) -> int:
    """Pairwise precision, recall and F1 of the published clusters against labelled records."""
    from cdm_pipeline.cli.run import resolve_config
    from cdm_pipeline.lib.identity.evaluation import TruthFileError, evaluate_clusters

    conn = _open_resolved(resolve_config(config_path))
    if conn is None:
        return 1
    try:
        scores = evaluate_clusters(conn, truth)
    except TruthFileError as exc:
        print(f"cdm identity evaluate: {exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    print(f"evaluated {scores.records:,} records found in both the truth file and identity.customer_xref")
    print(
        f"  true pairs {scores.true_pairs:,}, predicted pairs {scores.predicted_pairs:,},"
        f" correct {scores.correct_pairs:,}"
    )
    print(f"  pairwise precision {scores.precision:.4f}  recall {scores.recall:.4f}  F1 {scores.f1:.4f}")
    return 0


def explain_command(config_path: Path | None, customer_id: str) -> int:
    """A customer's member records (masked) and the match weights of the links that joined them."""
    from cdm_pipeline.cli.run import resolve_config
    from cdm_pipeline.lib.identity.explain import UnknownCustomer, explain_customer

    conn = _open_resolved(resolve_config(config_path))
    if conn is None:
        return 1
    try:
        explanation = explain_customer(conn, customer_id)
    except UnknownCustomer as exc:
        print(f"cdm identity explain: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    e = explanation
    if e.asked_for != e.customer_id:
        print(f"{e.asked_for} was merged into {e.customer_id}")
    elif e.status != "active":
        print(f"{e.customer_id} is {e.status}: no records belong to it any more")
        return 0
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
    return 0


def _open_resolved(config):
    from cdm_pipeline.lib.warehouse import connect, table_exists

    if not config.warehouse.exists():
        print(f"no warehouse yet at {config.warehouse}: run `cdm run` or `cdm demo` first", file=sys.stderr)
        return None
    conn = connect(config.warehouse, read_only=True)
    if not table_exists(conn, "identity", "customer_xref"):
        conn.close()
        print("identity resolution has not run yet: run `cdm run` first", file=sys.stderr)
        return None
    return conn
