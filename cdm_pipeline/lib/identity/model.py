"""The Splink model: settings built from the columns the sources provide, training, the file.

Comparisons and blocking rules exist only for columns that contact records actually carry (at
least ``MIN_COVERAGE`` of them), so a CRM export with names, birth dates and addresses but no
email or phone gets a model of exactly those fields. Choices that generalised in our
measurements (../shared/notes/splink5.md, benchmarks/RESULTS.md): Jaro-Winkler levels with
term-frequency adjustment on names and city; street, postcode and city as one comparison, as
they are one piece of evidence; blocking on every pair of strong fields so one wrong field loses
no pair; u from random pairs with a fixed seed; m by expectation maximisation on blocking rules
independent of the fields they estimate; no level left with Splink's placeholder weights.
The comparisons themselves are in comparisons.py, the matching columns and blocking rules in
blocking.py; weights for levels training could not estimate in untrained_levels.py.

The trained model is a versioned JSON file that belongs to the deployment. It is trained when
none exists or when a person asks (``cdm identity train``) — never silently between nights, so
yesterday's and today's clusters come from the same model.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from cdm_pipeline.lib.identity.blocking import MATCHING_COLUMNS, PREDICTION_BLOCKS, TRAINING_BLOCKS, rules_for
from cdm_pipeline.lib.identity.comparisons import ADDRESS, comparisons_for
from cdm_pipeline.lib.identity.deterministic import TRAINING_INPUT
from cdm_pipeline.lib.identity.engine import LinkageEngine
from cdm_pipeline.lib.identity.untrained_levels import settle_untrained_levels, weigh_on_confident_pairs

log = logging.getLogger(__name__)

MODEL_FORMAT = "cdm-splink-model"
UNIQUE_ID = "record_id"
# A column this sparse cannot be trained reliably; leave it out of the model.
MIN_COVERAGE = 0.01
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

    @property
    def dialect(self) -> str:
        """The SQL dialect the stored Splink settings are written in (the engine it was trained on)."""
        return str(self.settings.get("sql_dialect") or "duckdb")

    def parameters(self) -> dict[str, Any]:
        """The trained parameters, engine-neutral: the prior, and m and u of every comparison level
        by the comparison's output name and the level's label."""
        return {
            "probability_two_random_records_match": self.settings["probability_two_random_records_match"],
            "comparisons": [
                {
                    "output_column_name": comparison["output_column_name"],
                    "levels": [
                        {key: level.get(key) for key in ("label_for_charts", "m_probability", "u_probability")}
                        for level in comparison["comparison_levels"]
                    ],
                }
                for comparison in self.settings["comparisons"]
            ],
        }

    def settings_for(self, dialect: str) -> dict[str, Any]:
        """Splink settings for an engine's SQL dialect, with this model's trained parameters.

        In the dialect it was trained in, the stored settings as they are. In another, the
        comparisons this code builds for the model's columns rendered in that dialect, each level
        given its stored m and u; levels are matched by comparison and label, so a model whose
        comparisons this version no longer builds is refused, never silently retrained or re-weighed.
        """
        if dialect == self.dialect:
            return json.loads(json.dumps(self.settings))
        rendered = build_settings(self.columns).create_settings_dict(dialect)
        stored = self.parameters()
        rendered_shape = [
            (c["output_column_name"], [level.get("label_for_charts") for level in c["comparison_levels"]])
            for c in rendered["comparisons"]
        ]
        stored_shape = [
            (c["output_column_name"], [level["label_for_charts"] for level in c["levels"]])
            for c in stored["comparisons"]
        ]
        if rendered_shape != stored_shape:
            raise ModelError(
                f"model version {self.version} was trained ({self.dialect}) with comparisons this version of"
                f" cdm_pipeline no longer builds: it cannot be rendered for {dialect}; retrain it with"
                " `cdm identity train`"
            )
        for comparison, trained in zip(rendered["comparisons"], stored["comparisons"], strict=True):
            for level, values in zip(comparison["comparison_levels"], trained["levels"], strict=True):
                for key in ("m_probability", "u_probability"):
                    if values[key] is None:
                        level.pop(key, None)
                    else:
                        level[key] = values[key]
        rendered["sql_dialect"] = dialect
        rendered["probability_two_random_records_match"] = stored["probability_two_random_records_match"]
        for key in ("retain_matching_columns", "retain_intermediate_calculation_columns"):
            rendered[key] = self.settings.get(key, rendered.get(key))
        return rendered

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
                # Engine-neutral: what settings_for renders into any engine's SQL.
                "parameters": self.parameters(),
                # As trained, in the SQL of the engine it was trained on (sql_dialect).
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
    """The matching columns that at least ``MIN_COVERAGE`` of the contact records the model learns from carry."""
    shares = conn.execute(
        "SELECT " + ", ".join(f"count({c}) / greatest(count(*), 1)" for c in MATCHING_COLUMNS)
        + f" FROM {TRAINING_INPUT}"
    ).fetchall()[0]
    return tuple(c for c, share in zip(MATCHING_COLUMNS, shares, strict=True) if share >= MIN_COVERAGE)


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
    for rule in rules_for(TRAINING_BLOCKS, columns):
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
    rules = rules_for(PREDICTION_BLOCKS, columns)
    if not rules:
        raise ModelError(
            "no blocking rule fits the available columns " + ", ".join(columns)
        )
    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name=UNIQUE_ID,
        comparisons=comparisons_for(columns),
        blocking_rules_to_generate_predictions=[block_on(*rule) for rule in rules],
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
    )


def train_model(
    engine: LinkageEngine, records_table: str, records: int, columns: tuple[str, ...], u_pairs: int, seed: int,
    version: int, merge_threshold: float | None = None,
) -> ModelFile:
    """Train a model on ``records_table``: prior, u by random sampling, m by EM."""
    if records < MIN_TRAINING_RECORDS:
        raise ModelError(
            f"only {records:,} contact records: at least {MIN_TRAINING_RECORDS:,} are needed to"
            " train a linkage model (until then records link on exact identifiers only)"
        )
    settings = build_settings(columns)
    table = engine.to_splink(records_table, "cdm_training_records")
    try:
        return _train_registered(engine, table, settings, records, columns, u_pairs, seed, version, merge_threshold)
    finally:
        # A failed training must not leave its input registered for the next attempt.
        engine.release()


def _train_registered(engine, table, settings, records, columns, u_pairs, seed, version, merge_threshold) -> ModelFile:
    import splink
    from splink import Linker, block_on

    linker = Linker(table, settings, log_level=logging.WARNING)
    prior_rules = rules_for(PRIOR_RULES, columns) or rules_for(PREDICTION_BLOCKS, columns)[:1]
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
    unobserved = settle_untrained_levels(linker, u_pairs)
    settings = linker.misc.save_model_to_json()
    weighed, untrained = weigh_on_confident_pairs(engine, table, settings, unobserved)
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
