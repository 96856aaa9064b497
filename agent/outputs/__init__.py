"""Outputs: one module each, registered here by one line (name -> "module:Class"); third-party packages add
theirs through the ``aifactory.outputs`` entry-point group.

An output class carries its options model (``Options``, a subclass of agent.config.OutputOptions, beside its
code), ``many`` (a list of instances in the config, or one), and ``build(options, state_dir)``. Its writer only
encodes samples and writes a batch; agent/outputs/running.py buffers, batches, retries and reports for all.
"""

REGISTRY: dict[str, str] = {
    "local": "agent.outputs.local:LocalOutput",
    "influxdb": "agent.outputs.influxdb:InfluxOutput",
    "file": "agent.outputs.file:FileOutput",
    "prometheus": "agent.outputs.prometheus:PrometheusEndpoint",
    "remote_write": "agent.outputs.remote_write:RemoteWriteOutput",
}
