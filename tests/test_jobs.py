"""Energy per job on one node: the jobs collector over the gpu collector's samples, Slurm's answers (recorded
scontrol output through a stand-in scontrol on PATH) and recorded cgroup files."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from agent.bus import SampleBus
from agent.cli import main
from agent.collector import Context, NotPresent
from agent.model import Accumulator, Sample, to_line_protocol
from collectors.gpu import GpuCollector, GpuOptions
from collectors.jobs import JobsCollector, JobsOptions
from tests.fakes.nvml import FakeGpu, FakeNvml

FIXTURES = Path(__file__).parent / "fixtures"
S = 10**9


@pytest.fixture
def node(tmp_path, monkeypatch):
    """gpu-a01 with four GPUs; Slurm answers from the recorded output; processes' cgroups in a proc tree."""
    bin_dir, slurm = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir()
    slurm.mkdir()
    shutil.copy(FIXTURES / "slurm" / "listpids.txt", slurm / "listpids.txt")
    shutil.copy(FIXTURES / "slurm" / "show-job-d-o.txt", slurm / "jobs.txt")
    fake = bin_dir / "scontrol"
    fake.write_text(f"""#!/bin/sh
case "$1" in
  listpids) cat {slurm}/listpids.txt ;;
  show) grep "^JobId=$5 " {slurm}/jobs.txt \
          || {{ echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1; }} ;;
esac
""")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    proc = tmp_path / "proc"
    for pid, fixture in ((6001, "docker-v2.txt"), (6002, "session.txt")):
        (proc / str(pid)).mkdir(parents=True)
        shutil.copy(FIXTURES / "cgroups" / fixture, proc / str(pid) / "cgroup")
    return {"tmp": tmp_path, "slurm": slurm, "proc": proc}


def collector(node, **opts) -> JobsCollector:
    bus = SampleBus()
    col = JobsCollector(JobsOptions(slurm="on", slurm_node="gpu-a01", **opts),
                        Context("jobs", proc_root=node["proc"], state_dir=node["tmp"] / "state", bus=bus))
    return col


def tick(col, t: int, energy: dict[str, float], procs: list[tuple[str, int, float]], keep: list | None = None):
    """One collection at t seconds: each GPU's counter (J) and the processes on them (gpu, pid, SM %); every
    sample written is appended to `keep`; returns the job rows by job id."""
    ts = t * S
    samples = [Sample("gpu", {"gpu": g, "uuid": f"GPU-{g}"}, {"energy_joules_total": e}, ts)
               for g, e in energy.items()]
    samples += [Sample("gpu_process", {"gpu": g, "uuid": f"GPU-{g}", "pid": str(pid)},
                       {"sm_utilization_percent": sm}, ts) for g, pid, sm in procs]
    col.ctx.bus.observe(samples, 10.0)
    acc = Accumulator(ts, {"host": "gpu-a01"})
    col.collect(acc)
    out = acc.close()
    if keep is not None:
        keep += out
    return {s.tags["job_id"]: s for s in out if s.measurement == "job"}


# job 77 runs on GPU 0 (its pids 4101 and 4123 from listpids); job 78 holds GPUs 2 and 3 here and runs nothing
# on them; a Docker container uses GPU 1 (no allocation: by its cgroup); a login shell's process shares GPU 1.
PROCS = [("0", 4101, 60.0), ("0", 4123, 20.0), ("1", 6001, 30.0), ("1", 6002, 10.0)]


def test_every_gpus_energy_goes_to_its_jobs_the_container_and_idle_and_adds_up(node):
    col = collector(node)
    energy = {"0": 1000.0, "1": 2000.0, "2": 3000.0, "3": 4000.0, "4": 500.0}
    rows = tick(col, 0, energy, PROCS)
    assert rows["77"].fields["gpu_energy_joules_total"] == 0  # the first reading starts the windows
    draws = {"0": 700.0, "1": 400.0, "2": 60.0, "3": 65.5, "4": 61.25}  # watts over each 10 s window
    for t in (10, 20):
        energy = {g: e + draws[g] * 10 for g, e in energy.items()}
        rows = tick(col, t, energy, PROCS)
    j77, j78 = rows["77"], rows["78"]
    assert j77.fields["gpu_energy_joules_total"] == 2 * 7000.0  # the holder of GPU 0 gets all of it
    assert j77.tags == {"host": "gpu-a01", "job_id": "77", "scheduler": "slurm", "user": "alice", "account": "ml",
                        "name": "wrap", "partition": "debug"}
    assert j78.fields["gpu_energy_joules_total"] == 2 * (600.0 + 655.0)  # held and idle: still the job's
    assert j78.fields["held_idle_gpus"] == 2 and j78.fields["held_idle_seconds_total"] == 2 * 2 * 10.0
    assert j78.fields["gpus"] == 2 and j77.fields["held_idle_gpus"] == 0
    # GPU 1, no allocation: split by the processes' SM utilization, the container 3/4, the shell's process 1/4
    assert rows["7e5f4d3c2b1a"].tags["scheduler"] == "container"
    assert rows["7e5f4d3c2b1a"].fields["gpu_energy_joules_total"] == 2 * 3000.0
    assert rows["unowned"].fields["gpu_energy_joules_total"] == 2 * 1000.0
    assert rows["idle"].fields["gpu_energy_joules_total"] == 2 * 612.5  # GPU 4: nobody's
    total = sum(r.fields["gpu_energy_joules_total"] for r in rows.values())
    assert total == pytest.approx(sum(draws.values()) * 20, abs=1e-6)  # every joule once


def test_a_job_that_ends_keeps_its_final_record_across_a_restart_and_in_the_jobs_command(node):
    col = collector(node, end_after=2)
    e = 0.0
    for t in range(3):
        tick(col, t * 10, {"0": e}, [("0", 4101, 50.0)])
        e += 5000.0
    (node["slurm"] / "listpids.txt").write_text("PID      JOBID    STEPID   LOCALID GLOBALID\n")
    assert tick(col, 30, {"0": e}, [])["77"].fields["running"] is True  # unseen once: not yet ended
    final = tick(col, 40, {"0": e + 100}, [])["77"]
    # its energy up to its last collection; GPU 0's since then is nobody's
    assert final.fields["running"] is False and final.fields["gpu_energy_joules_total"] == 10000.0
    assert "77" not in tick(col, 50, {"0": e + 200}, [])  # the final record is written once
    again = collector(node)  # the agent restarts: the book is read back
    assert again.book.jobs["slurm:77"].end_ns == 20 * S and again.book.jobs["slurm:77"].gpu_energy_mj == 10_000_000
    cfg = node["tmp"] / "agent.yaml"
    cfg.write_text("collectors:\n  jobs: {price_per_kwh: 0.25, grid_g_per_kwh: 400}\n")
    r = main_json(["jobs", "--json", "-c", str(cfg), "--state-dir", str(node["tmp"] / "state")])
    (j,) = [x for x in r if x["job_id"] == "77"]
    assert j["user"] == "alice" and j["running"] is False and j["gpus"] == ["0"]
    assert j["gpu_energy_kwh"] == pytest.approx(10000 / 3.6e6, abs=1e-6)
    assert j["cost"] == pytest.approx(0.25 * 10000 / 3.6e6, abs=1e-4) and j["duration_seconds"] == 20.0
    assert j["emissions_g"] == pytest.approx(400 * 10000 / 3.6e6, abs=0.1)
    running = main_json(["jobs", "--json", "--running", "-c", str(cfg), "--state-dir", str(node["tmp"] / "state")])
    assert [x["job_id"] for x in running] == [x["job_id"] for x in r if x["running"]] and "77" not in \
        {x["job_id"] for x in running}


def main_json(argv: list[str]):
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return json.loads(out.getvalue())


def test_no_jobs_command_output_is_an_empty_table(tmp_path, capsys):
    assert main(["jobs", "--state-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("JOB")


def test_slurm_not_answering_costs_the_allocations_only(node, caplog):
    (node["tmp"] / "bin" / "scontrol").write_text("#!/bin/sh\necho 'Unable to contact slurm controller' >&2\n"
                                                   "exit 1\n")
    col = collector(node)
    tick(col, 0, {"1": 0.0}, [("1", 6001, 30.0)])
    rows = tick(col, 10, {"1": 1000.0}, [("1", 6001, 30.0)])
    assert rows["7e5f4d3c2b1a"].fields["gpu_energy_joules_total"] == 1000.0  # by its cgroup
    assert sum("Slurm does not answer" in r.getMessage() for r in caplog.records) == 1  # said once


def test_a_damaged_book_is_set_aside_and_the_collector_goes_on(node):
    state = node["tmp"] / "state"
    state.mkdir()
    (state / "jobs.json").write_text("{not json")
    col = collector(node)
    assert col.book.jobs == {} and list(state.glob("jobs.json.corrupt-*"))
    tick(col, 0, {"0": 0.0}, [("0", 4101, 1.0)])
    assert json.loads((state / "jobs.json").read_text())["slurm:77"]["user"] == "alice"


def test_a_node_without_gpus_has_no_jobs_to_meter(node):
    with pytest.raises(NotPresent, match="no GPU energy"):
        collector(node).collect(Accumulator(0))


@pytest.mark.services
def test_a_real_slurm_jobs_gpu_energy_is_its_own_kept_after_it_ends_and_stored_in_its_record(tmp_path,
                                                                                            monkeypatch):
    """Debian's Slurm 22.05 on loopback with two GPUs as GRES: job A runs a process that the fake NVML reports on
    its GPU (the gpu collector publishes it to the bus); job B holds the other GPU and runs nothing on it. Their
    GPUs' energy is theirs (B's held idle); `aifactory jobs --json` shows both; when A's script ends, the
    TaskEpilog (docs/jobs.md) stores its energy in its record while it still runs (read back with scontrol show
    job); its final record stays and survives a restart."""
    import time

    from collectors.common.slurm import parse_jobs, parse_listpids

    from .services import Slurm

    root = Path(__file__).resolve().parent.parent
    state = tmp_path / "state"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("collectors:\n  jobs: {price_per_kwh: 0.2}\n")
    hook = tmp_path / "task-epilog.sh"
    slurm = Slurm(tmp_path / "slurm", task_epilog=hook)
    # the script of docs/jobs.md, with this checkout's agent and state dir in place of the installed ones
    script = (root / "docs" / "jobs.md").read_text().split("```sh\n", 1)[1].split("```", 1)[0]
    script = script.replace("aifactory jobs", f"{sys.executable} -m agent jobs -c {cfg} --state-dir {state}")
    hook.write_text(script.replace("export PATH=/usr/local/bin:/usr/bin:/bin",
                                   f"export PATH=/usr/local/bin:/usr/bin:/bin SLURM_CONF={slurm.conf}\n"
                                   f"cd {root}\nexec >>{tmp_path / 'hook.log'} 2>&1", 1))
    hook.chmod(0o755)
    slurm.start()
    try:
        monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
        a = slurm.sbatch("--gres=gpu:1", "--wrap", f"while [ ! -e {tmp_path / 'stop'} ]; do sleep 0.2; done")
        b = slurm.sbatch("--gres=gpu:1", "--wrap", "sleep 300")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            jobs = parse_jobs(slurm.scontrol("show", "job", "-d", "-o"))
            pids = parse_listpids(slurm.scontrol("listpids", check=False))
            if all(jobs[j].state == "RUNNING" for j in (a, b)) and a in {job for job, _ in pids.values()}:
                break
            time.sleep(0.5)
        (gpu_a,), (gpu_b,) = jobs[a].gpus[slurm.node], jobs[b].gpus[slurm.node]
        pid_a = next(pid for pid, (job, _) in pids.items() if job == a)

        # the gpu collector on the fake NVML adapter: job A's process on its GPU, nothing on job B's
        nvml = FakeNvml([FakeGpu("H200-SXM", i) for i in range(2)])
        nvml.gpus[gpu_a].processes = [(pid_a, 40 * 2**30)]
        nvml.gpus[gpu_a].proc_util = [(pid_a, 1, 80, 30)]
        bus = SampleBus()
        gpu = GpuCollector(GpuOptions(xid_events=False), Context("gpu"), nvml=nvml)

        def new_collector():
            return JobsCollector(JobsOptions(slurm="on", slurm_node=slurm.node, end_after=2),
                                 Context("jobs", state_dir=state, bus=bus))

        col = new_collector()
        t = 0

        def cycle():
            acc = Accumulator(t * S, {"host": slurm.node})
            gpu.collect(acc)
            bus.observe(acc.close(), 10.0)
            acc = Accumulator(t * S, {"host": slurm.node})
            col.collect(acc)
            for g, watts in ((gpu_a, 700), (gpu_b, 65)):  # the counters (mJ) run on over the next 10 s
                nvml.gpus[g].p["fields"][83] += watts * 10_000
            return {s.tags["job_id"]: s for s in acc.close() if s.measurement == "job"}

        for _ in range(3):
            rows = cycle()
            t += 10
        assert rows[a].fields["gpu_energy_joules_total"] == 14000.0 and rows[a].tags["user"] == "root"
        assert rows[b].fields["gpu_energy_joules_total"] == 1300.0 and rows[b].fields["held_idle_gpus"] == 1
        assert rows[a].fields["held_idle_gpus"] == 0 and rows[a].fields["gpus"] == 1
        shown = {j["job_id"]: j for j in main_json(["jobs", "--json", "-c", str(cfg), "--state-dir", str(state)])}
        assert shown[a]["running"] and shown[a]["gpus"] == [str(gpu_a)] and shown[b]["held_idle_seconds"] == 20.0

        (tmp_path / "stop").touch()  # A's script ends: its TaskEpilog runs while the job is still RUNNING
        nvml.gpus[gpu_a].processes, nvml.gpus[gpu_a].proc_util = [], []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "gpu_energy_kwh" not in slurm.scontrol("show", "job", a):
            time.sleep(0.5)
        comment = [x for x in slurm.scontrol("show", "job", a).split() if x.startswith("Comment=")]
        log = (tmp_path / "hook.log").read_text() if (tmp_path / "hook.log").exists() else "(no hook log)"
        assert comment, log
        kwh = float(comment[0].split("gpu_energy_kwh=")[1].split("@")[0])
        assert kwh == pytest.approx(14000 / 3.6e6, abs=1e-6)
        while a in {job for job, _ in parse_listpids(slurm.scontrol("listpids", check=False)).values()}:
            time.sleep(0.5)
        for _ in range(2):  # unseen twice: its final record
            rows = cycle()
            t += 10
        assert rows[a].fields["running"] is False and rows[a].fields["gpu_energy_joules_total"] == 14000.0
        again = new_collector()  # a restart reads the book back
        assert not again.book.jobs[f"slurm:{a}"].running and again.book.jobs[f"slurm:{a}"].user == "root"
        slurm.scontrol("update", f"JobId={b}", "TimeLimit=0", check=False)
    finally:
        slurm.stop()


# --- Kubernetes: the kubelet's pod-resources ------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: bytes | str | int) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    raw = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(raw)) + raw


def encode_list(doc: dict) -> bytes:
    """ListPodResourcesResponse in protobuf's wire format, field numbers of api.proto (v1)."""
    out = b""
    for pod in doc["pod_resources"]:
        body = _field(1, pod["name"]) + _field(2, pod["namespace"])
        for c in pod["containers"]:
            cb = _field(1, c["name"])
            for d in c["devices"]:
                db = _field(1, d["resource_name"]) + b"".join(_field(2, i) for i in d["device_ids"])
                db += _field(3, _field(1, _field(1, 0)))  # TopologyInfo {nodes: [NUMANode {ID: 0}]}
                cb += _field(2, db)
            if c.get("cpu_ids"):
                packed = b"".join(_varint(x) for x in c["cpu_ids"])
                cb += _field(3, packed)
            body += _field(3, cb)
        out += _field(1, body)
    return out


POD_DOC = json.loads((FIXTURES / "podresources" / "list.json").read_text())


def test_pod_resources_answer_decodes_to_each_pods_gpus():
    from collectors.common.podresources import decode_list

    pods = {(p.namespace, p.name): p.devices for p in decode_list(encode_list(POD_DOC))}
    assert pods[("inference", "llama-serve-7c9f")] == {"vllm": ["GPU-0"]}
    assert pods[("research", "notebook-ana")] == {"jupyter": ["GPU-1"]}
    assert pods[("batch", "mig-tenant")] == {"job": ["MIG-aaaa"]}
    assert pods[("net", "nic-only")] == {} and pods[("kube-system", "coredns-5d78")] == {}  # no GPUs


@pytest.mark.parametrize("garbage", [b"\x0a\x05ab", b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
                                     b"\x0f\x00"])
def test_an_answer_that_is_not_the_message_is_refused_not_misread(garbage):
    from collectors.common.podresources import WireError, decode_list

    with pytest.raises(WireError):
        decode_list(garbage)


@pytest.fixture
def kubelet(tmp_path):
    """A gRPC server on a Unix socket answering v1.PodResourcesLister/List with the recorded answer."""
    from concurrent import futures

    import grpc

    sock = tmp_path / "kubelet.sock"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    answer = {"doc": POD_DOC}
    handler = grpc.method_handlers_generic_handler("v1.PodResourcesLister", {
        "List": grpc.unary_unary_rpc_method_handler(lambda req, ctx: encode_list(answer["doc"]),
                                                    request_deserializer=lambda b: b,
                                                    response_serializer=lambda b: b)})
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"unix://{sock}")
    server.start()
    yield sock, answer
    server.stop(0)


def pods_scenario(node, sock, windows: int = 3, t0: int = 0) -> list[Sample]:
    """GPU 0: the llama pod, whose process (by its cgroup's pod UID) runs on it; GPU 1: the notebook pod, held
    and idle; GPU 2: nobody's; GPU 3: MIG, a 3g instance of the batch pod and a 1g nobody holds, by size. Each
    GPU draws 700 W; one collection every 10 s. Returns every sample the jobs collector wrote."""
    proc = node["proc"]
    (proc / "7001").mkdir(exist_ok=True)
    shutil.copy(FIXTURES / "cgroups" / "k8s-systemd-v2.txt", proc / "7001" / "cgroup")
    col = JobsCollector(JobsOptions(slurm="off", kubernetes="on", pod_resources_socket=str(sock)),
                        Context("jobs", proc_root=proc, state_dir=node["tmp"] / "state", bus=SampleBus()))
    mig = [Sample("gpu_mig", {"gpu": "3", "uuid": "GPU-3", "mig_uuid": "MIG-aaaa", "profile": "3g.71gb"}, {}, 0),
           Sample("gpu_mig", {"gpu": "3", "uuid": "GPU-3", "mig_uuid": "MIG-bbbb", "profile": "1g.18gb"}, {}, 0)]
    energy = {"0": 0.0, "1": 0.0, "2": 0.0, "3": 0.0}
    out = []
    for k in range(windows):
        t = t0 + 10 * k
        col.ctx.bus.observe([Sample(m.measurement, m.tags, m.fields, t * S) for m in mig], 10.0)
        col.ctx.bus.observe([Sample("gpu", {"gpu": g, "uuid": f"GPU-{g}"}, {"energy_joules_total": e}, t * S)
                             for g, e in energy.items()]
                            + [Sample("gpu_process", {"gpu": "0", "uuid": "GPU-0", "pid": "7001"},
                                      {"sm_utilization_percent": 70.0}, t * S)], 10.0)
        acc = Accumulator(t * S, {"host": "gpu-a01"})
        col.collect(acc)
        out += acc.close()
        energy = {g: e + 7000.0 for g, e in energy.items()}
    return out


def test_pods_get_the_gpus_the_kubelet_gave_them_held_idle_and_mig_included(node, kubelet):
    sock, _ = kubelet
    last = {s.tags["job_id"]: s for s in pods_scenario(node, sock) if s.measurement == "job"}
    llama, notebook = last["inference/llama-serve-7c9f"], last["research/notebook-ana"]
    assert llama.tags == {"host": "gpu-a01", "job_id": "inference/llama-serve-7c9f", "scheduler": "kubernetes",
                          "account": "inference", "name": "llama-serve-7c9f"}
    assert llama.fields["gpu_energy_joules_total"] == 14000.0 and llama.fields["held_idle_gpus"] == 0
    assert notebook.fields["gpu_energy_joules_total"] == 14000.0 and notebook.fields["held_idle_gpus"] == 1
    assert notebook.fields["held_idle_seconds_total"] == 20.0
    # MIG by size: 3 of 7 slices the batch pod's; its 1g neighbour and the 3 unused slices nobody's
    assert last["batch/mig-tenant"].fields["gpu_energy_joules_total"] == pytest.approx(2 * 7000 * 3 / 7, abs=0.002)
    assert last["idle"].fields["gpu_energy_joules_total"] == pytest.approx(2 * 7000 * (1 + 4 / 7), abs=0.002)
    assert "9a8b7c6d-1234-5678-9abc-def012345678" not in last  # its UID is the llama pod: one owner, not two
    # each says how its GPUs' energy was split
    assert llama.fields["basis"] == "held" and last["batch/mig-tenant"].fields["basis"] == "mig_size"
    assert last["idle"].fields["basis"] == "idle,mig_size"
    total = sum(r.fields["gpu_energy_joules_total"] for r in last.values())
    assert total == pytest.approx(4 * 14000.0, abs=1e-6)


@pytest.mark.services
def test_the_jobs_board_shows_the_pods_energy_as_the_collector_counted_it(node, kubelet, influxd):
    """The Kubernetes case written to InfluxDB 1.6.7 by the agent's own v1 client; the jobs board's queries
    (as Grafana sends them) give each pod's energy and held-idle hours that the collector counted."""
    import time

    from agent.dashboards import dashboards
    from agent.outputs.influxdb import InfluxOutputOptions, V1Client
    from agent.registry import default_registry

    from .test_dashboards import substitute

    sock, _ = kubelet
    start = int(time.time()) - 600
    samples = [s for s in pods_scenario(node, sock, windows=12, t0=start) if s.measurement == "job"]
    influxd.create_db("jobs_board")
    client = V1Client(InfluxOutputOptions(name="i", api="v1", url=influxd.url, database="jobs_board"), None, None)
    assert client.write(to_line_protocol(samples).encode()).status == 204
    client.close()
    last = {s.tags["job_id"]: s.fields for s in samples if s.ts == max(x.ts for x in samples)}
    panels = {p.title: p for p in dashboards(default_registry().sections())["jobs"].panels()}
    (q,) = panels["GPU energy by job (window)"].queries
    got = {s["tags"]["job_id"]: s["values"][0] for s in influxd.query(substitute(q.influxql), "jobs_board")}
    for job in ("inference/llama-serve-7c9f", "research/notebook-ana", "batch/mig-tenant"):
        assert got[job][1] == pytest.approx(last[job]["gpu_energy_joules_total"] / 3.6e6, rel=1e-9), job
    assert got["research/notebook-ana"][2] == pytest.approx(last["research/notebook-ana"]["held_idle_seconds_total"]
                                                            / 3600)
    (idle,) = panels["Energy nobody held (window)"].queries
    (value,) = [v for s in influxd.query(substitute(idle.influxql), "jobs_board") for r in s["values"] for v in r[1:]]
    assert value == pytest.approx(last["idle"]["gpu_energy_joules_total"] / 3.6e6, rel=1e-9)


def test_a_kubelet_that_does_not_answer_costs_the_pod_allocations_only(node, tmp_path, caplog):
    col = JobsCollector(JobsOptions(slurm="off", kubernetes="on", pod_resources_socket=str(tmp_path / "none")),
                        Context("jobs", proc_root=node["proc"], state_dir=tmp_path / "st", bus=SampleBus()))
    tick(col, 0, {"1": 0.0}, [("1", 6001, 30.0)])
    rows = tick(col, 10, {"1": 500.0}, [("1", 6001, 30.0)])
    assert rows["7e5f4d3c2b1a"].fields["gpu_energy_joules_total"] == 500.0
    assert sum("pod-resources does not answer" in r.getMessage() for r in caplog.records) == 1


def test_an_inference_servers_tokens_are_the_job_whose_gpus_it_runs_on(node):
    """A vLLM server on GPU 0 (job 77's): its tokens are the job's, and its tokens per joule; a server across
    GPU 0 and GPU 1 (a container's) belongs to no one job and gives nobody tokens; after a restart of the server
    its counters from zero are new tokens."""
    col = collector(node)

    def served(t, tokens, gen, gpus="0", endpoint="vllm"):
        return Sample("inference", {"endpoint": endpoint, "server": "vllm", "model": "llama", "gpus": gpus},
                      {"prompt_tokens_total": tokens, "generation_tokens_total": gen}, t * S)

    energy = {"0": 0.0, "1": 0.0}
    col_samples = []
    for t, (tok, gen) in enumerate(((1000, 100), (5000, 600), (9000, 1100), (200, 50))):
        col.ctx.bus.observe([served(t * 10, tok, gen), served(t * 10, 10 * tok, tok, gpus="0,1", endpoint="big")],
                            10.0)
        rows = tick(col, t * 10, energy, [("0", 4101, 60.0), ("1", 6001, 30.0)], keep=col_samples)
        energy = {g: e + 1000.0 for g, e in energy.items()}
    j77 = rows["77"].fields
    assert (j77["prompt_tokens_total"], j77["generation_tokens_total"]) == (8000 + 200, 1000 + 50)
    assert j77["tokens_per_joule"] == pytest.approx((8200 + 1050) / 3000.0)
    assert rows["7e5f4d3c2b1a"].fields["prompt_tokens_total"] == 0  # the server across two owners' GPUs
    # per server and model: its tokens over the energy of the GPUs it ran on, for the windows that counted them
    (model,) = [s for s in col_samples if s.measurement == "job_model" and s.ts == 30 * S]
    assert model.tags["job_id"] == "77" and model.tags["model"] == "llama" and model.tags["endpoint"] == "vllm"
    assert model.fields["gpu_energy_joules_total"] == 3000.0
    assert model.fields["tokens_per_joule"] == pytest.approx((8200 + 1050) / 3000.0)


def _stat(path: Path, pid: int, comm: str, ticks: int) -> None:
    """A /proc/PID/stat line (proc(5)): utime (field 14) and stime (15) split the ticks."""
    (path / str(pid)).mkdir(parents=True, exist_ok=True)
    fields = ["S", "1", str(pid), str(pid), "0", "-1", "4194560", "100", "0", "0", "0", str(ticks // 2),
              str(ticks - ticks // 2), "0", "0", "20", "0", "1", "0", "12345"]
    (path / str(pid) / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")


def test_the_cpus_and_the_nodes_energy_go_to_jobs_and_add_up_to_the_meter(node):
    """RAPL's 1000 J over a window when the machine was busy 400 ticks: job 77's processes ran 150 of them, job
    78's 50, the container's GPU process 100; the other 100 (the kernel, daemons) and the idle draw are nobody's.
    The rest of the node meter goes by GPU share."""
    proc = node["proc"]
    col = collector(node)

    def window(t, rapl_j, busy, ticks, gpu_j):
        (proc / "stat").write_text(f"cpu  {busy} 0 0 99999 0 0 0 0 0 0\ncpu0 {busy} 0 0 99999 0 0 0 0 0 0\n")
        for pid, n in ticks.items():
            _stat(proc, pid, "python3 (worker) x", n)  # a command name with spaces and parentheses
        col.ctx.bus.observe([Sample("host_energy", {"zone": "intel-rapl:0", "source": "rapl",
                                                    "scope": "cpu_package"}, {"energy_joules_total": rapl_j},
                                    t * S),
                             Sample("node_meter", {"meter": "psu_input"}, {"power_watts": 2000.0}, t * S)], 10.0)
        return tick(col, t, gpu_j, [("0", 4101, 50.0), ("1", 6001, 30.0)])

    window(0, 5000.0, 10_000, {4101: 1000, 4123: 500, 4050: 0, 5200: 700, 6001: 300}, {"0": 0.0, "1": 0.0})
    rows = window(10, 6000.0, 10_400, {4101: 1100, 4123: 550, 4050: 0, 5200: 750, 6001: 400},
                  {"0": 7000.0, "1": 4000.0})
    cpu = {k: r.fields["cpu_energy_joules_total"] for k, r in rows.items()}
    assert cpu["77"] == 375.0 and cpu["78"] == 125.0 and cpu["7e5f4d3c2b1a"] == 250.0 and cpu["idle"] == 250.0
    assert sum(cpu.values()) == 1000.0
    # the node meter's 2000 W over the 10 s window: 20 kJ; GPUs 11 kJ and CPUs 1 kJ attributed above, the other
    # 8 kJ (fans, NICs, PSU losses) by GPU share, 7:4
    node = {k: r.fields["node_energy_joules_total"] for k, r in rows.items()}
    assert node["77"] == pytest.approx(7000 + 375 + 8000 * 7 / 11, abs=0.001)
    assert node["7e5f4d3c2b1a"] == pytest.approx(4000 + 250 + 8000 * 4 / 11, abs=0.001)
    assert node["78"] == 125.0 and sum(node.values()) == pytest.approx(20000.0, abs=1e-9)


def test_a_containers_cpu_energy_counts_all_its_processes_from_its_cgroup(node, tmp_path):
    """The container's cgroup (cgroup v2 cpu.stat) ran 2 s of the window: all its processes, not only the one on
    a GPU; Slurm jobs keep their processes' time (listpids lists them all)."""
    import os

    proc, sys_root = node["proc"], tmp_path / "sys"
    hz = os.sysconf("SC_CLK_TCK")
    scope = sys_root / "fs" / "cgroup" / "system.slice" / (
        "docker-7e5f4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e.scope")
    scope.mkdir(parents=True)
    col = JobsCollector(JobsOptions(slurm="on", slurm_node="gpu-a01"),
                        Context("jobs", proc_root=proc, sys_root=sys_root, state_dir=tmp_path / "st", bus=SampleBus()))

    def window(t, rapl_j, busy, ticks, usage_s):
        (proc / "stat").write_text(f"cpu  {busy} 0 0 99999 0 0 0 0 0 0\n")
        for pid, n in ticks.items():
            _stat(proc, pid, "python3", n)
        (scope / "cpu.stat").write_text(f"usage_usec {usage_s * 1_000_000}\nuser_usec 0\nsystem_usec 0\n")
        col.ctx.bus.observe([Sample("host_energy", {"zone": "intel-rapl:0", "source": "rapl",
                                                    "scope": "cpu_package"}, {"energy_joules_total": rapl_j},
                                    t * S)], 10.0)
        return tick(col, t, {"0": 0.0, "1": 0.0}, [("0", 4101, 50.0), ("1", 6001, 30.0)])

    window(0, 5000.0, 10_000, {4101: 1000, 4123: 500, 4050: 0, 5200: 700, 6001: 300}, 30)
    rows = window(10, 6000.0, 10_000 + 4 * hz, {4101: 1000 + hz, 4123: 500 + hz // 2, 4050: 0,
                                                 5200: 700 + hz // 2, 6001: 300 + hz}, 32)
    cpu = {k: r.fields["cpu_energy_joules_total"] for k, r in rows.items()}
    # busy 4 s: job 77 1.5 s, job 78 0.5 s, the container 2 s (its cgroup), nobody else
    assert cpu["7e5f4d3c2b1a"] == 500.0 and cpu["77"] == 375.0 and cpu["78"] == 125.0
    assert sum(cpu.values()) == 1000.0


def test_a_server_pinned_to_a_mig_instance_gives_its_tokens_to_that_instances_holder(node, kubelet):
    """A vLLM server in GPU instance 1 of GPU 3 (MIG-aaaa, the batch pod's): its tokens are the pod's; one in
    instance 2 (MIG-bbbb, nobody's) gives nobody tokens."""
    sock, _ = kubelet
    col = JobsCollector(JobsOptions(slurm="off", kubernetes="on", pod_resources_socket=str(sock)),
                        Context("jobs", proc_root=node["proc"], state_dir=node["tmp"] / "state", bus=SampleBus()))
    mig = [("MIG-aaaa", "1", "3g.71gb"), ("MIG-bbbb", "2", "1g.18gb")]
    for k in range(3):
        ts = k * 10 * S
        col.ctx.bus.observe(
            [Sample("gpu_mig", {"gpu": "3", "uuid": "GPU-3", "mig_uuid": u, "gpu_instance": gi, "profile": pr}, {},
                    ts) for u, gi, pr in mig]
            + [Sample("gpu", {"gpu": "3", "uuid": "GPU-3"}, {"energy_joules_total": 7000.0 * k}, ts)]
            + [Sample("inference", {"endpoint": ep, "server": "vllm", "model": "m", "gpus": "3",
                                    "gpu_instances": f"3:{gi}"},
                      {"prompt_tokens_total": 1000 * k, "generation_tokens_total": 100 * k}, ts)
               for ep, gi in (("small", "1"), ("tiny", "2"))], 10.0)
        acc = Accumulator(ts, {"host": "gpu-a01"})
        col.collect(acc)
        rows = {s.tags["job_id"]: s for s in acc.close() if s.measurement == "job"}
    pod = rows["batch/mig-tenant"].fields
    assert (pod["prompt_tokens_total"], pod["generation_tokens_total"]) == (2000, 200)  # only its instance's server
    assert pod["gpu_energy_joules_total"] == pytest.approx(2 * 7000 * 3 / 7, abs=0.002)
