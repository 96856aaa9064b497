import json
import os
import stat
import sys
import threading
import time

import pytest

from agent.model import Accumulator
from collectors.storage import StorageCollector
from collectors.storage.mapping import map_smart
from collectors.storage.reader import MountStatter, parse_mounts
from collectors.storage.smart import SmartRunner, parse_smartctl

from .conftest import FIXTURES, TREES, by_series, run_collector

SMART = FIXTURES / "smartctl"


def fake_statvfs(hang: threading.Event, calls: list):
    def statvfs(path):
        calls.append(path)
        if path == "/data":
            hang.wait(30)  # a hung NFS server
        if path == "/raid":
            raise OSError(5, "Input/output error")
        # f_bsize f_frsize f_blocks f_bfree f_bavail f_files f_ffree f_favail f_flag f_namemax
        return os.statvfs_result((4096, 4096, 1000, 400, 300, 500, 200, 200, 0, 255))
    return statvfs


def test_mounts_usage_and_stuck_network_filesystem():
    hang, calls = threading.Event(), []
    try:
        _, col = run_collector(StorageCollector, "gpunode", smart="off", mount_timeout=0.2)
        col.reader.statter = MountStatter(fake_statvfs(hang, calls))
        for _ in range(2):
            acc = Accumulator(1)
            col.collect(acc)
            s = by_series(acc.close())
        mounts = {dict(k[1])["mountpoint"]: v for k, v in s.items() if k[0] == "storage_mount"}
        assert set(mounts) == {"/", "/run", "/raid", "/data", "/mnt/with space"}
        root = mounts["/"]
        assert root["total_bytes"] == 1000 * 4096
        assert root["free_bytes"] == 300 * 4096
        assert root["used_bytes"] == 600 * 4096
        assert root["used_percent"] == round(100 * 600 / 900, 3)
        assert root["inodes_used"] == 300 and root["responding"] is True and root["read_only"] is False
        assert mounts["/mnt/with space"]["read_only"] is True
        assert mounts["/data"] == {"responding": False, "read_only": False}
        assert mounts["/raid"] == {"responding": False, "read_only": False}
        # the stuck NFS mount was asked once, not again while its first call hangs
        assert calls.count("/data") == 1
    finally:
        hang.set()


def test_disks_whole_devices_only():
    samples, _ = run_collector(StorageCollector, "gpunode", smart="off")
    s = by_series(samples)
    disks = {dict(k[1])["device"]: v for k, v in s.items() if k[0] == "storage_disk"}
    assert set(disks) == {"nvme0n1", "md0", "sda"}  # partition and loop device skipped
    n = disks["nvme0n1"]
    assert n["reads_total"] == 1000000 and n["read_bytes_total"] == 80000000 * 512
    assert n["written_bytes_total"] == 160000000 * 512
    assert n["read_time_seconds_total"] == 500.0 and n["io_time_seconds_total"] == 700.0
    assert n["io_in_progress"] == 3
    assert n["discards_total"] == 5000 and n["discarded_bytes_total"] == 4000000 * 512
    assert n["flushes_total"] == 6000
    assert "discards_total" not in disks["sda"]  # old kernel: 11 fields only


def test_parse_mounts_unescapes_octal():
    (m,) = parse_mounts(r"/dev/sdb1 /mnt/a\040b\011c ext4 rw 0 0")
    assert m.mountpoint == "/mnt/a b\tc"


@pytest.mark.parametrize("fixture,want", [
    ("nvme.json", {"healthy": True, "temperature_celsius": 41.0, "power_on_seconds_total": 15234 * 3600,
                   "power_cycles_total": 57, "critical_warning": 0, "available_spare_percent": 100,
                   "available_spare_threshold_percent": 10, "endurance_used_percent": 3,
                   "media_errors_total": 0, "error_log_entries_total": 12, "unsafe_shutdowns_total": 31,
                   "read_bytes_total": 1234567890 * 512000, "written_bytes_total": 987654321 * 512000,
                   "smartctl_exit_status": 0}),
    ("sata_failing.json", {"healthy": False, "temperature_celsius": 36.0, "power_on_seconds_total": 35000 * 3600,
                           "power_cycles_total": 41, "reallocated_sectors_total": 1200, "pending_sectors": 16,
                           "offline_uncorrectable_sectors": 16, "crc_errors_total": 2,
                           "smartctl_exit_status": 24}),
    ("standby.json", None),
])
def test_parse_smartctl(fixture, want):
    r = parse_smartctl(json.loads((SMART / fixture).read_text()))
    assert (r.fields if r else None) == want


def test_smart_tags():
    r = parse_smartctl(json.loads((SMART / "nvme.json").read_text()))
    acc = Accumulator(1)
    map_smart([r], acc)
    (s,) = acc.close()
    assert s.tags == {"device": "nvme0", "protocol": "NVMe", "model": "SAMSUNG MZWLR7T6HALA-00007",
                      "serial": "S6EUNA0R912345"}


@pytest.fixture
def fake_smartctl(tmp_path):
    """An executable that answers like smartctl from the recorded JSON documents."""
    script = tmp_path / "smartctl"
    script.write_text(f"""#!{sys.executable}
import sys
args = sys.argv[1:]
d = {str(SMART)!r}
if "--scan-open" in args:
    print(open(d + "/scan.json").read()); sys.exit(0)
dev = [a for a in args if a.startswith("/dev/")][0]
name = {{"/dev/nvme0": "nvme.json", "/dev/sda": "sata_failing.json", "/dev/sdb": "standby.json"}}[dev]
doc = open(d + "/" + name).read()
print(doc)
sys.exit(__import__("json").loads(doc)["smartctl"]["exit_status"])
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_smart_runs_in_background_and_reports_once(fake_smartctl):
    _, col = run_collector(StorageCollector, "gpunode", smart="on", smartctl_path=str(fake_smartctl),
                           smart_interval=3600)
    # the first cycle started the refresh; wait for it, then the next cycle reports it
    col.smart._thread.join(10)
    acc = Accumulator(2)
    col.collect(acc)
    smart = {dict(k[1])["device"]: v for k, v in by_series(acc.close()).items() if k[0] == "storage_smart"}
    assert set(smart) == {"nvme0", "sda"}  # the disk in standby was not woken and not reported
    assert smart["sda"]["healthy"] is False
    acc = Accumulator(3)
    col.collect(acc)
    assert not [s for s in acc.close() if s.measurement == "storage_smart"]  # reported once, not repeated


def test_smart_hanging_never_blocks_the_cycle(tmp_path):
    script = tmp_path / "smartctl"
    script.write_text("#!/bin/sh\nsleep 5\n")
    script.chmod(0o755)
    runner = SmartRunner(str(script), ["/dev/nvme0"], interval=3600, timeout=0.3)
    t0 = time.perf_counter()
    assert runner.poll() is None
    assert time.perf_counter() - t0 < 0.2  # poll only starts the thread
    runner._thread.join(5)
    assert "timed out" in (runner.last_error or "")
    assert runner.poll() == []


def test_smart_on_without_smartctl_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="smartctl was not found"):
        run_collector(StorageCollector, "gpunode", smart="on", smartctl_path=str(tmp_path / "nope"))


def test_real_vm_recording_disks():
    samples, _ = run_collector(StorageCollector, TREES / "vm", smart="off")
    disks = {s.tags["device"] for s in samples if s.measurement == "storage_disk"}
    assert "vda" in disks and not any(d.startswith("loop") for d in disks)
