"""Fleet token totals from InfluxDB, for the rack and facility scopes (on a facility poller).

Token counters live on every GPU node; rack and facility energy is known on the poller that reads
the PDUs and meters. The poller's efficiency collector reads the fleet's token counters back from
InfluxDB with InfluxQL (served by InfluxDB 1.x, 2.x through its v1 API, and 3.x): the last value of
every inference series at or before an instant, grouped by rack. Every node tags its samples with
its rack (`tags.rack` in its config), which is how tokens meet the rack's PDU energy.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.parse
import urllib.request

from pydantic import Field

from agent.config import PositiveDuration, Strict
from agent.secrets import read_secret


class FleetOptions(Strict):
    url: str = Field(..., pattern=r"^https?://", description="InfluxDB base URL (v1 /query API)")
    database: str = Field(..., description="database (InfluxDB 2.x/3.x: the bucket mapped for v1 queries)")
    username: str | None = None
    password_file: str | None = None
    token_file: str | None = Field(None, description="API token (InfluxDB 2.x/3.x), sent as 'Token ...'")
    token_env: str | None = None
    timeout: PositiveDuration = 5.0
    tls_verify: bool = True
    lookback: PositiveDuration = Field(600.0, description="a series whose last point is older is left out")


class FleetError(Exception):
    pass


class FleetTokens:
    def __init__(self, opts: FleetOptions, where: str = "collectors.efficiency.fleet") -> None:
        self.opts = opts
        self.headers = {"Accept": "application/json"}
        token = read_secret(f"{where}.token_file", opts.token_file, opts.token_env)
        if token:
            self.headers["Authorization"] = f"Token {token}"
        elif opts.username:
            pw = read_secret(f"{where}.password_file", opts.password_file) or ""
            self.headers["Authorization"] = "Basic " + base64.b64encode(f"{opts.username}:{pw}".encode()).decode()
        self.ctx = None
        if opts.url.startswith("https") and not opts.tls_verify:
            self.ctx = ssl.create_default_context()
            self.ctx.check_hostname = False
            self.ctx.verify_mode = ssl.CERT_NONE

    def at(self, t_ns: int) -> dict[tuple, tuple[float, float]]:
        """{(rack, host, endpoint, model): (prompt tokens, generation tokens)} last at or before t_ns."""
        lo = t_ns - int(self.opts.lookback * 1e9)
        q = ('SELECT last("prompt_tokens_total") AS p, last("generation_tokens_total") AS g FROM "inference" '
             f"WHERE time <= {t_ns} AND time > {lo} AND \"outcome\" = '' "
             'GROUP BY "rack", "host", "endpoint", "model"')
        url = self.opts.url.rstrip("/") + "/query?" + urllib.parse.urlencode({"db": self.opts.database, "q": q})
        req = urllib.request.Request(url, headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=self.opts.timeout, context=self.ctx) as r:  # noqa: S310
                doc = json.loads(r.read())
        except (OSError, ValueError) as e:
            raise FleetError(f"InfluxDB query to {self.opts.url} failed: {getattr(e, 'reason', None) or e}") from None
        res = (doc.get("results") or [{}])[0]
        if "error" in res:
            raise FleetError(f"InfluxDB: {res['error']}")
        out = {}
        for s in res.get("series", []):
            tags = s.get("tags", {})
            cols = s["columns"]
            row = dict(zip(cols, s["values"][-1]))
            out[(tags.get("rack", ""), tags.get("host", ""), tags.get("endpoint", ""), tags.get("model", ""))] = (
                float(row.get("p") or 0.0), float(row.get("g") or 0.0))
        return out
