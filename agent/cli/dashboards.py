"""`aifactory dashboards build|push`."""

from __future__ import annotations

import sys
from pathlib import Path

from ..config import EX_CONFIG, ConfigError
from .common import EX_FAIL, EX_OK, EX_USAGE


def cmd_dashboards(args) -> int:
    from ..dashboards import build, push
    from ..registry import default_registry

    sections = default_registry().sections()  # the installed collectors' panels
    if args.dash_command == "build":
        for path in build(sections, Path(args.out) if args.out else None, args.datasource):
            print(path)
        return EX_OK
    from ..secrets import read_secret

    try:
        token = read_secret("--token-file", args.token_file)
    except ConfigError as e:
        print(f"aifactory: {e}", file=sys.stderr)
        return EX_CONFIG
    if not token:
        print("aifactory: dashboards push needs --token-file (a Grafana service account token)", file=sys.stderr)
        return EX_USAGE
    try:
        for uid, url in push(args.url, token, sections, args.folder, verify=not args.insecure):
            print(f"{uid}: {url}")
    except RuntimeError as e:
        print(f"aifactory: {e}", file=sys.stderr)
        return EX_FAIL
    return EX_OK
