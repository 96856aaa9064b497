"""A virtual BMC on loopback: pyghmi's BMC server (RMCP+, the base of OpenStack VirtualBMC) answering DCMI Get
Power Reading and an SDR repository with full sensor records and Get Sensor Reading.

Run as its own process (pyghmi's client and server share one module-level session loop):
    python tests/vbmc.py PORT USER PASSWORD_FILE STATE.json
STATE.json is re-read on every request, so a test changes readings (or sets "dcmi": false for a BMC
without DCMI, "sdr": false for one without sensors) while the BMC runs.

Encodings follow the IPMI v2.0 rev 1.1 specification (section 43.1 full sensor record, table 43-15 unit
codes, section 35.14 Get Sensor Reading) and DCMI v1.5 (section 6.6.1 Get Power Reading, table 6-16).
"""

from __future__ import annotations

import json
import struct
import sys
import time
import zlib
from pathlib import Path

UNITS = {"celsius": 1, "volts": 4, "amperes": 5, "watts": 6, "rpm": 18}
TYPES = {"temperature": 0x01, "voltage": 0x02, "current": 0x03, "fan": 0x04, "power_supply": 0x08,
         "other": 0x0B}


def full_sensor_record(record_id: int, number: int, name: str, sensor_type: str, unit: str, m: int = 1,
                       r_exp: int = 0, entity: int = 0x07, linearization: int = 0) -> bytes:
    """A type-01 SDR: unsigned, reading = M * raw * 10^r_exp (B = 0); linear unless `linearization` says
    otherwise (0x70-0x7F: non-linear, the factors come from Get Sensor Reading Factors)."""
    body = bytearray(43)
    body[0], body[1], body[2] = 0x20, 0x00, number  # owner BMC, LUN 0, sensor number
    body[3], body[4] = entity, 1  # entity id and instance
    body[5], body[6] = 0x7F, 0x68  # initialization; capabilities: thresholds readable
    body[7], body[8] = TYPES[sensor_type], 0x01  # sensor type; event/reading type: threshold
    body[15] = 0x00  # units 1: unsigned, no rate, no percentage
    body[16] = UNITS[unit]  # base unit
    body[18] = linearization & 0x7F
    body[19] = m & 0xFF
    body[20] = (m >> 8) & 0x03
    body[24] = (r_exp & 0x0F) << 4  # R exponent (4-bit two's complement), B exponent 0
    body[29] = 0xFF  # sensor maximum
    ident = name.encode()[:16]
    body[42] = 0xC0 | len(ident)  # 8-bit ASCII + Latin-1, length
    body = body[:43] + ident
    return struct.pack("<HBBB", record_id, 0x51, 0x01, len(body)) + bytes(body)


def raw_for(value: float, m: int, r_exp: int) -> int:
    return max(0, min(255, round(value / (m * 10 ** r_exp))))


def only_cipher_suite_3() -> None:
    """pyghmi's server answers every RMCP+ Open Session Request with cipher suite 3 (HMAC-SHA1) even when the
    client proposed SHA-256, which a real BMC limited to suite 3 refuses with status 0x11 ("no cipher suite
    match", IPMI v2.0 table 13-15); pyghmi's client then retries with SHA-1, as it does against real BMCs."""
    from pyghmi.ipmi.private import serversession

    accept = serversession.ServerSession.create_open_session_response

    def respond(self, request):
        if len(request) >= 13 and request[12] != 1:  # authentication algorithm proposed: not RAKP-HMAC-SHA1
            return bytearray([request[0], 0x11, 0, 0]) + bytearray(request[4:8])
        return accept(self, request)

    serversession.ServerSession.create_open_session_response = respond


def main() -> int:
    import pyghmi.ipmi.bmc as bmc

    only_cipher_suite_3()

    port, user, password_file, state_file = int(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])
    password = Path(password_file).read_text().strip()

    def state() -> dict:
        return json.loads(state_file.read_text())

    class VirtualBmc(bmc.Bmc):
        def records(self, st):
            out = []
            for i, s in enumerate(st.get("sensors", ())):
                out.append(full_sensor_record(i, s["number"],
                                              s["name"], s["type"], s["unit"], s.get("m", 1), s.get("r_exp", 0),
                                              s.get("entity", 0x07), s.get("linearization", 0)))
            return out

        def handle_raw_request(self, request, session):
            st = state()
            if st.get("delay"):
                time.sleep(st["delay"])
            netfn, cmd, data = request["netfn"], request["command"], bytes(request.get("data") or b"")
            if netfn == 0x2C and cmd == 0x02:  # DCMI Get Power Reading
                if not st.get("dcmi", True):
                    return session.send_ipmi_response(code=0xC1)  # invalid command: no DCMI on this BMC
                p = st["power"]
                reply = struct.pack("<BHHHHIIB", 0xDC, p["current"], p["min"], p["max"], p["average"],
                                    int(time.time()), p["period_ms"], 0x40 if p.get("active", True) else 0)
                return session.send_ipmi_response(data=list(reply))
            if netfn == 0x0A and st.get("sdr", True):
                recs = self.records(st)
                if cmd == 0x20:  # Get SDR Repository Info
                    # the most recent addition's timestamp names this repository's content, as a real BMC's
                    # does: clients (pyghmi) cache an SDR by it, so two BMCs with other sensors are not confused
                    added = zlib.crc32(b"".join(recs))
                    info = struct.pack("<BHHIIB", 0x51, len(recs), 0xFFFF, added, 0, 0x02)
                    return session.send_ipmi_response(data=list(info) + [0] * (14 - len(info)))
                if cmd == 0x22:  # Reserve SDR Repository
                    return session.send_ipmi_response(data=[0x01, 0x00])
                if cmd == 0x23:  # Get SDR: reservation, record id, offset, bytes to read
                    rec_id, offset, size = data[2] | (data[3] << 8), data[4], data[5]
                    index = 0 if rec_id == 0 else rec_id
                    if index >= len(recs) or not recs:
                        return session.send_ipmi_response(code=0xCB)  # requested data not present
                    rec = recs[index]
                    nxt = index + 1 if index + 1 < len(recs) else 0xFFFF
                    chunk = rec[offset:offset + (len(rec) if size == 0xFF else size)]
                    return session.send_ipmi_response(data=[nxt & 0xFF, nxt >> 8] + list(chunk))
            if netfn == 0x04 and cmd == 0x2D and st.get("sdr", True):  # Get Sensor Reading
                for s in st.get("sensors", ()):
                    if s["number"] == data[0]:
                        if s.get("value") is None:
                            return session.send_ipmi_response(data=[0, 0x20, 0])  # reading unavailable
                        raw = raw_for(s["value"], s.get("m", 1), s.get("r_exp", 0))
                        return session.send_ipmi_response(data=[raw, 0xC0, 0])
                return session.send_ipmi_response(code=0xCB)
            return super().handle_raw_request(request, session)

    VirtualBmc({user: password}, port=port, address="127.0.0.1")
    print("ready", flush=True)
    VirtualBmc.listen(timeout=3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
