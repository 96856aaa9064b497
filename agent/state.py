"""The state directory, its lock, the status file, and what happens to a corrupt state file.

``aifactory status`` reads ``status.json`` (written atomically by the agent after each
run); nothing listens on a socket for it. A status whose pid is gone, belongs to another
process now, or has not been updated for too long is "not running".

Nodes lose power and fill disks: a state file that cannot be read (a truncated SQLite
database, garbage JSON) is moved aside as ``NAME.corrupt-TIMESTAMP``, said once in the log and
counted (``state_files_set_aside_total``); the agent starts afresh with that file and goes on.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import threading
import time
from pathlib import Path

STATUS_FILE = "status.json"
LOCK_FILE = "agent.lock"

log = logging.getLogger("agent.state")


class StateDirError(Exception):
    """The state directory cannot be used (missing rights, read-only, full): a configuration problem."""


class AlreadyRunning(Exception):
    def __init__(self, path: Path, pid: int | None) -> None:
        self.path, self.pid = path, pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"another agent ({who}) is running with state directory {path.parent} "
                         f"(lock {path}); stop it, or give this one its own --state-dir")


_set_aside: list[dict] = []
_set_aside_lock = threading.Lock()


def set_aside(path: Path, reason: str) -> Path | None:
    """Move a corrupt state file (and its SQLite -wal/-shm) out of the way; log and count it."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    try:
        os.replace(path, dest)
        for suffix in ("-wal", "-shm", "-journal"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                os.replace(side, dest.with_name(dest.name + suffix))
    except FileNotFoundError:
        dest = None
    except OSError as e:
        log.error("state file %s is unusable (%s) and cannot be moved aside: %s", path, reason, e)
        dest = None
    else:
        log.error("state file %s is unusable (%s): moved aside to %s; starting afresh", path, reason, dest.name)
    with _set_aside_lock:
        _set_aside.append({"path": str(path), "moved_to": str(dest) if dest else None, "reason": reason,
                           "at": time.time()})
    return dest


SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26


def sqlite_corrupt(e: BaseException) -> bool:
    """The database file itself is damaged (truncated, overwritten): set it aside. Other errors (disk full,
    I/O error, locked) leave the file as it is: they pass."""
    code = getattr(e, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)


def retry_after_damage(fn, repair):
    """``fn()``; when SQLite finds the file damaged, ``repair(error)`` (which replaces it) and ``fn()`` again."""
    import sqlite3

    try:
        return fn()
    except sqlite3.DatabaseError as e:
        if not sqlite_corrupt(e):
            raise
        repair(e)
        return fn()


def open_or_set_aside(path: Path, opener):
    """``opener()``, and when it finds the file damaged: set the file aside and ``opener()`` afresh."""
    return retry_after_damage(opener, lambda e: set_aside(path, f"damaged SQLite database: {e}"))


def set_aside_files() -> list[dict]:
    with _set_aside_lock:
        return list(_set_aside)


def check_writable(state_dir: Path) -> None:
    """Create the state directory and prove a file can be written there, or raise StateDirError."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        probe = state_dir / f".write-test.{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        cause = {errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on device",
                 errno.EACCES: "permission denied", errno.EDQUOT: "disk quota exceeded"}.get(e.errno, e.strerror)
        raise StateDirError(f"state directory {state_dir} cannot be written: {cause or e}") from None


class StateLock:
    """An exclusive flock on STATE_DIR/agent.lock, held for the agent's life (released by the kernel when
    the process dies, even by kill -9). The file holds the owner's pid for the message of the second one."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = int(os.pread(fd, 32, 0).decode().strip() or 0) or None
            except (OSError, ValueError):
                pid = None
            os.close(fd)
            raise AlreadyRunning(self.path, pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


UNKNOWN = -2  # the lock cannot be looked at (another user's state directory): decide by the pid


def lock_holder(state_dir: Path) -> int | None:
    """The pid holding the state directory's lock (-1: held, pid unreadable), None when no agent holds it,
    UNKNOWN when this user cannot open the lock file."""
    path = Path(state_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        return UNKNOWN
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return int(os.pread(fd, 32, 0).decode().strip() or 0) or -1
            except (OSError, ValueError):
                return -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def default_state_dir() -> Path:
    # systemd's StateDirectory= hands the path over in $STATE_DIRECTORY.
    env = os.environ.get("STATE_DIRECTORY")
    if env:
        return Path(env.split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/aifactory")
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(xdg) / "aifactory"


def resolve_state_dir(cli: str | os.PathLike | None, configured: Path | None) -> Path:
    if cli:
        return Path(cli)
    if configured:
        return Path(configured)
    return default_state_dir()


def write_status(state_dir: Path, status: dict) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f".{STATUS_FILE}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(status, f, separators=(",", ":"), default=str)
    os.replace(tmp, state_dir / STATUS_FILE)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StatusUnreadable(Exception):
    """status.json exists but is not a status (empty, truncated, garbage)."""


def read_status(state_dir: Path) -> dict | None:
    """The last status, with ``running`` decided from the lock (or the pid), and freshness.

    ``running`` needs the agent's lock held by the status's pid (a pid reused by another process
    does not hold it) and an update within ``stale_after_seconds`` (the agent writes after each run).
    """
    path = state_dir / STATUS_FILE
    try:
        with open(path, encoding="utf-8") as f:
            status = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise StatusUnreadable(f"{path} is unreadable ({type(e).__name__}: {e}); the agent rewrites it after "
                               "each run: if it runs, this passes") from None
    if not isinstance(status, dict) or not isinstance(status.get("pid"), int):
        raise StatusUnreadable(f"{path} is not an agent status; the agent rewrites it after each run")
    pid = status["pid"]
    now = time.time()
    try:
        updated = float(status.get("updated_at") or 0)
    except (TypeError, ValueError):
        updated = 0.0
    status["age_seconds"] = round(now - updated, 3)
    stale_after = float(status.get("stale_after_seconds") or 300)
    holder = lock_holder(state_dir)
    if holder == UNKNOWN or holder is None and not (state_dir / LOCK_FILE).exists():
        alive = pid_alive(pid)  # no lock to go by (unreadable, or a status from before locking): the pid
    else:
        alive = holder == pid
    status["stale"] = now - updated > stale_after
    status["running"] = alive and not status.get("stopped") and not status["stale"]
    return status
