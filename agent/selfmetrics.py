"""The agent's own metrics (measurement ``agent``): collectors, outputs, the process."""

from __future__ import annotations

import os
import time

import psutil

from .model import Accumulator, Kind, Metric
from .state import set_aside_files

G, C, I = Kind.GAUGE, Kind.COUNTER, Kind.INFO


def _m(field: str, kind: Kind, unit: str, desc: str, tags: tuple[str, ...]) -> Metric:
    return Metric("agent", field, kind, unit, desc, tags)


_COL = ("component", "name", "collector")
_OUT = ("component", "name")
_PROC = ("component",)  # process, pipeline, alerts

AGENT_METRICS: tuple[Metric, ...] = (
    _m("run_success", G, "bool", "last run of this collector instance succeeded (not present counts as success)", _COL),
    _m("present", G, "bool", "what the collector reads exists on this node", _COL),
    _m("run_duration_seconds", G, "seconds", "wall time of the last run", _COL),
    _m("run_samples", G, "count", "samples produced by the last run", _COL),
    _m("runs_total", C, "count", "runs started", _COL),
    _m("errors_total", C, "count", "runs that raised", _COL),
    _m("timeouts_total", C, "count", "runs abandoned past their deadline", _COL),
    _m("skipped_total", C, "count", "runs skipped because the previous one was still running", _COL),
    _m("invalid_values_total", C, "count", "field values dropped or clamped: not finite (NaN, inf), an empty key, text "
       "that is not UTF-8, an integer beyond int64", _COL),
    _m("late_samples_total", C, "count", "adds refused from a run abandoned past its deadline", _COL),
    _m("queue_depth_samples", G, "count", "samples waiting for this output", _OUT),
    _m("queue_capacity_samples", G, "count", "samples this output's queue holds at most", _OUT),
    _m("queue_dropped_samples_total", C, "count", "samples dropped because this output's queue was full", _OUT),
    _m("written_samples_total", C, "count", "samples this output accepted", _OUT),
    _m("write_errors_total", C, "count", "failed write attempts (the samples stay queued)", _OUT),
    _m("evicted_samples_total", C, "count", "samples removed by this output's size cap", _OUT),
    _m("expired_samples_total", C, "count", "samples the local store deleted at the end of their retention", _OUT),
    _m("store_size_bytes", G, "bytes", "size of the output's database on disk", _OUT),
    _m("buffer_points", G, "count", "points in the output's disk buffer, not yet acknowledged", _OUT),
    _m("buffer_size_bytes", G, "bytes", "line-protocol bytes in the output's disk buffer", _OUT),
    _m("buffer_capacity_points", G, "count", "points the disk buffer holds at most", _OUT),
    _m("buffer_evicted_points_total", C, "count", "oldest points evicted because the disk buffer was full", _OUT),
    _m("rejected_points_total", C, "count", "points the server refused as malformed (HTTP 400/422), dropped", _OUT),
    _m("buffer_lost_points_total", C, "count", "points lost with a damaged disk buffer that was set aside", _OUT),
    _m("memory_backlog_points", G, "count", "points held in memory because the disk buffer refuses appends", _OUT),
    _m("spool_lost_points_total", C, "count", "points lost because the disk buffer refused them and memory was full", _OUT),
    _m("spool_errors_total", C, "count", "appends the disk buffer refused (disk full, I/O error)", _OUT),
    _m("requests_total", C, "requests", "write requests sent", _OUT),
    _m("file_size_bytes", G, "bytes", "size of the file output's current file", _OUT),
    _m("file_rotations_total", C, "count", "times the file output rotated its file", _OUT),
    _m("encode_dropped_fields_total", C, "count", "fields the output could not encode (left out, the rest of "
       "their sample written)", _OUT),
    _m("file_reopens_total", C, "count", "times the file output found its file deleted or moved away "
       "(logrotate) and opened its path again", _OUT),
    _m("auth_failing", G, "bool", "the server answers 401/403: points are kept, nothing is delivered", _OUT),
    _m("scrapes_total", C, "count", "scrapes the /metrics endpoint answered", _OUT),
    _m("scrape_cpu_seconds_total", C, "seconds", "CPU time the /metrics endpoint spent answering scrapes", _OUT),
    _m("exposed_series", G, "count", "series on the /metrics page", _OUT),
    _m("expired_series_total", C, "count", "series that left the /metrics page for not being refreshed", _OUT),
    _m("refused_series_total", C, "count", "new series the /metrics page refused past max_series", _OUT),
    _m("label_limit_series_total", C, "count", "series left off the /metrics page for carrying more than "
       "max_labels labels", _OUT),
    _m("unauthorized_requests_total", C, "requests", "requests to the /metrics endpoint refused for want of valid "
       "credentials", _OUT),
    _m("cpu_seconds_total", C, "seconds", "CPU time (user+system) of the agent process", _PROC),
    _m("memory_rss_bytes", G, "bytes", "resident set size of the agent process", _PROC),
    _m("threads", G, "count", "threads of the agent process", _PROC),
    _m("open_fds", G, "count", "open file descriptors of the agent process", _PROC),
    _m("uptime_seconds", G, "seconds", "time since the agent started", _PROC),
    _m("state_files_set_aside_total", C, "count", "unusable state files moved aside (NAME.corrupt-TIMESTAMP)", _PROC),
    _m("published_samples_total", C, "count", "samples handed to the outputs (collections, self-metrics, alerts)",
       _PROC),
    _m("pipeline_spool_errors_total", C, "count", "hand-offs to an output that raised (logged once)",
       _PROC),
    _m("rule_evaluations_total", C, "count", "evaluations of one alert rule (when its series came, and a full "
       "pass every agent interval)", _PROC),
    _m("rule_errors_total", C, "count", "evaluations of one rule that raised (its alerts keep their state)", _PROC),
    _m("alerts_firing", G, "count", "alerts firing now", _PROC),
    _m("alerts_pending", G, "count", "alerts pending (active, waiting out their `for`)", _PROC),
    _m("bus_series", G, "count", "series on the sample bus that collectors read each other's values from", _PROC),
    _m("bus_expired_series_total", C, "count", "bus series dropped for not being refreshed for 3 of their "
       "collector's intervals (a GPU pulled, a model unloaded)", _PROC),
    _m("bus_refused_series_total", C, "count", "new bus series refused past its bound (100,000)", _PROC),
)


OUTPUT_FIELDS = tuple(m.field for m in AGENT_METRICS if m.tags == _OUT)
# what an output's stats() may hold besides its declared figures: text facts for `status`, not measurements
STATUS_ONLY = frozenset({"state", "last_error", "last_write_ns", "path", "url", "api"})


class ProcessStats:
    def __init__(self) -> None:
        self.proc = psutil.Process(os.getpid())
        self.started = time.time()

    def read(self) -> dict:
        with self.proc.oneshot():
            cpu = self.proc.cpu_times()
            return {
                "cpu_seconds_total": float(cpu.user + cpu.system),
                "memory_rss_bytes": int(self.proc.memory_info().rss),
                "threads": int(self.proc.num_threads()),
                "open_fds": int(self.proc.num_fds()),
                "uptime_seconds": round(time.time() - self.started, 3),
                "state_files_set_aside_total": len(set_aside_files()),
            }

    def emit(self, acc: Accumulator) -> dict:
        values = self.read()
        acc.add("agent", values, {"component": "process"})
        return values
