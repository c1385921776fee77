"""Dump keys: ``{database_name}/{timestamp}.{config_name}.dump``.

Timestamps are UTC in ISO 8601 basic form with microseconds
(``20261123T230321.482913Z``): fixed width, so sorting keys as text sorts
them in time order.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from pgclone.exceptions import InvalidInput

TIMESTAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"
SUFFIX = ".dump"
MAX_DATABASE_NAME_BYTES = 63  # PostgreSQL's identifier limit (NAMEDATALEN - 1)
MAX_CONFIG_NAME_LENGTH = 100  # Job.config_name's max_length
# A key timestamped later than this after the reader's clock was not made by a dump
# (clocks of machines that dump and read may differ a little): it is never the newest.
FUTURE_LEEWAY_MINUTES = 5
_CONFIG_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_KEY = re.compile(
    r"^(?P<database>[^/]+)/(?P<timestamp>\d{8}T\d{6}\.\d{6}Z)\.(?P<config>[A-Za-z0-9_-]+)\.dump$"
)


@dataclass(frozen=True, order=True)
class DumpKey:
    database: str
    timestamp: str
    config: str

    def __str__(self) -> str:
        return f"{self.database}/{self.timestamp}.{self.config}{SUFFIX}"

    @property
    def created(self) -> dt.datetime:
        return dt.datetime.strptime(self.timestamp, TIMESTAMP_FORMAT).replace(tzinfo=dt.UTC)


def _shortened(name: str) -> str:
    """A name for a message: a very long one is cut, so the message stays readable."""
    return repr(name if len(name) <= 40 else f"{name[:40]}…")


def validate_database_name(name: str) -> str:
    """Database names become the first part of a key, so they can't hold a '/'."""
    size = len(name.encode("utf-8", "surrogatepass")) if name else 0
    if size > MAX_DATABASE_NAME_BYTES:
        raise InvalidInput(
            f"Database name {_shortened(name)} is {size} bytes long: PostgreSQL database "
            f"names have at most {MAX_DATABASE_NAME_BYTES} bytes. Use the name as "
            "`manage.py pgclone ls --only-db-names` prints it."
        )
    if not name or "/" in name or name.startswith(".") or not name.isprintable():
        raise InvalidInput(
            f"Database name {name!r} can't be used in a dump key: it must be non-empty, "
            "printable, contain no '/' and not start with '.'."
        )
    return name


def validate_config_name(name: str) -> str:
    if len(name or "") > MAX_CONFIG_NAME_LENGTH:
        raise InvalidInput(
            f"Config name {_shortened(name)} is {len(name)} characters long: config names "
            f"have at most {MAX_CONFIG_NAME_LENGTH}. Use a name from PGCLONE_DUMP_CONFIGS "
            "or PGCLONE_RESTORE_CONFIGS."
        )
    if not _CONFIG_NAME.match(name or ""):
        raise InvalidInput(
            f"Config name {name!r} is invalid: use letters, digits, '_' and '-' only."
        )
    return name


def format_timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime(TIMESTAMP_FORMAT)


def make_key(database: str, config: str, moment: dt.datetime) -> DumpKey:
    return DumpKey(
        validate_database_name(database), format_timestamp(moment), validate_config_name(config)
    )


def parse_key(text: str) -> DumpKey:
    """Parse a full dump key, refusing anything that could escape the storage root."""
    match = _KEY.match(text)
    if not match or match["database"] in {".", ".."}:
        raise InvalidInput(
            f"{text!r} is not a dump key. Keys look like "
            "'DATABASE/20261123T230321.482913Z.CONFIG.dump'; "
            "see `manage.py pgclone ls` for the available ones."
        )
    validate_database_name(match["database"])  # no key pgclone makes has longer parts
    validate_config_name(match["config"])
    try:
        key = DumpKey(match["database"], match["timestamp"], match["config"])
        key.created  # noqa: B018 - validates the date itself, e.g. no month 13
    except ValueError as exc:
        raise InvalidInput(f"{text!r} has an invalid timestamp.") from exc
    return key


def looks_like_key(text: str) -> bool:
    return "/" in text


def from_the_future(key: DumpKey, now: dt.datetime | None = None) -> bool:
    """Whether the key's timestamp is more than FUTURE_LEEWAY_MINUTES after ``now``."""
    limit = (now or dt.datetime.now(dt.UTC)) + dt.timedelta(minutes=FUTURE_LEEWAY_MINUTES)
    return key.created > limit


def newest(keys: list[DumpKey], database: str, now: dt.datetime | None = None) -> DumpKey | None:
    """The newest dump of exactly this database (never of one sharing its prefix),
    never one timestamped in the future."""
    mine = [key for key in keys if key.database == database and not from_the_future(key, now)]
    return max(mine, key=lambda key: (key.timestamp, key.config), default=None)
