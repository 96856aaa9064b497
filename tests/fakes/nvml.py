"""A fake of collectors.gpu.nvml.Nvml built from real NVML behaviour.

Values and units are NVML's own (mW, mJ, MHz, bytes, KiB for NVLink). What each profile
supports follows the documented behaviour: the energy counter and NVML_FI_DEV_POWER_AVERAGE
need Volta / Ampere-except-GA100, HBM temperature and row remapping are Ampere+, retired pages
are pre-Ampere, process utilization is not supported on MIG-enabled GPUs, data-centre SXM
parts have no fan, and field values carry their own return code (3 NOT_SUPPORTED, 15 GPU_IS_LOST).
Every method raises the adapter's exceptions, as the real adapter does.
"""

from __future__ import annotations

import copy
import queue
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from collectors.gpu.errors import (
    NvmlError,
    NvmlGpuLost,
    NvmlNeedsReinit,
    NvmlNoPermission,
    NvmlNotFound,
    NvmlNotPresent,
    NvmlNotSupported,
    NvmlTimeout,
)
from collectors.gpu.nvml import decode_field

ALL_LINKS = 0xFFFFFFFF

H100_FIELDS = {
    186: 312_456, 185: 305_112, 83: 9_876_543_210, 82: 41,
    197: 81_234_567_890_123, 198: 64_987_654_321_000, 94: 0,  # bytes: 64-bit counters after days of traffic
    3: 0, 4: 0, 5: 2, 6: 0,
    142: 0, 143: 0, 144: 0, 145: 0,
    74: 1_500_000_000, 76: 0, 269: 0, 270: 0, 271: 250_000_000,
    38: 0, 45: 0, 52: 3, 59: 0,
    138: 5_000_000, 139: 4_000_000,  # KiB, all links
}
# supported on Ampere+ / Hopper; pre-Ampere page retirement is not
H100_UNSUPPORTED_FIELDS = {29, 30, 31}

# Grace Hopper superchip: NVML answers power and energy per scope (nvmlPowerScopeType_t); the module's (GPU,
# Grace CPU, LPDDR5X) are fields 186/185/191 with scopeId NVML_POWER_SCOPE_MODULE (1)
GH200_MODULE_FIELDS = {186: 812_300, 185: 798_450, 191: 31_415_926_535}
# GPM metrics over a window (percent of time or of peak; *_PER_SEC in MiB/s, nvml.h): a training step on H100,
# per MIG GPU instance an inference server on GI 1 and little on GI 2
HOPPER_GPM = {"SM_UTIL": 91.0, "SM_OCCUPANCY": 38.5, "ANY_TENSOR_UTIL": 52.0, "HMMA_TENSOR_UTIL": 49.5,
              "IMMA_TENSOR_UTIL": 0.0, "DFMA_TENSOR_UTIL": 0.0, "DRAM_BW_UTIL": 61.0, "FP64_UTIL": 0.2,
              "FP32_UTIL": 11.0, "FP16_UTIL": 24.0, "INTEGER_UTIL": 7.5, "GRAPHICS_UTIL": 93.0,
              "NVDEC_0_UTIL": 0.0, "NVDEC_1_UTIL": 10.0, "NVJPG_0_UTIL": 0.0, "NVOFA_0_UTIL": 0.0,
              "PCIE_TX_PER_SEC": 1200.0, "PCIE_RX_PER_SEC": 2400.0, "NVLINK_TOTAL_TX_PER_SEC": 150_000.0,
              "NVLINK_TOTAL_RX_PER_SEC": 148_000.0}
HOPPER_GPM_MIG = {1: {"SM_UTIL": 42.5, "SM_OCCUPANCY": 20.0, "ANY_TENSOR_UTIL": 30.0, "DRAM_BW_UTIL": 55.0},
                  2: {"SM_UTIL": 7.0, "SM_OCCUPANCY": 2.0, "ANY_TENSOR_UTIL": 0.5, "DRAM_BW_UTIL": 3.0}}

# Grace Blackwell: the module's power beside the GPU's, the GPU memory's own (scope NVML_POWER_SCOPE_MEMORY),
# power smoothing (fields 251/264, and 260-263 per preset profile: the field's scopeId is the profile) and
# workload power profiles (bit i of nvmlMask255_t is nvmlPowerProfileType_t i), which nvml.h gives for Blackwell
# and later only
GB200_MODULE_FIELDS = {186: 1_850_400, 185: 1_832_000, 191: 52_718_281_828}
GB200_SMOOTHING = {2: {260: 65.0, 261: 250_000, 262: 120_000, 263: 2_000}}

PROFILES: dict[str, dict] = {
    "H100-SXM": {
        "name": "NVIDIA H100 80GB HBM3", "memory_total": 85_520_809_984, "memory_reserved": 563_019_776,
        "power_limit_mw": 700_000, "power_limit_default_mw": 700_000, "max_clocks": {"sm": 1980, "memory": 2619,
                                                                                     "graphics": 1980},
        "clocks": {"sm": 1755, "memory": 2619, "graphics": 1755},
        "thresholds": {"slowdown": 90, "shutdown": 92, "memory_max": 95},
        "fields": H100_FIELDS, "unsupported_fields": H100_UNSUPPORTED_FIELDS, "nvlinks": 18,
        "unsupported": {"fan_percent"}, "temperature": 38, "util": (87, 41), "pcie": (5, 16), "vbios": "96.00.74.00.1C",
        "gpm": HOPPER_GPM, "gpm_mig": HOPPER_GPM_MIG, "power_limit_constraints_mw": (200_000, 700_000),
    },
    "H200-SXM": {
        "name": "NVIDIA H200", "memory_total": 150_754_820_096, "memory_reserved": 629_145_600,
        "power_limit_mw": 700_000, "power_limit_default_mw": 700_000,
        "max_clocks": {"sm": 1980, "memory": 3201, "graphics": 1980}, "clocks": {"sm": 1980, "memory": 3201,
                                                                                 "graphics": 1980},
        "thresholds": {"slowdown": 90, "shutdown": 92, "memory_max": 95},
        "fields": {**H100_FIELDS, 186: 655_210, 185: 640_020, 82: 52}, "unsupported_fields": H100_UNSUPPORTED_FIELDS,
        "gpm": {**HOPPER_GPM, "SM_UTIL": 78.0, "ANY_TENSOR_UTIL": 31.0, "DRAM_BW_UTIL": 83.0},
        "gpm_mig": HOPPER_GPM_MIG,
        "nvlinks": 18, "unsupported": {"fan_percent"}, "temperature": 61, "util": (100, 73), "pcie": (5, 16),
        "vbios": "96.00.9F.00.04", "power_limit_constraints_mw": (200_000, 700_000),
    },
    "GH200": {
        "name": "NVIDIA GH200 480GB", "memory_total": 102_005_473_280, "memory_reserved": 629_145_600,
        "power_limit_mw": 900_000, "power_limit_default_mw": 900_000,
        "max_clocks": {"sm": 1980, "memory": 2619, "graphics": 1980}, "clocks": {"sm": 1980, "memory": 2619,
                                                                                 "graphics": 1980},
        "thresholds": {"slowdown": 90, "shutdown": 92, "memory_max": 95},
        "fields": {**H100_FIELDS, 186: 612_040, 185: 600_500}, "module_fields": GH200_MODULE_FIELDS,
        "gpm": HOPPER_GPM, "gpm_mig": HOPPER_GPM_MIG,
        # this driver's GPM has no per-precision tensor metrics on the module (their return codes say so)
        "gpm_unsupported": {"HMMA_TENSOR_UTIL", "IMMA_TENSOR_UTIL", "DFMA_TENSOR_UTIL"},
        "unsupported_fields": H100_UNSUPPORTED_FIELDS, "nvlinks": 18, "unsupported": {"fan_percent"},
        "temperature": 55, "util": (96, 60), "pcie": (5, 16), "vbios": "96.00.A5.00.01",
        "power_limit_constraints_mw": (200_000, 900_000),
    },
    "GB200": {
        "name": "NVIDIA GB200", "memory_total": 199_715_979_264, "memory_reserved": 838_860_800,
        "power_limit_mw": 1_200_000, "power_limit_default_mw": 1_200_000,
        "power_limit_constraints_mw": (200_000, 1_200_000),
        "max_clocks": {"sm": 2062, "memory": 3996, "graphics": 2062}, "clocks": {"sm": 1965, "memory": 3996,
                                                                                 "graphics": 1965},
        "thresholds": {"slowdown": 87, "shutdown": 92, "memory_max": 95},
        "fields": {**H100_FIELDS, 186: 1_010_500, 185: 998_200, 82: 57, 251: 1, 264: 2},
        "module_fields": GB200_MODULE_FIELDS, "memory_fields": {186: 88_250}, "smoothing": GB200_SMOOTHING,
        "power_profiles": ([6], [6, 12]),  # llm_inference requested; the driver adds sync_balanced
        "gpm": HOPPER_GPM, "gpm_mig": HOPPER_GPM_MIG,
        "unsupported_fields": H100_UNSUPPORTED_FIELDS, "nvlinks": 18, "unsupported": {"fan_percent"},
        "temperature": 49, "util": (98, 66), "pcie": (6, 16), "vbios": "97.00.3A.00.02",
    },
    "A100-SXM": {
        "name": "NVIDIA A100-SXM4-80GB", "memory_total": 85_899_345_920, "memory_reserved": 0,
        "power_limit_mw": 400_000, "power_limit_default_mw": 400_000,
        "max_clocks": {"sm": 1410, "memory": 1593, "graphics": 1410}, "clocks": {"sm": 1410, "memory": 1593,
                                                                                 "graphics": 1410},
        "thresholds": {"slowdown": 92, "shutdown": 95, "memory_max": 95},
        # GA100: no 1-second average power field; no HW power-brake/thermal ns counters on this driver
        "fields": {k: v for k, v in H100_FIELDS.items() if k not in (185, 269, 270, 271)} | {186: 289_001},
        "unsupported_fields": H100_UNSUPPORTED_FIELDS | {185, 269, 270, 271}, "nvlinks": 12,
        # Ampere: no GPM (nvmlGpmQueryDeviceSupport: not a supported device; nvmlGpmSampleGet NOT_SUPPORTED)
        "unsupported": {"fan_percent", "gpm"}, "temperature": 45, "util": (55, 20), "pcie": (4, 16),
        "vbios": "92.00.45.00.06", "power_limit_constraints_mw": (100_000, 400_000),
    },
    "P4-old": {
        # Pascal: no energy counter (Volta+), no HBM temperature, no power fields, no row remapping,
        # no NVLink, no PCIe byte counters, no clocks-event ns counters, no memory-info v2, no MIG.
        "name": "Tesla P4", "memory_total": 8_053_063_680, "memory_reserved": None,
        "power_limit_mw": 75_000, "power_limit_default_mw": 75_000,
        "max_clocks": {"sm": 1531, "memory": 3003, "graphics": 1531}, "clocks": {"sm": 1063, "memory": 3003,
                                                                                 "graphics": 1063},
        "thresholds": {"slowdown": 91, "shutdown": 94},
        "fields": {94: 0, 3: 1, 4: 0, 5: 7, 6: 0, 29: 1, 30: 0, 31: 0},
        "unsupported_fields": set(H100_FIELDS) - {94, 3, 4, 5, 6}, "nvlinks": 0,
        "unsupported": {"fan_percent", "mig_mode", "memory_v2", "power_limit_enforced", "gpm"},
        "power_usage_mw": 24_512, "temperature": 33, "util": (0, 0), "pcie": (3, 16), "vbios": "86.04.8B.00.01",
        "power_limit_constraints_mw": (50_000, 75_000),
    },
}


@dataclass
class FakeGpu:
    profile: str
    index: int
    uuid: str = ""
    lost: bool = False
    mig: list[dict] = field(default_factory=list)
    processes: list[tuple] = field(default_factory=list)  # (pid, memory bytes[, MIG GPU instance id])
    proc_util: list[tuple[int, int, int, int]] = field(default_factory=list)
    p: dict = field(default_factory=dict)
    # nvmlDeviceGetHandleByIndex's answer for a GPU counted but refused (NO_PERMISSION outside the container's
    # cgroup, INSUFFICIENT_POWER, IRQ_ISSUE, UNKNOWN: nvml.h)
    handle_error: Exception | None = None
    # field id -> (declared nvmlValueType_t, how NVML wrote the union): what real drivers have answered, e.g.
    # {82: (0, "u32")}: the HBM temperature declared double over an unsigned int (r545, guarded in DCGM);
    # {5: (3, "u32+junk")}: an ECC count written in 4 bytes under an 8-byte type
    field_types: dict[int, tuple[int, str]] = field(default_factory=dict)

    # the energy counter advances at the instant power as time passes (as the driver's does), not frozen
    live_energy: bool = False
    born: float = 0.0
    # instant power (field 186, GPU scope) in mW as a function of wall-clock time: a load that swings
    power_fn: Callable[[float], int] | None = None

    def __post_init__(self):
        import time

        self.born = time.monotonic()
        self.p = copy.deepcopy(PROFILES[self.profile])
        self.uuid = self.uuid or f"GPU-{self.index:08x}-fake-{self.profile}"

    def wire(self, fid: int, value) -> tuple[int, bytes]:
        """(declared type, the union's 8 bytes) of one field value, as the driver fills nvmlFieldValue_t."""
        declared, written = self.field_types.get(fid, (0 if isinstance(value, float) else 3,
                                                        "double" if isinstance(value, float) else "u64"))
        raw = {"double": lambda: struct.pack("<d", float(value)),
               "u64": lambda: struct.pack("<Q", int(value)),
               "u32": lambda: struct.pack("<I", int(value)) + bytes(4),
               "u32+junk": lambda: struct.pack("<I", int(value)) + b"\xde\xad\xbe\xef"}[written]()
        return declared, raw


class FakeNvml:
    def __init__(self, gpus: list[FakeGpu] | None = None, present: bool = True) -> None:
        self.gpus = gpus or []
        self.present = present
        self.calls: Counter = Counter()
        self.field_requests: list[list[tuple[int, int]]] = []
        self.events: queue.Queue = queue.Queue()
        self.inits = 0
        self.reinit_next = False
        self.initialized = False
        # False: the agent runs as its service user, not root. On a MIG-enabled GPU the parent handle's memory
        # and process data are then NO_PERMISSION (the MIG devices' own memory is readable)
        self.privileged = True
        # NVML's shortest GPM window (nvmlGpmMetricsGet); a bench cycling back to back sets 0 to measure GPM's cost
        self.gpm_min_window = 0.1

    # helpers for tests
    def _gpu(self, h) -> FakeGpu:
        if h.lost:
            raise NvmlGpuLost("GPU is lost")
        if self.reinit_next:
            self.reinit_next = False
            self.initialized = False
            raise NvmlNeedsReinit("RM has detected an NVML/RM version mismatch")
        return h

    def _sup(self, h, what):
        self.calls[what] += 1
        g = self._gpu(h)
        if what in g.p["unsupported"]:
            raise NvmlNotSupported("Not Supported")
        return g

    # library
    def init(self):
        if not self.present:
            raise NvmlNotPresent("NVML Shared Library Not Found")
        if getattr(self, "init_error", None) is not None:
            raise self.init_error
        self.inits += 1
        self.initialized = True

    def shutdown(self):
        self.initialized = False

    def driver_version(self):
        return "550.127.05"

    def cuda_version(self):
        return "12.4"

    def device_count(self):
        return len(self.gpus)

    def handle(self, i):
        if self.gpus[i].handle_error is not None:
            raise self.gpus[i].handle_error
        return self._gpu(self.gpus[i])

    def handle_by_uuid(self, uuid):
        for g in self.gpus:
            if g.uuid == uuid:
                return self._gpu(g)
        raise NvmlNotFound("Not Found")

    # static
    def name(self, h):
        return self._gpu(h).p["name"]

    def uuid(self, h):
        return self._gpu(h).uuid

    def serial(self, h):
        return f"16523{self._gpu(h).index:08d}"

    def pci_bus_id(self, h):
        return f"00000000:{0x18 + 0x10 * self._gpu(h).index:02X}:00.0"

    def vbios_version(self, h):
        return self._gpu(h).p["vbios"]

    def max_clock_mhz(self, h, kind):
        return self._gpu(h).p["max_clocks"][kind]

    def temperature_threshold(self, h, kind):
        t = self._gpu(h).p["thresholds"]
        if kind not in t:
            raise NvmlNotSupported("Not Supported")
        return t[kind]

    def power_limit_default_mw(self, h):
        return self._gpu(h).p["power_limit_default_mw"]

    def power_limit_constraints_mw(self, h):
        c = self._gpu(h).p.get("power_limit_constraints_mw")
        if c is None:
            raise NvmlNotSupported("Not Supported")
        return c

    def nvlink_count(self):
        return 18

    # per cycle
    def field_values(self, h, ids):
        self.calls["field_values"] += 1
        self.field_requests.append(list(ids))
        g = h
        out = []
        for fid, scope in ids:
            if g.lost:
                out.append((fid, scope, 15, None))
            elif scope in (1, 2) and fid in (185, 186, 191):  # power scope MODULE (Grace superchips), MEMORY
                mod = g.p.get("module_fields" if scope == 1 else "memory_fields", {})
                out.append((fid, scope, 0, decode_field(fid, *g.wire(fid, mod[fid]))) if fid in mod
                           else (fid, scope, 3, None))
            elif 260 <= fid <= 263:  # a power-smoothing profile's parameter: scopeId is the profile
                prof = g.p.get("smoothing")
                if prof is None:
                    out.append((fid, scope, 3, None))
                elif scope not in prof:
                    out.append((fid, scope, 2, None))  # INVALID_ARGUMENT: no such profile
                else:
                    out.append((fid, scope, 0, decode_field(fid, *g.wire(fid, prof[scope][fid]))))
            elif fid in (142, 143, 144, 145) and g.mig:
                out.append((fid, scope, 3, None))  # row remapping: NOT_SUPPORTED while MIG is enabled
            elif fid in g.p["unsupported_fields"]:
                out.append((fid, scope, 3, None))
            elif fid in (138, 139) and scope != ALL_LINKS:
                if scope >= g.p["nvlinks"]:
                    out.append((fid, scope, 2, None))
                else:
                    out.append((fid, scope, 0, decode_field(fid, *g.wire(fid, g.p["fields"][fid] //
                                                                           max(1, g.p["nvlinks"])))))
            elif fid == 186 and scope == 0 and g.power_fn is not None:
                import time

                out.append((fid, scope, 0, decode_field(fid, *g.wire(fid, int(g.power_fn(time.time()))))))
            elif fid == 83 and g.live_energy:
                import time

                mj = g.p["fields"][83] + int(g.p["fields"][186] * (time.monotonic() - g.born))
                out.append((fid, scope, 0, decode_field(fid, *g.wire(fid, mj))))
            elif fid in g.p["fields"]:
                # through the adapter's own decoding of the union, as the real field_values does
                out.append((fid, scope, 0, decode_field(fid, *g.wire(fid, g.p["fields"][fid]))))
            else:
                out.append((fid, scope, 3, None))
        if g.lost:
            raise NvmlGpuLost("GPU is lost")
        return out

    def utilization(self, h):
        g = self._sup(h, "utilization")
        if g.mig:
            raise NvmlNotSupported("Not Supported")  # not on MIG-enabled GPUs
        return g.p["util"]

    def _privileged(self, g: FakeGpu) -> None:
        if g.mig and not self.privileged:
            raise NvmlNoPermission("Insufficient Permissions")

    def memory(self, h):
        g = self._sup(h, "memory")
        self._privileged(g)
        total = g.p["memory_total"]
        used = 40 * 2**30 if total > 2**34 else 2**30
        if "memory_v2" in g.p["unsupported"]:
            return {"total": total, "used": used, "free": total - used}
        return {"total": total, "used": used, "free": total - used, "reserved": g.p["memory_reserved"]}

    def power_usage_mw(self, h):
        g = self._sup(h, "power_usage")
        return g.p.get("power_usage_mw", g.p["fields"].get(185, g.p["fields"].get(186)))

    def power_limit_mw(self, h):
        return self._sup(h, "power_limit").p["power_limit_mw"]

    def power_limit_enforced_mw(self, h):
        return self._sup(h, "power_limit_enforced").p["power_limit_mw"]

    def workload_power_profiles(self, h):
        g = self._sup(h, "power_profiles")
        if "power_profiles" not in g.p:  # before Blackwell
            raise NvmlNotSupported("Not Supported")
        return g.p["power_profiles"]

    def temperature_c(self, h):
        return self._sup(h, "temperature").p["temperature"]

    def clock_mhz(self, h, kind):
        return self._sup(h, "clock").p["clocks"][kind]

    def clocks_event_reasons(self, h):
        g = self._sup(h, "clocks_event_reasons")
        return g.p.get("reasons", (0x4 | 0x80) if g.profile == "H200-SXM" else 0x1)

    def pcie_throughput_kbps(self, h):
        return self._sup(h, "pcie_throughput").p.get("pcie_kbps", (1_250_000, 3_400_000))

    def fan_percent(self, h):
        return self._sup(h, "fan_percent").p.get("fan", 35)

    def pstate(self, h):
        return self._sup(h, "pstate").p.get("pstate", 0)

    def pcie_link(self, h):
        return self._sup(h, "pcie_link").p["pcie"]

    def persistence_mode(self, h):
        return self._sup(h, "persistence_mode") and True

    def compute_mode(self, h):
        self._sup(h, "compute_mode")
        return "default"

    def mig_mode(self, h):
        return bool(self._sup(h, "mig_mode").mig)

    def nvlink_active(self, h, link):
        self.calls["nvlink_active"] += 1
        g = self._gpu(h)
        if link >= g.p["nvlinks"]:
            raise NvmlNotSupported("Not Supported") if g.p["nvlinks"] == 0 else NvmlNotFound("no such link")
        return link != 17  # one link down on 18-link parts

    def processes(self, h):
        """(pid, memory, GPU instance): a test's (pid, memory) is a process outside MIG (gpuInstanceId
        0xFFFFFFFF, read as None by the adapter)."""
        g = self._sup(h, "processes")
        self._privileged(g)
        return [(p[0], p[1], p[2] if len(p) > 2 else None) for p in g.processes]

    def process_utilization(self, h, since_us):
        g = self._sup(h, "process_utilization")
        if g.mig:
            raise NvmlNotSupported("Not Supported")
        new = [s for s in g.proc_util if s[1] > since_us]
        if not new:
            raise NvmlNotFound("Not Found")
        return new

    def mig_devices(self, h):
        g = self._sup(h, "mig_devices")
        return [dict(d, handle=object()) for d in g.mig]

    def gpm_metrics(self, h, state, key, gi=None):
        """GPM over two samples of the GPU (or of one MIG GPU instance): before Hopper nvmlGpmSampleGet is
        NOT_SUPPORTED (nvmlGpmQueryDeviceSupport says so); the first sample has no window; NVML wants the two
        more than 100 ms apart (nvml.h, nvmlGpmMetricsGet), so a second sample within a cycle gives no valid
        metric. Each metric carries its own return code: one the driver lacks is absent (a profile's
        gpm_unsupported)."""
        import time

        g = self._sup(h, "gpm")
        self.calls[f"gpm:{gi}" if gi is not None else "gpm:gpu"] += 1
        now = time.monotonic()
        last = state.get(key)
        state[key] = now
        if last is None:
            raise NvmlNotFound("first GPM sample: no window yet")
        if now - last < self.gpm_min_window:
            raise NvmlError("GPM samples less than 100 ms apart")
        values = dict(g.p.get("gpm", {})) if gi is None else dict(g.p.get("gpm_mig", {}).get(gi, {}))
        return {k: v for k, v in values.items() if k not in g.p.get("gpm_unsupported", ())}

    def gpm_free(self, state):
        state.clear()

    # events
    def event_set(self, handles):
        self.calls["event_set"] += 1
        self.event_handles = list(handles)
        return "es"

    def event_wait(self, es, timeout_ms):
        """Queued (uuid, event type, data) tuples as nvmlEventSetWait_v2 gives them: type 0x8 XID with its
        number, 0x2 double-bit ECC with data 0 (nvml.h); a queued NvmlError is raised, as the real wait
        answers GPU_IS_LOST when any GPU of the set has fallen off the bus."""
        try:
            item = self.events.get(timeout=min(timeout_ms, 50) / 1000)
        except queue.Empty:
            raise NvmlTimeout("Timeout") from None
        if isinstance(item, BaseException):
            raise item
        return item

    def event_set_free(self, es):
        pass


def fleet(*profiles: str) -> FakeNvml:
    return FakeNvml([FakeGpu(p, i) for i, p in enumerate(profiles)])


def smoke_h200() -> FakeNvml:
    """One H200 whose energy counter runs, for bench/gpu-smoke's own test (GPU_SMOKE_STAND_IN)."""
    return FakeNvml([FakeGpu("H200-SXM", 0, live_energy=True)])
