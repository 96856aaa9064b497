"""Host collector: CPU (total and per core), load, memory, swap, uptime, scheduler counters,
processes, hwmon temperatures and the CPU packages' RAPL energy."""

from __future__ import annotations

from pydantic import Field

from agent.collector import Collector
from agent.config import CollectorOptions
from agent.model import Accumulator
from collectors.common import boot_id
from collectors.common.energy import EnergyCounters

from .mapping import map_host, map_rapl
from .metrics import METRICS
from .reader import HostReader


class HostOptions(CollectorOptions):
    per_cpu: bool = Field(True, description="emit host_cpu for every core, not only the total")
    temperatures: bool = Field(True, description="read hwmon temperature sensors")
    rapl: bool = Field(True, description="read the CPU packages' energy counters (RAPL, /sys/class/powercap)")


class HostCollector(Collector):
    kind = "host"
    Options = HostOptions
    METRICS = METRICS

    def __init__(self, options: HostOptions, ctx) -> None:
        super().__init__(options, ctx)
        self.reader = HostReader(ctx.proc_root, ctx.sys_root, options.temperatures, options.rapl)
        self.previous: dict[str, dict[str, float]] = {}
        # RAPL restarts at power-on: the boot id tells a reboot while the agent was down from a wrap
        self.energy = EnergyCounters(ctx.state_dir / "rapl-counters.json" if ctx.state_dir else None,
                                     boot_id=boot_id(ctx.proc_root))

    def collect(self, acc: Accumulator) -> None:
        reading = self.reader.read()
        if not self.options.per_cpu:
            reading.cpus = [c for c in reading.cpus if c.cpu == "total"]
        map_host(reading, acc, self.previous)
        self.previous = {c.cpu: c.seconds for c in reading.cpus}
        if reading.rapl:
            map_rapl(reading.rapl, acc, self.energy)
            self.energy.save()  # before the samples leave: an emitted value is never ahead of the saved state

    def close(self) -> None:
        self.energy.save()
