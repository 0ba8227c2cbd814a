"""Quality checks without Dagster: the suites, validating frames with GX, offline Data Docs."""

import base64
import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from cdm_pipeline.lib.quality import (
    CRITICAL,
    E164_REGEX,
    EMAIL_REGEX,
    SUITES,
    WARNING,
    MissingColumnsError,
    QualityError,
    data_docs,
    required_columns,
    validate_frame,
    write_data_docs,
)
from cdm_pipeline.lib.quality.expectations import COUNTRY_CODES, CURRENCY_CODES

# Staging columns and their DuckDB types; frames are read back from DuckDB as the pipeline does.
STAGING = {
    "contacts": {
        "source_name": "VARCHAR", "source_system": "VARCHAR", "source_record_id": "VARCHAR",
        "first_name": "VARCHAR", "last_name": "VARCHAR", "email": "VARCHAR", "phone": "VARCHAR",
        "birth_date": "DATE", "birth_date_text": "VARCHAR", "address_line1": "VARCHAR",
        "address_line2": "VARCHAR", "city": "VARCHAR", "postcode": "VARCHAR", "region": "VARCHAR",
        "country": "VARCHAR", "company": "VARCHAR", "email_opt_in": "BOOLEAN", "do_not_sell": "BOOLEAN",
        "created_at": "TIMESTAMPTZ", "updated_at": "TIMESTAMPTZ", "quality_flags": "VARCHAR[]",
        "_source_file": "VARCHAR", "_source_row": "BIGINT", "_partition_date": "DATE",
    },
    "orders": {
        "source_name": "VARCHAR", "source_system": "VARCHAR", "source_record_id": "VARCHAR",
        "contact_id": "VARCHAR", "email": "VARCHAR", "order_date": "TIMESTAMPTZ",
        "amount": "DECIMAL(18, 2)", "currency": "VARCHAR", "status": "VARCHAR", "channel": "VARCHAR",
        "quality_flags": "VARCHAR[]", "_source_file": "VARCHAR", "_source_row": "BIGINT",
        "_partition_date": "DATE",
    },
    "email_events": {
        "source_name": "VARCHAR", "source_system": "VARCHAR", "source_record_id": "VARCHAR",
        "subscriber_id": "VARCHAR", "email": "VARCHAR", "event_type": "VARCHAR",
        "occurred_at": "TIMESTAMPTZ", "campaign_id": "VARCHAR", "campaign_name": "VARCHAR",
        "url": "VARCHAR", "bounce_type": "VARCHAR", "quality_flags": "VARCHAR[]",
        "_source_file": "VARCHAR", "_source_row": "BIGINT", "_partition_date": "DATE",
    },
    "web_events": {
        "source_name": "VARCHAR", "source_system": "VARCHAR", "source_record_id": "VARCHAR",
        "client_id": "VARCHAR", "user_id": "VARCHAR", "email": "VARCHAR", "event_name": "VARCHAR",
        "occurred_at": "TIMESTAMPTZ", "session_id": "VARCHAR", "page_url": "VARCHAR",
        "page_referrer": "VARCHAR", "utm_source": "VARCHAR", "utm_medium": "VARCHAR",
        "utm_campaign": "VARCHAR", "device_category": "VARCHAR", "country": "VARCHAR",
        "value": "DOUBLE", "currency": "VARCHAR", "transaction_id": "VARCHAR",
        "quality_flags": "VARCHAR[]", "_source_file": "VARCHAR", "_source_row": "BIGINT",
        "_partition_date": "DATE",
    },
}

# DuckDB's DataFrame export uses a keyword pandas 3.1 deprecates; not this module's concern.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.drop:DeprecationWarning")

DAY = dt.date(2026, 10, 1)
AT = dt.datetime(2026, 10, 1, 9, 30, tzinfo=dt.timezone.utc)
N = 20
PLANTED_EMAIL = "planted.person.7731@@example.org"
PLANTED_PHONE = "07700 900731"


def _good_row(table: str, i: int) -> dict:
    common = {
        "source_name": "src_a", "source_system": "crm", "source_record_id": f"R{i:04d}",
        "quality_flags": [], "_source_file": "a.csv", "_source_row": i + 1, "_partition_date": DAY,
    }
    if table == "contacts":
        return common | {
            "first_name": f"Ann{i}", "last_name": f"Lee{i}", "email": f"ann.lee{i}@example.com",
            "phone": f"+4420794600{i:02d}", "birth_date": dt.date(1980, 1, 1) + dt.timedelta(days=97 * i),
            "birth_date_text": "1980-01-01", "address_line1": f"{i} High Street", "city": "London",
            "postcode": "SW1A 1AA", "country": ["GB", "DE", "FR", "US"][i % 4], "company": "Acme",
            "email_opt_in": i % 2 == 0, "do_not_sell": False,
            "created_at": AT - dt.timedelta(days=400), "updated_at": AT - dt.timedelta(days=i),
        }
    if table == "orders":
        return common | {
            "contact_id": f"C{i:04d}", "email": f"buyer{i}@shop.example.co.uk",
            "order_date": AT - dt.timedelta(hours=i), "amount": 10 + 7.5 * i,
            "currency": ["GBP", "EUR", "USD"][i % 3],
            "status": ["completed", "pending", "cancelled", "refunded"][i % 4], "channel": "web",
        }
    if table == "email_events":
        event_type = ["sent", "delivered", "open", "click", "bounce", "unsubscribe"][i % 6]
        return common | {
            "subscriber_id": f"S{i:04d}" if i % 3 else None,
            "email": None if i in (1, 8) else f"reader{i}@example.net",
            "event_type": event_type, "occurred_at": AT + dt.timedelta(minutes=i),
            "campaign_id": "CMP1", "campaign_name": "October",
            "bounce_type": ["hard", "soft"][i % 2] if event_type == "bounce" else None,
        }
    return common | {
        "client_id": f"GA1.2.{i}" if i % 4 else None, "user_id": f"U{i}" if i % 2 == 0 else None,
        "email": f"visitor{i}@example.com" if i % 5 == 0 else None,
        "event_name": ["page_view", "add_to_cart", "begin_checkout", "purchase", "login", "form_submit"][i % 6],
        "occurred_at": AT + dt.timedelta(seconds=i), "session_id": f"s{i // 3}",
        "page_url": "/shop", "device_category": ["desktop", "mobile", "tablet"][i % 3],
        "country": "GB", "value": float(i) if i % 6 == 3 else None,
        "currency": "GBP" if i % 6 == 3 else None,
    }


def staged(table: str, rows: list[dict]) -> pd.DataFrame:
    """Rows written to a typed DuckDB table and read back with ``.df()``, as the pipeline does."""
    columns = STAGING[table]
    unknown = {key for row in rows for key in row} - set(columns)
    assert not unknown, unknown
    with duckdb.connect() as conn:
        conn.execute(f"CREATE TABLE t ({', '.join(f'{c} {t}' for c, t in columns.items())})")
        if rows:
            conn.executemany(
                f"INSERT INTO t VALUES ({', '.join('?' for _ in columns)})",
                [tuple(row.get(column) for column in columns) for row in rows],
            )
        return conn.execute("SELECT * FROM t").df()


def good_rows(table: str, n: int = N) -> list[dict]:
    return [_good_row(table, i) for i in range(n)]


def _failed(result) -> dict[str, int | None]:
    return {o.key: o.unexpected_count for o in result.outcomes if not o.success}


# --- the suites -----------------------------------------------------------------------------------


def test_suites_are_well_formed():
    import great_expectations.expectations as gxe

    assert set(SUITES) == {"contacts", "orders", "email_events", "web_events"}
    for table, specs in SUITES.items():
        assert 6 <= len(specs) <= 11, table
        keys = [spec.key for spec in specs]
        assert len(set(keys)) == len(keys)
        for spec in specs:
            assert re.fullmatch(r"[a-z][a-z0-9_]*", spec.key), spec.key
            assert spec.severity in (CRITICAL, WARNING)
            assert hasattr(gxe, spec.gx_type), spec.gx_type
            assert spec.description.endswith(".") and len(spec.description) > 40
            assert set(spec.columns) <= set(STAGING[table]), (table, spec.key, spec.columns)
        criticals = {spec.key for spec in specs if spec.severity == CRITICAL}
        assert {"record_id_not_null", "record_id_unique_in_partition"} <= criticals
    contacts = {spec.key: spec for spec in SUITES["contacts"]}
    assert contacts["email_syntax_mostly_valid"].kwargs["mostly"] == 0.9
    assert contacts["email_syntax_all_valid"].severity == WARNING
    assert contacts["record_id_unique_in_partition"].columns == ("source_name", "source_record_id", "_partition_date")
    assert contacts["updated_not_before_created"].columns == ("updated_at", "created_at")
    web = {spec.key: spec for spec in SUITES["web_events"]}
    assert web["identity_present"].columns == ("client_id", "user_id")
    assert required_columns(SUITES["orders"])[:3] == ("source_record_id", "source_name", "_partition_date")


def test_reference_lists_and_patterns():
    assert len(COUNTRY_CODES) == 249 and "GB" in COUNTRY_CODES and "UK" not in COUNTRY_CODES
    assert {"GBP", "EUR", "USD"} <= set(CURRENCY_CODES) and "XXX" in CURRENCY_CODES
    good = ["a@b.co", "ann.lee+news@mail.example.co.uk", "o'neil@example.ie", "x_y-z@sub-domain.example"]
    bad = ["n/a", "ann@", "@example.com", "ann@@example.com", "ann@example", "ann lee@example.com",
           "ann..lee@example.com", ".ann@example.com", "ann@-example.com", "ann@example.c0m", "ann@localhost"]
    for value in good:
        assert re.match(EMAIL_REGEX, value), value
    for value in bad:
        assert not re.match(EMAIL_REGEX, value), value
    assert re.match(E164_REGEX, "+442079460000") and re.match(E164_REGEX, "+1234567")
    bad_phones = ["02079460000", "+0207946000", "+44 20 7946 0000", "+123456", "+1234567890123456", "+44٢٠٧٩٤٦٠٠٠"]
    for value in bad_phones:
        assert not re.match(E164_REGEX, value), value


# --- validating ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", sorted(STAGING))
def test_good_frame_passes_every_expectation(table):
    result = validate_frame(table, staged(table, good_rows(table)))
    assert result.table == table
    assert [o.key for o in result.outcomes] == [spec.key for spec in SUITES[table]]
    assert _failed(result) == {}
    assert result.success and result.critical_success
    for outcome in result.outcomes:
        assert outcome.unexpected_count == 0
        assert outcome.element_count is not None and 0 < outcome.element_count <= N
    assert result.evaluated_at.tzinfo is not None
    assert result.gx_result.success is True


def test_garbled_export_fails_critical_email_syntax():
    rows = good_rows("contacts")
    for i in range(6):  # 30 %
        rows[i]["email"] = f"ann{i}#example.com"
    rows[6]["email"] = None  # missing values are not syntax errors (GX map expectations skip nulls)
    result = validate_frame("contacts", staged("contacts", rows))
    critical = result.outcome("email_syntax_mostly_valid")
    assert (critical.success, critical.severity, critical.unexpected_count, critical.element_count) == (
        False, CRITICAL, 6, 20,
    )
    assert critical.unexpected_percent == pytest.approx(6 / 19 * 100)  # of the non-missing values
    warning = result.outcome("email_syntax_all_valid")
    assert (warning.success, warning.severity, warning.unexpected_count) == (False, WARNING, 6)
    assert _failed(result) == {"email_syntax_mostly_valid": 6, "email_syntax_all_valid": 6}
    assert not result.critical_success and not result.success


def test_one_invalid_email_only_warns():
    rows = good_rows("contacts")
    rows[7]["email"] = "ann.lee7@example"
    rows[8]["phone"] = "020 7946 0008"
    result = validate_frame("contacts", staged("contacts", rows))
    assert result.outcome("email_syntax_mostly_valid").success
    assert result.outcome("phone_e164_mostly_valid").success
    assert _failed(result) == {"email_syntax_all_valid": 1, "phone_e164_all_valid": 1}
    assert result.outcome("email_syntax_all_valid").unexpected_percent == pytest.approx(5.0)
    assert result.critical_success and not result.success


def test_duplicated_record_id_counts_both_rows():
    rows = good_rows("orders")
    rows[5]["source_record_id"] = rows[4]["source_record_id"]
    rows[9]["_partition_date"] = DAY + dt.timedelta(days=1)  # same id on another day is fine
    rows[9]["source_record_id"] = rows[10]["source_record_id"]
    result = validate_frame("orders", staged("orders", rows))
    assert _failed(result) == {"record_id_unique_in_partition": 2}
    assert not result.critical_success


def test_warnings_and_guards_per_table():
    contacts = good_rows("contacts")
    contacts[0]["country"] = "United Kingdom"
    contacts[1]["birth_date"] = dt.date(1899, 12, 31)
    contacts[2]["birth_date"] = dt.date.today() + dt.timedelta(days=1)
    contacts[3]["updated_at"] = contacts[3]["created_at"] - dt.timedelta(seconds=1)
    contacts[4]["created_at"] = None  # pairs with a missing time are skipped
    contacts[5]["first_name"] = None
    assert _failed(validate_frame("contacts", staged("contacts", contacts))) == {
        "country_iso_alpha2": 1, "birth_date_plausible": 2, "updated_not_before_created": 1,
    }
    orders = good_rows("orders")
    orders[0]["currency"] = "XYZ"
    orders[1]["status"] = "shipped"
    orders[2]["contact_id"] = None  # 5 % anonymous > 1 %
    orders[3]["amount"] = 250_000
    orders[4]["amount"] = -1
    orders[5]["order_date"] = None
    result = validate_frame("orders", staged("orders", orders))
    assert _failed(result) == {
        "currency_iso4217": 1, "status_known": 1, "contact_id_mostly_present": 1,
        "amount_below_outlier_limit": 1, "amount_non_negative": 1, "order_date_not_null": 1,
    }
    assert not result.critical_success
    events = good_rows("email_events")
    events[1]["subscriber_id"], events[1]["email"] = None, None  # no identity at all
    events[2]["event_type"] = "spam_report"
    events[4]["bounce_type"] = "blocked"
    result = validate_frame("email_events", staged("email_events", events))
    assert _failed(result) == {"identity_present": 1, "event_type_known": 1, "bounce_type_known": 1}
    identity = result.outcome("identity_present")
    assert identity.element_count == 2  # only rows without an email are checked
    web = good_rows("web_events")
    web[1]["client_id"], web[1]["user_id"] = None, None
    web[3]["value"] = -5.0
    web[4]["device_category"] = "smart_tv"
    web[5]["event_name"] = "wishlist_poke"  # not a GA4 standard event
    web[6]["country"] = "UK"
    result = validate_frame("web_events", staged("web_events", web))
    assert _failed(result) == {
        "identity_present": 1, "value_non_negative": 1, "device_category_known": 1,
        "event_name_known": 1, "country_iso_alpha2": 1,
    }
    assert not result.critical_success


def test_date_columns_of_python_dates_are_compared_as_dates():
    frame = staged("contacts", good_rows("contacts"))
    frame["birth_date"] = [dt.date(1850, 1, 1)] + [d.date() for d in frame["birth_date"][1:]]
    assert frame["birth_date"].dtype == object
    result = validate_frame("contacts", frame)
    assert _failed(result) == {"birth_date_plausible": 1}
    assert frame["birth_date"].dtype == object  # the caller's frame is not changed


@pytest.mark.parametrize("table", ["contacts", "web_events"])
def test_results_match_specs_by_type_and_kwargs_without_keys(table):
    from cdm_pipeline.lib.quality import validate as quality_validate

    rows = good_rows(table)
    if table == "contacts":
        rows[0]["birth_date"], rows[1]["email"] = dt.date(1800, 1, 1), "x@"
    else:
        rows[1]["client_id"], rows[1]["user_id"], rows[2]["value"] = None, None, -1.0
    frame = staged(table, rows)
    result = validate_frame(table, frame)
    specs = SUITES[table]
    gx_suite = quality_validate.build_suite(table, specs, quality_validate._prepare_frame(frame, specs))
    unkeyed = list(reversed(result.gx_result.results))
    for expectation_result in unkeyed:
        expectation_result.expectation_config.meta = {}
    pairs = quality_validate._match_results(table, specs, gx_suite, unkeyed)
    assert [(spec.key, r.success) for spec, r in pairs] == [(o.key, o.success) for o in result.outcomes]
    assert len(_failed(result)) == 2


def test_missing_columns_raise_a_clear_error():
    frame = staged("contacts", good_rows("contacts")).drop(columns=["phone", "_partition_date"])
    with pytest.raises(MissingColumnsError) as caught:
        validate_frame("contacts", frame)
    message = str(caught.value)
    assert "'contacts'" in message
    assert "phone (read by phone_e164_mostly_valid, phone_e164_all_valid)" in message
    assert "_partition_date (read by record_id_unique_in_partition)" in message
    assert caught.value.missing == {
        "_partition_date": ["record_id_unique_in_partition"],
        "phone": ["phone_e164_mostly_valid", "phone_e164_all_valid"],
    }
    with pytest.raises(QualityError, match="no expectation suite for table 'customers'"):
        validate_frame("customers", frame)


def test_only_the_columns_read_are_needed_and_a_subset_can_run():
    specs = SUITES["orders"]
    frame = staged("orders", good_rows("orders"))[list(required_columns(specs))]
    assert validate_frame("orders", frame).success
    subset = [spec for spec in specs if spec.key in ("amount_non_negative", "status_known")]
    result = validate_frame("orders", frame[["amount", "status"]], suite=subset)
    assert [o.key for o in result.outcomes] == ["amount_non_negative", "status_known"]


@pytest.mark.parametrize("table", sorted(STAGING))
def test_empty_frame_passes(table):
    result = validate_frame(table, staged(table, []))
    assert result.success and result.critical_success
    for outcome in result.outcomes:
        assert (outcome.success, outcome.element_count, outcome.unexpected_count) == (True, 0, 0)
        assert outcome.unexpected_percent is None


def _planted_contacts() -> pd.DataFrame:
    rows = good_rows("contacts")
    rows[3]["email"] = PLANTED_EMAIL
    rows[4]["phone"] = PLANTED_PHONE
    rows[5]["country"] = "Plantedland"
    return staged("contacts", rows)


def test_results_hold_no_row_values():
    result = validate_frame("contacts", _planted_contacts(), run_name="privacy")
    assert _failed(result) == {"email_syntax_all_valid": 1, "phone_e164_all_valid": 1, "country_iso_alpha2": 1}
    text = repr(result.outcomes) + json.dumps(result.gx_result.to_json_dict(), default=str)
    for planted in (PLANTED_EMAIL, "planted.person", PLANTED_PHONE, "900731", "Plantedland"):
        assert planted not in text
    for expectation_result in result.gx_result.results:
        assert not set(expectation_result.result) & {"partial_unexpected_list", "partial_unexpected_counts",
                                                     "unexpected_list", "partial_unexpected_index_list"}
    assert result.gx_result.meta["run_id"].run_name == "privacy"


def test_an_expectation_that_raises_fails_without_leaking_values(tmp_path, caplog):
    frame = staged("web_events", good_rows("web_events"))
    frame["value"] = frame["value"].astype(object)
    frame.loc[3, "value"] = "planted-value-42"  # text in a numeric column: GX cannot compare it
    result = validate_frame("web_events", frame)
    outcome = result.outcome("value_non_negative")
    assert (outcome.success, outcome.unexpected_count, outcome.observed_value) == (
        False, None, "error: MetricResolutionError",
    )
    assert result.critical_success and not result.success  # a warning check; a critical one would block
    assert "value_non_negative raised MetricResolutionError" in caplog.text
    assert "planted-value" not in caplog.text  # the log line names the check, never the value
    write_data_docs([result], tmp_path / "site")
    texts = [json.dumps(result.gx_result.to_json_dict(), default=str)] + [
        p.read_text(encoding="utf-8") for p in tmp_path.rglob("*") if p.suffix in (".html", ".json")
    ]
    assert not any("planted-value" in text for text in texts)


# --- Data Docs ----------------------------------------------------------------------------------------

_RESOURCE_TAG = re.compile(r"<(script|link|img)\b[^>]*>", re.IGNORECASE)
_ATTRIBUTE = re.compile(r"\b(src|href)\s*=\s*([\"'])(.*?)\2", re.IGNORECASE)
_CSS_URL = re.compile(r"url\(\s*([\"']?)([^\"')]*?)\1\s*\)", re.IGNORECASE)
_CSS_IMPORT = re.compile(r"@import\s+(?:url\()?\s*[\"']?([^\"')\s;]+)", re.IGNORECASE)


def _references(path: Path) -> list[tuple[str, str]]:
    """(kind, url) of everything a page or style sheet loads."""
    text = path.read_text(encoding="utf-8")
    found = []
    if path.suffix == ".html":
        for tag in _RESOURCE_TAG.finditer(text):
            attribute = _ATTRIBUTE.search(tag.group(0))
            if attribute:
                found.append((tag.group(1).lower(), attribute.group(3)))
    found += [("url()", m.group(2)) for m in _CSS_URL.finditer(text)]
    found += [("@import", m.group(1)) for m in _CSS_IMPORT.finditer(text)]
    return found


def _site_files(site: Path, suffixes=(".html", ".css")) -> list[Path]:
    return sorted(p for p in site.rglob("*") if p.suffix in suffixes)


def _assert_offline(site: Path) -> int:
    checked = 0
    for path in _site_files(site):
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".html":
            assert not re.search(r"""href\s*=\s*["']\s*(?:https?:)?//""", text), path
        for kind, url in _references(path):
            if url.startswith(("data:", "#")) or not url:
                continue
            assert not re.match(r"(?:https?:)?//", url), (path, kind, url)
            target = (path.parent / url.split("?")[0].split("#")[0]).resolve()
            assert target.is_file(), (path, kind, url)
            assert site.resolve() in target.parents, (path, url)
            checked += 1
    return checked


def test_data_docs_are_offline_self_contained_and_pruned(tmp_path):
    reports = tmp_path / "reports"
    site = reports / "data_docs"
    runs = []
    for run in range(3):
        runs.append([
            validate_frame("contacts", _planted_contacts(), run_name=f"nightly-{run}"),
            validate_frame("orders", staged("orders", good_rows("orders")), run_name=f"nightly-{run}"),
        ])
    index = write_data_docs(runs[0], site, keep_runs=2)
    assert index == site / "index.html" and index.is_file()
    write_data_docs(runs[1], site, keep_runs=2)
    write_data_docs(runs[2], site, keep_runs=2)

    store = reports / "gx" / "uncommitted" / "validations"
    stored = sorted(p.relative_to(store).parts[:2] for p in store.rglob("*.json"))
    assert stored == [
        ("staging_contacts", "nightly-1"), ("staging_contacts", "nightly-2"),
        ("staging_orders", "nightly-1"), ("staging_orders", "nightly-2"),
    ]
    pages = sorted(p.relative_to(site / "validations").parts[:2] for p in (site / "validations").rglob("*.html"))
    assert pages == stored
    suite_pages = sorted(p.name for p in (site / "expectations").glob("*.html"))
    assert suite_pages == ["staging_contacts.html", "staging_orders.html"]

    # Rebuilding without new results changes nothing, and the site stays offline-ready.
    assert write_data_docs([], site, keep_runs=2) == index
    assert sorted(p.relative_to(store).parts[:2] for p in store.rglob("*.json")) == stored
    assert _assert_offline(site) > 100
    index_text = index.read_text(encoding="utf-8")
    assert 'src="static/vendor/jquery@3.7.1/dist/jquery.min.js"' in index_text
    assert "integrity=" not in index_text and "crossorigin" not in index_text
    assert "Stay current on everything GX" not in index_text
    page = next((site / "validations" / "staging_contacts").rglob("*.html")).read_text(encoding="utf-8")
    assert 'href="../../../../static/images/favicon.ico"' in page  # GX links it one folder short
    assert "staging.contacts" in page  # the data asset, which GX leaves empty for dataframe batches

    for path in list(reports.rglob("*")):
        if path.is_file() and path.suffix in (".html", ".json", ".css", ".yml"):
            text = path.read_text(encoding="utf-8")
            for planted in (PLANTED_EMAIL, "planted.person", PLANTED_PHONE, "900731", "Plantedland"):
                assert planted not in text, path

    # Keeping fewer runs prunes the store and the pages on the next build.
    write_data_docs([], site, keep_runs=1)
    assert len(list(store.rglob("*.json"))) == 2
    assert len(list((site / "validations").rglob("*.html"))) == 2
    with pytest.raises(ValueError):
        write_data_docs([], site, keep_runs=0)


def test_validation_after_data_docs_does_not_touch_the_store(tmp_path):
    site = tmp_path / "reports" / "site"
    write_data_docs([validate_frame("web_events", staged("web_events", good_rows("web_events")))], site)
    suites = tmp_path / "reports" / "gx" / "expectations"
    before = {p.name: p.read_bytes() for p in suites.glob("*.json")}
    assert list(before) == ["staging_web_events.json"]
    result = validate_frame("web_events", staged("web_events", good_rows("web_events")))
    assert result.success
    assert {p.name: p.read_bytes() for p in suites.glob("*.json")} == before


def test_offline_rewrite_handles_unknown_and_relative_links():
    html = (
        '<head><script src="https://cdn.example.com/x.js" integrity="sha1-x"></script>'
        '<link rel="stylesheet" href="//fonts.googleapis.com/css?family=X">'
        '<link href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>'
        '<style>a { background: url("https://example.com/bg.png") } @import url(https://x.example/y.css);</style>'
        '<link rel="icon" href="../../static/images/favicon.ico"></head>'
        '<body><a class="x" href="https://greatexpectations.io">GX</a><a href="../index.html">Home</a></body>'
    )
    out = data_docs.offline_html(html, Path("validations/s/run/time/t.html"))
    assert "http" not in out and "//fonts" not in out
    assert 'href="../../../../static/vendor/bootstrap@4.3.1/dist/css/bootstrap.min.css"' in out
    assert 'href="../../../../static/images/favicon.ico"' in out
    assert "url(data:,)" in out and "@import" not in out
    assert '<a class="x">GX</a>' in out and '<a href="../index.html">Home</a>' in out
    assert data_docs.offline_html(out, Path("validations/s/run/time/t.html")) == out


def test_vendored_assets_match_the_gx_templates():
    import great_expectations

    templates = Path(great_expectations.__file__).parent / "render" / "view" / "templates"
    referenced = set()
    integrity = {}
    for template in templates.glob("*.j2"):
        for tag in re.finditer(r"<(?:script|link)\b[^>]*>", template.read_text(encoding="utf-8")):
            attribute = re.search(r"\b(?:src|href)=\"(https?://[^\"]+)\"", tag.group(0))
            if attribute:
                referenced.add(attribute.group(1))
                sri = re.search(r'integrity="sha384-([^"]+)"', tag.group(0))
                if sri:
                    integrity[attribute.group(1)] = sri.group(1)
    assert referenced == set(data_docs.CDN_ASSETS)  # a GX upgrade changed its CDN assets if this fails
    vendor = data_docs.VENDOR_SOURCE
    for url, relative in data_docs.CDN_ASSETS.items():
        assert (vendor / relative).is_file(), url
    assert len(integrity) == 2
    for url, expected in integrity.items():
        digest = hashlib.sha384((vendor / data_docs.CDN_ASSETS[url]).read_bytes()).digest()
        assert base64.b64encode(digest).decode() == expected, url
    packages = {relative.split("/")[0] for relative in data_docs.CDN_ASSETS.values()}
    for package in packages:
        assert list((vendor / package).glob("LICENSE*")), package
    files = [p for p in vendor.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 4_000_000
