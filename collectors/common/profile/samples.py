"""A profile device's poll and readings, whatever the transport: each poll under the device's own deadline,
counters kept monotonic on the energy ledger's counters, one sample per row, provenance tags on power families.

Every transport that feeds the profile engine (SNMP today; Modbus, a test's fake) ends its poll here, so a
counter wrap, an operator zeroing a kWh register or a garbage jump is handled once, the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine

from collectors.common.energy import EnergyCounters

from . import field_catalogue
from .evaluate import Reading

log = logging.getLogger(__name__)

# An energy counter moving faster than this is garbage (1e308, a wrong scale): above any campus's draw.
FACILITY_LIMIT_WATTS = 1e9
# Families whose power and energy readings say where they came from (`source`: TRANSPORT_FAMILY).
POWER_FAMILIES = ("pdu", "meter", "ups", "cooling")


async def within_deadline(poll: Coroutine, timeout: float, retries: int, end: float,
                          on_timeout: Callable[[], None] | None = None):
    """A device's poll under its own deadline: its timeout for each try over about three rounds of requests
    (identification, reads), never past the run's `end` (time.monotonic()), so one silent device never holds up
    the samples of those that answered. `on_timeout` runs when the poll is cut off (a connection whose late
    answers must not meet the next request)."""
    deadline = min(timeout * (retries + 1) * 3, end - time.monotonic())
    if deadline <= 0:
        poll.close()
        raise TimeoutError("no time left in this run (other devices were slow)")
    try:
        return await asyncio.wait_for(poll, deadline)
    except TimeoutError:
        if on_timeout is not None:
            on_timeout()
        raise TimeoutError(f"no complete answer within {deadline:.3g} s") from None


class DeviceCounters:
    """The counters of every device a transport polls, monotonic and saved in one state file."""

    def __init__(self, counters: EnergyCounters, transport: str) -> None:
        self.counters = counters
        self.transport = transport
        self.counter_fields = {k for k, d in field_catalogue().items() if d.kind == "counter"}

    def keep(self, device: str, placement: set[str], r: Reading, now: float | None = None) -> None:
        """Resettable and wrapping counters (kWh that an operator can zero) made monotonic in place; the value is
        None while a drop is confirmed or a reading is refused (left out of the sample)."""
        if (r.measurement, r.field) not in self.counter_fields:
            return
        # Keyed by device and row, not by the device's placement tags, which an operator may edit.
        key = f"{device}|{r.measurement}|{r.field}|" + ",".join(
            f"{k}={v}" for k, v in sorted(r.tags.items()) if k not in placement)
        energy = r.field.endswith("joules_total")
        u = self.counters.reading(key, r.value, time.time() if now is None else now, wrap_at=r.wrap_at,
                                  max_watts=FACILITY_LIMIT_WATTS if energy else None)
        r.value = u.value
        if u.event in ("wrap", "reset"):
            log.warning("%s device %s: %s %s counter %s; kept monotonic", self.transport, device, r.measurement,
                        r.field, "wrapped" if u.event == "wrap" else "was reset")
        elif u.event == "refused":
            log.warning("%s device %s: %s %s reading refused: %s", self.transport, device, r.measurement, r.field,
                        u.reason)

    def samples(self, device: str, placement: set[str], readings: list[Reading]) -> list[tuple[str, dict, dict]]:
        """The device's rows (`rows`), its counters kept first, all at one instant."""
        now = time.time()
        for r in readings:
            self.keep(device, placement, r, now)
        return rows(readings, self.transport)

    def save(self) -> None:
        self.counters.save()


def rows(readings: list[Reading], transport: str) -> list[tuple[str, dict, dict]]:
    """(measurement, fields, tags) per row: readings with the same tags are one row (a row's readings share one
    tags dict; two groups of one profile may fill one row, a transfer switch's sources and its total). Power
    families' rows carry `source` TRANSPORT_FAMILY (snmp_pdu, modbus_ups), the provenance of every power
    reading."""
    out: dict[tuple, tuple[str, dict, dict]] = {}
    keys: dict[int, tuple] = {}  # tags dict -> its row: two groups of a profile may describe one row
    for r in readings:
        if r.value is None:
            continue
        key = keys.get(id(r.tags))
        if key is None:
            key = keys[id(r.tags)] = (r.measurement, tuple(sorted(r.tags.items())))
        row = out.get(key)
        if row is None:
            tags = {**r.tags, "source": f"{transport}_{r.measurement}"} if r.measurement in POWER_FAMILIES else r.tags
            row = out[key] = (r.measurement, {}, tags)
        row[1][r.field] = r.value
    return list(out.values())
