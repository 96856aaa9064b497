import textwrap

import pytest

from agent.cli import main
from agent.config import ConfigError, build_config, load_config
from agent.registry import default_registry


def write(tmp_path, text):
    p = tmp_path / "agent.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def error_of(path):
    with pytest.raises(ConfigError) as e:
        load_config(path, default_registry())
    return str(e.value)


def test_defaults_without_file(monkeypatch, tmp_path):
    monkeypatch.delenv("AIFACTORY_CONFIG", raising=False)
    monkeypatch.setattr("agent.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.yaml")
    cfg = load_config(None, default_registry())
    assert cfg.source is None
    assert {i.kind for i in cfg.instances} == {"host", "storage", "network", "gpu", "inference", "efficiency",
                                               "facility", "jobs"}
    assert all(i.interval == 10.0 and i.timeout == 10.0 for i in cfg.instances)
    assert cfg.settings.outputs.local.retention == 7 * 86400


def test_full_config(tmp_path):
    p = write(tmp_path, """
        agent:
          hostname: gpu-a01
          interval: 15s
          jitter: 500ms
        tags: {site: fra1, cluster: c1, rack: r12, role: gpu, extra: {pod: p3}}
        collectors:
          host: {interval: 5s, timeout: 2s, per_cpu: false}
          storage:
            smart: "off"
          network:
            enabled: false
        outputs:
          local: {retention: 2d, max_size: 512MB}
        """)
    cfg = load_config(p, default_registry())
    assert cfg.global_tags() == {"host": "gpu-a01", "site": "fra1", "cluster": "c1", "rack": "r12", "role": "gpu",
                                 "pod": "p3"}
    inst = {i.name: i for i in cfg.instances}
    assert set(inst) == {"host", "storage", "gpu", "inference", "efficiency", "facility", "jobs"}
    assert (inst["host"].interval, inst["host"].timeout) == (5.0, 2.0)
    assert (inst["storage"].interval, inst["storage"].timeout) == (15.0, 15.0)
    assert cfg.settings.agent.jitter == 0.5
    assert cfg.settings.outputs.local.max_size == 512_000_000


def test_several_instances_of_one_collector(tmp_path):
    p = write(tmp_path, """
        collectors:
          network:
            - {name: fabric, exclude_interfaces: ["eth.*"]}
            - {name: frontend, infiniband: false}
        """)
    names = sorted(i.name for i in load_config(p, default_registry()).instances if i.kind == "network")
    assert names == ["fabric", "frontend"]


@pytest.mark.parametrize("text,expected", [
    ("agent:\n  intervall: 10s\n", ":2: agent.intervall: unknown key; expected one of: hostname, interval"),
    ("agent:\n  interval: soon\n", ":2: agent.interval: 'soon' is not a duration; expected e.g. 500ms, 10s"),
    ("agent:\n  interval: 0s\n", ":2: agent.interval: Input should be greater than or equal to 0.1"),
    ("agent:\n  queue_size: many\n", ":2: agent.queue_size: Input should be a valid integer"),
    ("collectors:\n  host:\n    interval: 10s\n    per_cpu: maybe\n",
     ":4: collectors.host.per_cpu: Input should be a valid boolean"),
    ("collectors:\n  gpus: {}\n",
     ":2: collectors.gpus: unknown collector; expected one of: efficiency, facility, gpu, host, inference, ipmi, "
     "jobs, modbus, network, redfish, snmp, storage"),
    ("collectors:\n  storage:\n    smart: sometimes\n", ":3: collectors.storage.smart: Input should be 'auto', 'on'"),
    ("collectors:\n  host:\n    timeout: 20s\n", ":3: collectors.host.timeout: must not exceed the interval (10s)"),
    ("collectors:\n  network:\n    - {name: a}\n    - {name: a}\n", "collectors.network[1].name: instance name 'a'"),
    ("outputs:\n  local:\n    max_size: huge\n", ":3: outputs.local.max_size: 'huge' is not a size"),
    ("agent:\n  interval: 10s\n  interval: 20s\n", ":3: agent.interval: duplicate key"),
    ("agent: [1, 2\n", "YAML syntax error"),
    ("- just\n- a list\n", ":1: the configuration must be a mapping"),
    ("tags:\n  rack: {a: 1}\n", ":2: tags.rack: Input should be a valid string"),
    # values checked as the collectors and outputs will use them, so that `run` never meets what `check` passed
    ("collectors:\n  redfish:\n    targets:\n      - {name: b, url: 'http://bad host:443'}\n",
     ":4: collectors.redfish.targets[0].url: 'http://bad host:443': 'bad host' is not a valid host"),
    ("collectors:\n  ipmi:\n    targets:\n      - {name: b, host: '127.0.0.1:623'}\n",
     ":4: collectors.ipmi.targets[0].host: '127.0.0.1:623' is not a host name or an IP address "
     "(a port goes in `port`"),
    ("collectors:\n  ipmi:\n    targets:\n      - {name: b, host: ''}\n",
     "collectors.ipmi.targets[0].host: expected a host name or an IP address, got an empty value"),
    ("collectors:\n  ipmi:\n    targets:\n      - {name: b, host: 'bad host'}\n",
     "collectors.ipmi.targets[0].host: 'bad host' is not a valid host name"),
    ("outputs:\n  file:\n    - {name: f, path: ''}\n", "outputs.file[0].path: '.' is a directory"),
    ("outputs:\n  file:\n    - {name: f, path: /tmp}\n", "outputs.file[0].path: '/tmp' is a directory"),
    ("outputs:\n  file:\n    - {name: f, path: /tmp/x.lp, max_size: 0}\n",
     "outputs.file[0].max_size: Input should be greater than or equal to 4096"),
])
def test_bad_config_names_file_line_key_and_expectation(tmp_path, text, expected):
    p = write(tmp_path, text)
    msg = error_of(p)
    assert msg.startswith(str(p)), msg
    assert expected in msg, msg


def test_missing_explicit_file(tmp_path):
    assert "configuration file not found" in error_of(tmp_path / "nope.yaml")


def test_env_var_is_used_and_must_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("AIFACTORY_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="missing.yaml: configuration file not found"):
        load_config(None, default_registry())


@pytest.mark.parametrize("text", ["agent:\n  bogus: 1\n", "agent:\n  interval: 10 parsecs\n"])
def test_cli_exits_78_and_starts_nothing(tmp_path, capsys, text, state_dir):
    p = write(tmp_path, text)
    for argv in (["config", "check", "-c", str(p)], ["run", "--once", "-c", str(p), "--state-dir", str(state_dir)],
                 ["collect", "-c", str(p)]):
        assert main(argv) == 78
        err = capsys.readouterr().err
        assert "configuration error" in err and f"{p}:2: agent." in err
    assert not state_dir.exists()  # nothing started


def test_cli_missing_file_exits_78(tmp_path, capsys):
    assert main(["config", "check", "-c", str(tmp_path / "absent.yaml")]) == 78
    assert "absent.yaml: configuration file not found" in capsys.readouterr().err


def test_config_show_and_check(tmp_path, capsys):
    p = write(tmp_path, "agent: {hostname: n1}\ncollectors:\n  host: {interval: 5s}\n")
    assert main(["config", "check", "-c", str(p)]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["config", "show", "--json", "-c", str(p)]) == 0
    import json
    shown = json.loads(capsys.readouterr().out)
    assert shown["agent"]["hostname"] == "n1"
    assert shown["collectors"]["host"]["interval"] == "5s"
    assert shown["source"] == str(p)


def test_documented_example_config_is_valid():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parent.parent / "docs" / "agent.example.yaml",
                      default_registry())
    assert cfg.global_tags()["rack"] == "r12"
    assert {i.name for i in cfg.instances} == {"host", "storage", "network", "gpu", "inference", "efficiency",
                                               "facility", "jobs"}


@pytest.mark.parametrize("text, expected", [
    ("collectors:\n  redfish:\n    targets:\n      - {name: bmc, url: 'https://10.0.0.1'}\n"
     "      - {name: bmc, url: 'https://10.0.0.2'}\n",
     ":5: collectors.redfish.targets[1].name: 'bmc' is already used at line 4 (collectors.redfish.targets[0].name)"),
    ("collectors:\n  ipmi:\n    targets:\n      - {name: b, host: 10.0.0.1}\n      - {name: b, host: 10.0.0.2}\n",
     ":5: collectors.ipmi.targets[1].name: 'b' is already used at line 4"),
    ("collectors:\n  snmp:\n    devices:\n      - {name: pdu, host: 10.0.0.1}\n      - {name: pdu, host: 10.0.0.2}\n",
     ":5: collectors.snmp.devices[1].name: 'pdu' is already used at line 4"),
    ("outputs:\n  file:\n    - {name: a, path: /tmp/x/m.lp}\n    - {name: b, path: /tmp/x/../x/m.lp}\n",
     "outputs 'a' and 'b' write the same file /tmp/x/../x/m.lp"),
])
def test_names_that_key_state_and_paths_an_output_writes_are_unique(tmp_path, text, expected):
    """Two BMCs under one name shared their counters (a phantom 5 MW); two file outputs on one path interleave."""
    assert expected in error_of(write(tmp_path, text))


def test_a_moved_option_still_loads_for_one_release_and_says_where_it_went(caplog):
    """collectors.snmp.pue_window moved to the facility collector: an existing configuration keeps loading."""
    import logging

    caplog.set_level(logging.WARNING)
    cfg = build_config({"collectors": {"snmp": {"pue_window": "30m"}, "facility": {"pue_window": "1h"}}}, {}, None,
                       default_registry())
    inst = {i.kind: i for i in cfg.instances}
    assert inst["facility"].options.pue_window == 3600.0
    assert any("collectors.facility.pue_window" in r.getMessage() for r in caplog.records)
