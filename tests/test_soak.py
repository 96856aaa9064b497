"""bench/soak at a tiny size (20 s), so that the soak cannot rot: every collector at 1 s with the default
rules, the local store and InfluxDB 1.6.7; its bounds (RSS growth, threads, open files, every host point
delivered) are checked by the script itself, which exits 1 on a broken bound."""

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
                        "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    assert set(doc["collections"]) == {"host", "storage", "network", "gpu", "snmp", "inference", "efficiency"}
    assert all(state == "ok" for state in doc["collector_states"].values())
    assert doc["host_points_in_influxdb"] == doc["host_collections"] >= 15
