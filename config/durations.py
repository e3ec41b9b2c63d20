"""Human durations in YAML (`500ms`, `2s`, `5m`, `1h`) parsed to seconds.

Operators write durations the way they speak; the daemon works in float seconds.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(value: object) -> float:
    """Return seconds for a number (seconds) or a string such as `250ms`, `2s`, `1.5m`."""
    if isinstance(value, bool):
        raise PydanticCustomError(
            "duration", "expected a duration such as '500ms', '2s', '5m', got {got}",
            {"got": repr(value)},
        )
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _PATTERN.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise PydanticCustomError(
            "duration", "expected a duration such as '500ms', '2s', '5m', got {got}",
            {"got": repr(value)},
        )
    if seconds < 0:
        raise PydanticCustomError("duration", "duration must be >= 0, got {got}", {"got": value})
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A non-negative duration in seconds, written in YAML as a number or `500ms`/`2s`/`5m`/`1h`."""
