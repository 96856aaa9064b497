"""`aifactory status` and `aifactory query`: what the running agent does and what it stored."""

from __future__ import annotations

import json
import sqlite3
import sys
import time

from .common import EX_FAIL, EX_NOT_RUNNING, EX_OK, EX_USAGE, iso, load, out, state_dir_of, table


def cmd_status(args) -> int:
    from ..state import StatusUnreadable, read_status

    config = load(args)
    state_dir = state_dir_of(args, config)
    try:
        st = read_status(state_dir)
        msg = None if st is not None else \
            f"no agent status in {state_dir}: the agent has not run with this state directory"
    except StatusUnreadable as e:
        st, msg = None, str(e)
    if st is None:
        if args.json:
            out(json.dumps({"running": False, "healthy": False, "state_dir": str(state_dir), "error": msg}) + "\n")
        else:
            out(msg + "\n")
        return EX_NOT_RUNNING
    if not st["running"]:
        st["healthy"] = False
    rc = EX_NOT_RUNNING if not st["running"] else EX_OK if st["healthy"] else EX_FAIL
    try:
        text = json.dumps(st, indent=1, default=str) + "\n" if args.json else status_text(st)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        out(f"{state_dir / 'status.json'} is not a complete agent status ({type(e).__name__}: {e})\n")
        return EX_NOT_RUNNING
    out(text)
    return rc


def status_text(st: dict) -> str:
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
        pipe, alerts = st.get("pipeline") or {}, st.get("alerts") or {}
        if pipe:
            print(f"pipeline: {pipe.get('published_samples_total', 0)} samples published, "
                  f"{pipe.get('pipeline_spool_errors_total', 0)} hand-off errors")
        if alerts:
            failing = ", ".join(alerts.get("rules_failing") or []) or "none"
            print(f"alerts: {alerts.get('rules', 0)} rules, {alerts.get('firing', 0)} firing, "
                  f"{alerts.get('pending', 0)} pending, {alerts.get('rule_errors_total', 0)} rule errors "
                  f"(failing: {failing})")
        print()
        rows = []
        for name, c in sorted(st.get("collectors", {}).items()):
            dur = c.get("run_duration_seconds")
            last = c.get("last_run_ns")
            rows.append([name, c.get("state"), f"{now - last / 1e9:.0f}s ago" if last else "-",
                         f"{dur * 1000:.1f}ms" if dur is not None else "-", c.get("run_samples"),
                         c.get("runs_total"), c.get("errors_total"), c.get("timeouts_total"),
                         c.get("skipped_total"), c.get("last_error") or ""])
        print(table(["COLLECTOR", "STATE", "LAST RUN", "DURATION", "SAMPLES", "RUNS", "ERRORS", "TIMEOUTS",
                      "SKIPPED", "LAST ERROR"], rows))
        print()
        rows = []
        for name, o in sorted(st.get("outputs", {}).items()):
            buffered = "buffer_points" in o
            rows.append([name, o.get("path", ""), o.get("state", "ok"),
                         o["buffer_points"] if buffered else o.get("queue_depth_samples"),
                         o.get("written_samples_total"),
                         o.get("buffer_evicted_points_total") if buffered else o.get("queue_dropped_samples_total"),
                         o.get("rejected_points_total", "-"), o.get("write_errors_total"),
                         o.get("last_error") or ""])
        print(table(["OUTPUT", "PATH", "STATE", "PENDING", "WRITTEN", "EVICTED", "REJECTED", "ERRORS", "LAST ERROR"],
                    rows))
        aside = st.get("state_files_set_aside") or []
        if aside:
            print()
            for a in aside:
                print(f"state file {a['path']} was unusable ({a['reason']}): moved to {a['moved_to']}")
    return buf.getvalue()


def cmd_query(args) -> int:
    from ..outputs.local import query

    config = load(args)
    state_dir = state_dir_of(args, config)
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
        out = [dict(s.to_json(), time=iso(s.ts)) for s in samples]
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return EX_OK
    if not samples:
        print(f"no samples of {args.measurement!r} in the last {args.since:g}s" if args.since else "no samples")
        return EX_OK
    tag_keys = sorted({k for s in samples for k in s.tags if k not in ("host",)} - set(tags))
    field_keys = list(dict.fromkeys(k for s in samples for k in s.fields))
    rows = [[iso(s.ts)] + [s.tags.get(k, "") for k in tag_keys] + [s.fields.get(k, "") for k in field_keys]
            for s in samples]
    print(table(["TIME"] + tag_keys + field_keys, rows))
    return EX_OK
