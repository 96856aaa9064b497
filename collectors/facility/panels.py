"""Panels on the facility families and PUE: whatever transport fed the pdu, ups, cooling, environment and leak
rows (SNMP, Redfish, a register meter), they are drawn alike."""

from __future__ import annotations

from agent.dashboards.model import F, P, Panel, Query, Section, T


def pue_over(span: str, window: str, description: str = "") -> Panel:
    """PUE from the facility's energy counters over the last `window` (InfluxQL and PromQL durations alike)."""
    return Panel(f"PUE, last {span} (energy)", "stat", [Query(
        'SELECT (last("total_energy_joules_total") - first("total_energy_joules_total")) / '
        '(last("it_energy_joules_total") - first("it_energy_joules_total")) FROM "facility" '
        f'WHERE time > now() - {window} AND "site" =~ /^$site$/ AND "cluster" =~ /^$cluster$/ '
        'AND "rack" =~ /^$rack$/ GROUP BY "site", "cluster", "host"',
        promql=f"sum by (site) (increase(aifactory_facility_total_energy_joules_total{{{P}}}[{window}])) / "
               f"sum by (site) (increase(aifactory_facility_it_energy_joules_total{{{P}}}[{window}]))")],
                 unit="none", decimals=3, w=6, h=5, thresholds=[(None, "green"), (1.4, "orange"), (1.6, "red")],
                 description=description)


SECTIONS = (
    Section("power-cooling", 10, (
        Panel("PDU power by rack", "timeseries", [Query(
            f'SELECT sum("p") FROM (SELECT mean("power_watts") AS p FROM "pdu" {F} AND "scope" = \'device\' '
            f'{T}, "site", "rack", "device") WHERE $timeFilter {T}, "site", "rack" fill(none)',
            legend="$tag_site $tag_rack",
            promql=f'sum by (site, rack) (aifactory_pdu_power_watts{{{P},scope="device"}})')],
              unit="watt", stack=True),
        Panel("Phase load against rating", "bargauge", [Query(
            f'SELECT last("rated_load_percent") FROM "pdu" {F} GROUP BY "device", "phase", "bank", "inlet"',
            legend="$tag_device $tag_phase$tag_bank$tag_inlet",
            promql=f"aifactory_pdu_rated_load_ratio{{{P}}} * 100")], unit="percent", min=0, max=100,
              thresholds=[(None, "green"), (80, "orange"), (90, "red")]),
        Panel("UPS load and battery", "timeseries", [
            Query(f'SELECT mean("output_load_percent") FROM "ups" {F} {T}, "device"', legend="load $tag_device",
                  promql=f"aifactory_ups_output_load_ratio{{{P}}} * 100"),
            Query(f'SELECT mean("battery_charge_percent") FROM "ups" {F} {T}, "device"',
                  legend="charge $tag_device", promql=f"aifactory_ups_battery_charge_ratio{{{P}}} * 100")],
              unit="percent"),
        Panel("UPS runtime", "stat", [Query(f'SELECT last("battery_runtime_seconds") FROM "ups" {F} GROUP BY '
                                            '"device"', legend="$tag_device",
                                            promql=f"aifactory_ups_battery_runtime_seconds{{{P}}}")], unit="s",
              thresholds=[(None, "red"), (600, "orange"), (1200, "green")]),
        Panel("Cooling supply and return air", "timeseries", [
            Query(f'SELECT mean("supply_air_temperature_celsius") FROM "cooling" {F} {T}, "device", "unit"',
                  legend="supply $tag_device $tag_unit",
                  promql=f"aifactory_cooling_supply_air_temperature_celsius{{{P}}}"),
            Query(f'SELECT mean("return_air_temperature_celsius") FROM "cooling" {F} {T}, "device", "unit"',
                  legend="return $tag_device $tag_unit",
                  promql=f"aifactory_cooling_return_air_temperature_celsius{{{P}}}")], unit="celsius",
              thresholds=[(None, "blue"), (18, "green"), (27, "red")]),
        Panel("Cooling output", "timeseries", [Query(
            f'SELECT mean("cooling_output_watts") FROM "cooling" {F} {T}, "device", "unit"',
            legend="$tag_device $tag_unit", promql=f"aifactory_cooling_cooling_output_watts{{{P}}}")], unit="watt"),
        Panel("Environment temperature by rack", "timeseries", [Query(
            f'SELECT mean("temperature_celsius") FROM "environment" {F} {T}, "site", "rack", "device", "sensor"',
            legend="$tag_site $tag_rack $tag_device $tag_sensor",
            promql=f"aifactory_environment_temperature_celsius{{{P}}}")], unit="celsius"),
        Panel("Environment humidity", "timeseries", [Query(
            f'SELECT mean("humidity_percent") FROM "environment" {F} {T}, "site", "rack", "device", "sensor"',
            legend="$tag_site $tag_rack $tag_device $tag_sensor",
            promql=f"aifactory_environment_humidity_ratio{{{P}}} * 100")], unit="humidity"),
    )),
    Section("power-cooling", 30, (
        Panel("Leak detectors", "state-timeline", [Query(
            f'SELECT last("leak_detected") FROM "leak" {F} {T}, "target", "device", "chassis", "detector" '
            'fill(previous)', legend="$tag_target$tag_device $tag_chassis $tag_detector",
            promql=f"aifactory_leak_leak_detected{{{P}}}")], unit="bool", w=24,
              thresholds=[(None, "green"), (1, "red")]),
        Panel("Coolant flow", "timeseries", [Query(
            f'SELECT mean("coolant_flow_litres_per_minute") FROM "cooling" {F} {T}, "target", "device", '
            '"connector" fill(none)', legend="$tag_target$tag_device $tag_connector",
            promql=f"aifactory_cooling_coolant_flow_litres_per_minute{{{P}}}")], unit="flowlpm",
              description="per coolant connector of each CDU (Redfish ThermalEquipment, Modbus)"),
        Panel("Coolant supply and return", "timeseries", [
            Query(f'SELECT mean("{f}") FROM "cooling" {F} {T}, "target", "device", "connector" fill(none)',
                  legend=f"{name} $tag_target$tag_device $tag_connector", promql=f"aifactory_cooling_{f}{{{P}}}")
            for f, name in (("coolant_supply_temperature_celsius", "supply"),
                            ("coolant_return_temperature_celsius", "return"))],
              unit="celsius"),
        Panel("Heat removed by the liquid loops", "timeseries", [Query(
            f'SELECT mean("heat_removed_watts") FROM "cooling" {F} {T}, "target", "device", "connector" '
            'fill(none)', legend="$tag_target$tag_device $tag_connector",
            promql=f"aifactory_cooling_heat_removed_watts{{{P}}}")], unit="watt",
              description="reported by the CDU, or flow x delta T x the coolant's heat capacity "
                          "(cooling.heat_removed_basis)"),
        Panel("CDU pump speed", "timeseries", [Query(
            f'SELECT mean("pump_speed_percent") FROM "cooling" {F} {T}, "device" fill(none)',
            legend="$tag_device", promql=f"aifactory_cooling_pump_speed_ratio{{{P}}} * 100")],
              unit="percent", min=0, max=100),
        Panel("Electricity meters", "timeseries", [Query(
            f'SELECT mean("power_watts") FROM "meter" {F} AND "scope" = \'device\' {T}, "role", "device" '
            'fill(none)', legend="$tag_role $tag_device",
            promql=f'aifactory_meter_power_watts{{{P},scope="device"}}')], unit="watt",
              description="utility, switchboard and sub-meters (Modbus, ...) by what they meter: facility_total, "
                          "it, cooling"),
    )),
    Section("efficiency", 10, (
        pue_over("24 h", "1d", "total facility energy / IT energy over 24 h (The Green Grid, ISO/IEC 30134-2); "
                 "one value per site and poller: first() and last() never mix two sites' counters"),
        pue_over("7 d", "7d"),
    )),
    Section("efficiency", 30, (
        Panel("PUE (instant and over the window)", "timeseries", [
            Query(f'SELECT mean("pue") FROM "facility" {F} {T}, "pue_kind" fill(none)', legend="instant $tag_pue_kind",
                  promql=f"avg by (pue_kind) (aifactory_facility_pue{{{P}}})"),
            Query(f'SELECT mean("pue_energy") FROM "facility" {F} {T} fill(none)', legend="energy window",
                  promql=f"avg(aifactory_facility_pue_energy{{{P}}})")],
              unit="none", decimals=3),
        Panel("IT, cooling and total power", "timeseries", [
            Query(f'SELECT mean("{f}") FROM "facility" {F} {T} fill(none)', legend=name,
                  promql=f"sum(aifactory_facility_{f}{{{P}}})")
            for f, name in (("it_power_watts", "IT"), ("cooling_power_watts", "cooling"),
                            ("total_power_watts", "total"))], unit="watt"),
    )),
)
