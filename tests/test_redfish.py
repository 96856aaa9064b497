"""The redfish collector against a real Redfish emulator (sushy-tools) serving DMTF mockups over TLS.

Fixtures: tests/fixtures/redfish/, derived from DMTF's public mockups (BSD-3, LICENSE-DMTF.md there) by
tests/fixtures/redfish/derive. Expected values are read from the fixture files each reading comes from.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from agent.collector import Context
from agent.model import Accumulator
from agent.registry import default_registry
from collectors.redfish import RedfishCollector, RedfishOptions

from .services import SushyStatic, serve_bmc, tls_pair

pytestmark = pytest.mark.services
MOCKUPS = Path(__file__).parent / "fixtures" / "redfish"
CAT = default_registry().catalogue()


def doc(fixture: str, uri: str) -> dict:
    return json.loads((MOCKUPS / fixture / uri.removeprefix("/redfish/v1/") / "index.json").read_text())


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return tls_pair(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def sushy(tls, tmp_path_factory):
    """One sushy-static per fixture, started on first use."""
    servers: dict[str, SushyStatic] = {}

    def get(name: str) -> SushyStatic:
        if name not in servers:
            folder = tmp_path_factory.mktemp(name) / name
            shutil.copytree(MOCKUPS / name, folder)
            servers[name] = SushyStatic(folder, tls).start()
        return servers[name]

    yield get
    for s in servers.values():
        s.stop()


def run(targets: list[dict], state_dir=None, runs: int = 1, collector=None, timeout: float = 20.0):
    col = collector or RedfishCollector(RedfishOptions(targets=targets),
                                        Context("redfish", state_dir=state_dir, timeout=timeout))
    out = []
    for _ in range(runs):
        acc = Accumulator(1_700_000_000_000_000_000, {"host": "poller"})
        col.collect(acc)
        out.append(acc.close())
    if collector is None:
        col.close()
    return out[-1] if runs == 1 else out


def series(samples, measurement, **tags):
    return [s for s in samples if s.measurement == measurement and all(s.tags.get(k) == v for k, v in tags.items())]


def one(samples, measurement, **tags):
    found = series(samples, measurement, **tags)
    assert len(found) == 1, (measurement, tags, [s.tags for s in series(samples, measurement)])
    return found[0].fields


def declared(samples):
    for s in samples:
        for f in s.fields:
            m = CAT.get(s.measurement, f)
            assert m is not None, (s.measurement, f)
            assert set(s.tags) <= set(m.tags) | {"host"}, (s.measurement, f, s.tags)


def test_new_model_bmc_over_tls_values_from_the_mockup(sushy, tls):
    srv = sushy("rackmount")
    samples = run([{"name": "bmc1", "url": srv.url, "ca_file": str(tls[0]), "node": "gpu-node-1", "rack": "r12"}])
    declared(samples)
    target = one(samples, "redfish_target", target="bmc1")
    assert target["up"] is True and "error" not in target and target["chassis"] == 1
    assert "EnvironmentMetrics" in target["model"] and "Power (legacy)" not in target["model"]
    env = doc("rackmount", "Chassis/1U/EnvironmentMetrics")
    chassis = one(samples, "bmc_power", chassis="1U", scope="chassis", component="chassis")
    assert chassis == {"power_watts": env["PowerWatts"]["Reading"]}
    psu = doc("rackmount", "Chassis/1U/PowerSubsystem/PowerSupplies/Bay1/Metrics")
    psu_in = one(samples, "bmc_power", component="Bay1", scope="psu_input")
    assert psu_in["power_watts"] == psu["InputPowerWatts"]["Reading"]
    assert psu_in["energy_joules_total"] == psu["EnergykWh"]["Reading"] * 3.6e6
    assert one(samples, "bmc_power", component="Bay1", scope="psu_output")["power_watts"] == \
        psu["OutputPowerWatts"]["Reading"]
    total_energy = doc("rackmount", "Chassis/1U/Sensors/TotalEnergy")
    assert one(samples, "bmc_power", component="TotalEnergy")["energy_joules_total"] == \
        total_energy["Reading"] * 3.6e6
    dimm = doc("rackmount", "Chassis/1U/Sensors/DIMM1Temp")
    assert one(samples, "redfish_sensor", sensor="DIMM1Temp") == {"temperature_celsius": dimm["Reading"]}
    # every power series says where it came from, and the placement tags of the target ride along
    for s in series(samples, "bmc_power"):
        assert s.tags["source"] == "redfish" and s.tags["scope"] and s.tags["node"] == "gpu-node-1"
        assert s.tags["rack"] == "r12" and s.tags["target"] == "bmc1"
    # a reading shown by two resources (EnvironmentMetrics and ThermalMetrics both cite CPU1Temp) comes once
    cpu1 = [s for s in series(samples, "redfish_sensor") if s.fields.get("temperature_celsius") == 39]
    assert len(cpu1) == 1
    # voltages and currents only where asked (electrical: true)
    assert not [s for s in series(samples, "redfish_sensor") if "voltage_volts" in s.fields]
    # PS2's sensors read null (the supply is off): absent, not zero
    assert not series(samples, "bmc_power", component="PS2InputPower")


def test_legacy_only_bmc(sushy, tls):
    srv = sushy("legacy-only")
    samples = run([{"name": "blade", "url": srv.url, "ca_file": str(tls[0])}])
    declared(samples)
    power = doc("legacy-only", "Chassis/MultiBladeEncl/Power")
    outputs = {s.tags["component"]: s.fields["power_watts"]
               for s in series(samples, "bmc_power", chassis="MultiBladeEncl", scope="psu_output")}
    assert outputs == {p["Name"]: p["LastPowerOutputWatts"] for p in power["PowerSupplies"]} and len(outputs) == 2
    thermal = doc("legacy-only", "Chassis/Blade1/Thermal")
    t0 = thermal["Temperatures"][0]
    assert one(samples, "redfish_sensor", chassis="Blade1", sensor=t0["Name"])["temperature_celsius"] == \
        t0["ReadingCelsius"]
    fans = {s.tags["sensor"]: s.fields for s in series(samples, "redfish_sensor", chassis="MultiBladeEncl")
            if "fan_speed_rpm" in s.fields}
    enc = doc("legacy-only", "Chassis/MultiBladeEncl/Thermal")
    assert fans == {f["Name"]: {"fan_speed_rpm": f["Reading"]} for f in enc["Fans"] if f.get("ReadingUnits") == "RPM"}
    assert "Power (legacy)" in one(samples, "redfish_target", target="blade")["model"]


def test_gpu_baseboard_chassis_are_tagged_and_scoped_as_gpus(sushy, tls):
    srv = sushy("gpu-baseboard")
    samples = run([{"name": "hgx", "url": srv.url, "ca_file": str(tls[0])}])
    declared(samples)
    gpus = series(samples, "bmc_power", chassis_role="gpu")
    assert sorted(s.tags["chassis"] for s in gpus) == ["HGX_GPU_SXM_1", "HGX_GPU_SXM_2"]
    for s in gpus:
        env = doc("gpu-baseboard", f"Chassis/{s.tags['chassis']}/EnvironmentMetrics")
        assert s.tags["scope"] == "gpu"
        assert s.fields == {"power_watts": env["PowerWatts"]["Reading"],
                            "energy_joules_total": env["EnergyJoules"]["Reading"]}
    # the node's own chassis keeps scope chassis; this BMC has no legacy model at all
    assert one(samples, "bmc_power", chassis="1U", component="chassis")["power_watts"] == 374
    assert "legacy" not in one(samples, "redfish_target", target="hgx")["model"]


def test_cdu_and_pdu(sushy, tls):
    cdu, pdu = sushy("cooling-unit"), sushy("pdu")
    samples = run([{"name": "cdu", "url": cdu.url, "ca_file": str(tls[0])},
                   {"name": "pdu", "url": pdu.url, "ca_file": str(tls[0]), "electrical": True}])
    declared(samples)
    leaks = {s.tags["detector"]: s.fields for s in series(samples, "leak", target="cdu")}
    assert leaks == {"Moisture": {"leak_detected": False, "state": "OK"},
                     "Overflow": {"leak_detected": False, "state": "OK"}}
    # the CDU's coolant connectors (ThermalEquipment) name supply and return; the chassis sensors they cite
    # (PrimaryFlow, PrimaryHeatLoad, ...) are not polled a second time
    conn = doc("cooling-unit", "ThermalEquipment/CDUs/1/PrimaryCoolantConnectors/1")
    primary = one(samples, "cooling", target="cdu", connector="primary " + conn["Name"])
    assert primary["coolant_flow_litres_per_minute"] == conn["FlowLitersPerMinute"]["Reading"]
    assert primary["coolant_supply_temperature_celsius"] == conn["SupplyTemperatureCelsius"]["Reading"]
    assert primary["coolant_return_temperature_celsius"] == conn["ReturnTemperatureCelsius"]["Reading"]
    assert primary["heat_removed_watts"] == conn["HeatRemovedkW"]["Reading"] * 1000
    assert not series(samples, "redfish_sensor", sensor="PrimaryFlow")
    assert not series(samples, "redfish_sensor", sensor="PrimaryHeatLoad")
    pump = doc("cooling-unit", "ThermalEquipment/CDUs/1/Pumps/1")
    assert one(samples, "redfish_sensor", target="cdu", sensor=pump["Name"]) == {
        "pump_speed_percent": pump["PumpSpeedPercent"]["Reading"]}
    # a chassis sensor no connector cites is still read
    secondary_return = doc("cooling-unit", "Chassis/CDU/Sensors/SystemTemperature")
    assert one(samples, "redfish_sensor", target="cdu", sensor="chassis")["temperature_celsius"] == \
        secondary_return["Reading"]
    main = doc("pdu", "Chassis/PDU/Sensors/ACMainPower")
    assert one(samples, "bmc_power", chassis="PDU", component="ACMainPower") == {"power_watts": main["Reading"]}
    # a rack PDU's summary (PowerEquipment RackPDUs Metrics) and outlets are the pdu family's, as an SNMP PDU's;
    # the PDUPower Sensor the summary cites is that value again, not read a second time
    summary = doc("pdu", "PowerEquipment/RackPDUs/1/Metrics")
    assert one(samples, "pdu", chassis="PDU", scope="device") == {
        "power_watts": summary["PowerWatts"]["Reading"], "energy_joules_total": summary["EnergykWh"]["Reading"] * 3.6e6}
    total = series(samples, "pdu", chassis="PDU", scope="device")[0].tags
    assert total["device"] == "pdu/PDU" and total["source"] == "redfish_pdu" and "component" not in total
    assert not series(samples, "bmc_power", chassis="PDU", component="PDUPower")
    # an outlet's kWh sensor (labelled "kW" in DMTF's mockup: ReadingType decides) is an outlet energy counter
    volts = doc("pdu", "Chassis/PDU/Sensors/VoltageA1")
    assert one(samples, "redfish_sensor", chassis="PDU", sensor="VoltageA1") == {"voltage_volts": volts["Reading"]}
    outlets = [s for s in series(samples, "pdu", target="pdu", scope="outlet") if "energy_joules_total" in s.fields]
    assert outlets and not series(samples, "bmc_power", target="pdu", scope="outlet")
    for s in outlets:
        raw = doc("pdu", f"Chassis/{s.tags['chassis']}/Sensors/{s.tags['outlet']}")
        assert s.fields["energy_joules_total"] == raw["Reading"] * 3.6e6


def test_tls_verification_is_on_by_default(sushy, tls):
    srv = sushy("rackmount")
    samples = run([{"name": "strict", "url": srv.url}, {"name": "trusting", "url": srv.url, "insecure": True}])
    strict = one(samples, "redfish_target", target="strict")
    assert strict["up"] is False and "TLS" in strict["error"] and "ca_file" in strict["error"]
    assert one(samples, "redfish_target", target="trusting")["up"] is True
    assert not series(samples, "bmc_power", target="strict") and series(samples, "bmc_power",
                                                                               target="trusting")


def test_sessions_wrong_password_and_logout(tls, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("guess\n")
    srv, url, state = serve_bmc(MOCKUPS / "rackmount", tls)
    try:
        col = RedfishCollector(RedfishOptions(targets=[
            {"name": "good", "url": url, "user": "monitor", "password_file": str(secret), "ca_file": str(tls[0])},
            {"name": "basic", "url": url, "user": "monitor", "password_file": str(secret), "auth": "basic",
             "ca_file": str(tls[0])},
            {"name": "bad", "url": url, "user": "monitor", "password_file": str(wrong), "ca_file": str(tls[0])}]),
            Context("redfish", timeout=20.0))
        first, second = run([], runs=2, collector=col)
        for samples in (first, second):
            assert one(samples, "redfish_target", target="good")["up"] is True
            assert one(samples, "redfish_target", target="basic")["up"] is True
            bad = one(samples, "redfish_target", target="bad")
            assert bad["up"] is False and "refused the credentials" in bad["error"]
            assert "guess" not in json.dumps([s.fields for s in samples])
        assert state.logins == 1  # one session for "good", kept across polls
        assert one(second, "bmc_power", target="good", component="chassis") == \
            one(second, "bmc_power", target="basic", component="chassis")
        state.expire()  # the BMC rebooted or timed the session out: a new login, no lost poll
        third = run([], collector=col)
        assert one(third, "redfish_target", target="good")["up"] is True and state.logins == 2
        col.close()
        assert state.logouts == 1  # the session slot is given back
    finally:
        srv.shutdown()


def test_a_slow_bmc_costs_its_own_deadline_only(tls, tmp_path):
    fast_srv, fast_url, _ = serve_bmc(MOCKUPS / "rackmount", tls)
    slow_srv, slow_url, slow = serve_bmc(MOCKUPS / "rackmount", tls)
    pw = tmp_path / "pw"
    pw.write_text("s3cret")
    try:
        col = RedfishCollector(RedfishOptions(targets=[
            {"name": "fast", "url": fast_url, "user": "monitor", "password_file": str(pw), "ca_file": str(tls[0])},
            {"name": "slow", "url": slow_url, "user": "monitor", "password_file": str(pw), "ca_file": str(tls[0]),
             "timeout": 0.5, "deadline": 1.0}]), Context("redfish", timeout=20.0))
        run([], collector=col)  # both discovered
        slow.delay = 2.0  # now every answer comes after the slow target's deadline
        samples = run([], collector=col)
        assert one(samples, "redfish_target", target="fast")["up"] is True
        assert series(samples, "bmc_power", target="fast")
        s = one(samples, "redfish_target", target="slow")
        assert s["up"] is False and "within" in s["error"]
        assert not series(samples, "bmc_power", target="slow")
        slow.delay = 0.0
        col.close()
    finally:
        fast_srv.shutdown()
        slow_srv.shutdown()


def test_a_resource_that_disappears(sushy, tls, tmp_path):
    folder = tmp_path / "bmc"
    shutil.copytree(MOCKUPS / "rackmount", folder)
    srv = SushyStatic(folder, tls).start()
    try:
        col = RedfishCollector(RedfishOptions(targets=[{"name": "b", "url": srv.url, "ca_file": str(tls[0])}]),
                               Context("redfish", timeout=20.0))
        before = run([], collector=col)
        assert series(before, "bmc_power", component="Bay1")
        shutil.rmtree(folder / "Chassis/1U/PowerSubsystem/PowerSupplies/Bay1/Metrics")  # a supply pulled
        during = run([], collector=col)
        t = one(during, "redfish_target", target="b")
        assert t["up"] is True and t["missing_resources"] == 1 and "Bay1/Metrics" in t["error"]
        assert series(during, "bmc_power", component="chassis")  # the rest of the poll is kept
        assert not series(during, "bmc_power", component="Bay1")
        after = run([], collector=col)  # walked again: the plan no longer has it
        t = one(after, "redfish_target", target="b")
        assert t["missing_resources"] == 0 and "error" not in t
        col.close()
    finally:
        srv.stop()


def test_no_bmc_at_all_is_said_once(caplog):
    import logging

    from .services import free_port

    col = RedfishCollector(RedfishOptions(targets=[{"name": "gone", "url": f"https://127.0.0.1:{free_port()}",
                                                    "timeout": 1}]), Context("redfish", timeout=20.0))
    with caplog.at_level(logging.INFO, logger="collectors.redfish"):
        for samples in run([], runs=2, collector=col):
            gone = one(samples, "redfish_target", target="gone")
            assert gone["up"] is False and "refused" in gone["error"].lower()  # said as such, not as a timeout
    col.close()
    assert len([r for r in caplog.records if "gone" in r.getMessage()]) == 1  # a state change, not every poll


def test_a_reset_energy_counter_that_stays_down_is_kept_monotonic(tls, tmp_path):
    folder = tmp_path / "bmc"
    shutil.copytree(MOCKUPS / "rackmount", folder)
    srv = SushyStatic(folder, tls).start()
    metrics = folder / "Chassis/1U/PowerSubsystem/PowerSupplies/Bay1/Metrics/index.json"
    try:
        col = RedfishCollector(RedfishOptions(targets=[{"name": "b", "url": srv.url, "ca_file": str(tls[0])}]),
                               Context("redfish", state_dir=tmp_path, timeout=20.0))
        before = one(run([], collector=col), "bmc_power", component="Bay1", scope="psu_input")
        m = json.loads(metrics.read_text())
        m["EnergykWh"]["Reading"] = 2  # someone ran PowerSupplyMetrics.ResetMetrics
        metrics.write_text(json.dumps(m))
        held = one(run([], collector=col), "bmc_power", component="Bay1", scope="psu_input")
        assert "energy_joules_total" not in held  # one reading near zero is not a reset yet
        m["EnergykWh"]["Reading"] = 3  # and it stays there: a reset
        metrics.write_text(json.dumps(m))
        after = one(run([], collector=col), "bmc_power", component="Bay1", scope="psu_input")
        assert after["energy_joules_total"] == before["energy_joules_total"] + 3 * 3.6e6
        col.close()
        assert (tmp_path / "redfish-counters.json").exists()  # offsets survive a restart
    finally:
        srv.stop()


def test_probe_json(sushy, tls, capsys):
    from agent.cli import main

    srv = sushy("rackmount")
    assert main(["redfish", "probe", srv.url, "--ca-file", str(tls[0]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    r = next(r for r in out["readings"] if r["field"] == "power_watts" and r["tags"]["component"] == "chassis")
    assert r == {"measurement": "bmc_power", "tags": r["tags"], "field": "power_watts", "value": 374,
                 "unit": "watts", "source": "/redfish/v1/Chassis/1U/EnvironmentMetrics"}
    assert r["tags"]["source"] == "redfish" and r["tags"]["scope"] == "chassis"
    assert main(["redfish", "probe", srv.url]) == 1  # no CA given: verification fails, said plainly
    assert "TLS" in capsys.readouterr().err


def test_probe_shows_the_chassis_tree_it_understood_and_the_node_meter(sushy, tls, capsys):
    from agent.cli import main

    srv = sushy("telemetry")
    assert main(["redfish", "probe", srv.url, "--ca-file", str(tls[0])]) == 0
    text = capsys.readouterr().out
    assert "chassis tree (roles from the ComputerSystem's links):" in text
    assert "  1: node (named by its ComputerSystem (Links.Chassis))" in text
    assert "  Tray_1: other (no ComputerSystem names it)" in text
    figure = doc("telemetry", "Chassis/1/Power")["PowerControl"][0]["PowerConsumedWatts"]
    assert f"node meter chassis: 1/System Power Control power_watts {figure:g} (/redfish/v1/Chassis/1/Power)" in text
    assert "skipped (not live): /redfish/v1/Chassis/1/Power Power Supply Bay 3: Absent" in text
    assert main(["redfish", "probe", srv.url, "--ca-file", str(tls[0]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {c["id"]: c["role"] for c in out["chassis"]} == {"1": "node", "Tray_1": "other", "Tray_2": "other",
                                                           "Tray_3": "other"}
    assert [p["value"] for p in out["node_meter"]["chassis"]] == [figure]


def test_a_power_shelf_under_power_equipment_is_a_pdu_that_pue_and_its_rack_read(sushy, tls):
    """A power shelf's own power and energy are the pdu family's (its role and rack from the target), so the
    facility collector and the rack scope take it as they take an SNMP PDU."""
    from agent.bus import SampleBus
    from agent.collector import Context
    from agent.model import Accumulator
    from collectors.common.rollup import rack_energy
    from collectors.facility import FacilityCollector, FacilityOptions

    srv = sushy("power-shelf")
    samples = run([{"name": "shelf", "url": srv.url, "ca_file": str(tls[0]), "rack": "r42", "role": "it"}])
    declared(samples)
    m = doc("power-shelf", "PowerEquipment/PowerShelves/1/Metrics")
    shelf = one(samples, "pdu", chassis="PowerShelf", scope="device")
    assert shelf["power_watts"] == m["PowerWatts"]["Reading"]
    assert shelf["energy_joules_total"] == m["EnergykWh"]["Reading"] * 3.6e6
    bus = SampleBus()
    bus.observe(samples, 10.0)
    assert {rack: e for rack, (e, _) in rack_energy(bus.latest("pdu")).items()} == {
        "r42": m["EnergykWh"]["Reading"] * 3.6e6}
    acc = Accumulator(samples[0].ts)
    FacilityCollector(FacilityOptions(), Context("facility", bus=bus)).collect(acc)
    (fac,) = acc.close()
    assert fac.fields["it_power_watts"] == m["PowerWatts"]["Reading"]
    assert "PowerEquipment PowerShelves" in one(samples, "redfish_target", target="shelf")["model"]


def _session_target(url, tls, tmp_path, **kw):
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    return {"name": "bmc", "url": url, "user": "monitor", "password_file": str(pw), "ca_file": str(tls[0]), **kw}


def test_a_session_refused_after_a_reboot_logs_in_again_on_the_next_poll(tls, tmp_path):
    srv, url, state = serve_bmc(MOCKUPS / "rackmount", tls)
    try:
        col = RedfishCollector(RedfishOptions(targets=[_session_target(url, tls, tmp_path)]),
                               Context("redfish", timeout=20.0))
        assert one(run([], collector=col), "redfish_target", target="bmc")["up"] is True
        # the BMC reboots: its sessions are gone and the first login after it answers 503, Retry-After: 1
        state.expire()
        state.refuse_logins = 1
        down = one(run([], collector=col), "redfish_target", target="bmc")
        assert down["up"] is False and "HTTP 503" in down["error"] and "retry after 1 s" in down["error"]
        assert "basic" not in down["error"]  # a BMC not ready is no reason to change the auth mode
        time.sleep(1.1)  # what the BMC asked for
        back = run([], collector=col)
        assert one(back, "redfish_target", target="bmc")["up"] is True and state.logins == 2
        assert series(back, "bmc_power", target="bmc")  # without waiting for the hourly rediscovery
        col.close()
        assert state.logouts == 1
    finally:
        srv.shutdown()


def test_a_403_on_one_resource_leaves_that_resource_out_and_keeps_the_session(tls, tmp_path):
    srv, url, state = serve_bmc(MOCKUPS / "rackmount", tls)
    env = "/redfish/v1/Chassis/1U/EnvironmentMetrics"
    try:
        col = RedfishCollector(RedfishOptions(targets=[_session_target(url, tls, tmp_path)]),
                               Context("redfish", timeout=20.0))
        run([], collector=col)
        state.forbid = {env}
        samples = run([], collector=col)
        t = one(samples, "redfish_target", target="bmc")
        assert t["up"] is True and t["skipped_resources"] >= 1
        assert not series(samples, "bmc_power", component="chassis") and series(samples, "bmc_power")
        state.forbid = set()
        samples = run([], collector=col)
        assert series(samples, "bmc_power", component="chassis") and state.logins == 1
        col.close()
    finally:
        srv.shutdown()


def test_a_dripping_answer_is_cut_at_the_deadline_and_a_huge_or_deep_one_refused(tls, tmp_path):
    srv, url, state = serve_bmc(MOCKUPS / "rackmount", tls)
    env = "/redfish/v1/Chassis/1U/EnvironmentMetrics"
    thermal = "/redfish/v1/Chassis/1U/ThermalSubsystem/ThermalMetrics"
    try:
        col = RedfishCollector(RedfishOptions(targets=[_session_target(url, tls, tmp_path, timeout=1.0, deadline=2.0,
                                                                       max_answer_size="64KiB")]),
                               Context("redfish", timeout=20.0))
        run([], collector=col)
        state.drip = {env}  # ~200 bytes at 5 a second: 40 s if it were waited for
        t = one(run([], collector=col), "redfish_target", target="bmc")
        assert t["up"] is False and "deadline" in t["error"]
        time.sleep(0.5)
        assert 0 < state.dripped < 100  # the client hung up at its deadline, long before the answer ended
        state.drip = set()
        state.bodies = {env: b'{"Id": "EnvironmentMetrics", "Pad": "' + b"x" * (100 << 10) + b'"}',
                        thermal: b"[" * 100_000 + b"]" * 100_000}
        samples = run([], collector=col)
        t = one(samples, "redfish_target", target="bmc")
        assert t["up"] is True and t["skipped_resources"] >= 2  # each refused whole, the others read
        assert series(samples, "bmc_power", scope="psu_input")
        col.close()
    finally:
        srv.shutdown()


@pytest.mark.parametrize("argv, expected", [
    (["redfish", "probe", "http://bad host:443"], "'bad host' is not a valid host name"),
    (["redfish", "probe", "https://127.0.0.1:9", "--user", "u", "--password-file", "/dev/zero"],
     "secret file /dev/zero holds more than 64 KiB"),
    (["snmp", "probe", "a" * 300], "is not a valid host name"),
    (["ipmi", "probe", "127.0.0.1:623"], "a port goes in `port`"),
])
def test_probes_say_what_is_wrong_in_one_line_and_exit_78(argv, expected, capsys):
    from agent.cli import main

    assert main(argv) == 78
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_probe_of_a_service_answering_deeply_nested_json_says_so(tls, capsys):
    from agent.cli import main

    srv, url, state = serve_bmc(MOCKUPS / "rackmount", tls)
    try:
        state.bodies = {"/redfish/v1": b"[" * 100_000 + b"]" * 100_000}
        assert main(["redfish", "probe", url, "--ca-file", str(tls[0])]) == 1
        err = capsys.readouterr().err
        assert "nested too deep" in err and "Traceback" not in err and "RecursionError" not in err
    finally:
        srv.shutdown()


def test_a_discovery_past_its_deadline_names_it_and_goes_on_from_what_it_read(tls, tmp_path):
    folder = tmp_path / "bmc"
    shutil.copytree(MOCKUPS / "rackmount", folder)
    coll = json.loads((folder / "Chassis/index.json").read_text())
    for i in range(300):  # a big enclosure's chassis collection: 300 chassis more, one GET each
        cid = f"Slot{i}"
        (folder / "Chassis" / cid).mkdir()
        (folder / "Chassis" / cid / "index.json").write_text(json.dumps(
            {"@odata.id": f"/redfish/v1/Chassis/{cid}", "Id": cid, "Name": cid, "ChassisType": "Blade"}))
        coll["Members"].append({"@odata.id": f"/redfish/v1/Chassis/{cid}"})
    (folder / "Chassis/index.json").write_text(json.dumps(coll))
    srv, url, state = serve_bmc(folder, tls)
    try:
        col = RedfishCollector(RedfishOptions(targets=[_session_target(url, tls, tmp_path)],
                                              discovery_deadline=0.3), Context("redfish", timeout=20.0))
        errors, read = [], []
        for _ in range(60):
            t = one(run([], collector=col), "redfish_target", target="bmc")
            if t["up"]:
                break
            errors.append(t["error"])
            read.append(len(col.targets[0].seen))
        assert t["up"] is True and t["chassis"] == 301  # done, over several polls
        assert errors and "discovery_deadline (0.3 s)" in errors[0] and "kept" in errors[0]
        assert read == sorted(read) and read[0] > 0  # each try went on from the one before
        col.close()
    finally:
        srv.shutdown()
