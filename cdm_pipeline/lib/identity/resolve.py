"""The identity stage from staging to published tables, as one function the asset calls.

Work happens in the ``identity_work`` schema (rebuilt every run); the published ``identity.*``
tables change in a single transaction at the end, so a run that fails anywhere leaves
yesterday's customers intact, and a re-run on unchanged data gives every record the same id.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from dataclasses import dataclass, field

import duckdb

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.catalog import (
    AUDIT_LOG,
    GOLDEN,
    GRAPH_NODES,
    ID_ASSIGNMENTS,
    ID_CHANGES,
    IDENTITY,
    IGNORED_IDENTIFIERS,
    LINKAGE_INPUT,
    MATCH_EDGES,
    OVERRIDES_APPLIED,
    OVERSIZE_CLUSTERS,
    PAIR_STORE,
    PROVENANCE,
    RESOLUTION_RUNS,
    XREF,
    ensure,
)
from cdm_pipeline.lib.governance.audit_log import current_actor, ensure_audit_log
from cdm_pipeline.lib.identity.clusters import (
    ALL_EDGES,
    CLUSTERS,
    OVERRIDES,
    OVERSIZE,
    ClusterSummary,
    build_clusters,
    cluster_sizes,
    load_overrides,
)
from cdm_pipeline.lib.identity.customer_ids import IdChanges, assign_stable_customer_ids, ensure_customer_id_tables
from cdm_pipeline.lib.identity.deterministic import (
    IGNORED,
    RECOMPUTE,
    SPLINK_INPUT,
    TRAINING_INPUT,
    DeterministicSummary,
    build_deterministic_edges,
)
from cdm_pipeline.lib.identity.engine import LinkageEngine, linkage_engine
from cdm_pipeline.lib.identity.evaluation import PairwiseScores, TruthFileError, evaluate_clusters
from cdm_pipeline.lib.identity.incremental import (
    BAND,
    CHANGED,
    FINGERPRINTS,
    INCREMENTAL,
    NEW_PAIRS,
    PREVIOUS_NODES,
    REMOVED,
    SCOPE,
    ChangeCounts,
    Mode,
    build_scope,
    choose_mode,
    compute_fingerprints,
    find_changes,
    kept_pairs,
    mark_band,
    open_stored_graph,
    previous_resolution,
    rescored_input,
)
from cdm_pipeline.lib.identity.matching import MATCH_EDGES as SCORED_PAIRS
from cdm_pipeline.lib.identity.matching import MatchSummary, predict_match_edges
from cdm_pipeline.lib.identity.model import (
    MIN_TRAINING_RECORDS,
    ModelFile,
    NothingToLearn,
    available_columns,
    load_model,
    next_version,
    save_model,
    train_model,
)
from cdm_pipeline.lib.identity.records import RECORDS, STAGED, WORK, RecordCounts, build_identity_records
from cdm_pipeline.lib.identity.run_ids import IS_ERASURE_RESOLUTION_SQL
from cdm_pipeline.lib.identity.survivorship import survive_attributes
from cdm_pipeline.lib.warehouse import quote_ident, table_columns, table_exists

log = logging.getLogger(__name__)


# A signal that moves more than this from the previous resolution is a warning.
SIGNAL_SHIFT = 0.05


@dataclass(frozen=True)
class ResolutionSignals:
    """How well the run probably went, from the model's own probabilities: no labels needed.

    Over the pairs the model scored (blocked pairs with match probability >= SCORED_FLOOR):
    expected precision is the mean probability of the pairs that ended in one cluster, expected
    recall the share of all scored probability mass that ended inside clusters. Pairs the
    blocking never compared are outside both, so recall is an upper bound.
    """

    expected_precision: float | None
    expected_recall: float | None
    singleton_share: float  # contact records alone in their cluster
    untrained_levels: tuple[str, ...]
    warnings: tuple[str, ...]


def _signals(
    conn: duckdb.DuckDBPyConnection, model: ModelFile | None, pairs: str, clusters: str
) -> ResolutionSignals:
    precision, recall = conn.execute(
        f"""SELECT avg(e.match_probability) FILTER (WHERE a.cluster_id = b.cluster_id),
            sum(e.match_probability) FILTER (WHERE a.cluster_id = b.cluster_id) / nullif(sum(e.match_probability), 0)
        FROM {pairs} e
        JOIN {clusters} a ON a.record_id = e.record_id_l JOIN {clusters} b ON b.record_id = e.record_id_r"""
    ).fetchone()
    (singletons,) = conn.execute(
        f"""SELECT coalesce(avg((n = 1)::INTEGER), 0) FROM (
            SELECT count(*) OVER (PARTITION BY c.cluster_id) AS n, r.identifier_type
            FROM {clusters} c JOIN {RECORDS} r USING (record_id)) WHERE identifier_type = 'record'"""
    ).fetchone()
    untrained = model.untrained_levels if model else ()
    warnings = []
    if table_exists(conn, RESOLUTION_RUNS):
        columns = set(table_columns(conn, RESOLUTION_RUNS))
        figures = ("expected_precision", "expected_recall", "singleton_share", "untrained_levels")
        wanted = [c for c in figures if c in columns]
        previous = conn.execute(
            f"SELECT {', '.join(map(quote_ident, wanted))} FROM {RESOLUTION_RUNS}"
            f" WHERE NOT {IS_ERASURE_RESOLUTION_SQL}"
            " ORDER BY resolved_at DESC LIMIT 1"
        ).fetchone() if wanted else None
        if previous is not None:
            before = dict(zip(wanted, previous, strict=True))
            now = {"expected_precision": precision, "expected_recall": recall, "singleton_share": singletons}
            for key, value in now.items():
                old = before.get(key)
                if value is not None and old is not None and abs(value - old) > SIGNAL_SHIFT:
                    warnings.append(f"{key.replace('_', ' ')} moved from {old:.3f} to {value:.3f}")
            new_levels = sorted(set(untrained) - set(before.get("untrained_levels") or untrained))
            if new_levels:
                warnings.append(f"{len(new_levels)} newly untrained level(s): {'; '.join(new_levels)}")
    return ResolutionSignals(
        expected_precision=precision, expected_recall=recall, singleton_share=float(singletons),
        untrained_levels=tuple(untrained), warnings=tuple(warnings),
    )


@dataclass
class IdentitySummary:
    run_id: str
    records: RecordCounts
    deterministic: DeterministicSummary
    matching: MatchSummary
    clusters: ClusterSummary
    ids: IdChanges
    model_version: int
    model_trained: bool
    model_columns: tuple[str, ...]
    columns_not_in_model: tuple[str, ...]
    golden_customers: int
    signals: ResolutionSignals | None = None
    # Against identity.truth_path, when configured and readable.
    scores: PairwiseScores | None = None
    truth_problem: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    mode: Mode | None = None
    engine: str = "duckdb"  # where Splink ran
    changes: ChangeCounts | None = None  # an incremental night's


# The whole clustering of an incremental night: the scope's new clusters and everyone else's.
CLUSTERS_ALL = f"{WORK}.clusters_all"


def _prepare_inputs(conn: duckdb.DuckDBPyConnection, config: CdmConfig) -> tuple[RecordCounts, DeterministicSummary]:
    records = build_identity_records(conn)
    deterministic = build_deterministic_edges(conn, config)
    return records, deterministic


def _train(conn: duckdb.DuckDBPyConnection, engine: LinkageEngine, config: CdmConfig) -> ModelFile:
    columns = available_columns(conn)
    # Records that carried a junk or over-cap identifier are matched but not learnt from.
    (count,) = conn.execute(f"SELECT count(*) FROM {TRAINING_INPUT}").fetchall()[0]
    path = config.identity.model_path
    model = train_model(
        engine, TRAINING_INPUT, int(count), columns,
        u_pairs=config.identity.u_sample_pairs, seed=config.identity.seed, version=next_version(path),
        merge_threshold=config.identity.merge_threshold,
    )
    save_model(path, model)
    return model


def train_identity_model(conn: duckdb.DuckDBPyConnection, config: CdmConfig, spark_session=None) -> ModelFile:
    """Train a new model version on the staged contact records (``cdm identity train``)."""
    _prepare_inputs(conn, config)
    with linkage_engine(conn, config.engine, spark_session) as engine:
        return _train(conn, engine, config)


def resolve_identities(
    conn: duckdb.DuckDBPyConnection, config: CdmConfig, run_id: str, *, retrain: bool = False, full: bool = False,
    spark_session=None,
) -> IdentitySummary:
    """Resolve every staged record to a stable customer and publish the identity tables.

    Incremental (incremental.py) once a model and a stored graph exist, unless ``full`` (``cdm
    identity relink``) or the settings ask for a full re-link; ``summary.mode`` says which ran.
    """
    identity = config.identity
    seconds: dict[str, float] = {}
    started = time.monotonic()
    train = retrain or not identity.model_path.exists()
    model = None if train else load_model(identity.model_path)
    previous = previous_resolution(conn)
    now = dt.datetime.now(dt.timezone.utc)
    mode = choose_mode(config, model, previous, full=full, trained=train, now=now)
    reuse = mode.name == INCREMENTAL
    records = build_identity_records(conn, reuse_graph=reuse)
    deterministic = build_deterministic_edges(conn, config, reuse_graph=reuse)
    compute_fingerprints(conn, reuse_graph=reuse)
    if reuse:
        open_stored_graph(conn)
    seconds["inputs"] = time.monotonic() - started

    mark = time.monotonic()
    changes = None
    trained = False
    with linkage_engine(conn, config.engine, spark_session) as engine:
        if train:
            (learnable,) = conn.execute(f"SELECT count(*) FROM {TRAINING_INPUT}").fetchall()[0]
            if learnable >= MIN_TRAINING_RECORDS:  # fewer: exact identifiers only, no model
                try:
                    model, trained = _train(conn, engine, config), True
                except NothingToLearn as exc:
                    log.warning("identity model not trained: %s", exc)
            mode = choose_mode(config, model, previous, full=full, trained=trained, now=now)
        seconds["train"] = time.monotonic() - mark if trained else 0.0
        log.info("identity resolution: %s (%s)", mode.name, mode.reason)
        merge_threshold = model.merge_threshold if model else None
        mark = time.monotonic()
        if mode.name == INCREMENTAL:
            changed, rescored, removed = find_changes(conn)
            mark_band(conn, identity.match_threshold, merge_threshold)
            matching = predict_match_edges(
                conn, engine, model, identity.match_threshold, identity.max_comparisons,
                changed=(rescored_input("changed"), rescored_input("rest")), out=NEW_PAIRS, rescore=BAND,
            )
            seconds["predict"] = time.monotonic() - mark
            mark = time.monotonic()
            load_overrides(conn, identity.overrides_path)
            scope = build_scope(conn, OVERRIDES, identity.match_threshold, merge_threshold)
            changes = ChangeCounts(changed=changed, rescored=rescored, removed=removed, scope=scope)
            # The pairs the scope is clustered on: the stored ones that stand, and tonight's.
            conn.execute(
                f"""CREATE OR REPLACE TABLE {SCORED_PAIRS} AS
                SELECT * FROM ({kept_pairs()} UNION ALL BY NAME SELECT * FROM {NEW_PAIRS})
                WHERE record_id_l IN (SELECT record_id FROM {SCOPE})
                  AND record_id_r IN (SELECT record_id FROM {SCOPE})"""
            )
            clusters = build_clusters(
                conn, engine, identity.match_threshold, identity.max_cluster_size, identity.overrides_path,
                merge_threshold, scope=SCOPE,
            )
            conn.execute(
                f"""CREATE OR REPLACE TABLE {CLUSTERS_ALL} AS
                SELECT record_id, cluster_id FROM {CLUSTERS}
                UNION ALL
                SELECT g.record_id, g.cluster_id FROM {PREVIOUS_NODES} g
                SEMI JOIN {RECORDS} r USING (record_id) ANTI JOIN {SCOPE} s USING (record_id)"""
            )
            # The night's figures are of the whole population, like a full run's.
            clusters = dataclasses.replace(
                clusters, **cluster_sizes(conn, CLUSTERS_ALL, identity.max_cluster_size)
            )
            all_pairs = f"({kept_pairs()} UNION ALL BY NAME SELECT * FROM {NEW_PAIRS})"
            all_clusters = CLUSTERS_ALL
        else:
            matching = predict_match_edges(
                conn, engine, model, identity.match_threshold, identity.max_comparisons
            )
            seconds["predict"] = time.monotonic() - mark
            mark = time.monotonic()
            clusters = build_clusters(
                conn, engine, identity.match_threshold, identity.max_cluster_size, identity.overrides_path,
                merge_threshold,
            )
            all_pairs, all_clusters = SCORED_PAIRS, CLUSTERS
    seconds["cluster"] = time.monotonic() - mark

    signals = _signals(conn, model, all_pairs, all_clusters)
    for warning in signals.warnings:
        log.warning("identity signal: %s", warning)
    mark = time.monotonic()
    resolved_at = dt.datetime.now(dt.timezone.utc)
    conn.execute("BEGIN TRANSACTION")
    try:
        ids, golden = _publish(conn, config, run_id, resolved_at, incremental=mode.name == INCREMENTAL)
        _save_graph(conn, incremental=mode.name == INCREMENTAL)
        summary = IdentitySummary(
            run_id=run_id,
            records=records,
            deterministic=deterministic,
            matching=matching,
            clusters=clusters,
            ids=ids,
            model_version=model.version if model else 0,
            model_trained=trained,
            model_columns=model.columns if model else (),
            columns_not_in_model=tuple(
                c for c in available_columns(conn) if model is None or c not in model.columns
            ),
            golden_customers=golden,
            signals=signals,
            seconds=seconds,
            mode=mode,
            changes=changes,
            engine=config.engine.name,
        )
        if identity.truth_path is not None:
            try:
                summary.scores = evaluate_clusters(conn, identity.truth_path)
            except TruthFileError as exc:
                summary.truth_problem = str(exc)
        _record_run(conn, summary, resolved_at)
        seconds["commit"] = time.monotonic()
        conn.execute("COMMIT")
        seconds["commit"] = time.monotonic() - seconds["commit"]
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    seconds["publish"] = time.monotonic() - mark
    seconds["total"] = time.monotonic() - started
    return summary


def _save_graph(conn: duckdb.DuckDBPyConnection, *, incremental: bool) -> None:
    """Store the graph, the linkage input and the scored pairs the next night starts from."""
    nodes = f"""SELECT r.*, s.staged_fingerprint, f.identifier_fingerprint, f.link_fingerprint,
            f.row_fingerprint, c.cluster_id
        FROM {RECORDS} r JOIN {FINGERPRINTS} f USING (record_id) JOIN {CLUSTERS} c USING (record_id)
        LEFT JOIN {STAGED} s ON r.identifier_type = 'record'
            AND s.source_name = r.source_name AND s.source_record_id = r.source_record_id"""
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(IDENTITY)}")
    if not incremental:
        conn.execute(f"CREATE OR REPLACE TABLE {GRAPH_NODES} AS {nodes}")
        conn.execute(f"CREATE OR REPLACE TABLE {LINKAGE_INPUT} AS SELECT * FROM {SPLINK_INPUT}")
        conn.execute(f"CREATE OR REPLACE TABLE {PAIR_STORE} AS SELECT * FROM {SCORED_PAIRS}")
        return
    # Changed records are written again; the rest of the scope only moves cluster.
    changed = f"SELECT record_id FROM {CHANGED} UNION ALL SELECT record_id FROM {REMOVED}"
    conn.execute(f"DELETE FROM {GRAPH_NODES} WHERE record_id IN ({changed})")
    conn.execute(f"INSERT INTO {GRAPH_NODES} BY NAME {nodes} WHERE r.record_id IN (SELECT record_id FROM {CHANGED})")
    conn.execute(
        f"""UPDATE {GRAPH_NODES} g SET cluster_id = c.cluster_id FROM {CLUSTERS} c
        WHERE c.record_id = g.record_id AND g.cluster_id <> c.cluster_id"""
    )
    # Rebuilt from staging but unchanged (a re-delivered file): remember its rows' new hash.
    conn.execute(
        f"""UPDATE {GRAPH_NODES} g SET staged_fingerprint = s.staged_fingerprint FROM {STAGED} s
        WHERE g.identifier_type = 'record' AND s.source_name = g.source_name
          AND s.source_record_id = g.source_record_id
          AND g.staged_fingerprint IS DISTINCT FROM s.staged_fingerprint"""
    )
    redone = f"SELECT record_id FROM {RECOMPUTE} UNION ALL SELECT record_id FROM {REMOVED}"
    conn.execute(f"DELETE FROM {LINKAGE_INPUT} WHERE record_id IN ({redone})")
    conn.execute(
        f"INSERT INTO {LINKAGE_INPUT} BY NAME SELECT * FROM {SPLINK_INPUT}"
        f" WHERE record_id IN (SELECT record_id FROM {RECOMPUTE})"
    )
    gone = f"SELECT record_id FROM {CHANGED} WHERE rescore UNION ALL SELECT record_id FROM {REMOVED}"
    conn.execute(
        f"""DELETE FROM {PAIR_STORE} WHERE record_id_l IN ({gone}) OR record_id_r IN ({gone})
            OR (record_id_l, record_id_r) IN (SELECT (record_id_l, record_id_r) FROM {BAND})"""
    )
    conn.execute(f"INSERT INTO {PAIR_STORE} BY NAME SELECT * FROM {NEW_PAIRS}")


def _publish(
    conn: duckdb.DuckDBPyConnection, config: CdmConfig, run_id: str, resolved_at: dt.datetime, *,
    incremental: bool,
) -> tuple[IdChanges, int]:
    """Write the published identity tables; an incremental night rewrites its scope's rows only."""
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(IDENTITY)}")
    scope_customers = None
    if incremental:
        # The customers tonight's scope held, before new ids are given: whole customers, always.
        conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE _scope_keys AS
            SELECT source_name, source_record_id FROM {RECORDS} SEMI JOIN {SCOPE} USING (record_id)
            UNION ALL SELECT source_name, source_record_id FROM {REMOVED}"""
        )
        ensure_customer_id_tables(conn)
        conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE _scope_customers AS
            SELECT DISTINCT customer_id FROM {ID_ASSIGNMENTS}
            SEMI JOIN _scope_keys USING (source_name, source_record_id)"""
        )
        scope_customers = "SELECT customer_id FROM _scope_customers"
    conn.execute(
        f"CREATE OR REPLACE TEMP VIEW _cluster_keys AS SELECT r.source_name, r.source_record_id,"
        f" c.cluster_id FROM {RECORDS} r JOIN {CLUSTERS} c USING (record_id)"
    )
    ids = assign_stable_customer_ids(conn, "_cluster_keys", run_id, resolved_at, scope_customers)
    # The edge that joined each record to its cluster: its strongest one inside the cluster.
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _member_edges AS
        SELECT e.*, a.cluster_id FROM {ALL_EDGES} e
        JOIN {CLUSTERS} a ON a.record_id = e.record_id_l
        JOIN {CLUSTERS} b ON b.record_id = e.record_id_r
        WHERE a.cluster_id = b.cluster_id"""
    )
    xref_rows = f"""
        WITH ends AS (
            SELECT record_id_l AS record_id, match_probability, rule FROM _member_edges
            UNION ALL SELECT record_id_r, match_probability, rule FROM _member_edges
        ), best AS (
            SELECT record_id, max(match_probability) AS match_probability,
                arg_max(rule, match_probability) AS match_rule
            FROM ends GROUP BY record_id
        )
        SELECT r.source_name, r.source_record_id, a.customer_id, r.source_system,
            r.identifier_type, b.match_probability, b.match_rule, r.first_seen, r.last_seen,
            $run_id AS run_id, $resolved_at::TIMESTAMPTZ AS resolved_at
        FROM {RECORDS} r
        JOIN {CLUSTERS} c USING (record_id)
        JOIN {ID_ASSIGNMENTS} a USING (source_name, source_record_id)
        LEFT JOIN best b USING (record_id)"""
    params = {"run_id": run_id, "resolved_at": resolved_at}
    if incremental:
        # The customers whose rows are rewritten: the scope's before and after, and ids this run
        # retired or merged (an erasure already took its subject's assignments away).
        conn.execute(
            "INSERT INTO _scope_customers SELECT DISTINCT customer_id FROM"
            f" {ID_ASSIGNMENTS} SEMI JOIN _cluster_keys USING (source_name, source_record_id)"
            f" UNION SELECT customer_id FROM {ID_CHANGES} WHERE run_id = $run_id AND change IN ('merged', 'retired')",
            {"run_id": run_id},
        )
        conn.execute(
            f"""DELETE FROM {XREF} WHERE (source_name, source_record_id) IN
            (SELECT (source_name, source_record_id) FROM _scope_keys)"""
        )
        conn.execute(f"INSERT INTO {XREF} BY NAME {xref_rows}", params)
    else:
        conn.execute(f"CREATE OR REPLACE TABLE {XREF} AS {xref_rows}", params)
    conn.execute(
        f"""CREATE OR REPLACE TEMP VIEW _members AS
        SELECT x.customer_id, r.* FROM {RECORDS} r
        JOIN {XREF} x USING (source_name, source_record_id)
        {"WHERE x.customer_id IN (SELECT customer_id FROM _scope_customers)" if incremental else ""}"""
    )
    survivorship = config.identity.survivorship
    if incremental:
        survive_attributes(conn, "_members", survivorship, "_scope_golden", "_scope_provenance", temporary=True)
        for table, rows in ((GOLDEN, "_scope_golden"), (PROVENANCE, "_scope_provenance")):
            conn.execute(f"DELETE FROM {table} WHERE customer_id IN (SELECT customer_id FROM _scope_customers)")
            conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {rows}")
        (golden,) = conn.execute(f"SELECT count(*) FROM {GOLDEN}").fetchone()
    else:
        golden = survive_attributes(conn, "_members", survivorship, str(GOLDEN), str(PROVENANCE))
    weights = [c for c in conn.table(SCORED_PAIRS).columns if c.startswith("mw_")]
    edge_rows = f"""
        SELECT x.customer_id, l.source_name AS source_name_l, l.source_record_id AS source_record_id_l,
            r.source_name AS source_name_r, r.source_record_id AS source_record_id_r,
            e.rule, e.match_probability, m.match_weight{''.join(f', m.{quote_ident(c)}' for c in weights)}
        FROM _member_edges e
        JOIN {RECORDS} l ON l.record_id = e.record_id_l
        JOIN {RECORDS} r ON r.record_id = e.record_id_r
        JOIN {XREF} x ON x.source_name = l.source_name AND x.source_record_id = l.source_record_id
        LEFT JOIN {SCORED_PAIRS} m ON e.rule = 'splink'
            AND m.record_id_l = e.record_id_l AND m.record_id_r = e.record_id_r"""
    if incremental:
        conn.execute(f"DELETE FROM {MATCH_EDGES} WHERE customer_id IN (SELECT customer_id FROM _scope_customers)")
        conn.execute(f"INSERT INTO {MATCH_EDGES} BY NAME {edge_rows}")
    else:
        conn.execute(f"CREATE OR REPLACE TABLE {MATCH_EDGES} AS {edge_rows}")
    # Values set aside by the guards, hashed: governance sees how often, never what.
    conn.execute(
        f"""CREATE OR REPLACE TABLE {IGNORED_IDENTIFIERS} AS
        SELECT split_part(kind, ':', 1) AS kind, sha256(value) AS value_sha256, records, reason,
            $run_id AS run_id
        FROM {IGNORED} ORDER BY kind, reason, records DESC""",
        {"run_id": run_id},
    )
    ensure(conn, OVERSIZE_CLUSTERS)
    conn.execute(
        f"""INSERT INTO {OVERSIZE_CLUSTERS}
        SELECT $run_id, $resolved_at, x.customer_id, o.records_before,
            o.resolved_by, o.largest_after
        FROM {OVERSIZE} o JOIN {RECORDS} r ON r.record_id = o.cluster_id
        JOIN {XREF} x USING (source_name, source_record_id)""",
        {"run_id": run_id, "resolved_at": resolved_at},
    )
    ensure(conn, OVERRIDES_APPLIED)
    conn.execute(
        f"""INSERT INTO {OVERRIDES_APPLIED}
        SELECT $run_id, $resolved_at, line, decision, source_name_l, source_record_id_l,
            source_name_r, source_record_id_r, outcome FROM {OVERRIDES} ORDER BY line""",
        {"run_id": run_id, "resolved_at": resolved_at},
    )
    ensure_audit_log(conn)
    conn.execute(
        f"""INSERT INTO {AUDIT_LOG} (occurred_at, action, request_id, rows_affected, detail, actor)
        SELECT $resolved_at, 'identity_override_' || decision, $run_id, 1,
            'line ' || line || ': ' || outcome, $actor FROM {OVERRIDES} ORDER BY line""",
        {"run_id": run_id, "resolved_at": resolved_at, "actor": current_actor()},
    )
    conn.execute("DROP TABLE _member_edges")
    conn.execute("DROP VIEW _members")
    conn.execute("DROP VIEW _cluster_keys")
    for temp in ("_scope_keys", "_scope_customers", "_scope_golden", "_scope_provenance"):
        conn.execute(f"DROP TABLE IF EXISTS {temp}")
    return ids, golden


def _record_run(conn: duckdb.DuckDBPyConnection, summary: IdentitySummary, resolved_at: dt.datetime) -> None:
    """One row per run: the figures governance reports and Dagster plots come from here."""
    # An existing table gets the columns of later releases (RESOLUTION_RUNS.added_columns).
    ensure(conn, RESOLUTION_RUNS)
    s = summary
    scores = s.scores
    signals = s.signals
    row = {
        "run_id": s.run_id, "resolved_at": resolved_at, "model_version": s.model_version,
        "model_trained": s.model_trained, "records": s.records.total, "contact_records": s.records.contacts,
        "web_identities": s.records.web_clients + s.records.web_users,
        "deterministic_edges": s.deterministic.edges, "comparisons": s.matching.comparisons,
        "match_edges": s.matching.edges, "clusters": s.clusters.clusters, "largest_cluster": s.clusters.largest,
        "oversize_clusters": s.clusters.oversize_found, "overrides_applied": sum(s.clusters.overrides.values()),
        "new_ids": s.ids.new, "merged_ids": s.ids.merged, "split_ids": s.ids.split, "retired_ids": s.ids.retired,
        "customers": s.ids.customers, "blocklisted_values": s.deterministic.blocklisted_values,
        "over_cap_values": s.deterministic.over_cap_values,
        "pairwise_precision": scores.precision if scores else None,
        "pairwise_recall": scores.recall if scores else None,
        "pairwise_f1": scores.f1 if scores else None,
        "expected_precision": signals.expected_precision if signals else None,
        "expected_recall": signals.expected_recall if signals else None,
        "singleton_share": signals.singleton_share if signals else None,
        "untrained_levels": list(signals.untrained_levels) if signals else [],
        "merges_on_cluster_evidence": s.clusters.merges_on_cluster_evidence,
        "signal_warnings": list(signals.warnings) if signals else [],
        "mode": s.mode.name if s.mode else None, "mode_reason": s.mode.reason if s.mode else None,
        "settings_fingerprint": s.mode.fingerprint if s.mode else None, "engine": s.engine,
        "changed_records": s.changes.changed if s.changes else None,
        "removed_records": s.changes.removed if s.changes else None,
        "reclustered_records": s.changes.scope if s.changes else s.clusters.records,
    }
    conn.execute(
        f"INSERT INTO {RESOLUTION_RUNS} BY NAME SELECT " + ", ".join(f"${k} AS {quote_ident(k)}" for k in row),
        row,
    )
