"""Parse the human duration strings the config uses ("500ms", "30s", "5m", "2h", "7d")."""

from __future__ import annotations

import math
import re

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration_s(text: object) -> float:
    """Return the duration in seconds; a bare number is taken as seconds."""
    if isinstance(text, bool):
        raise ValueError("expected a duration such as '30s', not a boolean")
    if isinstance(text, int | float):
        try:
            seconds = float(text)
        except OverflowError:  # an int beyond float range
            raise ValueError("a duration must be a finite number") from None
        if not math.isfinite(seconds):  # TOML allows `inf` and `nan`
            raise ValueError("a duration must be a finite number")
        if seconds < 0:
            raise ValueError("a duration cannot be negative")
        return seconds
    if not isinstance(text, str):
        raise ValueError("expected a duration such as '500ms', '30s', '5m', '2h' or '7d'")
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration; use a number and a unit: '500ms', '30s', '5m', '2h', '7d'"
        )
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not math.isfinite(seconds):  # "999...9d" overflows to inf
        raise ValueError(f"{text!r} is too long a duration")
    return seconds


def duration_text(seconds: float) -> str:
    """A duration as a config writes it: '30d', '12h', '90s' (`storage.retention`...)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def glance_text(seconds: float) -> str:
    """`2d 3h`, `5h 12m`, `14m`, `40s`: the two largest units, for reading at a glance."""
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    units = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    first = next((i for i, (value, _) in enumerate(units) if value), len(units) - 1)
    shown = [f"{value}{unit}" for value, unit in units[first : first + 2] if value]
    return " ".join(shown) or "0s"


def parse_since_ms(text: str, now_ms: int) -> int:
    """Turn "2h" (ago) or an ISO date/time into epoch milliseconds, for --since flags."""
    from datetime import UTC, datetime

    try:
        return now_ms - int(parse_duration_s(text) * 1000)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    except (ValueError, OverflowError):  # OverflowError: a date at the edge of the calendar
        raise ValueError(
            f"{text!r} is neither a duration ago ('2h', '7d') nor an ISO date ('2026-11-29')"
        ) from None
