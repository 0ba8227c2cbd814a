"""Journey events, sessions, stitching and attribution on hand-made data with known answers."""

from __future__ import annotations

import pytest

from cdm_pipeline_tests.marts_fixtures import AS_OF, at, days_before, marts_warehouse

GOOGLE_CPC = ("google", "cpc", "brand")
NEWSLETTER = ("newsletter", "email", "autumn_news")


def _person(w, n: int, **values):
    """CRM contact c<n> with e-mail p<n>@example.org, an ESP subscriber s<n> linked to it."""
    email = f"p{n}@shop-test.org"
    w.contact(f"c{n}", email=email, first_name=f"First{n}", last_name="Tester", day=days_before(60), **values)
    w.contact(f"s{n}", source="email_subscribers", email=email, linked_id=f"c{n}", day=days_before(60))


def _sessions(w, customer):
    return w.rows(
        """SELECT session_id, count(*), min(occurred_at), max(occurred_at)
        FROM marts.customer_journey_events WHERE customer_id = ? AND event_kind = 'web'
        GROUP BY session_id ORDER BY 3""",
        [customer],
    )


def test_sessions_break_after_thirty_minutes_of_inactivity_not_at_midnight(tmp_path):
    w = marts_warehouse(tmp_path)
    _person(w, 1)
    day = days_before(3)
    for minute in (0, 20, 49):  # 20 and 29 minutes apart: one session
        w.web_event("b1", at(day, 10, minute), user_id="c1")
    w.web_event("b1", at(day, 11, 20), user_id="c1")  # 31 minutes later: a new session
    w.web_event("b1", at(day, 23, 50), user_id="c1")
    w.web_event("b1", at(day, 23, 50).replace(day=day.day + 1, hour=0, minute=10), user_id="c1")  # after midnight
    w.build()
    sessions = _sessions(w, w.customer_of("crm_contacts", "c1"))
    assert [count for _, count, _, _ in sessions] == [3, 1, 2]
    # The session spanning midnight is one session, and it is one touch.
    last = sessions[2]
    assert last[2].date() == day and last[3].date() == days_before(2)
    touches = w.rows("SELECT count(*) FROM marts.customer_journey_events WHERE is_touch")
    assert touches == [(3,)]


def test_session_timeout_is_configurable(tmp_path):
    w = marts_warehouse(tmp_path, marts={"session_timeout_minutes": 45})
    _person(w, 1)
    day = days_before(3)
    for hour, minute in ((10, 0), (10, 40), (11, 20), (12, 30)):  # gaps 40, 40, 70 minutes
        w.web_event("b1", at(day, hour, minute), user_id="c1")
    w.build()
    assert [n for _, n, _, _ in _sessions(w, w.customer_of("crm_contacts", "c1"))] == [3, 1]


def test_anonymous_events_before_a_login_are_attributed_once_the_browser_is_stitched(tmp_path):
    w = marts_warehouse(tmp_path)
    _person(w, 1)
    early = [w.web_event("b1", at(days_before(20), 9)), w.web_event("b1", at(days_before(20), 9, 5), "add_to_cart")]
    w.web_event("b9", at(days_before(20), 9))  # a browser never seen with a login: stays anonymous
    w.build()
    assert w.rows("SELECT count(*) FROM marts.customer_journey_events WHERE event_kind = 'web'") == [(0,)]

    # Days later the same browser logs in: its earlier, anonymous events now belong to c1.
    w.web_event("b1", at(days_before(2), 18), "login", user_id="c1")
    summary = w.build("run-2")
    customer = w.customer_of("crm_contacts", "c1")
    attributed = dict(w.rows(
        "SELECT source_record_id, attributed_by FROM marts.customer_journey_events"
        " WHERE customer_id = ? AND event_kind = 'web'", [customer],
    ))
    assert attributed[early[0]] == attributed[early[1]] == "client_id"
    assert sorted(attributed.values()) == ["client_id", "client_id", "user_id"]
    assert summary.events.unattributed_web_events == 1
    journey = w.rows(
        "SELECT first_touch_at, funnel_stage, sessions FROM marts.customer_journeys WHERE customer_id = ?",
        [customer],
    )
    assert journey == [(at(days_before(20), 9), "cart", 2)]


def test_channels_come_from_the_landing_event_of_each_session(tmp_path):
    w = marts_warehouse(tmp_path)
    _person(w, 1)
    w.web_event("b1", at(days_before(9), 10), user_id="c1", utm=GOOGLE_CPC)
    w.web_event("b1", at(days_before(9), 10, 5), user_id="c1")  # same session, no tags: still paid_search
    w.web_event("b1", at(days_before(8), 10), user_id="c1", referrer="https://www.google.co.uk/")
    w.web_event("b1", at(days_before(7), 10), user_id="c1", referrer="https://l.facebook.com/x")
    w.web_event("b1", at(days_before(6), 10), user_id="c1", referrer="https://blog.example.net/post")
    w.web_event("b1", at(days_before(5), 10), user_id="c1")
    w.web_event("b1", at(days_before(4), 10), user_id="c1", utm=NEWSLETTER)
    w.build()
    rows = w.rows(
        "SELECT channel, campaign, touch_sequence FROM marts.customer_journey_events"
        " WHERE is_touch ORDER BY touch_sequence"
    )
    assert rows == [
        ("paid_search", "brand", 1), ("organic_search", None, 2), ("organic_social", None, 3),
        ("referral", None, 4), ("direct", None, 5), ("email", "autumn_news", 6),
    ]
    assert w.rows("SELECT DISTINCT channel FROM marts.customer_journey_events WHERE event_kind = 'web'"
                  " AND session_id = (SELECT min(session_id) FROM marts.customer_journey_events"
                  " WHERE campaign = 'brand')") == [("paid_search",)]


def test_an_email_click_that_opens_a_session_is_one_touch_not_two(tmp_path):
    w = marts_warehouse(tmp_path)
    _person(w, 1)
    click = at(days_before(5), 8)
    w.email_event("s1", "click", click)
    w.web_event("b1", at(days_before(5), 8, 1), user_id="c1", utm=NEWSLETTER)  # the landing session
    w.email_event("s1", "click", at(days_before(3), 8))  # no session follows (another device)
    w.email_event("s1", "open", at(days_before(3), 7))
    w.build()
    touches = w.rows(
        "SELECT event_kind, event_type, occurred_at FROM marts.customer_journey_events"
        " WHERE is_touch ORDER BY occurred_at"
    )
    assert touches == [("web", "page_view", at(days_before(5), 8, 1)), ("email", "click", at(days_before(3), 8))]


def _attribution(w, order_id):
    return {
        model: [(channel, round(weight, 9)) for channel, weight in rows]
        for model, rows in _group(w.rows(
            "SELECT model, channel, weight FROM marts.order_attribution WHERE order_id = ?"
            " ORDER BY model, touch_position", [order_id],
        )).items()
    }


def _group(rows):
    grouped: dict[str, list] = {}
    for model, *rest in rows:
        grouped.setdefault(model, []).append(tuple(rest))
    return grouped


def test_attribution_weights_per_model_over_a_four_touch_path(tmp_path):
    w = marts_warehouse(tmp_path)
    _person(w, 1)
    ordered = at(days_before(1), 15)
    w.web_event("b1", at(days_before(40), 9), user_id="c1", utm=("bing", "cpc", "old"))  # outside 30 days
    w.web_event("b1", at(days_before(20), 9), user_id="c1", utm=GOOGLE_CPC)
    w.email_event("s1", "click", at(days_before(10), 9))
    w.web_event("b1", at(days_before(5), 9), user_id="c1", referrer="https://www.bing.com/")
    w.web_event("b1", at(days_before(1), 14), user_id="c1")
    w.web_event("b1", at(days_before(1), 14, 30), "purchase", user_id="c1", transaction_id="o1")
    w.web_event("b1", at(days_before(1), 16), user_id="c1", utm=GOOGLE_CPC)  # after the order: no credit
    w.order("o1", "c1", ordered, 200.0)
    w.build()
    assert _attribution(w, "o1") == {
        "first_touch": [("paid_search", 1.0), ("email", 0.0), ("organic_search", 0.0), ("direct", 0.0)],
        "last_touch": [("paid_search", 0.0), ("email", 0.0), ("organic_search", 0.0), ("direct", 1.0)],
        "linear": [("paid_search", 0.25), ("email", 0.25), ("organic_search", 0.25), ("direct", 0.25)],
        "position_based": [("paid_search", 0.4), ("email", 0.1), ("organic_search", 0.1), ("direct", 0.4)],
    }
    revenue = w.rows(
        "SELECT model, sum(attributed_revenue) FROM marts.order_attribution GROUP BY 1 ORDER BY 1"
    )
    assert [(m, pytest.approx(r)) for m, r in revenue] == [
        ("first_touch", 200.0), ("last_touch", 200.0), ("linear", 200.0), ("position_based", 200.0)
    ]


def test_attribution_with_two_one_and_no_touches(tmp_path):
    w = marts_warehouse(tmp_path, marts={"attribution_lookback_days": 7})
    for n in (1, 2, 3):
        _person(w, n)
    w.web_event("b1", at(days_before(6), 9), user_id="c1", utm=GOOGLE_CPC)
    w.web_event("b1", at(days_before(2), 9), user_id="c1")
    w.order("o1", "c1", at(days_before(2), 10), 50.0)
    w.web_event("b2", at(days_before(11), 9), user_id="c2")  # 8 days before: outside the 7-day lookback
    w.web_event("b2", at(days_before(3), 9), user_id="c2", utm=GOOGLE_CPC)
    w.order("o2", "c2", at(days_before(3), 9, 30), 20.0)
    w.order("o3", "c3", at(days_before(3), 9, 30), 10.0, channel="store")
    w.build()
    assert _attribution(w, "o1")["position_based"] == [("paid_search", 0.5), ("direct", 0.5)]
    assert _attribution(w, "o1")["linear"] == [("paid_search", 0.5), ("direct", 0.5)]
    assert _attribution(w, "o2") == {m: [("paid_search", 1.0)] for m in
                                     ("first_touch", "last_touch", "linear", "position_based")}
    assert _attribution(w, "o3") == {m: [("no_touch", 1.0)] for m in
                                     ("first_touch", "last_touch", "linear", "position_based")}
    sums = w.rows(
        "SELECT DISTINCT round(s, 9) FROM"
        " (SELECT sum(weight) s FROM marts.order_attribution GROUP BY order_id, model)"
    )
    assert sums == [(1.0,)]


def test_cancelled_orders_are_not_attributed_and_currencies_are_converted(tmp_path):
    w = marts_warehouse(tmp_path, marts={"currency": "GBP", "exchange_rates": {"EUR": 0.5}})
    _person(w, 1)
    w.order("o1", "c1", at(days_before(5)), 100.0, currency="EUR")
    w.order("o2", "c1", at(days_before(4)), 30.0, status="cancelled")
    w.order("o3", "c1", at(days_before(3)), 10.0, currency="GBP")
    w.order("o4", "c1", at(days_before(2)), 7.0, currency="JPY")  # no rate: counted, no revenue
    summary = w.build()
    assert w.rows("SELECT DISTINCT order_id FROM marts.order_attribution ORDER BY 1") == [("o1",), ("o3",), ("o4",)]
    assert w.rows(
        "SELECT order_id, revenue FROM marts.customer_journey_events WHERE event_kind = 'order' ORDER BY 1"
    ) == [("o1", 50.0), ("o2", None), ("o3", 10.0), ("o4", None)]
    assert summary.events.orders_without_rate == 1
    assert w.rows("SELECT order_count, revenue, average_order_value FROM marts.customer_360") == [(3, 60.0, 30.0)]


def test_an_event_landing_days_late_is_picked_up_the_next_night(tmp_path):
    w = marts_warehouse(tmp_path)
    _person(w, 1)
    w.order("o1", "c1", at(days_before(3), 12), 80.0)
    w.web_event("b1", at(days_before(3), 11), user_id="c1", utm=GOOGLE_CPC)
    w.build()
    assert _attribution(w, "o1")["first_touch"] == [("paid_search", 1.0)]
    # An e-mail click of four days ago is exported three days late, in today's partition.
    w.email_event("s1", "click", at(days_before(4), 11), landed=AS_OF)
    w.build("run-2")
    assert _attribution(w, "o1")["first_touch"] == [("email", 1.0), ("paid_search", 0.0)]
    assert _attribution(w, "o1")["linear"] == [("email", 0.5), ("paid_search", 0.5)]
