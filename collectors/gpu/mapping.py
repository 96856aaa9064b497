"""Pure mapping from GpuReading to samples, in the catalogue's units (W, J, Hz, bytes, s)."""

from __future__ import annotations

from collections import Counter

from agent.model import Accumulator

from .energy import EnergyTracker, max_watts
from .reader import GpuReading
from .sampler import Drained, Shape

# nvmlClocksEventReason* bits
POWER_CAP, HW_SLOWDOWN, SYNC_BOOST, SW_THERMAL, HW_THERMAL, POWER_BRAKE = 0x4, 0x8, 0x10, 0x20, 0x40, 0x80

_COUNTERS = {  # raw reading -> (field, factor)
    "pcie_tx_bytes": ("pcie_tx_bytes_total", 1), "pcie_rx_bytes": ("pcie_rx_bytes_total", 1),
    "pcie_replay": ("pcie_replay_total", 1),
    "ecc_sbe_volatile": ("ecc_corrected_volatile_total", 1), "ecc_dbe_volatile": ("ecc_uncorrected_volatile_total", 1),
    "ecc_sbe_aggregate": ("ecc_corrected_aggregate_total", 1),
    "ecc_dbe_aggregate": ("ecc_uncorrected_aggregate_total", 1),
    "retired_sbe": ("retired_pages_sbe", 1), "retired_dbe": ("retired_pages_dbe", 1),
    "remapped_cor": ("remapped_rows_correctable", 1), "remapped_unc": ("remapped_rows_uncorrectable", 1),
    "nvlink_crc_flit": ("nvlink_crc_flit_errors_total", 1), "nvlink_crc_data": ("nvlink_crc_data_errors_total", 1),
    "nvlink_replay": ("nvlink_replay_errors_total", 1), "nvlink_recovery": ("nvlink_recovery_errors_total", 1),
    "nvlink_tx_kib": ("nvlink_tx_bytes_total", 1024), "nvlink_rx_kib": ("nvlink_rx_bytes_total", 1024),
}
_NS = {"throttle_power_cap_ns": "throttle_power_cap_seconds_total",
       "throttle_sync_boost_ns": "throttle_sync_boost_seconds_total",
       "throttle_sw_thermal_ns": "throttle_sw_thermal_seconds_total",
       "throttle_hw_thermal_ns": "throttle_hw_thermal_seconds_total",
       "throttle_power_brake_ns": "throttle_power_brake_seconds_total"}
_BOOLS = {"retired_pending": "retired_pages_pending", "remap_pending": "row_remap_pending",
          "remap_failure": "row_remap_failure"}


def _w(mw):
    return None if mw is None else mw / 1000.0


def _hz(mhz):
    return None if mhz is None else int(mhz) * 1_000_000


class XidCounter:
    def __init__(self) -> None:
        self.total: dict[str, int] = {}
        self.last: dict[str, int] = {}


# GPM metric (nvml.h NVML_GPM_METRIC_*) -> the gpu field it fills; per-second counts are MiB/s
GPM_FIELDS = {"SM_UTIL": "sm_active_percent", "SM_OCCUPANCY": "sm_occupancy_percent",
              "ANY_TENSOR_UTIL": "tensor_active_percent", "HMMA_TENSOR_UTIL": "tensor_hmma_active_percent",
              "IMMA_TENSOR_UTIL": "tensor_imma_active_percent", "DFMA_TENSOR_UTIL": "tensor_dfma_active_percent",
              "DRAM_BW_UTIL": "dram_active_percent", "FP64_UTIL": "fp64_active_percent",
              "FP32_UTIL": "fp32_active_percent", "FP16_UTIL": "fp16_active_percent",
              "INTEGER_UTIL": "integer_active_percent", "GRAPHICS_UTIL": "graphics_active_percent",
              "NVOFA_0_UTIL": "nvofa_active_percent"}
GPM_RATES = {"PCIE_TX_PER_SEC": "pcie_tx_bytes_per_second", "PCIE_RX_PER_SEC": "pcie_rx_bytes_per_second",
             "NVLINK_TOTAL_TX_PER_SEC": "nvlink_tx_bytes_per_second",
             "NVLINK_TOTAL_RX_PER_SEC": "nvlink_rx_bytes_per_second"}
GPM_ENGINES = {"NVDEC_": "nvdec_active_percent", "NVJPG_": "nvjpg_active_percent"}  # averaged over engines
MIB = 1 << 20


# nvmlPowerProfileType_t (nvml.h NVML_POWER_PROFILE_*): workload power profiles by bit
POWER_PROFILES = ("max_p", "max_q", "compute", "memory_bound", "network", "balanced", "llm_inference",
                  "llm_training", "rbm", "dcpcie", "hmma_sparse", "hmma_dense", "sync_balanced", "hpc", "mig",
                  "max_q_1", "network_bound", "high_throughput_inference", "medium_throughput_inference",
                  "low_latency_inference", "training", "inference", "max_q_2", "max_q_3",
                  "low_priority_background")


def profile_names(ids: list[int]) -> str:
    """Profiles by name, comma-separated in bit order ("" for none); an id this table lacks keeps its number."""
    return ",".join(POWER_PROFILES[i] if i < len(POWER_PROFILES) else str(i) for i in ids)


def power_envelope(v: dict, s) -> dict:
    """Memory-scope power, the limit constraints, workload power profiles and power smoothing, where present."""
    f: dict = {"power_limit_min_watts": _w(s.power_limit_min_mw), "power_limit_max_watts": _w(s.power_limit_max_mw)}
    if v.get("power_instant_memory_mw") is not None:
        f["memory_power_watts"] = _w(v["power_instant_memory_mw"])
    if v.get("power_profiles_requested") is not None:
        f["power_profiles_requested"] = profile_names(v["power_profiles_requested"])
        f["power_profiles_enforced"] = profile_names(v["power_profiles_enforced"])
    if v.get("smoothing_enabled") is not None:
        f["power_smoothing_enabled"] = bool(v["smoothing_enabled"])
    if v.get("smoothing_profile") is not None:
        f["power_smoothing_profile"] = int(v["smoothing_profile"])
    if v.get("smoothing_floor_percent") is not None:
        f["power_smoothing_floor_percent"] = float(v["smoothing_floor_percent"])
    for d in ("up", "down"):
        if v.get(f"smoothing_ramp_{d}_mw_per_s") is not None:
            f[f"power_smoothing_ramp_{d}_watts_per_second"] = v[f"smoothing_ramp_{d}_mw_per_s"] / 1000.0
    if v.get("smoothing_ramp_down_hysteresis_ms") is not None:
        f["power_smoothing_ramp_down_hysteresis_seconds"] = v["smoothing_ramp_down_hysteresis_ms"] / 1000.0
    return f


def gpm_fields(gpm: dict | None) -> dict:
    """GPM metrics (name -> value) as gpu fields; absent metrics stay absent."""
    if not gpm:
        return {}
    out = {field: round(gpm[m], 3) for m, field in GPM_FIELDS.items() if m in gpm}
    out.update({field: round(gpm[m] * MIB, 1) for m, field in GPM_RATES.items() if m in gpm})
    for prefix, field in GPM_ENGINES.items():
        engines = [v for k, v in gpm.items() if k.startswith(prefix)]
        if engines:
            out[field] = round(sum(engines) / len(engines), 3)
    return out


def map_node_power(d: Drained, acc: Accumulator) -> None:
    """The node's sampled GPU power (the sum over its GPUs at the same instants), one row per power scope."""
    for scope, (shape, gpus) in sorted(d.node.items()):
        acc.add("gpu_node", {**shape.fields(), "gpus": gpus, "sampler_late_ticks": d.late,
                             "sampler_errors": d.errors},
                {"source": "nvml", "scope": scope})


def map_gpu(r: GpuReading, acc: Accumulator, energy: EnergyTracker, xids: XidCounter,
            driver_version: str = "", cuda_version: str = "", shape: Shape | None = None) -> None:
    s = r.static
    tags = s.tags()
    uuid = s.uuid
    if r.xids:
        xids.total[uuid] = xids.total.get(uuid, 0) + len(r.xids)
        xids.last[uuid] = r.xids[-1]
        for x, c in Counter(r.xids).items():
            acc.add("gpu_event", {"count": c}, {**tags, "event": "xid", "xid": str(x)})
    for event, c in Counter(r.events).items():
        acc.add("gpu_event", {"count": c}, {**tags, "event": event})
    if r.lost:
        acc.add("gpu", {"lost": True, "xid_errors_total": xids.total.get(uuid, 0)}, tags)
        return
    v = r.values
    f: dict = {"lost": False}
    # power and energy say where they come from and whose they are (gpu, or gpu_module: GPU + Grace CPU)
    ptags = {**tags, "source": "nvml", "scope": v.get("power_scope", "gpu")}
    if "utilization_percent" in v:
        f["utilization_percent"] = v["utilization_percent"]
        f["memory_utilization_percent"] = v["memory_utilization_percent"]
    mem = v.get("memory")
    if mem:
        f["memory_used_bytes"] = mem["used"]
        f["memory_free_bytes"] = mem["free"]
        f["memory_total_bytes"] = mem["total"]
        if "reserved" in mem:
            f["memory_reserved_bytes"] = mem["reserved"]
    f["power_watts"] = _w(v.get("power_instant_mw", v.get("power_usage_mw")))
    f["power_average_watts"] = _w(v.get("power_average_mw"))
    if v.get("energy_mj") is not None:
        # a module's counter is another counter (its key predates the scope tag's names: saved state stays valid)
        key = uuid if ptags["scope"] == "gpu" else f"{uuid}/module"
        limit = max_watts([v.get("power_limit_mw"), v.get("power_limit_enforced_mw"), s.power_limit_default_mw],
                          module=ptags["scope"] == "gpu_module")
        joules, event = energy.update(key, int(v["energy_mj"]), acc.ts / 1e9, limit)
        f["energy_joules_total"] = joules  # None while a drop is confirmed or a reading refused
        f["energy_resets_total"] = energy.resets(key)
        f["energy_glitches_total"] = energy.glitches(key)
        f["energy_refused_total"] = energy.refused(key)
        if event in ("reset", "wrap"):
            acc.add("gpu_event", {"count": 1}, {**ptags, "event": "energy_reset"})
    f["power_limit_watts"] = _w(v.get("power_limit_mw"))
    f["power_limit_default_watts"] = _w(s.power_limit_default_mw)
    f["power_limit_enforced_watts"] = _w(v.get("power_limit_enforced_mw"))
    f.update(power_envelope(v, s))
    if shape is not None:
        f.update(shape.fields())
    f["temperature_celsius"] = None if v.get("temperature_c") is None else float(v["temperature_c"])
    if v.get("memory_temperature_c") is not None:
        f["memory_temperature_celsius"] = float(v["memory_temperature_c"])
    th = s.thresholds_c
    f["temperature_slowdown_celsius"] = float(th["slowdown"]) if "slowdown" in th else None
    f["temperature_shutdown_celsius"] = float(th["shutdown"]) if "shutdown" in th else None
    f["memory_temperature_max_celsius"] = float(th["memory_max"]) if "memory_max" in th else None
    for kind in ("sm", "memory", "graphics"):
        f[f"{kind}_clock_hertz"] = _hz(v.get(f"clock_{kind}_mhz"))
        f[f"{kind}_clock_max_hertz"] = _hz(s.max_clocks_mhz.get(kind))
    reasons = v.get("clocks_event_reasons")
    if reasons is not None:
        f["clocks_event_reasons"] = int(reasons)
        f["throttle_power_cap"] = bool(reasons & POWER_CAP)
        f["throttle_hw_slowdown"] = bool(reasons & HW_SLOWDOWN)
        f["throttle_thermal"] = bool(reasons & (SW_THERMAL | HW_THERMAL))
        f["throttle_power_brake"] = bool(reasons & POWER_BRAKE)
        f["throttle_sync_boost"] = bool(reasons & SYNC_BOOST)
    for raw, name in _NS.items():
        if v.get(raw) is not None:
            f[name] = v[raw] / 1e9
    for raw, (name, factor) in _COUNTERS.items():
        if v.get(raw) is not None:
            f[name] = int(v[raw]) * factor
    for raw, name in _BOOLS.items():
        if v.get(raw) is not None:
            f[name] = bool(v[raw])
    f["fan_speed_percent"] = v.get("fan_percent")
    f["performance_state"] = v.get("pstate")
    for d in ("tx", "rx"):
        if v.get(f"pcie_{d}_kbps") is not None:
            f[f"pcie_{d}_throughput_bytes_per_second"] = int(v[f"pcie_{d}_kbps"]) * 1024
    f["pcie_link_generation"] = v.get("pcie_gen")
    f["pcie_link_width"] = v.get("pcie_width")
    f["persistence_mode"] = v.get("persistence_mode")
    f["compute_mode"] = v.get("compute_mode")
    f["mig_mode"] = v.get("mig_mode")
    f["xid_errors_total"] = xids.total.get(uuid, 0)
    f["last_xid"] = xids.last.get(uuid, 0)
    if r.links:
        f["nvlink_links_active"] = sum(1 for lk in r.links.values() if lk.get("active"))
    f.update(gpm_fields(v.get("gpm")))
    acc.add("gpu", f, ptags)
    acc.add("gpu_info", {"driver_version": driver_version, "cuda_version": cuda_version,
                         "vbios_version": s.vbios, "serial": s.serial}, tags)
    for link, lk in sorted(r.links.items()):
        lf = {"active": lk.get("active")}
        if lk.get("tx_kib") is not None:
            lf["tx_bytes_total"] = int(lk["tx_kib"]) * 1024
        if lk.get("rx_kib") is not None:
            lf["rx_bytes_total"] = int(lk["rx_kib"]) * 1024
        acc.add("gpu_nvlink", lf, {**tags, "link": str(link)})
    for p in r.processes:
        acc.add("gpu_process", {"memory_used_bytes": p.memory_bytes, "sm_utilization_percent": p.sm_percent,
                                "memory_utilization_percent": p.mem_percent},
                {**tags, "pid": str(p.pid), "process": p.name, "container": p.container,
                 "slurm_job": p.slurm_job, "pod": p.pod,
                 "gpu_instance": "" if p.gpu_instance is None else str(p.gpu_instance)})
    for m in r.mig:
        gpm = m.get("gpm") or {}
        acc.add("gpu_mig", {"memory_used_bytes": m.get("memory_used"), "memory_total_bytes": m.get("memory_total"),
                            "sm_utilization_percent": gpm.get("SM_UTIL"),
                            "sm_occupancy_percent": gpm.get("SM_OCCUPANCY"),
                            "tensor_active_percent": gpm.get("ANY_TENSOR_UTIL"),
                            "dram_active_percent": gpm.get("DRAM_BW_UTIL")},
                {**tags, "mig_uuid": m["uuid"], "gpu_instance": str(m["gpu_instance_id"]),
                 "compute_instance": str(m["compute_instance_id"]), "profile": m["profile"]})
