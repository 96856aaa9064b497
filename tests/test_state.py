from pathlib import Path

from agent.state import default_state_dir, resolve_state_dir


def test_state_dir_resolution(monkeypatch):
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert default_state_dir() == Path("/var/lib/aifactory")
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", "/home/u/.st")
    assert default_state_dir() == Path("/home/u/.st/aifactory")
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", "/home/u")
    assert default_state_dir() == Path("/home/u/.local/state/aifactory")
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/aifactory-sd")  # systemd StateDirectory=
    assert default_state_dir() == Path("/var/lib/aifactory-sd")
    assert resolve_state_dir("/x", Path("/y")) == Path("/x")
    assert resolve_state_dir(None, Path("/y")) == Path("/y")
