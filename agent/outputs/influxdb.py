"""InfluxDB output: v1 (/write) and v2 (influxdb-client); an encoder and a writer on the shared sender.

HTTP answers, as Telegraf reads them and one step further, mapped onto the sender's outcome classes
(agent/outputs/running.py, which buffers, batches, retries and reports for every output):
- 2xx: ok, the points leave the buffer;
- 400/422: reject: the batch is split in halves until the bad lines are alone; those are dropped (counted,
  logged once per message) and the good ones land (re-sending a line that was already stored overwrites it:
  same series and timestamp);
- 413: too_large, split in halves;
- 429, 5xx, timeouts, connection errors: retry with exponential back-off and jitter, honouring Retry-After
  (at most 10 minutes);
- 401/403: auth: kept, retried slowly, reported loudly in the log and in ``aifactory status``; any other
  status: retry.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlencode, urlsplit

from pydantic import Field, model_validator

from ..config import Duration, HttpUrl, OutputOptions, PositiveDuration, SecretFile, Size
from ..model import Sample, to_line
from ..secrets import basic_auth, read_secret
from .buffer import DiskBuffer
from .http import Poster, Response, retry_after
from .running import OK, Result, RunningOutput, TransportError, Writer

log = logging.getLogger(__name__)


class InfluxOutputOptions(OutputOptions):
    """One InfluxDB destination with its own disk buffer."""

    name: str = Field("influxdb", pattern=r"^[A-Za-z0-9_.-]+$", description="names the buffer and the status row")
    api: Literal["v1", "v2"] = Field("v2", description="v2: /api/v2/write via influxdb-client (InfluxDB 2, 3, "
                                     "Cloud); v1: /write (InfluxDB 1.x, and 2.x v1 compatibility)")
    url: HttpUrl = Field(..., description="e.g. https://influx.example:8086")
    # v2
    org: str | None = Field(None, description="v2: organisation")
    bucket: str | None = Field(None, description="v2: bucket")
    database: str | None = Field(None, description="v1: database")
    retention_policy: str | None = Field(None, description="v1: retention policy (default: the database's)")
    username: str | None = Field(None, description="v1: basic auth user (with password_file)")
    # secrets: never inline; a file (systemd credential: a bare name is looked up in
    # $CREDENTIALS_DIRECTORY) or an environment variable
    token_file: SecretFile = Field(None, description="file holding the API token")
    token_env: str | None = Field(None, description="environment variable holding the API token")
    password_file: SecretFile = Field(None, description="v1 basic auth password file")
    gzip: bool = Field(True, description="compress request bodies")
    batch_size: int = Field(10_000, gt=0, description="points per request (InfluxDB's guidance: 5,000 to 10,000)")
    connections: int = Field(2, ge=1, le=8, description="requests in flight at once, each on its own connection "
                                                         "(points may land out of order, which InfluxDB ignores)")
    flush_interval: PositiveDuration = Field(10.0, description="send at least this often")
    flush_jitter: Duration = Field(2.0, description="random extra delay per flush")
    timeout: PositiveDuration = Field(10.0, description="per request")
    tls_verify: bool = Field(True, description="verify the server certificate (leave on)")
    tls_ca_file: Path | None = Field(None, description="CA bundle for a private PKI")
    buffer_max_size: Size = Field(1 << 30, description="disk buffer cap in bytes; the oldest go first")
    buffer_max_points: int = Field(10_000_000, gt=0, description="disk buffer cap in points")
    retry_max: PositiveDuration = Field(60.0, description="longest back-off between retries")

    @model_validator(mode="after")
    def _check(self):
        if self.api == "v2" and not self.bucket:
            raise ValueError("api v2 needs bucket (and org for InfluxDB 2)")
        if self.api == "v1" and not self.database:
            raise ValueError("api v1 needs database")
        if self.token_file and self.token_env:
            raise ValueError("give token_file or token_env, not both")
        return self


class V1Client(Poster):
    """POST /write?db=&rp=&precision=ns over one keep-alive connection."""

    def __init__(self, opts: InfluxOutputOptions, token: str | None, password: str | None) -> None:
        super().__init__(opts.url, opts.timeout, opts.tls_verify, opts.tls_ca_file)
        q = {"db": opts.database, "precision": "ns"}
        if opts.retention_policy:
            q["rp"] = opts.retention_policy
        self.path = (urlsplit(opts.url).path.rstrip("/") or "") + "/write?" + urlencode(q, quote_via=quote)
        self.gzip = opts.gzip
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        if token:
            self.headers["Authorization"] = f"Token {token}"
        elif opts.username:
            self.headers["Authorization"] = basic_auth(opts.username, password)
        if self.gzip:
            self.headers["Content-Encoding"] = "gzip"

    def write(self, body: bytes, compressed: bool = False) -> Response:
        if self.gzip and not compressed:
            body = gzip.compress(body, compresslevel=1)
        return self.post(self.path, body, self.headers)


class V2Client:
    """/api/v2/write through influxdb-client (InfluxDB 2.x, 3.x, Cloud)."""

    def __init__(self, opts: InfluxOutputOptions, token: str | None) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.opts = opts
        self.client = InfluxDBClient(url=opts.url, token=token or "", org=opts.org or "-",
                                     timeout=int(opts.timeout * 1000), verify_ssl=opts.tls_verify,
                                     ssl_ca_cert=str(opts.tls_ca_file) if opts.tls_ca_file else None,
                                     enable_gzip=opts.gzip)
        self.api = self.client.write_api(write_options=SYNCHRONOUS)

    def write(self, body: bytes) -> Response:
        from influxdb_client.rest import ApiException

        try:
            self.api.write(bucket=self.opts.bucket, org=self.opts.org or "-", record=body, write_precision="ns")
            return Response(204)
        except ApiException as e:
            headers = e.headers or {}
            return Response(int(e.status or 0), str(e.body or e.reason or "").strip(),
                            retry_after(headers.get("Retry-After")))
        except Exception as e:  # urllib3 connection errors, timeouts
            raise TransportError(f"{type(e).__name__}: {e}") from None

    def close(self) -> None:
        self.client.close()


class InfluxWriter(Writer):
    """Line protocol to one InfluxDB (or any v1/v2 write endpoint: VictoriaMetrics, InfluxDB 3)."""

    def __init__(self, opts: InfluxOutputOptions, client) -> None:
        self.opts = opts
        self.client = client
        # v1 with gzip: the disk buffer's chunks, compressed at append, are sent as they are (write_packed)
        self.accepts_packed = opts.api == "v1" and opts.gzip and isinstance(client, V1Client)

    def encode(self, samples: list[Sample]) -> list[bytes]:
        return [to_line(s).encode() for s in samples]

    def write(self, records: list[bytes]) -> Result:
        return self._answer(lambda: self.client.write(b"\n".join(records)))

    def _answer(self, send) -> Result:
        try:
            r = send()
        except TransportError as e:
            raise TransportError(f"cannot reach {self.opts.url}: {e}") from None
        if 200 <= r.status < 300:
            return OK
        reason = f"HTTP {r.status}: {r.body[:200]}"
        if r.status in (400, 422):
            return Result("reject", reason)
        if r.status == 413:
            return Result("too_large", reason)
        if r.status in (401, 403):
            return Result("auth", f"HTTP {r.status} from {self.opts.url}: {r.body[:200]} (check the token/credentials)",
                          r.retry_after)
        return Result("retry", f"HTTP {r.status} from {self.opts.url}: {r.body[:200]}", r.retry_after)

    def write_packed(self, body: bytes) -> Result:
        """A batch the disk buffer compressed when it was appended (v1 with gzip: concatenated gzip members)."""
        return self._answer(lambda: self.client.write(body, compressed=True))

    def describe(self, record: bytes) -> str:
        return record[:300].decode("utf-8", "replace")

    def close(self) -> None:
        self.client.close()

    def stats(self) -> dict:
        return {"url": self.opts.url, "api": self.opts.api}


class InfluxOutput(RunningOutput):
    """One InfluxDB destination with its own disk buffer (outputs.influxdb[] in the config)."""

    Options = InfluxOutputOptions
    many = True

    @classmethod
    def build(cls, opts: InfluxOutputOptions, state_dir: Path, agent=None, catalogue=None) -> InfluxOutput:
        return cls(opts, state_dir)

    def __init__(self, opts: InfluxOutputOptions, state_dir: Path, client=None) -> None:
        where = f"outputs.influxdb[{opts.name}]"
        token = read_secret(f"{where}.token", opts.token_file, opts.token_env)
        password = read_secret(f"{where}.password_file", opts.password_file)
        more = []
        if client is None:
            def new():
                return V1Client(opts, token, password) if opts.api == "v1" else V2Client(opts, token)

            client = new()
            more = [InfluxWriter(opts, new()) for _ in range(opts.connections - 1)]
        self.opts = opts
        self.client = client
        super().__init__(opts.name, InfluxWriter(opts, client),
                         DiskBuffer(state_dir / f"buffer-{opts.name}.db", opts.buffer_max_size,
                                    opts.buffer_max_points, compress=opts.gzip and opts.api == "v1"),
                         more_writers=more,
                         batch_size=opts.batch_size, flush_interval=opts.flush_interval,
                         flush_jitter=opts.flush_jitter, retry_max=opts.retry_max)
