"""What to poll for a profile, and where each polled OID goes: learnt once per profile and OID."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from . import WORD_TYPES, GroupSpec, Profile, field_catalogue, is_scalar, norm_oid


class Location(NamedTuple):
    """Where a polled OID belongs: its column's OID and the row index after it."""

    column: str
    index: str


class ColumnField(NamedTuple):
    """A table field with what does not change between polls."""

    spec: Any  # FieldSpec
    oid: str
    unit: str
    digits_oid: str | None  # the column holding its decimal digits (Raritan)
    wrap: float | None  # a wrapping counter's cap, in output units
    extras: list[tuple[Any, str]]  # (column reference, OID) of other columns its value needs


class TablePlan(NamedTuple):
    fields: list[ColumnField]
    row_match: list[tuple[str, re.Pattern]]  # (column OID, regex a row's value must match)
    tag_columns: list[tuple[str, str]]  # (tag, column OID)
    filters: list[tuple[str, set]]  # (column OID, accepted values)
    entity_sensor: bool


def required_oids(profile: Profile) -> tuple[list[str], list[str]]:
    """(scalar OIDs to GET, subtrees to walk).

    A table is walked as one subtree (its entry OID), as snmp_exporter does: one GETBULK stream
    per table costs far fewer requests than a walk per column, which matters more than the few
    extra columns it brings back. Columns of other tables (decimal digits, names) are walked alone.
    """
    scalars, walks = [], []
    for g in profile.groups:
        scalars += [norm_oid(fb.oid) for f in g.fields for fb in f.fallback]
        if g.table is None:
            scalars += [norm_oid(f.oid) for f in g.fields]
            scalars += [norm_oid(f.scale_exponent) for f in g.fields if f.scale_exponent]
            scalars += [norm_oid(f.scale_select.object) for f in g.fields if f.scale_select]
            continue
        table = norm_oid(g.table)
        walks.append(table)
        for f in g.fields:
            if f.oid:
                walks.append(norm_oid(f.oid))
            if f.decimal_digits is not None:
                walks.append(digits_oid(g, f.decimal_digits))
            if f.entity_sensor:
                walks.append("1.3.6.1.2.1.99.1.1.1")
            walks += [g.extra_oid(c) for c in f.extra_columns() if not is_scalar(c)]
            scalars += [norm_oid(c) for c in f.extra_columns() if is_scalar(c)]
        for t in g.tags:
            if t.oid:
                walks.append(norm_oid(t.oid))
    # drop duplicates and subtrees already inside another walked subtree
    unique = sorted(set(walks), key=lambda o: (len(o), o))
    kept: list[str] = []
    for o in unique:
        if not any(o == k or o.startswith(k + ".") for k in kept):
            kept.append(o)
    return list(dict.fromkeys(scalars)), kept


def object_words(profile: Profile) -> dict[str, int]:
    """Each scalar object of a register profile and how many 16-bit words its type takes (1 without a type): what a
    register transport reads."""
    out: dict[str, int] = {}
    for g in profile.groups:
        for f in g.fields:
            if g.table is None and f.oid:
                out[norm_oid(f.oid)] = max(out.get(norm_oid(f.oid), 1), WORD_TYPES[f.type][0] if f.type else 1)
            for extra in [fb.oid for fb in f.fallback] + ([f.scale_exponent] if f.scale_exponent else []) + (
                    [f.scale_select.object] if f.scale_select else []):
                out.setdefault(norm_oid(extra), 1)
    return out


def digits_oid(g: GroupSpec, spec: str | int) -> str:
    return f"{norm_oid(g.table)}.{spec}" if isinstance(spec, int) else norm_oid(spec)


class WalkPlan:
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
            cols.update(digits_oid(g, f.decimal_digits) for f in g.fields if f.decimal_digits is not None)
            cols.update(f"{norm_oid(g.table)}.{c}" for c in (g.filter or {}))
            cols.update(f"{norm_oid(g.table)}.{c}" for c in (g.row_match or {}))
            cols.update(g.extra_oid(c) for f in g.fields for c in f.extra_columns() if not is_scalar(c))
            if any(f.entity_sensor for f in g.fields):
                cols.update(f"1.3.6.1.2.1.99.1.1.1.{c}" for c in (2, 3, 5))
        self.prefixes = sorted((c + "." for c in cols), key=len, reverse=True)
        self.where: dict[str, Location | None] = {}
        self.required = required_oids(profile)
        cat = field_catalogue()
        # Per table group, everything that does not depend on the polled values (OIDs, units, regexes).
        self.groups: list[tuple[GroupSpec, TablePlan | None]] = []
        for g in profile.groups:
            if g.table is None:
                self.groups.append((g, None))
                continue
            table = norm_oid(g.table)
            self.groups.append((g, TablePlan(
                [ColumnField(f, g.column_oid(f), cat[(g.measurement, f.field)].unit,
                             digits_oid(g, f.decimal_digits) if f.decimal_digits is not None else None,
                             f.wrap_at * f.scale if f.wrap_at else None,
                             [(c, g.extra_oid(c)) for c in f.extra_columns()]) for f in g.fields],
                [(f"{table}.{c}", re.compile(rx)) for c, rx in (g.row_match or {}).items()],
                [(t.tag, g.column_oid(t)) for t in g.tags if t.column is not None or t.oid],
                [(f"{table}.{c}", set(vals)) for c, vals in (g.filter or {}).items()],
                any(f.entity_sensor for f in g.fields))))

    def locate(self, oid: str) -> Location | None:
        for pre in self.prefixes:
            if oid.startswith(pre):
                return Location(pre[:-1], oid[len(pre):])
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
                col = out.get(w.column)
                if col is None:
                    col = out[w.column] = {}
                col[w.index] = v
        return out


_plans: dict[int, tuple[Profile, WalkPlan]] = {}  # by profile identity


def plan_of(profile: Profile) -> WalkPlan:
    hit = _plans.get(id(profile))
    if hit is None or hit[0] is not profile:
        hit = _plans[id(profile)] = (profile, WalkPlan(profile))
    return hit[1]
