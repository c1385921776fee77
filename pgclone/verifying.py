"""What ``verify`` reads in an archive (``manage.py pgclone verify``).

``verify`` makes one pass over the stored dump, checking its size and
SHA-256, and feeds the archive to the two ``pg_restore`` runs below, which
read only its table of contents: ``--list`` (the archive is readable; which
tables have their rows in it) and ``--schema-only`` (the SQL a restore would
run). From their output, the foreign keys a restore could not re-create:
those whose referenced table's rows are not in the archive while the
referencing table's are (a dump made without following every foreign key to
the tables it left out).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from pgclone import configs, payloads
from pgclone.archive import containers, encryption, leak_proof, planned_restore, streams
from pgclone.exceptions import (
    ConfigurationError,
    DumpDamaged,
    InvalidInput,
    LeakFound,
    NoMatchingIdentity,
)
from pgclone.pg import postgres, programs
from pgclone.sharing import leaks, left_out, planned_dump
from pgclone.storage import Storage, keys, signing

Table = tuple[str, str]  # (schema, name)

LIST_ARGV = ["pg_restore", "--list"]
SCHEMA_ARGV = ["pg_restore", "--schema-only", "--file=-"]


def verify(storage: Storage, key: keys.DumpKey) -> dict[str, Any]:
    """Raise DumpNotFound or DumpDamaged unless ``key`` is complete, signed (when
    signing is on), whole and restorable; return its manifest with the number
    of archive entries added.

    An encrypted dump is decrypted with the identities configured here. Without
    one that matches, only its stored bytes are checked (size and SHA-256): the
    manifest returned says ``"looked_inside": False`` and whom it is encrypted to.
    """
    manifest = storage.complete_manifest(key)
    signing.check(key, manifest)
    decryption = {}
    parsed = payloads.Manifest.from_dict(manifest)
    containers.refuse_unknown(parsed.format, f"Dump {key}")  # read as nothing it is not
    if parsed.encrypted:
        try:
            identities = encryption.identities_for(parsed.recipients, f"Dump {key}")
        except NoMatchingIdentity as exc:
            with storage.open(key) as source:
                streams.verify(source, parsed.sha256)
            return {**manifest, "looked_inside": False, "why_not": str(exc)}
        decryption = {
            "identities": identities,
            "expected_plaintext_sha256": parsed.plaintext_sha256,
        }
    if parsed.format in containers.FORMATS:
        return _verify_planned(storage, key, manifest, decryption)
    with tempfile.TemporaryFile() as listing, tempfile.TemporaryFile() as schema:
        with contextlib.ExitStack() as stack:  # one pass over the dump feeds both readers
            source = stack.enter_context(storage.open(key))
            readers = [
                stack.enter_context(
                    programs.spawn(
                        argv, env=programs.child_environment(), stdin=subprocess.PIPE, stdout=out
                    )
                )
                for argv, out in ((LIST_ARGV, listing), (SCHEMA_ARGV, schema))
            ]
            tee = streams.Tee(readers)
            try:
                streams.decompress(
                    source,
                    tee.write,
                    expected_sha256=manifest.get("sha256"),
                    expected_raw_size=manifest.get("raw_size"),
                    on_progress=lambda _: None,
                    **decryption,
                )
            finally:
                tee.close()
        listing_text, schema_text = output_text(listing), output_text(schema)
    check_restorable(key, listing_text, schema_text)
    return {**manifest, "looked_inside": True, "archive_entries": archive_entries(listing_text)}


def _verify_planned(
    storage: Storage, key: keys.DumpKey, manifest: dict[str, Any], decryption: dict[str, Any]
) -> dict[str, Any]:
    """A dump's container: its pg_dump archives read as a pg_dump archive is;
    the copied tables' rows are in it, beside the archives (a planned dump's
    are listed, with the rows its plan wrote)."""
    checks = {
        "expected_sha256": manifest.get("sha256"),
        "expected_raw_size": manifest.get("raw_size"),
        "on_progress": lambda _: None,
        **decryption,
    }
    with tempfile.TemporaryFile() as listing, tempfile.TemporaryFile() as schema:
        with storage.open(key) as source:
            readers = [(LIST_ARGV, listing), (SCHEMA_ARGV, schema)]
            plan = planned_restore.read_archives(source, readers, checks)
        listing_text, schema_text = output_text(listing), output_text(schema)
    planned = [(table["schema"], table["name"]) for table in plan["tables"]]
    check_restorable(key, listing_text, schema_text, planned)
    checked = {**manifest, "looked_inside": True, "archive_entries": archive_entries(listing_text)}
    if not manifest.get("plan"):  # a plain dump's container: every table as it is
        return checked
    rows = manifest["plan"].get("rows") or {}
    return {
        **checked,
        "planned_tables": {
            postgres.display_name(*table): rows.get(postgres.display_name(*table))
            for table in planned
        },
    }


def verify_leaks(storage: Storage, key: keys.DumpKey, alias: str = "default") -> dict[str, Any]:
    """The leak proof of a stored scrubbed dump, against the current values of
    the source database (``alias``): the dump's config's scrubbed columns,
    sampled from every row (not only those the dump kept), searched in its
    data. Raises LeakFound naming where a value was found; returns the sample."""
    manifest = storage.complete_manifest(key)
    signing.check(key, manifest)
    parsed = payloads.Manifest.from_dict(manifest)
    if parsed.format not in containers.FORMATS or not parsed.scrubbed:
        raise InvalidInput(
            f"Dump {key} is not scrubbed: --leaks searches a scrubbed dump for the original "
            "values of its scrubbed columns."
        )
    checks: dict[str, Any] = {
        "expected_sha256": parsed.sha256,
        "expected_raw_size": parsed.raw_size,
        "on_progress": lambda _: None,
    }
    if parsed.encrypted:  # NoMatchingIdentity: nothing to search without one
        checks["identities"] = encryption.identities_for(parsed.recipients, f"Dump {key}")
        checks["expected_plaintext_sha256"] = parsed.plaintext_sha256
    sharing = configs.retention_of(parsed.config).sharing
    if sharing.scrub is None:
        raise ConfigurationError(
            f"Dump {key} was made with the config {parsed.config!r}, which has no 'scrub' "
            "here: --leaks takes the columns to sample from its rules."
        )
    conn = postgres.conn_info(alias)
    out = left_out.left_out(conn, tuple(parsed.exclude_models), sharing)
    plan = planned_dump.make_plan(conn, sharing, out.tables, out.path)
    with postgres.connect(conn) as connection, connection.cursor() as cursor:
        search = leaks.Search(leaks.sample(cursor, plan, kept=False))
    proof = leak_proof.Proof(search)
    router = planned_restore.Router(proof.open_stream)
    with storage.open(key) as source:
        planned_restore.read(router, source, checks)
    if proof.found.hits:
        raise LeakFound(proof.found.message(f"Dump {key}"))
    same_rules = (parsed.plan or {}).get("digest") == plan.digest
    return {"sample": search.size, "columns": search.columns, "same_rules": same_rules}


# An identifier as pg_dump writes it: double-quoted when it needs to be.
_IDENT = r'(?:"(?:[^"]|"")*"|[^\s."(),;]+)'
_TABLE = rf"({_IDENT})\.({_IDENT})"
# pg_dump writes a foreign key as ALTER TABLE [ONLY] t, then on the next line
# ADD CONSTRAINT c FOREIGN KEY (columns) REFERENCES t2(columns) [options].
_FOREIGN_KEY = re.compile(
    rf"^ALTER TABLE (?:ONLY )?{_TABLE}\n\s+ADD CONSTRAINT ({_IDENT}) FOREIGN KEY "
    rf'\((?:"(?:[^"]|"")*"|[^)"])*\) REFERENCES {_TABLE}\((?P<rest>.*)$',
    re.MULTILINE,
)
_ATTACH = re.compile(rf"^ALTER TABLE ONLY {_TABLE} ATTACH PARTITION {_TABLE} ", re.MULTILINE)
# Column lines are indented; a partitioned table's closing parenthesis is followed
# by its PARTITION BY clause.
_PARTITIONED = re.compile(rf"^CREATE TABLE {_TABLE} \(\n(?: .*\n)*\)\nPARTITION BY ", re.MULTILINE)
_TABLE_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (.*)$", re.MULTILINE)


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: Table
    referenced: Table


def output_text(output: IO[bytes]) -> str:
    """What a program wrote to a temporary file."""
    output.seek(0)
    return output.read().decode("utf-8", errors="replace")


def check_restorable(
    key: keys.DumpKey, listing: str, schema: str, planned: Iterable[Table] = ()
) -> None:
    """Raise DumpDamaged, naming them, if a restore could not re-create foreign keys.
    ``planned``: tables whose rows a planned dump holds outside the archive."""
    broken = unrestorable_foreign_keys(listing, schema, planned)
    if broken:
        raise DumpDamaged(_unrestorable_message(key, broken))


def archive_entries(listing: str) -> int:
    return sum(1 for line in listing.splitlines() if line.strip() and not line.startswith(";"))


def unrestorable_foreign_keys(
    listing: str, schema: str, planned: Iterable[Table] = ()
) -> list[ForeignKey]:
    """Foreign keys whose referenced table's rows are not in the archive while
    the referencing table's are: re-creating them would fail on those rows."""
    data = _TableData(listing, schema, planned)
    return [
        key
        for key in foreign_keys(schema)
        if data.kept(key.table) and data.left_out(key.referenced)
    ]


def foreign_keys(schema: str) -> list[ForeignKey]:
    """The foreign keys a restore re-creates and checks (not those NOT VALID)."""
    return [
        ForeignKey(
            name=_unquote(match[3]),
            table=(_unquote(match[1]), _unquote(match[2])),
            referenced=(_unquote(match[4]), _unquote(match[5])),
        )
        for match in _FOREIGN_KEY.finditer(schema)
        if not match["rest"].rstrip().endswith("NOT VALID;")
    ]


class _TableData:
    """Which tables have their rows in the archive. A partitioned table has none
    of its own: its partitions' rows are its rows."""

    def __init__(self, listing: str, schema: str, planned: Iterable[Table] = ()) -> None:
        # The table of contents prints "schema name owner" unquoted, space separated.
        self._entries = [match[1] for match in _TABLE_DATA.finditer(listing)]
        self._planned = set(planned)
        self._partitions: dict[Table, list[Table]] = {}
        for match in _ATTACH.finditer(schema):
            parent = (_unquote(match[1]), _unquote(match[2]))
            child = (_unquote(match[3]), _unquote(match[4]))
            self._partitions.setdefault(parent, []).append(child)
        self._partitioned = {
            (_unquote(match[1]), _unquote(match[2])) for match in _PARTITIONED.finditer(schema)
        }

    def _has_entry(self, table: Table) -> bool:
        if table in self._planned:
            return True
        name = f"{table[0]} {table[1]}"
        return any(entry == name or entry.startswith(name + " ") for entry in self._entries)

    def _leaves(self, table: Table) -> Iterable[Table]:
        children = self._partitions.get(table)
        if not children:
            yield table
            return
        for child in children:
            yield from self._leaves(child)

    def kept(self, table: Table) -> bool:
        return any(self._has_entry(leaf) for leaf in self._leaves(table))

    def left_out(self, table: Table) -> bool:
        if table in self._partitioned and table not in self._partitions:
            return False  # partitioned, with no partition: it never holds rows
        return not self.kept(table)


def _unquote(identifier: str) -> str:
    if identifier.startswith('"'):
        return identifier[1:-1].replace('""', '"')
    return identifier


def _unrestorable_message(key: keys.DumpKey, broken: list[ForeignKey]) -> str:
    problems = "\n".join(
        f"- foreign key {postgres.quote_pattern(fk.name)} of {postgres.display_name(*fk.table)} "
        f"references {postgres.display_name(*fk.referenced)}, whose rows are not in the dump "
        f"while those of {postgres.display_name(*fk.table)} are: a restore would fail "
        f"re-creating it unless {postgres.display_name(*fk.table)} is empty."
        for fk in broken
    )
    return (
        f"Dump {key} can't be restored as it is:\n{problems}\n"
        "Make a new dump with `manage.py pgclone dump`: it leaves out the rows of every "
        "table whose foreign keys reference rows it leaves out."
    )
