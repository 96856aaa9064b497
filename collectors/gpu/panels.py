"""The gpu collector's panels: the GPU node board, per GPU."""

from __future__ import annotations

from agent.dashboards.model import FG, FH, PG, PH, RI, Panel, Query, Section, T


def ts(title, field, unit, promql, **kw):
    return Panel(title, "timeseries", [Query(f'SELECT mean("{field}") FROM "gpu" {FG} {T}, "host", "gpu" '
                                             'fill(none)', legend="$tag_host gpu $tag_gpu", promql=promql)],
                 unit=unit, **kw)


def gpu(name: str) -> str:
    """A gpu measurement's Prometheus series under the board's selection."""
    return f"aifactory_gpu_{name}{{{PG}}}"


def per_interval(series: str) -> str:
    """A counter's growth over each of Grafana's intervals, as InfluxQL's non_negative_difference per bucket:
    the last sample at each step less the last one an interval before. increase() over [$__interval] would need
    two samples inside every window, which an interval as short as the collection interval does not hold."""
    return f"clamp_min({series} - {series} offset $__interval, 0)"


SECTIONS = (Section("gpu-node", 10, (
        ts("Utilization", "utilization_percent", "percent", f"{gpu('utilization_ratio')} * 100", min=0, max=100),
        ts("Power", "power_watts", "watt", gpu("power_watts")),
        Panel("SM, tensor and DRAM activity (GPM)", "timeseries", [
            Query(f'SELECT mean("{f}") FROM "gpu" {FG} {T}, "host", "gpu" fill(none)',
                  legend=f"{name} $tag_host gpu $tag_gpu", promql=f"{gpu(f[:-len('_percent')] + '_ratio')} * 100")
            for f, name in (("sm_active_percent", "SM active"), ("tensor_active_percent", "tensor active"),
                            ("dram_active_percent", "DRAM active"))], unit="percent", min=0, max=100, w=24,
              description="how busy a GPU really is where utilization says 100%: a stalled job keeps utilization "
                          "high with its tensor pipes idle (GPM, Hopper+; dcgm-exporter's PROF fields)"),
        Panel("Power band: sampled min, mean and max", "timeseries", [
            Query(f'SELECT {agg}("power_{f}_watts") FROM "gpu" {FG} {T}, "host", "gpu" fill(none)',
                  legend=f"{f} $tag_host gpu $tag_gpu",
                  promql=f"{prom}_over_time({gpu(f'power_{f}_watts')}[{RI}])")
            for f, agg, prom in (("min", "min", "min"), ("mean", "mean", "avg"), ("max", "max", "max"))],
              unit="watt",
              description="the fast power sampler (collectors.gpu power_sampling): the band between each "
                          "interval's lowest and highest instant power, which the 1-s average hides"),
        Panel("Node GPU power swing (sampled)", "timeseries", [
            Query(f'SELECT max("{f}") FROM "gpu_node" {FH} {T}, "host" fill(none)', legend=f"{name} $tag_host",
                  promql=f"max_over_time(aifactory_gpu_node_{f}{{{PH}}}[{RI}])")
            for f, name in (("power_swing_watts", "swing"), ("power_step_max_watts", "largest step"))],
              unit="watt", description="the node's GPUs summed at the same instants: what its PDU and the "
                                       "rack's breakers see; node rows add up to a rack's synchronous swing"),
        Panel("Energy per interval", "timeseries", [Query(
            f'SELECT non_negative_difference(last("energy_joules_total")) FROM "gpu" {FG} {T}, "host", "gpu"',
            legend="$tag_host gpu $tag_gpu", promql=per_interval(gpu("energy_joules_total")))],
              unit="joule"),
        ts("GPU temperature", "temperature_celsius", "celsius", gpu("temperature_celsius"),
           thresholds=[(None, "green"), (80, "orange"), (87, "red")]),
        ts("HBM temperature", "memory_temperature_celsius", "celsius", gpu("memory_temperature_celsius")),
        ts("SM clock", "sm_clock_hertz", "hertz", gpu("sm_clock_hertz")),
        Panel("Throttling (share of time)", "timeseries", [
            Query(f'SELECT non_negative_derivative(last("{f}"), 1s) FROM "gpu" {FG} {T}, "host", "gpu"',
                  legend=f"{name} $tag_host gpu $tag_gpu", promql=f"rate({gpu(f)}[{RI}])")
            for f, name in (("throttle_power_cap_seconds_total", "power cap"),
                            ("throttle_power_brake_seconds_total", "power brake"),
                            ("throttle_hw_thermal_seconds_total", "HW thermal"),
                            ("throttle_sw_thermal_seconds_total", "SW thermal"))], unit="percentunit", max=1),
        Panel("Throttle reasons now active", "state-timeline", [
            Query(f'SELECT last("{f}") FROM "gpu" {FG} {T}, "host", "gpu" fill(previous)',
                  legend=f"{name} $tag_host gpu $tag_gpu", promql=gpu(f))
            for f, name in (("throttle_power_cap", "power cap"), ("throttle_power_brake", "power brake"),
                            ("throttle_hw_slowdown", "HW slowdown"), ("throttle_thermal", "thermal"))],
              unit="bool", w=24),
        Panel("XID and ECC errors", "timeseries", [
            Query(f'SELECT non_negative_difference(last("{f}")) FROM "gpu" {FG} {T}, "host", "gpu"',
                  legend=f"{name} $tag_host gpu $tag_gpu", promql=per_interval(gpu(f)))
            for f, name in (("xid_errors_total", "XID"), ("ecc_uncorrected_volatile_total", "ECC uncorrected"))],
              unit="short"),
        Panel("Processes by GPU memory", "table", [Query(
            f'SELECT last("memory_used_bytes") AS "memory", last("sm_utilization_percent") AS "sm" '
            f'FROM "gpu_process" {FG} GROUP BY "host", "gpu", "pid", "process", "container", "slurm_job", "pod"',
            table=True, promql=f"aifactory_gpu_process_memory_used_bytes{{{PG}}}")], unit="bytes", w=24,
              description="per-process series reach Prometheus only where the endpoint or remote write includes "
                          "processes"),
)),)
