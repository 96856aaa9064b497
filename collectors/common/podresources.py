"""The kubelet's pod-resources API: which devices (GPUs, MIG instances) each pod's containers were given, held
whether or not a process of theirs runs on them.

`List` of `v1.PodResourcesLister` (k8s.io/kubelet/pkg/apis/podresources/v1/api.proto) over gRPC on the kubelet's
Unix socket (/var/lib/kubelet/pod-resources/kubelet.sock, root's by default). The answer is decoded here from
protobuf's wire format (the five fields we read of three messages), so no generated code is needed; grpcio, an
optional dependency, carries the call. With NVIDIA's device plugin the device ids are GPU UUIDs (`GPU-...`), MIG
device UUIDs (`MIG-...`) or, with `deviceIDStrategy=index`, GPU indexes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
GPU_RESOURCES = ("nvidia.com/gpu", "nvidia.com/mig-")  # resource names (prefixes) of GPUs and MIG instances


@dataclass
class PodDevices:
    name: str
    namespace: str
    devices: dict[str, list[str]] = field(default_factory=dict)  # container -> GPU device ids


class WireError(ValueError):
    pass


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise WireError("truncated varint")
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, i
        shift += 7


def fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of one message: varints as ints, length-delimited as bytes; fixed-width skipped."""
    out: list[tuple[int, int | bytes]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            out.append((number, value))
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise WireError("truncated field")
            out.append((number, buf[i:i + n]))
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise WireError(f"wire type {wire} of field {number}")
    if i != len(buf):
        raise WireError("truncated message")
    return out


def _text(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else ""


def decode_list(buf: bytes) -> list[PodDevices]:
    """ListPodResourcesResponse {1: repeated PodResources {1: name, 2: namespace, 3: repeated ContainerResources
    {1: name, 2: repeated ContainerDevices {1: resource_name, 2: repeated device_ids}}}}: each pod's GPU devices."""
    pods = []
    for num, pod in fields(buf):
        if num != 1 or not isinstance(pod, bytes):
            continue
        p = PodDevices("", "")
        for pn, pv in fields(pod):
            if pn == 1:
                p.name = _text(pv)
            elif pn == 2:
                p.namespace = _text(pv)
            elif pn == 3 and isinstance(pv, bytes):
                cname, ids = "", []
                for cn, cv in fields(pv):
                    if cn == 1:
                        cname = _text(cv)
                    elif cn == 2 and isinstance(cv, bytes):
                        dev = fields(cv)
                        resource = next((_text(v) for n, v in dev if n == 1), "")
                        if resource.startswith(GPU_RESOURCES):
                            ids += [_text(v) for n, v in dev if n == 2]
                if ids:
                    p.devices[cname] = ids
        pods.append(p)
    return pods


class PodResourcesError(Exception):
    pass


def list_pods(socket: str, timeout: float) -> list[PodDevices]:
    """Ask the kubelet; a missing grpcio, an unreadable socket or a refusal is a PodResourcesError saying so."""
    try:
        import grpc
    except ImportError:
        raise PodResourcesError("grpcio is not installed (pip install 'aifactory-agent[kubernetes]')") from None
    channel = grpc.insecure_channel(f"unix://{socket}")
    try:
        call = channel.unary_unary("/v1.PodResourcesLister/List", request_serializer=lambda _: b"",
                                   response_deserializer=lambda b: b)
        return decode_list(call(None, timeout=timeout))
    except grpc.RpcError as e:
        raise PodResourcesError(f"{socket}: {e.code().name}: {e.details()}") from None
    except WireError as e:
        raise PodResourcesError(f"{socket}: an answer that is not ListPodResourcesResponse: {e}") from None
    finally:
        channel.close()
