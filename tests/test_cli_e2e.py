"""The README's promises, run as an operator would: real processes, real files."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.registry import default_registry

from .lp_parser import parse

ROOT = Path(__file__).resolve().parent.parent
CAT = default_registry().catalogue()


def cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "agent", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=60, **kw)


def agent_env(tmp_path):
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "xdg"))
    env.pop("AIFACTORY_CONFIG", None)
    env.pop("STATE_DIRECTORY", None)
    return env


def test_collect_once_prints_valid_line_protocol_with_units(tmp_path):
    r = cli("collect", "--once", "--format", "lp", env=agent_env(tmp_path))
    assert r.returncode == 0, r.stderr
    points = parse(r.stdout)
    assert {m for m, *_ in points} >= {"host", "host_cpu", "storage_mount", "storage_disk", "network_interface"}
    for m, tags, fields, _ts in points:
        assert tags["host"]
        for f in fields:
            assert CAT.get(m, f) is not None, (m, f)
    r = cli("collect", "--collector", "host", "--format", "json", env=agent_env(tmp_path))
    doc = json.loads(r.stdout)
    assert {d["measurement"] for d in doc} == {"host", "host_cpu"}
    assert len({d["timestamp_ns"] for d in doc}) == 1  # one timestamp per collection


def test_collect_unknown_collector(tmp_path):
    r = cli("collect", "--collector", "tpu", env=agent_env(tmp_path))
    assert r.returncode == 2 and "no enabled collector named tpu" in r.stderr


def test_run_status_query_and_clean_sigterm(tmp_path):
    env = agent_env(tmp_path)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("agent:\n  interval: 1s\ncollectors:\n  storage: {smart: 'off'}\n")
    args = ["-c", str(cfg), "--state-dir", str(tmp_path / "state")]
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            r = cli("status", "--json", *args, env=env)
            if r.returncode == 0:
                status = json.loads(r.stdout)
                if all(status["collectors"][c]["runs_total"] >= 2 for c in ("host", "storage", "network")):
                    break
            time.sleep(0.3)
        assert status and status["running"] and status["healthy"], status
        for c in ("host", "storage", "network"):
            assert status["collectors"][c]["state"] == "ok" and status["collectors"][c]["success"] is True
            assert status["collectors"][c]["run_samples"] > 0
        assert status["outputs"]["local"]["written_samples_total"] > 0
        r = cli("query", "host", "--since", "1m", "--json", *args, env=env)
        assert r.returncode == 0, r.stderr
        rows = json.loads(r.stdout)
        assert rows and rows[-1]["measurement"] == "host" and "memory_used_bytes" in rows[-1]["fields"]
        assert rows[-1]["time"].endswith("Z")
        r = cli("status", *args, env=env)
        assert "healthy" in r.stdout and "host" in r.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "agent stopped" in err and "not written" not in err
    r = cli("status", "--json", *args, env=env)
    final = json.loads(r.stdout)
    assert r.returncode == 3 and final["running"] is False and final["stopped"] is True
    assert final["outputs"]["local"]["queue_depth_samples"] == 0


def test_run_for_duration_stops_by_itself(tmp_path):
    r = cli("run", "--for", "1s", "--state-dir", str(tmp_path / "s"), env=agent_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "s" / "metrics.db").exists()


def test_bad_duration_argument(tmp_path):
    r = cli("run", "--for", "forever", env=agent_env(tmp_path))
    assert r.returncode == 2 and "not a duration" in r.stderr


@pytest.mark.services
def test_an_install_as_users_do_keeps_urllib3_itself(tmp_path):
    """What `make run` installs (the runtime extras) and the dashboards extra resolve to urllib3 itself: no extra
    brings urllib3-future in its place (grafana-client 5 did), so a node runs the HTTP stack it was measured on."""
    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
                        "--report", str(report), ".[gpu,snmp,ipmi,dashboards]"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    names = {i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]}
    assert "urllib3" in names and not names & {"urllib3-future", "niquests", "grafana-client"}, sorted(names)
    import importlib.util

    assert importlib.util.find_spec("urllib3.contrib.hface") is None  # this venv's urllib3 is urllib3's
