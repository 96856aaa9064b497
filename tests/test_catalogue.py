"""Every emitted field is declared before it is emitted, and names carry their units."""

import asyncio
import re
from pathlib import Path

import pytest

from agent.cli import catalogue_markdown
from agent.config import build_config
from agent.model import UNIT_SUFFIXES, Kind
from agent.outputs.local import query
from agent.registry import default_registry
from agent.scheduler import Agent

from .conftest import TREES

ROOT = Path(__file__).resolve().parent.parent
CAT = default_registry().catalogue()


@pytest.mark.parametrize("tree", ["gpunode", "vm", None])
def test_everything_emitted_is_declared(tree, state_dir):
    """Run the real agent once over a recorded tree (None: this machine) and check every field."""
    agent_cfg = {"hostname": "n1"}
    if tree:
        agent_cfg.update(proc_root=str(TREES / tree / "proc"), sys_root=str(TREES / tree / "sys"))
    cfg = build_config({"agent": agent_cfg, "collectors": {"storage": {"smart": "off"}}}, {}, None,
                       default_registry())
    asyncio.run(Agent(cfg, state_dir).run(once=True))
    samples = query(state_dir / "metrics.db", None, since_ns=0)
    assert {s.measurement for s in samples} >= {"host", "host_cpu", "storage_disk", "network_interface", "agent"}
    undeclared = sorted({(s.measurement, f) for s in samples for f in s.fields} - set(CAT.metrics))
    assert not undeclared
    # tags used are the ones the catalogue lists for that metric (plus global tags)
    all_tags = {t for m in CAT for t in m.tags}
    for s in samples:
        for f in s.fields:
            declared = set(CAT.get(s.measurement, f).tags) | {"host"}
            if s.measurement == "alerts":  # an alert carries the tags of the series it is about
                declared |= all_tags
            assert set(s.tags) - {"site", "cluster", "rack", "role"} <= declared, (s.measurement, f, s.tags)


def test_names_carry_units_and_counters_are_totals():
    for m in CAT:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", m.field), m
        assert re.fullmatch(r"[a-z][a-z0-9_]*", m.measurement), m
        base = m.field.removesuffix("_total") if m.kind is Kind.COUNTER else m.field
        suffixes = [s for s in UNIT_SUFFIXES[m.unit] if s]
        others = {s for u, ss in UNIT_SUFFIXES.items() if u != m.unit for s in ss if s and s not in suffixes}
        if suffixes:  # the name ends with its unit (a counter: just before _total)
            assert base.endswith(tuple(suffixes)), f"{m.measurement}.{m.field} should end with its unit {m.unit}"
        # no name ends with another unit's suffix: a count called _bytes, or seconds called _percent, lies
        wrong = [s for s in others if base.endswith(s) and not base.endswith(tuple(suffixes or ["\0"]))]
        assert not wrong, f"{m.measurement}.{m.field} ({m.unit}) ends like a {wrong} metric"
        if m.kind is Kind.COUNTER:
            assert m.field.endswith("_total"), m
        else:
            assert not m.field.endswith("_total"), m
        assert m.description.strip(), m


def test_readme_catalogue_is_current():
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- catalogue:start -->\n", "<!-- catalogue:end -->"
    assert start in readme and end in readme
    table = readme.split(start, 1)[1].split(end, 1)[0]
    assert table == catalogue_markdown(CAT), "README catalogue is stale: run `make catalogue`"


def test_generated_tables_are_current_and_complete():
    """The configuration reference (README) and the SNMP profile table (docs/snmp.md) come from the
    declarations, as the catalogue does: stale is a failure, and every key says what it means."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(ROOT / "docs" / "generate"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    readme = (ROOT / "README.md").read_text()
    config = readme.split("<!-- config:start -->\n", 1)[1].split("<!-- config:end -->", 1)[0]
    rows = [line for line in config.splitlines()[2:]]
    keys = {line.split("`")[1] for line in rows}
    # every option model's key is there: a collector's, an output's (list or not), a nested model's
    assert {"agent.interval", "collectors.gpu.lost_retry", "collectors.inference.endpoints[].models",
            "collectors.snmp.devices[].v3_auth_key_file", "outputs.local.retention", "outputs.influxdb[].url",
            "outputs.file[].max_size", "alerts.receivers[].url"} <= keys
    assert all(not line.endswith("|  |") for line in rows), [line for line in rows if line.endswith("|  |")]
    snmp = (ROOT / "docs" / "snmp.md").read_text()
    table = snmp.split("<!-- profiles:start -->\n", 1)[1].split("<!-- profiles:end -->", 1)[0]
    from collectors.snmp.match import load_profiles

    profiles = load_profiles()
    assert len(table.splitlines()) == 2 + len(profiles)
    assert all(p.devices and p.checked_against for p in profiles.values())
