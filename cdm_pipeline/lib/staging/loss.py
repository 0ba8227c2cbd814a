"""No silent loss: how much of each source partition staging held back or could not read.

A wrong date format or a "£54.90" amount used to quarantine every order while each quality
check reported "0 of 0": the checks look at the rows that were staged. These figures look at
what was *not*: per source and partition, the share of records quarantined, and per mapped
date, amount or yes/no column the share of non-empty values that could not be parsed. Over the
limits (``loss_limits`` in cdm.yaml, per source or for the project) the blocking check fails.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import duckdb

from cdm_pipeline.config import BOOLEAN_COLUMNS, CdmConfig, SourceConfig, exceeds_loss_limit
from cdm_pipeline.lib.staging.mapping import spec_for

CHECK_NAME = "no_silent_loss"


@dataclass
class SourceLoss:
    """One source partition's losses in staging (counts only: no values)."""

    source: str
    kind: str  # the staging table: an orders source is measured as orders and as its buyers
    partition_date: dt.date
    records: int
    quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)
    # column -> (non-empty values, values that could not be parsed)
    unparsed: dict[str, tuple[int, int]] = field(default_factory=dict)


def measure_losses(
    conn: duckdb.DuckDBPyConnection, kind: str, sources: list[SourceConfig], mapped: str, judged: str,
    parsed_columns: dict[str, str], bool_sql,
) -> list[SourceLoss]:
    """Per source: records, quarantined rows by reason, parse failures per mapped typed column.

    ``mapped`` and ``judged`` are staging's temp tables (canonical texts with ``__parsed``
    twins; the judged rows with their reasons). ``bool_sql(column)`` reads a yes/no text.
    """
    out = []
    for source in sources:
        counted = conn.execute(
            f"SELECT count(*), count(quarantine_reason) FROM {judged} WHERE source_name = ?", [source.name]
        ).fetchone()
        if not counted[0]:
            continue
        reasons = dict(conn.execute(
            f"SELECT quarantine_reason, count(*) FROM {judged} WHERE source_name = ?"
            " AND quarantine_reason IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1", [source.name],
        ).fetchall())
        typed = [c for c in parsed_columns if spec_for(source, kind, c)]
        flags = [c for c in BOOLEAN_COLUMNS if c in _columns(conn, mapped) and spec_for(source, kind, c)]
        items = [f"count({c}), count({c}) FILTER (WHERE {c}__parsed IS NULL)" for c in typed]
        items += [f"count({c}), count({c}) FILTER (WHERE ({bool_sql(c)}) IS NULL)" for c in flags]
        unparsed = {}
        if items:
            row = conn.execute(
                f"SELECT {', '.join(items)} FROM {mapped} WHERE source_name = ?", [source.name]
            ).fetchone()
            for i, column in enumerate(typed + flags):
                unparsed[column] = (int(row[2 * i]), int(row[2 * i + 1]))
        day = conn.execute(f"SELECT any_value(_partition_date) FROM {judged} WHERE source_name = ?",
                           [source.name]).fetchone()[0]
        out.append(SourceLoss(source.name, kind, day, int(counted[0]), int(counted[1]), reasons, unparsed))
    return out


def _columns(conn: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {row[0] for row in conn.execute(f"DESCRIBE {table}").fetchall()}


def loss_problems(config: CdmConfig, losses: list[SourceLoss]) -> list[str]:
    """One line per limit exceeded, naming source, partition, share and the top reason."""
    problems = []
    named: set[tuple] = set()  # one source column read into two (an order's date: created, updated)
    for loss in losses:
        source = config.source(loss.source)
        limit = config.loss_limit(source, "quarantined_share")
        if exceeds_loss_limit(loss.quarantined, loss.records, limit):
            top = ", ".join(f"{reason} {n:,}" for reason, n in list(loss.reasons.items())[:3])
            problems.append(
                f"{loss.source} {loss.partition_date}: {loss.quarantined:,} of {loss.records:,} records"
                f" quarantined ({loss.quarantined / loss.records:.0%}, limit {limit:.0%}): {top}"
            )
        limit = config.loss_limit(source, "unparsed_share")
        for column, (present, failed) in loss.unparsed.items():
            spec = spec_for(source, loss.kind, column)
            origin = (loss.source, loss.partition_date, spec.origin if spec else column)
            if exceeds_loss_limit(failed, present, limit) and origin not in named:
                named.add(origin)
                fmt = f", format {spec.format!r}" if spec and spec.format else ""
                problems.append(
                    f"{loss.source} {loss.partition_date}: {failed:,} of {present:,} values of {column}"
                    f" (from {spec.origin if spec else '?'}{fmt}) could not be parsed"
                    f" ({failed / present:.0%}, limit {limit:.0%})"
                )
    return problems
