from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.collector import Context
from agent.model import Accumulator

FIXTURES = Path(__file__).parent / "fixtures"
TREES = FIXTURES / "trees"


def run_collector(cls, tree: str | Path | None = None, ts: int = 1_700_000_000_000_000_000, **options):
    """Instantiate a collector on a recorded /proc+/sys tree, run it once, return its samples."""
    root = TREES / tree if isinstance(tree, str) else tree
    ctx = Context(instance=cls.kind,
                  proc_root=(root / "proc") if root else Path("/proc"),
                  sys_root=(root / "sys") if root else Path("/sys"))
    collector = cls(cls.Options(**options), ctx)
    acc = Accumulator(ts, {"host": "node1"})
    collector.collect(acc)
    return acc.close(), collector


def by_series(samples):
    return {(s.measurement, tuple(sorted((k, v) for k, v in s.tags.items() if k != "host"))): s.fields
            for s in samples}


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    d = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("AIFACTORY_CONFIG", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    return d


def pytest_configure(config):
    os.environ.setdefault("AIFACTORY_TEST", "1")


# Fixtures that start a real service: a test using one is in the `services` tier (make test), never in
# make test-fast (-m "not services").
SERVICE_FIXTURES = {"influxd", "victoria", "snmpsim", "modbus"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


@pytest.fixture
def modbus():
    """Start real Modbus TCP servers on loopback (tests.services.ModbusServer): start({unit: image}, busy=...)."""
    from .services import ModbusServer

    servers = []

    def start(units, **kw) -> ModbusServer:
        s = ModbusServer(units, **kw).start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def influxd(tmp_path_factory):
    from .services import Influxd

    server = Influxd(tmp_path_factory.mktemp("influxd")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def victoria(tmp_path_factory):
    from .services import VictoriaMetrics

    server = VictoriaMetrics(tmp_path_factory.mktemp("vm")).start()
    yield server
    server.stop()


def unknown_devices() -> dict[str, str]:
    """Recordings of devices no vendor profile knows, derived from the fixtures: the Eaton UPS and the PA-5400
    sensor table under an unknown enterprise and a plain sysDescr (they answer UPS-MIB and ENTITY-SENSOR-MIB),
    an APC rPDU2 that answers its identity and nothing of its tables, and a device with neither."""
    def system(text: str, descr: str, oid: str) -> str:
        lines = [ln for ln in text.splitlines() if not ln.startswith(("1.3.6.1.2.1.1.1.0|", "1.3.6.1.2.1.1.2.0|"))]
        return "\n".join([f"1.3.6.1.2.1.1.1.0|4|{descr}", f"1.3.6.1.2.1.1.2.0|6|{oid}", *lines]) + "\n"

    snmp = FIXTURES / "snmp"
    rpdu2 = [ln for ln in (snmp / "apc-rpdu2.snmprec").read_text().splitlines() if ln.startswith("1.3.6.1.2.1.1.")]
    return {"unknown-ups": system((snmp / "eaton-ups.snmprec").read_text(), "Acme PowerBox 3000",
                                  "1.3.6.1.4.1.99999.7"),
            "unknown-sensors": system((snmp / "entity-sensor-panos.snmprec").read_text(), "Acme edge router",
                                      "1.3.6.1.4.1.99999.8"),
            "unknown-nothing": system("", "Acme managed switch", "1.3.6.1.4.1.99999.9"),
            # a CyberPower card that answers RFC 1628 and not CPS-MIB: the vendor profile's probe fails
            "cyberpower-rfc1628": system((snmp / "eaton-ups.snmprec").read_text(), "Power Manager",
                                         "1.3.6.1.4.1.3808.1.1.3"),
            "apc-rpdu2-empty": "\n".join(sorted(rpdu2)) + "\n"}


@pytest.fixture(scope="session")
def snmpsim():
    from .services import Snmpsim
    from .snmprec import large_rpdu2

    # A PDU whose energy counter grows with time (snmpsim's numeric variation: +1 tenth of kWh per second).
    grow = (FIXTURES / "snmp" / "apc-rpdu2.snmprec").read_text().replace(
        "1.3.6.1.4.1.318.1.1.26.4.3.1.9.1|2|19677", "1.3.6.1.4.1.318.1.1.26.4.3.1.9.1|2:numeric|initial=19677,rate=1")
    # An Eaton ePDU drawing 180 kW whose inlet counter grows 50 Wh a second: IT load of a PUE scenario.
    it = (FIXTURES / "snmp" / "eaton-epdu.snmprec").read_text().replace(
        "1.3.6.1.4.1.534.6.6.7.3.5.1.5.0.1|66|8185493",
        "1.3.6.1.4.1.534.6.6.7.3.5.1.5.0.1|66:numeric|initial=8185493,rate=50").replace(
        "1.3.6.1.4.1.534.6.6.7.3.5.1.4.0.1|2|1584", "1.3.6.1.4.1.534.6.6.7.3.5.1.4.0.1|2|180000")
    server = Snmpsim(FIXTURES / "snmp", extra={"apc-rpdu2-96": large_rpdu2(96), "apc-rpdu2-grow": grow,
                                               "eaton-epdu-it": it, **unknown_devices()}).start()
    yield server
    server.stop()
