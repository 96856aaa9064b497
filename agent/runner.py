"""Runs one collector instance: deadline, catch-all, accounting, so that one collector's failure stays its own.

A synchronous ``collect`` runs in a fresh daemon thread, so blocking reads never touch
the event loop and a hung collector can be abandoned: its late samples are refused by
the closed accumulator, its thread cannot block shutdown, and until it returns the
next runs of that instance are skipped and counted, while other instances go on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable

from .collector import Collector, NotPresent, RestartRequired
from .config import InstanceConfig
from .model import Accumulator, Sample

log = logging.getLogger("agent.runner")

# Synchronous runs take turns: runs started on the same tick otherwise contend for the GIL at every read
# syscall, which costs more CPU than their work (bench/collect_overhead: 1.4 ms a cycle contended, 1.0 ms
# in turns; docs/architecture.md). A run waits at most LANE_WAIT for its turn, so one slow or hung
# collector delays the others by that much, never more.
_LANE = threading.Lock()
LANE_WAIT = 0.05


def grid_ts(interval: float, now_ns: int | None = None) -> int:
    """The start of the current interval on the epoch-aligned grid, in ns."""
    now_ns = now_ns if now_ns is not None else time.time_ns()
    step = int(interval * 1e9)
    return now_ns - now_ns % step if step > 0 else now_ns


Publish = Callable[[list[Sample]], Awaitable[None]]


def as_publish(sink: Callable[[list[Sample]], object]) -> Publish:
    """The runner's one contract is `await publish(samples)`, done once the samples are safe; a plain function
    (a list's extend, in `aifactory collect` and the tests) is adapted here, once."""
    if inspect.iscoroutinefunction(sink):
        return sink

    async def publish(samples: list[Sample]) -> None:
        sink(samples)

    return publish


class InstanceRunner:
    def __init__(self, cfg: InstanceConfig, collector: Collector | None, global_tags: dict[str, str],
                 publish: Callable[[list[Sample]], object], align: bool = True,
                 init_error: str | None = None) -> None:
        self.cfg = cfg
        self.collector = collector
        self.global_tags = global_tags
        self.publish = as_publish(publish)
        self.align = align
        self.runs = self.errors = self.timeouts = self.skipped = 0
        self.counts: dict[str, int] = {}  # the accumulators' invalid values and late adds
        self._jobs: queue.SimpleQueue | None = None  # the worker thread's runs
        self.state = "pending" if init_error is None else "error"
        self.last_error: str | None = init_error
        self.last_run_ns: int | None = None
        self.last_success_ns: int | None = None
        self.last_duration: float | None = None
        self.last_samples = 0
        self.restart_reason: str | None = None  # the collector asked for a new process
        self._thread_busy = False
        self.running = False  # a run is in progress (consumers of this collector wait for it)
        self._is_async = collector is not None and inspect.iscoroutinefunction(collector.collect)

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def success(self) -> bool:
        return self.state in ("ok", "not_present")

    def _set_state(self, state: str, error: str | None) -> None:
        # Log state changes, not repeats: a failing collector says so once, not every interval.
        if state != self.state or (state == "error" and error != self.last_error):
            if state == "ok" and self.state in ("error", "timeout"):
                log.info("collector %s: recovered", self.name)
            elif state == "error":
                log.error("collector %s: %s", self.name, error)
            elif state == "timeout":
                log.error("collector %s: %s", self.name, error)
            elif state == "not_present":
                log.info("collector %s: not present: %s", self.name, error)
            elif state == "skipped":
                log.warning("collector %s: %s", self.name, error)
        self.state = state
        self.last_error = error

    def _run_thread(self, acc: Accumulator) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        collector = self.collector

        def deliver(exc: BaseException | None) -> None:
            if not fut.done():
                fut.set_exception(exc) if exc else fut.set_result(None)

        def target() -> None:
            exc: BaseException | None = None
            turn = _LANE.acquire(timeout=LANE_WAIT)
            try:
                collector.collect(acc)
            except BaseException as e:  # handed to the loop, which classifies it
                exc = e
            finally:
                if turn:
                    _LANE.release()
                self._thread_busy = False
            try:
                loop.call_soon_threadsafe(deliver, exc)
            except RuntimeError:
                pass  # the loop is gone: the agent stopped while we were stuck

        self._thread_busy = True
        if self._jobs is None:
            # One worker thread per instance, reused run after run (starting a thread per run cost more CPU than
            # some collectors' own work: bench/collect_overhead). A run hung past its deadline keeps the worker;
            # later runs are skipped until it returns, as before.
            self._jobs = queue.SimpleQueue()
            threading.Thread(target=self._worker, args=(self._jobs,), name=f"collect-{self.name}",
                             daemon=True).start()
        self._jobs.put(target)
        return fut

    @staticmethod
    def _worker(jobs: queue.SimpleQueue) -> None:
        while True:
            job = jobs.get()
            if job is None:
                return
            job()

    async def run_once(self, ts: int | None = None) -> list[Sample]:
        if self.collector is None:
            return []
        if self._thread_busy:
            self.skipped += 1
            self._set_state("skipped", "previous run still running past its deadline; run skipped")
            return []
        if ts is None:
            ts = grid_ts(self.cfg.interval) if self.align else time.time_ns()
        acc = Accumulator(ts, self.global_tags, self.counts)
        self.running = True
        try:
            return await self._run_once(acc)
        finally:
            self.running = False

    async def _run_once(self, acc: Accumulator) -> list[Sample]:
        self.runs += 1
        self.last_run_ns = time.time_ns()
        t0 = time.perf_counter()
        state, error = "ok", None
        try:
            if self._is_async:
                await asyncio.wait_for(self.collector.collect(acc), self.cfg.timeout)
            else:
                await asyncio.wait_for(asyncio.shield(self._run_thread(acc)), self.cfg.timeout)
        except NotPresent as e:
            state, error = "not_present", str(e) or "not present"
        except RestartRequired as e:
            self.errors += 1
            state, error = "error", f"needs a new process: {e}"
            self.restart_reason = str(e)
        except TimeoutError:
            self.timeouts += 1
            state, error = "timeout", f"run abandoned after its {self.cfg.timeout:g}s deadline"
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.errors += 1
            state, error = "error", f"{type(e).__name__}: {e}"
        self.last_duration = time.perf_counter() - t0
        # What was collected before a failure or the deadline is kept, never lost.
        samples = acc.close()
        self.last_samples = len(samples)
        if state == "ok":
            self.last_success_ns = time.time_ns()
        self._set_state(state, error)
        if samples:
            await self.publish(samples)  # buffers committed: only now is the collection done
        return samples

    def stats(self) -> dict:
        return {
            "kind": self.cfg.kind,
            "state": self.state,
            "success": self.success,
            "present": self.state != "not_present",
            "last_error": self.last_error,
            "last_run_ns": self.last_run_ns,
            "last_success_ns": self.last_success_ns,
            "run_duration_seconds": self.last_duration,
            "run_samples": self.last_samples,
            "runs_total": self.runs,
            "errors_total": self.errors,
            "timeouts_total": self.timeouts,
            "skipped_total": self.skipped,
            # fields dropped as NaN/inf, and adds of a run abandoned past its deadline (refused, counted)
            "invalid_values_total": self.counts.get("invalid_values", 0),
            "late_samples_total": self.counts.get("late_adds", 0),
            "interval_seconds": self.cfg.interval,
            "timeout_seconds": self.cfg.timeout,
        }

    def emit(self, acc: Accumulator) -> None:
        st = self.stats()
        fields = {k: st[k] for k in ("runs_total", "errors_total", "timeouts_total", "skipped_total",
                                     "invalid_values_total", "late_samples_total")}
        fields["run_success"] = st["success"]
        fields["present"] = st["present"]
        fields["run_samples"] = st["run_samples"]
        if st["run_duration_seconds"] is not None:
            fields["run_duration_seconds"] = round(st["run_duration_seconds"], 6)
        acc.add("agent", fields, {"component": "collector", "name": self.name, "collector": self.cfg.kind})

    def close(self) -> None:
        if self._jobs is not None:
            self._jobs.put(None)  # the worker ends after the run it has (a hung one: with the process)
        if self.collector is not None and not self._thread_busy:
            try:
                self.collector.close()
            except Exception as e:
                log.warning("collector %s: close failed: %s", self.name, e)


def producers(runner: InstanceRunner, runners: list[InstanceRunner]) -> list[InstanceRunner]:
    """The runners whose collectors declare a measurement (a family) this runner's collector consumes."""
    needs = set(runner.collector.consumes) if runner.collector is not None else set()
    if not needs:
        return []
    return [p for p in runners if p is not runner and p.collector is not None and p.cfg.kind != runner.cfg.kind
            and needs.intersection(m.measurement for m in p.collector.METRICS)]


def stages(runners: list[InstanceRunner]) -> list[list[InstanceRunner]]:
    """Runners in the order their inputs need: a collector that consumes a measurement (a family) comes after
    every instance of the collectors that declare it. One ordering for the daemon's first runs and for
    `aifactory collect`; the daemon's later runs wait for the same producers every tick."""
    from graphlib import CycleError, TopologicalSorter

    graph = TopologicalSorter()
    for r in runners:
        graph.add(r.cfg.kind, *{p.cfg.kind for p in producers(r, runners)})
    try:
        graph.prepare()
    except CycleError as e:
        raise ValueError(f"collectors consume each other's samples in a cycle: {e.args[1]}") from None
    out: list[list[InstanceRunner]] = []
    while graph.is_active():
        ready = graph.get_ready()
        out.append([r for r in runners if r.cfg.kind in ready])
        graph.done(*ready)
    return [s for s in out if s]
