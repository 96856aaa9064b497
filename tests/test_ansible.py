"""The Ansible role: ansible-lint (production profile), syntax check, and a real run of the site playbook
against localhost (connection local, service management off, everything under a temporary root), twice:
the second run changes nothing."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE = ROOT / "ansible"
BIN = ROOT / ".venv-ansible" / "bin"

pytestmark = [pytest.mark.services,  # ansible's own venv and playbook runs: the full tier
              pytest.mark.skipif(not (BIN / "ansible-playbook").exists() and not os.environ.get("CI"),
                                 reason="ansible not installed (tests/install-deps test builds .venv-ansible)")]


def run(*args, cwd=ANSIBLE, **kw):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1", "NO_COLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(kw.pop("tmp")) if "tmp" in kw else os.environ.get("TMPDIR", "/tmp")}
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_ansible_lint_production_profile_and_syntax_check():
    r = run("ansible-lint", "--profile", "production")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("ansible-playbook", "--syntax-check", "site.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_site_playbook_on_localhost_installs_checks_and_is_idempotent(tmp_path):
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = wheels.glob("aifactory_agent-*.whl")
    root = tmp_path / "root"
    for d in ("etc/systemd/system", "etc/sysusers.d", "etc/tmpfiles.d"):
        (root / d).mkdir(parents=True)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {
        "gpu_nodes": {"hosts": {"localhost": {"ansible_connection": "local",
                                              "ansible_python_interpreter": "/usr/bin/python3"}}},
        "facility_pollers": {"hosts": {}}}}}))
    variables = tmp_path / "vars.yml"
    variables.write_text(yaml.safe_dump({
        "ansible_become": False,
        "aifactory_agent_source": str(wheel), "aifactory_agent_extras": [],
        "aifactory_agent_prefix": str(root / "opt/aifactory"),
        "aifactory_agent_config_dir": str(root / "etc/aifactory"),
        "aifactory_agent_systemd_dir": str(root / "etc/systemd/system"),
        "aifactory_agent_sysusers_dir": str(root / "etc/sysusers.d"),
        "aifactory_agent_tmpfiles_dir": str(root / "etc/tmpfiles.d"),
        "aifactory_agent_manage_user": False, "aifactory_agent_manage_service": False, "aifactory_agent_group": "root",
        "aifactory_agent_tags": {"site": "lab", "rack": "r1"},
        "aifactory_agent_collectors_extra": {"storage": {"smart": "off"}},
        "aifactory_agent_influxdb": [{"name": "influx", "api": "v1", "url": "http://127.0.0.1:8086",
                                      "database": "telemetry", "token_file": "influxdb-token"}],
        "aifactory_agent_prometheus": {"listen": "127.0.0.1:9464"},
        "aifactory_agent_remote_write": [{"name": "prom", "url": "http://127.0.0.1:9090/api/v1/write"}],
        "aifactory_agent_credentials": {"influxdb-token": "not-a-real-token"}}))
    args = ("ansible-playbook", "-i", str(inventory), "-e", f"@{variables}", "site.yml")
    first = run(*args, tmp=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    second = run(*args, tmp=tmp_path)
    assert second.returncode == 0, second.stdout[-3000:]
    recap = re.search(r"localhost\s+: ok=\d+\s+changed=(\d+)", second.stdout)
    assert recap and recap.group(1) == "0", second.stdout[-3000:]
    # what it installed
    agent = root / "opt/aifactory/venv/bin/aifactory"
    cfg = root / "etc/aifactory/agent.yaml"
    r = subprocess.run([str(agent), "config", "check", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr
    doc = yaml.safe_load(cfg.read_text())
    assert doc["tags"] == {"site": "lab", "rack": "r1"} and doc["outputs"]["influxdb"][0]["token_file"] == \
        "influxdb-token"
    assert doc["outputs"]["prometheus"] == {"listen": "127.0.0.1:9464"}
    assert doc["outputs"]["remote_write"][0]["url"] == "http://127.0.0.1:9090/api/v1/write"
    assert "not-a-real-token" not in cfg.read_text()  # the secret is a credential, not in the config
    cred = root / "etc/aifactory/credentials/influxdb-token"
    assert cred.read_text() == "not-a-real-token\n" and stat.S_IMODE(cred.stat().st_mode) == 0o600
    unit_dir = root / "etc/systemd/system"
    assert (unit_dir / "aifactory-agent.service").read_text() == (ROOT / "systemd/aifactory-agent.service").read_text()
    dropins = unit_dir / "aifactory-agent.service.d"
    assert f"LoadCredential=influxdb-token:{root}/etc/aifactory/credentials/influxdb-token" in \
        (dropins / "credentials.conf").read_text()
    assert f"ExecStart={agent} run --config {cfg}" in (dropins / "exec.conf").read_text()
