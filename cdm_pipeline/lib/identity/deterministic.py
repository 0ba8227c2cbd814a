"""Deterministic edges of the identity graph: records that share an exact identifier.

Identifiers are the normalised email, the E.164 phone, ids one source declares equal to another
source's record ids (``identity.same_ids``: an ESP's copy of the CRM id, web user id = CRM
contact id), and web logins (a browser seen with a user id). Two records sharing a value are the
same person, with two guards the commercial CDPs also apply, because one bad value can otherwise
merge thousands of people into one customer:

* a blocklist of junk values (``test@test.com``, ``0000000000``; extendable in the config);
* a cap on how many distinct records one value may join: beyond it the value is ignored for
  linking (here and in the Splink input) and reported in ``ignored_identifiers`` (the
  published copy, ``identity.ignored_identifiers``, holds hashes only).

Each shared value links its records in a star to the group's lowest record id, which connects
them with n - 1 edges instead of n² / 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.catalog import GRAPH_NODES, LINKAGE_INPUT, staging_table
from cdm_pipeline.lib.identity.features import EMAIL_USER_KEYS, EMPLOYER_KEYS, LEGAL_FORMS, NAME_KEYS, NAME_PAIR
from cdm_pipeline.lib.identity.records import CANDIDATES, RECORDS, WORK
from cdm_pipeline.lib.staging.links import CLIENT_PREFIX, RECORD_LINKS, SAME_IDS, USER_PREFIX, register_record_links

IDENTIFIERS = f"{WORK}.identifiers"
IGNORED = f"{WORK}.ignored_identifiers"
EDGES = f"{WORK}.deterministic_edges"
SPLINK_INPUT = f"{WORK}.splink_input"
# What the model learns from: the Splink input without guarded records (below).
TRAINING_INPUT = f"{WORK}.splink_training"
IDENTIFIER_PRINTS = f"{WORK}.identifier_prints"  # record_id, identifier_fingerprint
# An incremental night's records whose Splink row is computed again, not taken from the stored one.
RECOMPUTE = f"{WORK}.recompute"

# Addresses people type when a form insists on one. Local parts are junk at any domain; domains
# are reserved for examples or are placeholders.
JUNK_EMAIL_LOCAL_PARTS = (
    "test", "testing", "noemail", "no-email", "no_email", "none", "noreply", "no-reply",
    "donotreply", "do-not-reply", "unknown", "null", "na", "n/a", "nobody", "invalid", "example",
    "email", "x", "xx", "xxx", "asdf", "abc",
)
JUNK_EMAIL_DOMAINS = (
    "example.com", "example.org", "example.net", "test.com", "test.test", "invalid", "localhost",
    "noemail.com", "none.com", "nomail.com", "email.invalid",
)
# National numbers (the last 9 digits) that are placeholders: one repeated digit or a run.
JUNK_PHONE_SUFFIXES = ("123456789", "234567890", "012345678", "987654321", "098765432")

_JUNK_EMAIL = """(
    list_contains($junk_local, split_part(value, '@', 1))
    OR list_contains($junk_domains, split_part(value, '@', 2))
    OR list_contains($blocked_emails, value)
)"""
# ``digits``: the value's digits, computed once per distinct value.
_JUNK_PHONE = """(
    length(list_distinct(string_split(right(digits, 9), ''))) <= 1
    OR list_contains($junk_suffixes, right(digits, 9))
    OR list_contains($blocked_phones, digits)
)"""


@dataclass(frozen=True)
class DeterministicSummary:
    identifiers: int
    edges: int
    blocklisted_values: int
    blocklisted_records: int
    over_cap_values: int
    over_cap_records: int
    edges_by_rule: dict[str, int]


def _identifier_selects() -> tuple[list[str], dict[str, object]]:
    """One SELECT per identifier family: (record_id, kind, rule, value).

    Same-id links come from the connection's ``RECORD_LINKS`` (``register_record_links``).
    """
    contacts, web = staging_table("contacts"), staging_table("web_events")
    selects = [
        # Every address and number a record has held, not only its latest: the ESP still has
        # the address the CRM record carried before the person changed it.
        f"""SELECT DISTINCT r.record_id, 'email' AS kind, 'email' AS rule, c.email AS value
        FROM {contacts} c
        JOIN {RECORDS} r USING (source_name, source_record_id)
        WHERE c.email IS NOT NULL AND NOT list_contains(c.quality_flags, 'invalid_email')""",
        f"""SELECT DISTINCT r.record_id, 'phone', 'phone', c.phone
        FROM {contacts} c
        JOIN {RECORDS} r USING (source_name, source_record_id)
        WHERE c.phone IS NOT NULL AND NOT list_contains(c.quality_flags, 'invalid_phone')""",
        # Every valid address typed on a browser, not only the latest one.
        f"""SELECT DISTINCT r.record_id, 'email', 'email', w.email
        FROM {web} w
        JOIN {RECORDS} r ON r.source_name = w.source_name
            AND r.source_record_id = $client_prefix || w.client_id
        WHERE w.email IS NOT NULL AND NOT list_contains(w.quality_flags, 'invalid_email')""",
        # A browser seen with a login, and the login itself: the web source's own identity.
        f"""SELECT DISTINCT r.record_id, 'login:' || w.source_name, 'web_login', w.user_id
        FROM {web} w
        JOIN {RECORDS} r ON r.source_name = w.source_name
            AND r.source_record_id = $client_prefix || w.client_id
        WHERE w.user_id IS NOT NULL""",
        f"SELECT record_id, 'login:' || source_name, 'web_login', substr(source_record_id, $user_from)"
        f" FROM {RECORDS} WHERE identifier_type = 'user_id'",
        # Ids one source holds of another's records (identity.same_ids): a contact's linked_id,
        # a login's user id; and the records of the sources they name, under the same key.
        f"""SELECT r.record_id, 'id:' || l.target_source, 'same_id', r.linked_id
        FROM {RECORDS} r JOIN {RECORD_LINKS} l ON l.source_name = r.source_name
        WHERE l.declared_by = $declared_by AND l.id_column = 'linked_id' AND r.linked_id IS NOT NULL""",
        f"""SELECT r.record_id, 'id:' || l.target_source, 'same_id', substr(r.source_record_id, $user_from)
        FROM {RECORDS} r JOIN {RECORD_LINKS} l ON l.source_name = r.source_name
        WHERE l.declared_by = $declared_by AND l.id_column = 'user_id' AND r.identifier_type = 'user_id'""",
        f"""SELECT record_id, 'id:' || source_name, 'same_id', source_record_id FROM {RECORDS}
        WHERE identifier_type = 'record'
            AND source_name IN (SELECT target_source FROM {RECORD_LINKS} WHERE declared_by = $declared_by)""",
    ]
    params: dict[str, object] = {
        "client_prefix": CLIENT_PREFIX,
        "user_from": len(USER_PREFIX) + 1,
        "declared_by": SAME_IDS,
    }
    return selects, params


def build_deterministic_edges(
    conn: duckdb.DuckDBPyConnection, config: CdmConfig, *, reuse_graph: bool = False
) -> DeterministicSummary:
    """Write identifiers, guarded edges, the ignored values and the Splink input table.

    ``reuse_graph`` (an incremental night, incremental.py): the Splink input is computed only for
    records rebuilt from staging (``CANDIDATES``) and records whose identifiers' guard state
    changed (a value went over the cap, or back); the others' rows come from the stored input.
    The training input is then a view (nights that reuse the graph never train).
    """
    identity = config.identity
    register_record_links(conn, config)
    selects, params = _identifier_selects()
    conn.execute(
        f"CREATE OR REPLACE TABLE {IDENTIFIERS} AS " + "\nUNION\n".join(selects), params
    )
    blocked_emails = [v.strip().lower() for v in identity.blocklist.get("email", [])]
    blocked_phones = [
        "".join(ch for ch in v if ch.isdigit()) for v in identity.blocklist.get("phone", [])
    ]
    conn.execute(
        f"""
        CREATE OR REPLACE TABLE {IGNORED} AS
        WITH groups AS (
            -- count(*): identifiers are distinct per record, kind and value (each kind has one
            -- rule), and counting distinct ids took 0.75 s more at 1,000,000 people.
            SELECT kind, value, count(*) AS records,
                CASE WHEN kind = 'phone' THEN regexp_replace(value, '[^0-9]', '', 'g') END AS digits
            FROM {IDENTIFIERS} GROUP BY kind, value
        ), judged AS (
            SELECT kind, value, records,
                (kind = 'email' AND {_JUNK_EMAIL}) OR (kind = 'phone' AND {_JUNK_PHONE}) AS junk
            FROM groups
        )
        SELECT kind, value, records, CASE WHEN junk THEN 'blocklist' ELSE 'over_cap' END AS reason
        FROM judged WHERE junk OR records > $cap
        """,
        {
            "junk_local": list(JUNK_EMAIL_LOCAL_PARTS),
            "junk_domains": list(JUNK_EMAIL_DOMAINS),
            "blocked_emails": blocked_emails,
            "junk_suffixes": list(JUNK_PHONE_SUFFIXES),
            "blocked_phones": blocked_phones,
            "cap": identity.max_records_per_identifier,
        },
    )
    conn.execute(
        f"""
        CREATE OR REPLACE TABLE {EDGES} AS
        WITH usable AS (
            SELECT i.* FROM {IDENTIFIERS} i ANTI JOIN {IGNORED} g USING (kind, value)
        ), hubs AS (
            SELECT *, min(record_id) OVER (PARTITION BY kind, value) AS hub FROM usable
        )
        SELECT hub AS record_id_l, record_id AS record_id_r, min(rule) AS rule
        FROM hubs WHERE record_id <> hub
        GROUP BY ALL
        """
    )
    # Splink sees contact records only, without the values the guards set aside, and only the
    # columns it compares (a full-width copy cost 1.5 s more to write at 1,000,000 people).
    # ``guarded``: the record carried a value the guards set aside. Such records come from bulk
    # entry (a shared inbox, a form's placeholder), so their other values are no sample of the
    # customers: 10,000 of them skewed the model, the name frequencies and matched real people
    # on names alone (matching.py). They are still matched, but never learnt from.
    # Per record, a hash of every identifier it holds and what the guards made of it: when it
    # changes, so may the record's deterministic edges, its guarded flag and its Splink row.
    conn.execute(
        f"""CREATE OR REPLACE TABLE {IDENTIFIER_PRINTS} AS
        SELECT i.record_id, bit_xor(hash(i.kind, i.rule, i.value, g.records, g.reason)) AS identifier_fingerprint
        FROM {IDENTIFIERS} i LEFT JOIN {IGNORED} g USING (kind, value) GROUP BY i.record_id"""
    )
    only = ""
    if reuse_graph:
        conn.execute(
            f"""CREATE OR REPLACE TABLE {RECOMPUTE} AS
            SELECT r.record_id FROM {RECORDS} r
            LEFT JOIN {IDENTIFIER_PRINTS} p USING (record_id)
            LEFT JOIN {GRAPH_NODES} g USING (record_id)
            WHERE r.identifier_type = 'record' AND (
                g.record_id IS NULL
                OR (r.source_name, r.source_record_id) IN (SELECT (source_name, source_record_id) FROM {CANDIDATES})
                OR p.identifier_fingerprint IS DISTINCT FROM g.identifier_fingerprint)"""
        )
        only = f" AND r.record_id IN (SELECT record_id FROM {RECOMPUTE})"
    conn.execute(
        f"""
        CREATE OR REPLACE TABLE {SPLINK_INPUT} AS
        WITH guarded AS (
            SELECT r.record_id, r.source_name, r.source_record_id, r.first_name, r.last_name,
                CASE WHEN ge.value IS NULL THEN r.email END AS email,
                CASE WHEN gp.value IS NULL THEN r.phone END AS phone,
                r.birth_date_text, r.address_line1, r.postcode, r.city, r.company,
                s.record_id IS NOT NULL AS guarded,
                -- What the record counts for in value frequencies: the records sharing a set-aside
                -- value count as one between them.
                coalesce(1 / s.sharing, 1)::DOUBLE AS frequency_weight
            FROM {RECORDS} r
            LEFT JOIN {IGNORED} ge ON ge.kind = 'email' AND ge.value = r.email
            LEFT JOIN {IGNORED} gp ON gp.kind = 'phone' AND gp.value = r.phone
            LEFT JOIN (
                SELECT i.record_id, max(g.records) AS sharing
                FROM {IDENTIFIERS} i JOIN {IGNORED} g USING (kind, value) GROUP BY ALL
            ) s ON s.record_id = r.record_id
            WHERE r.identifier_type = 'record'{only}
        ), keyed AS (
            SELECT *, {NAME_KEYS}, {EMPLOYER_KEYS} FROM guarded
        )
        SELECT *, {EMAIL_USER_KEYS}, {NAME_PAIR} FROM keyed
        """,
        {"legal_forms": LEGAL_FORMS},
    )
    if reuse_graph:
        conn.execute(
            f"""INSERT INTO {SPLINK_INPUT} BY NAME SELECT * FROM {LINKAGE_INPUT}
            WHERE record_id IN (SELECT record_id FROM {RECORDS} WHERE identifier_type = 'record')
              AND record_id NOT IN (SELECT record_id FROM {RECOMPUTE})"""
        )
    # A view when nothing trains (it only feeds the column coverage figures then).
    kind = "VIEW" if reuse_graph else "TABLE"
    conn.execute(f"CREATE OR REPLACE {kind} {TRAINING_INPUT} AS SELECT * FROM {SPLINK_INPUT} WHERE NOT guarded")
    (identifiers,) = conn.execute(f"SELECT count(*) FROM {IDENTIFIERS}").fetchall()[0]
    by_rule = dict(conn.execute(f"SELECT rule, count(*) FROM {EDGES} GROUP BY ALL ORDER BY 1").fetchall())
    ignored = dict(
        ((reason, what), n)
        for reason, values, records in conn.execute(
            f"SELECT reason, count(*), coalesce(sum(records), 0) FROM {IGNORED} GROUP BY ALL"
        ).fetchall()
        for what, n in (("values", values), ("records", records))
    )
    return DeterministicSummary(
        identifiers=identifiers,
        edges=sum(by_rule.values()),
        blocklisted_values=ignored.get(("blocklist", "values"), 0),
        blocklisted_records=ignored.get(("blocklist", "records"), 0),
        over_cap_values=ignored.get(("over_cap", "values"), 0),
        over_cap_records=ignored.get(("over_cap", "records"), 0),
        edges_by_rule=by_rule,
    )
