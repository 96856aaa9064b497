"""The gpu collector's panels: the GPU node board, per GPU."""

from __future__ import annotations

from agent.dashboards.model import FG, PG, RI, Panel, Query, Section, T


def ts(title, field, unit, promql, **kw):
    return Panel(title, "timeseries", [Query(f'SELECT mean("{field}") FROM "gpu" {FG} {T}, "host", "gpu" '
                                             'fill(none)', legend="$tag_host gpu $tag_gpu", promql=promql)],
                 unit=unit, **kw)


def gpu(name: str) -> str:
    """A gpu measurement's Prometheus series under the board's selection."""
    return f"aifactory_gpu_{name}{{{PG}}}"


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
        Panel("Energy per interval", "timeseries", [Query(
            f'SELECT non_negative_difference(last("energy_joules_total")) FROM "gpu" {FG} {T}, "host", "gpu"',
            legend="$tag_host gpu $tag_gpu", promql=f"increase({gpu('energy_joules_total')}[$__interval])")],
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
                  legend=f"{name} $tag_host gpu $tag_gpu", promql=f"increase({gpu(f)}[$__interval])")
            for f, name in (("xid_errors_total", "XID"), ("ecc_uncorrected_volatile_total", "ECC uncorrected"))],
              unit="short"),
        Panel("Processes by GPU memory", "table", [Query(
            f'SELECT last("memory_used_bytes") AS "memory", last("sm_utilization_percent") AS "sm" '
            f'FROM "gpu_process" {FG} GROUP BY "host", "gpu", "pid", "process", "container", "slurm_job", "pod"',
            table=True, promql=f"aifactory_gpu_process_memory_used_bytes{{{PG}}}")], unit="bytes", w=24,
              description="per-process series reach Prometheus only where the endpoint or remote write includes "
                          "processes"),
)),)
