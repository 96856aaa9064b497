"""The latest sample of every series, shared between collectors of one agent.

Some metrics combine what other collectors measured (tokens per joule needs GPU energy and token
counters over the same window). Collectors stay independent: the runner publishes every
collection here as well as to the outputs, and a collector that derives metrics reads the latest
values it needs (`latest(measurement, max_age)`).

Bounded two ways, both counted and reported (the `agent` measurement, component pipeline, and `status`):
a series its collector has not refreshed for `expire_intervals` of that collector's interval is dropped
(a pulled GPU, a model unloaded, a device removed: the ledger's freshness rule), and past `max_series`
a new series is refused (said once) rather than growing without end.
"""

from __future__ import annotations

import logging
import threading

from .model import Sample

log = logging.getLogger(__name__)


class SampleBus:
    def __init__(self, max_series: int = 100_000, expire_intervals: float = 3.0) -> None:
        self._latest: dict[str, dict[tuple, Sample]] = {}
        self._life: dict[str, int] = {}  # measurement -> how long (ns) its series live unrefreshed
        self._lock = threading.Lock()
        self.max_series = max_series
        self.expire_intervals = expire_intervals
        self._count = 0
        self.expired = 0  # series dropped for not being refreshed
        self.refused = 0  # new series refused past max_series
        self._newest = 0  # the newest sample time seen: the bus's clock
        self._swept = 0

    def observe(self, samples: list[Sample], interval: float | None = None) -> None:
        """A collection's samples; `interval` (seconds) is its collector's, for expiry (None: never expire)."""
        life = int(interval * self.expire_intervals * 1e9) if interval else None
        with self._lock:
            measurement = None
            for s in samples:
                if s.measurement != measurement:  # samples come grouped by measurement: one lookup a group
                    measurement = s.measurement
                    by = self._latest.setdefault(measurement, {})
                    if life is not None:
                        self._life[measurement] = life
                key = tuple(sorted(s.tags.items()))
                old = by.get(key)
                if old is None:
                    if self._count >= self.max_series:
                        if self.refused == 0:
                            log.warning("sample bus full (%d series): new series are refused (counted)",
                                        self.max_series)
                        self.refused += 1
                        continue
                    self._count += 1
                    by[key] = s
                elif s.ts >= old.ts:
                    # fields of one series may come in several samples of the same run: merge them
                    by[key] = s if s.ts > old.ts else Sample(s.measurement, s.tags, {**old.fields, **s.fields}, s.ts)
                else:
                    continue
                if s.ts > self._newest:
                    self._newest = s.ts
            if self._life and self._newest - self._swept > 1e9:  # at most a sweep a second of sample time
                self._sweep(self._newest)

    def _sweep(self, now: int) -> None:
        """Series older than their measurement's life: dropped (each series's own newest time, so nothing is
        kept per series beyond the sample itself)."""
        self._swept = now
        for measurement, life in self._life.items():
            by = self._latest.get(measurement, {})
            gone = [k for k, s in by.items() if s.ts + life < now]
            for k in gone:
                del by[k]
            self._count -= len(gone)
            self.expired += len(gone)

    def latest(self, measurement: str, max_age: float | None = None, now: int | None = None) -> list[Sample]:
        """The newest sample of each series of `measurement`; with `max_age` (seconds), only those at most that
        old at `now` (ns; default: the newest sample the bus has seen)."""
        with self._lock:
            found = list(self._latest.get(measurement, {}).values())
            if max_age is None:
                return found
            floor = (self._newest if now is None else now) - int(max_age * 1e9)
            return [s for s in found if s.ts >= floor]

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"bus_series": self._count, "bus_expired_series_total": self.expired,
                    "bus_refused_series_total": self.refused}
