"""Bulk junk sharing one email changes nobody's customer (issue 20 probe).

The probe's shape: thousands of contact rows with one shared inbox address, some with
real-looking names, some all "Test User". The shared address is over the cap, so it never links;
but before the fix the rows still moved real people: as name-only records they joined real
customers of the same name (and bridged namesakes), their repeated name made every other name
look rarer (term frequencies), and a model trained on them learnt a different prior.
"""

from __future__ import annotations

import random

import pytest

from cdm_pipeline.lib.identity.evaluation import evaluate_clusters
from cdm_pipeline.lib.identity.resolve import resolve_identities
from cdm_pipeline_tests.identity_fixtures import contact, insert_rows, labelled_contacts, staged_warehouse, write_truth

PEOPLE = 300
JUNK = 1500
SOURCES = ("crm_contacts", "shop_customers", "email_subscribers")


def _junk_rows(real: list[dict]) -> list[dict]:
    """Half with the names of real people (first and last mixed), half "Test User"; one address."""
    rng = random.Random(5)
    firsts = [r["first_name"] for r in real if r.get("first_name")]
    lasts = [r["last_name"] for r in real if r.get("last_name")]
    rows = []
    for n in range(JUNK):
        first, last = (rng.choice(firsts), rng.choice(lasts)) if n % 2 else ("Test", "User")
        rows.append(contact("crm_contacts", f"JUNK{n:05d}", first_name=first, last_name=last,
                            email="orders@brightwater-clinic.co.uk"))
    return rows


def _outcome(wh, truth_path):
    scores = evaluate_clusters(wh.conn, truth_path)
    (mixed,) = wh.conn.execute(
        """SELECT count(*) FROM (SELECT customer_id FROM identity.customer_xref GROUP BY customer_id
            HAVING bool_or(source_record_id LIKE 'JUNK%') AND NOT bool_and(source_record_id LIKE 'JUNK%'))"""
    ).fetchone()
    return (scores.predicted_pairs, scores.correct_pairs, scores.true_pairs), mixed


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The labelled records alone: the model trained on them, and their pairwise outcome."""
    folder = tmp_path_factory.mktemp("clean")
    rows, truth = labelled_contacts(seed=7, people=PEOPLE)
    wh = staged_warehouse(folder, rows, sources=SOURCES)
    resolve_identities(wh.conn, wh.config, "clean")
    outcome = _outcome(wh, write_truth(folder / "truth.csv", truth))
    wh.conn.close()
    assert outcome[0][1] > 0.9 * outcome[0][2]  # the fixture resolves well without junk
    return rows, truth, wh.config.identity.model_path, outcome


def test_junk_arriving_after_training_changes_no_customer(clean, tmp_path):
    rows, truth, model_path, outcome = clean
    wh = staged_warehouse(tmp_path, rows, sources=SOURCES)
    wh.config.identity.model_path.parent.mkdir(parents=True, exist_ok=True)
    wh.config.identity.model_path.write_bytes(model_path.read_bytes())
    insert_rows(wh.conn, "contacts", _junk_rows(rows))
    summary = resolve_identities(wh.conn, wh.config, "junk")
    assert not summary.model_trained
    assert summary.deterministic.over_cap_values == 1
    # Before the fix: 32 customers mixed junk with real records (11 when the model learnt from junk).
    assert _outcome(wh, write_truth(tmp_path / "truth.csv", truth)) == (outcome[0], 0)
    wh.conn.close()


def test_junk_in_the_first_training_changes_no_customer(clean, tmp_path):
    rows, truth, _, outcome = clean
    wh = staged_warehouse(tmp_path, rows + _junk_rows(rows), sources=SOURCES)
    summary = resolve_identities(wh.conn, wh.config, "junk")
    assert summary.model_trained
    assert _outcome(wh, write_truth(tmp_path / "truth.csv", truth)) == (outcome[0], 0)
    wh.conn.close()
