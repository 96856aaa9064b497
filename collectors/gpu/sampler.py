"""Fast power sampling: instant power of every GPU at a fixed rate, summarised per collection interval.

A thread reads NVML_FI_DEV_POWER_INSTANT with one field-value call per GPU per tick (the call takes one
device) and keeps the interval's samples; the collector drains a summary each cycle: min, max, mean, p99 (nearest
rank), the swing (max - min) and the largest step between consecutive samples. The node's sum over its GPUs
at the same instants is summarised the same way, so a rack's synchronous swing can be built from node rows.

Ticks fall on multiples of the period in wall-clock time, so nodes whose clocks NTP keeps within a few ms sample
the same instants. A tick that comes late is skipped, never caught up in a burst (counted in ``late``). This
adds shape, not energy: energy still comes from the driver's counter.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .errors import NvmlError, NvmlNoPermission, NvmlNotSupported
from .reader import SCOPE_GPU, SCOPE_MODULE

log = logging.getLogger(__name__)

POWER_INSTANT = 186  # NVML_FI_DEV_POWER_INSTANT, mW; its scopeId is nvmlPowerScopeType_t
SCOPE_IDS = {"gpu": SCOPE_GPU, "gpu_module": SCOPE_MODULE}  # the gpu rows' scope tag -> the scope NVML is asked
_OK = 0


@dataclass(frozen=True)
class Target:
    uuid: str
    handle: Any
    scope: str  # the same as the gpu rows' scope tag: gpu, or gpu_module (Grace superchips)


@dataclass
class Shape:
    """One interval's summary of a series of instant power samples (W)."""

    samples: int
    min: float
    max: float
    mean: float
    p99: float
    swing: float
    step_max: float

    def fields(self) -> dict[str, float | int]:
        return {"power_min_watts": self.min, "power_max_watts": self.max, "power_mean_watts": self.mean,
                "power_p99_watts": self.p99, "power_swing_watts": self.swing,
                "power_step_max_watts": self.step_max, "power_samples": self.samples}


def summarise(values: list[float], before: float | None = None) -> Shape | None:
    """The shape of one interval's samples; ``before`` is the last sample of the interval before (the first
    step is taken from it). None without samples."""
    if not values:
        return None
    ordered = sorted(values)
    steps = [abs(b - a) for a, b in zip(values, values[1:])]
    if before is not None:
        steps.append(abs(values[0] - before))
    lo, hi = ordered[0], ordered[-1]
    return Shape(samples=len(values), min=round(lo, 3), max=round(hi, 3),
                 mean=round(math.fsum(values) / len(values), 3),
                 p99=round(ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)], 3), swing=round(hi - lo, 3),
                 step_max=round(max(steps, default=0.0), 3))


@dataclass
class Drained:
    gpus: dict[str, Shape] = field(default_factory=dict)  # uuid -> shape
    node: dict[str, tuple[Shape, int]] = field(default_factory=dict)  # scope -> (shape of the sum, GPUs summed)
    late: int = 0  # ticks skipped because the previous one ran past them
    errors: int = 0  # reads that failed (a lost GPU, an NVML error) and left a GPU's sample out


class PowerSampler:
    """The sampler thread. ``set_targets`` tells it which GPUs to read (the reader's view after each cycle);
    ``drain`` takes the interval's summary. Errors are per GPU: a lost GPU is skipped until the targets change,
    a GPU without the instant-power field (before Ampere) is said once and left out."""

    def __init__(self, nvml, hz: float, keep_seconds: float = 3600.0) -> None:
        self.nvml = nvml
        self.period = 1.0 / hz
        self.keep = max(1, int(hz * keep_seconds))  # a collector that stops draining does not grow memory
        self.lock = threading.Lock()
        self.targets: list[Target] = []
        self.samples: dict[str, deque] = {}
        self.node: dict[str, deque] = {}  # scope -> sums at instants where all of that scope's GPUs answered
        self.node_gpus: dict[str, int] = {}
        self.before: dict[str, float] = {}  # last sample of the previous interval, per uuid and per node scope
        self.refused: set[str] = set()
        self.late = 0
        self.errors = 0
        self.ticks = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="gpu-power-sampler", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(2)

    def set_targets(self, targets: list[Target]) -> None:
        with self.lock:
            if targets != self.targets:
                self.targets = list(targets)

    def _run(self) -> None:
        next_t = (math.floor(time.time() / self.period) + 1) * self.period
        while not self.stop.is_set():
            delay = next_t - time.time()
            if delay > 0 and self.stop.wait(delay):
                return
            self._tick()
            next_t += self.period
            now = time.time()
            if now >= next_t:  # this tick ran past the next: skip to the next instant still ahead
                missed = math.floor((now - next_t) / self.period) + 1
                self.late += missed
                next_t += missed * self.period

    def _tick(self) -> None:
        with self.lock:
            targets = [t for t in self.targets if t.uuid not in self.refused]
        got: dict[str, float] = {}
        for t in targets:
            w = self._read(t)
            if w is not None:
                got[t.uuid] = w
        with self.lock:
            self.ticks += 1
            for uuid, w in got.items():
                self.samples.setdefault(uuid, deque(maxlen=self.keep)).append(w)
            by_scope: dict[str, list[Target]] = {}
            for t in targets:
                by_scope.setdefault(t.scope, []).append(t)
            for scope, ts in by_scope.items():
                # a sum over part of the node would look like a swing: only instants where all answered
                if all(t.uuid in got for t in ts):
                    self.node.setdefault(scope, deque(maxlen=self.keep)).append(math.fsum(got[t.uuid] for t in ts))
                    self.node_gpus[scope] = len(ts)

    def _read(self, t: Target) -> float | None:
        try:
            res = self.nvml.field_values(t.handle, [(POWER_INSTANT, SCOPE_IDS[t.scope])])
        except (NvmlNotSupported, NvmlNoPermission) as e:
            self._refuse(t, str(e))
            return None
        except NvmlError:  # GPU_IS_LOST among them: the reader says so and takes the GPU out of the targets
            self.errors += 1
            return None
        for fid, _scope, ret, val in res:
            if fid != POWER_INSTANT:
                continue
            if ret == _OK and val is not None:
                return val / 1000.0
            if ret in (3, 4):  # NOT_SUPPORTED, NO_PERMISSION
                self._refuse(t, f"return code {ret}")
            else:
                self.errors += 1
        return None

    def _refuse(self, t: Target, why: str) -> None:
        if t.uuid not in self.refused:
            self.refused.add(t.uuid)
            log.info("GPU %s: no instant power field (%s): not sampled", t.uuid, why)

    def drain(self) -> Drained:
        with self.lock:
            samples, self.samples = self.samples, {}
            node, self.node = self.node, {}
            late, self.late = self.late, 0
            errors, self.errors = self.errors, 0
            gpus_in = dict(self.node_gpus)
        out = Drained(late=late, errors=errors)
        for uuid, values in samples.items():
            shape = summarise(list(values), self.before.get(uuid))
            if shape is not None:
                out.gpus[uuid] = shape
                self.before[uuid] = values[-1]
        for scope, values in node.items():
            # a sum over another set of GPUs (one lost or back) is no step from the last one
            key = f"node:{scope}:{gpus_in.get(scope, 0)}"
            shape = summarise(list(values), self.before.get(key))
            if shape is not None:
                out.node[scope] = (shape, gpus_in.get(scope, 0))
                self.before[key] = values[-1]
        return out
