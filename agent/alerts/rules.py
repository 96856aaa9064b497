"""Alert rule files: YAML in the shape of Prometheus alerting rules, strictly checked.

    groups:
      - name: gpu
        rules:
          - alert: GpuHot
            expr: gpu.temperature_celsius > 85
            clear: gpu.temperature_celsius < 80      # optional hysteresis: resolves only below 80
            for: 2m
            severity: warning                        # info | warning | critical
            labels: {team: infra}
            summary: "GPU {{ $labels.gpu }} at {{ $value }} C"
            description: "..."

A malformed file is a ConfigError naming the file, the line and the rule (exit 78).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from agent.config import Config, ConfigError, Duration, Strict, load_yaml, validation_messages

from .expr import ExprError, Node, parse


class Rule(Strict):
    alert: str = Field(..., pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    expr: str
    clear: str | None = Field(None, description="while firing, resolve only when this also holds")
    for_: Duration = Field(0.0, alias="for")
    severity: Literal["info", "warning", "critical"] = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str = ""
    description: str = ""
    notify: list[str] | None = Field(None, description="receivers (alerts.receivers) to notify; "
                                                       "default: alerts.default_receivers")

    @field_validator("expr", "clear")
    @classmethod
    def _parses(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                parse(v)
            except ExprError as e:
                raise ValueError(f"bad expression: {e}") from None
        return v


class Group(Strict):
    name: str
    rules: list[Rule]


class RuleFile(Strict):
    groups: list[Group]


class CompiledRule:
    def __init__(self, rule: Rule, group: str, source: str) -> None:
        self.rule = rule
        self.name = rule.alert
        self.group = group
        self.source = source
        self.expr: Node = parse(rule.expr)
        self.clear: Node | None = parse(rule.clear) if rule.clear else None


def load_rules(path: Path) -> list[CompiledRule]:
    data, positions = load_yaml(Path(path))
    where = str(path)
    try:
        rf = RuleFile.model_validate(data if data else {"groups": []})
    except ValidationError as e:
        msgs = validation_messages(e, RuleFile, (), positions, where)
        # name the rule each problem is in
        out = []
        for m, err in zip(msgs, e.errors()):
            loc = err["loc"]
            if len(loc) >= 4 and loc[0] == "groups" and loc[2] == "rules":
                try:
                    name = data["groups"][loc[1]]["rules"][loc[3]].get("alert", "?")
                    m += f" (rule {name})"
                except (KeyError, IndexError, TypeError, AttributeError):
                    pass
            out.append(m)
        raise ConfigError(out) from None
    seen: dict[str, int] = {}
    out = []
    problems = []
    for gi, g in enumerate(rf.groups):
        for ri, r in enumerate(g.rules):
            key = r.alert
            if key in seen:
                line = positions.get(("groups", gi, "rules", ri, "alert"), "?")
                problems.append(f"{where}:{line}: groups[{gi}].rules[{ri}]: rule {key} defined twice")
            seen[key] = 1
            out.append(CompiledRule(r, g.name, where))
    if problems:
        raise ConfigError(problems)
    return out


_TEMPLATE = re.compile(r"\{\{\s*\$(labels\.([A-Za-z_][A-Za-z0-9_]*)|value)\s*\}\}")


def render(template: str, labels: dict[str, str], value: float | None) -> str:
    def sub(m: re.Match) -> str:
        if m.group(1) == "value":
            return "" if value is None else f"{value:.4g}"
        return labels.get(m.group(2), "")

    return _TEMPLATE.sub(sub, template)


def config_rules(config: Config, defaults: list[Path]) -> list[CompiledRule]:
    """The compiled rules of the configuration: the default pack unless switched off (`defaults`: the agent's
    own file and every installed collector's, Registry.rule_files), then every file in alerts.rules (relative
    to the config file's folder), less alerts.disable."""
    if not config.settings.alerts.enabled:
        return []
    base = config.source.parent if config.source else Path.cwd()
    files = [f if f.is_absolute() else base / f for f in config.settings.alerts.rules]
    if config.settings.alerts.default_rules:
        files[:0] = defaults
    out, names = [], set()
    disabled = set(config.settings.alerts.disable)
    receivers = {r.name for r in config.settings.alerts.receivers}
    for f in files:
        for r in load_rules(f):
            if r.name in disabled:
                continue
            unknown = [n for n in (r.rule.notify or []) if n not in receivers]
            if unknown:
                raise ConfigError([f"{r.source}: rule {r.name}: notify names unknown receivers: "
                                   f"{', '.join(unknown)} (alerts.receivers)"])
            if r.name in names:
                raise ConfigError([f"{r.source}: rule {r.name} also defined in another rule file"])
            names.add(r.name)
            out.append(r)
    return out
