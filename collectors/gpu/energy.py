"""Each GPU's energy counter, monotonic across driver resets, reboots and agent restarts.

NVML's total-energy counter (mJ) counts from when the driver loaded and restarts at 0 when it
reloads. Keyed by GPU UUID, saved in STATE_DIR/gpu-energy.json after every collection, before its
samples are handed on: an emitted value is never ahead of the saved state, so a crash or power loss
cannot make the counter go down after the restart. A reset that happened while the agent was down is
caught even when the new raw value already exceeds the saved one: the boot id changed (a reboot
reloads the driver), or the counter grew by more energy than the GPU can draw in the time since
the save (max_watts x elapsed).
"""

from __future__ import annotations

import time

from collectors.common.counters import MonotonicCounters

MAX_WATTS = 2000.0  # above any GPU's board power (H200 700 W, B200 1000 W, GB200 module 2700 W/2 GPUs)


class EnergyTracker(MonotonicCounters):
    def __init__(self, path, boot_id: str | None = None, max_watts: float = MAX_WATTS) -> None:
        super().__init__(path, save_every=float("inf"))  # saved by the collector once per collection
        self.boot_id = boot_id
        self.max_watts = max_watts
        # Counters restored from the state file and not read since: the only ones that can have been reset
        # while the agent was down (in between two collections a reset shows as a decrease).
        self._restored = set(self.state)

    def update(self, uuid: str, raw_mj: int) -> tuple[float, bool]:  # type: ignore[override]
        """(monotonic joules, True if a reset was detected now)."""
        st = self.state.get(uuid)
        now = time.time()
        missed = False
        if st is not None and uuid in self._restored and raw_mj >= st["last"]:
            booted = bool(self.boot_id and st.get("boot") and st["boot"] != self.boot_id)
            elapsed = now - st["at"] if isinstance(st.get("at"), (int, float)) else None
            impossible = elapsed is not None and (raw_mj - st["last"]) / 1000 > self.max_watts * max(elapsed, 1.0)
            if booted or impossible:
                # Reset while the agent was down, and already counted past the saved value: all of raw is new.
                st["offset"] += st["last"]
                st["resets"] += 1
                st["last"] = 0
                missed = True
        self._restored.discard(uuid)
        value, event = super().update(uuid, raw_mj)
        st = self.state[uuid]
        st["at"], st["boot"] = now, self.boot_id
        return (None if value is None else value / 1000.0), missed or event is not None
