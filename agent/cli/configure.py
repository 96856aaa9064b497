"""`aifactory config` and `aifactory catalogue`."""

from __future__ import annotations

import json
import sys

from .common import EX_OK, load


def cmd_config(args) -> int:
    config = load(args)
    if args.action == "check":
        from ..alerts.rules import config_rules
        from ..registry import default_registry

        rules = config_rules(config, default_registry().rule_files())  # a bad rule file is a configuration error
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


def _default_text(field) -> str:
    """A field's default as an operator writes it: 10s, 1GiB, true, none."""
    from pydantic_core import PydanticUndefined

    from ..units import format_duration

    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if hasattr(value, "model_dump"):
        return "see below"
    if value is None or value == [] or value == {}:
        return "none"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    meta = " ".join(str(m) for m in field.metadata) + " " + str(field.annotation)
    if isinstance(value, float | int) and ("_dur" in meta or "Duration" in meta or "Interval" in meta):
        return f"`{format_duration(float(value))}`"
    if isinstance(value, int) and ("_size" in meta or "Size" in meta) and value >= 1024:
        for unit, n in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if value % n == 0:
                return f"`{value // n}{unit}`"
    if isinstance(value, list | tuple):
        return ", ".join(f"`{v}`" for v in value)
    return f"`{value}`"


def _rows(model, prefix: str, out: list, skip: tuple[str, ...] = ()) -> None:
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        if name in skip:
            continue
        key = f"{prefix}.{name}"
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        ann = field.annotation
        inner = getattr(ann, "__args__", (ann,))
        sub = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is None:  # list[Model] / Model | None
            for a in inner:
                sub = next((b for b in getattr(a, "__args__", ()) if isinstance(b, type) and issubclass(b, BaseModel)),
                           None)
                if sub:
                    break
        if sub is not None and name not in ("collectors",):
            many = "list" in str(ann)
            out.append((key + ("[]" if many else ""), _default_text(field) if not many else "none",
                        desc or (sub.__doc__ or "").strip().split("\n")[0]))
            _rows(sub, key + ("[]" if many else ""), out)
            continue
        out.append((key, _default_text(field), desc))


def config_markdown(registry) -> str:
    """The configuration reference, every key from the declarations (README; `make catalogue` writes it)."""
    from ..config import CollectorOptions, settings_model

    rows: list[tuple[str, str, str]] = []
    model = settings_model(registry.outputs)
    for section in ("agent", "tags", "alerts"):
        _rows(model.model_fields[section].annotation, section, rows)
    rows.append(("collectors.NAME", "each collector on, unless noted", "a mapping of options, or a list of them "
                 "for several instances, each with a `name`"))
    _rows(CollectorOptions, "collectors.NAME", rows)
    for name in sorted(registry.names()):
        spec = registry.get(name)
        if spec.cls is None:
            continue
        if not spec.cls.default_enabled:
            rows.append((f"collectors.{name}", "off", "on where configured"))
        _rows(spec.cls.Options, f"collectors.{name}", rows, skip=tuple(CollectorOptions.model_fields))
    outputs = model.model_fields["outputs"].annotation
    for name in outputs.model_fields:
        cls = registry.outputs[name]
        key = f"outputs.{name}" + ("[]" if cls.many else "")
        rows.append((key, "none" if cls.many else "see below",
                     (cls.Options.__doc__ or "").strip().split("\n")[0]))
        _rows(cls.Options, key, rows)
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{k}` | {d} | {m} |" for k, d, m in rows]
    return "\n".join(lines) + "\n"
