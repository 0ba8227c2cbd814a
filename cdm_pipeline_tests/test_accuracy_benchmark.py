"""The accuracy benchmark's own logic (benchmarks/accuracy.py): pairwise scoring, the landing
files and cdm.yaml it writes, the bare-Splink input cleaning and the ACCURACY.md rewrite.
The benchmark run itself is `make accuracy` (minutes, network for the FEBRL wheel)."""

import sys

import numpy as np
import pandas as pd
import pytest

from cdm_pipeline_tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from benchmarks import accuracy  # noqa: E402


def _frame(rows: list[tuple[str, str, str]], last: str) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["source_name", "record_id", last])


def test_scores_count_pairs_from_groups_and_quarantined_records_as_singletons():
    labels = _frame(
        [("crm", "a1", "E1"), ("crm", "a2", "E1"), ("crm", "a3", "E1"),
         ("crm", "b1", "E2"), ("crm", "b2", "E2")],
        "entity",
    )
    # b2 is missing (quarantined): its true pair with b1 is missed. b1 is wrongly merged into
    # E1's cluster. z9 is not labelled and must not count.
    clusters = _frame(
        [("crm", "a1", "X"), ("crm", "a2", "X"), ("crm", "a3", "X"), ("crm", "b1", "X"),
         ("crm", "z9", "X")],
        "cluster",
    )

    scores = accuracy.score_pairs(labels, clusters)

    assert (scores.records, scores.true_pairs, scores.predicted_pairs, scores.true_positives) == (5, 4, 6, 3)
    assert scores.precision == 0.5
    assert scores.recall == 0.75
    assert scores.f1 == pytest.approx(0.6)


def test_scores_join_on_source_and_id_and_treat_no_links_as_precise_but_useless():
    labels = _frame([("crm", "1", "E1"), ("shop", "1", "E1"), ("shop", "2", "E2")], "entity")
    same_id_other_source = _frame([("crm", "1", "C1"), ("shop", "1", "C2"), ("shop", "2", "C1")], "cluster")

    scores = accuracy.score_pairs(labels, same_id_other_source)
    assert (scores.true_pairs, scores.predicted_pairs, scores.true_positives) == (1, 1, 0)
    assert (scores.precision, scores.recall, scores.f1) == (0.0, 0.0, 0.0)

    nothing = accuracy.score_pairs(labels, _frame([], "cluster"))
    assert (nothing.precision, nothing.recall, nothing.f1) == (1.0, 0.0, 0.0)
    assert nothing.as_dict()["true_pairs"] == 1


def test_scores_refuse_a_record_listed_twice():
    labels = _frame([("crm", "1", "E1"), ("crm", "2", "E1")], "entity")
    twice = _frame([("crm", "1", "C1"), ("crm", "1", "C2")], "cluster")
    with pytest.raises(ValueError, match="clusters hold a record more than once"):
        accuracy.score_pairs(labels, twice)


def _tiny_dataset() -> accuracy.Dataset:
    crm = pd.DataFrame({
        "Id": ["007", "008", "009"],
        "First": ["Ann", " Ann ", ""],
        "DOB": ["31/12/1980", "31/12/1980", "99/99/1999"],
        "Tel": ["+44 7700 900123", "", "07700-900123"],
        accuracy.ENTITY: ["P1", "P1", "P2"],
    })
    shop = pd.DataFrame({"Customer ID": ["1"], "Email": ["ANN@Example.org"], accuracy.ENTITY: ["P2"]})
    return accuracy.Dataset("tiny", "a test set", (
        accuracy.Source("crm_contacts", "crm", "crm/contacts", "Id",
                        {"first_name": "First", "phone": "Tel",
                         "birth_date": {"column": "DOB", "format": "%d/%m/%Y"}}, crm),
        accuracy.Source("shop_customers", "shop", "shop/customers", "Customer ID", {"email": "Email"}, shop),
    ))


def test_landing_files_and_config_are_what_a_user_would_write(tmp_path):
    from cdm_pipeline.config import load_config

    dataset = _tiny_dataset()

    written = accuracy.write_landing(dataset, tmp_path / "landing")
    config_path = accuracy.write_config(dataset, tmp_path)

    assert [p.relative_to(tmp_path).as_posix() for p in written] == [
        "landing/crm/contacts/2026-10-01/contacts.csv",
        "landing/shop/customers/2026-10-01/customers.csv",
    ]
    assert written[0].read_text() == (
        "Id,First,DOB,Tel\n007,Ann,31/12/1980,+44 7700 900123\n008, Ann ,31/12/1980,\n"
        "009,,99/99/1999,07700-900123\n"
    )
    config = load_config(config_path)  # the project's own validation accepts it
    crm = config.source("crm_contacts")
    assert (crm.kind, crm.format, crm.path, crm.id_column) == ("contacts", "csv", "crm/contacts/{date}/*.csv", "Id")
    assert crm.column_spec("birth_date").format == "%d/%m/%Y"
    assert config.source("shop_customers").column_spec("email").column == "Email"
    assert config.identity.truth_path is None
    assert config.warehouse == tmp_path / "warehouse" / "cdm.duckdb"
    assert config.identity.model_path == tmp_path / "identity" / "splink_model.json"
    assert config.exports.dir == tmp_path / "exports"


def test_labels_and_shape_count_every_source():
    dataset = _tiny_dataset()

    labels = accuracy.labels_of(dataset)
    shape = accuracy.shape_of(dataset)

    assert labels.values.tolist() == [
        ["crm_contacts", "007", "P1"], ["crm_contacts", "008", "P1"], ["crm_contacts", "009", "P2"],
        ["shop_customers", "1", "P2"],
    ]
    assert (shape["records"], shape["entities"], shape["true_pairs"]) == (4, 2, 2)
    assert shape["records_per_entity"] == {"1": 0, "2": 2, "3": 0, "4": 0, "5+": 0}
    assert shape["sources"]["crm_contacts"] == {"records": 3, "columns": ["birth_date", "first_name", "phone"]}


def test_bare_input_is_lightly_cleaned_with_the_configured_date_format():
    records = accuracy.bare_input(_tiny_dataset())

    assert list(records.columns) == [
        "unique_id", "source_name", "record_id", "first_name", "email", "phone", "birth_date",
    ]
    rows = records.astype(object).where(records.notna(), None).values.tolist()
    assert rows == [
        ["crm_contacts:007", "crm_contacts", "007", "ann", None, "447700900123", "1980-12-31"],
        ["crm_contacts:008", "crm_contacts", "008", "ann", None, None, "1980-12-31"],
        ["crm_contacts:009", "crm_contacts", "009", None, None, "07700900123", "99/99/1999"],
        ["shop_customers:1", "shop_customers", "1", None, "ann@example.org", None, None],
    ]


def test_febrl_records_map_to_one_address_line_and_the_number_in_the_id():
    raw = pd.DataFrame({
        "rec_id": ["rec-12-org", "rec-12-dup-0"], "given_name": ["kayla", "kayla"],
        "surname": ["harrington", "harington"], "street_number": ["6", ""],
        "address_1": ["maltby circuit", "maltby circuit"], "address_2": ["", "coaling"],
        "suburb": ["coolaroo", "coolaroo"], "postcode": ["3465", "3465"], "state": ["nsw", "nsw"],
        "date_of_birth": ["19150612", ""], "soc_sec_id": ["9004242", "9004242"],
    })

    source = accuracy.febrl_source(raw)

    assert source.frame["street"].tolist() == ["6 maltby circuit", "maltby circuit"]
    assert source.frame[accuracy.ENTITY].tolist() == ["12", "12"]
    assert "soc_sec_id" not in source.frame.columns and "soc_sec_id" not in source.columns.values()
    assert source.columns["birth_date"] == {"column": "date_of_birth", "format": "%Y%m%d"}
    with pytest.raises(ValueError, match="held out"):
        accuracy.read_febrl(REPO_ROOT / "missing.whl", "dataset3")


def test_records_per_entity_gives_each_entity_one_first_record():
    entity, occurrence = accuracy.records_per_entity(np.random.default_rng(1), 50, {1: 0.5, 3: 0.5})

    counts = np.bincount(entity, minlength=50)
    assert set(counts.tolist()) == {1, 3}
    assert entity.size == counts.sum()
    assert np.bincount(entity[occurrence == 0], minlength=50).tolist() == [1] * 50
    assert sorted(occurrence[entity == int(np.argmax(counts))].tolist()) == [0, 1, 2]
    ids = accuracy.record_ids(np.random.default_rng(2), 1000, "C", 4)
    assert len(set(ids)) == 1000 and all(len(i) == 5 for i in ids)


def test_demo_variants_are_deterministic():
    first = accuracy.heavy_typos(REPO_ROOT)
    again = accuracy.heavy_typos(REPO_ROOT)
    pd.testing.assert_frame_equal(first.sources[0].frame, again.sources[0].frame)


def _run(sha: str, f1: float) -> dict:
    shape = {"description": "d", "records": 10, "entities": 6, "true_pairs": 7,
             "records_per_entity": {"1": 3, "2": 2, "3": 1, "4": 0, "5+": 0},
             "sources": {"crm": {"records": 10, "columns": ["email"]}}}
    return {
        "date": "2026-12-01", "git_sha": sha, "identity_uncommitted": sha == "bbb2222",
        "machine": "x86_64, 2 cores, Linux", "total_seconds": 120.0,
        "sets": {"tiny": {
            "shape": shape,
            "pipeline": {"exit_status": 0, "seconds": 30.0, "precision": 1.0,
                         "recall": 0.5, "f1": f1, "quarantined": {"no_usable_identifier": 2}},
            "bare": {"precision": 0.9, "recall": 0.8, "f1": 0.8, "best_threshold": 0.95, "seconds": 4.0},
        }},
    }


def test_markdown_keeps_hand_written_text_and_earlier_runs_as_history(tmp_path):
    page = tmp_path / "ACCURACY.md"
    page.write_text(f"# Intro\n\nHand-written.\n\n{accuracy.START}\nold\n{accuracy.END}\n\nFooter.\n")

    accuracy.update_markdown(page, [_run("aaa1111", 0.5), _run("bbb2222", 0.9)])

    text = page.read_text()
    assert text.startswith("# Intro\n\nHand-written.\n\n")
    assert text.endswith(f"{accuracy.END}\n\nFooter.\n")
    assert "\nold\n" not in text
    latest, history = text.split("## History")
    assert "commit bbb2222 (cdm_pipeline/lib/identity had uncommitted changes)" in latest
    assert (
        "| tiny | 10 | 7 | 1.000 | 0.500 | 0.900 | 2 (no_usable_identifier 2) | 30.0"
        " | 0.900 | 0.800 | 0.800 (0.95) | 4.0 | +0.100 |"
    ) in latest
    assert "| tiny | d | 10 | 6 | 3 / 2 / 1 / 0 / 0 | crm: email |" in latest
    assert "commit aaa1111," in history and "| 0.500 | 2 (no_usable_identifier 2) |" in history


def test_pipeline_env_runs_an_exported_commit_and_never_the_callers_dagster_home(monkeypatch, tmp_path):
    monkeypatch.setenv("DAGSTER_HOME", "/somewhere")
    monkeypatch.setenv("CDM_CONFIG", "/other.yaml")
    monkeypatch.setenv("PYTHONPATH", "/stale")

    assert "PYTHONPATH" not in accuracy.pipeline_env(None)
    env = accuracy.pipeline_env(tmp_path)
    assert env["PYTHONPATH"] == str(tmp_path)
    assert "DAGSTER_HOME" not in env and "CDM_CONFIG" not in env
