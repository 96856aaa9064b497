"""Collectors that misbehave on purpose, for runner and scheduler tests."""

from __future__ import annotations

import asyncio
import threading
import time

from agent.collector import Collector, NotPresent
from agent.model import Kind, Metric

RELEASE = threading.Event()  # set by tests to let hung collectors go
RUNS: dict[str, list[float]] = {}


def _mark(name):
    RUNS.setdefault(name, []).append(time.monotonic())


class Base(Collector):
    default_enabled = False  # only what a test names runs


class Quick(Base):
    kind = "quick"
    METRICS = (Metric("quick", "value_count", Kind.GAUGE, "count", "a counter of runs"),)

    def collect(self, acc):
        _mark(self.ctx.instance)
        acc.add("quick", {"value_count": len(RUNS[self.ctx.instance])})


class Boom(Base):
    kind = "boom"

    def collect(self, acc):
        _mark(self.ctx.instance)
        raise RuntimeError("sensor bus on fire")


class Partial(Base):
    kind = "partial"
    METRICS = (Metric("partial", "value_count", Kind.GAUGE, "count", "kept before the failure"),)

    def collect(self, acc):
        acc.add("partial", {"value_count": 1})
        raise ValueError("second device failed")


class Hang(Base):
    kind = "hang"
    METRICS = (Metric("hang", "value_count", Kind.GAUGE, "count", "emitted before hanging"),)

    def collect(self, acc):
        _mark(self.ctx.instance)
        acc.add("hang", {"value_count": 1})
        RELEASE.wait(60)
        acc.add("hang", {"value_count": 2}, {"late": "yes"})  # refused: the run was abandoned


class AsyncHang(Base):
    kind = "asynchang"

    async def collect(self, acc):
        _mark(self.ctx.instance)
        await asyncio.sleep(60)


class Absent(Base):
    kind = "absent"

    def collect(self, acc):
        raise NotPresent("no such hardware on this node")


class BadInit(Base):
    kind = "badinit"

    def __init__(self, options, ctx):
        raise OSError("cannot open /dev/thing")


class SlowSource(Base):
    """A producer whose run takes longer than the consumers' half-second stage offset (a slow BMC)."""

    kind = "slowsource"
    METRICS = (Metric("slowsource", "tick_seconds", Kind.GAUGE, "seconds", "the tick this value belongs to"),)

    def collect(self, acc):
        time.sleep(0.7)
        acc.add("slowsource", {"tick_seconds": acc.ts / 1e9})


class Reader(Base):
    """A consumer: records which tick of slowsource it saw at each of its own ticks."""

    kind = "reader"
    consumes = ("slowsource",)
    METRICS = (Metric("reader", "seen_seconds", Kind.GAUGE, "seconds", "the producer's tick seen"),)
    SEEN: list[tuple[float, float | None]] = []

    def collect(self, acc):
        got = self.ctx.bus.latest("slowsource") if self.ctx.bus else []
        seen = got[0].fields["tick_seconds"] if got else None
        Reader.SEEN.append((acc.ts / 1e9, seen))
        acc.add("reader", {"seen_seconds": seen or 0.0})


TARGETS = {name: f"tests.plugins:{cls}" for name, cls in (
    ("quick", "Quick"), ("boom", "Boom"), ("partial", "Partial"), ("hang", "Hang"),
    ("asynchang", "AsyncHang"), ("absent", "Absent"), ("badinit", "BadInit"), ("slowsource", "SlowSource"),
    ("reader", "Reader"))}
TARGETS["missingdep"] = "tests.plugins_missing_module:Nothing"


# --- outputs for the output contract tests ---------------------------------------------------------------------

from pydantic import Field  # noqa: E402

from agent.config import OutputOptions  # noqa: E402
from agent.outputs.memory import MemoryBuffer  # noqa: E402
from agent.outputs.running import OK, RunningOutput, Writer  # noqa: E402


class ProbeOptions(OutputOptions):
    name: str = Field("probe")
    extra_stat: bool = Field(False, description="report a figure nobody declared")


class ProbeWriter(Writer):
    """Keeps what it was given: the catalogue from build, the records it wrote."""

    CATALOGUES: list = []

    def __init__(self, opts: ProbeOptions) -> None:
        self.opts = opts
        self.records: list = []

    def encode(self, samples):
        return list(samples)

    def write(self, records):
        self.records.extend(records)
        return OK

    def stats(self) -> dict:
        return {"surprise_total": 1} if self.opts.extra_stat else {}


class ProbeOutput(RunningOutput):
    Options = ProbeOptions
    many = True

    @classmethod
    def build(cls, opts, state_dir, agent=None, catalogue=None):
        ProbeWriter.CATALOGUES.append(catalogue)
        return cls(opts.name, ProbeWriter(opts), MemoryBuffer(1000, opts.name), batch_size=100)


OUTPUTS = {"probe": "tests.plugins:ProbeOutput"}
