"""The marts' checks (lib/marts/checks.py) on a real build, and on the faults they exist to catch."""

from __future__ import annotations

from cdm_pipeline.lib.marts.checks import ONE_ROW_CHECK, WEIGHTS_CHECK, check_marts
from cdm_pipeline_tests.marts_fixtures import AS_OF, at, days_before, marts_warehouse


def _built(tmp_path):
    w = marts_warehouse(tmp_path)
    for n in range(3):
        w.contact(f"c{n}", email=f"p{n}@shop-test.org", day=days_before(30))
    w.order("o1", "c0", at(days_before(5)), 40.0)
    w.web_event("b1", at(days_before(6)), user_id="c0", utm=("google", "cpc", "autumn"))
    w.email_event("c1", "sent", at(AS_OF))
    w.build()
    return w


def test_checks_pass_on_a_fresh_build_with_the_counts_that_decided(tmp_path):
    w = _built(tmp_path)
    checks = {c.name: c for c in check_marts(w.conn)}
    assert set(checks) == {ONE_ROW_CHECK, WEIGHTS_CHECK}
    assert checks[ONE_ROW_CHECK].passed
    assert checks[ONE_ROW_CHECK].counts == {"golden_customers": 3, "customer_360_rows": 3, "customer_segments_rows": 3}
    assert checks[WEIGHTS_CHECK].passed
    assert checks[WEIGHTS_CHECK].counts == {"order_models_not_summing_to_one": 0}


def test_a_duplicated_customer_and_a_skewed_weight_fail_their_checks(tmp_path):
    w = _built(tmp_path)
    w.conn.execute("INSERT INTO marts.customer_360 SELECT * FROM marts.customer_360 LIMIT 1")
    w.conn.execute(
        "UPDATE marts.order_attribution SET weight = weight / 2 WHERE model = 'linear' AND order_id = 'o1'"
    )
    checks = {c.name: c for c in check_marts(w.conn)}
    one_row, weights = checks[ONE_ROW_CHECK], checks[WEIGHTS_CHECK]
    assert not one_row.passed
    assert one_row.counts == {"golden_customers": 3, "customer_360_rows": 4, "customer_segments_rows": 3}
    assert one_row.detail == (
        "3 golden customers: 4 rows (3 customers) in marts.customer_360, 3 rows (3 customers) in"
        " marts.customer_segments"
    )
    assert not weights.passed
    assert weights.counts == {"order_models_not_summing_to_one": 1}
    assert weights.detail == "1 order and model pairs whose weights do not sum to 1"
