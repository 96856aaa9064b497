"""bench/gpu-smoke must fail when it compared nothing : run against stand-in nvidia-smi
programs that behave as the real one does on a broken or GPU-less machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# nvidia-smi's words when the driver is not loaded: on stdout, exit 9
DRIVER_GONE = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the "
               "latest NVIDIA driver is installed and running.")


def smoke(tmp_path, script: str, stand_in: str = "", energy_window: str = "0.1") -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + script)
    smi.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", GPU_SMOKE_STAND_IN=stand_in)
    return subprocess.run([sys.executable, str(ROOT / "bench" / "gpu-smoke"), "--average", "0.3",
                           "--energy-window", energy_window, "--no-load"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_fails_when_nvidia_smi_fails_and_says_why(tmp_path):
    r = smoke(tmp_path, f"cat <<'END'\n{DRIVER_GONE}\nEND\nexit 9\n")
    assert r.returncode != 0
    assert "couldn't communicate with the NVIDIA driver" in r.stderr and "compared nothing" in r.stderr


def test_fails_when_the_agent_sees_no_gpu(tmp_path):
    # nvidia-smi lists a GPU; the agent sees none (CI and developer machines have no NVML library): nothing
    # to compare, which must not pass
    r = smoke(tmp_path, 'echo "GPU 0: NVIDIA H200 (UUID: GPU-00000000-0000-0000-0000-000000000000)"\n')
    assert r.returncode == 1 and "sees no GPU" in r.stdout and "compared nothing" in r.stdout


# What nvidia-smi --query-gpu=index,uuid,name,power.draw,power.draw.instant,temperature.gpu,temperature.memory,
# utilization.gpu,memory.used,memory.total,driver_version --format=csv,noheader,nounits prints for the fake H200
# (tests/fakes/nvml.py): MiB, W, C, %
H200_ROW = "0, GPU-00000000-fake-H200-SXM, NVIDIA H200, {avg}, 655.21, 61, 52, 100, 40960, 143771, 550.127.05"


def against_fake(tmp_path, row: str) -> subprocess.CompletedProcess:
    r = smoke(tmp_path, 'case "$1" in -L) echo "GPU 0: NVIDIA H200 (UUID: GPU-00000000-fake-H200-SXM)";;\n'
                        f'*) echo "{row}";; esac\n', stand_in="tests.fakes.nvml:smoke_h200", energy_window="1")
    return r


def test_passes_only_when_every_reading_and_the_energy_window_agree(tmp_path):
    r = against_fake(tmp_path, H200_ROW.format(avg="640.02"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "energy J (counter vs integrated)" in r.stdout and "all comparisons agree" in r.stdout
    assert r.stdout.count(" ok (tolerance") >= 8


def test_fails_when_nvidia_smi_disagrees(tmp_path):
    r = against_fake(tmp_path, H200_ROW.format(avg="500.00"))
    assert r.returncode == 1 and "DISAGREES" in r.stdout and "DISAGREEMENT" in r.stdout


def test_fails_when_nvidia_smi_output_is_not_understood(tmp_path):
    r = against_fake(tmp_path, "No devices were found")
    assert r.returncode == 1 and "compared nothing" in r.stdout
