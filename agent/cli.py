"""The ``aifactory`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from . import __version__
from .config import EX_CONFIG, EX_TEMPFAIL, MAX_DURATION, Config, ConfigError, error_lines, load_config
from .model import to_line_protocol
from .units import parse_duration

EX_OK, EX_FAIL, EX_USAGE, EX_NOT_RUNNING = 0, 1, 2, 3


def _out(text: str) -> None:
    """Print to stdout; a reader that went away (`| head -1`) must not change the exit status."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _iso(ns: int | float | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _table(headers: list[str], rows: list[list]) -> str:
    cells = [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for r in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def _load(args) -> Config:
    from .registry import default_registry

    return load_config(getattr(args, "config", None), default_registry())


def _state_dir(args, config: Config) -> Path:
    from .state import resolve_state_dir

    return resolve_state_dir(getattr(args, "state_dir", None), config.settings.agent.state_dir)


def _duration_arg(text: str) -> float:
    try:
        d = parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if d > MAX_DURATION:
        raise argparse.ArgumentTypeError(f"{text!r} is longer than 3660d")
    return d


def _count_arg(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= n <= 1_000_000_000:
        raise argparse.ArgumentTypeError(f"{text} is out of range (1 to 1000000000)")
    return n


# --- commands -------------------------------------------------------------------


def cmd_run(args) -> int:
    from .scheduler import Agent
    from .state import AlreadyRunning, StateDirError, StateLock, check_writable

    config = _load(args)
    _setup_logging(args.log_level or config.settings.agent.log_level)
    state_dir = _state_dir(args, config)
    try:
        check_writable(state_dir)
    except StateDirError as e:
        print(f"aifactory: {e}", file=sys.stderr)
        return EX_CONFIG
    lock = StateLock(state_dir)
    try:
        lock.acquire()
    except AlreadyRunning as e:
        print(f"aifactory: {e}", file=sys.stderr)
        return EX_TEMPFAIL
    except OSError as e:
        print(f"aifactory: cannot lock state directory {state_dir}: {e}", file=sys.stderr)
        return EX_CONFIG
    try:
        agent = Agent(config, state_dir)
        return asyncio.run(agent.run(once=args.once, duration=args.duration))
    finally:
        lock.release()


def cmd_collect(args) -> int:
    from .registry import default_registry
    from .scheduler import build_runners

    config = _load(args)
    _setup_logging(args.log_level or "warning")
    only = set(args.collector or [])
    known = {i.kind for i in config.instances} | {i.name for i in config.instances}
    unknown = only - known
    if unknown:
        print(f"aifactory: no enabled collector named {', '.join(sorted(unknown))}; enabled: "
              f"{', '.join(sorted(i.name for i in config.instances))}", file=sys.stderr)
        return EX_USAGE
    samples: list = []
    runners = build_runners(config, default_registry(), samples.extend, None, only or None)

    async def runs():
        # Derived collectors (efficiency) read what the others publish: they run after them.
        first = [r for r in runners if not getattr(r.collector, "derived", False)]
        then = [r for r in runners if getattr(r.collector, "derived", False)]
        start = time.time_ns()
        step = int(args.every * 1e9)
        for k in range(max(1, args.runs)):
            ts = start + k * step
            await asyncio.sleep(max(0.0, (ts - time.time_ns()) / 1e9))
            await asyncio.gather(*(r.run_once(ts) for r in first))
            await asyncio.gather(*(r.run_once(ts) for r in then))

    asyncio.run(runs())
    for r in runners:
        r.close()
    if args.format == "json":
        json.dump([s.to_json() for s in samples], sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(to_line_protocol(samples))
    failed = [r for r in runners if not r.success]
    for r in failed:
        print(f"aifactory: collector {r.name}: {r.state}: {r.last_error}", file=sys.stderr)
    return EX_FAIL if failed else EX_OK


def cmd_status(args) -> int:
    from .state import StatusUnreadable, read_status

    config = _load(args)
    state_dir = _state_dir(args, config)
    try:
        st = read_status(state_dir)
        msg = None if st is not None else \
            f"no agent status in {state_dir}: the agent has not run with this state directory"
    except StatusUnreadable as e:
        st, msg = None, str(e)
    if st is None:
        if args.json:
            _out(json.dumps({"running": False, "healthy": False, "state_dir": str(state_dir), "error": msg}) + "\n")
        else:
            _out(msg + "\n")
        return EX_NOT_RUNNING
    if not st["running"]:
        st["healthy"] = False
    rc = EX_NOT_RUNNING if not st["running"] else EX_OK if st["healthy"] else EX_FAIL
    try:
        text = json.dumps(st, indent=1, default=str) + "\n" if args.json else _status_text(st)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        _out(f"{state_dir / 'status.json'} is not a complete agent status ({type(e).__name__}: {e})\n")
        return EX_NOT_RUNNING
    _out(text)
    return rc


def _status_text(st: dict) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        now = time.time()
        up = now - st.get("started_at", now)
        state = ("running" if st["running"] else "NOT RUNNING") + (
            f" (pid {st['pid']}, up {up:.0f}s)" if st["running"] else f" (last update {st['age_seconds']:.0f}s ago"
            + (", stale" if st.get("stale") and not st.get("stopped") else "") + ")")
        print(f"agent {st.get('version')} on {st.get('hostname')}: {state}, "
              f"{'healthy' if st['healthy'] else 'UNHEALTHY'}")
        print(f"config: {st.get('config_source')}   state dir: {st.get('state_dir')}")
        proc = st.get("process") or {}
        if proc:
            print(f"process: cpu {proc.get('cpu_seconds_total', 0):.2f}s, "
                  f"rss {proc.get('memory_rss_bytes', 0) / 2**20:.1f} MiB, threads {proc.get('threads')}")
        print()
        rows = []
        for name, c in sorted(st.get("collectors", {}).items()):
            dur = c.get("run_duration_seconds")
            last = c.get("last_run_ns")
            rows.append([name, c.get("state"), f"{now - last / 1e9:.0f}s ago" if last else "-",
                         f"{dur * 1000:.1f}ms" if dur is not None else "-", c.get("run_samples"),
                         c.get("runs_total"), c.get("errors_total"), c.get("timeouts_total"),
                         c.get("skipped_total"), c.get("last_error") or ""])
        print(_table(["COLLECTOR", "STATE", "LAST RUN", "DURATION", "SAMPLES", "RUNS", "ERRORS", "TIMEOUTS",
                      "SKIPPED", "LAST ERROR"], rows))
        print()
        rows = []
        for name, o in sorted(st.get("outputs", {}).items()):
            buffered = "buffer_points" in o
            rows.append([name, o.get("state", "ok"),
                         o["buffer_points"] if buffered else o.get("queue_depth_samples"),
                         o.get("written_samples_total"),
                         o.get("buffer_evicted_points_total") if buffered else o.get("queue_dropped_samples_total"),
                         o.get("rejected_points_total", "-"), o.get("write_errors_total"),
                         o.get("last_error") or ""])
        print(_table(["OUTPUT", "STATE", "PENDING", "WRITTEN", "EVICTED", "REJECTED", "ERRORS", "LAST ERROR"], rows))
        aside = st.get("state_files_set_aside") or []
        if aside:
            print()
            for a in aside:
                print(f"state file {a['path']} was unusable ({a['reason']}): moved to {a['moved_to']}")
    return buf.getvalue()


def cmd_query(args) -> int:
    from .outputs.local import query

    config = _load(args)
    state_dir = _state_dir(args, config)
    path = config.settings.outputs.local.path or state_dir / "metrics.db"
    tags = {}
    for t in args.tag or []:
        k, sep, v = t.partition("=")
        if not sep or not k:
            print(f"aifactory: --tag expects KEY=VALUE, got {t!r}", file=sys.stderr)
            return EX_USAGE
        tags[k] = v
    now = time.time_ns()
    since = max(0, now - int(args.since * 1e9)) if args.since is not None else None
    try:
        samples = query(path, args.measurement, since_ns=since, fields=args.field or None, tags=tags,
                        limit=args.limit)
    except FileNotFoundError as e:
        print(f"aifactory: {e}", file=sys.stderr)
        return EX_FAIL
    except sqlite3.Error as e:
        print(f"aifactory: the local store {path} cannot be read ({e}); the running agent moves a corrupt "
              "store aside when it opens it", file=sys.stderr)
        return EX_FAIL
    if args.json:
        out = [dict(s.to_json(), time=_iso(s.ts)) for s in samples]
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return EX_OK
    if not samples:
        print(f"no samples of {args.measurement!r} in the last {args.since:g}s" if args.since else "no samples")
        return EX_OK
    tag_keys = sorted({k for s in samples for k in s.tags if k not in ("host",)} - set(tags))
    field_keys = list(dict.fromkeys(k for s in samples for k in s.fields))
    rows = [[_iso(s.ts)] + [s.tags.get(k, "") for k in tag_keys] + [s.fields.get(k, "") for k in field_keys]
            for s in samples]
    print(_table(["TIME"] + tag_keys + field_keys, rows))
    return EX_OK


def cmd_config(args) -> int:
    config = _load(args)
    if args.action == "check":
        from .alerts.rules import config_rules

        rules = config_rules(config)  # a bad rule file is a configuration error too
        src = config.source or "built-in defaults (no configuration file)"
        print(f"{src}: OK, {len(config.instances)} collector instances: "
              + ", ".join(f"{i.name}({i.interval:g}s)" for i in config.instances)
              + (f"; {len(rules)} alert rules" if rules else ""))
        return EX_OK
    data = config.show()
    if args.json:
        json.dump(data, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        import yaml

        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
    return EX_OK


SEVERITY_ORDER = {"info": 0, "warning": 1, "critical": 2}


def cmd_alerts(args) -> int:
    """Alerts of this node, from the agent's alert store (kept current by the running agent)."""
    import datetime as dt

    from .alerts.engine import read_alerts

    config = _load(args)
    if args.fleet:
        return _fleet_alerts(args, config)
    path = _state_dir(args, config) / "alerts.db"
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
        rows = [r for r in rows if SEVERITY_ORDER[r["severity"]] >= SEVERITY_ORDER[args.severity]]
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

        print(_table(["STATE", "SEVERITY", "ALERT", "LABELS", "VALUE", "SINCE", "SUMMARY"],
                     [[r["state"], r["severity"], r["alertname"],
                       ",".join(f"{k}={v}" for k, v in sorted(r["labels"].items())),
                       "" if r["value"] is None else f"{r['value']:.4g}",
                       when(r["fired_at"] or r["active_since"]), r["summary"]] for r in rows]))
    if args.fail_on:
        worst = [r for r in rows if r["state"] == "firing"
                 and SEVERITY_ORDER[r["severity"]] >= SEVERITY_ORDER[args.fail_on]]
        return EX_FAIL if worst else EX_OK
    return EX_OK


def _fleet_alerts(args, config: Config) -> int:
    """Alerts of every node, from the `alerts` measurement the agents write to InfluxDB (InfluxQL)."""
    from .influxql import InfluxQL, InfluxQLOptions, QueryError

    out = next((o for o in config.settings.outputs.influxdb if o.enabled), None)
    opts = {"url": args.url or (out.url if out else None),
            "database": args.database or (out and (out.database or out.bucket)),
            "username": args.username or (out.username if out else None),
            "password_file": args.password_file or (out.password_file if out else None),
            "token_file": args.token_file or (out.token_file if out else None),
            "token_env": None if (args.token_file or args.password_file) else (out.token_env if out else None),
            "tls_verify": out.tls_verify if out else True}
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
    if args.state != "all":
        rows = [r for r in rows if r["state"] == args.state]
    if args.severity:
        rows = [r for r in rows if SEVERITY_ORDER.get(r["severity"], 1) >= SEVERITY_ORDER[args.severity]]
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
        print(_table([group.upper(), "FIRING", "CRITICAL", "PENDING", "RESOLVED"],
                     [[k, v["firing"], v["critical"], v["pending"], v["resolved"]] for k, v in summary.items()]))
        print()
        print(_table([group.upper(), "STATE", "SEVERITY", "ALERT", "LABELS", "VALUE"],
                     [[r[group] or "-", r["state"], r["severity"], r["alertname"],
                       ",".join(f"{k}={v}" for k, v in sorted(r["labels"].items()) if k not in ("host", group)),
                       "" if r["value"] is None else f"{r['value']:.4g}"] for r in rows]))
    if args.fail_on:
        bad = [r for r in rows if r["state"] == "firing"
               and SEVERITY_ORDER.get(r["severity"], 1) >= SEVERITY_ORDER[args.fail_on]]
        return EX_FAIL if bad else EX_OK
    return EX_OK


def cmd_dashboards(args) -> int:
    from .dashboards import OUT, build, push

    if args.dash_command == "build":
        for path in build(Path(args.out) if args.out else OUT):
            print(path)
        return EX_OK
    from .secrets import read_secret

    try:
        token = read_secret("--token-file", args.token_file)
    except ConfigError as e:
        print(f"aifactory: {e}", file=sys.stderr)
        return EX_CONFIG
    if not token:
        print("aifactory: dashboards push needs --token-file (a Grafana service account token)", file=sys.stderr)
        return EX_USAGE
    try:
        for uid, url in push(args.url, token, args.folder, verify=not args.insecure):
            print(f"{uid}: {url}")
    except RuntimeError as e:
        print(f"aifactory: {e}", file=sys.stderr)
        return EX_FAIL
    return EX_OK


def cmd_rules_test(args) -> int:
    from .alerts.testing import run_tests

    failures = run_tests(Path(args.file))
    for f in failures:
        print(f, file=sys.stderr)
    if failures:
        print(f"{args.file}: {len(failures)} failed", file=sys.stderr)
        return EX_FAIL
    print(f"{args.file}: all rule tests passed")
    return EX_OK


def cmd_rules(args) -> int:
    from .alerts.expr import selectors
    from .alerts.rules import load_rules
    from .registry import default_registry

    cat = default_registry().catalogue()
    from .config import DEFAULT_RULES

    rules = load_rules(DEFAULT_RULES if args.file == "default" else Path(args.file))  # ConfigError: exit 78
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


def cmd_catalogue(args) -> int:
    from .registry import default_registry

    cat = default_registry().catalogue()
    if args.format == "json":
        json.dump([{"measurement": m.measurement, "field": m.field, "kind": m.kind.value, "unit": m.unit,
                    "tags": list(m.tags), "description": m.description} for m in cat], sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(catalogue_markdown(cat))
    return EX_OK


def catalogue_markdown(cat) -> str:
    lines = ["| measurement | field | kind | unit | description |", "|---|---|---|---|---|"]
    for m in cat:
        lines.append(f"| `{m.measurement}` | `{m.field}` | {m.kind.value} | {m.unit} | {m.description} |")
    return "\n".join(lines) + "\n"


# --- parser ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", help="configuration file (default: $AIFACTORY_CONFIG, "
                        "else /etc/aifactory/agent.yaml if present, else built-in defaults)")
    common.add_argument("--state-dir", help="state directory (default: /var/lib/aifactory as root, "
                        "$XDG_STATE_HOME/aifactory otherwise)")
    common.add_argument("--log-level", choices=["debug", "info", "warning", "error"])

    p = argparse.ArgumentParser(prog="aifactory", description="AI-factory telemetry agent")
    p.add_argument("--version", action="version", version=f"aifactory-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", parents=[common], help="run the agent")
    r.add_argument("--once", action="store_true", help="collect once, write, and exit")
    r.add_argument("--for", dest="duration", type=_duration_arg, metavar="DURATION",
                   help="stop after this long (e.g. 30s, 5m)")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("collect", parents=[common], help="collect once and print; nothing is stored")
    c.add_argument("--once", action="store_true", help="(the default; accepted for clarity)")
    c.add_argument("--collector", action="append", metavar="NAME", help="only this collector (repeatable)")
    c.add_argument("--format", choices=["lp", "json"], default="lp", help="line protocol (default) or JSON")
    c.add_argument("--runs", type=_count_arg, default=1, metavar="N",
                   help="collect N times, --every apart (derived metrics such as efficiency need two)")
    c.add_argument("--every", type=_duration_arg, default=1.0, metavar="DURATION",
                   help="time between runs (default 1s); runs are timestamped exactly this far apart")
    c.set_defaults(func=cmd_collect)

    a = sub.add_parser("alerts", parents=[common], help="alerts of this node")
    a.add_argument("--state", choices=["firing", "pending", "resolved", "all"], default="all")
    a.add_argument("--severity", choices=["info", "warning", "critical"], help="this severity or higher")
    a.add_argument("--since", type=_duration_arg, metavar="DURATION", help="changed within this long")
    a.add_argument("--json", action="store_true")
    a.add_argument("--fail-on", choices=["info", "warning", "critical"],
                   help="exit 1 when an alert of this severity or higher is firing")
    a.add_argument("--fleet", action="store_true", help="every node's alerts, from InfluxDB")
    a.add_argument("--group-by", choices=["host", "rack"], help="with --fleet: group (default host)")
    a.add_argument("--url", help="with --fleet: InfluxDB URL (default: the config's influxdb output)")
    a.add_argument("--database", help="with --fleet: database / v1-mapped bucket")
    a.add_argument("--username")
    a.add_argument("--password-file")
    a.add_argument("--token-file")
    a.set_defaults(func=cmd_alerts)

    ru = sub.add_parser("rules", parents=[common], help="alert rule files")
    rsub = ru.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    lint = rsub.add_parser("lint", parents=[common], help="check a rule file: syntax, declared metrics, counters")
    lint.add_argument("file")
    lint.set_defaults(func=cmd_rules)
    rt = rsub.add_parser("test", parents=[common], help="run rule tests: fixture series and expected alert states")
    rt.add_argument("file")
    rt.set_defaults(func=cmd_rules_test)

    dsh = sub.add_parser("dashboards", parents=[common], help="Grafana dashboards")
    dsub = dsh.add_subparsers(dest="dash_command", required=True, metavar="COMMAND")
    b = dsub.add_parser("build", parents=[common], help="write the dashboards' JSON (default: dashboards/)")
    b.add_argument("--out", metavar="DIR")
    b.set_defaults(func=cmd_dashboards)
    pu = dsub.add_parser("push", parents=[common], help="create or update the dashboards in Grafana (by uid)")
    pu.add_argument("--url", required=True, help="Grafana base URL")
    pu.add_argument("--token-file", required=True, help="file with a Grafana service account token")
    pu.add_argument("--folder", default="AI factory", help="folder title (created if missing)")
    pu.add_argument("--insecure", action="store_true", help="do not verify the TLS certificate")
    pu.set_defaults(func=cmd_dashboards)

    s = sub.add_parser("status", parents=[common], help="what the running agent is doing")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    q = sub.add_parser("query", parents=[common], help="read samples from the local store")
    q.add_argument("measurement")
    q.add_argument("--field", action="append", metavar="F", help="only this field (repeatable)")
    q.add_argument("--since", type=_duration_arg, default=600.0, metavar="DURATION", help="default 10m")
    q.add_argument("--tag", action="append", metavar="K=V", help="only series with this tag (repeatable)")
    q.add_argument("--limit", type=_count_arg, help="at most the newest N samples")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_query)

    cf = sub.add_parser("config", parents=[common], help="check or show the configuration")
    cf.add_argument("action", choices=["check", "show"])
    cf.add_argument("--json", action="store_true", help="show as JSON (default YAML)")
    cf.set_defaults(func=cmd_config)

    ct = sub.add_parser("catalogue", parents=[common], help="every declared metric")
    ct.add_argument("--format", choices=["md", "json"], default="md")
    ct.set_defaults(func=cmd_catalogue)

    # Collectors may bring commands of their own (e.g. `aifactory gpus`).
    from .registry import default_registry

    for spec in default_registry().specs.values():
        hook = getattr(spec.cls, "register_cli", None)
        if hook is not None:
            hook(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print("aifactory: configuration error:", file=sys.stderr)
        for m in e.messages:
            print(f"  {m}", file=sys.stderr)
        return EX_CONFIG
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EX_OK


if __name__ == "__main__":
    raise SystemExit(main())
