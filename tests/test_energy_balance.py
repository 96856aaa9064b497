"""Energy balance and the node meter, on a node with known meters: a PDU outlet (its energy counter), a BMC
(sushy-static serving a DMTF mockup whose PSU and chassis readings the test sets), two fake H100s (the fake
NVML's energy counter) and a RAPL tree. Simulated time: every collector runs on the same 10 s grid."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent.alerts.engine import AlertEngine
from agent.alerts.rules import load_rules
from agent.bus import SampleBus
from agent.collector import Context
from agent.config import DEFAULT_RULES
from agent.model import Accumulator, Sample
from collectors.efficiency import EfficiencyCollector, window_offset
from collectors.gpu import GpuCollector, GpuOptions
from collectors.host import HostCollector, HostOptions
from collectors.redfish import RedfishCollector, RedfishOptions

from .fakes.nvml import FakeGpu, FakeNvml
from .services import SushyStatic, tls_pair

pytestmark = pytest.mark.services
FIXTURES = Path(__file__).parent / "fixtures" / "redfish"
T0 = 1_800_000_000 * 10**9
STEP = 10 * 10**9
GPU_W, CPU_W = 500.0, 150.0  # per GPU (two of them), the CPU package


class Node:
    """A node on the simulated grid: fake GPUs, a RAPL tree, optionally a PDU outlet's counter and a BMC
    (sushy-static serving a copy of a fixture, `edit`ed first), the efficiency collector over them. `each_step`
    hooks change the devices before a step (BMC documents, GPU counters, the outlet)."""

    def __init__(self, tmp: Path, outlet: bool = True, bmc: bool = True, mockup: str = "rackmount", edit=None,
                 gpus: int = 2, tokens: bool = True, **eff_opts) -> None:
        self.tmp = tmp
        self.bus = SampleBus()
        self.gpus = [FakeGpu("H100-SXM", i) for i in range(gpus)]
        self.gpu_w = [GPU_W] * gpus
        self.gpu_j = [9_000_000.0] * gpus  # the driver's counters, J
        self.lost: set[int] = set()
        self.gpu = GpuCollector(GpuOptions(xid_events=False), Context("gpu", state_dir=tmp), nvml=FakeNvml(self.gpus))
        self.rapl = tmp / "sys" / "class" / "powercap" / "intel-rapl:0"
        self.rapl.mkdir(parents=True)
        (self.rapl / "max_energy_range_uj").write_text("262143328850\n")
        self.rapl_uj = 1_000_000_000
        self.host = HostCollector(HostOptions(per_cpu=False, temperatures=False),
                                  Context("host", sys_root=tmp / "sys", state_dir=tmp))
        self.outlet = outlet
        self.outlet_j = 5e6
        self.outlet_answers = True
        self.tokens = tokens
        self.each_step: list = []
        opts = {"window": 60.0, **eff_opts}
        if outlet:
            opts["node_energy"] = {"measurement": "pdu", "tags": {"device": "pdu-r1-a", "outlet": "7"}}
        self.eff = EfficiencyCollector(EfficiencyCollector.Options(**opts),
                                       Context("efficiency", bus=self.bus, sys_root=tmp / "sys", state_dir=tmp))
        self.redfish = self.srv = None
        if bmc:
            self.folder = tmp / "bmc"
            shutil.copytree(FIXTURES / mockup, self.folder)
            if mockup == "rackmount":  # the mockup's 400 W supply: this node's draws 1.5 kW
                self.edit("Chassis/1U/PowerSubsystem/PowerSupplies/Bay1", lambda d: d.update(PowerCapacityWatts=2000))
                self.set_bmc(psu_w=1500, chassis_w=1450)
            if edit:
                edit(self)
            tls = tls_pair(tmp / "tls")
            self.srv = SushyStatic(self.folder, tls).start()
            self.redfish = RedfishCollector(RedfishOptions(targets=[{"name": "bmc", "url": self.srv.url,
                                                                     "ca_file": str(tls[0])}]),
                                            Context("redfish", state_dir=tmp, timeout=20.0))
        self.outlet_w = 1600.0

    def edit(self, rel: str, fn) -> None:
        """Change one of the BMC's documents (its path under /redfish/v1)."""
        f = self.folder / rel / "index.json"
        d = json.loads(f.read_text())
        fn(d)
        f.write_text(json.dumps(d))

    def doc(self, rel: str) -> dict:
        return json.loads((self.folder / rel / "index.json").read_text())

    def set_bmc(self, psu_w: float, chassis_w: float) -> None:
        if not hasattr(self, "folder"):
            return
        for rel, key, value in (("Chassis/1U/PowerSubsystem/PowerSupplies/Bay1/Metrics", "InputPowerWatts", psu_w),
                                ("Chassis/1U/EnvironmentMetrics", "PowerWatts", chassis_w)):
            self.edit(rel, lambda d: d[key].update(Reading=value))

    def step(self, k: int) -> list[Sample]:
        ts = T0 + k * STEP
        for hook in self.each_step:
            hook(self, k)
        for i, g in enumerate(self.gpus):  # the driver's counter, mJ
            if k:
                self.gpu_j[i] += self.gpu_w[i] * STEP / 1e9
            g.p["fields"][83] = int(self.gpu_j[i] * 1000)
            g.p["fields"][186] = int(self.gpu_w[i] * 1000)
            g.lost = i in self.lost
        (self.rapl / "energy_uj").write_text(f"{self.rapl_uj + int(CPU_W * 1e6 * 10 * k)}\n")
        out: list[Sample] = []
        for col in (self.gpu, self.host, self.redfish):
            if col is None:
                continue
            acc = Accumulator(ts, {"host": "node1", "rack": "r1"})
            col.collect(acc)
            out += acc.close()
        if self.outlet and self.outlet_answers:
            out.append(Sample("pdu", {"host": "poller", "device": "pdu-r1-a", "outlet": "7", "scope": "outlet",
                                      "source": "snmp_pdu"}, {"energy_joules_total": self.outlet_j + 16_000 * k}, ts))
        if self.tokens:
            out.append(Sample("inference", {"host": "node1", "endpoint": "e", "model": "m", "server": "vllm",
                                            "gpus": ",".join(str(i) for i in range(len(self.gpus)))},
                              {"prompt_tokens_total": 1000.0 * k, "generation_tokens_total": 500.0 * k}, ts))
        self.bus.observe(out)
        acc = Accumulator(ts, {"host": "node1", "rack": "r1"})
        self.eff.collect(acc)
        self.last = out
        return acc.close()

    def run(self, steps: int = 8) -> list[Sample]:
        for k in range(steps):
            out = self.step(k)
        return out

    def close(self):
        if self.redfish is not None:
            self.redfish.close()
        if self.srv is not None:
            self.srv.stop()


@pytest.fixture
def node(tmp_path):
    made = []

    def make(**kw):
        made.append(Node(tmp_path / str(len(made)), **kw))
        return made[-1]

    yield make
    for n in made:
        n.close()


def balance(samples):
    (b,) = [s for s in samples if s.measurement == "energy_balance"]
    return b


def node_efficiency(samples):
    (e,) = [s for s in samples if s.measurement == "efficiency" and s.tags["scope"] == "node"]
    return e


COMPONENTS_J = (2 * GPU_W + CPU_W) * 60  # 69,000 J over the 60 s window


def test_the_outlet_is_the_best_meter_and_the_residual_is_the_rest_of_the_node(node):
    n = node()
    out = n.run()
    b = balance(out)
    assert b.tags["meter"] == "outlet" and b.tags["scope"] == "node"
    assert b.fields["meter_energy_joules"] == pytest.approx(1600 * 60)
    assert b.fields["gpu_energy_joules"] == pytest.approx(2 * GPU_W * 60)
    assert b.fields["cpu_energy_joules"] == pytest.approx(CPU_W * 60)
    assert b.fields["components_energy_joules"] == pytest.approx(COMPONENTS_J)
    assert b.fields["residual_watts"] == pytest.approx(1600 - 1150)
    assert b.fields["residual_percent"] == pytest.approx(100 * 450 / 1600)
    assert b.fields["residual_in_band"] is True and b.fields["components_exceed_meter"] is False
    e = node_efficiency(out)
    assert e.tags["meter"] == "outlet" and "partial" not in e.tags
    assert e.fields["tokens_per_joule"] == pytest.approx(1500 * 6 / (1600 * 60))


def test_without_an_outlet_the_bmc_psu_inputs_then_its_chassis_reading(node):
    n = node(outlet=False)
    out = n.run()
    b = balance(out)
    # Bay1's InputPowerWatts (the mockup's Bay2 has no Metrics), integrated: its EnergykWh moves in 3.6 MJ steps
    assert (b.tags["meter"], b.tags["meter_source"]) == ("psu_input", "redfish")
    assert b.fields["meter_watts"] == pytest.approx(1500)
    assert b.fields["residual_watts"] == pytest.approx(1500 - 1150)
    assert node_efficiency(out).tags["meter"] == "psu_input"
    chassis_first = node(outlet=False, node_meter=["chassis", "components"])
    b = balance(chassis_first.run())
    assert b.tags["meter"] == "chassis" and b.fields["meter_watts"] == pytest.approx(1450)


def test_gpus_and_rapl_alone_are_a_partial_node_and_no_balance(node):
    n = node(outlet=False, bmc=False)
    out = n.run()
    assert not [s for s in out if s.measurement == "energy_balance"]
    e = node_efficiency(out)
    assert e.tags["meter"] == "components" and e.tags["partial"] == "true" and e.tags["energy_source"] == "gpu+rapl"
    assert e.fields["window_energy_joules"] == pytest.approx(COMPONENTS_J)
    strict = node(outlet=False, bmc=False, node_meter=["outlet", "psu_input"])
    assert not [s for s in strict.run() if s.measurement == "efficiency" and s.tags.get("scope") == "node"]


def test_components_above_the_meter_fire_the_default_rule(node):
    n = node(outlet=False)
    n.set_bmc(psu_w=1000, chassis_w=1000)  # a BMC under-reading: GPUs + CPU measure 1150 W
    engine = AlertEngine([r for r in load_rules(DEFAULT_RULES) if r.name.startswith("Energy")], None)
    states = []
    for k in range(8 + 40):
        out = n.step(k)
        engine.observe(out)
        engine.evaluate((T0 + k * STEP) / 1e9)
        states.append({a["alertname"]: a["state"] for a in engine.alerts.values()})
    b = balance(out)
    assert b.fields["components_exceed_meter"] is True and b.fields["residual_percent"] == pytest.approx(-15)
    assert b.fields["residual_in_band"] is False
    assert states[-1]["EnergyComponentsExceedMeter"] == "firing"
    assert states[10]["EnergyComponentsExceedMeter"] == "pending"  # firing only after its 5 minutes
    assert "EnergyComponentsExceedMeter" not in states[5]  # no balance before the first full window


def test_node_windows_on_the_grid_for_the_fleet(node):
    n = node()
    rows = [s for k in range(14) for s in n.step(k) if s.measurement == "node_window"]
    # one row per finished minute of the grid, stamped with its end: what the poller sums per rack
    # (stamped under a second past the window's end: a node's own offset, so a rack's rows share one series)
    assert [s.ts - s.ts % 10**9 for s in rows] == [T0 + 60 * 10**9, T0 + 120 * 10**9]
    assert rows[0].ts == T0 + 60 * 10**9 + window_offset("node1", T0 + 60 * 10**9)
    for s in rows:
        assert s.tags == {"meter": "outlet", "rack": "r1"}  # no host: one series per rack
        assert s.fields == {"tokens": 1500 * 6, "generation_tokens": 500 * 6, "energy_joules": 1600 * 60,
                            "window_seconds": 60, "partial": 0}
    bare = node(outlet=False, bmc=False)
    rows = [s for k in range(8) for s in bare.step(k) if s.measurement == "node_window"]
    assert [(s.tags["meter"], s.fields["partial"], s.fields["energy_joules"]) for s in rows] == [
        ("components", 1, pytest.approx(COMPONENTS_J))]
