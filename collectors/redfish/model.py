"""Pure mapping from Redfish documents to readings, driven by models.yaml (house style 2 and 5)."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SOURCE = "redfish"


@dataclass(frozen=True)
class Chassis:
    id: str
    uri: str
    role: str
    type: str = ""

    def tags(self) -> dict[str, str]:
        return {"chassis": self.id, "chassis_role": self.role}


@dataclass
class Resource:
    kind: str  # a key of models.yaml's resources, or sensor / sensors_expanded / leak_detector
    uri: str
    chassis: Chassis
    name: str | None = None  # the component: a PSU's or fan's Id
    covered: frozenset[str] = frozenset()  # sensors read elsewhere (sensors_expanded skips them)


@dataclass
class Reading:
    measurement: str
    tags: dict[str, str]
    field: str
    value: float | bool | str
    source_uri: str  # the resource the value was read from (probe shows it)
    data_source: str | None = None  # the Sensor behind it, where the service says (for de-duplication)


@dataclass
class Models:
    roles: list[dict]
    chassis_scope: dict[str, str]
    sensor_scope: dict[str, dict[str, str]]
    sensors: dict[str, dict]
    sensor_units: dict[str, str]
    percent_fans: re.Pattern
    resources: dict[str, list[dict]] = field(default_factory=dict)


@functools.cache
def load_models(path: str | None = None) -> Models:
    data = yaml.safe_load(Path(path or Path(__file__).with_name("models.yaml")).read_text())
    roles = [{**r, "name": re.compile(r["name"]) if "name" in r else None} for r in data["chassis_roles"]]
    return Models(roles, data["chassis_scope"], data["sensor_scope"], data["sensors"], data["sensor_units"],
                  re.compile(data["percent_fans"]), data["resources"])


def chassis_of(models: Models, doc: dict) -> Chassis:
    ctype = doc.get("ChassisType") or ""
    text = f"{doc.get('Id', '')} {doc.get('Name', '')} {doc.get('Model', '')}"
    role = "node"
    for r in models.roles:
        if (r["name"] is not None and r["name"].search(text)) or ctype in r.get("type", ()) or (
                r["name"] is None and "type" not in r):
            role = r["role"]
            break
    return Chassis(str(doc.get("Id") or doc.get("@odata.id", "").rstrip("/").rsplit("/", 1)[-1]),
                   doc.get("@odata.id", ""), role, ctype)


def _get(doc, path: str):
    for part in path.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None  # Redfish sends null for a reading it does not have now
    return v


def _scaled(v, scale) -> float:
    return v * scale if scale else v


def _scope(models: Models, chassis: Chassis, rule_scope: str | None) -> str:
    if rule_scope == "chassis" or rule_scope is None:
        return models.chassis_scope.get(chassis.role, "chassis")
    return rule_scope


def _tags(models: Models, chassis: Chassis, measurement: str, scope: str | None, component: str) -> dict:
    t = chassis.tags()
    if measurement == "redfish_power":
        t.update(source=SOURCE, scope=_scope(models, chassis, scope), component=component)
    elif measurement == "redfish_coolant":
        t["connector"] = component
    else:
        t["sensor"] = component
    return t


def map_resource(models: Models, res: Resource, doc: dict) -> list[Reading]:
    """Readings of one polled resource (not a Sensor: see map_sensor)."""
    if res.kind == "sensor":
        return map_sensor(models, res.chassis, doc)
    if res.kind == "sensors_expanded":
        out = []
        for m in doc.get("Members") or ():
            if isinstance(m, dict) and m.get("@odata.id") not in res.covered:
                out += map_sensor(models, res.chassis, m)
        return out
    if res.kind == "leak_detector":
        return map_leak(res, doc)
    out: list[Reading] = []
    own = res.name or res.chassis.id
    for rule in models.resources.get(res.kind, ()):
        m = rule["measurement"]
        if "path" in rule:
            v = _number(_get(doc, rule["path"]))
            if v is None:
                continue
            who = rule.get("sensor")
            component = own if who in (None, "self", "psu") else who
            if m == "redfish_power" and rule.get("scope") == "chassis":
                component = "chassis"
            tags = _tags(models, res.chassis, m, rule.get("scope"), component)
            parent = rule["path"].rsplit(".", 1)[0]
            ds = _get(doc, f"{parent}.DataSourceUri")
            out.append(Reading(m, tags, rule["field"], _scaled(v, rule.get("scale")), res.uri, ds))
            continue
        entries: list[tuple[str, dict]] = []
        if "each" in rule:
            for i, e in enumerate(doc.get(rule["each"]) or ()):
                if isinstance(e, dict):
                    entries.append((str(e.get(rule["name"]) or e.get("MemberId") or i), e))
        elif "each_key" in rule:
            block = doc.get(rule["each_key"]) or {}
            entries = [(k.lower(), e) for k, e in block.items() if isinstance(e, dict)]
        for name, e in entries:
            for path, fname in rule["fields"].items():
                v = _number(_get(e, path))
                if v is None:
                    continue
                if "units" in rule:
                    fname = rule["units"].get(e.get("ReadingUnits"))
                    if fname is None:
                        continue
                v = _scaled(v, (rule.get("scales") or {}).get(path))
                tags = _tags(models, res.chassis, m, rule.get("scope"), name)
                out.append(Reading(m, tags, fname, v, res.uri, e.get("DataSourceUri")))
    return out


def sensor_kind(models: Models, doc: dict) -> dict | None:
    """The (measurement, field, scale) a Sensor maps to, or None for a sensor we do not read."""
    rtype = doc.get("ReadingType") or models.sensor_units.get(doc.get("ReadingUnits") or "")
    if rtype == "Percent":
        text = f"{doc.get('Id', '')} {doc.get('Name', '')} {doc.get('PhysicalContext', '')}"
        return {"measurement": "redfish_sensor", "field": "fan_speed_percent"} if models.percent_fans.search(
            text) else None
    # ReadingType decides over ReadingUnits: DMTF's own PDU mockup labels kWh sensors "kW".
    return models.sensors.get(rtype or "")


def map_sensor(models: Models, chassis: Chassis, doc: dict) -> list[Reading]:
    kind = sensor_kind(models, doc)
    if kind is None:
        return []
    v = _number(doc.get("Reading"))
    if v is None:
        return []
    name = str(doc.get("Id") or doc.get("Name") or doc.get("@odata.id", "?").rsplit("/", 1)[-1])
    m = kind["measurement"]
    scope = None
    if m == "redfish_power":
        ctx = models.sensor_scope.get(doc.get("PhysicalContext") or "")
        if ctx is not None:
            scope = ctx.get(doc.get("PhysicalSubContext") or "", ctx.get(""))
    tags = _tags(models, chassis, m, scope, name)
    uri = doc.get("@odata.id", "")
    out = [Reading(m, tags, kind["field"], _scaled(v, kind.get("scale")), uri, uri)]
    rpm = _number(doc.get("SpeedRPM"))
    if kind["field"] == "fan_speed_percent" and rpm is not None:
        out.append(Reading(m, tags, "fan_speed_rpm", rpm, uri, uri))
    return out


def map_leak(res: Resource, doc: dict) -> list[Reading]:
    state = doc.get("DetectorState") or (doc.get("Status") or {}).get("Health")
    if not isinstance(state, str):
        return []
    tags = {**res.chassis.tags(), "detector": str(doc.get("Id") or res.name),
            "detector_type": str(doc.get("LeakDetectorType") or "unknown")}
    return [Reading("redfish_leak", tags, "leak_detected", state != "OK", res.uri),
            Reading("redfish_leak", tags, "state", state, res.uri)]


def data_sources(doc) -> set[str]:
    """Every DataSourceUri in a document: the Sensors its readings come from."""
    out: set[str] = set()
    stack = [doc]
    while stack:
        d = stack.pop()
        if isinstance(d, dict):
            ds = d.get("DataSourceUri")
            if isinstance(ds, str):
                out.add(ds)
            stack.extend(d.values())
        elif isinstance(d, list):
            stack.extend(d)
    return out


def dedupe(readings: list[Reading]) -> list[Reading]:
    """One reading per Sensor and field: a value the service shows in two resources (EnvironmentMetrics and
    ThermalMetrics both naming CPU1Temp) is kept from the first, the newest model."""
    seen: set[tuple] = set()
    out = []
    for r in readings:
        if r.data_source:
            key = (r.data_source, r.field)
            if key in seen:
                continue
            seen.add(key)
        out.append(r)
    return out
