"""Efficiency collector: tokens per joule over a sliding window, from counter deltas only.

Inputs are cumulative counters other collectors published on the agent's sample bus (the gpu
collector's `energy_joules_total` per GPU, the inference collector's token counters with their
`gpus` attribution) plus the host's RAPL energy counters read here from /sys/class/powercap. Each
counter keeps a short history of (timestamp, value); both ends of the window are interpolated on
that history, so tokens and joules are always counted over exactly the same interval, whatever the
collectors' phases. A sampled power reading is never used (house style 7).

Scopes (tag `scope`):
- gpu: tokens of the servers attributed to that GPU (a server on N GPUs gives each 1/N of its tokens)
  per joule of that GPU;
- model: tokens of one server/model per joule of its GPUs (a GPU shared by K servers gives each 1/K);
- node: all tokens on the node per joule of the best meter of the whole node available, in the order of
  `node_meter` (tag `meter`): its PDU outlets (`node_energy`), its BMC's PSU inputs, its BMC's chassis
  reading, or the sum of its components: GPUs plus the CPU packages (RAPL), tagged partial=true, since fans,
  NICs, drives and PSU losses are left out (energy_source gpu or gpu+rapl). A GPU whose energy is its Grace
  module's (scope=gpu_module) already counts the module's CPU: no CPU energy is added to it.
Idle is not an error: no tokens gives tokens_per_joule 0 and no joules_per_token.

Energy balance (measurement energy_balance, per node and window): the node meter's energy against the sum of
the components; the residual is what the node spends outside GPUs and CPUs. Components above the meter mean a
meter is wrong (default rule EnergyComponentsExceedMeter).
"""

from __future__ import annotations

import bisect
import logging
import zlib
from collections import deque
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from agent.collector import Collector, NotPresent
from agent.config import CollectorOptions, PositiveDuration, Strict
from agent.influxql import QueryError
from agent.model import Accumulator, Kind, Metric
from collectors.common.counters import MonotonicCounters

from .fleet import FleetOptions, FleetTokens, RackSums

log = logging.getLogger(__name__)

TAGS = ("host", "scope", "gpu", "endpoint", "server", "model", "rack", "energy_source", "meter", "partial")
BALANCE_TAGS = ("host", "scope", "rack", "meter", "meter_source")
WINDOW_TAGS = ("rack", "meter")  # no host: one series per rack keeps the poller's query cheap (bench/fleet_scale)
G = Kind.GAUGE
METRICS = (
    Metric("efficiency", "tokens_per_joule", G, "tokens_per_joule", "prompt + generated tokens per joule", TAGS),
    Metric("efficiency", "generation_tokens_per_joule", G, "tokens_per_joule", "generated tokens per joule", TAGS),
    Metric("efficiency", "joules_per_token", G, "joules_per_token", "joules per prompt + generated token", TAGS),
    Metric("efficiency", "generation_joules_per_token", G, "joules_per_token", "joules per generated token", TAGS),
    Metric("efficiency", "tokens_per_second", G, "tokens_per_second", "prompt + generated tokens per second", TAGS),
    Metric("efficiency", "generation_tokens_per_second", G, "tokens_per_second", "generated tokens per second",
           TAGS),
    Metric("efficiency", "window_energy_joules", G, "joules", "energy over the window", TAGS),
    Metric("efficiency", "window_seconds", G, "seconds", "length of the window", TAGS),
    Metric("energy_balance", "meter_energy_joules", G, "joules", "the node meter's energy over the window",
           BALANCE_TAGS),
    Metric("energy_balance", "components_energy_joules", G, "joules", "GPUs + CPU packages over the window",
           BALANCE_TAGS),
    Metric("energy_balance", "gpu_energy_joules", G, "joules", "the GPUs' energy over the window (NVML)",
           BALANCE_TAGS),
    Metric("energy_balance", "cpu_energy_joules", G, "joules", "the CPU packages' energy over the window (RAPL; "
           "absent where a GPU's figure is its Grace module's)", BALANCE_TAGS),
    Metric("energy_balance", "residual_energy_joules", G, "joules", "meter - components: fans, NICs, drives, "
           "memory outside RAPL, PSU losses", BALANCE_TAGS),
    Metric("energy_balance", "residual_watts", G, "watts", "the residual as mean power over the window",
           BALANCE_TAGS),
    Metric("energy_balance", "residual_percent", G, "percent", "the residual, percent of the node meter",
           BALANCE_TAGS),
    Metric("energy_balance", "meter_watts", G, "watts", "the node meter's mean power over the window",
           BALANCE_TAGS),
    Metric("energy_balance", "components_watts", G, "watts", "the components' mean power over the window",
           BALANCE_TAGS),
    Metric("energy_balance", "components_exceed_meter", G, "bool", "the components measure more than the meter "
           "plus components_tolerance_percent: one of the meters is wrong", BALANCE_TAGS),
    Metric("energy_balance", "residual_in_band", G, "bool", "the residual percent is inside residual_band",
           BALANCE_TAGS),
    Metric("energy_balance", "window_seconds", G, "seconds", "length of the window", BALANCE_TAGS),
    Metric("energy_balance", "nodes_reporting", G, "1", "rack scope: nodes whose windows were summed (node "
           "windows / windows per rack window)", BALANCE_TAGS),
    Metric("energy_balance", "partial_nodes", G, "1", "rack scope: of those, nodes metered by GPUs + CPUs only "
           "(their rest of node counts in the residual)", BALANCE_TAGS),
    Metric("node_window", "tokens", G, "tokens", "prompt + generated tokens in the window", WINDOW_TAGS),
    Metric("node_window", "generation_tokens", G, "tokens", "generated tokens in the window", WINDOW_TAGS),
    Metric("node_window", "energy_joules", G, "joules", "the node meter's energy in the window", WINDOW_TAGS),
    Metric("node_window", "window_seconds", G, "seconds", "length of the window (efficiency.window_grid)",
           WINDOW_TAGS),
    Metric("node_window", "partial", G, "1", "1 where the node meter is GPUs + CPUs only (summable)", WINDOW_TAGS),
    Metric("host_energy", "energy_joules_total", Kind.COUNTER, "joules",
           "RAPL energy of a CPU package (intel-rapl:N), kept monotonic across the register's wrap",
           ("host", "zone", "source", "scope")),
)


class NodeEnergySource(Strict):
    """Energy counters of the series that meter this node, summed (two PSUs on two outlets, say)."""

    measurement: str = Field("pdu", description="measurement of the meter's series")
    field: str = Field("energy_joules_total", description="its energy counter (joules)")
    tags: dict[str, str] = Field(..., description="tags a series must have, e.g. {device: pdu-r12-a, outlet: '5'}")


class EfficiencyOptions(CollectorOptions):
    window: PositiveDuration = Field(60.0, description="sliding window of the rates and ratios")
    rapl: bool = Field(True, description="add the CPU packages' RAPL energy to the node scope where present")
    node_energy: NodeEnergySource | None = Field(
        None, description="a meter of the whole node (e.g. its PDU outlets, polled by this agent's snmp collector): "
                          "the node scope uses it instead of GPUs + RAPL")
    node_meter: list[Literal["outlet", "psu_input", "chassis", "components"]] = Field(
        ["outlet", "psu_input", "chassis", "components"],
        description="meters of the whole node, best first: its PDU outlets (node_energy), its BMC's PSU inputs, "
                    "its BMC's chassis reading (redfish or DCMI), the sum of GPUs and CPUs (partial)")
    residual_band: tuple[float, float] = Field(
        (5.0, 45.0), description="expected residual (node meter - GPUs - CPUs), percent of the node meter")
    components_tolerance_percent: float = Field(
        5.0, ge=0, description="components above the meter by more than this: a meter is wrong")
    fleet: FleetOptions | None = Field(
        None, description="on a facility poller: read the fleet's token counters from InfluxDB for the rack "
                          "and facility scopes")
    fleet_window: PositiveDuration = Field(900.0, description="window of the rack and facility scopes (a multiple "
                                                               "of fleet.grid)")
    window_grid: PositiveDuration = Field(
        60.0, description="every node writes its tokens and node-meter energy for each window of this "
                          "epoch-aligned grid (measurement node_window), which a facility poller sums per rack")


    @model_validator(mode="after")
    def _check(self):
        lo, hi = self.residual_band
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"residual_band: expected [low, high] percent with 0 <= low < high <= 100, got {[lo, hi]}")
        if not self.node_meter:
            raise ValueError("node_meter: name at least one meter (components is always available where GPUs are)")
        if self.fleet is not None:
            ratio = self.fleet_window / self.fleet.grid
            if abs(ratio - round(ratio)) > 1e-9 or ratio < 1:
                raise ValueError(f"fleet_window ({self.fleet_window:g} s) must be a multiple of fleet.grid "
                                 f"({self.fleet.grid:g} s)")
        return self


# A BMC's power is integrated between samples at most this far apart; across a longer gap the integral
# starts again (no window spans it) rather than guess what happened in between.
MAX_GAP_NS = 300 * 10**9
KWH = 3.6e6  # an energy counter whose every value is a whole number of kWh is too coarse for a window


class History:
    """(ts_ns, value) of one counter, long enough to interpolate the start of the window."""

    def __init__(self) -> None:
        self.ts: deque[int] = deque()
        self.values: deque[float] = deque()

    def add(self, ts: int, value: float) -> None:
        if self.ts and ts <= self.ts[-1]:
            return  # already seen (the bus keeps the latest sample until the next run)
        self.ts.append(ts)
        self.values.append(value)

    def trim(self, before: int) -> None:
        while len(self.ts) > 2 and self.ts[1] <= before:
            self.ts.popleft()
            self.values.popleft()

    def at(self, t: int) -> float | None:
        """Linear interpolation of the cumulative counter at t; None outside the history."""
        if not self.ts or t < self.ts[0] or t > self.ts[-1]:
            return None
        i = bisect.bisect_left(self.ts, t)
        if self.ts[i] == t:
            return self.values[i]
        t0, t1, v0, v1 = self.ts[i - 1], self.ts[i], self.values[i - 1], self.values[i]
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0)


# llama.cpp prints its counters with printf's %g: 6 significant digits, so above a million tokens a counter
# moves in steps of 10^(digits - 6) (12,345,678 prints as 1.23457e+07: steps of 100). A window whose token
# delta is under RESOLVED x that step is refused rather than reported with up to 1% error or more.
ROUNDED_SERVERS = ("llamacpp",)
RESOLVED = 100


def token_step(server: str, value: float) -> float:
    """The smallest change a server's printed token counter can show at this value (1: exact)."""
    if server not in ROUNDED_SERVERS or value < 1e6:
        return 1.0
    return 10.0 ** (len(str(int(value))) - 6)


def window_offset(host: str, end_ns: int) -> int:
    """A node's row of one window is stamped end + this offset (under a second): rows of one rack share a
    series (no host tag, so the poller's query reads racks, not nodes), and distinct timestamps keep InfluxDB
    from merging them. Deterministic, so a row sent again overwrites itself; drawn anew for every window, so
    two nodes of a rack meet on one nanosecond with probability 5e-7 a window for 32 nodes (docs/energy.md),
    never twice in a row."""
    return zlib.crc32(f"{host}|{end_ns}".encode()) % 999_999_937


def ratios(tokens: float, gen: float, energy: float | None, seconds: float) -> dict[str, float]:
    out = {"tokens_per_second": tokens / seconds, "generation_tokens_per_second": gen / seconds,
           "window_seconds": seconds}
    if energy is not None and energy > 0:
        out["window_energy_joules"] = energy
        out["tokens_per_joule"] = tokens / energy
        out["generation_tokens_per_joule"] = gen / energy
        if tokens > 0:
            out["joules_per_token"] = energy / tokens
        if gen > 0:
            out["generation_joules_per_token"] = energy / gen
    return {k: round(v, 9) for k, v in out.items()}


class EfficiencyCollector(Collector):
    kind = "efficiency"
    Options = EfficiencyOptions
    METRICS = METRICS
    consumes = ("gpu", "inference", "snmp", "redfish", "ipmi")  # energy, power and token counters from the bus

    def __init__(self, options: EfficiencyOptions, ctx) -> None:
        super().__init__(options, ctx)
        self.hist: dict[tuple, History] = {}
        self._unresolved_told: set[tuple] = set()  # llama.cpp series already warned about
        self.module_gpus: set[str] = set()  # GPUs whose energy is their Grace module's
        self.rapl = MonotonicCounters(ctx.state_dir / "rapl-counters.json" if ctx.state_dir else None)
        self.fleet = FleetTokens(options.fleet) if options.fleet else None
        self.integrals: dict[tuple, tuple[int, float, float]] = {}  # key -> (ts, watts, joules so far)
        self.bmc: dict[str, tuple[str, list[tuple]]] = {}  # meter -> (source, history keys summed)
        self._meter_told: str | None = None
        self._published: int | None = None  # the end of the last node window written
        self._fleet_t1: int | None = None  # the end of the last fleet window computed

    def _integrate(self, key: tuple, ts: int, watts) -> None:
        """A power reading becomes a cumulative energy counter (trapezoids between readings)."""
        if isinstance(watts, bool) or not isinstance(watts, (int, float)):
            return
        prev = self.integrals.get(key)
        if prev is not None and ts <= prev[0]:
            return
        joules = 0.0
        if prev is not None:
            if ts - prev[0] <= MAX_GAP_NS:
                joules = prev[2] + (prev[1] + watts) / 2 * (ts - prev[0]) / 1e9
            else:
                self.hist.pop(key, None)  # no window across the gap
                joules = prev[2]
        self.integrals[key] = (ts, float(watts), joules)
        self._see(key, ts, joules)

    def _bmc_meters(self, bus) -> None:
        """The node's BMC meters on the bus (redfish, then IPMI): PSU inputs summed, one chassis reading.
        Energy from the BMC's counter where it has joule resolution, else integrated power."""
        found: dict[str, dict[tuple, list[tuple[tuple, str]]]] = {"psu_input": {}, "chassis": {}}
        best: dict[tuple, tuple] = {}  # chassis group -> rank of the reading kept
        for measurement in ("redfish_power", "ipmi_power"):
            for s in bus.latest(measurement):
                scope = s.tags.get("scope")
                if scope not in found or s.tags.get("chassis_role", "node") != "node":
                    continue
                if s.tags.get("node") and s.tags.get("node") != s.tags.get("host"):
                    continue  # a poller's BMC of another node
                base = ("bmc", measurement, s.tags.get("target", ""), s.tags.get("chassis", ""),
                        s.tags.get("component", ""), scope)
                e, w = s.fields.get("energy_joules_total"), s.fields.get("power_watts")
                if isinstance(e, (int, float)) and not isinstance(e, bool) and e % KWH:
                    key = (*base, "counter")
                    self._see(key, s.ts, e)
                elif w is not None:
                    key = (*base, "power")
                    self._integrate(key, s.ts, w)
                else:
                    continue
                group = (measurement, base[2], base[3])
                reading = (key, s.tags.get("source", measurement))
                if scope == "chassis":
                    # one chassis reading per BMC chassis: a counter over a power, the chassis-wide one first
                    rank = (key[-1] != "counter", base[4] not in ("chassis", "dcmi"))
                    if group not in best or rank < best[group]:
                        best[group], found["chassis"][group] = rank, [reading]
                else:
                    found["psu_input"].setdefault(group, []).append(reading)
        self.bmc = {}
        for name in ("psu_input", "chassis"):
            groups = found[name]
            for measurement in ("redfish_power", "ipmi_power"):  # redfish first; never both for one meter
                keys, source = [], None
                for (m, _t, _c), readings in groups.items():
                    if m == measurement:
                        keys += [k for k, _ in readings]
                        source = readings[0][1]
                if keys:
                    self.bmc[name] = (source, keys)
                    break

    def _rapl(self, acc: Accumulator) -> None:
        root = Path(self.ctx.sys_root) / "class" / "powercap"
        for zone in sorted(root.glob("intel-rapl:*")):
            if zone.name.count(":") != 1:
                continue  # subzones (core, dram) are inside the package figure
            try:
                uj = int((zone / "energy_uj").read_text())
                wrap = int((zone / "max_energy_range_uj").read_text())
            except (OSError, ValueError):
                continue  # energy_uj is root-only on recent kernels: no RAPL, not an error
            joules, event = self.rapl.update(zone.name, uj / 1e6, wrap / 1e6)
            acc.add("host_energy", {"energy_joules_total": round(joules, 6)},
                    {"zone": zone.name, "source": "rapl", "scope": "cpu_package"})
            self._see(("rapl", zone.name), acc.ts, joules)

    def _see(self, key: tuple, ts: int, value) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.hist.setdefault(key, History()).add(ts, float(value))

    def collect(self, acc: Accumulator) -> None:
        bus = self.ctx.bus
        if self.options.rapl:
            self._rapl(acc)
        if bus is None:
            raise NotPresent("no sample bus")
        series: dict[tuple, dict] = {}  # (endpoint, model) -> tags
        for s in bus.latest("gpu"):
            if "gpu" in s.tags and "energy_joules_total" in s.fields:
                key = ("gpu", s.tags["gpu"])
                if (s.tags.get("scope") == "gpu_module") != (s.tags["gpu"] in self.module_gpus):
                    self.hist.pop(key, None)  # another counter from now on: no window across the change
                    self.module_gpus ^= {s.tags["gpu"]}
                self._see(key, s.ts, s.fields["energy_joules_total"])
        src = self.options.node_energy
        if src is not None:
            meters = [s for s in bus.latest(src.measurement) if src.field in s.fields
                      and all(s.tags.get(k) == v for k, v in src.tags.items())]
            if meters:
                self._see(("meter",), min(s.ts for s in meters), sum(float(s.fields[src.field]) for s in meters))
        for s in bus.latest("inference"):
            if "outcome" in s.tags:
                continue
            key = (s.tags.get("endpoint", ""), s.tags.get("model", ""))
            series[key] = s.tags
            for f in ("prompt_tokens_total", "generation_tokens_total"):
                if f in s.fields:
                    self._see(("tok", *key, f), s.ts, s.fields[f])
        self._bmc_meters(bus)
        if self.fleet is not None:
            self._fleet(acc, bus)
        chosen = self._node_meter()
        balanced = self._balance(acc, chosen)
        self._publish_windows(acc, series, chosen)
        if not series:
            if self.fleet is not None or balanced:
                return
            raise NotPresent("no token counters on this node (no inference server scraped)")
        self._compute(acc, series, chosen)

    def _window_deltas(self, keys: list[tuple]) -> tuple[dict[tuple, float], float] | None:
        """Deltas of these counters over one window ending at the newest instant all of them cover."""
        hs = [self.hist.get(k) for k in keys]
        if not keys or any(h is None or not h.ts for h in hs):
            return None
        window = int(self.options.window * 1e9)
        t1 = min(h.ts[-1] for h in hs)
        t0 = t1 - window
        out = {}
        for k, h in zip(keys, hs):
            a, b = h.at(t0), h.at(t1)
            if a is None or b is None:
                return None
            out[k] = max(0.0, b - a)
        return out, window / 1e9

    def _component_keys(self) -> tuple[list[tuple], list[tuple]]:
        """(GPU, CPU package) energy counters: no CPU where a GPU's energy is its Grace module's (it holds it)."""
        gpu = [k for k in self.hist if k[0] == "gpu"]
        return gpu, [] if self.module_gpus else [k for k in self.hist if k[0] == "rapl"]

    def _publish_windows(self, acc: Accumulator, series: dict[tuple, dict], chosen) -> None:
        """node_window rows for every grid window the node's counters now cover, each stamped with its end plus
        this node's offset in that window (window_offset)."""
        host = acc.global_tags.get("host", "")
        if chosen is not None:
            meter, keys, partial = chosen[0], chosen[2], 0
        elif "components" in self.options.node_meter:
            keys = [k for ks in self._component_keys() for k in ks]
            meter, partial = "components", 1
        else:
            return
        if not keys or any(not self.hist[k].ts for k in keys):
            return
        grid = int(self.options.window_grid * 1e9)
        covered = min(self.hist[k].ts[-1] for k in keys)
        end = covered - covered % grid
        start = self._published + grid if self._published is not None else end
        tok = [("tok", *k, f) for k in series for f in ("prompt_tokens_total", "generation_tokens_total")
               if ("tok", *k, f) in self.hist]
        for e in range(start, end + 1, grid):
            ds = [self.hist[k].at(e - grid) for k in keys], [self.hist[k].at(e) for k in keys]
            if any(x is None for x in ds[0] + ds[1]):
                continue  # the counters do not cover this window (the first one, or after a gap)
            energy = sum(max(0.0, b - a) for a, b in zip(*ds))
            prompt = gen = 0.0
            for k in tok:
                a, b = self.hist[k].at(e - grid), self.hist[k].at(e)
                if a is not None and b is not None:
                    d = max(0.0, b - a)
                    gen += d if k[-1] == "generation_tokens_total" else 0.0
                    prompt += d if k[-1] == "prompt_tokens_total" else 0.0
            acc.add("node_window", {"tokens": round(prompt + gen, 6), "generation_tokens": round(gen, 6),
                                    "energy_joules": round(energy, 6), "window_seconds": grid / 1e9,
                                    "partial": partial}, {"meter": meter}, ts=e + window_offset(host, e),
                    without=("host",))
        self._published = max(end, self._published or end)

    def _node_meter(self) -> tuple[str, str, list[tuple]] | None:
        """(meter, source, history keys) of the first configured whole-node meter with a full window."""
        for name in self.options.node_meter:
            if name == "outlet" and self.options.node_energy is not None:
                keys, source = [("meter",)], "meter"
            elif name in self.bmc:
                source, keys = self.bmc[name]
            else:
                continue
            if self._window_deltas(keys) is not None:
                return name, source, keys
        return None

    def _balance(self, acc: Accumulator, chosen) -> bool:
        gpu_keys, cpu_keys = self._component_keys()
        if chosen is None or not (gpu_keys or cpu_keys):
            return False
        name, source, keys = chosen
        latest = max(self.hist[k].ts[-1] for k in keys)
        window = int(self.options.window * 1e9)
        live = [k for k in gpu_keys + cpu_keys if self.hist[k].ts and self.hist[k].ts[-1] >= latest - 3 * window]
        gpu_keys, cpu_keys = [k for k in gpu_keys if k in live], [k for k in cpu_keys if k in live]
        if not live:
            return False
        got = self._window_deltas(keys + live)
        if got is None:
            return False
        d, seconds = got
        meter = sum(d[k] for k in keys)
        gpu = sum(d[k] for k in gpu_keys)
        cpu = sum(d[k] for k in cpu_keys)
        if meter <= 0:
            return False
        fields = self._balance_fields(meter, gpu + cpu, seconds)
        lo, hi = self.options.residual_band
        fields.update(gpu_energy_joules=round(gpu, 6), cpu_energy_joules=round(cpu, 6) if cpu_keys else None,
                      residual_in_band=lo <= 100.0 * (meter - (gpu + cpu)) / meter <= hi)
        acc.add("energy_balance", fields, {"scope": "node", "meter": name, "meter_source": source})
        return True

    def _balance_fields(self, meter: float, components: float, seconds: float) -> dict:
        """A meter's energy over a window against the sum of what it feeds (a node's GPUs and CPUs, a rack's
        node meters): the residual, and whether the components exceed the meter beyond its tolerance."""
        residual = meter - components
        fields = {"meter_energy_joules": meter, "components_energy_joules": components,
                  "residual_energy_joules": residual, "residual_watts": residual / seconds,
                  "residual_percent": 100.0 * residual / meter, "meter_watts": meter / seconds,
                  "components_watts": components / seconds, "window_seconds": seconds}
        fields = {k: round(v, 6) for k, v in fields.items()}
        fields["components_exceed_meter"] = components > meter * (1 + self.options.components_tolerance_percent / 100)
        return fields

    def _fleet(self, acc: Accumulator, bus) -> None:
        """Rack scope: the rack's tokens per joule of its IT PDUs; facility scope: all tokens per joule of
        the facility's total energy (or, with no facility_total meter, of its IT energy: tag energy_source)."""
        racks: dict[str, dict[str, float]] = {}  # rack -> device -> energy
        for s in bus.latest("pdu"):
            rack, dev, scope = s.tags.get("rack"), s.tags.get("device"), s.tags.get("scope")
            e = s.fields.get("energy_joules_total")
            if not rack or not dev or s.tags.get("role") != "it" or not isinstance(e, (int, float)):
                continue
            # a device's top-level meter: its total, else its inlets (summed), never both
            rank = {"device": 0, "inlet": 1}.get(scope or "", 9)
            cur = racks.setdefault(rack, {}).get(dev)
            if cur is None or rank < cur[0]:
                racks[rack][dev] = (rank, float(e), s.ts, {s.tags.get("inlet", "")})
            elif rank == cur[0] and rank == 1 and s.tags.get("inlet", "") not in cur[3]:
                racks[rack][dev] = (rank, cur[1] + float(e), max(cur[2], s.ts), cur[3] | {s.tags.get("inlet", "")})
        for rack, devs in racks.items():
            ts = min(v[2] for v in devs.values())
            self._see(("rack", rack), ts, sum(v[1] for v in devs.values()))
        for s in bus.latest("facility"):
            for f in ("total_energy_joules_total", "it_energy_joules_total"):
                if f in s.fields:
                    self._see(("facility", f), s.ts, s.fields[f])
        keys = [k for k in self.hist if k[0] in ("rack", "facility")]
        if not keys:
            return
        window = int(self.options.fleet_window * 1e9)
        grid = int(self.fleet.opts.grid * 1e9)
        # The newest grid boundary the meters cover and the nodes have had time to write (lag).
        t1 = min(min(self.hist[k].ts[-1] for k in keys), acc.ts - int(self.fleet.opts.lag * 1e9))
        t1 -= t1 % grid
        t0 = t1 - window
        for k in keys:
            self.hist[k].trim(t0)
        if t1 == self._fleet_t1:
            return  # this window is done; the next one ends on the next boundary
        energy = {k: (self.hist[k].at(t1) or 0.0) - a for k in keys if (a := self.hist[k].at(t0)) is not None}
        if not energy:
            return  # the first fleet window is not complete yet
        try:
            sums = self.fleet.windows(t0, t1)  # one row per rack
        except QueryError as e:
            raise RuntimeError(str(e)) from None  # the runner records and logs it; node scopes were added
        self._fleet_t1 = t1
        seconds = window / 1e9
        per_node = window / grid  # node windows in one rack window
        for k, e in energy.items():
            if k[0] != "rack":
                continue
            r = sums.get(k[1]) or RackSums()
            acc.add("efficiency", ratios(r.tokens, r.generation_tokens, e, seconds),
                    {"scope": "rack", "rack": k[1], "energy_source": "pdu"}, ts=t1)
            if r.node_windows and e > 0:
                fields = self._balance_fields(e, r.energy_joules, seconds)
                fields.update(nodes_reporting=round(r.node_windows / per_node, 2),
                              partial_nodes=round(r.partial_windows / per_node, 2))
                acc.add("energy_balance", fields,
                        {"scope": "rack", "rack": k[1], "meter": "rack_pdu", "meter_source": "snmp_pdu"}, ts=t1)
        fac = energy.get(("facility", "total_energy_joules_total"))
        source = "facility_total"
        if fac is None:
            fac, source = energy.get(("facility", "it_energy_joules_total")), "it"
        if fac is not None:
            tot = sum(r.tokens for r in sums.values())
            gen = sum(r.generation_tokens for r in sums.values())
            acc.add("efficiency", ratios(tot, gen, fac, seconds), {"scope": "facility", "energy_source": source},
                    ts=t1)

    def _compute(self, acc: Accumulator, series: dict[tuple, dict], chosen) -> None:
        window = int(self.options.window * 1e9)
        node = {k: h for k, h in self.hist.items() if k[0] in ("gpu", "tok", "rapl", "meter", "bmc")}
        latest = max(h.ts[-1] for h in node.values())
        live = {k: h for k, h in node.items() if h.ts[-1] >= latest - 3 * window}
        t1 = min(h.ts[-1] for h in live.values())  # the newest instant every live counter covers
        t0 = t1 - window
        for h in live.values():
            h.trim(t0 - 2 * int(self.options.window_grid * 1e9))  # the next node window may start before t0

        def delta(key: tuple) -> float | None:
            h = live.get(key)
            if h is None:
                return None
            a, b = h.at(t0), h.at(t1)
            return None if a is None or b is None else max(0.0, b - a)

        seconds = window / 1e9
        gpu_energy = {k[1]: d for k in live if k[0] == "gpu" and (d := delta(k)) is not None}
        if not any(h.at(t0) is not None for h in live.values()):
            return  # the first window is not complete yet
        tokens: dict[tuple, tuple[float, float]] = {}
        unresolved: set[tuple] = set()
        for key in series:
            p, g = delta(("tok", *key, "prompt_tokens_total")), delta(("tok", *key, "generation_tokens_total"))
            if p is not None or g is not None:
                tokens[key] = ((p or 0.0) + (g or 0.0), g or 0.0)
                step = max(token_step(series[key].get("server", ""), live[k].at(t1) or 0.0)
                           for k in (("tok", *key, "prompt_tokens_total"), ("tok", *key, "generation_tokens_total"))
                           if k in live)
                if step > 1 and (0 < tokens[key][0] < RESOLVED * step or 0 < tokens[key][1] < RESOLVED * step):
                    unresolved.add(key)
        if unresolved:
            # Those counters cannot resolve this window's tokens: every scope that would count them is refused.
            for key in sorted(unresolved - self._unresolved_told):
                log.warning("%s %s: counters printed with 6 significant digits move in steps too coarse for a "
                            "%g s window; its efficiency is not reported (widen efficiency.window)",
                            series[key].get("server", ""), key[0], seconds)
            self._unresolved_told |= unresolved
        gpus_of = {k: [g for g in series[k].get("gpus", "").split(",") if g in gpu_energy] for k in tokens}
        sharing: dict[str, int] = {}
        for gl in gpus_of.values():
            for g in gl:
                sharing[g] = sharing.get(g, 0) + 1
        per_gpu = {g: [0.0, 0.0] for g in gpu_energy}
        for k, (tot, gen) in tokens.items():
            for g in gpus_of[k]:
                per_gpu[g][0] += tot / len(gpus_of[k])
                per_gpu[g][1] += gen / len(gpus_of[k])
        refused_gpus = {g for k in unresolved for g in gpus_of[k]}
        for g, (tot, gen) in per_gpu.items():
            if g not in refused_gpus:
                acc.add("efficiency", ratios(tot, gen, gpu_energy[g], seconds), {"scope": "gpu", "gpu": g})
        for k, (tot, gen) in tokens.items():
            if k in unresolved:
                continue
            energy = sum(gpu_energy[g] / sharing[g] for g in gpus_of[k]) if gpus_of[k] else None
            tags = {"scope": "model", "endpoint": k[0], "model": k[1], "server": series[k].get("server", "")}
            acc.add("efficiency", ratios(tot, gen, energy, seconds), tags)
        # a Grace module's energy includes its CPU: adding a CPU meter would count it twice
        module = bool(self.module_gpus & set(gpu_energy))
        rapl = [] if module else [d for k in live if k[0] == "rapl" and (d := delta(k)) is not None]
        node_energy = sum(gpu_energy.values()) + sum(rapl) if (gpu_energy or rapl) else None
        source = "gpu_module" if module else (
            "+".join(x for x, have in (("gpu", gpu_energy), ("rapl", rapl)) if have) or "none")
        tags = {"scope": "node", "energy_source": source, "meter": "components", "partial": "true"}
        if chosen is not None:  # a meter of the whole node covers GPUs, CPUs, fans, NICs and PSU losses
            name, msource, keys = chosen
            ds = [delta(k) for k in keys]
            if all(x is not None for x in ds):
                node_energy, tags = sum(ds), {"scope": "node", "energy_source": msource, "meter": name}
        if tags["meter"] == "components" and "components" not in self.options.node_meter:
            return  # no meter the operator accepts: no node figure rather than a partial one
        if tags["meter"] != self._meter_told:
            log.info("efficiency: node scope metered by %s (%s)%s", tags["meter"], tags["energy_source"],
                     ": partial, GPUs and CPUs only" if tags.get("partial") else "")
            self._meter_told = tags["meter"]
        if unresolved:
            return
        acc.add("efficiency", ratios(sum(t for t, _ in tokens.values()), sum(g for _, g in tokens.values()),
                                     node_energy, seconds), tags)
