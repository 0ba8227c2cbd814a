"""``marts.segment_membership_history``: one row per stay of a customer in a segment.

Each night compares the customers' current segments with the open stays: a stay that no longer
holds is closed (``exited_on`` = the as-of date), a new membership opens a stay (``entered_on``).
"Who became At Risk this week" is then ``WHERE segment = 'At Risk' AND entered_on > D - 7``.

Re-running a night is idempotent: stays opened on or after the as-of date are removed and stays
closed on or after it reopened before comparing again. A customer id merged into another hands
its stays to the surviving id (the earlier stay wins where both were in a segment), so history
follows the person across identity merges.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb

from cdm_pipeline.lib.catalog import ID_REGISTRY, MEMBERSHIP_HISTORY, SEGMENTS
from cdm_pipeline.lib.marts.inputs import build_table
from cdm_pipeline.lib.warehouse import table_exists

_SEGMENTS, _HISTORY = build_table(SEGMENTS), build_table(MEMBERSHIP_HISTORY)
_CURRENT = "_marts_current_memberships"

_CURRENT_SQL = f"""
CREATE OR REPLACE TEMP TABLE {_CURRENT} AS
SELECT customer_id, 'rfm' AS segment_type, rfm_segment AS segment FROM {_SEGMENTS} WHERE rfm_segment IS NOT NULL
UNION ALL SELECT customer_id, 'lifecycle', lifecycle_stage FROM {_SEGMENTS}
UNION ALL SELECT customer_id, 'engagement', engagement_tier FROM {_SEGMENTS}
UNION ALL SELECT customer_id, 'custom', unnest(custom_segments) FROM {_SEGMENTS}
"""

# Follow merges to the surviving id (a merged id can itself have been merged later).
_SURVIVORS_SQL = f"""
WITH RECURSIVE chain(customer_id, survivor, depth) AS (
    SELECT customer_id, merged_into, 1 FROM {ID_REGISTRY}
    WHERE status = 'merged' AND merged_into IS NOT NULL
    UNION ALL
    SELECT c.customer_id, r.merged_into, c.depth + 1
    FROM chain c JOIN {ID_REGISTRY} r ON r.customer_id = c.survivor
    WHERE r.status = 'merged' AND r.merged_into IS NOT NULL AND c.depth < 50
)
SELECT customer_id, arg_max(survivor, depth) AS survivor FROM chain GROUP BY customer_id
"""


@dataclass(frozen=True)
class MembershipChanges:
    entered: int
    exited: int
    open_stays: int
    by_segment_entered: dict[str, int]


def update_membership_history(conn: duckdb.DuckDBPyConnection, as_of: dt.date) -> MembershipChanges:
    """Bring a copy of the published history up to ``as_of`` from tonight's customer segments."""
    # The history is carried forward: tonight's copy starts from the published one.
    if table_exists(conn, MEMBERSHIP_HISTORY):
        conn.execute(f"CREATE OR REPLACE TABLE {_HISTORY} AS SELECT * FROM {MEMBERSHIP_HISTORY}")
    else:
        conn.execute(
            f"""CREATE OR REPLACE TABLE {_HISTORY} (
                customer_id VARCHAR NOT NULL, segment_type VARCHAR NOT NULL, segment VARCHAR NOT NULL,
                entered_on DATE NOT NULL, exited_on DATE)"""
        )
    if table_exists(conn, ID_REGISTRY):
        _follow_merges(conn)
    # Undo what a run on this day (or a later one) did, so the comparison starts from the day before.
    conn.execute(f"DELETE FROM {_HISTORY} WHERE entered_on >= ?", [as_of])
    conn.execute(f"UPDATE {_HISTORY} SET exited_on = NULL WHERE exited_on >= ?", [as_of])
    conn.execute(_CURRENT_SQL)
    exited = conn.execute(
        f"""UPDATE {_HISTORY} h SET exited_on = ?
        WHERE h.exited_on IS NULL AND NOT EXISTS (
            SELECT 1 FROM {_CURRENT} c WHERE c.customer_id = h.customer_id
            AND c.segment_type = h.segment_type AND c.segment = h.segment)""",
        [as_of],
    ).fetchall()[0][0]
    entered_rows = conn.execute(
        f"""INSERT INTO {_HISTORY}
        SELECT c.customer_id, c.segment_type, c.segment, ?, NULL FROM {_CURRENT} c
        WHERE NOT EXISTS (
            SELECT 1 FROM {_HISTORY} h WHERE h.exited_on IS NULL
            AND h.customer_id = c.customer_id AND h.segment_type = c.segment_type AND h.segment = c.segment)
        RETURNING segment_type, segment""",
        [as_of],
    ).fetchall()
    by_segment: dict[str, int] = {}
    for segment_type, segment in entered_rows:
        key = f"{segment_type}:{segment}"
        by_segment[key] = by_segment.get(key, 0) + 1
    open_stays = conn.execute(
        f"SELECT count(*) FROM {_HISTORY} WHERE exited_on IS NULL"
    ).fetchall()[0][0]
    return MembershipChanges(
        entered=len(entered_rows), exited=exited, open_stays=open_stays, by_segment_entered=by_segment
    )


def _follow_merges(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _marts_survivors AS {_SURVIVORS_SQL}")
    conn.execute(
        f"""UPDATE {_HISTORY} h SET customer_id = s.survivor
        FROM _marts_survivors s WHERE h.customer_id = s.customer_id"""
    )
    # Two ids that were in the same segment now hold overlapping open stays: keep the earliest.
    conn.execute(
        f"""DELETE FROM {_HISTORY} WHERE rowid IN (
            SELECT rowid FROM (SELECT rowid, row_number() OVER (
                PARTITION BY customer_id, segment_type, segment ORDER BY entered_on) AS n
                FROM {_HISTORY} WHERE exited_on IS NULL) WHERE n > 1)"""
    )
