"""Fields that look personal, and the ones a scrubbing dump config leaves as they are.

A guess from the field's type (EmailField, GenericIPAddressField) and name
(email, phone, address, first/last name, birth, ip, iban, token…): it feeds
system check pgclone.W017 and ``manage.py pgclone scrub-check``. A field that
only looks personal gets the rule ``keep`` to say so.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.apps import apps
from django.db import models

from pgclone.exceptions import PgCloneError
from pgclone.sharing import exclusions, sections

PERSONAL_TYPES = (models.EmailField, models.GenericIPAddressField)
# Parts of a field's name (split on "_") that say it holds something personal.
PERSONAL_WORDS = {
    "email", "mail", "phone", "mobile", "fax", "address", "street", "postcode", "zipcode",
    "birth", "birthday", "birthdate", "dob", "ip", "iban", "token", "ssn", "passport",
    "password", "surname", "firstname", "lastname", "fullname",
}  # fmt: skip
PERSONAL_NAMES = {"first_name", "last_name", "full_name", "middle_name", "given_name",
                  "family_name", "maiden_name", "ip_address", "email_address"}  # fmt: skip
NOT_DATA = (models.BooleanField, models.AutoField, models.ForeignObject)


@dataclass(frozen=True)
class PersonalField:
    model: str
    field: str
    kind: str  # the field's class name

    def __str__(self) -> str:
        return f"{self.model}.{self.field} ({self.kind})"


def looks_personal(field: models.Field) -> bool:
    if isinstance(field, NOT_DATA) or field.primary_key:
        return False
    if isinstance(field, PERSONAL_TYPES):
        return True
    name = field.name.lower()
    return name in PERSONAL_NAMES or not PERSONAL_WORDS.isdisjoint(name.split("_"))


def personal_fields() -> list[PersonalField]:
    """Personal-looking fields of the installed models (pgclone's own excluded)."""
    found = []
    for model in apps.get_models():
        if model._meta.proxy or model._meta.app_label == "pgclone":
            continue
        found += [
            PersonalField(model._meta.label, field.name, type(field).__name__)
            for field in model._meta.concrete_fields
            if looks_personal(field)
        ]
    return found


def unruled(
    rules: tuple[sections.FieldRules, ...] | None, exclude_models: tuple[str, ...]
) -> list[PersonalField]:
    """The personal-looking fields a config with these scrub ``rules`` dumps
    without a rule (the rows of ``exclude_models`` are left out)."""
    ruled = {(field.model, field.field) for field in rules or ()}
    try:
        tables, _ = exclusions.excluded_tables(list(exclude_models))
    except PgCloneError:  # an unknown model: reported when a dump is asked for
        tables = []
    return [
        field
        for field in personal_fields()
        if (field.model, field.field) not in ruled
        and apps.get_model(field.model)._meta.db_table not in tables
    ]
