"""SNMP profiles evaluated on small fixtures derived from real device recordings."""

from __future__ import annotations

import random

import pytest

from collectors.common.profile import FieldSpec, field_catalogue
from collectors.common.profile.evaluate import evaluate
from collectors.common.profile.plan import required_oids
from collectors.snmp.match import load_profiles, match_profile

from .conftest import FIXTURES
from .snmprec import load

PROFILES = load_profiles()


def readings(fixture: str, profile: str | None = None):
    """The profile the collector would choose for the recording (sysObjectID, sysDescr, then the probes it
    answers) and its readings."""
    import asyncio

    from collectors.common.profile import norm_oid
    from collectors.snmp import detect_profile
    from collectors.snmp.match import candidates

    data = load(FIXTURES / "snmp" / f"{fixture}.snmprec")
    sys_oid, sys_descr = data["1.3.6.1.2.1.1.2.0"], data.get("1.3.6.1.2.1.1.1.0", "")

    async def answers(oid):
        oid = norm_oid(oid)
        return any(k == oid or k.startswith(oid + ".") for k in data)

    p = PROFILES[profile] if profile else asyncio.run(
        detect_profile(candidates(PROFILES, str(sys_oid), str(sys_descr)), answers))
    assert p is not None
    return p.name, {(r.measurement, tuple(sorted(r.tags.items())), r.field): (r.value, r.unit)
                    for r in evaluate(p, data)}


def test_apc_rpdu2_ap8959eu3():
    name, r = readings("apc-rpdu2")
    assert name == "apc-rpdu2"
    dev = (("pdu", "1"), ("scope", "device"), ("vendor", "apc"))
    assert r[("pdu", dev, "power_watts")] == (270.0, "watts")          # 27 hundredths of kW
    assert r[("pdu", dev, "apparent_power_va")] == (300.0, "va")
    assert r[("pdu", dev, "power_factor")] == (0.82, "1")
    assert r[("pdu", dev, "energy_joules_total")] == (19677 * 360000.0, "joules")  # 1967.7 kWh
    assert r[("pdu", dev, "load_state")] == ("normal", "info")
    phase = (("phase", "1"), ("scope", "phase"), ("vendor", "apc"))
    assert r[("pdu", phase, "current_amperes")] == (1.3, "amperes")
    assert r[("pdu", phase, "voltage_volts")] == (231.0, "volts")
    assert r[("pdu", phase, "power_watts")] == (250.0, "watts")
    assert r[("pdu", phase, "load_state")] == ("normal", "info")
    # the temperature probe reports -1: unsupported, dropped rather than -0.1 C
    assert not [k for k in r if k[0] == "environment"]


def test_ups_mib_on_eaton_9px():
    name, r = readings("eaton-ups")
    assert name == "ups-mib"
    s = (("scope", "input"), ("line", "1"))
    base = ()
    assert r[("ups", base, "battery_status")] == ("normal", "info")
    assert r[("ups", base, "battery_low")] == (False, "bool")
    assert r[("ups", base, "battery_runtime_seconds")] == (18 * 60.0, "seconds")
    assert r[("ups", base, "battery_charge_percent")] == (91.0, "percent")
    assert r[("ups", base, "battery_voltage_volts")] == (55.0, "volts")
    assert r[("ups", base, "on_battery")] == (False, "bool") and r[("ups", base, "output_source")] == ("normal", "info")
    assert r[("ups", base, "output_frequency_hertz")] == (50.0, "hertz")
    assert r[("ups", tuple(sorted(s)), "input_voltage_volts")] == (228.0, "volts")
    out = tuple(sorted((("scope", "output"), ("line", "1"))))
    assert r[("ups", out, "output_power_watts")] == (360.0, "watts")
    assert r[("ups", out, "output_load_percent")] == (40.0, "percent")
    assert r[("ups", out, "output_current_amperes")] == (1.7, "amperes")


def test_apc_smart_ups():
    name, r = readings("apc-smt750")
    assert name == "apc-ups"
    assert r[("ups", (("vendor", "apc"),), "battery_runtime_seconds")] == (109762.0, "seconds")  # TimeTicks/100
    assert r[("ups", (("vendor", "apc"),), "output_source")] == ("onLine", "info")
    assert r[("ups", (("vendor", "apc"),), "on_battery")] == (False, "bool")


def test_raritan_px2_decimal_digits():
    name, r = readings("raritan-px2")
    assert name == "raritan-pdu2"
    inlet = (("inlet", "1"), ("pdu", "1"), ("scope", "inlet"), ("vendor", "raritan"))
    assert r[("pdu", inlet, "current_amperes")] == (0.68, "amperes")   # 680 with 3 decimal digits
    assert r[("pdu", inlet, "voltage_volts")] == (233.0, "volts")
    assert r[("pdu", inlet, "power_watts")] == (138.0, "watts")
    assert r[("pdu", inlet, "frequency_hertz")] == (50.0, "hertz")      # 500 with 1 decimal digit


def test_entity_sensor_scale_and_precision():
    _, r = readings("entity-sensor-panos", "entity-sensor")
    assert r[("environment", (("sensor", "9"),), "temperature_celsius")] == (35.0, "celsius")
    assert r[("environment", (("sensor", "32"),), "temperature_celsius")] == (25.0, "celsius")
    assert not [k for k in r if ("sensor", "14") in k[1]]  # rpm sensor: no profile field for it


@pytest.mark.parametrize("raw,scale,precision,status,want", [
    (2345, 9, 1, 1, 234.5), (12, 10, 0, 1, 12000.0), (1500, 8, 0, 1, 1.5), (99, 9, 0, 2, None), (7, 9, -2, 1, 7.0)])
def test_entity_sensor_math(raw, scale, precision, status, want):
    from collectors.common.profile.convert import convert
    assert convert(FieldSpec(field="x", entity_sensor=True), raw, ent=(scale, precision, status)) == want


def test_match_most_specific_and_fallback():
    assert match_profile(PROFILES, "1.3.6.1.4.1.318.1.3.4.6").name == "apc-rpdu2"
    assert match_profile(PROFILES, "1.3.6.1.4.1.318.1.3.27").name == "apc-ups"
    assert match_profile(PROFILES, "1.3.6.1.4.1.13742.6").name == "raritan-pdu2"
    assert match_profile(PROFILES, "1.3.6.1.4.1.99999.1", "Generic UPS agent").name == "ups-mib"
    assert match_profile(PROFILES, "1.3.6.1.4.1.99999.1", "a switch") is None


def test_every_profile_uses_declared_fields_and_polls_something():
    cat = field_catalogue()
    for p in PROFILES.values():
        scalars, columns = required_oids(p)
        assert scalars or columns, p.name
        for g in p.groups:
            for f in g.fields:
                assert (g.measurement, f.field) in cat


def test_malformed_values_never_raise():
    """Fuzz: random types and garbage where numbers are expected give readings or nothing, never an error."""
    rnd = random.Random(7)
    base = load(FIXTURES / "snmp" / "apc-rpdu2.snmprec")
    garbage = [b"\xff\xfe", "", "NaN", "1e999", -2**31, 2**64, None, "  12 ", b"42", 3.5, "inf", "-1"]
    for _ in range(300):
        data = {k: (rnd.choice(garbage) if rnd.random() < 0.5 else v) for k, v in base.items()}
        data = {k: v for k, v in data.items() if v is not None}
        for p in PROFILES.values():
            for reading in evaluate(p, data):
                assert reading.value is not None


def test_servertech_sentry4():
    name, r = readings("sentry4")
    assert name == "servertech-sentry4"
    cord = (("inlet", "1"), ("inlet_name", "Master_Cord_A"), ("pdu", "1"), ("scope", "inlet"),
            ("vendor", "servertech"))
    assert r[("pdu", cord, "power_watts")] == (1701.0, "watts")
    assert r[("pdu", cord, "apparent_power_va")] == (1790.0, "va")
    assert r[("pdu", cord, "power_factor")] == (0.95, "1")
    assert r[("pdu", cord, "energy_joules_total")] == (8937 * 360000.0, "joules")
    phase = (("inlet", "1"), ("pdu", "1"), ("phase", "1"), ("scope", "phase"), ("vendor", "servertech"))
    assert r[("pdu", phase, "voltage_volts")] == (207.9, "volts")
    assert r[("pdu", phase, "current_amperes")] == (2.09, "amperes")


def test_eaton_epdu_millivolts_milliamps_and_wh():
    name, r = readings("eaton-epdu")
    assert name == "eaton-epdu"
    phase = (("inlet", "1"), ("pdu", "0"), ("phase", "1"), ("scope", "phase"), ("vendor", "eaton"))
    assert r[("pdu", phase, "voltage_volts")] == (118.45, "volts")
    assert r[("pdu", phase, "current_amperes")] == (14.108, "amperes")
    assert r[("pdu", phase, "power_watts")] == (1589.0, "watts")
    assert r[("pdu", phase, "energy_joules_total")] == (8185553 * 3600.0, "joules")
    assert r[("pdu", phase, "power_factor")] == (-0.946, "1")
    inlet = (("inlet", "1"), ("pdu", "0"), ("scope", "inlet"), ("vendor", "eaton"))
    assert r[("pdu", inlet, "power_watts")] == (1584.0, "watts")


def t(**kw) -> tuple:
    return tuple(sorted(kw.items()))


# (fixture, profile, [(measurement, tags, field, value, unit)]): raw values from the real recordings,
# scaled by hand from each MIB's units (comments), checked against the readings.
TABLE = [
    ("sentry3", "servertech-sentry3", [
        ("pdu", t(pdu="1", inlet="1", inlet_name="TowerA_InfeedA", scope="inlet", vendor="servertech"),
         "current_amperes", 3.62, "amperes"),                                   # 362 hundredths
        ("pdu", t(pdu="1", inlet="1", inlet_name="TowerA_InfeedA", scope="inlet", vendor="servertech"),
         "rated_load_percent", 12.067, "percent"),                          # 3.62 A of 30 A
        ("pdu", t(pdu="2", inlet="1", inlet_name="TowerB_InfeedA", scope="inlet", vendor="servertech"),
         "voltage_volts", 205.9, "volts"),                                      # 2059 tenths
        ("environment", t(pdu="1", sensor="Temp_Humid_Sensor_A1", vendor="servertech"),
         "temperature_celsius", 20.0, "celsius"),                               # 680 tenths of F = 68.0 F
        ("environment", t(pdu="1", sensor="Temp_Humid_Sensor_A2", vendor="servertech"),
         "temperature_celsius", 23.611111, "celsius"),                          # 74.5 F
        ("environment", t(pdu="1", sensor="Temp_Humid_Sensor_A1", vendor="servertech"),
         "humidity_percent", 52.0, "percent"),
    ]),
    ("sentry3-3phase", "servertech-sentry3", [
        ("pdu", t(scope="device", vendor="servertech"), "power_watts", 279.0, "watts"),
        ("pdu", t(pdu="1", inlet="1", inlet_name="TowerA_InfeedA", scope="inlet", vendor="servertech"),
         "power_watts", 147.0, "watts"),
        ("pdu", t(pdu="1", inlet="1", inlet_name="TowerA_InfeedA", scope="inlet", vendor="servertech"),
         "load_state", "normal", "info"),
    ]),
    ("vertiv-pdu", "vertiv-pdu", [
        ("pdu", t(pdu="1", scope="device", vendor="vertiv"), "power_watts", 1017.0, "watts"),
        ("pdu", t(pdu="1", scope="device", vendor="vertiv"), "energy_joules_total", 8483906 * 3600.0, "joules"),
        ("pdu", t(phase="Phase B", scope="phase", vendor="vertiv"), "voltage_volts", 234.1, "volts"),  # dV
        ("pdu", t(phase="Phase B", scope="phase", vendor="vertiv"), "current_amperes", 1.87, "amperes"),  # cA
        ("pdu", t(phase="Phase A", scope="phase", vendor="vertiv"), "power_factor", 0.88, "1"),
        ("pdu", t(bank="Circuit 4", scope="bank", vendor="vertiv"), "current_amperes", 1.81, "amperes"),
    ]),
    ("rittal-cmc3-pdu", "rittal-cmc3", [
        ("pdu", t(pdu="2", scope="device", vendor="rittal"), "power_watts", 2742.0, "watts"),
        ("pdu", t(pdu="2", scope="device", vendor="rittal"), "energy_joules_total", 2641.8 * 3.6e6, "joules"),
        ("pdu", t(pdu="2", phase="L1", scope="phase", vendor="rittal"), "voltage_volts", 229.2, "volts"),  # /10
        ("pdu", t(pdu="2", phase="L1", scope="phase", vendor="rittal"), "current_amperes", 4.73, "amperes"),
        ("pdu", t(pdu="2", phase="L1", scope="phase", vendor="rittal"), "power_factor", 0.95, "1"),  # -95/100
        ("pdu", t(pdu="2", phase="L1", scope="phase", vendor="rittal"), "apparent_power_va", 1085.0, "va"),
    ]),
    ("rittal-cmc3", "rittal-cmc3", [
        ("environment", t(sensor="1", vendor="rittal"), "temperature_celsius", 20.9, "celsius"),  # 2090 /100
    ]),
    ("rittal-cmc-tc", "rittal-cmc-tc", [
        ("cooling", t(unit="2", vendor="rittal"), "supply_air_temperature_celsius", 16.0, "celsius"),
        ("cooling", t(unit="2", vendor="rittal"), "return_air_temperature_celsius", 25.0, "celsius"),
        ("cooling", t(unit="2", vendor="rittal"), "entering_fluid_temperature_celsius", 14.0, "celsius"),
        ("cooling", t(unit="2", vendor="rittal"), "cooling_output_watts", 8830.0, "watts"),
        ("cooling", t(unit="2", vendor="rittal"), "fan_speed_percent", 63.0, "percent"),
        ("cooling", t(unit="2", vendor="rittal"), "alarms_present", 0.0, "count"),
    ]),
    ("apc-inrow-dx", "apc-cooling-unit", [
        ("cooling", t(unit="1", vendor="apc"), "supply_air_temperature_celsius", 19.4, "celsius"),  # 194 / 10
        ("cooling", t(unit="1", vendor="apc"), "return_air_temperature_celsius", 28.0, "celsius"),
        ("cooling", t(unit="1", vendor="apc"), "rack_inlet_temperature_celsius", 20.9, "celsius"),
        ("cooling", t(unit="1", vendor="apc"), "cooling_output_watts", 10800.0, "watts"),           # 108/10 kW
        ("cooling", t(unit="1", vendor="apc"), "cooling_demand_watts", 11000.0, "watts"),
    ]),
    ("stulz-wib", "stulz-wib", [
        ("cooling", t(unit="1", vendor="stulz"), "supply_air_temperature_celsius", 25.9, "celsius"),
        ("cooling", t(unit="2", vendor="stulz"), "return_air_temperature_celsius", 25.3, "celsius"),
        ("cooling", t(unit="1", vendor="stulz"), "entering_fluid_temperature_celsius", 14.4, "celsius"),
        ("cooling", t(unit="1", vendor="stulz"), "leaving_fluid_temperature_celsius", 24.8, "celsius"),
        ("cooling", t(unit="1", vendor="stulz"), "fan_speed_percent", 85.0, "percent"),
    ]),
    ("liebert-gp", "liebert-gp", [
        ("environment", t(sensor="2", vendor="liebert"), "temperature_celsius", 25.0, "celsius"),
        ("environment", t(sensor="1", vendor="liebert"), "humidity_percent", 34.0, "percent"),
        ("cooling", t(vendor="liebert"), "cooling_capacity_percent", 13.0, "percent"),
        ("ups", t(line="2", vendor="liebert"), "output_voltage_volts", 231.0, "volts"),
        ("ups", t(line="1", vendor="liebert"), "output_current_amperes", 43.0, "amperes"),
    ]),
    ("akcp", "akcp-sensorprobe", [
        ("environment", t(sensor="Temp.Sensor Carrier", vendor="akcp"), "temperature_celsius", 19.9, "celsius"),
        ("environment", t(sensor="Temp.Sensor 1", vendor="akcp"), "temperature_celsius", 22.1, "celsius"),
        ("environment", t(sensor="Custom Descr 1", vendor="akcp"), "humidity_percent", 42.0, "percent"),
    ]),
    ("avtech", "avtech-roomalert", [
        ("environment", t(sensor="internal", vendor="avtech"), "temperature_celsius", 25.34, "celsius"),
        ("environment", t(sensor="external-1", vendor="avtech"), "temperature_celsius", 27.62, "celsius"),
    ]),
    # fixtures below: lines of ../shared/snmprec/{cyberpower,cyberpower_cp1000pfclcd,apc_symmetralx}.snmprec
    ("cyberpower-rmcard", "cyberpower-ups", [
        ("ups", t(vendor="cyberpower"), "battery_runtime_seconds", 1740.0, "seconds"),  # 174000 TimeTicks
        ("ups", t(vendor="cyberpower"), "input_voltage_volts", 119.5, "volts"),        # 1195 tenths
        ("ups", t(vendor="cyberpower"), "output_current_amperes", 6.5, "amperes"),     # 65 tenths
        ("environment", t(sensor="envir", vendor="cyberpower"), "temperature_celsius", 20.166667, "celsius"),  # 68.3 F
        ("environment", t(sensor="envir", vendor="cyberpower"), "humidity_percent", 56.0, "percent"),
    ]),
    ("cyberpower-cp1000", "cyberpower-ups", [
        ("ups", t(vendor="cyberpower"), "output_load_percent", 24.0, "percent"),
        ("ups", t(vendor="cyberpower"), "battery_voltage_volts", 24.0, "volts"),       # 240 tenths
    ]),
    # fixtures: lines of ../shared/snmprec/{hwg-poseidon,raritan-pdu}.snmprec
    ("hwg-poseidon", "hwg-poseidon", [
        ("environment", t(sensor="T.Network", vendor="hwgroup"), "temperature_celsius", 28.5, "celsius"),  # 285
        ("environment", t(sensor="H.Servidores", vendor="hwgroup"), "humidity_percent", 29.6, "percent"),  # 296
    ]),
    ("raritan-px1", "raritan-px1", [
        ("pdu", t(inlet="1", scope="inlet", vendor="raritan"), "current_amperes", 2.971, "amperes"),  # 2971 mA
        ("pdu", t(inlet="1", scope="inlet", vendor="raritan"), "voltage_volts", 230.0, "volts"),      # 230000 mV
        ("pdu", t(inlet="1", scope="inlet", vendor="raritan"), "power_watts", 580.0, "watts"),
        ("pdu", t(inlet="1", scope="inlet", vendor="raritan"), "power_factor", 0.83, "1"),            # 83
        ("pdu", t(outlet="3", outlet_name="OUTLET3", scope="outlet", vendor="raritan"), "current_amperes", 2.192,
         "amperes"),
        ("environment", t(sensor="Temperature AEI8850418", vendor="raritan"), "temperature_celsius", 20.5,
         "celsius"),                                                                                  # 205, type 10
        ("environment", t(sensor="Humidity AEI8850418", vendor="raritan"), "humidity_percent", 39.0, "percent"),
    ]),
    # fixtures: lines of ../shared/snmprec/{apc_emu,apc_environmental-manager,poweralert_pdu,panduit}.snmprec
    ("apc-emu", "apc-environmental", [
        ("environment", t(unit="0", sensor="1", vendor="apc"), "temperature_celsius", 18.0, "celsius"),
        ("environment", t(unit="0", sensor="1", vendor="apc"), "humidity_percent", 30.0, "percent"),
    ]),
    ("apc-environmental-manager", "apc-environmental", [
        ("environment", t(unit="0", sensor="3", vendor="apc"), "humidity_percent", 48.0, "percent"),
    ]),
    ("tripplite-pdu", "tripplite-pdu", [
        ("pdu", t(pdu="1", phase="1", scope="phase", vendor="tripplite"), "voltage_volts", 207.0, "volts"),   # 2070
        ("pdu", t(pdu="1", phase="1", scope="phase", vendor="tripplite"), "current_amperes", 1.0, "amperes"),  # 100
        ("pdu", t(pdu="1", phase="1", scope="phase", vendor="tripplite"), "power_watts", 207.0, "watts"),
        ("pdu", t(pdu="1", phase="1", scope="phase", vendor="tripplite"), "apparent_power_va", 210.0, "va"),  # 21
    ]),
    ("panduit-g5", "panduit-pdu", [
        ("pdu", t(pdu="1", scope="device", vendor="panduit"), "power_watts", 956.0, "watts"),
        ("pdu", t(pdu="1", scope="device", vendor="panduit"), "current_amperes", 4.48, "amperes"),   # 448
        ("pdu", t(pdu="1", scope="device", vendor="panduit"), "power_factor", 0.93, "1"),            # 93
        ("pdu", t(pdu="1", bank="1", scope="bank", vendor="panduit"), "voltage_volts", 229.7, "volts"),  # 2297
    ]),
    ("dell-rpdu", "dell-rpdu", [  # ../shared/snmprec/dell-rpdu.snmprec; sysObjectID written with a leading dot
        ("pdu", t(pdu="1", scope="device", vendor="dell"), "power_watts", 3790.0, "watts"),       # 379 hundredths kW
        ("pdu", t(pdu="1", scope="device", vendor="dell"), "energy_joules_total", 630139 * 360000.0, "joules"),
        ("pdu", t(phase="1", scope="phase", vendor="dell"), "current_amperes", 19.3, "amperes"),   # 193 tenths
        ("pdu", t(phase="1", scope="phase", vendor="dell"), "voltage_volts", 205.0, "volts"),
        ("pdu", t(phase="1", scope="phase", vendor="dell"), "load_state", "nearOverload", "info"),
    ]),
    # fixtures below: lines of ../shared/snmprec/{apc_ats,apc-mgeups_galaxy7000,dantherm-os,eatonpdu_dbq,
    # hpe-mapdu_pdu3,pcoweb-rittalchiller,chatsworth-pdu,huawei-smu_11b}.snmprec; where no MIB text was at hand the
    # scales are the ones LibreNMS's own tests read from the same recordings, checked against physics where they can be
    ("apc-ats", "apc-ats", [
        ("pdu", t(scope="device", vendor="apc"), "selected_source", "sourceA", "info"),
        ("pdu", t(scope="device", vendor="apc"), "source_redundant", True, "bool"),
    ]),
    ("mge-galaxy7000", "mge-ups", [  # RFC 1628 only in part (rows .1.0, Gauge32): the MGE MIB carries it
        ("ups", t(vendor="mge"), "battery_runtime_seconds", 7260.0, "seconds"),
        ("ups", t(vendor="mge"), "battery_voltage_volts", 594.0, "volts"),                 # 5940 dV
        ("ups", t(vendor="mge"), "on_battery", False, "bool"),
        ("ups", t(vendor="mge", scope="input", line="3"), "input_current_amperes", 38.0, "amperes"),  # 380
        ("ups", t(vendor="mge", scope="output", line="3"), "output_load_percent", 11.0, "percent"),
        ("ups", t(vendor="mge", scope="output", line="1"), "output_voltage_volts", 400.0, "volts"),   # 4000 dV
    ]),
    ("dantherm-freecooling", "dantherm-freecooling", [  # sysObjectID 1.3.6.1.4.1.0: found by its sysDescr
        ("environment", t(sensor="room", vendor="dantherm"), "temperature_celsius", 19.0, "celsius"),
        ("environment", t(sensor="controller", vendor="dantherm"), "temperature_celsius", 34.0, "celsius"),
    ]),
    ("eaton-dbq", "eaton-revelation", [
        ("pdu", t(outlet="10", outlet_name="sw2-g11-il1par", scope="outlet", vendor="eaton"), "voltage_volts",
         249.0, "volts"),
        ("pdu", t(outlet="10", outlet_name="sw2-g11-il1par", scope="outlet", vendor="eaton"), "current_amperes",
         0.0, "amperes"),
    ]),
    ("hpe-pdu3", "hpe-pdu3", [
        ("pdu", t(pdu="1", scope="device", vendor="hpe"), "power_watts", 154.0, "watts"),
        ("pdu", t(pdu="1", scope="device", vendor="hpe"), "frequency_hertz", 50.0, "hertz"),        # 500
        ("pdu", t(pdu="1", scope="device", vendor="hpe"), "power_factor", 0.98, "1"),               # 98
        ("pdu", t(pdu="1", phase="1", scope="phase", vendor="hpe"), "voltage_volts", 229.8, "volts"),  # 2298
        ("pdu", t(pdu="1", phase="1", scope="phase", vendor="hpe"), "current_amperes", 0.65, "amperes"),  # 65
        ("pdu", t(pdu="1", phase="1", scope="phase", vendor="hpe"), "power_watts", 154.0, "watts"),
    ]),
    ("rittal-chiller", "rittal-chiller-pcoweb", [
        ("cooling", t(vendor="rittal"), "entering_fluid_temperature_celsius", 18.0, "celsius"),     # 180
        ("cooling", t(vendor="rittal"), "leaving_fluid_temperature_celsius", 17.9, "celsius"),      # 179
        ("cooling", t(vendor="rittal"), "cooling_output_watts", 33900.0, "watts"),                  # 339 x 0.1 kW
        ("cooling", t(vendor="rittal"), "unit_power_watts", 700.0, "watts"),                        # 7
    ]),
    ("chatsworth-pdu", "chatsworth-pdu", [  # sysObjectID .0.10.43.6.1.4.1: found by its sysDescr
        ("pdu", t(pdu="000ED3013C4D", branch="1", scope="branch", vendor="chatsworth"), "current_amperes", 7.13,
         "amperes"),                                                                                   # 713
        ("pdu", t(pdu="000ED3013C4D", branch="1", scope="branch", vendor="chatsworth"), "voltage_volts", 206.5,
         "volts"),                                                                                     # 2065
        ("pdu", t(pdu="000ED3013C4D", branch="1", scope="branch", vendor="chatsworth"), "apparent_power_va",
         1467.0, "va"),                                                     # 7.13 A x 206.5 V = 1472 VA
        ("pdu", t(pdu="000ED300AD21", outlet="1", outlet_name="OutletName1", scope="outlet", vendor="chatsworth"),
         "voltage_volts", 207.2, "volts"),
        ("pdu", t(pdu="000ED300AD21", outlet="1", outlet_name="OutletName1", scope="outlet", vendor="chatsworth"),
         "energy_joules_total", 644490.0, "joules"),                        # 64449 decawatt-seconds
    ]),
    ("huawei-smu11b", "huawei-smu", [  # a -48 V DC plant: what it delivers (scope device) and what it draws
        ("pdu", t(output="dc", scope="device", vendor="huawei"), "voltage_volts", 53.5, "volts"),
        ("pdu", t(output="dc", scope="device", vendor="huawei"), "current_amperes", 3.4, "amperes"),
        ("pdu", t(output="dc", scope="device", vendor="huawei"), "power_watts", 179.0, "watts"),
        ("pdu", t(scope="input", vendor="huawei"), "power_watts", 192.0, "watts"),
        ("pdu", t(ac_input="1", phase="1", scope="input", vendor="huawei"), "voltage_volts", 231.2, "volts"),
    ]),
    ("apc-symmetra-lx", "apc-ups", [  # only upsHighPrec* answered: each from its fallback, in tenths
        ("ups", t(vendor="apc"), "battery_charge_percent", 100.0, "percent"),           # 1000
        ("ups", t(vendor="apc"), "input_voltage_volts", 223.3, "volts"),                # 2233
        ("ups", t(vendor="apc"), "output_load_percent", 64.0, "percent"),               # 640
    ]),
]


@pytest.mark.parametrize("fixture,profile,want", TABLE, ids=[x[0] for x in TABLE])
def test_profiles_on_real_recordings(fixture, profile, want):
    name, r = readings(fixture)
    assert name == profile  # auto-detected from the recording's sysObjectID
    for meas, tags, field, value, unit in want:
        got = r.get((meas, tags, field))
        assert got is not None, (meas, tags, field, sorted(k for k in r if k[2] == field))
        want_value = value if isinstance(value, str) else pytest.approx(value, rel=1e-9)
        assert got[1] == unit and got[0] == want_value, (meas, tags, field, got)


def test_groups_not_fitted_and_sensors_not_communicating_are_left_out():
    _, r = readings("panduit-g5")  # pdug5GroupVoltage 0 on groups 7-12
    assert sorted(k[1] for k in r if k[2] == "voltage_volts") == sorted(
        t(pdu="1", bank=str(b), scope="bank", vendor="panduit") for b in range(1, 7))
    data = load(FIXTURES / "snmp" / "apc-emu.snmprec")
    assert {r.tags["sensor"] for r in evaluate(PROFILES["apc-environmental"], data)} == {"1", "2", "3", "5", "6"}
    data["1.3.6.1.4.1.318.1.1.10.4.2.3.1.7.0.2"] = 1  # memSensorsCommStatus noComm(1): its last reading is stale
    assert {r.tags["sensor"] for r in evaluate(PROFILES["apc-environmental"], data)} == {"1", "3", "5", "6"}


def test_a_zero_output_frequency_is_not_a_reading():
    _, r = readings("cyberpower-cp1000")  # upsAdvanceOutputFrequency 0: the UPS does not measure it
    assert not [k for k in r if k[2] == "output_frequency_hertz"]


def test_offline_probes_and_unavailable_sensors_are_dropped():
    _, r = readings("akcp")
    # ports 1-5 are offline (sensorProbeTempOnline 2): no reading, not a 0 C one
    assert len([k for k in r if k[0] == "environment" and k[2] == "temperature_celsius"]) == 3
    _, r = readings("sentry3")
    assert not [k for k in r if ("pdu", "2") in k[1] and k[0] == "environment"]  # notFound(1) probe


def test_vertiv_energy_wrap_stays_monotonic(tmp_path):
    """The Vertiv/Geist energy register caps at 9,999,000 Wh and restarts at 0: the counter keeps rising."""
    from collectors.common.counters import MonotonicCounters

    p = PROFILES["vertiv-pdu"]
    data = load(FIXTURES / "snmp" / "vertiv-pdu.snmprec")
    oid = "1.3.6.1.4.1.21239.5.2.3.1.1.12.1"
    c = MonotonicCounters(tmp_path / "c.json")
    seen = []
    for raw in (9_998_000, 9_999_000, 500, 1_500):
        data[oid] = raw
        (r,) = [x for x in evaluate(p, data) if x.field == "energy_joules_total" and x.tags.get("scope") == "device"]
        seen.append(c.update("pdu1", r.value, r.wrap_at)[0])
    assert seen == [9_998_000 * 3600.0, 9_999_000 * 3600.0, (9_999_000 + 500) * 3600.0, (9_999_000 + 1_500) * 3600.0]


def test_candidates_best_first_and_standard_mibs_last():
    from collectors.snmp.match import candidates

    names = [p.name for p in candidates(PROFILES, "1.3.6.1.4.1.318.1.3.4.6", "APC Web/SNMP Management Card")]
    assert names[0] == "apc-rpdu2" and set(names[-4:]) == {"eaton-xups", "entity-sensor", "geist-v4", "ups-mib"}
    unknown = [p.name for p in candidates(PROFILES, "1.3.6.1.4.1.99999.1", "a switch")]
    # the standard MIBs (and monitors known only by what they answer), each behind its probe
    assert sorted(unknown) == ["eaton-xups", "entity-sensor", "geist-v4", "ups-mib"]
    assert all(PROFILES[n].match.probe for n in unknown)


def test_fallback_to_the_legacy_object_when_rpdu2_says_not_supported():
    """AP7900B on AOS 6.8 (tests/fixtures/snmp/apc-ap7900b.snmprec: the system, rPDU2 device and phase rows and the
    legacy rPDUIdent objects of ../shared/snmprec/apc_ap7900b.snmprec): rPDU2DeviceStatusPower answers -1, and
    rPDUIdentDevicePowerWatts carries the real 312 W; the reading says it came from the fallback."""
    data = load(FIXTURES / "snmp" / "apc-ap7900b.snmprec")
    assert data["1.3.6.1.4.1.318.1.1.26.4.3.1.5.1"] == -1 and data["1.3.6.1.4.1.318.1.1.12.1.16.0"] == 312
    p = match_profile(PROFILES, data["1.3.6.1.2.1.1.2.0"])
    assert p.name == "apc-rpdu2"
    got = {(r.tags.get("scope"), r.field): r for r in evaluate(p, data)}
    power = got[("device", "power_watts")]
    assert power.value == 312.0 and power.origin == "1.3.6.1.4.1.318.1.1.12.1.16.0"
    assert ("device", "apparent_power_va") not in got  # -1 with no fallback: absent, never -10 VA
    assert got[("phase", "current_amperes")].value == 2.7 and got[("phase", "current_amperes")].origin is None
    # the phase voltage answers -1 too: rPDUIdentDeviceLinetoLineVoltage (120 V) stands for the one phase row
    volts = got[("phase", "voltage_volts")]
    assert volts.value == 120.0 and volts.origin == "1.3.6.1.4.1.318.1.1.12.1.15.0"
    # the rPDU2 value wins where it is valid (AP8959EU3: 27 hundredths of kW), the fallback is not read then
    data2 = load(FIXTURES / "snmp" / "apc-rpdu2.snmprec")
    dev = {(r.tags.get("scope"), r.field): r for r in evaluate(p, data2)}[("device", "power_watts")]
    assert dev.value == 270.0 and dev.origin is None
    # a table with two devices (daisy chain): the legacy scalar is the host's only, so it stands for no row
    two = dict(data)
    two.update({k[:-2] + ".2": v for k, v in data.items() if k.startswith("1.3.6.1.4.1.318.1.1.26.4.3.1.")})
    assert not [r for r in evaluate(p, two) if r.field == "power_watts" and r.tags.get("scope") == "device"]


# Recordings in ../shared/snmprec that give no readings, and why (docs/snmp.md says so beside each): a recording
# that gave readings and now gives none fails here. None left: every power, cooling and environment recording
# gives readings.
NO_READINGS_YET: dict[str, str] = {}


def test_every_real_recording_gives_readings_or_is_a_known_gap():
    import os
    from pathlib import Path

    from .snmprec import coverage

    shared = Path(__file__).resolve().parents[2] / "shared" / "snmprec"
    if not shared.is_dir():
        if os.environ.get("CI"):
            raise AssertionError(f"{shared} missing: CI runs with ../shared beside the checkout")
        pytest.skip("../shared/snmprec not beside this checkout")
    rows = [coverage(PROFILES, f) for f in sorted(shared.glob("*.snmprec"))]
    assert len(rows) >= 50
    zero = {c["device"] for c in rows if c["readings"] == 0}
    assert zero == set(NO_READINGS_YET)
    assert sum(c["fallbacks"] for c in rows) >= 4  # AP7900B's power, the Symmetra and SMT high-precision objects


def test_devices_known_by_what_they_answer_not_their_sysobjectid():
    """Chatsworth answers a malformed sysObjectID and Dantherm 1.3.6.1.4.1.0: their sysDescr makes them candidates,
    their own subtree confirms them; a device with the same sysDescr that lacks the subtree is not taken for one."""
    import asyncio

    from collectors.snmp import detect_profile
    from collectors.snmp.match import candidates

    for fixture, name in (("chatsworth-pdu", "chatsworth-pdu"), ("dantherm-freecooling", "dantherm-freecooling")):
        data = load(FIXTURES / "snmp" / f"{fixture}.snmprec")
        found = candidates(PROFILES, str(data["1.3.6.1.2.1.1.2.0"]), data["1.3.6.1.2.1.1.1.0"])

        async def answers(oid, data=data):
            return any(k == oid or k.startswith(oid + ".") for k in data)

        assert asyncio.run(detect_profile(found, answers)).name == name
        bare = {k: v for k, v in data.items() if k.startswith("1.3.6.1.2.1.1.")}

        async def silent(oid, bare=bare):
            return any(k == oid or k.startswith(oid + ".") for k in bare)

        assert asyncio.run(detect_profile(found, silent)) is None


def test_rows_not_fitted_and_absent_probes_are_left_out():
    _, r = readings("hpe-pdu3")  # pdu3InputPhaseIndex 0 on phases 2 and 3 of a single-phase PDU
    assert {dict(k[1]).get("phase") for k in r if dict(k[1]).get("scope") == "phase"} == {"1"}
    _, r = readings("dantherm-freecooling")  # hotSpotTempr -41: no hot-spot probe fitted
    assert {dict(k[1])["sensor"] for k in r} == {"room", "controller"}
    _, r = readings("eaton-dbq")  # outlets 16-19 answer 0 V: not fitted
    volts = {dict(k[1])["outlet"] for k in r if k[2] == "voltage_volts"}
    assert volts == {str(i) for i in range(16)}


@pytest.mark.parametrize("parts,pos,want", [
    (["1", "12", *[str(ord(c)) for c in "000ED3013C4D"]], 2, "000ED3013C4D"),
    (["1", "3", "65", "66"], 2, ""),            # shorter than its length
    (["1", "2", "65", "7"], 2, ""),             # not printable
    (["1"], 2, ""), (["1", "x"], 2, ""),
])
def test_string_in_a_row_index(parts, pos, want):
    from collectors.common.profile.evaluate import index_text

    assert index_text(parts, pos) == want


def test_a_geist_v3_monitor_is_not_read_as_an_empty_vertiv_pdu():
    """Same enterprise number, other MIB: without the V5 tree the Vertiv profile is not chosen (the fixture is the
    Vertiv recording with its V5 objects taken away, as a GEIST-V3 unit answers none of them)."""
    import asyncio

    from collectors.snmp import detect_profile
    from collectors.snmp.match import candidates

    data = load(FIXTURES / "snmp" / "vertiv-pdu.snmprec")
    found = candidates(PROFILES, str(data["1.3.6.1.2.1.1.2.0"]), str(data.get("1.3.6.1.2.1.1.1.0", "")))
    assert found[0].name == "vertiv-pdu"

    def answering(keys):
        async def answers(oid):
            return any(k == oid or k.startswith(oid + ".") for k in keys)
        return answers

    assert asyncio.run(detect_profile(found, answering(data))).name == "vertiv-pdu"
    v3 = [k for k in data if not k.startswith("1.3.6.1.4.1.21239.5.")]
    assert asyncio.run(detect_profile(found, answering(v3))) is None


def test_datadog_evaluation_still_runs_on_the_recordings():
    """docs/datadog-eval, whose figures docs/snmp.md quotes: it must keep running and keep measuring something."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root.parent / "shared" / "snmprec").is_dir():
        if os.environ.get("CI"):
            raise AssertionError("../shared/snmprec missing: CI runs with ../shared beside the checkout")
        pytest.skip("../shared/snmprec not beside this checkout")
    out = subprocess.run([sys.executable, str(root / "docs" / "datadog-eval")], capture_output=True, text=True,
                         check=True).stdout
    lines = [x for x in out.splitlines() if not x.startswith(" ")]
    assert len(lines) == 5 and all("metrics answered" in x for x in lines)
    assert "chatsworth_pdu on chatsworth-pdu: 8/12 metrics answered" in out


def test_an_eaton_ups_answering_xups_mib_alone_is_read_by_it():
    """An Eaton/Powerware card under MGE's sysObjectID (705.1) with an empty sysDescr that answers XUPS-MIB and not
    RFC 1628 (a fixture built from XUPS-MIB's objects): UPS-MIB, asked first, is not confirmed; XUPS-MIB is, and
    gives the battery, input and output readings with their units."""
    import asyncio

    from collectors.snmp import detect_profile
    from collectors.snmp.match import candidates

    data = load(FIXTURES / "snmp" / "eaton-xups.snmprec")
    found = candidates(PROFILES, str(data["1.3.6.1.2.1.1.2.0"]), data["1.3.6.1.2.1.1.1.0"])
    assert [p.name for p in found][:1] == ["ups-mib"]  # by its sysObjectID, first; its probe finds nothing

    async def answers(oid):
        return any(k == oid or k.startswith(oid + ".") for k in data)

    p = asyncio.run(detect_profile(found, answers))
    assert p.name == "eaton-xups"
    got = {(r.tags.get("scope"), r.field): r.value for r in evaluate(p, data)}
    assert got[(None, "battery_runtime_seconds")] == 1860 and got[(None, "battery_charge_percent")] == 100
    assert got[(None, "output_frequency_hertz")] == 50.0 and got[("input", "input_frequency_hertz")] == 50.0
    assert got[(None, "output_source")] == "normal" and got[(None, "on_battery")] is False
    assert got[("input", "input_voltage_volts")] == 230 and got[("input", "input_power_watts")] == 1150
    assert got[("output", "output_power_watts")] == 1080 and got[(None, "output_load_percent")] == 38


def test_a_geist_watchdog_on_v4_firmware_is_found_by_what_it_answers():
    """A Watchdog 100 on GEIST-V4-MIB under net-snmp's sysObjectID (a fixture built from the MIB's objects): no
    vendor profile matches, the V4 climate table answers, and its readings come in degrees C whatever unit the
    device is set to; a probe marked unavailable is left out."""
    import asyncio

    from collectors.snmp import detect_profile
    from collectors.snmp.match import candidates

    data = load(FIXTURES / "snmp" / "geist-v4.snmprec")
    found = candidates(PROFILES, str(data["1.3.6.1.2.1.1.2.0"]), data["1.3.6.1.2.1.1.1.0"])

    async def answers(oid):
        return any(k == oid or k.startswith(oid + ".") for k in data)

    p = asyncio.run(detect_profile(found, answers))
    assert p.name == "geist-v4"
    got = {(r.tags.get("sensor"), r.field): r.value for r in evaluate(p, data)}
    assert got == {("WD100 climate", "temperature_celsius"): 23.4, ("WD100 climate", "humidity_percent"): 41,
                   ("WD100 climate", "dew_point_celsius"): 9.6, ("Rack C12 top", "temperature_celsius"): 28.1,
                   ("Rack C12 bottom", "temperature_celsius"): 19.9}
    # the same unit set to Fahrenheit (temperatureUnits 0): tenths of degrees F, read as C
    data["1.3.6.1.4.1.21239.5.1.1.7.0"] = 0
    data["1.3.6.1.4.1.21239.5.1.4.1.5.1"] = 826  # 82.6 F
    f = {(r.tags.get("sensor"), r.field): r.value for r in evaluate(p, data)}
    assert f[("Rack C12 top", "temperature_celsius")] == 28.111111
    # a Geist V4 under Geist's own sysObjectID goes to it before the Vertiv PDU profile it shares 21239.5 with
    assert asyncio.run(detect_profile(candidates(PROFILES, "1.3.6.1.4.1.21239.5.1", ""), answers)).name == "geist-v4"


def test_a_tripp_lite_transfer_switch_is_read_as_one_not_as_an_empty_pdu():
    """A Tripp Lite ATS under the PowerAlert sysObjectID the PDUs share (a fixture built from TRIPPLITE-PRODUCTS'
    tlpAts objects; it also answers tlpPduIdent, as the card does for every device type): the tlpAts probe picks
    the ATS profile, which gives both sources, the one in use, redundancy and the output."""
    import asyncio

    from collectors.snmp import detect_profile
    from collectors.snmp.match import candidates

    data = load(FIXTURES / "snmp" / "tripplite-ats.snmprec")

    def answers_of(d):
        async def answers(oid):
            return any(k == oid or k.startswith(oid + ".") for k in d)
        return answers

    found = candidates(PROFILES, str(data["1.3.6.1.2.1.1.2.0"]), data["1.3.6.1.2.1.1.1.0"])
    p = asyncio.run(detect_profile(found, answers_of(data)))
    assert p.name == "tripplite-ats"
    rows = {}
    for r in evaluate(p, data):
        rows.setdefault((r.tags.get("scope"), r.tags.get("inlet"), r.tags.get("phase")), {})[r.field] = r.value
    assert rows[("device", None, None)] == {"selected_source": "sourceA", "source_redundant": True,
                                            "power_watts": 1840}
    assert rows[("inlet", "sourceA", "1")] == {"frequency_hertz": 60.0, "voltage_volts": 208.1,
                                               "current_amperes": 8.84}
    assert rows[("inlet", "sourceB", "1")] == {"frequency_hertz": 60.0, "voltage_volts": 207.9,
                                               "current_amperes": 0.0}
    assert rows[("phase", None, "1")] == {"voltage_volts": 208.0, "current_amperes": 8.85, "power_watts": 1840,
                                          "power_factor": 0.98, "frequency_hertz": 60.0}
    # the Tripp Lite PDU recording still goes to the PDU profile: it answers no tlpAts
    pdu = load(FIXTURES / "snmp" / "tripplite-pdu.snmprec")
    assert asyncio.run(detect_profile(found, answers_of(pdu))).name == "tripplite-pdu"
