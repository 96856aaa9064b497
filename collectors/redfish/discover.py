"""Discovery (once per target) and polls (every run) of a Redfish service: I/O only, no samples.

Discovery walks ServiceRoot -> Chassis -> what each chassis offers and writes a plan: the
resources to GET on every poll, newest model first. Legacy Power/Thermal are polled only
where the chassis has no newer power or thermal resource; a Sensor is polled only where no
polled resource already shows its reading (DataSourceUri), and the whole Sensors collection
is read in one request where the service supports $expand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .client import AuthError, BadAnswer, Forbidden, NotFound, RedfishClient, RedfishError
from .model import (
    Chassis,
    Models,
    Reading,
    Resource,
    data_sources,
    dedupe,
    inactive,
    map_resource,
    number,
    sensor_kind,
    topology,
)

EXPAND = "?$expand=.($levels=1)"
# Voltage, current and frequency sensors are one request each without $expand: polled only where asked
# (PDUs and power shelves want them; for a node's energy they add requests, not watts).
ELECTRICAL = frozenset({"voltage_volts", "current_amperes", "frequency_hertz"})


@dataclass
class Plan:
    chassis: list[Chassis] = field(default_factory=list)
    systems: int = 0  # ComputerSystems the service lists (0: roles come from names)
    resources: list[Resource] = field(default_factory=list)
    models: dict[str, list[str]] = field(default_factory=dict)  # chassis id -> the models it is read by
    discovery_requests: int = 0
    electrical: bool = False
    skipped: list[str] = field(default_factory=list)  # resources left out at discovery (Status.State)


def _link(doc: dict, key: str) -> str | None:
    v = doc.get(key)
    return v.get("@odata.id") if isinstance(v, dict) else None


def _members(client: RedfishClient, uri: str, deadline: float) -> list[dict]:
    coll = client.get(uri, deadline)
    out = []
    for m in coll.get("Members") or ():
        ref = m.get("@odata.id") if isinstance(m, dict) else None
        if ref:
            try:
                out.append(client.get(ref, deadline))
            except NotFound:
                continue  # listed but gone: the collection is stale, the others are still read
    return out


def _leak_detection(client: RedfishClient, doc: dict, deadline: float) -> str | None:
    """The LeakDetectors collection behind a resource's LeakDetection (ThermalSubsystem, CoolingUnit)."""
    link = _link(doc, "LeakDetection")
    ld = _optional(client.get, link, deadline) if link else None
    return _link(ld, "LeakDetectors") if ld else None


def _detectors(client: RedfishClient, uri: str | None, ch: Chassis, deadline: float) -> list[tuple[Resource, dict]]:
    members = (_optional(_members, client, uri, deadline) or ()) if uri else ()
    return [(Resource("leak_detector", det.get("@odata.id", ""), ch, str(det.get("Id"))), det) for det in members]


def _optional(fn, *args):
    """What fn answers; None where the resource is not there or this account may not read it."""
    try:
        return fn(*args)
    except (NotFound, Forbidden, BadAnswer):
        return None


COOLING_UNITS = ("CDUs", "ImmersionUnits", "HeatExchangers")  # ThermalEquipment's collections of CoolingUnit


def _cooling_units(client: RedfishClient, root: dict, deadline: float, chassis_filter) -> list[tuple[Resource, dict]]:
    """Pumps, coolant connectors, leak detectors and environment of the ThermalEquipment cooling units (CDUs,
    immersion units, heat exchangers), each under the chassis it links to (else a chassis of its own)."""
    te = _link(root, "ThermalEquipment")
    tdoc = _optional(client.get, te, deadline) if te else None
    out: list[tuple[Resource, dict]] = []
    for coll in COOLING_UNITS:
        if tdoc is None or not _link(tdoc, coll):
            continue
        for unit in _optional(_members, client, _link(tdoc, coll), deadline) or ():
            linked = [c.get("@odata.id", "") for c in (unit.get("Links") or {}).get("Chassis") or ()
                      if isinstance(c, dict)]
            cid = linked[0].rstrip("/").rsplit("/", 1)[-1] if linked else f"{coll[:-1].lower()}-{unit.get('Id')}"
            ch = Chassis(cid, linked[0] if linked else unit.get("@odata.id", ""), "cooling_unit",
                         str(unit.get("EquipmentType") or coll[:-1]))
            if chassis_filter is not None and not chassis_filter(ch):
                continue
            env = _link(unit, "EnvironmentMetrics")
            if env and (doc := _optional(client.get, env, deadline)) is not None:
                out.append((Resource("environment_metrics", env, ch), doc))
            for key, kind, prefix in (("Pumps", "pump", ""), ("PrimaryCoolantConnectors", "coolant_connector",
                                                              "primary "),
                                      ("SecondaryCoolantConnectors", "coolant_connector", "secondary ")):
                if _link(unit, key):
                    for m in _optional(_members, client, _link(unit, key), deadline) or ():
                        name = prefix + str(m.get("Name") or m.get("Id"))
                        out.append((Resource(kind, m.get("@odata.id", ""), ch, name), m))
            out += _detectors(client, _leak_detection(client, unit, deadline), ch, deadline)
    return out


def _capacity(v) -> float | None:
    """A stated capacity (watts) that can bound readings: a positive number, else none."""
    n = number(v)
    return n if n is not None and n > 0 else None


# PowerEquipment's collections of power distribution units: (collection, chassis role, type, id prefix)
POWER_EQUIPMENT = (("PowerShelves", "power_shelf", "PowerShelf", "powershelf"),
                   ("RackPDUs", "pdu", "RackPDU", "rackpdu"))


def _power_shelves(client: RedfishClient, root: dict, deadline: float, chassis_filter) -> list[tuple[Resource, dict]]:
    """PowerEquipment's power shelves and rack PDUs (PowerDistribution): each unit's Metrics (its power and energy,
    the unit's summary), under the chassis it links to."""
    pe = _link(root, "PowerEquipment")
    pdoc = _optional(client.get, pe, deadline) if pe else None
    out: list[tuple[Resource, dict]] = []
    for collection, role, kind, prefix in POWER_EQUIPMENT:
        units = _link(pdoc, collection) if pdoc else None
        for unit in (_optional(_members, client, units, deadline) or ()) if units else ():
            linked = [c.get("@odata.id", "") for c in (unit.get("Links") or {}).get("Chassis") or ()
                      if isinstance(c, dict)]
            cid = linked[0].rstrip("/").rsplit("/", 1)[-1] if linked else f"{prefix}-{unit.get('Id')}"
            ch = Chassis(cid, linked[0] if linked else unit.get("@odata.id", ""), role, kind,
                         why=f"a PowerEquipment {kind}")
            if chassis_filter is not None and not chassis_filter(ch):
                continue
            metrics = _link(unit, "Metrics")
            if metrics and (doc := _optional(client.get, metrics, deadline)) is not None:
                out.append((Resource("distribution_metrics", metrics, ch, str(unit.get("Id") or cid)), doc))
    return out


class Remembering:
    """A client whose GETs are kept: a discovery that outruns its deadline is resumed by the next one from
    what it already read, instead of starting over on every poll (a 10,000-member collection)."""

    def __init__(self, client: RedfishClient, seen: dict[str, dict]) -> None:
        self.client, self.seen = client, seen

    @property
    def requests(self) -> int:
        return self.client.requests

    def login(self, deadline: float) -> None:
        self.client.login(deadline)

    def get(self, uri: str, deadline: float) -> dict:
        doc = self.seen.get(uri)
        if doc is None:
            doc = self.seen[uri] = self.client.get(uri, deadline)
        return doc


def discover(client: RedfishClient, models: Models, deadline: float, chassis_filter=None,
             electrical: bool = False) -> Plan:
    plan = Plan(electrical=electrical)
    start = client.requests
    root = client.get(RedfishClient.ROOT, deadline)
    client.login(deadline)
    expand = bool(((root.get("ProtocolFeaturesSupported") or {}).get("ExpandQuery") or {}).get("Levels"))
    coll = _link(root, "Chassis")
    if coll is None:
        raise RedfishError("the service root has no Chassis collection: not a BMC or a Redfish device")
    # Cooling units first: their connectors name what a chassis's sensors only number (supply, return), so the
    # chassis sensors they cite are not polled again, and their leak detectors stand for the chassis's own.
    units = _cooling_units(client, root, deadline, chassis_filter)
    units += _power_shelves(client, root, deadline, chassis_filter)
    global_covered: set[str] = set()
    leak_chassis: set[str] = set()
    for res, doc in units:
        global_covered |= data_sources(doc)
        if res.kind == "leak_detector":
            leak_chassis.add(res.chassis.id)
    plan.resources += [res for res, _ in units]
    for res, _ in units:
        kinds = plan.models.setdefault(res.chassis.id, [])
        label = {"pump": "ThermalEquipment Pumps", "coolant_connector": "ThermalEquipment CoolantConnectors",
                 "leak_detector": "ThermalEquipment LeakDetection",
                 "environment_metrics": "ThermalEquipment EnvironmentMetrics",
                 "distribution_metrics": "PowerEquipment " + next(
                     (c for c, _, kind, _ in POWER_EQUIPMENT if kind == res.chassis.type), "")}[res.kind]
        if label not in kinds:
            kinds.append(label)
    chassis_docs = _members(client, coll, deadline)
    systems = _link(root, "Systems")
    system_docs = (_optional(_members, client, systems, deadline) or []) if systems else []
    plan.systems = len(system_docs)
    roles = {c.uri.rstrip("/"): c for c in topology(models, chassis_docs, system_docs)}
    for cdoc in chassis_docs:
        ch = roles.get(str(cdoc.get("@odata.id", "")).rstrip("/"))
        if ch is None or (chassis_filter is not None and not chassis_filter(ch)):
            continue
        if state := inactive(cdoc):
            plan.skipped.append(f"{ch.uri}: {state}")
            continue
        plan.chassis.append(ch)
        used: list[str] = plan.models.get(ch.id, [])
        polled: list[tuple[Resource, dict]] = []

        env = _link(cdoc, "EnvironmentMetrics")
        if env and (doc := _optional(client.get, env, deadline)) is not None:
            polled.append((Resource("environment_metrics", env, ch), doc))
            used.append("EnvironmentMetrics")
        psub = _link(cdoc, "PowerSubsystem")
        if psub and (sub := _optional(client.get, psub, deadline)) is not None and _link(sub, "PowerSupplies"):
            for psu in _optional(_members, client, _link(sub, "PowerSupplies"), deadline) or ():
                metrics = _link(psu, "Metrics")
                # keyed by the supply's URI, not its Id: DMTF's public-tower has two supplies with Id Bay1
                name = str(psu.get("@odata.id") or psu.get("Id") or "psu").rstrip("/").rsplit("/", 1)[-1]
                if state := inactive(psu):
                    plan.skipped.append(f"{psu.get('@odata.id')}: {state}")
                elif metrics and (doc := _optional(client.get, metrics, deadline)) is not None:
                    polled.append((Resource("psu_metrics", metrics, ch, name,
                                            limit_watts=_capacity(psu.get("PowerCapacityWatts"))), doc))
            if any(r.kind == "psu_metrics" for r, _ in polled):
                used.append("PowerSubsystem")
        tsub = _link(cdoc, "ThermalSubsystem")
        tdoc = _optional(client.get, tsub, deadline) if tsub else None
        if tdoc is not None:
            used.append("ThermalSubsystem")
            tm = _link(tdoc, "ThermalMetrics")
            if tm and (doc := _optional(client.get, tm, deadline)) is not None:
                polled.append((Resource("thermal_metrics", tm, ch), doc))
            if _link(tdoc, "Fans"):
                for fan in _optional(_members, client, _link(tdoc, "Fans"), deadline) or ():
                    polled.append((Resource("fan", fan.get("@odata.id", ""), ch, str(fan.get("Id", "fan"))), fan))
            for key, kind in (("Pumps", "pump"), ("CoolantConnectors", "coolant_connector")):
                if _link(tdoc, key):  # liquid-cooled servers: cold-plate pumps and manifolds
                    for m in _optional(_members, client, _link(tdoc, key), deadline) or ():
                        polled.append((Resource(kind, m.get("@odata.id", ""), ch, str(m.get("Name") or m.get("Id"))),
                                       m))
        leaks = _link(cdoc, "LeakDetectors") or (_leak_detection(client, tdoc, deadline) if tdoc else None)
        if leaks and ch.id not in leak_chassis:
            polled += _detectors(client, leaks, ch, deadline)
            used.append("LeakDetectors")

        limit = _capacity((sub or {}).get("CapacityWatts")) if psub else None
        for res, _ in polled:
            if res.limit_watts is None and res.kind != "psu_metrics":
                res.limit_watts = limit
        readings = [r for res, doc in polled for r in map_resource(models, res, doc)]
        has_power = any(r.measurement == "bmc_power" for r in readings)
        if not has_power and (legacy := _link(cdoc, "Power")):
            if (doc := _optional(client.get, legacy, deadline)) is not None:
                polled.append((Resource("legacy_power", legacy, ch), doc))
                used.append("Power (legacy)")
        if tdoc is None and (legacy := _link(cdoc, "Thermal")):
            if (doc := _optional(client.get, legacy, deadline)) is not None:
                polled.append((Resource("legacy_thermal", legacy, ch), doc))
                used.append("Thermal (legacy)")

        covered: set[str] = set(global_covered)
        for _, doc in polled:
            covered |= data_sources(doc)
        sensors = _link(cdoc, "Sensors")
        if sensors:
            wanted = None
            if expand:
                try:
                    doc = client.get(sensors + EXPAND, deadline)
                    members = [m for m in doc.get("Members") or () if isinstance(m, dict)]
                    if members and all("Reading" in m or "ReadingType" in m for m in members):
                        polled.append((Resource("sensors_expanded", sensors + EXPAND, ch,
                                                covered=frozenset(covered)), doc))
                        wanted = []
                except RedfishError:
                    wanted = None  # $expand claimed but refused: read the members one by one
            if wanted is None:
                for sdoc in _optional(_members, client, sensors, deadline) or ():
                    uri = sdoc.get("@odata.id", "")
                    kind = sensor_kind(models, sdoc)
                    if uri not in covered and kind is not None and (electrical or kind["field"] not in ELECTRICAL):
                        polled.append((Resource("sensor", uri, ch, str(sdoc.get("Id"))), sdoc))
            used.append("Sensors")
        plan.resources += [res for res, _ in polled]
        plan.models[ch.id] = used
    plan.discovery_requests = client.requests - start
    return plan


@dataclass
class PollResult:
    readings: list[Reading]
    missing: list[str]  # resources that answered 404: the plan is stale
    requests: int
    error: str | None = None  # why the poll ended early; what was read before is kept
    auth_failed: bool = False
    skipped: list[str] = field(default_factory=list)  # resources whose Status.State is not live


def poll(client: RedfishClient, models: Models, plan: Plan, deadline: float) -> PollResult:
    """GET every planned resource once. A resource gone (404) is reported and the others still read; an
    auth failure, the deadline or a dead connection ends the poll, keeping what was read before it."""
    start = client.requests
    readings: list[Reading] = []
    missing: list[str] = []
    skipped: list[str] = list(plan.skipped)
    error, auth = None, False
    for res in plan.resources:
        try:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"poll not complete within its deadline ({len(readings)} readings kept)")
            doc = client.get(res.uri, deadline)
        except NotFound:
            missing.append(res.uri)
            continue
        except (Forbidden, BadAnswer) as e:  # not readable by this account, or garbage: the others are read
            skipped.append(str(e))
            continue
        except (TimeoutError, OSError, RedfishError) as e:
            error, auth = str(e) or type(e).__name__, isinstance(e, AuthError)
            break
        readings += map_resource(models, res, doc, skipped)
    if not plan.electrical:
        readings = [r for r in readings if r.field not in ELECTRICAL]
    return PollResult(dedupe(readings), missing, client.requests - start, error, auth, list(dict.fromkeys(skipped)))
