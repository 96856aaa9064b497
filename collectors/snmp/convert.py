"""Raw SNMP values to output values, per a profile's field (scale, digits, sentinels, enums, ENTITY-SENSOR)."""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

from .profile import FieldSpec


def as_number(v: Any) -> float | int | None:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, bytes):
        v = v.decode("ascii", "replace")
    if isinstance(v, str):
        try:
            v = int(v) if re.fullmatch(r"-?\d+", v.strip()) else float(v)
        except ValueError:
            return None
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace").strip("\x00").strip()
    return str(v).strip()


class EntitySensor(NamedTuple):
    """ENTITY-SENSOR-MIB facts of a sensor row: entPhySensorScale, entPhySensorPrecision, entPhySensorOperStatus."""

    scale: Any
    precision: Any
    status: Any


def convert(f: FieldSpec, raw: Any, digits: Any = None, ent: EntitySensor | None = None):
    """One raw value to its output value, or None when it is 'not available' or malformed."""
    n = raw if type(raw) is int else as_number(raw)
    if n is None:
        return None
    if f.enum is not None or f.map is not None:
        if n != int(n):
            return None  # an enum is an integer; anything else is malformed
        if f.enum is not None:
            return f.enum.get(int(n))
    if n in f.sentinels or (f.minimum is not None and n < f.minimum):
        return None
    if f.map is not None:
        return f.map.get(int(n), f.default)
    value = float(n) * f.scale
    if f.decimal_digits is not None:
        d = as_number(digits)
        if d is None or not 0 <= d <= 9:
            return None
        value /= 10 ** int(d)
    if f.entity_sensor:
        scale, precision, status = ent or (None, None, None)
        if status is not None and as_number(status) != 1:
            return None  # unavailable or nonoperational
        sc = as_number(scale)
        pr = as_number(precision) or 0
        if sc is not None:
            value *= 10 ** (3 * (int(sc) - 9))
        if pr > 0:
            value /= 10 ** int(pr)
    if getattr(f, "fahrenheit", False):
        value = (value - 32) * 5 / 9
    if not math.isfinite(value):
        return None
    return round(value, 6)


def adjust(f: FieldSpec, v: float, extra: dict) -> float | None:
    """Per-row scaling and units read from other columns of the same row."""
    if isinstance(v, str) or isinstance(v, bool):
        return v
    if f.divisor is not None:
        d = as_number(extra.get(f.divisor))
        if not d:
            return None
        v /= d
    if f.signed_factor is not None:
        k = as_number(extra.get(f.signed_factor))
        if k is None:
            return None
        v = v / -k if k < 0 else v * k if k > 0 else v
    for col, values in (f.fahrenheit_if or {}).items():
        flag = as_number(extra.get(col))
        if flag is None:
            return None
        if flag in values:
            v = (v - 32) * 5 / 9
    if f.absolute:
        v = abs(v)
    return round(v, 6) if math.isfinite(v) else None
