"""Energy per job on one node: the jobs collector over the gpu collector's samples, Slurm's answers (recorded
scontrol output through a stand-in scontrol on PATH) and recorded cgroup files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from agent.bus import SampleBus
from agent.cli import main
from agent.collector import Context, NotPresent
from agent.model import Accumulator, Sample
from collectors.jobs import JobsCollector, JobsOptions

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


def tick(col, t: int, energy: dict[str, float], procs: list[tuple[str, int, float]]):
    """One collection at t seconds: each GPU's counter (J) and the processes on them (gpu, pid, SM %)."""
    ts = t * S
    samples = [Sample("gpu", {"gpu": g, "uuid": f"GPU-{g}"}, {"energy_joules_total": e}, ts)
               for g, e in energy.items()]
    samples += [Sample("gpu_process", {"gpu": g, "uuid": f"GPU-{g}", "pid": str(pid)},
                       {"sm_utilization_percent": sm}, ts) for g, pid, sm in procs]
    col.ctx.bus.observe(samples, 10.0)
    acc = Accumulator(ts, {"host": "gpu-a01"})
    col.collect(acc)
    return {s.tags["job_id"]: s for s in acc.close() if s.measurement == "job"}


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
    assert main_json(["jobs", "--json", "--running", "-c", str(cfg), "--state-dir",
                      str(node["tmp"] / "state")]) == [x for x in r if x["running"]]


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
