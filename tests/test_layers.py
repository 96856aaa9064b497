"""The import contract: layers import downwards only, no cycles (function-level imports count),
no importing another module's underscore names. An AST walk of agent/ and collectors/, so it needs nothing
installed and sees the imports that run only when a function is called."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lowest first: a module may import its own layer and the layers below, never above.
LAYERS = [
    ("base", ["agent", "agent.units", "agent.model", "agent.logonce", "agent.secretfile", "agent.state",
              "agent.sdnotify", "agent.backoff", "agent.dashboards.model", "agent.prom", "agent.tls"]),
    ("config", ["agent.config", "agent.secrets", "agent.bus", "agent.influxql"]),
    ("parts", ["agent.collector", "agent.selfmetrics", "agent.alerts", "agent.pipeline", "agent.outputs",
               "agent.runner", "agent.dashboards"]),
    ("registry", ["agent.registry"]),
    ("daemon", ["agent.scheduler"]),
    ("cli", ["agent.cli", "agent.__main__"]),
]
# What a collector may use of the agent: the plugin API (its commands, in NAME/cli.py, may also build runners
# and use the CLI's public helpers)
COLLECTOR_MAX = "parts"
COLLECTOR_CLI_MAX = "daemon"
COLLECTOR_CLI_ALSO = ("agent.cli.common",)


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in ("agent", "collectors"):
        for p in (ROOT / pkg).rglob("*.py"):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    private = []
    for m, p in MODULES.items():
        is_pkg = p.name == "__init__.py"
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = m.split(".") if is_pkg else m.split(".")[:-1]
                    base = ".".join(base[: len(base) - (node.level - 1)] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base, a.name)
                           for a in node.names]
            else:
                continue
            for target, name in targets:
                while target and target not in MODULES:
                    target = target.rpartition(".")[0]
                if not target or target == m:
                    continue
                graph[m].add(target)
                if name and name.startswith("_") and not name.startswith("__"):
                    private.append((m, target, name))
    return graph, private


GRAPH, PRIVATE = _imports()


def _layer(m: str) -> int | None:
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for pre in prefixes:
            if m == pre or m.startswith(pre + ".") and pre != "agent":
                if best is None or len(pre) > best[1]:
                    best = (i, len(pre))
    return None if best is None else best[0]


def _index(name: str) -> int:
    return [n for n, _ in LAYERS].index(name)


def test_the_walk_sees_the_tree():
    assert len(MODULES) > 60 and "agent.cli.common" in MODULES and "collectors.gpu.nvml" in MODULES
    assert "agent.config" in GRAPH["agent.cli.common"]  # a module-level import
    assert "agent.scheduler" in GRAPH["agent.cli.run"]  # a function-level one
    assert all(_layer(m) is not None for m in MODULES if m.startswith("agent")), \
        [m for m in MODULES if m.startswith("agent") and _layer(m) is None]


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert cycles == []


def test_layers_import_downwards_only():
    wrong = []
    for m, targets in GRAPH.items():
        for t in targets:
            if m.startswith("agent") and t.startswith("collectors"):
                if m != "agent.registry":  # the registry finds the built-in collectors by name
                    wrong.append((m, t))
            elif m.startswith("agent") and _layer(t) > _layer(m):
                wrong.append((m, t))
            elif m.startswith("collectors") and t.startswith("agent"):
                top = COLLECTOR_CLI_MAX if m.endswith(".cli") else COLLECTOR_MAX
                allowed = _layer(t) <= _index(top) or (m.endswith(".cli") and t in COLLECTOR_CLI_ALSO)
                if not allowed:
                    wrong.append((m, t))
    assert wrong == []


def test_no_module_imports_another_modules_underscore_names():
    assert PRIVATE == []


def _collector_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "collectors" and parts[1] != "common" else None


def test_the_shared_collector_code_imports_no_collector_and_no_collector_imports_another():
    """collectors/common (the energy ledger, counters, the families, the profile engine, the roll-ups) is what
    collectors share: it imports none of them; and a collector reaches another only through it."""
    for shared in ("collectors.common.energy", "collectors.common.families", "collectors.common.profile",
                   "collectors.common.profile.evaluate", "collectors.common.profile.samples",
                   "collectors.common.rollup"):
        assert shared in MODULES, shared
    common = [(m, t) for m, ts in GRAPH.items() if m.startswith("collectors.common")
              for t in ts if _collector_of(t)]
    across = [(m, t) for m, ts in GRAPH.items() if _collector_of(m)
              for t in ts if _collector_of(t) and _collector_of(t) != _collector_of(m)]
    assert common == [] and across == []
