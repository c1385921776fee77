"""One exception tree for everything pgclone raises on purpose.

Each class's docstring is its default message, so ``raise DumpNotFound()``
already says something useful; pass a message to be more precise.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class PgCloneError(Exception):
    """pgclone failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(PgCloneError):
    """pgclone is misconfigured: check the PGCLONE_* settings."""


class SettingInvalid(ConfigurationError, ImproperlyConfigured):
    """A PGCLONE_* setting has a value pgclone can't use: `manage.py check` says which."""


class ExtensionUnavailable(ConfigurationError):
    """The dump needs an extension the restoring role can't create or fill:
    see PGCLONE_TEMPLATE_DATABASE in pgclone's docs (docs/extensions.md)."""


class UndecidedColumns(ConfigurationError):
    """The dump config scrubs, but decides nothing for some columns that can hold
    personal or secret data: `manage.py pgclone scrub-check` lists them."""


class InvalidInput(PgCloneError):
    """The request is invalid."""


class DatabaseUnavailable(PgCloneError):
    """PostgreSQL could not be reached: check the server and the DATABASES settings."""


class StorageError(PgCloneError):
    """The dump storage could not be used: check PGCLONE_STORAGE_LOCATION."""


class DumpNotFound(PgCloneError):
    """No complete dump matches: list the available dumps with `manage.py pgclone ls`."""


class DumpDamaged(PgCloneError):
    """The dump is damaged: it is not what was written when it was made."""


class RestoreRefused(PgCloneError):
    """Restores are disabled here (PGCLONE_ALLOW_RESTORE is False)."""


class PrivilegedRestoreRefused(RestoreRefused, ConfigurationError):
    """pgclone would restore as a superuser: connect as the database's owner instead."""


class UnscrubbedDumpRefused(RestoreRefused, InvalidInput):
    """Only scrubbed dumps are restored here (require_scrubbed), and this is not one."""


class JobNotFound(PgCloneError):
    """No such job: list jobs with `manage.py pgclone jobs`."""


class BrokerUnavailable(PgCloneError):
    """The Celery broker did not accept the job: start Redis, or run with --inline."""


class HookFailed(PgCloneError):
    """A hook (management command) failed."""


class JobCancelled(PgCloneError):
    """The job was cancelled."""


# Said where a dump gave way to another session's exclusive lock on a table.
LOCKED_HINT = (
    "Another session holds or is waiting for an exclusive lock on a table this job "
    "reads (ALTER TABLE, TRUNCATE, a migration…): the job gave way to it rather than "
    "keep it (and whatever queues behind it) waiting. Run it again once that is done."
)


class TableLocked(PgCloneError):
    """A table the dump reads could not be locked in time: another session
    holds or waits for an exclusive lock on it."""


class CommandFailed(PgCloneError):
    """An external command failed."""

    def __init__(self, argv: list[str], returncode: int, stderr_tail: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr_tail = stderr_tail.strip()
        program = self.argv[0] if self.argv else "command"
        detail = self.stderr_tail or "(no error output)"
        # psql's lock_timeout; pg_dump's --lock-wait-timeout (a statement_timeout on LOCK)
        locked = "due to lock timeout" in detail or (
            "due to statement timeout" in detail and "LOCK TABLE" in detail
        )
        hint = f"\n{LOCKED_HINT}" if locked else ""
        super().__init__(f"{program} exited with code {returncode}: {detail}{hint}")


class LeakFound(PgCloneError):
    """The leak proof found original values of scrubbed columns in the dump."""


class NoMatchingIdentity(PgCloneError):
    """The dump is encrypted, and no age identity here can decrypt it."""
