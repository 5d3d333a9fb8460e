"""The subset of OData ``$filter`` (Azure AI Search syntax) that the local index evaluates.

Supported: ``field eq|ne|gt|ge|lt|le 'string'``, ``field eq|ne null``, ``and``, ``or``,
``not``, parentheses, ``search.in(field, 'a,b c')`` (default delimiters: space and comma)
and ``search.in(field, 'a|b', '|')``. Everything else (numbers, booleans, lambdas,
``search.ismatch``, ``geo.*``, field paths) raises :class:`InvalidFilterError` naming it.

A parsed filter can be rendered as a LanceDB/DataFusion SQL predicate or evaluated over
in-memory string columns; both follow OData's null semantics (``null ne 'x'`` is true).

Bounds: at most MAX_FILTER_CHARS characters and MAX_NESTING nested ``not`` / parentheses, so
no filter exhausts the parser's stack, nor DataFusion's SQL parser (which refuses about 24
nested levels of its own and takes exponential time on deeper ``NOT (`` chains).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import numpy.typing as npt

from imagerag.ports import InvalidFilterError

# Room for search.in over ~800 GUIDs or ~2,500 comparisons (LanceDB plans those in ~0.15 s);
# hand-written filters are a few hundred characters.
MAX_FILTER_CHARS = 32_768
# Each level of `not` or parentheses costs up to two of the ~50 levels DataFusion's SQL parser
# allows (to_sql parenthesises every node): 16 stays inside it, and is far more than filters use.
MAX_NESTING = 16
# Error messages quote the start of the filter, not all of it.
_QUOTED_CHARS = 200

_COMPARISONS = {"eq": "=", "ne": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_TRAILING_SPACE = re.compile(r"\s*\Z")
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^']|'')*')
      | (?P<punct>[(),])
      | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
      | (?P<other>\S+?(?=[\s(),']|$))
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class Compare:
    field: str
    op: str  # one of _COMPARISONS
    value: str | None  # None is the OData literal null


@dataclass(frozen=True, slots=True)
class In:
    field: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Not:
    operand: Filter


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # "and" | "or"
    operands: tuple[Filter, ...]


Filter = Compare | In | Not | BoolOp

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # string | punct | word | end
    text: str
    position: int


def parse(expression: str, fields: Collection[str]) -> Filter:
    """Parse ``expression``; every field it names must be in ``fields`` (string fields).
    Anything else, including a filter over the bounds above, raises InvalidFilterError."""
    if len(expression) > MAX_FILTER_CHARS:
        raise InvalidFilterError(
            f"the filter is {len(expression):,} characters long; at most {MAX_FILTER_CHARS:,} "
            "are allowed"
        )
    parser = _Parser(expression, fields)
    node = parser.expression()
    parser.expect_end()
    return node


def to_sql(node: Filter) -> str:
    """A SQL predicate that is never NULL, so ``NOT`` keeps OData's meaning."""
    if isinstance(node, Compare):
        column = _sql_identifier(node.field)
        if node.value is None:
            return f"({column} IS {'NOT ' if node.op == 'ne' else ''}NULL)"
        literal = _sql_string(node.value)
        if node.op == "ne":
            return f"({column} IS NULL OR {column} <> {literal})"
        return f"({column} IS NOT NULL AND {column} {_COMPARISONS[node.op]} {literal})"
    if isinstance(node, In):
        if not node.values:
            return "FALSE"
        column = _sql_identifier(node.field)
        listed = ", ".join(_sql_string(value) for value in node.values)
        return f"({column} IS NOT NULL AND {column} IN ({listed}))"
    if isinstance(node, Not):
        return f"(NOT {to_sql(node.operand)})"
    joined = f" {node.op.upper()} ".join(to_sql(operand) for operand in node.operands)
    return f"({joined})"


def evaluate(
    node: Filter, columns: Mapping[str, tuple[npt.NDArray[np.str_], BoolArray]]
) -> BoolArray:
    """Row mask over in-memory columns given as (values with nulls as "", null mask)."""
    if isinstance(node, Compare):
        values, nulls = columns[node.field]
        if node.value is None:
            return ~nulls if node.op == "ne" else nulls.copy()
        if node.op == "ne":
            different: BoolArray = values != node.value
            return nulls | different
        result: BoolArray
        match node.op:
            case "eq":
                result = values == node.value
            case "gt":
                result = values > node.value
            case "ge":
                result = values >= node.value
            case "lt":
                result = values < node.value
            case _:
                result = values <= node.value
        return ~nulls & result
    if isinstance(node, In):
        values, nulls = columns[node.field]
        listed = np.array(node.values, dtype=values.dtype)
        return ~nulls & np.asarray(np.isin(values, listed), dtype=np.bool_)
    if isinstance(node, Not):
        return ~evaluate(node.operand, columns)
    masks = [evaluate(operand, columns) for operand in node.operands]
    combined = masks[0].copy()
    for mask in masks[1:]:
        if node.op == "and":
            combined &= mask
        else:
            combined |= mask
    return combined


def _sql_identifier(name: str) -> str:
    return f"`{name}`"


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class _Parser:
    def __init__(self, expression: str, fields: Collection[str]) -> None:
        self._expression = expression
        self._fields = fields
        self._tokens = self._tokenize(expression)
        self._index = 0
        self._nesting = 0

    def _tokenize(self, expression: str) -> list[_Token]:
        tokens: list[_Token] = []
        position = 0
        while position < len(expression):
            # A match at the position, not a slice: slicing per token is quadratic.
            if _TRAILING_SPACE.match(expression, position):
                break
            match = _TOKEN.match(expression, position)
            if match is None or match.lastgroup is None:
                self._fail(f"cannot read the filter at position {position}")
            kind = match.lastgroup
            text = match.group(kind)
            if kind == "other" and text.startswith("'"):
                self._fail(f"unterminated string literal at position {match.start(kind)}")
            if kind == "other":
                self._fail(f"unsupported token {text!r} (the local index supports string literals)")
            tokens.append(_Token(kind, text, match.start(kind)))
            position = match.end()
        tokens.append(_Token("end", "", len(expression)))
        return tokens

    def _fail(self, message: str) -> NoReturn:
        quoted = self._expression[:_QUOTED_CHARS]
        more = "..." if len(self._expression) > _QUOTED_CHARS else ""
        raise InvalidFilterError(f"invalid filter {quoted!r}{more}: {message}")

    def _peek(self) -> _Token:
        return self._tokens[self._index]

    def _next(self) -> _Token:
        token = self._tokens[self._index]
        self._index += 1
        return token

    def _is_word(self, token: _Token, word: str) -> bool:
        return token.kind == "word" and token.text.lower() == word

    def _expect_punct(self, punct: str) -> None:
        token = self._next()
        if token.kind != "punct" or token.text != punct:
            self._fail(f"expected {punct!r} at position {token.position}, found {token.text!r}")

    def expect_end(self) -> None:
        token = self._peek()
        if token.kind != "end":
            self._fail(f"unexpected {token.text!r} at position {token.position}")

    def expression(self) -> Filter:
        return self._bool("or", self._and)

    def _and(self) -> Filter:
        return self._bool("and", self._unary)

    def _bool(self, op: str, operand: Callable[[], Filter]) -> Filter:
        operands = [operand()]
        while self._is_word(self._peek(), op):
            self._next()
            operands.append(operand())
        return operands[0] if len(operands) == 1 else BoolOp(op, tuple(operands))

    def _unary(self) -> Filter:
        token = self._peek()
        if self._is_word(token, "not"):
            self._next()
            with self._nested(token):
                return Not(self._unary())
        if token.kind == "punct" and token.text == "(":
            self._next()
            with self._nested(token):
                node = self.expression()
            self._expect_punct(")")
            return node
        if self._is_word(token, "search.in"):
            return self._search_in()
        return self._comparison()

    @contextmanager
    def _nested(self, token: _Token) -> Iterator[None]:
        self._nesting += 1
        if self._nesting > MAX_NESTING:
            self._fail(
                f"more than {MAX_NESTING} nested 'not' or parentheses at position {token.position}"
            )
        yield
        self._nesting -= 1

    def _field(self) -> str:
        token = self._next()
        if token.kind == "word" and "." in token.text:
            self._fail(f"unsupported function {token.text!r} (only search.in is supported)")
        if token.kind != "word":
            self._fail(f"expected a field name at position {token.position}, found {token.text!r}")
        if token.text not in self._fields:
            known = ", ".join(sorted(self._fields))
            self._fail(f"unknown or non-string field {token.text!r} (filterable: {known})")
        return token.text

    def _string(self) -> str:
        token = self._next()
        if token.kind != "string":
            self._fail(
                f"expected a string literal at position {token.position}, found {token.text!r}"
            )
        return token.text[1:-1].replace("''", "'")

    def _comparison(self) -> Filter:
        field = self._field()
        op_token = self._next()
        op = op_token.text.lower()
        if op_token.kind != "word" or op not in _COMPARISONS:
            self._fail(
                f"expected eq, ne, gt, ge, lt or le after {field!r}, found {op_token.text!r}"
            )
        value_token = self._peek()
        if self._is_word(value_token, "null"):
            self._next()
            if op not in ("eq", "ne"):
                self._fail(f"null can only be compared with eq or ne, not {op}")
            return Compare(field, op, None)
        if value_token.kind != "string":
            self._fail(
                f"unsupported literal {value_token.text!r} at position {value_token.position} "
                "(the local index compares string fields with string literals only)"
            )
        return Compare(field, op, self._string())

    def _search_in(self) -> Filter:
        self._next()
        self._expect_punct("(")
        field = self._field()
        self._expect_punct(",")
        raw = self._string()
        delimiters = " ,"
        if self._peek().kind == "punct" and self._peek().text == ",":
            self._next()
            delimiters = self._string()
            if not delimiters:
                self._fail("search.in delimiters must not be empty")
        self._expect_punct(")")
        pattern = "[" + re.escape(delimiters) + "]"
        return In(field, tuple(value for value in re.split(pattern, raw) if value))
