"""A disk-backed, crash-safe FIFO of line-protocol points, one per output.

Rows are chunks of up to CHUNK lines (one INSERT per chunk keeps appends cheap); a chunk
is deleted only after the server acknowledged it. SQLite WAL with synchronous=NORMAL
survives a crash or kill -9 of the agent (a committed append is on disk before the
collection counts as done); an operating-system crash can lose the last transactions.

The caps (bytes and points) evict the oldest chunks first, never one that is being
sent (the buffer may exceed its cap by that one batch), and count every evicted point exactly.

A damaged file (truncated, overwritten: SQLITE_CORRUPT/NOTADB) is moved aside as
``NAME.corrupt-TIMESTAMP`` (agent.state.set_aside) and a fresh buffer takes its place, at start or
when a read finds the damage; the points it held are counted in ``lost_points``. A full disk is
not damage: the append raises and the caller keeps the points (InfluxOutput's memory backlog).
"""

from __future__ import annotations

import gzip
import logging
import sqlite3
import threading
from array import array
from pathlib import Path

from ..state import open_or_set_aside, retry_after_damage, set_aside, sqlite_corrupt

log = logging.getLogger(__name__)

CHUNK = 1000


def frame(records: list[bytes]) -> bytes:
    """The lengths of a chunk's records: a record may hold a newline (a string field), so the joined text is
    no framing of its own."""
    return array("I", map(len, records)).tobytes()


def unframe(data: bytes, lens: bytes | None) -> list[bytes]:
    """A chunk's records: by their lengths, or (a chunk from a buffer written before lengths were kept) by
    newlines."""
    if lens is None:
        return data.split(b"\n")
    out, pos = [], 0
    for n in array("I", lens):
        out.append(data[pos:pos + n])
        pos += n + 1
    return out


class DiskBuffer:
    durable = True  # survives the process: at shutdown, what a refusing destination did not take stays here

    def __init__(self, path: Path, max_bytes: int = 1 << 30, max_points: int = 10_000_000,
                 compress: bool = False) -> None:
        self.path = Path(path)
        # gzip each chunk once, when it is appended (a small collection at a time, in the spool thread), so that
        # sending a batch is the concatenation of gzip members, which a gzip reader reads as one stream: the
        # sender compresses nothing (bench/delivery: the replay's CPU was mostly compression)
        self.compress = compress
        self.max_bytes = max_bytes
        self.max_points = max_points
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.evicted = 0
        self.lost_points = 0  # held by a damaged file that was set aside
        # chunks being sent (id -> (points, bytes)), by one or more sender threads: outside the caps until
        # acknowledged or released, never evicted, never handed out twice
        self._in_flight: dict[int, tuple[int, int]] = {}
        open_or_set_aside(self.path, self._open)
        if self.points:
            log.info("buffer %s: %d points from before the restart will be sent", self.path.name, self.points)

    def _open(self) -> None:
        self._conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30)
        c = self._conn
        try:
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
            c.execute("CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                      "n INTEGER NOT NULL, size INTEGER NOT NULL, data BLOB NOT NULL, z BLOB, lens BLOB)")
            columns = {r[1] for r in c.execute("PRAGMA table_info(chunks)")}
            for col in ("z", "lens"):  # a buffer from before: its chunks have none
                if col not in columns:
                    c.execute(f"ALTER TABLE chunks ADD COLUMN {col} BLOB")
            self.points, self.bytes = c.execute(
                "SELECT coalesce(sum(n), 0), coalesce(sum(size), 0) FROM chunks").fetchone()
        except BaseException:
            c.close()
            raise

    def _damaged(self, e: sqlite3.DatabaseError) -> None:
        """Called with the lock held: replace a damaged file by a fresh buffer; what it held is lost."""
        try:
            self._conn.close()
        except sqlite3.Error:
            pass
        self.lost_points += max(0, self.points)
        set_aside(self.path, f"damaged SQLite database: {e}")
        self._in_flight.clear()
        self._open()

    def __len__(self) -> int:
        return self.points

    def append(self, lines: list[bytes]) -> None:
        if not lines:
            return
        rows = []
        for i in range(0, len(lines), CHUNK):
            part = lines[i:i + CHUNK]
            data = b"\n".join(part)
            # each member ends with a newline: members decompress into one body of whole lines
            rows.append((len(part), len(data), data,
                         gzip.compress(data + b"\n", compresslevel=1) if self.compress else None, frame(part)))
        with self._lock:
            retry_after_damage(lambda: self._insert(rows), self._damaged)
            self.points += len(lines)
            self.bytes += sum(r[1] for r in rows)
            self._enforce_caps()

    def _insert(self, rows: list[tuple]) -> None:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.executemany("INSERT INTO chunks (n, size, data, z, lens) VALUES (?, ?, ?, ?, ?)", rows)
            c.execute("COMMIT")
        except BaseException:
            # SQLite has already rolled back after some errors (SQLITE_FULL): a second ROLLBACK would
            # replace the real cause with "cannot rollback - no transaction is active".
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise

    def _flight(self) -> tuple[int, int]:
        return sum(n for n, _ in self._in_flight.values()), sum(b for _, b in self._in_flight.values())

    def _not_in_flight(self) -> tuple[str, list[int]]:
        ids = list(self._in_flight)
        return (f"id NOT IN ({','.join('?' * len(ids))})" if ids else "1"), ids

    def _enforce_caps(self) -> None:
        # The batches being sent are outside the caps until acknowledged or released: the buffer may exceed its
        # cap by what is in flight (a batch per sender), and never evicts it.
        fp, fb = self._flight()
        points = self.points - fp
        size = self.bytes - fb
        if points <= self.max_points and size <= self.max_bytes:
            return
        c = self._conn
        evicted = 0
        where, args = self._not_in_flight()
        while points > self.max_points or size > self.max_bytes:
            row = c.execute(f"SELECT id, n, size FROM chunks WHERE {where} ORDER BY id LIMIT 1", args).fetchone()
            if row is None:
                break
            cid, n, csize = row
            over = points - self.max_points
            if size <= self.max_bytes and 0 < over < n:
                # Trim the chunk from its oldest end so that exactly `over` points go.
                data, lens = c.execute("SELECT data, lens FROM chunks WHERE id=?", (cid,)).fetchone()
                keep = unframe(data, lens)[over:]  # whole records: a newline inside one is no boundary
                new = b"\n".join(keep)
                c.execute("UPDATE chunks SET n=?, size=?, data=?, z=NULL, lens=? WHERE id=?",
                          (len(keep), len(new), new, frame(keep), cid))
                removed_n, removed_size = over, csize - len(new)
            else:
                c.execute("DELETE FROM chunks WHERE id=?", (cid,))
                removed_n, removed_size = n, csize
            points -= removed_n
            size -= removed_size
            self.points -= removed_n
            self.bytes -= removed_size
            evicted += removed_n
        if evicted:
            if self.evicted == 0:
                log.warning("buffer %s full (%d points / %d bytes max): evicting the oldest points",
                            self.path.name, self.max_points, self.max_bytes)
            self.evicted += evicted

    def peek(self, max_points: int) -> tuple[list[int], list[bytes]]:
        """The oldest chunks not already in flight, holding up to max_points (at least one chunk); marks them
        in flight."""
        ids, lines, _ = self.peek_packed(max_points)
        return ids, lines

    def peek_packed(self, max_points: int) -> tuple[list[int], list[bytes], bytes | None]:
        """As peek, with the batch as one gzip stream where every chunk was compressed at append, else None."""
        ids: list[int] = []
        lines: list[bytes] = []
        packed: list[bytes] | None = []
        taken: dict[int, tuple[int, int]] = {}
        with self._lock:
            where, args = self._not_in_flight()
            try:
                for cid, n, data, z, lens in self._conn.execute(
                        f"SELECT id, n, data, z, lens FROM chunks WHERE {where} ORDER BY id", args):
                    if lines and len(lines) + n > max_points:
                        break
                    ids.append(cid)
                    lines.extend(unframe(data, lens))
                    taken[cid] = (n, len(data))
                    if packed is not None:
                        if z is None:
                            packed = None
                        else:
                            packed.append(z)
            except sqlite3.DatabaseError as e:
                if not sqlite_corrupt(e):
                    raise
                self._damaged(e)
                return [], [], None
            self._in_flight.update(taken)
        return ids, lines, (b"".join(packed) if packed and ids else None)

    def remove(self, ids: list[int]) -> int:
        """Forget acknowledged chunks; returns the points removed."""
        if not ids:
            return 0
        with self._lock:
            c = self._conn
            marks = ",".join("?" * len(ids))
            try:
                n, size = c.execute(f"SELECT coalesce(sum(n), 0), coalesce(sum(size), 0) FROM chunks "
                                    f"WHERE id IN ({marks})", ids).fetchone()
                c.execute(f"DELETE FROM chunks WHERE id IN ({marks})", ids)
            except sqlite3.DatabaseError as e:
                # Delivered but not forgotten (a full disk refuses even a delete's WAL frames): the chunks
                # are sent again later, which overwrites the same points (same series and timestamp).
                for cid in ids:
                    self._in_flight.pop(cid, None)
                if sqlite_corrupt(e):
                    self._damaged(e)
                    return 0
                raise
            self.points -= n
            self.bytes -= size
            for cid in ids:
                self._in_flight.pop(cid, None)
            return n

    def release(self, ids: list[int] | None = None) -> None:
        """These in-flight chunks (all, without ids) were not acknowledged; they stay, first in line."""
        with self._lock:
            if ids is None:
                self._in_flight.clear()
            else:
                for cid in ids:
                    self._in_flight.pop(cid, None)
            self._enforce_caps()

    def stats(self) -> dict:
        return {"buffer_points": self.points, "buffer_size_bytes": self.bytes,
                "buffer_capacity_points": self.max_points, "buffer_evicted_points_total": self.evicted,
                "buffer_lost_points_total": self.lost_points}

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as e:  # a full disk: the WAL stays, SQLite replays it at the next open
                log.warning("buffer %s: checkpoint at close failed: %s", self.path.name, e)
            finally:
                self._conn.close()
