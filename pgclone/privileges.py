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

from typing import Any

from pgclone import conf, databases, postgres
from pgclone.exceptions import PrivilegedRestoreRefused

# Predefined roles whose members can reach the server's files and programs.
SERVER_ACCESS_ROLES = ("pg_execute_server_program", "pg_write_server_files", "pg_read_server_files")


def too_powerful(connection: Any) -> str | None:
    """Why the connected role must not restore (None when it may)."""
    ((user, superuser),) = databases.execute(
        connection, "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
    )
    if superuser:
        return f"role {user!r}, a superuser"
    held = [
        role
        for (role,) in databases.execute(
            connection,
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) "
            "AND pg_has_role(current_user, oid, 'USAGE') ORDER BY rolname",
            [list(SERVER_ACCESS_ROLES)],
        )
    ]
    if held:
        return f"role {user!r}, which has the rights of {', '.join(held)}"
    return None


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
            f"on the database server. Restore as the role that owns {live.name!r} (it needs "
            "CREATEDB; see 'Security' in pgclone's README), or set "
            "PGCLONE_ALLOW_SUPERUSER_RESTORE = True if you trust every role that can "
            "create objects in the databases you restore from."
        )
