"""Where a secret file is and whether it can be read: shared by the config's checks and ``agent.secrets``."""

from __future__ import annotations

import os
from pathlib import Path


def secret_path(file: str) -> Path | None:
    """A bare file name (no slash) is a systemd credential, in $CREDENTIALS_DIRECTORY; None when that is unset
    (outside the service, e.g. `config check` run by Ansible before the unit starts: checked at start)."""
    if "/" not in file:
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if creds:
            return Path(creds) / file
        if Path(file).exists():
            return Path(file)
        return None
    return Path(file)


MAX_SECRET = 64 << 10  # a password or token is bytes to a few KB; /dev/zero would be read forever


def read_secret_file(path: Path) -> str:
    """The stripped content; ValueError with the reason when it cannot be used."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SECRET + 1)
        if len(raw) > MAX_SECRET:
            raise ValueError(f"secret file {path} holds more than {MAX_SECRET >> 10} KiB: not a password or token")
        value = raw.decode("utf-8").strip()
    except OSError as e:
        raise ValueError(f"cannot read secret file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"secret file {path} is not UTF-8 text") from None
    if not value:
        raise ValueError(f"secret file {path} is empty")
    return value


def check_secret_file(file: str | None) -> str | None:
    """For option validators: the secret when it can be read now, None when it is deferred; raises ValueError."""
    if not file:
        return None
    path = secret_path(file)
    return read_secret_file(path) if path is not None else None
