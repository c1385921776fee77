"""The test project's settings in a project that never loads its Celery app (pgclone.W013).

Import it as the top-level module ``settings_no_celery`` (with ``tests/`` on
``PYTHONPATH``), never as ``tests.settings_no_celery``: importing anything from
the ``tests`` package runs ``tests/__init__.py``, which loads the test project's
Celery app as a Django project does. So this module runs ``tests/settings.py``
by its path and leaves out what lives in that package (the test app, the URLs).
"""

from __future__ import annotations

import runpy
from pathlib import Path

_BASE = runpy.run_path(str(Path(__file__).with_name("settings.py")))
globals().update({name: value for name, value in _BASE.items() if name.isupper()})

INSTALLED_APPS = [app for app in _BASE["INSTALLED_APPS"] if not app.startswith("tests.")]
ROOT_URLCONF = None
