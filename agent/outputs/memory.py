"""A bounded memory buffer with the disk buffer's interface, for outputs that are themselves a store on this
node (the local SQLite store): nothing to survive a crash of the agent, everything to bound.

Full, it drops the oldest samples, counted exactly, even those of the batch being written (that batch is still
written: a stuck output holds at most `capacity` samples plus the one batch in its hands).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from pathlib import Path

log = logging.getLogger(__name__)


class MemoryBuffer:
    durable = False  # lost with the process: waited for at shutdown, not left for the next start

    def __init__(self, capacity: int, name: str = "memory") -> None:
        self.capacity = capacity
        self.path = Path(f"<memory:{name}>")
        self.name = name
        self._q: deque = deque()
        self._out = 0  # records at the head handed out by peek, not yet removed or released
        self._lock = threading.Lock()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._q)

    def append(self, records: list) -> None:
        if not records:
            return
        with self._lock:
            self._q.extend(records)
            over = len(self._q) - self.capacity
            if over > 0:
                for _ in range(over):
                    self._q.popleft()
                self._out = max(0, self._out - over)
                if self.dropped == 0:
                    log.warning("output %s: queue full (%d samples); dropping the oldest", self.name, self.capacity)
                self.dropped += over

    def peek(self, max_records: int) -> tuple[list[int], list]:
        """The oldest records not already handed out (a sender may take the next batch while one is written)."""
        with self._lock:
            batch = [self._q[i] for i in range(self._out, min(self._out + max_records, len(self._q)))]
            self._out += len(batch)
        return [id(r) for r in batch], batch

    def peek_packed(self, max_records: int) -> tuple[list[int], list, None]:
        """As peek: nothing is packed in memory."""
        ids, batch = self.peek(max_records)
        return ids, batch, None

    def remove(self, ids: list[int]) -> int:
        """Forget the written batch; what was evicted while it was being written is gone already."""
        wanted = set(ids)
        n = 0
        with self._lock:
            while self._q and id(self._q[0]) in wanted:
                self._q.popleft()
                n += 1
            self._out = max(0, self._out - n)
        return n

    def release(self, ids: list[int] | None = None) -> None:
        """Not written: what was handed out stays first in line (one sender holds it all, and gives it all
        back)."""
        with self._lock:
            self._out = 0

    def stats(self) -> dict:
        return {"queue_depth_samples": len(self._q), "queue_capacity_samples": self.capacity,
                "queue_dropped_samples_total": self.dropped}

    def close(self) -> None:
        pass
