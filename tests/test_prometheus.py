"""Prometheus: the names the catalogue's metrics take, the /metrics page (text format and OpenMetrics), and the
endpoint against promtool and a real Prometheus."""

from __future__ import annotations

import base64
import json
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from agent.model import Catalogue, Kind, Metric, Sample
from agent.outputs.prometheus import Page, PrometheusEndpoint, PrometheusOptions
from agent.prom import RESERVED_SUFFIXES, prom_metric
from agent.registry import default_registry

S = 10**9
CAT = default_registry().catalogue()


def catalogue(*metrics: Metric) -> Catalogue:
    c = Catalogue()
    c.declare("test", metrics)
    return c


CASES = [  # (measurement, field, kind, unit) -> (sample name, type, scale)
    (("gpu", "power_watts", Kind.GAUGE, "watts"), ("aifactory_gpu_power_watts", "gauge", 1.0)),
    (("gpu", "energy_joules_total", Kind.COUNTER, "joules"), ("aifactory_gpu_energy_joules_total", "counter", 1.0)),
    (("gpu", "utilization_percent", Kind.GAUGE, "percent"), ("aifactory_gpu_utilization_ratio", "gauge", 0.01)),
    (("ups", "output_source", Kind.INFO, "info"), ("aifactory_ups_output_source_info", "info", 1.0)),
    (("gpu", "lost", Kind.GAUGE, "bool"), ("aifactory_gpu_lost", "gauge", 1.0)),
    (("host", "cpu_count", Kind.GAUGE, "count"), ("aifactory_host_cpus", "gauge", 1.0)),
]


@pytest.mark.parametrize("decl,want", CASES, ids=[c[0][1] for c in CASES])
def test_a_field_is_named_by_prometheus_conventions(decl, want):
    m = Metric(decl[0], decl[1], decl[2], decl[3], "what it is")
    p = prom_metric(decl[0], decl[1], m)
    assert (p.name, p.type, p.scale) == want
    assert p.help.startswith("what it is")


def test_every_catalogue_metric_has_one_prometheus_name_with_its_unit_once():
    seen: dict[str, tuple] = {}
    for m in CAT:
        p = prom_metric(m.measurement, m.field, m)
        assert p.name.startswith("aifactory_") and p.help
        assert not p.family.endswith(RESERVED_SUFFIXES), p.name  # a histogram's or summary's suffix: renamed
        assert p.name not in seen or seen[p.name] == (m.measurement, m.field), (p.name, seen.get(p.name))
        seen[p.name] = (m.measurement, m.field)
        if p.unit:
            assert p.family.endswith("_" + p.unit) and p.family.count("_" + p.unit) == 1, p.name
        if m.kind == Kind.COUNTER:
            assert p.name.endswith("_total") and not p.family.endswith("_total")


def page(*samples: Sample, **kw) -> Page:
    pg = Page(kw.pop("cat", CAT), kw.pop("max_series", 1000), kw.pop("max_labels", 30), kw.pop("excluded", set()))
    pg.add(list(samples))
    return pg


def gpu(ts: int, gpu_id: str = "0", **fields) -> Sample:
    return Sample("gpu", {"host": "n1", "gpu": gpu_id, "uuid": f"GPU-{gpu_id}"},
                  fields or {"power_watts": 612.5, "utilization_percent": 87.0, "energy_joules_total": 123456.0,
                             "lost": False, "compute_mode": "Default"}, ts)


def test_the_page_has_one_family_each_with_help_type_and_values_converted():
    text = page(gpu(1 * S), gpu(1 * S, "1")).render(False).decode()
    assert "# TYPE aifactory_gpu_energy_joules_total counter\n" in text
    assert 'aifactory_gpu_energy_joules_total{gpu="0",host="n1",uuid="GPU-0"} 123456.0\n' in text
    assert 'aifactory_gpu_utilization_ratio{gpu="1",host="n1",uuid="GPU-1"} 0.87\n' in text
    assert 'aifactory_gpu_lost{gpu="0",host="n1",uuid="GPU-0"} 0.0\n' in text
    assert 'aifactory_gpu_compute_mode_info{compute_mode="Default",gpu="0",host="n1",uuid="GPU-0"} 1.0\n' in text
    assert text.count("# TYPE aifactory_gpu_power_watts gauge") == 1


def test_openmetrics_answer_parses_with_prometheus_clients_parser():
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    text = page(gpu(1 * S), gpu(1 * S, "1")).render(True).decode()
    assert text.endswith("# EOF\n")
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    energy = fams["aifactory_gpu_energy_joules"]
    assert energy.type == "counter" and energy.unit == "joules"
    assert {s.name for s in energy.samples} == {"aifactory_gpu_energy_joules_total"}
    assert fams["aifactory_gpu_compute_mode"].type == "info"
    assert fams["aifactory_gpu_utilization_ratio"].unit == "ratio"
    assert sorted(s.value for s in fams["aifactory_gpu_power_watts"].samples) == [612.5, 612.5]


def test_a_series_not_refreshed_for_three_intervals_leaves_the_page():
    pg = page()
    for t in range(0, 12, 2):  # gpu 1 every 2 s throughout; gpu 0 only until 2 s
        pg.add([gpu(t * S, "1")] + ([gpu(t * S, "0")] if t <= 2 else []))
    text = pg.render(False).decode()
    assert 'gpu="1"' in text and 'gpu="0"' not in text
    assert pg.expired == 5  # gpu 0's five fields


def test_the_page_is_bounded_in_series_and_labels_and_says_so():
    pg = page(gpu(S, "0"), gpu(S, "1"), max_series=7)
    assert pg.count == 7 and pg.refused == 3
    wide = Sample("gpu", {f"t{i}": "x" for i in range(40)}, {"power_watts": 1.0}, S)
    pg2 = page(wide, max_labels=30)
    assert pg2.count == 0 and pg2.too_many_labels == 1


def test_per_process_and_per_job_series_only_when_asked_for():
    proc = Sample("gpu_process", {"host": "n1", "gpu": "0", "pid": "42"}, {"memory_used_bytes": 1e9}, S)
    ep = PrometheusEndpoint(PrometheusOptions(), CAT)
    ep.append([proc, gpu(S)])
    assert b"gpu_process" not in ep.page.render(False)
    ep2 = PrometheusEndpoint(PrometheusOptions(include=["processes"]), CAT)
    ep2.append([proc])
    assert b'aifactory_gpu_process_memory_used_bytes{gpu="0",host="n1",pid="42"} 1000000000.0' in ep2.page.render(False)


def test_label_values_are_escaped_and_tag_names_made_valid():
    s = Sample("gpu", {"host": 'a"b\\c\nd', "model.name": "x", "__name__": "y"}, {"power_watts": 1.0}, S)
    text = page(s).render(False).decode()
    assert 'host="a\\"b\\\\c\\nd"' in text and 'model_name="x"' in text and 'tag__name__="y"' in text


def scrape(url: str, accept: str = "", auth: tuple[str, str] | None = None, context=None):
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    with urllib.request.urlopen(req, timeout=5, context=context) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def test_the_endpoint_negotiates_the_format_and_listens_on_loopback_by_default(tmp_path):
    from .services import free_port

    assert PrometheusOptions().listen.startswith("127.0.0.1:")
    port = free_port()
    ep = PrometheusEndpoint(PrometheusOptions(listen=f"127.0.0.1:{port}"), CAT)
    ep.start()
    try:
        ep.append([gpu(S)])
        status, ctype, body = scrape(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4") and "# EOF" not in body
        status, ctype, body = scrape(f"http://127.0.0.1:{port}/metrics",
                                     "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
        assert ctype.startswith("application/openmetrics-text; version=1.0.0") and body.endswith("# EOF\n")
        assert ep.stats()["scrapes_total"] == 2 and ep.stats()["exposed_series"] == 5
    finally:
        ep.stop(1)


def test_basic_auth_and_tls_from_a_prometheus_web_config_file(tmp_path):
    import ssl

    import bcrypt

    from .services import free_port, tls_pair

    ca, cert, key = tls_pair(tmp_path / "tls")
    web = tmp_path / "web.yml"
    web.write_text(json.dumps({"tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
                               "basic_auth_users": {"prom": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()}}))
    port = free_port()
    ep = PrometheusEndpoint(PrometheusOptions(listen=f"127.0.0.1:{port}", web_config_file=web), CAT)
    ep.start()
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        ep.append([gpu(S)])
        status, _, body = scrape(f"https://127.0.0.1:{port}/metrics", auth=("prom", "s3cret"), context=ctx)
        assert status == 200 and "aifactory_gpu_power_watts" in body
        with pytest.raises(urllib.error.HTTPError) as e:
            scrape(f"https://127.0.0.1:{port}/metrics", auth=("prom", "wrong"), context=ctx)
        assert e.value.code == 401 and ep.stats()["unauthorized_requests_total"] == 1
    finally:
        ep.stop(1)


def test_a_plain_password_in_the_web_config_is_refused(tmp_path):
    from pydantic import ValidationError

    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users: {prom: s3cret}\n")
    with pytest.raises(ValidationError, match="not a bcrypt hash"):
        PrometheusOptions(web_config_file=web)


def test_a_port_already_taken_fails_this_output_alone():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    ep = PrometheusEndpoint(PrometheusOptions(listen=f"127.0.0.1:{s.getsockname()[1]}"), CAT)
    try:
        ep.start()
        ep.append([gpu(S)])  # still keeps the page; nothing raises into the pipeline
        st = ep.stats()
        assert st["state"] == "failed" and "cannot listen" in st["last_error"]
    finally:
        s.close()
        ep.stop(1)


def test_the_endpoint_is_off_until_configured():
    from agent.config import build_config

    reg = default_registry()
    assert not build_config({}, {}, None, reg).settings.outputs.prometheus.enabled
    on = build_config({"outputs": {"prometheus": {"listen": "127.0.0.1:9999"}}}, {}, None, reg)
    assert on.settings.outputs.prometheus.enabled
    off = build_config({"outputs": {"prometheus": {"listen": "127.0.0.1:9999", "enabled": False}}}, {}, None, reg)
    assert not off.settings.outputs.prometheus.enabled


# --- a running agent with every collector on recorded trees and fakes ------------------------------------------


def fleet_agent(tmp_path, snmpsim, modbus, port: int, extra_outputs: dict | None = None):
    """An in-process agent at 1 s with every collector fed: a fake H200 and a GB200 (its power envelope: memory
    scope, workload profiles, smoothing) with processes and the fast power sampler, snmpsim PDUs and a UPS,
    a vLLM page, a Redfish BMC (DMTF mockup), a Modbus meter, CDU and leak panel, and the /metrics endpoint
    with per-process and per-job series."""
    from agent.config import build_config
    from agent.registry import Registry
    from agent.scheduler import Agent
    from collectors import REGISTRY

    from .fakes.nvml import fleet
    from .services import serve_bmc, serve_http, tls_pair
    from .test_measurement import TestGpu
    from .test_modbus import profile_image

    nvml = fleet("H200-SXM", "GB200")
    for g in nvml.gpus:
        g.processes = [(4000 + g.index, 40 * 2**30)]
    TestGpu.nvml = nvml
    page = (Path(__file__).parent / "fixtures" / "inference" / "vllm.txt").read_text()

    class Vllm(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = page.replace("{PROMPT}", "3000").replace("{GEN}", "1000").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    httpd, url = serve_http(Vllm)
    tls = tls_pair(tmp_path / "tls")
    bmc_srv, bmc_url, _ = serve_bmc(Path(__file__).parent / "fixtures" / "redfish" / "rackmount", tls)
    (tmp_path / "bmc-pw").write_text("s3cret\n")
    meter, _ = profile_image("schneider-pm5300")
    cdu = {"hr": {0: 300, 1: 400, 2: 3000, 3: 2000, 4: 1500, 5: 60, 6: 0, 7: 20000, 8: 0xFFFF, 9: 0xFFFF, 10: 0}}
    srv = modbus({1: meter, 2: cdu, 3: {"ir": {0: 1, 1: 14, 2: 0}}})
    registry = Registry({**REGISTRY, "gpu": "tests.test_measurement:TestGpu"})
    snmp = [{"name": "pdu-a", "host": "127.0.0.1", "port": snmpsim.port, "community": "apc-rpdu2", "role": "it"},
            {"name": "ups-1", "host": "127.0.0.1", "port": snmpsim.port, "community": "apc-smt750",
             "role": "facility_total"}]
    mb = [{"name": "meter", "host": "127.0.0.1", "port": srv.port, "unit": 1, "profile": "schneider-pm5300"},
          {"name": "cdu", "host": "127.0.0.1", "port": srv.port, "unit": 2, "profile": "generic-cdu",
           "role": "cooling"},
          {"name": "leaks", "host": "127.0.0.1", "port": srv.port, "unit": 3, "profile": "rle-ld5000"}]
    cfg = build_config({
        "agent": {"hostname": "n1", "interval": 1.0},
        "tags": {"site": "lab", "rack": "r1"},
        "collectors": {"storage": {"smart": "off"},
                       "gpu": {"xid_events": False, "power_sampling": True, "power_sample_hz": 20},
                       "snmp": {"devices": snmp},
                       "modbus": {"devices": mb}, "efficiency": {"rapl": False},
                       "jobs": {"slurm": "off", "kubernetes": "off"},
                       "redfish": {"targets": [{"name": "bmc", "url": bmc_url, "user": "monitor",
                                                "password_file": str(tmp_path / "bmc-pw"), "ca_file": str(tls[0])}]},
                       "inference": {"discover": False, "endpoints": [{"url": url + "/metrics", "gpus": [0, 1]}]}},
        "outputs": {"local": {"enabled": False},
                    "prometheus": {"listen": f"127.0.0.1:{port}", "include": ["processes", "jobs"]},
                    **(extra_outputs or {})}}, {}, None, registry)
    return Agent(cfg, tmp_path / "state", registry), (httpd, bmc_srv)


def run_and_scrape(agent, port: int, seconds: float, at: float) -> tuple[str, str]:
    import asyncio

    async def go():
        task = asyncio.create_task(agent.run(duration=seconds))
        await asyncio.sleep(at)
        text = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
        om = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics", "application/openmetrics-text")
        await task
        return text[2], om[2]

    return asyncio.run(go())


@pytest.mark.services
def test_promtool_passes_a_scrape_of_an_agent_running_every_collector(tmp_path, snmpsim, modbus):
    import shutil
    import subprocess

    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    from .services import free_port, need

    promtool = need("promtool", "prometheus")
    port = free_port()
    agent, servers = fleet_agent(tmp_path, snmpsim, modbus, port)
    try:
        text, om = run_and_scrape(agent, port, 6.0, 4.5)
    finally:
        for s in servers:
            s.shutdown()
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    fams = {f.name: f for f in text_string_to_metric_families(om)}
    prefixes = {n.split("_")[1] for n in fams}
    for m in ("gpu", "host", "storage", "network", "pdu", "ups", "meter", "cooling", "leak", "bmc", "inference",
              "agent", "modbus", "snmp", "redfish"):
        assert m in prefixes, (m, sorted(prefixes))
    assert "aifactory_gpu_process_memory_used_bytes" in fams  # asked for
    assert fams["aifactory_gpu_energy_joules"].type == "counter"
    # the GB200's envelope and the sampler's rows: a gauge per figure, the profiles as an info metric
    for name in ("aifactory_gpu_memory_power_watts", "aifactory_gpu_power_smoothing_ramp_up_watts_per_second",
                 "aifactory_gpu_power_swing_watts", "aifactory_gpu_node_power_swing_watts"):
        assert fams[name].type == "gauge" and fams[name].samples, name
    profiles = [s for f in fams.values() if f.type == "info" for s in f.samples
                if "power_profiles_enforced" in s.labels]
    assert profiles and profiles[0].labels["power_profiles_enforced"] == "llm_inference,sync_balanced"
    series = sum(len(f.samples) for f in fams.values())
    assert series == sum(1 for line in text.splitlines() if line and not line.startswith("#")) > 300
    assert max(len(s.labels) for f in fams.values() for s in f.samples) < 30
    assert shutil.which("promtool")


@pytest.mark.services
def test_a_real_prometheus_scrapes_the_agent_and_reads_back_what_it_served(tmp_path, snmpsim, modbus):
    import time

    from .services import Prometheus, free_port

    port = free_port()
    prom = Prometheus(tmp_path / "prom", scrape=[f"127.0.0.1:{port}"]).start()
    agent, servers = fleet_agent(tmp_path, snmpsim, modbus, port)
    try:
        text, _ = run_and_scrape(agent, port, 8.0, 7.0)
        time.sleep(1.5)  # one more scrape interval for the last scrape to be queryable
        served = {}
        for line in text.splitlines():
            if line.startswith(("aifactory_host_cpus", "aifactory_meter_power_watts", "aifactory_gpu_power_watts")):
                served[line.rsplit(" ", 1)[0]] = float(line.rsplit(" ", 1)[1])
        assert len(served) >= 4
        for q, want_n in (("aifactory_host_cpus", 1), ("aifactory_gpu_power_watts", 2),
                          ("aifactory_meter_power_watts", None)):
            res = prom.query(f"last_over_time({q}[30s])")
            assert res and (want_n is None or len(res) == want_n), (q, res)
            for r in res:
                labels = {k: v for k, v in r["metric"].items() if k not in ("__name__", "job", "instance")}
                key = q + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
                assert float(r["value"][1]) == pytest.approx(served[key]), key
        up = prom.query('up{job="aifactory"}')
        assert up and up[0]["value"][1] == "1"
    finally:
        for s in servers:
            s.shutdown()
        prom.stop()


# --- remote write ----------------------------------------------------------------------------------------------


def decode_body(body: bytes) -> list[tuple[dict, list[tuple[float, int]]]]:
    import cramjam

    from agent.outputs.remote_write import write_request

    wr = write_request().FromString(bytes(cramjam.snappy.decompress_raw(body)))
    return [({lb.name: lb.value for lb in ts.labels}, [(s.value, s.timestamp) for s in ts.samples])
            for ts in wr.timeseries]


def receiver(answers: list[int]):
    """A remote-write receiver on loopback answering the given statuses in turn (then 204): every request's
    headers and decoded series kept."""
    from .services import serve_http

    got: list[dict] = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = answers.pop(0) if answers else 204
            got.append({"headers": dict(self.headers), "series": decode_body(body), "status": status})
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv, url = serve_http(H)
    return srv, url, got


def rw_output(tmp_path, url, **kw):
    from agent.outputs.remote_write import RemoteWriteOptions, RemoteWriteOutput

    opts = RemoteWriteOptions(url=url + "/api/v1/write", flush_interval=0.05, retry_max=0.2, **kw)
    out = RemoteWriteOutput(opts, tmp_path, CAT)
    out.start()
    return out


def drain(out, deadline: float = 20.0) -> bool:
    """Wait until the output's buffer is empty (retries included): flush() alone gives up while it retries."""
    import time

    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if out.stats()["buffer_points"] == 0 and out.flush(0.5):
            return True
        time.sleep(0.05)
    return False


def test_remote_write_sends_snappy_protobuf_with_the_specs_headers_and_names(tmp_path):
    srv, url, got = receiver([])
    out = rw_output(tmp_path, url)
    try:
        out.append([gpu(1_700_000_000_123_456_789), gpu(1_700_000_001_000_000_000)])
        assert out.flush(10)
    finally:
        out.stop(2)
        srv.shutdown()
    h = got[0]["headers"]
    assert h["Content-Encoding"] == "snappy" and h["Content-Type"] == "application/x-protobuf"
    assert h["X-Prometheus-Remote-Write-Version"] == "0.1.0" and h["User-Agent"].startswith("aifactory-agent/")
    series = [s for r in got for s in r["series"]]
    by: dict[tuple, list[int]] = {}
    for lbl, samples in series:
        for v, ts in samples:
            by.setdefault((lbl["__name__"], v), []).append(ts)
    assert by[("aifactory_gpu_power_watts", 612.5)] == [1_700_000_000_123, 1_700_000_001_000]  # ms
    assert ("aifactory_gpu_utilization_ratio", 0.87) in by
    info = [lbl for lbl, _ in series if lbl["__name__"] == "aifactory_gpu_compute_mode_info"]
    assert info and info[0]["compute_mode"] == "Default" and info[0]["gpu"] == "0"
    assert all(list(lbl) == sorted(lbl) for lbl, _ in series)  # labels sorted by name, as the spec asks


def test_remote_write_retries_5xx_and_429_and_drops_what_a_4xx_refuses(tmp_path):
    srv, url, got = receiver([503, 429, 204, 400, 400])
    out = rw_output(tmp_path, url, batch_size=1)
    try:
        out.append([gpu(1 * S, "0")])
        assert drain(out)
        out.append([gpu(2 * S, "1")])  # refused twice: a batch of one is dropped, counted
        assert drain(out)
        st = out.stats()
    finally:
        out.stop(2)
        srv.shutdown()
    assert [r["status"] for r in got][:4] == [503, 429, 204, 400]
    delivered = [r for r in got if r["status"] == 204]
    assert delivered and {lbl["gpu"] for r in delivered for lbl, _ in r["series"]} == {"0"}
    assert st["rejected_points_total"] == 1 and st["buffer_points"] == 0


def test_remote_write_keeps_each_series_in_time_order_across_a_retry(tmp_path):
    srv, url, got = receiver([500, 500])
    out = rw_output(tmp_path, url, batch_size=2)
    try:
        out.append([gpu(t * S) for t in range(1, 7)])
        assert drain(out)
    finally:
        out.stop(2)
        srv.shutdown()
    seen = [ts for r in got if r["status"] == 204 for lbl, samples in r["series"]
            if lbl["__name__"] == "aifactory_gpu_power_watts" for _, ts in samples]
    assert seen == sorted(seen) == [t * 1000 for t in range(1, 7)]


def collected(path: Path, measurement: str, field: str) -> dict[tuple, list[tuple[int, float]]]:
    """What the agent collected, from its file output (JSON lines): series (sorted tags) -> [(ms, value)]."""
    out: dict[tuple, list[tuple[int, float]]] = {}
    for f in sorted(path.parent.glob(path.name + "*")):
        for line in f.read_text().splitlines():
            d = json.loads(line)
            if d["measurement"] == measurement and field in d["fields"]:
                v = d["fields"][field]
                key = tuple(sorted((k, v2) for k, v2 in d["tags"].items() if v2 != ""))
                out.setdefault(key, []).append((d["timestamp_ns"] // 1_000_000, float(v)))
    return out


def host_agent(tmp_path, outputs: dict):
    from agent.config import build_config
    from agent.registry import default_registry as reg
    from agent.scheduler import Agent

    cfg = build_config({"agent": {"hostname": "n1", "interval": 1.0},
                        "collectors": {"storage": {"enabled": False}, "network": {"enabled": False},
                                       "gpu": {"enabled": False}, "inference": {"enabled": False},
                                       "efficiency": {"enabled": False}, "jobs": {"enabled": False}},
                        "outputs": {"local": {"enabled": False},
                                    "file": [{"name": "truth", "path": str(tmp_path / "truth.jsonl"), "format": "json",
                                              "flush_interval": 0.2}],
                                    **outputs}}, {}, None, reg())
    return Agent(cfg, tmp_path / "state", reg())


def prometheus_samples(prom, name: str, end: float) -> dict[tuple, list[tuple[int, float]]]:
    res = prom.query(f"{name}[10m]", at=end)
    return {tuple(sorted((k, v) for k, v in r["metric"].items() if k != "__name__")):
            [(int(round(float(t) * 1000)), float(v)) for t, v in r["values"]] for r in res}


@pytest.mark.services
def test_remote_write_into_prometheus_and_victoriametrics_reads_back_what_was_collected(tmp_path, victoria):
    import asyncio
    import time

    from .services import Prometheus

    prom = Prometheus(tmp_path / "prom", remote_write_receiver=True).start()
    try:
        agent = host_agent(tmp_path, {"remote_write": [
            {"name": "prom", "url": prom.url + "/api/v1/write", "flush_interval": 0.5},
            {"name": "vm", "url": victoria.url + "/api/v1/write", "flush_interval": 0.5}]})
        assert asyncio.run(agent.run(duration=6.0)) == 0
        end = time.time() + 1
        truth = collected(tmp_path / "truth.jsonl", "host", "memory_used_bytes")
        (series, points), = truth.items()
        assert len(points) >= 4
        got = prometheus_samples(prom, "aifactory_host_memory_used_bytes", end)
        assert got == {series: points}
        vm = victoria.export('aifactory_host_memory_used_bytes{host="n1"}')
        assert len(vm) == 1 and vm[0]["metric"]["host"] == "n1"
        assert sorted(zip(vm[0]["timestamps"], vm[0]["values"])) == points
        # a percentage arrives as a ratio, a counter with _total
        ratio = prometheus_samples(prom, "aifactory_host_memory_used_ratio", end)
        pct = collected(tmp_path / "truth.jsonl", "host", "memory_used_percent")
        assert {k: [(t, round(v, 9)) for t, v in p] for k, p in ratio.items()} == {
            k: [(t, round(v / 100, 9)) for t, v in p] for k, p in pct.items()}
    finally:
        prom.stop()


@pytest.mark.services
def test_a_receiver_outage_of_a_minute_loses_nothing(tmp_path):
    import asyncio
    import threading
    import time

    from .services import Prometheus

    prom = Prometheus(tmp_path / "prom", remote_write_receiver=True).start()
    port = prom.port

    def outage():  # the receiver goes away for a minute, then comes back on the same port and TSDB
        time.sleep(3)
        prom.stop()
        time.sleep(60)
        prom.port = port
        prom.start()

    t = threading.Thread(target=outage)
    try:
        agent = host_agent(tmp_path, {"remote_write": [
            {"name": "prom", "url": f"http://127.0.0.1:{port}/api/v1/write", "flush_interval": 0.5,
             "retry_max": 2.0}]})
        t.start()
        assert asyncio.run(agent.run(duration=75.0)) == 0
        t.join()
        truth = collected(tmp_path / "truth.jsonl", "host", "memory_used_bytes")
        (series, points), = truth.items()
        assert len(points) >= 70
        deadline = time.time() + 30
        while time.time() < deadline:  # what was buffered through the outage is delivered after it
            got = prometheus_samples(prom, "aifactory_host_memory_used_bytes", time.time() + 1)
            if got.get(series) == points:
                break
            time.sleep(1)
        assert got == {series: points}
    finally:
        t.join(timeout=90)
        prom.stop()


# --- the rules for Prometheus' rule engine -----------------------------------------------------------------------


def test_rule_expressions_are_written_in_promql_over_the_exported_names():
    from agent.alerts.expr import parse
    from agent.alerts.promql import to_promql

    cases = {
        'gpu.temperature_celsius{gpu="0"} > 80': '(aifactory_gpu_temperature_celsius{gpu="0"} > 80)',
        "storage_mount.used_percent > 90": "((aifactory_storage_mount_used_ratio * 100) > 90)",
        'increase(agent.rejected_points_total{component=~"out.*"}[10m]) > 0':
            '(increase(aifactory_agent_rejected_points_total{component=~"out.*"}[10m]) > 0)',
        "sum by (rack) (pdu.power_watts) / 1000": "(sum by (rack) (aifactory_pdu_power_watts) / 1000)",
        "avg_over_time(gpu.utilization_percent[5m]) < 5":
            "((avg_over_time(aifactory_gpu_utilization_ratio[5m]) * 100) < 5)",
    }
    for ours, promql in cases.items():
        assert to_promql(parse(ours), CAT) == promql


def test_a_rules_clear_condition_becomes_its_hysteresis_in_promql():
    from agent.alerts.promql import rule_expr
    from agent.alerts.rules import load_rules

    rules = {r.name: r for f in default_registry().rule_files() for r in load_rules(f)}
    expr = rule_expr(rules["PduLoadHigh"], CAT)
    assert expr == ('((aifactory_pdu_rated_load_ratio * 100) > 80) or (max without (alertname, alertstate, severity) '
                    '(ALERTS{alertname="PduLoadHigh",alertstate="firing"}) unless '
                    '((aifactory_pdu_rated_load_ratio * 100) < 75))')


@pytest.mark.services
def test_the_exported_default_pack_passes_promtool_check_and_the_agents_own_rule_tests(tmp_path):
    import shutil
    import subprocess
    import sys

    from .services import need

    promtool = need("promtool", "prometheus")
    root = Path(__file__).resolve().parent.parent

    def agent(*args):
        return subprocess.run([sys.executable, "-m", "agent", "rules", "export", *args], capture_output=True,
                              text=True, cwd=root, timeout=120)

    r = agent("-o", str(tmp_path / "rules.yml"))
    assert r.returncode == 0, r.stderr
    check = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True)
    assert check.returncode == 0 and "SUCCESS: 60 rules found" in check.stdout, check.stdout + check.stderr  # 48 + 12
    # the recording rules of the rack and facility scopes, on their promtool cases
    shutil.copy(root / "tests" / "fixtures" / "prometheus" / "recording.test.yml", tmp_path)
    rec = subprocess.run([promtool, "test", "rules", str(tmp_path / "recording.test.yml")], capture_output=True,
                         text=True)
    assert rec.returncode == 0 and "SUCCESS" in rec.stdout, rec.stdout[-3000:] + rec.stderr[-2000:]
    # the agent's rule tests, each check expecting what the agent's engine fired, run by Prometheus' engine
    (tmp_path / "t").mkdir()
    r = agent("-o", str(tmp_path / "t" / "rules.yml"), "--no-annotations", "--tests",
              str(root / "agent" / "alerts" / "default_rules.test.yaml"), "--tests-out",
              str(tmp_path / "t" / "rules.test.yml"))
    assert r.returncode == 0, r.stderr
    import yaml

    doc = yaml.safe_load((tmp_path / "t" / "rules.test.yml").read_text())
    firing = [a for t in doc["tests"] for c in t["alert_rule_test"] for a in c["exp_alerts"]]
    assert len(doc["tests"]) >= 40 and len(firing) >= 40  # expectations to compare, not empty lists
    test = subprocess.run([promtool, "test", "rules", str(tmp_path / "t" / "rules.test.yml")], capture_output=True,
                          text=True)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout[-3000:] + test.stderr[-2000:]


@pytest.mark.services
def test_alerts_fleet_reads_the_agents_alerts_from_a_prometheus_api(tmp_path):
    import subprocess
    import sys
    import time

    from .services import Prometheus

    prom = Prometheus(tmp_path / "prom", remote_write_receiver=True).start()
    try:
        out = rw_output(tmp_path, prom.url)
        now = time.time_ns()
        out.append([
            Sample("alerts", {"host": "n1", "rack": "r1", "alertname": "GpuXidErrors", "severity": "critical",
                              "gpu": "3"}, {"state": "firing", "firing": True, "value": 79.0,
                                            "active_seconds": 120.0}, now),
            Sample("alerts", {"host": "n2", "rack": "r2", "alertname": "DiskAlmostFull", "severity": "warning",
                              "mount": "/"}, {"state": "pending", "firing": False, "value": 91.5,
                                              "active_seconds": 30.0}, now)])
        assert drain(out)
        out.stop(2)
        r = subprocess.run([sys.executable, "-m", "agent", "alerts", "--fleet", "--prometheus", prom.url, "--json"],
                           capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent)
        assert r.returncode == 0, r.stderr
        rows = {x["alertname"]: x for x in json.loads(r.stdout)}
        assert rows["GpuXidErrors"]["state"] == "firing" and rows["GpuXidErrors"]["severity"] == "critical"
        assert rows["GpuXidErrors"]["host"] == "n1" and rows["GpuXidErrors"]["labels"]["gpu"] == "3"
        assert rows["GpuXidErrors"]["value"] == 79.0
        assert rows["DiskAlmostFull"]["state"] == "pending" and rows["DiskAlmostFull"]["value"] == 91.5
        r = subprocess.run([sys.executable, "-m", "agent", "alerts", "--fleet", "--prometheus", prom.url,
                            "--fail-on", "critical"], capture_output=True, text=True, timeout=60,
                           cwd=Path(__file__).resolve().parent.parent)
        assert r.returncode == 1 and "GpuXidErrors" in r.stdout
    finally:
        prom.stop()
