"""The SNMP collector and `aifactory snmp probe` against snmpsim serving recordings."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from agent.bus import SampleBus
from agent.collector import Context
from agent.model import Accumulator
from collectors.facility import FacilityCollector, FacilityOptions
from collectors.snmp import SnmpCollector, SnmpOptions

from .services import free_port_udp

ROOT = Path(__file__).resolve().parent.parent


def collect(options: dict):
    col = SnmpCollector(SnmpOptions(**options), Context("snmp"))

    async def go():
        acc = Accumulator(1, {"host": "poller1"})
        await col.collect(acc)
        return acc.close()

    try:
        return asyncio.run(go())
    finally:
        col.close()


def by_device(samples):
    out: dict = {}
    for s in samples:
        out.setdefault(s.tags.get("device"), []).append(s)
    return out


def test_devices_polled_with_auto_profiles_and_a_dead_one_does_not_hurt(snmpsim):
    dead_port = free_port_udp()
    samples = collect({"devices": [
        {"name": "pdu-r12-a", "host": "127.0.0.1", "port": snmpsim.port, "community": "apc-rpdu2",
         "role": "it", "rack": "r12", "room": "hall1"},
        {"name": "ups-1", "host": "127.0.0.1", "port": snmpsim.port, "community": "eaton-ups",
         "role": "facility_total"},
        {"name": "px2", "host": "127.0.0.1", "port": snmpsim.port, "community": "raritan-px2"},
        {"name": "dead", "host": "127.0.0.1", "port": dead_port, "community": "x", "timeout": 0.5, "retries": 0},
        {"name": "wrongcomm", "host": "127.0.0.1", "port": snmpsim.port, "community": "nosuchdevice",
         "timeout": 0.5, "retries": 0},
    ]})
    dev = by_device(samples)
    pdu = {(s.measurement, s.tags.get("scope")): s for s in dev["pdu-r12-a"]}
    d = pdu[("pdu", "device")]
    assert d.fields["power_watts"] == 270.0 and d.tags["rack"] == "r12" and d.tags["role"] == "it"
    assert d.tags["profile"] == "apc-rpdu2" and d.tags["room"] == "hall1"
    ups = [s for s in dev["ups-1"] if s.measurement == "ups" and "scope" not in s.tags][0]
    assert ups.fields["battery_charge_percent"] == 91.0 and ups.fields["on_battery"] is False
    px2 = [s for s in dev["px2"] if s.measurement == "pdu" and "inlet" in s.tags][0]
    assert px2.fields["current_amperes"] == 0.68
    status = {s.tags["device"]: s.fields for s in samples if s.measurement == "snmp_device"}
    assert status["pdu-r12-a"]["up"] and status["ups-1"]["up"] and status["px2"]["up"]
    assert status["dead"] == {"up": False, "state": "down",
                              "poll_duration_seconds": status["dead"]["poll_duration_seconds"],
                              "readings": 0, "error": status["dead"]["error"]}
    assert "no response from" in status["dead"]["error"]
    assert status["wrongcomm"]["up"] is False
    # the facility collector, run after it on the same bus, sums the devices by role
    bus = SampleBus()
    bus.observe(samples, 10.0)
    acc = Accumulator(1, {"host": "poller1"})
    FacilityCollector(FacilityOptions(), Context("facility", bus=bus)).collect(acc)
    (fac,) = acc.close()
    assert fac.fields["it_power_watts"] == 270.0  # the rack PDU (role it); the UPS is facility_total
    assert fac.fields["it_energy_joules_total"] == 19677 * 360000.0
    # the dead devices cost their own timeout, concurrently: the healthy ones did not wait for them
    assert status["pdu-r12-a"]["poll_duration_seconds"] < status["dead"]["poll_duration_seconds"]


def test_no_such_object_leaves_fields_out(snmpsim):
    """A forced profile whose OIDs the device lacks: noSuchObject/noSuchInstance give no readings, no error."""
    samples = collect({"devices": [{"name": "ups-as-pdu", "host": "127.0.0.1", "port": snmpsim.port,
                                    "community": "eaton-ups", "profile": "apc-rpdu2"}]})
    (status,) = [s for s in samples if s.measurement == "snmp_device"]
    assert status.fields["up"] is True and status.fields["readings"] == 0


def test_probe_json(snmpsim):
    r = subprocess.run([sys.executable, "-m", "agent", "snmp", "probe", f"127.0.0.1:{snmpsim.port}",
                        "--community", "raritan-px2", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["profile"] == "raritan-pdu2" and doc["sys_object_id"] == "1.3.6.1.4.1.13742.6"
    got = {(x["field"], x["tags"].get("inlet")): (x["value"], x["unit"]) for x in doc["readings"]}
    assert got[("voltage_volts", "1")] == (233.0, "volts") and got[("frequency_hertz", "1")] == (50.0, "hertz")


def test_probe_dead_device_names_the_cause():
    port = free_port_udp()
    r = subprocess.run([sys.executable, "-m", "agent", "snmp", "probe", f"127.0.0.1:{port}", "--timeout", "0.3"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and f"127.0.0.1:{port}" in r.stderr and "no response from" in r.stderr


def test_snmpv3_auth_priv_and_a_wrong_key(snmpsim, tmp_path):
    (tmp_path / "auth").write_text(snmpsim.V3_AUTH + "\n")
    (tmp_path / "priv").write_text(snmpsim.V3_PRIV + "\n")
    (tmp_path / "bad").write_text("not-the-key-000\n")
    v3 = {"host": "127.0.0.1", "port": snmpsim.port, "version": "v3", "v3_user": snmpsim.V3_USER,
          "v3_auth_proto": "SHA", "v3_priv_proto": "AES", "v3_context": "apc-rpdu2", "timeout": 0.5, "retries": 0}
    samples = collect({"devices": [
        {**v3, "name": "good", "v3_auth_key_file": str(tmp_path / "auth"), "v3_priv_key_file": str(tmp_path / "priv")},
        {**v3, "name": "badkey", "v3_auth_key_file": str(tmp_path / "bad"), "v3_priv_key_file": str(tmp_path / "priv")},
    ]})
    status = {s.tags["device"]: s.fields["up"] for s in samples if s.measurement == "snmp_device"}
    assert status == {"good": True, "badkey": False}
    good = [s for s in samples if s.tags.get("device") == "good" and s.tags.get("scope") == "device"]
    assert good[0].fields["power_watts"] == 270.0


def test_secret_never_in_config_show(tmp_path, capsys):
    from agent.cli import main

    (tmp_path / "comm").write_text("s3cret-community")
    p = tmp_path / "a.yaml"
    p.write_text("collectors:\n  snmp:\n    devices:\n      - {name: p1, host: 127.0.0.1, community: inline-secret}\n"
                 f"      - {{name: p2, host: 127.0.0.1, community_file: {tmp_path / 'comm'}}}\n")
    assert main(["config", "show", "-c", str(p)]) == 0
    out = capsys.readouterr().out
    assert "inline-secret" not in out and "s3cret-community" not in out and "p1" in out


def test_large_outlet_table(snmpsim):
    """96 metered outlets (one table of 480 values) arrive complete, scaled, with the sentinel dropped."""
    samples = collect({"devices": [{"name": "big", "host": "127.0.0.1", "port": snmpsim.port,
                                    "community": "apc-rpdu2-96", "rack": "r7"}]})
    outlets = {s.tags["outlet"]: s for s in samples if s.measurement == "pdu" and s.tags.get("scope") == "outlet"}
    assert len(outlets) == 96
    for r in range(1, 97):
        s = outlets[str(r)]
        assert s.tags["outlet_name"] == f"gpu-node-{r}" and s.tags["rack"] == "r7"
        assert s.fields["current_amperes"] == round((r % 16) * 0.1, 6)
        assert s.fields["energy_joules_total"] == r * 360000.0
        assert s.fields.get("power_watts") == (None if r == 13 else 7.0 * r)
    (dev,) = [s for s in samples if s.measurement == "pdu" and s.tags.get("scope") == "device"]
    assert dev.fields["power_watts"] == 1920.0


def test_lean_v2c_path_equals_pysnmp_on_every_recording(snmpsim):
    """The hand-written v2c codec returns exactly what pysnmp returns, for every profile's OIDs."""
    from collectors.common.profile.plan import required_oids
    from collectors.snmp.client import Credentials, SnmpClient
    from collectors.snmp.match import load_profiles

    profiles = load_profiles()

    async def go():
        lean, ref = SnmpClient(), SnmpClient(lean_v2c=False)
        try:
            for rec in sorted((ROOT / "tests" / "fixtures" / "snmp").glob("*.snmprec")) + [Path("apc-rpdu2-96")]:
                creds = Credentials(community=rec.stem if rec.suffix else rec.name)
                for p in profiles.values():
                    scalars, walks = required_oids(p)
                    args = ("127.0.0.1", snmpsim.port)
                    a = {**await lean.get(creds, *args, scalars or ["1.3.6.1.2.1.1.2.0"]),
                         **await lean.walk(creds, *args, walks)}
                    b = {**await ref.get(creds, *args, scalars or ["1.3.6.1.2.1.1.2.0"]),
                         **await ref.walk(creds, *args, walks)}
                    assert a == b, (rec, p.name)
        finally:
            lean.close()
            ref.close()

    asyncio.run(go())


def test_devices_no_vendor_profile_knows_are_read_through_standard_mibs(snmpsim):
    """Unknown enterprise numbers, plain sysDescr: the standard MIBs each answers (probed once) are read."""
    dev = {name: {"name": name, "host": "127.0.0.1", "port": snmpsim.port, "community": name}
           for name in ("unknown-ups", "unknown-sensors", "unknown-nothing", "cyberpower-rfc1628",
                        "cyberpower-rmcard")}
    samples = collect({"devices": list(dev.values())})
    status = {s.tags["device"]: s for s in samples if s.measurement == "snmp_device"}
    assert status["unknown-ups"].tags["profile"] == "ups-mib" and status["unknown-ups"].fields["readings"] > 5
    ups = [s for s in samples if s.measurement == "ups" and s.tags["device"] == "unknown-ups" and "line" not in s.tags]
    assert ups and ups[0].fields["battery_charge_percent"] == 91.0  # upsEstimatedChargeRemaining of the recording
    assert status["unknown-sensors"].tags["profile"] == "entity-sensor"
    assert [s for s in samples if s.measurement == "environment" and s.tags["device"] == "unknown-sensors"]
    nothing = status["unknown-nothing"].fields
    assert nothing["up"] is False and "no standard MIB" in nothing["error"]
    # one enterprise number, two MIBs: the vendor profile is chosen only where its probe object answers
    assert status["cyberpower-rmcard"].tags["profile"] == "cyberpower-ups"
    assert status["cyberpower-rfc1628"].tags["profile"] == "ups-mib"
    assert status["cyberpower-rfc1628"].fields["readings"] > 5


def test_a_matched_profile_with_no_readings_is_a_state_said_once(snmpsim, caplog):
    import logging

    col = SnmpCollector(SnmpOptions(devices=[{"name": "quiet", "host": "127.0.0.1", "port": snmpsim.port,
                                              "community": "apc-rpdu2-empty"}]), Context("snmp"))

    async def go():
        out = []
        for _ in range(2):
            acc = Accumulator(1, {"host": "poller1"})
            await col.collect(acc)
            out.append(acc.close())
        return out

    try:
        with caplog.at_level(logging.INFO, logger="collectors.snmp"):
            polls = asyncio.run(go())
    finally:
        col.close()
    for samples in polls:
        (st,) = [s for s in samples if s.measurement == "snmp_device"]
        assert st.tags["profile"] == "apc-rpdu2"
        assert st.fields["up"] is True and st.fields["state"] == "empty" and st.fields["readings"] == 0
        assert "no readings; nothing at 1.3.6.1.4.1.318" in st.fields["error"]
    said = [r for r in caplog.records if "quiet" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING


def test_a_device_is_said_when_it_first_reads_and_a_dead_one_once_over_many_polls(snmpsim, caplog):
    import logging

    col = SnmpCollector(SnmpOptions(devices=[
        {"name": "pdu-a", "host": "127.0.0.1", "port": snmpsim.port, "community": "apc-rpdu2"},
        {"name": "gone", "host": "127.0.0.1", "port": free_port_udp(), "community": "x", "timeout": 0.3,
         "retries": 0}]), Context("snmp"))

    async def go():
        for _ in range(3):
            await col.collect(Accumulator(1, {"host": "poller1"}))

    try:
        with caplog.at_level(logging.INFO, logger="collectors.snmp"):
            asyncio.run(go())
    finally:
        col.close()
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [m for _, m in said if "pdu-a" in m] == ["snmp device pdu-a (127.0.0.1): polling with profile apc-rpdu2"]
    (gone,) = [(lv, m) for lv, m in said if "gone" in m]
    assert gone[0] == logging.ERROR and "no response from" in gone[1]


def test_probe_of_a_device_that_gives_nothing_exits_3_and_says_what_was_silent(snmpsim):
    r = subprocess.run([sys.executable, "-m", "agent", "snmp", "probe", f"127.0.0.1:{snmpsim.port}",
                        "--community", "apc-rpdu2-empty", "--json"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 3, r.stderr
    assert "matched but gave no readings: nothing at 1.3.6.1.4.1.318" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["profile"] == "apc-rpdu2" and doc["readings"] == [] and doc["empty"]
