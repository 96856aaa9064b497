"""Retry spacing shared by everything that retries: outputs, notifiers."""

from __future__ import annotations

import random


def backoff(failures: int, base: float, cap: float) -> float:
    """Exponential back-off with jitter (50-100% of base * 2^failures, at most cap)."""
    return min(cap, base * 2 ** min(failures, 10)) * (0.5 + random.random() / 2)
