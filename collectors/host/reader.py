"""Reads /proc and /sys for the host collector; returns plain dataclasses, no samples.

Memory and swap come from psutil, which follows ``psutil.PROCFS_PATH``; /proc/stat is
parsed once here (psutil would read it four times for the same figures) and hwmon is
read from the injected sysfs root, which psutil cannot be pointed at.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from collectors.common import read_int, read_text

_psutil_lock = threading.Lock()
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


class HostReader:
    def __init__(self, proc_root: Path, sys_root: Path, temperatures: bool = True) -> None:
        self.proc = Path(proc_root)
        self.sys = Path(sys_root)
        self.temperatures = temperatures

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
        with _psutil_lock:
            old = psutil.PROCFS_PATH
            psutil.PROCFS_PATH = str(self.proc)
            try:
                vm = psutil.virtual_memory()
                sw = psutil.swap_memory()
            finally:
                psutil.PROCFS_PATH = old
        r.memory = {"total": vm.total, "available": vm.available, "used": vm.used, "free": vm.free,
                    "buffers": vm.buffers, "cached": vm.cached, "shared": vm.shared}
        r.swap = {"total": sw.total, "used": sw.used, "free": sw.free, "sin": sw.sin, "sout": sw.sout}
        if self.temperatures:
            r.temperatures = read_hwmon(self.sys)
        return r
