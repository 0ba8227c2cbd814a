"""Small hand-made warehouses for the marts tests: staged rows in, real identity resolution, marts out.

Rows go into the staging tables exactly as staging defines them; identity resolution then runs
for real (below 100 contact records it links on exact identifiers only: emails, the ESP's CRM
id, web logins), so customer ids are the ones the pipeline would give.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from pathlib import Path

import duckdb
import yaml

from cdm_pipeline.config import CdmConfig, load_config
from cdm_pipeline.lib.identity.resolve import resolve_identities
from cdm_pipeline.lib.marts.build import MartsSummary, build_marts
from cdm_pipeline.lib.staging.columns import staging_columns
from cdm_pipeline.lib.warehouse import connect
from cdm_pipeline_tests.identity_fixtures import insert_rows

UTC = dt.timezone.utc
AS_OF = dt.date(2026, 10, 31)
CONTACT_COLUMNS = ("first_name", "last_name", "email", "phone", "country", "email_opt_in", "do_not_sell",
                   "created_at", "updated_at")

SOURCES = [
    {"name": "crm_contacts", "system": "crm", "kind": "contacts", "format": "csv",
     "path": "crm/contacts/{date}/*.csv", "id_column": "contact_id",
     "columns": {c: c for c in CONTACT_COLUMNS}},
    {"name": "crm_orders", "system": "crm", "kind": "orders", "format": "csv",
     "path": "crm/orders/{date}/*.csv", "id_column": "order_id",
     "columns": {c: c for c in ("contact_id", "email", "order_date", "amount", "currency", "status", "channel")}},
    {"name": "email_subscribers", "system": "email", "kind": "contacts", "format": "jsonl",
     "path": "email/subscribers/{date}/*.jsonl", "id_column": "subscriber_id",
     "columns": {"email": "email", "email_opt_in": "status", "linked_id": "crm_id", "updated_at": "updated_at"}},
    {"name": "email_events", "system": "email", "kind": "email_events", "format": "jsonl",
     "path": "email/events/{date}/*.jsonl", "id_column": "event_id",
     "columns": {c: c for c in ("subscriber_id", "email", "event_type", "occurred_at", "campaign_id",
                                "campaign_name", "bounce_type")}},
    {"name": "web_events", "system": "web", "kind": "web_events", "format": "parquet",
     "path": "web/events/{date}/*.parquet", "id_column": "event_id",
     "columns": {c: c for c in ("client_id", "user_id", "email", "event_name", "occurred_at", "page_url",
                                "page_referrer", "utm_source", "utm_medium", "utm_campaign",
                                "transaction_id", "value")}},
]


def at(day: dt.date, hour: int = 12, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=UTC)


def days_before(n: int, as_of: dt.date = AS_OF) -> dt.date:
    return as_of - dt.timedelta(days=n)


@dataclass
class MartsWarehouse:
    """A warehouse with every staging table, and helpers to add rows and build."""

    conn: duckdb.DuckDBPyConnection
    config: CdmConfig
    _ids = itertools.count(1)

    def contact(self, record_id: str, *, source: str = "crm_contacts", day: dt.date = AS_OF, **values) -> None:
        insert_rows(self.conn, "contacts", [{
            "source_name": source, "source_record_id": record_id, "_partition_date": day,
            "quality_flags": [], "source_system": "crm" if source == "crm_contacts" else "email", **values,
        }])

    def order(self, order_id: str, contact_id: str | None, when: dt.datetime, amount: float, *,
              currency: str = "GBP", status: str = "completed", channel: str = "web",
              email: str | None = None, landed: dt.date | None = None) -> None:
        insert_rows(self.conn, "orders", [{
            "source_name": "crm_orders", "source_system": "crm", "source_record_id": order_id,
            "contact_id": contact_id, "email": email, "order_date": when, "amount": amount,
            "currency": currency, "status": status, "channel": channel,
            "_partition_date": landed or when.date(), "quality_flags": [],
        }])

    def email_event(self, subscriber_id: str, event_type: str, when: dt.datetime, *,
                    campaign: str | None = "autumn", bounce_type: str | None = None,
                    landed: dt.date | None = None) -> None:
        insert_rows(self.conn, "email_events", [{
            "source_name": "email_events", "source_system": "email",
            "source_record_id": f"e{next(self._ids)}", "subscriber_id": subscriber_id,
            "event_type": event_type, "occurred_at": when, "campaign_id": campaign,
            "campaign_name": campaign, "bounce_type": bounce_type,
            "_partition_date": landed or when.date(), "quality_flags": [],
        }])

    def web_event(self, client_id: str | None, when: dt.datetime, event_name: str = "page_view", *,
                  user_id: str | None = None, utm: tuple[str, str, str] | None = None,
                  referrer: str | None = None, transaction_id: str | None = None,
                  landed: dt.date | None = None) -> str:
        event_id = f"w{next(self._ids)}"
        source, medium, campaign = utm or (None, None, None)
        insert_rows(self.conn, "web_events", [{
            "source_name": "web_events", "source_system": "web", "source_record_id": event_id,
            "client_id": client_id, "user_id": user_id, "event_name": event_name, "occurred_at": when,
            "page_url": "https://shop.example.com/", "page_referrer": referrer,
            "utm_source": source, "utm_medium": medium, "utm_campaign": campaign,
            "transaction_id": transaction_id, "_partition_date": landed or when.date(), "quality_flags": [],
        }])
        return event_id

    def build(self, run_id: str = "test-run") -> MartsSummary:
        """Resolve identities for real, then build the marts."""
        resolve_identities(self.conn, self.config, run_id)
        return build_marts(self.conn, self.config)

    def customer_of(self, source: str, record_id: str) -> str:
        rows = self.conn.execute(
            "SELECT customer_id FROM identity.customer_xref WHERE source_name = ? AND source_record_id = ?",
            [source, record_id],
        ).fetchall()
        assert len(rows) == 1, (source, record_id, rows)
        return rows[0][0]

    def rows(self, sql: str, params: list | dict | None = None) -> list[tuple]:
        return self.conn.execute(sql, params or []).fetchall()


def marts_warehouse(folder: Path, **sections: object) -> MartsWarehouse:
    """Config (five sources, ``sections`` such as marts=/segments=/exports=) and empty staging."""
    document = {
        "warehouse": "warehouse.duckdb",
        "landing_dir": "landing",
        "sources": SOURCES,
        "identity": {
            "model_path": "identity/model.json",
            "overrides_path": "identity/overrides.csv",
            "same_ids": [
                {"source": "email_subscribers", "column": "linked_id", "equals": "crm_contacts"},
                {"source": "web_events", "column": "user_id", "equals": "crm_contacts"},
            ],
        },
        **sections,
    }
    path = folder / "cdm.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    config = load_config(path)
    conn = connect(config.warehouse)
    conn.execute("CREATE SCHEMA IF NOT EXISTS staging")
    for kind in ("contacts", "orders", "email_events", "web_events"):
        body = ", ".join(f"{name} {ddl}" for name, ddl in staging_columns(kind).items())
        conn.execute(f"CREATE TABLE staging.{kind} ({body})")
    return MartsWarehouse(conn, config)
