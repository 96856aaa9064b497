"""Fan-out from collection runs to every output, through one contract (agent/outputs/running.py).

``publish`` hands a collection to every output's ``append`` in one spool thread and returns an awaitable that
completes once each has taken it (on disk for a disk-buffered output, in its bounded memory buffer for the
local store), so a collection counts as done only when its samples are safe; it never blocks the loop. Each
output then writes from its own sender thread, so a slow or dead output never stalls collection or another
output.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from .logonce import Latch
from .model import Sample

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(self, outputs: list) -> None:
        self.outputs = list(outputs)
        self._spool = ThreadPoolExecutor(1, thread_name_prefix="spool") if self.outputs else None
        self.published = 0
        self.spool_errors = 0
        self._spool_failing = Latch(log)

    def start(self) -> None:
        for o in self.outputs:
            o.start()

    def _persist(self, samples: list[Sample]) -> None:
        # Outputs keep what their buffer refuses (RunningOutput.append); this catches the unexpected, logged
        # once per cause, and the other outputs go on.
        for o in self.outputs:
            try:
                o.append(samples)
            except Exception as e:
                self.spool_errors += 1
                self._spool_failing.failed(f"{o.name}: {e}", "output %s: cannot buffer samples: %s: %s", o.name,
                                           type(e).__name__, e)

    def _hand(self, samples: list[Sample]):
        self.published += len(samples)
        return self._spool.submit(self._persist, samples) if self._spool is not None and samples else None

    async def put(self, samples: list[Sample]) -> None:
        """Hand a collection to every output; returns once each has taken it. The loop is never blocked."""
        fut = self._hand(samples)
        if fut is not None:
            await asyncio.wrap_future(fut)

    def publish(self, samples: list[Sample]) -> None:
        """The same for a caller outside the event loop: blocks until every output has taken the samples."""
        fut = self._hand(samples)
        if fut is not None:
            fut.result()

    @property
    def failing(self) -> str | None:
        """Why a hand-off to an output raises now (samples of that output are lost), else None."""
        return self._spool_failing.error

    def totals(self) -> dict:
        return {"published_samples_total": self.published, "pipeline_spool_errors_total": self.spool_errors}

    def stats(self) -> dict[str, dict]:
        return {o.name: o.stats() for o in self.outputs}

    def flush(self, timeout: float) -> bool:
        return all([o.flush(timeout) for o in self.outputs])

    def stop(self, timeout: float) -> bool:
        if self._spool is not None:
            self._spool.shutdown(wait=True)
        return all([o.stop(timeout) for o in self.outputs])
