"""Secrets come from files (systemd credentials) or the environment, never from argv or the config."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from .config import ConfigError
from .secretfile import read_secret_file, secret_path


def read_secret(what: str, file: str | None = None, env: str | None = None) -> str | None:
    """The secret's value, or None when neither source is configured.

    A bare file name (no slash) is looked up in $CREDENTIALS_DIRECTORY first, as systemd's
    LoadCredential= places it there. A configured source that cannot be read is a config error.
    """
    if env:
        value = os.environ.get(env)
        if not value:
            raise ConfigError([f"{what}: environment variable {env} is not set or empty"])
        return value.strip()
    if file:
        path = secret_path(file) or Path(file)
        try:
            return read_secret_file(path)
        except ValueError as e:
            raise ConfigError([f"{what}: {e}"]) from None
    return None


def basic_auth(user: str, password: str | None) -> str:
    """An Authorization header's value for HTTP basic auth (RFC 7617)."""
    return "Basic " + base64.b64encode(f"{user}:{password or ''}".encode()).decode()
