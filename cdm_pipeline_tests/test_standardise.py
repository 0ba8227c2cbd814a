"""Value standardisers: exact results on the inputs real exports contain, and the DuckDB functions."""

from __future__ import annotations

import random

import duckdb
import phonenumbers
import pyarrow as pa
import pytest

from cdm_pipeline.lib.standardise import (
    ISSUE_CODES,
    Standardised,
    duckdb_functions,
    register_standardisers,
    standardise_country,
    standardise_email,
    standardise_name,
    standardise_phone,
    standardise_postcode,
)
from cdm_pipeline.lib.standardise.phones import is_valid_number

BLANKS = [None, "", "   ", "\t\n", "\u00a0", "\u200b", " \ufeff\u00a0 "]

# ---------------------------------------------------------------------------------------------
# The contract shared by all standardisers
# ---------------------------------------------------------------------------------------------

ALL = [
    lambda raw: standardise_email(raw),
    lambda raw: standardise_name(raw),
    lambda raw: standardise_country(raw),
    lambda raw: standardise_phone(raw, "GB"),
    lambda raw: standardise_phone(raw, None),
    lambda raw: standardise_postcode(raw, "GB"),
    lambda raw: standardise_postcode(raw, None),
]


@pytest.mark.parametrize("raw", BLANKS)
@pytest.mark.parametrize("standardise", ALL)
def test_blank_input_is_none_without_issue(standardise, raw):
    assert standardise(raw) == Standardised(None, None)


def test_issue_codes():
    assert ISSUE_CODES == (
        "invalid_email",
        "invalid_phone",
        "invalid_name",
        "invalid_postcode",
        "unknown_country",
    )


# ---------------------------------------------------------------------------------------------
# E-mail
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("jane.doe@example.com", "jane.doe@example.com"),
        (" Jane.Doe@Example.COM ", "jane.doe@example.com"),
        ("JANE@EXAMPLE.CO.UK", "jane@example.co.uk"),
        ("\u00a0jane@example.com\u200b", "jane@example.com"),
        ("mailto:jane@example.com", "jane@example.com"),
        ("MAILTO:Jane@Example.com?subject=Hello", "jane@example.com"),
        ("<jane@example.com>", "jane@example.com"),
        ("<mailto:jane@example.com>", "jane@example.com"),
        ('"jane@example.com"', "jane@example.com"),
        ("'jane@example.com'", "jane@example.com"),
        ("Jane Doe <Jane.Doe@Example.com>", "jane.doe@example.com"),
        ('"Doe, Jane" <jane@example.com>', "jane@example.com"),
        ("a.b+newsletter@sub.example.co.uk", "a.b+newsletter@sub.example.co.uk"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("first_last-1@my-domain.example.org", "first_last-1@my-domain.example.org"),
        ("ｊａｎｅ＠ｅｘａｍｐｌｅ．ｃｏｍ", "jane@example.com"),  # full-width, NFKC
        ("José@Bücher.de", "josé@bücher.de"),  # internationalised letters are fine
        ("user@xn--80ak6aa92e.xn--p1ai", "user@xn--80ak6aa92e.xn--p1ai"),
        ("Ünal@例え.テスト", "ünal@例え.テスト"),
        # Not our business here: typo domains and junk addresses (identity stage decides).
        ("jane@gmial.com", "jane@gmial.com"),
        ("test@test.com", "test@test.com"),
    ],
)
def test_email_standardised(raw, expected):
    assert standardise_email(raw) == Standardised(expected, None)


@pytest.mark.parametrize(
    "raw",
    [
        "jane.example.com",  # no @
        "jane@@example.com",
        "jane@doe@example.com",
        "@example.com",  # empty local part
        "jane@",
        "jane@localhost",  # no dot in the domain
        "jane@example.c",  # one-letter TLD
        "jane@example.123",
        "jane doe@example.com",  # space in the local part
        " Jane Doe@Example.com ",
        ".jane@example.com",
        "jane.@example.com",
        "jane..doe@example.com",
        "jane@-example.com",
        "jane@example-.com",
        "jane@exa_mple.com",
        "jane@example..com",
        "jane@example.com.",
        "jane@example.com; john@example.com",
        "x" * 65 + "@example.com",  # local part longer than 64
        "jane@" + "a" * 64 + ".com",  # label longer than 63
        "n/a",
        "none",
        "-",
        "jane@exam ple.com",
        "jane…@example.com",
    ],
)
def test_invalid_email_kept_as_it_came(raw):
    assert standardise_email(raw) == Standardised(raw, "invalid_email")


# ---------------------------------------------------------------------------------------------
# Phone
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+44 (0)20 7946 0018", "GB", "+442079460018"),
        ("+44 (0)20 7946 0018", None, "+442079460018"),
        ("020 7946 0018", "GB", "+442079460018"),
        ("02079460018", "GB", "+442079460018"),
        ("020-7946-0018", "gb", "+442079460018"),
        ("020 7946 0018", "UK", "+442079460018"),  # country spellings work as regions
        ("020 7946 0018", "United Kingdom", "+442079460018"),
        (" +44 20 7946 0018\u00a0", "US", "+442079460018"),  # a country code beats the region
        ("0044 7911 123456", "GB", "+447911123456"),
        ("0044 7911 123456", "US", "+447911123456"),  # 00 prefix where 011 is the norm
        ("0044 7911 123456", None, "+447911123456"),
        ("0044 (0)7911 123456", None, "+447911123456"),
        ("07911 123456", "GB", "+447911123456"),
        ("(415) 555-2671", "US", "+14155552671"),
        ("415.555.2671", "US", "+14155552671"),
        ("4155552671", "US", "+14155552671"),
        ("+1 415 555 2671", None, "+14155552671"),
        ("1-415-555-2671", "US", "+14155552671"),
        ("011 44 20 7946 0018", "US", "+442079460018"),  # US international prefix
        ("0011 44 20 7946 0018", "AU", "+442079460018"),  # Australian one: not read as 00
        ("0162/77638272", "DE", "+4916277638272"),
        ("+49 (0)162 77638272", None, "+4916277638272"),
        ("030 12345678", "DE", "+493012345678"),
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("+33 (0)6 12 34 56 78", None, "+33612345678"),
        ("0033 6 12 34 56 78", "FR", "+33612345678"),
        ("+39 (0)6 1234 5678", None, "+390612345678"),  # Italy keeps its leading 0
        ("085 123 4567", "IE", "+353851234567"),
        ("020 7946 0018 ext. 123", "GB", "+442079460018"),  # extensions are dropped
        ("020 7946 0018 x123", "GB", "+442079460018"),
        ("０２０ ７９４６ ００１８", "GB", "+442079460018"),  # full-width digits
        # Vanity numbers: libphonenumber reads the letters as keypad digits (1-800-356-9377).
        ("+1-800-FLOWERS", None, "+18003569377"),
        ("1-800-FLOWERS", "US", "+18003569377"),
    ],
)
def test_phone_standardised(raw, region, expected):
    assert standardise_phone(raw, region) == Standardised(expected, None)


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("0000000000", "GB"),
        ("0000000000", "US"),
        ("123456789", "GB"),
        ("1234", "DE"),
        ("n/a", "GB"),
        ("unknown", None),
        ("-", "US"),
        ("020 7946 0018", None),  # national number without a region to read it in
        ("020 7946 0018", "XX"),  # not a region: same
        ("020 7946 0018", "Narnia"),
        ("020 7946 00189999", "GB"),  # too long
        ("020 7946 0018 / 020 7946 0019", "GB"),  # two numbers in one field
        ("+44", None),
        ("+999 123 456 789", None),  # no such country code
        ("555-0100", "US"),  # seven digits: no area code
        # Ofcom's range for drama (07700 900xxx) is never a real subscriber: not valid.
        ("07700 900123", "GB"),
    ],
)
def test_invalid_phone_kept_as_it_came(raw, region):
    assert standardise_phone(raw, region) == Standardised(raw, "invalid_phone")


def _numbers_to_validate() -> list[phonenumbers.PhoneNumber]:
    """Every region's example numbers and digit-string variations around them."""
    rng = random.Random(20261001)
    kinds = phonenumbers.PhoneNumberType
    types = [getattr(kinds, name) for name in dir(kinds) if name.isupper()]
    numbers = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in types:
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            numbers.append(example)
            nsn = phonenumbers.national_significant_number(example)
            for _ in range(3):
                keep = rng.randrange(len(nsn) + 1)
                length = max(1, len(nsn) + rng.randrange(-2, 3))
                digits = (nsn[:keep] + "".join(rng.choice("0123456789") for _ in range(length)))[:length]
                try:
                    numbers.append(phonenumbers.parse(f"+{example.country_code}{digits}", None))
                except phonenumbers.NumberParseException:
                    pass
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        example = phonenumbers.example_number_for_non_geo_entity(code)
        if example is not None:
            numbers.append(example)
    return numbers


def test_fast_validation_agrees_with_phonenumbers():
    # phones.is_valid_number replaces phonenumbers.is_valid_number (a sixth of the cost); it
    # must give the same answer everywhere, including regions sharing a country code (+1, +44,
    # +7), Italian leading zeros and non-geographic numbers.
    numbers = _numbers_to_validate()
    expected = [phonenumbers.is_valid_number(n) for n in numbers]
    assert 2_000 < sum(expected) < len(numbers)  # both answers are well represented
    assert [is_valid_number(n) for n in numbers] == expected


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Non-ASCII names are kept, accents and all.
        ("José", "José"),
        ("Zoë", "Zoë"),
        ("Siobhán", "Siobhán"),
        ("Nguyễn", "Nguyễn"),
        ("Øyvind", "Øyvind"),
        ("Müller", "Müller"),
        ("李小龍", "李小龍"),
        ("Jose\u0301", "José"),  # decomposed accent composed (NFKC)
        # Case lost (all upper or all lower): repaired.
        ("ÅSA LARSSON", "Åsa Larsson"),
        ("john smith", "John Smith"),
        ("MÜLLER", "Müller"),
        ("o'brien", "O'Brien"),
        ("O’BRIEN", "O'Brien"),  # typographic apostrophe normalised
        ("d'angelo", "D'Angelo"),
        ("JONES-O'NEILL", "Jones-O'Neill"),
        ("mcdonald", "McDonald"),
        ("MCDONALD", "McDonald"),
        ("macdonald", "MacDonald"),
        ("MACIAS", "Macias"),  # not every Mac is Mac + name
        ("mack", "Mack"),
        ("GARCÍA-LÓPEZ", "García-López"),
        ("NGUYỄN VĂN AN", "Nguyễn Văn An"),
        ("ŞAHİN", "Şahin"),
        ("İLKNUR", "İlknur"),
        # Particles: lower case inside, capitalised as the first word of the value.
        ("JAN VAN DER BERG", "Jan van der Berg"),
        ("VAN DER BERG", "Van der Berg"),
        ("juan de la cruz", "Juan de la Cruz"),
        ("DE LA CRUZ", "De la Cruz"),
        ("LUDWIG VON MISES", "Ludwig von Mises"),
        ("LEONARDO DA VINCI", "Leonardo da Vinci"),
        # Mixed case is kept as written: people know their own names.
        ("van der Berg", "van der Berg"),
        ("McDONALD", "McDONALD"),
        ("deShawn", "deShawn"),
        ("LeBlanc", "LeBlanc"),
        ("DeAndre Jordan", "DeAndre Jordan"),
        # Titles and suffixes, when a full name is given in one field.
        ("Dr. John Smith Jr.", "John Smith"),
        ("DR JOHN SMITH JR", "John Smith"),
        ("Mr John Smith III", "John Smith"),
        ("mrs. jane smith", "Jane Smith"),
        ("Ms Jane Smith", "Jane Smith"),
        ("Mx Sam Taylor", "Sam Taylor"),
        ("Prof. Dr. Hans Müller", "Hans Müller"),
        ("Herr Hans Müller", "Hans Müller"),
        ("Frau Müller", "Müller"),
        ("Mme Claire Dubois", "Claire Dubois"),
        ("M. Jean Dupont", "Jean Dupont"),
        ("M. Dupont", "M. Dupont"),  # more likely an initial than Monsieur
        ("Sr. Juan Pérez", "Juan Pérez"),  # Señor as a prefix ...
        ("Juan Pérez Sr.", "Juan Pérez"),  # ... Senior as a suffix
        ("Sra Ana García", "Ana García"),
        ("Sir Ian McKellen", "Ian McKellen"),
        ("Dame Judi Dench", "Judi Dench"),
        ("Rev. Martin Luther King Jr.", "Martin Luther King"),
        ("John Smith, PhD", "John Smith"),
        ("Jane Doe M.D.", "Jane Doe"),
        ("John Smith Esq.", "John Smith"),
        ("Mr & Mrs John Smith", "John Smith"),
        ("Dr.John Smith", "John Smith"),
        ("Mr", "Mr"),  # a title alone is left for the identity stage to judge
        # Whitespace, punctuation, full-width characters.
        ("ｊｏｈｎ", "John"),
        ("  john   smith ", "John Smith"),
        ("\u00a0Zoë\u200b", "Zoë"),
        ("Smith,", "Smith"),
        ("'Smith'", "Smith"),
        ('"Jane"', "Jane"),
        ("john (jack) smith", "John (Jack) Smith"),
        ("J. SMITH", "J. Smith"),
    ],
)
def test_name_standardised(raw, expected):
    assert standardise_name(raw) == Standardised(expected, None)


@pytest.mark.parametrize(
    "raw", ["John3", "J0hn", "123", "jane@example.com", "@jane", "---", "?", "..", "Ｊｏｈｎ１"]
)
def test_invalid_name_kept_as_it_came(raw):
    assert standardise_name(raw) == Standardised(raw, "invalid_name")


# ---------------------------------------------------------------------------------------------
# Postcodes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("SW1A 1AA", "GB", "SW1A 1AA"),
        ("sw1a1aa", "GB", "SW1A 1AA"),
        ("SW1A   1AA", "GB", "SW1A 1AA"),
        (" s w 1 a 1 a a ", "GB", "SW1A 1AA"),
        ("ec1a 1bb", "UK", "EC1A 1BB"),  # country spelling resolved
        ("M11AE", "gb", "M1 1AE"),
        ("B338TH", "GB", "B33 8TH"),
        ("CR2 6XH", "GB", "CR2 6XH"),
        ("DN55 1PT", "GB", "DN55 1PT"),
        ("W1A 0AX", "GB", "W1A 0AX"),
        ("GIR 0AA", "GB", "GIR 0AA"),
        ("12345", "US", "12345"),
        ("2134", "US", "02134"),  # leading zero lost in a spreadsheet
        ("123456789", "US", "12345-6789"),
        ("12345-6789", "US", "12345-6789"),
        ("12345 6789", "US", "12345-6789"),
        ("10115", "DE", "10115"),
        ("D-10115", "DE", "10115"),
        ("75 001", "FR", "75001"),
        ("F-75001", "FR", "75001"),
        ("28001", "ES", "28001"),
        ("00100", "IT", "00100"),
        ("a65f4e2", "IE", "A65 F4E2"),
        ("D02 X285", "IE", "D02 X285"),
        ("d6w xy12", "IE", "D6W XY12"),
        ("1234ab", "NL", "1234 AB"),
        ("1234  ab", "NL", "1234 AB"),
        # Other or unknown countries: upper case and collapsed whitespace, no check.
        ("k1a  0b1", "CA", "K1A 0B1"),
        ("100-0001", "JP", "100-0001"),
        ("sw1a1aa", None, "SW1A1AA"),
        ("anything goes", "Narnia", "ANYTHING GOES"),
        ("１０１１５", "DE", "10115"),  # full-width digits
    ],
)
def test_postcode_standardised(raw, country, expected):
    assert standardise_postcode(raw, country) == Standardised(expected, None)


@pytest.mark.parametrize(
    ("raw", "country"),
    [
        ("SW1A 1A", "GB"),
        ("QA1 1AA", "GB"),  # Q never starts a UK postcode
        ("SW1A 1AC", "GB"),  # C is not used in the inward code
        ("12345", "GB"),
        ("1234", "DE"),  # only US zips get a lost zero back
        ("2134", "FR"),
        ("123456", "DE"),
        ("1234", "ES"),
        ("123", "US"),
        ("1234-5678", "US"),
        ("12345-", "US"),
        ("ABCDE", "US"),
        ("A65 F4E", "IE"),
        ("B65 F4E2", "IE"),  # B is not a routing-key letter
        ("0123 AB", "NL"),
        ("1234 SS", "NL"),  # never issued
        ("1234", "NL"),
    ],
)
def test_invalid_postcode_kept_as_it_came(raw, country):
    assert standardise_postcode(raw, country) == Standardised(raw, "invalid_postcode")


# ---------------------------------------------------------------------------------------------
# Countries
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("GB", "GB"), ("gb", "GB"), ("GBR", "GB"), ("United Kingdom", "GB"), ("UNITED KINGDOM", "GB"),
        ("United Kingdom of Great Britain and Northern Ireland", "GB"),
        ("UK", "GB"), ("U.K.", "GB"), ("Great Britain", "GB"), ("England", "GB"), ("scotland", "GB"),
        ("Wales", "GB"), ("Northern Ireland", "GB"), (" uk ", "GB"),
        ("US", "US"), ("USA", "US"), ("U.S.A.", "US"), ("U.S.", "US"), ("u.s.", "US"),
        ("United States", "US"), ("United States of America", "US"), ("America", "US"),
        ("DE", "DE"), ("DEU", "DE"), ("Germany", "DE"), ("Deutschland", "DE"),
        ("NL", "NL"), ("Holland", "NL"), ("The Netherlands", "NL"), ("Netherlands", "NL"),
        ("Nederland", "NL"),
        ("Spain", "ES"), ("España", "ES"), ("ESPAÑA", "ES"), ("Espana", "ES"),
        ("Ireland", "IE"), ("Éire", "IE"), ("Eire", "IE"),
        ("Italy", "IT"), ("Italia", "IT"), ("France", "FR"), ("FRA", "FR"),
        ("Switzerland", "CH"), ("Schweiz", "CH"), ("Suisse", "CH"),
        ("Austria", "AT"), ("Österreich", "AT"), ("Osterreich", "AT"),
        ("Россия", "RU"), ("Russia", "RU"), ("Russian Federation", "RU"),
        ("Côte d'Ivoire", "CI"), ("Cote d’Ivoire", "CI"), ("Ivory Coast", "CI"),
        ("South Korea", "KR"), ("Korea, Republic of", "KR"), ("Republic of Korea", "KR"), ("Korea", "KR"),
        ("North Korea", "KP"), ("Viet Nam", "VN"), ("Vietnam", "VN"), ("Iran", "IR"),
        ("Czech Republic", "CZ"), ("Czechia", "CZ"), ("Turkey", "TR"), ("Türkiye", "TR"),
        ("Bosnia & Herzegovina", "BA"), ("St. Lucia", "LC"), ("Guinea Bissau", "GW"),
        ("Taiwan", "TW"), ("Bolivia", "BO"), ("Kosovo", "XK"), ("🇫🇷", "FR"),
    ],
)
def test_country_standardised(raw, expected):
    assert standardise_country(raw) == Standardised(expected, None)


@pytest.mark.parametrize("raw", ["Narnia", "Europe", "Virgin Islands", "XX", "ZZZ", "n/a", "-", "123", "U"])
def test_unknown_country_kept_as_it_came(raw):
    assert standardise_country(raw) == Standardised(raw, "unknown_country")


# ---------------------------------------------------------------------------------------------
# Clean output stays clean
# ---------------------------------------------------------------------------------------------


def test_standardising_clean_values_changes_nothing():
    for raw in ["ÅSA LARSSON", "o'brien", "VAN DER BERG", "Dr. John Smith Jr.", "ŞAHİN", "ｊｏｈｎ"]:
        clean = standardise_name(raw).value
        assert standardise_name(clean) == Standardised(clean, None)
    for raw in ["Jane Doe <Jane@X.com>", "ｊａｎｅ＠ｅｘａｍｐｌｅ．ｃｏｍ"]:
        clean = standardise_email(raw).value
        assert standardise_email(clean) == Standardised(clean, None)
    for raw, region in [("(415) 555-2671", "US"), ("+39 (0)6 1234 5678", None)]:
        clean = standardise_phone(raw, region).value
        assert standardise_phone(clean, "GB") == Standardised(clean, None)
    for raw, country in [("sw1a1aa", "GB"), ("2134", "US"), ("a65f4e2", "IE"), ("1234ab", "NL")]:
        clean = standardise_postcode(raw, country).value
        assert standardise_postcode(clean, country) == Standardised(clean, None)


# ---------------------------------------------------------------------------------------------
# DuckDB functions
# ---------------------------------------------------------------------------------------------

MIXED = [
    None, "", "  ", " Jane.Doe@Example.COM ", "mailto:<jane@example.com>", "jane@example",
    "+44 (0)20 7946 0018", "020 7946 0018", "(415) 555-2671", "0000000000", "n/a",
    "ÅSA LARSSON", "o'brien", "Dr. John Smith Jr.", "José", "John3",
    "sw1a1aa", "2134", "1234ab", "a65f4e2", "D-10115",
    "UK", "Deutschland", "Россия", "Narnia", "gb", "US",
]
CONTEXTS = [None, "GB", "US", "DE", "IE", "NL", "UK", "xx"]


@pytest.fixture
def conn():
    connection = duckdb.connect()
    register_standardisers(connection)
    register_standardisers(connection)  # a second registration is harmless
    yield connection
    connection.close()


def _mixed_rows(rows: int) -> tuple[list[tuple[str | None, str | None]], pa.Table]:
    # Every (value, context) pair, repeated past several 2,048-row batches.
    pairs = [(raw, ctx) for raw in MIXED for ctx in CONTEXTS]
    data = [pairs[i % len(pairs)] for i in range(rows)]
    table = pa.table({"i": list(range(rows)), "raw": [r for r, _ in data], "ctx": [c for _, c in data]})
    return data, table


def _load(conn: duckdb.DuckDBPyConnection, table: pa.Table) -> None:
    conn.register("rows_in", table)
    conn.execute("CREATE TABLE t AS SELECT * FROM rows_in")
    conn.unregister("rows_in")


def _as_struct(result: Standardised) -> dict[str, str | None]:
    return {"value": result.value, "issue": result.issue}


@pytest.mark.parametrize(
    ("sql", "python"),
    [
        ("cdm_email(raw)", lambda raw, ctx: standardise_email(raw)),
        ("cdm_name(raw)", lambda raw, ctx: standardise_name(raw)),
        ("cdm_country(raw)", lambda raw, ctx: standardise_country(raw)),
        ("cdm_phone(raw, ctx)", standardise_phone),
        ("cdm_postcode(raw, ctx)", standardise_postcode),
    ],
)
def test_duckdb_functions_match_python(conn, sql, python):
    duckdb_functions.clear_caches()
    data, table = _mixed_rows(5_000)
    _load(conn, table)
    expected = [_as_struct(python(raw, ctx)) for raw, ctx in data]
    query = f"SELECT {sql} FROM t ORDER BY i"
    assert [row[0] for row in conn.execute(query).fetchall()] == expected
    # Again, now answered from the cache; and on another connection sharing it.
    assert [row[0] for row in conn.execute(query).fetchall()] == expected
    other = duckdb.connect()
    register_standardisers(other)
    _load(other, table)
    assert [row[0] for row in other.execute(query).fetchall()] == expected
    other.close()


def test_duckdb_functions_with_constants_and_nulls(conn):
    row = conn.execute(
        "SELECT cdm_email(NULL), cdm_phone('020 7946 0018', NULL), cdm_phone(NULL, 'GB'),"
        " cdm_postcode('sw1a1aa', NULL), cdm_country(' U.K. '), cdm_name('MCDONALD'),"
        " cdm_phone('020 7946 0018', 'GB').value, cdm_email('x@y').issue"
    ).fetchall()[0]
    assert row == (
        {"value": None, "issue": None},
        {"value": "020 7946 0018", "issue": "invalid_phone"},
        {"value": None, "issue": None},
        {"value": "SW1A1AA", "issue": None},
        {"value": "GB", "issue": None},
        {"value": "McDonald", "issue": None},
        "+442079460018",
        "invalid_email",
    )
    assert conn.execute("SELECT typeof(cdm_phone('1', 'GB'))").fetchall()[0][0] == (
        'STRUCT("value" VARCHAR, issue VARCHAR)'
    )


def test_duckdb_functions_work_once_per_distinct_value(conn, monkeypatch):
    calls: list[str | None] = []
    name_function, parameters = duckdb_functions._STANDARDISERS["cdm_country"]

    def counting(raw):
        calls.append(raw)
        return name_function(raw)

    monkeypatch.setitem(duckdb_functions._STANDARDISERS, "cdm_country", (counting, parameters))
    duckdb_functions.clear_caches()
    # One thread: with several, two batches may both miss the cache for a value at the same time.
    conn.execute("SET threads = 1")
    spellings = ["UK", "England", "Deutschland", "Narnia", None]
    conn.execute(
        "CREATE TABLE c AS SELECT (['UK', 'England', 'Deutschland', 'Narnia', NULL])[1 + (i % 5)] AS c"
        " FROM range(50000) r(i)"
    )
    counts = conn.execute(
        "SELECT r.value, r.issue, count(*) FROM (SELECT cdm_country(c) AS r FROM c)"
        " GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert counts == [
        ("DE", None, 10_000),
        ("GB", None, 20_000),
        ("Narnia", "unknown_country", 10_000),
        (None, None, 10_000),
    ]
    # 25 batches of 2,048 rows: each non-NULL spelling standardised once, then cached.
    assert sorted(c for c in calls if c is not None) == sorted(s for s in spellings if s is not None)


def test_bounded_caches_stay_correct_when_full(conn, monkeypatch):
    # Tiny caches: entries are evicted all the time, results must not change.
    for memo in duckdb_functions._MEMOS.values():
        monkeypatch.setattr(memo, "maxsize", 8)
    duckdb_functions.clear_caches()
    data, table = _mixed_rows(3_000)
    _load(conn, table)
    rows = conn.execute("SELECT cdm_phone(raw, ctx), cdm_name(raw) FROM t ORDER BY i").fetchall()
    assert rows == [
        (_as_struct(standardise_phone(raw, ctx)), _as_struct(standardise_name(raw))) for raw, ctx in data
    ]
    assert all(len(memo.data) <= 8 for memo in duckdb_functions._MEMOS.values())


def test_registering_again_is_harmless_even_with_a_pending_result(conn):
    conn.execute("SELECT * FROM range(10)").fetchone()  # a half-fetched result
    register_standardisers(conn)
    cursor = conn.cursor()
    register_standardisers(cursor)  # the functions of the parent connection are visible here
    assert cursor.execute("SELECT cdm_country('UK').value").fetchall() == [("GB",)]
    assert conn.execute("SELECT cdm_country('Éire').value").fetchall() == [("IE",)]
    cursor.close()
