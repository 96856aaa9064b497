"""The profile engine: declarative device profiles (YAML) of any transport, their schema and loading.

Vendor knowledge is data: a profile names the objects to read (an SNMP OID, a Modbus register, a property
path: whatever its transport fetches), how rows are tagged, how raw values are decoded (register types, bit
fields) and scaled to W, J, V, A, VA, C, %RH, which values mean "unsupported", which counters wrap, and the
measurement family each group of fields fills (collectors/common/families.yaml). The transport only fetches:
it hands ``evaluate.evaluate`` a {object: raw value} dict and gets readings back. What to fetch is planned in
plan.py, raw values converted in convert.py. How a transport picks a device's profile (`match`) is its own:
the engine keeps that section as data and the transport validates it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from collectors.common.families import FieldDecl, families, field_catalogue

__all__ = ["FieldDecl", "FieldSpec", "GroupSpec", "Profile", "ProfileError", "TagSpec", "field_catalogue",
           "load_profiles", "norm_oid"]

# Register types a transport may hand over as 16-bit words (Modbus): their size in words and struct format.
WORD_TYPES: dict[str, tuple[int, str]] = {
    "int16": (1, "h"), "uint16": (1, "H"), "int32": (2, "i"), "uint32": (2, "I"), "int64": (4, "q"),
    "uint64": (4, "Q"), "float32": (2, "f"), "float64": (4, "d"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def norm_oid(oid: str) -> str:
    return oid.strip().lstrip(".")


def is_scalar(ref: int | str) -> bool:
    """A reference to another object that is a scalar (an OID ending .0): read once and applied to every row, as
    a device-wide unit setting is (GEIST-V4-MIB temperatureUnits)."""
    return isinstance(ref, str) and norm_oid(ref).endswith(".0")


# A profile names the object it reads `oid` (SNMP's profiles) or `object` (any transport).
OBJECT = AliasChoices("oid", "object")


class FallbackSpec(_Strict):
    """Another object carrying the same reading (an older MIB's), read when the field's own gives nothing."""

    oid: str = Field(..., validation_alias=OBJECT, description="scalar object (an SNMP OID with .0)")
    scale: float = Field(1.0, description="multiply the raw value")
    sentinels: list[int] = Field(default_factory=list, description="raw values meaning 'not available'")
    minimum: float | None = Field(None, description="raw values below are 'not available'")
    # what convert() reads of a field, absent here
    enum: None = None
    map: None = None
    decimal_digits: None = None
    entity_sensor: bool = False
    type: None = None
    bit: None = None
    scale_exponent: None = None


class ScaleSelect(_Strict):
    """A factor chosen by another object's value: the unit a device reports in, set on the device (a leak panel's
    distance in feet or metres)."""

    object: str = Field(..., description="the scalar object holding the selector")
    factors: dict[int, float] = Field(..., description="selector value -> factor; any other value: not available")


class FieldSpec(_Strict):
    field: str
    oid: str | None = Field(None, validation_alias=OBJECT,
                            description="the object read: scalar, its full name (an OID with .0, a register); "
                                        "table, the column's")
    column: int | None = Field(None, description="table: column number under the table's entry OID")
    scale: float = Field(1.0, description="multiply the raw value (units conversion included)")
    decimal_digits: str | int | None = Field(None, description="column (number or OID) holding decimal digits")
    entity_sensor: bool = Field(False, description="ENTITY-SENSOR-MIB: scale by entPhySensorScale/Precision")
    sentinels: list[int] = Field(default_factory=list, description="raw values meaning 'not available'")
    minimum: float | None = Field(None, description="raw values below are 'not available' (e.g. negatives)")
    enum: dict[int, str] | None = Field(None, description="raw value -> text (info fields)")
    map: dict[int, Any] | None = Field(None, description="raw value -> value; unmapped values use `default`")
    default: Any = None
    wrap_at: int | None = Field(None, description="the raw value at which a counter starts again from 0: 2^32 "
                                                  "for a 32-bit register, else the cap the device documents")
    divisor: int | str | None = Field(None, description="column (number or OID) whose value divides (APC coolingUnit)")
    signed_factor: int | str | None = Field(
        None, description="column whose value multiplies, or divides when negative (Rittal CMC III: -100 = /100)")
    fahrenheit_if: dict[int | str, list[int]] | None = Field(
        None, description="{column or scalar OID: values}: the value is in degrees F when that column (or the "
                          "device-wide scalar) holds one of them")
    absolute: bool = Field(False, description="drop the sign (power factor reported negative for capacitive)")
    fahrenheit: bool = Field(False, description="the scaled value is in degrees F: converted to C")
    type: Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"] | None = Field(
        None, description="the raw value is 16-bit words (Modbus registers) holding this type")
    word_order: Literal["big", "little"] = Field("big", description="of a multi-word type: most significant "
                                                                    "word first (big) or last")
    bit: int | None = Field(None, ge=0, le=63, description="a bit field: the value is bits `bit` .. "
                                                          "`bit + bits - 1` of the raw integer")
    bits: int = Field(1, ge=1, le=64, description="width of the bit field (1: a flag, read as a bool)")
    scale_exponent: str | None = Field(
        None, description="scalar: an object holding a power of ten the value is multiplied by (SunSpec's scale-"
                          "factor registers, an int16: -1 means tenths); outside -10..10 the value is not available")
    scale_select: ScaleSelect | None = Field(None, description="scalar: multiply by the factor another object's "
                                                               "value selects")
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
    measurement: str = Field(..., description="the measurement family the group fills (families.yaml)")
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

    @field_validator("measurement")
    @classmethod
    def _family(cls, v: str) -> str:
        if v not in families():
            raise ValueError(f"{v!r} is not a measurement family (families.yaml: {', '.join(sorted(families()))})")
        return v

    @model_validator(mode="after")
    def _check(self):
        for f in self.fields:
            if self.table is None and not f.oid:
                raise ValueError(f"scalar field {f.field} needs oid")
            if self.table is not None and f.oid is None and f.column is None:
                raise ValueError(f"table field {f.field} needs column or oid")
            if self.table is not None and (f.scale_exponent or f.scale_select):
                raise ValueError(f"table field {f.field}: scale_exponent and scale_select read a scalar object "
                                 "(use decimal_digits or signed_factor for a column)")
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


class Profile(_Strict):
    name: str
    description: str = ""
    devices: str = ""  # the devices it serves, for the table in docs/snmp.md (generated)
    checked_against: str = ""  # the recordings it was checked against (fixtures in tests/fixtures/snmp)
    extends: list[str] = Field(default_factory=list)
    match: Any = Field(None, description="how the transport recognises the device (its own schema)")
    device_tags: dict[str, str] = Field(default_factory=dict)
    groups: list[GroupSpec] = Field(default_factory=list)


class ProfileError(Exception):
    pass


def load_profiles(directory: Path, match: type[BaseModel] | None = None) -> dict[str, Profile]:
    """Every profile in the directory, with `extends` resolved (parents' groups first); `match`, the
    transport's model of the `match` section, validates it."""
    raw: dict[str, Profile] = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            p = Profile.model_validate(yaml.safe_load(path.read_text()))
            if match is not None:
                p.match = match.model_validate(p.match or {})
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
                    raise ProfileError(f"profile {name}: {g.measurement}.{f.field} is not a field of family "
                                       f"{g.measurement} (families.yaml)")
        resolved[name] = out
        return out

    for n in raw:
        resolve(n)
    return resolved
