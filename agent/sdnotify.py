"""systemd notifications (sd_notify) over $NOTIFY_SOCKET: READY, STATUS, STOPPING, WATCHDOG.

No dependency: one AF_UNIX datagram per message (abstract namespace when the path starts with '@').
Outside systemd (no $NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, env: dict | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self.addr: str | bytes | None = None
        if path.startswith("@"):
            self.addr = "\0" + path[1:]
        elif path.startswith("/"):
            self.addr = path
        # The watchdog applies to this process only if WATCHDOG_PID is unset or ours.
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_interval: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2  # feed twice per period, as sd_watchdog_enabled advises

    @property
    def enabled(self) -> bool:
        return self.addr is not None

    def send(self, *lines: str) -> bool:
        if self.addr is None:
            return False
        msg = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.connect(self.addr)
                s.sendall(msg)
            return True
        except OSError:
            return False  # systemd went away: nothing to tell

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")
