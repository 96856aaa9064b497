"""The Modbus collector against real Modbus TCP servers on loopback (pymodbus' server holding register images
built from each profile's published map), and its pure parts: read planning, profiles, coolant heat."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from agent.collector import Context
from agent.config import ConfigError, load_config
from agent.model import Accumulator
from agent.registry import default_registry
from collectors.common.coolant import VOLUMETRIC_HEAT_CAPACITY, complete
from collectors.common.profile import load_profiles as load_any
from collectors.modbus import PROFILE_DIR, Device, DeviceOptions, Match, ModbusCollector, load_profiles, poll_device
from collectors.modbus.blocks import Ref, parse_object, plan_blocks, split
from collectors.modbus.client import Connection

from .services import SilentServer, modbus_words

SUNSPEC_BASE = 40000
SUNSPEC_MODEL_AT = 40070  # after "SunS" (2) and the common model 1 (2 + 66)


def put(image: dict[int, int], address: int, kind: str, value: float, word_order: str = "big") -> None:
    for i, w in enumerate(modbus_words(kind, value, word_order)):
        image[address + i] = w


def sunspec_chain(model: int, points: dict[int, int], length: int = 105) -> dict[int, int]:
    """Holding registers of a SunSpec device: the marker, the common model, `model` with its points (offsets
    from its ID register), the end marker."""
    regs = {SUNSPEC_BASE: 0x5375, SUNSPEC_BASE + 1: 0x6E53, SUNSPEC_BASE + 2: 1, SUNSPEC_BASE + 3: 66}
    regs.update({SUNSPEC_BASE + 4 + i: 0 for i in range(66)})
    # points not set are "not implemented": int16 0x8000 up to the energy accumulators, acc32 0 from there
    regs.update({SUNSPEC_MODEL_AT + i: 0x8000 if i < 38 else 0 for i in range(length + 2)})
    regs[SUNSPEC_MODEL_AT], regs[SUNSPEC_MODEL_AT + 1] = model, length
    regs.update({SUNSPEC_MODEL_AT + off: w for off, w in points.items()})
    end = SUNSPEC_MODEL_AT + 2 + length
    regs[end], regs[end + 1] = 0xFFFF, 0
    return regs


def profile_image(name: str) -> tuple[dict[str, dict[int, int]], dict[tuple, float]]:
    """A register image holding a distinct value in every plain word-typed field of the profile, and the reading
    each must give: (image by table, {(measurement, frozen static tags, field): value})."""
    p = load_profiles()[name]
    tables: dict[str, dict[int, int]] = {}
    expected: dict[tuple, float] = {}
    base = SUNSPEC_MODEL_AT if p.match.sunspec_models else 0
    n = 0
    for g in p.groups:
        for f in g.fields:
            ref = parse_object(f.oid)
            if f.bit is not None or f.map is not None or f.enum is not None:
                tables.setdefault(ref.table, {}).setdefault(base + ref.address, 0)  # flags clear
                continue
            n += 1
            raw = 100 + n if f.type not in ("float32", "float64") else 100.5 + n
            put(tables.setdefault(ref.table, {}), base + ref.address, f.type, raw, f.word_order)
            value = raw * f.scale
            if f.scale_exponent:
                tables[ref.table][base + parse_object(f.scale_exponent).address] = 0xFFFF  # -1: tenths
                value *= 0.1
            if f.scale_select:
                sel = next(k for k, v in f.scale_select.factors.items() if v != 1.0)
                tables[ref.table][base + parse_object(f.scale_select.object).address] = sel
                value *= f.scale_select.factors[sel]
            expected[(g.measurement, frozenset(g.static_tags.items()), f.field)] = round(value, 6)
    if p.match.sunspec_models:
        tables["hr"] = sunspec_chain(p.match.sunspec_models[0],
                                     {a - SUNSPEC_MODEL_AT: w for a, w in tables["hr"].items()})
    return tables, expected


def collect(devices: list[dict], state: Path | None = None, timeout: float | None = None, polls: int = 1):
    c = ModbusCollector(ModbusCollector.Options(devices=devices), Context("modbus", state_dir=state, timeout=timeout))
    out = []
    try:
        for i in range(polls):
            acc = Accumulator(1 + i, {"host": "poller1"})
            asyncio.run(c.collect(acc))
            out.append(acc.close())
    finally:
        c.close()
    return out if polls > 1 else out[0]


def rows_of(samples, measurement: str) -> dict[frozenset, dict]:
    return {frozenset((k, v) for k, v in s.tags.items() if k not in ("host",)): s.fields
            for s in samples if s.measurement == measurement}


def device_row(samples, name: str) -> dict:
    return next(s.fields for s in samples if s.measurement == "modbus_device" and s.tags["device"] == name)


# --- read planning and profiles (pure) -----------------------------------------------------------------------------


def test_adjacent_objects_coalesce_into_reads_the_device_allows():
    objs = {"a": Ref("hr", 0, 2), "b": Ref("hr", 2, 2), "c": Ref("hr", 10, 1), "d": Ref("hr", 200, 2),
            "e": Ref("ir", 0, 1), "f": Ref("co", 3, 1)}
    blocks = plan_blocks(objs, max_count=125, max_gap=16)
    assert [(b.table, b.address, b.count, [n for n, _ in b.objects]) for b in blocks] == [
        ("co", 3, 1, ["f"]), ("hr", 0, 11, ["a", "b", "c"]), ("hr", 200, 2, ["d"]), ("ir", 0, 1, ["e"])]
    # a gap wider than allowed, or a read longer than the device takes, starts a new read
    assert [(b.address, b.count) for b in plan_blocks(objs, max_count=125, max_gap=5) if b.table == "hr"] == [
        (0, 4), (10, 1), (200, 2)]
    assert [(b.address, b.count) for b in plan_blocks(objs, max_count=3, max_gap=16) if b.table == "hr"] == [
        (0, 2), (2, 2), (10, 1), (200, 2)]
    # a refused read becomes one read per object
    assert [(b.address, b.count) for b in split(blocks[1])] == [(0, 2), (2, 2), (10, 1)]


def test_an_object_name_says_its_table_and_protocol_address():
    assert parse_object("hr:3059", 2) == Ref("hr", 3059, 2)
    assert parse_object("ir:0") == Ref("ir", 0, 1)
    for bad in ("40001", "hr:-1", "xx:1", "hr:700000"):
        with pytest.raises(ValueError, match="not a Modbus object"):
            parse_object(bad)
    for bad, words in (("hr:70000", 1), ("hr:65535", 2)):
        with pytest.raises(ValueError, match="past address 65535"):
            parse_object(bad, words)


def test_a_register_field_without_a_type_is_refused_with_its_profile_named(tmp_path):
    (tmp_path / "bad.yaml").write_text(
        "name: bad\nmatch: {}\ngroups:\n  - measurement: meter\n    fields:\n"
        "      - {field: power_watts, object: 'hr:3'}\n")
    load_profiles.cache_clear()
    try:
        with pytest.raises(Exception, match="bad: meter.power_watts reads register hr:3 without a type"):
            load_profiles(tmp_path)
    finally:
        load_profiles.cache_clear()


SUNSPEC_POINTS = {  # field of our profile -> SunSpec point it reads (and the scale factor's point)
    ("device", "current_amperes"): ("A", "A_SF"), ("device", "voltage_volts"): ("PhV", "V_SF"),
    ("device", "frequency_hertz"): ("Hz", "Hz_SF"), ("device", "power_watts"): ("W", "W_SF"),
    ("device", "apparent_power_va"): ("VA", "VA_SF"), ("device", "reactive_power_var"): ("VAR", "VAR_SF"),
    ("device", "power_factor"): ("PF", "PF_SF"), ("device", "energy_exported_joules_total"): ("TotWhExp", "TotWh_SF"),
    ("device", "energy_joules_total"): ("TotWhImp", "TotWh_SF"),
    ("1", "current_amperes"): ("AphA", "A_SF"), ("2", "current_amperes"): ("AphB", "A_SF"),
    ("3", "current_amperes"): ("AphC", "A_SF"), ("1", "voltage_volts"): ("PhVphA", "V_SF"),
    ("2", "voltage_volts"): ("PhVphB", "V_SF"), ("3", "voltage_volts"): ("PhVphC", "V_SF"),
    ("1", "power_watts"): ("WphA", "W_SF"), ("2", "power_watts"): ("WphB", "W_SF"),
    ("3", "power_watts"): ("WphC", "W_SF"),
}


@pytest.mark.parametrize("model", [201, 202, 203, 204])
def test_the_sunspec_profile_reads_the_points_sunspecs_model_definitions_place_there(model):
    sunspec2 = pytest.importorskip("sunspec2")
    spec = json.loads((Path(sunspec2.__file__).parent / "models" / "json" / f"model_{model}.json").read_text())
    offsets, types, off = {}, {}, 0
    for pt in spec["group"]["points"]:
        offsets[pt["name"]], types[pt["name"]] = off, pt["type"]
        off += pt["size"]
    p = load_profiles()["sunspec-meter"]
    assert model in p.match.sunspec_models
    checked = 0
    for g in p.groups:
        where = g.static_tags.get("phase", "device")
        for f in g.fields:
            point, sf = SUNSPEC_POINTS[(where, f.field)]
            assert parse_object(f.oid).address == offsets[point], (model, f.field, point)
            assert parse_object(f.scale_exponent).address == offsets[sf], (model, f.field, sf)
            assert {"int16": "int16", "acc32": "uint32"}[types[point]] == f.type
            checked += 1
    assert checked == len(SUNSPEC_POINTS)


def test_heat_removed_is_derived_from_flow_and_delta_t_where_the_unit_does_not_report_it():
    fields = {"coolant_supply_temperature_celsius": 30.0, "coolant_return_temperature_celsius": 40.0,
              "coolant_flow_litres_per_minute": 600.0}
    complete(fields, "water")
    # 600 L/min = 10 L/s; x 4160 J/(L K) x 10 K = 416 kW
    assert fields["coolant_delta_temperature_celsius"] == 10.0
    assert fields["heat_removed_watts"] == 416000.0 and fields["heat_removed_basis"] == "derived_water"
    glycol = {"coolant_delta_temperature_celsius": 10.0, "coolant_flow_litres_per_minute": 600.0}
    complete(glycol, "pg25")
    assert glycol["heat_removed_watts"] == 10 * VOLUMETRIC_HEAT_CAPACITY["pg25"] * 10
    reported = {"heat_removed_watts": 5000, "coolant_flow_litres_per_minute": 600.0,
                "coolant_delta_temperature_celsius": 10.0}
    complete(reported, "water")
    assert reported == {**reported, "heat_removed_watts": 5000, "heat_removed_basis": "reported"}
    custom = {"coolant_delta_temperature_celsius": 5.0, "coolant_flow_litres_per_minute": 60.0}
    complete(custom, "water", heat_capacity=3500.0)
    assert custom["heat_removed_watts"] == 17500.0


def test_an_unknown_profile_in_the_config_names_the_key_and_the_profiles(tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("collectors:\n  modbus:\n    enabled: true\n    devices:\n"
                   "      - {name: m1, host: 127.0.0.1, profile: sdm630}\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg, default_registry())
    text = str(e.value)
    assert "collectors.modbus.devices[0].profile" in text and "eastron-sdm630" in text and "agent.yaml" in text


# --- against real Modbus TCP servers ----------------------------------------------------------------------------


@pytest.mark.services
@pytest.mark.parametrize("profile", sorted(load_any(PROFILE_DIR, Match)))
def test_every_profile_reads_its_register_image_from_a_real_server(modbus, profile):
    tables, expected = profile_image(profile)
    srv = modbus({1: tables})
    samples = collect([{"name": "d1", "host": "127.0.0.1", "port": srv.port, "profile": profile}])
    got = {}
    for s in samples:
        if s.measurement == "modbus_device":
            continue
        static = frozenset((k, v) for k, v in s.tags.items() if k not in (
            "host", "device", "role", "profile", "source"))
        for f, v in s.fields.items():
            got[(s.measurement, static, f)] = v
    for key, value in expected.items():
        assert got.get(key) == pytest.approx(value, rel=1e-6), key
    dev = device_row(samples, "d1")
    assert dev["up"] is True and dev["exceptions"] == 0 and dev["absent_objects"] == 0


@pytest.mark.services
def test_a_meter_is_read_in_as_few_requests_as_its_map_allows(modbus):
    regs: dict[int, int] = {}
    for addr in range(0, 80, 2):
        put(regs, addr, "float32", 0.0)
    for addr, v in {0: 230.1, 6: 10.5, 12: 2416.05, 52: 7300.0, 62: -0.98, 70: 50.01, 72: 12345.6}.items():
        put(regs, addr, "float32", v)
    for addr in (200, 202, 204):
        put(regs, addr, "float32", 400.2)
    srv = modbus({1: {"ir": regs}})
    samples = collect([{"name": "sdm", "host": "127.0.0.1", "port": srv.port, "profile": "eastron-sdm630",
                        "role": "facility_total"}])
    meter = rows_of(samples, "meter")
    tags = {"device": "sdm", "role": "facility_total", "profile": "eastron-sdm630", "source": "modbus_meter"}
    dev = meter[frozenset({**tags, "scope": "device"}.items())]
    assert dev["power_watts"] == 7300.0 and dev["frequency_hertz"] == 50.01
    assert dev["power_factor"] == 0.98  # a capacitive load's negative PF: its sign dropped
    assert dev["energy_joules_total"] == pytest.approx(12345.6 * 3.6e6, rel=1e-7)
    ph1 = meter[frozenset({**tags, "scope": "phase", "phase": "1"}.items())]
    assert (ph1["voltage_volts"], ph1["current_amperes"], ph1["power_watts"]) == (230.1, 10.5, 2416.05)
    assert meter[frozenset({**tags, "scope": "line", "line": "L2-L3"}.items())]["line_voltage_volts"] == 400.2
    # ir:0..75 in one read (the SDM630 takes 80 registers), ir:200..205 in a second
    assert device_row(samples, "sdm")["sent_requests"] == 2 and srv.requests == 2


@pytest.mark.services
def test_a_gateway_serves_two_unit_ids_on_one_connection(modbus):
    pm, _ = profile_image("schneider-pm5300")
    leak = {"ir": {0: 0b101, 1: 12, 2: 0}}  # leak and contamination, 12 m along the cable
    srv = modbus({3: pm, 7: leak})
    samples = collect([
        {"name": "main-meter", "host": "127.0.0.1", "port": srv.port, "unit": 3, "profile": "schneider-pm5300"},
        {"name": "leak-panel", "host": "127.0.0.1", "port": srv.port, "unit": 7, "profile": "rle-ld5000"}])
    assert device_row(samples, "main-meter")["up"] and device_row(samples, "leak-panel")["up"]
    [leak_row] = [s for s in samples if s.measurement == "leak"]
    assert leak_row.fields == {"leak_detected": True, "fault": True, "leak_distance_metres": 12.0}
    assert leak_row.tags["device"] == "leak-panel" and leak_row.tags["detector"] == "cable"
    assert any(s.measurement == "meter" and s.tags["device"] == "main-meter" for s in samples)


@pytest.mark.services
def test_a_sunspec_meter_is_found_in_its_model_chain_and_scaled_by_its_scale_registers(modbus):
    pts: dict[int, int] = {}
    put(pts, 18, "int16", 4321)  # W
    pts[22] = 0x0001  # W_SF +1: tens of watts
    put(pts, 16, "int16", 5001)  # Hz
    pts[17] = 0xFFFE  # Hz_SF -2
    put(pts, 46, "uint32", 987654)  # TotWhImp
    pts[54] = 0  # TotWh_SF 0
    put(pts, 7, "int16", -32768)  # PhV not implemented
    pts[15] = 0xFFFF
    put(pts, 19, "int16", 1500)  # WphA, with W_SF
    srv = modbus({1: {"hr": sunspec_chain(204, pts)}})
    samples = collect([{"name": "ss", "host": "127.0.0.1", "port": srv.port, "profile": "sunspec-meter"}])
    rows = {s.tags["scope"] + s.tags.get("phase", ""): s.fields for s in samples if s.measurement == "meter"}
    assert rows["device"] == {"power_watts": 43210.0, "frequency_hertz": 50.01,
                              "energy_joules_total": 987654 * 3600.0}  # no voltage: not implemented
    assert rows["phase1"] == {"power_watts": 15000.0}


@pytest.mark.services
def test_registers_stored_low_word_first_are_read_in_that_order(modbus, tmp_path):
    (tmp_path / "lw.yaml").write_text(
        "name: lw\nmatch: {}\ngroups:\n  - measurement: meter\n    static_tags: {scope: device}\n    fields:\n"
        "      - {field: power_watts, object: 'hr:0', type: float32, word_order: little}\n"
        "      - {field: energy_joules_total, object: 'hr:2', type: uint32, word_order: little, scale: 3600}\n"
        "      - {field: frequency_hertz, object: 'hr:4', type: float32}\n")
    profile = load_any(tmp_path, Match)["lw"]
    regs: dict[int, int] = {}
    put(regs, 0, "float32", 1234.5, "little")
    put(regs, 2, "uint32", 70000, "little")
    put(regs, 4, "float32", 60.0)
    srv = modbus({1: {"hr": regs}})
    dev = Device(DeviceOptions(name="lw", host="127.0.0.1", port=srv.port, profile="eastron-sdm630"), profile)
    conn = Connection("127.0.0.1", srv.port, 2.0, 0)
    try:
        poll = asyncio.run(poll_device(conn, dev))
    finally:
        conn.close()
    assert poll.data["hr:0"] == [regs[0], regs[1]]
    from collectors.common.profile.evaluate import evaluate

    got = {r.field: r.value for r in evaluate(profile, poll.data)}
    assert got == {"power_watts": 1234.5, "energy_joules_total": 70000 * 3600.0, "frequency_hertz": 60.0}


@pytest.mark.services
def test_a_register_the_device_lacks_costs_only_its_field_and_is_asked_again_later(modbus):
    tables, expected = profile_image("eastron-sdm630")
    del tables["ir"][62], tables["ir"][63]  # this meter has no total power factor: exception 2 for it
    srv = modbus({1: tables})
    first, second = collect([{"name": "sdm", "host": "127.0.0.1", "port": srv.port, "profile": "eastron-sdm630"}],
                            polls=2)
    dev1, dev2 = device_row(first, "sdm"), device_row(second, "sdm")
    assert dev1["up"] and dev1["exceptions"] == 1 and dev1["absent_objects"] == 1
    total = rows_of(first, "meter")
    device_fields = next(f for t, f in total.items() if ("scope", "device") in t)
    assert "power_factor" not in device_fields and device_fields["power_watts"] == expected[
        ("meter", frozenset({("scope", "device")}), "power_watts")]
    # the refused read was split once; the next poll reads around the missing register without an exception
    assert dev2["exceptions"] == 0 and dev2["absent_objects"] == 1
    assert dev2["sent_requests"] < dev1["sent_requests"]
    assert rows_of(second, "meter") == total


@pytest.mark.services
def test_a_device_that_never_answers_is_down_and_the_others_are_read(modbus):
    tables, _ = profile_image("janitza-umg")
    srv = modbus({1: tables})
    silent = SilentServer()
    try:
        samples = collect([
            {"name": "hung", "host": "127.0.0.1", "port": silent.port, "profile": "janitza-umg", "timeout": 0.3,
             "retries": 0},
            {"name": "refused", "host": "127.0.0.1", "port": _closed_port(), "profile": "janitza-umg",
             "timeout": 0.3},
            {"name": "ok", "host": "127.0.0.1", "port": srv.port, "profile": "janitza-umg"}], timeout=10)
    finally:
        silent.stop()
    hung, refused, ok = (device_row(samples, n) for n in ("hung", "refused", "ok"))
    assert hung["up"] is False and hung["state"] == "down" and "no answer" in hung["error"]
    assert refused["up"] is False and "cannot connect" in refused["error"]
    assert ok["up"] is True and ok["readings"] > 20
    assert {s.tags["device"] for s in samples if s.measurement == "meter"} == {"ok"}


def _closed_port() -> int:
    from .services import free_port

    return free_port()  # nothing listens there once the probe socket is closed


@pytest.mark.services
def test_a_busy_device_is_asked_once_more_then_reported_without_losing_the_others(modbus):
    tables, _ = profile_image("liebert-hpc")
    srv = modbus({1: tables, 2: tables}, busy={2})
    samples = collect([{"name": "chiller-a", "host": "127.0.0.1", "port": srv.port, "profile": "liebert-hpc"},
                       {"name": "chiller-b", "host": "127.0.0.1", "port": srv.port, "unit": 2,
                        "profile": "liebert-hpc"}])
    a, b = device_row(samples, "chiller-a"), device_row(samples, "chiller-b")
    assert a["state"] == "up"
    assert b["state"] == "empty" and b["exceptions"] == 4 and "refused 4" in b["error"]
    assert b["absent_objects"] == 0  # busy is not "does not have": asked again next poll
    assert {s.tags["device"] for s in samples if s.measurement == "cooling"} == {"chiller-a"}


@pytest.mark.services
def test_a_cdu_reports_coolant_heat_from_flow_and_delta_t_and_its_limits(modbus):
    regs = {0: 320, 1: 420, 2: 6000, 3: 2500, 4: 1500, 5: 64, 10: 0b01}
    regs.update({6: 0, 7: 3200, 8: 0xFFFF, 9: 0xFFFF})  # 3.2 kW drawn; heat removed not measured
    srv = modbus({1: {"hr": regs}})
    samples = collect([{"name": "cdu-1", "host": "127.0.0.1", "port": srv.port, "profile": "generic-cdu",
                        "role": "cooling", "fluid": "pg25", "supply_temperature_limit_celsius": 35,
                        "flow_floor_litres_per_minute": 300, "rack": "r12"}])
    [cool] = [s for s in samples if s.measurement == "cooling"]
    assert cool.fields["coolant_delta_temperature_celsius"] == 10.0
    assert cool.fields["heat_removed_watts"] == round(600 / 60 * VOLUMETRIC_HEAT_CAPACITY["pg25"] * 10, 1)
    assert cool.fields["heat_removed_basis"] == "derived_pg25"
    assert cool.fields["coolant_supply_temperature_limit_celsius"] == 35
    assert cool.fields["coolant_flow_floor_litres_per_minute"] == 300
    assert cool.fields["unit_power_watts"] == 3200 and cool.fields["pump_speed_percent"] == 64
    assert cool.tags["source"] == "modbus_cooling" and cool.tags["rack"] == "r12"
    [leak] = [s for s in samples if s.measurement == "leak"]
    assert leak.fields == {"leak_detected": True}


@pytest.mark.services
def test_a_meters_energy_register_zeroed_by_an_operator_stays_monotonic_across_restarts(modbus, tmp_path):
    tables, _ = profile_image("socomec-diris")
    put(tables["hr"], 50770, "uint32", 1000)  # kWh
    srv = modbus({1: tables})
    dev = [{"name": "diris", "host": "127.0.0.1", "port": srv.port, "profile": "socomec-diris"}]

    def energy(samples):  # None while the ledger confirms a drop (one poll)
        return next(s.fields.get("energy_joules_total") for s in samples
                    if s.measurement == "meter" and s.tags["scope"] == "device")

    state = tmp_path / "state"
    assert energy(collect(dev, state)) == 1000 * 3.6e6
    srv.set_register(1, "hr", 50770, modbus_words("uint32", 1002))
    assert energy(collect(dev, state)) == 1002 * 3.6e6
    assert os.path.exists(state / "modbus-counters.json")
    energies = []
    for kwh in (0, 1, 2):  # zeroed on the meter's front panel, then counting again
        srv.set_register(1, "hr", 50770, modbus_words("uint32", kwh))
        energies.append(energy(collect(dev, state)))
    kept = [e for e in energies if e is not None]
    assert kept and kept[-1] == pytest.approx(1004 * 3.6e6) and sorted(kept) == kept


# --- the probe command -------------------------------------------------------------------------------------------


def probe(*argv: str) -> tuple[int, str, str]:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "agent", "modbus", "probe", *argv], capture_output=True, text=True,
                       timeout=120)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.services
def test_probe_prints_every_reading_with_its_unit_and_register(modbus):
    tables, expected = profile_image("sunspec-meter")
    srv = modbus({4: tables})
    rc, out, err = probe(f"127.0.0.1:{srv.port}", "--unit", "4", "--profile", "sunspec-meter", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["sunspec_model"] == 203 and doc["sunspec_address"] == SUNSPEC_MODEL_AT
    got = {(r["measurement"], r["tags"].get("phase"), r["field"]): r for r in doc["readings"]}
    assert len(got) == len(expected)
    w = got[("meter", None, "power_watts")]
    assert w["unit"] == "watts" and w["register"] == f"hr:{SUNSPEC_MODEL_AT + 18}"
    rc, out, _ = probe(f"127.0.0.1:{srv.port}", "--unit", "4", "--profile", "sunspec-meter")
    assert rc == 0 and "SunSpec model 203" in out and f"hr:{SUNSPEC_MODEL_AT + 46}" in out and "joules" in out


@pytest.mark.services
def test_probe_exit_codes_say_no_answer_empty_and_bad_arguments(modbus):
    srv = modbus({1: {"ir": {0: 0}}})  # a unit with nothing the meter profile reads but one register
    rc, _, err = probe(f"127.0.0.1:{srv.port}", "--profile", "schneider-pm5300")
    assert rc == 3 and "gave no readings" in err and "illegal data address" in err
    rc, _, err = probe(f"127.0.0.1:{_closed_port()}", "--profile", "janitza-umg", "--timeout", "0.5")
    assert rc == 1 and "cannot connect" in err
    rc, _, err = probe("127.0.0.1", "--profile", "no-such-profile")
    assert rc == 78 and "unknown Modbus profile 'no-such-profile'" in err
    rc, _, err = probe("127.0.0.1:99999", "--profile", "janitza-umg")
    assert rc == 2 and "port" in err
