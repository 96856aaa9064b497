"""The jobs' records on this node: what each job has drawn so far, kept across agent restarts.

One JSON file in the state directory (`jobs.json`), written whole (a temporary file, then a rename) once per
collection before the samples leave, so a counter emitted is never ahead of what a restart finds. A file that
does not parse is set aside (agent.state.set_aside) and counted, never fatal. A job that ends keeps its final
record for `keep` seconds: `aifactory jobs --since` and a Slurm epilog read it after the job is gone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agent.logonce import Latch
from agent.state import set_aside
from collectors.common.statefile import read_object, write_object

log = logging.getLogger(__name__)


@dataclass
class JobRecord:
    job_id: str
    scheduler: str  # slurm, kubernetes, container, systemd, none (the idle owner)
    user: str = ""
    account: str = ""  # Slurm account, Kubernetes namespace
    name: str = ""
    partition: str = ""
    gpus: list[str] = field(default_factory=list)  # GPU indexes it held or used
    gpu_energy_mj: int = 0
    cpu_energy_mj: int = 0  # the CPU packages' energy by its processes' CPU time
    node_energy_mj: int = 0  # its GPU and CPU energy and its GPU share of the rest of the node meter
    gpu_seconds: float = 0.0
    held_idle_seconds: float = 0.0
    prompt_tokens: int = 0  # tokens of the inference servers that run on its GPUs alone
    generation_tokens: int = 0
    # per server and model ("ENDPOINT|MODEL"): [prompt tokens, generated tokens, mJ of the GPUs it ran on]
    models: dict[str, list[int]] = field(default_factory=dict)
    start_ns: int = 0
    last_seen_ns: int = 0
    end_ns: int | None = None
    unseen: int = 0  # collections in a row that did not see it

    @property
    def running(self) -> bool:
        return self.end_ns is None


FIELDS = {f for f in JobRecord.__dataclass_fields__}


class JobBook:
    def __init__(self, path: Path | None, keep_s: float = 7 * 86400.0) -> None:
        self.path = path
        self.keep_ns = int(keep_s * 1e9)
        self.jobs: dict[str, JobRecord] = {}
        self._save = Latch(log)
        if path is not None:
            self.jobs = self._load(path)

    @staticmethod
    def _load(path: Path) -> dict[str, JobRecord]:
        data = read_object(path, "job book")
        try:
            return {k: JobRecord(**{f: v for f, v in rec.items() if f in FIELDS}) for k, rec in data.items()}
        except (AttributeError, TypeError, ValueError) as e:  # records of another shape
            set_aside(path, f"not a valid job book: {e}")
            return {}

    def get(self, key: str, make) -> JobRecord:
        rec = self.jobs.get(key)
        if rec is None:
            rec = self.jobs[key] = make()
        return rec

    def prune(self, now_ns: int) -> None:
        """Ended records older than `keep` are dropped."""
        for k in [k for k, r in self.jobs.items() if r.end_ns is not None and r.end_ns < now_ns - self.keep_ns]:
            del self.jobs[k]

    def save(self) -> None:
        if self.path is None:
            return
        error = write_object(self.path, {k: asdict(r) for k, r in self.jobs.items()})
        if error is not None:
            self._save.failed(error, "cannot save the job book to %s: %s (kept in memory)", self.path, error)
            return
        self._save.recovered("job book saved to %s again", self.path)


def read_book(path: Path) -> dict[str, JobRecord]:
    """The records as the agent last saved them, for `aifactory jobs` (read-only: a damaged file is not moved by
    a reader; the agent sets it aside)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a job book")
    return {k: JobRecord(**{f: v for f, v in rec.items() if f in FIELDS}) for k, rec in data.items()}
