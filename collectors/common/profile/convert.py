"""Raw values to output values, per a profile's field: register words, bit fields, scale, digits, sentinels,
enums, ENTITY-SENSOR-MIB scaling."""

from __future__ import annotations

import math
import re
import struct
from typing import Any, NamedTuple

from . import WORD_TYPES, FieldSpec


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


def words(f: FieldSpec, raw: Any) -> Any:
    """A typed value from the 16-bit words a register transport read; None if they do not make one."""
    if not isinstance(raw, (list, tuple)):
        return raw  # already a value (the transport decoded it)
    count, fmt = WORD_TYPES[f.type]
    raw = raw[:count]  # an object read wider for another field of the same address: its first words are this type
    if len(raw) != count or not all(type(w) is int and 0 <= w <= 0xFFFF for w in raw):
        return None
    ordered = raw if f.word_order == "big" else raw[::-1]
    v = struct.unpack(">" + fmt, b"".join(w.to_bytes(2, "big") for w in ordered))[0]
    # a float32 carries 7 significant digits: 50.01 Hz is stored as 50.009998..., and is 50.01
    return float(f"{v:.7g}") if fmt == "f" and math.isfinite(v) else v


def exponent(raw: Any) -> int | None:
    """A power-of-ten exponent read from another object: one register word is an int16 (SunSpec sunssf)."""
    if isinstance(raw, (list, tuple)):
        if len(raw) != 1 or type(raw[0]) is not int or not 0 <= raw[0] <= 0xFFFF:
            return None
        raw = raw[0] - 0x10000 if raw[0] >= 0x8000 else raw[0]
    n = as_number(raw)
    return int(n) if n is not None and n == int(n) and -10 <= n <= 10 else None


def convert(f: FieldSpec, raw: Any, digits: Any = None, ent: EntitySensor | None = None):
    """One raw value to its output value, or None when it is 'not available' or malformed."""
    if f.type is not None:
        raw = words(f, raw)
    n = raw if type(raw) is int else as_number(raw)
    if n is None:
        return None
    if f.bit is not None:
        if n != int(n) or n < 0:
            return None  # a bit field is read from an unsigned integer
        n = (int(n) >> f.bit) & ((1 << f.bits) - 1)
        if f.bits == 1 and f.enum is None and f.map is None:
            return bool(n)
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
