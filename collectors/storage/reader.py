"""Reads mounts, filesystem usage and block-device counters.

statfs on a hung network filesystem (NFS, Lustre, GPFS) blocks forever, so each mount
is stat'ed in its own daemon thread with a deadline; a mount whose call has not come
back is reported as not responding and is not asked again until it does
(node_exporter's "stuck mounts").
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from collectors.common import matches, read_text

SECTOR = 512  # /proc/diskstats counts 512-byte sectors whatever the device's sector size

# Filesystems whose statfs can hang on a server or network: these get a thread and a
# deadline; local ones are stat'ed directly (a thread each would cost more than the call).
REMOTE_FSTYPES = re.compile(r"nfs4?|cifs|smb3|smbfs|lustre|gpfs|beegfs|wekafs|ceph|glusterfs|9p|"
                            r"fuse\..*|afs|ocfs2|gfs2|panfs|davfs")


@dataclass
class Mount:
    device: str
    mountpoint: str
    fstype: str
    read_only: bool


@dataclass
class MountUsage:
    mount: Mount
    responding: bool
    total: int = 0
    free: int = 0  # available to unprivileged users (f_bavail)
    used: int = 0
    inodes_total: int = 0
    inodes_free: int = 0


@dataclass
class DiskStats:
    device: str
    values: dict[str, int]


def _unescape(path: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def parse_mounts(text: str) -> list[Mount]:
    out = []
    for line in text.splitlines():
        p = line.split()
        if len(p) < 4:
            continue
        opts = p[3].split(",")
        out.append(Mount(_unescape(p[0]), _unescape(p[1]), p[2], "ro" in opts))
    return out


_DISK_FIELDS = ("reads", "reads_merged", "read_sectors", "read_ms", "writes", "writes_merged",
                "write_sectors", "write_ms", "in_progress", "io_ms", "weighted_ms",
                "discards", "discards_merged", "discard_sectors", "discard_ms", "flushes", "flush_ms")


def parse_diskstats(text: str) -> list[DiskStats]:
    out = []
    for line in text.splitlines():
        p = line.split()
        if len(p) < 14:
            continue
        vals = dict(zip(_DISK_FIELDS, (int(v) for v in p[3:])))
        out.append(DiskStats(p[2], vals))
    return out


class MountStatter:
    """statvfs with a per-mount deadline, remembering mounts whose call never came back."""

    def __init__(self, statvfs: Callable[[str], os.statvfs_result] = os.statvfs) -> None:
        self.statvfs = statvfs
        self.stuck: set[str] = set()
        self._lock = threading.Lock()

    def stat(self, path: str, timeout: float):
        with self._lock:
            if path in self.stuck:
                return None
        result: list = []

        def target():
            try:
                result.append(self.statvfs(path))
            except OSError as e:
                result.append(e)
            finally:
                with self._lock:
                    self.stuck.discard(path)

        with self._lock:
            self.stuck.add(path)
        t = threading.Thread(target=target, name=f"statfs:{path}", daemon=True)
        t.start()
        t.join(timeout)
        if not result:
            return None  # still stuck; stays in self.stuck until the call returns
        return result[0]


class StorageReader:
    def __init__(self, proc_root: Path, sys_root: Path, rootfs: Path, exclude_fstypes: re.Pattern | None,
                 exclude_mounts: re.Pattern | None, exclude_devices: re.Pattern | None,
                 mount_timeout: float, statter: MountStatter | None = None) -> None:
        self.proc = Path(proc_root)
        self.sys = Path(sys_root)
        self.rootfs = Path(rootfs)
        self.exclude_fstypes = exclude_fstypes
        self.exclude_mounts = exclude_mounts
        self.exclude_devices = exclude_devices
        self.mount_timeout = mount_timeout
        self.statter = statter or MountStatter()

    def mounts(self) -> list[Mount]:
        text = read_text(self.proc / "self" / "mounts") or read_text(self.proc / "mounts")
        if text is None:
            raise OSError(f"cannot read {self.proc / 'self' / 'mounts'}")
        seen: set[str] = set()
        out = []
        for m in parse_mounts(text):
            if matches(self.exclude_fstypes, m.fstype) or matches(self.exclude_mounts, m.mountpoint):
                continue
            if m.mountpoint in seen:  # over-mounted: the last one is what is visible
                out = [x for x in out if x.mountpoint != m.mountpoint]
            seen.add(m.mountpoint)
            out.append(m)
        return out

    def usage(self, mounts: list[Mount]) -> list[MountUsage]:
        out = []
        for m in mounts:
            path = str(self.rootfs / m.mountpoint.lstrip("/")) if str(self.rootfs) != "/" else m.mountpoint
            if REMOTE_FSTYPES.fullmatch(m.fstype):
                st = self.statter.stat(path, self.mount_timeout)
            else:
                try:
                    st = self.statter.statvfs(path)
                except OSError as e:
                    st = e
            if st is None or isinstance(st, OSError):
                out.append(MountUsage(m, responding=False))
                continue
            total = st.f_blocks * st.f_frsize
            free_all = st.f_bfree * st.f_frsize
            out.append(MountUsage(m, True, total=total, free=st.f_bavail * st.f_frsize, used=total - free_all,
                                  inodes_total=st.f_files, inodes_free=st.f_ffree))
        return out

    def disks(self) -> list[DiskStats]:
        text = read_text(self.proc / "diskstats")
        if text is None:
            return []
        try:
            whole = set(os.listdir(self.sys / "block"))
        except OSError:
            whole = None  # no sysfs: fall back to the name patterns alone
        out = []
        for d in parse_diskstats(text):
            if whole is not None and d.device not in whole:
                continue  # a partition
            if matches(self.exclude_devices, d.device):
                continue
            out.append(d)
        return out
