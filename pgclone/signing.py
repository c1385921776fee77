"""Signed manifests: with ``PGCLONE_SIGNING_KEY`` set, each manifest carries an
HMAC-SHA256 of its other fields. They include the dump's SHA-256 and sizes, so
the signature vouches for the data too: whoever can write to the storage but
does not hold the key can't change a dump, or put another one in its place,
without the restore (and ``verify``) refusing it.

The key itself is never stored: not in the storage, not in a job record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from pgclone import conf
from pgclone.exceptions import DumpDamaged

FIELD = "signature"


def canonical(manifest: dict[str, Any]) -> bytes:
    """The bytes signed: the manifest without its signature, as canonical JSON."""
    body = {name: value for name, value in manifest.items() if name != FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def signature(manifest: dict[str, Any], secret: str) -> str:
    return hmac.new(secret.encode(), canonical(manifest), hashlib.sha256).hexdigest()


def sign(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with its signature added; unchanged without a signing key."""
    secret = conf.signing_key()
    if not secret:
        return manifest
    return {**manifest, FIELD: signature(manifest, secret)}


def check(key: Any, manifest: dict[str, Any]) -> None:
    """Raise DumpDamaged unless the manifest's signature is right (or, with
    PGCLONE_ALLOW_UNSIGNED, absent). Without a signing key, nothing is checked."""
    secret = conf.signing_key()
    if not secret:
        return
    found = manifest.get(FIELD)
    if found is None:
        if conf.allow_unsigned():
            return
        raise DumpDamaged(
            f"Dump {key} is not signed, and PGCLONE_SIGNING_KEY is set: only signed dumps "
            "are restored. Make a new dump, or set PGCLONE_ALLOW_UNSIGNED = True while "
            "dumps made before signing was turned on are still needed."
        )
    expected = signature(manifest, secret).encode()
    if not isinstance(found, str) or not hmac.compare_digest(
        found.encode("utf-8", "replace"), expected
    ):
        raise DumpDamaged(
            f"Dump {key} is refused, its manifest's signature does not match: it was changed "
            "after it was made, or signed with another key. Restore another dump "
            "(`manage.py pgclone ls` lists them)."
        )


def record_problem(record: dict[str, Any]) -> str:
    """Why a record kept beside a dump (a trial restore's) can't be trusted, or
    "" when it is signed right (or signing is off)."""
    secret = conf.signing_key()
    if not secret:
        return ""
    found = record.get(FIELD)
    if found is None:
        return "" if conf.allow_unsigned() else "it is not signed"
    expected = signature(record, secret).encode()
    if not isinstance(found, str) or not hmac.compare_digest(
        found.encode("utf-8", "replace"), expected
    ):
        return "its signature does not match"
    return ""
