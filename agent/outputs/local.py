"""The embedded default output: a local SQLite store (WAL) in the state directory.

Series (measurement + tags) are stored once; points hold (series, ts, fields as JSON).
The key is (series, ts): like InfluxDB, writing the same series+timestamp again merges
the fields instead of duplicating the point. Retention deletes by age; the size cap
deletes the oldest points until the live pages fit, then gives pages back to the OS.

A damaged file is moved aside (``metrics.db.corrupt-TIMESTAMP``) and a fresh store takes its place;
a full disk fails the write, and the output queue keeps the samples and retries.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path

from pydantic import Field

from ..config import OutputOptions, PositiveDuration, Size
from ..model import Sample
from ..state import open_or_set_aside, retry_after_damage, set_aside
from .memory import MemoryBuffer
from .running import OK, Result, RunningOutput, TransportError, Writer

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    measurement TEXT NOT NULL,
    tags TEXT NOT NULL,
    UNIQUE (measurement, tags)
);
CREATE TABLE IF NOT EXISTS points (
    series_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    fields TEXT NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS points_ts ON points (ts);
"""


class LocalStoreOptions(OutputOptions):
    """The embedded store in the state directory (outputs.local)."""

    path: Path | None = Field(None, description="default: STATE_DIR/metrics.db")
    retention: PositiveDuration = Field(7 * 86400.0, description="samples older than this are deleted")
    max_size: Size = Field(1 << 30, description="database size cap; the oldest samples go first")




def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    else:
        conn = sqlite3.connect(str(path), timeout=5.0, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class LocalStore:
    name = "local"

    def __init__(self, path: Path, retention_s: float = 7 * 86400, max_size: int = 1 << 30) -> None:
        self.path = Path(path)
        self.retention_ns = int(retention_s * 1e9)
        self.max_size = max_size
        self.evicted = 0
        self.expired = 0
        self._conn: sqlite3.Connection | None = None
        self._series: dict[tuple[str, str], int] = {}

    # The connection is opened lazily in the thread that writes (the output's thread).
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = open_or_set_aside(self.path, self._open)
        return self._conn

    def _open(self) -> sqlite3.Connection:
        conn = _connect(self.path)
        try:
            # auto_vacuum must be set before the first table exists.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
            self._series = {(m, t): i for i, m, t in conn.execute("SELECT id, measurement, tags FROM series")}
        except BaseException:
            conn.close()
            raise
        return conn

    def _damaged(self, e: sqlite3.DatabaseError) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None
        self._series.clear()
        set_aside(self.path, f"damaged SQLite database: {e}")

    def _series_id(self, conn: sqlite3.Connection, measurement: str, tags: str) -> int:
        key = (measurement, tags)
        sid = self._series.get(key)
        if sid is None:
            conn.execute("INSERT OR IGNORE INTO series (measurement, tags) VALUES (?, ?)", key)
            sid = conn.execute("SELECT id FROM series WHERE measurement=? AND tags=?", key).fetchone()[0]
            self._series[key] = sid
        return sid

    def write(self, samples: list[Sample]) -> None:
        retry_after_damage(lambda: self._write(samples), self._damaged)

    def _write(self, samples: list[Sample]) -> None:
        conn = self._db()
        rows = []
        dumps = json.dumps
        conn.execute("BEGIN")
        try:
            for s in samples:
                sid = self._series_id(conn, s.measurement, dumps(s.tags, sort_keys=True, separators=(",", ":")))
                rows.append((sid, s.ts, dumps(s.fields, separators=(",", ":"))))
            conn.executemany(
                "INSERT INTO points (series_id, ts, fields) VALUES (?, ?, ?) "
                "ON CONFLICT (series_id, ts) DO UPDATE SET fields = json_patch(fields, excluded.fields)",
                rows,
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                conn.execute("ROLLBACK")
            self._series.clear()  # ids inserted in the rolled-back transaction are gone
            raise

    def size_bytes(self) -> int:
        """Bytes held by live pages (the file may be larger until vacuumed)."""
        conn = self._db()
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        count = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return (count - free) * page

    def housekeeping(self, now_ns: int | None = None) -> None:
        conn = self._db()
        now_ns = now_ns or time.time_ns()
        cur = conn.execute("DELETE FROM points WHERE ts < ?", (now_ns - self.retention_ns,))
        self.expired += cur.rowcount
        self.enforce_size_cap()
        conn.execute("PRAGMA incremental_vacuum")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def enforce_size_cap(self) -> int:
        """Delete the oldest points until the live data fits ``max_size``; return how many."""
        conn = self._db()
        removed = 0
        while self.size_bytes() > self.max_size:
            total = conn.execute("SELECT count(*) FROM points").fetchone()[0]
            if total == 0:
                break
            # Remove the oldest tenth (at least one point) and measure again.
            n = max(1, total // 10)
            cutoff = conn.execute("SELECT ts FROM points ORDER BY ts LIMIT 1 OFFSET ?", (n - 1,)).fetchone()[0]
            cur = conn.execute("DELETE FROM points WHERE ts <= ?", (cutoff,))
            removed += cur.rowcount
        if removed:
            self.evicted += removed
            log.warning("local store: size cap %d bytes reached; evicted %d oldest samples", self.max_size, removed)
        return removed

    def stats(self) -> dict:
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        return {"evicted_samples_total": self.evicted, "expired_samples_total": self.expired,
                "store_size_bytes": size, "path": str(self.path)}

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as e:  # a full disk: the WAL stays and is replayed at the next open
                log.warning("local store: checkpoint at close failed: %s", e)
            finally:
                self._conn.close()
                self._conn = None


def query(path: Path, measurement: str | None, since_ns: int | None = None, until_ns: int | None = None,
          fields: list[str] | None = None, tags: dict[str, str] | None = None,
          limit: int | None = None) -> list[Sample]:
    """Read samples back, oldest first (``limit`` keeps the newest N)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"no local store at {path}: has the agent run with this state directory?")
    conn = _connect(Path(path), readonly=True)
    try:
        where, args = [], []
        if measurement:
            where.append("s.measurement = ?")
            args.append(measurement)
        if since_ns is not None:
            where.append("p.ts >= ?")
            args.append(since_ns)
        if until_ns is not None:
            where.append("p.ts <= ?")
            args.append(until_ns)
        for k, v in (tags or {}).items():
            where.append("json_extract(s.tags, ?) = ?")
            args.extend(['$."' + k.replace('"', '""') + '"', v])
        sql = ("SELECT s.measurement, s.tags, p.fields, p.ts FROM points p JOIN series s ON s.id = p.series_id"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY p.ts DESC, s.id")
        if limit:
            sql += f" LIMIT {int(limit)}"
        out = []
        for m, t, f, ts in conn.execute(sql, args):
            fv = json.loads(f)
            if fields:
                fv = {k: fv[k] for k in fields if k in fv}
                if not fv:
                    continue
            out.append(Sample(m, json.loads(t), fv, ts))
        out.reverse()
        return out
    finally:
        conn.close()


def measurements(path: Path) -> list[str]:
    conn = _connect(Path(path), readonly=True)
    try:
        return [r[0] for r in conn.execute("SELECT DISTINCT measurement FROM series ORDER BY 1")]
    finally:
        conn.close()


class LocalWriter(Writer):
    """The store as a writer of the shared sender: records are the samples themselves."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store

    def encode(self, samples: list[Sample]) -> list[Sample]:
        return samples

    def write(self, records: list[Sample]) -> Result:
        try:
            self.store.write(records)
        except Exception as e:  # a full disk, a locked file: kept in memory and retried
            raise TransportError(f"{type(e).__name__}: {e}") from None
        return OK

    def describe(self, record) -> str:
        return repr(record)[:300]

    def housekeeping(self) -> None:
        self.store.housekeeping()

    def close(self) -> None:
        self.store.close()

    def stats(self) -> dict:
        return self.store.stats()


class LocalOutput(RunningOutput):
    """outputs.local: the store, fed through a bounded memory buffer (agent.queue_size samples)."""

    Options = LocalStoreOptions
    many = False

    def __init__(self, store: LocalStore, capacity: int = 100_000) -> None:
        self.store = store
        super().__init__(store.name, LocalWriter(store), MemoryBuffer(capacity, store.name), batch_size=5000,
                         flush_interval=1.0, retry_max=30.0, eager=True)

    @classmethod
    def build(cls, opts: LocalStoreOptions, state_dir: Path, agent=None, catalogue=None) -> LocalOutput:
        store = LocalStore(opts.path or state_dir / "metrics.db", opts.retention, opts.max_size)
        return cls(store, agent.queue_size if agent is not None else 100_000)
