"""The core's seams: one publish path, so the agent's own metrics reach the alert engine."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest

from agent.collector import Collector
from agent.model import Kind, Metric
from agent.outputs.running import OK, Result, RunningOutput, Writer

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


RELEASE = threading.Event()


class Odd(Collector):
    """A collector that adds a NaN field every run; instance `slow` also adds after its deadline."""

    kind = "odd"

    def collect(self, acc):
        acc.add("odd", {"value_bytes": float("nan"), "ok_bytes": 1})
        if self.ctx.instance == "slow":
            RELEASE.wait(5)
            acc.add("odd", {"late_bytes": 2})  # the run was abandoned by now


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


def test_what_the_core_counts_it_reports(tmp_path, caplog):
    """Fields dropped as NaN, adds of a run abandoned past its deadline, a rule that cannot be evaluated, a
    hand-off to an output that raises: each is counted in status and in the `agent` measurement."""
    import asyncio
    import logging

    from agent.config import build_config
    from agent.registry import Registry
    from agent.scheduler import Agent

    reg = Registry({"odd": "tests.test_core:Odd"})
    rules = tmp_path / "rules.yaml"
    # `and` with a scalar side parses and raises when evaluated ('and' needs vectors on both sides)
    rules.write_text("groups:\n  - name: t\n    rules:\n      - alert: Broken\n"
                     "        expr: agent.uptime_seconds > 0 and 1\n")
    cfg = build_config({"agent": {"hostname": "t1", "interval": 0.5, "align": False},
                        "alerts": {"default_rules": False, "rules": [str(rules)]},
                        "collectors": {"odd": [{"name": "odd"}, {"name": "slow", "timeout": 0.3}]}},
                       {}, None, reg)
    agent = Agent(cfg, tmp_path / "state", reg)

    class Exploding:
        name = "exploding"

        def start(self): ...
        def append(self, samples): raise OSError("No space left on device")
        def stats(self): return {"last_error": None}
        def flush(self, timeout): return True
        def stop(self, timeout): return True

    agent.pipeline.outputs.append(Exploding())
    caplog.set_level(logging.INFO)

    async def main():
        task = asyncio.create_task(agent.run(duration=2.0, flush_timeout=1))
        await asyncio.sleep(1.0)
        RELEASE.set()
        return await task

    asyncio.run(main())
    st = agent.status()
    assert st["collectors"]["odd"]["invalid_values_total"] >= 2
    assert st["collectors"]["slow"]["late_samples_total"] >= 1
    assert st["alerts"]["rule_errors_total"] >= 2 and st["alerts"]["rules_failing"] == ["Broken"]
    assert caplog.text.count("alert rule Broken cannot be evaluated") == 1
    assert st["pipeline"]["pipeline_spool_errors_total"] >= 2 and st["healthy"] is False
    from agent.cli.status import status_text

    text = status_text({**st, "running": False, "age_seconds": 0.0})
    assert "hand-off errors" in text and "(failing: Broken)" in text
    from agent.outputs.local import query

    stored = query(tmp_path / "state" / "metrics.db", "agent", tags={"component": "pipeline"})
    assert stored and stored[-1].fields["rule_errors_total"] >= 2
    assert stored[-1].fields["pipeline_spool_errors_total"] >= 1
    odd = query(tmp_path / "state" / "metrics.db", "agent", tags={"component": "collector", "name": "odd"})
    assert odd and odd[-1].fields["invalid_values_total"] >= 1


def test_one_ordering_from_the_families_collectors_consume():
    """`consumes` names measurements (families): a consumer comes after every collector declaring one of them,
    in the daemon's first runs and `aifactory collect` alike; a family with several producers waits for all of
    them; a cycle is refused."""
    from types import SimpleNamespace

    from agent.runner import producers, stages

    def runner(kind, emits=(), consumes=()):
        metrics = tuple(Metric(m, "x", Kind.GAUGE, "1", "x") for m in emits)
        return SimpleNamespace(cfg=SimpleNamespace(kind=kind), collector=SimpleNamespace(consumes=consumes,
                                                                                         METRICS=metrics))

    gpu, inf = runner("gpu", ("gpu",)), runner("inference", ("inference",))
    snmp, modbus = runner("snmp", ("pdu", "snmp_device")), runner("modbus", ("pdu", "ups"))
    fac = runner("facility", ("facility",), ("pdu", "ups"))
    eff = runner("efficiency", ("efficiency",), ("gpu", "inference", "facility"))
    order = stages([eff, fac, gpu, inf, snmp, modbus])
    assert [sorted(r.cfg.kind for r in s) for s in order] == [["gpu", "inference", "modbus", "snmp"], ["facility"],
                                                              ["efficiency"]]
    assert sorted(p.cfg.kind for p in producers(fac, [eff, fac, gpu, inf, snmp, modbus])) == ["modbus", "snmp"]
    # consuming a family nobody configured emits is no dependency
    assert [[r.cfg.kind for r in s] for s in stages([eff])] == [["efficiency"]]
    with pytest.raises(ValueError, match="cycle"):
        stages([runner("a", ("a",), ("b",)), runner("b", ("b",), ("a",))])


def test_a_rule_is_evaluated_when_its_series_come_not_on_every_collection(tmp_path):
    from agent.alerts.engine import AlertEngine
    from agent.alerts.rules import load_rules
    from agent.model import Sample

    f = tmp_path / "r.yaml"
    f.write_text("groups:\n  - name: t\n    rules:\n"
                 "      - alert: HostHot\n        expr: host.memory_used_bytes > 10\n"
                 "      - alert: DiskFull\n        expr: storage_mount.used_percent > 90\n")
    engine = AlertEngine(load_rules(f), None)
    host = [Sample("host", {"host": "n1"}, {"memory_used_bytes": 20}, 1_000_000_000)]
    disk = [Sample("storage_mount", {"host": "n1", "mountpoint": "/"}, {"used_percent": 95.0}, 1_000_000_000)]
    other = [Sample("network_interface", {"host": "n1", "interface": "eth0"}, {"up": True}, 1_000_000_000)]
    for batch in (host, other, other, other):
        engine.observe(batch)
        engine.evaluate(now=1.0, touched={s.measurement for s in batch})
    assert engine.stats()["rule_evaluations_total"] == 1  # HostHot once; DiskFull never (its series did not come)
    assert {a["alertname"] for a in engine.alerts.values()} == {"HostHot"}
    engine.observe(disk)
    engine.evaluate(now=2.0)  # a full pass: every rule
    assert engine.stats()["rule_evaluations_total"] == 3
    assert {a["alertname"] for a in engine.alerts.values()} == {"HostHot", "DiskFull"}


def test_two_connections_send_two_batches_at_once_and_lose_or_repeat_nothing(tmp_path):
    """outputs.influxdb[].connections: each sender thread takes its own chunks from the disk buffer."""
    import http.server

    from agent.outputs.influxdb import InfluxOutput, InfluxOutputOptions

    from .test_influxdb import gpu_samples

    got: list[bytes] = []
    active = [0, 0]  # now, most at once
    lock = threading.Lock()

    class Slow(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                active[0] += 1
                active[1] = max(active[1], active[0])
            time.sleep(0.3)
            with lock:
                active[0] -= 1
                got.extend(line for line in body.split(b"\n") if line)
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    httpd, url = serve_http(Slow)
    try:
        out = InfluxOutput(InfluxOutputOptions(name="i", api="v1", url=url, database="d", gzip=False,
                                               batch_size=1000, flush_interval=0.05, flush_jitter=0),
                           tmp_path)
        samples = gpu_samples(500)  # 4000 points: 4 batches
        out.append(samples)
        out.start()
        t0 = time.monotonic()
        assert out.flush(30)
        took = time.monotonic() - t0
        assert out.stop(5)
    finally:
        httpd.shutdown()
        httpd.server_close()
    from agent.model import to_line

    assert sorted(got) == sorted(to_line(s).encode() for s in samples)  # each point once
    assert active[1] == 2 and took < 4 * 0.3  # two requests in flight at once
    assert out.stats()["buffer_points"] == 0 and out.sent == 4000


def test_chunks_compressed_at_append_are_sent_as_one_gzip_stream(tmp_path):
    """DiskBuffer(compress=True): a batch is the concatenation of gzip members, one body of whole lines; a
    chunk trimmed by the cap, or from a buffer written before, has none and the batch goes uncompressed."""
    import gzip

    from agent.outputs.buffer import DiskBuffer

    buf = DiskBuffer(tmp_path / "b.db", compress=True)
    buf.append([b"m,h=a v=1i 1", b"m,h=a v=2i 2"])
    buf.append([b"m,h=b v=3i 3"])
    ids, lines, packed = buf.peek_packed(100)
    assert len(ids) == 2 and gzip.decompress(packed) == b"\n".join(lines) + b"\n"
    buf.release(ids)
    plain = DiskBuffer(tmp_path / "old.db")  # no compression at append: nothing packed
    plain.append([b"m v=1i 1"])
    assert plain.peek_packed(10)[2] is None
    plain.close()
    again = DiskBuffer(tmp_path / "old.db", compress=True)  # reopened compressing: the old chunk has none
    again.append([b"m v=2i 2"])
    ids, lines, packed = again.peek_packed(10)
    assert lines == [b"m v=1i 1", b"m v=2i 2"] and packed is None
    buf.close()
    again.close()


class Scripted(Writer):
    """A writer for the shared sender: writes what it gets, answering from a script (a Result per write, then
    ok); pipelined or not. `on_write` runs inside each write, `on_pack` inside pack."""

    def __init__(self, pipelined: bool, answers=(), on_write=None, on_pack=None) -> None:
        self.pipelined = pipelined
        self.got: list[bytes] = []  # every body written, in order, refused ones too
        self.packed: list[bytes] = []
        self.answers = list(answers)
        self.on_write, self.on_pack = on_write, on_pack
        self.active = self.most = 0

    def encode(self, samples):
        return samples

    def pack(self, records):
        body = b"|".join(records)
        self.packed.append(body)
        if self.on_pack:
            self.on_pack(self)
        return body

    def write(self, records):
        return self.write_packed(b"|".join(records))

    def write_packed(self, body):
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            if self.on_write:
                self.on_write(self)
            self.got.append(body)
            return self.answers.pop(0) if self.answers else OK
        finally:
            self.active -= 1


def chunked(tmp_path, chunks: int, per: int = 10):
    """A disk buffer holding `chunks` chunks of `per` records each, b"0".."N" in order."""
    from agent.outputs.buffer import DiskBuffer

    buf = DiskBuffer(tmp_path / "b.db")
    for c in range(chunks):
        buf.append([str(c * per + i).encode() for i in range(per)])
    return buf


def bodies(chunks: range, per: int = 10) -> list[bytes]:
    return [b"|".join(str(c * per + i).encode() for i in range(per)) for c in chunks]


def drained(out, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(out.buffer):
        time.sleep(0.01)


def test_a_pipelined_sender_packs_the_next_batch_while_one_is_in_flight_one_write_at_a_time(tmp_path):
    """The helper reads and packs batch 2 while batch 1 is being written; writes never overlap and land in the
    buffer's order, each once."""
    second_packed = threading.Event()
    seen_in_flight = []

    def on_pack(w):
        if len(w.packed) == 2:
            second_packed.set()

    def on_write(w):
        if not w.got:  # the first write waits (at most 10 s) for the helper to have packed the next batch
            seen_in_flight.append(second_packed.wait(10))

    w = Scripted(True, on_write=on_write, on_pack=on_pack)
    out = RunningOutput("t", w, chunked(tmp_path, 5), batch_size=10, flush_interval=0.05)
    out.start()
    drained(out)
    assert out.stop(5)
    assert seen_in_flight == [True]
    assert w.got == bodies(range(5)) and w.most == 1
    assert out.sent == 50 and len(out.buffer) == 0


@pytest.mark.parametrize("pipelined", [True, False])
def test_a_retried_batch_and_the_one_made_ready_behind_it_go_back_in_order(tmp_path, pipelined):
    """A 5xx on batch 2 hands back batch 2 and the batch 3 the helper made ready meanwhile: both are sent
    again, in order; nothing stays in flight for ever, nothing is lost or repeated past the retry."""
    w = Scripted(pipelined, answers=[OK, Result("retry", "HTTP 503"), OK])
    out = RunningOutput("t", w, chunked(tmp_path, 5), batch_size=10, flush_interval=0.05, retry_base=0.01,
                        retry_max=0.05)
    out.start()
    drained(out)
    assert out.stop(5)
    b = bodies(range(5))
    assert w.got == [b[0], b[1], b[1], b[2], b[3], b[4]]
    assert out.write_errors == 1 and out.sent == 50 and out.state == "ok" and len(out.buffer) == 0


@pytest.mark.parametrize("pipelined", [True, False])
def test_a_batch_whose_delete_fails_goes_back_to_the_buffer_for_any_sender(tmp_path, pipelined, caplog):
    """A sender that fails after taking chunks (the delete refused: a full disk) hands them back: the other
    sender, or itself, sends them again; nothing stays in flight for ever. A pipelined sender deletes in its
    helper thread: the failure reaches the sender all the same."""
    buf = chunked(tmp_path, 3, per=1)
    real_remove, calls = buf.remove, []

    def flaky_remove(ids):
        calls.append(ids)
        if len(calls) == 1:
            raise __import__("sqlite3").OperationalError("database or disk is full")
        return real_remove(ids)

    buf.remove = flaky_remove
    w = Scripted(pipelined)
    out = RunningOutput("t", w, buf, batch_size=1, flush_interval=0.05)
    out.start()
    drained(out)
    assert out.stop(5)
    assert len(buf) == 0 and w.got.count(b"0") == 2  # sent again after the failed delete, then forgotten
    assert sorted(set(w.got)) == [b"0", b"1", b"2"]
    assert "output t: disk buffer: OperationalError: database or disk is full" in caplog.text


def test_an_output_gets_the_catalogue_and_a_figure_it_does_not_declare_is_refused_at_build(tmp_path):
    from agent.config import build_config
    from agent.model import Kind
    from agent.registry import Registry
    from agent.scheduler import Agent

    from . import plugins

    registry = Registry({}, plugins.OUTPUTS)
    plugins.ProbeWriter.CATALOGUES.clear()
    Agent(build_config({"outputs": {"probe": [{"name": "p"}]}}, {}, None, registry), tmp_path / "a", registry)
    (cat,) = plugins.ProbeWriter.CATALOGUES
    m = cat.get("agent", "runs_total")
    assert m is not None and m.kind is Kind.COUNTER and m.unit == "count"  # kind and unit, for Prometheus
    cfg = build_config({"outputs": {"probe": [{"name": "p", "extra_stat": True}]}}, {}, None, registry)
    with pytest.raises(RuntimeError, match="output probe reports figures not declared in agent/selfmetrics.py: "
                                           "surprise_total"):
        Agent(cfg, tmp_path / "b", registry)


def test_every_collector_that_reads_the_bus_declares_what_it_reads():
    """A collector's bus reads are ordered only if declared: each measurement a built-in collector reads from
    the bus, another collector's, is one it lists in `consumes`."""
    import ast
    import inspect

    from agent.registry import default_registry

    reg = default_registry()
    owner = {m.measurement: kind for kind in reg.names() if reg.get(kind).cls is not None
             for m in reg.get(kind).cls.METRICS}
    missing = []
    for kind in reg.names():
        cls = reg.get(kind).cls
        if cls is None:
            continue
        src = inspect.getsource(inspect.getmodule(cls))
        for node in ast.walk(ast.parse(src)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "latest"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                read = node.args[0].value
                if owner.get(read) not in (None, kind) and read not in cls.consumes:
                    missing.append((kind, read, owner[read]))
    assert missing == []


@pytest.mark.parametrize("unknown,events,said", [
    (None, ["ok", "ok"], []),  # well from the start: nothing to say
    (None, ["a", "a", "b", "ok", "ok", "a"], ["failed a", "failed b", "recovered", "failed a"]),
    ("not polled yet", ["ok", "ok"], ["recovered"]),  # the first success is said once
    ("not polled yet", ["a", "ok"], ["failed a", "recovered"]),
])
def test_a_latch_says_each_new_cause_and_each_recovery_once(unknown, events, said, caplog):
    import logging

    from agent.logonce import Latch

    latch = Latch(logging.getLogger("latch-test"), unknown=unknown)
    with caplog.at_level(logging.INFO, logger="latch-test"):
        for e in events:
            if e == "ok":
                latch.recovered("recovered")
            else:
                latch.failed(e, "failed %s", e)
    assert [r.getMessage() for r in caplog.records] == said
