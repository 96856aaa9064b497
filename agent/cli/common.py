"""Helpers every command uses, and the public API of a plugin's own commands (see docs/extending.md).

A collector that brings commands names a function `add_parser(sub, common)` in its `cli` attribute; that
function adds its subparsers to `sub` (with `parents=[common]` for -c/--state-dir/--log-level) and uses these
helpers: `load` (the configuration, exit 78 on an error), `state_dir_of`, `setup_logging`, `table`, `out`, `iso`,
`duration_arg`, `count_arg` and `seconds_arg` (argparse types), `parse_target` (a probe's HOST[:PORT]),
`add_login_args` (a user and where its password is, never argv).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from ..config import MAX_DURATION, Config, load_config
from ..units import parse_duration

EX_OK, EX_FAIL, EX_USAGE, EX_NOT_RUNNING = 0, 1, 2, 3


def out(text: str) -> None:
    """Print to stdout; a reader that went away (`| head -1`) must not change the exit status."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def iso(ns: int | float | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for r in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def reading(measurement: str, tags: dict, field: str, value, unit: str, source: str) -> dict:
    """One reading as every probe command shows it (`--json` and the table alike)."""
    return {"measurement": measurement, "tags": tags, "field": field, "value": value, "unit": unit,
            "source": source}


def readings_table(readings: list[dict], source: str = "SOURCE") -> str:
    """The probe commands' table of readings: measurement, tags, field, value, unit and where it came from."""
    rows = [[r["measurement"], ",".join(f"{k}={v}" for k, v in sorted(r["tags"].items())), r["field"], r["value"],
             r["unit"], r["source"]] for r in readings]
    return table(["MEASUREMENT", "TAGS", "FIELD", "VALUE", "UNIT", source], rows)


def add_login_args(p: argparse.ArgumentParser) -> None:
    """--user, and the file or environment variable that holds the password: a password never goes in argv."""
    p.add_argument("--user")
    p.add_argument("--password-file", help="file holding the password (never a password in argv)")
    p.add_argument("--password-env", help="environment variable holding the password")


def options_or_exit(what: str, build):
    """(build(), None), or (None, EX_CONFIG) after printing why: a plugin command's options from its arguments,
    refused as a bad configuration is (one line per problem, exit 78)."""
    from pydantic import ValidationError

    from ..config import EX_CONFIG, ConfigError, error_lines

    try:
        return build(), None
    except ValidationError as e:
        for line in error_lines(e):
            print(f"aifactory: {what}: {line}", file=sys.stderr)
    except ConfigError as e:
        print(f"aifactory: {e}", file=sys.stderr)
    return None, EX_CONFIG


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def load(args) -> Config:
    from ..registry import default_registry

    return load_config(getattr(args, "config", None), default_registry())


def state_dir_of(args, config: Config) -> Path:
    from ..state import resolve_state_dir

    return resolve_state_dir(getattr(args, "state_dir", None), config.settings.agent.state_dir)


def duration_arg(text: str) -> float:
    try:
        d = parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if d > MAX_DURATION:
        raise argparse.ArgumentTypeError(f"{text!r} is longer than 3660d")
    return d


def count_arg(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= n <= 1_000_000_000:
        raise argparse.ArgumentTypeError(f"{text} is out of range (1 to 1000000000)")
    return n


SEVERITY_ORDER = {"info": 0, "warning": 1, "critical": 2}


def at_least(severity: str, minimum: str) -> bool:
    """An alert's severity is `minimum` or higher (an unknown one counts as warning)."""
    return SEVERITY_ORDER.get(severity, 1) >= SEVERITY_ORDER[minimum]


def parse_target(text: str, default_port: int = 161) -> tuple[str, int]:
    """A probe's target: HOST, HOST:PORT, an IPv6 address, or [IPV6]:PORT."""
    host, port = text.strip(), str(default_port)
    if host.startswith("["):
        end = host.find("]")
        if end < 0 or (host[end + 1:] and not host[end + 1:].startswith(":")):
            raise argparse.ArgumentTypeError(f"{text!r}: expected [IPV6]:PORT")
        host, port = host[1:end], host[end + 2:] or str(default_port)
    elif host.count(":") == 1:
        host, port = host.split(":")
    elif host.count(":") > 1:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a host, HOST:PORT or [IPV6]:PORT") from None
    if not host:
        raise argparse.ArgumentTypeError(f"{text!r} has no host")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: the port must be a number from 1 to 65535")
    return host, int(port)


def seconds_arg(text: str) -> float:
    """A probe's --timeout: seconds, 0.01 to 60."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(v) or not 0.01 <= v <= 60:
        raise argparse.ArgumentTypeError(f"{text} is out of range (0.01 to 60 seconds)")
    return v
