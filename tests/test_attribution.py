"""Energy per owner: each GPU's window energy to exactly one owner per millijoule, whatever the mix of exclusive,
shared, MIG, held-idle and unheld GPUs, across counter resets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.common.attribution import IDLE, Instance, Usage, attribute, attribute_gpu, split
from collectors.common.energy import EnergyCounters


@pytest.mark.parametrize("total,weights,expected", [
    (10, {"a": 1, "b": 1}, {"a": 5, "b": 5}),
    (10, {"a": 1, "b": 1, "c": 1}, {"a": 4, "b": 3, "c": 3}),  # the remainder by name, never lost
    (7, {"a": 0.0, "b": 0.0}, {"a": 4, "b": 3}),  # nobody shows activity: equal
    (9, {"a": float("nan"), "b": 2.0}, {"a": 0, "b": 9}),
    (5, {}, {IDLE: 5}),
    (0, {"a": 1}, {"a": 0}),
])
def test_a_split_adds_up_to_the_total_exactly(total, weights, expected):
    assert split(total, weights) == expected


@pytest.mark.parametrize("usage,instances,expected,basis", [
    (Usage(["slurm:1"]), None, {"slurm:1": 1000}, "held"),
    (Usage(["slurm:1"], {}), None, {"slurm:1": 1000}, "held"),  # held and idle: still the holder's
    (Usage(["pod:a", "pod:b"], {"pod:a": 60.0, "pod:b": 20.0}), None, {"pod:a": 750, "pod:b": 250},
     "sm_utilization"),  # time-slicing
    (Usage([], {"unit:vllm.service": 30.0, "container:ab": 10.0}), None,
     {"unit:vllm.service": 750, "container:ab": 250}, "sm_utilization"),  # no allocation known: by processes
    (Usage(), None, {IDLE: 1000}, "idle"),
    (None, {"1": Instance(3, Usage(["pod:a"])), "2": Instance(1, Usage(["pod:b"]))},
     {"pod:a": 429, "pod:b": 143, IDLE: 428}, "mig_size"),  # 3 + 1 of 7 slices; the 3 unused are idle
    (None, {"1": Instance(3, Usage(["pod:a"]), 0.2), "2": Instance(1, Usage(), 0.6)},
     {"pod:a": 250, IDLE: 750}, "mig_activity"),  # an instance nobody holds is idle
])
def test_a_gpus_window_goes_to_its_holders_by_the_rule_that_fits(usage, instances, expected, basis):
    parts, how = attribute_gpu(1000, usage, instances)
    assert how == basis and {k: v for k, v in parts.items() if v} == {k: v for k, v in expected.items() if v}
    assert sum(parts.values()) == 1000


def test_a_negative_window_is_refused():
    with pytest.raises(ValueError, match="never negative"):
        attribute_gpu(-1, Usage(["a"]))


OWNERS = st.sampled_from(["slurm:1", "slurm:2", "pod:a", "pod:b", "unit:x.service"])
USAGE = st.builds(Usage, st.lists(OWNERS, max_size=3, unique=True),
                  st.dictionaries(OWNERS, st.floats(0, 100, allow_nan=False), max_size=3))
INSTANCE = st.builds(Instance, st.integers(1, 7), USAGE, st.one_of(st.none(), st.floats(0, 1, allow_nan=False)))
GPU = st.tuples(USAGE, st.one_of(st.none(), st.dictionaries(st.sampled_from("1234"), INSTANCE, min_size=1,
                                                            max_size=3)))
# one GPU's raw counter (mJ) over the windows: steps up, sometimes a reset to near zero (a driver reload)
STEPS = st.lists(st.tuples(st.integers(0, 10**9), st.booleans()), min_size=2, max_size=8)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["0", "1", "2", "3"]), st.tuples(GPU, STEPS), min_size=1))
def test_the_owners_parts_equal_the_gpus_energy_in_every_window(tmp_path_factory, gpus):
    counters = EnergyCounters(tmp_path_factory.mktemp("c") / "c.json")
    raw = {g: 5 * 10**9 for g in gpus}
    last: dict[str, int] = {}
    windows = max(len(steps) for _, steps in gpus.values())
    for w in range(windows):
        deltas = {}
        for g, (_, steps) in gpus.items():
            step, reset = steps[min(w, len(steps) - 1)]
            raw[g] = step if reset else raw[g] + step  # a reset restarts near zero and counts on
            # the ledger's monotonic counter; two readings a window, so a reset is confirmed at once
            u = counters.reading(g, raw[g] / 1000.0, float(w * 60), max_watts=1e6)
            u = counters.reading(g, raw[g] / 1000.0 + 0.001, float(w * 60 + 30), max_watts=1e6) \
                if u.value is None else u
            if u.value is None:
                continue
            mj = round(u.value * 1000)
            if g in last:
                assert mj >= last[g]  # the ledger keeps it monotonic across the reset
                deltas[g] = mj - last[g]
            last[g] = mj
        usage = {g: spec[0][0] for g, spec in gpus.items()}
        instances = {g: spec[0][1] for g, spec in gpus.items() if spec[0][1]}
        parts = attribute(deltas, usage, instances)
        assert all(v >= 0 for v in parts.values())
        assert sum(parts.values()) == sum(deltas.values())  # every millijoule, once
        for g, d in deltas.items():  # a GPU one owner holds whole is that owner's, to the millijoule
            if len(usage[g].holders) == 1 and g not in instances:
                assert parts[usage[g].holders[0]] >= d
