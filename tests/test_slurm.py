"""Slurm's scontrol output to jobs, owners and the GPUs each job holds (tests/fixtures/slurm/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.common.slurm import (
    SlurmError,
    expand_hosts,
    gpu_indexes,
    listpids,
    pairs,
    parse_jobs,
    parse_listpids,
    run,
)

FIXTURES = Path(__file__).parent / "fixtures" / "slurm"


def test_each_job_says_its_owner_and_the_gpus_it_holds_per_node():
    jobs = parse_jobs((FIXTURES / "show-job-d-o.txt").read_text())
    assert sorted(jobs) == ["70", "77", "78", "79"]
    j = jobs["77"]
    assert (j.user, j.uid, j.account, j.partition, j.name, j.state) == ("alice", "1000", "ml", "debug", "wrap",
                                                                       "RUNNING")
    assert j.start == "2026-12-06T13:00:01" and j.end == "Unknown" and j.gpus == {"gpu-a01": [0]}
    # two nodes, a typed GRES: the GPUs held on each; a shard is no GPU held whole
    assert jobs["78"].gpus == {"gpu-a01": [2, 3], "gpu-a02": [2, 3]}
    assert jobs["70"].state == "COMPLETED" and jobs["70"].gpus == {"gpu-a01": [1]}
    assert jobs["79"].state == "PENDING" and jobs["79"].gpus == {}


def test_values_with_spaces_and_keys_with_punctuation_stay_whole():
    kv = dict(pairs("JobId=1 Comment=fine tune run 3 AllocNode:Sid=h:1 CPUs/Task=4 Power= X=1"))
    assert kv == {"JobId": "1", "Comment": "fine tune run 3", "AllocNode:Sid": "h:1", "CPUs/Task": "4",
                  "Power": "", "X": "1"}


@pytest.mark.parametrize("gres,expected", [
    ("gpu:2(IDX:0-1)", [0, 1]),
    ("gpu:h100:1(IDX:3)", [3]),
    ("gpu(IDX:0,2-3)", [0, 2, 3]),
    ("gpu:h100:2(IDX:2-3),shard:1(2/8,0/8)", [2, 3]),
    ("shard:1(2/8,0/8)", []),
    ("gpu:1(IDX:N/A)", []),
    ("gpu:1", []),
])
def test_gres_detail_gives_the_gpu_indexes(gres, expected):
    assert gpu_indexes(gres) == expected


@pytest.mark.parametrize("expr,expected", [
    ("gpu-a01", ["gpu-a01"]),
    ("gpu-a[01-03,07]", ["gpu-a01", "gpu-a02", "gpu-a03", "gpu-a07"]),
    ("n[8-10],login1", ["n8", "n9", "n10", "login1"]),
    ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
    ("(null)", ["(null)"]),
])
def test_hostlists_expand_to_the_nodes(expr, expected):
    assert expand_hosts(expr) == expected


def test_listpids_maps_each_process_to_its_job_and_step():
    assert parse_listpids((FIXTURES / "listpids.txt").read_text()) == {
        4101: ("77", "batch"), 4123: ("77", "0"), 4050: ("77", "extern"), 5200: ("78", "0")}


def test_a_missing_or_failing_scontrol_is_said_not_raised_as_anything_else(tmp_path):
    with pytest.raises(SlurmError, match="not installed"):
        run(["listpids"], 5, env={"PATH": str(tmp_path)})
    fake = tmp_path / "scontrol"
    fake.write_text("#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact slurm controller' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(SlurmError, match="Unable to contact slurm controller"):
        run(["show", "job"], 5, env={"PATH": str(tmp_path)})


def test_a_node_running_no_job_has_no_pids_not_an_error(tmp_path):
    """scontrol listpids exits 1 with "No job steps exist on this node." where no job runs (Slurm 22.05)."""
    fake = tmp_path / "scontrol"
    fake.write_text("#!/bin/sh\necho 'No job steps exist on this node.' >&2\nexit 1\n")
    fake.chmod(0o755)
    assert listpids(5, env={"PATH": str(tmp_path)}) == {}
