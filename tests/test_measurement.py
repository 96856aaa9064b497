"""Measurement truth: the inference adapters against what the servers' own metrics code prints.

Each page below is derived from the named server's source as cited; values are the test's own.
"""

from __future__ import annotations

from collectors.inference.mapping import parse

from .test_inference import page


def test_trtllm_undefined_model_label_takes_the_configured_model():
    # tensorrt_llm/serve/openai_server.py labels every series model_name="undefined" (hard-coded)
    text = page("trtllm").replace('model_name="llama-3.1-70b"', 'model_name="undefined"')
    kind, (r,) = parse(text, "auto", "llama-3.1-70b-instruct")
    assert kind == "trtllm" and r.model == "llama-3.1-70b-instruct"
    assert (r.prompt_tokens, r.generation_tokens) == (26000.0, 17600.0)
    assert r.requests == {"stop": 88.0}
    empty = page("trtllm").replace('model_name="llama-3.1-70b"', 'model_name=""')
    assert parse(empty, "auto", "m")[1][0].model == "m"


def test_vllm_without_inter_token_latency_falls_back_to_time_per_output_token():
    # vLLM <= 0.10 and the V0 engine (vllm/engine/metrics.py) have vllm:time_per_output_token_seconds only
    text = page("vllm").replace("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")
    _, (r,) = parse(text)
    assert (r.itl_sum, r.itl_count) == (750.0, 50000.0)
    # Triton's vLLM backend (model.py of triton-inference-server/vllm_backend) labels its series `model`
    triton_vllm = page("vllm").replace("model_name=", "model=")
    _, (r,) = parse(triton_vllm)
    assert r.model == "meta-llama/Llama-3.1-8B-Instruct" and r.prompt_tokens == 1000.0


def test_a_server_before_its_first_request_is_up_without_token_fields():
    # SGLang creates its token counters on the first request (python/sglang/srt/metrics/collector.py); its
    # gauges are there from the start
    fresh = ("# HELP sglang:num_running_reqs The number of running requests.\n"
             "# TYPE sglang:num_running_reqs gauge\n"
             'sglang:num_running_reqs{model_name="Qwen/Qwen2.5-7B-Instruct"} 0.0\n'
             "# HELP sglang:num_queue_reqs The number of requests in the waiting queue.\n"
             "# TYPE sglang:num_queue_reqs gauge\n"
             'sglang:num_queue_reqs{model_name="Qwen/Qwen2.5-7B-Instruct"} 0.0\n')
    assert parse(fresh) == ("sglang", [])
    # a configured server type whose series are absent altogether is still an error
    import pytest

    with pytest.raises(ValueError, match="no vllm series"):
        parse(fresh, "vllm")


# --- GPU events (nvml.h: nvmlEventTypeXidCriticalError 0x8 with the XID in eventData; nvmlEventTypeDoubleBitEccError
# 0x2 with eventData 0; nvmlEventSetWait_v2 answers NVML_ERROR_GPU_IS_LOST when a GPU of the set is lost) ---------


def _wait_drained(nvml):
    import time

    deadline = time.monotonic() + 5
    while not nvml.events.empty() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)


def test_double_bit_ecc_events_are_counted_as_ecc_not_as_xids():
    from .test_gpu import cycle, fleet, gpu_fields, make

    nvml = fleet("H100-SXM", "H100-SXM")
    col = make(nvml, xid_events=True)
    cycle(col, 1)
    uuid = nvml.gpus[0].uuid
    for item in ((uuid, 0x2, 0), (uuid, 0x2, 0), (uuid, 0x8, 48)):
        nvml.events.put(item)
    _wait_drained(nvml)
    samples = cycle(col, 2)
    col.close()
    events = {(s.tags["event"], s.tags.get("xid")): s.fields["count"] for s in samples if s.measurement == "gpu_event"}
    assert events == {("ecc_dbe", None): 2, ("xid", "48"): 1}
    f = gpu_fields(samples, 0)
    assert f["xid_errors_total"] == 1 and f["last_xid"] == 48


def test_xid_watcher_survives_gpu_is_lost_and_is_rearmed_after_recovery():
    from collectors.gpu.errors import NvmlGpuLost

    from .test_gpu import cycle, fleet, gpu_fields, make

    nvml = fleet("H100-SXM", "H100-SXM")
    col = make(nvml, xid_events=True, lost_retry=0.01)
    cycle(col, 1)
    assert nvml.calls["event_set"] == 1
    nvml.gpus[1].lost = True
    nvml.events.put(NvmlGpuLost("GPU is lost"))  # the wait's answer once GPU 1 fell off the bus
    nvml.events.put((nvml.gpus[0].uuid, 0x8, 79))  # a later XID on the healthy GPU
    _wait_drained(nvml)
    import time

    time.sleep(1.2)  # the watcher pauses a second after GPU_IS_LOST
    samples = cycle(col, 2)
    assert gpu_fields(samples, 0)["xid_errors_total"] == 1
    assert gpu_fields(samples, 1)["lost"] is True
    nvml.gpus[1].lost = False
    time.sleep(0.05)
    samples = cycle(col, 3)
    assert ("gpu_recovered" in {s.tags["event"] for s in samples if s.measurement == "gpu_event"})
    assert nvml.calls["event_set"] == 2 and len(nvml.event_handles) == 2  # re-armed with both GPUs
    nvml.events.put((nvml.gpus[1].uuid, 0x8, 94))
    _wait_drained(nvml)
    samples = cycle(col, 4)
    col.close()
    assert gpu_fields(samples, 1)["last_xid"] == 94


# --- GPU energy across reboots and crashes -------------------------------------------------------------


def _gpu_with_boot(tmp_path, nvml, boot: str):
    from agent.collector import Context
    from collectors.gpu import GpuCollector, GpuOptions

    proc = tmp_path / f"proc-{boot}"
    (proc / "sys" / "kernel" / "random").mkdir(parents=True, exist_ok=True)
    (proc / "sys" / "kernel" / "random" / "boot_id").write_text(boot + "\n")
    return GpuCollector(GpuOptions(xid_events=False, processes=False),
                        Context("gpu", proc_root=proc, state_dir=tmp_path), nvml=nvml)


def test_energy_state_is_saved_every_collection_and_a_reset_while_down_is_caught(tmp_path):
    import json

    from .test_gpu import cycle, fleet, gpu_fields

    nvml = fleet("H200-SXM")
    g = nvml.gpus[0]
    g.p["fields"][83] = 40_000_000  # 40 kJ since the driver loaded
    col = _gpu_with_boot(tmp_path, nvml, "boot-a")
    e1 = gpu_fields(cycle(col, 1))["energy_joules_total"]
    g.p["fields"][83] = 40_700_000
    e2 = gpu_fields(cycle(col, 2))["energy_joules_total"]
    # saved with the collection, not every 60 s: a power loss now loses nothing of what was emitted
    saved = json.loads((tmp_path / "gpu-energy.json").read_text())[g.uuid]
    assert saved["last"] == 40_700.0 and e2 - e1 == 700.0  # joules
    # hard reboot; the agent starts an hour later: the counter restarted and is already past the saved value
    g.p["fields"][83] = 2_500_000_000
    col2 = _gpu_with_boot(tmp_path, nvml, "boot-b")
    samples = cycle(col2, 3)
    e3 = gpu_fields(samples)["energy_joules_total"]
    assert e3 - e2 == 2_500_000.0  # all of it is new energy
    assert gpu_fields(samples)["energy_resets_total"] == 1
    assert "energy_reset" in {s.tags["event"] for s in samples if s.measurement == "gpu_event"}
    # same boot, but more energy than the GPU can draw since the save: the driver was reloaded meanwhile
    state = json.loads((tmp_path / "gpu-energy.json").read_text())
    state[g.uuid]["at"] -= 10.0
    (tmp_path / "gpu-energy.json").write_text(json.dumps(state))
    g.p["fields"][83] = 2_500_000_000 + 100_000_000  # +100 kJ in ~10 s: 10 kW
    col3 = _gpu_with_boot(tmp_path, nvml, "boot-b")
    e4 = gpu_fields(cycle(col3, 4))["energy_joules_total"]
    assert e4 - e3 == 2_600_000.0


def test_refused_readings_are_asked_again_when_mig_changes_and_periodically(monkeypatch):
    from collectors.gpu.reader import GpuReader

    from .fakes.nvml import FakeGpu, FakeNvml
    from .test_gpu import cycle, gpu_fields, make

    mig = [{"gpu_instance_id": 1, "compute_instance_id": 0, "uuid": "MIG-1", "profile": "1g.10gb",
            "memory_total": 10 * 2**30, "memory_used": 2**30}]
    nvml = FakeNvml([FakeGpu("H100-SXM", 0, mig=list(mig))])
    col = make(nvml, processes=False)
    f = gpu_fields(cycle(col, 1))
    assert "row_remap_pending" not in f  # NOT_SUPPORTED while MIG is on
    nvml.gpus[0].mig = []  # MIG switched off
    cycle(col, 2)  # the mode change is seen
    f = gpu_fields(cycle(col, 3))
    assert f["row_remap_pending"] == 0 and f["row_remap_failure"] == 0  # back without a restart
    # and, without a MIG change, a refused reading is asked again after REPROBE
    monkeypatch.setattr(GpuReader, "REPROBE", 0.0)
    nvml.gpus[0].p["unsupported"] = nvml.gpus[0].p["unsupported"] | {"pstate"}
    assert "performance_state" not in gpu_fields(cycle(col, 4))
    nvml.gpus[0].p["unsupported"] = nvml.gpus[0].p["unsupported"] - {"pstate"}
    assert "performance_state" in gpu_fields(cycle(col, 5))
    col.close()


def test_a_gpu_refusing_its_handle_is_left_out_not_the_node():
    import time

    from collectors.gpu.errors import NvmlError, NvmlNoPermission

    from .test_gpu import cycle, fleet, make

    nvml = fleet("H100-SXM", "H100-SXM", "H100-SXM")
    nvml.gpus[1].handle_error = NvmlNoPermission("Insufficient Permissions")
    nvml.gpus[2].handle_error = NvmlError("Insufficient External Power")
    col = make(nvml, lost_retry=0.05)
    samples = cycle(col, 1)
    gpus = {s.tags["gpu"]: s.fields for s in samples if s.measurement == "gpu"}
    assert set(gpus) == {"0"} and gpus["0"]["power_watts"] == 312.456  # the node is monitored
    nvml.gpus[2].handle_error = None  # power restored
    time.sleep(0.06)
    samples = cycle(col, 2)
    gpus = {s.tags["gpu"]: s.fields for s in samples if s.measurement == "gpu"}
    assert set(gpus) == {"0", "2"} and gpus["2"]["lost"] is False
    col.close()


def test_gpm_is_sampled_once_per_gpu_instance_per_cycle():
    import time

    from .fakes.nvml import FakeGpu, FakeNvml
    from .test_gpu import cycle, make

    mig = [{"uuid": f"MIG-{ci}", "gpu_instance_id": 1, "compute_instance_id": ci, "profile": "3g.40gb",
            "memory_used": 2**30, "memory_total": 40 * 2**30} for ci in (0, 1)]
    nvml = FakeNvml([FakeGpu("H100-SXM", 0, mig=mig)])
    col = make(nvml, processes=False)
    cycle(col, 1)
    time.sleep(0.15)
    samples = cycle(col, 2)
    col.close()
    util = {s.tags["mig_uuid"]: s.fields.get("sm_utilization_percent") for s in samples if s.measurement == "gpu_mig"}
    assert util == {"MIG-0": 42.5, "MIG-1": 42.5}  # both compute instances of GPU instance 1
    assert nvml.calls["gpm:1"] == 2  # one sample per cycle, not one per compute instance


def test_a_driver_upgraded_under_the_agent_makes_it_exit_75_for_a_restart(state_dir, caplog):
    """After a driver upgrade (module reloaded) nvmlInit fails with LIB_RM_VERSION_MISMATCH for good in the
    running process: the agent stops cleanly with 75 (systemd restarts it: Restart=on-failure), instead of
    failing every cycle. A process where NVML never worked is not restarted (a new one would fail alike)."""
    import asyncio
    import logging

    from agent.config import build_config
    from agent.registry import Registry
    from agent.scheduler import Agent
    from collectors.gpu import GpuCollector
    from collectors.gpu.errors import NvmlNeedsReinit

    from .fakes.nvml import fleet

    nvml = fleet("H200-SXM")
    TestGpu.nvml = nvml
    registry = Registry({"gpu": "tests.test_measurement:TestGpu"})
    cfg = build_config({"agent": {"hostname": "t1", "interval": 0.2, "align": False},
                        "collectors": {"gpu": {"xid_events": False, "processes": False}},
                        "outputs": {"local": {"enabled": False}}}, {}, None, registry)
    agent = Agent(cfg, state_dir, registry)
    caplog.set_level(logging.INFO)

    async def scenario():
        task = asyncio.create_task(agent.run(duration=20))
        await asyncio.sleep(0.5)  # NVML works
        nvml.reinit_next = True  # the module is reloaded: the next call needs re-initialisation ...
        nvml.init_error = NvmlNeedsReinit("RM has detected an NVML/RM version mismatch")  # ... which fails
        return await asyncio.wait_for(task, 15)

    assert asyncio.run(scenario()) == 75
    assert "driver was replaced under the agent" in caplog.text
    (st,) = [r.stats() for r in agent.runners]
    assert st["runs_total"] >= 4 and GpuCollector.INIT_MISMATCH_RESTART == 3
    # a process in which NVML never worked is not restarted
    fresh = fleet("H200-SXM")
    fresh.init_error = NvmlNeedsReinit("RM has detected an NVML/RM version mismatch")
    TestGpu.nvml = fresh
    agent2 = Agent(cfg, state_dir, registry)
    assert asyncio.run(agent2.run(duration=1.5)) == 0


from collectors.gpu import GpuCollector as _GpuCollector  # noqa: E402


class TestGpu(_GpuCollector):
    """The real gpu collector over the fake NVML the test hands it."""

    __test__ = False
    nvml = None

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx, nvml=TestGpu.nvml)


def test_clocks_event_reasons_fall_back_to_the_throttle_reasons_call_on_older_drivers():
    """The adapter over a stand-in of pynvml: an older driver lacks nvmlDeviceGetCurrentClocksEventReasons
    (NVML_ERROR_FUNCTION_NOT_FOUND, 13); the deprecated throttle-reasons call answers."""
    import types

    import pytest

    from collectors.gpu.errors import NvmlNotSupported
    from collectors.gpu.nvml import Nvml

    class NVMLError(Exception):
        def __init__(self, value):
            self.value = value
            super().__init__(f"NVML error {value}")

    def missing(h):
        raise NVMLError(13)

    nv = Nvml()
    nv.n = types.SimpleNamespace(NVMLError=NVMLError, nvmlDeviceGetCurrentClocksEventReasons=missing,
                                 nvmlDeviceGetCurrentClocksThrottleReasons=lambda h: 0x4)
    assert nv.clocks_event_reasons("h") == 0x4
    nv.n = types.SimpleNamespace(NVMLError=NVMLError, nvmlDeviceGetCurrentClocksEventReasons=lambda h: 0x1)
    assert nv.clocks_event_reasons("h") == 0x1  # pynvml 14 without the old name
    nv.n = types.SimpleNamespace(NVMLError=NVMLError, nvmlDeviceGetCurrentClocksEventReasons=missing)
    with pytest.raises(NvmlNotSupported):
        nv.clocks_event_reasons("h")


def test_llamacpp_rounded_counters_refuse_windows_they_cannot_resolve(caplog):
    """llama.cpp's server prints its counters with 6 significant digits (as found reading its metrics
    code): 12,345,678 tokens read back as 12,345,700, as %g gives them here."""
    import pytest

    from agent.bus import SampleBus
    from agent.model import Sample

    from .test_inference import NS, T0, by_scope, collect, efficiency, gpu_sample

    def printed(v: float) -> float:
        return float(f"{v:g}")

    def run(window: float, per_window: float):
        bus = SampleBus()
        eff = efficiency(bus, window=window)
        out = []
        for i in range(3):
            ts = T0 + int(i * window * NS)
            prompt, gen = 12_345_678 + i * per_window, 20_000_000 + i * per_window / 2
            bus.observe([gpu_sample("0", 1e6 + i * 700 * window, ts),
                         Sample("inference", {"host": "node1", "endpoint": "llama", "model": "m", "server": "llamacpp",
                                              "gpus": "0"},
                                {"prompt_tokens_total": printed(prompt), "generation_tokens_total": printed(gen)}, ts)])
            out = collect(eff, ts)
        return by_scope(out)

    short = run(60.0, 5_000)  # 5,000 tokens a window where the counter moves in steps of 100: refused
    assert not short and "6 significant digits" in caplog.text
    wide = run(600.0, 50_000)  # 75,000 tokens: resolved to within 0.3%
    want = 75_000 / (700 * 600)
    assert wide[("model", "m")]["tokens_per_joule"] == pytest.approx(want, rel=0.01)
    assert wide[("node", "")]["tokens_per_joule"] == pytest.approx(want, rel=0.01)


def test_request_and_latency_semantics_of_sglang_and_trtllm():
    # SGLang (python/sglang/srt/metrics/collector.py): num_requests_total counts every finished request,
    # num_aborted_requests_total the aborted ones among them
    text = page("sglang") + ('# HELP sglang:num_aborted_requests_total Number of requests aborted.\n'
                             '# TYPE sglang:num_aborted_requests_total counter\n'
                             'sglang:num_aborted_requests_total{model_name="Qwen/Qwen2.5-7B-Instruct"} 9.0\n')
    _, (r,) = parse(text)
    assert r.requests == {"finished": 311.0, "abort": 9.0}
    # TensorRT-LLM observes time_per_output_token once per request: no inter-token sum or token count from it
    _, (r,) = parse(page("trtllm"))
    assert r.itl_sum is None and r.itl_count is None and r.ttft_count == 88.0


# --- field value types (nvml.h nvmlFieldValue_t: valueType says which member of the value union is set) -----------


def _field_array(entries):
    """A real pynvml c_nvmlFieldValue_t array, filled the way the driver fills it."""
    import ctypes

    import pytest

    pynvml = pytest.importorskip("pynvml")
    arr = (pynvml.c_nvmlFieldValue_t * len(entries))()
    for i, (fid, vtype, member, value) in enumerate(entries):
        arr[i].fieldId, arr[i].scopeId, arr[i].valueType, arr[i].nvmlReturn = fid, 0, vtype, 0
        setattr(arr[i].value, member, value)
        if member == "uiVal" and vtype == 3:  # 4 bytes written under an 8-byte type, the rest not cleared
            ctypes.memmove(ctypes.addressof(arr[i].value) + 4, b"\xde\xad\xbe\xef", 4)
    return pynvml, arr


def test_mistyped_field_values_are_read_as_written_and_impossible_ones_dropped(caplog):
    from types import SimpleNamespace

    from collectors.gpu.nvml import Nvml

    pynvml, arr = _field_array([
        (82, 0, "uiVal", 52),                 # HBM temperature typed double over an unsigned int (r545)
        (82, 0, "dVal", 52.0),                # the same field typed and written as double
        (5, 3, "uiVal", 7),                   # an ECC count in 4 bytes under an 8-byte type
        (3, 1, "uiVal", 4),                   # as declared
        (83, 3, "ullVal", 9_876_543_210),     # energy (mJ), 64-bit
        (82, 1, "uiVal", 0xFFFFFFFF),         # no temperature under any type
        (186, 0, "dVal", float("nan")),       # no power
    ])
    nv = Nvml()
    nv.n = SimpleNamespace(NVMLError=pynvml.NVMLError, nvmlDeviceGetFieldValues=lambda h, ids: arr)
    got = [v for _, _, _, v in nv.field_values(None, [])]
    assert got == [52, 52.0, 7, 4, 9_876_543_210, None, None]

    # through the collector: the fake writes the unions as the driver did and the field reads 52 C, not ~0 C
    from tests.fakes.nvml import FakeGpu, FakeNvml

    gpu = FakeGpu("H200-SXM", 0, field_types={82: (0, "u32"), 5: (3, "u32+junk")})
    bad = FakeGpu("H100-SXM", 1, field_types={82: (1, "u32")})
    bad.p["fields"][82] = 0xFFFFFFFF
    from .test_gpu import cycle, gpu_fields, make

    samples = cycle(make(FakeNvml([gpu, bad]), xid_events=False))
    f0, f1 = gpu_fields(samples, 0), gpu_fields(samples, 1)
    assert f0["memory_temperature_celsius"] == 52.0 and f0["ecc_corrected_aggregate_total"] == 2
    assert "memory_temperature_celsius" not in f1 and f1["temperature_celsius"] == 38.0
    assert "cannot have" in caplog.text


def test_pcie_byte_counters_pass_only_when_64_bits_wide_and_throughput_is_read(caplog):
    """nvml.h: NVML_FI_DEV_PCIE_COUNT_TX/RX_BYTES "can be wrapped", width not given. A 32-bit counter wraps
    every 68 ms at Gen5 x16: it is never passed on; one that shows a value past 2^32 is."""
    from tests.fakes.nvml import fleet

    from .test_gpu import cycle, gpu_fields, make

    nvml = fleet("H100-SXM", "H100-SXM")
    narrow = nvml.gpus[1].p["fields"]
    narrow[197], narrow[198] = 3_900_000_000, 1_000_000
    col = make(nvml, xid_events=False)
    first = cycle(col, 1)
    narrow[197], narrow[198] = 120_000_000, 2_000_000  # wrapped between two collections
    second = cycle(col, 2)
    wide = gpu_fields(second, 0)
    assert wide["pcie_tx_bytes_total"] == 81_234_567_890_123 and wide["pcie_rx_bytes_total"] == 64_987_654_321_000
    for samples in (first, second):
        f = gpu_fields(samples, 1)
        assert "pcie_tx_bytes_total" not in f and "pcie_rx_bytes_total" not in f
        assert f["pcie_tx_throughput_bytes_per_second"] == 1_250_000 * 1024
        assert f["pcie_rx_throughput_bytes_per_second"] == 3_400_000 * 1024
    assert "wraps below 2^32" in caplog.text
    narrow[198] = 2**32 + 5  # the receive counter shows its 64 bits: passed on from now on
    assert gpu_fields(cycle(col, 3), 1)["pcie_rx_bytes_total"] == 2**32 + 5


def test_grace_power_and_energy_by_scope_gpu_first_module_as_fallback(tmp_path):
    """NVML answers Grace Hopper's power and energy per scope (fields 186/185/191, scopeId GPU 0 / MODULE 1):
    the GPU's where NVML has them, else the module's, tagged scope; a module's energy (GPU + Grace CPU)
    is never added to a host CPU meter."""
    from tests.fakes.nvml import FakeGpu, FakeNvml

    from .test_gpu import cycle, gpu_fields, make

    both = FakeGpu("GH200", 0)
    module_only = FakeGpu("GH200", 1)  # a driver that meters the superchip's module only
    module_only.p["unsupported_fields"] |= {83, 185, 186}
    samples = cycle(make(FakeNvml([both, module_only]), xid_events=False))
    gpu = {s.tags["gpu"]: s for s in samples if s.measurement == "gpu"}
    assert gpu["0"].tags["scope"] == "gpu"
    assert gpu["0"].fields["power_watts"] == 612.04 and gpu["0"].fields["energy_joules_total"] == 9_876_543.21
    assert gpu["1"].tags["scope"] == "gpu_module"
    f = gpu_fields(samples, 1)
    assert f["power_watts"] == 812.3 and f["power_average_watts"] == 798.45
    assert f["energy_joules_total"] == 31_415_926.535

    # efficiency: module energy plus RAPL would count the Grace CPU twice
    import pytest

    from .test_inference import NS, T0, by_scope, collect, gpu_sample, rapl_efficiency, tok_sample

    zone, bus, host, eff = rapl_efficiency(tmp_path)
    for k in (0, 1):
        (zone / "energy_uj").write_text(f"{k * 900_000_000}\n")
        ts = T0 + k * 10 * NS
        bus.observe([s for s in collect(host, ts) if s.measurement == "host_energy"])
        g = gpu_sample("0", k * 8000.0, ts)
        g.tags["scope"] = "gpu_module"
        bus.observe([g, tok_sample("a", "m", "0", 0, k * 900.0, ts)])
        out = collect(eff, ts)
    node = by_scope(out)[("node", "")]
    assert node["window_energy_joules"] == pytest.approx(8000)
    assert [s.tags["energy_source"] for s in out if s.tags.get("scope") == "node"] == ["gpu_module"]


def test_the_fake_refuses_what_real_nvml_refuses_a_service_user(caplog):
    """As a non-root user, a MIG-enabled GPU's parent handle answers NO_PERMISSION for memory and processes
    (the MIG devices' own memory is readable); nvmlInit answers NO_PERMISSION when /dev/nvidia* cannot be
    opened. The first degrades that GPU's fields; the second is an error that says what to fix."""
    import logging

    import pytest

    from agent.model import Accumulator
    from collectors.gpu.errors import NvmlError, NvmlNoPermission
    from tests.fakes.nvml import FakeGpu, FakeNvml

    from .test_gpu import cycle, gpu_fields, make

    caplog.set_level(logging.INFO)
    mig = [{"uuid": "MIG-aaaa", "gpu_instance_id": 1, "compute_instance_id": 0, "profile": "3g.40gb",
            "memory_used": 10 * 2**30, "memory_total": 40 * 2**30}]
    nvml = FakeNvml([FakeGpu("H100-SXM", 0, mig=mig), FakeGpu("H100-SXM", 1)])
    nvml.privileged = False
    nvml.gpus[0].processes = nvml.gpus[1].processes = [(5151, 2**30)]
    col = make(nvml, xid_events=False)
    for ts in (1, 2):
        samples = cycle(col, ts)
    f0, f1 = gpu_fields(samples, 0), gpu_fields(samples, 1)
    assert "memory_used_bytes" not in f0 and f0["power_watts"] == 312.456 and f0["mig_mode"] is True
    assert f1["memory_used_bytes"] == 40 * 2**30  # the GPU without MIG is readable as any user
    assert [s.fields["memory_used_bytes"] for s in samples if s.measurement == "gpu_mig"] == [10 * 2**30]
    assert {s.tags["gpu"] for s in samples if s.measurement == "gpu_process"} == {"1"}
    assert caplog.text.count("memory needs more privileges") == 1
    assert nvml.calls["memory"] == 3  # asked once for the MIG GPU, then not until the re-probe

    denied = FakeNvml([FakeGpu("H100-SXM", 0)])
    denied.init_error = NvmlNoPermission("Insufficient Permissions")
    col = make(denied, xid_events=False)
    with pytest.raises(NvmlError, match="cannot open /dev/nvidia"):
        col.collect(Accumulator(1, {"host": "n1"}))
    denied.init_error = None
    assert gpu_fields(cycle(col, 2), 0)["memory_used_bytes"] == 40 * 2**30


# --- every server version the adapter claims, from its real page shape (tests/fixtures/inference/versions/*.txt,
# each citing the source it was derived from) --------------------------------------------------------------------

VERSIONS = {  # page -> (server, model, prompt, generation, running, waiting, KV usage, requests by outcome)
    "vllm-0.11-v1": ("vllm", "meta-llama/Llama-3.1-70B-Instruct", 16_845_678, 2_999_999.9, 21, 3, 0.375,
                     {"stop": 5000, "length": 120, "abort": 5}),
    "vllm-0.6-v0": ("vllm", "mistralai/Mistral-7B-Instruct-v0.3", 987_654, 123_456, 4, 2, 0.875,
                    {"stop": 900, "length": 33}),
    "sglang-0.5-all-schedulers": ("sglang", "deepseek-ai/DeepSeek-V3", 31_415_926, 2_718_281, 12, 3, 0.5,
                                  {"finished": 20500, "abort": 12}),
    "tgi-3": ("tgi", "default", 768_000_000, 228_000_000, 32, 17, None, {"success": 1_500_000, "failure": 205}),
    "trtllm-serve-1.0": ("trtllm", "default", 52_800_000, 10_560_000, None, None, None,
                         {"stop": 52000, "length": 800, "error": 9}),
    "triton-trtllm-backend": ("triton", "tensorrt_llm", 1_228_800_000, 307_200_000, 48, 6, 0.75,
                              {"success": 2_400_000, "failure": 3}),
    "triton-vllm-backend": ("vllm", "vllm_model", 62000, 31000, 2, 0, 0.125, {}),
    "nim-1.x": ("nim", "meta/llama-3.1-8b-instruct", 1_750_000, 875_000, 6, 1, 0.3, {"success": 3500, "failure": 4}),
    "nim-2.x": ("vllm", "nvidia/llama-3.3-nemotron-super-49b-v1", 240_000, 60_000, 3, 0, 0.0625, {"stop": 600}),
    "llamacpp-b6000": ("llamacpp", "default", 12_345_700, 987_654, 3, 1, 0.42, {}),
}


def _version_page(name: str) -> str:
    from .conftest import FIXTURES

    text = (FIXTURES / "inference" / "versions" / f"{name}.txt").read_text()
    assert text.startswith("# source: ")  # every page names where its shape comes from
    return text


def test_each_claimed_server_version_reads_right_from_its_page_shape():
    import pytest

    for name, (kind, model, prompt, gen, running, waiting, kv, requests) in VERSIONS.items():
        got_kind, readings = parse(_version_page(name))
        assert got_kind == kind, name
        (r,) = readings
        assert r.model == model, name
        assert r.prompt_tokens == pytest.approx(prompt) and r.generation_tokens == pytest.approx(gen), name
        assert (r.running, r.waiting) == (running, waiting), name
        assert r.kv_cache_usage == (None if kv is None else pytest.approx(kv)), name
        assert r.requests == pytest.approx(requests), name
    # a server that has served nothing yet: up, no token readings
    assert parse(_version_page("sglang-0.4-fresh")) == ("sglang", [])
    # vLLM V0 has no inter-token latency histogram: its time-per-output-token sum and count stand in
    _, (r,) = parse(_version_page("vllm-0.6-v0"))
    assert (r.itl_sum, r.itl_count) == (2450.46, 122523.0)
    _, (r,) = parse(_version_page("trtllm-serve-1.0"))
    assert r.itl_sum is None  # one observation per request: not per token


def test_sglang_gauges_of_all_schedulers_count_each_dp_group_once():
    _, (r,) = parse(_version_page("sglang-0.5-all-schedulers"))
    assert (r.running, r.waiting) == (12.0, 3.0)  # tp ranks 0,1 repeat DP group 0's 7 and 2; ranks 2,3 group 1's
    assert r.requests == {"finished": 20500.0, "abort": 12.0}


def test_kv_usage_running_waiting_and_failures_where_the_servers_have_them(tmp_path):
    from http.server import BaseHTTPRequestHandler
    from urllib.parse import parse_qs, urlsplit

    from agent.collector import Context
    from agent.model import Accumulator
    from collectors.inference import InferenceCollector

    from .services import serve_http

    # llama.cpp router mode: one /metrics page per model, chosen by ?model=
    class Router(BaseHTTPRequestHandler):
        def do_GET(self):
            q = parse_qs(urlsplit(self.path).query)
            m = q.get("model", [""])[0]
            if m not in ("qwen3-8b", "gemma-3-4b"):
                self.send_response(400)
                self.end_headers()
                return
            body = _version_page("llamacpp-b6000")
            if m == "gemma-3-4b":
                body = body.replace("llamacpp:prompt_tokens_total 1.23457e+07", "llamacpp:prompt_tokens_total 5000")
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *a):
            pass

    httpd, base = serve_http(Router)
    try:
        opts = InferenceCollector.Options(endpoints=[{"url": f"{base}/metrics", "models": ["qwen3-8b", "gemma-3-4b"]}],
                                          discover=False)
        col = InferenceCollector(opts, Context("inference", state_dir=tmp_path))
        acc = Accumulator(1, {"host": "n1"})
        col.collect(acc)
        col.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
    rows = {s.tags["model"]: s for s in acc.close() if s.measurement == "inference" and "outcome" not in s.tags}
    assert set(rows) == {"qwen3-8b", "gemma-3-4b"}
    assert rows["gemma-3-4b"].fields["prompt_tokens_total"] == 5000
    assert rows["qwen3-8b"].fields["kv_cache_usage_ratio"] == 0.42
    assert rows["qwen3-8b"].tags["endpoint"] != rows["gemma-3-4b"].tags["endpoint"]


def test_discovery_probes_every_page_with_auto_and_scrapes_one_page_per_port(monkeypatch):
    from http.server import BaseHTTPRequestHandler

    import pytest
    from pydantic import ValidationError

    import collectors.inference as inference
    from agent.collector import Context
    from agent.model import Accumulator

    from .services import serve_http

    assert "http://127.0.0.1:80/metrics" in inference.DISCOVER  # TGI's port in its container
    assert inference.DISCOVER.index("http://127.0.0.1:8000/prometheus/metrics") < \
        inference.DISCOVER.index("http://127.0.0.1:8000/metrics")
    hits: dict[str, int] = {}

    def server(pages: dict[str, str]):
        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                hits[f"{self.server.server_address[1]}{self.path}"] = hits.get(
                    f"{self.server.server_address[1]}{self.path}", 0) + 1
                body = pages.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                self.wfile.write((body or "not found").encode())

            def log_message(self, *a):
                pass

        return serve_http(H)

    # trtllm-serve: its Prometheus page, and JSON iteration stats on /metrics that a read takes away
    trt, trt_url = server({"/prometheus/metrics": _version_page("trtllm-serve-1.0"),
                           "/metrics": '[{"iter": 1, "kvCacheStats": {}}]'})
    # vLLM on another port, no /prometheus/metrics there; Triton's vLLM backend (vllm:* series) on a third
    vl, vl_url = server({"/metrics": _version_page("vllm-0.11-v1")})
    tv, tv_url = server({"/metrics": _version_page("triton-vllm-backend")})
    monkeypatch.setattr(inference, "DISCOVER", [f"{trt_url}/prometheus/metrics", f"{trt_url}/metrics",
                                                f"{vl_url}/prometheus/metrics", f"{vl_url}/metrics",
                                                f"{vl_url}/v1/metrics", f"{tv_url}/metrics"])
    try:
        col = inference.InferenceCollector(inference.InferenceOptions(discover=True), Context("inference"))
        runs = []
        for ts in (1, 2, 3):
            acc = Accumulator(ts, {"host": "n1"})
            col.collect(acc)
            runs.append([s for s in acc.close() if s.measurement == "inference" and "outcome" not in s.tags])
        col.close()
    finally:
        for h in (trt, vl, tv):
            h.shutdown()
            h.server_close()
    trt_port, vl_port = trt.server_address[1], vl.server_address[1]
    assert hits.get(f"{trt_port}/metrics", 0) == 0  # the JSON page is never read
    assert hits[f"{vl_port}/prometheus/metrics"] == 1 and hits[f"{vl_port}/metrics"] == 2
    assert f"{vl_port}/v1/metrics" not in hits  # its port's page was found first
    last = {s.tags["endpoint"]: s.tags["server"] for s in runs[-1]}
    assert last == {f"127.0.0.1:{trt_port}/prometheus/metrics": "trtllm", f"127.0.0.1:{vl_port}": "vllm",
                    f"127.0.0.1:{tv.server_address[1]}": "vllm"}
    # two configured pages would share an endpoint tag: refused by the config
    with pytest.raises(ValidationError, match="would both be tagged"):
        inference.InferenceOptions(endpoints=[{"url": "http://127.0.0.1:9000/metrics", "name": "a"},
                                              {"url": "http://127.0.0.1:9001/metrics", "name": "a"}])


def test_older_trtllm_serve_builds_are_read_and_what_they_lack_is_said_once(tmp_path, caplog):
    """trtllm-serve without the trtllm_ prefix (older builds: same names, label engine_type="trtllm") or without
    a generation-token counter; a page without its series at all: return_perf_metrics is off."""
    import pytest

    from agent.collector import Context
    from agent.model import Accumulator
    from collectors.inference import InferenceCollector


    old = "\n".join(line.replace("trtllm_", "") for line in _version_page("trtllm-serve-1.0").splitlines()
                    if "generation_tokens" not in line) + "\n"
    notes: list[str] = []
    kind, (r,) = parse(old, "auto", "llama-3.3-70b", notes)
    assert kind == "trtllm" and r.model == "llama-3.3-70b" and r.prompt_tokens == 52_800_000
    assert r.generation_tokens is None and r.requests["error"] == 9
    assert any("prefix" in n for n in notes) and any("generation-token" in n for n in notes)
    with pytest.raises(ValueError, match="return_perf_metrics"):
        parse("# HELP process_cpu_seconds_total x\n# TYPE process_cpu_seconds_total counter\n"
              "process_cpu_seconds_total 1.5\n", "trtllm")

    from .test_faults import hostile_server, reply

    httpd, base = hostile_server(lambda h: reply(h, 200, old.encode()))
    try:
        col = InferenceCollector(InferenceCollector.Options(endpoints=[{"url": f"{base}/prometheus/metrics"}],
                                                            discover=False), Context("inference"))
        for ts in (1, 2, 3):
            col.collect(Accumulator(ts, {"host": "n1"}))
        col.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert caplog.text.count("without the trtllm_ prefix") == 1 and caplog.text.count("generation-token") == 1


def test_signed_fields_stay_signed_and_values_wider_than_their_type_are_read_whole():
    """nvml.h nvmlValueType_t: SIGNED_INT (5) and SIGNED_LONG_LONG (4) -1 is no value, never 2^32 - 1 read as
    unsigned; an UNSIGNED_SHORT (6) union holding 70000 is 70000 written wide, not 70000 mod 2^16."""
    from types import SimpleNamespace

    from collectors.gpu.nvml import Nvml

    pynvml, arr = _field_array([
        (83, 5, "siVal", -1),                 # SIGNED_INT -1 on a field without a range
        (83, 4, "sllVal", -1),                # SIGNED_LONG_LONG -1
        (82, 5, "siVal", -5),                 # a signed temperature below zero is a value
        (83, 6, "uiVal", 70_000),             # USHORT typed, 4 bytes written
        (83, 6, "usVal", 4_464),              # USHORT as declared
    ])
    nv = Nvml()
    nv.n = SimpleNamespace(NVMLError=pynvml.NVMLError, nvmlDeviceGetFieldValues=lambda h, ids: arr)
    assert [v for _, _, _, v in nv.field_values(None, [])] == [None, None, -5, 70_000, 4_464]
