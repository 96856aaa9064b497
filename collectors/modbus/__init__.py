"""Modbus TCP collector: facility meters, CDUs, chillers and leak panels from register-map profiles.

Runs on facility pollers (off by default). The vendor knowledge is data (collectors/modbus/profiles/*.yaml, on the
shared profile engine); this module only reads registers. Devices are grouped by endpoint: one connection per
device or gateway, the unit ids behind a gateway asked one after the other on it, endpoints polled at the same
time up to `max_in_flight`. Each device has its own deadline, so a dead or silent one costs about one timeout and
never delays the others. Adjacent objects are read together (`max_registers`, `max_gap`); a read the device
refuses is split into reads of its objects, and an object the device does not have is left out (and asked again
every RECHECK polls), so one unsupported register never costs the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.collector import Collector, NotPresent
from agent.config import CollectorOptions, Host, PositiveDuration, Strict
from agent.logonce import Latch
from agent.model import Accumulator, Kind, Metric
from collectors.common.coolant import complete
from collectors.common.energy import EnergyCounters
from collectors.common.families import FACILITY_FAMILIES, family_metrics
from collectors.common.profile import Profile, ProfileError
from collectors.common.profile import load_profiles as load_from
from collectors.common.profile.evaluate import evaluate
from collectors.common.profile.plan import object_words
from collectors.common.profile.samples import DeviceCounters, within_deadline

from .blocks import REGISTER_TABLES, Block, ObjectError, Ref, parse_object, plan_blocks, split, values_of
from .client import REFUSED, TRANSIENT, UNREACHABLE, Connection, DeviceError, exception_name
from .sunspec import find_model

log = logging.getLogger(__name__)

PROFILE_DIR = Path(__file__).parent / "profiles"
DEVICE_TAGS = ("device", "unit_id", "role", "site", "room", "row", "rack", "profile")


class Match(BaseModel):
    """How this transport finds and reads a profile's device."""

    model_config = ConfigDict(extra="forbid")
    sunspec_models: list[int] = Field(default_factory=list, description="a SunSpec profile: the models it reads "
                                      "(the first found in the device's chain); its addresses are offsets into it")
    max_registers: int = Field(125, ge=1, le=125, description="the most registers the device returns in one read")
    max_gap: int = Field(16, ge=0, le=125, description="unused registers read to join two objects in one read")


def check_objects(p: Profile) -> None:
    """Every object a Modbus table address; a register field says its type (a bit object has none)."""
    for g in p.groups:
        if g.table is not None:
            raise ProfileError(f"profile {p.name}: Modbus profiles have no tables (group {g.measurement})")
        for f in g.fields:
            table = parse_object(f.oid).table
            if table in REGISTER_TABLES and f.type is None:
                raise ProfileError(f"profile {p.name}: {g.measurement}.{f.field} reads register {f.oid} without "
                                   "a type (int16, uint16, int32, uint32, int64, uint64, float32, float64)")
            if table not in REGISTER_TABLES and f.type is not None:
                raise ProfileError(f"profile {p.name}: {g.measurement}.{f.field}: {f.oid} is a bit, not words")
            if f.fallback:
                raise ProfileError(f"profile {p.name}: {g.measurement}.{f.field}: fallbacks are SNMP's")
            if f.scale_exponent:
                parse_object(f.scale_exponent)


@lru_cache(maxsize=4)
def load_profiles(directory: Path = PROFILE_DIR) -> dict[str, Profile]:
    """The Modbus profiles (collectors/modbus/profiles/), `match` sections and objects checked."""
    out = load_from(directory, Match)
    for p in out.values():
        try:
            check_objects(p)
        except ObjectError as e:
            raise ProfileError(f"profile {p.name}: {e}") from None
    return out


def _metrics() -> tuple[Metric, ...]:
    g = Kind.GAUGE
    return (*family_metrics(*FACILITY_FAMILIES), *(Metric("modbus_device", f, k, u, d, DEVICE_TAGS) for f, k, u, d in (
        ("up", g, "bool", "the device answered this poll"),
        ("state", Kind.INFO, "info", "up (readings), empty (it answered, the profile found nothing to read: see "
         "error) or down"),
        ("error", Kind.INFO, "info", "why the last poll failed, or gave no readings (absent when it gave readings)"),
        ("poll_duration_seconds", g, "seconds", "wall time of the poll"),
        ("readings", g, "count", "readings the profile produced"),
        ("sent_requests", g, "requests", "Modbus requests this poll"),
        ("exceptions", g, "count", "objects the device answered with a Modbus exception this poll"),
        ("absent_objects", g, "count", "objects left out: the device refused them (illegal address or function)"),
    )))


class DeviceOptions(Strict):
    """One device on Modbus TCP: on its own address, or a unit id behind a gateway."""

    name: str = Field(..., description="the device's name: tag `device`")
    host: Host = Field(..., description="address or host name of the device or its gateway")
    port: int = Field(502, ge=1, le=65535, description="TCP port")
    unit: int = Field(1, ge=0, le=255, description="unit id (slave address): the device behind a gateway; a "
                                                   "device on its own address often answers 1 or 255")
    profile: str = Field(..., description="the register profile (aifactory modbus profiles)")
    timeout: PositiveDuration = Field(2.0, description="per request; devices behind one gateway share the "
                                                       "first one's")
    retries: int = Field(1, ge=0, le=5, description="retransmissions per request")
    max_registers: int | None = Field(None, ge=1, le=125, description="the most registers per read (default: "
                                                                      "the profile's)")
    max_gap: int | None = Field(None, ge=0, le=125, description="unused registers read to join two objects "
                                                                "(default: the profile's)")
    sunspec_base: int | None = Field(None, ge=0, le=65535, description="SunSpec profiles: the base address "
                                                                       "(default: 40000, 0, 50000 tried)")
    role: Literal["it", "cooling", "facility_total", "other"] = Field(
        "other", description="what the device meters, for PUE: IT load, cooling, the facility total")
    fluid: Literal["water", "pg25", "pg30", "eg25"] = Field(
        "water", description="a liquid loop's coolant, for heat removed from flow and delta T")
    fluid_heat_capacity: float | None = Field(
        None, gt=0, description="any other coolant: its volumetric heat capacity in J/(L K)")
    supply_temperature_limit_celsius: float | None = Field(
        None, description="a CDU's supply temperature above which CduSupplyTemperatureHigh fires")
    flow_floor_litres_per_minute: float | None = Field(
        None, ge=0, description="a CDU's flow below which CduFlowLow fires")
    site: str | None = Field(None, description="tag `site` of the device's samples")
    room: str | None = Field(None, description="tag `room`")
    row: str | None = Field(None, description="tag `row`")
    rack: str | None = Field(None, description="tag `rack`")

    @field_validator("profile")
    @classmethod
    def _known(cls, v: str) -> str:
        known = load_profiles()
        if v not in known:
            raise ValueError(f"unknown Modbus profile {v!r}; the profiles: {', '.join(sorted(known))}")
        return v

    def tags(self) -> dict[str, str]:
        return {k: v for k, v in (("device", self.name), ("role", self.role), ("site", self.site),
                                  ("room", self.room), ("row", self.row), ("rack", self.rack)) if v}


class ModbusOptions(CollectorOptions):
    devices: list[DeviceOptions] = Field(default_factory=list)
    max_in_flight: int = Field(32, ge=1, description="devices and gateways polled at the same time")

    def unique_keys(self) -> list[tuple[tuple, str, str]]:
        return [(("devices", i, "name"), t.name, "its counters and series") for i, t in enumerate(self.devices)]


class Device:
    """A device's poll state: its profile, where its SunSpec model is, the reads planned, what it refused."""

    RECHECK = 30  # polls before an object the device refused is asked again (a firmware upgrade adds it)

    def __init__(self, opts: DeviceOptions, profile: Profile) -> None:
        self.opts = opts
        self.profile = profile
        self.offset: int | None = None if profile.match.sunspec_models else 0
        self.model: int | None = None
        self.absent: dict[str, int] = {}  # object -> polls until asked again
        self.refused: set[tuple] = set()  # blocks the device refused whole: read object by object
        self._blocks: list[Block] | None = None
        self.latch = Latch(log)  # a failure logged once per cause, the recovery once

    def blocks(self) -> list[Block]:
        if self._blocks is None:
            m = self.profile.match
            objects, holes = {}, []
            for name, words in object_words(self.profile).items():
                ref = parse_object(name, words)
                ref = Ref(ref.table, ref.address + (self.offset or 0), ref.count)
                if name in self.absent:
                    holes.append(ref)
                else:
                    objects[name] = ref
            self._blocks = plan_blocks(objects, self.opts.max_registers or m.max_registers,
                                       m.max_gap if self.opts.max_gap is None else self.opts.max_gap, holes)
        return self._blocks

    def tick(self) -> None:
        """One poll on: refused objects whose wait is over are asked again."""
        back = [o for o, left in self.absent.items() if left <= 1]
        for o in list(self.absent):
            self.absent[o] -= 1
        for o in back:
            del self.absent[o]
        if back:
            self._blocks = None

    def refuse(self, name: str) -> None:
        self.absent[name] = self.RECHECK
        self._blocks = None


class Poll:
    """What one poll of a device read: values by object, and the objects answered with an exception."""

    def __init__(self) -> None:
        self.data: dict[str, object] = {}
        self.exceptions: dict[str, int] = {}


async def poll_device(conn: Connection, dev: Device) -> Poll:
    unit = dev.opts.unit
    if dev.offset is None:
        dev.model, dev.offset = await find_model(conn, unit, dev.profile.match.sunspec_models, dev.opts.sunspec_base)
    dev.tick()
    out = Poll()
    queue = list(dev.blocks())
    while queue:
        block = queue.pop(0)
        key = (block.table, block.address, block.count)
        if key in dev.refused and len(block.objects) > 1:
            queue[:0] = split(block)
            continue
        ans = await conn.read(block, unit)
        if ans.exception in TRANSIENT:
            await asyncio.sleep(min(0.05, dev.opts.timeout / 10))  # busy: once more, then the objects miss a poll
            ans = await conn.read(block, unit)
        if ans.exception is None:
            out.data.update(values_of(block, ans.values))
        elif ans.exception in UNREACHABLE:
            raise DeviceError(f"unit {unit}: {exception_name(ans.exception)}")
        elif ans.exception in REFUSED and len(block.objects) > 1:
            dev.refused.add(key)  # a gap it does not map, or one object it lacks: object by object from now on
            queue[:0] = split(block)
        else:
            for name, _ in block.objects:
                out.exceptions[name] = ans.exception
                if ans.exception in REFUSED:
                    dev.refuse(name)
    return out


class ModbusCollector(Collector):
    kind = "modbus"
    Options = ModbusOptions
    METRICS = _metrics()
    default_enabled = False
    cli = "collectors.modbus.cli:add_parser"  # `aifactory modbus probe|profiles`

    def __init__(self, options: ModbusOptions, ctx) -> None:
        super().__init__(options, ctx)
        profiles = load_profiles()
        self.devices = [Device(d, profiles[d.profile]) for d in options.devices]
        # one connection per endpoint (a device, or a gateway and the units behind it)
        self.endpoints: dict[tuple[str, int], list[Device]] = {}
        for d in self.devices:
            self.endpoints.setdefault((d.opts.host, d.opts.port), []).append(d)
        self.connections = {ep: Connection(ep[0], ep[1], devs[0].opts.timeout, devs[0].opts.retries)
                            for ep, devs in self.endpoints.items()}
        self.counters = DeviceCounters(
            EnergyCounters(ctx.state_dir / "modbus-counters.json" if ctx.state_dir else None), "modbus")
        self.slots: asyncio.Semaphore | None = None

    async def collect(self, acc: Accumulator) -> None:
        if not self.devices:
            raise NotPresent("no Modbus devices configured")
        if self.slots is None:
            import pymodbus  # noqa: F401  (missing: this collector fails, named, and the others run)

            self.slots = asyncio.Semaphore(self.options.max_in_flight)
        # Every device finishes (answer, error or its own deadline) before the run's, so the samples of the
        # devices that did answer always leave.
        end = time.monotonic() + (self.ctx.timeout or 1e9) * 0.9
        await asyncio.gather(*(self._endpoint(ep, devs, acc, end) for ep, devs in self.endpoints.items()))
        self.counters.save()  # before the samples leave: an emitted value is never ahead of the saved state

    async def _endpoint(self, ep, devs: list[Device], acc: Accumulator, end: float) -> None:
        async with self.slots:
            for dev in devs:
                await self._one(self.connections[ep], dev, acc, end)

    async def _one(self, conn: Connection, dev: Device, acc: Accumulator, end: float) -> None:
        o = dev.opts
        tags = {**o.tags(), "profile": dev.profile.name}
        t0 = time.perf_counter()
        before = conn.requests
        poll = Poll()
        try:
            # a connection cut off mid-poll is closed: its late answers must not meet the next unit's requests
            poll = await within_deadline(poll_device(conn, dev), o.timeout, o.retries, end, conn.close)
            readings = evaluate(dev.profile, poll.data, tags)
            for measurement, fields, rtags in self.counters.samples(o.name, tags.keys(), readings):
                if measurement == "cooling":
                    self._cooling(o, fields)
                acc.add(measurement, fields, rtags)
            readings = [r for r in readings if r.value is not None]
            ok, error = True, None
            if not readings:
                error = (f"profile {dev.profile.name}: no readings; the device answered {len(poll.data)} objects"
                         + (f", refused {len(poll.exceptions)}" if poll.exceptions else "")
                         + ", all 'not available' or out of range")
        except (DeviceError, TimeoutError, OSError) as e:
            ok, error, readings = False, str(e) or type(e).__name__, []
        except Exception as e:  # anything one device (or the library on its answers) raises stays with it
            ok, error, readings = False, f"{type(e).__name__}: {e}", []
        state = "down" if not ok else ("empty" if error else "up")
        if error is None:
            dev.latch.recovered("modbus device %s (%s:%d unit %d): read again with profile %s", o.name, o.host,
                                o.port, o.unit, dev.profile.name)
        else:
            dev.latch.failed(error, "modbus device %s (%s:%d unit %d): %s", o.name, o.host, o.port, o.unit, error,
                             level=logging.WARNING if state == "empty" else logging.ERROR)
        acc.add("modbus_device", {
            "up": ok, "state": state, "error": error, "poll_duration_seconds": round(time.perf_counter() - t0, 6),
            "readings": len(readings), "sent_requests": conn.requests - before, "exceptions": len(poll.exceptions),
            "absent_objects": len(dev.absent)}, {**tags, "unit_id": str(o.unit)})

    @staticmethod
    def _cooling(o: DeviceOptions, fields: dict) -> None:
        complete(fields, o.fluid, o.fluid_heat_capacity)
        if o.supply_temperature_limit_celsius is not None:
            fields["coolant_supply_temperature_limit_celsius"] = o.supply_temperature_limit_celsius
        if o.flow_floor_litres_per_minute is not None:
            fields["coolant_flow_floor_litres_per_minute"] = o.flow_floor_litres_per_minute

    def close(self) -> None:
        for c in self.connections.values():
            c.close()

