"""Each GPU's energy counter, monotonic across driver resets, reboots and agent restarts.

NVML's total-energy counter (mJ) counts from when the driver loaded and restarts at 0 when it reloads.
Keyed by GPU UUID (and /module for a Grace module's counter), kept by the shared ledger's counter rules
(collectors/common/energy.py) and saved in STATE_DIR/gpu-energy.json after every collection, before its
samples are handed on. A reset that happened while the agent was down is caught even when the new raw value
already exceeds the saved one: the boot id changed (a reboot reloads the driver), or the counter grew by more
energy than this device can draw in the time since the save. That bound is the device's own power limit, not a
constant: a Grace module's counter holds the GPU, its Grace CPU and memory, so its bound is MODULE_FACTOR
times the GPU's limit (GB200: a 2,700 W module for 1,200 W GPUs).
"""

from __future__ import annotations

from collectors.common.energy import EnergyCounters

MODULE_FACTOR = 3.0
FALLBACK_WATTS = 2000.0  # only where NVML gives no power limit at all


def max_watts(limits_mw: list[int | None], module: bool) -> float:
    known = [m / 1000.0 for m in limits_mw if isinstance(m, (int, float)) and m > 0]
    watts = max(known) if known else FALLBACK_WATTS
    return watts * MODULE_FACTOR if module else watts


class EnergyTracker(EnergyCounters):
    def __init__(self, path, boot_id: str | None = None) -> None:
        super().__init__(path, boot_id)
        for st in self.state.values():
            # a state file from before the shared ledger kept NVML's raw millijoules: now joules, like every
            # energy counter; converted once, or the first reading after an upgrade would look like a reset
            if st.get("unit") != "J":
                for k in ("last", "offset", "pending"):
                    if isinstance(st.get(k), (int, float)):
                        st[k] = st[k] / 1000.0
                st["unit"] = "J"

    def update(self, key: str, raw_mj: int, now: float, limit_watts: float) -> tuple[float | None, str | None]:
        """(monotonic joules or None this time, event: reset, glitch, pending, refused or None)."""
        u = self.reading(key, raw_mj / 1000.0, now, max_watts=limit_watts, resets_on_boot=True)
        return u.value, u.event
