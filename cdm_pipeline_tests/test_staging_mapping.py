"""The mapping engine on small real files: every transform a real export needs (issue 18).

Each test lands a file, loads it with the real extract and stages it with the real staging SQL
on a DuckDB file, then reads the staged values back.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from cdm_pipeline.config import load_config
from cdm_pipeline.lib.extract import load_partition
from cdm_pipeline.lib.staging.build import count_conservation, stage_partition
from cdm_pipeline.lib.staging.loss import loss_problems
from cdm_pipeline.lib.warehouse import connect

DAY = dt.date(2026, 1, 15)
UTC = dt.timezone.utc


def _run(tmp_path: Path, sources: list[dict], files: dict[str, bytes], kinds: tuple[str, ...], **extra):
    landing = tmp_path / "landing"
    for relative, data in files.items():
        path = landing / relative.replace("{date}", DAY.isoformat())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    document = {"warehouse": "wh.duckdb", "landing_dir": "landing", "start_date": "2026-01-01",
                "sources": sources, **extra}
    (tmp_path / "cdm.yaml").write_text(yaml.safe_dump(document, allow_unicode=True))
    config = load_config(tmp_path / "cdm.yaml")
    conn = connect(config.warehouse)
    now = dt.datetime.now(UTC)
    for source in config.sources:
        load_partition(conn, source, config.landing_dir, DAY, now, config=config)
    staged = {kind: stage_partition(conn, config, kind, DAY) for kind in kinds}
    return conn, config, staged


def _rows(conn, sql: str) -> list[tuple]:
    return conn.execute(sql).fetchall()


def test_line_items_group_into_orders_that_carry_their_buyer(tmp_path):
    # Shopify's shape: one row per line item, order fields on the first row only, offsets in
    # the timestamps, a full billing name, statuses in the shop's own words.
    csv = (
        "Name,Email,Financial Status,Total,Currency,Created at,Lineitem name,"
        "Billing Name,Billing Phone,Billing City,Accepts Marketing\n"
        "#1001,ann@shop.test,paid,£1,054.90,GBP,2026-01-15 05:56:42 +0100,Mug,Ann van der Berg,0113 496 0101,Leeds,no\n"
        "#1001,ann@shop.test,,,,,Plate,,,,\n"
        "#1001,ann@shop.test,,,,,Bowl,,,,\n"
        "#1002,BOB@shop.test,partially_refunded,12.50,GBP,2026-01-15 23:30:00 +0000,Cup,\"Smith, Bob\",,Bath,yes\n"
    ).replace("£1,054.90", '"£1,054.90"')
    conn, config, staged = _run(tmp_path, [{
        "name": "shop_orders", "system": "shop", "kind": "orders", "format": "csv",
        "path": "shop/{date}/*.csv", "id_column": "Name", "group_rows": True,
        "columns": {
            "email": "Email", "order_date": "Created at", "amount": "Total", "currency": "Currency",
            "status": {"column": "Financial Status",
                       "values": {"paid": "completed", "partially_refunded": "completed"}},
            "first_name": {"column": "Billing Name", "name_part": "first"},
            "last_name": {"column": "Billing Name", "name_part": "last"},
            "phone": "Billing Phone", "city": "Billing City",
            "email_opt_in": {"column": "Accepts Marketing", "values": {"yes": True, "no": None}},
        },
    }], {"shop/{date}/orders.csv": csv.encode()}, ("orders", "contacts"))
    orders = _rows(
        conn, "SELECT source_record_id, contact_id, amount, status, order_date FROM staging.orders ORDER BY 1"
    )
    assert orders == [
        ("#1001", "#1001", Decimal("1054.90"), "completed", dt.datetime(2026, 1, 15, 4, 56, 42, tzinfo=UTC)),
        ("#1002", "#1002", Decimal("12.50"), "completed", dt.datetime(2026, 1, 15, 23, 30, tzinfo=UTC)),
    ]
    assert staged["orders"].quarantined == 0 and staged["orders"].raw_rows == 2
    buyers = _rows(conn, "SELECT source_name, source_record_id, first_name, last_name, phone, email, email_opt_in,"
                         " updated_at FROM staging.contacts ORDER BY 2")
    assert buyers == [
        ("shop_orders", "#1001", "Ann", "van der Berg", "+441134960101", "ann@shop.test", None,
         dt.datetime(2026, 1, 15, 4, 56, 42, tzinfo=UTC)),
        ("shop_orders", "#1002", "Bob", "Smith", None, "bob@shop.test", True,
         dt.datetime(2026, 1, 15, 23, 30, tzinfo=UTC)),
    ]
    # Conservation counts records (grouped orders), not raw lines: 4 lines, 2 orders.
    assert count_conservation(conn, config, "orders", [DAY]) == [(DAY, 2, 2, 0)]
    assert config.linked_contacts_sources(config.source("shop_orders")) == ["shop_orders"]


def test_local_times_read_in_the_source_time_zone_and_offsets_win(tmp_path):
    csv = (
        "id,email,created,updated\n"
        "1,a@b.test,2026-01-15 14:22,2026-07-01T09:00:00+02:00\n"
        "2,c@d.test,2026-07-15 14:22,2026-07-15 14:22\n"
    )
    conn, _, _ = _run(tmp_path, [{
        "name": "crm", "system": "crm", "kind": "contacts", "format": "csv", "path": "crm/{date}/*.csv",
        "id_column": "id", "timezone": "Europe/London",
        "columns": {"email": "email", "created_at": "created", "updated_at": "updated"},
    }], {"crm/{date}/c.csv": csv.encode()}, ("contacts",))
    assert _rows(conn, "SELECT created_at, updated_at FROM staging.contacts ORDER BY source_record_id") == [
        # GMT in January, BST (UTC+1) in July; an explicit offset is taken as written.
        (dt.datetime(2026, 1, 15, 14, 22, tzinfo=UTC), dt.datetime(2026, 7, 1, 7, 0, tzinfo=UTC)),
        (dt.datetime(2026, 7, 15, 13, 22, tzinfo=UTC), dt.datetime(2026, 7, 15, 13, 22, tzinfo=UTC)),
    ]


def test_nested_paths_params_epochs_and_generated_ids_from_parquet(tmp_path):
    # GA4's BigQuery shape, cut down: microsecond epochs, a key/value parameter list, structs.
    param = pa.struct([("key", pa.string()), ("value", pa.struct([
        ("string_value", pa.string()), ("int_value", pa.int64()),
        ("float_value", pa.float64()), ("double_value", pa.float64())]))])
    table = pa.table({
        "event_timestamp": pa.array([1768478400123456, 1768478460000000], pa.int64()),
        "event_name": ["page_view", "purchase"],
        "user_pseudo_id": ["111.222", "111.222"],
        "event_params": pa.array([
            [{"key": "page_location", "value": {"string_value": "https://shop.test/a"}},
             {"key": "ga_session_id", "value": {"int_value": 1768478400}}],
            [{"key": "ga_session_id", "value": {"int_value": 1768478400}}],
        ], pa.list_(param)),
        "device": pa.array([{"category": "mobile"}, {"category": "desktop"}], pa.struct([("category", pa.string())])),
        "ecommerce": pa.array([None, {"purchase_revenue": 54.9, "transaction_id": "T1"}],
                              pa.struct([("purchase_revenue", pa.float64()), ("transaction_id", pa.string())])),
    })
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    conn, _, staged = _run(tmp_path, [{
        "name": "ga4", "system": "web", "kind": "web_events", "format": "parquet", "path": "ga4/{date}/*.parquet",
        "id_from": ["client_id", "occurred_at", "event_name"],
        "columns": {
            "client_id": "user_pseudo_id", "event_name": "event_name",
            "occurred_at": {"column": "event_timestamp", "format": "epoch_us"},
            "page_url": {"column": "event_params", "param": "page_location"},
            "session_id": {"column": "event_params", "param": "ga_session_id"},
            "device_category": {"column": "device", "path": "category"},
            "value": {"column": "ecommerce", "path": "purchase_revenue"},
            "transaction_id": {"column": "ecommerce", "path": "transaction_id"},
        },
    }], {"ga4/{date}/events.parquet": path.read_bytes()}, ("web_events",))
    rows = _rows(conn, "SELECT length(source_record_id), occurred_at, page_url, session_id, device_category, value,"
                       " transaction_id FROM staging.web_events ORDER BY occurred_at")
    assert rows == [
        (32, dt.datetime(2026, 1, 15, 12, 0, 0, 123456, tzinfo=UTC), "https://shop.test/a", "1768478400", "mobile",
         None, None),
        (32, dt.datetime(2026, 1, 15, 12, 1, tzinfo=UTC), None, "1768478400", "desktop", 54.9, "T1"),
    ]
    assert staged["web_events"].quarantined == 0
    # The generated id is a function of the chosen columns: the same event re-exported keeps it.
    ids = {r[0] for r in _rows(conn, "SELECT source_record_id FROM staging.web_events")}
    conn.close()
    conn2, _, _ = _run(tmp_path / "again", [{
        "name": "ga4", "system": "web", "kind": "web_events", "format": "parquet", "path": "ga4/{date}/*.parquet",
        "id_from": ["client_id", "occurred_at", "event_name"],
        "columns": {"client_id": "user_pseudo_id", "event_name": "event_name",
                    "occurred_at": {"column": "event_timestamp", "format": "epoch_us"}},
    }], {"ga4/{date}/events.parquet": path.read_bytes()}, ("web_events",))
    assert {r[0] for r in _rows(conn2, "SELECT source_record_id FROM staging.web_events")} == ids


def test_exploded_activity_constants_and_file_name_values(tmp_path):
    # Mailchimp's member activity: one member per line, a nested list of actions.
    lines = [
        {"email_id": "e1", "email_address": "a@b.test", "campaign_id": "c9", "activity": [
            {"action": "open", "timestamp": "2026-01-15T10:12:30+00:00"},
            {"action": "click", "timestamp": "2026-01-15T10:13:00+00:00", "url": "https://shop.test/x"}]},
        {"email_id": "e2", "email_address": "c@d.test", "campaign_id": "c9", "activity": []},
        {"email_id": "e3", "email_address": "e@f.test", "campaign_id": "c9", "activity": [
            {"action": "bounce", "type": "hard", "timestamp": "2026-01-15T09:00:00+00:00"}]},
    ]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    conn, config, staged = _run(tmp_path, [{
        "name": "mc_activity", "system": "mailchimp", "kind": "email_events", "format": "jsonl",
        "path": "mc/{date}/*.jsonl", "explode": "activity",
        "id_from": ["subscriber_id", "campaign_id", "event_type", "occurred_at"],
        "columns": {
            "subscriber_id": "email_id", "email": "email_address", "campaign_id": "campaign_id",
            "event_type": {"column": "activity", "path": "action"},
            "occurred_at": {"column": "activity", "path": "timestamp"},
            "url": {"column": "activity", "path": "url"},
            "bounce_type": {"column": "activity", "path": "type"},
            "campaign_name": {"from_filename": "^activity_(.+)\\.jsonl$"},
        },
    }], {"mc/{date}/activity_spring_sale.jsonl": data}, ("email_events",))
    rows = _rows(conn, "SELECT subscriber_id, event_type, occurred_at, url, bounce_type, campaign_name"
                       " FROM staging.email_events ORDER BY occurred_at")
    assert rows == [
        ("e3", "bounce", dt.datetime(2026, 1, 15, 9, tzinfo=UTC), None, "hard", "spring_sale"),
        ("e1", "open", dt.datetime(2026, 1, 15, 10, 12, 30, tzinfo=UTC), None, None, "spring_sale"),
        ("e1", "click", dt.datetime(2026, 1, 15, 10, 13, tzinfo=UTC), "https://shop.test/x", None, "spring_sale"),
    ]
    assert staged["email_events"].quarantined == 0
    assert count_conservation(conn, config, "email_events", [DAY]) == [(DAY, 3, 3, 0)]


def test_decimal_commas_and_currency_codes(tmp_path):
    csv = (
        "id;contact;date;amount\n"
        "1;c1;15.01.2026;1.234,50 EUR\n"
        "2;c2;15.01.2026;-5,00\n"
        "3;c3;15.01.2026;(12,00)\n"
        "4;c4;15.01.2026;n/a\n"
    )
    conn, _, staged = _run(tmp_path, [{
        "name": "shop", "system": "shop", "kind": "orders", "format": "csv", "path": "s/{date}/*.csv",
        "id_column": "id", "delimiter": ";", "decimal": ",",
        "columns": {"contact_id": "contact", "order_date": {"column": "date", "format": "%d.%m.%Y"},
                    "amount": "amount"},
    }], {"s/{date}/o.csv": csv.encode()}, ("orders",))
    assert _rows(conn, "SELECT source_record_id, amount FROM staging.orders") == [("1", Decimal("1234.50"))]
    assert _rows(conn, "SELECT source_record_id, quarantine_reason FROM quarantine.orders ORDER BY 1") == [
        ("2", "negative_amount"), ("3", "negative_amount"), ("4", "missing_or_invalid_amount"),
    ]
    assert staged["orders"].quarantined == 3


@pytest.mark.parametrize("encoding", ["windows-1252", "latin-1"])
def test_other_encodings_read_accented_names(tmp_path, encoding):
    csv = "id,first,last,email\n1,Zoë,Müller,z@m.test\n2,René,Ó Briain,r@o.test\n"
    conn, _, staged = _run(tmp_path, [{
        "name": "crm", "system": "crm", "kind": "contacts", "format": "csv", "path": "crm/{date}/*.csv",
        "id_column": "id", "encoding": encoding,
        "columns": {"first_name": "first", "last_name": "last", "email": "email"},
    }], {"crm/{date}/c.csv": csv.encode(encoding)}, ("contacts",))
    assert _rows(conn, "SELECT first_name, last_name FROM staging.contacts ORDER BY source_record_id") == [
        ("Zoë", "Müller"), ("René", "Ó Briain"),
    ]


def test_a_wrong_format_is_a_loss_the_blocking_check_names(tmp_path):
    # Every order dated in a format the mapping does not say: all quarantined. The GX checks
    # on staging see 0 rows and pass; the loss check must not.
    rows = "".join(f"{i},c{i},15/01/2026,£54.90\n" for i in range(12))
    conn, config, staged = _run(tmp_path, [{
        "name": "shop", "system": "shop", "kind": "orders", "format": "csv", "path": "s/{date}/*.csv",
        "id_column": "id",
        "columns": {"contact_id": "contact", "order_date": {"column": "date", "format": "%Y-%m-%d"},
                    "amount": "amount"},
    }], {"s/{date}/o.csv": ("id,contact,date,amount\n" + rows).encode()}, ("orders",))
    assert staged["orders"].quarantined == 12
    [loss] = staged["orders"].losses
    assert (loss.source, loss.records, loss.quarantined) == ("shop", 12, 12)
    assert loss.reasons == {"missing_order_date": 12}
    assert loss.unparsed == {"order_date": (12, 12), "amount": (12, 0)}  # "£54.90" reads fine
    problems = loss_problems(config, staged["orders"].losses)
    assert problems == [
        "shop 2026-01-15: 12 of 12 records quarantined (100%, limit 20%): missing_order_date 12",
        "shop 2026-01-15: 12 of 12 values of order_date (from date, format '%Y-%m-%d') could not be parsed"
        " (100%, limit 20%)",
    ]


def test_losses_under_the_limits_or_too_few_to_judge_pass(tmp_path):
    # 2 bad dates of 30 (7%) and 1 bad of 3 in a tiny source: within limits / below MIN_LOST.
    big = "".join(f"{i},c{i},{'2026-01-15' if i >= 2 else 'soon'},10\n" for i in range(30))
    small = "id,contact,date,amount\n1,c1,2026-01-15,1\n2,c2,2026-01-15,2\n3,c3,never,3\n"
    conn, config, staged = _run(tmp_path, [
        {"name": "big", "system": "shop", "kind": "orders", "format": "csv", "path": "b/{date}/*.csv",
         "id_column": "id", "columns": {"contact_id": "contact", "order_date": "date", "amount": "amount"}},
        {"name": "small", "system": "shop", "kind": "orders", "format": "csv", "path": "s/{date}/*.csv",
         "id_column": "id", "columns": {"contact_id": "contact", "order_date": "date", "amount": "amount"},
         "loss_limits": {"quarantined_share": 0.1}},
    ], {"b/{date}/o.csv": ("id,contact,date,amount\n" + big).encode(), "s/{date}/o.csv": small.encode()}, ("orders",))
    assert {(x.source, x.records, x.quarantined) for x in staged["orders"].losses} == {("big", 30, 2), ("small", 3, 1)}
    assert loss_problems(config, staged["orders"].losses) == []
    assert config.loss_limit(config.source("small"), "quarantined_share") == 0.1
    assert config.loss_limit(config.source("big"), "quarantined_share") == 0.2


def test_preview_reads_one_partition_in_memory_and_masks_values(tmp_path, capsys):
    from cdm_pipeline.cli import main

    csv = (
        "Name,Email,Financial Status,Total,Currency,Created at,Billing Name\n"
        "#1001,ann@shop.test,paid,54.90,GBP,2026-01-15 05:56:42 +0100,Ann Smith\n"
        "#1001,ann@shop.test,,,,,\n"
        "#1002,bob@shop.test,paid,12.50,GBP,15/01/2026,Bob Jones\n"
    )
    source = {
        "name": "shop", "system": "shop", "kind": "orders", "format": "csv", "path": "s/{date}/*.csv",
        "id_column": "Name", "group_rows": True,
        "columns": {"email": "Email", "order_date": "Created at", "amount": "Total", "currency": "Currency",
                    "status": {"column": "Financial Status", "values": {"paid": "completed"}},
                    "last_name": {"column": "Billing Name", "name_part": "last"}},
    }
    landing = tmp_path / "landing" / "s" / DAY.isoformat()
    landing.mkdir(parents=True)
    (landing / "orders.csv").write_text(csv)
    (tmp_path / "cdm.yaml").write_text(yaml.safe_dump(
        {"warehouse": "wh.duckdb", "landing_dir": "landing", "start_date": "2026-01-01", "sources": [source]}))
    code = main(["sources", "preview", "shop", "--date", DAY.isoformat(), "--config", str(tmp_path / "cdm.yaml")])
    out = capsys.readouterr().out
    assert code == 0  # one unparsed date of two is below MIN_LOST: no limit broken
    assert "lines: 3 read, 0 rejected" in out
    assert "as orders: 2 records, 1 would stage, 1 would be quarantined (missing_order_date 1)" in out
    assert "as contacts (buyers of the orders): 2 records, 2 would stage" in out
    [order_date] = [line.split() for line in out.splitlines() if line.strip().startswith("order_date")]
    assert order_date[1:5] == ["Created", "at", "2/2", "50%"]
    outside_masks = out.replace("a***@s***.test", "").replace("b***@s***.test", "")
    assert "a***@s***.test" in out and "shop.test" not in outside_masks
    assert "Smith" not in out and "Jones" not in out and "J****" in out
    assert not (tmp_path / "wh.duckdb").exists()  # the warehouse is never opened
