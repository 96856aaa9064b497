"""The dashboards, as code. Queries are InfluxQL (InfluxDB 1.x, 2.x v1 API, 3.x) over catalogue names only.

Grafana macros: $timeFilter and $__interval; variables are multi-value regexes (`=~ /^$host$/`).
Rates come from counters with non_negative_derivative over the same interval, never from sampled power.

A board here is a frame (uid, title, variables) and the panels that belong to no one collector (the fleet
overview, the alerts); a collector's own panels live beside it (collectors/NAME/panels.py, SECTIONS) and are
gathered by the registry (Registry.sections), placed on their board by their order.
"""

from __future__ import annotations

from collections.abc import Iterable

from .model import FH, PH, RI, Constant, Dashboard, Panel, Query, Section, T, Variable, rate_sum


def _vars(with_gpu: bool = False) -> list:
    out = [Variable(key, label, f'SHOW TAG VALUES FROM "agent" WITH KEY = "{key}"',
                    promql=f"label_values(aifactory_agent_uptime_seconds, {key})")
           for key, label in (("site", "Site"), ("cluster", "Cluster"), ("rack", "Rack"), ("host", "Host"))]
    if with_gpu:
        out.append(Variable("gpu", "GPU", 'SHOW TAG VALUES FROM "gpu" WITH KEY = "gpu" WHERE "host" =~ /^$host$/',
                            promql='label_values(aifactory_gpu_power_watts{host=~"$host"}, gpu)'))
    return out


def fleet(sections: Iterable[Section] = ()) -> Dashboard:
    return Dashboard("aifactory-fleet", "AI factory: fleet overview",
                     "GPUs by state, power, energy, tokens and efficiency, alerts, hottest GPUs.", [
        Panel("GPUs reporting", "stat", [Query(f'SELECT count("p") FROM (SELECT last("power_watts") AS p '
                                               f'FROM "gpu" {FH} GROUP BY "uuid")',
                                               promql=f"count(count by (uuid) (aifactory_gpu_power_watts{{{PH}}}))")],
              unit="none", w=4, h=5),
        Panel("GPUs lost", "stat", [Query(f'SELECT count("l") FROM (SELECT last("lost") AS l FROM "gpu" {FH} '
                                          'GROUP BY "uuid") WHERE "l" = true',
                                          promql=f"count(max by (uuid) (aifactory_gpu_lost{{{PH}}}) == 1)")], w=4, h=5,
              thresholds=[(None, "green"), (1, "red")]),
        Panel("GPU power now", "stat", [Query(f'SELECT sum("p") FROM (SELECT last("power_watts") AS p FROM "gpu" '
                                              f'{FH} GROUP BY "uuid")',
                                              promql=f"sum(aifactory_gpu_power_watts{{{PH}}})")],
              unit="watt", w=4, h=5),
        Panel("GPU energy, last 24 h", "stat", [Query(
            'SELECT sum("e") FROM (SELECT spread("energy_joules_total") AS e FROM "gpu" WHERE time > now() - 1d '
            'AND "site" =~ /^$site$/ AND "cluster" =~ /^$cluster$/ AND "rack" =~ /^$rack$/ AND "host" =~ /^$host$/ '
            'GROUP BY "uuid")', promql=f"sum(increase(aifactory_gpu_energy_joules_total{{{PH}}}[1d]))")],
            unit="joule", w=4, h=5, description="sum over GPUs of each energy counter's increase over 24 h"),
        Panel("Tokens per second", "stat", [Query(
            rate_sum("inference", "generation_tokens_total", FH),
            promql=f"sum(rate(aifactory_inference_generation_tokens_total{{{PH}}}[{RI}]))")],
              unit="short", w=4, h=5, description="generated tokens, rate of the counters"),
        Panel("Tokens per joule (node scope)", "stat", [Query(
            f'SELECT mean("generation_tokens_per_joule") FROM "efficiency" {FH} AND "scope" = \'node\'',
            promql=f'avg(aifactory_efficiency_generation_tokens_per_joule{{{PH},scope="node"}})')],
              unit="short", decimals=3, w=4, h=5),
        Panel("Firing alerts", "stat", [Query(f'SELECT count("f") FROM (SELECT last("firing") AS f FROM "alerts" '
                                              f'{FH} GROUP BY *) WHERE "f" = true',
                                              promql=f"count(aifactory_alerts_firing{{{PH}}} == 1)")], w=4, h=5,
              thresholds=[(None, "green"), (1, "red")]),
        Panel("GPU power by host", "timeseries", [Query(
            f'SELECT sum("p") FROM (SELECT mean("power_watts") AS p FROM "gpu" {FH} {T}, "host", "uuid") '
            f'WHERE $timeFilter {T}, "host" fill(none)', legend="$tag_host",
            promql=f"sum by (host) (aifactory_gpu_power_watts{{{PH}}})")], unit="watt", w=10, h=8, stack=True),
        Panel("Generated tokens per second by model", "timeseries", [Query(
            rate_sum("inference", "generation_tokens_total", FH, '"model"'), legend="$tag_model",
            promql=f"sum by (model) (rate(aifactory_inference_generation_tokens_total{{{PH}}}[{RI}]))")],
              unit="short", w=10, h=8, stack=True),
        Panel("Hottest GPUs", "table", [Query(
            f'SELECT top("t", "host", "gpu", 10) FROM (SELECT last("temperature_celsius") AS t FROM "gpu" {FH} '
            'GROUP BY "host", "gpu")', table=True,
            promql=f"topk(10, max by (host, gpu) (aifactory_gpu_temperature_celsius{{{PH}}}))")],
              unit="celsius", w=24, h=8),
        *gathered("fleet", sections)], _vars())


def gathered(board: str, sections: Iterable[Section]) -> list:
    """The panels collectors give this board, by their sections' order."""
    return [p for s in sorted((s for s in sections if s.board == board), key=lambda s: s.order) for p in s.panels]


def gpu_node(sections: Iterable[Section] = ()) -> Dashboard:
    return Dashboard("aifactory-gpu-node", "AI factory: GPU node",
                     "Per GPU: utilization, power, energy, temperatures, clocks, throttling, errors, processes.",
                     gathered("gpu-node", sections), _vars(with_gpu=True))


def power_cooling(sections: Iterable[Section] = ()) -> Dashboard:
    return Dashboard("aifactory-power-cooling", "AI factory: power and cooling",
                     "PDUs by rack and phase against their rating, UPS, cooling supply/return, environment; racks "
                     "against their nodes' meters; leak detectors and coolant from Redfish.",
                     gathered("power-cooling", sections), _vars()[:3])


def efficiency(sections: Iterable[Section] = ()) -> Dashboard:
    return Dashboard("aifactory-efficiency", "AI factory: facility efficiency",
                     "PUE from energy counters; IT, cooling and total power; tokens per joule at every scope; "
                     "joules per token; tokens per kWh; cost and carbon per million tokens.",
                     gathered("efficiency", sections),
                     [*_vars()[:3], Constant("price_per_kwh", "Price per kWh (USD)", "0.12"),
                      Constant("grid_g_per_kwh", "Grid intensity (g CO2/kWh)", "350")])


def node_energy(sections: Iterable[Section] = ()) -> Dashboard:
    return Dashboard("aifactory-node-energy", "AI factory: node energy",
                     "Where each node's watts go (GPUs, CPUs, the rest of the node) and its meters against each "
                     "other (racks against their nodes, leaks and coolant: the power and cooling board).",
                     gathered("node-energy", sections), _vars())


def alerts(sections: Iterable[Section] = ()) -> Dashboard:
    return Dashboard("aifactory-alerts", "AI factory: alerts", "Alerts evaluated by the agents on every node.", [
        Panel("Firing", "stat", [Query(f'SELECT count("f") FROM (SELECT last("firing") AS f FROM "alerts" {FH} '
                                       'GROUP BY *) WHERE "f" = true',
                                       promql=f"count(aifactory_alerts_firing{{{PH}}} == 1)")], w=6, h=5,
              thresholds=[(None, "green"), (1, "red")]),
        Panel("Alerts now", "table", [Query(
            f'SELECT last("state") AS "state", last("value") AS "value", last("active_seconds") AS "active" '
            f'FROM "alerts" {FH} GROUP BY "host", "alertname", "severity"', table=True,
            promql=f"max by (host, alertname, severity, state) (aifactory_alerts_state_info{{{PH}}})")],
              w=18, h=10),
        Panel("Firing over time", "state-timeline", [Query(
            f'SELECT last("firing") FROM "alerts" {FH} {T}, "host", "alertname" fill(previous)',
            legend="$tag_host $tag_alertname",
            promql=f"max by (host, alertname) (aifactory_alerts_firing{{{PH}}})")], w=24, h=10),
        *gathered("alerts", sections)], _vars())


def jobs(sections: Iterable[Section] = ()) -> Dashboard:
    return Dashboard("aifactory-jobs", "AI factory: jobs",
                     "GPU energy per Slurm job, pod, container or unit; GPUs held and idle; the energy nobody held.",
                     gathered("jobs", sections), _vars())


BOARDS = {"fleet": fleet, "gpu-node": gpu_node, "power-cooling": power_cooling, "efficiency": efficiency,
          "node-energy": node_energy, "jobs": jobs, "alerts": alerts}
