"""The one output contract, in the spirit of Telegraf's RunningOutput.

An output module under agent/outputs/ only encodes samples into records and writes a batch of them,
answering with a ``Result``. Everything else lives here, once, for every output:

- a crash-safe disk buffer (``DiskBuffer``): appended before a collection counts as done, a batch leaves it
  only when the destination acknowledged it; caps evict the oldest points and count them exactly;
- a bounded memory backlog when that buffer refuses appends (disk full, I/O error): appended with the next
  collection that succeeds, only what overflows it is lost and counted;
- batching, and a sender thread per output with exponential back-off and jitter, honouring ``Result.after``;
  a pipelined writer's next batch is read and packed by a helper thread while one is in flight, and an
  acknowledged batch forgotten there too, so that the round trip alone sets the pace;
- outcome classes: ``ok`` (acknowledged), ``reject`` (the destination refuses something in the batch: split in
  halves until the refused records are alone, which are dropped and counted), ``too_large`` (split),
  ``retry`` (kept, retried later), ``auth`` (kept, retried, reported loudly);
- state (ok, retrying, auth_failed, rejecting, buffer_error; buffer_failing while appends are refused) and
  the counters ``aifactory status`` and the ``agent`` measurement report.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol

from ..backoff import backoff
from ..logonce import Latch
from ..model import Sample, utf8, valid_field

log = logging.getLogger(__name__)

BACKLOG_MAX = 200_000  # records held in memory while the disk buffer refuses appends (~40 MB of line protocol)


@dataclass
class Result:
    """A writer's answer for one batch."""

    kind: str  # ok | reject | too_large | retry | auth
    reason: str = ""
    after: float | None = None  # seconds the destination asks to wait (Retry-After)


OK = Result("ok")


class TransportError(Exception):
    """No answer from the destination: connection refused or reset, timeout, TLS failure, an I/O error."""


class Writer(Protocol):
    """What an output module provides: encode, write a batch (see docs/extending.md). A writer subclasses this
    protocol: the optional hooks below have no-op defaults, so the sender calls them without asking."""

    # the batch may be handed over already encoded by the disk buffer (gzip members): write_packed
    accepts_packed: bool = False
    # the next batch is read from the buffer and packed while this one is in flight (a destination whose
    # round trip is the cost of a write); still one write at a time, so batches keep their order
    pipelined: bool = False

    def encode(self, samples: list[Sample]) -> list[bytes]:
        """One record per sample (a line of line protocol, a JSON line)."""
        raise NotImplementedError

    def write(self, records: list[bytes]) -> Result:
        """Write one batch; raise TransportError when the destination did not answer."""
        raise NotImplementedError

    def write_packed(self, packed: bytes) -> Result:
        """The batch as the buffer (accepts_packed) or pack() packed it, written as it is."""
        raise NotImplementedError

    def pack(self, records: list[bytes]) -> bytes | None:
        """The batch as it goes on the wire, for write_packed; a pipelined writer's is made while the batch
        before it is in flight. None by default: write(records) at send time."""
        return None

    def describe(self, record: bytes) -> str:
        """A refused record, shortened for the log."""
        return record[:300].decode("utf-8", "replace")

    def housekeeping(self) -> None:
        """Periodic work of the destination's own (retention, a size cap); nothing by default."""

    def close(self) -> None:
        """Let go of connections and files; nothing by default."""

    def stats(self) -> dict:
        """Destination facts for status (url, path, ...); each key declared in agent/selfmetrics.py or
        listed in STATUS_ONLY."""
        return {}


class Retry(Exception):
    def __init__(self, reason: str, after: float | None = None, auth: bool = False) -> None:
        super().__init__(reason)
        self.after = after
        self.auth = auth


class Stopping(Exception):
    """The agent stops while a batch is being split: the rest of it stays in the buffer for the next start."""


@dataclass
class Batch:
    ids: list[int]  # the buffer's chunks, in flight until removed or released
    records: list[bytes]
    packed: bytes | None  # as it goes on the wire, when the buffer or the writer packed it


class Sender:
    """One writer's sender: the chunks it holds (handed back when it fails or stops) and, for a pipelined
    writer, the helper thread that makes the next batch ready and forgets acknowledged ones meanwhile."""

    def __init__(self, writer: Writer, name: str) -> None:
        self.writer = writer
        self.held: list[int] = []
        self.helper = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-ahead") if writer.pipelined else None
        self.tasks: list[Future] = []  # the helper's, in order (one worker: each starts after the one before)
        self.ahead: Future | None = None  # of these, the next batch

    def later(self, fn, *args) -> Future:
        f = self.helper.submit(fn, *args)
        self.tasks.append(f)
        return f

    def settle(self) -> Batch | None:
        """Wait for all the helper was given; raise the first error only once all are done (what they took is
        then in `held`, for the caller to hand back); the batch made ready, if any."""
        tasks, ahead = self.tasks, self.ahead
        self.tasks, self.ahead = [], None
        wait(tasks)
        for t in tasks:
            t.result()
        return ahead.result() if ahead is not None else None

    def close(self) -> None:
        if self.helper is not None:
            self.helper.shutdown(wait=True)


class RunningOutput:
    """One destination: appends go to its disk buffer; a daemon thread sends them through its writer."""

    HOUSEKEEPING_EVERY = 60.0  # the writer's housekeeping (the local store's retention), in the sender thread

    def __init__(self, name: str, writer: Writer, buffer, batch_size: int = 5000, flush_interval: float = 10.0,
                 flush_jitter: float = 0.0, retry_max: float = 60.0, retry_base: float = 0.5,
                 eager: bool = False, more_writers: list[Writer] | None = None) -> None:
        self.name = name
        self.writer = writer
        # one sender thread per writer (a connection each): batches in flight at once, each its own chunks
        self.writers = [writer, *(more_writers or [])]
        self.buffer = buffer
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.flush_jitter = flush_jitter
        self.retry_max = retry_max
        self.retry_base = retry_base
        self.eager = eager  # write as soon as samples come (a store on this node), not per batch or interval
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
        self.encode_dropped = 0  # fields no record could carry (left out, the rest of the sample kept)
        self.spool_failures = 0
        self._last_rejection = ""
        self.last_success_ns: int | None = None
        self._logged_rejections: set[str] = set()
        self._wake = threading.Event()
        self._stopping = False
        self._idle = threading.Event()  # set while no sender holds a batch
        self._idle.set()
        self._busy = 0
        self._lock = threading.Lock()  # counters and state, shared by the senders
        self._hold_until = 0.0  # a back-off (Retry-After) holds every sender of the output, not one connection
        names = [f"output-{self.name}" + (f"-{i}" if i else "") for i in range(len(self.writers))]
        self._threads = [threading.Thread(target=self._loop, args=(w, n), daemon=True, name=n)
                         for w, n in zip(self.writers, names)]

    # --- called by the pipeline ---------------------------------------------------
    def start(self) -> None:
        for t in self._threads:
            t.start()

    def append(self, samples: list[Sample]) -> None:
        """Persist before the collection counts as done (runs in the spool thread)."""
        records = self._encode([s for s in samples if s.fields])
        with self._backlog_lock:
            if self._backlog:
                records = self._backlog + records
            try:
                self.buffer.append(records)
            except (sqlite3.Error, OSError) as e:
                self.spool_failures += 1
                over = len(records) - BACKLOG_MAX
                if over > 0:
                    self.spool_lost += over
                    records = records[over:]
                self._backlog = records
                self._spool.failed(f"cannot append to the disk buffer {self.buffer.path}: {e}",
                                   "output %s: cannot append to the disk buffer %s: %s; %d points held in memory "
                                   "(at most %d)", self.name, self.buffer.path, e, len(records), BACKLOG_MAX)
                return
            self._spool.recovered("output %s: disk buffer writable again; %d points from memory appended%s",
                                  self.name, len(self._backlog),
                                  f", {self.spool_lost} lost so far" if self.spool_lost else "")
            self._backlog = []
        if self.eager or len(self.buffer) >= self.batch_size:
            self._wake.set()

    def _encode(self, samples: list[Sample]) -> list[bytes]:
        """The samples' records; one that cannot be encoded (a value from a path that bypassed the
        accumulator's checks) is encoded again without its bad fields, never losing the collection."""
        try:
            return self.writer.encode(samples)
        except (UnicodeError, ValueError, TypeError):
            pass
        out: list[bytes] = []
        for s in samples:
            try:
                out += self.writer.encode([s])
                continue
            except (UnicodeError, ValueError, TypeError):
                pass
            fields = {k: v for k, v in s.fields.items() if valid_field(k, v) == (v, None)}
            tags = {k: utf8(v) for k, v in s.tags.items()}
            self.encode_dropped += len(s.fields) - len(fields)
            try:
                out += self.writer.encode([Sample(s.measurement, tags, fields, s.ts)]) if fields else []
            except (UnicodeError, ValueError, TypeError) as e:
                self.encode_dropped += len(fields)
                log.warning("output %s: a %s sample cannot be encoded (%s): dropped", self.name, s.measurement, e)
        return out

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.buffer) == 0 and self._idle.is_set() and not self._backlog:
                return True
            if self.state in ("retrying", "auth_failed") and self.buffer.durable:
                return False  # the destination is refusing or away: what is buffered on disk stays for next time
            self._wake.set()
            time.sleep(0.02)
        return len(self.buffer) == 0

    def stop(self, timeout: float) -> bool:
        done = self.flush(timeout)
        self._stopping = True
        self._wake.set()
        deadline = time.monotonic() + max(0.5, timeout)
        for t in self._threads:
            if t.ident:
                t.join(timeout=max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            # a write still in flight past the deadline: its connection and the buffer stay open under it
            # (the thread is a daemon); what it has not acknowledged is in the buffer for the next start
            log.warning("output %s: a write is still in flight at shutdown; left to finish or die with the process",
                        self.name)
        else:
            for t, w in zip(self._threads, self.writers):
                if not t.ident:  # never started: nothing closed its writer
                    self._close(w.close, "writer")
            self._close(self.buffer.close, "buffer")
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
    def _loop(self, writer: Writer, name: str) -> None:
        failures = 0
        next_hk = time.monotonic() + self.HOUSEKEEPING_EVERY
        sender = Sender(writer, name)
        try:
            while not self._stopping:
                if time.monotonic() >= next_hk:
                    next_hk = time.monotonic() + self.HOUSEKEEPING_EVERY
                    try:
                        writer.housekeeping()
                    except Exception as e:
                        log.warning("output %s: housekeeping failed: %s", self.name, e)
                try:
                    failures = self._step(failures, sender)
                except Exception as e:  # the buffer's disk (full, I/O error): never let the sender die
                    failures += 1
                    try:
                        sender.settle()
                    except Exception:
                        pass  # the helper's error is this one's cause or its echo
                    try:
                        self.buffer.release(list(sender.held))  # its chunks go back first in line for any sender
                    except Exception:
                        pass  # the next peek finds the damage, or the restart does
                    self._let_go(sender)
                    self._set_state("buffer_error", f"disk buffer: {type(e).__name__}: {e}")
                    self._pause(backoff(failures, 0.2, 5.0))  # a local disk: space comes back soon
        finally:
            try:
                self._hand_back(sender)  # a batch made ready, never sent: first in line at the next start
            except Exception as e:
                log.warning("output %s: handing back its batches at stop failed: %s", self.name, e)
            sender.close()
            self._close(writer.close, "writer")  # in this thread: its handles belong to it (SQLite insists)

    def _close(self, close, what: str) -> None:
        try:
            close()
        except Exception as e:
            log.warning("output %s: closing its %s failed: %s", self.name, what, e)

    def _take(self, sender: Sender) -> Batch:
        """The oldest chunks no sender holds, packed as they go on the wire when the buffer or writer can."""
        writer = sender.writer
        with self._lock:  # marked busy before the chunks leave the buffer's count: flush never sees a gap
            if writer.accepts_packed:
                ids, records, packed = self.buffer.peek_packed(self.batch_size)
            else:
                (ids, records), packed = self.buffer.peek(self.batch_size), None
            if ids:
                if not sender.held:
                    self._busy += 1
                    self._idle.clear()
                sender.held.extend(ids)
        if ids and packed is None:
            packed = writer.pack(records)
        return Batch(ids, records, packed)

    def _let_go(self, sender: Sender, ids: list[int] | None = None) -> None:
        """The sender holds these chunks (all, without ids) no more."""
        with self._lock:
            if not sender.held:
                return
            if ids is None:
                sender.held.clear()
            else:
                gone = set(ids)
                sender.held[:] = [i for i in sender.held if i not in gone]
            if not sender.held:
                self._busy -= 1
                if self._busy == 0:
                    self._idle.set()

    def _forget(self, sender: Sender, ids: list[int]) -> None:
        self.buffer.remove(ids)
        self._let_go(sender, ids)

    def _hand_back(self, sender: Sender) -> None:
        """Not delivered: everything the sender holds goes back, first in line. A helper's error is raised
        to the sender's handler, which hands back the same."""
        sender.settle()
        self.buffer.release(list(sender.held))
        self._let_go(sender)

    def _pause(self, seconds: float) -> None:
        """Idle until the time is up or something wakes the sender (new points, a flush, the stop)."""
        self._wake.wait(seconds)
        self._wake.clear()

    def _step(self, failures: int, sender: Sender) -> int:
        hold = self._hold_until - time.monotonic()
        if hold > 0:
            self._pause(hold)
            return failures
        batch = sender.settle()
        if batch is None or not batch.ids:  # none made ready, or made while the buffer was empty
            batch = self._take(sender)
        if not batch.ids:
            self._pause(self.flush_interval + random.random() * self.flush_jitter)
            return failures
        if sender.helper is not None:
            sender.ahead = sender.later(self._take, sender)
        try:
            rejected = self._deliver(sender.writer, batch.records, batch.packed)
        except Stopping:
            self._hand_back(sender)
            return failures
        except Retry as r:
            self._hand_back(sender)
            failures += 1
            with self._lock:
                self.write_errors += 1
            self._set_state("auth_failed" if r.auth else "retrying", str(r))
            wait = max(r.after or 0.0, backoff(failures, self.retry_base, self.retry_max))
            with self._lock:
                self._hold_until = max(self._hold_until, time.monotonic() + wait)
            self._pause(wait)
            return failures
        if sender.helper is not None:
            sender.later(self._forget, sender, batch.ids)  # while the next batch is in flight
        else:
            self._forget(sender, batch.ids)
        with self._lock:
            self.sent += len(batch.records) - rejected
            self.last_success_ns = time.time_ns()
        if rejected:
            self._set_state("rejecting", f"the destination rejected {rejected} of {len(batch.records)} points "
                                         f"of the last batch ({self._last_rejection})")
        else:
            self._set_state("ok", None)
        return 0

    def _set_state(self, state: str, error: str | None) -> None:
        with self._lock:
            changed = state != self.state
            self.state = state
            self.last_error = error
        if changed:
            if state == "ok":
                log.info("output %s: delivering again (%d points buffered)", self.name, len(self.buffer))
            elif state == "rejecting":
                log.error("output %s: %s; rejected points are dropped", self.name, error)
            elif state == "auth_failed":
                log.error("output %s: AUTHENTICATION FAILED, points are kept: %s", self.name, error)
            else:
                log.warning("output %s: %s; points are kept and retried", self.name, error)

    def _deliver(self, writer: Writer, records: list[bytes], packed: bytes | None = None) -> int:
        """Write one batch, splitting what the destination refuses; the number of records dropped as refused.
        `packed`: the batch already encoded by the buffer (gzip members), sent as it is the first time."""
        if self._stopping:
            raise Stopping()
        with self._lock:
            self.requests += 1
        try:
            res = writer.write_packed(packed) if packed is not None else writer.write(records)
        except TransportError as e:
            raise Retry(str(e)) from None
        if res.kind == "ok":
            return 0
        if res.kind in ("reject", "too_large"):
            if len(records) == 1:
                # one record refused (or alone too large): dropped, counted, said once per reason
                with self._lock:
                    self.rejected += 1
                    self._last_rejection = res.reason[:200]
                    first = res.reason not in self._logged_rejections and len(self._logged_rejections) < 100
                    self._logged_rejections.add(res.reason)
                if first:
                    log.error("output %s: destination rejected a point (%s); dropped: %s",
                              self.name, res.reason[:300], writer.describe(records[0]))
                return 1
            mid = len(records) // 2
            return self._deliver(writer, records[:mid]) + self._deliver(writer, records[mid:])
        raise Retry(res.reason, res.after, auth=res.kind == "auth")

    def stats(self) -> dict:
        d = self.buffer.stats()
        spooling = self._spool.error is not None
        d.update({"written_samples_total": self.sent, "rejected_points_total": self.rejected,
                  "write_errors_total": self.write_errors, "requests_total": self.requests,
                  "state": "buffer_failing" if spooling else self.state,
                  "last_error": self._spool.error if spooling else self.last_error,
                  "last_write_ns": self.last_success_ns,
                  "auth_failing": self.state == "auth_failed",
                  "memory_backlog_points": len(self._backlog), "spool_lost_points_total": self.spool_lost,
                  "spool_errors_total": self.spool_failures, "encode_dropped_fields_total": self.encode_dropped})
        d.update(self.writer.stats())
        return d
