"""Incremental nights: link only what changed since the last resolution, with a full re-link's result.

A full resolution scores every blocked pair and clusters every record. A night usually adds or
changes a few percent of records, so once a model and a full resolution exist a night does this:

1. **What changed** is derived from committed state only, never from a marker a crash could
   lose. Contact records whose staged rows hash as the stored graph (``identity.graph_nodes``)
   says are taken from it and from the stored Splink input (``identity.linkage_input``); the
   others are rebuilt from staging (records.py, deterministic.py). Every record is then compared
   with the stored graph through two fingerprints: the *link* fingerprint hashes what the model
   compares (its Splink row); the *row* fingerprint hashes the record as published and every
   identifier it holds, with what the guards made of it. Records new or changed are *changed*;
   records gone from staging (erased, retention-purged) are *removed*.
2. **Scoring**: only pairs with a record whose link fingerprint changed are scored, against each
   other (Splink's ``predict_within``) and against every other record (``predict_between``),
   under the same blocking rules, with term frequencies from the whole population; stored pairs
   near a threshold are scored again for those frequencies' drift (``mark_band``). They replace
   their stored versions in the pair set (``identity.scored_pairs``).
3. **Clustering**: the *scope* is every record of a cluster that holds a changed or removed record,
   an override's record or a re-scored pair that crossed a threshold, and of every cluster a
   scope record links to (deterministic links, pairs at the match or merge threshold), grown
   until no such link leaves it. The scope is
   clustered exactly as a full run clusters everyone (``clusters.build_clusters``): splits,
   merges on cluster evidence, the size cap and overrides included. Clusters outside the scope
   keep their records and label.
4. **Publication** rewrites the scope's rows only: stable ids (``customer_ids``, scoped to the
   scope's previous customers), the xref, golden records and provenance, match edges, the graph
   and the pair store, in the same single transaction as a full run.

A full re-link runs instead when there is no state yet, the model version, the identity settings
or the overrides file changed, ``identity.full_relink_every_days`` have passed since the last one,
or someone asks (``cdm identity relink``). Its result is the reference the incremental nights are
measured against (README, "Incremental nights").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass

import duckdb

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.catalog import GRAPH_NODES, LINKAGE_INPUT, PAIR_STORE, RESOLUTION_RUNS
from cdm_pipeline.lib.identity.deterministic import EDGES as DETERMINISTIC_EDGES
from cdm_pipeline.lib.identity.deterministic import IDENTIFIER_PRINTS, RECOMPUTE, SPLINK_INPUT
from cdm_pipeline.lib.identity.model import ModelFile
from cdm_pipeline.lib.identity.records import RECORD_COLUMNS, RECORDS, WORK
from cdm_pipeline.lib.warehouse import quote_ident, table_columns, table_exists

FULL, INCREMENTAL = "full", "incremental"
# Bumped when a change to the identity code makes yesterday's stored graph unfit to build on.
STATE_VERSION = 1

# Work tables of an incremental night.
FINGERPRINTS = f"{WORK}.fingerprints"  # record_id, link_fingerprint, row_fingerprint
CHANGED = f"{WORK}.changed"  # record_id, rescore: new or changed records of this run
REMOVED = f"{WORK}.removed"  # record_id, source_name, source_record_id: gone since last time
SCOPE = f"{WORK}.scope"  # record_id: the records clustered again tonight
PREVIOUS_NODES = f"{WORK}.previous_nodes"  # views of the stored graph and pairs
PREVIOUS_PAIRS = f"{WORK}.previous_pairs"
NEW_PAIRS = f"{WORK}.new_pairs"  # this night's scored pairs (changed records, and BAND again)
BAND = f"{WORK}.band"  # record_id_l, record_id_r, stored_probability: stored pairs scored again
# How near (in match-weight bits) a stored pair's score must be to a threshold to be re-scored.
RESCORE_BAND_BITS = 2.0
# Rounds of growing the scope along links that leave it (each round adds whole clusters).
MAX_SCOPE_ROUNDS = 10


@dataclass(frozen=True)
class Mode:
    """Which resolution runs, and why (the run summary and resolution_runs say it)."""

    name: str  # FULL | INCREMENTAL
    reason: str
    fingerprint: str  # of the settings the result depends on


@dataclass(frozen=True)
class ChangeCounts:
    changed: int  # new or changed records (any fingerprint)
    rescored: int  # of those, records whose pairs were scored again
    removed: int
    scope: int  # records clustered again


def settings_fingerprint(config: CdmConfig, model: ModelFile | None) -> str:
    """A hash of everything a resolution's clusters depend on besides the records themselves."""
    identity = config.identity
    overrides = identity.overrides_path
    settings = {
        "state_version": STATE_VERSION,
        "model_version": model.version if model else None,
        "model_merge_threshold": model.merge_threshold if model else None,
        # Engines' string functions differ slightly (Jaro-Winkler): a switch re-links everyone.
        "engine": config.engine.name,
        "identity": identity.model_dump(
            mode="json",
            include={
                "match_threshold", "max_records_per_identifier", "max_cluster_size", "blocklist",
                "same_ids", "survivorship",
            },
        ),
        "sources": [s.model_dump(mode="json") for s in config.sources],
        "overrides": hashlib.sha256(overrides.read_bytes()).hexdigest() if overrides.is_file() else None,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Previous:
    """What the last resolution left that tonight's mode depends on (read before Splink runs:
    while it does, the connection's default catalog is the work area)."""

    has_graph: bool
    model_version: int | None
    fingerprint: str | None
    last_full: dt.datetime | None


def previous_resolution(conn: duckdb.DuckDBPyConnection) -> Previous:
    """The last resolution's model and settings, and when the last full re-link ran."""
    stored = all(table_exists(conn, t) for t in (GRAPH_NODES, PAIR_STORE, LINKAGE_INPUT))
    if not (stored and table_exists(conn, RESOLUTION_RUNS)
            and "settings_fingerprint" in set(table_columns(conn, RESOLUTION_RUNS))):
        return Previous(False, None, None, None)
    last = conn.execute(
        f"SELECT model_version, settings_fingerprint FROM {RESOLUTION_RUNS} ORDER BY resolved_at DESC LIMIT 1"
    ).fetchone()
    (last_full,) = conn.execute(
        f"SELECT max(resolved_at) FROM {RESOLUTION_RUNS} WHERE mode = 'full'"
    ).fetchone()
    if last is None or last[1] is None:
        return Previous(False, None, None, None)
    return Previous(True, last[0], last[1], last_full)


def open_stored_graph(conn: duckdb.DuckDBPyConnection) -> None:
    """Views in the work area of the stored graph and pairs, for the steps that run inside
    Splink's context (where the warehouse's own names do not resolve)."""
    (database,) = conn.execute("SELECT current_database()").fetchone()
    for view, table in ((PREVIOUS_NODES, GRAPH_NODES), (PREVIOUS_PAIRS, PAIR_STORE)):
        conn.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {quote_ident(database)}.{table}")


def choose_mode(
    config: CdmConfig, model: ModelFile | None, previous: Previous, *, full: bool, trained: bool,
    now: dt.datetime,
) -> Mode:
    """Incremental when the stored graph fits tonight's settings and model; full otherwise."""
    fingerprint = settings_fingerprint(config, model)

    def full_because(reason: str) -> Mode:
        return Mode(FULL, reason, fingerprint)

    if full:
        return full_because("a full re-link was asked for")
    if not config.identity.incremental:
        return full_because("identity.incremental is off")
    if model is None:
        return full_because("no model yet: exact identifiers only")
    if trained:
        return full_because(f"model version {model.version} was trained this run")
    if not previous.has_graph:
        return full_because("no stored graph yet")
    if previous.model_version != model.version:
        return full_because(f"the model changed (version {previous.model_version} -> {model.version})")
    if previous.fingerprint != fingerprint:
        return full_because("the engine, identity settings, sources or the overrides file changed")
    every = config.identity.full_relink_every_days
    if every:
        if previous.last_full is None:
            return full_because("no full re-link recorded yet")
        if now - previous.last_full >= dt.timedelta(days=every):
            return full_because(f"the last full re-link is {every}+ days old (identity.full_relink_every_days)")
    return Mode(INCREMENTAL, "only records changed since the last resolution", fingerprint)


def compute_fingerprints(conn: duckdb.DuckDBPyConnection, *, reuse_graph: bool = False) -> None:
    """Both fingerprints of every record of this run's graph (``FINGERPRINTS``).

    ``reuse_graph``: records taken whole from the stored graph (not in ``RECOMPUTE``, not web
    identities) keep their stored fingerprints: their values and identifiers are the stored ones.
    """
    splink_columns = [
        c for c in conn.table(SPLINK_INPUT).columns
        # Frequencies only weigh values for term frequencies: a junk value gaining one more
        # record would otherwise mark every record sharing it as changed.
        if c not in ("record_id", "frequency_weight")
    ]
    record_columns = [c for c in RECORD_COLUMNS if c != "record_id"]
    # Filtered before the joins: the joins over every record cost 1.6 s at 1,000,000 people.
    records = RECORDS if not reuse_graph else (
        f"(SELECT * FROM {RECORDS} WHERE identifier_type <> 'record'"
        f" UNION ALL SELECT * FROM {RECORDS} SEMI JOIN {RECOMPUTE} USING (record_id))"
    )
    conn.execute(
        f"""CREATE OR REPLACE TABLE {FINGERPRINTS} AS
        SELECT r.record_id,
            CASE WHEN s.record_id IS NOT NULL THEN hash({', '.join(f's.{c}' for c in splink_columns)}) END
                AS link_fingerprint,
            xor(hash({', '.join(f'r.{c}' for c in record_columns)}), coalesce(p.identifier_fingerprint, 0))
                AS row_fingerprint,
            p.identifier_fingerprint
        FROM {records} r
        LEFT JOIN {SPLINK_INPUT} s USING (record_id)
        LEFT JOIN {IDENTIFIER_PRINTS} p USING (record_id)"""
    )
    if reuse_graph:
        conn.execute(
            f"""INSERT INTO {FINGERPRINTS}
            SELECT g.record_id, g.link_fingerprint, g.row_fingerprint, g.identifier_fingerprint
            FROM {GRAPH_NODES} g SEMI JOIN {RECORDS} r USING (record_id)
            WHERE g.record_id NOT IN (SELECT record_id FROM {FINGERPRINTS})"""
        )


def find_changes(conn: duckdb.DuckDBPyConnection) -> tuple[int, int, int]:
    """``CHANGED`` and ``REMOVED`` against the stored graph; returns (changed, rescored, removed)."""
    conn.execute(
        f"""CREATE OR REPLACE TABLE {CHANGED} AS
        SELECT f.record_id,
            f.link_fingerprint IS NOT NULL
                AND f.link_fingerprint IS DISTINCT FROM g.link_fingerprint AS rescore
        FROM {FINGERPRINTS} f LEFT JOIN {PREVIOUS_NODES} g USING (record_id)
        WHERE g.record_id IS NULL OR f.row_fingerprint IS DISTINCT FROM g.row_fingerprint
            OR f.link_fingerprint IS DISTINCT FROM g.link_fingerprint"""
    )
    conn.execute(
        f"""CREATE OR REPLACE TABLE {REMOVED} AS
        SELECT g.record_id, g.source_name, g.source_record_id, g.cluster_id FROM {PREVIOUS_NODES} g
        ANTI JOIN {RECORDS} r USING (record_id)"""
    )
    changed, rescored = conn.execute(f"SELECT count(*), count(*) FILTER (rescore) FROM {CHANGED}").fetchone()
    (removed,) = conn.execute(f"SELECT count(*) FROM {REMOVED}").fetchone()
    return int(changed), int(rescored), int(removed)


def rescored_input(kind: str) -> str:
    """The Splink input rows of the records to score again (``changed``) or of all others (``rest``)."""
    condition = "IN" if kind == "changed" else "NOT IN"
    return f"SELECT * FROM {SPLINK_INPUT} WHERE record_id {condition} (SELECT record_id FROM {CHANGED} WHERE rescore)"


def kept_pairs() -> str:
    """Stored pairs that stand tonight: neither record changed its comparison values or left, and
    the pair is not scored again for its term frequencies (``BAND``)."""
    return f"""SELECT p.* FROM {PREVIOUS_PAIRS} p
        ANTI JOIN {BAND} b USING (record_id_l, record_id_r)
        WHERE p.record_id_l NOT IN (SELECT record_id FROM {CHANGED} WHERE rescore)
          AND p.record_id_r NOT IN (SELECT record_id FROM {CHANGED} WHERE rescore)
          AND p.record_id_l NOT IN (SELECT record_id FROM {REMOVED})
          AND p.record_id_r NOT IN (SELECT record_id FROM {REMOVED})"""


def mark_band(conn: duckdb.DuckDBPyConnection, threshold: float, merge_threshold: float | None) -> int:
    """``BAND``: stored pairs whose score lies near a decision, to be scored again tonight.

    Term frequencies come from the whole population, so every night's new records move the
    weight of pairs that agree on a frequency-adjusted value a little (at most ~0.1 bit a night
    on the demo; the weekly full re-link resets it). A pair only matters when that move carries
    it across the match or the merge threshold, so pairs within ``RESCORE_BAND_BITS`` of either
    are scored again: 1.5% of the 8.4 M stored pairs at 1,000,000 people (about 1 s).
    """
    weights = [_bits(threshold)] + ([_bits(merge_threshold)] if merge_threshold is not None else [])
    near = " OR ".join(f"abs(p.match_weight - {w!r}) <= {RESCORE_BAND_BITS!r}" for w in weights)
    conn.execute(
        f"""CREATE OR REPLACE TABLE {BAND} AS
        SELECT p.record_id_l, p.record_id_r, p.match_probability AS stored_probability
        FROM {PREVIOUS_PAIRS} p
        WHERE ({near})
          AND p.record_id_l NOT IN (SELECT record_id FROM {CHANGED} WHERE rescore)
          AND p.record_id_r NOT IN (SELECT record_id FROM {CHANGED} WHERE rescore)
          AND p.record_id_l NOT IN (SELECT record_id FROM {REMOVED})
          AND p.record_id_r NOT IN (SELECT record_id FROM {REMOVED})"""
    )
    (count,) = conn.execute(f"SELECT count(*) FROM {BAND}").fetchone()
    return int(count)


def _bits(probability: float) -> float:
    return math.log2(probability / (1 - probability))


def crossed_band(threshold: float, merge_threshold: float | None) -> str:
    """Records of the re-scored pairs whose score crossed a threshold: their clusters change."""
    limits = [threshold] + ([merge_threshold] if merge_threshold is not None else [])
    crossed = " OR ".join(
        f"(b.stored_probability >= {t!r}) <> (coalesce(n.match_probability, 0) >= {t!r})" for t in limits
    )
    return f"""SELECT unnest([b.record_id_l, b.record_id_r]) AS record_id FROM {BAND} b
        LEFT JOIN {NEW_PAIRS} n USING (record_id_l, record_id_r) WHERE {crossed}"""


def build_scope(
    conn: duckdb.DuckDBPyConnection, overrides: str, threshold: float, merge_threshold: float | None
) -> int:
    """``SCOPE``: the records whose clusters tonight's changes can reach; returns its size.

    Seeds are the changed records, the records left in the clusters of removed ones, the records
    of re-scored pairs that crossed a threshold, and every override's records (so each override
    line is checked again). Whole clusters join the scope,
    then every cluster a scope record links to (deterministic links, stored or new pairs at the
    lower of the match and merge thresholds, must-links), until none is left outside.
    """
    weakest = min(threshold, merge_threshold) if merge_threshold is not None else threshold
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _scope_links AS
        SELECT record_id_l, record_id_r FROM {DETERMINISTIC_EDGES}
        UNION ALL SELECT record_id_l, record_id_r FROM ({kept_pairs()}) WHERE match_probability >= $weakest
        UNION ALL SELECT record_id_l, record_id_r FROM {NEW_PAIRS} WHERE match_probability >= $weakest
        UNION ALL SELECT record_id_l, record_id_r FROM {overrides} WHERE record_id_l IS NOT NULL
            AND record_id_r IS NOT NULL""",
        {"weakest": weakest},
    )
    # Where each current record was last time (new records: nowhere, a cluster of their own).
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _scope_was AS
        SELECT r.record_id, coalesce(g.cluster_id, -r.record_id) AS was
        FROM {RECORDS} r LEFT JOIN {PREVIOUS_NODES} g USING (record_id)"""
    )
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _scope_clusters AS
        SELECT DISTINCT w.was FROM _scope_was w WHERE w.record_id IN (SELECT record_id FROM {CHANGED})
        UNION SELECT w.was FROM _scope_was w WHERE w.record_id IN ({crossed_band(threshold, merge_threshold)})
        UNION SELECT cluster_id FROM {REMOVED}
        UNION SELECT w.was FROM _scope_was w WHERE w.record_id IN (
            SELECT record_id_l FROM {overrides} UNION SELECT record_id_r FROM {overrides})"""
    )
    for _ in range(MAX_SCOPE_ROUNDS):
        (added,) = conn.execute(
            """INSERT INTO _scope_clusters
            WITH inside AS (SELECT record_id FROM _scope_was SEMI JOIN _scope_clusters USING (was))
            SELECT DISTINCT w.was FROM _scope_links l
            JOIN _scope_was w ON w.record_id = l.record_id_r
            WHERE l.record_id_l IN (SELECT record_id FROM inside)
              AND w.was NOT IN (SELECT was FROM _scope_clusters)
            UNION
            SELECT DISTINCT w.was FROM _scope_links l
            JOIN _scope_was w ON w.record_id = l.record_id_l
            WHERE l.record_id_r IN (SELECT record_id FROM inside)
              AND w.was NOT IN (SELECT was FROM _scope_clusters)"""
        ).fetchone()
        if not added:
            break
    else:
        # Still growing: a long chain of links. Clustering everyone on the stored and new pairs
        # gives the full re-link's clusters all the same.
        conn.execute("INSERT INTO _scope_clusters SELECT DISTINCT was FROM _scope_was")
    conn.execute(
        f"CREATE OR REPLACE TABLE {SCOPE} AS SELECT record_id FROM _scope_was SEMI JOIN _scope_clusters USING (was)"
    )
    for temp in ("_scope_links", "_scope_was", "_scope_clusters"):
        conn.execute(f"DROP TABLE {temp}")
    (size,) = conn.execute(f"SELECT count(*) FROM {SCOPE}").fetchone()
    return int(size)
