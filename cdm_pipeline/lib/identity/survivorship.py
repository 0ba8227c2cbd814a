"""Golden customer records: per attribute, which member record's value survives, and why.

A customer is a cluster of member records from several sources that disagree (an old email in the
web shop, a misspelt name in the email tool). Survivorship picks one value per attribute by the
configured rule and records its provenance (which record, which rule, how many candidates), so a
data steward can answer "where did this email come from?" without re-running anything.

The members are read once into a ranked temp table (each record's place in the tie-break chain),
then one set-based DuckDB aggregation picks, per attribute, an ``arg_min`` over the customer's
candidate records, ordered by a key built from its rule and then
a fixed tie-break chain (most recent → most trusted source → smallest
``(source_name, source_record_id)``), so the result does not depend on the order rows arrive in.
Python only writes the SQL text, once per attribute; values (including the trusted source names)
are always bound parameters.
"""

from __future__ import annotations

import contextlib
import logging

import duckdb

from cdm_pipeline.config import ADDRESS_FIELDS, SURVIVING_ATTRIBUTES, SurvivorshipConfig
from cdm_pipeline.lib.staging.rules import future_time_sql
from cdm_pipeline.lib.warehouse import quote_ident

logger = logging.getLogger(__name__)

ADDRESS = "address"
# The members columns this step reads; naming them keeps any extra columns out of the sorts.
MEMBER_COLUMNS = (
    "customer_id", "source_name", "source_system", "source_record_id", "first_name",
    "last_name", "email", "phone", "birth_date", *ADDRESS_FIELDS, "company", "email_opt_in",
    "do_not_sell", "created_at", "updated_at", "first_seen", "last_seen",
)
_SURVIVORS = "_cdm_survivors"
_RANKED = "_cdm_ranked"
# Larger than any negated epoch: a record with no timestamp at all is the least recent.
_NEVER = "9223372036854775807"

# Per-record ordering inputs shared by every attribute (lower sorts first = wins).
# Trust: the source name's rank, else its system's, else after every listed entry. The cast keeps
# an empty trust list typed.
_TRUST_RANK = (
    "coalesce(list_position(CAST($trust AS VARCHAR[]), source_name),"
    " list_position(CAST($trust AS VARCHAR[]), source_system),"
    " len(CAST($trust AS VARCHAR[])) + 1)"
)
# Recency: the record's own timestamps, else the day it was last landed (midnight UTC, whatever
# the session time zone), negated so that the latest sorts first.
_STALENESS = (
    f"coalesce(-epoch_us(coalesce(updated_at, created_at,"
    f" timezone('UTC', CAST(last_seen AS TIMESTAMP)))), {_NEVER})"
)
# The tie-break chain as one number: the record's position within its customer, most recent
# first, then most trusted, then smallest (source_name, source_record_id). It is also the whole
# of the most_recent rule.
_CHAIN = (
    "row_number() OVER (PARTITION BY customer_id"
    " ORDER BY _staleness, _trust_rank, source_name, source_record_id)"
)
# Keys are packed as (rule's own key) * 2**32 + chain in a HUGEINT: arg_min over a number is
# several times faster than over a ROW(...) key, and no customer has 2**32 records.
_SHIFT = "4294967296"


def survive_attributes(
    conn: duckdb.DuckDBPyConnection,
    members: str,
    rules: SurvivorshipConfig,
    golden: str,
    provenance: str,
    *,
    temporary: bool = False,
) -> int:
    """Build the golden customer table and its provenance table from member records.

    Per attribute only records with a value are candidates, so a null never beats a value; the
    six address fields count as one attribute and always come from one record. Does not begin
    or commit a transaction: the caller runs identity resolution as one unit.

    Args:
        conn: Warehouse connection.
        members: Trusted, already-quoted table or view name, one row per member record with the
            columns in ``MEMBER_COLUMNS`` (``first_seen``/``last_seen``: first and last partition
            date the record was landed).
        rules: The survivorship configuration: trust order and a rule per attribute.
        golden: Trusted, already-quoted name of the golden table to (re)create.
        provenance: Trusted, already-quoted name of the provenance table to (re)create.
        temporary: Create both as temporary tables (an incremental night's, merged into the
            published ones inside the identity transaction).

    Returns:
        The number of golden rows (customers).
    """
    attribute_rules = {attribute: rules.rule_for(attribute) for attribute in SURVIVING_ATTRIBUTES}
    params = {"trust": list(rules.source_trust)}
    try:
        conn.execute(_ranked_sql(members), params)
        conn.execute(_survivors_sql(attribute_rules))
        kind = "TEMP TABLE" if temporary else "TABLE"
        conn.execute(_golden_sql(golden, attribute_rules).replace("TABLE", kind, 1))
        conn.execute(*_provenance_sql(provenance, attribute_rules, kind))
        conn.execute(f"DROP TABLE {_SURVIVORS}")
        conn.execute(f"DROP TABLE {_RANKED}")
    except BaseException:
        # Leave no temp table behind; inside an aborted transaction the drop itself fails, and
        # the caller's rollback removes the table anyway.
        with contextlib.suppress(duckdb.Error):
            conn.execute(f"DROP TABLE IF EXISTS {_SURVIVORS}")
        with contextlib.suppress(duckdb.Error):
            conn.execute(f"DROP TABLE IF EXISTS {_RANKED}")
        raise
    row = conn.execute(f"SELECT count(*) FROM {golden}").fetchone()
    count = int(row[0]) if row else 0
    logger.info(
        "survivorship: %d golden customers; rules %s",
        count, ", ".join(f"{a}={r}" for a, r in attribute_rules.items()),
    )
    return count


def _candidate_expr(attribute: str) -> str:
    """When a record takes part: it has a value (any address field counts for the address)."""
    if attribute == ADDRESS:
        return "(" + " OR ".join(f"{quote_ident(f)} IS NOT NULL" for f in ADDRESS_FIELDS) + ")"
    return f"{quote_ident(attribute)} IS NOT NULL"


def _frequency_key(attribute: str, table: str | None = None) -> list[str]:
    """What makes two candidate values "the same" for most_frequent (read from ``table``, if given)."""

    def column(name: str) -> str:
        return f"{table}.{quote_ident(name)}" if table else quote_ident(name)

    if attribute == ADDRESS:
        # Two spellings of one address differ in the details; street and postcode identify it.
        return [f"lower({column('postcode')})", f"lower({column('address_line1')})"]
    return [column(attribute)]


def _frequency_column(attribute: str) -> str:
    return quote_ident(f"_freq_{attribute}")


def _order_key(attribute: str, rule: str) -> str:
    """The number whose smallest value wins: the rule's own order, then the tie-break chain."""
    if rule == "most_recent":
        return "r._chain"
    if rule == "source_trust":
        primary = "r._trust_rank"
    elif rule == "most_frequent":
        primary = f"-{_frequency_column(attribute)}"
    elif rule == "most_complete" and attribute == ADDRESS:
        # Most fields filled first, then the longest text: a full address beats a long street.
        filled = " + ".join(
            f"CAST(r.{quote_ident(f)} IS NOT NULL AS INTEGER)" for f in ADDRESS_FIELDS
        )
        text = "concat_ws(' ', " + ", ".join(f"r.{quote_ident(f)}" for f in ADDRESS_FIELDS) + ")"
        primary = f"-(CAST({filled} AS BIGINT) * {_SHIFT} + length({text}))"
    elif rule == "most_complete":
        primary = f"-length(CAST(r.{quote_ident(attribute)} AS VARCHAR))"
    else:
        raise ValueError(f"unknown survivorship rule {rule!r} for {attribute!r}")
    return f"CAST({primary} AS HUGEINT) * {_SHIFT} + r._chain"


def _ranked_sql(members: str) -> str:
    """The members read once, each with its trust rank and its place in the tie-break chain.

    A ``created_at``/``updated_at`` after the day the record was last landed (and after now) is
    a typo such as 2099, not recency: it is dropped, as staging drops it (FUTURE_TOLERANCE_DAYS),
    here too for records staged before that rule and for web identities, whose times are their
    events'.
    """
    columns = ", ".join(quote_ident(c) for c in MEMBER_COLUMNS)
    plausible = ", ".join(
        f"CASE WHEN {future_time_sql(c, 'last_seen')} IS NOT TRUE THEN {c} END AS {c}"
        for c in ("created_at", "updated_at")
    )
    return f"""
        CREATE OR REPLACE TEMP TABLE {_RANKED} AS
        SELECT {columns}, _trust_rank, {_CHAIN} AS _chain
        FROM (SELECT {columns}, {_TRUST_RANK} AS _trust_rank, {_STALENESS} AS _staleness
              FROM (SELECT * REPLACE ({plausible}) FROM {members}))
    """


def _survivors_sql(attribute_rules: dict[str, str]) -> str:
    """One row per customer: aggregates, and per attribute its value, winning row and candidates.

    Only scalar values go through ``arg_min`` (a struct value takes its slow generic path); the
    winner's source and record id are fetched afterwards through its row id.
    """
    joins, freq_columns = [], []
    for i, (attribute, rule) in enumerate(attribute_rules.items()):
        if rule != "most_frequent":
            continue
        keys = _frequency_key(attribute)
        alias = f"f{i}"
        inner = ", ".join(f"{k} AS k{j}" for j, k in enumerate(keys))
        group = ", ".join(["customer_id", *(f"k{j}" for j in range(len(keys)))])
        # NULL keys form one group, as in a window partition; only candidates are counted.
        on = " AND ".join(
            [f"{alias}.customer_id = r.customer_id"]
            + [f"{alias}.k{j} IS NOT DISTINCT FROM {k}" for j, k in enumerate(_frequency_key(attribute, "r"))]
        )
        joins.append(
            f" LEFT JOIN (SELECT customer_id, {inner}, count(*) AS n FROM {_RANKED}"
            f" WHERE {_candidate_expr(attribute)} GROUP BY {group}) {alias} ON {on}"
        )
        freq_columns.append(f"coalesce({alias}.n, 0) AS {_frequency_column(attribute)}")
    picks = []
    for attribute, rule in attribute_rules.items():
        key = _order_key(attribute, rule)
        candidate = _candidate_expr(attribute)
        if attribute == ADDRESS:
            # The whole address from one record, gaps included (arg_min skips NULL values).
            picks += [
                f"arg_min_null(r.{quote_ident(f)}, {key}) FILTER (WHERE {candidate})"
                f" AS {quote_ident(f)}"
                for f in ADDRESS_FIELDS
            ]
        else:
            picks.append(
                f"arg_min(r.{quote_ident(attribute)}, {key}) FILTER (WHERE {candidate})"
                f" AS {quote_ident(attribute)}"
            )
        picks.append(
            f"arg_min(r._rid, {key}) FILTER (WHERE {candidate})"
            f" AS {quote_ident(f'{attribute}__rid')}"
        )
        picks.append(
            f"count(*) FILTER (WHERE {candidate}) AS {quote_ident(f'{attribute}__candidates')}"
        )
    extra = "".join(f", {c}" for c in freq_columns)
    return f"""
        CREATE OR REPLACE TEMP TABLE {_SURVIVORS} AS
        WITH r AS (
            SELECT r.*, r.rowid AS _rid{extra} FROM {_RANKED} r{"".join(joins)}
        )
        SELECT
            r.customer_id,
            count(*) AS record_count,
            list_sort(list_distinct(list(r.source_name))) AS source_names,
            list_sort(list_distinct(list(r.source_system))) AS source_systems,
            min(r.first_seen) AS first_seen,
            max(r.last_seen) AS last_seen,
            min(r.created_at) AS created_at,
            max(r.updated_at) AS updated_at,
            {", ".join(picks)}
        FROM r
        GROUP BY r.customer_id
        -- Sorted once here; DuckDB keeps insertion order, so the golden table comes out sorted.
        ORDER BY r.customer_id
    """


def _golden_sql(golden: str, attribute_rules: dict[str, str]) -> str:
    columns = ["customer_id"]
    for attribute in SURVIVING_ATTRIBUTES:
        if attribute == ADDRESS:
            columns += [quote_ident(f) for f in ADDRESS_FIELDS]
        else:
            columns.append(quote_ident(attribute))
    columns += [
        "record_count", "source_names", "source_systems", "first_seen", "last_seen",
        "created_at", "updated_at",
    ]
    return (
        f"CREATE OR REPLACE TABLE {golden} AS SELECT {', '.join(columns)}"
        f" FROM {_SURVIVORS}"
    )


def _provenance_sql(provenance: str, attribute_rules: dict[str, str], kind: str = "TABLE") -> tuple[str, dict]:
    """One row per customer and attribute that has a surviving value, in customer then
    attribute order; the winner's source and record id come from its row in the ranked table.
    """
    items, params = [], {}
    for i, (attribute, rule) in enumerate(attribute_rules.items()):
        params[f"attribute_{i}"] = attribute
        params[f"rule_{i}"] = rule
        items.append(
            f"struct_pack(i := {i}, attribute := CAST($attribute_{i} AS VARCHAR),"
            f" rid := {quote_ident(f'{attribute}__rid')}, rule := CAST($rule_{i} AS VARCHAR),"
            f" candidates := {quote_ident(f'{attribute}__candidates')})"
        )
    sql = f"""
        CREATE OR REPLACE {kind} {provenance} AS
        WITH won AS (
            SELECT customer_id, rowid AS _row, unnest(list_filter([{', '.join(items)}],
                lambda p: p.candidates > 0), recursive := true)
            FROM {_SURVIVORS}
        )
        SELECT w.customer_id, w.attribute, r.source_name, r.source_record_id, w.rule,
            w.candidates
        FROM won w JOIN {_RANKED} r ON r.rowid = w.rid
    """
    return sql, params
