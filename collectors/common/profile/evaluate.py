"""Polled values to readings, per a profile (pure): rows, tags, conversions, derived fields."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from . import Profile, field_catalogue, is_scalar, norm_oid
from .convert import EntitySensor, adjust, as_number, convert, exponent, text
from .plan import plan_of


@dataclass
class Reading:
    measurement: str
    tags: dict[str, str]
    field: str
    value: float | int | bool | str
    unit: str
    wrap_at: float | None = None  # counters that wrap: the cap, in output units
    origin: str | None = None  # the fallback object the value came from, where the field's own gave nothing


def _fallback(f, data: dict[str, Any]) -> tuple[Any, str] | tuple[None, None]:
    """The first of a field's fallback objects with a valid value: (value, its OID)."""
    for fb in f.fallback:
        oid = norm_oid(fb.oid)
        raw = data.get(oid)
        v = convert(fb, raw) if raw is not None else None
        if v is not None:
            return v, oid
    return None, None


class _Everywhere:
    """A scalar standing for a column: the same value in every row."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def get(self, _idx: str, default: Any = None) -> Any:
        return default if self.value is None else self.value


def _scaled(f, v: float, data: dict[str, Any]) -> float | None:
    """A scalar's scaling read from other objects (a SunSpec scale factor, a unit selector), and its sign."""
    if f.scale_exponent:
        e = exponent(data.get(norm_oid(f.scale_exponent)))
        if e is None:
            return None
        v = round(v * 10.0 ** e, 6)
    if f.scale_select:
        sel = data.get(norm_oid(f.scale_select.object))
        sel = as_number(sel[0] if isinstance(sel, (list, tuple)) and len(sel) == 1 else sel)
        factor = f.scale_select.factors.get(int(sel)) if sel is not None and sel == int(sel) else None
        if factor is None:
            return None
        v = round(v * factor, 6)
    return abs(v) if f.absolute else v


def _derived(measurement: str, tags: dict, readings: list[Reading], cat) -> list[Reading]:
    """Load against rating, for every row that reports both its current and its rated current."""
    if measurement != "pdu" or len(readings) < 2:
        return []
    got = {r.field: r.value for r in readings}
    amps, rated = got.get("current_amperes"), got.get("rated_current_amperes")
    if isinstance(amps, (int, float)) and isinstance(rated, (int, float)) and rated > 0:
        return [Reading("pdu", tags, "rated_load_percent", round(100.0 * amps / rated, 3),
                        cat[("pdu", "rated_load_percent")].unit)]
    return []


def index_text(parts: list[str], pos: int) -> str:
    """A string in a row index (RFC 2578 7.7: a length, then one component per character) from component pos."""
    try:
        n = int(parts[pos - 1])
        chars = [int(c) for c in parts[pos:pos + n]]
    except (IndexError, ValueError):
        return ""
    if len(chars) != n or not all(32 <= c < 127 for c in chars):
        return ""
    return "".join(map(chr, chars))


@lru_cache(maxsize=65536)
def index_key(idx: str) -> list[int]:
    return [int(x) for x in idx.split(".") if x.isdigit()]


def evaluate(profile: Profile, data: dict[str, Any], device_tags: dict[str, str] | None = None) -> list[Reading]:
    """Map polled values {oid: value} to readings, per the profile. Pure; malformed values are skipped.

    Readings of one row share one tags dict (callers may group a row's fields into one sample by it).
    """
    cat = field_catalogue()
    base = dict(profile.device_tags)
    base.update(device_tags or {})
    out: list[Reading] = []
    plan = plan_of(profile)
    polled = plan.columns(data)
    empty: dict[str, Any] = {}

    def columns(col: str) -> dict[str, Any]:
        return polled.get(col, empty)

    for g, static in plan.groups:
        if static is None:
            tags = {**base, **g.static_tags}
            for f in g.fields:
                raw = data.get(norm_oid(f.oid))
                v = convert(f, raw) if raw is not None else None
                if v is not None and not isinstance(v, (bool, str)):
                    v = _scaled(f, v, data)
                origin = None
                if v is None and f.fallback:
                    v, origin = _fallback(f, data)
                if v is not None:
                    out.append(Reading(g.measurement, tags, f.field, v, cat[(g.measurement, f.field)].unit,
                                       f.wrap_at * f.scale if f.wrap_at else None, origin))
            continue
        fspecs, mspecs, tspecs, fltspecs, has_ent = static  # a TablePlan
        cols = [(f, columns(oid), unit, columns(doid) if doid else None, wrap,
                 {c: _Everywhere(data.get(eoid)) if is_scalar(c) else columns(eoid) for c, eoid in extra})
                for f, oid, unit, doid, wrap, extra in fspecs]
        matchers = [(columns(oid), rx) for oid, rx in mspecs]
        rows = sorted({i for c in cols for i in c[1]}, key=index_key)
        single = len(rows) == 1  # a table's fallback scalars stand for its row only when it has one
        tag_cols = {tag: columns(oid) for tag, oid in tspecs}
        filters = [(columns(oid), ok) for oid, ok in fltspecs]
        ent_cols = [columns(f"1.3.6.1.2.1.99.1.1.1.{c}") for c in (2, 3, 5)] if has_ent else None
        for idx in rows:
            if any(as_number(col.get(idx)) not in ok for col, ok in filters):
                continue
            parts = idx.split(".")
            if g.index_filter and any(len(parts) < pos or as_number(parts[pos - 1]) not in ok
                                      for pos, ok in g.index_filter.items()):
                continue
            named: dict[str, str] = {}
            if matchers:
                for col, rx in matchers:
                    raw = col.get(idx)
                    m = rx.search(text(raw)) if raw is not None else None
                    if m is None:
                        break
                    named.update({k: v for k, v in m.groupdict().items() if v})
                else:
                    m = True
                if m is None:
                    continue
            tags = {**base, **g.static_tags}
            for t in g.tags:
                if t.index is not None:
                    val = parts[t.index - 1] if len(parts) >= t.index else ""
                elif t.index_text is not None:
                    val = index_text(parts, t.index_text)
                else:
                    val = tag_cols[t.tag].get(idx)
                    val = None if val is None else text(val)
                if t.enum is not None and val is not None and as_number(val) is not None:
                    val = t.enum.get(int(as_number(val)), val)
                if val not in (None, ""):
                    tags[t.tag] = str(val)
            tags.update(named)
            row_readings = []
            for f, col, unit, digits_col, wrap, extra in cols:
                raw = col.get(idx)
                if raw is None and not (single and f.fallback):
                    continue
                digits = digits_col.get(idx) if digits_col is not None else None
                ent = EntitySensor(*(c.get(idx) for c in ent_cols)) if f.entity_sensor else None
                v = convert(f, raw, digits, ent) if raw is not None else None
                if v is not None and extra:
                    v = adjust(f, v, {c: x.get(idx) for c, x in extra.items()})
                origin = None
                if v is None and single and f.fallback:
                    v, origin = _fallback(f, data)
                if v is not None:
                    row_readings.append(Reading(g.measurement, tags, f.field, v, unit, wrap, origin))
            out += row_readings
            out += _derived(g.measurement, tags, row_readings, cat)
    return out
