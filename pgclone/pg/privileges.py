"""Who a restore runs as.

A restore runs code that comes with the dump: index expressions while indexes
are built, check constraints and domain checks while rows are copied in,
triggers, rules and column defaults when pgclone copies its job history into
the new database or ``migrate`` records a migration, and SECURITY DEFINER
functions afterwards (with ``--no-owner`` the restoring role owns them). Any
role that could create objects in the dumped database decides what that code
does. Run by a superuser (or a role holding ``pg_execute_server_program`` and
its siblings) it can run programs and write files on the database server.
``SET ROLE`` does not help: planted code can reset the role to the session's
user. So pgclone refuses to restore while it connects as such a role, unless
PGCLONE_ALLOW_SUPERUSER_RESTORE says otherwise.
"""

from __future__ import annotations

from pgclone import conf
from pgclone.exceptions import PrivilegedRestoreRefused
from pgclone.pg import databases, driver, postgres

# Predefined roles whose members can reach the server's files and programs.
# (pg_signal_backend is not among them: it ends sessions, as pgclone does itself.)
SERVER_ACCESS_ROLES = ("pg_execute_server_program", "pg_write_server_files", "pg_read_server_files")
# From PostgreSQL 16, CREATEROLE grants only roles the creator holds WITH ADMIN OPTION.
CREATEROLE_CONTAINED_FROM = 160000

# Every role that can reach the server (a superuser, or one of SERVER_ACCESS_ROLES)
# and that the session's user or the current user is a member of, directly or
# through other roles, inherited or not: planted code needs only SET ROLE.
_POWERFUL_MEMBERSHIPS = """
    SELECT r.rolname, r.rolsuper, u.rolname
    FROM pg_catalog.pg_roles r
    CROSS JOIN pg_catalog.pg_roles u
    WHERE u.rolname IN (session_user, current_user)
      AND (r.rolsuper OR r.rolname = ANY(%s))
      AND pg_catalog.pg_has_role(u.oid, r.oid, 'MEMBER')
    ORDER BY r.rolname, u.rolname
"""
_CREATEROLE = """
    SELECT rolname FROM pg_catalog.pg_roles
    WHERE rolname IN (session_user, current_user) AND rolcreaterole ORDER BY rolname
"""


def too_powerful(connection: driver.Connection) -> str | None:
    """Why the connected role must not restore (None when it may)."""
    ((version,),) = databases.execute(connection, "SHOW server_version_num")
    memberships = databases.execute(connection, _POWERFUL_MEMBERSHIPS, [list(SERVER_ACCESS_ROLES)])
    creators = [name for (name,) in databases.execute(connection, _CREATEROLE)]
    return verdict(int(version), memberships, creators)


def verdict(
    version: int, memberships: list[tuple[str, bool, str]], creators: list[str]
) -> str | None:
    """Why a restore must be refused, from what :func:`too_powerful` reads: the
    server's version, the powerful roles the users are members of (role, is a
    superuser, user) and the users with CREATEROLE. On PostgreSQL 16 and later
    CREATEROLE is refused only with ADMIN on a powerful role, which makes its
    holder a member of it: refused as such."""
    superusers = [(role, user) for role, superuser, user in memberships if superuser]
    for role, user in superusers:
        if role == user:
            return f"role {user!r}, a superuser"
    for role, user in superusers:
        return f"role {user!r}, which can become the superuser {role!r} (SET ROLE)"
    if memberships:
        user = memberships[0][2]
        held = ", ".join(sorted({role for role, *_ in memberships}))
        return f"role {user!r}, a member of {held}"
    if creators and version < CREATEROLE_CONTAINED_FROM:
        return (
            f"role {creators[0]!r}, which has CREATEROLE: before PostgreSQL 16 that lets it "
            "grant itself pg_execute_server_program"
        )
    return None


def superuser_dump_warning(
    conn: postgres.ConnInfo, connection: driver.Connection | None = None
) -> str | None:
    """What to say when pgclone dumps ``conn``'s database as a role that is, or can
    become, a superuser (None otherwise): pg_dump runs none of the database's code
    and pins its search_path, as every pgclone session does, but a dump config's
    ``where`` and ``sql`` rules and the pre-dump hooks run with the role's rights."""
    with postgres.session(conn, connection) as connection:
        rows = databases.execute(connection, _POWERFUL_MEMBERSHIPS, [[]])
    superusers = sorted({user for _, superuser, user in rows if superuser})
    if not superusers:
        return None
    return (
        f"pgclone dumps {conn.name!r} as role {superusers[0]!r}, which is or can become a "
        "superuser: the dump configs' where and sql rules and the pre-dump hooks run with "
        "a superuser's rights. Dump with a role that only reads (for instance one granted "
        "pg_read_all_data); see pgclone's docs, docs/security.md."
    )


def refuse_privileged(live: postgres.ConnInfo) -> None:
    """Raise PrivilegedRestoreRefused if restoring into ``live`` would run as a
    role that can reach the server's files and programs (and that isn't allowed)."""
    if conf.allow_superuser_restore():
        return
    with databases.maintenance(live) as connection:
        who = too_powerful(connection)
    if who:
        raise PrivilegedRestoreRefused(
            f"pgclone connects to {live.name!r} as {who}. A restore runs code that comes "
            "with the dump (index expressions, check constraints, triggers, column defaults, "
            "SECURITY DEFINER functions) with the rights of the role that restores it, so "
            "any role that could create objects in the dumped database could run programs "
            f"on the database server. Restore as the role that owns {live.name!r}: it needs "
            "CREATEDB, and neither it nor the role it logs in as may be a superuser, a member "
            "of one or of pg_execute_server_program, pg_read_server_files or "
            "pg_write_server_files, or have CREATEROLE before PostgreSQL 16 (see 'Security' "
            "in pgclone's docs, docs/security.md). Or set "
            "PGCLONE_ALLOW_SUPERUSER_RESTORE = True if you trust every role that can "
            "create objects in the databases you restore from."
        )
