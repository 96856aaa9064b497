"""The gpu collector over a fake of the NVML adapter built from real NVML behaviour."""

from __future__ import annotations

import time

import pytest

from agent.collector import Context, NotPresent
from agent.model import Accumulator
from agent.registry import default_registry
from collectors.gpu import GpuCollector, GpuOptions
from collectors.gpu.cli import gpu_rows
from collectors.gpu.errors import NvmlNeedsReinit

from .conftest import TREES
from .fakes.nvml import FakeGpu, FakeNvml, fleet

CAT = default_registry().catalogue()


def make(nvml, tmp_path=None, **opts) -> GpuCollector:
    ctx = Context(instance="gpu", proc_root=TREES / "gpuprocs" / "proc", state_dir=tmp_path)
    return GpuCollector(GpuOptions(**{"xid_events": False, **opts}), ctx, nvml=nvml)


def cycle(col, ts=1):
    acc = Accumulator(ts, {"host": "n1"})
    col.collect(acc)
    return acc.close()


def gpu_fields(samples, index=0):
    return next(s.fields for s in samples if s.measurement == "gpu" and s.tags["gpu"] == str(index))


def test_h100_sxm_every_reading_in_catalogue_units():
    col = make(fleet("H100-SXM"))
    samples = cycle(col)
    f = gpu_fields(samples)
    assert f["power_watts"] == 312.456 and f["power_average_watts"] == 305.112
    assert f["energy_joules_total"] == 9_876_543.21 and f["energy_resets_total"] == 0
    assert f["memory_temperature_celsius"] == 41.0 and f["temperature_celsius"] == 38.0
    assert f["temperature_slowdown_celsius"] == 90.0 and f["temperature_shutdown_celsius"] == 92.0
    assert f["memory_temperature_max_celsius"] == 95.0
    assert f["utilization_percent"] == 87 and f["memory_utilization_percent"] == 41
    assert f["memory_total_bytes"] == 85_520_809_984 and f["memory_reserved_bytes"] == 563_019_776
    assert f["sm_clock_hertz"] == 1_755_000_000 and f["memory_clock_max_hertz"] == 2_619_000_000
    assert f["power_limit_watts"] == 700.0 and f["power_limit_default_watts"] == 700.0
    assert f["clocks_event_reasons"] == 1 and f["throttle_power_cap"] is False
    assert f["throttle_power_cap_seconds_total"] == 1.5 and f["throttle_power_brake_seconds_total"] == 0.25
    assert f["pcie_link_generation"] == 5 and f["pcie_link_width"] == 16
    assert f["pcie_tx_bytes_total"] == 81_234_567_890_123
    assert f["pcie_tx_throughput_bytes_per_second"] == 1_250_000 * 1024
    assert f["ecc_corrected_aggregate_total"] == 2 and f["ecc_uncorrected_volatile_total"] == 0
    assert f["row_remap_pending"] is False and f["row_remap_failure"] is False
    assert f["nvlink_replay_errors_total"] == 3 and f["nvlink_tx_bytes_total"] == 5_000_000 * 1024
    assert f["nvlink_links_active"] == 17
    assert "fan_speed_percent" not in f  # SXM: no fan, NotSupported
    assert "retired_pages_sbe" not in f  # Ampere+: page retirement replaced by row remapping
    assert f["lost"] is False and f["persistence_mode"] is True and f["compute_mode"] == "default"
    links = [s for s in samples if s.measurement == "gpu_nvlink"]
    assert len(links) == 18 and links[0].fields["tx_bytes_total"] == 5_000_000 // 18 * 1024
    assert [s.fields["active"] for s in links].count(False) == 1
    info = next(s for s in samples if s.measurement == "gpu_info").fields
    assert info == {"driver_version": "550.127.05", "cuda_version": "12.4", "vbios_version": "96.00.74.00.1C",
                    "serial": "1652300000000"}
    tags = next(s.tags for s in samples if s.measurement == "gpu")
    assert tags == {"host": "n1", "gpu": "0", "uuid": "GPU-00000000-fake-H100-SXM", "model": "NVIDIA H100 80GB HBM3",
                    "pci_bus_id": "00000000:18:00.0", "source": "nvml", "scope": "gpu"}


def test_h200_throttle_reasons_and_a100_without_average_power():
    col = make(fleet("H200-SXM", "A100-SXM"))
    samples = cycle(col)
    h200, a100 = gpu_fields(samples, 0), gpu_fields(samples, 1)
    assert h200["power_watts"] == 655.21 and h200["memory_total_bytes"] == 150_754_820_096
    assert h200["clocks_event_reasons"] == 0x84
    assert h200["throttle_power_cap"] and h200["throttle_power_brake"] and not h200["throttle_thermal"]
    assert a100["power_watts"] == 289.001 and "power_average_watts" not in a100  # GA100
    assert "throttle_power_brake_seconds_total" not in a100
    assert a100["memory_clock_max_hertz"] == 1_593_000_000
    assert len([s for s in samples if s.measurement == "gpu_nvlink" and s.tags["gpu"] == "1"]) == 12


def test_old_gpu_degrades_per_field_and_falls_back():
    col = make(fleet("P4-old"))
    f = gpu_fields(cycle(col))
    assert "energy_joules_total" not in f and "memory_temperature_celsius" not in f
    assert f["power_watts"] == 24.512  # nvmlDeviceGetPowerUsage where the power fields are not supported
    assert "memory_reserved_bytes" not in f and f["memory_total_bytes"] == 8_053_063_680
    assert f["retired_pages_sbe"] == 1 and f["retired_pages_pending"] is False
    assert "row_remap_pending" not in f and "nvlink_links_active" not in f and "mig_mode" not in f
    assert "power_limit_enforced_watts" not in f
    assert f["ecc_corrected_aggregate_total"] == 7


def test_not_supported_is_remembered_and_not_asked_again():
    nvml = fleet("P4-old")
    col = make(nvml)
    for i in range(4):
        cycle(col, i)
    assert nvml.calls["fan_percent"] == 1 and nvml.calls["mig_mode"] == 1
    assert nvml.calls["power_limit_enforced"] == 1
    # unsupported field ids leave the batch after the first cycle
    first, last = nvml.field_requests[0], nvml.field_requests[-1]
    assert (83, 0) in first and (83, 0) not in last and (185, 0) not in last
    assert {fid for fid, _ in last} == {94, 3, 4, 5, 6, 29, 30, 31}
    assert nvml.calls["field_values"] == 4  # one batch per GPU per cycle
    assert nvml.calls["nvlink_active"] == 1  # probed once: no NVLink on this GPU


def test_energy_counter_reset_is_believed_once_it_stays_and_never_gives_a_negative_delta(tmp_path):
    nvml = fleet("H100-SXM")
    g = nvml.gpus[0]
    col = make(nvml, tmp_path)
    e1 = gpu_fields(cycle(col, 1))["energy_joules_total"]
    g.p["fields"][83] += 5_000  # +5 J
    e2 = gpu_fields(cycle(col, 2))["energy_joules_total"]
    g.p["fields"][83] = 1_200  # driver reloaded: counter restarted, 1.2 J since
    pending = gpu_fields(cycle(col, 3))
    assert "energy_joules_total" not in pending  # one reading near zero is not yet a reset
    g.p["fields"][83] = 1_500
    samples = cycle(col, 4)
    e3 = gpu_fields(samples)["energy_joules_total"]
    assert e2 - e1 == pytest.approx(5.0) and e3 - e2 == pytest.approx(1.5)
    assert gpu_fields(samples)["energy_resets_total"] == 1
    assert [s.tags["event"] for s in samples if s.measurement == "gpu_event"] == ["energy_reset"]
    col.close()
    # an agent restart keeps the counter monotonic, and catches a reset that happened while it was down
    g.p["fields"][83] = 100
    col2 = make(nvml, tmp_path)
    assert "energy_joules_total" not in gpu_fields(cycle(col2, 5))
    g.p["fields"][83] = 130
    e4 = gpu_fields(cycle(col2, 6))["energy_joules_total"]
    assert e4 - e3 == pytest.approx(0.13)


def test_energy_reset_while_down_is_bounded_by_the_devices_own_power_limit(tmp_path, monkeypatch):
    """A counter restored from the state that grew by more than the device can draw since the save was reset
    while the agent was down; one that grew by what its own limit allows was not, however large the module."""
    nvml = fleet("GH200")  # a module counter: GPU + Grace, above the GPU's own 900 W
    g = nvml.gpus[0]
    del g.p["fields"][83]  # no GPU-scope counter: the module's is the one
    col = make(nvml, tmp_path)
    s = 1_800_000_000 * 10**9
    e1 = gpu_fields(cycle(col, s))["energy_joules_total"]
    col.close()
    # 100 s later the module drew 2,500 W: above any constant for one GPU, within 3 x the GPU's limit
    g.p["module_fields"][191] += 2_500 * 100 * 1000
    col2 = make(nvml, tmp_path)
    f = gpu_fields(cycle(col2, s + 100 * 10**9))
    assert f["energy_joules_total"] - e1 == pytest.approx(250_000.0) and f["energy_resets_total"] == 0
    # 10 s later it shows 100 kJ more: beyond 3 x 900 W x 1.5 for 10 s, refused as a reading, not a reset
    g.p["module_fields"][191] += 100_000 * 1000
    f = gpu_fields(cycle(col2, s + 110 * 10**9))
    assert "energy_joules_total" not in f and f["energy_refused_total"] == 1 and f["energy_resets_total"] == 0
    col2.close()


def test_gpu_lost_mid_run_others_go_on_and_recovery():
    nvml = fleet("H100-SXM", "H100-SXM")
    col = make(nvml, lost_retry=0.05)
    cycle(col, 1)
    nvml.gpus[1].lost = True
    samples = cycle(col, 2)
    assert gpu_fields(samples, 0)["power_watts"] == 312.456  # the healthy one is untouched
    assert gpu_fields(samples, 1) == {"lost": True, "xid_errors_total": 0}
    assert [(s.tags["gpu"], s.tags["event"]) for s in samples if s.measurement == "gpu_event"] == [("1", "gpu_lost")]
    samples = cycle(col, 3)  # still lost: no repeated event, not asked (retry not due)
    assert gpu_fields(samples, 1)["lost"] is True and not [s for s in samples if s.measurement == "gpu_event"]
    nvml.gpus[1].lost = False
    time.sleep(0.06)
    samples = cycle(col, 4)
    assert gpu_fields(samples, 1)["lost"] is False and gpu_fields(samples, 1)["power_watts"] == 312.456
    assert [s.tags["event"] for s in samples if s.measurement == "gpu_event"] == ["gpu_recovered"]


def test_no_library_or_no_gpu_is_not_present():
    absent = FakeNvml(present=False)
    col = make(absent)
    for _ in range(3):
        with pytest.raises(NotPresent, match="NVML Shared Library Not Found"):
            cycle(col)
    with pytest.raises(NotPresent, match="no GPU"):
        cycle(make(FakeNvml([])))
    # a node without GPUs is looked at again only every lost_retry, not every cycle
    absent.present = True
    absent.gpus = [FakeGpu("H100-SXM", 0)]
    with pytest.raises(NotPresent):
        cycle(col)
    col.options.lost_retry = 0.01
    time.sleep(0.02)
    assert gpu_fields(cycle(col))["power_watts"] == 312.456


def test_driver_reload_reinitialises():
    nvml = fleet("H100-SXM")
    col = make(nvml)
    cycle(col, 1)
    nvml.reinit_next = True
    with pytest.raises(NvmlNeedsReinit):
        cycle(col, 2)
    samples = cycle(col, 3)
    assert nvml.inits == 2 and gpu_fields(samples)["power_watts"] == 312.456


def test_processes_top_n_with_container_job_and_pod():
    nvml = fleet("H200-SXM")
    g = nvml.gpus[0]
    g.processes = [(4242, 30 * 2**30), (5151, 90 * 2**30), (6161, 2**30), (7777, 2**20)]
    g.proc_util = [(5151, 1_000, 71, 33), (4242, 1_200, 12, 5), (5151, 900, 60, 30)]
    col = make(nvml, max_processes=3)
    samples = cycle(col)
    procs = {s.tags["pid"]: s for s in samples if s.measurement == "gpu_process"}
    assert set(procs) == {"5151", "4242", "6161"}  # top 3 by memory
    vllm = procs["5151"]
    assert vllm.tags["process"] == "vllm" and vllm.tags["slurm_job"] == "812345"
    assert vllm.fields == {"memory_used_bytes": 90 * 2**30, "sm_utilization_percent": 71,
                           "memory_utilization_percent": 33}
    k8s = procs["4242"]
    assert k8s.tags["pod"] == "8f3b2c1d-4e5f-4a6b-9c7d-0e1f2a3b4c5d" and k8s.tags["container"] == "4d2f0a7c9b8e"
    assert procs["6161"].tags["container"] == "0123456789ab" and "sm_utilization_percent" not in procs["6161"].fields
    # next cycle asks only for samples newer than the last one seen
    samples = cycle(col, 2)
    assert next(s for s in samples if s.tags.get("pid") == "5151").fields.get("sm_utilization_percent") is None


MIG_PROFILE = "NVIDIA H100 80GB HBM3 MIG 3g.40gb"


def test_mig_instances_with_memory_and_utilization():
    nvml = FakeNvml([FakeGpu("H100-SXM", 0, mig=[
        {"uuid": "MIG-aaaa", "gpu_instance_id": 1, "compute_instance_id": 0, "profile": MIG_PROFILE,
         "memory_used": 10 * 2**30, "memory_total": 40 * 2**30},
        {"uuid": "MIG-bbbb", "gpu_instance_id": 2, "compute_instance_id": 0, "profile": MIG_PROFILE,
         "memory_used": 2**30, "memory_total": 40 * 2**30}])])
    nvml.gpus[0].processes = [(5151, 2**30, 1), (6161, 2**29)]  # one in GPU instance 1, one NVML gives none
    col = make(nvml)
    out = cycle(col, 1)
    first = [s for s in out if s.measurement == "gpu_mig"]
    procs = {s.tags["pid"]: s.tags.get("gpu_instance") for s in out if s.measurement == "gpu_process"}
    assert procs == {"5151": "1", "6161": None}  # the instance a process runs in, where NVML says
    assert {s.tags["mig_uuid"]: s.fields for s in first} == {
        "MIG-aaaa": {"memory_used_bytes": 10 * 2**30, "memory_total_bytes": 40 * 2**30},
        "MIG-bbbb": {"memory_used_bytes": 2**30, "memory_total_bytes": 40 * 2**30}}
    time.sleep(0.11)  # GPM needs its two samples more than 100 ms apart, as NVML does
    samples = cycle(col, 2)
    mig = {s.tags["gpu_instance"]: s.fields for s in samples if s.measurement == "gpu_mig"}
    assert mig["1"]["sm_utilization_percent"] == 42.5 and mig["2"]["sm_utilization_percent"] == 7.0
    f = gpu_fields(samples)
    assert f["mig_mode"] is True and "utilization_percent" not in f  # not supported on MIG-enabled GPUs
    assert nvml.calls["process_utilization"] == 0  # not asked on MIG


def test_xid_events_from_the_watcher_thread():
    nvml = fleet("H100-SXM", "H100-SXM")
    col = make(nvml, xid_events=True)
    cycle(col, 1)
    uuid1 = nvml.gpus[1].uuid
    for xid in (79, 79, 48):
        nvml.events.put((uuid1, 8, xid))
    deadline = time.monotonic() + 5
    while not nvml.events.empty() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    samples = cycle(col, 2)
    ev = {s.tags["xid"]: s.fields["count"] for s in samples if s.measurement == "gpu_event"}
    assert ev == {"79": 2, "48": 1}
    f = gpu_fields(samples, 1)
    assert f["xid_errors_total"] == 3 and f["last_xid"] == 48
    assert gpu_fields(samples, 0)["xid_errors_total"] == 0
    col.close()


def test_everything_emitted_is_declared():
    nvml = FakeNvml([FakeGpu(p, i) for i, p in enumerate(["H100-SXM", "H200-SXM", "A100-SXM", "P4-old"])])
    nvml.gpus[0].processes = [(5151, 2**30)]
    col = make(nvml)
    for ts in (1, 2):
        samples = cycle(col, ts)
    for s in samples:
        for f in s.fields:
            m = CAT.get(s.measurement, f)
            assert m is not None, (s.measurement, f)
            assert set(s.tags) <= set(m.tags) | {"host"}, (s.measurement, f, s.tags)


def test_gpus_command_rows():
    samples = cycle(make(fleet("H200-SXM", "P4-old")))
    rows = gpu_rows(samples)
    assert [r["index"] for r in rows] == [0, 1]
    assert rows[0]["throttle_reasons"] == ["power_cap", "power_brake"]
    assert rows[0]["power_watts"] == 655.21 and rows[1]["energy_joules_total"] is None


def test_a_state_file_from_before_the_ledger_in_millijoules_is_read_as_joules(tmp_path):
    """The GPU energy state used to keep NVML's raw millijoules; after an upgrade the counter goes on from where
    it was, in joules, rather than taking the unit change for a reset (a jump of the whole counter x 1000)."""
    import json

    nvml = fleet("H100-SXM")
    g = nvml.gpus[0]
    g.p["fields"][83] = 9_876_543_210  # mJ
    (tmp_path / "gpu-energy.json").write_text(json.dumps(
        {g.uuid: {"last": 9_876_000_000, "offset": 5_000_000, "resets": 1, "at": 1.0, "boot": None}}))
    col = make(nvml, tmp_path)
    f = gpu_fields(cycle(col, 10**9))
    assert f["energy_joules_total"] == pytest.approx(9_876_543.21 + 5_000.0) and f["energy_resets_total"] == 1
    col.close()


# --- GPM: profiling metrics over each window (Hopper+) -------------------------------------------------------------


@pytest.mark.parametrize("profile,want", [
    ("H100-SXM", {"sm_active_percent": 91.0, "sm_occupancy_percent": 38.5, "tensor_active_percent": 52.0,
                  "tensor_hmma_active_percent": 49.5, "dram_active_percent": 61.0, "fp16_active_percent": 24.0,
                  "nvdec_active_percent": 5.0, "pcie_rx_bytes_per_second": 2400.0 * 2**20,
                  "nvlink_tx_bytes_per_second": 150_000.0 * 2**20}),
    ("H200-SXM", {"sm_active_percent": 78.0, "tensor_active_percent": 31.0, "dram_active_percent": 83.0}),
    ("GH200", {"sm_active_percent": 91.0, "tensor_active_percent": 52.0}),
])
def test_hopper_gpus_report_sm_tensor_and_dram_activity_over_each_window(profile, want):
    import time

    nvml = fleet(profile)
    col = make(nvml, processes=False)
    first = gpu_fields(cycle(col, 1))
    assert "sm_active_percent" not in first  # one sample: no window yet
    time.sleep(0.11)  # NVML wants the two samples more than 100 ms apart
    f = gpu_fields(cycle(col, 2))
    col.close()
    for k, v in want.items():
        assert f[k] == v, k
    if profile == "GH200":  # this driver answers no per-precision tensor metrics: left out, the rest kept
        assert not {"tensor_hmma_active_percent", "tensor_imma_active_percent"} & set(f)


def test_a_gpu_without_gpm_is_said_once_and_not_asked_again(caplog):
    import logging
    import time

    nvml = fleet("A100-SXM")
    col = make(nvml, processes=False)
    caplog.set_level(logging.INFO)
    for ts in (1, 2, 3):
        f = gpu_fields(cycle(col, ts))
        time.sleep(0.11)
    col.close()
    assert not [k for k in f if k.endswith("_active_percent")] and f["power_watts"] > 0
    assert caplog.text.count("no GPM") == 1 and nvml.calls["gpm"] == 1


def test_gpm_per_mig_instance_fills_the_mig_rows():
    import time

    mig = [{"uuid": f"MIG-{gi}", "gpu_instance_id": gi, "compute_instance_id": 0, "profile": "3g.40gb",
            "memory_used": 2**30, "memory_total": 40 * 2**30} for gi in (1, 2)]
    nvml = FakeNvml([FakeGpu("H100-SXM", 0, mig=mig)])
    col = make(nvml, processes=False)
    cycle(col, 1)
    time.sleep(0.11)
    samples = cycle(col, 2)
    col.close()
    rows = {s.tags["gpu_instance"]: s.fields for s in samples if s.measurement == "gpu_mig"}
    assert rows["1"]["sm_utilization_percent"] == 42.5 and rows["1"]["tensor_active_percent"] == 30.0
    assert rows["2"]["sm_occupancy_percent"] == 2.0 and rows["2"]["dram_active_percent"] == 3.0
    assert "sm_active_percent" not in gpu_fields(samples)  # on a MIG-enabled GPU GPM is per instance


def adapter_over_pynvml(pynvml, **calls):
    """collectors.gpu.nvml.Nvml over pynvml's own constants and structures (nvidia-ml-py), the NVML functions it
    calls stood in by `calls`."""
    import types

    from collectors.gpu.nvml import Nvml

    n = types.SimpleNamespace(**{k: getattr(pynvml, k) for k in dir(pynvml) if k.startswith(("NVML_", "c_"))})
    n.NVMLError = pynvml.NVMLError
    for name, fn in calls.items():
        setattr(n, name, fn)
    a = Nvml()
    a.n = n
    return a


def test_the_adapter_takes_two_gpm_samples_in_turn_and_honours_each_metrics_return_code():
    """collectors.gpu.nvml.Nvml over pynvml's own GPM structures and constants (nvidia-ml-py), its calls stood in:
    the samples are allocated once and reused in turn, the first window raises NotFound, a metric whose
    nvmlReturn is NOT_SUPPORTED (3) is left out, the samples are freed at the end."""
    pynvml = pytest.importorskip("pynvml")
    from collectors.gpu.errors import NvmlNotFound

    allocated, taken, freed = [], [], []

    def alloc():
        s = pynvml.c_nvmlGpmSample_t()
        allocated.append(s)
        return s

    def metrics_get(req):
        for i in range(req.numMetrics):
            mid = req.metrics[i].metricId
            req.metrics[i].nvmlReturn = 3 if mid == pynvml.NVML_GPM_METRIC_IMMA_TENSOR_UTIL else 0
            req.metrics[i].value = float(mid)  # each metric's id as its value: the mapping is visible
        return req

    a = adapter_over_pynvml(pynvml, nvmlGpmSampleAlloc=alloc, nvmlGpmSampleGet=lambda h, s: taken.append(s),
                            nvmlGpmMetricsGet=metrics_get, nvmlGpmSampleFree=freed.append)
    state: dict = {}
    with pytest.raises(NvmlNotFound):
        a.gpm_metrics("h", state, "gpu")
    got = a.gpm_metrics("h", state, "gpu")
    a.gpm_metrics("h", state, "gpu")
    assert len(allocated) == 2 and taken == [allocated[0], allocated[1], allocated[0]]
    for name in ("SM_UTIL", "DRAM_BW_UTIL", "NVLINK_TOTAL_RX_PER_SEC"):
        assert got[name] == getattr(pynvml, "NVML_GPM_METRIC_" + name)
    assert "IMMA_TENSOR_UTIL" not in got
    a.gpm_free(state)
    assert freed == allocated and state == {}


# --- the power envelope: limits' range, memory scope, workload profiles, power smoothing ---------------------------


@pytest.mark.parametrize("profile,want,absent", [
    ("H100-SXM", {"power_limit_min_watts": 200.0, "power_limit_max_watts": 700.0},
     {"memory_power_watts", "power_profiles_requested", "power_smoothing_enabled"}),
    ("A100-SXM", {"power_limit_min_watts": 100.0, "power_limit_max_watts": 400.0},
     {"memory_power_watts", "power_profiles_enforced", "power_smoothing_profile"}),
    ("P4-old", {"power_limit_min_watts": 50.0, "power_limit_max_watts": 75.0},
     {"memory_power_watts", "power_profiles_requested", "power_smoothing_enabled"}),
    ("GB200", {"power_limit_min_watts": 200.0, "power_limit_max_watts": 1200.0, "memory_power_watts": 88.25,
               "power_profiles_requested": "llm_inference", "power_profiles_enforced": "llm_inference,sync_balanced",
               "power_smoothing_enabled": True, "power_smoothing_profile": 2, "power_smoothing_floor_percent": 65.0,
               "power_smoothing_ramp_up_watts_per_second": 250.0,
               "power_smoothing_ramp_down_watts_per_second": 120.0,
               "power_smoothing_ramp_down_hysteresis_seconds": 2.0, "power_watts": 1010.5}, set()),
])
def test_the_power_envelope_is_read_where_the_generation_has_it(profile, want, absent):
    nvml = fleet(profile)
    col = make(nvml, processes=False)
    cycle(col, 1)
    f = gpu_fields(cycle(col, 2))  # the smoothing profile's parameters are asked for the profile seen before
    col.close()
    for k, v in want.items():
        assert f[k] == v, k
    assert not absent & set(f)
    assert f["power_watts"] > 0 and f["lost"] is False  # the rest of the GPU unaffected by what it lacks


def test_a_smoothing_profile_change_drops_the_old_profiles_parameters_then_reads_the_new_ones():
    nvml = fleet("GB200")
    g = nvml.gpus[0]
    g.p["smoothing"][3] = {260: 40.0, 261: 500_000, 262: 300_000, 263: 500}
    col = make(nvml, processes=False)
    first = gpu_fields(cycle(col, 1))
    assert first["power_smoothing_profile"] == 2 and "power_smoothing_floor_percent" not in first
    assert gpu_fields(cycle(col, 2))["power_smoothing_floor_percent"] == 65.0
    g.p["fields"][264] = 3
    changed = gpu_fields(cycle(col, 3))
    assert changed["power_smoothing_profile"] == 3 and "power_smoothing_floor_percent" not in changed
    f = gpu_fields(cycle(col, 4))
    col.close()
    assert f["power_smoothing_floor_percent"] == 40.0 and f["power_smoothing_ramp_up_watts_per_second"] == 500.0
    assert nvml.field_requests[-1][-4:] == [(260, 3), (261, 3), (262, 3), (263, 3)]


def test_memory_scope_power_is_asked_in_the_same_field_batch_and_left_out_where_unsupported():
    nvml = fleet("H100-SXM", "GB200")
    col = make(nvml, processes=False)
    samples = cycle(col, 1)
    col.close()
    assert "memory_power_watts" not in gpu_fields(samples, 0) and gpu_fields(samples, 1)["memory_power_watts"] == 88.25
    assert all((186, 2) in req for req in nvml.field_requests)
    assert nvml.calls["field_values"] == 2  # one batch per GPU, memory scope included


def test_workload_power_profile_masks_decode_bit_by_bit_across_words():
    from collectors.gpu.mapping import profile_names
    from collectors.gpu.nvml import mask_bits

    assert mask_bits([0b1000001, 0, 1, 0, 0, 0, 0, 0]) == [0, 6, 64]
    assert mask_bits([0] * 8) == []
    assert profile_names([7, 12]) == "llm_training,sync_balanced" and profile_names([]) == ""
    assert profile_names([200]) == "200"  # a profile newer than this table keeps its number


def test_the_adapter_reads_workload_profiles_from_pynvmls_structure():
    import ctypes

    pynvml = pytest.importorskip("pynvml")

    def current(h, ref):
        cur = ctypes.cast(ref, ctypes.POINTER(pynvml.c_nvmlWorkloadPowerProfileCurrentProfiles_v1_t)).contents
        cur.requestedProfilesMask.mask[0] = 1 << pynvml.NVML_POWER_PROFILE_LLM_TRAINING
        cur.enforcedProfilesMask.mask[0] = (1 << pynvml.NVML_POWER_PROFILE_LLM_TRAINING
                                            | 1 << pynvml.NVML_POWER_PROFILE_SYNC_BALANCED)

    a = adapter_over_pynvml(pynvml, nvmlDeviceWorkloadPowerProfileGetCurrentProfiles=current,
                            nvmlDeviceGetPowerManagementLimitConstraints=lambda h: [200_000, 700_000])
    assert a.workload_power_profiles("h") == ([7], [7, 12])
    assert a.power_limit_constraints_mw("h") == (200_000, 700_000)


# --- fast power sampling --------------------------------------------------------------------------------------------


def test_a_power_window_summary_has_min_max_mean_p99_swing_and_the_largest_step():
    from collectors.gpu.sampler import summarise

    s = summarise([100.0, 300.0, 200.0, 1000.0], before=900.0)
    assert (s.min, s.max, s.mean, s.p99, s.swing, s.samples) == (100.0, 1000.0, 400.0, 1000.0, 900.0, 4)
    assert s.step_max == 800.0  # 900 -> 100 across the interval boundary
    assert summarise([]) is None
    ramp = summarise([float(w) for w in range(1, 201)])
    assert ramp.p99 == 198.0 and ramp.step_max == 1.0  # nearest rank: the 198th of 200


def _sequence(values_mw):
    it = iter(values_mw)
    return lambda _t: next(it)


def test_the_sampler_sums_the_node_at_the_same_instants_and_only_where_every_gpu_answered():
    from collectors.gpu.sampler import PowerSampler, Target

    nvml = fleet("H100-SXM", "H100-SXM")
    a, b = nvml.gpus
    a.power_fn = _sequence([300_000, 650_000, 310_000, 640_000, 300_000])
    b.power_fn = _sequence([400_000, 400_000, 700_000])
    sp = PowerSampler(nvml, 10)
    sp.set_targets([Target(g.uuid, g, "gpu") for g in (a, b)])
    for _ in range(3):
        sp._tick()
    b.lost = True  # falls off the bus: its samples stop, the node sums stop with them
    for _ in range(2):
        sp._tick()
    d = sp.drain()
    ga, gb = d.gpus[a.uuid], d.gpus[b.uuid]
    assert (ga.samples, ga.min, ga.max, ga.swing, ga.step_max) == (5, 300.0, 650.0, 350.0, 350.0)
    assert ga.mean == pytest.approx(440.0) and ga.p99 == 650.0
    assert (gb.samples, gb.swing, gb.step_max) == (3, 300.0, 300.0)
    assert d.errors == 2  # the lost GPU's two reads, counted
    node, gpus = d.node["gpu"]
    assert gpus == 2 and node.samples == 3 and (node.min, node.max, node.mean) == (700.0, 1050.0, 920.0)
    # the next interval: the step is measured from the last sample before it
    a.power_fn = _sequence([900_000])
    sp.set_targets([Target(a.uuid, a, "gpu")])
    sp._tick()
    d = sp.drain()
    assert d.gpus[a.uuid].step_max == 600.0 and b.uuid not in d.gpus
    assert d.node["gpu"][1] == 1 and d.node["gpu"][0].step_max == 0.0  # another set of GPUs: no step from it


def test_a_gpu_without_the_instant_power_field_is_said_once_and_left_out(caplog):
    import logging

    from collectors.gpu.sampler import PowerSampler, Target

    caplog.set_level(logging.INFO)
    nvml = fleet("P4-old", "H100-SXM")
    sp = PowerSampler(nvml, 10)
    sp.set_targets([Target(g.uuid, g, "gpu") for g in nvml.gpus])
    for _ in range(3):
        sp._tick()
    d = sp.drain()
    assert set(d.gpus) == {nvml.gpus[1].uuid} and d.node["gpu"][1] == 1
    assert caplog.text.count("no instant power field") == 1
    assert sum(1 for r in nvml.field_requests if r == [(186, 0)]) == 3 + 1  # P4 asked once, then no more


def test_power_sampling_in_the_collector_reports_per_gpu_and_node_rows_from_its_thread():
    nvml = fleet("H100-SXM", "GB200")
    nvml.gpus[0].power_fn = lambda t: 300_000 if int(t * 20) % 2 else 650_000
    col = make(nvml, processes=False, power_sampling=True, power_sample_hz=50)
    first = cycle(col, 1)
    assert not [s for s in first if s.measurement == "gpu_node"]  # the sampler starts with the first cycle
    deadline = time.monotonic() + 30
    while col.sampler.ticks < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    samples = cycle(col, 2)
    col.close()
    assert col.sampler is None
    f0, f1 = gpu_fields(samples, 0), gpu_fields(samples, 1)
    assert f0["power_samples"] >= 10 and f0["power_min_watts"] <= f0["power_mean_watts"] <= f0["power_max_watts"]
    assert {f0["power_min_watts"], f0["power_max_watts"]} <= {300.0, 650.0}
    assert f1["power_swing_watts"] == 0.0 and f1["power_mean_watts"] == 1010.5  # a steady GPU
    node = [s for s in samples if s.measurement == "gpu_node"]
    assert len(node) == 1 and node[0].tags == {"host": "n1", "source": "nvml", "scope": "gpu"}
    assert node[0].fields["gpus"] == 2 and node[0].fields["power_samples"] >= 10
    assert node[0].fields["power_min_watts"] >= 300.0 + 1010.5
    for s in samples:
        for k in s.fields:
            assert CAT.get(s.measurement, k) is not None, (s.measurement, k)


def test_power_sampling_is_off_by_default_and_its_rate_is_bounded():
    from pydantic import ValidationError

    col = make(fleet("H100-SXM"), processes=False)
    samples = cycle(col, 1)
    col.close()
    assert col.sampler is None and "power_samples" not in gpu_fields(samples)
    assert GpuOptions(power_sampling=True).power_sample_hz == 10.0
    with pytest.raises(ValidationError):
        GpuOptions(power_sampling=True, power_sample_hz=200)


def test_a_field_or_scope_the_driver_does_not_know_is_not_asked_again():
    """A driver older than a field id or a power scope answers INVALID_ARGUMENT in that entry: left out like
    NOT_SUPPORTED, the rest of the batch kept."""
    nvml = fleet("H100-SXM")
    real = nvml.field_values

    def older_driver(h, ids):
        return [(fid, scope, 2, None) if (fid, scope) in ((186, 2), (251, 0)) else (fid, scope, ret, val)
                for fid, scope, ret, val in real(h, ids)]

    nvml.field_values = older_driver
    col = make(nvml, processes=False)
    cycle(col, 1)
    f = gpu_fields(cycle(col, 2))
    col.close()
    assert f["power_watts"] == 312.456 and "memory_power_watts" not in f
    assert (186, 2) not in nvml.field_requests[-1] and (251, 0) not in nvml.field_requests[-1]
