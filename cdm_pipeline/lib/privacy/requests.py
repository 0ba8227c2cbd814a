"""Privacy requests from a file: the governance job's queue (``privacy.requests_path``).

Governance staff append lines to a CSV (``request_id,action,email,phone,customer_id``; action
``erase`` or ``access``, one identifier per line). Each night, or when the job is launched, every
request not yet in ``governance.privacy_requests`` is carried out: an erasure as ``cdm privacy
erase`` does, an access request writes ``<access_dir>/<request_id>.json``. The table records
what was done and the counts, never the identifier; a request id is carried out once.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.catalog import PRIVACY_REQUESTS, ensure
from cdm_pipeline.lib.identity.run_ids import queue_resolution_id
from cdm_pipeline.lib.personal_data.keyed_hash import privacy_key
from cdm_pipeline.lib.privacy.access import write_subject_document
from cdm_pipeline.lib.privacy.erasure import erase_subject, rebuild_after_erasure
from cdm_pipeline.lib.privacy.subject import SubjectError, find_subject

COLUMNS = ("request_id", "action", "email", "phone", "customer_id")
ACTIONS = ("erase", "access")
# Request ids name the access file: no path separators, nothing a shell would trip on.
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class RequestFileError(ValueError):
    """The requests file is malformed (the message names the line, never a value)."""


@dataclass(frozen=True)
class PrivacyRequest:
    line: int
    request_id: str
    action: str
    email: str | None
    phone: str | None
    customer_id: str | None


@dataclass(frozen=True)
class RequestOutcome:
    request_id: str
    action: str
    status: str  # done | not_found | invalid
    customers: int
    rows_affected: int


def read_requests(path: Path) -> list[PrivacyRequest]:
    """The requests in the file (none when it does not exist)."""
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("request_id", "action") if c not in (reader.fieldnames or [])]
        if missing:
            raise RequestFileError(f"{path.name}: header lacks {', '.join(missing)} (expected {','.join(COLUMNS)})")
        requests, seen = [], set()
        for line, row in enumerate(reader, start=2):
            request_id = (row.get("request_id") or "").strip()
            action = (row.get("action") or "").strip().lower()
            if not REQUEST_ID.fullmatch(request_id) or action not in ACTIONS:
                raise RequestFileError(
                    f"{path.name}: line {line}: needs a request_id (letters, digits, . _ -)"
                    f" and an action ({'/'.join(ACTIONS)})"
                )
            if request_id in seen:
                raise RequestFileError(f"{path.name}: line {line}: request_id {request_id!r} appears twice")
            seen.add(request_id)
            values = {c: (row.get(c) or "").strip() or None for c in ("email", "phone", "customer_id")}
            if sum(v is not None for v in values.values()) != 1:
                raise RequestFileError(f"{path.name}: line {line}: give exactly one of email, phone, customer_id")
            requests.append(PrivacyRequest(line, request_id, action, **values))
    return requests


def process_requests(
    conn: duckdb.DuckDBPyConnection, config: CdmConfig, key: bytes | None, run_id: str,
) -> list[RequestOutcome]:
    """Carry out every request of the file not yet processed; returns what each did.

    ``key`` is needed only when an erasure is pending (``privacy_key()`` raises otherwise).
    """
    ensure(conn, PRIVACY_REQUESTS)
    done = {r[0] for r in conn.execute(f"SELECT request_id FROM {PRIVACY_REQUESTS}").fetchall()}
    pending = [r for r in read_requests(config.privacy.requests_path) if r.request_id not in done]
    outcomes = []
    for request in pending:
        outcomes.append(_carry_out(conn, config, key, request, run_id))
        o = outcomes[-1]
        conn.execute(
            f"INSERT INTO {PRIVACY_REQUESTS} VALUES (?, ?, ?, ?, ?, ?)",
            [o.request_id, o.action, o.status, dt.datetime.now(dt.timezone.utc), o.customers, o.rows_affected],
        )
    # One re-resolution for the whole batch (it takes a minute at 640,000 people).
    if any(o.action == "erase" and o.status == "done" for o in outcomes):
        rebuild_after_erasure(conn, config, queue_resolution_id(run_id), key or privacy_key())
    return outcomes


def _carry_out(conn, config: CdmConfig, key: bytes | None, request: PrivacyRequest, run_id: str) -> RequestOutcome:
    try:
        subject = find_subject(conn, config, email=request.email, phone=request.phone, customer_id=request.customer_id)
    except SubjectError:
        return RequestOutcome(request.request_id, request.action, "invalid", 0, 0)
    if not subject.found:
        return RequestOutcome(request.request_id, request.action, "not_found", 0, 0)
    if request.action == "erase":
        if key is None:
            key = privacy_key()
        result = erase_subject(conn, config, subject, request.request_id, key, rebuild=False)
        return RequestOutcome(request.request_id, "erase", "done", result.customers, result.total_rows)
    counts = write_subject_document(
        conn, config, subject, config.privacy.access_dir / f"{request.request_id}.json", request.request_id
    )
    return RequestOutcome(request.request_id, "access", "done", len(subject.customer_ids), sum(counts.values()))
