"""Scrub rules: each one a SQL expression of a column, evaluated by PostgreSQL.

Every rule is deterministic and keyed: its output is derived from a keyed
digest of the value (:func:`keyed_digest`), computed by the server's built-in
``sha512()`` (no extension needed) under the key the session holds in the
setting ``pgclone.scrub_key``. The same value gives the same output in every table and
every dump made with the same key, so joins and lookups on scrubbed values
still match; another key gives other outputs. NULL stays NULL.

A unique column (or one in a unique index) only takes rules whose output keeps
at least 64 bits of the digest, so that distinct values stay distinct; readable
rules (names, addresses…) then end with ``-`` and 16 hex digits. An output that
can't fit the column is refused before anything runs.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from pgclone.pg.catalog import Column
from pgclone.pg.driver import sql

KEY_SETTING = "pgclone.scrub_key"
UNIQUE_HEX = 16  # 64 bits: no collision to expect below billions of rows
SHORT_HEX = 8
TAIL = 1 + UNIQUE_HEX  # "-" and the hex digits that make a readable output unique

FIRST_NAMES = ("Alex", "Sam", "Robin", "Charlie", "Jamie", "Taylor", "Jordan", "Morgan",
               "Casey", "Riley", "Avery", "Quinn", "Drew", "Kai", "Noa", "Ari")  # fmt: skip
LAST_NAMES = ("Smith", "Jones", "Garcia", "Miller", "Davis", "Martin", "Lee", "Walker",
              "Hall", "Young", "King", "Wright", "Lopez", "Hill", "Green", "Adams")  # fmt: skip
STREETS = ("Oak", "Maple", "Cedar", "Elm", "Pine", "Birch", "Lake", "Hill",
           "Park", "River", "Mill", "Church", "High", "Station", "Bridge", "Garden")  # fmt: skip


@dataclass(frozen=True)
class Rule:
    """One rule: a built-in name or "sql" (with its expression), at a JSON path or not."""

    name: str
    sql: str | None = None
    path: tuple[str, ...] = ()


def _pick(words: tuple[str, ...], byte: int) -> str:
    array = ", ".join(f"'{word}'" for word in words)  # constants of this module, no quotes
    return f"(ARRAY[{array}])[1 + get_byte({{d}}, {byte}) % {len(words)}]"


# Readable outputs: unique columns get the tail of hex digits.
READABLE = {
    "first_name": _pick(FIRST_NAMES, 0),
    "last_name": _pick(LAST_NAMES, 1),
    "name": f"{_pick(FIRST_NAMES, 0)} || ' ' || {_pick(LAST_NAMES, 1)}",
    "address": "(1 + (get_byte({d}, 2) * 256 + get_byte({d}, 3)) % 999)::text || ' ' || "
    f"{_pick(STREETS, 4)} || ' Street'",
    "phone": "'+1 555 ' || lpad(((get_byte({d}, 5) * 65536 + get_byte({d}, 6) * 256 "
    "+ get_byte({d}, 7)) % 10000000)::text, 7, '0')",
    "ip": "'10.' || get_byte({d}, 8) || '.' || get_byte({d}, 9) || '.' || get_byte({d}, 10)",
}
# Outputs made of a prefix, hex digits and a suffix: (prefix, suffix, most hex digits).
HEXED = {
    "email": ("u-", "@example.invalid", 32),
    "text": ("text-", "", 32),
    "hash": ("", "", 64),
    "unusable_password": ("!", "", 40),  # what Django's make_password(None) looks like
}
TEXT_RULES = {*READABLE, *HEXED}
BUILTIN = sorted({*TEXT_RULES, "null", "empty", "keep"})
RULES_VERSION = "2"  # part of every plan's digest: bump when an output changes


def parse(spec: Any, where: str) -> tuple[Rule, ...]:
    """The rules of one field as a config writes them: a name, ``{"sql": …}``,
    ``{"rule": …, "path": [...]}`` or a list of path rules (JSON fields)."""
    from pgclone.exceptions import ConfigurationError

    specs = spec if isinstance(spec, list) else [spec]
    rules = tuple(_parse_one(item, where) for item in specs)
    if not rules or (len(rules) > 1 and not all(rule.path for rule in rules)):
        raise ConfigurationError(f"{where}: a list of rules needs a 'path' in each one.")
    return rules


def _parse_one(spec: Any, where: str) -> Rule:
    from pgclone.exceptions import ConfigurationError

    known = ", ".join(BUILTIN)
    if isinstance(spec, str):
        spec = {"rule": spec}
    if not isinstance(spec, dict):
        raise ConfigurationError(f"{where} must be a rule name ({known}) or a dict.")
    unknown = set(spec) - {"rule", "sql", "path"}
    if unknown or ("rule" in spec) == ("sql" in spec):
        raise ConfigurationError(
            f"{where} must be a rule name, {{'sql': '… {{column}} …'}} or "
            f"{{'rule': NAME, 'path': [KEY, …]}}; got {spec!r}."
        )
    path = spec.get("path", ())
    if isinstance(path, str) or not all(isinstance(key, str | int) for key in path):
        raise ConfigurationError(f"{where}['path'] must be a list of JSON keys.")
    if "sql" in spec:
        text = spec["sql"]
        if not isinstance(text, str) or "{column}" not in text or ";" in text:
            raise ConfigurationError(
                f"{where}['sql'] must be one SQL expression using {{column}} (no ';')."
            )
        return Rule("sql", sql=text, path=tuple(map(str, path)))
    if spec["rule"] == "keep" and path:
        raise ConfigurationError(f"{where}: 'keep' takes no path (what has no rule is kept).")
    if spec["rule"] not in BUILTIN:
        raise ConfigurationError(f"{where}: unknown rule {spec['rule']!r}; the rules are {known}.")
    return Rule(spec["rule"], path=tuple(map(str, path)))


def problem(rules: tuple[Rule, ...], column: Column) -> str | None:
    """Why these rules can't replace this column's values, or None."""
    if any(rule.path for rule in rules):
        if column.kind != "json":
            return f"a 'path' needs a JSON column, and {column.name} is {column.type_name}"
        inner = Column(column.name, "text", "text")
        return next(filter(None, (_problem(rule, inner) for rule in rules)), None)
    return _problem(rules[0], column)


def _problem(rule: Rule, column: Column) -> str | None:
    name, length = rule.name, column.max_length
    if name in ("sql", "keep"):
        return None
    if name == "null":
        return None if column.nullable else f"{column.name} can't be NULL (NOT NULL)"
    if name == "empty":
        if column.kind not in ("text", "json"):
            return f"'empty' needs a text or JSON column, not {column.type_name}"
        return f"{column.name} is unique: 'empty' would repeat ''" if column.unique else None
    if name == "hash" and column.kind == "uuid":
        return None
    if name == "ip" and column.kind == "inet":
        return "'ip' keeps 24 bits: not for a unique column" if column.unique else None
    if column.kind != "text":
        return f"'{name}' writes text, and {column.name} is {column.type_name}"
    if name == "ip" and column.unique:
        return "'ip' keeps 24 bits: not for a unique column"
    need = _shortest(name, column.unique)
    if length is not None and length < need:
        why = " (unique, so it needs 64 bits of digest)" if column.unique else ""
        return f"'{name}' needs {need} characters{why}, and {column.name} holds {length}"
    return None


def _shortest(name: str, unique: bool) -> int:
    if name in HEXED:
        prefix, suffix, _ = HEXED[name]
        if name == "unusable_password":
            return 41
        return len(prefix) + len(suffix) + (UNIQUE_HEX if unique else SHORT_HEX)
    if name == "ip":
        return 15
    return 1 + TAIL if unique else 1


def render(rules: tuple[Rule, ...], ref: sql.Composable, column: Column) -> sql.Composable:
    """The expression that replaces the column (``ref`` names it); ``problem()`` first."""
    if not rules[0].path:
        return _render(rules[0], ref, column)
    expression: sql.Composable = ref
    inner = Column(column.name, "text", "text")
    for rule in rules:
        path = sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(map(sql.Literal, rule.path)))
        if len(rules) == 1:  # inline: a subquery per row costs a third more
            return _set_at(rule, ref, ref, path, inner)
        # The document so far is named once (v), so that n paths don't repeat it 2**n times.
        expression = sql.SQL("(SELECT {} FROM (SELECT {} AS v) AS j)").format(
            _set_at(rule, ref, sql.SQL("v"), path, inner), expression
        )
    return expression


def _set_at(
    rule: Rule, ref: sql.Composable, document: sql.Composable, path: sql.Composable, inner: Column
) -> sql.Composable:
    """``document`` with the value at ``path`` replaced by the rule's output for
    the column's (``ref``) value there, or as it is where the column has none
    there (no such key, or JSON null)."""
    found = sql.SQL("({} #>> {})").format(ref, path)  # NULL: no value there, or JSON null
    value = _render(rule, found, inner)
    if rule.name in TEXT_RULES:  # NULL exactly when found is: found is looked up once
        return sql.SQL("coalesce(jsonb_set({doc}, {path}, to_jsonb({value})), {doc})").format(
            doc=document, path=path, value=value
        )
    return sql.SQL(
        "CASE WHEN {found} IS NULL THEN {doc} "
        "ELSE jsonb_set({doc}, {path}, coalesce(to_jsonb({value}), 'null'::jsonb)) END"
    ).format(found=found, doc=document, path=path, value=value)


def _render(rule: Rule, ref: sql.Composable, column: Column) -> sql.Composable:
    if rule.name == "keep":
        return ref
    if rule.name == "null":  # typed: to_jsonb() of a bare NULL can't tell its type
        return sql.SQL("CAST(NULL AS {})").format(sql.SQL(column.type_name))
    if rule.name == "empty":
        return sql.SQL("CASE WHEN {} IS NULL THEN NULL ELSE {} END").format(
            ref, sql.SQL("'{}'::jsonb" if column.kind == "json" else "''")
        )
    if rule.name == "sql":
        pieces = rule.sql.split("{column}")
        expression = sql.Composed([part for piece in pieces for part in (sql.SQL(piece), ref)][:-1])
        value = sql.SQL("CAST(({}) AS {})").format(
            expression, sql.SQL(column.cast or column.type_name)
        )
        return sql.SQL("CASE WHEN {} IS NULL THEN NULL ELSE {} END").format(ref, value)
    output = _output(rule.name, column)
    if output.count("{d}") == 1:  # a subquery per row costs more than the hash itself
        # Every operator and function of an output gives NULL for a NULL digest,
        # as the digest does for a NULL value: ``ref`` is read once.
        return sql.SQL(output).format(d=digest(ref))
    named = sql.SQL(output).format(d=sql.SQL("d"))  # the digest computed once, named d
    value = sql.SQL("(SELECT {} FROM (SELECT {} AS d) AS s)").format(named, digest(ref))
    return sql.SQL("CASE WHEN {} IS NULL THEN NULL ELSE {} END").format(ref, value)


def _output(name: str, column: Column) -> str:
    """The output as SQL of ``{d}``, the value's digest (bytea)."""
    length = column.max_length
    if name == "hash" and column.kind == "uuid":
        return f"{_hex(32)}::uuid"
    if name == "ip" and column.kind == "inet":
        return f"({READABLE['ip']})::inet"
    if name in HEXED:
        prefix, suffix, most = HEXED[name]
        room = most if length is None else min(most, length - len(prefix) - len(suffix))
        hexed = _hex(room)
        return " || ".join(part for part in (f"'{prefix}'" * bool(prefix), hexed,
                                             f"'{suffix}'" * bool(suffix)) if part)  # fmt: skip
    readable = READABLE[name]
    if column.unique:
        room = "" if length is None else f", {length - TAIL}"
        left = f"left({readable}{room})" if room else f"({readable})"
        return f"{left} || '-' || {_hex(UNIQUE_HEX)}"
    return f"left({readable}, {length})" if length is not None else f"({readable})"


def _hex(digits: int) -> str:
    """The first ``digits`` hex digits of ``{d}``: of its first bytes only (left()
    of the whole digest's hex would encode 64 bytes and count characters)."""
    hexed = f"encode(substring({{d}} from 1 for {(digits + 1) // 2}), 'hex')"
    return hexed if digits % 2 == 0 else f"left({hexed}, {digits})"


def digest(ref: sql.Composable) -> sql.Composable:
    """The value's keyed digest (bytea) under the session's key: what
    :func:`keyed_digest` computes, by the server.

    The setting holds the derived key (hex), decoded in a scalar subquery that
    the server evaluates once per statement rather than once per row. Rules
    read the first 32 bytes only.
    """
    key = sql.SQL("current_setting({})").format(sql.Literal(KEY_SETTING))
    return sql.SQL(
        "sha512((SELECT decode({key}, 'hex')) || convert_to(({ref})::text, 'UTF8'))"
    ).format(key=key, ref=ref)


def derived_key(key: str) -> bytes:
    """The 32 bytes the digests are keyed with: SHA-256 of ``key``."""
    return hashlib.sha256(key.encode()).digest()


def keyed_digest(key: str, value: str) -> bytes:
    """The digest every rule's output is drawn from: SHA-512 of the derived key
    followed by the value's UTF-8 text, truncated to 32 bytes.

    A keyed hash with one SHA-512 per value, where HMAC takes two (the server's
    hashing is what a scrubbed dump spends most on). Truncated, SHA-512 leaves
    no length extension (as SHA-512/256 and SHA-384 do), so without the key the
    outputs can't be computed, nor tied to a guessed value.
    """
    return hashlib.sha512(derived_key(key) + value.encode()).digest()[:32]


def key_setting(key: str) -> str:
    """What the session's ``pgclone.scrub_key`` holds for ``key``: the derived key, hex."""
    return derived_key(key).hex()


def key_id(key: str) -> str:
    """A short fingerprint of the key, safe to record (it reveals nothing of it)."""
    return hmac.new(key.encode(), b"pgclone key id", hashlib.sha256).hexdigest()[:16]
