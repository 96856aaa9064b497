"""SNMP I/O: v2c through a lean codec on one UDP socket (the hot path), v3 through pysnmp 7 (asyncio).

Returns plain {oid: value} dicts (int, bytes, str) for the pure profile evaluation; the collector
bounds how many devices are in flight. pysnmp is imported only when a v3 device is polled, so a node
without the `snmp` extra can still poll v2c devices.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import random
import socket
import time
from dataclasses import dataclass
from typing import Any

from . import ber

SYS_DESCR, SYS_OBJECT_ID = "1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.2.0"
GET_CHUNK = 32
MAX_BULK_VARBINDS = 64  # per GETBULK request across its subtrees (an NMC answers ~4 KB without tooBig)


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


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram) -> None:
        self.datagram_received = on_datagram

    def error_received(self, exc) -> None:  # ICMP errors: the request times out and names the device
        pass


class V2cClient:
    """SNMPv2c GET/GETBULK over one UDP socket per address family, responses matched by request id.

    Retransmissions reuse the request id, so a late answer to the first try still counts. A device
    that never answers (down, or a wrong community: v2c agents stay silent) fails after
    timeout x (retries + 1) with a message that says so.
    """

    RCVBUF = 4 << 20  # many devices answer at once: a small default buffer drops datagrams

    def __init__(self) -> None:
        self.endpoints: dict[int, asyncio.DatagramTransport] = {}
        self.socks: list[socket.socket] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pending: dict[int, list] = {}
        self.ids = itertools.count(random.randrange(1, 1 << 30))
        self.resolved: dict[tuple[str, int], tuple[float, tuple]] = {}

    async def _endpoint(self, family: int) -> asyncio.DatagramTransport:
        loop = asyncio.get_running_loop()
        if self.loop is not loop:  # a new event loop (one asyncio.run per call in tools): new sockets
            self.close()
            self.loop = loop
        if family not in self.endpoints:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RCVBUF)
            except OSError:
                pass
            sock.setblocking(False)
            self.socks.append(sock)
            sock.bind(("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0))
            transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self._received), sock=sock)
            self.endpoints[family] = transport
        return self.endpoints[family]

    async def _resolve(self, host: str, port: int, timeout: float) -> tuple[int, tuple]:
        hit = self.resolved.get((host, port))
        if hit and hit[0] > time.monotonic():
            return hit[1]
        try:
            ip = ipaddress.ip_address(host)
            out = (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), (str(ip), port)
            self.resolved[(host, port)] = (float("inf"), out)
            return out
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM), timeout)
        except (OSError, TimeoutError) as e:
            raise DeviceError(f"cannot resolve {host}: {e or 'timed out'}") from None
        family, _, _, _, addr = infos[0]
        out = (family, (addr[0], addr[1]))
        self.resolved[(host, port)] = (time.monotonic() + 300, out)
        return out

    def _received(self, data: bytes, addr) -> None:
        try:
            rid, community, status, index, vbs = ber.decode_response(data)
        except ber.BerError:
            return  # not ours, or garbage: the request it might belong to times out
        entry = self.pending.get(rid)
        if entry is None:
            return  # late answer to a retransmission already served, or a stray packet
        fut, want_addr, want_community = entry[0], entry[1], entry[2]
        if addr[0] != want_addr[0] or addr[1] != want_addr[1] or community != want_community:
            return
        if not fut.done():
            fut.set_result((status, index, vbs))

    async def request(self, community: bytes, host: str, port: int, pdu: int, oids: list[str],
                      max_repetitions: int, timeout: float, retries: int):
        family, addr = await self._resolve(host, port, timeout)
        transport = await self._endpoint(family)
        rid = next(self.ids) & 0x7FFFFFFF
        msg = ber.encode_request(community, pdu, rid, oids, 0, max_repetitions)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        tries = [0]

        def send() -> None:
            if fut.done():
                return
            if tries[0] > retries:
                fut.set_exception(DeviceError(
                    f"no response from {host}:{port} within {timeout:g} s x {retries + 1} "
                    f"(device down, unreachable, or wrong community)"))
                return
            tries[0] += 1
            try:
                transport.sendto(msg, addr)
            except OSError as e:
                fut.set_exception(DeviceError(f"cannot send to {host}:{port}: {e}"))
                return
            entry[3] = loop.call_later(timeout, send)

        entry = [fut, addr, community, None]
        self.pending[rid] = entry
        try:
            send()
            return await fut
        finally:
            self.pending.pop(rid, None)
            if entry[3] is not None:
                entry[3].cancel()

    async def get(self, community: bytes, host: str, port: int, oids: list[str], timeout: float,
                  retries: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        todo = [oids[i:i + GET_CHUNK] for i in range(0, len(oids), GET_CHUNK)]
        while todo:
            chunk = todo.pop()
            status, index, vbs = await self.request(community, host, port, ber.GET, chunk, 0, timeout, retries)
            if status == 1 and len(chunk) > 1:  # tooBig: ask for halves
                todo += [chunk[:len(chunk) // 2], chunk[len(chunk) // 2:]]
                continue
            if status == 2 and 1 <= index <= len(chunk):  # noSuchName (SNMPv1 style): drop that OID
                rest = chunk[:index - 1] + chunk[index:]
                if rest:
                    todo.append(rest)
                continue
            if status:
                at = chunk[index - 1] if 1 <= index <= len(chunk) else "?"
                raise DeviceError(f"{ber.ERROR_NAMES.get(status, status)} at {at}")
            for o, v in vbs:
                if v is not None and not isinstance(v, ber.Exception_):
                    out[o] = v
        return out

    async def walk(self, community: bytes, host: str, port: int, subtrees: list[str], timeout: float,
                   retries: int, max_repetitions: int = MAX_BULK_VARBINDS,
                   counts: dict[str, int] | None = None) -> dict[str, Any]:
        """GETBULK walks of several subtrees at once: one request carries the next OID of each
        subtree still open (RFC 3416 answers row-major, repetition by repetition), so a poll of
        three tables costs about as many requests as its largest table alone."""
        out: dict[str, Any] = {}
        last = {st: st for st in subtrees}
        found = dict.fromkeys(subtrees, 0)
        seen: set[str] = set()
        active = list(dict.fromkeys(subtrees))
        budget = MAX_BULK_VARBINDS
        while active:
            k = len(active)
            reps = max(1, min(max_repetitions, budget // k))
            status, _index, vbs = await self.request(community, host, port, ber.GETBULK, [last[st] for st in active],
                                                     reps, timeout, retries)
            if status == 1 and reps * k > 1:  # tooBig: ask for fewer varbinds
                budget = max(1, reps * k // 2)
                if reps == 1:  # one row of k subtrees is already too big: walk them one by one
                    for st in active:
                        out.update(await self.walk(community, host, port, [st], timeout, retries, 1, counts))
                    return out
                continue
            if status:
                if k == 1:
                    break  # e.g. noSuchName from a v1-ish agent: this subtree is absent
                for st in active:  # an agent that cannot bulk several subtrees: one by one
                    out.update(await self.walk(community, host, port, [st], timeout, retries, max_repetitions,
                                               counts))
                return out
            if not vbs:
                break
            closed = set()
            for j, (o, v) in enumerate(vbs):
                st = active[j % k]
                if st in closed:
                    continue
                if v is ber.ENDOFMIBVIEW or not o.startswith(st) or o[len(st):len(st) + 1] != ".":
                    closed.add(st)
                    continue
                if o in seen:
                    raise DeviceError(f"OID not increasing in the walk of {st} (at {o})")
                seen.add(o)
                last[st] = o
                if v is not None and not isinstance(v, ber.Exception_):
                    out[o] = v
                    found[st] += 1
            active = [st for st in active if st not in closed]
        if counts is not None:
            for st, n in found.items():
                counts[st] = counts.get(st, 0) + n
        return out

    def close(self) -> None:
        for t in self.endpoints.values():
            try:
                t.close()
            except RuntimeError:  # its loop is already closed (asyncio.run finished): close the socket
                pass
        for sock in self.socks:
            sock.close()
        self.endpoints.clear()
        self.socks.clear()


class SnmpClient:
    """v2c through V2cClient; v3 through pysnmp (imported on first use).

    lean_v2c=False sends v2c through pysnmp too: the bench and the equivalence test compare both.
    """

    def __init__(self, lean_v2c: bool = True) -> None:
        self.lean_v2c = lean_v2c
        self.v2c = V2cClient()
        self.h = None
        self.engine = None
        # An engine's user table holds one key set per user name: devices that share a v3 user
        # name with other keys get an engine of their own (one per distinct key set, not per device).
        self.v3_engines: dict[tuple, object] = {}

    def _pysnmp(self):
        if self.h is None:
            try:
                import pysnmp.hlapi.v3arch.asyncio as h
            except ImportError:
                raise DeviceError("SNMPv3 needs pysnmp: pip install 'aifactory-agent[snmp]'") from None
            self.h = h
            self.engine = h.SnmpEngine()
        return self.h

    def _engine(self, c: Credentials):
        if c.version == "v2c":
            return self.engine
        key = (c.user, c.auth_proto, c.auth_key, c.priv_proto, c.priv_key)
        if key not in self.v3_engines:
            taken = any(k[0] == c.user and e is self.engine for k, e in self.v3_engines.items())
            self.v3_engines[key] = self.h.SnmpEngine() if taken else self.engine
        return self.v3_engines[key]

    def close(self) -> None:
        self.v2c.close()
        if self.engine is None:
            return
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
        if creds.version == "v2c" and self.lean_v2c:
            return await self.v2c.get(creds.community.encode(), host, port, oids, timeout, retries)
        h = self._pysnmp()
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
                   retries: int = 1, max_repetitions: int | None = None,
                   counts: dict[str, int] | None = None) -> dict[str, Any]:
        """Values under each subtree; counts[subtree] += values found there (absent tables find 0)."""
        if creds.version == "v2c" and self.lean_v2c:
            return await self.v2c.walk(creds.community.encode(), host, port, columns, timeout, retries,
                                       max_repetitions or MAX_BULK_VARBINDS, counts)
        max_repetitions = max_repetitions or 25
        h = self._pysnmp()
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
                        if counts is not None:
                            counts[col] = counts.get(col, 0) + 1
        return out
