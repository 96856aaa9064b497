"""The energy ledger every scope shares: device counters kept honest, and windows of joules on one grid.

Two halves, one module, so that producers (gpu, host, redfish, snmp) and consumers (efficiency, per-job
attribution) hold the same rules:

- ``EnergyCounters`` (producer side): a device's raw energy counter made monotonic and saved. A decrease is
  not taken at its word: a dip that comes back (jitter, a lone zero from a BMC mid-reboot) is a glitch,
  dropped and counted; a reset is a drop to near zero that counts up again from there (two readings near
  zero, or three readings below the last value once it went near zero; zeros alone, a BMC rebooting, stay
  pending until the counter moves or comes back); a drop that is not near zero and stays for three readings
  re-bases the counter (it goes on from where it was, nothing added);
  a counter near its known cap that restarts low is a wrap. Negative readings, non-finite ones and jumps
  beyond the device's own power limit are refused and counted. Counters that restart with the host (GPU,
  RAPL) carry the boot id, so a reboot while the agent was down is caught. The state is saved once per
  collection, before the samples leave: an emitted value is never ahead of what a restart will find.
- ``Ledger`` (consumer side): the (time, joules) history of every counter seen on the bus, power readings
  integrated where no counter exists, each series' own sampling interval, freshness (a series whose newest
  point is older than ``stale_intervals`` of its intervals is not current), the counter's resolution learnt
  from its steps (a 0.1 kWh counter moves in 360 kJ steps: used only over windows at least ``RESOLVED``
  steps long), deltas over any window, and ``share``, which splits one window's joules among owners so that
  the parts add up to the whole.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from .counters import MonotonicCounters

# A drop to at most this fraction of the last value is "near zero": a restarted counter, once it stays there.
NEAR_ZERO = 0.1
# Readings below the last value, not near zero, before the counter is re-based on them.
CONFIRM_DIP = 3
# Headroom over a device's stated limit before a reading is called impossible: GPU limits are enforced on
# averages, a PSU's capacity is its output rating and firmware figures are loose (DMTF's public-rackmount1
# reads 937.4 W into a 400 W supply). Three times the limit is beyond any device and still catches a wrong
# scale (mW read as W) and garbage (1e308).
LIMIT_HEADROOM = 3.0
# The quanta of kWh counters in joules (0.001, 0.01, 0.1 and 1 kWh), each a multiple of the one before.
QUANTA = (3.6e6, 3.6e5, 3.6e4, 3.6e3)
# A coarse counter is used over a window only when the window spans at least this many of its steps (1%).
RESOLVED = 100
# Power is integrated between readings at most this far apart; a longer gap starts a new segment.
MAX_GAP_NS = 300 * 10**9


@dataclass
class Update:
    """What one raw reading did: the monotonic value to emit (None: emit nothing this time) and why."""

    value: float | None
    event: str | None = None  # reset, wrap, glitch, pending, refused
    reason: str = ""  # for refused: negative, not finite, beyond the device's limit


class EnergyCounters(MonotonicCounters):
    """Raw energy counters (joules) made monotonic, per key, saved in one JSON file."""

    def __init__(self, path: Path | None, boot_id: str | None = None) -> None:
        super().__init__(path, save_every=float("inf"))  # saved by the collector once per collection
        self.boot_id = boot_id
        self._restored = set(self.state)  # keys not read since the state was loaded

    def count(self, key: str, what: str) -> int:
        return int(self.state.get(key, {}).get(what, 0))

    def glitches(self, key: str) -> int:
        return self.count(key, "glitches")

    def refused(self, key: str) -> int:
        return self.count(key, "refused")

    def reading(self, key: str, raw, now: float | None = None, *, max_watts: float | None = None,
                wrap_at: float | None = None, resets_on_boot: bool = False) -> Update:
        """One raw reading of counter ``key`` in joules, taken at wall time ``now`` (seconds)."""
        now = time.time() if now is None else now
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            return self._refuse(key, "not a finite number")
        if raw < 0:
            return self._refuse(key, f"negative ({raw:g} J)")
        st = self.state.get(key)
        if st is None:
            self.state[key] = {"last": float(raw), "offset": 0.0, "resets": 0, "at": now, "boot": self.boot_id,
                               "unit": "J"}
            self._restored.discard(key)
            return Update(float(raw))
        restored = key in self._restored
        self._restored.discard(key)
        event = None
        limit = None
        if max_watts is not None and max_watts > 0:
            at = st.get("at")
            elapsed = now - at if isinstance(at, (int, float)) else None
            limit = None if elapsed is None else max_watts * LIMIT_HEADROOM * max(elapsed, 1.0)
        if restored and resets_on_boot:
            booted = bool(self.boot_id and st.get("boot") and st["boot"] != self.boot_id)
            if booted or (limit is not None and raw - st["last"] > limit):
                # Reset while the agent was down, and counted past the saved value since: all of raw is new.
                self._reset(st, 0.0)
                event = "reset"
        if raw >= st["last"]:
            if limit is not None and event is None and raw - st["last"] > limit:
                return self._refuse(key, f"beyond the device's limit ({raw - st['last']:.6g} J in "
                                          f"{now - st['at']:.3g} s, limit {max_watts:g} W)")
            st.pop("pending", None)
            if "pending_n" in st:  # the dip came back: it was a glitch, dropped
                del st["pending_n"]
                st["glitches"] = st.get("glitches", 0) + 1
                event = event or "glitch"
            st["last"], st["at"], st["boot"] = float(raw), now, self.boot_id
            st["high"] = max(raw + st["offset"], st.get("high", 0.0))
            return Update(st["high"], event)
        u = self._below(st, float(raw), now, wrap_at)
        if u.value is not None:  # a re-based offset is float arithmetic: never a nanojoule below the last value
            u.value = max(u.value, st.get("high", u.value))
            st["high"] = u.value
        return u

    def _below(self, st: dict, raw: float, now: float, wrap_at: float | None) -> Update:
        """A reading below the last value: a wrap at a known cap at once; anything else must stay down."""
        if wrap_at and st["last"] > 0.9 * wrap_at and raw < 0.1 * wrap_at:
            st["offset"] += wrap_at
            st["resets"] += 1
            st["last"], st["at"], st["boot"] = float(raw), now, self.boot_id
            self.save()
            return Update(raw + st["offset"], "wrap")
        low = min(st.get("pending", raw), raw)
        st["pending"], st["pending_n"] = float(low), st.get("pending_n", 0) + 1
        near_zero = NEAR_ZERO * st["last"]
        if low <= near_zero and raw > low and (raw <= near_zero or st["pending_n"] >= CONFIRM_DIP):
            # restarted near zero and counting again (still near zero, or three readings in): a reset; all of
            # raw is energy since it
            self._reset(st, float(raw))
            st["at"], st["boot"] = now, self.boot_id
            self.save()
            return Update(raw + st["offset"], "reset")
        if st["pending_n"] >= CONFIRM_DIP and low > near_zero:
            # down by less than a restart and staying down: the counter was re-based (a swapped module, a
            # partial reset); it goes on from where it was, counting only what it moved since
            st["offset"] += st["last"] - low
            st["resets"] += 1
            st["last"], st["at"], st["boot"] = float(raw), now, self.boot_id
            st.pop("pending", None)
            st.pop("pending_n", None)
            self.save()
            return Update(raw + st["offset"], "reset")
        return Update(None, "pending")

    @staticmethod
    def _reset(st: dict, raw: float) -> None:
        st["offset"] += st["last"]
        st["resets"] += 1
        st["last"] = raw
        st.pop("pending", None)
        st.pop("pending_n", None)

    def _refuse(self, key: str, reason: str) -> Update:
        st = self.state.get(key)
        if st is not None:
            st["refused"] = st.get("refused", 0) + 1
        return Update(None, "refused", reason)


def share(total: float, weights: dict) -> dict:
    """Split ``total`` among the owners in proportion to their weights; the parts add up to the total (the
    rounding goes to the largest part). No positive weight: equal parts."""
    if not weights:
        return {}
    ws = {k: (w if isinstance(w, (int, float)) and math.isfinite(w) and w > 0 else 0.0) for k, w in weights.items()}
    s = sum(ws.values())
    if s <= 0:
        ws, s = {k: 1.0 for k in ws}, float(len(ws))
    parts = {k: total * w / s for k, w in ws.items()}
    biggest = max(parts, key=lambda k: (parts[k], str(k)))
    parts[biggest] = total - sum(v for k, v in parts.items() if k != biggest)
    return parts


@dataclass
class Series:
    """(ts_ns, joules) of one cumulative counter, with what the ledger learns of it."""

    ts: deque = field(default_factory=deque)
    values: deque = field(default_factory=deque)
    gaps: deque = field(default_factory=lambda: deque(maxlen=8))  # recent sampling intervals (ns)
    quantum: float | None = None  # learnt step (J): 0 fine, a kWh quantum, None not known yet
    declared: bool = False  # the source declares its resolution (NVML mJ, RAPL uJ): nothing to learn

    def add(self, ts: int, value: float) -> bool:
        if self.ts and ts <= self.ts[-1]:
            return False  # already seen (the bus keeps the latest sample until the next run)
        if self.ts:
            self.gaps.append(ts - self.ts[-1])
            step = value - self.values[-1]
            if step < 0:
                self.restart()  # a producer without a counter store went down: no window across it
            elif step > 0 and not self.declared:
                q = quantum_of(step, value)
                self.quantum = q if self.quantum is None else min(self.quantum, q)
        self.ts.append(ts)
        self.values.append(value)
        return True

    def restart(self) -> None:
        """A decrease or a gap: what came before is dropped, so that no window spans it."""
        self.ts.clear()
        self.values.clear()

    @property
    def newest(self) -> int | None:
        return self.ts[-1] if self.ts else None

    def interval(self) -> int | None:
        if not self.gaps:
            return None
        g = sorted(self.gaps)
        return g[len(g) // 2]

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


def quantum_of(step: float, value: float) -> float:
    """The largest kWh quantum that divides this step (0: none does, the counter is finer)."""
    tol = max(1e-3, 1e-12 * abs(value))
    for q in QUANTA:
        if abs(step - round(step / q) * q) <= tol:
            return q
    return 0.0


@dataclass
class Delta:
    joules: float | None  # None: the window cannot be measured (why says why)
    why: str = ""


class Ledger:
    """Cumulative energy histories by key, and the rules for windows over them."""

    def __init__(self, stale_intervals: float = 3.0, keep_ns: int = 600 * 10**9) -> None:
        self.stale_intervals = stale_intervals
        self.keep_ns = keep_ns
        self.series: dict[tuple, Series] = {}
        self._power: dict[tuple, tuple[int, float, float]] = {}  # key -> (ts, watts, joules so far)

    def __contains__(self, key) -> bool:
        return key in self.series and bool(self.series[key].ts)

    def keys(self, kind: str | None = None) -> list[tuple]:
        return [k for k, s in self.series.items() if s.ts and (kind is None or k[0] == kind)]

    def counter(self, key: tuple, ts: int, joules, fine: bool = False) -> None:
        """A cumulative energy reading (joules) at ts (ns); `fine`: the source declares a resolution far below a
        joule (NVML's mJ, RAPL's uJ), so its steps are not searched for a kWh quantum (a steady synthetic
        load whose every step is a multiple of 3.6 kJ would otherwise pass for one)."""
        if isinstance(joules, bool) or not isinstance(joules, (int, float)) or not math.isfinite(joules):
            return
        s = self.series.setdefault(key, Series())
        if fine and not s.declared:
            s.declared, s.quantum = True, 0.0
        if s.add(ts, float(joules)):
            s.trim(ts - self.keep_ns)

    def power(self, key: tuple, ts: int, watts) -> None:
        """A power reading becomes a cumulative energy series (trapezoids between readings)."""
        if isinstance(watts, bool) or not isinstance(watts, (int, float)) or not math.isfinite(watts) or watts < 0:
            return
        prev = self._power.get(key)
        if prev is not None and ts <= prev[0]:
            return
        joules = 0.0
        if prev is not None:
            joules = prev[2]
            if ts - prev[0] <= MAX_GAP_NS:
                joules += (prev[1] + watts) / 2 * (ts - prev[0]) / 1e9
            elif key in self.series:
                self.series[key].restart()  # no window across the gap
        self._power[key] = (ts, float(watts), joules)
        s = self.series.setdefault(key, Series())
        s.quantum = 0.0  # an integral has no steps to learn
        s.add(ts, joules)
        s.trim(ts - self.keep_ns)

    def forget(self, key: tuple) -> None:
        self.series.pop(key, None)
        self._power.pop(key, None)

    def fresh(self, key: tuple, now: int) -> tuple[bool, str]:
        """(current?, why not): the newest point is at most stale_intervals of the series' own intervals old."""
        s = self.series.get(key)
        if s is None or not s.ts:
            return False, "no readings"
        iv = s.interval()
        if iv is None:
            return False, "one reading so far"
        age = now - s.ts[-1]
        if age > self.stale_intervals * iv:
            return False, f"newest reading {age / 1e9:.0f} s old (interval {iv / 1e9:.3g} s)"
        return True, ""

    def delta(self, key: tuple, t0: int, t1: int) -> Delta:
        """Joules of one series over [t0, t1]: interpolated at both ends, refused where the history does not
        cover the window or the counter's steps are too coarse for it."""
        s = self.series.get(key)
        if s is None:
            return Delta(None, "no readings")
        a, b = s.at(t0), s.at(t1)
        if a is None or b is None:
            return Delta(None, "the readings do not cover the window")
        d = max(0.0, b - a)
        if s.quantum is None:
            return Delta(None, "resolution not known yet (no step seen)")
        if s.quantum and d < RESOLVED * s.quantum:
            return Delta(None, f"counter moves in {s.quantum / 3.6e6:g} kWh steps: too coarse for "
                               f"{(t1 - t0) / 1e9:g} s")
        return Delta(d)


@dataclass
class Meter:
    """A meter of one scope (a node): parts summed, each part a list of alternative series, best first (the
    device's counter, then its power integrated): the first alternative that can measure a window is used."""

    name: str
    source: str
    parts: list[list[tuple]]
    partial: bool = False
    note: str = ""  # what this meter leaves out (a lost GPU)


@dataclass
class Reading:
    """A meter measured over [t0, t1]: its joules and the series each part was read from."""

    meter: Meter
    joules: float
    t0: int
    t1: int
    keys: list[tuple]

    @property
    def watts(self) -> float:
        return self.joules / ((self.t1 - self.t0) / 1e9)


def current(ledger: Ledger, meter: Meter, now: int) -> tuple[int | None, str]:
    """(the newest instant every part covers with a current series, None and why not)."""
    if not meter.parts:
        return None, "nothing to read"
    ends = []
    for alts in meter.parts:
        fresh = [ledger.series[k].newest for k in alts if ledger.fresh(k, now)[0]]
        if not fresh:
            why = ledger.fresh(alts[0], now)[1] if alts else "nothing to read"
            return None, f"{_name(alts[0]) if alts else meter.name}: {why}"
        ends.append(max(fresh))
    return min(ends), ""


def measure(ledger: Ledger, meter: Meter, t0: int, t1: int, now: int | None = None) -> tuple[Reading | None, str]:
    """The meter over [t0, t1]: per part, the first alternative (current at `now`, if given) that covers it."""
    total, keys = 0.0, []
    for alts in meter.parts:
        why = "no readings"
        for k in alts:
            ok, stale = (True, "") if now is None else ledger.fresh(k, now)
            if not ok:
                why = stale
                continue
            d = ledger.delta(k, t0, t1)
            if d.joules is not None:
                total += d.joules
                keys.append(k)
                break
            why = d.why
        else:
            return None, f"{_name(alts[0]) if alts else meter.name}: {why}"
    return Reading(meter, total, t0, t1, keys), ""


def _name(key: tuple) -> str:
    return "/".join(str(x) for x in key[1:] if x) or str(key[0])


@dataclass
class Choice:
    """The outcome of the meter order over one window."""

    chosen: Reading | None  # the first current meter the components do not contradict
    checked: Reading | None  # the first current meter, contradicted or not (what the balance reports)
    components: Reading | None  # the components over the checked meter's window
    notes: list[str] = field(default_factory=list)  # why each meter before the chosen one was passed over

    @property
    def note(self) -> str:
        return "; ".join(self.notes)


def choose(ledger: Ledger, meters: list[Meter], components: Meter | None, now: int, window: int,
           tolerance: float) -> Choice:
    """The first meter in `meters` that is current at `now`, measures a whole window ending at the newest
    instant its parts cover, and that the components (GPUs + CPUs) measured over the same window do not
    exceed by more than `tolerance` (a fraction). Each meter passed over says why."""
    out = Choice(None, None, None)
    for m in meters:
        t1, why = current(ledger, m, now)
        if t1 is None:
            out.notes.append(f"{m.name}: {why}")
            continue
        r, why = measure(ledger, m, t1 - window, t1, now)
        if r is None:
            out.notes.append(f"{m.name}: {why}")
            continue
        if m is components or components is None:
            out.chosen = r
            if out.checked is None:
                out.checked = r
            return out
        comp = measure(ledger, components, r.t0, r.t1, now)[0] if components.parts else None
        if out.checked is None:
            out.checked, out.components = r, comp
        if comp is not None and comp.joules > r.joules * (1 + tolerance):
            out.notes.append(f"{m.name}: the components measure {comp.watts:.0f} W, above its {r.watts:.0f} W")
            continue
        out.chosen = r
        return out
    return out


class GridWindows:
    """Windows of an epoch-aligned grid, each handed out once: a window is never reported twice, and a meter
    that comes back after a pause never re-reports one already written."""

    def __init__(self, grid_ns: int) -> None:
        self.grid = grid_ns
        self.published: int | None = None  # the end of the last window handed out

    def due(self, covered: int) -> list[int]:
        """Ends of the windows complete by `covered` and not handed out yet (the first time: the newest)."""
        end = covered - covered % self.grid
        start = self.published + self.grid if self.published is not None else end
        return list(range(start, end + 1, self.grid))

    def done(self, end: int) -> None:
        self.published = end if self.published is None else max(self.published, end)
