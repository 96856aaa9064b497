"""The state directory and the status file the running agent keeps there.

``aifactory status`` reads ``status.json`` (written atomically by the agent after each
run); nothing listens on a socket for it. A status whose pid is gone is "not running".
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

STATUS_FILE = "status.json"


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


def read_status(state_dir: Path) -> dict | None:
    try:
        with open(state_dir / STATUS_FILE, encoding="utf-8") as f:
            status = json.load(f)
    except FileNotFoundError:
        return None
    pid = status.get("pid")
    status["running"] = bool(pid) and pid_alive(int(pid)) and not status.get("stopped")
    status["age_seconds"] = round(time.time() - status.get("updated_at", 0), 3)
    return status
