import asyncio
import json
import time

import pytest

from agent.cli import main
from agent.config import build_config
from agent.outputs.local import query
from agent.registry import Registry
from agent.runner import grid_ts
from agent.scheduler import Agent

from . import plugins


@pytest.fixture(autouse=True)
def _reset():
    plugins.RELEASE.clear()
    plugins.RUNS.clear()
    yield
    plugins.RELEASE.set()


def make_agent(state_dir, collectors, interval=0.5, registry=None):
    registry = registry or Registry(plugins.TARGETS)
    data = {"agent": {"interval": interval, "hostname": "t1", "align": False},
            "collectors": {name: opts for name, opts in collectors.items()}}
    cfg = build_config(data, {}, None, registry)
    return Agent(cfg, state_dir, registry)


def test_failing_and_hanging_collectors_do_not_delay_the_others(state_dir):
    # hang-slow and asynchang block for their whole 2 s deadline, i.e. the whole run: had they
    # held the loop or the scheduler, quick (every 0.2 s) could not have run more than once or twice.
    agent = make_agent(state_dir, {
        "quick": {"interval": 0.2}, "boom": {"interval": 0.2},
        "hang": [{"name": "hang-slow", "interval": 2, "timeout": 2},
                 {"name": "hang-fast", "interval": 0.2, "timeout": 0.2}],
        "asynchang": {"interval": 2, "timeout": 2}, "absent": {}, "partial": {}, "badinit": {}})
    rc = asyncio.run(agent.run(duration=2.2))
    assert rc == 0
    assert len(plugins.RUNS["quick"]) >= 5, plugins.RUNS["quick"]
    assert len(plugins.RUNS["boom"]) >= 5
    st = {r.name: r.stats() for r in agent.runners}
    assert st["quick"]["state"] == "ok" and st["quick"]["errors_total"] == 0
    assert st["boom"]["state"] == "error" and st["boom"]["errors_total"] == st["boom"]["runs_total"]
    assert "sensor bus on fire" in st["boom"]["last_error"]
    # the thread of a hung collector never returned: one run timed out, the next ones were skipped and counted
    assert st["hang-fast"]["timeouts_total"] == 1 and st["hang-fast"]["skipped_total"] >= 3
    assert len(plugins.RUNS["hang-fast"]) == 1
    assert st["hang-slow"]["timeouts_total"] + st["hang-slow"]["skipped_total"] >= 1
    # a hung coroutine is cancelled at its deadline
    assert st["asynchang"]["timeouts_total"] >= 1 and st["asynchang"]["state"] == "timeout"
    assert st["absent"]["state"] == "not_present" and st["absent"]["success"] is True
    assert st["partial"]["state"] == "error"
    assert st["badinit"]["state"] == "error" and "cannot open /dev/thing" in st["badinit"]["last_error"]

    # what the hung and failing runs collected before failing is kept; late adds are refused
    db = state_dir / "metrics.db"
    hang = query(db, "hang")
    # one run of each hang instance: its first add kept, its late add (tag late=yes) refused
    assert [s.fields for s in hang] == [{"value_count": 1}, {"value_count": 1}]
    assert not any("late" in s.tags for s in hang)
    assert query(db, "partial") and query(db, "quick")

    # status.json tells the same story, and the self-metrics are in the store
    status = json.loads((state_dir / "status.json").read_text())
    assert status["stopped"] is True and status["healthy"] is False
    assert status["collectors"]["boom"]["state"] == "error"
    assert status["collectors"]["hang-fast"]["skipped_total"] >= 3
    selfm = query(db, "agent", tags={"component": "collector", "name": "boom"})
    assert selfm[-1].fields["run_success"] is False and selfm[-1].fields["errors_total"] >= 5
    proc = query(db, "agent", tags={"component": "process"})
    assert proc[-1].fields["memory_rss_bytes"] > 0


def test_status_command_shows_failure(state_dir, capsys):
    agent = make_agent(state_dir, {"quick": {}, "boom": {}})
    asyncio.run(agent.run(once=True))
    rc = main(["status", "--json", "--state-dir", str(state_dir)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 3 and out["running"] is False  # --once has exited
    assert out["collectors"]["boom"]["last_error"] == "RuntimeError: sensor bus on fire"
    assert out["collectors"]["quick"]["success"] is True
    main(["status", "--state-dir", str(state_dir)])
    text = capsys.readouterr().out
    assert "boom" in text and "RuntimeError: sensor bus on fire" in text and "NOT RUNNING" in text


def test_missing_dependency_disables_one_collector_only(state_dir):
    reg = Registry(plugins.TARGETS)
    assert reg.get("missingdep").cls is None and "ModuleNotFoundError" in reg.get("missingdep").error
    agent = make_agent(state_dir, {"quick": {}}, registry=reg)
    asyncio.run(agent.run(once=True))
    assert plugins.RUNS["quick"]


def test_grid_timestamps():
    assert grid_ts(10, 1_700_000_007_123_000_000) == 1_700_000_000_000_000_000
    assert grid_ts(0.5, 1_700_000_000_700_000_000) == 1_700_000_000_500_000_000


def test_one_timestamp_per_run_aligned(state_dir):
    registry = Registry(plugins.TARGETS)
    cfg = build_config({"agent": {"interval": "10s", "hostname": "t1"}, "collectors": {"quick": {}}}, {}, None,
                       registry)
    agent = Agent(cfg, state_dir, registry)
    asyncio.run(agent.run(once=True))
    samples = query(state_dir / "metrics.db", None)
    assert samples and all(s.ts % 10_000_000_000 == 0 for s in samples)
    assert len({s.ts for s in samples if s.measurement == "quick"}) == 1


def test_sigterm_stops_cleanly_and_flushes(state_dir):
    import os
    import signal

    agent = make_agent(state_dir, {"quick": {"interval": 0.2}})

    async def go():
        loop = asyncio.get_running_loop()
        loop.call_later(0.7, os.kill, os.getpid(), signal.SIGTERM)
        t0 = time.monotonic()
        rc = await agent.run()
        return rc, time.monotonic() - t0

    rc, took = asyncio.run(go())
    assert rc == 0 and took < 5
    status = json.loads((state_dir / "status.json").read_text())
    assert status["stopped"] is True
    out = status["outputs"]["local"]
    assert out["queue_depth_samples"] == 0 and out["written_samples_total"] > 0
    assert len(query(state_dir / "metrics.db", "quick")) == len(plugins.RUNS["quick"])


def test_synchronous_runs_of_one_tick_take_turns_and_a_stuck_one_holds_none_back(monkeypatch):
    # Runs started together take turns on the process (less GIL contention: bench/collect_overhead); a run
    # stuck holding its turn delays the others by at most runner.LANE_WAIT, never stops them.
    import threading

    from agent import runner as runner_module
    from agent.collector import Collector
    from agent.config import InstanceConfig
    from agent.runner import InstanceRunner

    inside, overlaps, stuck = [], [], threading.Event()

    class Sleepy(Collector):
        kind = "sleepy"

        def collect(self, acc):
            if inside:
                overlaps.append(list(inside))
            inside.append(self)
            time.sleep(0.02)  # releases the GIL: without turns the others would run now
            inside.remove(self)

    class Stuck(Collector):
        kind = "stuck"

        def collect(self, acc):
            stuck.wait(30)

    def runner(cls, name, timeout=5.0):
        cfg = InstanceConfig(name, cls.kind, Collector.Options(), 10.0, timeout)
        return InstanceRunner(cfg, cls(Collector.Options(), None), {}, [].extend, align=False)

    sleepy = [runner(Sleepy, f"s{i}") for i in range(4)]

    async def tick(rs):
        await asyncio.gather(*(r.run_once() for r in rs))

    monkeypatch.setattr(runner_module, "LANE_WAIT", 30.0)  # a loaded test machine must not end a turn early
    asyncio.run(tick(sleepy))
    assert not overlaps and all(r.state == "ok" for r in sleepy)

    monkeypatch.setattr(runner_module, "LANE_WAIT", 0.05)
    hung = runner(Stuck, "stuck", timeout=1.0)
    try:
        asyncio.run(tick([hung, *sleepy]))
        assert hung.state == "timeout" and all(r.state == "ok" and r.runs == 2 for r in sleepy)
    finally:
        stuck.set()
    for r in [hung, *sleepy]:
        r.close()


def test_a_consumer_reads_its_producers_values_of_the_same_tick_on_every_scheduled_run(state_dir):
    """The producer's run takes 0.7 s: past the consumer's half-second stage offset. Every scheduled run of the
    consumer (not only the first) still reads the producer's value of its own tick."""
    plugins.Reader.SEEN.clear()
    data = {"agent": {"interval": 2, "hostname": "t1", "align": True},
            "collectors": {"slowsource": {"interval": 2}, "reader": {"interval": 2}}}
    registry = Registry(plugins.TARGETS)
    agent = Agent(build_config(data, {}, None, registry), state_dir, registry)
    assert asyncio.run(agent.run(duration=7.5, flush_timeout=5)) == 0
    runs = plugins.Reader.SEEN[2:]  # after the start-up runs (at once, off the grid), the scheduled ones
    assert len(runs) >= 2, plugins.Reader.SEEN
    assert all(seen == tick for tick, seen in runs), plugins.Reader.SEEN  # never the tick before


def test_a_bus_series_not_refreshed_for_three_intervals_is_gone_and_counted():
    from agent.bus import SampleBus
    from agent.model import Sample

    bus = SampleBus(max_series=3)
    s = 10**9
    bus.observe([Sample("gpu", {"gpu": "0"}, {"power_watts": 1.0}, 10 * s),
                 Sample("gpu", {"gpu": "1"}, {"power_watts": 1.0}, 10 * s)], interval=10)
    for t in range(20, 60, 10):  # gpu 1 falls off the bus; gpu 0 goes on
        bus.observe([Sample("gpu", {"gpu": "0"}, {"power_watts": 1.0}, t * s)], interval=10)
    assert [x.tags["gpu"] for x in bus.latest("gpu")] == ["0"]
    assert bus.stats()["bus_expired_series_total"] == 1
    assert [x.tags["gpu"] for x in bus.latest("gpu", max_age=5, now=51 * s)] == ["0"]
    assert bus.latest("gpu", max_age=5, now=70 * s) == []  # too old for this reader, still on the bus
    for i in range(5):  # past max_series: refused and counted, never silently
        bus.observe([Sample("pdu", {"outlet": str(i)}, {"power_watts": 1.0}, 50 * s)], interval=10)
    assert bus.stats() == {"bus_series": 3, "bus_expired_series_total": 1, "bus_refused_series_total": 3}
