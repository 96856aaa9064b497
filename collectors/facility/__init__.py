"""Facility power, energy and PUE from the facility families on the bus, whatever transport fed them.

PUE = total facility energy / IT equipment energy, over the same period (The Green Grid, ISO/IEC 30134-2).
Each device's configuration gives it a role, carried as tag `role` on its rows: ``it`` (power into IT
equipment: rack PDUs, the UPS output feeding IT), ``cooling`` (power into cooling), ``facility_total`` (the
utility meter or UPS input) or ``other``. Any collector emitting the `pdu`, `meter`, `ups` and `cooling`
families (SNMP, Modbus, Redfish, a test's transport) takes part; this collector runs after them every tick
(`consumes`) and writes measurement ``facility``:

- instant: ``pue`` = total_power / it_power (tag ``pue_kind=total``); without a facility_total device but with
  cooling, the partial PUE (it + cooling) / it (``pue_kind=partial``), which understates the true PUE by the
  losses it does not see;
- over a window (default 15 min) from energy counter deltas: ``pue_energy`` = Δtotal_energy / Δit_energy, the
  definition proper; never from one sampled power reading.

A device's power is its top-level reading: a PDU's or an electricity meter's device total, else the sum of its
inlets, else of its phases (never outlets on top, which would count twice); a UPS's output (role it) or input
(role facility_total); a CDU's or chiller's own draw (unit_power_watts) where no meter covers it.
Counters of a device that missed a sweep keep their last value in the sums, so the facility counters stay
monotonic.
"""

from __future__ import annotations

from collections import deque

from pydantic import Field

from agent.collector import Collector, NotPresent
from agent.config import CollectorOptions, PositiveDuration
from agent.model import Accumulator, Kind, Metric, Sample
from collectors.common.rollup import DeviceTotals, device_name, device_totals

ROLES = ("it", "cooling", "facility_total")

_G, _C = Kind.GAUGE, Kind.COUNTER
_TAGS = ("source", "scope", "pue_kind")
METRICS = tuple(Metric("facility", f, kind, unit, desc, _TAGS) for f, kind, unit, desc in (
    ("it_power_watts", _G, "watts", "power into IT equipment (devices with role it)"),
    ("cooling_power_watts", _G, "watts", "power into cooling (devices with role cooling)"),
    ("total_power_watts", _G, "watts", "total facility power (devices with role facility_total)"),
    ("it_energy_joules_total", _C, "joules", "IT energy, sum of the IT devices' monotonic counters"),
    ("cooling_energy_joules_total", _C, "joules", "cooling energy"),
    ("total_energy_joules_total", _C, "joules", "total facility energy"),
    ("pue", _G, "1", "instant PUE: total / IT power (pue_kind=partial: (IT + cooling) / IT)"),
    ("pue_energy", _G, "1", "PUE over the window from energy counter deltas: Δtotal / ΔIT"),
    ("pue_window_seconds", _G, "seconds", "the window pue_energy covers"),
    ("devices", _G, "count", "devices with a role whose rows are current on the bus"),
))


class Facility:
    def __init__(self, window_s: float = 900.0) -> None:
        self.window_ns = int(window_s * 1e9)
        self.last_energy: dict[str, tuple[str, float]] = {}  # device -> (role, joules)
        self.history: deque[tuple[int, float, float]] = deque()

    def compute(self, ts: int, devices: dict[str, DeviceTotals]) -> tuple[dict, dict] | None:
        power: dict[str, float] = {}
        for name, d in devices.items():
            if d.power_watts is not None:
                power[d.role] = power.get(d.role, 0.0) + d.power_watts
            if d.energy_joules is not None:
                self.last_energy[name] = (d.role, d.energy_joules)
        energy: dict[str, float] = {}
        for role, joules in self.last_energy.values():
            energy[role] = energy.get(role, 0.0) + joules
        it, cooling, total = power.get("it"), power.get("cooling"), power.get("facility_total")
        if it is None and total is None and cooling is None:
            return None
        f: dict = {"it_power_watts": it, "cooling_power_watts": cooling, "total_power_watts": total,
                   "it_energy_joules_total": energy.get("it"), "cooling_energy_joules_total": energy.get("cooling"),
                   "total_energy_joules_total": energy.get("facility_total")}
        kind = "total"
        if it and total is not None:
            f["pue"] = round(total / it, 4)
        elif it and cooling is not None:
            f["pue"] = round((it + cooling) / it, 4)
            kind = "partial"
        e_it, e_total = energy.get("it"), energy.get("facility_total")
        if kind == "partial" and e_it is not None and energy.get("cooling") is not None:
            e_total = e_it + energy["cooling"]
        if e_it is not None and e_total is not None:
            if not self.history or ts > self.history[-1][0]:
                self.history.append((ts, e_it, e_total))
            while len(self.history) > 1 and self.history[1][0] <= ts - self.window_ns:
                self.history.popleft()
            t0, it0, tot0 = self.history[0]
            if t0 < ts and e_it - it0 > 0:
                f["pue_energy"] = round((e_total - tot0) / (e_it - it0), 4)
                f["pue_window_seconds"] = (ts - t0) / 1e9
        return f, {"pue_kind": kind}


class FacilityOptions(CollectorOptions):
    pue_window: PositiveDuration = Field(900.0, description="window of the energy-based PUE")


class FacilityCollector(Collector):
    kind = "facility"
    Options = FacilityOptions
    METRICS = METRICS
    consumes = ("pdu", "meter", "ups", "cooling")  # the families whose rows carry a device's role

    def __init__(self, options: FacilityOptions, ctx) -> None:
        super().__init__(options, ctx)
        self.facility = Facility(options.pue_window)

    def collect(self, acc: Accumulator) -> None:
        bus = self.ctx.bus
        by_device: dict[tuple[str, str], list[Sample]] = {}
        for family in self.consumes:
            for s in bus.latest(family) if bus is not None else ():
                role = s.tags.get("role")
                if role in ROLES:
                    by_device.setdefault((device_name(s), role), []).append(s)
        if not by_device and not self.facility.last_energy:
            raise NotPresent("no facility device with a role (it, cooling, facility_total) reports on this agent")
        totals = {f"{name}|{role}": device_totals(role, rows) for (name, role), rows in by_device.items()}
        out = self.facility.compute(acc.ts, totals)
        if out is not None:
            fields, tags = out
            fields["devices"] = len(by_device)
            acc.add("facility", fields, {**tags, "source": "meter", "scope": "facility"})
