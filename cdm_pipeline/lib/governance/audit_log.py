"""``governance.audit_log``: one row per privacy action, identity override, export or look-up of
personal data.

Rows say who (the OS user), what happened, when, under which request and to how many rows; never a
personal value. The table is declared in the catalogue (``catalog.AUDIT_LOG``).
"""

from __future__ import annotations

import datetime as dt
import getpass
import os

import duckdb

from cdm_pipeline.lib.catalog import AUDIT_LOG, ensure


def ensure_audit_log(conn: duckdb.DuckDBPyConnection) -> None:
    """Create ``governance.audit_log`` when missing, or add the columns of later releases (``actor``).

    Every writer of an audit row calls this first.
    """
    ensure(conn, AUDIT_LOG)


def current_actor() -> str:
    """The OS user running this process, as an audit row names them.

    ``getpass.getuser()`` (the login name), else the numeric uid when no name can be found (a
    container without a passwd entry). Under ``sudo`` the invoking user is kept too
    (``cdm (sudo by alice)``): a shared service account alone would not say who ran the command.
    """
    try:
        user = getpass.getuser()
    except (OSError, KeyError, ImportError):
        user = f"uid {os.getuid()}"
    invoker = os.environ.get("SUDO_USER")
    if invoker and invoker != user:
        return f"{user} (sudo by {invoker})"
    return user


def record_audit(
    conn: duckdb.DuckDBPyConnection, action: str, request_id: str | None, rows_affected: int, detail: str
) -> None:
    """Append one audit row, now, by :func:`current_actor` (``detail``: counts, names and paths,
    never a personal value)."""
    ensure_audit_log(conn)
    conn.execute(
        f"INSERT INTO {AUDIT_LOG} (occurred_at, action, request_id, rows_affected, detail, actor)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [dt.datetime.now(dt.timezone.utc), action, request_id, rows_affected, detail, current_actor()],
    )
