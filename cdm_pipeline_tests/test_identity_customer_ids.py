"""Stable customer ids: carried across runs through relabelling, merges, splits and erasures."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from cdm_pipeline.lib.identity.customer_ids import IdChanges, assign_stable_customer_ids

T1 = dt.datetime(2026, 10, 1, 2, 0, tzinfo=dt.timezone.utc)
T2 = dt.datetime(2026, 10, 2, 2, 0, tzinfo=dt.timezone.utc)
T3 = dt.datetime(2026, 10, 3, 2, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def conn(tmp_path):
    connection = duckdb.connect(str(tmp_path / "w.duckdb"))
    connection.execute("SET TimeZone = 'UTC'")
    yield connection
    connection.close()


def run(conn, clusters: dict[int, list[str]], run_id: str, at: dt.datetime = T1) -> IdChanges:
    """One run on ``{cluster_id: ["source:record", ...]}``."""
    rows = [
        (member.split(":")[0], member.split(":")[1], cluster_id)
        for cluster_id, members in clusters.items()
        for member in members
    ]
    conn.execute(
        "CREATE OR REPLACE TABLE clusters_in"
        " (source_name VARCHAR, source_record_id VARCHAR, cluster_id BIGINT)"
    )
    if rows:
        conn.executemany("INSERT INTO clusters_in VALUES (?, ?, ?)", rows)
    return assign_stable_customer_ids(conn, "main.clusters_in", run_id, at)


def ids(conn) -> dict[str, str]:
    rows = conn.execute(
        "SELECT source_name || ':' || source_record_id, customer_id"
        " FROM identity.customer_id_assignments"
    ).fetchall()
    return dict(rows)


def registry(conn) -> dict[str, tuple]:
    rows = conn.execute(
        "SELECT customer_id, seq, status, merged_into, issued_run_id, last_run_id"
        " FROM identity.customer_id_registry"
    ).fetchall()
    return {row[0]: row[1:] for row in rows}


def changes(conn, run_id: str) -> list[tuple]:
    return conn.execute(
        "SELECT change, customer_id, related_customer_id, records"
        " FROM identity.customer_id_changes WHERE run_id = ? ORDER BY change, customer_id",
        [run_id],
    ).fetchall()


def cid(seq: int) -> str:
    return f"CUST-{seq:010d}"


def test_first_run_issues_sequential_ids_in_order_of_smallest_member(conn):
    # Cluster labels deliberately disagree with the member order.
    result = run(
        conn, {30: ["web:9", "crm:2"], 10: ["web:1"], 20: ["crm:1", "email:5", "crm:3"]}, "r1"
    )

    assert result == IdChanges(new=3, merged=0, split=0, retired=0, unchanged=0, customers=3)
    assert ids(conn) == {
        "crm:1": cid(1), "email:5": cid(1), "crm:3": cid(1),
        "crm:2": cid(2), "web:9": cid(2),
        "web:1": cid(3),
    }
    assert changes(conn, "r1") == [
        ("new", cid(1), None, 3), ("new", cid(2), None, 2), ("new", cid(3), None, 1),
    ]
    assert registry(conn)[cid(1)] == (1, "active", None, "r1", "r1")


def test_rerun_with_relabelled_clusters_keeps_ids_and_records_no_changes(conn):
    run(conn, {1: ["crm:1", "crm:2"], 2: ["crm:3"], 3: ["web:1", "web:2", "email:1"]}, "r1")
    before = ids(conn)

    relabelled = {903: ["crm:2", "crm:1"], 901: ["crm:3"], 902: ["email:1", "web:1", "web:2"]}
    result = run(conn, relabelled, "r2", T2)

    assert ids(conn) == before
    assert changes(conn, "r2") == []
    assert result == IdChanges(new=0, merged=0, split=0, retired=0, unchanged=3, customers=3)
    assert {row[4] for row in registry(conn).values()} == {"r2"}  # last_run_id moved on


def test_merge_keeps_the_oldest_id_even_when_it_is_the_smaller_part(conn):
    run(conn, {1: ["crm:1"], 2: ["crm:2", "crm:3"]}, "r1")  # crm:1 sorts first: CUST-1 is oldest

    result = run(conn, {7: ["crm:1", "crm:2", "crm:3"]}, "r2", T2)

    assert result == IdChanges(new=0, merged=1, split=0, retired=0, unchanged=0, customers=1)
    assert set(ids(conn).values()) == {cid(1)}
    assert changes(conn, "r2") == [("merged", cid(2), cid(1), 2)]
    assert registry(conn)[cid(2)] == (2, "merged", cid(1), "r1", "r1")  # last_run_id stays r1
    assert registry(conn)[cid(1)][1:] == ("active", None, "r1", "r2")


def test_split_keeps_the_id_for_the_larger_part_and_relates_the_new_id_to_it(conn):
    run(conn, {1: ["crm:1", "crm:2", "crm:3"]}, "r1")

    # The smaller part holds the smallest member, so size, not order, must decide.
    result = run(conn, {5: ["crm:1"], 6: ["crm:2", "crm:3"]}, "r2", T2)

    assert result == IdChanges(new=0, merged=0, split=1, retired=0, unchanged=0, customers=2)
    assert ids(conn) == {"crm:1": cid(2), "crm:2": cid(1), "crm:3": cid(1)}
    assert changes(conn, "r2") == [("split", cid(2), cid(1), 1)]
    assert registry(conn)[cid(2)] == (2, "active", None, "r2", "r2")


def test_split_into_equal_parts_keeps_the_id_for_the_part_with_the_smallest_member(conn):
    run(conn, {1: ["crm:1", "crm:2", "web:1", "web:2"]}, "r1")

    run(conn, {8: ["web:1", "crm:2"], 9: ["web:2", "crm:1"]}, "r2", T2)

    assert ids(conn) == {"crm:1": cid(1), "web:2": cid(1), "crm:2": cid(2), "web:1": cid(2)}
    assert changes(conn, "r2") == [("split", cid(2), cid(1), 2)]


def test_three_way_merge_keeps_the_oldest_id(conn):
    run(conn, {1: ["a:1"], 2: ["b:1", "b:2"], 3: ["c:1", "c:2", "c:3"]}, "r1")

    result = run(conn, {4: ["c:3", "b:1", "a:1", "c:1", "b:2", "c:2"]}, "r2", T2)

    assert result == IdChanges(new=0, merged=2, split=0, retired=0, unchanged=0, customers=1)
    assert set(ids(conn).values()) == {cid(1)}
    assert changes(conn, "r2") == [("merged", cid(2), cid(1), 2), ("merged", cid(3), cid(1), 3)]


def test_merge_and_split_in_the_same_run(conn):
    run(conn, {1: ["a:1", "a:2", "a:3"], 2: ["b:1"]}, "r1")  # CUST-1 = a's, CUST-2 = b:1

    # a:3 leaves CUST-1 while b:1 joins it.
    result = run(conn, {5: ["a:1", "a:2", "b:1"], 6: ["a:3"]}, "r2", T2)

    assert result == IdChanges(new=0, merged=1, split=1, retired=0, unchanged=0, customers=2)
    assert ids(conn) == {"a:1": cid(1), "a:2": cid(1), "b:1": cid(1), "a:3": cid(3)}
    assert changes(conn, "r2") == [("merged", cid(2), cid(1), 1), ("split", cid(3), cid(1), 1)]


def test_split_part_from_several_ids_relates_to_the_biggest_contributor_then_the_oldest(conn):
    run(conn, {1: ["a:1", "a:2", "a:3"], 2: ["b:1", "b:2", "b:3", "b:4", "b:5"],
               3: ["c:1", "c:2", "c:3"], 4: ["d:1", "d:2", "d:3", "d:4"]}, "r1")

    run(conn, {
        10: ["a:1", "a:2"], 11: ["b:1", "b:2", "b:3"],
        12: ["a:3", "b:4", "b:5"],  # 1 record of CUST-1, 2 of CUST-2: relates to CUST-2
        13: ["c:1", "c:2"], 14: ["d:1", "d:2", "d:3"],
        15: ["c:3", "d:4"],  # 1 record each of CUST-3 and CUST-4: relates to the older CUST-3
    }, "r2", T2)

    assert changes(conn, "r2") == [("split", cid(5), cid(2), 3), ("split", cid(6), cid(3), 2)]
    assert ids(conn)["a:3"] == cid(5) and ids(conn)["c:3"] == cid(6)


def test_cluster_of_unseen_records_gets_a_new_id_continuing_the_sequence(conn):
    run(conn, {1: ["crm:5"], 2: ["crm:7"]}, "r1")

    result = run(conn, {3: ["crm:5"], 4: ["crm:7"], 5: ["web:2", "crm:9"], 6: ["crm:0"]}, "r2", T2)

    assert result == IdChanges(new=2, merged=0, split=0, retired=0, unchanged=2, customers=4)
    # Numbered in order of smallest member: crm:0 before crm:9.
    assert ids(conn) == {"crm:5": cid(1), "crm:7": cid(2), "crm:0": cid(3), "crm:9": cid(4),
                         "web:2": cid(4)}
    assert changes(conn, "r2") == [("new", cid(3), None, 1), ("new", cid(4), None, 2)]


def test_records_disappearing_retire_the_id(conn):
    run(conn, {1: ["crm:1", "crm:2"], 2: ["crm:3"]}, "r1")

    result = run(conn, {9: ["crm:3"]}, "r2", T2)

    assert result == IdChanges(new=0, merged=0, split=0, retired=1, unchanged=1, customers=1)
    assert changes(conn, "r2") == [("retired", cid(1), None, 0)]
    assert registry(conn)[cid(1)] == (1, "retired", None, "r1", "r1")
    status_changed_at = conn.execute(
        "SELECT status_changed_at FROM identity.customer_id_registry WHERE customer_id = ?",
        [cid(1)],
    ).fetchone()[0]
    assert status_changed_at == T2


def test_every_record_erased_retires_every_id(conn):
    run(conn, {1: ["crm:1"], 2: ["crm:2"]}, "r1")

    result = run(conn, {}, "r2", T2)

    assert result == IdChanges(new=0, merged=0, split=0, retired=2, unchanged=0, customers=0)
    assert ids(conn) == {}


def test_merged_id_is_never_reused_and_its_records_split_off_later_relate_to_the_survivor(conn):
    run(conn, {1: ["a:1", "a:2"], 2: ["b:1", "b:2"]}, "r1")
    run(conn, {3: ["a:1", "a:2", "b:1", "b:2"]}, "r2", T2)  # CUST-2 merged into CUST-1

    # The original separation comes back: b's records must not revive CUST-2.
    result = run(conn, {4: ["a:1", "a:2"], 5: ["b:1", "b:2"]}, "r3", T3)

    assert result == IdChanges(new=0, merged=0, split=1, retired=0, unchanged=0, customers=2)
    assert ids(conn) == {"a:1": cid(1), "a:2": cid(1), "b:1": cid(3), "b:2": cid(3)}
    assert changes(conn, "r3") == [("split", cid(3), cid(1), 2)]
    assert registry(conn)[cid(2)][1:3] == ("merged", cid(1))


def test_retired_id_is_not_revived_when_its_records_come_back(conn):
    run(conn, {1: ["crm:1"], 2: ["crm:2"]}, "r1")
    run(conn, {1: ["crm:2"]}, "r2", T2)  # CUST-1 retired

    run(conn, {1: ["crm:1"], 2: ["crm:2"]}, "r3", T3)

    assert ids(conn) == {"crm:1": cid(3), "crm:2": cid(2)}
    assert changes(conn, "r3") == [("new", cid(3), None, 1)]
    assert registry(conn)[cid(1)][1] == "retired"


def test_identical_inputs_in_two_fresh_warehouses_give_identical_ids(tmp_path):
    nights = [
        ({1: ["crm:1", "web:1"], 2: ["crm:2"], 3: ["email:1", "web:3"]}, "r1"),
        ({5: ["crm:1"], 6: ["web:1", "crm:2"], 7: ["email:1", "web:3", "web:4"]}, "r2"),
    ]
    results = []
    for name in ("a.duckdb", "b.duckdb"):
        connection = duckdb.connect(str(tmp_path / name))
        for clusters, run_id in nights:
            run(connection, clusters, run_id)
        results.append((ids(connection), registry(connection), changes(connection, "r2")))
        connection.close()

    assert results[0] == results[1]


def test_runs_inside_the_callers_transaction_and_rolls_back_with_it(conn):
    run(conn, {1: ["crm:1"]}, "r1")

    conn.begin()
    run(conn, {1: ["crm:1", "crm:2"], 2: ["crm:3"]}, "r2", T2)
    conn.rollback()

    assert ids(conn) == {"crm:1": cid(1)}
    assert changes(conn, "r2") == []
    assert list(registry(conn)) == [cid(1)]

    conn.begin()
    run(conn, {1: ["crm:1", "crm:2"], 2: ["crm:3"]}, "r2", T2)
    conn.commit()
    assert ids(conn) == {"crm:1": cid(1), "crm:2": cid(1), "crm:3": cid(2)}


def test_leaves_no_temp_tables_behind(conn):
    run(conn, {1: ["crm:1"]}, "r1")

    temporary = conn.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
    assert temporary == []


def test_record_in_two_clusters_is_rejected(conn):
    conn.execute("CREATE TABLE dup AS SELECT * FROM (VALUES ('crm', '1', 1), ('crm', '1', 2))"
                 " AS t(source_name, source_record_id, cluster_id)")

    with pytest.raises(ValueError, match="duplicate"):
        assign_stable_customer_ids(conn, "main.dup", "r1", T1)


def test_200k_records_get_one_id_per_cluster_and_survive_a_relabelled_merging_run(conn):
    conn.execute("""
        CREATE TABLE big AS
        SELECT CASE WHEN i % 2 = 0 THEN 'crm' ELSE 'web' END AS source_name,
               lpad(i::VARCHAR, 7, '0') AS source_record_id, (i // 4)::BIGINT AS cluster_id
        FROM range(200000) AS t(i)""")
    first = assign_stable_customer_ids(conn, "main.big", "r1", T1)
    assert first == IdChanges(new=50000, merged=0, split=0, retired=0, unchanged=0,
                              customers=50000)

    # Relabel everything and merge clusters pairwise.
    conn.execute("CREATE TABLE big2 AS SELECT source_name, source_record_id,"
                 " 1000000 - cluster_id // 2 AS cluster_id FROM big")
    second = assign_stable_customer_ids(conn, "main.big2", "r2", T2)

    assert second == IdChanges(new=0, merged=25000, split=0, retired=0, unchanged=0,
                               customers=25000)
    assert conn.execute(
        "SELECT count(*), count(DISTINCT customer_id) FROM identity.customer_id_assignments"
    ).fetchone() == (200000, 25000)
