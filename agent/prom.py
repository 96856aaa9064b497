"""Prometheus names and exposition for the agent's metrics: one mapping from the catalogue, used by the /metrics
endpoint and the remote-write output (and by anything that writes PromQL against them).

A field ``F`` of measurement ``M`` is ``aifactory_M_F`` (Prometheus' naming guide): the unit suffix the field
already carries stays the only one; a percentage becomes a ratio from 0 to 1 (``_percent`` -> ``_ratio``, the
value divided by 100); counters already end with ``_total``; a boolean is a gauge of 0 or 1; an info field
(a string) becomes ``aifactory_M_F_info{F="value"} 1``. HELP is the catalogue's description, TYPE its kind.
The table of every name is generated into docs/prometheus.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from .model import Kind, Metric, Sample

PREFIX = "aifactory_"
# Fields whose names would end like a histogram's or summary's series (_count, _sum, _bucket), or be another
# measurement's name: named apart (a test holds every name to one field).
RENAMES = {("host", "cpu_count"): "cpus", ("gpu_event", "count"): "events",
           # per link, beside gpu's sums over the links (aifactory_gpu_nvlink_rx_bytes_total)
           ("gpu_nvlink", "rx_bytes_total"): "link_rx_bytes_total",
           ("gpu_nvlink", "tx_bytes_total"): "link_tx_bytes_total"}
RESERVED_SUFFIXES = ("_count", "_sum", "_bucket", "_created")
# Measurements whose series grow with the work on the node, not with its hardware: only when asked for
# (`include` of /metrics and of remote write).
OPTIONAL = {"processes": ("gpu_process",), "jobs": ("job", "job_model")}
_BAD = re.compile(r"[^a-zA-Z0-9_]")

# The catalogue's unit -> the OpenMetrics UNIT a family ending with it declares (none: no UNIT line).
UNITS = {"bytes": "bytes", "seconds": "seconds", "celsius": "celsius", "watts": "watts", "joules": "joules",
         "volts": "volts", "amperes": "amperes", "hertz": "hertz", "percent": "ratio", "va": "va", "var": "var",
         "bits_per_second": "bits_per_second", "bytes_per_second": "bytes_per_second", "rpm": "rpm",
         "litres_per_minute": "litres_per_minute", "kilopascals": "kilopascals", "metres": "metres"}


def sanitize(name: str) -> str:
    """A metric or label name Prometheus accepts: [a-zA-Z_][a-zA-Z0-9_]*."""
    out = _BAD.sub("_", name)
    return "_" + out if out[:1].isdigit() else out


@lru_cache(maxsize=4096)
def label_name(tag: str) -> str:
    out = sanitize(tag)
    return "tag" + out if out.startswith("__") else out  # __ is reserved for Prometheus' own labels


@dataclass(frozen=True)
class PromMetric:
    name: str  # the samples' name: aifactory_gpu_energy_joules_total, aifactory_gpu_utilization_ratio
    family: str  # OpenMetrics' family name: a counter's without _total, an info's without _info
    type: str  # gauge | counter | info | unknown
    help: str
    scale: float = 1.0  # multiply the value (a percentage to a ratio)
    label: str | None = None  # info: the label holding the value
    unit: str = ""  # OpenMetrics UNIT, where the family name ends with it

    def value(self, v) -> float | None:
        """The sample value, or None for a value this metric cannot carry."""
        if isinstance(v, bool):
            return 1.0 if v else 0.0
        if isinstance(v, (int, float)):
            x = float(v) * self.scale
            return x if not math.isnan(x) else None
        return None


@lru_cache(maxsize=65536)
def prom_metric(measurement: str, field: str, metric: Metric | None) -> PromMetric:
    """The Prometheus name and type of one field (undeclared fields: an untyped gauge without help)."""
    base = sanitize(f"{PREFIX}{measurement}_{RENAMES.get((measurement, field), field)}")
    if metric is None:
        return PromMetric(base, base, "unknown", "")
    help_ = metric.description
    if metric.kind == Kind.INFO:
        return PromMetric(base + "_info", base, "info", help_, label=label_name(field))
    scale = 1.0
    unit = UNITS.get(metric.unit, "")
    if metric.unit == "percent":
        base = base[: -len("_percent")] + "_ratio" if base.endswith("_percent") else base + "_ratio"
        scale = 0.01
        help_ = f"{help_} (ratio 0..1)"
    if metric.kind == Kind.COUNTER:
        family = base[: -len("_total")] if base.endswith("_total") else base
        name = family + "_total"
        return PromMetric(name, family, "counter", help_, scale, None, unit if family.endswith("_" + unit) else "")
    return PromMetric(base, base, "gauge", help_, scale, None, unit if unit and base.endswith("_" + unit) else "")


def excluded(include: list[str]) -> set[str]:
    """The measurements an output leaves out, given what its `include` asks for."""
    return {m for k, ms in OPTIONAL.items() if k not in include for m in ms}


def sample_labels(s: Sample) -> list[tuple[str, str]]:
    """A sample's tags as labels, sorted by name; an empty tag is no label."""
    return sorted((label_name(k), v) for k, v in s.tags.items() if v != "")


def sample_series(s: Sample, labels: list[tuple[str, str]], catalogue) -> Iterator[tuple[PromMetric, list, float]]:
    """(metric, labels, value) of each field Prometheus can carry: an info field's value in a label of its own
    (named apart where a tag has its name), value 1; a field whose value the metric cannot carry is left out."""
    for field, v in s.fields.items():
        m = prom_metric(s.measurement, field, catalogue.get(s.measurement, field) if catalogue else None)
        if m.type == "info":
            if not isinstance(v, str) or v == "":
                continue
            label = m.label if all(k != m.label for k, _ in labels) else m.label + "_value"
            yield m, sorted([*labels, (label, v)]), 1.0
        else:
            value = m.value(v)
            if value is not None:
                yield m, labels, value


# --- exposition ---------------------------------------------------------------------------------------------


def escape_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def labels_text(labels: list[tuple[str, str]]) -> str:
    return ",".join(f'{k}="{escape_label(v)}"' for k, v in labels)


def header(m: PromMetric, openmetrics: bool) -> str:
    """HELP, TYPE (and UNIT) lines of a family. The text format names the samples (a counter's _total and all);
    OpenMetrics names the family and says info where the text format says gauge."""
    if openmetrics:
        lines = [f"# TYPE {m.family} {m.type}"]
        if m.unit:
            lines.append(f"# UNIT {m.family} {m.unit}")
        if m.help:
            lines.append(f"# HELP {m.family} {escape_help(m.help)}")
        return "\n".join(lines) + "\n"
    kind = {"info": "gauge", "unknown": "untyped"}.get(m.type, m.type)
    return (f"# HELP {m.name} {escape_help(m.help)}\n" if m.help else "") + f"# TYPE {m.name} {kind}\n"
