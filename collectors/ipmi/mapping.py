"""Pure mapping from DCMI and SDR readings to samples (tested table-driven)."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import yaml

from agent.model import Accumulator

from .reader import DcmiPower, SdrReading


@functools.cache
def sdr_rules() -> tuple[list[tuple[re.Pattern | None, str]], dict[str, str]]:
    data = yaml.safe_load(Path(__file__).with_name("sdr.yaml").read_text())
    rules = [(re.compile(r["name"]) if "name" in r else None, r["scope"]) for r in data["power_scope"]]
    return rules, data["units"]


def power_scope(name: str) -> str:
    for pattern, scope in sdr_rules()[0]:
        if pattern is None or pattern.search(name):
            return scope
    return "component"


def map_dcmi(p: DcmiPower, acc: Accumulator, tags: dict[str, str]) -> None:
    fields: dict = {"measuring": p.active}
    if p.active:  # an inactive reading is zeros, not a measurement
        fields.update(power_watts=p.current_watts, power_min_watts=p.min_watts, power_max_watts=p.max_watts,
                      power_average_watts=p.average_watts, power_window_seconds=p.period_seconds)
    acc.add("bmc_power", fields, {**tags, "source": "dcmi", "scope": "chassis", "component": "dcmi"})


def map_sdr(readings: list[SdrReading], acc: Accumulator, tags: dict[str, str]) -> int:
    """Samples of the readable sensors; returns how many were mapped."""
    units = sdr_rules()[1]
    n = 0
    for r in readings:
        if r.value is None:
            continue  # "reading unavailable" (a PSU slot empty, a sensor not scanning): absent, not zero
        if r.units == "W":
            acc.add("bmc_power", {"power_watts": r.value},
                    {**tags, "source": "ipmi_sdr", "scope": power_scope(r.name), "component": r.name})
        elif r.units in units:
            acc.add("ipmi_sensor", {units[r.units]: r.value, "healthy": r.health == 0},
                    {**tags, "sensor": r.name, "sensor_type": r.sensor_type})
        else:
            continue
        n += 1
    return n
