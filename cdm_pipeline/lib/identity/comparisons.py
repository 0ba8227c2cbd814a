"""The model's comparisons: how two contact records are compared, field by field.

Built only for the matching columns the records carry (model.py chooses them). Names, email,
phone, birth date and employer are one comparison each; street, postcode and city are one
address comparison, because one shared home is one piece of evidence, not three.
"""

from __future__ import annotations

from typing import Any

# Compared as one comparison (see _address).
ADDRESS = ("address_line1", "postcode", "city")

_USER_L, _USER_R = "split_part(email_l, '@', 1)", "split_part(email_r, '@', 1)"
_DOMAIN_L, _DOMAIN_R = "split_part(email_l, '@', 2)", "split_part(email_r, '@', 2)"


def _custom(sql_condition: str, label_for_charts: str | None = None):
    """A level written in DuckDB's SQL: Splink translates it (sqlglot) for another engine."""
    import splink.comparison_level_library as cll

    return cll.CustomLevel(sql_condition, label_for_charts, base_dialect_str="duckdb")


def comparisons_for(columns: tuple[str, ...]) -> list[Any]:
    """Splink comparisons for ``columns`` (matching columns), in their order."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

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
            levels.append(_custom(
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
                _custom(
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
                _custom(
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
                _custom(
                    "(company_key_l IS NULL OR (company_key_r IS NULL AND email_organisation_r IS NULL))"
                    " AND (company_key_r IS NULL OR (company_key_l IS NULL AND email_organisation_l IS NULL))",
                ).configure(is_null_level=True),
                cll.ExactMatchLevel("company_key", term_frequency_adjustments=True),
                # Either may be the longer: "Kestrel Software" <-> kestrel.io, and "Fenwick & Co"
                # (key "fenwick": legal forms dropped) <-> fenwickandco.co.uk.
                _custom(
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
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    street, postcode, city = ("address_line1" in columns), ("postcode" in columns), ("city" in columns)
    both = " OR ".join(f"({c}_l IS NOT NULL AND {c}_r IS NOT NULL)" for c in columns)
    # Typed twice, an address gains typos: a street within a few edits, a postcode one digit off
    # or two digits swapped. Splink's own levels, so each engine gets its own string functions.
    def similar_street():
        return cll.JaroWinklerLevel("address_line1", 0.9)

    def near_postcode():
        return cll.DamerauLevenshteinLevel("postcode", 1)

    def same(column: str):
        return cll.ExactMatchLevel(column)

    levels = [_custom(f"NOT ({both})").configure(is_null_level=True)]
    if street and postcode:
        levels += [
            _custom(
                "address_line1_l = address_line1_r AND postcode_l = postcode_r",
                label_for_charts="Same street address and postcode",
            ),
            cll.Or(
                cll.And(similar_street(), same("postcode")), cll.And(same("address_line1"), near_postcode())
            ).configure(label_for_charts="Street address or postcode written differently"),
        ]
    if street and city:
        levels.append(_custom(
            "address_line1_l = address_line1_r AND city_l = city_r",
            label_for_charts="Same street address and city, postcode differs or missing",
        ))
    if street and (postcode or city):
        near = ([near_postcode()] if postcode else []) + ([same("city")] if city else [])
        levels.append(cll.And(similar_street(), cll.Or(*near)).configure(
            label_for_charts="Street address written differently, same area",
        ))
    if postcode:
        levels.append(_custom("postcode_l = postcode_r", label_for_charts="Same postcode, another street"))
    if street:
        levels.append(_custom(
            "address_line1_l = address_line1_r", label_for_charts="Same street address, another area",
        ))
    if city:
        # A big city says little: term-frequency adjusted.
        levels.append(cll.ExactMatchLevel("city", term_frequency_adjustments=True))
    levels.append(cll.ElseLevel())
    return cl.CustomComparison(output_column_name="address", comparison_levels=levels)
