"""Customer 360, RFM, lifecycle, engagement, custom segments, history and exports on known data."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from cdm_pipeline.lib.exports.audiences import resolve_segment, write_audience_export
from cdm_pipeline.lib.marts import build as marts_build
from cdm_pipeline.lib.marts.vocabulary import CUSTOMER_360_COLUMNS
from cdm_pipeline_tests.marts_fixtures import AS_OF, at, days_before, marts_warehouse

MARTS = ("customer_journey_events", "customer_journeys", "order_attribution", "customer_360",
         "customer_segments", "segment_membership_history")


def _crm(w, n: int, *, day: dt.date | None = None, **values):
    values.setdefault("email", f"p{n}@shop-test.org")
    w.contact(f"c{n}", first_name=f"First{n}", last_name="Tester", day=day or days_before(400), **values)


def _orders(w, n: int, days_ago: list[int], amount: float):
    for ago in days_ago:
        w.order(f"o{n}_{ago}", f"c{n}", at(days_before(ago)), amount)


def _rfm_population(w):
    """Five buyers whose recency, frequency and monetary value all differ, and a prospect."""
    for n in range(1, 6):
        _crm(w, n)
    _orders(w, 1, [1, 50, 100, 150, 200], 200.0)  # R 1 day, F 5, M 1000
    _orders(w, 2, [10], 10.0)  # R 10, F 1, M 10
    _orders(w, 3, [50, 60, 70], 100.0)  # R 50, F 3, M 300
    _orders(w, 4, [100, 120, 140, 160], 200.0)  # R 100, F 4, M 800
    _orders(w, 5, [200, 300], 25.0)  # R 200, F 2, M 50
    _orders(w, 5, [400], 1000.0)  # outside the 365-day RFM window
    _crm(w, 0, day=AS_OF)  # a prospect; its landing day makes AS_OF the as-of date


def _segments(w):
    return {
        w.customer_of("crm_contacts", f"c{n}"): n for n in range(0, 10)
        if w.rows("SELECT 1 FROM identity.customer_xref WHERE source_record_id = ?", [f"c{n}"])
    }


def _by_contact(w, sql):
    ids = _segments(w)
    return {ids[row[0]]: row[1:] for row in w.rows(sql)}


def test_rfm_scores_are_quintiles_with_recency_inverted_and_named_segments(tmp_path):
    w = marts_warehouse(tmp_path)
    _rfm_population(w)
    summary = w.build()
    assert summary.as_of == AS_OF
    rows = _by_contact(w, """SELECT customer_id, recency_days, frequency, monetary, recency_score,
        frequency_score, monetary_score, rfm_score, rfm_segment FROM marts.customer_segments""")
    assert rows == {
        1: (1, 5, 1000.0, 5, 5, 5, "555", "Champions"),
        2: (10, 1, 10.0, 4, 1, 1, "411", "Promising"),
        3: (50, 3, 300.0, 3, 3, 3, "333", "Need Attention"),
        4: (100, 4, 800.0, 2, 4, 4, "244", "At Risk"),
        5: (200, 2, 50.0, 1, 2, 2, "122", "Lost"),
        0: (None, None, None, None, None, None, None, None),
    }


def test_rfm_ties_share_the_lower_score(tmp_path):
    w = marts_warehouse(tmp_path)
    for n in range(1, 5):
        _crm(w, n)
    _orders(w, 1, [5], 10.0)
    _orders(w, 2, [6], 10.0)
    _orders(w, 3, [7], 10.0)
    _orders(w, 4, [8, 9], 10.0)
    _crm(w, 0, day=AS_OF)
    w.build()
    scores = _by_contact(w, "SELECT customer_id, frequency_score, monetary_score FROM marts.customer_segments")
    # Ranks 1, 1, 1, 4 of 4: 1 + floor(5 * 0 / 4) = 1 and 1 + floor(5 * 3 / 4) = 4.
    assert scores == {1: (1, 1), 2: (1, 1), 3: (1, 1), 4: (4, 4), 0: (None, None)}


def test_lifecycle_stages_from_day_thresholds(tmp_path):
    w = marts_warehouse(tmp_path)
    _rfm_population(w)
    w.build()
    stages = _by_contact(w, "SELECT customer_id, lifecycle_stage FROM marts.customer_segments")
    assert stages == {1: ("active",), 2: ("new",), 3: ("active",), 4: ("at_risk",), 5: ("lapsed",),
                      0: ("prospect",)}


def test_lifecycle_transitions_are_kept_in_membership_history(tmp_path):
    w = marts_warehouse(tmp_path)
    first_order = dt.date(2025, 1, 1)
    _crm(w, 1, day=first_order)
    w.order("o1", "c1", at(first_order), 40.0)
    expected_stage = {10: "new", 40: "active", 100: "at_risk", 200: "lapsed", 400: "churned"}
    for offset in expected_stage:
        # Another person's record landing that day moves the as-of date on.
        _crm(w, 2, day=first_order + dt.timedelta(days=offset))
        summary = w.build(f"run-{offset}")
        assert summary.as_of == first_order + dt.timedelta(days=offset)
        stage = _by_contact(w, "SELECT customer_id, lifecycle_stage FROM marts.customer_segments")[1]
        assert stage == (expected_stage[offset],)
    customer = w.customer_of("crm_contacts", "c1")
    history = w.rows(
        """SELECT segment, entered_on, exited_on FROM marts.segment_membership_history
        WHERE customer_id = ? AND segment_type = 'lifecycle' ORDER BY entered_on""", [customer],
    )
    day = {offset: first_order + dt.timedelta(days=offset) for offset in expected_stage}
    assert history == [
        ("new", day[10], day[40]), ("active", day[40], day[100]), ("at_risk", day[100], day[200]),
        ("lapsed", day[200], day[400]), ("churned", day[400], None),
    ]
    # Re-running the last night changes nothing.
    before = w.rows("SELECT * FROM marts.segment_membership_history ORDER BY ALL")
    w.build("run-again")
    assert w.rows("SELECT * FROM marts.segment_membership_history ORDER BY ALL") == before


def test_who_became_at_risk_this_week_is_one_query(tmp_path):
    w = marts_warehouse(tmp_path)
    _crm(w, 1)
    _crm(w, 2)
    w.order("o1", "c1", at(days_before(95)), 10.0)  # at risk since 5 days ago (90 days)
    w.order("o2", "c2", at(days_before(85)), 10.0)  # still active
    _crm(w, 3, day=days_before(7))
    w.build("run-1")
    _crm(w, 3, day=AS_OF)
    w.build("run-2")
    became = w.rows(
        """SELECT customer_id FROM marts.segment_membership_history
        WHERE segment_type = 'lifecycle' AND segment = 'at_risk' AND entered_on > ? - 7""", [AS_OF],
    )
    assert became == [(w.customer_of("crm_contacts", "c1"),)]


def test_engagement_tiers(tmp_path):
    w = marts_warehouse(tmp_path)
    for n in range(1, 5):
        _crm(w, n)
        w.contact(f"s{n}", source="email_subscribers", email=f"p{n}@shop-test.org", linked_id=f"c{n}",
                  day=days_before(400))
    w.email_event("s1", "click", at(days_before(3)))
    w.email_event("s2", "open", at(days_before(60)))
    w.email_event("s3", "sent", at(days_before(60)))
    _crm(w, 0, day=AS_OF)
    w.build()
    tiers = _by_contact(w, "SELECT customer_id, engagement_tier FROM marts.customer_segments")
    assert tiers == {1: ("highly_engaged",), 2: ("engaged",), 3: ("disengaged",), 4: ("inactive",),
                     0: ("inactive",)}


def test_custom_segments_from_the_config(tmp_path):
    w = marts_warehouse(tmp_path, segments=[
        {"name": "big_active", "where": "revenue >= 300 and lifecycle_stage = 'active'"},
        {"name": "few_orders", "where": "order_count between 1 and 2 or rfm_segment = 'At Risk'"},
    ])
    _rfm_population(w)
    w.build()
    custom = _by_contact(w, "SELECT customer_id, custom_segments FROM marts.customer_segments")
    assert custom == {1: (["big_active"],), 2: (["few_orders"],), 3: (["big_active"],),
                      4: (["few_orders"],), 5: ([],), 0: ([],)}
    # Customer 5 ordered three times in all (one outside the RFM window): not "few".
    assert w.rows("SELECT count(*) FROM marts.segment_membership_history WHERE segment_type = 'custom'") == [(4,)]


def test_customer_360_figures(tmp_path):
    w = marts_warehouse(tmp_path)
    _crm(w, 1, email_opt_in=True, updated_at=at(days_before(400)))
    w.contact("s1", source="email_subscribers", email="p1@shop-test.org", linked_id="c1", day=days_before(300))
    _crm(w, 2)
    _orders(w, 1, [3, 20], 30.0)
    w.order("o1_x", "c1", at(days_before(2)), 500.0, status="refunded")
    for ago, kind in ((5, "sent"), (5, "open"), (40, "sent"), (40, "click"), (100, "sent")):
        w.email_event("s1", kind, at(days_before(ago)))
    w.email_event("s1", "bounce", at(days_before(1)), bounce_type="soft")
    w.web_event("b1", at(days_before(6), 10), user_id="c1")
    w.web_event("b1", at(days_before(6), 10, 5), "add_to_cart", user_id="c1")  # abandoned
    w.web_event("b1", at(days_before(3), 10), user_id="c1")
    w.web_event("b1", at(days_before(3), 10, 5), "add_to_cart", user_id="c1")
    w.web_event("b1", at(days_before(3), 10, 9), "purchase", user_id="c1", transaction_id="o1_3")
    _crm(w, 0, day=AS_OF)
    w.build()
    rows = w.rows("SELECT * FROM marts.customer_360 WHERE customer_id = ?", [w.customer_of("crm_contacts", "c1")])
    row = dict(zip(CUSTOMER_360_COLUMNS, rows[0], strict=True))
    assert sorted(row["source_systems"]) == ["crm", "email", "web"]
    assert (row["order_count"], row["revenue"], row["average_order_value"]) == (2, 60.0, 30.0)
    assert (row["first_order_date"], row["last_order_date"], row["days_since_last_order"]) == (
        days_before(20), days_before(3), 3)
    assert [row[f"emails_{k}"] for k in ("sent_30d", "opened_30d", "clicked_30d", "sent_90d", "opened_90d",
                                         "clicked_90d")] == [1, 1, 0, 2, 1, 1]
    assert (row["web_sessions"], row["web_sessions_30d"], row["page_views"], row["abandoned_carts"]) == (2, 2, 2, 1)
    assert row["last_visit_at"] == at(days_before(3), 10, 9)
    assert (row["email_opt_in"], row["email_unsubscribed"], row["email_bounced"], row["email_contactable"]) == (
        True, False, False, True)
    assert row["as_of_date"] == AS_OF
    # A golden customer with no activity still has its row.
    other = w.rows("SELECT order_count, revenue, web_sessions FROM marts.customer_360 WHERE customer_id = ?",
                   [w.customer_of("crm_contacts", "c2")])
    assert other == [(0, 0.0, 0)]
    assert w.rows("SELECT count(*) FROM marts.customer_360") == w.rows("SELECT count(*) FROM identity.golden_customers")


def test_consent_follows_the_most_recent_statement_from_any_source(tmp_path):
    w = marts_warehouse(tmp_path)
    # 1: opted in at the CRM, unsubscribed later by e-mail.
    _crm(w, 1, email_opt_in=True, updated_at=at(days_before(30)))
    w.contact("s1", source="email_subscribers", email="p1@shop-test.org", linked_id="c1", day=days_before(30))
    w.email_event("s1", "unsubscribe", at(days_before(10)))
    # 2: opted out at the CRM, subscribed at the ESP afterwards.
    _crm(w, 2, email_opt_in=False, updated_at=at(days_before(30)))
    w.contact("s2", source="email_subscribers", email="p2@shop-test.org", linked_id="c2",
              email_opt_in=True, updated_at=at(days_before(5)), day=days_before(5))
    # 3: two statements at the same instant: the opt-out wins.
    _crm(w, 3, email_opt_in=True, updated_at=at(days_before(10)))
    w.contact("s3", source="email_subscribers", email="p3@shop-test.org", linked_id="c3", day=days_before(30))
    w.email_event("s3", "unsubscribe", at(days_before(10)))
    # 4: do_not_sell set in a later version of the CRM record.
    _crm(w, 4, do_not_sell=False, updated_at=at(days_before(60)), day=days_before(60))
    _crm(w, 4, do_not_sell=True, updated_at=at(days_before(6)), day=days_before(6))
    _crm(w, 0, day=AS_OF)
    w.build()
    consent = _by_contact(
        w, "SELECT customer_id, email_opt_in, email_unsubscribed, do_not_sell FROM marts.customer_360"
    )
    assert consent[1] == (False, True, None)
    assert consent[2] == (True, False, None)
    assert consent[3] == (False, True, None)
    assert consent[4] == (None, False, True)


def test_audience_export_from_real_marts_honours_consent(tmp_path):
    w = marts_warehouse(tmp_path)
    for n, values in ((1, {"email_opt_in": True, "phone": "+447700900001"}),
                      (2, {"email_opt_in": False}),
                      (3, {"email_opt_in": True, "do_not_sell": True}),
                      (4, {})):
        _crm(w, n, updated_at=at(days_before(400)), **values)
        w.order(f"o{n}", f"c{n}", at(days_before(5)), 10.0)
    _crm(w, 0, day=AS_OF)
    w.build()
    export = write_audience_export(w.conn, w.config, resolve_segment(w.config, "lifecycle:new"))
    lines = export.path.read_text().splitlines()
    sha = lambda text: hashlib.sha256(text.encode()).hexdigest()  # noqa: E731
    assert lines == ["Email,Phone", f"{sha('p1@shop-test.org')},{sha('+447700900001')}"]
    assert (export.members, export.exported, export.excluded_no_consent) == (4, 1, 3)
    assert export.path == w.config.exports.dir / "lifecycle_new" / f"{AS_OF}.csv"


def test_rebuilding_gives_the_same_marts(tmp_path):
    w = marts_warehouse(tmp_path)
    _rfm_population(w)
    w.web_event("b1", at(days_before(1), 9), user_id="c1")
    w.build()
    before = {t: w.rows(f"SELECT * FROM marts.{t} ORDER BY ALL") for t in MARTS}
    w.build("run-2")
    assert {t: w.rows(f"SELECT * FROM marts.{t} ORDER BY ALL") for t in MARTS} == before


def test_a_failed_build_leaves_the_previous_marts_whole(tmp_path, monkeypatch):
    w = marts_warehouse(tmp_path)
    _rfm_population(w)
    w.build()
    before = {t: w.rows(f"SELECT * FROM marts.{t} ORDER BY ALL") for t in MARTS}
    _orders(w, 2, [2], 99.0)  # new data that would change several marts

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(marts_build, "build_customer_segments", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        w.build("run-2")
    assert {t: w.rows(f"SELECT * FROM marts.{t} ORDER BY ALL") for t in MARTS} == before


def test_history_follows_a_customer_id_merged_into_another(tmp_path):
    w = marts_warehouse(tmp_path)
    _crm(w, 1, email="one@shop-test.org")
    _crm(w, 2, email="two@shop-test.org")
    w.order("o1", "c1", at(days_before(40)), 10.0)
    w.order("o2", "c2", at(days_before(45)), 10.0)
    _crm(w, 9, day=days_before(7))
    w.build("run-1")
    first, second = w.customer_of("crm_contacts", "c1"), w.customer_of("crm_contacts", "c2")
    assert first != second
    # A subscriber record with c1's address that the ESP links to c2: one person after all.
    w.contact("s1", source="email_subscribers", email="one@shop-test.org", linked_id="c2", day=AS_OF)
    w.build("run-2")
    survivor = w.customer_of("crm_contacts", "c1")
    assert survivor == w.customer_of("crm_contacts", "c2") and survivor in (first, second)
    merged = second if survivor == first else first
    assert w.rows("SELECT count(*) FROM marts.segment_membership_history WHERE customer_id = ?", [merged]) == [(0,)]
    # Both ids were active customers since the first night: one open stay, entered then.
    assert w.rows(
        """SELECT segment, entered_on, exited_on FROM marts.segment_membership_history
        WHERE customer_id = ? AND segment_type = 'lifecycle'""", [survivor],
    ) == [("active", days_before(7), None)]
