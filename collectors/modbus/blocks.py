"""Which Modbus reads fetch a profile's objects: addresses parsed, adjacent objects coalesced into as few reads
as the device allows, and a read the device refuses split into reads of its objects (pure, no I/O).

An object is named ``TABLE:ADDRESS``: ``hr`` holding registers (function 3), ``ir`` input registers (4), ``co``
coils (1), ``di`` discrete inputs (2); ADDRESS is the protocol address, from 0 (a manual's register 40001 is
``hr:0``, 30001 ``ir:0``). A SunSpec profile's addresses are offsets into its model (collectors/modbus/sunspec.py)
and are moved to the device's model address before planning.
"""

from __future__ import annotations

import re
from typing import NamedTuple

TABLES = {"hr": "holding", "ir": "input", "co": "coil", "di": "discrete"}
REGISTER_TABLES = ("hr", "ir")
# What one read may return (Modbus Application Protocol 1.1b3, 6.1-6.4): 125 registers, 2000 bits.
PROTOCOL_MAX = {"hr": 125, "ir": 125, "co": 2000, "di": 2000}

_OBJECT = re.compile(r"^(hr|ir|co|di):(\d{1,5})$")


class ObjectError(ValueError):
    pass


class Ref(NamedTuple):
    table: str  # hr, ir, co, di
    address: int
    count: int  # registers (or bits) it spans


def parse_object(name: str, count: int = 1) -> Ref:
    m = _OBJECT.match(name.strip())
    if m is None:
        raise ObjectError(f"{name!r} is not a Modbus object: expected hr:N, ir:N, co:N or di:N (N from 0 to 65535)")
    address = int(m.group(2))
    if address + count - 1 > 0xFFFF:
        raise ObjectError(f"{name!r} with {count} words runs past address 65535")
    return Ref(m.group(1), address, count)


class Block(NamedTuple):
    """One read: a table, its first address, how many registers or bits, and the objects inside."""

    table: str
    address: int
    count: int
    objects: tuple[tuple[str, Ref], ...]  # (object name, its reference) in address order


def plan_blocks(objects: dict[str, Ref], max_count: int = 125, max_gap: int = 16,
                holes: list[Ref] = ()) -> list[Block]:
    """Coalesce objects of one table whose addresses are at most `max_gap` apart into one read of at most
    `max_count` registers (or bits): a meter's 40 float registers come in one request, not 40. Objects wider than
    `max_count` still get a read of their own. No read spans a hole: an object the device refused, which would
    make it refuse the whole read."""
    out: list[Block] = []
    by_table: dict[str, list[tuple[str, Ref]]] = {}
    for name, ref in objects.items():
        by_table.setdefault(ref.table, []).append((name, ref))
    for table in sorted(by_table):
        limit = min(max_count, PROTOCOL_MAX[table])
        items = sorted(by_table[table], key=lambda x: (x[1].address, -x[1].count))
        cur: list[tuple[str, Ref]] = []
        start = end = 0  # end: one past the last address in the block
        for name, ref in items:
            stop = ref.address + ref.count
            if (cur and ref.address - end <= max_gap and max(end, stop) - start <= limit
                    and not any(h.table == table and h.address < max(end, stop) and h.address + h.count > start
                                for h in holes)):
                cur.append((name, ref))
                end = max(end, stop)
                continue
            if cur:
                out.append(Block(table, start, end - start, tuple(cur)))
            cur, start, end = [(name, ref)], ref.address, stop
        if cur:
            out.append(Block(table, start, end - start, tuple(cur)))
    return out


def split(block: Block) -> list[Block]:
    """A refused read as one read per object: a gap the device does not map, or one unsupported object, then
    costs only the objects it concerns."""
    return [Block(block.table, ref.address, ref.count, ((name, ref),)) for name, ref in block.objects]


def values_of(block: Block, got: list) -> dict[str, object]:
    """Each object's share of a read's answer: register objects their words (a list), bit objects a bool."""
    out: dict[str, object] = {}
    for name, ref in block.objects:
        at = ref.address - block.address
        part = got[at:at + ref.count]
        if len(part) != ref.count:
            continue  # a short answer: this object was not in it
        out[name] = list(part) if block.table in REGISTER_TABLES else bool(part[0])
    return out
