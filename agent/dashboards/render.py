"""Render a board to PNG from real query results, laid out like the board (its gridPos).

No Grafana can run here; this draws each panel from what its InfluxQL returns on a real InfluxDB, so a
reader sees what the dashboards show: time series as lines, stats as big numbers, tables as text,
bar gauges as bars. It needs matplotlib (not a runtime dependency of the agent).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from .model import Dashboard

UNIT_SUFFIX = {"watt": " W", "joule": " J", "celsius": " °C", "percent": " %", "hertz": " Hz", "s": " s",
               "bytes": " B", "humidity": " %RH", "currencyUSD": " $", "masskg": " kg", "percentunit": ""}


def _fmt(v, unit: str) -> str:
    if not isinstance(v, (int, float)):
        return str(v)
    a = abs(v)
    for div, pre in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div and unit not in ("percent", "celsius", "currencyUSD", "s"):
            return f"{v / div:.3g} {pre}{UNIT_SUFFIX.get(unit, '').strip()}"
    return f"{v:.4g}{UNIT_SUFFIX.get(unit, '')}"


def render_board(board: Dashboard, query: Callable[[str], list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = board.to_json()
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in doc["panels"])
    fig = plt.figure(figsize=(16, height * 0.42 + 0.8), facecolor="#111217")
    fig.suptitle(board.title, color="white", fontsize=14, x=0.01, ha="left", y=1 - 0.15 / (height * 0.42 + 0.8))
    by_title = {p.title: p for p in board.panels()}
    for pj in doc["panels"]:
        g = pj["gridPos"]
        left, width = g["x"] / 24 + 0.032, g["w"] / 24 - 0.036  # room for the tick labels
        top = 1 - (g["y"] / height) * (1 - 0.8 / (height * 0.42 + 0.8)) - 0.8 / (height * 0.42 + 0.8)
        h = (g["h"] / height) * (1 - 0.8 / (height * 0.42 + 0.8)) - 0.01
        ax = fig.add_axes((left, top - h, width, h), facecolor="#181b1f")
        for s in ax.spines.values():
            s.set_color("#2c3235")
        ax.tick_params(colors="#9fa7b3", labelsize=7)
        ax.set_title(pj["title"], color="#d8d9da", fontsize=9, loc="left")
        p = by_title[pj["title"]]
        results = [(q, query(q.influxql)) for q in p.queries]
        unit = p.unit
        if p.type == "timeseries" or p.type == "state-timeline":
            for q, series in results:
                for s in series:
                    pts = [(r[0], r[1]) for r in s["values"] if r[1] is not None]
                    if not pts:
                        continue
                    label = q.legend
                    for k, v in (s.get("tags") or {}).items():
                        label = label.replace(f"$tag_{k}", v)
                    xs = [dt.datetime.fromtimestamp(t / 1e9, dt.UTC) for t, _ in pts]
                    ax.plot(xs, [float(v) for _, v in pts], linewidth=1.2, label=label or s["name"])
            ax.legend(fontsize=6, loc="lower left", facecolor="#181b1f", labelcolor="#d8d9da", ncol=3)
            ax.xaxis.set_major_formatter(matplotlib.dates.DateFormatter("%H:%M"))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _, u=unit: _fmt(v, u)))
        elif p.type in ("stat", "gauge"):
            vals = [r[1] for _, series in results for s in series for r in s["values"] if r[1] is not None]
            ax.set_xticks([])
            ax.set_yticks([])
            text = _fmt(vals[-1], unit) if vals else "no data"
            if vals and p.decimals is not None and isinstance(vals[-1], (int, float)):
                text = f"{vals[-1]:.{p.decimals}f}{UNIT_SUFFIX.get(unit, '')}"
            color = "green"
            if vals and isinstance(vals[-1], (int, float)):
                for v, c in p.thresholds:
                    if v is None or vals[-1] >= v:
                        color = c
            ax.text(0.5, 0.45, text, ha="center", va="center", fontsize=20, color=color, transform=ax.transAxes)
        elif p.type == "bargauge":
            labels, vals = [], []
            for q, series in results:
                for s in series:
                    label = q.legend
                    for k, v in (s.get("tags") or {}).items():
                        label = label.replace(f"$tag_{k}", v)
                    labels.append(label)
                    vals.append(float(s["values"][-1][1] or 0))
            ax.barh(labels, vals, color=["red" if v >= 90 else "orange" if v >= 80 else "green" for v in vals])
            ax.set_xlim(p.min or 0, p.max or max(vals + [1]))
        else:  # table
            ax.set_xticks([])
            ax.set_yticks([])
            rows = []
            for _, series in results:
                for s in series:
                    cols = s["columns"]
                    for r in s["values"][:8]:
                        tags = " ".join(f"{k}={v}" for k, v in (s.get("tags") or {}).items() if v)
                        rows.append(tags + "  " + "  ".join(f"{c}={_fmt(v, unit)}" for c, v in zip(cols[1:], r[1:])))
            ax.text(0.01, 0.95, "\n".join(rows[:12]) or "no data", va="top", ha="left", fontsize=7,
                    family="monospace", color="#d8d9da", transform=ax.transAxes)
    fig.savefig(path, dpi=80, facecolor=fig.get_facecolor())
    plt.close(fig)
