"""What a collector is: the contract between ``collectors/*`` and the agent core.

A collector class has ``kind``, an ``Options`` model (a ``CollectorOptions``), a tuple of
declared ``METRICS`` and ``collect(acc)``, either a plain function (run in its own
thread, since it may block on /proc, /sys or a subprocess) or a coroutine (run on the
event loop; it must not block). It raises on failure: the runner isolates it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from .bus import SampleBus
from .config import CollectorOptions
from .model import Accumulator, Metric


class NotPresent(Exception):
    """The thing this collector reads is not on this node (no GPU, no NVML, no server).

    Not a failure: the runner records it as state ``not_present`` and logs it once.
    """


class RestartRequired(Exception):
    """Only a new process can recover (a library loaded into this one no longer matches the system, as
    NVML after a driver upgrade): the agent stops cleanly with exit status 75 and systemd starts it again
    (Restart=on-failure; 75 is not among the unit's RestartPreventExitStatus)."""


@dataclass(frozen=True)
class Context:
    """What the agent hands every collector instance."""

    instance: str
    proc_root: Path = Path("/proc")
    sys_root: Path = Path("/sys")
    state_dir: Path | None = None
    bus: SampleBus | None = None  # latest samples of the other collectors (for derived metrics)
    timeout: float | None = None  # the run's deadline: a collector with inner deadlines keeps them below it


class Collector:
    kind: ClassVar[str] = ""
    Options: ClassVar[type[CollectorOptions]] = CollectorOptions
    METRICS: ClassVar[tuple[Metric, ...]] = ()
    default_enabled: ClassVar[bool] = True
    # The measurements (families) it reads from the agent's sample bus (facility: pdu, ups): every run of it
    # comes after the runs of the same tick of the collectors that declare them (agent.runner.stages).
    consumes: ClassVar[tuple[str, ...]] = ()
    # "module:function" adding this collector's own commands to `aifactory` (see agent/cli/common.py)
    cli: ClassVar[str | None] = None

    def __init__(self, options: CollectorOptions, ctx: Context) -> None:
        self.options = options
        self.ctx = ctx

    def collect(self, acc: Accumulator) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Release handles; called once on shutdown."""
