"""Reads /proc/net/dev, /sys/class/net and /sys/class/infiniband."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from collectors.common import matches, read_int, read_text

_DEV_FIELDS = ("rx_bytes", "rx_packets", "rx_errs", "rx_drop", "rx_fifo", "rx_frame", "rx_compressed",
               "rx_multicast", "tx_bytes", "tx_packets", "tx_errs", "tx_drop", "tx_fifo", "tx_colls",
               "tx_carrier", "tx_compressed")


@dataclass
class Interface:
    name: str
    counters: dict[str, int]
    oper_state: str | None = None
    carrier: int | None = None
    speed_mbps: int | None = None
    mtu: int | None = None
    carrier_changes: int | None = None


@dataclass
class IbPort:
    device: str
    port: str
    link_layer: str
    netdev: str | None
    state_code: int | None
    phys_state_code: int | None
    rate_bps: float | None
    counters: dict[str, int] = field(default_factory=dict)


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    out = {}
    for line in text.splitlines()[2:]:
        if ":" not in line:
            continue
        name, _, rest = line.partition(":")
        vals = rest.split()
        if len(vals) < 16:
            continue
        out[name.strip()] = dict(zip(_DEV_FIELDS, (int(v) for v in vals)))
    return out


_CODE = re.compile(r"^\s*(\d+)")
_RATE = re.compile(r"^\s*([\d.]+)\s*Gb/sec")


def parse_code(text: str | None) -> int | None:
    m = _CODE.match(text or "")
    return int(m.group(1)) if m else None


def parse_rate(text: str | None) -> float | None:
    m = _RATE.match(text or "")
    return float(m.group(1)) * 1e9 if m else None


class NetworkReader:
    def __init__(self, proc_root: Path, sys_root: Path, exclude: re.Pattern | None, infiniband: bool = True):
        self.proc = Path(proc_root)
        self.sys = Path(sys_root)
        self.exclude = exclude
        self.infiniband = infiniband

    def interfaces(self) -> list[Interface]:
        text = read_text(self.proc / "net" / "dev")
        if text is None:
            raise OSError(f"cannot read {self.proc / 'net' / 'dev'}")
        out = []
        for name, counters in parse_net_dev(text).items():
            if matches(self.exclude, name):
                continue
            d = f"{self.sys}/class/net/{name}/"  # strings: pathlib's joins cost more than these reads
            speed = read_int(d + "speed")  # EINVAL while the link is down; -1 when unknown (virtual NICs)
            out.append(Interface(
                name, counters, oper_state=read_text(d + "operstate"), carrier=read_int(d + "carrier"),
                speed_mbps=speed if speed is not None and speed > 0 else None, mtu=read_int(d + "mtu"),
                carrier_changes=read_int(d + "carrier_changes")))
        return out

    def ib_ports(self) -> list[IbPort]:
        base = self.sys / "class" / "infiniband"
        if not self.infiniband:
            return []
        try:
            devices = sorted(os.listdir(base))
        except OSError:
            return []  # no RDMA devices: not an error
        out = []
        for dev in devices:
            try:
                netdevs = sorted(os.listdir(base / dev / "device" / "net"))
            except OSError:
                netdevs = []
            try:
                ports = sorted(os.listdir(base / dev / "ports"), key=lambda p: int(p) if p.isdigit() else 0)
            except OSError:
                continue
            for port in ports:
                p = base / dev / "ports" / port
                counters: dict[str, int] = {}
                for sub in ("counters", "hw_counters"):
                    try:
                        names = os.listdir(p / sub)
                    except OSError:
                        continue
                    for n in names:
                        v = read_int(p / sub / n)
                        if v is not None:
                            counters[n] = v
                out.append(IbPort(dev, port, read_text(p / "link_layer") or "InfiniBand",
                                  netdevs[0] if len(netdevs) == 1 else None,
                                  parse_code(read_text(p / "state")), parse_code(read_text(p / "phys_state")),
                                  parse_rate(read_text(p / "rate")), counters))
        return out
