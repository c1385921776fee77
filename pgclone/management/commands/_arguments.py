"""The arguments of ``manage.py pgclone``: one subparser per subcommand, whose
help is also the description its own ``--help`` shows."""

from __future__ import annotations

from collections.abc import Callable

from django.core.management.base import CommandParser


def add_subcommands(parser: CommandParser) -> None:
    subparsers = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)

    def add_parser(name: str, *, help: str) -> CommandParser:
        """Each subcommand's help is also the description its own --help shows."""
        return subparsers.add_parser(name, help=help, description=help)

    for subcommand in SUBCOMMANDS:
        subcommand(add_parser)


def _dump(add_parser: Callable[..., CommandParser]) -> None:
    dump = add_parser("dump", help="Dump a database to storage.")
    dump.add_argument("--config", help="A name from PGCLONE_DUMP_CONFIGS (default: default).")
    dump.add_argument(
        "--exclude-model",
        action="append",
        dest="exclude_models",
        metavar="APP.MODEL",
        help="Leave this model's rows out (its table is kept). Repeatable; added to the config's.",
    )
    dump.add_argument(
        "--pre-dump-hook",
        action="append",
        dest="pre_dump_hooks",
        metavar="COMMAND",
        help="A management command to run before dumping. Repeatable; replaces the config's hooks.",
    )
    dump.add_argument("--database", default="default", help="Database alias (default: default).")
    add_run_mode(dump)


def _restore(add_parser: Callable[..., CommandParser]) -> None:
    restore = add_parser(
        "restore",
        help="Restore a dump (or copy a database on this server) into a database.",
    )
    restore.add_argument(
        "target",
        help="A dump key, a database name (its newest dump), :previous, :current, "
        "or :NAME for a database on the same server.",
    )
    restore.add_argument("--config", help="A name from PGCLONE_RESTORE_CONFIGS (default: default).")
    restore.add_argument(
        "--pre-swap-hook",
        action="append",
        dest="pre_swap_hooks",
        metavar="COMMAND",
        help="A management command to run on the restored copy before the swap. "
        "Repeatable; replaces the config's hooks (default: migrate).",
    )
    restore.add_argument(
        "--reversible",
        action="store_true",
        help="Keep :previous (the database before) and :current (right after).",
    )
    restore.add_argument(
        "--database",
        default="default",
        help="Database alias to restore into (default: default).",
    )
    restore.add_argument(
        "--noinput",
        "--no-input",
        action="store_false",
        dest="interactive",
        help="Don't ask for confirmation (it is asked only when standard input is a terminal).",
    )
    add_run_mode(restore)


def _copy(add_parser: Callable[..., CommandParser]) -> None:
    copy = add_parser(
        "copy",
        help="Create a new database from a dump's kept copy (kept first if there is none): "
        "owned by the role pgclone connects as, no hooks, no swap.",
    )
    copy.add_argument("target", help="A dump key, or a database name (its newest dump).")
    copy.add_argument("new_name", metavar="NEWNAME", help="The database to create.")
    copy.add_argument(
        "--config",
        help="A name from PGCLONE_RESTORE_CONFIGS whose dump checks apply (default: default).",
    )
    copy.add_argument(
        "--database",
        default="default",
        help="Alias whose server and role the copy uses (default: default).",
    )
    add_run_mode(copy)


def _ls(add_parser: Callable[..., CommandParser]) -> None:
    ls = add_parser("ls", help="List complete dumps in storage.")
    ls.add_argument("db_name", nargs="?", help="Only this database's dumps.")
    ls.add_argument(
        "--only-db-names", action="store_true", help="List the names of dumped databases."
    )
    ls.add_argument(
        "--local",
        action="store_true",
        help="List the databases on this server that `restore :NAME` can copy.",
    )
    ls.add_argument(
        "-l",
        "--long",
        action="store_true",
        help="With sizes, ages, configs and flags (plain ls prints one key a line).",
    )
    ls.add_argument(
        "--database",
        default="default",
        help="Alias whose server --local lists (default: default).",
    )


def _jobs(add_parser: Callable[..., CommandParser]) -> None:
    jobs = add_parser("jobs", help="List recent jobs.")
    jobs.add_argument("--limit", type=int, default=20, help="How many (default 20).")


def _show(add_parser: Callable[..., CommandParser]) -> None:
    show = add_parser("show", help="Show one job: its steps, timings and error.")
    show.add_argument("job_id", help="A job id, or a unique prefix of one.")


def _tail(add_parser: Callable[..., CommandParser]) -> None:
    tail = add_parser("tail", help="Follow one job live until it ends.")
    tail.add_argument("job_id", help="A job id, or a unique prefix of one.")


def _cancel(add_parser: Callable[..., CommandParser]) -> None:
    cancel = add_parser("cancel", help="Cancel a pending or running job.")
    cancel.add_argument("job_id", help="A job id, or a unique prefix of one.")


def _verify(add_parser: Callable[..., CommandParser]) -> None:
    verify = add_parser(
        "verify",
        help="Check a dump (checksum, archive); with --restore, prove it restores "
        "into a scratch database.",
    )
    verify.add_argument(
        "key", nargs="?", help="The dump key, as `ls` prints it, or a database name."
    )
    verify.add_argument(
        "--latest",
        nargs="?",
        const="",
        metavar="DB_NAME",
        help="The newest dump of DB_NAME (of every dumped database without one).",
    )
    verify.add_argument(
        "--restore",
        action="store_true",
        help="Restore it into a scratch database (never swapped in), run the restore "
        "config's hooks, compare its tables and rows with what the dump recorded, and "
        "keep the outcome beside the dump.",
    )
    verify.add_argument(
        "--leaks",
        action="store_true",
        help="Search a scrubbed dump for the current original values of its scrubbed "
        "columns in --database (sampled as a dump's leak proof samples them).",
    )
    verify.add_argument(
        "--config", help="With --restore: a name from PGCLONE_RESTORE_CONFIGS (its hooks)."
    )
    verify.add_argument(
        "--database",
        default="default",
        help="With --restore: alias on whose server the scratch database is made; with "
        "--leaks: alias of the source database.",
    )
    add_run_mode(verify)


def _health(add_parser: Callable[..., CommandParser]) -> None:
    health = add_parser(
        "health",
        help="Exit 0 only if each database has a recent dump whose last trial restore "
        "(if any) passed.",
    )
    health.add_argument(
        "db_names", nargs="*", metavar="DB_NAME", help="Default: every dumped database."
    )
    health.add_argument(
        "--max-age",
        metavar="DURATION",
        help="How old the newest dump may be: 90s, 45m, 26h (the default), 2d.",
    )


def _sweep(add_parser: Callable[..., CommandParser]) -> None:
    add_parser("sweep", help="Fail jobs whose worker was lost and remove what they left.")


def _keygen(add_parser: Callable[..., CommandParser]) -> None:
    add_parser(
        "keygen",
        help="Print a new age identity (secret) and its recipient (public key) for "
        "encrypting dumps.",
    )


def _scrub_check(add_parser: Callable[..., CommandParser]) -> None:
    scrub_check = add_parser(
        "scrub-check",
        help="List the columns that can hold personal or secret data and that the "
        "scrubbing configs decide nothing for (exit status 1 if any).",
    )
    scrub_check.add_argument("--config", help="Only this dump config, scrubbing or not.")
    scrub_check.add_argument(
        "--database", help="The database alias whose tables are checked (default: default)."
    )
    scrub_check.add_argument(
        "--skeleton",
        action="store_true",
        help="Print the config's 'scrub' and 'tables' sections with a decision for each "
        "undecided column, to paste and review (needs --config).",
    )


def _prune(add_parser: Callable[..., CommandParser]) -> None:
    prune = add_parser(
        "prune", help="Delete dumps that the configs' retention rules no longer keep."
    )
    prune.add_argument("db_name", nargs="?", help="Only this database's dumps.")
    prune.add_argument("--dry-run", action="store_true", help="Only list what would be deleted.")


SUBCOMMANDS = (
    _dump,
    _restore,
    _copy,
    _ls,
    _jobs,
    _show,
    _tail,
    _cancel,
    _verify,
    _health,
    _sweep,
    _keygen,
    _scrub_check,
    _prune,
)


def add_run_mode(parser: CommandParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--wait", action="store_true", help="Follow the job live and exit with its outcome."
    )
    mode.add_argument(
        "--inline",
        action="store_true",
        help="Run the job in this process (no broker or worker needed).",
    )
