"""Identity's checks (lib/identity/checks.py) on a resolution's published tables, without Dagster."""

from cdm_pipeline.lib.catalog import GOLDEN, XREF
from cdm_pipeline.lib.identity.checks import ONE_CUSTOMER_CHECK, OVERRIDES_CHECK, SIZE_CHECK, check_identity
from cdm_pipeline.lib.identity.resolve import resolve_identities
from cdm_pipeline_tests.identity_fixtures import contact, staged_warehouse

CRM = "crm_contacts"


def test_checks_count_what_a_resolution_left_wrong_and_say_it_in_one_line(tmp_path):
    contacts = [
        contact(CRM, "A1", first_name="Ann", last_name="Archer", email="ann.archer@gmail.com"),
        contact(CRM, "A2", first_name="Ann", last_name="Archer", email="ann.archer@gmail.com"),
        contact(CRM, "B1", first_name="Bob", last_name="Brook"),
        contact(CRM, "C1", first_name="Cy", last_name="Cole"),
    ]
    wh = staged_warehouse(tmp_path, contacts)
    overrides = wh.config.identity.overrides_path
    overrides.parent.mkdir(parents=True, exist_ok=True)
    overrides.write_text(
        "source_name_l,source_record_id_l,source_name_r,source_record_id_r,decision\n"
        f"{CRM},A1,{CRM},B1,must_link\n{CRM},NO-SUCH-ID,{CRM},C1,must_link\n",
        encoding="utf-8",
    )
    summary = resolve_identities(wh.conn, wh.config, "run-1")

    checks = {check.name: check for check in check_identity(wh.conn, summary)}
    assert list(checks) == [ONE_CUSTOMER_CHECK, SIZE_CHECK, OVERRIDES_CHECK]
    one = checks[ONE_CUSTOMER_CHECK]
    assert one.passed and one.detail == "4 records, each on one active customer with a golden record"
    assert one.counts == {
        "unmapped_records": 0, "records_with_several_customers": 0, "records_on_inactive_ids": 0,
        "customers_without_golden_record": 0,
    }
    size = checks[SIZE_CHECK]
    assert size.passed and size.counts == {
        "oversize_clusters_found": 0, "oversize_clusters_remaining": 0, "largest_cluster": 3,
    }
    linked = checks[OVERRIDES_CHECK]
    assert not linked.passed
    assert linked.counts == {"overrides": 2, "outcome_linked": 1, "outcome_unknown_record": 1}
    assert linked.detail == "1 of 2 override lines did not take effect: 1 unknown_record"

    # A record that lost its customer, and a customer that lost its golden record.
    wh.conn.execute(f"DELETE FROM {XREF} WHERE source_record_id = 'B1'")
    wh.conn.execute(
        f"DELETE FROM {GOLDEN} WHERE customer_id = (SELECT customer_id FROM {XREF} WHERE source_record_id = 'C1')"
    )
    one = check_identity(wh.conn, summary)[0]
    assert not one.passed
    assert one.counts == {
        "unmapped_records": 1, "records_with_several_customers": 0, "records_on_inactive_ids": 0,
        "customers_without_golden_record": 1,
    }
    assert one.detail == (
        "1 records without a customer, 0 with several, 0 on inactive ids; 1 customers without a golden record"
    )
