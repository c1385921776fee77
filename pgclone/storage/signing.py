"""Signed manifests: with ``PGCLONE_SIGNING_KEY`` set, each manifest carries an
HMAC-SHA256 of its other fields. They include the dump's SHA-256 and sizes, so
the signature vouches for the data too, and its key, database, config and
creation time, so it vouches for where the dump belongs: whoever can write to
the storage but does not hold the key can't change a dump, put another one in
its place, or copy one under another key (another database's, a later time)
without every reader refusing it (restore, ``verify``, ``ls``, ``health``, the
admin, retention).

Keys rotate as Django's SECRET_KEY_FALLBACKS do: what is new is signed with
PGCLONE_SIGNING_KEY and names it by its key id, 8 hex digits of its SHA-256;
PGCLONE_SIGNING_KEY_FALLBACKS still check what older keys signed.

A key timestamped in the future is refused whether signing is on or not: no
dump was made then, and the newest key is what ``restore DB_NAME`` takes.

The key itself is never stored: not in the storage, not in a job record.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import json
from typing import Any

from pgclone import conf
from pgclone.exceptions import DumpDamaged
from pgclone.storage import keys

FIELD = "signature"
KEY_ID_FIELD = "signing_key_id"
LISTED = "(`manage.py pgclone ls` lists them)"


class Signature(enum.Enum):
    """What checking a record's signature found."""

    UNCHECKED = "unchecked"  # signing is off, or unsigned records are allowed
    VALID = "valid"
    UNSIGNED = "unsigned"
    UNKNOWN_KEY = "unknown key"  # its key id names none of the configured keys
    MISMATCH = "mismatch"


def key_id(secret: str) -> str:
    """How a record names the key that signed it (never the key itself)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


def canonical(manifest: dict[str, Any]) -> bytes:
    """The bytes signed: the manifest without its signature, as canonical JSON."""
    body = {name: value for name, value in manifest.items() if name != FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def signature(manifest: dict[str, Any], secret: str) -> str:
    return hmac.new(secret.encode(), canonical(manifest), hashlib.sha256).hexdigest()


def sign(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its key id and signature added; unchanged without a signing key."""
    secret = conf.signing_key()
    if not secret:
        return record
    body = {**record, KEY_ID_FIELD: key_id(secret)}
    return {**body, FIELD: signature(body, secret)}


def _keys_for(record: dict[str, Any]) -> list[str]:
    """The configured keys that may have signed ``record``: the one its key id
    names, or every one for records signed before key ids were written."""
    fallbacks = conf.signing_key_fallbacks()
    if not isinstance(fallbacks, list | tuple):  # a string is no list of keys (pgclone.E012)
        fallbacks = []
    configured = [conf.signing_key(), *fallbacks]
    usable = [secret for secret in configured if isinstance(secret, str) and secret]
    wanted = record.get(KEY_ID_FIELD)
    if wanted is None:
        return usable
    return [secret for secret in usable if key_id(secret) == wanted]


def signature_of(record: dict[str, Any]) -> Signature:
    if not conf.signing_key():
        return Signature.UNCHECKED
    found = record.get(FIELD)
    if found is None:
        return Signature.UNCHECKED if conf.allow_unsigned() else Signature.UNSIGNED
    candidates = _keys_for(record)
    if not candidates:
        return Signature.UNKNOWN_KEY
    given = found.encode("utf-8", "replace") if isinstance(found, str) else b""
    for secret in candidates:
        if hmac.compare_digest(given, signature(record, secret).encode()):
            return Signature.VALID
    return Signature.MISMATCH


def _unknown_key(record: dict[str, Any]) -> str:
    named = str(record.get(KEY_ID_FIELD))[:16]
    return (
        f"signed with a key this machine doesn't have (key id {named!r}): neither "
        "PGCLONE_SIGNING_KEY nor one of PGCLONE_SIGNING_KEY_FALLBACKS"
    )


def _misplaced(key: keys.DumpKey, manifest: dict[str, Any]) -> str:
    """Where the manifest's own fields disagree with the key it is stored under."""
    expected = {"key": str(key), "database": key.database, "config": key.config}
    for name, value in expected.items():
        if manifest.get(name) != value:
            return f"{name} = {manifest.get(name)!r}, where it is stored says {value!r}"
    try:
        created = dt.datetime.fromisoformat(manifest.get("created"))
    except (TypeError, ValueError):
        created = None
    if created != key.created:
        return (
            f"created = {manifest.get('created')!r}, where it is stored says "
            f"{key.created.isoformat()!r}"
        )
    return ""


def _future(key: keys.DumpKey, now: dt.datetime) -> str:
    moment = "%Y-%m-%d %H:%M:%S UTC"
    return (
        f"Dump {key} is refused: its key is timestamped {key.created:{moment}}, more than "
        f"{keys.FUTURE_LEEWAY_MINUTES} minutes after this machine's clock "
        f"({now.astimezone(dt.UTC):{moment}}): no dump was made then, so it is never taken "
        "as the newest. Remove it from the storage (or, if a clock is wrong, set it right)."
    )


def examine(
    key: keys.DumpKey, manifest: dict[str, Any], now: dt.datetime | None = None
) -> tuple[str, bool]:
    """Whether the manifest stored under ``key`` can be used: (why not, or "";
    whether its signature checked)."""
    now = now or dt.datetime.now(dt.UTC)
    if keys.from_the_future(key, now):
        return _future(key, now), False
    found = signature_of(manifest)
    if found is Signature.UNSIGNED:
        return (
            f"Dump {key} is not signed, and PGCLONE_SIGNING_KEY is set: only signed dumps "
            "are restored. Make a new dump, or set PGCLONE_ALLOW_UNSIGNED = True while "
            "dumps made before signing was turned on are still needed."
        ), False
    if found is Signature.UNKNOWN_KEY:
        return (
            f"Dump {key} is refused: its manifest was {_unknown_key(manifest)}. Add the key it "
            f"was signed with to PGCLONE_SIGNING_KEY_FALLBACKS, or restore another dump {LISTED}."
        ), False
    if found is Signature.MISMATCH:
        return (
            f"Dump {key} is refused, its manifest's signature does not match: it was changed "
            f"after it was made, or signed with another key. Restore another dump {LISTED}."
        ), False
    if found is Signature.VALID:
        misplaced = _misplaced(key, manifest)
        if misplaced:
            return (
                f"Dump {key} is refused: its signed manifest says {misplaced}. It was copied "
                "or renamed in the storage after it was made, and is not the dump its key "
                f"names. Restore another dump {LISTED}, and remove this one from the storage."
            ), False
    return "", found is Signature.VALID


def check(key: keys.DumpKey, manifest: dict[str, Any], now: dt.datetime | None = None) -> None:
    """Raise DumpDamaged unless the manifest may be used where it is stored: its key
    is not in the future, and with a signing key its signature is right (or, with
    PGCLONE_ALLOW_UNSIGNED, absent) and its key, database, config and creation time
    are those of the key it is stored under."""
    problem, _ = examine(key, manifest, now)
    if problem:
        raise DumpDamaged(problem)


def record_problem(record: dict[str, Any]) -> str:
    """Why a record kept beside a dump (a trial restore's) can't be trusted, or
    "" when it is signed right (or signing is off)."""
    found = signature_of(record)
    if found is Signature.UNSIGNED:
        return "it is not signed"
    if found is Signature.UNKNOWN_KEY:
        return f"it was {_unknown_key(record)}"
    if found is Signature.MISMATCH:
        return "its signature does not match"
    return ""
