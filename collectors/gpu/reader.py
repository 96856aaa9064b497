"""Reads every GPU through the adapter into plain dataclasses, degrading per GPU and per field.

- One ``field_values`` batch per GPU for everything that has a field id; each entry's own
  return code is checked.
- NotSupported (and NoPermission) is remembered per (GPU, reading) and not asked again.
- GpuIsLost marks that GPU lost (the others go on); it is retried every ``lost_retry``.
- A reload of the driver under the agent (NeedsReinit) re-initialises NVML next cycle.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collectors.common.cgroups import owner_of

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

log = logging.getLogger(__name__)

ALL_LINKS = 0xFFFFFFFF
_LOST, _NOT_SUPPORTED, _NO_PERMISSION, _INVALID_ARGUMENT = 15, 3, 4, 2

# NVML power scopes (nvmlPowerScopeType_t): the GPU alone, or the module (Grace Hopper / Grace Blackwell: GPU,
# Grace CPU, memory and the module's own losses)
SCOPE_GPU, SCOPE_MODULE, SCOPE_MEMORY = 0, 1, 2

# reading -> (field id, scope)
FIELDS: dict[str, tuple[int, int]] = {
    "power_instant_mw": (186, SCOPE_GPU), "power_average_mw": (185, SCOPE_GPU), "energy_mj": (83, 0),
    # the module's, asked beside the GPU's: used only where the GPU scope has no energy (or no power at all)
    "power_instant_module_mw": (186, SCOPE_MODULE), "power_average_module_mw": (185, SCOPE_MODULE),
    "energy_module_mj": (191, SCOPE_MODULE),
    "power_instant_memory_mw": (186, SCOPE_MEMORY),  # the GPU's memory alone, where the driver measures it
    # power smoothing (Blackwell+): whether it is on and which preset profile is active
    "smoothing_enabled": (251, 0), "smoothing_profile": (264, 0),
    "memory_temperature_c": (82, 0),
    "pcie_tx_bytes": (197, 0), "pcie_rx_bytes": (198, 0), "pcie_replay": (94, 0),
    "ecc_sbe_volatile": (3, 0), "ecc_dbe_volatile": (4, 0), "ecc_sbe_aggregate": (5, 0), "ecc_dbe_aggregate": (6, 0),
    "retired_sbe": (29, 0), "retired_dbe": (30, 0), "retired_pending": (31, 0),
    "remapped_cor": (142, 0), "remapped_unc": (143, 0), "remap_pending": (144, 0), "remap_failure": (145, 0),
    "throttle_power_cap_ns": (74, 0), "throttle_sync_boost_ns": (76, 0), "throttle_sw_thermal_ns": (269, 0),
    "throttle_hw_thermal_ns": (270, 0), "throttle_power_brake_ns": (271, 0),
    "nvlink_crc_flit": (38, 0), "nvlink_crc_data": (45, 0), "nvlink_replay": (52, 0), "nvlink_recovery": (59, 0),
    "nvlink_tx_kib": (138, ALL_LINKS), "nvlink_rx_kib": (139, ALL_LINKS),
}
_BY_ID = {v: k for k, v in FIELDS.items()}
# a GPU-scope reading -> the same reading of the module
MODULE_SCOPE = {"power_instant_mw": "power_instant_module_mw", "power_average_mw": "power_average_module_mw",
                "energy_mj": "energy_module_mj"}
NVLINK_TX, NVLINK_RX = 138, 139
# a power-smoothing preset profile's parameters: fields whose scopeId is the profile (nvml.h "for a given
# profile"), asked for the profile field 264 said was active
SMOOTHING_PARAMS = {260: "smoothing_floor_percent", 261: "smoothing_ramp_up_mw_per_s",
                    262: "smoothing_ramp_down_mw_per_s", 263: "smoothing_ramp_down_hysteresis_ms"}


@dataclass
class GpuStatic:
    index: int
    uuid: str
    name: str
    pci_bus_id: str = ""
    serial: str = ""
    vbios: str = ""
    max_clocks_mhz: dict[str, int] = field(default_factory=dict)
    thresholds_c: dict[str, int] = field(default_factory=dict)
    power_limit_default_mw: int | None = None
    power_limit_min_mw: int | None = None
    power_limit_max_mw: int | None = None

    def tags(self) -> dict[str, str]:
        return {"gpu": str(self.index), "uuid": self.uuid, "model": self.name, "pci_bus_id": self.pci_bus_id}


@dataclass
class Proc:
    pid: int
    memory_bytes: int | None
    sm_percent: int | None = None
    mem_percent: int | None = None
    name: str = ""
    container: str = ""
    slurm_job: str = ""
    pod: str = ""
    gpu_instance: int | None = None  # the MIG GPU instance it runs in


@dataclass
class GpuReading:
    static: GpuStatic
    lost: bool = False
    values: dict[str, Any] = field(default_factory=dict)
    links: dict[int, dict[str, Any]] = field(default_factory=dict)
    processes: list[Proc] = field(default_factory=list)
    mig: list[dict] = field(default_factory=list)
    xids: list[int] = field(default_factory=list)
    # gpu_lost, gpu_recovered (state changes), ecc_dbe (one per double-bit ECC event)
    events: list[str] = field(default_factory=list)


class GpuState:
    """What the reader remembers about one GPU between cycles."""

    def __init__(self, static: GpuStatic, handle: Any) -> None:
        self.static = static
        self.handle = handle
        self.unsupported: set[str] = set()
        self.unsupported_since = time.monotonic()
        self.mig_mode: bool | None = None
        self.told: set[str] = set()  # readings whose missing permission was logged (once)
        self.lost = False
        self.lost_checked = 0.0
        self.links: list[int] | None = None  # NVLink ids that exist (None: not probed yet)
        self.proc_ts_us = 0
        self.gpm: dict = {}
        self.smoothing_profile: int | None = None  # the active power-smoothing profile last seen
        self.errors: dict[str, str] = {}
        self.pcie_last: dict[str, int] = {}  # last raw PCIe byte counter
        self.pcie_width: dict[str, int] = {}  # 64 once seen past 2^32, 32 once seen wrapping below it

    def reprobe(self) -> None:
        """Ask again what NVML refused."""
        self.unsupported.clear()
        self.unsupported_since = time.monotonic()


# --- who runs on the GPU: container, Slurm job, Kubernetes pod ------------------------------


def describe_process(proc_root: Path, p: Proc) -> None:
    base = proc_root / str(p.pid)
    try:
        p.name = (base / "comm").read_text().strip()
    except OSError:
        p.name = ""
    owner = owner_of(proc_root, p.pid)
    if owner is not None:
        p.container, p.slurm_job, p.pod = owner.container, owner.job_id, owner.pod_uid


# nvml.h: nvmlEventTypeDoubleBitEccError 0x2, nvmlEventTypeXidCriticalError 0x8; eventData is set for XID
# events only (it is 0 for ECC events)
EVENT_DBE, EVENT_XID = 0x2, 0x8


class XidWatcher:
    """Waits on an NVML event set in its own thread; the collector drains what arrived.

    Events are (uuid, "xid", number) or (uuid, "ecc_dbe", 0): a double-bit ECC event is no XID. NVML's wait
    answers GPU_IS_LOST when any GPU of the set falls off the bus: the watcher keeps waiting for the others
    (pausing a second between such answers), and the reader re-arms it when a lost GPU comes back.
    """

    LOST_PAUSE = 1.0

    def __init__(self, nvml, handles: list) -> None:
        self.nvml = nvml
        self.events: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.es = nvml.event_set(handles)
        self.thread = threading.Thread(target=self._run, name="nvml-events", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        lost_logged = False
        while not self.stop.is_set():
            try:
                uuid, etype, data = self.nvml.event_wait(self.es, 1000)
            except NvmlTimeout:
                continue
            except NvmlGpuLost as e:
                if not lost_logged:
                    log.warning("NVML event wait: a GPU is lost (%s); XID events of the others are still watched", e)
                    lost_logged = True
                self.stop.wait(self.LOST_PAUSE)
                continue
            except NvmlError as e:
                log.warning("NVML event wait failed, XID events stop: %s", e)
                return
            if etype & EVENT_XID:
                event = (uuid, "xid", data)
            elif etype & EVENT_DBE:
                event = (uuid, "ecc_dbe", 0)
            else:
                continue
            with self.lock:
                self.events.append(event)

    def drain(self) -> list[tuple[str, str, int]]:
        with self.lock:
            out, self.events = self.events, []
        return out

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.nvml.event_set_free(self.es)


class GpuReader:
    def __init__(self, nvml, proc_root: Path = Path("/proc"), processes: bool = True, max_processes: int = 16,
                 xid_events: bool = True, lost_retry: float = 60.0) -> None:
        self.nvml = nvml
        self.proc_root = Path(proc_root)
        self.want_processes = processes
        self.max_processes = max_processes
        self.want_xid = xid_events
        self.lost_retry = lost_retry
        self.gpus: list[GpuState] = []
        self.driver_version = ""
        self.cuda_version = ""
        self.initialized = False
        self.xid: XidWatcher | None = None
        self.unavailable: dict[int, tuple[float, str]] = {}  # index -> (when asked, why no handle)

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Initialise NVML and enumerate the GPUs; raises NvmlNotPresent where there is none."""
        self.nvml.init()
        self.driver_version = self._opt(self.nvml.driver_version) or ""
        self.cuda_version = self._opt(self.nvml.cuda_version) or ""
        self.gpus = []
        self.unavailable = {}
        for i in range(self.nvml.device_count()):
            try:
                h = self.nvml.handle(i)
                self.gpus.append(GpuState(self._static(i, h), h))
            except NvmlGpuLost:
                st = GpuState(GpuStatic(i, f"lost-index-{i}", "unknown"), None)
                st.lost = True
                self.gpus.append(st)
            except (NvmlNeedsReinit, NvmlNotPresent):
                raise
            except NvmlError as e:
                self._unavailable(i, e)
        if self.want_xid:
            try:
                self.xid = XidWatcher(self.nvml, [g.handle for g in self.gpus if g.handle is not None])
            except NvmlError as e:
                log.info("XID events unavailable: %s", e)
        self.initialized = True

    def _unavailable(self, index: int, e: Exception) -> None:
        """nvml.h: the device count may include GPUs whose handle then fails (NO_PERMISSION outside the
        container's cgroup, INSUFFICIENT_POWER, IRQ_ISSUE, UNKNOWN): that GPU is left out, not the node,
        and asked again every lost_retry. Not "lost": a GPU this agent may not see is no failure."""
        if index not in self.unavailable:
            log.warning("GPU %d: no handle (%s); left out, asked again every %.0f s", index, e, self.lost_retry)
        self.unavailable[index] = (time.monotonic(), str(e))

    def _retry_unavailable(self) -> bool:
        came = False
        for index, (when, _) in list(self.unavailable.items()):
            if time.monotonic() - when < self.lost_retry:
                continue
            try:
                h = self.nvml.handle(index)
                st = GpuState(self._static(index, h), h)
            except (NvmlNeedsReinit, NvmlNotPresent):
                raise
            except NvmlError as e:
                self._unavailable(index, e)
                continue
            del self.unavailable[index]
            self.gpus.append(st)
            self.gpus.sort(key=lambda g: g.static.index)
            log.info("GPU %d (%s) answers now", index, st.static.uuid)
            came = True
        return came

    def stop(self) -> None:
        if self.xid is not None:
            self.xid.close()
            self.xid = None
        for g in self.gpus:  # GPM samples allocated by the library: given back before it shuts down
            if g.gpm:
                self.nvml.gpm_free(g.gpm)
        if self.initialized:
            self.nvml.shutdown()
        self.initialized = False

    @staticmethod
    def _opt(fn, *args):
        try:
            return fn(*args)
        except (NvmlNotSupported, NvmlNoPermission, NvmlNotFound):
            return None

    def _static(self, index: int, h) -> GpuStatic:
        n = self.nvml
        st = GpuStatic(index, n.uuid(h), n.name(h), pci_bus_id=self._opt(n.pci_bus_id, h) or "",
                       serial=self._opt(n.serial, h) or "", vbios=self._opt(n.vbios_version, h) or "")
        for kind in ("sm", "memory", "graphics"):
            v = self._opt(n.max_clock_mhz, h, kind)
            if v:
                st.max_clocks_mhz[kind] = v
        for kind in ("slowdown", "shutdown", "memory_max"):
            v = self._opt(n.temperature_threshold, h, kind)
            if v:
                st.thresholds_c[kind] = v
        st.power_limit_default_mw = self._opt(n.power_limit_default_mw, h)
        constraints = self._opt(n.power_limit_constraints_mw, h)
        if constraints:
            st.power_limit_min_mw, st.power_limit_max_mw = constraints
        return st

    # --- one cycle -------------------------------------------------------------------
    def read(self) -> list[GpuReading]:
        xids: dict[str, list[int]] = {}
        ecc: dict[str, list[str]] = {}
        if self.xid is not None:
            for uuid, kind, data in self.xid.drain():
                if kind == "xid":
                    xids.setdefault(uuid, []).append(data)
                else:
                    ecc.setdefault(uuid, []).append(kind)
        out = []
        recovered = self._retry_unavailable() if self.unavailable else False
        for g in self.gpus:
            r = GpuReading(g.static, xids=xids.get(g.static.uuid, []), events=ecc.get(g.static.uuid, []))
            was_lost = g.lost
            if g.lost and not self._recovered(g):
                r.lost = True
            else:
                if was_lost:
                    r.events.append("gpu_recovered")
                    recovered = True
                try:
                    self._read_gpu(g, r)
                except NvmlGpuLost as e:
                    g.lost, g.lost_checked = True, time.monotonic()
                    log.error("GPU %d (%s) is lost: %s", g.static.index, g.static.uuid, e)
                    r = GpuReading(g.static, lost=True, xids=r.xids, events=r.events + ["gpu_lost"])
            out.append(r)
        if recovered and self.xid is not None:
            self._rearm_events()
        return out

    def _rearm_events(self) -> None:
        """A GPU that came back has a new handle: a new event set with every GPU that answers."""
        self.xid.close()
        self.xid = None
        try:
            self.xid = XidWatcher(self.nvml, [g.handle for g in self.gpus if g.handle is not None and not g.lost])
        except NvmlError as e:
            log.info("XID events unavailable: %s", e)

    def _recovered(self, g: GpuState) -> bool:
        if time.monotonic() - g.lost_checked < self.lost_retry:
            return False
        g.lost_checked = time.monotonic()
        try:
            h = self.nvml.handle_by_uuid(g.static.uuid) if not g.static.uuid.startswith("lost-") else None
            if h is None:
                return False
            self.nvml.uuid(h)
        except NvmlError:
            return False
        g.handle, g.lost = h, False
        log.warning("GPU %d (%s) answers again", g.static.index, g.static.uuid)
        return True

    def _call(self, g: GpuState, key: str, fn, *args):
        if key in g.unsupported:
            return None
        try:
            return fn(*args)
        except (NvmlNotSupported, NvmlNoPermission) as e:
            g.unsupported.add(key)
            if isinstance(e, NvmlNoPermission) and key not in g.told:
                g.told.add(key)
                log.info("GPU %d: %s needs more privileges; asked again in %.0f min or when MIG changes",
                         g.static.index, key, self.REPROBE / 60)
            return None
        except NvmlNotFound:
            return None
        except (NvmlGpuLost, NvmlNeedsReinit):
            raise
        except NvmlError as e:
            if g.errors.get(key) != str(e):
                log.warning("GPU %d: %s failed: %s", g.static.index, key, e)
            g.errors[key] = str(e)
            return None

    # What NVML refused (NotSupported, NoPermission) is asked again this often, and whenever the MIG mode
    # changes: row remapping is NotSupported while MIG is on and must come back when it is switched off.
    REPROBE = 600.0

    def _read_gpu(self, g: GpuState, r: GpuReading) -> None:
        n, h, v = self.nvml, g.handle, r.values
        if g.unsupported and time.monotonic() - g.unsupported_since > self.REPROBE:
            g.reprobe()
        # 1. one batch for every field id, each entry checked on its own
        if g.links is None:
            g.links = self._probe_links(g)
        ids = [fs for k, fs in FIELDS.items() if k not in g.unsupported]
        for link in g.links:
            ids += [(NVLINK_TX, link), (NVLINK_RX, link)]
        profile = g.smoothing_profile if "smoothing_params" not in g.unsupported else None
        if profile is not None:
            ids += [(fid, profile) for fid in SMOOTHING_PARAMS]
        if ids and "fields" not in g.unsupported:
            res = self._call(g, "fields", n.field_values, h, ids)
            for fid, scope, ret, val in res or ():
                if fid in SMOOTHING_PARAMS and scope == profile:
                    if ret == 0 and val is not None:
                        v[SMOOTHING_PARAMS[fid]] = val
                    elif ret in (_NOT_SUPPORTED, _NO_PERMISSION):
                        g.unsupported.add("smoothing_params")
                    continue
                if fid in (NVLINK_TX, NVLINK_RX) and scope != ALL_LINKS:
                    if ret == 0 and val is not None:
                        r.links.setdefault(scope, {})["tx_kib" if fid == NVLINK_TX else "rx_kib"] = val
                    continue
                key = _BY_ID.get((fid, scope))
                if key is None:
                    continue
                if ret == 0 and val is None:
                    self._impossible(g, key, fid)
                elif ret == 0:
                    v[key] = val
                elif ret == _LOST:
                    raise NvmlGpuLost(f"field {fid}")
                elif ret in (_NOT_SUPPORTED, _NO_PERMISSION, _INVALID_ARGUMENT):
                    # INVALID_ARGUMENT: a field id or scope this driver does not know (a newer field, the
                    # memory power scope): not asked again until the re-probe, as NOT_SUPPORTED
                    g.unsupported.add(key)
        self._pcie_counters(g, v)
        self._power_scope(v)
        self._smoothing(g, v, profile)
        # 2. the readings that have no field id
        util = self._call(g, "utilization", n.utilization, h)
        if util is not None:
            v["utilization_percent"], v["memory_utilization_percent"] = util
        mem = self._call(g, "memory", n.memory, h)
        if mem:
            v["memory"] = mem
        if "power_instant_mw" not in v and v.get("power_scope") == "gpu":
            p = self._call(g, "power_usage", n.power_usage_mw, h)
            if p is not None:
                v["power_usage_mw"] = p
        v["power_limit_mw"] = self._call(g, "power_limit", n.power_limit_mw, h)
        v["power_limit_enforced_mw"] = self._call(g, "power_limit_enforced", n.power_limit_enforced_mw, h)
        profiles = self._call(g, "power_profiles", n.workload_power_profiles, h)
        if profiles is not None:
            v["power_profiles_requested"], v["power_profiles_enforced"] = profiles
        v["temperature_c"] = self._call(g, "temperature", n.temperature_c, h)
        for kind in ("sm", "memory", "graphics"):
            v[f"clock_{kind}_mhz"] = self._call(g, f"clock_{kind}", n.clock_mhz, h, kind)
        v["clocks_event_reasons"] = self._call(g, "clocks_event_reasons", n.clocks_event_reasons, h)
        v["fan_percent"] = self._call(g, "fan", n.fan_percent, h)
        v["pstate"] = self._call(g, "pstate", n.pstate, h)
        pcie = self._call(g, "pcie_throughput", n.pcie_throughput_kbps, h)
        if pcie is not None:
            v["pcie_tx_kbps"], v["pcie_rx_kbps"] = pcie
        link = self._call(g, "pcie_link", n.pcie_link, h)
        if link:
            v["pcie_gen"], v["pcie_width"] = link
        v["persistence_mode"] = self._call(g, "persistence_mode", n.persistence_mode, h)
        v["compute_mode"] = self._call(g, "compute_mode", n.compute_mode, h)
        mig = self._call(g, "mig_mode", n.mig_mode, h)
        v["mig_mode"] = mig
        if mig is not None and g.mig_mode is not None and mig != g.mig_mode:
            log.info("GPU %d: MIG mode %s: readings it refused are asked again", g.static.index,
                     "enabled" if mig else "disabled")
            g.reprobe()
        g.mig_mode = mig if mig is not None else g.mig_mode
        for lk in g.links:
            active = self._call(g, f"nvlink_state_{lk}", n.nvlink_active, h, lk)
            if active is not None:
                r.links.setdefault(lk, {})["active"] = active
        # 3. who runs there, and MIG instances
        if self.want_processes:
            self._read_processes(g, r, mig)
        # GPM over the window since the last cycle (Hopper+): the GPU's, or each MIG GPU instance's
        if not mig:
            v["gpm"] = self._gpm(g, n.gpm_metrics, h, g.gpm, "gpu")
        if mig:
            devices = self._call(g, "mig_devices", n.mig_devices, h) or []
            per_instance: dict[int, dict | None] = {}  # GPM is per GPU instance: one sample per cycle
            for d in devices:
                d = dict(d)
                gi = d["gpu_instance_id"]
                if gi not in per_instance:
                    per_instance[gi] = self._gpm(g, n.gpm_metrics, h, g.gpm, ("mig", gi), gi)
                d["gpm"] = per_instance[gi]
                d.pop("handle", None)
                r.mig.append(d)

    def _gpm(self, g: GpuState, fn, *args) -> dict | None:
        """One GPM window; a GPU without GPM (before Hopper, or this driver) said once, not an error."""
        out = self._call(g, "gpm", fn, *args)
        if "gpm" in g.unsupported and "gpm" not in g.told:
            g.told.add("gpm")
            log.info("GPU %d: no GPM (profiling metrics need Hopper or later and a driver that serves them): "
                     "SM, tensor and DRAM activity are not reported", g.static.index)
        return out

    @staticmethod
    def _power_scope(v: dict) -> None:
        """Power and energy of one scope, said in power_scope: the GPU's where NVML has its energy counter (or,
        lacking any energy, its power), else the module's (Grace Hopper / Grace Blackwell). Never a mix: a
        module figure includes the Grace CPU and must not be added to a host CPU figure."""
        module = {k: v.pop(m, None) for k, m in MODULE_SCOPE.items()}
        gpu_has = v.get("energy_mj") is not None or (
            module["energy_mj"] is None and (v.get("power_instant_mw") is not None
                                             or v.get("power_average_mw") is not None))
        if gpu_has or not any(x is not None for x in module.values()):
            v["power_scope"] = "gpu"
            return
        for k, x in module.items():
            v.pop(k, None)
            if x is not None:
                v[k] = x
        v["power_scope"] = "gpu_module"

    @staticmethod
    def _smoothing(g: GpuState, v: dict, asked: int | None) -> None:
        """The active profile's parameters are asked with the profile seen the cycle before: where the profile
        changed in between they describe the old one and are dropped (the next cycle asks the new one)."""
        active = v.get("smoothing_profile")
        g.smoothing_profile = None if active is None else int(active)
        if g.smoothing_profile != asked:
            for name in SMOOTHING_PARAMS.values():
                v.pop(name, None)

    @staticmethod
    def _pcie_counters(g: GpuState, v: dict) -> None:
        """NVML's PCIe byte counters (fields 197/198) "can be wrapped" and their width is not documented: at
        32 bits they wrap every 68 ms at Gen5 x16 (63 GB/s), so no interval can unwrap them. A counter is passed
        on only once it has shown 64 bits (a value past 2^32); one seen going down below 2^32 is 32 bits wide
        and is never passed on. The throughput gauges (nvmlDeviceGetPcieThroughput) are read either way."""
        for key in ("pcie_tx_bytes", "pcie_rx_bytes"):
            val = v.pop(key, None)
            if val is None:
                continue
            val = int(val)
            prev = g.pcie_last.get(key)
            g.pcie_last[key] = val
            if val >= 2**32:
                g.pcie_width[key] = 64
            elif prev is not None and val < prev and key not in g.pcie_width:
                g.pcie_width[key] = 32
                log.warning("GPU %d: %s wraps below 2^32 (%d after %d): a 32-bit counter aliases at PCIe rates; "
                            "only the throughput gauge is reported", g.static.index, key, val, prev)
            if g.pcie_width.get(key) == 64:
                v[key] = val

    @staticmethod
    def _impossible(g: GpuState, key: str, fid: int) -> None:
        """A field answered OK with a value it cannot have under any type NVML may have meant: dropped."""
        if f"impossible:{key}" not in g.told:
            g.told.add(f"impossible:{key}")
            log.warning("GPU %d: field %d (%s) answered a value it cannot have; dropped", g.static.index, fid, key)

    def _probe_links(self, g: GpuState) -> list[int]:
        links = []
        for lk in range(self.nvml.nvlink_count()):
            try:
                self.nvml.nvlink_active(g.handle, lk)
                links.append(lk)
            except (NvmlNotSupported, NvmlNoPermission, NvmlNotFound):
                if lk == 0:
                    break  # no NVLink on this GPU
                continue
            except (NvmlGpuLost, NvmlNeedsReinit):
                raise
            except NvmlError:
                break  # invalid argument: past the last link
        return links

    def _read_processes(self, g: GpuState, r: GpuReading, mig: bool | None) -> None:
        procs = self._call(g, "processes", self.nvml.processes, g.handle)
        if not procs:
            return
        by_pid = {pid: Proc(pid, mem, gpu_instance=gi) for pid, mem, gi in procs}
        if not mig:  # process utilization is not supported on MIG-enabled GPUs
            samples = self._call(g, "process_utilization", self.nvml.process_utilization, g.handle, g.proc_ts_us)
            latest: dict[int, int] = {}
            for pid, ts, sm, memu in samples or ():  # the driver's buffer holds several samples per pid
                g.proc_ts_us = max(g.proc_ts_us, ts)
                if pid in by_pid and ts >= latest.get(pid, -1):
                    latest[pid] = ts
                    by_pid[pid].sm_percent, by_pid[pid].mem_percent = sm, memu
        ranked = sorted(by_pid.values(), key=lambda p: (p.memory_bytes or 0), reverse=True)[: self.max_processes]
        for p in ranked:
            describe_process(self.proc_root, p)
        r.processes = ranked
