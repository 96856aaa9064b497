"""A collector's JSON state file: read, or set aside when it cannot be (never fatal); written whole (a temporary
file, then a rename), so a crash mid-write leaves the previous state."""

from __future__ import annotations

import json
import os
from pathlib import Path

from agent.state import set_aside


def read_object(path: Path, what: str) -> dict:
    """The JSON object in the file; {} when there is none. One that cannot be read or is not a JSON object is set
    aside (`what` says what it should have been) and {} returned."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        set_aside(path, f"unreadable: {e}")
        return {}
    try:
        data = json.loads(text)  # Infinity/NaN parse: callers drop what they cannot use
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        set_aside(path, f"not valid {what}: {e}")
        return {}
    return data


def write_object(path: Path, data: dict) -> str | None:
    """Write the object whole; the error in words where it could not be (the caller keeps it in memory)."""
    tmp = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, allow_nan=False))
        os.replace(tmp, path)
    except (OSError, ValueError) as e:
        return str(e)
    return None
