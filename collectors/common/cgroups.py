"""Who a process works for, from its /proc/PID/cgroup: a Slurm job, a Kubernetes pod, a container or a systemd
unit. Read by the gpu collector (its per-process series) and by anything that attributes energy to jobs.

The layouts, as the schedulers write them (one line per hierarchy on cgroup v1, one `0::` line on v2):

- Slurm, cgroup v1 (task/cgroup): ``/slurm/uid_1000/job_1234/step_0/task_0`` (``/slurm_NODENAME/`` with several
  slurmd on a host); cgroup v2 (cgroup/v2): ``/system.slice/slurmstepd.scope/job_1234/step_batch/user/task_0``
  (``NODENAME_slurmstepd.scope`` likewise). Steps: a number, ``batch``, ``extern``, ``interactive``.
- Kubernetes, cgroupfs driver: ``/kubepods/burstable/pod<uid>/<container id>`` (Guaranteed pods directly under
  ``/kubepods``); systemd driver: ``/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice/
  cri-containerd-<id>.scope`` (``crio-``, ``docker-``).
- Containers outside Kubernetes: ``/system.slice/docker-<id>.scope``, ``/docker/<id>``,
  ``/machine.slice/libpod-<id>.scope`` (Podman), ``.../containerd-<id>.scope``.
- systemd: ``/system.slice/vllm.service``; a login session ``/user.slice/user-1000.slice/session-3.scope``.

What a process works for is the most specific owner its cgroup names: a Slurm job, else a pod, else a container,
else a systemd service. A process in none (the root cgroup, a kernel thread) has none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_SLURM = re.compile(r"/(?:slurm(?:_[^/]+)?/uid_(?P<uid>\d+)|(?:[^/]+_)?slurmstepd\.scope)/job_(?P<job>\d+)"
                    r"(?:/step_(?P<step>\d+|batch|extern|interactive))?")
_POD = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
_CONTAINER = re.compile(r"(?:docker|cri-containerd|crio|containerd|libpod)[-/:]?([0-9a-f]{64})"
                        r"|/([0-9a-f]{64})(?:\.scope)?$")
_UNIT = re.compile(r"/([^/]+\.service)(?:/|$)")


@dataclass(frozen=True)
class Owner:
    """What one process works for. `scheduler` is slurm, kubernetes, container, systemd or "" (none)."""

    scheduler: str = ""
    job_id: str = ""  # Slurm job id
    step: str = ""  # Slurm step: a number, batch, extern, interactive
    uid: str = ""  # the Slurm job's user id, where the layout carries it (cgroup v1)
    pod_uid: str = ""  # Kubernetes pod uid, with dashes
    container: str = ""  # container id, first 12 hex digits
    unit: str = ""  # systemd service

    @property
    def key(self) -> str:
        """One name for the owner: slurm:1234, pod:UID, container:ID, unit:NAME, or ""."""
        if self.scheduler == "slurm":
            return f"slurm:{self.job_id}"
        if self.scheduler == "kubernetes":
            return f"pod:{self.pod_uid}"
        if self.scheduler == "container":
            return f"container:{self.container}"
        if self.scheduler == "systemd":
            return f"unit:{self.unit}"
        return ""


def parse(text: str) -> Owner:
    """The owner named by the content of /proc/PID/cgroup (any mix of v1 and v2 lines)."""
    job = step = uid = pod = container = unit = ""
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        if not job and (m := _SLURM.search(path)):
            job, step, uid = m.group("job"), m.group("step") or "", m.group("uid") or ""
        if not pod and (m := _POD.search(path)):
            pod = m.group(1).replace("_", "-")
        if not container and (m := _CONTAINER.search(path)):
            container = (m.group(1) or m.group(2))[:12]
        if not unit and (m := _UNIT.search(path)):
            unit = m.group(1)
    if job:
        return Owner("slurm", job_id=job, step=step, uid=uid)
    if pod:
        return Owner("kubernetes", pod_uid=pod, container=container)
    if container:
        return Owner("container", container=container)
    if unit:
        return Owner("systemd", unit=unit)
    return Owner()


def owner_of(proc_root: Path | str, pid: int) -> Owner | None:
    """The owner of a running process, None if it is gone or its cgroup file is not readable."""
    try:
        return parse((Path(proc_root) / str(pid) / "cgroup").read_text())
    except OSError:
        return None
