"""What a restore can take its data from: a dump in storage (by key, or a
database's newest), or a database on the same server (``:previous``,
``:current``, ``:NAME``)."""

from __future__ import annotations

from pgclone import conf
from pgclone.exceptions import DumpNotFound, InvalidInput
from pgclone.payloads import Source
from pgclone.pg import databases, ownership, postgres
from pgclone.storage import get_storage, keys


def resolve_source(target: str, live_name: str) -> Source:
    """What a restore target names: a dump, or a database on the same server.

    ``KEY`` is one dump; ``DB_NAME`` that database's newest dump; ``:previous``
    and ``:current`` the copies a reversible restore keeps; ``:NAME`` a database
    on the server (one of PGCLONE_LOCAL_SOURCES when that is set).
    """
    target = target.strip()
    if target.startswith(":"):
        name = target[1:]
        if not name:
            raise InvalidInput("':' must be followed by previous, current or a database name.")
        allowed = conf.local_sources()
        if name in databases.COPY_SUFFIXES:
            name = databases.copy_name(live_name, name)
        elif allowed is not None and name not in allowed:
            listed = ", ".join(f":{source}" for source in allowed) or "none"
            raise InvalidInput(
                f"{target!r} is not a database restores may copy here: PGCLONE_LOCAL_SOURCES "
                f"allows {listed} (and :previous, :current)."
            )
        if name == live_name:
            raise InvalidInput(f"{target!r} is the database being restored: pick another source.")
        return Source(type="database", name=name, label=target)
    return Source(type="dump", key=str(named_dump(target)), label=target)


def named_dump(target: str) -> keys.DumpKey:
    """The dump ``target`` names: a key, or a database name for its newest dump.
    DumpNotFound unless it is complete."""
    storage = get_storage()
    target = target.strip()
    if keys.looks_like_key(target):
        key = keys.parse_key(target)
        storage.read_manifest(key)  # DumpNotFound unless complete
        return key
    keys.validate_database_name(target)
    key = keys.newest(storage.list_keys(target), target)
    if key is None:
        raise DumpNotFound(
            f"No complete dump of database {target!r} in {storage.location}: "
            "`manage.py pgclone ls --only-db-names` lists the dumped databases."
        )
    return key


def local_sizes(database: str = "default") -> dict[str, int | None]:
    """Sizes of the databases on ``database``'s server (None where this role may not look)."""
    return databases.sizes(postgres.conn_info(database))


def local_sources(database: str = "default") -> list[tuple[str, str]]:
    """What ``restore :…`` can copy on this server: (target, database name) pairs
    (only PGCLONE_LOCAL_SOURCES, besides :previous and :current, when that is set)."""
    live = postgres.conn_info(database)
    names = databases.local_databases(live)
    copy_names = {which: databases.copy_name(live.name, which) for which in databases.COPY_SUFFIXES}
    with databases.maintenance(live) as connection:
        seen = ownership.look(connection, list(copy_names.values()), [live.name])
    # A database of that name that pgclone did not keep is no undo (another role made it).
    found = [
        (f":{which}", name)
        for which, name in copy_names.items()
        if name in seen and not ownership.refusal(seen[name], live.name)
    ]
    copies = {name for _, name in found}
    allowed = conf.local_sources()
    found += [
        (f":{name}", name)
        for name in names
        if name not in copies and name != live.name and (allowed is None or name in allowed)
    ]
    return found
