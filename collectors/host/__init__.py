"""Host collector: CPU (total and per core), load, memory, swap, uptime, scheduler counters,
processes and hwmon temperatures."""

from __future__ import annotations

from pydantic import Field

from agent.collector import Collector
from agent.config import CollectorOptions
from agent.model import Accumulator

from .mapping import map_host
from .metrics import METRICS
from .reader import HostReader


class HostOptions(CollectorOptions):
    per_cpu: bool = Field(True, description="emit host_cpu for every core, not only the total")
    temperatures: bool = Field(True, description="read hwmon temperature sensors")


class HostCollector(Collector):
    kind = "host"
    Options = HostOptions
    METRICS = METRICS

    def __init__(self, options: HostOptions, ctx) -> None:
        super().__init__(options, ctx)
        self.reader = HostReader(ctx.proc_root, ctx.sys_root, options.temperatures)
        self.previous: dict[str, dict[str, float]] = {}

    def collect(self, acc: Accumulator) -> None:
        reading = self.reader.read()
        if not self.options.per_cpu:
            reading.cpus = [c for c in reading.cpus if c.cpu == "total"]
        map_host(reading, acc, self.previous)
        self.previous = {c.cpu: c.seconds for c in reading.cpus}
