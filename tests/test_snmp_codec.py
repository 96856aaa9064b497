"""The lean SNMPv2c codec and transport, checked against pysnmp's own encoder and decoder.

The scripted agent below answers with messages built by pysnmp (pyasn1), never by our codec, so
a symmetric bug in our encoder and decoder cannot hide.
"""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyasn1.codec.ber import decoder as pdec
from pyasn1.codec.ber import encoder as penc
from pysnmp.proto import api, rfc1902, rfc1905

from collectors.snmp import ber
from collectors.snmp.client import V2cClient

P = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]

VALUES = [  # (pysnmp value, what our decoder must return)
    (rfc1902.Integer32(-5), -5),
    (rfc1902.Integer32(2**31 - 1), 2**31 - 1),
    (rfc1902.Integer32(-(2**31)), -(2**31)),
    (rfc1902.OctetString(b"outlet 1"), b"outlet 1"),
    (rfc1902.OctetString(b"\x00\xff" * 200), b"\x00\xff" * 200),  # long-form length
    (rfc1902.ObjectName("1.3.6.1.4.1.318.1.3.4.6"), "1.3.6.1.4.1.318.1.3.4.6"),
    (rfc1902.IpAddress("10.25.15.63"), "10.25.15.63"),
    (rfc1902.Counter32(4294967295), 4294967295),
    (rfc1902.Gauge32(0), 0),
    (rfc1902.TimeTicks(123456), 123456),
    (rfc1902.Counter64(2**64 - 1), 2**64 - 1),
    (rfc1902.Opaque(b"\x9f\x78\x04\x42\xf6\x00\x00"), b"\x9f\x78\x04\x42\xf6\x00\x00"),
    (rfc1905.noSuchObject, ber.NOSUCHOBJECT),
    (rfc1905.noSuchInstance, ber.NOSUCHINSTANCE),
    (rfc1905.endOfMibView, ber.ENDOFMIBVIEW),
]


def response(rid: int, varbinds, community: bytes = b"public", status: int = 0, index: int = 0) -> bytes:
    pdu = P.GetResponsePDU()
    P.apiPDU.set_defaults(pdu)
    P.apiPDU.set_request_id(pdu, rid)
    P.apiPDU.set_error_status(pdu, status)
    P.apiPDU.set_error_index(pdu, index)
    P.apiPDU.set_varbinds(pdu, varbinds)
    msg = P.Message()
    P.apiMessage.set_defaults(msg)
    P.apiMessage.set_community(msg, community)
    P.apiMessage.set_pdu(msg, pdu)
    return penc.encode(msg)


def test_decode_every_value_type_from_pysnmp():
    oids = [f"1.3.6.1.4.1.99999.{i}.{2**32 - 1}.0" for i in range(len(VALUES))]
    msg = response(0x7FFFFFFF, [(o, v) for o, (v, _) in zip(oids, VALUES)])
    rid, community, status, index, vbs = ber.decode_response(msg)
    assert (rid, community, status, index) == (0x7FFFFFFF, b"public", 0, 0)
    assert vbs == [(o, want) for o, (_, want) in zip(oids, VALUES)]


@pytest.mark.parametrize("pdu_type,cls", [(ber.GET, "GetRequestPDU"), (ber.GETBULK, "GetBulkRequestPDU")])
def test_our_requests_decode_in_pysnmp(pdu_type, cls):
    oids = ["1.3.6.1.2.1.1.2.0", "1.3.6.1.4.1.318.1.1.26.9.4.3.1", "2.999.1", "1.3.6.1.4.1.99999.4294967295"]
    msg = ber.encode_request(b"s3cret", pdu_type, 1234567, oids, 0, 25)
    decoded, rest = pdec.decode(msg, asn1Spec=P.Message())
    assert rest == b""
    assert str(P.apiMessage.get_community(decoded)) == "s3cret"
    pdu = P.apiMessage.get_pdu(decoded)
    assert type(pdu).__name__ == cls
    assert int(P.apiPDU.get_request_id(pdu)) == 1234567
    assert [str(o) for o, _ in P.apiPDU.get_varbinds(pdu)] == oids
    if pdu_type == ber.GETBULK:
        assert int(P.apiBulkPDU.get_max_repetitions(pdu)) == 25


def test_bad_oids_are_refused_before_sending():
    for bad in ("", "1", "1.3.x", "3.1", "1.40"):
        with pytest.raises(ber.BerError):
            ber.encode_oid(bad)


VALID = response(42, [("1.3.6.1.2.1.1.2.0", rfc1902.ObjectName("1.3.6.1.4.1.318.1.3.4.6")),
                      ("1.3.6.1.4.1.318.1.1.26.9.4.3.1.7.1", rfc1902.Integer32(110)),
                      ("1.3.6.1.4.1.318.1.1.26.9.4.3.1.3.1", rfc1902.OctetString(b"gpu-node-01"))])


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_escapes_as_anything_but_ber_error(data):
    try:
        ber.decode_response(data)
    except ber.BerError:
        pass


@settings(max_examples=1500, deadline=None)
@given(st.integers(0, len(VALID) - 1), st.integers(0, 255), st.integers(0, len(VALID)))
def test_mutated_and_truncated_responses(pos, byte, cut):
    mutated = bytearray(VALID)
    mutated[pos] = byte
    for candidate in (bytes(mutated), VALID[:cut], bytes(mutated[:cut])):
        try:
            rid, _, _, _, vbs = ber.decode_response(candidate)
        except ber.BerError:
            continue
        for oid, _ in vbs:
            assert all(part.isdigit() for part in oid.split("."))


class ScriptedAgent:
    """A loopback v2c agent over a sorted OID table, with misbehaviours to order.

    too_big_over: answer tooBig when a GETBULK would return more varbinds than this.
    no_multi: answer genErr to a GETBULK with more than one varbind (an agent that cannot).
    loop_at: for a GETNEXT/GETBULK of this OID, answer the same OID again (a broken agent).
    """

    def __init__(self, table: dict[str, object], community: bytes = b"public", too_big_over: int = 0,
                 no_multi: bool = False, loop_at: str | None = None, duplicate: bool = False) -> None:
        self.table = sorted(table.items(), key=lambda kv: tuple(int(x) for x in kv[0].split(".")))
        self.community, self.too_big_over, self.no_multi = community, too_big_over, no_multi
        self.loop_at, self.duplicate = loop_at, duplicate
        self.requests: list[tuple[str, int, int]] = []  # (kind, varbinds, max_repetitions)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def next_of(self, oid: str):
        key = tuple(int(x) for x in oid.split("."))
        for o, v in self.table:
            if tuple(int(x) for x in o.split(".")) > key:
                return o, v
        return oid, rfc1905.endOfMibView

    def serve(self) -> None:
        while not self.stopped:
            try:
                data, addr = self.sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            msg, _ = pdec.decode(data, asn1Spec=P.Message())
            if bytes(P.apiMessage.get_community(msg)) != self.community:
                continue  # like a real v2c agent: silence
            pdu = P.apiMessage.get_pdu(msg)
            rid = int(P.apiPDU.get_request_id(pdu))
            oids = [str(o) for o, _ in P.apiPDU.get_varbinds(pdu)]
            if pdu.isSameTypeWith(P.GetRequestPDU()):
                self.requests.append(("get", len(oids), 0))
                vals = dict(self.table)
                out = [(o, vals.get(o, rfc1905.noSuchObject)) for o in oids]
                reply = response(rid, out)
            else:
                reps = int(P.apiBulkPDU.get_max_repetitions(pdu))
                self.requests.append(("bulk", len(oids), reps))
                if self.no_multi and len(oids) > 1:
                    reply = response(rid, [(o, rfc1902.Null("")) for o in oids], status=5, index=2)
                elif self.too_big_over and len(oids) * reps > self.too_big_over:
                    reply = response(rid, [(o, rfc1902.Null("")) for o in oids], status=1)
                else:
                    out, cur = [], list(oids)
                    for _ in range(reps):
                        for j, o in enumerate(cur):
                            nxt = (o, rfc1902.Integer32(1)) if o == self.loop_at else self.next_of(o)
                            out.append(nxt)
                            cur[j] = nxt[0]
                    reply = response(rid, out)
            self.sock.sendto(reply, addr)
            if self.duplicate:
                self.sock.sendto(reply, addr)

    def close(self) -> None:
        self.stopped = True
        self.thread.join(2)
        self.sock.close()


def table(rows: int = 48) -> dict[str, object]:
    base = "1.3.6.1.4.1.318.1.1.26"
    t: dict[str, object] = {"1.3.6.1.2.1.1.2.0": rfc1902.ObjectName("1.3.6.1.4.1.318.1.3.4.6")}
    for c in (4, 5, 9):
        t[f"{base}.4.3.1.{c}.1"] = rfc1902.Integer32(c)
    for r in range(1, rows + 1):
        t[f"{base}.9.4.3.1.3.{r}"] = rfc1902.OctetString(f"outlet{r}".encode())
        t[f"{base}.9.4.3.1.7.{r}"] = rfc1902.Integer32(r * 10)
    t["1.3.6.1.4.1.9999.1.0"] = rfc1902.Integer32(0)  # something after the tables
    return t


SUBTREES = ["1.3.6.1.4.1.318.1.1.26.4.3.1", "1.3.6.1.4.1.318.1.1.26.9.4.3.1", "1.3.6.1.4.1.318.1.1.26.8.3.1"]


def walk(agent: ScriptedAgent, subtrees=SUBTREES, community=b"public", **kw):
    async def go():
        c = V2cClient()
        try:
            counts: dict[str, int] = {}
            got = await c.walk(community, "127.0.0.1", agent.port, subtrees, kw.pop("timeout", 1.0),
                               kw.pop("retries", 0), counts=counts, **kw)
            return got, counts
        finally:
            c.close()

    return asyncio.run(go())


def expected(rows: int = 48) -> dict[str, object]:
    inside = tuple(s + "." for s in SUBTREES)
    return {o: (bytes(v) if isinstance(v, rfc1902.OctetString) else int(v))
            for o, v in table(rows).items() if o.startswith(inside)}


def test_walk_several_tables_in_shared_requests():
    agent = ScriptedAgent(table(48))
    try:
        got, counts = walk(agent)
    finally:
        agent.close()
    assert got == expected(48)
    assert counts == {SUBTREES[0]: 3, SUBTREES[1]: 96, SUBTREES[2]: 0}
    # 3 + 96 values, 64 varbinds per request: far fewer requests than one walk per table
    assert len(agent.requests) <= 4 and agent.requests[0] == ("bulk", 3, 21)


def test_too_big_shrinks_the_request():
    agent = ScriptedAgent(table(48), too_big_over=10)
    try:
        got, _ = walk(agent)
    finally:
        agent.close()
    assert got == expected(48)
    assert any(r[0] == "bulk" and r[1] * r[2] <= 10 for r in agent.requests)


def test_agent_that_cannot_bulk_several_subtrees_is_walked_one_by_one():
    agent = ScriptedAgent(table(20), no_multi=True)
    try:
        got, _ = walk(agent)
    finally:
        agent.close()
    assert got == expected(20)
    assert {r[1] for r in agent.requests} == {3, 1}


def test_looping_agent_is_an_error_not_a_hang():
    loop_oid = "1.3.6.1.4.1.318.1.1.26.9.4.3.1.3.5"
    agent = ScriptedAgent(table(10), loop_at=loop_oid)
    try:
        with pytest.raises(Exception, match="not increasing"):
            walk(agent, subtrees=[SUBTREES[1]], max_repetitions=3)
    finally:
        agent.close()


def test_wrong_community_times_out_with_a_clear_message():
    agent = ScriptedAgent(table(2))
    try:
        with pytest.raises(Exception, match=r"no response from 127\.0\.0\.1:\d+ within 0\.3 s x 2 .*community"):
            walk(agent, community=b"wrong", timeout=0.3, retries=1)
    finally:
        agent.close()
    assert agent.requests == []


def test_duplicate_answers_and_concurrent_devices():
    agents = [ScriptedAgent(table(n), duplicate=True) for n in (5, 17, 33)]

    async def go():
        c = V2cClient()
        try:
            return await asyncio.gather(*(c.walk(b"public", "127.0.0.1", a.port, SUBTREES, 1.0, 0) for a in agents))
        finally:
            c.close()

    try:
        results = asyncio.run(go())
    finally:
        for a in agents:
            a.close()
    assert results == [expected(5), expected(17), expected(33)]
