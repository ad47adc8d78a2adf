"""Durations as people write them: "90s", "20m", "1.5h", "1h30m" (time budgets, intervals)."""

from __future__ import annotations

import math
import re

from semisup.errors import UserError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smh])")


def parse_duration(text: str | float | int) -> float:
    """Seconds in a duration such as "90s", "20m", "1.5h", "1h30m" or a plain number of seconds.

    Raises:
        UserError: for anything else, or a duration that is not positive.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        spec = str(text).strip().lower().replace(" ", "")
        parts = _PART.findall(spec)
        if _PART.sub("", spec) or not parts:
            try:
                seconds = float(spec)
            except ValueError:
                raise UserError(
                    f"cannot read the duration {text!r}: write a number with a unit, like 90s, "
                    "20m, 1.5h or 1h30m"
                ) from None
        else:
            seconds = sum(float(value) * _UNITS[unit] for value, unit in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise UserError(f"a duration must be positive, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """A duration as people write it: 45s, 12m, 1h05m."""
    if seconds < 90:
        return f"{seconds:.0f}s"
    minutes = round(seconds / 60)
    return f"{minutes}m" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"
