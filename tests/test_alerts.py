"""Alert rules: expressions, states (pending, firing, resolved, hysteresis), persistence, rule files."""

from __future__ import annotations

import pytest

from agent.alerts.engine import AlertEngine, AlertStore, History, read_alerts
from agent.alerts.expr import ExprError, evaluate, parse
from agent.alerts.rules import load_rules
from agent.config import ConfigError
from agent.model import Sample

T = 1_700_000_000.0


def gpu(temp: float, t: float, gpu_id: str = "0", energy: float | None = None, host: str = "n1") -> Sample:
    fields = {"temperature_celsius": temp}
    if energy is not None:
        fields["energy_joules_total"] = energy
    return Sample("gpu", {"host": host, "gpu": gpu_id}, fields, int(t * 1e9))


def hist(*samples) -> History:
    h = History(3600)
    h.observe(list(samples))
    return h


@pytest.mark.parametrize("text,want", [
    ("gpu.temperature_celsius > 80", {"0": 85.0}),
    ("gpu.temperature_celsius{gpu=\"1\"} > 0", {"1": 60.0}),
    ("gpu.temperature_celsius{gpu=~\"[01]\"} >= 60", {"0": 85.0, "1": 60.0}),
    ("gpu.temperature_celsius{gpu!=\"0\"} < 70", {"1": 60.0}),
    ("-gpu.temperature_celsius < -70", {"0": -85.0}),
    ("gpu.temperature_celsius * 2 - 100 > 60", {"0": 70.0}),
    ("gpu.temperature_celsius > 80 or gpu.temperature_celsius < 61", {"0": 85.0, "1": 60.0}),
    ("gpu.temperature_celsius > 50 unless gpu.temperature_celsius > 80", {"1": 60.0}),
    ("gpu.temperature_celsius > 50 and gpu.temperature_celsius < 80", {"1": 60.0}),
])
def test_expressions(text, want):
    h = hist(gpu(85, T, "0"), gpu(60, T, "1"))
    got = evaluate(parse(text), h, T)
    assert {dict(lab)["gpu"]: v for lab, v in got.items()} == want


def test_rate_of_a_counter_and_aggregation():
    h = hist(*[gpu(50, T + i * 10, "0", energy=1000 + i * 7000) for i in range(7)],
             *[gpu(50, T + i * 10, "1", energy=500 + i * 3000) for i in range(7)])
    rate = evaluate(parse("rate(gpu.energy_joules_total[1m])"), h, T + 60)
    assert {dict(lab)["gpu"]: v for lab, v in rate.items()} == {"0": 700.0, "1": 300.0}
    total = evaluate(parse("sum by (host) (rate(gpu.energy_joules_total[1m])) > 900"), h, T + 60)
    assert total == {(("host", "n1"),): 1000.0}
    inc = evaluate(parse("increase(gpu.energy_joules_total{gpu=\"0\"}[30s])"), h, T + 60)
    assert list(inc.values()) == [21000.0]


def test_counter_reset_inside_the_range():
    h = hist(*[Sample("x", {}, {"n_total": v}, int((T + i) * 1e9)) for i, v in enumerate([10, 20, 5, 15])])
    assert list(evaluate(parse("increase(x.n_total[10s])"), h, T + 3).values()) == [10 + 5 + 10]


@pytest.mark.parametrize("bad", ["gpu.", "gpu.temp >", "rate(gpu.x)", "rate(gpu.x[0s])", "sum by (a (x.y)",
                                 "x.y{a=\"1\"", "x.y{a=~\"(\"}", "x.y $ 3", "(x.y"])
def test_bad_expressions(bad):
    with pytest.raises(ExprError):
        parse(bad)


RULES = """
groups:
  - name: gpu
    rules:
      - alert: GpuHot
        expr: gpu.temperature_celsius > 85
        clear: gpu.temperature_celsius < 80
        for: 30s
        severity: critical
        labels: {team: infra}
        summary: "GPU {{ $labels.gpu }} on {{ $labels.host }} at {{ $value }} C"
"""


def test_pending_firing_hysteresis_resolved_and_a_restart_keeps_state(tmp_path):
    (tmp_path / "r.yaml").write_text(RULES)
    rules = load_rules(tmp_path / "r.yaml")
    store = tmp_path / "alerts.db"
    eng = AlertEngine(rules, AlertStore(store))

    def step(temp, t, engine):
        engine.observe([gpu(temp, T + t)])
        samples = engine.evaluate(T + t)
        return {a["state"] for a in engine.alerts.values()}, samples

    assert step(90, 0, eng)[0] == {"pending"}
    assert step(91, 20, eng)[0] == {"pending"}
    eng.close()
    eng = AlertEngine(load_rules(tmp_path / "r.yaml"), AlertStore(store))  # agent restarted
    assert {a["state"] for a in eng.alerts.values()} == {"pending"}
    states, samples = step(92, 30, eng)
    assert states == {"firing"}  # 30 s after it first held, across the restart
    (s,) = samples
    assert s.tags["alertname"] == "GpuHot" and s.tags["team"] == "infra" and s.fields["firing"] is True
    (a,) = read_alerts(store)
    assert a["summary"] == "GPU 0 on n1 at 92 C" and a["severity"] == "critical"
    assert step(83, 40, eng)[0] == {"firing"}  # below 85 but not below 80: hysteresis holds it
    assert step(79, 50, eng)[0] == {"resolved"}
    assert step(90, 60, eng)[0] == {"pending"}  # holds again: a new episode
    eng.close()


def test_a_condition_that_stops_while_pending_never_fires(tmp_path):
    (tmp_path / "r.yaml").write_text(RULES)
    eng = AlertEngine(load_rules(tmp_path / "r.yaml"), None)
    eng.observe([gpu(90, T)])
    eng.evaluate(T)
    eng.observe([gpu(70, T + 10)])
    eng.evaluate(T + 10)
    assert eng.alerts == {}


@pytest.mark.parametrize("text,want", [
    ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: gpu.x >\n",
     ":5: groups[0].rules[0].expr: bad expression"),
    ("groups:\n  - name: g\n    rules:\n      - alert: B\n        expr: gpu.x > 1\n        severity: loud\n",
     ":6: groups[0].rules[0].severity"),
    ("groups:\n  - name: g\n    rules:\n      - alert: C\n        expr: gpu.x > 1\n        fore: 5m\n",
     ":6: groups[0].rules[0].fore: unknown key"),
    ("groups:\n  - name: g\n    rules:\n      - {alert: D, expr: a.b > 1}\n      - {alert: D, expr: a.b > 2}\n",
     "rule D defined twice"),
])
def test_malformed_rule_files_name_file_line_and_rule(tmp_path, text, want):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_rules(p)
    msg = str(e.value)
    assert str(p) in msg and want in msg, msg
    if "defined twice" not in want:
        assert "(rule " in msg
