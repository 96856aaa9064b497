"""Fleet token totals from InfluxDB, for the rack and facility scopes (on a facility poller).

Token counters live on every GPU node; rack and facility energy is known on the poller that reads
the PDUs and meters. The poller's efficiency collector reads the fleet's token counters back from
InfluxDB with InfluxQL (served by InfluxDB 1.x, 2.x through its v1 API, and 3.x): the last value of
every inference series at or before an instant, grouped by rack. Every node tags its samples with
its rack (`tags.rack` in its config), which is how tokens meet the rack's PDU energy.
"""

from __future__ import annotations

from pydantic import Field

from agent.config import PositiveDuration
from agent.influxql import InfluxQL, InfluxQLOptions


class FleetOptions(InfluxQLOptions):
    lookback: PositiveDuration = Field(600.0, description="a series whose last point is older is left out")


class FleetTokens:
    def __init__(self, opts: FleetOptions, where: str = "collectors.efficiency.fleet") -> None:
        self.opts = opts
        self.client = InfluxQL(opts, where)

    def at(self, t_ns: int) -> dict[tuple, tuple[float, float]]:
        """{(rack, host, endpoint, model): (prompt tokens, generation tokens)} last at or before t_ns."""
        lo = t_ns - int(self.opts.lookback * 1e9)
        q = ('SELECT last("prompt_tokens_total") AS p, last("generation_tokens_total") AS g FROM "inference" '
             f"WHERE time <= {t_ns} AND time > {lo} AND \"outcome\" = '' "
             'GROUP BY "rack", "host", "endpoint", "model"')
        out = {}
        for s in self.client.query(q):  # QueryError names InfluxDB and the cause
            tags = s.get("tags", {})
            row = dict(zip(s["columns"], s["values"][-1]))
            out[(tags.get("rack", ""), tags.get("host", ""), tags.get("endpoint", ""), tags.get("model", ""))] = (
                float(row.get("p") or 0.0), float(row.get("g") or 0.0))
        return out
