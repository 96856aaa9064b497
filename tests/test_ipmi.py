"""The ipmi collector against a virtual BMC on loopback (tests/vbmc.py: pyghmi's RMCP+ BMC server answering
DCMI Get Power Reading, an SDR repository and Get Sensor Reading), and the DCMI decoding on spec bytes."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from agent.collector import Context
from agent.model import Accumulator
from agent.registry import default_registry
from collectors.ipmi import IpmiCollector, IpmiOptions
from collectors.ipmi.mapping import power_scope
from collectors.ipmi.reader import IpmiError, decode_dcmi_power

from .services import free_port_udp

CAT = default_registry().catalogue()
STATE = {
    "power": {"current": 1234, "min": 800, "max": 2100, "average": 1180, "period_ms": 60000},
    "sensors": [
        {"number": 1, "name": "Pwr Consumption", "type": "current", "unit": "watts", "m": 10, "value": 1230},
        {"number": 2, "name": "Inlet Temp", "type": "temperature", "unit": "celsius", "value": 24},
        {"number": 3, "name": "Fan1", "type": "fan", "unit": "rpm", "m": 60, "value": 9000},
        {"number": 4, "name": "PSU1 PIN", "type": "power_supply", "unit": "watts", "m": 5, "value": 640},
        {"number": 5, "name": "PSU2 PIN", "type": "power_supply", "unit": "watts", "m": 5, "value": None},
        {"number": 6, "name": "12V", "type": "voltage", "unit": "volts", "m": 1, "r_exp": -1, "value": 12.1},
    ]}


class VirtualBmc:
    def __init__(self, root: Path, state: dict, user="monitor", password="s3cret") -> None:
        self.root, self.port, self.user = root, free_port_udp(), user
        root.mkdir(parents=True, exist_ok=True)
        self.password_file = root / "password"
        self.password_file.write_text(password + "\n")
        self.state_file = root / "state.json"
        self.set(state)
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("vbmc.py")), str(self.port), user,
                                      str(self.password_file), str(self.state_file)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the virtual BMC did not start")

    def set(self, state: dict) -> None:
        self.state_file.write_text(json.dumps(state))

    def target(self, name: str, **kw) -> dict:
        return {"name": name, "host": "127.0.0.1", "port": self.port, "user": self.user,
                "password_file": str(self.password_file), **kw}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def vbmc(tmp_path):
    servers = []

    def start(state=STATE, **kw):
        servers.append(VirtualBmc(tmp_path / f"bmc{len(servers)}", state, **kw))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def run(col: IpmiCollector):
    acc = Accumulator(1_700_000_000_000_000_000, {"host": "poller"})
    col.collect(acc)
    return acc.close()


def collector(*targets, timeout=20.0) -> IpmiCollector:
    return IpmiCollector(IpmiOptions(targets=list(targets)), Context("ipmi", timeout=timeout))


def pick(samples, measurement, **tags):
    found = [s for s in samples if s.measurement == measurement and all(s.tags.get(k) == v for k, v in tags.items())]
    assert len(found) == 1, (measurement, tags, [s.tags for s in samples if s.measurement == measurement])
    return found[0]


@pytest.mark.services
def test_dcmi_and_sdr_over_rmcp_plus(vbmc):
    bmc = vbmc()
    col = collector(bmc.target("node7-bmc", node="node7", rack="r3"))
    samples = run(col)
    col.close()
    for s in samples:  # declared, with declared tags
        for f in s.fields:
            m = CAT.get(s.measurement, f)
            assert m is not None and set(s.tags) <= set(m.tags) | {"host"}, (s.measurement, f, s.tags)
    t = pick(samples, "ipmi_target", target="node7-bmc").fields
    assert t["up"] is True and t["dcmi"] is True and "error" not in t and t["readings"] == 6
    dcmi = pick(samples, "bmc_power", source="dcmi")
    assert dcmi.tags["scope"] == "chassis" and dcmi.tags["node"] == "node7" and dcmi.tags["rack"] == "r3"
    p = STATE["power"]
    assert dcmi.fields == {"measuring": True, "power_watts": p["current"], "power_min_watts": p["min"],
                           "power_max_watts": p["max"], "power_average_watts": p["average"],
                           "power_window_seconds": p["period_ms"] / 1000}
    # SDR values come back through the record's linear conversion (M, R exponent) as the spec defines it
    assert pick(samples, "bmc_power", component="Pwr Consumption").fields == {"power_watts": 1230.0}
    psu = pick(samples, "bmc_power", component="PSU1 PIN")
    assert psu.tags["source"] == "ipmi_sdr" and psu.tags["scope"] == "psu_input" and psu.fields["power_watts"] == 640
    assert pick(samples, "ipmi_sensor", sensor="Inlet Temp").fields == {"temperature_celsius": 24.0, "healthy": True}
    assert pick(samples, "ipmi_sensor", sensor="Fan1").fields["fan_speed_rpm"] == 9000
    assert pick(samples, "ipmi_sensor", sensor="12V").fields["voltage_volts"] == pytest.approx(12.1)
    # an unavailable reading (empty PSU slot) is absent, not zero
    assert not [s for s in samples if s.tags.get("component") == "PSU2 PIN"]


@pytest.mark.services
def test_wrong_password_no_bmc_and_no_dcmi_each_stay_with_their_target(vbmc, tmp_path):
    good = vbmc()
    sdr_only = vbmc({**STATE, "dcmi": False})
    wrong = tmp_path / "wrong"
    wrong.write_text("guess")
    col = collector(good.target("good"), good.target("bad", password_file=str(wrong)),
                    {"name": "gone", "host": "127.0.0.1", "port": free_port_udp(), "user": "x", "deadline": 1},
                    sdr_only.target("sdr-only"))
    samples = run(col)
    assert pick(samples, "ipmi_target", target="good").fields["up"] is True
    bad = pick(samples, "ipmi_target", target="bad").fields
    assert bad["up"] is False and "refused the login" in bad["error"] and "guess" not in bad["error"]
    gone = pick(samples, "ipmi_target", target="gone").fields
    assert gone["up"] is False and gone["error"]
    only = pick(samples, "ipmi_target", target="sdr-only").fields
    assert only["up"] is True and only["dcmi"] is False and "error" not in only
    assert not [s for s in samples if s.tags.get("target") == "sdr-only" and s.tags.get("source") == "dcmi"]
    assert pick(samples, "bmc_power", target="sdr-only", component="Pwr Consumption").fields["power_watts"] == 1230
    # the next poll reads new values on the kept session
    good.set({**STATE, "power": {**STATE["power"], "current": 1500}})
    again = run(col)
    assert pick(again, "bmc_power", target="good", source="dcmi").fields["power_watts"] == 1500
    col.close()


@pytest.mark.services
def test_probe_json(vbmc, capsys):
    from agent.cli import main

    bmc = vbmc()
    assert main(["ipmi", "probe", "127.0.0.1", "--port", str(bmc.port), "--user", bmc.user,
                 "--password-file", str(bmc.password_file), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    r = next(r for r in out["readings"] if r["field"] == "power_watts" and r["tags"]["source"] == "dcmi")
    assert r == {"measurement": "bmc_power", "tags": {"source": "dcmi", "scope": "chassis", "component": "dcmi"},
                 "field": "power_watts", "value": 1234, "unit": "watts", "source": "DCMI Get Power Reading"}
    assert out["dcmi"] is True and out["error"] is None


def dcmi_bytes(cur, lo, hi, avg, period_ms, state):
    return bytes([0xDC]) + struct.pack("<HHHHIIB", cur, lo, hi, avg, 1_700_000_000, period_ms, state)


@pytest.mark.parametrize("data, expected", [
    # DCMI v1.5 table 6-16: the bytes after the completion code
    (dcmi_bytes(350, 120, 900, 340, 1000, 0x40), (350, 120, 900, 340, 1.0, True)),
    (dcmi_bytes(0, 0, 0, 0, 0, 0x00), (0, 0, 0, 0, 0.0, False)),  # measurement not active
    (dcmi_bytes(65535, 1, 65535, 2, 3_600_000, 0x41), (65535, 1, 65535, 2, 3600.0, True)),
])
def test_dcmi_power_reading_decoding(data, expected):
    p = decode_dcmi_power(data)
    assert (p.current_watts, p.min_watts, p.max_watts, p.average_watts, p.period_seconds, p.active) == expected


@pytest.mark.parametrize("data", [b"", bytes([0xDC, 1, 2]), bytes([0x00]) + bytes(17)])
def test_dcmi_garbage_is_an_error_not_a_reading(data):
    with pytest.raises(IpmiError):
        decode_dcmi_power(data)


def test_inactive_dcmi_reports_no_watts():
    from collectors.ipmi.mapping import map_dcmi

    acc = Accumulator(0)
    map_dcmi(decode_dcmi_power(dcmi_bytes(0, 0, 0, 0, 0, 0)), acc, {})
    (s,) = acc.close()
    assert s.fields == {"measuring": False}


@pytest.mark.parametrize("name, scope", [
    ("Pwr Consumption", "chassis"), ("Total_Power", "chassis"), ("PSU1 PIN", "psu_input"),
    ("PSU2 POUT", "psu_output"), ("PS1 Input Power", "psu_input"), ("CPU Power", "cpu_package"),
    ("MEM Power", "dram"), ("GPU1 Power", "gpu"), ("PSU1 Power", "psu"), ("FAN_Power", "fan"), ("Fan Power", "fan"),
    ("VR_Power", "component"), ("Sys Power", "chassis"),
])
def test_sdr_power_scope_by_name(name, scope):
    assert power_scope(name) == scope


def test_no_targets_is_not_present_not_a_failure():
    from agent.collector import NotPresent

    with pytest.raises(NotPresent):
        run(collector())


@pytest.mark.services
def test_without_dcmi_the_node_meter_is_the_total_power_sensor_not_the_first_in_watts(vbmc, caplog):
    """An SDR without DCMI whose first sensor in watts is the fans' (Supermicro-style names): the node is metered
    by Total_Power; a non-linear record is left out and said, and the other sensors are still read."""
    from agent.bus import SampleBus
    from collectors.efficiency import EfficiencyCollector

    state = {"dcmi": False, "sensors": [
        {"number": 1, "name": "FAN_Power", "type": "other", "unit": "watts", "m": 1, "value": 120},
        {"number": 2, "name": "CPU_VR_Power", "type": "other", "unit": "watts", "m": 2, "value": 300,
         "linearization": 0x70},
        {"number": 3, "name": "Total_Power", "type": "other", "unit": "watts", "m": 10, "value": 2400},
        {"number": 4, "name": "Inlet Temp", "type": "temperature", "unit": "celsius", "value": 24},
    ]}
    bmc = vbmc(state)
    col = collector(bmc.target("bmc"))
    bus = SampleBus()
    eff = EfficiencyCollector(EfficiencyCollector.Options(window=60.0), Context("efficiency", bus=bus))
    t0 = 1_800_000_000 * 10**9
    for k in range(8):
        acc = Accumulator(t0 + k * 10 * 10**9, {"host": "node1"})
        col.collect(acc)
        samples = acc.close()
        bus.observe(samples)
        acc = Accumulator(t0 + k * 10 * 10**9, {"host": "node1"})
        eff.collect(acc)
        out = acc.close()
    col.close()
    scopes = {s.tags["component"]: s.tags["scope"] for s in samples if s.measurement == "bmc_power"}
    assert scopes == {"FAN_Power": "fan", "Total_Power": "chassis"}  # the non-linear one left out
    assert pick(samples, "ipmi_sensor", sensor="Inlet Temp").fields["temperature_celsius"] == 24.0
    target = pick(samples, "ipmi_target", target="bmc").fields
    assert target["up"] is True and target["dcmi"] is False and target["failed_sensors"] == 1
    assert "CPU_VR_Power" in caplog.text and "non-linear" in caplog.text
    (m,) = [s for s in out if s.measurement == "node_meter"]
    assert (m.tags["meter"], m.tags["meter_source"]) == ("chassis", "ipmi")
    assert m.fields["power_watts"] == pytest.approx(2400) and m.fields["energy_joules"] == pytest.approx(2400 * 60)


@pytest.mark.services
def test_probe_names_what_failed_and_never_hangs(vbmc, tmp_path):
    """An unknown user, a wrong password, a dead port and a name that does not resolve, each said as what it is;
    the probe ends within its own --timeout whatever pyghmi waits for."""
    bmc = vbmc()
    wrong = tmp_path / "wrong"
    wrong.write_text("guess\n")
    cases = [
        (["127.0.0.1", "--port", str(bmc.port), "--user", "nobody", "--password-file", str(bmc.password_file)],
         ("refused the login", "no complete answer within 5 s")),
        (["127.0.0.1", "--port", str(bmc.port), "--user", bmc.user, "--password-file", str(wrong)],
         ("refused the login",)),
        (["127.0.0.1", "--port", str(free_port_udp()), "--user", bmc.user, "--password-file",
          str(bmc.password_file)], ("no answer on UDP port", "no complete answer within 5 s")),
        (["no-such-bmc.invalid", "--user", bmc.user, "--password-file", str(bmc.password_file)],
         ("cannot resolve the host name",)),
    ]
    for args, expected in cases:
        # pyghmi answers a refused login after its own retries, seconds on a loaded machine: the wrong password
        # gets time to be said as such; the unknown user may be cut at the probe's deadline, and says so
        timeout = "30" if expected == ("refused the login",) else "5"
        r = subprocess.run([sys.executable, "-m", "agent", "ipmi", "probe", *args, "--timeout", timeout],
                           capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
        assert r.returncode == 1, (args, r.stderr)
        assert any(x in r.stderr for x in expected), (args, r.stderr)
        assert "Traceback" not in r.stderr and "ipmi_devintf" not in r.stderr
