"""`aifactory run` and `aifactory collect`."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from ..config import EX_CONFIG, EX_TEMPFAIL
from ..model import to_line_protocol
from ..runner import stages
from .common import EX_FAIL, EX_OK, EX_USAGE, load, setup_logging, state_dir_of


def cmd_run(args) -> int:
    from ..scheduler import Agent
    from ..state import AlreadyRunning, StateDirError, StateLock, check_writable

    config = load(args)
    setup_logging(args.log_level or config.settings.agent.log_level)
    state_dir = state_dir_of(args, config)
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
    from ..registry import default_registry
    from ..scheduler import build_runners

    config = load(args)
    setup_logging(args.log_level or "warning")
    only = set(args.collector or [])
    known = {i.kind for i in config.instances} | {i.name for i in config.instances}
    unknown = only - known
    if unknown:
        print(f"aifactory: no enabled collector named {', '.join(sorted(unknown))}; enabled: "
              f"{', '.join(sorted(i.name for i in config.instances))}", file=sys.stderr)
        return EX_USAGE
    samples: list = []
    runners = build_runners(config, default_registry(), samples.extend, None, only or None)

    order = stages(runners)  # a collector that consumes others' samples (efficiency) runs after them

    async def runs():
        start = time.time_ns()
        step = int(args.every * 1e9)
        for k in range(max(1, args.runs)):
            ts = start + k * step
            await asyncio.sleep(max(0.0, (ts - time.time_ns()) / 1e9))
            for stage in order:
                await asyncio.gather(*(r.run_once(ts) for r in stage))

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
