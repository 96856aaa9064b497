"""Every joule of a window to exactly one owner: GPU energy split among the jobs that hold or use each GPU.

The shares are decided per GPU, from what the window saw:

- held by one owner (a Slurm job's GRES, a pod's pod-resources device): all of it, processes or not (a GPU held
  and idle is its holder's energy: `held_idle`);
- held by several (time-slicing, MPS) or used by processes of several owners with no allocation known: split by
  the owners' processes' SM utilization over the window; equally where none shows any;
- MIG: the GPU's energy split among its instances by their activity where every instance reports it, else by
  their size in slices (the slices no instance uses are `idle`), then each instance's part as above;
- nobody: `idle`.

Arithmetic is on integer millijoules (NVML's unit) with largest-remainder rounding, so the owners' parts add up
to each GPU's delta exactly, in every window, whatever the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

IDLE = "idle"
MIG_SLICES = 7  # compute slices of an A100/H100/H200 (a 1g instance is 1/7 of the GPU)


def split(total: int, weights: dict[str, float]) -> dict[str, int]:
    """`total` (an integer, mJ) in parts proportional to the weights, adding up to it exactly (largest
    remainder; ties by name). Non-finite or negative weights count as 0; all zero: equal parts."""
    clean = {k: (w if math.isfinite(w) and w > 0 else 0.0) for k, w in weights.items()}
    if not clean:
        return {IDLE: total} if total else {}
    s = sum(clean.values())
    if s <= 0:
        clean = dict.fromkeys(clean, 1.0)
        s = float(len(clean))
    exact = {k: total * w / s for k, w in clean.items()}
    out = {k: math.floor(v) for k, v in exact.items()}
    left = total - sum(out.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - out[k]), k))[:left]:
        out[k] += 1
    return out


@dataclass
class Usage:
    """What one GPU (or one MIG instance) saw over the window."""

    holders: list[str] = field(default_factory=list)  # owners the scheduler allocated it to
    sm: dict[str, float] = field(default_factory=dict)  # owner -> its processes' SM utilization (summed)


def usage_shares(u: Usage) -> tuple[dict[str, float], str]:
    """(weights per owner, the basis) for one GPU or instance."""
    if len(u.holders) == 1:
        return {u.holders[0]: 1.0}, "held"
    if u.holders:
        return {h: u.sm.get(h, 0.0) for h in u.holders}, "sm_utilization"
    if u.sm:
        return dict(u.sm), "sm_utilization"
    return {IDLE: 1.0}, "idle"


@dataclass
class Instance:
    """A MIG instance: its size in compute slices and, where NVML gives it, its activity over the window."""

    slices: int
    usage: Usage
    activity: float | None = None


def attribute_gpu(delta_mj: int, usage: Usage | None = None,
                  instances: dict[str, Instance] | None = None) -> tuple[dict[str, int], str]:
    """One GPU's window energy (mJ) to owners, and how it was split."""
    if delta_mj < 0:
        raise ValueError(f"a window's energy is never negative ({delta_mj} mJ): deltas come from the ledger's "
                         "monotonic counters")
    if instances:
        acts = [i.activity for i in instances.values()]
        if all(a is not None and math.isfinite(a) and a >= 0 for a in acts) and sum(acts) > 0:
            parts, basis = split(delta_mj, {k: i.activity for k, i in instances.items()}), "mig_activity"
        else:
            weights = {k: float(i.slices) for k, i in instances.items()}
            weights[IDLE] = float(max(0, MIG_SLICES - sum(i.slices for i in instances.values())))
            parts, basis = split(delta_mj, weights), "mig_size"
        out: dict[str, int] = {}
        for k, mj in parts.items():
            if k == IDLE:
                out[IDLE] = out.get(IDLE, 0) + mj
                continue
            for owner, v in split(mj, usage_shares(instances[k].usage)[0]).items():
                out[owner] = out.get(owner, 0) + v
        return out, basis
    weights, basis = usage_shares(usage or Usage())
    return split(delta_mj, weights), basis


def attribute(deltas: dict[str, int], usage: dict[str, Usage],
              instances: dict[str, dict[str, Instance]] | None = None) -> dict[str, int]:
    """Every GPU's window energy (mJ) summed per owner; the parts add up to the sum of the deltas exactly."""
    out: dict[str, int] = {}
    for gpu, delta in deltas.items():
        parts, _ = attribute_gpu(delta, usage.get(gpu), (instances or {}).get(gpu))
        for owner, mj in parts.items():
            out[owner] = out.get(owner, 0) + mj
    return out
