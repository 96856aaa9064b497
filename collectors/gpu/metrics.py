"""Declared metrics of the gpu collector."""

from agent.model import Kind, Metric

G, C, I = Kind.GAUGE, Kind.COUNTER, Kind.INFO
_G = ("host", "gpu", "uuid", "model", "pci_bus_id")


def g(field, kind, unit, desc):
    # source nvml; scope gpu, or gpu_module where NVML has the Grace Hopper / Grace Blackwell module's power only
    return Metric("gpu", field, kind, unit, desc, _G + ("source", "scope"))


# GPM (Hopper+) over each collection window, beside dcgm-exporter's DCGM_FI_PROF_* (docs/gpu.md has the map)
GPM_GAUGES = (
    ("sm_active_percent", "time at least one warp was resident on an SM, averaged over the SMs (GPM SM_UTIL; "
     "DCGM_FI_PROF_SM_ACTIVE)"),
    ("sm_occupancy_percent", "warps resident on the SMs as a share of the maximum (GPM SM_OCCUPANCY; "
     "DCGM_FI_PROF_SM_OCCUPANCY)"),
    ("tensor_active_percent", "time any tensor pipe was active (GPM ANY_TENSOR_UTIL; DCGM_FI_PROF_PIPE_TENSOR_ACTIVE)"),
    ("tensor_hmma_active_percent", "time the half-precision tensor pipe was active (GPM HMMA_TENSOR_UTIL; "
     "DCGM_FI_PROF_PIPE_TENSOR_HMMA_ACTIVE)"),
    ("tensor_imma_active_percent", "time the integer tensor pipe was active (GPM IMMA_TENSOR_UTIL; "
     "DCGM_FI_PROF_PIPE_TENSOR_IMMA_ACTIVE)"),
    ("tensor_dfma_active_percent", "time the FP64 tensor pipe was active (GPM DFMA_TENSOR_UTIL; "
     "DCGM_FI_PROF_PIPE_TENSOR_DFMA_ACTIVE)"),
    ("dram_active_percent", "device memory bandwidth in use as a share of the peak (GPM DRAM_BW_UTIL; "
     "DCGM_FI_PROF_DRAM_ACTIVE)"),
    ("fp64_active_percent", "time the FP64 pipe was active (GPM FP64_UTIL; DCGM_FI_PROF_PIPE_FP64_ACTIVE)"),
    ("fp32_active_percent", "time the FP32 pipe was active (GPM FP32_UTIL; DCGM_FI_PROF_PIPE_FP32_ACTIVE)"),
    ("fp16_active_percent", "time the FP16 pipe was active (GPM FP16_UTIL; DCGM_FI_PROF_PIPE_FP16_ACTIVE)"),
    ("integer_active_percent", "time the integer pipe was active (GPM INTEGER_UTIL; DCGM_FI_PROF_PIPE_INT_ACTIVE)"),
    ("graphics_active_percent", "time the graphics or compute engine was active (GPM GRAPHICS_UTIL; "
     "DCGM_FI_PROF_GR_ENGINE_ACTIVE)"),
    ("nvdec_active_percent", "video decoders' activity, averaged over the engines (GPM NVDEC_n_UTIL; "
     "DCGM_FI_PROF_NVDEC_n_ACTIVE)"),
    ("nvjpg_active_percent", "JPEG decoders' activity, averaged over the engines (GPM NVJPG_n_UTIL; "
     "DCGM_FI_PROF_NVJPG_n_ACTIVE)"),
    ("nvofa_active_percent", "optical-flow accelerator activity (GPM NVOFA_0_UTIL; DCGM_FI_PROF_NVOFA0_ACTIVE)"),
)
GPM_RATES = (
    ("pcie_tx_bytes_per_second", "PCIe bytes sent per second over the window (GPM PCIE_TX_PER_SEC; "
     "DCGM_FI_PROF_PCIE_TX_BYTES)"),
    ("pcie_rx_bytes_per_second", "PCIe bytes received per second over the window (GPM PCIE_RX_PER_SEC; "
     "DCGM_FI_PROF_PCIE_RX_BYTES)"),
    ("nvlink_tx_bytes_per_second", "NVLink bytes sent per second, all links, over the window (GPM "
     "NVLINK_TOTAL_TX_PER_SEC; DCGM_FI_PROF_NVLINK_TX_BYTES)"),
    ("nvlink_rx_bytes_per_second", "NVLink bytes received per second, all links, over the window (GPM "
     "NVLINK_TOTAL_RX_PER_SEC; DCGM_FI_PROF_NVLINK_RX_BYTES)"),
)

# the fast power sampler's summary of one collection interval (power_sample_hz; off by default): the
# shape of the power, not its energy (the energy counter gives that)
SAMPLED_POWER = (
    ("power_min_watts", "lowest instant power sampled in the collection interval"),
    ("power_max_watts", "highest instant power sampled in the collection interval"),
    ("power_mean_watts", "mean of the instant power samples in the collection interval"),
    ("power_p99_watts", "99th percentile (nearest rank) of the instant power samples in the interval"),
    ("power_swing_watts", "highest minus lowest instant power sampled in the interval"),
    ("power_step_max_watts", "largest change between consecutive samples (absolute), the interval's first "
     "sample against the last one before it"),
)
_N = ("host", "source", "scope")

METRICS = (
    *(g(f, G, "percent", d) for f, d in GPM_GAUGES),
    *(g(f, G, "bytes_per_second", d) for f, d in GPM_RATES),
    g("lost", G, "bool", "the GPU stopped answering NVML (GPU_IS_LOST); other fields are absent while lost"),
    g("utilization_percent", G, "percent", "time one or more kernels ran over the driver's sample period"),
    g("memory_utilization_percent", G, "percent", "time device memory was read or written"),
    g("memory_used_bytes", G, "bytes", "device memory allocated by processes and the driver; NVML memory v2's used excludes the reserved memory (memory_reserved_bytes)"),
    g("memory_free_bytes", G, "bytes", "device memory free"),
    g("memory_total_bytes", G, "bytes", "device memory"),
    g("memory_reserved_bytes", G, "bytes", "device memory reserved by the driver and firmware"),
    g("power_watts", G, "watts", "instant power of the scope (NVML_FI_DEV_POWER_INSTANT; nvmlDeviceGetPowerUsage where unsupported): the GPU board, or the Grace module (GPU + CPU + memory)"),
    g("power_average_watts", G, "watts", "1-second average board power (NVML_FI_DEV_POWER_AVERAGE), Ampere+ except GA100"),
    g("energy_joules_total", C, "joules", "the driver's energy counter of the scope (mJ since the driver loaded: field 83 for the GPU, 191 for the module), kept monotonic across driver reloads and agent restarts"),
    g("energy_resets_total", C, "count", "driver energy-counter resets seen (driver reload, reboot)"),
    g("energy_glitches_total", C, "count", "energy-counter decreases that came back (dropped, not resets)"),
    g("energy_refused_total", C, "count", "energy readings refused: negative, not finite, or beyond the "
      "device's power limit"),
    g("power_limit_watts", G, "watts", "power management limit currently set"),
    g("power_limit_default_watts", G, "watts", "default power management limit"),
    g("power_limit_enforced_watts", G, "watts", "effective power limit after every limiter"),
    g("power_limit_min_watts", G, "watts", "lowest power limit the board accepts "
      "(nvmlDeviceGetPowerManagementLimitConstraints)"),
    g("power_limit_max_watts", G, "watts", "highest power limit the board accepts"),
    g("memory_power_watts", G, "watts", "instant power of the GPU's memory alone (NVML_FI_DEV_POWER_INSTANT, "
      "scope NVML_POWER_SCOPE_MEMORY), where the driver measures it"),
    g("power_profiles_requested", I, "info", "workload power profiles requested, comma-separated "
      "(nvmlDeviceWorkloadPowerProfileGetCurrentProfiles; Blackwell+)"),
    g("power_profiles_enforced", I, "info", "workload power profiles the driver enforces, comma-separated"),
    g("power_smoothing_enabled", G, "bool", "power smoothing on (NVML_FI_PWR_SMOOTHING_ENABLED; Blackwell+)"),
    g("power_smoothing_profile", G, "1", "active power-smoothing preset profile "
      "(NVML_FI_PWR_SMOOTHING_ACTIVE_PRESET_PROFILE)"),
    g("power_smoothing_floor_percent", G, "percent", "the active profile's power floor as a share of the "
      "module's power ceiling (TMP)"),
    g("power_smoothing_ramp_up_watts_per_second", G, "watts_per_second", "the active profile's ramp-up rate"),
    g("power_smoothing_ramp_down_watts_per_second", G, "watts_per_second", "the active profile's ramp-down rate"),
    g("power_smoothing_ramp_down_hysteresis_seconds", G, "seconds", "the active profile's ramp-down hysteresis"),
    *(g(f, G, "watts", d) for f, d in SAMPLED_POWER),
    g("power_samples", G, "count", "instant-power samples the fast sampler took in the collection interval"),
    g("temperature_celsius", G, "celsius", "GPU die temperature"),
    g("memory_temperature_celsius", G, "celsius", "HBM temperature (NVML_FI_DEV_MEMORY_TEMP)"),
    g("temperature_slowdown_celsius", G, "celsius", "temperature at which the GPU slows down"),
    g("temperature_shutdown_celsius", G, "celsius", "temperature at which the GPU shuts down"),
    g("memory_temperature_max_celsius", G, "celsius", "maximum HBM operating temperature"),
    g("sm_clock_hertz", G, "hertz", "SM clock"),
    g("memory_clock_hertz", G, "hertz", "memory clock"),
    g("graphics_clock_hertz", G, "hertz", "graphics clock"),
    g("sm_clock_max_hertz", G, "hertz", "maximum SM clock"),
    g("memory_clock_max_hertz", G, "hertz", "maximum memory clock"),
    g("graphics_clock_max_hertz", G, "hertz", "maximum graphics clock"),
    g("clocks_event_reasons", G, "1", "NVML clocks-event (throttle) reason bitmask"),
    g("throttle_power_cap", G, "bool", "clocks lowered to stay under the power limit (SwPowerCap)"),
    g("throttle_hw_slowdown", G, "bool", "hardware slowdown: over-temperature, power brake or over-power (HwSlowdown)"),
    g("throttle_thermal", G, "bool", "software or hardware thermal slowdown"),
    g("throttle_power_brake", G, "bool", "external power-brake signal (HwPowerBrakeSlowdown)"),
    g("throttle_sync_boost", G, "bool", "clocks held to another GPU's in a sync-boost group"),
    g("throttle_power_cap_seconds_total", C, "seconds", "time throttled by the power cap"),
    g("throttle_sync_boost_seconds_total", C, "seconds", "time throttled by sync boost"),
    g("throttle_sw_thermal_seconds_total", C, "seconds", "time throttled by software thermal slowdown"),
    g("throttle_hw_thermal_seconds_total", C, "seconds", "time throttled by hardware thermal slowdown"),
    g("throttle_power_brake_seconds_total", C, "seconds", "time throttled by the external power brake"),
    g("fan_speed_percent", G, "percent", "intended fan speed (may exceed 100)"),
    g("performance_state", G, "1", "P-state (0 fastest .. 15)"),
    g("pcie_link_generation", G, "1", "current PCIe link generation"),
    g("pcie_link_width", G, "1", "current PCIe link width (lanes)"),
    g("pcie_tx_bytes_total", C, "bytes", "PCIe bytes sent (NVML field 197), reported once it has shown 64 bits (a value past 2^32); a 32-bit counter aliases at PCIe rates and is left out"),
    g("pcie_rx_bytes_total", C, "bytes", "PCIe bytes received (NVML field 198), reported once it has shown 64 bits, as pcie_tx_bytes_total"),
    g("pcie_tx_throughput_bytes_per_second", G, "bytes_per_second", "PCIe transmit throughput, NVML's sample over its last 20 ms (KB/s x 1024)"),
    g("pcie_rx_throughput_bytes_per_second", G, "bytes_per_second", "PCIe receive throughput, NVML's sample over its last 20 ms (KB/s x 1024)"),
    g("pcie_replay_total", C, "count", "PCIe replays (link-level retries)"),
    g("ecc_corrected_volatile_total", C, "count", "corrected (single-bit) ECC errors since the driver loaded"),
    g("ecc_uncorrected_volatile_total", C, "count", "uncorrected (double-bit) ECC errors since the driver loaded"),
    g("ecc_corrected_aggregate_total", C, "count", "corrected ECC errors over the GPU's life"),
    g("ecc_uncorrected_aggregate_total", C, "count", "uncorrected ECC errors over the GPU's life"),
    g("retired_pages_sbe", G, "count", "pages retired for single-bit errors (pre-Ampere)"),
    g("retired_pages_dbe", G, "count", "pages retired for double-bit errors (pre-Ampere)"),
    g("retired_pages_pending", G, "bool", "a page retirement waits for a reset (pre-Ampere)"),
    g("remapped_rows_correctable", G, "count", "rows remapped after correctable errors (Ampere+)"),
    g("remapped_rows_uncorrectable", G, "count", "rows remapped after uncorrectable errors (Ampere+)"),
    g("row_remap_pending", G, "bool", "a row remap waits for a GPU reset"),
    g("row_remap_failure", G, "bool", "a row remap failed: the GPU needs service"),
    g("nvlink_crc_flit_errors_total", C, "count", "NVLink flit CRC errors, all links"),
    g("nvlink_crc_data_errors_total", C, "count", "NVLink data CRC errors, all links"),
    g("nvlink_replay_errors_total", C, "count", "NVLink replays, all links"),
    g("nvlink_recovery_errors_total", C, "count", "NVLink recoveries, all links"),
    g("nvlink_tx_bytes_total", C, "bytes", "NVLink data sent, all links"),
    g("nvlink_rx_bytes_total", C, "bytes", "NVLink data received, all links"),
    g("nvlink_links_active", G, "count", "NVLink links up"),
    g("xid_errors_total", C, "count", "XID events since the agent started"),
    g("last_xid", G, "1", "the most recent XID code seen (0: none since the agent started)"),
    g("persistence_mode", G, "bool", "persistence mode on"),
    g("compute_mode", I, "info", "compute mode (default, exclusive_process, prohibited)"),
    g("mig_mode", G, "bool", "MIG mode enabled"),
    Metric("gpu_info", "driver_version", I, "info", "NVIDIA driver version", _G),
    Metric("gpu_info", "cuda_version", I, "info", "CUDA version the driver supports", _G),
    Metric("gpu_info", "vbios_version", I, "info", "VBIOS version", _G),
    Metric("gpu_info", "serial", I, "info", "board serial number", _G),
    Metric("gpu_nvlink", "active", G, "bool", "link up", _G + ("link",)),
    Metric("gpu_nvlink", "tx_bytes_total", C, "bytes", "data sent on this link", _G + ("link",)),
    Metric("gpu_nvlink", "rx_bytes_total", C, "bytes", "data received on this link", _G + ("link",)),
    Metric("gpu_process", "memory_used_bytes", G, "bytes", "GPU memory used by the process",
           _G + ("pid", "process", "container", "slurm_job", "pod", "gpu_instance")),
    Metric("gpu_process", "sm_utilization_percent", G, "percent", "SM utilization of the process (latest sample)",
           _G + ("pid", "process", "container", "slurm_job", "pod", "gpu_instance")),
    Metric("gpu_process", "memory_utilization_percent", G, "percent", "memory-controller utilization of the process",
           _G + ("pid", "process", "container", "slurm_job", "pod", "gpu_instance")),
    Metric("gpu_mig", "memory_used_bytes", G, "bytes", "memory used in this MIG instance",
           _G + ("mig_uuid", "gpu_instance", "compute_instance", "profile")),
    Metric("gpu_mig", "memory_total_bytes", G, "bytes", "memory of this MIG instance",
           _G + ("mig_uuid", "gpu_instance", "compute_instance", "profile")),
    Metric("gpu_mig", "sm_utilization_percent", G, "percent", "SM utilization of this MIG instance (GPM, Hopper+)",
           _G + ("mig_uuid", "gpu_instance", "compute_instance", "profile")),
    *(Metric("gpu_mig", f, G, "percent", f"{d} of this MIG GPU instance (GPM, Hopper+)",
             _G + ("mig_uuid", "gpu_instance", "compute_instance", "profile"))
      for f, d in (("sm_occupancy_percent", "warps resident on the SMs as a share of the maximum"),
                   ("tensor_active_percent", "time any tensor pipe was active"),
                   ("dram_active_percent", "device memory bandwidth in use as a share of the peak"))),
    *(Metric("gpu_node", f, G, "watts", d.replace("instant power", "node's instant GPU power (the sum over its "
                                                "GPUs at the same sample instants)"), _N)
      for f, d in SAMPLED_POWER),
    Metric("gpu_node", "power_samples", G, "count", "sample instants at which every sampled GPU answered", _N),
    Metric("gpu_node", "gpus", G, "count", "GPUs in the node's sum", _N),
    Metric("gpu_node", "sampler_late_ticks", G, "count", "sample instants the sampler skipped in the interval "
           "because the tick before ran past them (NVML slow to answer)", _N),
    Metric("gpu_node", "sampler_errors", G, "count", "sampler reads in the interval that failed (a lost GPU, an "
           "NVML error) and left a GPU's sample out", _N),
    Metric("gpu_event", "count", G, "count", "events in this collection: XIDs (tag xid), ecc_dbe (double-bit ECC events), gpu_lost, gpu_recovered, energy_reset",
           _G + ("event", "xid", "source", "scope")),
)
