"""Sizes and durations as people read them."""

from __future__ import annotations


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def human_count(count: int) -> str:
    return f"{count:,}"


def human_age(seconds: float) -> str:
    """How long ago, in the largest unit that fits: 45s, 12m, 5h, 3d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``45m``, ``26h``, ``2d`` (or ``1.5h``); ValueError otherwise."""
    text = text.strip().lower()
    unit = _DURATION_UNITS.get(text[-1:]) if text else None
    try:
        amount = float(text[:-1]) if unit else float("nan")
    except ValueError:
        amount = float("nan")
    if unit is None or not amount > 0 or amount == float("inf"):
        raise ValueError(
            f"{text!r} is not a duration: write a positive number and a unit, "
            "as in 90s, 45m, 26h or 2d."
        )
    return amount * unit
