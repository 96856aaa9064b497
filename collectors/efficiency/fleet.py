"""Fleet sums from InfluxDB, for the rack and facility scopes (on a facility poller).

Token counters and node meters live on every GPU node; rack and facility energy is known on the poller
that reads the PDUs and meters. Every node writes, for each window of an epoch-aligned grid, its tokens and
its node meter's energy over that window (measurement `node_window`, tagged with its rack: `tags.rack` in
its config). The poller sums those rows per rack in one InfluxQL query (served by InfluxDB 1.x, 2.x through
its v1 API, and 3.x), so what it reads and parses grows with racks, not with nodes or series
(bench/fleet_scale).
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
    def __init__(self, opts: FleetOptions, where: str = "collectors.efficiency.fleet") -> None:
        self.opts = opts
        self.client = InfluxQL(opts, where)

    def windows(self, t0_ns: int, t1_ns: int) -> dict[str, RackSums]:
        """{rack: sums of the node windows that ended in (t0, t1]}."""
        q = ('SELECT sum("tokens") AS t, sum("generation_tokens") AS g, sum("energy_joules") AS e, '
             'count("energy_joules") AS n, sum("partial") AS p FROM "node_window" '
             f'WHERE time > {t0_ns} AND time <= {t1_ns} GROUP BY "rack"')
        out: dict[str, RackSums] = {}
        for s in self.client.query(q):  # QueryError names InfluxDB and the cause
            row = dict(zip(s["columns"], s["values"][-1]))
            out[s.get("tags", {}).get("rack", "")] = RackSums(
                float(row.get("t") or 0.0), float(row.get("g") or 0.0), float(row.get("e") or 0.0),
                int(row.get("n") or 0), int(row.get("p") or 0))
        return out
