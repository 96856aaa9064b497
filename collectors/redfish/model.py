"""Pure mapping from Redfish documents to readings, driven by models.yaml: testable without a BMC, and
vendor knowledge kept as data."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SOURCE = "redfish"
# A rack PDU's or power shelf's own readings are facility readings: the unit's summary (its PowerEquipment
# PowerDistributionMetrics) and its outlets go to the pdu family (scope device, outlet), where PUE and the rack
# scope read every transport's PDUs alike. Other chassis-wide sensors of a PDU (outlet groups, a "PDU power"
# sensor beside the summary) stay bmc_power: taken for the unit's total, they would count it twice.
FACILITY_ROLES = frozenset({"pdu", "power_shelf"})
PDU_FIELDS = frozenset({"power_watts", "energy_joules_total"})


@dataclass(frozen=True)
class Chassis:
    id: str
    uri: str
    role: str
    type: str = ""
    parent: str | None = None  # the Id of the chassis that contains it (Links.ContainedBy / Contains)
    why: str = ""  # how the role was decided (probe shows it)

    def tags(self) -> dict[str, str]:
        return {"chassis": self.id, "chassis_role": self.role}


@dataclass
class Resource:
    kind: str  # a key of models.yaml's resources, or sensor / sensors_expanded / leak_detector
    uri: str
    chassis: Chassis
    name: str | None = None  # the component: a PSU's URI's last segment, a fan's Id
    covered: frozenset[str] = frozenset()  # sensors read elsewhere (sensors_expanded skips them)
    limit_watts: float | None = None  # the most this resource can draw (a PSU's capacity, the chassis's)


@dataclass
class Reading:
    measurement: str
    tags: dict[str, str]
    field: str
    value: float | bool | str
    source_uri: str  # the resource the value was read from (probe shows it)
    data_source: str | None = None  # the Sensor behind it, where the service says (for de-duplication)
    origin: str = ""  # the kind of resource it came from (a Sensor's readings rank after the PSU's own)
    limit_watts: float | None = None  # what the device can draw: readings beyond it are refused


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


# Roles a chassis keeps inside the node's chassis: a GPU board's watts are a component's, never the node's.
COMPONENT_ROLES = frozenset({"gpu", "gpu_module", "gpu_baseboard", "cooling_unit", "power_shelf", "pdu"})


def _uri(ref) -> str | None:
    v = ref.get("@odata.id") if isinstance(ref, dict) else None
    return v.rstrip("/") if isinstance(v, str) and v else None


def topology(models: Models, chassis_docs: list[dict], system_docs: list[dict]) -> list[Chassis]:
    """Each chassis with its role from the service's own links, not from its name: the node's chassis is the one
    its ComputerSystem names in Links.Chassis (the outermost where it names several, never a sum of nested
    ones); chassis inside it (Links.ContainedBy / Contains) are its components; chassis that contain it are
    enclosures; chassis outside every system's are not a node's ("other"). Names decide only what the links do
    not: the kind of a component, and every role on a service with no ComputerSystem (PDUs, shelves, CDUs)."""
    by_uri = {u: d for d in chassis_docs if (u := _uri(d))}
    parent: dict[str, str] = {}
    for u, d in by_uri.items():
        links = d.get("Links") or {}
        up = _uri(links.get("ContainedBy"))
        if up in by_uri and up != u:
            parent.setdefault(u, up)
        for c in links.get("Contains") or ():
            cu = _uri(c)
            if cu in by_uri and cu != u:
                parent.setdefault(cu, u)

    def ancestors(u: str) -> list[str]:
        out, seen = [], {u}
        while (u := parent.get(u)) is not None and u not in seen:  # a cycle in the links ends the walk
            out.append(u)
            seen.add(u)
        return out

    nodes: list[str] = []
    for sysdoc in system_docs:
        named = [u for c in (sysdoc.get("Links") or {}).get("Chassis") or () if (u := _uri(c)) in by_uri]
        outer = [u for u in named if not any(a in named for a in ancestors(u))]
        if outer and outer[0] not in nodes:
            nodes.append(outer[0])
    enclosures = {a for n in nodes for a in ancestors(n)}
    out = []
    for u, d in by_uri.items():
        named = chassis_of(models, d)
        ups = ancestors(u)
        pid = by_uri[parent[u]].get("Id") if u in parent else None
        inside = next((a for a in ups if a in nodes), None)
        if u in nodes:
            role, why = "node", "named by its ComputerSystem (Links.Chassis)"
        elif inside is not None:
            role = named.role if named.role in COMPONENT_ROLES else "component"
            why = f"inside the node's chassis {by_uri[inside].get('Id')}"
        elif u in enclosures:
            role, why = "enclosure", "contains the node's chassis"
        elif nodes:
            role = named.role if named.role != "node" else "other"
            why = "no ComputerSystem names it" + (f" (by its name: {named.role})" if role != "other" else "")
        else:
            parent_role = next((chassis_of(models, by_uri[a]).role for a in ups), None)
            role = "component" if parent_role == "node" and named.role == "node" else named.role
            why = "by its name and type (the service has no ComputerSystem)" if role == named.role else (
                "inside a node chassis")
        out.append(Chassis(named.id, named.uri, role, named.type, str(pid) if pid else None, why))
    return out


def _get(doc, path: str):
    for part in path.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None  # Redfish sends null for a reading it does not have now
    # always a float: one BMC writes 39 where another writes 39.5, and a field's type must never change
    # (InfluxDB refuses the other type for good: "field type conflict")
    return float(v)


def _scaled(v, scale) -> float:
    return v * scale if scale else v


def _scope(models: Models, chassis: Chassis, rule_scope: str | None) -> str:
    if rule_scope == "chassis" or rule_scope is None:
        return models.chassis_scope.get(chassis.role, "chassis")
    return rule_scope


def _tags(models: Models, chassis: Chassis, measurement: str, scope: str | None, component: str) -> dict:
    t = chassis.tags()
    if measurement == "bmc_power":
        t.update(source=SOURCE, scope=_scope(models, chassis, scope), component=component)
    elif measurement == "cooling":
        t["connector"] = component
    else:
        t["sensor"] = component
    return t


# Status.State values whose readings are measurements (Redfish Resource.State); a resource in any other state
# (Absent, UnavailableOffline, StandbyOffline, Disabled, ...) is skipped and said, its readings not taken.
LIVE_STATES = frozenset({"Enabled", "Degraded", "Quiesced", "Updating"})


def inactive(doc) -> str | None:
    """The resource's Status.State where it is one whose readings are not measurements, else None."""
    state = (doc.get("Status") or {}).get("State") if isinstance(doc, dict) else None
    return state if isinstance(state, str) and state not in LIVE_STATES else None


def map_resource(models: Models, res: Resource, doc: dict, skipped: list[str] | None = None) -> list[Reading]:
    """Readings of one polled resource; what is not live (Status.State) is left out and added to `skipped`."""
    skipped = [] if skipped is None else skipped
    if res.kind not in ("sensors_expanded",) and (state := inactive(doc)):
        skipped.append(f"{res.uri}: {state}")
        return []
    if res.kind == "sensor":
        return _limited(map_sensor(models, res.chassis, doc), res)
    if res.kind == "sensors_expanded":
        out = []
        for m in doc.get("Members") or ():
            if isinstance(m, dict) and m.get("@odata.id") not in res.covered:
                if state := inactive(m):
                    skipped.append(f"{m.get('@odata.id')}: {state}")
                    continue
                out += map_sensor(models, res.chassis, m)
        return _limited(out, res)
    if res.kind == "leak_detector":
        return map_leak(res, doc)
    out: list[Reading] = []
    own = res.name or res.chassis.id
    for rule in models.resources.get(res.kind, ()):
        m = rule["measurement"]
        if "path" in rule:
            v = number(_get(doc, rule["path"]))
            if v is None:
                continue
            who = rule.get("sensor")
            component = own if who in (None, "self", "psu") else who
            if m == "bmc_power" and rule.get("scope") == "chassis":
                component = "chassis"
            tags = _tags(models, res.chassis, m, rule.get("scope"), component)
            parent = rule["path"].rsplit(".", 1)[0]
            ds = _get(doc, f"{parent}.DataSourceUri")
            out.append(Reading(m, tags, rule["field"], _scaled(v, rule.get("scale")), res.uri, ds, res.kind))
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
            if state := inactive(e):
                skipped.append(f"{res.uri} {name}: {state}")
                continue
            for path, fname in rule["fields"].items():
                v = number(_get(e, path))
                if v is None:
                    continue
                if "units" in rule:
                    fname = rule["units"].get(e.get("ReadingUnits"))
                    if fname is None:
                        continue
                v = _scaled(v, (rule.get("scales") or {}).get(path))
                tags = _tags(models, res.chassis, m, rule.get("scope"), name)
                out.append(Reading(m, tags, fname, v, res.uri, e.get("DataSourceUri"), res.kind))
    return _limited(out, res)


def _limited(readings: list[Reading], res: Resource) -> list[Reading]:
    for r in readings:
        r.limit_watts = res.limit_watts
    return readings


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
    v = number(doc.get("Reading"))
    if v is None:
        return []
    name = str(doc.get("Id") or doc.get("Name") or doc.get("@odata.id", "?").rsplit("/", 1)[-1])
    m = kind["measurement"]
    scope = None
    if m == "bmc_power":
        scope = sensor_scope(models, doc)
        if scope in PSU_SCOPES:
            name = psu_of(doc, name)
    tags = _tags(models, chassis, m, scope, name)
    uri = doc.get("@odata.id", "")
    out = [Reading(m, tags, kind["field"], _scaled(v, kind.get("scale")), uri, uri, "sensor")]
    rpm = number(doc.get("SpeedRPM"))
    if kind["field"] == "fan_speed_percent" and rpm is not None:
        out.append(Reading(m, tags, "fan_speed_rpm", rpm, uri, uri, "sensor"))
    return out


_QUANTITY = re.compile(r"(?i)_?(input|output|in|out)?_?(power|energy|watts?|joules?|kwh)$")


def psu_of(doc: dict, name: str) -> str:
    """The supply a PowerSupply Sensor measures, so that its power and energy sensors are one supply's two
    readings, not two supplies: the PowerSupply its RelatedItem names (the URI's last segment, as the PSU's
    own readings are keyed), else the sensor's Id without the quantity (PS1InputPower, PS1Energy: PS1)."""
    for ref in doc.get("RelatedItem") or ():
        uri = _uri(ref)
        if uri and "/PowerSupplies/" in uri:
            return uri.rsplit("/", 1)[-1]
    return _QUANTITY.sub("", name) or name


def sensor_scope(models: Models, doc: dict) -> str:
    """A power or energy Sensor's scope from the explicit table of contexts: unknown is a component."""
    ctx = models.sensor_scope.get(doc.get("PhysicalContext") or "")
    if ctx is None:
        return "component"
    return ctx.get(doc.get("PhysicalSubContext") or "", ctx.get("", "component"))


def map_leak(res: Resource, doc: dict) -> list[Reading]:
    state = doc.get("DetectorState") or (doc.get("Status") or {}).get("Health")
    if not isinstance(state, str):
        return []
    tags = {**res.chassis.tags(), "detector": str(doc.get("Id") or res.name),
            "detector_type": str(doc.get("LeakDetectorType") or "unknown")}
    return [Reading("leak", tags, "leak_detected", state != "OK", res.uri),
            Reading("leak", tags, "state", state, res.uri)]


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


PSU_SCOPES = ("psu_input", "psu_output", "psu")


def dedupe(readings: list[Reading]) -> list[Reading]:
    """Each value read once. By the Sensor behind it: a value the service shows in two resources
    (EnvironmentMetrics and ThermalMetrics both naming CPU1Temp) is kept from the first, the newest model. Where
    no DataSourceUri says so, by what it measures: one value per series and field (EnergyJoules and EnergykWh of
    one resource: the first, the joules); and a PowerSupply Sensor of a chassis whose power supplies already
    give that quantity (their Metrics, or legacy PowerSupplies) is the same supply read twice: left out. A power
    distribution unit's summary (PowerDistributionMetrics) goes first: its total is the pdu family's, the Sensor
    it cites only the same value again."""
    readings = sorted(readings, key=lambda r: r.origin != "distribution_metrics")  # stable: the rest keep order
    seen: set[tuple] = set()
    psu_fields = {(r.tags.get("chassis"), r.field) for r in readings
                  if r.origin != "sensor" and r.tags.get("scope") in PSU_SCOPES}
    out = []
    for r in readings:
        if r.data_source:
            key = (r.data_source, r.field)
            if key in seen:
                continue
            seen.add(key)
        if r.origin == "sensor" and r.tags.get("scope") in PSU_SCOPES and (
                r.tags.get("chassis"), r.field) in psu_fields:
            continue
        key = (r.measurement, tuple(sorted(r.tags.items())), r.field)
        if key in seen:
            continue
        seen.add(key)
        out.append(r)
    return out


def family_of(r: Reading, target: str, role: str | None) -> tuple[str, dict[str, str]]:
    """Where a reading goes: a PDU's or power shelf's summary and outlets to the pdu family (tag device: the
    target and chassis; role: the target's, for PUE), everything else as mapped."""
    measurement, tags = r.measurement, r.tags
    scope = "device" if r.origin == "distribution_metrics" else "outlet" if tags.get("scope") == "outlet" else None
    if (measurement != "bmc_power" or scope is None or r.field not in PDU_FIELDS
            or tags.get("chassis_role") not in FACILITY_ROLES):
        return measurement, tags
    out = {k: v for k, v in tags.items() if k != "component"}
    out.update(scope=scope, source=f"{SOURCE}_pdu", device=f"{target}/{tags.get('chassis', '')}")
    if scope == "outlet":
        out["outlet"] = tags.get("component", "")
    if role:
        out["role"] = role
    return "pdu", out
