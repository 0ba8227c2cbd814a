"""Survivorship: golden customer records and their provenance, on hand-made member tables."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from cdm_pipeline.config import SurvivorshipConfig
from cdm_pipeline.lib.identity.survivorship import MEMBER_COLUMNS, survive_attributes
from cdm_pipeline.lib.warehouse import prepare_connection

UTC = dt.timezone.utc
MEMBER_TYPES = {
    "birth_date": "DATE", "email_opt_in": "BOOLEAN", "do_not_sell": "BOOLEAN",
    "created_at": "TIMESTAMPTZ", "updated_at": "TIMESTAMPTZ", "first_seen": "DATE",
    "last_seen": "DATE",
}
ADDRESS_COLUMNS = ("address_line1", "address_line2", "city", "postcode", "region", "country")


@pytest.fixture
def conn(tmp_path):
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    prepare_connection(connection)
    yield connection
    connection.close()


def ts(day: int, hour: int = 0) -> dt.datetime:
    return dt.datetime(2024, 5, day, hour, tzinfo=UTC)


def member(customer_id: str, source_name: str, record_id: str, **values) -> dict:
    """A member record; unspecified attributes are NULL, the system is the source name's."""
    row = dict.fromkeys(MEMBER_COLUMNS)
    row.update(
        customer_id=customer_id, source_name=source_name, source_system=f"{source_name}_sys",
        source_record_id=record_id, first_seen=dt.date(2024, 5, 1), last_seen=dt.date(2024, 5, 1),
    )
    row.update(values)
    return row


def load_members(conn, rows: list[dict]) -> None:
    body = ", ".join(f"{c} {MEMBER_TYPES.get(c, 'VARCHAR')}" for c in MEMBER_COLUMNS)
    conn.execute(f"CREATE OR REPLACE TABLE members ({body})")
    marks = ", ".join("?" for _ in MEMBER_COLUMNS)
    if rows:
        conn.executemany(
            f"INSERT INTO members VALUES ({marks})",
            [[r[c] for c in MEMBER_COLUMNS] for r in rows],
        )


def survive(conn, rows: list[dict], **config) -> int:
    load_members(conn, rows)
    return survive_attributes(conn, "members", SurvivorshipConfig(**config), "golden", "provenance")


def golden(conn, customer_id: str) -> dict:
    cursor = conn.execute("SELECT * FROM golden WHERE customer_id = ?", [customer_id])
    names = [d[0] for d in cursor.description]
    return dict(zip(names, cursor.fetchone(), strict=True))


def provenance(conn) -> dict[tuple[str, str], tuple]:
    rows = conn.execute(
        "SELECT customer_id, attribute, source_name, source_record_id, rule, candidates"
        " FROM provenance"
    ).fetchall()
    return {(r[0], r[1]): r[2:] for r in rows}


def test_source_trust_prefers_the_listed_source_over_a_more_recent_record(conn):
    survive(conn, [
        member("c1", "crm", "r1", first_name="Jon", updated_at=ts(1)),
        member("c1", "web", "r2", first_name="John", updated_at=ts(9)),
    ], source_trust=["crm"])
    assert golden(conn, "c1")["first_name"] == "Jon"
    assert provenance(conn)[("c1", "first_name")] == ("crm", "r1", "source_trust", 2)


def test_source_trust_falls_back_to_the_source_system_then_unlisted_last(conn):
    survive(conn, [
        # c1: "eu_crm" is unlisted by name but its system is; "web" is not listed at all.
        member("c1", "eu_crm", "r1", source_system="salesforce", last_name="Smyth",
               updated_at=ts(1)),
        member("c1", "web", "r2", last_name="Smith", updated_at=ts(9)),
        # c2: a listed name ranks by its own position, ahead of a listed system further down.
        member("c2", "eu_crm", "r3", source_system="salesforce", last_name="Brown",
               updated_at=ts(9)),
        member("c2", "shop", "r4", last_name="Browne", updated_at=ts(1)),
    ], source_trust=["shop", "salesforce"])
    assert golden(conn, "c1")["last_name"] == "Smyth"
    assert golden(conn, "c2")["last_name"] == "Browne"
    assert provenance(conn)[("c2", "last_name")] == ("shop", "r4", "source_trust", 2)


def test_most_recent_uses_updated_then_created_then_last_seen(conn):
    survive(conn, [
        member("c1", "crm", "r1", email="old@x.com", updated_at=ts(2)),
        # No updated_at: its created_at is its time.
        member("c1", "web", "r2", email="new@x.com", created_at=ts(3)),
        # No timestamps: the day it was last landed.
        member("c2", "crm", "r3", email="stamped@x.com", updated_at=ts(4, 23)),
        member("c2", "web", "r4", email="landed@x.com", last_seen=dt.date(2024, 5, 5)),
    ])
    assert golden(conn, "c1")["email"] == "new@x.com"
    assert golden(conn, "c2")["email"] == "landed@x.com"
    assert provenance(conn)[("c2", "email")] == ("web", "r4", "most_recent", 2)


def test_last_seen_counts_as_midnight_utc_whatever_the_session_time_zone(conn):
    conn.execute("SET TimeZone = 'America/New_York'")
    # Midnight UTC on 5 May is before 02:00 UTC; New York midnight (04:00 UTC) would be after.
    survive(conn, [
        member("c1", "crm", "r1", phone="+441", updated_at=ts(5, 2)),
        member("c1", "web", "r2", phone="+442", last_seen=dt.date(2024, 5, 5)),
    ])
    assert golden(conn, "c1")["phone"] == "+441"


def test_most_complete_picks_the_longest_value(conn):
    survive(conn, [
        member("c1", "crm", "r1", company="Acme Holdings Ltd", updated_at=ts(1)),
        member("c1", "web", "r2", company="Acme", updated_at=ts(9)),
    ], attributes={"company": "most_complete"})
    assert golden(conn, "c1")["company"] == "Acme Holdings Ltd"
    assert provenance(conn)[("c1", "company")] == ("crm", "r1", "most_complete", 2)


def test_most_complete_address_prefers_more_fields_then_longer_text(conn):
    survive(conn, [
        # c1: three short fields beat two long ones.
        member("c1", "crm", "r1", address_line1="1 A St", city="Leeds", postcode="LS1 1AA"),
        member("c1", "web", "r2", address_line1="Flat 12, 100 Very Long Road Name",
               city="Huddersfield", updated_at=ts(9)),
        # c2: same fields filled; the longer text wins.
        member("c2", "crm", "r3", address_line1="1 A St", postcode="LS1 1AA", updated_at=ts(9)),
        member("c2", "web", "r4", address_line1="1 Acacia Avenue", postcode="LS1 1AA"),
    ], attributes={"address": "most_complete"})
    assert golden(conn, "c1")["city"] == "Leeds"
    assert golden(conn, "c2")["address_line1"] == "1 Acacia Avenue"
    assert provenance(conn)[("c2", "address")] == ("web", "r4", "most_complete", 2)


def test_most_frequent_picks_the_commonest_value_and_its_newest_holder(conn):
    survive(conn, [
        member("c1", "crm", "r1", birth_date=dt.date(1980, 1, 2), updated_at=ts(1)),
        member("c1", "web", "r2", birth_date=dt.date(1980, 1, 2), updated_at=ts(2)),
        member("c1", "shop", "r3", birth_date=dt.date(1981, 2, 1), updated_at=ts(9)),
        member("c1", "app", "r4", updated_at=ts(8)),
    ])
    assert golden(conn, "c1")["birth_date"] == dt.date(1980, 1, 2)
    assert provenance(conn)[("c1", "birth_date")] == ("web", "r2", "most_frequent", 3)


def test_most_frequent_address_compares_postcode_and_street_ignoring_case(conn):
    survive(conn, [
        member("c1", "crm", "r1", address_line1="1 HIGH ST", postcode="LS1 1AA", city="LEEDS",
               updated_at=ts(1)),
        member("c1", "web", "r2", address_line1="1 High St", postcode="ls1 1aa", city="Leeds",
               updated_at=ts(2)),
        member("c1", "shop", "r3", address_line1="9 Low Rd", postcode="M1 1AA", city="Manchester",
               updated_at=ts(9)),
        # c2: records without any address field do not count towards the city-only one.
        member("c2", "crm", "r4", address_line1="1 High St", postcode="LS1 1AA", updated_at=ts(9)),
        member("c2", "web", "r5", city="Leeds", updated_at=ts(1)),
        member("c2", "shop", "r6", updated_at=ts(1)),
        member("c2", "app", "r7", updated_at=ts(1)),
    ], attributes={"address": "most_frequent"})
    row = golden(conn, "c1")
    assert (row["address_line1"], row["postcode"], row["city"]) == ("1 High St", "ls1 1aa", "Leeds")
    prov = provenance(conn)
    assert prov[("c1", "address")] == ("web", "r2", "most_frequent", 3)
    assert prov[("c2", "address")] == ("crm", "r4", "most_frequent", 2)


def test_ties_resolve_by_recency_then_trust_then_smallest_source_record(conn):
    # Equal length values under most_complete, so only the tie-break chain decides.
    survive(conn, [
        member("c1", "crm", "r1", company="Aaaa", updated_at=ts(1)),
        member("c1", "web", "r2", company="Zzzz", updated_at=ts(2)),
        member("c2", "crm", "r3", company="Aaaa", updated_at=ts(2)),
        member("c2", "web", "r4", company="Zzzz", updated_at=ts(2)),
        member("c3", "web", "r6", company="Aaaa", updated_at=ts(2)),
        member("c3", "web", "r5", company="Zzzz", updated_at=ts(2)),
        member("c3", "shop", "r7", company="Yyyy", updated_at=ts(2)),
    ], source_trust=["web"], attributes={"company": "most_complete"})
    assert golden(conn, "c1")["company"] == "Zzzz"  # most recent
    assert golden(conn, "c2")["company"] == "Zzzz"  # same time: the trusted source
    assert golden(conn, "c3")["company"] == "Zzzz"  # same time and source: smallest record id
    assert provenance(conn)[("c3", "company")] == ("web", "r5", "most_complete", 3)


def test_result_does_not_depend_on_row_order(conn):
    rows = [
        member("c1", f"s{i % 3}", f"r{i}", first_name=f"N{i % 2}", email=f"e{i % 4}@x.com",
               company=f"Co{i % 2}", updated_at=ts(1 + i % 2))
        for i in range(12)
    ]
    config = {"source_trust": ["s1"], "attributes": {"company": "most_frequent"}}
    survive(conn, rows, **config)
    first = conn.execute("SELECT * FROM golden").fetchall(), provenance(conn)
    survive(conn, list(reversed(rows)), **config)
    assert (conn.execute("SELECT * FROM golden").fetchall(), provenance(conn)) == first


def test_address_fields_come_together_from_one_record(conn):
    # A field-by-field choice would take the newer postcode and keep the older street.
    survive(conn, [
        member("c1", "crm", "r1", address_line1="1 High St", address_line2="Flat 2", city="Leeds",
               postcode="LS1 1AA", region="West Yorkshire", country="GB", updated_at=ts(1)),
        member("c1", "web", "r2", postcode="M1 1AA", updated_at=ts(9)),
    ], attributes={"address": "most_complete"})
    row = golden(conn, "c1")
    assert tuple(row[c] for c in ADDRESS_COLUMNS) == (
        "1 High St", "Flat 2", "Leeds", "LS1 1AA", "West Yorkshire", "GB",
    )
    assert provenance(conn)[("c1", "address")] == ("crm", "r1", "most_complete", 2)


def test_most_recent_address_takes_the_whole_chosen_record_even_its_gaps(conn):
    survive(conn, [
        member("c1", "crm", "r1", address_line1="1 High St", city="Leeds", postcode="LS1 1AA",
               updated_at=ts(1)),
        member("c1", "web", "r2", postcode="M1 1AA", updated_at=ts(9)),
    ])
    row = golden(conn, "c1")
    assert tuple(row[c] for c in ADDRESS_COLUMNS) == (None, None, None, "M1 1AA", None, None)
    assert provenance(conn)[("c1", "address")] == ("web", "r2", "most_recent", 2)


def test_nulls_never_beat_values(conn):
    survive(conn, [
        member("c1", "crm", "r1", updated_at=ts(9)),  # trusted and newest, but empty
        member("c1", "web", "r2", first_name="Ann", email="ann@x.com", email_opt_in=False,
               updated_at=ts(1)),
        member("c1", "shop", "r3", updated_at=ts(5)),
    ], source_trust=["crm"])
    row = golden(conn, "c1")
    assert (row["first_name"], row["email"], row["email_opt_in"]) == ("Ann", "ann@x.com", False)
    prov = provenance(conn)
    assert prov[("c1", "first_name")] == ("web", "r2", "source_trust", 1)
    assert prov[("c1", "email_opt_in")] == ("web", "r2", "most_recent", 1)


def test_customer_without_a_value_gets_null_and_no_provenance_row(conn):
    survive(conn, [
        member("c1", "crm", "r1", email="a@x.com"),
        member("c2", "crm", "r2", phone="+441"),
        member("c2", "web", "r3"),
    ])
    row = golden(conn, "c2")
    assert row["email"] is None and row["address_line1"] is None and row["phone"] == "+441"
    assert set(provenance(conn)) == {("c1", "email"), ("c2", "phone")}


def test_booleans_follow_the_most_recent_statement(conn):
    survive(conn, [
        member("c1", "crm", "r1", email_opt_in=True, do_not_sell=True, updated_at=ts(1)),
        member("c1", "web", "r2", email_opt_in=False, updated_at=ts(9)),
    ])
    row = golden(conn, "c1")
    assert (row["email_opt_in"], row["do_not_sell"]) == (False, True)
    prov = provenance(conn)
    assert prov[("c1", "email_opt_in")] == ("web", "r2", "most_recent", 2)
    assert prov[("c1", "do_not_sell")] == ("crm", "r1", "most_recent", 1)


def test_aggregates_over_all_member_records(conn):
    count = survive(conn, [
        member("c1", "web", "r1", source_system="ga4", first_seen=dt.date(2024, 5, 3),
               last_seen=dt.date(2024, 5, 4), created_at=ts(2), updated_at=ts(3)),
        member("c1", "crm", "r2", source_system="salesforce", first_seen=dt.date(2024, 5, 1),
               last_seen=dt.date(2024, 5, 2), created_at=ts(1), updated_at=ts(8)),
        member("c1", "crm", "r3", source_system="salesforce", first_seen=dt.date(2024, 5, 2),
               last_seen=dt.date(2024, 5, 9)),
        member("c2", "web", "r4", source_system="ga4"),
    ])
    assert count == 2
    row = golden(conn, "c1")
    assert row["record_count"] == 3
    assert row["source_names"] == ["crm", "web"]
    assert row["source_systems"] == ["ga4", "salesforce"]
    assert (row["first_seen"], row["last_seen"]) == (dt.date(2024, 5, 1), dt.date(2024, 5, 9))
    assert (row["created_at"], row["updated_at"]) == (ts(1), ts(8))


def column_types(conn, table: str) -> list[tuple[str, str]]:
    return conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()


def test_output_columns_and_types(conn):
    survive(conn, [member("c1", "crm", "r1", email="a@x.com")])
    golden_types = dict(column_types(conn, "golden"))
    assert list(golden_types) == [
        "customer_id", "first_name", "last_name", "email", "phone", "birth_date", *ADDRESS_COLUMNS,
        "company", "email_opt_in", "do_not_sell", "record_count", "source_names",
        "source_systems", "first_seen", "last_seen", "created_at", "updated_at",
    ]
    assert golden_types["record_count"] == "BIGINT"
    assert golden_types["source_names"] == "VARCHAR[]"
    assert golden_types["birth_date"] == "DATE"
    assert golden_types["email_opt_in"] == "BOOLEAN"
    assert golden_types["updated_at"] == "TIMESTAMP WITH TIME ZONE"
    assert column_types(conn, "provenance") == [
        ("customer_id", "VARCHAR"), ("attribute", "VARCHAR"), ("source_name", "VARCHAR"),
        ("source_record_id", "VARCHAR"), ("rule", "VARCHAR"), ("candidates", "BIGINT"),
    ]


def test_trusted_names_are_bound_not_spliced_into_sql(conn):
    survive(conn, [
        member("c1", "o'brien", "r1", first_name="Seán", updated_at=ts(1)),
        member("c1", "web", "r2", first_name="Sean", updated_at=ts(9)),
    ], source_trust=["o'brien"])
    assert golden(conn, "c1")["first_name"] == "Seán"


def test_empty_members_gives_empty_tables(conn):
    assert survive(conn, []) == 0
    assert conn.execute("SELECT count(*) FROM provenance").fetchone() == (0,)


def test_works_inside_the_callers_transaction_and_leaves_no_temp_table(conn):
    load_members(conn, [member("c1", "crm", "r1", email="a@x.com")])
    conn.begin()
    assert survive_attributes(conn, "members", SurvivorshipConfig(), "golden", "provenance") == 1
    assert conn.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchone() == (0,)
    conn.rollback()
    assert conn.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name IN ('golden', 'provenance')"
    ).fetchone() == (0,)
    conn.begin()
    survive_attributes(conn, "members", SurvivorshipConfig(), "golden", "provenance")
    conn.commit()
    assert golden(conn, "c1")["email"] == "a@x.com"
