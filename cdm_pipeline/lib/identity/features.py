"""Matching features derived for the Splink input: accent-free name keys, read from the email
address when a record lacks the name; and the employer, from the company or a work address.

Sign-up forms often ask for a first name only, yet most people's addresses spell their names
(``s.sutton@``, ``matthewbrown77@``, ``sutton.sophia@``). A record without a surname gets the
surname its address most likely holds: the letters left after removing the first name or its
initial. A wrong guess only fails to match; a right one lets "Sophia, s.sutton@work" meet
"Sophia Sutton" in the CRM, through blocking and the name comparisons alike.
"""

from __future__ import annotations

from cdm_pipeline.lib.warehouse import quote_literal


def _slug(column: str) -> str:
    """Lower-case ASCII letters of a name: "O'Brien" -> "obrien", "Schäfer" -> "schafer"."""
    return f"nullif(regexp_replace(lower(strip_accents({column})), '[^a-z]', '', 'g'), '')"


# Letter runs of the address's local part: "s.sutton123" -> ["s", "sutton"].
_TOKENS = "list_filter(regexp_split_to_array(lower(split_part(email, '@', 1)), '[^a-z]+'), lambda t: t <> '')"


def _guess(known: str, position: int) -> str:
    """The other name in the local part, given the slug of the name the record does have.

    With several runs left, a surname is the last (``position`` -1) and a first name the first
    (1): "Becky" with ``rebecca.green70@`` is a nickname beside the formal name, and her surname
    is "green", not "rebecca".
    """
    # Separate runs that are not the known name, part of it ("karl" of "karlheinz"), its
    # initial, or a spelling of it the slug lost ("lukasz" for "Łukasz" -> "ukasz").
    others = (
        f"list_filter({_TOKENS}, lambda t: length(t) >= 3 AND NOT contains({known}, t)"
        f" AND jaro_winkler_similarity(t, {known}) < 0.9)"
    )
    run = f"({_TOKENS})[1]"
    return f"""CASE
        WHEN email IS NULL OR {known} IS NULL THEN NULL
        -- "sophia.sutton", "sutton.sophia", "s.sutton"
        WHEN len({_TOKENS}) > 1 THEN ({others})[{position}]
        WHEN len({_TOKENS}) = 0 OR contains({known}, {run}) THEN NULL
        -- one run: "suttonsophia", "sophiasutton", "ssutton"
        WHEN ends_with({run}, {known}) AND length({run}) >= length({known}) + 3
            THEN left({run}, length({run}) - length({known}))
        WHEN starts_with({run}, {known}) AND length({run}) >= length({known}) + 3
            THEN substr({run}, length({known}) + 1)
        WHEN starts_with({run}, left({known}, 1)) AND length({run}) >= 4
            AND jaro_winkler_similarity({run}, {known}) < 0.9
            THEN substr({run}, 2)
    END"""


FIRST_SLUG = _slug("first_name")
LAST_SLUG = _slug("last_name")
# Keys compared and blocked on instead of the names as written.
NAME_KEYS = f"""
    coalesce({FIRST_SLUG}, {_guess(LAST_SLUG, 1)}) AS first_name_key,
    coalesce({LAST_SLUG}, {_guess(FIRST_SLUG, -1)}) AS last_name_key
"""
# Both names in either order: blocking on it meets a record whose given name and surname were
# swapped. Null unless the record has both (one name alone would block with every namesake).
NAME_PAIR = """
    CASE WHEN first_name_key IS NOT NULL AND last_name_key IS NOT NULL
        THEN least(first_name_key, last_name_key) || ' ' || greatest(first_name_key, last_name_key)
    END AS name_pair
"""
# The address's user name is only the person's name ("james.wilson", "jwilson", "wilson.j"):
# at another provider that is a namesake as often as the same person, unlike "jwilson1984".
# Read over the name keys above (a query selecting them), so a guessed surname counts.
_USER_LETTERS = "regexp_replace(lower(split_part(email, '@', 1)), '[^a-z]', '', 'g')"
_USER = "nullif(lower(split_part(email, '@', 1)), '')"
_USER_IS_NAME = f"""(NOT regexp_matches(split_part(email, '@', 1), '[0-9]')
        AND {_USER_LETTERS} IN (
            first_name_key || last_name_key, last_name_key || first_name_key,
            left(first_name_key, 1) || last_name_key, last_name_key || left(first_name_key, 1),
            first_name_key || left(last_name_key, 1), first_name_key, last_name_key))"""
# email_user: the local part; email_user_distinct: the same when it holds more than the name.
EMAIL_USER_KEYS = f"""
    {_USER} AS email_user,
    CASE WHEN NOT coalesce({_USER_IS_NAME}, false) THEN {_USER} END AS email_user_distinct
"""

# The employer: the company without legal-form words, and the organisation an address belongs
# to (its last label before the public suffix: "its.jnj.com" -> "jnj", "x.co.uk" -> "x"). A
# subscriber using a work address meets the CRM record that names the company.
_LEGAL_FORMS = (
    "ltd", "limited", "plc", "llc", "inc", "corp", "co", "company", "group", "gmbh", "ag", "kg",
    "sa", "sas", "sarl", "sl", "srl", "spa", "bv", "nv", "ab", "as", "oy", "and",
)
# Consumer mailboxes name no employer: "x@orange.fr" is an Orange broadband customer, not an
# employee of Orange SA, and "web" (web.de) is no abbreviation of Weber & Partner. Brands that
# are only mailbox providers, by their organisation label...
_MAILBOX_BRANDS = (
    "gmail", "googlemail", "hotmail", "outlook", "live", "msn", "yahoo", "ymail", "rocketmail",
    "aol", "aim", "icloud", "me", "mac", "gmx", "protonmail", "proton", "pm", "tutanota", "zoho",
    "fastmail", "yandex", "mail", "inbox", "email", "hushmail", "qq", "163", "126", "naver",
    "hanmail", "rediffmail", "seznam", "libero", "virgilio", "mailbox", "posteo",
)
# ... and mailbox domains of internet providers whose brand is also an employer.
_MAILBOX_DOMAINS = (
    "orange.fr", "wanadoo.fr", "free.fr", "sfr.fr", "neuf.fr", "laposte.net", "bbox.fr",
    "web.de", "t-online.de", "freenet.de", "arcor.de", "vodafone.de", "btinternet.com",
    "btopenworld.com", "sky.com", "virginmedia.com", "ntlworld.com", "talktalk.net",
    "tiscali.co.uk", "blueyonder.co.uk", "plus.net", "eircom.net", "comcast.net", "verizon.net",
    "att.net", "sbcglobal.net", "bellsouth.net", "cox.net", "charter.net", "earthlink.net",
    "telefonica.net", "movistar.es", "terra.es", "tiscali.it", "alice.it", "tin.it",
    "telenet.be", "skynet.be", "ziggo.nl", "kpnmail.nl", "planet.nl", "bluewin.ch",
    "shaw.ca", "rogers.com", "videotron.ca", "sympatico.ca", "bigpond.com", "optusnet.com.au",
    "wp.pl", "o2.pl", "interia.pl", "onet.pl", "uol.com.br", "bol.com.br",
)
_DOMAIN = "lower(split_part(email, '@', 2))"
_DOMAIN_LABELS = f"string_split({_DOMAIN}, '.')"
_SECOND_LEVEL = "('co', 'com', 'org', 'net', 'ac', 'gov', 'edu', 'ltd', 'plc')"
_LABEL = f"""CASE WHEN len({_DOMAIN_LABELS}) >= 3 AND {_DOMAIN_LABELS}[-2] IN {_SECOND_LEVEL}
    THEN {_DOMAIN_LABELS}[-3] ELSE {_DOMAIN_LABELS}[-2] END"""


def _sql_list(values: tuple[str, ...]) -> str:
    """This module's constant word lists as a SQL list for ``IN`` (the callers bind only ``$legal_forms``)."""
    return "(" + ", ".join(quote_literal(v) for v in values) + ")"


_ORGANISATION = f"""CASE WHEN {_DOMAIN} IN {_sql_list(_MAILBOX_DOMAINS)}
    OR {_LABEL} IN {_sql_list(_MAILBOX_BRANDS)} THEN NULL ELSE {_LABEL} END"""
LEGAL_FORMS = list(_LEGAL_FORMS)
EMPLOYER_KEYS = f"""
    nullif(array_to_string(list_filter(
        regexp_split_to_array(lower(strip_accents(company)), '[^a-z0-9]+'),
        lambda w: w <> '' AND NOT list_contains($legal_forms, w)), ''), '') AS company_key,
    nullif(regexp_replace({_ORGANISATION}, '[^a-z0-9]', '', 'g'), '') AS email_organisation
"""
