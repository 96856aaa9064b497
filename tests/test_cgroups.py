"""Who a process works for, from recorded /proc/PID/cgroup files of each scheduler's layout
(tests/fixtures/cgroups/README.md says where each layout comes from)."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.common.cgroups import Owner, owner_of, parse

FIXTURES = Path(__file__).parent / "fixtures" / "cgroups"


@pytest.mark.parametrize("fixture,owner,key", [
    ("slurm-v1.txt", Owner("slurm", job_id="4242", step="0", uid="1000"), "slurm:4242"),
    ("slurm-v1-multiple-slurmd.txt", Owner("slurm", job_id="77", step="batch", uid="1001"), "slurm:77"),
    ("slurm-v2.txt", Owner("slurm", job_id="5150", step="0"), "slurm:5150"),
    ("slurm-v2-extern.txt", Owner("slurm", job_id="5151", step="extern"), "slurm:5151"),
    ("k8s-cgroupfs-v1.txt", Owner("kubernetes", pod_uid="3f1e2d3c-1111-2222-3333-444455556666",
                                  container="0b8f9a9c2a0e"), "pod:3f1e2d3c-1111-2222-3333-444455556666"),
    ("k8s-systemd-v2.txt", Owner("kubernetes", pod_uid="9a8b7c6d-1234-5678-9abc-def012345678",
                                 container="4c3b2a1f0e9d"), "pod:9a8b7c6d-1234-5678-9abc-def012345678"),
    ("k8s-crio-v2.txt", Owner("kubernetes", pod_uid="11112222-3333-4444-5555-666677778888",
                              container="aa11bb22cc33"), "pod:11112222-3333-4444-5555-666677778888"),
    ("docker-v2.txt", Owner("container", container="7e5f4d3c2b1a"), "container:7e5f4d3c2b1a"),
    ("docker-v1.txt", Owner("container", container="7e5f4d3c2b1a"), "container:7e5f4d3c2b1a"),
    ("podman-user-v2.txt", Owner("container", container="3c2b1a0f9e8d"), "container:3c2b1a0f9e8d"),
    ("systemd-service.txt", Owner("systemd", unit="vllm.service"), "unit:vllm.service"),
    ("session.txt", Owner(), ""),
])
def test_each_schedulers_layout_names_the_processs_owner(fixture, owner, key):
    got = parse((FIXTURES / fixture).read_text())
    assert got == owner and got.key == key


@pytest.mark.parametrize("text", ["", "garbage", "0::/", "5:memory:/slurm/uid_x/job_/step_0",
                                  "0::/kubepods/pod-not-a-uid/abc"])
def test_an_empty_or_odd_cgroup_file_has_no_owner(text):
    assert parse(text) == Owner()


def test_a_process_that_is_gone_has_no_owner_to_read(tmp_path):
    (tmp_path / "41").mkdir()
    (tmp_path / "41" / "cgroup").write_text((FIXTURES / "slurm-v2.txt").read_text())
    assert owner_of(tmp_path, 41).job_id == "5150"
    assert owner_of(tmp_path, 42) is None  # exited between the GPU's process list and this read
