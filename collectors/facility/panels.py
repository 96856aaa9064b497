"""Panels on the facility families and PUE: whatever transport fed the pdu, ups, cooling, environment and leak
rows (SNMP, Redfish, a register meter), they are drawn alike."""

from __future__ import annotations

from agent.dashboards.model import F, Panel, Query, Section, T

SECTIONS = (
    Section("power-cooling", 10, (
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
    )),
    Section("power-cooling", 30, (
        Panel("Leak detectors", "state-timeline", [Query(
            f'SELECT last("leak_detected") FROM "leak" {F} {T}, "target", "device", "chassis", "detector" '
            'fill(previous)', legend="$tag_target$tag_device $tag_chassis $tag_detector")], unit="bool", w=24,
              thresholds=[(None, "green"), (1, "red")]),
        Panel("Coolant flow", "timeseries", [Query(
            f'SELECT mean("coolant_flow_litres_per_minute") FROM "cooling" {F} {T}, "target", "device", '
            '"connector" fill(none)', legend="$tag_target$tag_device $tag_connector")], unit="flowlpm",
              description="per coolant connector of each CDU (Redfish ThermalEquipment, Modbus)"),
        Panel("Coolant supply and return", "timeseries", [
            Query(f'SELECT mean("{f}") FROM "cooling" {F} {T}, "target", "device", "connector" fill(none)',
                  legend=f"{name} $tag_target$tag_device $tag_connector")
            for f, name in (("coolant_supply_temperature_celsius", "supply"),
                            ("coolant_return_temperature_celsius", "return"))],
              unit="celsius"),
        Panel("Heat removed by the liquid loops", "timeseries", [Query(
            f'SELECT mean("heat_removed_watts") FROM "cooling" {F} {T}, "target", "device", "connector" '
            'fill(none)', legend="$tag_target$tag_device $tag_connector")], unit="watt",
              description="reported by the CDU, or flow x delta T x the coolant's heat capacity "
                          "(cooling.heat_removed_basis)"),
        Panel("CDU pump speed", "timeseries", [Query(
            f'SELECT mean("pump_speed_percent") FROM "cooling" {F} {T}, "device" fill(none)',
            legend="$tag_device")], unit="percent", min=0, max=100),
        Panel("Electricity meters", "timeseries", [Query(
            f'SELECT mean("power_watts") FROM "meter" {F} AND "scope" = \'device\' {T}, "role", "device" '
            'fill(none)', legend="$tag_role $tag_device")], unit="watt",
              description="utility, switchboard and sub-meters (Modbus, ...) by what they meter: facility_total, "
                          "it, cooling"),
    )),
    Section("efficiency", 10, (
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
    )),
    Section("efficiency", 30, (
        Panel("PUE (instant and over the window)", "timeseries", [
            Query(f'SELECT mean("pue") FROM "facility" {F} {T}, "pue_kind" fill(none)', legend="instant $tag_pue_kind"),
            Query(f'SELECT mean("pue_energy") FROM "facility" {F} {T} fill(none)', legend="energy window")],
              unit="none", decimals=3),
        Panel("IT, cooling and total power", "timeseries", [
            Query(f'SELECT mean("{f}") FROM "facility" {F} {T} fill(none)', legend=name)
            for f, name in (("it_power_watts", "IT"), ("cooling_power_watts", "cooling"),
                            ("total_power_watts", "total"))], unit="watt"),
    )),
)
