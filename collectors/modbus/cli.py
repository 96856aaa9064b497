"""`aifactory modbus probe HOST[:PORT] --unit N --profile NAME`: read a device once and print every reading with
its unit and register; `aifactory modbus profiles`: the profiles there are.

Exit status: 0 readings, 1 no answer (connection, timeout, a gateway's "target failed to respond"), 3 it answered
but the profile gave no readings (said why), 78 bad arguments.
"""

from __future__ import annotations

import asyncio
import json
import sys


def add_parser(sub, common) -> None:
    from agent.cli.common import parse_target, seconds_arg

    modbus = sub.add_parser("modbus", help="Modbus TCP facility devices")
    msub = modbus.add_subparsers(dest="modbus_command", required=True, metavar="COMMAND")
    p = msub.add_parser("probe", parents=[common], help="read a device with a profile and print every reading")
    p.add_argument("target", metavar="HOST[:PORT]", type=lambda t: parse_target(t, 502),
                   help="host, host:port or [IPv6]:port (port 502 by default)")
    p.add_argument("--unit", type=int, default=1, help="unit id (default 1): the device behind a gateway")
    p.add_argument("--profile", required=True, help="the register profile (aifactory modbus profiles)")
    p.add_argument("--timeout", type=seconds_arg, default=2.0, help="seconds per request (default 2)")
    p.add_argument("--retries", type=int, default=1, help="retransmissions per request (default 1)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_probe)
    ls = msub.add_parser("profiles", parents=[common], help="list the Modbus profiles")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_profiles)


def registers(profile, offset: int) -> dict[tuple, str]:
    """(measurement, the group's static tags, field) -> the register it reads, as the device addresses it."""
    from .blocks import parse_object

    out = {}
    for g in profile.groups:
        for f in g.fields:
            ref = parse_object(f.oid)
            out[(g.measurement, tuple(sorted(g.static_tags.items())), f.field)] = f"{ref.table}:{ref.address + offset}"
    return out


def cmd_probe(args) -> int:
    from agent.cli.common import options_or_exit, reading, readings_table, setup_logging
    from collectors.common.profile.evaluate import evaluate

    from . import Device, DeviceOptions, load_profiles, poll_device
    from .client import Connection, DeviceError, exception_name

    setup_logging(args.log_level or "warning")
    host, port = args.target

    def build():
        return DeviceOptions(name=host, host=host, port=port, unit=args.unit, profile=args.profile,
                             timeout=args.timeout, retries=args.retries)

    opts, rc = options_or_exit("modbus probe", build)
    if opts is None:
        return rc
    profile = load_profiles()[opts.profile]
    dev = Device(opts, profile)

    async def go():
        conn = Connection(host, port, opts.timeout, opts.retries)
        try:
            # the deadline of the collector's poll, and room for SunSpec discovery
            return await asyncio.wait_for(poll_device(conn, dev), opts.timeout * (opts.retries + 1) * 6)
        finally:
            conn.close()

    try:
        poll = asyncio.run(go())
    except (DeviceError, TimeoutError, OSError) as e:
        print(f"aifactory: {host}:{port} unit {opts.unit}: {e or 'no answer'}", file=sys.stderr)
        return 1
    where = registers(profile, dev.offset or 0)
    base = set(profile.device_tags.items())
    readings = [r for r in evaluate(profile, poll.data) if r.value is not None]
    refused = {name: exception_name(code) for name, code in poll.exceptions.items()}
    empty = None
    if not readings:
        empty = (f"profile {profile.name} gave no readings: the device answered {len(poll.data)} objects"
                 + (f", refused {len(refused)} ({', '.join(sorted(set(refused.values())))})" if refused else "")
                 + ", all 'not available' or out of range")
        print(f"aifactory: {host}:{port} unit {opts.unit}: {empty}", file=sys.stderr)

    def register(r) -> str:
        static = tuple(sorted((k, v) for k, v in r.tags.items() if (k, v) not in base))
        return where.get((r.measurement, static, r.field), "?")

    sunspec = {"sunspec_model": dev.model, "sunspec_address": dev.offset} if dev.model is not None else {}
    if args.json:
        json.dump({"profile": profile.name, "unit": opts.unit, **sunspec, "empty": empty,
                   "refused": refused,
                   "readings": [{"measurement": r.measurement, "tags": r.tags, "field": r.field, "value": r.value,
                                 "unit": r.unit, "register": register(r)} for r in readings]},
                  sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 3 if empty else 0
    model = f"; SunSpec model {dev.model} at hr:{dev.offset}" if sunspec else ""
    print(f"{host}:{port} unit {opts.unit}: profile {profile.name} ({profile.description}){model}")
    print(readings_table([reading(r.measurement, r.tags, r.field, r.value, r.unit, register(r)) for r in readings],
                         "REGISTER"))
    for name, why in sorted(refused.items()):
        print(f"  refused {name}: {why}")
    return 3 if empty else 0


def cmd_profiles(args) -> int:
    from . import load_profiles

    profiles = load_profiles()
    if args.json:
        json.dump([{"name": p.name, "description": p.description, "devices": p.devices,
                    "sunspec_models": p.match.sunspec_models} for p in profiles.values()], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    for p in profiles.values():
        print(f"{p.name:20} {p.description}")
    return 0
