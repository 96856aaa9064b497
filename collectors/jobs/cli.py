"""`aifactory jobs [--running | --since 24h] [--user U] [--json]`: each job's GPU energy and tokens on this node,
from the job book the agent keeps (STATE_DIR/jobs.json); cost and emissions from the jobs collector's
price_per_kwh and grid_g_per_kwh. An empty table and exit 0 where no job ran."""

from __future__ import annotations

import json
import sys
import time


def add_parser(sub, common) -> None:
    from agent.cli.common import duration_arg

    p = sub.add_parser("jobs", parents=[common], help="energy per job on this node (GPU energy, held-idle time)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--running", action="store_true", help="running jobs only")
    which.add_argument("--since", type=duration_arg, metavar="DURATION",
                       help="jobs running now or ended within DURATION (default: every record kept)")
    p.add_argument("--user", help="jobs of this user only")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_jobs)


def rows(records, now_ns: int, price_per_kwh: float | None, grid_g_per_kwh: float | None) -> list[dict]:
    out = []
    for r in sorted(records.values(), key=lambda r: -r.gpu_energy_mj):
        end = r.end_ns if r.end_ns is not None else now_ns
        seconds = max(0.0, (end - r.start_ns) / 1e9)
        kwh = r.gpu_energy_mj / 3.6e9
        out.append({
            "job_id": r.job_id, "scheduler": r.scheduler, "user": r.user, "account": r.account, "name": r.name,
            "gpus": sorted(r.gpus, key=lambda g: (len(g), g)), "running": r.running,
            "start": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(r.start_ns / 1e9)) if r.start_ns else None,
            "duration_seconds": round(seconds, 1), "gpu_energy_kwh": round(kwh, 6),
            "cpu_energy_kwh": round(r.cpu_energy_mj / 3.6e9, 6), "node_energy_kwh": round(r.node_energy_mj / 3.6e9, 6),
            "average_power_watts": round(r.gpu_energy_mj / 1000 / seconds, 1) if seconds > 0 else None,
            "held_idle_seconds": round(r.held_idle_seconds, 1), "gpu_seconds": round(r.gpu_seconds, 1),
            "tokens": r.prompt_tokens + r.generation_tokens, "generation_tokens": r.generation_tokens,
            "tokens_per_joule": round((r.prompt_tokens + r.generation_tokens) / (r.gpu_energy_mj / 1000), 4)
            if r.gpu_energy_mj else None,
            "cost": round(kwh * price_per_kwh, 4) if price_per_kwh is not None else None,
            "emissions_g": round(kwh * grid_g_per_kwh, 1) if grid_g_per_kwh is not None else None,
        })
    return out


def cmd_jobs(args) -> int:
    from agent.cli.common import load, state_dir_of, table

    from .book import read_book

    config = load(args)
    opts = next((i.options for i in config.instances if i.kind == "jobs"), None)
    path = state_dir_of(args, config) / "jobs.json"
    try:
        records = read_book(path)
    except (OSError, ValueError, TypeError) as e:
        print(f"aifactory: {path}: {e} (the agent sets a damaged book aside on its next collection)",
              file=sys.stderr)
        return 1
    now = time.time_ns()
    if args.running:
        records = {k: r for k, r in records.items() if r.running}
    elif args.since is not None:
        floor = now - int(args.since * 1e9)
        records = {k: r for k, r in records.items() if r.running or (r.end_ns or 0) >= floor}
    if args.user:
        records = {k: r for k, r in records.items() if r.user == args.user}
    out = rows(records, now, getattr(opts, "price_per_kwh", None), getattr(opts, "grid_g_per_kwh", None))
    if args.json:
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0

    def hours(s: float) -> str:
        return f"{s / 3600:.2f}"

    print(table(["JOB", "SCHEDULER", "USER", "GPUS", "START", "DURATION_H", "GPU_KWH", "CPU_KWH", "NODE_KWH",
                 "AVG_GPU_W", "HELD_IDLE_H", "TOKENS", "TOKENS/J", "COST", "CO2E_G", "STATE"],
                [[r["job_id"], r["scheduler"], r["user"], ",".join(r["gpus"]), r["start"],
                  hours(r["duration_seconds"]), f"{r['gpu_energy_kwh']:.4f}", f"{r['cpu_energy_kwh']:.4f}",
                  f"{r['node_energy_kwh']:.4f}",
                  r["average_power_watts"],
                  hours(r["held_idle_seconds"]), r["tokens"], r["tokens_per_joule"], r["cost"], r["emissions_g"],
                  "running" if r["running"] else "ended"] for r in out]))
    return 0
