"""Prometheus: the names the catalogue's metrics take, the /metrics page (text format and OpenMetrics), and the
endpoint against promtool and a real Prometheus."""

from __future__ import annotations

import base64
import json
import urllib.request

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
