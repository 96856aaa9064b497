"""IPMI I/O through pyghmi (RMCP+ out of band, /dev/ipmi0 in band): plain dataclasses, no samples.

pyghmi is the library OpenStack's VirtualBMC and Ironic build on: it speaks RMCP+ (cipher suite 3 and
SHA-256), the in-band device, the SDR repository and its linear conversions, so the agent carries no IPMI
codec of its own. DCMI Get Power Reading is asked raw and decoded here (pyghmi keeps only the current watts).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


class IpmiError(Exception):
    """The BMC could not be reached, refused the login, or refused a command."""


@dataclass
class DcmiPower:
    current_watts: int
    min_watts: int
    max_watts: int
    average_watts: int
    period_seconds: float  # the statistics reporting period the BMC averages over
    active: bool  # bit 6 of the power reading state: false means the figures are not being measured


@dataclass
class SdrReading:
    name: str
    sensor_type: str  # pyghmi's name for the IPMI sensor type (Temperature, Fan, Current, Power Supply, ...)
    value: float | None
    units: str  # W, °C, RPM, V, A, ...
    health: int  # pyghmi.constants.Health bits: 0 ok


def decode_dcmi_power(data: bytes) -> DcmiPower:
    """DCMI v1.5 table 6-16, the bytes after the completion code: group extension 0xDC, current, min, max,
    average (2 bytes each, LE, watts), timestamp (4), statistics period (4, ms), power reading state (1)."""
    if len(data) < 18 or data[0] != 0xDC:
        raise IpmiError(f"not a DCMI Get Power Reading answer ({bytes(data[:8]).hex()}...)")
    cur, lo, hi, avg, _ts, period, state = struct.unpack("<HHHHIIB", bytes(data[1:18]))
    return DcmiPower(cur, lo, hi, avg, period / 1000.0, bool(state & 0x40))


class IpmiReader:
    """One BMC: host None reads the node's own BMC in band through /dev/ipmi0."""

    def __init__(self, host: str | None, port: int = 623, user: str | None = None, password: str | None = None):
        self.host, self.port, self.user, self.password = host, port, user, password
        self.cmd = None

    def _command(self):
        if self.cmd is None:
            from pyghmi import exceptions
            from pyghmi.ipmi import command

            if self.host is not None:
                import socket

                try:  # said as what it is, not as a session that "is no longer connected"
                    socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
                except (socket.gaierror, UnicodeError) as e:
                    raise IpmiError(f"cannot resolve the host name: {getattr(e, 'strerror', None) or e}") from None
            try:
                if self.host is None:
                    self.cmd = command.Command()  # in band: /dev/ipmi0
                else:
                    self.cmd = self._login(command)
            except exceptions.IpmiException as e:
                raise IpmiError(_login_error(e, self.user, self.port)) from None
            except OSError as e:
                if self.host is None:
                    raise IpmiError(f"in-band IPMI: {e.strerror or e} (is the ipmi_devintf module loaded? "
                                    "/dev/ipmi0)") from None
                raise IpmiError(f"UDP port {self.port}: {e.strerror or e}") from None
        return self.cmd

    def _login(self, command):
        """A session to the BMC. pyghmi marks a failed login broken before it records why, and another thread's
        wait on pyghmi's shared sockets can see it in between: an AttributeError ('errormsg') instead of the
        refusal (seen with several BMCs polled at once). Asked again, the answer is the BMC's own."""
        for attempt in range(3):
            try:
                return command.Command(bmc=self.host, userid=self.user or "", password=self.password or "",
                                       port=self.port)
            except AttributeError as e:
                if "errormsg" not in str(e) or attempt == 2:
                    raise IpmiError("the login failed and pyghmi gave no reason (most often a refused user or "
                                    "password)") from None
        raise AssertionError("unreachable")

    def dcmi_power(self) -> DcmiPower | None:
        """None where the BMC has no DCMI (answers the command as invalid)."""
        from pyghmi import exceptions

        cmd = self._command()
        try:
            rsp = cmd.xraw_command(netfn=0x2C, command=0x02, data=(0xDC, 0x01, 0x00, 0x00))
        except exceptions.IpmiException as e:
            if getattr(e, "ipmicode", None) in (0xC1, 0xC9, 0xCC, 0xD4, 0xD5) or "Invalid" in str(e):
                return None  # not supported / not present: not a failure
            self.reset()
            raise IpmiError(f"DCMI Get Power Reading: {e}") from None
        return decode_dcmi_power(bytes(rsp["data"]))

    def sensors(self, failed: dict[str, str] | None = None) -> list[SdrReading]:
        """Every SDR sensor read alone (Get Sensor Reading, then pyghmi's decoding of that one record): a sensor
        that fails (absent 0xCB, any other completion code, a record pyghmi cannot decode) is left out and named
        in `failed` with why; only a lost session ends the read."""
        from pyghmi import exceptions

        failed = {} if failed is None else failed
        cmd = self._command()
        out = []
        try:
            sdr = cmd.init_sdr()
            numbers = list(sdr.get_sensor_numbers())
        except exceptions.IpmiException as e:
            self.reset()
            raise IpmiError(f"SDR repository: {e}") from None
        for n in numbers:
            rec = sdr.sensors[n]
            name = str(getattr(rec, "name", n))
            lin = getattr(rec, "linearization", 0)
            if isinstance(lin, int) and lin > 11:
                # non-linear (0x70-0x7F): the factors depend on the reading (Get Sensor Reading Factors), and
                # pyghmi asks for them with a fractional reading, which fails: not decoded, said
                failed[name] = f"non-linear sensor (linearization 0x{lin:02X}): not decoded"
                continue
            try:
                rsp = cmd.raw_command(netfn=4, command=0x2D, rslun=rec.sensor_lun, data=(rec.sensor_number,))
            except exceptions.IpmiException as e:
                self.reset()
                raise IpmiError(f"SDR sensor {name}: {e}") from None
            if "error" in rsp:
                if rsp.get("code") != 0xCB:  # 0xCB: not present (an optional device): not a failure
                    failed[name] = f"completion code 0x{rsp.get('code', 0):02X}: {rsp['error']}"
                continue
            try:
                s = rec.decode_sensor_reading(cmd, rsp["data"])
                value = None if s.unavailable else s.value
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise TypeError(f"reading {value!r}")
                out.append(SdrReading(str(s.name), str(s.type), value, str(s.units or ""), int(s.health or 0)))
            except Exception as e:  # one record pyghmi cannot decode loses that sensor only
                failed[name] = f"cannot decode: {type(e).__name__}: {e}"
        return out

    def reset(self) -> None:
        """Drop the session: the next read logs in again (a BMC reset ends every session)."""
        self.cmd = None


def _login_error(e, user: str | None = None, port: int = 623) -> str:
    """pyghmi's login failures in words an operator can act on: no answer, refused credentials, other."""
    text = str(e) if e.args and e.args[0] else ""
    low = text.lower()
    if not text or text == "None" or "timeout" in low or "no longer connected" in low:
        return f"no answer on UDP port {port} (no BMC at that address, the port filtered, or the BMC too slow)"
    if any(w in low for w in ("password", "unauthorized", "name", "privilege", "rakp")):
        who = f"user {user!r}" if user else "no user (set user and password_file)"
        return f"the BMC refused the login ({who}): {text}"
    return text
