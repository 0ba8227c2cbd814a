"""How a source's raw rows become records with canonical columns: one SQL expression per column.

Raw keeps every landed value as text (nested JSON objects, lists and Parquet structs as JSON
text). A source's mapping (``columns`` in cdm.yaml, or its preset) says where each canonical
column comes from and how to read it; this module turns that into SQL, in one place, for
staging, the conservation check and ``cdm sources preview`` alike:

* :func:`records_sql` — the source's records for one partition: one raw row each, or a list
  column exploded into one record per element (``explode``), or line-item rows grouped into one
  record per id (``group_rows``);
* :func:`text_sql` — a canonical column's value as trimmed text: a column, a field inside a
  nested column (``path``), a GA4 event parameter (``param``), a constant, a part of the file
  name, a part of a full name; the source's words mapped onto canonical ones (``values``);
* :func:`parsed_sql` — that text as a typed value: dates and times with formats, epochs, offsets
  and the source's time zone; amounts with currency symbols, separators and decimal commas.

Everything is set-based SQL: no value goes through Python.
"""

from __future__ import annotations

import re

from cdm_pipeline.config import CdmConfig, ColumnSpec, SourceConfig
from cdm_pipeline.lib.catalog import raw_table
from cdm_pipeline.lib.warehouse import quote_ident, quote_literal

ITEM = "_cdm_item"  # an exploded list's element, as JSON text
# Free-text columns whose inner runs of whitespace carry no meaning (names are the standardiser's).
COLLAPSE = frozenset({"address_line1", "address_line2", "city", "region", "company", "campaign_name"})
# Surname particles kept with the last name when a full name is split ("Anna van der Berg").
NAME_PARTICLES = (
    "van", "von", "der", "den", "de", "del", "della", "di", "da", "du", "dos", "das", "le", "la",
    "ter", "ten", "bin", "al", "ó", "o", "ní", "nic", "mac",
)
# Ids and numbers that exports "for Excel" prefix with an apostrophe ('7406721040531, '+4411...)
# so that a spreadsheet keeps them as text; the apostrophe is not part of the value.
IDENTIFIERS = frozenset({"contact_id", "subscriber_id", "client_id", "user_id", "linked_id", "phone", "transaction_id"})
# A time followed by a UTC offset or Z: the text says its own zone.
_HAS_OFFSET = r"[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?\s*([zZ]|[+-][0-9]{2}(:?[0-9]{2})?)$"


def clean(expression: str, collapse: bool = False) -> str:
    # Exports pad values and write empty strings for "no value"; neither is information.
    if collapse:
        expression = f"regexp_replace({expression}, '\\s+', ' ', 'g')"
    return f"nullif(trim({expression}), '')"


def source_columns(source: SourceConfig) -> list[str]:
    """The raw columns the mapping reads (the id column first)."""
    return source.mapped_source_columns + source.optional_source_columns


def spec_for(source: SourceConfig, kind: str, canonical: str) -> ColumnSpec | None:
    """Where ``canonical`` of ``staging.<kind>`` comes from in ``source`` (None: nowhere).

    An orders source staged as contacts gives its buyer's details, dated by the order.
    """
    if source.kind != kind and canonical in ("created_at", "updated_at"):
        return source.column_spec("order_date")
    return source.column_spec(canonical)


def records_sql(source: SourceConfig) -> str:
    """The source's records in partition ``$partition``, one row each, raw columns as text.

    Besides the raw columns the mapping reads: ``_source_file``, ``_source_row``,
    ``_partition_date`` and, with ``explode``, ``_cdm_item`` (the element as JSON text).
    """
    raw = raw_table(source.name)
    lineage = "_source_file, _source_row, _partition_date"
    columns = ", ".join(quote_ident(c) for c in source_columns(source))
    rows = f"SELECT {columns}, {lineage} FROM {raw} WHERE _partition_date = $partition"
    if source.group_rows:
        rows = _grouped(source, raw)
    if source.explode:
        listed = quote_ident(source.explode)
        # An element per record; a value that is not a JSON list is one record with no element
        # (quarantined for what it lacks, never dropped unseen); an empty list is no records.
        rows = (
            f"SELECT *, unnest(CASE WHEN {listed} IS NULL THEN []::JSON[]"
            f" WHEN json_valid({listed}) AND json_type({listed}) = 'ARRAY' THEN json_extract({listed}, '$[*]')"
            f" ELSE [NULL::JSON] END)::VARCHAR AS {ITEM} FROM ({rows})"
        )
    parsed = [f"{_params_list(quote_ident(c))} AS {_params_alias(i)}" for i, c in enumerate(param_columns(source))]
    if parsed:
        rows = f"SELECT *, {', '.join(parsed)} FROM ({rows})"
    return rows


def param_columns(source: SourceConfig) -> list[str]:
    """The columns some mapped ``param`` reads: each is parsed once per record."""
    return list(dict.fromkeys(s.column for s in source.mapped.values() if s.param))


def _params_alias(index: int) -> str:
    return f"_cdm_params_{index}"


# GA4's key/value lists, typed values read as text (BigQuery's JSON writes int64 as strings).
_PARAMS_SHAPE = (
    '[{"key": "VARCHAR", "value": {"string_value": "VARCHAR", "int_value": "VARCHAR",'
    ' "double_value": "VARCHAR", "float_value": "VARCHAR"}}]'
)


def _params_list(column: str) -> str:
    """A GA4-style parameter list as [{key, value}], the value as text; NULL if not such a list.

    Parsed once per record: extracting each parameter from the JSON text on its own cost 9 s
    per parameter per 1,000,000 events of 15 parameters; parsing once and filtering the typed
    list costs 8 s for seven.
    """
    typed = "coalesce(p.value.string_value, p.value.int_value, p.value.double_value, p.value.float_value)"
    return (
        f"list_transform(try(from_json({column}, {quote_literal(_PARAMS_SHAPE)})),"
        f" lambda p: {{'key': p.key, 'value': {typed}}})"
    )


def _grouped(source: SourceConfig, raw: str) -> str:
    """Line-item rows sharing a record id as one record: each column's first non-empty value."""
    key = quote_ident(source.id_column)
    # Rows without an id stay records of their own (quarantined as missing_record_id).
    group = f"coalesce(nullif(trim({key}), ''), '\x00' || _source_file || ':' || _source_row)"
    order = "ORDER BY _source_file, _source_row"
    items = [
        f"first({quote_ident(c)} {order}) FILTER (WHERE nullif(trim({quote_ident(c)}), '') IS NOT NULL)"
        f" AS {quote_ident(c)}"
        for c in source_columns(source)
    ]
    return (
        f"SELECT {', '.join(items)}, first(_source_file {order}) AS _source_file,"
        f" min(_source_row) AS _source_row, any_value(_partition_date) AS _partition_date"
        f" FROM {raw} WHERE _partition_date = $partition GROUP BY {group}"
    )


def text_sql(source: SourceConfig, canonical: str, spec: ColumnSpec | None) -> str:
    """A canonical column's value as trimmed text (NULL when unmapped or empty)."""
    if spec is None:
        return "NULL::VARCHAR"
    if spec.value is not None:
        text = f"{quote_literal(spec.value)}::VARCHAR"
    elif spec.from_filename is not None:
        group = 1 if re.compile(spec.from_filename).groups else 0
        file_name = "regexp_extract(_source_file, '[^/\\\\]*$')"
        text = f"regexp_extract({file_name}, {quote_literal(spec.from_filename)}, {group})"
    else:
        text = ITEM if spec.column == source.explode else quote_ident(spec.column)
        if spec.path:
            path = quote_literal(_json_path(spec.path))
            text = f"CASE WHEN json_valid({text}) THEN json_extract_string({text}, {path}) END"
        elif spec.param:
            text = _param(source, spec.column, spec.param)
    text = clean(text, canonical in COLLAPSE)
    if canonical in IDENTIFIERS:
        text = _unquote_spreadsheet(text)
    if spec.name_part:
        text = _name_part(text, spec.name_part)
    if spec.values:
        text = _vocabulary(text, spec.values)
    return text


def _json_path(path: str) -> str:
    """``device.web_info.browser`` as a JSON path with every key quoted."""
    return "$" + "".join('."' + part.replace('"', '\\"') + '"' for part in path.split("."))


def _param(source: SourceConfig, column: str, key: str) -> str:
    """A GA4-style parameter: the value of the element whose key is ``key``, as text.

    GA4 writes ``[{key, value: {string_value, int_value, float_value, double_value}}]``; one of
    the typed values is set. The list is parsed once per record (records_sql).
    """
    parsed = _params_alias(param_columns(source).index(column))
    return f"list_filter({parsed}, lambda p: p.key = {quote_literal(key)})[1].value"


def _name_part(text: str, part: str) -> str:
    """The first or last part of a full name: "Smith, Jane" or "Jane van der Berg"."""
    particles = "|".join(NAME_PARTICLES)
    last = f"((({particles})\\s+)*[^\\s]+)$"
    comma = f"contains({text}, ',')"
    if part == "last":
        return (
            f"CASE WHEN {comma} THEN nullif(trim(split_part({text}, ',', 1)), '')"
            f" WHEN NOT contains({text}, ' ') THEN NULL"
            f" ELSE regexp_extract({text}, '(?i){last}', 1) END"
        )
    return (
        f"CASE WHEN {comma} THEN nullif(trim(substr({text}, strpos({text}, ',') + 1)), '')"
        f" ELSE nullif(trim(regexp_replace({text}, '(?i)\\s+{last}', '')), '') END"
    )


def _vocabulary(text: str, values: dict[str, str | bool | None]) -> str:
    """The source's words replaced by canonical values; words not listed pass unchanged."""
    cases = []
    for word, canonical in values.items():
        if canonical is None:
            target = "NULL"
        elif isinstance(canonical, bool):
            target = "'true'" if canonical else "'false'"
        else:
            target = quote_literal(str(canonical))
        cases.append(f"WHEN {quote_literal(str(word).strip().lower())} THEN {target}")
    return f"CASE lower({text}) {' '.join(cases)} ELSE {text} END"


def parsed_sql(
    text: str, sql_type: str, spec: ColumnSpec | None, source: SourceConfig, config: CdmConfig
) -> str:
    """``text`` as ``sql_type``; NULL where it cannot be read (counted as a parse failure)."""
    fmt = spec.format if spec else None
    if sql_type.startswith("DECIMAL") or sql_type == "DOUBLE":
        cleaned = f"TRY_CAST({_number(text, source.decimal)} AS {sql_type})"
        if source.decimal == ",":  # "1.234" is a thousand there: never cast as it stands
            return cleaned
        # Plain numbers (most values) cast directly; only the rest are cleaned (CASE evaluates
        # its ELSE only for those: 5x faster than cleaning every value).
        direct = f"TRY_CAST({text} AS {sql_type})"
        return f"CASE WHEN {direct} IS NOT NULL THEN {direct} ELSE {cleaned} END"
    if fmt in ("epoch_s", "epoch_ms", "epoch_us"):
        number = f"TRY_CAST({text} AS DOUBLE)"
        seconds = {"epoch_s": number, "epoch_ms": f"{number} / 1e3", "epoch_us": f"{number} / 1e6"}[fmt]
        if fmt == "epoch_us":  # exact to the microsecond, as GA4 writes it
            return f"make_timestamp(TRY_CAST({text} AS BIGINT))::{sql_type}"
        return f"to_timestamp({seconds})::{sql_type}"
    zone = quote_literal(source.timezone or config.timezone)
    if fmt:
        parsed = f"try_strptime({text}, {quote_literal(fmt)})"
        if sql_type == "DATE" or "%z" in fmt or "%Z" in fmt:
            return f"{parsed}::{sql_type}"
        return f"timezone({zone}, {parsed})"
    if sql_type == "DATE":
        return f"TRY_CAST({text} AS DATE)"
    # No format: ISO 8601, with its own offset when it has one, else a local time in the zone.
    # DuckDB reads "05:56:42+0100" but not "05:56:42 +0100" (Shopify): the space goes.
    offset_joined = f"regexp_replace({text}, '\\s+([+-][0-9]{{2}}:?[0-9]{{2}})$', '\\1')"
    if (source.timezone or config.timezone) == "UTC":
        # The session's zone is UTC: a plain cast reads local times and offsets alike, and the
        # regular expression runs only where it fails (4x faster on 5 M ISO timestamps).
        return f"coalesce(TRY_CAST({text} AS TIMESTAMPTZ), TRY_CAST({offset_joined} AS TIMESTAMPTZ))"
    return (
        f"CASE WHEN regexp_matches({text}, {quote_literal(_HAS_OFFSET)}) THEN TRY_CAST({offset_joined} AS TIMESTAMPTZ)"
        f" ELSE timezone({zone}, TRY_CAST({text} AS TIMESTAMP)) END"
    )


def _number(text: str, decimal: str) -> str:
    """An amount as written ("£1,234.50", "1.234,50 €", "GBP 54.90", "(12.00)") as plain digits.

    Currency symbols, codes and spaces go; the thousands mark goes; the decimal mark becomes a
    point; accounting brackets make the number negative. Text that is not a number stays
    unreadable (TRY_CAST gives NULL), it is never guessed.
    """
    thousands, point = (",", ".") if decimal == "." else (".", ",")
    stripped = f"regexp_replace({text}, '[\\s\u00a0]|[A-Za-z]{{3}}|[$£€¥₹]', '', 'g')"
    plain = f"replace(replace({stripped}, {quote_literal(thousands)}, ''), {quote_literal(point)}, '.')"
    return f"CASE WHEN regexp_full_match({plain}, '\\(.*\\)') THEN '-' || trim({plain}, '()') ELSE {plain} END"


def _unquote_spreadsheet(text: str) -> str:
    return (
        f"CASE WHEN starts_with({text}, '''') THEN regexp_replace({text}, '^''([+0-9])', '\\1')"
        f" ELSE {text} END"
    )


def record_id_sql(source: SourceConfig, texts: dict[str, str]) -> str:
    """The record id: the id column's text, or a hash of the ``id_from`` columns' texts."""
    if source.id_column:
        return _unquote_spreadsheet(clean(quote_ident(source.id_column)))
    parts = ", ".join(f"coalesce({texts[c]}, chr(0))" for c in source.id_from)
    return f"md5(concat_ws(chr(31), {parts}))"
