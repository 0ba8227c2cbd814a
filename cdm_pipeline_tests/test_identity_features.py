"""Matching features: name keys read from the email, and the employer from company or address."""

import duckdb
import pytest

from cdm_pipeline.lib.identity.features import EMPLOYER_KEYS, LEGAL_FORMS, NAME_KEYS


def _keys(first, last, email, company=None):
    conn = duckdb.connect()
    row = conn.execute(
        f"SELECT {NAME_KEYS}, {EMPLOYER_KEYS} FROM (SELECT $first::VARCHAR AS first_name,"
        " $last::VARCHAR AS last_name, $email::VARCHAR AS email, $company::VARCHAR AS company)",
        {"first": first, "last": last, "email": email, "company": company, "legal_forms": LEGAL_FORMS},
    ).fetchall()[0]
    conn.close()
    return row


@pytest.mark.parametrize(
    "first, last, email, expected",
    [
        ("Sophia", None, "s.sutton123@x.com", ("sophia", "sutton")),  # initial + surname
        ("Sophia", None, "ssutton123@x.com", ("sophia", "sutton")),  # initial glued on
        ("Matthew", None, "matthewbrown6788@yahoo.com", ("matthew", "brown")),  # first + last glued
        ("Isabella", None, "suttonisabella@x.com", ("isabella", "sutton")),  # last + first glued
        ("Walter", None, "harrisonwalter74@gmail.com", ("walter", "harrison")),
        ("Luis", None, "luis-martin028@hotmail.es", ("luis", "martin")),
        (None, "Roberts", "isabella.roberts9505@hotmail.com", ("isabella", "roberts")),
        ("Jörg", None, "jschroder409@lyon.fr", ("jorg", "schroder")),  # accents dropped
        ("Łukasz", None, "lukasz.tran917@outlook.com", ("ukasz", "tran")),  # the name's own spelling skipped
        ("Karl-Heinz", None, "karl-heinz_h862@gmx.de", ("karlheinz", None)),  # parts of the name are no surname
        ("Sophia", None, "sophia3987@gmail.com", ("sophia", None)),  # nothing else in the address
        ("Jacob", "O'Brien", "x@y.com", ("jacob", "obrien")),  # a surname on record wins
        (None, None, "a.b@c.com", (None, None)),  # no name to start from
        ("Ann", None, None, ("ann", None)),
        # A nickname beside the formal name in the address: the surname is the last run.
        ("Becky", None, "rebecca.green70@x.com", ("becky", "green")),
        ("Bill", None, "william_j_turner@x.com", ("bill", "turner")),
        (None, "Green", "rebecca.green70@x.com", ("rebecca", "green")),
    ],
)
def test_name_keys_are_accent_free_and_read_the_missing_name_from_the_email(first, last, email, expected):
    assert _keys(first, last, email)[:2] == expected


@pytest.mark.parametrize(
    "company, email, expected",
    [
        ("Kestrel Software Ltd", "olivia.smith642@kestrelsoftware.io", ("kestrelsoftware", "kestrelsoftware")),
        ("Smith, Jones & Co", "a@smithjones.co.uk", ("smithjones", "smithjones")),
        ("Johnson & Johnson", "j.b@its.jnj.com", ("johnsonjohnson", "jnj")),
        ("Müller GmbH", "x@mueller.de", ("muller", "mueller")),
        (None, "freddie@hotmail.co.uk", (None, None)),  # a mailbox provider is no employer
        ("Orange SA", "claire.martin@orange.fr", ("orange", None)),  # nor its broadband customers'
        ("Orange SA", "c.martin@orange.com", ("orange", "orange")),  # ...but its staff
        ("Weber & Partner", "max.weber@web.de", ("weberpartner", None)),
        (None, "ana@gmial.com", (None, "gmial")),  # a mistyped provider stays: it names nobody's company
        ("Ltd", None, (None, None)),  # a legal form alone names nobody
    ],
)
def test_employer_keys_drop_legal_forms_and_take_the_organisation_from_the_domain(company, email, expected):
    assert _keys("A", "B", email, company)[2:] == expected
