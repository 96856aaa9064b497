"""Reads /proc and /sys for the host collector; returns plain dataclasses, no samples.

/proc/stat and /proc/meminfo are each read once per run and parsed here with psutil's
semantics (used = total - available; cached includes SReclaimable; swap in/out from
/proc/vmstat's page counts): psutil reads /proc/stat four times and /proc/meminfo twice for
the same figures, which cost more than the rest of the run (docs/architecture.md). hwmon is
read from the injected sysfs root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from collectors.common import read_int, read_text

USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class CpuTimes:
    cpu: str  # "total" or the core number
    seconds: dict[str, float]


@dataclass
class Temperature:
    chip: str
    device: str
    sensor: str
    celsius: float
    max_celsius: float | None = None
    critical_celsius: float | None = None


@dataclass
class RaplZone:
    zone: str  # intel-rapl:N (a CPU package; subzones are inside its figure and not read)
    energy_uj: int
    max_energy_range_uj: int | None


@dataclass
class HostReading:
    cpus: list[CpuTimes] = field(default_factory=list)
    context_switches: int | None = None
    interrupts: int | None = None
    forks: int | None = None
    procs_running: int | None = None
    procs_blocked: int | None = None
    boot_time: int | None = None
    load: tuple[float, float, float] | None = None
    threads: int | None = None
    processes: int | None = None
    uptime: float | None = None
    memory: dict[str, int] = field(default_factory=dict)
    swap: dict[str, int] = field(default_factory=dict)
    temperatures: list[Temperature] = field(default_factory=list)
    rapl: list[RaplZone] = field(default_factory=list)


_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")


def parse_stat(text: str, reading: HostReading, hz: int = USER_HZ) -> None:
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        key = parts[0]
        if key.startswith("cpu"):
            name = "total" if key == "cpu" else key[3:]
            vals = [int(v) / hz for v in parts[1:1 + len(_MODES)]]
            secs = dict(zip(_MODES, vals))
            # Kernel accounts guest time inside user/nice too; keep the raw counters as they are.
            reading.cpus.append(CpuTimes(name, secs))
        elif key == "ctxt":
            reading.context_switches = int(parts[1])
        elif key == "intr":
            reading.interrupts = int(parts[1])
        elif key == "processes":
            reading.forks = int(parts[1])
        elif key == "procs_running":
            reading.procs_running = int(parts[1])
        elif key == "procs_blocked":
            reading.procs_blocked = int(parts[1])
        elif key == "btime":
            reading.boot_time = int(parts[1])


def parse_meminfo(text: str) -> tuple[dict[str, int], dict[str, int]]:
    """Memory and swap in bytes from /proc/meminfo, as psutil.virtual_memory()/swap_memory() define them."""
    kb: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            try:
                kb[name] = int(parts[0])
            except ValueError:
                continue
    if "MemTotal" not in kb or "MemFree" not in kb:
        return {}, {}
    b = {k: v * 1024 for k, v in kb.items()}
    total, free = b["MemTotal"], b["MemFree"]
    buffers = b.get("Buffers", 0)
    cached = b.get("Cached", 0) + b.get("SReclaimable", 0)
    avail = b.get("MemAvailable") or (free + buffers + cached)  # before Linux 3.14: the old estimate
    avail = max(0, avail) if avail <= total else free
    memory = {"total": total, "available": avail, "used": total - avail, "free": free, "buffers": buffers,
              "cached": cached, "shared": b.get("Shmem", b.get("MemShared", 0))}
    swap: dict[str, int] = {}
    if "SwapTotal" in b and "SwapFree" in b:
        swap = {"total": b["SwapTotal"], "free": b["SwapFree"], "used": b["SwapTotal"] - b["SwapFree"]}
    return memory, swap


def parse_vmstat_swap(text: str) -> tuple[int, int] | None:
    """Pages swapped in and out since boot, in bytes (the kernel counts 4 KiB units, as psutil reads them)."""
    sin = sout = None
    for line in text.splitlines():
        if line.startswith("pswpin "):
            sin = int(line.split()[1]) * 4096
        elif line.startswith("pswpout "):
            sout = int(line.split()[1]) * 4096
            if sin is not None:
                break
    return (sin, sout) if sin is not None and sout is not None else None


def read_hwmon(sys_root: Path) -> list[Temperature]:
    base = sys_root / "class" / "hwmon"
    out: list[Temperature] = []
    try:
        chips = sorted(os.listdir(base))
    except OSError:
        return out
    for chip_dir in chips:
        d = base / chip_dir
        name = read_text(d / "name") or chip_dir
        try:
            dev = os.path.basename(os.readlink(d / "device"))
        except OSError:
            dev = chip_dir
        try:
            inputs = sorted(f for f in os.listdir(d) if f.startswith("temp") and f.endswith("_input"))
        except OSError:
            continue
        for f in inputs:
            prefix = f[: -len("_input")]
            raw = read_int(d / f)
            if raw is None:
                continue  # sensor present but not readable right now (EIO, EAGAIN)
            label = read_text(d / f"{prefix}_label") or prefix
            mx = read_int(d / f"{prefix}_max")
            crit = read_int(d / f"{prefix}_crit")
            out.append(Temperature(name, dev, label, raw / 1000.0,
                                   mx / 1000.0 if mx is not None else None,
                                   crit / 1000.0 if crit is not None else None))
    return out


def read_rapl(sys_root: Path) -> list[RaplZone]:
    """CPU package energy from /sys/class/powercap (intel-rapl:N, which AMD's driver names the same way)."""
    root = sys_root / "class" / "powercap"
    try:  # scandir, not glob: read every cycle, and most machines without RAPL have no such folder at all
        names = sorted(e.name for e in os.scandir(root) if e.name.startswith("intel-rapl:"))
    except OSError:
        return []
    out = []
    for name in names:
        if name.count(":") != 1:
            continue  # subzones (core, dram) are inside the package figure
        zone = root / name
        uj = read_int(zone / "energy_uj")
        if uj is None:
            continue  # energy_uj is root-only on recent kernels: no RAPL, not an error
        out.append(RaplZone(zone.name, uj, read_int(zone / "max_energy_range_uj")))
    return out


class HostReader:
    def __init__(self, proc_root: Path, sys_root: Path, temperatures: bool = True, rapl: bool = True) -> None:
        self.proc = Path(proc_root)
        self.sys = Path(sys_root)
        self.temperatures = temperatures
        self.rapl = rapl

    def read(self) -> HostReading:
        r = HostReading()
        stat = read_text(self.proc / "stat")
        if stat is None:
            raise OSError(f"cannot read {self.proc / 'stat'}")
        parse_stat(stat, r)
        load = read_text(self.proc / "loadavg")
        if load:
            p = load.split()
            r.load = (float(p[0]), float(p[1]), float(p[2]))
            if "/" in p[3]:
                r.threads = int(p[3].split("/")[1])
        up = read_text(self.proc / "uptime")
        if up:
            r.uptime = float(up.split()[0])
        try:
            r.processes = sum(1 for e in os.scandir(self.proc) if e.name.isdigit())
        except OSError:
            pass
        meminfo = read_text(self.proc / "meminfo")
        if meminfo:
            r.memory, r.swap = parse_meminfo(meminfo)
        vmstat = read_text(self.proc / "vmstat") if r.swap else None
        paged = parse_vmstat_swap(vmstat) if vmstat else None
        if paged:
            r.swap["sin"], r.swap["sout"] = paged
        if self.temperatures:
            r.temperatures = read_hwmon(self.sys)
        if self.rapl:
            r.rapl = read_rapl(self.sys)
        return r
