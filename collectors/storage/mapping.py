"""Pure mapping from storage readings to samples."""

from __future__ import annotations

from agent.model import Accumulator

from .reader import SECTOR, DiskStats, MountUsage
from .smart import SmartReading


def map_mounts(usages: list[MountUsage], acc: Accumulator) -> None:
    for u in usages:
        m = u.mount
        tags = {"mountpoint": m.mountpoint, "device": m.device, "fstype": m.fstype}
        if not u.responding:
            acc.add("storage_mount", {"responding": False, "read_only": m.read_only}, tags)
            continue
        denom = u.used + u.free
        acc.add("storage_mount", {
            "total_bytes": u.total, "used_bytes": u.used, "free_bytes": u.free,
            "used_percent": round(100.0 * u.used / denom, 3) if denom else 0.0,
            "inodes": u.inodes_total, "inodes_free": u.inodes_free,
            "inodes_used": max(0, u.inodes_total - u.inodes_free),
            "read_only": m.read_only, "responding": True,
        }, tags)


def map_disks(disks: list[DiskStats], acc: Accumulator) -> None:
    for d in disks:
        v = d.values
        f = {
            "reads_total": v["reads"], "reads_merged_total": v["reads_merged"],
            "read_bytes_total": v["read_sectors"] * SECTOR, "read_time_seconds_total": v["read_ms"] / 1000,
            "writes_total": v["writes"], "writes_merged_total": v["writes_merged"],
            "written_bytes_total": v["write_sectors"] * SECTOR, "write_time_seconds_total": v["write_ms"] / 1000,
            "io_in_progress": v["in_progress"], "io_time_seconds_total": v["io_ms"] / 1000,
            "io_weighted_time_seconds_total": v["weighted_ms"] / 1000,
        }
        if "discards" in v:  # kernel 4.18+
            f["discards_total"] = v["discards"]
            f["discarded_bytes_total"] = v["discard_sectors"] * SECTOR
        if "flushes" in v:  # kernel 5.5+
            f["flushes_total"] = v["flushes"]
        acc.add("storage_disk", f, {"device": d.device})


def map_smart(readings: list[SmartReading], acc: Accumulator) -> None:
    for r in readings:
        acc.add("storage_smart", r.fields, {"device": r.device.removeprefix("/dev/"), "protocol": r.protocol,
                                           "model": r.model, "serial": r.serial})
