"""``cdm privacy erase|export|requests|decrypt``: privacy operations on the warehouse.

Output is counts only: the identifier a person gave is never echoed, and nothing about them goes
to a log. Erasure ends by rewriting the warehouse file, so it needs the warehouse to itself (no
run in progress, no UI session holding it open).
"""

from __future__ import annotations

import uuid
from pathlib import Path

from cdm_pipeline.cli.exit_codes import EXIT_OK, CommandError


def erase_command(
    config_path: Path | None, email: str | None, phone: str | None, customer_id: str | None,
    request_id: str | None, dry_run: bool,
) -> int:
    from cdm_pipeline.cli.config_file import resolve_config
    from cdm_pipeline.cli.warehouse_access import command_warehouse
    from cdm_pipeline.lib.encryption import warehouse_encryption
    from cdm_pipeline.lib.personal_data.keyed_hash import MissingPrivacyKey, privacy_key
    from cdm_pipeline.lib.personal_data.suppression import check_privacy_key
    from cdm_pipeline.lib.privacy.access import subject_document
    from cdm_pipeline.lib.privacy.erasure import compact_if_pending, compact_warehouse, erase_subject
    from cdm_pipeline.lib.privacy.subject import SubjectError, find_subject

    config = resolve_config(config_path)
    settings = config.duckdb.connection_settings()
    request_id = request_id or f"cli-{uuid.uuid4().hex[:12]}"
    try:
        key = None if dry_run else privacy_key()
    except MissingPrivacyKey as exc:
        raise CommandError(str(exc)) from None
    with command_warehouse(config) as conn:
        if key is not None:
            # Before looking: under another key "nobody found" would be a wrong answer, not a refusal.
            check_privacy_key(conn, key)
        try:
            subject = find_subject(conn, config, email=email, phone=phone, customer_id=customer_id)
        except SubjectError as exc:
            raise CommandError(str(exc)) from None
        if subject.found and dry_run:
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
        if subject.found:
            result = erase_subject(conn, config, subject, request_id, key)
    # The file is rewritten with no connection open on it.
    if not subject.found:
        # Perhaps an earlier erasure of this person died before rewriting the file.
        if compact_if_pending(config.warehouse, settings, warehouse_encryption(config)):
            print(f"request {request_id}: nothing left to erase; finished an earlier erasure's file rewrite")
        else:
            print(f"request {request_id}: no customer or record matches; nothing erased")
        return EXIT_OK
    before, after = compact_warehouse(config.warehouse, settings, warehouse_encryption(config))
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
    from cdm_pipeline.cli.config_file import resolve_config
    from cdm_pipeline.cli.warehouse_access import command_warehouse
    from cdm_pipeline.lib.privacy.access import document_path, write_subject_document
    from cdm_pipeline.lib.privacy.subject import SubjectError, find_subject

    config = resolve_config(config_path)
    request_id = request_id or f"cli-{uuid.uuid4().hex[:12]}"
    with command_warehouse(config) as conn:
        try:
            subject = find_subject(conn, config, email=email, phone=phone, customer_id=customer_id)
        except SubjectError as exc:
            raise CommandError(str(exc)) from None
        counts = write_subject_document(conn, config, subject, out.absolute(), request_id)
    print(
        f"access request {request_id}: {len(subject.customer_ids)} customer(s), {len(subject.records)} records;"
        f" rows " + ", ".join(f"{layer} {n:,}" for layer, n in counts.items())
        + f" -> {document_path(config, out.absolute())}"
    )
    return EXIT_OK


def decrypt_command(config_path: Path | None, sealed: Path, out: Path) -> int:
    """The plain JSON of an access document sealed under the warehouse key, for governance to hand over."""
    from cdm_pipeline.cli.config_file import resolve_config
    from cdm_pipeline.lib.encryption import KEY_ENV_VAR, warehouse_encryption
    from cdm_pipeline.lib.file_modes import create_private_dirs
    from cdm_pipeline.lib.sealed_files import read_sealed, write_private_bytes

    config = resolve_config(config_path)
    encryption = warehouse_encryption(config)
    if encryption is None:
        raise CommandError(f"no warehouse key: set {KEY_ENV_VAR} (or a key file) to the key that sealed the document")
    if out.exists() and out.resolve() == sealed.resolve():
        raise CommandError("--out must not be the encrypted document itself")
    data = read_sealed(sealed, encryption)
    create_private_dirs(out.absolute().parent)
    write_private_bytes(out, data)
    print(f"decrypted {sealed} -> {out.absolute()} ({len(data):,} bytes, owner-only): hand it over, then delete it")
    return EXIT_OK


def requests_command(config_path: Path | None) -> int:
    from cdm_pipeline.cli.config_file import resolve_config
    from cdm_pipeline.cli.warehouse_access import command_warehouse
    from cdm_pipeline.lib.encryption import warehouse_encryption
    from cdm_pipeline.lib.personal_data.keyed_hash import MissingPrivacyKey
    from cdm_pipeline.lib.privacy.erasure import compact_if_pending
    from cdm_pipeline.lib.privacy.requests import RequestFileError, process_requests

    config = resolve_config(config_path)
    with command_warehouse(config) as conn:
        try:
            outcomes = process_requests(conn, config, None, f"cli-{uuid.uuid4().hex[:8]}")
        except (RequestFileError, MissingPrivacyKey) as exc:
            raise CommandError(str(exc)) from None
    compact_if_pending(config.warehouse, config.duckdb.connection_settings(), warehouse_encryption(config))
    print(f"privacy requests: {len(outcomes)} processed from {config.privacy.requests_path}")
    for o in outcomes:
        print(f"  {o.request_id}: {o.action} {o.status} ({o.customers} customers, {o.rows_affected:,} rows)")
    return EXIT_OK
