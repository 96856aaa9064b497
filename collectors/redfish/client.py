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

LOGIN_BACKOFF = (5.0, 300.0)  # seconds: the first wait after a refused login, and the longest
MAX_ANSWER = 8 << 20  # the largest Redfish answer read (a $expand of a big Sensors collection is ~1 MB)


def retry_after(value) -> float | None:
    """Seconds from a Retry-After header (RFC 9110: delay-seconds or an HTTP date); None if absent or odd."""
    if not value:
        return None
    try:
        return max(0.0, float(int(str(value).strip())))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


class RedfishError(Exception):
    """The service answered, but not with what was asked (HTTP error, not JSON, ...)."""


class AuthError(RedfishError):
    """401/403: wrong user or password, or an account without the rights to read."""


class Forbidden(AuthError):
    """403 on one resource: this account may not read it; the session and the other resources are fine."""


class NotFound(RedfishError):
    """404: the resource is not (or no longer) there."""


@dataclass
class Auth:
    user: str | None = None
    password: str | None = None
    mode: str = "session"  # session | basic

    def __repr__(self) -> str:  # never a password in a log or a traceback
        return f"Auth(user={self.user!r}, mode={self.mode!r})"


class BadAnswer(RedfishError):
    """One resource answered with something unusable (over the size cap, not JSON, nested too deep): that
    resource is left out and said; the others are still read."""


class AnswerTooLarge(BadAnswer):
    """An answer over the size cap: refused whole, never parsed in part."""


@dataclass
class Answer:
    status: int
    headers: dict
    data: bytes


class _Watchdog:
    """Shuts a request's socket when its deadline passes. One daemon thread for every client: each request
    arms a deadline for its thread, the connection (urllib3's, subclassed) names its socket when it starts
    reading the answer, and the request disarms when done; a thread still reading at its deadline has its
    socket shut, so recv returns at once whatever the peer drips."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()
        self.armed: dict[int, list] = {}  # thread id -> [deadline, socket or None, fired]
        self.thread: threading.Thread | None = None
        self.local = threading.local()

    def arm(self, deadline: float) -> None:
        import threading

        with self.lock:
            self.armed[threading.get_ident()] = [deadline, None, False]
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="redfish-deadlines", daemon=True)
                self.thread.start()

    def watch(self, sock) -> None:
        import threading

        with self.lock:
            entry = self.armed.get(threading.get_ident())
            if entry is not None:
                entry[1] = sock

    def fired(self) -> bool:
        import threading

        entry = self.armed.get(threading.get_ident())
        return bool(entry and entry[2])

    def disarm(self) -> None:
        import threading

        with self.lock:
            self.armed.pop(threading.get_ident(), None)

    def _run(self) -> None:
        import socket

        while True:
            time.sleep(0.05)
            now = time.monotonic()
            with self.lock:
                due = [e for e in self.armed.values() if e[0] <= now and e[1] is not None and not e[2]]
                for e in due:
                    e[2] = True
            for e in due:
                try:
                    e[1].shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


WATCHDOG = _Watchdog()


_WATCHED: dict[type, type] = {}


def _watched(base: type) -> type:
    """urllib3's connection class that names its socket to the watchdog when it starts reading an answer (one
    class per base, made once for every client)."""
    cls = _WATCHED.get(base)
    if cls is None:
        class Watched(base):
            def getresponse(self, *a, **kw):
                WATCHDOG.watch(self.sock)
                return super().getresponse(*a, **kw)

        Watched.__name__ = f"Watched{base.__name__}"
        cls = _WATCHED[base] = Watched
    return cls


class RedfishClient:
    ROOT = "/redfish/v1"

    def __init__(self, url: str, auth: Auth, timeout: float = 5.0, ca_file: str | None = None,
                 verify: bool = True, max_answer: int = MAX_ANSWER) -> None:
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
        self.not_before = 0.0  # monotonic time before which the BMC asked not to be asked (Retry-After)
        self.next_login = 0.0  # monotonic time of the next login try after a refused one
        self.login_backoff = LOGIN_BACKOFF[0]
        self.login_error: RedfishError | None = None
        self.logins = 0
        kw: dict = {"maxsize": 1, "block": False, "retries": False, "headers": {
            "Accept": "application/json", "OData-Version": "4.0", "Connection": "keep-alive"}}
        if parts.scheme == "https":
            if verify:
                kw.update(cert_reqs="CERT_REQUIRED", ca_certs=ca_file)
            else:
                kw.update(cert_reqs="CERT_NONE", assert_hostname=False)
        self.max_answer = max_answer
        self.pool = urllib3.connection_from_url(self.base, **kw)
        from urllib3.connection import HTTPConnection, HTTPSConnection

        self.pool.ConnectionCls = _watched(HTTPSConnection if parts.scheme == "https" else HTTPConnection)
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

    def _request(self, method: str, path: str, body: dict | None = None, deadline: float | None = None) -> Answer:
        """One request, answered whole within the deadline (or the timeout where there is none) and within
        max_answer bytes, or an error. urllib3's read timeout is per recv: a BMC dripping a byte a second would
        hold the thread for as long as it drips, so the socket is shut by the watchdog at the deadline."""
        import urllib3

        now = time.monotonic()
        # one request never takes more than a few of its timeouts, even under a probe's long deadline
        end = now + self.timeout if deadline is None else min(deadline, now + self.timeout * 4)
        left = min(self.timeout, end - now)
        if left <= 0:
            raise TimeoutError(f"no time left for {path}")
        headers = self._headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.requests += 1
        WATCHDOG.arm(end)
        try:
            r = self.pool.urlopen(method, path, body=data, headers=headers, redirect=False,
                                  timeout=urllib3.Timeout(connect=left, read=left), preload_content=False,
                                  assert_same_host=False)
            whole = False
            try:
                length = r.headers.get("Content-Length")
                size = int(length) if length and length.isdigit() else None
                if size is not None and size > self.max_answer:
                    raise AnswerTooLarge(f"{path}: an answer of {size} bytes refused (more than "
                                         f"max_answer_size, {self.max_answer})")
                if size is not None:
                    data = r.read()  # its size is known and allowed; the watchdog bounds the time
                else:  # chunked: counted as it comes, refused once past the cap
                    chunks, size = [], 0
                    read = getattr(r, "read1", None) or r.read
                    while chunk := read(65536):
                        size += len(chunk)
                        if size > self.max_answer:
                            raise AnswerTooLarge(f"{path}: an answer larger than {self.max_answer} bytes refused "
                                                 "(max_answer_size), not read in part")
                        chunks.append(chunk)
                    data = b"".join(chunks)
                if time.monotonic() > end:
                    raise TimeoutError(f"{path}: answer not complete within the deadline")
                whole = True
                return Answer(r.status, r.headers, data)
            finally:
                if whole:
                    r.release_conn()  # read to the end: the connection is kept for the next request
                else:
                    r.close()  # an answer left half read cannot share the connection
        except urllib3.exceptions.HTTPError as e:
            if WATCHDOG.fired():
                raise TimeoutError(f"{path}: no complete answer within the deadline") from None
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
        except OSError:
            if WATCHDOG.fired():
                raise TimeoutError(f"{path}: no complete answer within the deadline") from None
            raise
        finally:
            WATCHDOG.disarm()

    def _waited(self, r, path: str, deadline: float | None):
        """A 503 with Retry-After: asked again once if the wait fits the deadline, else the BMC is left alone
        until then (every later request before that is refused here, not sent)."""
        if r.status != 503:
            return r
        wait = retry_after(r.headers.get("Retry-After"))
        left = (deadline - time.monotonic()) if deadline is not None else self.timeout
        if wait is not None and wait + 0.05 < left:
            time.sleep(wait)
            return None
        if wait is not None:
            self.not_before = time.monotonic() + wait
        raise RedfishError(f"{path}: HTTP 503: the BMC is not ready"
                           + (f" (it asks to retry after {wait:g} s)" if wait is not None else ""))

    def _answer(self, path: str, deadline: float | None) -> Answer:
        """A GET's answer; a 503 whose Retry-After fits the deadline is waited out once."""
        for _ in range(2):
            r = self._waited(self._request("GET", path, deadline=deadline), path, deadline)
            if r is not None:
                return r
        raise RedfishError(f"{path}: HTTP 503: the BMC is not ready")

    def get(self, path: str, deadline: float | None = None) -> dict:
        """The JSON object at path. A session the BMC no longer knows (401: a reboot, an idle timeout) is
        replaced once: the old one deleted where the BMC still takes it, a new login, the GET again."""
        if time.monotonic() < self.not_before:
            raise RedfishError(f"{path}: not asked yet: the BMC answered 503 with a Retry-After that has not "
                               "passed")
        self.login(deadline)
        r = self._answer(path, deadline)
        if r.status == 401 and self.token is not None:
            self.logout()  # the BMC may still hold it: give the slot back where it lets us
            self.login(deadline)
            r = self._answer(path, deadline)
        if r.status == 401:
            raise AuthError(f"{path}: HTTP 401: the BMC refused the credentials"
                            + ("" if self.auth.user else " (none were configured)"))
        if r.status == 403:  # this account may not read this resource: the session itself is fine
            raise Forbidden(f"{path}: HTTP 403: the account may not read this resource")
        if r.status == 404:
            raise NotFound(f"{path}: HTTP 404")
        if r.status != 200:
            raise RedfishError(f"{path}: HTTP {r.status}")
        try:
            doc = json.loads(r.data)
        except ValueError:
            raise BadAnswer(f"{path}: the answer is not JSON ({r.data[:40]!r})") from None
        except RecursionError:
            raise BadAnswer(f"{path}: the answer is nested too deep to be a Redfish resource") from None
        if not isinstance(doc, dict):
            raise BadAnswer(f"{path}: the answer is not a JSON object")
        return doc

    # --- sessions -----------------------------------------------------------------------------------
    def login(self, deadline: float | None = None) -> None:
        """Opens a session (one auth check on the BMC instead of one per request) where asked and none is open.
        A refused login is tried again on a later request, spaced by a growing back-off (5 s to 5 min) or
        the BMC's Retry-After, never given up: a BMC that rebooted takes logins again a minute later."""
        if self.auth.mode != "session" or self.auth.user is None or self.token:
            return
        now = time.monotonic()
        if now < self.next_login:
            raise self.login_error or AuthError("session login: waiting to try again")
        r = self._request("POST", f"{self.ROOT}/SessionService/Sessions",
                          {"UserName": self.auth.user, "Password": self.auth.password or ""}, deadline)
        token = r.headers.get("X-Auth-Token")
        err: RedfishError | None = None
        if r.status in (401, 403):
            err = AuthError(f"session login: HTTP {r.status}: the BMC refused the credentials")
        elif r.status == 503:
            wait = retry_after(r.headers.get("Retry-After"))
            err = RedfishError("session login: HTTP 503: the BMC is not ready"
                               + (f" (it asks to retry after {wait:g} s)" if wait is not None else ""))
            if wait is not None:
                self.login_backoff = max(wait, 0.5)  # the BMC says when: no sooner, no later
        elif r.status in (404, 405, 501):
            err = RedfishError(f"session login: HTTP {r.status}: this service has no Redfish sessions "
                               "(set auth: basic)")
        elif r.status not in (200, 201, 204):
            err = RedfishError(f"session login: HTTP {r.status}")
        elif not token:
            err = RedfishError(f"session login: HTTP {r.status} without an X-Auth-Token (set auth: basic)")
        if err is not None:
            self.next_login = now + self.login_backoff
            err.args = (f"{err.args[0]}; next login in {self.login_backoff:.0f} s",)
            self.login_backoff = min(self.login_backoff * 2, LOGIN_BACKOFF[1])
            self.login_error = err
            raise err
        self.token = token
        self.session_uri = r.headers.get("Location")
        self.login_backoff, self.login_error = LOGIN_BACKOFF[0], None
        self.logins += 1

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
