"""Prometheus remote write 1.0 (outputs.remote_write[]): into Prometheus, Mimir, Thanos, VictoriaMetrics, ...

The same names as /metrics (agent/prom.py). Each sample is encoded once, when it is appended, as a serialized
`WriteRequest` holding its series (protobuf through the protobuf library; the schema is prompb's remote.proto,
built at import, no generated code), kept snappy-compressed in the disk buffer (a GPU row's series repeat its
labels: a fifth of the bytes to write, read back and free). Serialized messages concatenate into one message,
so a batch is the records decompressed, joined and compressed again (snappy block format, cramjam). On the
shared sender: the crash-safe disk buffer, batching, retries. One connection and one batch in flight at a time,
oldest first, so each series' samples arrive in timestamp order as the spec requires; pipelined: the next
batch is read and packed while one is in flight (the receiver's answer is most of a write's time).

Answers (Prometheus remote-write specification 1.0): 2xx delivered; 5xx and 429 retried with back-off,
honouring Retry-After; 401/403 kept and retried slowly, said loudly; 413 split; any other 4xx refused: the batch
is split until the refused samples are alone, which are dropped and counted (`rejected_points_total`), the rest
delivered.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from .. import __version__
from ..config import HttpUrl, OutputOptions, PositiveDuration, SecretFile, Size
from ..model import Sample
from ..prom import excluded, sample_labels, sample_series
from ..secrets import basic_auth, read_secret
from .buffer import DiskBuffer
from .http import Poster
from .running import OK, Result, RunningOutput, TransportError, Writer

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def write_request():
    """The WriteRequest message class (prompb/remote.proto, types.proto: the fields remote write 1.0 sends)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="aifactory/prompb.proto", package="prometheus", syntax="proto3")
    for name, fields in (
            ("Label", [("name", F.TYPE_STRING, F.LABEL_OPTIONAL, ""), ("value", F.TYPE_STRING, F.LABEL_OPTIONAL, "")]),
            ("Sample", [("value", F.TYPE_DOUBLE, F.LABEL_OPTIONAL, ""),
                        ("timestamp", F.TYPE_INT64, F.LABEL_OPTIONAL, "")]),
            ("TimeSeries", [("labels", F.TYPE_MESSAGE, F.LABEL_REPEATED, ".prometheus.Label"),
                            ("samples", F.TYPE_MESSAGE, F.LABEL_REPEATED, ".prometheus.Sample")]),
            ("WriteRequest", [("timeseries", F.TYPE_MESSAGE, F.LABEL_REPEATED, ".prometheus.TimeSeries")])):
        m = fdp.message_type.add(name=name)
        for number, (fname, ftype, label, tname) in enumerate(fields, 1):
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if tname:
                f.type_name = tname
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessages([fdp], pool=pool)["prometheus.WriteRequest"]


class RemoteWriteOptions(OutputOptions):
    """One remote-write receiver with its own disk buffer."""

    name: str = Field("remote_write", pattern=r"^[A-Za-z0-9_.-]+$", description="names the buffer and the status "
                                                                                "row")
    url: HttpUrl = Field(..., description="the receiver, e.g. http://prometheus:9090/api/v1/write")
    username: str | None = Field(None, description="basic auth user (with password_file)")
    password_file: SecretFile = Field(None, description="basic auth password file (or a credential name)")
    token_file: SecretFile = Field(None, description="file holding a bearer token")
    token_env: str | None = Field(None, description="environment variable holding a bearer token")
    headers: dict[str, str] = Field(default_factory=dict, description="more request headers (X-Scope-OrgID for "
                                                                      "Mimir's tenants)")
    include: list[Literal["processes", "jobs"]] = Field(
        default_factory=list, description="series that grow with the work: per process (gpu_process), per job")
    max_labels: int = Field(30, gt=0, le=64, description="labels a series may carry; more: left out, counted")
    batch_size: int = Field(2000, gt=0, description="samples (agent rows) per request")
    flush_interval: PositiveDuration = Field(5.0, description="send at least this often")
    timeout: PositiveDuration = Field(30.0, description="per request")
    tls_verify: bool = Field(True, description="verify the server certificate (leave on)")
    tls_ca_file: Path | None = Field(None, description="CA bundle for a private PKI")
    buffer_max_size: Size = Field(1 << 30, description="disk buffer cap in bytes; the oldest go first")
    buffer_max_points: int = Field(10_000_000, gt=0, description="disk buffer cap in samples")
    retry_max: PositiveDuration = Field(60.0, description="longest back-off between retries")

    @model_validator(mode="after")
    def _check(self):
        if self.token_file and self.token_env:
            raise ValueError("give token_file or token_env, not both")
        if (self.token_file or self.token_env) and self.username:
            raise ValueError("give a bearer token or basic auth (username, password_file), not both")
        for k in self.headers:
            if k.lower() in ("authorization", "content-encoding", "content-type", "x-prometheus-remote-write-version"):
                raise ValueError(f"headers: {k} is set by the output itself")
        return self


class RemoteWriteWriter(Writer):
    pipelined = True

    def __init__(self, opts: RemoteWriteOptions, catalogue, token: str | None, password: str | None) -> None:
        import cramjam

        self.opts = opts
        self.catalogue = catalogue
        self.compress = cramjam.snappy.compress_raw
        self.decompress = cramjam.snappy.decompress_raw
        self.message = write_request()
        self.excluded = excluded(opts.include)
        self.poster = Poster(opts.url, opts.timeout, opts.tls_verify, opts.tls_ca_file)
        u = urlsplit(opts.url)
        self.path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self.headers = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                        "User-Agent": f"aifactory-agent/{__version__}", "X-Prometheus-Remote-Write-Version": "0.1.0",
                        **opts.headers}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif opts.username:
            self.headers["Authorization"] = basic_auth(opts.username, password)
        self.label_limited = 0

    def encode(self, samples: list[Sample]) -> list[bytes]:
        """Each sample as a serialized WriteRequest of its fields' series (none: an empty record is skipped)."""
        out = []
        for s in samples:
            if s.measurement in self.excluded:
                continue
            tags = sample_labels(s)
            if len(tags) + 1 > self.opts.max_labels:
                self.label_limited += 1
                continue
            wr = self.message()
            ts_ms = s.ts // 1_000_000
            for m, labels, value in sample_series(s, tags, self.catalogue):
                series = wr.timeseries.add()
                for k, lv in sorted([("__name__", m.name), *labels]):
                    series.labels.add(name=k, value=lv)
                series.samples.add(value=value, timestamp=ts_ms)
            if wr.timeseries:
                # compressed on its own too: the disk buffer holds (and reads back, and frees) a fifth of it
                out.append(bytes(self.compress(wr.SerializeToString())))
        return out

    def pack(self, records: list[bytes]) -> bytes:
        """One WriteRequest of the records' series: serialized messages concatenate into one."""
        return bytes(self.compress(b"".join([bytes(self.decompress(r)) for r in records])))

    def write(self, records: list[bytes]) -> Result:
        return self.write_packed(self.pack(records))

    def write_packed(self, body: bytes) -> Result:
        try:
            r = self.poster.post(self.path, body, self.headers)
        except TransportError as e:
            raise TransportError(f"cannot reach {self.opts.url}: {e}") from None
        if 200 <= r.status < 300:
            return OK
        reason = f"HTTP {r.status} from {self.opts.url}: {r.body[:200]}"
        if r.status == 429 or r.status >= 500:
            return Result("retry", reason, r.retry_after)
        if r.status in (401, 403):
            return Result("auth", reason + " (check the credentials)", r.retry_after)
        if r.status == 413:
            return Result("too_large", reason)
        return Result("reject", reason)  # any other 4xx: never retried as it is (the spec)

    def describe(self, record: bytes) -> str:
        try:
            wr = self.message.FromString(bytes(self.decompress(record)))
        except Exception:  # a record is ours; this only shortens what the log says
            return record[:120].hex()
        names = {lb.value for ts in wr.timeseries for lb in ts.labels if lb.name == "__name__"}
        return ", ".join(sorted(names))[:300]

    def close(self) -> None:
        self.poster.close()

    def stats(self) -> dict:
        return {"url": self.opts.url, "label_limit_series_total": self.label_limited}


class RemoteWriteOutput(RunningOutput):
    Options = RemoteWriteOptions
    many = True

    def __init__(self, opts: RemoteWriteOptions, state_dir: Path, catalogue=None) -> None:
        where = f"outputs.remote_write[{opts.name}]"
        token = read_secret(f"{where}.token", opts.token_file, opts.token_env)
        password = read_secret(f"{where}.password_file", opts.password_file)
        self.opts = opts
        super().__init__(opts.name, RemoteWriteWriter(opts, catalogue, token, password),
                         DiskBuffer(state_dir / f"buffer-{opts.name}.db", opts.buffer_max_size,
                                    opts.buffer_max_points),
                         batch_size=opts.batch_size, flush_interval=opts.flush_interval, retry_max=opts.retry_max)

    @classmethod
    def build(cls, opts: RemoteWriteOptions, state_dir: Path, agent=None, catalogue=None) -> RemoteWriteOutput:
        return cls(opts, state_dir, catalogue)
