"""Alert notifications: JSON webhooks and Alertmanager (API v2), sent from a thread of their own.

Evaluation only enqueues (a bounded queue; when full the oldest notification is dropped and counted),
so a slow or dead receiver never delays a collection. Each delivery is retried with exponential
back-off until it succeeds or `max_attempts` is reached. Alertmanager forgets alerts that are not
re-sent: firing alerts are pushed again every `resend` interval, and resolved ones once with endsAt.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import threading
import time
import urllib.error
import urllib.request

from agent.backoff import backoff
from agent.config import Receiver
from agent.secrets import read_secret

log = logging.getLogger("agent.alerts")


def _iso(t: float | None) -> str | None:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z") if t else None


def payload(receiver: Receiver, alerts: list[dict]) -> bytes:
    if receiver.type == "alertmanager":
        return json.dumps([{
            "labels": {"alertname": a["alertname"], "severity": a["severity"],
                       **{k: str(v) for k, v in a["labels"].items()}},
            "annotations": {k: a[k] for k in ("summary", "description") if a.get(k)},
            "startsAt": _iso(a.get("fired_at") or a.get("active_since")),
            **({"endsAt": _iso(a["resolved_at"])} if a["state"] == "resolved" else {}),
        } for a in alerts]).encode()
    return json.dumps({"version": "1", "receiver": receiver.name,
                       "status": "firing" if any(a["state"] == "firing" for a in alerts) else "resolved",
                       "alerts": [{"alertname": a["alertname"], "state": a["state"], "severity": a["severity"],
                                   "labels": a["labels"], "value": a.get("value"), "summary": a.get("summary", ""),
                                   "description": a.get("description", ""),
                                   "startsAt": _iso(a.get("fired_at") or a.get("active_since")),
                                   "endsAt": _iso(a.get("resolved_at"))} for a in alerts]}).encode()


class _Worker:
    """One receiver's queue and thread: a slow receiver delays only itself."""

    QUEUE = 1000

    def __init__(self, receiver: Receiver, token: str | None) -> None:
        self.r = receiver
        self.token = token
        self.queue: collections.deque = collections.deque()
        self.cond = threading.Condition()
        self.dropped = self.sent = self.failed = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name=f"alert-notify-{receiver.name}", daemon=True)
        self.thread.start()

    def submit(self, alerts: list[dict]) -> None:
        with self.cond:
            if len(self.queue) >= self.QUEUE:
                self.queue.popleft()
                self.dropped += 1
            self.queue.append([[dict(a) for a in alerts], 0, 0.0])
            self.cond.notify()

    def _send(self, alerts: list[dict]) -> None:
        r = self.r
        url = r.url.rstrip("/") + "/api/v2/alerts" if r.type == "alertmanager" else r.url
        headers = {"Content-Type": "application/json", "User-Agent": "aifactory-agent"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=payload(r, alerts), headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=r.timeout) as resp:  # noqa: S310 - operator-configured
            resp.read()

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait()
                if self.stopping and not self.queue:
                    return
                item = self.queue[0]
                wait = item[2] - time.monotonic()
                if wait > 0:  # in order: the head waits for its back-off
                    self.cond.wait(min(wait, 1.0))
                    continue
                self.queue.popleft()
            alerts, attempts, _ = item
            try:
                self._send(alerts)
                self.sent += 1
            except (OSError, urllib.error.URLError, ValueError) as e:
                attempts += 1
                if attempts >= self.r.max_attempts:
                    self.failed += 1
                    log.error("alert receiver %s: giving up on %d alerts after %d tries: %s", self.r.name,
                              len(alerts), attempts, e)
                    continue
                if attempts == 1:
                    log.warning("alert receiver %s: %s; retrying", self.r.name, e)
                with self.cond:
                    self.queue.appendleft([alerts, attempts, time.monotonic() + backoff(attempts, 1.0, 60.0)])

    def close(self, timeout: float) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join(timeout)


class Notifier:
    def __init__(self, receivers: list[Receiver]) -> None:
        self.receivers = {r.name: r for r in receivers}
        self.workers = {r.name: _Worker(r, read_secret(f"alerts.receivers[{r.name}].token_file", r.token_file))
                        for r in receivers}
        self.last_sent: dict[tuple, float] = {}  # (receiver, alert key) -> when (Alertmanager re-sends)

    @property
    def dropped(self) -> int:
        return sum(w.dropped for w in self.workers.values())

    @property
    def failed(self) -> int:
        return sum(w.failed for w in self.workers.values())

    def submit(self, receiver: str, alerts: list[dict]) -> None:
        """Never blocks: a full queue drops its oldest notification."""
        if receiver in self.workers and alerts:
            self.workers[receiver].submit(alerts)

    def due(self, receiver: str, key: str, state: str, now: float, transition: bool) -> bool:
        """Whether to send this alert now: on every transition; and a firing one again every `resend`
        for Alertmanager, which forgets alerts that are not re-sent. Records the send time."""
        r = self.receivers.get(receiver)
        if not transition:
            if r is None or r.type != "alertmanager" or state != "firing":
                return False
            last = self.last_sent.get((receiver, key))
            if last is not None and now - last < r.resend:
                return False
        self.last_sent[(receiver, key)] = now
        return True

    def close(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        for w in self.workers.values():
            w.close(max(0.0, deadline - time.monotonic()))
