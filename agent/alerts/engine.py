"""Alert evaluation inside the agent: history of recent samples, rule states, and their store.

Each collection is observed (kept for as long as the longest range a rule reads) and every rule is
evaluated: a series whose condition holds goes pending, then firing once it has held for `for`;
when the condition stops (and the `clear` condition, if any, holds) it is resolved. States live in
SQLite in the state directory (a restart keeps them, `for` keeps counting) and are written to the
outputs as measurement `alerts`, the fleet view.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections import deque
from itertools import islice
from pathlib import Path

from agent.logonce import Latch
from agent.model import Kind, Metric, Sample
from agent.state import retry_after_damage, set_aside, sqlite_corrupt

from .expr import Selector, Source, evaluate, selectors
from .rules import CompiledRule, render

log = logging.getLogger("agent.alerts")


def _finite(result) -> dict:
    """A rule's result as a vector of finite values: NaN and ±Inf (``1 / 0``, an overflow) are no value,
    so they neither fire nor reach the outputs (line protocol and InfluxDB refuse them)."""
    if isinstance(result, float):
        return {(): result} if result and math.isfinite(result) else {}
    return {k: v for k, v in result.items() if math.isfinite(v)}

ALERT_METRICS = (
    Metric("alerts", "state", Kind.INFO, "info", "pending, firing or resolved", ("host", "alertname", "severity")),
    Metric("alerts", "firing", Kind.GAUGE, "bool", "the alert is firing", ("host", "alertname", "severity")),
    Metric("alerts", "value", Kind.GAUGE, "1", "the expression's value for this series", ("host", "alertname")),
    Metric("alerts", "active_seconds", Kind.GAUGE, "seconds", "how long the condition has held",
           ("host", "alertname")),
)

STALE = 300.0  # a series not seen for this long is gone (no value, no alert)
RESOLVED_KEEP = 86400.0  # resolved alerts stay listed this long
SAVE_EVERY = 10.0


class History(Source):
    """Recent points of the fields the rules read, and only those: each (measurement, field) is kept for the
    longest range a rule reads it over (plus a minute), a field read only as an instant value as its last
    point. Memory is bounded by the rules, not by what the collectors emit (bench/soak measures it)."""

    def __init__(self, keep: dict[tuple[str, str], float] | float) -> None:
        # a number: every field for that long (rule tests and tools that read arbitrary expressions)
        self.keep, self.default = ({}, float(keep)) if isinstance(keep, (int, float)) else (keep, None)
        self.data: dict[tuple[str, str], dict[tuple, deque]] = {}
        self.lock = threading.Lock()

    def observe(self, samples: list[Sample]) -> None:
        keep, default = self.keep, self.default
        with self.lock:
            for s in samples:
                labels = None
                t = s.ts / 1e9
                for f, v in s.fields.items():
                    span = keep.get((s.measurement, f), default)
                    if span is None:
                        continue
                    if isinstance(v, bool):
                        v = 1.0 if v else 0.0
                    if not isinstance(v, (int, float)):
                        continue
                    if labels is None:
                        labels = tuple(sorted(s.tags.items()))
                    d = self.data.setdefault((s.measurement, f), {}).setdefault(labels, deque())
                    if d and d[-1][0] >= t:
                        if d[-1][0] == t:
                            d[-1] = (t, float(v))
                        continue
                    d.append((t, float(v)))
                    while len(d) > 1 and d[0][0] < t - span:
                        d.popleft()

    def prune(self, now: float) -> None:
        """Forget series not seen for STALE (a GPU replaced, a job's process gone): no value, no memory."""
        with self.lock:
            for series in self.data.values():
                for labels in [k for k, d in series.items() if not d or d[-1][0] < now - STALE]:
                    del series[labels]

    def latest(self, sel: Selector, now: float) -> dict:
        out = {}
        for labels, d in self.data.get((sel.measurement, sel.field), {}).items():
            if d and d[-1][0] >= now - STALE and sel.matches(dict(labels)):
                out[labels] = d[-1][1]
        return out

    def window(self, sel: Selector, now: float, seconds: float) -> dict:
        lo = now - seconds
        out = {}
        for labels, d in self.data.get((sel.measurement, sel.field), {}).items():
            if not d or d[-1][0] < lo or d[0][0] > now or not sel.matches(dict(labels)):
                continue
            # points are in time order: skip the few older than the window (a field is kept for its longest
            # range plus a minute) and copy the rest in one go; the slow path only for an instant in the past
            start = 0
            while d[start][0] < lo:
                start += 1
            if d[-1][0] <= now:
                out[labels] = list(islice(d, start, None))
            else:
                pts = [p for p in islice(d, start, None) if p[0] <= now]
                if pts:
                    out[labels] = pts
        return out


class AlertStore:
    """SQLite: one row per (rule, series) with its state; survives restarts.

    A damaged file is moved aside (``alerts.db.corrupt-TIMESTAMP``): the states start afresh and the
    rules re-derive them. A save that fails otherwise (disk full) is logged once and retried with the
    next save; the states stay in memory.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._saving = Latch(log)
        self.db: sqlite3.Connection | None = None
        try:
            self.db = self._open()
            self._initial = self._load()
        except (sqlite3.DatabaseError, ValueError, TypeError) as e:
            if isinstance(e, sqlite3.OperationalError) and not sqlite_corrupt(e):
                raise
            self._damaged(e)
            self._initial = {}

    def _damaged(self, e: Exception) -> None:
        """Replace a damaged file by a fresh store: the rules re-derive the states."""
        if self.db is not None:
            try:
                self.db.close()
            except sqlite3.Error:
                pass
        set_aside(self.path, f"damaged alert store: {e}")
        self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=5)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("""CREATE TABLE IF NOT EXISTS alerts (
                key TEXT PRIMARY KEY, alertname TEXT, labels TEXT, severity TEXT, state TEXT,
                active_since REAL, fired_at REAL, resolved_at REAL, value REAL, summary TEXT, description TEXT,
                updated REAL)""")
            db.commit()
        except BaseException:
            db.close()
            raise
        return db

    def _load(self) -> dict[str, dict]:
        out = {}
        for d in _rows(self.db.execute("SELECT * FROM alerts")):
            if d.get("state") not in ("pending", "firing", "resolved") or not isinstance(d.get("labels"), dict):
                continue
            if isinstance(d.get("value"), float) and not math.isfinite(d["value"]):
                d["value"] = None
            out[d["key"]] = d
        return out

    def load(self) -> dict[str, dict]:
        return self._initial

    def save(self, alerts: dict[str, dict], removed: list[str]) -> bool:
        """True when saved; a failure is logged once per cause and the caller saves again later."""
        try:
            retry_after_damage(lambda: self._save(alerts, removed), self._damaged)
        except sqlite3.DatabaseError as e:
            self._saving.failed(str(e), "cannot save alert states to %s: %s (kept in memory, saved when "
                                "possible)", self.path, e)
            return False
        self._saving.recovered("alert states saved to %s again", self.path)
        return True

    def _save(self, alerts: dict[str, dict], removed: list[str]) -> None:
        with self.db:
            self.db.executemany("DELETE FROM alerts WHERE key = ?", [(k,) for k in removed])
            self.db.executemany(
                "INSERT OR REPLACE INTO alerts VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [(k, a["alertname"], json.dumps(a["labels"], sort_keys=True), a["severity"], a["state"],
                  a["active_since"], a["fired_at"], a["resolved_at"], a["value"], a["summary"], a["description"],
                  a["updated"]) for k, a in alerts.items()])

    def close(self) -> None:
        try:
            self.db.close()
        except sqlite3.Error:
            pass


def _rows(cur: sqlite3.Cursor) -> list[dict]:
    """Stored alerts as dicts, labels decoded: the engine's reload and the CLI read them the same way."""
    cols = [c[0] for c in cur.description]
    rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    for r in rows:
        r["labels"] = json.loads(r["labels"])
    return rows


def read_alerts(path: Path) -> list[dict]:
    """For the CLI: every stored alert, newest first (works while the agent runs: WAL)."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return _rows(db.execute("SELECT * FROM alerts ORDER BY updated DESC"))
    finally:
        db.close()


class AlertEngine:
    def __init__(self, rules: list[CompiledRule], store: AlertStore | None, notifier=None,
                 default_receivers: list[str] | None = None) -> None:
        self.rules = rules
        self.notifier = notifier
        self.default_receivers = default_receivers or []
        self._saved_at = 0.0
        self._changed = False  # a state changed since the last save
        self._removed: list[str] = []  # keys to delete from the store at the next save that succeeds
        self._events: dict[str, list[dict]] = {}
        keep: dict[tuple[str, str], float] = {}
        self.reads: dict[str, set[str]] = {}  # rule -> the measurements it reads
        for rule in rules:
            for node in (rule.expr, rule.clear):
                for sel, rng in selectors(node) if node else []:
                    key = (sel.measurement, sel.field)
                    keep[key] = max(keep.get(key, 0.0), rng + 60.0 if rng else 0.0)
                    self.reads.setdefault(rule.name, set()).add(sel.measurement)
        self.history = History(keep)
        self._pruned_at = 0.0
        self.store = store
        self.alerts: dict[str, dict] = store.load() if store else {}
        self.lock = threading.Lock()
        self.evaluations = 0
        self.rule_errors = 0  # evaluations of one rule that raised
        self._rule_error: dict[str, str] = {}  # rule -> the error last logged (logged once per new error)

    def observe(self, samples: list[Sample]) -> None:
        self.history.observe(samples)

    def evaluate(self, now: float | None = None, touched: set[str] | None = None) -> list[Sample]:
        """Advance the rules' states at `now`; returns the `alerts` samples to publish.

        With `touched` (the measurements of the collection just observed) only the rules reading one of them
        are evaluated: once per collection cycle of their series, not once per run of any collector. A full
        pass (touched None) catches series that stopped coming.
        """
        now = time.time() if now is None else now
        with self.lock:
            removed: list[str] = []
            self._events = {}
            for rule in self.rules:
                if touched is not None and rule.name in self.reads and not self.reads[rule.name] & touched:
                    continue
                self.evaluations += 1
                try:
                    active = evaluate(rule.expr, self.history, now)
                    clear = evaluate(rule.clear, self.history, now) if rule.clear else None
                except Exception as e:  # a rule that cannot be evaluated now stays as it was; said once, counted
                    self.rule_errors += 1
                    why = f"{type(e).__name__}: {e}"
                    if self._rule_error.get(rule.name) != why:
                        self._rule_error[rule.name] = why
                        log.error("alert rule %s cannot be evaluated: %s (its alerts keep their state)",
                                  rule.name, why)
                    continue
                if self._rule_error.pop(rule.name, None) is not None:
                    log.info("alert rule %s evaluates again", rule.name)
                active = _finite(active)
                if clear is not None:
                    clear = _finite(clear)
                self._advance(rule, active, clear, now, removed)
            for k in [k for k, a in self.alerts.items()
                      if a["state"] == "resolved" and now - (a["resolved_at"] or now) > RESOLVED_KEEP]:
                removed.append(k)
                del self.alerts[k]
            # States are saved at once (a restart must see them); values at most every SAVE_EVERY s,
            # since this runs with each collection.
            self._removed.extend(removed)
            if now - self._pruned_at >= 60.0:
                self.history.prune(now)
                self._pruned_at = now
            if self.store and (self._changed or self._removed or now - self._saved_at >= SAVE_EVERY):
                if self.store.save(self.alerts, self._removed):
                    self._removed = []
                    self._changed = False
                self._saved_at = now
            if self.notifier is not None:
                for receiver, alerts in self._events.items():
                    self.notifier.submit(receiver, alerts)
            return self._samples(now)

    def stats(self) -> dict:
        states = [a["state"] for a in self.alerts.values()]
        return {"rules": len(self.rules), "rule_evaluations_total": self.evaluations,
                "rule_errors_total": self.rule_errors, "rules_failing": sorted(self._rule_error),
                "firing": states.count("firing"), "pending": states.count("pending")}

    def _notify(self, rule: CompiledRule, key: str, a: dict, now: float, transition: bool) -> None:
        if self.notifier is None:
            return
        for receiver in rule.rule.notify if rule.rule.notify is not None else self.default_receivers:
            if self.notifier.due(receiver, key, a["state"], now, transition):
                self._events.setdefault(receiver, []).append(dict(a))

    def _advance(self, rule: CompiledRule, active: dict, clear: dict | None, now: float, removed: list) -> None:
        r = rule.rule
        seen = set()
        for labels, value in active.items():
            lab = {**dict(labels), **r.labels}
            key = rule.name + json.dumps(sorted(dict(labels).items()))
            seen.add(key)
            a = self.alerts.get(key)
            if a is None or a["state"] == "resolved":
                self._changed = True
                a = self.alerts[key] = {"alertname": rule.name, "labels": lab, "severity": r.severity,
                                        "state": "pending", "active_since": now, "fired_at": None,
                                        "resolved_at": None}
            fired = a["state"] == "pending" and now - a["active_since"] >= r.for_
            if fired:
                a["state"], a["fired_at"] = "firing", now
                self._changed = True
            a.update(value=value, summary=render(r.summary, lab, value),
                     description=render(r.description, lab, value), updated=now)
            if a["state"] == "firing":
                self._notify(rule, key, a, now, transition=fired)
        for key, a in list(self.alerts.items()):
            if a["alertname"] != rule.name or key in seen:
                continue
            if a["state"] == "pending":
                removed.append(key)
                del self.alerts[key]
            elif a["state"] == "firing":
                series = tuple(sorted((k, v) for k, v in a["labels"].items() if k not in r.labels))
                if clear is None or series in clear:
                    self._changed = True
                    a.update(state="resolved", resolved_at=now, updated=now)
                    self._notify(rule, key, a, now, transition=True)

    def _samples(self, now: float) -> list[Sample]:
        ts = int(now * 1e9)
        out = []
        for a in self.alerts.values():
            tags = {k: str(v) for k, v in a["labels"].items()}
            tags.update(alertname=a["alertname"], severity=a["severity"])
            fields = {"state": a["state"], "firing": a["state"] == "firing",
                      "active_seconds": round(now - a["active_since"], 3) if a["state"] != "resolved" else 0.0}
            if isinstance(a.get("value"), (int, float)) and math.isfinite(a["value"]):
                fields["value"] = float(a["value"])
            out.append(Sample("alerts", tags, fields, ts))
        return out

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.close()
        if self.store:
            self.store.save(self.alerts, self._removed)
            self.store.close()
