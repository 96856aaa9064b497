"""aifactory-agent: per-node telemetry for AI factories."""

__version__ = "0.1.0"
