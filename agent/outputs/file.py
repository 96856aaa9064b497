"""File output: line protocol or JSON lines appended to a file, rotated by size (outputs.file[]).

For air-gapped sites (carry the files out) and for debugging (`tail -f`). It rides the shared sender
(agent/outputs/running.py): samples are in the crash-safe disk buffer before a collection counts as done, and
leave it only once written and flushed to the file (fsync with `fsync: true`). Delivery is at least once: a
batch written just before a crash is written again after the restart (a point in line protocol overwrites
itself when loaded into InfluxDB: same series and timestamp).

The file only ever holds whole lines. A write that fails half-way (a full disk) is cut back to where it began;
a crash in the middle of a write leaves a partial last line, which is cut off when the output opens the file.
Rotation: when the next batch would take the file past `max_size`, it is renamed NAME.1 (NAME.1 to NAME.2 and so
on, at most `keep` old files) and a new file begins. A full disk or an unwritable folder is a retried failure
shown in `aifactory status` and the `agent` measurement, never a crash, and nothing buffered is lost.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from ..config import OutputOptions, PositiveDuration, Size
from ..model import Sample, to_line
from .buffer import DiskBuffer
from .running import OK, Result, RunningOutput, TransportError, Writer

log = logging.getLogger(__name__)


class FileOutputOptions(OutputOptions):
    """One file destination with its own disk buffer."""

    name: str = Field("file", pattern=r"^[A-Za-z0-9_.-]+$", description="names the buffer and the status row")
    path: Path = Field(..., description="the file written, e.g. /var/lib/aifactory/export/metrics.lp")
    format: Literal["lp", "json"] = Field("lp", description="line protocol, or one JSON object per line")
    max_size: Size = Field(100 << 20, ge=4096, description="rotate when the file would grow past this")
    keep: int = Field(5, ge=0, le=1000, description="rotated files kept (NAME.1 newest)")
    fsync: bool = Field(False, description="fsync after every batch (slower; survives an OS crash)")
    batch_size: int = Field(5000, gt=0, description="points per write")
    flush_interval: PositiveDuration = Field(1.0, description="write at least this often")
    buffer_max_size: Size = Field(256 << 20, description="disk buffer cap in bytes; the oldest go first")
    buffer_max_points: int = Field(2_000_000, gt=0, description="disk buffer cap in points")


    @field_validator("path")
    @classmethod
    def _a_file(cls, v: Path) -> Path:
        text = str(v)
        if not text or text in (".", "/") or text.endswith("/") or v.is_dir():
            raise ValueError(f"{text or 'an empty path'!r} is a directory, not a file to write "
                             "(e.g. /var/lib/aifactory/export/metrics.lp)")
        return v


class FileWriter(Writer):
    def __init__(self, opts: FileOutputOptions) -> None:
        self.opts = opts
        self.path = Path(opts.path)
        self.rotations = 0
        self.reopens = 0
        self.repaired_bytes = 0
        self._f = None

    def encode(self, samples: list[Sample]) -> list[bytes]:
        if self.opts.format == "json":
            return [json.dumps(s.to_json(), separators=(",", ":")).encode() for s in samples]
        return [to_line(s).encode() for s in samples]

    def _still_ours(self) -> None:
        """The open file is still the one at path: deleted (link count 0) or moved away (logrotate without
        copytruncate: path is another inode, or none) means every later line would go nowhere, or to
        NAME.1. Then path is opened again, said once, and counted."""
        if self._f is None:
            return
        try:
            mine = os.fstat(self._f.fileno())
            try:
                now = os.stat(self.path)
                moved = (now.st_ino, now.st_dev) != (mine.st_ino, mine.st_dev)
            except FileNotFoundError:
                moved = True
        except OSError:
            moved = True
        if moved or mine.st_nlink == 0:  # one event each time, said once
            self.close()
            self.reopens += 1
            log.warning("output file %s was deleted or moved away (logrotate?): writing to a new %s",
                        self.path, self.path)

    def _open(self):
        self._still_ours()
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = open(self.path, "ab+")  # noqa: SIM115 - kept open across batches
            self._repair(f)
            self._f = f
        return self._f

    def _repair(self, f) -> None:
        """Cut a partial last line (a crash mid-write) so that the file holds whole lines only."""
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # find the end of the last whole line, reading back in blocks
        pos = size
        while pos > 0:
            step = min(65536, pos)
            f.seek(pos - step)
            block = f.read(step)
            i = block.rfind(b"\n")
            if i >= 0:
                pos = pos - step + i + 1
                break
            pos -= step
        f.truncate(pos)
        self.repaired_bytes += size - pos
        log.warning("output file %s: a partial last line (%d bytes) from an interrupted write was cut off",
                    self.path, size - pos)

    def _rotate(self) -> None:
        self.close()
        if self.opts.keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.opts.keep - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self.rotations += 1

    def write(self, records: list[bytes]) -> Result:
        data = b"\n".join(records) + b"\n"
        try:
            f = self._open()
            start = f.seek(0, os.SEEK_END)
            if start and start + len(data) > self.opts.max_size:
                self._rotate()
                f = self._open()
                start = 0
            try:
                f.write(data)
                f.flush()
                if self.opts.fsync:
                    os.fsync(f.fileno())
            except OSError:
                # never leave half a batch: cut back to where this write began (a full disk frees the space)
                try:
                    f.truncate(start)
                except OSError:
                    self.close()  # reopened next time, and the partial line cut then
                raise
        except OSError as e:
            raise TransportError(f"cannot write {self.path}: {e.strerror or e}") from None
        return OK

    def describe(self, record: bytes) -> str:
        return record[:300].decode("utf-8", "replace")

    def close(self) -> None:
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None

    def stats(self) -> dict:
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        return {"path": str(self.path), "file_size_bytes": size, "file_rotations_total": self.rotations,
                "file_reopens_total": self.reopens}


class FileOutput(RunningOutput):
    Options = FileOutputOptions
    many = True

    def __init__(self, opts: FileOutputOptions, state_dir: Path) -> None:
        self.opts = opts
        super().__init__(opts.name, FileWriter(opts),
                         DiskBuffer(state_dir / f"buffer-{opts.name}.db", opts.buffer_max_size,
                                    opts.buffer_max_points),
                         batch_size=opts.batch_size, flush_interval=opts.flush_interval,
                         retry_max=5.0)  # a local disk: space comes back soon

    @classmethod
    def build(cls, opts: FileOutputOptions, state_dir: Path, agent=None, catalogue=None) -> FileOutput:
        return cls(opts, state_dir)
