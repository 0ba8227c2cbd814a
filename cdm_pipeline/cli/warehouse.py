"""``cdm warehouse encrypt | decrypt | rotate-key | verify``: the warehouse file itself.

``encrypt``, ``decrypt`` and ``rotate-key`` rewrite the file through ``lib.warehouse.rewrite_warehouse``:
a fresh copy under the target key, checked table by table, renamed over the old file while its
lock is held; a failure leaves the old file as it was. The rewritten file is then read in full
(``verify_warehouse``) under its new key. ``verify`` reads every block so DuckDB's checksums
catch a corrupt one. Each writes an audit row (counts and key fingerprints, never a key).
"""

from __future__ import annotations

from pathlib import Path

from cdm_pipeline.cli.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CommandError


def encrypt_command(config_path: Path | None) -> int:
    """Plain → encrypted under the configured key, else under ``$CDM_WAREHOUSE_NEW_KEY(_FILE)``."""
    from cdm_pipeline.lib.encryption import KEY_ENV_VAR, NEW_KEY_ENV_VAR, new_key, warehouse_encryption

    config = _config(config_path)
    if _encrypted(config.warehouse):
        raise CommandError(
            f"the warehouse {config.warehouse} is already encrypted; to change its key use `cdm warehouse rotate-key`"
        )
    target = warehouse_encryption(config)
    if target is None:
        if not _new_key_given():
            raise CommandError(
                f"no key to encrypt with: set {KEY_ENV_VAR} (or a key file), or {NEW_KEY_ENV_VAR}"
                " (e.g. openssl rand -hex 32 > key; chmod 600 key)"
            )
        target = new_key(config)
    rows, sizes = _rewrite(config, None, target, "warehouse_encrypt", f"encrypted under key {target.fingerprint}")
    print(
        f"encrypted the warehouse {config.warehouse}: {len(rows)} tables, {sum(rows.values()):,} rows verified"
        f" ({_sizes(sizes)}); key fingerprint {target.fingerprint}"
    )
    if warehouse_encryption(config) is None:
        print(f"now set {KEY_ENV_VAR} (or CDM_WAREHOUSE_KEY_FILE / security.key_file) to that key:"
              " without it nothing can open the warehouse")
    if config.security.crypto == "builtin":
        print("note: security.crypto is builtin: DuckDB's built-in mbedtls mode, which DuckDB does not"
              " consider securely encrypted; use httpfs where it can be installed")
    return EXIT_OK


def decrypt_command(config_path: Path | None) -> int:
    """Encrypted under the configured key → plain (an explicit choice: the file then protects nothing)."""
    from cdm_pipeline.lib.encryption import KEY_ENV_VAR

    config = _config(config_path)
    current = _current_key(config, "decrypt")
    rows, sizes = _rewrite(config, current, None, "warehouse_decrypt", f"decrypted from key {current.fingerprint}")
    print(
        f"decrypted the warehouse {config.warehouse}: {len(rows)} tables, {sum(rows.values()):,} rows verified"
        f" ({_sizes(sizes)}); it is a plain DuckDB file now: unset {KEY_ENV_VAR} (and any key file)"
    )
    return EXIT_OK


def rotate_key_command(config_path: Path | None) -> int:
    """Encrypted under the configured key → encrypted under ``$CDM_WAREHOUSE_NEW_KEY(_FILE)``."""
    from cdm_pipeline.lib.encryption import KEY_ENV_VAR, NEW_KEY_ENV_VAR, new_key

    config = _config(config_path)
    current = _current_key(config, "rotate-key")
    target = new_key(config)
    if target.fingerprint == current.fingerprint:
        raise CommandError(f"{NEW_KEY_ENV_VAR} is the current key: nothing to rotate")
    rows, sizes = _rewrite(
        config, current, target, "warehouse_rotate_key", f"key {current.fingerprint} -> {target.fingerprint}"
    )
    resealed = _reseal_access_documents(config, current, target)
    print(
        f"re-encrypted the warehouse {config.warehouse} under the new key: {len(rows)} tables,"
        f" {sum(rows.values()):,} rows verified ({_sizes(sizes)}); {resealed} access document(s) re-sealed;"
        f" key fingerprint {current.fingerprint} -> {target.fingerprint}"
    )
    print(f"the old key no longer opens it: now set {KEY_ENV_VAR} (or the key file) to the new key"
          f" and unset {NEW_KEY_ENV_VAR}")
    return EXIT_OK


def verify_command(config_path: Path | None) -> int:
    """Read every table in full; exit 1 with one line naming the first table that cannot be read."""
    import duckdb

    from cdm_pipeline.cli.warehouse_access import command_warehouse
    from cdm_pipeline.lib.governance.audit_log import record_audit
    from cdm_pipeline.lib.warehouse import safe_error_message
    from cdm_pipeline.lib.warehouse_check import WarehouseCorrupt, verify_warehouse

    config = _config(config_path)
    try:
        with command_warehouse(config) as conn:
            try:
                rows = verify_warehouse(conn)
            except WarehouseCorrupt as exc:
                _audit_quietly(conn, "warehouse_verify", 0, f"corrupt: table {exc.table}")
                raise CommandError(f"{exc}; restore a backup (`cdm restore`)", EXIT_FAILED) from None
            record_audit(conn, "warehouse_verify", None, sum(rows.values()), f"{len(rows)} tables read in full, ok")
    except duckdb.Error as exc:
        if isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower():
            raise  # WarehouseLocked: main's one line
        # A damaged header or catalogue fails already when the file is opened.
        raise CommandError(
            f"the warehouse {config.warehouse} cannot be read: {safe_error_message(exc)}", EXIT_FAILED
        ) from None
    print(f"warehouse {config.warehouse} ok: {len(rows)} tables, {sum(rows.values()):,} rows read in full")
    return EXIT_OK


def _config(config_path: Path | None):
    from cdm_pipeline.cli.config_file import resolve_config

    config = resolve_config(config_path)
    if not config.warehouse.exists():
        raise CommandError(
            f"no warehouse at {config.warehouse}: run the pipeline first (`cdm run` or `cdm demo`)", EXIT_USAGE
        )
    return config


def _encrypted(path: Path) -> bool:
    from cdm_pipeline.lib.encryption import is_encrypted_file

    state = is_encrypted_file(path)
    if state is None:
        raise CommandError(f"{path} is not a DuckDB database file", EXIT_FAILED)
    return state


def _current_key(config, command: str):
    from cdm_pipeline.lib.encryption import KEY_ENV_VAR, warehouse_encryption

    if not _encrypted(config.warehouse):
        hint = "use `cdm warehouse encrypt`" if command == "rotate-key" else "nothing to decrypt"
        raise CommandError(f"the warehouse {config.warehouse} is not encrypted: {hint}")
    current = warehouse_encryption(config)
    if current is None:
        raise CommandError(
            f"the warehouse {config.warehouse} is encrypted: set {KEY_ENV_VAR} (or a key file) to its key"
        )
    return current


def _new_key_given() -> bool:
    import os

    from cdm_pipeline.lib.encryption import NEW_KEY_ENV_VAR, NEW_KEY_FILE_ENV_VAR

    return bool(os.environ.get(NEW_KEY_ENV_VAR) or os.environ.get(NEW_KEY_FILE_ENV_VAR))


def _rewrite(config, source, target, action: str, detail: str) -> tuple[dict[str, int], tuple[int, int]]:
    """Rewrite the file from ``source``'s key to ``target``'s, read the result in full, audit it there."""
    from cdm_pipeline.lib.governance.audit_log import record_audit
    from cdm_pipeline.lib.warehouse import COMMAND_LOCK_WAIT, open_warehouse, rewrite_warehouse
    from cdm_pipeline.lib.warehouse_check import WarehouseCorrupt, verify_warehouse

    settings = config.duckdb.connection_settings()
    # A corrupt block would otherwise be copied faithfully into the new file (or stop the copy
    # half way with DuckDB's message): say so first.
    with open_warehouse(
        config.warehouse, settings=settings, read_only=True, lock_wait=COMMAND_LOCK_WAIT, encryption=source
    ) as conn:
        try:
            verify_warehouse(conn)
        except WarehouseCorrupt as exc:
            raise CommandError(f"{exc}: not rewritten; restore a backup (`cdm restore`)", EXIT_FAILED) from None
    sizes = rewrite_warehouse(
        config.warehouse, settings=settings, encryption=source, target_encryption=target, lock_wait=COMMAND_LOCK_WAIT
    )
    with open_warehouse(config.warehouse, settings=settings, lock_wait=COMMAND_LOCK_WAIT, encryption=target) as conn:
        rows = verify_warehouse(conn)
        record_audit(conn, action, None, sum(rows.values()), f"{detail}; {len(rows)} tables verified")
    return rows, sizes


def _reseal_access_documents(config, current, target) -> int:
    """Access documents sealed under the old key, re-sealed under the new one (else nobody could open them)."""
    from cdm_pipeline.lib.encryption import EncryptionError
    from cdm_pipeline.lib.sealed_files import SUFFIX, reseal

    folder = config.privacy.access_dir
    if not folder.exists():
        return 0
    resealed = 0
    for path in sorted(folder.glob("*" + SUFFIX)):
        try:
            reseal(path, current, target)
        except EncryptionError as exc:
            print(f"warning: {exc}; left as it is")
            continue
        resealed += 1
    return resealed


def _audit_quietly(conn, action: str, rows: int, detail: str) -> None:
    """An audit row in a file just found damaged: written if it can be, never instead of the report."""
    import duckdb

    from cdm_pipeline.lib.governance.audit_log import record_audit

    try:
        record_audit(conn, action, None, rows, detail)
    except duckdb.Error:
        pass


def _sizes(sizes: tuple[int, int]) -> str:
    before, after = sizes
    return f"{before / 1e6:,.1f} MB -> {after / 1e6:,.1f} MB"
