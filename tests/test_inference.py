"""Inference token counters (recorded /metrics pages on loopback) and tokens-per-joule efficiency."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from agent.bus import SampleBus
from agent.collector import Context, NotPresent
from agent.model import Accumulator, Sample
from collectors.efficiency import EfficiencyCollector, window_offset
from collectors.inference import InferenceCollector
from collectors.inference.mapping import parse

from .conftest import FIXTURES
from .services import serve_http

ROOT = Path(__file__).resolve().parent.parent
PAGES = FIXTURES / "inference"
NS = 1_000_000_000
T0 = 1_700_000_000 * NS


def page(name: str, prompt: float = 1000, gen: float = 500) -> str:
    return (PAGES / f"{name}.txt").read_text().replace("{PROMPT}", str(prompt)).replace("{GEN}", str(gen))


# server -> (detected type, model, prompt tokens, generation tokens)
EXPECTED = {
    "vllm": ("vllm", "meta-llama/Llama-3.1-8B-Instruct", 1000, 500),
    "sglang": ("sglang", "Qwen/Qwen2.5-7B-Instruct", 81234, 40321),
    "tgi": ("tgi", "default", 51200, 30400),             # histogram _sum: cumulative tokens
    "trtllm": ("trtllm", "llama-3.1-70b", 26000, 17600),
    "triton": ("triton", "tensorrt_llm", 12800, 6400),   # nv_llm_*_token_len _sum
    "nim": ("nim", "meta/llama-3.1-8b-instruct", 5500, 2750),
    "llamacpp": ("llamacpp", "default", 4096, 2048),     # tokens_predicted = generated
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_server_format(name):
    kind, readings = parse(page(name))
    want = EXPECTED[name]
    assert kind == want[0]
    (r,) = readings
    assert (r.model, r.prompt_tokens, r.generation_tokens) == want[1:]


def test_vllm_details_and_bad_pages():
    _, (r,) = parse(page("vllm"))
    assert r.requests == {"stop": 120.0, "length": 7.0, "abort": 2.0}
    assert (r.running, r.waiting, r.ttft_sum, r.ttft_count, r.itl_sum) == (3.0, 1.0, 9.5, 129.0, 750.0)
    for bad in ("<html>not metrics</html>", "# TYPE x counter\nx 1\n", ""):
        with pytest.raises(ValueError):
            parse(bad)


class Server:
    """A loopback inference server whose counters advance per scrape: prompt by 2 x step, generation by step."""

    def __init__(self, name: str = "vllm", step: int = 100) -> None:
        self.name, self.step, self.scrapes = name, step, 0
        self.prompt, self.gen = 1000.0, 500.0
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                body = outer.render().encode()
                outer.scrapes += 1
                outer.prompt += 2 * outer.step
                outer.gen += outer.step
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        if name != "vllm":  # the other recorded pages: their token values, advanced the same way
            _, (r,) = parse(page(name))
            self.base = (r.prompt_tokens, r.generation_tokens)
            self.prompt, self.gen = r.prompt_tokens, r.generation_tokens
        self.httpd, base = serve_http(H)
        self.port = self.httpd.server_address[1]
        self.url = f"{base}/metrics"

    def render(self) -> str:
        if self.name == "vllm":
            return page("vllm", self.prompt, self.gen)
        text = page(self.name)
        for old, new in zip(self.base, (self.prompt, self.gen)):
            for fmt in ("{:.1f}", "{:d}"):
                text = text.replace(" " + fmt.format(int(old) if fmt == "{:d}" else old) + "\n",
                                    " " + fmt.format(int(new) if fmt == "{:d}" else new) + "\n")
        return text

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def vllm():
    s = Server()
    yield s
    s.close()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_server_served_on_loopback_with_counters_advancing(name, tmp_path):
    srv = Server(name, step=50)
    try:
        col = InferenceCollector(InferenceCollector.Options(endpoints=[{"url": srv.url, "gpus": [0]}],
                                                            discover=False), Context("inference"))
        got = []
        for k in range(2):
            (inf,) = [x for x in collect(col, T0 + k * NS) if x.measurement == "inference" and "outcome" not in x.tags]
            got.append(inf)
    finally:
        srv.close()
    kind, model, prompt, gen = EXPECTED[name]
    assert got[0].tags["server"] == kind and got[0].tags["model"] == model
    assert (got[0].fields["prompt_tokens_total"], got[0].fields["generation_tokens_total"]) == (prompt, gen)
    assert got[1].fields["prompt_tokens_total"] - prompt == 100 and got[1].fields["generation_tokens_total"] - gen == 50


def collect(col, ts):
    acc = Accumulator(ts, {"host": "node1"})
    col.collect(acc)
    return acc.close()


def test_scrape_counters_restart_and_absent_server(vllm, tmp_path):
    col = InferenceCollector(InferenceCollector.Options(endpoints=[{"url": vllm.url, "gpus": [1, 0]}],
                                                        discover=False), Context("inference", state_dir=tmp_path))
    s = {x.measurement + ("/" + x.tags["outcome"] if "outcome" in x.tags else ""): x for x in collect(col, T0)}
    inf = s["inference"]
    assert inf.fields["prompt_tokens_total"] == 1000 and inf.fields["generation_tokens_total"] == 500
    assert inf.tags["server"] == "vllm" and inf.tags["gpus"] == "0,1" and inf.tags["port"] == str(vllm.port)
    assert s["inference/stop"].fields["requests_total"] == 120
    assert s["inference_endpoint"].fields["up"] is True
    # the server restarts: its counters start again from a few tokens; ours keep counting up
    vllm.prompt, vllm.gen = 10.0, 5.0
    inf2 = [x for x in collect(col, T0 + 10 * NS) if x.measurement == "inference" and "outcome" not in x.tags][0]
    assert inf2.fields["prompt_tokens_total"] == 1000 + 10 and inf2.fields["generation_tokens_total"] == 500 + 5
    # a configured endpoint that is down is reported; discovery of nothing is "not present"
    vllm.close()
    down = collect(col, T0 + 20 * NS)
    assert [x.fields["up"] for x in down if x.measurement == "inference_endpoint"] == [False]
    nothing = InferenceCollector(InferenceCollector.Options(endpoints=[], discover=True), Context("inference"))
    nothing.states = [st for st in nothing.states if "127.0.0.1:1/" in st.ep.url]  # no server on any port
    with pytest.raises(NotPresent):
        collect(nothing, T0)


def gpu_sample(gpu: str, joules: float, ts: int) -> Sample:
    return Sample("gpu", {"host": "node1", "gpu": gpu}, {"energy_joules_total": joules}, ts)


def tok_sample(endpoint: str, model: str, gpus: str, prompt: float, gen: float, ts: int) -> Sample:
    return Sample("inference", {"host": "node1", "endpoint": endpoint, "model": model, "server": "vllm",
                                "gpus": gpus}, {"prompt_tokens_total": prompt, "generation_tokens_total": gen}, ts)


def efficiency(bus, window=60.0, tmp_path=None):
    return EfficiencyCollector(EfficiencyCollector.Options(window=window, rapl=False),
                               Context("efficiency", bus=bus, sys_root=Path("/nonexistent")))


def by_scope(samples):
    return {(s.tags["scope"], s.tags.get("gpu") or s.tags.get("model") or ""): s.fields for s in samples
            if s.measurement == "efficiency"}


def test_tokens_per_joule_at_gpu_model_and_node_scope():
    """Two GPUs, a tensor-parallel model on both and a small model on GPU 1, over one 60 s window."""
    bus = SampleBus()
    eff = efficiency(bus)
    for i, ts in enumerate((T0, T0 + 60 * NS)):
        bus.observe([gpu_sample("0", 1000 + i * 42000, ts), gpu_sample("1", 5000 + i * 30000, ts),
                     tok_sample("a", "big", "0,1", 0 + i * 60000, 0 + i * 24000, ts),
                     tok_sample("b", "small", "1", 100 + i * 6000, 50 + i * 3000, ts)])
        out = collect(eff, ts)
    got = by_scope(out)
    # GPU 0: half of "big" (84000/2 tokens, 12000 generated) over 42000 J
    assert got[("gpu", "0")]["tokens_per_joule"] == pytest.approx(42000 / 42000)
    assert got[("gpu", "0")]["generation_tokens_per_joule"] == pytest.approx(12000 / 42000)
    # GPU 1: the other half of "big" plus all of "small" over 30000 J
    assert got[("gpu", "1")]["tokens_per_joule"] == pytest.approx((42000 + 9000) / 30000)
    # model "big": its tokens over GPU 0 + half of GPU 1 (shared with "small")
    assert got[("model", "big")]["joules_per_token"] == pytest.approx((42000 + 15000) / 84000)
    assert got[("model", "small")]["generation_tokens_per_joule"] == pytest.approx(3000 / 15000)
    node = got[("node", "")]
    assert node["tokens_per_joule"] == pytest.approx((84000 + 9000) / 72000)
    assert node["tokens_per_second"] == pytest.approx(93000 / 60)
    assert node["window_energy_joules"] == pytest.approx(72000) and node["window_seconds"] == 60


def test_counters_not_sampled_power_a_bursty_trace():
    """A GPU alternating 100 W and 700 W bursts between 1-s power samples: the sampled mean says
    100 W; the energy counter knows better. Tokens per joule uses the counter."""
    bus = SampleBus()
    eff = efficiency(bus, window=60.0)
    energy, tokens, sampled_power = 0.0, 0.0, []
    for sec in range(61):
        ts = T0 + sec * NS
        bus.observe([gpu_sample("0", energy, ts), tok_sample("a", "m", "0", 0, tokens, ts)])
        out = collect(eff, ts)
        sampled_power.append(100.0)  # each once-a-second sample lands between the bursts
        energy += 100.0 * 0.7 + 700.0 * 0.3  # per second: 0.7 s at 100 W, a 0.3 s burst at 700 W
        tokens += 1000.0
    truth = 60 * 1000.0 / (60 * 280.0)
    from_sampled_power = 60 * 1000.0 / (sum(sampled_power[:60]) * 1.0)
    got = by_scope(out)[("gpu", "0")]["generation_tokens_per_joule"]
    assert got == pytest.approx(truth) and abs(from_sampled_power - truth) / truth > 1.5


def test_idle_and_windows_that_do_not_line_up():
    bus = SampleBus()
    eff = efficiency(bus, window=10.0)
    # GPU sampled at :00 and :10, tokens at :05 and :15 (collectors out of phase): still the same interval
    bus.observe([gpu_sample("0", 0, T0), tok_sample("a", "m", "0", 0, 0, T0 + 5 * NS)])
    collect(eff, T0 + 5 * NS)
    bus.observe([gpu_sample("0", 1000, T0 + 10 * NS), tok_sample("a", "m", "0", 0, 100, T0 + 15 * NS)])
    collect(eff, T0 + 15 * NS)
    bus.observe([gpu_sample("0", 2000, T0 + 20 * NS), tok_sample("a", "m", "0", 0, 100, T0 + 25 * NS)])
    out = by_scope(collect(eff, T0 + 25 * NS))
    # window [10 s, 20 s]: 1000 J; tokens interpolated: 50 at 10 s, 100 at 20 s -> 50 tokens
    assert out[("gpu", "0")]["generation_tokens_per_joule"] == pytest.approx(50 / 1000)
    # now idle: no new tokens; energy still flows
    for k in (3, 4):
        bus.observe([gpu_sample("0", 1000 * k, T0 + k * 10 * NS), tok_sample("a", "m", "0", 0, 100, T0 + k * 10 * NS)])
        out = by_scope(collect(eff, T0 + k * 10 * NS))
    idle = out[("gpu", "0")]
    assert idle["tokens_per_joule"] == 0 and "joules_per_token" not in idle
    assert all(isinstance(v, float | int) and v == v for v in idle.values())  # no NaN, no inf


def test_no_token_counters_is_not_present():
    with pytest.raises(NotPresent):
        collect(efficiency(SampleBus()), T0)


def rapl_efficiency(tmp_path):
    """A RAPL package zone under tmp_path (its register wraps at 262143328850 uJ), the host collector reading it
    and an efficiency collector with a 10 s window: (zone folder, bus, host, efficiency)."""
    from collectors.host import HostCollector, HostOptions

    zone = tmp_path / "class" / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    bus = SampleBus()
    host = HostCollector(HostOptions(per_cpu=False, temperatures=False), Context("host", sys_root=tmp_path))
    eff = EfficiencyCollector(EfficiencyCollector.Options(window=10.0), Context("efficiency", bus=bus,
                                                                                   sys_root=tmp_path))
    return zone, bus, host, eff


def test_rapl_joins_the_node_scope(tmp_path):
    zone, bus, host, eff = rapl_efficiency(tmp_path)
    for k, uj in ((0, 261_000_000_000), (1, 262_000_000_000), (2, 500_000_000)):  # the register wraps at the end
        (zone / "energy_uj").write_text(f"{uj}\n")
        ts = T0 + k * 10 * NS
        bus.observe([s for s in collect(host, ts) if s.measurement == "host_energy"])
        bus.observe([gpu_sample("0", k * 3000.0, ts), tok_sample("a", "m", "0", 0, k * 900.0, ts)])
        out = collect(eff, ts)
    node = by_scope(out)[("node", "")]
    rapl_joules = (262143328850 - 262_000_000_000 + 500_000_000) / 1e6
    assert node["window_energy_joules"] == pytest.approx(3000 + rapl_joules)
    assert [s.tags["energy_source"] for s in out if s.tags.get("scope") == "node"] == ["gpu+rapl"]


def test_cli_collect_once_prints_token_counters(vllm, tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"collectors:\n  inference:\n    discover: false\n    endpoints:\n      - url: {vllm.url}\n")
    r = subprocess.run([sys.executable, "-m", "agent", "collect", "-c", str(cfg), "--once", "--collector", "inference",
                        "--format", "json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = [d for d in json.loads(r.stdout) if d["measurement"] == "inference" and "outcome" not in d["tags"]]
    assert doc[0]["fields"]["prompt_tokens_total"] == 1000 and doc[0]["fields"]["generation_tokens_total"] == 500
    assert doc[0]["tags"]["model"] == "meta-llama/Llama-3.1-8B-Instruct"


def test_rack_and_facility_scope_from_node_windows_in_influxdb(influxd):
    """Two nodes' per-window rows (tokens, node-meter energy, each tagged with its rack) in a real InfluxDB; the
    poller sums them per rack in one query and divides by its racks' PDU energy and the facility meter over
    the same window; the rack energy balance sets the PDU against the node meters."""
    import urllib.request

    influxd.create_db("fleet")
    grid = 60 * NS
    base = T0 - T0 % grid
    t1 = base + 900 * NS
    lines = []
    for host, rack, tokens, gen, joules, meter in (("n1", "r1", 9000, 4500, 9000.0, "outlet"),
                                                   ("n2", "r2", 2800, 800, 2500.0, "components")):
        for w in range(16):  # w = 0 ends at base: outside (base, t1], left out
            ts = base + w * grid
            lines.append(f"node_window,rack={rack},meter={meter} tokens={tokens},generation_tokens={gen},"
                         f"energy_joules={joules},window_seconds=60,partial={int(meter == 'components')}i "
                         f"{ts + window_offset(host, ts)}")
    req = urllib.request.Request(influxd.url + "/write?db=fleet&precision=ns", data="\n".join(lines).encode())
    urllib.request.urlopen(req, timeout=30).read()

    bus = SampleBus()
    eff = EfficiencyCollector(EfficiencyCollector.Options(
        rapl=False, fleet_window=900.0, fleet={"url": influxd.url, "database": "fleet", "lag": 5}),
        Context("efficiency", bus=bus, sys_root=Path("/nonexistent")))

    def pdu(dev, rack, scope, e, ts, inlet=None):
        tags = {"device": dev, "rack": rack, "role": "it", "scope": scope, **({"inlet": inlet} if inlet else {})}
        return Sample("pdu", tags, {"energy_joules_total": e}, ts)

    for k, ts in enumerate((base, t1, t1 + 10 * NS)):
        bus.observe([pdu("pdu-r1-a", "r1", "device", 1e6 + k * 150000, ts),
                     pdu("pdu-r1-a", "r1", "phase", 5e5, ts),                       # not added on top of the total
                     pdu("pdu-r2-a", "r2", "inlet", 2e6 + k * 20000, ts, "1"),
                     pdu("pdu-r2-a", "r2", "inlet", 3e6 + k * 30000, ts, "2"),     # inlets of one PDU: summed
                     Sample("facility", {}, {"total_energy_joules_total": 9e6 + k * 300000,
                                             "it_energy_joules_total": 3e6 + k * 200000}, ts)])
        out = collect(eff, ts)
        if k == 1:
            assert not [s for s in out if s.measurement == "efficiency"]  # t1 not yet past its lag
    eff_rows = {(s.tags["scope"], s.tags.get("rack", "")): s for s in out if s.measurement == "efficiency"}
    r1, r2, fac = (eff_rows[k].fields for k in (("rack", "r1"), ("rack", "r2"), ("facility", "")))
    assert {s.ts for s in eff_rows.values()} == {t1}  # stamped with the window's end
    assert r1["tokens_per_joule"] == pytest.approx(15 * 9000 / 150000)
    assert r2["generation_tokens_per_joule"] == pytest.approx(15 * 800 / 50000)
    assert fac["tokens_per_joule"] == pytest.approx(15 * (9000 + 2800) / 300000)
    assert fac["window_seconds"] == 900
    assert eff_rows[("facility", "")].tags["energy_source"] == "facility_total"
    bal = {s.tags["rack"]: s.fields for s in out if s.measurement == "energy_balance"}
    assert bal["r1"]["meter_energy_joules"] == 150000 and bal["r1"]["components_energy_joules"] == 15 * 9000
    assert bal["r1"]["residual_percent"] == pytest.approx(10.0) and bal["r1"]["nodes_reporting"] == 1
    assert bal["r2"]["partial_nodes"] == 1 and bal["r2"]["residual_watts"] == pytest.approx((50000 - 37500) / 900)
    # the same window is not computed (nor queried) twice
    queries = eff.fleet.queries
    again = collect(eff, t1 + 20 * NS)
    assert not [s for s in again if s.measurement == "efficiency"] and eff.fleet.queries == queries
    # one grid later, only the newest windows are asked for; the rest of the rack window comes from the cache
    more = [f"node_window,rack=r1,meter=outlet tokens=6000,generation_tokens=1000,energy_joules=9000,"
            f"window_seconds=60,partial=0i {t1 + grid + window_offset('n1', t1 + grid)}"]
    urllib.request.urlopen(urllib.request.Request(influxd.url + "/write?db=fleet&precision=ns",
                                                  data="\n".join(more).encode()), timeout=30).read()
    ts = t1 + grid + 10 * NS
    bus.observe([pdu("pdu-r1-a", "r1", "device", 1e6 + 3 * 150000, ts),
                 pdu("pdu-r2-a", "r2", "inlet", 2e6 + 3 * 20000, ts, "1"),
                 pdu("pdu-r2-a", "r2", "inlet", 3e6 + 3 * 30000, ts, "2"),
                 Sample("facility", {}, {"total_energy_joules_total": 9e6 + 3 * 300000,
                                         "it_energy_joules_total": 3e6 + 3 * 200000}, ts)])
    later = collect(eff, t1 + grid + 10 * NS)
    assert eff.fleet.queries == queries + 1
    assert sorted(eff.fleet.cache) == [base + w * grid for w in range(2, 17)]
    (r1,) = [s.fields for s in later if s.measurement == "efficiency" and s.tags.get("rack") == "r1"]
    assert r1["tokens_per_second"] * 900 == pytest.approx(14 * 9000 + 6000)


def test_cli_two_windows_print_efficiency_equal_to_hand_computation(vllm, tmp_path):
    """`aifactory collect --runs 3 --every 1s` against a loopback vLLM page whose counters advance on every
    scrape, with a RAPL package whose energy advances in a thread: the efficiency printed for each window
    equals the deltas of the printed counters, computed here by hand."""
    zone = tmp_path / "sys" / "class" / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    (zone / "energy_uj").write_text("1000000\n")
    stop = threading.Event()

    def burn():
        uj = 1_000_000
        while not stop.wait(0.01):
            uj += 1_234_567  # ~123 W
            (zone / "energy_uj.tmp").write_text(f"{uj}\n")
            (zone / "energy_uj.tmp").replace(zone / "energy_uj")

    threading.Thread(target=burn, daemon=True).start()
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""agent:
  sys_root: {tmp_path / "sys"}
collectors:
  inference:
    discover: false
    endpoints:
      - url: {vllm.url}
  efficiency:
    window: 1s
""")
    try:
        r = subprocess.run([sys.executable, "-m", "agent", "collect", "-c", str(cfg), "--collector", "host",
                            "--collector", "inference", "--collector", "efficiency", "--runs", "3", "--every", "1s",
                            "--format", "json"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    finally:
        stop.set()
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    tok = {d["timestamp_ns"]: d["fields"] for d in doc
           if d["measurement"] == "inference" and "outcome" not in d["tags"]}
    joules = {d["timestamp_ns"]: d["fields"]["energy_joules_total"] for d in doc if d["measurement"] == "host_energy"}
    eff = {d["timestamp_ns"]: d["fields"] for d in doc
           if d["measurement"] == "efficiency" and d["tags"]["scope"] == "node"}
    ts = sorted(tok)
    assert len(ts) == 3 and sorted(eff) == ts[1:]  # two complete windows
    for t0, t1 in zip(ts, ts[1:]):
        tokens = sum(tok[t1][f] - tok[t0][f] for f in ("prompt_tokens_total", "generation_tokens_total"))
        gen = tok[t1]["generation_tokens_total"] - tok[t0]["generation_tokens_total"]
        energy = joules[t1] - joules[t0]
        assert tokens == 300 and gen == 100  # the server's counters advance 200 + 100 per scrape
        got = eff[t1]
        assert got["window_seconds"] == 1 and got["window_energy_joules"] == pytest.approx(energy)
        assert got["tokens_per_joule"] == pytest.approx(tokens / energy)
        assert got["generation_joules_per_token"] == pytest.approx(energy / gen)
        assert got["tokens_per_second"] == pytest.approx(tokens / 1.0)


def test_end_to_end_with_fake_gpus_energy_and_two_servers(tmp_path):
    """gpu collector on a fake NVML (energy counters in mJ), two loopback servers on one GPU each, the
    efficiency collector over the agent's bus: per-GPU tokens per joule as computed by hand."""
    from collectors.gpu import GpuCollector, GpuOptions

    from .conftest import TREES
    from .fakes.nvml import fleet

    nvml = fleet("H200-SXM", "H200-SXM")
    bus = SampleBus()
    gpu = GpuCollector(GpuOptions(xid_events=False), Context("gpu", proc_root=TREES / "gpuprocs" / "proc"),
                       nvml=nvml)
    a, b = Server("vllm", step=100), Server("sglang", step=40)
    try:
        inf = InferenceCollector(InferenceCollector.Options(
            endpoints=[{"url": a.url, "gpus": [0]}, {"url": b.url, "gpus": [1]}], discover=False),
            Context("inference", bus=bus))
        eff = EfficiencyCollector(EfficiencyCollector.Options(window=10.0, rapl=False),
                                  Context("efficiency", bus=bus))
        for k in range(3):
            ts = T0 + k * 10 * NS
            bus.observe(collect(gpu, ts))
            bus.observe(collect(inf, ts))
            out = collect(eff, ts)
            nvml.gpus[0].p["fields"][83] += 7_000_000  # +7 kJ per 10 s on GPU 0 (700 W)
            nvml.gpus[1].p["fields"][83] += 4_000_000  # +4 kJ on GPU 1
    finally:
        a.close()
        b.close()
    got = by_scope(out)
    assert got[("gpu", "0")]["tokens_per_joule"] == pytest.approx(300 / 7000)
    assert got[("gpu", "1")]["generation_tokens_per_joule"] == pytest.approx(40 / 4000)
    assert got[("node", "")]["joules_per_token"] == pytest.approx(11000 / (300 + 120))


def test_rack_scope_with_a_simulated_pdu_whose_energy_grows(snmpsim, influxd):
    """The snmp collector polls a PDU recording whose kWh counter grows (snmpsim numeric variation); the
    rack's tokens come from InfluxDB; the window energy is the delta of the two polled counters."""
    import time as _time
    import urllib.request

    from collectors.snmp import SnmpCollector, SnmpOptions

    influxd.create_db("fleet2")
    snmp = SnmpCollector(SnmpOptions(devices=[{"name": "pdu-r7", "host": "127.0.0.1", "port": snmpsim.port,
                                               "community": "apc-rpdu2-grow", "role": "it", "rack": "r7"}]),
                         Context("snmp"))
    bus = SampleBus()
    eff = EfficiencyCollector(EfficiencyCollector.Options(
        rapl=False, window=2.0, window_grid=2.0, fleet_window=2.0,
        fleet={"url": influxd.url, "database": "fleet2", "grid": 2, "lag": 0.5}), Context("efficiency", bus=bus))
    import asyncio

    now = _time.time_ns()
    polled, start = [], now - now % (2 * NS) + 2 * NS
    try:
        for k in range(3):
            ts = start + k * 2 * NS
            _time.sleep(max(0.0, (ts - _time.time_ns()) / 1e9))
            if k == 1:  # the node's row for the window (start, start + 2 s]
                line = (f"node_window,rack=r7,meter=outlet tokens=9000,generation_tokens=3000 "
                        f"{ts + window_offset('n1', ts)}")
                urllib.request.urlopen(urllib.request.Request(influxd.url + "/write?db=fleet2&precision=ns",
                                                              data=line.encode()), timeout=30).read()
            acc = Accumulator(ts, {"host": "poller"})
            asyncio.run(snmp.collect(acc))
            samples = acc.close()
            bus.observe(samples)
            polled.append([s.fields["energy_joules_total"] for s in samples
                           if s.measurement == "pdu" and s.tags.get("scope") == "device"][0])
            out = collect(eff, ts)
            if k == 2:
                rack_rows = [s for s in out if s.measurement == "efficiency" and s.tags.get("scope") == "rack"]
    finally:
        snmp.close()
    energy = polled[1] - polled[0]
    assert energy >= 360000  # at least one tenth of a kWh in two seconds
    (rack,) = [s.fields for s in rack_rows]
    assert rack["window_energy_joules"] == pytest.approx(energy)
    assert rack["tokens_per_joule"] == pytest.approx(9000 / energy)


def test_node_scope_from_a_configured_meter_of_the_node():
    """Two PDU outlets feed the node's two PSUs: the node scope divides its tokens by their energy."""
    bus = SampleBus()
    eff = EfficiencyCollector(EfficiencyCollector.Options(window=60.0, rapl=False, node_energy={
        "tags": {"device": "pdu-r12-a", "node": "gpu-01"}}), Context("efficiency", bus=bus))

    def outlet(n, joules, ts):
        return Sample("pdu", {"device": "pdu-r12-a", "node": "gpu-01", "outlet": n, "scope": "outlet"},
                      {"energy_joules_total": joules}, ts)

    for k in range(2):
        ts = T0 + k * 60 * NS
        bus.observe([gpu_sample("0", k * 30000.0, ts), tok_sample("a", "m", "0", 0, k * 9000.0, ts),
                     outlet("5", 1e6 + k * 40000, ts), outlet("6", 2e6 + k * 38000, ts),
                     Sample("pdu", {"device": "pdu-r12-b", "node": "gpu-01", "outlet": "5"},
                            {"energy_joules_total": 5e6 + k * 99999}, ts)])  # another PDU: not this meter
        out = collect(eff, ts)
    (node,) = [s for s in out if s.measurement == "efficiency" and s.tags["scope"] == "node"]
    assert node.tags["energy_source"] == "meter"
    assert node.fields["window_energy_joules"] == 78000 and node.fields["generation_tokens_per_joule"] == \
        pytest.approx(9000 / 78000)


VLLM_TWO_ENGINES = """# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{{engine="0",model_name="{m}"}} {a}
vllm:prompt_tokens_total{{engine="1",model_name="{m}"}} {b}
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{{engine="0",model_name="{m}"}} 10
vllm:generation_tokens_total{{engine="1",model_name="{m}"}} 20
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{{le="1.0",model_name="{m}"}} 3
vllm:e2e_request_latency_seconds_bucket {{le="+Inf",model_name="{m}"}} 4
vllm:e2e_request_latency_seconds_sum{{model_name="{m}"}} 2.5
vllm:e2e_request_latency_seconds_count{{model_name="{m}"}} 4
"""


@pytest.mark.parametrize("model", ["llama_bucket 8b", "llama_bucket{x}", "plain"])
def test_histogram_buckets_are_filtered_by_metric_name_not_by_label_text(model):
    kind, readings = parse(VLLM_TWO_ENGINES.format(m=model, a=100, b=50))
    assert kind == "vllm" and [(r.model, r.prompt_tokens, r.generation_tokens) for r in readings] == [
        (model, 150.0, 30.0)]


def test_a_series_listed_twice_is_read_once_and_said():
    page = VLLM_TWO_ENGINES.format(m="m", a=100, b=50)
    page += 'vllm:prompt_tokens_total{engine="0",model_name="m"} 100\n'  # the same series again
    notes: list[str] = []
    _, readings = parse(page, notes=notes)
    assert readings[0].prompt_tokens == 150.0  # not 250: Prometheus keeps the first
    assert any("listed twice" in n for n in notes)


def test_a_nan_on_one_engine_keeps_the_other_engines_count_and_never_goes_back():
    last: dict = {}
    got = []
    for a, b in ((100, 50), (110, "NaN"), (112, 55)):
        notes: list[str] = []
        _, readings = parse(VLLM_TWO_ENGINES.format(m="m", a=a, b=b), notes=notes, last=last)
        got.append(readings[0].prompt_tokens)
    assert got == [150.0, 160.0, 167.0]  # engine 1's last count stands in for its NaN; engine 0's 10 are kept
    first: dict = {}
    _, readings = parse(VLLM_TWO_ENGINES.format(m="m", a=100, b="NaN"), last=first)
    assert math.isnan(readings[0].prompt_tokens)  # no count to stand in yet: the model's sum is not read


def test_a_servers_gpus_and_mig_instances_come_from_its_processes_on_the_bus(vllm, tmp_path):
    """No `gpus` configured: the GPUs are those the gpu collector saw the server's processes on (this process
    listens on the page's port), and the MIG instances among them as GPU:INSTANCE (the jobs collector gives a
    server pinned to an instance to that instance's holder)."""
    import os

    from agent.bus import SampleBus
    from agent.model import Sample

    bus = SampleBus()
    bus.observe([Sample("gpu_process", {"gpu": "3", "uuid": "GPU-3", "pid": str(os.getpid()), "gpu_instance": "1"},
                        {"memory_used_bytes": 2**30}, T0),
                 Sample("gpu_process", {"gpu": "5", "uuid": "GPU-5", "pid": str(os.getpid())},
                        {"memory_used_bytes": 2**30}, T0),
                 Sample("gpu_process", {"gpu": "0", "uuid": "GPU-0", "pid": "1"}, {"memory_used_bytes": 1}, T0)])
    col = InferenceCollector(InferenceCollector.Options(endpoints=[{"url": vllm.url}], discover=False),
                             Context("inference", state_dir=tmp_path, bus=bus))
    (inf,) = [s for s in collect(col, T0) if s.measurement == "inference" and "outcome" not in s.tags]
    assert inf.tags["gpus"] == "3,5" and inf.tags["gpu_instances"] == "3:1"
