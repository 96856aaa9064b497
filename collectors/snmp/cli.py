"""`aifactory snmp probe HOST[:PORT]`: the first command an operator runs on a new device."""

from __future__ import annotations

import asyncio
import json
import sys

from agent.cli.common import parse_target, seconds_arg


def add_parser(sub, common) -> None:
    snmp = sub.add_parser("snmp", help="SNMP facility devices")
    ssub = snmp.add_subparsers(dest="snmp_command", required=True, metavar="COMMAND")
    p = ssub.add_parser("probe", parents=[common], help="detect a device's profile and print every reading")
    p.add_argument("target", metavar="HOST[:PORT]", type=parse_target, help="host, host:port or [IPv6]:port")
    p.add_argument("--community", help="v2c community (default: public; prefer --community-file)")
    p.add_argument("--community-file")
    p.add_argument("--v3-user")
    p.add_argument("--v3-auth-proto", choices=["MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"])
    p.add_argument("--v3-auth-key-file")
    p.add_argument("--v3-priv-proto", choices=["DES", "AES", "AES128", "AES192", "AES256"])
    p.add_argument("--v3-priv-key-file")
    p.add_argument("--profile", default="auto", help="a profile name, or auto")
    p.add_argument("--timeout", type=seconds_arg, default=2.0, help="seconds per try (default 2)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_probe)


def cmd_probe(args) -> int:
    from agent.cli.common import options_or_exit, reading, readings_table, setup_logging
    from collectors.common.profile.evaluate import evaluate

    from . import Device, DeviceOptions, missing_objects, poll_device
    from .client import SYS_OBJECT_ID, DeviceError, SnmpClient
    from .match import load_profiles

    setup_logging(args.log_level or "warning")
    host, port = args.target

    def build():
        opts = DeviceOptions(name=host, host=host, port=port, profile=args.profile,
                             version="v3" if args.v3_user else "v2c", community=args.community,
                             community_file=args.community_file, v3_user=args.v3_user,
                             v3_auth_proto=args.v3_auth_proto, v3_auth_key_file=args.v3_auth_key_file,
                             v3_priv_proto=args.v3_priv_proto, v3_priv_key_file=args.v3_priv_key_file,
                             timeout=args.timeout)
        return Device(opts, opts.credentials("snmp probe"))

    dev, rc = options_or_exit("snmp probe", build)
    if dev is None:
        return rc
    opts = dev.opts
    profiles = load_profiles()

    async def go():
        client = SnmpClient()
        try:
            profile, data = await asyncio.wait_for(poll_device(client, profiles, dev), args.timeout * 20)
            ident = await client.get(dev.creds, opts.host, opts.port, [SYS_OBJECT_ID], opts.timeout, opts.retries)
            return profile, data, str(ident.get(SYS_OBJECT_ID, ""))
        finally:
            client.close()

    try:
        profile, data, sys_oid = asyncio.run(go())
    except (DeviceError, TimeoutError, OSError) as e:
        print(f"aifactory: {opts.host}:{opts.port}: {e or 'no answer'}", file=sys.stderr)
        return 1
    readings = [r for r in evaluate(profile, data) if r.value is not None]
    empty = None
    if not readings:  # never a silent empty answer: say what the device did not answer, exit 3
        gone = missing_objects(profile, data)
        empty = (f"profile {profile.name} matched but gave no readings: "
                 + (f"nothing at {', '.join(gone)}" if gone else
                    f"the device answered {len(data)} values, all 'not supported' sentinels or filtered out"))
        print(f"aifactory: {opts.host}:{opts.port}: {empty}", file=sys.stderr)
    if args.json:
        json.dump({"profile": profile.name, "sys_object_id": sys_oid, "empty": empty,
                   "readings": [{"measurement": r.measurement, "tags": r.tags, "field": r.field, "value": r.value,
                                 "unit": r.unit, **({"fallback": r.origin} if r.origin else {})}
                                for r in readings]}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 3 if empty else 0
    print(f"{opts.host}:{opts.port}: profile {profile.name} ({profile.description}); sysObjectID {sys_oid}")
    print(readings_table([reading(r.measurement, r.tags, r.field, r.value, r.unit,
                                  f"fallback {r.origin}" if r.origin else "") for r in readings], "NOTE"))
    return 3 if empty else 0
