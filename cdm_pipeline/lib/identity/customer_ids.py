"""Stable customer ids across nightly identity-resolution runs.

Clustering is re-run from scratch every night, so its ``cluster_id`` labels mean nothing from one
run to the next. Marts, exports and people downstream need an id that stays put while the person
stays the same, and whose changes (merges, splits, erasures) are explained. This module carries
ids forward by comparing this run's clusters with the previous run's assignment:

* every previously active id *claims* the new cluster holding most of its records (ties: the
  cluster whose smallest ``(source_name, source_record_id)`` member sorts first);
* when several ids claim one cluster, the oldest (lowest ``seq``) survives and the others are
  marked ``merged`` into it;
* unclaimed clusters get new ids: ``split`` when they hold records of earlier ids (related to the
  id contributing most records, ties by oldest ``seq``), ``new`` otherwise;
* active ids with none of their records left are ``retired``.

Ids that are merged or retired are never active again, so they can never claim a cluster: records
that later separate get a fresh id. New ids are numbered in the order of their cluster's smallest
member, so identical inputs give identical ids in any warehouse.

All work is set-based DuckDB SQL over temporary tables. The function neither begins nor commits a
transaction: the caller wraps the whole identity stage in one.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime

import duckdb

from cdm_pipeline.lib.catalog import ID_ASSIGNMENTS, ID_CHANGES, ID_REGISTRY, ensure

logger = logging.getLogger(__name__)

# Intermediates of one call; temp tables are per connection and transactional, so a caller's
# rollback removes them too.
_MEMBERS = "_cid_members"  # this run's records with their cluster's ordinal
_CLUSTERS = "_cid_clusters"  # one row per cluster: ordinal and size
_PREVIOUS = "_cid_previous"  # previous assignment, restricted to ids still active
_OVERLAP = "_cid_overlap"  # records of each previous id per new cluster
_CLAIMS = "_cid_claims"  # the one cluster each previous id claims
_RESULT = "_cid_result"  # the customer id of every cluster and how it came about
_MERGED = "_cid_merged"
_RETIRED = "_cid_retired"
_TEMPS = (_MEMBERS, _CLUSTERS, _PREVIOUS, _OVERLAP, _CLAIMS, _RESULT, _MERGED, _RETIRED)


@dataclass(frozen=True)
class IdChanges:
    """What one run did to the customer ids (counts only: no record values)."""

    new: int
    merged: int
    split: int
    retired: int
    unchanged: int
    customers: int  # active ids after the run


def ensure_customer_id_tables(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the ``identity`` schema and the three customer-id tables if missing."""
    for table in (ID_REGISTRY, ID_ASSIGNMENTS, ID_CHANGES):
        ensure(conn, table)


def assign_stable_customer_ids(
    conn: duckdb.DuckDBPyConnection, clusters: str, run_id: str, resolved_at: datetime,
    scope_customers: str | None = None,
) -> IdChanges:
    """Give every cluster of this run a customer id carried over from the previous run.

    Updates ``identity.customer_id_registry`` (every id ever issued), replaces
    ``identity.customer_id_assignments`` and appends to ``identity.customer_id_changes``. It never
    begins or commits a transaction: wrap it in the caller's, since in auto-commit mode a failure
    part-way leaves the three tables out of step.

    Args:
        conn: Warehouse connection.
        clusters: Already-quoted, trusted table or view name with ``source_name``,
            ``source_record_id`` and ``cluster_id``, one row per record of this run.
        run_id: Identifier of this run, stored with issued ids and change rows.
        resolved_at: When this run resolved identities; stored on status changes and change rows
            (give it a time zone: a naive value is read in the session's time zone).
        scope_customers: For an incremental night (incremental.py): a query of the previous ids
            whose records ``clusters`` covers, all of them. Only those ids claim, merge, split or
            retire (and ids left with no record at all retire); every other assignment stays.

    Returns:
        Counts of new, merged, split, retired and unchanged ids, and active ids after the run.

    Raises:
        ValueError: ``clusters`` has a record twice or a NULL key or cluster id.
    """
    ensure_customer_id_tables(conn)
    try:
        _check_clusters(conn, clusters)
        _match_previous(conn, clusters, scope_customers)
        _decide(conn, scope_customers)
        _apply(conn, run_id, resolved_at, clusters, scope_customers)
        changes = _count(conn)
    finally:
        _drop_temps(conn)
    logger.info(
        "customer ids for run %s: %d customers (%d new, %d split, %d merged, %d retired, "
        "%d unchanged)", run_id, changes.customers, changes.new, changes.split, changes.merged,
        changes.retired, changes.unchanged,
    )
    return changes


def _check_clusters(conn: duckdb.DuckDBPyConnection, clusters: str) -> None:
    # A record in two clusters would get two ids; better to stop than to pick one silently.
    total, distinct, nulls = conn.execute(f"""
        SELECT count(*),
               count(DISTINCT (source_name, source_record_id)),
               count(*) FILTER (source_name IS NULL OR source_record_id IS NULL
                                OR cluster_id IS NULL)
        FROM {clusters}""").fetchone()
    if nulls:
        raise ValueError(f"clusters has {nulls} rows with a NULL key or cluster_id")
    if total != distinct:
        raise ValueError(
            f"clusters has {total - distinct} duplicate (source_name, source_record_id) rows"
        )


def _match_previous(conn: duckdb.DuckDBPyConnection, clusters: str, scope: str | None) -> None:
    """Number the clusters and count each previous id's records in each of them."""
    # The cluster ordinal ("cord") replaces the arbitrary cluster_id label: clusters ordered by
    # their smallest member, which is what every tie-break and new-id order rests on.
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE {_CLUSTERS} AS
        SELECT cluster_id, size, row_number() OVER (ORDER BY source_name, source_record_id) AS cord
        FROM (
            SELECT cluster_id, source_name, source_record_id,
                   count(*) OVER (PARTITION BY cluster_id) AS size,
                   row_number() OVER (PARTITION BY cluster_id
                                      ORDER BY source_name, source_record_id) AS member_rank
            FROM {clusters}
        )
        WHERE member_rank = 1""")
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE {_MEMBERS} AS
        SELECT m.source_name, m.source_record_id, c.cord
        FROM {clusters} AS m JOIN {_CLUSTERS} AS c USING (cluster_id)""")
    # Only active ids may claim: a merged or retired id must never come back into use.
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE {_PREVIOUS} AS
        SELECT a.source_name, a.source_record_id, a.customer_id, r.seq
        FROM {ID_ASSIGNMENTS} AS a JOIN {ID_REGISTRY} AS r USING (customer_id)
        WHERE r.status = 'active'{f" AND customer_id IN ({scope})" if scope else ""}""")
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE {_OVERLAP} AS
        SELECT p.customer_id, p.seq, m.cord, count(*) AS n
        FROM {_MEMBERS} AS m JOIN {_PREVIOUS} AS p USING (source_name, source_record_id)
        GROUP BY p.customer_id, p.seq, m.cord""")


def _decide(conn: duckdb.DuckDBPyConnection, scope: str | None) -> None:
    """Work out each cluster's id, the merged ids and the retired ids."""
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE {_CLAIMS} AS
        SELECT customer_id, seq, cord, n
        FROM {_OVERLAP}
        QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY n DESC, cord) = 1""")
    # New ids continue the registry's sequence in cluster order, so they are reproducible.
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE {_RESULT} AS
        WITH survivors AS (
            SELECT cord, arg_min(customer_id, seq) AS customer_id
            FROM {_CLAIMS} GROUP BY cord
        ),
        unclaimed AS (
            SELECT cord FROM {_CLUSTERS} ANTI JOIN survivors USING (cord)
        ),
        split_from AS (
            SELECT cord, customer_id AS related
            FROM {_OVERLAP} SEMI JOIN unclaimed USING (cord)
            QUALIFY row_number() OVER (PARTITION BY cord ORDER BY n DESC, seq) = 1
        ),
        issued AS (
            SELECT u.cord, f.related,
                   (SELECT coalesce(max(seq), 0) FROM {ID_REGISTRY})
                       + row_number() OVER (ORDER BY u.cord) AS seq
            FROM unclaimed AS u LEFT JOIN split_from AS f USING (cord)
        )
        SELECT c.cord, c.size,
               coalesce(s.customer_id, printf('CUST-%010d', i.seq)) AS customer_id,
               i.seq AS new_seq,
               CASE WHEN s.customer_id IS NOT NULL THEN 'kept'
                    WHEN i.related IS NULL THEN 'new'
                    ELSE 'split' END AS outcome,
               i.related
        FROM {_CLUSTERS} AS c
        LEFT JOIN survivors AS s USING (cord)
        LEFT JOIN issued AS i USING (cord)""")
    # records = the merged id's records that now sit with the survivor.
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE {_MERGED} AS
        SELECT cl.customer_id, r.customer_id AS merged_into, cl.n AS records
        FROM {_CLAIMS} AS cl JOIN {_RESULT} AS r USING (cord)
        WHERE r.outcome = 'kept' AND cl.customer_id <> r.customer_id""")
    # Computed before new ids are registered: they are active but, of course, had no records.
    # Scoped: only the scope's ids, and ids left without any record (an erasure's), can retire.
    scoped = (
        f" AND (customer_id IN ({scope}) OR customer_id NOT IN (SELECT customer_id FROM {ID_ASSIGNMENTS}))"
        if scope else ""
    )
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE {_RETIRED} AS
        SELECT customer_id FROM {ID_REGISTRY}
        WHERE status = 'active'
          AND customer_id NOT IN (SELECT customer_id FROM {_OVERLAP}){scoped}""")


def _apply(
    conn: duckdb.DuckDBPyConnection, run_id: str, resolved_at: datetime, clusters: str, scope: str | None
) -> None:
    """Write the decisions: change rows, registry statuses, new ids, the new assignment."""
    conn.execute(f"""
        INSERT INTO {ID_CHANGES}
            (run_id, changed_at, change, customer_id, related_customer_id, records)
        SELECT $run_id, $at, change, customer_id, related, records
        FROM (
            SELECT outcome AS change, customer_id, related, size AS records
            FROM {_RESULT} WHERE outcome IN ('new', 'split')
            UNION ALL
            SELECT 'merged', customer_id, merged_into, records FROM {_MERGED}
            UNION ALL
            SELECT 'retired', customer_id, NULL, 0 FROM {_RETIRED}
        )
        ORDER BY change, customer_id""", {"run_id": run_id, "at": resolved_at})
    conn.execute(f"""
        UPDATE {ID_REGISTRY} AS r
        SET status = 'merged', merged_into = m.merged_into, status_changed_at = $at
        FROM {_MERGED} AS m WHERE r.customer_id = m.customer_id""", {"at": resolved_at})
    conn.execute(f"""
        UPDATE {ID_REGISTRY} AS r
        SET status = 'retired', status_changed_at = $at
        FROM {_RETIRED} AS t WHERE r.customer_id = t.customer_id""", {"at": resolved_at})
    conn.execute(f"""
        UPDATE {ID_REGISTRY} AS r SET last_run_id = $run_id
        FROM {_RESULT} AS k WHERE k.outcome = 'kept' AND r.customer_id = k.customer_id""",
        {"run_id": run_id})
    conn.execute(f"""
        INSERT INTO {ID_REGISTRY}
            (customer_id, seq, status, issued_run_id, issued_at, merged_into, status_changed_at,
             last_run_id)
        SELECT customer_id, new_seq, 'active', $run_id, $at, NULL, $at, $run_id
        FROM {_RESULT} WHERE new_seq IS NOT NULL
        ORDER BY new_seq""", {"run_id": run_id, "at": resolved_at})
    if scope:
        # An incremental night rewrites the assignments of the records it clustered only.
        conn.execute(f"""
            DELETE FROM {ID_ASSIGNMENTS} WHERE customer_id IN ({scope})
               OR (source_name, source_record_id) IN (SELECT (source_name, source_record_id) FROM {clusters})""")
    else:
        # Replaced, not emptied: deleting a million rows makes DuckDB's commit take ten times
        # longer than building the table afresh (measured with duckdb 2.0).
        conn.execute(f"DROP TABLE {ID_ASSIGNMENTS}")
        ensure(conn, ID_ASSIGNMENTS)
    conn.execute(f"""
        INSERT INTO {ID_ASSIGNMENTS} (source_name, source_record_id, customer_id)
        SELECT m.source_name, m.source_record_id, r.customer_id
        FROM {_MEMBERS} AS m JOIN {_RESULT} AS r USING (cord)""")


def _count(conn: duckdb.DuckDBPyConnection) -> IdChanges:
    # Unchanged: the survivor's claimed cluster is exactly its previous records, no more, no less.
    row = conn.execute(f"""
        WITH previous_sizes AS (
            SELECT customer_id, count(*) AS n FROM {_PREVIOUS} GROUP BY customer_id
        )
        SELECT
            (SELECT count(*) FROM {_RESULT} WHERE outcome = 'new'),
            (SELECT count(*) FROM {_MERGED}),
            (SELECT count(*) FROM {_RESULT} WHERE outcome = 'split'),
            (SELECT count(*) FROM {_RETIRED}),
            (SELECT count(*)
             FROM {_RESULT} AS r
             JOIN {_CLAIMS} AS cl USING (customer_id, cord)
             JOIN previous_sizes AS p USING (customer_id)
             WHERE r.outcome = 'kept' AND cl.n = r.size AND p.n = r.size),
            (SELECT count(*) FROM {ID_REGISTRY} WHERE status = 'active')""").fetchone()
    return IdChanges(*row)


def _drop_temps(conn: duckdb.DuckDBPyConnection) -> None:
    # Best effort: after a failure inside the caller's transaction every statement fails until
    # rollback, and that rollback removes the temp tables anyway; the original error must win.
    for name in _TEMPS:
        with contextlib.suppress(duckdb.Error):
            conn.execute(f"DROP TABLE IF EXISTS {name}")
