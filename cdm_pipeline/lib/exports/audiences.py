"""Audience files for ad platforms' customer-match uploads, built from the segment marts.

Why the file looks the way it does:

* **Format.** One CSV per segment and as-of date, ``<exports dir>/<segment folder>/<date>.csv``,
  with the header ``Email,Phone``: the column names Google Customer Match and Meta Custom
  Audiences both read as hashed identifiers. Each value is the lower-case hex SHA-256 of the
  normalised email (trimmed, lower case) or of the E.164 phone including its ``+``, which is what
  the platforms hash on their side to match. A customer without one of them has an empty cell.
* **Consent.** An upload is advertising, so a customer who asked us not to sell or share their
  data (``do_not_sell``) is never exported, and, unless ``exports.require_email_opt_in`` is
  switched off, only customers whose latest statement is an opt-in to marketing email are.
  Unknown consent (NULL) is not consent.
* **Hashes only.** The file holds hashes; the log, the ``governance.audit_log`` row and the
  command line carry counts and segment names, never an email or a phone. Hashing runs inside
  DuckDB (``sha256()``) and DuckDB writes the file, so a million customers never pass through
  Python.
* **Safe to re-run and to pick up.** Rows are sorted, so the same marts give the same bytes; the
  file is written beside its target under a temporary name and renamed into place, so an upload
  job never sees half a file and a failed export leaves yesterday's file as it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from cdm_pipeline.lib.catalog import CUSTOMER_360, SEGMENTS
from cdm_pipeline.lib.file_modes import create_private_dirs, private_dir, private_file
from cdm_pipeline.lib.governance.audit_log import record_audit
from cdm_pipeline.lib.marts.vocabulary import (
    BUILT_IN_SEGMENTS,
    CUSTOM_SEGMENT_TYPE,
    segment_folder,
    slug,
)
from cdm_pipeline.lib.warehouse import table_exists

if TYPE_CHECKING:
    from cdm_pipeline.config import CdmConfig

log = logging.getLogger(__name__)

AUDIT_ACTION = "audience_export"
SEGMENT_TYPES = (CUSTOM_SEGMENT_TYPE, *BUILT_IN_SEGMENTS)

# How a customer_segments row says "this customer is in the segment", per segment type.
_MEMBERSHIP: dict[str, str] = {
    "rfm": "s.rfm_segment = $segment",
    "lifecycle": "s.lifecycle_stage = $segment",
    "engagement": "s.engagement_tier = $segment",
    CUSTOM_SEGMENT_TYPE: "list_contains(s.custom_segments, $segment)",
}


def _audience_sql(segment_type: str) -> str:
    """Every member of a segment of ``segment_type`` (bound as ``$segment``) with the reason it is or
    is not exported: consent is checked first, so a customer without consent counts as excluded for
    consent whatever identifiers they have."""
    return f"""
    SELECT
        CASE
            WHEN c.do_not_sell IS TRUE OR ($require_opt_in AND c.email_opt_in IS NOT TRUE)
                THEN 'no_consent'
            WHEN nullif(c.email, '') IS NULL AND nullif(c.phone, '') IS NULL THEN 'no_identifier'
            ELSE 'exported'
        END AS outcome,
        nullif(c.email, '') AS email,
        nullif(c.phone, '') AS phone
    FROM {SEGMENTS} s
    LEFT JOIN {CUSTOMER_360} c ON c.customer_id = s.customer_id
    WHERE {_MEMBERSHIP[segment_type]}
"""


class ExportError(Exception):
    """An audience export that cannot be written; the message is one line with no values."""


class UnknownSegment(ExportError, ValueError):
    """A segment name that names no segment, or several (the message lists the choices)."""


class MartsNotBuilt(ExportError):
    """The segment marts are missing or empty: the pipeline has not built them yet."""


@dataclass(frozen=True)
class SegmentRef:
    """One segment: its type (``rfm``, ``lifecycle``, ``engagement``, ``custom``), its name as
    the marts store it (``Champions``, ``at_risk``, a custom name) and its export folder."""

    segment_type: str
    segment: str
    folder: str

    @property
    def name(self) -> str:
        """The qualified name people read: ``rfm:Champions``, ``lifecycle:at_risk``, ``custom:vip``."""
        return f"{self.segment_type}:{self.segment}"

    @property
    def key(self) -> str:
        """The qualified name people type: ``rfm:cant_lose_them``, ``custom:vip``."""
        if self.segment_type == CUSTOM_SEGMENT_TYPE:
            return self.name
        return f"{self.segment_type}:{slug(self.segment)}"


@dataclass(frozen=True)
class AudienceExport:
    """What one export wrote: counts only, never a customer's values.

    ``members`` = ``exported`` + ``excluded_no_consent`` + ``excluded_no_identifier``.
    """

    segment: SegmentRef
    path: Path
    as_of_date: dt.date
    members: int
    exported: int
    excluded_no_consent: int
    excluded_no_identifier: int


# --- Segment names ------------------------------------------------------------------------------


def segment_refs(config: CdmConfig) -> list[SegmentRef]:
    """Every segment an export can name: the config's custom segments, then the built-in ones."""
    refs = [
        SegmentRef(CUSTOM_SEGMENT_TYPE, s.name, segment_folder(CUSTOM_SEGMENT_TYPE, s.name))
        for s in config.segments
    ]
    for segment_type, names in BUILT_IN_SEGMENTS.items():
        refs.extend(SegmentRef(segment_type, n, segment_folder(segment_type, n)) for n in names)
    return refs


def resolve_segment(config: CdmConfig, name: str) -> SegmentRef:
    """Find the segment a person means by ``name``.

    Accepted: a custom segment's name; a built-in name in any case or as its slug (``Champions``,
    ``cant_lose_them``, ``Can't Lose Them``); a qualified name (``rfm:at_risk``,
    ``lifecycle:at_risk``, ``custom:vip``); or the export folder (``rfm_champions``).

    Raises:
        UnknownSegment: the name matches no segment (the message suggests close ones) or several
            (the message lists the qualified names to choose from).
    """
    text = name.strip()
    refs = segment_refs(config)
    kind, qualified, rest = text.partition(":")
    if qualified:
        return _resolve_qualified(name, kind.strip().lower(), rest.strip(), refs)
    matches = [ref for ref in refs if slug(text) and slug(text) in _spellings(ref)]
    return _one(name, matches, refs, slug(text))


def _resolve_qualified(name: str, kind: str, rest: str, refs: list[SegmentRef]) -> SegmentRef:
    if kind not in SEGMENT_TYPES:
        raise UnknownSegment(
            f"unknown segment type {kind!r} in {name!r}; expected one of {', '.join(SEGMENT_TYPES)}"
        )
    pool = [ref for ref in refs if ref.segment_type == kind]
    if not pool:
        raise UnknownSegment(f"unknown segment {name!r}: the config defines no {kind} segments")
    wanted = slug(rest)
    matches = [ref for ref in pool if wanted and (slug(ref.segment) == wanted or ref.segment == rest)]
    return _one(name, matches, pool, wanted)


def _spellings(ref: SegmentRef) -> set[str]:
    """The slugged spellings an unqualified name may match: the segment's slug and its folder."""
    return {slug(ref.segment), slug(ref.folder)}


def _one(name: str, matches: list[SegmentRef], pool: list[SegmentRef], wanted: str) -> SegmentRef:
    if len(matches) == 1:
        return matches[0]
    if matches:
        choices = " or ".join(ref.key for ref in matches)
        raise UnknownSegment(f"segment {name!r} is ambiguous: say {choices}")
    raise UnknownSegment(_unknown_message(name, pool, wanted))


def _unknown_message(name: str, pool: list[SegmentRef], wanted: str) -> str:
    by_spelling: dict[str, SegmentRef] = {}
    for ref in pool:
        for spelling in sorted(_spellings(ref)) + [ref.key]:
            by_spelling.setdefault(spelling, ref)
    close = difflib.get_close_matches(wanted or name.lower(), list(by_spelling), n=8, cutoff=0.6)
    suggestions = list(dict.fromkeys(by_spelling[spelling].key for spelling in close))
    if suggestions:
        return f"unknown segment {name!r}; did you mean {', '.join(suggestions[:4])}?"
    custom = [ref.segment for ref in pool if ref.segment_type == CUSTOM_SEGMENT_TYPE]
    return (
        f"unknown segment {name!r}; expected a custom segment ({', '.join(custom) or 'none defined'})"
        " or a built-in one such as rfm:champions, lifecycle:at_risk or engagement:engaged"
    )


# --- Writing an export --------------------------------------------------------------------------


def exports_dir(config: CdmConfig) -> Path:
    """The exports folder, absolute: ``exports.dir`` resolved against the config file's folder."""
    folder = config.exports.dir
    if not folder.is_absolute():
        folder = config.config_path.parent / folder
    return folder.resolve()


def segments_as_of_date(conn: duckdb.DuckDBPyConnection) -> dt.date:
    """The as-of date of the segment marts.

    Raises:
        MartsNotBuilt: ``marts.customer_segments`` or ``marts.customer_360`` is missing, or the
            segments table is empty.
    """
    for table in (SEGMENTS, CUSTOMER_360):
        if not table_exists(conn, table):
            raise MartsNotBuilt(f"{table.full_name} does not exist: run the pipeline first")
    row = conn.execute(f"SELECT max(as_of_date) FROM {SEGMENTS}").fetchone()
    if row is None or row[0] is None:
        raise MartsNotBuilt(f"{SEGMENTS.full_name} is empty: run the pipeline first")
    return row[0]


def write_audience_export(
    conn: duckdb.DuckDBPyConnection, config: CdmConfig, segment: SegmentRef, out: Path | None = None
) -> AudienceExport:
    """Write one segment's consenting members as a customer-match CSV and audit it.

    The file is ``<exports dir>/<segment folder>/<as-of date>.csv`` unless ``out`` is given. The
    counts, the file and the ``governance.audit_log`` row come from one transaction, so they
    agree; ``conn`` must be read-write and not inside an open transaction.

    Args:
        conn: the warehouse, holding ``marts.customer_360`` and ``marts.customer_segments``.
        config: the project config (exports folder and consent rule).
        segment: the segment, from :func:`resolve_segment`.
        out: write here instead of the exports folder.

    Returns:
        The path written and the member counts.

    Raises:
        MartsNotBuilt: the marts are missing or empty.
        ExportError: the rows written disagree with the rows counted.
    """
    conn.begin()
    try:
        as_of = segments_as_of_date(conn)
        target = out if out is not None else exports_dir(config) / segment.folder / f"{as_of}.csv"
        export = _write_atomically(conn, config, segment, as_of, target)
        conn.commit()
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            conn.rollback()
        raise
    log.info(
        "audience %s: %d of %d members exported to %s (%d without consent, %d without email or phone)",
        segment.name, export.exported, export.members, export.path, export.excluded_no_consent,
        export.excluded_no_identifier,
    )
    return export


def _write_atomically(
    conn: duckdb.DuckDBPyConnection, config: CdmConfig, segment: SegmentRef, as_of: dt.date, target: Path
) -> AudienceExport:
    """Count, write a temporary file beside ``target``, audit, then rename it into place."""
    params = {"segment": segment.segment, "require_opt_in": config.exports.require_email_opt_in}
    audience = _audience_sql(segment.segment_type)
    _private_folder(config, target.parent)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        members, exported, no_consent, no_identifier = _count(conn, audience, params)
        written = _copy_hashed(conn, audience, params, temporary)
        if written != exported:
            raise ExportError(f"wrote {written} rows for {segment.name} but counted {exported}")
        export = AudienceExport(
            segment=segment, path=target, as_of_date=as_of, members=members, exported=exported,
            excluded_no_consent=no_consent, excluded_no_identifier=no_identifier,
        )
        _audit(conn, export, _shown_path(config, target))
        private_file(temporary)  # DuckDB's COPY creates it by the umask; the hashes stay owner-only
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return export


def _private_folder(config: CdmConfig, folder: Path) -> None:
    """Owner-only folders: the exports folder and a segment's folder tightened, an ``--out`` folder
    elsewhere only where created."""
    exports = exports_dir(config)
    if folder.resolve() == exports or folder.resolve().parent == exports:
        private_dir(exports)
        private_dir(folder)
    else:
        create_private_dirs(folder)


def _count(conn: duckdb.DuckDBPyConnection, audience: str, params: dict) -> tuple[int, int, int, int]:
    row = conn.execute(
        f"""SELECT count(*), count(*) FILTER (outcome = 'exported'),
            count(*) FILTER (outcome = 'no_consent'), count(*) FILTER (outcome = 'no_identifier')
        FROM ({audience})""",
        params,
    ).fetchone()
    return tuple(int(value) for value in row)


def _copy_hashed(conn: duckdb.DuckDBPyConnection, audience: str, params: dict, path: Path) -> int:
    """``COPY`` the exported members' hashes to ``path``, sorted; returns the rows written."""
    row = conn.execute(
        f"""COPY (
            SELECT sha256(email) AS "Email", sha256(phone) AS "Phone"
            FROM ({audience})
            WHERE outcome = 'exported'
            ORDER BY "Email" NULLS LAST, "Phone" NULLS LAST
        ) TO $path (FORMAT CSV, HEADER, DELIMITER ',')""",
        {**params, "path": str(path)},
    ).fetchone()
    return int(row[0])


def _shown_path(config: CdmConfig, target: Path) -> str:
    """The path for the audit row: relative to the exports folder, else just the file name."""
    try:
        return target.resolve().relative_to(exports_dir(config)).as_posix()
    except ValueError:
        return target.name


def _audit(conn: duckdb.DuckDBPyConnection, export: AudienceExport, shown_path: str) -> None:
    """One ``governance.audit_log`` row: the segment, the file and the counts; no values."""
    detail = (
        f"segment {export.segment.name} -> {shown_path}; {export.members} members,"
        f" {export.exported} exported, {export.excluded_no_consent} without consent,"
        f" {export.excluded_no_identifier} without email or phone"
    )
    record_audit(conn, AUDIT_ACTION, None, export.exported, detail)


def write_nightly_exports(conn: duckdb.DuckDBPyConnection, config: CdmConfig) -> list[AudienceExport]:
    """Write the audience of every segment in ``exports.segments``, in the order listed.

    Every name is resolved before anything is written, so a misspelt name fails the night's
    exports up front instead of after some files have changed.

    Raises:
        UnknownSegment: a listed name matches no segment or several.
        MartsNotBuilt: the marts are missing or empty.
    """
    segments = [resolve_segment(config, name) for name in config.exports.segments]
    return [write_audience_export(conn, config, segment) for segment in segments]
