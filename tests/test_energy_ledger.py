"""The energy ledger (collectors/common/energy.py): device counters kept honest, windows, freshness, shares and
the meter order, table-driven and property-based (hypothesis)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.common.energy import (
    RESOLVED,
    EnergyCounters,
    GridWindows,
    Ledger,
    Meter,
    choose,
    measure,
    quantum_of,
    share,
)

S = 10**9


def feed(c: EnergyCounters, readings, key="k", dt=10.0, **kw):
    return [c.reading(key, r, 1_800_000_000 + i * dt, **kw) for i, r in enumerate(readings)]


@pytest.mark.parametrize("readings, values, events", [
    # a dip that comes back is a glitch: dropped, never a reset
    ([1_000_600, 1_000_500, 1_000_700], [1_000_600, None, 1_000_700], [None, "pending", "glitch"]),
    # a lone zero (a BMC mid-reboot) likewise
    ([1_000_000, 0, 1_000_100], [1_000_000, None, 1_000_100], [None, "pending", "glitch"]),
    # a drop to near zero that counts up from there is a reset: the energy since the reset is added, once
    ([1_000_000, 50, 80, 120], [1_000_000, None, 1_000_080, 1_000_120], [None, "pending", "reset", None]),
    # zeros that stay zero (a BMC rebooting) are not a reset until the counter moves; back at its level: glitch
    ([1_000_000, 0, 0, 0, 1_000_300], [1_000_000, None, None, None, 1_000_300],
     [None, "pending", "pending", "pending", "glitch"]),
    # a drop that stays but not near zero re-bases the counter after three readings: nothing added
    ([1_000_000, 400_000, 400_100, 400_200, 400_300],
     [1_000_000, None, None, 1_000_200, 1_000_300], [None, "pending", "pending", "reset", None]),
    # negative and non-finite readings are refused and never stored
    ([100, -5, math.nan, math.inf, 150], [100, None, None, None, 150],
     [None, "refused", "refused", "refused", None]),
])
def test_counter_readings(readings, values, events):
    got = feed(EnergyCounters(None), readings)
    assert [u.value for u in got] == values and [u.event for u in got] == events


def test_a_jump_beyond_the_devices_limit_is_refused_and_counted():
    c = EnergyCounters(None)
    got = feed(c, [1e6, 1e6 + 5_000, 1e308, 1e6 + 10_000], max_watts=700)
    assert [u.value for u in got] == [1e6, 1e6 + 5_000, None, 1e6 + 10_000]
    assert got[2].event == "refused" and "limit" in got[2].reason and c.refused("k") == 1


def test_a_wrap_at_the_known_cap_counts_the_energy_across_it():
    cap = 262_143.32885
    got = feed(EnergyCounters(None), [cap - 100, 50.0], wrap_at=cap)
    assert got[1].event == "wrap" and got[1].value == pytest.approx(cap + 50)


def test_a_reboot_while_the_agent_was_down_is_caught_by_the_boot_id(tmp_path):
    p = tmp_path / "rapl.json"
    c = EnergyCounters(p, boot_id="a")
    feed(c, [5_000.0, 6_000.0], resets_on_boot=True)
    c.save()
    # rebooted: the counter restarted and already counts past the saved value
    c2 = EnergyCounters(p, boot_id="b")
    u = c2.reading("k", 7_000.0, 1_800_003_600, resets_on_boot=True)
    assert (u.value, u.event) == (6_000.0 + 7_000.0, "reset")
    # the same boot after an agent restart: nothing was reset
    c2.save()
    c3 = EnergyCounters(p, boot_id="b")
    assert c3.reading("k", 7_500.0, 1_800_003_610, resets_on_boot=True).value == 13_500.0


def test_a_corrupt_counter_state_is_set_aside_not_fatal(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{not json")
    c = EnergyCounters(p)
    assert c.reading("k", 5.0, 0).value == 5.0
    assert list(tmp_path.glob("c.json.corrupt-*"))
    c.save()
    assert json.loads(p.read_text())["k"]["last"] == 5.0


@pytest.mark.parametrize("step, quantum", [
    (360_000.0, 3.6e5), (3_600_000.0, 3.6e6), (36_000.0 * 7, 3.6e4), (3_600.0 * 3, 3.6e3), (5_000.0, 0.0),
    (12_003.5, 0.0), (0.1 * 3.6e6, 3.6e5),
])
def test_the_quantum_of_a_step(step, quantum):
    assert quantum_of(step, 1e9) == quantum


def test_a_coarse_counter_is_refused_over_a_short_window_and_used_over_a_long_one():
    led = Ledger()
    kwh = 0.0
    for i in range(400):  # 1200 W on a 0.1 kWh counter, read every 10 s
        kwh_now = (1200 * 10 * i / 3.6e6) // 0.1 * 0.1
        kwh = kwh_now
        led.counter(("c",), i * 10 * S, kwh * 3.6e6)
    assert led.series[("c",)].quantum == pytest.approx(3.6e5)
    short = led.delta(("c",), 3900 * S, 3960 * S)
    assert short.joules is None and "0.1 kWh steps" in short.why
    assert RESOLVED * 3.6e5 > 1200 * 3990  # even the whole history is too short for 1% at this power
    assert kwh > 0


def test_freshness_is_measured_in_the_series_own_intervals():
    led = Ledger(stale_intervals=3)
    for i in range(5):
        led.counter(("c",), i * 10 * S, i * 100.0)
    assert led.fresh(("c",), 70 * S) == (True, "")
    ok, why = led.fresh(("c",), 71 * S)
    assert not ok and "31 s old" in why


@pytest.mark.parametrize("total, weights", [
    (1000.0, {"a": 1, "b": 1, "c": 1}), (0.3, {"a": 0.1, "b": 0.2}), (1e9, {"x": 0, "y": 0}),
    (123.456, {"a": 3, "b": math.nan, "c": -1, "d": 7}),
])
def test_shares_add_up_to_the_whole(total, weights):
    parts = share(total, weights)
    assert set(parts) == set(weights) and sum(parts.values()) == total
    assert all(v >= 0 for v in parts.values())


# --- properties ----------------------------------------------------------------------------------------------

FAULTS = st.sampled_from(["ok"] * 6 + ["reset", "dip", "zero", "garbage", "negative", "gap", "nan"])


@st.composite
def device_runs(draw):
    """A device's true energy, sampled every 10 s, and what its counter said: resets, wraps, dips, lone zeros,
    garbage, negative readings and missing polls."""
    n = draw(st.integers(10, 80))
    cap = draw(st.sampled_from([None, 3e6]))
    true, raw, said = 0.0, draw(st.floats(0, 1e6)), []
    faults = 0  # a fault that lasts three readings is taken for what it shows: at most two in a row here
    for i in range(n):
        watts = draw(st.floats(0, 2000))
        e = watts * 10
        true += e
        raw += e
        fault = draw(FAULTS) if i and faults < 2 else "ok"  # the first reading is the baseline: nothing to check
        faults = faults + 1 if fault not in ("ok", "reset", "gap") else 0
        if cap and raw >= cap:
            raw -= cap
        if fault == "reset":
            raw = e / 2
            said.append((true, raw))
        elif fault == "dip":
            said.append((true, max(0.0, raw - draw(st.floats(1, 1000)))))
        elif fault == "zero":
            said.append((true, 0.0))
        elif fault == "garbage":
            said.append((true, 1e308))
        elif fault == "negative":
            said.append((true, -raw - 1))
        elif fault == "nan":
            said.append((true, math.nan))
        elif fault == "gap":
            said.append((true, None))
        else:
            said.append((true, raw))
    return cap, said


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(device_runs())
def test_a_counter_never_goes_down_and_never_counts_a_joule_twice(run):
    cap, said = run
    c = EnergyCounters(None)
    emitted = []  # (true energy so far, monotonic value)
    for i, (true, raw) in enumerate(said):
        if raw is None:
            continue
        u = c.reading("d", raw, 1_800_000_000 + i * 10, max_watts=2000, wrap_at=cap)
        if u.value is not None:
            emitted.append((true, u.value))
    values = [v for _, v in emitted]
    assert values == sorted(values)  # never down
    if emitted:
        t0, v0 = emitted[0]
        for t1, v1 in emitted[1:]:  # never more than the device drew since the first reading
            assert v1 - v0 <= (t1 - t0) + 1e-6 * max(1.0, abs(v1))


@st.composite
def nodes(draw):
    """A node drawing random power for a while, seen by an outlet counter, a BMC counter and two GPU counters,
    each of which may stop answering (stale or lost) at a random poll."""
    n = draw(st.integers(8, 60))
    stops = {m: draw(st.one_of(st.none(), st.integers(0, n))) for m in ("outlet", "bmc", "gpu0", "gpu1")}
    power = [draw(st.floats(200, 3000)) for _ in range(n)]
    return n, stops, power


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes())
def test_the_node_meter_never_goes_down_never_counts_a_joule_twice_and_shares_sum_to_the_window(node):
    n, stops, power = node
    led = Ledger()
    outlet = [("meter", "outlet")]
    bmc = [("bmc", "counter")]
    gpus = [("gpu", "0"), ("gpu", "1")]
    windows = GridWindows(60 * S)
    true = [0.0]  # cumulative true node energy at each poll
    for w in power:
        true.append(true[-1] + w * 10)
    published: list[tuple[int, float]] = []
    for i in range(n):
        ts = i * 10 * S
        if stops["outlet"] is None or i < stops["outlet"]:
            led.counter(outlet[0], ts, 1e6 + true[i])
        if stops["bmc"] is None or i < stops["bmc"]:
            led.counter(bmc[0], ts, 3e7 + true[i])
        for g, key in enumerate(gpus):
            if stops[f"gpu{g}"] is None or i < stops[f"gpu{g}"]:
                led.counter(key, ts, 5e5 + true[i] * 0.3)
        live = [[k] for k in gpus if led.fresh(k, ts)[0]]
        components = Meter("components", "gpu", live, partial=True)
        meters = [Meter("outlet", "meter", [outlet]), Meter("psu_input", "redfish", [bmc]), components]
        c = choose(led, meters, components, ts, 60 * S, 0.05)
        if c.chosen is None:
            continue
        for e in windows.due(c.chosen.t1):
            r, _ = measure(led, c.chosen.meter, e - 60 * S, e, ts)
            if r is None:
                continue
            published.append((e, r.joules))
            windows.done(e)
            parts = share(r.joules, {k[1]: 1.0 for k in r.keys})
            assert sum(parts.values()) == r.joules
    ends = [e for e, _ in published]
    assert ends == sorted(set(ends))  # each window once, in order: the node's energy never goes down
    for e, joules in published:
        lo, hi = (e - 60 * S) // (10 * S), e // (10 * S)
        true_window = true[hi] - true[lo]
        # the outlet and the BMC see the whole node; components (partial) see less: never more than the node drew
        assert 0 <= joules <= true_window * (1 + 1e-9) + 1e-6
