"""IPMI collector: DCMI power readings and SDR power, temperature, fan, voltage and current sensors, from the
node's own BMC in band (/dev/ipmi0) or from many BMCs out of band (RMCP+) on a facility poller.

Targets are read one at a time (pyghmi is built for one OS thread: see PYGHMI), each within its own deadline,
counted from its turn: a BMC that does not answer delays the others by up to pyghmi's login timeout (5 s) and
never makes them time out; the collector's run deadline bounds the whole. pyghmi's session is kept between polls
and rebuilt after a failure.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

from pydantic import Field, SecretStr

from agent.collector import Collector, NotPresent
from agent.config import CollectorOptions, Host, PositiveDuration, SecretFile, Strict
from agent.model import Accumulator, Kind, Metric
from agent.secrets import read_secret
from collectors.common.families import family_metrics

from .mapping import map_dcmi, map_sdr
from .reader import DcmiPower, IpmiError, IpmiReader, SdrReading

log = logging.getLogger(__name__)

TARGET_TAGS = ("host", "target", "node", "site", "room", "row", "rack")
SENSOR_TAGS = TARGET_TAGS + ("sensor", "sensor_type")


def _metrics() -> tuple[Metric, ...]:
    g = Kind.GAUGE
    return (
        *family_metrics("bmc_power"),
        Metric("ipmi_sensor", "temperature_celsius", g, "celsius", "SDR temperature sensor", SENSOR_TAGS),
        Metric("ipmi_sensor", "fan_speed_rpm", g, "rpm", "SDR fan sensor", SENSOR_TAGS),
        Metric("ipmi_sensor", "voltage_volts", g, "volts", "SDR voltage sensor", SENSOR_TAGS),
        Metric("ipmi_sensor", "current_amperes", g, "amperes", "SDR current sensor", SENSOR_TAGS),
        Metric("ipmi_sensor", "healthy", g, "bool", "the sensor is within its thresholds", SENSOR_TAGS),
        Metric("ipmi_target", "failed_sensors", g, "count", "SDR sensors that could not be read or decoded this "
               "poll (each left out alone, said once)", TARGET_TAGS),
        Metric("ipmi_target", "up", g, "bool", "the BMC answered this poll", TARGET_TAGS),
        Metric("ipmi_target", "poll_duration_seconds", g, "seconds", "wall time of the poll", TARGET_TAGS),
        Metric("ipmi_target", "readings", g, "count", "readings the poll produced", TARGET_TAGS),
        Metric("ipmi_target", "dcmi", g, "bool", "the BMC answers DCMI Get Power Reading", TARGET_TAGS),
        Metric("ipmi_target", "error", Kind.INFO, "info", "why the last poll failed or ended early", TARGET_TAGS),
    )


class TargetOptions(Strict):
    """One BMC. Without host, the node's own BMC in band (/dev/ipmi0, needs root or the ipmi group)."""

    name: str = Field(..., description="the target's name: tag `target`")
    host: Host | None = Field(None, description="BMC address for RMCP+ (none: in band through /dev/ipmi0)")
    port: int = Field(623, ge=1, le=65535, description="UDP port")
    user: str | None = Field(None, description="BMC user (the USER privilege is enough for readings)")
    password: SecretStr | None = Field(None, description="prefer password_file / password_env")
    password_file: SecretFile = Field(None, description="file holding the password (or a credential name)")
    password_env: str | None = Field(None, description="environment variable holding the password")
    deadline: PositiveDuration = Field(8.0, description="a whole poll of this target, from its turn (targets are "
                                                     "read one at a time; pyghmi retries inside it)")
    dcmi: bool = Field(True, description="ask DCMI Get Power Reading")
    sdr: bool = Field(True, description="read the SDR sensors (power, temperature, fans, voltage, current)")
    node: str | None = Field(None, description="the node this BMC meters (tag `node`), on a facility poller")
    site: str | None = Field(None, description="tag `site`")
    room: str | None = Field(None, description="tag `room`")
    row: str | None = Field(None, description="tag `row`")
    rack: str | None = Field(None, description="tag `rack`")

    def tags(self) -> dict[str, str]:
        return {k: v for k, v in (("target", self.name), ("node", self.node), ("site", self.site),
                                  ("room", self.room), ("row", self.row), ("rack", self.rack)) if v}

    def password_of(self, where: str) -> str | None:
        pw = read_secret(f"{where}.password", self.password_file, self.password_env)
        return pw if pw is not None else (self.password.get_secret_value() if self.password else None)


class IpmiOptions(CollectorOptions):
    targets: list[TargetOptions] = Field(default_factory=list)
    max_in_flight: int = Field(32, ge=1, le=512, description="BMCs polled at the same time")

    def unique_keys(self) -> list[tuple[tuple, str, str]]:
        return [(("targets", i, "name"), t.name, "its series and state") for i, t in enumerate(self.targets)]


class Target:
    def __init__(self, opts: TargetOptions, password: str | None) -> None:
        self.opts = opts
        self.reader = IpmiReader(opts.host, opts.port, opts.user, password)
        self.turn: float | None = None  # when its poll got pyghmi (PYGHMI), None while it waits
        self.busy = False
        self.state = "new"
        self.last_error: str | None = None
        self.has_dcmi: bool | None = None
        self.failed: dict[str, str] = {}  # SDR sensors that could not be read this poll, and why
        self.failed_told: set[str] = set()


# pyghmi is built for one OS thread (its sessions share sockets and any waiting thread handles any session's
# answers): polled from several threads at once, one target's failed login broke another's session or hung its
# poll to its deadline (tests/test_ipmi.py, 2 runs in 10). Polls take turns; a BMC that does not answer holds
# the others up to pyghmi's login timeout (5 s), which each target's deadline allows for.
PYGHMI = threading.Lock()


def poll_target(t: Target) -> tuple[DcmiPower | None, list[SdrReading], str | None]:
    """(DCMI reading or None, SDR readings, error). What was read before an error is kept; the sensors that
    could not be read alone are in t.failed."""
    try:
        with PYGHMI:
            t.turn = time.monotonic()  # its deadline runs from here
            return _poll_once(t)
    finally:
        t.busy = False


def _poll_once(t: Target) -> tuple[DcmiPower | None, list[SdrReading], str | None]:
    power, sensors = None, []
    t.failed = {}
    try:
        if t.opts.dcmi and t.has_dcmi is not False:
            power = t.reader.dcmi_power()
            if (power is not None) != t.has_dcmi:
                t.has_dcmi = power is not None
                if power is None:
                    log.info("ipmi %s: no DCMI power reading on this BMC; SDR sensors only", t.opts.name)
        if t.opts.sdr:
            sensors = t.reader.sensors(t.failed)
        return power, sensors, None
    except IpmiError as e:
        return power, sensors, str(e)
    except Exception as e:  # whatever one BMC's answers provoke stays with it
        t.reader.reset()
        return power, sensors, f"{type(e).__name__}: {e}"


class IpmiCollector(Collector):
    kind = "ipmi"
    Options = IpmiOptions
    METRICS = _metrics()
    default_enabled = False
    cli = "collectors.ipmi.cli:add_parser"  # `aifactory ipmi probe`

    def __init__(self, options: IpmiOptions, ctx) -> None:
        super().__init__(options, ctx)
        import importlib.util

        if options.targets and importlib.util.find_spec("pyghmi") is None:
            raise RuntimeError("pyghmi is not installed: pip install 'aifactory-agent[ipmi]'")
        self.targets = [Target(t, t.password_of(f"collectors.ipmi.targets[{t.name}]")) for t in options.targets]
        self.pool: ThreadPoolExecutor | None = None

    def collect(self, acc: Accumulator) -> None:
        if not self.targets:
            raise NotPresent("no IPMI targets configured")
        if self.pool is None:
            self.pool = ThreadPoolExecutor(self.options.max_in_flight, thread_name_prefix="ipmi")
        end = time.monotonic() + (self.ctx.timeout or 30.0) * 0.9
        pending = {}  # future -> (target, started)
        for t in self.targets:
            if t.busy:
                self._report(acc, t, None, [], "previous poll still running past its deadline", 0.0)
                continue
            t.busy, t.turn = True, None
            pending[self.pool.submit(poll_target, t)] = (t, time.monotonic())

        def due(t: Target, submitted: float) -> float:  # a target waiting for its turn is not late yet
            return min((t.turn or max(submitted, time.monotonic())) + t.opts.deadline, end)

        while pending:
            first_end = min(min(due(t, started) for t, started in pending.values()), time.monotonic() + 0.25)
            done, _ = wait(pending, timeout=max(0.0, first_end - time.monotonic()), return_when="FIRST_COMPLETED")
            now = time.monotonic()
            for f in list(pending):
                t, started = pending[f]
                took = now - (t.turn or started)
                if f in done:
                    power, sensors, error = f.result()
                    self._report(acc, t, power, sensors, error, took)
                elif now >= due(t, started):
                    self._report(acc, t, None, [], f"no complete answer within {t.opts.deadline:g} s", took)
                else:
                    continue
                del pending[f]

    def _report(self, acc: Accumulator, t: Target, power: DcmiPower | None, sensors: list[SdrReading],
                error: str | None, duration: float) -> None:
        tags = t.opts.tags()
        n = 0
        if power is not None:
            map_dcmi(power, acc, tags)
            n += 1
        n += map_sdr(sensors, acc, tags)
        up = error is None or n > 0
        if up != (t.state == "up") or error != t.last_error:
            if error:
                log.error("ipmi %s (%s): %s", t.opts.name, t.opts.host or "in band", error)
            else:
                log.info("ipmi %s (%s): polling", t.opts.name, t.opts.host or "in band")
        t.state, t.last_error = ("up" if up else "down"), error
        for name in sorted(set(t.failed) - t.failed_told):
            log.warning("ipmi %s: SDR sensor %r left out: %s (the others are read)", t.opts.name, name, t.failed[name])
        t.failed_told = set(t.failed)
        fields = {"up": up, "poll_duration_seconds": round(duration, 6), "readings": n, "error": error,
                  "failed_sensors": len(t.failed)}
        if t.has_dcmi is not None:
            fields["dcmi"] = t.has_dcmi
        acc.add("ipmi_target", fields, tags)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
