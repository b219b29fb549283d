"""KFP recurring-run cron expressions: six fields, seconds first (robfig/cron in the KFP backend).

The backend's parser makes the day-of-week field optional, so a classic five-field cron is not rejected
there: it is read shifted by one field ("0 2 * * 0" becomes second 0, minute 2, month 0) and either
fails later or fires on the wrong schedule. We reject it up front and say how to write it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from sqltune.errors import SqltuneError


class _Field(NamedTuple):
    name: str
    lo: int
    hi: int
    names: tuple[str, ...] = ()  # names[i] stands for the value lo + i
    any_ok: bool = False  # whether `?` (no specific value) is allowed


_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31, any_ok=True),
    _Field("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    _Field("day of week", 0, 6, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), any_ok=True),
)
_DESCRIPTORS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_EVERY = re.compile(r"@every (\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+")
_ITEM = re.compile(r"(?P<range>\*|\?|(?P<lo>\w+)(-(?P<hi>\w+))?)(/(?P<step>\d+))?")

FORMAT_HELP = (
    "KFP cron has six fields, seconds first: 'second minute hour day-of-month month day-of-week', "
    "e.g. '0 0 2 * * 0' = 02:00:00 every Sunday"
)


def _value(text: str, field: _Field) -> int:
    if text.upper() in field.names:
        return field.names.index(text.upper()) + field.lo
    if not text.isdigit() or not field.lo <= int(text) <= field.hi:
        names = f" or {field.names[0]}-{field.names[-1]}" if field.names else ""
        raise SqltuneError(f"cron {field.name} value {text!r} is not in {field.lo}-{field.hi}{names}")
    return int(text)


def validate_cron(cron: str) -> str:
    """Return the normalized six-field expression (or descriptor), or raise a SqltuneError that explains it."""
    expression = " ".join(cron.split())
    if expression.startswith("@"):
        if expression in _DESCRIPTORS or _EVERY.fullmatch(expression):
            return expression
        raise SqltuneError(f"unknown cron descriptor {cron!r}; use one of {sorted(_DESCRIPTORS)} or '@every 1h30m'")
    fields = expression.split(" ")
    if len(fields) == 5:
        raise SqltuneError(
            f"cron {cron!r} has 5 fields, like a Unix crontab. {FORMAT_HELP}. "
            f"Add the seconds in front: '0 {expression}'"
        )
    if len(fields) != 6:
        raise SqltuneError(f"cron {cron!r} has {len(fields)} fields. {FORMAT_HELP}")
    for text, field in zip(fields, _FIELDS, strict=True):
        for item in text.split(","):
            match = _ITEM.fullmatch(item)
            if not match:
                raise SqltuneError(f"cron {field.name} field {text!r} is not valid. {FORMAT_HELP}")
            if match["range"] == "?" and not field.any_ok:
                raise SqltuneError(f"cron {field.name} field cannot be '?' (only day of month / day of week can)")
            if match["lo"] is not None:
                lo = _value(match["lo"], field)
                if match["hi"] is not None and _value(match["hi"], field) < lo:
                    raise SqltuneError(f"cron {field.name} range {match['range']!r} runs backwards")
            if match["step"] is not None and int(match["step"]) == 0:
                raise SqltuneError(f"cron {field.name} step in {item!r} must be at least 1")
    return expression
