"""CPU time from /proc, to split the CPU packages' energy (RAPL) among jobs by their processes' CPU time.

/proc/stat's first line gives the whole machine's busy time (user, nice, system, irq, softirq, steal: guest time is
inside user already); /proc/PID/stat fields 14 and 15 (utime, stime) a process's, both in clock ticks (proc(5)).
The command name in /proc/PID/stat may hold spaces and parentheses: fields are counted after its last ')'.
"""

from __future__ import annotations

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
