"""InfluxDB output: v1 (/write) and v2 (influxdb-client) behind one disk buffer and sender.

HTTP outcomes, as Telegraf handles them and one step further:
- 2xx: the points are acknowledged and leave the buffer;
- 400/422: the batch is split in halves until the bad lines are alone; those are dropped
  (counted, logged once per message) and the good ones land (re-sending a line that was
  already stored overwrites it: same series and timestamp);
- 413: split in halves;
- 429, 5xx, timeouts, connection errors: kept, retried with exponential back-off and
  jitter, honouring Retry-After (at most 10 minutes);
- 401/403 (and any other status): kept, retried slowly, reported loudly in the log and in
  ``aifactory status``.

``written_samples_total`` counts only points the server accepted; a batch with rejected points
puts the output in state ``rejecting`` (unhealthy in status) until a batch lands whole.

When the disk buffer cannot take an append (disk full, I/O error) the points wait in a bounded
memory backlog and are appended with the next collection that succeeds; only what overflows the
backlog is lost, and counted (``spool_lost_points_total``). The cause is logged once, the
recovery once.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import logging
import random
import sqlite3
import ssl
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

from ..backoff import backoff
from ..config import InfluxOutputOptions
from ..logonce import Latch
from ..model import Sample, to_line
from ..secrets import read_secret
from .buffer import DiskBuffer

log = logging.getLogger(__name__)

RETRY_AFTER_MAX = 600.0
BACKLOG_MAX = 200_000  # points held in memory while the disk buffer refuses appends (~40 MB)


class TransportError(Exception):
    """No HTTP answer: connection refused or reset, timeout, TLS failure."""


class Response:
    __slots__ = ("status", "body", "retry_after")

    def __init__(self, status: int, body: str = "", retry_after: float | None = None) -> None:
        self.status = status
        self.body = body
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(RETRY_AFTER_MAX, max(0.0, float(value)))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return min(RETRY_AFTER_MAX, max(0.0, parsedate_to_datetime(value).timestamp() - time.time()))
        except (TypeError, ValueError):
            return None


def _ssl_context(opts: InfluxOutputOptions) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(opts.tls_ca_file) if opts.tls_ca_file else None)
    if not opts.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class V1Client:
    """POST /write?db=&rp=&precision=ns over one keep-alive connection."""

    def __init__(self, opts: InfluxOutputOptions, token: str | None, password: str | None) -> None:
        u = urlsplit(opts.url)
        self.https = u.scheme == "https"
        self.host = u.hostname or "localhost"
        self.port = u.port or (443 if self.https else 80)
        q = {"db": opts.database, "precision": "ns"}
        if opts.retention_policy:
            q["rp"] = opts.retention_policy
        self.path = (u.path.rstrip("/") or "") + "/write?" + urlencode(q, quote_via=quote)
        self.timeout = opts.timeout
        self.gzip = opts.gzip
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        if token:
            self.headers["Authorization"] = f"Token {token}"
        elif opts.username:
            cred = base64.b64encode(f"{opts.username}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {cred}"
        if self.gzip:
            self.headers["Content-Encoding"] = "gzip"
        self.ctx = _ssl_context(opts) if self.https else None
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.conn is None:
            if self.https:
                self.conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.ctx)
            else:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self.conn

    def write(self, body: bytes) -> Response:
        if self.gzip:
            body = gzip.compress(body, compresslevel=1)
        try:
            conn = self._connect()
            conn.request("POST", self.path, body=body, headers=self.headers)
            r = conn.getresponse()
            text = r.read().decode("utf-8", "replace")
            return Response(r.status, text.strip(), _retry_after(r.getheader("Retry-After")))
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise TransportError(f"{type(e).__name__}: {e}") from None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


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
                            _retry_after(headers.get("Retry-After")))
        except Exception as e:  # urllib3 connection errors, timeouts
            raise TransportError(f"{type(e).__name__}: {e}") from None

    def close(self) -> None:
        self.client.close()


class Retry(Exception):
    def __init__(self, reason: str, after: float | None = None, auth: bool = False) -> None:
        super().__init__(reason)
        self.after = after
        self.auth = auth


class Stopping(Exception):
    """The agent stops while a batch is being split: the rest of it stays in the buffer for the next start."""


class InfluxOutput:
    """One destination: appends go to its disk buffer; a daemon thread sends them."""

    buffered = True

    def __init__(self, opts: InfluxOutputOptions, state_dir: Path, client=None) -> None:
        self.opts = opts
        self.name = opts.name
        where = f"outputs.influxdb[{opts.name}]"
        token = read_secret(f"{where}.token", opts.token_file, opts.token_env)
        password = read_secret(f"{where}.password_file", opts.password_file)
        if client is None:
            client = V1Client(opts, token, password) if opts.api == "v1" else V2Client(opts, token)
        self.client = client
        self.buffer = DiskBuffer(state_dir / f"buffer-{opts.name}.db", opts.buffer_max_size, opts.buffer_max_points)
        self.sent = 0
        self.rejected = 0
        self.requests = 0
        self.write_errors = 0
        self.state = "ok"
        self.last_error: str | None = None
        self._backlog: list[bytes] = []
        self._backlog_lock = threading.Lock()
        self._spool = Latch(log)
        self.spool_lost = 0
        self.spool_failures = 0
        self._last_rejection = ""
        self.last_success_ns: int | None = None
        self._logged_rejections: set[str] = set()
        self._wake = threading.Event()
        self._stopping = False
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._loop, name=f"output-{self.name}", daemon=True)

    # --- called by the pipeline ---------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def append(self, samples: list[Sample]) -> None:
        """Persist before the collection counts as done (runs in the spool thread)."""
        lines = [to_line(s).encode() for s in samples if s.fields]
        with self._backlog_lock:
            if self._backlog:
                lines = self._backlog + lines
            try:
                self.buffer.append(lines)
            except sqlite3.Error as e:
                self.spool_failures += 1
                over = len(lines) - BACKLOG_MAX
                if over > 0:
                    self.spool_lost += over
                    lines = lines[over:]
                self._backlog = lines
                self._spool.failed(f"cannot append to the disk buffer {self.buffer.path}: {e}",
                                   "output %s: cannot append to the disk buffer %s: %s; %d points held in memory "
                                   "(at most %d)", self.name, self.buffer.path, e, len(lines), BACKLOG_MAX)
                return
            self._spool.recovered("output %s: disk buffer writable again; %d points from memory appended%s",
                                  self.name, len(self._backlog),
                                  f", {self.spool_lost} lost so far" if self.spool_lost else "")
            self._backlog = []
        if len(self.buffer) >= self.opts.batch_size:
            self._wake.set()

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.buffer) == 0 and self._idle.is_set() and not self._backlog:
                return True
            if self.state in ("retrying", "auth_failed"):
                return False  # the server is refusing or away: what is buffered stays for next time
            self._wake.set()
            time.sleep(0.02)
        return len(self.buffer) == 0

    def stop(self, timeout: float) -> bool:
        done = self.flush(timeout)
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=max(0.5, timeout))
        if self._thread.is_alive():
            # a request still in flight past the deadline: its connection and the buffer stay open under it
            # (the thread is a daemon); what it has not acknowledged is in the buffer for the next start
            log.warning("output %s: a write is still in flight at shutdown; left to finish or die with the process",
                        self.name)
        else:
            self.client.close()
            self.buffer.close()
        if self._backlog:
            log.error("output %s: %d points held in memory (the disk buffer refused them) are lost at shutdown",
                      self.name, len(self._backlog))
            self.spool_lost += len(self._backlog)
            self._backlog = []
        if not done:
            log.warning("output %s: %d points stay in the disk buffer and will be sent after the restart",
                        self.name, len(self.buffer))
        return done

    # --- the sender ---------------------------------------------------------------
    def _loop(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                failures = self._step(failures)
            except Exception as e:  # the buffer's disk (full, I/O error): never let the sender die
                failures += 1
                self.buffer.release()
                self._set_state("buffer_error", f"disk buffer: {type(e).__name__}: {e}")
                self._pause(backoff(failures, 0.2, 5.0))  # a local disk: space comes back soon

    def _pause(self, seconds: float) -> None:
        """Idle until the time is up or something wakes the sender (new points, a flush, the stop)."""
        self._idle.set()
        self._wake.wait(seconds)
        self._wake.clear()

    def _step(self, failures: int) -> int:
        ids, lines = self.buffer.peek(self.opts.batch_size)
        if not ids:
            self._pause(self.opts.flush_interval + random.random() * self.opts.flush_jitter)
            return failures
        self._idle.clear()
        rejected_before = self.rejected
        try:
            self._deliver(lines)
        except Stopping:
            self.buffer.release()
            return failures
        except Retry as r:
            self.buffer.release()
            failures += 1
            self.write_errors += 1
            self._set_state("auth_failed" if r.auth else "retrying", str(r))
            self._pause(max(r.after or 0.0, backoff(failures, 0.5, self.opts.retry_max)))
            return failures
        self.buffer.remove(ids)
        rejected = self.rejected - rejected_before
        self.sent += len(lines) - rejected
        self.last_success_ns = time.time_ns()
        if rejected:
            self._set_state("rejecting", f"the server rejected {rejected} of {len(lines)} points "
                                         f"of the last batch ({self._last_rejection})")
        else:
            self._set_state("ok", None)
        return 0

    def _set_state(self, state: str, error: str | None) -> None:
        if state != self.state:
            if state == "ok":
                log.info("output %s: delivering again (%d points buffered)", self.name, len(self.buffer))
            elif state == "rejecting":
                log.error("output %s: %s; rejected points are dropped", self.name, error)
            elif state == "auth_failed":
                log.error("output %s: AUTHENTICATION FAILED, points are kept: %s", self.name, error)
            else:
                log.warning("output %s: %s; points are kept and retried", self.name, error)
        self.state = state
        self.last_error = error

    def _deliver(self, lines: list[bytes]) -> None:
        if self._stopping:
            raise Stopping()
        self.requests += 1
        try:
            r = self.client.write(b"\n".join(lines))
        except TransportError as e:
            raise Retry(f"cannot reach {self.opts.url}: {e}") from None
        if 200 <= r.status < 300:
            return
        if r.status in (400, 422, 413):
            if len(lines) == 1:
                self.rejected += 1
                self._last_rejection = f"HTTP {r.status}: {r.body[:200]}"
                key = f"{r.status} {r.body[:200]}"
                if key not in self._logged_rejections and len(self._logged_rejections) < 100:
                    self._logged_rejections.add(key)
                    log.error("output %s: server rejected a point (HTTP %s: %s); dropped: %s",
                              self.name, r.status, r.body[:300], lines[0][:300].decode("utf-8", "replace"))
                return
            mid = len(lines) // 2
            self._deliver(lines[:mid])
            self._deliver(lines[mid:])
            return
        if r.status in (401, 403):
            raise Retry(f"HTTP {r.status} from {self.opts.url}: {r.body[:200]} (check the token/credentials)",
                        r.retry_after, auth=True)
        if r.status == 429 or r.status >= 500:
            raise Retry(f"HTTP {r.status} from {self.opts.url}: {r.body[:200]}", r.retry_after)
        raise Retry(f"HTTP {r.status} from {self.opts.url}: {r.body[:200]}", r.retry_after)

    def stats(self) -> dict:
        d = self.buffer.stats()
        spooling = self._spool.error is not None
        d.update({"written_samples_total": self.sent, "rejected_points_total": self.rejected,
                  "write_errors_total": self.write_errors, "requests_total": self.requests,
                  "state": "buffer_failing" if spooling else self.state,
                  "last_error": self._spool.error if spooling else self.last_error,
                  "last_write_ns": self.last_success_ns,
                  "auth_failing": self.state == "auth_failed", "url": self.opts.url, "api": self.opts.api,
                  "memory_backlog_points": len(self._backlog), "spool_lost_points_total": self.spool_lost,
                  "spool_errors_total": self.spool_failures})
        return d
