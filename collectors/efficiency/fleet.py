"""Fleet sums from InfluxDB, for the rack and facility scopes (on a facility poller).

Token counters and node meters live on every GPU node; rack and facility energy is known on the poller
that reads the PDUs and meters. Every node writes, for each window of an epoch-aligned grid, its tokens and
its node meter's energy over that window (measurement `node_window`, tagged with its rack: `tags.rack` in
its config, and not with its host, so that a rack's rows are one series). The poller sums those rows per
rack in one InfluxQL query (served by InfluxDB 1.x, 2.x through its v1 API, and 3.x), so what InfluxDB reads
and the poller parses grows with racks, not with nodes or series (bench/fleet_scale).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from agent.config import PositiveDuration
from agent.influxql import InfluxQL, InfluxQLOptions


class FleetOptions(InfluxQLOptions):
    grid: PositiveDuration = Field(60.0, description="the nodes' efficiency.window_grid: windows end on "
                                                     "multiples of it")
    lag: PositiveDuration = Field(30.0, description="how long after a window ends the nodes' rows are summed "
                                                    "(their collection interval plus delivery)")


@dataclass
class RackSums:
    tokens: float = 0.0
    generation_tokens: float = 0.0
    energy_joules: float = 0.0  # the node meters' energy (partial where a node has only GPUs + CPUs)
    node_windows: int = 0
    partial_windows: int = 0


class FleetTokens:
    """Per-rack sums of the node windows, kept per grid window: each cycle asks InfluxDB only for the windows
    it has not summed yet (one grid window in steady state, plus the one before it again for rows that arrived
    late), never the whole rack window again."""

    RECHECK = 2  # the newest grid windows summed again every cycle: a node's row may arrive after the lag

    def __init__(self, opts: FleetOptions, where: str = "collectors.efficiency.fleet") -> None:
        self.opts = opts
        self.client = InfluxQL(opts, where)
        self.cache: dict[int, dict[str, RackSums]] = {}  # grid window end -> rack -> sums
        self.queries = 0

    def windows(self, t0_ns: int, t1_ns: int) -> dict[str, RackSums]:
        """{rack: sums of the node windows that ended in (t0, t1]}."""
        grid = int(self.opts.grid * 1e9)
        ends = list(range(t0_ns + grid, t1_ns + 1, grid))
        for e in [e for e in self.cache if e <= t0_ns]:
            del self.cache[e]
        stale = [e for e in ends if e not in self.cache or e > t1_ns - self.RECHECK * grid]
        if stale:
            got = self._query(min(stale), t1_ns + grid, grid)
            for e in stale:
                self.cache[e] = got.get(e, {})
        out: dict[str, RackSums] = {}
        for e in ends:
            for rack, r in self.cache.get(e, {}).items():
                t = out.setdefault(rack, RackSums())
                t.tokens += r.tokens
                t.generation_tokens += r.generation_tokens
                t.energy_joules += r.energy_joules
                t.node_windows += r.node_windows
                t.partial_windows += r.partial_windows
        return out

    def _query(self, lo: int, hi: int, grid: int) -> dict[int, dict[str, RackSums]]:
        """Sums per grid window and rack of the rows stamped in [lo, hi). A node stamps its row of the window
        that ends at e with e plus under a second, which InfluxQL's GROUP BY time puts in the bucket starting
        at e (buckets are [start, start + grid))."""
        q = ('SELECT sum("tokens") AS t, sum("generation_tokens") AS g, sum("energy_joules") AS e, '
             'count("energy_joules") AS n, sum("partial") AS p FROM "node_window" '
             f'WHERE time >= {lo} AND time < {hi} GROUP BY time({int(self.opts.grid * 1000)}ms), "rack" fill(none)')
        self.queries += 1
        out: dict[int, dict[str, RackSums]] = {}
        for s in self.client.query(q):  # QueryError names InfluxDB and the cause
            rack = s.get("tags", {}).get("rack", "")
            cols = s["columns"]
            for values in s["values"]:
                row = dict(zip(cols, values))
                out.setdefault(int(row["time"]), {})[rack] = RackSums(
                    float(row.get("t") or 0.0), float(row.get("g") or 0.0), float(row.get("e") or 0.0),
                    int(row.get("n") or 0), int(row.get("p") or 0))
        return out
