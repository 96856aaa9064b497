"""`aifactory rules test FILE`: rules checked against fixture series, like `promtool test rules`.

    rule_files: [my-rules.yaml]        # relative to the test file; "default" is the built-in pack
    evaluation_interval: 10s
    tests:
      - name: hot GPU fires after its for, then resolves
        interval: 10s
        input_series:
          - series: 'gpu.temperature_celsius{host="n1",gpu="0"}'
            values: '70 90x6 70x3'      # 70, then 90 seven times, then 70 four times; _ = no sample
        alert_rule_test:
          - eval_time: 60s
            alertname: GpuHot
            exp_alerts: [{labels: {gpu: "0"}, state: firing}]    # the labels given must match
          - eval_time: 110s
            alertname: GpuHot
            exp_alerts: [{labels: {gpu: "0"}, state: resolved}]

Expected alerts list every alert of that name in a state other than inactive; [] means none.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, ValidationError

from agent.config import ConfigError, Duration, Strict, load_yaml, validation_messages
from agent.model import Sample

from .engine import AlertEngine
from .expr import ExprError, Parser
from .rules import load_rules


class Series(Strict):
    series: str
    values: str


class ExpAlert(Strict):
    labels: dict[str, str] = Field(default_factory=dict)
    state: str = "firing"


class AlertTest(Strict):
    eval_time: Duration
    alertname: str
    exp_alerts: list[ExpAlert] = Field(default_factory=list)


class Case(Strict):
    name: str
    interval: Duration = 10.0
    input_series: list[Series]
    alert_rule_test: list[AlertTest]


class TestFile(Strict):
    rule_files: list[str]
    evaluation_interval: Duration = 10.0
    tests: list[Case]


_NUM = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_EXPAND = re.compile(rf"^({_NUM})(?:([+-])(\d+(?:\.\d+)?(?:[eE][-+]?\d+)?))?x(\d+)$")


def expand(values: str) -> list[float | None]:
    """promtool's notation: 'a' one value, 'axN' a repeated N more times, 'a+bxN' a then N steps of b, '_' none."""
    out: list[float | None] = []
    for tok in values.split():
        if tok == "_":
            out.append(None)
            continue
        m = _EXPAND.match(tok)
        if m:
            start, sign, step, n = float(m.group(1)), m.group(2), float(m.group(3) or 0), int(m.group(4))
            step = -step if sign == "-" else step
            out += [start + i * step for i in range(n + 1)]
        else:
            try:
                out.append(float(tok))
            except ValueError:
                raise ValueError(f"bad value {tok!r}") from None
    return out


def parse_series(text: str) -> tuple[str, str, dict[str, str]]:
    """An input series of a rule test: (measurement, field, tags)."""
    sel = Parser(text).selector()
    if any(op != "=" for _, op, _ in sel.matchers):
        raise ExprError("input series take only = matchers")
    return sel.measurement, sel.field, {t: v for t, _, v in sel.matchers}


def run_tests(path: Path, defaults: list[Path], seen=None) -> list[str]:
    """Failures, as messages (empty: all passed). A malformed file raises ConfigError. `defaults`: the files of
    the default pack that "default" stands for (Registry.rule_files). `seen(case, check, alerts)`, when given,
    hears every check with the alerts of its name as the engine has them (their full labels and states)."""
    data, positions = load_yaml(path)
    try:
        tf = TestFile.model_validate(data)
    except ValidationError as e:
        raise ConfigError(validation_messages(e, TestFile, (), positions, str(path))) from None
    rules = []
    for f in tf.rule_files:
        for rf in defaults if f == "default" else [path.parent / f]:
            rules += load_rules(rf)
    failures = []
    t0 = 1_700_000_000.0
    for case in tf.tests:
        engine = AlertEngine(rules, None)
        timeline: dict[float, list[Sample]] = {}
        for s in case.input_series:
            try:
                meas, field, tags = parse_series(s.series)
                vals = expand(s.values)
            except (ExprError, ValueError) as e:
                raise ConfigError([f"{path}: test {case.name!r}: series {s.series!r}: {e}"]) from None
            for i, v in enumerate(vals):
                if v is not None:
                    t = i * case.interval
                    timeline.setdefault(t, []).append(Sample(meas, tags, {field: v}, int((t0 + t) * 1e9)))
        end = max([a.eval_time for a in case.alert_rule_test] + [0.0])
        checks = sorted(case.alert_rule_test, key=lambda a: a.eval_time)
        t, step = 0.0, tf.evaluation_interval
        while t <= end + 1e-9:
            for ts in sorted(x for x in timeline if t - step < x <= t or (t == 0 and x == 0)):
                engine.observe(timeline.pop(ts))
            engine.evaluate(t0 + t)
            for chk in [c for c in checks if abs(c.eval_time - t) < 1e-9]:
                got = sorted((a["state"], sorted(a["labels"].items())) for a in engine.alerts.values()
                             if a["alertname"] == chk.alertname)
                if seen is not None:
                    seen(case, chk, [(st, dict(lab)) for st, lab in got])
                want = chk.exp_alerts
                ok = len(got) == len(want) and all(
                    any(st == w.state and all(dict(lab).get(k) == v for k, v in w.labels.items())
                        for st, lab in got) for w in want)
                if not ok:
                    failures.append(f"{path}: test {case.name!r}: {chk.alertname} at {chk.eval_time:g}s: expected "
                                    f"{[(w.state, w.labels) for w in want]}, got "
                                    f"{[(st, dict(lab)) for st, lab in got]}")
            t += step
    return failures
