"""The efficiency collector's panels: rack balances, tokens per joule at every scope, the node's energy."""

from __future__ import annotations

from agent.dashboards.model import FH, PH, F, P, Panel, Query, Section, T

SCOPE = 'SELECT mean("{f}") FROM "efficiency" ' + F + ' AND "scope" = \'{s}\' ' + T + ', {by} fill(none)'
NODE = 'SELECT mean("{f}") FROM "energy_balance" ' + FH + ' AND "scope" = \'node\' ' + T + ', "host" fill(none)'


def eb(field: str, scope: str = "node", sel: str = PH) -> str:
    """An energy_balance field's Prometheus series under the board's selection."""
    return f'aifactory_energy_balance_{field}{{{sel},scope="{scope}"}}'


def eff(field: str, scope: str) -> str:
    return f'aifactory_efficiency_{field}{{{P},scope="{scope}"}}'

SECTIONS = (
    Section("power-cooling", 20, (
        Panel("Racks: PDU against the sum of their node meters", "timeseries", [
            Query(f'SELECT mean("meter_watts") FROM "energy_balance" {F} AND "scope" = \'rack\' {T}, "site", '
                  '"rack" fill(none)', legend="PDU $tag_site $tag_rack", promql=eb("meter_watts", "rack", P)),
            Query(f'SELECT mean("components_watts") FROM "energy_balance" {F} AND "scope" = \'rack\' {T}, "site", '
                  '"rack" fill(none)', legend="nodes $tag_site $tag_rack", promql=eb("components_watts", "rack", P))],
              unit="watt",
              description="the poller's rack balance: what the rack PDU measured against what its nodes' own "
                          "meters measured over the same grid windows"),
        Panel("Nodes metered by GPUs + CPUs only", "stat", [Query(
            f'SELECT last("partial_nodes") FROM "energy_balance" {F} AND "scope" = \'rack\' GROUP BY "site", '
            '"rack"', legend="$tag_site $tag_rack", promql=eb("partial_nodes", "rack", P))], unit="none",
              thresholds=[(None, "green"), (1, "orange")],
              description="their rest of node is left out of their tokens per joule (tag partial=true)"),
    )),
    Section("efficiency", 20, (
        Panel("Tokens per kWh (facility)", "stat", [Query(
            f'SELECT mean("tokens_per_joule") * 3600000 FROM "efficiency" {F} AND "scope" = \'facility\'',
            promql=f"avg({eff('tokens_per_joule', 'facility')}) * 3600000")],
              unit="short", w=4, h=5),
        Panel("Cost per million tokens", "stat", [Query(
            f'SELECT mean("joules_per_token") * $price_per_kwh / 3.6 FROM "efficiency" {F} '
            'AND "scope" = \'facility\'',
            promql=f"avg({eff('joules_per_token', 'facility')}) * $price_per_kwh / 3.6")],
              unit="currencyUSD", decimals=3, w=4, h=5,
              description="facility joules per token x price per kWh (variable) x 1e6 / 3.6e6"),
        Panel("Carbon per million tokens", "stat", [Query(
            f'SELECT mean("joules_per_token") * $grid_g_per_kwh / 3600 FROM "efficiency" {F} '
            'AND "scope" = \'facility\'',
            promql=f"avg({eff('joules_per_token', 'facility')}) * $grid_g_per_kwh / 3600")],
              unit="masskg", decimals=3, w=4, h=5,
              description="facility joules per token x grid intensity g CO2/kWh (variable) x 1e6 / 3.6e6 / 1000"),
    )),
    Section("efficiency", 40, (
        Panel("Tokens per joule by scope", "timeseries", [
            Query(SCOPE.format(f="tokens_per_joule", s=s, by=by), legend=f"{s} {leg}",
                  promql=eff("tokens_per_joule", s))
            for s, by, leg in (("gpu", '"host", "gpu"', "$tag_host $tag_gpu"), ("node", '"host"', "$tag_host"),
                               ("rack", '"site", "rack"', "$tag_site $tag_rack"), ("facility", '"site"', ""))],
              unit="short", decimals=3, w=24,
              description="tokens per joule = tokens per second per watt, from counter deltas over one window"),
        Panel("Joules per generated token, by model", "timeseries", [Query(
            SCOPE.format(f="generation_joules_per_token", s="model", by='"host", "model"'),
            legend="$tag_host $tag_model", promql=eff("generation_joules_per_token", "model"))],
              unit="joule", decimals=2),
        Panel("Generated tokens per second, by model", "timeseries", [Query(
            SCOPE.format(f="generation_tokens_per_second", s="model", by='"host", "model"'),
            legend="$tag_host $tag_model", promql=eff("generation_tokens_per_second", "model"))], unit="short"),
    )),
    Section("node-energy", 10, (
        Panel("Where the node's watts go", "timeseries", [
            Query(f'SELECT mean("gpu_energy_joules") / mean("window_seconds") FROM "energy_balance" {FH} '
                  f'AND "scope" = \'node\' {T}, "host" fill(none)', legend="GPUs $tag_host",
                  promql=f"{eb('gpu_energy_joules')} / ignoring() {eb('window_seconds')}"),
            Query(f'SELECT mean("cpu_energy_joules") / mean("window_seconds") FROM "energy_balance" {FH} '
                  f'AND "scope" = \'node\' {T}, "host" fill(none)', legend="CPUs $tag_host",
                  promql=f"{eb('cpu_energy_joules')} / ignoring() {eb('window_seconds')}"),
            Query(NODE.format(f="residual_watts"), legend="rest of node $tag_host", promql=eb("residual_watts"))],
              unit="watt", stack=True, w=24,
              description="GPUs (NVML) and CPU packages (RAPL) over each window; the rest is the node meter minus "
                          "both: fans, NICs, drives, memory outside RAPL, PSU losses"),
        Panel("Node meter against its components", "timeseries", [
            Query(NODE.format(f="meter_watts"), legend="meter $tag_host", promql=eb("meter_watts")),
            Query(NODE.format(f="components_watts"), legend="GPUs + CPUs $tag_host", promql=eb("components_watts"))],
              unit="watt",
              description="energy_balance: the node meter chosen by efficiency.node_meter (outlet, PSU input, "
                          "chassis) against the sum of its components over the same window"),
        Panel("Rest of node, percent of the meter", "timeseries", [Query(NODE.format(f="residual_percent"),
                                                                          legend="$tag_host",
                                                                          promql=f"{eb('residual_ratio')} * 100")],
              unit="percent", thresholds=[(None, "red"), (0, "orange"), (5, "green"), (45, "orange")],
              description="below 0: the components measure more than the meter, one of them is wrong"),
        Panel("Meters of one node against each other", "timeseries", [
            Query(f'SELECT sum("p") FROM (SELECT mean("power_watts") AS p FROM "bmc_power" {FH} '
                  f'AND "source" = \'redfish\' AND "scope" = \'psu_input\' AND "chassis_role" = \'node\' '
                  f'{T}, "host", "target", "component") '
                  f'WHERE $timeFilter {T}, "host", "target" fill(none)', legend="BMC PSU input $tag_host",
                  promql=f'sum by (host, target) (aifactory_bmc_power_power_watts{{{PH},source="redfish",'
                         f'scope="psu_input",chassis_role="node"}})'),
            Query(f'SELECT mean("power_watts") FROM "bmc_power" {FH} AND "source" = \'redfish\' '
                  f'AND "scope" = \'chassis\' AND "chassis_role" = \'node\' AND "component" = \'chassis\' '
                  f'{T}, "host", "target" fill(none)',
                  legend="BMC chassis $tag_host",
                  promql=f'aifactory_bmc_power_power_watts{{{PH},source="redfish",scope="chassis",'
                         f'chassis_role="node",component="chassis"}}'),
            Query(f'SELECT mean("power_watts") FROM "bmc_power" {FH} AND "source" = \'dcmi\' {T}, "host", '
                  '"target" fill(none)', legend="DCMI $tag_host",
                  promql=f'aifactory_bmc_power_power_watts{{{PH},source="dcmi"}}'),
            Query(NODE.format(f="components_watts"), legend="GPUs + CPUs $tag_host", promql=eb("components_watts"))],
              unit="watt", w=24,
              description="each source says its scope: PSU input is the wall, chassis is the BMC's own figure, "
                          "DCMI a rolling average (docs/energy.md)"),
    )),
)
