"""Mailchimp, Klaviyo and GA4 exports as the tools write them, for the preset tests (issue 18).

One writer per preset in ``cdm_pipeline/presets``: ``write_<preset>(landing_dir, day)`` puts that
tool's export for ``day`` at the preset's default path and returns the files written.
``EXPECTED[<preset>]`` holds the facts a test can check after loading and staging them.

Each writer's docstring names its public sources and says where they are silent. The people are
the shared fictional ones (people.py); addresses, ids and URLs are made up (documentation IP
ranges, ``shop.example.co.uk``).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cdm_pipeline_tests.export_fixtures.people import PEOPLE, Person

P = {person.key: person for person in PEOPLE}
UTC = dt.UTC
SHOP = "https://shop.example.co.uk"

# One Mailchimp audience and one campaign, shared by the audience export and the activity report.
MAILCHIMP_LIST_ID = "b4c8e21f0a"
MAILCHIMP_CAMPAIGN_ID = "9f65a3c2d1"
MAILCHIMP_CAMPAIGN_TITLE = "Spring Sale"
SPRING_URL = f"{SHOP}/collections/spring?utm_source=mailchimp&utm_medium=email&utm_campaign=spring_sale"

# Klaviyo ids: a campaign (the $message of its email events) and the account's metric ids.
KLAVIYO_CAMPAIGN_ID = "01HTK2V6Q9ZC4R7M3N8P5B1XWD"
KLAVIYO_CAMPAIGN_NAME = "Spring Sale"
KLAVIYO_METRICS = {
    "Received Email": "RcV3mA", "Opened Email": "OpN4dX", "Clicked Email": "ClK7qP",
    "Bounced Email": "BnC2tR", "Unsubscribed": "UnS8wE", "Marked Email as Spam": "SpM5kZ",
}

# GA4: the logged-in visitor's User-ID is their Shopify customer id.
SHOPIFY_CUSTOMER_ID = "7365249843361"


def _at(day: dt.date, clock: str) -> dt.datetime:
    """A UTC time on ``day`` ("10:12:30", or "07:40:00.123456")."""
    fmt = "%H:%M:%S.%f" if "." in clock else "%H:%M:%S"
    return dt.datetime.combine(day, dt.datetime.strptime(clock, fmt).time(), tzinfo=UTC)


def _hex(seed: str, length: int) -> str:
    return hashlib.sha256(seed.encode("utf-8")).hexdigest()[:length]


def _crockford(seed: str, length: int) -> str:
    """A deterministic ULID-looking id (Crockford base 32), as Klaviyo's profile ids look."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    return "".join(alphabet[b % 32] for b in digest)[:length]


# --- Mailchimp audience export ------------------------------------------------------------------

MAILCHIMP_MERGE = ["Email Address", "First Name", "Last Name", "Address", "Phone Number", "Birthday"]
MAILCHIMP_COMMON = [
    "MEMBER_RATING", "OPTIN_TIME", "OPTIN_IP", "CONFIRM_TIME", "CONFIRM_IP", "LATITUDE",
    "LONGITUDE", "GMTOFF", "DSTOFF", "TIMEZONE", "CC", "REGION",
]
MAILCHIMP_STATUS_COLUMNS = {
    "subscribed": ["LAST_CHANGED"],
    "unsubscribed": ["UNSUB_TIME", "UNSUB_CAMPAIGN_TITLE", "UNSUB_CAMPAIGN_ID", "UNSUB_REASON", "UNSUB_REASON_OTHER"],
    "cleaned": ["CLEAN_TIME", "CLEAN_CAMPAIGN_TITLE", "CLEAN_CAMPAIGN_ID"],
}
MAILCHIMP_TAIL = ["LEID", "EUID", "NOTES", "TAGS"]


def _mailchimp_field(value: str) -> str:
    # Mailchimp quotes a field holding a space, comma or quote ("Email Address",
    # "2024-03-14 09:12:31") and leaves single tokens bare (MEMBER_RATING, 2).
    if any(ch in value for ch in ' ,"\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _mailchimp_address(person: Person, region: str) -> str:
    # One cell, parts separated by two spaces: addr1, (addr2,) city, state, zip, country.
    return f"{person.street}  {person.city}  {region}  {person.postcode}  GB"


def _mailchimp_member(person: Person, email: str, leid: int, **fields: str) -> dict[str, str]:
    row = {
        "Email Address": email, "First Name": person.first_name, "Last Name": person.last_name,
        "LEID": str(leid), "EUID": _hex("euid" + person.key, 10),
    }
    row.update(fields)
    return row


def write_mailchimp_audience(landing_dir: Path, day: dt.date) -> list[Path]:
    """Mailchimp's audience export, unzipped: subscribed, unsubscribed and cleaned members.

    Sources: the zip of three CSV files (ginkgo.st notes on Mailchimp exports; Mailchimp's
    account-exports guide); the merge-field columns of a default audience (Mailchimp's merge
    fields guide: FNAME, LNAME, ADDRESS, PHONE; Birthday as MM/DD and the address in one cell
    with parts two spaces apart: kb.mailchimp.com "Format List Fields"); the system columns and
    their order as real exports quoted by public importers show them (e.g.
    github.com/buttondown/roadmap/issues/2276). Mailchimp documents neither the header list nor
    the zone of its timestamps (written "YYYY-MM-DD HH:MM:SS"; read as UTC by the preset), nor
    the hash in the file names (here the audience id).

    Variations: an upper-case email, national and international phone formats, accented names,
    tags written as a quoted list, two unsubscribed members (a listed reason and "Other"), and a
    cleaned member whose address (a mistyped domain) hard-bounced the spring campaign.
    """
    folder = landing_dir / "mailchimp" / "audience" / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    before = day - dt.timedelta(days=1)
    campaign_time = _at(day, "09:00:41").strftime("%Y-%m-%d %H:%M:%S")

    def stamp(d, clock):
        return _at(d, clock).strftime("%Y-%m-%d %H:%M:%S")

    signed_up = dt.date(day.year - 1, 11, 2)

    subscribed = [
        _mailchimp_member(
            P["p01"], "Amelia.Hughes@BTInternet.com", 44877801,
            Address=_mailchimp_address(P["p01"], "West Yorkshire"), **{"Phone Number": "0113 496 0101"},
            Birthday="04/17", MEMBER_RATING="4", CONFIRM_TIME=stamp(signed_up, "14:05:33"),
            CONFIRM_IP="203.0.113.21", LATITUDE="53.8008000", LONGITUDE="-1.5491000", GMTOFF="0",
            DSTOFF="1", TIMEZONE="Europe/London", CC="GB", REGION="ENG",
            LAST_CHANGED=stamp(before, "08:14:02"), TAGS='"VIP","Spring 2024"',
        ),
        _mailchimp_member(
            P["p03"], P["p03"].email, 44877803,
            Address=_mailchimp_address(P["p03"], "Antrim"), **{"Phone Number": "+44 113 496 0103"},
            MEMBER_RATING="3", OPTIN_TIME=stamp(signed_up, "19:22:10"), OPTIN_IP="203.0.113.33",
            CONFIRM_TIME=stamp(signed_up, "19:24:51"), CONFIRM_IP="203.0.113.33",
            LAST_CHANGED=stamp(signed_up, "19:24:51"),
        ),
        _mailchimp_member(
            P["p05"], P["p05"].email, 44877805, MEMBER_RATING="2",
            CONFIRM_TIME=stamp(signed_up, "14:05:33"), LAST_CHANGED=stamp(signed_up, "14:05:33"),
        ),
        _mailchimp_member(
            P["p06"], P["p06"].email, 44877806, **{"Phone Number": "+441134960106"},
            MEMBER_RATING="2", CONFIRM_TIME=stamp(signed_up, "14:05:33"),
            LAST_CHANGED=stamp(signed_up, "14:05:33"), TAGS='"Newsletter"',
        ),
        _mailchimp_member(
            P["p09"], P["p09"].email, 44877809, MEMBER_RATING="5",
            OPTIN_TIME=stamp(before, "21:48:09"), OPTIN_IP="198.51.100.9",
            CONFIRM_TIME=stamp(before, "21:49:30"), CONFIRM_IP="198.51.100.9",
            LAST_CHANGED=stamp(before, "21:49:30"),
        ),
        _mailchimp_member(
            P["p12"], P["p12"].email, 44877812, Birthday="11/30", MEMBER_RATING="2",
            CONFIRM_TIME=stamp(signed_up, "14:05:33"), LAST_CHANGED=stamp(signed_up, "14:05:33"),
        ),
    ]
    unsubscribed = [
        _mailchimp_member(
            P["p02"], P["p02"].email, 44877802, **{"Phone Number": "0113 496 0102"},
            MEMBER_RATING="1", CONFIRM_TIME=stamp(signed_up, "14:05:33"),
            UNSUB_TIME=stamp(day, "09:40:17"), UNSUB_CAMPAIGN_TITLE=MAILCHIMP_CAMPAIGN_TITLE,
            UNSUB_CAMPAIGN_ID=MAILCHIMP_CAMPAIGN_ID,
            UNSUB_REASON="I no longer want to receive these emails",
        ),
        _mailchimp_member(
            P["p10"], P["p10"].email, 44877810, MEMBER_RATING="1",
            CONFIRM_TIME=stamp(signed_up, "14:05:33"), UNSUB_TIME=stamp(before, "17:02:55"),
            UNSUB_REASON="Other (fill in reason below)", UNSUB_REASON_OTHER="Too many emails, sorry",
        ),
    ]
    cleaned = [
        _mailchimp_member(
            P["p07"], "isla.macdonald@btinterent.com", 44877807, MEMBER_RATING="1",
            CONFIRM_TIME=stamp(signed_up, "14:05:33"), CLEAN_TIME=campaign_time,
            CLEAN_CAMPAIGN_TITLE=MAILCHIMP_CAMPAIGN_TITLE, CLEAN_CAMPAIGN_ID=MAILCHIMP_CAMPAIGN_ID,
        ),
    ]
    written = []
    for status, members in (("subscribed", subscribed), ("unsubscribed", unsubscribed), ("cleaned", cleaned)):
        header = MAILCHIMP_MERGE + MAILCHIMP_COMMON + MAILCHIMP_STATUS_COLUMNS[status] + MAILCHIMP_TAIL
        lines = [",".join(_mailchimp_field(h) for h in header)]
        lines += [",".join(_mailchimp_field(m.get(h, "")) for h in header) for m in members]
        path = folder / f"{status}_members_export_{MAILCHIMP_LIST_ID}.csv"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(path)
    return written


# --- Mailchimp email-activity report --------------------------------------------------------------


def _mailchimp_links(email_id: str) -> list[dict]:
    base = "https://us6.api.mailchimp.com/3.0"
    schema = "https://us6.api.mailchimp.com/schema/3.0/Definitions"
    return [
        {"rel": "parent", "href": f"{base}/reports/{MAILCHIMP_CAMPAIGN_ID}/email-activity", "method": "GET",
         "targetSchema": f"{schema}/Reports/EmailActivity/CollectionResponse.json"},
        {"rel": "self", "href": f"{base}/reports/{MAILCHIMP_CAMPAIGN_ID}/email-activity/{email_id}",
         "method": "GET", "targetSchema": f"{schema}/Reports/EmailActivity/Response.json"},
        {"rel": "member", "href": f"{base}/lists/{MAILCHIMP_LIST_ID}/members/{email_id}", "method": "GET",
         "targetSchema": f"{schema}/Lists/Members/Response.json"},
    ]


def write_mailchimp_activity(landing_dir: Path, day: dt.date) -> list[Path]:
    """The email-activity report of one campaign (GET /3.0/reports/{id}/email-activity).

    Sources: Mailchimp Marketing API reference "List email activity" and its generated client
    (mailchimp-marketing-python-sdk, EmailActivityActivityItem: action open|click|bounce, type
    hard|soft for a bounce, url for a click, timestamp ISO 8601, ip); the member fields
    (campaign_id, list_id, list_is_active, email_id, email_address, _links) as in a published
    response (Adobe Experience Platform's Mailchimp source tutorial). The API describes
    email_id as the MD5 of the lower-case address. Writing the "emails" array one member per
    line is this fixture's landing convention, not Mailchimp's.

    Variations: a member with three actions (two opens and a click) and an upper-case address,
    members with none (sent, never opened), a hard bounce of a mistyped address.
    """
    folder = landing_dir / "mailchimp" / "activity" / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)

    def iso(clock):
        return _at(day, clock).isoformat()

    def opened(clock, ip):
        return {"action": "open", "timestamp": iso(clock), "ip": ip}

    def clicked(clock, ip, url=SPRING_URL):
        return {"action": "click", "timestamp": iso(clock), "url": url, "ip": ip}

    members = [
        ("Amelia.Hughes@BTInternet.com", [
            opened("10:12:30", "203.0.113.21"), clicked("10:13:02", "203.0.113.21"),
            opened("18:40:05", "198.51.100.71"),
        ]),
        (P["p03"].email, [opened("11:02:47", "203.0.113.33")]),
        (P["p05"].email, [
            opened("09:31:10", "192.0.2.50"),
            clicked("09:31:55", "192.0.2.50", f"{SHOP}/products/linen-shirt?utm_source=mailchimp&utm_medium=email"),
        ]),
        (P["p06"].email, []),
        (P["p09"].email, [opened("13:20:00", "198.51.100.9")]),
        (P["p02"].email, [opened("09:15:22", "203.0.113.102")]),
        ("isla.macdonald@btinterent.com", [{"action": "bounce", "type": "hard", "timestamp": iso("09:00:41")}]),
        (P["p12"].email, []),
    ]
    lines = []
    for address, activity in members:
        email_id = hashlib.md5(address.lower().encode("utf-8")).hexdigest()
        lines.append(json.dumps({
            "campaign_id": MAILCHIMP_CAMPAIGN_ID, "list_id": MAILCHIMP_LIST_ID, "list_is_active": True,
            "email_id": email_id, "email_address": address, "activity": activity,
            "_links": _mailchimp_links(email_id),
        }, ensure_ascii=False))
    path = folder / f"email_activity_{MAILCHIMP_CAMPAIGN_ID}.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [path]


# --- Klaviyo profiles CSV --------------------------------------------------------------------------

KLAVIYO_PROFILE_COLUMNS = [
    "Email", "Klaviyo ID", "First Name", "Last Name", "Organization", "Title", "Phone Number",
    "Address", "Address 2", "City", "State / Region", "Country", "Zip Code", "Latitude",
    "Longitude", "Source", "Email Marketing Consent", "Email Marketing Consent Timestamp",
    "First Active", "Last Active", "Profile Created On", "Date Added", "Last Open", "Last Click",
    "Email Suppressions",
]


def klaviyo_profile_id(key: str) -> str:
    return "01H" + _crockford("klaviyo" + key, 23)


def write_klaviyo_profiles(landing_dir: Path, day: dt.date) -> list[Path]:
    """A Klaviyo list/segment export to CSV ("all profiles").

    Sources: Klaviyo's help centre describes exporting a list or segment to CSV
    (help.klaviyo.com 115005078687) and consent (360043841811) without listing columns; the
    header names and order are those of real exports quoted by public importers; the consent
    values are the Profiles API's (SUBSCRIBED, UNSUBSCRIBED, NEVER_SUBSCRIBED); suppression
    reasons as the API names them (UNSUBSCRIBE, HARD_BOUNCE, SPAM_COMPLAINT). Silent: the
    timestamp format and zone (written "YYYY-MM-DD HH:MM:SS"), the file name.

    Variations: a company, an apostrophe in a surname, an accented name with no consent
    statement (a checkout profile), a profile without an address, a spam complaint whose
    consent column still says SUBSCRIBED (suppression and consent are separate columns).
    """
    folder = landing_dir / "klaviyo" / "profiles" / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    created = dt.date(day.year - 1, 9, 14)

    def stamp(d, clock):
        return _at(d, clock).strftime("%Y-%m-%d %H:%M:%S")

    def profile(key, consent, region, **extra):
        person = P[key]
        row = {
            "Email": person.email, "Klaviyo ID": klaviyo_profile_id(key),
            "First Name": person.first_name, "Last Name": person.last_name,
            "Organization": person.company, "Phone Number": person.phone,
            "Address": person.street, "City": person.city, "State / Region": region,
            "Country": "United Kingdom", "Zip Code": person.postcode, "Source": "Shopify",
            "Email Marketing Consent": consent,
            "Email Marketing Consent Timestamp": stamp(created, "16:20:05") if consent != "NEVER_SUBSCRIBED" else "",
            "Profile Created On": stamp(created, "16:20:05"), "Date Added": stamp(created, "16:20:07"),
            "First Active": stamp(created, "16:19:40"), "Last Active": stamp(day, "09:48:03"),
        }
        row.update(extra)
        return row

    rows = [
        profile("p04", "SUBSCRIBED", "England", Title="Director", **{"Last Open": stamp(day, "09:47:12"),
                                                                      "Last Click": stamp(day, "09:48:03")}),
        profile("p08", "SUBSCRIBED", "Wales", **{"Email Suppressions": "HARD_BOUNCE"}),
        profile("p01", "SUBSCRIBED", "England", **{"Last Open": stamp(day, "20:05:13")}),
        profile("p11", "UNSUBSCRIBED", "Northern Ireland", **{"Email Suppressions": "UNSUBSCRIBE"}),
        profile("p05", "SUBSCRIBED", "", Address="", City="",
                **{"Zip Code": "", "Email Suppressions": "SPAM_COMPLAINT"}),
        profile("p12", "NEVER_SUBSCRIBED", "England", Source="Checkout"),
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=KLAVIYO_PROFILE_COLUMNS, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    path = folder / "all_profiles_export.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return [path]


# --- Klaviyo events (Get Events with include=metric) -------------------------------------------------


def write_klaviyo_events(landing_dir: Path, day: dt.date) -> list[Path]:
    """Klaviyo email events from GET /api/events?include=metric, one event per JSON line.

    Sources: Klaviyo's Get Events reference (event fields timestamp, datetime, uuid,
    event_properties; relationships profile and metric; metric fields name, created, updated,
    integration in "included"); Airbyte's Klaviyo events_detailed stream, which merges the
    included metric's attributes into relationships.metric.data and copies attributes.datetime
    to the record's root (source-klaviyo included_fields_extractor.py and its mock-server
    tests). Email-event property keys ("Campaign Name", "Subject", "$message", "URL",
    "Bounce Type") as Klaviyo's reporting API names them; Klaviyo documents no values for
    "Bounce Type" (written "Hard Bounce" here). Event and metric ids are made up in Klaviyo's
    formats.

    Variations: two opens by one profile, a click with a URL, a hard bounce, an unsubscribe and a
    spam complaint.
    """
    folder = landing_dir / "klaviyo" / "events" / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    plan = [
        ("p04", "Received Email", "09:00:05", {}), ("p04", "Opened Email", "09:47:12", {}),
        ("p04", "Clicked Email", "09:48:03",
         {"URL": f"{SHOP}/products/linen-shirt?utm_source=klaviyo&utm_medium=email"}),
        ("p08", "Bounced Email", "09:00:07", {"Bounce Type": "Hard Bounce"}),
        ("p01", "Received Email", "09:00:05", {}), ("p01", "Opened Email", "12:30:40", {}),
        ("p01", "Opened Email", "20:05:13", {}),
        ("p11", "Received Email", "09:00:06", {}), ("p11", "Unsubscribed", "09:12:44", {}),
        ("p05", "Received Email", "09:00:06", {}), ("p05", "Marked Email as Spam", "10:01:19", {}),
    ]
    base = "https://a.klaviyo.com/api"
    lines = []
    for key, metric, clock, extra in plan:
        at = _at(day, clock)
        event_id = _crockford(f"event{key}{metric}{clock}", 12).replace("0", "a")
        profile_id = klaviyo_profile_id(key)
        properties = {
            "Subject": "Spring is here: 20% off linen", "Campaign Name": KLAVIYO_CAMPAIGN_NAME,
            "$message": KLAVIYO_CAMPAIGN_ID, "Email Domain": P[key].email.split("@")[1],
            "$event_id": f"{KLAVIYO_CAMPAIGN_ID}:{profile_id}:{metric.split()[0].lower()}:{int(at.timestamp())}",
            **extra,
        }
        metric_id = KLAVIYO_METRICS[metric]
        record = {
            "type": "event",
            "id": event_id,
            "attributes": {
                "timestamp": int(at.timestamp()),
                "event_properties": properties,
                "datetime": at.isoformat(),
                "uuid": _hex(f"uuid{event_id}", 32)[:8] + "-" + _hex(f"uuid{event_id}", 32)[8:12] + "-11ef-8001-"
                + _hex(f"uuid{event_id}", 32)[12:24],
            },
            "links": {"self": f"{base}/events/{event_id}/"},
            "relationships": {
                "profile": {
                    "data": {"type": "profile", "id": profile_id},
                    "links": {"self": f"{base}/events/{event_id}/relationships/profile/",
                              "related": f"{base}/events/{event_id}/profile/"},
                },
                "metric": {
                    "data": {
                        "type": "metric", "id": metric_id, "name": metric,
                        "created": "2022-06-14T10:22:31+00:00", "updated": "2022-06-14T10:22:31+00:00",
                        "integration": {"object": "integration", "id": "0eMvjm", "name": "Klaviyo",
                                        "category": "Internal"},
                    },
                    "links": {"self": f"{base}/events/{event_id}/relationships/metric/",
                              "related": f"{base}/events/{event_id}/metric/"},
                },
                "attributions": {"data": [], "links": {
                    "self": f"{base}/events/{event_id}/relationships/attributions/",
                    "related": f"{base}/events/{event_id}/attributions/"}},
            },
            "datetime": at.isoformat(),
        }
        lines.append(json.dumps(record, ensure_ascii=False))
    path = folder / "events_detailed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [path]


# --- GA4 BigQuery export (events_YYYYMMDD as Parquet) -------------------------------------------------

_VALUE = pa.struct([
    ("string_value", pa.string()), ("int_value", pa.int64()),
    ("float_value", pa.float64()), ("double_value", pa.float64()),
])
_PARAMS = pa.list_(pa.struct([("key", pa.string()), ("value", _VALUE)]))
_USER_PROPERTIES = pa.list_(pa.struct([
    ("key", pa.string()),
    ("value", pa.struct([
        ("string_value", pa.string()), ("int_value", pa.int64()), ("float_value", pa.float64()),
        ("double_value", pa.float64()), ("set_timestamp_micros", pa.int64()),
    ])),
]))
_S = pa.string()
_F = pa.float64()
_I = pa.int64()


def _struct(*names: str, kind=_S, **typed) -> pa.StructType:
    return pa.struct([(n, kind) for n in names] + list(typed.items()))


GA4_SCHEMA = pa.schema([
    ("event_date", _S),
    ("event_timestamp", _I),
    ("event_name", _S),
    ("event_params", _PARAMS),
    ("event_previous_timestamp", _I),
    ("event_value_in_usd", _F),
    ("event_bundle_sequence_id", _I),
    ("event_server_timestamp_offset", _I),
    ("user_id", _S),
    ("user_pseudo_id", _S),
    ("privacy_info", _struct("analytics_storage", "ads_storage", "uses_transient_token")),
    ("user_properties", _USER_PROPERTIES),
    ("user_first_touch_timestamp", _I),
    ("user_ltv", pa.struct([("revenue", _F), ("currency", _S)])),
    ("device", pa.struct([
        ("category", _S), ("mobile_brand_name", _S), ("mobile_model_name", _S),
        ("mobile_marketing_name", _S), ("mobile_os_hardware_model", _S), ("operating_system", _S),
        ("operating_system_version", _S), ("vendor_id", _S), ("advertising_id", _S),
        ("language", _S), ("is_limited_ad_tracking", _S), ("time_zone_offset_seconds", _I),
        ("browser", _S), ("browser_version", _S),
        ("web_info", _struct("browser", "browser_version", "hostname")),
    ])),
    ("geo", _struct("city", "country", "continent", "region", "sub_continent", "metro")),
    ("app_info", _struct("id", "version", "install_store", "firebase_app_id", "install_source")),
    ("traffic_source", _struct("name", "medium", "source")),
    ("stream_id", _S),
    ("platform", _S),
    ("event_dimensions", _struct("hostname")),
    ("ecommerce", pa.struct([
        ("total_item_quantity", _I), ("purchase_revenue_in_usd", _F), ("purchase_revenue", _F),
        ("refund_value_in_usd", _F), ("refund_value", _F), ("shipping_value_in_usd", _F),
        ("shipping_value", _F), ("tax_value_in_usd", _F), ("tax_value", _F), ("unique_items", _I),
        ("transaction_id", _S),
    ])),
    ("items", pa.list_(pa.struct([
        ("item_id", _S), ("item_name", _S), ("item_brand", _S), ("item_variant", _S),
        ("item_category", _S), ("item_category2", _S), ("item_category3", _S),
        ("item_category4", _S), ("item_category5", _S), ("price_in_usd", _F), ("price", _F),
        ("quantity", _I), ("item_revenue_in_usd", _F), ("item_revenue", _F),
        ("item_refund_in_usd", _F), ("item_refund", _F), ("coupon", _S), ("affiliation", _S),
        ("location_id", _S), ("item_list_id", _S), ("item_list_name", _S), ("item_list_index", _S),
        ("promotion_id", _S), ("promotion_name", _S), ("creative_name", _S), ("creative_slot", _S),
        ("item_params", _PARAMS),
    ]))),
    ("collected_traffic_source", _struct(
        "manual_campaign_id", "manual_campaign_name", "manual_source", "manual_medium",
        "manual_term", "manual_content", "manual_source_platform", "manual_creative_format",
        "manual_marketing_tactic", "gclid", "dclid", "srsid",
    )),
    ("is_active_user", pa.bool_()),
    ("batch_event_index", _I),
    ("batch_page_id", _I),
    ("batch_ordering_id", _I),
    ("session_traffic_source_last_click", pa.struct([
        ("manual_campaign", _struct(
            "campaign_id", "campaign_name", "source", "medium", "term", "content",
            "source_platform", "creative_format", "marketing_tactic")),
        ("google_ads_campaign", _struct(
            "customer_id", "account_name", "campaign_id", "campaign_name", "ad_group_id", "ad_group_name")),
        ("cross_channel_campaign", _struct(
            "campaign_id", "campaign_name", "source", "medium", "source_platform",
            "default_channel_group", "primary_channel_group")),
    ])),
])


def _param(key: str, value) -> dict:
    typed = {"string_value": None, "int_value": None, "float_value": None, "double_value": None}
    if isinstance(value, int):
        typed["int_value"] = int(value)
    elif isinstance(value, float):
        typed["double_value"] = value
    else:
        typed["string_value"] = value
    return {"key": key, "value": typed}


def _micros(at: dt.datetime) -> int:
    return int(at.timestamp()) * 1_000_000 + at.microsecond


_LINEN_SHIRT = {
    "item_id": "SKU-LS-BLU-M", "item_name": "Linen Shirt", "item_brand": "Harbour & Loom",
    "item_variant": "Blue / M", "item_category": "Shirts", "price_in_usd": 69.5, "price": 54.9,
    "quantity": 1, "item_list_index": "(not set)", "item_params": [],
}


def write_ga4_bigquery(landing_dir: Path, day: dt.date) -> list[Path]:
    """The GA4 BigQuery export's events_YYYYMMDD table for ``day``, extracted to Parquet.

    Sources: Google's "[GA4] BigQuery Export schema" (support.google.com/analytics/answer/
    7029846, also developers.google.com/analytics/bigquery/event-schema): the top-level columns,
    the event_params / user_properties key-value records, the device, geo, app_info,
    traffic_source, collected_traffic_source, ecommerce and items records; event_timestamp in
    microseconds (UTC), event_date YYYYMMDD in the property's zone; "(not set)" for unknown
    geography and for the transaction id of non-purchase ecommerce events, as exports show.
    BigQuery types become Parquet types as BigQuery's Parquet export maps them (INT64, DOUBLE,
    BOOLEAN, STRING; REPEATED RECORD as a list of structs). Left out as all-null for a website
    without those links: session_traffic_source_last_click's sa360/cm360/dv360 records and the
    app-only publisher record. The file name follows a wildcard export URI
    (events_YYYYMMDD-*.parquet -> 000000000000).

    Visitors: an anonymous mobile visitor arriving from the Mailchimp newsletter (utm source,
    medium, campaign on session_start and the landing page_view; first_visit), a logged-in
    desktop customer (User-ID = Shopify customer id) who views, adds to cart and buys, and an
    anonymous tablet visitor whose country GA4 could not tell ("(not set)").
    """
    folder = landing_dir / "ga4" / "events" / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    event_date = day.strftime("%Y%m%d")
    hostname = "shop.example.co.uk"

    def visitor(pseudo_id, user_id, first_touch, device, geo, traffic, ltv, ads):
        return {"pseudo_id": pseudo_id, "user_id": user_id, "first_touch": first_touch, "device": device,
                "geo": geo, "traffic": traffic, "ltv": ltv, "ads": ads}

    def add(v, name, clock, session, number, params, *, ecommerce=None, items=(), campaign=None,
            page_id=1, index=0, value_usd=None):
        at = _at(day, clock)
        utm = {}
        collected = None
        if campaign:
            utm = {"source": campaign[0], "medium": campaign[1], "campaign": campaign[2]}
            collected = {"manual_campaign_name": campaign[2], "manual_source": campaign[0],
                         "manual_medium": campaign[1]}
        last_click_source = v["traffic"] if v["traffic"][0] != "(direct)" else ("(direct)", "(none)", "(direct)")
        rows.append({
            "event_date": event_date,
            "event_timestamp": _micros(at),
            "event_name": name,
            "event_params": [_param("ga_session_id", session), _param("ga_session_number", number)]
            + [_param(k, val) for k, val in {**params, **utm}.items()],
            "event_previous_timestamp": None,
            "event_value_in_usd": value_usd,
            "event_bundle_sequence_id": 1_000 + len(rows),
            "event_server_timestamp_offset": 412_345 + 1_000 * len(rows),
            "user_id": v["user_id"],
            "user_pseudo_id": v["pseudo_id"],
            "privacy_info": {"analytics_storage": "Yes", "ads_storage": v["ads"], "uses_transient_token": "No"},
            "user_properties": [],
            "user_first_touch_timestamp": v["first_touch"],
            "user_ltv": v["ltv"],
            "device": v["device"],
            "geo": v["geo"],
            "app_info": None,
            "traffic_source": {"name": v["traffic"][2], "medium": v["traffic"][1], "source": v["traffic"][0]},
            "stream_id": "4178219342",
            "platform": "WEB",
            "event_dimensions": {"hostname": hostname},
            "ecommerce": ecommerce,
            "items": list(items),
            "collected_traffic_source": collected,
            "is_active_user": True,
            "batch_event_index": index,
            "batch_page_id": session * 1_000 + page_id,
            "batch_ordering_id": page_id,
            "session_traffic_source_last_click": {
                "manual_campaign": {"campaign_name": last_click_source[2], "source": last_click_source[0],
                                    "medium": last_click_source[1]},
                "google_ads_campaign": None,
                "cross_channel_campaign": {
                    "campaign_name": last_click_source[2], "source": last_click_source[0],
                    "medium": last_click_source[1], "source_platform": "Manual",
                    "default_channel_group": "Email" if last_click_source[1] == "email" else "Direct",
                    "primary_channel_group": "Email" if last_click_source[1] == "email" else "Direct",
                },
            },
        })

    def device(category, brand, model, os, os_version, browser, browser_version):
        return {"category": category, "mobile_brand_name": brand, "mobile_model_name": model,
                "mobile_marketing_name": None, "mobile_os_hardware_model": None, "operating_system": os,
                "operating_system_version": os_version, "vendor_id": None, "advertising_id": None,
                "language": "en-gb", "is_limited_ad_tracking": "No", "time_zone_offset_seconds": None,
                "browser": None, "browser_version": None,
                "web_info": {"browser": browser, "browser_version": browser_version, "hostname": hostname}}

    def uk(city, region):
        return {"city": city, "country": "United Kingdom", "continent": "Europe",
                "region": region, "sub_continent": "Northern Europe", "metro": "(not set)"}

    # 1. Anonymous, new: arrives on the phone from the Mailchimp newsletter link.
    first = _at(day, "07:40:00.123456")
    newcomer = visitor(f"1843257691.{int(first.timestamp())}", None, _micros(first),
                       device("mobile", "Apple", "iPhone", "iOS", "iOS 17.4", "Safari", "17.4"),
                       uk("Leeds", "England"), ("mailchimp", "email", "spring_sale"), None, "No")
    session = int(first.timestamp())
    landing = {"page_location": SPRING_URL, "page_title": "Spring collection"}
    campaign = ("mailchimp", "email", "spring_sale")
    add(newcomer, "first_visit", "07:40:00.123456", session, 1, landing)
    add(newcomer, "session_start", "07:40:00.123456", session, 1, landing, campaign=campaign, index=1)
    add(newcomer, "page_view", "07:40:00.123456", session, 1, {**landing, "engaged_session_event": 1},
        campaign=campaign, index=2)
    add(newcomer, "scroll", "07:40:35.480201", session, 1,
        {**landing, "percent_scrolled": 90, "engagement_time_msec": 35_012, "session_engaged": "1"})
    product = {"page_location": f"{SHOP}/products/linen-shirt", "page_referrer": SPRING_URL,
               "page_title": "Linen Shirt"}
    add(newcomer, "page_view", "07:41:02.004410", session, 1, product, page_id=2)
    add(newcomer, "user_engagement", "07:41:30.777007", session, 1,
        {**product, "engagement_time_msec": 27_950, "session_engaged": "1"}, page_id=2)

    # 2. Logged in (User-ID = Shopify customer id), returning, desktop: views, adds, buys.
    first_touch = _at(day - dt.timedelta(days=40), "19:02:11.500000")
    customer = visitor(f"912345678.{int(first_touch.timestamp())}", SHOPIFY_CUSTOMER_ID, _micros(first_touch),
                       device("desktop", "Microsoft", "Chrome", "Windows", "Windows 10", "Chrome", "123.0.6312.86"),
                       uk("Manchester", "England"), ("(direct)", "(none)", "(direct)"),
                       {"revenue": 54.9, "currency": "GBP"}, "Yes")
    start = _at(day, "12:05:00.250000")
    session2 = int(start.timestamp())
    home = {"page_location": f"{SHOP}/", "page_referrer": "https://www.google.com/", "page_title": "Home"}
    shirt = {"page_location": f"{SHOP}/products/linen-shirt", "page_referrer": f"{SHOP}/", "page_title": "Linen Shirt"}
    browsing = {"total_item_quantity": 1, "unique_items": 1, "transaction_id": "(not set)"}
    add(customer, "session_start", "12:05:00.250000", session2, 7, home)
    add(customer, "page_view", "12:05:00.250000", session2, 7, home, index=1)
    add(customer, "view_item", "12:05:41.902113", session2, 7, {**shirt, "currency": "GBP", "value": 54.9},
        ecommerce=browsing, items=[_LINEN_SHIRT], page_id=2, value_usd=69.5)
    add(customer, "add_to_cart", "12:06:15.118220", session2, 7, {**shirt, "currency": "GBP", "value": 54.9},
        ecommerce=browsing, items=[_LINEN_SHIRT], page_id=2, value_usd=69.5)
    checkout = {"page_location": f"{SHOP}/checkouts/cn/c1-7c2e", "page_referrer": f"{SHOP}/cart",
                "page_title": "Checkout"}
    add(customer, "begin_checkout", "12:07:02.660001", session2, 7, {**checkout, "currency": "GBP", "value": 54.9},
        ecommerce=browsing, items=[_LINEN_SHIRT], page_id=3, value_usd=69.5)
    paid = {"total_item_quantity": 1, "purchase_revenue_in_usd": 69.5, "purchase_revenue": 54.9,
            "shipping_value_in_usd": 0.0, "shipping_value": 0.0, "tax_value_in_usd": 11.58,
            "tax_value": 9.15, "unique_items": 1, "transaction_id": "5512349876541"}
    add(customer, "purchase", "12:09:48.031337", session2, 7,
        {**checkout, "currency": "GBP", "value": 54.9, "transaction_id": "5512349876541", "tax": 9.15,
         "shipping": 0.0},
        ecommerce=paid, items=[{**_LINEN_SHIRT, "item_revenue": 54.9, "item_revenue_in_usd": 69.5}],
        page_id=4, value_usd=69.5)
    add(customer, "user_engagement", "12:09:55.000001", session2, 7,
        {**checkout, "engagement_time_msec": 248_112, "session_engaged": "1"}, page_id=4)

    # 3. Anonymous tablet; GA4 could not place it.
    third = _at(day, "16:22:10.010101")
    tablet = visitor(f"530118472.{int(third.timestamp()) - 86_400 * 3}", None, _micros(third) - 86_400 * 3 * 1_000_000,
                     device("tablet", "Samsung", "Galaxy Tab S9", "Android", "Android 14", "Chrome", "123.0.6312.99"),
                     {"city": "(not set)", "country": "(not set)", "continent": "(not set)",
                      "region": "(not set)", "sub_continent": "(not set)", "metro": "(not set)"},
                     ("(direct)", "(none)", "(direct)"), None, "No")
    session3 = int(third.timestamp())
    shirts = {"page_location": f"{SHOP}/collections/shirts", "page_referrer": "https://www.instagram.com/",
              "page_title": "Shirts"}
    add(tablet, "session_start", "16:22:10.010101", session3, 2, shirts)
    add(tablet, "page_view", "16:22:10.010101", session3, 2, shirts, index=1)
    add(tablet, "user_engagement", "16:22:58.424242", session3, 2,
        {**shirts, "engagement_time_msec": 48_100, "session_engaged": "1"})

    table = pa.Table.from_pylist(rows, schema=GA4_SCHEMA)
    path = folder / f"events_{event_date}-000000000000.parquet"
    pq.write_table(table, path)
    return [path]


# --- What a test can expect after loading and staging ---------------------------------------------


def expected(day: dt.date) -> dict[str, dict]:
    """Facts about each writer's files for ``day`` (counts, ids, staged values)."""
    signed_up = dt.date(day.year - 1, 11, 2)
    return {
        "mailchimp_audience": {
            "files": 3,
            "records": 9,
            "opt_in": {  # by staged (lower-case) email
                "amelia.hughes@btinternet.com": True, P["p03"].email: True, P["p05"].email: True,
                P["p06"].email: True, P["p09"].email: True, P["p12"].email: True,
                P["p02"].email: False, P["p10"].email: False, "isla.macdonald@btinterent.com": None,
            },
            "record_id_of_amelia": "44877801",
            "created_at_of_amelia": _at(signed_up, "14:05:33"),
            "updated_at_of_amelia": _at(day - dt.timedelta(days=1), "08:14:02"),
            "phone_of_amelia": P["p01"].phone,
            "names": {(P["p03"].first_name, P["p03"].last_name), (P["p12"].first_name, P["p12"].last_name)},
        },
        "mailchimp_activity": {
            "members": 8,
            "members_without_activity": 2,
            "events": 9,
            "by_type": {"open": 6, "click": 2, "bounce": 1},
            "amelia_events": 3,
            "amelia_email_id": hashlib.md5(b"amelia.hughes@btinternet.com").hexdigest(),
            "first_open_of_amelia": _at(day, "10:12:30"),
            "bounce_type": "hard",
            "click_urls": {SPRING_URL, f"{SHOP}/products/linen-shirt?utm_source=mailchimp&utm_medium=email"},
            "campaign_id": MAILCHIMP_CAMPAIGN_ID,
        },
        "klaviyo_profiles": {
            "records": 6,
            "opt_in": {P["p04"].email: True, P["p08"].email: True, P["p01"].email: True,
                       P["p05"].email: True, P["p11"].email: False, P["p12"].email: None},
            "company_of_mohammed": P["p04"].company,
            "id_of_mohammed": klaviyo_profile_id("p04"),
            "country": "GB",
            "created_at": _at(dt.date(day.year - 1, 9, 14), "16:20:05"),
        },
        "klaviyo_events": {
            "events": 11,
            "by_type": {"delivered": 4, "open": 3, "click": 1, "bounce": 1, "unsubscribe": 1,
                        "spam_complaint": 1},
            "subscriber_of_clicks": klaviyo_profile_id("p04"),
            "click_at": _at(day, "09:48:03"),
            "campaign_id": KLAVIYO_CAMPAIGN_ID,
            "campaign_name": KLAVIYO_CAMPAIGN_NAME,
            "bounce_type": "hard",
        },
        "ga4_bigquery": {
            "events": 16,
            "anonymous_events": 9,
            "logged_in_events": 7,
            "user_id": SHOPIFY_CUSTOMER_ID,
            "first_event_at": _at(day, "07:40:00.123456"),
            "newcomer_session_id": str(int(_at(day, "07:40:00.123456").timestamp())),
            "utm": ("mailchimp", "email", "spring_sale"),
            "utm_events": 2,
            "purchase": {"value": 54.9, "currency": "GBP", "transaction_id": "5512349876541"},
            "devices": {"mobile": 6, "desktop": 7, "tablet": 3},
            "countries": {"GB": 13, None: 3},
            "event_names": {
                "first_visit": 1, "session_start": 3, "page_view": 4, "scroll": 1,
                "user_engagement": 3, "view_item": 1, "add_to_cart": 1, "begin_checkout": 1,
                "purchase": 1,
            },
        },
    }


EXPECTED = expected(dt.date(2024, 4, 2))  # the tests' day; call expected(day) for another

WRITERS = {
    "mailchimp_audience": write_mailchimp_audience,
    "mailchimp_activity": write_mailchimp_activity,
    "klaviyo_profiles": write_klaviyo_profiles,
    "klaviyo_events": write_klaviyo_events,
    "ga4_bigquery": write_ga4_bigquery,
}
