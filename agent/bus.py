"""The latest sample of every series, shared between collectors of one agent.

Some metrics combine what other collectors measured (tokens per joule needs GPU energy and token
counters over the same window). Collectors stay independent: the runner publishes every
collection here as well as to the outputs, and a collector that derives metrics reads the latest
values it needs. Only the latest sample per series is kept (bounded by the node's series count).
"""

from __future__ import annotations

import threading

from .model import Sample


class SampleBus:
    def __init__(self, max_series: int = 100_000) -> None:
        self._latest: dict[str, dict[tuple, Sample]] = {}
        self._lock = threading.Lock()
        self.max_series = max_series
        self._count = 0

    def observe(self, samples: list[Sample]) -> None:
        with self._lock:
            for s in samples:
                by = self._latest.setdefault(s.measurement, {})
                key = tuple(sorted(s.tags.items()))
                old = by.get(key)
                if old is None:
                    if self._count >= self.max_series:
                        continue
                    self._count += 1
                    by[key] = s
                elif s.ts >= old.ts:
                    # fields of one series may come in several samples of the same run: merge them
                    by[key] = s if s.ts > old.ts else Sample(s.measurement, s.tags, {**old.fields, **s.fields}, s.ts)

    def latest(self, measurement: str) -> list[Sample]:
        with self._lock:
            return list(self._latest.get(measurement, {}).values())
