"""Leaving models' rows out of a dump (``exclude_models``): the model labels
resolved, and the models whose rows must go with them.

Django's models only: which schema their tables are in is decided per dump
(pgclone.pg.search_path), since the project's sessions may find them anywhere
on its ``search_path``.
"""

from __future__ import annotations

from django.apps import apps
from django.db import models

from pgclone.exceptions import InvalidInput


def model_for_label(label: str) -> type[models.Model]:
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError) as exc:
        raise InvalidInput(
            f"Unknown model {label!r} to exclude: use the 'app_label.ModelName' form "
            "of an installed model, such as 'auth.User'."
        ) from exc
    return model._meta.concrete_model


def excluded_tables(labels: list[str]) -> tuple[list[str], list[str]]:
    """Tables whose rows a dump leaves out, and the models added to keep it restorable.

    Leaving out a model's rows also leaves out the rows of every model that
    references it (its many-to-many tables, ``admin.LogEntry`` for
    ``auth.User``…): otherwise pg_restore could not re-create their foreign
    keys. The models added that way are returned so the job can say so.
    """
    excluded = {model_for_label(label) for label in labels}
    every_model = [m for m in apps.get_models(include_auto_created=True) if not m._meta.proxy]
    added = []
    changed = True
    while changed:
        changed = False
        for model in every_model:
            if model in excluded:
                continue
            if any(
                field.is_relation and field.concrete and field.related_model in excluded
                for field in model._meta.get_fields()
                if getattr(field, "many_to_one", False) or getattr(field, "one_to_one", False)
            ):
                excluded.add(model)
                added.append(model._meta.label)
                changed = True
    tables = sorted({model._meta.db_table for model in excluded})
    return tables, sorted(added)
