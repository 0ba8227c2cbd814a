"""``cdm privacy erase|export|requests``: privacy operations on the warehouse.

Output is counts only: the identifier a person gave is never echoed, and nothing about them goes
to a log. Erasure ends by rewriting the warehouse file, so it needs the warehouse to itself (no
run in progress, no UI session holding it open).
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _error(message: str, status: int = EXIT_USAGE) -> int:
    print(f"cdm: error: {message}", file=sys.stderr)
    return status


def erase_command(
    config_path: Path | None, email: str | None, phone: str | None, customer_id: str | None,
    request_id: str | None, dry_run: bool,
) -> int:
    from cdm_pipeline.cli.run import resolve_config
    from cdm_pipeline.cli.warehouse_access import open_for_command
    from cdm_pipeline.lib.privacy.access import subject_document
    from cdm_pipeline.lib.privacy.erasure import compact_if_pending, compact_warehouse, erase_subject
    from cdm_pipeline.lib.personal_data.keyed_hash import MissingPrivacyKey, privacy_key
    from cdm_pipeline.lib.privacy.subject import SubjectError, find_subject

    config = resolve_config(config_path)
    request_id = request_id or f"cli-{uuid.uuid4().hex[:12]}"
    try:
        key = None if dry_run else privacy_key()
    except MissingPrivacyKey as exc:
        return _error(str(exc))
    conn, status = open_for_command(config, "cdm privacy")
    if conn is None:
        return status
    try:
        try:
            subject = find_subject(conn, config, email=email, phone=phone, customer_id=customer_id)
        except SubjectError as exc:
            return _error(str(exc))
        if not subject.found:
            conn.close()
            # Perhaps an earlier erasure of this person died before rewriting the file.
            if compact_if_pending(config.warehouse):
                print(f"request {request_id}: nothing left to erase; finished an earlier erasure's file rewrite")
            else:
                print(f"request {request_id}: no customer or record matches; nothing erased")
            return EXIT_OK
        if dry_run:
            document = subject_document(conn, config, subject)
            counts = {layer: sum(len(rows) for rows in document[layer].values())
                      for layer in ("raw", "quarantine", "staging", "identity", "marts")}
            print(
                f"dry run {request_id}: would erase {len(subject.customer_ids)} customer(s),"
                f" {len(subject.records)} records, {len(subject.emails)} e-mail address(es),"
                f" {len(subject.phones)} phone number(s); rows: "
                + ", ".join(f"{layer} {n:,}" for layer, n in counts.items())
            )
            return EXIT_OK
        result = erase_subject(conn, config, subject, request_id, key)
    finally:
        conn.close()
    before, after = compact_warehouse(config.warehouse)
    print(
        f"erased request {request_id}: {result.customers} customer(s), {result.records} records,"
        f" {result.total_rows:,} rows deleted in {sum(1 for n in result.rows_deleted.values() if n)} tables,"
        f" {result.suppression_entries} identifiers suppressed, {result.export_lines_removed} audience-file"
        f" lines removed; warehouse rewritten ({before / 1e6:,.1f} MB -> {after / 1e6:,.1f} MB)"
        f" in {result.seconds:.1f} s"
    )
    return EXIT_OK


def export_command(
    config_path: Path | None, email: str | None, phone: str | None, customer_id: str | None,
    out: Path, request_id: str | None,
) -> int:
    from cdm_pipeline.cli.run import resolve_config
    from cdm_pipeline.cli.warehouse_access import open_for_command
    from cdm_pipeline.lib.privacy.access import write_subject_document
    from cdm_pipeline.lib.privacy.subject import SubjectError, find_subject

    config = resolve_config(config_path)
    request_id = request_id or f"cli-{uuid.uuid4().hex[:12]}"
    conn, status = open_for_command(config, "cdm privacy")
    if conn is None:
        return status
    try:
        try:
            subject = find_subject(conn, config, email=email, phone=phone, customer_id=customer_id)
        except SubjectError as exc:
            return _error(str(exc))
        counts = write_subject_document(conn, config, subject, out.absolute(), request_id)
    finally:
        conn.close()
    print(
        f"access request {request_id}: {len(subject.customer_ids)} customer(s), {len(subject.records)} records;"
        f" rows " + ", ".join(f"{layer} {n:,}" for layer, n in counts.items()) + f" -> {out.absolute()}"
    )
    return EXIT_OK


def requests_command(config_path: Path | None) -> int:
    from cdm_pipeline.cli.run import resolve_config
    from cdm_pipeline.cli.warehouse_access import open_for_command
    from cdm_pipeline.lib.privacy.erasure import compact_if_pending
    from cdm_pipeline.lib.personal_data.keyed_hash import MissingPrivacyKey
    from cdm_pipeline.lib.privacy.requests import RequestFileError, process_requests

    config = resolve_config(config_path)
    conn, status = open_for_command(config, "cdm privacy")
    if conn is None:
        return status
    try:
        outcomes = process_requests(conn, config, None, f"cli-{uuid.uuid4().hex[:8]}")
    except (RequestFileError, MissingPrivacyKey) as exc:
        return _error(str(exc))
    finally:
        conn.close()
    compact_if_pending(config.warehouse)
    print(f"privacy requests: {len(outcomes)} processed from {config.privacy.requests_path}")
    for o in outcomes:
        print(f"  {o.request_id}: {o.action} {o.status} ({o.customers} customers, {o.rows_affected:,} rows)")
    return EXIT_OK
