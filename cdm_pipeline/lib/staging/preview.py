"""``cdm sources preview``: one partition of one source, read and staged in memory.

The files are read by the real extract and staged by the real staging SQL on an in-memory
DuckDB database, so what the preview says is what a run would do, and the warehouse is never
opened. Values are shown masked: the preview is for checking a mapping, not for reading data.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import duckdb

from cdm_pipeline.config import CdmConfig, ColumnSpec, SourceConfig
from cdm_pipeline.lib.catalog import quarantine_table, staging_table
from cdm_pipeline.lib.extract import load_partition, partition_files
from cdm_pipeline.lib.personal_data.masking import mask_date, mask_email, mask_name, mask_phone, mask_text
from cdm_pipeline.lib.staging.build import StagedPartition, stage_partition
from cdm_pipeline.lib.staging.columns import CANONICAL_TYPES
from cdm_pipeline.lib.staging.loss import loss_problems
from cdm_pipeline.lib.staging.mapping import spec_for
from cdm_pipeline.lib.warehouse import prepare_connection, quote_ident

# Columns whose values say nothing about a person: shown as they are.
PLAIN = frozenset({
    "country", "currency", "status", "channel", "event_type", "event_name", "bounce_type",
    "device_category", "utm_source", "utm_medium", "utm_campaign", "campaign_id", "campaign_name",
    "created_at", "updated_at", "order_date", "occurred_at", "amount", "value", "email_opt_in",
    "do_not_sell", "region",
})
_MASKS = {
    "email": mask_email, "phone": mask_phone, "first_name": mask_name, "last_name": mask_name,
    "birth_date": mask_date,
}


@dataclass
class ColumnPreview:
    canonical: str
    origin: str
    present: int  # records with a value
    parsed: float | None  # share of present values read as the column's type (typed columns)
    example: str


@dataclass
class KindPreview:
    kind: str
    staged: StagedPartition
    columns: list[ColumnPreview] = field(default_factory=list)


@dataclass
class SourcePreview:
    source: SourceConfig
    partition_date: dt.date
    files: list[str]
    rows: int
    rejects: dict[str, int]
    kinds: list[KindPreview]
    problems: list[str]


def preview_source(config: CdmConfig, source: SourceConfig, partition_date: dt.date) -> SourcePreview:
    """Read and stage one partition of ``source`` in memory; nothing is written anywhere.

    Raises:
        ExtractError: the files cannot be read or lack a mapped column (as a run would).
    """
    conn = duckdb.connect(":memory:", config=config.duckdb.connection_settings())
    try:
        prepare_connection(conn)
        files = partition_files(source, config.landing_dir, partition_date)
        now = dt.datetime.now(dt.timezone.utc)
        load = load_partition(conn, source, config.landing_dir, partition_date, now, config=config)
        kinds = [source.kind] + (["contacts"] if source.carries_identity else [])
        previews = []
        for kind in kinds:
            staged = stage_partition(conn, config, kind, partition_date)
            previews.append(KindPreview(kind, staged, _columns(conn, source, kind, staged)))
        losses = [loss for p in previews for loss in p.staged.losses]
        return SourcePreview(
            source, partition_date,
            [str(f.relative_to(config.landing_dir)) for f in files],
            load.rows, load.rejects_by_error, previews, loss_problems(config, losses),
        )
    finally:
        conn.close()


def _columns(conn, source: SourceConfig, kind: str, staged: StagedPartition) -> list[ColumnPreview]:
    unparsed = {c: n for loss in staged.losses for c, n in loss.unparsed.items()}
    union = f"(SELECT * FROM {staging_table(kind)} UNION ALL BY NAME SELECT * FROM {quarantine_table(kind)})"
    out = []
    for canonical in ("source_record_id", *CANONICAL_TYPES[kind]):
        spec = _origin_spec(source, kind, canonical)
        if spec is None:
            continue
        column = quote_ident(canonical)
        present, example = conn.execute(
            f"SELECT count({column}), min({column}::VARCHAR) FROM {union}"
        ).fetchone()
        parsed = None
        if canonical in unparsed and unparsed[canonical][0]:
            # Typed columns: staging holds the parsed value; count what the files held.
            present, failed = unparsed[canonical]
            parsed = 1 - failed / present
        out.append(ColumnPreview(canonical, spec if isinstance(spec, str) else spec.origin,
                                 int(present), parsed, _mask(canonical, example)))
    return out


def _origin_spec(source: SourceConfig, kind: str, canonical: str) -> ColumnSpec | str | None:
    if canonical == "source_record_id":
        return source.id_column or "hash of " + ", ".join(source.id_from)
    if kind == "orders" and canonical == "contact_id" and "contact_id" not in source.mapped and source.carries_identity:
        return "the order's own buyer record"
    return spec_for(source, kind, canonical)


def _mask(canonical: str, value: str | None) -> str:
    if value is None:
        return "-"
    if canonical in PLAIN:
        return value if len(value) <= 40 else value[:37] + "..."
    if canonical in _MASKS:
        return _MASKS[canonical](value)
    if canonical in ("page_url", "page_referrer", "url"):
        return value.split("?")[0].split("#")[0][:40]  # query strings can carry an address
    return mask_text(value) if canonical.startswith("address") or canonical in ("city", "postcode", "company") \
        else value[:3] + "***"


def _listed(files: list[str]) -> str:
    if not files:
        return " (none found)"
    return f" ({', '.join(files[:3])}{' ...' if len(files) > 3 else ''})"


def _counted(pairs) -> str:
    """`` (reason 3, other 1)``, or nothing when there are none."""
    text = ", ".join(f"{name} {n:,}" for name, n in pairs)
    return f" ({text})" if text else ""


def preview_lines(preview: SourcePreview) -> list[str]:
    source = preview.source
    preset = f"preset {source.preset}; " if source.preset else ""
    lines = [
        f"source {source.name} ({preset}{source.kind}, {source.format}) for {preview.partition_date}",
        f"  files: {len(preview.files)}{_listed(preview.files)}",
        f"  lines: {preview.rows:,} read, {sum(preview.rejects.values()):,} rejected"
        + _counted(preview.rejects.items()),
    ]
    for kind in preview.kinds:
        staged = kind.staged
        how = " (buyers of the orders)" if kind.kind != source.kind else ""
        lines.append(
            f"  as {kind.kind}{how}: {staged.raw_rows:,} records, {staged.staged:,} would stage,"
            f" {staged.quarantined:,} would be quarantined"
            + _counted(sorted(staged.quarantine_reasons.items(), key=lambda x: -x[1]))
        )
        width = max([len(c.canonical) for c in kind.columns] + [6])
        origin_width = max([len(c.origin) for c in kind.columns] + [4])
        lines.append(
            f"    {'column'.ljust(width)}  {'from'.ljust(origin_width)}  {'values':>13}  {'parsed':>6}  example"
        )
        for c in kind.columns:
            parsed = f"{c.parsed:.0%}" if c.parsed is not None else ""
            lines.append(
                f"    {c.canonical.ljust(width)}  {c.origin.ljust(origin_width)}"
                f"  {f'{c.present:,}/{staged.raw_rows:,}':>13}  {parsed:>6}  {c.example}"
            )
    for problem in preview.problems:
        lines.append(f"  would fail no_silent_loss: {problem}")
    return lines
