"""CPU time from /proc, to split the CPU packages' energy (RAPL) among jobs by their processes' CPU time.

/proc/stat's first line gives the whole machine's busy time (user, nice, system, irq, softirq, steal: guest time is
inside user already); /proc/PID/stat fields 14 and 15 (utime, stime) a process's, both in clock ticks (proc(5)).
The command name in /proc/PID/stat may hold spaces and parentheses: fields are counted after its last ')'.
"""

from __future__ import annotations

import re
from pathlib import Path

from collectors.common import read_text

BUSY = (1, 2, 3, 6, 7, 8)  # user nice system irq softirq steal, after the "cpu" label


def busy_ticks(proc_root: Path | str) -> int | None:
    """Busy CPU time of the whole machine since boot, in clock ticks; None if unreadable."""
    text = read_text(Path(proc_root) / "stat")
    if not text or not text.startswith("cpu "):
        return None
    parts = text.split("\n", 1)[0].split()
    try:
        return sum(int(parts[i]) for i in BUSY if i < len(parts))
    except ValueError:
        return None


def process_ticks(proc_root: Path | str, pid: int) -> int | None:
    """utime + stime of one process, in clock ticks; None if it is gone or unreadable."""
    text = read_text(Path(proc_root) / str(pid) / "stat")
    if not text or ")" not in text:
        return None
    rest = text.rsplit(")", 1)[1].split()
    try:
        return int(rest[11]) + int(rest[12])
    except (IndexError, ValueError):
        return None


def owner_cgroup(cgroup_text: str, scheduler: str) -> tuple[str, str] | None:
    """(hierarchy, path) of the cgroup that holds all of an owner's processes, from one of its processes'
    /proc/PID/cgroup: the pod's slice (not one container's), the container's scope, the service's unit. cgroup
    v2 (`0::`) first, else v1's cpuacct hierarchy."""
    mark = {"kubernetes": re.compile(r"^(.*?/[^/]*pod[0-9a-f_\-]{36}[^/]*)"),
            "container": re.compile(r"^(.*?/[^/]*[0-9a-f]{64}[^/]*)"),
            "systemd": re.compile(r"^(.*?/[^/]+\.service)(?:/|$)")}.get(scheduler)
    if mark is None:
        return None
    lines = [line.split(":", 2) for line in cgroup_text.splitlines() if line.count(":") >= 2]
    for hierarchy in ("", "cpuacct"):  # v2's unified line, else v1's cpuacct controller
        for _, ctl, path in lines:
            if (hierarchy == "" and ctl == "") or (hierarchy and hierarchy in ctl.split(",")):
                m = mark.match(path)
                if m:
                    return (ctl if hierarchy else "", m.group(1))
    return None


def cgroup_usage_ticks(sys_root: Path | str, where: tuple[str, str], hz: int) -> int | None:
    """CPU time of a cgroup in clock ticks: cgroup v2 cpu.stat usage_usec, or v1 cpuacct.usage (ns)."""
    ctl, path = where
    base = Path(sys_root) / "fs" / "cgroup"
    if not ctl:
        text = read_text(base / path.lstrip("/") / "cpu.stat")
        for line in (text or "").splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec" and value.strip().isdigit():
                return int(value) * hz // 1_000_000
        return None
    text = read_text(base / ctl / path.lstrip("/") / "cpuacct.usage")
    return int(text) * hz // 1_000_000_000 if text and text.isdigit() else None
