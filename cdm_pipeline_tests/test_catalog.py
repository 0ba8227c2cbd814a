"""The warehouse catalogue is the one home of every shared table's name, and of the DDL of the
tables the pipeline creates empty: these tests read the package's source to keep it so."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import duckdb
import pytest

from cdm_pipeline.lib import catalog
from cdm_pipeline.lib.catalog import Table, ensure
from cdm_pipeline.lib.warehouse import table_columns, table_exists

PACKAGE = Path(catalog.__file__).resolve().parents[1]
CATALOGUE_FILE = Path(catalog.__file__).resolve()
TABLES = [value for value in vars(catalog).values() if isinstance(value, Table)]
SCHEMAS = "|".join(sorted({t.schema for t in TABLES} | {catalog.RAW, catalog.STAGING, catalog.QUARANTINE}))
KINDS = ("contacts", "orders", "email_events", "web_events")


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """String literals of a module that are not docstrings (prose may name tables)."""
    tokens = list(tokenize.generate_tokens(io.StringIO(path.read_text()).readline))
    found = []
    for i, token in enumerate(tokens):
        if token.type != tokenize.STRING:
            continue
        before = tokens[i - 1].type if i else tokenize.NEWLINE
        after = tokens[i + 1].type if i + 1 < len(tokens) else tokenize.NEWLINE
        if before in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT) and after == tokenize.NEWLINE:
            continue
        found.append((token.start[0], token.string))
    return found


def _package_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.resolve() != CATALOGUE_FILE)


def test_the_catalogue_declares_every_published_table_of_the_design_with_a_grain():
    names = {t.full_name for t in TABLES}
    published = {
        "identity.customer_xref", "identity.golden_customers", "marts.customer_360", "marts.customer_segments",
        "marts.customer_journey_events", "marts.customer_journeys", "governance.audit_log",
    }
    assert published <= names
    assert len(names) == len(TABLES), "a table is declared twice"
    for table in TABLES:
        assert table.grain.startswith("One row per"), table.full_name
        assert re.fullmatch(r"[a-z][a-z0-9_]*", table.name) and re.fullmatch(r"[a-z][a-z0-9_]*", table.schema)
    assert [t.full_name for t in catalog.MART_TABLES] == [
        "marts.customer_journey_events", "marts.customer_journeys", "marts.order_attribution",
        "marts.customer_360", "marts.customer_segments", "marts.segment_membership_history",
    ]


def test_no_module_writes_a_warehouse_table_name_outside_the_catalogue():
    """Neither ``identity.customer_xref`` nor ``identity.{table}`` in a string, nor a
    ``("identity", "customer_xref")`` pair. (A bare ``"match_edges"`` may be a column or a metric.)"""
    bare = "|".join(sorted({t.name for t in TABLES if t.schema != catalog.IDENTITY_WORK}))
    dotted = re.compile(rf"(?<![\w./]){'(?:' + SCHEMAS + ')'}\.(?:{bare}|{'|'.join(KINDS)}|\{{)")
    pair = re.compile(rf"['\"](?:{SCHEMAS})['\"]\s*,\s*['\"](?:{bare}|{'|'.join(KINDS)})['\"]")
    offences = []
    for path in _package_modules():
        text = path.read_text()
        for line, literal in _code_strings(path):
            if dotted.search(literal):
                offences.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {literal[:70]!r}")
        for match in pair.finditer(text):
            offences.append(f"{path.relative_to(PACKAGE.parent)}: {match.group(0)!r}")
    assert offences == [], "table names written outside lib/catalog.py:\n" + "\n".join(offences)


def test_every_table_created_empty_is_created_from_the_catalogue():
    """`CREATE TABLE IF NOT EXISTS` is written once, in the catalogue's ``ensure``."""
    offences = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for path in _package_modules()
        for line, literal in _code_strings(path)
        if re.search(r"CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS", literal, re.IGNORECASE)
    ]
    assert offences == []


@pytest.mark.parametrize("table", [t for t in TABLES if t.columns is not None], ids=lambda t: t.full_name)
def test_ensure_creates_the_declared_columns_and_is_idempotent(table):
    conn = duckdb.connect()
    assert not table_exists(conn, table)
    ensure(conn, table)
    ensure(conn, table)
    assert table_columns(conn, table) == [*table.columns, *table.added_columns]


def test_ensure_adds_the_columns_of_a_later_release_to_an_existing_table():
    conn = duckdb.connect()
    runs = catalog.RESOLUTION_RUNS
    conn.execute("CREATE SCHEMA identity")
    conn.execute(f"CREATE TABLE {runs} (run_id VARCHAR, resolved_at TIMESTAMPTZ)")
    conn.execute(f"INSERT INTO {runs} VALUES ('r1', now())")
    ensure(conn, runs)
    columns = table_columns(conn, runs)
    assert columns[:2] == ["run_id", "resolved_at"]
    assert set(runs.added_columns) <= set(columns)
    assert conn.execute(f"SELECT run_id, expected_precision FROM {runs}").fetchall() == [("r1", None)]


def test_a_table_is_written_quoted_in_sql_and_plainly_for_people():
    assert str(catalog.XREF) == '"identity"."customer_xref"'
    assert catalog.XREF.full_name == "identity.customer_xref"
    assert catalog.XREF.asset_key.path == ["identity", "customer_xref"]
    assert catalog.staging_table("orders").asset_key.path == ["staging", "orders"]
    assert catalog.rejects_table("shop").full_name == "quarantine.shop_rejects"
