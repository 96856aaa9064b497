"""SMART health through ``smartctl -j`` (smartmontools 7+).

smartctl is slow (tens of ms per drive, seconds on a busy SAS expander) and SMART data
changes slowly, so it runs every ``smart_interval`` in a background thread owned by the
storage collector and never inside the storage cycle itself.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

NVME_DATA_UNIT = 512 * 1000  # NVMe "data units" are thousands of 512-byte units


@dataclass
class SmartReading:
    device: str
    protocol: str
    model: str
    serial: str
    exit_status: int
    fields: dict[str, float | int | bool] = field(default_factory=dict)


_ATA_ATTRS = {5: "reallocated_sectors_total", 197: "pending_sectors",
              198: "offline_uncorrectable_sectors", 199: "crc_errors_total"}


def parse_smartctl(doc: dict, device: str | None = None) -> SmartReading | None:
    """Map one ``smartctl -j -a`` document; None when it holds no SMART data at all."""
    dev = doc.get("device") or {}
    name = device or dev.get("name") or "unknown"
    exit_status = int((doc.get("smartctl") or {}).get("exit_status", 0))
    if exit_status & 0b11:
        # bit 0: command line did not parse; bit 1: device open failed (standby, gone, no permission)
        return None
    r = SmartReading(name, str(dev.get("protocol") or dev.get("type") or ""), str(doc.get("model_name") or ""),
                     str(doc.get("serial_number") or ""), exit_status)
    f = r.fields
    f["smartctl_exit_status"] = exit_status
    status = doc.get("smart_status")
    if isinstance(status, dict) and "passed" in status:
        f["healthy"] = bool(status["passed"])
    temp = (doc.get("temperature") or {}).get("current")
    if isinstance(temp, (int, float)):
        f["temperature_celsius"] = float(temp)
    hours = (doc.get("power_on_time") or {}).get("hours")
    if isinstance(hours, int):
        minutes = (doc.get("power_on_time") or {}).get("minutes", 0) or 0
        f["power_on_seconds_total"] = hours * 3600 + int(minutes) * 60
    if isinstance(doc.get("power_cycle_count"), int):
        f["power_cycles_total"] = doc["power_cycle_count"]
    nv = doc.get("nvme_smart_health_information_log")
    if isinstance(nv, dict):
        for src, dst in (("critical_warning", "critical_warning"), ("available_spare", "available_spare_percent"),
                         ("available_spare_threshold", "available_spare_threshold_percent"),
                         ("percentage_used", "endurance_used_percent"), ("media_errors", "media_errors_total"),
                         ("num_err_log_entries", "error_log_entries_total"),
                         ("unsafe_shutdowns", "unsafe_shutdowns_total"), ("power_cycles", "power_cycles_total")):
            if isinstance(nv.get(src), int):
                f[dst] = nv[src]
        if isinstance(nv.get("data_units_read"), int):
            f["read_bytes_total"] = nv["data_units_read"] * NVME_DATA_UNIT
        if isinstance(nv.get("data_units_written"), int):
            f["written_bytes_total"] = nv["data_units_written"] * NVME_DATA_UNIT
        if "temperature_celsius" not in f and isinstance(nv.get("temperature"), int):
            f["temperature_celsius"] = float(nv["temperature"])
    table = ((doc.get("ata_smart_attributes") or {}).get("table")) or []
    for attr in table:
        dst = _ATA_ATTRS.get(attr.get("id"))
        raw = (attr.get("raw") or {}).get("value")
        if dst and isinstance(raw, int):
            # Raw values of these attributes are plain counts in their low 32 bits on
            # every vendor we know; the high bytes sometimes carry vendor data.
            f[dst] = raw & 0xFFFFFFFF
    if len(f) <= 1:
        return None
    return r


class SmartRunner:
    def __init__(self, smartctl: str | None, devices: list[str], interval: float, timeout: float) -> None:
        self.smartctl = smartctl
        self.devices = devices
        self.interval = interval
        self.timeout = timeout
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._fresh: list[SmartReading] | None = None
        self._next = 0.0
        self.last_error: str | None = None

    @staticmethod
    def find(path: str | None) -> str | None:
        if path:
            return path if os.access(path, os.X_OK) else None
        return shutil.which("smartctl") or next(
            (p for p in ("/usr/sbin/smartctl", "/sbin/smartctl") if os.access(p, os.X_OK)), None)

    def _run(self, args: list[str]) -> dict | None:
        try:
            proc = subprocess.run([self.smartctl, *args], capture_output=True, timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            self.last_error = f"smartctl {' '.join(args)}: {e}"
            return None
        try:
            return json.loads(proc.stdout or b"{}")
        except ValueError:
            self.last_error = f"smartctl {' '.join(args)}: output is not JSON (exit {proc.returncode})"
            return None

    def scan(self) -> list[tuple[str, str | None]]:
        if self.devices:
            return [(d, None) for d in self.devices]
        doc = self._run(["--scan-open", "-j"]) or {}
        return [(d["name"], d.get("type")) for d in doc.get("devices", []) if d.get("name")]

    def refresh(self) -> list[SmartReading]:
        out = []
        for name, dtype in self.scan():
            # -n standby: never spin up a sleeping disk just to read SMART.
            args = ["-j", "-a", "-n", "standby", name] + (["-d", dtype] if dtype else [])
            doc = self._run(args)
            if doc is None:
                continue
            r = parse_smartctl(doc, name)
            if r is not None:
                out.append(r)
        return out

    def poll(self) -> list[SmartReading] | None:
        """Start a refresh when due; return new results once, else None. Never blocks."""
        with self._lock:
            fresh, self._fresh = self._fresh, None
            due = time.monotonic() >= self._next and (self._thread is None or not self._thread.is_alive())
            if due:
                self._next = time.monotonic() + self.interval
                self._thread = threading.Thread(target=self._work, name="smartctl", daemon=True)
                self._thread.start()
        return fresh

    def _work(self) -> None:
        try:
            res = self.refresh()
        except Exception as e:  # keep the storage collector going whatever smartctl does
            self.last_error = f"{type(e).__name__}: {e}"
            log.warning("SMART refresh failed: %s", self.last_error)
            return
        with self._lock:
            self._fresh = res
