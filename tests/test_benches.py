"""Every bench at a tiny size, so that none can rot unseen: each must run to its end and print the
figures it is for, side by side with its peer tool where the peer is installed (tests/install-deps test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bench(name: str, *args: str) -> str:
    r = subprocess.run([sys.executable, str(ROOT / "bench" / name), *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def test_collect_overhead_smoke():
    out = bench("collect_overhead", "--cycles", "20")
    assert "aifactory host+storage+network cycle" in out and "steady RSS" in out
    assert "node_exporter scrape" in out or "node_exporter: not installed" in out


def test_gpu_collect_smoke():
    out = bench("gpu_collect", "--cycles", "5", "--gpus", "2", "--sampler-hz", "20", "--sampler-seconds", "0.5")
    assert "agent CPU per cycle" in out and "sampler CPU" in out and "default alert pack, " in out


def test_job_attribution_smoke():
    out = bench("job_attribution", "--cycles", "5", "--gpus", "2", "--procs", "3")
    assert "jobs collector CPU per cycle" in out and "kJ attributed" in out


def test_inference_scrape_smoke():
    out = bench("inference_scrape", "--scrapes", "5")
    assert "inference collector (GET, parse, map, samples, LP)" in out


@pytest.mark.services
def test_snmp_sweep_smoke():
    out = bench("snmp_sweep", "--devices", "2", "--sweeps", "1", "--pysnmp")
    assert "aifactory, v2c through the lean codec" in out and "sweep within 1 s" in out


@pytest.mark.services
def test_prometheus_bench_smoke():
    out = bench("prometheus", "--scrapes", "5", "--rows", "600", "--series-gpus", "1")
    assert "aifactory /metrics (its own process)" in out and "CPU per series vs node_exporter" in out
    assert "aifactory remote_write -> VictoriaMetrics" in out and "Prometheus 2.42 ceiling" in out
    assert "both together" in out and "remote write >= 0.8x of each receiver's ceiling" in out


@pytest.mark.services
def test_modbus_sweep_smoke():
    out = bench("modbus_sweep", "--devices", "4", "--sweeps", "1", "--units", "2")
    assert "aifactory, 4 ports, one device each" in out and "2 gateways x 2 unit ids" in out
    assert "sweep of 4 devices within 1 s with no timeouts: met" in out


def test_bmc_sweep_smoke():
    out = bench("bmc_sweep", "--bmcs", "3", "--sweeps", "1")
    assert "poll sweeps:" in out and "0 timeouts or errors" in out and "target: a sweep of 3 BMCs" in out


@pytest.mark.services
def test_fleet_scale_smoke():
    out = bench("fleet_scale", "--nodes", "64", "--runs", "1")
    assert "replaced: last of every inference series" in out and "aifactory poller, each next cycle" in out
    assert "(2 racks, 2 rack balances, facility 1)" in out


@pytest.mark.services
def test_delivery_smoke():
    out = bench("delivery", "--points", "2000", "--batch", "500")
    assert "InfluxDB 1.6.7 ceiling" in out and "targets:" in out
