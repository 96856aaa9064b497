"""bench/gpu-smoke must fail when it compared nothing (issue 14, item 13): run against stand-in nvidia-smi
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


def smoke(tmp_path, script: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + script)
    smi.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    return subprocess.run([sys.executable, str(ROOT / "bench" / "gpu-smoke"), "--window", "0.1"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def test_fails_when_nvidia_smi_fails_and_says_why(tmp_path):
    r = smoke(tmp_path, f"cat <<'END'\n{DRIVER_GONE}\nEND\nexit 9\n")
    assert r.returncode != 0
    assert "couldn't communicate with the NVIDIA driver" in r.stderr and "compared nothing" in r.stderr


def test_fails_when_the_agent_sees_no_gpu(tmp_path):
    # nvidia-smi lists a GPU; the agent sees none (CI and developer machines have no NVML library): nothing
    # to compare, which must not pass
    r = smoke(tmp_path, 'echo "GPU 0: NVIDIA H200 (UUID: GPU-00000000-0000-0000-0000-000000000000)"\n')
    assert r.returncode == 1 and "sees no GPU" in r.stdout and "compared nothing" in r.stdout
