"""A facility device's top-level figures from its rows of the families, one rule for every reader.

A PDU reports a device total, inlets, phases, banks and outlets at once; adding them up counts the same power
several times. Its top-level reading is the device total, else the sum of its inlets, else of its phases (never
outlets on top); a UPS's output (what it feeds IT), or its input for the facility_total role; a cooling unit's
own power (unit_power_watts) where nothing meters it. The facility
collector (PUE by role) and the efficiency collector's rack scope (a rack's IT energy) both use it, so a rack
and the facility never disagree on what one PDU drew, whatever transport read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.model import Sample

TOP_SCOPES = ("device", "inlet", "phase")
# Families whose rows are read by scope, as a PDU's: an electricity meter has a device total and its phases.
METERED = ("pdu", "meter")


@dataclass
class DeviceTotals:
    role: str
    power_watts: float | None = None
    energy_joules: float | None = None
    ts: int | None = None  # the oldest row the energy came from


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def device_totals(role: str, rows: list[Sample]) -> DeviceTotals:
    """One device's power and energy from its rows of the pdu, meter, ups and cooling families."""
    t = DeviceTotals(role)
    pdu = [r for r in rows if r.measurement in METERED]
    for scope in TOP_SCOPES:
        at = [r for r in pdu if r.tags.get("scope") == scope]
        power = [r.fields["power_watts"] for r in at if _number(r.fields.get("power_watts"))]
        if power and t.power_watts is None:
            t.power_watts = float(sum(power))
        energy = [r for r in at if _number(r.fields.get("energy_joules_total"))]
        if energy and t.energy_joules is None:
            t.energy_joules = float(sum(r.fields["energy_joules_total"] for r in energy))
            t.ts = min(r.ts for r in energy)
    if t.power_watts is None:
        ups = [r for r in rows if r.measurement == "ups"]
        first = ("input_power_watts", "output_power_watts") if role == "facility_total" else (
            "output_power_watts", "input_power_watts")
        for name in first:
            vals = [r.fields[name] for r in ups if _number(r.fields.get(name))]
            if vals:
                t.power_watts = float(sum(vals))
                break
    if t.power_watts is None:  # a CDU or chiller without a meter of its own: the power it says it draws
        vals = [r.fields["unit_power_watts"] for r in rows
                if r.measurement == "cooling" and _number(r.fields.get("unit_power_watts"))]
        if vals:
            t.power_watts = float(sum(vals))
    return t


def device_name(s: Sample) -> str:
    """A facility device's name and transport: two transports may each have a device of one name."""
    return f"{s.tags.get('device') or s.tags.get('target') or ''}|{s.tags.get('source', '').split('_')[0]}"


def rack_energy(rows: list[Sample]) -> dict[str, tuple[float, int]]:
    """rack -> (energy of its IT devices' top-level counters, the oldest row's time), from pdu rows tagged with
    a rack and role it."""
    devices: dict[tuple[str, str], list[Sample]] = {}
    for s in rows:
        rack = s.tags.get("rack")
        if rack and s.tags.get("role") == "it":
            devices.setdefault((rack, device_name(s)), []).append(s)
    out: dict[str, tuple[float, int]] = {}
    for (rack, _), dev_rows in devices.items():
        t = device_totals("it", dev_rows)
        if t.energy_joules is None or t.ts is None:
            continue
        e, ts = out.get(rack, (0.0, t.ts))
        out[rack] = (e + t.energy_joules, min(ts, t.ts))
    return out
