"""The `aifactory` command: the parser, and one module per command group."""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..config import EX_CONFIG, ConfigError
from .alerts import cmd_alerts, cmd_rules, cmd_rules_export, cmd_rules_test
from .common import EX_OK, count_arg, duration_arg
from .configure import catalogue_markdown, cmd_catalogue, cmd_config
from .dashboards import cmd_dashboards
from .run import cmd_collect, cmd_run
from .status import cmd_query, cmd_status

__all__ = ["build_parser", "catalogue_markdown", "main"]


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
    r.add_argument("--for", dest="duration", type=duration_arg, metavar="DURATION",
                   help="stop after this long (e.g. 30s, 5m)")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("collect", parents=[common], help="collect once and print; nothing is stored")
    c.add_argument("--once", action="store_true", help="(the default; accepted for clarity)")
    c.add_argument("--collector", action="append", metavar="NAME", help="only this collector (repeatable)")
    c.add_argument("--format", choices=["lp", "json"], default="lp", help="line protocol (default) or JSON")
    c.add_argument("--runs", type=count_arg, default=1, metavar="N",
                   help="collect N times, --every apart (derived metrics such as efficiency need two)")
    c.add_argument("--every", type=duration_arg, default=1.0, metavar="DURATION",
                   help="time between runs (default 1s); runs are timestamped exactly this far apart")
    c.set_defaults(func=cmd_collect)

    a = sub.add_parser("alerts", parents=[common], help="alerts of this node")
    a.add_argument("--state", choices=["firing", "pending", "resolved", "all"], default="all")
    a.add_argument("--severity", choices=["info", "warning", "critical"], help="this severity or higher")
    a.add_argument("--since", type=duration_arg, metavar="DURATION", help="changed within this long")
    a.add_argument("--json", action="store_true")
    a.add_argument("--fail-on", choices=["info", "warning", "critical"],
                   help="exit 1 when an alert of this severity or higher is firing")
    a.add_argument("--fleet", action="store_true", help="every node's alerts, from InfluxDB (or --prometheus)")
    a.add_argument("--prometheus", metavar="URL", help="with --fleet: a Prometheus-compatible query API (Prometheus, "
                                                       "VictoriaMetrics, Mimir's /prometheus) holding the agents' "
                                                       "alerts (scraped or remote-written)")
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
    rx = rsub.add_parser("export", parents=[common], help="write rules for another rule engine (Prometheus, Mimir's "
                                                          "ruler, vmalert)")
    rx.add_argument("file", nargs="?", default="default", help="a rule file, or default (the built-in pack)")
    rx.add_argument("--format", choices=["prometheus"], default="prometheus")
    rx.add_argument("--out", "-o", metavar="FILE", help="write here (default: standard output)")
    rx.add_argument("--tests", metavar="TEST_FILE", help="also convert these rule tests to a promtool test file")
    rx.add_argument("--tests-out", metavar="FILE", help="where the promtool test file goes (with --tests)")
    rx.add_argument("--no-annotations", action="store_true", help="leave summaries out (promtool tests compare "
                                                                  "annotations rendered by Prometheus)")
    rx.add_argument("--no-recording", action="store_true", help="alerting rules only, without the recording rules "
                                                                "of the rack and facility scopes")
    rx.set_defaults(func=cmd_rules_export)

    dsh = sub.add_parser("dashboards", parents=[common], help="Grafana dashboards")
    dsub = dsh.add_subparsers(dest="dash_command", required=True, metavar="COMMAND")
    b = dsub.add_parser("build", parents=[common], help="write the dashboards' JSON (default: dashboards/)")
    b.add_argument("--out", metavar="DIR", help="default: dashboards/ (InfluxDB), dashboards/prometheus/")
    b.add_argument("--datasource", choices=["influxdb", "prometheus"], default="influxdb",
                   help="the query language: InfluxQL or PromQL (the names /metrics and remote write expose)")
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
    q.add_argument("--since", type=duration_arg, default=600.0, metavar="DURATION", help="default 10m")
    q.add_argument("--tag", action="append", metavar="K=V", help="only series with this tag (repeatable)")
    q.add_argument("--limit", type=count_arg, help="at most the newest N samples")
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
    from ..registry import default_registry, load_target

    for spec in default_registry().specs.values():
        if spec.cls is not None and spec.cls.cli:
            load_target(spec.cls.cli)(sub, common)
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
