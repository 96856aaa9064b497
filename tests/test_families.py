"""Measurement families and the shared profile engine: a facility device on a new transport takes part in PUE
and the rack scope as an SNMP device does (the walkthrough of docs/extending.md, tests/fakes/regmeter)."""

from __future__ import annotations

import asyncio
import json
import struct

import pytest

from agent.bus import SampleBus
from agent.config import build_config
from agent.model import Catalogue, Kind, Metric
from agent.registry import Registry, default_registry
from agent.runner import stages
from agent.scheduler import build_runners
from collectors import REGISTRY
from collectors.common.families import families, family_metrics
from collectors.common.profile import FieldSpec, GroupSpec, ProfileError, load_profiles
from collectors.common.profile.convert import convert
from collectors.common.rollup import rack_energy

S = 10**9
TARGETS = {**REGISTRY, "regmeter": "tests.fakes.regmeter:RegisterMeterCollector"}


def u32(v: int) -> list[int]:
    return [v >> 16, v & 0xFFFF]


def f32_little(x: float) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    return [lo, hi]


def image(path, watts: float, wh: int, amps: float = 4.5, status: int = 0, volts: int = 2301) -> None:
    words = {0: u32(int(watts * 10)), 2: u32(wh), 4: [volts], 5: [5000], 10: f32_little(amps), 20: [status]}
    path.write_text(json.dumps({f"hr:{a + i}": w for a, ws in words.items() for i, w in enumerate(ws)}))


# --- the catalogue ---------------------------------------------------------------------------------------------


def test_every_emitter_of_a_family_declares_the_familys_own_fields():
    cat = default_registry().catalogue()
    for fam in families().values():
        for field, decl in fam.fields.items():
            m = cat.get(fam.name, field)
            assert m is not None and m.family == fam.name, (fam.name, field)
            assert (m.kind, m.unit, m.description) == (Kind(decl.kind), decl.unit, decl.description)
    assert {"snmp", "regmeter"} <= Registry(TARGETS).catalogue().producers["pdu"]
    assert {"redfish", "ipmi"} <= cat.producers["bmc_power"]


def test_a_second_owner_may_declare_a_family_only_as_the_family_says():
    cat = Catalogue()
    cat.declare("snmp", family_metrics("pdu"))
    cat.declare("modbus", family_metrics("pdu"))  # a family has many emitters
    variant = Metric("pdu", "power_watts", Kind.GAUGE, "watts", "my own reading", family="pdu")
    with pytest.raises(ValueError, match="otherwise"):
        cat.declare("rogue", [variant])
    with pytest.raises(ValueError, match="declared by both"):  # a plain metric keeps one owner
        cat.declare("rogue", [Metric("snmp_device", "up", Kind.GAUGE, "bool", "x")])
        cat.declare("other", [Metric("snmp_device", "up", Kind.GAUGE, "bool", "x")])


def test_a_profile_group_names_a_family_and_its_fields_only(tmp_path):
    with pytest.raises(ValueError, match="not a measurement family"):
        GroupSpec(measurement="pdux", fields=[{"field": "power_watts", "oid": "1.0"}])
    (tmp_path / "p.yaml").write_text("name: p\ngroups:\n  - measurement: ups\n    fields:\n"
                                     "      - {field: power_watts, object: 'hr:0'}\n")
    with pytest.raises(ProfileError, match="not a field of family ups"):
        load_profiles(tmp_path)


# --- the engine's decoding -------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec,raw,expected", [
    ({"type": "uint32"}, [1, 2], 65538.0),
    ({"type": "int32"}, [0xFFFF, 0xFFFE], -2.0),
    ({"type": "int16", "scale": 0.01}, [0xFF38], -2.0),
    ({"type": "float32"}, list(struct.unpack(">HH", struct.pack(">f", 1.5))), 1.5),
    ({"type": "float32", "word_order": "little"}, f32_little(2.25), 2.25),
    ({"type": "uint64"}, [0, 0, 1, 0], 65536.0),
    ({"type": "uint32"}, [1], None),  # one word short: no value, never a misread one
    ({"type": "uint16"}, [70000], None),  # not a 16-bit word
    ({"type": "float32"}, [0x7FC0, 0], None),  # NaN: not available
    ({"type": "uint16", "sentinels": [65535]}, [65535], None),
    ({"type": "uint16", "bit": 3}, [0b1000], True),
    ({"type": "uint16", "bit": 3}, [0b0111], False),
    ({"type": "uint16", "bit": 4, "bits": 3, "enum": {5: "bypass"}}, [0b1010000], "bypass"),
    ({"bit": 0}, -1, None),  # a bit field of a negative value is malformed
    ({}, 42, 42.0),  # a value the transport already decoded (SNMP)
])
def test_register_words_and_bit_fields_decode_per_the_field(spec, raw, expected):
    assert convert(FieldSpec(field="x", oid="hr:0", **spec), raw) == expected


def test_a_scale_read_from_another_register_multiplies_by_its_power_of_ten(tmp_path):
    """SunSpec-style scale factors: W_SF in its own int16 register; an exponent out of range or absent leaves the
    value out rather than misread."""
    from collectors.common.profile.evaluate import evaluate

    (tmp_path / "p.yaml").write_text(
        "name: p\ngroups:\n  - measurement: pdu\n    static_tags: {scope: device}\n    fields:\n"
        "      - {field: power_watts, object: 'hr:0', type: int16, scale_exponent: 'hr:1'}\n")
    profile = load_profiles(tmp_path)["p"]

    def power(data):
        return [r.value for r in evaluate(profile, data) if r.field == "power_watts"]

    assert power({"hr:0": [12345], "hr:1": [0xFFFF]}) == [1234.5]  # -1: tenths
    assert power({"hr:0": [12], "hr:1": [2]}) == [1200.0]
    assert power({"hr:0": [12], "hr:1": [0x8000]}) == []  # -32768: SunSpec's "not implemented"
    assert power({"hr:0": [12]}) == []
    with pytest.raises(ValueError, match="scale_exponent and scale_select read a scalar"):
        GroupSpec(measurement="pdu", table="1.2", fields=[{"field": "power_watts", "column": 3,
                                                           "scale_exponent": "1.5.0"}])


# --- a device on a new transport, end to end -------------------------------------------------------------------


def test_a_register_meter_on_a_new_transport_feeds_pue_and_the_rack_scope(tmp_path):
    """Three register meters read through the fake transport: two rack PDUs (role it) and the utility meter
    (facility_total). Their pdu rows are declared by the family, carry their provenance, and are what the
    facility collector's PUE and the rack scope's energy sum, as for an SNMP PDU."""
    imgs = {n: tmp_path / f"{n}.json" for n in ("pdu-r1", "pdu-r2", "utility")}
    devices = [{"name": "pdu-r1", "image": str(imgs["pdu-r1"]), "role": "it", "rack": "r1"},
               {"name": "pdu-r2", "image": str(imgs["pdu-r2"]), "role": "it", "rack": "r2"},
               {"name": "utility", "image": str(imgs["utility"]), "role": "facility_total"},
               {"name": "gone", "image": str(tmp_path / "missing.json"), "role": "it", "rack": "r2"}]
    registry = Registry(TARGETS)
    cfg = build_config({"agent": {"hostname": "poller"},
                        "collectors": {"regmeter": {"interval": 60, "devices": devices},
                                       "facility": {"interval": 60, "pue_window": "10m"}}}, {}, None, registry)
    bus, published = SampleBus(), []
    runners = build_runners(cfg, registry, published.extend, tmp_path, {"regmeter", "facility"}, bus=bus)
    order = stages(runners)
    assert [[r.cfg.kind for r in s] for s in order] == [["regmeter"], ["facility"]]  # it consumes pdu, ups

    async def tick(ts):
        for stage in order:
            await asyncio.gather(*(r.run_once(ts) for r in stage))

    for minute in range(6):  # 4 kW and 2 kW of IT, 7.5 kW at the utility meter
        image(imgs["pdu-r1"], 4000, 1000 + minute * 66, status=0b1000 if minute == 5 else 0)
        image(imgs["pdu-r2"], 2000, 5000 + minute * 33, volts=65535)
        image(imgs["utility"], 7500, 90000 + minute * 125)
        published.clear()
        asyncio.run(tick(minute * 60 * S))
    for r in runners:
        r.close()
    assert all(r.state == "ok" for r in runners), [(r.name, r.last_error) for r in runners]

    cat = registry.catalogue()
    for s in published:
        for f in s.fields:
            assert cat.get(s.measurement, f) is not None, (s.measurement, f)
    rows = {(s.measurement, s.tags.get("device"), s.tags.get("scope")): s for s in published}
    r1 = rows[("pdu", "pdu-r1", "device")]
    assert r1.fields == {"power_watts": 4000.0, "energy_joules_total": (1000 + 5 * 66) * 3600.0,
                         "voltage_volts": 230.1, "frequency_hertz": 50.0}
    assert r1.tags["source"] == "regmeter_pdu" and r1.tags["rack"] == "r1" and r1.tags["role"] == "it"
    assert "voltage_volts" not in rows[("pdu", "pdu-r2", "device")].fields  # 0xFFFF: not available
    assert rows[("pdu", "pdu-r1", "phase")].fields == {"current_amperes": 4.5}
    assert rows[("leak", "pdu-r1", None)].fields == {"leak_detected": True}
    assert rows[("regmeter_device", "gone", None)].fields == {"up": False}  # one dead device, the rest read

    (fac,) = [s for s in published if s.measurement == "facility"]
    assert fac.fields["it_power_watts"] == 6000.0 and fac.fields["total_power_watts"] == 7500.0
    assert fac.fields["pue"] == 1.25 and fac.tags["pue_kind"] == "total"
    assert fac.fields["pue_energy"] == pytest.approx(125 / 99, abs=1e-4)  # from the counters' deltas
    assert fac.fields["pue_window_seconds"] == 300.0
    # the rack scope's sum: each IT device's top-level counter, per rack
    racks = rack_energy(bus.latest("pdu"))
    assert racks == {"r1": ((1000 + 5 * 66) * 3600.0, 300 * S), "r2": ((5000 + 5 * 33) * 3600.0, 300 * S)}


def test_a_register_counter_that_wraps_stays_monotonic_through_the_ledger(tmp_path):
    """The profile's wrap_at on a 32-bit Wh register: the engine hands the cap to the ledger's counters, which
    keep the energy counting on across the wrap and save it before the samples leave."""
    from agent.collector import Context
    from agent.model import Accumulator
    from tests.fakes.regmeter import RegisterMeterCollector, RegisterMeterOptions

    img = tmp_path / "m.json"
    opts = RegisterMeterOptions(devices=[{"name": "m", "image": str(img), "role": "it", "rack": "r1"}])
    col = RegisterMeterCollector(opts, Context("regmeter", state_dir=tmp_path))
    seen = []
    for wh in (4294967295 - 10, 4294967295, 20):  # wraps past 2^32 - 1 Wh
        image(img, 1000, wh)
        acc = Accumulator(len(seen) * S)
        col.collect(acc)
        seen += [s.fields["energy_joules_total"] for s in acc.close() if "energy_joules_total" in s.fields]
    assert seen[1] - seen[0] == 10 * 3600.0 and seen[2] - seen[1] == 21 * 3600.0
    assert (tmp_path / "regmeter-counters.json").exists()
