"""Redfish collector: chassis, power-supply, GPU-baseboard and sensor power, energy and thermal readings
from BMCs and other Redfish services (power shelves, rack PDUs, CDUs).

Runs on a node for its own BMC, or on a facility poller for many. Each target is discovered once
(collectors/redfish/discover.py) and then polled through its plan on one kept-alive connection;
targets are polled in parallel in a bounded pool, each with its own deadline, so a slow or dead
BMC costs its own deadline and never delays the others.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from agent.collector import Collector, NotPresent
from agent.config import CollectorOptions, HttpUrl, PositiveDuration, SecretFile, Size, Strict
from agent.model import Accumulator, Kind, Metric
from agent.secrets import read_secret
from collectors.common.energy import LIMIT_HEADROOM, EnergyCounters
from collectors.common.families import family_metrics

from .client import MAX_ANSWER, Auth, RedfishClient, RedfishError
from .discover import Plan, PollResult, Remembering, discover, poll
from .model import Reading, family_of, load_models

log = logging.getLogger(__name__)

TARGET_TAGS = ("host", "target", "node", "site", "room", "row", "rack")
# The bound on a reading where the device does not say what it can draw (a PSU's PowerCapacityWatts, a
# PowerSubsystem's CapacityWatts): above any rack, far below a garbage 1e308.
DEVICE_LIMIT_WATTS = 1e6
CHASSIS_TAGS = TARGET_TAGS + ("chassis", "chassis_role")


def _metrics() -> tuple[Metric, ...]:
    s = CHASSIS_TAGS + ("sensor",)
    g = Kind.GAUGE
    return (
        *family_metrics("bmc_power", "pdu", "cooling", "leak"),
        Metric("redfish_sensor", "temperature_celsius", g, "celsius", "temperature", s),
        Metric("redfish_sensor", "fan_speed_percent", g, "percent", "fan or pump speed, percent of its maximum", s),
        Metric("redfish_sensor", "fan_speed_rpm", g, "rpm", "fan speed", s),
        Metric("redfish_sensor", "humidity_percent", g, "percent", "relative humidity", s),
        Metric("redfish_sensor", "liquid_flow_litres_per_minute", g, "litres_per_minute", "coolant flow", s),
        Metric("redfish_sensor", "pressure_kilopascals", g, "kilopascals", "coolant pressure", s),
        Metric("redfish_sensor", "heat_watts", g, "watts", "heat removed (a CDU's heat load)", s),
        Metric("redfish_sensor", "voltage_volts", g, "volts", "voltage", s),
        Metric("redfish_sensor", "current_amperes", g, "amperes", "current", s),
        Metric("redfish_sensor", "frequency_hertz", g, "hertz", "AC frequency", s),
        Metric("redfish_sensor", "pump_speed_percent", g, "percent", "coolant pump speed, percent of its maximum", s),
        Metric("redfish_target", "up", g, "bool", "the service answered this poll", TARGET_TAGS),
        Metric("redfish_target", "poll_duration_seconds", g, "seconds", "wall time of the poll", TARGET_TAGS),
        Metric("redfish_target", "requests", g, "requests", "HTTP requests of the poll", TARGET_TAGS),
        Metric("redfish_target", "readings", g, "count", "readings the poll produced", TARGET_TAGS),
        Metric("redfish_target", "missing_resources", g, "count", "planned resources that answered 404 (the "
               "plan is rebuilt on the next poll)", TARGET_TAGS),
        Metric("redfish_target", "skipped_resources", g, "count", "resources whose Status.State is not live "
               "(Absent, UnavailableOffline, ...): left out, said once", TARGET_TAGS),
        Metric("redfish_target", "refused_readings", g, "count", "readings refused: negative, beyond the device's "
               "capacity, or an energy counter jumping beyond it", TARGET_TAGS),
        Metric("redfish_target", "chassis", g, "count", "chassis discovered", TARGET_TAGS),
        Metric("redfish_target", "model", Kind.INFO, "info", "the resources read, per chassis", TARGET_TAGS),
        Metric("redfish_target", "error", Kind.INFO, "info", "why the last poll failed or ended early", TARGET_TAGS),
    )


class TargetOptions(Strict):
    """One Redfish service: a node's BMC, a power shelf, a rack PDU, a CDU."""

    name: str = Field(..., description="the target's name: tag `target`")
    url: HttpUrl = Field(..., description="https://BMC[:PORT] (the service root is /redfish/v1)")
    user: str | None = Field(None, description="account name (read-only rights are enough)")
    password: SecretStr | None = Field(None, description="prefer password_file / password_env")
    password_file: SecretFile = Field(None, description="file holding the password (or a credential name)")
    password_env: str | None = Field(None, description="environment variable holding the password")
    auth: Literal["session", "basic"] = Field(
        "session", description="session: one login, then a token (BMCs check basic auth on every request, slowly)")
    ca_file: str | None = Field(None, description="CA bundle that signed the BMC's certificate")
    insecure: bool = Field(False, description="skip TLS certificate verification (BMCs with self-signed "
                                              "certificates; prefer ca_file)")
    timeout: PositiveDuration = Field(5.0, description="per request")
    max_answer_size: Size = Field(MAX_ANSWER, ge=1024, description="the largest answer read; a larger one is "
                                                                   "refused whole and said (its resource left out)")
    deadline: PositiveDuration = Field(8.0, description="a whole poll of this target")
    chassis: list[str] = Field(default_factory=list, description="read only these chassis Ids (default: all)")
    electrical: bool = Field(False, description="also poll voltage, current and frequency sensors (PDUs, power "
                                                "shelves; one request each where the service has no $expand)")
    node: str | None = Field(None, description="the node this BMC meters (tag `node`), on a facility poller")
    role: Literal["it", "cooling", "facility_total", "other"] | None = Field(
        None, description="for PUE, what a rack PDU or power shelf service meters (tag `role` of its pdu rows): "
                          "IT load, cooling, the facility total")
    site: str | None = Field(None, description="tag `site`")
    room: str | None = Field(None, description="tag `room`")
    row: str | None = Field(None, description="tag `row`")
    rack: str | None = Field(None, description="tag `rack`")

    @field_validator("ca_file")
    @classmethod
    def _ca(cls, v):
        if v is not None and not Path(v).is_file():
            raise ValueError(f"{v}: no such file (a PEM CA bundle)")
        return v

    def tags(self) -> dict[str, str]:
        return {k: v for k, v in (("target", self.name), ("node", self.node), ("site", self.site),
                                  ("room", self.room), ("row", self.row), ("rack", self.rack)) if v}

    def auth_of(self, where: str) -> Auth:
        password = read_secret(f"{where}.password", self.password_file, self.password_env)
        if password is None and self.password is not None:
            password = self.password.get_secret_value()
        return Auth(self.user, password, self.auth)


class RedfishOptions(CollectorOptions):
    targets: list[TargetOptions] = Field(default_factory=list)
    max_in_flight: int = Field(64, ge=1, le=512, description="targets polled at the same time (a sweep takes about "
                                                             "targets x requests x BMC latency / this)")
    rediscover: PositiveDuration = Field(3600.0, description="walk each service again this often (new chassis, "
                                                             "replaced PSUs); at once when a resource disappears")
    discovery_deadline: PositiveDuration = Field(60.0, description="a whole discovery of one target")

    def unique_keys(self) -> list[tuple[tuple, str, str]]:
        return [(("targets", i, "name"), t.name, "its counters and session") for i, t in enumerate(self.targets)]


class Target:
    def __init__(self, opts: TargetOptions, auth: Auth) -> None:
        self.opts = opts
        self.client = RedfishClient(opts.url, auth, opts.timeout, opts.ca_file, verify=not opts.insecure,
                                    max_answer=opts.max_answer_size)
        self.plan: Plan | None = None
        self.discovered_at = 0.0
        self.busy = False
        self.state = "new"
        self.last_error: str | None = None
        self.said: tuple[tuple, tuple] = ((), ())  # skipped resources and refused readings already logged
        self.seen: dict[str, dict] = {}  # what an unfinished discovery read: the next one goes on from it


class RedfishCollector(Collector):
    kind = "redfish"
    Options = RedfishOptions
    METRICS = _metrics()
    default_enabled = False
    cli = "collectors.redfish.cli:add_parser"  # `aifactory redfish probe`

    def __init__(self, options: RedfishOptions, ctx) -> None:
        super().__init__(options, ctx)
        self.models = load_models()
        self.targets = [Target(t, t.auth_of(f"collectors.redfish.targets[{t.name}]")) for t in options.targets]
        for t in options.targets:
            if t.insecure and t.url.startswith("https"):
                log.warning("redfish %s: TLS certificate verification is off (insecure: true); prefer ca_file",
                            t.name)
            elif t.url.startswith("http:") and t.user:
                log.warning("redfish %s: credentials sent over plain http", t.name)
        self.pool: ThreadPoolExecutor | None = None
        self.counters = EnergyCounters(ctx.state_dir / "redfish-counters.json" if ctx.state_dir else None)

    def _poll_target(self, t: Target, end: float) -> tuple[PollResult | None, str | None]:
        """(the poll, None) or (None, why it could not poll). Runs in the pool."""
        try:
            now = time.monotonic()
            if t.plan is None or now - t.discovered_at > self.options.rediscover:
                walker = Remembering(t.client, t.seen)
                try:
                    t.plan = discover(walker, self.models, now + self.options.discovery_deadline,
                                      (lambda ch: ch.id in t.opts.chassis) if t.opts.chassis else None,
                                      t.opts.electrical)
                except TimeoutError:
                    raise TimeoutError(f"discovery not complete within discovery_deadline "
                                       f"({self.options.discovery_deadline:g} s): {len(t.seen)} resources read "
                                       "so far, kept; the next poll goes on from there") from None
                t.seen.clear()  # the next discovery (rediscover, a resource gone) reads everything afresh
                t.discovered_at = time.monotonic()
                log.info("redfish %s: %d chassis, %d resources to poll (%d requests to discover): %s",
                         t.opts.name, len(t.plan.chassis), len(t.plan.resources), t.plan.discovery_requests,
                         "; ".join(f"{c}: {', '.join(m) or 'nothing readable'}" for c, m in t.plan.models.items()))
            deadline = min(time.monotonic() + t.opts.deadline, end)
            result = poll(t.client, self.models, t.plan, deadline)
            if result.missing:
                t.plan = None  # a PSU pulled, a sensor gone: walk the service again next time
            return result, None
        except (RedfishError, TimeoutError, OSError) as e:  # the client logs in again itself when it can
            return None, str(e) or type(e).__name__
        except Exception as e:  # whatever one target's answers provoke stays with that target
            return None, f"{type(e).__name__}: {e}"
        finally:
            t.busy = False

    def collect(self, acc: Accumulator) -> None:
        if not self.targets:
            raise NotPresent("no Redfish targets configured")
        if self.pool is None:
            self.pool = ThreadPoolExecutor(self.options.max_in_flight, thread_name_prefix="redfish")
        t0 = time.monotonic()
        end = t0 + (self.ctx.timeout or 30.0) * 0.9
        futures = {}
        for t in self.targets:
            if t.busy:
                self._report(acc, t, None, "discovery or a previous poll still running" if t.plan is None
                             else "previous poll still running past its deadline", 0.0)
                continue
            t.busy = True
            futures[self.pool.submit(self._poll_target, t, end)] = (t, time.monotonic())
        done, _ = wait(futures, timeout=max(0.0, end - time.monotonic()))
        for f, (t, started) in futures.items():
            if f in done:
                result, error = f.result()
                self._report(acc, t, result, error, time.monotonic() - started)
            else:
                self._report(acc, t, None, "discovering" if t.plan is None else
                             f"no complete answer within {end - started:.3g} s", end - started)
        self.counters.save()

    def _report(self, acc: Accumulator, t: Target, result: PollResult | None, error: str | None,
                duration: float) -> None:
        tags = t.opts.tags()
        readings: list[Reading] = result.readings if result else []
        if result is not None:
            error = result.error or (f"{len(result.missing)} resources disappeared: {', '.join(result.missing[:3])}"
                                     if result.missing else None)
        rows: dict[tuple, tuple[str, dict, dict]] = {}
        refused = []
        now = acc.ts / 1e9
        for r in readings:
            value = r.value
            limit = r.limit_watts or DEVICE_LIMIT_WATTS
            what = f"{r.tags.get('chassis')} {r.tags.get('component') or r.tags.get('sensor') or ''}".strip()
            if r.field == "energy_joules_total":
                key = f"{t.opts.name}|{r.tags['chassis']}|{r.tags.get('component')}|{r.tags.get('scope')}"
                u = self.counters.reading(key, value, now, max_watts=limit)
                if u.event == "refused":
                    refused.append((f"{what} energy", f"{value!r}: {u.reason}"))
                elif u.event == "reset":
                    log.warning("redfish %s: energy counter of %s was reset; kept monotonic", t.opts.name, what)
                if u.value is None:
                    continue
                value = u.value
            elif r.measurement == "bmc_power" and r.field.startswith("power_") and r.field.endswith("_watts"):
                if value < 0 or value > limit * LIMIT_HEADROOM:
                    refused.append((f"{what} {r.field}", f"{value!r}: outside 0..{limit:g} W x {LIMIT_HEADROOM:g}"))
                    continue
            measurement, rtags = family_of(r, t.opts.name, t.opts.role)
            k = (measurement, tuple(sorted(rtags.items())))
            row = rows.get(k)
            if row is None:
                row = rows[k] = (measurement, {}, {**tags, **rtags})
            row[1][r.field] = value
        for measurement, fields, rtags in rows.values():
            acc.add(measurement, fields, rtags)
        up = result is not None and not result.auth_failed and bool(result.readings or not result.error)
        changed = up != (t.state == "up") or (error or None) != t.last_error
        if changed:
            if up and not error:
                log.info("redfish %s (%s): polling %d resources", t.opts.name, t.opts.url,
                         len(t.plan.resources) if t.plan else 0)
            elif error:
                log.error("redfish %s (%s): %s", t.opts.name, t.opts.url, error)
        t.state, t.last_error = ("up" if up else "down"), error
        fields = {"up": up, "poll_duration_seconds": round(duration, 6), "readings": len(readings) - len(refused),
                  "error": error}
        if result is not None:
            fields.update(requests=result.requests, missing_resources=len(result.missing),
                          skipped_resources=len(result.skipped), refused_readings=len(refused))
            said = (tuple(result.skipped), tuple(k for k, _ in refused))
            if said != t.said and not result.error:  # logged when the set changes (on whole polls), not every poll
                for x in set(result.skipped) - set(t.said[0]):
                    log.warning("redfish %s: left out: %s", t.opts.name, x)
                for k, why in refused:
                    if k not in t.said[1]:
                        log.warning("redfish %s: refused %s %s", t.opts.name, k, why)
                t.said = said
        if t.plan is not None:
            fields["chassis"] = len(t.plan.chassis)
            fields["model"] = "; ".join(f"{c}: {', '.join(m)}" for c, m in t.plan.models.items())[:500]
        acc.add("redfish_target", fields, tags)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        for t in self.targets:
            if not t.busy:
                t.client.close()
        self.counters.save()
