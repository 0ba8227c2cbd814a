"""Run a staging table's expectation suite on a pandas frame with Great Expectations 1.x.

One ephemeral GX context per process (no files, no analytics, no progress bars) holds a pandas
data source with one dataframe asset per table. Each call builds the suite from the specs (cheap:
it also resolves "today" for date bounds) and validates the whole frame as one batch.

Privacy: results are requested in ``BASIC`` format with ``partial_unexpected_count=0`` and
``exclude_unexpected_values=True``, so GX neither collects nor returns any row value, and
:func:`redact_result` strips whatever value-bearing field might still be there before the result
leaves this module. Outcomes hold counts and a short non-personal text only.

Speed (2-core machine): 1,000,000 rows × 7-11 expectations take 0.3-0.6 s once GX is loaded;
the first call in a process adds about 2 s (GX import and context). Two GX defaults would cost
much more and are avoided: the md5 fingerprint of every batch (see ``_gx_datasource``) and the
row-by-row Python comparison GX uses for naive microsecond datetimes (see ``_prepare_frame``).

Empty frames: GX validates them. Map expectations (not-null, regex, in-set, between, pair,
compound-unique) report ``element_count=0``, ``unexpected_count=0``, ``unexpected_percent=None``
and succeed, whatever ``mostly`` is: an empty partition passes its suite.
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import logging
import math
import numbers
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cdm_pipeline.lib.catalog import staging_table
from cdm_pipeline.lib.quality.expectations import CRITICAL, SUITES, TODAY, ExpectationSpec, WhereNull

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

DATASOURCE_NAME = "cdm_staging"
BATCH_DEFINITION_NAME = "whole_frame"
SUITE_NAME_PREFIX = "staging_"
SPEC_KEY_META = "cdm_check_key"

RESULT_FORMAT: dict[str, Any] = {
    "result_format": "BASIC",
    "partial_unexpected_count": 0,
    "exclude_unexpected_values": True,
    "include_unexpected_rows": False,
    "return_unexpected_index_query": False,
}
"""Counts and percentages only: no row values or row indexes are computed or returned."""

# Result fields that can hold row values (emails, phones, ...) or row positions.
VALUE_BEARING_RESULT_FIELDS = (
    "partial_unexpected_list",
    "partial_unexpected_counts",
    "partial_unexpected_index_list",
    "unexpected_list",
    "unexpected_index_list",
    "unexpected_index_query",
    "unexpected_index_column_names",
    "unexpected_rows",
    "details",
)


class QualityError(Exception):
    """The frame cannot be validated (unknown table, missing columns)."""


class MissingColumnsError(QualityError):
    """The frame lacks columns that the suite's expectations read."""

    def __init__(self, table: str, missing: Mapping[str, Sequence[str]]):
        self.table = table
        self.missing = dict(missing)
        details = "; ".join(f"{column} (read by {', '.join(keys)})" for column, keys in self.missing.items())
        super().__init__(f"staging table {table!r} is missing column(s) needed by its quality checks: {details}")


@dataclass(frozen=True)
class ExpectationOutcome:
    """What one expectation found, in counts only (never row values)."""

    key: str
    gx_type: str
    column: str | None
    severity: str
    success: bool
    unexpected_count: int | None
    element_count: int | None
    unexpected_percent: float | None
    observed_value: str | None
    """Short text: GX's observed value when it is a number, or a short note such as an error type."""


@dataclass(frozen=True)
class SuiteResult:
    table: str
    success: bool
    """Every expectation passed."""
    critical_success: bool
    """Every critical expectation passed (downstream may run)."""
    outcomes: tuple[ExpectationOutcome, ...]
    """In suite order."""
    evaluated_at: dt.datetime
    gx_result: object
    """The (redacted) GX ``ExpectationSuiteValidationResult``, for Data Docs."""

    def outcome(self, key: str) -> ExpectationOutcome:
        for outcome in self.outcomes:
            if outcome.key == key:
                return outcome
        raise KeyError(f"no check {key!r} in the {self.table} results")

    @property
    def suite_name(self) -> str:
        return suite_name(self.table)


def suite_name(table: str) -> str:
    return f"{SUITE_NAME_PREFIX}{table}"


def suite_specs(table: str) -> tuple[ExpectationSpec, ...]:
    try:
        return SUITES[table]
    except KeyError:
        raise QualityError(f"no expectation suite for table {table!r}; known: {', '.join(SUITES)}") from None


def required_columns(specs: Sequence[ExpectationSpec]) -> tuple[str, ...]:
    """Every column the specs read, in first-use order (so callers can load only those)."""
    return tuple(dict.fromkeys(column for spec in specs for column in spec.columns))


# --- GX context (one per process) -------------------------------------------------------------

_lock = threading.RLock()
_datasource: Any = None


def _gx_datasource() -> Any:
    """The process-wide ephemeral context's pandas data source (created on first use)."""
    global _datasource
    with _lock:
        if _datasource is None:
            import great_expectations as gx
            from great_expectations.execution_engine import pandas_execution_engine

            # GX fingerprints every pandas batch under 1 GB (md5 of hash_pandas_object, an
            # informational batch marker), once per get_batch and twice per validation: 1.6 s
            # of a 1,000,000-row contacts validation. Nothing here uses the fingerprint.
            if hasattr(pandas_execution_engine, "HASH_THRESHOLD"):
                pandas_execution_engine.HASH_THRESHOLD = 0
            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = {"globally": False, "metric_calculations": False}
            _datasource = context.data_sources.add_pandas(DATASOURCE_NAME)
        return _datasource


def _batch_definition(table: str) -> Any:
    datasource = _gx_datasource()
    try:
        asset = datasource.get_asset(table)
    except LookupError:
        asset = datasource.add_dataframe_asset(table)
    try:
        return asset.get_batch_definition(BATCH_DEFINITION_NAME)
    except (KeyError, LookupError):
        return asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION_NAME)


# --- building the suite -------------------------------------------------------------------------


def _today() -> dt.datetime:
    today = dt.datetime.now(dt.timezone.utc).date()
    return dt.datetime(today.year, today.month, today.day)


def _datetime_bound(value: Any, column: pd.Series) -> Any:
    """A date/datetime bound as a datetime comparable with the column (tz-aware or naive)."""
    import pandas as pd

    if value is TODAY:
        value = _today()
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, dt.datetime):
        return value
    tz = getattr(column.dtype, "tz", None)
    if tz is not None and value.tzinfo is None:
        return pd.Timestamp(value).tz_localize(tz).to_pydatetime()
    if tz is None and value.tzinfo is not None:
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def _has_datetime_bound(spec: ExpectationSpec) -> bool:
    return any(
        spec.kwargs.get(name) is TODAY or isinstance(spec.kwargs.get(name), dt.date)
        for name in ("min_value", "max_value")
    )


def _prepare_frame(frame: pd.DataFrame, specs: Sequence[ExpectationSpec]) -> pd.DataFrame:
    """The columns the specs read, with date columns ready for datetime bounds.

    GX compares a datetime column with bounds in a vectorised way only for tz-aware or
    nanosecond columns; a DuckDB DATE arrives as naive ``datetime64[us]`` and would go through a
    Python loop (about 4 s per million rows). Such columns are localised to UTC (no copy of the
    caller's frame; the bounds are localised the same way). Object columns of dates are parsed.
    """
    import pandas as pd

    frame = frame[list(required_columns(specs))]
    converted: dict[str, pd.Series] = {}
    for spec in specs:
        column = spec.kwargs.get("column")
        if not column or column in converted or not _has_datetime_bound(spec):
            continue
        series = frame[column]
        if not pd.api.types.is_datetime64_any_dtype(series.dtype):
            series = pd.to_datetime(series, errors="coerce")
        if getattr(series.dtype, "tz", None) is None:
            series = series.dt.tz_localize("UTC")
        converted[column] = series
    return frame.assign(**converted) if converted else frame


def _gx_kwargs(spec: ExpectationSpec, frame: pd.DataFrame) -> dict[str, Any]:
    kwargs = copy.deepcopy(dict(spec.kwargs))
    for name in ("min_value", "max_value"):
        if name in kwargs and (kwargs[name] is TODAY or isinstance(kwargs[name], dt.date)):
            kwargs[name] = _datetime_bound(kwargs[name], frame[kwargs["column"]])
    condition = kwargs.get("row_condition")
    if isinstance(condition, WhereNull):
        from great_expectations.expectations.row_conditions import Column

        kwargs["row_condition"] = Column(condition.column).is_null()
    return kwargs


def build_suite(table: str, specs: Sequence[ExpectationSpec], frame: pd.DataFrame) -> Any:
    """The GX ``ExpectationSuite`` for ``specs`` (bounds resolved against ``frame``'s dtypes).

    The expectations are handed to the constructor rather than ``add_expectation``: the latter
    looks the suite up in the *current* context's store (and saves to it when a suite of that
    name exists there, e.g. after Data Docs opened the file context). A suite built this way
    belongs to no store and is only ever validated.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    expectations = []
    for spec in specs:
        expectation_class = getattr(gxe, spec.gx_type, None)
        if expectation_class is None:
            raise QualityError(f"{table}.{spec.key}: unknown GX expectation {spec.gx_type!r}")
        expectations.append(
            expectation_class(
                **_gx_kwargs(spec, frame),
                severity=spec.severity,
                meta={SPEC_KEY_META: spec.key},
                notes=spec.description,
            )
        )
    return gx.ExpectationSuite(name=suite_name(table), expectations=expectations)


# --- validating -----------------------------------------------------------------------------------


def _check_columns(table: str, frame: pd.DataFrame, specs: Sequence[ExpectationSpec]) -> None:
    present = set(frame.columns)
    missing: dict[str, list[str]] = {}
    for spec in specs:
        for column in spec.columns:
            if column not in present:
                missing.setdefault(column, []).append(spec.key)
    if missing:
        raise MissingColumnsError(table, missing)


def validate_frame(
    table: str,
    frame: pd.DataFrame,
    suite: Sequence[ExpectationSpec] | None = None,
    run_name: str | None = None,
) -> SuiteResult:
    """Validate ``frame`` (the rows of ``staging.<table>``) against the table's suite.

    Args:
        table: ``contacts``, ``orders``, ``email_events`` or ``web_events``.
        frame: the table's rows; only the columns the specs read are needed.
        suite: specs to run instead of ``SUITES[table]`` (e.g. a subset); keys must be unique.
        run_name: recorded in the GX result's ``run_id`` (Data Docs groups by it); default
            ``<table>-<UTC timestamp>``.

    Raises:
        QualityError: unknown table or unknown GX expectation type.
        MissingColumnsError: the frame lacks a column an expectation reads (names them all).
    """
    from great_expectations.core.run_identifier import RunIdentifier

    specs = tuple(suite) if suite is not None else suite_specs(table)
    keys = [spec.key for spec in specs]
    if len(set(keys)) != len(keys):
        raise QualityError(f"{table}: check keys must be unique, got {keys}")
    _check_columns(table, frame, specs)
    frame = _prepare_frame(frame, specs)

    evaluated_at = dt.datetime.now(dt.timezone.utc)
    with _lock:
        batch_definition = _batch_definition(table)
        gx_suite = build_suite(table, specs, frame)
        batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
        with warnings.catch_warnings():
            # GX's column-pair metric reads tz-aware columns through Series.values (UTC values,
            # so the comparison is right); pandas 3.1 warns about it on every run.
            warnings.filterwarnings("ignore", message="Series.values returning an ndarray that drops timezone")
            gx_result = batch.validate(gx_suite, result_format=copy.deepcopy(RESULT_FORMAT))

    redact_result(gx_result)
    run_id = RunIdentifier(
        run_name=run_name or f"{table}-{evaluated_at.strftime('%Y%m%dT%H%M%S.%fZ')}",
        run_time=evaluated_at,
    )
    gx_result.meta["run_id"] = run_id
    gx_result.meta["validation_time"] = evaluated_at
    gx_result.meta["table"] = table
    # Data Docs reads the asset name from here (GX's fluent batches do not set it).
    batch_spec = gx_result.meta.get("batch_spec")
    if isinstance(batch_spec, dict):
        batch_spec["data_asset_name"] = staging_table(table).full_name

    pairs = _match_results(table, specs, gx_suite, gx_result.results)
    outcomes = tuple(_outcome(spec, result) for spec, result in pairs)
    return SuiteResult(
        table=table,
        success=all(outcome.success for outcome in outcomes),
        critical_success=all(outcome.success for outcome in outcomes if outcome.severity == CRITICAL),
        outcomes=outcomes,
        evaluated_at=evaluated_at,
        gx_result=gx_result,
    )


def _canonical(value: Any) -> Any:
    """A comparable form of GX kwargs (lists and tuples alike, mappings sorted, objects as JSON-ish)."""
    if hasattr(value, "dict") and callable(value.dict):  # pydantic models such as row conditions
        value = value.dict()
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _canonical(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_canonical(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return tuple(sorted(repr(_canonical(v)) for v in value))
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return repr(value)


def _signature(configuration: Any) -> tuple:
    """Expectation type + kwargs (without the batch id GX adds) of an expectation configuration."""
    kwargs = {k: v for k, v in dict(configuration.kwargs).items() if k not in ("batch_id", "result_format")}
    return (configuration.type, _canonical(kwargs))


def _match_results(
    table: str, specs: Sequence[ExpectationSpec], gx_suite: Any, results: Sequence[Any]
) -> list[tuple[ExpectationSpec, Any]]:
    """Pair each spec with its GX result (GX does not keep suite order).

    A result is matched by the spec key that its expectation carries in ``meta`` (the types must
    agree), or else by expectation type + kwargs against the expectation built for the spec.
    """
    by_key: dict[str, Any] = {}
    by_signature: dict[tuple, list[Any]] = {}
    for result in results:
        key = (result.expectation_config.meta or {}).get(SPEC_KEY_META)
        if key is not None and key not in by_key:
            by_key[key] = result
        else:
            by_signature.setdefault(_signature(result.expectation_config), []).append(result)
    pairs = []
    for spec, expectation in zip(specs, gx_suite.expectations, strict=True):
        configuration = expectation.configuration
        result = by_key.pop(spec.key, None)
        if result is not None and result.expectation_config.type != configuration.type:
            raise QualityError(
                f"{table}.{spec.key}: GX result is for {result.expectation_config.type}, not {configuration.type}"
            )
        if result is None:
            candidates = by_signature.get(_signature(configuration)) or []
            result = candidates.pop(0) if candidates else None
        if result is None:
            raise QualityError(f"{table}.{spec.key}: GX returned no result for this expectation")
        pairs.append((spec, result))
    return pairs


def _number(value: Any) -> int | float | None:
    """``value`` as a plain int/float when it is a (non-boolean, non-NaN) number, else None."""
    if value is None or _is_bool(value):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, (numbers.Real, decimal.Decimal)):
        number = float(value)
        return None if math.isnan(number) else number
    return None


_NOT_SHOWN = "(not shown)"


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"


def _observed_text(value: Any) -> str | None:
    """GX's observed value as short text, only when it cannot be a row value (numbers, booleans)."""
    if value is None:
        return None
    if _is_bool(value):
        return str(bool(value)).lower()
    number = _number(value)
    if number is not None:
        return f"{number:g}" if isinstance(number, float) else str(number)
    if isinstance(value, str) and value.endswith(_NOT_SHOWN):
        return value
    if isinstance(value, (list, tuple, set, dict)):
        return f"{type(value).__name__} of {len(value)} {_NOT_SHOWN}"
    return f"{type(value).__name__} {_NOT_SHOWN}"


def _outcome(spec: ExpectationSpec, result: Any) -> ExpectationOutcome:
    details = result.result or {}
    unexpected_count = details.get("unexpected_count")
    element_count = details.get("element_count")
    unexpected_percent = details.get("unexpected_percent")
    observed = _observed_text(details.get("observed_value"))
    error = _exception_summary(result.exception_info)
    if error is not None:
        observed = f"error: {error}"
    return ExpectationOutcome(
        key=spec.key,
        gx_type=spec.gx_type,
        column=spec.kwargs.get("column"),
        severity=spec.severity,
        success=bool(result.success) and error is None,
        unexpected_count=int(unexpected_count) if unexpected_count is not None else None,
        element_count=int(element_count) if element_count is not None else None,
        unexpected_percent=float(unexpected_percent) if unexpected_percent is not None else None,
        observed_value=observed,
    )


def _exception_entries(info: Any) -> list[Any]:
    """The exception records in a result's ``exception_info``.

    GX 1.x uses two shapes: one record (``raised_exception``, ``exception_message``,
    ``exception_traceback``) or, when a metric failed, ``{metric id: record}``.
    """
    if not isinstance(info, Mapping):
        return []
    if "raised_exception" in info:
        return [info]
    return [value for value in info.values() if isinstance(value, Mapping) and "raised_exception" in value]


def _exception_type(entry: Mapping[str, Any]) -> str:
    traceback_text = entry.get("exception_traceback") or ""
    for line in reversed(traceback_text.strip().splitlines()):
        head = line.split(":", 1)[0].strip()
        if head and " " not in head and head[0].isalpha() and not line.startswith(" "):
            return head.rsplit(".", 1)[-1]
    return "exception"


def _exception_summary(info: Any) -> str | None:
    """The exception type(s) an expectation raised, or None if it raised nothing."""
    types = []
    for entry in _exception_entries(info):
        if entry.get("raised_exception"):
            message = str(entry.get("exception_message") or "")
            redacted = message.endswith(_REDACTED_SUFFIX)
            types.append(message[: -len(_REDACTED_SUFFIX)] if redacted else _exception_type(entry))
    return ", ".join(dict.fromkeys(types)) or None


_REDACTED_SUFFIX = " (details in the pipeline log)"


def redact_result(gx_result: Any) -> Any:
    """Remove everything that can hold row values from a GX suite result, in place.

    Drops the ``partial_unexpected_*`` / ``unexpected_*`` lists and row samples, non-numeric
    observed values (replaced by a note like ``list of 3 (not shown)``), and exception messages
    and tracebacks (they may quote a value): the message becomes the exception type, and the full
    traceback goes to this module's logger (local logs, not reports). Idempotent.
    """
    for result in getattr(gx_result, "results", None) or ():
        details = result.result
        if isinstance(details, dict):
            for name in VALUE_BEARING_RESULT_FIELDS:
                details.pop(name, None)
            observed = details.get("observed_value")
            if observed is not None and _number(observed) is None and not _is_bool(observed):
                details["observed_value"] = _observed_text(observed)
        for entry in _exception_entries(result.exception_info):
            if not entry.get("raised_exception"):
                continue
            message = str(entry.get("exception_message") or "")
            if message.endswith(_REDACTED_SUFFIX):
                continue
            kind = _exception_type(entry)
            # The exception's message and traceback can quote the offending row value: name the
            # check and the exception type only (private by default).
            logger.warning(
                "quality check %s raised %s",
                (result.expectation_config.meta or {}).get(SPEC_KEY_META, result.expectation_config.type),
                kind,
            )
            entry["exception_message"] = kind + _REDACTED_SUFFIX
            entry["exception_traceback"] = None
    return gx_result
