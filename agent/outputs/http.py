"""An HTTP POST over one keep-alive connection, for the outputs that push (InfluxDB v1, remote write): TLS verified
unless told otherwise, a transport failure raised as TransportError, the answer's status, body and Retry-After."""

from __future__ import annotations

import http.client
import time
from pathlib import Path
from urllib.parse import urlsplit

from ..tls import client_context
from .running import TransportError

RETRY_AFTER_MAX = 600.0


class Response:
    __slots__ = ("status", "body", "retry_after")

    def __init__(self, status: int, body: str = "", retry_after: float | None = None) -> None:
        self.status = status
        self.body = body
        self.retry_after = retry_after


def retry_after(value: str | None) -> float | None:
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


class Poster:
    def __init__(self, url: str, timeout: float, tls_verify: bool = True, tls_ca_file: Path | None = None) -> None:
        u = urlsplit(url)
        self.https = u.scheme == "https"
        self.host = u.hostname or "localhost"
        self.port = u.port or (443 if self.https else 80)
        self.timeout = timeout
        self.ctx = client_context(tls_verify, tls_ca_file) if self.https else None
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.conn is None:
            if self.https:
                self.conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.ctx)
            else:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self.conn

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> Response:
        try:
            conn = self._connect()
            conn.request("POST", path, body=body, headers=headers)
            r = conn.getresponse()
            text = r.read().decode("utf-8", "replace")
            return Response(r.status, text.strip(), retry_after(r.getheader("Retry-After")))
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise TransportError(f"{type(e).__name__}: {e}") from None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
