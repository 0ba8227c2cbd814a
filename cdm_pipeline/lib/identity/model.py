"""The Splink model: settings built from the columns the sources provide, training, the file.

Comparisons and blocking rules exist only for columns that contact records actually carry (at
least ``MIN_COVERAGE`` of them), so a CRM export with names, birth dates and addresses but no
email or phone gets a model of exactly those fields. Choices that generalised in our
measurements (../shared/notes/splink5.md, benchmarks/RESULTS.md): Jaro-Winkler levels with
term-frequency adjustment on names and city; street, postcode and city as one comparison, as
they are one piece of evidence; blocking on every pair of strong fields so one wrong field loses
no pair; u from random pairs with a fixed seed; m by expectation maximisation on blocking rules
independent of the fields they estimate; no level left with Splink's placeholder weights.

The trained model is a versioned JSON file that belongs to the deployment. It is trained when
none exists or when a person asks (``cdm identity train``) — never silently between nights, so
yesterday's and today's clusters come from the same model.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from cdm_pipeline.lib.identity.deterministic import SPLINK_INPUT

log = logging.getLogger(__name__)

MODEL_FORMAT = "cdm-splink-model"
UNIQUE_ID = "record_id"
# A column this sparse cannot be trained reliably; leave it out of the model.
MIN_COVERAGE = 0.01
# Names are compared through their keys (features.py): accent-free, and read from the email
# address when a record lacks them.
MATCHING_COLUMNS = (
    "first_name_key", "last_name_key", "email", "phone", "birth_date_text", "address_line1", "postcode",
    "city", "company_key",
)
# Compared as one comparison (see _address).
ADDRESS = ("address_line1", "postcode", "city")
# Pairs of strong fields: a true pair survives an error in any single field, and a record with
# both names mistyped or swapped still meets its twin through birth date and address.
PREDICTION_BLOCKS = (
    # Both names, in either field (given name and surname swapped is a common slip).
    ("email",), ("phone",), ("name_pair",), ("last_name_key", "birth_date_text"),
    ("first_name_key", "birth_date_text"), ("last_name_key", "postcode"), ("birth_date_text", "postcode"),
    ("address_line1", "postcode"), ("first_name_key", "postcode"), ("birth_date_text", "address_line1"),
    ("birth_date_text", "city"), ("first_name_key", "address_line1"), ("last_name_key", "address_line1"),
    # A birth date with an initial: names, street and postcode may all carry a typo at once.
    ("birth_date_text", "left(first_name_key, 1)"), ("birth_date_text", "left(last_name_key, 1)"),
)
# EM candidates in order of preference; a rule fixes the fields it blocks on, so rules are added
# until every comparison has been estimated by at least one of them.
TRAINING_BLOCKS = (
    ("email",), ("phone",), ("first_name_key", "last_name_key"), ("birth_date_text", "postcode"),
    ("last_name_key", "birth_date_text"), ("address_line1", "postcode"),
)
MAX_TRAINING_RULES = 3
PRIOR_RULES = (("email",), ("phone",), ("first_name_key", "last_name_key", "birth_date_text"))
PRIOR_RECALL = 0.7
# Below this, EM has too few pairs to learn from: a model trained on them would be noise that
# later runs keep using.
MIN_TRAINING_RECORDS = 100


class ModelError(Exception):
    """The model file is missing, unreadable or does not fit the data."""


class NothingToLearn(ModelError):
    """The records hold no pair the exact rules call a match: a model cannot be trained yet."""


@dataclass(frozen=True)
class ModelFile:
    """A trained model as stored: Splink's settings plus what we need to audit it."""

    version: int
    trained_at: str
    trained_on_records: int
    columns: tuple[str, ...]
    splink_version: str
    settings: dict[str, Any]
    # "comparison: level" of levels EM never observed: weighed on confident pairs instead, or
    # (no such pair either) left at weight 0. Reported with every run that uses the model.
    levels_from_confident_pairs: tuple[str, ...] = ()
    untrained_levels: tuple[str, ...] = ()
    # How clusters merge on weaker pairs (clusters.py), fixed with the model so that upgrading
    # or editing the config never changes tonight's customers: a model file from before merges
    # nothing (None) until `cdm identity train` adopts the config's identity.merge_threshold.
    merge_threshold: float | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": MODEL_FORMAT,
                "version": self.version,
                "trained_at": self.trained_at,
                "trained_on_records": self.trained_on_records,
                "columns": list(self.columns),
                "splink_version": self.splink_version,
                "levels_from_confident_pairs": list(self.levels_from_confident_pairs),
                "untrained_levels": list(self.untrained_levels),
                "merge_threshold": self.merge_threshold,
                "splink_settings": self.settings,
            },
            indent=2,
        )


def load_model(path: Path) -> ModelFile:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: no model file (run `cdm identity train`)") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable model file ({exc.__class__.__name__})") from None
    if not isinstance(document, dict) or document.get("format") != MODEL_FORMAT:
        raise ModelError(f"{path}: not a cdm_pipeline model file")
    return ModelFile(
        version=int(document["version"]),
        trained_at=str(document["trained_at"]),
        trained_on_records=int(document["trained_on_records"]),
        columns=tuple(document["columns"]),
        splink_version=str(document["splink_version"]),
        settings=document["splink_settings"],
        levels_from_confident_pairs=tuple(document.get("levels_from_confident_pairs", ())),
        untrained_levels=tuple(document.get("untrained_levels", ())),
        merge_threshold=document.get("merge_threshold"),
    )


def save_model(path: Path, model: ModelFile) -> None:
    """Write the model, keeping the one it replaces as ``<name>.v<N>.json`` beside it.

    The new file is complete before the old one is touched, and the old one is copied, not
    moved: a crash in between never leaves no model at ``path`` (the next night would then
    retrain silently).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(model.to_json(), encoding="utf-8")
    if path.exists():
        try:
            keep = path.with_name(f"{path.stem}.v{load_model(path).version}{path.suffix}")
        except ModelError:
            keep = path.with_name(f"{path.stem}.unreadable{path.suffix}")
        shutil.copyfile(path, keep)
    os.replace(tmp, path)


def next_version(path: Path) -> int:
    versions = [0]
    for candidate in path.parent.glob(f"{path.stem}*{path.suffix}"):
        try:
            versions.append(load_model(candidate).version)
        except (ModelError, KeyError, ValueError):
            continue
    return max(versions) + 1


def available_columns(conn: duckdb.DuckDBPyConnection) -> tuple[str, ...]:
    """The matching columns that at least ``MIN_COVERAGE`` of the contact records carry."""
    shares = conn.execute(
        "SELECT " + ", ".join(f"count({c}) / greatest(count(*), 1)" for c in MATCHING_COLUMNS)
        + f" FROM {SPLINK_INPUT}"
    ).fetchall()[0]
    return tuple(c for c, share in zip(MATCHING_COLUMNS, shares) if share >= MIN_COVERAGE)


_USER_L, _USER_R = "split_part(email_l, '@', 1)", "split_part(email_r, '@', 1)"
_DOMAIN_L, _DOMAIN_R = "split_part(email_l, '@', 2)", "split_part(email_r, '@', 2)"


def _comparisons(columns: tuple[str, ...]) -> list[Any]:
    import splink.comparison_library as cl
    import splink.comparison_level_library as cll

    def name(output: str, other: str):
        # Splink's NameComparison thresholds, plus the name written in the other field (given
        # name and surname swapped, common in forms and transcribed records).
        column = f"{output}_key"
        levels = [
            cll.NullLevel(column),
            cll.ExactMatchLevel(column, term_frequency_adjustments=True),
            cll.JaroWinklerLevel(column, 0.92),
            cll.JaroWinklerLevel(column, 0.88),
        ]
        if other in columns:
            levels.append(cll.CustomLevel(
                f"{column}_l = {other}_r OR {other}_l = {column}_r",
                label_for_charts=f"{output.replace('_', ' ')} is the other record's {other[:-4].replace('_', ' ')}",
            ))
        levels += [cll.JaroWinklerLevel(column, 0.7), cll.ElseLevel()]
        return cl.CustomComparison(output_column_name=output, comparison_levels=levels)

    built = {
        "first_name_key": lambda: name("first_name", "last_name_key"),
        "last_name_key": lambda: name("last_name", "first_name_key"),
        # Not Splink's EmailComparison: its fuzzy user-name levels reward "george.morris69" vs
        # "george-morris9415", which is the name compared a second time (two different George
        # Morrises look alike there too). Nor a Levenshtein level on the whole address: at scale
        # "emma.clark7981@" vs "emma.clark7993@" (two people) is its most common case. The same
        # user name with a mistyped domain (gmial.com) is evidence, and so is one at another
        # provider when it holds more than the name; "james.wilson" at gmail and at yahoo is
        # the name compared again (two namesakes merged that way on a retailer's data), so it
        # is a level of its own that EM weighs.
        "email": lambda: cl.CustomComparison(
            output_column_name="email",
            comparison_levels=[
                cll.NullLevel("email"),
                cll.ExactMatchLevel("email"),
                cll.CustomLevel(
                    f"{_USER_L} = {_USER_R} AND levenshtein({_DOMAIN_L}, {_DOMAIN_R}) <= 2",
                    label_for_charts="Same user name, domain within 2 edits",
                ),
                # Term-frequency adjusted on the user name: the more records carry it, the
                # likelier two of them are different people.
                cll.ExactMatchLevel("email_user_distinct", term_frequency_adjustments=True).configure(
                    label_for_charts="Same user name at another provider",
                ),
                cll.ExactMatchLevel("email_user", term_frequency_adjustments=True).configure(
                    label_for_charts="Same user name at another provider, only the person's name",
                ),
                cll.ElseLevel(),
            ],
        ),
        "phone": lambda: cl.CustomComparison(
            output_column_name="phone",
            comparison_levels=[
                cll.NullLevel("phone"),
                cll.ExactMatchLevel("phone"),
                cll.LevenshteinLevel("phone", 1),
                cll.ElseLevel(),
            ],
        ),
        # Digits of the date (YYYYMMDD when it parsed): a typo is one edit, transposed digits
        # two; a swapped day and month is a level of its own.
        "birth_date_text": lambda: cl.CustomComparison(
            output_column_name="birth_date",
            comparison_levels=[
                cll.NullLevel("birth_date_text"),
                cll.ExactMatchLevel("birth_date_text"),
                cll.CustomLevel(
                    "substr(birth_date_text_l, 1, 4) = substr(birth_date_text_r, 1, 4)"
                    " AND substr(birth_date_text_l, 5, 2) = substr(birth_date_text_r, 7, 2)"
                    " AND substr(birth_date_text_l, 7, 2) = substr(birth_date_text_r, 5, 2)",
                    label_for_charts="Day and month swapped",
                ),
                cll.LevenshteinLevel("birth_date_text", 1),
                cll.LevenshteinLevel("birth_date_text", 2),
                cll.ElseLevel(),
            ],
        ),
        # The same employer: equal companies, or one record's company named by the other's
        # address (Kestrel Software <-> olivia.smith@kestrelsoftware.io). Term-frequency
        # adjusted: working for a large employer says little.
        "company_key": lambda: cl.CustomComparison(
            output_column_name="employer",
            comparison_levels=[
                cll.CustomLevel(
                    "(company_key_l IS NULL OR (company_key_r IS NULL AND email_organisation_r IS NULL))"
                    " AND (company_key_r IS NULL OR (company_key_l IS NULL AND email_organisation_l IS NULL))",
                ).configure(is_null_level=True),
                cll.ExactMatchLevel("company_key", term_frequency_adjustments=True),
                # Either may be the longer: "Kestrel Software" <-> kestrel.io, and "Fenwick & Co"
                # (key "fenwick": legal forms dropped) <-> fenwickandco.co.uk.
                cll.CustomLevel(
                    " OR ".join(
                        f"(least(length(company_key_{a}), length(email_organisation_{b})) >= 3"
                        f" AND (starts_with(company_key_{a}, email_organisation_{b})"
                        f" OR starts_with(email_organisation_{b}, company_key_{a})))"
                        for a, b in (("l", "r"), ("r", "l"))
                    ),
                    label_for_charts="Company named by the other's work address",
                ),
                cll.ElseLevel(),
            ],
        ),
    }
    address = tuple(c for c in ADDRESS if c in columns)
    comparisons = []
    for column in columns:
        if column not in ADDRESS:
            comparisons.append(built[column]())
        elif column == address[0]:
            comparisons.append(_address(address))
    return comparisons


def _address(columns: tuple[str, ...]):
    """Street, postcode and city as one comparison, because they are not independent evidence.

    Scored separately, one shared home counted three times (street + postcode + city, ~29 bits
    in our 100,000-person model): enough to merge a couple living together despite different
    first names, phones and emails, or two namesakes in one postcode despite different streets.
    As levels of one comparison, each outcome is weighed once: the same home, the same
    postcode only, the same city only.
    """
    import splink.comparison_library as cl
    import splink.comparison_level_library as cll

    street, postcode, city = ("address_line1" in columns), ("postcode" in columns), ("city" in columns)
    both = " OR ".join(f"({c}_l IS NOT NULL AND {c}_r IS NOT NULL)" for c in columns)
    # Typed twice, an address gains typos: a street within a few edits, a postcode one digit off
    # or two digits swapped.
    similar_street = "jaro_winkler_similarity(address_line1_l, address_line1_r) >= 0.9"
    near_postcode = "damerau_levenshtein(postcode_l, postcode_r) <= 1"
    levels = [cll.CustomLevel(f"NOT ({both})").configure(is_null_level=True)]
    if street and postcode:
        levels += [
            cll.CustomLevel(
                "address_line1_l = address_line1_r AND postcode_l = postcode_r",
                label_for_charts="Same street address and postcode",
            ),
            cll.CustomLevel(
                f"({similar_street} AND postcode_l = postcode_r)"
                f" OR (address_line1_l = address_line1_r AND {near_postcode})",
                label_for_charts="Street address or postcode written differently",
            ),
        ]
    if street and city:
        levels.append(cll.CustomLevel(
            "address_line1_l = address_line1_r AND city_l = city_r",
            label_for_charts="Same street address and city, postcode differs or missing",
        ))
    if street and (postcode or city):
        near = " OR ".join(
            ([near_postcode] if postcode else []) + (["city_l = city_r"] if city else [])
        )
        levels.append(cll.CustomLevel(
            f"{similar_street} AND ({near})",
            label_for_charts="Street address written differently, same area",
        ))
    if postcode:
        levels.append(cll.CustomLevel("postcode_l = postcode_r", label_for_charts="Same postcode, another street"))
    if street:
        levels.append(cll.CustomLevel(
            "address_line1_l = address_line1_r", label_for_charts="Same street address, another area",
        ))
    if city:
        # A big city says little: term-frequency adjusted.
        levels.append(cll.ExactMatchLevel("city", term_frequency_adjustments=True))
    levels.append(cll.ElseLevel())
    return cl.CustomComparison(output_column_name="address", comparison_levels=levels)


# Keys derived from matching columns for blocking (features.py), and what they read.
DERIVED_KEYS = {"name_pair": ("first_name_key", "last_name_key")}


def rule_columns(rule: tuple[str, ...]) -> set[str]:
    """The matching columns a blocking rule reads (a part may be an expression such as ``left(x, 1)``)."""
    import re

    derived = {c for part in rule for key, reads in DERIVED_KEYS.items() if part == key for c in reads}
    return derived | {c for part in rule for c in MATCHING_COLUMNS if re.search(rf"\b{c}\b", part)}


def _rules(candidates: tuple[tuple[str, ...], ...], columns: tuple[str, ...]) -> list[tuple[str, ...]]:
    return [rule for rule in candidates if rule_columns(rule) <= set(columns)]


def comparison_columns(columns: tuple[str, ...]) -> list[frozenset[str]]:
    """The columns each comparison of the model reads (the address ones are compared together)."""
    groups = [frozenset([c]) for c in columns if c not in ADDRESS]
    address = frozenset(c for c in ADDRESS if c in columns)
    return groups + ([address] if address else [])


def training_rules(columns: tuple[str, ...]) -> list[tuple[str, ...]]:
    """EM blocking rules, chosen so that every comparison is estimated at least once.

    EM cannot estimate a comparison that reads a column the rule blocks on (those pairs agree on
    it by construction), so each rule estimates the comparisons disjoint from it.
    """
    chosen: list[tuple[str, ...]] = []
    unestimated = set(comparison_columns(columns))
    for rule in _rules(TRAINING_BLOCKS, columns):
        if len(chosen) == MAX_TRAINING_RULES or not unestimated:
            break
        estimates = {group for group in unestimated if not group & set(rule)}
        if estimates:
            chosen.append(rule)
            unestimated -= estimates
    return chosen


def build_settings(columns: tuple[str, ...]):
    from splink import SettingsCreator, block_on

    if not columns:
        raise ModelError("contact records carry none of the matching columns: nothing to match on")
    rules = _rules(PREDICTION_BLOCKS, columns)
    if not rules:
        raise ModelError(
            "no blocking rule fits the available columns " + ", ".join(columns)
        )
    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name=UNIQUE_ID,
        comparisons=_comparisons(columns),
        blocking_rules_to_generate_predictions=[block_on(*rule) for rule in rules],
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
    )


def train_model(
    conn: duckdb.DuckDBPyConnection,
    db_api, records_table: str, records: int, columns: tuple[str, ...], u_pairs: int, seed: int,
    version: int, merge_threshold: float | None = None,
) -> ModelFile:
    """Train a model on ``records_table``: prior, u by random sampling, m by EM."""
    if records < MIN_TRAINING_RECORDS:
        raise ModelError(
            f"only {records:,} contact records: at least {MIN_TRAINING_RECORDS:,} are needed to"
            " train a linkage model (until then records link on exact identifiers only)"
        )
    settings = build_settings(columns)
    table = db_api.register(conn.table(records_table), dataset_display_name="cdm_training_records")
    try:
        return _train_registered(table, settings, records, columns, u_pairs, seed, version, merge_threshold)
    finally:
        # The registration is a view on the connection; a failed training must not leave it
        # behind for the next attempt on this connection.
        with contextlib.suppress(duckdb.Error):
            conn.unregister(table.physical_name)


def _train_registered(table, settings, records, columns, u_pairs, seed, version, merge_threshold) -> ModelFile:
    import splink
    from splink import Linker, block_on

    linker = Linker(table, settings, log_level=logging.WARNING)
    prior_rules = _rules(PRIOR_RULES, columns) or _rules(PREDICTION_BLOCKS, columns)[:1]
    try:
        linker.training.estimate_probability_two_random_records_match(
            [block_on(*rule) for rule in prior_rules], recall=PRIOR_RECALL
        )
    except ValueError:
        # The exact rules already find more pairs than the assumed recall allows (data with few
        # duplicates): they are then the best estimate there is.
        linker.training.estimate_probability_two_random_records_match(
            [block_on(*rule) for rule in prior_rules], recall=1.0
        )
    if not linker._settings_obj._probability_two_random_records_match > 0:
        # One system's first load: no two records share an exact identifier, so there is no
        # match to learn from (EM would learn namesakes as matches) and the prior would be 0.
        raise NothingToLearn(
            f"no two of the {records:,} contact records share an exact identifier yet: nothing to"
            " learn matches from (records link on exact identifiers until some do)"
        )
    linker.training.estimate_u_using_random_sampling(max_pairs=u_pairs, seed=seed)
    for rule in training_rules(columns):
        try:
            linker.training.estimate_parameters_using_expectation_maximisation(
                block_on(*rule), estimate_without_term_frequencies=True
            )
        except Exception as exc:  # Splink raises bare Exceptions when a rule finds no pairs
            log.warning("EM on %s skipped: %s", "+".join(rule), exc.__class__.__name__)
    unobserved = _settle_untrained_levels(linker, u_pairs)
    settings = linker.misc.save_model_to_json()
    weighed, untrained = _weigh_on_confident_pairs(table, settings, unobserved)
    for name in untrained:
        log.warning("identity model: level %r was never observed in training; its weight is 0", name)
    return ModelFile(
        version=version,
        trained_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        trained_on_records=records,
        columns=columns,
        splink_version=splink.__version__,
        settings=settings,
        levels_from_confident_pairs=tuple(weighed),
        untrained_levels=tuple(untrained),
        merge_threshold=merge_threshold,
    )


def level_name(comparison: str, label: str) -> str:
    return f"{comparison}: {label}"


def _settle_untrained_levels(linker, u_pairs: int) -> dict[str, dict[int, str]]:
    """Replace Splink's placeholder weights; return the levels whose m EM never observed.

    A level no random pair reached has u below what the sample can resolve: 1 / ``u_pairs``. A
    level EM never saw has no measured m: it gets m = u for now, a weight of 0 (Splink would
    otherwise fill in defaults interpolated from the level's position: in the 100,000-person
    demo the rare "same user name" level came out at -3.9 bits that way, evidence against a
    match), and ``_weigh_on_confident_pairs`` then measures it. Returned: comparison output
    name -> {index of the level in the comparison: its label}.
    """
    unobserved: dict[str, dict[int, str]] = {}
    for comparison in linker._settings_obj.comparisons:
        for index, level in enumerate(comparison.comparison_levels):
            if level.is_null_level:
                continue
            if not level._u_is_trained:
                level.u_probability = 1.0 / u_pairs
            if not level._m_is_trained:
                level.m_probability = level.u_probability
                unobserved.setdefault(comparison.output_column_name, {})[index] = level.label_for_charts
    return unobserved


# A pair the model (without the levels being weighed) scores at least this is a match for
# counting how often matches fall in a level EM never saw.
CONFIDENT_PROBABILITY = 0.99
# Fewer confident pairs than this in a comparison say too little to weigh its levels on.
MIN_CONFIDENT_PAIRS = 10
# Blocking rules tried in turn for confident pairs (each is one scoring pass).
MAX_WEIGHING_RULES = 4


def _weigh_on_confident_pairs(
    table, settings: dict[str, Any], unobserved: dict[str, dict[int, str]]
) -> tuple[list[str], list[str]]:
    """Give levels EM never observed the m their share of confident matches supports.

    EM cannot see a level when its training rules never produce a pair in it: a comparison
    whose column every rule blocks on, or whose values the rule's pairs lack (phones on a
    retailer's e-mail-keyed pairs). Weight 0 there silently turns evidence off ("different
    phone" stopped counting against a match). Instead, the pairs the rest of the model is
    confident about (probability >= ``CONFIDENT_PROBABILITY``, on a blocking rule that does not
    read the comparison's columns, so agreement is not built in) are labelled matches, as in
    Splink's ``estimate_m_from_pairwise_labels``: m of an unobserved level is its share of those
    pairs, with half a pair added to each level (Jeffreys) so a level no match reached gets a
    small m rather than 0. The other levels' m keep their trained ratios. Edits ``settings``;
    returns the levels weighed that way and those left at weight 0 (no confident pair).
    """
    from splink import Linker, block_on

    weighed: list[str] = []
    untrained: list[str] = []
    comparisons = {c["output_column_name"]: c for c in settings["comparisons"]}
    present = tuple(c for c in MATCHING_COLUMNS if _present(settings, c))
    # Whole-column rules only: a rule on a name's initial half-fixes that name's comparison.
    candidates = [r for r in dict.fromkeys(_rules(TRAINING_BLOCKS + PREDICTION_BLOCKS, present))
                  if all(part in MATCHING_COLUMNS for part in r)]
    pending = dict(unobserved)
    # Rules in order, each scored once for every comparison still waiting that it does not
    # read; a comparison whose values a rule's confident pairs lack waits for the next rule.
    for rule in candidates[:MAX_WEIGHING_RULES]:
        names = [name for name in pending if not set(rule) & _reads(comparisons[name])]
        if not names:
            continue
        counts = _confident_level_counts(Linker, table, settings, block_on(*rule), names)
        for name in names:
            seen = counts.get(name, {})
            if sum(seen.values()) < MIN_CONFIDENT_PAIRS:
                continue
            weighed += _set_m_from_counts(comparisons[name], pending.pop(name), seen)
        if not pending:
            break
    for name, labels in pending.items():
        untrained += [level_name(name, label) for label in labels.values()]
    return weighed, untrained


def _set_m_from_counts(comparison: dict[str, Any], unobserved: dict[int, str], seen: dict[int, int]) -> list[str]:
    levels = comparison["comparison_levels"]
    non_null = [i for i, level in enumerate(levels) if not level.get("is_null_level")]
    total = sum(seen.values())
    new = {i: (seen.get(i, 0) + 0.5) / (total + 0.5 * len(non_null)) for i in unobserved}
    # A level no confident match reached is no evidence for a match: its u may be as small as
    # its smoothed m (both unmeasured), and their ratio must not turn into a positive weight.
    new = {i: m if seen.get(i, 0) else min(m, levels[i]["u_probability"]) for i, m in new.items()}
    trained = [i for i in non_null if i not in unobserved]
    kept = sum(levels[i]["m_probability"] for i in trained)
    scale = (1.0 - sum(new.values())) / kept if kept else 0.0
    for i in trained:
        levels[i]["m_probability"] *= scale
    for i, m in new.items():
        levels[i]["m_probability"] = m
    return [level_name(comparison["output_column_name"], unobserved[i]) for i in unobserved]


def _reads(comparison: dict[str, Any]) -> set[str]:
    """Matching columns a comparison's SQL reads (``first_name_key_l`` -> ``first_name_key``)."""
    import re

    sql = " ".join(level.get("sql_condition", "") for level in comparison["comparison_levels"])
    return {c for c in MATCHING_COLUMNS if re.search(rf'\b"?{c}"?_[lr]\b', sql)}


def _present(settings: dict[str, Any], column: str) -> bool:
    return any(column in _reads(c) for c in settings["comparisons"])


def _confident_level_counts(Linker, table, settings, rule, names) -> dict[str, dict[int, int]]:
    """{comparison: {level index: pairs}} among the pairs ``rule`` blocks that score confidently."""
    scoring = dict(settings)
    scoring["blocking_rules_to_generate_predictions"] = [rule]
    # Splink keeps the gamma_ columns only with both of these on.
    scoring["retain_intermediate_calculation_columns"] = True
    scoring["retain_matching_columns"] = True
    linker = Linker(table, scoring, log_level=logging.WARNING)
    predictions = linker.inference.predict(threshold_match_probability=CONFIDENT_PROBABILITY)
    try:
        counts: dict[str, dict[int, int]] = {}
        for name in names:
            comparison = next(c for c in settings["comparisons"] if c["output_column_name"] == name)
            non_null = [i for i, level in enumerate(comparison["comparison_levels"]) if not level.get("is_null_level")]
            # Splink numbers a comparison's non-null levels from the last (0) up.
            value_to_index = {len(non_null) - 1 - k: i for k, i in enumerate(non_null)}
            rows = predictions.as_duckdbpyrelation().aggregate(
                f'"gamma_{name}", count(*)', f'"gamma_{name}"'
            ).fetchall()
            counts[name] = {value_to_index[v]: n for v, n in rows if v in value_to_index}
        return counts
    finally:
        predictions.drop_table_from_database_and_remove_from_cache()
