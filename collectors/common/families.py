"""Measurement families (families.yaml): the measurements any collector may emit, declared once.

A facility PDU reads the same whether SNMP, Modbus or Redfish fetched it, and the readers (the rack scope,
facility PUE, the node meter) must not care which. A family fixes a measurement's fields, their kinds, units
and descriptions, and the tag keys a row may carry; a collector declares the families it emits
(`family_metrics`), and the catalogue lets several collectors declare a family's metrics only when each
declaration is the family's own (agent.model.Catalogue).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from agent.model import Kind, Metric

FAMILIES_FILE = Path(__file__).with_name("families.yaml")
# What a facility device fills, whatever its transport.
FACILITY_FAMILIES = ("pdu", "meter", "ups", "cooling", "environment", "leak")


@dataclass(frozen=True)
class FieldDecl:
    kind: str  # gauge | counter | info
    unit: str
    description: str


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    tags: tuple[str, ...]
    fields: dict[str, FieldDecl]

    def metrics(self) -> tuple[Metric, ...]:
        return tuple(Metric(self.name, f, Kind(d.kind), d.unit, d.description, self.tags, family=self.name)
                     for f, d in self.fields.items())


@lru_cache(maxsize=1)
def families() -> dict[str, Family]:
    out = {}
    for name, spec in yaml.safe_load(FAMILIES_FILE.read_text()).items():
        fields = {f: FieldDecl(kind, str(unit), " ".join(desc.split())) for f, (kind, unit, desc)
                  in spec["fields"].items()}
        out[name] = Family(name, " ".join(spec["description"].split()), tuple(spec["tags"]), fields)
    return out


def family(name: str) -> Family:
    try:
        return families()[name]
    except KeyError:
        raise KeyError(f"no measurement family {name!r} (collectors/common/families.yaml has "
                       f"{', '.join(sorted(families()))})") from None


def family_metrics(*names: str) -> tuple[Metric, ...]:
    """The declarations of the named families, for a collector's METRICS."""
    return tuple(m for n in names for m in family(n).metrics())


@lru_cache(maxsize=1)
def field_catalogue() -> dict[tuple[str, str], FieldDecl]:
    """(family, field) -> its declaration, over every family."""
    return {(f.name, k): d for f in families().values() for k, d in f.fields.items()}
