"""`aifactory alerts` (this node, or the fleet from InfluxDB) and `aifactory rules`."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from ..config import EX_CONFIG, Config, ConfigError, error_lines
from .common import EX_FAIL, EX_OK, EX_USAGE, SEVERITY_ORDER, at_least, load, state_dir_of, table


def cmd_alerts(args) -> int:
    """Alerts of this node, from the agent's alert store (kept current by the running agent)."""
    import datetime as dt

    from ..alerts.engine import read_alerts

    config = load(args)
    if args.fleet:
        return fleet_alerts(args, config)
    path = state_dir_of(args, config) / "alerts.db"
    try:
        rows = read_alerts(path)
    except (sqlite3.Error, ValueError, TypeError) as e:
        print(f"aifactory: the alert store {path} cannot be read ({e}); the running agent moves a corrupt "
              "store aside when it opens it", file=sys.stderr)
        return EX_FAIL
    now = time.time()
    if args.state != "all":
        rows = [r for r in rows if r["state"] == args.state]
    if args.severity:
        rows = [r for r in rows if at_least(r["severity"], args.severity)]
    if args.since:
        rows = [r for r in rows if r["updated"] >= now - args.since]
    rows.sort(key=lambda r: (-SEVERITY_ORDER[r["severity"]], r["state"] != "firing", r["alertname"]))
    if args.json:
        json.dump([{k: r[k] for k in ("alertname", "state", "severity", "labels", "value", "summary",
                                      "description", "active_since", "fired_at", "resolved_at", "updated")}
                   for r in rows], sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif not rows:
        print("no alerts" + ("" if path.exists() else f" (no alert store at {path}: no rules, or the agent has "
                                                      "not run with this state directory)"))
    else:
        def when(t):
            return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ") if t else ""

        print(table(["STATE", "SEVERITY", "ALERT", "LABELS", "VALUE", "SINCE", "SUMMARY"],
                     [[r["state"], r["severity"], r["alertname"],
                       ",".join(f"{k}={v}" for k, v in sorted(r["labels"].items())),
                       "" if r["value"] is None else f"{r['value']:.4g}",
                       when(r["fired_at"] or r["active_since"]), r["summary"]] for r in rows]))
    if args.fail_on:
        worst = [r for r in rows if r["state"] == "firing"
                 and at_least(r["severity"], args.fail_on)]
        return EX_FAIL if worst else EX_OK
    return EX_OK


def prometheus_alert_rows(url: str, since: float, username: str | None, password_file: str | None,
                          token_file: str | None) -> list[dict]:
    """The agents' alerts from a Prometheus-compatible query API: each alert's latest state (an info series) and
    value within `since`, as the InfluxDB path gives them."""
    import urllib.parse
    import urllib.request

    from ..secrets import basic_auth, read_secret

    headers = {}
    token = read_secret("alerts --fleet token_file", token_file) if token_file else None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif username:
        password = read_secret("alerts --fleet password_file", password_file) if password_file else ""
        headers["Authorization"] = basic_auth(username, password)

    def query(q: str) -> list[dict]:
        req = urllib.request.Request(url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": q}),
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                doc = json.loads(r.read())
        except (OSError, ValueError) as e:
            raise ConfigError([f"--fleet: {url}: {e}"]) from None
        if doc.get("status") != "success":
            raise ConfigError([f"--fleet: {url}: {doc.get('error') or doc}"])
        return doc["data"]["result"]

    def alert_labels(r: dict) -> dict:  # the agent's tags, without the name and the scrape's own labels
        return {k: v for k, v in r["metric"].items() if k not in ("__name__", "job", "instance")}

    window = f"{int(since)}s"
    values = {}
    for r in query(f"last_over_time(aifactory_alerts_value[{window}])"):
        values[tuple(sorted(alert_labels(r).items()))] = float(r["value"][1])
    rows = []
    for r in query(f"last_over_time(aifactory_alerts_state_info[{window}])"):
        m = alert_labels(r)
        state = m.pop("state", "")
        key = tuple(sorted(m.items()))
        tags = dict(m)
        rows.append({"alertname": tags.pop("alertname", ""), "severity": tags.pop("severity", "warning"),
                     "state": state, "value": values.get(key), "active_seconds": None,
                     "host": tags.get("host", ""), "rack": tags.get("rack", ""),
                     "labels": {k: v for k, v in tags.items() if v}, "time_ns": int(float(r["value"][0]) * 1e9)})
    return rows


def fleet_alerts(args, config: Config) -> int:
    """Alerts of every node, from the `alerts` measurement the agents write to InfluxDB (InfluxQL), or to a
    Prometheus-compatible store (--prometheus)."""
    from ..influxql import InfluxQL, InfluxQLOptions, QueryError

    if args.prometheus:
        try:
            rows = prometheus_alert_rows(args.prometheus, args.since or 900.0, args.username, args.password_file,
                                         args.token_file)
        except ConfigError as e:
            print(f"aifactory: {e}", file=sys.stderr)
            return EX_FAIL
        return show_fleet(args, rows)

    out = next((o for o in config.settings.outputs.influxdb if o.enabled), None)
    opts = {"url": args.url or (out.url if out else None),
            "database": args.database or (out and (out.database or out.bucket)),
            "username": args.username or (out.username if out else None),
            "password_file": args.password_file or (out.password_file if out else None),
            "token_file": args.token_file or (out.token_file if out else None),
            "token_env": None if (args.token_file or args.password_file) else (out.token_env if out else None),
            "tls_verify": out.tls_verify if out else True, "tls_ca_file": out.tls_ca_file if out else None}
    if not opts["url"] or not opts["database"]:
        print("aifactory: --fleet needs an InfluxDB: --url and --database, or an influxdb output in the config",
              file=sys.stderr)
        return EX_USAGE
    since = args.since or 900.0
    try:
        client = InfluxQL(InfluxQLOptions(**{k: v for k, v in opts.items() if v is not None}), "alerts --fleet")
        series = client.query('SELECT last("state") AS state, last("value") AS value, last("active_seconds") AS '
                              f'active FROM "alerts" WHERE time > now() - {int(since)}s GROUP BY *')
    except (QueryError, ConfigError) as e:
        print(f"aifactory: {e}", file=sys.stderr)
        return EX_FAIL
    except ValueError as e:  # pydantic: a malformed --url and the like (its own text would echo the URL)
        why = "; ".join(error_lines(e)) if isinstance(e, ValidationError) else str(e)
        print(f"aifactory: --fleet: {why}", file=sys.stderr)
        return EX_USAGE
    rows = []
    for s in series:
        tags = dict(s.get("tags") or {})
        r = dict(zip(s["columns"], s["values"][-1]))
        rows.append({"alertname": tags.pop("alertname", ""), "severity": tags.pop("severity", "warning"),
                     "state": r.get("state") or "", "value": r.get("value"), "active_seconds": r.get("active"),
                     "host": tags.get("host", ""), "rack": tags.get("rack", ""),
                     "labels": {k: v for k, v in tags.items() if v}, "time_ns": r.get("time")})
    return show_fleet(args, rows)


def show_fleet(args, rows: list[dict]) -> int:
    if args.state != "all":
        rows = [r for r in rows if r["state"] == args.state]
    if args.severity:
        rows = [r for r in rows if at_least(r["severity"], args.severity)]
    group = args.group_by or "host"
    rows.sort(key=lambda r: (r[group], -SEVERITY_ORDER.get(r["severity"], 1), r["alertname"]))
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif not rows:
        print("no alerts in the fleet")
    else:
        summary: dict[str, dict[str, int]] = {}
        for r in rows:
            g = summary.setdefault(r[group] or "-", {"firing": 0, "pending": 0, "resolved": 0, "critical": 0})
            g[r["state"]] = g.get(r["state"], 0) + 1
            if r["state"] == "firing" and r["severity"] == "critical":
                g["critical"] += 1
        print(table([group.upper(), "FIRING", "CRITICAL", "PENDING", "RESOLVED"],
                     [[k, v["firing"], v["critical"], v["pending"], v["resolved"]] for k, v in summary.items()]))
        print()
        print(table([group.upper(), "STATE", "SEVERITY", "ALERT", "LABELS", "VALUE"],
                     [[r[group] or "-", r["state"], r["severity"], r["alertname"],
                       ",".join(f"{k}={v}" for k, v in sorted(r["labels"].items()) if k not in ("host", group)),
                       "" if r["value"] is None else f"{r['value']:.4g}"] for r in rows]))
    if args.fail_on:
        bad = [r for r in rows if r["state"] == "firing"
               and at_least(r["severity"], args.fail_on)]
        return EX_FAIL if bad else EX_OK
    return EX_OK


def cmd_rules_test(args) -> int:
    from ..alerts.testing import run_tests
    from ..registry import default_registry

    failures = run_tests(Path(args.file), default_registry().rule_files())
    for f in failures:
        print(f, file=sys.stderr)
    if failures:
        print(f"{args.file}: {len(failures)} failed", file=sys.stderr)
        return EX_FAIL
    print(f"{args.file}: all rule tests passed")
    return EX_OK


def cmd_rules(args) -> int:
    from ..alerts.expr import selectors
    from ..alerts.rules import load_rules
    from ..registry import default_registry

    registry = default_registry()
    cat = registry.catalogue()
    files = registry.rule_files() if args.file == "default" else [Path(args.file)]
    rules = [r for f in files for r in load_rules(f)]  # ConfigError: exit 78
    problems = []
    for r in rules:
        for node in (r.expr, r.clear):
            for sel, rng in selectors(node) if node else []:
                m = cat.get(sel.measurement, sel.field)
                if m is None:
                    problems.append(f"{args.file}: rule {r.name}: {sel.measurement}.{sel.field} is not a declared "
                                    "metric (aifactory catalogue lists them)")
                elif m.kind.value == "counter" and not rng:
                    problems.append(f"{args.file}: rule {r.name}: {sel.measurement}.{sel.field} is a counter: read "
                                    "it with rate() or increase() over a range")
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return EX_CONFIG
    print(f"{args.file}: OK, {len(rules)} rules")
    return EX_OK


def cmd_rules_export(args) -> int:
    """The rules (the default pack or a file) for Prometheus' rule engine; with --tests, their tests for promtool."""
    import yaml

    from ..alerts.promql import NotExportable, export, export_tests
    from ..alerts.rules import load_rules
    from ..registry import default_registry

    registry = default_registry()
    cat = registry.catalogue()
    files = registry.rule_files() if args.file == "default" else [Path(args.file)]
    rules = [r for f in files for r in load_rules(f)]  # ConfigError: exit 78
    try:
        doc = export(rules, cat, annotations=not args.no_annotations, recording=not args.no_recording)
        tests = None
        if args.tests:
            if not args.out or not args.tests_out:
                print("aifactory: rules export --tests needs --out and --tests-out (the test file names the rule "
                      "file)", file=sys.stderr)
                return EX_CONFIG
            tests = export_tests(Path(args.tests), registry.rule_files(), rules, cat,
                                 os.path.relpath(Path(args.out).resolve(), Path(args.tests_out).resolve().parent))
    except NotExportable as e:
        print(f"aifactory: rules export: {e}", file=sys.stderr)
        return EX_FAIL
    head = ("# Exported by `aifactory rules export --format prometheus` from the agent's rules: names as /metrics\n"
            "# and remote write expose them (docs/prometheus.md). Regenerate rather than edit.\n")
    text = head + yaml.safe_dump(doc, sort_keys=False, width=200, allow_unicode=True)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    if tests is not None:
        Path(args.tests_out).write_text(head + yaml.safe_dump(tests, sort_keys=False, width=200, allow_unicode=True))
    return EX_OK
