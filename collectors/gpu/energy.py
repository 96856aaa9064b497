"""Keeps each GPU's energy counter monotonic across driver resets (and agent restarts).

NVML's total-energy counter (mJ) restarts at 0 when the driver reloads. We emit
``raw + offset`` and, when the raw value goes down, add the last raw value seen to the
offset: the delta across the reset is then exactly the energy since the reload, never
negative. The (last raw, offset) pair per GPU UUID is saved in the state directory so that
a reset that happens while the agent is down is caught too (energy spent between the last
save and the reset is lost: at most ``save_every`` seconds of it).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


class EnergyTracker:
    def __init__(self, path: Path | None, save_every: float = 60.0) -> None:
        self.path = path
        self.save_every = save_every
        self.state: dict[str, dict[str, int]] = {}
        self._saved = 0.0
        if path is not None:
            try:
                self.state = json.loads(path.read_text())
            except (OSError, ValueError):
                self.state = {}

    def update(self, uuid: str, raw_mj: int) -> tuple[float, bool]:
        """(monotonic joules, True if a reset was detected now)."""
        st = self.state.get(uuid)
        reset = False
        if st is None:
            st = self.state[uuid] = {"last": raw_mj, "offset": 0, "resets": 0}
        elif raw_mj < st["last"]:
            st["offset"] += st["last"]
            st["resets"] += 1
            reset = True
        st["last"] = raw_mj
        if reset or time.monotonic() - self._saved > self.save_every:
            self.save()
        return (raw_mj + st["offset"]) / 1000.0, reset

    def resets(self, uuid: str) -> int:
        return self.state.get(uuid, {}).get("resets", 0)

    def save(self) -> None:
        self._saved = time.monotonic()
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.state))
            os.replace(tmp, self.path)
        except OSError:
            pass
