"""The daemon: APScheduler 3.x jobs per collector instance, outputs, status, shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from . import __version__
from .alerts.engine import AlertEngine, AlertStore
from .alerts.rules import config_rules
from .bus import SampleBus
from .collector import Collector, Context
from .config import EX_TEMPFAIL, Config
from .logonce import Latch
from .model import Accumulator
from .pipeline import Pipeline
from .registry import Registry, default_registry
from .runner import InstanceRunner, as_publish, grid_ts, producers, stages
from .sdnotify import Notifier as SdNotifier
from .selfmetrics import OUTPUT_FIELDS, STATUS_ONLY, ProcessStats
from .state import set_aside_files, write_status

log = logging.getLogger("agent")

EX_RESTART = EX_TEMPFAIL  # a new process will do: systemd's Restart=on-failure starts one


def build_runners(config: Config, registry: Registry, publish, state_dir: Path | None,
                  only: set[str] | None = None, bus: SampleBus | None = None) -> list[InstanceRunner]:
    """Instantiate every enabled collector instance; a constructor that raises marks it failed.

    Every collection goes to the bus (latest value per series, for derived metrics) and to publish.
    """
    bus = bus or SampleBus()
    publish = as_publish(publish)

    def publish_and_share(interval: float):
        async def share(samples):
            bus.observe(samples, interval)
            await publish(samples)
        return share

    runners = []
    tags = config.global_tags()
    agent = config.settings.agent
    for inst in config.instances:
        if only and inst.kind not in only and inst.name not in only:
            continue
        spec = registry.get(inst.kind)
        collector: Collector | None = None
        error = spec.error
        if spec.cls is not None:
            ctx = Context(instance=inst.name, proc_root=agent.proc_root, sys_root=agent.sys_root,
                          state_dir=state_dir, bus=bus, timeout=inst.timeout)
            try:
                collector = spec.cls(inst.options, ctx)
            except Exception as e:
                error = f"failed to start: {type(e).__name__}: {e}"
                log.error("collector %s: %s", inst.name, error)
        runners.append(InstanceRunner(inst, collector, tags, publish_and_share(inst.interval), agent.align,
                                      init_error=error))
    return runners


class Agent:
    def __init__(self, config: Config, state_dir: Path, registry: Registry | None = None) -> None:
        self.config = config
        self.state_dir = state_dir
        self.registry = registry or default_registry()
        catalogue = self.registry.catalogue()  # outputs that need each metric's kind and unit get it
        outputs: list = []
        for kind, cls in self.registry.outputs.items():
            section = getattr(config.settings.outputs, kind, None)
            for opts in (section if cls.many else [section]) if section is not None else []:
                if opts.enabled:
                    out = cls.build(opts, state_dir, config.settings.agent, catalogue)
                    undeclared = set(out.stats()) - set(OUTPUT_FIELDS) - STATUS_ONLY
                    if undeclared:  # a figure nobody declared would be dropped from the agent measurement
                        raise RuntimeError(f"output {kind} reports figures not declared in agent/selfmetrics.py: "
                                           f"{', '.join(sorted(undeclared))}")
                    outputs.append(out)
        self.pipeline = Pipeline(outputs)
        rules = config_rules(config, self.registry.rule_files())
        self.alerts = None
        if rules:
            al = config.settings.alerts
            notifier = None
            if al.receivers:
                from .alerts.notify import Notifier

                notifier = Notifier(al.receivers)
            self.alerts = AlertEngine(rules, AlertStore(state_dir / "alerts.db"), notifier, al.default_receivers)
        self.bus = SampleBus()
        self.runners = build_runners(config, self.registry, self._publish, state_dir, bus=self.bus)
        self._producers: dict[str, list[InstanceRunner]] = {}  # runner -> the runners it waits for each tick
        self.process = ProcessStats()
        self.sd = SdNotifier()
        self.started_at = time.time()
        self._stop: asyncio.Event | None = None  # created inside the running loop
        self._tasks: set[asyncio.Task] = set()
        self._status = Latch(log)
        self._alerting = Latch(log)
        self.alert_failures = 0  # evaluations of the whole engine that raised
        self._restart: str | None = None  # why a collector needs a new process
        intervals = [r.cfg.interval for r in self.runners] + [config.settings.agent.interval]
        # The agent rewrites status.json after every run: one older than this means it is not running.
        self.stale_after = max(60.0, 3 * max(intervals))

    async def _publish(self, samples, full: bool = False) -> None:
        """The one path of every sample: to the alert engine, which evaluates the rules reading what came (all
        of them with `full`, once per agent interval with the self-metrics), then to the bus-fed outputs."""
        if self.alerts is not None and samples:
            self.alerts.observe(samples)
            try:
                samples = samples + self.alerts.evaluate(touched=None if full else {s.measurement for s in samples})
                self._alerting.recovered("alert evaluation works again")
            except Exception as e:  # never lose a collection to the alert engine; said once, counted
                self.alert_failures += 1
                self._alerting.failed(f"{type(e).__name__}: {e}", "alert evaluation failed: %s: %s",
                                      type(e).__name__, e)
        await self.pipeline.put(samples)

    def _agent_totals(self) -> dict:
        """The pipeline's and the alert engine's counters: status and the `agent` measurement."""
        out = {**self.pipeline.totals(), **self.bus.stats()}
        if self.alerts is not None:
            st = self.alerts.stats()
            out.update(rule_evaluations_total=st["rule_evaluations_total"],
                       rule_errors_total=st["rule_errors_total"] + self.alert_failures,
                       alerts_firing=st["firing"], alerts_pending=st["pending"])
        return out

    # --- status ---------------------------------------------------------------
    def status(self, stopped: bool = False) -> dict:
        collectors = {r.name: r.stats() for r in self.runners}
        outputs = self.pipeline.stats()
        healthy = all(c["state"] in ("ok", "not_present", "pending") for c in collectors.values()) and all(
            o["last_error"] is None for o in outputs.values()) and self.pipeline.failing is None
        return {
            "pid": os.getpid(),
            "version": __version__,
            "hostname": self.config.hostname,
            "config_source": str(self.config.source) if self.config.source else "built-in defaults",
            "state_dir": str(self.state_dir),
            "started_at": self.started_at,
            "updated_at": time.time(),
            "stale_after_seconds": self.stale_after,
            "stopped": stopped,
            "healthy": healthy,
            "collectors": collectors,
            "outputs": outputs,
            "process": self.process.read(),
            "pipeline": self.pipeline.totals(),
            "alerts": {**self.alerts.stats(), "engine_errors_total": self.alert_failures} if self.alerts else None,
            "state_files_set_aside": set_aside_files(),
        }

    def write_status(self, stopped: bool = False) -> None:
        try:
            write_status(self.state_dir, self.status(stopped))
        except OSError as e:
            self._status.failed(str(e), "cannot write status to %s: %s (`aifactory status` reports the agent "
                                "stale until it can)", self.state_dir, e)
            return
        self._status.recovered("status written to %s again", self.state_dir)

    # --- jobs -----------------------------------------------------------------
    async def _tracked(self, coro) -> None:
        """Run a job's work in its own task, tracked so that shutdown lets it finish within its deadline.

        The scheduler cancels its jobs when it shuts down; the work is shielded from that (a run
        cancelled mid-way would lose what it had collected) and awaited by run()'s shutdown instead.
        """
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            pass

    async def _run_and_report(self, runner: InstanceRunner) -> None:
        await runner.run_once()
        self.write_status()
        if runner.restart_reason and self._restart is None:
            self._restart = f"collector {runner.name}: {runner.restart_reason}"
            log.error("%s; stopping so that systemd starts a new process (exit %d)", self._restart, EX_RESTART)
            self._stop.set()

    async def _run(self, runner: InstanceRunner) -> None:
        await self._after_producers(runner)
        await self._tracked(self._run_and_report(runner))

    async def _after_producers(self, runner: InstanceRunner) -> None:
        """A collector that consumes others' samples runs after their run of the same tick: it starts half a
        second after them (per stage) and, where one is still running (a slow BMC), waits for it up to half its
        own interval, so it never reads the previous tick's values while the current ones are on their way."""
        before = self._producers.get(runner.name)
        if before is None:
            before = self._producers[runner.name] = producers(runner, self.runners)
        end = time.monotonic() + min(runner.cfg.interval / 2, 10.0)
        while any(p.running for p in before) and time.monotonic() < end:
            await asyncio.sleep(0.02)

    async def _self_metrics_job(self) -> None:
        await self._tracked(self._self_metrics())

    async def _self_metrics(self) -> None:
        interval = self.config.settings.agent.interval
        acc = Accumulator(grid_ts(interval) if self.config.settings.agent.align else time.time_ns(),
                          self.config.global_tags())
        for r in self.runners:
            r.emit(acc)
        for name, st in self.pipeline.stats().items():
            fields = {k: st[k] for k in OUTPUT_FIELDS if st.get(k) is not None}
            acc.add("agent", fields, {"component": "output", "name": name})
        self.process.emit(acc)
        acc.add("agent", self._agent_totals(), {"component": "pipeline"})
        await self._publish(acc.close(), full=True)  # the one path: rules on agent.* see these too

    async def run(self, once: bool = False, duration: float | None = None, flush_timeout: float = 10.0) -> int:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        self.pipeline.start()
        log.info("agent %s starting on %s: %d collector instances, outputs: %s, state dir %s",
                 __version__, self.config.hostname, len(self.runners),
                 ", ".join(self.pipeline.stats()) or "none", self.state_dir)
        scheduler = None
        try:
            if once:
                await asyncio.gather(*(r.run_once() for r in self.runners))
                await self._self_metrics()
                self.write_status()
            else:
                # Every collector's first run starts now, each as its own job: a hung one holds back
                # nobody (not the others, not READY, not the status).
                scheduler = self._start_scheduler(first_now=True)
                self.write_status()
                self.sd.ready(f"collecting with {len(self.runners)} collector instances")
                watchdog = None
                if self.sd.watchdog_interval:
                    watchdog = asyncio.create_task(self._watchdog(scheduler))
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=duration)
                except TimeoutError:
                    pass
                if watchdog is not None:
                    watchdog.cancel()
        finally:
            self.sd.stopping()
            if scheduler is not None:
                scheduler.shutdown(wait=False)
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=max(r.cfg.timeout for r in self.runners)
                                   if self.runners else 1.0)
            await self._self_metrics()
            flushed = await asyncio.to_thread(self.pipeline.stop, flush_timeout)
            for r in self.runners:
                r.close()
            if self.alerts is not None:
                try:
                    self.alerts.close()
                except Exception as e:  # a full disk at the last save: states were saved before
                    log.error("alert store: final save failed: %s", e)
            self.write_status(stopped=True)
            log.info("agent stopped%s", "" if flushed else " (some samples were not written)")
        if self._restart is None and once:
            reasons = [r.restart_reason for r in self.runners if r.restart_reason]
            self._restart = reasons[0] if reasons else None
        return EX_RESTART if self._restart else 0

    def healthy_loop(self, scheduler) -> bool:
        """The scheduler runs and its jobs are not overdue (a stalled loop or scheduler starves the watchdog)."""
        if scheduler is None or not scheduler.running:
            return False
        now = datetime.now(UTC)
        slack = timedelta(seconds=3 * max([r.cfg.interval for r in self.runners] + [10.0]))
        return all(j.next_run_time is None or j.next_run_time > now - slack for j in scheduler.get_jobs())

    async def _watchdog(self, scheduler) -> None:
        """Feed systemd's watchdog only while the loop turns and the scheduler is healthy: else, restart us."""
        while True:
            if self.healthy_loop(scheduler):
                self.sd.watchdog()
            else:
                log.error("scheduler not healthy: not feeding the systemd watchdog")
            await asyncio.sleep(self.sd.watchdog_interval)

    def _start_scheduler(self, first_now: bool = False) -> AsyncIOScheduler:
        agent = self.config.settings.agent
        scheduler = AsyncIOScheduler(timezone=UTC)
        now = time.time()
        stage_of = {id(r): i for i, stage in enumerate(stages(self.runners)) for r in stage}
        for r in self.runners:
            if r.collector is None:
                continue
            iv = r.cfg.interval
            # every run of a consumer half a second per stage after its producers', not only the first
            start = ((now // iv + 1) * iv if agent.align else now + iv) + 0.5 * stage_of[id(r)]
            scheduler.add_job(
                self._run, IntervalTrigger(seconds=iv, jitter=agent.jitter or None,
                                           start_date=datetime.fromtimestamp(start, UTC)),
                args=[r], id=f"collector:{r.name}", max_instances=1, coalesce=True,
                misfire_grace_time=max(1, int(iv)))
            if first_now:
                # the first run at once, as a job of its own: an interval job given a first run time counts its
                # later runs from it, and every run after would fall off the grid that timestamps are on
                scheduler.add_job(self._run, DateTrigger(datetime.fromtimestamp(now + 0.5 * stage_of[id(r)], UTC)),
                                  args=[r], id=f"first:{r.name}", misfire_grace_time=max(1, int(iv)))
        iv = agent.interval
        scheduler.add_job(self._self_metrics_job, IntervalTrigger(
            seconds=iv, start_date=datetime.fromtimestamp((now // iv + 1) * iv + min(1.0, iv / 2), UTC)),
            id="agent:self", max_instances=1, coalesce=True)
        if first_now:
            scheduler.add_job(self._self_metrics_job, DateTrigger(datetime.fromtimestamp(now + min(1.0, iv / 2), UTC)),
                              id="first:agent:self")
        scheduler.start()
        return scheduler
