"""The query bar's language: a Kibana-KQL-like filter compiled to a parameterized SQL WHERE clause.

Syntax (keywords and/or/not are case-insensitive; `and` binds tighter than `or`; adjacent clauses
without an operator are ANDed):

    aoai.deployment:gpt-4o                 exact value (case-sensitive, like a keyword field)
    aoai.deployment:"gpt-4o"               quoted: `*` is literal, spaces allowed
    aoai.model:gpt-4o*                     wildcard `*` → ILIKE (case-insensitive); `\\*` is a literal star
    aoai.status_code >= 400                ranges: < <= > >= (numbers, dates, strings)
    @timestamp >= now-1h                   dates: 2024-01-01, 2024-01-01T10:00:00Z, now, now-15m
    aoai.status_code:(429 or 503)          several values for one field
    aoai.tokens.cached:*                   the field exists
    not aoai.content_filter.filtered:true  NOT also matches documents without the field (as Kibana)
    "capital of"  timeout                  free text: contains, over the table's text columns
    azure.open_ai.properties.backend_request_body.messages.content:*hello*
                                           into JSON columns (array levels are transparent)
    extra.some.key:value                   keys kept in the `extra` JSON column

Field names must be columns of the table (or paths into its JSON columns); values only ever travel as
parameters, so nothing a user types becomes SQL text.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Iterable

from .. import schema

__all__ = ["KqlError", "compile_kql", "parse_kql", "default_text_fields"]

MAX_LENGTH = 10_000
MAX_DEPTH = 64
_ESCAPE = "ESCAPE '\\'"
_NUMERIC = {"BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER", "USMALLINT",
            "UTINYINT", "DOUBLE", "FLOAT", "REAL"}
_TIME = {"TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ", "TIMESTAMP_MS", "TIMESTAMP_S", "TIMESTAMP_NS", "DATE"}
_RANGE_OPS = ("<=", ">=", "<", ">")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
_NOW = re.compile(r"now(?:([+-])(\d{1,6})([smhdw]))?", re.I)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class KqlError(ValueError):
    """A query that cannot be compiled; `position` is the 0-based character offset of the problem."""

    def __init__(self, message: str, position: int):
        super().__init__(f"{message} (at column {position + 1})")
        self.message = message
        self.position = position


# --- tokens --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Tok:
    kind: str  # WORD, QUOTED, LPAREN, RPAREN, COLON, OP, AND, OR, NOT, EOF
    pos: int
    end: int
    text: str = ""
    # WORD/QUOTED: literal chunks and wildcard stars, in order: ("abc", False), ("*", True)
    parts: tuple[tuple[str, bool], ...] = ()


_SPECIAL = set('()":<>')


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "()":
            toks.append(_Tok("LPAREN" if ch == "(" else "RPAREN", i, i + 1, ch))
            i += 1
        elif ch == ":":
            toks.append(_Tok("COLON", i, i + 1, ":"))
            i += 1
        elif ch in "<>":
            op = text[i:i + 2] if text[i:i + 2] in ("<=", ">=") else ch
            toks.append(_Tok("OP", i, i + len(op), op))
            i += len(op)
        elif ch == '"':
            start, i, buf = i, i + 1, []
            while True:
                if i >= n:
                    raise KqlError("unterminated quoted phrase: add the closing \"", start)
                c = text[i]
                if c == "\\" and i + 1 < n:
                    buf.append(text[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    buf.append(c)
                    i += 1
            value = "".join(buf)
            toks.append(_Tok("QUOTED", start, i, value, ((value, False),)))
        else:
            start, parts, buf, escaped_any = i, [], [], False
            while i < n and not text[i].isspace() and text[i] not in _SPECIAL:
                c = text[i]
                if c == "\\":
                    if i + 1 >= n:
                        raise KqlError("a backslash must escape a character", i)
                    buf.append(text[i + 1])
                    escaped_any = True
                    i += 2
                elif c == "*":
                    if buf:
                        parts.append(("".join(buf), False))
                        buf = []
                    parts.append(("*", True))
                    i += 1
                else:
                    buf.append(c)
                    i += 1
            if buf:
                parts.append(("".join(buf), False))
            raw = text[start:i]
            if raw == "=":
                raise KqlError("unexpected '=': write field:value, or a range such as field >= 10", start)
            keyword = raw.lower() if not escaped_any else ""
            if keyword in ("and", "or", "not"):
                toks.append(_Tok(keyword.upper(), start, i, raw))
            else:
                toks.append(_Tok("WORD", start, i, "".join(p for p, _ in parts), tuple(parts)))
    toks.append(_Tok("EOF", n, n))
    return toks


# --- syntax tree -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Value:
    text: str  # unescaped text; wildcard stars included as '*'
    parts: tuple[tuple[str, bool], ...]
    quoted: bool
    pos: int

    @property
    def wildcard(self) -> bool:
        return any(w for _, w in self.parts)

    @property
    def match_all(self) -> bool:
        return self.parts == (("*", True),)

    def like(self, contains: bool = False) -> str:
        """LIKE pattern: literal parts escaped, wildcard stars as %."""
        body = "".join("%" if w else re.sub(r"([\\%_])", r"\\\1", p) for p, w in self.parts)
        return f"%{body}%" if contains else body


@dataclass(frozen=True)
class Bool:
    op: str  # AND / OR
    items: tuple


@dataclass(frozen=True)
class Not:
    item: object


@dataclass(frozen=True)
class Match:
    field: str
    pos: int
    values: object  # a Value or Bool/Not tree of Values


@dataclass(frozen=True)
class Range:
    field: str
    pos: int
    op: str
    value: Value


@dataclass(frozen=True)
class Text:
    value: Value


@dataclass(frozen=True)
class All:
    """The empty query (or `*`): every row."""


class _Parser:
    def __init__(self, text: str):
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self, k: int = 0) -> _Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, kind: str, what: str) -> _Tok:
        tok = self.peek()
        if tok.kind != kind:
            raise KqlError(f"expected {what}, found {_describe(tok)}", tok.pos)
        return self.take()

    def nest(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise KqlError(f"query nests deeper than {MAX_DEPTH} levels", pos)

    def parse(self):
        if self.peek().kind == "EOF":
            return All()
        node = self.or_expr(self.clause)
        tok = self.peek()
        if tok.kind != "EOF":
            raise KqlError(f"unexpected {_describe(tok)}" + (": missing '('?" if tok.kind == "RPAREN" else ""), tok.pos)
        return node

    # Boolean structure is the same for whole clauses and for a field's value list, so it is shared.
    def or_expr(self, leaf):
        items = [self.and_expr(leaf)]
        while self.peek().kind == "OR":
            self.take()
            items.append(self.and_expr(leaf))
        return items[0] if len(items) == 1 else Bool("OR", tuple(items))

    def and_expr(self, leaf):
        items = [self.not_expr(leaf)]
        while True:
            kind = self.peek().kind
            if kind == "AND":
                self.take()
            elif kind not in ("WORD", "QUOTED", "LPAREN", "NOT"):
                break
            items.append(self.not_expr(leaf))
        return items[0] if len(items) == 1 else Bool("AND", tuple(items))

    def not_expr(self, leaf):
        tok = self.peek()
        if tok.kind == "NOT":
            self.take()
            self.nest(tok.pos)
            item = self.not_expr(leaf)
            self.depth -= 1
            return Not(item)
        if tok.kind == "LPAREN":
            self.take()
            self.nest(tok.pos)
            if self.peek().kind == "RPAREN":
                raise KqlError("empty parentheses", tok.pos)
            node = self.or_expr(leaf)
            self.expect("RPAREN", "')' to close the '(' at column %d" % (tok.pos + 1))
            self.depth -= 1
            return node
        return leaf()

    def clause(self):
        tok = self.peek()
        if tok.kind not in ("WORD", "QUOTED"):
            raise KqlError(f"expected a field, a value or '(', found {_describe(tok)}", tok.pos)
        nxt = self.peek(1)
        if tok.kind == "WORD" and nxt.kind in ("COLON", "OP"):
            self.take()
            if any(w for _, w in tok.parts):
                raise KqlError("field names cannot contain wildcards; name one field", tok.pos)
            op = self.take()
            if op.kind == "OP":
                return Range(tok.text, tok.pos, op.text, self.value(after=op))
            if self.peek().kind == "LPAREN":
                return Match(tok.text, tok.pos, self.not_expr(lambda: self.value(after=None)))
            return Match(tok.text, tok.pos, self.value(after=op))
        if nxt.kind in ("COLON", "OP") and tok.kind == "QUOTED":
            raise KqlError("a quoted phrase cannot be a field name", tok.pos)
        value = self.value(after=None)
        return All() if value.match_all else Text(value)

    def value(self, after: _Tok | None) -> Value:
        tok = self.peek()
        if tok.kind == "QUOTED":
            self.take()
            return Value(tok.text, tok.parts, True, tok.pos)
        if tok.kind != "WORD":
            where = f" after '{after.text}'" if after else ""
            raise KqlError(f"expected a value{where}, found {_describe(tok)}", tok.pos)
        self.take()
        # Unquoted values may contain ':' (URLs, times): glue tokens that touch without whitespace.
        parts, end = list(tok.parts), tok.end
        while self.peek().kind in ("COLON", "WORD") and self.peek().pos == end:
            nxt = self.take()
            parts += [(":", False)] if nxt.kind == "COLON" else list(nxt.parts)
            end = nxt.end
        return Value("".join(p for p, _ in parts), tuple(parts), False, tok.pos)


def _describe(tok: _Tok) -> str:
    return "the end of the query" if tok.kind == "EOF" else f"'{tok.text}'"


def parse_kql(text: str):
    """Parse only (no schema): the syntax tree, or KqlError with the position of the problem."""
    if len(text) > MAX_LENGTH:
        raise KqlError(f"query longer than {MAX_LENGTH} characters", MAX_LENGTH)
    return _Parser(text).parse()


# --- compilation ---------------------------------------------------------------------------------------

def default_text_fields(table: str, columns: dict[str, str]) -> list[str]:
    """Free text searches the raw record where there is one (it holds every value), else all text columns."""
    if "event.original" in columns:
        return ["event.original"]
    return [c for c, t in columns.items() if t.upper() == "VARCHAR"]


def compile_kql(text: str, table: str, columns: dict[str, str], *, text_fields: Iterable[str] | None = None,
                extra_keys: Iterable[str] | None = None, now: datetime | None = None) -> tuple[str, list]:
    """KQL → (SQL boolean expression for WHERE, parameters). Raises KqlError (with position) on any problem.

    `columns` maps the table's column names to DuckDB types. `extra_keys` (optional) lists keys known
    to exist in the `extra` JSON column so they can be named without the `extra.` prefix.
    """
    tree = parse_kql(text)
    compiler = _Compiler(table, columns, text_fields, extra_keys, now)
    sql = compiler.node(tree)
    return sql, compiler.params


@dataclass
class _Target:
    sql: str  # quoted column
    name: str
    type: str  # upper-cased DuckDB type
    json_path: str | None = None  # set for paths into JSON columns


@dataclass
class _Compiler:
    table: str
    columns: dict[str, str]
    text_fields: Iterable[str] | None
    extra_keys: Iterable[str] | None
    now: datetime | None
    params: list = field(default_factory=list)

    def __post_init__(self):
        self.types = {name: str(t).upper() for name, t in self.columns.items()}
        self.es_types = {f.name: f.type for f in schema.TABLES.get(self.table, ())}
        self.extra = set(self.extra_keys or ())
        self.now = (self.now or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(tzinfo=None)

    def p(self, value) -> str:
        self.params.append(value)
        return "?"

    def node(self, n) -> str:
        if isinstance(n, All):
            return "TRUE"
        if isinstance(n, Bool):
            return "(" + f" {n.op} ".join(self.node(i) for i in n.items) + ")"
        if isinstance(n, Not):
            return f"(({self.node(n.item)}) IS NOT TRUE)"
        if isinstance(n, Text):
            return self.text(n.value)
        if isinstance(n, Range):
            return self.range(self.resolve(n.field, n.pos), n.op, n.value)
        target = self.resolve(n.field, n.pos)
        return self.values(target, n.values)

    def values(self, target: _Target, v) -> str:
        if isinstance(v, Bool):
            return "(" + f" {v.op} ".join(self.values(target, i) for i in v.items) + ")"
        if isinstance(v, Not):
            return f"(({self.values(target, v.item)}) IS NOT TRUE)"
        return self.match(target, v)

    # --- fields ---

    def resolve(self, name: str, pos: int) -> _Target:
        if name in self.types:
            return _Target(_quote(name), name, self.types[name])
        if name.startswith("extra.") and self.types.get("extra") == "JSON":
            return self.json_target("extra", name[len("extra."):], pos)
        if name in self.extra and self.types.get("extra") == "JSON":
            return self.json_target("extra", name, pos)
        parts = name.split(".")
        for k in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:k])
            if self.types.get(prefix) == "JSON":
                return self.json_target(prefix, ".".join(parts[k:]), pos)
        raise KqlError(f"unknown field '{name}' in {self.table}" + _suggest(name, list(self.types)), pos)

    def json_target(self, column: str, path: str, pos: int) -> _Target:
        keys = [k for k in path.split(".") if k and not k.isdigit()]  # array levels are transparent
        if not keys:
            raise KqlError(f"'{column}.{path}' names no key inside the JSON column {column}", pos)
        return _Target(_quote(column), f"{column}.{path}", "JSON", "$." + ".".join(keys))

    def kind(self, t: _Target) -> str:
        ty = t.type
        if t.json_path:
            return "jsonpath"
        if ty.endswith("[]"):
            return "list"
        if ty == "JSON":
            return "json"
        if ty in _NUMERIC or ty.startswith("DECIMAL"):
            return "number"
        if ty == "BOOLEAN":
            return "bool"
        if ty in _TIME:
            return "time"
        return "string"

    # --- leaves ---

    def match(self, t: _Target, v: Value) -> str:
        kind = self.kind(t)
        if v.match_all:
            if kind == "jsonpath":
                return self.json_exists(t, lambda: "TRUE")  # objects count too, not only leaves
            return f"{t.sql} IS NOT NULL"
        if kind == "jsonpath":
            if v.wildcard:
                return self.json_exists(t, lambda: f"jt.atom IS NOT NULL AND {_JSON_LEAF} ILIKE {self.p(v.like())} {_ESCAPE}")
            return self.json_exists(t, lambda: f"jt.atom IS NOT NULL AND {_JSON_LEAF} = {self.p(v.text)}")
        if kind == "json":
            return f"CAST({t.sql} AS VARCHAR) ILIKE {self.p(v.like(contains=True))} {_ESCAPE}"
        if kind == "list":
            if v.wildcard:
                return f"(len(list_filter({t.sql}, lambda x: x ILIKE {self.p(v.like())} {_ESCAPE})) > 0)"
            return f"list_contains({t.sql}, {self.p(v.text)})"
        if kind == "string":
            col = t.sql if t.type == "VARCHAR" else f"CAST({t.sql} AS VARCHAR)"
            if self.es_types.get(t.name) == "text":  # analysed text in Elastic: a match, not an exact value
                return f"{col} ILIKE {self.p(v.like(contains=True))} {_ESCAPE}"
            if v.wildcard:
                return f"{col} ILIKE {self.p(v.like())} {_ESCAPE}"
            return f"{col} = {self.p(v.text)}"
        if v.wildcard:
            raise KqlError(f"wildcards only work on text fields; {t.name} is {t.type}", v.pos)
        if kind == "number":
            return f"{t.sql} = {self.p(_number(v, t))}"
        if kind == "bool":
            return f"{t.sql} = {self.p(_boolean(v, t))}"
        start, end = self.time(v, t)
        if end is None:
            return f"{t.sql} = {self.p(start)}"
        return f"({t.sql} >= {self.p(start)} AND {t.sql} < {self.p(end)})"

    def range(self, t: _Target, op: str, v: Value) -> str:
        kind = self.kind(t)
        if v.wildcard:
            raise KqlError("a range bound cannot contain wildcards", v.pos)
        if kind in ("list", "json", "bool"):
            raise KqlError(f"ranges do not apply to {t.name} ({t.type}); use {t.name}:value", v.pos)
        if kind == "jsonpath":
            if _NUMBER.fullmatch(v.text):
                return self.json_exists(t, lambda: f"jt.atom IS NOT NULL AND TRY_CAST({_JSON_LEAF} AS DOUBLE) {op} {self.p(float(_number(v, t)))}")
            return self.json_exists(t, lambda: f"jt.atom IS NOT NULL AND {_JSON_LEAF} {op} {self.p(v.text)}")
        if kind == "number":
            return f"{t.sql} {op} {self.p(_number(v, t))}"
        if kind == "time":
            start, end = self.time(v, t)
            if end is not None:  # a whole day: `> day` means after it, `<= day` includes it
                bound, op = {">": (end, ">="), ">=": (start, ">="), "<": (start, "<"), "<=": (end, "<")}[op]
            else:
                bound = start
            return f"{t.sql} {op} {self.p(bound)}"
        col = t.sql if t.type == "VARCHAR" else f"CAST({t.sql} AS VARCHAR)"
        return f"{col} {op} {self.p(v.text)}"

    def text(self, v: Value) -> str:
        fields = list(self.text_fields) if self.text_fields is not None else default_text_fields(self.table, self.columns)
        fields = [f for f in fields if f in self.types]
        if not fields:
            raise KqlError(f"free text needs a text column and {self.table} has none; use field:value", v.pos)
        pattern = v.like(contains=True)
        return "(" + " OR ".join(f"CAST({_quote(f)} AS VARCHAR) ILIKE {self.p(pattern)} {_ESCAPE}" for f in fields) + ")"

    def json_exists(self, t: _Target, condition) -> str:
        """Match any node under the path, ignoring array indices and key quoting (Elastic's flattened type).
        `condition` builds its SQL after the path parameter is placed, keeping parameters in text order."""
        path = self.p(t.json_path)
        return (f"({t.sql} IS NOT NULL AND EXISTS (SELECT 1 FROM json_tree({t.sql}) AS jt "
                f"WHERE replace(regexp_replace(jt.fullkey, '\\[[0-9]+\\]', '', 'g'), '\"', '') = {path} "
                f"AND {condition()}))")

    def time(self, v: Value, t: _Target) -> tuple[datetime, datetime | None]:
        """A date value → (start, end of the day) for a bare date, (instant, None) otherwise."""
        text = v.text.strip()
        m = _NOW.fullmatch(text)
        if m:
            delta = timedelta(seconds=int(m.group(2)) * _UNITS[m.group(3).lower()]) if m.group(1) else timedelta()
            return (self.now - delta if m.group(1) == "-" else self.now + delta), None
        try:
            if _DATE_ONLY.fullmatch(text):
                day = date.fromisoformat(text)
                start = datetime(day.year, day.month, day.day)
                return start, start + timedelta(days=1)
            instant = datetime.fromisoformat(text)
        except (ValueError, OverflowError):
            raise KqlError(f"'{v.text}' is not a date for {t.name}: use 2024-01-01, 2024-01-01T10:00:00Z or now-1h", v.pos) from None
        if instant.tzinfo is not None:
            instant = instant.astimezone(timezone.utc).replace(tzinfo=None)
        return instant, None


_JSON_LEAF = "json_extract_string(jt.value, '$')"


def _number(v: Value, t: _Target) -> int | float:
    text = v.text.strip()
    if not _NUMBER.fullmatch(text):
        raise KqlError(f"{t.name} is a number field; '{v.text}' is not a number", v.pos)
    if re.fullmatch(r"[+-]?\d+", text):
        n = int(text)
        if -(2 ** 63) <= n < 2 ** 63:
            return n
    x = float(text)
    if x in (float("inf"), float("-inf")):
        raise KqlError(f"number '{v.text}' is out of range", v.pos)
    return x


def _boolean(v: Value, t: _Target) -> bool:
    low = v.text.strip().lower()
    if low not in ("true", "false"):
        raise KqlError(f"{t.name} is true or false, not '{v.text}'", v.pos)
    return low == "true"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _suggest(name: str, names: list[str]) -> str:
    """'Did you mean' by spelling and by last segment (deployment → aoai.deployment)."""
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    last = name.rsplit(".", 1)[-1].lower()
    by_leaf = [n for n in names if n.rsplit(".", 1)[-1].lower() == last]
    by_leaf += [n for n in names if last and last in n.rsplit(".", 1)[-1].lower() and n not in by_leaf]
    picks = list(dict.fromkeys(close + by_leaf))[:5]
    return "; did you mean " + ", ".join(picks) + "?" if picks else "; `aoai-monitor fields` lists the fields"
