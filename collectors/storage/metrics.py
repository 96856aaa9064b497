"""Declared metrics of the storage collector."""

from agent.model import Kind, Metric

G, C, I = Kind.GAUGE, Kind.COUNTER, Kind.INFO
_M = ("host", "mountpoint", "device", "fstype")
_D = ("host", "device")
_S = ("host", "device", "protocol", "model", "serial")

METRICS = (
    Metric("storage_mount", "total_bytes", G, "bytes", "filesystem size", _M),
    Metric("storage_mount", "used_bytes", G, "bytes", "space in use", _M),
    Metric("storage_mount", "free_bytes", G, "bytes", "space available to unprivileged users", _M),
    Metric("storage_mount", "used_percent", G, "percent", "used / (used + free), as df(1) shows it", _M),
    Metric("storage_mount", "inodes", G, "count", "inodes", _M),
    Metric("storage_mount", "inodes_used", G, "count", "inodes in use", _M),
    Metric("storage_mount", "inodes_free", G, "count", "inodes free", _M),
    Metric("storage_mount", "read_only", G, "bool", "mounted read-only", _M),
    Metric("storage_mount", "responding", G, "bool",
           "statfs answered within mount_timeout (false: a hung network filesystem, say)", _M),
    Metric("storage_disk", "reads_total", C, "count", "reads completed", _D),
    Metric("storage_disk", "reads_merged_total", C, "count", "adjacent reads merged", _D),
    Metric("storage_disk", "read_bytes_total", C, "bytes", "bytes read", _D),
    Metric("storage_disk", "read_time_seconds_total", C, "seconds", "time spent reading", _D),
    Metric("storage_disk", "writes_total", C, "count", "writes completed", _D),
    Metric("storage_disk", "writes_merged_total", C, "count", "adjacent writes merged", _D),
    Metric("storage_disk", "written_bytes_total", C, "bytes", "bytes written", _D),
    Metric("storage_disk", "write_time_seconds_total", C, "seconds", "time spent writing", _D),
    Metric("storage_disk", "io_in_progress", G, "count", "I/Os in flight", _D),
    Metric("storage_disk", "io_time_seconds_total", C, "seconds", "time the device had I/O in flight (busy time)", _D),
    Metric("storage_disk", "io_weighted_time_seconds_total", C, "seconds", "I/O time weighted by queue depth", _D),
    Metric("storage_disk", "discards_total", C, "count", "discards completed", _D),
    Metric("storage_disk", "discarded_bytes_total", C, "bytes", "bytes discarded", _D),
    Metric("storage_disk", "flushes_total", C, "count", "flush requests completed", _D),
    Metric("storage_smart", "healthy", G, "bool", "SMART overall health self-assessment passed", _S),
    Metric("storage_smart", "smartctl_exit_status", G, "1", "smartctl's exit status bitmask (0: all well)", _S),
    Metric("storage_smart", "temperature_celsius", G, "celsius", "drive temperature", _S),
    Metric("storage_smart", "power_on_seconds_total", C, "seconds", "power-on time", _S),
    Metric("storage_smart", "power_cycles_total", C, "count", "power cycles", _S),
    Metric("storage_smart", "critical_warning", G, "1", "NVMe critical warning bitmask (0: none)", _S),
    Metric("storage_smart", "available_spare_percent", G, "percent", "NVMe remaining spare capacity", _S),
    Metric("storage_smart", "available_spare_threshold_percent", G, "percent", "NVMe spare threshold", _S),
    Metric("storage_smart", "endurance_used_percent", G, "percent", "NVMe percentage used (may exceed 100)", _S),
    Metric("storage_smart", "media_errors_total", C, "count", "NVMe unrecovered data-integrity errors", _S),
    Metric("storage_smart", "error_log_entries_total", C, "count", "NVMe error-log entries", _S),
    Metric("storage_smart", "unsafe_shutdowns_total", C, "count", "NVMe unsafe shutdowns", _S),
    Metric("storage_smart", "read_bytes_total", C, "bytes", "NVMe data units read x 512000", _S),
    Metric("storage_smart", "written_bytes_total", C, "bytes", "NVMe data units written x 512000", _S),
    Metric("storage_smart", "reallocated_sectors_total", C, "count", "ATA attribute 5 raw value", _S),
    Metric("storage_smart", "pending_sectors", G, "count", "ATA attribute 197 raw value", _S),
    Metric("storage_smart", "offline_uncorrectable_sectors", G, "count", "ATA attribute 198 raw value", _S),
    Metric("storage_smart", "crc_errors_total", C, "count", "ATA attribute 199 raw value (cable/link errors)", _S),
)
