"""sd_notify on a real AF_UNIX datagram socket; the unit file checked by systemd-analyze."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.sdnotify import Notifier

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "aifactory-agent.service"


def listen(tmp_path, abstract: bool = False):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"aifactory-test-{os.getpid()}-{time.monotonic_ns()}"
        s.bind("\0" + name)
        return s, "@" + name
    path = str(tmp_path / "notify.sock")
    s.bind(path)
    return s, path


@pytest.mark.parametrize("abstract", [False, True])
def test_messages_on_a_real_datagram_socket(tmp_path, abstract):
    sock, addr = listen(tmp_path, abstract)
    sock.settimeout(5)
    n = Notifier({"NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())})
    assert n.enabled and n.watchdog_interval == 10.0
    assert n.ready("collecting with 4 collector instances")
    assert sock.recv(4096) == b"READY=1\nSTATUS=collecting with 4 collector instances"
    n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    sock.close()


def test_outside_systemd_and_someone_elses_watchdog():
    assert not Notifier({}).enabled and Notifier({}).ready() is False
    assert Notifier({"NOTIFY_SOCKET": "/nonexistent/x"}).ready() is False  # systemd gone: no exception
    assert Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_interval is None


def test_the_running_agent_says_ready_feeds_the_watchdog_and_says_stopping(tmp_path):
    sock, addr = listen(tmp_path)
    sock.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "1000000", "XDG_STATE_HOME": str(tmp_path)}
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("agent: {interval: 1s}\ncollectors:\n  storage: {smart: 'off'}\n")
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(cfg), "--state-dir",
                             str(tmp_path / "state")], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        got = [sock.recv(4096).decode() for _ in range(3)]
        assert got[0].startswith("READY=1\nSTATUS=collecting") and got[1] == got[2] == "WATCHDOG=1"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    rest = []
    sock.settimeout(1)
    try:
        while True:
            rest.append(sock.recv(4096).decode())
    except OSError:
        pass
    assert "STOPPING=1" in rest and proc.returncode == 0
    sock.close()


needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze not installed")


@needs_systemd_analyze
def test_unit_verifies(tmp_path):
    # verify resolves ExecStart: point it at a real executable in a copy of the unit
    unit = tmp_path / "aifactory-agent.service"
    unit.write_text(UNIT.read_text().replace("/opt/aifactory/venv/bin/aifactory", sys.executable))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (r.stdout + r.stderr).splitlines() if "aifactory-agent.service" in line]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


@needs_systemd_analyze
def test_security_exposure_score_is_low():
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNIT)], capture_output=True,
                       text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    score = float(m.group(1))
    print(f"systemd-analyze security --offline=true: exposure {score}")
    assert score <= 2.5, r.stdout
