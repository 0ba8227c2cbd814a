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
# Pairs of strong fields: a true pair survives an error in any single field.
PREDICTION_BLOCKS = (
    ("email",), ("phone",), ("first_name_key", "last_name_key"), ("last_name_key", "birth_date_text"),
    ("first_name_key", "birth_date_text"), ("last_name_key", "postcode"), ("birth_date_text", "postcode"),
    ("address_line1", "postcode"),
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

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": MODEL_FORMAT,
                "version": self.version,
                "trained_at": self.trained_at,
                "trained_on_records": self.trained_on_records,
                "columns": list(self.columns),
                "splink_version": self.splink_version,
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

    def name(output: str):
        column = f"{output}_key"
        return cl.CustomComparison(
            output_column_name=output,
            comparison_levels=[
                cll.NullLevel(column),
                cll.ExactMatchLevel(column, term_frequency_adjustments=True),
                cll.JaroWinklerLevel(column, 0.92),
                cll.JaroWinklerLevel(column, 0.8),
                cll.ElseLevel(),
            ],
        )

    built = {
        "first_name_key": lambda: name("first_name"),
        "last_name_key": lambda: name("last_name"),
        # Not Splink's EmailComparison: its fuzzy user-name levels reward "george.morris69" vs
        # "george-morris9415", which is the name compared a second time (two different George
        # Morrises look alike there too). Nor a Levenshtein level on the whole address: at scale
        # "emma.clark7981@" vs "emma.clark7993@" (two people) is its most common case. The same
        # user name with a mistyped domain (gmial.com), or at another provider, is evidence.
        "email": lambda: cl.CustomComparison(
            output_column_name="email",
            comparison_levels=[
                cll.NullLevel("email"),
                cll.ExactMatchLevel("email"),
                cll.CustomLevel(
                    f"{_USER_L} = {_USER_R} AND levenshtein({_DOMAIN_L}, {_DOMAIN_R}) <= 2",
                    label_for_charts="Same user name, domain within 2 edits",
                ),
                cll.CustomLevel(f"{_USER_L} = {_USER_R}", label_for_charts="Same user name"),
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
                cll.CustomLevel(
                    "(length(email_organisation_r) >= 3 AND starts_with(company_key_l, email_organisation_r))"
                    " OR (length(email_organisation_l) >= 3 AND starts_with(company_key_r, email_organisation_l))",
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
    levels = [cll.CustomLevel(f"NOT ({both})").configure(is_null_level=True)]
    if street and postcode:
        levels += [
            cll.CustomLevel(
                "address_line1_l = address_line1_r AND postcode_l = postcode_r",
                label_for_charts="Same street address and postcode",
            ),
            cll.CustomLevel(
                "jaro_winkler_similarity(address_line1_l, address_line1_r) >= 0.9 AND postcode_l = postcode_r",
                label_for_charts="Street address written differently, same postcode",
            ),
        ]
    if street and city:
        levels.append(cll.CustomLevel(
            "address_line1_l = address_line1_r AND city_l = city_r",
            label_for_charts="Same street address and city, postcode differs or missing",
        ))
    if postcode:
        levels.append(cll.CustomLevel("postcode_l = postcode_r", label_for_charts="Same postcode, another street"))
    if street and not postcode and not city:
        levels.append(cll.ExactMatchLevel("address_line1"))
    if city:
        # A big city says little: term-frequency adjusted.
        levels.append(cll.ExactMatchLevel("city", term_frequency_adjustments=True))
    levels.append(cll.ElseLevel())
    return cl.CustomComparison(output_column_name="address", comparison_levels=levels)


def _rules(candidates: tuple[tuple[str, ...], ...], columns: tuple[str, ...]) -> list[tuple[str, ...]]:
    return [rule for rule in candidates if all(c in columns for c in rule)]


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
    version: int,
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
        return _train_registered(table, settings, records, columns, u_pairs, seed, version)
    finally:
        # The registration is a view on the connection; a failed training must not leave it
        # behind for the next attempt on this connection.
        with contextlib.suppress(duckdb.Error):
            conn.unregister(table.physical_name)


def _train_registered(table, settings, records, columns, u_pairs, seed, version) -> ModelFile:
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
    _settle_untrained_levels(linker, u_pairs)
    return ModelFile(
        version=version,
        trained_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        trained_on_records=records,
        columns=columns,
        splink_version=splink.__version__,
        settings=linker.misc.save_model_to_json(),
    )


def _settle_untrained_levels(linker, u_pairs: int) -> None:
    """Give every level a match weight the data supports, instead of Splink's placeholders.

    A level no random pair reached has u below what the sample can resolve: 1 / ``u_pairs``. A
    level EM never saw has no measured m: it gets m = u, a weight of 0, so it neither helps nor
    hurts. (Splink would otherwise fill in defaults interpolated from the level's position: in
    the 100,000-person demo the rare "same user name" level came out at -3.9 bits that way,
    evidence against a match.)
    """
    for comparison in linker._settings_obj.comparisons:
        for level in comparison.comparison_levels:
            if level.is_null_level:
                continue
            if not level._u_is_trained:
                level.u_probability = 1.0 / u_pairs
            if not level._m_is_trained:
                level.m_probability = level.u_probability
