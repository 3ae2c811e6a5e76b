"""The value types every config model uses: durations, dates, shares, environment variable names, and the
frozen base model that refuses unknown keys (so a typo is an error naming its key path).

Usage: ``class Thing(Model): every: Duration = 3600.0``; ``duration_seconds("12h")`` for command-line options.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

DURATION_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(value: Any) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30d, 12h or 90s")
    if isinstance(value, int | float):
        return float(value)
    match = DURATION_PATTERN.match(str(value))
    if not match:
        raise ValueError(f"invalid duration {value!r}: expected a number and a unit (s, m, h, d, w), e.g. 30d")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def duration_seconds(value: str) -> float:
    """Seconds in ``30d``, ``12h``, ... (raises ValueError); for command-line options."""
    return _duration(value)


def _date(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"invalid date {value!r}: expected YYYY-MM-DD or an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


Duration = Annotated[float, BeforeValidator(_duration)]
Date = Annotated[dt.datetime, BeforeValidator(_date)]
Share = Annotated[float, Field(ge=0.0, le=1.0)]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
