"""The leak proof of a scrubbed dump: the values it samples, and the search.

A scrubbed column's original values must be nowhere in the dump: not in the
column (its rule replaced them), nor copied elsewhere (a kept column, a JSON
document, an audit table, a raw-SQL table). :func:`sample` takes, in the
dump's snapshot, the original values of the rows the dump keeps (all of them
up to ``SAMPLE`` per column and JSON path), leaving out values under
``SHORTEST`` bytes (they turn up anywhere by chance) and values a rule of the
plan can itself output (a name from the rules' lists, hex digits…).
:class:`Search` then finds each of them in the dump's data as COPY text
writes it (escaped) and inside JSON strings, with one Aho-Corasick automaton
(``ahocorasick_rs``: it reads the bytes once for every value, without the
interpreter's lock). A hit names the table and column where it was found,
and the column whose value it was: never the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import ahocorasick_rs

from pgclone.pg import driver, postgres
from pgclone.pg.driver import sql
from pgclone.sharing import scrub, subset

SAMPLE = 1000  # values per scrubbed column (and JSON path)
SHORTEST = 6  # bytes: a shorter value is found anywhere by chance
# COPY text's escapes (PostgreSQL's CopyAttributeOutText), backslash first.
_COPY_ESCAPES = {0x5C: b"\\\\", 0x08: b"\\b", 0x0C: b"\\f", 0x0A: b"\\n", 0x0D: b"\\r",
                 0x09: b"\\t", 0x0B: b"\\v"}  # fmt: skip
_JSON_ESCAPES = {0x22: b'\\"', 0x5C: b"\\\\", 0x08: b"\\b", 0x0C: b"\\f", 0x0A: b"\\n",
                 0x0D: b"\\r", 0x09: b"\\t"}  # fmt: skip


@dataclass(frozen=True)
class Sampled:
    """A scrubbed column's sampled values (bytes in the database's encoding)."""

    table: str  # as messages name it
    column: str  # its name, and the JSON path of a path rule
    values: tuple[bytes, ...]


@dataclass
class Found:
    """Where the search found sampled values: (table, column) of each hit, and
    the scrubbed column whose value it was, with how many hits."""

    hits: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def add(self, where: tuple[str, str], origin: str) -> None:
        key = (*where, origin)
        self.hits[key] = self.hits.get(key, 0) + 1

    def message(self, what: str) -> str:
        lines = "\n".join(
            f"- in {table}, column {column}: {count} value(s) of {origin}"
            for (table, column, origin), count in sorted(self.hits.items())
        )
        return (
            f"{what} holds original values of scrubbed columns (the values are not shown):\n"
            f"{lines}\nGive each of these columns a scrub rule (or leave its table out), "
            "then dump again."
        )


def copy_text(value: bytes) -> bytes:
    """``value`` as COPY text writes it (backslash and control characters escaped)."""
    if not any(byte in _COPY_ESCAPES for byte in value):
        return value
    return b"".join(_COPY_ESCAPES.get(byte, bytes((byte,))) for byte in value)


def json_string(value: bytes) -> bytes:
    """``value`` inside a JSON string as PostgreSQL writes jsonb (quotes, backslash
    and control characters escaped; other bytes as they are)."""
    out = []
    for byte in value:
        if byte in _JSON_ESCAPES:
            out.append(_JSON_ESCAPES[byte])
        elif byte < 0x20:
            out.append(b"\\u%04x" % byte)
        else:
            out.append(bytes((byte,)))
    return b"".join(out)


def needles(value: bytes) -> set[bytes]:
    """What to look for: the value as COPY text, and as a JSON string's content in COPY text."""
    return {copy_text(value), copy_text(json_string(value))}


# --- What the rules can output --------------------------------------------------------

_HEX, _DIGITS = "[0-9a-f]*", "[0-9]*"


def _words(words: Iterable[str]) -> list[str]:
    return list(words)


def _shapes(rule: scrub.Rule) -> list[list[object]]:
    """Each output of the rule as a sequence of parts: literal strings, lists of
    words (one of them), and character classes (any run of them)."""
    first, last, street = list(scrub.FIRST_NAMES), list(scrub.LAST_NAMES), list(scrub.STREETS)
    tail = ["-", re.compile(_HEX)]  # a unique column's readable output ends so
    shapes = {
        "first_name": [[first, *tail]],
        "last_name": [[last, *tail]],
        "name": [[first, " ", last, *tail]],
        "address": [[re.compile(_DIGITS), " ", street, " Street", *tail]],
        "phone": [["+1 555 ", re.compile(_DIGITS), *tail]],
        "ip": [["10.", re.compile("[0-9.]*")]],
        "email": [["u-", re.compile(_HEX), "@example.invalid"]],
        "text": [["text-", re.compile(_HEX)]],
        "hash": [[re.compile("[0-9a-f-]*")]],  # hex, or a UUID of it
        "unusable_password": [["!", re.compile(_HEX)]],
    }
    return shapes.get(rule.name, [])


def _pieces(part: object, how: str) -> str:
    """A regex of the part's infixes, suffixes or prefixes (``how``)."""
    if isinstance(part, re.Pattern):
        return f"(?:{part.pattern})"
    words = part if isinstance(part, list) else [part]
    found = set()
    for word in words:
        for i in range(len(word) + 1):
            for j in range(i, len(word) + 1):
                if (
                    how == "infix"
                    or (how == "suffix" and j == len(word))
                    or (how == "prefix" and i == 0)
                ):
                    found.add(word[i:j])
    return "(?:" + "|".join(sorted(map(re.escape, found), key=len, reverse=True)) + ")"


def _whole(part: object) -> str:
    if isinstance(part, re.Pattern):
        return f"(?:{part.pattern})"
    words = part if isinstance(part, list) else [part]
    return "(?:" + "|".join(map(re.escape, words)) + ")"


def rule_outputs(rules: Iterable[scrub.Rule]) -> re.Pattern[str]:
    """A pattern that every piece of every output of ``rules`` matches whole:
    a value that matches it may have been written by a rule, so it proves
    nothing when found. (A piece: where an output was cut to fit a column, or
    where a value sits inside a longer output.)"""
    alternatives = set()
    for rule in set(rules):
        for shape in _shapes(rule):
            for i in range(len(shape)):
                alternatives.add(_pieces(shape[i], "infix"))
                for j in range(i + 1, len(shape)):
                    middle = "".join(_whole(part) for part in shape[i + 1 : j])
                    alternatives.add(
                        _pieces(shape[i], "suffix") + middle + _pieces(shape[j], "prefix")
                    )
    if not alternatives:
        return re.compile("(?!)")
    return re.compile("|".join(sorted(alternatives)))


# --- The sample ---------------------------------------------------------------------------


def _value_expressions(
    table: subset.PlannedTable,
) -> list[tuple[str, sql.Composable, scrub.Rule]]:
    """(column as messages name it, SQL of its original text, rule) per scrubbed
    column and JSON path; ``keep`` scrubs nothing."""
    found = []
    for name, rules in table.rules:
        ref = sql.SQL("t.{}").format(sql.Identifier(name))
        for rule in rules:
            if rule.name == "keep":
                continue
            if rule.path:
                path = sql.SQL("ARRAY[{}]::text[]").format(
                    sql.SQL(", ").join(map(sql.Literal, rule.path))
                )
                label = f"{name}->{'->'.join(rule.path)}"
                found.append((label, sql.SQL("({} #>> {})").format(ref, path), rule))
            else:  # format() writes it with the type's output function, as COPY does
                found.append((name, sql.SQL("format('%s', {})").format(ref), rule))
    return found


def wanted(plan: subset.Plan) -> bool:
    """Whether a dump of ``plan`` takes the proof: it scrubs a column."""
    return any(_value_expressions(table) for table in plan.tables)


def sample(cursor: driver.Cursor, plan: subset.Plan, *, kept: bool = True) -> list[Sampled]:
    """The original values to look for, read in ``cursor``'s transaction: after
    :func:`pgclone.sharing.plans.prepare` when ``kept`` (the rows the dump
    keeps), else from every row. An sql rule's column leaves out the values
    the rule keeps as they are (its output is the value itself)."""
    tables = [table for table in plan.tables if _value_expressions(table)]
    skip = rule_outputs(rule for t in tables for _, rules in t.rules for rule in rules)
    cursor.execute("SELECT current_setting('server_encoding')")
    encoding = cursor.fetchone()[0]
    outputs = {(label, name): expression for label, name, _, expression, _ in plan.outputs}
    found = []
    for table in tables:
        label = postgres.display_name(table.schema, table.name)
        for column, value, rule in _value_expressions(table):
            conditions = [sql.SQL("{} IS NOT NULL").format(value)]
            if kept and table.rows is not None:
                conditions.append(table.rows)
            if rule.name == "sql" and not rule.path and (label, column) in outputs:
                conditions.append(
                    sql.SQL("format('%s', {}) IS DISTINCT FROM {}").format(
                        outputs[label, column], value
                    )
                )
            cursor.execute(_sample_query(table, value, conditions, encoding))
            values = [bytes(row[0]) for row in cursor.fetchall()]
            kept_values = tuple(v for v in values if not _output_like(skip, v))
            found.append(Sampled(label, column, kept_values))
    return found


def _sample_query(
    table: subset.PlannedTable,
    value: sql.Composable,
    conditions: list[sql.Composable],
    encoding: str,
) -> sql.Composable:
    """Up to SAMPLE distinct values of at least SHORTEST bytes, of the first rows in
    the table's order (reading every row to pick distinct values would cost a
    scan of the table per column)."""
    text = sql.SQL("convert_to({}, {})").format(value, sql.Literal(encoding))
    long_enough = sql.SQL("octet_length({}) >= {}").format(text, sql.Literal(SHORTEST))
    return sql.SQL(
        "SELECT DISTINCT v FROM (SELECT {} AS v FROM {} AS t WHERE {} LIMIT {}) s LIMIT {}"
    ).format(
        text,
        subset.only(table.schema, table.name),
        sql.SQL(" AND ").join([*conditions, long_enough]),
        sql.Literal(4 * SAMPLE),
        sql.Literal(SAMPLE),
    )


def _output_like(pattern: re.Pattern[str], value: bytes) -> bool:
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return False
    return pattern.fullmatch(text) is not None


# --- The search ---------------------------------------------------------------------------


class Search:
    """One automaton of every sampled value's needles; ``find`` gives the hits
    in a buffer as (needle's origin, start)."""

    def __init__(self, sampled: list[Sampled]) -> None:
        origins: dict[bytes, str] = {}
        for column in sampled:
            for value in column.values:
                for needle in needles(value):
                    origins.setdefault(needle, f"{column.table}.{column.column}")
        self.size = sum(len(column.values) for column in sampled)
        self.columns = len(sampled)
        self._needles = list(origins)
        self._origins = [origins[needle] for needle in self._needles]
        self.longest = max(map(len, self._needles), default=0)
        # A contiguous NFA, not a DFA: the DFA searched the bench's dump about 1.7x
        # faster but took ~30 MB for its ~6,000 needles, and 724 MB for 53,000 (some
        # 50 scrubbed columns' samples), where this takes 7 and 65 MB.
        self._automaton = (
            ahocorasick_rs.BytesAhoCorasick(
                self._needles, implementation=ahocorasick_rs.Implementation.ContiguousNFA
            )
            if self._needles
            else None
        )

    def find(self, data: bytes, start: int = 0) -> list[tuple[str, int]]:
        """Hits that end past ``start`` (those before were found in an earlier buffer)."""
        if self._automaton is None:
            return []
        return [
            (self._origins[index], begin)
            for index, begin, end in self._automaton.find_matches_as_indexes(data)
            if end > start
        ]


def copy_column(data: bytes, position: int, columns: tuple[str, ...] | list[str]) -> str:
    """The column of COPY text ``data`` (whole rows) that ``position`` is in."""
    row = data.rfind(b"\n", 0, position) + 1
    index = data.count(b"\t", row, position)
    return columns[index] if index < len(columns) else f"#{index + 1}"
