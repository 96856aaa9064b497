"""The one thin adapter between NVML (``pynvml`` from nvidia-ml-py) and the rest of the agent.

Only this module imports pynvml, and only when ``Nvml.init()`` runs, so a node without the
package or the library loses the gpu collector, not the daemon. It translates pynvml's
exceptions into ours (``collectors.gpu.errors``) and ctypes structures into plain Python
values in NVML's own units (mW, mJ, MHz, bytes, KiB for NVLink), so that a fake of this class
(tests/fakes/nvml.py) can stand in for it everywhere else.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from .errors import (
    NvmlError,
    NvmlGpuLost,
    NvmlNeedsReinit,
    NvmlNoPermission,
    NvmlNotFound,
    NvmlNotPresent,
    NvmlNotSupported,
    NvmlTimeout,
)

# NVML return codes (nvmlReturn_t)
_NOT_SUPPORTED, _NO_PERMISSION, _NOT_FOUND, _TIMEOUT = 3, 4, 6, 10
_DRIVER_NOT_LOADED, _LIBRARY_NOT_FOUND, _FUNCTION_NOT_FOUND, _GPU_IS_LOST = 9, 12, 13, 15
_UNINITIALIZED, _LIB_RM_VERSION_MISMATCH = 1, 18

def translate(e: Exception) -> Exception:
    code = getattr(e, "value", None)
    msg = str(e)
    if code == _NOT_SUPPORTED or code == _FUNCTION_NOT_FOUND:
        return NvmlNotSupported(msg)
    if code == _GPU_IS_LOST:
        return NvmlGpuLost(msg)
    if code == _NO_PERMISSION:
        return NvmlNoPermission(msg)
    if code == _NOT_FOUND:
        return NvmlNotFound(msg)
    if code == _TIMEOUT:
        return NvmlTimeout(msg)
    if code in (_DRIVER_NOT_LOADED, _LIBRARY_NOT_FOUND):
        return NvmlNotPresent(msg)
    if code in (_UNINITIALIZED, _LIB_RM_VERSION_MISMATCH):
        return NvmlNeedsReinit(msg)
    return NvmlError(f"NVML error {code}: {msg}")


# GPM metrics read each window (nvml.h NVML_GPM_METRIC_*): what dcgm-exporter's profiling fields report.
GPM_METRICS = ("SM_UTIL", "SM_OCCUPANCY", "ANY_TENSOR_UTIL", "DFMA_TENSOR_UTIL", "HMMA_TENSOR_UTIL",
               "IMMA_TENSOR_UTIL", "DRAM_BW_UTIL", "FP64_UTIL", "FP32_UTIL", "FP16_UTIL", "INTEGER_UTIL",
               "GRAPHICS_UTIL", *(f"NVDEC_{i}_UTIL" for i in range(8)), *(f"NVJPG_{i}_UTIL" for i in range(8)),
               "NVOFA_0_UTIL", "PCIE_TX_PER_SEC", "PCIE_RX_PER_SEC", "NVLINK_TOTAL_TX_PER_SEC",
               "NVLINK_TOTAL_RX_PER_SEC")


class Nvml:
    """Real NVML. Every method raises only ``collectors.gpu.errors`` exceptions."""

    def __init__(self) -> None:
        self.n: Any = None
        self._gpm: list[tuple[str, int]] | None = None

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except self.n.NVMLError as e:
            raise translate(e) from None

    # --- library ------------------------------------------------------------------
    def init(self) -> None:
        try:
            import pynvml
        except ImportError:
            raise NvmlNotPresent("nvidia-ml-py is not installed (pip install 'aifactory-agent[gpu]')") from None
        self.n = pynvml
        self._call(pynvml.nvmlInit)

    def shutdown(self) -> None:
        if self.n is not None:
            try:
                self.n.nvmlShutdown()
            except Exception:
                pass

    def driver_version(self) -> str:
        return _s(self._call(self.n.nvmlSystemGetDriverVersion))

    def cuda_version(self) -> str:
        v = self._call(self.n.nvmlSystemGetCudaDriverVersion_v2)
        return f"{v // 1000}.{(v % 1000) // 10}"

    def device_count(self) -> int:
        return self._call(self.n.nvmlDeviceGetCount)

    def handle(self, index: int):
        return self._call(self.n.nvmlDeviceGetHandleByIndex, index)

    def handle_by_uuid(self, uuid: str):
        return self._call(self.n.nvmlDeviceGetHandleByUUID, uuid)

    # --- identity and static facts --------------------------------------------------
    def name(self, h) -> str:
        return _s(self._call(self.n.nvmlDeviceGetName, h))

    def uuid(self, h) -> str:
        return _s(self._call(self.n.nvmlDeviceGetUUID, h))

    def serial(self, h) -> str:
        return _s(self._call(self.n.nvmlDeviceGetSerial, h))

    def pci_bus_id(self, h) -> str:
        return _s(self._call(self.n.nvmlDeviceGetPciInfo_v3, h).busId)

    def vbios_version(self, h) -> str:
        return _s(self._call(self.n.nvmlDeviceGetVbiosVersion, h))

    def max_clock_mhz(self, h, kind: str) -> int:
        return self._call(self.n.nvmlDeviceGetMaxClockInfo, h, self._clock(kind))

    def temperature_threshold(self, h, kind: str) -> int:
        t = {"slowdown": self.n.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN,
             "shutdown": self.n.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN,
             "memory_max": self.n.NVML_TEMPERATURE_THRESHOLD_MEM_MAX,
             "gpu_max": self.n.NVML_TEMPERATURE_THRESHOLD_GPU_MAX}[kind]
        return self._call(self.n.nvmlDeviceGetTemperatureThreshold, h, t)

    def power_limit_default_mw(self, h) -> int:
        return self._call(self.n.nvmlDeviceGetPowerManagementDefaultLimit, h)

    def power_limit_constraints_mw(self, h) -> tuple[int, int]:
        """(min, max) power limit the board accepts, mW."""
        lo, hi = self._call(self.n.nvmlDeviceGetPowerManagementLimitConstraints, h)
        return int(lo), int(hi)

    def nvlink_count(self) -> int:
        return int(getattr(self.n, "NVML_NVLINK_MAX_LINKS", 18))

    # --- per cycle -------------------------------------------------------------------
    def field_values(self, h, ids: list[tuple[int, int]]) -> list[tuple[int, int, int, float | int | None]]:
        """One nvmlDeviceGetFieldValues call: [(field, scope, nvml_return, value)]; value None unless OK, and
        None with return 0 where the answer is no possible value of that field (``decode_field``)."""
        arr = self._call(self.n.nvmlDeviceGetFieldValues, h, [list(x) for x in ids])
        out = []
        for v in arr:
            if v.nvmlReturn != 0:
                out.append((v.fieldId, v.scopeId, v.nvmlReturn, None))
            else:
                out.append((v.fieldId, v.scopeId, 0, decode_field(v.fieldId, v.valueType, bytes(v.value))))
        return out

    def utilization(self, h) -> tuple[int, int]:
        u = self._call(self.n.nvmlDeviceGetUtilizationRates, h)
        return u.gpu, u.memory

    def memory(self, h) -> dict[str, int]:
        try:
            m = self._call(self.n.nvmlDeviceGetMemoryInfo, h, self.n.nvmlMemory_v2)
            return {"total": m.total, "used": m.used, "free": m.free, "reserved": m.reserved}
        except NvmlNotSupported:
            m = self._call(self.n.nvmlDeviceGetMemoryInfo, h)
            return {"total": m.total, "used": m.used, "free": m.free}

    def power_usage_mw(self, h) -> int:
        return self._call(self.n.nvmlDeviceGetPowerUsage, h)

    def power_limit_mw(self, h) -> int:
        return self._call(self.n.nvmlDeviceGetPowerManagementLimit, h)

    def power_limit_enforced_mw(self, h) -> int:
        return self._call(self.n.nvmlDeviceGetEnforcedPowerLimit, h)

    def workload_power_profiles(self, h) -> tuple[list[int], list[int]]:
        """(requested, enforced) workload power profiles (nvmlPowerProfileType_t ids; Blackwell+ data-centre
        parts): bit i of a mask is profile i. A driver before the call is NOT_SUPPORTED (FUNCTION_NOT_FOUND)."""
        import ctypes

        n = self.n
        fn = getattr(n, "nvmlDeviceWorkloadPowerProfileGetCurrentProfiles", None)
        if fn is None:
            raise NvmlNotSupported("no workload power profiles in this pynvml")
        cur = n.c_nvmlWorkloadPowerProfileCurrentProfiles_v1_t()
        self._call(fn, h, ctypes.byref(cur))
        return mask_bits(cur.requestedProfilesMask.mask), mask_bits(cur.enforcedProfilesMask.mask)

    def temperature_c(self, h) -> int:
        n = self.n
        if hasattr(n, "nvmlDeviceGetTemperatureV"):
            try:
                return int(self._call(n.nvmlDeviceGetTemperatureV, h, n.NVML_TEMPERATURE_GPU))
            except NvmlNotSupported:
                pass
        return self._call(n.nvmlDeviceGetTemperature, h, n.NVML_TEMPERATURE_GPU)

    def _clock(self, kind: str) -> int:
        return {"sm": self.n.NVML_CLOCK_SM, "memory": self.n.NVML_CLOCK_MEM,
                "graphics": self.n.NVML_CLOCK_GRAPHICS}[kind]

    def clock_mhz(self, h, kind: str) -> int:
        return self._call(self.n.nvmlDeviceGetClockInfo, h, self._clock(kind))

    def clocks_event_reasons(self, h) -> int:
        # nvmlDeviceGetCurrentClocksEventReasons (driver 535+) replaced ...ClocksThrottleReasons, which older
        # drivers have alone (FUNCTION_NOT_FOUND for the new name) and which pynvml 13 marks for removal
        new = getattr(self.n, "nvmlDeviceGetCurrentClocksEventReasons", None)
        old = getattr(self.n, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
        if new is not None:
            try:
                return self._call(new, h)
            except NvmlNotSupported:
                if old is None:
                    raise
        if old is None:
            raise NvmlNotSupported("no clocks event reasons in this pynvml")
        return self._call(old, h)

    def pcie_throughput_kbps(self, h) -> tuple[int, int]:
        """(tx, rx) PCIe throughput in KB/s, NVML's sample over its last 20 ms."""
        n = self.n
        return (self._call(n.nvmlDeviceGetPcieThroughput, h, n.NVML_PCIE_UTIL_TX_BYTES),
                self._call(n.nvmlDeviceGetPcieThroughput, h, n.NVML_PCIE_UTIL_RX_BYTES))

    def fan_percent(self, h) -> int:
        return self._call(self.n.nvmlDeviceGetFanSpeed, h)

    def pstate(self, h) -> int:
        return self._call(self.n.nvmlDeviceGetPerformanceState, h)

    def pcie_link(self, h) -> tuple[int, int]:
        return (self._call(self.n.nvmlDeviceGetCurrPcieLinkGeneration, h),
                self._call(self.n.nvmlDeviceGetCurrPcieLinkWidth, h))

    def persistence_mode(self, h) -> bool:
        return self._call(self.n.nvmlDeviceGetPersistenceMode, h) == 1

    def compute_mode(self, h) -> str:
        m = self._call(self.n.nvmlDeviceGetComputeMode, h)
        return {0: "default", 1: "exclusive_thread", 2: "prohibited", 3: "exclusive_process"}.get(m, str(m))

    def mig_mode(self, h) -> bool:
        current, _pending = self._call(self.n.nvmlDeviceGetMigMode, h)
        return current == 1

    def nvlink_active(self, h, link: int) -> bool:
        return self._call(self.n.nvmlDeviceGetNvLinkState, h, link) == 1

    def processes(self, h) -> list[tuple[int, int | None, int | None]]:
        """(pid, used GPU memory bytes or None, its MIG GPU instance or None) of compute processes.
        nvmlProcessInfo_t's gpuInstanceId is 0xFFFFFFFF outside MIG (nvml.h); older bindings have no field."""
        out = []
        for p in self._call(self.n.nvmlDeviceGetComputeRunningProcesses, h):
            gi = getattr(p, "gpuInstanceId", None)
            out.append((p.pid, p.usedGpuMemory, gi if isinstance(gi, int) and gi != 0xFFFFFFFF else None))
        return out

    def process_utilization(self, h, since_us: int) -> list[tuple[int, int, int, int]]:
        """(pid, timestamp_us, sm %, memory %) samples newer than since_us; NvmlNotFound if none."""
        return [(s.pid, s.timeStamp, s.smUtil, s.memUtil)
                for s in self._call(self.n.nvmlDeviceGetProcessUtilization, h, since_us)]

    def mig_devices(self, h) -> list[dict]:
        """Every MIG device of a MIG-enabled GPU with its identity and memory."""
        n = self.n
        out = []
        for i in range(self._call(n.nvmlDeviceGetMaxMigDeviceCount, h)):
            try:
                m = self._call(n.nvmlDeviceGetMigDeviceHandleByIndex, h, i)
            except NvmlNotFound:
                continue
            mem = self._call(n.nvmlDeviceGetMemoryInfo, m)
            out.append({"handle": m, "uuid": _s(self._call(n.nvmlDeviceGetUUID, m)),
                        "gpu_instance_id": self._call(n.nvmlDeviceGetGpuInstanceId, m),
                        "compute_instance_id": self._call(n.nvmlDeviceGetComputeInstanceId, m),
                        "profile": _s(self._call(n.nvmlDeviceGetName, m)),
                        "memory_used": mem.used, "memory_total": mem.total})
        return out

    def gpm_metrics(self, h, state: dict, key, gpu_instance_id: int | None = None) -> dict[str, float]:
        """GPM (Hopper+) metrics of the GPU, or of one of its MIG GPU instances, over the window since this key's
        previous call: {metric name as nvml.h has it, without NVML_GPM_METRIC_: value}, each metric with its
        own return code (one a driver lacks is left out). Two samples per key, allocated once and taken in
        turn; the first call has no window yet (NvmlNotFound)."""
        n = self.n
        st = state.get(key)
        if st is None:
            st = state[key] = {"samples": [self._call(n.nvmlGpmSampleAlloc), self._call(n.nvmlGpmSampleAlloc)],
                               "next": 0, "primed": False}
        cur, prev = st["samples"][st["next"]], st["samples"][1 - st["next"]]
        if gpu_instance_id is None:
            self._call(n.nvmlGpmSampleGet, h, cur)
        else:
            self._call(n.nvmlGpmMigSampleGet, h, gpu_instance_id, cur)
        st["next"] = 1 - st["next"]
        if not st["primed"]:
            st["primed"] = True
            raise NvmlNotFound("first GPM sample: no window yet")
        ids = self._gpm_ids()
        req = n.c_nvmlGpmMetricsGet_t()
        req.version = n.NVML_GPM_METRICS_GET_VERSION
        req.numMetrics = len(ids)
        req.sample1 = prev
        req.sample2 = cur
        for i, (_, mid) in enumerate(ids):
            req.metrics[i].metricId = mid
        self._call(n.nvmlGpmMetricsGet, req)
        return {name: float(req.metrics[i].value) for i, (name, _) in enumerate(ids) if req.metrics[i].nvmlReturn == 0}

    def _gpm_ids(self) -> list[tuple[str, int]]:
        """The metric ids GPM_METRICS names, as this library defines them (older ones lack the newest)."""
        if self._gpm is None:
            self._gpm = [(name, getattr(self.n, "NVML_GPM_METRIC_" + name)) for name in GPM_METRICS
                         if hasattr(self.n, "NVML_GPM_METRIC_" + name)]
        return self._gpm

    def gpm_free(self, state: dict) -> None:
        """Give the samples back (the collector closes)."""
        for st in state.values():
            for s in st.get("samples", ()):
                try:
                    self.n.nvmlGpmSampleFree(s)
                except Exception:  # a lost GPU's samples: nothing more to do with them
                    pass
        state.clear()

    # --- events ---------------------------------------------------------------------
    def event_set(self, handles: list) -> Any:
        n = self.n
        es = self._call(n.nvmlEventSetCreate)
        for h in handles:
            try:
                supported = self._call(n.nvmlDeviceGetSupportedEventTypes, h)
                mask = supported & (n.nvmlEventTypeXidCriticalError | n.nvmlEventTypeDoubleBitEccError)
                if mask:
                    self._call(n.nvmlDeviceRegisterEvents, h, mask, es)
            except (NvmlNotSupported, NvmlGpuLost, NvmlNoPermission):
                continue
        return es

    def event_wait(self, es, timeout_ms: int) -> tuple[str, int, int]:
        """(uuid of the GPU, event type bit, XID or 0); NvmlTimeout when nothing came."""
        d = self._call(self.n.nvmlEventSetWait_v2, es, timeout_ms)
        return _s(self._call(self.n.nvmlDeviceGetUUID, d.device)), int(d.eventType), int(d.eventData)

    def event_set_free(self, es) -> None:
        try:
            self.n.nvmlEventSetFree(es)
        except Exception:
            pass


# The range a field's value can have (nvml.h units); an answer outside it is no reading. ECC and row-remap counts
# stop far below 2^31; DCGM's blanks (0x7ffffff0, 2^47 as double) and a 0xFFFFFFFF fill fall outside.
_TEMPERATURE = (-40, 150)
_COUNT = (0, 2**31 - 1)
_FIELD_RANGE: dict[int, tuple[float, float]] = {
    82: _TEMPERATURE,
    185: (0, 10_000_000), 186: (0, 10_000_000),  # mW: 10 kW is above any module
    3: _COUNT, 4: _COUNT, 5: _COUNT, 6: _COUNT, 29: _COUNT, 30: _COUNT, 31: (0, 1),
    142: _COUNT, 143: _COUNT, 144: (0, 1), 145: (0, 1),
    251: (0, 1), 264: (0, 4), 260: (0, 100),  # power smoothing: on/off, preset profile (5 at most), % floor
}
_WIDE_RANGE = (0, 2**64 - 1)  # cumulative counters: energy (mJ), bytes, ns
_WIDTH_BITS = {1: 32, 5: 32, 6: 16}  # nvmlValueType_t: UNSIGNED_INT, SIGNED_INT, UNSIGNED_SHORT


def decode_field(field_id: int, value_type: int, raw: bytes) -> float | int | None:
    """The value of one field from its union's 8 bytes, guarding against NVML's mistyped answers.

    NVML has declared fields with a type other than the one it wrote: the HBM temperature typed as double while
    the union holds an unsigned int (r545: read as a double, 52 C is 2.6e-322), and ECC counts typed narrower or
    wider than written. DCGM checks these fields' types before use; here every reading is tried as declared,
    then as the other widths, and the first value the field can have wins. pynvml allocates the array zeroed,
    so bytes past a 4-byte type that are not zero mean NVML wrote 8. None: no possible value (dropped).
    """
    raw = raw[:8].ljust(8, b"\0")
    u64 = int.from_bytes(raw, "little")
    u32 = u64 & 0xFFFFFFFF
    (d,) = struct.unpack("<d", raw)
    declared = {0: d, 1: u32, 2: u64, 3: u64, 4: struct.unpack("<q", raw)[0],
                5: struct.unpack("<i", raw[:4])[0], 6: u64 & 0xFFFF}.get(value_type)
    # bits beyond the declared width: NVML wrote a wider value than it typed (a USHORT holding 70000)
    wide = u64 >> _WIDTH_BITS.get(value_type, 64) != 0
    if value_type == 0:
        # an integer under a double type shows as a subnormal double (exponent bits zero)
        order = [d, u64] if u64 >> 52 == 0 else [d]
    elif value_type in (1, 5, 6) and wide:
        order = [u64, d]
    elif value_type in (4, 5):
        # a signed value means what it says: -1 is "no value", never 4294967295 read as unsigned
        order = [declared]
    else:
        order = [declared, d, u32]
    lo, hi = _FIELD_RANGE.get(field_id, _WIDE_RANGE)
    for v in order:
        if v is None:
            continue
        if isinstance(v, float):
            if not math.isfinite(v) or (v != 0 and abs(v) < 1e-3) or not lo <= v <= hi:
                continue
            return int(v) if v.is_integer() and field_id != 82 else v
        if lo <= v <= hi:
            return v
    return None


def mask_bits(words) -> list[int]:
    """The set bits of an nvmlMask255_t (eight 32-bit words, bit 0 of word 0 first)."""
    return [w * 32 + b for w, word in enumerate(words) for b in range(32) if int(word) >> b & 1]


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)

