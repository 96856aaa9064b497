"""Token counters from inference servers' Prometheus pages: detection and mapping (pure).

Parsing is prometheus_client's; what each server calls its counters is data below. Every server is
reduced to the same plain reading per model: cumulative prompt and generation tokens, requests by
outcome, running/waiting requests, and the sums and counts of time-to-first-token and inter-token
latency where exposed. Histograms stand in for counters where a server has none (TGI, Triton
TRT-LLM): their `_sum` is the cumulative token count, advancing when a request finishes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

SERVERS = ("vllm", "sglang", "tgi", "trtllm", "triton", "nim", "llamacpp")


@dataclass
class ModelReading:
    model: str
    prompt_tokens: float | None = None
    generation_tokens: float | None = None
    requests: dict[str, float] = field(default_factory=dict)  # outcome -> cumulative count
    running: float | None = None
    waiting: float | None = None
    ttft_sum: float | None = None
    ttft_count: float | None = None
    itl_sum: float | None = None
    itl_count: float | None = None
    kv_cache_usage: float | None = None  # fraction of the KV cache in use, 0..1


def _without_buckets(text: str) -> str:
    """Histogram buckets are most of a server's page and never used here (only _sum and _count):
    dropping those lines before prometheus_client parses the rest cuts the CPU per scrape
    (bench/inference_scrape). A bucket line is one whose metric name ends in _bucket, not one whose
    label values hold that text (a model may be called "x_bucket y")."""
    out = []
    for line in text.split("\n"):
        if "_bucket" in line and line.lstrip().split("{", 1)[0].split(" ", 1)[0].endswith("_bucket"):
            continue
        out.append(line)
    return "\n".join(out)


def _samples(text: str, notes: list[str] | None = None,
             last: dict | None = None) -> dict[str, list[tuple[dict, float]]]:
    """{sample name: [(labels, value)]}; a malformed page raises ValueError. A series listed twice is read
    once, the first (as Prometheus does; counted in notes). A value that is not finite (an engine printing
    NaN) is that series' last finite value where `last` has one, so the model's sum keeps the other engines'
    progress and never goes back; with none, the series' model is marked unreadable for this scrape."""
    out: dict[str, list[tuple[dict, float]]] = {}
    seen: set[tuple] = set()
    dup = 0
    for fam in text_string_to_metric_families(_without_buckets(text)):
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            if key in seen:
                dup += 1
                continue
            seen.add(key)
            v = s.value
            if not math.isfinite(v):
                if last is not None and key in last:
                    if notes is not None:
                        notes.append(f"{s.name}: a series reads {v}: its last value is used")
                    v = last[key]
                else:
                    v = math.nan  # the model's counter is left out this time (said by the collector)
            elif last is not None:
                last[key] = v
            out.setdefault(s.name, []).append((s.labels, v))
    if dup and notes is not None:
        notes.append(f"{dup} series listed twice on the page: the first of each read (as Prometheus does)")
    return out


def detect(names: set[str]) -> str | None:
    if any(n.startswith("vllm:") for n in names):
        return "vllm"
    if any(n.startswith("sglang:") for n in names):
        return "sglang"
    if any(n.startswith("llamacpp:") for n in names):
        return "llamacpp"
    if any(n.startswith("trtllm_") for n in names):
        return "trtllm"
    if any(n.startswith("nv_llm_") for n in names):
        return "triton"
    if any(n.startswith("tgi_") for n in names):
        return "tgi"
    if "generation_tokens_total" in names or "prompt_tokens_total" in names:
        return "nim"
    return None


# server -> (prompt tokens, generation tokens, model label, success-requests, running, waiting, ttft, itl)
_COUNTERS = {
    "vllm": ("vllm:prompt_tokens_total", "vllm:generation_tokens_total", "model_name",
             "vllm:request_success_total", "vllm:num_requests_running", "vllm:num_requests_waiting",
             "vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds"),
    "sglang": ("sglang:prompt_tokens_total", "sglang:generation_tokens_total", "model_name",
               "sglang:num_requests_total", "sglang:num_running_reqs", "sglang:num_queue_reqs",
               "sglang:time_to_first_token_seconds", "sglang:inter_token_latency_seconds"),
    # trtllm's time_per_output_token histogram has one observation per request, not per token: it is no
    # inter-token latency sum with a token count, so it is not read as one
    "trtllm": ("trtllm_prompt_tokens_total", "trtllm_generation_tokens_total", "model_name",
               "trtllm_request_success_total", None, None,
               "trtllm_time_to_first_token_seconds", None),
    "nim": ("prompt_tokens_total", "generation_tokens_total", "model_name",
            "request_success_total", "num_requests_running", "num_requests_waiting",
            "time_to_first_token_seconds", "time_per_output_token_seconds"),
    "llamacpp": ("llamacpp:prompt_tokens_total", "llamacpp:tokens_predicted_total", None,
                 None, "llamacpp:requests_processing", "llamacpp:requests_deferred", None, None),
}


# server -> (KV-cache usage gauge, a fraction 0..1 whatever its name says); vLLM 0.10+ renamed its gauge
_KV_USAGE = {
    "vllm": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),  # vllm/v1/metrics/loggers.py; V0
    "sglang": ("sglang:token_usage",),  # python/sglang/srt/metrics/collector.py: used / total KV tokens
    "nim": ("gpu_cache_usage_perc",),  # NIM LLM 1.x: vLLM's V0 names without the prefix
    "llamacpp": ("llamacpp:kv_cache_usage_ratio",),  # tools/server/server.cpp
}
# server -> [(counter of requests that did not succeed, outcome)], beside its success/finished counter
_OTHER_OUTCOMES = {
    "sglang": [("sglang:num_aborted_requests_total", "abort")],
    "nim": [("request_failure_total", "failure")],
    "trtllm": [("trtllm_request_error_total", "error")],
}
# SGLang with --enable-metrics-for-all-schedulers: every scheduler (attention-TP rank) reports the gauges of the
# batch it shares with the other ranks of its data-parallel group; one value per DP group, summed over groups
_RANK_LABELS = ("tp_rank", "pp_rank", "moe_ep_rank", "attn_tp_rank")


# Label values that name no model: trtllm-serve's OpenAI server labels every series model_name="undefined"
# (hard-coded), and an empty label is no name either. The configured model (or "default") applies.
_NO_MODEL = ("", "undefined")


def _model_of(labels: dict, label: str | None, default: str) -> str:
    if not label:
        return default
    # Triton's vLLM backend labels vLLM's series `model`, not `model_name`
    m = labels.get(label)
    if m is None and label == "model_name":
        m = labels.get("model")
    return default if m is None or m in _NO_MODEL else m


def _by_model(rows: list[tuple[dict, float]], label: str | None, default: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, v in rows:
        m = _model_of(labels, label, default)
        out[m] = out.get(m, 0.0) + v  # vLLM: one series per engine; sum them
    return out


def _gauge_per_dp_group(rows: list[tuple[dict, float]], label: str | None, default: str) -> dict[str, float]:
    groups: dict[tuple, float] = {}
    for labels, v in rows:
        key = (_model_of(labels, label, default), labels.get("dp_rank", ""),
               tuple(sorted((k, x) for k, x in labels.items() if k not in _RANK_LABELS and k != "dp_rank")))
        groups[key] = max(groups.get(key, v), v)
    out: dict[str, float] = {}
    for (m, _, _), v in groups.items():
        out[m] = out.get(m, 0.0) + v
    return out


def _unprefixed_trtllm(samples: dict) -> bool:
    """Older trtllm-serve builds publish their series without the trtllm_ prefix, labelled engine_type="trtllm"."""
    return any(labels.get("engine_type") == "trtllm" for name in ("prompt_tokens_total", "request_success_total")
               for labels, _ in samples.get(name, ()))


def parse(text: str, server: str = "auto", default_model: str = "default",
          notes: list[str] | None = None, last: dict | None = None) -> tuple[str, list[ModelReading]]:
    """(server type, readings per model; none while a recognised server has served no request yet). Raises
    ValueError for a page that is not Prometheus text or that is no server we know. What the page lacks that
    an operator can fix is appended to `notes` (the collector says each once per endpoint)."""
    notes = notes if notes is not None else []
    samples = _samples(text, notes, last)
    # Counters appear as x or x_total depending on the exporter library (Rust metrics vs client_python).
    for name in list(samples):
        alias = name[:-6] if name.endswith("_total") else name + "_total"
        samples.setdefault(alias, samples[name])
    kind = detect(set(samples)) if server == "auto" else server
    if kind in ("nim", "trtllm") and not any(n.startswith("trtllm_") for n in samples) and _unprefixed_trtllm(samples):
        kind = "trtllm"
        for name in list(samples):
            samples.setdefault("trtllm_" + name, samples[name])
        notes.append("trtllm-serve series without the trtllm_ prefix (an older build): read under their plain names")
    if kind == "trtllm" and "trtllm_prompt_tokens_total" in samples and "trtllm_generation_tokens_total" not in samples:
        notes.append("no generation-token counter on this trtllm-serve page (an older build): generated tokens and "
                     "their efficiency are not available")
    if kind is None:
        raise ValueError("no known token counters on this page (vLLM, SGLang, TGI, TensorRT-LLM, NIM, llama.cpp)")
    models: dict[str, ModelReading] = {}

    def model(m: str) -> ModelReading:
        return models.setdefault(m, ModelReading(m))

    def put(name: str | None, label: str | None, attr: str, per_group: bool = False) -> None:
        if name and name in samples:
            by = _gauge_per_dp_group if per_group else _by_model
            for m, v in by(samples[name], label, default_model).items():
                setattr(model(m), attr, v)

    if kind in _COUNTERS:
        prompt, gen, label, success, running, waiting, ttft, itl = _COUNTERS[kind]
        put(prompt, label, "prompt_tokens")
        put(gen, label, "generation_tokens")
        put(running, label, "running", per_group=kind == "sglang")
        put(waiting, label, "waiting", per_group=kind == "sglang")
        for name in _KV_USAGE.get(kind, ()):
            if name in samples:
                # a fraction per engine (vLLM) or scheduler (SGLang: TP ranks repeat their group's): the mean of
                # equal pools, never a sum
                per: dict[str, list[float]] = {}
                for labels, v in samples[name]:
                    per.setdefault(_model_of(labels, label, default_model), []).append(v)
                for m, vs in per.items():
                    model(m).kv_cache_usage = sum(vs) / len(vs)
                break
        if kind == "vllm" and itl + "_sum" not in samples:
            itl = "vllm:time_per_output_token_seconds"  # vLLM up to 0.10 and the V0 engine
        for hist, attr in ((ttft, "ttft"), (itl, "itl")):
            if hist:
                put(hist + "_sum", label, attr + "_sum")
                put(hist + "_count", label, attr + "_count")
        # SGLang's num_requests_total counts finished requests, aborted ones included: "finished", with the
        # aborted ones beside it; the other servers' counters count successes (by finished_reason where given)
        plain = "finished" if kind == "sglang" else "success"
        for name, fixed in ([(success, None)] if success else []) + _OTHER_OUTCOMES.get(kind, []):
            for labels, v in samples.get(name, []):
                m = model(_model_of(labels, label, default_model))
                outcome = fixed or labels.get("finished_reason") or plain
                m.requests[outcome] = m.requests.get(outcome, 0.0) + v
    elif kind == "tgi":
        put("tgi_request_input_length_sum", None, "prompt_tokens")
        put("tgi_request_generated_tokens_sum", None, "generation_tokens")
        put("tgi_queue_size", None, "waiting")
        put("tgi_batch_current_size", None, "running")
        for name, outcome in (("tgi_request_success_total", "success"), ("tgi_request_failure_total", "failure")):
            for m, v in _by_model(samples.get(name, []), None, default_model).items():
                model(m).requests[outcome] = v
    elif kind == "triton":
        for labels, v in samples.get("nv_llm_input_token_len_sum", []) + samples.get("nv_llm_output_token_len_sum", []):
            m = model(labels.get("model", default_model))
            kind_label = labels.get("response_metric_type", "")
            if "input" in kind_label:
                m.prompt_tokens = (m.prompt_tokens or 0.0) + v
            elif "output" in kind_label:
                m.generation_tokens = (m.generation_tokens or 0.0) + v
        for labels, v in samples.get("nv_inference_request_success_total", []):
            m = model(labels.get("model", default_model))
            m.requests["success"] = m.requests.get("success", 0.0) + v
        for labels, v in samples.get("nv_inference_request_failure_total", []):
            m = model(labels.get("model", default_model))
            m.requests["failure"] = m.requests.get("failure", 0.0) + v
        # the TensorRT-LLM backend's inflight-batcher gauges (inflight_batcher_llm/src/custom_metrics_reporter):
        # request_type active / waiting; kv_cache_block_type fraction (newer) or used and max blocks
        for labels, v in samples.get("nv_trt_llm_request_metrics", []):
            attr = {"active": "running", "waiting": "waiting"}.get(labels.get("request_type", ""))
            if attr:
                setattr(model(labels.get("model", default_model)), attr, v)
        blocks: dict[str, dict[str, float]] = {}
        for labels, v in samples.get("nv_trt_llm_kv_cache_block_metrics", []):
            blocks.setdefault(labels.get("model", default_model), {})[labels.get("kv_cache_block_type", "")] = v
        for m, b in blocks.items():
            if "fraction" in b:
                model(m).kv_cache_usage = b["fraction"]
            elif b.get("max"):
                model(m).kv_cache_usage = b.get("used", 0.0) / b["max"]
    # A recognised server whose token counters do not exist yet (SGLang, TGI and trtllm-serve create them on
    # the first request) is up, with no token readings.
    readings = [m for m in models.values() if m.prompt_tokens is not None or m.generation_tokens is not None]
    if not readings and server != "auto" and detect(set(samples)) != server and kind != "trtllm":
        raise ValueError(f"no {server} series on this page")
    if not readings and server == "trtllm" and not any(n.startswith("trtllm_") for n in samples):
        raise ValueError("no trtllm series on this page: trtllm-serve publishes them only with "
                         "return_perf_metrics: true in its LLM API options (on its /prometheus/metrics page)")
    return kind, readings
