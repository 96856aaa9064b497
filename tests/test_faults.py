"""Reliability under faults: one regression test per defect found by an adversarial run.

Each test is named after the behaviour it checks. They use real servers or small hostile servers on loopback.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent.alerts.rules import config_rules
from agent.cli import main
from agent.collector import Context
from agent.config import ConfigError, InstanceConfig, load_config
from agent.model import Accumulator, Sample, to_line
from agent.registry import default_registry
from agent.runner import InstanceRunner

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path, text, name="agent.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def config_error(path) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path, default_registry())
    return str(e.value)


def hostile_server(behaviour):
    """A loopback HTTP server whose GET and POST do `behaviour(handler)`: (server, base URL)."""
    import http.server

    from .services import serve_http

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802
            try:
                behaviour(self)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_POST = do_GET  # noqa: N815

        def log_message(self, *a):
            pass

    return serve_http(H)


def reply(h, status: int, body: bytes) -> None:
    if h.command == "POST":
        h.rfile.read(int(h.headers.get("Content-Length") or 0))
    h.send_response(status)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


# --- non-finite alert values ---------------------------------------------------------------


def test_rules_with_non_finite_values_neither_fire_nor_write_nan(tmp_path):
    from agent.alerts.engine import AlertEngine
    from agent.alerts.rules import load_rules
    from agent.model import to_line_protocol

    rules = write(tmp_path, """
        groups:
          - name: g
            rules:
              - {alert: DivByZero, expr: 1 / 0}
              - {alert: VectorDivByZero, expr: host.load_average_1m / host.cpu_count > 0}
              - {alert: Huge, expr: host.load_average_1m * 1e308 * 10 > 0}
              - {alert: Fine, expr: host.load_average_1m > 0}
        """, "rules.yaml")
    eng = AlertEngine(load_rules(rules), None)
    now = time.time()
    eng.observe([Sample("host", {"host": "n1"}, {"load_average_1m": 2.0, "cpu_count": 0}, int(now * 1e9))])
    out = eng.evaluate(now)
    assert {s.tags["alertname"] for s in out} == {"Fine"}
    assert all(math.isfinite(s.fields["value"]) for s in out)
    text = to_line_protocol(out)
    assert "nan" not in text and "inf" not in text


# --- one +Inf scrape must not poison a counter ----------------------------------------------


def test_non_finite_counter_readings_are_refused_and_never_stored(tmp_path):
    from collectors.common.counters import MonotonicCounters

    path = tmp_path / "c.json"
    c = MonotonicCounters(path)
    assert c.update("k", 100.0) == (100.0, None)
    assert c.update("k", math.inf) == (None, "invalid")
    assert c.update("k", math.nan) == (None, "invalid")
    assert c.update("k", 150.0) == (150.0, None)
    c.save()
    assert "Infinity" not in path.read_text() and "NaN" not in path.read_text()
    # a state file poisoned by an earlier version: the bad entry goes, the good one stays
    path.write_text('{"bad": {"last": 5, "offset": Infinity, "resets": 1}, "good": {"last": 7, "offset": 3, '
                    '"resets": 1}}')
    c2 = MonotonicCounters(path)
    assert c2.update("bad", 10.0) == (10.0, None)
    assert c2.update("good", 8.0) == (11.0, None)


def test_inference_counter_survives_an_inf_scrape(tmp_path):
    from collectors.inference import InferenceCollector, InferenceOptions

    pages = ["vllm:prompt_tokens_total{model_name=\"m\"} 100\nvllm:generation_tokens_total{model_name=\"m\"} 50\n",
             "vllm:prompt_tokens_total{model_name=\"m\"} +Inf\nvllm:generation_tokens_total{model_name=\"m\"} 60\n",
             "vllm:prompt_tokens_total{model_name=\"m\"} 130\nvllm:generation_tokens_total{model_name=\"m\"} 70\n"]

    srv, url = hostile_server(lambda h: reply(h, 200, pages.pop(0).encode()))
    try:
        col = InferenceCollector(InferenceOptions(endpoints=[{"url": url + "/metrics"}], discover=False),
                                 Context("inference", state_dir=tmp_path))
        got = []
        for _ in range(3):
            acc = Accumulator(1, {})
            col.collect(acc)
            got.append({k: v for s in acc.close() if s.measurement == "inference" for k, v in s.fields.items()})
        col.counters.save()
    finally:
        srv.shutdown()
    assert got[0]["prompt_tokens_total"] == 100 and got[1]["prompt_tokens_total"] == 100  # its last count, never Inf
    assert got[1]["generation_tokens_total"] == 60
    assert got[2]["prompt_tokens_total"] == 130  # not removed for good
    assert "Infinity" not in (tmp_path / "inference-counters.json").read_text()


# --- a tag value ending in a backslash --------------------------------------------------------


def test_trailing_backslash_in_tags_keeps_the_line_valid(influxd):
    from .lp_parser import parse_line
    from .test_influxdb import new_db

    s = Sample("inference", {"host": "n1", "model": "x\\", "port": "8000", "outlet_name": "A\\\\"},
               {"running_requests\\": 1.0}, 1_790_000_000_000_000_000)
    line = to_line(s)
    m, tags, fields, _ = parse_line(line)
    assert tags == {"host": "n1", "model": "x", "port": "8000", "outlet_name": "A"}
    assert fields == {"running_requests": 1.0}
    db = new_db(influxd)
    import urllib.request

    req = urllib.request.Request(f"{influxd.url}/write?db={db}", data=line.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 204
    (row,) = influxd.points(db, "inference")
    assert (row["model"], row["port"], row["outlet_name"], row["running_requests"]) == ("x", "8000", "A", 1.0)


# --- one bad SNMP device takes down all devices ----------------------------------------------


def test_bad_v3_credentials_are_config_errors(tmp_path):
    (tmp_path / "short").write_text("abc\n")
    p = write(tmp_path, f"""
        collectors:
          snmp:
            devices:
              - {{name: a, host: 127.0.0.1, version: v3, v3_user: u, v3_auth_proto: SHA,
                 v3_auth_key_file: {tmp_path / 'short'}}}
              - {{name: b, host: 127.0.0.1, version: v3, v3_user: u, v3_priv_proto: AES,
                 v3_priv_key_file: {tmp_path / 'short'}}}
        """)
    err = config_error(p)
    assert f"{p}:5: collectors.snmp.devices[0]" in err and "at least 8 characters" in err
    assert "collectors.snmp.devices[1]" in err and "needs v3_auth_proto" in err


def test_each_snmp_device_fails_alone_within_the_collector_deadline(snmpsim):
    """A device whose credentials make pysnmp raise, and one that never finishes its walk (silent, with a
    device deadline of 12 s), next to a good PDU: the run ends before its 3 s deadline with the good
    device's readings (what the facility collector sums), and each bad device's row says why."""
    from collectors.snmp import Device, SnmpCollector, SnmpOptions
    from collectors.snmp.client import Credentials

    from .services import free_port_udp

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", free_port_udp()))
    opts = SnmpOptions(devices=[
        {"name": "good", "host": "127.0.0.1", "port": snmpsim.port, "community": "apc-rpdu2", "role": "it"},
        {"name": "hung", "host": "127.0.0.1", "port": silent.getsockname()[1], "timeout": 2, "retries": 1,
         "role": "it"},
        {"name": "v3bad", "host": "127.0.0.1", "port": snmpsim.port, "profile": "apc-rpdu2"}])
    col = SnmpCollector(opts, Context("snmp", timeout=3.0))
    col.devices[2] = Device(col.devices[2].opts, Credentials("v3", user="u", auth_proto="SHA", auth_key="short",
                                                             priv_proto="AES", priv_key="short"))
    cfg = InstanceConfig("snmp", "snmp", opts, 10.0, 3.0)
    published = []
    runner = InstanceRunner(cfg, col, {"host": "poller"}, published.extend)
    try:
        asyncio.run(runner.run_once())
    finally:
        col.close()
        silent.close()
    assert runner.state == "ok", runner.last_error  # not "timeout": the run ended before its deadline
    devs = {s.tags["device"]: s.fields for s in published if s.measurement == "snmp_device"}
    assert devs["good"]["up"] is True and "error" not in devs["good"]
    assert devs["hung"]["up"] is False and "within" in devs["hung"]["error"]
    assert devs["v3bad"]["up"] is False and devs["v3bad"]["error"]
    assert any(s.measurement == "pdu" and s.tags["device"] == "good" for s in published)


# --- a catastrophic regex in a rule ---------------------------------------------------------


def test_label_regexes_run_in_linear_time_and_re2_errors_name_the_rule(tmp_path):
    from agent.alerts.engine import AlertEngine
    from agent.alerts.rules import load_rules

    rules = write(tmp_path, """
        groups:
          - name: g
            rules:
              - alert: Evil
                expr: 'host.load_average_1m{host=~"(a+)+$"} > 0'
        """, "rules.yaml")
    eng = AlertEngine(load_rules(rules), None)
    now = time.time()
    eng.observe([Sample("host", {"host": "a" * 40 + "!"}, {"load_average_1m": 1.0}, int(now * 1e9))])
    t0 = time.process_time()
    for _ in range(100):
        assert eng.evaluate(now) == []
    # Python's backtracking `re` takes about 2^40 steps here (hours); RE2 microseconds.
    assert time.process_time() - t0 < 5
    bad = write(tmp_path, """
        groups:
          - name: g
            rules:
              - alert: Backref
                expr: 'host.load_average_1m{host=~"(a)\\\\1"} > 0'
        """, "bad.yaml")
    with pytest.raises(ConfigError) as e:
        load_rules(bad)
    assert f"{bad}:6" in str(e.value) and "Backref" in str(e.value) and "RE2" in str(e.value)


# --- config check accepts what run crashes on -----------------------------------------------


@pytest.mark.parametrize("snippet, key, expect", [
    ("outputs: {influxdb: [{api: v1, database: d, url: 'http://127.0.0.1:99999'}]}", "outputs.influxdb[0].url",
     "invalid port"),
    ("outputs: {influxdb: [{api: v1, database: d, url: 'http://u:pw@127.0.0.1:8086'}]}",
     "outputs.influxdb[0].url", "credentials in the URL"),
    ("agent: {interval: .inf}", "agent.interval", "not a usable duration"),
    ("agent: {interval: 999999999999999999999d}", "agent.interval", "not a usable duration"),
    ("agent: {interval: 1ns}", "agent.interval", "greater than or equal to 0.1"),
    ("collectors: {host: {interval: 2d}}", "collectors.host.interval", "less than or equal to 86400"),
    ("collectors: {inference: {endpoints: [{url: '127.0.0.1:8000/metrics'}]}}",
     "collectors.inference.endpoints[0].url", "not an http"),
    ("collectors: {inference: {endpoints: [{url: 'file:///etc/passwd'}]}}",
     "collectors.inference.endpoints[0].url", "not an http"),
    ("collectors: {inference: {endpoints: [{url: 'http://127.0.0.1:0/metrics'}]}}",
     "collectors.inference.endpoints[0].url", "invalid port"),
    ("collectors: {network: {exclude_interfaces: ['veth(']}}", "collectors.network.exclude_interfaces",
     "not a regular expression"),
    ("collectors: {storage: {exclude_mounts: ['[']}}", "collectors.storage.exclude_mounts",
     "not a regular expression"),
    ("outputs: {influxdb: [{api: v1, database: d, url: 'http://127.0.0.1:8086', token_file: /nonexistent/tok}]}",
     "outputs.influxdb[0].token_file", "cannot read secret file /nonexistent/tok"),
    ("collectors: {snmp: {devices: [{name: a, host: h, version: v3, v3_user: u, v3_auth_proto: SHA, "
     "v3_auth_key_file: /nonexistent/key}]}}", "collectors.snmp.devices[0].v3_auth_key_file", "cannot read"),
    ("alerts: {receivers: [{name: r, url: 'http://a:b@127.0.0.1:1'}]}", "alerts.receivers[0].url",
     "credentials in the URL"),
])
def test_config_check_refuses_what_run_would_crash_on(tmp_path, capsys, snippet, key, expect):
    p = write(tmp_path, snippet + "\n")
    assert main(["config", "check", "-c", str(p)]) == 78
    err = capsys.readouterr().err
    assert f"{p}:1: {key}" in err and expect in err, err


# --- credentials inside a URL -------------------------------------------------------------------


def test_credentials_in_urls_are_refused_and_never_echoed(tmp_path, capsys):
    p = write(tmp_path, "outputs: {influxdb: [{api: v1, database: d, url: 'http://agent:s3cr3t@127.0.0.1:8086'}]}\n")
    for argv in (["config", "check", "-c", str(p)], ["config", "show", "-c", str(p)], ["run", "--once", "-c", str(p)]):
        assert main(argv) == 78
        out = capsys.readouterr()
        assert "credentials in the URL are refused" in out.err and "s3cr3t" not in out.err + out.out
    rc = main(["alerts", "--fleet", "--url", "http://agent:s3cr3t@127.0.0.1:1", "--database", "d"])
    out = capsys.readouterr()
    assert rc == 2 and "credentials in the URL" in out.err and "s3cr3t" not in out.err + out.out


# --- a YAML alias bomb ----------------------------------------------------------------------


BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("kind", ["config", "rules"])
def test_alias_bomb_exits_78_fast(tmp_path, capsys, kind):
    if kind == "config":
        p = write(tmp_path, "agent:\n  hostname: x\ntags:\n  extra:\n    " + BOMB.replace("\n", "\n    "))
        argv = ["config", "check", "-c", str(p)]
    else:
        p = write(tmp_path, "groups: []\n" + BOMB, "rules.yaml")
        argv = ["rules", "lint", str(p)]
    t0 = time.process_time()
    assert main(argv) == 78
    assert time.process_time() - t0 < 5
    assert "expands to more than" in capsys.readouterr().err


def test_recursive_alias_is_a_config_error(tmp_path, capsys):
    p = write(tmp_path, "tags: &t\n  extra: *t\n")
    assert main(["config", "check", "-c", str(p)]) == 78


# --- helpers for the state-directory tests ------------------------------------------------------


def agent_cmd(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=kw.pop("timeout", 120), **kw)


def minimal_config(tmp_path, extra: str = "", interval: str = "1s") -> Path:
    return write(tmp_path, f"""
        agent: {{hostname: t1, interval: {interval}}}
        collectors:
          gpu: {{enabled: false}}
          inference: {{enabled: false}}
          efficiency: {{enabled: false}}
          storage: {{smart: "off"}}
        """ + extra, "cfg.yaml")


@pytest.fixture
def small_fs(tmp_path):
    """A real small file system (tmpfs, 8 MiB) that a test can fill or mount read-only; root only."""
    mounts = []

    def make(name: str, size: str = "8m", ro: bool = False) -> Path:
        d = tmp_path / name
        d.mkdir()
        opts = f"size={size}" + (",ro" if ro else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); CI runs as root, where it can")
        mounts.append(d)
        return d

    yield make
    for d in mounts:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


# --- corrupt state files, an unusable state directory ------------------------------------------


def test_corrupt_buffer_and_alert_store_are_set_aside_and_the_agent_collects(tmp_path, influxd):
    from agent.outputs.buffer import DiskBuffer

    from .test_influxdb import new_db

    state = tmp_path / "state"
    state.mkdir()
    buf = DiskBuffer(state / "buffer-influx.db")
    buf.append([f"m,host=a v={i} {i}".encode() for i in range(30_000)])
    buf.close()
    data = (state / "buffer-influx.db").read_bytes()
    (state / "buffer-influx.db").write_bytes(data[: len(data) // 2])  # truncated to half
    (state / "alerts.db").write_bytes(bytes(range(256)) * 64)  # garbage
    (state / "inference-counters.json").write_text('{"a": {"last": 1, "off')
    db = new_db(influxd)
    cfg = minimal_config(tmp_path, f"""
        outputs:
          influxdb: [{{name: influx, api: v1, url: "{influxd.url}", database: {db}, flush_interval: 0.2}}]
        """)
    r = agent_cmd("run", "--once", "-c", str(cfg), "--state-dir", str(state))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    aside = sorted(p.name.split(".corrupt-")[0] for p in state.glob("*.corrupt-*") if not p.name.endswith(
        ("-wal", "-shm")))
    assert aside == ["alerts.db", "buffer-influx.db"], aside
    assert r.stderr.count("moved aside") == 2
    st = json.loads((state / "status.json").read_text())
    assert {a["path"].rsplit("/", 1)[1] for a in st["state_files_set_aside"]} == {"alerts.db", "buffer-influx.db"}
    assert st["process"]["state_files_set_aside_total"] == 2
    # collected and delivered
    assert influxd.query('SELECT count("load_average_1m") FROM "host"', db)[0]["values"][0][1] == 1
    # the agent writes fresh files and starts again without setting anything aside
    r = agent_cmd("run", "--once", "-c", str(cfg), "--state-dir", str(state))
    assert r.returncode == 0 and "moved aside" not in r.stderr


def test_counter_state_garbage_is_set_aside(tmp_path):
    from collectors.common.counters import MonotonicCounters

    p = tmp_path / "snmp-counters.json"
    p.write_bytes(b"\x00\xffgarbage")
    c = MonotonicCounters(p)
    assert c.update("k", 5.0) == (5.0, None)
    assert list(tmp_path.glob("snmp-counters.json.corrupt-*"))


def test_read_only_or_full_state_dir_exits_78_naming_path_and_cause(tmp_path, small_fs):
    ro = small_fs("ro", ro=True)
    r = agent_cmd("run", "--once", "-c", str(minimal_config(tmp_path)), "--state-dir", str(ro / "state"))
    assert r.returncode == 78, r.stderr
    assert f"state directory {ro / 'state'} cannot be written: read-only file system" in r.stderr
    assert "Traceback" not in r.stderr
    full = small_fs("full", size="1m")
    (full / "state").mkdir()
    subprocess.run(["dd", "if=/dev/zero", f"of={full / 'filler'}", "bs=64k"], capture_output=True)
    r = agent_cmd("run", "--once", "-c", str(minimal_config(tmp_path)), "--state-dir", str(full / "state"))
    assert r.returncode == 78 and "no space left on device" in r.stderr and "Traceback" not in r.stderr


# --- two agents on one state directory ----------------------------------------------------------


def test_second_agent_on_a_state_dir_is_refused_naming_the_pid(tmp_path):
    state = tmp_path / "state"
    cfg = minimal_config(tmp_path)
    first = subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(cfg), "--state-dir", str(state)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (state / "status.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        second = agent_cmd("run", "-c", str(cfg), "--state-dir", str(state), timeout=60)
        assert second.returncode == 75, second.stderr
        assert f"another agent (pid {first.pid}) is running with state directory {state}" in second.stderr
        # read-only commands still work beside the running agent
        time.sleep(1.5)
        assert agent_cmd("status", "-c", str(cfg), "--state-dir", str(state)).returncode == 0
        q = agent_cmd("query", "host", "--json", "-c", str(cfg), "--state-dir", str(state))
        assert q.returncode == 0 and json.loads(q.stdout)
        assert agent_cmd("collect", "--collector", "host", "-c", str(cfg)).returncode == 0
    finally:
        first.terminate()
        first.wait(30)
    assert first.returncode == 0
    # the lock went with the process: a new agent starts
    assert agent_cmd("run", "--once", "-c", str(cfg), "--state-dir", str(state)).returncode == 0


# --- a server rejecting every point ----------------------------------------------------------


def test_rejected_points_are_not_written_and_make_the_output_unhealthy(tmp_path):
    from agent.config import build_config
    from agent.scheduler import Agent

    srv, url = hostile_server(lambda h: reply(h, 400, b'{"error":"unable to parse: bad timestamp"}'))
    state = tmp_path / "state"
    try:
        cfg = build_config({"agent": {"hostname": "t1", "interval": 0.5, "align": False},
                            "collectors": {"gpu": {"enabled": False}, "inference": {"enabled": False},
                                           "efficiency": {"enabled": False}, "storage": {"smart": "off"}},
                            "outputs": {"influxdb": [{"name": "influx", "api": "v1", "url": url, "database": "d",
                                                      "flush_interval": 0.2, "flush_jitter": 0}]}},
                           {}, None, default_registry())
        agent = Agent(cfg, state)
        asyncio.run(agent.run(duration=2.0, flush_timeout=3))
    finally:
        srv.shutdown()
    st = json.loads((state / "status.json").read_text())
    out = st["outputs"]["influx"]
    assert out["rejected_points_total"] > 0 and out["written_samples_total"] == 0
    assert out["state"] == "rejecting" and "rejected" in out["last_error"]
    assert st["healthy"] is False
    rules = {r.name for r in config_rules(cfg, default_registry().rule_files())}
    assert "OutputRejectingPoints" in rules


# --- a hung collector at startup -------------------------------------------------------------


@pytest.mark.services  # 20 s of a running agent: the full tier
def test_a_hung_first_run_holds_back_nobody(state_dir):
    from . import plugins
    from .test_runner import make_agent

    plugins.RELEASE.clear()
    plugins.RUNS.clear()
    try:
        agent = make_agent(state_dir, {"hang": {"interval": 20, "timeout": 20}, "quick": {"interval": 0.2}})
        t0 = time.monotonic()
        ready_at = []
        agent.sd.ready = lambda *a: ready_at.append(time.monotonic())
        asyncio.run(agent.run(duration=1.5, flush_timeout=2))
    finally:
        plugins.RELEASE.set()
    # the hung first run lasts its 20 s deadline: READY and the others' first runs do not wait for it
    assert ready_at and ready_at[0] - t0 < 10.0
    assert plugins.RUNS["quick"][0] - t0 < 10.0
    assert len(plugins.RUNS["quick"]) >= 3


# --- tracebacks instead of messages --------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b'{"pid": 12', b"\x00\xff", b"[1, 2]", b'{"pid": 1, "collectors": 5}'])
def test_status_with_a_bad_status_file_exits_3_with_a_message(tmp_path, content):
    state = tmp_path / "state"
    state.mkdir()
    (state / "status.json").write_bytes(content)
    r = agent_cmd("status", "--state-dir", str(state))
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "status.json" in r.stdout


def test_query_and_alerts_refuse_bad_arguments_and_corrupt_stores(tmp_path):
    state = tmp_path / "state"
    cfg = minimal_config(tmp_path)
    assert agent_cmd("run", "--once", "-c", str(cfg), "--state-dir", str(state)).returncode == 0
    base = ["-c", str(cfg), "--state-dir", str(state)]
    r = agent_cmd("query", "host", "--since", "1000000000d", *base)
    assert r.returncode == 2 and "longer than 3660d" in r.stderr
    r = agent_cmd("query", "host", "--since", "3000d", "--json", *base)
    assert r.returncode == 0 and json.loads(r.stdout)
    r = agent_cmd("query", "host", "--limit", "99999999999999999999999", *base)
    assert r.returncode == 2 and "out of range" in r.stderr
    (state / "metrics.db").write_bytes(b"\x01" * 8192)
    for f in state.glob("metrics.db-*"):
        f.unlink()
    (state / "alerts.db").write_bytes(b"\x02" * 8192)
    for cmd in (["query", "host"], ["alerts"]):
        r = agent_cmd(*cmd, *base)
        assert r.returncode == 1 and "cannot be read" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("argv, expect", [
    (["127.0.0.1:abc"], "port must be a number"),
    (["127.0.0.1:99999"], "port must be a number"),
    (["127.0.0.1", "--timeout", "0"], "out of range"),
    (["[::1"], "expected [IPV6]:PORT"),
])
def test_snmp_probe_argument_errors(argv, expect):
    r = agent_cmd("snmp", "probe", *argv)
    assert r.returncode == 2 and expect in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_snmp_probe_takes_bracketed_ipv6():
    from agent.cli.common import parse_target

    from .services import free_port_udp

    assert parse_target("[::1]:1161") == ("::1", 1161)
    assert parse_target("fe80::1") == ("fe80::1", 161)
    assert parse_target("pdu-a.example:1161") == ("pdu-a.example", 1161)
    port = free_port_udp()
    r = agent_cmd("snmp", "probe", f"[::1]:{port}", "--timeout", "0.2")
    assert r.returncode == 1 and f"::1:{port}" in r.stderr and "no response" in r.stderr, r.stderr


# --- status of a dead agent --------------------------------------------------------------------


def test_status_of_a_reused_pid_or_a_stale_file_is_not_running(tmp_path):
    state = tmp_path / "state"
    cfg = minimal_config(tmp_path)
    assert agent_cmd("run", "--once", "-c", str(cfg), "--state-dir", str(state)).returncode == 0
    st = json.loads((state / "status.json").read_text())
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        # the agent died without a word (kill -9, power loss) and its pid now belongs to another process
        st.update(pid=sleeper.pid, stopped=False, updated_at=time.time())
        (state / "status.json").write_text(json.dumps(st))
        r = agent_cmd("status", "--state-dir", str(state))
        assert r.returncode == 3 and "NOT RUNNING" in r.stdout
        # a status written long ago by a process that still lives
        st.update(pid=sleeper.pid, updated_at=time.time() - 3 * 86400)
        (state / "status.json").write_text(json.dumps(st))
        (state / "agent.lock").unlink()  # as written before locking existed: only the pid to go by
        r = agent_cmd("status", "--json", "--state-dir", str(state))
        doc = json.loads(r.stdout)
        assert r.returncode == 3 and doc["running"] is False and doc["stale"] is True
    finally:
        sleeper.kill()


def test_status_exit_code_survives_a_closed_pipe(tmp_path):
    state = tmp_path / "state"
    cfg = minimal_config(tmp_path)
    assert agent_cmd("run", "--once", "-c", str(cfg), "--state-dir", str(state)).returncode == 0
    for reader in ("head -1", "true"):
        r = subprocess.run(["bash", "-o", "pipefail", "-c",
                            f"{sys.executable} -m agent status --state-dir {state} | {reader}"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 3, (reader, r.stderr)
        assert "Traceback" not in r.stderr


# --- the disk fills up mid-run -------------------------------------------------------------


def test_disk_full_mid_run_loses_nothing_logs_once_and_exits_cleanly(tmp_path, small_fs, influxd, caplog):
    import logging

    from agent.config import build_config
    from agent.registry import Registry
    from agent.scheduler import Agent

    from . import plugins
    from .test_influxdb import new_db

    fs = small_fs("full", size="6m")
    state = fs / "state"
    db = new_db(influxd)
    registry = Registry(plugins.TARGETS)
    plugins.RUNS.clear()
    cfg = build_config({"agent": {"hostname": "t1", "interval": 0.2, "align": False},
                        "collectors": {"quick": {"interval": 0.2}},
                        "outputs": {"influxdb": [{"name": "influx", "api": "v1", "url": influxd.url, "database": db,
                                                  "flush_interval": 0.2, "flush_jitter": 0}]}},
                       {}, None, registry)
    agent = Agent(cfg, state, registry)
    filler = fs / "filler"

    async def scenario():
        task = asyncio.create_task(agent.run(duration=7.0, flush_timeout=10))
        await asyncio.sleep(1.5)
        await asyncio.to_thread(subprocess.run, ["dd", "if=/dev/zero", f"of={filler}", "bs=4k"],
                                capture_output=True)
        await asyncio.sleep(2.5)
        full = agent.status()
        filler.unlink()
        return await task, full

    caplog.set_level(logging.INFO)
    rc, during = asyncio.run(scenario())
    assert rc == 0
    out = during["outputs"]["influx"]
    assert during["healthy"] is False and out["state"] == "buffer_failing"
    assert "full" in out["last_error"] and out["spool_errors_total"] > 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not any("cannot rollback" in e for e in errors), errors
    full_errors = [e for e in errors if "full" in e]
    assert 1 <= len(full_errors) <= 6, full_errors  # once per component (buffer, local store, alerts, status)
    assert any("writable again" in r.getMessage() for r in caplog.records)
    # every collection reached InfluxDB: nothing lost, nothing counted as lost
    runs = len(plugins.RUNS["quick"])
    count = influxd.query('SELECT count("value_count") FROM "quick"', db)[0]["values"][0][1]
    assert count == runs, (count, runs)
    final = json.loads((state / "status.json").read_text())
    assert final["outputs"]["influx"]["spool_lost_points_total"] == 0


# --- a stop while a run is in flight -----------------------------------------------------------


def test_stop_during_a_run_logs_no_error_and_lets_it_finish(state_dir, caplog):
    """A scheduled run in flight when the agent stops: APScheduler cancels its jobs at shutdown, which
    logged an ERROR with a CancelledError traceback and cut the run short."""
    import logging

    from . import plugins
    from .test_runner import make_agent

    caplog.set_level(logging.INFO)
    plugins.RUNS.clear()
    # asynchang sleeps for ever: each run ends at its 0.9 s deadline; the one started at ~1 s is in flight at
    # the stop (1.5 s after the scheduler started)
    agent = make_agent(state_dir, {"asynchang": {"interval": 1, "timeout": 0.9}}, interval=0.5)
    assert asyncio.run(agent.run(duration=1.5, flush_timeout=3)) == 0
    assert not [r.getMessage() for r in caplog.records if "raised an exception" in r.getMessage()
                or "CancelledError" in (r.exc_text or "") or "Cancelled" in r.getMessage()]
    (st,) = [r.stats() for r in agent.runners]
    assert st["runs_total"] >= 2 and st["timeouts_total"] == st["runs_total"]  # every run reached its deadline



# --- 6, 7, 17: inference scrapes against hostile servers ----------------------------------------

VLLM_PAGE = (b'vllm:prompt_tokens_total{model_name="m"} 1000\n'
             b'vllm:generation_tokens_total{model_name="m"} 500\n')


def good(h):
    reply(h, 200, VLLM_PAGE)


def drip(h):
    """Headers at once, then one byte every 0.2 s, for ever (a wedged exporter behind a proxy)."""
    h.send_response(200)
    h.send_header("Content-Length", str(len(VLLM_PAGE) * 100))
    h.end_headers()
    for i in range(10_000):
        h.wfile.write(VLLM_PAGE[i % len(VLLM_PAGE):][:1])
        h.wfile.flush()
        time.sleep(0.2)


def inference_collector(tmp_path, urls, timeout=1.0):
    from collectors.inference import InferenceCollector, InferenceOptions

    return InferenceCollector(InferenceOptions(endpoints=[{"url": u, "name": n} for n, u in urls.items()],
                                               discover=False, scrape_timeout=timeout),
                              Context("inference", state_dir=tmp_path))


def collect_once(col, *servers) -> list[Sample]:
    try:
        acc = Accumulator(1, {})
        col.collect(acc)
        return acc.close()
    finally:
        col.close()
        for srv in servers:
            srv.shutdown()


def endpoint_rows(samples):
    return {s.tags["endpoint"]: s.fields for s in samples if s.measurement == "inference_endpoint"}


def test_a_slow_drip_page_is_cut_at_its_deadline_and_never_delays_another(tmp_path, caplog):
    srv_d, url_d = hostile_server(drip)
    srv_g, url_g = hostile_server(good)
    col = inference_collector(tmp_path, {"drip": url_d + "/metrics", "good": url_g + "/metrics"})
    try:
        took, rows = [], []
        for _ in range(3):
            acc = Accumulator(1, {})
            t0 = time.monotonic()
            col.collect(acc)
            took.append(time.monotonic() - t0)
            rows.append(endpoint_rows(acc.close()))
    finally:
        col.close()
        srv_d.shutdown()
        srv_g.shutdown()
    # scrape_timeout 1 s (+0.5 s grace), where the page at this pace would take half an hour
    assert all(t < 10.0 for t in took), took
    for r in rows:
        assert r["good"]["up"] is True
        assert r["drip"]["up"] is False
    assert "complete" in caplog.text and "within 1 s" in caplog.text


def test_an_oversized_page_is_an_error_never_a_partial_parse(tmp_path, caplog):
    from collectors.inference import MAX_PAGE

    tail = b'vllm:prompt_tokens_total{model_name="m"} 123456789\n'
    head = tail[:tail.index(b"123456789") + 3]  # a cut at MAX_PAGE would leave "... 123"
    room = MAX_PAGE - len(head)
    pad = b"# " + b"x" * 1021 + b"\n"
    rest = room % len(pad) or len(pad)
    body = pad * ((room - rest) // len(pad)) + b"#" * (rest - 1) + b"\n" + tail
    assert body[:MAX_PAGE].endswith(b"} 123") and len(body) > MAX_PAGE

    def big(h, with_length: bool):
        h.send_response(200)
        if with_length:
            h.send_header("Content-Length", str(len(body)))
        else:
            h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(body)

    srv_a, url_a = hostile_server(lambda h: big(h, True))
    srv_b, url_b = hostile_server(lambda h: big(h, False))
    col = inference_collector(tmp_path, {"sized": url_a + "/metrics", "streamed": url_b + "/metrics"}, timeout=10)
    samples = collect_once(col, srv_a, srv_b)
    rows = endpoint_rows(samples)
    assert rows["sized"]["up"] is False and rows["streamed"]["up"] is False
    assert "bytes refused" in caplog.text
    assert not [s for s in samples if s.measurement == "inference"]  # nothing from a cut page


def test_redirects_to_another_host_are_refused(tmp_path):
    srv_g, url_g = hostile_server(good)

    def redirect(h, code, location):
        h.send_response(code)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    srv_o, url_o = hostile_server(lambda h: redirect(h, 302, url_g + "/metrics"))
    srv_s, url_s = hostile_server(lambda h: redirect(h, 301, "/real-metrics") if h.path == "/metrics" else good(h))
    col = inference_collector(tmp_path, {"other": url_o + "/metrics", "same": url_s + "/metrics"})
    samples = collect_once(col, srv_g, srv_o, srv_s)
    rows = endpoint_rows(samples)
    assert rows["other"]["up"] is False and rows["same"]["up"] is True
    tokens = {s.tags["endpoint"] for s in samples if s.measurement == "inference"}
    assert tokens == {"same"}


def test_status_by_another_user_without_access_to_the_lock_goes_by_the_pid(tmp_path, monkeypatch):
    from agent import state

    st_dir = tmp_path / "state"
    st_dir.mkdir()
    (st_dir / "agent.lock").write_text("1\n")
    (st_dir / "status.json").write_text(json.dumps({"pid": os.getpid(), "updated_at": time.time(),
                                                    "stopped": False}))
    assert state.read_status(st_dir)["running"] is False  # the lock exists and nobody holds it
    monkeypatch.setattr(state, "lock_holder", lambda d: state.UNKNOWN)  # e.g. 0600 lock of the service user
    assert state.read_status(st_dir)["running"] is True  # this pid lives and the status is fresh
