"""Which records of a source belong to which contact: the record links the config declares.

A staged row names a record of another source in one of its columns, and every layer that
follows a person needs the same answer (identity's same-id edges, the marts' attribution of
orders and e-mails, a privacy request's rows, the suppression list's checks):

* a contacts source's ``linked_id`` holds a record id of the contacts source an
  ``identity.same_ids`` link names (an ESP's copy of the CRM id);
* an orders source's ``contact_id`` and an e-mail events source's ``subscriber_id`` hold record
  ids of its ``contacts_source``, else of every contacts source of the same system, the first
  holding an id preferred (``CdmConfig.linked_contacts_sources``);
* a web source's ``client_id`` and ``user_id`` are its own browser and login records, named
  ``client:<id>`` and ``user:<id>`` (so a client id and a user id that happen to be equal stay
  two records), and a ``same_ids`` link of its ``user_id`` names a contacts source's record too.

:func:`record_links` gives them as rows; :func:`register_record_links` puts them in a temporary
table of a connection, with the values bound, so SQL joins them instead of pasting config values
into its text.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import duckdb

from cdm_pipeline.config import CdmConfig

# Web identities become record ids "client:<id>" / "user:<id>" under the web source's name.
CLIENT_PREFIX = "client:"
USER_PREFIX = "user:"

# The temporary table of register_record_links (one per connection).
RECORD_LINKS = "_cdm_record_links"

# How a link is declared: an identity.same_ids entry, an activity source's contacts sources, or
# a web source's own browser and login records.
SAME_IDS, CONTACTS_SOURCE, WEB_IDENTITY = "same_ids", "contacts_source", "web_identity"

# The canonical columns of each staging kind that may hold a linked record's id.
LINK_COLUMNS = {
    "contacts": ("linked_id",), "orders": ("contact_id",), "email_events": ("subscriber_id",),
    "web_events": ("client_id", "user_id"),
}


class RecordLink(NamedTuple):
    """Rows of ``source_name`` whose ``id_column`` holds ``v`` are linked to the record
    ``target_prefix || v`` of ``target_source``; ``preference`` orders the targets of one column
    (0 first: the first target holding the id wins)."""

    source_name: str
    id_column: str
    target_source: str
    target_prefix: str
    preference: int
    declared_by: str


_COLUMNS = {
    "source_name": "VARCHAR", "id_column": "VARCHAR", "target_source": "VARCHAR",
    "target_prefix": "VARCHAR", "preference": "INTEGER", "declared_by": "VARCHAR",
}


def record_links(config: CdmConfig) -> Iterator[RecordLink]:
    """Every record link of the config, source by source in config order."""
    for source in config.sources:
        if source.kind == "web_events":
            yield RecordLink(source.name, "client_id", source.name, CLIENT_PREFIX, 0, WEB_IDENTITY)
            yield RecordLink(source.name, "user_id", source.name, USER_PREFIX, 0, WEB_IDENTITY)
        elif source.kind in ("orders", "email_events"):
            (column,) = LINK_COLUMNS[source.kind]
            for rank, target in enumerate(config.linked_contacts_sources(source)):
                yield RecordLink(source.name, column, target, "", rank, CONTACTS_SOURCE)
        next_rank = {"user_id": 1}  # a web source's login is its own record first
        for link in config.identity.same_ids:
            if link.source != source.name:
                continue
            rank = next_rank.get(link.column, 0)
            next_rank[link.column] = rank + 1
            yield RecordLink(source.name, link.column, link.equals, "", rank, SAME_IDS)


def register_record_links(conn: duckdb.DuckDBPyConnection, config: CdmConfig) -> None:
    """(Re)create this connection's temporary ``RECORD_LINKS`` table from the config."""
    body = ", ".join(f"{name} {sql_type}" for name, sql_type in _COLUMNS.items())
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {RECORD_LINKS} ({body})")
    rows = list(record_links(config))
    if rows:
        placeholders = ", ".join("?" for _ in _COLUMNS)
        conn.executemany(f"INSERT INTO {RECORD_LINKS} VALUES ({placeholders})", [list(row) for row in rows])
