from collectors.network import NetworkCollector
from collectors.network.reader import parse_code, parse_rate

from .conftest import by_series, run_collector


def test_interfaces_from_recorded_tree():
    samples, _ = run_collector(NetworkCollector, "gpunode")
    s = by_series(samples)
    nics = {dict(k[1])["interface"]: v for k, v in s.items() if k[0] == "network_interface"}
    assert set(nics) == {"eth0", "ens1f0np0", "ib0"}  # lo and veth excluded by default
    eth0 = nics["eth0"]
    assert eth0["received_bytes_total"] == 987654321098
    assert eth0["sent_bytes_total"] == 123456789012
    assert eth0["received_packets_total"] == 765432100
    assert eth0["receive_errors_total"] == 2 and eth0["receive_drops_total"] == 5
    assert eth0["transmit_errors_total"] == 1 and eth0["transmit_drops_total"] == 3
    assert eth0["received_multicast_packets_total"] == 1234
    assert eth0["speed_bits_per_second"] == 25_000_000_000
    assert eth0["up"] is True and eth0["carrier"] is True and eth0["oper_state"] == "up"
    assert eth0["mtu_bytes"] == 1500 and eth0["carrier_changes_total"] == 2
    assert nics["ens1f0np0"]["carrier_errors_total"] == 4


def test_infiniband_ports():
    samples, _ = run_collector(NetworkCollector, "gpunode")
    s = by_series(samples)
    ib = {dict(k[1])["device"]: (dict(k[1]), v) for k, v in s.items() if k[0] == "network_infiniband"}
    tags, p = ib["mlx5_0"]
    assert tags == {"device": "mlx5_0", "port": "1", "link_layer": "InfiniBand", "netdev": "ib0"}
    assert p["active"] is True and p["state_code"] == 4 and p["phys_state_code"] == 5
    assert p["rate_bits_per_second"] == 400e9
    assert p["received_bytes_total"] == 250000000000 * 4  # 32-bit words
    assert p["sent_bytes_total"] == 500000000000 * 4
    assert p["symbol_errors_total"] == 3 and p["link_downed_total"] == 2 and p["transmit_wait_total"] == 123456
    assert p["out_of_buffer_total"] == 11 and p["packet_sequence_errors_total"] == 14
    tags, r = ib["mlx5_1"]
    assert tags["link_layer"] == "Ethernet" and tags["netdev"] == "ens1f0np0"
    assert r["active"] is False and r["state_code"] == 1 and r["phys_state_code"] == 3
    assert r["cnp_sent_total"] == 500 and r["ecn_marked_packets_total"] == 300


def test_no_infiniband_is_not_an_error():
    samples, _ = run_collector(NetworkCollector, "vm")
    assert not [x for x in samples if x.measurement == "network_infiniband"]
    eth0 = [x for x in samples if x.tags.get("interface") == "eth0"][0]
    assert "speed_bits_per_second" not in eth0.fields  # virtual NIC reports -1: unknown, not zero


def test_exclusion_is_configurable():
    samples, _ = run_collector(NetworkCollector, "gpunode", exclude_interfaces=["eth.*"], infiniband=False)
    names = {x.tags["interface"] for x in samples}
    assert names == {"lo", "veth1a2b", "ens1f0np0", "ib0"}


def test_parsers():
    assert parse_code("4: ACTIVE") == 4 and parse_code("") is None and parse_code(None) is None
    assert parse_rate("200 Gb/sec (4X HDR)") == 200e9
    assert parse_rate("2.5 Gb/sec (1X SDR)") == 2.5e9
    assert parse_rate("garbage") is None
