"""Access requests: everything held on one person, from every layer, as one JSON document.

The subject is found as for erasure (``subject.py``), so the export shows exactly what an erasure
of the same request would remove: raw rows (the landed lines behind their staged rows), rejected
lines that carry their address or number, staging and quarantine rows, identity (record links,
golden record and where each value came from), the marts, and which audience files hold their
hashed identifiers. The document goes to a file the requester is given; nothing is logged.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from decimal import Decimal
from pathlib import Path

import duckdb

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.catalog import (
    GOLDEN,
    ID_CHANGES,
    MART_TABLES,
    PROVENANCE,
    XREF,
    quarantine_table,
    raw_table,
    rejects_table,
    staging_table,
)
from cdm_pipeline.lib.encryption import warehouse_encryption
from cdm_pipeline.lib.file_modes import create_private_dirs, private_dir, private_write_text
from cdm_pipeline.lib.governance.audit_log import record_audit
from cdm_pipeline.lib.privacy.subject import (
    REJECTS_MATCH_SQL,
    SUBJECT_LINEAGE,
    SUBJECT_RECORDS,
    DataSubject,
    audience_hashes,
    mark_subject_lineage,
    staging_match_sql,
)
from cdm_pipeline.lib.sealed_files import sealed_path, write_sealed
from cdm_pipeline.lib.staging.columns import KINDS
from cdm_pipeline.lib.warehouse import table_columns, table_exists


def subject_document(conn: duckdb.DuckDBPyConnection, config: CdmConfig, subject: DataSubject) -> dict:
    """Every row held on ``subject`` (``find_subject`` must have run on this connection)."""
    mark_subject_lineage(conn, config)
    document: dict = {
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "customer_ids": subject.customer_ids,
        "identifiers": {"emails": subject.emails, "phones": subject.phones},
        "raw": {}, "quarantine": {}, "staging": {}, "identity": {}, "marts": {},
    }
    for source in config.sources:
        if table_exists(conn, raw_table(source.name)):
            document["raw"][source.name] = _rows(
                conn,
                f"""SELECT r.* FROM {raw_table(source.name)} r JOIN {SUBJECT_LINEAGE} l
                ON l.source_name = $source AND l._source_file = r._source_file
                AND l._source_row = r._source_row AND l._partition_date = r._partition_date
                ORDER BY r._partition_date, r._source_file, r._source_row""",
                {"source": source.name},
            )
        rejects = rejects_table(source.name)
        if table_exists(conn, rejects):
            document["quarantine"][rejects.name] = _rows(
                conn,
                f"SELECT * FROM {rejects} WHERE {REJECTS_MATCH_SQL}",
            )
    for kind in KINDS:
        for table in (staging_table(kind), quarantine_table(kind)):
            if table_exists(conn, table):
                document[table.schema][kind] = _rows(
                    conn,
                    f"SELECT * FROM {table} t WHERE {staging_match_sql(config, kind)}"
                    " ORDER BY _partition_date, source_name, source_record_id",
                )
    ids = {"ids": subject.customer_ids}
    if table_exists(conn, XREF):
        document["identity"][XREF.name] = _rows(
            conn,
            f"""SELECT x.* FROM {XREF} x JOIN {SUBJECT_RECORDS} r
            USING (source_name, source_record_id) ORDER BY ALL""",
        )
        for table in (GOLDEN, PROVENANCE, ID_CHANGES):
            if table_exists(conn, table):
                document["identity"][table.name] = _rows(
                    conn, f"SELECT * FROM {table} WHERE list_contains($ids, customer_id) ORDER BY ALL", ids
                )
    for table in MART_TABLES:
        if table_exists(conn, table) and "customer_id" in table_columns(conn, table):
            document["marts"][table.name] = _rows(
                conn, f"SELECT * FROM {table} WHERE list_contains($ids, customer_id)", ids
            )
    document["audience_files"] = _audience_files(config.exports.dir, subject)
    return document


def write_subject_document(
    conn: duckdb.DuckDBPyConnection, config: CdmConfig, subject: DataSubject, out: Path, request_id: str,
) -> dict[str, int]:
    """Write the document to ``out`` (atomically) and audit it; returns rows per layer.

    With a warehouse key configured the document is sealed under it instead (``document_path``:
    ``<out>.enc``; ``cdm privacy decrypt`` gives governance the plain JSON for the person).
    """
    document = subject_document(conn, config, subject)
    encryption = warehouse_encryption(config)
    out = document_path(config, out)
    if out.parent.resolve() == config.privacy.access_dir.resolve():
        private_dir(out.parent)  # the request queue's folder: tightened if an older version made it 0755
    else:
        create_private_dirs(out.parent)  # a folder named on the command line: only what is created
    temporary = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        # Created 0600: the document is everything held on one person.
        text = json.dumps(document, indent=2, default=_json_value, ensure_ascii=False)
        if encryption is None:
            private_write_text(temporary, text)
        else:
            write_sealed(temporary, text.encode("utf-8"), encryption)
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    counts = {
        layer: sum(len(rows) for rows in document[layer].values())
        for layer in ("raw", "quarantine", "staging", "identity", "marts")
    }
    record_audit(
        conn, "privacy_access_export", request_id, sum(counts.values()),
        f"{len(subject.customer_ids)} customers; " + ", ".join(f"{k} {v}" for k, v in counts.items()),
    )
    return counts


def document_path(config: CdmConfig, out: Path) -> Path:
    """Where ``write_subject_document(..., out, ...)`` writes: ``out``, or ``<out>.enc`` under a warehouse key."""
    return out if warehouse_encryption(config) is None else sealed_path(out)


def _rows(conn: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> list[dict]:
    cursor = conn.execute(sql, params or {})
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def _audience_files(folder: Path, subject: DataSubject) -> list[str]:
    if not folder.exists():
        return []
    hashes = audience_hashes(subject)
    found = []
    for path in sorted(folder.rglob("*.csv")):
        text = path.read_text(encoding="utf-8")
        if any(h in text for h in hashes):
            found.append(path.relative_to(folder).as_posix())
    return found


def _json_value(value: object) -> object:
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return str(value)
