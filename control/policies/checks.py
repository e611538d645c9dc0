"""Checks of policy settings: a bad value raises ``ValueError`` naming the setting."""

from __future__ import annotations

import math


def finite(name: str, value: object, *, zero_ok: bool = False) -> float:
    """``value`` as a float: finite and > 0 (or >= 0 with ``zero_ok``); not a bool."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not zero_ok):  # type: ignore[operator]
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{name}: must be a finite number {bound} (got {value!r})")
    return float(value)  # type: ignore[arg-type]


def integer(name: str, value: object, minimum: int) -> int:
    """``value`` as an int >= ``minimum`` (not a bool, not a float)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum} (got {value!r})")
    return value


def integer_or_none(name: str, value: object, minimum: int) -> int | None:
    """As :func:`integer`, or None (no limit)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum} or null (got {value!r})")
    return value


def boolean(name: str, value: object) -> bool:
    """``value``, which must be True or False."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}: must be true or false (got {value!r})")
    return value
