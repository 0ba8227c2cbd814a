"""The warehouse catalogue: every table the pipeline shares, declared once (this project's ``ref()``).

Each :class:`Table` holds its schema, name and grain (the first line of its description in the UI),
and, for the tables the pipeline creates empty and appends to, its columns. SQL writes a table as
``{XREF}`` (a quoted ``"identity"."customer_xref"``), Dagster takes ``XREF.asset_key`` and messages
take ``XREF.full_name``; ``cdm_pipeline_tests/test_catalog.py`` keeps table names from being
written anywhere else in the package.

Tables named after config (``raw.<source>``, ``staging.<kind>``) come from the functions at the
end; their names are validated identifiers, quoted like every other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cdm_pipeline.lib.staging.columns import quarantine_columns, staging_columns
from cdm_pipeline.lib.warehouse import quote_ident, table_columns

if TYPE_CHECKING:
    import dagster as dg
    import duckdb


@dataclass(frozen=True)
class Table:
    """One warehouse table.

    Args:
        schema: Its schema (``identity``).
        name: Its name within the schema (``customer_xref``).
        grain: One sentence, "One row per ...": what a row is.
        columns: Column name → SQL type, for the tables created empty (``ensure``); None for tables
            built whole by a query (their columns are the query's).
        added_columns: Columns added after the table's first release; ``ensure`` adds them to a
            warehouse written by an earlier version.
    """

    schema: str
    name: str
    grain: str = ""
    columns: dict[str, str] | None = field(default=None, compare=False)
    added_columns: dict[str, str] = field(default_factory=dict, compare=False)

    def __str__(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    @property
    def full_name(self) -> str:
        """``schema.table`` as people read it (messages, metadata, reports)."""
        return f"{self.schema}.{self.name}"

    @property
    def asset_key(self) -> dg.AssetKey:
        return asset_key(self.schema, self.name)

    def create_sql(self) -> str:
        if self.columns is None:
            raise ValueError(f"{self.full_name} is built by a query; it has no column list to create it from")
        body = ", ".join(f"{quote_ident(name)} {sql_type}" for name, sql_type in self.columns.items())
        return f"CREATE TABLE IF NOT EXISTS {self} ({body})"


def ensure(conn: duckdb.DuckDBPyConnection, table: Table) -> None:
    """Create ``table`` (and its schema) when missing, and add the declared columns it lacks.

    A warehouse written by an earlier version lacks the columns added since (``added_columns``,
    a canonical column, a newly mapped source column): they are added, empty for the rows there,
    rather than failing every insert. Nothing is ever dropped.
    """
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(table.schema)}")
    conn.execute(table.create_sql())
    existing = {name.casefold() for name in table_columns(conn, table)}
    for name, sql_type in {**(table.columns or {}), **table.added_columns}.items():
        if name.casefold() not in existing:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {quote_ident(name)} {sql_type}")


# Schemas, in the order the data flows. identity_work holds identity's private work tables, kept
# between its steps in one run and read by nothing else.
RAW, STAGING, QUARANTINE, IDENTITY, IDENTITY_WORK, MARTS, GOVERNANCE = (
    "raw", "staging", "quarantine", "identity", "identity_work", "marts", "governance",
)


# --- identity -------------------------------------------------------------------------------
XREF = Table(
    IDENTITY, "customer_xref",
    "One row per contact-like source record (contacts, web clients and logins) with its stable"
    " customer_id, the rule and match probability that joined it.",
)
GOLDEN = Table(
    IDENTITY, "golden_customers",
    "One row per customer: surviving name, email, phone, birth date, address and consent, with"
    " provenance in identity.golden_customer_provenance.",
)
PROVENANCE = Table(
    IDENTITY, "golden_customer_provenance",
    "One row per customer and attribute: the source record the surviving value came from, and why.",
)
ID_REGISTRY = Table(
    IDENTITY, "customer_id_registry",
    "One row per customer id ever issued, with its status (active, merged, retired).",
    columns={
        "customer_id": "VARCHAR PRIMARY KEY", "seq": "BIGINT NOT NULL",
        "status": "VARCHAR NOT NULL",  # 'active' | 'merged' | 'retired'
        "issued_run_id": "VARCHAR", "issued_at": "TIMESTAMPTZ", "merged_into": "VARCHAR",
        "status_changed_at": "TIMESTAMPTZ", "last_run_id": "VARCHAR",
    },
)
ID_ASSIGNMENTS = Table(
    IDENTITY, "customer_id_assignments",
    "One row per record of the latest resolution: the cluster it fell in and the id that cluster got.",
    # One row per record: guaranteed by the input check, not by an index, whose upkeep doubled the
    # cost of writing a million rows.
    columns={
        "source_name": "VARCHAR NOT NULL", "source_record_id": "VARCHAR NOT NULL",
        "customer_id": "VARCHAR NOT NULL",
    },
)
ID_CHANGES = Table(
    IDENTITY, "customer_id_changes",
    "One row per customer id issued, merged, split or retired by a run.",
    columns={
        "run_id": "VARCHAR", "changed_at": "TIMESTAMPTZ",
        "change": "VARCHAR",  # 'new' | 'merged' | 'split' | 'retired'
        "customer_id": "VARCHAR", "related_customer_id": "VARCHAR", "records": "BIGINT",
    },
)
MATCH_EDGES = Table(
    IDENTITY, "match_edges",
    "One row per pair of records the latest resolution linked, with the rule or match weight.",
)
IGNORED_IDENTIFIERS = Table(
    IDENTITY, "ignored_identifiers",
    "One row per identifier value the guards set aside (hashed), with how many records carry it.",
)
OVERSIZE_CLUSTERS = Table(
    IDENTITY, "oversize_clusters",
    "One row per cluster over identity.max_cluster_size in a run, and how it was re-clustered.",
    columns={
        "run_id": "VARCHAR", "resolved_at": "TIMESTAMPTZ", "customer_id": "VARCHAR",
        "records_before": "BIGINT", "resolved_by": "VARCHAR", "largest_after": "BIGINT",
    },
)
OVERRIDES_APPLIED = Table(
    IDENTITY, "overrides_applied",
    "One row per governance override line per run, with whether it took effect.",
    columns={
        "run_id": "VARCHAR", "resolved_at": "TIMESTAMPTZ", "line": "INTEGER", "decision": "VARCHAR",
        "source_name_l": "VARCHAR", "source_record_id_l": "VARCHAR",
        "source_name_r": "VARCHAR", "source_record_id_r": "VARCHAR", "outcome": "VARCHAR",
    },
)
RESOLUTION_RUNS = Table(
    IDENTITY, "resolution_runs",
    "One row per identity resolution (nightly or after an erasure): its counts and scores.",
    columns={
        "run_id": "VARCHAR", "resolved_at": "TIMESTAMPTZ", "model_version": "INTEGER",
        "model_trained": "BOOLEAN", "records": "BIGINT", "contact_records": "BIGINT",
        "web_identities": "BIGINT", "deterministic_edges": "BIGINT", "comparisons": "BIGINT",
        "match_edges": "BIGINT", "clusters": "BIGINT", "largest_cluster": "BIGINT",
        "oversize_clusters": "BIGINT", "overrides_applied": "BIGINT", "new_ids": "BIGINT",
        "merged_ids": "BIGINT", "split_ids": "BIGINT", "retired_ids": "BIGINT", "customers": "BIGINT",
        "blocklisted_values": "BIGINT", "over_cap_values": "BIGINT", "pairwise_precision": "DOUBLE",
        "pairwise_recall": "DOUBLE", "pairwise_f1": "DOUBLE",
    },
    added_columns={
        "expected_precision": "DOUBLE", "expected_recall": "DOUBLE", "singleton_share": "DOUBLE",
        "untrained_levels": "VARCHAR[]", "merges_on_cluster_evidence": "BIGINT", "signal_warnings": "VARCHAR[]",
        # Issue 21: incremental nights. mode 'full' | 'incremental', and why; what changed.
        "mode": "VARCHAR", "mode_reason": "VARCHAR", "settings_fingerprint": "VARCHAR",
        "changed_records": "BIGINT", "removed_records": "BIGINT", "reclustered_records": "BIGINT",
        # Issue 22: where Splink ran ('duckdb' | 'spark').
        "engine": "VARCHAR",
    },
)
# What an incremental night starts from (lib/identity/incremental.py): the graph as last resolved.
# graph_nodes and linkage_input hold the records' values (like staging); erasure removes them.
GRAPH_NODES = Table(
    IDENTITY, "graph_nodes",
    "One row per record of the identity graph as last resolved: its values as linkage read them,"
    " internal record id, fingerprints of its staged rows and of what linkage read, and its cluster.",
)
LINKAGE_INPUT = Table(
    IDENTITY, "linkage_input",
    "One row per contact record as the Splink model last compared it (guarded values removed, blocking"
    " keys): what an incremental night compares new records against.",
)
PAIR_STORE = Table(
    IDENTITY, "scored_pairs",
    "One row per pair of contact records the model scored at match probability 0.01 or more, by"
    " internal record id, with the match weights: the edge set incremental nights update.",
)
# Identity's work table of one run: every record with its features, read by identity only.
WORK_RECORDS = Table(IDENTITY_WORK, "records", "One row per record entering this run's resolution.")

# --- marts ----------------------------------------------------------------------------------
JOURNEY_EVENTS = Table(
    MARTS, "customer_journey_events",
    "One row per order, e-mail event and web event of a known customer, in time order, with"
    " channel, web session (30 min inactivity) and touch sequence.",
)
JOURNEYS = Table(
    MARTS, "customer_journeys",
    "One row per customer with activity: first and last touch, touches per channel, days from first"
    " touch to first purchase, furthest funnel stage.",
)
ORDER_ATTRIBUTION = Table(
    MARTS, "order_attribution",
    "One row per counted order, attribution model (first_touch, last_touch, linear, position_based)"
    " and touch in the lookback window, with its weight.",
)
CUSTOMER_360 = Table(
    MARTS, "customer_360",
    "One row per golden customer: attributes, orders and revenue, e-mail engagement, web activity,"
    " consent and the systems that know them.",
)
SEGMENTS = Table(
    MARTS, "customer_segments",
    "One row per customer: RFM scores and segment, lifecycle stage, engagement tier and the custom"
    " segments of cdm.yaml.",
)
MEMBERSHIP_HISTORY = Table(
    MARTS, "segment_membership_history",
    "One row per stay of a customer in a segment, with entered_on and exited_on.",
)
# In the order they are built (each reads the ones before it).
MART_TABLES = (JOURNEY_EVENTS, JOURNEYS, ORDER_ATTRIBUTION, CUSTOMER_360, SEGMENTS, MEMBERSHIP_HISTORY)

# --- governance -----------------------------------------------------------------------------
AUDIT_LOG = Table(
    GOVERNANCE, "audit_log",
    "One row per privacy action, identity override or export: what, when, under which request, how"
    " many rows (never a personal value).",
    columns={
        "occurred_at": "TIMESTAMPTZ NOT NULL", "action": "VARCHAR NOT NULL", "request_id": "VARCHAR",
        "rows_affected": "BIGINT", "detail": "VARCHAR",
    },
    added_columns={"actor": "VARCHAR"},  # the OS user who ran the command (issue 20)
)
EXTRACT_LOG = Table(
    GOVERNANCE, "extract_log",
    "One row per partition an extract step loaded, with its run and counts.",
    columns={
        "run_id": "VARCHAR", "source_name": "VARCHAR NOT NULL", "partition_date": "DATE NOT NULL",
        "files": "INTEGER NOT NULL", "rows_loaded": "BIGINT NOT NULL", "rejected_lines": "BIGINT NOT NULL",
        "suppressed_rows": "BIGINT NOT NULL", "loaded_at": "TIMESTAMPTZ NOT NULL",
    },
)
QUALITY_RESULTS = Table(
    GOVERNANCE, "quality_results",
    "One row per expectation evaluated on a table in a run, with its outcome and counts.",
    columns={
        "run_id": "VARCHAR NOT NULL", "table_name": "VARCHAR NOT NULL", "expectation": "VARCHAR NOT NULL",
        "expectation_type": "VARCHAR NOT NULL", "column_name": "VARCHAR", "severity": "VARCHAR NOT NULL",
        "success": "BOOLEAN NOT NULL", "unexpected_count": "BIGINT", "element_count": "BIGINT",
        "unexpected_percent": "DOUBLE", "observed_value": "VARCHAR", "partition_start": "DATE",
        "partition_end": "DATE", "evaluated_at": "TIMESTAMPTZ NOT NULL",
    },
)
SUPPRESSION_LIST = Table(
    GOVERNANCE, "suppression_list",
    "One row per suppressed identifier (keyed hash): an erased person's e-mail, phone or record id.",
    columns={
        "kind": "VARCHAR NOT NULL", "value_hash": "VARCHAR NOT NULL", "request_id": "VARCHAR",
        "added_at": "TIMESTAMPTZ NOT NULL",
    },
)
PRIVACY_KEY_FINGERPRINT = Table(
    GOVERNANCE, "privacy_key_fingerprint",
    "One row per privacy key the suppression list was hashed with (only ever one): its fingerprint, never the key.",
    columns={"fingerprint": "VARCHAR NOT NULL", "recorded_at": "TIMESTAMPTZ NOT NULL"},
)
SUPPRESSED_ROWS = Table(
    GOVERNANCE, "suppressed_rows",
    "One row per source and partition: how many landed rows the suppression list kept out.",
    columns={
        "source_name": "VARCHAR NOT NULL", "partition_date": "DATE NOT NULL",
        "suppressed_rows": "BIGINT NOT NULL", "loaded_at": "TIMESTAMPTZ NOT NULL",
    },
)
PRIVACY_REQUESTS = Table(
    GOVERNANCE, "privacy_requests",
    "One row per privacy request carried out from privacy.requests_path (erasure or access export), with"
    " its status and counts; never the identifier.",
    columns={
        "request_id": "VARCHAR PRIMARY KEY", "action": "VARCHAR NOT NULL", "status": "VARCHAR NOT NULL",
        "processed_at": "TIMESTAMPTZ NOT NULL", "customers": "BIGINT", "rows_affected": "BIGINT",
    },
)
RUN_REPORTS = Table(
    GOVERNANCE, "run_reports",
    "One row per run that got a governance report.",
    columns={
        "run_id": "VARCHAR NOT NULL", "started_at": "TIMESTAMPTZ NOT NULL",
        "reported_at": "TIMESTAMPTZ NOT NULL", "outcome": "VARCHAR NOT NULL", "page": "VARCHAR NOT NULL",
    },
)
COMPACTION_PENDING = Table(
    GOVERNANCE, "compaction_pending",
    "One row per erasure whose deleted bytes are still in the warehouse file until it is rewritten.",
    columns={"request_id": "VARCHAR", "marked_at": "TIMESTAMPTZ"},
)
RETENTION_PURGES = Table(
    GOVERNANCE, "retention_purges",
    "One row per retention purge and kind (raw, web_events, inactive_customers): the cutoff, the rows"
    " deleted per table and the customers erased; counts only.",
    columns={
        "purge_id": "VARCHAR NOT NULL", "run_id": "VARCHAR", "purged_at": "TIMESTAMPTZ NOT NULL",
        "as_of_date": "DATE NOT NULL", "kind": "VARCHAR NOT NULL", "kept_for": "VARCHAR NOT NULL",
        "cutoff_date": "DATE NOT NULL", "rows_deleted": "BIGINT NOT NULL", "customers_erased": "BIGINT NOT NULL",
        "rows_by_table": "MAP(VARCHAR, BIGINT)",
    },
)
# The retention_purges kind of a purge of raw copies: staging refuses to re-stage what it removed.
RAW_PURGE_KIND = "raw"


# --- the analyst warehouse (security.analyst_warehouse): a separate file, not the warehouse --------
# Its marts keep the warehouse's schema and names (marts.customer_360, ...); this table says what
# they are.
ANALYST = "analyst"
ANALYST_MANIFEST = Table(
    ANALYST, "manifest",
    "One row per table of the analyst warehouse: its rows, the marts' as-of date, the privacy key's"
    " fingerprint and which columns were dropped or hashed (never a value).",
)


# --- assets that are files, not tables (Dagster keys only) ---------------------------------------
def asset_key(*path: str) -> dg.AssetKey:
    import dagster as dg

    return dg.AssetKey(list(path))


AUDIENCE_FILES_KEY_PATH = ("exports", "audience_files")
ANALYST_WAREHOUSE_KEY_PATH = ("exports", "analyst_warehouse")
GOVERNANCE_REPORT_KEY_PATH = ("reports", "governance_report")
INSIGHTS_KEY_PATH = ("reports", "insights_dashboard")
BACKUP_SNAPSHOT_KEY_PATH = ("governance", "backup_snapshot")  # only with backups.nightly


def landing_key_path(source_name: str) -> tuple[str, str]:
    """The landed files of a source (an external asset: the pipeline reads them, never writes)."""
    return ("landing", source_name)


# --- tables named after the config ------------------------------------------------------------
def raw_table(source_name: str, columns: list[str] | tuple[str, ...] = ()) -> Table:
    """``raw.<source>``: one row per landed row of a source, with its partition and file.

    ``columns``: the source's columns the table must have (all VARCHAR, as landed); raw keeps every
    column a source ever sent.
    """
    return Table(
        RAW, source_name, "One row per landed row of the source, with its partition and file.",
        columns={
            **{column: "VARCHAR" for column in columns},
            "_source_file": "VARCHAR NOT NULL", "_source_row": "BIGINT NOT NULL",
            "_partition_date": "DATE NOT NULL", "_loaded_at": "TIMESTAMPTZ NOT NULL",
        },
    )


def rejects_table(source_name: str) -> Table:
    """``quarantine.<source>_rejects``: lines of a source's files that could not be read."""
    return Table(
        QUARANTINE, f"{source_name}_rejects", "One row per landed line that could not be read, and why.",
        columns={
            "_source_file": "VARCHAR NOT NULL", "_source_row": "BIGINT NOT NULL", "_source_line": "BIGINT",
            "error_type": "VARCHAR NOT NULL", "error_message": "VARCHAR", "column_name": "VARCHAR",
            "raw_line": "VARCHAR", "_partition_date": "DATE NOT NULL", "_loaded_at": "TIMESTAMPTZ NOT NULL",
        },
    )


_STAGING_GRAIN = {
    "contacts": "One row per contact record per source per daily partition (CRM contacts, email"
    " subscribers, ...): standardised names, email, E.164 phone, dates, postcode, ISO country.",
    "orders": "One row per order per source per daily partition: typed date, amount, currency, status.",
    "email_events": "One row per email-platform event per daily partition: sent, delivered, open,"
    " click, bounce, unsubscribe, with the standardised email.",
    "web_events": "One row per web-analytics event per daily partition, typed, with client id,"
    " user id and standardised email.",
}


def staging_table(kind: str) -> Table:
    """``staging.<kind>``: one row per valid, standardised record of every source of that kind."""
    grain = _STAGING_GRAIN.get(kind, f"One row per valid, standardised {kind} record of every {kind} source.")
    return Table(STAGING, kind, grain, columns=staging_columns(kind))


def quarantine_table(kind: str) -> Table:
    """``quarantine.<kind>``: records of that kind that failed a staging rule, with the reasons."""
    return Table(
        QUARANTINE, kind,
        f"One row per {kind.replace('_', ' ')} raw row held back by a critical rule (no usable identifier,"
        " negative amount, no date, duplicate in partition, ...), with quarantine_reason; same columns as"
        " staging.",
        columns=quarantine_columns(kind),
    )
