"""The client TLS context every HTTPS client of the agent's own uses: verification on unless told otherwise, a CA
bundle for a private PKI."""

from __future__ import annotations

import ssl
from pathlib import Path


def client_context(verify: bool = True, ca_file: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
