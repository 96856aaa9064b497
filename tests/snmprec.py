"""Reads snmpsim .snmprec recordings (OID|type-tag|value) into {oid: python value}."""

from __future__ import annotations

from pathlib import Path

# snmpsim type tags: 2 INTEGER, 4 OCTET STRING (4x: hex), 5 NULL, 6 OID, 64 IpAddress, 65 Counter32,
# 66 Gauge32, 67 TimeTicks, 68 Opaque, 70 Counter64
INTEGER_TAGS = {"2", "65", "66", "67", "70"}


def load(path: Path) -> dict[str, object]:
    data: dict[str, object] = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if not line or line.startswith("#"):
            continue
        oid, tag, value = line.split("|", 2)
        tag = tag.split(":")[0]
        if tag in INTEGER_TAGS:
            data[oid] = int(value)
        elif tag == "4x":
            data[oid] = bytes.fromhex(value)
        elif tag in ("4", "6", "64"):
            data[oid] = value
    return data


def large_rpdu2(outlets: int) -> str:
    """An APC rPDU2 (AP8xxx-shaped) with many metered outlets, for the large-table tests.

    Outlet r: name "gpu-node-r", current r % 16 tenths of A, power 7r W, energy r tenths of kWh;
    outlet 13 reports -1 (APC's "not available") for power.
    """
    base = "1.3.6.1.4.1.318.1.1.26"
    lines = ["1.3.6.1.2.1.1.1.0|4|APC Web/SNMP Management Card (MB:v4.1.0 PF:v6.8.2 PN:apc_hw05_aos_682.bin)",
             "1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.318.1.3.4.6"]
    for c, v in ((4, 2), (5, 2 * outlets), (9, 19677), (16, 2 * outlets + 10), (17, 95)):
        lines.append(f"{base}.4.3.1.{c}.1|2|{v}")
    for c in (3, 4, 6, 7, 11):
        for r in range(1, outlets + 1):
            v = {3: f"4|gpu-node-{r}", 4: f"2|{r}", 6: f"66|{r % 16}", 7: f"2|{-1 if r == 13 else 7 * r}",
                 11: f"2|{r}"}[c]
            lines.append(f"{base}.9.4.3.1.{c}.{r}|{v}")
    return "\n".join(sorted(lines, key=lambda x: [int(p) for p in x.split("|")[0].split(".")])) + "\n"


# The readings that matter per measurement, for the coverage table: what an operator misses when absent.
KEY_FIELDS = {
    "pdu": ("power_watts", "energy_joules_total", "current_amperes", "voltage_volts"),
    "ups": ("output_power_watts", "output_load_percent", "battery_charge_percent", "battery_runtime_seconds",
            "input_voltage_volts"),
    "cooling": ("supply_air_temperature_celsius", "return_air_temperature_celsius", "cooling_output_watts"),
    "environment": ("temperature_celsius", "humidity_percent"),
}


def detect(profiles: dict, data: dict):
    """The profile `snmp probe --profile auto` would choose for a recording: the collector's own choice, with
    the recording answering its probe walks."""
    import asyncio

    from collectors.common.profile import norm_oid
    from collectors.snmp import detect_profile
    from collectors.snmp.match import candidates

    async def answers(probe: str) -> bool:
        pre = norm_oid(probe)
        return any(k == pre or k.startswith(pre + ".") for k in data)

    found = candidates(profiles, str(data.get("1.3.6.1.2.1.1.2.0", "")), str(data.get("1.3.6.1.2.1.1.1.0", "")))
    return asyncio.run(detect_profile(found, answers))


def coverage(profiles: dict, recording: Path) -> dict:
    """What the agent reads from one recording: device, profile, readings, the key fields it misses."""
    from collectors.common.profile.evaluate import evaluate

    data = load(recording)
    p = detect(profiles, data)
    readings = [r for r in evaluate(p, data) if r.value is not None] if p else []
    serves = sorted({g.measurement for g in p.groups}) if p else []
    got = {(r.measurement, r.field) for r in readings}
    missing = [f"{m}.{f}" for m in serves for f in KEY_FIELDS[m] if (m, f) not in got
               and any(g.measurement == m and any(x.field == f for x in g.fields) for g in p.groups)]
    return {"device": recording.stem, "sys_object_id": str(data.get("1.3.6.1.2.1.1.2.0", "")),
            "profile": p.name if p else None, "readings": len(readings), "missing": missing,
            "fallbacks": sum(1 for r in readings if r.origin)}
