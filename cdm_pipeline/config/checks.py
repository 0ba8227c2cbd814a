"""The config's rules across fields: names, globs, columns per kind, identity links, segments.

Run by ``load_config`` after the models validate, so every mistake is one line naming the key.
The segment rules need the marts' vocabulary and condition grammar and the exports' segment
names; those modules import the config for types only, so importing them here makes no cycle.
"""

from __future__ import annotations

import codecs
import os
import re
import string
import zoneinfo
from pathlib import Path

from cdm_pipeline.config.errors import ConfigError
from cdm_pipeline.config.models import (
    CANONICAL_COLUMNS,
    DATE_COLUMNS,
    DATE_PLACEHOLDER,
    EPOCH_FORMATS,
    SOURCE_NAME_PATTERN,
    SURVIVING_ATTRIBUTES,
    CdmConfig,
    ColumnSpec,
)

# Dagster's rule for tag values (dagster._utils.tags), which every source's system becomes.
_SYSTEM_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,63}")


def check_config(file: str, config: CdmConfig) -> None:
    """Raise ConfigError for the first rule ``config`` breaks."""
    _check_sources(file, config)
    _check_identity(file, config)
    _check_marts(file, config)
    _check_timezones(file, config)


def _check_name(file: str, key: str, name: str, what: str, why: str) -> None:
    """A name that becomes an identifier or a folder: lower-case letters, digits and _."""
    if not SOURCE_NAME_PATTERN.match(name):
        raise ConfigError(
            file, key,
            f"{name!r} is not a valid {what} name (lower-case letters, digits and _, starting with a"
            f" letter; {why})",
        )


def _check_sources(file: str, config: CdmConfig) -> None:
    seen: dict[str, int] = {}
    for index, source in enumerate(config.sources):
        key = f"sources[{index}]"
        _check_name(file, f"{key}.name", source.name, "source", "it becomes a table name")
        if source.name in seen:
            raise ConfigError(
                file, f"{key}.name",
                f"duplicate source name {source.name!r} (also sources[{seen[source.name]}])",
            )
        seen[source.name] = index
        if not _SYSTEM_PATTERN.fullmatch(source.system):
            # The system tags every asset of the source, and Dagster refuses other tag values.
            raise ConfigError(
                file, f"{key}.system",
                f"{source.system!r} is not a valid system name (letters, digits, _, - and ., at most 63"
                " characters; it tags the source's assets)",
            )
        _check_path(file, f"{key}.path", source.path)
        allowed = CANONICAL_COLUMNS[source.kind]
        for canonical in source.columns:
            if canonical not in allowed:
                raise ConfigError(
                    file, f"{key}.columns.{canonical}",
                    f"unknown canonical column for kind {source.kind!r}; expected one of "
                    + ", ".join(allowed),
                )
        for canonical, spec in source.mapped.items():
            _check_column_spec(file, f"{key}.columns.{canonical}", canonical, spec)
        if (source.id_column is None) == (source.id_from is None):
            raise ConfigError(
                file, f"{key}.id_column",
                "give id_column (the column holding the record id) or id_from (canonical columns"
                " whose values, hashed, identify a record), not both" if source.id_column else
                "required key is missing (or id_from: the canonical columns that identify a record)",
            )
        for i, name in enumerate(source.id_from or []):
            if name not in source.mapped:
                raise ConfigError(
                    file, f"{key}.id_from[{i}]", f"{name!r} is not a canonical column the source maps"
                )
        if source.group_rows and source.id_column is None:
            raise ConfigError(file, f"{key}.group_rows", "needs id_column: rows are grouped by it")
        for canonical, spec in source.mapped.items():
            if spec.param and spec.column == source.explode:
                raise ConfigError(
                    file, f"{key}.columns.{canonical}.param",
                    f"reads a list column ({source.explode!r}, exploded); use path on its elements",
                )
        if source.explode and not any(s.column == source.explode for s in source.mapped.values()):
            raise ConfigError(
                file, f"{key}.explode", f"no mapped column reads {source.explode!r}'s elements"
            )
        try:
            codecs.lookup(source.encoding)
        except LookupError:
            raise ConfigError(
                file, f"{key}.encoding", f"unknown encoding {source.encoding!r} (e.g. utf-8, windows-1252)"
            ) from None
        if source.contacts_source is not None:
            if source.kind not in ("orders", "email_events"):
                raise ConfigError(
                    file, f"{key}.contacts_source", "applies only to orders and email_events sources"
                )
            target = next((s for s in config.sources if s.name == source.contacts_source), None)
            if target is None or target.kind != "contacts":
                raise ConfigError(
                    file, f"{key}.contacts_source",
                    f"{source.contacts_source!r} is not the name of a contacts source",
                )
        if source.format != "csv" and (source.delimiter != "," or source.encoding.lower() not in ("utf-8", "utf8")):
            raise ConfigError(
                file, f"{key}.delimiter",
                "delimiter and encoding apply only to csv sources",
            )


def _check_column_spec(file: str, key: str, canonical: str, spec: ColumnSpec) -> None:
    origins = [name for name in ("column", "value", "from_filename") if getattr(spec, name) is not None]
    if len(origins) != 1:
        raise ConfigError(
            file, key,
            "give exactly one of column, value or from_filename" + (f" (got {', '.join(origins)})" if origins else ""),
        )
    if (spec.path or spec.param) and spec.column is None:
        raise ConfigError(file, f"{key}.{'path' if spec.path else 'param'}", "applies only with column")
    if spec.path and spec.param:
        raise ConfigError(file, f"{key}.param", "give path or param, not both")
    if spec.from_filename is not None:
        try:
            re.compile(spec.from_filename)
        except re.error as exc:
            raise ConfigError(file, f"{key}.from_filename", f"bad regular expression ({exc})") from None
    if spec.format is not None:
        if canonical not in DATE_COLUMNS:
            raise ConfigError(
                file, f"{key}.format",
                "a format applies only to date columns (" + ", ".join(sorted(DATE_COLUMNS)) + ")",
            )
        if "%" not in spec.format and spec.format not in EPOCH_FORMATS:
            raise ConfigError(
                file, f"{key}.format",
                f"{spec.format!r} is not a strftime format (e.g. \"%Y%m%d\") nor one of "
                + ", ".join(EPOCH_FORMATS),
            )
    if spec.name_part is not None and canonical not in ("first_name", "last_name"):
        raise ConfigError(file, f"{key}.name_part", "applies only to first_name and last_name")


def _check_identity(file: str, config: CdmConfig) -> None:
    identity = config.identity
    names = {source.name for source in config.sources}
    trusted = names | {source.system for source in config.sources}
    for index, link in enumerate(identity.same_ids):
        key = f"identity.same_ids[{index}]"
        if link.source not in names:
            raise ConfigError(file, f"{key}.source", f"no source named {link.source!r}")
        if link.equals not in names:
            raise ConfigError(file, f"{key}.equals", f"no source named {link.equals!r}")
        source = config.source(link.source)
        wanted = "contacts" if link.column == "linked_id" else "web_events"
        if source.kind != wanted:
            raise ConfigError(
                file, f"{key}.column",
                f"{link.column!r} is a column of {wanted} sources; {link.source!r} is {source.kind}",
            )
        if link.column not in source.columns:
            raise ConfigError(
                file, f"{key}.column", f"source {link.source!r} does not map {link.column!r}"
            )
        if config.source(link.equals).kind != "contacts":
            raise ConfigError(file, f"{key}.equals", f"{link.equals!r} is not a contacts source")
    survivorship = identity.survivorship
    for index, name in enumerate(survivorship.source_trust):
        if name not in trusted:
            raise ConfigError(
                file, f"identity.survivorship.source_trust[{index}]",
                f"{name!r} is neither a source name nor a system",
            )
    for attribute in survivorship.attributes:
        if attribute not in SURVIVING_ATTRIBUTES:
            raise ConfigError(
                file, f"identity.survivorship.attributes.{attribute}",
                "unknown attribute; expected one of " + ", ".join(SURVIVING_ATTRIBUTES),
            )


def _check_timezones(file: str, config: CdmConfig) -> None:

    zones = [("timezone", config.timezone), ("schedule.timezone", config.schedule.timezone)]
    zones += [(f"sources[{i}].timezone", s.timezone) for i, s in enumerate(config.sources) if s.timezone]
    for key, name in zones:
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(file, key, f"unknown time zone {name!r} (e.g. UTC, Europe/London)") from None
    if config.schedule.marts_due_by == config.schedule.time:
        raise ConfigError(
            file, "schedule.marts_due_by",
            f"{config.schedule.marts_due_by} is when the nightly run starts; give the time the marts"
            " must be rebuilt by (e.g. 06:00)",
        )


def _check_marts(file: str, config: CdmConfig) -> None:
    # Imported here: the marts vocabulary and grammar are library code that must not import config.
    from cdm_pipeline.lib.marts.vocabulary import BUILT_IN_SEGMENTS, built_in_folders, slug

    marts = config.marts
    stages = marts.lifecycle
    thresholds = [("new_days", stages.new_days), ("active_days", stages.active_days),
                  ("at_risk_days", stages.at_risk_days), ("lapsed_days", stages.lapsed_days)]
    for (low_name, low), (high_name, high) in zip(thresholds, thresholds[1:], strict=False):
        if high <= low and not (low_name == "new_days" and high == low):
            raise ConfigError(
                file, f"marts.lifecycle.{high_name}", f"must be greater than {low_name} ({low})"
            )
    for currency, rate in marts.exchange_rates.items():
        if not re.fullmatch(r"[A-Z]{3}", currency):
            raise ConfigError(file, f"marts.exchange_rates.{currency}", "not an ISO 4217 currency code")
        if not rate > 0:
            raise ConfigError(file, f"marts.exchange_rates.{currency}", f"must be positive (got {rate})")
    if marts.exchange_rates and marts.currency is None:
        raise ConfigError(file, "marts.currency", "exchange_rates need the reporting currency they convert to")

    reserved = built_in_folders() | {slug(n) for names in BUILT_IN_SEGMENTS.values() for n in names}
    seen: set[str] = set()
    for index, segment in enumerate(config.segments):
        key = f"segments[{index}]"
        _check_name(file, f"{key}.name", segment.name, "segment", "it names the export folder")
        if segment.name in reserved:
            raise ConfigError(file, f"{key}.name", f"{segment.name!r} is a built-in segment name")
        if segment.name in seen:
            raise ConfigError(file, f"{key}.name", f"duplicate segment name {segment.name!r}")
        seen.add(segment.name)
        from cdm_pipeline.lib.marts.conditions import ConditionError, compile_condition

        try:
            compile_condition(segment.where)
        except ConditionError as exc:
            raise ConfigError(file, f"{key}.where", str(exc)) from None
    for index, name in enumerate(config.exports.segments):
        from cdm_pipeline.lib.exports.audiences import UnknownSegment, resolve_segment

        try:
            resolve_segment(config, name)
        except UnknownSegment as exc:
            raise ConfigError(file, f"exports.segments[{index}]", str(exc)) from None


def _check_path(file: str, key: str, path: str) -> None:
    """Reject globs that can never match what the user meant, before any run."""
    if os.path.isabs(path):
        raise ConfigError(file, key, "must be relative to landing_dir, not absolute")
    if ".." in Path(path).parts:
        raise ConfigError(file, key, "must stay inside landing_dir (no '..')")
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(path) if name is not None]
    except ValueError as exc:
        raise ConfigError(file, key, f"bad glob: {exc}") from None
    unknown = sorted(set(fields) - {"date"})
    if unknown:
        raise ConfigError(
            file, key, f"unknown placeholder {{{unknown[0]}}}; only {DATE_PLACEHOLDER} is supported"
        )
    if path.count("[") != path.count("]"):
        raise ConfigError(file, key, "bad glob: unbalanced [ ]")
