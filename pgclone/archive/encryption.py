"""Encryption at rest with age: recipients (public keys) and identities (secret keys).

A dump is encrypted to every recipient of ``PGCLONE_ENCRYPTION_RECIPIENTS``
(or of its dump config's ``encryption_recipients``), so any one of their
identities decrypts it: several recipients let keys be rotated and a
break-glass key be kept aside. Workers that restore read identities from the
files of ``PGCLONE_ENCRYPTION_IDENTITIES`` and from the environment variable
``PGCLONE_AGE_IDENTITY``.

An identity is a secret: no message here ever quotes one, nor a line of an
identity file. Recipients are public and are named freely.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import pyrage

from pgclone import conf
from pgclone.exceptions import ConfigurationError, NoMatchingIdentity

METHOD = "age"
RECIPIENTS_SETTING = "PGCLONE_ENCRYPTION_RECIPIENTS"
IDENTITIES_SETTING = "PGCLONE_ENCRYPTION_IDENTITIES"
IDENTITY_ENV = "PGCLONE_AGE_IDENTITY"
IDENTITY_PREFIX = "AGE-SECRET-KEY-1"


def recipient_problems(value: Any, where: str) -> list[str]:
    """What is wrong with a list of recipients (a setting's, a config key's)."""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        return [f"{where} must be a list of age recipients (public keys starting with age1…)."]
    problems = []
    for text in value:
        try:
            pyrage.x25519.Recipient.from_str(text)
        except (pyrage.RecipientError, TypeError) as exc:
            problems.append(
                f"{where} holds {text!r}, which is not an age recipient ({exc}): write "
                "the public key `manage.py pgclone keygen` printed (age1…)."
            )
    return problems


def checked_recipients(value: Any, where: str) -> tuple[str, ...]:
    """``value`` as a tuple of recipients; ConfigurationError naming a malformed one."""
    problems = recipient_problems(value, where)
    if problems:
        raise ConfigurationError(" ".join(problems))
    return tuple(value)


def setting_recipients() -> tuple[str, ...]:
    return checked_recipients(conf.encryption_recipients(), RECIPIENTS_SETTING)


def encrypt_to(recipients: Sequence[str]) -> list[Any]:
    return [pyrage.x25519.Recipient.from_str(text) for text in recipients]


def describe(recipients: Sequence[str]) -> dict[str, Any]:
    """What a manifest records about a dump's encryption (public keys only)."""
    return {"method": METHOD, "recipients": list(recipients)}


def _parse_identity(text: str, where: str) -> Any:
    try:
        return pyrage.x25519.Identity.from_str(text)
    except (pyrage.IdentityError, TypeError):
        raise ConfigurationError(
            f"{where} is not an age identity (a secret key starting with {IDENTITY_PREFIX}): "
            "write what `manage.py pgclone keygen` printed."
        ) from None


def _identities_in_file(path: Any) -> list[Any]:
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not text"
        raise ConfigurationError(
            f"Can't read the age identity file {path} ({IDENTITIES_SETTING}): {reason}. "
            "It must be readable by the user the workers run as."
        ) from None
    found = [
        _parse_identity(line.strip(), f"Line {number} of the age identity file {path}")
        for number, line in enumerate(lines, 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not found:
        raise ConfigurationError(f"The age identity file {path} holds no identity.")
    return found


def identity_paths() -> list[Any]:
    paths = conf.encryption_identities()
    if isinstance(paths, str | os.PathLike):
        return [paths]  # one path written without its list: still meant
    if not isinstance(paths, list | tuple):
        raise ConfigurationError(f"{IDENTITIES_SETTING} must be a list of file paths.")
    return list(paths)


def load_identities() -> list[Any]:
    """Every identity configured here (files, then the environment); ConfigurationError
    when a file can't be read or holds something else."""
    found = [identity for path in identity_paths() for identity in _identities_in_file(path)]
    from_env = os.environ.get(IDENTITY_ENV, "").strip()
    if from_env:
        found.append(_parse_identity(from_env, f"The environment variable {IDENTITY_ENV}"))
    return found


def identity_problems() -> list[str]:
    """What keeps the configured identities from being read, or leaves a file
    of them readable by others (for a system check)."""
    try:
        load_identities()
    except ConfigurationError as exc:
        return [str(exc)]
    problems = []
    for path in identity_paths():
        mode = os.stat(path).st_mode & 0o777
        if mode & 0o077:
            problems.append(
                f"The age identity file {path} can be read by other users than its owner "
                f"(mode {mode:04o}): `chmod 600 {path}`."
            )
    return problems


def public_keys(identities: Iterable[Any]) -> list[str]:
    return [str(identity.to_public()) for identity in identities]


def identities_for(recipients: Sequence[str], what: str) -> list[Any]:
    """The identities here that can decrypt what was encrypted to ``recipients``.

    Raises NoMatchingIdentity, naming the recipients, when there is none: a
    restore fails then before anything is created.
    """
    identities = load_identities()
    matching = [i for i in identities if str(i.to_public()) in set(recipients)]
    if matching:
        return matching
    if identities:
        here = "the identities here are those of " + ", ".join(public_keys(identities))
    else:
        here = f"no identity is configured here ({IDENTITIES_SETTING}, or {IDENTITY_ENV})"
    raise NoMatchingIdentity(
        f"{what} is encrypted with age for {', '.join(recipients)}, and {here}. Give the "
        "workers that restore the identity (secret key) of one of those recipients."
    )


def generate() -> tuple[str, str]:
    """A new identity (secret) and its recipient (public)."""
    identity = pyrage.x25519.Identity.generate()
    return str(identity), str(identity.to_public())
