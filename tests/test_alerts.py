"""Alert rules: expressions, states (pending, firing, resolved, hysteresis), persistence, rule files."""

from __future__ import annotations

import pytest

from agent.alerts.engine import AlertEngine, AlertStore, History, read_alerts
from agent.alerts.expr import ExprError, evaluate, parse
from agent.alerts.rules import config_rules, load_rules
from agent.config import ConfigError
from agent.model import Sample
from agent.registry import default_registry

from .services import serve_http

T = 1_700_000_000.0


def gpu(temp: float, t: float, gpu_id: str = "0", energy: float | None = None, host: str = "n1") -> Sample:
    fields = {"temperature_celsius": temp}
    if energy is not None:
        fields["energy_joules_total"] = energy
    return Sample("gpu", {"host": host, "gpu": gpu_id}, fields, int(t * 1e9))


def hist(*samples) -> History:
    h = History(3600)
    h.observe(list(samples))
    return h


@pytest.mark.parametrize("text,want", [
    ("gpu.temperature_celsius > 80", {"0": 85.0}),
    ("gpu.temperature_celsius{gpu=\"1\"} > 0", {"1": 60.0}),
    ("gpu.temperature_celsius{gpu=~\"[01]\"} >= 60", {"0": 85.0, "1": 60.0}),
    ("gpu.temperature_celsius{gpu!=\"0\"} < 70", {"1": 60.0}),
    ("-gpu.temperature_celsius < -70", {"0": -85.0}),
    ("gpu.temperature_celsius * 2 - 100 > 60", {"0": 70.0}),
    ("gpu.temperature_celsius > 80 or gpu.temperature_celsius < 61", {"0": 85.0, "1": 60.0}),
    ("gpu.temperature_celsius > 50 unless gpu.temperature_celsius > 80", {"1": 60.0}),
    ("gpu.temperature_celsius > 50 and gpu.temperature_celsius < 80", {"1": 60.0}),
])
def test_expressions(text, want):
    h = hist(gpu(85, T, "0"), gpu(60, T, "1"))
    got = evaluate(parse(text), h, T)
    assert {dict(lab)["gpu"]: v for lab, v in got.items()} == want


def test_rate_of_a_counter_and_aggregation():
    h = hist(*[gpu(50, T + i * 10, "0", energy=1000 + i * 7000) for i in range(7)],
             *[gpu(50, T + i * 10, "1", energy=500 + i * 3000) for i in range(7)])
    rate = evaluate(parse("rate(gpu.energy_joules_total[1m])"), h, T + 60)
    assert {dict(lab)["gpu"]: v for lab, v in rate.items()} == {"0": 700.0, "1": 300.0}
    total = evaluate(parse("sum by (host) (rate(gpu.energy_joules_total[1m])) > 900"), h, T + 60)
    assert total == {(("host", "n1"),): 1000.0}
    inc = evaluate(parse("increase(gpu.energy_joules_total{gpu=\"0\"}[30s])"), h, T + 60)
    assert list(inc.values()) == [21000.0]


def test_counter_reset_inside_the_range():
    h = hist(*[Sample("x", {}, {"n_total": v}, int((T + i) * 1e9)) for i, v in enumerate([10, 20, 5, 15])])
    assert list(evaluate(parse("increase(x.n_total[10s])"), h, T + 3).values()) == [10 + 5 + 10]


@pytest.mark.parametrize("expr,at,want", [
    ("increase(x.n_total[20s])", 40, 20.0),  # the window's both ends inclusive: points at 20, 30, 40
    ("increase(x.n_total[20s])", 25, 10.0),  # an instant in the past: points at 10 and 20, none after 25
    ("max_over_time(x.n_total[5s])", 37, None),  # between two points: nothing in the window
    ("max_over_time(x.n_total[5s])", 34, 30.0),
    ("min_over_time(x.n_total[9s])", 39, 30.0),
    ("delta(x.n_total[1h])", 100, 40.0),  # the whole history
    ("rate(x.n_total[20s])", 5, None),  # before the first point
])
def test_range_windows_take_exactly_the_points_inside_them(expr, at, want):
    h = hist(*[Sample("x", {}, {"n_total": float(v)}, int((T + v) * 1e9)) for v in (0, 10, 20, 30, 40)])
    got = list(evaluate(parse(expr), h, T + at).values())
    assert got == ([] if want is None else [want])


@pytest.mark.parametrize("bad", ["gpu.", "gpu.temp >", "rate(gpu.x)", "rate(gpu.x[0s])", "sum by (a (x.y)",
                                 "x.y{a=\"1\"", "x.y{a=~\"(\"}", "x.y $ 3", "(x.y"])
def test_bad_expressions(bad):
    with pytest.raises(ExprError):
        parse(bad)


RULES = """
groups:
  - name: gpu
    rules:
      - alert: GpuHot
        expr: gpu.temperature_celsius > 85
        clear: gpu.temperature_celsius < 80
        for: 30s
        severity: critical
        labels: {team: infra}
        summary: "GPU {{ $labels.gpu }} on {{ $labels.host }} at {{ $value }} C"
"""


def test_pending_firing_hysteresis_resolved_and_a_restart_keeps_state(tmp_path):
    (tmp_path / "r.yaml").write_text(RULES)
    rules = load_rules(tmp_path / "r.yaml")
    store = tmp_path / "alerts.db"
    eng = AlertEngine(rules, AlertStore(store))

    def step(temp, t, engine):
        engine.observe([gpu(temp, T + t)])
        samples = engine.evaluate(T + t)
        return {a["state"] for a in engine.alerts.values()}, samples

    assert step(90, 0, eng)[0] == {"pending"}
    assert step(91, 20, eng)[0] == {"pending"}
    eng.close()
    eng = AlertEngine(load_rules(tmp_path / "r.yaml"), AlertStore(store))  # agent restarted
    assert {a["state"] for a in eng.alerts.values()} == {"pending"}
    states, samples = step(92, 30, eng)
    assert states == {"firing"}  # 30 s after it first held, across the restart
    (s,) = samples
    assert s.tags["alertname"] == "GpuHot" and s.tags["team"] == "infra" and s.fields["firing"] is True
    (a,) = read_alerts(store)
    assert a["summary"] == "GPU 0 on n1 at 92 C" and a["severity"] == "critical"
    assert step(83, 40, eng)[0] == {"firing"}  # below 85 but not below 80: hysteresis holds it
    assert step(79, 50, eng)[0] == {"resolved"}
    assert step(90, 60, eng)[0] == {"pending"}  # holds again: a new episode
    eng.close()


def test_a_condition_that_stops_while_pending_never_fires(tmp_path):
    (tmp_path / "r.yaml").write_text(RULES)
    eng = AlertEngine(load_rules(tmp_path / "r.yaml"), None)
    eng.observe([gpu(90, T)])
    eng.evaluate(T)
    eng.observe([gpu(70, T + 10)])
    eng.evaluate(T + 10)
    assert eng.alerts == {}


@pytest.mark.parametrize("text,want", [
    ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: gpu.x >\n",
     ":5: groups[0].rules[0].expr: bad expression"),
    ("groups:\n  - name: g\n    rules:\n      - alert: B\n        expr: gpu.x > 1\n        severity: loud\n",
     ":6: groups[0].rules[0].severity"),
    ("groups:\n  - name: g\n    rules:\n      - alert: C\n        expr: gpu.x > 1\n        fore: 5m\n",
     ":6: groups[0].rules[0].fore: unknown key"),
    ("groups:\n  - name: g\n    rules:\n      - {alert: D, expr: a.b > 1}\n      - {alert: D, expr: a.b > 2}\n",
     "rule D defined twice"),
])
def test_malformed_rule_files_name_file_line_and_rule(tmp_path, text, want):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_rules(p)
    msg = str(e.value)
    assert str(p) in msg and want in msg, msg
    if "defined twice" not in want:
        assert "(rule " in msg


def test_rule_on_a_real_reading_fires_survives_a_restart_and_resolves(tmp_path):
    """The agent scrapes a loopback vLLM page; a configured rule on its running requests fires after its
    `for`, shows in `aifactory alerts --json`, stays firing across an agent restart, then resolves."""
    import json
    import signal
    import subprocess
    import sys
    import time
    from http.server import BaseHTTPRequestHandler
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    page = (root / "tests" / "fixtures" / "inference" / "vllm.txt").read_text()
    state = {"running": 9}

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = (page.replace("{PROMPT}", "1").replace("{GEN}", "1")
                    .replace('Instruct"} 3.0', f'Instruct"}} {state["running"]}.0', 1)).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    httpd, base = serve_http(H)
    (tmp_path / "rules.yaml").write_text("""groups:
  - name: inference
    rules:
      - alert: InferenceBacklog
        expr: inference.running_requests > 5
        for: 2s
        severity: critical
        summary: "{{ $labels.model }}: {{ $value }} requests running"
""")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""agent: {{interval: 1s}}
alerts: {{rules: [rules.yaml]}}
collectors:
  host: {{enabled: false}}
  storage: {{enabled: false}}
  network: {{enabled: false}}
  gpu: {{enabled: false}}
  efficiency: {{enabled: false}}
  inference:
    discover: false
    endpoints: [{{url: "{base}/metrics"}}]
""")
    args = ["-c", str(cfg), "--state-dir", str(tmp_path / "state")]

    def cli(*a):
        return subprocess.run([sys.executable, "-m", "agent", *a, *args], cwd=root, capture_output=True, text=True,
                              timeout=60)

    def start():
        return subprocess.Popen([sys.executable, "-m", "agent", "run", *args], cwd=root, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

    def wait_for(state_name):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = cli("alerts", "--json")
            rows = json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else []
            if rows and rows[0]["state"] == state_name:
                return rows
            time.sleep(0.3)
        raise AssertionError(f"alert never became {state_name}: {rows}")

    def stop(p):
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
        assert p.returncode == 0, err

    from agent.alerts.rules import load_rules
    from agent.registry import default_registry

    # the default pack (the agent's and every collector's) and this file's rule
    pack = [r for f in default_registry().rule_files() for r in load_rules(f)]
    assert cli("config", "check").stdout.strip().endswith(f"; {len(pack) + 1} alert rules")
    agent = start()
    try:
        pending = wait_for("pending")
        firing = wait_for("firing")
        assert firing[0]["fired_at"] - pending[0]["active_since"] >= 2
        assert firing[0]["summary"] == "meta-llama/Llama-3.1-8B-Instruct: 9 requests running"
        assert cli("alerts", "--fail-on", "critical").returncode == 1
    finally:
        stop(agent)
    agent = start()  # a restart keeps the state
    try:
        time.sleep(1.5)
        rows = json.loads(cli("alerts", "--json").stdout)
        assert rows[0]["state"] == "firing" and rows[0]["fired_at"] == firing[0]["fired_at"]
        state["running"] = 0
        wait_for("resolved")
        r = cli("alerts", "--state", "firing")
        assert r.returncode == 0 and "no alerts" in r.stdout
        assert cli("alerts", "--fail-on", "critical").returncode == 0
    finally:
        stop(agent)
        httpd.shutdown()


def test_rules_lint(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    good = tmp_path / "good.yaml"
    good.write_text("groups:\n  - name: g\n    rules:\n      - alert: Hot\n        expr: gpu.temperature_celsius > 85\n"
                    "      - alert: Energy\n        expr: rate(gpu.energy_joules_total[5m]) > 700\n")
    r = subprocess.run([sys.executable, "-m", "agent", "rules", "lint", str(good)], cwd=root, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "OK, 2 rules" in r.stdout, r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups:\n  - name: g\n    rules:\n      - alert: Raw\n        expr: gpu.energy_joules_total > 1\n"
                   "      - alert: Typo\n        expr: gpu.temprature_celsius > 1\n")
    r = subprocess.run([sys.executable, "-m", "agent", "rules", "lint", str(bad)], cwd=root, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 78
    assert "rule Raw: gpu.energy_joules_total is a counter" in r.stderr
    assert "rule Typo: gpu.temprature_celsius is not a declared metric" in r.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: gpu.x >\n")
    r = subprocess.run([sys.executable, "-m", "agent", "rules", "lint", str(broken)], cwd=root,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 78 and f"{broken}:5:" in r.stderr and "(rule X)" in r.stderr


def test_every_default_rule_fires_and_resolves_in_its_rule_test():
    from pathlib import Path

    import yaml

    from agent.alerts.testing import run_tests
    from agent.config import DEFAULT_RULES
    from agent.registry import default_registry

    files = default_registry().rule_files()
    # each collector's rules beside it: gathered from their folders, not kept in a core file
    assert {f.parent.name for f in files[1:]} >= {"gpu", "snmp", "facility", "efficiency", "storage", "network"}
    tests = DEFAULT_RULES.with_name("default_rules.test.yaml")
    assert run_tests(tests, files) == []
    covered = {}
    for case in yaml.safe_load(tests.read_text())["tests"]:
        for chk in case["alert_rule_test"]:
            covered.setdefault(chk["alertname"], set()).update(a["state"] for a in chk["exp_alerts"])
    names = {r.name for f in files for r in load_rules(f)}
    assert set(covered) == names and all(v == {"firing", "resolved"} for v in covered.values())
    assert Path(DEFAULT_RULES).exists()


def test_rule_test_failures_are_reported(tmp_path):
    from agent.alerts.testing import expand, run_tests

    assert expand("1 2+3x2 _ 5-1x1") == [1.0, 2.0, 5.0, 8.0, None, 5.0, 4.0]
    (tmp_path / "r.yaml").write_text(RULES)
    (tmp_path / "t.yaml").write_text("""rule_files: [r.yaml]
tests:
  - name: wrong expectation
    input_series:
      - series: 'gpu.temperature_celsius{host="n1",gpu="0"}'
        values: '90x10'
    alert_rule_test:
      - eval_time: 10s
        alertname: GpuHot
        exp_alerts: [{labels: {gpu: "0"}, state: firing}]
""")
    (msg,) = run_tests(tmp_path / "t.yaml", default_registry().rule_files())
    assert "GpuHot at 10s" in msg and "pending" in msg


def test_fleet_alerts_from_a_real_influxdb(influxd):
    """Alerts written by several hosts (measurement alerts) read back with --fleet, grouped by host or rack."""
    import json
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    from agent.model import to_line_protocol

    root = Path(__file__).resolve().parent.parent
    influxd.create_db("fleetalerts")
    now = time.time_ns()
    samples = []
    for host, rack, alert, sev, state, value in (
            ("n1", "r1", "GpuLost", "critical", "firing", 1.0),
            ("n2", "r1", "DiskAlmostFull", "warning", "pending", 93.0),
            ("n3", "r2", "GpuTemperatureNearSlowdown", "warning", "firing", 84.0),
            ("n3", "r2", "UpsOnBattery", "critical", "resolved", 0.0)):
        samples.append(Sample("alerts", {"host": host, "rack": rack, "alertname": alert, "severity": sev,
                                         "gpu": "0"},
                              {"state": state, "firing": state == "firing", "value": value, "active_seconds": 60.0},
                              now - 5_000_000_000))
    body = to_line_protocol(samples).encode()
    urllib.request.urlopen(urllib.request.Request(influxd.url + "/write?db=fleetalerts&precision=ns", data=body),
                           timeout=30).read()

    def cli(*a):
        return subprocess.run([sys.executable, "-m", "agent", "alerts", "--fleet", "--url", influxd.url,
                               "--database", "fleetalerts", *a], cwd=root, capture_output=True, text=True, timeout=60)

    r = cli("--json")
    assert r.returncode == 0, r.stderr
    rows = {(x["host"], x["alertname"]): x for x in json.loads(r.stdout)}
    assert rows[("n1", "GpuLost")]["state"] == "firing" and rows[("n1", "GpuLost")]["rack"] == "r1"
    assert rows[("n2", "DiskAlmostFull")]["value"] == 93.0 and len(rows) == 4
    r = cli("--state", "firing", "--group-by", "rack")
    assert r.returncode == 0 and "GpuLost" in r.stdout and "DiskAlmostFull" not in r.stdout
    summary = r.stdout.split("\n\n")[0].splitlines()
    assert summary[0].split()[:3] == ["RACK", "FIRING", "CRITICAL"]
    assert summary[1].split()[:3] == ["r1", "1", "1"] and summary[2].split()[:3] == ["r2", "1", "0"]
    assert cli("--fail-on", "critical").returncode == 1
    assert cli("--fail-on", "critical", "--state", "firing", "--severity", "critical").returncode == 1
    bad = subprocess.run([sys.executable, "-m", "agent", "alerts", "--fleet", "--url", "http://127.0.0.1:1",
                          "--database", "x"], cwd=root, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "http://127.0.0.1:1" in bad.stderr


class Receiver:
    """A loopback HTTP receiver recording JSON bodies; can fail its first N requests or hold them."""

    def __init__(self, fail_first: int = 0, hold: bool = False) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler

        self.bodies, self.paths, self.fail_first = [], [], fail_first
        self.release = threading.Event()
        self.got = threading.Event()
        if not hold:
            self.release.set()
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                import json

                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.release.wait(30)
                if outer.fail_first > 0:
                    outer.fail_first -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.bodies.append(body)
                outer.paths.append((self.path, self.headers.get("Authorization")))
                outer.got.set()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd, self.url = serve_http(H)

    def wait(self, n: int, timeout: float = 20.0) -> list:
        import time

        deadline = time.monotonic() + timeout
        while len(self.bodies) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.bodies

    def close(self):
        self.release.set()
        self.httpd.shutdown()


def test_webhook_and_alertmanager_notifications_retry_and_never_block(tmp_path, monkeypatch):
    from agent.alerts.notify import Notifier
    from agent.config import Receiver as ReceiverConfig

    monkeypatch.setattr("agent.alerts.notify.backoff", lambda n, base, cap: 0.05)
    (tmp_path / "token").write_text("s3cret-token\n")
    hook, am, held = Receiver(fail_first=2), Receiver(), Receiver(hold=True)
    notifier = Notifier([ReceiverConfig(name="hook", url=hook.url + "/hook", token_file=str(tmp_path / "token")),
                         ReceiverConfig(name="am", type="alertmanager", url=am.url, resend=60),
                         ReceiverConfig(name="slow", url=held.url, timeout=60)])
    (tmp_path / "r.yaml").write_text(RULES.replace("severity: critical", "severity: critical\n"
                                                   "        notify: [hook, am, slow]"))
    eng = AlertEngine(load_rules(tmp_path / "r.yaml"), None, notifier)
    try:
        for t, temp in ((0, 90), (30, 90)):  # pending, then firing (for: 30s)
            eng.observe([gpu(temp, T + t)])
            eng.evaluate(T + t)
        # the held receiver has not answered, and evaluation went on regardless
        assert not held.got.is_set() and {a["state"] for a in eng.alerts.values()} == {"firing"}
        (fired,) = hook.wait(1)  # after two 503s, the retry got through
        assert fired["status"] == "firing" and fired["alerts"][0]["alertname"] == "GpuHot"
        assert fired["alerts"][0]["labels"]["gpu"] == "0" and fired["alerts"][0]["summary"] == "GPU 0 on n1 at 90 C"
        assert hook.paths[0] == ("/hook", "Bearer s3cret-token")
        (am_fired,) = am.wait(1)
        assert am.paths[0][0] == "/api/v2/alerts"
        assert am_fired[0]["labels"]["alertname"] == "GpuHot" and "endsAt" not in am_fired[0]
        eng.observe([gpu(91, T + 60)])
        eng.evaluate(T + 60)   # still firing, within resend: nothing new
        eng.observe([gpu(92, T + 95)])
        eng.evaluate(T + 95)   # Alertmanager forgets alerts not re-sent: re-sent after 60 s
        assert len(am.wait(2)) == 2 and len(hook.bodies) == 1
        eng.observe([gpu(70, T + 100)])
        eng.evaluate(T + 100)  # resolved
        resolved = hook.wait(2)[1]
        assert resolved["status"] == "resolved" and resolved["alerts"][0]["endsAt"]
        assert am.wait(3)[2][0]["endsAt"]
        held.release.set()
        assert len(held.wait(2)) == 2  # the slow receiver gets both, late, in order
        assert held.bodies[0]["status"] == "firing" and held.bodies[1]["status"] == "resolved"
        assert notifier.dropped == 0 and notifier.failed == 0
    finally:
        eng.close()
        for r in (hook, am, held):
            r.close()


def test_rule_naming_an_unknown_receiver_is_a_config_error(tmp_path):
    from agent.config import build_config
    from agent.registry import default_registry

    (tmp_path / "r.yaml").write_text(RULES.replace("severity: critical", "severity: critical\n"
                                                   "        notify: [pager]"))
    cfg = build_config({"alerts": {"rules": [str(tmp_path / "r.yaml")], "default_rules": False}}, {}, None,
                       default_registry())
    with pytest.raises(ConfigError) as e:
        config_rules(cfg, default_registry().rule_files())
    assert "rule GpuHot: notify names unknown receivers: pager" in str(e.value)
