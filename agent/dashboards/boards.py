"""The dashboards, as code. Queries are InfluxQL (InfluxDB 1.x, 2.x v1 API, 3.x) over catalogue names only.

Grafana macros: $timeFilter and $__interval; variables are multi-value regexes (`=~ /^$host$/`).
Rates come from counters with non_negative_derivative over the same interval, never from sampled power.
"""

from __future__ import annotations

from .model import Constant, Dashboard, Panel, Query, Variable

F = 'WHERE $timeFilter AND "site" =~ /^$site$/ AND "cluster" =~ /^$cluster$/ AND "rack" =~ /^$rack$/'
FH = F + ' AND "host" =~ /^$host$/'
FG = FH + ' AND "gpu" =~ /^$gpu$/'
T = "GROUP BY time($__interval)"


def _vars(with_gpu: bool = False) -> list:
    out = [Variable("site", "Site", 'SHOW TAG VALUES FROM "agent" WITH KEY = "site"'),
           Variable("cluster", "Cluster", 'SHOW TAG VALUES FROM "agent" WITH KEY = "cluster"'),
           Variable("rack", "Rack", 'SHOW TAG VALUES FROM "agent" WITH KEY = "rack"'),
           Variable("host", "Host", 'SHOW TAG VALUES FROM "agent" WITH KEY = "host"')]
    if with_gpu:
        out.append(Variable("gpu", "GPU", 'SHOW TAG VALUES FROM "gpu" WITH KEY = "gpu" WHERE "host" =~ /^$host$/'))
    return out


def _rate_sum(meas: str, field: str, where: str, by: str = "") -> str:
    """Sum over series of a counter's per-second rate, each series' rate taken first."""
    inner = (f'SELECT non_negative_derivative(last("{field}"), 1s) AS r FROM "{meas}" {where} '
             f"{T}, *")
    return f'SELECT sum("r") FROM ({inner}) WHERE $timeFilter {T}{", " + by if by else ""} fill(none)'


def fleet() -> Dashboard:
    return Dashboard("aifactory-fleet", "AI factory: fleet overview",
                     "GPUs by state, power, energy, tokens and efficiency, alerts, hottest GPUs.", [
        Panel("GPUs reporting", "stat", [Query(f'SELECT count("p") FROM (SELECT last("power_watts") AS p '
                                               f'FROM "gpu" {FH} GROUP BY "uuid")')], unit="none", w=4, h=5),
        Panel("GPUs lost", "stat", [Query(f'SELECT count("l") FROM (SELECT last("lost") AS l FROM "gpu" {FH} '
                                          'GROUP BY "uuid") WHERE "l" = true')], w=4, h=5,
              thresholds=[(None, "green"), (1, "red")]),
        Panel("GPU power now", "stat", [Query(f'SELECT sum("p") FROM (SELECT last("power_watts") AS p FROM "gpu" '
                                              f'{FH} GROUP BY "uuid")')], unit="watt", w=4, h=5),
        Panel("GPU energy, last 24 h", "stat", [Query(
            'SELECT sum("e") FROM (SELECT spread("energy_joules_total") AS e FROM "gpu" WHERE time > now() - 1d '
            'AND "site" =~ /^$site$/ AND "cluster" =~ /^$cluster$/ AND "rack" =~ /^$rack$/ AND "host" =~ /^$host$/ '
            'GROUP BY "uuid")')],
            unit="joule", w=4, h=5, description="sum over GPUs of each energy counter's increase over 24 h"),
        Panel("Tokens per second", "stat", [Query(_rate_sum("inference", "generation_tokens_total", FH))],
              unit="short", w=4, h=5, description="generated tokens, rate of the counters"),
        Panel("Tokens per joule (node scope)", "stat", [Query(
            f'SELECT mean("generation_tokens_per_joule") FROM "efficiency" {FH} AND "scope" = \'node\'')],
              unit="short", decimals=3, w=4, h=5),
        Panel("Firing alerts", "stat", [Query(f'SELECT count("f") FROM (SELECT last("firing") AS f FROM "alerts" '
                                              f'{FH} GROUP BY *) WHERE "f" = true')], w=4, h=5,
              thresholds=[(None, "green"), (1, "red")]),
        Panel("GPU power by host", "timeseries", [Query(
            f'SELECT sum("p") FROM (SELECT mean("power_watts") AS p FROM "gpu" {FH} {T}, "host", "uuid") '
            f'WHERE $timeFilter {T}, "host" fill(none)', legend="$tag_host")], unit="watt", w=10, h=8, stack=True),
        Panel("Generated tokens per second by model", "timeseries", [Query(
            _rate_sum("inference", "generation_tokens_total", FH, '"model"'), legend="$tag_model")],
              unit="short", w=10, h=8, stack=True),
        Panel("Hottest GPUs", "table", [Query(
            f'SELECT top("t", "host", "gpu", 10) FROM (SELECT last("temperature_celsius") AS t FROM "gpu" {FH} '
            'GROUP BY "host", "gpu")', table=True)], unit="celsius", w=24, h=8),
    ], _vars())


def gpu_node() -> Dashboard:
    def ts(title, field, unit, **kw):
        return Panel(title, "timeseries", [Query(f'SELECT mean("{field}") FROM "gpu" {FG} {T}, "host", "gpu" '
                                                 'fill(none)', legend="$tag_host gpu $tag_gpu")], unit=unit, **kw)

    return Dashboard("aifactory-gpu-node", "AI factory: GPU node",
                     "Per GPU: utilization, power, energy, temperatures, clocks, throttling, errors, processes.", [
        ts("Utilization", "utilization_percent", "percent", min=0, max=100),
        ts("Power", "power_watts", "watt"),
        Panel("Energy per interval", "timeseries", [Query(
            f'SELECT non_negative_difference(last("energy_joules_total")) FROM "gpu" {FG} {T}, "host", "gpu"',
            legend="$tag_host gpu $tag_gpu")], unit="joule"),
        ts("GPU temperature", "temperature_celsius", "celsius", thresholds=[(None, "green"), (80, "orange"),
                                                                            (87, "red")]),
        ts("HBM temperature", "memory_temperature_celsius", "celsius"),
        ts("SM clock", "sm_clock_hertz", "hertz"),
        Panel("Throttling (share of time)", "timeseries", [
            Query(f'SELECT non_negative_derivative(last("{f}"), 1s) FROM "gpu" {FG} {T}, "host", "gpu"',
                  legend=f"{name} $tag_host gpu $tag_gpu")
            for f, name in (("throttle_power_cap_seconds_total", "power cap"),
                            ("throttle_power_brake_seconds_total", "power brake"),
                            ("throttle_hw_thermal_seconds_total", "HW thermal"),
                            ("throttle_sw_thermal_seconds_total", "SW thermal"))], unit="percentunit", max=1),
        Panel("Throttle reasons now active", "state-timeline", [
            Query(f'SELECT last("{f}") FROM "gpu" {FG} {T}, "host", "gpu" fill(previous)',
                  legend=f"{name} $tag_host gpu $tag_gpu")
            for f, name in (("throttle_power_cap", "power cap"), ("throttle_power_brake", "power brake"),
                            ("throttle_hw_slowdown", "HW slowdown"), ("throttle_thermal", "thermal"))],
              unit="bool", w=24),
        Panel("XID and ECC errors", "timeseries", [
            Query(f'SELECT non_negative_difference(last("{f}")) FROM "gpu" {FG} {T}, "host", "gpu"',
                  legend=f"{name} $tag_host gpu $tag_gpu")
            for f, name in (("xid_errors_total", "XID"), ("ecc_uncorrected_volatile_total", "ECC uncorrected"))],
              unit="short"),
        Panel("Processes by GPU memory", "table", [Query(
            f'SELECT last("memory_used_bytes") AS "memory", last("sm_utilization_percent") AS "sm" '
            f'FROM "gpu_process" {FG} GROUP BY "host", "gpu", "pid", "process", "container", "slurm_job", "pod"',
            table=True)], unit="bytes", w=24),
    ], _vars(with_gpu=True))


def power_cooling() -> Dashboard:
    return Dashboard("aifactory-power-cooling", "AI factory: power and cooling",
                     "PDUs by rack and phase against their rating, UPS, cooling supply/return, environment; racks "
                     "against their nodes' meters; leak detectors and coolant from Redfish.", [
        Panel("PDU power by rack", "timeseries", [Query(
            f'SELECT sum("p") FROM (SELECT mean("power_watts") AS p FROM "pdu" {F} AND "scope" = \'device\' '
            f'{T}, "site", "rack", "device") WHERE $timeFilter {T}, "site", "rack" fill(none)',
            legend="$tag_site $tag_rack")],
              unit="watt", stack=True),
        Panel("Phase load against rating", "bargauge", [Query(
            f'SELECT last("rated_load_percent") FROM "pdu" {F} GROUP BY "device", "phase", "bank", "inlet"',
            legend="$tag_device $tag_phase$tag_bank$tag_inlet")], unit="percent", min=0, max=100,
              thresholds=[(None, "green"), (80, "orange"), (90, "red")]),
        Panel("UPS load and battery", "timeseries", [
            Query(f'SELECT mean("output_load_percent") FROM "ups" {F} {T}, "device"', legend="load $tag_device"),
            Query(f'SELECT mean("battery_charge_percent") FROM "ups" {F} {T}, "device"',
                  legend="charge $tag_device")], unit="percent"),
        Panel("UPS runtime", "stat", [Query(f'SELECT last("battery_runtime_seconds") FROM "ups" {F} GROUP BY '
                                            '"device"', legend="$tag_device")], unit="s",
              thresholds=[(None, "red"), (600, "orange"), (1200, "green")]),
        Panel("Cooling supply and return air", "timeseries", [
            Query(f'SELECT mean("supply_air_temperature_celsius") FROM "cooling" {F} {T}, "device", "unit"',
                  legend="supply $tag_device $tag_unit"),
            Query(f'SELECT mean("return_air_temperature_celsius") FROM "cooling" {F} {T}, "device", "unit"',
                  legend="return $tag_device $tag_unit")], unit="celsius",
              thresholds=[(None, "blue"), (18, "green"), (27, "red")]),
        Panel("Cooling output", "timeseries", [Query(
            f'SELECT mean("cooling_output_watts") FROM "cooling" {F} {T}, "device", "unit"',
            legend="$tag_device $tag_unit")], unit="watt"),
        Panel("Environment temperature by rack", "timeseries", [Query(
            f'SELECT mean("temperature_celsius") FROM "environment" {F} {T}, "site", "rack", "device", "sensor"',
            legend="$tag_site $tag_rack $tag_device $tag_sensor")], unit="celsius"),
        Panel("Environment humidity", "timeseries", [Query(
            f'SELECT mean("humidity_percent") FROM "environment" {F} {T}, "site", "rack", "device", "sensor"',
            legend="$tag_site $tag_rack $tag_device $tag_sensor")], unit="humidity"),
        Panel("Racks: PDU against the sum of their node meters", "timeseries", [
            Query(f'SELECT mean("meter_watts") FROM "energy_balance" {F} AND "scope" = \'rack\' {T}, "site", '
                  '"rack" fill(none)', legend="PDU $tag_site $tag_rack"),
            Query(f'SELECT mean("components_watts") FROM "energy_balance" {F} AND "scope" = \'rack\' {T}, "site", '
                  '"rack" fill(none)', legend="nodes $tag_site $tag_rack")], unit="watt",
              description="the poller's rack balance: what the rack PDU measured against what its nodes' own "
                          "meters measured over the same grid windows"),
        Panel("Nodes metered by GPUs + CPUs only", "stat", [Query(
            f'SELECT last("partial_nodes") FROM "energy_balance" {F} AND "scope" = \'rack\' GROUP BY "site", '
            '"rack"', legend="$tag_site $tag_rack")], unit="none", thresholds=[(None, "green"), (1, "orange")],
              description="their rest of node is left out of their tokens per joule (tag partial=true)"),
        Panel("Leak detectors", "state-timeline", [Query(
            f'SELECT last("leak_detected") FROM "leak" {F} {T}, "target", "chassis", "detector" '
            'fill(previous)', legend="$tag_target $tag_chassis $tag_detector")], unit="bool", w=24,
              thresholds=[(None, "green"), (1, "red")]),
        Panel("Coolant flow", "timeseries", [Query(
            f'SELECT mean("coolant_flow_litres_per_minute") FROM "cooling" {F} {T}, "target", "connector" '
            'fill(none)', legend="$tag_target $tag_connector")], unit="flowlpm",
              description="per coolant connector of each CDU (Redfish ThermalEquipment)"),
        Panel("Coolant supply and return", "timeseries", [
            Query(f'SELECT mean("{f}") FROM "cooling" {F} {T}, "target", "connector" fill(none)',
                  legend=f"{name} $tag_target $tag_connector")
            for f, name in (("coolant_supply_temperature_celsius", "supply"),
                            ("coolant_return_temperature_celsius", "return"))],
              unit="celsius"),
    ], _vars()[:3])


def efficiency() -> Dashboard:
    scope = 'SELECT mean("{f}") FROM "efficiency" ' + F + ' AND "scope" = \'{s}\' ' + T + ', {by} fill(none)'
    return Dashboard("aifactory-efficiency", "AI factory: facility efficiency",
                     "PUE from energy counters; IT, cooling and total power; tokens per joule at every scope; "
                     "joules per token; tokens per kWh; cost and carbon per million tokens.", [
        Panel("PUE, last 24 h (energy)", "stat", [Query(
            'SELECT (last("total_energy_joules_total") - first("total_energy_joules_total")) / '
            '(last("it_energy_joules_total") - first("it_energy_joules_total")) FROM "facility" '
            'WHERE time > now() - 1d AND "site" =~ /^$site$/ AND "cluster" =~ /^$cluster$/ '
            'AND "rack" =~ /^$rack$/ GROUP BY "site", "cluster", "host"')], unit="none", decimals=3, w=6, h=5,
              thresholds=[(None, "green"), (1.4, "orange"), (1.6, "red")],
              description="total facility energy / IT energy over 24 h (The Green Grid, ISO/IEC 30134-2); one value "
                          "per site and poller: first() and last() never mix two sites' counters"),
        Panel("PUE, last 7 d (energy)", "stat", [Query(
            'SELECT (last("total_energy_joules_total") - first("total_energy_joules_total")) / '
            '(last("it_energy_joules_total") - first("it_energy_joules_total")) FROM "facility" '
            'WHERE time > now() - 7d AND "site" =~ /^$site$/ AND "cluster" =~ /^$cluster$/ '
            'AND "rack" =~ /^$rack$/ GROUP BY "site", "cluster", "host"')], unit="none", decimals=3, w=6, h=5,
              thresholds=[(None, "green"), (1.4, "orange"), (1.6, "red")]),
        Panel("Tokens per kWh (facility)", "stat", [Query(
            f'SELECT mean("tokens_per_joule") * 3600000 FROM "efficiency" {F} AND "scope" = \'facility\'')],
              unit="short", w=4, h=5),
        Panel("Cost per million tokens", "stat", [Query(
            f'SELECT mean("joules_per_token") * $price_per_kwh / 3.6 FROM "efficiency" {F} '
            'AND "scope" = \'facility\'')], unit="currencyUSD", decimals=3, w=4, h=5,
              description="facility joules per token x price per kWh (variable) x 1e6 / 3.6e6"),
        Panel("Carbon per million tokens", "stat", [Query(
            f'SELECT mean("joules_per_token") * $grid_g_per_kwh / 3600 FROM "efficiency" {F} '
            'AND "scope" = \'facility\'')], unit="masskg", decimals=3, w=4, h=5,
              description="facility joules per token x grid intensity g CO2/kWh (variable) x 1e6 / 3.6e6 / 1000"),
        Panel("PUE (instant and over the window)", "timeseries", [
            Query(f'SELECT mean("pue") FROM "facility" {F} {T}, "pue_kind" fill(none)', legend="instant $tag_pue_kind"),
            Query(f'SELECT mean("pue_energy") FROM "facility" {F} {T} fill(none)', legend="energy window")],
              unit="none", decimals=3),
        Panel("IT, cooling and total power", "timeseries", [
            Query(f'SELECT mean("{f}") FROM "facility" {F} {T} fill(none)', legend=name)
            for f, name in (("it_power_watts", "IT"), ("cooling_power_watts", "cooling"),
                            ("total_power_watts", "total"))], unit="watt"),
        Panel("Tokens per joule by scope", "timeseries", [
            Query(scope.format(f="tokens_per_joule", s=s, by=by), legend=f"{s} {leg}")
            for s, by, leg in (("gpu", '"host", "gpu"', "$tag_host $tag_gpu"), ("node", '"host"', "$tag_host"),
                               ("rack", '"site", "rack"', "$tag_site $tag_rack"), ("facility", '"site"', ""))],
              unit="short", decimals=3, w=24,
              description="tokens per joule = tokens per second per watt, from counter deltas over one window"),
        Panel("Joules per generated token, by model", "timeseries", [Query(
            scope.format(f="generation_joules_per_token", s="model", by='"host", "model"'),
            legend="$tag_host $tag_model")], unit="joule", decimals=2),
        Panel("Generated tokens per second, by model", "timeseries", [Query(
            scope.format(f="generation_tokens_per_second", s="model", by='"host", "model"'),
            legend="$tag_host $tag_model")], unit="short"),
    ], [*_vars()[:3], Constant("price_per_kwh", "Price per kWh (USD)", "0.12"),
        Constant("grid_g_per_kwh", "Grid intensity (g CO2/kWh)", "350")])


def node_energy() -> Dashboard:
    node = 'SELECT mean("{f}") FROM "energy_balance" ' + FH + ' AND "scope" = \'node\' ' + T + ', "host" fill(none)'
    return Dashboard("aifactory-node-energy", "AI factory: node energy",
                     "Where each node's watts go (GPUs, CPUs, the rest of the node) and its meters against each "
                     "other (racks against their nodes, leaks and coolant: the power and cooling board).", [
        Panel("Where the node's watts go", "timeseries", [
            Query(f'SELECT mean("gpu_energy_joules") / mean("window_seconds") FROM "energy_balance" {FH} '
                  f'AND "scope" = \'node\' {T}, "host" fill(none)', legend="GPUs $tag_host"),
            Query(f'SELECT mean("cpu_energy_joules") / mean("window_seconds") FROM "energy_balance" {FH} '
                  f'AND "scope" = \'node\' {T}, "host" fill(none)', legend="CPUs $tag_host"),
            Query(node.format(f="residual_watts"), legend="rest of node $tag_host")],
              unit="watt", stack=True, w=24,
              description="GPUs (NVML) and CPU packages (RAPL) over each window; the rest is the node meter minus "
                          "both: fans, NICs, drives, memory outside RAPL, PSU losses"),
        Panel("Node meter against its components", "timeseries", [
            Query(node.format(f="meter_watts"), legend="meter $tag_host"),
            Query(node.format(f="components_watts"), legend="GPUs + CPUs $tag_host")], unit="watt",
              description="energy_balance: the node meter chosen by efficiency.node_meter (outlet, PSU input, "
                          "chassis) against the sum of its components over the same window"),
        Panel("Rest of node, percent of the meter", "timeseries", [Query(node.format(f="residual_percent"),
                                                                          legend="$tag_host")],
              unit="percent", thresholds=[(None, "red"), (0, "orange"), (5, "green"), (45, "orange")],
              description="below 0: the components measure more than the meter, one of them is wrong"),
        Panel("Meters of one node against each other", "timeseries", [
            Query(f'SELECT sum("p") FROM (SELECT mean("power_watts") AS p FROM "bmc_power" {FH} '
                  f'AND "source" = \'redfish\' AND "scope" = \'psu_input\' AND "chassis_role" = \'node\' '
                  f'{T}, "host", "target", "component") '
                  f'WHERE $timeFilter {T}, "host", "target" fill(none)', legend="BMC PSU input $tag_host"),
            Query(f'SELECT mean("power_watts") FROM "bmc_power" {FH} AND "source" = \'redfish\' '
                  f'AND "scope" = \'chassis\' AND "chassis_role" = \'node\' AND "component" = \'chassis\' '
                  f'{T}, "host", "target" fill(none)',
                  legend="BMC chassis $tag_host"),
            Query(f'SELECT mean("power_watts") FROM "bmc_power" {FH} AND "source" = \'dcmi\' {T}, "host", '
                  '"target" fill(none)', legend="DCMI $tag_host"),
            Query(node.format(f="components_watts"), legend="GPUs + CPUs $tag_host")], unit="watt", w=24,
              description="each source says its scope: PSU input is the wall, chassis is the BMC's own figure, "
                          "DCMI a rolling average (docs/energy.md)"),
    ], _vars())


def alerts() -> Dashboard:
    return Dashboard("aifactory-alerts", "AI factory: alerts", "Alerts evaluated by the agents on every node.", [
        Panel("Firing", "stat", [Query(f'SELECT count("f") FROM (SELECT last("firing") AS f FROM "alerts" {FH} '
                                       'GROUP BY *) WHERE "f" = true')], w=6, h=5,
              thresholds=[(None, "green"), (1, "red")]),
        Panel("Alerts now", "table", [Query(
            f'SELECT last("state") AS "state", last("value") AS "value", last("active_seconds") AS "active" '
            f'FROM "alerts" {FH} GROUP BY "host", "alertname", "severity"', table=True)], w=18, h=10),
        Panel("Firing over time", "state-timeline", [Query(
            f'SELECT last("firing") FROM "alerts" {FH} {T}, "host", "alertname" fill(previous)',
            legend="$tag_host $tag_alertname")], w=24, h=10),
    ], _vars())


BOARDS = {"fleet": fleet, "gpu-node": gpu_node, "power-cooling": power_cooling, "efficiency": efficiency,
          "node-energy": node_energy, "alerts": alerts}
