"""`aifactory gpus [--json]`: a one-shot table of every GPU."""

from __future__ import annotations

import json
import sys

THROTTLE = ("throttle_power_cap", "throttle_hw_slowdown", "throttle_thermal", "throttle_power_brake",
            "throttle_sync_boost")


def add_parser(sub, common) -> None:
    p = sub.add_parser("gpus", parents=[common], help="one-shot table of the node's GPUs (NVML)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_gpus)


def gpu_rows(samples) -> list[dict]:
    rows = []
    for s in samples:
        if s.measurement != "gpu":
            continue
        f = s.fields
        rows.append({
            "index": int(s.tags["gpu"]), "name": s.tags.get("model"), "uuid": s.tags.get("uuid"),
            "lost": f.get("lost", False),
            "utilization_percent": f.get("utilization_percent"),
            "memory_used_bytes": f.get("memory_used_bytes"), "memory_total_bytes": f.get("memory_total_bytes"),
            "power_watts": f.get("power_watts"), "power_limit_watts": f.get("power_limit_watts"),
            "energy_joules_total": f.get("energy_joules_total"),
            "temperature_celsius": f.get("temperature_celsius"),
            "memory_temperature_celsius": f.get("memory_temperature_celsius"),
            "throttle_reasons": [t.removeprefix("throttle_") for t in THROTTLE if f.get(t)],
            "clocks_event_reasons": f.get("clocks_event_reasons"),
            "ecc_corrected_volatile_total": f.get("ecc_corrected_volatile_total"),
            "ecc_uncorrected_volatile_total": f.get("ecc_uncorrected_volatile_total"),
            "row_remap_pending": f.get("row_remap_pending"), "row_remap_failure": f.get("row_remap_failure"),
            "xid_errors_total": f.get("xid_errors_total"),
        })
    return sorted(rows, key=lambda r: r["index"])


def cmd_gpus(args) -> int:
    import asyncio

    from agent.cli.common import load, setup_logging, table
    from agent.registry import default_registry
    from agent.scheduler import build_runners

    config = load(args)
    setup_logging(args.log_level or "warning")
    insts = [i for i in config.instances if i.kind == "gpu"][:1]
    if not insts:
        from agent.config import InstanceConfig
        from collectors.gpu import GpuOptions

        insts = [InstanceConfig("gpu", "gpu", GpuOptions(xid_events=False), 10.0, 10.0)]
    config.instances = insts
    samples: list = []
    (runner,) = build_runners(config, default_registry(), samples.extend, None)
    asyncio.run(runner.run_once())
    runner.close()
    if runner.state == "not_present":
        msg = f"no GPUs: {runner.last_error}"
        if args.json:
            json.dump({"gpus": [], "error": msg}, sys.stdout)
            sys.stdout.write("\n")
        else:
            print(msg)
        return 0
    if runner.state != "ok":
        print(f"aifactory: gpu collector {runner.state}: {runner.last_error}", file=sys.stderr)
        return 1
    rows = gpu_rows(samples)
    if args.json:
        json.dump({"gpus": rows}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0

    def n(v, fmt):
        return "-" if v is None else format(v, fmt)

    cells = []
    for r in rows:
        mem = ("-" if r["memory_used_bytes"] is None else
               f"{r['memory_used_bytes'] / 2**30:.1f}/{(r['memory_total_bytes'] or 0) / 2**30:.0f} GiB")
        cells.append([r["index"], r["name"], r["uuid"], "LOST" if r["lost"] else n(r["utilization_percent"], "d") + "%",
                      mem, n(r["power_watts"], ".0f") + " W", n(r["energy_joules_total"], ",.0f") + " J",
                      n(r["temperature_celsius"], ".0f") + "/" + n(r["memory_temperature_celsius"], ".0f") + " C",
                      ",".join(r["throttle_reasons"]) or "-",
                      f"{n(r['ecc_corrected_volatile_total'], 'd')}/{n(r['ecc_uncorrected_volatile_total'], 'd')}",
                      n(r["xid_errors_total"], "d")])
    print(table(["GPU", "NAME", "UUID", "UTIL", "MEMORY", "POWER", "ENERGY", "TEMP GPU/HBM", "THROTTLE",
                  "ECC CE/UE", "XID"], cells))
    return 0
