"""GPU collector: NVML through one thin adapter (collectors/gpu/nvml.py).

No pynvml, no libnvidia-ml or no GPU is "not present", not a failure.
"""

from __future__ import annotations

import logging
import time

from pydantic import Field

from agent.collector import Collector, NotPresent, RestartRequired
from agent.config import CollectorOptions, PositiveDuration
from agent.model import Accumulator
from collectors.common import boot_id

from .energy import EnergyTracker
from .errors import NvmlError, NvmlNeedsReinit, NvmlNoPermission, NvmlNotPresent
from .mapping import XidCounter, map_gpu, map_node_power
from .metrics import METRICS
from .reader import GpuReader
from .sampler import PowerSampler, Target

log = logging.getLogger(__name__)


class GpuOptions(CollectorOptions):
    processes: bool = Field(True, description="per-process GPU memory and SM utilization")
    max_processes: int = Field(16, ge=0, description="top-N processes per GPU by memory (bounds cardinality)")
    xid_events: bool = Field(True, description="watch XID events in a thread")
    lost_retry: PositiveDuration = Field(60.0, description="how often a lost GPU is tried again")
    power_sampling: bool = Field(False, description="sample each GPU's instant power in a thread between "
                                 "collections and report its min, max, mean, p99, swing and largest step "
                                 "per interval, per GPU and summed per node")
    power_sample_hz: float = Field(10.0, ge=1.0, le=50.0, description="power_sampling's rate (samples per "
                                   "second and GPU; one NVML field-value call per GPU per sample)")


class GpuCollector(Collector):
    kind = "gpu"
    Options = GpuOptions
    cli = "collectors.gpu.cli:add_parser"  # `aifactory gpus`
    METRICS = METRICS
    INIT_MISMATCH_RESTART = 3  # nvmlInit mismatches in a row, after NVML worked in this process

    def __init__(self, options: GpuOptions, ctx, nvml=None) -> None:
        super().__init__(options, ctx)
        if nvml is None:
            from .nvml import Nvml

            nvml = Nvml()
        self.reader = GpuReader(nvml, ctx.proc_root, options.processes, options.max_processes,
                                options.xid_events, options.lost_retry)
        self.energy = EnergyTracker(ctx.state_dir / "gpu-energy.json" if ctx.state_dir else None,
                                    boot_id=boot_id(ctx.proc_root))
        self.xids = XidCounter()
        self._absent: tuple[float, str] | None = None  # (when, why) NVML was last found missing
        self._init_mismatch = 0  # nvmlInit failures in a row with a library/driver mismatch
        self._nvml_worked = False
        self.sampler: PowerSampler | None = None

    def collect(self, acc: Accumulator) -> None:
        if not self.reader.initialized:
            # A node without GPUs stays without them: look again only every lost_retry.
            if self._absent and time.monotonic() - self._absent[0] < self.options.lost_retry:
                raise NotPresent(self._absent[1])
            try:
                self.reader.start()
                if not self.reader.gpus:
                    self.reader.stop()
                    raise NvmlNotPresent("NVML found no GPU")
            except NvmlNotPresent as e:
                self._absent = (time.monotonic(), str(e))
                raise NotPresent(str(e)) from None
            except NvmlNoPermission as e:
                # GPUs are there but this user may not open them: a failure the operator must see
                raise NvmlError(f"nvmlInit: {e}: the agent's user cannot open /dev/nvidia* (add it to the "
                                "device files' group, e.g. video, and keep the unit's DeviceAllow= lines)") from None
            except NvmlNeedsReinit as e:
                # After a driver upgrade (module reloaded) the NVML library loaded into this process no longer
                # matches the driver and nvmlInit fails for good: only a new process loads the new library.
                # A process in which NVML never worked (library upgraded, old module until a reboot) would
                # fail the same way after a restart: it is not restarted.
                self._init_mismatch += 1
                if self._nvml_worked and self._init_mismatch >= self.INIT_MISMATCH_RESTART:
                    raise RestartRequired(f"nvmlInit fails {self._init_mismatch} times in a row ({e}): the "
                                          "driver was replaced under the agent") from None
                raise
            self._absent = None
            self._init_mismatch = 0
            self._nvml_worked = True
        try:
            readings = self.reader.read()
        except NvmlNeedsReinit as e:
            log.warning("NVML needs re-initialisation (driver reloaded?): %s", e)
            self._stop_sampler()
            self.reader.stop()
            raise
        shapes = self._sampled(readings, acc)
        for r in readings:
            map_gpu(r, acc, self.energy, self.xids, self.reader.driver_version, self.reader.cuda_version,
                    shapes.get(r.static.uuid))
        self.energy.save()  # before the samples leave: an emitted value is never ahead of the saved state

    def _sampled(self, readings, acc: Accumulator) -> dict:
        """The sampler's summary of the interval that ends now, and its targets for the next one: the GPUs that
        answer, each in the power scope its rows report."""
        if not self.options.power_sampling:
            return {}
        if self.sampler is None:
            self.sampler = PowerSampler(self.reader.nvml, self.options.power_sample_hz)
            self.sampler.start()
        drained = self.sampler.drain()
        map_node_power(drained, acc)
        handles = {g.static.uuid: g.handle for g in self.reader.gpus if not g.lost and g.handle is not None}
        self.sampler.set_targets([
            Target(r.static.uuid, handles[r.static.uuid], r.values.get("power_scope", "gpu"))
            for r in readings if not r.lost and r.static.uuid in handles])
        return drained.gpus

    def _stop_sampler(self) -> None:
        if self.sampler is not None:
            self.sampler.close()
            self.sampler = None

    def close(self) -> None:
        self._stop_sampler()
        self.energy.save()
        self.reader.stop()

