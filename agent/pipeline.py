"""Fan-out from collection runs to every output, each through its own bounded queue.

Each output has a bounded queue (in samples) drained by its own daemon thread, so a
slow or dead output never stalls collection or another output. When a queue is full
the oldest samples are dropped and counted exactly. Publishing never blocks the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from .backoff import backoff
from .logonce import Latch
from .model import Sample

log = logging.getLogger(__name__)


class Output(Protocol):
    name: str

    def write(self, samples: list[Sample]) -> None:
        """Write or raise; called from the output's own thread only."""

    def housekeeping(self) -> None: ...

    def stats(self) -> dict: ...

    def close(self) -> None: ...


class OutputQueue:
    def __init__(self, output: Output, capacity: int, batch_size: int = 5000,
                 retry_base: float = 0.5, retry_max: float = 30.0,
                 housekeeping_every: float = 60.0) -> None:
        self.output = output
        self.name = output.name
        self.capacity = capacity
        self.batch_size = batch_size
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.housekeeping_every = housekeeping_every
        self._q: deque[Sample] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._busy = False
        self.dropped = 0
        self.written = 0
        self.write_errors = 0
        self.last_error: str | None = None
        self.last_write_ns: int | None = None
        self._thread = threading.Thread(target=self._loop, name=f"output-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, samples: list[Sample]) -> None:
        if not samples:
            return
        with self._cond:
            self._q.extend(samples)
            over = len(self._q) - self.capacity
            if over > 0:
                for _ in range(over):
                    self._q.popleft()
                if self.dropped == 0:
                    log.warning("output %s: queue full (%d samples); dropping the oldest", self.name, self.capacity)
                self.dropped += over
            self._cond.notify()

    @property
    def depth(self) -> int:
        return len(self._q)

    def _take(self) -> list[Sample]:
        n = min(self.batch_size, len(self._q))
        return [self._q[i] for i in range(n)]

    def _loop(self) -> None:
        try:
            self._drain()
        finally:
            # The output's handles belong to this thread (SQLite insists): close them here.
            try:
                self.output.close()
            except Exception as e:
                log.warning("output %s: close failed: %s", self.name, e)

    def _drain(self) -> None:
        failures = 0
        next_hk = time.monotonic() + self.housekeeping_every
        while True:
            with self._cond:
                while not self._q and not self._stopping:
                    self._cond.wait(timeout=max(0.1, next_hk - time.monotonic()))
                    if time.monotonic() >= next_hk:
                        break
                if self._stopping and not self._q:
                    return
                batch = self._take()
                self._busy = bool(batch)
            if time.monotonic() >= next_hk:
                next_hk = time.monotonic() + self.housekeeping_every
                try:
                    self.output.housekeeping()
                except Exception as e:
                    log.warning("output %s: housekeeping failed: %s", self.name, e)
            if not batch:
                continue
            try:
                self.output.write(batch)
            except Exception as e:
                failures += 1
                self.write_errors += 1
                msg = f"{type(e).__name__}: {e}"
                if msg != self.last_error:
                    log.error("output %s: write failed, %d samples kept: %s", self.name, len(batch), msg)
                self.last_error = msg
                with self._cond:
                    self._busy = False
                    if self._stopping:
                        return
                    self._cond.wait(timeout=backoff(failures, self.retry_base, self.retry_max))
                continue
            if self.last_error is not None:
                log.info("output %s: writing again", self.name)
                self.last_error = None
            failures = 0
            with self._cond:
                # Drop what was written; evictions while writing may have removed some already.
                ids = {id(s) for s in batch}
                while self._q and id(self._q[0]) in ids:
                    self._q.popleft()
                self._busy = False
                self.written += len(batch)
                self.last_write_ns = time.time_ns()
                self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued is written (or the deadline). True when empty."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify()
            while (self._q or self._busy) and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(timeout=min(left, 0.1))
            return not self._q

    def stop(self, timeout: float) -> bool:
        done = self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=max(0.1, timeout))
        if not done:
            log.error("output %s: %d samples not written at shutdown", self.name, len(self._q))
        return done

    def stats(self) -> dict:
        d = {
            "queue_depth_samples": self.depth,
            "queue_capacity_samples": self.capacity,
            "queue_dropped_samples_total": self.dropped,
            "written_samples_total": self.written,
            "write_errors_total": self.write_errors,
            "last_error": self.last_error,
            "last_write_ns": self.last_write_ns,
        }
        try:
            d.update(self.output.stats())
        except Exception:
            pass
        return d


class Pipeline:
    """Fans samples out to memory-queued outputs (the local store) and disk-buffered ones (InfluxDB).

    Appends to disk buffers run in one spool thread; ``publish`` returns an awaitable that
    completes once they are committed, so a collection counts as done only when its samples
    are safe on disk.
    """

    def __init__(self, outputs: list, capacity: int) -> None:
        self.queues = [OutputQueue(o, capacity) for o in outputs if not getattr(o, "buffered", False)]
        self.buffered = [o for o in outputs if getattr(o, "buffered", False)]
        self._spool = ThreadPoolExecutor(1, thread_name_prefix="spool") if self.buffered else None
        self.published = 0
        self.spool_errors = 0
        self._spool_failing = Latch(log)

    def start(self) -> None:
        for q in self.queues:
            q.start()
        for o in self.buffered:
            o.start()

    def _persist(self, samples: list[Sample]) -> None:
        # Outputs keep what their buffer refuses (see InfluxOutput.append); this catches the unexpected,
        # logged once per cause, and other outputs go on.
        for o in self.buffered:
            try:
                o.append(samples)
            except Exception as e:
                self.spool_errors += 1
                self._spool_failing.failed(f"{o.name}: {e}", "output %s: cannot buffer samples: %s: %s", o.name,
                                   type(e).__name__, e)

    def publish(self, samples: list[Sample]):
        self.published += len(samples)
        for q in self.queues:
            q.put(samples)
        if self._spool is None or not samples:
            return None
        fut = self._spool.submit(self._persist, samples)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return fut.result()
        return asyncio.wrap_future(fut)

    @property
    def failing(self) -> str | None:
        """Why a hand-off to a disk-buffered output raises now (samples of that output are lost), else None."""
        return self._spool_failing.error

    def totals(self) -> dict:
        return {"published_samples_total": self.published, "pipeline_spool_errors_total": self.spool_errors}

    def stats(self) -> dict[str, dict]:
        out = {q.name: q.stats() for q in self.queues}
        for o in self.buffered:
            out[o.name] = o.stats()
        return out

    def flush(self, timeout: float) -> bool:
        return all([q.flush(timeout) for q in self.queues] + [o.flush(timeout) for o in self.buffered])

    def stop(self, timeout: float) -> bool:
        if self._spool is not None:
            self._spool.shutdown(wait=True)
        return all([q.stop(timeout) for q in self.queues] + [o.stop(timeout) for o in self.buffered])
