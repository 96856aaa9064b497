"""The core's seams (issue 15): one publish path, so the agent's own metrics reach the alert engine."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler

import pytest

from .services import serve_http
from .test_cli_e2e import ROOT, agent_env, cli


class Refusing(BaseHTTPRequestHandler):
    """An InfluxDB that answers every write 401, as InfluxDB 1.x does with auth on and a wrong password."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"error":"authorization failed"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *a):
        pass


@pytest.mark.services
def test_default_rules_on_the_agents_own_metrics_fire_in_a_running_agent(tmp_path):
    """Collectors failing on every run (no procfs where the config says) fire CollectorFailing after its 2 m;
    an output answered 401 fires OutputAuthFailing after 1 m, and its disk buffer, filled past 80% of its cap
    by the points it keeps, OutputBufferFilling: all three in `aifactory alerts --json` of a running agent."""
    httpd, url = serve_http(Refusing)
    env = agent_env(tmp_path)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
agent:
  interval: 1s
  proc_root: {tmp_path / "nonexistent"}
collectors:
  storage: {{smart: 'off'}}
  inference: {{enabled: false}}
outputs:
  influxdb:
    - url: {url}
      api: v1
      database: telemetry
      username: agent
      password_file: {tmp_path / "pw"}
      buffer_max_points: 200
      flush_interval: 1s
""")
    (tmp_path / "pw").write_text("wrong\n")
    args = ["-c", str(cfg), "--state-dir", str(tmp_path / "state")]
    assert cli("config", "check", *args, env=env).returncode == 0, cli("config", "check", *args, env=env).stderr
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    want = {"CollectorFailing", "OutputAuthFailing", "OutputBufferFilling"}
    firing: dict[str, dict] = {}
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            r = cli("alerts", "--json", *args, env=env)
            if r.returncode == 0:
                firing = {a["alertname"]: a for a in json.loads(r.stdout) if a["state"] == "firing"}
                if want <= set(firing):
                    break
            time.sleep(2)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        httpd.shutdown()
        httpd.server_close()
    assert want <= set(firing), (sorted(firing), err[-3000:])
    assert firing["CollectorFailing"]["labels"]["name"] in ("host", "network", "storage")
    assert firing["OutputAuthFailing"]["labels"]["name"] == "influxdb"
    assert firing["OutputAuthFailing"]["severity"] == "critical"
