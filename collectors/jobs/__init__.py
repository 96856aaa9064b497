"""Energy per job: each GPU's energy, window by window, to the Slurm job, pod, container or systemd unit that holds
or uses it, every millijoule once (collectors/common/attribution.py), kept per job across restarts.

Reads the gpu collector's samples from the bus (each GPU's monotonic energy counter and the processes on it) and
asks the schedulers who owns what: a process's owner from Slurm's `scontrol listpids` where Slurm runs (with or
without per-job cgroups), else from its cgroup (collectors/common/cgroups.py); the GPUs a Slurm job holds from
`scontrol show job -d` (a GPU held and idle is the job's: `held_idle`). Writes measurement `job`; the job id is
a tag of job series only, never of GPU or host series (docs/jobs.md: the cardinality budget).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field

from agent.collector import Collector, NotPresent
from agent.config import CollectorOptions, PositiveDuration
from agent.logonce import Latch
from agent.model import Accumulator, Kind, Metric, Sample
from collectors.common import read_text
from collectors.common.attribution import IDLE, MIG_SLICES, Instance, Usage, attribute_gpu, split
from collectors.common.cgroups import owner_of
from collectors.common.podresources import DEFAULT_SOCKET, PodDevices, PodResourcesError, list_pods
from collectors.common.slurm import SlurmError, SlurmJob, listpids, parse_jobs, run

from .book import JobBook, JobRecord
from .cpu import busy_ticks, cgroup_usage_ticks, owner_cgroup, process_ticks

log = logging.getLogger(__name__)

TAGS = ("host", "job_id", "scheduler", "user", "account", "name", "partition")
G, C = Kind.GAUGE, Kind.COUNTER
METRICS = tuple(Metric("job", f, kind, unit, desc, TAGS) for f, kind, unit, desc in (
    ("gpu_energy_joules_total", C, "joules", "GPU energy attributed to the job since it started (every joule of "
                                             "each GPU to one owner; GPUs nobody holds: job_id idle)"),
    ("cpu_energy_joules_total", C, "joules", "CPU package energy (RAPL) attributed to the job by its processes' "
                                             "CPU time; the rest of the CPU's energy: job_id idle"),
    ("node_energy_joules_total", C, "joules", "the job's share of the node meter: its GPU and CPU energy and, of "
                                              "the rest of the node (fans, NICs, PSU losses), its share of the "
                                              "GPU energy"),
    ("gpu_seconds_total", C, "seconds", "GPU time the job held or used (a GPU for a second is one)"),
    ("held_idle_seconds_total", C, "seconds", "GPU time the job held with none of its processes on the GPU"),
    ("gpus", G, "count", "GPUs the job holds or uses now"),
    ("held_idle_gpus", G, "count", "GPUs the job holds that none of its processes uses now"),
    ("running", G, "bool", "the job runs (false: its final record, written once when it ends)"),
    ("basis", Kind.INFO, "info", "how its GPUs' energy was split in this collection: held, sm_utilization, "
                                 "mig_activity, mig_size (comma-joined where its GPUs differ)"),
    ("prompt_tokens_total", C, "tokens", "prompt tokens of the inference servers whose GPUs are the job's alone"),
    ("generation_tokens_total", C, "tokens", "generated tokens of those servers"),
    ("tokens_per_joule", G, "tokens_per_joule", "the job's tokens (prompt and generated) per joule of its GPU "
                                                 "energy, since it started"),
))
MODEL_TAGS = TAGS + ("endpoint", "model")
METRICS += tuple(Metric("job_model", f, kind, unit, desc, MODEL_TAGS) for f, kind, unit, desc in (
    ("prompt_tokens_total", C, "tokens", "prompt tokens of this server and model, while on the job's GPUs"),
    ("generation_tokens_total", C, "tokens", "generated tokens of this server and model"),
    ("gpu_energy_joules_total", C, "joules", "the job's energy of the GPUs this server ran on, since the job first "
                                             "saw it"),
    ("tokens_per_joule", G, "tokens_per_joule", "its tokens (prompt and generated) per joule of that energy"),
))
UNOWNED = "unowned"  # a process in no job, pod, container or unit (a login shell's)


class JobsOptions(CollectorOptions):
    slurm: Literal["auto", "on", "off"] = Field("auto", description="ask Slurm (scontrol) which jobs run here and "
                                                                    "which GPUs they hold; auto: where scontrol is")
    slurm_node: str | None = Field(None, description="Slurm's name of this node (default: the short host name)")
    scontrol_timeout: PositiveDuration = Field(5.0, description="deadline of each scontrol call")
    kubernetes: Literal["auto", "on", "off"] = Field(
        "auto", description="ask the kubelet's pod-resources socket which GPUs each pod holds; auto: where the "
                            "socket is (root's by default: docs/jobs.md)")
    pod_resources_socket: str = Field(DEFAULT_SOCKET, description="the kubelet's pod-resources socket")
    kubelet_timeout: PositiveDuration = Field(2.0, description="deadline of each pod-resources call")
    cpu: bool = Field(True, description="split the CPU packages' RAPL energy (host collector) among jobs by their "
                                        "processes' CPU time")
    end_after: int = Field(3, ge=1, description="collections a job goes unseen before its final record")
    keep: PositiveDuration = Field(7 * 86400.0, description="how long an ended job's record is kept")
    price_per_kwh: float | None = Field(None, ge=0, description="electricity price, for `aifactory jobs` cost")
    grid_g_per_kwh: float | None = Field(None, ge=0, description="grid carbon intensity (g CO2e per kWh), for "
                                                                  "`aifactory jobs` emissions")


class JobsCollector(Collector):
    kind = "jobs"
    Options = JobsOptions
    METRICS = METRICS
    consumes = ("gpu", "gpu_process", "gpu_mig", "inference", "host_energy", "node_meter")
    cli = "collectors.jobs.cli:add_parser"  # `aifactory jobs`

    def __init__(self, options: JobsOptions, ctx) -> None:
        super().__init__(options, ctx)
        self.book = JobBook(ctx.state_dir / "jobs.json" if ctx.state_dir else None, options.keep)
        self.last: dict[str, tuple[int, int]] = {}  # GPU uuid -> (ts, energy mJ) at the last window's end
        self.slurm_jobs: dict[str, SlurmJob] = {}  # what scontrol said of each job seen running here
        self.node = options.slurm_node or socket.gethostname().split(".")[0]
        self.slurm_on = options.slurm == "on" or (options.slurm == "auto" and shutil.which("scontrol") is not None)
        self._slurm = Latch(log)
        self.k8s_on = options.kubernetes == "on" or (options.kubernetes == "auto"
                                                     and os.path.exists(options.pod_resources_socket))
        self._k8s = Latch(log)
        self.pod_of_uid: dict[str, str] = {}  # pod UID (from cgroups) -> its "namespace/name" (pod-resources)
        self.now: dict[str, list[str]] = {}
        self.idle_now: dict[str, int] = {}
        self.owners: dict[int, str] = {}  # pid -> owner read from its cgroup, while it stays on a GPU
        self.fresh: set[str] = set()
        self.tokens_last: dict[tuple, tuple[int, int]] = {}  # (endpoint, model) -> token counters last seen
        self.cpu_last: tuple[int, int, int] | None = None  # (RAPL mJ, busy ticks, ts) at the last window's end
        self.pid_ticks: dict[int, int] = {}  # pid -> its CPU ticks at the last window's end
        self.cgroups: dict[str, tuple[str, str] | None] = {}  # owner -> the cgroup holding all its processes
        self.cg_ticks: dict[str, int] = {}  # owner -> its cgroup's CPU ticks at the last window's end
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    # --- who owns what -------------------------------------------------------------------------------------

    def _slurm_view(self) -> dict[int, str]:
        """pid -> Slurm job id for the processes of this node's jobs; the jobs' details (owner, GPUs held) asked
        once per job. Slurm not answering costs the allocations of this collection, said once."""
        if not self.slurm_on:
            return {}
        timeout = self.options.scontrol_timeout
        try:
            pids = {pid: job for pid, (job, _) in listpids(timeout).items()}
            for job in sorted(set(pids.values()) - set(self.slurm_jobs)):
                self.slurm_jobs.update(parse_jobs(run(["show", "job", "-d", "-o", job], timeout)))
        except SlurmError as e:
            self._slurm.failed(str(e), "jobs: Slurm does not answer: %s (processes are attributed by their "
                                       "cgroups; GPUs held and idle are not seen)", e)
            return {}
        self._slurm.recovered("jobs: Slurm answers again")
        running = set(pids.values())
        for job in [j for j in self.slurm_jobs if j not in running]:
            del self.slurm_jobs[job]  # asked again if it comes back (a requeued job)
        return pids

    def _pods_view(self) -> list[PodDevices]:
        """Each pod's GPU devices from the kubelet; not answering costs this collection's pod allocations."""
        if not self.k8s_on:
            return []
        try:
            pods = list_pods(self.options.pod_resources_socket, self.options.kubelet_timeout)
        except PodResourcesError as e:
            self._k8s.failed(str(e), "jobs: the kubelet's pod-resources does not answer: %s (pods are attributed "
                                     "by their processes' cgroups; GPUs held and idle are not seen)", e)
            return []
        self._k8s.recovered("jobs: the kubelet's pod-resources answers again")
        return pods

    def _owner(self, p: Sample, slurm_pids: dict[int, str]) -> str:
        """A process's owner: its Slurm job from listpids, else what the gpu collector read from its cgroup
        (tags slurm_job, pod, container), else its cgroup read here (a systemd unit), kept while the process
        stays on a GPU: reading 64 cgroup files a cycle was most of the cycle (bench/job_attribution)."""
        pid = int(p.tags["pid"])
        if pid in slurm_pids:
            return f"slurm:{slurm_pids[pid]}"
        for tag, prefix in (("slurm_job", "slurm"), ("pod", "pod"), ("container", "container")):
            if p.tags.get(tag):
                return f"{prefix}:{p.tags[tag]}"
        known = self.owners.get(pid)
        if known is None:
            owner = owner_of(self.ctx.proc_root, pid)
            known = self.owners[pid] = (owner.key if owner is not None else "") or UNOWNED
        return known

    def _record(self, key: str, ts: int) -> JobRecord:
        def make() -> JobRecord:
            scheduler, _, ident = key.partition(":")
            if key in (IDLE, UNOWNED):
                return JobRecord(key, "none", start_ns=ts)
            rec = JobRecord(ident, {"slurm": "slurm", "pod": "kubernetes", "container": "container",
                                    "unit": "systemd"}.get(scheduler, scheduler), start_ns=ts)
            job = self.slurm_jobs.get(ident) if scheduler == "slurm" else None
            if job is not None:
                rec.user, rec.account, rec.name, rec.partition = job.user, job.account, job.name, job.partition
            if scheduler == "pod" and "/" in ident:
                rec.account, rec.name = ident.split("/", 1)  # namespace, pod name
            return rec

        return self.book.get(key, make)

    # --- one collection ------------------------------------------------------------------------------------

    def collect(self, acc: Accumulator) -> None:
        bus = self.ctx.bus
        gpus = {s.tags["uuid"]: s for s in (bus.latest("gpu") if bus is not None else ())
                if "uuid" in s.tags and isinstance(s.fields.get("energy_joules_total"), (int, float))}
        if not gpus and not self.book.jobs:
            raise NotPresent("no GPU energy on this node (the gpu collector reports none)")
        slurm_pids = self._slurm_view()
        self.now: dict[str, list[str]] = {}  # owner -> GPUs it holds or uses in this collection
        self.gpu_mj: dict[str, int] = {}  # owner -> GPU energy attributed in this collection
        self.gpu_part: dict[tuple[str, str], int] = {}  # (owner, GPU index) -> its energy in this collection
        self.instance_owners: dict[tuple[str, str], set[str]] = {}  # (GPU index, MIG GPU instance) -> holders
        self.basis_now: dict[str, set[str]] = {}  # owner -> how its GPUs' energy was split in this collection
        self.cpu_mj: dict[str, int] = {}  # owner -> CPU energy attributed in this collection
        self.window_s = 0.0  # the longest GPU window closed in this collection
        self.fresh: set[str] = set()  # records that start in this collection's windows
        self.idle_now: dict[str, int] = {}  # owner -> GPUs it holds with none of its processes on them
        by_index = {g.tags.get("gpu", ""): uuid for uuid, g in gpus.items()}
        migs: dict[str, Sample] = {}  # MIG device uuid -> its gpu_mig sample of this tick
        for m in bus.latest("gpu_mig") if bus is not None else ():
            g = gpus.get(m.tags.get("uuid", ""))
            if g is not None and m.ts == g.ts and m.tags.get("mig_uuid"):
                migs[m.tags["mig_uuid"]] = m
        holders: dict[str, list[str]] = {}  # GPU or MIG device uuid -> owners the schedulers gave it to
        for job in self.slurm_jobs.values():
            for idx in job.gpus.get(self.node, ()):
                if str(idx) in by_index:
                    holders.setdefault(by_index[str(idx)], []).append(f"slurm:{job.job_id}")
        for pod in self._pods_view():
            key = f"pod:{pod.namespace}/{pod.name}"
            for dev in (d for ids in pod.devices.values() for d in ids):
                uuid = by_index.get(dev) if dev.isdigit() else dev  # deviceIDStrategy index or uuid
                if uuid in gpus or uuid in migs:
                    holders.setdefault(uuid, []).append(key)
        procs: dict[str, list[Sample]] = {}
        for p in bus.latest("gpu_process") if bus is not None else ():
            g = gpus.get(p.tags.get("uuid", ""))
            if g is not None and p.ts == g.ts and p.tags.get("pid", "").isdigit():  # this tick's processes only
                procs.setdefault(g.tags["uuid"], []).append(p)
        live = {int(p.tags["pid"]) for ps in procs.values() for p in ps}
        self.owners = {pid: o for pid, o in self.owners.items() if pid in live}  # a pid gone may come back as another
        seen: set[str] = set()
        pid_owner = {pid: f"slurm:{job}" for pid, job in slurm_pids.items()}  # every process of this node's jobs
        for uuid, g in gpus.items():
            index = g.tags.get("gpu", "")
            usage = Usage(list(holders.get(uuid, ())))
            pods_here = [h for h in usage.holders if h.startswith("pod:")]
            for p in procs.get(uuid, ()):
                owner = self._owner(p, slurm_pids)
                if owner.startswith("pod:") and "/" not in owner:
                    if len(pods_here) == 1:  # the one pod given this GPU: its processes are that pod's
                        self.pod_of_uid[owner[4:]] = pods_here[0]
                    owner = self.pod_of_uid.get(owner[4:], owner)
                pid_owner.setdefault(int(p.tags["pid"]), owner)
                sm = p.fields.get("sm_utilization_percent")
                usage.sm[owner] = usage.sm.get(owner, 0.0) + (float(sm) if isinstance(sm, (int, float)) else 0.0)
            instances = {}
            for mig_uuid, m in migs.items():
                if m.tags.get("uuid") == uuid:
                    got = re.match(r"(\d+)g\.", m.tags.get("profile", ""))
                    act = m.fields.get("sm_utilization_percent")
                    inst = Usage(list(holders.get(mig_uuid, ())))
                    if isinstance(act, (int, float)) and act > 0:
                        inst.sm = dict.fromkeys(inst.holders, float(act))  # busy: its holders use it
                    instances[mig_uuid] = Instance(int(got.group(1)) if got else 1, inst,
                                                   float(act) if isinstance(act, (int, float)) else None)
            for mig_uuid, inst in instances.items():
                seen.update(inst.usage.holders)
                gi = migs[mig_uuid].tags.get("gpu_instance", "")
                self.instance_owners[(index, gi)] = set(inst.usage.holders) or {IDLE}
            seen.update(usage.holders)
            seen.update(usage.sm)
            self._window(uuid, g, index, usage, instances)
        self._tokens(bus)
        if self.options.cpu:
            seen.update(self._cpu(bus, pid_owner, acc.ts))
        self._node(bus, acc.ts)
        self._close(acc, seen)

    def _window(self, uuid: str, g: Sample, index: str, usage: Usage, instances: dict[str, Instance]) -> None:
        """This GPU's energy since the last window, to its owners (its MIG instances' holders where it has any)."""
        mj = round(float(g.fields["energy_joules_total"]) * 1000)
        last = self.last.get(uuid)
        self.last[uuid] = (g.ts, mj)
        # (owner, its usage, the share of the GPU it holds): the GPU's holders whole, an instance's by its slices
        held = [(h, usage, 1.0) for h in usage.holders]
        held += [(h, i.usage, i.slices / MIG_SLICES) for i in instances.values() for h in i.usage.holders]
        for key in {h for h, _, _ in held} | set(usage.sm):
            rec = self._record(key, g.ts)
            if index not in rec.gpus:
                rec.gpus.append(index)
            self.now.setdefault(key, []).append(index)
        for key, u, _ in held:
            if key not in u.sm:
                self.idle_now[key] = self.idle_now.get(key, 0) + 1
        if last is None or g.ts <= last[0]:
            return  # the first reading of this GPU (or no new one): a window needs two
        seconds = (g.ts - last[0]) / 1e9
        self.window_s = max(self.window_s, seconds)
        delta = max(0, mj - last[1])  # the gpu collector's counter is monotonic; a new baseline never goes back
        parts, basis = attribute_gpu(delta, usage, instances or None)
        for key, part in parts.items():
            self.basis_now.setdefault(key, set()).add(basis)
            rec = self._record(key, g.ts)
            if rec.start_ns == g.ts and rec.gpu_energy_mj == 0 and part:
                # an owner first met with energy in this window (GPUs that fell idle, a job between two readings):
                # its counter starts at zero at the window's start, so increases over a range count this window
                rec.start_ns = last[0]
                self.fresh.add(key)
            rec.gpu_energy_mj += part
            self.gpu_mj[key] = self.gpu_mj.get(key, 0) + part
            self.gpu_part[(key, index)] = self.gpu_part.get((key, index), 0) + part
        for key, u, share in held:
            rec = self._record(key, g.ts)
            rec.gpu_seconds += seconds * share
            if key not in u.sm:
                rec.held_idle_seconds += seconds * share
        holders = {h for h, _, _ in held}
        for key, part in parts.items():
            if key not in holders and key != IDLE and delta > 0:
                self._record(key, g.ts).gpu_seconds += seconds * part / delta

    def _cpu(self, bus, pid_owner: dict[int, str], ts: int) -> set[str]:
        """The CPU packages' energy since the last window, by the owners' processes' CPU time; the machine's
        other busy time and its idle draw are nobody's (idle). Returns the owners that used CPU."""
        zones = [s for s in (bus.latest("host_energy") if bus is not None else ())
                 if s.tags.get("source") == "rapl" and s.tags.get("scope") == "cpu_package"
                 and isinstance(s.fields.get("energy_joules_total"), (int, float))]
        busy = busy_ticks(self.ctx.proc_root)
        if not zones or busy is None:
            return set()
        mj = round(sum(float(z.fields["energy_joules_total"]) for z in zones) * 1000)
        ticks = {pid: t for pid in pid_owner if (t := process_ticks(self.ctx.proc_root, pid)) is not None}
        cg_now = {owner: n for owner, where in self._owner_cgroups(pid_owner).items()
                  if where and (n := cgroup_usage_ticks(self.ctx.sys_root, where, self.hz)) is not None}
        last, before, cg_before = self.cpu_last, self.pid_ticks, self.cg_ticks
        self.cpu_last, self.pid_ticks, self.cg_ticks = (mj, busy, ts), ticks, cg_now
        if last is None:
            return set()
        used: dict[str, float] = {}
        for pid, t in ticks.items():  # a process seen at both ends of the window: what it ran in between
            if pid in before and t >= before[pid]:
                used[pid_owner[pid]] = used.get(pid_owner[pid], 0.0) + t - before[pid]
        # a pod, container or service: its cgroup's CPU time counts all its processes, not only those on GPUs
        for owner, now in cg_now.items():
            if owner in cg_before and now >= cg_before[owner]:
                used[owner] = float(now - cg_before[owner])
        weights = {k: v for k, v in used.items() if v > 0}
        weights[IDLE] = max(0.0, (busy - last[1]) - sum(weights.values()))
        delta = max(0, mj - last[0])
        parts = split(delta, weights) if sum(weights.values()) > 0 else {IDLE: delta}
        for key, part in parts.items():
            rec = self._record(key, ts)
            if rec.start_ns == ts and rec.gpu_energy_mj == rec.cpu_energy_mj == 0 and part and last[2] < ts:
                rec.start_ns = last[2]  # a new owner's counters start at zero at its first window's start
                self.fresh.add(key)
            rec.cpu_energy_mj += part
            self.cpu_mj[key] = self.cpu_mj.get(key, 0) + part
        return {k for k in weights if k != IDLE}

    def _owner_cgroups(self, pid_owner: dict[int, str]) -> dict[str, tuple[str, str] | None]:
        """The cgroup of each pod, container and service owner, found once from one of its processes."""
        scheduler = {"pod": "kubernetes", "container": "container", "unit": "systemd"}
        out = {}
        for pid, owner in pid_owner.items():
            kind = scheduler.get(owner.partition(":")[0])
            if kind is None or owner in out:
                continue
            if owner not in self.cgroups:
                text = read_text(Path(self.ctx.proc_root) / str(pid) / "cgroup")
                self.cgroups[owner] = owner_cgroup(text, kind) if text else None
            out[owner] = self.cgroups[owner]
        return out

    def _node(self, bus, ts: int) -> None:
        """The owners' share of the whole node: their GPU and CPU energy of this collection, and the rest of the
        node meter (its mean power over its newest window, over this collection's window) by GPU share. Without
        a current node meter the node share is the GPU and CPU energy alone; a meter below them leaves no rest."""
        meters = [s for s in (bus.latest("node_meter") if bus is not None else ())
                  if isinstance(s.fields.get("power_watts"), (int, float)) and ts - s.ts <= 300 * 10**9]
        parts = {k: self.gpu_mj.get(k, 0) + self.cpu_mj.get(k, 0) for k in self.gpu_mj.keys() | self.cpu_mj.keys()}
        if meters and self.window_s > 0:
            total = round(float(max(meters, key=lambda s: s.ts).fields["power_watts"]) * self.window_s * 1000)
            rest = max(0, total - sum(parts.values()))
            gpu = {k: float(v) for k, v in self.gpu_mj.items() if v > 0}
            for key, part in (split(rest, gpu) if gpu else {IDLE: rest}).items():
                parts[key] = parts.get(key, 0) + part
        for key, part in parts.items():
            self._record(key, ts).node_energy_mj += part

    def _tokens(self, bus) -> None:
        """An inference server's tokens are the job's whose its GPUs all are (its `gpus` tag, from its processes;
        in MIG instances, `gpu_instances`: those instances' holders): the counters' increase since the last
        collection. A server across owners' GPUs gives nobody tokens."""
        by_gpu: dict[str, set[str]] = {}
        for key, gpus in self.now.items():
            for g in gpus:
                by_gpu.setdefault(g, set()).add(key)
        for s in bus.latest("inference") if bus is not None else ():
            if "outcome" in s.tags or not s.tags.get("gpus"):
                continue
            counts = tuple(s.fields.get(f) for f in ("prompt_tokens_total", "generation_tokens_total"))
            if not all(isinstance(c, (int, float)) for c in counts):
                continue
            now = (int(counts[0]), int(counts[1]))
            key = (s.tags.get("endpoint", ""), s.tags.get("model", ""))
            last = self.tokens_last.get(key)
            self.tokens_last[key] = now
            pinned = [tuple(x.split(":", 1)) for x in s.tags.get("gpu_instances", "").split(",") if ":" in x]
            if pinned:  # a server in MIG instances: the tokens are the instances' holders'
                owners = set.union(*(self.instance_owners.get(x, {IDLE}) for x in pinned))
            else:
                owners = set.union(*(by_gpu.get(g, {IDLE}) for g in s.tags["gpus"].split(",")))
            if last is None or len(owners) != 1 or owners <= {IDLE, UNOWNED}:
                continue
            owner = next(iter(owners))
            rec = self.book.jobs.get(owner)
            if rec is not None:
                # a counter below its last value restarted from zero (the server did): what it holds is new
                prompt = now[0] - last[0] if now[0] >= last[0] else now[0]
                gen = now[1] - last[1] if now[1] >= last[1] else now[1]
                rec.prompt_tokens += prompt
                rec.generation_tokens += gen
                m = rec.models.setdefault(f"{key[0]}|{key[1]}", [0, 0, 0])
                m[0] += prompt
                m[1] += gen
                m[2] += sum(self.gpu_part.get((owner, g), 0) for g in s.tags["gpus"].split(","))

    def _close(self, acc: Accumulator, seen: set[str]) -> None:
        """Records seen now run on; those unseen for end_after collections end with a final sample."""
        ended = []
        for key, rec in self.book.jobs.items():
            if not rec.running or key in (IDLE, UNOWNED):
                continue
            if key in seen:
                rec.unseen, rec.last_seen_ns = 0, acc.ts
            else:
                rec.unseen += 1
                if rec.unseen >= self.options.end_after:
                    rec.end_ns = rec.last_seen_ns or acc.ts
                    ended.append(key)
                    log.info("jobs: %s %s ended: %.1f kJ of GPU energy", rec.scheduler, rec.job_id,
                             rec.gpu_energy_mj / 1e6)
        self.book.prune(acc.ts)
        self.cgroups = {k: v for k, v in self.cgroups.items() if k in self.book.jobs}
        self.book.save()  # before the samples leave: an emitted counter is never ahead of the saved book
        # running records (a job unseen for fewer than end_after collections still runs), the final records of
        # those that just ended, once, and the idle and unowned shares
        current = {k for k, r in self.book.jobs.items() if r.running}
        for key in sorted(current | set(ended)):
            rec = self.book.jobs[key]
            tags = {k: v for k, v in (("job_id", rec.job_id), ("scheduler", rec.scheduler), ("user", rec.user),
                                      ("account", rec.account), ("name", rec.name),
                                      ("partition", rec.partition)) if v}
            if key in self.fresh:
                acc.add("job", {"gpu_energy_joules_total": 0.0, "cpu_energy_joules_total": 0.0,
                                "node_energy_joules_total": 0.0,
                                "gpu_seconds_total": 0.0, "held_idle_seconds_total": 0.0, "running": True}, tags,
                        ts=rec.start_ns)
            acc.add("job", {"gpu_energy_joules_total": rec.gpu_energy_mj / 1000.0,
                            "cpu_energy_joules_total": rec.cpu_energy_mj / 1000.0,
                            "node_energy_joules_total": rec.node_energy_mj / 1000.0,
                            "gpu_seconds_total": round(rec.gpu_seconds, 3),
                            "held_idle_seconds_total": round(rec.held_idle_seconds, 3),
                            "gpus": len(self.now.get(key, ())), "held_idle_gpus": self.idle_now.get(key, 0),
                            "running": rec.running,
                            "basis": ",".join(sorted(self.basis_now.get(key, ()))) or None,
                            "prompt_tokens_total": rec.prompt_tokens, "generation_tokens_total": rec.generation_tokens,
                            "tokens_per_joule": round((rec.prompt_tokens + rec.generation_tokens)
                                                      / (rec.gpu_energy_mj / 1000), 6) if rec.gpu_energy_mj else None},
                    tags)
            for server, (prompt, gen, mj) in sorted(rec.models.items()):
                endpoint, _, model = server.partition("|")
                acc.add("job_model", {"prompt_tokens_total": prompt, "generation_tokens_total": gen,
                                      "gpu_energy_joules_total": mj / 1000.0,
                                      "tokens_per_joule": round((prompt + gen) / (mj / 1000), 6) if mj else None},
                        {**tags, "endpoint": endpoint, "model": model})
