"""The customer insights dashboard, from a hand-made marts warehouse whose figures are known.

The marts rows are written directly (no pipeline run), so every figure on the page can be worked
out by hand below; the page is parsed with the standard library's HTML parser.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from pathlib import Path

import duckdb
import pytest
import yaml

from cdm_pipeline.config import CdmConfig, load_config
from cdm_pipeline.lib.reports.insights_figures import email_engagement_figures
from cdm_pipeline.lib.reports.insights_report import write_insights_dashboard
from cdm_pipeline_tests.report_pages import Node, parse

AS_OF = dt.date(2026, 10, 31)
EARLIER = dt.date(2026, 10, 1)
NOW = dt.datetime(2026, 11, 1, 6, 30, tzinfo=dt.timezone.utc)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Personal-looking values of the fixture: none may reach the page.
PERSONAL = {
    "first_name": "Zelphinia", "last_name": "Quarrington", "email": "zelphinia.q@example.org",
    "phone": "+447700900123", "address_line1": "17 Wisteria Crescent",
}


def _customer_id(n: int) -> str:
    return f"cust-9f{n:02d}"


# (customer, source_systems, order_count, revenue, email_contactable)
CUSTOMERS = [
    (1, ["crm"], 3, 300.0, False),
    (2, ["crm"], 1, 50.0, False),
    (3, ["crm"], 0, 0.0, False),
    (4, ["email"], 2, 120.0, True),
    (5, ["email"], 0, 0.0, True),
    (6, ["web"], 0, 0.0, False),
    (7, ["crm", "email"], 1, 80.0, True),
    (8, ["email", "crm"], 5, 1000.0, False),  # unsorted: the same combination as customer 7
    (9, ["crm", "email"], 1, 40.0, False),
    (10, ["crm", "web"], 0, 0.0, False),
    (11, ["crm", "email", "web"], 0, 0.0, True),
    (12, ["crm", "email", "crm"], 0, 0.0, False),  # a repeated system counts once
]

# (customer, recency_score, frequency_score, monetary); customer 9 ordered before the RFM window.
RFM_SCORES = [(1, 5, 4, 300.0), (2, 5, 4, 50.0), (4, 3, 2, 120.0), (7, 1, 1, 80.0), (8, 5, 5, 1000.0)]

# (customer, segment_type, segment, entered_on, exited_on)
HISTORY = [
    (1, "lifecycle", "new", dt.date(2026, 9, 1), EARLIER),  # closed long ago: in no figure
    (1, "lifecycle", "active", EARLIER, None),
    (2, "lifecycle", "new", dt.date(2026, 10, 20), AS_OF),
    (2, "lifecycle", "active", AS_OF, None),
    (3, "lifecycle", "new", dt.date(2026, 10, 5), dt.date(2026, 10, 10)),
    (3, "lifecycle", "prospect", dt.date(2026, 10, 10), None),
    (4, "lifecycle", "active", EARLIER, AS_OF),
    (4, "lifecycle", "at_risk", AS_OF, None),
    (5, "lifecycle", "prospect", EARLIER, None),
    (6, "lifecycle", "prospect", AS_OF, None),  # new to the warehouse tonight
    (7, "lifecycle", "churned", EARLIER, None),
    (8, "lifecycle", "active", EARLIER, None),
    (9, "lifecycle", "lapsed", EARLIER, None),
    (10, "lifecycle", "prospect", EARLIER, None),
    (11, "lifecycle", "prospect", EARLIER, None),
    (12, "lifecycle", "prospect", EARLIER, None),
    (13, "lifecycle", "prospect", EARLIER, AS_OF),  # merged into another id tonight
    (8, "rfm", "Champions", EARLIER, None),
    (1, "rfm", "Loyal", EARLIER, AS_OF),
    (1, "rfm", "Champions", AS_OF, None),
    (2, "rfm", "Loyal", AS_OF, None),
    (8, "custom", "vip", AS_OF, None),
    (1, "engagement", "highly_engaged", EARLIER, None),
]


def _at(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=dt.timezone.utc)


def _journey_events() -> list[tuple]:
    """(customer, event_kind, event_type, day, funnel_stage, order_counted, campaign)."""
    d = AS_OF
    web = lambda c, event, stage: (c, "web", event, d, stage, None, None)  # noqa: E731
    rows = [
        web(1, "page_view", "visit"), web(1, "add_to_cart", "cart"), web(1, "begin_checkout", "checkout"),
        web(1, "purchase", "purchase"),
        web(2, "page_view", "visit"), web(2, "view_cart", "cart"), web(2, "add_payment_info", "checkout"),
        (2, "order", "order", d, "purchase", True, None),
        web(3, "page_view", "visit"), web(3, "add_to_cart", "cart"), web(3, "begin_checkout", "checkout"),
        (3, "order", "order", d, "purchase", False, None),  # cancelled: not a purchase
        web(4, "search", "visit"), web(4, "add_to_cart", "cart"), web(4, "login", None),
        web(5, "page_view", "visit"), web(5, "page_view", "visit"),
        web(6, "page_view", "visit"), web(6, "begin_checkout", "checkout"), web(6, "purchase", "purchase"),
        (7, "order", "order", d, "purchase", True, None),  # a shop order: no site visit
        web(8, "add_to_cart", "cart"),  # no visit: outside the nested funnel
    ]
    mail = lambda c, event, day, campaign: (c, "email", event, day, None, None, campaign)  # noqa: E731
    d29, d30, d31 = dt.date(2026, 10, 29), dt.date(2026, 10, 30), AS_OF
    rows += [mail(c, "sent", d29, "Autumn Sale") for c in (4, 5, 7, 11)]
    rows += [mail(c, "delivered", d29, "Autumn Sale") for c in (4, 5, 7)]
    rows += [mail(11, "bounce", d29, "Autumn Sale"), mail(4, "open", d29, "Autumn Sale"),
             mail(5, "open", d29, "Autumn Sale"), mail(4, "click", d29, "Autumn Sale")]
    rows += [mail(7, "open", d30, "Autumn Sale"), mail(7, "click", d30, "Autumn Sale"),
             mail(5, "unsubscribe", d30, "Autumn Sale"), mail(11, "spam_complaint", d30, "Autumn Sale")]
    rows += [mail(c, "sent", d31, "Winter Preview") for c in (4, 7)]
    rows += [mail(c, "delivered", d31, "Winter Preview") for c in (4, 7)]
    rows += [mail(4, "open", d31, "Winter Preview")]
    return rows


# (order, customer, revenue, [(channel, {model: weight})]); every touch has a row under every model.
ORDERS = [
    ("o1", 1, 100.0, [("email", {"first_touch": 1, "last_touch": 0, "linear": 0.5, "position_based": 0.5}),
                      ("paid_search", {"first_touch": 0, "last_touch": 1, "linear": 0.5, "position_based": 0.5})]),
    ("o2", 2, 60.0, [("direct", {"first_touch": 1, "last_touch": 1, "linear": 1, "position_based": 1})]),
    ("o3", 7, 40.0, [("no_touch", {"first_touch": 1, "last_touch": 1, "linear": 1, "position_based": 1})]),
    ("o4", 8, 90.0, [
        ("organic_search", {"first_touch": 1, "last_touch": 0, "linear": 1 / 3, "position_based": 0.4}),
        ("email", {"first_touch": 0, "last_touch": 0, "linear": 1 / 3, "position_based": 0.2}),
        ("paid_search", {"first_touch": 0, "last_touch": 1, "linear": 1 / 3, "position_based": 0.4}),
    ]),
]

# Worked out by hand from ORDERS: revenue per channel and model.
CHANNEL_REVENUE = {
    "email": {"first_touch": 100, "last_touch": 0, "linear": 80, "position_based": 68},
    "paid_search": {"first_touch": 0, "last_touch": 190, "linear": 80, "position_based": 86},
    "organic_search": {"first_touch": 90, "last_touch": 0, "linear": 30, "position_based": 36},
    "direct": {"first_touch": 60, "last_touch": 60, "linear": 60, "position_based": 60},
    "no_touch": {"first_touch": 40, "last_touch": 40, "linear": 40, "position_based": 40},
}


def _config(folder: Path) -> CdmConfig:
    document = {
        "warehouse": "warehouse.duckdb",
        "landing_dir": "landing",
        "reports_dir": "reports",
        "sources": [
            {"name": "crm_contacts", "system": "crm", "kind": "contacts", "format": "csv",
             "path": "crm/{date}/*.csv", "id_column": "contact_id", "columns": {"email": "email"}},
            {"name": "email_subscribers", "system": "email", "kind": "contacts", "format": "csv",
             "path": "email/{date}/*.csv", "id_column": "subscriber_id", "columns": {"email": "email"}},
            {"name": "web_events", "system": "web", "kind": "web_events", "format": "csv",
             "path": "web/{date}/*.csv", "id_column": "event_id",
             "columns": {"client_id": "client_id", "event_name": "event_name", "occurred_at": "occurred_at"}},
        ],
        "marts": {"currency": "GBP"},
        "segments": [{"name": "vip", "where": "revenue >= 500"}, {"name": "dormant", "where": "order_count = 0"}],
    }
    path = folder / "cdm.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return load_config(path)


def _build_marts(conn: duckdb.DuckDBPyConnection, history: list[tuple] = HISTORY) -> None:
    conn.execute("CREATE SCHEMA marts")
    conn.execute(
        """CREATE TABLE marts.customer_360 (customer_id VARCHAR, first_name VARCHAR, last_name VARCHAR,
        email VARCHAR, phone VARCHAR, address_line1 VARCHAR, source_systems VARCHAR[], source_names VARCHAR[],
        order_count BIGINT, revenue DOUBLE, email_contactable BOOLEAN, as_of_date DATE)"""
    )
    conn.executemany(
        "INSERT INTO marts.customer_360 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(_customer_id(n), PERSONAL["first_name"], PERSONAL["last_name"], PERSONAL["email"], PERSONAL["phone"],
          PERSONAL["address_line1"], systems, [f"{s}_source" for s in systems], orders, revenue, contactable, AS_OF)
         for n, systems, orders, revenue, contactable in CUSTOMERS],
    )
    conn.execute(
        """CREATE TABLE marts.customer_segments (customer_id VARCHAR, as_of_date DATE, recency_days BIGINT,
        frequency BIGINT, monetary DOUBLE, recency_score INTEGER, frequency_score INTEGER,
        monetary_score INTEGER, rfm_score VARCHAR, rfm_segment VARCHAR, lifecycle_stage VARCHAR,
        engagement_tier VARCHAR, custom_segments VARCHAR[])"""
    )
    scores = {n: (r, f, monetary) for n, r, f, monetary in RFM_SCORES}
    conn.executemany(
        "INSERT INTO marts.customer_segments VALUES (?, ?, NULL, NULL, ?, ?, ?, NULL, NULL, NULL, 'x', 'y', [])",
        [(_customer_id(n), AS_OF, *((scores[n][2], scores[n][0], scores[n][1]) if n in scores else (None, None, None)))
         for n, *_ in CUSTOMERS],
    )
    conn.execute(
        """CREATE TABLE marts.segment_membership_history (customer_id VARCHAR, segment_type VARCHAR,
        segment VARCHAR, entered_on DATE, exited_on DATE)"""
    )
    conn.executemany(
        "INSERT INTO marts.segment_membership_history VALUES (?, ?, ?, ?, ?)",
        [(_customer_id(n), *rest) for n, *rest in history],
    )
    conn.execute(
        """CREATE TABLE marts.customer_journey_events (customer_id VARCHAR, event_kind VARCHAR,
        event_type VARCHAR, occurred_at TIMESTAMPTZ, event_date DATE, funnel_stage VARCHAR,
        order_counted BOOLEAN, campaign VARCHAR)"""
    )
    conn.executemany(
        "INSERT INTO marts.customer_journey_events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(_customer_id(n), kind, event, _at(day), day, stage, counted, campaign)
         for n, kind, event, day, stage, counted, campaign in _journey_events()],
    )
    conn.execute(
        """CREATE TABLE marts.order_attribution (order_source VARCHAR, order_id VARCHAR, customer_id VARCHAR,
        ordered_at TIMESTAMPTZ, model VARCHAR, channel VARCHAR, weight DOUBLE, attributed_revenue DOUBLE)"""
    )
    conn.executemany(
        "INSERT INTO marts.order_attribution VALUES ('crm_orders', ?, ?, ?, ?, ?, ?, ?)",
        [(order, _customer_id(n), _at(AS_OF), model, channel, weight, revenue * weight)
         for order, n, revenue, touches in ORDERS for channel, weights in touches for model, weight in weights.items()],
    )


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    folder = tmp_path_factory.mktemp("insights")
    config = _config(folder)
    conn = duckdb.connect(str(config.warehouse))
    _build_marts(conn)
    conn.close()
    # The dashboard only reads: a read-only connection must do.
    conn = duckdb.connect(str(config.warehouse), read_only=True)
    result = write_insights_dashboard(conn, config, now=NOW)
    conn.close()
    html = result.page.read_text(encoding="utf-8")
    return result, config, html, parse(html)


def _figure(row: Node, name: str) -> Node:
    return row.find(data_figure=name)


def test_dashboard_is_written_where_the_config_says_with_headline_figures(dashboard):
    result, config, _, page = dashboard
    assert result.page == config.reports_dir / "insights" / "index.html"
    assert (result.marts_built, result.as_of_date, result.customers, result.revenue) == (True, AS_OF, 12, 1590.0)
    headline = page.find("section", id="headline")
    tiles = {name: headline.find(data_figure=name).text for name in
             ("customers", "with_orders", "revenue", "email_contactable", "as_of_date")}
    assert tiles == {
        "customers": "12 customers", "with_orders": "6 with orders", "revenue": "1,590 revenue (GBP)",
        "email_contactable": "4 e-mail contactable", "as_of_date": "2026-10-31 as of (latest landed day)",
    }


def test_source_overlap_counts_each_system_alone_and_several(dashboard):
    *_, page = dashboard
    overlap = {row.attrs["data-overlap"]: int(_figure(row, "customers").attrs["data-value"])
               for row in page.find("table", id="overlap-table").find_all("tr") if "data-overlap" in row.attrs}
    assert overlap == {"only:crm": 3, "only:email": 2, "only:web": 1, "several": 6, "all": 12}
    combinations = {row.attrs["data-combination"]: _figure(row, "customers").text
                    for row in page.find("table", id="combinations-table").find_all("tr")
                    if "data-combination" in row.attrs}
    assert combinations == {
        "crm+email": "4", "crm": "3", "email": "2", "web": "1", "crm+web": "1", "crm+email+web": "1"
    }
    known_to = {row.attrs["data-system"]: _figure(row, "customers").text
                for row in page.find("table", id="known-to-table").find_all("tr") if "data-system" in row.attrs}
    assert known_to == {"crm": "9", "email": "7", "web": "3"}


def test_rfm_grid_cells_hold_customers_and_window_revenue(dashboard):
    *_, page = dashboard
    grid = page.find("table", data_chart="rfm_grid")
    cells = {(int(c.attrs["data-recency"]), int(c.attrs["data-frequency"])): c for c in grid.find_all("td")}
    assert len(cells) == 25
    assert (cells[5, 4].attrs["data-customers"], cells[5, 4].attrs["data-revenue"]) == ("2", "350.00")
    assert cells[5, 4].text == "2 350"
    assert (cells[5, 5].attrs["data-customers"], cells[5, 5].attrs["data-revenue"]) == ("1", "1000.00")
    assert cells[5, 5].text == "1 1,000"
    assert cells[3, 2].attrs["data-customers"] == "1" and cells[1, 1].attrs["data-customers"] == "1"
    assert sum(int(c.attrs["data-customers"]) for c in cells.values()) == 5
    # The fullest cell is the darkest; an empty one is white.
    assert cells[5, 4].attrs["style"].startswith("background: #26") and "#ffffff" in cells[4, 4].attrs["style"]
    assert page.find(data_figure="rfm_scored").attrs["data-value"] == "5"
    assert page.find(data_figure="rfm_never_ordered").attrs["data-value"] == "6"
    assert page.find(data_figure="rfm_before_window").attrs["data-value"] == "1"


def _segment_rows(page: Node, segment_type: str) -> dict[str, tuple[int, ...]]:
    rows = page.find("table", data_segment_type=segment_type).find_all("tr", data_segment_type=segment_type)
    return {row.attrs["data-segment"]: tuple(int(_figure(row, f).attrs["data-value"])
                                             for f in ("before", "now", "change", "entered", "exited"))
            for row in rows}


def test_segment_sizes_before_and_now_with_entries_and_exits_of_this_run(dashboard):
    *_, page = dashboard
    assert _segment_rows(page, "lifecycle") == {
        # segment: (before, now, change, entered, exited)
        "prospect": (6, 6, 0, 1, 1),
        "new": (1, 0, -1, 0, 1),
        "active": (3, 3, 0, 1, 1),
        "at_risk": (0, 1, 1, 1, 0),
        "lapsed": (1, 1, 0, 0, 0),
        "churned": (1, 1, 0, 0, 0),
    }
    rfm = _segment_rows(page, "rfm")
    assert rfm["Champions"] == (1, 2, 1, 1, 0)
    assert rfm["Loyal"] == (1, 1, 0, 1, 1)
    assert rfm["Lost"] == (0, 0, 0, 0, 0)  # built-in segments are listed even when empty
    # Custom segments in config order, an empty one included.
    assert _segment_rows(page, "custom") == {"vip": (0, 1, 1, 1, 0), "dormant": (0, 0, 0, 0, 0)}
    new_row = page.find("tr", data_segment_type="lifecycle", data_segment="new")
    assert _figure(new_row, "change").text == "−1"
    transitions = {(row.attrs["data-from"], row.attrs["data-to"]): _figure(row, "customers").text
                   for row in page.find("table", id="lifecycle-transitions").find_all("tr") if "data-from" in row.attrs}
    assert transitions == {
        ("new", "active"): "1", ("active", "at_risk"): "1",
        ("(new customer)", "prospect"): "1", ("prospect", "(no longer a customer)"): "1",
    }
    assert not page.find_all(id="first-run")
    assert "the latest earlier change is dated 2026-10-20" in page.find("section", id="segments").text


def test_funnel_is_strict_and_nested_with_conversion_rates(dashboard):
    *_, page = dashboard
    steps = {}
    for row in page.find("table", id="funnel-table").find_all("tr"):
        if "data-step" in row.attrs:
            steps[row.attrs["data-step"]] = tuple(_figure(row, f).text for f in (
                "customers", "step_conversion", "overall_conversion", "reached"))
    assert steps == {
        "visit": ("6", "–", "100.0%", "6"),
        "cart": ("4", "66.7%", "66.7%", "5"),
        "checkout": ("3", "75.0%", "50.0%", "4"),
        "purchase": ("2", "66.7%", "33.3%", "4"),
    }


def test_revenue_per_channel_under_each_attribution_model(dashboard):
    *_, page = dashboard
    table = page.find("table", id="channel-revenue")
    shown = {row.attrs["data-channel"]: {c.attrs["data-model"]: float(c.attrs["data-value"])
                                         for c in row.find_all() if "data-model" in c.attrs}
             for row in table.find_all("tr") if "data-channel" in row.attrs}
    totals = shown.pop("all")
    assert {ch: {m: round(v, 2) for m, v in models.items()} for ch, models in shown.items()} == CHANNEL_REVENUE
    assert totals == {"first_touch": 290.0, "last_touch": 290.0, "linear": 290.0, "position_based": 290.0}
    channels = [row.attrs["data-channel"] for row in table.find_all("tr") if "data-channel" in row.attrs]
    assert channels[-2:] == ["no_touch", "all"]
    paid_search = table.find("tr", data_channel="paid_search")
    assert paid_search.find("td", data_model="last_touch").text == "190"
    assert "4 counted orders" in page.find("section", id="channels").text


def test_email_engagement_counts_per_day_with_rates(dashboard):
    *_, page = dashboard
    table = page.find("table", id="email-table")
    measures = ("sent", "delivered", "opens", "clicks", "unsubscribes", "bounces")
    rows = {row.attrs["data-period"]: tuple(int(_figure(row, m).attrs["data-value"]) for m in measures)
            for row in table.find_all("tr") if "data-period" in row.attrs}
    assert rows == {
        "2026-10-29": (4, 3, 2, 1, 0, 1),
        "2026-10-30": (0, 0, 1, 1, 2, 0),  # an unsubscribe and a spam complaint
        "2026-10-31": (2, 2, 1, 0, 0, 0),
        "all": (6, 5, 4, 2, 2, 1),
    }
    day = table.find("tr", data_period="2026-10-29")
    assert (_figure(day, "open_rate").text, _figure(day, "click_rate").text) == ("66.7%", "33.3%")
    assert _figure(table.find("tr", data_period="2026-10-30"), "open_rate").text == "–"
    campaigns = [row.attrs["data-campaign"] for row in page.find("table", id="campaign-table").find_all("tr")
                 if "data-campaign" in row.attrs]
    assert campaigns == ["Autumn Sale", "Winter Preview"]


def test_email_engagement_is_weekly_over_a_long_span(tmp_path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    conn.execute("CREATE SCHEMA marts")
    conn.execute(
        """CREATE TABLE marts.customer_journey_events AS SELECT * FROM (VALUES
        ('c1', 'email', 'sent', DATE '2026-01-07', 'A'), ('c2', 'email', 'sent', DATE '2026-01-11', 'A'),
        ('c1', 'email', 'open', DATE '2026-01-12', 'A'), ('c1', 'email', 'sent', DATE '2026-03-20', 'B'))
        t(customer_id, event_kind, event_type, event_date, campaign)"""
    )
    email = email_engagement_figures(conn)
    assert email.weekly
    # ISO weeks, each named by its Monday.
    assert [(p.period, p.sent, p.opens) for p in email.periods] == [
        (dt.date(2026, 1, 5), 2, 0), (dt.date(2026, 1, 12), 0, 1), (dt.date(2026, 3, 16), 1, 0),
    ]


def test_every_chart_is_an_embedded_png_and_nothing_loads_from_the_network(dashboard):
    _, _, html, page = dashboard
    images = page.find_all("img")
    assert {img.attrs["data-chart"] for img in images} == {
        "source_overlap", "lifecycle_sizes", "journey_funnel", "channel_revenue", "email_rates",
    }
    for img in images:
        prefix, _, payload = img.attrs["src"].partition(",")
        assert prefix == "data:image/png;base64", img.attrs["data-chart"]
        data = base64.b64decode(payload, validate=True)
        assert data.startswith(PNG_SIGNATURE) and data.endswith(b"IEND\xaeB`\x82"), img.attrs["data-chart"]
        assert img.attrs["alt"]
    assert not re.search(r"https?:|ftp:|=\s*['\"]?//|url\(", html, re.IGNORECASE)
    assert not re.search(r"<(script|link|iframe)\b", html, re.IGNORECASE)


def test_page_holds_no_personal_value_or_customer_id(dashboard):
    _, _, html, _ = dashboard
    for value in [*PERSONAL.values(), "Zelphinia", "example.org", "cust-9f"]:
        assert value.lower() not in html.lower(), value


def test_first_run_says_there_is_nothing_to_compare_with(tmp_path):
    config = _config(tmp_path)
    conn = duckdb.connect(str(config.warehouse))
    _build_marts(conn, history=[(n, "lifecycle", "prospect", AS_OF, None) for n in range(1, 4)])
    write_insights_dashboard(conn, config, now=NOW)
    page = parse((config.reports_dir / "insights" / "index.html").read_text(encoding="utf-8"))
    assert "first run" in page.find(id="first-run").text
    assert _segment_rows(page, "lifecycle")["prospect"] == (0, 3, 3, 3, 0)
    assert not page.find_all(id="lifecycle-transitions")


def test_warehouse_without_marts_gets_a_page_that_says_so(tmp_path):
    config = _config(tmp_path)
    conn = duckdb.connect(str(config.warehouse))
    result = write_insights_dashboard(conn, config, now=NOW)
    assert (result.marts_built, result.customers, result.as_of_date) == (False, 0, None)
    page = parse(result.page.read_text(encoding="utf-8"))
    assert "marts have not been built" in page.find("section", id="no-marts").text
    assert not page.find_all("img")


def test_dashboard_renders_every_chart_in_chromium_with_the_network_shut(dashboard):
    from cdm_pipeline_tests.browser import load_page_offline, require_chromium

    require_chromium()
    load = load_page_offline(dashboard[0].page)
    assert not load.problems(), load.problems()
    assert not load.external_requests
    names = {c.chart for c in load.charts}
    assert names == {
        "source_overlap", "rfm_grid", "lifecycle_sizes", "journey_funnel", "channel_revenue", "email_rates"
    }
    assert all(c.rendered for c in load.charts)
    assert "Customer insights as of 2026-10-31" in load.text
