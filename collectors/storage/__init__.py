"""Storage collector: per-mount usage, per-disk I/O counters, SMART health (smartctl -j)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from agent.collector import Collector
from agent.config import CollectorOptions, Duration, PositiveDuration, RegexList
from agent.model import Accumulator
from collectors.common import compile_any

from .mapping import map_disks, map_mounts, map_smart
from .metrics import METRICS
from .reader import StorageReader
from .smart import SmartRunner

# As node_exporter: pseudo filesystems and container plumbing are not storage.
DEFAULT_EXCLUDE_FSTYPES = [
    "autofs", "binfmt_misc", "bpf", "cgroup2?", "configfs", "debugfs", "devpts", "devtmpfs", "fusectl",
    "hugetlbfs", "iso9660", "mqueue", "nsfs", "overlay", "proc", "procfs", "pstore", "rpc_pipefs",
    "securityfs", "selinuxfs", "squashfs", "erofs", "sysfs", "tracefs", "efivarfs", "ramfs",
]
DEFAULT_EXCLUDE_MOUNTS = [r"/(dev|proc|sys|run/credentials/.+|var/lib/docker/.+|var/lib/containers/storage/.+|"
                          r"var/lib/kubelet/pods/.+|run/containerd/.+|snap/.+)(/.*)?"]
DEFAULT_EXCLUDE_DEVICES = [r"(loop|ram|zram|fd)\d+"]


class StorageOptions(CollectorOptions):
    exclude_fstypes: RegexList = Field(default_factory=lambda: list(DEFAULT_EXCLUDE_FSTYPES),
                                       description="filesystem types to skip (regular expressions)")
    exclude_mounts: RegexList = Field(default_factory=lambda: list(DEFAULT_EXCLUDE_MOUNTS),
                                      description="mount points to skip (regular expressions)")
    exclude_devices: RegexList = Field(default_factory=lambda: list(DEFAULT_EXCLUDE_DEVICES),
                                       description="block devices to skip (regular expressions)")
    rootfs: Path = Field(Path("/"), description="where the host's root is mounted (containers: /host)")
    mount_timeout: PositiveDuration = Field(1.0, description="deadline for statfs of a network filesystem")
    smart: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: when smartctl is installed and the agent may run it")
    smart_interval: PositiveDuration = Field(300.0, description="how often smartctl is run")
    smart_timeout: Duration = Field(15.0, description="deadline for one smartctl call")
    smartctl_path: str | None = Field(None, description="default: smartctl from PATH or /usr/sbin")
    smart_devices: list[str] = Field(default_factory=list, description="default: smartctl --scan-open")


class StorageCollector(Collector):
    kind = "storage"
    Options = StorageOptions
    METRICS = METRICS

    def __init__(self, options: StorageOptions, ctx) -> None:
        super().__init__(options, ctx)
        self.reader = StorageReader(
            ctx.proc_root, ctx.sys_root, options.rootfs, compile_any(options.exclude_fstypes),
            compile_any(options.exclude_mounts), compile_any(options.exclude_devices), options.mount_timeout)
        self.smart: SmartRunner | None = None
        if options.smart != "off":
            path = SmartRunner.find(options.smartctl_path)
            # smartctl needs raw device access: root, or a narrowly granted capability (docs/deploy).
            if path and (options.smart == "on" or os.geteuid() == 0):
                self.smart = SmartRunner(path, options.smart_devices, options.smart_interval,
                                         options.smart_timeout)
            elif options.smart == "on":
                raise RuntimeError("smart: on, but smartctl was not found; install smartmontools")

    def collect(self, acc: Accumulator) -> None:
        map_mounts(self.reader.usage(self.reader.mounts()), acc)
        map_disks(self.reader.disks(), acc)
        if self.smart is not None:
            fresh = self.smart.poll()
            if fresh:
                map_smart(fresh, acc)
