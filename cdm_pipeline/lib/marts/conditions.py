"""Custom segment conditions: the ``where`` text of a segment, compiled to safe DuckDB SQL.

Why a parser: ``where`` comes from the YAML config, which is untrusted text, so it is never
pasted into SQL. A small tokenizer and recursive-descent parser accept only the grammar below;
columns must be known (``CONDITION_COLUMNS`` by default) and are emitted as quoted identifiers,
and every literal is bound as a named DuckDB parameter (``$p_0``, ``$p_1``, ...). Types are
checked at compile time, so a config mistake fails at load time with a message and a position.

Grammar (keywords case-insensitive, column names lower case and matched exactly)::

    expr     := and_expr ("or" and_expr)*
    and_expr := not_expr ("and" not_expr)*
    not_expr := "not" not_expr | primary
    primary  := "(" expr ")" | operand cmp operand | operand "is" ["not"] "null"
              | operand ["not"] "in" "(" literal ("," literal)* ")"
              | operand ["not"] "between" literal "and" literal
              | operand ["not"] "like" string | column "contains" literal | column
    operand  := column | literal
    literal  := number | 'string' | true | false | date 'YYYY-MM-DD'

NULL semantics: **a condition on a missing value is false, also under not.** ``country = 'GB'``
and ``not (country = 'GB')`` both leave out a customer whose country is NULL; a bare boolean
column means "is true" and ``not flag`` means "is false". Only ``is null`` / ``is not null``
look at missingness itself. To get this, ``not`` is pushed down to the leaves (De Morgan) and
each leaf predicate ``P`` becomes ``coalesce((P), false)`` or ``coalesce((NOT (P)), false)``, so
no NULL ever reaches a ``NOT``; the whole expression is wrapped in ``coalesce(..., false)`` too.

Dates: a timestamp column compared with a date is compared by its day (``CAST(col AS DATE)``),
so ``last_seen_at = '2024-01-31'`` and ``between '2024-01-01' and '2024-01-31'`` cover whole days.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from cdm_pipeline.lib.marts.vocabulary import CONDITION_COLUMNS, ColumnType
from cdm_pipeline.lib.warehouse import quote_ident

MAX_LENGTH = 2000
MAX_DEPTH = 50
KEYWORDS = frozenset("and or not is null in between like contains true false date".split())
_OPERATORS = {"=": "=", "==": "=", "!=": "<>", "<>": "<>", "<": "<", "<=": "<=", ">": ">",
              ">=": ">="}
_TOKEN = re.compile(
    r"(?P<space>\s+)|(?P<number>-?[0-9]+(?:\.[0-9]+)?(?![\w.]))|(?P<bad_number>-?[0-9][\w.]*)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<string>'(?:[^']|'')*')"
    r"|(?P<op>==|!=|<>|<=|>=|=|<|>)|(?P<punct>[(),])"
)
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TEMPORAL = ("date", "timestamp")
# Which literal kinds a column of each type can be compared with.
_ACCEPTS = {"number": ("number",), "text": ("string",), "boolean": ("boolean",),
            "date": ("date", "string"), "timestamp": ("date", "string")}
# How messages name each type, and how to use a column of that type in a condition.
_TYPES = {"number": ("a number", "{c} > 0"), "text": ("text", "{c} = 'x'"),
          "boolean": ("a boolean", "{c}"), "date": ("a date", "{c} >= date '2024-01-01'"),
          "timestamp": ("a timestamp", "{c} >= date '2024-01-01'"),
          "text_list": ("a list of text", "{c} contains 'x'")}


class ConditionError(ValueError):
    """A ``where`` text that is not a valid condition; the message says what and where."""


@dataclass(frozen=True)
class CompiledCondition:
    """A condition as SQL plus the parameters it binds.

    Attributes:
        sql: A boolean SQL expression in which NULL counts as false: ``coalesce((...), false)``.
        params: Named parameter values, keys without the ``$``.
        columns: The columns the condition uses.
    """

    sql: str
    params: dict[str, object]
    columns: frozenset[str]


class _Token(NamedTuple):
    """kind: number string boolean date ident column kw op ( ) , end; pos is 1-based."""

    kind: str
    text: str
    pos: int
    value: object = None  # a literal's Python value; a column's type


def _fail(message: str, tok: _Token, rest: str = "") -> ConditionError:
    """``"<message> at position <n><rest>"``, the position being where ``tok`` starts."""
    return ConditionError(f"{message} at position {tok.pos}{rest}")


def _type_name(ctype: object) -> str:
    return _TYPES[ctype][0] if ctype in _TYPES else str(ctype)


def _describe(tok: _Token) -> str:
    return "end of condition" if tok.kind == "end" else f"'{tok.text}'"


def _tokenize(text: str) -> list[_Token]:
    """Split ``text`` into tokens; anything outside the grammar's alphabet is an error."""
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        m, here = _TOKEN.match(text, i), _Token("?", text[i], i + 1)
        if m is None and text[i] == "'":
            raise _fail("unterminated string starting", here)
        if m is None and text[i] == '"':
            raise _fail("double quotes", here, ": write columns bare, strings in 'single quotes'")
        if m is None:
            raise _fail(f"unexpected character '{text[i]}'", here)
        if m.lastgroup == "bad_number":
            raise _fail(f"malformed number '{m[0]}'", here)
        kind, raw = m.lastgroup or "", m[0]
        if kind == "number":
            tokens.append(_Token(kind, raw, i + 1, _number(raw, here)))
        elif kind == "string":
            tokens.append(_Token(kind, raw, i + 1, raw[1:-1].replace("''", "'")))
        elif kind == "word" and raw.lower() in KEYWORDS:
            tokens.append(_Token("kw", raw.lower(), i + 1))
        elif kind == "word":
            tokens.append(_Token("ident", raw, i + 1))
        elif kind != "space":
            tokens.append(_Token("op" if kind == "op" else raw, raw, i + 1))
        i = m.end()
    return [*tokens, _Token("end", "", len(text) + 1)]


def _number(raw: str, tok: _Token) -> int | float:
    value = float(raw) if "." in raw else int(raw)
    if not math.isfinite(value) or abs(value) >= 2**63:
        raise _fail(f"number '{raw}' is too large", tok)
    return value


def _parse_date(tok: _Token) -> dt.date:
    text = str(tok.value)
    try:
        if _ISO_DATE.fullmatch(text):
            return dt.date.fromisoformat(text)
    except ValueError:
        pass
    raise _fail(f"'{text}' is not a date (expected 'YYYY-MM-DD')", tok)


def _check_depth(depth: int, tok: _Token) -> None:
    if depth > MAX_DEPTH:
        raise _fail(f"condition nests deeper than {MAX_DEPTH} levels", tok)


def _join(parts: list[str], op: str) -> str:
    return parts[0] if len(parts) == 1 else "(" + f" {op} ".join(parts) + ")"


def _leaf(predicate: str, neg: bool) -> str:
    return f"coalesce((NOT ({predicate})), false)" if neg else f"coalesce(({predicate}), false)"


class _Parser:
    """Recursive descent over the tokens. ``neg`` says whether the current subtree is negated:
    negation is pushed to the leaves, swapping AND and OR on the way (De Morgan)."""

    def __init__(self, text: str, columns: Mapping[str, ColumnType], prefix: str,
                 alias: str | None) -> None:
        self.tokens, self.i = _tokenize(text), 0
        self.columns, self.prefix = columns, prefix
        self.alias = "" if alias is None else quote_ident(alias) + "."
        self.params: dict[str, object] = {}
        self.used: set[str] = set()

    def advance(self) -> _Token:
        tok = self.tokens[self.i]
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return tok

    def accept(self, kind: str, text: str | None = None) -> _Token | None:
        tok = self.tokens[self.i]
        return self.advance() if tok.kind == kind and text in (None, tok.text) else None

    def expect(self, kind: str, text: str, what: str) -> _Token:
        tok = self.accept(kind, text)
        if tok is None:
            found = self.tokens[self.i]
            raise _fail(f"expected {what}, found {_describe(found)}", found)
        return tok

    def parse(self) -> str:
        if self.tokens[0].kind == "end":
            raise ConditionError("condition is empty")
        sql, tok = self.expr(False, 0), self.tokens[self.i]
        if tok.kind == ")":
            raise _fail("unbalanced ')'", tok)
        if tok.kind != "end":
            raise _fail(f"unexpected {_describe(tok)}", tok)
        return sql

    def expr(self, neg: bool, depth: int) -> str:
        parts = [self.and_expr(neg, depth)]
        while self.accept("kw", "or"):
            parts.append(self.and_expr(neg, depth))
        return _join(parts, "AND" if neg else "OR")

    def and_expr(self, neg: bool, depth: int) -> str:
        parts = [self.not_expr(neg, depth)]
        while self.accept("kw", "and"):
            parts.append(self.not_expr(neg, depth))
        return _join(parts, "OR" if neg else "AND")

    def not_expr(self, neg: bool, depth: int) -> str:
        tok = self.accept("kw", "not")
        if tok is None:
            return self.primary(neg, depth)
        _check_depth(depth + 1, tok)
        return self.not_expr(not neg, depth + 1)

    def primary(self, neg: bool, depth: int) -> str:
        opening = self.accept("(", "(")
        if opening is not None:
            _check_depth(depth + 1, opening)
            sql = self.expr(neg, depth + 1)
            self.expect(")", ")", f"')' to close '(' at position {opening.pos}")
            return sql
        left = self.operand()
        tok = self.tokens[self.i]
        if tok.kind == "op":
            return _leaf(self.comparison(left), neg)
        if self.accept("kw", "is"):
            negated = self.accept("kw", "not") is not None
            self.expect("kw", "null", "'null' after 'is'")
            column = self.sql(self.need_column(left, tok))
            return f"({column} IS {'NOT ' if negated != neg else ''}NULL)"
        negated = self.accept("kw", "not") is not None
        keyword = self.tokens[self.i]
        if keyword.kind == "kw" and keyword.text in ("in", "between", "like", "contains"):
            if negated and keyword.text == "contains":
                raise _fail("'not contains'", tok, ": write 'not (column contains ...)'")
            column, _ = self.need_column(left, keyword), self.advance()
            method = getattr(self, f"pred_{keyword.text}")
            return _leaf(method(column, keyword, "NOT " if negated else ""), neg)
        if negated:
            raise _fail("expected 'in', 'between' or 'like' after 'not'", keyword)
        return self.bare(left, neg)

    def operand(self) -> _Token:
        """A column (kind "column", value its type) or a literal."""
        if self.tokens[self.i].kind == "ident":
            return self.column(self.advance())
        return self.literal("a column or value")

    def literal(self, what: str = "a value") -> _Token:
        """A number, string, boolean or date literal; ``value`` holds its Python value."""
        tok = self.advance()
        if tok.kind in ("number", "string"):
            return tok
        if tok.kind == "kw" and tok.text in ("true", "false"):
            return _Token("boolean", tok.text, tok.pos, tok.text == "true")
        if tok.kind == "kw" and tok.text == "date":
            text = self.accept("string")
            if text is None:
                raise _fail("expected 'YYYY-MM-DD' after date", self.tokens[self.i])
            return _Token("date", f"date {text.text}", tok.pos, _parse_date(text))
        if tok.kind == "kw" and tok.text == "null":
            raise _fail("null", tok, ": null can only follow 'is' (use 'is null' or 'is not null')")
        raise _fail(f"expected {what}, found {_describe(tok)}", tok)

    def column(self, tok: _Token) -> _Token:
        ctype = self.columns.get(tok.text)
        if ctype is None:
            close = difflib.get_close_matches(tok.text.lower(), list(self.columns), n=1)
            raise _fail(f"unknown column '{tok.text}'", tok,
                        f" (did you mean '{close[0]}'?)" if close else "")
        self.used.add(tok.text)
        return _Token("column", tok.text, tok.pos, ctype)

    def sql(self, column: _Token, by_day: bool = False) -> str:
        """The column as SQL; ``by_day`` compares a timestamp column by its date."""
        quoted = self.alias + quote_ident(column.text)
        return f"CAST({quoted} AS DATE)" if by_day and column.value == "timestamp" else quoted

    def need_column(self, side: _Token, at: _Token) -> _Token:
        if side.kind != "column":
            raise _fail(f"{_describe(at)}", at, f" needs a column on its left, not '{side.text}'")
        return side

    def usable(self, column: _Token, at: _Token, ordering: bool) -> None:
        """Reject list columns outside contains / is null, and ordering booleans."""
        if column.value == "text_list":
            raise _fail(f"{_describe(at)}", at, f": '{column.text}' is a list of text; use"
                        " contains or is null")
        if ordering and column.value == "boolean":
            raise _fail(f"{_describe(at)}", at, f": '{column.text}' is a boolean and has no"
                        " order; use = true or = false")

    def bind(self, ctype: str, name: str, lit: _Token) -> str:
        """Type-check ``lit`` against column ``name`` of type ``ctype``; bind it as a parameter."""
        if lit.kind not in _ACCEPTS.get(ctype, ()):
            raise _fail(f"'{name}' is {_type_name(ctype)} and cannot be compared"
                        f" with {lit.text}", lit)
        key = f"{self.prefix}_{len(self.params)}"
        temporal_text = lit.kind == "string" and ctype in _TEMPORAL
        self.params[key] = _parse_date(lit) if temporal_text else lit.value
        return "$" + key

    def comparison(self, left: _Token) -> str:
        op, right = self.advance(), self.operand()
        cols = [side for side in (left, right) if side.kind == "column"]
        if not cols:
            raise _fail("comparison", op, " needs a column on at least one side")
        for column in cols:
            self.usable(column, op, _OPERATORS[op.text] in ("<", "<=", ">", ">="))
        types = {column.value for column in cols}
        if len(cols) == 2 and len(types) > 1 and not types <= set(_TEMPORAL):
            raise _fail(f"cannot compare '{left.text}' ({left.value}) with '{right.text}'"
                        f" ({right.value})", op)
        by_day = len(cols) == 1 or "date" in types
        sides = [self.sql(side, by_day) if side.kind == "column"
                 else self.bind(cols[0].value, cols[0].text, side) for side in (left, right)]
        return f"{sides[0]} {_OPERATORS[op.text]} {sides[1]}"

    def pred_in(self, column: _Token, keyword: _Token, not_: str) -> str:
        self.usable(column, keyword, False)
        self.expect("(", "(", "'(' after 'in'")
        values = [self.bind(column.value, column.text, self.literal())]
        while self.accept(",", ","):
            values.append(self.bind(column.value, column.text, self.literal()))
        self.expect(")", ")", "',' or ')' in the 'in' list")
        return f"{self.sql(column, True)} {not_}IN ({', '.join(values)})"

    def pred_between(self, column: _Token, keyword: _Token, not_: str) -> str:
        self.usable(column, keyword, True)
        low = self.bind(column.value, column.text, self.literal())
        self.expect("kw", "and", "'and' in 'between ... and ...'")
        high = self.bind(column.value, column.text, self.literal())
        return f"{self.sql(column, True)} {not_}BETWEEN {low} AND {high}"

    def pred_like(self, column: _Token, keyword: _Token, not_: str) -> str:
        if column.value != "text":
            raise _fail("'like'", keyword, f" needs a text column; '{column.text}' is"
                        f" {_type_name(column.value)}")
        pattern = self.literal()
        if pattern.kind != "string":
            raise _fail(f"like needs a 'quoted pattern', not {pattern.text}", pattern)
        bound = self.bind("text", column.text, pattern)
        return f"{self.sql(column)} {not_}LIKE {bound}"

    def pred_contains(self, column: _Token, keyword: _Token, not_: str) -> str:
        if column.value != "text_list":
            raise _fail("'contains'", keyword, f" needs a list column; '{column.text}' is"
                        f" {_type_name(column.value)} (for text use like)")
        value = self.bind("text", column.text, self.literal())
        return f"list_contains({self.sql(column)}, {value})"

    def bare(self, side: _Token, neg: bool) -> str:
        """A bare column as a condition: only booleans, meaning "is true" ("is false" negated)."""
        if side.kind != "column":
            raise _fail(f"a value alone is not a condition: {side.text}", side)
        if side.value != "boolean":
            example = _TYPES.get(str(side.value), ("", "{c} = ..."))[1].format(c=side.text)
            raise _fail(f"'{side.text}'", side, f" is {_type_name(side.value)}; compare it,"
                        f" e.g. {example}")
        return f"({self.sql(side)} IS {'FALSE' if neg else 'TRUE'})"


def compile_condition(text: str, columns: Mapping[str, ColumnType] = CONDITION_COLUMNS,
                      param_prefix: str = "p", table_alias: str | None = None
                      ) -> CompiledCondition:
    """Compile a segment's ``where`` text to a parameterised boolean SQL expression.

    Args:
        text: The condition, e.g. ``"revenue >= 500 and country = 'GB'"``.
        columns: The columns the condition may name, with their types.
        param_prefix: Parameters are named ``{param_prefix}_{n}`` (``$p_0`` in the SQL), so
            conditions compiled with different prefixes can share one statement.
        table_alias: When given, columns are emitted qualified: ``"alias"."column"``.

    Returns:
        The SQL (NULL counts as false, also under not), its parameters and the columns it uses.

    Raises:
        ConditionError: ``text`` is not a valid condition over ``columns``.
        ValueError: ``param_prefix`` or ``table_alias`` is not a plain lower-case name.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]*", param_prefix):
        raise ValueError(f"param_prefix {param_prefix!r} must match ^[a-z][a-z0-9_]*$")
    if table_alias is not None and not re.fullmatch(r"[a-z_][a-z0-9_]*", table_alias):
        raise ValueError(f"table_alias {table_alias!r} must match ^[a-z_][a-z0-9_]*$")
    if not isinstance(text, str):
        raise ConditionError(f"condition must be text, not {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ConditionError(f"condition is {len(text)} characters long; the limit is {MAX_LENGTH}")
    parser = _Parser(text, columns, param_prefix, table_alias)
    sql = parser.parse()
    return CompiledCondition(f"coalesce(({sql}), false)", parser.params, frozenset(parser.used))
