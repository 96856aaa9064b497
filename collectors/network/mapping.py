"""Pure mapping from network readings to samples."""

from __future__ import annotations

from agent.model import Accumulator

from .reader import IbPort, Interface

_IF = {"rx_bytes": "received_bytes_total", "tx_bytes": "sent_bytes_total",
       "rx_packets": "received_packets_total", "tx_packets": "sent_packets_total",
       "rx_errs": "receive_errors_total", "tx_errs": "transmit_errors_total",
       "rx_drop": "receive_drops_total", "tx_drop": "transmit_drops_total",
       "rx_multicast": "received_multicast_packets_total", "tx_colls": "collisions_total",
       "tx_carrier": "carrier_errors_total"}

# sysfs counter name -> (field, multiplier). port_*_data counts 32-bit words (IBA spec).
_IB = {
    "port_rcv_data": ("received_bytes_total", 4), "port_xmit_data": ("sent_bytes_total", 4),
    "port_rcv_packets": ("received_packets_total", 1), "port_xmit_packets": ("sent_packets_total", 1),
    "symbol_error": ("symbol_errors_total", 1), "link_error_recovery": ("link_error_recovery_total", 1),
    "link_downed": ("link_downed_total", 1), "port_rcv_errors": ("receive_errors_total", 1),
    "port_rcv_remote_physical_errors": ("receive_remote_physical_errors_total", 1),
    "port_rcv_switch_relay_errors": ("receive_switch_relay_errors_total", 1),
    "port_xmit_discards": ("transmit_discards_total", 1),
    "port_xmit_constraint_errors": ("transmit_constraint_errors_total", 1),
    "port_rcv_constraint_errors": ("receive_constraint_errors_total", 1),
    "local_link_integrity_errors": ("local_link_integrity_errors_total", 1),
    "excessive_buffer_overrun_errors": ("excessive_buffer_overrun_errors_total", 1),
    "VL15_dropped": ("vl15_dropped_total", 1), "port_xmit_wait": ("transmit_wait_total", 1),
    # mlx5 hw_counters
    "out_of_buffer": ("out_of_buffer_total", 1), "out_of_sequence": ("out_of_sequence_total", 1),
    "local_ack_timeout_err": ("local_ack_timeout_errors_total", 1),
    "packet_seq_err": ("packet_sequence_errors_total", 1), "np_cnp_sent": ("cnp_sent_total", 1),
    "rp_cnp_handled": ("cnp_handled_total", 1), "np_ecn_marked_roce_packets": ("ecn_marked_packets_total", 1),
}


def map_interfaces(ifaces: list[Interface], acc: Accumulator) -> None:
    for i in ifaces:
        f: dict = {dst: i.counters[src] for src, dst in _IF.items() if src in i.counters}
        if i.oper_state is not None:
            f["oper_state"] = i.oper_state
            f["up"] = i.oper_state == "up"
        if i.carrier is not None:
            f["carrier"] = i.carrier == 1
        if i.speed_mbps is not None:
            f["speed_bits_per_second"] = i.speed_mbps * 1_000_000
        f["mtu_bytes"] = i.mtu
        f["carrier_changes_total"] = i.carrier_changes
        acc.add("network_interface", f, {"interface": i.name})


def map_ib(ports: list[IbPort], acc: Accumulator) -> None:
    for p in ports:
        f: dict = {dst: p.counters[src] * mul for src, (dst, mul) in _IB.items() if src in p.counters}
        f["state_code"] = p.state_code
        f["phys_state_code"] = p.phys_state_code
        if p.state_code is not None:
            f["active"] = p.state_code == 4
        f["rate_bits_per_second"] = p.rate_bps
        acc.add("network_infiniband", f, {"device": p.device, "port": p.port, "link_layer": p.link_layer,
                                          "netdev": p.netdev})
