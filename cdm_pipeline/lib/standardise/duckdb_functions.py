"""The standardisers as DuckDB SQL functions, for staging models written in SQL.

``register_standardisers(conn)`` adds ``cdm_email(raw)``, ``cdm_phone(raw, region)``,
``cdm_name(raw)``, ``cdm_postcode(raw, country)`` and ``cdm_country(raw)``, each returning
``STRUCT(value VARCHAR, issue VARCHAR)`` exactly like the Python function::

    SELECT cdm_email(email).value AS email, cdm_email(email).issue AS email_issue FROM raw.x

They are vectorised Arrow UDFs: DuckDB hands over a batch of 2,048 values, each *distinct*
value (or argument pair) of the batch is standardised once, and results are remembered across
batches in a bounded cache per function (oldest entries evicted first). Customer columns repeat
a lot (countries, first names, cities, the same person in several sources), so the Python work
grows with the number of distinct values rather than with rows.

``null_handling="special"`` makes NULLs reach the function: with DuckDB's default a NULL region
or country would make the whole result NULL instead of standardising the number without a
region, and a NULL input returns the same ``{value: NULL, issue: NULL}`` struct as in Python.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import duckdb
import numpy as np
import pyarrow as pa

from . import ISSUE_CODES, Standardised, _Memo
from .countries import standardise_country
from .emails import standardise_email
from .names import standardise_name
from .phones import standardise_phone
from .postcodes import standardise_postcode

# Distinct inputs remembered per function: 100-200 bytes each, so up to ~200 MB per function.
CACHE_SIZE = 1 << 20

RESULT_TYPE = pa.struct([("value", pa.string()), ("issue", pa.string())])
_SQL_RESULT = "STRUCT(value VARCHAR, issue VARCHAR)"

_STANDARDISERS: dict[str, tuple[Callable[..., Standardised], list[str]]] = {
    "cdm_email": (standardise_email, ["VARCHAR"]),
    "cdm_phone": (standardise_phone, ["VARCHAR", "VARCHAR"]),
    "cdm_name": (standardise_name, ["VARCHAR"]),
    "cdm_postcode": (standardise_postcode, ["VARCHAR", "VARCHAR"]),
    "cdm_country": (standardise_country, ["VARCHAR"]),
}

# Results are cached as one untracked scalar (see _Memo): the clean value (str), None for a blank
# input, or the issue's index in ISSUE_CODES (int) when the value is the raw input, kept as is.
_MEMOS = {name: _Memo(CACHE_SIZE) for name in _STANDARDISERS}
_ISSUE_INDEX = {code: i for i, code in enumerate(ISSUE_CODES)}


def _pair_key(raw: str, context: str | None) -> str:
    # Control characters that no real value contains join the two arguments into one string key
    # (a string, unlike a tuple, keeps the cache invisible to the garbage collector).
    return f"{raw}\x1e" if context is None else f"{raw}\x1f{context}"


def clear_caches() -> None:
    """Forget all remembered results (frees memory after a large load)."""
    for memo in _MEMOS.values():
        memo.clear()


def _encode(column: pa.ChunkedArray | pa.Array) -> pa.DictionaryArray:
    """Distinct values of a batch (NULL counts as one) and each row's index into them."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not pa.types.is_string(column.type):
        column = column.cast(pa.string())  # e.g. string_view or large_string
    return column.dictionary_encode(null_encoding="encode")


def _standardise_distinct(name: str, keys: list, args: list[tuple]) -> pa.StructArray:
    """One result struct per distinct input, from the cache or computed (and then cached)."""
    standardise = _STANDARDISERS[name][0]
    memo = _MEMOS[name]
    lookup, missing = memo.data.get, memo  # the memo itself marks "not cached"
    values: list[str | None] = []
    issues: list[str | None] = []
    for key, arguments in zip(keys, args, strict=True):
        cached = lookup(key, missing) if key is not None else missing
        if cached is missing:
            value, issue = standardise(*arguments)
            if key is not None:
                if issue is not None:
                    memo.put(key, _ISSUE_INDEX[issue])
                else:  # an already clean value shares the key's string: half the memory
                    memo.put(key, key if value == key else value)
        elif cached.__class__ is int:
            value, issue = arguments[0], ISSUE_CODES[cached]
        else:
            value, issue = cached, None
        values.append(value)
        issues.append(issue)
    return pa.StructArray.from_arrays(
        [pa.array(values, pa.string()), pa.array(issues, pa.string())], fields=list(RESULT_TYPE)
    )


def _one_argument_udf(name: str) -> Callable[[pa.ChunkedArray], pa.StructArray]:
    def udf(raw: pa.ChunkedArray) -> pa.StructArray:
        encoded = _encode(raw)
        distinct = encoded.dictionary.to_pylist()
        results = _standardise_distinct(name, distinct, [(v,) for v in distinct])
        return results.take(encoded.indices)

    udf.__name__ = name
    return udf


def _two_argument_udf(name: str) -> Callable[[pa.ChunkedArray, pa.ChunkedArray], pa.StructArray]:
    def udf(raw: pa.ChunkedArray, context: pa.ChunkedArray) -> pa.StructArray:
        first, second = _encode(raw), _encode(context)
        width = max(len(second.dictionary), 1)
        # Each row's (raw, context) pair as one integer, then the distinct pairs of the batch.
        pair = first.indices.to_numpy().astype(np.int64) * width + second.indices.to_numpy()
        distinct, row_to_distinct = np.unique(pair, return_inverse=True)
        raws, contexts = first.dictionary.to_pylist(), second.dictionary.to_pylist()
        args = [(raws[p // width], contexts[p % width]) for p in distinct.tolist()]
        # NULL raw values are not cached (they are BLANK whatever the context).
        keys = [None if r is None else _pair_key(r, c) for r, c in args]
        results = _standardise_distinct(name, keys, args)
        return results.take(pa.array(row_to_distinct.ravel()))

    udf.__name__ = name
    return udf


# Connections that have the functions already: registering again is then a no-op, which also
# works while the connection holds a half-fetched result (DuckDB 2 refuses catalogue changes then).
_REGISTERED: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()


def register_standardisers(conn: duckdb.DuckDBPyConnection) -> None:
    """Register ``cdm_email``, ``cdm_phone``, ``cdm_name``, ``cdm_postcode`` and ``cdm_country``.

    Safe to call again on the same connection (nothing happens) and on a cursor of a connection
    that has them (DuckDB shares Python functions across the connections of one database).
    Register on the long-lived connection that runs the staging SQL: DuckDB ties a Python
    function to the connection that created it, and a function created on a short-lived cursor
    must not be used after that cursor is closed.

    Args:
        conn: The DuckDB connection that runs the staging SQL.
    """
    if conn in _REGISTERED:
        return
    # DuckDB 2.0 refuses to change functions while a result is half read (a caller's fetchone());
    # running a statement of our own closes that result.
    conn.execute("SELECT 1").fetchall()
    for name, (_, parameters) in _STANDARDISERS.items():
        try:
            conn.remove_function(name)  # registered before by an earlier copy of this module
        except duckdb.InvalidInputException:
            pass  # not registered on this connection yet
        udf = _one_argument_udf(name) if len(parameters) == 1 else _two_argument_udf(name)
        try:
            conn.create_function(
                name,
                udf,
                parameters,
                _SQL_RESULT,
                type="arrow",
                null_handling="special",
                side_effects=False,
            )
        except duckdb.CatalogException:
            pass  # another connection to the same database has registered it: usable here too
    _REGISTERED.add(conn)
