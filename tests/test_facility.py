"""PUE and energy accounting from device roles; monotonic counters across resets and wraps."""

import os

import pytest

from agent.model import Sample
from collectors.common.counters import MonotonicCounters
from collectors.common.rollup import device_totals
from collectors.facility import Facility

S = 10**9


def pdu(scope, power=None, energy=None, **tags):
    fields = {k: v for k, v in (("power_watts", power), ("energy_joules_total", energy)) if v is not None}
    return [Sample("pdu", {"scope": scope, **tags}, fields, 0)]


def test_device_totals_prefer_the_top_level_reading():
    r = pdu("device", 900, 1e9) + pdu("phase", 300, phase="1") + pdu("phase", 600, phase="2") + pdu(
        "outlet", 50, 10.0, outlet="3")
    t = device_totals("it", r)
    assert t.power_watts == 900 and t.energy_joules == 1e9  # outlets and phases are not added on top
    t = device_totals("it", pdu("phase", 300, 5.0, phase="1") + pdu("phase", 600, 7.0, phase="2"))
    assert t.power_watts == 900 and t.energy_joules == 12.0
    ups = [Sample("ups", {"scope": "input", "line": "1"}, {"input_power_watts": 1200.0}, 0),
           Sample("ups", {"scope": "output", "line": "1"}, {"output_power_watts": 1000.0}, 0)]
    assert device_totals("facility_total", ups).power_watts == 1200.0
    assert device_totals("it", ups).power_watts == 1000.0


def test_pue_instant_and_over_a_window_from_energy():
    f = Facility(window_s=600)
    it_e, tot_e = 0.0, 0.0
    out = None
    for minute in range(11):
        # IT draws 100 kW steadily; the facility 130 kW, but a chiller burst makes it 190 kW in minute 5
        total_w = 190e3 if minute == 5 else 130e3
        devices = {"pdu-a": device_totals("it", pdu("device", 100e3, it_e)),
                   "meter": device_totals("facility_total", pdu("device", total_w, tot_e))}
        out = f.compute(minute * 60 * S, devices)
        it_e += 100e3 * 60
        tot_e += total_w * 60
    fields, tags = out
    assert tags == {"pue_kind": "total"}
    assert fields["pue"] == 1.3  # the instant reading at minute 10
    assert fields["pue_window_seconds"] == 600.0
    # energy over minutes 0..10: the burst minute is in it; sampled power at the window's ends never saw it
    assert fields["pue_energy"] == pytest.approx((9 * 130e3 + 190e3) / (10 * 100e3), abs=1e-4)
    assert fields["it_energy_joules_total"] == 10 * 100e3 * 60


def test_partial_pue_when_only_it_and_cooling_are_known():
    f = Facility()
    fields, tags = f.compute(S, {"pdu": device_totals("it", pdu("device", 100.0)),
                                 "crac-pdu": device_totals("cooling", pdu("device", 25.0))})
    assert tags == {"pue_kind": "partial"} and fields["pue"] == 1.25
    assert f.compute(S, {}) is None


def test_a_device_missing_a_sweep_keeps_the_facility_counter_monotonic():
    f = Facility()
    a = f.compute(1 * S, {"a": device_totals("it", pdu("device", 1.0, 100.0)),
                          "b": device_totals("it", pdu("device", 1.0, 50.0))})[0]
    b = f.compute(2 * S, {"a": device_totals("it", pdu("device", 1.0, 110.0))})[0]  # b did not answer
    assert a["it_energy_joules_total"] == 150.0 and b["it_energy_joules_total"] == 160.0


def test_monotonic_counters_reset_wrap_and_restart(tmp_path):
    c = MonotonicCounters(tmp_path / "c.json")
    assert c.update("k", 100.0) == (100.0, None)
    assert c.update("k", 150.0) == (150.0, None)
    assert c.update("k", 20.0) == (170.0, "reset")  # an operator zeroed the kWh counter
    cap = 9_999_000 * 3600.0  # Vertiv/Geist energy cap (Wh) in joules
    c.update("w", cap - 1000)
    value, event = c.update("w", 500.0, wrap_at=cap)
    assert event == "wrap" and value == cap + 500.0  # delta across the wrap: 1500 J
    c.save()
    c2 = MonotonicCounters(tmp_path / "c.json")
    assert c2.update("k", 10.0) == (180.0, "reset")  # a reset while the agent was down is caught


# --- PUE from a utility meter, PDUs and a CDU, through the running agent into InfluxDB ------------------------------


IT_WH_PER_S = 50  # each Eaton ePDU's inlet counter (snmpsim's numeric variation, tests/conftest.py)
TOTAL_WH_PER_S = 130  # the utility meter: PUE 130 / (2 x 50) = 1.3


def test_pue_from_a_modbus_utility_meter_and_snmp_pdus_on_the_facility_board(influxd, snmpsim, modbus, tmp_path):
    """The utility meter over Modbus (a PM5300 whose Wh register grows with wall time), IT power over SNMP (two
    ePDUs on snmpsim), cooling from a Modbus CDU: the agent polls them, the facility collector computes PUE, the
    InfluxDB output writes it, and the efficiency board's PUE panel reads the scenario's PUE back."""
    import subprocess
    import sys
    import time

    from agent.dashboards import dashboards
    from agent.registry import default_registry

    from .services import modbus_words, substitute

    t0 = time.time()
    meter: dict[int, int] = {}
    for addr, kind, v in ((3059, "float32", 2 * 180 * 1.3), (3109, "float32", 50.0)):  # kW, Hz
        meter.update({addr + i: w for i, w in enumerate(modbus_words(kind, v))})
    srv = modbus({1: {"hr": meter}, 2: {"hr": {0: 300, 1: 400, 2: 3000, 5: 60, 6: 0, 7: 20000, 8: 0xFFFF,
                                                9: 0xFFFF, 10: 0}}},
                 dynamic={(1, "hr", 3203): lambda now: modbus_words("int64", 10**9 + TOTAL_WH_PER_S * (now - t0))})
    influxd.create_db("pue")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
agent: {{interval: 1s}}
tags: {{site: lab}}
collectors:
  host: {{enabled: false}}
  storage: {{enabled: false}}
  network: {{enabled: false}}
  inference: {{enabled: false}}
  jobs: {{enabled: false}}
  facility: {{pue_window: 1m}}
  snmp:
    devices:
      - {{name: pdu-a, host: 127.0.0.1, port: {snmpsim.port}, community: eaton-epdu-it, role: it, rack: r1}}
      - {{name: pdu-b, host: 127.0.0.1, port: {snmpsim.port}, community: eaton-epdu-it, role: it, rack: r2}}
  modbus:
    devices:
      - {{name: utility, host: 127.0.0.1, port: {srv.port}, unit: 1, profile: schneider-pm5300,
          role: facility_total}}
      - {{name: cdu-1, host: 127.0.0.1, port: {srv.port}, unit: 2, profile: generic-cdu, role: cooling}}
outputs:
  influxdb:
    - {{url: {influxd.url}, api: v1, database: pue, flush_interval: 1s}}
""")
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "xdg"))
    env.pop("AIFACTORY_CONFIG", None)
    r = subprocess.run([sys.executable, "-m", "agent", "run", "--for", "12s", "-c", str(cfg), "--state-dir",
                        str(tmp_path / "state")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = influxd.query('SELECT * FROM "facility"', "pue")
    assert rows and len(rows[0]["values"]) >= 5, r.stderr[-3000:]
    cols = rows[0]["columns"]
    last = dict(zip(cols, rows[0]["values"][-1]))
    assert last["pue"] == pytest.approx(1.3, rel=0.01)  # instant: 468 kW / 2 x 180 kW
    assert last["cooling_power_watts"] == 20000
    assert last["pue_energy"] == pytest.approx(1.3, rel=0.01)
    board = dashboards(default_registry().sections())["efficiency"]
    panel = next(p for p in board.panels() if p.title == "PUE, last 24 h (energy)")
    series = influxd.query(substitute(panel.queries[0].influxql, {"site": "lab"}), "pue")
    (pue,) = [v for s in series for row in s["values"] for v in row[1:] if v is not None]
    assert pue == pytest.approx(TOTAL_WH_PER_S / (2 * IT_WH_PER_S), rel=0.01)
