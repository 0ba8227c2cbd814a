"""Pairwise precision, recall and F1 of the published clusters against labelled records.

The truth file names, for some source records, the real entity behind them: a CSV or Parquet
file with ``source_name, source_record_id`` and ``entity`` (the demo's ``ground_truth.parquet``
calls it ``person_id``). Only records present in both the truth and ``identity.customer_xref``
are scored, and only their labels are checked for conflicts. A pair of records is predicted when
they share a customer id and true when they share an entity; the counts come from group sizes
(n·(n-1)/2), never from a self-join, so a million records score in a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from cdm_pipeline.lib.catalog import XREF

ENTITY_COLUMNS = ("entity", "person_id")


class TruthFileError(Exception):
    """The truth file is missing or lacks the columns evaluation needs."""


@dataclass(frozen=True)
class PairwiseScores:
    records: int
    true_pairs: int
    predicted_pairs: int
    correct_pairs: int

    @property
    def precision(self) -> float:
        return self.correct_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.correct_pairs / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def _truth_relation(conn: duckdb.DuckDBPyConnection, path: Path) -> str:
    if not path.exists():
        raise TruthFileError(f"{path}: file not found")
    reader = "read_parquet" if path.suffix == ".parquet" else "read_csv"
    columns = [row[0] for row in conn.execute(f"DESCRIBE SELECT * FROM {reader}(?)", [str(path)]).fetchall()]
    entity = next((c for c in ENTITY_COLUMNS if c in columns), None)
    missing = [c for c in ("source_name", "source_record_id") if c not in columns]
    if missing or entity is None:
        need = missing[0] if missing else " or ".join(ENTITY_COLUMNS)
        raise TruthFileError(f"{path}: needs a column {need}")
    # Only records the identity stage resolves are scored: a truth file labelling orders and
    # events as well (the demo's: 7.3M rows at 1,000,000 people, 1.9M of them records) is cut
    # down before the checks and group-bys below, not after.
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _truth AS
        SELECT DISTINCT t.source_name::VARCHAR AS source_name,
            t.source_record_id::VARCHAR AS source_record_id, t.{entity}::VARCHAR AS entity
        FROM {reader}(?) t
        SEMI JOIN {XREF} x
            ON x.source_name = t.source_name::VARCHAR AND x.source_record_id = t.source_record_id::VARCHAR""",
        [str(path)],
    )
    (conflicting,) = conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM _truth GROUP BY source_name, source_record_id"
        " HAVING count(*) > 1)"
    ).fetchall()[0]
    if conflicting:
        conn.execute("DROP TABLE _truth")
        # Two entities for one record would count its pairs twice: refuse rather than mis-score.
        raise TruthFileError(f"{path}: {conflicting:,} records are labelled with more than one entity")
    return "_truth"


def evaluate_clusters(conn: duckdb.DuckDBPyConnection, truth_path: Path) -> PairwiseScores:
    """Score ``identity.customer_xref`` against a truth file (CSV or Parquet)."""
    truth = _truth_relation(conn, truth_path)
    row = conn.execute(
        f"""WITH scored AS (
            SELECT x.customer_id, t.entity FROM {XREF} x
            JOIN {truth} t USING (source_name, source_record_id)
        ), by_both AS (SELECT count(*) AS n FROM scored GROUP BY customer_id, entity),
        by_customer AS (SELECT count(*) AS n FROM scored GROUP BY customer_id),
        by_entity AS (SELECT count(*) AS n FROM scored GROUP BY entity)
        SELECT (SELECT count(*) FROM scored),
            (SELECT coalesce(sum(n * (n - 1) // 2), 0) FROM by_entity),
            (SELECT coalesce(sum(n * (n - 1) // 2), 0) FROM by_customer),
            (SELECT coalesce(sum(n * (n - 1) // 2), 0) FROM by_both)"""
    ).fetchall()[0]
    conn.execute(f"DROP TABLE {truth}")
    records, true_pairs, predicted, correct = (int(v) for v in row)
    return PairwiseScores(records, true_pairs, predicted, correct)
