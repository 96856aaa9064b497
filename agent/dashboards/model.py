"""A small typed layer over Grafana dashboard JSON: one board model, two query languages.

Every query carries InfluxQL (over measurements and fields) and PromQL (over the names /metrics and remote write
expose, agent/prom.py); a board renders for an InfluxDB or a Prometheus data source. grafana-foundation-sdk has
no InfluxDB query model; dashboards here need little more than panels, raw targets, units, thresholds, variables
and a grid, so this layer writes exactly that (Grafana schema version 39) and places panels on the 24-column grid
itself, so they never overlap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

SCHEMA_VERSION = 39
DATASOURCES = ("influxdb", "prometheus")
DS = {"type": "influxdb", "uid": "${datasource}"}

PanelType = Literal["timeseries", "stat", "gauge", "table", "bargauge", "state-timeline"]

# The WHERE and GROUP BY clauses every panel shares: Grafana's time filter and the board's variables.
F = 'WHERE $timeFilter AND "site" =~ /^$site$/ AND "cluster" =~ /^$cluster$/ AND "rack" =~ /^$rack$/'
FH = F + ' AND "host" =~ /^$host$/'
FG = FH + ' AND "gpu" =~ /^$gpu$/'
T = "GROUP BY time($__interval)"

# The same for PromQL: the board's variables as label matchers (an absent label matches "All", which is .*).
P = 'site=~"$site",cluster=~"$cluster",rack=~"$rack"'
PH = P + ',host=~"$host"'
PG = PH + ',gpu=~"$gpu"'
RI = "$__rate_interval"


def rate_sum(meas: str, field: str, where: str, by: str = "") -> str:
    """Sum over series of a counter's per-second rate, each series' rate taken first."""
    inner = (f'SELECT non_negative_derivative(last("{field}"), 1s) AS r FROM "{meas}" {where} '
             f"{T}, *")
    return f'SELECT sum("r") FROM ({inner}) WHERE $timeFilter {T}{", " + by if by else ""} fill(none)'


@dataclass
class Query:
    influxql: str
    legend: str = ""  # alias, e.g. "$tag_host gpu $tag_gpu"
    table: bool = False
    promql: str = ""  # the same figure over the Prometheus names

    def prom_legend(self) -> str:
        """Grafana's legend for Prometheus: {{label}} where InfluxDB's alias says $tag_label."""
        return re.sub(r"\$tag_(\w+)", r"{{\1}}", self.legend)

    def prom_names(self) -> list[str]:
        """The metric names the PromQL reads (for the check against the exported names)."""
        return re.findall(r"\b(aifactory_[a-z0-9_]+|[a-z]+:aifactory_[a-z0-9_:]+)", self.promql)

    def measurements_fields(self) -> list[tuple[str, str]]:
        """(measurement, field) pairs the query reads, for the catalogue check."""
        out = []
        for m in re.finditer(r'FROM\s+"([a-z_]+)"', self.influxql):
            meas = m.group(1)
            select = re.sub(r'\s+AS\s+"?\w+"?', "", self.influxql[:m.start()].rsplit("SELECT", 1)[-1])
            for f in re.findall(r'"([a-z][a-z0-9_]*)"', select):
                out.append((meas, f))
        return out


@dataclass
class Panel:
    title: str
    type: PanelType
    queries: list[Query]
    unit: str = "none"
    w: int = 12
    h: int = 8
    description: str = ""
    decimals: int | None = None
    thresholds: list[tuple[float | None, str]] = field(default_factory=lambda: [(None, "green")])
    min: float | None = None
    max: float | None = None
    stack: bool = False


@dataclass
class Row:
    title: str


@dataclass
class Variable:
    name: str
    label: str
    query: str  # InfluxQL (SHOW TAG VALUES ...)
    multi: bool = True
    promql: str = ""  # Grafana's label_values(...) for a Prometheus data source


@dataclass
class Constant:
    """A text box variable (price, grid intensity) used in panel arithmetic."""

    name: str
    label: str
    default: str


@dataclass(frozen=True)
class Section:
    """Panels a collector adds to a board (its folder's panels.py, SECTIONS): placed by `order` among the
    board's sections, lower first, so a board reads in the same order whichever collectors are installed."""

    board: str
    order: int
    panels: tuple[Panel | Row, ...]


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    items: list[Panel | Row]
    variables: list[Variable | Constant] = field(default_factory=list)
    tags: list[str] = field(default_factory=lambda: ["aifactory"])
    refresh: str = "30s"
    time_from: str = "now-6h"

    def panels(self) -> list[Panel]:
        return [p for p in self.items if isinstance(p, Panel)]

    def to_json(self, datasource: str = "influxdb") -> dict:
        ds = {"type": datasource, "uid": "${datasource}"}
        panels, x, y, row_h, pid = [], 0, 0, 0, 1
        for item in self.items:
            if isinstance(item, Row):
                if x:
                    y, x = y + row_h, 0
                panels.append({"id": pid, "type": "row", "title": item.title, "collapsed": False, "panels": [],
                               "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}})
                pid, y, row_h = pid + 1, y + 1, 0
                continue
            if x + item.w > 24:
                y, x, row_h = y + row_h, 0, 0
            panels.append(_panel(item, pid, x, y, ds))
            pid, x, row_h = pid + 1, x + item.w, max(row_h, item.h)
        templating = [{"name": "datasource", "label": "Data source", "type": "datasource", "query": datasource,
                       "current": {}, "hide": 0, "refresh": 1}]
        for v in self.variables:
            if isinstance(v, Constant):
                templating.append({"name": v.name, "label": v.label, "type": "textbox", "query": v.default,
                                   "current": {"text": v.default, "value": v.default}, "hide": 0})
            else:
                templating.append({"name": v.name, "label": v.label, "type": "query", "datasource": ds,
                                   "query": v.promql if datasource == "prometheus" else v.query, "refresh": 2,
                                   "multi": v.multi, "includeAll": True,
                                   "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "hide": 0,
                                   "sort": 1})
        return {"uid": self.uid, "title": self.title, "description": self.description, "tags": self.tags,
                "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": True, "graphTooltip": 1,
                "refresh": self.refresh, "time": {"from": self.time_from, "to": "now"}, "timezone": "",
                "templating": {"list": templating}, "annotations": {"list": []}, "panels": panels}


def _panel(p: Panel, pid: int, x: int, y: int, ds: dict = DS) -> dict:
    if ds["type"] == "prometheus":
        targets = [{"refId": chr(ord("A") + i), "datasource": ds, "expr": q.promql, "legendFormat": q.prom_legend(),
                    "format": "table" if q.table else "time_series", "instant": q.table or p.type == "stat",
                    "range": not q.table} for i, q in enumerate(p.queries)]
    else:
        targets = [{"refId": chr(ord("A") + i), "datasource": ds, "query": q.influxql, "rawQuery": True,
                    "resultFormat": "table" if q.table else "time_series", "alias": q.legend}
                   for i, q in enumerate(p.queries)]
    defaults: dict = {"unit": p.unit, "thresholds": {"mode": "absolute", "steps": [
        {"value": v, "color": c} for v, c in p.thresholds]}}
    if p.decimals is not None:
        defaults["decimals"] = p.decimals
    if p.min is not None:
        defaults["min"] = p.min
    if p.max is not None:
        defaults["max"] = p.max
    if p.type == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if p.stack else 0,
                              "stacking": {"mode": "normal" if p.stack else "none"}, "spanNulls": True}
    options: dict = {}
    if p.type in ("stat", "gauge", "bargauge"):
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    if p.type == "timeseries":
        options = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                   "tooltip": {"mode": "multi"}}
    return {"id": pid, "type": p.type, "title": p.title, "description": p.description, "datasource": ds,
            "gridPos": {"x": x, "y": y, "w": p.w, "h": p.h}, "targets": targets,
            "fieldConfig": {"defaults": defaults, "overrides": []}, "options": options}
