"""The columns the model matches on and the blocking rules over them.

Read by training (model.py), by the weighing of levels training could not estimate
(untrained_levels.py) and by prediction (matching.py); it imports none of them.
"""

from __future__ import annotations

import re

# Names are compared through their keys (features.py): accent-free, and read from the email
# address when a record lacks them.
MATCHING_COLUMNS = (
    "first_name_key", "last_name_key", "email", "phone", "birth_date_text", "address_line1", "postcode",
    "city", "company_key",
)
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
# Keys derived from matching columns for blocking (features.py), and what they read.
DERIVED_KEYS = {"name_pair": ("first_name_key", "last_name_key")}


def rule_columns(rule: tuple[str, ...]) -> set[str]:
    """The matching columns a blocking rule reads (a part may be an expression such as ``left(x, 1)``)."""
    derived = {c for part in rule for key, reads in DERIVED_KEYS.items() if part == key for c in reads}
    return derived | {c for part in rule for c in MATCHING_COLUMNS if re.search(rf"\b{c}\b", part)}


def rules_for(candidates: tuple[tuple[str, ...], ...], columns: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The candidate rules that read only ``columns``."""
    return [rule for rule in candidates if rule_columns(rule) <= set(columns)]
