"""Hooks: management commands run at fixed points of a job.

A hook is the name of a management command, optionally followed by its
arguments (``"migrate --noinput"``). Hooks run in the worker's process with
``call_command``; a hook that raises or exits non-zero fails the job with its
own message and the tail of its output.
"""

from __future__ import annotations

import io
import shlex
import time
from typing import Any

from django.core.management import call_command, get_commands

from pgclone.exceptions import ConfigurationError, HookFailed, InvalidInput

OUTPUT_TAIL_CHARS = 2000


def normalize(value: Any, source: str) -> list[str]:
    """Hooks as a list: a setting may hold one command as a string, or a list."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(f"{source} must be a command name or a list of them.")
    return [hook.strip() for hook in value if hook.strip()]


def validate(hooks: list[str]) -> None:
    """Refuse hooks that name no management command, before any work starts."""
    commands = get_commands()
    for hook in hooks:
        try:
            name = shlex.split(hook)[0]
        except ValueError as exc:
            raise InvalidInput(f"Hook {hook!r} can't be parsed: {exc}.") from exc
        if name not in commands:
            raise InvalidInput(
                f"Hook {hook!r}: there is no management command {name!r} in this project "
                "(see `manage.py help` for the available ones)."
            )


def run(hooks: list[str]) -> str:
    """Run hooks in order on the current ``default`` database; return a summary."""
    summary = []
    for hook in hooks:
        argv = shlex.split(hook)
        output = io.StringIO()
        started = time.monotonic()
        try:
            call_command(argv[0], *argv[1:], stdout=output, stderr=output)
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise HookFailed(
                    f"Hook {hook!r} exited with code {exc.code}.{_tail(output)}"
                ) from exc
        except Exception as exc:
            raise HookFailed(f"Hook {hook!r} failed: {_describe(exc)}{_tail(output)}") from exc
        summary.append(f"{hook} ({time.monotonic() - started:.1f}s)")
    return "Ran " + ", ".join(summary) if summary else "No hooks configured."


def _describe(exc: Exception) -> str:
    """The exception's type and message, once (Django's SystemCheckError names itself)."""
    text, name = str(exc).strip(), type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


def _tail(output: io.StringIO) -> str:
    text = output.getvalue().strip()
    return f"\nOutput:\n{text[-OUTPUT_TAIL_CHARS:]}" if text else ""
