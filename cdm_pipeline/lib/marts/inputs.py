"""What every mart reads besides staging: the as-of date, order values and activity-to-record links.

The marts describe the warehouse *as of the latest landed day* (not the wall clock), so a re-run
gives the same tables and a demo loaded in October still has recent customers in November.
Lookups that come from the config (which contacts source an orders source's ``contact_id``
refers to, exchange rates, excluded statuses) become small temporary tables, so the SQL binds
them instead of pasting config values into its text.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.catalog import GOLDEN, XREF, Table, staging_table
from cdm_pipeline.lib.staging.columns import KINDS
from cdm_pipeline.lib.staging.links import CONTACTS_SOURCE, RECORD_LINKS, register_record_links
from cdm_pipeline.lib.warehouse import table_exists

# Each mart of catalog.MART_TABLES is built as marts._next_<table> and renamed into place at the end.
BUILD_PREFIX = "_next_"
# What the marts read: every staging table, and identity's customers.
STAGED = tuple(staging_table(kind) for kind in KINDS)
LINKS = "_marts_activity_links"
RATES = "_marts_exchange_rates"
EXCLUDED_STATUSES = "_marts_excluded_statuses"


def build_table(table: Table) -> Table:
    """Where a mart is built before publication (``marts._next_<table>``)."""
    return Table(table.schema, BUILD_PREFIX + table.name, table.grain)


class MartsInputError(RuntimeError):
    """The warehouse lacks what the marts are built from (run staging and identity first)."""


def marts_as_of_date(conn: duckdb.DuckDBPyConnection) -> dt.date:
    """The latest partition landed in any staging table: "today" for every mart.

    Raises:
        MartsInputError: when nothing has been staged yet.
    """
    parts = [f"SELECT max(_partition_date) AS d FROM {table}" for table in STAGED if table_exists(conn, table)]
    if not parts:
        raise MartsInputError("staging has no tables: materialise staging first")
    as_of = conn.execute(f"SELECT max(d) FROM ({' UNION ALL '.join(parts)})").fetchall()[0][0]
    if as_of is None:
        raise MartsInputError("staging is empty: materialise staging first")
    return as_of


def check_marts_inputs(conn: duckdb.DuckDBPyConnection) -> None:
    """Fail with one clear line when a table the marts read is missing."""
    missing = [table.full_name for table in (*STAGED, XREF, GOLDEN) if not table_exists(conn, table)]
    if missing:
        raise MartsInputError(
            f"{', '.join(missing)} missing: materialise staging and identity before the marts"
        )


def register_config_lookups(conn: duckdb.DuckDBPyConnection, config: CdmConfig) -> None:
    """Temporary tables holding the config's links, exchange rates and excluded statuses.

    ``LINKS`` is the activity-to-contacts part of the record links (``lib/staging/links.py``):
    which contacts sources an orders or e-mail events source's contact ids name, by preference.
    """
    register_record_links(conn, config)
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE {LINKS} AS SELECT source_name AS activity_source,"
        f" target_source AS contacts_source, preference FROM {RECORD_LINKS} WHERE declared_by = $declared_by",
        {"declared_by": CONTACTS_SOURCE},
    )

    marts = config.marts
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {RATES} (currency VARCHAR, rate DOUBLE)")
    rates = dict(marts.exchange_rates)
    if marts.currency:
        rates[marts.currency] = 1.0
    if rates:
        conn.executemany(f"INSERT INTO {RATES} VALUES (?, ?)", list(rates.items()))
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {EXCLUDED_STATUSES} (status VARCHAR)")
    if marts.excluded_order_statuses:
        conn.executemany(
            f"INSERT INTO {EXCLUDED_STATUSES} VALUES (?)",
            [(s.lower(),) for s in marts.excluded_order_statuses],
        )

