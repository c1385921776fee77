"""``manage.py`` of the tiny project that runs django-pgclone 3.8 (in its own virtualenv).

This folder holds no ``pgclone`` package, so the virtualenv's django-pgclone is
the one imported.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "legacy_settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
