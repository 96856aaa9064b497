"""Pure mapping from HostReading to samples (tested table-driven on recorded trees)."""

from __future__ import annotations

from agent.model import Accumulator
from collectors.common.energy import EnergyCounters

from .reader import HostReading, RaplZone

_BUSY_EXCLUDE = ("idle", "iowait", "guest", "guest_nice")  # guest time is already inside user/nice


def cpu_percentages(prev: dict[str, float] | None, cur: dict[str, float]) -> dict[str, float]:
    """Busy and iowait shares between two readings of one CPU's times; {} when unknowable."""
    if prev is None:
        return {}
    deltas = {k: cur.get(k, 0.0) - prev.get(k, 0.0) for k in cur}
    if any(v < 0 for v in deltas.values()):
        return {}  # counters went back: CPU hot-plugged or host rebooted
    total = sum(v for k, v in deltas.items() if k not in ("guest", "guest_nice"))
    if total <= 0:
        return {}
    busy = total - deltas.get("idle", 0.0) - deltas.get("iowait", 0.0)
    return {"utilization_percent": round(100.0 * busy / total, 3),
            "iowait_percent": round(100.0 * deltas.get("iowait", 0.0) / total, 3)}


def map_host(r: HostReading, acc: Accumulator, previous: dict[str, dict[str, float]] | None = None) -> None:
    f: dict = {}
    if r.load:
        f["load_average_1m"], f["load_average_5m"], f["load_average_15m"] = r.load
    cores = [c for c in r.cpus if c.cpu != "total"]
    if cores:
        f["cpu_count"] = len(cores)
    m = r.memory
    if m:
        f.update({
            "memory_total_bytes": m["total"], "memory_available_bytes": m["available"],
            "memory_used_bytes": m["used"], "memory_free_bytes": m["free"],
            "memory_buffers_bytes": m["buffers"], "memory_cached_bytes": m["cached"],
            "memory_shared_bytes": m["shared"],
        })
        if m["total"]:
            f["memory_used_percent"] = round(100.0 * (m["total"] - m["available"]) / m["total"], 3)
    s = r.swap
    if s:
        f.update({"swap_total_bytes": s["total"], "swap_used_bytes": s["used"], "swap_free_bytes": s["free"],
                  "swap_in_bytes_total": s.get("sin"), "swap_out_bytes_total": s.get("sout")})
    f["uptime_seconds"] = r.uptime
    f["boot_time_seconds"] = r.boot_time
    f["context_switches_total"] = r.context_switches
    f["interrupts_total"] = r.interrupts
    f["forks_total"] = r.forks
    f["processes_running"] = r.procs_running
    f["processes_blocked"] = r.procs_blocked
    f["processes"] = r.processes
    f["threads"] = r.threads
    acc.add("host", f)
    previous = previous or {}
    for c in r.cpus:
        fields: dict = {f"{mode}_seconds_total": round(v, 2) for mode, v in c.seconds.items()}
        fields.update(cpu_percentages(previous.get(c.cpu), c.seconds))
        acc.add("host_cpu", fields, {"cpu": c.cpu})
    for t in r.temperatures:
        acc.add("host_temperature", {"temperature_celsius": t.celsius, "max_celsius": t.max_celsius,
                                     "critical_celsius": t.critical_celsius},
                {"chip": t.chip, "device": t.device, "sensor": t.sensor})


def map_rapl(zones: list[RaplZone], acc: Accumulator, energy: EnergyCounters) -> None:
    """Each package's counter, monotonic across the register's wrap (max_energy_range_uj), reboots and agent
    restarts; a reading the ledger holds back (a dip being confirmed, a refused value) leaves the field out."""
    for z in zones:
        wrap = z.max_energy_range_uj / 1e6 if z.max_energy_range_uj else None
        u = energy.reading(z.zone, z.energy_uj / 1e6, acc.ts / 1e9, wrap_at=wrap, resets_on_boot=True)
        acc.add("host_energy", {"energy_joules_total": None if u.value is None else round(u.value, 6),
                                "energy_resets_total": energy.resets(z.zone),
                                "energy_glitches_total": energy.glitches(z.zone)},
                {"zone": z.zone, "source": "rapl", "scope": "cpu_package"})
