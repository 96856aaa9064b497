"""The agent's rules for Prometheus' rule engine (`aifactory rules export --format prometheus`): each expression
written in PromQL over the names /metrics and remote write use (agent/prom.py), so that at fleet scale the same
alerts run in Prometheus, Mimir's ruler or vmalert.

The expression language is PromQL-shaped already; what changes is the names (``gpu.temperature_celsius`` is
``aifactory_gpu_temperature_celsius``) and percentages, which Prometheus holds as ratios: a selector of a
percent field reads ``(aifactory_x_ratio * 100)``, so thresholds stay as written. A rule's ``clear`` (hysteresis:
while firing, resolve only when it holds) has no PromQL keyword; it is written exactly as the agent evaluates
it: the alert stays active while it is firing and its clear condition does not hold,

    (EXPR) or (max without (alertname, alertstate, severity, LABELS) (ALERTS{alertname="X", alertstate="firing"})
               unless (CLEAR))

which keeps the alert's labels (its value there is ALERTS' 1). docs/prometheus.md lists the mapping.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..prom import label_name, labels_text, prom_metric
from .expr import Node, Selector


class NotExportable(ValueError):
    pass


def _selector(sel: Selector, cat, rng: float | None = None) -> tuple[str, float]:
    """PromQL for a selector (and its range), and the factor that brings its values back to the agent's unit."""
    m = cat.get(sel.measurement, sel.field) if cat is not None else None
    if m is not None and m.kind.value == "info":
        raise NotExportable(f"{sel.measurement}.{sel.field} is text: Prometheus holds it as a label")
    pm = prom_metric(sel.measurement, sel.field, m)
    matchers = []
    for tag, op, val in sel.matchers:
        text = val if isinstance(val, str) else val.pattern
        text = text.replace("\\", "\\\\").replace('"', '\\"')
        matchers.append(f'{label_name(tag)}{op}"{text}"')
    out = pm.name + ("{" + ",".join(matchers) + "}" if matchers else "")
    if rng is not None:
        out += f"[{_duration(rng)}]"
    return out, 1.0 / pm.scale


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    for unit, n in (("h", 3600), ("m", 60)):
        if s % n == 0 and s >= n:
            return f"{s // n}{unit}"
    return f"{s}s"


def _num(x: float) -> str:
    return str(int(x)) if x == int(x) and abs(x) < 1e15 else repr(x)


def to_promql(node: Node, cat) -> str:
    k = node.kind
    if k == "num":
        return _num(node.a)
    if k == "sel":
        text, factor = _selector(node.a, cat)
        return f"({text} * {_num(factor)})" if factor != 1.0 else text
    if k == "func":
        text, factor = _selector(node.b, cat, node.c)
        call = f"{node.a}({text})"
        return f"({call} * {_num(factor)})" if factor != 1.0 else call
    if k == "agg":
        by = f" by ({', '.join(label_name(t) for t in node.c)})" if node.c else ""
        return f"{node.a}{by} ({to_promql(node.b, cat)})"
    if k == "neg":
        return f"-({to_promql(node.a, cat)})"
    if k in ("bin", "cmp", "set"):
        return f"({to_promql(node.b, cat)} {node.a} {to_promql(node.c, cat)})"
    raise NotExportable(f"no PromQL for a {k} node")


def rule_expr(rule, cat) -> str:
    """A compiled rule's expression in PromQL, its clear condition folded in as the agent evaluates it."""
    expr = to_promql(rule.expr, cat)
    if rule.clear is None:
        return expr
    # ALERTS' own labels dropped: the series keeps exactly the alert's identity (an alertstate label would make
    # it another alert, pending anew)
    own = ", ".join(["alertname", "alertstate", "severity", *sorted(label_name(k) for k in rule.rule.labels)])
    firing = f'max without ({own}) (ALERTS{{alertname="{rule.name}",alertstate="firing"}})'
    return f"{expr} or ({firing} unless {to_promql(rule.clear, cat)})"


RECORDING = Path(__file__).with_name("prometheus_recording.yaml")


def export(rules: list, cat, annotations: bool = True, recording: bool = True) -> dict:
    """A Prometheus rule file: groups of alerting rules for the compiled rules, in their groups' order, and (with
    `recording`) the recording rules of the rack and facility scopes (prometheus_recording.yaml)."""
    groups: dict[str, list] = {}
    for r in rules:
        rr = r.rule
        out = {"alert": r.name, "expr": rule_expr(r, cat)}
        if rr.for_:
            out["for"] = _duration(rr.for_)
        out["labels"] = {"severity": rr.severity, **{label_name(k): v for k, v in rr.labels.items()}}
        if annotations:
            notes = {k: v for k, v in (("summary", rr.summary), ("description", rr.description)) if v}
            if notes:
                out["annotations"] = notes
        groups.setdefault(r.group, []).append(out)
    out = [{"name": g, "rules": rs} for g, rs in groups.items()]
    if recording:
        out += yaml.safe_load(RECORDING.read_text())["groups"]
    return {"groups": out}


def export_tests(path, defaults: list, rules: list, cat, rule_file: str) -> dict:
    """The agent's rule tests (agent/alerts/testing.py) as a `promtool test rules` file over the exported rules:
    series named and scaled as Prometheus holds them, and each check expecting the firing alerts with the full
    labels the agent's own engine gave them, so the two engines are held to the same answers."""
    from ..config import load_yaml
    from .testing import TestFile, expand, parse_series, run_tests

    tf = TestFile.model_validate(load_yaml(Path(path))[0])
    severity = {r.name: (r.rule.severity, r.rule.labels) for r in rules}
    expected: dict[tuple[str, float, str], list] = {}

    def seen(case, chk, alerts) -> None:
        sev, extra = severity[chk.alertname]
        expected[(case.name, chk.eval_time, chk.alertname)] = [
            {"exp_labels": {**{label_name(k): v for k, v in labels.items()}, "severity": sev,
                            **{label_name(k): v for k, v in extra.items()}}}
            for state, labels in alerts if state == "firing"]

    failures = run_tests(Path(path), defaults, seen)
    if failures:
        raise NotExportable("the agent's own rule tests fail: " + "; ".join(failures[:3]))
    tests = []
    for case in tf.tests:
        series = []
        for s in case.input_series:
            meas, field, tags = parse_series(s.series)
            m = cat.get(meas, field) if cat is not None else None
            pm = prom_metric(meas, field, m)
            labels = labels_text(sorted((label_name(k), v) for k, v in tags.items()))
            values = " ".join("_" if v is None else _num(round(v * pm.scale, 12)) for v in expand(s.values))
            series.append({"series": f"{pm.name}{{{labels}}}", "values": values})
        checks = [{"eval_time": _duration(c.eval_time), "alertname": c.alertname,
                   "exp_alerts": expected[(case.name, c.eval_time, c.alertname)]} for c in case.alert_rule_test]
        tests.append({"name": case.name, "interval": _duration(case.interval), "input_series": series,
                      "alert_rule_test": checks})
    return {"rule_files": [rule_file], "evaluation_interval": _duration(tf.evaluation_interval), "tests": tests}
