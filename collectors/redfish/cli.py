"""`aifactory redfish probe URL`: every reading a Redfish service gives, with its unit and resource."""

from __future__ import annotations

import json
import sys
import time


def add_parser(sub, common) -> None:
    from agent.cli.common import add_login_args

    rf = sub.add_parser("redfish", help="Redfish services (BMCs, power shelves, PDUs, CDUs)")
    rsub = rf.add_subparsers(dest="redfish_command", required=True, metavar="COMMAND")
    p = rsub.add_parser("probe", parents=[common], help="discover a service and print every reading")
    p.add_argument("url", metavar="URL", help="https://BMC[:PORT]")
    add_login_args(p)
    p.add_argument("--auth", choices=["session", "basic"], default="session")
    p.add_argument("--ca-file", help="CA bundle that signed the BMC's certificate")
    p.add_argument("--insecure", action="store_true", help="skip TLS certificate verification")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per request (default 5)")
    p.add_argument("--electrical", action="store_true", help="also voltage, current and frequency sensors")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_probe)


def cmd_probe(args) -> int:
    from agent.cli.common import options_or_exit, reading, readings_table, setup_logging

    from . import RedfishCollector, TargetOptions
    from .client import RedfishClient, RedfishError
    from .discover import discover, poll
    from .model import family_of, load_models

    setup_logging(args.log_level or "warning")
    def build():
        opts = TargetOptions(name="probe", url=args.url, user=args.user, password_file=args.password_file,
                             password_env=args.password_env, auth=args.auth, ca_file=args.ca_file,
                             insecure=args.insecure, timeout=args.timeout, electrical=args.electrical)
        return opts, opts.auth_of("redfish probe")

    built, rc = options_or_exit("redfish probe", build)
    if built is None:
        return rc
    opts, auth = built
    units = {(m.measurement, m.field): m.unit for m in RedfishCollector.METRICS}
    models = load_models()
    client = RedfishClient(opts.url, auth, opts.timeout, opts.ca_file, verify=not opts.insecure)
    try:
        plan = discover(client, models, time.monotonic() + max(60.0, opts.timeout * 10), None, opts.electrical)
        result = poll(client, models, plan, time.monotonic() + max(60.0, opts.timeout * 10))
    except (RedfishError, TimeoutError, OSError) as e:
        print(f"aifactory: {opts.url}: {e}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if result.error:
        print(f"aifactory: {opts.url}: {result.error}", file=sys.stderr)
        return 1
    readings = []
    for r in result.readings:
        measurement, tags = family_of(r, opts.name, None)  # as the collector emits it
        readings.append(reading(measurement, tags, r.field, r.value, units.get((measurement, r.field), ""),
                                r.source_uri))
    tree = [{"id": c.id, "role": c.role, "parent": c.parent, "why": c.why, "uri": c.uri} for c in plan.chassis]
    meter = node_meter(result.readings)
    if args.json:
        json.dump({"url": opts.url, "models": plan.models, "chassis": tree, "node_meter": meter,
                   "skipped": result.skipped, "readings": readings}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    how = "roles from the ComputerSystem's links" if plan.systems else "no ComputerSystem: roles by name"
    print(f"chassis tree ({how}):")
    for line in tree_lines(tree):
        print(line)
    if meter:
        for name, parts in meter.items():
            print(f"node meter {name}: " + " + ".join(f"{p['chassis']}/{p['component']} {p['field']} {p['value']:g} "
                                                     f"({p['source']})" for p in parts))
    else:
        print("node meter: none here (no chassis of role node with PSU inputs or a chassis reading)")
    for x in result.skipped:
        print(f"skipped (not live): {x}")
    for chassis, used in plan.models.items():
        print(f"chassis {chassis}: {', '.join(used) or 'nothing readable'}")
    print(readings_table(readings, "RESOURCE"))
    return 0


def tree_lines(tree: list[dict]) -> list[str]:
    """The chassis as a tree, each with its role and why."""
    kids: dict[str | None, list[dict]] = {}
    ids = {c["id"] for c in tree}
    for c in tree:
        kids.setdefault(c["parent"] if c["parent"] in ids else None, []).append(c)
    out: list[str] = []

    def walk(parent, depth):
        for c in kids.get(parent, ()):
            out.append(f"{'  ' * (depth + 1)}{c['id']}: {c['role']} ({c['why']})")
            walk(c["id"], depth + 1)

    walk(None, 0)
    return out


def node_meter(readings) -> dict[str, list[dict]]:
    """What the efficiency collector would meter the node by on this BMC: its PSU inputs (summed) and its chassis
    reading, each from the chassis of role node, a counter where there is one."""
    out: dict[str, list[dict]] = {}
    for r in readings:
        scope = r.tags.get("scope")
        if r.measurement != "bmc_power" or r.tags.get("chassis_role") != "node" or scope not in (
                "psu_input", "chassis") or r.field not in ("power_watts", "energy_joules_total"):
            continue
        out.setdefault(scope, []).append({"chassis": r.tags.get("chassis"), "component": r.tags.get("component"),
                                          "field": r.field, "value": r.value, "source": r.source_uri})
    return out
