"""The /metrics endpoint (outputs.prometheus): the latest value of every series, for Prometheus to scrape.

A pull-side peer of the outputs, fed by the same publish path: the pipeline hands it each collection (`append`,
in the spool thread) and it keeps the latest sample of each series, pre-rendered, so a scrape joins bytes
instead of formatting numbers (its CPU per series is measured against node_exporter's in bench/prometheus).
Names and types come from the catalogue (agent/prom.py). Content negotiation: OpenMetrics 1.0.0 when the scraper
asks for it (Prometheus does), else the text format 0.0.4; gzip when accepted.

Bounded and honest: a series its collector has not refreshed for 3 of that measurement's observed intervals
leaves the page (a GPU pulled, a model unloaded), as it leaves the sample bus; past `max_series` new series are
refused and counted; per-process and per-job series only when asked for (`include`); a series with more than
`max_labels` labels is left out and counted. Listens on 127.0.0.1 unless configured; TLS and basic auth from a
web config file of the shape Prometheus' own uses (tls_server_config, basic_auth_users with bcrypt hashes).
"""

from __future__ import annotations

import base64
import gzip
import logging
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..config import OutputOptions
from ..logonce import Latch
from ..model import Sample
from ..prom import PromMetric, excluded, header, labels_text, sample_labels, sample_series

log = logging.getLogger(__name__)

EXPIRE_INTERVALS = 3.0
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TEXT = "text/plain; version=0.0.4; charset=utf-8"


class TlsServerConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")  # Prometheus' web config has more keys; these two are ours
    cert_file: Path
    key_file: Path


class WebConfig(BaseModel):
    """Prometheus' web configuration file (exporter-toolkit): the keys this endpoint honours."""

    model_config = ConfigDict(extra="ignore")
    tls_server_config: TlsServerConfig | None = None
    basic_auth_users: dict[str, str] = Field(default_factory=dict, description="user -> bcrypt hash")


def load_web_config(path: Path) -> WebConfig:
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"web config {path}: {e}") from None
    cfg = WebConfig.model_validate(raw)
    if cfg.basic_auth_users:
        try:
            import bcrypt  # noqa: F401
        except ImportError:
            raise ValueError(f"web config {path}: basic_auth_users needs the bcrypt package "
                             "(pip install 'aifactory-agent[prometheus]')") from None
        for user, h in cfg.basic_auth_users.items():
            if not h.startswith(("$2a$", "$2b$", "$2y$")):
                raise ValueError(f"web config {path}: basic_auth_users.{user} is not a bcrypt hash")
    return cfg


class PrometheusOptions(OutputOptions):
    """The /metrics endpoint: off until configured (`outputs.prometheus: {enabled: true}`, or any of its keys)."""

    enabled: bool = Field(False, description="serve /metrics (on when the section sets any key)")

    listen: str = Field("127.0.0.1:9464", description="address:port to listen on (loopback unless you say so)")
    path: str = Field("/metrics", pattern=r"^/[A-Za-z0-9_./-]*$", description="the endpoint's path")
    web_config_file: Path | None = Field(None, description="TLS and basic auth, in the shape of Prometheus' "
                                                           "web config file (tls_server_config, basic_auth_users)")
    include: list[Literal["processes", "jobs"]] = Field(
        default_factory=list, description="series that grow with the work: per process (gpu_process), per job")
    max_series: int = Field(200_000, gt=0, description="series on the page at most; new ones past it are refused")
    max_labels: int = Field(30, gt=0, le=64, description="labels a series may carry; more: left out, counted")

    @model_validator(mode="before")
    @classmethod
    def _on_when_configured(cls, data):
        # a listener is opened only where an operator asked for one: a written section turns it on
        if isinstance(data, dict) and data and "enabled" not in data:
            data = {**data, "enabled": True}
        return data

    @field_validator("listen")
    @classmethod
    def _address(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
            raise ValueError(f"{v!r}: expected ADDRESS:PORT, e.g. 127.0.0.1:9464 or [::1]:9464")
        return v

    @field_validator("web_config_file")
    @classmethod
    def _web(cls, v: Path | None) -> Path | None:
        if v is not None:
            load_web_config(v)
        return v

    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class Page:
    """The latest sample of every series, rendered once, joined per scrape."""

    def __init__(self, catalogue, max_series: int, max_labels: int, excluded: set[str]) -> None:
        self.catalogue = catalogue
        self.max_series = max_series
        self.max_labels = max_labels
        self.excluded = excluded
        self.lock = threading.Lock()
        # family -> series key -> (ts, its line: the same in the text format and OpenMetrics)
        self.series: dict[str, dict[tuple, tuple[int, bytes]]] = {}
        self.metrics: dict[str, PromMetric] = {}  # family -> its metric
        self.measurement_of: dict[str, str] = {}  # family -> measurement (for expiry)
        self.life: dict[str, int] = {}  # measurement -> ns a series lives unrefreshed
        self.last_ts: dict[str, int] = {}  # measurement -> its newest sample time
        self.count = 0
        self.refused = 0
        self.too_many_labels = 0
        self.expired = 0
        self.newest = 0
        self._swept = 0
        self._pages: dict[bool, bytes] = {}  # openmetrics? -> the rendered page, until the next change

    def add(self, samples: list[Sample]) -> None:
        with self.lock:
            for s in samples:
                if s.measurement in self.excluded or not s.fields:
                    continue
                self._learn(s.measurement, s.ts)
                tags = sample_labels(s)
                if len(tags) + 1 > self.max_labels:
                    self.too_many_labels += 1
                    continue
                key = tuple(tags)
                for m, labels, value in sample_series(s, tags, self.catalogue):
                    fam = self.series.get(m.family)
                    if fam is None:
                        fam = self.series[m.family] = {}
                        self.metrics[m.family] = m
                        self.measurement_of[m.family] = s.measurement
                    old = fam.get(key)
                    if old is None:
                        if self.count >= self.max_series:
                            if self.refused == 0:
                                log.warning("prometheus endpoint: %d series: new series refused (counted)",
                                            self.max_series)
                            self.refused += 1
                            continue
                        self.count += 1
                    elif old[0] > s.ts:
                        continue
                    body = f"{m.name}{{{labels_text(labels)}}} {value!r}\n" if labels else f"{m.name} {value!r}\n"
                    fam[key] = (s.ts, body.encode())
                self.newest = max(self.newest, s.ts)
            if self.newest - self._swept > 1e9:
                self._sweep()
            self._pages.clear()

    def _learn(self, measurement: str, ts: int) -> None:
        """A measurement's series live EXPIRE_INTERVALS of the gap between its collections (learnt, at least 3 s)."""
        last = self.last_ts.get(measurement)
        if last is not None and ts > last:
            gap = ts - last
            self.life[measurement] = max(self.life.get(measurement, 0), int(gap * EXPIRE_INTERVALS), int(3e9))
        if last is None or ts > last:
            self.last_ts[measurement] = ts

    def _sweep(self) -> None:
        self._swept = self.newest
        for family, fam in self.series.items():
            life = self.life.get(self.measurement_of[family])
            if not life:
                continue
            gone = [k for k, (ts, _) in fam.items() if ts + life < self.newest]
            for k in gone:
                del fam[k]
            self.count -= len(gone)
            self.expired += len(gone)

    def render(self, openmetrics: bool) -> bytes:
        with self.lock:
            page = self._pages.get(openmetrics)
            if page is not None:
                return page
            parts: list[bytes] = []
            for family in sorted(self.series):
                fam = self.series[family]
                if not fam:
                    continue
                parts.append(header(self.metrics[family], openmetrics).encode())
                parts.extend(line for _, line in fam.values())
            if openmetrics:
                parts.append(b"# EOF\n")
            page = self._pages[openmetrics] = b"".join(parts)
            return page


class _Handler(BaseHTTPRequestHandler):
    server_version = "aifactory-agent"
    protocol_version = "HTTP/1.1"
    endpoint: PrometheusEndpoint  # set on the class made per server

    def log_message(self, *args) -> None:  # requests are counted, not logged
        pass

    def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8", extra: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        users = self.endpoint.users
        if not users:
            return True
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return self.endpoint.check(user, password)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        ep = self.endpoint
        if not self._authorized():
            ep.unauthorized += 1
            self._send(401, b"Unauthorized\n", extra={"WWW-Authenticate": 'Basic realm="aifactory-agent"'})
            return
        path = self.path.split("?", 1)[0]
        if path != ep.opts.path:
            self._send(404 if path != "/" else 200, f"metrics at {ep.opts.path}\n".encode())
            return
        openmetrics = "application/openmetrics-text" in self.headers.get("Accept", "")
        t0 = time.process_time()
        body = ep.page.render(openmetrics)
        extra = {}
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            body = ep.gzipped(openmetrics, body)
            extra["Content-Encoding"] = "gzip"
        ep.scrapes += 1
        ep.scrape_cpu += time.process_time() - t0
        self._send(200, body, OPENMETRICS if openmetrics else TEXT, extra)


class PrometheusEndpoint:
    """An output whose destination is the scraper: `append` keeps the page, a server thread serves it."""

    Options = PrometheusOptions
    many = False

    def __init__(self, opts: PrometheusOptions, catalogue=None) -> None:
        self.opts = opts
        self.name = "prometheus"
        self.page = Page(catalogue, opts.max_series, opts.max_labels, excluded(opts.include))
        web = load_web_config(opts.web_config_file) if opts.web_config_file else WebConfig()
        self.users = web.basic_auth_users
        self._verified: dict[tuple[str, str], bool] = {}  # bcrypt is slow by design: a scrape is not
        self.tls = web.tls_server_config
        self.scrapes = 0
        self.scrape_cpu = 0.0
        self.unauthorized = 0
        self._gz: dict[bool, tuple[bytes, bytes]] = {}
        self.server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._serving = Latch(log)
        self.state = "new"
        self.last_error: str | None = None

    @classmethod
    def build(cls, opts: PrometheusOptions, state_dir: Path, agent=None, catalogue=None) -> PrometheusEndpoint:
        return cls(opts, catalogue)

    def check(self, user: str, password: str) -> bool:
        import bcrypt

        key = (user, password)
        hit = self._verified.get(key)
        if hit is None:
            h = self.users.get(user)
            hit = bool(h) and bcrypt.checkpw(password.encode(), h.encode())
            if len(self._verified) > 1000:
                self._verified.clear()
            self._verified[key] = hit
        return hit

    def gzipped(self, openmetrics: bool, body: bytes) -> bytes:
        hit = self._gz.get(openmetrics)
        if hit is None or hit[0] is not body:
            hit = self._gz[openmetrics] = (body, gzip.compress(body, compresslevel=1))
        return hit[1]

    # --- the pipeline's contract -------------------------------------------------
    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"endpoint": self})
        host, port = self.opts.address()
        try:
            server = ThreadingHTTPServer((host, port), handler)
        except OSError as e:
            # a port taken is this output's failure, said in status; the agent and the other outputs go on
            self.state, self.last_error = "failed", f"cannot listen on {self.opts.listen}: {e.strerror or e}"
            self._serving.failed(self.last_error, "prometheus endpoint: %s", self.last_error)
            return
        server.daemon_threads = True
        if self.tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(self.tls.cert_file), str(self.tls.key_file))
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self.server = server
        self._thread = threading.Thread(target=server.serve_forever, name="prometheus-endpoint", daemon=True)
        self._thread.start()
        self.state = "ok"
        log.info("prometheus endpoint: serving %s%s on %s", "https://" if self.tls else "http://", self.opts.listen,
                 self.opts.path)

    def append(self, samples: list[Sample]) -> None:
        self.page.add(samples)

    def flush(self, timeout: float) -> bool:
        return True

    def stop(self, timeout: float) -> bool:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        return True

    def stats(self) -> dict:
        p = self.page
        return {"state": self.state, "last_error": self.last_error, "url": f"{self.opts.listen}{self.opts.path}",
                "scrapes_total": self.scrapes, "scrape_cpu_seconds_total": round(self.scrape_cpu, 6),
                "exposed_series": p.count, "expired_series_total": p.expired, "refused_series_total": p.refused,
                "label_limit_series_total": p.too_many_labels, "unauthorized_requests_total": self.unauthorized}
