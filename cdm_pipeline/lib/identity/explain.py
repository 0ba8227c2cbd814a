"""Why a customer is who they are: member records (masked) and the links that joined them.

Governance staff asking "why are these two people one customer?" get each link's rule — the
shared identifier for deterministic links, or the match probability and every comparison's match
weight for Splink links — without seeing the personal values themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from cdm_pipeline.lib.catalog import ID_REGISTRY, MATCH_EDGES, XREF, staging_table
from cdm_pipeline.lib.governance.audit_log import record_audit
from cdm_pipeline.lib.identity.records import NEWEST_VERSION_ORDER
from cdm_pipeline.lib.personal_data.masking import mask_date, mask_email, mask_name, mask_phone, mask_text
from cdm_pipeline.lib.warehouse import quote_ident, table_exists

AUDIT_ACTION = "identity_explain"
MASKED_FIELDS = (
    ("first_name", mask_name), ("last_name", mask_name), ("email", mask_email),
    ("phone", mask_phone), ("birth_date", mask_date), ("postcode", mask_text), ("city", mask_name),
)


@dataclass(frozen=True)
class Member:
    source_name: str
    source_record_id: str
    identifier_type: str
    masked: dict[str, str]


@dataclass(frozen=True)
class Link:
    left: int  # index into members
    right: int
    rule: str
    match_probability: float
    match_weight: float | None
    weights: dict[str, float]


@dataclass(frozen=True)
class Explanation:
    customer_id: str
    asked_for: str
    status: str
    merged_ids: list[str]
    members: list[Member]
    links: list[Link]


class UnknownCustomer(Exception):
    """No such customer id was ever issued."""


def explain_customer(conn: duckdb.DuckDBPyConnection, customer_id: str) -> Explanation:
    """Members and joining links of ``customer_id`` (following merges to the surviving id)."""
    if not table_exists(conn, ID_REGISTRY):
        raise UnknownCustomer("no identity resolution has run yet")
    asked_for = customer_id
    status = "active"
    for _ in range(100):  # merge chains are short; the bound only guards against a cycle
        rows = conn.execute(
            f"SELECT status, merged_into FROM {ID_REGISTRY} WHERE customer_id = ?",
            [customer_id],
        ).fetchall()
        if not rows:
            raise UnknownCustomer(f"customer id {customer_id} was never issued")
        status, merged_into = rows[0]
        if status != "merged" or merged_into is None:
            break
        customer_id = merged_into
    merged_ids = [
        row[0]
        for row in conn.execute(
            f"SELECT customer_id FROM {ID_REGISTRY} WHERE merged_into = ? ORDER BY seq",
            [customer_id],
        ).fetchall()
    ]
    fields = ", ".join(f"r.{quote_ident(name)}" for name, _ in MASKED_FIELDS)
    # The newest staged version of each member, as identity compared it (the stage's own copy
    # lives only in memory while it runs). Web identities have no staged contact row.
    rows = conn.execute(
        f"""WITH members AS (SELECT * FROM {XREF} WHERE customer_id = ?),
        latest AS (
            SELECT c.* FROM {staging_table("contacts")} c SEMI JOIN members USING (source_name, source_record_id)
            QUALIFY row_number() OVER (PARTITION BY source_name, source_record_id ORDER BY {NEWEST_VERSION_ORDER}) = 1
        )
        SELECT x.source_name, x.source_record_id, x.identifier_type, {fields}
        FROM members x LEFT JOIN latest r USING (source_name, source_record_id)
        ORDER BY x.source_name, x.source_record_id""",
        [customer_id],
    ).fetchall()
    members = [
        Member(
            source_name=row[0],
            source_record_id=row[1],
            identifier_type=row[2],
            masked={name: mask(value) for (name, mask), value in zip(MASKED_FIELDS, row[3:], strict=True)},
        )
        for row in rows
    ]
    index = {(m.source_name, m.source_record_id): i for i, m in enumerate(members)}
    edges = conn.execute(
        f"SELECT * FROM {MATCH_EDGES} WHERE customer_id = ?"
        " ORDER BY source_name_l, source_record_id_l, source_name_r, source_record_id_r",
        [customer_id],
    )
    columns = [d[0] for d in edges.description]
    links = []
    for row in edges.fetchall():
        edge = dict(zip(columns, row, strict=True))
        links.append(
            Link(
                left=index[(edge["source_name_l"], edge["source_record_id_l"])],
                right=index[(edge["source_name_r"], edge["source_record_id_r"])],
                rule=edge["rule"],
                match_probability=edge["match_probability"],
                match_weight=edge.get("match_weight"),
                weights=_comparison_weights(edge, columns),
            )
        )
    return Explanation(customer_id, asked_for, status, merged_ids, members, links)


def record_explanation(conn: duckdb.DuckDBPyConnection, explanation: Explanation) -> None:
    """One ``governance.audit_log`` row for an explanation shown to someone: who (the OS user), the
    customer id asked for, how many records and links; no value, masked or not.

    ``conn`` must be read-write. Call it before showing the explanation, so nothing is shown unaudited.
    """
    e = explanation
    merged = f" (merged into {e.customer_id})" if e.asked_for != e.customer_id else ""
    record_audit(
        conn, AUDIT_ACTION, None, len(e.members),
        f"customer {e.asked_for}{merged}: {len(e.members)} records, {len(e.links)} links shown, values masked",
    )


def _comparison_weights(edge: dict, columns: list[str]) -> dict[str, float]:
    """Each comparison's match weight, its term-frequency adjustment included (Splink's ``mw_``
    and ``mw_tf_adj_`` columns); deterministic links have none."""
    weights = {}
    for column in columns:
        if not column.startswith("mw_") or column.startswith("mw_tf_adj_") or edge[column] is None:
            continue
        name = column.removeprefix("mw_")
        weights[name] = edge[column] + (edge.get(f"mw_tf_adj_{name}") or 0.0)
    return weights
