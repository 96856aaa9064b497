"""Small helpers shared by the /proc and /sys readers."""

from __future__ import annotations

import re
from pathlib import Path


def read_text(path: Path) -> str | None:
    """The file's content stripped, or None where it is absent or unreadable (sysfs EINVAL etc.)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def read_int(path: Path) -> int | None:
    text = read_text(path)
    if text is None:
        return None
    try:
        return int(text, 0) if text.startswith("0x") else int(text)
    except ValueError:
        return None


def compile_any(patterns: list[str] | tuple[str, ...]) -> re.Pattern | None:
    """One regex matching any of the patterns (full match), or None for an empty list."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p})" for p in patterns))


def matches(rx: re.Pattern | None, value: str) -> bool:
    return bool(rx and rx.fullmatch(value))
