"""Network collector: per-NIC counters, link state and speed; InfiniBand/RoCE ports."""

from __future__ import annotations

from pydantic import Field

from agent.collector import Collector
from agent.config import CollectorOptions, RegexList
from agent.model import Accumulator
from collectors.common import compile_any

from .mapping import map_ib, map_interfaces
from .metrics import METRICS
from .reader import NetworkReader

# Loopback and per-container virtual interfaces would only add churn and cardinality.
DEFAULT_EXCLUDE = ["lo", r"veth.*", r"cali.*", r"lxc.*", r"tap.*", r"vnet\d+", r"flannel\..*", r"cni\d+"]


class NetworkOptions(CollectorOptions):
    exclude_interfaces: RegexList = Field(default_factory=lambda: list(DEFAULT_EXCLUDE),
                                          description="interfaces to skip (regular expressions)")
    infiniband: bool = Field(True, description="read /sys/class/infiniband ports when present")


class NetworkCollector(Collector):
    kind = "network"
    Options = NetworkOptions
    METRICS = METRICS

    def __init__(self, options: NetworkOptions, ctx) -> None:
        super().__init__(options, ctx)
        self.reader = NetworkReader(ctx.proc_root, ctx.sys_root, compile_any(options.exclude_interfaces),
                                    options.infiniband)

    def collect(self, acc: Accumulator) -> None:
        map_interfaces(self.reader.interfaces(), acc)
        map_ib(self.reader.ib_ports(), acc)
