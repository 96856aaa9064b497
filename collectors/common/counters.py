"""Cumulative counters kept monotonic across device resets and wraps, and across agent restarts.

Devices reset their counters (a GPU driver reload, a PDU's resettable kWh, a reboot) and some
wrap (Vertiv/Geist energy caps at 9,999,000 Wh). Downstream rates use deltas, so the agent
emits ``raw + offset``: on a decrease, a counter known to wrap near its cap adds the cap
(the delta is the energy across the wrap), anything else is a reset and adds the last raw
value (the delta is the value since the reset). Never a negative delta. The state is saved
per key in the state directory so a reset that happened while the agent was down is caught.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


class MonotonicCounters:
    def __init__(self, path: Path | None, save_every: float = 60.0) -> None:
        self.path = path
        self.save_every = save_every
        self.state: dict[str, dict[str, float]] = {}
        self._saved = 0.0
        if path is not None:
            try:
                self.state = json.loads(path.read_text())
            except (OSError, ValueError):
                self.state = {}

    def update(self, key: str, raw: float, wrap_at: float | None = None) -> tuple[float, str | None]:
        """(monotonic value, None | "reset" | "wrap")."""
        st = self.state.get(key)
        event = None
        if st is None:
            st = self.state[key] = {"last": raw, "offset": 0, "resets": 0}
        elif raw < st["last"]:
            if wrap_at and st["last"] > 0.9 * wrap_at and raw < 0.1 * wrap_at:
                st["offset"] += wrap_at
                event = "wrap"
            else:
                st["offset"] += st["last"]
                event = "reset"
            st["resets"] += 1
        st["last"] = raw
        if event or time.monotonic() - self._saved > self.save_every:
            self.save()
        return raw + st["offset"], event

    def resets(self, key: str) -> int:
        return int(self.state.get(key, {}).get("resets", 0))

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
