"""The linkage model's levels and weights off the demo's shape: which level a pair of records
falls in (the shipped comparisons evaluated on features computed as the pipeline computes them),
and the weight a level gets when EM never observes it."""

from __future__ import annotations

import dataclasses
import json
import math
import random

import duckdb
import pytest

from cdm_pipeline.lib.identity.features import EMAIL_USER_KEYS, EMPLOYER_KEYS, LEGAL_FORMS, NAME_KEYS
from cdm_pipeline.lib.identity.model import MATCHING_COLUMNS, ModelError, build_settings, load_model, save_model
from cdm_pipeline.lib.identity.resolve import resolve_identities
from cdm_pipeline_tests.identity_fixtures import contact, labelled_contacts, make_people, staged_warehouse

SIDES = ("l", "r")


def _features(conn, record: dict) -> dict:
    """A record's Splink input columns, computed by the pipeline's own feature SQL."""
    columns = ("first_name", "last_name", "email", "phone", "birth_date_text", "address_line1",
               "postcode", "city", "company")
    values = ", ".join(f"${c}::VARCHAR AS {c}" for c in columns)
    relation = conn.execute(
        f"WITH r AS (SELECT {values}), keyed AS (SELECT *, {NAME_KEYS}, {EMPLOYER_KEYS} FROM r)"
        f" SELECT *, {EMAIL_USER_KEYS} FROM keyed",
        {**{c: record.get(c) for c in columns}, "legal_forms": LEGAL_FORMS},
    )
    names = [d[0] for d in relation.description]
    return dict(zip(names, relation.fetchone(), strict=True))


def level_of(comparison: str, left: dict, right: dict) -> str:
    """The label of the first level of ``comparison`` whose SQL holds for the pair."""
    conn = duckdb.connect()
    pair = {f"{k}_{side}": v for side, record in zip(SIDES, (left, right), strict=True)
            for k, v in _features(conn, record).items()}
    columns = ", ".join(f"${k} AS {k}" for k in pair)
    settings = build_settings(MATCHING_COLUMNS).create_settings_dict(sql_dialect_str="duckdb")
    (found,) = [c for c in settings["comparisons"] if c["output_column_name"] == comparison]
    for level in found["comparison_levels"]:
        if level["sql_condition"] == "ELSE":
            conn.close()
            return level["label_for_charts"]
        if conn.execute(
            f"SELECT coalesce(({level['sql_condition']}), false) FROM (SELECT {columns})", pair
        ).fetchone()[0]:
            conn.close()
            return level["label_for_charts"]
    raise AssertionError("no level holds")


def test_a_company_and_its_domain_name_the_same_employer_whichever_is_longer():
    crm = {"first_name": "Amy", "last_name": "Cole", "company": "Fenwick & Co"}
    assert level_of("employer", crm, {"email": "amy.cole@fenwickandco.co.uk"}) == (
        "Company named by the other's work address")
    assert level_of("employer", {"company": "Kestrel Software Ltd"}, {"email": "o.s@kestrel.io"}) == (
        "Company named by the other's work address")
    assert level_of("employer", crm, {"email": "amy.cole@fenland.co.uk"}) == "All other comparisons"


@pytest.mark.parametrize(
    "left, right, expected",
    [
        # A user name that is only the person's name, at another provider: its own level.
        ({"first_name": "James", "last_name": "Wilson", "email": "james.wilson@gmail.com"},
         {"first_name": "James", "last_name": "Wilson", "email": "james.wilson@yahoo.com"},
         "Same user name at another provider, only the person's name"),
        ({"first_name": "James", "last_name": "Wilson", "email": "jwilson@gmail.com"},
         {"first_name": "James", "email": "jwilson@outlook.com"},
         "Same user name at another provider, only the person's name"),
        # More than the name: evidence of its own.
        ({"first_name": "Becky", "email": "rebecca.green70@gmail.com"},
         {"first_name": "Rebecca", "last_name": "Green", "email": "rebecca.green70@yahoo.com"},
         "Same user name at another provider"),
        ({"first_name": "Ann", "last_name": "Lee", "email": "ann.lee@gmial.com"},
         {"first_name": "Ann", "last_name": "Lee", "email": "ann.lee@gmail.com"},
         "Same user name, domain within 2 edits"),
    ],
)
def test_the_same_user_name_at_another_provider_is_weighed_apart_when_it_is_only_the_name(left, right, expected):
    assert level_of("email", left, right) == expected


def test_given_name_and_surname_swapped_is_a_level_of_each_name():
    left = {"first_name": "Grace", "last_name": "Tia"}
    right = {"first_name": "Tia", "last_name": "Grace"}
    assert level_of("first_name", left, right) == "first name is the other record's last name"
    assert level_of("last_name", left, right) == "last name is the other record's first name"


def test_a_typo_in_the_street_or_postcode_keeps_the_address_evidence():
    home = {"address_line1": "14 bramble close", "postcode": "2602", "city": "kellerberrin"}
    assert level_of("address", home, {**home, "postcode": "2620"}) == "Street address or postcode written differently"
    assert level_of("address", home, {**home, "address_line1": "14 brambel close"}) == (
        "Street address or postcode written differently")
    assert level_of("address", home, {**home, "address_line1": "14 brambel close", "postcode": "2999"}) == (
        "Street address written differently, same area")
    assert level_of("address", home, {"address_line1": "9 other road", "postcode": "2602"}) == (
        "Same postcode, another street")


# --- a level EM never sees ------------------------------------------------------------------


def _weight(model, comparison: str, label: str) -> float:
    (found,) = [c for c in model.settings["comparisons"] if c["output_column_name"] == comparison]
    (level,) = [lv for lv in found["comparison_levels"] if lv.get("label_for_charts") == label]
    return math.log2(level["m_probability"] / level["u_probability"])


@pytest.fixture(scope="module")
def phones_unseen_by_em(tmp_path_factory):
    """A CRM with phones, an ESP without them (same addresses as the CRM), a shop with phones
    but no e-mail. EM's rules fix what they block on: e-mail pairs are CRM-ESP (no phone on one
    side), phone pairs are CRM-shop (no e-mail on one side), so EM never sees a phone compared.
    """
    rng = random.Random(5)
    rows = []
    for number, person in enumerate(make_people(rng, 200), start=1):
        crm = dict(first_name=person.first_name, last_name=person.last_name, email=person.email,
                   phone=person.phone, birth_date=person.birth_date)
        rows.append(contact("crm_contacts", f"C{number}", **crm))
        if rng.random() < 0.6:
            rows.append(contact("email_subscribers", f"E{number}", first_name=person.first_name,
                                last_name=person.last_name, email=person.email))
        if rng.random() < 0.6:
            phone = person.phone if rng.random() < 0.8 else "+447" + "".join(str(rng.randint(0, 9)) for _ in range(9))
            rows.append(contact("shop_customers", f"S{number}", first_name=person.first_name,
                                last_name=person.last_name, phone=phone, birth_date=person.birth_date))
    folder = tmp_path_factory.mktemp("phones")
    wh = staged_warehouse(folder, rows, sources=("crm_contacts", "shop_customers", "email_subscribers"))
    summary = resolve_identities(wh.conn, wh.config, "run-1")
    yield wh, summary, load_model(wh.config.identity.model_path)
    wh.conn.close()


def test_a_level_em_never_sees_is_weighed_on_confident_pairs_not_left_at_zero(phones_unseen_by_em):
    _, summary, model = phones_unseen_by_em

    # One in five shop phones differs from the CRM one: a different phone is evidence against a
    # match (weight 0 before: "different phone" counted for nothing), the same phone for one.
    assert "phone: All other comparisons" in model.levels_from_confident_pairs
    assert _weight(model, "phone", "All other comparisons") < -1.5
    assert _weight(model, "phone", "Exact match on phone") > 5.0
    assert summary.model_trained


def test_levels_nobody_could_weigh_are_named_in_the_model_file(phones_unseen_by_em):
    wh, _, model = phones_unseen_by_em
    # Every non-null level is either trained, weighed on confident pairs, or named as untrained;
    # the file says which (what `cdm run` and the governance report show).
    reread = load_model(wh.config.identity.model_path)
    assert reread.levels_from_confident_pairs == model.levels_from_confident_pairs
    assert reread.untrained_levels == model.untrained_levels
    assert not set(model.levels_from_confident_pairs) & set(model.untrained_levels)



def test_the_stage_leaves_no_copy_of_the_records_in_the_warehouse_file(tmp_path):
    rng = random.Random(3)
    rows = [contact("crm_contacts", f"C{n}", first_name=p.first_name, last_name=p.last_name, email=p.email)
            for n, p in enumerate(make_people(rng, 30))]
    wh = staged_warehouse(tmp_path, rows)
    # What an earlier version left in the file: persistent work schemas with personal data.
    wh.conn.execute("CREATE SCHEMA identity_work")
    wh.conn.execute("CREATE TABLE identity_work.records AS SELECT * FROM staging.contacts")
    wh.conn.execute("CREATE SCHEMA identity_splink")
    wh.conn.execute("CREATE TABLE identity_splink.__splink__df_concat AS SELECT * FROM staging.contacts")
    resolve_identities(wh.conn, wh.config, "run-1")
    # The work area answers on the stage's connection while it lives...
    assert wh.conn.execute("SELECT count(*) FROM identity_work.records").fetchone() == (30,)
    wh.conn.close()

    conn = duckdb.connect(str(wh.config.warehouse), read_only=True)
    schemas = {row[0] for row in conn.execute(
        "SELECT DISTINCT schema_name FROM duckdb_tables() WHERE database_name = current_database()").fetchall()}
    assert conn.execute("SELECT count(*) FROM identity.customer_xref").fetchone() == (30,)
    conn.close()
    # ... and is gone from the file with it, as are the old schemas.
    assert "identity" in schemas and not schemas & {"identity_work", "identity_splink"}


def test_signals_are_recorded_per_run_and_a_sharp_move_is_a_warning(phones_unseen_by_em):
    wh, first, model = phones_unseen_by_em
    signals = first.signals
    assert 0.5 < signals.expected_precision <= 1.0 and 0.5 < signals.expected_recall <= 1.0
    # Customers of one record over all records, as the published tables hold them.
    alone, records = wh.conn.execute(
        "SELECT count(*) FILTER (WHERE record_count = 1), sum(record_count) FROM identity.golden_customers"
    ).fetchone()
    assert signals.singleton_share == pytest.approx(alone / records) and 0 < alone < records
    assert signals.untrained_levels == model.untrained_levels and signals.warnings == ()
    stored = wh.conn.execute(
        "SELECT expected_precision, expected_recall, singleton_share FROM identity.resolution_runs"
        " WHERE run_id = 'run-1'"
    ).fetchone()
    assert stored == pytest.approx((signals.expected_precision, signals.expected_recall, signals.singleton_share))

    # The previous night's figures as if recall had been far higher: this night warns, once.
    wh.conn.execute(
        "UPDATE identity.resolution_runs SET expected_recall = expected_recall + 0.2 WHERE run_id = 'run-1'"
    )
    again = resolve_identities(wh.conn, wh.config, "run-2").signals
    assert again.expected_recall == pytest.approx(signals.expected_recall)
    assert len(again.warnings) == 1 and again.warnings[0].startswith("expected recall moved from")
    assert wh.conn.execute(
        "SELECT signal_warnings FROM identity.resolution_runs WHERE run_id = 'run-2'"
    ).fetchone() == (list(again.warnings),)


def test_a_model_file_from_before_merges_nothing_until_it_is_retrained(tmp_path):
    # A strict match threshold leaves true pairs below it: merging on cluster evidence joins them.
    rows, _ = labelled_contacts(seed=11, people=150, fields=(
        "first_name", "last_name", "birth_date", "address_line1", "postcode", "city"))
    wh = staged_warehouse(tmp_path, rows, sources=("crm_contacts", "shop_customers"), match_threshold=0.99999)
    first = resolve_identities(wh.conn, wh.config, "run-1")
    model = load_model(wh.config.identity.model_path)
    assert model.merge_threshold == wh.config.identity.merge_threshold == 0.6
    assert first.clusters.merges_on_cluster_evidence > 0
    # The same model as an earlier version wrote it: no merge_threshold in the file.
    document = json.loads(wh.config.identity.model_path.read_text())
    del document["merge_threshold"]
    old = tmp_path / "old_model.json"
    old.write_text(json.dumps(document))
    config = wh.config.model_copy(update={
        "identity": wh.config.identity.model_copy(update={"model_path": old})})

    summary = resolve_identities(wh.conn, config, "run-old-model")

    assert load_model(old).merge_threshold is None
    assert summary.clusters.merges_on_cluster_evidence == 0 and not summary.model_trained
    assert summary.clusters.clusters == first.clusters.clusters + first.clusters.merges_on_cluster_evidence
    wh.conn.close()


def _levels(settings: dict) -> list[tuple]:
    return [
        (c["output_column_name"], level.get("label_for_charts"), level.get("m_probability"), level.get("u_probability"))
        for c in settings["comparisons"] for level in c["comparison_levels"]
    ]


def test_the_model_renders_for_spark_with_its_trained_parameters_and_back(phones_unseen_by_em, tmp_path):
    _, _, model = phones_unseen_by_em
    assert model.dialect == "duckdb"
    spark = model.settings_for("spark")
    # Every level keeps its m and u; the SQL is Spark's (Splink's jar functions, backquotes).
    assert _levels(spark) == _levels(model.settings) and len(_levels(spark)) > 20
    assert spark["probability_two_random_records_match"] == model.settings["probability_two_random_records_match"]
    sql = " ".join(level["sql_condition"] for c in spark["comparisons"] for level in c["comparison_levels"])
    assert "jaro_winkler(`first_name_key_l`" in sql and "jaro_winkler_similarity" not in sql
    rules = [rule["blocking_rule"] for rule in spark["blocking_rules_to_generate_predictions"]]
    assert spark["sql_dialect"] == "spark" and "l.`email` = r.`email`" in rules
    # A model trained on Spark (its stored SQL Spark's) comes back to DuckDB unchanged.
    on_spark = dataclasses.replace(model, settings=spark)
    save_model(tmp_path / "spark_model.json", on_spark)
    reread = load_model(tmp_path / "spark_model.json")
    assert reread.dialect == "spark" and reread.settings == spark
    back = reread.settings_for("duckdb")
    assert _levels(back) == _levels(model.settings)
    assert [level["sql_condition"] for c in back["comparisons"] for level in c["comparison_levels"]] == [
        level["sql_condition"] for c in build_settings(model.columns).create_settings_dict("duckdb")["comparisons"]
        for level in c["comparison_levels"]
    ]
    # The file carries the engine-neutral parameters beside the rendered settings.
    document = json.loads((tmp_path / "spark_model.json").read_text())
    assert document["parameters"] == model.parameters()


def test_a_model_file_from_before_engines_loads_and_renders_for_spark(phones_unseen_by_em, tmp_path):
    wh, _, model = phones_unseen_by_em
    document = json.loads(wh.config.identity.model_path.read_text())
    del document["parameters"]  # as files were written before this version
    old = tmp_path / "old.json"
    old.write_text(json.dumps(document))
    loaded = load_model(old)
    assert loaded.settings_for("duckdb") == model.settings  # DuckDB: the stored settings, as they were
    assert _levels(loaded.settings_for("spark")) == _levels(model.settings)
    # A model whose comparisons this version no longer builds is refused on another engine.
    document["splink_settings"]["comparisons"][0]["comparison_levels"][1]["label_for_charts"] = "gone"
    old.write_text(json.dumps(document))
    with pytest.raises(ModelError, match=r"no longer builds: it cannot be rendered for spark; retrain it"):
        load_model(old).settings_for("spark")
