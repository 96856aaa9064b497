"""The `file` output, tested like the InfluxDB output: the real agent writing through it, a crash
mid-write, rotation, a full disk reported in status and nothing lost."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.config import ConfigError, build_config
from agent.model import to_line
from agent.outputs.buffer import DiskBuffer
from agent.outputs.file import FileOutput, FileOutputOptions
from agent.registry import default_registry
from agent.scheduler import Agent

from .lp_parser import parse
from .test_faults import small_fs  # noqa: F401 - the fixture
from .test_influxdb import gpu_samples

ROOT = Path(__file__).resolve().parent.parent


def lines_of(path: Path) -> list[str]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path} ends in a partial line"
    return data.decode().splitlines()


def test_the_agent_writes_line_protocol_and_json_lines_through_it(tmp_path):
    lp, js = tmp_path / "out" / "metrics.lp", tmp_path / "out" / "metrics.jsonl"
    cfg = build_config({"agent": {"hostname": "f1", "interval": 0.5, "align": False},
                        "collectors": {"gpu": {"enabled": False}, "inference": {"enabled": False},
                                       "efficiency": {"enabled": False}, "storage": {"smart": "off"}},
                        "outputs": {"file": [{"name": "lp", "path": str(lp), "flush_interval": 0.2},
                                             {"name": "js", "path": str(js), "format": "json",
                                              "flush_interval": 0.2}]}},
                       {}, None, default_registry())
    agent = Agent(cfg, tmp_path / "state")
    assert asyncio.run(agent.run(duration=1.6, flush_timeout=5)) == 0
    points = parse("\n".join(lines_of(lp)))
    host = [p for p in points if p[0] == "host"]
    assert len(host) >= 3 and all(t["host"] == "f1" for _, t, _, _ in host)
    docs = [json.loads(line) for line in lines_of(js)]
    assert {d["measurement"] for d in docs} == {p[0] for p in points}
    st = agent.status()
    assert st["outputs"]["lp"]["state"] == "ok" and st["outputs"]["lp"]["written_samples_total"] == len(points)
    assert st["outputs"]["lp"]["file_size_bytes"] == lp.stat().st_size


def test_rotation_keeps_whole_lines_and_at_most_keep_old_files(tmp_path):
    path = tmp_path / "metrics.lp"
    out = FileOutput(FileOutputOptions(path=path, max_size=20_000, keep=2, batch_size=40, flush_interval=0.05),
                     tmp_path / "state")
    out.start()
    samples = gpu_samples(50)  # 400 points, ~100 kB of line protocol
    for i in range(0, len(samples), 40):
        out.append(samples[i:i + 40])
    assert out.flush(30) and out.stop(5)
    files = sorted(tmp_path.glob("metrics.lp*"))
    assert [f.name for f in files] == ["metrics.lp", "metrics.lp.1", "metrics.lp.2"]
    for f in files:
        assert f.stat().st_size <= 20_000
        parse("\n".join(lines_of(f)))  # every line whole and valid
    assert out.stats()["file_rotations_total"] >= 4  # older files beyond keep were dropped
    newest = {line for f in files for line in lines_of(f)}
    assert to_line(samples[-1]) in newest


KILL_SCRIPT = """
import sys, time
from pathlib import Path
from agent.outputs.file import FileOutput, FileOutputOptions
out = FileOutput(FileOutputOptions(path=Path(sys.argv[1]), batch_size=500, flush_interval=0.05), Path(sys.argv[2]))
out.start()
print("writing", flush=True)
time.sleep(60)
"""


def test_kill_9_mid_write_then_restart_loses_nothing_and_leaves_no_partial_line(tmp_path):
    path, state = tmp_path / "metrics.lp", tmp_path / "state"
    samples = gpu_samples(5000)  # 40,000 points
    buf = DiskBuffer(state / "buffer-file.db")
    buf.append([to_line(s).encode() for s in samples])
    buf.close()
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(path), str(state)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not path.exists() or path.stat().st_size < 200_000):
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    written = path.stat().st_size
    left = DiskBuffer(state / "buffer-file.db")
    pending = len(left)
    left.close()
    assert written > 0 and pending > 0  # killed with some written and some still buffered
    with open(path, "ab") as f:  # as if the kill had come in the middle of a line
        f.write(b"gpu,host=node1,gpu=3 power_watt")
    out = FileOutput(FileOutputOptions(path=path, batch_size=5000, flush_interval=0.05), state)
    out.start()
    assert out.flush(60) and out.stop(10)
    got = lines_of(path)
    assert set(got) == {to_line(s) for s in samples}  # every point, at least once; no partial line
    # what was cut: our partial line, plus whatever half line the kill itself left before it
    assert out.writer.repaired_bytes >= len(b"gpu,host=node1,gpu=3 power_watt")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: root only (CI runs as root)")
def test_a_full_disk_is_reported_in_status_and_nothing_is_lost(tmp_path, small_fs):  # noqa: F811
    disk = small_fs("export", size="1m")
    path = disk / "metrics.lp"
    (disk / "filler").write_bytes(b"x" * (1024 * 1024 - 64 * 1024))  # leave 64 KiB
    out = FileOutput(FileOutputOptions(path=path, batch_size=2000, flush_interval=0.05), tmp_path / "state")
    out.start()
    samples = gpu_samples(100)  # 800 points, ~200 kB
    out.append(samples)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and out.stats()["state"] == "ok":
        time.sleep(0.05)
    st = out.stats()
    assert st["state"] == "retrying" and "No space left on device" in st["last_error"]
    assert st["buffer_points"] == len(samples) and st["written_samples_total"] == 0
    lines_of(path)  # the failed write was cut back: whole lines only
    (disk / "filler").unlink()
    deadline = time.monotonic() + 20  # the sender retries a local disk every few seconds at most
    while time.monotonic() < deadline and out.stats()["written_samples_total"] < len(samples):
        time.sleep(0.05)
    assert out.stop(5)
    assert lines_of(path) == [to_line(s) for s in samples] and out.stats()["state"] == "ok"


def test_config_checks_the_file_output_like_any_section(tmp_path):
    with pytest.raises(ConfigError, match=r"outputs\.file\[0\]\.path: required key is missing"):
        build_config({"outputs": {"file": [{"format": "lp"}]}}, {}, None, default_registry())
    with pytest.raises(ConfigError, match="output names must be unique"):
        build_config({"outputs": {"file": [{"path": "/tmp/a", "name": "influxdb"}],
                                  "influxdb": [{"url": "http://127.0.0.1:8086", "api": "v1", "database": "d"}]}},
                     {}, None, default_registry())


def _logrotate(tmp_path: Path, path: Path, mode: str) -> None:
    """Debian's logrotate, forced, on this one file: `create` (rename, then a new file) or `copytruncate`."""
    import shutil

    exe = shutil.which("logrotate") or "/usr/sbin/logrotate"
    if not Path(exe).exists():
        if os.environ.get("CI"):
            raise RuntimeError("logrotate missing: tests/install-deps test installs it")
        pytest.skip("logrotate not installed (apt-get install -y logrotate; `make test` does it)")
    conf = tmp_path / f"logrotate-{mode}.conf"
    conf.write_text(f"{path} {{\n  rotate 5\n  {mode}\n  missingok\n  nocompress\n}}\n")
    r = subprocess.run([exe, "--force", "--state", str(tmp_path / "logrotate.state"), str(conf)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


@pytest.mark.services
@pytest.mark.parametrize("mode", ["create", "copytruncate"])
def test_logrotate_or_a_deleted_file_never_loses_a_line(tmp_path, mode):
    path = tmp_path / "m.lp"
    out = FileOutput(FileOutputOptions(path=path, batch_size=50, flush_interval=0.05), tmp_path / "state")
    out.start()
    samples = gpu_samples(60)  # 480 points, written in 3 parts with a rotation and a deletion between
    third = len(samples) // 3
    out.append(samples[:third])
    assert out.flush(30)
    _logrotate(tmp_path, path, mode)
    out.append(samples[third:2 * third])
    assert out.flush(30)
    if mode == "create":
        assert path.exists() and path.stat().st_size > 0  # the path is written again, not the renamed file
    rotated = {line for f in sorted(tmp_path.glob("m.lp.*")) for line in lines_of(f)}
    assert {to_line(s) for s in samples[:third]} <= rotated  # the part before the rotation, whole, in m.lp.1
    assert {to_line(s) for s in samples[third:2 * third]} <= set(lines_of(path))  # the part after, at the path
    path.unlink()  # an operator deletes the current file: later lines go to a new one, not to the unlinked inode
    out.append(samples[2 * third:])
    assert out.flush(30) and out.stop(5)
    assert {to_line(s) for s in samples[2 * third:]} == set(lines_of(path))
    assert out.stats()["file_reopens_total"] == (2 if mode == "create" else 1)
