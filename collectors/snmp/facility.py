"""Facility power, energy and PUE from the devices' roles (The Green Grid / ISO/IEC 30134-2).

PUE = total facility energy / IT equipment energy, over the same period. Config gives each
device a role: ``it`` (power into IT equipment: rack PDUs, the UPS output feeding IT),
``cooling`` (power into cooling), ``facility_total`` (the utility meter or UPS input) or
``other``. Each sweep the poller writes measurement ``facility``:

- instant: ``pue`` = total_power / it_power (tag ``pue_kind=total``); without a facility_total
  device but with cooling, the partial PUE (it + cooling) / it (``pue_kind=partial``), which
  understates the true PUE by the losses it does not see;
- over a window (default 15 min) from energy counter deltas: ``pue_energy`` =
  Δtotal_energy / Δit_energy, the definition proper; never from one sampled power reading.

A device's power is its top-level reading: a PDU's device total, else the sum of its inlets,
else of its phases (never outlets on top, which would count twice); a UPS's output (role it)
or input (role facility_total). Counters of a device that missed a sweep keep their last value
in the sums, so the facility counters stay monotonic.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .evaluate import Reading

_SCOPES = ("device", "inlet", "phase")


@dataclass
class DeviceTotals:
    role: str
    power_watts: float | None = None
    energy_joules: float | None = None


def device_totals(role: str, readings: list[Reading]) -> DeviceTotals:
    t = DeviceTotals(role)
    pdu = [r for r in readings if r.measurement == "pdu"]
    for scope in _SCOPES:
        power = [r.value for r in pdu if r.field == "power_watts" and r.tags.get("scope") == scope]
        if power and t.power_watts is None:
            t.power_watts = float(sum(power))
        energy = [r.value for r in pdu if r.field == "energy_joules_total" and r.tags.get("scope") == scope]
        if energy and t.energy_joules is None:
            t.energy_joules = float(sum(energy))
    if t.power_watts is None:
        ups = [r for r in readings if r.measurement == "ups"]
        first = ("input_power_watts", "output_power_watts") if role == "facility_total" else (
            "output_power_watts", "input_power_watts")
        for name in first:
            vals = [r.value for r in ups if r.field == name]
            if vals:
                t.power_watts = float(sum(vals))
                break
    return t


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
            self.history.append((ts, e_it, e_total))
            while len(self.history) > 1 and self.history[1][0] <= ts - self.window_ns:
                self.history.popleft()
            t0, it0, tot0 = self.history[0]
            if t0 < ts and e_it - it0 > 0:
                f["pue_energy"] = round((e_total - tot0) / (e_it - it0), 4)
                f["pue_window_seconds"] = (ts - t0) / 1e9
        return f, {"pue_kind": kind}
