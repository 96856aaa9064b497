"""Declarative SNMP device profiles (YAML in collectors/snmp/profiles/): their schema, loading and matching.

Vendor knowledge is data: a profile names the OIDs, how rows are tagged, how raw integers
are scaled to W, J, V, A, VA, C, %RH, which values mean "unsupported", and which
sysObjectIDs it serves. What to poll is planned in plan.py, raw values converted in convert.py, and
``evaluate.evaluate`` maps polled values to readings (pure).
"""

from __future__ import annotations

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


def norm_oid(oid: str) -> str:
    return oid.strip().lstrip(".")


class FallbackSpec(_Strict):
    """Another object carrying the same reading (an older MIB's), read when the field's own gives nothing."""

    oid: str = Field(..., description="scalar OID with .0")
    scale: float = Field(1.0, description="multiply the raw value")
    sentinels: list[int] = Field(default_factory=list, description="raw values meaning 'not available'")
    minimum: float | None = Field(None, description="raw values below are 'not available'")
    # what convert() reads of a field, absent here
    enum: None = None
    map: None = None
    decimal_digits: None = None
    entity_sensor: bool = False


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
    fahrenheit: bool = Field(False, description="the scaled value is in degrees F: converted to C")
    fallback: list[FallbackSpec] = Field(
        default_factory=list, description="objects tried in order when this one gives no valid value (e.g. an "
                                          "older MIB's scalar); in a table, they stand for its row when it has one")

    def extra_columns(self) -> list[int | str]:
        return [c for c in (self.divisor, self.signed_factor, *(self.fahrenheit_if or {})) if c is not None]


class TagSpec(_Strict):
    tag: str
    index: int | None = Field(None, description="1-based component of the row index")
    index_text: int | None = Field(None, description="1-based component where a string in the row index starts "
                                                    "(its length, then its characters)")
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
        return f"{norm_oid(self.table)}.{spec}" if isinstance(spec, int) else norm_oid(spec)

    def column_oid(self, spec: FieldSpec | TagSpec) -> str:
        if getattr(spec, "oid", None):
            return norm_oid(spec.oid)
        return f"{norm_oid(self.table)}.{spec.column}"


class Match(_Strict):
    sys_object_id: list[str] = Field(default_factory=list, description="prefixes; the longest match wins")
    sys_descr: str | None = Field(None, description="regular expression, for auto-detection fallback")
    probe: str | None = Field(None, description="an object (or subtree) the device answers only if this profile "
                                                "is its: asked once when the profile is a candidate")
    standard: bool = Field(False, description="a standard MIB, tried (by its probe) on devices no vendor "
                                              "profile matches")


class Profile(_Strict):
    name: str
    description: str = ""
    devices: str = ""  # the devices it serves, for the table in docs/snmp.md (generated)
    checked_against: str = ""  # the recordings it was checked against (fixtures in tests/fixtures/snmp)
    extends: list[str] = Field(default_factory=list)
    match: Match = Field(default_factory=Match)
    device_tags: dict[str, str] = Field(default_factory=dict)
    groups: list[GroupSpec] = Field(default_factory=list)


class ProfileError(Exception):
    pass


@dataclass(frozen=True)
class FieldDecl:
    """A field of collectors/snmp/fields.yaml: what every profile may emit."""

    kind: str  # gauge | counter | info
    unit: str
    description: str


@lru_cache(maxsize=1)
def field_catalogue() -> dict[tuple[str, str], FieldDecl]:
    data = yaml.safe_load(FIELDS_FILE.read_text())
    out = {}
    for meas, fields in data.items():
        for name, (kind, unit, desc) in fields.items():
            out[(meas, name)] = FieldDecl(kind, str(unit), desc)
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


def candidates(profiles: dict[str, Profile], sys_object_id: str, sys_descr: str = "") -> list[Profile]:
    """Every profile that could serve the device, best first: sysObjectID matches (longest prefix first), then
    sysDescr matches, then the standard MIBs. Those with a probe are kept only if the device answers it
    (detect_profile asks); the first without a probe ends the search."""
    oid = norm_oid(sys_object_id)
    by_oid: list[tuple[int, Profile]] = []
    for p in profiles.values():
        best = max((len(norm_oid(pre)) for pre in p.match.sys_object_id
                    if oid == norm_oid(pre) or oid.startswith(norm_oid(pre) + ".")), default=-1)
        if best >= 0:
            by_oid.append((best, p))
    out = [p for _, p in sorted(by_oid, key=lambda x: -x[0])]
    out += [p for p in profiles.values() if p not in out and p.match.sys_descr
            and re.search(p.match.sys_descr, sys_descr or "")]
    out += [p for p in profiles.values() if p not in out and p.match.standard and p.match.probe]
    return out


def match_profile(profiles: dict[str, Profile], sys_object_id: str, sys_descr: str = "") -> Profile | None:
    """The profile whose sysObjectID prefix is the longest match; then sysDescr patterns (no probing)."""
    oid = norm_oid(sys_object_id)
    best, best_len = None, -1
    for p in profiles.values():
        for prefix in p.match.sys_object_id:
            pre = norm_oid(prefix)
            if (oid == pre or oid.startswith(pre + ".")) and len(pre) > best_len:
                best, best_len = p, len(pre)
    if best is not None:
        return best
    for p in profiles.values():
        if p.match.sys_descr and re.search(p.match.sys_descr, sys_descr or ""):
            return p
    return None


