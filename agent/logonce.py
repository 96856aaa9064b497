"""A failure logged once per cause and its recovery once: a log says what changed, not every repeat."""

from __future__ import annotations

import logging


class Latch:
    def __init__(self, logger: logging.Logger, unknown: str | None = None) -> None:
        self.log = logger
        # the cause while failing, None while well; `unknown` (not polled yet, say): the first success is said too
        self.error: str | None = unknown

    def failed(self, cause: str, msg: str, *args, level: int = logging.ERROR) -> None:
        if cause != self.error:
            self.log.log(level, msg, *args)
        self.error = cause

    def recovered(self, msg: str, *args) -> None:
        if self.error is not None:
            self.log.info(msg, *args)
            self.error = None
