"""`aifactory ipmi probe [HOST]`: every reading a BMC gives over DCMI and the SDR, with its unit."""

from __future__ import annotations

import json
import sys


def add_parser(sub, common) -> None:
    from agent.cli.common import add_login_args

    ipmi = sub.add_parser("ipmi", help="IPMI BMCs (DCMI power, SDR sensors)")
    isub = ipmi.add_subparsers(dest="ipmi_command", required=True, metavar="COMMAND")
    p = isub.add_parser("probe", parents=[common], help="read a BMC once and print every reading")
    p.add_argument("host", metavar="HOST", nargs="?", help="BMC address (none: this node's BMC, /dev/ipmi0)")
    p.add_argument("--port", type=int, default=623)
    p.add_argument("--timeout", type=float, default=20.0, help="seconds for the whole probe (default 20)")
    add_login_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_probe)


def cmd_probe(args) -> int:
    from agent.cli.common import options_or_exit, reading, readings_table, setup_logging
    from agent.model import Accumulator

    from . import IpmiCollector, Target, TargetOptions, poll_target
    from .mapping import map_dcmi, map_sdr

    setup_logging(args.log_level or "warning")
    def build():
        opts = TargetOptions(name="probe", host=args.host, port=args.port, user=args.user,
                             password_file=args.password_file, password_env=args.password_env)
        return Target(opts, opts.password_of("ipmi probe"))

    target, rc = options_or_exit("ipmi probe", build)
    if target is None:
        return rc
    where = args.host or "in band"
    # pyghmi's steps wait on their own retries (an unknown user, a BMC that answers late): the whole probe has
    # one deadline, and what has not answered by then is said, not waited for
    import threading

    result: list = []
    worker = threading.Thread(target=lambda: result.append(poll_target(target)), name="ipmi-probe", daemon=True)
    worker.start()
    worker.join(args.timeout)
    if not result:
        print(f"aifactory: {where}: no complete answer within {args.timeout:g} s (--timeout)", file=sys.stderr)
        return 1
    power, sensors, error = result[0]
    if error and power is None and not sensors:
        print(f"aifactory: {where}: {error}", file=sys.stderr)
        return 1
    units = {(m.measurement, m.field): m.unit for m in IpmiCollector.METRICS}
    acc = Accumulator(0)
    if power is not None:
        map_dcmi(power, acc, {})
    map_sdr(sensors, acc, {})
    readings = []
    for s in acc.close():
        source = s.tags.get("source") or "ipmi_sdr"
        for field, value in s.fields.items():
            readings.append(reading(s.measurement, s.tags, field, value, units.get((s.measurement, field), ""),
                                    "DCMI Get Power Reading" if source == "dcmi" else "SDR"))
    if args.json:
        json.dump({"host": args.host, "dcmi": power is not None, "readings": readings, "error": error},
                  sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    if error:
        print(f"aifactory: {where}: {error} (readings below were read before it)", file=sys.stderr)
    print(readings_table(readings))
    return 0
