"""The collector and output registry.

Collectors register in ``collectors/__init__.py`` (one line each: name -> "module:Class")
and, for third-party packages, through the ``aifactory.collectors`` entry-point group.
A collector module must import its optional dependencies lazily, so importing it never
fails for a missing library; if it does fail anyway, only that collector is unavailable.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path

from .collector import Collector
from .config import CollectorOptions
from .model import Catalogue

log = logging.getLogger(__name__)


@dataclass
class Spec:
    name: str
    target: str
    cls: type[Collector] | None = None
    error: str | None = None

    @property
    def options_model(self) -> type[CollectorOptions]:
        return self.cls.Options if self.cls else CollectorOptions

    @property
    def default_enabled(self) -> bool:
        return bool(self.cls and self.cls.default_enabled)


def load_target(target: str):
    """The object a "module:attribute" names (a collector, an output, a plugin's command hook)."""
    mod_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(mod_name), attr)


class Registry:
    def __init__(self, targets: dict[str, str], outputs: dict[str, str] | None = None):
        self.outputs: dict[str, type] = {}  # output kind -> class (Options, many, build)
        for name, target in (outputs if outputs is not None else discover_outputs()).items():
            try:
                self.outputs[name] = load_target(target)
            except Exception as e:  # a broken output plugin disables itself, not the daemon
                log.warning("output %s unavailable: %s: %s", name, type(e).__name__, e)
        self.specs: dict[str, Spec] = {}
        for name, target in targets.items():
            spec = Spec(name, target)
            try:
                spec.cls = load_target(target)
            except Exception as e:  # a broken plugin disables itself, not the daemon
                spec.error = f"{type(e).__name__}: {e}"
                log.warning("collector %s unavailable: %s", name, spec.error)
            self.specs[name] = spec

    def names(self) -> list[str]:
        return list(self.specs)

    def rule_files(self) -> list[Path]:
        """The default rules of every loaded collector: rules.yaml beside its module (its folder), so that adding
        a collector brings its rules with it; the agent's own pack (agent/alerts/default_rules.yaml) first."""
        import sys

        from .config import DEFAULT_RULES

        out = [DEFAULT_RULES]
        for spec in self.specs.values():
            module = sys.modules.get(spec.cls.__module__) if spec.cls is not None else None
            f = Path(module.__file__).with_name("rules.yaml") if module is not None and module.__file__ else None
            if f is not None and f.is_file() and f not in out:
                out.append(f)
        return out

    def sections(self) -> list:
        """The dashboard panels of every loaded collector: SECTIONS of panels.py beside its module, so that adding
        a collector brings its panels with it. A panels module that fails to import costs its panels, said."""
        import importlib
        import sys

        out: list = []
        for spec in self.specs.values():
            module = sys.modules.get(spec.cls.__module__) if spec.cls is not None else None
            if module is None or not module.__file__ or not Path(module.__file__).with_name("panels.py").is_file():
                continue
            package = module.__name__ if module.__file__.endswith("__init__.py") else module.__name__.rpartition(".")[0]
            try:
                out += list(importlib.import_module(f"{package}.panels").SECTIONS)
            except Exception as e:
                log.error("collector %s: its dashboard panels are left out: %s: %s", spec.name, type(e).__name__, e)
        return out

    def get(self, name: str) -> Spec:
        return self.specs[name]

    def catalogue(self) -> Catalogue:
        from .selfmetrics import AGENT_METRICS

        cat = Catalogue()
        cat.declare("agent", AGENT_METRICS)
        from .alerts.engine import ALERT_METRICS

        cat.declare("alerts", ALERT_METRICS)
        for spec in self.specs.values():
            if spec.cls:
                cat.declare(spec.name, spec.cls.METRICS)
        return cat


def _targets(builtin: dict[str, str], group: str) -> dict[str, str]:
    """The built-in plugins, then third-party ones from an entry-point group (a built-in name wins)."""
    targets = dict(builtin)
    for ep in entry_points(group=group):
        targets.setdefault(ep.name, ep.value)
    return targets


def discover() -> dict[str, str]:
    import collectors

    return _targets(collectors.REGISTRY, "aifactory.collectors")


def discover_outputs() -> dict[str, str]:
    from . import outputs

    return _targets(outputs.REGISTRY, "aifactory.outputs")


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    return Registry(discover())
