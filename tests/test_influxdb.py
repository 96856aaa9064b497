"""InfluxDB delivery against real servers: InfluxDB 1.6.7 (v1) and VictoriaMetrics (v2 write API)."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agent.config import ConfigError, build_config
from agent.model import Sample
from agent.outputs.buffer import DiskBuffer
from agent.outputs.influxdb import InfluxOutput, InfluxOutputOptions
from agent.registry import Registry
from agent.scheduler import Agent

from . import plugins
from .services import Influxd, serve_http, tls_pair

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_790_000_000_000_000_000


def gpu_samples(n_ts: int, gpus: int = 8, host: str = "node1", start: int = T0, step: int = 10**9):
    out = []
    for t in range(n_ts):
        for g in range(gpus):
            out.append(Sample("gpu", {"host": host, "gpu": str(g), "uuid": f"GPU-{g:04d}-{host}",
                                      "model": "NVIDIA H200"},
                              {"power_watts": 650.5 + g + t % 7, "energy_joules_total": 10**9 + t * 650 + g,
                               "utilization_percent": float((t * 13 + g) % 101), "temperature_celsius": 61.0 + g,
                               "memory_used_bytes": 80 * 2**30 + t, "lost": False, "pstate": "P0"},
                              start + t * step))
    return out


def make_output(tmp_path, url, **kw) -> InfluxOutput:
    opts = InfluxOutputOptions(**{"name": "influx", "api": "v1", "url": url, "database": "db",
                                  "flush_interval": 0.2, "flush_jitter": 0, **kw})
    out = InfluxOutput(opts, tmp_path)
    out.start()
    return out


def new_db(influxd) -> str:
    name = "t" + uuid.uuid4().hex[:10]
    influxd.create_db(name)
    return name


# --- v1 against InfluxDB 1.6.7 -----------------------------------------------------------


def test_v1_points_read_back_equal(influxd, tmp_path):
    db = new_db(influxd)
    out = make_output(tmp_path, influxd.url, database=db)
    samples = gpu_samples(20)
    out.append(samples)
    assert out.stop(20)
    got = {(p["gpu"], p["time"]): p for p in influxd.points(db, "gpu")}
    assert len(got) == len(samples)
    for s in samples:
        p = got[(s.tags["gpu"], s.ts)]
        assert {k: p[k] for k in s.tags} == s.tags
        assert {k: p[k] for k in s.fields} == s.fields  # floats, ints, bools, strings exact
    assert out.sent == len(samples) and len(out.buffer) == 0


def test_batch_with_one_bad_line_lands_all_the_others(influxd, tmp_path):
    db = new_db(influxd)
    out = make_output(tmp_path, influxd.url, database=db, batch_size=5000)
    out.append(gpu_samples(1))  # power_watts is a float field from now on
    assert out.flush(10)
    good = gpu_samples(50, start=T0 + 10**12)
    bad = Sample("gpu", {"host": "node1", "gpu": "0", "uuid": "x", "model": "m"}, {"power_watts": "a lot"}, T0 + 5)
    out.append(good[:200] + [bad] + good[200:])
    assert out.stop(20)
    assert out.rejected == 1
    assert len(influxd.points(db, "gpu")) == 8 + len(good)
    assert out.sent == 8 + len(good)  # written counts what the server accepted; the bad one is rejected
    assert len(out.buffer) == 0  # and handled: not pending


def test_http_401_keeps_everything_and_status_says_why(tmp_path):
    server = Influxd(tmp_path / "authd", auth=True).start()
    try:
        # InfluxDB 1.x enforces auth once an admin exists
        server.query("CREATE USER admin WITH PASSWORD 'pw' WITH ALL PRIVILEGES")
        server.create_db("db", auth=("admin", "pw"))
        out = make_output(tmp_path, server.url, database="db", retry_max=0.2)
        out.append(gpu_samples(5))
        deadline = time.monotonic() + 10
        while out.state != "auth_failed" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert out.state == "auth_failed" and "HTTP 401" in out.last_error
        assert len(out.buffer) == 40 and out.sent == 0 and out.rejected == 0
        st = out.stats()
        assert st["auth_failing"] is True and st["buffer_points"] == 40
        assert out.stop(1) is False  # still refused: the points stay in the buffer file
        # the operator fixes the credentials; the restarted output delivers what was kept
        (tmp_path / "pw").write_text("pw\n")
        out2 = make_output(tmp_path, server.url, database="db", username="admin", password_file=str(tmp_path / "pw"))
        assert out2.stop(20)
        assert len(server.query('SELECT * FROM "gpu"', "db", auth=("admin", "pw"))[0]["values"]) == 40
    finally:
        server.stop()


@pytest.mark.services
def test_outage_of_30s_loses_nothing_and_duplicates_nothing(tmp_path):
    """influxd stopped for 30 s while the agent collects every second, then restarted."""
    server = Influxd(tmp_path / "influx").start()
    server.create_db("fleet")
    plugins.RUNS.clear()
    registry = Registry(plugins.TARGETS)
    cfg = build_config({"agent": {"interval": 1, "hostname": "n1"},
                        "collectors": {"quick": {}},
                        "outputs": {"local": {"enabled": False},
                                    "influxdb": [{"name": "main", "api": "v1", "url": server.url,
                                                  "database": "fleet", "flush_interval": 0.5, "flush_jitter": 0,
                                                  "retry_max": 2, "timeout": 2}]}}, {}, None, registry)
    agent = Agent(cfg, tmp_path / "state", registry)
    out = next(o for o in agent.pipeline.outputs if o.name != "local")
    seen_states = []

    async def scenario():
        task = asyncio.create_task(agent.run())
        await asyncio.sleep(3)
        await asyncio.to_thread(server.stop)
        for _ in range(30):
            await asyncio.sleep(1)
            seen_states.append(out.state)
        assert len(out.buffer) > 0  # collected during the outage, held on disk
        await asyncio.to_thread(server.start)
        await asyncio.sleep(6)
        agent._stop.set()
        await task

    try:
        asyncio.run(scenario())
        assert "retrying" in seen_states
        points = server.points("fleet", "quick")
        runs = len(plugins.RUNS["quick"])
        times = [p["time"] for p in points]
        assert len(times) == len(set(times)) == runs >= 38  # every collection, once
        agent_points = server.points("fleet", "agent")
        assert agent_points  # the self-metrics went the same way
        assert out.buffer.evicted == 0 and out.rejected == 0 and len(out.buffer) == 0
    finally:
        server.stop()


KILL_SCRIPT = """
import sys, time
from pathlib import Path
from agent.outputs.influxdb import InfluxOutputOptions
from agent.outputs.influxdb import InfluxOutput
opts = InfluxOutputOptions(name="influx", api="v1", url=sys.argv[1], database=sys.argv[2], batch_size=2000,
                           flush_interval=0.1, flush_jitter=0)
out = InfluxOutput(opts, Path(sys.argv[3]))
out.start()
print("sending", flush=True)
time.sleep(60)
"""


def test_kill_9_mid_flush_then_restart_loses_nothing(influxd, tmp_path):
    db = new_db(influxd)
    state = tmp_path / "state"
    buf = DiskBuffer(state / "buffer-influx.db")
    samples = gpu_samples(25_000)  # 200,000 points
    from agent.model import to_line
    buf.append([to_line(s).encode() for s in samples])
    buf.close()
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, influxd.url, db, str(state)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "sending"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = influxd.query('SELECT count("power_watts") FROM "gpu"', db)
            if rows and rows[0]["values"][0][1] > 0:
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    landed = influxd.query('SELECT count("power_watts") FROM "gpu"', db)[0]["values"][0][1]
    left = DiskBuffer(state / "buffer-influx.db")
    pending = len(left)
    left.close()
    # killed mid-flush: some points had landed, and some were still in the buffer (possibly all of them,
    # if the kill came between InfluxDB's answer and the buffer's delete: they are sent again, harmlessly)
    assert landed > 0 and pending > 0 and landed + pending >= len(samples)
    out = make_output(state, influxd.url, database=db, batch_size=5000)
    out.flush(60)
    assert out.stop(10)
    count = influxd.query('SELECT count("power_watts") FROM "gpu"', db)[0]["values"][0][1]
    assert count == len(samples)


# --- v2 through influxdb-client against VictoriaMetrics ------------------------------------------


def test_v2_points_read_back_equal(victoria, tmp_path):
    host = "v2-" + uuid.uuid4().hex[:8]
    (tmp_path / "token").write_text("secret-token\n")
    out = make_output(tmp_path, victoria.url, api="v2", database=None, bucket="b", org="o",
                      token_file=str(tmp_path / "token"))
    samples = gpu_samples(10, host=host)
    out.append(samples)
    assert out.stop(20)
    series = victoria.export(f'{{__name__=~"gpu_.*",host="{host}"}}')
    got = {}
    for s in series:
        m = s["metric"]
        for v, ts in zip(s["values"], s["timestamps"]):
            got[(m["__name__"], m["gpu"], ts)] = (v, m)
    for s in samples:
        for f, value in s.fields.items():
            if isinstance(value, str):
                continue  # VictoriaMetrics keeps numbers only
            v, labels = got[(f"gpu_{f}", s.tags["gpu"], s.ts // 10**6)]
            assert v == float(value)
            assert {k: labels[k] for k in s.tags} == s.tags


# --- protocol edges against a scripted loopback server -------------------------------------------


class Scripted(http.server.BaseHTTPRequestHandler):
    script: list = []
    seen: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        import gzip
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        lines = body.split(b"\n")
        Scripted.seen.append((time.monotonic(), len(lines), dict(self.headers)))
        status, headers = Scripted.script.pop(0) if Scripted.script else (204, {})
        if status == "too-large":
            status = 413 if len(lines) > 10 else 204
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def scripted():
    Scripted.script, Scripted.seen = [], []
    srv, url = serve_http(Scripted)
    yield url
    srv.shutdown()


def test_http_429_and_503_keep_points_and_honour_retry_after(scripted, tmp_path):
    Scripted.script = [(429, {"Retry-After": "1"}), (503, {}), (204, {})]
    os.environ["AIF_TEST_TOKEN"] = "tok"
    try:
        out = make_output(tmp_path, scripted, token_env="AIF_TEST_TOKEN", retry_max=0.1)
        out.append(gpu_samples(2))
        deadline = time.monotonic() + 10
        while out.sent == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        out.stop(5)
    finally:
        del os.environ["AIF_TEST_TOKEN"]
    assert out.sent == 16 and out.write_errors == 2
    (t1, _, h1), (t2, _, _), (t3, _, _) = Scripted.seen
    assert t2 - t1 >= 0.95  # waited as Retry-After said, beyond the 0.1 s back-off
    assert h1["Authorization"] == "Token tok"


def test_http_413_splits_the_batch(scripted, tmp_path):
    Scripted.script = [("too-large", {})] * 50
    out = make_output(tmp_path, scripted, batch_size=5000)
    out.append(gpu_samples(10))  # 80 lines: split until <= 10 lines per request
    assert out.stop(10)
    assert out.sent == 80 and out.rejected == 0
    assert sum(n for _, n, _ in Scripted.seen if n <= 10) == 80


# --- the buffer's caps and the config's secrets ---------------------------------------------


def test_buffer_cap_evicts_oldest_and_counts_exactly(tmp_path):
    buf = DiskBuffer(tmp_path / "b.db", max_points=2500)
    for batch in range(10):
        buf.append([f"m v={batch * 1000 + i}i {i}".encode() for i in range(1000)])
    assert buf.evicted == 7500 and len(buf) == 2500
    ids, lines = buf.peek(10_000)
    assert [int(x.split(b"=")[1].split(b"i")[0]) for x in lines] == list(range(7500, 10000))
    # the batch being sent is never evicted; the buffer exceeds its cap by at most that batch
    buf.append([b"m v=1i 1"] * 1000)
    assert set(ids) <= {r[0] for r in buf._conn.execute("SELECT id FROM chunks")}
    assert len(buf) == 3500 and buf.evicted == 7500
    buf.append([b"m v=2i 2"] * 2000)  # now 3000 outside the flight: 500 of the oldest of those go
    assert buf.evicted == 8000
    buf.release()  # the send failed: the caps apply to everything again, oldest first
    assert len(buf) == 2500 and buf.evicted == 10500
    ids, lines = buf.peek(10_000)
    assert lines == [b"m v=1i 1"] * 500 + [b"m v=2i 2"] * 2000
    assert buf.remove(ids) == 2500 and len(buf) == 0
    buf.append([b"m v=3i 3"] * 7)
    buf.close()
    # survives a reopen with its content
    assert len(DiskBuffer(tmp_path / "b.db")) == 7


def test_buffer_byte_cap(tmp_path):
    buf = DiskBuffer(tmp_path / "b.db", max_bytes=50_000)
    for _ in range(20):
        buf.append([b"x" * 99] * 100)  # 10 kB per append
    assert buf.bytes <= 50_000 and buf.evicted + len(buf) == 2000


def test_secrets_from_credentials_directory_and_env(tmp_path, monkeypatch):
    from agent.secrets import read_secret

    (tmp_path / "influx-token").write_text("abc\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert read_secret("t", file="influx-token") == "abc"
    monkeypatch.setenv("TOK", "xyz")
    assert read_secret("t", env="TOK") == "xyz"
    with pytest.raises(ConfigError, match="cannot read secret file"):
        read_secret("outputs.influxdb[a].token", file=str(tmp_path / "missing"))


def test_output_config_errors(tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text("outputs:\n  influxdb:\n    - name: a\n      api: v1\n      url: http://x:8086\n")
    from agent.config import load_config
    from agent.registry import default_registry
    with pytest.raises(ConfigError, match=r"a.yaml:3: outputs.influxdb\[0\]: api v1 needs database"):
        load_config(p, default_registry())
    p.write_text("outputs:\n  influxdb:\n    - {url: ftp://x, bucket: b}\n")
    with pytest.raises(ConfigError, match=r"outputs.influxdb\[0\].url: 'ftp://x' is not an http:// or https:// URL"):
        load_config(p, default_registry())
    p.write_text("outputs:\n  influxdb:\n    - {url: 'https://x', bucket: b, token: s3cret}\n")
    with pytest.raises(ConfigError, match=r"outputs.influxdb\[0\].token: unknown key"):
        load_config(p, default_registry())


def test_config_show_never_prints_the_token(tmp_path, capsys):
    from agent.cli import main

    (tmp_path / "tok").write_text("very-secret-token")
    p = tmp_path / "a.yaml"
    p.write_text(f"outputs:\n  influxdb:\n    - {{url: 'https://x', bucket: b, token_file: {tmp_path / 'tok'}}}\n")
    assert main(["config", "show", "--json", "-c", str(p)]) == 0
    text = capsys.readouterr().out
    assert "very-secret-token" not in text
    assert json.loads(text)["outputs"]["influxdb"][0]["tls_verify"] is True


def test_dead_influxdb_shows_in_status_and_self_metrics_and_keeps_points(tmp_path, capsys):
    from agent.cli import main
    from agent.outputs.local import query

    from .services import free_port

    registry = Registry(plugins.TARGETS)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = build_config({"agent": {"interval": 1, "hostname": "n1"}, "collectors": {"quick": {}},
                        "outputs": {"influxdb": [{"name": "dead", "api": "v1", "url": url, "database": "d",
                                                  "flush_jitter": 0}]}}, {}, None, registry)
    state = tmp_path / "state"
    asyncio.run(Agent(cfg, state, registry).run(once=True, flush_timeout=2))
    assert main(["status", "--state-dir", str(state)]) == 3
    text = capsys.readouterr().out
    assert "dead" in text and "retrying" in text and "cannot reach" in text
    main(["status", "--json", "--state-dir", str(state)])
    st = json.loads(capsys.readouterr().out)["outputs"]["dead"]
    assert st["buffer_points"] >= 1 and st["written_samples_total"] == 0 and st["state"] == "retrying"
    selfm = query(state / "metrics.db", "agent", tags={"component": "output", "name": "dead"})
    assert "buffer_points" in selfm[-1].fields and "buffer_evicted_points_total" in selfm[-1].fields
    assert len(DiskBuffer(state / "buffer-dead.db")) == st["buffer_points"]  # kept for the next start


def test_a_record_holding_a_newline_stays_one_record_in_the_buffer_and_its_trim(tmp_path):
    buf = DiskBuffer(tmp_path / "b.db", max_points=5)
    recs = [b'm s="one\ntwo"i 1', b"m v=2i 2", b'm s="a\nb\nc" 3', b"m v=4i 4"]
    buf.append(recs)
    ids, lines = buf.peek(100)
    assert lines == recs and len(buf) == 4  # 4 points, not 7 lines
    buf.release()
    buf.append([b'm s="x\ny" 5', b"m v=6i 6"])  # 6 points, cap 5: the oldest one goes, whole
    ids, lines = buf.peek(100)
    assert lines == recs[1:] + [b'm s="x\ny" 5', b"m v=6i 6"] and buf.evicted == 1
    buf.close()
    # a buffer written before lengths were kept still reads, by its newlines
    import sqlite3

    c = sqlite3.connect(tmp_path / "b.db")
    c.execute("UPDATE chunks SET lens=NULL")
    c.commit()
    c.close()
    assert DiskBuffer(tmp_path / "b.db").peek(100)[1][-1] == b"m v=6i 6"


def test_newlines_non_utf8_text_big_integers_and_empty_keys_lose_only_their_field(influxd, tmp_path):
    """Telegraf's and InfluxDB's own encoder cases: a string with a newline is one point; a byte that is not
    UTF-8 (kept by Python as a lone surrogate) drops that field only; an integer past int64 is clamped as
    Telegraf does; an empty field key is dropped; the good fields and the good samples of the same collection
    are all written."""
    from agent.model import Accumulator

    db = new_db(influxd)
    out = make_output(tmp_path, influxd.url, database=db)
    acc = Accumulator(T0, {"host": "n1"})
    acc.add("dev", {"note": "line one\nline two", "v": 1.0}, {"device": "a"})
    acc.add("dev", {"name": "caf\udce9", "v": 2.0}, {"device": "b"})  # b'caf\xe9' read with surrogateescape
    acc.add("dev", {"big": 2**70, "small": -(2**70), "v": 3.0}, {"device": "c"})
    acc.add("dev", {"": 5, "v": 4.0}, {"device": "d", "label": "t\udcffg"})
    samples = acc.close()
    assert acc.invalid_values == 4  # the tag is repaired (U+FFFD), not counted as a field
    out.append(samples)
    assert out.stop(20) and out.rejected == 0
    got = {p["device"]: p for p in influxd.points(db, "dev")}
    assert set(got) == {"a", "b", "c", "d"}
    assert got["a"]["note"] == "line one\nline two" and got["b"]["v"] == 2.0 and got["b"].get("name") is None
    assert got["c"]["big"] == 2**63 - 1 and got["c"]["small"] == -(2**63) and got["d"]["label"] == "t\ufffdg"
    assert out.sent == 4


class V1Query(http.server.BaseHTTPRequestHandler):
    """InfluxDB 1.x's /query answer for one statement (the shape its HTTP API documents)."""

    def do_GET(self):  # noqa: N802
        body = json.dumps({"results": [{"statement_id": 0, "series": [
            {"name": "alerts", "tags": {"host": "n1"}, "columns": ["time", "state"],
             "values": [[1765000000000000000, "firing"]]}]}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_influxql_over_https_verifies_the_server_against_the_configured_ca(tmp_path):
    """The fleet queries (efficiency's rack and facility scopes, alerts --fleet) trust a private PKI through
    tls_ca_file; without it the certificate is refused, never accepted silently."""
    from agent.influxql import InfluxQL, InfluxQLOptions, QueryError

    tls = tls_pair(tmp_path / "pki")
    httpd, url = serve_http(V1Query, tls)
    try:
        series = InfluxQL(InfluxQLOptions(url=url, database="d", tls_ca_file=tls[0])).query("SELECT 1")
        assert series[0]["tags"] == {"host": "n1"} and series[0]["values"][0][1] == "firing"
        with pytest.raises(QueryError, match="CERTIFICATE_VERIFY_FAILED"):
            InfluxQL(InfluxQLOptions(url=url, database="d")).query("SELECT 1")
        assert InfluxQL(InfluxQLOptions(url=url, database="d", tls_verify=False)).query("SELECT 1") == series
    finally:
        httpd.shutdown()
        httpd.server_close()
