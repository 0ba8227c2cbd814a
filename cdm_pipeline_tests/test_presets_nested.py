"""Presets for nested and multi-file exports: Mailchimp, Klaviyo and GA4 (issue 18).

First the config: a source naming a preset gets the preset's settings, and the source's own keys
win. Then each preset's export, shaped as the tool writes it (export_fixtures/nested_tools.py),
is loaded and staged in-process on a DuckDB file, and the staged values are checked.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pytest
import yaml

from cdm_pipeline.config import ColumnSpec, load_config
from cdm_pipeline.lib.extract import load_partition
from cdm_pipeline.lib.extract.load import partition_files
from cdm_pipeline.lib.staging.build import stage_partition
from cdm_pipeline.lib.warehouse import connect
from cdm_pipeline.presets import preset
from cdm_pipeline_tests.export_fixtures.nested_tools import WRITERS, expected

DAY = dt.date(2024, 4, 2)
UTC = dt.UTC
PRESETS = tuple(WRITERS)
E = expected(DAY)


def _config(tmp_path: Path, sources: list[dict], **extra):
    document = {"warehouse": "wh.duckdb", "landing_dir": "landing", "start_date": "2024-04-01",
                "sources": sources, **extra}
    (tmp_path / "cdm.yaml").write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return load_config(tmp_path / "cdm.yaml")


def _spec(value) -> ColumnSpec | None:
    if value is None or isinstance(value, ColumnSpec):
        return value
    return ColumnSpec(column=value) if isinstance(value, str) else ColumnSpec.model_validate(value)


# --- The config: presets fill sources, the source's own keys win ----------------------------------


@pytest.mark.parametrize("name", PRESETS)
def test_a_source_naming_the_preset_gets_its_settings(tmp_path, name):
    source = _config(tmp_path, [{"name": "x", "preset": name}]).source("x")
    settings = preset(name)
    assert source.preset == name
    for key in ("system", "kind", "format", "path", "id_column", "id_from", "explode", "timezone"):
        assert getattr(source, key) == settings.get(key), key
    assert set(source.columns) == set(settings["columns"])
    for canonical, value in settings["columns"].items():
        assert source.column_spec(canonical) == _spec(value), canonical


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_describes_itself_and_cites_its_documentation(name):
    settings = preset(name)
    assert settings["description"].endswith(".") and settings["description"].count(". ") == 0
    assert settings["documentation"] and all(u.startswith(("https://", "http://")) for u in settings["documentation"])
    assert "{date}" in settings["path"]


def test_all_five_presets_load_in_one_project(tmp_path):
    config = _config(tmp_path, [{"name": name, "preset": name} for name in PRESETS])
    assert [s.kind for s in config.sources] == [
        "contacts", "email_events", "contacts", "email_events", "web_events"]
    # Activity names its members by id; the contacts sources of the same system hold them.
    assert config.linked_contacts_sources(config.source("klaviyo_events")) == ["klaviyo_profiles"]
    assert config.linked_contacts_sources(config.source("mailchimp_activity")) == ["mailchimp_audience"]


def test_mailchimp_audience_reads_the_status_from_the_file_name(tmp_path):
    source = _config(tmp_path, [{"name": "mc", "preset": "mailchimp_audience"}]).source("mc")
    opt_in = source.column_spec("email_opt_in")
    assert opt_in.from_filename == "^(subscribed|unsubscribed|cleaned)_"
    assert opt_in.values == {"subscribed": True, "unsubscribed": False, "cleaned": None}
    assert (source.id_column, source.timezone, source.path) == ("LEID", "UTC", "mailchimp/audience/{date}/*.csv")
    # LAST_CHANGED is in the subscribed file only: a file without it must still load.
    assert source.optional_source_columns == ["LAST_CHANGED"]
    assert "LAST_CHANGED" not in source.mapped_source_columns


def test_mailchimp_activity_explodes_each_members_activity(tmp_path):
    source = _config(tmp_path, [{"name": "mc", "preset": "mailchimp_activity"}]).source("mc")
    assert source.explode == "activity"
    assert source.id_from == ["subscriber_id", "campaign_id", "event_type", "occurred_at", "url"]
    assert source.column_spec("event_type") == ColumnSpec(
        column="activity", path="action", values={"open": "open", "click": "click", "bounce": "bounce"})
    assert source.column_spec("occurred_at") == ColumnSpec(column="activity", path="timestamp")
    assert source.column_spec("email") == ColumnSpec(column="email_address")


def test_klaviyo_events_map_metric_names_onto_event_types(tmp_path):
    source = _config(tmp_path, [{"name": "kl", "preset": "klaviyo_events"}]).source("kl")
    event_type = source.column_spec("event_type")
    assert (event_type.column, event_type.path) == ("relationships", "metric.data.name")
    assert event_type.values["Received Email"] == "delivered"
    assert event_type.values["Marked Email as Spam"] == "spam_complaint"
    assert source.column_spec("subscriber_id") == ColumnSpec(column="relationships", path="profile.data.id")
    assert source.column_spec("campaign_name") == ColumnSpec(column="attributes", path="event_properties.Campaign Name")


def test_ga4_reads_params_struct_fields_and_microseconds(tmp_path):
    source = _config(tmp_path, [{"name": "ga4", "preset": "ga4_bigquery"}]).source("ga4")
    assert source.column_spec("occurred_at") == ColumnSpec(column="event_timestamp", format="epoch_us")
    assert source.column_spec("session_id") == ColumnSpec(column="event_params", param="ga_session_id")
    assert source.column_spec("page_url") == ColumnSpec(column="event_params", param="page_location")
    assert source.column_spec("device_category") == ColumnSpec(column="device", path="category")
    assert source.column_spec("value") == ColumnSpec(column="ecommerce", path="purchase_revenue")
    assert source.column_spec("client_id") == ColumnSpec(column="user_pseudo_id")
    assert source.id_column is None and source.id_from == ["client_id", "occurred_at", "event_name", "session_id"]


def test_the_sources_own_keys_win_over_the_preset(tmp_path):
    source = _config(tmp_path, [{
        "name": "web", "preset": "ga4_bigquery", "system": "analytics",
        "path": "exports/ga4/{date}/events_*.parquet", "timezone": "Europe/London",
        "columns": {
            "user_id": None,  # unmapped
            "utm_source": {"column": "collected_traffic_source", "path": "manual_source"},
        },
    }]).source("web")
    assert (source.system, source.path, source.timezone) == (
        "analytics", "exports/ga4/{date}/events_*.parquet", "Europe/London"
    )
    assert source.column_spec("user_id") is None and "user_id" not in source.mapped
    assert source.column_spec("utm_source") == ColumnSpec(column="collected_traffic_source", path="manual_source")
    # Every other column is the preset's.
    assert source.column_spec("utm_medium") == ColumnSpec(column="event_params", param="medium")
    assert source.kind == "web_events" and source.format == "parquet"


def test_a_source_may_replace_the_presets_id(tmp_path):
    source = _config(tmp_path, [{"name": "mc", "preset": "mailchimp_audience", "id_column": "EUID"}]).source("mc")
    assert source.id_column == "EUID"
    assert source.column_spec("email") == ColumnSpec(column="Email Address")


# --- The exports, loaded and staged ------------------------------------------------------------------


def _stage(tmp_path: Path, names: tuple[str, ...], kinds: tuple[str, ...]):
    landing = tmp_path / "landing"
    for name in names:
        WRITERS[name](landing, DAY)
    config = _config(tmp_path, [{"name": name, "preset": name} for name in names])
    conn = connect(config.warehouse)
    loaded_at = dt.datetime(2024, 4, 3, 2, 0, tzinfo=UTC)
    loads = {s.name: load_partition(conn, s, config.landing_dir, DAY, loaded_at, config=config)
             for s in config.sources}
    staged = {kind: stage_partition(conn, config, kind, DAY) for kind in kinds}
    return conn, loads, staged


def _by(conn, sql: str, params=()) -> dict:
    return {row[0]: row[1:] if len(row) > 2 else row[1] for row in conn.execute(sql, params).fetchall()}


def test_mailchimp_audience_stages_every_member_with_the_consent_its_file_states(tmp_path):
    conn, loads, staged = _stage(tmp_path, ("mailchimp_audience",), ("contacts",))
    facts = E["mailchimp_audience"]
    load = loads["mailchimp_audience"]
    assert (load.files, load.rows, load.rejects) == (facts["files"], facts["records"], 0)
    assert staged["contacts"].quarantine_reasons == {}
    assert staged["contacts"].staged == facts["records"]
    assert _by(conn, "SELECT email, email_opt_in FROM staging.contacts") == facts["opt_in"]
    amelia = conn.execute(
        "SELECT source_record_id, email, phone, created_at, updated_at FROM staging.contacts"
        " WHERE email = 'amelia.hughes@btinternet.com'"
    ).fetchone()
    assert amelia == (facts["record_id_of_amelia"], "amelia.hughes@btinternet.com", facts["phone_of_amelia"],
                      facts["created_at_of_amelia"], facts["updated_at_of_amelia"])
    # LAST_CHANGED exists only in the subscribed file: the others load with no updated_at.
    assert conn.execute(
        "SELECT count(*) FROM staging.contacts WHERE updated_at IS NULL").fetchone()[0] == 3
    names = set(conn.execute("SELECT first_name, last_name FROM staging.contacts").fetchall())
    assert facts["names"] <= names


def test_mailchimp_activity_gives_one_event_per_action(tmp_path):
    conn, loads, staged = _stage(tmp_path, ("mailchimp_activity",), ("email_events",))
    facts = E["mailchimp_activity"]
    assert (loads["mailchimp_activity"].rows, loads["mailchimp_activity"].rejects) == (facts["members"], 0)
    result = staged["email_events"]
    assert (result.raw_rows, result.staged, result.quarantine_reasons) == (facts["events"], facts["events"], {})
    assert _by(conn, "SELECT event_type, count(*) FROM staging.email_events GROUP BY 1") == facts["by_type"]
    assert conn.execute(
        "SELECT count(DISTINCT source_record_id) FROM staging.email_events"
    ).fetchone()[0] == facts["events"]
    amelia = conn.execute(
        "SELECT subscriber_id, min(occurred_at), count(*), any_value(campaign_id) FROM staging.email_events"
        " WHERE email = 'amelia.hughes@btinternet.com' GROUP BY 1"
    ).fetchall()
    assert amelia == [
        (facts["amelia_email_id"], facts["first_open_of_amelia"], facts["amelia_events"], facts["campaign_id"])
    ]
    assert conn.execute(
        "SELECT bounce_type, url FROM staging.email_events WHERE event_type = 'bounce'"
    ).fetchall() == [(facts["bounce_type"], None)]
    assert {
        r[0] for r in conn.execute("SELECT url FROM staging.email_events WHERE event_type = 'click'").fetchall()
    } == facts["click_urls"]
    assert conn.execute("SELECT count(*) FROM staging.email_events WHERE campaign_name IS NOT NULL").fetchone()[0] == 0


def test_mailchimp_audience_and_activity_stage_together(tmp_path):
    # One system, two sources: the activity's subscriber ids (email_id) name no audience record;
    # the events still stage, and carry the email that links them.
    conn, _, staged = _stage(tmp_path, ("mailchimp_audience", "mailchimp_activity"), ("contacts", "email_events"))
    assert staged["contacts"].staged == E["mailchimp_audience"]["records"]
    assert staged["email_events"].staged == E["mailchimp_activity"]["events"]
    assert staged["email_events"].quarantined == 0
    assert conn.execute(
        "SELECT count(*) FROM staging.email_events e"
        " WHERE e.subscriber_id IN (SELECT source_record_id FROM staging.contacts)"
        " OR e.email NOT IN (SELECT email FROM staging.contacts)"
    ).fetchone()[0] == 0


def test_klaviyo_profiles_stage_with_consent_company_and_country(tmp_path):
    conn, loads, staged = _stage(tmp_path, ("klaviyo_profiles",), ("contacts",))
    facts = E["klaviyo_profiles"]
    assert (loads["klaviyo_profiles"].rows, loads["klaviyo_profiles"].rejects) == (facts["records"], 0)
    assert (staged["contacts"].staged, staged["contacts"].quarantine_reasons) == (facts["records"], {})
    assert _by(conn, "SELECT email, email_opt_in FROM staging.contacts") == facts["opt_in"]
    assert conn.execute(
        "SELECT source_record_id, company, country, created_at FROM staging.contacts"
        " WHERE email = 'm.khan@fastmail.com'"
    ).fetchone() == (facts["id_of_mohammed"], facts["company_of_mohammed"], facts["country"], facts["created_at"])
    assert {
        r[0] for r in conn.execute("SELECT DISTINCT country FROM staging.contacts").fetchall()
    } == {facts["country"]}


def test_klaviyo_events_stage_with_their_metric_names_as_types(tmp_path):
    conn, loads, staged = _stage(tmp_path, ("klaviyo_profiles", "klaviyo_events"), ("email_events",))
    facts = E["klaviyo_events"]
    assert (loads["klaviyo_events"].rows, loads["klaviyo_events"].rejects) == (facts["events"], 0)
    assert (staged["email_events"].staged, staged["email_events"].quarantine_reasons) == (facts["events"], {})
    assert _by(conn, "SELECT event_type, count(*) FROM staging.email_events GROUP BY 1") == facts["by_type"]
    click = conn.execute(
        "SELECT subscriber_id, occurred_at, campaign_id, campaign_name, url FROM staging.email_events"
        " WHERE event_type = 'click'"
    ).fetchone()
    assert click[:4] == (facts["subscriber_of_clicks"], facts["click_at"], facts["campaign_id"], facts["campaign_name"])
    assert click[4].startswith("https://shop.example.co.uk/products/linen-shirt")
    assert conn.execute(
        "SELECT bounce_type FROM staging.email_events WHERE event_type = 'bounce'"
    ).fetchall() == [(facts["bounce_type"],)]
    # The events name their profile by the id the profiles export holds.
    assert conn.execute(
        "SELECT count(*) FROM staging.email_events WHERE subscriber_id NOT IN"
        " (SELECT \"Klaviyo ID\" FROM raw.klaviyo_profiles)"
    ).fetchone()[0] == 0


def test_ga4_export_stages_events_from_nested_parquet(tmp_path):
    conn, loads, staged = _stage(tmp_path, ("ga4_bigquery",), ("web_events",))
    facts = E["ga4_bigquery"]
    assert (loads["ga4_bigquery"].rows, loads["ga4_bigquery"].rejects) == (facts["events"], 0)
    result = staged["web_events"]
    assert (result.staged, result.quarantine_reasons) == (facts["events"], {})
    assert conn.execute(
        "SELECT count(DISTINCT source_record_id) FROM staging.web_events"
    ).fetchone()[0] == facts["events"]
    # Microseconds since 1970, to the microsecond, in UTC.
    assert conn.execute("SELECT min(occurred_at) FROM staging.web_events").fetchone()[0] == facts["first_event_at"]
    assert _by(conn, "SELECT event_name, count(*) FROM staging.web_events GROUP BY 1") == facts["event_names"]
    assert _by(conn, "SELECT device_category, count(*) FROM staging.web_events GROUP BY 1") == facts["devices"]
    assert _by(conn, "SELECT country, count(*) FROM staging.web_events GROUP BY 1") == facts["countries"]
    assert _by(conn, "SELECT user_id IS NULL, count(*) FROM staging.web_events GROUP BY 1") == {
        True: facts["anonymous_events"], False: facts["logged_in_events"]}
    assert {
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT user_id FROM staging.web_events WHERE user_id IS NOT NULL"
        ).fetchall()
    } == {facts["user_id"]}
    # Event parameters: the session id (an int_value), the landing page's campaign.
    first = conn.execute(
        "SELECT session_id, page_url, utm_source, utm_medium, utm_campaign FROM staging.web_events"
        " WHERE event_name = 'session_start' AND user_id IS NULL AND utm_source IS NOT NULL"
    ).fetchone()
    assert first[0] == facts["newcomer_session_id"]
    assert first[1].startswith("https://shop.example.co.uk/collections/spring?")
    assert first[2:] == facts["utm"]
    assert conn.execute(
        "SELECT count(*) FROM staging.web_events WHERE utm_source IS NOT NULL"
    ).fetchone()[0] == facts["utm_events"]
    # Struct fields: the purchase's revenue and transaction; "(not set)" on the other ecommerce events.
    purchase = facts["purchase"]
    assert conn.execute(
        "SELECT value, currency, transaction_id FROM staging.web_events WHERE event_name = 'purchase'"
    ).fetchone() == (purchase["value"], purchase["currency"], purchase["transaction_id"])
    assert conn.execute(
        "SELECT count(*) FROM staging.web_events WHERE transaction_id IS NOT NULL").fetchone()[0] == 1
    assert conn.execute(
        "SELECT count(*) FROM staging.web_events WHERE event_name = 'view_item' AND value IS NULL AND currency = 'GBP'"
    ).fetchone()[0] == 1


def test_every_fixture_lands_at_its_presets_path(tmp_path):
    landing = tmp_path / "landing"
    config = _config(tmp_path, [{"name": name, "preset": name} for name in PRESETS])
    for source in config.sources:
        written = WRITERS[source.name](landing, DAY)
        assert partition_files(source, config.landing_dir, DAY) == sorted(written), source.name
    assert Counter(p.suffix for p in landing.rglob("*.*")) == {".csv": 4, ".jsonl": 2, ".parquet": 1}
