"""`aifactory config` and `aifactory catalogue`."""

from __future__ import annotations

import json
import sys

from .common import EX_OK, load


def cmd_config(args) -> int:
    config = load(args)
    if args.action == "check":
        from ..alerts.rules import config_rules

        rules = config_rules(config)  # a bad rule file is a configuration error too
        src = config.source or "built-in defaults (no configuration file)"
        print(f"{src}: OK, {len(config.instances)} collector instances: "
              + ", ".join(f"{i.name}({i.interval:g}s)" for i in config.instances)
              + (f"; {len(rules)} alert rules" if rules else ""))
        return EX_OK
    data = config.show()
    if args.json:
        json.dump(data, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        import yaml

        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
    return EX_OK


def cmd_catalogue(args) -> int:
    from ..registry import default_registry

    cat = default_registry().catalogue()
    if args.format == "json":
        json.dump([{"measurement": m.measurement, "field": m.field, "kind": m.kind.value, "unit": m.unit,
                    "tags": list(m.tags), "description": m.description} for m in cat], sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(catalogue_markdown(cat))
    return EX_OK


def catalogue_markdown(cat) -> str:
    lines = ["| measurement | field | kind | unit | description |", "|---|---|---|---|---|"]
    for m in cat:
        lines.append(f"| `{m.measurement}` | `{m.field}` | {m.kind.value} | {m.unit} | {m.description} |")
    return "\n".join(lines) + "\n"
