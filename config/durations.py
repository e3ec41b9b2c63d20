"""Human durations in YAML (`500ms`, `2s`, `5m`, `1h`, `7d`) parsed to seconds.

Operators write durations the way they speak; the daemon works in float seconds, always
finite: `.inf`, `.nan` and integers too large for a float are errors, not timeouts that never end.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")  # on stripped text: no two `\s*` to backtrack between


def parse_duration(value: object) -> float:
    """Return seconds for a number (seconds) or a string such as `250ms`, `2s`, `1.5m`."""
    if isinstance(value, bool):
        raise PydanticCustomError(
            "duration",
            "expected a duration such as '500ms', '2s', '5m', got {got}",
            {"got": _shown(value)},
        )
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an integer beyond the range of a float
            seconds = math.inf
    elif isinstance(value, str) and (match := _PATTERN.fullmatch(value.strip())):
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise PydanticCustomError(
            "duration",
            "expected a duration such as '500ms', '2s', '5m', got {got}",
            {"got": _shown(value)},
        )
    if not math.isfinite(seconds):
        raise PydanticCustomError("duration", "duration must be finite, got {got}", {"got": _shown(value)})
    if seconds < 0:
        raise PydanticCustomError("duration", "duration must be >= 0, got {got}", {"got": value})
    return seconds


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A non-negative duration in seconds, written in YAML as a number or `500ms`/`2s`/`5m`/`1h`."""
