"""InfluxQL queries over the v1 /query API (InfluxDB 1.x, 2.x v1 compatibility, 3.x).

Used where the agent reads the fleet back: tokens for rack/facility efficiency on a poller, and
`aifactory alerts --fleet`.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path

from pydantic import Field

from .config import HttpUrl, PositiveDuration, SecretFile, Strict
from .secrets import basic_auth, read_secret
from .tls import client_context


class InfluxQLOptions(Strict):
    url: HttpUrl = Field(..., description="InfluxDB base URL (v1 /query API)")
    database: str = Field(..., description="database (InfluxDB 2.x/3.x: the bucket mapped for v1 queries)")
    username: str | None = Field(None, description="basic auth user (InfluxDB 1.x)")
    password_file: SecretFile = Field(None, description="file holding that user's password")
    token_file: SecretFile = Field(None, description="API token (InfluxDB 2.x/3.x), sent as 'Token ...'")
    token_env: str | None = Field(None, description="environment variable holding the API token")
    timeout: PositiveDuration = Field(5.0, description="per query")
    tls_verify: bool = Field(True, description="verify the server certificate (leave on)")
    tls_ca_file: Path | None = Field(None, description="CA bundle for a private PKI")


class QueryError(Exception):
    pass


class InfluxQL:
    def __init__(self, opts: InfluxQLOptions, where: str = "influxql") -> None:
        self.opts = opts
        self.headers = {"Accept": "application/json"}
        token = read_secret(f"{where}.token_file", opts.token_file, opts.token_env)
        if token:
            self.headers["Authorization"] = f"Token {token}"
        elif opts.username:
            pw = read_secret(f"{where}.password_file", opts.password_file) or ""
            self.headers["Authorization"] = basic_auth(opts.username, pw)
        self.ctx = client_context(opts.tls_verify, opts.tls_ca_file) if opts.url.startswith("https") else None

    def query(self, q: str) -> list[dict]:
        """The series of the first statement's result: [{"name", "tags", "columns", "values"}]."""
        url = self.opts.url.rstrip("/") + "/query?" + urllib.parse.urlencode({"db": self.opts.database, "q": q,
                                                                              "epoch": "ns"})
        req = urllib.request.Request(url, headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=self.opts.timeout, context=self.ctx) as r:  # noqa: S310
                doc = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise QueryError(f"InfluxDB at {self.opts.url} answered HTTP {e.code}"
                             + (": check the credentials" if e.code in (401, 403) else "")) from None
        except (OSError, ValueError) as e:
            raise QueryError(f"InfluxDB query to {self.opts.url} failed: {getattr(e, 'reason', None) or e}") from None
        res = (doc.get("results") or [{}])[0]
        if "error" in res:
            raise QueryError(f"InfluxDB: {res['error']}")
        return res.get("series", [])
