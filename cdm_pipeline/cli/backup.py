"""``cdm backup`` and ``cdm restore SNAPSHOT``: snapshots that never bring an erased person back.

The work is in ``lib/privacy/backups.py``; here the one-line refusals and what the person reads
(paths, times, sizes and counts only).
"""

from __future__ import annotations

import os
from pathlib import Path

from cdm_pipeline.cli.exit_codes import EXIT_FAILED, EXIT_OK, CommandError


def _privacy_key_if_set() -> bytes | None:
    """The privacy key when the environment has one (a backup needs none; a restore may)."""
    from cdm_pipeline.lib.personal_data.keyed_hash import KEY_ENV_VAR, privacy_key

    return privacy_key() if os.environ.get(KEY_ENV_VAR) else None


def backup_command(config_path: Path | None, list_only: bool) -> int:
    from cdm_pipeline.cli.config_file import resolve_config
    from cdm_pipeline.cli.warehouse_access import command_warehouse
    from cdm_pipeline.lib.encryption import warehouse_encryption
    from cdm_pipeline.lib.privacy.backups import BackupError, list_snapshots, write_snapshot
    from cdm_pipeline.lib.warehouse_check import WarehouseCorrupt
    from cdm_pipeline.runner import use_dagster_home

    config = resolve_config(config_path)
    if list_only:
        snapshots = list_snapshots(config.backups.dir)
        print(f"{len(snapshots)} snapshot(s) in {config.backups.dir} (newest first; keep {config.backups.keep})")
        for s in snapshots:
            state = "complete" if s.verified else "INCOMPLETE"
            when = f"{s.created_at:%Y-%m-%d %H:%M:%S} UTC"
            print(f"  {s.path.name}  {when}  {s.size / 1e6:,.1f} MB  {s.files} files  {state}")
        return EXIT_OK
    key = _privacy_key_if_set()
    home = use_dagster_home(config)
    # Opened for writing: the lock keeps every run out while the copy is taken.
    with command_warehouse(config) as conn:
        try:
            snapshot = write_snapshot(
                conn, config, home, privacy_key=key, encryption=warehouse_encryption(config)
            )
        except (BackupError, OSError, WarehouseCorrupt) as exc:
            raise CommandError(f"backup failed: {exc}", EXIT_FAILED) from None
    print(
        f"backup {snapshot.path.name}: {snapshot.files} files, {snapshot.size / 1e6:,.1f} MB, checksums verified"
        f" -> {snapshot.path}"
    )
    return EXIT_OK


def restore_command(config_path: Path | None, name: str) -> int:
    from cdm_pipeline.cli.config_file import resolve_config
    from cdm_pipeline.lib.privacy.backups import BackupError, resolve_snapshot, restore_snapshot
    from cdm_pipeline.runner import use_dagster_home

    config = resolve_config(config_path)
    try:
        snapshot = resolve_snapshot(config, name)
        result = restore_snapshot(config, snapshot, _privacy_key_if_set(), use_dagster_home(config))
    except BackupError as exc:
        raise CommandError(f"not restored: {exc}") from None
    print(
        f"restored {snapshot.name} -> {config.warehouse}: suppression ledger re-applied"
        f" ({result.suppression_entries_added} entries re-added, {result.people_erased} people erased again,"
        f" {result.rows_deleted:,} rows deleted); model {'restored' if result.model_restored else 'kept'},"
        f" run state {'restored' if result.run_state_restored else 'kept'}"
    )
    return EXIT_OK
