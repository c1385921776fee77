"""A guess, from a column's name and type, of the rule that fits it.

Only for ``scrub-check --skeleton``: what it prints is a suggestion to review,
never a decision (a column without one fails a scrubbed dump). The guess reads
the parts of the name (split on "_"): ``email`` gives the rule ``email``,
``phone`` gives ``phone``, and so on; no guess is ``keep``.
"""

from __future__ import annotations

# Parts of a column's name (split on "_") and the rule they suggest; the first match wins.
_WORDS = (
    ({"password"}, "unusable_password"),
    ({"email", "mail"}, "email"),
    ({"phone", "mobile", "fax", "tel"}, "phone"),
    ({"address", "street", "postcode", "zipcode", "city"}, "address"),
    ({"firstname", "given"}, "first_name"),
    ({"lastname", "surname", "family", "maiden"}, "last_name"),
    ({"fullname", "name", "username"}, "name"),
    ({"ip"}, "ip"),
    ({"token", "secret", "key", "iban", "ssn", "passport"}, "hash"),
    ({"birth", "birthday", "birthdate", "dob", "note", "notes", "comment", "bio"}, "text"),
)
_NAMES = {"first_name": "first_name", "last_name": "last_name"}


def guess(column: str) -> str | None:
    """The built-in rule a column named so probably wants, or None."""
    name = column.lower()
    if name in _NAMES:
        return _NAMES[name]
    parts = set(name.split("_"))
    return next((rule for words, rule in _WORDS if parts & words), None)
