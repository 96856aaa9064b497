"""Where a SunSpec device keeps a model: the SunSpec Device Information Model Specification's discovery.

A SunSpec device answers "SunS" (0x5375 0x6E53) in two holding registers at one of the well-known base addresses
(40000, 0, 50000), then a chain of models, each a header of two registers (its ID, its length L in registers)
followed by L registers, ended by ID 0xFFFF. A SunSpec profile's objects are offsets from its model's ID register
(``hr:0`` the ID, ``hr:2`` the first point), as the model definitions number them; discovery finds the model once
per device and the collector moves the profile's addresses there.
"""

from __future__ import annotations

from .blocks import Block, Ref
from .client import DeviceError

SUNS = [0x5375, 0x6E53]
BASES = (40000, 0, 50000)
END = 0xFFFF
MAX_MODELS = 64  # a chain longer than any real device's: a garbage answer never loops


def _block(address: int, count: int) -> Block:
    return Block("hr", address, count, (("header", Ref("hr", address, count)),))


async def find_model(conn, unit: int, wanted: list[int], base: int | None = None) -> tuple[int, int]:
    """(model ID, address of its ID register): the first model of `wanted` in the device's chain."""
    bases = (base,) if base is not None else BASES
    start = None
    for b in bases:
        got = await conn.read(_block(b, 2), unit)
        if got.values == SUNS:
            start = b + 2
            break
    if start is None:
        raise DeviceError(f"unit {unit}: no SunSpec marker 'SunS' at {', '.join(map(str, bases))}")
    address, seen = start, []
    for _ in range(MAX_MODELS):
        got = await conn.read(_block(address, 2), unit)
        if got.values is None or len(got.values) != 2:
            break
        model, length = got.values
        if model == END:
            break
        if model in wanted:
            return model, address
        seen.append(model)
        address += 2 + length
        if address > 0xFFFF:
            break
    raise DeviceError(f"unit {unit}: no SunSpec model {'/'.join(map(str, wanted))} in its chain "
                      f"(models {', '.join(map(str, seen)) or 'none'})")
