"""SNMP collector: PDUs, UPSes, cooling units and environment sensors from declarative profiles.

Runs on the nodes chosen as facility pollers (off by default). All devices are polled
concurrently on one pysnmp engine with a bound on requests in flight; each device has its
own deadline, so a dead device costs about one timeout and never delays the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from agent.collector import Collector, NotPresent
from agent.config import CollectorOptions, Host, PositiveDuration, SecretFile, Strict
from agent.logonce import Latch
from agent.model import Accumulator, Kind, Metric
from agent.secrets import read_secret
from collectors.common.energy import EnergyCounters
from collectors.common.families import FACILITY_FAMILIES, family_metrics
from collectors.common.profile import Profile, norm_oid
from collectors.common.profile.evaluate import evaluate
from collectors.common.profile.plan import plan_of
from collectors.common.profile.samples import DeviceCounters, within_deadline

from .client import SYS_DESCR, SYS_OBJECT_ID, Credentials, DeviceError
from .match import candidates, load_profiles

log = logging.getLogger(__name__)

DEVICE_TAGS = ("host", "device", "role", "site", "room", "row", "rack", "vendor", "profile")


def _metrics() -> tuple[Metric, ...]:
    out = list(family_metrics(*FACILITY_FAMILIES))  # any facility family a profile fills
    out += [
        Metric("snmp_device", "up", Kind.GAUGE, "bool", "the device answered this poll", DEVICE_TAGS),
        Metric("snmp_device", "poll_duration_seconds", Kind.GAUGE, "seconds", "wall time of the poll", DEVICE_TAGS),
        Metric("snmp_device", "readings", Kind.GAUGE, "count", "readings the profile produced", DEVICE_TAGS),
        Metric("snmp_device", "error", Kind.INFO, "info", "why the last poll failed, or why it gave no readings "
               "(absent when it gave readings)", DEVICE_TAGS),
        Metric("snmp_device", "state", Kind.INFO, "info", "up (readings), empty (it answered, the profile found "
               "nothing to read: see error) or down", DEVICE_TAGS),
    ]
    return tuple(out)


class DeviceOptions(Strict):
    """One facility device polled over SNMP."""

    name: str = Field(..., description="the device's name: tag `device`")
    host: Host = Field(..., description="address or host name")
    port: int = Field(161, ge=1, le=65535, description="UDP port")
    profile: str = Field("auto", description="a profile name, or auto (sysObjectID, then sysDescr)")
    version: Literal["v2c", "v3"] = Field("v2c", description="SNMP version")
    community: SecretStr | None = Field(None, description="prefer community_file / community_env")
    community_file: SecretFile = Field(None, description="file holding the v2c community (or a credential name)")
    community_env: str | None = Field(None, description="environment variable holding the v2c community")
    v3_user: str | None = Field(None, description="SNMPv3 user name")
    v3_auth_proto: Literal["MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"] | None = Field(
        None, description="SNMPv3 authentication protocol")
    v3_auth_key_file: SecretFile = Field(None, description="file holding the authentication key (8+ characters)")
    v3_priv_proto: Literal["DES", "AES", "AES128", "AES192", "AES256"] | None = Field(
        None, description="SNMPv3 privacy protocol (needs authentication)")
    v3_priv_key_file: SecretFile = Field(None, description="file holding the privacy key (8+ characters)")
    v3_context: str = Field("", description="SNMPv3 context name")
    timeout: PositiveDuration = Field(2.0, description="per request")
    retries: int = Field(1, ge=0, le=5, description="retransmissions per request")
    role: Literal["it", "cooling", "facility_total", "other"] = Field(
        "other", description="what the device meters, for PUE: IT load, cooling, the facility total")
    site: str | None = Field(None, description="tag `site` of the device's samples")
    room: str | None = Field(None, description="tag `room`")
    row: str | None = Field(None, description="tag `row`")
    rack: str | None = Field(None, description="tag `rack`")

    @model_validator(mode="after")
    def _check(self):
        if self.version == "v3" and not self.v3_user:
            raise ValueError("version v3 needs v3_user")
        if self.version == "v3":
            from agent.secretfile import check_secret_file

            if self.v3_priv_proto and not self.v3_auth_proto:
                raise ValueError("v3_priv_proto needs v3_auth_proto: SNMPv3 has no privacy without authentication")
            for proto, key_file, what in ((self.v3_auth_proto, self.v3_auth_key_file, "v3_auth_key_file"),
                                          (self.v3_priv_proto, self.v3_priv_key_file, "v3_priv_key_file")):
                if proto and not key_file:
                    raise ValueError(f"{what} is needed with {what.replace('_key_file', '_proto')} {proto}")
                key = check_secret_file(key_file)
                if key is not None and len(key) < 8:
                    raise ValueError(f"{what}: an SNMPv3 key has at least 8 characters (RFC 3414), "
                                     f"this one has {len(key)}")
        return self

    def credentials(self, where: str) -> Credentials:
        if self.version == "v2c":
            community = read_secret(f"{where}.community", self.community_file, self.community_env)
            if community is None:
                community = self.community.get_secret_value() if self.community else "public"
            return Credentials("v2c", community=community)
        return Credentials("v3", user=self.v3_user or "", auth_proto=self.v3_auth_proto,
                           auth_key=read_secret(f"{where}.v3_auth_key_file", self.v3_auth_key_file),
                           priv_proto=self.v3_priv_proto,
                           priv_key=read_secret(f"{where}.v3_priv_key_file", self.v3_priv_key_file),
                           context=self.v3_context)

    def tags(self) -> dict[str, str]:
        return {k: v for k, v in (("device", self.name), ("role", self.role), ("site", self.site),
                                  ("room", self.room), ("row", self.row), ("rack", self.rack)) if v}


class SnmpOptions(CollectorOptions):
    devices: list[DeviceOptions] = Field(default_factory=list)
    max_in_flight: int = Field(32, ge=1, description="devices polled at the same time")
    pue_window: PositiveDuration | None = Field(
        None, description="deprecated, read by nobody: PUE is the facility collector's (collectors.facility."
                          "pue_window); accepted for one release so that existing configurations still load")

    @model_validator(mode="after")
    def _moved(self):
        if self.pue_window is not None:
            log.warning("collectors.snmp.pue_window is deprecated and ignored: set collectors.facility.pue_window")
        return self

    def unique_keys(self) -> list[tuple[tuple, str, str]]:
        return [(("devices", i, "name"), t.name, "its counters and series") for i, t in enumerate(self.devices)]


class Device:
    def __init__(self, opts: DeviceOptions, creds: Credentials) -> None:
        self.opts = opts
        self.creds = creds
        self.profile: Profile | None = None
        self.latch = Latch(log, unknown="not polled yet")  # the first poll that reads, each new cause, recovery
        # Tables this device does not have (a walk found nothing): skipped, re-checked every RECHECK polls.
        self.absent: dict[str, int] = {}

    RECHECK = 30

    def walks(self, subtrees: list[str]) -> list[str]:
        out = []
        for st in subtrees:
            left = self.absent.get(st)
            if left:
                self.absent[st] = left - 1
            else:
                out.append(st)
        return out

    def learn(self, walked: list[str], counts: dict[str, int]) -> None:
        for st in walked:
            if counts.get(st):
                self.absent.pop(st, None)
            else:
                self.absent[st] = self.RECHECK


async def detect_profile(found: list[Profile], answers) -> Profile | None:
    """The first candidate the device confirms: a profile with a probe object is chosen only if the device
    answers it (`await answers(oid)`: Geist V3 or Vertiv V5 on one enterprise number; a standard MIB on an
    unknown device); one without a probe is chosen as it stands. Asked once per device: the choice is kept."""
    for p in found:
        if p.match.probe is None or await answers(p.match.probe):
            return p
    return None


def missing_objects(profile: Profile, data: dict) -> list[str]:
    """The profile's scalars and tables the device answered nothing for."""
    scalars, columns = plan_of(profile).required
    keys = list(data)
    out = [s for s in scalars if s not in data]
    out += [c for c in columns if not any(k == c or k.startswith(c + ".") for k in keys)]
    return out


async def poll_device(client, profiles: dict[str, Profile], dev: Device) -> tuple[Profile, dict]:
    o = dev.opts
    if dev.profile is None:
        if o.profile != "auto":
            if o.profile not in profiles:
                raise DeviceError(f"unknown profile {o.profile!r}")
            dev.profile = profiles[o.profile]
        else:
            ident = await client.get(dev.creds, o.host, o.port, [SYS_OBJECT_ID, SYS_DESCR], o.timeout, o.retries)
            if SYS_OBJECT_ID not in ident:
                raise DeviceError("no sysObjectID: not an SNMP agent we can identify")
            descr, oid = (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                          for v in (ident.get(SYS_DESCR, b""), ident[SYS_OBJECT_ID]))
            async def answers(probe: str) -> bool:
                counts: dict[str, int] = {}
                await client.walk(dev.creds, o.host, o.port, [probe], o.timeout, o.retries, max_repetitions=2,
                                  counts=counts)
                return bool(counts.get(probe) or counts.get(norm_oid(probe)))

            dev.profile = await detect_profile(candidates(profiles, oid, descr), answers)
            if dev.profile is None:
                raise DeviceError(f"no profile matches sysObjectID {oid} ({descr[:60]!r}), and the device answers "
                                  "no standard MIB we read (UPS-MIB, ENTITY-SENSOR-MIB)")
    scalars, columns = plan_of(dev.profile).required
    data: dict = {}
    if scalars:
        data.update(await client.get(dev.creds, o.host, o.port, scalars, o.timeout, o.retries))
    walks = dev.walks(columns)
    if walks:
        counts: dict[str, int] = {}
        data.update(await client.walk(dev.creds, o.host, o.port, walks, o.timeout, o.retries, counts=counts))
        dev.learn(walks, counts)
    return dev.profile, data


class SnmpCollector(Collector):
    kind = "snmp"
    Options = SnmpOptions
    METRICS = _metrics()
    default_enabled = False
    cli = "collectors.snmp.cli:add_parser"  # `aifactory snmp probe|walk`

    def __init__(self, options: SnmpOptions, ctx) -> None:
        super().__init__(options, ctx)
        self.profiles = load_profiles()
        self.devices = [Device(d, d.credentials(f"collectors.snmp.devices[{d.name}]")) for d in options.devices]
        self.client = None
        self.counters = DeviceCounters(
            EnergyCounters(ctx.state_dir / "snmp-counters.json" if ctx.state_dir else None), "snmp")

    async def collect(self, acc: Accumulator) -> None:
        if not self.devices:
            raise NotPresent("no SNMP devices configured")
        if self.client is None:
            from .client import SnmpClient

            self.client = SnmpClient()
            self.slots = asyncio.Semaphore(self.options.max_in_flight)
        # Every device finishes (answer, error or its own deadline) before the run's deadline, so the samples
        # of the devices that did answer always leave (the facility collector sums them).
        end = time.monotonic() + (self.ctx.timeout or 1e9) * 0.9
        await asyncio.gather(*(self._one(d, acc, end) for d in self.devices))
        self.counters.save()  # before the samples leave: an emitted value is never ahead of the saved state

    async def _one(self, dev: Device, acc: Accumulator, end: float) -> None:
        tags = dev.opts.tags()
        t0 = time.perf_counter()
        try:
            async with self.slots:  # the deadline (and the measured duration) starts at the device's turn
                t0 = time.perf_counter()
                profile, data = await within_deadline(poll_device(self.client, self.profiles, dev),
                                                      dev.opts.timeout, dev.opts.retries, end)
            readings = evaluate(profile, data, {**tags, "profile": profile.name})
            for measurement, fields, rtags in self.counters.samples(dev.opts.name, tags.keys() | {"profile"},
                                                                    readings):
                acc.add(measurement, fields, rtags)
            ok, error = True, None
            readings = [r for r in readings if r.value is not None]
            if not readings:
                gone = missing_objects(profile, data)
                error = (f"profile {profile.name}: no readings; nothing at "
                         f"{', '.join(gone[:4])}{' ...' if len(gone) > 4 else ''}" if gone else
                         f"profile {profile.name}: no readings; the device answered {len(data)} values, all "
                         "'not supported' sentinels or filtered out")
        except (DeviceError, TimeoutError, OSError) as e:
            ok, error = False, str(e) or type(e).__name__
            readings = []
        except Exception as e:  # anything one device (or pysnmp on its credentials) raises stays with it
            ok, error = False, f"{type(e).__name__}: {e}"
            readings = []
        state = "down" if not ok else ("empty" if error else "up")
        if error is None:
            dev.latch.recovered("snmp device %s (%s): polling with profile %s", dev.opts.name, dev.opts.host,
                                dev.profile.name if dev.profile else "?")
        else:
            dev.latch.failed(error, "snmp device %s (%s:%d): %s", dev.opts.name, dev.opts.host, dev.opts.port, error,
                             level=logging.WARNING if state == "empty" else logging.ERROR)
        dtags = {**tags, "profile": dev.profile.name if dev.profile else "unknown"}
        acc.add("snmp_device", {"up": ok, "state": state, "poll_duration_seconds": round(time.perf_counter() - t0, 6),
                                "readings": len(readings), "error": error}, dtags)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

