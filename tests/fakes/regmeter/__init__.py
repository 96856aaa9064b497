"""A facility device on a new transport, as docs/extending.md walks through it: a register meter read through a
fake transport (register images in JSON files, in place of Modbus TCP), its vendor knowledge in a profile
(profiles/*.yaml), everything else from the shared profile engine and the families.

One folder and one line: registered by `Registry({..., "regmeter": "tests.fakes.regmeter:RegisterMeterCollector"})`
(or the `aifactory.collectors` entry-point group). What it emits (`pdu`, `leak`) is the families' contract, so
the facility collector's PUE and the efficiency collector's rack scope read it as they read an SNMP PDU's rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.collector import Collector, NotPresent
from agent.config import CollectorOptions, Strict
from agent.model import Accumulator, Kind, Metric
from collectors.common.energy import EnergyCounters
from collectors.common.families import family_metrics
from collectors.common.profile import load_profiles
from collectors.common.profile.evaluate import evaluate
from collectors.common.profile.plan import object_words
from collectors.common.profile.samples import DeviceCounters

PROFILES = Path(__file__).with_name("profiles")
DEVICE_TAGS = ("host", "device", "role", "rack", "profile")


class Match(BaseModel):
    """How this transport recognises a device: the model name in its identification registers."""

    model_config = ConfigDict(extra="forbid")
    model: str


class MeterOptions(Strict):
    name: str = Field(..., description="tag `device`")
    image: str = Field(..., description="the register image the fake transport reads (JSON: {\"hr:N\": word})")
    profile: str = Field("acme-meter", description="the register profile")
    role: Literal["it", "cooling", "facility_total", "other"] = Field("other", description="what it meters")
    rack: str | None = Field(None, description="tag `rack`")

    def tags(self) -> dict[str, str]:
        return {k: v for k, v in (("device", self.name), ("role", self.role), ("rack", self.rack)) if v}


class RegisterMeterOptions(CollectorOptions):
    devices: list[MeterOptions] = Field(default_factory=list)


def read_registers(image: Path, wanted: dict[str, int]) -> dict[str, list[int]]:
    """The transport: each object's words, as a Modbus read of `count` holding registers returns them. An
    address the device does not have is left out (Modbus exception 2, illegal data address)."""
    regs = json.loads(image.read_text())
    out = {}
    for obj, count in wanted.items():
        kind, _, start = obj.partition(":")
        got = [regs.get(f"{kind}:{int(start) + i}") for i in range(count)]
        if None not in got:
            out[obj] = got
    return out


class RegisterMeterCollector(Collector):
    kind = "regmeter"
    Options = RegisterMeterOptions
    METRICS = (*family_metrics("pdu", "leak"),
               Metric("regmeter_device", "up", Kind.GAUGE, "bool", "the device answered this poll", DEVICE_TAGS))

    def __init__(self, options: RegisterMeterOptions, ctx) -> None:
        super().__init__(options, ctx)
        self.profiles = load_profiles(PROFILES, Match)
        state = ctx.state_dir / "regmeter-counters.json" if ctx.state_dir else None
        self.counters = DeviceCounters(EnergyCounters(state), "regmeter")

    def collect(self, acc: Accumulator) -> None:
        if not self.options.devices:
            raise NotPresent("no register meters configured")
        for dev in self.options.devices:
            profile = self.profiles[dev.profile]
            tags = {**dev.tags(), "profile": profile.name}
            try:
                data = read_registers(Path(dev.image), object_words(profile))
            except (OSError, ValueError):
                acc.add("regmeter_device", {"up": False}, tags)  # one dead device; the others go on
                continue
            readings = evaluate(profile, data, tags)
            for measurement, fields, row_tags in self.counters.samples(dev.name, tags.keys(), readings):
                acc.add(measurement, fields, row_tags)
            acc.add("regmeter_device", {"up": True}, tags)
        self.counters.save()  # before the samples leave: an emitted value is never ahead of the saved state
