"""Slurm's view of this node, for any collector: which job a process works for, who owns each job and which
GPUs it holds, from `scontrol` (no slurmdbd needed).

- `scontrol listpids`: each local process's job and step, read from slurmd's spool: works as any user and
  without munge, and with `proctrack/linuxproc` (no per-job cgroups) it is how a process maps to its job without
  reading another user's /proc/PID/environ.
- `scontrol show job -d -o JOBID...`: user, account, partition, name, state, start and end, and per node the GPU
  indexes the job holds (`GRES=gpu:2(IDX:0-1)`): a GPU held and idle is still the job's. Needs munge.

The parsers are pure and tested on recorded output of Slurm 22.05 (tests/fixtures/slurm/); the calls run with
a deadline and never block the loop (collectors call them from their thread).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field

_PAIR = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")
_IDX = re.compile(r"\(IDX:([0-9,\-]*)\)")
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


@dataclass
class SlurmJob:
    job_id: str
    user: str = ""
    uid: str = ""
    account: str = ""
    partition: str = ""
    name: str = ""
    state: str = ""
    start: str = ""
    end: str = ""
    gpus: dict[str, list[int]] = field(default_factory=dict)  # node -> GPU indexes held there


def pairs(line: str) -> list[tuple[str, str]]:
    """`Key=value` pairs of one `scontrol -o` line, in order (keys repeat: one Nodes= block per node)."""
    marks = [(m.start(1), m.end(1), m.group(1)) for m in _PAIR.finditer(line)]
    out = []
    for i, (_, end, key) in enumerate(marks):
        stop = marks[i + 1][0] if i + 1 < len(marks) else len(line)
        out.append((key, line[end + 1:stop].strip()))
    return out


def indexes(spec: str) -> list[int]:
    """`0-1,3` -> [0, 1, 3]; malformed parts are left out."""
    out: list[int] = []
    for part in spec.split(","):
        m = _RANGE.match(part.strip())
        if m:
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if hi - lo < 4096:
                out += range(lo, hi + 1)
    return out


def gpu_indexes(gres: str) -> list[int]:
    """GPU indexes of a detail line's GRES (`gpu:2(IDX:0-1)`, `gpu:h100:1(IDX:3)`, `gpu(IDX:0,2)`); other GRES
    (`shard`, `mps`) are not devices held whole."""
    out: list[int] = []
    for item in re.split(r",(?![^()]*\))", gres):
        if item.startswith("gpu") and (m := _IDX.search(item)):
            out += indexes(m.group(1))
    return out


def expand_hosts(expr: str, limit: int = 100_000) -> list[str]:
    """A Slurm hostlist (`gpu-a[01-03,07],login1`, `rack[1-2]-n[1-4]`) as host names."""
    out: list[str] = []
    for item in re.split(r",(?![^\[]*\])", expr):
        todo = [item]
        while todo and len(out) < limit:
            name = todo.pop(0)
            m = re.match(r"^([^\[]*)\[([^\]]*)\](.*)$", name)
            if not m:
                if name:
                    out.append(name)
                continue
            pre, body, post = m.groups()
            for part in body.split(","):
                r = _RANGE.match(part.strip())
                if r and int(r.group(2) or r.group(1)) - int(r.group(1)) <= limit:
                    lo, hi = r.group(1), r.group(2) or r.group(1)
                    todo += [f"{pre}{str(n).zfill(len(lo))}{post}" for n in range(int(lo), int(hi) + 1)]
    return out


def parse_jobs(text: str) -> dict[str, SlurmJob]:
    """`scontrol show job -d -o` output: one line per job."""
    out: dict[str, SlurmJob] = {}
    for line in text.splitlines():
        kv = pairs(line)
        if not kv or kv[0][0] != "JobId":
            continue
        job = SlurmJob(kv[0][1])
        nodes: list[str] = []
        for key, value in kv:
            if key == "UserId":
                m = re.match(r"^([^()]*)\((\d+)\)", value)
                job.user, job.uid = (m.group(1), m.group(2)) if m else (value, "")
            elif key in ("Account", "Partition", "JobName", "JobState", "StartTime", "EndTime"):
                attr = {"JobName": "name", "JobState": "state", "StartTime": "start", "EndTime": "end"}.get(
                    key, key.lower())
                setattr(job, attr, value.split()[0] if key == "JobState" and value else value)
            elif key == "Nodes":
                nodes = expand_hosts(value)
            elif key == "GRES" and nodes:
                for n in nodes:
                    job.gpus.setdefault(n, []).extend(gpu_indexes(value))
        out[job.job_id] = job
    return out


def parse_listpids(text: str) -> dict[int, tuple[str, str]]:
    """`scontrol listpids`: pid -> (job id, step id)."""
    out: dict[int, tuple[str, str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].isdigit() and parts[1].isdigit():
            out[int(parts[0])] = (parts[1], parts[2])
    return out


class SlurmError(Exception):
    pass


# What scontrol listpids says (and exits 1 with) on a node that runs no job: no jobs, not a failure.
NO_STEPS = "No job steps exist on this node"


def listpids(timeout: float, env: dict | None = None) -> dict[int, tuple[str, str]]:
    """This node's job processes: pid -> (job id, step id); empty where no job runs."""
    try:
        return parse_listpids(run(["listpids"], timeout, env))
    except SlurmError as e:
        if NO_STEPS in str(e):
            return {}
        raise


def run(args: list[str], timeout: float, env: dict | None = None) -> str:
    """One scontrol call within its deadline; a missing binary, a refusal or a hang is a SlurmError saying so."""
    try:
        r = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError:
        raise SlurmError("scontrol is not installed") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"scontrol {args[0]} did not answer within {timeout:g} s") from None
    if r.returncode != 0:
        why = (r.stderr or r.stdout).strip().splitlines()
        raise SlurmError(f"scontrol {' '.join(args[:2])}: {why[-1] if why else f'exit {r.returncode}'}")
    return r.stdout
