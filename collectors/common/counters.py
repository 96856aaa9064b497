"""Cumulative counters kept monotonic across device resets and wraps, and across agent restarts.

Devices reset their counters (a GPU driver reload, a PDU's resettable kWh, a reboot) and some
wrap (Vertiv/Geist energy caps at 9,999,000 Wh). Downstream rates use deltas, so the agent
emits ``raw + offset``: on a decrease, a counter known to wrap near its cap adds the cap
(the delta is the energy across the wrap), anything else is a reset and adds the last raw
value (the delta is the value since the reset). Never a negative delta. The state is saved
per key in the state directory so a reset that happened while the agent was down is caught.

A reading that is not a finite number (a server printing +Inf or NaN) is refused, never stored:
one such reading must not poison the offset for good. A state file that is not valid JSON is
moved aside (agent.state.set_aside); entries that are not finite numbers are dropped on load.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from agent.logonce import Latch
from collectors.common.statefile import read_object, write_object

log = logging.getLogger(__name__)


def _valid(entry) -> bool:
    return (isinstance(entry, dict) and all(
        isinstance(entry.get(k), (int, float)) and not isinstance(entry.get(k), bool) and math.isfinite(entry[k])
        for k in ("last", "offset")) and all(
        math.isfinite(v) for v in entry.values() if isinstance(v, float)))


class MonotonicCounters:
    def __init__(self, path: Path | None, save_every: float = 60.0) -> None:
        self.path = path
        self.save_every = save_every
        self.state: dict[str, dict[str, float]] = {}
        self._saved = 0.0
        self._save = Latch(log)
        if path is not None:
            self.state = self._load(Path(path))

    @staticmethod
    def _load(path: Path) -> dict:
        data = read_object(path, "counter state")
        bad = [k for k, v in data.items() if not _valid(v)]
        for k in bad:
            del data[k]
        if bad:
            log.warning("%s: dropped %d counter entries that were not finite numbers", path, len(bad))
        return data

    def update(self, key: str, raw: float, wrap_at: float | None = None) -> tuple[float | None, str | None]:
        """(monotonic value, None | "reset" | "wrap"); (None, "invalid") for a non-finite reading."""
        if not isinstance(raw, (int, float)) or not math.isfinite(raw):
            return None, "invalid"
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
        error = write_object(self.path, self.state)
        if error is not None:
            self._save.failed(error, "cannot save counter state to %s: %s (kept in memory; a reset while the "
                              "agent is down may then be missed)", self.path, error)
            return
        self._save.recovered("counter state saved to %s again", self.path)
