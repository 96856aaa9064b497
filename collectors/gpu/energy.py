"""Each GPU's energy counter, monotonic across driver resets (see collectors/common/counters.py).

NVML's total-energy counter (mJ) restarts at 0 when the driver reloads; keyed by GPU UUID,
saved in STATE_DIR/gpu-energy.json.
"""

from __future__ import annotations

from collectors.common.counters import MonotonicCounters


class EnergyTracker(MonotonicCounters):
    def update(self, uuid: str, raw_mj: int) -> tuple[float, bool]:  # type: ignore[override]
        """(monotonic joules, True if a reset was detected now)."""
        value, event = super().update(uuid, raw_mj)
        return value / 1000.0, event is not None
