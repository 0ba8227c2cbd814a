"""The identity graph's nodes: every contact-like record the sources hold, one row each.

A node is a staged contact record (CRM contacts, email subscribers, any ``contacts`` source) in
its latest landed version, or a web identity: a browser (client id) seen with a login or a typed
email, and a login (user id). Web identities carry no names, so they join people through
deterministic edges only (``deterministic.py``); contact records also go to the Splink model.

Nodes are rebuilt from staging every run (staging keeps every partition), so a record updated on
a later day is matched on its newest values, and a backfill of old days changes nothing here.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from cdm_pipeline.lib.catalog import GRAPH_NODES, IDENTITY_WORK, WORK_RECORDS, staging_table
from cdm_pipeline.lib.staging.links import CLIENT_PREFIX, USER_PREFIX
from cdm_pipeline.lib.warehouse import quote_ident, table_exists

# The work area's tables are named catalog.schema.table: while Splink works, the connection's
# default catalog is the work area itself, where "identity_work"."records" would not resolve.
WORK = f"{quote_ident(IDENTITY_WORK)}.main"
RECORDS = f"{WORK}.{quote_ident(WORK_RECORDS.name)}"
# Where Splink's tables went before they moved into the work area (dropped if still there).
_OLD_SPLINK_SCHEMA = "identity_splink"

# Which staged version of a contact record speaks for it: the newest landed.
NEWEST_VERSION_ORDER = "_partition_date DESC, updated_at DESC NULLS LAST, _source_file DESC, _source_row DESC"

# The columns of a node, in order (the stored graph keeps them too: incremental.py).
RECORD_COLUMNS = (
    "record_id", "source_name", "source_system", "source_record_id", "identifier_type",
    "first_name", "last_name", "email", "phone", "birth_date", "birth_date_text",
    "address_line1", "address_line2", "city", "postcode", "region", "country", "company",
    "email_opt_in", "do_not_sell", "created_at", "updated_at", "linked_id", "first_seen", "last_seen",
)
# Every staged contact record with a hash of all its staged rows: a record whose hash is what the
# stored graph says is rebuilt from the graph, not from staging (an incremental night).
STAGED = f"{WORK}.staged"
# The contact records rebuilt from staging on an incremental night: new, or their rows changed.
CANDIDATES = f"{WORK}.candidates"

_RECORDS_SQL = """
CREATE OR REPLACE TABLE {RECORDS} AS
WITH latest AS (
    -- The newest landed version of each record speaks for it. Chosen on the keys alone and
    -- fetched by row id: windows over the full-width rows took twice as long.
    SELECT rowid AS version_row,
        min(_partition_date) OVER record AS first_seen,
        max(_partition_date) OVER record AS last_seen
    FROM {contacts} WHERE {only}
    WINDOW record AS (PARTITION BY source_name, source_record_id)
    QUALIFY row_number() OVER (
        PARTITION BY source_name, source_record_id
        ORDER BY {newest}
    ) = 1
), contact_versions AS (
    SELECT c.*, l.first_seen, l.last_seen
    FROM {contacts} c JOIN latest l ON c.rowid = l.version_row
), contacts AS (
    SELECT source_name, source_system, source_record_id, 'record' AS identifier_type,
        first_name, last_name,
        -- A value the standardiser rejected is kept in staging, but is no identifier.
        CASE WHEN NOT list_contains(quality_flags, 'invalid_email') THEN email END AS email,
        CASE WHEN NOT list_contains(quality_flags, 'invalid_phone') THEN phone END AS phone,
        birth_date,
        -- Digits of the date as the source wrote it when it would not parse (a day of 55 is
        -- still evidence), else of the parsed date: compared by edit distance.
        CASE WHEN birth_date IS NOT NULL THEN strftime(birth_date, '%Y%m%d')
             ELSE nullif(regexp_replace(birth_date_text, '[^0-9]', '', 'g'), '') END AS birth_date_text,
        address_line1, address_line2, city, postcode, region, country, company,
        email_opt_in, do_not_sell, created_at, updated_at, linked_id, first_seen, last_seen
    FROM contact_versions
), web_events AS (
    SELECT *, email IS NOT NULL AND NOT list_contains(quality_flags, 'invalid_email') AS web_email_valid
    FROM {web_events}
), web_clients AS (
    SELECT source_name, any_value(source_system) AS source_system,
        $client_prefix || client_id AS source_record_id, 'client_id' AS identifier_type,
        -- The latest address typed on this browser; every one typed is an edge (deterministic.py).
        arg_max(email, occurred_at) FILTER (WHERE web_email_valid) AS email,
        min(occurred_at) AS created_at, max(occurred_at) AS updated_at,
        min(_partition_date) AS first_seen, max(_partition_date) AS last_seen
    FROM web_events
    WHERE client_id IS NOT NULL
    GROUP BY source_name, client_id
    HAVING count(user_id) > 0 OR count(*) FILTER (WHERE web_email_valid) > 0
), web_users AS (
    SELECT source_name, any_value(source_system) AS source_system,
        $user_prefix || user_id AS source_record_id, 'user_id' AS identifier_type,
        min(occurred_at) AS created_at, max(occurred_at) AS updated_at,
        min(_partition_date) AS first_seen, max(_partition_date) AS last_seen
    FROM web_events
    WHERE user_id IS NOT NULL
    GROUP BY source_name, user_id
), nodes AS MATERIALIZED (
    SELECT * FROM contacts
    UNION ALL BY NAME SELECT * FROM web_clients
    UNION ALL BY NAME SELECT * FROM web_users
), numbered AS (
    -- A record keeps the id it had in the last resolution (the stored graph), so the graph
    -- an incremental night updates and the one a full re-link builds agree; new records are
    -- numbered after the largest id, in key order. Numbered on the keys alone: sorting the
    -- full-width rows costs three times as much.
    SELECT n.source_name, n.source_record_id,
        coalesce(g.record_id, $max_id + row_number() OVER (
            PARTITION BY g.record_id IS NULL ORDER BY n.source_name, n.source_record_id))::BIGINT AS record_id
    FROM nodes n LEFT JOIN ({previous_ids}) g USING (source_name, source_record_id)
)
SELECT {columns}
FROM nodes JOIN numbered USING (source_name, source_record_id)
"""


@dataclass(frozen=True)
class RecordCounts:
    contacts: int
    web_clients: int
    web_users: int

    @property
    def total(self) -> int:
        return self.contacts + self.web_clients + self.web_users


def close_work_area(conn: duckdb.DuckDBPyConnection) -> None:
    """Drop the stage's work area, and the persistent work schemas of earlier versions."""
    (database,) = conn.execute("SELECT current_database()").fetchone()
    if database != IDENTITY_WORK:
        for schema in (IDENTITY_WORK, _OLD_SPLINK_SCHEMA):
            conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(database)}.{quote_ident(schema)} CASCADE")
    attached = conn.execute(
        "SELECT count(*) FROM duckdb_databases() WHERE database_name = ?", [IDENTITY_WORK]
    ).fetchone()[0]
    if attached:
        conn.execute(f"DETACH {quote_ident(IDENTITY_WORK)}")


def open_work_area(conn: duckdb.DuckDBPyConnection) -> None:
    """Give the connection an empty ``identity_work``: an in-memory database attached to it.

    The stage's intermediate tables (records, identifiers, Splink's input and work tables,
    scored pairs, clusters) hold personal data and are rebuilt every run, so they never go to
    the warehouse file: written there they cost 4x a temporary table (1.5 s against 0.37 s for
    1.86 M records, benchmarks/RESULTS.md) and left a copy of every contact on disk. DuckDB
    spills them to the warehouse's temporary folder if memory runs short, and they vanish with
    the connection. A warehouse from before keeps a persistent ``identity_work`` schema: it is
    dropped here, or its name would shadow the attached database.
    """
    close_work_area(conn)
    conn.execute(f"ATTACH ':memory:' AS {quote_ident(IDENTITY_WORK)}")


def build_identity_records(conn: duckdb.DuckDBPyConnection, *, reuse_graph: bool = False) -> RecordCounts:
    """Replace ``identity_work.records`` with every node of this run's identity graph.

    ``reuse_graph`` (an incremental night): contact records whose staged rows hash as the stored
    graph says are taken from it; only new and changed ones are rebuilt from staging (the newest
    version window over every staged row took 12 s at 1,000,000 people; the hash, 0.4 s). Web
    identities are rebuilt every time: their aggregates are cheap.
    """
    open_work_area(conn)
    contacts, web_events = staging_table("contacts"), staging_table("web_events")
    for table in (contacts, web_events):
        if not table_exists(conn, table):
            raise RuntimeError(f"{table.full_name} does not exist: materialise staging first")
    conn.execute(
        f"CREATE OR REPLACE TABLE {STAGED} AS SELECT source_name, source_record_id,"
        f" bit_xor(hash(c)) AS staged_fingerprint FROM {contacts} c GROUP BY ALL"
    )
    previous = "SELECT NULL::BIGINT AS record_id, NULL AS source_name, NULL AS source_record_id LIMIT 0"
    max_id = 0
    stored = table_exists(conn, GRAPH_NODES)
    if stored:
        previous = f"SELECT record_id, source_name, source_record_id FROM {GRAPH_NODES}"
        (max_id,) = conn.execute(f"SELECT coalesce(max(record_id), 0) FROM {GRAPH_NODES}").fetchone()
    only = "true"
    if reuse_graph and stored:
        conn.execute(
            f"""CREATE OR REPLACE TABLE {CANDIDATES} AS
            SELECT s.source_name, s.source_record_id FROM {STAGED} s
            LEFT JOIN {GRAPH_NODES} g USING (source_name, source_record_id)
            WHERE g.staged_fingerprint IS DISTINCT FROM s.staged_fingerprint"""
        )
        only = f"(source_name, source_record_id) IN (SELECT (source_name, source_record_id) FROM {CANDIDATES})"
    sql = _RECORDS_SQL.format(
        RECORDS=RECORDS, contacts=contacts, web_events=web_events, newest=NEWEST_VERSION_ORDER,
        previous_ids=previous, only=only, columns=", ".join(RECORD_COLUMNS),
    )
    conn.execute(sql, {"client_prefix": CLIENT_PREFIX, "user_prefix": USER_PREFIX, "max_id": max_id})
    if only != "true":
        conn.execute(
            f"""INSERT INTO {RECORDS} SELECT {', '.join(RECORD_COLUMNS)} FROM {GRAPH_NODES}
            WHERE identifier_type = 'record'
              AND (source_name, source_record_id) IN (SELECT (source_name, source_record_id) FROM {STAGED})
              AND (source_name, source_record_id) NOT IN (SELECT (source_name, source_record_id) FROM {CANDIDATES})"""
        )
    counts = dict(
        conn.execute(f"SELECT identifier_type, count(*) FROM {RECORDS} GROUP BY ALL").fetchall()
    )
    return RecordCounts(
        contacts=counts.get("record", 0),
        web_clients=counts.get("client_id", 0),
        web_users=counts.get("user_id", 0),
    )
