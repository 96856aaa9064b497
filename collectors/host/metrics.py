"""Declared metrics of the host collector."""

from agent.model import Kind, Metric

G, C = Kind.GAUGE, Kind.COUNTER
_H = ("host",)
_CPU = ("host", "cpu")
_T = ("host", "chip", "device", "sensor")

CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")

METRICS = (
    Metric("host", "load_average_1m", G, "1", "run-queue load average over 1 minute", _H),
    Metric("host", "load_average_5m", G, "1", "run-queue load average over 5 minutes", _H),
    Metric("host", "load_average_15m", G, "1", "run-queue load average over 15 minutes", _H),
    Metric("host", "cpu_count", G, "count", "online logical CPUs", _H),
    Metric("host", "memory_total_bytes", G, "bytes", "physical memory", _H),
    Metric("host", "memory_available_bytes", G, "bytes", "memory available to new work without swapping (MemAvailable)", _H),
    Metric("host", "memory_used_bytes", G, "bytes", "memory in use (total - free - buffers - cached, as free(1))", _H),
    Metric("host", "memory_free_bytes", G, "bytes", "unused memory (MemFree)", _H),
    Metric("host", "memory_buffers_bytes", G, "bytes", "block-device buffers", _H),
    Metric("host", "memory_cached_bytes", G, "bytes", "page cache and reclaimable slab", _H),
    Metric("host", "memory_shared_bytes", G, "bytes", "shared memory (tmpfs, shm)", _H),
    Metric("host", "memory_used_percent", G, "percent", "memory not available, as a share of total", _H),
    Metric("host", "swap_total_bytes", G, "bytes", "swap space", _H),
    Metric("host", "swap_used_bytes", G, "bytes", "swap in use", _H),
    Metric("host", "swap_free_bytes", G, "bytes", "swap free", _H),
    Metric("host", "swap_in_bytes_total", C, "bytes", "bytes swapped in since boot", _H),
    Metric("host", "swap_out_bytes_total", C, "bytes", "bytes swapped out since boot", _H),
    Metric("host", "uptime_seconds", G, "seconds", "time since boot", _H),
    Metric("host", "boot_time_seconds", G, "seconds", "boot time, seconds since the epoch", _H),
    Metric("host", "context_switches_total", C, "count", "context switches since boot", _H),
    Metric("host", "interrupts_total", C, "count", "interrupts serviced since boot", _H),
    Metric("host", "forks_total", C, "count", "processes and threads created since boot", _H),
    Metric("host", "processes_running", G, "count", "runnable tasks", _H),
    Metric("host", "processes_blocked", G, "count", "tasks blocked on I/O", _H),
    Metric("host", "processes", G, "count", "processes", _H),
    Metric("host", "threads", G, "count", "scheduling entities (threads)", _H),
    *(Metric("host_cpu", f"{mode}_seconds_total", C, "seconds", f"CPU time in {mode} mode", _CPU) for mode in CPU_MODES),
    Metric("host_cpu", "utilization_percent", G, "percent",
           "busy share of CPU time (all but idle and iowait) between this run and the previous one", _CPU),
    Metric("host_cpu", "iowait_percent", G, "percent", "iowait share of CPU time since the previous run", _CPU),
    Metric("host_temperature", "temperature_celsius", G, "celsius", "hwmon temperature sensor reading", _T),
    Metric("host_temperature", "max_celsius", G, "celsius", "sensor's high threshold", _T),
    Metric("host_temperature", "critical_celsius", G, "celsius", "sensor's critical threshold", _T),
    Metric("host_energy", "energy_joules_total", Kind.COUNTER, "joules",
           "RAPL energy of a CPU package (intel-rapl:N), kept monotonic across the register's wrap and reboots",
           ("host", "zone", "source", "scope")),
    Metric("host_energy", "energy_resets_total", Kind.COUNTER, "count", "RAPL counter restarts seen (reboots)",
           ("host", "zone", "source", "scope")),
    Metric("host_energy", "energy_glitches_total", Kind.COUNTER, "count",
           "RAPL counter decreases that came back (dropped)", ("host", "zone", "source", "scope")),
)
