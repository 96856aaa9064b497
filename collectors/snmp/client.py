"""SNMP I/O through pysnmp 7 (asyncio): one engine; the collector bounds how many devices are in flight.

Returns plain {oid: value} dicts (int, bytes, str) for the pure profile evaluation. pysnmp is
imported lazily so a node without the `snmp` extra only loses this collector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SYS_DESCR, SYS_OBJECT_ID = "1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.2.0"
GET_CHUNK = 32


class DeviceError(Exception):
    """The device did not answer usefully; the message names the cause."""


@dataclass
class Credentials:
    version: str = "v2c"
    community: str = "public"
    user: str = ""
    auth_proto: str | None = None  # SHA, SHA224, SHA256, SHA384, SHA512, MD5
    auth_key: str | None = None
    priv_proto: str | None = None  # AES (AES-128), AES192, AES256, DES
    priv_key: str | None = None
    context: str = ""  # SNMPv3 context name (snmpsim selects the recording with it)


def _auth(h, c: Credentials):
    if c.version == "v2c":
        return h.CommunityData(c.community, mpModel=1)
    auth = {None: h.usmNoAuthProtocol, "MD5": h.usmHMACMD5AuthProtocol, "SHA": h.usmHMACSHAAuthProtocol,
            "SHA224": h.usmHMAC128SHA224AuthProtocol, "SHA256": h.usmHMAC192SHA256AuthProtocol,
            "SHA384": h.usmHMAC256SHA384AuthProtocol, "SHA512": h.usmHMAC384SHA512AuthProtocol}[c.auth_proto]
    priv = {None: h.usmNoPrivProtocol, "DES": h.usmDESPrivProtocol, "AES": h.usmAesCfb128Protocol,
            "AES128": h.usmAesCfb128Protocol, "AES192": h.usmAesCfb192Protocol,
            "AES256": h.usmAesCfb256Protocol}[c.priv_proto]
    return h.UsmUserData(c.user, authKey=c.auth_key, privKey=c.priv_key, authProtocol=auth, privProtocol=priv)


def _value(v) -> Any:
    name = type(v).__name__
    if name in ("NoSuchObject", "NoSuchInstance", "EndOfMibView", "Null"):
        return None
    if name == "OctetString":
        return bytes(v)
    if name in ("ObjectIdentifier", "IpAddress"):
        return v.prettyPrint()
    try:
        return int(v)
    except (TypeError, ValueError):
        return v.prettyPrint()


class SnmpClient:
    def __init__(self) -> None:
        try:
            import pysnmp.hlapi.v3arch.asyncio as h
        except ImportError:
            raise ImportError("pysnmp is not installed (pip install 'aifactory-agent[snmp]')") from None
        self.h = h
        self.engine = h.SnmpEngine()
        # An engine's user table holds one key set per user name: devices that share a v3 user
        # name with other keys get an engine of their own (one per distinct key set, not per device).
        self.v3_engines: dict[tuple, object] = {}

    def _engine(self, c: Credentials):
        if c.version == "v2c":
            return self.engine
        key = (c.user, c.auth_proto, c.auth_key, c.priv_proto, c.priv_key)
        if key not in self.v3_engines:
            taken = any(k[0] == c.user and e is self.engine for k, e in self.v3_engines.items())
            self.v3_engines[key] = self.h.SnmpEngine() if taken else self.engine
        return self.v3_engines[key]

    def close(self) -> None:
        for e in {id(x): x for x in [self.engine, *self.v3_engines.values()]}.values():
            try:
                e.close_dispatcher()
            except Exception:
                pass

    async def _target(self, host: str, port: int, timeout: float, retries: int):
        try:
            return await self.h.UdpTransportTarget.create((host, port), timeout=timeout, retries=retries)
        except Exception as e:
            raise DeviceError(f"cannot resolve or reach {host}:{port}: {e}") from None

    async def get(self, creds: Credentials, host: str, port: int, oids: list[str], timeout: float = 2.0,
                  retries: int = 1) -> dict[str, Any]:
        h = self.h
        target = await self._target(host, port, timeout, retries)
        out: dict[str, Any] = {}
        for i in range(0, len(oids), GET_CHUNK):
            chunk = oids[i:i + GET_CHUNK]
            err, status, index, vbs = await h.get_cmd(
                self._engine(creds), _auth(h, creds), target, h.ContextData(contextName=creds.context),
                *(h.ObjectType(h.ObjectIdentity(o)) for o in chunk), lookupMib=False)
            if err:
                raise DeviceError(str(err))
            if status:
                raise DeviceError(f"{status.prettyPrint()} at {chunk[int(index) - 1] if index else '?'}")
            for o, v in vbs:
                val = _value(v)
                if val is not None:
                    out[str(o)] = val
        return out

    async def walk(self, creds: Credentials, host: str, port: int, columns: list[str], timeout: float = 2.0,
                   retries: int = 1, max_repetitions: int = 25) -> dict[str, Any]:
        h = self.h
        target = await self._target(host, port, timeout, retries)
        out: dict[str, Any] = {}
        for col in columns:
            async for err, status, _index, vbs in h.bulk_walk_cmd(
                    self._engine(creds), _auth(h, creds), target, h.ContextData(contextName=creds.context), 0,
                    max_repetitions, h.ObjectType(h.ObjectIdentity(col)), lookupMib=False,
                    lexicographicMode=False):
                if err:
                    raise DeviceError(str(err))
                if status:
                    break  # e.g. noSuchName from a v1-ish agent: this subtree is absent
                for o, v in vbs:
                    val = _value(v)
                    if val is not None:
                        out[str(o)] = val
        return out
