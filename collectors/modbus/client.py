"""Modbus TCP reads through pymodbus (3.x, asyncio): one connection per device or gateway, exception responses
told apart from a device that is gone.

pymodbus is imported here only, so a node without it loses this collector, not the daemon.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NamedTuple

from .blocks import Block

log = logging.getLogger(__name__)

# Modbus exception codes (Modbus Application Protocol 1.1b3, 7): what each means for the objects asked.
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE = 1, 2, 3
DEVICE_FAILURE, ACKNOWLEDGE, DEVICE_BUSY = 4, 5, 6
GATEWAY_PATH, GATEWAY_TARGET = 10, 11
EXCEPTION_NAMES = {
    ILLEGAL_FUNCTION: "illegal function", ILLEGAL_ADDRESS: "illegal data address",
    ILLEGAL_VALUE: "illegal data value", DEVICE_FAILURE: "server device failure", ACKNOWLEDGE: "acknowledge",
    DEVICE_BUSY: "server device busy", 8: "memory parity error", GATEWAY_PATH: "gateway path unavailable",
    GATEWAY_TARGET: "gateway target device failed to respond",
}
# The device does not have these objects (or not in one read): split the read, then leave the object out.
REFUSED = (ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE)
# The device is there but could not answer now: asked once more, then the objects miss this poll.
TRANSIENT = (DEVICE_FAILURE, ACKNOWLEDGE, DEVICE_BUSY)
# A gateway says the unit behind it does not answer: the device is down, not its objects absent.
UNREACHABLE = (GATEWAY_PATH, GATEWAY_TARGET)


class DeviceError(Exception):
    pass


class Answer(NamedTuple):
    values: list | None  # registers (ints) or bits (bools); None with an exception code
    exception: int | None


def exception_name(code: int) -> str:
    return f"exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})"


class Connection:
    """One TCP connection to a device or a gateway, shared by the unit ids behind it. Requests go one at a time:
    many gateways and devices serve one transaction at a time, and pymodbus serialises them anyway."""

    def __init__(self, host: str, port: int, timeout: float, retries: int) -> None:
        self.host, self.port = host, port
        self.timeout, self.retries = timeout, retries
        self.client = None
        self.loop = None
        self.requests = 0

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        # a connection lives on the loop that opened it (a one-shot command runs each poll on a loop of its own)
        if self.client is not None and self.client.connected and self.loop is loop:
            return
        from pymodbus.client import AsyncModbusTcpClient

        self.close()
        self.loop = loop
        # reconnect_delay 0: no background reconnection loop; the next poll connects again.
        self.client = AsyncModbusTcpClient(self.host, port=self.port, timeout=self.timeout, retries=self.retries,
                                           reconnect_delay=0)
        if not await self.client.connect():
            self.close()
            raise DeviceError(f"cannot connect to {self.host}:{self.port}")

    async def read(self, block: Block, unit: int) -> Answer:
        from pymodbus.exceptions import ModbusException

        await self.connect()
        call = {"hr": self.client.read_holding_registers, "ir": self.client.read_input_registers,
                "co": self.client.read_coils, "di": self.client.read_discrete_inputs}[block.table]
        self.requests += 1
        try:
            r = await call(block.address, count=block.count, device_id=unit)
        except ModbusException as e:
            self.close()  # a late answer must not be taken for the next request's
            raise DeviceError(f"no answer from unit {unit}: {str(e).strip() or type(e).__name__}") from None
        except (TimeoutError, OSError) as e:
            self.close()
            raise DeviceError(f"no answer from unit {unit}: {e or type(e).__name__}") from None
        if r.isError():
            code = getattr(r, "exception_code", None)
            if code is None:
                raise DeviceError(f"unit {unit}: an error answer without an exception code ({r})")
            return Answer(None, int(code))
        values = r.registers if block.table in ("hr", "ir") else r.bits
        return Answer(list(values), None)

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # closing a half-open transport must not fail the poll that gave up on it
                log.debug("closing %s:%d", self.host, self.port, exc_info=True)
            self.client = None
