"""Efficiency collector: tokens per joule over a sliding window, from counter deltas only.

Inputs are cumulative counters other collectors published on the agent's sample bus (the gpu
collector's `energy_joules_total` per GPU, the host collector's RAPL counters, the inference collector's
token counters with their `gpus` attribution, the BMC's and the outlets' energy or power). They live in
one energy ledger (collectors/common/energy.py): both ends of a window are interpolated on each counter's
history, so tokens and joules are counted over exactly the same interval whatever the collectors' phases,
and power is integrated only where no counter fine enough for the window exists.

Scopes (tag `scope`):
- gpu: tokens of the servers attributed to that GPU (a server on N GPUs gives each 1/N of its tokens)
  per joule of that GPU;
- model: tokens of one server/model per joule of its GPUs (a GPU shared by K servers gives each 1/K);
- node: all tokens on the node per joule of the first meter of the whole node, in the order of `node_meter`
  (tag `meter`), that is current (its newest reading within `stale_intervals` of its own interval), measures
  a whole window, and is not contradicted by the components (GPUs + CPUs above it by more than the
  tolerance): its PDU outlets (`node_energy`), its BMC's PSU inputs, its BMC's chassis reading, or the sum of
  its components, tagged partial=true, since fans, NICs, drives and PSU losses are left out. A GPU whose
  energy is its Grace module's (scope=gpu_module) already counts the module's CPU: no CPU energy is added.
  Why a meter was passed over is the row's `meter_note`; a change of meter is logged once and counted.
Idle is not an error: no tokens gives tokens_per_joule 0 and no joules_per_token.

Energy balance (measurement energy_balance, per node and window): the node meter's energy against the sum of
the components; the residual is what the node spends outside GPUs and CPUs. Components above the meter mean a
meter is wrong (default rule EnergyComponentsExceedMeter).
"""

from __future__ import annotations

import logging
import zlib
from typing import Literal

from pydantic import Field, model_validator

from agent.collector import Collector, NotPresent
from agent.config import CollectorOptions, PositiveDuration, Strict
from agent.influxql import QueryError
from agent.model import Accumulator, Kind, Metric
from collectors.common.energy import Choice, GridWindows, Ledger, Meter, choose, measure, share
from collectors.common.rollup import rack_energy

from .fleet import FleetOptions, FleetTokens, RackSums

log = logging.getLogger(__name__)

TAGS = ("host", "scope", "gpu", "endpoint", "server", "model", "rack", "energy_source", "meter", "partial")
METER_TAGS = ("host", "rack", "meter", "meter_source", "partial")
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
    Metric("efficiency", "meter_note", Kind.INFO, "info", "node scope: why meters before this one were passed "
           "over (stale, too coarse, contradicted by the components, a lost GPU)", TAGS),
    Metric("energy_balance", "meter_note", Kind.INFO, "info", "why meters before this one were passed over",
           BALANCE_TAGS),
    Metric("node_meter", "energy_joules", G, "joules", "the node meter's energy over the last window", METER_TAGS),
    Metric("node_meter", "power_watts", G, "watts", "the node meter's mean power over the last window", METER_TAGS),
    Metric("node_meter", "window_seconds", G, "seconds", "length of that window", METER_TAGS),
    Metric("node_meter", "age_seconds", G, "seconds", "how old the meter's newest reading is", METER_TAGS),
    Metric("node_meter", "meter_changes_total", Kind.COUNTER, "count", "times the node's meter changed (logged "
           "once each)", METER_TAGS),
    Metric("node_meter", "note", Kind.INFO, "info", "why the meters before it were passed over", METER_TAGS),
)


# bmc_power's `source` -> the BMC interface it was read through (the node meter's name says which)
BMC_TRANSPORT = {"redfish": "redfish", "dcmi": "ipmi", "ipmi_sdr": "ipmi"}


class NodeEnergySource(Strict):
    """Energy counters of the series that meter this node, summed (two PSUs on two outlets, say)."""

    measurement: str = Field("pdu", description="measurement of the meter's series")
    field: str = Field("energy_joules_total", description="its energy counter (joules)")
    power_field: str | None = Field("power_watts", description="its power (watts), integrated where the counter "
                                                               "is too coarse for a window (0.1 kWh outlets)")
    tags: dict[str, str] = Field(..., description="tags a series must have, e.g. {device: pdu-r12-a, outlet: '5'}")


class EfficiencyOptions(CollectorOptions):
    window: PositiveDuration = Field(60.0, description="sliding window of the rates and ratios")
    rapl: bool = Field(True, description="count the CPU packages' RAPL energy (host collector) in the components "
                                         "where present")
    stale_intervals: float = Field(3.0, gt=1, description="a meter whose newest reading is older than this many "
                                                          "of its own intervals is not current")
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
    # counters and power from the bus: GPUs, RAPL, tokens, the node's BMC, PDU outlets and racks, the facility
    consumes = ("gpu", "host_energy", "inference", "bmc_power", "pdu", "facility")

    def __init__(self, options: EfficiencyOptions, ctx) -> None:
        super().__init__(options, ctx)
        self.ledger = Ledger(options.stale_intervals,
                             keep_ns=int(max(options.window, options.window_grid, options.fleet_window) * 3e9))
        self._unresolved_told: set[tuple] = set()  # llama.cpp series already warned about
        self._told: set[tuple] = set()  # BMCs with several node chassis already warned about
        self.module_gpus: set[str] = set()  # GPUs whose energy is their Grace module's
        self.fleet = FleetTokens(options.fleet) if options.fleet else None
        self.bmc: dict[str, Meter] = {}  # psu_input / chassis -> the node's BMC meter
        self.windows = GridWindows(int(options.window_grid * 1e9))
        self._meter: str | None = None  # the node meter in use
        self._meter_note: tuple = ()  # the meters passed over, as last logged
        self.meter_changes = 0
        self._fleet_t1: int | None = None  # the end of the last fleet window computed
        if options.node_energy is not None and options.node_energy.measurement not in self.consumes:
            self.consumes = (*self.consumes, options.node_energy.measurement)

    # --- what the bus holds ------------------------------------------------------------------------------

    def _ingest(self, bus) -> dict[tuple, dict]:
        led = self.ledger
        for s in bus.latest("gpu"):
            if "gpu" in s.tags and "energy_joules_total" in s.fields:
                key = ("gpu", s.tags["gpu"])
                if (s.tags.get("scope") == "gpu_module") != (s.tags["gpu"] in self.module_gpus):
                    led.forget(key)  # another counter from now on: no window across the change
                    self.module_gpus ^= {s.tags["gpu"]}
                led.counter(key, s.ts, s.fields["energy_joules_total"], fine=True)  # NVML: mJ
        if self.options.rapl:
            for s in bus.latest("host_energy"):
                if s.tags.get("source") == "rapl" and "energy_joules_total" in s.fields:
                    led.counter(("rapl", s.tags.get("zone", "")), s.ts, s.fields["energy_joules_total"],
                                fine=True)  # RAPL: uJ
        src = self.options.node_energy
        if src is not None:
            meters = [s for s in bus.latest(src.measurement) if all(s.tags.get(k) == v for k, v in src.tags.items())]
            for field, record, key in ((src.field, led.counter, ("meter", "outlet", "counter")),
                                       (src.power_field, led.power, ("meter", "outlet", "power"))):
                have = [s for s in meters if field and isinstance(s.fields.get(field), (int, float))]
                if have and len(have) == len(meters):  # every outlet of the node, or none
                    record(key, min(s.ts for s in have), sum(float(s.fields[field]) for s in have))
        series: dict[tuple, dict] = {}  # (endpoint, model) -> tags
        for s in bus.latest("inference"):
            if "outcome" in s.tags:
                continue
            key = (s.tags.get("endpoint", ""), s.tags.get("model", ""))
            series[key] = s.tags
            for f in ("prompt_tokens_total", "generation_tokens_total"):
                if f in s.fields:
                    led.counter(("tok", *key, f), s.ts, s.fields[f])
        self._bmc_meters(bus)
        return series

    def _bmc_meters(self, bus) -> None:
        """The node's BMC meters on the bus (redfish, else IPMI): its PSU inputs summed, and one chassis reading.
        Each reading is a part with two alternatives: the BMC's energy counter, then its power integrated. Only
        the chassis the BMC's topology names as the node's (chassis_role node) counts; a poller's BMC of another
        node (tag node) does not."""
        parts: dict[tuple, dict[tuple, list[tuple]]] = {}  # (meter, transport) -> component -> alternatives
        chassis_ids: dict[str, set] = {}
        for s in bus.latest("bmc_power"):
            scope = s.tags.get("scope")
            if scope not in ("psu_input", "chassis") or s.tags.get("chassis_role", "node") != "node":
                continue
            if s.tags.get("node") and s.tags.get("node") != s.tags.get("host"):
                continue
            transport = BMC_TRANSPORT.get(s.tags.get("source", ""), "ipmi")
            base = ("bmc", transport, s.tags.get("target", ""), s.tags.get("chassis", ""),
                    s.tags.get("component", ""), scope)
            alts = []
            if "energy_joules_total" in s.fields:
                self.ledger.counter((*base, "counter"), s.ts, s.fields["energy_joules_total"])
                alts.append((*base, "counter"))
            if "power_watts" in s.fields:
                self.ledger.power((*base, "power"), s.ts, s.fields["power_watts"])
                alts.append((*base, "power"))
            if alts:
                parts.setdefault((scope, transport), {})[base] = alts
                chassis_ids.setdefault(transport, set()).add((base[2], base[3]))
        self.bmc = {}
        for name in ("psu_input", "chassis"):
            for transport in ("redfish", "ipmi"):  # redfish first; never both for one meter
                found = parts.get((name, transport))
                if not found:
                    continue
                if len(chassis_ids[transport]) > 1:
                    told = (name, transport, tuple(sorted(chassis_ids[transport])))
                    if told not in self._told:
                        self._told.add(told)
                        log.warning("efficiency: %d node chassis on this node's BMCs (%s): not summed; name the "
                                    "node's chassis in the redfish target's `chassis`", len(chassis_ids[transport]),
                                    ", ".join("/".join(c) for c in sorted(chassis_ids[transport])))
                    continue
                if name == "psu_input":
                    meter = Meter(name, transport, [found[b] for b in sorted(found)])
                else:
                    # one chassis reading: the chassis-wide one first (EnvironmentMetrics, DCMI), counter first
                    order = sorted(found, key=lambda b: (b[4] not in ("chassis", "dcmi"), b[4]))
                    meter = Meter(name, transport, [[k for b in order for k in found[b]]])
                self.bmc[name] = meter
                break

    # --- the node meter -----------------------------------------------------------------------------------

    def _components(self, now: int) -> Meter:
        """GPUs + CPU packages, current ones only: a lost GPU leaves the sum (said in the note), never stops it.
        No CPU where a GPU's energy is its Grace module's (it holds it)."""
        keys = self.ledger.keys("gpu")
        if not self.module_gpus:
            keys += self.ledger.keys("rapl")
        live, lost = [], []
        for k in sorted(keys):
            ok, why = self.ledger.fresh(k, now)
            if ok:
                live.append([k])
            elif self.ledger.series[k].interval() is not None:
                lost.append(f"{k[0]} {k[1]}: {why}")
        source = "gpu_module" if self.module_gpus else (
            "+".join(x for x in ("gpu", "rapl") if any(p[0][0] == x for p in live)) or "none")
        return Meter("components", source, live, partial=True, note="; ".join(lost))

    def _meters(self, components: Meter) -> list[Meter]:
        out = []
        for name in self.options.node_meter:
            if name == "outlet" and self.options.node_energy is not None:
                out.append(Meter("outlet", "meter", [[("meter", "outlet", "counter"), ("meter", "outlet", "power")]]))
            elif name in self.bmc:
                out.append(self.bmc[name])
            elif name == "components":
                out.append(components)
        return out

    def _choose(self, acc: Accumulator) -> tuple[Choice, list[Meter]]:
        components = self._components(acc.ts)
        meters = self._meters(components)
        window = int(self.options.window * 1e9)
        choice = choose(self.ledger, meters, components, acc.ts, window,
                        self.options.components_tolerance_percent / 100)
        if components.note:
            choice.notes.append(f"components: {components.note}")
        name = choice.chosen.meter.name if choice.chosen else None
        # a state change is a new meter or another set of meters passed over, not a note whose ages moved on
        passed = tuple(n.split(":", 1)[0] for n in choice.notes)
        if (name, passed) != (self._meter, self._meter_note):
            if name != self._meter and self._meter is not None:
                self.meter_changes += 1
            if name is None:
                log.warning("efficiency: no node meter is current (%s)", choice.note or "nothing measured yet")
            else:
                log.info("efficiency: node metered by %s (%s)%s%s", name, choice.chosen.meter.source,
                         ": partial, GPUs and CPUs only" if choice.chosen.meter.partial else "",
                         f"; passed over: {choice.note}" if choice.note else "")
            self._meter, self._meter_note = name, passed
        return choice, meters

    def _node_meter_row(self, acc: Accumulator, choice: Choice) -> bool:
        r = choice.chosen
        if r is None:
            return False
        newest = max(self.ledger.series[k].newest for k in r.keys) if r.keys else acc.ts
        acc.add("node_meter", {"energy_joules": round(r.joules, 6), "power_watts": round(r.watts, 6),
                               "window_seconds": (r.t1 - r.t0) / 1e9, "age_seconds": round((acc.ts - newest) / 1e9, 3),
                               "meter_changes_total": self.meter_changes, "note": choice.note or None},
                {"meter": r.meter.name, "meter_source": r.meter.source, "partial": str(r.meter.partial).lower()})
        return True

    def _balance(self, acc: Accumulator, choice: Choice) -> None:
        """The first current meter against the components over its window: a contradicted meter is still
        reported here (components_exceed_meter, the default rule), while the node scope moves on."""
        r, comp = choice.checked, choice.components
        if r is None or comp is None or r.meter.name == "components" or r.joules <= 0:
            return
        seconds = (r.t1 - r.t0) / 1e9
        gpu = sum(self.ledger.delta(k, r.t0, r.t1).joules or 0.0 for k in comp.keys if k[0] == "gpu")
        cpu_keys = [k for k in comp.keys if k[0] == "rapl"]
        cpu = sum(self.ledger.delta(k, r.t0, r.t1).joules or 0.0 for k in cpu_keys)
        fields = self._balance_fields(r.joules, comp.joules, seconds)
        lo, hi = self.options.residual_band
        fields.update(gpu_energy_joules=round(gpu, 6), cpu_energy_joules=round(cpu, 6) if cpu_keys else None,
                      residual_in_band=lo <= 100.0 * (r.joules - comp.joules) / r.joules <= hi,
                      meter_note=choice.note or None)
        acc.add("energy_balance", fields, {"scope": "node", "meter": r.meter.name, "meter_source": r.meter.source})

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

    def _publish_windows(self, acc: Accumulator, series: dict[tuple, dict], choice: Choice,
                         meters: list[Meter]) -> None:
        """node_window rows for every grid window the node's meter now covers, each written once, stamped with
        its end plus this node's offset in that window (window_offset). A window is measured by the chosen
        meter, else by the next current meter in the order that covers it (never by a stale one)."""
        if choice.chosen is None:
            return
        host = acc.global_tags.get("host", "")
        grid = self.windows.grid
        usable = meters[meters.index(choice.chosen.meter):] if choice.chosen.meter in meters else [choice.chosen.meter]
        tok = [("tok", *k, f) for k in series for f in ("prompt_tokens_total", "generation_tokens_total")
               if ("tok", *k, f) in self.ledger]
        for e in self.windows.due(choice.chosen.t1):
            for m in usable:
                r, _ = measure(self.ledger, m, e - grid, e, acc.ts)
                if r is not None:
                    break
            else:
                continue  # no current meter covers this window (the first one, or after a gap)
            prompt = gen = 0.0
            for k in tok:
                d = self.ledger.series[k]
                a, b = d.at(e - grid), d.at(e)
                if a is not None and b is not None:
                    gen += max(0.0, b - a) if k[-1] == "generation_tokens_total" else 0.0
                    prompt += max(0.0, b - a) if k[-1] == "prompt_tokens_total" else 0.0
            acc.add("node_window", {"tokens": round(prompt + gen, 6), "generation_tokens": round(gen, 6),
                                    "energy_joules": round(r.joules, 6), "window_seconds": grid / 1e9,
                                    "partial": int(r.meter.partial)}, {"meter": r.meter.name},
                    ts=e + window_offset(host, e), without=("host",))
            self.windows.done(e)

    def collect(self, acc: Accumulator) -> None:
        bus = self.ctx.bus
        if bus is None:
            raise NotPresent("no sample bus")
        series = self._ingest(bus)
        if self.fleet is not None:
            self._fleet(acc, bus)
        choice, meters = self._choose(acc)
        metered = self._node_meter_row(acc, choice)
        self._balance(acc, choice)
        self._publish_windows(acc, series, choice, meters)
        if series:
            self._compute(acc, series, choice)
        elif not (metered or self.fleet is not None or self.ledger.keys()):
            raise NotPresent("nothing to meter on this node (no GPU, CPU, BMC or outlet energy, no tokens)")

    def _fleet(self, acc: Accumulator, bus) -> None:
        """Rack scope: the rack's tokens per joule of its IT PDUs; facility scope: all tokens per joule of
        the facility's total energy (or, with no facility_total meter, of its IT energy: tag energy_source)."""
        # each IT device's top-level meter (its total, else its inlets, else its phases), summed per rack
        for rack, (energy, ts) in rack_energy(bus.latest("pdu")).items():
            self.ledger.counter(("rack", rack), ts, energy)
        for s in bus.latest("facility"):
            for f in ("total_energy_joules_total", "it_energy_joules_total"):
                if f in s.fields:
                    self.ledger.counter(("facility", f), s.ts, s.fields[f])
        keys = [k for k in self.ledger.keys() if k[0] in ("rack", "facility")]
        if not keys:
            return
        window = int(self.options.fleet_window * 1e9)
        grid = int(self.fleet.opts.grid * 1e9)
        # The newest grid boundary the meters cover and the nodes have had time to write (lag).
        t1 = min(min(self.ledger.series[k].ts[-1] for k in keys), acc.ts - int(self.fleet.opts.lag * 1e9))
        t1 -= t1 % grid
        t0 = t1 - window
        for k in keys:
            self.ledger.series[k].trim(t0)
        if t1 == self._fleet_t1:
            return  # this window is done; the next one ends on the next boundary
        hs = self.ledger.series
        energy = {k: (hs[k].at(t1) or 0.0) - a for k in keys if (a := hs[k].at(t0)) is not None}
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

    def _compute(self, acc: Accumulator, series: dict[tuple, dict], choice: Choice) -> None:
        led = self.ledger
        window = int(self.options.window * 1e9)
        live = [k for k in led.keys() if k[0] in ("gpu", "tok") and led.fresh(k, acc.ts)[0]]
        ends = [led.series[k].newest for k in live]
        if choice.chosen is not None:
            ends.append(choice.chosen.t1)
        if not ends:
            return
        t1 = min(ends)  # the newest instant every current counter covers
        t0 = t1 - window

        def delta(key: tuple) -> float | None:
            return led.delta(key, t0, t1).joules if key in live else None

        seconds = window / 1e9
        gpu_energy = {k[1]: d for k in live if k[0] == "gpu" and (d := delta(k)) is not None}
        tokens: dict[tuple, tuple[float, float]] = {}
        unresolved: set[tuple] = set()
        for key in series:
            p, g = delta(("tok", *key, "prompt_tokens_total")), delta(("tok", *key, "generation_tokens_total"))
            if p is not None or g is not None:
                tokens[key] = ((p or 0.0) + (g or 0.0), g or 0.0)
                step = max(token_step(series[key].get("server", ""), led.series[k].at(t1) or 0.0)
                           for k in (("tok", *key, "prompt_tokens_total"), ("tok", *key, "generation_tokens_total"))
                           if k in live)
                if step > 1 and (0 < tokens[key][0] < RESOLVED * step or 0 < tokens[key][1] < RESOLVED * step):
                    unresolved.add(key)
        if not tokens:
            return  # the first window is not complete yet
        if unresolved:
            # Those counters cannot resolve this window's tokens: every scope that would count them is refused.
            for key in sorted(unresolved - self._unresolved_told):
                log.warning("%s %s: counters printed with 6 significant digits move in steps too coarse for a "
                            "%g s window; its efficiency is not reported (widen efficiency.window)",
                            series[key].get("server", ""), key[0], seconds)
            self._unresolved_told |= unresolved
        gpus_of = {k: [g for g in series[k].get("gpus", "").split(",") if g in gpu_energy] for k in tokens}
        per_gpu = {g: [0.0, 0.0] for g in gpu_energy}
        for k, (tot, gen) in tokens.items():
            for g in gpus_of[k]:
                per_gpu[g][0] += tot / len(gpus_of[k])
                per_gpu[g][1] += gen / len(gpus_of[k])
        refused_gpus = {g for k in unresolved for g in gpus_of[k]}
        for g, (tot, gen) in per_gpu.items():
            if g not in refused_gpus:
                acc.add("efficiency", ratios(tot, gen, gpu_energy[g], seconds), {"scope": "gpu", "gpu": g})
        # each GPU's joules shared among the servers on it, equally: the parts add up to the GPU's energy
        model_energy: dict[tuple, float] = {}
        for g, joules in gpu_energy.items():
            for k, part in share(joules, {k: 1.0 for k in tokens if g in gpus_of[k]}).items():
                model_energy[k] = model_energy.get(k, 0.0) + part
        for k, (tot, gen) in tokens.items():
            if k in unresolved:
                continue
            tags = {"scope": "model", "endpoint": k[0], "model": k[1], "server": series[k].get("server", "")}
            acc.add("efficiency", ratios(tot, gen, model_energy.get(k), seconds), tags)
        if choice.chosen is None or unresolved:
            return  # no meter the operator accepts is current: no node figure rather than a wrong one
        m = choice.chosen.meter
        r, _ = measure(led, m, t0, t1, acc.ts)
        if r is None:
            return
        tags = {"scope": "node", "energy_source": m.source, "meter": m.name}
        if m.partial:
            tags["partial"] = "true"
        fields = ratios(sum(t for t, _ in tokens.values()), sum(g for _, g in tokens.values()), r.joules, seconds)
        fields["meter_note"] = choice.note or None
        acc.add("efficiency", fields, tags)
