"""A Redfish service over HTTPS: JSON GETs on one kept-alive connection, session or basic auth.

urllib3 (already installed with influxdb-client) gives pooled keep-alive connections, TLS with
certificate and host name checks by default, and per-request connect/read timeouts. The
collector runs each target's poll in its own pool thread, so a blocking client is enough;
docs/redfish.md has the measured cost per request.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


class RedfishError(Exception):
    """The service answered, but not with what was asked (HTTP error, not JSON, ...)."""


class AuthError(RedfishError):
    """401/403: wrong user or password, or an account without the rights to read."""


class NotFound(RedfishError):
    """404: the resource is not (or no longer) there."""


@dataclass
class Auth:
    user: str | None = None
    password: str | None = None
    mode: str = "session"  # session | basic

    def __repr__(self) -> str:  # never a password in a log or a traceback
        return f"Auth(user={self.user!r}, mode={self.mode!r})"


class RedfishClient:
    ROOT = "/redfish/v1"

    def __init__(self, url: str, auth: Auth, timeout: float = 5.0, ca_file: str | None = None,
                 verify: bool = True) -> None:
        import urllib3

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL")
        self.base = f"{parts.scheme}://{parts.netloc}"
        self.auth = auth
        self.timeout = timeout
        self.token: str | None = None
        self.session_uri: str | None = None
        self.requests = 0
        kw: dict = {"maxsize": 1, "block": False, "retries": False, "headers": {
            "Accept": "application/json", "OData-Version": "4.0", "Connection": "keep-alive"}}
        if parts.scheme == "https":
            if verify:
                kw.update(cert_reqs="CERT_REQUIRED", ca_certs=ca_file)
            else:
                kw.update(cert_reqs="CERT_NONE", assert_hostname=False)
        self.pool = urllib3.connection_from_url(self.base, **kw)
        if not verify:
            import warnings

            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)

    # --- requests -----------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        if self.token:
            return {"X-Auth-Token": self.token}
        if self.auth.mode == "basic" and self.auth.user is not None:
            import urllib3

            return urllib3.make_headers(basic_auth=f"{self.auth.user}:{self.auth.password or ''}")
        return {}

    def _request(self, method: str, path: str, body: dict | None = None, deadline: float | None = None):
        import urllib3

        left = self.timeout if deadline is None else min(self.timeout, deadline - time.monotonic())
        if left <= 0:
            raise TimeoutError(f"no time left for {path}")
        headers = self._headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.requests += 1
        try:
            return self.pool.urlopen(method, path, body=data, headers=headers, redirect=False,
                                     timeout=urllib3.Timeout(connect=left, read=left), preload_content=True,
                                     assert_same_host=False)
        except urllib3.exceptions.HTTPError as e:
            # urllib3 raises the cause itself or wraps it in MaxRetryError, depending on the version and path
            cause = e.reason if isinstance(e, urllib3.exceptions.MaxRetryError) and e.reason is not None else e
            if isinstance(cause, urllib3.exceptions.SSLError):
                raise RedfishError(f"TLS: {_reason(cause)} (set ca_file to the BMC's CA, or insecure: true to "
                                   "skip verification)") from None
            # NewConnectionError (refused, unreachable) subclasses ConnectTimeoutError: it is no timeout
            if not isinstance(cause, urllib3.exceptions.NewConnectionError) and isinstance(
                    cause, (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError)):
                raise TimeoutError(f"{path}: no answer within {left:.3g} s") from None
            raise OSError(f"{self.base}: {_reason(cause)}") from None

    def get(self, path: str, deadline: float | None = None) -> dict:
        """The JSON object at path; logs in again once if a session expired."""
        r = self._request("GET", path, deadline=deadline)
        if r.status == 401 and self.token is not None:
            self.token = None  # the session timed out on the BMC (a reboot, an idle timeout): a new one
            self.login(deadline)
            r = self._request("GET", path, deadline=deadline)
        if r.status in (401, 403):
            raise AuthError(f"{path}: HTTP {r.status}: the BMC refused the credentials"
                            + ("" if self.auth.user else " (none were configured)"))
        if r.status == 404:
            raise NotFound(f"{path}: HTTP 404")
        if r.status != 200:
            raise RedfishError(f"{path}: HTTP {r.status}")
        try:
            doc = json.loads(r.data)
        except ValueError:
            raise RedfishError(f"{path}: the answer is not JSON ({r.data[:40]!r})") from None
        if not isinstance(doc, dict):
            raise RedfishError(f"{path}: the answer is not a JSON object")
        return doc

    # --- sessions -----------------------------------------------------------------------------------
    def login(self, deadline: float | None = None) -> None:
        """Opens a session (one auth check on the BMC instead of one per request) where asked."""
        if self.auth.mode != "session" or self.auth.user is None or self.token:
            return
        r = self._request("POST", f"{self.ROOT}/SessionService/Sessions",
                          {"UserName": self.auth.user, "Password": self.auth.password or ""}, deadline)
        token = r.headers.get("X-Auth-Token")
        if r.status in (401, 403):
            raise AuthError(f"session login: HTTP {r.status}: the BMC refused the credentials")
        if r.status not in (200, 201, 204) or not token:
            raise RedfishError(f"session login: HTTP {r.status} without a token (try auth: basic)")
        self.token = token
        self.session_uri = r.headers.get("Location")

    def logout(self) -> None:
        """Ends the session: BMCs have few session slots, and a leaked one holds a slot until it times out."""
        if self.token and self.session_uri:
            try:
                path = urlsplit(self.session_uri).path or self.session_uri
                self._request("DELETE", path, deadline=time.monotonic() + min(self.timeout, 2.0))
            except (OSError, TimeoutError, RedfishError):
                pass
        self.token = self.session_uri = None

    def close(self) -> None:
        self.logout()
        self.pool.close()


def _reason(e) -> str:
    text = str(getattr(e, "reason", None) or e)
    return text.split("] ", 1)[-1][:200]
