"""Weights for comparison levels training could not estimate.

Splink fills a level that random sampling or EM never observed with placeholder weights; weight
0 instead silently turns evidence off (on a retailer's data "different phone" stopped counting
against a match). Here a level no random pair reached gets u = 1 / ``u_pairs``, and a level EM
never saw is weighed on the pairs the rest of the model is confident about.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from cdm_pipeline.lib.identity.blocking import MATCHING_COLUMNS, PREDICTION_BLOCKS, TRAINING_BLOCKS, rules_for


def level_name(comparison: str, label: str) -> str:
    return f"{comparison}: {label}"


def settle_untrained_levels(linker, u_pairs: int) -> dict[str, dict[int, str]]:
    """Replace Splink's placeholder weights; return the levels whose m EM never observed.

    A level no random pair reached has u below what the sample can resolve: 1 / ``u_pairs``. A
    level EM never saw has no measured m: it gets m = u for now, a weight of 0 (Splink would
    otherwise fill in defaults interpolated from the level's position: in the 100,000-person
    demo the rare "same user name" level came out at -3.9 bits that way, evidence against a
    match), and ``weigh_on_confident_pairs`` then measures it. Returned: comparison output
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


def weigh_on_confident_pairs(
    engine, table, settings: dict[str, Any], unobserved: dict[str, dict[int, str]]
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
    candidates = [r for r in dict.fromkeys(rules_for(TRAINING_BLOCKS + PREDICTION_BLOCKS, present))
                  if all(part in MATCHING_COLUMNS for part in r)]
    pending = dict(unobserved)
    # Rules in order, each scored once for every comparison still waiting that it does not
    # read; a comparison whose values a rule's confident pairs lack waits for the next rule.
    for rule in candidates[:MAX_WEIGHING_RULES]:
        names = [name for name in pending if not set(rule) & _reads(comparisons[name])]
        if not names:
            continue
        counts = _confident_level_counts(engine, Linker, table, settings, block_on(*rule), names)
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
    sql = " ".join(level.get("sql_condition", "") for level in comparison["comparison_levels"])
    return {c for c in MATCHING_COLUMNS if re.search(rf'\b"?{c}"?_[lr]\b', sql)}


def _present(settings: dict[str, Any], column: str) -> bool:
    return any(column in _reads(c) for c in settings["comparisons"])


def _confident_level_counts(engine, Linker, table, settings, rule, names) -> dict[str, dict[int, int]]:
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
            rows = engine.rows(predictions, f"gamma_{name}, count(*)", group_by=f"gamma_{name}")
            counts[name] = {value_to_index[v]: n for v, n in rows if v in value_to_index}
        return counts
    finally:
        predictions.drop_table_from_database_and_remove_from_cache()
