"""Faults injected into a test worker at one exact point, which no real signal
can hit reliably. ``tests.celery_app`` installs them from the environment, so
a test picks them for the worker it starts; inline tests monkeypatch directly.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PAUSE = "PGCLONE_TEST_PAUSE"
IN_SWAP_WINDOW = "pgclone.pg.swap:_rename_pair"
BEFORE_CREATING_TEMP = "pgclone.steps.restore:_create_temp"


def pause_before(function: Callable[..., Any], path: Path, timeout: float = 120) -> Callable:
    """``function``, but its first call touches ``PATH.started`` and waits until
    ``PATH`` exists (a test kills the worker meanwhile, or lets it go on)."""
    paused = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not paused:
            paused.append(True)
            Path(f"{path}.started").touch()
            deadline = time.monotonic() + timeout
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        return function(*args, **kwargs)

    wrapper.pauses = True
    return wrapper


def install_from_environment() -> None:
    """``PGCLONE_TEST_PAUSE=MODULE:FUNCTION=PATH``: pause before the first call of
    that function, e.g. ``pgclone.pg.swap:_rename_pair`` (inside the swap window:
    new connections refused and sessions ended, the renames not yet done)."""
    spec = os.environ.get(PAUSE)
    if spec:
        target, path = spec.split("=", 1)
        module_name, name = target.split(":")
        module = importlib.import_module(module_name)
        function = getattr(module, name)
        if not getattr(function, "pauses", False):  # installed once per process
            setattr(module, name, pause_before(function, Path(path)))
