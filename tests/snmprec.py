"""Reads snmpsim .snmprec recordings (OID|type-tag|value) into {oid: python value}."""

from __future__ import annotations

from pathlib import Path

# snmpsim type tags: 2 INTEGER, 4 OCTET STRING (4x: hex), 5 NULL, 6 OID, 64 IpAddress, 65 Counter32,
# 66 Gauge32, 67 TimeTicks, 68 Opaque, 70 Counter64
INTEGER_TAGS = {"2", "65", "66", "67", "70"}


def load(path: Path) -> dict[str, object]:
    data: dict[str, object] = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if not line or line.startswith("#"):
            continue
        oid, tag, value = line.split("|", 2)
        tag = tag.split(":")[0]
        if tag in INTEGER_TAGS:
            data[oid] = int(value)
        elif tag == "4x":
            data[oid] = bytes.fromhex(value)
        elif tag in ("4", "6", "64"):
            data[oid] = value
    return data
