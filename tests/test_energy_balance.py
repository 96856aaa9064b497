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
from agent.model import Accumulator, Sample
from agent.registry import default_registry
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
            self.edit(rel, lambda d, key=key, value=value: d[key].update(Reading=value))

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
    rules = [r for f in default_registry().rule_files() for r in load_rules(f)]
    engine = AlertEngine([r for r in rules if r.name.startswith("Energy")], None)
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


# --- the node meter on real BMC layouts ---------------------------------------------------------------------
# Each test below runs the redfish (or ipmi), gpu, host and efficiency collectors together on a DMTF mockup or a
# variant of one, and checks the node meter's watts and energy against the figures in the fixture itself.


def meter(samples):
    (m,) = [s for s in samples if s.measurement == "node_meter"]
    return m


def add_sensor(n: Node, chassis: str, sid: str, reading_type: str, reading: float, context: str | None,
               sub: str | None = None, units: str = "W") -> None:
    """A Sensor (Sensor v1_12, shaped as the mockup's own PS1InputPower) listed in the chassis's Sensors."""
    uri = f"/redfish/v1/Chassis/{chassis}/Sensors/{sid}"
    doc = {"@odata.type": "#Sensor.v1_12_0.Sensor", "@odata.id": uri, "Id": sid, "Name": sid,
           "ReadingType": reading_type, "ReadingUnits": units, "Reading": reading,
           "Status": {"State": "Enabled", "Health": "OK"}}
    if context:
        doc["PhysicalContext"] = context
    if sub:
        doc["PhysicalSubContext"] = sub
    folder = n.folder / "Chassis" / chassis / "Sensors" / sid
    folder.mkdir(parents=True)
    (folder / "index.json").write_text(json.dumps(doc))
    n.edit(f"Chassis/{chassis}/Sensors", lambda d: (d["Members"].append({"@odata.id": uri}),
                                                     d.update({"Members@odata.count": len(d["Members"])})))


def counting(rel: str, path: list[str], watts: float, start: float = 5e9, steps=None):
    """A step hook: the BMC document's energy counter (joules) advances at `watts`; `steps` overrides the
    reading at some steps (a dip, a zero, garbage)."""
    def hook(n: Node, k: int) -> None:
        value = (steps or {}).get(k, start + watts * 10 * k)

        def put(d):
            for p in path[:-1]:
                d = d[p]
            d[path[-1]] = value
        n.edit(rel, put)
    return hook


def test_the_meter_is_the_chassis_the_system_names_never_a_sum_of_chassis(node):
    # DMTF public-telemetry: four chassis at 8000 W each; its one ComputerSystem names only Chassis/1
    n = node(outlet=False, mockup="telemetry", node_meter=["psu_input", "chassis", "components"])
    out = n.run()
    figure = n.doc("Chassis/1/Power")["PowerControl"][0]["PowerConsumedWatts"]
    m = meter(out)
    assert (m.tags["meter"], m.fields["power_watts"]) == ("chassis", pytest.approx(figure))
    assert m.fields["energy_joules"] == pytest.approx(figure * 60)
    assert balance(out).fields["meter_watts"] == pytest.approx(figure)
    trays = [s for s in n.last if s.measurement == "bmc_power" and s.tags["chassis"].startswith("Tray")]
    assert trays and {s.tags["chassis_role"] for s in trays} == {"other"}


def test_a_gpu_board_inside_the_node_is_a_component_not_added_to_the_meter(node):
    def nested(n: Node) -> None:
        # a "GPU Board" chassis inside the 1U one (Links.ContainedBy / Contains), shaped as 1U's own
        # EnvironmentMetrics; and a server whose Model says HGX stays the node
        env = n.doc("Chassis/1U/EnvironmentMetrics")
        board = n.folder / "Chassis" / "GPUBoard"
        (board / "EnvironmentMetrics").mkdir(parents=True)
        env.update({"@odata.id": "/redfish/v1/Chassis/GPUBoard/EnvironmentMetrics", "PowerWatts": {"Reading": 2400}})
        env.pop("FanSpeedsPercent", None)
        (board / "EnvironmentMetrics" / "index.json").write_text(json.dumps(env))
        (board / "index.json").write_text(json.dumps({
            "@odata.type": "#Chassis.v1_28_0.Chassis", "@odata.id": "/redfish/v1/Chassis/GPUBoard", "Id": "GPUBoard",
            "Name": "GPU Board", "ChassisType": "Module", "Status": {"State": "Enabled"},
            "EnvironmentMetrics": {"@odata.id": "/redfish/v1/Chassis/GPUBoard/EnvironmentMetrics"},
            "Links": {"ContainedBy": {"@odata.id": "/redfish/v1/Chassis/1U"}}}))
        n.edit("Chassis", lambda d: d["Members"].append({"@odata.id": "/redfish/v1/Chassis/GPUBoard"}))
        n.edit("Chassis/1U", lambda d: (d.update(Model="HGX H100 8-GPU"),
                                        d["Links"].update(Contains=[{"@odata.id": "/redfish/v1/Chassis/GPUBoard"}])))
        n.set_bmc(psu_w=3100, chassis_w=3000)

    n = node(outlet=False, edit=nested, node_meter=["chassis", "components"])
    out = n.run()
    m = meter(out)
    assert (m.tags["meter"], m.fields["power_watts"]) == ("chassis", pytest.approx(3000))
    board = [s for s in n.last if s.measurement == "bmc_power" and s.tags["chassis"] == "GPUBoard"]
    assert [(s.tags["chassis_role"], s.tags["scope"]) for s in board] == [("component", "component")]
    one_u = [s for s in n.last if s.measurement == "bmc_power" and s.tags["chassis"] == "1U"]
    assert {s.tags["chassis_role"] for s in one_u} == {"node"}  # "HGX" in its Model does not move its PSUs


def test_a_sensor_of_an_unlisted_context_is_a_component_never_the_chassis_meter(node):
    def vr(n: Node) -> None:
        n.set_bmc(psu_w=3100, chassis_w=3000)
        add_sensor(n, "1U", "VR1Energy", "EnergyJoules", 1e6, "VoltageRegulator", units="J")
        add_sensor(n, "1U", "PSUAux", "Power", 900, "PowerSupply")  # a supply's sensor that says neither side

    n = node(outlet=False, edit=vr, node_meter=["chassis", "components"])
    n.each_step.append(counting("Chassis/1U/Sensors/VR1Energy", ["Reading"], 300, start=1e6))
    out = n.run()
    m = meter(out)
    # the VoltageRegulator counter (300 W) used to outrank EnvironmentMetrics' 3000 W
    assert (m.tags["meter"], m.fields["power_watts"]) == ("chassis", pytest.approx(3000))
    scopes = {s.tags["component"]: s.tags["scope"] for s in n.last if s.measurement == "bmc_power"}
    assert scopes["VR1Energy"] == "component"
    # a PowerSupply sensor that says neither Input nor Output is not taken as an input
    from collectors.redfish.model import load_models, sensor_scope

    assert sensor_scope(load_models(), n.doc("Chassis/1U/Sensors/PSUAux")) == "psu"


def test_a_supply_read_by_its_metrics_and_its_sensor_counts_once(node):
    def no_link(n: Node) -> None:  # public-rackmount1 without the optional DataSourceUri
        n.edit("Chassis/1U/PowerSubsystem/PowerSupplies/Bay1/Metrics",
               lambda d: [v.pop("DataSourceUri", None) for v in d.values() if isinstance(v, dict)])

    n = node(outlet=False, edit=no_link, node_meter=["psu_input", "components"])
    out = n.run()
    figure = n.doc("Chassis/1U/PowerSubsystem/PowerSupplies/Bay1/Metrics")["InputPowerWatts"]["Reading"]
    sensor = n.doc("Chassis/1U/Sensors/PS1InputPower")["Reading"]
    assert figure != sensor
    m = meter(out)
    assert (m.tags["meter"], m.fields["power_watts"]) == ("psu_input", pytest.approx(figure))


def test_a_supply_with_a_power_and_an_energy_sensor_counts_once(node):
    def sensors_only(n: Node) -> None:  # no PowerSubsystem: the supply is read through its Sensors alone
        n.edit("Chassis/1U", lambda d: d.pop("PowerSubsystem"))
        n.edit("Chassis/1U/Sensors/PS1InputPower", lambda d: d.update(Reading=1500))
        add_sensor(n, "1U", "PS1InputEnergy", "EnergyJoules", 2e9, "PowerSupply", "Input", units="J")

    n = node(outlet=False, edit=sensors_only, node_meter=["psu_input", "components"])
    n.each_step.append(counting("Chassis/1U/Sensors/PS1InputEnergy", ["Reading"], 1500, start=2e9))
    out = n.run()
    m = meter(out)
    assert (m.tags["meter"], m.fields["power_watts"]) == ("psu_input", pytest.approx(1500))
    assert m.fields["energy_joules"] == pytest.approx(1500 * 60)


def test_two_energy_properties_of_one_resource_are_not_one_counter(node):
    def both(n: Node) -> None:
        n.set_bmc(psu_w=2100, chassis_w=2000)
        n.edit("Chassis/1U/EnvironmentMetrics", lambda d: d.update(EnergyJoules={"Reading": 5e9},
                                                                   EnergykWh={"Reading": 5e9 / 3.6e6}))

    n = node(outlet=False, edit=both, node_meter=["chassis", "components"])

    def both_counters(n: Node, k: int) -> None:
        j = 5e9 + 2000 * 10 * k
        n.edit("Chassis/1U/EnvironmentMetrics", lambda d: (d["EnergyJoules"].update(Reading=j),
                                                           d["EnergykWh"].update(Reading=round(j / 3.6e6, 1))))
    n.each_step.append(both_counters)
    seen = []
    for k in range(8):
        out = n.step(k)
        (env,) = [s for s in n.last if s.measurement == "bmc_power" and s.tags["component"] == "chassis"]
        seen.append(env.fields["energy_joules_total"])
    assert seen == [5e9 + 2000 * 10 * k for k in range(8)]  # the joule counter, never mixed with the kWh one
    m = meter(out)
    assert (m.tags["meter"], m.fields["power_watts"]) == ("chassis", pytest.approx(2000))
    assert balance(out).fields["meter_watts"] == pytest.approx(2000)


@pytest.mark.parametrize("kwh_step", [0.1, 0.01])
def test_kwh_counters_are_used_only_over_windows_their_steps_resolve(node, kwh_step):
    def kwh(n: Node) -> None:
        n.set_bmc(psu_w=1200, chassis_w=1150)

    n = node(outlet=False, edit=kwh, node_meter=["psu_input", "components"])

    def psu_counter(n: Node, k: int) -> None:  # 1200 W on a counter that moves in kwh_step steps
        exact = 1000.0 + 1200 * 10 * k / 3.6e6
        n.edit("Chassis/1U/PowerSubsystem/PowerSupplies/Bay1/Metrics",
               lambda d: d["EnergykWh"].update(Reading=round(exact - exact % kwh_step, 6)))
    n.each_step.append(psu_counter)
    watts = []
    for k in range(40):
        out = n.step(k)
        if k >= 7:
            m = meter(out)
            watts.append((m.tags["meter"], round(m.fields["power_watts"], 6)))
    assert set(watts) == {("psu_input", 1200)}  # the power integral, in every window: never 0, never 6000


def test_a_kwh_only_supply_is_not_the_meter_over_a_minute_and_says_why(node):
    def kwh_only(n: Node) -> None:
        n.set_bmc(psu_w=1200, chassis_w=1150)
        n.edit("Chassis/1U/PowerSubsystem/PowerSupplies/Bay1/Metrics", lambda d: d.pop("InputPowerWatts"))

    n = node(outlet=False, edit=kwh_only, node_meter=["psu_input", "chassis", "components"])
    n.each_step.append(lambda n, k: n.edit("Chassis/1U/PowerSubsystem/PowerSupplies/Bay1/Metrics", lambda d: d[
        "EnergykWh"].update(Reading=round(1000 + (1200 * 10 * k / 3.6e6) // 0.1 * 0.1, 1))))
    out = n.run(45)  # past its first 0.1 kWh step (every 30 s x 10 readings at 1200 W)
    m = meter(out)
    assert (m.tags["meter"], m.fields["power_watts"]) == ("chassis", pytest.approx(1150))
    assert "psu_input" in m.fields["note"] and "0.1 kWh steps" in m.fields["note"]


def test_a_stale_outlet_hands_over_to_the_next_meter_and_the_windows_go_on(node):
    n = node(node_meter=["outlet", "psu_input", "components"])
    rows, meters = [], []
    for k in range(40):
        if k == 19:
            n.outlet_answers = False  # the PDU stops answering after 180 s
        out = n.step(k)
        rows += [s for s in out if s.measurement == "node_window"]
        meters += [(k, meter(out).tags["meter"], meter(out).fields) for _ in [0] if k >= 6]
    ends = [s.ts - s.ts % 10**9 for s in rows]
    assert ends == sorted(set(ends)) and ends == [T0 + i * 60 * 10**9 for i in range(1, 7)]  # every minute, once
    assert [s.tags["meter"] for s in rows] == ["outlet"] * 3 + ["psu_input"] * 3
    assert [s.fields["energy_joules"] for s in rows] == [pytest.approx(1600 * 60)] * 3 + [pytest.approx(1500 * 60)] * 3
    # the outlet is current until 3 of its intervals have passed, then the BMC's PSU inputs take over, said once
    assert {k: name for k, name, _ in meters}[20] == "outlet" and {k: name for k, name, _ in meters}[22] == "psu_input"
    last = meters[-1][2]
    assert "outlet" in last["note"] and "old" in last["note"] and last["meter_changes_total"] == 1


def test_a_lost_gpu_leaves_the_node_windows_going_partial(node):
    n = node(outlet=False, bmc=False)
    rows = []
    for k in range(40):
        if k == 10:
            n.lost = {1}  # GPU 1 falls off the bus
        rows += [s for s in n.step(k) if s.measurement == "node_window"]
    ends = [s.ts - s.ts % 10**9 for s in rows]
    assert ends == [T0 + i * 60 * 10**9 for i in range(1, 7)]  # no minute missing after the loss
    assert all(s.fields["partial"] == 1 for s in rows)
    assert rows[-1].fields["energy_joules"] == pytest.approx((GPU_W + CPU_W) * 60)  # GPU 0 and the CPU
    assert "gpu 1" in meter(n.step(40)).fields["note"]


def test_two_supplies_with_one_id_are_two_supplies(node):
    # DMTF public-tower: both PowerSupplies say Id "Bay1"; their URIs end Bay1 and Bay2
    assert node(bmc=False).gpus and json.loads((FIXTURES / "tower/Chassis/Tower/PowerSubsystem/PowerSupplies/Bay2/"
                                                "index.json").read_text())["Id"] == "Bay1"
    n = node(outlet=False, mockup="tower", gpus=1, node_meter=["psu_input", "components"])
    n.gpu_w = [300.0]
    out = n.run()
    figure = sum(n.doc(f"Chassis/Tower/PowerSubsystem/PowerSupplies/{b}/Metrics")["InputPowerWatts"]["Reading"]
                 for b in ("Bay1", "Bay2"))
    m = meter(out)
    assert (m.tags["meter"], m.fields["power_watts"]) == ("psu_input", pytest.approx(figure))
    assert balance(out).fields["components_exceed_meter"] is False
    assert {s.tags["component"] for s in n.last if s.tags.get("scope") == "psu_input"} == {"Bay1", "Bay2"}


@pytest.mark.parametrize("fault, expected_glitches", [
    ({12: 5e9 + 2000 * 10 * 11 - 100}, 1),  # jitter: 100 J below the last reading, then on
    ({12: 0.0}, 1),  # a lone zero from a BMC mid-reboot
    ({12: 1e308}, 0),  # garbage: refused, not a glitch
    ({12: -5.0}, 0),  # negative: refused
])
def test_a_counter_that_dips_reads_zero_once_or_reads_garbage_moves_by_its_energy_only(node, fault,
                                                                                      expected_glitches):
    def counter(n: Node) -> None:
        n.set_bmc(psu_w=2100, chassis_w=2000)
        n.edit("Chassis/1U/EnvironmentMetrics", lambda d: d.update(EnergyJoules={"Reading": 5e9}))

    n = node(outlet=False, edit=counter, node_meter=["chassis", "components"])
    n.each_step.append(counting("Chassis/1U/EnvironmentMetrics", ["EnergyJoules", "Reading"], 2000, steps=fault))
    values, watts = [], []
    for k in range(24):
        out = n.step(k)
        env = [s for s in n.last if s.measurement == "bmc_power" and s.tags["component"] == "chassis"]
        values.append(env[0].fields.get("energy_joules_total"))
        if k >= 7:
            watts.append(round(meter(out).fields["power_watts"], 6))
    kept = [v for v in values if v is not None]
    assert kept == sorted(kept) and kept[-1] == 5e9 + 2000 * 10 * 23  # no joule counted twice, none invented
    assert values[12] is None  # the faulty reading is not emitted
    assert set(watts) == {2000}
    assert n.redfish.counters.glitches("bmc|1U|chassis|chassis") == expected_glitches


def test_the_node_row_never_uses_a_meter_the_balance_contradicts(node):
    n = node(outlet=False, node_meter=["psu_input", "components"])
    n.set_bmc(psu_w=300, chassis_w=300)  # a BMC at 300 W under GPUs + CPU at 1150 W
    out = n.run()
    b = balance(out)
    assert b.tags["meter"] == "psu_input" and b.fields["components_exceed_meter"] is True  # the rule sees it
    e = node_efficiency(out)
    assert e.tags["meter"] == "components" and e.tags["partial"] == "true"
    assert e.fields["window_energy_joules"] == pytest.approx(COMPONENTS_J)
    assert "psu_input: the components measure 1150 W, above its 300 W" in e.fields["meter_note"]


def test_a_node_without_tokens_is_metered_and_reports_ok(node):
    n = node(tokens=False)
    outs = [n.step(k) for k in range(8)]
    assert meter(outs[-1]).tags["meter"] == "outlet" and balance(outs[-1]).tags["meter"] == "outlet"
    (row,) = [s for out in outs for s in out if s.measurement == "node_window"]
    assert row.fields["tokens"] == 0 and row.fields["energy_joules"] == pytest.approx(1600 * 60)
