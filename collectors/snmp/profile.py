"""Declarative SNMP device profiles (YAML in collectors/snmp/profiles/) and their evaluation.

Vendor knowledge is data: a profile names the OIDs, how rows are tagged, how raw integers
are scaled to W, J, V, A, VA, C, %RH, which values mean "unsupported", and which
sysObjectIDs it serves. ``evaluate`` is pure: polled values in, readings out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PROFILE_DIR = Path(__file__).parent / "profiles"
FIELDS_FILE = Path(__file__).parent / "fields.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _norm(oid: str) -> str:
    return oid.strip().lstrip(".")


class FieldSpec(_Strict):
    field: str
    oid: str | None = Field(None, description="scalar: full OID with .0; table: the column OID")
    column: int | None = Field(None, description="table: column number under the table's entry OID")
    scale: float = Field(1.0, description="multiply the raw value (units conversion included)")
    decimal_digits: str | int | None = Field(None, description="column (number or OID) holding decimal digits")
    entity_sensor: bool = Field(False, description="ENTITY-SENSOR-MIB: scale by entPhySensorScale/Precision")
    sentinels: list[int] = Field(default_factory=list, description="raw values meaning 'not available'")
    minimum: float | None = Field(None, description="raw values below are 'not available' (e.g. negatives)")
    enum: dict[int, str] | None = Field(None, description="raw value -> text (info fields)")
    map: dict[int, Any] | None = Field(None, description="raw value -> value; unmapped values use `default`")
    default: Any = None
    wrap_at: int | None = Field(None, description="counter that wraps to 0 after this raw value")
    divisor: int | str | None = Field(None, description="column (number or OID) whose value divides (APC coolingUnit)")
    signed_factor: int | str | None = Field(
        None, description="column whose value multiplies, or divides when negative (Rittal CMC III: -100 = /100)")
    fahrenheit_if: dict[int, list[int]] | None = Field(
        None, description="{column: values}: the value is in degrees F when that column holds one of them")
    absolute: bool = Field(False, description="drop the sign (power factor reported negative for capacitive)")

    def extra_columns(self) -> list[int | str]:
        return [c for c in (self.divisor, self.signed_factor, *(self.fahrenheit_if or {})) if c is not None]


class TagSpec(_Strict):
    tag: str
    index: int | None = Field(None, description="1-based component of the row index")
    column: int | None = None
    oid: str | None = Field(None, description="column of another table with the same index")
    enum: dict[int, str] | None = None


class GroupSpec(_Strict):
    measurement: Literal["pdu", "ups", "cooling", "environment"]
    table: str | None = Field(None, description="the table entry OID; None for scalars")
    tags: list[TagSpec] = Field(default_factory=list)
    static_tags: dict[str, str] = Field(default_factory=dict)
    fields: list[FieldSpec]
    filter: dict[int, list[int]] | None = Field(None, description="keep rows whose column value is listed")
    index_filter: dict[int, list[int]] | None = Field(
        None, description="keep rows whose index component (1-based) is listed, e.g. a sensor type")
    row_match: dict[int, str] | None = Field(
        None, description="{column: regex}: keep rows whose text columns all match; named groups become tags "
                          "(tables that describe each row in text: APC coolingUnit, Rittal CMC)")

    @model_validator(mode="after")
    def _check(self):
        for f in self.fields:
            if self.table is None and not f.oid:
                raise ValueError(f"scalar field {f.field} needs oid")
            if self.table is not None and f.oid is None and f.column is None:
                raise ValueError(f"table field {f.field} needs column or oid")
            if self.table is None and f.extra_columns():
                raise ValueError(f"scalar field {f.field}: divisor/signed_factor/fahrenheit_if need a table")
        for col, rx in (self.row_match or {}).items():
            try:
                re.compile(rx)
            except re.error as e:
                raise ValueError(f"row_match column {col}: bad regex {rx!r}: {e}") from None
        return self

    def extra_oid(self, spec: int | str) -> str:
        return f"{_norm(self.table)}.{spec}" if isinstance(spec, int) else _norm(spec)

    def column_oid(self, spec: FieldSpec | TagSpec) -> str:
        if getattr(spec, "oid", None):
            return _norm(spec.oid)
        return f"{_norm(self.table)}.{spec.column}"


class Match(_Strict):
    sys_object_id: list[str] = Field(default_factory=list, description="prefixes; the longest match wins")
    sys_descr: str | None = Field(None, description="regular expression, for auto-detection fallback")


class Profile(_Strict):
    name: str
    description: str = ""
    devices: str = ""  # the devices it serves, for the table in docs/snmp.md (generated)
    checked_against: str = ""  # the recordings it was checked against (fixtures in tests/fixtures/snmp)
    extends: list[str] = Field(default_factory=list)
    match: Match = Field(default_factory=Match)
    device_tags: dict[str, str] = Field(default_factory=dict)
    groups: list[GroupSpec] = Field(default_factory=list)


@dataclass
class Reading:
    measurement: str
    tags: dict[str, str]
    field: str
    value: float | int | bool | str
    unit: str
    wrap_at: float | None = None  # counters that wrap: the cap, in output units


class ProfileError(Exception):
    pass


@lru_cache(maxsize=1)
def field_catalogue() -> dict[tuple[str, str], tuple[str, str, str]]:
    data = yaml.safe_load(FIELDS_FILE.read_text())
    out = {}
    for meas, fields in data.items():
        for name, (kind, unit, desc) in fields.items():
            out[(meas, name)] = (kind, str(unit), desc)
    return out


def load_profiles(directory: Path = PROFILE_DIR) -> dict[str, Profile]:
    """Every profile in the directory, with `extends` resolved (parents' groups first)."""
    raw: dict[str, Profile] = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            p = Profile.model_validate(yaml.safe_load(path.read_text()))
        except (ValidationError, yaml.YAMLError) as e:
            raise ProfileError(f"{path}: {e}") from None
        if p.name in raw:
            raise ProfileError(f"{path}: profile {p.name!r} defined twice")
        raw[p.name] = p
    cat = field_catalogue()
    resolved: dict[str, Profile] = {}

    def resolve(name: str, stack: tuple = ()) -> Profile:
        if name in resolved:
            return resolved[name]
        if name in stack:
            raise ProfileError(f"profile {name}: extends cycle {' -> '.join(stack + (name,))}")
        if name not in raw:
            raise ProfileError(f"profile {stack[-1] if stack else name}: extends unknown profile {name!r}")
        p = raw[name]
        groups, tags = [], {}
        for parent in p.extends:
            pp = resolve(parent, stack + (name,))
            groups += pp.groups
            tags.update(pp.device_tags)
        tags.update(p.device_tags)
        out = p.model_copy(update={"groups": groups + p.groups, "device_tags": tags})
        for g in out.groups:
            for f in g.fields:
                if (g.measurement, f.field) not in cat:
                    raise ProfileError(f"profile {name}: {g.measurement}.{f.field} is not in fields.yaml")
        resolved[name] = out
        return out

    for n in raw:
        resolve(n)
    return resolved


def match_profile(profiles: dict[str, Profile], sys_object_id: str, sys_descr: str = "") -> Profile | None:
    """The profile whose sysObjectID prefix is the longest match; then sysDescr patterns."""
    oid = _norm(sys_object_id)
    best, best_len = None, -1
    for p in profiles.values():
        for prefix in p.match.sys_object_id:
            pre = _norm(prefix)
            if (oid == pre or oid.startswith(pre + ".")) and len(pre) > best_len:
                best, best_len = p, len(pre)
    if best is not None:
        return best
    for p in profiles.values():
        if p.match.sys_descr and re.search(p.match.sys_descr, sys_descr or ""):
            return p
    return None


def required_oids(profile: Profile) -> tuple[list[str], list[str]]:
    """(scalar OIDs to GET, subtrees to walk).

    A table is walked as one subtree (its entry OID), as snmp_exporter does: one GETBULK stream
    per table costs far fewer requests than a walk per column, which matters more than the few
    extra columns it brings back. Columns of other tables (decimal digits, names) are walked alone.
    """
    scalars, walks = [], []
    for g in profile.groups:
        if g.table is None:
            scalars += [_norm(f.oid) for f in g.fields]
            continue
        table = _norm(g.table)
        walks.append(table)
        for f in g.fields:
            if f.oid:
                walks.append(_norm(f.oid))
            if f.decimal_digits is not None:
                walks.append(_digits_oid(g, f.decimal_digits))
            if f.entity_sensor:
                walks.append("1.3.6.1.2.1.99.1.1.1")
            walks += [g.extra_oid(c) for c in f.extra_columns()]
        for t in g.tags:
            if t.oid:
                walks.append(_norm(t.oid))
    # drop duplicates and subtrees already inside another walked subtree
    unique = sorted(set(walks), key=lambda o: (len(o), o))
    kept: list[str] = []
    for o in unique:
        if not any(o == k or o.startswith(k + ".") for k in kept):
            kept.append(o)
    return list(dict.fromkeys(scalars)), kept


def _digits_oid(g: GroupSpec, spec: str | int) -> str:
    return f"{_norm(g.table)}.{spec}" if isinstance(spec, int) else _norm(spec)


def _as_number(v: Any) -> float | int | None:
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


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace").strip("\x00").strip()
    return str(v).strip()


def convert(f: FieldSpec, raw: Any, digits: Any = None, ent: tuple | None = None):
    """One raw value to its output value, or None when it is 'not available' or malformed."""
    n = raw if type(raw) is int else _as_number(raw)
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
        d = _as_number(digits)
        if d is None or not 0 <= d <= 9:
            return None
        value /= 10 ** int(d)
    if f.entity_sensor:
        scale, precision, status = ent or (None, None, None)
        if status is not None and _as_number(status) != 1:
            return None  # unavailable or nonoperational
        sc = _as_number(scale)
        pr = _as_number(precision) or 0
        if sc is not None:
            value *= 10 ** (3 * (int(sc) - 9))
        if pr > 0:
            value /= 10 ** int(pr)
    if not math.isfinite(value):
        return None
    return round(value, 6)


class _Plan:
    """Where each polled OID goes (column, row index) for one profile; learnt once per OID.

    A device answers the same OIDs every poll, so after the first poll mapping the values to
    columns is one dict lookup per value instead of a prefix scan per column.
    """

    def __init__(self, profile: Profile) -> None:
        cols: set[str] = set()
        for g in profile.groups:
            if g.table is None:
                continue
            cols.update(g.column_oid(x) for x in [*g.fields, *g.tags] if getattr(x, "column", None)
                        is not None or getattr(x, "oid", None))
            cols.update(_digits_oid(g, f.decimal_digits) for f in g.fields if f.decimal_digits is not None)
            cols.update(f"{_norm(g.table)}.{c}" for c in (g.filter or {}))
            cols.update(f"{_norm(g.table)}.{c}" for c in (g.row_match or {}))
            cols.update(g.extra_oid(c) for f in g.fields for c in f.extra_columns())
            if any(f.entity_sensor for f in g.fields):
                cols.update(f"1.3.6.1.2.1.99.1.1.1.{c}" for c in (2, 3, 5))
        self.prefixes = sorted((c + "." for c in cols), key=len, reverse=True)
        self.where: dict[str, tuple[str, str] | None] = {}
        self.required = required_oids(profile)
        cat = field_catalogue()
        # Per table group, everything that does not depend on the polled values (OIDs, units, regexes).
        self.groups: list[tuple] = []
        for g in profile.groups:
            if g.table is None:
                self.groups.append((g, None))
                continue
            table = _norm(g.table)
            self.groups.append((g, (
                [(f, g.column_oid(f), cat[(g.measurement, f.field)][1],
                  _digits_oid(g, f.decimal_digits) if f.decimal_digits is not None else None,
                  f.wrap_at * f.scale if f.wrap_at else None,
                  [(c, g.extra_oid(c)) for c in f.extra_columns()]) for f in g.fields],
                [(f"{table}.{c}", re.compile(rx)) for c, rx in (g.row_match or {}).items()],
                [(t.tag, g.column_oid(t)) for t in g.tags if t.column is not None or t.oid],
                [(f"{table}.{c}", set(vals)) for c, vals in (g.filter or {}).items()],
                any(f.entity_sensor for f in g.fields))))

    def locate(self, oid: str) -> tuple[str, str] | None:
        for pre in self.prefixes:
            if oid.startswith(pre):
                return pre[:-1], oid[len(pre):]
        return None

    def columns(self, data: dict[str, Any]) -> dict[str, dict[str, Any]]:
        where = self.where
        out: dict[str, dict[str, Any]] = {}
        for k, v in data.items():
            w = where.get(k, False)
            if w is False:
                w = self.locate(k)
                if len(where) < 200_000:
                    where[k] = w
            if w is not None:
                col = out.get(w[0])
                if col is None:
                    col = out[w[0]] = {}
                col[w[1]] = v
        return out


_plans: dict[int, tuple[Profile, _Plan]] = {}


def plan_of(profile: Profile) -> _Plan:
    hit = _plans.get(id(profile))
    if hit is None or hit[0] is not profile:
        hit = _plans[id(profile)] = (profile, _Plan(profile))
    return hit[1]


def _adjust(f: FieldSpec, v: float, extra: dict) -> float | None:
    """Per-row scaling and units read from other columns of the same row."""
    if isinstance(v, str) or isinstance(v, bool):
        return v
    if f.divisor is not None:
        d = _as_number(extra.get(f.divisor))
        if not d:
            return None
        v /= d
    if f.signed_factor is not None:
        k = _as_number(extra.get(f.signed_factor))
        if k is None:
            return None
        v = v / -k if k < 0 else v * k if k > 0 else v
    for col, values in (f.fahrenheit_if or {}).items():
        flag = _as_number(extra.get(col))
        if flag is None:
            return None
        if flag in values:
            v = (v - 32) * 5 / 9
    if f.absolute:
        v = abs(v)
    return round(v, 6) if math.isfinite(v) else None


def _derived(measurement: str, tags: dict, readings: list[Reading], cat) -> list[Reading]:
    """Load against rating, for every row that reports both its current and its rated current."""
    if measurement != "pdu" or len(readings) < 2:
        return []
    got = {r.field: r.value for r in readings}
    amps, rated = got.get("current_amperes"), got.get("rated_current_amperes")
    if isinstance(amps, (int, float)) and isinstance(rated, (int, float)) and rated > 0:
        return [Reading("pdu", tags, "rated_load_percent", round(100.0 * amps / rated, 3),
                        cat[("pdu", "rated_load_percent")][1])]
    return []


@lru_cache(maxsize=65536)
def _index_key(idx: str) -> list[int]:
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
                raw = data.get(_norm(f.oid))
                if raw is None:
                    continue
                v = convert(f, raw)
                if v is not None:
                    out.append(Reading(g.measurement, tags, f.field, v, cat[(g.measurement, f.field)][1]))
            continue
        fspecs, mspecs, tspecs, fltspecs, has_ent = static
        cols = [(f, columns(oid), unit, columns(doid) if doid else None, wrap,
                 {c: columns(eoid) for c, eoid in extra}) for f, oid, unit, doid, wrap, extra in fspecs]
        matchers = [(columns(oid), rx) for oid, rx in mspecs]
        rows = sorted({i for c in cols for i in c[1]}, key=_index_key)
        tag_cols = {tag: columns(oid) for tag, oid in tspecs}
        filters = [(columns(oid), ok) for oid, ok in fltspecs]
        ent_cols = [columns(f"1.3.6.1.2.1.99.1.1.1.{c}") for c in (2, 3, 5)] if has_ent else None
        for idx in rows:
            if any(_as_number(col.get(idx)) not in ok for col, ok in filters):
                continue
            parts = idx.split(".")
            if g.index_filter and any(len(parts) < pos or _as_number(parts[pos - 1]) not in ok
                                      for pos, ok in g.index_filter.items()):
                continue
            named: dict[str, str] = {}
            if matchers:
                for col, rx in matchers:
                    raw = col.get(idx)
                    m = rx.search(_text(raw)) if raw is not None else None
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
                else:
                    val = tag_cols[t.tag].get(idx)
                    val = None if val is None else _text(val)
                if t.enum is not None and val is not None and _as_number(val) is not None:
                    val = t.enum.get(int(_as_number(val)), val)
                if val not in (None, ""):
                    tags[t.tag] = str(val)
            tags.update(named)
            row_readings = []
            for f, col, unit, digits_col, wrap, extra in cols:
                raw = col.get(idx)
                if raw is None:
                    continue
                digits = digits_col.get(idx) if digits_col is not None else None
                ent = tuple(c.get(idx) for c in ent_cols) if f.entity_sensor else None
                v = convert(f, raw, digits, ent)
                if v is not None and extra:
                    v = _adjust(f, v, {c: x.get(idx) for c, x in extra.items()})
                if v is not None:
                    row_readings.append(Reading(g.measurement, tags, f.field, v, unit, wrap))
            out += row_readings
            out += _derived(g.measurement, tags, row_readings, cat)
    return out
