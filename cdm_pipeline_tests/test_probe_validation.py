"""Issue 20's reliability-probe findings on validation: config names and alias bombs, implausible
consent dates, junk identifiers, hostile text."""

import datetime as dt
import subprocess
import sys
import textwrap

import duckdb
import pytest

from cdm_pipeline.config import ConfigError, SurvivorshipConfig, load_config
from cdm_pipeline.lib.exports.audiences import resolve_segment, write_audience_export
from cdm_pipeline.lib.extract import load_partition
from cdm_pipeline.lib.identity.survivorship import survive_attributes
from cdm_pipeline.lib.staging.build import stage_partition
from cdm_pipeline.lib.warehouse import connect, prepare_connection
from cdm_pipeline_tests.conftest import write_config
from cdm_pipeline_tests.marts_fixtures import AS_OF, UTC, at, days_before, marts_warehouse
from cdm_pipeline_tests.test_identity_survivorship import golden, load_members, member

CONFIG = textwrap.dedent(
    """
    warehouse: wh/cdm.duckdb
    landing_dir: landing
    sources:
      - name: crm_contacts
        system: crm
        kind: contacts
        format: csv
        path: crm/{date}/*.csv
        id_column: contact_id
        columns:
          first_name: FirstName
    """
)


# --- config: a system that cannot be a Dagster tag; a YAML alias bomb -------------------------

@pytest.mark.parametrize("system", ["my crm", "crm/eu", "x" * 64])
def test_a_system_dagster_cannot_tag_is_one_line_naming_the_key(tmp_path, system):
    path = write_config(tmp_path, CONFIG.replace("system: crm", f"system: {system!r}"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == "sources[0].system"
    assert str(caught.value).startswith(f"{path}: sources[0].system: ")
    assert "\n" not in str(caught.value)


def test_systems_with_capitals_dots_and_dashes_still_load(tmp_path):
    config = load_config(write_config(tmp_path, CONFIG.replace("system: crm", "system: HubSpot-EU.v2")))
    assert config.sources[0].system == "HubSpot-EU.v2"


def _alias_bomb(levels: int) -> str:
    """A value where each level is 9 copies of the one below: 9**levels strings once expanded."""
    value = '&a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'
    for level in range(1, levels):
        value = f"&a{level} [{value}, " + ", ".join([f"*a{level - 1}"] * 8) + "]"
    # A preset name is repr()'d in its error message: the walk the probe saw (~3 GB, 100 s).
    return CONFIG + f"    preset: {value}\n"


def test_a_yaml_alias_bomb_is_refused_at_once_in_one_line(tmp_path):
    # 8 levels of 9 expand to 43 million strings: before the fix, a 300 MB error message (9 levels: GBs).
    path = write_config(tmp_path, _alias_bomb(8))
    code = (
        "import sys\nfrom cdm_pipeline.config import ConfigError, load_config\n"
        "try:\n    load_config(sys.argv[1])\nexcept ConfigError as exc:\n    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"{path}: ")
    message = done.stdout[len(f"{path}: "):]
    assert message.count("\n") == 1 and len(message) < 300
    assert "alias" in message


def test_ordinary_anchors_and_merge_keys_still_load(tmp_path):
    text = CONFIG.replace("    columns:\n", "    columns: &cols\n")
    text += "  - name: crm_contacts_eu\n    system: crm\n    kind: contacts\n    format: csv\n"
    text += "    path: crm_eu/{date}/*.csv\n    id_column: contact_id\n    columns:\n      <<: *cols\n"
    config = load_config(write_config(tmp_path, text))
    assert config.sources[1].columns == config.sources[0].columns


# --- consent: a mistyped future date never decides it -----------------------------------------

TYPO = dt.datetime(2099, 1, 1, tzinfo=UTC)


def _person(w, n: int, *, day: dt.date, **values) -> None:
    w.contact(f"c{n}", first_name=f"First{n}", last_name="Tester", email=f"p{n}@shop-test.org", day=day, **values)
    w.order(f"o{n}", f"c{n}", at(days_before(5)), 10.0)


def test_a_future_dated_opt_in_does_not_beat_a_later_unsubscribe_nor_reach_an_audience(tmp_path):
    w = marts_warehouse(tmp_path)
    # 1: the CRM export landed today says "opted in", last modified in 2099 (a typo); the person
    # unsubscribed at the ESP ten days ago.
    _person(w, 1, day=AS_OF, email_opt_in=True, updated_at=TYPO)
    w.contact("s1", source="email_subscribers", email="p1@shop-test.org", linked_id="c1", day=days_before(30))
    w.email_event("s1", "unsubscribe", at(days_before(10)))
    # 2: do_not_sell set six days ago; today's version says otherwise, "modified" in 2099.
    _person(w, 2, day=days_before(6), email_opt_in=True, do_not_sell=True, updated_at=at(days_before(6)))
    _person(w, 2, day=AS_OF, email_opt_in=True, do_not_sell=False, updated_at=TYPO)
    # 3: opted out at the CRM; an ESP subscribe event stamped 2099.
    _person(w, 3, day=days_before(20), email_opt_in=False, updated_at=at(days_before(20)))
    w.contact("s3", source="email_subscribers", email="p3@shop-test.org", linked_id="c3", day=days_before(30))
    w.email_event("s3", "subscribe", TYPO, landed=AS_OF)
    # 4: a plausible opt-in: still exported.
    _person(w, 4, day=AS_OF, email_opt_in=True, updated_at=at(days_before(1)))
    w.build()
    consent = {
        n: w.rows("SELECT email_opt_in, email_opt_in_at, do_not_sell FROM marts.customer_360 WHERE customer_id = ?",
                  [w.customer_of("crm_contacts", f"c{n}")])[0]
        for n in (1, 2, 3, 4)
    }
    assert consent[1] == (False, at(days_before(10)), None)
    assert consent[2][2] is True
    assert consent[3][:2] == (False, at(days_before(20)))
    assert consent[4] == (True, at(days_before(1)), None)
    export = write_audience_export(w.conn, w.config, resolve_segment(w.config, "lifecycle:new"))
    assert (export.members, export.exported, export.excluded_no_consent) == (4, 1, 3)


def test_survivorship_does_not_count_a_time_after_the_record_was_landed_as_recency(tmp_path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    prepare_connection(conn)
    landed = dt.date(2024, 5, 10)
    load_members(conn, [
        # Without its 2099 the CRM record counts as of the day it was last landed (8 May), like
        # any record without a time; the ESP's statement of 9 May is the latest.
        member("c1", "crm", "r1", email="typo@x.org", email_opt_in=True, updated_at=TYPO,
               last_seen=dt.date(2024, 5, 8)),
        member("c1", "esp", "r2", email="real@x.org", email_opt_in=False,
               updated_at=dt.datetime(2024, 5, 9, tzinfo=UTC), last_seen=landed),
        # A time after the landing day but not after now counts (a snapshot backfilled into an
        # old partition).
        member("c2", "crm", "r3", email="late@x.org", updated_at=dt.datetime(2024, 6, 11, tzinfo=UTC),
               last_seen=landed),
        member("c2", "esp", "r4", email="early@x.org", updated_at=dt.datetime(2024, 5, 9, tzinfo=UTC),
               last_seen=landed),
    ])
    survive_attributes(conn, "members", SurvivorshipConfig(), "golden", "provenance")
    first = golden(conn, "c1")
    assert (first["email"], first["email_opt_in"]) == ("real@x.org", False)
    assert first["updated_at"] == dt.datetime(2024, 5, 9, tzinfo=UTC)
    assert golden(conn, "c2")["email"] == "late@x.org"


# CONFIG's source with the contact columns the staging tests write.
STAGING_CONFIG = CONFIG + "".join(
    f"      {canonical}: {header}\n" for canonical, header in (
        ("last_name", "LastName"), ("email", "Email"), ("address_line1", "Street"), ("company", "Company"),
        ("email_opt_in", "OptIn"), ("created_at", "Created"), ("updated_at", "Modified"),
    )
)
DAY = dt.date(2026, 10, 1)


def _stage(tmp_path, csv_text: str):
    (tmp_path / "cdm.yaml").write_text(STAGING_CONFIG)
    config = load_config(tmp_path / "cdm.yaml")
    folder = config.landing_dir / "crm" / DAY.isoformat()
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text(csv_text, encoding="utf-8")
    conn = connect(config.warehouse)
    load_partition(conn, config.sources[0], config.landing_dir, DAY, dt.datetime(2026, 10, 2, tzinfo=UTC))
    return conn, stage_partition(conn, config, "contacts", DAY)


def test_staging_flags_and_drops_timestamps_after_the_day_a_record_was_landed(tmp_path):
    conn, result = _stage(tmp_path, (
        "contact_id,FirstName,LastName,Email,Street,Company,OptIn,Created,Modified\n"
        "C1,Ann,Lee,ann@x.org,,,yes,2026-09-01T10:00:00Z,2099-01-01T00:00:00Z\n"
        "C2,Bob,Ray,bob@x.org,,,yes,2099-05-05T00:00:00Z,\n"
        "C3,Cy,Fox,cy@x.org,,,no,2026-09-01T10:00:00Z,2026-10-20T22:00:00Z\n"
    ))
    rows = conn.execute(
        "SELECT source_record_id, created_at, updated_at, quality_flags FROM staging.contacts ORDER BY 1"
    ).fetchall()
    assert rows == [
        ("C1", dt.datetime(2026, 9, 1, 10, tzinfo=UTC), None, ["future_updated_at"]),
        ("C2", None, None, ["future_created_at"]),
        # After the landing day but not after now: a snapshot read late, not a typo.
        ("C3", dt.datetime(2026, 9, 1, 10, tzinfo=UTC), dt.datetime(2026, 10, 20, 22, tzinfo=UTC), []),
    ]
    assert (result.flags["future_updated_at"], result.flags["future_created_at"]) == (1, 1)


# --- hostile text: NUL bytes, text-direction controls, 200,000-character names ---------------

def test_control_characters_are_removed_and_overlong_values_rejected_with_counted_flags(tmp_path):
    long_name = "A" * 200_000
    conn, result = _stage(tmp_path, (
        "contact_id,FirstName,LastName,Email,Street,Company,OptIn,Created,Modified\n"
        "C1,An\x00n,Lee,ann@x.org,1 High St,Acme,,,\n"
        # "Evil" shown right-to-left would read as another name; isolates hide a street's order.
        "C2,Bob,\u202elivE\u202c,bob@x.org,\u20662 Low Rd\u2069,\u202dAcme\u202c Ltd,,,\n"
        f"C3,{long_name},Fox,cy@x.org,,,,,\n"
        "C4,Dee,Ray,dee@x.org,\"3 Mill Ln\nFlat 2\",Acme,,,\n"
    ))
    rows = conn.execute(
        "SELECT source_record_id, first_name, last_name, address_line1, company, quality_flags"
        " FROM staging.contacts ORDER BY 1"
    ).fetchall()
    assert rows == [
        ("C1", "Ann", "Lee", "1 High St", "Acme", ["control_characters_first_name"]),
        ("C2", "Bob", "livE", "2 Low Rd", "Acme Ltd",
         ["control_characters_last_name", "control_characters_address_line1", "control_characters_company"]),
        ("C3", None, "Fox", None, None, ["overlong_first_name"]),
        # A line break hides nothing: no flag (mapping makes it a space).
        ("C4", "Dee", "Ray", "3 Mill Ln Flat 2", "Acme", []),
    ]
    assert result.flags["control_characters_last_name"] == 1
    assert result.flags["overlong_first_name"] == 1
    assert result.staged == 4
