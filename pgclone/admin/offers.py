"""What the admin offers to restore: the dumps in storage and the copies on the
server, each with who made it and when, the dumps' kept copies, and the refusal
of a restore into the admin's own database that would leave no account able to
sign in to it."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import router
from django.utils import timezone

from pgclone import api, conf, humanize, payloads
from pgclone.exceptions import DumpNotFound, PgCloneError, RestoreRefused
from pgclone.models import Job
from pgclone.payloads import Manifest
from pgclone.pg import accounts, databases, kept_copies, postgres
from pgclone.sharing import requirement
from pgclone.storage import get_storage, keys
from pgclone.storage.base import DumpInfo

logger = logging.getLogger("pgclone")

UNDO, REDO = ":previous", ":current"


def postgres_aliases() -> list[tuple[str, str]]:
    return [
        (alias, f"{alias} ({config.get('NAME')})")
        for alias, config in settings.DATABASES.items()
        if config.get("ENGINE") in postgres.POSTGRES_ENGINES
    ]


def copies(alias: str) -> tuple[list[str], list[str]]:
    """What the admin offers to restore into ``alias`` from the server itself: the
    copies an undo or a redo goes back to (``:previous``, ``:current``, when they
    exist), and other databases (``:NAME``) only when PGCLONE_LOCAL_SOURCES lists them
    (never with PGCLONE_REQUIRE_SCRUBBED)."""
    kept = {f":{which}" for which in databases.COPY_SUFFIXES}
    targets = [target for target, _ in api.local_sources(alias)]
    others = [target for target in targets if target not in kept]
    return (
        [target for target in targets if target in kept],
        others if conf.local_sources() is not None and not conf.require_scrubbed() else [],
    )


def unrequired(info: DumpInfo) -> str:
    """With PGCLONE_REQUIRE_SCRUBBED, why the admin neither offers nor takes this dump."""
    return requirement.dump_refusal(info.key, info.manifest) if conf.require_scrubbed() else ""


def restorable_dumps(infos: Iterable[DumpInfo]) -> list[DumpInfo]:
    """The dumps of ``infos`` the admin offers to restore: the dumps page's buttons
    and the only keys the restore form takes. One place, so that a rule about
    which dumps may be restored here applies to both."""
    return [info for info in infos if not info.damaged and not unrequired(info)]


def data_flags(info: DumpInfo) -> list[str]:
    """What a dump did to the data, in ``ls --long``'s words: scrubbed (as the one
    rule counts it), subset, rows-excluded."""
    done = (
        ("scrubbed", payloads.counts_as_scrubbed(info.manifest)),
        ("subset", info.manifest.get("subset")),
        ("rows-excluded", info.manifest.get("excluded_tables")),
    )
    return [word for word, did in done if did]


def offered_dump(key: str) -> DumpInfo:
    """The dump ``key`` names, if the admin offers it; PgCloneError saying why not."""
    parsed = keys.parse_key(key)
    infos = get_storage().infos(parsed.database)
    found = [info for info in infos if str(info.key) == str(parsed)]
    if not found:
        raise DumpNotFound(f"There is no complete dump {key} in the storage.")
    if found[0].damaged:
        raise DumpNotFound(found[0].damaged)
    if unrequired(found[0]):
        raise RestoreRefused(unrequired(found[0]))
    if not restorable_dumps(found):
        raise DumpNotFound(f"Dump {key} is not offered for restores here.")
    return found[0]


def offered_problem(key: str, alias: str) -> str:
    """Why the restore form can't take ``key`` for the ``alias`` database ("" when it
    can): it takes only what it offers, never any database on the server."""
    if key.startswith(":"):
        kept, others = copies(alias)
        if key in kept or key in others:
            return ""
        if key[1:] in databases.COPY_SUFFIXES:
            return f"There is no {key} copy of {alias!r} to go back to."
        if conf.require_scrubbed():
            return (
                f"{key!r} is not offered here: PGCLONE_REQUIRE_SCRUBBED is on, and of the "
                "databases on the server only this one's :previous and :current are restored."
            )
        return (
            f"{key!r} is not offered here: the admin copies only the databases listed in "
            "PGCLONE_LOCAL_SOURCES that exist on the server."
        )
    try:
        offered_dump(key)
    except PgCloneError as exc:
        return str(exc)
    return ""


# The copies a reversible restore keeps ------------------------------------------------


@dataclass(frozen=True)
class Copy:
    alias: str
    target: str  # :previous, :current or :NAME
    label: str  # the button's
    made: str  # when and by which job, as a sentence ("" for another database)
    maker: Job | None


def copies_maker(database_name: str) -> Job | None:
    """The restore that kept the ``:previous`` and ``:current`` copies of a database:
    the last one that succeeded, when it was reversible (a restore that is not
    removes them)."""
    last = (
        Job.objects.filter(
            kind=Job.Kind.RESTORE, status=Job.Status.SUCCEEDED, database_name=database_name
        )
        .order_by("-finished_at")
        .first()
    )
    return last if last is not None and last.options.get("reversible") else None


def when(moment: object) -> str:
    """The one date format of pgclone's admin pages."""
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def provenance(target: str, maker: Job | None) -> str:
    if maker is None:
        return "kept by a restore this job history does not hold"
    made = f"kept by restore job {str(maker.pk)[:8]} on {when(maker.finished_at)}"
    if target == UNDO:
        return f"{made}: the database as it was before that restore"
    return f"{made}: the database as that restore left it"


def copy_label(target: str) -> str:
    if target == UNDO:
        return "Undo: restore :previous"
    if target == REDO:
        return "Redo: restore :current"
    return f"Copy {target}"


def copies_offered() -> list[Copy]:
    """The copies on the server the dumps page offers to restore: undo and redo
    always, other databases only those of PGCLONE_LOCAL_SOURCES."""
    found = []
    for alias, _ in postgres_aliases():
        try:
            kept, sources = copies(alias)
        except PgCloneError as exc:  # a server that can't be reached offers nothing
            logger.warning("pgclone admin: can't list the copies of %r: %s", alias, exc)
            continue
        maker = copies_maker(postgres.conn_info(alias).name) if kept else None
        found += [
            Copy(alias, target, copy_label(target), provenance(target, maker), maker)
            for target in kept
        ]
        found += [Copy(alias, target, copy_label(target), "", None) for target in sources]
    return found


# The dumps' kept copies (``keep_copy: true``) -------------------------------------------


@dataclass(frozen=True)
class KeptCopy:
    """One of pgclone's kept copies, on the server of ``aliases``."""

    aliases: tuple[str, ...]
    found: kept_copies.Found

    @property
    def key(self) -> str:
        return self.found.mark.key if self.found.mark else ""

    @property
    def size(self) -> str:
        return humanize.human_bytes(self.found.size)

    @property
    def made(self) -> dt.datetime | None:
        mark = self.found.mark
        try:
            return dt.datetime.fromisoformat(mark.made) if mark else None
        except ValueError:
            return None

    @property
    def age(self) -> str:
        """How long ago it was kept: "3m ago"."""
        made = self.made
        return f"{humanize.human_age((timezone.now() - made).total_seconds())} ago" if made else "-"

    @property
    def servers(self) -> str:
        return ", ".join(self.aliases)

    def of(self, location: str) -> bool:
        """Whether it is the copy of a dump of the storage at ``location``."""
        return self.found.mark is not None and self.found.mark.location == location


def kept_copies_on_servers() -> list[KeptCopy]:
    """pgclone's kept copies on each server the project's aliases name, oldest
    first, as ``ls --local --long`` lists them; a server that can't be reached
    shows none."""
    found = []
    for _, aliases in postgres.aliases_by_server():
        try:
            copies = api.kept_copies(aliases[0])
        except PgCloneError as exc:
            logger.warning("pgclone admin: can't list the kept copies of %r: %s", aliases[0], exc)
            continue
        found += [KeptCopy(tuple(aliases), copy) for copy in copies]
    return found


# Who could sign in to the admin after a restore into its own database ------------------


def runs_the_admin(alias: str) -> bool:
    """Whether ``alias`` is the database this admin's accounts and sessions live in."""
    own = router.db_for_read(get_user_model())
    try:
        return postgres.conn_info(alias).name == postgres.conn_info(own).name
    except PgCloneError:  # the accounts are not in PostgreSQL: no restore touches them
        return False


@dataclass(frozen=True)
class Accounts:
    """Accounts that could sign in to the admin after the restore."""

    count: int | None  # None: not known
    how: str  # what the count is, and where it comes from

    @property
    def text(self) -> str:
        return self.how if self.count is None else f"{self.count} ({self.how})"


def _counted(found: accounts.Counted, what: str, scrubbed: bool = False) -> Accounts:
    """``found``, said with the accounts that lack only a usable password."""
    how = what
    if found.unusable_password:
        more = found.unusable_password
        how += f"; {more} more would, but {'its' if more == 1 else 'their'} password is unusable"
        if scrubbed:
            how += " (a scrubbed dump makes every password unusable unless its config keeps them)"
    return Accounts(found.can_sign_in, how)


def _condition(condition: object) -> str:
    parts = condition if isinstance(condition, list) else []
    return " and ".join(str(part) for part in parts) or "no condition"


def accounts_in_dump(manifest: Manifest) -> Accounts:
    """What the dump step counted in the dump (manifest's ``accounts``); from the
    table counts of a dump made before, the rows of the user table."""
    recorded = manifest.accounts
    if recorded is None:
        return _rows_in_dump(manifest)
    if not isinstance(recorded, dict):
        return Accounts(None, "unknown: the manifest's accounts can't be read")
    table, condition = recorded.get("table"), _condition(recorded.get("condition"))
    what = f"accounts of {table} with {condition}, counted in the dump when it was made"
    count, unusable = recorded.get("count"), recorded.get("unusable_password") or 0
    if not all(type(number) is int for number in (count, unusable)):
        return Accounts(None, f"unknown: the dump could not count the accounts of {table}")
    found = accounts.Counted(count, unusable)
    return _counted(found, what, payloads.counts_as_scrubbed(manifest))


def _rows_in_dump(manifest: Manifest) -> Accounts:
    table = get_user_model()._meta.db_table
    if manifest.tables is None:
        return Accounts(None, "unknown: the dump is older than its manifest's table counts")
    rows = [entry.get("rows") for entry in manifest.tables if entry.get("name") == table]
    if not rows:
        return Accounts(0, f"the dump has no {table} table, or none with rows")
    if rows[0] is None:
        return Accounts(None, f"unknown: the dump recorded no count of {table}")
    return Accounts(
        int(rows[0]),
        f"rows of {table}, from the dump's table counts: the dump is older than pgclone's "
        "count of the accounts that could sign in",
    )


def accounts_in_copy(alias: str, target: str) -> Accounts:
    """Counted in the database itself, as in a dump."""
    live = postgres.conn_info(alias)
    name = target[1:]
    if name in databases.COPY_SUFFIXES:
        name = databases.copy_name(live.name, name)
    users = accounts.user_model()
    if users is None:
        return Accounts(None, "unknown: this project has no user model")
    try:
        found = accounts.count(live.with_name(name), users)
    except PgCloneError as exc:
        return Accounts(None, f"unknown: {exc}")
    return _counted(found, f"accounts with {_condition(users.condition)}, counted in {name}")


def lockout_problem(target: str, alias: str, found: Accounts) -> str:
    """Why the admin refuses this restore into its own database ("" when it doesn't)."""
    if found.count != 0 or not runs_the_admin(alias):
        return ""
    name = postgres.conn_info(alias).name
    return (
        f"Refused: restoring {target} into {name!r}, the database this admin runs on, "
        f"would leave no account that can sign in to the admin ({found.how}). Restore "
        "a dump or copy that holds an active staff account with a usable password, or "
        "restore this one from the command line (`manage.py pgclone restore "
        f"{target} --database {alias}`) and afterwards create an account there "
        "(`manage.py createsuperuser`) or set a password (`manage.py changepassword`)."
    )
