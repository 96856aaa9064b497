from pathlib import Path

from collectors.host import HostCollector
from collectors.host.mapping import cpu_percentages
from collectors.host.reader import HostReading, parse_stat

from .conftest import by_series, run_collector


def test_gpunode_tree_maps_every_host_reading():
    samples, _ = run_collector(HostCollector, "gpunode")
    s = by_series(samples)
    host = s[("host", ())]
    assert host["load_average_1m"] == 12.5 and host["load_average_15m"] == 8.0
    assert host["threads"] == 3210
    assert host["cpu_count"] == 4
    assert host["memory_total_bytes"] == 2113663948 * 1024
    assert host["memory_available_bytes"] == 1900000000 * 1024
    assert host["memory_used_percent"] == round(100 * (2113663948 - 1900000000) / 2113663948, 3)
    assert host["swap_total_bytes"] == 8388604 * 1024
    assert host["swap_used_bytes"] == (8388604 - 8000000) * 1024
    assert host["swap_in_bytes_total"] == 100 * 4096 and host["swap_out_bytes_total"] == 250 * 4096
    assert host["uptime_seconds"] == 950000.25
    assert host["boot_time_seconds"] == 1795000000
    assert host["context_switches_total"] == 123456789012
    assert host["interrupts_total"] == 987654321
    assert host["forks_total"] == 4567890
    assert host["processes_running"] == 5 and host["processes_blocked"] == 1
    assert host["processes"] == 5  # numeric dirs in the recorded /proc
    total = s[("host_cpu", (("cpu", "total"),))]
    assert total["user_seconds_total"] == 10000.0  # 1000000 ticks at USER_HZ=100
    assert total["guest_seconds_total"] == 400.0
    assert "utilization_percent" not in total  # first run: no window yet
    assert ("host_cpu", (("cpu", "3"),)) in s
    pkg = s[("host_temperature", (("chip", "coretemp"), ("device", "coretemp.0"), ("sensor", "Package id 0")))]
    assert pkg == {"temperature_celsius": 61.0, "max_celsius": 84.0, "critical_celsius": 100.0}
    nvme = s[("host_temperature", (("chip", "nvme"), ("device", "nvme0"), ("sensor", "Composite")))]
    assert nvme["temperature_celsius"] == 38.85
    # an unreadable sensor is skipped, the others are kept
    assert not any(k[0] == "host_temperature" and ("sensor", "temp3") in k[1] for k in s)
    sensor1 = s[("host_temperature", (("chip", "nvme"), ("device", "nvme0"), ("sensor", "Sensor 1")))]
    assert sensor1 == {"temperature_celsius": 38.85}


def test_real_vm_recording():
    samples, _ = run_collector(HostCollector, "vm")
    s = by_series(samples)
    assert s[("host", ())]["cpu_count"] == 2
    assert s[("host", ())]["memory_total_bytes"] > 0
    assert not [k for k in s if k[0] == "host_temperature"]  # no hwmon on that VM: nothing, no error


def test_second_run_computes_utilization_from_deltas():
    _, collector = run_collector(HostCollector, "gpunode")
    from agent.model import Accumulator
    prev = collector.previous["total"]
    # pretend 100 s passed with 25% busy
    collector.previous = {"total": {k: v - (75 if k == "idle" else 25 if k == "user" else 0) for k, v in prev.items()}}
    acc = Accumulator(0)
    collector.collect(acc)
    total = by_series(acc.close())[("host_cpu", (("cpu", "total"),))]
    assert total["utilization_percent"] == 25.0
    assert total["iowait_percent"] == 0.0


def test_cpu_percentages_table():
    cases = [
        (None, {"user": 1.0, "idle": 1.0}, {}),
        ({"user": 0, "idle": 0, "iowait": 0}, {"user": 5, "idle": 4, "iowait": 1},
         {"utilization_percent": 50.0, "iowait_percent": 10.0}),
        ({"user": 10, "idle": 10}, {"user": 5, "idle": 20}, {}),  # counters went back (reboot)
        ({"user": 1, "idle": 1}, {"user": 1, "idle": 1}, {}),  # no time passed
        # guest time is inside user already: not counted twice
        ({"user": 0, "idle": 0, "guest": 0}, {"user": 10, "idle": 10, "guest": 10},
         {"utilization_percent": 50.0, "iowait_percent": 0.0}),
    ]
    for prev, cur, want in cases:
        assert cpu_percentages(prev, cur) == want


def test_parse_stat_tolerates_old_kernels():
    r = HostReading()
    parse_stat("cpu  1 2 3 4\ncpu0 1 2 3 4\nctxt 9\n", r, hz=100)
    assert r.cpus[0].seconds == {"user": 0.01, "nice": 0.02, "system": 0.03, "idle": 0.04}
    assert r.context_switches == 9 and r.procs_running is None


def test_memory_parse_matches_psutil_on_every_recorded_tree(tmp_path):
    # psutil is the reference for these semantics; the reader parses /proc/meminfo itself to read it once.
    import warnings
    from pathlib import Path

    import psutil

    from collectors.host.reader import parse_meminfo, parse_vmstat_swap
    trees = sorted(Path(__file__).parent.joinpath("fixtures", "trees").glob("*/proc/meminfo"))
    assert len(trees) >= 2
    old = psutil.PROCFS_PATH
    try:
        for meminfo in trees:
            psutil.PROCFS_PATH = str(meminfo.parent)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                vm, sw = psutil.virtual_memory(), psutil.swap_memory()
            memory, swap = parse_meminfo(meminfo.read_text())
            assert memory == {k: getattr(vm, k) for k in memory} and len(memory) == 7, meminfo
            assert swap == {"total": sw.total, "used": sw.used, "free": sw.free}, meminfo
            assert parse_vmstat_swap((meminfo.parent / "vmstat").read_text()) == (sw.sin, sw.sout)
    finally:
        psutil.PROCFS_PATH = old


def test_memory_parse_odd_shapes():
    from collectors.host.reader import parse_meminfo, parse_vmstat_swap
    # before Linux 3.14 there is no MemAvailable: free + buffers + cached (with SReclaimable), as psutil estimates
    old = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 200 kB\nSReclaimable: 10 kB\n"
    memory, swap = parse_meminfo(old)
    assert memory["available"] == 360 * 1024 and memory["used"] == 640 * 1024 and memory["cached"] == 210 * 1024
    assert swap == {}  # no swap lines: no swap fields, not zeros
    assert parse_meminfo("garbage\n\nMemFree: x kB\n") == ({}, {})
    assert parse_meminfo("MemTotal: 100 kB\nMemFree: 10 kB\nMemAvailable: 500 kB\n")[0]["available"] == 10 * 1024
    assert parse_vmstat_swap("pgpgin 5\npswpin 3\n") is None  # half a pair is no reading
    assert parse_vmstat_swap("pswpin 3\npswpout 4\n") == (3 * 4096, 4 * 4096)


def test_a_tree_without_meminfo_still_reports_the_rest(tmp_path):
    import shutil
    from pathlib import Path

    src = Path(__file__).parent / "fixtures" / "trees" / "vm"
    shutil.copytree(src, tmp_path / "vm", symlinks=True)
    (tmp_path / "vm" / "proc" / "meminfo").unlink()
    samples, _ = run_collector(HostCollector, tmp_path / "vm")
    host = by_series(samples)[("host", ())]
    assert "memory_total_bytes" not in host and "swap_in_bytes_total" not in host and host["cpu_count"] == 2


def _rapl_host(tmp_path, boot: str):
    from agent.collector import Context
    from collectors.host import HostOptions

    proc = tmp_path / f"proc-{boot}"
    (proc / "sys" / "kernel" / "random").mkdir(parents=True, exist_ok=True)
    (proc / "sys" / "kernel" / "random" / "boot_id").write_text(boot + "\n")
    for f in ("stat", "loadavg", "uptime", "meminfo"):
        (proc / f).write_text((Path("/proc") / f).read_text())
    return HostCollector(HostOptions(per_cpu=False, temperatures=False),
                         Context("host", proc_root=proc, sys_root=tmp_path / "sys", state_dir=tmp_path))


def _rapl(col, ts, uj, zone):
    from agent.model import Accumulator

    zone.joinpath("energy_uj").write_text(f"{uj}\n")
    acc = Accumulator(ts, {"host": "n1"})
    col.collect(acc)
    (s,) = [s for s in acc.close() if s.measurement == "host_energy"]
    return s


def test_rapl_energy_never_goes_down_across_a_power_cycle(tmp_path):
    """RAPL restarts at power-on. The counter state is saved with every collection (not every 60 s) with the
    boot id, so the first reading after a power cut continues from the last value emitted."""
    import json

    zone = tmp_path / "sys" / "class" / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    zone.joinpath("max_energy_range_uj").write_text("262143328850\n")
    col = _rapl_host(tmp_path, "boot-a")
    s = 10**9
    e1 = _rapl(col, 1 * s, 90_000_000_000, zone).fields["energy_joules_total"]
    e2 = _rapl(col, 11 * s, 91_500_000_000, zone).fields["energy_joules_total"]
    assert e2 - e1 == 1500.0
    assert json.loads((tmp_path / "rapl-counters.json").read_text())["intel-rapl:0"]["last"] == 91_500.0
    # power cut: no clean stop, no close(); the machine boots again and RAPL starts over, already past nothing
    col2 = _rapl_host(tmp_path, "boot-b")
    f = _rapl(col2, 400 * s, 20_000_000, zone).fields
    assert f["energy_joules_total"] == e2 + 20.0 and f["energy_resets_total"] == 1
    # the same boot after an agent restart: no reset
    col3 = _rapl_host(tmp_path, "boot-b")
    assert _rapl(col3, 410 * s, 21_500_000, zone).fields["energy_joules_total"] == e2 + 21.5
