"""bench/soak at a tiny size (20 s), so that the soak cannot rot: every collector at 1 s with the default
rules, the local store, InfluxDB 1.6.7 and a file output rotated by logrotate, two Redfish BMCs of which one
reboots; its bounds (RSS growth, threads, open files, every host point delivered, every poll of the healthy
BMC, every line in the rotated files) are checked by the script itself, which exits 1 on a broken bound."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.services  # real services or minutes of running: the full tier

ROOT = Path(__file__).resolve().parent.parent


def test_soak_smoke(tmp_path):
    out = tmp_path / "soak.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "soak"), "--seconds", "20", "--warmup", "6",
                        "--reboot-every", "7", "--rotate-every", "6", "--json", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    assert set(doc["collections"]) == {"host", "storage", "network", "gpu", "snmp", "inference", "efficiency",
                                       "redfish", "facility", "jobs"}
    assert doc["host_points_in_influxdb"] == doc["host_collections"] >= 15
    # the healthy BMC answered every poll; the other came back after each reboot; the rotated files hold it all
    assert doc["redfish_polls_up"]["healthy"] == doc["redfish_collections"] and doc["bmc_reboots"] >= 2
    assert doc["redfish_polls_up"]["rebooting"] > doc["bmc_reboots"] and not doc["bmc_energy_counters_moved"]
    assert doc["logrotate_runs"] >= 2 and doc["files"] > doc["logrotate_runs"] >= 2
    assert doc["host_lines_in_files"] == doc["host_collections"] and doc["file_reopens"] >= doc["logrotate_runs"]
