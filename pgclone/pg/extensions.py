"""Extensions only a superuser can create (postgis, postgres_fdw, dblink…), for
restores that don't run as one.

An administrator creates them once in a template database
(PGCLONE_TEMPLATE_DATABASE); a restore's temporary database is a copy of it,
which any role with CREATEDB may make of a database marked IS_TEMPLATE. The
dump's ``CREATE EXTENSION IF NOT EXISTS`` then finds them and does nothing,
and what only their owner could do is left out of the restore's list
(:meth:`Installed.edit`): ``COMMENT ON EXTENSION``. The rows pg_dump keeps of
their configuration tables (PostGIS's own ``spatial_ref_sys`` rows) are
restored, which the administrator allows once with a GRANT in the template.

Without a template, a dump that needs such an extension is refused before
anything is restored, naming it and the setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pgclone.exceptions import ConfigurationError, ExtensionUnavailable
from pgclone.pg import databases, driver, postgres

SETTING = "PGCLONE_TEMPLATE_DATABASE"
DOCS = "see 'Extensions' in pgclone's docs, docs/extensions.md"
# A line of `pg_restore --list`: "ID; TABLEOID OID DESC SCHEMA NAME OWNER".
_ENTRY = re.compile(r"^(\d+); \d+ \d+ (.*)$")


def setting_problem(value: Any) -> str | None:
    """What is wrong with the setting's value (a name, or a dict of names by
    database alias), or None."""
    if value is None or isinstance(value, str):
        return None
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str | None) for k, v in value.items()
    ):
        return None
    return (
        f"{SETTING} is a {type(value).__name__}: it must be a database name, or a dict "
        "of database names by database alias."
    )


# Compared between the template and the live database: a copy keeps the template's.
_LOCALE = {
    "encoding": "encoding",
    "collate": "LC_COLLATE",
    "ctype": "LC_CTYPE",
    "provider": "locale provider",
    "locale": "ICU or builtin locale",
}


def template_problems(connection: driver.Connection, template: str, live: str) -> list[str]:
    """Why ``template`` can't be what restores into ``live`` are copied from
    (``connection``: to the server, as the role pgclone connects as)."""
    rows = _databases(connection, [template, live])
    found = rows.get(template)
    if found is None:
        return [
            f"The template database {template!r} ({SETTING}) does not exist: an administrator "
            f"creates it with the extensions the live database needs ({DOCS})."
        ]
    problems = []
    if not found["is_template"]:
        problems.append(
            f"The database {template!r} ({SETTING}) is not marked as a template: as a superuser, "
            f'run ALTER DATABASE "{template}" IS_TEMPLATE true (a role with CREATEDB may only '
            "copy a template)."
        )
    if not found["owner_super"] and (live not in rows or found["owner"] != rows[live]["owner"]):
        problems.append(
            f"The template database {template!r} ({SETTING}) is owned by {found['owner']!r}, "
            "neither a superuser nor the live database's owner: whoever owns it decides what "
            "every restored database starts with. Have a superuser create it."
        )
    if live in rows:
        different = [
            f"{label} {found[key]!r} (the live database: {rows[live][key]!r})"
            for key, label in _LOCALE.items()
            if found[key] != rows[live][key]
        ]
        if different:
            problems.append(
                f"The template database {template!r} ({SETTING}) has "
                + ", ".join(different)
                + ": a restore copies the template's. Create it again with the live "
                "database's (CREATE DATABASE … TEMPLATE template0 ENCODING … LOCALE …)."
            )
    return problems


def _databases(connection: driver.Connection, names: list[str]) -> dict[str, dict[str, Any]]:
    catalog = set(databases.columns(connection, "pg_catalog.pg_database"))
    # PostgreSQL 15 added locale providers; 17 renamed daticulocale to datlocale.
    provider = "d.datlocprovider" if "datlocprovider" in catalog else "'c'"
    locale = next((f"d.{c}" for c in ("datlocale", "daticulocale") if c in catalog), "NULL")
    # Only column names from the catalog are formatted in.
    query = (
        "SELECT d.datname, d.datistemplate, pg_catalog.pg_get_userbyid(d.datdba), r.rolsuper, "  # noqa: S608
        f"pg_catalog.pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, {provider}, "
        f"{locale} FROM pg_catalog.pg_database d "
        "JOIN pg_catalog.pg_roles r ON r.oid = d.datdba WHERE d.datname = ANY(%s)"
    )
    rows = databases.execute(connection, query, [names])
    keys = ("is_template", "owner", "owner_super", *_LOCALE)
    return {row[0]: dict(zip(keys, row[1:], strict=True)) for row in rows}


def check_template(connection: driver.Connection, template: str, live: str) -> None:
    """Raise ConfigurationError unless restores into ``live`` may copy ``template``."""
    problems = template_problems(connection, template, live)
    if problems:
        raise ConfigurationError(" ".join(problems))


@dataclass(frozen=True)
class Installed:
    """What a temporary database holds before the restore (its template's
    extensions), what the restoring role may do with it, and so what the
    dump's list must leave out."""

    template: str | None
    role: str
    present: frozenset[str]  # extensions in the database
    foreign: tuple[str, ...]  # quoted names of those the role does not own
    # Configuration tables (schema, name, extension, is a sequence) the role may not write.
    closed: tuple[tuple[str, str, str, bool], ...]
    creatable: dict[str, bool]  # extensions the server has: may the role create them?

    @classmethod
    def inspect(cls, target: postgres.ConnInfo, template: str | None = None) -> Installed:
        with postgres.connect(target) as connection:
            extensions = databases.execute(
                connection,
                "SELECT e.extname, pg_catalog.quote_ident(e.extname), "
                "pg_catalog.pg_has_role(e.extowner, 'USAGE') FROM pg_catalog.pg_extension e",
            )
            # COPY FROM needs INSERT, setval() UPDATE.
            closed = databases.execute(
                connection,
                "SELECT n.nspname, c.relname, e.extname, c.relkind = 'S' "
                "FROM pg_catalog.pg_extension e "
                "CROSS JOIN LATERAL pg_catalog.unnest(e.extconfig) AS config(oid) "
                "JOIN pg_catalog.pg_class c ON c.oid = config.oid "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE NOT pg_catalog.has_table_privilege(c.oid, "
                "CASE WHEN c.relkind = 'S' THEN 'UPDATE' ELSE 'INSERT' END)",
            )
            available = databases.execute(
                connection,
                "SELECT a.name, NOT v.superuser OR v.trusted OR r.rolsuper "
                "FROM pg_catalog.pg_available_extensions a "
                "JOIN pg_catalog.pg_available_extension_versions v "
                "ON v.name = a.name AND v.version = a.default_version "
                "JOIN pg_catalog.pg_roles r ON r.rolname = current_user",
            )
            role = databases.execute(connection, "SELECT current_user")[0][0]
        return cls(
            template=template,
            role=role,
            present=frozenset(name for name, _, _ in extensions),
            foreign=tuple(quoted for _, quoted, owned in extensions if not owned),
            closed=tuple(tuple(row) for row in closed),
            creatable=dict(available),
        )

    def edit(self, listing: str) -> str:
        """The list of ``pg_restore --list`` without what this role can't restore
        here: comments on extensions it does not own. Raises ExtensionUnavailable
        when the dump needs an extension the role can't create, or rows it can't
        write in an extension's configuration table."""
        kept, needed, closed = [], [], []
        for line in listing.splitlines():
            entry = _ENTRY.match(line)
            what = entry.group(2) if entry else ""
            if what.startswith("EXTENSION - "):
                name = what.removeprefix("EXTENSION - ").removesuffix(" ")
                if name not in self.present:
                    needed.append(name)
            if any(what.startswith(f"COMMENT - EXTENSION {quoted} ") for quoted in self.foreign):
                continue
            closed += [table for table in self.closed if what.startswith(_loads(table))]
            kept.append(line)
        problems = self._unavailable(needed) + self._closed(closed)
        if problems:
            raise ExtensionUnavailable(" ".join(problems))
        return "\n".join(kept) + "\n"

    def _where(self) -> str:
        if self.template:
            return f"the template database {self.template!r} ({SETTING})"
        return f"the temporary database (an empty one: {SETTING} is not set)"

    def _unavailable(self, needed: list[str]) -> list[str]:
        absent = [name for name in needed if name not in self.creatable]
        privileged = [name for name in needed if self.creatable.get(name) is False]
        problems = []
        if absent:
            problems.append(
                f"The dump needs the extension(s) {_names(absent)}, which the database server "
                "does not have: install them there (for PostGIS, the postgresql-N-postgis-3 "
                "package of the server's major version N)."
            )
        if privileged:
            if self.template:
                creates = "; ".join(f"CREATE EXTENSION {_ident(name)}" for name in privileged)
                fix = f"as a superuser, run {creates} in {self.template!r}"
            else:
                fix = (
                    "have an administrator create them once in a template database and set "
                    f"{SETTING} to its name ({DOCS}); restoring as a superuser instead "
                    "would run the dump's code as one"
                )
            problems.append(
                f"The dump needs the extension(s) {_names(privileged)}, which only a superuser "
                f"can create, and {self._where()} does not have them: {fix}."
            )
        return problems

    def _closed(self, closed: list[tuple[str, str, str, bool]]) -> list[str]:
        if not closed:
            return []
        grants = [
            f"GRANT {privilege} ON {kind}{', '.join(names)} TO pg_database_owner"
            for privilege, kind, names in (
                ("INSERT", "", _display(t for t in closed if not t[3])),
                ("UPDATE", "SEQUENCE ", _display(t for t in closed if t[3])),
            )
            if names
        ]
        return [
            f"The dump holds rows of {', '.join(_display(closed))}, configuration of the "
            f"extension(s) {_names(sorted(t[2] for t in closed))} in {self._where()}, which "
            f"{self.role!r} may not write: as a superuser, run {'; '.join(grants)} in the "
            f"template database ({DOCS})."
        ]


def _loads(table: tuple[str, str, str, bool]) -> tuple[str, ...]:
    """How the list's entries that write rows of a table or sequence begin."""
    schema, name = table[0], table[1]
    return (f"TABLE DATA {schema} {name} ", f"SEQUENCE SET {schema} {name} ")


def _display(tables: Any) -> list[str]:
    return sorted({postgres.display_name(schema, name) for schema, name, *_ in tables})


def _ident(name: str) -> str:
    """``name`` as SQL writes it: quoted only when it must be."""
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def _names(names: list[str]) -> str:
    return ", ".join(dict.fromkeys(names))
