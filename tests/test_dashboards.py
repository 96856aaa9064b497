"""Dashboards: valid Grafana JSON, catalogue names only, committed == built, and every panel's InfluxQL run on
a real InfluxDB 1.6.7 loaded with an hour of a scenario written by the agent's own output."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agent.bus import SampleBus
from agent.collector import Context, NotPresent
from agent.dashboards import OUT, dashboards, render
from agent.model import Accumulator, Sample, to_line_protocol
from agent.registry import default_registry
from collectors.efficiency import EfficiencyCollector
from collectors.jobs import JobsCollector, JobsOptions

from .services import board_variables, serve_http, substitute

CAT = default_registry().catalogue()
BOARDS = dashboards(default_registry().sections())  # the core's frames with every collector's panels
NS = 1_000_000_000


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_board_is_valid_grafana_json(name):
    d = json.loads(render(BOARDS[name]))
    assert d["schemaVersion"] >= 36 and d["uid"].startswith("aifactory-") and d["title"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{p['title']} overlaps"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["fieldConfig"]["defaults"]["unit"], p["title"]
        assert p["fieldConfig"]["defaults"]["thresholds"]["steps"], p["title"]
        assert p["targets"] and all(t["rawQuery"] and t["query"] for t in p["targets"])
    names = [v["name"] for v in d["templating"]["list"]]
    assert names[0] == "datasource" and len(names) == len(set(names))


def test_uids_unique_and_committed_json_equals_a_fresh_build():
    uids = [json.loads(render(b))["uid"] for b in BOARDS.values()]
    assert len(uids) == len(set(uids))
    for n in BOARDS:
        committed = (OUT / f"aifactory-{n}.json").read_text()
        assert committed == render(BOARDS[n]), f"dashboards/aifactory-{n}.json is stale: run aifactory dashboards build"
        committed = (OUT / "prometheus" / f"aifactory-{n}.json").read_text()
        assert committed == render(BOARDS[n], "prometheus"), \
            f"dashboards/prometheus/aifactory-{n}.json is stale: run aifactory dashboards build --datasource prometheus"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_query_of_a_board_has_its_promql_over_exported_names(name):
    from agent.prom import prom_metric

    exported = {prom_metric(m.measurement, m.field, m).name for m in CAT}
    d = json.loads(render(BOARDS[name], "prometheus"))
    assert d["templating"]["list"][0]["query"] == "prometheus"
    assert all(v.get("query") for v in d["templating"]["list"][1:]), "a variable without its label_values()"
    for p in BOARDS[name].panels():
        for q in p.queries:
            assert q.promql, (name, p.title)
            names = q.prom_names()
            assert names and set(names) <= exported, (name, p.title, set(names) - exported)
    for p in d["panels"]:
        assert all(t["expr"] and t["datasource"]["type"] == "prometheus" for t in p.get("targets", [])), p["title"]

def test_dashboards_use_only_catalogue_names():
    for n, board in BOARDS.items():
        for p in board.panels():
            for q in p.queries:
                pairs = q.measurements_fields()
                assert pairs, (n, p.title, q.influxql)
                for meas, field in pairs:
                    assert CAT.get(meas, field) is not None, (n, p.title, meas, field)


EMBED_PER_MIN = 6000.0  # prompt tokens a minute of each node's small embedding server on GPU 0

# Two sites at different efficiency, with the same rack names (a panel that filters by rack but not by site
# mixes them): every figure of ams1 differs from fra1's.
SITES = {
    "fra1": {"hosts": ("n1", "n2"), "gpu_w": 600.0, "node_w": 1600.0, "tokens_per_min": 90000.0,
             "gen_per_min": 30000.0, "it_w": 10000.0, "total_w": 13000.0, "hot": 0.0},
    "ams1": {"hosts": ("m1", "m2"), "gpu_w": 500.0, "node_w": 1350.0, "tokens_per_min": 120000.0,
             "gen_per_min": 50000.0, "it_w": 8000.0, "total_w": 8800.0, "hot": 3.0},
}


def scenario(now_ns: int, site: str = "fra1") -> tuple[list[Sample], dict]:
    """An hour, one sample a minute, for one site: 2 hosts in 2 racks with 2 GPUs each (one lost for the last
    10 minutes), a vLLM server per host, a PDU per rack, a UPS, a cooling unit, facility meters read by the
    site's poller, and the efficiency the agent computes from the counters."""
    out, steps, start = [], 61, now_ns - 3600 * NS
    facts = SITES[site]
    hosts = facts["hosts"]
    buses = {h: SampleBus() for h in hosts}  # each node's agent sees its own samples
    poller = {"host": f"poller-{site}", "site": site, "cluster": "c1"}
    # ams1's nodes have RAPL (100 W a CPU package); fra1's have none
    cpu_w = 100.0 if site == "ams1" else 0.0
    eff = {h: EfficiencyCollector(EfficiencyCollector.Options(window=60.0, rapl=bool(cpu_w)),
                                  Context("efficiency", bus=buses[h])) for h in hosts}
    jobs = {h: JobsCollector(JobsOptions(slurm="off", kubernetes="off"),
                             Context("jobs", bus=buses[h], proc_root=Path("/nonexistent"))) for h in hosts}
    for i in range(steps):
        ts = start + i * 60 * NS
        t = i * 60.0
        step = []
        for h, rack in zip(hosts, ("r1", "r2")):
            base = {"host": h, "site": site, "cluster": "c1", "rack": rack}
            for g in ("0", "1"):
                step.append(Sample("gpu", {**base, "gpu": g, "uuid": f"GPU-{h}-{g}", "model": "H200"}, {
                    "power_watts": facts["gpu_w"], "utilization_percent": 80.0,
                    "power_min_watts": facts["gpu_w"] - 150, "power_mean_watts": facts["gpu_w"],
                    "power_max_watts": facts["gpu_w"] + 100, "power_swing_watts": 250.0,
                    "energy_joules_total": facts["gpu_w"] * t,
                    "temperature_celsius": 60.0 + int(g) + (5 if rack == "r2" else 0) + facts["hot"],
                    "memory_temperature_celsius": 70.0 + facts["hot"],
                    "sm_clock_hertz": 1.98e9, "lost": rack == "r2" and g == "1" and i > 50, "xid_errors_total": 0,
                    "sm_active_percent": 88.0, "tensor_active_percent": 45.0 + facts["hot"],
                    "dram_active_percent": 60.0,
                    "ecc_uncorrected_volatile_total": 0,
                    "throttle_power_cap_seconds_total": 0.1 * t, "throttle_power_brake_seconds_total": 0.0,
                    "throttle_hw_thermal_seconds_total": 0.0, "throttle_sw_thermal_seconds_total": 0.0,
                    "throttle_power_cap": i % 10 < 3, "throttle_power_brake": False, "throttle_hw_slowdown": False,
                    "throttle_thermal": False}, ts))
                # a Slurm job on GPU 0 of each node (its id from the process's cgroup), a process of nobody's on 1
                # for the first half hour, then nothing on it
                job = f"70{hosts.index(h)}" if g == "0" else ""
                if g == "0" or i < 30:
                    step.append(Sample("gpu_process", {**base, "gpu": g, "uuid": f"GPU-{h}-{g}",
                                                       "pid": "4242" if g == "0" else "4343", "process": "vllm",
                                                       "container": "", "slurm_job": job, "pod": ""},
                                       {"memory_used_bytes": 80e9, "sm_utilization_percent": 75.0 + facts["hot"]}, ts))
            # the fast power sampler's node row: both GPUs summed at the same instants
            step.append(Sample("gpu_node", {**base, "source": "nvml", "scope": "gpu"},
                               {"power_min_watts": 2 * facts["gpu_w"] - 300,
                                "power_max_watts": 2 * facts["gpu_w"] + 200,
                                "power_swing_watts": 500.0, "power_step_max_watts": 420.0, "gpus": 2}, ts))
            if cpu_w:  # the host collector's RAPL counter of the node's CPU package
                step.append(Sample("host_energy", {**base, "zone": "intel-rapl:0", "source": "rapl",
                                                   "scope": "cpu_package"}, {"energy_joules_total": 1000 + cpu_w * t},
                                   ts))
            # the node's own BMC (redfish): its PSU input, the node meter the efficiency collector picks
            step.append(Sample("bmc_power", {**base, "target": f"{h}-bmc", "chassis": "1U", "chassis_role": "node",
                                                 "source": "redfish", "scope": "psu_input", "component": "PSU1"},
                               {"power_watts": facts["node_w"]}, ts))
            step.append(Sample("bmc_power", {**base, "target": f"{h}-bmc", "chassis": "1U", "chassis_role": "node",
                                                 "source": "redfish", "scope": "chassis", "component": "chassis"},
                               {"power_watts": facts["node_w"] - 40}, ts))
            if site == "ams1":  # these BMCs also answer DCMI (a rolling average, lower than the PSU input here)
                step.append(Sample("bmc_power", {**base, "target": f"{h}-bmc", "source": "dcmi", "scope": "chassis",
                                                  "component": "dcmi"},
                                   {"power_watts": facts["node_w"] - 60, "measuring": True}, ts))
            step.append(Sample("inference", {**base, "endpoint": "vllm", "server": "vllm", "model": "llama",
                                             "gpus": "0,1"},
                               {"prompt_tokens_total": (facts["tokens_per_min"] - facts["gen_per_min"]) * i,
                                "generation_tokens_total": facts["gen_per_min"] * i}, ts))
            # a small embedding server on GPU 0 alone: the job's there (GPU 1 is another owner's, then nobody's)
            step.append(Sample("inference", {**base, "endpoint": "embed", "server": "vllm", "model": "e5",
                                             "gpus": "0"}, {"prompt_tokens_total": EMBED_PER_MIN * i,
                                                            "generation_tokens_total": 0.0}, ts))
            pdu_w = facts["it_w"] / 10 + 300
            step.append(Sample("pdu", {**poller, "device": f"pdu-{rack}", "rack": rack, "role": "it",
                                       "scope": "device"},
                               {"power_watts": pdu_w, "energy_joules_total": pdu_w * t}, ts))
            step.append(Sample("pdu", {**poller, "device": f"pdu-{rack}", "rack": rack, "role": "it",
                                       "scope": "phase", "phase": "1"},
                               {"current_amperes": pdu_w / 230 * 2, "rated_load_percent": pdu_w / 35}, ts))
            step.append(Sample("environment", {**poller, "device": f"pdu-{rack}", "rack": rack, "sensor": "1"},
                               {"temperature_celsius": 24.0 + facts["hot"], "humidity_percent": 40.0 + facts["hot"]},
                               ts))
            step.append(Sample("alerts", {**base, "alertname": "GpuXidErrors", "severity": "warning"},
                               {"state": "firing" if rack == "r1" else "resolved", "firing": rack == "r1",
                                "value": 1.0 + facts["hot"], "active_seconds": t}, ts))
        step.append(Sample("ups", {**poller, "device": "ups-1"}, {
            "output_load_percent": 40.0 + facts["hot"], "battery_charge_percent": 100.0 - facts["hot"],
            "battery_runtime_seconds": 1800.0 + facts["hot"]}, ts))
        step.append(Sample("cooling", {**poller, "device": "crah-1", "unit": "1"}, {
            "supply_air_temperature_celsius": 20.0 + facts["hot"], "return_air_temperature_celsius": 30.0,
            "cooling_output_watts": 9000.0 - 100 * facts["hot"]}, ts))
        step.append(Sample("facility", {**poller, "pue_kind": "total"}, {
            "it_power_watts": facts["it_w"], "cooling_power_watts": 2500.0, "total_power_watts": facts["total_w"],
            "it_energy_joules_total": facts["it_w"] * t, "total_energy_joules_total": facts["total_w"] * t,
            "pue": facts["total_w"] / facts["it_w"], "pue_energy": facts["total_w"] / facts["it_w"]}, ts))
        cdu = {**poller, "target": "cdu-1", "chassis": "CDU", "chassis_role": "cooling_unit"}
        step.append(Sample("leak", {**cdu, "detector": "Moisture", "detector_type": "Moisture"},
                           {"leak_detected": site == "ams1" and i > 55, "state": "OK"}, ts))
        step.append(Sample("cooling", {**cdu, "connector": "secondary rack loop"},
                           {"coolant_flow_litres_per_minute": 42.0 + facts["hot"],
                            "coolant_supply_temperature_celsius": 30.0,
                            "coolant_return_temperature_celsius": 40.0 + facts["hot"]}, ts))
        # the utility meter and a rack CDU, read over Modbus by the poller
        step.append(Sample("meter", {**poller, "device": "utility", "role": "facility_total", "scope": "device",
                                     "source": "modbus_meter"},
                           {"power_watts": facts["total_w"], "energy_joules_total": facts["total_w"] * t}, ts))
        step.append(Sample("cooling", {**poller, "device": "cdu-2", "rack": "r2", "role": "cooling",
                                       "connector": "secondary", "source": "modbus_cooling"},
                           {"coolant_flow_litres_per_minute": 120.0, "coolant_supply_temperature_celsius": 32.0,
                            "coolant_return_temperature_celsius": 40.0, "heat_removed_watts": 66560.0,
                            "heat_removed_basis": "derived_water", "pump_speed_percent": 55.0 + facts["hot"]}, ts))
        for h in hosts:
            buses[h].observe([s for s in step if s.tags.get("host") == h])
        for h, col in eff.items():
            acc = Accumulator(ts, {"host": h, "site": site, "cluster": "c1", "rack": "r1" if h == hosts[0] else "r2"})
            try:
                col.collect(acc)
            except NotPresent:
                pass  # the first minute: nothing to meter yet
            step += [s for s in acc.close() if s.measurement in ("efficiency", "energy_balance")]
        for h, col in jobs.items():
            acc = Accumulator(ts, {"host": h, "site": site, "cluster": "c1", "rack": "r1" if h == hosts[0] else "r2"})
            col.collect(acc)
            step += acc.close()
        # the poller's rack and facility scopes, as its fleet query would give them for this scenario
        for rack in ("r1", "r2"):
            step.append(Sample("efficiency", {**poller, "scope": "rack", "rack": rack}, {
                "tokens_per_joule": facts["tokens_per_min"] / ((facts["it_w"] / 10 + 300) * 60)}, ts))
            pdu_w = facts["it_w"] / 10 + 300
            step.append(Sample("energy_balance", {**poller, "scope": "rack", "rack": rack, "meter": "rack_pdu",
                                                  "meter_source": "snmp_pdu"},
                               {"meter_watts": pdu_w, "components_watts": facts["node_w"], "partial_nodes": 0.0}, ts))
        step.append(Sample("efficiency", {**poller, "scope": "facility"}, {
            "tokens_per_joule": 2 * facts["tokens_per_min"] / (facts["total_w"] * 60),
            "joules_per_token": facts["total_w"] * 60 / (2 * facts["tokens_per_min"])}, ts))
        out += step
    return out, facts


def _load(influxd, db: str, samples: list[Sample]) -> None:
    from agent.outputs.influxdb import InfluxOutputOptions, V1Client

    influxd.create_db(db)
    client = V1Client(InfluxOutputOptions(name="i", api="v1", url=influxd.url, database=db), None, None)
    r = client.write(to_line_protocol(samples).encode())
    assert r.status == 204, r.body
    client.close()


# The selections checked against a database holding only what they select.
SUBSETS = {"dash_fra1": ({"site": "fra1"}, lambda s: s.tags.get("site") == "fra1"),
           "dash_ams1": ({"site": "ams1"}, lambda s: s.tags.get("site") == "ams1"),
           "dash_fra1_r2": ({"site": "fra1", "rack": "r2"},
                            lambda s: s.tags.get("site") == "fra1" and s.tags.get("rack") == "r2"),
           "dash_ams1_m1": ({"site": "ams1", "host": "m1"},
                            lambda s: s.tags.get("site") == "ams1" and s.tags.get("host") == "m1")}


@pytest.fixture(scope="module")
def loaded(influxd):
    """Both sites in one database ("dash"), as a fleet writes them, and each selection's subset alone."""
    now = time.time_ns()
    samples = []
    for site in SITES:
        samples += scenario(now, site)[0]
    _load(influxd, "dash", samples)
    for db, (_, keep) in SUBSETS.items():
        _load(influxd, db, [s for s in samples if keep(s)])
    return influxd, SITES["fra1"]


def run(influxd, q: str, selected: dict | None = None, db: str = "dash", at: float | None = None) -> list:
    return influxd.query(substitute(q, selected, at), db)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_panel_query_returns_data(loaded, name):
    influxd, _ = loaded
    for p in BOARDS[name].panels():
        for q in p.queries:
            series = run(influxd, q.influxql)
            values = [v for s in series for row in s["values"] for v in row[1:] if v is not None]
            assert values, (name, p.title, substitute(q.influxql))


@pytest.mark.parametrize("db", sorted(SUBSETS))
def test_every_panel_honours_the_selected_site_rack_and_host(loaded, db):
    """Each panel, run on both sites with a selection, equals the same panel run on a database holding only
    what the selection selects: a panel that ignores a variable (or lets first() and last() come from two
    sites) shows the other site's data and fails here."""
    influxd, _ = loaded
    selected = SUBSETS[db][0]
    at = time.time() + 60
    compared = 0
    for name, board in BOARDS.items():
        if not set(selected) <= {v.name for v in board.variables}:
            continue  # e.g. no host variable on the power and cooling board: a host is not selectable there
        for p in board.panels():
            for q in p.queries:
                got = run(influxd, q.influxql, selected, at=at)
                want = run(influxd, q.influxql, None, db, at=at)
                assert got == want, (name, p.title, substitute(q.influxql, selected))
                compared += bool(want)
    assert compared >= 25  # the subsets have data for most panels: the comparison is not of empty results


@pytest.mark.parametrize("site", sorted(SITES))
def test_pue_of_the_selected_site(loaded, site):
    influxd, _ = loaded
    panels = {p.title: p for p in BOARDS["efficiency"].panels()}
    facts = SITES[site]
    for title in ("PUE, last 24 h (energy)", "PUE, last 7 d (energy)"):
        series = run(influxd, panels[title].queries[0].influxql, {"site": site})
        (pue,) = [v for s in series for row in s["values"] for v in row[1:] if v is not None]
        assert pue == pytest.approx(facts["total_w"] / facts["it_w"], rel=0.01)


def test_pue_and_tokens_per_joule_panels_equal_the_scenario(loaded):
    influxd, facts = loaded
    board = BOARDS["efficiency"]
    panels = {p.title: p for p in board.panels()}

    def first(title, idx=0):
        series = run(influxd, panels[title].queries[idx].influxql, {"site": "fra1"})
        return [v for s in series for row in s["values"] for v in row[1:] if v is not None]

    (pue,) = first("PUE, last 24 h (energy)")
    assert pue == pytest.approx(facts["total_w"] / facts["it_w"], rel=0.01)
    # node scope: tokens of the node over the energy of its node meter (its BMC's PSU input, integrated), from the
    # agent's own efficiency collector
    node = first("Tokens per joule by scope", 1)
    want = (facts["tokens_per_min"] + EMBED_PER_MIN) / (facts["node_w"] * 60)
    assert node and all(v == pytest.approx(want, rel=0.01) for v in node)
    (per_kwh,) = first("Tokens per kWh (facility)")
    assert per_kwh == pytest.approx(2 * facts["tokens_per_min"] / (facts["total_w"] * 60) * 3.6e6, rel=0.01)


def test_jobs_panels_equal_the_scenario(loaded):
    """Each node's job on GPU 0 drew gpu_w for the hour; GPU 1's process, nobody's, ran for its first 29 windows,
    then GPU 1 was nobody's: the energy by job sums the nodes' counters, nothing was held idle."""
    influxd, facts = loaded
    panels = {p.title: p for p in BOARDS["jobs"].panels()}
    (q,) = panels["GPU energy by job (window)"].queries
    by_job = {s["tags"]["job_id"]: s["values"][0] for s in run(influxd, q.influxql, {"site": "fra1"})}
    assert set(by_job) == {"700", "701", "unowned"}
    hour_kwh = facts["gpu_w"] * 3600 / 3.6e6
    assert by_job["700"][1] == pytest.approx(hour_kwh, rel=1e-6) and by_job["701"][1] == pytest.approx(hour_kwh)
    assert by_job["unowned"][1] == pytest.approx(2 * hour_kwh * 29 / 60)  # GPU 1 of both nodes, 29 minutes
    (nobody,) = panels["Energy nobody held (window)"].queries
    assert [v for s in run(influxd, nobody.influxql, {"site": "fra1"}) for r in s["values"] for v in r[1:]] == \
        [pytest.approx(2 * hour_kwh * 31 / 60)]
    (tpj,) = panels["Tokens per joule by job and model"].queries
    by_model = {(s["tags"]["job_id"], s["tags"]["model"]): s["values"][-1][1]
                for s in run(influxd, tpj.influxql, {"site": "fra1"})}
    assert by_model == {("700", "e5"): pytest.approx(EMBED_PER_MIN / (facts["gpu_w"] * 60), abs=1e-6),
                        ("701", "e5"): pytest.approx(EMBED_PER_MIN / (facts["gpu_w"] * 60), abs=1e-6)}
    (idle_q,) = panels["Held-idle GPU hours (window)"].queries
    assert [v for s in run(influxd, idle_q.influxql, {"site": "fra1"}) for r in s["values"] for v in r[1:]] == [0]


def test_where_the_node_watts_go_equals_the_scenario(loaded):
    influxd, facts = loaded
    panels = {p.title: p for p in BOARDS["node-energy"].panels()}

    def values(title, idx):
        series = run(influxd, panels[title].queries[idx].influxql, {"site": "fra1", "host": "n1"})
        return [v for s in series for row in s["values"] for v in row[1:] if v is not None]

    gpus, rest = values("Where the node's watts go", 0), values("Where the node's watts go", 2)
    assert gpus and all(v == pytest.approx(2 * facts["gpu_w"]) for v in gpus)
    assert rest and all(v == pytest.approx(facts["node_w"] - 2 * facts["gpu_w"]) for v in rest)
    assert not values("Where the node's watts go", 1)  # no RAPL on these nodes: no CPU line, not a zero one
    pct = values("Rest of node, percent of the meter", 0)
    assert pct and all(v == pytest.approx(100 * (1 - 2 * facts["gpu_w"] / facts["node_w"])) for v in pct)


class FakeGrafana:
    """A loopback server speaking the parts of Grafana's HTTP API that push uses, checking each request."""

    def __init__(self, token: str = "glsa_test") -> None:
        from http.server import BaseHTTPRequestHandler

        self.folders: dict[str, dict] = {}
        self.dashboards: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def _reply(self, code, doc):
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _auth(self):
                outer.calls.append((self.command, self.path))
                if self.headers.get("Authorization") != f"Bearer {token}":
                    self._reply(401, {"message": "Unauthorized"})
                    return False
                return True

            def do_GET(self):
                if not self._auth():
                    return
                if self.path.startswith("/api/folders"):
                    return self._reply(200, list(outer.folders.values()))
                self._reply(404, {"message": "not found"})

            def do_POST(self):
                if not self._auth():
                    return
                doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/api/folders":
                    if any(f["title"] == doc["title"] for f in outer.folders.values()):
                        return self._reply(409, {"message": "a folder with the same name already exists"})
                    f = {"id": len(outer.folders) + 1, "uid": doc.get("uid", "x"), "title": doc["title"]}
                    outer.folders[f["uid"]] = f
                    return self._reply(200, f)
                if self.path == "/api/dashboards/db":
                    d = doc["dashboard"]
                    assert doc["overwrite"] is True and doc["folderUid"] in outer.folders
                    assert d["uid"] and d["schemaVersion"] and d["panels"]
                    outer.dashboards[d["uid"]] = d
                    return self._reply(200, {"status": "success", "uid": d["uid"], "url": f"/d/{d['uid']}/x",
                                             "version": 1})
                self._reply(404, {"message": "not found"})

            def log_message(self, *a):
                pass

        self.httpd, self.url = serve_http(H)

    def close(self):
        self.httpd.shutdown()


def test_push_creates_the_folder_once_and_overwrites_by_uid(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    g = FakeGrafana()
    (tmp_path / "token").write_text("glsa_test\n")
    (tmp_path / "wrong").write_text("nope\n")

    def push(token_file, url=None):
        return subprocess.run([sys.executable, "-m", "agent", "dashboards", "push", "--url", url or g.url,
                               "--token-file", str(tmp_path / token_file)], cwd=root, capture_output=True,
                              text=True, timeout=60)

    try:
        for _ in range(2):  # idempotent: the second push overwrites, creates nothing new
            r = push("token")
            assert r.returncode == 0, r.stderr
        assert set(g.dashboards) == {json.loads(render(b))["uid"] for b in BOARDS.values()}
        assert list(g.folders) == ["aifactory"] and [c for c in g.calls if c == ("POST", "/api/folders")] == [
            ("POST", "/api/folders")]
        assert "aifactory-efficiency: " + g.url + "/d/aifactory-efficiency/x" in r.stdout
        r = push("wrong")
        assert r.returncode == 1 and "refused the token (401)" in r.stderr
    finally:
        g.close()
    r = push("token", url="http://127.0.0.1:1")
    assert r.returncode == 1 and "cannot reach Grafana at http://127.0.0.1:1" in r.stderr


def test_each_board_renders_to_png_from_real_query_results(loaded, tmp_path):
    from agent.dashboards.render import render_board

    influxd, _ = loaded
    for name, board in BOARDS.items():
        path = tmp_path / f"{name}.png"
        render_board(board, lambda q: run(influxd, q), path)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_render_examples_script_draws_every_board(influxd, tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(Path(__file__).resolve().parent.parent / "dashboards" / "render-examples"),
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(f"dashboard-{n}.png" for n in BOARDS)


# --- the PromQL variant on a real Prometheus, loaded with the same scenario through remote write -------------------


def prom_substitute(q: str, selected: dict[str, str] | None = None) -> str:
    """The PromQL as Grafana sends it: Grafana's interval macros, and the board's variables."""
    q = q.replace("$__rate_interval", "4m").replace("$__interval", "1m").replace("$__range", "2h")
    return board_variables(q, selected)


@pytest.fixture(scope="module")
def prom_loaded(tmp_path_factory):
    """A Prometheus 2.42 receiving both sites' scenario through the agent's remote-write output (per-process and
    per-job series included), with the exported rules (alerts and the recording rules, evaluated every 2 s)."""
    import subprocess
    import sys

    import yaml

    from agent.outputs.remote_write import RemoteWriteOptions, RemoteWriteOutput

    from .services import Prometheus
    from .test_prometheus import drain

    root = tmp_path_factory.mktemp("prom-dash")
    rules = root / "rules.yml"
    r = subprocess.run([sys.executable, "-m", "agent", "rules", "export", "-o", str(rules)], capture_output=True,
                       text=True, cwd=Path(__file__).resolve().parent.parent, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(rules.read_text())
    for g in doc["groups"]:
        g["interval"] = "2s"
    rules.write_text(yaml.safe_dump(doc, sort_keys=False))
    prom = Prometheus(root / "prom", remote_write_receiver=True, rule_files=[rules]).start()
    now = time.time_ns()
    samples = []
    for site in SITES:
        samples += scenario(now, site)[0]
    out = RemoteWriteOutput(RemoteWriteOptions(url=prom.url + "/api/v1/write", include=["processes", "jobs"],
                                               flush_interval=0.05, batch_size=5000), root, CAT)
    out.start()
    out.append(sorted(samples, key=lambda s: s.ts))
    assert drain(out, 120) and out.stats()["rejected_points_total"] == 0
    out.stop(5)
    time.sleep(5)  # two rule evaluations over the loaded hour
    yield prom, now / 1e9
    prom.stop()


@pytest.mark.services
@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_promql_panel_query_returns_data(prom_loaded, name):
    prom, now = prom_loaded
    for p in BOARDS[name].panels():
        for q in p.queries:
            res = prom.query_range(prom_substitute(q.promql), now - 3600, now + 60)
            values = [v for s in res for _, v in s["values"] if v not in ("NaN", "+Inf", "-Inf")]
            assert values, (name, p.title, prom_substitute(q.promql))


@pytest.mark.services
@pytest.mark.parametrize("site", sorted(SITES))
def test_promql_pue_and_tokens_per_joule_panels_equal_the_scenario(prom_loaded, site):
    prom, now = prom_loaded
    facts = SITES[site]
    panels = {p.title: p for p in BOARDS["efficiency"].panels()}

    def instant(title):
        res = prom.query(prom_substitute(panels[title].queries[0].promql, {"site": site}), now + 30)
        (value,) = [float(r["value"][1]) for r in res]
        return value

    for title in ("PUE, last 24 h (energy)", "PUE, last 7 d (energy)"):
        assert instant(title) == pytest.approx(facts["total_w"] / facts["it_w"], rel=0.01), title
    tpj = 2 * facts["tokens_per_min"] / (facts["total_w"] * 60)
    assert instant("Tokens per kWh (facility)") == pytest.approx(tpj * 3.6e6, rel=0.01)


@pytest.mark.services
@pytest.mark.parametrize("site", sorted(SITES))
def test_recording_rules_agree_with_the_scenarios_counters(prom_loaded, site):
    """The rack and facility scopes recorded by Prometheus from the devices' and nodes' counters equal what the
    scenario's counters say: each rack PDU's power, the site's utility meter against its IT PDUs, the tokens."""
    prom, now = prom_loaded
    facts = SITES[site]
    pdu_w = facts["it_w"] / 10 + 300  # each rack's PDU in the scenario
    rack_tokens_per_s = (facts["tokens_per_min"] + EMBED_PER_MIN) / 60

    def recorded(name: str) -> dict[str, float]:
        res = prom.query(f'{name}{{site="{site}"}}', now + 30)
        return {r["metric"].get("rack", ""): float(r["value"][1]) for r in res}

    it = recorded("rack:aifactory_it_energy_joules:increase5m")
    assert it and all(v == pytest.approx(pdu_w * 300, rel=0.01) for v in it.values()), it
    tpj = recorded("rack:aifactory_tokens_per_joule:ratio5m")
    assert set(tpj) == {"r1", "r2"}
    assert all(v == pytest.approx(rack_tokens_per_s / pdu_w, rel=0.01) for v in tpj.values()), tpj
    (pue,) = recorded("site:aifactory_pue:ratio1h").values()
    assert pue == pytest.approx(facts["total_w"] / (2 * pdu_w), rel=0.01)
