"""Backups that restore without bringing erased people back (``cdm backup``, ``cdm restore``).

A snapshot is a folder ``<backups.dir>/<UTC time>/`` (0700, files 0600) holding:

* ``warehouse.duckdb``: a fresh copy of the warehouse (``COPY FROM DATABASE``), taken while the
  snapshot holds the warehouse's write lock, so no run writes during it;
* ``identity/``: the linkage model and the overrides file;
* ``suppression_ledger.jsonl``: the suppression ledger (``personal_data/suppression_ledger.py``);
* ``run_state/``: Dagster's run storage (``DAGSTER_HOME``), SQLite files copied with SQLite's
  online backup, so a run writing its event log meanwhile still gives a consistent copy;
* ``manifest.json``: size and SHA-256 of every file, the time, key fingerprints, the version.

It is written as ``.<name>.partial``, re-read against its manifest, and only then renamed to its
name; the oldest complete snapshots beyond ``backups.keep`` are then deleted.

Restoring an old warehouse would undo every erasure since. So a restore verifies every checksum,
copies the snapshot's warehouse beside the live one (``<warehouse>.restoring``), and *before* it
is swapped in re-applies the whole suppression ledger to it: missing entries go on its
suppression list, every person a suppressed hash still finds there is erased through the erasure
path (``erasure.erase_subject``), rows the extract would have dropped are deleted, identity and
the marts are rebuilt once, and the file is rewritten so the deleted bytes are gone. Only then
does it replace the live warehouse.

A snapshot itself keeps the people erased after it was taken, until retention (``backups.keep``)
deletes it: that is what a backup is. They can never come back from it through ``cdm restore``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import uuid
from pathlib import Path

import duckdb

from cdm_pipeline import __version__
from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.catalog import SUPPRESSION_LIST, XREF, ensure, quarantine_table, raw_table, rejects_table
from cdm_pipeline.lib.catalog import staging_table as staged
from cdm_pipeline.lib.encryption import Encryption, enable_crypto, warehouse_encryption
from cdm_pipeline.lib.file_modes import private_dir, private_file, private_write_text
from cdm_pipeline.lib.governance.audit_log import record_audit
from cdm_pipeline.lib.personal_data.keyed_hash import (
    KEY_ENV_VAR,
    PrivacyKeyMismatch,
    key_fingerprint,
    keyed_hash_params,
    keyed_hash_sql,
)
from cdm_pipeline.lib.personal_data.suppression import (
    check_privacy_key,
    reject_suppression_predicate,
    stored_key_fingerprint,
    suppression_predicate,
)
from cdm_pipeline.lib.personal_data.suppression_ledger import (
    LEDGER_NAME,
    LedgerEntry,
    append_ledger,
    ledger_path,
    read_ledger,
)
from cdm_pipeline.lib.privacy.erasure import compact_warehouse, erase_subject, rebuild_after_erasure
from cdm_pipeline.lib.privacy.subject import SubjectError, find_subject
from cdm_pipeline.lib.staging.columns import KINDS
from cdm_pipeline.lib.warehouse import (
    COMMAND_LOCK_WAIT,
    open_warehouse,
    quote_ident,
    quote_literal,
    replace_warehouse_file,
    safe_error_message,
    table_columns,
    table_exists,
)
from cdm_pipeline.lib.warehouse_check import verify_warehouse

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
WAREHOUSE_FILE = "warehouse.duckdb"
MODEL_FILE = "identity/model.json"
OVERRIDES_FILE = "identity/overrides.csv"
RUN_STATE = "run_state"
_COPY_ALIAS = "cdm_backup_copy"
_NAME = re.compile(r"\d{8}T\d{6}(\.\d+)?Z")
# Files of the run storage that are not state: its lock, and SQLite's side files (the online
# backup of each database already holds what they held).
_RUN_STATE_SKIPPED = (".cdm_storage.lock",)
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


class BackupError(RuntimeError):
    """A snapshot cannot be written, read or restored (a one-line message naming the file)."""


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A complete snapshot folder and what its manifest says."""

    path: Path
    created_at: dt.datetime
    size: int
    files: int
    verified: bool  # every file present with its manifest size (the full checksums: ``verify_snapshot``)


@dataclasses.dataclass
class RestoreResult:
    snapshot: Path
    suppression_entries_added: int = 0
    people_erased: int = 0
    rows_deleted: int = 0
    remaining_matches: int = 0
    model_restored: bool = False
    run_state_restored: bool = False


# --- writing a snapshot --------------------------------------------------------------------------


def write_snapshot(
    conn: duckdb.DuckDBPyConnection, config: CdmConfig, run_storage: Path | None, *, privacy_key: bytes | None,
    encryption: Encryption | None,
) -> Snapshot:
    """Write, verify and keep a snapshot; prune the oldest beyond ``backups.keep``.

    ``conn`` is the warehouse opened for writing: holding it keeps every run out while the copy
    is taken. ``run_storage`` is the Dagster home to copy (None: none). ``privacy_key``, when
    set, must be the warehouse's (its fingerprint goes in the manifest). With ``encryption`` (the
    warehouse's) the copy is encrypted under the same key.
    """
    folder = config.backups.dir
    private_dir(folder)
    now = dt.datetime.now(dt.timezone.utc)
    name = now.strftime("%Y%m%dT%H%M%S.%fZ")
    partial = folder / f".{name}.partial"
    private_dir(partial)
    try:
        fingerprint = check_privacy_key(conn, privacy_key) if privacy_key else stored_key_fingerprint(conn)
        # A damaged block is found now, not on the night the copy is needed: a backup of a
        # corrupt warehouse would push a good snapshot out of `backups.keep`.
        verify_warehouse(conn)
        _copy_database(conn, partial / WAREHOUSE_FILE, encryption)
        ledger = ledger_path(config.warehouse)
        for source, target in (
            (config.identity.model_path, MODEL_FILE), (config.identity.overrides_path, OVERRIDES_FILE),
            (ledger, LEDGER_NAME),
        ):
            if source.is_file():
                private_dir((partial / target).parent)
                shutil.copyfile(source, partial / target)
        if run_storage is not None and run_storage.is_dir():
            _copy_run_storage(run_storage, partial / RUN_STATE)
        files = {
            rel: {"size": (partial / rel).stat().st_size, "sha256": _sha256(partial / rel)}
            for rel in sorted(p.relative_to(partial).as_posix() for p in partial.rglob("*") if p.is_file())
        }
        for rel in files:
            private_file(partial / rel)
        manifest = {
            "created_at": now.isoformat(),
            "cdm_version": __version__,
            "warehouse": str(config.warehouse),
            # Which keys the copy needs: the privacy key's fingerprint (suppression hashes) and, when
            # the warehouse is encrypted, the encryption key's. Never a key.
            "key_fingerprints": {
                "privacy": fingerprint, "warehouse_encryption": encryption.fingerprint if encryption else None,
            },
            "suppression_ledger_entries": len(read_ledger(ledger)),
            "files": files,
        }
        private_write_text(partial / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        verify_snapshot(partial)
        final = folder / name
        partial.rename(final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    snapshot = _read_snapshot(final)
    pruned = prune_snapshots(folder, config.backups.keep)
    record_audit(
        conn, "backup", None, len(files),
        f"snapshot {final.name}: {len(files)} files, {snapshot.size:,} bytes, verified; {len(pruned)} older pruned",
    )
    return snapshot


def _copy_database(conn: duckdb.DuckDBPyConnection, target: Path, encryption: Encryption | None) -> None:
    """Copy the connection's database into a new file ``target``, encrypted like the warehouse."""
    (source,) = conn.execute("SELECT current_database()").fetchone()
    options = ""
    if encryption is not None:
        enable_crypto(conn, encryption)
        options = f" (ENCRYPTION_KEY {quote_literal(encryption.key)})"
    try:
        conn.execute(f"ATTACH {quote_literal(str(target))} AS {_COPY_ALIAS}{options}")
    except duckdb.Error as exc:
        raise BackupError(safe_error_message(exc)) from None  # DuckDB may quote the statement: no key
    try:
        conn.execute(f"COPY FROM DATABASE {quote_ident(source)} TO {_COPY_ALIAS}")
    finally:
        conn.execute(f"DETACH {_COPY_ALIAS}")  # checkpoints the copy: no WAL beside it
    private_file(target)


def _copy_run_storage(home: Path, target: Path) -> None:
    """Dagster's run storage: SQLite databases through SQLite's online backup, other files as they are."""
    for path in sorted(home.rglob("*")):
        rel = path.relative_to(home)
        if path.is_dir() or path.name in _RUN_STATE_SKIPPED or path.name.endswith(_SQLITE_SIDE_FILES):
            continue
        private_dir((target / rel).parent)
        if path.suffix == ".db":
            source = sqlite3.connect(path)
            copy = sqlite3.connect(target / rel)
            try:
                source.backup(copy)
            finally:
                copy.close()
                source.close()
        else:
            shutil.copyfile(path, target / rel)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- reading snapshots ---------------------------------------------------------------------------


def _manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        dt.datetime.fromisoformat(manifest["created_at"])
    except (OSError, ValueError, KeyError, TypeError):
        raise BackupError(f"{folder}: no readable {MANIFEST}; not a snapshot") from None
    for rel in files:
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise BackupError(f"{folder}: {MANIFEST} names a file outside the snapshot")
    return manifest


def verify_snapshot(folder: Path) -> dict:
    """Check every file against the manifest's size and SHA-256; returns the manifest.

    Raises:
        BackupError: a file missing, changed or corrupt (the first one is named).
    """
    manifest = _manifest(folder)
    for rel, expected in manifest["files"].items():
        path = folder / rel
        if not path.is_file():
            raise BackupError(f"snapshot {folder.name}: {rel} is missing")
        if path.stat().st_size != expected["size"] or _sha256(path) != expected["sha256"]:
            raise BackupError(f"snapshot {folder.name}: {rel} does not match its checksum (corrupt or changed)")
    return manifest


def _read_snapshot(folder: Path) -> Snapshot:
    manifest = _manifest(folder)
    files = manifest["files"]
    verified = all(
        (folder / rel).is_file() and (folder / rel).stat().st_size == f["size"] for rel, f in files.items()
    )
    return Snapshot(
        folder, dt.datetime.fromisoformat(manifest["created_at"]), sum(f["size"] for f in files.values()),
        len(files), verified,
    )


def list_snapshots(folder: Path) -> list[Snapshot]:
    """The complete snapshots under ``folder``, newest first (half-written ones are not listed)."""
    if not folder.is_dir():
        return []
    snapshots = []
    for path in folder.iterdir():
        if path.is_dir() and _NAME.fullmatch(path.name):
            try:
                snapshots.append(_read_snapshot(path))
            except BackupError:
                continue
    return sorted(snapshots, key=lambda s: s.path.name, reverse=True)


def prune_snapshots(folder: Path, keep: int) -> list[Path]:
    """Delete the complete snapshots beyond the newest ``keep``; returns the deleted folders."""
    pruned = [s.path for s in list_snapshots(folder)[keep:]]
    for path in pruned:
        shutil.rmtree(path)
    return pruned


def resolve_snapshot(config: CdmConfig, name: str | Path) -> Path:
    """A snapshot named by its folder name under ``backups.dir``, or by its path."""
    path = Path(name)
    candidates = [path] if path.is_absolute() or os.sep in str(name) else [config.backups.dir / path, path]
    for candidate in candidates:
        if (candidate / MANIFEST).is_file():
            return candidate.resolve()
    raise BackupError(f"no snapshot {name} (looked in {config.backups.dir}); `cdm backup --list` shows them")


# --- restoring -----------------------------------------------------------------------------------


def restore_snapshot(
    config: CdmConfig, snapshot: Path, privacy_key: bytes | None, run_storage: Path | None,
) -> RestoreResult:
    """Restore ``snapshot``: verified, the ledger re-applied, then swapped in atomically.

    Raises:
        BackupError: a checksum mismatch, or the privacy key needed and not given.
        PrivacyKeyMismatch: the key is not the one the ledger or the snapshot was written with.
        WarehouseLocked: a run or a session holds the warehouse.
    """
    manifest = verify_snapshot(snapshot)
    settings = config.duckdb.connection_settings()
    encryption = warehouse_encryption(config)
    recorded = manifest["key_fingerprints"].get("warehouse_encryption")
    if recorded != (encryption.fingerprint if encryption else None):
        state = f"encrypted (key fingerprint {recorded})" if recorded else "not encrypted"
        now = "is another" if encryption else "is none"
        raise BackupError(
            f"snapshot {snapshot.name} is {state} but the warehouse key configured now {now}:"
            " set CDM_WAREHOUSE_KEY (or the key file) to the snapshot's key"
        )
    live = config.warehouse
    if live.exists():  # refuse now, not after the work, when a run holds the warehouse
        with open_warehouse(live, settings=settings, lock_wait=COMMAND_LOCK_WAIT, encryption=encryption):
            pass
    ledger = ledger_path(live)
    current = read_ledger(ledger)
    known = {(e.kind, e.value_hash) for e in current}
    # The live ledger is the newer one; the snapshot's matters only if the live one was lost.
    lost = [e for e in read_ledger(snapshot / LEDGER_NAME) if (e.kind, e.value_hash) not in known]
    entries = current + lost
    if entries and privacy_key is None:
        raise BackupError("the suppression ledger has entries: restoring needs CDM_PRIVACY_KEY to re-apply them")
    if privacy_key is not None:
        fingerprint = key_fingerprint(privacy_key)
        recorded = {manifest["key_fingerprints"].get("privacy")} | {e.key_fingerprint for e in entries}
        if recorded - {None, fingerprint}:
            raise PrivacyKeyMismatch(
                f"{KEY_ENV_VAR} is not the key this snapshot's suppression list and ledger were written with"
                f" (key fingerprint {fingerprint}, recorded {sorted(recorded - {None, fingerprint})[0]}):"
                f" set the original {KEY_ENV_VAR}"
            )
        append_ledger(ledger, lost)
    result = RestoreResult(snapshot)
    fresh = live.with_name(live.name + ".restoring")
    model = config.identity.model_path
    fresh_model = model.with_name(model.name + ".restoring")
    for path in (fresh, Path(str(fresh) + ".wal"), fresh_model):
        path.unlink(missing_ok=True)
    try:
        shutil.copyfile(snapshot / WAREHOUSE_FILE, fresh)
        private_file(fresh)
        if (snapshot / MODEL_FILE).is_file():
            shutil.copyfile(snapshot / MODEL_FILE, fresh_model)
            private_file(fresh_model)
        # Identity is rebuilt with the snapshot's model, before anything is swapped in.
        restoring = config.model_copy(update={
            "identity": config.identity.model_copy(update={"model_path": fresh_model}),
        })
        with open_warehouse(fresh, settings=settings, encryption=encryption) as conn:
            if entries:
                reapply_suppressions(conn, restoring, entries, privacy_key, snapshot.name, result)
        if result.remaining_matches:
            raise BackupError(
                f"snapshot {snapshot.name}: {result.remaining_matches} suppressed identifiers are still in the"
                " restored copy after re-applying the ledger; not swapped in"
            )
        if result.rows_deleted:
            compact_warehouse(fresh, settings, encryption)  # the deleted rows' bytes leave the file
        # Under the live file's lock, so a run that waited for it opens the restored file.
        replace_warehouse_file(live, fresh)
    except BaseException:
        fresh_model.unlink(missing_ok=True)
        raise
    finally:
        for path in (fresh, Path(str(fresh) + ".wal")):
            path.unlink(missing_ok=True)
    if fresh_model.exists():
        os.replace(fresh_model, model)
        result.model_restored = True
    overrides = config.identity.overrides_path
    if not overrides.exists() and (snapshot / OVERRIDES_FILE).is_file():
        # Only a lost overrides file: a newer one holds governance decisions made since.
        overrides.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(snapshot / OVERRIDES_FILE, overrides)
    if run_storage is not None and (snapshot / RUN_STATE).is_dir():
        _restore_run_storage(snapshot / RUN_STATE, run_storage)
        result.run_state_restored = True
    with open_warehouse(live, settings=settings, encryption=encryption) as conn:
        record_audit(
            conn, "restore", None, result.rows_deleted,
            f"snapshot {snapshot.name}: {result.suppression_entries_added} suppression entries re-added,"
            f" {result.people_erased} people erased again, {result.rows_deleted} rows deleted,"
            f" {result.remaining_matches} suppressed identifiers left",
        )
    return result


def reapply_suppressions(
    conn: duckdb.DuckDBPyConnection, config: CdmConfig, entries: list[LedgerEntry], key: bytes,
    label: str, result: RestoreResult,
) -> None:
    """Put every ledger entry on the list and erase everyone the list still finds in the warehouse.

    People are found by the keyed hashes of the staged e-mail addresses and phones, and of the
    records' ``<source>:<id>``; each is erased through ``erase_subject`` (every layer, audience
    files, the audit log), then rows the extract would have dropped (``suppression_predicate``)
    and staged rows still matching are deleted, and identity and the marts are rebuilt once.
    """
    check_privacy_key(conn, key)
    ensure(conn, SUPPRESSION_LIST)
    (added,) = conn.execute(
        f"INSERT INTO {SUPPRESSION_LIST} (kind, value_hash, request_id, added_at)"
        " SELECT kind, value_hash, request_id, added_at::TIMESTAMPTZ FROM (SELECT unnest($kinds) AS kind,"
        " unnest($hashes) AS value_hash, unnest($requests) AS request_id, unnest($times) AS added_at) AS new"
        f" WHERE NOT EXISTS (SELECT 1 FROM {SUPPRESSION_LIST} s"
        "                   WHERE s.kind = new.kind AND s.value_hash = new.value_hash)",
        {
            "kinds": [e.kind for e in entries], "hashes": [e.value_hash for e in entries],
            "requests": [e.request_id for e in entries], "times": [e.added_at for e in entries],
        },
    ).fetchone()
    result.suppression_entries_added = int(added)
    found = _suppressed_people(conn, key)
    requests = {(e.kind, e.value_hash): e.request_id for e in entries}
    tried: set[tuple[str, str]] = set()
    for argument, value, kind, value_hash in found:
        if (argument, value) in tried:
            continue
        tried.add((argument, value))
        try:
            subject = find_subject(conn, config, **{argument: value})
        except SubjectError:
            continue  # a value staging kept as it came: its rows go in the sweep below
        if not subject.records:
            continue  # erased already, with someone found before
        # The audit row names the request being re-applied.
        request = f"restore-{label}:{requests.get((kind, value_hash)) or 'ledger'}"
        erased = erase_subject(conn, config, subject, request, key, rebuild=False)
        result.people_erased += 1
        result.rows_deleted += erased.total_rows
    result.rows_deleted += _sweep(conn, config, key)
    if result.people_erased or result.rows_deleted:
        rebuild_after_erasure(conn, config, f"restore-{label}-{uuid.uuid4().hex[:8]}", key)
    result.remaining_matches = len(_suppressed_people(conn, key))


# The keyed hash of a staged record's reference, as the list holds records (``<source>:<id>``).
_RECORD_HASH = keyed_hash_sql("source_name || ':' || source_record_id")


def _suppressed_people(conn: duckdb.DuckDBPyConnection, key: bytes) -> list[tuple[str, str, str, str]]:
    """``(argument, value, list kind, hash)`` for everyone the list still finds: the ``email`` or
    ``phone`` of a staged row whose address, number or record is listed, and the ``customer_id``
    of every identity record whose ``<source>:<id>`` is listed. ``argument`` is the
    ``find_subject`` argument the value is passed as.

    The values stay in this process's memory (they lead ``find_subject`` to the person).
    """
    params = keyed_hash_params(key)
    listed = f"(SELECT value_hash FROM {SUPPRESSION_LIST} WHERE kind = $kind)"
    found: list[tuple[str, str, str, str]] = []
    for kind in KINDS:
        table = staged(kind)
        if not table_exists(conn, table):
            continue
        columns = set(table_columns(conn, table))
        for column in ("email", "phone"):
            if column in columns:
                found += conn.execute(
                    f"SELECT DISTINCT $kind, v, $kind, h FROM (SELECT {column} AS v, {keyed_hash_sql(column)} AS h"
                    f" FROM {table} WHERE {column} IS NOT NULL) WHERE h IN {listed}",
                    {**params, "kind": column},
                ).fetchall()
    records = [(XREF, "customer_id")] if table_exists(conn, XREF) else []
    if table_exists(conn, staged("contacts")):
        # A staged record identity has not resolved: reached through its address or number.
        records += [(staged("contacts"), "email"), (staged("contacts"), "phone")]
    for table, column in records:
        found += conn.execute(
            f"SELECT DISTINCT $argument, {column}, $kind, h FROM (SELECT {column}, {_RECORD_HASH} AS h FROM {table})"
            f" WHERE h IN {listed} AND {column} IS NOT NULL",
            {**params, "argument": column, "kind": "record"},
        ).fetchall()
    return sorted(set(found))


def _sweep(conn: duckdb.DuckDBPyConnection, config: CdmConfig, key: bytes) -> int:
    """Delete what the list still matches once the people are erased: landed rows the extract
    would drop, unreadable lines naming a suppressed address, staged and quarantined rows."""
    deleted = 0
    for source in config.sources:
        raw = raw_table(source.name)
        if table_exists(conn, raw):
            condition, params = suppression_predicate(conn, config, source, key, columns=table_columns(conn, raw))
            deleted += _delete(conn, f"DELETE FROM {raw} WHERE {condition}", params)
        rejects = rejects_table(source.name)
        if table_exists(conn, rejects):
            condition, params = reject_suppression_predicate(conn, source, key)
            deleted += _delete(conn, f"DELETE FROM {rejects} WHERE {condition}", params)
    hashed = keyed_hash_params(key)
    for kind in KINDS:
        for table in (staged(kind), quarantine_table(kind)):
            if not table_exists(conn, table):
                continue
            columns = set(table_columns(conn, table))
            terms = [
                f"{keyed_hash_sql(column)} IN (SELECT value_hash FROM {SUPPRESSION_LIST} WHERE kind = '{column}')"
                for column in ("email", "phone") if column in columns
            ]
            if kind == "contacts":
                terms.append(f"{_RECORD_HASH} IN (SELECT value_hash FROM {SUPPRESSION_LIST} WHERE kind = 'record')")
            if terms:
                deleted += _delete(conn, f"DELETE FROM {table} WHERE coalesce({' OR '.join(terms)}, false)", hashed)
    return deleted


def _delete(conn: duckdb.DuckDBPyConnection, sql: str, params: dict) -> int:
    return int(conn.execute(sql, params).fetchall()[0][0])


def _restore_run_storage(copy: Path, home: Path) -> None:
    """Replace the Dagster home's contents with the snapshot's (the UI must not be running)."""
    staging = home.with_name(home.name + ".restoring")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(copy, staging)
    old = home.with_name(home.name + ".replaced")
    shutil.rmtree(old, ignore_errors=True)
    if home.exists():
        home.rename(old)
    staging.rename(home)
    shutil.rmtree(old, ignore_errors=True)
